"""Diffusion behaviour: closed-form statistics, sampler semantics, reproducibility, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gensemcom.diffusion import DiffusionConfig, GaussianDiffusion, linear_betas, respace_timesteps
from test_semantic_unet import onehot, tiny


@pytest.fixture(scope="module")
def model():
    return tiny(label_channels=4)


def test_q_sample_closed_form_statistics():
    d = GaussianDiffusion(linear_betas(1000))
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((1, 1, 400, 250), 0.7)  # 10^5 values
    for t in (0, 250, 999):
        z = torch.randn(x0.shape, generator=g)
        xt = d.q_sample(x0, t, z)
        abar = float(np.prod(1 - linear_betas(1000)[: t + 1]))
        assert xt.mean().item() == pytest.approx(math.sqrt(abar) * 0.7, abs=4 * math.sqrt((1 - abar) / 1e5) + 1e-6)
        assert xt.var().item() == pytest.approx(1 - abar, rel=0.01)


def test_respaced_process_keeps_marginals():
    """A respaced step i has the same abar as original step timesteps[i]."""
    full = GaussianDiffusion(linear_betas(1000))
    sp = GaussianDiffusion(linear_betas(1000), "ddim50")
    np.testing.assert_allclose(sp.alphas_cumprod, full.alphas_cumprod[sp.timesteps], rtol=1e-12)
    assert sp.timesteps == sorted(sp.timesteps) and len(sp.timesteps) == 50


def test_ddim_eta1_noise_is_posterior_std():
    """At eta = 1 the DDIM sigma^2 equals the DDPM posterior variance (Song et al.)."""
    d = GaussianDiffusion(linear_betas(1000), "ddim20")
    x_t = torch.zeros(1, 1, 1, 1)
    out = {"pred_x0": torch.zeros(1, 1, 1, 1)}
    for i in (1, 10, 19):
        t = torch.tensor([i])
        z = torch.ones(1, 1, 1, 1)
        sigma = (d.ddim_step(out, x_t, t, eta=1.0, noise=z) - d.ddim_step(out, x_t, t, eta=1.0, noise=0 * z)).item()
        post_var = d._arrays["posterior_variance"][i]
        # float32 schedule arithmetic (1 - abar/abar_prev cancels): agree to 1e-4 relative
        assert sigma == pytest.approx(math.sqrt(post_var), rel=1e-4)


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_fixed_variances(variance):
    d = GaussianDiffusion(linear_betas(100), variance=variance)
    b = d.betas
    ab = np.cumprod(1 - b)
    ab_prev = np.append(1, ab[:-1])
    post = b * (1 - ab_prev) / (1 - ab)
    t = torch.tensor([0, 5, 99])
    out = d.p_mean_variance(torch.zeros(3, 3, 2, 2), torch.zeros(3, 3, 2, 2), t)
    expected = post if variance == "fixed_small" else np.append(post[1], b[1:])
    np.testing.assert_allclose(out["variance"][:, 0, 0, 0].numpy(), expected[[0, 5, 99]], rtol=1e-6)


def test_guidance_off_at_scale_one_or_below(model):
    d = GaussianDiffusion(linear_betas(1000), "ddim5")
    y = onehot(1, 4, 32, 32)
    z = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    a = d.sample(model, y, noise=z, guidance_scale=1.0)
    b = d.sample(model, y, noise=z, guidance_scale=0.5)
    c = d.sample(model, y, noise=z, guidance_scale=3.0)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-4


def test_guidance_formula_on_noise_channels_only(model):
    """One step against two explicit passes: eps_u + s (eps_c - eps_u), variance from the cond pass."""
    d = GaussianDiffusion(linear_betas(1000), "10")
    y = onehot(2, 4, 32, 32)
    g = torch.Generator().manual_seed(3)
    x, z = torch.randn(2, 3, 32, 32, generator=g), torch.randn(2, 3, 32, 32, generator=g)
    t = torch.tensor([7, 7])
    with torch.no_grad():
        ts = d.model_timesteps(t)
        oc, ou = model(x, ts, y), model(x, ts, torch.zeros_like(y))
        mixed = torch.cat([ou[:, :3] + 2.5 * (oc[:, :3] - ou[:, :3]), oc[:, 3:]], dim=1)
        expected = d.ddpm_step(d.p_mean_variance(mixed, x, t), t, z)
        got = d.p_sample(model, x, t, y, guidance_scale=2.5, noise=z)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_sampling_is_reproducible_from_the_generator(model):
    d = GaussianDiffusion(linear_betas(1000), "ddim5")
    y = onehot(2, 4, 32, 32)
    runs = [d.sample(model, y, method="ddpm", generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1])
    assert (runs[0] - runs[2]).abs().max() > 1e-3
    eta = [d.sample(model, y, eta=0.5, generator=torch.Generator().manual_seed(s)) for s in (4, 4)]
    assert torch.equal(eta[0], eta[1])


def test_start_from_image_at_a_step(model):
    """SPIC-style: q_sample the given image to start_step, then run the remaining steps."""
    d = GaussianDiffusion(linear_betas(1000), "ddim20")
    y = onehot(1, 4, 32, 32)
    g = torch.Generator().manual_seed(0)
    image, z = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1, torch.randn(1, 3, 32, 32, generator=g)
    k = 4
    seen = []
    out = d.sample(model, y, noise=z, init_image=image, start_step=k, callback=lambda i, x, o: seen.append(i))
    assert seen == [4, 3, 2, 1, 0]
    same = d.sample(model, y, noise=d.q_sample(image, k, z), start_step=k)
    torch.testing.assert_close(out, same, rtol=0, atol=1e-6)
    # Starting late from the image keeps much more of it than a full run from noise
    full = d.sample(model, y, noise=z)
    assert (out - image).abs().mean() < (full - image).abs().mean()


def test_inversion_then_sampling_round_trip():
    """DDIM inversion is the reverse ODE: with an x0-predicting oracle, it round-trips exactly."""
    torch.manual_seed(0)
    target = torch.rand(1, 3, 8, 8) * 1.6 - 0.8

    class Oracle(torch.nn.Module):  # predicts eps consistent with a fixed x0
        def __init__(self, d):
            super().__init__()
            self.d = d

        def forward(self, x, ts, y):
            t = torch.as_tensor([self.d.timesteps.index(int(v)) for v in ts])
            return self.d.predict_eps_from_x0(x, t, target.expand_as(x))

    d = GaussianDiffusion(linear_betas(1000), "ddim10", variance="fixed_small")
    oracle = Oracle(d)
    y = torch.zeros(1, 1, 8, 8)
    x_T = d.invert(oracle, target, y)
    back = d.sample(oracle, y, noise=x_T)
    torch.testing.assert_close(back, target, rtol=0, atol=1e-5)


def test_training_loss_modes(model):
    y = onehot(2, 4, 32, 32)
    g = torch.Generator().manual_seed(0)
    x0, z = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, torch.randn(2, 3, 32, 32, generator=g)
    t = torch.tensor([3, 800])
    d_x0 = GaussianDiffusion(linear_betas(1000), prediction="x0", variance="fixed_large")
    with torch.no_grad():
        out = model(d_x0.q_sample(x0, t, z), t, y)
        expected = ((x0 - out[:, :3]) ** 2).mean(dim=(1, 2, 3))
        torch.testing.assert_close(d_x0.training_losses(model, x0, t, y, noise=z), expected)
        # condition dropout with probability 1 is training on the all-zero map
        d = GaussianDiffusion(linear_betas(1000))
        dropped = d.training_losses(model, x0, t, y, noise=z, cond_drop_prob=1.0)
        zero = d.training_losses(model, x0, t, torch.zeros_like(y), noise=z)
        torch.testing.assert_close(dropped, zero)
        hybrid = GaussianDiffusion(linear_betas(1000), loss="hybrid").training_losses(
            model, x0, t, y, noise=z, return_terms=True)
        rescaled = GaussianDiffusion(linear_betas(250), loss="rescaled_hybrid").training_losses(
            model, x0, torch.tensor([3, 200]), y, noise=z, return_terms=True)
    assert set(hybrid) == {"loss", "mse", "vb"} and (hybrid["vb"] > 0).all()
    torch.testing.assert_close(hybrid["loss"], hybrid["mse"] + hybrid["vb"])
    assert set(rescaled) == {"loss", "mse", "vb"}


def test_variance_head_gets_gradient_only_with_hybrid_loss(model):
    y = onehot(1, 4, 32, 32)
    x0 = torch.rand(1, 3, 32, 32) * 2 - 1
    out_w = model.out[2].weight
    for loss, expect_grad in (("mse", False), ("hybrid", True)):
        model.zero_grad()
        d = GaussianDiffusion(linear_betas(1000), loss=loss)
        d.training_losses(model, x0, torch.tensor([500]), y, noise=torch.randn(1, 3, 32, 32)).sum().backward()
        assert (out_w.grad[3:].abs().sum() > 0) == expect_grad, loss
    model.zero_grad()


@pytest.mark.parametrize("call,match", [
    (lambda d, m, y: d.sample(m, y, method="euler"), "unknown sampling method 'euler'"),
    (lambda d, m, y: d.sample(m, y, noise=torch.zeros(1, 3, 16, 16)), r"noise must have shape \(1, 3, 32, 32\)"),
    (lambda d, m, y: d.sample(m, y, start_step=10), r"start_step must be in \[0, 4\]"),
    (lambda d, m, y: d.sample(m, y, method="ddpm", eta=0.5), "eta applies to method='ddim' only"),
    (lambda d, m, y: d.p_sample(m, torch.zeros(1, 3, 32, 32), 5, y), r"0\.\.4, got \[5\]"),
    (lambda d, m, y: d.q_sample(torch.zeros(2, 3, 4, 4), torch.tensor([1, 2, 3]), torch.zeros(2, 3, 4, 4)),
     r"t must be a scalar or have shape \(2,\)"),
])
def test_bad_calls(model, call, match):
    d = GaussianDiffusion(linear_betas(1000), "ddim5")
    with pytest.raises(ValueError, match=match):
        call(d, model, onehot(1, 4, 32, 32))


@pytest.mark.parametrize("bad,match", [
    (dict(prediction="v"), "unknown prediction 'v'"),
    (dict(variance="learned_small"), "unknown variance"),
    (dict(loss="l1"), "unknown loss 'l1'"),
])
def test_bad_diffusion_config(bad, match):
    with pytest.raises(ValueError, match=match):
        GaussianDiffusion(linear_betas(10), **bad)


def test_respacing_errors():
    with pytest.raises(ValueError, match="cannot take 30 steps from a section of 10"):
        respace_timesteps(20, "30,1")
    with pytest.raises(ValueError, match="bad respacing 'fast'"):
        respace_timesteps(100, "fast")
    assert respace_timesteps(10, [0, 3, 9]) == [0, 3, 9]


def test_from_config_keeps_config():
    cfg = DiffusionConfig(steps=100, respacing="ddim10", loss="hybrid")
    d = GaussianDiffusion.from_config(cfg)
    assert d.config == cfg and d.num_timesteps == 10 and d.original_num_steps == 100
