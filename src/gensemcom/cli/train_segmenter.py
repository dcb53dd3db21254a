"""``train_segmenter``: train the TinySegmenter on synthetic street scenes.

::

    gensemcom train_segmenter --out runs/segmenter --train-steps 800 --batch-size 16

Cross-entropy (pixels labelled 255 ignored) on scenes rendered on the fly from a virtual dataset
of ``--num-scenes`` items, with light augmentation so the network also segments degraded and
generated images: horizontal flip, brightness and contrast jitter, a mild random blur and
Gaussian noise (``--no-augment`` turns it off). The run resumes from its last checkpoint when
``--out`` holds one. At the end it writes ``OUT/model`` (safetensors + config.json, fp16 by
default) and ``OUT/eval.json`` (also copied into the model folder): mIoU, per-class IoU and pixel
accuracy of the saved model on 64 held-out clean scenes.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import (HelpFormatter, common_parser, finite_float, nonnegative_int, plain, positive_int,
                     renamed_option)

if TYPE_CHECKING:  # torch is imported after parsing, so that --help answers at once
    import torch

    from ..metrics import ConfusionMatrix

__all__ = ["main", "build_parser", "augment", "iou_report"]

EVAL_SEED_OFFSET = 2000
IGNORE_INDEX = 255


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW (e.g. 64x128), got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"height and width must be at least 1, got {text!r}")
    return h, w


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints (e.g. 16,32,64,96), got {text!r}") from None
    if min(widths) < 1:
        raise argparse.ArgumentTypeError(f"widths must be at least 1, got {text!r}")
    return widths


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``gensemcom train_segmenter``."""
    doc = __doc__.split("\n\n")
    p = argparse.ArgumentParser(prog="gensemcom train_segmenter", formatter_class=HelpFormatter,
                                description="Train the TinySegmenter (mIoU judge) on synthetic scenes.",
                                epilog=plain("\n\n".join(doc[1:])),
                                parents=[common_parser("run folder: checkpoints, log, model, eval.json")])
    p.set_defaults(out="runs/segmenter")
    p.add_argument("--train-steps", dest="train_steps", type=positive_int, default=800,
                   help="optimiser steps")
    p.add_argument("--steps", dest="train_steps", type=positive_int, help=argparse.SUPPRESS,
                   action=renamed_option("--steps", "--train-steps",
                                         "--steps means sampling steps in evaluate and demo"))
    p.add_argument("--batch-size", type=positive_int, default=16, help="images per optimiser step")
    p.add_argument("--lr", type=finite_float, default=3e-3, help="peak learning rate (AdamW)")
    p.add_argument("--weight-decay", type=finite_float, default=1e-4, help="AdamW weight decay")
    p.add_argument("--warmup", type=nonnegative_int, default=50, help="linear warm-up steps")
    p.add_argument("--widths", type=_widths, default="16,32,64,96", help="channels per U-Net level")
    p.add_argument("--size", type=_size, default="64x128", help="HxW of the synthetic scenes")
    p.add_argument("--num-scenes", type=positive_int, default=20000, help="size of the virtual training set")
    p.add_argument("--no-augment", action="store_true", help="train on clean scenes only")
    p.add_argument("--checkpoint-every", type=positive_int, default=250, help="steps between checkpoints")
    p.add_argument("--log-every", type=positive_int, default=10, help="steps between log lines")
    p.add_argument("--store", choices=["fp16", "fp32"], default="fp16", help="dtype of the saved weights")
    p.add_argument("--eval-scenes", type=positive_int, default=64, help="held-out scenes of eval.json")
    p.add_argument("--threads", type=nonnegative_int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if OUT has checkpoints")
    return p


def augment(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Light, label-preserving augmentation of a batch.

    Per image: horizontal flip (p = 0.5, image and map), contrast x U(0.75, 1.25) around the
    image mean and brightness + U(-0.15, 0.15), a blur of random strength (p = 0.3: a mix of the
    image and its 3x3 box filter), then Gaussian noise of std U(0, 0.12); clamped to [-1, 1].
    The same number of values is drawn from ``generator`` whatever the outcome.

    Args:
        images: (B, 3, H, W) in [-1, 1]; labels: (B, H, W) int64.
    """
    import torch
    import torch.nn.functional as F

    b = images.shape[0]
    r = torch.rand(b, 6, generator=generator)
    noise = torch.randn(images.shape, generator=generator)
    flip = r[:, 0] < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    labels = torch.where(flip[:, None, None], labels.flip(-1), labels)
    contrast = (0.75 + 0.5 * r[:, 1]).view(b, 1, 1, 1)
    bright = (-0.15 + 0.3 * r[:, 2]).view(b, 1, 1, 1)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = (images - mean) * contrast + mean + bright
    blur_amount = torch.where(r[:, 3] < 0.3, r[:, 4], torch.zeros_like(r[:, 4])).view(b, 1, 1, 1)
    blurred = F.avg_pool2d(images, 3, stride=1, padding=1, count_include_pad=False)
    images = images + blur_amount * (blurred - images)
    images = images + (0.12 * r[:, 5]).view(b, 1, 1, 1) * noise
    return images.clamp(-1, 1), labels


def iou_report(conf: ConfusionMatrix, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """mIoU (over classes present in the ground truth or the prediction), per-class IoU (None
    where a class is in neither) and pixel accuracy of a :class:`gensemcom.metrics.ConfusionMatrix`,
    rounded for ``eval.json``."""
    iou = [None if math.isnan(v) else round(v, 5) for v in conf.iou().tolist()]
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(iou))]
    return {"miou": round(conf.miou(), 5), "pixel_accuracy": round(conf.pixel_accuracy(), 5),
            "per_class_iou": dict(zip(names, iou))}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch
    import torch.nn.functional as F

    from ..metrics import ConfusionMatrix
    from .common import check_out_dir, resolve_device

    check_out_dir(args.out)
    if args.device is not None and resolve_device(args.device).type != "cpu":
        raise ValueError(f"--device {args.device}: train_segmenter runs on the CPU (its network is small)")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from ..data.synthetic import SyntheticScenes
    from ..fit import FitConfig, fit
    from ..models.segmenter import TinySegmenter, TinySegmenterConfig

    h, w = args.size
    data = SyntheticScenes(args.num_scenes, h, w, seed=args.seed)
    cfg = TinySegmenterConfig(num_classes=data.num_classes, widths=args.widths)
    torch.manual_seed(args.seed)  # parameter initialisation
    model = TinySegmenter(cfg)
    if h % model.factor or w % model.factor:
        raise ValueError(f"--size {h}x{w}: H and W must be divisible by {model.factor} for {len(args.widths)} levels")
    fit_cfg = FitConfig(out=args.out, steps=args.train_steps, batch_size=args.batch_size, lr=args.lr,
                        weight_decay=args.weight_decay, seed=args.seed, checkpoint_every=args.checkpoint_every,
                        log_every=args.log_every, warmup=args.warmup)

    def batches(step: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(data), (args.batch_size,), generator=g).tolist()
        items = [data[i] for i in idx]
        return torch.stack([it["image"] for it in items]), torch.stack([it["label"] for it in items])

    def loss_fn(m: TinySegmenter, batch: tuple[torch.Tensor, torch.Tensor], g: torch.Generator):
        images, labels = batch
        if not args.no_augment:
            images, labels = augment(images, labels, g)
        logits = m(images)
        loss = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
        valid = labels != IGNORE_INDEX
        acc = ((logits.detach().argmax(1) == labels) & valid).sum() / valid.sum().clamp_min(1)
        return loss, {"pixel_accuracy": acc.item()}

    store = torch.float16 if args.store == "fp16" else None
    meta = {"dataset": f"synthetic {h}x{w}", "class_names": data.class_names, "seed": args.seed,
            "augment": not args.no_augment}
    result = fit(model, loss_fn, batches, fit_cfg, progress=not args.no_progress, resume=not args.no_resume,
                 save_model=lambda m, d, extra: m.save_pretrained(d, extra={**meta, **extra}, dtype=store))

    saved = TinySegmenter.from_pretrained(result["model_dir"])
    held_out = SyntheticScenes(args.eval_scenes, h, w, seed=args.seed + EVAL_SEED_OFFSET)
    conf = ConfusionMatrix(cfg.num_classes, IGNORE_INDEX)
    for start in range(0, len(held_out), 16):
        items = [held_out[i] for i in range(start, min(start + 16, len(held_out)))]
        pred = saved.predict(torch.stack([it["image"] for it in items]))
        conf.update(pred, torch.stack([it["label"] for it in items]))
    report = {"model": cfg.to_dict(), "parameters": sum(p.numel() for p in saved.parameters()),
              "trained_steps": result["step"], "size": [h, w], "eval_scenes": len(held_out),
              "eval_seed": args.seed + EVAL_SEED_OFFSET,
              **iou_report(conf, data.class_names)}
    out = Path(args.out)
    (out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    shutil.copyfile(out / "eval.json", Path(result["model_dir"]) / "eval.json")
    print(json.dumps({"out": str(out), "step": result["step"], "loss": result.get("loss"),
                      "miou": report["miou"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
