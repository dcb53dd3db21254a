"""Uniform affine fake quantisers, AdaRound and learned-step activation quantisers.

The post-training quantisation of Q-GESCO (Pignata et al., "Lightweight Diffusion Models for
Resource-Constrained Semantic Communication", arXiv 2410.02491), which is Q-Diffusion's (Li et al.,
ICCV 2023, arXiv 2302.04304): uniform affine quantisation ``q(x) = (clamp(round(x / delta) + z,
qmin, qmax) - z) * delta`` (Jacob et al., arXiv 1712.05877), with

- scales by min-max (``"max"``), min-max times ``(bits + 2) / 8`` (``"max_scale"``) or an
  ``|x - q(x)|^2.4`` search over 80 shrinking ranges (``"mse"``, LAPQ, arXiv 1911.07190);
- AdaRound (Nagel et al., arXiv 2004.10568): ``w_q = (clamp(floor(w / delta) + h(alpha) + z) - z)
  * delta`` with the rectified sigmoid ``h``, its regulariser and the annealed temperature beta;
- activation quantisers whose step size is a Parameter trained through a straight-through
  estimator (LSQ, Esser et al., arXiv 1902.08153), initialised by min-max or tracked by a running
  min/max.

Two behaviours, named by ``compat``:

``compat=None`` (default, principled)
    the range is widened to contain 0 for both the step ``delta`` and the zero point, so the zero
    point lies in ``[qmin, qmax]`` (storable as an unsigned integer) and no channel is clipped;
    MSE candidates keep that property and a constant channel is handled; AdaRound's hard rounding
    at ``alpha = 0`` breaks ties to even (so before training it equals round-to-nearest);
    the softmax quantiser scales by the maximum probability.
``compat="qgesco"``
    the published code bit for bit (Q-GESCO @ 75bbfdc, whose ``qdiff`` is Q-Diffusion @ 715783d):
    ``delta`` from the raw range but the zero point from the range widened to 0 (an all-positive
    channel clips everything above ``max - min``, an all-negative one gets a zero point above
    ``2^b - 1``), extremes in float64 with Python's round, the ``mse`` search without a floor (a
    constant channel fails), hard AdaRound rounding ``1[alpha >= 0]`` (round half up), the
    running activation update ``0.95 old + 0.05 new`` without widening, the softmax step
    ``(max - min) / 255``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

__all__ = [
    "COMPATS",
    "SCALE_METHODS",
    "check_compat",
    "quant_range",
    "init_scale",
    "fake_quant",
    "round_ste",
    "lp_loss",
    "WeightQuantizer",
    "ActQuantizer",
    "BetaSchedule",
    "adaround_regularizer",
    "AdaRoundLoss",
    "rectified_sigmoid",
    "GAMMA",
    "ZETA",
]

COMPATS = (None, "qgesco")
SCALE_METHODS = ("max", "max_scale", "mse")
#: AdaRound's stretch of the sigmoid to (GAMMA, ZETA) before clipping to [0, 1]
GAMMA, ZETA = -0.1, 1.1
_EPS = 1e-8


def check_compat(compat: str | None) -> str | None:
    if compat not in COMPATS:
        raise ValueError(f"compat must be None (principled default) or 'qgesco', got {compat!r}")
    return compat


def _check_bits(n_bits: int) -> int:
    if not isinstance(n_bits, int) or isinstance(n_bits, bool) or not 2 <= n_bits <= 16:
        raise ValueError(f"n_bits must be an integer in 2..16, got {n_bits!r}")
    return n_bits


def quant_range(n_bits: int, symmetric: bool) -> tuple[int, int]:
    """Integer range ``(qmin, qmax)``: ``[0, 2^b - 1]``, or ``[-2^(b-1), 2^(b-1) - 1]`` symmetric."""
    _check_bits(n_bits)
    if symmetric:
        return -(2 ** (n_bits - 1)), 2 ** (n_bits - 1) - 1
    return 0, 2 ** n_bits - 1


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` in the forward pass, identity gradient (straight-through estimator)."""
    return (x.round() - x).detach() + x


