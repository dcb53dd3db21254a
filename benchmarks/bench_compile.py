"""When does ``torch.compile`` pay for itself on CPU? Compile time against the time it saves per step.

    python benchmarks/bench_compile.py --json benchmarks/compile_cpu.json

On the bundled GESCO model (or ``--config small|medium`` of bench_sampling.py, random weights),
one guided network evaluation with the SPADE modulations cached (the sampler's inner call;
both branches, the encoder shared) is timed eagerly (plain model and the fast path) and after
``torch.compile`` (inductor, default mode) of the plain model. The first compiled call includes
the compilation; the break-even is ``compile_seconds / (eager - compiled)`` guided steps, i.e.
that many network evaluations of one sampling run (or of a process that keeps the compiled
model) before the compile has been paid back. Times are CPU time of this process
(``time.process_time``, 1 thread; the compiler's worker processes are not counted, so the
compile time is also given as wall time). Agreement: max |compiled - eager|.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="bundled", choices=["bundled", "small", "medium"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from gensemcom.diffusion.gaussian import Conditioning
    from gensemcom.models.fastpath import fast_unet

    if args.config == "bundled":
        from gensemcom import zoo
        gesco = zoo.load_gesco(steps=10)
        model, diffusion, scale = gesco.model.eval(), gesco.diffusion, gesco.guidance_scale
        H, W = 64, 128
        g = torch.Generator().manual_seed(0)
        labels = torch.randint(0, gesco.num_classes, (1, H // 8, W // 8), generator=g)
        labels = labels.repeat_interleave(8, 1).repeat_interleave(8, 2)
        y = gesco.transmit(labels, labels)
    else:
        import bench_sampling as bs
        from gensemcom.legacy import model_and_diffusion_from_flags
        flags, (H, W) = bs.CONFIGS[args.config]
        model, diffusion = model_and_diffusion_from_flags(dict(flags, timestep_respacing="ddim10"))
        g = torch.Generator().manual_seed(0)
        bs.init_weights(model, g)
        model.eval()
        y = bs.label_map(1, H, W, g)
        scale = 2.0
    x = torch.randn(1, 3, H, W, generator=g)
    t = torch.full((1,), 5)

    def timed(fn):
        c0, w0 = time.process_time(), time.perf_counter()
        out = fn()
        return out, time.process_time() - c0, time.perf_counter() - w0

    res: dict = {"config": args.config, "size": [H, W], "torch": torch.__version__}
    eager = {}
    with torch.inference_mode():
        for name, m in (("plain", model), ("fast", fast_unet(model))):
            cond = Conditioning(m, y, scale, True)
            out0 = diffusion.guided_call(m, x, t, cond)
            eager[name] = min(timed(lambda: diffusion.guided_call(m, x, t, cond))[1] for _ in range(args.repeats))
            if name == "plain":
                ref, cond_plain = out0, cond
    compiled = torch.compile(model)
    with torch.inference_mode():
        out, c_first, w_first = timed(lambda: diffusion.guided_call(compiled, x, t, cond_plain))
        comp = min(timed(lambda: diffusion.guided_call(compiled, x, t, cond_plain))[1] for _ in range(args.repeats))
    saved = eager["plain"] - comp
    res.update(eager_plain_s=eager["plain"], eager_fast_s=eager["fast"], compiled_s=comp,
               first_compiled_call_cpu_s=c_first, first_compiled_call_wall_s=w_first,
               speedup_compiled_vs_plain=eager["plain"] / comp, speedup_fast_vs_plain=eager["plain"] / eager["fast"],
               break_even_steps=(c_first - comp) / saved if saved > 0 else None,
               max_abs_diff=float((out - ref).abs().max()), python=platform.python_version())
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
