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
- :class:`DPMSolverPP`: DPM-Solver++ (Lu et al. 2022, arXiv 2211.01095), multistep 2M / 3M on
  the data prediction, and the SDE variant (one draw per step).
- :class:`UniPC`: UniPC (Zhao et al. 2023, arXiv 2302.04867), the B(h) = e^h - 1 ("bh2")
  predictor-corrector on the data prediction.
- :class:`DDIMInversion`: the deterministic DDIM ODE run forward (image -> latent), with
  :meth:`DDIMInversion.invert`.

The solvers step between the kept timesteps of the (respaced) process: from respaced index i
(``alpha_bar = diffusion.alphas_cumprod[i]``) to i - 1, the last step to the clean image
(``alpha_bar = 1``); with ``clip_denoised`` the data prediction is clipped to [-1, 1] before it
enters the update, which is diffusers' ``thresholding=True`` with ``sample_max_value=1``. They
agree step for step with diffusers' ``DPMSolverMultistepScheduler`` / ``UniPCMultistepScheduler``
given the same timesteps (``set_timesteps(timesteps=diffusion.timesteps[::-1])``,
``final_sigmas_type="zero"``, ``lower_order_final=True``).

Randomness: every draw comes from the ``generator`` passed in, in step order, so a seeded run
is reproducible and the draw order matches the reference code's.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from .gaussian import GaussianDiffusion

__all__ = ["Sampler", "DDPMSampler", "DDIMSampler", "DPMSolverPP", "UniPC", "DDIMInversion", "make_sampler", "SAMPLERS",
           "check_guidance_scale", "ThresholdedSampler", "THRESHOLD_RULES"]

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

    def reset(self, diffusion: "GaussianDiffusion", steps: Sequence[int]) -> None:
        """Called before each run with the respaced indices it will visit, in order (multistep
        samplers clear their history here)."""

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
        self.reset(diffusion, list(range(first, -1, -1)))
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


class _Multistep(Sampler):
    """History shared by the multistep solvers: lambda_t = log(alpha_t / sigma_t) per visited
    index, the data predictions so far, and the step counter."""

    def __init__(self, order: int) -> None:
        if order not in (1, 2, 3):
            raise ValueError(f"solver order must be 1, 2 or 3, got {order}")
        self.order = order
        self._steps: list[int] = []

    def reset(self, diffusion, steps):
        self._steps = list(steps)
        self._k = 0
        self._m: list[torch.Tensor] = []
        self._lam: list[float] = []
        self._done = 0  # steps taken (diffusers' lower_order_nums, capped at the order)

    @staticmethod
    def _alpha_sigma(diffusion, i: int) -> tuple[float, float, float]:
        """alpha_t, sigma_t, lambda_t of respaced index i; i = -1 is the clean image."""
        ab = 1.0 if i < 0 else float(diffusion.alphas_cumprod[i])
        a, s = math.sqrt(ab), math.sqrt(1.0 - ab)
        return a, s, (math.inf if s == 0.0 else math.log(a) - math.log(s))

    def config(self) -> dict[str, Any]:
        return {"sampler": self.name, "order": self.order}


class DPMSolverPP(_Multistep):
    """DPM-Solver++ on the data prediction (Lu et al. 2022), multistep.

    Args:
        order: 1 (= DDIM), 2 (2M, "midpoint" form) or 3 (3M).
        kind: ``"ode"`` (deterministic) or ``"sde"`` (SDE-DPM-Solver++, one Gaussian draw per
            step from the run's generator; order 1 or 2).

    Lower orders are used while the history fills, and the last step is first order (it lands
    on the clean image, sigma = 0), as diffusers does.
    """

    def __init__(self, order: int = 2, kind: str = "ode") -> None:
        super().__init__(order)
        if kind not in ("ode", "sde"):
            raise ValueError(f"kind must be 'ode' or 'sde', got {kind!r}")
        if kind == "sde" and order == 3:
            raise ValueError("the SDE variant of DPM-Solver++ has orders 1 and 2")
        self.kind = kind
        self.stochastic = kind == "sde"
        self.name = f"dpm++{order}m" + ("-sde" if kind == "sde" else "")

    def config(self) -> dict[str, Any]:
        return {"sampler": "dpm++", "order": self.order, "kind": self.kind}

    def step(self, diffusion, out, x_t, t, generator):
        from .gaussian import _randn
        i = int(t[0])
        k, n = self._k, len(self._steps)
        _, s_s, lam_s = self._alpha_sigma(diffusion, i)
        a_t, s_t, lam_t = self._alpha_sigma(diffusion, i - 1)
        m0 = out["pred_x0"]
        self._m = (self._m + [m0])[-3:]
        self._lam = (self._lam + [lam_s])[-3:]
        final = k == n - 1
        lower_second = k == n - 2 and n < 15
        if self.order == 1 or self._done < 1 or final:
            order = 1
        elif self.order == 2 or self._done < 2 or lower_second:
            order = 2
        else:
            order = 3
        h = lam_t - lam_s
        e = math.exp(-h)  # 0 at the final step (h = inf)
        if order == 1:
            d = m0
        elif order == 2:
            r0 = (lam_s - self._lam[-2]) / h
            d = m0 + (0.5 / r0) * (m0 - self._m[-2])
        if self.kind == "sde":
            x = (s_t / s_s * e) * x_t + a_t * (1.0 - e * e) * d
            if s_t > 0:
                x = x + s_t * math.sqrt(1.0 - e * e) * _randn(x_t.shape, generator, x_t)
        elif order < 3:
            x = (s_t / s_s) * x_t - a_t * (e - 1.0) * d
        else:
            m1, m2 = self._m[-2], self._m[-3]
            h0, h1 = lam_s - self._lam[-2], self._lam[-2] - self._lam[-3]
            r0, r1 = h0 / h, h1 / h
            d10, d11 = (m0 - m1) / r0, (m1 - m2) / r1
            d1 = d10 + (r0 / (r0 + r1)) * (d10 - d11)
            d2 = (d10 - d11) / (r0 + r1)
            phi = e - 1.0
            x = ((s_t / s_s) * x_t - a_t * phi * m0 + a_t * (phi / h + 1.0) * d1
                 - a_t * ((phi + h) / h ** 2 - 0.5) * d2)
        self._done = min(self._done + 1, self.order)
        self._k += 1
        return x


