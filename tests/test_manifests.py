"""The full-size presets have exactly the released checkpoints' keys, shapes and parameter counts
(built on the meta device: no memory, no compute)."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import SDM
from gensemcom.legacy import config_from_flags
from gensemcom.models import SemanticUNet
from gensemcom.models.presets import GESCO_PRESETS, preset_config

MANIFESTS = json.loads((SDM / "sdm_full_manifests.json").read_text())


@pytest.mark.parametrize("name", ["cityscapes", "ade20k", "coco"])
def test_preset_matches_manifest(name):
    manifest = MANIFESTS[name]
    cfg, _ = preset_config(name)
    with torch.device("meta"):
        model = SemanticUNet(cfg)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(shapes) - set(manifest["state_dict"])) == []
    assert sorted(set(manifest["state_dict"]) - set(shapes)) == []
    assert shapes == manifest["state_dict"]
    assert model.num_parameters() == manifest["num_params"]


@pytest.mark.parametrize("name", ["cityscapes", "ade20k", "coco"])
def test_manifest_flags_build_the_same_model(name):
    """The manifest's own flag dict, through the migration API, gives the same keys."""
    cfg, diff = config_from_flags(MANIFESTS[name]["config"])
    preset, _ = preset_config(name)
    assert cfg == preset
    assert diff.steps == 1000 and diff.variance == "learned_range"


def test_cityscapes_label_channels_and_dead_spade():
    cfg, _ = preset_config("cityscapes")
    assert cfg.label_channels == 36
    with torch.device("meta"):
        gesco = SemanticUNet(cfg)
    # GESCO's unused encoder spade_norm: 20.7 M parameters present but never called
    assert gesco.num_parameters() - gesco.num_parameters(live_only=True) == 20_722_688
    sdm_cfg, _ = preset_config("cityscapes", reference="sdm")
    with torch.device("meta"):
        sdm = SemanticUNet(sdm_cfg)
    assert sdm.num_parameters() == gesco.num_parameters(live_only=True)
    assert set(GESCO_PRESETS) == {"cityscapes", "ade20k", "coco"}
