"""`gensemcom train --config FILE.yaml`: Diff-JSCC from the seed's yaml, through the platform trainer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from gensemcom.cli.main import main
from gensemcom.data.cifar10 import write_cifar_batch
from gensemcom.models.diffjscc import DiffJSCC

REF = Path(__file__).parent / "data" / "diffjscc"
pytestmark = pytest.mark.usefixtures("one_thread")


def _cifar(tmp_path: Path) -> Path:
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        write_cifar_batch(root / name, rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
                          rng.integers(0, 10, 4).tolist(), batch_label=name)
    return root


def test_train_from_the_seed_yaml(tmp_path, capsys):
    cfg = json.loads((REF / "diffjscc_tiny_public_config.json").read_text())["yaml_tiny"]
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    rc = main(["train", "--config", str(tmp_path / "tiny.yaml"), "--data", f"cifar10:{_cifar(tmp_path)}",
               "--train_steps", "2", "--batch_size", "2", "--out", str(out), "--no-progress"])
    assert rc == 0
    model = DiffJSCC.from_pretrained(out / "model")
    assert model.config.compat == "none" and model.config.train_channel == "awgn"
    assert model.config.unet.model_channels == cfg["num_channels"]
    meta = json.loads((out / "train_config.json").read_text())
    assert meta["train"]["steps"] == 2 and meta["condition"]["kind"]


def test_train_config_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "r")]) == 2
    assert "config file not found" in capsys.readouterr().err
    (tmp_path / "x.yaml").write_text("num_classes: 10\n")
    assert main(["train", "--config", str(tmp_path / "x.yaml"), "--data", "mnist", "--out", str(tmp_path / "r")]) == 2
    assert "use cifar10:DIR or fashion-mnist" in capsys.readouterr().err
