"""What every command shares: the parent parser (``--device --seed --no-progress --out``), a help
formatter that shows defaults, argument types that reject nonsense at parse time, and checks of the
device and the output folder that turn the usual faults into one-line errors.

Nothing here imports torch at module level: ``gensemcom CMD --help`` must answer at once.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

__all__ = ["HelpFormatter", "plain", "common_parser", "resolve_device", "check_out_dir", "probe_out_dir",
           "snr_list", "positive_int", "nonnegative_int", "finite_float", "join_negative_values",
           "add_alias", "renamed_option"]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks and appends ``(default: X)`` to every option whose
    default says something (not None, not an empty string, not a flag's False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        d = action.default
        if ("%(default)" in text or d is None or d is argparse.SUPPRESS or d == "" or d is False
                or not action.option_strings or isinstance(action, argparse._StoreConstAction)):
            return text
        return text + " (default: %(default)s)"


_ROLE = re.compile(r":[a-z]+:`(~?)([^`]+)`")


def plain(text: str) -> str:
    """A docstring paragraph as plain text for ``--help``: reST roles and literals unwrapped
    (``:func:`x``` -> ``x``, ````x```` -> ``x``), ``::`` -> ``:``."""
    text = _ROLE.sub(lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2), text)
    return text.replace("``", "").replace("::", ":")


def common_parser(out_help: str) -> argparse.ArgumentParser:
    """The options every command shares, as a parent parser (``add_help=False``)::

        p = argparse.ArgumentParser(prog=..., parents=[common_parser("run folder")])
        p.set_defaults(out="runs/x")        # a command's own default folder, if any

    ``--device`` (default None: cuda when available; check it with :func:`resolve_device`),
    ``--seed`` (int, 0), ``--no-progress`` (``--no_progress`` is accepted, not shown) and ``--out``
    (default None; ``out_help`` describes it). Parsed names: ``device``, ``seed``, ``no_progress``, ``out``.
    """
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common options")
    g.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    g.add_argument("--seed", type=int, default=0, help="seed of every random draw of the run")
    g.add_argument("--no-progress", dest="no_progress", action="store_true", help="no progress bars")
    g.add_argument("--no_progress", dest="no_progress", action="store_true", help=argparse.SUPPRESS)
    g.add_argument("--out", default=None, help=out_help)
    return p


def add_alias(parser: argparse.ArgumentParser | Any, alias: str, dest: str, **kwargs: Any) -> None:
    """A second spelling of an option, accepted but not shown in ``--help``."""
    parser.add_argument(alias, dest=dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kwargs)


def renamed_option(old: str, new: str, why: str = "") -> type[argparse.Action]:
    """An argparse action for a renamed option: stores the value under the new name's dest and
    prints a note to stderr (so old scripts keep working while they are updated)."""

    class _Renamed(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):  # noqa: D102
            print(f"note: {old} is now spelled {new}" + (f" ({why})" if why else ""), file=sys.stderr)
            setattr(namespace, self.dest, values)

    return _Renamed


# --------------------------------------------------------------------------------------------
# argument types (argparse reports their ArgumentTypeError message as "argument --x: MESSAGE")


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def nonnegative_int(text: str) -> int:
    """An integer >= 0."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {v}")
    return v


def finite_float(text: str) -> float:
    """A finite real number (NaN and infinities rejected)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return v


def snr_list(text: str) -> list[float]:
    """``"-5,0,5"`` / ``"20"`` / ``"inf"`` -> SNRs in dB; NaN, empty entries and ``-inf`` rejected."""
    out = []
    for s in str(text).split(","):
        s = s.strip().lower()
        if s in ("inf", "+inf", "infinity", "+infinity"):
            out.append(math.inf)
            continue
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected dB values separated by commas, e.g. -5,0,5 or inf") from None
        if math.isnan(v) or v == -math.inf:
            raise argparse.ArgumentTypeError(f"{text!r}: {s} is not an SNR (use dB values or inf)")
        out.append(v)
    return out


def join_negative_values(argv: Sequence[str] | None, options: Sequence[str]) -> list[str]:
    """``--snr -5,0,10`` -> ``--snr=-5,0,10``: argparse would take ``-5,0,10`` for an option."""
    argv = list(sys.argv[1:] if argv is None else argv)
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in options and i + 1 < len(argv) and argv[i + 1].startswith("-") and argv[i + 1][1:2].isdigit():
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


# --------------------------------------------------------------------------------------------
# device and output folder


def resolve_device(spec: str | None) -> Any:
    """``--device`` -> ``torch.device``; None picks cuda when available. ValueError (one line) for
    a name torch does not know, or cuda / mps on a machine without it."""
    import torch

    if spec is None or spec == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"--device {spec!r}: not a device (use cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {spec}: CUDA is not available on this machine (torch "
                             f"{torch.__version__}, built {'with' if torch.version.cuda else 'without'} "
                             "CUDA); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"--device {spec}: MPS is not available on this machine; use --device cpu")
    elif device.type != "cpu":
        raise ValueError(f"--device {spec!r}: use cpu, cuda or cuda:N")
    return device


def check_out_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Cheap check before any work: ``path`` is a folder or can become one (no file in the way,
    parent folders not files). Writes nothing; :func:`probe_out_dir` checks writing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path}: is a file, not a folder")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{option} {path}: {parent} is a file, not a folder")
            break
    return path


def probe_out_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Create ``path`` (with parents) and write and remove a file in it; ValueError naming the
    folder when that is not permitted (read-only, no permission, no space)."""
    path = check_out_dir(path, option)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path, prefix=".write-test.")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise ValueError(f"{option} {path}: cannot write there ({e.strerror or e})") from None
    return path


