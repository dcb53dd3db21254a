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
the result does not depend on where it stopped. ``settings.json`` identifies everything that
determines the folder's images: every setting, the SHA-256 of the checkpoint's weights, the data
source and the names and SHA-256 of its files. A run whose identity differs from the folder's is
refused, naming what differs (``--fresh`` discards the folder's earlier samples and starts over);
a folder whose earlier run failed before regenerating any image is simply started over. All
settings are checked before anything is written.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import warnings
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

from ..legacy import LEGACY_DEFAULTS, boolean
from .common import (LEGACY_FLAG_HELP, SAMPLE_FLAG_HELP, HelpFormatter, check_out_dir, common_parser,
                     finite_float, join_negative_values, plain, positive_int, probe_out_dir, resolve_device,
                     snr_list)

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


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 64x128, got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"height and width must be at least 1, got {text!r}")
    return h, w


def _nonneg_float(text: str) -> float:
    v = finite_float(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return v


#: argparse types of the GESCO flags that need more than their default's type
_SAMPLE_TYPES: dict[str, Any] = {"num_samples": positive_int, "batch_size": positive_int, "s": finite_float,
                                 "snr": snr_list}


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``gensemcom sample`` (GESCO's, Q-GESCO's and our flags)."""
    doc = __doc__.split("\n\n")
    p = argparse.ArgumentParser(
        prog="gensemcom sample", usage="%(prog)s [options]   (GESCO's image_sample.py command lines work as they are)",
        description=plain(doc[0]), epilog=plain("\n\n".join(doc[1:])),
        formatter_class=HelpFormatter,
        parents=[common_parser("output folder (default: --results_path, --logdir or out/sample)")])
    g = p.add_argument_group("GESCO image_sample.py flags")
    for k, v in GESCO_SAMPLE_DEFAULTS.items():
        kind = _SAMPLE_TYPES.get(k, boolean if isinstance(v, bool) else type(v))
        g.add_argument(f"--{k}", type=kind, default=None if k == "use_ddim" else v, help=SAMPLE_FLAG_HELP[k])
    m = p.add_argument_group("model and diffusion flags (guided-diffusion names; not with --checkpoint)")
    for k, v in LEGACY_DEFAULTS.items():
        shown = "''" if v == "" else v
        m.add_argument(f"--{k}", type=boolean if isinstance(v, bool) else type(v), default=None,
                       help=f"{LEGACY_FLAG_HELP[k]} (reference default: {shown})")
    q = p.add_argument_group("Q-GESCO quant_sampling.py flags")
    q.add_argument("--logdir", default=None, help="Q-GESCO's output folder (same as --results_path)")
    q.add_argument("--sample_type", choices=["generalized", "ddpm_noisy"], default=None,
                   help="generalized = DDIM, ddpm_noisy = ancestral DDPM (default: as --use_ddim)")
    q.add_argument("--skip_type", choices=["uniform", "quad"], default=None,
                   help="spacing of the --timesteps sampling steps (default uniform)")
    q.add_argument("--timesteps", type=positive_int, default=None,
                   help="number of sampling steps (default: all --diffusion_steps)")
    q.add_argument("--eta", type=_nonneg_float, default=None, help="DDIM eta (default 0: deterministic)")
    q.add_argument("--max_images", type=positive_int, default=None, help="same as --num_samples")
    q.add_argument("--verbose", action="store_true", help="print the model")
    q.add_argument("--sequence", action="store_true", help=argparse.SUPPRESS)
    for k, kind in QGESCO_QUANT_FLAGS.items():
        if kind == "store_true":
            q.add_argument(f"--{k}", action="store_true", help=argparse.SUPPRESS)
        else:
            q.add_argument(f"--{k}", type=kind, default=None, help=argparse.SUPPRESS)
    o = p.add_argument_group("gensemcom options")
    o.add_argument("--checkpoint", default=None, help="a model folder written by save_pretrained or train")
    o.add_argument("--channel", choices=["awgn", "rayleigh", "rician", "legacy", "none"], default="awgn",
                   help="awgn/rayleigh/rician: SNR is Es/N0 per complex channel use; legacy: GESCO's "
                        "noise table (--snr one of 100, 30, 25, 20, 15, 10, 5, 1); none: noiseless")
    o.add_argument("--k_factor", type=_nonneg_float, default=3.0, help="Rician K-factor (--channel rician)")
    o.add_argument("--data_split", default="val", help="dataset split")
    o.add_argument("--synthetic_size", type=_size, default="64x128",
                   help="HxW of the scenes of --dataset_mode synthetic")
    o.add_argument("--instance_mode", choices=["exact", "reference_8bit"], default="exact",
                   help="instance ids at full precision, or clipped to 8 bits as the reference loads them")
    o.add_argument("--autocast", choices=["none", "fp16", "bf16"], default="none",
                   help="mixed precision of the network (GPU only)")
    o.add_argument("--fresh", action="store_true",
                   help="discard the samples already in the output folder and start over")
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

    snrs = list(args.snr)
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
    """-> (model, diffusion, num_classes, weights file)."""
    from ..diffusion import DiffusionConfig, GaussianDiffusion
    from ..legacy import config_from_flags
    from ..models import SemanticUNet
    from ..models.io import WEIGHTS_NAME, load_checkpoint, load_pretrained

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
        weights = Path(args.checkpoint) / WEIGHTS_NAME
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
        weights = Path(args.model_path)
    if args.timesteps is not None or args.skip_type is not None:
        if dcfg.respacing:
            _fail(parser, "give --timestep_respacing or --timesteps/--skip_type, not both")
        n = args.timesteps or dcfg.steps
        if n > dcfg.steps:
            _fail(parser, f"--timesteps {n}: the process has only {dcfg.steps} steps")
        if (args.skip_type or "uniform") == "quad":
            import numpy as np

            pos = np.linspace(0, math.sqrt(dcfg.steps * 0.8), n) ** 2
            dcfg.respacing = sorted({int(v) for v in pos})
        else:
            dcfg.respacing = f"ddim{n}" if n != dcfg.steps else ""
    if dcfg.steps < 1000 and not dcfg.respacing:
        print(f"note: --diffusion_steps {dcfg.steps} without respacing builds a fresh {dcfg.steps}-step "
              f"schedule whose network timesteps are 0..{dcfg.steps - 1} (Q-GESCO's sampling quirk); "
              f"a model trained with 1000 steps wants --diffusion_steps 1000 --timestep_respacing "
              f"ddim{dcfg.steps}", file=sys.stderr)
    return model, GaussianDiffusion.from_config(dcfg), num_classes, weights


# --------------------------------------------------------------------------------------------
# the results folder: what identifies it, names, resuming

#: settings entries that do not change the images (where things were read from, how it was typed)
NOT_IDENTITY = ("command", "argv", "paths", "notes")
#: what a run writes into its folder (``--fresh`` and a restart remove exactly these)
OUTPUT_DIRS = ("original", "label")
OUTPUT_PREFIXES = ("snr_", "received_snr_")
OUTPUT_FILES = ("settings.json", "results.json")


def item_names(dataset: Any, n: int) -> list[str]:
    """Unique output names of the first ``n`` items: the image file's stem (GESCO's naming), or,
    when two files share a stem in different folders, the stem under its folder relative to the
    dataset (``a/x`` and ``b/x``, written as subfolders); synthetic scenes are numbered."""
    samples = getattr(dataset, "samples", None)
    if samples is None:
        return [f"{i:05d}" for i in range(n)]
    samples = samples[:n]
    names = [Path(sm.image).stem for sm in samples]
    if len(set(names)) < len(names):
        names = [str(PurePosixPath(sm.key).parent / Path(sm.image).stem) for sm in samples]
    if len(set(names)) < len(names):  # cannot happen with keyed datasets; never overwrite anyway
        names = [f"{i:05d}_{nm.replace('/', '_')}" for i, nm in enumerate(names)]
    return names


def data_identity(dataset: Any, names: list[str]) -> dict[str, Any]:
    """The items a run reads: their names and the SHA-256 of each item's files (image, label,
    instance map), folded into one digest; synthetic scenes are identified by their parameters."""
    import hashlib

    from ..models.io import file_sha256

    h = hashlib.sha256()
    samples = getattr(dataset, "samples", None)
    for i, name in enumerate(names):
        h.update(name.encode() + b"\0")
        if samples is not None:
            sm = samples[i]
            for f in (sm.image, sm.label, sm.instance):
                h.update((file_sha256(f) if f is not None else "-").encode() + b"\0")
    return {"count": len(names), "sha256": h.hexdigest()}


def _identity(settings: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps({k: v for k, v in settings.items() if k not in NOT_IDENTITY}, sort_keys=True))


def _outputs(out: Path) -> list[Path]:
    """What a run writes that is present in ``out`` (and nothing else of the folder)."""
    if not out.is_dir():
        return []

    def ours(d: Path) -> bool:
        if d.name in OUTPUT_FILES:
            return d.is_file()
        return (d.name in OUTPUT_DIRS or d.name.startswith(OUTPUT_PREFIXES)) and d.is_dir() and not d.is_symlink()

    return sorted(d for d in out.iterdir() if ours(d))


def _has_samples(out: Path) -> bool:
    """Whether a run regenerated any image in ``out``."""
    return any(d.is_dir() and d.name.startswith("snr_") and any(f.is_file() for f in d.rglob("*.png"))
               for d in _outputs(out))


def _discard(out: Path) -> None:
    """Remove what a run writes (and nothing else) from ``out``."""
    for d in _outputs(out):
        if d.is_dir():
            shutil.rmtree(d)
        else:
            d.unlink()


def prepare_folder(out: Path, settings: dict[str, Any], fresh: bool = False) -> str:
    """Make ``out`` ready for a run with ``settings`` and write its ``settings.json``.

    Returns ``"resume"`` (the folder's run has the same identity: its finished images are kept)
    or ``"start"`` (a new folder; ``fresh``; or the folder's earlier run, of other settings,
    regenerated no image: what it wrote is removed).

    Raises:
        ValueError: ``out`` cannot be written, or holds samples of another identity (the message
            names the differing settings), or sample outputs without a settings record.
    """
    from ..models.io import atomic_write, read_json

    probe_out_dir(out)
    path = out / "settings.json"
    if path.is_file() and not fresh:
        try:
            old = read_json(path)
        except ValueError as e:
            raise ValueError(f"{e}: {out} does not hold a readable sample run; choose another --out, "
                             "or add --fresh to discard its samples") from None
        mine, theirs = _identity(settings), _identity(old if isinstance(old, dict) else {})
        if mine == theirs:
            return "resume"
        if _has_samples(out):
            diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise ValueError(f"{out} holds samples made with other settings (differing: {', '.join(diff)}); "
                             "choose another --out, or add --fresh to discard them")
    elif not path.is_file() and _outputs(out) and not fresh:
        found = ", ".join(d.name + ("/" if d.is_dir() else "") for d in _outputs(out))
        raise ValueError(f"{out} holds sample outputs without a settings.json ({found}: an older version or "
                         "another program wrote them); choose another --out, or add --fresh to discard them")
    _discard(out)
    atomic_write(path, lambda p: Path(p).write_text(json.dumps(settings, indent=2) + "\n"))
    return "start"


def _read_item(dataset: Any, i: int) -> dict[str, Any]:
    """``dataset[i]``; an unreadable image file becomes a ValueError naming it."""
    try:
        return dataset[i]
    except (OSError, SyntaxError) as e:  # PIL: truncated / corrupt files (messages rarely name them)
        samples = getattr(dataset, "samples", None)
        files = [f for f in ((samples[i].image, samples[i].label, samples[i].instance) if samples else ())
                 if f is not None]
        from PIL import Image

        for f in files:
            try:
                with Image.open(f) as im:
                    im.load()
            except Exception as why:  # noqa: BLE001 - any failure names the file
                raise ValueError(f"cannot read {f}: {why}") from None
        raise ValueError(f"cannot read item {i} ({', '.join(map(str, files)) or 'no files'}): {e}") from None


class _StepProgress:
    """A diffusion process whose ``sample`` also reports each step to ``on_step`` (for a per-step
    progress bar inside a long sample); every other attribute is the wrapped process's."""

    def __init__(self, diffusion: Any, on_step: Any) -> None:
        self._diffusion, self._on_step = diffusion, on_step

    def __getattr__(self, name: str) -> Any:
        return getattr(self._diffusion, name)

    def sample(self, *args: Any, callback: Any = None, **kwargs: Any) -> Any:
        def report(i: int, x: Any, out: Any) -> None:
            self._on_step(i)
            if callback is not None:
                callback(i, x, out)

        return self._diffusion.sample(*args, callback=report, **kwargs)


def main(argv: Sequence[str] | None = None) -> int:
    import sys
    argv = list(sys.argv[1:] if argv is None else argv)
    from .train import SPIC_FLAGS
    if any(a.split("=")[0] in SPIC_FLAGS for a in argv):  # SPIC's image_sample.py command
        from .sample_spic import main as sample_spic
        return int(sample_spic(argv) or 0)
    parser = build_parser()
    args = parser.parse_args(join_negative_values(argv, ("--snr",)))
    s = _resolve(parser, args)
    out: Path = s["out"]
    check_out_dir(out)  # before any slow work; probed for writing before the run starts
    from ..data import DATASET_INFO

    if not args.dataset_mode:
        _fail(parser, f"--dataset_mode is required: one of {sorted(DATASET_INFO)}")
    if args.dataset_mode not in DATASET_INFO:
        _fail(parser, f"--dataset_mode {args.dataset_mode!r}: use one of {sorted(DATASET_INFO)}")
    if args.dataset_mode != "synthetic" and not args.data_dir:
        _fail(parser, f"--data_dir is required for --dataset_mode {args.dataset_mode}")
    if args.dataset_mode == "synthetic" and args.data_dir:
        _fail(parser, "--data_dir is not used by --dataset_mode synthetic (the scenes are rendered); drop it")

    import numpy as np
    import torch

    from ..data import build_dataset
    from ..imageio import save_png, to_uint8
    from ..models.io import atomic_write, file_sha256
    from ..semantics import colorize
    from ..systems.gesco import GESCO

    device = resolve_device(args.device)
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
    model, diffusion, num_classes, weights = _load_model(parser, args)
    model.to(device).eval()
    if args.verbose:
        print(model)

    multiple = model.config.size_multiple
    if args.dataset_mode == "synthetic":
        h, w = args.synthetic_size
        if h % multiple or w % multiple:
            _fail(parser, f"--synthetic_size {h}x{w}: this model needs height and width that are multiples "
                          f"of {multiple}")
        dataset = build_dataset("synthetic", num_images=s["num"], height=h, width=w, seed=10_000 + args.seed)
        source = {"kind": "synthetic", "height": h, "width": w, "seed": 10_000 + args.seed}
    else:
        # as the reference, images are resized to the model's image_size (short side)
        kw: dict[str, Any] = {"split": args.data_split, "train": False, "size": model.config.image_size}
        if args.dataset_mode == "folder":
            kw["num_classes"] = num_classes
        dataset = build_dataset(args.dataset_mode, root=args.data_dir, **kw)
        source = {"kind": args.dataset_mode, "split": args.data_split, "size": model.config.image_size}
    if len(dataset) == 0:
        raise ValueError(f"--dataset_mode {args.dataset_mode}: no items to sample")
    try:
        system = GESCO(model, diffusion, num_classes, channel=args.channel, pool=s["pool"],
                       k_factor=args.k_factor, guidance_scale=args.s, method=s["method"], eta=s["eta"],
                       clip_denoised=args.clip_denoised, instance_mode=args.instance_mode, autocast=autocast)
    except ValueError as e:
        _fail(parser, str(e))
    with_edges = system.has_edges
    n = min(s["num"], len(dataset))
    names = item_names(dataset, n)
    if getattr(dataset, "samples", None) is not None:
        # read every item once before anything is written: a corrupt file or a label outside the
        # model's classes stops the run here, not after hours, and leaves the folder untouched
        from tqdm.auto import tqdm

        sizes: dict[tuple[int, int], int] = {}
        for i in tqdm(range(n), desc="checking data", unit="item", disable=args.no_progress, leave=False):
            hw = tuple(_read_item(dataset, i)["label"].shape[-2:])
            if hw[0] % multiple or hw[1] % multiple:
                raise ValueError(f"{dataset.samples[i].image}: {hw[0]}x{hw[1]} after resizing to --image_size "
                                 f"{model.config.image_size}; this model needs multiples of {multiple}")
            sizes.setdefault(hw, i)
            if len(sizes) > 1 and args.batch_size > 1:
                other = next(k for k in sizes if k != hw)
                raise ValueError(f"{dataset.samples[i].image} is {hw[0]}x{hw[1]} but "
                                 f"{dataset.samples[sizes[other]].image} is {other[0]}x{other[1]} after resizing: "
                                 "a batch needs one size; use --batch_size 1")

    settings = {
        "command": "gensemcom sample", "argv": list(sys.argv[1:] if argv is None else argv),
        "seed": args.seed, "dataset": args.dataset_mode, "data": source,
        "items": data_identity(dataset, names), "num_samples": n,
        "batch_size": args.batch_size, "guidance_scale": args.s, "method": s["method"], "eta": s["eta"],
        "clip_denoised": args.clip_denoised, "channel": args.channel, "pool": s["pool"],
        "k_factor": args.k_factor if args.channel == "rician" else None,
        "snr_db": [("inf" if math.isinf(v) else v) for v in s["snrs"]],
        "num_classes": num_classes, "checkpoint_sha256": file_sha256(weights),
        "model": model.config.to_dict(), "diffusion": diffusion.config.to_dict() if diffusion.config else None,
        "instance_mode": args.instance_mode, "autocast": str(autocast) if autocast else None,
        "device": device.type,
        "paths": {"weights": str(weights), "data_dir": args.data_dir or None},
        "notes": [fp16_note] if fp16_note else [],
    }
    prepare_folder(out, settings, fresh=args.fresh)

    palette = args.dataset_mode if args.dataset_mode in ("synthetic", "cityscapes") else None
    results: dict[str, Any] = {"settings": settings, "per_snr": {}}
    keys = ["inf" if math.isinf(v) else f"{v:g}" for v in s["snrs"]]
    uses: dict[str, list[float]] = {k: [] for k in keys}
    from tqdm.auto import tqdm

    bar = tqdm(total=n * len(keys), desc="sampling", unit="img", disable=args.no_progress, position=0)
    steps = tqdm(total=diffusion.num_timesteps, desc="  diffusion steps", unit="step", leave=False,
                 disable=args.no_progress, position=1)
    if not args.no_progress:  # a long sample (the seed's default: 1000 DDPM steps) shows its steps
        system.diffusion = _StepProgress(diffusion, lambda i: steps.update(1))
    try:
        for b0 in range(0, n, args.batch_size):
            idx = list(range(b0, min(b0 + args.batch_size, n)))
            items = [_read_item(dataset, i) for i in idx]  # read once, sent at every SNR
            batch_names = [names[i] for i in idx]
            labels = torch.stack([it["label"] for it in items])
            inst = torch.stack([it["instance"] for it in items]) if with_edges else None
            y = system.transmit(labels, inst)
            for j, name in enumerate(batch_names):
                if not (out / "original" / f"{name}.png").is_file():
                    save_png(out / "original" / f"{name}.png", to_uint8(items[j]["image"]))
                    save_png(out / "label" / f"{name}.png", colorize(labels[j:j + 1], palette)[0])
            for si, (snr, key) in enumerate(zip(s["snrs"], keys)):
                gen = torch.Generator().manual_seed(args.seed * 1_000_003 + b0 * 1009 + si)
                sent = system.send(y, snr, gen)
                uses[key].extend(torch.as_tensor(sent.channel_uses_per_pixel, dtype=torch.float64).flatten().tolist())
                todo = [j for j, name in enumerate(batch_names) if not (out / f"snr_{key}" / f"{name}.png").is_file()]
                if todo:
                    steps.reset(total=diffusion.num_timesteps)
                    steps.set_description(f"  SNR {key}, images {b0 + 1}-{b0 + len(idx)}: diffusion steps")
                    x0 = system.regenerate(sent.received, gen)  # GESCO's receiver: x_T, then sampling
                    received_ids = sent.received[:, :num_classes].argmax(1)
                    for j in todo:  # the others were finished by an earlier (killed) run: same numbers
                        save_png(out / f"snr_{key}" / f"{batch_names[j]}.png", to_uint8(x0[j]))
                        save_png(out / f"received_snr_{key}" / f"{batch_names[j]}.png",
                                 colorize(received_ids[j:j + 1], palette)[0])
                bar.update(len(idx))
    finally:
        steps.close()
        bar.close()
    for key in keys:
        results["per_snr"][key] = {"channel_uses_per_pixel": float(np.mean(uses[key])) if uses[key] else None,
                                   "folder": f"snr_{key}"}
    atomic_write(out / "results.json", lambda p: Path(p).write_text(json.dumps(results, indent=2) + "\n"))
    print(f"wrote {n} images x {len(s['snrs'])} SNR(s) to {out}")
    return 0
