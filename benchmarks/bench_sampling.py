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
   make every output trivially equal) and the same x_T go through both codes. Reported: the max
   abs difference of one network call and of the final x_0 (cache on and off), flagged when all
   are within 1e-4 (float32 runs). For scale, it also reports how far our own x_0 moves when every
   network output is perturbed by a relative 1e-6: an untrained network is not a denoiser, so
   each DDIM step (pred_x0 divides by sqrt(alpha_bar), ~0.006 at t = T) amplifies rounding-sized
   differences, and the x_0 difference grows with the number of steps. A difference of the size
   of that floor is rounding, not a mismatch.

Configurations (guided-diffusion flag names, ``timestep_respacing="ddimN"``):

- ``small``: image_size 64, num_channels 64, channel_mult 1,1,2,2,4,4, attention_resolutions
  8,4,2, num_head_channels 32, inputs 64x128 (H x W): the full Cityscapes model (256 channels,
  256x512) at 1/4 of its width and resolution.
- ``medium``: image_size 128, num_channels 128, attention_resolutions 16,8,4, inputs 128x256.

Timing: ``time.perf_counter``. Warm-ups first (a network call; for sampling, a one-step run with
the same shapes and code path, which keeps a CPU run affordable; skipped where the same shapes
and kernels have just run: ours with cache off after cache on, the reference's sampler after its
network call). Then ``--repeats`` rounds, each running every variant once in turn, so that load
from other processes drifting over time hits all variants alike; the minimum per variant is
kept. ``torch.cuda.synchronize()`` brackets each run on a GPU, where TF32 is switched off so that
float32 is float32 for both codes. The reference runs under ``torch.no_grad()`` (as its
``image_sample.py`` does); ours as its API does (``diffusion.sample`` uses
``torch.inference_mode``; the network-call timings use it too).

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

Options: ``--configs small,medium``, ``--steps`` (DDIM steps for every configuration; default
10 for small and 2 for medium, whose reference takes ~8 s per guided step on 2 CPU cores; N must
give an integer stride over 1000 steps: 2, 5, 10, 20, 25, 50 ...), ``--batch`` (1), ``--guidance`` (2.0),
``--repeats`` (3, the minimum is kept), ``--threads`` (``torch.set_num_threads``), ``--device``
(``cpu``/``cuda``), ``--autocast none|bf16|fp16`` (ours only, GPU only; the agreement check then
also reports the autocast sample's difference, for information), ``--channels-last`` (also time
our model in channels-last memory format, reported beside the default format),
``--json PATH``, ``--reference-repo DIR`` (a directory containing ``guided_diffusion/``).

At the defaults both configurations with the reference take about 5 minutes on 2 idle CPU cores
(about 7 with other processes competing for them).
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

from gensemcom.semantics import semantic_input
from gensemcom.legacy import model_and_diffusion_from_flags
from gensemcom.models.fastpath import fast_unet
from gensemcom.diffusion.gaussian import Conditioning

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

#: DDIM steps when --steps is not given: the medium reference needs ~8 s per step on 2 CPU cores.
DEFAULT_STEPS = {"small": 10, "medium": 2}

AUTOCAST = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