# --------------------------------------------------------------------------------------------
# help texts of the seed repositories' flags (guided-diffusion / SDM / GESCO names)

#: ``model_and_diffusion_defaults()`` flags (see :data:`gensemcom.legacy.LEGACY_DEFAULTS`).
LEGACY_FLAG_HELP: dict[str, str] = {
    "image_size": "short side of the images the network sees, in pixels",
    "num_classes": "classes of the semantic map (35 Cityscapes, 151 ADE20K, 183 COCO-Stuff)",
    "num_channels": "base width of the U-Net (model_channels)",
    "num_res_blocks": "residual blocks per U-Net level",
    "num_heads": "attention heads (when num_head_channels is -1)",
    "num_heads_upsample": "attention heads in the decoder (-1: num_heads)",
    "num_head_channels": "channels per attention head (-1: use num_heads)",
    "attention_resolutions": "downsampling factors image_size/r with attention, comma-separated",
    "channel_mult": "width multiplier per level, comma-separated (empty: the reference's choice for image_size)",
    "dropout": "dropout rate in the residual blocks",
    "class_cond": "condition on a semantic map (the SDM/GESCO network needs True)",
    "use_checkpoint": "gradient checkpointing (less memory, slower training)",
    "use_scale_shift_norm": "FiLM-style time conditioning (scale and shift) in the residual blocks",
    "resblock_updown": "residual blocks for up- and downsampling",
    "use_fp16": "half precision on a GPU (autocast float16); ignored with a note on CPU",
    "use_new_attention_order": "split q, k, v before the heads (the 'new' attention order)",
    "no_instance": "no instance-edge channel in the semantic map",
    "one_hot_label": "one-hot semantic map input (False: a 2-channel raw id + edge input, GESCO issue #13)",
    "unet_model": "network variant (only 'unet' exists)",
    "learn_sigma": "the network also predicts the variance (6 output channels)",
    "diffusion_steps": "steps of the diffusion process T",
    "noise_schedule": "beta schedule: linear or cosine",
    "timestep_respacing": "sampling steps: e.g. ddim25, or counts per section such as 250 (empty: all T)",
    "use_kl": "train on the variational bound only (not supported)",
    "predict_xstart": "the network predicts x_0 instead of the noise",
    "rescale_timesteps": "feed timesteps scaled to 0..1000 to the network",
    "rescale_learned_sigmas": "the hybrid loss with the rescaled variational term",
}

#: GESCO ``image_sample.py`` flags that are not model/diffusion flags.
SAMPLE_FLAG_HELP: dict[str, str] = {
    "data_dir": "dataset root (not with --dataset_mode synthetic)",
    "dataset_mode": "cityscapes, ade20k, coco, folder or synthetic",
    "clip_denoised": "clip each predicted x_0 to [-1, 1]",
    "num_samples": "number of images (at most the dataset's size)",
    "batch_size": "images per batch",
    "use_ddim": "DDIM instead of ancestral DDPM sampling (default False)",
    "model_path": "a released GESCO/SDM checkpoint (.pt or .safetensors); give the model flags too",
    "results_path": "output folder (same as --out)",
    "is_train": "GESCO's train/test switch (only False here; training is `gensemcom train`)",
    "s": "classifier-free guidance scale (off at 1)",
    "snr": "SNR(s) in dB, comma-separated, e.g. -5,0,5 or inf (100 means noiseless, as GESCO)",
    "pool": "receiver denoising of the map: fds (= max = None, GESCO's avg3->max3), med, mean or none",
    "add_noise": "GESCO's noise-aware training switch (training only: refused here)",
    "noise_to": "where the channel noise goes (only 'semantics')",
}

#: GESCO ``image_train.py`` flags that are not model/diffusion flags.
TRAIN_FLAG_HELP: dict[str, str] = {
    "data_dir": "dataset root (not with --dataset_mode synthetic)",
    "dataset_mode": "cityscapes, ade20k, coco, folder or synthetic",
    "schedule_sampler": "timestep sampler (only 'uniform')",
    "lr": "learning rate (AdamW)",
    "weight_decay": "AdamW weight decay",
    "lr_anneal_steps": "optimiser steps with a linearly decaying learning rate (0: constant, 10000 steps)",
    "batch_size": "images per optimiser step (over all processes)",
    "microbatch": "images per forward pass; gradients accumulate up to --batch_size (-1: no accumulation)",
    "ema_rate": "rate of the exponential moving average of the weights",
    "drop_rate": "probability of dropping the map for classifier-free guidance",
    "log_interval": "steps between log lines",
    "save_interval": "steps between checkpoints",
    "resume_checkpoint": "start from these weights (a run folder with checkpoints resumes by itself)",
    "use_fp16": "half precision on a GPU (same as --amp fp16)",
    "fp16_scale_growth": "loss-scale growth with --use_fp16 (GESCO's value only)",
    "is_train": "GESCO's train/test switch (only True here)",
    "checkpoint_dir": "run folder (same as --out)",
    "snr": "GESCO's training SNR flag (no effect there: refused unless 100; see --noise_aware)",
    "add_noise": "GESCO's noise-aware training (same as --noise_aware gesco)",
    "noise_to": "where the training noise goes (only 'semantics')",
}
