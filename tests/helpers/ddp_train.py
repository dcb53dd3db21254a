"""Run by tests/test_train.py under torchrun: a 2-process data-parallel training run that
writes, per rank, a checksum of its final parameters (replicas must agree)."""

import json
import os
import sys

import torch  # noqa: F401  (imported before the package, as a torchrun worker would)

from gensemcom.cli.train import main

out = sys.argv[1]
rc = main(["--dataset_mode", "synthetic", "--out", out, *sys.argv[2:]])
# after main() the process group is gone; reload what rank 0 saved and report this rank's view
rank = int(os.environ["RANK"])
with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
    json.dump({"rc": rc, "world": int(os.environ["WORLD_SIZE"])}, f)
