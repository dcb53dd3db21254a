"""Sweep throughput sharded with torchrun: N processes against 1, the same sweep, side by side.

    python benchmarks/bench_torchrun.py --nproc 2 --json benchmarks/torchrun_scaling.json

Runs ``gensemcom.cli.evaluate`` (``python -m gensemcom.cli.evaluate``) on the same sweep three
ways, in turn, ``--repeats`` rounds (the minimum wall time per way is kept):

- ``1proc``: one process, ``--threads 1``;
- ``1proc_Nthreads``: one process with N torch threads (the alternative use of the same cores);
- ``torchrun_N``: ``torchrun --nproc_per_node N``, each process ``--threads 1``; every rank takes
  its share of the work items and rank 0 aggregates (see gensemcom.evaluate).

Throughput = work items (systems x data x channels x SNRs x samples, each a batch of images)
per second of wall time (and the CPU seconds of all its processes, whose ratio to one process's
is the sharding overhead), start-up included (each run is a fresh interpreter that imports torch
and loads the models, as a real sweep does). The results JSON of the sharded run must equal the
single-process one (apart from timings); the script checks it. Speed-up = throughput / 1proc.
On a machine shared with other jobs the speed-up is bounded by the free cores, not by the code.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _strip(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The curves of a results JSON without their timings (as tests/test_evaluate.py compares)."""
    return [{k: v for k, v in c.items() if k != "seconds_per_image"} for c in results["results"]]


def _count_items(out: Path) -> int:
    return sum(1 for f in (out / "records").glob("*.jsonl") for line in f.read_text().splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--systems", default="gesco,jpeg+ldpc")
    p.add_argument("--data", default="synthetic:8")
    p.add_argument("--snr", default="0,10")
    p.add_argument("--channels", default="awgn")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    common = ["--systems", args.systems, "--data", args.data, "--channels", args.channels, f"--snr={args.snr}",
              "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--save-images", "0",
              "--no-progress", "--seed", "0"]
    torchrun = Path(sys.executable).parent / "torchrun"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    tmp = Path(tempfile.mkdtemp(prefix="bench_torchrun_"))
    ways = {
        "1proc": [sys.executable, "-m", "gensemcom.cli.evaluate", *common, "--threads", "1"],
        f"1proc_{args.nproc}threads": [sys.executable, "-m", "gensemcom.cli.evaluate", *common,
                                       "--threads", str(args.nproc)],
        f"torchrun_{args.nproc}": [str(torchrun), "--nproc_per_node", str(args.nproc), "--master_port", "29571",
                                   "-m", "gensemcom.cli.evaluate", *common, "--threads", "1"],
    }
    best = {k: float("inf") for k in ways}
    cpu: dict[str, float] = {}  # CPU seconds of all the run's processes
    for r in range(args.repeats):
        for key, cmd in ways.items():
            out = tmp / f"{key}_{r}"
            e = dict(env, OMP_NUM_THREADS=str(args.nproc)) if "threads" in key else env
            c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            proc = subprocess.run([*cmd, "--out", str(out)], env=e, capture_output=True, text=True, cwd=ROOT)
            dt = time.perf_counter() - t0
            c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[key] = min(cpu.get(key, float("inf")), c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{key} failed (exit {proc.returncode})")
            best[key] = min(best[key], dt)
            print(f"round {r}: {key:<16s} {dt:7.1f} s wall, {cpu[key]:7.1f} s CPU", flush=True)
    n_items = _count_items(tmp / "1proc_0")
    res0 = _strip(json.loads((tmp / "1proc_0" / "results.json").read_text()))
    same = {k: _strip(json.loads((tmp / f"{k}_0" / "results.json").read_text())) == res0 for k in ways}
    rows = {k: {"wall_s": v, "cpu_s": cpu[k], "items_per_s": n_items / v, "speedup_vs_1proc": best["1proc"] / v,
                "cpu_overhead_vs_1proc": cpu[k] / cpu["1proc"], "results_equal_1proc": same[k]}
            for k, v in best.items()}
    print(f"\n{n_items} work items ({args.systems}; {args.data}; {args.channels}; SNR {args.snr}; batch "
          f"{args.batch_size}; DDIM {args.steps}); min of {args.repeats} round(s); load "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end")
    for k, r in rows.items():
        print(f"  {k:<16s} {r['wall_s']:7.1f} s  {r['items_per_s']:.3f} items/s  x{r['speedup_vs_1proc']:.2f}  "
              f"CPU {r['cpu_s']:.1f} s (x{r['cpu_overhead_vs_1proc']:.2f})  results equal: {r['results_equal_1proc']}")
    if args.json:
        meta = dict(python=platform.python_version(), cpu_count=os.cpu_count(), args=vars(args), items=n_items,
                    loadavg_end=os.getloadavg(), command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]))
        Path(args.json).write_text(json.dumps({"meta": meta, "ways": rows}, indent=2) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
