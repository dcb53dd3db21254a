"""A coded digital link for variable-length bit payloads (one payload per image), and its ideal
(capacity-achieving) counterpart.

Coded link (:class:`LDPCLink`), per payload::

    bits (L,) --split into k-bit blocks, last one zero-padded--> (ceil(L/k), k)
      --5G NR LDPC encoder (Sionna, rate k/n)--> (ceil(L/k), n) codeword bits
      --Gray mapping (map_bits; TS 38.211 labelling, as a 5G NR mapper)--> ceil(L/k) * n / m symbols
                                                                    (m = bits per symbol)
      --channel: y = h s + w, w ~ CN(0, N0), N0 = 10^(-SNR/10)--> (h = 1 on AWGN; one CN(0, 1)
                                                                    gain per payload on Rayleigh)
      --exact LLRs with the known h (demap_llr)--> belief-propagation decoding (all blocks of all
                                                    payloads in one decoder call)
      --> decoded bits, block errors, success

Conventions and assumptions:

- **Modulation and coding** (:class:`MCS`): a constellation of :mod:`.digital`, a code rate and an
  information block size ``k``; the codeword length ``n = k / rate`` is a whole number of symbols.
  Presets in :data:`MCS_PRESETS` (``"qpsk-1/2"``, ``"16qam-1/2"``, ``"64qam-2/3"``, ...).
- **SNR** is Es/N0 per complex symbol, as everywhere in :mod:`gensemcom.channels`; ``inf`` is
  noiseless (the LLRs are then computed with a tiny noise variance, so they are large and finite).
- **Error detection**: a block counts as wrong when any of its decoded information bits differs
  from what was sent. A real receiver would learn this from a CRC per block; the CRC is assumed to
  detect every error and its bits are not counted. A payload succeeds when all its blocks do.
- **Side information**: the receiver knows the payload length (hence the number of blocks) and,
  on Rayleigh, the gain ``h`` (perfect CSI); neither is counted as channel uses.
- **Randomness**: only the ``generator`` passed in: first the Rayleigh gains of every payload (in
  order), then the noise of each payload in order.
- **LLR signs**: our :func:`.digital.demap_llr` gives ``log P(b=0)/P(b=1)``; Sionna's LDPC
  decoder takes ``log P(b=1)/P(b=0)``, so the LLRs are negated on the way in.

Ideal link (:func:`capacity_bits`): ``floor(uses * log2(1 + |h|^2 SNR))`` bits arrive without
error. On Rayleigh fading the ideal transmitter knows the payload's gain (CSI at the transmitter)
and codes at that instantaneous capacity, so the ideal link never fails: it only carries fewer bits
in a deep fade.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence, Union

import numpy as np
import torch

from .analog import awgn, check_snr_db, rayleigh_fading, snr_db_to_noise_var
from .digital import CONSTELLATIONS, Constellation, demap_llr, map_bits

__all__ = ["MCS", "MCS_PRESETS", "get_mcs", "LinkResult", "LDPCLink", "capacity_bits",
           "capacity_uses", "CODED_CHANNELS"]

CODED_CHANNELS = ("awgn", "rayleigh")

# Noise variance used for the LLRs of a noiseless channel: the LLRs become large (and are clipped
# by the decoder), their signs are those of the error-free hard decisions.
_NOISELESS_NO = 1e-6

# block sizes of the presets whose n = k / rate would not be a whole number of symbols with k = 1024
_PRESET_K = {"qpsk-3/4": 1026, "64qam-1/2": 1026, "16qam-3/4": 1026, "64qam-3/4": 1026, "64qam-5/6": 1020}

Payload = Union[bytes, bytearray, memoryview, np.ndarray, torch.Tensor]


# ------------------------------------------------------------------------------------------------
# Modulation and coding schemes
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MCS:
    """A modulation and coding scheme.

    Attributes:
        constellation: a name of :data:`.digital.CONSTELLATIONS` (``"qpsk"``, ``"16qam"``...).
        rate: code rate k / n, in [1/5, 948/1024] (the 5G NR LDPC range without repetition).
        k: information bits per LDPC block, 12 <= k <= 8448.

    ``n = k / rate`` must be a whole number of symbols (a multiple of the bits per symbol); pick
    ``k`` accordingly (e.g. k = 1026 for rate 3/4 with 64-QAM).
    """

    constellation: str
    rate: float
    k: int = 1024

    def __post_init__(self) -> None:
        name = self.constellation.lower() if isinstance(self.constellation, str) else self.constellation
        if name not in CONSTELLATIONS:
            raise ValueError(f"unknown constellation {self.constellation!r} in MCS; "
                             f"expected one of {tuple(CONSTELLATIONS)}")
        object.__setattr__(self, "constellation", name)
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or not 12 <= self.k <= 8448:
            raise ValueError(f"LDPC block size k must be an int in [12, 8448], got {self.k!r}")
        rate = float(self.rate)
        if not (math.isfinite(rate) and 0.2 - 1e-12 <= rate <= 948 / 1024 + 1e-12):
            raise ValueError(f"code rate must be in [1/5, 948/1024], got {self.rate!r}")
        n = round(self.k / rate)
        if abs(self.k / n - rate) > 1e-9 * max(1.0, rate):
            raise ValueError(f"k / rate = {self.k / rate:.6g} is not a whole number of code bits; "
                             f"choose k so that k / rate is an integer")
        m = CONSTELLATIONS[name]
        if n % m:
            raise ValueError(f"codeword length n = {n} is not a multiple of {m} bits per {name} "
                             f"symbol; choose another k")

    @property
    def n(self) -> int:
        """Codeword length in bits."""
        return round(self.k / float(self.rate))

    @property
    def bits_per_symbol(self) -> int:
        return CONSTELLATIONS[self.constellation]

    @property
    def symbols_per_block(self) -> int:
        """Complex channel uses per LDPC codeword, ``n / bits_per_symbol``."""
        return self.n // self.bits_per_symbol

    @property
    def spectral_efficiency(self) -> float:
        """Information bits per complex channel use, ``bits_per_symbol * k / n``."""
        return self.bits_per_symbol * self.k / self.n

    @property
    def name(self) -> str:
        """E.g. ``"16qam-1/2"``; ``"@k"`` is appended when k differs from the preset's."""
        frac = Fraction(self.k, self.n)
        base = f"{self.constellation}-{frac.numerator}/{frac.denominator}"
        return base if self.k == _PRESET_K.get(base, 1024) else f"{base}@{self.k}"

    def shannon_threshold_db(self) -> float:
        """Lowest Es/N0 (dB) at which an AWGN channel carries this spectral efficiency:
        ``10 log10(2^SE - 1)``."""
        return 10.0 * math.log10(2.0 ** self.spectral_efficiency - 1.0)


