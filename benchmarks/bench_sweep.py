"""Cost of a sweep: seconds per image per SNR for each system, metrics included.

    python benchmarks/bench_sweep.py [--systems ...] [--images 4] [--steps 10] [--threads 2]

For each system, one work item (a batch of ``--images`` synthetic scenes at one SNR on AWGN) is
measured ``--repeats`` times through :meth:`gensemcom.evaluate.Sweep.measure`, i.e. exactly what a
sweep does per item: the system's transmit/channel/receive, then PSNR/SSIM/MS-SSIM, the
segmenter, mIoU. Prints a table and writes JSON (``--json``). Time on a quiet machine only.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gensemcom.data import build_eval_data  # noqa: E402
from gensemcom.evaluate import Sweep, SweepConfig, WorkItem, build_segmenters  # noqa: E402
from gensemcom.systems.registry import SystemOptions, build_system  # noqa: E402

DEFAULT = (
    "gesco,gesco-map,gesco-digital,map+ldpc,deepjscc,jpeg+ldpc,webp+ldpc,jpeg2000+ldpc,jpegxl+ldpc,hevc+ldpc,jpeg+capacity"
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--systems", default=DEFAULT)
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--snr", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = build_eval_data(f"synthetic:{args.images}", 64, 128, 0)
    segs, info = build_segmenters(data, [])
    rows = []
    for spec in args.systems.split(","):
        system = build_system(spec, SystemOptions(steps=args.steps))
        sweep = Sweep("/tmp/gensemcom-bench-sweep", {spec: system}, data,
                      SweepConfig(channels=["awgn"], snrs=[args.snr], batch_size=args.images), segs, info)
        item = WorkItem("synthetic", spec, "awgn", args.snr, 0)
        sweep.measure(item)  # warm-up
        times, system_times = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            rec = sweep.measure(item)
            times.append(time.perf_counter() - t0)
            system_times.append(rec["seconds"])
        per_image = statistics.median(times) / args.images
        system_share = statistics.median(system_times) / args.images
        rows.append({"system": spec, "seconds_per_image": per_image, "system_seconds_per_image": system_share,
                     "metric_seconds_per_image": per_image - system_share})
        print(f"{spec:<16} {per_image * 1e3:9.1f} ms/image/SNR  (system {system_share * 1e3:8.1f}, "
              f"metrics {(per_image - system_share) * 1e3:6.1f})", flush=True)
    out = {"machine": platform.processor() or platform.machine(), "threads": args.threads, "torch": torch.__version__,
           "images": args.images, "steps": args.steps, "snr_db": args.snr, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
