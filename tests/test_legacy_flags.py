"""The migration API: guided-diffusion/GESCO flags -> (model, diffusion)."""

from __future__ import annotations

import warnings

import pytest

from gensemcom.legacy import LegacyFlagWarning, config_from_flags, model_and_diffusion_from_flags


def _argv(flags: dict) -> list[str]:
    argv = []
    for k, v in flags.items():
        argv += [f"--{k}", str(v)]
    return argv


def test_argv_and_dict_agree(ref_flags):
    assert config_from_flags(_argv(ref_flags)) == config_from_flags(ref_flags)


def test_string_booleans(ref_flags):
    as_strings = {k: (str(v) if isinstance(v, bool) else v) for k, v in ref_flags.items()}
    assert config_from_flags(as_strings) == config_from_flags(ref_flags)
    with pytest.raises(ValueError, match="learn_sigma: expected a boolean"):
        config_from_flags(dict(ref_flags, learn_sigma="maybe"))


def test_one_hot_label_default_warns_loudly(ref_flags):
    flags = {k: v for k, v in ref_flags.items() if k != "one_hot_label"}
    with pytest.warns(LegacyFlagWarning, match="one_hot_label was left at its default False"):
        model_cfg, _ = config_from_flags(flags)
    assert model_cfg.label_channels == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model_cfg, _ = config_from_flags(ref_flags)  # explicit True: silent
    assert model_cfg.label_channels == 5 + 1


def test_no_instance_drops_edge_channel(ref_flags):
    cfg, _ = config_from_flags(dict(ref_flags, no_instance=True))
    assert cfg.label_channels == 5


def test_flag_translation(ref_flags):
    cfg, dcfg = config_from_flags(dict(ref_flags, predict_xstart=True, learn_sigma=False,
                                       use_new_attention_order=True, rescale_timesteps=True,
                                       noise_schedule="cosine", diffusion_steps=4000,
                                       timestep_respacing="ddim50"))
    assert cfg.out_channels == 3 and cfg.attention_order == "new"
    assert (dcfg.prediction, dcfg.variance, dcfg.schedule, dcfg.steps) == ("x0", "fixed_large", "cosine", 4000)
    assert dcfg.rescale_timesteps and dcfg.respacing == "ddim50"
    _, sdm = config_from_flags(ref_flags, reference="sdm")
    assert sdm.loss == "hybrid"
    _, gesco = config_from_flags(ref_flags)
    assert gesco.loss == "mse"


def test_default_channel_mult_by_image_size(ref_flags):
    cfg, _ = config_from_flags(dict(ref_flags, image_size=64, channel_mult="", attention_resolutions="16"))
    assert cfg.channel_mult == (1, 2, 3, 4)
    with pytest.raises(ValueError, match="no default channel_mult for image_size 32"):
        config_from_flags(dict(ref_flags, channel_mult=""))


@pytest.mark.parametrize("bad,match", [
    ({"class_cond": False}, "class_cond=False"),
    ({"num_chanels": 64}, "unknown model/diffusion flags: \\['num_chanels'\\]"),
    ({"num_res_blocks": "two"}, "num_res_blocks: expected a int"),
    ({"timestep_respacing": "ddim600"}, "cannot take exactly 600 of 1000 steps"),
    ({"noise_schedule": "sigmoid"}, "unknown noise schedule 'sigmoid'"),
    ({"num_channels": 48}, "multiple of 32"),
])
def test_bad_flags_raise_clear_errors(ref_flags, bad, match):
    with pytest.raises(ValueError, match=match):
        model_and_diffusion_from_flags(dict(ref_flags, **bad))


def test_unknown_argv_flag(ref_flags):
    with pytest.raises(ValueError, match="--snr"):
        config_from_flags(_argv(ref_flags) + ["--snr", "10"])
