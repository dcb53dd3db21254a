"""Samplers as objects, separate from the diffusion process they walk (the diffusers discipline).

A :class:`Sampler` is an update rule ``x_t -> x_{t-1}`` over a :class:`GaussianDiffusion`; the loop
that calls the network (guidance, cached SPADE modulation, autocast, start-from-image, callbacks)
is written once, in :meth:`Sampler.sample`. A new sampler is one class with a :meth:`step` (and a
:meth:`reset` when it keeps history, as multistep solvers do)::

    x_T (given, drawn, or init_image noised to start_step)
      for i = start_step .. 0:  out = p_mean_variance(guided network(x, timesteps[i]))
                                x   = sampler.step(diffusion, out, x, i, generator)
      -> x_0

Samplers here:

- :class:`DDPMSampler`: ancestral sampling (Ho et al. 2020), one Gaussian draw per step from the
  run's generator (none at the last step's output, as the reference).
- :class:`DDIMSampler`: Song et al. 2021, eq. 12; deterministic at ``eta=0``, a draw per step
  when ``eta > 0``.
- :class:`DDIMInversion`: the deterministic DDIM ODE run forward (image -> latent), with
  :meth:`DDIMInversion.invert`.

Randomness: every draw comes from the ``generator`` passed in, in step order, so a seeded run
is reproducible and the draw order matches the reference code's.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from .gaussian import GaussianDiffusion

__all__ = ["Sampler", "DDPMSampler", "DDIMSampler", "DDIMInversion", "make_sampler", "SAMPLERS",
           "check_guidance_scale"]

#: ``callback(i, x_{i-1}, out)`` after every step.
Callback = Callable[[int, torch.Tensor, dict[str, torch.Tensor]], None]


def check_guidance_scale(scale: Any) -> float:
    """A finite real guidance scale (``s <= 1`` turns guidance off), else ValueError naming it."""
    try:
        s = float(scale)
    except (TypeError, ValueError):
        raise ValueError(f"guidance_scale must be a real number, got {scale!r}") from None
    if not math.isfinite(s):
        raise ValueError(f"guidance_scale must be finite, got {scale!r}")
    return s


class Sampler(ABC):
    """One reverse-process update rule. Subclasses implement :meth:`step`.

    Attributes:
        name: the registered name (``"ddpm"``, ``"ddim"``, ...).
        stochastic: whether :meth:`step` draws from the generator.
    """

    name: str = "sampler"
    stochastic: bool = False

    def reset(self, diffusion: "GaussianDiffusion") -> None:
        """Called before each run (multistep samplers clear their history here)."""

    @abstractmethod
    def step(self, diffusion: "GaussianDiffusion", out: dict[str, torch.Tensor], x_t: torch.Tensor,
             t: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """x_t -> x_{t-1} from ``out`` = :meth:`GaussianDiffusion.p_mean_variance` at index ``t`` (B,)."""

    def config(self) -> dict[str, Any]:
        """JSON-able settings that identify this sampler in a results file."""
        return {"sampler": self.name}

    def sample(self, diffusion: "GaussianDiffusion", model: nn.Module, y: torch.Tensor | None, *,
               noise: torch.Tensor | None = None, guidance_scale: float = 1.0, clip_denoised: bool = True,
               progress: bool = False, generator: torch.Generator | None = None,
               init_image: torch.Tensor | None = None, start_step: int | None = None,
               cache_condition: bool = True, autocast: torch.dtype | None = None,
               model_kwargs: dict[str, torch.Tensor] | None = None, shape: tuple[int, ...] | None = None,
               callback: Callback | None = None) -> torch.Tensor:
        """Generate x_0 (B, C, H, W); see :meth:`GaussianDiffusion.sample` for the arguments."""
        from .gaussian import Conditioning, _maybe_autocast, _randn

        guidance_scale = check_guidance_scale(guidance_scale)
        shape = diffusion.sample_shape(model, y, shape)
        device = y.device if y is not None else _kwargs_device(model_kwargs, model)
        like = torch.empty(0, device=device)
        if noise is None:
            noise = _randn(shape, generator, like)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
        elif not torch.isfinite(noise).all():
            raise ValueError("noise contains NaN or infinite values")
        first = diffusion.num_timesteps - 1 if start_step is None else int(start_step)
        if not 0 <= first < diffusion.num_timesteps:
            raise ValueError(f"start_step must be in [0, {diffusion.num_timesteps - 1}], got {start_step}")
        self.reset(diffusion)
        with torch.inference_mode():
            if init_image is not None:
                if tuple(init_image.shape) != shape:
                    raise ValueError(f"init_image must have shape {shape}, got {tuple(init_image.shape)}")
                x = diffusion.q_sample(init_image.to(device), first, noise.to(device))
            else:
                x = noise.to(device)
            cond = Conditioning(model, y, guidance_scale, cache_condition, model_kwargs)
            steps = range(first, -1, -1)
            if progress:
                from tqdm.auto import tqdm
                steps = tqdm(steps, desc=f"{self.name} sampling", unit="step", leave=False)
            for i in steps:
                t = torch.full((shape[0],), i, device=device, dtype=torch.long)
                with _maybe_autocast(autocast, device):
                    model_out = diffusion.guided_call(model, x, t, cond)
                out = diffusion.p_mean_variance(model_out.float(), x, t, clip_denoised)
                x = self.step(diffusion, out, x, t, generator)
                if callback is not None:
                    callback(i, x, out)
        return x


class DDPMSampler(Sampler):
    """Ancestral sampling: ``x_{t-1} = mean + sigma_t z`` (no noise at t = 0)."""

    name = "ddpm"
    stochastic = True

    def step(self, diffusion, out, x_t, t, generator):
        from .gaussian import _randn
        return diffusion.ddpm_step(out, t, _randn(x_t.shape, generator, x_t))


class DDIMSampler(Sampler):
    """DDIM with stochasticity ``eta`` (0: the deterministic ODE sampler).

    Args:
        eta: in [0, 1]; ``eta=1`` has DDPM's marginal variances.
    """

    name = "ddim"

    def __init__(self, eta: float = 0.0) -> None:
        eta = float(eta)
        if not (math.isfinite(eta) and eta >= 0):
            raise ValueError(f"eta must be a finite number >= 0, got {eta}")
        self.eta = eta
        self.stochastic = eta > 0

    def step(self, diffusion, out, x_t, t, generator):
        from .gaussian import _randn
        noise = _randn(x_t.shape, generator, x_t) if self.eta > 0 else None
        return diffusion.ddim_step(out, x_t, t, self.eta, noise)

    def config(self) -> dict[str, Any]:
        return {"sampler": self.name, "eta": self.eta}


class DDIMInversion:
    """The deterministic DDIM ODE run forward: image x_0 -> latent at the last step.

    :meth:`DDIMSampler.sample` at ``eta=0`` from the returned latent approximately gives x_0 back.
    """

    name = "ddim_inversion"

    def invert(self, diffusion: "GaussianDiffusion", model: nn.Module, x_0: torch.Tensor, y: torch.Tensor | None,
               *, guidance_scale: float = 1.0, clip_denoised: bool = True, end_step: int | None = None,
               progress: bool = False, cache_condition: bool = True,
               model_kwargs: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Run the respaced steps ``0 .. end_step`` (default all) forward; returns (B, C, H, W)."""
        from .gaussian import Conditioning

        guidance_scale = check_guidance_scale(guidance_scale)
        last = diffusion.num_timesteps - 1 if end_step is None else int(end_step)
        if not 0 <= last < diffusion.num_timesteps:
            raise ValueError(f"end_step must be in [0, {diffusion.num_timesteps - 1}], got {end_step}")
        with torch.inference_mode():
            x = x_0
            cond = Conditioning(model, y, guidance_scale, cache_condition, model_kwargs)
            steps = range(0, last + 1)
            if progress:
                from tqdm.auto import tqdm
                steps = tqdm(steps, desc="ddim inversion", unit="step", leave=False)
            for i in steps:
                t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
                out = diffusion.p_mean_variance(diffusion.guided_call(model, x, t, cond), x, t, clip_denoised)
                eps = diffusion.predict_eps_from_x0(x, t, out["pred_x0"])
                ab_next = diffusion._extract("alphas_cumprod_next", t, x)
                x = out["pred_x0"] * torch.sqrt(ab_next) + torch.sqrt(1 - ab_next) * eps
        return x


#: name -> sampler class; ``make_sampler`` builds one from a name.
SAMPLERS: dict[str, type[Sampler]] = {"ddpm": DDPMSampler, "ddim": DDIMSampler}


def make_sampler(method: str | Sampler, eta: float = 0.0) -> Sampler:
    """A sampler from a name (``"ddim"``, ``"ddpm"``, ...) or the object itself."""
    if isinstance(method, Sampler):
        return method
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampling method {method!r}; use one of {tuple(SAMPLERS)}")
    if method == "ddim":
        return DDIMSampler(eta)
    if eta != 0.0:
        raise ValueError(f"eta applies to method='ddim' only, got eta={eta} with {method!r}")
    return SAMPLERS[method]()


def _kwargs_device(model_kwargs: dict[str, torch.Tensor] | None, model: nn.Module) -> torch.device:
    for v in (model_kwargs or {}).values():
        if isinstance(v, torch.Tensor):
            return v.device
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