class UniPC(_Multistep):
    """UniPC (Zhao et al. 2023) with B(h) = e^h - 1 on the data prediction: a predictor of the
    given order and, after every network call but the first, a corrector that re-uses that call
    (no extra evaluations). The last step is first order (it lands on sigma = 0).

    Args:
        order: predictor order, 1..3.
        corrector: apply the UniC corrector.
    """

    def __init__(self, order: int = 2, corrector: bool = True) -> None:
        super().__init__(order)
        self.corrector = corrector
        self.name = f"unipc{order}" + ("" if corrector else "-p")

    def config(self) -> dict[str, Any]:
        return {"sampler": "unipc", "order": self.order, "corrector": self.corrector}

    def reset(self, diffusion, steps):
        super().reset(diffusion, steps)
        self._last: torch.Tensor | None = None
        self._this_order = 1

    @staticmethod
    def _coefficients(rks: list[float], h: float, order: int) -> tuple[torch.Tensor, float, float]:
        """The B(h)-system of UniPC: (R, b) rows for orders 1..order, and hh, B(h)."""
        hh = -h
        h_phi_1 = math.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1.0
        b_h = math.expm1(hh)
        rows, b, fact = [], [], 1
        rk = torch.tensor(rks + [1.0], dtype=torch.float64)
        for i in range(1, order + 1):
            rows.append(rk ** (i - 1))
            b.append(h_phi_k * fact / b_h)
            fact *= i + 1
            h_phi_k = h_phi_k / hh - 1.0 / fact
        return torch.stack(rows), torch.tensor(b, dtype=torch.float64), h_phi_1, b_h

    def _update(self, diffusion, x, i_from: int, i_to: int, m0: torch.Tensor, hist: list[tuple[float, torch.Tensor]],
                order: int, model_t: torch.Tensor | None) -> torch.Tensor:
        _, s_s, lam_s = self._alpha_sigma(diffusion, i_from)
        a_t, s_t, lam_t = self._alpha_sigma(diffusion, i_to)
        h = lam_t - lam_s
        rks, d1s = [], []
        for lam_i, m_i in hist[:order - 1]:
            rk = (lam_i - lam_s) / h
            rks.append(rk)
            d1s.append((m_i - m0) / rk)
        if math.isinf(h):  # the last step lands on the clean image
            return m0 if model_t is None else model_t
        R, b, h_phi_1, b_h = self._coefficients(rks, h, order)
        x_new = (s_t / s_s) * x - a_t * h_phi_1 * m0
        if model_t is None:  # predictor
            if d1s:
                rhos = [0.5] if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1]).tolist()
                x_new = x_new - a_t * b_h * sum(r * d for r, d in zip(rhos, d1s))
            return x_new
        rhos = [0.5] if order == 1 else torch.linalg.solve(R, b).tolist()
        corr = sum(r * d for r, d in zip(rhos[:-1], d1s)) if d1s else 0.0
        return x_new - a_t * b_h * (corr + rhos[-1] * (model_t - m0))

    def step(self, diffusion, out, x_t, t, generator):
        i = int(t[0])
        k, n = self._k, len(self._steps)
        m = out["pred_x0"]
        if self.corrector and k > 0 and self._last is not None:
            # history before this call: (lambda, m) of earlier indices, newest first
            prev_i = self._steps[k - 1]
            hist = [(self._lam[-j], self._m[-j]) for j in range(2, len(self._m) + 1)]
            x_t = self._update(diffusion, self._last, prev_i, i, self._m[-1], hist, self._this_order, m)
        _, _, lam_i = self._alpha_sigma(diffusion, i)
        self._m = (self._m + [m])[-self.order:]
        self._lam = (self._lam + [lam_i])[-self.order:]
        self._this_order = min(min(self.order, n - k), self._done + 1)
        self._last = x_t
        hist = [(self._lam[-j], self._m[-j]) for j in range(2, len(self._m) + 1)]
        x = self._update(diffusion, x_t, i, i - 1, m, hist, self._this_order, None)
        self._done = min(self._done + 1, self.order)
        self._k += 1
        return x


