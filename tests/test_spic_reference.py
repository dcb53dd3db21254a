"""SPIC against the tensors produced by running frapez1/SPIC's own code (CPU, float32).

Every input (flags, weights, images, labels, timesteps, noise seeds, guidance scale, sizes) is read
from ``tests/data/spic``; nothing is hard-coded, so a regenerated set with other seeds and
timesteps is checked the same way. Tolerances are the reference README's: 1e-5 relative for
single calls and losses, 1e-4 absolute for the 20-step sample.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from gensemcom.diffusion import GaussianDiffusion
from gensemcom.diffusion.schedules import linear_betas
from gensemcom.systems.spic import (SPIC, downsample, spic_bpp_of_files, spic_config_from_flags, spic_label_grey,
                                    spic_label_read_back, spic_map, spic_miou, spic_model_and_diffusion,
                                    spic_timesteps, upsample)

from conftest import assert_close

REF = Path(__file__).parent / "data" / "spic"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cfg() -> dict:
    return json.loads((REF / "spic_tiny_public_config.json").read_text())


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in load_file(str(REF / "spic_tiny_public_io.safetensors")).items()}


@pytest.fixture(scope="module")
def built(cfg):
    """(model, diffusion) from the reference's flags, with its float16-stored weights as float32."""
    model, diffusion = spic_model_and_diffusion(shlex.split(cfg["config_flags"]))
    sd = {k: v.float() for k, v in load_file(str(REF / "spic_tiny_public_weights.safetensors")).items()}
    model.load_state_dict(sd, strict=True)
    return model.eval(), diffusion


def _flag(cfg: dict, name: str):
    return cfg["config"][name]


def test_tiny_network_matches_flags(cfg, built):
    model, _ = built
    assert model.num_parameters() == cfg["num_params"]
    c = model.config
    assert c.concat_channels == 3 and c.layout == "sdm"
    assert c.label_channels == cfg["label_channels"]
    assert not any(".spade_norm." in k for k in model.state_dict())


def test_inputs_map_and_lowres(cfg, io):
    """One-hot with ignore all-zero; area downsample to (small_size, large_size); bilinear upsample."""
    y = spic_map(io["label_ori"], _flag(cfg, "num_classes"), ignore_index=255)
    assert torch.equal(y, io["y"])
    # the labels the model code sees (ignore = num_classes) give the same map
    y2 = spic_map(io["labels"], _flag(cfg, "num_classes"), ignore_index=_flag(cfg, "num_classes"))
    assert torch.equal(y2, io["y"])
    assert (io["y"].sum(1) == (io["label_ori"] != 255).float()).all()
    lowres = downsample(io["x0"], (_flag(cfg, "small_size"), _flag(cfg, "large_size")))
    assert tuple(lowres.shape[2:]) == tuple(cfg["lowres_hw"])
    assert torch.equal(lowres, io["lowres"])
    assert torch.equal(upsample(io["lowres"], cfg["image_hw"]), io["lowres_up"])
    assert torch.equal(io["sample_start"], io["lowres_up"])


def test_forward_input_layout(built, io):
    """Channels 0-2 of the first conv's input are x_t, 3-5 the upsampled low-res image."""
    model, _ = built
    seen = {}
    def grab(module, args, output):
        seen["in"] = args[0].clone()  # returns None: the output is left alone

    hook = model.input_blocks[0][0].register_forward_hook(grab)
    try:
        with torch.no_grad():
            model(io["x"], io["t"], io["y"], concat=upsample(io["lowres"], io["x"].shape[2:]))
    finally:
        hook.remove()
    assert torch.equal(seen["in"], io["net_in"])


def test_forward_both_branches(built, io):
    model, _ = built
    up = upsample(io["lowres"], io["x"].shape[2:])
    with torch.no_grad():
        out = model(io["x"], io["t"], io["y"], concat=up)
        out_u = model(io["x"], io["t"], torch.zeros_like(io["y"]), concat=up)
        both = model(io["x"], io["t"], torch.cat([io["y"], torch.zeros_like(io["y"])]), concat=up, branches=2)
    assert_close(out, io["eps_out"], 1e-5, "eps_out")
    assert_close(out_u, io["eps_out_uncond"], 1e-5, "eps_out_uncond")
    assert_close(both, torch.cat([io["eps_out"], io["eps_out_uncond"]]), 1e-5, "batched branches")


def test_training_loss_hybrid(cfg, built, io):
    model, _ = built
    model_cfg, diff_cfg, _ = spic_config_from_flags(shlex.split(cfg["config_flags"]))
    assert diff_cfg.loss == "hybrid"
    full = GaussianDiffusion(linear_betas(_flag(cfg, "diffusion_steps")), None, loss="hybrid")
    assert torch.equal(io["train_t"], torch.tensor(cfg["train_t"]))
    x_t = full.q_sample(io["x0"], io["train_t"], io["train_noise"])
    assert_close(x_t, io["train_x_t"], 1e-6, "q_sample")
    up = upsample(downsample(io["x0"], cfg["lowres_hw"]), io["x0"].shape[2:])
    with torch.no_grad():
        terms = full.training_losses(model, io["x0"], io["train_t"], io["y"], noise=io["train_noise"],
                                     concat=up, return_terms=True)
    assert_close(terms["mse"], io["loss_mse"], 1e-5, "loss_mse")
    assert_close(terms["vb"], io["loss_vb"], 1e-5, "loss_vb")
    assert_close(terms["loss"], io["loss"], 1e-5, "loss")


