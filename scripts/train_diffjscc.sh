#!/usr/bin/env bash
# Recipe of a small Diff-JSCC model on Fashion-MNIST (32x32, zero-padded, gray in 3 channels),
# trained end to end with the platform trainer (EMA of the U-Net and the encoder, exact resume,
# DDP under torchrun):
# - transmitter: Deep-JSCC-style encoder (encoder_type jscc, c_out 8): 512 reals = 256 complex
#   channel uses per image, 0.25 per pixel (Diff-JSCC's CIFAR-10 bandwidth); the latent is
#   power-normalised per image and sent through AWGN at an SNR drawn uniformly in 0..20 dB per
#   image; the receiver is told the SNR; the class label is embedded (4 bits per image);
# - receiver: improved-diffusion U-Net (32 channels, mult 1,2,2, one res block, attention at 8x8,
#   class + latent in the time embedding) on Diff-JSCC's process (cosine, T = 4000, learned range,
#   mse + vb * T/1000); decoding with 20 DDIM steps respaced from the 4000.
# Needs `apt-get install dataset-fashion-mnist`. Resumable: run it again to continue; STEPS=... to
# train longer. Evaluate with scripts/train_diffjscc_eval.sh. Measured here: about 15 s per step at
# batch 16 on 2 heavily shared CPU cores (load ~10), i.e. not trainable to a useful model on this
# machine; on a GPU pass BATCH=128 and STEPS in the tens of thousands.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/diffjscc_fmnist}
STEPS=${STEPS:-20000}
BATCH=${BATCH:-16}
DEVICE=${DEVICE:-cpu}
.venv/bin/python - "$OUT" "$STEPS" "$BATCH" "$DEVICE" <<'PY'
import sys

from gensemcom.data.fashion_mnist import FashionMNIST
from gensemcom.models.diffjscc import DiffJSCCConfig, EncoderConfig
from gensemcom.models.semantic_unet import SemanticUNetConfig
from gensemcom.systems.diffjscc import diffjscc_trainer

out, steps, batch, device = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
unet = SemanticUNetConfig(label_channels=0, image_size=32, model_channels=32, channel_mult=(1, 2, 2),
                          num_res_blocks=1, attention_resolutions=(8,), num_heads=2, num_head_channels=-1,
                          resblock_updown=False, layout="sdm", vector_dim=513, vector_embed_name="latent_emb",
                          num_classes=10, dropout=0.0)
config = DiffJSCCConfig(unet=unet, encoder=EncoderConfig(kind="jscc", image_size=32, c_out=8), compat="none",
                        class_label="sent", snr_input=True, train_channel="awgn", train_snr_db=(0.0, 20.0),
                        sample_steps=20, sample_process="respaced")
trainer = diffjscc_trainer(config, FashionMNIST(split="train"), out, device=device,
                           train={"steps": steps, "batch_size": batch, "lr": 2e-4, "ema_rate": 0.999,
                                  "save_interval": 250, "log_interval": 25, "grad_clip": 1.0, "seed": 0})
print(trainer.train(progress=False))
PY
