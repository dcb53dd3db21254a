"""What a conditional diffusion receiver is conditioned on, built from a training batch.

The trainer (:class:`gensemcom.train.Trainer`) is one loop for every system; what differs is how a
batch of dataset items becomes the network's inputs. A :class:`Condition` does that::

    items --collate (DataLoader, CPU)--> batch {"image", "label", "instance"?, "class"?}
          --condition(batch, generator) (on the device; may hold trainable parts, e.g. an encoder,
            and draw channel noise from the run's generator)--> Conditioned(x0, y, model_kwargs)
          --> diffusion.training_losses(model, x0, t, y, model_kwargs=...)

Conditions here (one per shape of receiver):

- :class:`SemanticMapCondition`: GESCO / Diff-GO^n / Q-GESCO: the one-hot map (+ instance edges)
  through SPADE, optionally noise-aware (GESCO's std list, or a physical channel at a random SNR).
- :class:`CoarseImageCondition`: SPIC-shaped: the map through SPADE and a coarse (area-downsampled,
  bilinear-upsampled) copy of the image concatenated to x_t.
- :class:`LatentCondition`: Diff-JSCC-shaped: no map; an encoder's latent (optionally sent through
  a channel) added to the time embedding, and the class label embedded.

A Condition is an ``nn.Module``: its parameters are trained with the network, kept in the EMA and
saved in every checkpoint (Diff-JSCC trains its encoder end to end).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Conditioned", "Condition", "SemanticMapCondition", "CoarseImageCondition", "LatentCondition",
           "GESCO_TRAIN_NOISE_STDS"]

#: GESCO's noise-aware training: per batch one std drawn from this list (1/3 clean), the same
#: noise (B, 1, H, W) added to every channel of the map.
GESCO_TRAIN_NOISE_STDS = (0.6, 0.36, 0.22, 0.13, 0.08, 0.05, 0.0, 0.0, 0.0)


@dataclass
class Conditioned:
    """The network's inputs for one micro-batch.

    Attributes:
        x0: (B, C, H, W) images in [-1, 1], the diffusion target.
        y: (B, L, H, W) semantic map, or None for a network without one.
        model_kwargs: further inputs with a leading batch dimension (``concat``, ``vector``,
            ``class_labels``).
    """

    x0: torch.Tensor
    y: torch.Tensor | None
    model_kwargs: dict[str, torch.Tensor] = field(default_factory=dict)


class Condition(nn.Module):
    """Base class: stack the items (``collate``), then build the inputs (``forward``)."""

    def collate(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Dataset items -> a batch of stacked tensors (runs in the DataLoader)."""
        batch = {"image": torch.stack([it["image"] for it in items])}
        for key in ("label", "instance", "class"):
            if all(it.get(key) is not None for it in items):
                batch[key] = torch.stack([torch.as_tensor(it[key]) for it in items])
        return batch

    def check(self, model_config: Any) -> None:
        """ValueError when the network cannot take these inputs."""

    def config(self) -> dict[str, Any]:
        """JSON-able settings (saved with the run)."""
        return {"kind": type(self).__name__}

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> Conditioned:  # pragma: no cover
        raise NotImplementedError


