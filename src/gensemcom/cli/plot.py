"""``gensemcom plot``: PNG figures from a sweep folder (or its ``results.json``).

Examples::

    gensemcom plot runs/sweep                          # every metric vs SNR, rate plots, grids
    gensemcom plot runs/sweep --metrics psnr,miou --out runs/sweep/plots
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .common import HelpFormatter, common_parser, nonnegative_int, plain


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gensemcom plot", description=plain(__doc__.split("\n\n")[0]),
                                formatter_class=HelpFormatter,
                                parents=[common_parser("output folder (default: <sweep>/plots)")])
    p.add_argument("results", help="a sweep folder or its results.json")
    p.add_argument("--metrics", default=None, help="comma-separated metrics (default: all present)")
    p.add_argument("--grid-images", type=nonnegative_int, default=2, help="images per grid (0: no grids)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from ..plot import make_plots
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    for f in make_plots(args.results, args.out, metrics, args.grid_images):
        print(f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
