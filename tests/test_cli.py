"""The command line: dispatch, and the demo with the bundled GESCO model (through main(argv))."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from gensemcom.cli import demo
from gensemcom.cli.main import main
from gensemcom.data import SyntheticScenes


def test_demo_writes_grid_and_results(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--images", "2", "--steps", "2", "--snr", "inf,0"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert list(result["per_snr_db"]) == ["inf", "0"]
    for v in result["per_snr_db"].values():
        assert v["channel_uses_per_pixel"] > 0 and 0 <= v["regenerated_colour_agreement"] <= 1
    # noiseless channel: the received map gives back the labels almost everywhere (the receiver's
    # FDS filter moves class boundaries by up to a pixel)
    assert result["per_snr_db"]["inf"]["received_map_pixel_accuracy"] > 0.8
    assert result["per_snr_db"]["0"]["received_map_pixel_accuracy"] <= result["per_snr_db"]["inf"]["received_map_pixel_accuracy"]
    # the cached-SPADE fast path gives the same images as the plain one
    assert result["spade_cache"]["max_abs_difference"] <= 1e-5
    grid = np.asarray(Image.open(out / "grid.png"))
    h, w = result["image_hw"]
    columns = 2 + 2 * 2
    assert grid.shape == (2 * h + 4, columns * w + (columns - 1) * 4, 3)
    assert "SNR dB" in capsys.readouterr().out


def test_bundled_model_follows_the_map():
    """The bundled model regenerates scenes whose colours follow the map it was given: most
    pixels are nearest to the mean colour of their map class (random images: about 1/12)."""
    from gensemcom.diffusion import DiffusionConfig, GaussianDiffusion
    from gensemcom.models.io import load_pretrained
    from gensemcom.systems import GESCO

    model, _, config = load_pretrained(demo.bundled_checkpoint())
    assert config["stored_dtype"] == "float16" and config["num_classes"] == 12
    diffusion = GaussianDiffusion.from_config(DiffusionConfig(**dict(config["diffusion"], respacing="ddim10")))
    system = GESCO(model, diffusion, 12, channel="awgn")
    scenes = SyntheticScenes(4, 64, 128, seed=555)
    labels = torch.stack([scenes[i]["label"] for i in range(4)])
    inst = torch.stack([scenes[i]["instance"] for i in range(4)])
    means = demo.class_colour_means(SyntheticScenes(16, 64, 128, seed=777))
    out = system.run(labels, inst, float("inf"), generator=torch.Generator().manual_seed(0))
    agree = demo.colour_agreement(out["images"], labels, means)
    real = demo.colour_agreement(torch.stack([scenes[i]["image"] for i in range(4)]), labels, means)
    assert agree.mean() > 0.5 * real.mean(), (agree, real)
    # a map for other scenes gives images that agree much less with these labels
    other = SyntheticScenes(4, 64, 128, seed=556)
    wrong = demo.colour_agreement(out["images"], torch.stack([other[i]["label"] for i in range(4)]), means)
    assert agree.mean() > wrong.mean() + 0.1


def test_unknown_command(capsys):
    assert main(["transmogrify"]) == 2
    assert "unknown command 'transmogrify'" in capsys.readouterr().err
    assert main([]) == 2


def test_errors_are_one_clear_line(tmp_path, capsys):
    assert main(["sample", "--checkpoint", str(tmp_path / "nowhere"), "--dataset_mode", "synthetic"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gensemcom sample: error:") and "missing config.json" in err
    assert "Traceback" not in err
