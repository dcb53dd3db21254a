"""``gensemcom train``: train a GESCO (SDM semantic diffusion) model.

Accepts GESCO's ``image_train.py`` command line verbatim (``--data_dir --dataset_mode --lr
--batch_size --microbatch --ema_rate --drop_rate --log_interval --save_interval --use_fp16
--add_noise`` and the model/diffusion flags), plus our own options. Every flag takes effect or
is rejected with an error; none is silently ignored. Examples::

    gensemcom train --dataset_mode synthetic --out runs/tiny --train_steps 2000 \\
        --image_size 32 --num_channels 32 --channel_mult 1,2,2 --attention_resolutions 8 \\
        --num_head_channels 32 --num_res_blocks 1 --learn_sigma True --synthetic_size 32x64

    torchrun --nproc_per_node 2 -m gensemcom train ...    # data-parallel

Differences from the reference, on purpose: ``one_hot_label`` defaults to True (GESCO's
``image_train.py`` means True but its defaults overwrite it with False, training a 2-channel
model its own sampler cannot load); the loss defaults to GESCO's noise-MSE (``--loss mse``), and
``--loss hybrid`` trains SDM's MSE + variational bound (needed for a useful DDPM variance).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from collections.abc import Sequence
from typing import Any

from ..legacy import LEGACY_DEFAULTS, boolean
from .common import (LEGACY_FLAG_HELP, TRAIN_FLAG_HELP, HelpFormatter, common_parser, finite_float,
                     nonnegative_int, plain, positive_int, renamed_option)

#: GESCO image_train.py flags that are not model/diffusion flags, with their defaults.
GESCO_TRAIN_DEFAULTS: dict[str, Any] = {
    "data_dir": "", "dataset_mode": "", "schedule_sampler": "uniform", "lr": 1e-4, "weight_decay": 0.0,
    "lr_anneal_steps": 0, "batch_size": 1, "microbatch": -1, "ema_rate": "0.9999", "drop_rate": 0.0,
    "log_interval": 10, "save_interval": 10000, "resume_checkpoint": "", "use_fp16": False,
    "fp16_scale_growth": 1e-3, "is_train": True, "checkpoint_dir": "", "snr": 100, "add_noise": False,
    "noise_to": "semantics",
}

#: argparse types of the GESCO flags that need more than their default's type
_TRAIN_TYPES: dict[str, Any] = {"lr": finite_float, "weight_decay": finite_float, "batch_size": positive_int,
                                "drop_rate": finite_float, "log_interval": positive_int,
                                "save_interval": positive_int, "fp16_scale_growth": finite_float,
                                "lr_anneal_steps": nonnegative_int}


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 64x128, got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"height and width must be at least 1, got {text!r}")
    return h, w


def _range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI in dB, e.g. 0,20, got {text!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise argparse.ArgumentTypeError(f"expected finite LO <= HI, got {text!r}")
    return lo, hi


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``gensemcom train`` (GESCO's image_train.py flags and ours)."""
    doc = __doc__.split("\n\n")
    p = argparse.ArgumentParser(
        prog="gensemcom train", usage="%(prog)s [options]   (GESCO's image_train.py command lines work as they are)",
        description=plain(doc[0]), epilog=plain("\n\n".join(doc[1:])), formatter_class=HelpFormatter,
        parents=[common_parser("run folder: checkpoints, log and the model (default: --checkpoint_dir or "
                               "runs/gesco)")])
    g = p.add_argument_group("GESCO image_train.py flags")
    for k, v in GESCO_TRAIN_DEFAULTS.items():
        kind = _TRAIN_TYPES.get(k, boolean if isinstance(v, bool) else type(v))
        g.add_argument(f"--{k}", type=kind, default=v, help=TRAIN_FLAG_HELP[k])
    m = p.add_argument_group("model and diffusion flags (guided-diffusion names)")
    for k, v in LEGACY_DEFAULTS.items():
        if k in GESCO_TRAIN_DEFAULTS:
            continue
        default, text = v, LEGACY_FLAG_HELP[k]
        if k == "one_hot_label":  # see the module docstring
            default, text = True, text + "; True here, unlike the reference's default"
        m.add_argument(f"--{k}", type=boolean if isinstance(v, bool) else type(v), default=default, help=text)
    o = p.add_argument_group("gensemcom options")
    o.add_argument("--train_steps", type=positive_int, default=None,
                   help="optimiser steps (default: --lr_anneal_steps, or 10000)")
    o.add_argument("--steps", dest="train_steps", type=positive_int, help=argparse.SUPPRESS,
                   action=renamed_option("--steps", "--train_steps",
                                         "--steps means sampling steps in evaluate and demo"))
    o.add_argument("--layout", choices=["sdm", "gesco"], default="sdm",
                   help="sdm: no unused parameters (for new models); gesco: with GESCO's "
                        "unused encoder spade_norm, for checkpoints GESCO's code must load")
    o.add_argument("--spade_hidden", type=positive_int, default=128, help="hidden width of the SPADE MLPs")
    o.add_argument("--loss", choices=["mse", "hybrid"], default="mse",
                   help="mse: GESCO's noise-MSE; hybrid: SDM's MSE + variational bound")
    o.add_argument("--noise_aware", choices=["none", "gesco", "channel"], default=None,
                   help="noise-aware training: the map through a channel (default none; --add_noise True is gesco)")
    o.add_argument("--train_channel", choices=["awgn", "rayleigh"], default="awgn",
                   help="channel of --noise_aware channel")
    o.add_argument("--snr_range", type=_range, default="0,20", help="SNR range LO,HI in dB of --noise_aware channel")
    o.add_argument("--amp", choices=["none", "bf16", "fp16"], default=None,
                   help="mixed precision on a GPU (default: fp16 with --use_fp16 True, else none)")
    o.add_argument("--num_workers", type=int, default=0, help="DataLoader worker processes")
    o.add_argument("--grad_clip", type=finite_float, default=0.0, help="clip the gradient norm to this (0: off)")
    o.add_argument("--instance_mode", choices=["exact", "reference_8bit"], default="exact",
                   help="instance ids at full precision, or clipped to 8 bits as the reference loads them")
    o.add_argument("--synthetic_size", type=_size, default="64x128", help="HxW of synthetic scenes")
    o.add_argument("--synthetic_count", type=positive_int, default=2000, help="number of synthetic scenes")
    o.add_argument("--keep_checkpoints", type=positive_int, default=2, help="checkpoints kept in the run folder")
    return p


