"""The one interface every system (and every baseline) offers to a sweep.

A system is a transmitter and a receiver around a channel. A sweep only needs::

    batch (images, labels, instances) --system.run(batch, channel, snr_db, generator)--> SystemOutput

Conventions (shared by every system):

- ``Batch.images`` are (B, 3, H, W) float32 in [-1, 1]; ``Batch.labels`` are (B, H, W) int64
  class ids, with ``Batch.ignore_index`` (default 255) for unlabelled pixels.
- ``channel`` is a name: ``"awgn"``, ``"rayleigh"`` (block fading, one complex gain per image,
  perfect CSI at the receiver) or ``"legacy"`` (GESCO's lookup table; only systems that define
  it). ``snr_db`` is Es/N0 per complex channel use (``inf`` = noiseless), except for
  ``"legacy"`` where it is a key of GESCO's table.
- Cost: ``channel_uses`` are complex channel uses per image; ``bits`` are source bits per image
  for systems that send bits (None for analog systems).
- Randomness comes only from the ``generator`` passed in.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Batch", "SystemOutput", "System", "PHYSICAL_CHANNELS"]

PHYSICAL_CHANNELS = ("awgn", "rayleigh")


@dataclass
class Batch:
    """Images and their maps.

    Attributes:
        images: (B, 3, H, W) float32 in [-1, 1].
        labels: (B, H, W) int64 class ids; ``ignore_index`` marks unlabelled pixels.
        instances: (B, H, W) int64 instance ids, or None.
        names: B identifiers (file paths or ``synthetic/...``).
        num_classes: classes of the label space.
        ignore_index: the unlabelled id.
    """

    images: torch.Tensor
    labels: torch.Tensor
    instances: torch.Tensor | None
    names: list[str]
    num_classes: int
    ignore_index: int = 255

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0], *self.images.shape[2:]):
            raise ValueError(f"labels {tuple(self.labels.shape)} do not match images {tuple(self.images.shape)}")
        if len(self.names) != self.images.shape[0]:
            raise ValueError(f"{len(self.names)} names for {self.images.shape[0]} images")

    @property
    def size(self) -> int:
        return self.images.shape[0]

    @property
    def pixels(self) -> int:
        return self.images.shape[2] * self.images.shape[3]


@dataclass
class SystemOutput:
    """What arrived, and what it cost.

    Attributes:
        images: (B, 3, H, W) in [-1, 1], the reconstructed or regenerated images; None for a
            system that only sends the map.
        labels: (B, H, W) int64, the label map as received (after the receiver's denoising), or
            None when the system does not send a map.
        channel_uses: float64 (B,) complex channel uses per image.
        bits: float64 (B,) source bits per image for digital systems, else None.
        lost: bool (B,) the payload could not be decoded (digital cliff), else None.
        info: extras, JSON-able: scalars, or lists of length B (e.g. ``"quality"``, ``"ber"``).
    """

    images: torch.Tensor | None
    labels: torch.Tensor | None
    channel_uses: torch.Tensor
    bits: torch.Tensor | None = None
    lost: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)


class System(ABC):
    """A transmitter + receiver pair. Subclasses set ``name``, ``stochastic``, ``channels``."""

    name: str = "system"
    #: True when the receiver samples (several draws per map make sense).
    stochastic: bool = False
    #: the channel names this system implements.
    channels: tuple[str, ...] = PHYSICAL_CHANNELS

    def supports(self, channel: str) -> bool:
        return channel in self.channels

    def compatible(self, batch: Batch) -> str | None:
        """None when this system can send ``batch``, else why not (e.g. a model trained on
        another label space); a sweep records the reason and skips the pair."""
        return None

    def check_channel(self, channel: str) -> None:
        if not self.supports(channel):
            raise ValueError(f"system {self.name!r} does not support channel {channel!r}; "
                             f"it supports {', '.join(self.channels)}")

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-able settings that identify this system in a results file."""

    @abstractmethod
    def run(self, batch: Batch, channel: str, snr_db: float,
            generator: torch.Generator | None = None) -> SystemOutput:
        """Send ``batch`` over ``channel`` at ``snr_db`` and reconstruct it."""