#: named schemes; k is 1024 except where n = k / rate must be a multiple of the bits per symbol
MCS_PRESETS: dict[str, MCS] = {m.name: m for m in (
    MCS("bpsk", 1 / 2),
    MCS("qpsk", 1 / 3),
    MCS("qpsk", 1 / 2),
    MCS("qpsk", 2 / 3),
    MCS("qpsk", 3 / 4, k=1026),
    MCS("16qam", 1 / 2),
    MCS("16qam", 2 / 3),
    MCS("16qam", 3 / 4, k=1026),
    MCS("64qam", 1 / 2, k=1026),
    MCS("64qam", 2 / 3),
    MCS("64qam", 3 / 4, k=1026),
    MCS("64qam", 5 / 6, k=1020),
)}


def get_mcs(mcs: str | MCS) -> MCS:
    """An :class:`MCS` itself, or the preset of that name (e.g. ``"16qam-1/2"``)."""
    if isinstance(mcs, MCS):
        return mcs
    if isinstance(mcs, str) and mcs.lower() in MCS_PRESETS:
        return MCS_PRESETS[mcs.lower()]
    raise ValueError(f"unknown MCS {mcs!r}; expected an MCS or one of {tuple(MCS_PRESETS)}")


# ------------------------------------------------------------------------------------------------
# Ideal link
# ------------------------------------------------------------------------------------------------

def _capacity_per_use(snr_db: float, gain: complex | float | None) -> float:
    g2 = 1.0 if gain is None else abs(complex(gain)) ** 2
    snr_db = check_snr_db(snr_db)
    if g2 == 0.0:
        return 0.0
    if snr_db == math.inf:
        return math.inf
    try:
        return math.log2(1.0 + g2 * 10.0 ** (snr_db / 10.0))
    except OverflowError:  # a huge but finite SNR (e.g. 1e6 dB): the same in the log domain
        a = math.log2(g2) + snr_db / 10.0 * math.log2(10.0)
        return a + math.log2(1.0 + 2.0 ** -a)


