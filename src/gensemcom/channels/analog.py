"""Analog (continuous-amplitude) channels: AWGN, Rayleigh and Rician fading, equalisation.

Conventions (the same for every function and class of this module, Sionna-style)
----------------------------------------------------------------------------------

- **Symbols.** A real-valued payload ``x`` of shape (B, ...) is flattened per sample to ``m``
  numbers and paired into ``n = ceil(m / 2)`` complex symbols: consecutive pairs become
  (real, imaginary). An odd ``m`` is padded with one zero, which is dropped again on receive
  (:func:`pair_to_complex` / :func:`complex_to_real`). One complex symbol is one **channel use**.
- **Power.** Before the channel the symbols of each sample are scaled to mean ``|s|^2 = 1`` per
  complex symbol (:func:`normalize_power`). The per-sample scale is side information: the
  receiver multiplies it back, so ``received`` is in the units of ``x``. An all-zero sample is
  left unscaled (scale 1).
- **SNR.** ``snr_db`` is Es/N0 in dB per complex channel use, with Es = 1 after normalisation,
  so the noise variance is ``N0 = 10 ** (-snr_db / 10)`` per complex symbol, i.e. ``N0 / 2`` per
  real dimension. ``snr_db`` is any real number (Python, numpy or 0-d tensor scalar; checked by
  :func:`check_snr_db`, the one SNR check of the library) or a (B,) tensor / array (one value per
  batch item); ``float('inf')`` means noiseless (N0 = 0: an AWGN channel returns ``x`` exactly;
  fading channels return it up to the float rounding of the equalisation). NaN and ``-inf`` are
  errors that name the argument.
  Functions named with ``no`` (:func:`awgn`, :func:`equalize`) take the noise variance N0
  directly, like Sionna's ``AWGN()(x, no)``.
- **Fading.** Flat fading, one complex gain per sample (``block_size=None``) or per block of
  ``block_size`` consecutive symbols: ``y = h * s + w``. ``E|h|^2 = 1`` for Rayleigh and Rician,
  so the *average* received SNR equals ``snr_db``. The receiver has perfect CSI (``h``).
- **Randomness.** Every draw takes an optional ``torch.Generator``; for fading channels the
  gains are drawn first, then the noise.

::

    x (B, ...) real --pair--> s (B, n) complex --/scale--> s' (mean |s'|^2 = 1)
        --> y = h s' + w,  w ~ CN(0, N0) --equalise--> s_hat --*scale--> unpair --> received (B, ...)
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Sequence, Union

import numpy as np
import torch

__all__ = [
    "SnrLike",
    "check_snr_db",
    "ChannelOutput",
    "Channel",
    "IdentityChannel",
    "AWGNChannel",
    "RayleighChannel",
    "RicianChannel",
    "make_channel",
    "CHANNEL_KINDS",
    "EQUALIZERS",
    "pair_to_complex",
    "complex_to_real",
    "normalize_power",
    "snr_db_to_noise_var",
    "awgn",
    "rayleigh_fading",
    "rician_fading",
    "equalize",
    "channel_uses_for",
    "per_pixel",
]

#: an SNR argument: any real number (Python, numpy or 0-d tensor scalar), or a (B,) tensor / array
SnrLike = Union[float, int, np.number, np.ndarray, torch.Tensor]

CHANNEL_KINDS = ("awgn", "rayleigh", "rician", "none")
EQUALIZERS = ("zf", "mmse", "none")


# ------------------------------------------------------------------------------------------------
# Real <-> complex, power, SNR
# ------------------------------------------------------------------------------------------------

def _real_dtype_for(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def pair_to_complex(x: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
    """Pair a real payload into complex symbols.

    Args:
        x: real tensor (B, ...). Float32/float64 keep their precision, other dtypes are computed
            in float32.

    Returns:
        ``(symbols, shape)``: complex tensor (B, n) with ``n = ceil(m / 2)``, ``m`` the number of
        values per sample, where ``symbols[b, i] = x_flat[b, 2i] + j x_flat[b, 2i+1]`` (a zero is
        appended when ``m`` is odd), and the original ``x.shape`` for :func:`complex_to_real`.
    """
    if x.is_complex():
        raise ValueError("pair_to_complex expects a real tensor; it is already complex")
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"payload must be (B, ...) with B >= 1, got shape {tuple(x.shape)}")
    shape = x.shape
    flat = x.reshape(shape[0], -1).to(_real_dtype_for(x))
    if flat.shape[1] % 2:
        flat = torch.cat([flat, flat.new_zeros(shape[0], 1)], dim=1)
    return torch.view_as_complex(flat.reshape(shape[0], -1, 2).contiguous()), shape


def complex_to_real(symbols: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`pair_to_complex`.

    Args:
        symbols: complex (B, n).
        shape: the original real shape (B, ...) with ``ceil(prod(shape[1:]) / 2) == n``.

    Returns:
        Real tensor of ``shape`` (the padding zero, if any, removed).
    """
    if not symbols.is_complex() or symbols.ndim != 2:
        raise ValueError(f"symbols must be a complex (B, n) tensor, got {symbols.dtype} {tuple(symbols.shape)}")
    shape = torch.Size(shape)
    m = shape[1:].numel()
    if shape[0] != symbols.shape[0] or (m + 1) // 2 != symbols.shape[1]:
        raise ValueError(f"shape {tuple(shape)} does not fit symbols {tuple(symbols.shape)}")
    flat = torch.view_as_real(symbols.resolve_conj()).reshape(shape[0], -1)
    return flat[:, :m].reshape(shape)


