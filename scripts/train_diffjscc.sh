#!/usr/bin/env bash
# The recipe of the small Diff-JSCC model trained here on Fashion-MNIST (32x32, zero-padded):
# a Deep-JSCC-style encoder (encoder_type jscc, c_out 8: 512 reals = 256 complex channel uses per
# image, 0.25 per pixel, Diff-JSCC's CIFAR-10 bandwidth), the latent power-normalised per image
# and sent through AWGN at an SNR drawn uniformly in 0..20 dB per image (the receiver is told the
# SNR), the class label embedded (4 bits), and a small improved-diffusion U-Net (32 channels,
# mult 1,2,2, one res block, attention at 8x8) on Diff-JSCC's process (cosine, T = 4000, learned
# range, mse + vb * T/1000), trained end to end with AdamW (5e-4, warm-up 50, cosine decay),
# batch 16. Decoding: 20 DDIM steps respaced from the 4000.
# Needs `apt-get install dataset-fashion-mnist`. Resumable: run it again to continue; STEPS=...
# to train longer. On 2 busy CPU cores it runs at several seconds per step; on a GPU pass
# BATCH=128 and many more STEPS for a useful model.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/diffjscc_fmnist}
STEPS=${STEPS:-500}
BATCH=${BATCH:-16}
.venv/bin/python - "$OUT" "$STEPS" "$BATCH" <<'PY'
import sys

import torch

from gensemcom.data.fashion_mnist import FashionMNIST
from gensemcom.models.diffjscc import DiffJSCC, DiffJSCCConfig, EncoderConfig
from gensemcom.models.semantic_unet import SemanticUNetConfig
from gensemcom.systems.diffjscc import train_diffjscc

out, steps, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
unet = SemanticUNetConfig(label_channels=0, image_size=32, model_channels=32, channel_mult=(1, 2, 2),
                          num_res_blocks=1, attention_resolutions=(8,), num_heads=2, num_head_channels=-1,
                          resblock_updown=False, layout="sdm", vector_dim=513, vector_embed_name="latent_emb",
                          num_classes=10, dropout=0.0)
config = DiffJSCCConfig(unet=unet, encoder=EncoderConfig(kind="jscc", image_size=32, c_out=8), compat="none",
                        class_label="sent", snr_input=True, train_channel="awgn", train_snr_db=(0.0, 20.0),
                        sample_steps=20, sample_process="respaced")
torch.manual_seed(0)
model = DiffJSCC(config)
print(train_diffjscc(model, FashionMNIST(split="train"), out, steps=steps, batch_size=batch, seed=0,
                     checkpoint_every=25, progress=False))
PY
