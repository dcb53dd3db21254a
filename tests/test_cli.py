"""The command line: dispatch and the sampling example, called through main(argv)."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from gensemcom.cli import demo
from gensemcom.cli.main import main


def test_demo_writes_images_and_json(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "2", "--batch", "1", "--height", "32", "--width", "64"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["seed"] == 0 and result["diffusion"]["respacing"] == "ddim2"
    # the cached-SPADE fast path gives the same images as the plain one
    assert result["max_abs_difference_cached_vs_plain"] <= 1e-5
    img = np.asarray(Image.open(out / "samples.png"))
    assert img.shape == (32, 64, 3) and img.std() > 0
    assert np.asarray(Image.open(out / "label_map.png")).shape == (32, 64, 3)
    assert "label_map.png" in capsys.readouterr().out


def test_demo_is_reproducible(tmp_path):
    args = ["--steps", "2", "--batch", "1", "--height", "32", "--width", "64"]
    for name in ("a", "b"):
        assert demo.main(["--out", str(tmp_path / name), *args]) == 0
    a = np.asarray(Image.open(tmp_path / "a" / "samples.png"))
    b = np.asarray(Image.open(tmp_path / "b" / "samples.png"))
    assert np.array_equal(a, b)


def test_street_map_edges_mark_instance_boundaries():
    import torch

    gen = torch.Generator().manual_seed(1)
    labels, inst = demo.street_map(32, 64, gen)
    y = demo.semantic_input(labels[None], inst[None], len(demo.DEMO_CLASSES))
    assert y.shape == (1, 7, 32, 64)
    assert torch.equal(y[0, :6].argmax(0), labels) and torch.equal(y[0, :6].sum(0), torch.ones(32, 64))
    edge = y[0, 6].bool()
    differs = torch.zeros_like(edge)
    differs[:, 1:] |= inst[:, 1:] != inst[:, :-1]
    assert edge[differs].all() and edge.any()


def test_unknown_command(capsys):
    assert main(["transmogrify"]) == 2
    assert "unknown command 'transmogrify'" in capsys.readouterr().err
    assert main([]) == 2
