"""What every system shares between its transmitter and its receiver, written once.

- :func:`check_snr`: an SNR argument (any real number, numpy scalars included) as a float, or a
  ValueError naming it (NaN, ``-inf``, not a number); it is
  :func:`gensemcom.channels.check_snr_db`, the one check every channel uses.
- :func:`draw_gains`: the per-image block-fading gain of the digital links, one CN(0, 1) draw per
  image on Rayleigh (perfect CSI at the receiver), None on AWGN; drawn from the run's generator
  *before* anything else, so every link sees the same gains for the same seed.
- :class:`PayloadLink`: bytes over the digital link, the real 5G LDPC code
  (:class:`gensemcom.channels.coded.LDPCLink`) or the ideal capacity link, with its budget in
  bits and its cost in channel uses.

Conventions: SNR in dB is Es/N0 per complex channel use (``inf`` = noiseless).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..channels.analog import check_snr_db as check_snr
from ..channels.analog import rayleigh_fading
from ..channels.coded import LDPCLink, capacity_bits, capacity_uses, get_mcs

__all__ = ["LINKS", "check_snr", "draw_gains", "gain_of", "gain_powers", "uses_allowed", "Delivery", "PayloadLink"]

LINKS = ("ldpc", "capacity")


def draw_gains(channel: str, batch: int, generator: torch.Generator | None) -> torch.Tensor | None:
    """One CN(0, 1) gain per image (B,) complex64 on ``"rayleigh"``, None on ``"awgn"``."""
    if channel == "rayleigh":
        dev = generator.device if generator is not None else torch.device("cpu")
        return rayleigh_fading(batch, 1, generator=generator, dtype=torch.complex64, device=dev)[:, 0].cpu()
    return None


def gain_of(gains: torch.Tensor | None, i: int) -> complex | None:
    """Image ``i``'s gain as a Python complex (None on AWGN)."""
    return None if gains is None else complex(gains[i].item())


def gain_powers(gains: torch.Tensor | None) -> list[float] | None:
    """|h|^2 per image, for the results' ``info`` (None on AWGN)."""
    return None if gains is None else [float(g) for g in gains.abs().pow(2)]


def uses_allowed(bandwidth: float, pixels: int) -> int:
    """``floor(bandwidth * pixels)`` complex channel uses (the epsilon keeps 0.29 * 100 at 29)."""
    return int(math.floor(bandwidth * pixels + 1e-9))


@dataclass
class Delivery:
    """One payload after the link.

    Attributes:
        data: the bytes as received, or None (not sent, or a block error).
        channel_uses: complex channel uses spent on it (0 when not sent).
        block_errors: LDPC codewords decoded wrongly (0 on the capacity link).
        sent: whether it was put on the channel at all.
    """

    data: bytes | None
    channel_uses: int = 0
    block_errors: int = 0
    sent: bool = False


class PayloadLink:
    """Bytes over a digital link.

    Args:
        link: ``"ldpc"`` (5G NR LDPC + Gray QAM, exact LLRs, perfect receiver CSI; success means
            every block decoded correctly, a CRC assumed to detect errors, its bits not counted)
            or ``"capacity"`` (error-free at ``log2(1 + |h|^2 SNR)`` bits per use; on Rayleigh the
            transmitter knows the gain and codes at that instantaneous capacity).
        mcs: the LDPC scheme (name or :class:`~gensemcom.channels.coded.MCS`); unused by capacity.
        num_iter, device: of the LDPC decoder.

    The payload length is side information.
    """

    def __init__(self, link: str = "ldpc", mcs: Any = "16qam-1/2", num_iter: int = 20,
                 device: str | torch.device = "cpu") -> None:
        if link not in LINKS:
            raise ValueError(f"unknown link {link!r}; expected one of {LINKS}")
        self.link = link
        self.mcs = get_mcs(mcs)
        self.num_iter = num_iter
        self.device = device
        self._ldpc: dict[str, LDPCLink] = {}

    def config(self) -> dict[str, Any]:
        ldpc = self.link == "ldpc"
        return {"link": self.link, "mcs": self.mcs.name if ldpc else None, "k": self.mcs.k if ldpc else None,
                "num_iter": self.num_iter if ldpc else None}

    @property
    def label(self) -> str:
        """``ldpc(16qam-1/2)`` or ``capacity``: for system names."""
        return f"ldpc({self.mcs.name})" if self.link == "ldpc" else "capacity"

    def ldpc(self, channel: str) -> LDPCLink:
        """The LDPC link for ``channel`` (built once per channel)."""
        if channel not in self._ldpc:
            self._ldpc[channel] = LDPCLink(self.mcs, channel, num_iter=self.num_iter, device=self.device)
        return self._ldpc[channel]

    def budget_bits(self, uses: int, snr_db: float = math.inf, gain: complex | None = None) -> int | float:
        """Payload bits that fit in ``uses`` channel uses (``inf``: capacity link at inf SNR).

        LDPC: whole codewords only, ``floor(uses / (n / bits_per_symbol)) * k``.
        """
        if self.link == "ldpc":
            return (uses // self.mcs.symbols_per_block) * self.mcs.k
        return capacity_bits(uses, snr_db, gain)

    def uses_needed(self, num_bits: int, channel: str, snr_db: float, gain: complex | None = None) -> int | float:
        """Channel uses to send ``num_bits`` (``inf`` when the capacity is 0)."""
        if self.link == "ldpc":
            return self.ldpc(channel).channel_uses(num_bits)
        return capacity_uses(num_bits, snr_db, gain)

    def send(self, payloads: Sequence[bytes | None], channel: str, snr_db: float,
             generator: torch.Generator | None, gains: torch.Tensor | None = None,
             max_uses: int | None = None) -> list[Delivery]:
        """Send every payload that is not None (and fits in ``max_uses``, when given).

        Args:
            payloads: B byte strings, None for nothing to send.
            channel: ``"awgn"`` or ``"rayleigh"``.
            snr_db: Es/N0 in dB.
            generator: the noise of the LDPC link.
            gains: (B,) complex gains from :func:`draw_gains` (None on AWGN).
            max_uses: a cap in channel uses per payload; a payload needing more is not sent.
        """
        snr = check_snr(snr_db)
        out = [Delivery(None) for _ in payloads]
        todo = []
        for i, p in enumerate(payloads):
            if p is None:
                continue
            need = self.uses_needed(8 * len(p), channel, snr, gain_of(gains, i))
            if math.isinf(need) or (max_uses is not None and need > max_uses):
                continue
            todo.append(i)
            out[i] = Delivery(p, int(need), 0, True)
        if self.link == "ldpc" and todo:
            results = self.ldpc(channel)([payloads[i] for i in todo], snr, generator,
                                         gains=None if gains is None else gains[todo])
            for i, r in zip(todo, results):
                out[i] = Delivery(r.data if r.success else None, r.channel_uses, r.block_errors, True)
        return out
