"""The GPU path: full-size GESCO (Cityscapes, 256x512, 675 M parameters) sampling on one GPU.

One prepared run for a lent GPU machine (issue 14, item 3). It measures, for guided DDIM
(guidance 2, ``--steps`` steps, clipping on) at batch 1, 8 and the largest batch that fits:

- ours: float32 (TF32 off, and TF32 on), bf16 and fp16 autocast, bf16 + channels-last, and
  bf16 + ``torch.compile`` of the network (compile time reported separately: it pays for itself
  only after that many images);
- the original GESCO code (``guided_diffusion`` of ispamm/GESCO, extracted into ``--reference-repo``)
  on the same GPU and batch, as its README samples: ``--use_fp16 True`` (the network converted to
  fp16), and in float32;
- images/s, peak GPU memory (``torch.cuda.max_memory_allocated``), and the agreement of our
  float32 sample with the reference's float32 sample from the same weights and x_T.

Weights are random (seeded N(0, 0.02), output conv rescaled for unit-std noise predictions): the
speed of a network does not depend on its weights. The same setup as ``bench_sampling.py``,
whose helpers it reuses. On a machine without CUDA it says so and exits 0.

Run (on the GPU machine, from the project root; the reference extracted to .gesco_ref/)::

    PYTHONPATH=src python3 benchmarks/bench_gpu.py --reference-repo .gesco_ref --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sampling import (BASE_FLAGS, build_reference, calibrate_output, import_reference,  # noqa: E402
                            init_weights, label_map)

from gensemcom.legacy import model_and_diffusion_from_flags  # noqa: E402

FULL = dict(BASE_FLAGS, image_size=256, num_channels=256, num_head_channels=64, attention_resolutions="32,16,8")
HW = (256, 512)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak() -> int:
    return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0


def _reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any, int]:
    """(best seconds, last output, peak bytes) over ``repeats`` runs after the caller's warm-up."""
    best, out = float("inf"), None
    _reset_peak()
    for _ in range(repeats):
        _sync()
        t0 = time.perf_counter()
        out = fn()
        _sync()
        best = min(best, time.perf_counter() - t0)
    return best, out, _peak()


