"""Copy the EMA model of a finished `scripts/train_bundled.sh` run into the package's assets,
weights stored as float16 (loaded as float32). Usage: python scripts/export_bundled.py [RUN_DIR]"""

import json
import sys
from pathlib import Path

import torch

from gensemcom.models.io import load_pretrained, save_pretrained

run = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/bundled")
model, diffusion, config = load_pretrained(run / "model")
train = json.loads((run / "train_config.json").read_text())["train"]
dest = Path(__file__).resolve().parents[1] / "src" / "gensemcom" / "assets" / "gesco_synthetic"
save_pretrained(dest, model, diffusion, dtype=torch.float16, extra={
    "num_classes": config["num_classes"], "image_hw": [64, 128], "dataset": "synthetic",
    "trained_steps": config["trained_steps"], "recipe": "scripts/train_bundled.sh", "train": train})
print(f"wrote {dest} ({sum(p.stat().st_size for p in dest.iterdir()) / 1e6:.1f} MB)")