# ---------------------------------------------------------------------------- inputs and weights
def label_map(batch: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """A deterministic random blocky semantic map: (B, 36, H, W) float32, one-hot of 35 classes
    plus an edge channel marking pixels whose class differs from a 4-neighbour's."""
    grid = (8, 16)  # blocks per (H, W): 8x8-pixel blocks at 64x128, 16x16 at 128x256
    ids = torch.randint(0, NUM_CLASSES, (batch, 1, *grid), generator=generator)
    ids = F.interpolate(ids.float(), size=(height, width), mode="nearest").long()[:, 0]
    # the edge channel marks class boundaries (each block is its own instance)
    return semantic_input(ids, NUM_CLASSES, instances=ids)


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
    edited_file = root / "guided_diffusion" / "unet_edited.py"
    if "guided_diffusion.unet_edited" not in sys.modules and not edited_file.exists():
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
#: the clock of every timing: ``time.perf_counter`` (wall) or, with ``--clock cpu``, ``time.process_time``
CLOCK: Callable[[], float] = time.perf_counter


def time_rounds(cases: dict[str, Callable[[], Any]], repeats: int,
                device: torch.device) -> tuple[dict[str, float], dict[str, Any]]:
    """``repeats`` rounds, each running every case once in turn (so that load drifting over time,
    e.g. other processes on a shared machine, hits all cases alike); returns the minimum wall
    time (s) per case and each case's last output. The caller warms the cases up first."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    best = {k: math.inf for k in cases}
    outs: dict[str, Any] = {}
    for _ in range(repeats):
        for key, fn in cases.items():
            sync()
            t0 = CLOCK()
            outs[key] = fn()
            sync()
            best[key] = min(best[key], CLOCK() - t0)
    return best, outs


def autocast_ctx(dtype: torch.dtype | None, device: torch.device) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


class _PerturbedModel:
    """Our model with its outputs multiplied by (1 + rel * N(0, 1)): rounding-sized changes, to
    measure how much this (random, untrained) network amplifies them over a sampling run."""

    def __init__(self, model: torch.nn.Module, rel: float, seed: int) -> None:
        self.model, self.rel = model, rel
        self.config = model.config
        self.encode_condition = model.encode_condition
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Any, **kw: Any) -> torch.Tensor:
        out = self.model(x, t, cond, **kw)
        z = torch.randn(out.shape, generator=self.generator).to(out.device, out.dtype)
        return out * (1 + self.rel * z)


# ---------------------------------------------------------------------------- one configuration
def run_config(name: str, steps: int, args: argparse.Namespace, device: torch.device,
               script_util: types.ModuleType | None) -> dict[str, Any]:
    base_flags, (height, width) = CONFIGS[name]
    flags = dict(base_flags, timestep_respacing=f"ddim{steps}")
    B, s, reps = args.batch, args.guidance, args.repeats
    amp = AUTOCAST[args.autocast]
    gen = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)  # the reference's ddim_sample draws (unused at eta 0) global noise

    model, diffusion = model_and_diffusion_from_flags(flags)
    if diffusion.num_timesteps != steps:
        raise SystemExit(f"ddim{steps} gave {diffusion.num_timesteps} steps")
    init_weights(model, gen)
    y = label_map(B, height, width, gen).to(device)
    x_T = torch.randn((B, 3, height, width), generator=gen).to(device)
    model.to(device).eval()
    t_net = torch.full((B,), 999, dtype=torch.long, device=device)  # an original timestep
    eps_std_raw = calibrate_output(model, x_T, t_net, y)

    res: dict[str, Any] = dict(
        config=name, flags=flags, input_hw=[height, width], batch=B, steps=steps, guidance=s,
        parameters=sum(p.numel() for p in model.parameters()),
        eps_std_before_calibration=eps_std_raw, autocast=args.autocast,
        ms_per_call={}, images_per_s={}, seconds_per_sample_run={}, max_abs_diff={},
    )

    def ours_forward(m: torch.nn.Module, x: torch.Tensor, cond: Any) -> Callable[[], torch.Tensor]:
        def f() -> torch.Tensor:
            with torch.inference_mode(), autocast_ctx(amp, device):
                return m(x, t_net, cond)
        return f

    def ours_sample(m: Any, y_: torch.Tensor, noise: torch.Tensor, cache: bool,
                    dtype: torch.dtype | None, start_step: int | None = None) -> Callable[[], torch.Tensor]:
        return lambda: diffusion.sample(m, y_, noise=noise, guidance_scale=s, method="ddim", eta=0.0,
                                        clip_denoised=True, cache_condition=cache, autocast=dtype,
                                        start_step=start_step)

    with torch.inference_mode():
        cond = model.encode_condition(y)
    calls = {"ours_raw_y": ours_forward(model, x_T, y), "ours_cached": ours_forward(model, x_T, cond)}
    runs = {"ours_cache_on": ours_sample(model, y, x_T, True, amp),
            "ours_cache_off": ours_sample(model, y, x_T, False, amp)}
    # Warm-ups: a network call (for the cached condition it fills the cache), and for sampling a
    # one-step run (same shapes and code path) rather than a full one, to keep a CPU run
    # affordable. The raw-y call was warmed by calibrate_output; cache off needs none after
    # cache on (the same shapes and kernels at batch 2B), nor the reference's sampler after its
    # network call (the very same forward calls).
    warmups = [calls["ours_cached"], ours_sample(model, y, x_T, True, amp, start_step=0)]
    if amp is not None:
        warmups.append(calls["ours_raw_y"])

    if args.channels_last:
        model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        y_cl = y.contiguous(memory_format=torch.channels_last)
        x_cl = x_T.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            cond_cl = model_cl.encode_condition(y_cl)
        calls["ours_cached_channels_last"] = ours_forward(model_cl, x_cl, cond_cl)
        runs["ours_cache_on_channels_last"] = ours_sample(model_cl, y_cl, x_cl, True, amp)
        warmups += [calls["ours_cached_channels_last"], ours_sample(model_cl, y_cl, x_cl, True, amp, start_step=0)]

    guided_steps: dict[str, Callable[[], torch.Tensor]] = {}
    if args.fast:
        # The fast path (models/fastpath.py) on the same weights: the decoder of the two guidance
        # branches batched, sequential, and "auto" (the default: sequential from 128x256 on).
        fast = {dec: fast_unet(model, dec) for dec in ("auto", "batched", "sequential")}
        with torch.inference_mode():
            fcond = fast["auto"].encode_condition(y)
        calls["ours_fast_cached"] = ours_forward(fast["auto"], x_T, fcond)
        runs["ours_fast"] = ours_sample(fast["auto"], y, x_T, True, amp)
        warmups += [calls["ours_fast_cached"], ours_sample(fast["auto"], y, x_T, True, amp, start_step=0)]
        t_mid = torch.full((B,), steps // 2, dtype=torch.long, device=device)

        def guided(m: Any) -> Callable[[], torch.Tensor]:
            c = Conditioning(m, y, s, True)
            diffusion.guided_call(m, x_T, t_mid, c)  # fills the SPADE cache (and warms up)

            def f() -> torch.Tensor:
                with torch.inference_mode(), autocast_ctx(amp, device):
                    return diffusion.guided_call(m, x_T, t_mid, c)
            return f

        with torch.inference_mode():
            guided_steps["ours_plain_batched"] = guided(model)
            guided_steps["ours_fast_batched"] = guided(fast["batched"])
            guided_steps["ours_fast_sequential"] = guided(fast["sequential"])
        if args.channels_last:
            fast_cl = fast_unet(copy.deepcopy(model), "auto", channels_last=True)
            runs["ours_fast_channels_last"] = ours_sample(fast_cl, y, x_T, True, amp)
            warmups.append(ours_sample(fast_cl, y, x_T, True, amp, start_step=0))
            with torch.inference_mode():
                guided_steps["ours_fast_channels_last"] = guided(fast_cl)

    if script_util is not None:
        ref_model, ref_diffusion = build_reference(script_util, flags)
        ref_model.load_state_dict(model.state_dict(), strict=True)
        ref_model.to(device).eval()
        kwargs = {"y": y, "s": s}

        def ref_forward() -> torch.Tensor:
            with torch.no_grad():
                return ref_model(x_T, t_net, y=y)

        def ref_sample() -> torch.Tensor:
            with torch.no_grad():
                return ref_diffusion.ddim_sample_loop(ref_model, tuple(x_T.shape), noise=x_T,
                                                      clip_denoised=True, model_kwargs=kwargs, progress=False)

        calls["reference"], runs["reference"] = ref_forward, ref_sample
        warmups.append(ref_forward)

    if args.runs:
        keep = {k.strip() for k in args.runs.split(",")} | {"reference"}
        runs = {k: v for k, v in runs.items() if k in keep}
    for fn in warmups:
        fn()

    # ---- 1. network calls; 2. sampling
    sec, call_outs = time_rounds(calls, reps, device)
    res["ms_per_call"] = {k: 1e3 * v for k, v in sec.items()}
    if guided_steps:
        sec, _ = time_rounds(guided_steps, reps, device)
        res["ms_per_guided_step"] = {k: 1e3 * v for k, v in sec.items()}
    sec, samples = time_rounds(runs, reps, device)
    res["seconds_per_sample_run"] = sec
    res["images_per_s"] = {k: B / v for k, v in sec.items()}
    if script_util is None:
        res["x0_std"] = samples["ours_cache_on"].float().std().item()
        return res

    ref_ms, ref_ips = res["ms_per_call"]["reference"], res["images_per_s"]["reference"]
    res["speedup_call"] = {k: ref_ms / v for k, v in res["ms_per_call"].items() if k != "reference"}
    res["speedup_sampling"] = {k: v / ref_ips for k, v in res["images_per_s"].items() if k != "reference"}

    # ---- 3. agreement (float32; with --autocast the autocast samples are reported for information)
    ref_x0 = samples.pop("reference")
    with torch.inference_mode():
        res["max_abs_diff"]["network_call"] = max_diff(model(x_T, t_net, y), call_outs["reference"])
    if amp is not None:
        for key, x0 in samples.items():
            res["max_abs_diff"][f"{key}[{args.autocast}]"] = max_diff(x0, ref_x0)
        samples = {key: ours_sample(model, y, x_T, cache, None)()
                   for key, cache in (("ours_cache_on", True), ("ours_cache_off", False)) if key in samples}
    for key, x0 in samples.items():
        res["max_abs_diff"][key] = max_diff(x0, ref_x0)
    if "ours_fast" in samples:
        if "ours_cache_on" in samples:
            res["max_abs_diff_fast_vs_ours"] = max_diff(samples["ours_fast"], samples["ours_cache_on"])
    res["within_tolerance"] = all(v <= TOLERANCE for k, v in res["max_abs_diff"].items() if "[" not in k)
    # How much this random network amplifies rounding-sized differences over the run: ours
    # against ours with every network output perturbed by a relative 1e-6.
    if args.no_floor:
        res["rounding_sensitivity"] = math.nan
    else:
        perturbed = ours_sample(_PerturbedModel(model, 1e-6, SEED + 1), y, x_T, True, None)()
        res["rounding_sensitivity"] = max_diff(perturbed, ours_sample(model, y, x_T, True, None)())
    res["x0_std"] = ref_x0.float().std().item()
    res["x0_fraction_clipped"] = (ref_x0.abs() >= 1 - 1e-6).float().mean().item()
    return res


# ---------------------------------------------------------------------------- report
def print_config(res: dict[str, Any], device_desc: str) -> None:
    h, w = res["input_hw"]
    print(f"\n== {res['config']}: {h}x{w}, batch {res['batch']}, DDIM-{res['steps']}, guidance "
          f"{res['guidance']}, {res['parameters'] / 1e6:.1f}M parameters, {device_desc} ==")
    sc, ss = res.get("speedup_call", {}), res.get("speedup_sampling", {})
    ours = "ours" + (f" [{res['autocast']}]" if res["autocast"] != "none" else "")
    call_labels = {"ours_raw_y": f"{ours}, raw y", "ours_cached": f"{ours}, cached condition",
                   "ours_cached_channels_last": f"{ours}, cached condition, channels-last",
                   "ours_fast_cached": f"{ours}, fast path, cached condition",
                   "reference": "reference (GESCO)"}
    sample_labels = {"ours_cache_on": f"{ours}, cache on", "ours_cache_off": f"{ours}, cache off",
                     "ours_cache_on_channels_last": f"{ours}, cache on, channels-last",
                     "ours_fast": f"{ours}, fast path (auto decoder)",
                     "ours_fast_channels_last": f"{ours}, fast path, channels-last",
                     "reference": "reference (GESCO)"}
    print(f"  {'':54s}{'value':>10s}{'speed-up' if sc else '':>10s}")
    print(f"  network call, ms (one forward, batch {res['batch']}; speed-up = reference ms / ours ms)")
    for k, v in res["ms_per_call"].items():
        sp = f"{sc[k]:9.2f}x" if k in sc else (f"{1:9.2f}x" if sc else "")
        print(f"    {call_labels[k]:52s}{v:10.1f}{sp}")
    print(f"  DDIM-{res['steps']} sampling with guidance {res['guidance']}, images/s "
          f"(speed-up = ours / reference)")
    for k, v in res["images_per_s"].items():
        sp = f"{ss[k]:9.2f}x" if k in ss else (f"{1:9.2f}x" if ss else "")
        print(f"    {sample_labels[k]:52s}{v:10.3f}{sp}")
    if res.get("ms_per_guided_step"):
        print("  one guided step (conditional + all-zero branch, encoder shared), ms:")
        for k, v in res["ms_per_guided_step"].items():
            print(f"    {k:52s}{v:10.1f}")
    if res["max_abs_diff"]:
        print("  max |ours - reference| (same weights, same x_T):")
        for k, v in res["max_abs_diff"].items():
            what = "network call" if k == "network_call" else f"final x_0, {sample_labels.get(k, k)}"
            print(f"    {what:52s}{v:10.2e}")
        print(f"  all float32 differences within {TOLERANCE:g}: "
              f"{'yes' if res['within_tolerance'] else 'NO'}")
        print(f"  context: ours vs ours with network outputs perturbed by a relative 1e-6 differs by "
              f"{res['rounding_sensitivity']:.2e} at x_0 (this random network's amplification of "
              f"rounding); x_0 std {res['x0_std']:.3f}, {100 * res['x0_fraction_clipped']:.0f}% of "
              f"pixels at +-1")


def print_summary(results: list[dict[str, Any]]) -> None:
    has_ref = any("speedup_sampling" in r for r in results)
    print("\nsummary (sampling images/s; speed-up = ours / reference)")
    has_fast = any("ours_fast" in r["images_per_s"] for r in results)
    head = f"  {'config':8s}{'steps':>6s}{'ours cache on':>15s}{'ours cache off':>16s}"
    if has_fast:
        head += f"{'ours fast':>11s}"
    if has_ref:
        head += (f"{'reference':>11s}{'speed-up on':>13s}{'speed-up off':>14s}"
                 + (f"{'speed-up fast':>15s}" if has_fast else "")
                 + f"{'max |d x_0|':>13s}{'floor':>10s}  within {TOLERANCE:g}")
    print(head)
    for r in results:
        ips = r["images_per_s"]
        line = (f"  {r['config']:8s}{r['steps']:6d}{ips.get('ours_cache_on', math.nan):15.3f}"
                f"{ips.get('ours_cache_off', math.nan):16.3f}")
        if has_fast:
            line += f"{ips.get('ours_fast', math.nan):11.3f}"
        if "speedup_sampling" in r:
            ss = r["speedup_sampling"]
            worst = max(v for k, v in r["max_abs_diff"].items() if "[" not in k and k != "network_call")
            line += (f"{ips['reference']:11.3f}{ss.get('ours_cache_on', math.nan):12.2f}x"
                     f"{ss.get('ours_cache_off', math.nan):13.2f}x"
                     + (f"{ss.get('ours_fast', math.nan):14.2f}x" if has_fast else "")
                     + f"{worst:13.2e}{r['rounding_sensitivity']:10.2e}  "
                     f"{'yes' if r['within_tolerance'] else 'NO'}")
        print(line)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="small,medium", help="comma-separated: small, medium")
    p.add_argument("--steps", type=int, default=None,
                   help="DDIM steps (ddimN respacing of 1000); default "
                        + ", ".join(f"{k} {v}" for k, v in DEFAULT_STEPS.items()))
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--guidance", type=float, default=2.0, help="classifier-free guidance scale s")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed rounds after the warm-ups (each runs every variant once); the min is kept")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: as is)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--autocast", default="none", choices=list(AUTOCAST), help="ours only, GPU only")
    p.add_argument("--channels-last", action="store_true", help="also time ours in channels-last format")
    p.add_argument("--fast", action="store_true",
                   help="also time the fast path (gensemcom.models.fastpath) and one guided step with the "
                        "guidance decoder batched vs sequential")
    p.add_argument("--runs", default=None,
                   help="time only these sampling variants (comma-separated keys, e.g. ours_cache_on,ours_fast; "
                        "the reference always runs); default: all")
    p.add_argument("--no-floor", action="store_true",
                   help="skip the rounding-sensitivity run (saves one of our sampling runs)")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="wall: time.perf_counter; cpu: time.process_time, this process's CPU time, which on a "
                        "machine shared with other jobs measures the work done, not the time waited for a core "
                        "(use with --threads 1: with more threads it sums them)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the results here")
    p.add_argument("--reference-repo", default=None, metavar="DIR",
                   help="a directory containing GESCO's guided_diffusion/ (optional)")
    args = p.parse_args(argv)

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [c for c in configs if c not in CONFIGS]
    if bad or not configs:
        p.error(f"unknown configs {bad}; choose from {sorted(CONFIGS)}")
    if args.batch < 1 or args.repeats < 1:
        p.error("--batch and --repeats must be >= 1")
    steps = {c: DEFAULT_STEPS[c] if args.steps is None else args.steps for c in configs}
    for n in set(steps.values()):
        if n < 1 or not any(len(range(0, 1000, k)) == n for k in range(1, 1000)):
            p.error(f"--steps {n}: ddim{n} has no integer stride over 1000 steps (try 2, 5, 10, 20, 25, 50)")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available")
    if args.autocast != "none" and args.device != "cuda":
        p.error("--autocast applies to --device cuda only")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        if args.device != "cpu":
            p.error("--clock cpu applies to --device cpu only")
        global CLOCK
        CLOCK = time.process_time
    device = torch.device(args.device)
    script_util = import_reference(args.reference_repo) if args.reference_repo else None

    if device.type == "cuda":
        # float32 means float32 for both codes (and for the agreement check): no TF32.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        precision = "float32" if args.autocast == "none" else f"ours {args.autocast} autocast, reference float32"
        device_desc = f"cuda ({torch.cuda.get_device_name(device)}), {precision}"
    else:
        device_desc = f"cpu, {torch.get_num_threads()} threads, float32, {args.clock} clock"
    print(f"torch {torch.__version__}, {device_desc}, min of {args.repeats} interleaved rounds after warm-ups, "
          f"reference: {args.reference_repo or 'not given (ours only)'}")

    results = []
    t_start = time.perf_counter()
    for name in configs:
        t0 = time.perf_counter()
        res = run_config(name, steps[name], args, device, script_util)
        res["wall_s"] = time.perf_counter() - t0
        results.append(res)
        if args.json:  # written before printing: a long run keeps its numbers whatever happens next
            Path(args.json).write_text(json.dumps({"meta": {"args": vars(args), "partial": True},
                                                   "results": results}, indent=2, default=str))
        print_config(res, device_desc)
    print_summary(results)
    total = time.perf_counter() - t_start
    print(f"\ntotal wall time {total:.0f} s")

    if args.json:
        meta = dict(torch=torch.__version__, python=platform.python_version(), machine=platform.machine(),
                    device=device_desc, threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
                    args=vars(args), steps=steps, tolerance=TOLERANCE, seed=SEED, total_wall_s=total)
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
