#!/usr/bin/env bash
# The exact recipe of the bundled SPIC model (src/gensemcom/assets/spic_synthetic/): a small SPIC
# network (SDM U-Net, 32 channels x 1,2,2,2, SPADE width 32, coarse image concatenated) trained on
# synthetic street scenes at 64x128 with 16x32 coarse images coded by JPEG XL at a random quality
# in 10..90 on the fly, the map dropped with p=0.1 for guidance, hybrid loss, 700 steps of batch 8
# on 32x64 crops (about 2-4 s per step on one CPU core), EMA 0.995; then the equal-bpp evaluation
# against the codecs alone, and the copy into the package. Resumable: run it again to continue.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/spic_synthetic}
STEPS=${STEPS:-700}
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} .venv/bin/python scripts/train_spic_synthetic.py --out "$OUT" \
  --steps "$STEPS" --lr 3e-4 --batch_size 8 --ema_rate 0.995 --drop_rate 0.1 --seed 0 --size 64x128 \
  --coarse 16x32 --crop 32x64 --codec jpegxl --quality_range 10,90 --num_channels 32 --channel_mult 1,2,2,2 \
  --spade_hidden 32
.venv/bin/python scripts/eval_spic_synthetic.py --model "$OUT/model" --scenes 16 --qualities 30 \
  --variants ddpm:noised,ddpm:coarse,ddim:noised --out "$OUT/eval_q30.json"
.venv/bin/python scripts/eval_spic_synthetic.py --model "$OUT/model" --scenes 16 --qualities 70 \
  --variants ddpm:noised --out "$OUT/eval_q70.json"
mkdir -p src/gensemcom/assets/spic_synthetic
cp "$OUT/model/config.json" "$OUT/model/model.safetensors" src/gensemcom/assets/spic_synthetic/
.venv/bin/python scripts/eval_spic_synthetic.py --model src/gensemcom/assets/spic_synthetic --scenes 16 \
  --qualities 30,70 --variants none --full_codecs jpegxl,webp,jpeg,jpeg2000,hevc --out "$OUT/eval_baselines.json"
.venv/bin/python - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
rows = [r for f in ("eval_q30.json", "eval_q70.json") for r in json.load(open(f"{out}/{f}"))["rows"]
        if r["system"].startswith("spic")]
rows += json.load(open(f"{out}/eval_baselines.json"))["rows"]
path = "src/gensemcom/assets/spic_synthetic/eval.json"
meta = json.load(open(path)) if __import__("os").path.exists(path) else {}
meta.update({"recipe": "scripts/train_spic_bundled.sh", "scenes": 16, "scene_seed": 2000, "rows": rows})
json.dump(meta, open(path, "w"), indent=1)
PY
