"""``gensemcom quantize``: post-training quantisation of a GESCO model (Q-GESCO, arXiv 2410.02491).

Accepts Q-GESCO's ``scripts/quantize_model.py`` command line verbatim (the GESCO model flags,
``--model_path``, ``--ptq --weight_bit 8 --quant_mode qdiff --split --cond --cali_n 51 --cali_st 5
--cali_iters 20000 --cali_batch_size 1 --cali_data_path ./cali_data_256.pth --logdir ./logs`` ...)
and runs it to the end: min-max initialisation, BRECQ block reconstruction with AdaRound over every
unit (the SPADE blocks replay their map and time embedding, ``--split`` quantises the decoder's
skip concatenations in two halves), activation calibration with ``--quant_act``.

Writes to ``--logdir`` (or ``--results_path``, ``--out``):

- ``quantized_model.pth``: Q-GESCO's layout (``model.`` keys + ``weight_quantizer.{alpha,
  zero_point,delta}``), loadable by its ``quant_sampling.py --resume``; twice the fp32 size, as
  the original (``--no_pth`` skips it);
- ``packed/``: our packed integer checkpoint (int8 or int4 weights, about 1/4 or 1/8 of fp32);
- ``quantize.json``: the settings, per-unit reconstruction report, timings and the accounting
  (weight bytes, FLOPs and bit-operations beside the paper's 75% / 79%).

Without ``--model_path`` it quantises a saved model folder (``--checkpoint``, default: the bundled
synthetic-scenes model). Without an existing ``--cali_data_path`` file the calibration set is
taken from the fp sampler itself: ``--cali_n`` maps of ``--dataset_mode``/``--data_dir`` through
``--channel`` at ``--cali_snr``, ``--cali_st`` snapshots each (``--calibration qgesco``: Q-GESCO's
own choice, see :func:`gensemcom.quant.calibrate.collect_calibration`).

Flags Q-GESCO parses and never uses in this script (``--timesteps``, ``--eta``, ``--skip_type``,
``--use_pretrained``, ``--pool``, ``--sequence``, ``--batch_size``, ``--num_samples``, ``--snr``,
``--clip_denoised``, ``--use_ddim``, ``--verbose``) are accepted and reported as having no effect;
``--ptq`` and ``--cond`` are what this command always does; ``--a_sym`` (symmetric activations),
``--running_stat`` (running min/max over the calibration set instead of the first batch),
``--cali_iters_a``, ``--cali_lr`` and ``--cali_p`` (the step-size tuning) act with ``--quant_act``;
``--resume``/``--resume_w`` (continue from a checkpoint) are refused: sample from a quantised model
with :func:`gensemcom.quant.load_quantized`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from ..legacy import LEGACY_DEFAULTS, boolean
from .common import HelpFormatter, common_parser, finite_float, plain, positive_int, resolve_device

#: quantize_model.py flags (besides the GESCO model flags) and their defaults
QGESCO_FLAGS: dict[str, Any] = dict(
    data_dir="", dataset_mode="", batch_size=1, model_path="", results_path="", s=1.0, snr="100",
    one_hot_label=None, pool="None", use_ddim=None, clip_denoised=True, num_samples=1,
    weight_bit=8, act_bit=8, quant_mode="qdiff", cali_st=1, cali_batch_size=32, cali_n=1024,
    cali_iters=20000, cali_iters_a=5000, cali_lr=4e-4, cali_p=2.4, cali_data_path="", sm_abit=8,
    timesteps=None, eta=None, skip_type=None, logdir=None,
)
_STORE_TRUE = ("ptq", "quant_act", "split", "cond", "running_stat", "a_sym", "use_pretrained", "resume",
               "resume_w", "sequence", "verbose")
_UNUSED = ("timesteps", "eta", "skip_type", "use_pretrained", "pool", "sequence", "batch_size", "num_samples",
           "snr", "clip_denoised", "use_ddim", "verbose")


def build_parser() -> argparse.ArgumentParser:
    doc = __doc__.split("\n\n")
    p = argparse.ArgumentParser(prog="gensemcom quantize", description=plain(doc[0]),
                                epilog=plain("\n\n".join(doc[1:])), formatter_class=HelpFormatter,
                                parents=[common_parser("output folder (default: --logdir, --results_path or "
                                                       "out/quantize)")])
    q = p.add_argument_group("Q-GESCO quantize_model.py flags")
    types = {"batch_size": positive_int, "s": finite_float, "weight_bit": positive_int, "act_bit": positive_int,
             "cali_st": positive_int, "cali_batch_size": positive_int, "cali_n": positive_int,
             "cali_iters": positive_int, "cali_iters_a": int, "cali_lr": finite_float, "cali_p": finite_float,
             "sm_abit": positive_int, "timesteps": int, "eta": float, "num_samples": int}
    for k, v in QGESCO_FLAGS.items():
        kind = types.get(k, boolean if isinstance(v, bool) or k in ("use_ddim", "one_hot_label") else str)
        q.add_argument(f"--{k}", type=kind, default=v)
    for k in _STORE_TRUE:
        q.add_argument(f"--{k}", action="store_true")
    m = p.add_argument_group("model and diffusion flags (guided-diffusion names, with --model_path)")
    for k, v in LEGACY_DEFAULTS.items():
        if k in QGESCO_FLAGS:
            continue
        m.add_argument(f"--{k}", type=boolean if isinstance(v, bool) else type(v), default=None)
    o = p.add_argument_group("gensemcom options")
    o.add_argument("--checkpoint", default=None, help="a saved model folder (default: the bundled model)")
    o.add_argument("--compat", choices=["none", "qgesco"], default="none",
                   help="quantiser behaviour: none = principled default, qgesco = the published quirks")
    o.add_argument("--calibration", choices=["network_inputs", "qgesco"], default="network_inputs",
                   help="what a calibration snapshot is (when the set is collected here)")
    o.add_argument("--channel", choices=["awgn", "rayleigh", "rician", "legacy", "none"], default="none",
                   help="channel of the calibration maps")
    o.add_argument("--cali_snr", default="inf", help="comma-separated SNRs of the calibration maps")
    o.add_argument("--cali_steps", type=positive_int, default=None,
                   help="DDIM steps of the calibration sampler (default --timesteps or --diffusion_steps or 20)")
    o.add_argument("--cali_samples", type=positive_int, default=None,
                   help="samples cached per unit (default all; Q-GESCO's memory-saving path keeps N/8//4*8)")
    o.add_argument("--symmetric", action="store_true", help="symmetric weight grid (what the int8 runtime uses)")
    o.add_argument("--synthetic_size", default="64x128", help="HxW of --dataset_mode synthetic scenes")
    o.add_argument("--no_pth", action="store_true", help="do not write Q-GESCO's quantized_model.pth")
    return p


def _log(msg: str) -> None:
    print(msg, flush=True)


def _load_model(args: argparse.Namespace, flags_given: dict[str, Any]):
    from ..legacy import model_and_diffusion_from_flags
    from ..models.io import load_checkpoint, load_pretrained
    from ..zoo import bundled_path

    if args.model_path:
        path = Path(args.model_path)
        if not path.is_file():
            raise FileNotFoundError(f"--model_path {path} not found")
        model, diffusion = model_and_diffusion_from_flags(flags_given)
        load_checkpoint(model, path)
        num_classes = int(flags_given.get("num_classes", LEGACY_DEFAULTS["num_classes"]))
        return model.eval(), diffusion, num_classes, {}
    folder = Path(args.checkpoint) if args.checkpoint else bundled_path("gesco_synthetic")
    model, diffusion, config = load_pretrained(folder)
    num_classes = int(config.get("num_classes", model.config.label_channels - 1))
    extra = {k: config[k] for k in ("diffusion", "num_classes", "guidance_scale", "image_hw") if k in config}
    return model.float().eval(), diffusion, num_classes, extra


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    argv_list = list(sys.argv[1:] if argv is None else argv)
    given = {a[2:].split("=")[0] for a in argv_list if a.startswith("--")}
    if args.resume or args.resume_w:
        raise ValueError("--resume/--resume_w: this command always calibrates from the fp model; to sample "
                         "from a quantized_model.pth use gensemcom.quant.load_quantized")
    if args.quant_mode != "qdiff":
        raise ValueError(f"--quant_mode {args.quant_mode!r}: only 'qdiff' (Q-Diffusion's method) exists")
    if args.weight_bit > 8 or (args.quant_act and args.act_bit > 8):
        raise ValueError("--weight_bit and --act_bit must be at most 8")
    out = Path(args.out or args.logdir or args.results_path or "out/quantize")
    cali_path = Path(args.cali_data_path) if args.cali_data_path else None
    if args.model_path and not Path(args.model_path).is_file():
        raise FileNotFoundError(f"--model_path {args.model_path} not found")
    can_collect = bool(args.dataset_mode) and (bool(args.data_dir) or args.dataset_mode == "synthetic")
    if cali_path is not None and not cali_path.is_file() and not can_collect:
        raise FileNotFoundError(f"--cali_data_path {cali_path} not found, and no --dataset_mode/--data_dir "
                                "to collect a calibration set from")
    unused = [k for k in _UNUSED if k in given]
    import torch

    from ..quant.accounting import accounting
    from ..quant.calibrate import CalibrationSet, calibrate_activations, collect_calibration, reconstruct
    from ..quant.model import enable_adaround, qgesco_state_dict, quantize_model
    from ..quant.packed import save_packed

    device = resolve_device(args.device)
    gen = torch.Generator().manual_seed(args.seed)
    legacy_given = {k: getattr(args, k) for k in LEGACY_DEFAULTS if k in given and getattr(args, k) is not None}
    model, diffusion, num_classes, extra = _load_model(args, legacy_given)
    model.to(device)
    compat = None if args.compat == "none" else "qgesco"
    report: dict[str, Any] = {"command": argv_list, "unused_flags": unused, "timings": {}}
    if unused:
        _log(f"note: {', '.join('--' + k for k in unused)} are parsed by Q-GESCO and have no effect there or here")

    t0 = time.perf_counter()
    if cali_path is not None and cali_path.is_file():
        cali = CalibrationSet.load(str(cali_path))
        _log(f"calibration set {cali_path}: {len(cali)} samples")
    else:
        from ..semantics import semantic_input
        from ..systems.gesco import GESCO
        from ..data import build_dataset
        from ..diffusion import DiffusionConfig, GaussianDiffusion

        steps = args.cali_steps or args.timesteps or 20
        dcfg = diffusion.config.to_dict() if hasattr(diffusion, "config") else extra.get("diffusion")
        sampler = GaussianDiffusion.from_config(DiffusionConfig(**dict(dcfg, respacing=f"ddim{steps}")))
        gesco = GESCO(model, sampler, num_classes, channel=args.channel,
                      guidance_scale=args.s if "s" in given else float(extra.get("guidance_scale", 2.0)))
        if args.dataset_mode in ("", "synthetic"):
            h, w = (int(v) for v in args.synthetic_size.lower().split("x"))
            data = build_dataset("synthetic", num_images=args.cali_n, height=h, width=w, seed=args.seed,
                                 num_classes=num_classes)
        else:
            data = build_dataset(args.dataset_mode, args.data_dir or None, split="val")
        n = min(args.cali_n, len(data))
        items = [data[i] for i in range(n)]
        has_edges = model.config.label_channels == num_classes + 1
        maps = torch.cat([semantic_input(it["label"][None], num_classes,
                                         it["instance"][None] if has_edges else None, ignore_index=255)
                          for it in items])
        snrs = [float(s) for s in args.cali_snr.split(",")]
        cali = collect_calibration(gesco, maps, args.cali_n, args.cali_st, snrs=snrs, generator=gen,
                                   kind=None if args.calibration == "network_inputs" else "qgesco")
        _log(f"calibration set from the sampler: {len(cali)} samples ({args.cali_n} x {args.cali_st}"
             f"{' x 2 guidance branches' if args.calibration == 'network_inputs' else ''})")
    report["timings"]["calibration_set_s"] = time.perf_counter() - t0

    q = quantize_model(model, args.weight_bit, args.act_bit if args.quant_act else None, symmetric=args.symmetric,
                       act_symmetric=args.a_sym, sm_bits=args.sm_abit, split=args.split, compat=compat)
    t0 = time.perf_counter()
    units = reconstruct(q, cali, iters=args.cali_iters, batch_size=args.cali_batch_size, generator=gen,
                        max_samples=args.cali_samples, log=None if args.no_progress else _log)
    report["timings"]["reconstruction_s"] = time.perf_counter() - t0
    report["units"] = units
    if args.quant_act:
        t0 = time.perf_counter()
        calibrate_activations(q, cali, batch=max(1, min(8, len(cali))), act_iters=max(0, args.cali_iters_a),
                              lr=args.cali_lr, p=args.cali_p, generator=gen, running=args.running_stat,
                              log=None if args.no_progress else _log)
        report["timings"]["activations_s"] = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    save_packed(out / "packed", q.cpu(), extra=extra)
    if not args.no_pth:
        enable_adaround(q)
        torch.save(dict(qgesco_state_dict(q)), out / "quantized_model.pth")
    h, w = cali.xs.shape[-2:]
    acc = accounting(q, (1, model.config.in_channels, int(h), int(w)))
    report["accounting"] = acc
    written = [out / "quantized_model.pth", out / "packed" / "model.safetensors"]
    report["files"] = {p.name: p.stat().st_size for p in written if p.is_file()}
    (out / "quantize.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    s, wb = acc["summary"], acc["weight_bytes"]
    bits = args.weight_bit
    _log(f"weights: fp32 {wb['fp32'] / 2**20:.2f} MiB -> packed int{bits} "
         f"{wb['int8' if bits > 4 else 'int4'] / 2**20:.2f} MiB "
         f"({100 * s['weights_saved_int8' if bits > 4 else 'weights_saved_int4']:.1f}% saved; paper: 75%)")
    abits = args.act_bit if args.quant_act else 32
    key = f"bitops_saved_W{bits}A{abits}"
    saved = s.get(key)
    _log(f"one network call: {s['flops_total'] / 1e9:.2f} GFLOP (counter), "
         + (f"bit-operations W{bits}A{abits} {100 * saved:.1f}% below W32A32" if saved is not None else
            f"W{bits}A{abits}: see quantize.json")
         + " (paper: 79% of FLOPs; fake quantisation itself saves no FLOPs)")
    _log(f"wrote {out}/packed/" + ("" if args.no_pth else f" and {out}/quantized_model.pth") + f", {out}/quantize.json")
    if not math.isfinite(sum(u["rec"] for u in units) if units else 0.0):
        raise ValueError("reconstruction produced non-finite losses")
    return 0


if __name__ == "__main__":
    sys.exit(main())
