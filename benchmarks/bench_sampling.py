"""Speed benchmark: the gensemcom diffusion core against the original GESCO code.

What is measured, per configuration (a Cityscapes-like semantic map of 36 channels: one-hot of
35 classes plus an instance-edge channel, a deterministic random blocky map):

1. **Network call** (ms per forward at batch ``B``): our ``SemanticUNet`` with the raw map ``y``,
   ours with a cached condition (``model.encode_condition(y)``: SPADE modulations computed once,
   so this is the per-step cost inside a sampler), and the reference ``UNetModel``.
2. **Sampling** (images/s): DDIM-N with classifier-free guidance ``s``, ``eta = 0``, clipping on.
   Ours is ``diffusion.sample(..., method="ddim", cache_condition=True|False)``, which runs the
   conditional and the all-zero-map branch as one batched forward; the reference is GESCO's
   ``ddim_sample_loop(model, shape, model_kwargs={"y": y, "s": s})``, whose ``p_mean_variance``
   runs the unconditional branch as a second, sequential forward. Speed-up = ours / reference.
3. **Agreement**: the same weights (every parameter re-drawn from a seeded N(0, 0.02), then the
   output conv rescaled so the noise prediction has unit std; zero-initialised output convs would
   make every output trivially equal) and the same x_T go through both samplers; the max abs
   difference of the final x_0 is reported and flagged ``ok`` when within 1e-4 (float32 runs).

Configurations (guided-diffusion flag names, ``timestep_respacing="ddimN"``):

- ``small``: image_size 64, num_channels 64, channel_mult 1,1,2,2,4,4, attention_resolutions
  8,4,2, num_head_channels 32, inputs 64x128 (H x W): the full Cityscapes model (256 channels,
  256x512) at 1/4 of its width and resolution.
- ``medium``: image_size 128, num_channels 128, attention_resolutions 16,8,4, inputs 128x256.

Timing: ``time.perf_counter``, one warm-up run before every timed measurement, the minimum over
``--repeats`` runs, ``torch.cuda.synchronize()`` around each run on a GPU. The reference runs
under ``torch.no_grad()`` (as its ``image_sample.py`` does); ours as its API does
(``diffusion.sample`` uses ``torch.inference_mode``; the network-call timings use it too).

Setup of the reference (optional; without it only our numbers are printed). From a local
checkout of ispamm/GESCO::

    mkdir -p /tmp/gesco_ref
    git -C /path/to/GESCO archive HEAD guided_diffusion | tar -x -C /tmp/gesco_ref

GESCO's package imports two modules it does not ship (``guided_diffusion/logger.py``, used by
``fp16_util.py``, and ``guided_diffusion/unet_edited.py``, imported by ``script_util.py``); this
script registers small stand-ins for them in ``sys.modules`` before importing ``script_util``.
Nothing of the reference is copied into this project.

Run (from the project root, with the project's virtual environment)::

    python benchmarks/bench_sampling.py --reference-repo /tmp/gesco_ref
    python benchmarks/bench_sampling.py --configs small --steps 25 --batch 2 --threads 2 \\
        --reference-repo /tmp/gesco_ref --json results.json
    python benchmarks/bench_sampling.py --device cuda --autocast bf16 --channels-last \\
        --reference-repo /tmp/gesco_ref

Options: ``--configs small,medium``, ``--steps`` (DDIM steps, default 10; N must give an
integer stride over 1000 steps: 10, 20, 25, 50 ...), ``--batch`` (1), ``--guidance`` (2.0),
``--repeats`` (3, the minimum is kept), ``--threads`` (``torch.set_num_threads``), ``--device``
(``cpu``/``cuda``), ``--autocast none|bf16|fp16`` (ours only, GPU only; the agreement check then
also reports the autocast sample's difference, for information), ``--channels-last`` (also time
our model in channels-last memory format, reported beside the default format),
``--json PATH``, ``--reference-repo DIR`` (a directory containing ``guided_diffusion/``).

At the defaults both configurations with the reference take roughly 3-5 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import importlib.util
import json
import math
import os
import platform
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from gensemcom.legacy import model_and_diffusion_from_flags

NUM_CLASSES = 35  # Cityscapes; + 1 instance-edge channel = 36 label channels
TOLERANCE = 1e-4
SEED = 0

BASE_FLAGS: dict[str, Any] = dict(
    num_classes=NUM_CLASSES, num_res_blocks=2, num_head_channels=32, channel_mult="1,1,2,2,4,4",
    resblock_updown=True, use_scale_shift_norm=True, learn_sigma=True, class_cond=True,
    one_hot_label=True, no_instance=False, diffusion_steps=1000,
)

#: name -> (flags, (H, W) of the inputs)
CONFIGS: dict[str, tuple[dict[str, Any], tuple[int, int]]] = {
    "small": (dict(BASE_FLAGS, image_size=64, num_channels=64, attention_resolutions="8,4,2"), (64, 128)),
    "medium": (dict(BASE_FLAGS, image_size=128, num_channels=128, attention_resolutions="16,8,4"), (128, 256)),
}

AUTOCAST = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


# ---------------------------------------------------------------------------- inputs and weights
def label_map(batch: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """A deterministic random blocky semantic map: (B, 36, H, W) float32, one-hot of 35 classes
    plus an edge channel marking pixels whose class differs from a 4-neighbour's."""
    grid = (8, 16)  # blocks per (H, W): 8x8-pixel blocks at 64x128, 16x16 at 128x256
    ids = torch.randint(0, NUM_CLASSES, (batch, 1, *grid), generator=generator)
    ids = F.interpolate(ids.float(), size=(height, width), mode="nearest").long()[:, 0]
    one_hot = F.one_hot(ids, NUM_CLASSES).permute(0, 3, 1, 2).float()
    edge = torch.zeros_like(ids, dtype=torch.bool)
    dx = ids[:, :, 1:] != ids[:, :, :-1]
    dy = ids[:, 1:, :] != ids[:, :-1, :]
    edge[:, :, 1:] |= dx
    edge[:, :, :-1] |= dx
    edge[:, 1:, :] |= dy
    edge[:, :-1, :] |= dy
    return torch.cat([one_hot, edge[:, None].float()], dim=1)


