"""Train the bundled Diff-JSCC model (Fashion-MNIST, 32x32) on a GPU within a wall-clock budget.

The recipe of ``scripts/train_diffjscc.sh`` (jscc encoder, 0.25 channel uses per pixel, AWGN at
0..20 dB with the SNR told to the receiver, class label sent; improved-diffusion U-Net, cosine
T = 4000, mse + vb * T/1000) at batch 128 in bf16 autocast, stopped cleanly (final checkpoint and
the EMA model folder written) when ``--seconds`` have passed. Writes ``OUT/model`` and
``OUT/train_summary.json`` (steps, images/s, seconds).

    python scripts/train_diffjscc_gpu.py --data DIR_WITH_IDX_FILES --out runs/diffjscc_fmnist --seconds 240
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from gensemcom.data.fashion_mnist import FashionMNIST
from gensemcom.models.diffjscc import DiffJSCCConfig, EncoderConfig
from gensemcom.models.semantic_unet import SemanticUNetConfig
from gensemcom.systems.diffjscc import diffjscc_trainer


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="folder of the Fashion-MNIST IDX files (default: Debian's)")
    p.add_argument("--out", default="runs/diffjscc_fmnist")
    p.add_argument("--seconds", type=float, default=240.0, help="wall-clock budget of the training loop")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--amp", default="bf16", choices=("none", "bf16", "fp16"))
    args = p.parse_args(argv)
    unet = SemanticUNetConfig(label_channels=0, image_size=32, model_channels=32, channel_mult=(1, 2, 2),
                              num_res_blocks=1, attention_resolutions=(8,), num_heads=2, num_head_channels=-1,
                              resblock_updown=False, layout="sdm", vector_dim=513, vector_embed_name="latent_emb",
                              num_classes=10, dropout=0.0)
    config = DiffJSCCConfig(unet=unet, encoder=EncoderConfig(kind="jscc", image_size=32, c_out=8), compat="none",
                            class_label="sent", snr_input=True, train_channel="awgn", train_snr_db=(0.0, 20.0),
                            sample_steps=20, sample_process="respaced")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    amp = args.amp if device == "cuda" else "none"
    trainer = diffjscc_trainer(config, FashionMNIST(root=args.data, split="train"), args.out, device=device,
                               train={"steps": 10 ** 7, "batch_size": args.batch, "lr": 2e-4, "ema_rate": 0.999,
                                      "save_interval": 2000, "log_interval": 100, "grad_clip": 1.0, "seed": 0,
                                      "amp": amp})
    t0 = time.perf_counter()

    def stop_when_due(tr, sums) -> None:
        if time.perf_counter() - t0 > args.seconds:
            tr.cfg.steps = tr.step  # the loop saves a checkpoint and the model, then ends

    result = trainer.train(progress=False, on_step=stop_when_due)
    seconds = time.perf_counter() - t0
    summary = {"steps": result["step"], "seconds": round(seconds, 1), "batch": args.batch, "amp": amp,
               "images_per_s": round(result["step"] * args.batch / seconds, 1), "last": result,
               "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu"}
    Path(args.out, "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
