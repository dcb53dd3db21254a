"""Loading released-style checkpoints, our safetensors format, and mismatch diagnostics."""

from __future__ import annotations

import json

import pytest
import torch

from gensemcom.legacy import model_and_diffusion_from_flags
from gensemcom.models.io import (CheckpointMismatchError, load_checkpoint, load_pretrained,
                                 read_state_dict, save_pretrained)


def test_pt_file_with_model_prefix_loads_strictly(tmp_path, ref_flags, ref_weights, ref_io):
    # Q-GESCO saves keys prefixed with "model."; released GESCO .pt files have none.
    path = tmp_path / "ckpt.pt"
    torch.save({f"model.{k}": v for k, v in ref_weights.items()}, path)
    model, _ = model_and_diffusion_from_flags(ref_flags)
    load_checkpoint(model, path)
    with torch.no_grad():
        out = model.eval()(ref_io["x"], ref_io["t"], ref_io["y"])
    torch.testing.assert_close(out, ref_io["eps_out"], rtol=1e-5, atol=1e-5)


class NotATensor:  # an arbitrary class: weights_only=True must refuse to unpickle it
    pass


def test_pt_file_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"a": NotATensor()}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        read_state_dict(path)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        read_state_dict(tmp_path / "nope.pt")


def test_safetensors_round_trip_with_config(tmp_path, ref_model, ref_io):
    model, diffusion = ref_model
    save_pretrained(tmp_path / "m", model, diffusion)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model"]["label_channels"] == 6
    assert config["diffusion"]["respacing"] == "ddim25"
    loaded, ldiff, _ = load_pretrained(tmp_path / "m")
    assert ldiff.timesteps == diffusion.timesteps
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    with torch.no_grad():
        assert torch.equal(loaded(ref_io["x"], ref_io["t"], ref_io["y"]), model(ref_io["x"], ref_io["t"], ref_io["y"]))


def test_load_pretrained_names_missing_file(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_pretrained(tmp_path)


def _error(flags, weights) -> CheckpointMismatchError:
    model, _ = model_and_diffusion_from_flags(flags)
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(model, weights)
    return info.value


def test_mismatch_label_channels_names_keys_and_flag(ref_flags, ref_weights):
    err = _error(dict(ref_flags, num_classes=7), ref_weights)
    msg = str(err)
    assert "middle_block.0.in_norm.mlp_shared.0.weight [128, 8, 3, 3] vs [128, 6, 3, 3]" in msg
    assert "num_classes / no_instance / one_hot_label" in msg
    assert not err.missing and not err.unexpected and err.mismatched


def test_mismatch_learn_sigma(ref_flags, ref_weights):
    msg = str(_error(dict(ref_flags, learn_sigma=False), ref_weights))
    assert "out.2.weight" in msg and "learn_sigma" in msg


def test_mismatch_layout_sdm_checkpoint(ref_flags, ref_weights):
    # an SDM-style file: no encoder spade_norm tensors
    sdm_like = {k: v for k, v in ref_weights.items() if ".spade_norm." not in k}
    err = _error(ref_flags, sdm_like)
    assert err.missing and all(".spade_norm." in k for k in err.missing)
    assert "layout='sdm'" in str(err)
    model, _ = model_and_diffusion_from_flags(ref_flags, reference="sdm")
    load_checkpoint(model, sdm_like)  # and the suggested fix works


def test_mismatch_attention_resolutions(ref_flags, ref_weights):
    err = _error(dict(ref_flags, attention_resolutions="16"), ref_weights)
    assert any(".qkv." in k for k in err.unexpected)
    assert "attention_resolutions" in str(err)


def test_mismatch_one_hot_label_default_trap(ref_flags, ref_weights):
    flags = {k: v for k, v in ref_flags.items() if k != "one_hot_label"}
    with pytest.warns(UserWarning):
        err = _error(flags, ref_weights)
    assert "[128, 2, 3, 3] vs [128, 6, 3, 3]" in str(err)
    assert "one_hot_label=False gives 2 channels" in str(err)


HINT_BASE = dict(class_cond=True, one_hot_label=True, image_size=32, channel_mult="1,2", num_classes=5,
                 attention_resolutions="16", num_head_channels=32, num_res_blocks=1, num_channels=32)


@pytest.mark.parametrize("changed,blamed,not_blamed", [
    # another width changes out.2.weight's input dimension only: learn_sigma must not be blamed
    (dict(num_channels=64), "num_channels", "learn_sigma"),
    (dict(learn_sigma=True), "learn_sigma", "num_channels"),
    (dict(channel_mult="1,3"), "channel_mult differs", "learn_sigma"),
    (dict(num_classes=7), "num_classes", "learn_sigma"),
])
def test_mismatch_hint_names_the_field_that_differs(changed, blamed, not_blamed):
    model, _ = model_and_diffusion_from_flags(HINT_BASE)
    other, _ = model_and_diffusion_from_flags(dict(HINT_BASE, **changed))
    with pytest.raises(CheckpointMismatchError) as e:
        load_checkpoint(model, other.state_dict())
    hints = str(e.value).split("probably:")[1]
    assert blamed in hints and not_blamed not in hints, hints


def test_truncated_safetensors_and_bad_config_name_the_file(tmp_path):
    model, diffusion = model_and_diffusion_from_flags(HINT_BASE)
    save_pretrained(tmp_path / "m", model, diffusion)
    w = tmp_path / "m" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(ValueError, match="model.safetensors is not a readable safetensors file"):
        read_state_dict(w)
    (tmp_path / "m" / "config.json").write_text("{\n  \"model\": ")
    with pytest.raises(ValueError, match=r"config.json is not valid JSON \(line 2"):
        load_pretrained(tmp_path / "m")
