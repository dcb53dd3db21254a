"""`gensemcom sample` with the seed's own command lines, and the GESCO system around it."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gensemcom.cli.sample import main as sample_main
from gensemcom.legacy import model_and_diffusion_from_flags
from gensemcom.systems import GESCO
from test_datasets import make_cityscapes

FLAGS = dict(image_size=32, num_classes=35, num_channels=32, channel_mult="1,2", attention_resolutions="16",
             num_head_channels=32, num_res_blocks=1, resblock_updown=True, use_scale_shift_norm=True,
             learn_sigma=True, class_cond=True, one_hot_label=True, no_instance=False)


@pytest.fixture(scope="module")
def gesco_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("gesco")
    model, _ = model_and_diffusion_from_flags(FLAGS)
    torch.manual_seed(0)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    torch.save(model.state_dict(), root / "model.pt")
    make_cityscapes(root / "data", split="val")
    return root


def verbatim(root, out, snr="10", extra=()):
    """GESCO README's image_sample.py command, at the tiny model's sizes."""
    cmd = (f"--data_dir {root}/data --dataset_mode cityscapes --attention_resolutions 16 --diffusion_steps 1000 "
           f"--image_size 32 --channel_mult 1,2 --learn_sigma True --noise_schedule linear --num_channels 32 "
           f"--num_head_channels 32 --num_res_blocks 1 --resblock_updown True --use_fp16 True "
           f"--use_scale_shift_norm True --num_classes 35 --class_cond True --no_instance False --batch_size 2 "
           f"--num_samples 2 --model_path {root}/model.pt --results_path {out} --s 2 --one_hot_label True "
           f"--snr {snr} --pool None --unet_model unet --use_ddim True --timestep_respacing ddim2")
    return cmd.split() + list(extra) + ["--no_progress"]


def test_gesco_command_verbatim(gesco_files, tmp_path, capsys):
    out = tmp_path / "r"
    assert sample_main(verbatim(gesco_files, out, snr="100,10")) == 0
    res = json.loads((out / "results.json").read_text())
    st = res["settings"]
    assert st["channel"] == "awgn" and st["pool"] == "fds" and st["guidance_scale"] == 2.0
    assert st["snr_db"] == ["inf", 10.0]  # GESCO's --snr 100 means noiseless
    assert "use_fp16" in " ".join(st["notes"]) and "use_fp16" in capsys.readouterr().err
    for key in ("inf", "10"):
        files = sorted(p.name for p in (out / f"snr_{key}").iterdir())
        assert len(files) == 2 and files[0].endswith("_leftImg8bit.png")
        assert res["per_snr"][key]["channel_uses_per_pixel"] > 0
    assert len(list((out / "original").iterdir())) == 2 and len(list((out / "label").iterdir())) == 2


def test_legacy_channel_and_unsupported_snr(gesco_files, tmp_path, capsys):
    out = tmp_path / "legacy"
    assert sample_main(verbatim(gesco_files, out, extra=["--channel", "legacy"])) == 0
    assert json.loads((out / "results.json").read_text())["settings"]["snr_db"] == [10.0]
    with pytest.raises(SystemExit):
        sample_main(verbatim(gesco_files, tmp_path / "x", snr="7", extra=["--channel", "legacy"]))
    assert "legacy table has only [1, 5, 10, 15, 20, 25, 30, 100]" in capsys.readouterr().err


def test_resume_skips_finished_images_and_reproduces_missing_ones(gesco_files, tmp_path):
    out = tmp_path / "resume"
    argv = verbatim(gesco_files, out)
    assert sample_main(argv) == 0
    files = sorted((out / "snr_10").iterdir())
    first = {p.name: p.read_bytes() for p in files}
    mtimes = {p.name: p.stat().st_mtime_ns for p in files}
    files[1].unlink()  # as if killed before writing it
    assert sample_main(argv) == 0
    again = sorted((out / "snr_10").iterdir())
    assert {p.name: p.read_bytes() for p in again} == first
    assert again[0].stat().st_mtime_ns == mtimes[again[0].name]  # finished image not redone


def test_other_settings_in_same_folder_refused(gesco_files, tmp_path, capsys):
    from gensemcom.cli.main import main

    out = tmp_path / "same"
    assert sample_main(verbatim(gesco_files, out)) == 0
    assert main(["sample", *verbatim(gesco_files, out, extra=["--seed", "5"])]) == 2
    err = capsys.readouterr().err
    assert "other settings (differing: seed)" in err and "Traceback" not in err


@pytest.mark.parametrize("extra,match", [
    (["--ptq", "--weight_bit", "8", "--quant_mode", "qdiff", "--cali_n", "51"], "not yet supported"),
    (["--add_noise", "True"], "training option"),
    (["--pool", "gaussian"], "--pool 'gaussian'"),
    (["--eta", "0.5", "--use_ddim", "False"], "applies to DDIM"),
    (["--timesteps", "10"], "not both"),
])
def test_flags_refused_not_ignored(gesco_files, tmp_path, extra, match, capsys):
    with pytest.raises(SystemExit):
        sample_main(verbatim(gesco_files, tmp_path / "o", extra=extra))
    assert match in capsys.readouterr().err


def test_gesco_system_noiseless_paths():
    model, diffusion = model_and_diffusion_from_flags(dict(FLAGS, timestep_respacing="ddim2"))
    labels = torch.randint(0, 35, (2, 32, 64))
    inst = labels.clone()
    for channel, snr in (("legacy", 100), ("awgn", math.inf), ("none", 0.0)):
        system = GESCO(model.eval(), diffusion, 35, channel=channel, pool="none")
        y = system.transmit(labels, inst)
        sent = system.send(y, snr)
        assert torch.allclose(sent.received, y, atol=1e-6), channel
        # present classes + edge channel, paired into complex symbols
        present = torch.stack([torch.bincount(lab.flatten(), minlength=35) > 0 for lab in labels]).sum(1) + 1
        torch.testing.assert_close(torch.as_tensor(sent.channel_uses, dtype=torch.float64).flatten(),
                                   (present * 32 * 64 / 2).double())
    out = system.run(labels, inst, 0.0, generator=torch.Generator().manual_seed(0))
    assert out["images"].shape == (2, 3, 32, 64)
    with pytest.raises(ValueError, match="pass instances"):
        system.transmit(labels, None)


def test_sample_type_conflict_and_bad_snr(gesco_files, tmp_path, capsys):
    with pytest.raises(SystemExit):
        sample_main(verbatim(gesco_files, tmp_path / "a", extra=["--sample_type", "ddpm_noisy"]))
    assert "contradicts --use_ddim True" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sample_main(verbatim(gesco_files, tmp_path / "b", snr="ten"))
    assert "expected dB values" in capsys.readouterr().err