def fake_quant(x: torch.Tensor, delta: torch.Tensor, zero_point: torch.Tensor | float, qmin: int, qmax: int,
               ste: bool = False) -> torch.Tensor:
    """``(clamp(round(x / delta) + z, qmin, qmax) - z) * delta``; ``delta`` and ``z`` broadcast
    against ``x`` (per channel: (C, 1, ...)). ``ste``: straight-through rounding."""
    r = x / delta
    x_int = (round_ste(r) if ste else torch.round(r)) + zero_point
    return (torch.clamp(x_int, qmin, qmax) - zero_point) * delta


def lp_loss(pred: torch.Tensor, target: torch.Tensor, p: float = 2.0, reduction: str = "channel_sum") -> torch.Tensor:
    """``"channel_sum"``: mean over batch and positions of the sum over channels (dim 1) of
    ``|pred - target|^p`` (the reconstruction loss); ``"mean"``: mean over all elements."""
    e = (pred - target).abs().pow(p)
    if reduction == "channel_sum":
        return e.sum(1).mean()
    if reduction == "mean":
        return e.mean()
    raise ValueError(f"reduction must be 'channel_sum' or 'mean', got {reduction!r}")


# ---------------------------------------------------------------------------------------- scales
def _qgesco_max_1d(x: torch.Tensor, n_bits: int, symmetric: bool, scale_method: str,
                   always_zero: bool) -> tuple[float, int]:
    """Q-Diffusion's ``'max'`` branch on one channel, in Python floats (float64)."""
    raw_min, raw_max = x.min().item(), x.max().item()
    x_min, x_max = min(raw_min, 0), max(raw_max, 0)
    if "scale" in scale_method:
        x_min = x_min * (n_bits + 2) / 8
        x_max = x_max * (n_bits + 2) / 8
    if symmetric:
        delta = max(abs(x_min), x_max) / (2 ** (n_bits - 1) - 1)
    else:
        delta = float(raw_max - raw_min) / (2 ** n_bits - 1)  # the raw range, not the widened one
    if delta < _EPS:
        delta = _EPS
    zero_point = round(-x_min / delta) if not (symmetric or always_zero) else 0
    return delta, zero_point


