#!/usr/bin/env python
"""Train a small SPIC model on the synthetic street scenes (CPU-sized recipe).

SPIC's recipe (Pezone et al., arXiv 2310.15737; frapez1/SPIC ``image_train.py``): the SDM network
with the coarse image concatenated to x_t (``concat_channels=3``, ``layout="sdm"``), the map via
SPADE, 1000 linear steps, guided-diffusion's hybrid loss (eps-MSE + the variational bound with the
mean detached), AdamW at a fixed learning rate, an EMA of the weights. As SPIC (``down+bpg`` coded
on the fly for every batch), the coarse image the network sees is the area downsample coded and
decoded by the image codec; here at a quality drawn per image from ``--quality_range`` so one model
serves several rates. Unlike SPIC (``drop_rate 0``), the map alone is dropped with probability
``--drop_rate`` so the guidance's unconditional branch is trained (the coarse image is kept).

Resumable: ``OUT/train_state.pt`` (plain tensors, loaded with ``weights_only=True``) holds the
step, the generator state, the weights, the EMA and the optimiser; run the command again to
continue. The EMA weights are written as a SPIC model folder to ``OUT/model`` (float16) at the end.

Example (the bundled-size recipe; about 3 s per step on one CPU core with the default 32x64 crops)::

    .venv/bin/python scripts/train_spic_synthetic.py --out runs/spic_synthetic --steps 600
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from gensemcom.codecs import QUALITY_RANGE, decode_image, encode_image
from gensemcom.data.synthetic import SyntheticScenes
from gensemcom.diffusion import DiffusionConfig, GaussianDiffusion
from gensemcom.models.semantic_unet import SemanticUNet, SemanticUNetConfig
from gensemcom.systems.spic import downsample, save_spic, spic_map, upsample


def coded_coarse(images: torch.Tensor, size: tuple[int, int], codec: str, qualities: list[int]) -> torch.Tensor:
    """(B,3,H,W) in [-1,1] -> (B,3,h,w): area downsample, uint8, codec at each quality, decoded."""
    small = downsample(images, size)
    arr = ((small.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = [torch.from_numpy(decode_image(encode_image(np.ascontiguousarray(a), codec, q), codec))
           for a, q in zip(arr, qualities)]
    return torch.stack(out).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--ema_rate", type=float, default=0.995)
    p.add_argument("--drop_rate", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", default="64x128", help="image HxW")
    p.add_argument("--coarse", default="16x32", help="coarse image HxW (small_size x large_size)")
    p.add_argument("--count", type=int, default=20000, help="synthetic scenes drawn from")
    p.add_argument("--crop", default="32x64", help="train on random HxW crops (aligned to the coarse grid; "
                   "the network is convolutional, so it samples full images); 'none' for full images")
    p.add_argument("--codec", default="jpegxl")
    p.add_argument("--quality_range", default="10,90")
    p.add_argument("--default_quality", type=int, default=30, help="the codec quality saved as the model's default")
    p.add_argument("--num_channels", type=int, default=32)
    p.add_argument("--channel_mult", default="1,2,2,2")
    p.add_argument("--spade_hidden", type=int, default=32)
    p.add_argument("--save_interval", type=int, default=100)
    p.add_argument("--log_interval", type=int, default=10)
    a = p.parse_args()

    h, w = (int(v) for v in a.size.split("x"))
    ch, cw = (int(v) for v in a.coarse.split("x"))
    qlo, qhi = (int(v) for v in a.quality_range.split(","))
    crop = None if a.crop == "none" else tuple(int(v) for v in a.crop.split("x"))
    lo, hi = QUALITY_RANGE[a.codec]
    if not lo <= qlo <= qhi <= hi:
        raise SystemExit(f"--quality_range must lie in [{lo}, {hi}] for {a.codec}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    data = SyntheticScenes(a.count, h, w, seed=a.seed)
    num_classes = data.num_classes
    mcfg = SemanticUNetConfig(label_channels=num_classes, image_size=h, model_channels=a.num_channels,
                              channel_mult=tuple(int(m) for m in a.channel_mult.split(",")), num_res_blocks=1,
                              attention_resolutions=(h // 8,), num_head_channels=32, resblock_updown=True,
                              use_scale_shift_norm=True, out_channels=6, layout="sdm", concat_channels=3,
                              spade_hidden=a.spade_hidden)
    dcfg = DiffusionConfig(steps=1000, schedule="linear", loss="hybrid", variance="learned_range")
    diffusion = GaussianDiffusion.from_config(dcfg)
    torch.manual_seed(a.seed)  # the initial weights
    model = SemanticUNet(mcfg)
    ema = SemanticUNet(mcfg)
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(a.seed)
    step = 0
    state_path = out / "train_state.pt"
    if state_path.is_file():
        st = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(st["model"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        step = int(st["step"])
        print(f"resumed at step {step}")
    log = open(out / "log.jsonl", "a")
    model.train()
    t0 = time.time()
    while step < a.steps:
        idx = torch.randint(0, len(data), (a.batch_size,), generator=gen).tolist()
        items = [data[i] for i in idx]
        x0 = torch.stack([it["image"] for it in items])
        labels = torch.stack([it["label"] for it in items])
        qualities = torch.randint(qlo, qhi + 1, (a.batch_size,), generator=gen).tolist()
        up = upsample(coded_coarse(x0, (ch, cw), a.codec, qualities), (h, w))
        if crop is not None:  # one window per batch, on the coarse grid so coarse pixels stay whole
            sy, sx = h // ch, w // cw
            oy = int(torch.randint(0, (h - crop[0]) // sy + 1, (1,), generator=gen)) * sy
            ox = int(torch.randint(0, (w - crop[1]) // sx + 1, (1,), generator=gen)) * sx
            win = (slice(None), slice(None), slice(oy, oy + crop[0]), slice(ox, ox + crop[1]))
            x0, up, labels = x0[win], up[win], labels[win[0], win[2], win[3]]
        y = spic_map(labels, num_classes)
        t = torch.randint(0, diffusion.num_timesteps, (a.batch_size,), generator=gen)
        terms = diffusion.training_losses(model, x0, t, y, concat=up, cond_drop_prob=a.drop_rate, generator=gen,
                                          return_terms=True)
        loss = terms["loss"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.mul_(a.ema_rate).add_(pm.detach(), alpha=1 - a.ema_rate)
        step += 1
        if step % a.log_interval == 0 or step == a.steps:
            rec = {"step": step, "loss": loss.item(), "mse": terms["mse"].mean().item(),
                   "vb": terms["vb"].mean().item(), "s_per_step": (time.time() - t0) / a.log_interval}
            t0 = time.time()
            print(json.dumps(rec), flush=True)
            log.write(json.dumps(rec) + "\n")
            log.flush()
            if not math.isfinite(rec["loss"]):
                raise SystemExit("loss is not finite")
        if step % a.save_interval == 0 or step == a.steps:
            tmp = state_path.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                        "gen": gen.get_state(), "step": torch.tensor(step)}, tmp)
            tmp.replace(state_path)
    recipe = {"script": "scripts/train_spic_synthetic.py", "args": vars(a), "trained_steps": step,
              "dataset": "synthetic", "image_hw": [h, w]}
    save_spic(out / "model", ema.eval(), diffusion, num_classes=num_classes, coarse_size=(ch, cw),
              max_iter_time=200, timestep_respacing="100", guidance_scale=1.5,
              codecs={"image_codec": a.codec, "quality": a.default_quality, "label_codec": "jpegxl"},
              extra={"recipe": recipe, "num_params": sum(p.numel() for p in ema.parameters())},
              dtype=torch.float16)
    print(f"saved {out / 'model'}")


if __name__ == "__main__":
    main()