def _autocast(dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10, help="DDIM steps")
    p.add_argument("--batches", default="1,8", help="batch sizes measured for every variant")
    p.add_argument("--max-batch", type=int, default=64, help="upper end of the largest-batch search (bf16)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--reference-repo", default=None, help="a folder holding GESCO's guided_diffusion/")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    p.add_argument("--json", default=None)
    p.add_argument("--smoke", action="store_true", help="CPU check of this script at a tiny size (no numbers)")
    args = p.parse_args(argv)
    global FULL, HW
    if args.smoke:
        FULL = dict(BASE_FLAGS, image_size=32, num_channels=32, num_head_channels=32, attention_resolutions="4",
                    channel_mult="1,2")
        HW = (32, 64)
        dev = torch.device("cpu")
    elif not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here; nothing measured (run it on a GPU machine)")
        return 0
    else:
        dev = torch.device("cuda")
    gpu = torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu (smoke)"
    results: dict[str, Any] = {"gpu": gpu, "torch": torch.__version__,
                               "steps": args.steps, "guidance": 2.0, "input_hw": list(HW), "runs": []}
    print(f"{results['gpu']}, torch {torch.__version__}, DDIM-{args.steps}, guidance 2, {HW[0]}x{HW[1]}", flush=True)

    flags = dict(FULL, timestep_respacing=f"ddim{args.steps}")
    gen = torch.Generator().manual_seed(0)
    model, diffusion = model_and_diffusion_from_flags(flags)
    init_weights(model, gen)
    model.to(dev).eval()
    results["parameters"] = sum(q.numel() for q in model.parameters())
    y1 = label_map(1, *HW, gen).to(dev)
    x1 = torch.randn((1, 3, *HW), generator=gen).to(dev)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    calibrate_output(model, x1, torch.full((1,), 999, device=dev), y1)

    def record(name: str, batch: int, sec: float, peak: int, **extra: Any) -> None:
        row = {"variant": name, "batch": batch, "seconds": round(sec, 4), "images_per_s": round(batch / sec, 4),
               "peak_gib": round(peak / 2 ** 30, 2), **extra}
        results["runs"].append(row)
        if args.json:  # written after every row: a run cut short keeps what it measured
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"  {name:32s} B={batch:3d}  {row['images_per_s']:8.3f} img/s  peak {row['peak_gib']:6.1f} GiB"
              + "".join(f"  {k}={v}" for k, v in extra.items()), flush=True)

    def ours(m: torch.nn.Module, y: torch.Tensor, x: torch.Tensor, dtype: torch.dtype | None) -> Callable[[], Any]:
        return lambda: diffusion.sample(m, y, noise=x, guidance_scale=2.0, method="ddim", autocast=dtype)

    variants: dict[str, tuple[torch.nn.Module, torch.dtype | None, bool, bool]] = {
        "ours fp32": (model, None, False, False),
        "ours fp32 tf32": (model, None, False, True),
        "ours bf16 autocast": (model, torch.bfloat16, False, False),
        "ours fp16 autocast": (model, torch.float16, False, False),
    }
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    variants["ours bf16 channels-last"] = (model_cl, torch.bfloat16, True, False)

    ref = None
    if args.reference_repo:
        script_util = import_reference(args.reference_repo)
        ref_model, ref_diff = build_reference(script_util, flags)
        ref_model.load_state_dict(model.state_dict(), strict=True)
        ref_model.to(dev).eval()
        ref16 = copy.deepcopy(ref_model)
        ref16.convert_to_fp16()
        ref16.dtype = torch.float16
        ref = (ref_model, ref16, ref_diff)

    samples: dict[str, torch.Tensor] = {}
    for batch in [int(b) for b in args.batches.split(",")]:
        y = y1.expand(batch, -1, -1, -1).contiguous()
        x = torch.randn((batch, 3, *HW), generator=torch.Generator().manual_seed(batch)).to(dev)
        print(f"batch {batch}", flush=True)
        for name, (m, dtype, cl, tf32) in variants.items():
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
            yy = y.contiguous(memory_format=torch.channels_last) if cl else y
            xx = x.contiguous(memory_format=torch.channels_last) if cl else x
            diffusion.sample(m, yy, noise=xx, guidance_scale=2.0, start_step=0, autocast=dtype)  # warm-up
            sec, out, peak = _timed(ours(m, yy, xx, dtype), args.repeats)
            record(name, batch, sec, peak)
            if batch == 1 and name == "ours fp32":
                samples["ours"] = out.float()
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        if ref is not None:
            ref_model, ref16, ref_diff = ref
            for name, m in (("GESCO original fp32", ref_model), ("GESCO original --use_fp16", ref16)):
                def run(m=m) -> torch.Tensor:
                    with torch.no_grad():
                        return ref_diff.ddim_sample_loop(m, tuple(x.shape), noise=x, clip_denoised=True,
                                                         model_kwargs={"y": y, "s": 2.0}, progress=False)
                try:
                    with torch.no_grad():
                        m(x, torch.full((batch,), 999, device=dev), y=y)  # warm-up
                    sec, out, peak = _timed(run, args.repeats)
                except Exception as e:  # report, do not lose the other numbers
                    results.setdefault("errors", []).append(f"{name} B={batch}: {type(e).__name__}: {e}"[:400])
                    print(results["errors"][-1], flush=True)
                    continue
                record(name, batch, sec, peak)
                if batch == 1 and name == "GESCO original fp32":
                    samples["reference"] = out.float()
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()

    if "reference" in samples:
        results["max_abs_diff_fp32_vs_reference"] = (samples["ours"] - samples["reference"]).abs().max().item()
        print(f"agreement (batch 1, fp32): max |ours - reference| = {results['max_abs_diff_fp32_vs_reference']:.2e}")

    # the largest batch that fits (bf16 autocast, cached SPADE): doubling with a one-step run
    largest, b = None, 8
    while b <= args.max_batch:
        try:
            y = y1.expand(b, -1, -1, -1).contiguous()
            x = torch.randn((b, 3, *HW), device=dev)
            diffusion.sample(model, y, noise=x, guidance_scale=2.0, start_step=0, autocast=torch.bfloat16)
            largest = b
            b *= 2
        except torch.OutOfMemoryError:
            break
        finally:
            gc.collect()
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        if dev.type != "cuda":
            break
    results["largest_batch_bf16"] = largest
    if largest and largest > 8:
        y = y1.expand(largest, -1, -1, -1).contiguous()
        x = torch.randn((largest, 3, *HW), device=dev)
        sec, _, peak = _timed(ours(model, y, x, torch.bfloat16), 1)
        record("ours bf16 autocast", largest, sec, peak, note="largest power of 2 that fits")
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()

    if not args.no_compile and dev.type == "cuda":
        try:
            compiled = torch.compile(model)
            y, x = y1.expand(8, -1, -1, -1).contiguous(), torch.randn((8, 3, *HW), device=dev)
            t0 = time.perf_counter()
            diffusion.sample(compiled, y, noise=x, guidance_scale=2.0, start_step=1, autocast=torch.bfloat16)
            _sync()
            compile_s = time.perf_counter() - t0
            sec, _, peak = _timed(ours(compiled, y, x, torch.bfloat16), args.repeats)
            record("ours bf16 torch.compile", 8, sec, peak, compile_seconds=round(compile_s, 1))
        except Exception as e:  # report, do not lose the other numbers
            results["compile_error"] = f"{type(e).__name__}: {e}"[:500]
            print(f"torch.compile failed: {results['compile_error']}")

    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
