"""``train_jscc``: train a Deep JSCC autoencoder on synthetic street scenes.

::

    gensemcom train_jscc --out runs/deepjscc --train-steps 1200 --batch-size 16

Each step draws ``--batch-size`` scenes from a virtual dataset of ``--num-scenes`` synthetic
scenes (rendered on the fly) and one SNR per image uniformly from ``--snr-range`` (dB, Es/N0 per
complex channel use), sends the latent over ``--channel`` and minimises the MSE. The run resumes
from its last checkpoint when ``--out`` already holds one. At the end it writes ``OUT/model``
(safetensors + config.json, fp16 by default) and ``OUT/eval.json`` (also copied into the model
folder): the PSNR of the saved model on 32 held-out scenes at -5, 0, 5, 10, 20 dB over AWGN and
Rayleigh fading.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import (HelpFormatter, common_parser, finite_float, nonnegative_int, plain, positive_int,
                     renamed_option)

if TYPE_CHECKING:  # torch is imported after parsing, so that --help answers at once
    import torch

__all__ = ["main", "build_parser", "evaluate_psnr", "EVAL_SNRS"]

EVAL_SNRS = (-5.0, 0.0, 5.0, 10.0, 20.0)
#: offset between the training and the held-out dataset seeds
EVAL_SEED_OFFSET = 1000


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW (e.g. 64x128), got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"height and width must be at least 1, got {text!r}")
    return h, w


def _range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI in dB (e.g. -5,20), got {text!r}") from None
    if not lo <= hi:  # also NaN
        raise argparse.ArgumentTypeError(f"expected LO <= HI, got {text!r}")
    return lo, hi


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``gensemcom train_jscc``."""
    doc = __doc__.split("\n\n")
    p = argparse.ArgumentParser(prog="gensemcom train_jscc", formatter_class=HelpFormatter,
                                description="Train Deep JSCC (Bourtsoulatze et al. 2019) on synthetic scenes.",
                                epilog=plain("\n\n".join(doc[1:])),
                                parents=[common_parser("run folder: checkpoints, log, model, eval.json")])
    p.set_defaults(out="runs/deepjscc")
    p.add_argument("--train-steps", dest="train_steps", type=positive_int, default=1200,
                   help="optimiser steps")
    p.add_argument("--steps", dest="train_steps", type=positive_int, help=argparse.SUPPRESS,
                   action=renamed_option("--steps", "--train-steps",
                                         "--steps means sampling steps in evaluate and demo"))
    p.add_argument("--batch-size", type=positive_int, default=16, help="images per optimiser step")
    p.add_argument("--lr", type=finite_float, default=1e-3, help="peak learning rate (AdamW)")
    p.add_argument("--weight-decay", type=finite_float, default=0.0, help="AdamW weight decay")
    p.add_argument("--warmup", type=nonnegative_int, default=50, help="linear warm-up steps")
    p.add_argument("--latent-channels", type=positive_int, default=16,
                   help="c: bandwidth ratio c / (3 * 4^num_down * 2)")
    p.add_argument("--hidden", type=positive_int, default=64, help="width of the encoder and decoder")
    p.add_argument("--num-down", type=positive_int, default=2, help="downsampling stages (factor 2 each)")
    p.add_argument("--channel", choices=["awgn", "rayleigh"], default="awgn", help="training channel")
    p.add_argument("--snr-range", type=_range, default="-5,20", help="training SNRs LO,HI in dB")
    p.add_argument("--size", type=_size, default="64x128", help="HxW of the synthetic scenes")
    p.add_argument("--num-scenes", type=positive_int, default=20000, help="size of the virtual training set")
    p.add_argument("--checkpoint-every", type=positive_int, default=250, help="steps between checkpoints")
    p.add_argument("--log-every", type=positive_int, default=10, help="steps between log lines")
    p.add_argument("--store", choices=["fp16", "fp32"], default="fp16", help="dtype of the saved weights")
    p.add_argument("--eval-scenes", type=positive_int, default=32, help="held-out scenes of eval.json")
    p.add_argument("--threads", type=nonnegative_int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--no-resume", action="store_true", help="start afresh even if OUT has checkpoints")
    return p


def evaluate_psnr(model: Any, images: torch.Tensor, channels: Sequence[str] = ("awgn", "rayleigh"),
                  snrs: Sequence[float] = EVAL_SNRS, seed: int = 0) -> dict[str, dict[str, float]]:
    """Mean per-image PSNR (dB, [0, 1] scale) of ``model`` on ``images`` per channel and SNR."""
    import torch

    from ..channels.analog import make_channel
    from ..metrics import psnr

    result: dict[str, dict[str, float]] = {}
    model.eval()
    with torch.inference_mode():
        for kind in channels:
            channel = make_channel(kind)
            row = {}
            for i, snr in enumerate(snrs):
                g = torch.Generator().manual_seed(seed + i)
                out, _ = model(images, channel, float(snr), g)
                row[f"{snr:g}"] = round(psnr((out.clamp(-1, 1) + 1) / 2, (images + 1) / 2).mean().item(), 3)
            result[kind] = row
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from .common import check_out_dir, resolve_device

    check_out_dir(args.out)
    if args.device is not None and resolve_device(args.device).type != "cpu":
        raise ValueError(f"--device {args.device}: train_jscc runs on the CPU (its networks are small)")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from ..data.synthetic import SyntheticScenes
    from ..channels.analog import make_channel
    from ..fit import FitConfig, fit
    from ..models.jscc import DeepJSCC, DeepJSCCConfig, num_parameters

    h, w = args.size
    cfg = DeepJSCCConfig(latent_channels=args.latent_channels, hidden=args.hidden, num_down=args.num_down)
    torch.manual_seed(args.seed)  # parameter initialisation
    model = DeepJSCC(cfg)
    model.latent_shape(h, w)  # fail early on an indivisible size
    data = SyntheticScenes(args.num_scenes, h, w, seed=args.seed)
    channel = make_channel(args.channel)
    lo, hi = args.snr_range
    fit_cfg = FitConfig(out=args.out, steps=args.train_steps, batch_size=args.batch_size, lr=args.lr,
                        weight_decay=args.weight_decay, seed=args.seed, checkpoint_every=args.checkpoint_every,
                        log_every=args.log_every, warmup=args.warmup)

    def batches(step: int, g: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(data), (args.batch_size,), generator=g).tolist()
        return torch.stack([data[i]["image"] for i in idx])

    def loss_fn(m: DeepJSCC, images: torch.Tensor, g: torch.Generator):
        snr = lo + (hi - lo) * torch.rand(images.shape[0], generator=g)
        out, _ = m(images, channel, snr, g)
        mse = torch.nn.functional.mse_loss(out, images)
        return mse, {"psnr": 10 * torch.log10(4.0 / mse.detach().clamp_min(1e-12)).item()}

    store = torch.float16 if args.store == "fp16" else None
    meta = {"dataset": f"synthetic {h}x{w}", "train_channel": args.channel, "snr_range_db": [lo, hi],
            "seed": args.seed}
    result = fit(model, loss_fn, batches, fit_cfg, progress=not args.no_progress, resume=not args.no_resume,
                 save_model=lambda m, d, extra: m.save_pretrained(d, extra={**meta, **extra}, dtype=store))

    saved = DeepJSCC.from_pretrained(result["model_dir"])
    held_out = SyntheticScenes(args.eval_scenes, h, w, seed=args.seed + EVAL_SEED_OFFSET)
    images = torch.stack([held_out[i]["image"] for i in range(len(held_out))])
    report = {
        "model": cfg.to_dict(), "parameters": num_parameters(saved), "trained_steps": result["step"],
        "train_channel": args.channel, "snr_range_db": [lo, hi], "size": [h, w],
        "channel_uses": saved.channel_uses(h, w), "bandwidth_ratio": saved.bandwidth_ratio(h, w),
        "eval_scenes": len(held_out), "eval_seed": args.seed + EVAL_SEED_OFFSET,
        "psnr_db": evaluate_psnr(saved, images),
    }
    text = json.dumps(report, indent=2) + "\n"
    out = Path(args.out)
    (out / "eval.json").write_text(text)
    shutil.copyfile(out / "eval.json", Path(result["model_dir"]) / "eval.json")
    print(json.dumps({"out": str(out), "step": result["step"], "loss": result.get("loss"),
                      "psnr_db": report["psnr_db"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
