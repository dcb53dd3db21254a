"""The cost curve: time and memory per image against image size and batch, per receiver.

    python benchmarks/bench_cost.py --json benchmarks/cost_curve.json --plot benchmarks/cost_curve.png

Two parts, each configuration measured in a fresh subprocess (so that its peak memory is its own):

1. **network** (the receivers' common cost): one guided network evaluation (conditional +
   all-zero branch, the SPADE modulations cached, as inside a sampler) of the bundled GESCO
   model's architecture (``gensemcom.zoo.load_gesco()``, 3.2 M parameters, 32 channels), plain
   and through the fast path (``gensemcom.models.fastpath``), each in its own subprocess, at sizes
   ``--sizes`` and batches ``--batches``: CPU milliseconds per image per sampling step (min of
   ``--repeats`` after a warm-up), and the peak resident memory the evaluation adds (``ru_maxrss``
   at the end minus the resident set before the first evaluation), per image. A DDIM-N receiver
   costs about N times the step.
2. **systems** (``--systems``): one work item of a sweep (``--images`` synthetic scenes at the
   size, AWGN at 10 dB) through :meth:`gensemcom.evaluate.Sweep.measure`, exactly as a sweep
   runs it: the item's CPU time (system and metrics; ``total_cpu_ms_per_image``) and the
   sweep's own wall-clock record of the system's share (``seconds`` -> ``system_wall_ms_per_image``),
   DDIM ``--steps``, after a warm-up item; and the item's peak memory as above.
   A system that cannot run at a size (e.g. trained for another resolution) is listed with the
   reason.

All on CPU, ``--threads`` torch threads (1 by default), float32. CPU time (``time.process_time``)
rather than wall time, because on a machine shared with other jobs the wall clock measures the
queue for a core; with one thread the two agree on an idle machine. The JSON records the load
average around every configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

DEFAULT_SYSTEMS = "gesco,qgesco,spic,diffgo,deepjscc,gesco-map,map+ldpc,jpeg+ldpc"


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


#: time.process_time: on a machine shared with other jobs, one thread's CPU time is the work done
CLOCK = time.process_time


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


# ---------------------------------------------------------------------------- children
def child_network(h: int, w: int, batch: int, repeats: int, threads: int, variant: str) -> dict[str, Any]:
    import torch

    from gensemcom import zoo
    from gensemcom.diffusion.gaussian import Conditioning
    from gensemcom.models.fastpath import fast_unet

    torch.set_num_threads(threads)
    gesco = zoo.load_gesco(steps=10)
    model = gesco.model.eval()
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, gesco.num_classes, (batch, h // 8, w // 8), generator=g)
    labels = labels.repeat_interleave(8, 1).repeat_interleave(8, 2)
    y = gesco.transmit(labels, labels)
    x = torch.randn(batch, 3, h, w, generator=g)
    t = torch.full((batch,), 5)
    out: dict[str, Any] = {"size": [h, w], "batch": batch}
    base = _rss_mb()
    m = model if variant == "plain" else fast_unet(model)
    cond = Conditioning(m, y, gesco.guidance_scale, True)
    with torch.inference_mode():
        gesco.diffusion.guided_call(m, x, t, cond)  # warm-up, fills the SPADE cache
        best = float("inf")
        for _ in range(repeats):
            t0 = CLOCK()
            gesco.diffusion.guided_call(m, x, t, cond)
            best = min(best, CLOCK() - t0)
    out[f"{variant}_ms_per_image_step"] = 1e3 * best / batch
    out[f"{variant}_peak_mb_per_image"] = (_peak_mb() - base) / batch
    return out


def child_system(spec: str, h: int, w: int, images: int, steps: int, threads: int) -> dict[str, Any]:
    import torch

    from gensemcom.data import build_eval_data
    from gensemcom.evaluate import Sweep, SweepConfig, WorkItem, build_segmenters
    from gensemcom.systems.registry import SystemOptions, build_system

    torch.set_num_threads(threads)
    data = build_eval_data(f"synthetic:{images}", h, w, 0)
    segs, info = build_segmenters(data, [])
    system = build_system(spec, SystemOptions(steps=steps))
    sweep = Sweep(f"/tmp/gensemcom-bench-cost-{os.getpid()}", {spec: system}, data,
                  SweepConfig(channels=["awgn"], snrs=[10.0], batch_size=images), segs, info)
    item = WorkItem("synthetic", spec, "awgn", 10.0, 0)
    base = _rss_mb()
    sweep.measure(item)  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    rec = sweep.measure(item)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"system": spec, "size": [h, w], "images": images, "steps": steps,
            "system_wall_ms_per_image": 1e3 * rec["seconds"] / images,
            "total_wall_ms_per_image": 1e3 * total / images, "total_cpu_ms_per_image": 1e3 * cpu / images,
            "peak_mb_per_image": (_peak_mb() - base) / images}


# ---------------------------------------------------------------------------- parent
def run_child(args: list[str], threads: int, timeout: float) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT / "src"))
    load0 = os.getloadavg()[0]
    try:
        p = subprocess.run([sys.executable, __file__, "--child", json.dumps(args)], env=env, capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if p.returncode != 0:
        last = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
        return {"error": last[-1] if last else f"exit {p.returncode}"}
    res = json.loads(p.stdout.strip().splitlines()[-1])
    res["loadavg"] = [load0, os.getloadavg()[0]]
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--sizes", default="64x128,128x256,256x512")
    p.add_argument("--batches", default="1,4")
    p.add_argument("--systems", default=DEFAULT_SYSTEMS)
    p.add_argument("--system-sizes", default="64x128,128x256,256x512")
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--skip-network", action="store_true")
    p.add_argument("--json", default="benchmarks/cost_curve.json")
    p.add_argument("--plot", default=None)
    args = p.parse_args(argv)
    if args.child is not None:
        kind, *rest = json.loads(args.child)
        res = child_network(*rest) if kind == "network" else child_system(*rest)
        print(json.dumps(res))
        return 0

    def sizes(s: str) -> list[tuple[int, int]]:
        return [tuple(int(v) for v in item.split("x")) for item in s.split(",") if item]

    out: dict[str, Any] = {"meta": dict(python=platform.python_version(), machine=platform.machine(),
                                        cpu_count=os.cpu_count(), threads=args.threads, args=vars(args),
                                        command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]])),
                           "network": [], "systems": []}
    path = Path(args.json)
    if path.exists():  # continue a run: keep what it measured
        old = json.loads(path.read_text())
        out["network"], out["systems"] = old.get("network", []), old.get("systems", [])
    done_net = {(tuple(r["size"]), r["batch"]) for r in out["network"] if "error" not in r}
    done_sys = {(r["system"], tuple(r["size"])) for r in out["systems"] if "error" not in r}

    def save() -> None:
        path.write_text(json.dumps(out, indent=2) + "\n")

    if not args.skip_network:
        for h, w in sizes(args.sizes):
            for b in (int(v) for v in args.batches.split(",")):
                if ((h, w), b) in done_net:
                    continue
                r = {"size": [h, w], "batch": b}
                for variant in ("plain", "fast"):
                    one = run_child(["network", h, w, b, args.repeats, args.threads, variant], args.threads,
                                    args.timeout)
                    r.update({k: v for k, v in one.items() if k not in ("size", "batch", "loadavg")})
                    r[f"{variant}_loadavg"] = one.get("loadavg")
                out["network"].append(r)
                print("network", json.dumps(r), flush=True)
                save()
    for h, w in sizes(args.system_sizes):
        for spec in args.systems.split(","):
            if (spec, (h, w)) in done_sys:
                continue
            r = run_child(["system", spec, h, w, args.images, args.steps, args.threads], args.threads, args.timeout)
            r.setdefault("system", spec)
            r.setdefault("size", [h, w])
            out["systems"].append(r)
            print("system", json.dumps(r), flush=True)
            save()
    if args.plot:
        plot(out, args.plot)
    return 0


def plot(out: dict[str, Any], png: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    net = [r for r in out["network"] if "error" not in r]
    for b in sorted({r["batch"] for r in net}):
        rows = sorted((r for r in net if r["batch"] == b), key=lambda r: r["size"][0] * r["size"][1])
        px = [r["size"][0] * r["size"][1] for r in rows]
        for name, style in (("plain", "o-"), ("fast", "s--")):
            axes[0].plot(px, [r[f"{name}_ms_per_image_step"] for r in rows], style, label=f"{name}, batch {b}")
            axes[1].plot(px, [r[f"{name}_peak_mb_per_image"] for r in rows], style, label=f"{name}, batch {b}")
    axes[0].set_title("bundled GESCO net: one guided step")
    axes[0].set_ylabel("CPU ms per image per step")
    axes[1].set_title("peak memory added by the step")
    axes[1].set_ylabel("MB per image")
    sysrows = [r for r in out["systems"] if "error" not in r]
    for spec in dict.fromkeys(r["system"] for r in sysrows):
        rows = sorted((r for r in sysrows if r["system"] == spec), key=lambda r: r["size"][0] * r["size"][1])
        axes[2].plot([r["size"][0] * r["size"][1] for r in rows], [r["total_cpu_ms_per_image"] for r in rows], "o-",
                     label=spec)
    axes[2].set_title(f"receivers, one sweep item (DDIM {out['meta']['args']['steps']})")
    axes[2].set_ylabel("CPU ms per image (system + metrics)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("pixels per image (64x128 .. 256x512)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(f"CPU, {out['meta']['threads']} thread(s), float32")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")


if __name__ == "__main__":
    sys.exit(main())
