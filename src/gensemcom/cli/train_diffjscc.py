"""``gensemcom train_diffjscc`` (also ``gensemcom train --config FILE.yaml``): train a Diff-JSCC
model from the seed repository's yaml config, on the platform trainer.

The yaml's model, diffusion and training keys (``configs/cifar10.yaml`` of wangxuuu/Diff_JSCC)
are read as they are; by default the system is trained as a real communication system (the
latent power-normalised and sent through ``--channel`` at an SNR drawn from ``--snr_range`` per
image); ``--compat diffjscc`` trains the published channel-free model. The encoder is trained end
to end, inside the EMA and the checkpoints; ``torchrun`` gives data parallelism. Examples::

    gensemcom train --config configs/cifar10.yaml --data cifar10:/data/cifar-10-batches-py --out runs/dj
    gensemcom train_diffjscc --config cifar10.yaml --data fashion-mnist --train_steps 20000 --out runs/fm
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .common import HelpFormatter, common_parser, positive_int


def _range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH in dB, e.g. 0,20, got {text!r}") from None
    if not lo <= hi:
        raise argparse.ArgumentTypeError(f"LOW must not exceed HIGH, got {text!r}")
    return lo, hi


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gensemcom train_diffjscc", description=__doc__, formatter_class=HelpFormatter,
                                parents=[common_parser("run folder (checkpoints, log.jsonl, model/)")])
    p.add_argument("--config", required=True, help="the seed's yaml file (configs/cifar10.yaml keys)")
    p.add_argument("--data", default="fashion-mnist",
                   help="cifar10:DIR (the python-pickle batches or the release .tar.gz) or fashion-mnist[:DIR] "
                        "(Debian's dataset-fashion-mnist by default), padded to 32x32")
    p.add_argument("--train_steps", type=positive_int, default=None,
                   help="optimiser steps (default: the yaml's lr_anneal_steps)")
    p.add_argument("--batch_size", type=positive_int, default=None, help="global batch (default: the yaml's)")
    p.add_argument("--compat", choices=("none", "diffjscc"), default="none",
                   help="none: the latent sent through the channel; diffjscc: the published channel-free training")
    p.add_argument("--channel", choices=("awgn", "rayleigh"), default="awgn", help="training channel")
    p.add_argument("--snr_range", type=_range, default=(0.0, 20.0), help="training SNRs LOW,HIGH (dB, per image)")
    p.add_argument("--save_interval", type=positive_int, default=1000, help="optimiser steps between checkpoints")
    return p


def _dataset(spec: str):
    kind, _, root = spec.partition(":")
    if kind == "cifar10":
        if not root:
            raise ValueError("--data cifar10:DIR needs the folder of the CIFAR-10 python batches")
        from ..data.cifar10 import CIFAR10
        return CIFAR10(root, split="train")
    if kind == "fashion-mnist":
        from ..data.fashion_mnist import FashionMNIST
        return FashionMNIST(root or None, split="train")
    raise ValueError(f"--data {spec!r}: use cifar10:DIR or fashion-mnist[:DIR]")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..systems.diffjscc import diffjscc_trainer
    from .common import check_out_dir, resolve_device

    out = args.out or "runs/diffjscc"
    check_out_dir(out)
    device = resolve_device(args.device) if args.device else None
    train: dict = {"compat": args.compat, "save_interval": args.save_interval}
    if args.compat == "none":
        train.update(train_channel=args.channel, train_snr_db=args.snr_range)
    if args.train_steps is not None:
        train["steps"] = args.train_steps
    if args.batch_size is not None:
        train["batch_size"] = args.batch_size
    if args.seed is not None:
        train["seed"] = args.seed
    trainer = diffjscc_trainer(args.config, _dataset(args.data), out, train=train, device=device)
    result = trainer.train(progress=not args.no_progress)
    print(f"trained to step {result['step']}; model in {out}/model (load with DiffJSCC.from_pretrained)")
    return 0
