"""Few-step samplers against diffusers, step for step, for the same model outputs and timesteps.

Our solvers step between the kept timesteps of a respaced GaussianDiffusion; diffusers' schedulers
are given the same timesteps (``set_timesteps(timesteps=reversed(diffusion.timesteps))``) with
``final_sigmas_type="zero"``. Each step of ours is fed the same guided network output as diffusers'
``step`` (the GESCO network with guidance 2 and its learned variance), so any difference is the
update rule's. Clipping the x0 prediction (``clip_denoised``) is diffusers' thresholding with
``sample_max_value=1``.
"""

from __future__ import annotations

import pytest
import torch

from gensemcom.diffusion import GaussianDiffusion, make_sampler
from gensemcom.diffusion.gaussian import Conditioning
from gensemcom.diffusion.samplers import DPMSolverPP, UniPC
from gensemcom.diffusion.schedules import linear_betas
from gensemcom.models.semantic_unet import SemanticUNet, SemanticUNetConfig

diffusers = pytest.importorskip("diffusers")
pytestmark = pytest.mark.usefixtures("one_thread")


def _model() -> SemanticUNet:
    torch.manual_seed(0)
    cfg = SemanticUNetConfig(label_channels=5, image_size=16, model_channels=32, channel_mult=(1, 2),
                             num_res_blocks=1, attention_resolutions=(8,), num_head_channels=32, layout="sdm",
                             spade_hidden=16)
    m = SemanticUNet(cfg).eval()
    with torch.no_grad():  # a zero-initialised output layer would make every prediction 0
        m.out[-1].weight.normal_(0, 0.02)
    return m


def _scheduler(kind: str, steps: list[int], clip: bool, **kw):
    common = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                  prediction_type="epsilon", thresholding=clip, sample_max_value=1.0, final_sigmas_type="zero",
                  lower_order_final=True)
    if kind == "unipc":
        s = diffusers.UniPCMultistepScheduler(**common, predict_x0=True, solver_type="bh2", **kw)
    else:
        s = diffusers.DPMSolverMultistepScheduler(**common, solver_type="midpoint", variance_type="learned_range", **kw)
    if kind == "unipc":
        # UniPC's set_timesteps takes no custom list: set the same arrays DPM-Solver's builds
        import numpy as np
        s.set_timesteps(len(steps))
        ts = np.array(list(reversed(steps)), dtype=np.int64)
        ac = s.alphas_cumprod.numpy()
        sig = np.concatenate([((1 - ac[ts]) / ac[ts]) ** 0.5, [0.0]]).astype(np.float32)
        s.timesteps, s.sigmas, s.num_inference_steps = torch.from_numpy(ts), torch.from_numpy(sig), len(ts)
        s.model_outputs = [None] * s.config.solver_order
    else:
        s.set_timesteps(timesteps=list(reversed(steps)))
    return s


CASES = [
    ("dpm", DPMSolverPP(2), dict(solver_order=2, algorithm_type="dpmsolver++"), "ddim10"),
    ("dpm", DPMSolverPP(3), dict(solver_order=3, algorithm_type="dpmsolver++"), "ddim20"),
    ("dpm", DPMSolverPP(1), dict(solver_order=1, algorithm_type="dpmsolver++"), "ddim5"),
    ("dpm", DPMSolverPP(2, "sde"), dict(solver_order=2, algorithm_type="sde-dpmsolver++"), "ddim10"),
    ("unipc", UniPC(2), dict(solver_order=2), "ddim10"),
    ("unipc", UniPC(3), dict(solver_order=3), "ddim20"),
    ("unipc", UniPC(2, corrector=False), dict(solver_order=2, disable_corrector=list(range(20))), "ddim8"),
]


@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("kind,ours,theirs,respacing", CASES, ids=lambda v: getattr(v, "name", None))
def test_solver_matches_diffusers_step_for_step(kind, ours, theirs, respacing, clip):
    model = _model()
    d = GaussianDiffusion(linear_betas(1000), respacing)
    sched = _scheduler(kind, d.timesteps, clip, **theirs)
    g = torch.Generator().manual_seed(11)
    y = (torch.rand(2, 5, 16, 16, generator=g) > 0.5).float()
    x = torch.randn(2, 3, 16, 16, generator=g)
    cond = Conditioning(model, y, 2.0, True)
    steps = list(range(d.num_timesteps - 1, -1, -1))
    ours.reset(d, steps)
    x_ours, x_theirs = x.clone(), x.clone()
    for k, i in enumerate(steps):
        t = torch.full((2,), i, dtype=torch.long)
        with torch.no_grad():
            model_out = d.guided_call(model, x_ours, t, cond)
        out = d.p_mean_variance(model_out, x_ours, t, clip_denoised=clip)
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(100 + k))
        x_ours = ours.step(d, out, x_ours, t, torch.Generator().manual_seed(100 + k))
        if kind == "unipc":  # no learned-variance option: give it the noise prediction alone
            x_theirs = sched.step(model_out[:, :3], int(d.timesteps[i]), x_theirs).prev_sample
        else:
            x_theirs = sched.step(model_out, int(d.timesteps[i]), x_theirs, variance_noise=noise).prev_sample
        # the same state after every step (float32 schedules in diffusers, float64 here)
        torch.testing.assert_close(x_ours, x_theirs, rtol=2e-4, atol=2e-4, msg=lambda m: f"step {k}: {m}")
        x_theirs = x_ours.clone()  # compare update rules, not accumulated rounding


def test_solvers_run_through_sample_and_are_deterministic():
    model = _model()
    d = GaussianDiffusion(linear_betas(1000), "ddim6")
    y = torch.rand(1, 5, 16, 16)
    z = torch.randn(1, 3, 16, 16)
    for name in ("dpm++2m", "dpm++3m", "unipc", "unipc3"):
        a = d.sample(model, y, noise=z, guidance_scale=2.0, method=name)
        b = d.sample(model, y, noise=z, guidance_scale=2.0, method=make_sampler(name))
        assert torch.equal(a, b) and torch.isfinite(a).all(), name
    sde = [d.sample(model, y, noise=z, method="dpm++2m-sde", generator=torch.Generator().manual_seed(s))
           for s in (1, 1, 2)]
    assert torch.equal(sde[0], sde[1]) and not torch.equal(sde[0], sde[2])


def test_first_order_solvers_equal_ddim():
    """DPM-Solver++(1) is DDIM (eta 0) in another parameterisation (Lu et al. 2022, sec. 3)."""
    model = _model()
    d = GaussianDiffusion(linear_betas(1000), "ddim8")
    y, z = torch.rand(1, 5, 16, 16), torch.randn(1, 3, 16, 16)
    ddim = d.sample(model, y, noise=z, guidance_scale=2.0, method="ddim")
    dpm1 = d.sample(model, y, noise=z, guidance_scale=2.0, method=DPMSolverPP(1))
    torch.testing.assert_close(dpm1, ddim, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make,match", [
    (lambda: DPMSolverPP(4), "order must be 1, 2 or 3"),
    (lambda: DPMSolverPP(3, "sde"), "orders 1 and 2"),
    (lambda: DPMSolverPP(2, "euler"), "kind must be 'ode' or 'sde'"),
    (lambda: make_sampler("dpm++9m"), "unknown sampling method 'dpm\\+\\+9m'"),
])
def test_solver_bad_input(make, match):
    with pytest.raises(ValueError, match=match):
        make()