def normalize_power(symbols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale each sample to mean ``|s|^2 = 1`` per complex symbol.

    Args:
        symbols: complex (B, n).

    Returns:
        ``(normalised, scale)``: complex (B, n) and the real (B,) factor with
        ``symbols = normalised * scale[:, None]`` (``scale = sqrt(mean |s|^2)``; 1 for an
        all-zero sample).
    """
    if not symbols.is_complex() or symbols.ndim != 2:
        raise ValueError(f"symbols must be a complex (B, n) tensor, got {symbols.dtype} {tuple(symbols.shape)}")
    power = symbols.abs().pow(2).mean(dim=1)
    scale = torch.where(power > 0, power.sqrt(), torch.ones_like(power))
    return symbols / scale[:, None], scale


def check_snr_db(value: Any, name: str = "snr_db") -> float:
    """One SNR in dB as a Python float, or a ValueError naming the problem.

    Accepted: any real number: ``int``, ``float``, numpy scalars (``np.float32(5.0)``,
    ``np.int64(3)``), 0-d real tensors and arrays, and ``inf`` (noiseless). Refused: NaN,
    ``-inf`` (infinite noise), booleans, complex values, strings and anything with more than one
    element (pass a (B,) tensor to :func:`snr_db_to_noise_var` for one SNR per batch item).

    Args:
        value: the SNR (Es/N0 per complex channel use, dB).
        name: the argument's name in error messages.
    """
    if isinstance(value, (torch.Tensor, np.ndarray)):
        if value.ndim != 0:
            raise ValueError(f"{name} must be a single real number, got a {type(value).__name__} of shape "
                             f"{tuple(value.shape)}")
        if isinstance(value, torch.Tensor):
            real = not (value.is_complex() or value.dtype == torch.bool)
        else:
            real = np.issubdtype(value.dtype, np.integer) or np.issubdtype(value.dtype, np.floating)
        if not real:
            raise ValueError(f"{name} must be a real number, got {value!r}")
        snr = float(value.item())
    elif isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number (Es/N0 in dB; inf for noiseless), got {value!r} "
                         f"({type(value).__name__})")
    else:
        snr = float(value)
    if math.isnan(snr):
        raise ValueError(f"{name} is NaN; expected a real number of dB (inf for noiseless)")
    if snr == -math.inf:
        raise ValueError(f"{name} = -inf (infinite noise) is not allowed")
    return snr


def snr_db_to_noise_var(snr_db: SnrLike, batch: int, device: torch.device | str | None = None,
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Noise variance per complex symbol ``N0 = 10 ** (-snr_db / 10)`` for unit symbol energy.

    Args:
        snr_db: Es/N0 in dB: one real number (see :func:`check_snr_db`: numpy and 0-d tensor
            scalars included) or a (B,) tensor / array, one value per batch item. ``inf`` gives
            N0 = 0.
        batch: B.

    Returns:
        Real (B,) tensor of N0 values.
    """
    if isinstance(snr_db, np.ndarray) and snr_db.ndim > 0:
        if not (np.issubdtype(snr_db.dtype, np.integer) or np.issubdtype(snr_db.dtype, np.floating)):
            raise ValueError(f"snr_db must be real numbers, got an array of {snr_db.dtype}")
        snr_db = torch.from_numpy(np.asarray(snr_db, dtype=np.float64))
    if isinstance(snr_db, torch.Tensor) and snr_db.ndim > 0:
        if snr_db.is_complex() or snr_db.dtype == torch.bool:
            raise ValueError(f"snr_db must be real, got a {snr_db.dtype} tensor")
        if snr_db.shape != (batch,):
            raise ValueError(f"snr_db tensor must be a scalar or have shape ({batch},) (one per batch "
                             f"item), got {tuple(snr_db.shape)}")
        snr = snr_db.to(device=device, dtype=torch.float64)
        if torch.isnan(snr).any():
            raise ValueError(f"snr_db contains NaN at batch items {torch.isnan(snr).nonzero().flatten().tolist()}")
        if (snr == -math.inf).any():
            raise ValueError("snr_db = -inf (infinite noise) is not allowed")
    else:
        snr = torch.full((batch,), check_snr_db(snr_db), dtype=torch.float64, device=device)
    return torch.pow(10.0, -snr / 10.0).to(dtype)


def _noise_var_tensor(no: float | torch.Tensor, batch: int, device: torch.device,
                      dtype: torch.dtype) -> torch.Tensor:
    """``no`` (number, 0-d or (B,)) -> validated (B, 1) real tensor."""
    if isinstance(no, torch.Tensor):
        if no.ndim == 0:
            n0 = no.to(device=device, dtype=dtype).expand(batch)
        elif no.shape == (batch,):
            n0 = no.to(device=device, dtype=dtype)
        else:
            raise ValueError(f"noise variance must be a scalar or have shape ({batch},), got {tuple(no.shape)}")
    else:
        n0 = torch.full((batch,), float(no), dtype=dtype, device=device)
    if torch.isnan(n0).any() or (n0 < 0).any() or torch.isinf(n0).any():
        raise ValueError("noise variance must be finite and >= 0")
    return n0[:, None]


def _complex_randn(shape: tuple[int, ...], real_dtype: torch.dtype, device: torch.device,
                   generator: torch.Generator | None) -> torch.Tensor:
    """CN(0, 1): independent real and imaginary parts of variance 1/2 each."""
    z = torch.randn(*shape, 2, dtype=real_dtype, device=device, generator=generator)
    return torch.view_as_complex(z * math.sqrt(0.5))


def _real_of(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.complex128 else torch.float32


# ------------------------------------------------------------------------------------------------
# Channel primitives
# ------------------------------------------------------------------------------------------------

def awgn(symbols: torch.Tensor, no: float | torch.Tensor,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """Complex AWGN: ``y = s + w`` with ``w ~ CN(0, no)`` (variance ``no / 2`` per real part).

    Args:
        symbols: complex (B, n).
        no: noise variance per complex symbol: a number, a 0-d tensor or a (B,) tensor, >= 0.
            The noise is always drawn (so a generator advances identically at any SNR);
            ``no = 0`` adds exact zeros.
        generator: source of the noise.

    Returns:
        Complex (B, n).
    """
    if not symbols.is_complex() or symbols.ndim != 2:
        raise ValueError(f"symbols must be a complex (B, n) tensor, got {symbols.dtype} {tuple(symbols.shape)}")
    real = _real_of(symbols.dtype)
    n0 = _noise_var_tensor(no, symbols.shape[0], symbols.device, real)
    w = _complex_randn(tuple(symbols.shape), real, symbols.device, generator)
    return symbols + w * n0.sqrt()


def _check_block_size(block_size: int | None) -> None:
    if block_size is not None and (not isinstance(block_size, int) or isinstance(block_size, bool)
                                   or block_size < 1):
        raise ValueError(f"block_size must be None (one gain per sample) or an int >= 1, got {block_size!r}")


def _expand_blocks(g: torch.Tensor, n: int, block_size: int | None) -> torch.Tensor:
    """(B, num_blocks) gains -> (B, n), each repeated over its block."""
    if block_size is None:
        return g.expand(-1, n).clone()
    return g.repeat_interleave(block_size, dim=1)[:, :n]


def rayleigh_fading(batch: int, n: int, block_size: int | None = None,
                    generator: torch.Generator | None = None, dtype: torch.dtype = torch.complex64,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """Rayleigh flat-fading gains ``h ~ CN(0, 1)`` (``E|h|^2 = 1``).

    Args:
        batch, n: output shape (B, n), one gain per complex symbol.
        block_size: None: one gain per sample, constant over its n symbols; k: a new independent
            gain every k consecutive symbols (the last block may be shorter).
        generator: source of the gains.

    Returns:
        Complex (B, n).
    """
    _check_block_size(block_size)
    blocks = 1 if block_size is None else -(-n // block_size)
    g = _complex_randn((batch, blocks), _real_of(dtype), torch.device(device or "cpu"), generator)
    return _expand_blocks(g, n, block_size).to(dtype)


def rician_fading(batch: int, n: int, k_factor: float, block_size: int | None = None,
                  los_phase: float | None = 0.0, generator: torch.Generator | None = None,
                  dtype: torch.dtype = torch.complex64,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """Rician flat-fading gains ``h = sqrt(K/(K+1)) e^{j phi} + sqrt(1/(K+1)) g``, ``g ~ CN(0, 1)``.

    ``E|h|^2 = 1``; ``|E h|^2 / Var h = K``. ``K = 0`` is Rayleigh, ``K = inf`` a fixed unit gain
    ``e^{j phi}``.

    Args:
        batch, n: output shape (B, n).
        k_factor: K >= 0 (linear, not dB).
        block_size: as in :func:`rayleigh_fading`; only the scattered part ``g`` varies per block.
        los_phase: phase ``phi`` (radians) of the line-of-sight term. A number: the same fixed
            phase everywhere (default 0, a real LOS gain). None: a uniform random phase in
            [0, 2 pi) per sample (constant over its blocks), drawn before ``g``.
        generator: source of the random draws.

    Returns:
        Complex (B, n).
    """
    k = float(k_factor)
    if math.isnan(k) or k < 0:
        raise ValueError(f"k_factor must be >= 0 (linear), got {k_factor!r}")
    _check_block_size(block_size)
    real = _real_of(dtype)
    dev = torch.device(device or "cpu")
    if los_phase is None:
        phi = torch.rand(batch, 1, dtype=real, device=dev, generator=generator) * (2 * math.pi)
    else:
        phi = torch.full((batch, 1), float(los_phase), dtype=real, device=dev)
    los = torch.polar(torch.ones_like(phi), phi)
    if math.isinf(k):
        return los.expand(-1, n).clone().to(dtype)
    blocks = 1 if block_size is None else -(-n // block_size)
    g = _complex_randn((batch, blocks), real, dev, generator)
    h = math.sqrt(k / (k + 1.0)) * los + math.sqrt(1.0 / (k + 1.0)) * g
    return _expand_blocks(h, n, block_size).to(dtype)


def equalize(y: torch.Tensor, h: torch.Tensor | None, no: float | torch.Tensor,
             kind: str = "mmse") -> torch.Tensor:
    """One-tap equalisation with known gains.

    - ``"zf"``: ``y / h`` (unbiased; undefined where ``h = 0``).
    - ``"mmse"``: ``conj(h) y / (|h|^2 + no)``, the linear MMSE estimate of a unit-power symbol;
      it is biased towards 0 by ``|h|^2 / (|h|^2 + no)`` and equals ZF when ``no = 0``.
    - ``"none"``: ``y`` unchanged.

    Args:
        y: complex (B, n) received symbols.
        h: complex gains broadcastable to (B, n), or None (AWGN: returns ``y``).
        no: noise variance per complex symbol: number, 0-d or (B,) tensor.
        kind: ``"zf"``, ``"mmse"`` or ``"none"``.

    Returns:
        Complex (B, n).
    """
    if kind not in EQUALIZERS:
        raise ValueError(f"unknown equalizer {kind!r}; expected one of {EQUALIZERS}")
    if not y.is_complex() or y.ndim != 2:
        raise ValueError(f"y must be a complex (B, n) tensor, got {y.dtype} {tuple(y.shape)}")
    if h is None or kind == "none":
        return y
    if kind == "zf":
        return y / h
    n0 = _noise_var_tensor(no, y.shape[0], y.device, _real_of(y.dtype))
    return h.conj() * y / (h.abs().pow(2) + n0)


def channel_uses_for(shape: Sequence[int], pixels: int | Sequence[int] | None = None
                     ) -> tuple[int, float | None]:
    """Complex channel uses per image for a real payload of ``shape`` (B, ...), and per pixel.

    ``pixels`` is the number of image pixels (``H * W``) or ``(H, W)``; None gives None per pixel.
    """
    uses = (torch.Size(shape)[1:].numel() + 1) // 2
    return uses, per_pixel(uses, pixels)


def per_pixel(uses: float, pixels: int | Sequence[int] | None) -> float | None:
    """``uses / pixels`` (``pixels`` = H * W or (H, W)); None when ``pixels`` is None."""
    if pixels is None:
        return None
    if isinstance(pixels, (tuple, list, torch.Size)):
        pixels = math.prod(int(p) for p in pixels)
    if isinstance(pixels, bool) or int(pixels) <= 0:
        raise ValueError(f"pixels must be a positive int or (H, W), got {pixels!r}")
    return uses / int(pixels)


# ------------------------------------------------------------------------------------------------
# Channel objects
# ------------------------------------------------------------------------------------------------

@dataclass
class ChannelOutput:
    """What a channel delivered and what it used.

    Attributes:
        received: real tensor, the shape and dtype of the input ``x``: equalised, power
            normalisation undone.
        symbols_tx: complex (B, n) transmitted symbols after power normalisation.
        symbols_rx: complex (B, n) channel output ``h * s + w`` before equalisation.
        symbols_eq: complex (B, n) equalised symbols (normalised domain).
        csi: complex (B, n) gains ``h`` known to the receiver, or None (AWGN, identity).
        noise_var: real (B,) N0 per complex symbol used for each sample.
        scale: real (B,) power-normalisation factor (side information).
        channel_uses: complex symbols per image, ``ceil(values per sample / 2)``.
        channel_uses_per_pixel: ``channel_uses / pixels`` or None when ``pixels`` was not given.
    """

    received: torch.Tensor
    symbols_tx: torch.Tensor
    symbols_rx: torch.Tensor
    symbols_eq: torch.Tensor
    csi: torch.Tensor | None
    noise_var: torch.Tensor
    scale: torch.Tensor
    channel_uses: int
    channel_uses_per_pixel: float | None


class Channel:
    """Base class: pair, normalise, :meth:`apply` the channel (subclass), unnormalise, unpair.

    Call as ``channel(x, snr_db, generator=None, pixels=None) -> ChannelOutput`` with ``x`` a
    real (B, ...) tensor and ``snr_db`` Es/N0 in dB (number or (B,) tensor), see the module
    docstring for the conventions. A new channel model subclasses this and implements
    :meth:`apply` on the normalised complex symbols.
    """

    kind = "base"

    def apply(self, s: torch.Tensor, no: torch.Tensor, generator: torch.Generator | None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Apply the channel to unit-power symbols.

        Args:
            s: complex (B, n) symbols, mean ``|s|^2 = 1`` per sample.
            no: real (B,) noise variance N0 per complex symbol.
            generator: source of every random draw (gains first, then noise).

        Returns:
            ``(received (B, n), equalised (B, n), csi (B, n) or None)``, all complex.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement apply(s, no, generator)")

    def __call__(self, x: torch.Tensor, snr_db: SnrLike, generator: torch.Generator | None = None,
                 pixels: int | Sequence[int] | None = None) -> ChannelOutput:
        if x.is_complex():
            raise ValueError("channels take a real payload (B, ...); pair complex data yourself")
        symbols, shape = pair_to_complex(x)
        s, scale = normalize_power(symbols)
        no = snr_db_to_noise_var(snr_db, x.shape[0], device=x.device, dtype=_real_of(s.dtype))
        y, eq, csi = self.apply(s, no, generator)
        # Algebraically ``scale * eq`` (undo the normalisation); written as the original symbols
        # plus the scaled estimation error so that a noiseless AWGN channel returns x bit-exactly.
        rx = symbols + (eq - s) * scale[:, None]
        received = complex_to_real(rx, shape).to(x.dtype if x.is_floating_point() else rx.real.dtype)
        uses, uses_per_pixel = channel_uses_for(shape, pixels)
        return ChannelOutput(received=received, symbols_tx=s, symbols_rx=y, symbols_eq=eq, csi=csi,
                             noise_var=no, scale=scale, channel_uses=uses,
                             channel_uses_per_pixel=uses_per_pixel)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class IdentityChannel(Channel):
    """No channel at all: ``received`` is ``x`` (up to float rounding of the normalisation);
    ``snr_db`` is validated but ignored and ``noise_var`` is reported as 0. Channel uses are
    still counted (what *would* be sent)."""

    kind = "none"

    def __call__(self, x: torch.Tensor, snr_db: SnrLike = math.inf, generator: torch.Generator | None = None,
                 pixels: int | Sequence[int] | None = None) -> ChannelOutput:
        return super().__call__(x, snr_db, generator, pixels)

    def apply(self, s, no, generator):
        no.zero_()
        return s, s, None


class AWGNChannel(Channel):
    """``y = s + w``, ``w ~ CN(0, N0)``; no equalisation needed."""

    kind = "awgn"

    def apply(self, s, no, generator):
        y = awgn(s, no, generator)
        return y, y, None


class RayleighChannel(Channel):
    """Rayleigh flat fading ``y = h s + w``, ``h ~ CN(0, 1)`` per sample or per block, perfect
    CSI at the receiver and one-tap equalisation.

    Args:
        block_size: None (one gain per image) or symbols per coherence block.
        equalizer: ``"mmse"`` (default), ``"zf"`` or ``"none"`` (see :func:`equalize`).
    """

    kind = "rayleigh"

    def __init__(self, block_size: int | None = None, equalizer: str = "mmse") -> None:
        _check_block_size(block_size)
        if equalizer not in EQUALIZERS:
            raise ValueError(f"unknown equalizer {equalizer!r}; expected one of {EQUALIZERS}")
        self.block_size = block_size
        self.equalizer = equalizer

    def gains(self, batch: int, n: int, generator: torch.Generator | None, dtype: torch.dtype,
              device: torch.device) -> torch.Tensor:
        return rayleigh_fading(batch, n, self.block_size, generator, dtype, device)

    def apply(self, s, no, generator):
        h = self.gains(s.shape[0], s.shape[1], generator, s.dtype, s.device)
        y = awgn(h * s, no, generator)
        return y, equalize(y, h, no, self.equalizer), h

    def __repr__(self) -> str:
        return f"{type(self).__name__}(block_size={self.block_size}, equalizer={self.equalizer!r})"


class RicianChannel(RayleighChannel):
    """Rician flat fading (see :func:`rician_fading`), perfect CSI, one-tap equalisation.

    Args:
        k_factor: K >= 0 (linear): power ratio of the line-of-sight to the scattered part.
        block_size: None (one gain per image) or symbols per coherence block.
        equalizer: ``"mmse"`` (default), ``"zf"`` or ``"none"``.
        los_phase: fixed LOS phase in radians (default 0) or None for a random phase per sample.
    """

    kind = "rician"

    def __init__(self, k_factor: float, block_size: int | None = None, equalizer: str = "mmse",
                 los_phase: float | None = 0.0) -> None:
        super().__init__(block_size, equalizer)
        k = float(k_factor)
        if math.isnan(k) or k < 0:
            raise ValueError(f"k_factor must be >= 0 (linear), got {k_factor!r}")
        self.k_factor = k
        self.los_phase = los_phase

    def gains(self, batch, n, generator, dtype, device):
        return rician_fading(batch, n, self.k_factor, self.block_size, self.los_phase, generator, dtype, device)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(k_factor={self.k_factor}, block_size={self.block_size}, "
                f"equalizer={self.equalizer!r}, los_phase={self.los_phase})")


def make_channel(kind: str, **kwargs) -> Channel:
    """Build a channel by name: ``"awgn"``, ``"rayleigh"``, ``"rician"`` or ``"none"``; keyword
    arguments go to the class (e.g. ``make_channel("rician", k_factor=3, block_size=64)``)."""
    classes = {"awgn": AWGNChannel, "rayleigh": RayleighChannel, "rician": RicianChannel,
               "none": IdentityChannel}
    key = kind.lower() if isinstance(kind, str) else kind
    if key not in classes:
        raise ValueError(f"unknown channel kind {kind!r}; expected one of {CHANNEL_KINDS}")
    return classes[key](**kwargs)