def capacity_bits(channel_uses: int, snr_db: float, gain: complex | float | None = None) -> int | float:
    """Bits an ideal code carries without error: ``floor(uses * log2(1 + |h|^2 SNR))``.

    Args:
        channel_uses: complex channel uses, >= 0.
        snr_db: Es/N0 in dB (``inf`` allowed).
        gain: the channel gain h (None: AWGN, h = 1). On Rayleigh fading the transmitter is
            assumed to know h (CSIT) and code at this instantaneous capacity.

    Returns:
        An int, or ``math.inf`` when the SNR is infinite and ``channel_uses > 0``.
    """
    if isinstance(channel_uses, bool) or not isinstance(channel_uses, (int, np.integer)) or channel_uses < 0:
        raise ValueError(f"channel_uses must be an int >= 0, got {channel_uses!r}")
    c = _capacity_per_use(snr_db, gain)
    if channel_uses == 0:
        return 0
    return math.inf if math.isinf(c) else int(math.floor(channel_uses * c))


def capacity_uses(num_bits: int, snr_db: float, gain: complex | float | None = None) -> int | float:
    """Channel uses an ideal code needs for ``num_bits``: ``ceil(bits / log2(1 + |h|^2 SNR))``.

    Returns 0 for 0 bits or an infinite SNR, and ``math.inf`` when the capacity is 0 (h = 0).
    """
    if isinstance(num_bits, bool) or not isinstance(num_bits, (int, np.integer)) or num_bits < 0:
        raise ValueError(f"num_bits must be an int >= 0, got {num_bits!r}")
    c = _capacity_per_use(snr_db, gain)
    if num_bits == 0 or math.isinf(c):
        return 0
    if c == 0.0:
        return math.inf
    uses = math.ceil(num_bits / c)
    # guard against float rounding: the smallest count whose capacity_bits covers num_bits
    while uses > 1 and math.floor((uses - 1) * c) >= num_bits:
        uses -= 1
    while math.floor(uses * c) < num_bits:
        uses += 1
    return uses


# ------------------------------------------------------------------------------------------------
# LDPC link
# ------------------------------------------------------------------------------------------------

@dataclass
class LinkResult:
    """What one payload's transmission delivered.

    Attributes:
        bits: uint8 (L,) decoded payload bits (0/1), the padding removed.
        data: the decoded bytes when the payload was given as bytes, else None.
        num_blocks: LDPC blocks sent, ``ceil(L / k)``.
        block_errors: blocks whose decoded information bits differ from those sent.
        bit_errors: payload bits that differ from those sent.
        success: every block decoded correctly (what the assumed CRC would report).
        channel_uses: complex symbols sent, ``num_blocks * n / bits_per_symbol``.
        gain: the channel gain h (complex) on Rayleigh, None on AWGN.
    """

    bits: np.ndarray
    data: bytes | None
    num_blocks: int
    block_errors: int
    bit_errors: int
    success: bool
    channel_uses: int
    gain: complex | None = None


def _payload_bits(payload: Payload) -> tuple[np.ndarray, bool]:
    """-> (uint8 bits (L,), was bytes)."""
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return np.unpackbits(np.frombuffer(bytes(payload), dtype=np.uint8)), True
    if isinstance(payload, torch.Tensor):
        payload = payload.detach().cpu().numpy()
    if isinstance(payload, np.ndarray):
        if payload.ndim != 1:
            raise ValueError(f"a bit payload must be 1-D, got shape {payload.shape}")
        if payload.size and not np.isin(payload, (0, 1)).all():
            raise ValueError("a bit payload must contain only 0 and 1")
        return payload.astype(np.uint8), False
    raise ValueError(f"a payload must be bytes or a 1-D array of 0/1 bits, got {type(payload).__name__}")


_SIONNA_LDPC = None


