"""Our core against every tensor the original GESCO code produced (tests/data/sdm)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import assert_close
from gensemcom.diffusion import GaussianDiffusion, cosine_betas, linear_betas, respace_timesteps
from gensemcom.legacy import model_and_diffusion_from_flags


def test_network_output(ref_model, ref_io):
    model, _ = ref_model
    with torch.no_grad():
        out = model(ref_io["x"], ref_io["t"], ref_io["y"])
    assert out.shape == (2, 6, 32, 64)
    assert_close(out, ref_io["eps_out"], 1e-5, "eps_out")


def test_network_output_with_cached_condition(ref_model, ref_io):
    model, _ = ref_model
    with torch.no_grad():
        cond = model.encode_condition(ref_io["y"])
        first = model(ref_io["x"], ref_io["t"], cond)
        n_cached = len(cond)
        second = model(ref_io["x"], ref_io["t"], cond)
    # one (gamma, beta) pair per SPADE norm of the middle and decoder blocks, filled once
    assert n_cached == len(list(model.spade_norms())) > 0
    assert len(cond) == n_cached
    assert_close(first, ref_io["eps_out"], 1e-5, "eps_out (cached)")
    assert torch.equal(first, second)


@pytest.mark.parametrize("clip,key", [(True, "ddim25_s2_sample"), (False, "ddim25_s2_noclip_sample")])
@pytest.mark.parametrize("cache", [True, False])
def test_ddim_sample_with_guidance(ref_model, ref_io, clip, key, cache):
    model, diffusion = ref_model
    assert diffusion.timesteps == ref_io["ddim25_timesteps"].tolist()
    x0 = diffusion.sample(model, ref_io["y"], noise=ref_io["x_T"], guidance_scale=2.0, method="ddim",
                          eta=0.0, clip_denoised=clip, cache_condition=cache)
    assert_close(x0, ref_io[key], 1e-4, key)


def test_ddpm_ancestral_step(ref_flags, ref_model, ref_io):
    model, _ = ref_model
    _, d50 = model_and_diffusion_from_flags(dict(ref_flags, timestep_respacing="50"))
    assert d50.timesteps == ref_io["respaced50_timesteps"].tolist()
    with torch.no_grad():
        step = d50.p_sample(model, ref_io["x_T"], 30, ref_io["y"], guidance_scale=1.5,
                            noise=ref_io["ddpm50_step_noise"])
    assert_close(step, ref_io["ddpm50_t30_s1p5_step"], 1e-5, "ddpm step")


def test_noise_mse_loss(ref_flags, ref_model, ref_io):
    model, _ = ref_model
    _, d = model_and_diffusion_from_flags(dict(ref_flags, timestep_respacing=""))
    with torch.no_grad():
        loss = d.training_losses(model, ref_io["x0"], ref_io["train_t"], ref_io["y"], noise=ref_io["train_noise"])
    assert loss.shape == (2,)
    torch.testing.assert_close(loss, ref_io["loss"], rtol=1e-5, atol=0)


def test_hybrid_loss_sdm(ref_flags, ref_model, ref_io, ref_extra):
    model, _ = ref_model
    _, d = model_and_diffusion_from_flags(dict(ref_flags, timestep_respacing=""), reference="sdm")
    with torch.no_grad():
        terms = d.training_losses(model, ref_extra["inv_x0"], ref_extra["hybrid_t"], ref_io["y"],
                                  noise=ref_extra["hybrid_noise"], return_terms=True)
    # hybrid_t holds t = 0 (decoder NLL branch) and t > 0 (KL branch)
    assert 0 in ref_extra["hybrid_t"].tolist()
    torch.testing.assert_close(terms["mse"], ref_extra["hybrid_mse"], rtol=1e-5, atol=0)
    torch.testing.assert_close(terms["vb"], ref_extra["hybrid_vb"], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(terms["loss"], ref_extra["hybrid_loss"], rtol=1e-5, atol=1e-6)


def test_ddim_inversion(ref_model, ref_io, ref_extra):
    model, diffusion = ref_model
    x_T = diffusion.invert(model, ref_extra["inv_x0"], ref_io["y"])
    assert_close(x_T, ref_extra["ddim25_inverted_xT"], 1e-4, "inverted x_T")


def test_schedules(ref_io, ref_extra):
    # The reference always wraps its process in the respacing class, which recomputes
    # beta_i = 1 - abar_i / abar_{i-1}; our process does the same, bit for bit.
    np.testing.assert_array_equal(GaussianDiffusion(linear_betas(1000)).betas, ref_io["betas_linear1000"].numpy())
    np.testing.assert_allclose(linear_betas(1000), ref_io["betas_linear1000"].numpy(), rtol=1e-12)
    np.testing.assert_allclose(cosine_betas(1000), ref_extra["betas_cosine1000"].numpy(), rtol=1e-12)
    np.testing.assert_allclose(cosine_betas(4000), ref_extra["betas_cosine4000"].numpy(), rtol=1e-12)


def test_respacing(ref_io):
    assert respace_timesteps(1000, "ddim25") == ref_io["ddim25_timesteps"].tolist()
    assert respace_timesteps(1000, "50") == ref_io["respaced50_timesteps"].tolist()
    assert respace_timesteps(1000, "10,15,20") == ref_io["respaced_10_15_20"].tolist()
    d = GaussianDiffusion(linear_betas(1000), "ddim25")
    assert d.num_timesteps == 25 and d.timesteps == list(range(0, 1000, 40))
