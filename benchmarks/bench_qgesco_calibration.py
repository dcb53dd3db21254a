"""How long Q-GESCO's calibration of the full-size Cityscapes network takes (issue 10, item 3).

Full-size GESCO (675 M parameters, 256x512, random seeded weights: time does not depend on the
weights), W8A32 with split quantisation of the decoder's skip convolutions:

1. calibration data from the GESCO sampler (``cali_n`` trajectories x ``cali_st`` snapshots,
   both guidance branches, DDIM ``--steps``);
2. BRECQ/AdaRound reconstruction of every unit, twice: at ``--iters`` and at ``--iters2`` Adam
   steps per unit (two fresh quantised copies). The difference gives the cost of one iteration
   over all units, the rest is the fixed cost (caching unit inputs); Q-GESCO's setting (20,000
   iterations per unit) is extrapolated from the two: fixed + 20000 x per-iteration.

Prints and writes (``--json``) the seconds of each phase, per unit, and the extrapolation.

    PYTHONPATH=src python3 benchmarks/bench_qgesco_calibration.py --iters 5 --iters2 45 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sampling import BASE_FLAGS, calibrate_output, init_weights, label_map  # noqa: E402

from gensemcom.legacy import model_and_diffusion_from_flags  # noqa: E402
from gensemcom.quant.calibrate import collect_calibration, reconstruct  # noqa: E402
from gensemcom.quant.model import quantize_model  # noqa: E402
from gensemcom.systems.gesco import GESCO  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--iters2", type=int, default=45)
    p.add_argument("--cali-n", type=int, default=2)
    p.add_argument("--cali-st", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--max-samples", type=int, default=8)
    p.add_argument("--smoke", action="store_true", help="tiny network on the CPU (checks the script)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.smoke:
        flags = dict(BASE_FLAGS, image_size=32, num_channels=32, num_head_channels=32, attention_resolutions="4",
                     channel_mult="1,2")
        hw, dev = (32, 64), torch.device("cpu")
    else:
        if not torch.cuda.is_available():
            print("bench_qgesco_calibration: no CUDA device; nothing measured")
            return 0
        flags = dict(BASE_FLAGS, image_size=256, num_channels=256, num_head_channels=64,
                     attention_resolutions="32,16,8")
        hw, dev = (256, 512), torch.device("cuda")
    flags["timestep_respacing"] = f"ddim{args.steps}"
    gen = torch.Generator().manual_seed(0)
    model, diffusion = model_and_diffusion_from_flags(flags)
    init_weights(model, gen)
    model.to(dev).eval()
    maps = label_map(args.cali_n, *hw, gen).to(dev)
    calibrate_output(model, torch.randn((1, 3, *hw), generator=gen).to(dev), torch.full((1,), 999, device=dev),
                     maps[:1])
    res = {"device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu (smoke)",
           "parameters": sum(q.numel() for q in model.parameters()), "iters": args.iters,
           "cali_n": args.cali_n, "cali_st": args.cali_st, "steps": args.steps}
    gesco = GESCO(model, diffusion, 35, guidance_scale=2.0, channel="none")
    t0 = time.perf_counter()
    cali = collect_calibration(gesco, maps, args.cali_n, args.cali_st, generator=torch.Generator().manual_seed(1))
    res["calibration_data_s"] = round(time.perf_counter() - t0, 2)
    print(f"calibration data: {res['calibration_data_s']} s", flush=True)
    import copy
    passes = {}
    for iters in (args.iters, args.iters2):
        qm = quantize_model(copy.deepcopy(model), weight_bits=8, act_bits=None, split=True)
        t0 = time.perf_counter()
        units = reconstruct(qm, cali, iters=iters, max_samples=args.max_samples,
                            generator=torch.Generator().manual_seed(2), log=lambda s: print(s, flush=True))
        passes[iters] = time.perf_counter() - t0
        print(f"reconstruction at {iters} iterations per unit ({len(units)} units): {passes[iters]:.1f} s",
              flush=True)
        del qm
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    res["units"] = len(units)
    res["reconstruction_s"] = {str(k): round(v, 2) for k, v in passes.items()}
    per_iter = (passes[args.iters2] - passes[args.iters]) / (args.iters2 - args.iters)
    fixed = passes[args.iters] - per_iter * args.iters
    res["seconds_per_iteration_all_units"] = round(per_iter, 4)
    res["fixed_seconds"] = round(fixed, 2)
    res["extrapolated_20000_iters_hours"] = round((fixed + 20000 * per_iter) / 3600, 2)
    total = sum(passes.values())
    print(json.dumps(res, indent=1), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0 if math.isfinite(total) else 1


if __name__ == "__main__":
    sys.exit(main())
