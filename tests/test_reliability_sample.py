"""`gensemcom sample` reliability (issue 9): no stale results, no poisoned folders, one-line errors,
honest progress. Every command goes through the dispatcher, as a user's would."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gensemcom.cli.main import main
from gensemcom.legacy import model_and_diffusion_from_flags
from gensemcom.models.io import save_pretrained
from test_sample_cli import FLAGS

MODEL_FLAGS = ["--image_size", "32", "--num_classes", "35", "--num_channels", "32", "--channel_mult", "1,2",
               "--attention_resolutions", "16", "--num_head_channels", "32", "--num_res_blocks", "1",
               "--resblock_updown", "True", "--learn_sigma", "True", "--class_cond", "True",
               "--one_hot_label", "True", "--no_instance", "False"]


def _model(seed: int):
    model, diffusion = model_and_diffusion_from_flags(FLAGS)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model, diffusion


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Two checkpoints of the same config with other weights, as .pt and as a model folder."""
    root = tmp_path_factory.mktemp("rel")
    for seed, name in ((0, "a"), (1, "b")):
        model, diffusion = _model(seed)
        torch.save(model.state_dict(), root / f"{name}.pt")
        save_pretrained(root / f"ckpt_{name}", model, diffusion, extra={"num_classes": 35})
    return root


def synthetic(files: Path, out: Path, *extra: str, model: str = "a") -> list[str]:
    return ["sample", "--dataset_mode", "synthetic", "--synthetic_size", "32x64", "--num_samples", "2",
            "--batch_size", "2", "--model_path", str(files / f"{model}.pt"), *MODEL_FLAGS,
            "--use_ddim", "True", "--timestep_respacing", "ddim2", "--snr", "10", "--out", str(out),
            "--no-progress", *extra]


def folder_dataset(root: Path, names: list[str], shift: int = 0) -> Path:
    """images/, labels/, instances/ with 32x64 files at the relative paths ``names``."""
    for i, name in enumerate(names):
        y, x = np.mgrid[0:32, 0:64]
        rgb = np.stack([(x * 4 + 40 * i + shift) % 256, y * 8, np.full_like(x, 128)], -1).astype(np.uint8)
        label = np.full((32, 64), 7, np.uint8)
        label[8:24, 16 + 8 * i: 40 + 8 * i] = 26
        for sub, arr in (("images", rgb), ("labels", label), ("instances", label)):
            (root / sub / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / sub / f"{name}.png")
    return root


