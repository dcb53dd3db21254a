"""Digital modulation: Gray-mapped constellations, hard and soft demapping, BER theory, capacity.

Conventions
-----------

- **Constellations** (:class:`Constellation`): BPSK, QPSK, 16-QAM, 64-QAM (any square
  ``2^(2m)``-QAM via :func:`qam_constellation`), Gray-mapped with the bit labelling of
  3GPP TS 38.211 section 5.1 (the one of 5G NR and of Sionna's ``Mapper("qam", k)``), normalised
  to unit average energy ``E|c|^2 = 1``. Point ``i`` carries the bits of ``i`` written MSB first
  (``bit_labels[i]``); a symbol's even-indexed bits ``b0, b2, ...`` select the in-phase level and
  its odd-indexed bits ``b1, b3, ...`` the quadrature level, each through the recursive PAM of
  38.211: ``pam(b) = (1 - 2 b[0]) (2^(len(b) - 1) - pam(b[1:]))``, ``pam((b,)) = 1 - 2 b``. So
  16-QAM is ``((1 - 2 b0)(2 - (1 - 2 b2)) + j (1 - 2 b1)(2 - (1 - 2 b3))) / sqrt(10)`` exactly as
  in the standard, QPSK maps (b0, b1) -> ((1 - 2 b0) + j (1 - 2 b1)) / sqrt(2), and BPSK maps
  bit 0 -> +1, bit 1 -> -1 (Sionna's ``"pam"`` with one bit; 38.211's BPSK is the same labelling
  rotated by 45 degrees, ``(1 + j) / sqrt 2`` for bit 0, which changes no error rate). Bit streams
  and LLRs are therefore interchangeable with a 5G NR mapper/demapper (tested symbol for symbol
  and LLR for LLR against Sionna).
- **Bits** are (B, n) tensors with values 0/1 (any integer, bool or float dtype). When n is not a
  multiple of ``k`` bits per symbol, each row is padded with zeros to ``ceil(n / k) * k`` bits
  before mapping; pass ``num_bits=n`` to the demappers to drop the padding again (otherwise they
  return every demapped bit, padding included).
- **SNR** is Es/N0 per complex symbol (Es = 1), exactly as in :mod:`.analog`:
  ``N0 = 10 ** (-snr_db / 10)``; Eb/N0 = Es/N0 / k. The link adds noise with
  :func:`.analog.awgn` and draws fading with :func:`.analog.rayleigh_fading`. The symbols are not
  renormalised per sample: the constellation's average energy is 1.
- **LLRs** (:func:`demap_llr`): ``LLR = log P(b = 0 | y) / P(b = 1 | y)`` with equiprobable bits,
  computed exactly with a log-sum-exp over the constellation: positive means "0 is more likely",
  so ``hard bit = (LLR < 0)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
import torch

from .analog import (SnrLike, _noise_var_tensor, _real_of, awgn, equalize, per_pixel,
                     rayleigh_fading, snr_db_to_noise_var)

__all__ = [
    "Constellation",
    "CONSTELLATIONS",
    "qam_constellation",
    "map_bits",
    "demap_hard",
    "demap_llr",
    "q_function",
    "theoretical_ber",
    "awgn_capacity",
    "rayleigh_ergodic_capacity",
    "exp1",
    "DigitalLink",
    "DigitalOutput",
]

CONSTELLATIONS = {"bpsk": 1, "qpsk": 2, "16qam": 4, "64qam": 6}
_ALIASES = {"qam4": "qpsk", "4qam": "qpsk", "qam16": "16qam", "qam64": "64qam"}

ArrayLike = Union[float, Sequence[float], np.ndarray]


def _pam_level(label_bits: Sequence[int]) -> int:
    """The 38.211 PAM level (odd integer in ``[-(2^n - 1), 2^n - 1]``) of the bits ``b0 b1 ...``:
    ``(1 - 2 b0) (2^(n-1) - level(b1 ...))``, ``level((b,)) = 1 - 2 b`` (TS 38.211 section 5.1)."""
    sign = 1 - 2 * int(label_bits[0])
    if len(label_bits) == 1:
        return sign
    return sign * ((1 << (len(label_bits) - 1)) - _pam_level(label_bits[1:]))


def _gray_pam(bits: int) -> np.ndarray:
    """Amplitudes of the Gray-coded 2^bits-PAM of 38.211, indexed by label (its bits MSB first):
    ``amp[label]``, unit spaced (+-1, +-3, ...). Adjacent levels differ in exactly one bit."""
    return np.array([_pam_level([(label >> (bits - 1 - j)) & 1 for j in range(bits)])
                     for label in range(1 << bits)], dtype=float)


class Constellation:
    """A Gray-mapped constellation with unit average energy and the bit labelling of 3GPP
    TS 38.211 section 5.1 (see the module docstring).

    Args:
        kind: ``"bpsk"``, ``"qpsk"``, ``"16qam"``, ``"64qam"`` (also ``"16-QAM"``, ``"qam16"``...)
            or the number of bits per symbol (1, or an even number for square QAM).

    Attributes:
        kind: canonical name (``"256qam"`` etc. for larger square QAM).
        bits_per_symbol: k.
        points: complex64 (M,) with M = 2^k; ``points[i]`` carries the bits of i, MSB first.
        bit_labels: int64 (M, k) of 0/1.
    """

    def __init__(self, kind: str | int) -> None:
        if isinstance(kind, str):
            name = kind.lower().replace("-", "").replace("_", "")
            name = _ALIASES.get(name, name)
            if name not in CONSTELLATIONS:
                raise ValueError(f"unknown constellation {kind!r}; expected one of {tuple(CONSTELLATIONS)} "
                                 "or bits per symbol (1 or even)")
            k = CONSTELLATIONS[name]
        elif isinstance(kind, int) and not isinstance(kind, bool):
            k = kind
            if k != 1 and (k < 2 or k % 2):
                raise ValueError(f"bits per symbol must be 1 (BPSK) or even (square QAM), got {k}")
            name = {1: "bpsk", 2: "qpsk"}.get(k, f"{1 << k}qam")
        else:
            raise ValueError(f"constellation kind must be a name or bits per symbol, got {kind!r}")
        self.kind = name
        self.bits_per_symbol = k
        if k == 1:
            pts = _gray_pam(1).astype(np.complex128)
        else:
            pam = _gray_pam(k // 2)
            labels = (np.arange(1 << k)[:, None] >> np.arange(k - 1, -1, -1)) & 1  # (M, k), MSB first
            weights = 1 << np.arange(k // 2 - 1, -1, -1)
            # 38.211: even-indexed bits -> in-phase label, odd-indexed bits -> quadrature label
            pts = pam[labels[:, 0::2] @ weights] + 1j * pam[labels[:, 1::2] @ weights]
        pts = pts / np.sqrt(np.mean(np.abs(pts) ** 2))
        self._points128 = torch.from_numpy(pts)
        self.points = self._points128.to(torch.complex64)
        shifts = torch.arange(k - 1, -1, -1)
        self.bit_labels = (torch.arange(1 << k)[:, None] >> shifts) & 1

    @property
    def size(self) -> int:
        return 1 << self.bits_per_symbol

    def points_as(self, dtype: torch.dtype, device: torch.device | str | None = None) -> torch.Tensor:
        """The points in ``dtype`` (complex64 or complex128), rounded once from float64."""
        return self._points128.to(device=device, dtype=dtype)

    def __repr__(self) -> str:
        return f"Constellation({self.kind!r})"


def qam_constellation(bits_per_symbol: int) -> Constellation:
    """``Constellation(bits_per_symbol)``: 1 -> BPSK, 2 -> QPSK, 4 -> 16-QAM, 6 -> 64-QAM, ..."""
    return Constellation(int(bits_per_symbol))


def _as_constellation(kind: str | int | Constellation) -> Constellation:
    return kind if isinstance(kind, Constellation) else Constellation(kind)


def _check_bits(bits: torch.Tensor) -> torch.Tensor:
    if bits.ndim != 2:
        raise ValueError(f"bits must be (B, n), got shape {tuple(bits.shape)}")
    if bits.is_complex():
        raise ValueError("bits must be real 0/1 values")
    b = bits.to(torch.int64)
    if not ((b == 0) | (b == 1)).all() or (bits.is_floating_point() and not torch.equal(b.to(bits.dtype), bits)):
        raise ValueError("bits must contain only 0 and 1")
    return b


def map_bits(bits: torch.Tensor, kind: str | int | Constellation) -> torch.Tensor:
    """Map bits to constellation symbols.

    Args:
        bits: (B, n) of 0/1.
        kind: constellation name, bits per symbol, or a :class:`Constellation`.

    Returns:
        Complex64 (B, ceil(n / k)); rows are zero-padded to a multiple of k bits.
    """
    c = _as_constellation(kind)
    b = _check_bits(bits)
    k = c.bits_per_symbol
    pad = (-b.shape[1]) % k
    if pad:
        b = torch.cat([b, b.new_zeros(b.shape[0], pad)], dim=1)
    weights = 1 << torch.arange(k - 1, -1, -1, device=b.device)
    index = (b.reshape(b.shape[0], -1, k) * weights).sum(-1)
    return c.points.to(b.device)[index]


def _labels_to_bits(index: torch.Tensor, c: Constellation, num_bits: int | None) -> torch.Tensor:
    bits = c.bit_labels.to(index.device)[index].reshape(index.shape[0], -1)
    return _trim(bits, num_bits)


def _trim(bits: torch.Tensor, num_bits: int | None) -> torch.Tensor:
    if num_bits is None:
        return bits
    if not 0 <= num_bits <= bits.shape[1]:
        raise ValueError(f"num_bits={num_bits} does not fit {bits.shape[1]} demapped bits")
    return bits[:, :num_bits]


def demap_hard(symbols: torch.Tensor, kind: str | int | Constellation,
               num_bits: int | None = None) -> torch.Tensor:
    """Minimum-distance (ML for AWGN) hard decisions.

    Args:
        symbols: complex (B, n), already equalised if the channel faded.
        kind: constellation.
        num_bits: keep the first ``num_bits`` bits per row (drops the mapping padding).

    Returns:
        int64 (B, n * k) or (B, num_bits) of 0/1.
    """
    c = _as_constellation(kind)
    if not symbols.is_complex() or symbols.ndim != 2:
        raise ValueError(f"symbols must be a complex (B, n) tensor, got {symbols.dtype} {tuple(symbols.shape)}")
    pts = c.points_as(symbols.dtype, symbols.device)
    dist = (symbols[..., None] - pts).abs()
    return _labels_to_bits(dist.argmin(dim=-1), c, num_bits)


def demap_llr(symbols: torch.Tensor, no: float | torch.Tensor, kind: str | int | Constellation,
              h: torch.Tensor | None = None, num_bits: int | None = None) -> torch.Tensor:
    """Exact bit LLRs ``log P(b=0|y) / P(b=1|y)`` for ``y = h c + w``, ``w ~ CN(0, no)``.

    ``LLR_i = logsumexp_{c: b_i(c)=0} (-|y - h c|^2 / no) - logsumexp_{c: b_i(c)=1} (...)``.
    Positive means bit 0 is more likely. For BPSK with ``h = 1`` this is ``4 Re(y) / no``.

    Args:
        symbols: complex (B, n) received (not equalised when ``h`` is given).
        no: noise variance per complex symbol, > 0: number, 0-d or (B,) tensor.
        kind: constellation.
        h: complex gains broadcastable to (B, n), or None (h = 1).
        num_bits: keep the first ``num_bits`` LLRs per row.

    Returns:
        Real (B, n * k) or (B, num_bits).
    """
    c = _as_constellation(kind)
    if not symbols.is_complex() or symbols.ndim != 2:
        raise ValueError(f"symbols must be a complex (B, n) tensor, got {symbols.dtype} {tuple(symbols.shape)}")
    real = _real_of(symbols.dtype)
    n0 = _noise_var_tensor(no, symbols.shape[0], symbols.device, real)
    if (n0 <= 0).any():
        raise ValueError("LLRs need a noise variance > 0 (at infinite SNR use demap_hard)")
    pts = c.points_as(symbols.dtype, symbols.device)
    hc = pts if h is None else h[..., None] * pts
    metric = -(symbols[..., None] - hc).abs().pow(2) / n0[..., None]  # (B, n, M)
    llr = []
    for i in range(c.bits_per_symbol):  # one bit position at a time keeps memory at (B, n, M)
        zeros = (c.bit_labels[:, i] == 0).nonzero().squeeze(1).to(symbols.device)
        ones = (c.bit_labels[:, i] == 1).nonzero().squeeze(1).to(symbols.device)
        llr.append(torch.logsumexp(metric[..., zeros], dim=-1) - torch.logsumexp(metric[..., ones], dim=-1))
    return _trim(torch.stack(llr, dim=-1).reshape(symbols.shape[0], -1), num_bits)


# ------------------------------------------------------------------------------------------------
# Theory
# ------------------------------------------------------------------------------------------------

def _scalar_or_array(values: np.ndarray, like: ArrayLike) -> float | np.ndarray:
    return float(values) if np.ndim(like) == 0 else values


_erfc = np.vectorize(math.erfc, otypes=[float])


def q_function(x: ArrayLike) -> float | np.ndarray:
    """Gaussian tail ``Q(x) = P(N(0,1) > x) = erfc(x / sqrt 2) / 2``."""
    return _scalar_or_array(0.5 * _erfc(np.asarray(x, dtype=float) / math.sqrt(2.0)), x)


def _pam_exact_ber(bits: int, sigma: np.ndarray) -> np.ndarray:
    """Exact bit error rate of the unit-spaced Gray PAM of :func:`_gray_pam` (levels +-1, +-3, ...)
    under real Gaussian noise of std ``sigma``, with minimum-distance decisions: for each sent
    level and each other level, the probability of landing in that level's decision interval
    times the number of differing bits."""
    amp = _gray_pam(bits)
    order = np.argsort(amp)  # labels from the lowest level up
    lv = amp[order]
    edges = np.concatenate([[-np.inf], (lv[:-1] + lv[1:]) / 2, [np.inf]])
    sig = np.asarray(sigma, dtype=float)[..., None]
    total = np.zeros(np.shape(sigma))
    for i, a in enumerate(lv):
        hi = q_function(np.broadcast_to((edges[:-1] - a) / sig, sig.shape[:-1] + (len(lv),)))
        lo = q_function(np.broadcast_to((edges[1:] - a) / sig, sig.shape[:-1] + (len(lv),)))
        p = np.asarray(hi) - np.asarray(lo)  # P(decide level j | sent i)
        diff = np.array([bin(int(order[i]) ^ int(order[j])).count("1") for j in range(len(lv))])
        total = total + (p * diff).sum(-1)
    return total / (len(lv) * bits)


def theoretical_ber(kind: str | int | Constellation, ebno_db: ArrayLike | None = None,
                    esno_db: ArrayLike | None = None, method: str = "approx",
                    channel: str = "awgn") -> float | np.ndarray:
    """Bit error rate of Gray-coded BPSK / QPSK / square M-QAM with coherent ML detection.

    Give exactly one of ``ebno_db`` (Eb/N0) or ``esno_db`` (Es/N0 = k Eb/N0), in dB.

    - BPSK, QPSK (AWGN): ``Q(sqrt(2 Eb/N0))`` (exact for both).
    - M-QAM, ``method="approx"``: the standard nearest-neighbour approximation
      ``(4 / k) (1 - 1/sqrt M) Q(sqrt(3 k Eb/N0 / (M - 1)))``, accurate at moderate/high SNR.
    - M-QAM, ``method="exact"``: the exact BER of this module's (38.211) Gray labelling with
      minimum-distance decisions (the I and Q PAMs are independent and carry half the bits each;
      each PAM's BER is summed from Gaussian tail probabilities of the decision intervals).
    - ``channel="rayleigh"`` (BPSK and QPSK only, perfect CSI, one gain per symbol):
      ``(1 - sqrt(g / (1 + g))) / 2`` with ``g = Eb/N0``.

    Returns:
        A float for a scalar input, else a numpy array.
    """
    c = _as_constellation(kind)
    if (ebno_db is None) == (esno_db is None):
        raise ValueError("give exactly one of ebno_db or esno_db")
    if method not in ("approx", "exact"):
        raise ValueError(f"unknown method {method!r}; expected 'approx' or 'exact'")
    if channel not in ("awgn", "rayleigh"):
        raise ValueError(f"unknown channel {channel!r}; expected 'awgn' or 'rayleigh'")
    like = ebno_db if ebno_db is not None else esno_db
    k = c.bits_per_symbol
    db = np.asarray(like, dtype=float)
    ebno = 10.0 ** (db / 10.0) if ebno_db is not None else 10.0 ** (db / 10.0) / k
    if channel == "rayleigh":
        if k > 2:
            raise ValueError("the Rayleigh closed form is implemented for BPSK and QPSK only")
        return _scalar_or_array(0.5 * (1.0 - np.sqrt(ebno / (1.0 + ebno))), like)
    if k <= 2:
        return _scalar_or_array(np.asarray(q_function(np.sqrt(2.0 * ebno))), like)
    m = 1 << k
    if method == "approx":
        ber = (4.0 / k) * (1.0 - 1.0 / math.sqrt(m)) * np.asarray(q_function(np.sqrt(3.0 * k * ebno / (m - 1))))
        return _scalar_or_array(ber, like)
    # Unit-spaced PAM levels +-1, +-3...: average QAM energy 2 (M - 1) / 3 = Es; N0/2 per dimension.
    es = 2.0 * (m - 1) / 3.0
    sigma = np.sqrt(es / (k * ebno) / 2.0)
    return _scalar_or_array(_pam_exact_ber(k // 2, sigma), like)


def awgn_capacity(snr_db: ArrayLike) -> float | np.ndarray:
    """Shannon capacity of the complex AWGN channel, ``log2(1 + SNR)`` bits per channel use."""
    snr = 10.0 ** (np.asarray(snr_db, dtype=float) / 10.0)
    return _scalar_or_array(np.log2(1.0 + snr), snr_db)


_EULER_GAMMA = 0.5772156649015329


def _scaled_exp1(x: float) -> float:
    """``e^x E1(x)`` for x > 0: power series for x <= 1, continued fraction (modified Lentz)
    ``1 / (x + 1 - 1 / (x + 3 - 4 / (x + 5 - ...)))`` above."""
    if x <= 0:
        raise ValueError("E1 needs x > 0")
    if x <= 1.0:
        total, term, k = 0.0, 1.0, 1
        while True:
            term *= -x / k
            add = -term / k
            total += add
            if abs(add) < 1e-17 * abs(total) + 1e-300:
                break
            k += 1
        return math.exp(x) * (-_EULER_GAMMA - math.log(x) + total)
    tiny = 1e-300
    b = x + 1.0
    c = 1.0 / tiny
    d = 1.0 / b
    f = d
    for i in range(1, 1000):
        a = -float(i * i)
        b += 2.0
        d = 1.0 / (a * d + b)
        c = b + a / c
        delta = c * d
        f *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return f


def exp1(x: ArrayLike) -> float | np.ndarray:
    """Exponential integral ``E1(x) = int_x^inf e^-t / t dt`` for x > 0 (no scipy needed)."""
    arr = np.asarray(x, dtype=float)
    out = np.vectorize(lambda v: _scaled_exp1(v) * math.exp(-v), otypes=[float])(arr)
    return _scalar_or_array(out, x)


def rayleigh_ergodic_capacity(snr_db: ArrayLike) -> float | np.ndarray:
    """Ergodic capacity of Rayleigh fading with receiver CSI, ``E[log2(1 + |h|^2 SNR)]`` with
    ``|h|^2 ~ Exp(1)``, in closed form ``log2(e) e^{1/SNR} E1(1/SNR)`` bits per channel use
    (``inf`` dB gives ``inf``)."""
    snr = 10.0 ** (np.asarray(snr_db, dtype=float) / 10.0)

    def one(s: float) -> float:
        if s == 0:
            return 0.0
        if math.isinf(s):
            return math.inf
        return math.log2(math.e) * _scaled_exp1(1.0 / s)

    return _scalar_or_array(np.vectorize(one, otypes=[float])(snr), snr_db)


# ------------------------------------------------------------------------------------------------
# Link
# ------------------------------------------------------------------------------------------------

@dataclass
class DigitalOutput:
    """Result of :class:`DigitalLink`.

    Attributes:
        bits: int64 (B, n) hard decisions (padding removed).
        errors: int64 (B,) bit errors per sample.
        ber: overall bit error rate (float).
        ber_per_sample: float (B,).
        symbols_tx, symbols_rx, symbols_eq: complex (B, S) sent, received, equalised.
        csi: complex (B, S) gains or None.
        noise_var: real (B,) N0 per complex symbol.
        llr: real (B, n) exact LLRs (:func:`demap_llr`, with CSI) when the link was called with
            ``soft=True``, else None; +-inf for noiseless samples.
        channel_uses: complex symbols per sample, ``ceil(n / k)``.
        channel_uses_per_pixel: ``channel_uses / pixels`` or None.
    """

    bits: torch.Tensor
    errors: torch.Tensor
    ber: float
    ber_per_sample: torch.Tensor
    symbols_tx: torch.Tensor
    symbols_rx: torch.Tensor
    symbols_eq: torch.Tensor
    csi: torch.Tensor | None
    noise_var: torch.Tensor
    llr: torch.Tensor | None
    channel_uses: int
    channel_uses_per_pixel: float | None


class DigitalLink:
    """Bits -> Gray mapping -> AWGN or Rayleigh channel (Es/N0 = ``snr_db``) -> zero-forcing
    equalisation with perfect CSI -> minimum-distance hard decisions (uncoded).

    Args:
        kind: constellation name or bits per symbol.
        channel: ``"awgn"`` or ``"rayleigh"``.
        block_size: Rayleigh coherence block in symbols (None: one gain per sample; 1: i.i.d.
            per symbol, the fast-fading case of :func:`theoretical_ber` ``channel="rayleigh"``).

    Call: ``link(bits (B, n), snr_db, generator=None, pixels=None, soft=False) -> DigitalOutput``.
    """

    def __init__(self, kind: str | int = "qpsk", channel: str = "awgn", block_size: int | None = None) -> None:
        if channel not in ("awgn", "rayleigh"):
            raise ValueError(f"unknown channel {channel!r}; expected 'awgn' or 'rayleigh'")
        self.constellation = _as_constellation(kind)
        self.channel = channel
        self.block_size = block_size

    def __call__(self, bits: torch.Tensor, snr_db: SnrLike, generator: torch.Generator | None = None,
                 pixels: int | Sequence[int] | None = None, soft: bool = False) -> DigitalOutput:
        b = _check_bits(bits)
        c = self.constellation
        s = map_bits(b, c)
        no = snr_db_to_noise_var(snr_db, s.shape[0], device=s.device, dtype=_real_of(s.dtype))
        h = None
        if self.channel == "rayleigh":
            h = rayleigh_fading(s.shape[0], s.shape[1], self.block_size, generator, s.dtype, s.device)
            y = awgn(h * s, no, generator)
        else:
            y = awgn(s, no, generator)
        eq = equalize(y, h, no, "zf")
        n = b.shape[1]
        out_bits = demap_hard(eq, c, num_bits=n)
        llr = None
        if soft:
            # Noiseless samples (N0 = 0) get infinite LLRs signed by the (then error-free) decisions.
            noiseless = (no == 0)[:, None]
            llr = demap_llr(y, torch.where(no > 0, no, torch.ones_like(no)), c, h=h, num_bits=n)
            llr = torch.where(noiseless, math.inf * (1 - 2 * out_bits).to(llr.dtype), llr)
        errors = (out_bits != b).sum(dim=1)
        uses = s.shape[1]
        return DigitalOutput(bits=out_bits, errors=errors, ber=errors.sum().item() / max(1, b.numel()),
                             ber_per_sample=errors.to(torch.float64) / max(1, n), symbols_tx=s,
                             symbols_rx=y, symbols_eq=eq, csi=h, noise_var=no, llr=llr,
                             channel_uses=uses, channel_uses_per_pixel=per_pixel(uses, pixels))

    def __repr__(self) -> str:
        return f"DigitalLink({self.constellation.kind!r}, channel={self.channel!r}, block_size={self.block_size})"
