#!/usr/bin/env bash
# PSNR / SSIM vs SNR of a Diff-JSCC model on the Fashion-MNIST test set (Debian's
# dataset-fashion-mnist), AWGN and Rayleigh, decoding from Gaussian noise; with ORACLE=1 also the
# DDIM-inversion start (an oracle upper bound: it inverts the transmitted image, which the
# receiver does not have). Writes $OUT/eval.json. Usage: MODEL=runs/diffjscc_fmnist/model N=256
# scripts/train_diffjscc_eval.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-runs/diffjscc_fmnist/model}
OUT=${OUT:-$MODEL}
N=${N:-256}
SNRS=${SNRS:-0,5,10,15,20}
ORACLE=${ORACLE:-0}
.venv/bin/python - "$MODEL" "$OUT" "$N" "$SNRS" "$ORACLE" <<'PY'
import json
import sys
from pathlib import Path

from gensemcom.data.fashion_mnist import FashionMNIST
from gensemcom.models.diffjscc import DiffJSCC
from gensemcom.systems.diffjscc import evaluate_diffjscc

model_dir, out, n, snrs, oracle = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5] == "1"
model = DiffJSCC.from_pretrained(model_dir)
test = FashionMNIST(split="test")
snr_list = [float(s) for s in snrs.split(",")]
records = []
for channel in ("awgn", "rayleigh"):
    records += evaluate_diffjscc(model, test, snr_list, channel=channel, num_images=n, seed=0)
    if oracle:
        records += evaluate_diffjscc(model, test, snr_list, channel=channel, num_images=n, seed=0, oracle=True)
for r in records:
    print(json.dumps(r))
out.mkdir(parents=True, exist_ok=True)
(out / "eval.json").write_text(json.dumps({"model": str(model_dir), "records": records}, indent=1) + "\n")
PY