def _sionna_ldpc():
    """Import Sionna's LDPC module once, keeping torch's global RNG states as they were: importing
    Sionna reseeds the default CPU (and CUDA) generators."""
    global _SIONNA_LDPC
    if _SIONNA_LDPC is None:
        cpu_state = torch.get_rng_state()
        cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        try:
            from sionna.phy.fec import ldpc
        except ImportError as e:
            raise ImportError("LDPCLink needs Sionna (PyTorch version): pip install sionna-no-rt") from e
        finally:
            torch.set_rng_state(cpu_state)
            if cuda_states is not None:
                torch.cuda.set_rng_state_all(cuda_states)
        _SIONNA_LDPC = ldpc
    return _SIONNA_LDPC


class LDPCLink:
    """5G NR LDPC + Gray-mapped QAM over AWGN or Rayleigh block fading (see the module docstring).

    Args:
        mcs: an :class:`MCS` or a preset name (``"16qam-1/2"``...).
        channel: ``"awgn"`` or ``"rayleigh"`` (one CN(0, 1) gain per payload, perfect receiver CSI).
        num_iter: belief-propagation iterations (flooding schedule, sum-product check nodes).
        device: torch device of the encoder and decoder (the channel runs on the generator's
            device, CPU when no generator is given).
        max_blocks_per_call: blocks decoded per decoder call (bounds memory).

    Call: ``link(payloads, snr_db, generator=None, gains=None) -> list[LinkResult]``.
    """

    def __init__(self, mcs: str | MCS = "16qam-1/2", channel: str = "awgn", num_iter: int = 20,
                 device: str | torch.device = "cpu", max_blocks_per_call: int = 1024) -> None:
        self.mcs = get_mcs(mcs)
        if channel not in CODED_CHANNELS:
            raise ValueError(f"unknown channel {channel!r}; expected one of {CODED_CHANNELS}")
        if isinstance(num_iter, bool) or not isinstance(num_iter, int) or num_iter < 1:
            raise ValueError(f"num_iter must be an int >= 1, got {num_iter!r}")
        if isinstance(max_blocks_per_call, bool) or not isinstance(max_blocks_per_call, int) or max_blocks_per_call < 1:
            raise ValueError(f"max_blocks_per_call must be an int >= 1, got {max_blocks_per_call!r}")
        self.channel = channel
        self.num_iter = num_iter
        self.device = torch.device(device)
        self.max_blocks_per_call = max_blocks_per_call
        self.constellation = Constellation(self.mcs.constellation)
        self._encoder = None
        self._decoder = None

    # -- closed forms ----------------------------------------------------------------------------

    @property
    def k(self) -> int:
        return self.mcs.k

    @property
    def n(self) -> int:
        return self.mcs.n

    def num_blocks(self, num_bits: int) -> int:
        """LDPC blocks for a payload of ``num_bits`` bits, ``ceil(num_bits / k)``."""
        return -(-int(num_bits) // self.k)

    def channel_uses(self, num_bits: int) -> int:
        """Complex symbols sent for ``num_bits``: ``ceil(num_bits / k) * n / bits_per_symbol``."""
        return self.num_blocks(num_bits) * self.mcs.symbols_per_block

    def max_bits(self, channel_uses: int) -> int:
        """Largest payload that fits in ``channel_uses`` symbols: whole codewords only,
        ``floor(uses / (n / bits_per_symbol)) * k``."""
        if channel_uses < 0:
            raise ValueError(f"channel_uses must be >= 0, got {channel_uses!r}")
        return (int(channel_uses) // self.mcs.symbols_per_block) * self.k

    # -- codec -----------------------------------------------------------------------------------

    def _codec(self):
        if self._encoder is None:
            ldpc = _sionna_ldpc()
            dev = str(self.device)
            self._encoder = ldpc.LDPC5GEncoder(self.k, self.n, device=dev)
            self._decoder = ldpc.LDPC5GDecoder(self._encoder, num_iter=self.num_iter, hard_out=True,
                                               return_infobits=True, device=dev)
        return self._encoder, self._decoder

    def _draw_gains(self, batch: int, generator: torch.Generator | None,
                    gains: Sequence[complex] | torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
        if self.channel == "awgn":
            if gains is not None:
                raise ValueError("gains are only meaningful on the 'rayleigh' channel")
            return None
        if gains is None:
            return rayleigh_fading(batch, 1, generator=generator, dtype=torch.complex64, device=device)[:, 0]
        g = torch.as_tensor(gains).to(device=device, dtype=torch.complex64).reshape(-1)
        if g.shape[0] != batch:
            raise ValueError(f"{g.shape[0]} gains for {batch} payloads")
        return g

    # -- link ------------------------------------------------------------------------------------

    def __call__(self, payloads: Sequence[Payload], snr_db: float, generator: torch.Generator | None = None,
                 gains: Sequence[complex] | torch.Tensor | None = None) -> list[LinkResult]:
        """Send each payload over its own channel realisation.

        Args:
            payloads: B payloads, each bytes or a 1-D array / tensor of 0/1 bits (any lengths,
                0 included: nothing is sent and it succeeds).
            snr_db: Es/N0 in dB, one real number for all payloads (numpy scalars included; ``inf``:
                noiseless; NaN and ``-inf`` are errors).
            generator: source of the gains and the noise.
            gains: on Rayleigh, B complex gains to use instead of drawing them (e.g. drawn earlier
                by a transmitter that needed them); must be None on AWGN.

        Returns:
            B :class:`LinkResult`.
        """
        if isinstance(payloads, (bytes, bytearray, np.ndarray, torch.Tensor)):
            raise ValueError("payloads must be a sequence of payloads (one per image), e.g. a list")
        parsed = [_payload_bits(p) for p in payloads]
        batch = len(parsed)
        no = float(snr_db_to_noise_var(check_snr_db(snr_db), 1, dtype=torch.float64)[0])
        # the channel runs where the generator lives (CPU by default); only decoding on self.device
        chan_dev = generator.device if generator is not None else torch.device("cpu")
        h = self._draw_gains(batch, generator, gains, chan_dev)
        if batch == 0:
            return []
        k, n = self.k, self.n
        blocks = [self.num_blocks(len(b)) for b, _ in parsed]
        total = sum(blocks)
        u = np.zeros((total, k), dtype=np.float32)
        row = 0
        for (bits, _), nb in zip(parsed, blocks):
            padded = np.zeros(nb * k, dtype=np.float32)
            padded[:len(bits)] = bits
            u[row:row + nb] = padded.reshape(nb, k)
            row += nb
        u_hat = np.zeros_like(u)
        if total:
            encoder, decoder = self._codec()
            u_t = torch.from_numpy(u).to(self.device)
            with torch.no_grad():
                cw = encoder(u_t).to(chan_dev)
            llr = torch.empty(total, n, dtype=torch.float32, device=chan_dev)
            no_llr = no if no > 0 else _NOISELESS_NO
            row = 0
            for i, nb in enumerate(blocks):
                if nb == 0:
                    continue
                s = map_bits(cw[row:row + nb].reshape(1, -1), self.constellation)
                hi = None if h is None else h[i].reshape(1, 1)
                y = awgn(s if hi is None else hi * s, no, generator)
                llr[row:row + nb] = demap_llr(y, no_llr, self.constellation, h=hi).reshape(nb, n)
                row += nb
            out = []
            with torch.no_grad():
                for start in range(0, total, self.max_blocks_per_call):
                    chunk = llr[start:start + self.max_blocks_per_call].to(self.device)
                    out.append(decoder(-chunk))  # Sionna's decoder takes log P(1)/P(0)
            u_hat = torch.cat(out).round().to(torch.uint8).cpu().numpy()
        results = []
        row = 0
        for i, ((bits, was_bytes), nb) in enumerate(zip(parsed, blocks)):
            dec_blocks = u_hat[row:row + nb]
            block_err = int((dec_blocks != u[row:row + nb]).any(axis=1).sum()) if nb else 0
            dec_bits = dec_blocks.reshape(-1)[:len(bits)].astype(np.uint8)
            bit_err = int((dec_bits != bits).sum())
            results.append(LinkResult(
                bits=dec_bits,
                data=np.packbits(dec_bits).tobytes() if was_bytes else None,
                num_blocks=nb, block_errors=block_err, bit_errors=bit_err, success=block_err == 0,
                channel_uses=nb * self.mcs.symbols_per_block,
                gain=None if h is None else complex(h[i].item())))
            row += nb
        return results

    def __repr__(self) -> str:
        return f"LDPCLink({self.mcs.name!r}, channel={self.channel!r}, num_iter={self.num_iter})"
