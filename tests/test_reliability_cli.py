"""The command line as a new user meets it (issue 9 items 4-5, issue 8 item 4): help that answers at
once, names every flag and its default, one parent parser for the shared options, names that do not
collide, `gensemcom systems`, and one-line errors from the dispatcher."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

import pytest

from gensemcom.cli import sample, systems, train, train_jscc, train_segmenter
from gensemcom.cli.common import snr_list
from gensemcom.cli.main import COMMANDS, main

PARSERS = {"sample": sample.build_parser, "train": train.build_parser, "train_jscc": train_jscc.build_parser,
           "train_segmenter": train_segmenter.build_parser, "systems": systems.build_parser}
WITH_COMMON = ("sample", "train", "train_jscc", "train_segmenter")


def test_help_does_not_import_torch():
    code = ("import sys\nfrom gensemcom.cli.main import main\n"
            f"for c in {list(PARSERS)!r}:\n"
            "    try:\n        main([c, '--help'])\n    except SystemExit as e:\n        assert e.code == 0, c\n"
            "print(sorted(m for m in ('torch', 'numpy', 'PIL') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("command", list(PARSERS))
def test_every_option_has_help_and_no_rest_markup(command):
    parser = PARSERS[command]()
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or not action.option_strings and action.dest == "help":
            continue
        assert action.help and action.help.strip(), f"{command} {action.option_strings or action.dest}"
    text = parser.format_help()
    for markup in ("``", ":func:", ":class:", ":data:", ":mod:", ":meth:"):
        assert markup not in text, (command, markup)


def test_defaults_are_shown():
    text = re.sub(r"\s+", " ", sample.build_parser().format_help())
    assert "--batch_size BATCH_SIZE images per batch (default: 1)" in text
    assert "--snr SNR SNR(s) in dB" in text and "(default: 100)" in text
    assert "(reference default: 1000)" in text  # --diffusion_steps, not pretending to be ours
    text = re.sub(r"\s+", " ", train.build_parser().format_help())
    assert "--lr LR learning rate (AdamW) (default: 0.0001)" in text


@pytest.mark.parametrize("command", WITH_COMMON)
def test_common_options_spelled_one_way(command):
    parser = PARSERS[command]()
    a = parser.parse_args(["--device", "cpu", "--seed", "3", "--no-progress", "--out", "somewhere"])
    assert (a.device, a.seed, a.no_progress, a.out) == ("cpu", 3, True, "somewhere")
    assert parser.parse_args(["--no_progress"]).no_progress  # old scripts keep working
    assert parser.parse_args([]).no_progress is False
    text = parser.format_help()
    assert "--no-progress" in text and "--no_progress" not in text
    assert "common options" in text


@pytest.mark.parametrize("command,new,default", [("train", "--train_steps", None),
                                                 ("train_jscc", "--train-steps", 1200),
                                                 ("train_segmenter", "--train-steps", 800)])
def test_training_steps_do_not_collide_with_sampling_steps(command, new, default, capsys):
    parser = PARSERS[command]()
    assert parser.parse_args([]).train_steps == default
    assert parser.parse_args([new, "7"]).train_steps == 7
    assert parser.parse_args(["--steps", "5"]).train_steps == 5  # the old spelling, with a note
    assert f"--steps is now spelled {new}" in capsys.readouterr().err
    text = parser.format_help()
    assert new in text and "--steps " not in text


@pytest.mark.parametrize("argv,match", [
    (["train", "--batch_size", "0"], "at least 1"),
    (["train", "--lr", "nan"], "finite"),
    (["train", "--snr_range", "20,0"], "LO <= HI"),
    (["train_jscc", "--batch-size", "0"], "at least 1"),
    (["train_jscc", "--snr-range", "nan,3"], "LO <= HI"),
    (["train_segmenter", "--widths", "0,8"], "at least 1"),
    (["sample", "--timesteps", "0"], "at least 1"),
    (["sample", "--eta", "-1"], ">= 0"),
])
def test_nonsense_refused_at_parse_time(argv, match, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and match in capsys.readouterr().err


def test_snr_lists():
    assert snr_list("-5,0,5") == [-5.0, 0.0, 5.0]
    assert snr_list(" 10 , inf") == [10.0, float("inf")]
    for bad in ("nan", "5,nan", "-inf", "ten", "5,,6"):
        with pytest.raises(argparse.ArgumentTypeError):
            snr_list(bad)


def test_systems_lists_every_registered_system(capsys):
    from gensemcom.systems.registry import available_systems

    assert main(["systems"]) == 0
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    records = available_systems()
    assert {"gesco", "gesco-map", "deepjscc", "jpeg+ldpc", "map+ldpc"} <= {r.name for r in records}
    for r in records:
        for value in (r.usage, r.description, r.sends, r.receiver, r.cost):
            assert re.sub(r"\s+", " ", value) in text, (r.name, value)
    assert main(["systems", "--json", "gesco", "jpeg+ldpc:16qam-1/2"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["gesco", "jpeg+ldpc"]
    assert set(rows[0]) == {"name", "usage", "description", "sends", "receiver", "cost"}
    assert main(["systems", "nosuch"]) == 2
    assert "gensemcom systems: error: unknown system(s) nosuch" in capsys.readouterr().err


def test_dispatcher_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name.replace("_", "-") in out
    assert "systems" in COMMANDS


@pytest.mark.parametrize("command", ["train_jscc", "train_segmenter"])
def test_training_device_and_out_errors_are_one_line(command, tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("x")
    assert main([command, "--out", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gensemcom {command}: error: --out {f}: is a file") and "Traceback" not in err
    assert main([command, "--out", str(tmp_path / "o"), "--device", "nosuch"]) == 2
    assert "not a device" in capsys.readouterr().err


def test_evaluate_rejects_zero_scenes(tmp_path, capsys):
    assert main(["evaluate", "--data", "synthetic:0", "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "at least one scene" in capsys.readouterr().err


def test_pyproject_builds_without_deprecation_banner(tmp_path, monkeypatch):
    """Issue 9 item 7: the `license = {text = ...}` table made setuptools print a banner per build."""
    import warnings
    from pathlib import Path

    pytest.importorskip("setuptools")
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)  # readme and package paths are relative to the project
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), root / "pyproject.toml")
    assert [str(w.message) for w in caught if "deprecat" in str(w.message).lower()] == []
    assert getattr(dist.metadata, "license_expression", None) == "MIT"


def test_train_checks_its_folder_before_training(tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("x")
    tiny = ["--dataset_mode", "synthetic", "--train_steps", "1", "--synthetic_count", "2", "--synthetic_size",
            "32x64", "--image_size", "32", "--num_channels", "32", "--channel_mult", "1,2",
            "--attention_resolutions", "16", "--num_head_channels", "32", "--num_res_blocks", "1", "--no-progress"]
    assert main(["train", *tiny, "--out", str(f / "run")]) == 2
    assert f"--out {f / 'run'}: {f} is a file" in capsys.readouterr().err
    assert main(["train", *tiny, "--out", "/sys/gensemcom-test-run"]) == 2  # not permitted, even to root
    assert "cannot write there" in capsys.readouterr().err
    assert main(["train", *tiny, "--out", str(tmp_path / "o"), "--num_channels", "0"]) == 2
    assert "num_channels=0: must be at least 1" in capsys.readouterr().err
