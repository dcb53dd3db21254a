"""``gensemcom sample``: label maps -> transmitter -> channel at one or several SNRs -> receiver.

The GESCO pipeline: the semantic map (one-hot classes + instance edges) of each image is sent
over a noisy channel (only the channels of the classes present; the class list is side
information), denoised at the receiver (3x3 average then max pooling, "FDS") and used to
condition the diffusion model, which regenerates the image. Writes, under ``--out``:

- ``original/NAME.png``, ``label/NAME.png`` (colourised map as sent),
- ``snr_{S}/NAME.png`` (regenerated), ``received_snr_{S}/NAME.png`` (argmax of the received map),
- ``results.json``: the settings, the model and diffusion configs, the channel and what was sent
  (channel uses per image and per pixel), per SNR.

Accepts GESCO's ``image_sample.py`` command line verbatim (and Q-GESCO's ``quant_sampling.py``
flags: the quantisation ones answer "not yet supported"). Every flag takes effect or is refused.

Channels (``--channel``): ``awgn`` (default) and ``rayleigh``/``rician`` are physical: SNR in dB
is Es/N0 per complex channel use with the transmit power normalised per image. ``legacy`` is
GESCO's table (``--snr`` 100, 30, 25, 20, 15, 10, 5, 1 -> noise std 0, .05, ..., .9): the
reference-compatible mode, not a physical SNR. ``none`` sends the map unchanged.

A killed run resumes: finished images are kept (each file is written atomically) and skipped
when the same command runs again; the noise of each batch is seeded from (seed, batch, SNR), so
the result does not depend on where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..legacy import LEGACY_DEFAULTS, boolean, config_from_flags
from ..imageio import save_png, to_uint8
from ..models.io import atomic_write

#: GESCO image_sample.py flags that are not model/diffusion flags.
GESCO_SAMPLE_DEFAULTS: dict[str, Any] = dict(
    data_dir="", dataset_mode="", clip_denoised=True, num_samples=10000, batch_size=1,
    use_ddim=False, model_path="", results_path="", is_train=False, s=1.0, snr="100",
    pool="fds", add_noise=False, noise_to="semantics",
)
# GESCO's own default --pool is "med", but its sampler always applies the avg3->max3 filter;
# "fds" is what it did. --use_ddim defaults to None here only to tell "given" from "default".

#: Q-GESCO quant_sampling.py flags about quantisation (Q-GESCO lands with its own issue).
QGESCO_QUANT_FLAGS = {
    "ptq": "store_true", "quant_act": "store_true", "weight_bit": int, "act_bit": int,
    "quant_mode": str, "cali_st": int, "cali_batch_size": int, "cali_n": int, "cali_iters": int,
    "cali_iters_a": int, "cali_lr": float, "cali_p": float, "cali_ckpt": str, "cali_data_path": str,
    "resume": "store_true", "resume_w": "store_true", "cond": "store_true", "a_sym": "store_true",
    "running_stat": "store_true", "sm_abit": int, "split": "store_true", "use_pretrained": "store_true",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gensemcom sample", description=__doc__.split("\n\n")[0])
    g = p.add_argument_group("GESCO image_sample.py flags")
    for k, v in GESCO_SAMPLE_DEFAULTS.items():
        g.add_argument(f"--{k}", type=boolean if isinstance(v, bool) else type(v),
                       default=None if k == "use_ddim" else v)
    m = p.add_argument_group("model and diffusion flags (guided-diffusion names; not with --checkpoint)")
    for k, v in LEGACY_DEFAULTS.items():
        m.add_argument(f"--{k}", type=boolean if isinstance(v, bool) else type(v), default=None)
    q = p.add_argument_group("Q-GESCO quant_sampling.py flags")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--logdir", default=None, help="Q-GESCO's output folder (same as --results_path)")
    q.add_argument("--sample_type", choices=["generalized", "ddpm_noisy"], default=None,
                   help="generalized = DDIM, ddpm_noisy = ancestral DDPM")
    q.add_argument("--skip_type", choices=["uniform", "quad"], default=None,
                   help="spacing of the --timesteps sampling steps")
    q.add_argument("--timesteps", type=int, default=None, help="number of sampling steps")
    q.add_argument("--eta", type=float, default=None, help="DDIM eta")
    q.add_argument("--max_images", type=int, default=None, help="same as --num_samples")
    q.add_argument("--verbose", action="store_true", help="print the model")
    q.add_argument("--sequence", action="store_true", help=argparse.SUPPRESS)
    for k, kind in QGESCO_QUANT_FLAGS.items():
        if kind == "store_true":
            q.add_argument(f"--{k}", action="store_true", help=argparse.SUPPRESS)
        else:
            q.add_argument(f"--{k}", type=kind, default=None, help=argparse.SUPPRESS)
    o = p.add_argument_group("gensemcom options")
    o.add_argument("--checkpoint", default=None, help="a folder written by save_pretrained / train")
    o.add_argument("--out", default=None, help="output folder (default: --results_path, --logdir or out/sample)")
    o.add_argument("--channel", choices=["awgn", "rayleigh", "rician", "legacy", "none"], default="awgn")
    o.add_argument("--k_factor", type=float, default=3.0, help="Rician K-factor")
    o.add_argument("--data_split", default="val", help="dataset split (default val)")
    o.add_argument("--synthetic_size", default="64x128")
    o.add_argument("--instance_mode", choices=["exact", "reference_8bit"], default="exact")
    o.add_argument("--device", default=None, help="cpu, cuda (default: cuda if available)")
    o.add_argument("--autocast", choices=["none", "fp16", "bf16"], default="none", help="GPU mixed precision")
    o.add_argument("--no_progress", action="store_true")
    return p


def _fail(parser: argparse.ArgumentParser, msg: str) -> None:
    parser.error(msg)


def _resolve(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """Check every flag and turn the command line into settings."""
    used_quant = [k for k, kind in QGESCO_QUANT_FLAGS.items()
                  if (getattr(args, k) if kind == "store_true" else getattr(args, k) is not None)]
    if used_quant:
        _fail(parser, "quantisation flags are not yet supported (Q-GESCO lands with its own issue): "
                      + ", ".join("--" + k for k in used_quant))
    if args.sequence:
        _fail(parser, "--sequence is not supported (it saves nothing in Q-GESCO either)")
    if args.is_train:
        _fail(parser, "--is_train True: use `gensemcom train` to train")
    if args.add_noise:
        _fail(parser, "--add_noise is a training option (GESCO's sampler ignores it); the channel adds the noise")
    if args.noise_to != "semantics":
        _fail(parser, "--noise_to: only 'semantics' exists")
    out = args.out or args.results_path or args.logdir or "out/sample"
    if args.results_path and args.logdir and args.results_path != args.logdir:
        _fail(parser, "--results_path and --logdir name different folders; give one")
    num = args.num_samples if args.max_images is None else min(args.num_samples, args.max_images)

    # sampler
    method = "ddim" if args.use_ddim else "ddpm"
    if args.sample_type is not None:
        st = "ddim" if args.sample_type == "generalized" else "ddpm"
        if args.use_ddim is not None and st != method:
            _fail(parser, f"--sample_type {args.sample_type} contradicts --use_ddim {args.use_ddim}")
        method = st
    eta = 0.0 if args.eta is None else args.eta
    if eta != 0.0 and method != "ddim":
        _fail(parser, "--eta applies to DDIM (--use_ddim True)")

    # pooling: GESCO's sampler always applies its FDS filter whatever --pool says
    pool_map = {"fds": "fds", "max": "fds", "None": "fds", "med": "median", "median": "median",
                "mean": "mean", "none": "none"}
    if args.pool not in pool_map:
        _fail(parser, f"--pool {args.pool!r}: use fds (= max = None, GESCO's avg3->max3 filter), "
                      "med, mean or none (no filter)")
    pool = pool_map[args.pool]

    snrs = []
    for s in args.snr.split(","):
        s = s.strip()
        try:
            snrs.append(math.inf if s.lower() in ("inf", "infinity") else float(s))
        except ValueError:
            _fail(parser, f"--snr {args.snr!r}: expected dB values separated by commas, e.g. 20,10,5 or inf")
    if args.channel == "legacy":
        from ..channels.semantic import GESCO_SNR_TABLE

        bad = [s for s in snrs if s not in GESCO_SNR_TABLE]
        if bad:
            _fail(parser, f"--snr {bad}: GESCO's legacy table has only {sorted(GESCO_SNR_TABLE)} "
                          "(use --channel awgn for any SNR in dB)")
    else:
        # GESCO's "--snr 100" means noiseless
        snrs = [math.inf if s >= 100 else s for s in snrs]
    return dict(out=Path(out), num=num, method=method, eta=eta, pool=pool, snrs=snrs)


def _load_model(parser: argparse.ArgumentParser, args: argparse.Namespace):
    from ..diffusion import DiffusionConfig, GaussianDiffusion
    from ..models import SemanticUNet
    from ..models.io import load_checkpoint, load_pretrained

    given = {k: getattr(args, k) for k in LEGACY_DEFAULTS if getattr(args, k) is not None}
    if args.checkpoint:
        model_flags = {k for k in given if k not in ("diffusion_steps", "timestep_respacing", "use_fp16")}
        if model_flags:
            _fail(parser, f"--checkpoint carries its own config; drop {sorted('--' + k for k in model_flags)}")
        if args.model_path:
            _fail(parser, "give --checkpoint or --model_path, not both")
        model, diffusion, config = load_pretrained(args.checkpoint)
        dcfg = DiffusionConfig(**config.get("diffusion", {}))
        if "diffusion_steps" in given:
            dcfg.steps = given["diffusion_steps"]
        dcfg.respacing = given.get("timestep_respacing", "")
        num_classes = config.get("num_classes", model.config.label_channels - 1)
    else:
        if not args.model_path:
            _fail(parser, "give --checkpoint DIR or --model_path FILE with the model flags")
        given.setdefault("class_cond", True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model_cfg, dcfg = config_from_flags(given)
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
        model = SemanticUNet(model_cfg)
        load_checkpoint(model, args.model_path)
        num_classes = given.get("num_classes", LEGACY_DEFAULTS["num_classes"])
    if args.timesteps is not None or args.skip_type is not None:
        if dcfg.respacing:
            _fail(parser, "give --timestep_respacing or --timesteps/--skip_type, not both")
        n = args.timesteps or dcfg.steps
        if (args.skip_type or "uniform") == "quad":
            pos = np.linspace(0, math.sqrt(dcfg.steps * 0.8), n) ** 2
            dcfg.respacing = sorted({int(v) for v in pos})
        else:
            dcfg.respacing = f"ddim{n}" if n != dcfg.steps else ""
    if dcfg.steps < 1000 and not dcfg.respacing:
        print(f"note: --diffusion_steps {dcfg.steps} without respacing builds a fresh {dcfg.steps}-step "
              f"schedule whose network timesteps are 0..{dcfg.steps - 1} (Q-GESCO's sampling quirk); "
              f"a model trained with 1000 steps wants --diffusion_steps 1000 --timestep_respacing "
              f"ddim{dcfg.steps}", file=sys.stderr)
    return model, GaussianDiffusion.from_config(dcfg), num_classes


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    s = _resolve(parser, args)
    from ..data import DATASET_INFO, build_dataset
    from ..semantics import colorize
    from ..systems.gesco import GESCO

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    autocast = {"none": None, "fp16": torch.float16, "bf16": torch.bfloat16}[args.autocast]
    if autocast is not None and device.type != "cuda":
        _fail(parser, "--autocast needs a GPU (this CPU has no fast half precision)")
    fp16_note = None
    if args.use_fp16:
        if device.type == "cuda":
            autocast = autocast or torch.float16
        else:
            fp16_note = "--use_fp16 True: no fast half precision on CPU; sampling in float32"
            print(f"note: {fp16_note}", file=sys.stderr)
    model, diffusion, num_classes = _load_model(parser, args)
    model.to(device).eval()
    if args.verbose:
        print(model)

    if not args.dataset_mode:
        _fail(parser, f"--dataset_mode is required: one of {sorted(DATASET_INFO)}")
    if args.dataset_mode not in DATASET_INFO:
        _fail(parser, f"--dataset_mode {args.dataset_mode!r}: use one of {sorted(DATASET_INFO)}")
    if args.dataset_mode == "synthetic":
        h, w = (int(v) for v in args.synthetic_size.lower().split("x"))
        dataset = build_dataset("synthetic", num_images=s["num"], height=h, width=w, seed=10_000 + args.seed)
    else:
        if not args.data_dir:
            _fail(parser, f"--data_dir is required for --dataset_mode {args.dataset_mode}")
        # as the reference, images are resized to the model's image_size (short side)
        kw: dict[str, Any] = {"split": args.data_split, "train": False, "size": model.config.image_size}
        if args.dataset_mode == "folder":
            kw["num_classes"] = num_classes
        dataset = build_dataset(args.dataset_mode, root=args.data_dir, **kw)
    try:
        system = GESCO(model, diffusion, num_classes, channel=args.channel, pool=s["pool"],
                       k_factor=args.k_factor, guidance_scale=args.s, method=s["method"], eta=s["eta"],
                       clip_denoised=args.clip_denoised, instance_mode=args.instance_mode, autocast=autocast)
    except ValueError as e:
        _fail(parser, str(e))
    with_edges = system.has_edges

    out: Path = s["out"]
    settings = {
        "command": "gensemcom sample", "argv": list(sys.argv[1:] if argv is None else argv),
        "seed": args.seed, "dataset": args.dataset_mode, "num_samples": min(s["num"], len(dataset)),
        "batch_size": args.batch_size, "guidance_scale": args.s, "method": s["method"], "eta": s["eta"],
        "clip_denoised": args.clip_denoised, "channel": args.channel, "pool": s["pool"],
        "snr_db": [("inf" if math.isinf(v) else v) for v in s["snrs"]],
        "model": model.config.to_dict(), "diffusion": diffusion.config.to_dict() if diffusion.config else None,
        "instance_mode": args.instance_mode, "autocast": str(autocast) if autocast else None,
        "notes": [fp16_note] if fp16_note else [],
    }
    settings_path = out / "settings.json"
    if settings_path.is_file():
        old = json.loads(settings_path.read_text())
        if {k: v for k, v in old.items() if k != "argv"} != {k: v for k, v in settings.items() if k != "argv"}:
            _fail(parser, f"{out} holds samples made with other settings; choose another --out")
    atomic_write(settings_path, lambda p: Path(p).write_text(json.dumps(settings, indent=2) + "\n"))

    palette = args.dataset_mode if args.dataset_mode in ("synthetic", "cityscapes") else None
    n = settings["num_samples"]
    results: dict[str, Any] = {"settings": settings, "per_snr": {}}
    keys = ["inf" if math.isinf(v) else f"{v:g}" for v in s["snrs"]]
    uses: dict[str, list[float]] = {k: [] for k in keys}
    from tqdm.auto import tqdm

    bar = tqdm(total=n * len(keys), desc="sampling", unit="img", disable=args.no_progress)
    for b0 in range(0, n, args.batch_size):
        idx = list(range(b0, min(b0 + args.batch_size, n)))
        items = [dataset[i] for i in idx]  # read once, sent at every SNR
        names = [Path(str(it.get("path", f"{i:05d}"))).stem or f"{i:05d}" for i, it in zip(idx, items)]
        labels = torch.stack([it["label"] for it in items])
        inst = torch.stack([it["instance"] for it in items]) if with_edges else None
        y = system.transmit(labels, inst)
        for j, name in enumerate(names):
            if not (out / "original" / f"{name}.png").is_file():
                save_png(out / "original" / f"{name}.png", to_uint8(items[j]["image"]))
                save_png(out / "label" / f"{name}.png", colorize(labels[j:j + 1], palette)[0])
        for si, (snr, key) in enumerate(zip(s["snrs"], keys)):
            gen = torch.Generator().manual_seed(args.seed * 1_000_003 + b0 * 1009 + si)
            sent = system.send(y, snr, gen)
            uses[key].extend(torch.as_tensor(sent.channel_uses_per_pixel, dtype=torch.float64).flatten().tolist())
            todo = [j for j, name in enumerate(names) if not (out / f"snr_{key}" / f"{name}.png").is_file()]
            if todo:
                x_T = torch.randn((len(idx), 3, *y.shape[2:]), generator=gen)
                x0 = system.receive(sent.received, gen, noise=x_T)
                received_ids = sent.received[:, :num_classes].argmax(1)
                for j in todo:  # the others were finished by an earlier (killed) run: same numbers
                    save_png(out / f"snr_{key}" / f"{names[j]}.png", to_uint8(x0[j]))
                    save_png(out / f"received_snr_{key}" / f"{names[j]}.png",
                             colorize(received_ids[j:j + 1], palette)[0])
            bar.update(len(idx))
    for key in keys:
        results["per_snr"][key] = {"channel_uses_per_pixel": float(np.mean(uses[key])) if uses[key] else None,
                                   "folder": f"snr_{key}"}
    bar.close()
    atomic_write(out / "results.json", lambda p: Path(p).write_text(json.dumps(results, indent=2) + "\n"))
    print(f"wrote {n} images x {len(s['snrs'])} SNR(s) to {out}")
    return 0
