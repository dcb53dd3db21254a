"""``gensemcom plot``: PNG figures from a sweep folder (or its ``results.json``).

Examples::

    gensemcom plot runs/sweep                          # every metric vs SNR, rate plots, grids
    gensemcom plot runs/sweep --metrics psnr,miou --out runs/sweep/plots
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from ..plot import image_grid, load_results, plot_rate, plot_vs_snr


def make_plots(folder: str | Path, out: str | Path | None = None, metrics: Sequence[str] | None = None,
               grid_images: int = 2) -> list[Path]:
    """Every figure a sweep folder supports; returns the files written."""
    folder = Path(folder)
    results = load_results(folder)
    out = Path(out) if out else (folder if folder.is_dir() else folder.parent) / "plots"
    present = {k for c in results["results"] if c["system"] != "original" for k in c if isinstance(c.get(k), list)}
    wanted = metrics or [m for m in ("psnr", "ms_ssim", "ssim", "miou", "map_miou", "lpips", "fid", "diversity",
                                     "lost_fraction") if m in present]
    written = []
    for m in wanted:
        written.append(plot_vs_snr(results, m, out / f"{m}_vs_snr.png"))
    # rate against distortion (PSNR, MS-SSIM), meaning (mIoU) and perception (LPIPS, FID)
    for m in ("psnr", "ms_ssim", "miou", "lpips", "fid"):
        if m in wanted:
            written.append(plot_rate(results, m, out / f"{m}_vs_channel_uses.png"))
    if "bpp" in present and "psnr" in wanted:
        written.append(plot_rate(results, "psnr", out / "psnr_vs_bpp.png", rate="bpp"))
    root = folder if folder.is_dir() else folder.parent
    if grid_images and (root / "images").is_dir():
        for dataset in sorted(p.name for p in (root / "images").iterdir() if p.is_dir()):
            curves = [c for c in results["results"] if c["dataset"] == dataset and c["system"] != "original"]
            for channel in sorted({c["channel"] for c in curves}):
                systems = [c["system"] for c in curves if c["channel"] == channel]
                snrs = sorted({s for c in curves if c["channel"] == channel for s in c["snr_db"]})
                keys = ["inf" if s == float("inf") else f"{s:g}" for s in snrs]
                written.append(image_grid(root, out / f"grid_{dataset}_{channel}.png", dataset, channel,
                                          systems, keys, count=grid_images))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gensemcom plot", description=__doc__.split("\n\n")[0])
    p.add_argument("results", help="a sweep folder or its results.json")
    p.add_argument("--out", default=None, help="output folder (default: <sweep>/plots)")
    p.add_argument("--metrics", default=None, help="comma-separated metrics (default: all present)")
    p.add_argument("--grid-images", type=int, default=2, help="images per grid (0: no grids)")
    args = p.parse_args(argv)
    files = make_plots(args.results, args.out, args.metrics.split(",") if args.metrics else None, args.grid_images)
    for f in files:
        print(f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