def folder(files: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["sample", "--dataset_mode", "folder", "--data_dir", str(data), "--num_samples", "10",
            "--batch_size", "2", "--model_path", str(files / "a.pt"), *MODEL_FLAGS, "--use_ddim", "True",
            "--timestep_respacing", "ddim2", "--snr", "10", "--out", str(out), "--no-progress", *extra]


def pngs(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def one_line_error(capsys, command: str = "sample") -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith(f"gensemcom {command}: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ------------------------------------------------------------------------------------------
# 1. no stale results


def test_settings_identify_checkpoint_and_items(files, tmp_path):
    out = tmp_path / "o"
    assert main(synthetic(files, out)) == 0
    st = json.loads((out / "settings.json").read_text())
    assert st["checkpoint_sha256"] == hashlib.sha256((files / "a.pt").read_bytes()).hexdigest()
    assert st["items"]["count"] == 2 and len(st["items"]["sha256"]) == 64
    assert st["data"] == {"kind": "synthetic", "height": 32, "width": 64, "seed": 10_000}


def test_other_checkpoint_same_config_refused(files, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(synthetic(files, out)) == 0
    before = pngs(out)
    capsys.readouterr()
    assert main(synthetic(files, out, model="b")) == 2
    line = one_line_error(capsys)
    assert "other settings" in line and "checkpoint_sha256" in line and "--fresh" in line
    assert pngs(out) == before
    # --fresh recomputes with the other weights
    assert main(synthetic(files, out, "--fresh", model="b")) == 0
    after = pngs(out)
    assert after.keys() == before.keys() and after["snr_10/00000.png"] != before["snr_10/00000.png"]
    assert after["original/00000.png"] == before["original/00000.png"]


def test_other_checkpoint_folder_refused(files, tmp_path, capsys):
    out = tmp_path / "o"
    argv = ["sample", "--dataset_mode", "synthetic", "--synthetic_size", "32x64", "--num_samples", "1",
            "--timestep_respacing", "ddim2", "--use_ddim", "True", "--out", str(out), "--no-progress"]
    assert main([*argv, "--checkpoint", str(files / "ckpt_a")]) == 0
    assert main([*argv, "--checkpoint", str(files / "ckpt_b")]) == 2
    assert "checkpoint_sha256" in one_line_error(capsys)


def test_other_data_dir_refused(files, tmp_path, capsys):
    d1 = folder_dataset(tmp_path / "d1", ["x", "y"])
    d2 = folder_dataset(tmp_path / "d2", ["x", "y"], shift=7)  # same names, other pixels
    out = tmp_path / "o"
    assert main(folder(files, d1, out)) == 0
    before = pngs(out)
    assert main(folder(files, d2, out)) == 2
    assert "items" in one_line_error(capsys)
    assert pngs(out) == before
    # the same files in another place are the same data: the run resumes
    d3 = tmp_path / "elsewhere"
    os.rename(d1, d3)
    assert main(folder(files, d3, out)) == 0
    assert pngs(out) == before


def test_same_file_name_in_two_subfolders_gives_two_outputs(files, tmp_path, capsys):
    data = folder_dataset(tmp_path / "d", ["a/x", "b/x"])
    out = tmp_path / "o"
    assert main(folder(files, data, out)) == 0
    assert "wrote 2 images" in capsys.readouterr().out
    for sub in ("original", "label", "snr_10", "received_snr_10"):
        assert sorted(pngs(out / sub)) == ["a/x.png", "b/x.png"], sub
    originals = pngs(out / "original")
    assert originals["a/x.png"] != originals["b/x.png"]


def test_failed_run_of_another_size_leaves_nothing_that_is_kept(files, tmp_path, capsys):
    out = tmp_path / "o"
    # a size the model cannot take is refused before anything is written
    with pytest.raises(SystemExit):
        main(synthetic(files, out, "--synthetic_size", "31x64"))
    assert "multiples of 2" in capsys.readouterr().err
    assert not out.exists()
    # an earlier run of another size that died before regenerating any image: started over
    assert main(synthetic(files, out, "--synthetic_size", "32x32")) == 0
    for d in out.glob("snr_*"):
        for f in d.iterdir():
            f.unlink()
    assert main(synthetic(files, out)) == 0
    for sub in ("original", "label", "snr_10"):
        for f in (out / sub).iterdir():
            assert Image.open(f).size == (64, 32), f


def test_outputs_without_settings_refused(files, tmp_path, capsys):
    out = tmp_path / "o"
    (out / "snr_10").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(out / "snr_10" / "00000.png")
    (out / "notes.txt").write_text("mine")
    assert main(synthetic(files, out)) == 2
    assert "without a settings.json" in one_line_error(capsys)
    assert main(synthetic(files, out, "--fresh")) == 0
    assert Image.open(out / "snr_10" / "00000.png").size == (64, 32)
    assert (out / "notes.txt").read_text() == "mine"  # --fresh removes only what a run writes


# ------------------------------------------------------------------------------------------
# 2. a failed run does not poison its folder


@pytest.mark.parametrize("typo,match", [
    (["--pool", "gaussian"], "--pool 'gaussian'"),
    (["--snr", "nan"], "not an SNR"),
    (["--s", "nan"], "finite"),
    (["--batch_size", "0"], "at least 1"),
    (["--num_samples", "0"], "at least 1"),
    (["--data_dir", "somewhere"], "not used by --dataset_mode synthetic"),
])
def test_refused_command_writes_nothing(files, tmp_path, capsys, typo, match):
    out = tmp_path / "o"
    with pytest.raises(SystemExit):
        main(synthetic(files, out, *typo))
    assert match in capsys.readouterr().err
    assert not out.exists()
    assert main(synthetic(files, out)) == 0  # the corrected command runs


def test_error_found_after_parsing_writes_nothing(files, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(synthetic(files, out, "--num_channels", "64")) == 2  # the checkpoint does not fit
    assert "num_channels" in capsys.readouterr().err
    assert not (out / "settings.json").exists()
    assert main(synthetic(files, out)) == 0


def test_number_forms_do_not_trap(files, tmp_path):
    out = tmp_path / "o"
    assert main(synthetic(files, out, "--s", "2", "--snr", "10,inf")) == 0
    before = pngs(out)
    assert main(synthetic(files, out, "--s", "2.0", "--snr", "1e1,Inf")) == 0  # same numbers: resumes
    assert pngs(out) == before


# ------------------------------------------------------------------------------------------
# 3. one-line errors


def test_negative_snr_list_accepted(files, tmp_path):
    out = tmp_path / "o"
    assert main(synthetic(files, out, "--snr", "-5,0,5", "--channel", "rayleigh")) == 0
    assert json.loads((out / "settings.json").read_text())["snr_db"] == [-5.0, 0.0, 5.0]
    assert sorted(p.name for p in out.glob("snr_*")) == ["snr_-5", "snr_0", "snr_5"]


def test_truncated_safetensors(files, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_bytes((files / "ckpt_a" / "config.json").read_bytes())
    data = (files / "ckpt_a" / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    argv = ["sample", "--dataset_mode", "synthetic", "--checkpoint", str(ckpt), "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    line = one_line_error(capsys)
    assert "model.safetensors" in line and "truncated" in line


def test_invalid_json_names_the_file(files, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes((files / "ckpt_a" / "model.safetensors").read_bytes())
    (ckpt / "config.json").write_text('{"model": {')
    argv = ["sample", "--dataset_mode", "synthetic", "--checkpoint", str(ckpt), "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    line = one_line_error(capsys)
    assert str(ckpt / "config.json") in line and "not valid JSON" in line
    # a damaged settings.json in the output folder
    out = tmp_path / "o2"
    out.mkdir()
    (out / "settings.json").write_text("{oops")
    assert main(synthetic(files, out)) == 2
    line = one_line_error(capsys)
    assert str(out / "settings.json") in line and "--fresh" in line


def test_corrupt_png_names_the_file_before_anything_is_written(files, tmp_path, capsys):
    data = folder_dataset(tmp_path / "d", ["w", "x", "y"])
    bad = data / "labels" / "y.png"  # in the second batch
    bad.write_bytes(bad.read_bytes()[:60])  # truncated
    out = tmp_path / "o"
    assert main(folder(files, data, out)) == 2
    assert str(bad) in one_line_error(capsys)
    assert not out.exists()
    # a label outside the model's classes, also found before the run starts
    folder_dataset(data, ["y"])
    Image.fromarray(np.full((32, 64), 40, np.uint8)).save(data / "labels" / "x.png")
    assert main(folder(files, data, out)) == 2
    assert "labels/x.png: label values 40" in one_line_error(capsys)
    assert not out.exists()
    folder_dataset(data, ["x"])
    assert main(folder(files, data, out)) == 0  # the fixed data runs in the same folder


def test_image_sizes_checked_before_anything_is_written(files, tmp_path, capsys):
    data = folder_dataset(tmp_path / "d", ["x", "y"])
    for sub in ("images", "labels", "instances"):  # y becomes 32x96: its own batch size
        arr = np.asarray(Image.open(data / sub / "y.png"))
        Image.fromarray(np.concatenate([arr, arr[:, :32]], 1)).save(data / sub / "y.png")
    out = tmp_path / "o"
    assert main(folder(files, data, out)) == 2
    line = one_line_error(capsys)
    assert "y.png is 32x96" in line and "x.png is 32x64" in line and "--batch_size 1" in line
    assert not out.exists()
    assert main(folder(files, data, out, "--batch_size", "1")) == 0
    assert Image.open(out / "snr_10" / "y.png").size == (96, 32)
    for sub in ("images", "labels", "instances"):  # 32x65 cannot go through a 2-level U-Net
        arr = np.asarray(Image.open(data / sub / "x.png"))
        Image.fromarray(np.concatenate([arr, arr[:, :1]], 1)).save(data / sub / "x.png")
    assert main(folder(files, data, tmp_path / "o2", "--batch_size", "1")) == 2
    assert "x.png: 32x65" in one_line_error(capsys)


def test_out_that_is_a_file(files, tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("x")
    assert main(synthetic(files, f)) == 2
    assert "is a file" in one_line_error(capsys)
    assert main(synthetic(files, f / "sub")) == 2
    assert "is a file" in one_line_error(capsys)
    assert f.read_text() == "x"


def test_out_not_permitted(files, tmp_path, capsys):
    if os.geteuid() == 0:
        target = Path("/sys/gensemcom-test-out")  # even root may not create folders there
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        target = ro / "o"
    if target.parent.is_dir() and os.access(target.parent, os.W_OK) and os.geteuid() != 0:
        pytest.skip("cannot make an unwritable folder here")
    assert main(synthetic(files, target)) == 2
    assert "cannot write there" in one_line_error(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda(files, tmp_path, capsys):
    assert main(synthetic(files, tmp_path / "o", "--device", "cuda")) == 2
    assert "CUDA is not available" in one_line_error(capsys)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flag", ["--num_channels", "--num_classes"])
def test_zero_sized_model_flags_rejected(files, tmp_path, capsys, flag):
    assert main(synthetic(files, tmp_path / "o", flag, "0")) == 2
    assert f"{flag[2:]}=0: must be at least 1" in one_line_error(capsys)


# ------------------------------------------------------------------------------------------
# 4. progress


def test_per_step_progress_inside_a_sample(files, tmp_path, capsys):
    argv = [a for a in synthetic(files, tmp_path / "o") if a != "--no-progress"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "diffusion steps" in err and "2/2" in err
