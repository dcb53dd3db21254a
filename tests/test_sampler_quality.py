"""ThresholdedSampler: the x0-bounding rules compared in benchmarks/bench_sampler_quality.py.

"clip" and "none" must equal the plain samplers with clip_denoised True / False exactly; the
dynamic rule is checked against its closed form (Saharia et al. 2022, sec. 2.3) and against
diffusers' DPMSolverMultistepScheduler with ``thresholding=True``; the late rule against a run
that clips by hand at the late steps only.
"""

from __future__ import annotations

import pytest
import torch

from gensemcom.diffusion import GaussianDiffusion, make_sampler
from gensemcom.diffusion.samplers import DDIMSampler, ThresholdedSampler
from gensemcom.diffusion.schedules import linear_betas
from gensemcom.models.semantic_unet import SemanticUNet, SemanticUNetConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _setup(steps: int = 8):
    torch.manual_seed(0)
    cfg = SemanticUNetConfig(label_channels=5, image_size=16, model_channels=32, channel_mult=(1, 2),
                             num_res_blocks=1, attention_resolutions=(8,), num_head_channels=32, layout="sdm",
                             spade_hidden=16)
    m = SemanticUNet(cfg).eval()
    with torch.no_grad():
        m.out[-1].weight.normal_(0, 0.3)  # large predictions, so that the bounds act
    g = torch.Generator().manual_seed(3)
    y = (torch.rand(2, 5, 16, 16, generator=g) > 0.5).float()
    noise = torch.randn(2, 3, 16, 16, generator=g)
    return m, GaussianDiffusion(linear_betas(1000), respacing=f"ddim{steps}"), y, noise


@pytest.mark.parametrize("method", ["ddim", "ddpm", "dpm++2m", "unipc"])
def test_clip_and_none_rules_equal_clip_denoised(method):
    m, d, y, noise = _setup()
    for rule, clip in (("clip", True), ("none", False)):
        plain = d.sample(m, y, noise=noise, guidance_scale=2.0, method=method, clip_denoised=clip,
                         generator=torch.Generator().manual_seed(5))
        wrapped = d.sample(m, y, noise=noise, guidance_scale=2.0, method=ThresholdedSampler(method, rule),
                           generator=torch.Generator().manual_seed(5))
        torch.testing.assert_close(wrapped, plain, rtol=0, atol=1e-6)


def test_dynamic_rule_closed_form():
    d = GaussianDiffusion(linear_betas(1000), respacing="ddim4")
    s = ThresholdedSampler("ddim", "dynamic", percentile=0.5)
    x0 = torch.tensor([[-4.0, -3.0, 0.5, 2.0], [0.1, -0.2, 0.3, 0.4]]).view(2, 1, 2, 2)
    out = s.bound(d, x0, 3)
    # image 0: median of |x| = (2 + 3) / 2 = 2.5 -> clamp to +-2.5, divide by 2.5; image 1: s = 1
    want0 = torch.tensor([-2.5, -2.5, 0.5, 2.0]) / 2.5
    torch.testing.assert_close(out[0].flatten(), want0)
    torch.testing.assert_close(out[1], x0[1])


def test_late_rule_clips_only_late_steps():
    m, d, y, noise = _setup(steps=8)
    late = ThresholdedSampler("ddim", "late", late_fraction=0.5)
    got = d.sample(m, y, noise=noise, guidance_scale=2.0, method=late)

    class ByHand(DDIMSampler):
        def step(self, diffusion, out, x_t, t, generator):
            if int(t[0]) < 4:  # indices 3..0 of 8: the late half
                out = dict(out, pred_x0=out["pred_x0"].clamp(-1, 1))
            return super().step(diffusion, out, x_t, t, generator)

    want = d.sample(m, y, noise=noise, guidance_scale=2.0, method=ByHand(), clip_denoised=False)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert not torch.allclose(got, d.sample(m, y, noise=noise, guidance_scale=2.0, method="ddim"))


def test_dynamic_rule_matches_diffusers_thresholding():
    """diffusers' ``thresholding=True`` is dynamic thresholding with ``dynamic_thresholding_ratio``
    and ``sample_max_value``; with max value large it is our rule at the same percentile."""
    diffusers = pytest.importorskip("diffusers")
    m, d, y, noise = _setup(steps=6)
    ours = d.sample(m, y, noise=noise, guidance_scale=2.0, method=ThresholdedSampler("dpm++2m", "dynamic", 0.9))
    sched = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02, prediction_type="epsilon",
        thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=1e6, final_sigmas_type="zero",
        lower_order_final=True, algorithm_type="dpmsolver++", solver_order=2)
    sched.set_timesteps(timesteps=list(reversed(d.timesteps)))
    from gensemcom.diffusion.gaussian import Conditioning
    cond = Conditioning(m, y, 2.0, True)
    x = noise.clone()
    with torch.inference_mode():
        for i, t in zip(range(d.num_timesteps - 1, -1, -1), sched.timesteps):
            eps = d.guided_call(m, x, torch.full((2,), i), cond)[:, :3]
            x = sched.step(eps, t, x).prev_sample
    torch.testing.assert_close(ours, x, rtol=0, atol=1e-4)


def test_bad_rule_arguments():
    with pytest.raises(ValueError, match="rule"):
        ThresholdedSampler("ddim", "soft")
    with pytest.raises(ValueError, match="percentile"):
        ThresholdedSampler("ddim", "dynamic", percentile=0.0)
    with pytest.raises(ValueError, match="late_fraction"):
        ThresholdedSampler("ddim", "late", late_fraction=1.5)
    with pytest.raises(ValueError, match="unknown sampling method"):
        ThresholdedSampler("euler")
    assert ThresholdedSampler(make_sampler("unipc"), "dynamic").config()["threshold"] == "dynamic"
