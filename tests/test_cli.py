"""The command line: dispatch, and the demo with the bundled GESCO model (through main(argv))."""

from __future__ import annotations

import json

import numpy as np  # noqa: F401
import torch
from PIL import Image

from gensemcom.cli import demo
from gensemcom.cli.main import main
from gensemcom.data import SyntheticScenes


def test_demo_writes_results_plots_and_table(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--data", "synthetic:2", "--channels", "awgn", "--snr", "-5,20",
            "--steps", "2", "--systems", "gesco,jpeg+ldpc,deepjscc", "--no-progress"]
    assert main(args) == 0
    result = json.loads((out / "results.json").read_text())
    curves = {(c["system"], c["channel"]): c for c in result["results"]}
    assert set(curves) == {("gesco", "awgn"), ("jpeg+ldpc", "awgn"), ("deepjscc", "awgn"), ("original", "none")}
    assert curves[("gesco", "awgn")]["snr_db"] == [-5.0, 20.0]
    # the digital baseline's cliff: everything lost at -5 dB, nothing at 20 dB
    assert curves[("jpeg+ldpc", "awgn")]["lost_fraction"] == [1.0, 0.0]
    # the bundled segmenter on clean synthetic scenes
    assert curves[("original", "none")]["miou"][0] > 0.9
    assert result["meta"]["backends"]["miou"] == {"synthetic": "bundled"}
    for name in ("psnr_vs_snr.png", "miou_vs_snr.png", "grid_synthetic_awgn.png"):
        assert Image.open(out / "plots" / name).size[0] > 100
    printed = capsys.readouterr().out
    assert "synthetic / awgn: psnr" in printed and "jpeg+ldpc" in printed
    # run again: everything is reused, nothing recomputed
    before = (out / "records" / "rank0.jsonl").read_text()
    assert main(args) == 0
    assert (out / "records" / "rank0.jsonl").read_text() == before


def test_bundled_model_follows_the_map():
    """The bundled GESCO model regenerates scenes that the bundled segmenter reads back as the map
    they were generated from, far better than the map of other scenes."""
    from gensemcom.metrics import miou_per_image
    from gensemcom.models.segmenter import load_segmenter
    from gensemcom.models.io import load_pretrained
    from gensemcom.zoo import load_gesco

    _, _, config = load_pretrained(demo.bundled_checkpoint())
    assert config["stored_dtype"] == "float16" and config["num_classes"] == 12
    system = load_gesco(steps=10)
    scenes = SyntheticScenes(4, 64, 128, seed=555)
    labels = torch.stack([scenes[i]["label"] for i in range(4)])
    inst = torch.stack([scenes[i]["instance"] for i in range(4)])
    out = system.run(labels, inst, float("inf"), generator=torch.Generator().manual_seed(0))
    seg = load_segmenter("bundled")
    pred = seg.predict(out["images"])
    right = miou_per_image(pred, labels, 12)
    other = SyntheticScenes(4, 64, 128, seed=556)
    wrong = miou_per_image(pred, torch.stack([other[i]["label"] for i in range(4)]), 12)
    assert right.mean() > 0.65 and right.mean() > wrong.mean() + 0.35, (right, wrong)


def test_unknown_command(capsys):
    assert main(["transmogrify"]) == 2
    assert "unknown command 'transmogrify'" in capsys.readouterr().err
    assert main([]) == 2


def test_errors_are_one_clear_line(tmp_path, capsys):
    assert main(["sample", "--checkpoint", str(tmp_path / "nowhere"), "--dataset_mode", "synthetic"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gensemcom sample: error:") and "missing config.json" in err
    assert "Traceback" not in err
