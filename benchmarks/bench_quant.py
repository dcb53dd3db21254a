"""Q-GESCO on the bundled model: calibration time, file sizes, speed of the integer runtime, accounting.

Sections (all on this machine's CPU, the bundled ``gesco_synthetic`` model at its 64x128 size):

1. calibration: ``cali_n`` x ``cali_st`` calibration set from the fp sampler (DDIM ``--cali-steps``,
   guidance, clean channel), BRECQ/AdaRound reconstruction of every unit with ``--iters``
   iterations (W8A32 and W4A8; W4A8 adds activation calibration), wall time per stage;
2. files: fp32 safetensors, the Q-GESCO ``quantized_model.pth`` layout, our packed int8 / int4;
3. speed, measured side by side in one run (rounds interleaved, median of ``--reps`` per round):
   one guided network call (batch 2: conditional + zero map) and a whole guided DDIM-``--steps``
   sample, for our float32 torch call, our fake-quantised torch call (W8A8), ONNX Runtime float32
   and ONNX Runtime QDQ int8; images/s and the ratio to float32 torch. No assertions on time;
4. agreement: int8 vs fp32 eps (relative mean absolute difference) and final images;
5. accounting: weight bytes, FLOPs of one network call from ``torch.utils.flop_counter`` and
   bit-operations (MACs x weight bits x activation bits), for the bundled and (on the meta
   device) the full-size Cityscapes network, beside the paper's "75% memory, 79% FLOPs".

Run::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_quant.py --json benchmarks/results/quant.json
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from gensemcom.quant.accounting import accounting
from gensemcom.quant.calibrate import calibrate_activations, collect_calibration, reconstruct
from gensemcom.quant.model import enable_adaround, qgesco_state_dict, quantize_model, set_quant_state
from gensemcom.quant.packed import save_packed
from gensemcom.semantics import semantic_input
from gensemcom.zoo import load_gesco


def scene_maps(n: int, h: int, w: int, num_classes: int) -> torch.Tensor:
    from gensemcom.data.synthetic import SyntheticScenes
    data = SyntheticScenes(n, h, w, seed=7, num_classes=num_classes)
    items = [data[i] for i in range(n)]
    return torch.cat([semantic_input(it["label"][None], num_classes, it["instance"][None]) for it in items])


def timed(fn, reps: int) -> float:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cali-n", type=int, default=4)
    ap.add_argument("--cali-st", type=int, default=5)
    ap.add_argument("--cali-steps", type=int, default=20)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--skip-calibration", action="store_true")
    ap.add_argument("--one-config", action="store_true", help="calibrate W8A32 only (W4A8 skipped)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    res: dict = {"threads": args.threads, "args": vars(args)}
    gesco = load_gesco(steps=args.cali_steps)
    model = gesco.model.float().eval()
    h, w = 64, 128
    maps = scene_maps(max(args.cali_n, 4), h, w, gesco.num_classes)
    g = torch.Generator().manual_seed(0)

    # 1. calibration --------------------------------------------------------------------------
    t0, c0 = time.perf_counter(), time.process_time()
    cali = collect_calibration(gesco, maps, args.cali_n, args.cali_st, generator=g)
    res["calibration_set"] = {"samples": len(cali), "seconds": time.perf_counter() - t0,
                              "cpu_seconds": time.process_time() - c0}
    print(f"calibration set: {len(cali)} samples in {res['calibration_set']['seconds']:.1f}s "
          f"(CPU {res['calibration_set']['cpu_seconds']:.1f}s)", flush=True)
    models = {}
    for name, wb, ab in (("W8A32", 8, None), ("W4A8", 4, 8))[: 1 if args.one_config else 2]:
        q = quantize_model(copy.deepcopy(model), wb, ab, split=True)
        t0, c0 = time.perf_counter(), time.process_time()
        if not args.skip_calibration:
            rep = reconstruct(q, cali, iters=args.iters, batch_size=1, generator=g,
                              log=lambda m: print("  " + m, flush=True))
        else:
            rep = []
        t_rec, c_rec = time.perf_counter() - t0, time.process_time() - c0
        t0 = time.perf_counter()
        if ab:
            calibrate_activations(q, cali, batch=4)
        t_act = time.perf_counter() - t0
        res[f"calibrate_{name}"] = {"units": len(rep), "iters_per_unit": args.iters, "reconstruct_s": t_rec,
                                    "reconstruct_cpu_s": c_rec, "activations_s": t_act,
                                    "slowest_units": sorted(((r["unit"], round(r["seconds"], 2)) for r in rep),
                                                            key=lambda u: -u[1])[:3]}
        print(f"{name}: reconstruction {t_rec:.1f}s, CPU {c_rec:.1f}s ({len(rep)} units x {args.iters} iters), "
              f"activations {t_act:.1f}s", flush=True)
        models[name] = q

    # 2. files -------------------------------------------------------------------------------
    from safetensors.torch import save_file
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        save_file({k: v.float().contiguous() for k, v in model.state_dict().items()}, str(tmp / "fp32.safetensors"))
        fp_bytes = (tmp / "fp32.safetensors").stat().st_size
        q8 = models["W8A32"]
        enable_adaround(q8)
        buf = io.BytesIO()
        torch.save(dict(qgesco_state_dict(q8)), buf)
        sizes = {"fp32_safetensors": fp_bytes, "qgesco_pth_layout": len(buf.getvalue())}
        for bits in (8, 4):
            qb = quantize_model(copy.deepcopy(model), bits)
            save_packed(tmp / f"p{bits}", qb)
            sizes[f"packed_int{bits}"] = (tmp / f"p{bits}" / "model.safetensors").stat().st_size
        res["files"] = {k: {"bytes": v, "of_fp32": v / fp_bytes} for k, v in sizes.items()}
        print("files:", {k: f"{v['bytes']} B ({100 * v['of_fp32']:.1f}%)" for k, v in res["files"].items()})

        # 3. speed ---------------------------------------------------------------------------
        try:
            from gensemcom.quant.runtime import OrtNetwork, export_onnx, quantize_onnx
            have_ort = True
        except ImportError:
            have_ort = False
        qs = quantize_model(copy.deepcopy(model), 8, 8, symmetric=True)
        calibrate_activations(qs, cali, batch=4)
        nets = {"torch_fp32": model, "torch_fake_W8A8": qs}
        if have_ort:
            t0 = time.perf_counter()
            fp_path = export_onnx(qs, tmp / "net.onnx", h, w)
            int8_path = quantize_onnx(fp_path, tmp / "net_int8.onnx",
                                      [(cali.xs[i: i + 1], cali.ts[i: i + 1], cali.cs[i: i + 1])
                                       for i in range(len(cali))])
            res["onnx_export_and_quantise_s"] = time.perf_counter() - t0
            nets["ort_fp32"] = OrtNetwork(tmp / "net.onnx", model.config, threads=args.threads)
            nets["ort_int8"] = OrtNetwork(int8_path, model.config, threads=args.threads)
            # the same fp export without the quantised weights, for a fair fp32 ORT number
            export_onnx(model, tmp / "net_fp.onnx", h, w)
            nets["ort_fp32"] = OrtNetwork(tmp / "net_fp.onnx", model.config, threads=args.threads)
        set_quant_state(qs, weight=True, act=True)
        x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(1))
        t = torch.tensor([500.0, 500.0])
        y = torch.cat([maps[:1], torch.zeros_like(maps[:1])])
        call = {k: [] for k in nets}
        sample = {k: [] for k in nets}
        diffusion = load_gesco(steps=args.steps).diffusion
        images = {}
        for _ in range(args.rounds):
            for k, net in nets.items():
                with torch.no_grad():
                    net(x, t, y)
                    call[k].append(timed(lambda: net(x, t, y), args.reps))
                    noise = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(2))
                    t0 = time.perf_counter()
                    images[k] = diffusion.sample(net, maps[:1], noise=noise, guidance_scale=gesco.guidance_scale)
                    sample[k].append(time.perf_counter() - t0)
        base_call, base_sample = min(call["torch_fp32"]), min(sample["torch_fp32"])
        res["speed"] = {k: {"network_call_s": min(call[k]), "call_speedup_vs_torch_fp32": base_call / min(call[k]),
                            f"ddim{args.steps}_images_per_s": 1 / min(sample[k]),
                            "sample_speedup_vs_torch_fp32": base_sample / min(sample[k])} for k in nets}
        for k, v in res["speed"].items():
            print(f"{k:16s} call {1000 * v['network_call_s']:7.1f} ms  x{v['call_speedup_vs_torch_fp32']:.2f}   "
                  f"DDIM{args.steps} {v[f'ddim{args.steps}_images_per_s']:.3f} img/s  "
                  f"x{v['sample_speedup_vs_torch_fp32']:.2f}", flush=True)
        # 4. agreement -------------------------------------------------------------------------
        with torch.no_grad():
            ref = model(x, t, y)[:, :3]
            res["agreement"] = {k: {"eps_rel_mad": float((net(x, t, y)[:, :3] - ref).abs().mean() / ref.abs().mean()),
                                    "image_mad": float((images[k] - images["torch_fp32"]).abs().mean())}
                                for k, net in nets.items()}
        print("agreement:", json.dumps(res["agreement"], indent=None))

    # 5. accounting ----------------------------------------------------------------------------
    res["accounting"] = {"bundled": accounting(model, (1, 3, h, w)),
                         "note": "see gensemcom.quant.accounting for what each number measures"}
    flags = dict(image_size=256, num_classes=35, num_channels=256, num_res_blocks=2, num_head_channels=64,
                 attention_resolutions="32,16,8", class_cond=True, use_scale_shift_norm=True, resblock_updown=True,
                 learn_sigma=True, one_hot_label=True)
    from gensemcom.legacy import model_and_diffusion_from_flags
    with torch.device("meta"):
        full, _ = model_and_diffusion_from_flags(flags)
    res["accounting"]["cityscapes_full"] = accounting(full, (1, 3, 256, 512))
    for k, v in res["accounting"].items():
        if isinstance(v, dict):
            print(k, json.dumps(v["summary"]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