def init_weights(model: torch.nn.Module, generator: torch.Generator, std: float = 0.02) -> None:
    """Every parameter <- N(0, std^2) from ``generator`` (in ``named_parameters`` order)."""
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float32) * std)


def calibrate_output(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> float:
    """Rescale the output conv so that the noise prediction has unit std on (x, t, y); returns
    the std before rescaling."""
    with torch.inference_mode():
        eps_std = model(x, t, y)[:, : x.shape[1]].float().std().item()
    conv = model.out[-1]
    with torch.no_grad():
        conv.weight.mul_(1.0 / eps_std)
        conv.bias.mul_(1.0 / eps_std)
    return eps_std


# ---------------------------------------------------------------------------- the reference
def import_reference(repo: str) -> types.ModuleType:
    """Import ``guided_diffusion.script_util`` from ``repo`` with stand-ins for its missing modules."""
    root = Path(repo).resolve()
    if not (root / "guided_diffusion" / "script_util.py").is_file():
        raise SystemExit(f"--reference-repo {repo}: no guided_diffusion/script_util.py there "
                         "(see the module docstring for the setup)")
    loaded = sys.modules.get("guided_diffusion")
    if loaded is not None and Path(loaded.__file__).resolve().parent != root / "guided_diffusion":
        raise SystemExit(f"another guided_diffusion is already imported from {loaded.__file__}")
    sys.path.insert(0, str(root))
    pkg = importlib.import_module("guided_diffusion")

    if "guided_diffusion.logger" not in sys.modules and not (root / "guided_diffusion" / "logger.py").exists():
        logger = types.ModuleType("guided_diffusion.logger")
        for name in ("log", "logkv", "logkv_mean", "dumpkvs", "info", "warn", "configure"):
            setattr(logger, name, lambda *a, **k: None)
        logger.get_dir = lambda: None
        sys.modules["guided_diffusion.logger"] = logger
        pkg.logger = logger
    if "guided_diffusion.unet_edited" not in sys.modules and not (root / "guided_diffusion" / "unet_edited.py").exists():
        edited = types.ModuleType("guided_diffusion.unet_edited")

        class _Missing:  # only reached with unet_model != "unet"
            def __init__(self, *a: Any, **k: Any) -> None:
                raise NotImplementedError("guided_diffusion.unet_edited is not part of GESCO's repository")

        edited.UNetModelSPADE = type("UNetModelSPADE", (_Missing,), {})
        edited.UNetModelEncOnly = type("UNetModelEncOnly", (_Missing,), {})
        sys.modules["guided_diffusion.unet_edited"] = edited
        pkg.unet_edited = edited
    if importlib.util.find_spec("matplotlib") is None:  # imported (unused) by gaussian_diffusion.py
        mpl = types.ModuleType("matplotlib")
        mpl.pyplot = types.ModuleType("matplotlib.pyplot")
        sys.modules["matplotlib"] = mpl
        sys.modules["matplotlib.pyplot"] = mpl.pyplot
    return importlib.import_module("guided_diffusion.script_util")


def build_reference(script_util: types.ModuleType, flags: dict[str, Any]) -> tuple[Any, Any]:
    args = script_util.model_and_diffusion_defaults()
    unknown = set(flags) - set(args)
    if unknown:
        raise SystemExit(f"the reference does not know the flags {sorted(unknown)}")
    args.update(flags)
    return script_util.create_model_and_diffusion(**args)


# ---------------------------------------------------------------------------- timing
def best_time(fn: Callable[[], Any], repeats: int, device: torch.device) -> tuple[float, Any]:
    """One warm-up call, then the minimum wall time (s) over ``repeats`` calls; also the last output."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    out = fn()
    sync()
    best = math.inf
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best, out


def autocast_ctx(dtype: torch.dtype | None, device: torch.device) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


# ---------------------------------------------------------------------------- one configuration
def run_config(name: str, args: argparse.Namespace, device: torch.device,
               script_util: types.ModuleType | None) -> dict[str, Any]:
    base_flags, (height, width) = CONFIGS[name]
    flags = dict(base_flags, timestep_respacing=f"ddim{args.steps}")
    B, s, reps = args.batch, args.guidance, args.repeats
    amp = AUTOCAST[args.autocast]
    gen = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)  # the reference's ddim_sample draws (unused at eta 0) global noise

    model, diffusion = model_and_diffusion_from_flags(flags)
    if diffusion.num_timesteps != args.steps:
        raise SystemExit(f"ddim{args.steps} gave {diffusion.num_timesteps} steps")
    init_weights(model, gen)
    y = label_map(B, height, width, gen).to(device)
    x_T = torch.randn((B, 3, height, width), generator=gen).to(device)
    model.to(device).eval()
    t_net = torch.full((B,), 999, dtype=torch.long, device=device)  # an original timestep
    eps_std_raw = calibrate_output(model, x_T, t_net, y)

    res: dict[str, Any] = dict(
        config=name, flags=flags, input_hw=[height, width], batch=B, steps=args.steps, guidance=s,
        parameters=sum(p.numel() for p in model.parameters()),
        eps_std_before_calibration=eps_std_raw,
        ms_per_call={}, images_per_s={}, seconds_per_sample_run={}, max_abs_diff={},
    )
    ours_tag = "ours" + (f"[{args.autocast}]" if amp is not None else "")

    # ---- 1. network calls
    def ours_forward(m: torch.nn.Module, x: torch.Tensor, cond: Any) -> Callable[[], torch.Tensor]:
        def f() -> torch.Tensor:
            with torch.inference_mode(), autocast_ctx(amp, device):
                return m(x, t_net, cond)
        return f

    sec, _ = best_time(ours_forward(model, x_T, y), reps, device)
    res["ms_per_call"]["ours_raw_y"] = 1e3 * sec
    with torch.inference_mode():
        cond = model.encode_condition(y)
    sec, _ = best_time(ours_forward(model, x_T, cond), reps, device)  # warm-up fills the cache
    res["ms_per_call"]["ours_cached"] = 1e3 * sec
    del cond

    # ---- 2. sampling (the warm-up outputs are the samples compared in 3.)
    def ours_sample(m: torch.nn.Module, y_: torch.Tensor, noise: torch.Tensor, cache: bool,
                    dtype: torch.dtype | None) -> Callable[[], torch.Tensor]:
        return lambda: diffusion.sample(m, y_, noise=noise, guidance_scale=s, method="ddim", eta=0.0,
                                        clip_denoised=True, cache_condition=cache, autocast=dtype)

    samples: dict[str, torch.Tensor] = {}
    for key, cache in (("ours_cache_on", True), ("ours_cache_off", False)):
        sec, samples[key] = best_time(ours_sample(model, y, x_T, cache, amp), reps, device)
        res["seconds_per_sample_run"][key] = sec
        res["images_per_s"][key] = B / sec

    # ---- optional: channels-last
    if args.channels_last:
        model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        y_cl = y.contiguous(memory_format=torch.channels_last)
        x_cl = x_T.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            cond = model_cl.encode_condition(y_cl)
        sec, _ = best_time(ours_forward(model_cl, x_cl, cond), reps, device)
        res["ms_per_call"]["ours_cached_channels_last"] = 1e3 * sec
        del cond
        sec, samples["ours_cache_on_channels_last"] = best_time(
            ours_sample(model_cl, y_cl, x_cl, True, amp), reps, device)
        res["seconds_per_sample_run"]["ours_cache_on_channels_last"] = sec
        res["images_per_s"]["ours_cache_on_channels_last"] = B / sec
        del model_cl

    # ---- the reference
    if script_util is not None:
        ref_model, ref_diffusion = build_reference(script_util, flags)
        ref_model.load_state_dict(model.state_dict(), strict=True)
        ref_model.to(device).eval()

        def ref_forward() -> torch.Tensor:
            with torch.no_grad():
                return ref_model(x_T, t_net, y=y)

        def ref_sample() -> torch.Tensor:
            with torch.no_grad():
                return ref_diffusion.ddim_sample_loop(
                    ref_model, tuple(x_T.shape), noise=x_T, clip_denoised=True,
                    model_kwargs={"y": y, "s": s}, progress=False)

        sec, ref_out = best_time(ref_forward, reps, device)
        res["ms_per_call"]["reference"] = 1e3 * sec
        with torch.inference_mode():
            res["max_abs_diff"]["network_call"] = max_diff(model(x_T, t_net, y), ref_out)
        sec, ref_x0 = best_time(ref_sample, reps, device)
        res["seconds_per_sample_run"]["reference"] = sec
        res["images_per_s"]["reference"] = B / sec

        # ---- 3. agreement of x_0 (float32 runs; the autocast ones for information)
        fp32 = {}
        if amp is not None:
            for key, cache in (("ours_cache_on", True), ("ours_cache_off", False)):
                fp32[key] = ours_sample(model, y, x_T, cache, None)()
            for key, x0 in samples.items():
                res["max_abs_diff"][f"{key}[{args.autocast}]"] = max_diff(x0, ref_x0)
        else:
            fp32 = samples
        for key, x0 in fp32.items():
            res["max_abs_diff"][key] = max_diff(x0, ref_x0)
        checked = [v for k, v in res["max_abs_diff"].items() if "[" not in k]
        res["within_tolerance"] = bool(checked) and max(checked) <= TOLERANCE
        res["x0_std"] = ref_x0.float().std().item()
        res["x0_fraction_clipped"] = (ref_x0.abs() >= 1 - 1e-6).float().mean().item()
        ref_ms = res["ms_per_call"]["reference"]
        res["speedup_call"] = {k: ref_ms / v for k, v in res["ms_per_call"].items() if k != "reference"}
        ref_ips = res["images_per_s"]["reference"]
        res["speedup_sampling"] = {k: v / ref_ips for k, v in res["images_per_s"].items() if k != "reference"}
        del ref_model
    else:
        res["x0_std"] = samples["ours_cache_on"].float().std().item()
    res["ours_label"] = ours_tag
    return res


# ---------------------------------------------------------------------------- report
def print_config(res: dict[str, Any], device_desc: str) -> None:
    h, w = res["input_hw"]
    print(f"\n== {res['config']}: {h}x{w}, batch {res['batch']}, DDIM-{res['steps']}, guidance "
          f"{res['guidance']}, {res['parameters'] / 1e6:.1f}M parameters, {device_desc} ==")
    sc, ss = res.get("speedup_call", {}), res.get("speedup_sampling", {})
    ours = res["ours_label"]
    rows = [("network call, ms (one forward, batch %d)" % res["batch"], None, None)]
    labels = {"ours_raw_y": f"{ours}, raw y", "ours_cached": f"{ours}, cached condition",
              "ours_cached_channels_last": f"{ours}, cached condition, channels-last",
              "reference": "reference (GESCO)"}
    for k, v in res["ms_per_call"].items():
        rows.append((labels[k], f"{v:10.1f}", f"{sc[k]:6.2f}x" if k in sc else ("  1.00x" if sc else "")))
    rows.append((f"DDIM-{res['steps']} sampling with guidance, images/s", None, None))
    labels = {"ours_cache_on": f"{ours}, cache on", "ours_cache_off": f"{ours}, cache off",
              "ours_cache_on_channels_last": f"{ours}, cache on, channels-last",
              "reference": "reference (GESCO)"}
    for k, v in res["images_per_s"].items():
        rows.append((labels[k], f"{v:10.3f}", f"{ss[k]:6.2f}x" if k in ss else ("  1.00x" if ss else "")))
    print(f"  {'':52s}{'value':>10s}  {'speed-up vs reference' if sc else ''}")
    for label, val, sp in rows:
        if val is None:
            print(f"  {label}")
        else:
            print(f"    {label:50s}{val}  {sp}")
    if res["max_abs_diff"]:
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in res["max_abs_diff"].items())
        print(f"  max |ours - reference|: {diffs}")
        print(f"  float32 x_0 within {TOLERANCE:g}: {'yes' if res['within_tolerance'] else 'NO'} "
              f"(x_0 std {res['x0_std']:.3f}, {100 * res['x0_fraction_clipped']:.0f}% at +-1)")


def print_summary(results: list[dict[str, Any]]) -> None:
    has_ref = any("speedup_sampling" in r for r in results)
    print("\nsummary (images/s; speed-up = ours / reference)")
    head = f"  {'config':8s}{'ours cache on':>15s}{'ours cache off':>16s}"
    if has_ref:
        head += f"{'reference':>11s}{'speed-up on':>13s}{'speed-up off':>14s}{'max |diff|':>12s}  ok"
    print(head)
    for r in results:
        ips = r["images_per_s"]
        line = f"  {r['config']:8s}{ips['ours_cache_on']:15.3f}{ips['ours_cache_off']:16.3f}"
        if "speedup_sampling" in r:
            ss = r["speedup_sampling"]
            worst = max(v for k, v in r["max_abs_diff"].items() if "[" not in k)
            line += (f"{ips['reference']:11.3f}{ss['ours_cache_on']:12.2f}x{ss['ours_cache_off']:13.2f}x"
                     f"{worst:12.2e}  {'yes' if r['within_tolerance'] else 'NO'}")
        print(line)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="small,medium", help="comma-separated: small, medium")
    p.add_argument("--steps", type=int, default=10, help="DDIM steps (ddimN respacing of 1000)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--guidance", type=float, default=2.0, help="classifier-free guidance scale s")
    p.add_argument("--repeats", type=int, default=3, help="timed runs after the warm-up; min is kept")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: as is)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--autocast", default="none", choices=list(AUTOCAST), help="ours only, GPU only")
    p.add_argument("--channels-last", action="store_true", help="also time ours in channels-last format")
    p.add_argument("--json", default=None, metavar="PATH", help="write the results here")
    p.add_argument("--reference-repo", default=None, metavar="DIR",
                   help="a directory containing GESCO's guided_diffusion/ (optional)")
    args = p.parse_args(argv)

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [c for c in configs if c not in CONFIGS]
    if bad or not configs:
        p.error(f"unknown configs {bad}; choose from {sorted(CONFIGS)}")
    if args.steps < 1 or args.batch < 1 or args.repeats < 1:
        p.error("--steps, --batch and --repeats must be >= 1")
    if not any(len(range(0, 1000, k)) == args.steps for k in range(1, 1000)):
        p.error(f"--steps {args.steps}: ddim{args.steps} has no integer stride over 1000 steps "
                "(try 10, 20, 25, 50, 100)")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available")
    if args.autocast != "none" and args.device != "cuda":
        p.error("--autocast applies to --device cuda only")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    script_util = import_reference(args.reference_repo) if args.reference_repo else None

    if device.type == "cuda":
        device_desc = f"cuda ({torch.cuda.get_device_name(device)}), {'float32' if args.autocast == 'none' else args.autocast + ' autocast (ours)'}"
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 agreement check: no TF32
        torch.backends.cudnn.allow_tf32 = False
    else:
        device_desc = f"cpu, {torch.get_num_threads()} threads, float32"
    print(f"torch {torch.__version__}, {device_desc}, repeats {args.repeats} (min), "
          f"reference: {args.reference_repo or 'not given'}")

    results = []
    t_start = time.perf_counter()
    for name in configs:
        t0 = time.perf_counter()
        res = run_config(name, args, device, script_util)
        res["wall_s"] = time.perf_counter() - t0
        print_config(res, device_desc)
        results.append(res)
    print_summary(results)
    total = time.perf_counter() - t_start
    print(f"\ntotal wall time {total:.0f} s")

    if args.json:
        meta = dict(torch=torch.__version__, python=platform.python_version(), machine=platform.machine(),
                    device=device_desc, threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
                    args=vars(args), tolerance=TOLERANCE, seed=SEED, total_wall_s=total)
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
        print(f"wrote {args.json}")
    return 0 if all(r.get("within_tolerance", True) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
