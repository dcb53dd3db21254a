"""Diffusion processes and samplers, separate from the networks they drive."""

from .gaussian import DiffusionConfig, GaussianDiffusion
from .schedules import cosine_betas, linear_betas, named_betas, respace_timesteps

__all__ = ["GaussianDiffusion", "DiffusionConfig", "linear_betas", "cosine_betas", "named_betas",
           "respace_timesteps"]
