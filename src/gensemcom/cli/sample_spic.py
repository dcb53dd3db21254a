"""SPIC's ``image_sample.py`` command line, verbatim, on this package (frapez1/SPIC, arXiv 2310.15737).

    gensemcom sample --data_dir ./data/cityscapes --dataset_mode cityscapes \\
        --batch_size 2 --attention_resolutions 32,16,8 --diffusion_steps 1000 --image_size 256 \\
        --learn_sigma True --noise_schedule linear --num_channels 256 --num_head_channels 64 \\
        --num_res_blocks 2 --resblock_updown True --use_fp16 True --use_scale_shift_norm True \\
        --num_classes 19 --class_cond True --large_size 128 --small_size 64 --no_instance True \\
        --num_samples 60 --s 1.5 --max_iter_time 200 --timestep_respacing 100 --no_instance True \\
        --model_path ./Checkpoints/model.pt --results_path ./Result/

Every flag takes effect as in SPIC: the network and the sampling window (``timestep_respacing``
filtered to ``t <= max_iter_time``), ``s`` (guidance on the map only), ``use_ddim``,
``clip_denoised``, ``compression_type`` (``down+bpg``: BPG is not packaged, so HEVC-intra through
libheif at :func:`bpg_to_hevc_quality` of ``compression_level``; ``resize``: the unquantised area
downsample, nothing coded), ``small_size`` x ``large_size`` = the coarse height x width. The chain
starts from the un-noised upsampled coarse image as SPIC does (``--start coarse``, the default
here because this is SPIC's command; ``--start noised`` is the principled variant).

Differences, all stated: ``--model_path`` may also be a SPIC model folder (``save_spic``; its
network config then replaces the network flags); the
data are Cityscapes' val split read as trainIds (:class:`CityscapesTrainIds`) or, with
``--dataset_mode synthetic``, synthetic scenes; exactly ``num_samples`` images are written
(SPIC's loop overshoots by up to a batch); one seeded generator (``--seed``, default 0) replaces
``set_random_seed(0)``; ``use_fp16`` means float16 autocast on CUDA (ignored on CPU); the map is
coded with ``--label_codec`` (default ``jpegxl``, FLIF's successor; FLIF is not packaged).

Writes ``images/``, ``samples/``, ``labels/`` (SPIC's grey label PNGs, id * 255 / 35),
``compressed/`` (the coded coarse file and its decoded PNG) and ``results.json`` with both rates:
what was sent (both files' bits over H x W) and SPIC's formula (fixed 512 x 256, bilinear
re-encode, labels as grey PNG).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..models.io import load_checkpoint
from ..systems.spic import (SPIC, bpg_to_hevc_quality, parse_spic_flags, spic_config_from_flags,
                                    spic_label_grey, spic_model_and_diffusion, training_coarse)

EXTRA = {"start": "coarse", "image_codec": None, "label_codec": "jpegxl", "seed": 0, "device": "cpu",
         "synthetic_count": 8}


def _png(x: torch.Tensor, path: Path) -> None:
    arr = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    Image.fromarray(arr).save(path)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ours = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for k, v in EXTRA.items():
        ours.add_argument(f"--{k}", type=type(v) if v is not None else str, default=v)
    extra, rest = ours.parse_known_args(argv)
    flags, script = parse_spic_flags(rest)
    model, diffusion = spic_model_and_diffusion(flags)
    _, _, settings = spic_config_from_flags(flags)
    mp = Path(script["model_path"])
    if mp.is_dir():  # a saved folder carries its own network config (e.g. a small SPADE width)
        from ..models.io import load_pretrained
        model = load_pretrained(mp)[0]
    else:
        load_checkpoint(model, mp)
    device = torch.device(extra.device)
    model.to(device).eval()
    autocast = torch.float16 if flags["use_fp16"] and device.type == "cuda" else None

    if script["dataset_mode"] == "cityscapes":
        from ..data.cityscapes import CityscapesTrainIds
        if flags["num_classes"] != 19:
            raise SystemExit("--dataset_mode cityscapes reads the 19 trainIds: pass --num_classes 19")
        data = CityscapesTrainIds(script["data_dir"], "val", size=flags["image_size"], random_flip=False,
                                  instances=not flags["no_instance"])
    elif script["dataset_mode"] == "synthetic":
        from ..data.synthetic import SyntheticScenes
        data = SyntheticScenes(max(extra.synthetic_count, script["num_samples"]), seed=2000)
        if flags["num_classes"] != data.num_classes:
            raise SystemExit(f"synthetic scenes have {data.num_classes} classes: pass --num_classes {data.num_classes}")
    else:
        raise SystemExit(f"--dataset_mode {script['dataset_mode']!r}: use cityscapes or synthetic")

    coded = flags["compression_type"] == "down+bpg"
    if flags["compression_type"] not in ("down+bpg", "resize"):
        raise SystemExit(f"--compression_type {flags['compression_type']!r}: use down+bpg or resize")
    codec = extra.image_codec or "hevc"
    quality = bpg_to_hevc_quality(flags["compression_level"]) if codec == "hevc" else int(flags["compression_level"])
    spic = SPIC(model, diffusion, num_classes=flags["num_classes"],
                coarse_size=tuple(settings["coarse_size"]), image_codec=codec, quality=quality,
                label_codec=extra.label_codec, guidance_scale=script["s"],
                method="ddim" if script["use_ddim"] else "ddpm", start=extra.start,
                clip_denoised=script["clip_denoised"], max_iter_time=flags["max_iter_time"], autocast=autocast)
    out = Path(script["results_path"] or "results")
    dirs = {k: out / k for k in ("images", "samples", "labels", "compressed")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(extra.seed)
    n = min(script["num_samples"], len(data))
    bs = script["batch_size"]
    sent_bpp, spic_bpp = [], []
    for start in range(0, n, bs):
        items = [data[i] for i in range(start, min(start + bs, n))]
        images = torch.stack([it["image"] for it in items])
        labels = torch.stack([it["label"] for it in items])
        names = [Path(it["path"]).name.split(".")[0] for it in items]
        if coded:
            payloads = spic.encode(images, labels)
            coarse = torch.stack([p.coarse for p in payloads])
            _, bpp = spic.rate_bits(payloads, images, labels)
            sent_bpp += bpp
            spic.rate = "spic"
            spic_bpp += spic.rate_bits(payloads, images, labels)[1]
            spic.rate = "sent"
            for name, p in zip(names, payloads):
                (dirs["compressed"] / f"{name}.{codec}").write_bytes(p.image_file)
        else:
            coarse = training_coarse(images, spic.coarse_size)
        samples = spic.receive(labels, coarse, gen).cpu()
        for i, name in enumerate(names):
            _png(images[i], dirs["images"] / f"{name}.png")
            _png(samples[i], dirs["samples"] / f"{name}.png")
            _png(coarse[i], dirs["compressed"] / f"{name}.png")
            Image.fromarray(spic_label_grey(labels[i].numpy())).save(dirs["labels"] / f"{name}.png")
        print(f"created {min(start + bs, n)} samples", flush=True)
    result = {"flags": flags, "script": script, "extra": vars(extra), "timesteps": diffusion.timesteps,
              "image_codec": codec, "quality": quality, "label_codec": extra.label_codec,
              "bpp_sent": float(np.mean(sent_bpp)) if sent_bpp else None,
              "bpp_spic_formula": float(np.mean(spic_bpp)) if spic_bpp else None, "num_samples": n}
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("bpp_sent", "bpp_spic_formula", "num_samples")}))


if __name__ == "__main__":  # pragma: no cover
    main()