def _reject(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flags of the reference that would have no effect here are refused, not ignored."""
    if args.schedule_sampler != "uniform":
        parser.error(f"--schedule_sampler {args.schedule_sampler}: only 'uniform' is implemented")
    if "," in args.ema_rate:
        parser.error("--ema_rate: one EMA rate per run is supported (got a list)")
    if args.noise_to != "semantics":
        parser.error("--noise_to: only 'semantics' exists (the reference's other branch is dead code)")
    if args.snr != 100:
        parser.error("--snr has no effect in GESCO training; use --noise_aware channel --snr_range LO,HI")
    if args.fp16_scale_growth != 1e-3 and not args.use_fp16:
        parser.error("--fp16_scale_growth needs --use_fp16 True")
    if not args.is_train:
        parser.error("--is_train False: use `gensemcom sample` to sample")


#: flags only SPIC's commands have: their presence routes the command to SPIC's
SPIC_FLAGS = ("--large_size", "--small_size", "--max_iter_time", "--compression_type", "--compression_level")


def main(argv: Sequence[str] | None = None) -> int:
    import sys
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--config" or a.startswith("--config=") for a in argv):  # Diff-JSCC's yaml
        from .train_diffjscc import main as train_diffjscc
        return train_diffjscc(argv)
    if any(a.split("=")[0] in SPIC_FLAGS for a in argv):  # SPIC's image_train.py command
        from .train_spic import main as train_spic
        return int(train_spic(argv) or 0)
    parser = build_parser()
    args = parser.parse_args(argv)
    _reject(parser, args)
    import torch

    from ..legacy import config_from_flags
    from ..train import TrainConfig, Trainer
    from .common import check_out_dir, probe_out_dir, resolve_device

    out_dir = args.out or args.checkpoint_dir or "runs/gesco"
    check_out_dir(out_dir)
    device = resolve_device(args.device) if args.device else None
    if not args.dataset_mode:
        parser.error("--dataset_mode is required (cityscapes, ade20k, coco, folder, synthetic)")
    from ..data import DATASET_INFO, build_dataset

    if args.dataset_mode not in DATASET_INFO:
        parser.error(f"--dataset_mode {args.dataset_mode!r}: use one of {sorted(DATASET_INFO)}")
    info = DATASET_INFO[args.dataset_mode]
    flags = {k: getattr(args, k) for k in LEGACY_DEFAULTS}
    flags["class_cond"] = True
    if args.dataset_mode == "synthetic":
        h, w = args.synthetic_size
        dataset = build_dataset("synthetic", num_images=args.synthetic_count, height=h, width=w, seed=args.seed)
        flags["num_classes"] = dataset.num_classes
    else:
        if not args.data_dir:
            parser.error(f"--data_dir is required for --dataset_mode {args.dataset_mode}")
        kwargs: dict[str, Any] = {"split": "train", "train": True, "size": args.image_size,
                                  "seed": args.seed}
        if args.dataset_mode == "folder":
            kwargs["num_classes"] = args.num_classes
        dataset = build_dataset(args.dataset_mode, root=args.data_dir, **kwargs)
        if args.dataset_mode != "folder" and args.num_classes != info["num_classes"]:
            parser.error(f"--num_classes {args.num_classes} but {args.dataset_mode} has {info['num_classes']}")
    model_cfg, diff_cfg = config_from_flags(flags, reference="sdm" if args.loss == "hybrid" else "gesco")
    model_cfg = dataclasses.replace(model_cfg, layout=args.layout, spade_hidden=args.spade_hidden)
    diff_cfg.respacing = ""  # training always uses the full process
    noise_aware = args.noise_aware or ("gesco" if args.add_noise else "none")
    if args.add_noise and noise_aware != "gesco":
        parser.error("--add_noise True means --noise_aware gesco")
    amp = args.amp or ("fp16" if args.use_fp16 else "none")
    batch, micro = args.batch_size, args.microbatch
    grad_accum = 1 if micro in (-1, 0) or micro >= batch else batch // micro
    if micro not in (-1, 0) and micro < batch and batch % micro:
        parser.error(f"--batch_size {batch} is not a multiple of --microbatch {micro}")
    steps = args.train_steps or (args.lr_anneal_steps if args.lr_anneal_steps > 0 else 10000)
    cfg = TrainConfig(
        out_dir=out_dir, steps=steps, batch_size=batch,
        grad_accum=grad_accum, lr=args.lr, weight_decay=args.weight_decay, ema_rate=float(args.ema_rate),
        cond_drop_prob=args.drop_rate, noise_aware=noise_aware, train_channel=args.train_channel,
        snr_range_db=args.snr_range, amp=amp,
        save_interval=args.save_interval, log_interval=args.log_interval, seed=args.seed,
        num_workers=args.num_workers, instance_mode=args.instance_mode, grad_clip=args.grad_clip,
        keep_checkpoints=args.keep_checkpoints)

    probe_out_dir(out_dir)  # everything is checked: say now, not at the first checkpoint, if it cannot be written
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        if device is not None and device.type == "cuda" and device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    try:
        trainer = Trainer(model_cfg, diff_cfg, dataset, flags["num_classes"], cfg, device=device)
        if args.resume_checkpoint:
            from ..models.io import load_checkpoint

            if trainer.latest_checkpoint() is None:
                load_checkpoint(trainer.model, args.resume_checkpoint)
                trainer.ema.load_state_dict(trainer.model.state_dict())
        result = trainer.train(progress=not args.no_progress)
        if trainer.rank == 0:
            print(json.dumps({"out": cfg.out_dir, **result}))
    finally:
        if distributed:
            torch.distributed.destroy_process_group()
    return 0
