"""Diffusion processes and samplers, separate from the networks they drive."""

from .gaussian import Conditioning, DiffusionConfig, GaussianDiffusion
from .samplers import SAMPLERS, DDIMInversion, DDIMSampler, DDPMSampler, Sampler, make_sampler
from .schedules import cosine_betas, linear_betas, named_betas, respace_timesteps

__all__ = ["GaussianDiffusion", "DiffusionConfig", "Conditioning", "Sampler", "DDPMSampler", "DDIMSampler",
           "DDIMInversion", "SAMPLERS", "make_sampler", "linear_betas", "cosine_betas", "named_betas",
           "respace_timesteps"]
