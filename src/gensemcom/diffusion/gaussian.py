"""Gaussian diffusion: forward process, posterior, model parameterisations, losses and samplers.

The process follows Ho et al. (DDPM), Nichol & Dhariwal (learned-range variances, respacing) and
Song et al. (DDIM), with the conventions of guided-diffusion / SDM / GESCO so that numbers match
the reference code:

- every schedule array is computed in float64 and cast to float32 per use;
- ``t`` given to the methods below is an index into the *respaced* process ``0 .. N-1``; the
  network is called with the original timestep ``timesteps[t]`` (``diffusion.timesteps``);
- classifier-free guidance as GESCO does it: a second pass with an all-zero semantic map,
  ``eps = eps_u + s * (eps_c - eps_u)`` on the image (noise) channels only, the variance channels
  from the conditional pass, and no guidance at ``s <= 1``. Both passes run as one batched call.

::

    x_0 --q_sample(t)--> x_t --model(x_t, timesteps[t], y)--> (eps | v) --p_mean_variance-->
        mean, log_variance, x0_hat --ddpm_step / ddim_step--> x_{t-1} ... --> x_0
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..models.semantic_unet import SemanticCondition
from .schedules import named_betas, respace_timesteps

if TYPE_CHECKING:  # pragma: no cover
    from .samplers import Sampler

__all__ = ["GaussianDiffusion", "DiffusionConfig", "Conditioning", "normal_kl", "discretized_gaussian_log_likelihood"]

PREDICTIONS = ("epsilon", "x0")
VARIANCES = ("learned_range", "learned", "fixed_small", "fixed_large")
LOSSES = ("mse", "hybrid", "rescaled_hybrid")
METHODS = ("ddim", "ddpm")


@dataclass
class DiffusionConfig:
    """Constructor arguments of :class:`GaussianDiffusion` when built from a named schedule.

    Attributes:
        steps: original number of diffusion steps ``T``.
        schedule: ``"linear"`` (scaled by ``1000/T``) or ``"cosine"``.
        respacing: guided-diffusion ``timestep_respacing`` (``""``, ``"ddim25"``, ``"50"``,
            ``"10,15,20"``) or an explicit list of kept steps.
        prediction: ``"epsilon"`` (GESCO) or ``"x0"``.
        variance: ``"learned_range"`` (GESCO/SDM), ``"learned"``, ``"fixed_small"``,
            ``"fixed_large"``.
        loss: ``"mse"``: noise-MSE only, as GESCO trains (the variance head gets no gradient);
            ``"hybrid"``: MSE + variational bound with the mean detached, as SDM trains;
            ``"rescaled_hybrid"``: the bound scaled by ``T/1000`` (``rescale_learned_sigmas``).
        rescale_timesteps: call the network with ``t * 1000 / T`` (floats) instead of ``t``.
    """

    steps: int = 1000
    schedule: str = "linear"
    respacing: str | list[int] = ""
    prediction: str = "epsilon"
    variance: str = "learned_range"
    loss: str = "mse"
    rescale_timesteps: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor,
              logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_std_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor,
                                        log_scales: torch.Tensor) -> torch.Tensor:
    """Log-probability (nats) of 8-bit data ``x`` in [-1, 1] under a Gaussian discretised to bins
    of width 2/255, the edge bins open-ended (the DDPM decoder ``L_0``)."""
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = _approx_std_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = _approx_std_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def _mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=tuple(range(1, x.ndim)))


class Conditioning:
    """What every network call of one sampling run shares: the semantic map (cached SPADE
    modulations), the other model inputs, and whether the batch is doubled for guidance.

    Args:
        y: (B, L, H, W) semantic map, or None for a network without one (``label_channels=0``).
        guidance_scale: ``s > 1`` adds GESCO's unconditional branch: the same network on an
            all-zero map; every other input (``model_kwargs``: the coarse image, the latent, the
            class) is the same in both branches.
        cache: wrap ``y`` with the model's ``encode_condition`` (SPADE modulations computed once).
        model_kwargs: extra network inputs with a leading batch dimension B, e.g.
            ``{"concat": (B, k, H, W)}``, ``{"vector": (B, D), "class_labels": (B,)}``.
    """

    def __init__(self, model: nn.Module, y: torch.Tensor | None, guidance_scale: float, cache: bool,
                 model_kwargs: dict[str, torch.Tensor] | None = None) -> None:
        self.guided = guidance_scale > 1.0
        self.scale = float(guidance_scale)
        extra = {k: v for k, v in (model_kwargs or {}).items() if v is not None}
        if y is not None and not isinstance(y, SemanticCondition) and y.is_floating_point() \
                and not torch.isfinite(y).all():
            raise ValueError("the semantic map y contains NaN or infinite values")
        if self.guided and y is None:
            raise ValueError(f"guidance_scale {guidance_scale} > 1 needs a semantic map (guidance contrasts "
                             "the map with an all-zero one); this model takes none: use guidance_scale=1")
        # Networks whose encoder ignores the map run it once for both branches.
        self.shared_encoder = self.guided and getattr(model, "shares_encoder", False)
        if self.guided:
            y = torch.cat([y, torch.zeros_like(y)], dim=0)
            if not self.shared_encoder:
                extra = {k: _repeat_batch(v) for k, v in extra.items()}
        encode = getattr(model, "encode_condition", None)
        self.cond: torch.Tensor | SemanticCondition | None = encode(y) if (cache and encode and y is not None) else y
        self.extra = extra


#: the old private name
_Conditioning = Conditioning


def _repeat_batch(v: torch.Tensor) -> torch.Tensor:
    return torch.cat([v, v], dim=0) if isinstance(v, torch.Tensor) else v


def _merge_kwargs(model_kwargs: dict[str, torch.Tensor] | None, concat: torch.Tensor | None,
                  vector: torch.Tensor | None) -> dict[str, torch.Tensor]:
    merged = dict(model_kwargs or {})
    for k, v in (("concat", concat), ("vector", vector)):
        if v is not None:
            if k in merged:
                raise ValueError(f"{k} given both as an argument and in model_kwargs")
            merged[k] = v
    return merged


class GaussianDiffusion:
    """A (possibly respaced) Gaussian diffusion process.

    Args:
        betas: the schedule of the *original* process (float64, length ``T``).
        respacing: kept original timesteps (see :func:`respace_timesteps`); the respaced process
            has ``beta_i = 1 - alpha_bar[s_i] / alpha_bar[s_{i-1}]``.
        prediction, variance, loss, rescale_timesteps: see :class:`DiffusionConfig`.

    Use :meth:`from_config` to build from a named schedule and keep the config for saving.
    """

    def __init__(self, betas: Sequence[float] | np.ndarray, respacing: str | int | Sequence[int] | None = None,
                 *, prediction: str = "epsilon", variance: str = "learned_range", loss: str = "mse",
                 rescale_timesteps: bool = False) -> None:
        for name, value, allowed in (("prediction", prediction, PREDICTIONS),
                                     ("variance", variance, VARIANCES), ("loss", loss, LOSSES)):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; expected one of {allowed}")
        base = np.asarray(betas, dtype=np.float64)
        if base.ndim != 1 or not ((base > 0) & (base <= 1)).all():
            raise ValueError("betas must be a 1-D array with values in (0, 1]")
        self.prediction, self.variance, self.loss = prediction, variance, loss
        self.rescale_timesteps = rescale_timesteps
        self.config: DiffusionConfig | None = None
        self.original_num_steps = len(base)
        self.timesteps: list[int] = respace_timesteps(len(base), respacing)

        base_ac = np.cumprod(1.0 - base)
        new_betas, last = [], 1.0
        for s in self.timesteps:
            new_betas.append(1.0 - base_ac[s] / last)
            last = base_ac[s]
        b = np.array(new_betas, dtype=np.float64)
        self.betas = b
        self.num_timesteps = len(b)
        ac = np.cumprod(1.0 - b)
        ac_prev = np.append(1.0, ac[:-1])
        ac_next = np.append(ac[1:], 0.0)
        post_var = b * (1.0 - ac_prev) / (1.0 - ac)
        post_var_1 = post_var[1] if len(b) > 1 else post_var[0]
        self._arrays: dict[str, np.ndarray] = {
            "betas": b,
            "log_betas": np.log(b),
            "alphas_cumprod": ac,
            "alphas_cumprod_prev": ac_prev,
            "alphas_cumprod_next": ac_next,
            "sqrt_alphas_cumprod": np.sqrt(ac),
            "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
            "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
            "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1.0),
            "posterior_variance": post_var,
            "posterior_log_variance_clipped": np.log(np.append(post_var_1, post_var[1:])),
            "posterior_mean_coef1": b * np.sqrt(ac_prev) / (1.0 - ac),
            "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(1.0 - b) / (1.0 - ac),
            "fixed_large_variance": np.append(post_var_1, b[1:]),
            "log_fixed_large_variance": np.log(np.append(post_var_1, b[1:])),
            "timesteps": np.asarray(self.timesteps, dtype=np.int64),
        }
        self.alphas_cumprod = ac
        self._tables: dict[tuple[str, torch.device], torch.Tensor] = {}

    @classmethod
    def from_config(cls, config: DiffusionConfig) -> "GaussianDiffusion":
        d = cls(named_betas(config.schedule, config.steps), config.respacing,
                prediction=config.prediction, variance=config.variance, loss=config.loss,
                rescale_timesteps=config.rescale_timesteps)
        d.config = config
        return d

    # ------------------------------------------------------------------ helpers
    def _table(self, name: str, device: torch.device) -> torch.Tensor:
        key = (name, device)
        if key not in self._tables:
            self._tables[key] = torch.from_numpy(self._arrays[name]).to(device)
        return self._tables[key]

    def _extract(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """arr[t] in float32 (computed in float64, as the reference), shaped (B, 1, 1, 1)."""
        v = self._table(name, t.device)[t].float()
        return v.view(-1, *([1] * (like.ndim - 1))).to(like.device)

    def _index(self, t: int | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
        t = torch.as_tensor(t, device=device, dtype=torch.long)
        if t.ndim == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise ValueError(f"t must be a scalar or have shape ({batch},), got {tuple(t.shape)}")
        if (t < 0).any() or (t >= self.num_timesteps).any():
            raise ValueError(f"t must index the respaced process 0..{self.num_timesteps - 1}, got {t.tolist()}")
        return t

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """Respaced indices -> what the network is called with (original timesteps)."""
        mapped = self._table("timesteps", t.device)[t]
        if self.rescale_timesteps:
            return mapped.float() * (1000.0 / self.original_num_steps)
        return mapped

    # ------------------------------------------------------------------ forward process
    def q_sample(self, x_0: torch.Tensor, t: int | torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise."""
        t = self._index(t, x_0.shape[0], x_0.device)
        return (self._extract("sqrt_alphas_cumprod", t, x_0) * x_0
                + self._extract("sqrt_one_minus_alphas_cumprod", t, x_0) * noise)

    def q_posterior(self, x_0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = (self._extract("posterior_mean_coef1", t, x_t) * x_0
                + self._extract("posterior_mean_coef2", t, x_t) * x_t)
        return mean, self._extract("posterior_log_variance_clipped", t, x_t)

    def predict_x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return (self._extract("sqrt_recip_alphas_cumprod", t, x_t) * x_t
                - self._extract("sqrt_recipm1_alphas_cumprod", t, x_t) * eps)

    def predict_eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x_0: torch.Tensor) -> torch.Tensor:
        return ((self._extract("sqrt_recip_alphas_cumprod", t, x_t) * x_t - x_0)
                / self._extract("sqrt_recipm1_alphas_cumprod", t, x_t))

    # ------------------------------------------------------------------ the network
    def guided_call(self, model: nn.Module, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """One (guided) network evaluation at respaced index t -> (B, out_channels, H, W)."""
        ts = self.model_timesteps(t)
        if not cond.guided:
            return model(x, ts, cond.cond, **cond.extra)
        if cond.shared_encoder:
            out = model(x, ts, cond.cond, branches=2, **cond.extra)
        else:
            out = model(torch.cat([x, x]), torch.cat([ts, ts]), cond.cond, **cond.extra)
        out_c, out_u = out.chunk(2)
        c = x.shape[1]
        guided = out_u[:, :c] + cond.scale * (out_c[:, :c] - out_u[:, :c])
        return torch.cat([guided, out_c[:, c:]], dim=1)

    _call = guided_call

    def sample_shape(self, model: nn.Module, y: torch.Tensor | None,
                     shape: Sequence[int] | None = None) -> tuple[int, ...]:
        """(B, in_channels, H, W) of x_t: from ``y`` and the model's ``in_channels``, or ``shape``."""
        if shape is not None:
            return tuple(int(v) for v in shape)
        if y is None:
            raise ValueError("without a semantic map y, pass shape=(B, C, H, W) of the images to generate")
        in_ch = getattr(getattr(model, "config", None), "in_channels", 3)
        return (y.shape[0], in_ch, y.shape[2], y.shape[3])

    def p_mean_variance(self, model_out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                        clip_denoised: bool = True) -> dict[str, torch.Tensor]:
        """p(x_{t-1} | x_t) from a network output: mean, variance, log_variance, pred_x0."""
        c = x_t.shape[1]
        if self.variance in ("learned", "learned_range"):
            if model_out.shape[1] != 2 * c:
                raise ValueError(f"variance={self.variance!r} needs a network with {2 * c} output "
                                 f"channels (learn_sigma), got {model_out.shape[1]}")
            model_out, var_values = model_out[:, :c], model_out[:, c:]
            if self.variance == "learned":
                log_var = var_values
            else:
                min_log = self._extract("posterior_log_variance_clipped", t, x_t)
                max_log = self._extract("log_betas", t, x_t)
                frac = (var_values + 1) / 2
                log_var = frac * max_log + (1 - frac) * min_log
            var = torch.exp(log_var)
        else:
            model_out = model_out[:, :c]
            if self.variance == "fixed_small":
                var = self._extract("posterior_variance", t, x_t).expand_as(x_t)
                log_var = self._extract("posterior_log_variance_clipped", t, x_t).expand_as(x_t)
            else:
                var = self._extract("fixed_large_variance", t, x_t).expand_as(x_t)
                log_var = self._extract("log_fixed_large_variance", t, x_t).expand_as(x_t)
        if self.prediction == "epsilon":
            pred_x0 = self.predict_x0_from_eps(x_t, t, model_out)
        else:
            pred_x0 = model_out
        if clip_denoised:
            pred_x0 = pred_x0.clamp(-1, 1)
        mean, _ = self.q_posterior(pred_x0, x_t, t)
        return {"mean": mean, "variance": var, "log_variance": log_var, "pred_x0": pred_x0}

    # ------------------------------------------------------------------ single steps
    def ddpm_step(self, out: dict[str, torch.Tensor], t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Ancestral step: mean + sigma * noise (no noise at t = 0)."""
        nonzero = (t != 0).float().view(-1, *([1] * (noise.ndim - 1)))
        return out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * noise

    def ddim_step(self, out: dict[str, torch.Tensor], x_t: torch.Tensor, t: torch.Tensor, eta: float = 0.0,
                  noise: torch.Tensor | None = None) -> torch.Tensor:
        """DDIM (Song et al., eq. 12), eps re-derived from the (clipped) x0 prediction."""
        eps = self.predict_eps_from_x0(x_t, t, out["pred_x0"])
        ab = self._extract("alphas_cumprod", t, x_t)
        ab_prev = self._extract("alphas_cumprod_prev", t, x_t)
        sigma = eta * torch.sqrt((1 - ab_prev) / (1 - ab)) * torch.sqrt(1 - ab / ab_prev)
        x_prev = out["pred_x0"] * torch.sqrt(ab_prev) + torch.sqrt(1 - ab_prev - sigma ** 2) * eps
        if eta > 0:
            if noise is None:
                raise ValueError("ddim_step with eta > 0 needs noise")
            nonzero = (t != 0).float().view(-1, *([1] * (x_t.ndim - 1)))
            x_prev = x_prev + nonzero * sigma * noise
        return x_prev

    def p_sample(self, model: nn.Module, x_t: torch.Tensor, t: int | torch.Tensor, y: torch.Tensor | None, *,
                 guidance_scale: float = 1.0, noise: torch.Tensor | None = None, clip_denoised: bool = True,
                 generator: torch.Generator | None = None, concat: torch.Tensor | None = None,
                 vector: torch.Tensor | None = None,
                 model_kwargs: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """One ancestral step x_t -> x_{t-1}; ``t`` is the index in the (respaced) process."""
        from .samplers import check_guidance_scale
        t = self._index(t, x_t.shape[0], x_t.device)
        cond = Conditioning(model, y, check_guidance_scale(guidance_scale), False,
                            _merge_kwargs(model_kwargs, concat, vector))
        out = self.p_mean_variance(self.guided_call(model, x_t, t, cond), x_t, t, clip_denoised)
        if noise is None:
            noise = _randn(x_t.shape, generator, x_t)
        return self.ddpm_step(out, t, noise)

    # ------------------------------------------------------------------ loops
    def sample(self, model: nn.Module, y: torch.Tensor | None, *, noise: torch.Tensor | None = None,
               guidance_scale: float = 1.0, method: "str | Sampler" = "ddim", eta: float = 0.0,
               clip_denoised: bool = True, progress: bool = False,
               generator: torch.Generator | None = None, concat: torch.Tensor | None = None,
               vector: torch.Tensor | None = None, init_image: torch.Tensor | None = None,
               start_step: int | None = None, cache_condition: bool = True,
               autocast: torch.dtype | None = None, model_kwargs: dict[str, torch.Tensor] | None = None,
               shape: Sequence[int] | None = None,
               callback: Callable[[int, torch.Tensor, dict[str, torch.Tensor]], None] | None = None,
               ) -> torch.Tensor:
        """Generate x_0 (B, C, H, W) in [-1, 1] conditioned on the semantic map ``y``.

        Args:
            y: (B, label_channels, H, W) semantic map, or None for a network without one (then
                ``shape`` gives the output shape).
            noise: x_T (or, with ``init_image``, the noise that takes it to ``start_step``);
                drawn from ``generator`` when omitted.
            guidance_scale: classifier-free guidance ``s`` (off at ``s <= 1``).
            method: a sampler name (``"ddim"``: deterministic at ``eta = 0``; ``"ddpm"``:
                ancestral) or a :class:`gensemcom.diffusion.samplers.Sampler` object.
            init_image: start from this image (B, C, H, W) noised to ``start_step`` with
                ``q_sample`` instead of from pure noise (SPIC starts at step 192).
            start_step: the respaced index to start at (default: the last, ``N - 1``).
            cache_condition: compute the SPADE modulations once per map (same numbers, faster).
            autocast: run the network under ``torch.autocast`` with this dtype (GPU: float16 or
                bfloat16); the diffusion arithmetic stays in float32.
            concat, vector: shorthands for ``model_kwargs["concat"]`` / ``["vector"]``.
            model_kwargs: further network inputs with a leading batch dimension (e.g.
                ``class_labels``), the same in both guidance branches.
            shape: (B, C, H, W) of x_T when ``y`` is None.
            callback: called as ``callback(t, x_{t-1}, out)`` after every step.
        """
        from .samplers import make_sampler
        sampler = make_sampler(method, eta)
        return sampler.sample(self, model, y, noise=noise, guidance_scale=guidance_scale,
                              clip_denoised=clip_denoised, progress=progress, generator=generator,
                              init_image=init_image, start_step=start_step, cache_condition=cache_condition,
                              autocast=autocast, model_kwargs=_merge_kwargs(model_kwargs, concat, vector),
                              shape=None if shape is None else tuple(shape), callback=callback)

    def invert(self, model: nn.Module, x_0: torch.Tensor, y: torch.Tensor | None, *, guidance_scale: float = 1.0,
               clip_denoised: bool = True, end_step: int | None = None, progress: bool = False,
               concat: torch.Tensor | None = None, vector: torch.Tensor | None = None,
               cache_condition: bool = True, model_kwargs: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """DDIM inversion (the deterministic reverse ODE, eta 0): image x_0 -> x_T.

        Runs the respaced steps ``0 .. end_step`` (default all) forward and returns the latent at
        the last one; :meth:`sample` with ``method="ddim"`` from it approximately returns x_0.
        """
        from .samplers import DDIMInversion
        return DDIMInversion().invert(self, model, x_0, y, guidance_scale=guidance_scale,
                                      clip_denoised=clip_denoised, end_step=end_step, progress=progress,
                                      cache_condition=cache_condition,
                                      model_kwargs=_merge_kwargs(model_kwargs, concat, vector))

    # ------------------------------------------------------------------ training
    def vb_terms_bpd(self, model_out: torch.Tensor, x_0: torch.Tensor, x_t: torch.Tensor,
                     t: torch.Tensor) -> torch.Tensor:
        """The variational-bound term at t, bits per dimension, per sample: KL(q || p) for t > 0,
        the discretised decoder NLL at t = 0."""
        true_mean, true_log_var = self.q_posterior(x_0, x_t, t)
        out = self.p_mean_variance(model_out, x_t, t, clip_denoised=False)
        kl = _mean_flat(normal_kl(true_mean, true_log_var, out["mean"], out["log_variance"])) / math.log(2.0)
        nll = -_mean_flat(discretized_gaussian_log_likelihood(
            x_0, out["mean"], 0.5 * out["log_variance"])) / math.log(2.0)
        return torch.where(t == 0, nll, kl)

    def training_losses(self, model: nn.Module, x_0: torch.Tensor, t: int | torch.Tensor, y: torch.Tensor | None,
                        *, noise: torch.Tensor | None = None, cond_drop_prob: float = 0.0,
                        generator: torch.Generator | None = None, concat: torch.Tensor | None = None,
                        vector: torch.Tensor | None = None, return_terms: bool = False,
                        model_kwargs: dict[str, torch.Tensor] | None = None,
                        ) -> torch.Tensor | dict[str, torch.Tensor]:
        """Per-sample training loss (B,) at respaced indices ``t``.

        ``loss="mse"``: mean over C, H, W of (target - prediction)^2 (GESCO);
        ``"hybrid"``: plus the variational bound with the mean prediction detached (SDM);
        ``"rescaled_hybrid"``: the bound times T/1000. With ``cond_drop_prob`` each sample's whole
        semantic map is zeroed with that probability (classifier-free guidance training).
        ``return_terms`` returns ``{"loss", "mse"[, "vb"]}``.
        """
        b = x_0.shape[0]
        t = self._index(t, b, x_0.device)
        if noise is None:
            noise = _randn(x_0.shape, generator, x_0)
        if cond_drop_prob > 0:
            if y is None:
                raise ValueError("cond_drop_prob > 0 needs a semantic map y to drop")
            u = torch.rand(b, generator=generator, device=_gen_device(generator, x_0)).to(y.device)
            y = y * (u >= cond_drop_prob).to(y.dtype).view(-1, *([1] * (y.ndim - 1)))
        x_t = self.q_sample(x_0, t, noise)
        kwargs = {k: v for k, v in _merge_kwargs(model_kwargs, concat, vector).items() if v is not None}
        out = model(x_t, self.model_timesteps(t), y, **kwargs)
        c = x_0.shape[1]
        target = noise if self.prediction == "epsilon" else x_0
        terms = {"mse": _mean_flat((target - out[:, :c]) ** 2)}
        if self.loss != "mse" and self.variance in ("learned", "learned_range"):
            frozen = torch.cat([out[:, :c].detach(), out[:, c:]], dim=1)
            vb = self.vb_terms_bpd(frozen, x_0, x_t, t)
            if self.loss == "rescaled_hybrid":
                vb = vb * (self.num_timesteps / 1000.0)
            terms["vb"] = vb
            terms["loss"] = terms["mse"] + vb
        else:
            terms["loss"] = terms["mse"]
        return terms if return_terms else terms["loss"]


def _gen_device(generator: torch.Generator | None, like: torch.Tensor) -> torch.device:
    return generator.device if generator is not None else like.device


def _randn(shape: Sequence[int], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise from ``generator`` (on the generator's device), moved to ``like``'s."""
    z = torch.randn(tuple(shape), generator=generator, device=_gen_device(generator, like))
    return z.to(like.device)


def _maybe_autocast(dtype: torch.dtype | None, device: torch.device) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