#: rules of :class:`ThresholdedSampler`
THRESHOLD_RULES = ("clip", "dynamic", "late", "none")


class ThresholdedSampler(Sampler):
    """Another sampler with its own rule for bounding the data prediction x0_hat.

    The plain samplers clip x0_hat to [-1, 1] at every step (``clip_denoised=True``, diffusers'
    ``thresholding`` with ``sample_max_value=1``). This wrapper replaces that with ``rule``:

    - ``"clip"``: clip at every step (the same numbers as ``clip_denoised=True``);
    - ``"dynamic"``: dynamic thresholding (Saharia et al. 2022, Imagen, arXiv 2205.11487, sec. 2.3):
      per image ``s = max(1, quantile(|x0_hat|, percentile))``, then ``x0_hat <- clamp(x0_hat, -s, s) / s``;
    - ``"late"``: clip only at the late steps, those whose respaced index ``i`` satisfies
      ``i < late_fraction * N`` (N steps of the respaced process); the early, high-noise steps run
      unclipped;
    - ``"none"``: never bound it (``clip_denoised=False``).

    The rule acts on ``out["pred_x0"]`` before the wrapped sampler's :meth:`step` sees it (and
    ``out["mean"]`` is recomputed from it for ancestral sampling), so it applies to DDPM, DDIM and
    the multistep solvers alike. ``clip_denoised`` given to :meth:`sample` is ignored: the rule
    replaces it.

    Args:
        base: the sampler (object or name, see :func:`make_sampler`).
        rule: one of :data:`THRESHOLD_RULES`.
        percentile: the quantile of ``|x0_hat|`` of the dynamic rule, in (0, 1].
        late_fraction: the share of steps (the last ones) that are clipped by the late rule, in [0, 1].
    """

    def __init__(self, base: "Sampler | str", rule: str = "dynamic", percentile: float = 0.995,
                 late_fraction: float = 0.5) -> None:
        if rule not in THRESHOLD_RULES:
            raise ValueError(f"rule must be one of {THRESHOLD_RULES}, got {rule!r}")
        percentile, late_fraction = float(percentile), float(late_fraction)
        if not 0.0 < percentile <= 1.0:
            raise ValueError(f"percentile must be in (0, 1], got {percentile}")
        if not 0.0 <= late_fraction <= 1.0:
            raise ValueError(f"late_fraction must be in [0, 1], got {late_fraction}")
        self.base = make_sampler(base)
        self.rule, self.percentile, self.late_fraction = rule, percentile, late_fraction
        self.stochastic = self.base.stochastic
        self.name = f"{self.base.name}+{rule}"

    def config(self) -> dict[str, Any]:
        extra = {"dynamic": {"percentile": self.percentile}, "late": {"late_fraction": self.late_fraction}}
        return {**self.base.config(), "threshold": self.rule, **extra.get(self.rule, {})}

    def reset(self, diffusion, steps):
        self.base.reset(diffusion, steps)

    def bound(self, diffusion: "GaussianDiffusion", x0: torch.Tensor, i: int) -> torch.Tensor:
        """x0_hat (B, C, H, W) at respaced index ``i`` -> the bounded x0_hat."""
        if self.rule == "clip" or (self.rule == "late" and i < self.late_fraction * diffusion.num_timesteps):
            return x0.clamp(-1, 1)
        if self.rule == "dynamic":
            flat = x0.reshape(x0.shape[0], -1).abs().float()
            s = torch.quantile(flat, self.percentile, dim=1).clamp(min=1.0).to(x0.dtype)
            s = s.view(-1, *([1] * (x0.ndim - 1)))
            return x0.clamp(-s, s) / s
        return x0

    def step(self, diffusion, out, x_t, t, generator):
        x0 = self.bound(diffusion, out["pred_x0"], int(t[0]))
        mean, _ = diffusion.q_posterior(x0, x_t, t)
        return self.base.step(diffusion, dict(out, pred_x0=x0, mean=mean), x_t, t, generator)

    def sample(self, diffusion, model, y, **kwargs):
        """As :meth:`Sampler.sample`; the network output is left unclipped and ``rule`` bounds it."""
        kwargs["clip_denoised"] = False
        return super().sample(diffusion, model, y, **kwargs)


#: name -> a factory of sampler objects; ``make_sampler`` builds one from a name.
SAMPLERS: dict[str, Callable[[], Sampler]] = {
    "ddpm": DDPMSampler, "ddim": DDIMSampler,
    "dpm++2m": lambda: DPMSolverPP(2), "dpm++3m": lambda: DPMSolverPP(3),
    "dpm++2m-sde": lambda: DPMSolverPP(2, "sde"), "unipc": lambda: UniPC(2), "unipc3": lambda: UniPC(3),
}


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