def _qgesco_mse_1d(x: torch.Tensor, n_bits: int, symmetric: bool,
                   always_zero: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Q-Diffusion's ``'mse'`` branch on one channel (float32 tensors, torch rounding)."""
    levels = 2 ** (n_bits - 1) - 1 if symmetric else 2 ** n_bits
    x_max, x_min = x.max(), x.min()
    best, delta, zero_point = 1e10, None, None
    for i in range(80):
        new_max = x_max * (1.0 - (i * 0.01))
        new_min = x_min * (1.0 - (i * 0.01))
        d = (new_max - new_min) / (2 ** n_bits - 1) if not always_zero else new_max / (2 ** n_bits - 1)
        z = (-new_min / d).round() if not always_zero else 0
        x_q = (torch.clamp(torch.round(x / d) + z, 0, levels - 1) - z) * d
        score = lp_loss(x, x_q, p=2.4, reduction="mean")
        if score < best:
            best, delta, zero_point = score, d, z
    if delta is None:
        raise ValueError("scale_method 'mse' with compat='qgesco' cannot quantise a constant channel "
                         "(every candidate scores NaN, as in the published code); use compat=None")
    return delta, torch.as_tensor(zero_point, dtype=x.dtype)


def _channel_view(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    return x.reshape(x.shape[0], -1), (-1,) + (1,) * (x.ndim - 1)


def _fixed_scale(x: torch.Tensor, n_bits: int, symmetric: bool, channel_wise: bool, scale_method: str,
                 always_zero: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The principled scales, vectorised over channels: the range always contains 0."""
    flat, shape = _channel_view(x) if channel_wise else (x.reshape(1, -1), ())
    # extremes and step in float64 (as the reference), so that both modes agree where no quirk applies
    flat = flat.detach().double() if scale_method != "mse" else flat.detach().float()
    qmin, qmax = quant_range(n_bits, symmetric)
    lo = flat.min(dim=1).values.clamp(max=0)
    hi = flat.max(dim=1).values.clamp(min=0)
    if always_zero:
        lo = torch.zeros_like(lo)

    def scale_of(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if symmetric:
            delta = torch.maximum(lo.abs(), hi) / qmax
            z = torch.zeros_like(delta)
        else:
            delta = (hi - lo) / (qmax - qmin)
            z = None
        delta = delta.clamp(min=_EPS)
        if scale_method != "mse":  # the step is stored in float32; the zero point is computed from that
            delta = delta.float().double()
        if z is None:
            z = torch.round(-lo / delta).clamp(qmin, qmax)
        return delta, z

    if scale_method in ("max", "max_scale"):
        if scale_method == "max_scale":
            lo, hi = lo * (n_bits + 2) / 8, hi * (n_bits + 2) / 8
        delta, z = scale_of(lo, hi)
    else:
        best = None
        for i in range(80):
            f = 1.0 - i * 0.01
            d, zz = scale_of(lo * f, hi * f)
            xq = (torch.clamp(torch.round(flat / d[:, None]) + zz[:, None], qmin, qmax) - zz[:, None]) * d[:, None]
            score = (flat - xq).abs().pow(2.4).mean(dim=1)
            if best is None:
                best, delta, z = score, d, zz
            else:
                better = score < best
                best = torch.where(better, score, best)
                delta, z = torch.where(better, d, delta), torch.where(better, zz, z)
    if channel_wise:
        return delta.to(x.dtype).view(shape), z.to(x.dtype).view(shape)
    return delta.to(x.dtype).reshape(()), z.to(x.dtype).reshape(())


def init_scale(x: torch.Tensor, n_bits: int = 8, symmetric: bool = False, channel_wise: bool = False,
               scale_method: str = "max", always_zero: bool = False,
               compat: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Step ``delta`` and zero point ``z`` for ``x``.

    Args:
        x: the tensor; with ``channel_wise`` dim 0 is the channel (a weight's output channel).
        n_bits, symmetric: the integer grid (see :func:`quant_range`).
        scale_method: ``"max"``, ``"max_scale"`` or ``"mse"`` (see the module docstring).
        always_zero: zero point fixed at 0 on the unsigned grid (softmax probabilities).
        compat: ``None`` or ``"qgesco"`` (see the module docstring).

    Returns:
        ``(delta, z)``, float tensors of shape (C, 1, ..., 1) per channel or () per tensor.
    """
    _check_bits(n_bits)
    check_compat(compat)
    if scale_method not in SCALE_METHODS:
        raise ValueError(f"scale_method must be one of {SCALE_METHODS}, got {scale_method!r}")
    if x.numel() == 0:
        raise ValueError("cannot compute a quantisation scale for an empty tensor")
    if not torch.isfinite(x).all():
        raise ValueError("cannot compute a quantisation scale: the tensor contains NaN or infinite values")
    if compat is None:
        return _fixed_scale(x, n_bits, symmetric, channel_wise, scale_method, always_zero)
    x = x.detach()

    def one(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if scale_method == "mse":
            return _qgesco_mse_1d(v, n_bits, symmetric, always_zero)
        d, z = _qgesco_max_1d(v, n_bits, symmetric, scale_method, always_zero)
        return torch.tensor(d).type_as(v), torch.tensor(float(z), dtype=v.dtype)

    if not channel_wise:
        d, z = one(x)
        return d.reshape(()), z.reshape(())
    _, shape = _channel_view(x)
    delta = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    zero = torch.empty_like(delta)
    for c in range(x.shape[0]):
        delta[c], zero[c] = one(x[c])
    return delta.view(shape), zero.view(shape)


# ---------------------------------------------------------------------------------------- AdaRound
def rectified_sigmoid(alpha: torch.Tensor) -> torch.Tensor:
    """AdaRound's ``h(alpha) = clamp(sigmoid(alpha) (zeta - gamma) + gamma, 0, 1)``."""
    return torch.clamp(torch.sigmoid(alpha) * (ZETA - GAMMA) + GAMMA, 0, 1)


def adaround_regularizer(h: torch.Tensor, beta: float) -> torch.Tensor:
    """``sum(1 - |2h - 1|^beta)``: pushes every soft rounding ``h`` to 0 or 1 (AdaRound eq. 24)."""
    return (1 - ((h - 0.5).abs() * 2).pow(beta)).sum()


class BetaSchedule:
    """AdaRound's temperature: ``start`` until ``warmup * iters``, then linear to ``end`` at ``iters``."""

    def __init__(self, iters: int, warmup: float = 0.2, start: float = 20.0, end: float = 2.0) -> None:
        if iters < 1:
            raise ValueError(f"iters must be >= 1, got {iters}")
        if not 0.0 <= warmup < 1.0:
            raise ValueError(f"warmup must lie in [0, 1), got {warmup}")
        self.iters, self.start_decay, self.start, self.end = iters, warmup * iters, start, end

    def __call__(self, count: int) -> float:
        if count < self.start_decay:
            return self.start
        rel = (count - self.start_decay) / (self.iters - self.start_decay)
        return self.end + (self.start - self.end) * max(0.0, 1 - rel)


class AdaRoundLoss:
    """``rec + weight * sum_q reg(h_q, beta)`` per step; the regulariser is 0 while the step count
    (starting at 1) is below ``warmup * iters``. Call once per optimisation step.

    ``quantizers`` are the :class:`WeightQuantizer` objects whose ``alpha`` is trained.
    """

    def __init__(self, quantizers: Sequence["WeightQuantizer"], iters: int, weight: float = 0.01,
                 warmup: float = 0.2, b_range: tuple[float, float] = (20.0, 2.0), p: float = 2.0) -> None:
        self.quantizers = list(quantizers)
        self.weight, self.p = weight, p
        self.loss_start = iters * warmup
        self.beta = BetaSchedule(iters, warmup, *b_range)
        self.count = 0

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (total, rec, reg)."""
        self.count += 1
        rec = lp_loss(pred, target, p=self.p)
        if self.count < self.loss_start:
            reg = torch.zeros((), dtype=rec.dtype, device=rec.device)
        else:
            b = self.beta(self.count)
            reg = sum(self.weight * adaround_regularizer(q.soft_rounding(), b) for q in self.quantizers)
            reg = torch.as_tensor(reg, dtype=rec.dtype, device=rec.device)
        return rec + reg, rec, reg


# ---------------------------------------------------------------------------------------- modules
class WeightQuantizer(nn.Module):
    """Fake quantiser of one weight tensor (per output channel or per tensor), with AdaRound.

    State (what Q-GESCO's ``quantized_model.pth`` stores): ``alpha`` (the weight's shape, only after
    :meth:`enable_adaround`), ``zero_point`` and ``delta`` ((out, 1, ...) per channel, () per tensor).

    ``rounding``: ``"nearest"`` (round to nearest, ties to even), ``"soft"`` (AdaRound ``h(alpha)``,
    differentiable in ``alpha``) or ``"hard"`` (AdaRound's learned decision).
    """

    def __init__(self, n_bits: int = 8, symmetric: bool = False, channel_wise: bool = True,
                 scale_method: str = "max", compat: str | None = None) -> None:
        super().__init__()
        if scale_method not in SCALE_METHODS:
            raise ValueError(f"scale_method must be one of {SCALE_METHODS}, got {scale_method!r}")
        self.n_bits, self.symmetric = _check_bits(n_bits), bool(symmetric)
        self.channel_wise, self.scale_method = bool(channel_wise), scale_method
        self.compat = check_compat(compat)
        self.qmin, self.qmax = quant_range(n_bits, symmetric)
        self.alpha: nn.Parameter | None = None
        self.register_buffer("zero_point", None)
        self.register_buffer("delta", None)
        self.rounding = "nearest"

    @property
    def inited(self) -> bool:
        return self.delta is not None

    def extra_repr(self) -> str:
        return (f"bits={self.n_bits}, symmetric={self.symmetric}, channel_wise={self.channel_wise}, "
                f"scale={self.scale_method}, compat={self.compat}, rounding={self.rounding}")

    def init(self, w: torch.Tensor) -> "WeightQuantizer":
        """Set ``delta`` and ``zero_point`` from the weight ``w`` (no gradient)."""
        with torch.no_grad():
            d, z = init_scale(w, self.n_bits, self.symmetric, self.channel_wise, self.scale_method,
                              compat=self.compat)
        self.delta, self.zero_point = d, z
        return self

    def set_scale(self, delta: torch.Tensor, zero_point: torch.Tensor) -> None:
        self.delta, self.zero_point = delta.detach().clone(), zero_point.detach().clone()

    def _adaround_clamp(self) -> tuple[int, int]:
        if self.compat == "qgesco":  # AdaRound clamps to [0, n_levels - 1] even when symmetric
            return 0, (2 ** (self.n_bits - 1) - 1 if self.symmetric else 2 ** self.n_bits) - 1
        return self.qmin, self.qmax

    def enable_adaround(self, w: torch.Tensor | None = None, alpha: torch.Tensor | None = None) -> nn.Parameter:
        """Turn on AdaRound: ``alpha`` given, or initialised so that ``h(alpha) = w/delta - floor(w/delta)``."""
        if not self.inited:
            raise ValueError("initialise the quantiser (init or set_scale) before enabling AdaRound")
        if alpha is None:
            if w is None:
                raise ValueError("enable_adaround needs the weight w or an alpha")
            with torch.no_grad():
                r = w / self.delta
                rest = r - torch.floor(r)
                alpha = -torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1)
        self.alpha = nn.Parameter(alpha.detach().clone())
        self.rounding = "soft"
        return self.alpha

    def soft_rounding(self) -> torch.Tensor:
        if self.alpha is None:
            raise ValueError("AdaRound is not enabled on this quantiser")
        return rectified_sigmoid(self.alpha)

    def hard_rounding(self, w: torch.Tensor | None = None) -> torch.Tensor:
        """The learned up/down decision (0 or 1) per weight: ``1[alpha >= 0]`` with
        ``compat="qgesco"``; by default ``1[alpha > 0]``, and at ``alpha = 0`` (``w/delta`` on a .5
        tie) up only when ``floor(w/delta)`` is odd, i.e. ties to even as ``torch.round`` (needs ``w``)."""
        if self.alpha is None:
            raise ValueError("AdaRound is not enabled on this quantiser")
        if self.compat == "qgesco":
            return (self.alpha >= 0).to(self.alpha.dtype)
        up = self.alpha > 0
        if w is not None:
            up = up | ((self.alpha == 0) & (torch.remainder(torch.floor(w / self.delta), 2) == 1))
        return up.to(self.alpha.dtype)

    def integer(self, w: torch.Tensor) -> torch.Tensor:
        """Stored integers ``clamp(round(w/delta) + z)`` (AdaRound's hard decision when enabled)."""
        r = w / self.delta
        if self.rounding == "nearest" or self.alpha is None:
            return torch.clamp(torch.round(r) + self.zero_point, self.qmin, self.qmax)
        lo, hi = self._adaround_clamp()
        return torch.clamp(torch.floor(r) + self.hard_rounding(w) + self.zero_point, lo, hi)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.inited:
            self.init(w)
        if self.rounding == "nearest" or self.alpha is None:
            return fake_quant(w, self.delta, self.zero_point, self.qmin, self.qmax)
        h = self.soft_rounding() if self.rounding == "soft" else self.hard_rounding(w)
        lo, hi = self._adaround_clamp()
        x_int = torch.floor(w / self.delta) + h
        return (torch.clamp(x_int + self.zero_point, lo, hi) - self.zero_point) * self.delta


class ActQuantizer(nn.Module):
    """Per-tensor activation quantiser with a learned step (LSQ-style, straight-through rounding).

    The first call initialises ``delta`` (a Parameter) and ``zero_point`` from that input
    (``"max"``/``"max_scale"``/``"mse"``); with ``running_stat`` every call first updates the
    running extremes ``x_min, x_max <- m * old + (1 - m) * new`` (m = 0.95) and recomputes the
    step. ``always_zero``: zero point 0 on the unsigned grid (softmax probabilities).
    """

    def __init__(self, n_bits: int = 8, symmetric: bool = False, scale_method: str = "max",
                 always_zero: bool = False, compat: str | None = None, momentum: float = 0.95) -> None:
        super().__init__()
        self.n_bits, self.symmetric = _check_bits(n_bits), bool(symmetric)
        if scale_method not in SCALE_METHODS:
            raise ValueError(f"scale_method must be one of {SCALE_METHODS}, got {scale_method!r}")
        self.scale_method, self.always_zero = scale_method, bool(always_zero)
        self.compat = check_compat(compat)
        self.qmin, self.qmax = quant_range(n_bits, symmetric)
        self.momentum = momentum
        self.delta: nn.Parameter | None = None
        self.register_buffer("zero_point", None)
        self.register_buffer("x_min", None)
        self.register_buffer("x_max", None)
        self.running_stat = False
        self.enabled = True

    @property
    def inited(self) -> bool:
        return self.delta is not None

    def extra_repr(self) -> str:
        return (f"bits={self.n_bits}, symmetric={self.symmetric}, scale={self.scale_method}, "
                f"always_zero={self.always_zero}, compat={self.compat}")

    def init(self, x: torch.Tensor) -> None:
        with torch.no_grad():
            self.x_min, self.x_max = x.detach().min(), x.detach().max()
            if self.compat is None and self.always_zero:
                d = (self.x_max.clamp(min=0) / self.qmax).clamp(min=_EPS)
                z = torch.zeros_like(d)
            else:
                d, z = init_scale(x, self.n_bits, self.symmetric, False, self.scale_method,
                                  always_zero=self.always_zero, compat=self.compat)
        self.delta = nn.Parameter(d.reshape(()).clone())
        self.zero_point = z.reshape(()).clone()

    def update_running(self, x: torch.Tensor) -> None:
        """One running-statistics update with the batch ``x`` (no gradient)."""
        if not self.inited:
            raise ValueError("the activation quantiser must be initialised before running updates")
        m = self.momentum
        with torch.no_grad():
            self.x_min = self.x_min * m + x.detach().min() * (1 - m)
            self.x_max = self.x_max * m + x.detach().max() * (1 - m)
            lo, hi = self.x_min, self.x_max
            if self.compat is None:
                lo, hi = lo.clamp(max=0), hi.clamp(min=0)
                if self.always_zero:
                    lo = torch.zeros_like(lo)
            if self.symmetric:
                d = torch.max(lo.abs(), hi.abs()) / self.qmax
            elif self.always_zero:
                d = hi / (2 ** self.n_bits - 1)
            else:
                d = (hi - lo) / (2 ** self.n_bits - 1)
            d = torch.clamp(d, min=_EPS)
            if not self.symmetric:
                z = (-lo / d).round() if not self.always_zero else torch.zeros_like(d)
                if self.compat is None:
                    z = z.clamp(self.qmin, self.qmax)
                self.zero_point = z
        self.delta = nn.Parameter(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if not self.inited:
            self.init(x)
        elif self.running_stat:
            self.update_running(x)
        return fake_quant(x, self.delta, self.zero_point, self.qmin, self.qmax, ste=True)


def bits_to_bytes(n_values: int, n_bits: int) -> int:
    """Bytes to store ``n_values`` integers of ``n_bits`` packed densely (4-bit: two per byte)."""
    return math.ceil(n_values * n_bits / 8)
