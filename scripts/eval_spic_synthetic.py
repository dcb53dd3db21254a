#!/usr/bin/env python
"""SPIC against the codecs alone at equal bpp on the synthetic scenes (the paper's comparison).

For every scene and codec quality q, SPIC sends the map (lossless) and the coarse image at q;
its rate is the bits sent over the image's pixels. The baselines get exactly SPIC's total bits
per image:

- ``coarse-up``: the coarse image alone, coded at the best quality within SPIC's bits, upsampled
  bilinearly (what SPIC's receiver would show without its map and its generator);
- ``codec``: the full-resolution image coded within SPIC's bits (separate coding, no map).

Metrics against the original: PSNR and MS-SSIM (images in [0, 1]; 3 scales at 64x128), and the
mIoU of the bundled segmenter's maps of the output against the true map (dataset-level confusion
matrix; a baseline whose file does not fit counts as a mid-grey image).

    .venv/bin/python scripts/eval_spic_synthetic.py --model runs/spic_synthetic/model --scenes 16
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from gensemcom.codecs import decode_image, encode_to_budget
from gensemcom.data.synthetic import SyntheticScenes
from gensemcom.metrics.fidelity import ms_ssim, psnr
from gensemcom.metrics.semantic import ConfusionMatrix
from gensemcom.models.segmenter import load_segmenter
from gensemcom.systems.spic import downsample, load_spic, upsample


def _u8(x: torch.Tensor) -> list[np.ndarray]:
    return list(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())


def _from_u8(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float() / 127.5 - 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--scenes", type=int, default=16)
    p.add_argument("--seed", type=int, default=2000, help="the synthetic scenes' seed (not the training one)")
    p.add_argument("--codec", default="jpegxl")
    p.add_argument("--qualities", default="30,70")
    p.add_argument("--label_codec", default="jpegxl", help="SPIC's map codec (FLIF's successor by default)")
    p.add_argument("--variants", default="ddpm:noised,ddpm:coarse,ddim:noised",
                   help="METHOD:START receivers; 'none' scores the baselines only (SPIC's bits need no sampling)")
    p.add_argument("--full_codecs", default=None, help="codecs of the full-resolution baseline (default: --codec)")
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--sample_seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the table as JSON here")
    a = p.parse_args()

    seg = load_segmenter("bundled")
    probe = load_spic(a.model)
    data = SyntheticScenes(a.scenes, seed=a.seed)
    items = [data[i] for i in range(len(data))]
    images = torch.stack([it["image"] for it in items])
    labels = torch.stack([it["label"] for it in items])
    h, w = images.shape[2:]
    nc = data.num_classes
    rows = []

    def score(name: str, out: torch.Tensor, bpp: list[float], extra: dict | None = None) -> None:
        x, y = (out.clamp(-1, 1) + 1) / 2, (images + 1) / 2
        cm = ConfusionMatrix(nc, ignore_index=255)
        for i in range(0, len(out), a.batch):
            cm.update(seg.predict(out[i:i + a.batch]), labels[i:i + a.batch])
        row = {"system": name, "bpp": float(np.mean(bpp)), "psnr": float(psnr(x, y).mean()),
               "ms_ssim": float(ms_ssim(x, y).mean()), "miou": cm.miou(), **(extra or {})}
        rows.append(row)
        print(json.dumps(row), flush=True)

    gt_cm = ConfusionMatrix(nc, ignore_index=255)
    gt_cm.update(seg.predict(images), labels)
    print(json.dumps({"system": "original", "miou": gt_cm.miou()}), flush=True)

    for q in (int(v) for v in a.qualities.split(",")):
        variants = [] if a.variants == "none" else [v.split(":") for v in a.variants.split(",")]
        sp = load_spic(a.model, image_codec=a.codec, quality=q, label_codec=a.label_codec)
        total_bits = [pl.bits for pl in sp.encode(images, labels)]
        for method, start in variants:
            sp = load_spic(a.model, image_codec=a.codec, quality=q, method=method, start=start,
                           guidance_scale=a.guidance, label_codec=a.label_codec)
            g = torch.Generator().manual_seed(a.sample_seed)
            outs, bits, t0 = [], [], time.time()
            for i in range(0, len(images), a.batch):
                r = sp.run(images[i:i + a.batch], labels[i:i + a.batch], g)
                outs.append(r["images"])
                bits += r["bits"]
            assert bits == total_bits
            score(f"spic[{method},{start}]", torch.cat(outs), [b / (h * w) for b in bits],
                  {"quality": q, "seconds": round(time.time() - t0, 1), "guidance": sp.guidance_scale})
        # the baselines at SPIC's bits, image by image
        coarse_small = downsample(images, probe.coarse_size)
        up, up_bpp = [], []
        for i in range(len(images)):
            data_c, _ = encode_to_budget(_u8(coarse_small[i:i + 1])[0], a.codec, total_bits[i])
            c = _from_u8(decode_image(data_c, a.codec))[None] if data_c is not None else torch.zeros_like(
                coarse_small[i:i + 1])
            up.append(upsample(c, (h, w)))
            up_bpp.append(0.0 if data_c is None else 8 * len(data_c) / (h * w))
        score("coarse-up (equal bits)", torch.cat(up), up_bpp, {"quality": q})
        for codec in (a.full_codecs or a.codec).split(","):
            full, full_bpp, lost = [], [], 0
            for i in range(len(images)):
                data_f, _ = encode_to_budget(_u8(images[i:i + 1])[0], codec, total_bits[i])
                lost += data_f is None
                full.append(_from_u8(decode_image(data_f, codec))[None] if data_f is not None
                            else torch.zeros_like(images[i:i + 1]))
                full_bpp.append(0.0 if data_f is None else 8 * len(data_f) / (h * w))
            score(f"{codec} full-res (equal bits)", torch.cat(full), full_bpp,
                  {"quality": q, "lost_fraction": lost / len(images)})
        files = [pl.image_file for pl in sp.encode(images, labels)]
        score("coarse-up (SPIC's coarse file alone)", upsample(torch.stack(
            [_from_u8(decode_image(f, a.codec)) for f in files]), (h, w)), [8 * len(f) / (h * w) for f in files],
            {"quality": q})
    if a.out:
        Path(a.out).write_text(json.dumps({"args": vars(a), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