def test_respacing_with_max_iter_time(cfg, io, built):
    steps = _flag(cfg, "diffusion_steps")
    kept = spic_timesteps(steps, _flag(cfg, "timestep_respacing"), _flag(cfg, "max_iter_time"))
    assert kept == io["respaced_timesteps"].tolist()
    assert len(kept) == cfg["sample_steps"]
    assert spic_timesteps(steps, _flag(cfg, "timestep_respacing"), steps) == io["respaced100_all"].tolist()
    for key, extra in cfg["extra_respacings"].items():
        assert spic_timesteps(steps, extra["timestep_respacing"], extra["max_iter_time"]) == io[key].tolist(), key
    _, diffusion = built
    assert diffusion.timesteps == kept
    np.testing.assert_allclose(linear_betas(steps), io["betas_linear1000"].numpy(), rtol=1e-12, atol=0)
    np.testing.assert_allclose(diffusion.betas, io["respaced_betas"].numpy(), rtol=1e-12, atol=0)


def _spic(cfg, built, scale: float) -> SPIC:
    model, diffusion = built
    return SPIC(model, diffusion, num_classes=_flag(cfg, "num_classes"),
                coarse_size=(_flag(cfg, "small_size"), _flag(cfg, "large_size")), guidance_scale=scale,
                method="ddpm", start="coarse", clip_denoised=cfg["clip_denoised"],
                max_iter_time=_flag(cfg, "max_iter_time"))


def test_sample_noise_is_the_seeded_generator(cfg, io):
    g = torch.Generator().manual_seed(cfg["sample_rng_seed"])
    for k in range(io["sample_step_noise"].shape[0]):
        assert torch.equal(torch.randn(tuple(io["sample_step_noise"].shape[1:]), generator=g),
                           io["sample_step_noise"][k])


@pytest.mark.parametrize("key,scale", [("sample", "guidance_scale"), ("sample_s1", 1.0)])
def test_complete_guided_sample(cfg, built, io, key, scale):
    """SPIC's 20-step chain from the un-noised upsampled coarse image, every step's x checked."""
    s = cfg[scale] if isinstance(scale, str) else scale
    spic = _spic(cfg, built, s)
    traj = []
    g = torch.Generator().manual_seed(cfg["sample_rng_seed"])
    labels = io["label_ori"]
    out = spic.receive(labels, io["lowres"], g, callback=lambda i, x, o: traj.append(x.clone()))
    assert len(traj) == cfg["sample_steps"]
    if key == "sample":
        for k, x in enumerate(traj):
            assert (x - io["sample_traj"][k]).abs().max().item() <= 1e-4, f"step {k}"
    assert (out - io[key]).abs().max().item() <= 1e-4


def test_sample_start_step_and_noise_explicit(cfg, built, io):
    """The same chain through GaussianDiffusion.sample with the recorded noise fed step by step."""
    model, diffusion = built
    noises = iter(io["sample_step_noise"])
    first = []
    last = diffusion.num_timesteps - 1
    x = io["sample_start"]
    up = io["lowres_up"]
    with torch.no_grad():
        for k, i in enumerate(range(last, -1, -1)):
            x = diffusion.p_sample(model, x, i, io["y"], guidance_scale=cfg["guidance_scale"], noise=next(noises),
                                   concat=up, clip_denoised=cfg["clip_denoised"])
            first.append(diffusion.timesteps[i])
    assert first[0] == io["respaced_timesteps"][-1].item()
    assert (x - io["sample"]).abs().max().item() <= 1e-4


def test_miou_formula(cfg, io):
    got = spic_miou(io["miou_gt"], io["miou_pred"], num_classes=_flag(cfg, "num_classes"))
    assert got == pytest.approx(io["miou"].item(), rel=1e-12, abs=1e-15)
    assert got == pytest.approx(cfg["miou"], rel=1e-12)


def test_label_png_grey_values(cfg):
    lp = cfg["label_png"]
    grey = spic_label_grey(np.array(lp["trainId"]))
    assert grey.tolist() == lp["stored_grey"]
    assert spic_label_read_back(grey).tolist() == lp["read_back_id"]


def test_bpp_formula(cfg):
    ex = cfg["bpp_example"]
    coarse = spic_bpp_of_files(ex["file_bytes"]["bpg"])
    ssm = spic_bpp_of_files(ex["file_bytes"]["flif"])
    assert coarse == pytest.approx(ex["BPP_coarse"], rel=1e-15)
    assert ssm == pytest.approx(ex["BPP_SSM"], rel=1e-15)
    total = spic_bpp_of_files(ex["file_bytes"]["bpg"], ex["file_bytes"]["flif"])
    assert round(total, 4) == ex["printed_BPP"]
    # the fixed divisor is 512 x 256 whatever the image size
    m = re.search(r"\((\d+)\*(\d+)\)", ex["formula"])
    assert m and int(m.group(1)) * int(m.group(2)) == 131072


def test_full_size_manifest_on_meta():
    manifest = json.loads((REF / "spic_full_manifests.json").read_text())
    for name, entry in manifest.items():
        model, diffusion = spic_model_and_diffusion(entry["config"], device="meta")
        sd = model.state_dict()
        assert {k: list(v.shape) for k, v in sd.items()} == entry["state_dict"], name
        assert sum(v.numel() for v in sd.values()) == entry["num_params"], name
        assert diffusion.timesteps == entry["respaced_timesteps"], name
        # the README's test command, verbatim, gives the same network and window
        flags = [a for a in shlex.split(entry["command"]) if not a.endswith(".py")]
        m2, d2 = spic_model_and_diffusion(flags, device="meta")
        assert m2.config == model.config and d2.timesteps == diffusion.timesteps
