"""SPIC's ``image_train.py`` command line, verbatim, on this package (frapez1/SPIC, arXiv 2310.15737).

    gensemcom train --data_dir ./data/cityscapes --dataset_mode cityscapes \\
        --lr 1e-4 --batch_size 8 --attention_resolutions 32,16,8 --diffusion_steps 1000 --image_size 256 \\
        --learn_sigma True --noise_schedule linear --num_channels 256 --num_head_channels 64 \\
        --num_res_blocks 2 --resblock_updown True --use_fp16 True --use_scale_shift_norm True \\
        --use_checkpoint True --num_classes 19 --class_cond True --large_size 128 --small_size 64 \\
        --no_instance True

Fine-tuning is the same command with ``--resume_checkpoint ./Checkpoints/model.pt`` (a released
SPIC ``.pt``, loaded with ``weights_only=True``, or a SPIC model folder).

What each flag does, as SPIC: the network (``SuperResModel``: 6 input channels, map via SPADE, no
encoder ``spade_norm``), the 1000-step linear process with the hybrid loss (``learn_sigma``),
uniform timesteps, AdamW at ``lr`` (``weight_decay``), EMA ``ema_rate``, ``drop_rate`` (the map
dropped for guidance; SPIC's default 0), ``use_checkpoint`` (gradient checkpointing), the coarse
image per ``compression_type`` (``down+bpg`` coded on the fly with HEVC-intra at
:func:`bpg_to_hevc_quality` of ``compression_level``, BPG not being packaged; ``resize``: the
unquantised area downsample), ``small_size`` x ``large_size`` = coarse height x width, random flips.
``use_fp16`` is float16 autocast on CUDA (ignored on CPU). ``lr_anneal_steps`` > 0 stops there
(linear decay as guided-diffusion); SPIC otherwise trains until stopped: ``--max_steps`` (ours)
stops earlier. Every ``save_interval`` steps ``OUT/model`` (EMA weights, a SPIC folder) and
``OUT/train_state.pt`` (resumable) are written; ``--out`` (ours) defaults to ``runs/spic_train``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from ..diffusion import DiffusionConfig, GaussianDiffusion
from ..models.io import load_checkpoint
from ..systems.spic import (bpg_to_hevc_quality, parse_spic_flags, save_spic, spic_config_from_flags,
                                    spic_map, training_coarse, upsample)

EXTRA = {"out": "runs/spic_train", "max_steps": 0, "seed": 0, "device": "cpu", "synthetic_count": 20000}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ours = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for k, v in EXTRA.items():
        ours.add_argument(f"--{k}", type=type(v), default=v)
    extra, rest = ours.parse_known_args(argv)
    flags, script = parse_spic_flags(rest)
    model_cfg, _, settings = spic_config_from_flags(flags)
    dcfg = DiffusionConfig(steps=flags["diffusion_steps"], schedule=flags["noise_schedule"], loss="hybrid",
                           variance="learned_range" if flags["learn_sigma"] else "fixed_large",
                           prediction="x0" if flags["predict_xstart"] else "epsilon",
                           rescale_timesteps=flags["rescale_timesteps"])
    diffusion = GaussianDiffusion.from_config(dcfg)  # training: every step
    from ..models.semantic_unet import SemanticUNet
    device = torch.device(extra.device)
    torch.manual_seed(extra.seed)
    model = SemanticUNet(model_cfg)
    if script["resume_checkpoint"]:
        rc = Path(script["resume_checkpoint"])
        load_checkpoint(model, rc / "model.safetensors" if rc.is_dir() else rc)
    model.to(device).train()
    ema = SemanticUNet(model_cfg).to(device)
    ema.load_state_dict(model.state_dict())
    ema_rate = float(script["ema_rate"].split(",")[0])
    opt = torch.optim.AdamW(model.parameters(), lr=script["lr"], weight_decay=script["weight_decay"])
    gen = torch.Generator().manual_seed(extra.seed)
    out = Path(extra.out)
    out.mkdir(parents=True, exist_ok=True)
    step = 0
    state_path = out / "train_state.pt"
    if state_path.is_file():
        st = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(st["model"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        step = int(st["step"])

    if script["dataset_mode"] == "cityscapes":
        from ..data.cityscapes import CityscapesTrainIds
        data = CityscapesTrainIds(script["data_dir"], "train", size=flags["image_size"], random_flip=True,
                                  instances=not flags["no_instance"], seed=extra.seed)
    elif script["dataset_mode"] == "synthetic":
        from ..data.synthetic import SyntheticScenes
        data = SyntheticScenes(extra.synthetic_count, seed=extra.seed)
    else:
        raise SystemExit(f"--dataset_mode {script['dataset_mode']!r}: use cityscapes or synthetic")
    if data.num_classes != flags["num_classes"]:
        raise SystemExit(f"the data have {data.num_classes} classes, --num_classes is {flags['num_classes']}")
    codec = "hevc" if flags["compression_type"] == "down+bpg" else None
    if flags["compression_type"] not in ("down+bpg", "resize"):
        raise SystemExit(f"--compression_type {flags['compression_type']!r}: use down+bpg or resize")
    quality = bpg_to_hevc_quality(flags["compression_level"]) if codec else None
    autocast = torch.float16 if flags["use_fp16"] and device.type == "cuda" else None
    total = script["lr_anneal_steps"] or None
    stop = min(s for s in (total, extra.max_steps or None, float("inf")) if s is not None)
    bs = script["batch_size"]
    t0 = time.time()
    while step < stop:
        if total:
            for g in opt.param_groups:
                g["lr"] = script["lr"] * (1 - step / total)
        idx = torch.randint(0, len(data), (bs,), generator=gen).tolist()
        items = [data[i] for i in idx]
        x0 = torch.stack([it["image"] for it in items])
        labels = torch.stack([it["label"] for it in items])
        inst = torch.stack([it["instance"] for it in items]) if not flags["no_instance"] else None
        coarse = training_coarse(x0, settings["coarse_size"], codec, [quality] * bs if codec else None)
        up = upsample(coarse, x0.shape[2:]).to(device)
        y = spic_map(labels, flags["num_classes"], instances=inst).to(device)
        t = torch.randint(0, diffusion.num_timesteps, (bs,), generator=gen)
        with torch.autocast(device.type, dtype=autocast) if autocast else torch.autocast("cpu", enabled=False):
            loss = diffusion.training_losses(model, x0.to(device), t.to(device), y, concat=up,
                                             cond_drop_prob=script["drop_rate"], generator=gen).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.mul_(ema_rate).add_(pm.detach(), alpha=1 - ema_rate)
        step += 1
        if step % script["log_interval"] == 0:
            print(json.dumps({"step": step, "loss": loss.item(), "s_per_step": (time.time() - t0) / step}), flush=True)
        if step % script["save_interval"] == 0 or step == stop:
            save_spic(out / "model", ema.eval(), diffusion, num_classes=flags["num_classes"],
                      coarse_size=settings["coarse_size"], max_iter_time=200, timestep_respacing="100",
                      guidance_scale=1.5, extra={"spic_flags": flags, "trained_steps": step})
            ema.train()
            tmp = state_path.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                        "gen": gen.get_state(), "step": torch.tensor(step)}, tmp)
            tmp.replace(state_path)


if __name__ == "__main__":  # pragma: no cover
    main()