class SemanticMapCondition(Condition):
    """One-hot map [+ instance edges] through SPADE (GESCO).

    Args:
        num_classes: one-hot width; the edge channel is added with ``with_edges``.
        with_edges: append the instance-edge channel (the items need ``"instance"``).
        noise_aware: ``"none"``; ``"gesco"`` (GESCO's std list, noise broadcast over channels);
            ``"channel"`` (the map through ``channel`` at an SNR drawn uniformly per sample from
            ``snr_range_db``, the receiver's FDS denoising applied).
        channel, snr_range_db: for ``noise_aware="channel"``.
        instance_mode: see :func:`gensemcom.semantics.semantic_input`.
        ignore_index: pixels with this label are sent as class 0 (GESCO's rule).
    """

    def __init__(self, num_classes: int, with_edges: bool = True, noise_aware: str = "none",
                 channel: str = "awgn", snr_range_db: tuple[float, float] = (0.0, 20.0),
                 instance_mode: str = "exact", ignore_index: int | None = 255) -> None:
        super().__init__()
        if noise_aware not in ("none", "gesco", "channel"):
            raise ValueError(f"noise_aware must be 'none', 'gesco' or 'channel', got {noise_aware!r}")
        self.num_classes, self.with_edges, self.noise_aware = num_classes, with_edges, noise_aware
        self.channel_kind, self.snr_range_db = channel, tuple(float(v) for v in snr_range_db)
        self.instance_mode, self.ignore_index = instance_mode, ignore_index
        self._channel = None
        if noise_aware == "channel":
            from .channels import SemanticMapChannel, make_channel
            self._channel = SemanticMapChannel(make_channel(channel), has_edges=with_edges)

    def check(self, model_config: Any) -> None:
        want = self.num_classes + int(self.with_edges)
        if model_config.label_channels != want:
            raise ValueError(f"model label_channels {model_config.label_channels} must be num_classes "
                             f"({self.num_classes}){' + 1 (instance edges)' if self.with_edges else ''} = {want}")

    def config(self) -> dict[str, Any]:
        return {"kind": "semantic_map", "num_classes": self.num_classes, "with_edges": self.with_edges,
                "noise_aware": self.noise_aware, "channel": self.channel_kind,
                "snr_range_db": list(self.snr_range_db)}

    def collate(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        from .systems.gesco import gesco_map
        batch = super().collate(items)
        inst = None
        if self.with_edges:
            if "instance" not in batch:
                raise ValueError("the model expects an instance-edge channel but the dataset has no instances")
            inst = batch["instance"]
        batch["y"] = gesco_map(batch["label"], self.num_classes, inst, self.ignore_index,
                               instance_mode=self.instance_mode)
        return batch

    def noisy(self, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The map as a noise-aware receiver sees it in training."""
        if self.noise_aware == "gesco":
            k = int(torch.randint(len(GESCO_TRAIN_NOISE_STDS), (), generator=generator))
            noise = torch.randn((y.shape[0], 1, *y.shape[2:]), generator=generator)
            return y + GESCO_TRAIN_NOISE_STDS[k] * noise.to(y.device)
        if self.noise_aware == "channel":
            lo, hi = self.snr_range_db
            snr = lo + (hi - lo) * torch.rand(y.shape[0], generator=generator)
            return self._channel(y, snr, generator=generator).received.to(y.device)
        return y

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> Conditioned:
        return Conditioned(batch["image"], self.noisy(batch["y"], generator))


class CoarseImageCondition(SemanticMapCondition):
    """SPIC-shaped: the map through SPADE and a coarse image concatenated to x_t.

    The coarse image is the batch image area-downsampled to ``coarse_size`` (H', W') and
    bilinearly upsampled back (``align_corners=False``), as SPIC's ``"resize"`` path; the network
    needs ``concat_channels = 3``. Condition dropout (the trainer's ``cond_drop_prob``) zeroes the
    map only: the unconditional branch keeps the coarse image.
    """

    def __init__(self, num_classes: int, coarse_size: tuple[int, int], with_edges: bool = False, **kwargs: Any) -> None:
        super().__init__(num_classes, with_edges=with_edges, **kwargs)
        self.coarse_size = (int(coarse_size[0]), int(coarse_size[1]))

    def check(self, model_config: Any) -> None:
        super().check(model_config)
        if model_config.concat_channels != 3:
            raise ValueError(f"a coarse-image condition needs concat_channels=3, the model has "
                             f"{model_config.concat_channels}")

    def config(self) -> dict[str, Any]:
        return {**super().config(), "kind": "coarse_image", "coarse_size": list(self.coarse_size)}

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> Conditioned:
        out = super().forward(batch, generator)
        x0 = batch["image"]
        low = F.interpolate(x0, self.coarse_size, mode="area")
        coarse = F.interpolate(low, tuple(x0.shape[2:]), mode="bilinear", align_corners=False)
        out.model_kwargs["concat"] = coarse
        return out


class LatentCondition(Condition):
    """Diff-JSCC-shaped: no map; ``encoder(image)`` -> latent (B, D) added to the time embedding.

    Args:
        encoder: a trainable module (B, 3, H, W) -> (B, D) (or any shape with D elements).
        channel: None (the latent arrives as sent) or ``"awgn"``/``"rayleigh"``: the latent is
            power-normalised per image, paired into complex symbols and sent at an SNR drawn
            uniformly per image from ``snr_range_db`` (through :mod:`gensemcom.channels`).
        snr_range_db: see ``channel``.
        class_labels: pass the items' ``"class"`` as ``class_labels`` (the network's class
            embedding).
    """

    def __init__(self, encoder: nn.Module, channel: str | None = None,
                 snr_range_db: tuple[float, float] = (0.0, 20.0), class_labels: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.channel_kind, self.snr_range_db = channel, tuple(float(v) for v in snr_range_db)
        self.class_labels = class_labels
        self._channel = None
        if channel is not None:
            from .channels import make_channel
            self._channel = make_channel(channel)

    def check(self, model_config: Any) -> None:
        if model_config.label_channels != 0:
            raise ValueError(f"a latent condition drives a network without a map (label_channels=0), "
                             f"the model has label_channels={model_config.label_channels}")
        if not model_config.vector_dim:
            raise ValueError("a latent condition needs a network with vector_dim > 0")
        if self.class_labels and not getattr(model_config, "num_classes", 0):
            raise ValueError("class_labels=True needs a network with a class embedding (num_classes > 0)")

    def config(self) -> dict[str, Any]:
        return {"kind": "latent", "channel": self.channel_kind, "snr_range_db": list(self.snr_range_db),
                "class_labels": self.class_labels, "encoder": type(self.encoder).__name__}

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> Conditioned:
        x0 = batch["image"]
        z = self.encoder(x0).flatten(1)
        if self._channel is not None:
            lo, hi = self.snr_range_db
            snr = lo + (hi - lo) * torch.rand(z.shape[0], generator=generator)
            z = self._channel(z, snr.to(z.device), generator=generator).received.to(z.dtype)
        kwargs = {"vector": z}
        if self.class_labels:
            if "class" not in batch:
                raise ValueError("class_labels=True but the dataset items have no 'class'")
            kwargs["class_labels"] = batch["class"].long()
        return Conditioned(x0, None, kwargs)
