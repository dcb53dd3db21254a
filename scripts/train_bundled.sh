#!/usr/bin/env bash
# The exact recipe of the bundled GESCO checkpoint (src/gensemcom/assets/gesco_synthetic/):
# a small SDM/GESCO network trained on synthetic street scenes at 64x128, with condition
# dropout (for guidance), SDM's hybrid loss (so DDPM's variance is learned too) and
# noise-aware training through the physical AWGN semantic-map channel (0..30 dB, FDS denoising).
# Resumable: run it again to continue; STEPS=... to train longer. On 2 CPU cores it runs at
# about 1-2 s per step; on a GPU, pass a larger --batch_size for a better model.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/bundled}
STEPS=${STEPS:-1400}
.venv/bin/gensemcom train --dataset_mode synthetic --synthetic_size 64x128 --synthetic_count 20000 \
  --out "$OUT" --steps "$STEPS" --seed 0 \
  --image_size 64 --num_channels 32 --channel_mult 1,2,2,2 --num_res_blocks 1 \
  --attention_resolutions 8 --num_head_channels 32 --resblock_updown True --use_scale_shift_norm True \
  --learn_sigma True --one_hot_label True --no_instance False --layout sdm --spade_hidden 32 \
  --loss hybrid --lr 2e-4 --batch_size 8 --ema_rate 0.995 --drop_rate 0.1 \
  --noise_aware channel --train_channel awgn --snr_range 0,30 \
  --save_interval 100 --log_interval 10 --keep_checkpoints 2 "$@"
