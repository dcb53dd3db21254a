"""GESCO: generative semantic communication with a semantic diffusion model.

Grassucci, Barbarossa, Comminiello, "Generative Semantic Communication: Diffusion Models Beyond
Bit Recovery", arXiv 2306.04321. The whole pipeline::

    labels (B,H,W), instances (B,H,W)
        --transmit--> y (B, C[+1], H, W): one-hot classes (+ instance-edge channel)
        --channel---> the channels of the classes present (+ edges) are sent; the class list is
                      error-free side information; noise; receiver-side denoising (FDS:
                      3x3 average then 3x3 max pooling); absent classes zero
        --receive---> x_0 = diffusion.sample(model, received map, guidance s)   (B,3,H,W) in [-1,1]

Channels (``channel=``):

- ``"awgn"`` (default), ``"rayleigh"``, ``"rician"``: physical; SNR in dB is Es/N0 per complex
  channel use, the transmitted real values paired into complex symbols, power normalised per
  image (:class:`gensemcom.channels.SemanticMapChannel`).
- ``"legacy"``: GESCO's reference channel, exact: ``snr_db`` is a key of its lookup table of
  noise standard deviations (100, 30, 25, 20, 15, 10, 5, 1), not a physical SNR
  (:class:`gensemcom.channels.LegacyGescoChannel`). Use it to reproduce GESCO's numbers.
- ``"none"``: the map arrives unchanged (the upper bound).

Links (:class:`GESCOSystem`, ``link=``): ``"analog"`` (above) or ``"ldpc"`` (``gesco-digital``:
the label and instance maps PNG-coded and sent over 5G LDPC + QAM, then the same receiver).

**Unlabelled pixels** (one rule, :meth:`GESCO.transmit`): pixels labelled ``ignore_index``
(255 by default) are sent as class 0, as GESCO's data loaders do (Cityscapes' id 0 is
"unlabeled"); any other id outside ``0 .. num_classes - 1`` is an error.

One pipeline serves the Python API (:meth:`GESCO.run`), the sweep (:class:`GESCOSystem`), the
digital variant and ``gensemcom sample``: ``transmit -> send -> regenerate``, where
:meth:`GESCO.regenerate` draws x_T from the run's generator right after the channel's draws.
The reference code runs one image at a time; every step here works on batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ..channels import LegacyGescoChannel, SemanticChannelOutput, SemanticMapChannel, make_channel
from ..diffusion.gaussian import GaussianDiffusion
from ..semantics import semantic_input
from .base import Batch, System, SystemOutput
from .registry import SystemOptions, register_system
from .transport import check_snr

__all__ = ["GESCO", "GESCOSystem", "MAP_CHANNELS", "map_channel"]

MAP_CHANNELS = ("awgn", "rayleigh", "rician", "legacy", "none")


def map_channel(kind: str, snr_db: float, *, pool: str = "fds", has_edges: bool = True,
                k_factor: float = 3.0) -> Callable[..., SemanticChannelOutput]:
    """A semantic-map channel at one SNR: ``ch(y, generator=None) -> SemanticChannelOutput``.

    ``kind="legacy"`` takes ``snr_db`` as a key of GESCO's table (``100`` is noiseless); the
    physical kinds take Es/N0 in dB (``inf`` is noiseless).
    """
    if kind not in MAP_CHANNELS:
        raise ValueError(f"unknown channel {kind!r}; use one of {MAP_CHANNELS}")
    if kind == "legacy":
        key = int(snr_db) if math.isfinite(snr_db) and float(snr_db).is_integer() else snr_db
        legacy = LegacyGescoChannel(key, pool=pool, has_edges=has_edges)
        return lambda y, generator=None: legacy(y, generator=generator)
    physical = SemanticMapChannel(make_channel(kind, **({"k_factor": k_factor} if kind == "rician" else {})),
                                  pool=pool, has_edges=has_edges)
    return lambda y, generator=None: physical(y, snr_db, generator=generator)


@dataclass
class GESCO:
    """The GESCO system around a trained semantic diffusion model.

    Attributes:
        model, diffusion: the network and the (respaced) sampling process.
        num_classes: classes of the one-hot map; an edge channel is added when the model's
            ``label_channels`` is ``num_classes + 1``.
        channel, pool, k_factor: see the module docstring; ``pool`` is the receiver's
            denoising (``"fds"``, ``"median"``, ``"mean"``, ``"none"``).
        guidance_scale: classifier-free guidance (2 for Cityscapes, 2.5 for COCO/ADE20K).
        method, eta, clip_denoised: the sampler: a name of :data:`gensemcom.diffusion.SAMPLERS`
            (``"ddim"``, ``"ddpm"``, ``"dpm++2m"``, ``"unipc"``, ...) or a Sampler object.
        instance_mode: ``"exact"`` or ``"reference_8bit"`` (the reference's 8-bit instance ids).
        autocast: network dtype on GPU (``torch.float16``/``bfloat16``), or None.
    """

    model: nn.Module
    diffusion: GaussianDiffusion
    num_classes: int
    channel: str = "awgn"
    pool: str = "fds"
    k_factor: float = 3.0
    guidance_scale: float = 2.0
    method: str = "ddim"
    eta: float = 0.0
    clip_denoised: bool = True
    instance_mode: str = "exact"
    autocast: torch.dtype | None = None

    def __post_init__(self) -> None:
        lc = self.model.config.label_channels
        if lc not in (self.num_classes, self.num_classes + 1):
            raise ValueError(f"the model takes {lc} label channels; num_classes {self.num_classes} "
                             f"needs {self.num_classes} or {self.num_classes + 1} (with edges)")
        self.has_edges = lc == self.num_classes + 1
        if self.channel not in MAP_CHANNELS:
            raise ValueError(f"unknown channel {self.channel!r}; use one of {MAP_CHANNELS}")

    def transmit(self, labels: torch.Tensor, instances: torch.Tensor | None = None,
                 ignore_index: int = 255) -> torch.Tensor:
        """(B,H,W) label ids [+ instance ids] -> the semantic map y (B, label_channels, H, W).

        Pixels labelled ``ignore_index`` are sent as class 0 (the module's unlabelled-pixel rule).
        """
        if self.has_edges and instances is None:
            raise ValueError("this model takes an instance-edge channel: pass instances")
        return gesco_map(labels, self.num_classes, instances if self.has_edges else None, ignore_index,
                         instance_mode=self.instance_mode)

    def send(self, y: torch.Tensor, snr_db: float, generator: torch.Generator | None = None) -> SemanticChannelOutput:
        """The map through the channel and the receiver's denoising."""
        ch = map_channel(self.channel, snr_db, pool=self.pool, has_edges=self.has_edges, k_factor=self.k_factor)
        return ch(y, generator=generator)

    def regenerate(self, received: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x_T drawn from ``generator`` (on the CPU for a default one), then :meth:`receive`."""
        noise = torch.randn((received.shape[0], 3, *received.shape[2:]), generator=generator)
        return self.receive(received, generator, noise=noise)

    def receive(self, received: torch.Tensor, generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        """Regenerate images (B, 3, H, W) in [-1, 1] from the received map."""
        device = next(self.model.parameters()).device
        return self.diffusion.sample(self.model, received.to(device), noise=None if noise is None else noise.to(device),
                                     guidance_scale=self.guidance_scale, method=self.method, eta=self.eta,
                                     clip_denoised=self.clip_denoised, generator=generator,
                                     autocast=self.autocast)

    def run(self, labels: torch.Tensor, instances: torch.Tensor | None, snr_db: float,
            generator: torch.Generator | None = None) -> dict[str, Any]:
        """transmit -> send -> receive; returns images, the received map and the channel cost."""
        y = self.transmit(labels, instances)
        sent = self.send(y, snr_db, generator)
        images = self.regenerate(sent.received, generator)
        return {"images": images, "sent": y, "received": sent.received,
                "channel_uses": sent.channel_uses, "channel_uses_per_pixel": sent.channel_uses_per_pixel}


class GESCOSystem(System):
    """GESCO behind the sweep interface (:class:`gensemcom.systems.base.System`).

    With a ``gesco`` model it regenerates images from the received map; with ``gesco=None`` it is
    the map link alone (``"gesco-map"``: one-hot map + edges over the channel, FDS denoising),
    usable on any label space, e.g. photos whose classes no bundled model knows.

    Args:
        gesco: a :class:`GESCO` (its ``channel`` field is ignored: the sweep names the channel).
        link: ``"analog"`` (GESCO) or ``"ldpc"`` (``gesco-digital``: label + instance maps
            PNG-coded over 5G LDPC + QAM at ``mcs``; a lost map gives a mid-grey image).
        has_edges: without a model, whether the instance-edge channel is sent (the map link then
            takes the label space of each batch).
        pool, k_factor: the receiver's denoising and the Rician K (see :func:`map_channel`).
        mcs, num_iter: of the LDPC link.
    """

    channels = ("awgn", "rayleigh", "legacy")

    def __init__(self, gesco: GESCO | None = None, *, link: str = "analog", has_edges: bool = True,
                 pool: str = "fds", k_factor: float = 3.0, mcs: str = "16qam-1/2", num_iter: int = 20) -> None:
        if link not in ("analog", "ldpc"):
            raise ValueError(f"unknown link {link!r} for GESCO; use 'analog' or 'ldpc'")
        if link == "ldpc" and gesco is None:
            raise ValueError("link='ldpc' needs a GESCO model (the map alone over LDPC is `map+ldpc`)")
        self.gesco = gesco
        self.link = link
        self.num_classes: int | None = None
        if gesco is not None:
            self.num_classes, has_edges, pool = gesco.num_classes, gesco.has_edges, gesco.pool
        self.has_edges, self.pool, self.k_factor = has_edges, pool, k_factor
        self.name = "gesco-map" if gesco is None else ("gesco" if link == "analog" else "gesco-digital")
        self.stochastic = gesco is not None
        self._digital = None
        if link == "ldpc":
            from .separation import DigitalMap
            self.channels = ("awgn", "rayleigh")
            self._digital = DigitalMap(codec="png", link="ldpc", mcs=mcs, send_instances=self.has_edges,
                                       regenerate=self._regenerate_labels, num_iter=num_iter)

    def compatible(self, batch: Batch) -> str | None:
        if self.num_classes is not None and batch.num_classes != self.num_classes:
            return f"{self.name} takes {self.num_classes} classes, the data has {batch.num_classes}"
        if self.has_edges and batch.instances is None:
            return f"{self.name} sends instance edges but the data has no instance maps"
        return None

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"system": self.name, "edges": self.has_edges, "pool": self.pool}
        if self.gesco is not None:
            g = self.gesco
            cfg.update(guidance_scale=g.guidance_scale, eta=g.eta,
                       method=g.method if isinstance(g.method, str) else g.method.config(),
                       num_classes=g.num_classes, steps=len(g.diffusion.timesteps), clip_denoised=g.clip_denoised,
                       model=g.model.config.to_dict())
        if self._digital is not None:
            cfg["link"] = self._digital.config()
        return cfg

    def _regenerate_labels(self, labels: torch.Tensor, instances: torch.Tensor | None,
                           generator: torch.Generator | None) -> torch.Tensor:
        """The digital link's receiver: maps as decoded -> images."""
        assert self.gesco is not None
        return self.gesco.regenerate(self.gesco.transmit(labels, instances), generator).cpu()

    def run(self, batch: Batch, channel: str, snr_db: float,
            generator: torch.Generator | None = None) -> SystemOutput:
        self.check_channel(channel)
        reason = self.compatible(batch)
        if reason:
            raise ValueError(reason)
        if self._digital is not None:
            out = self._digital.run(batch, channel, snr_db, generator)
            out.info["noise"] = "Es/N0 per complex use"
            return out
        if channel != "legacy":
            snr_db = check_snr(snr_db)
        y = gesco_map(batch.labels, batch.num_classes, batch.instances if self.has_edges else None,
                      batch.ignore_index)
        ch = map_channel(channel, snr_db, pool=self.pool, has_edges=self.has_edges, k_factor=self.k_factor)
        sent = ch(y, generator=generator)
        received_ids = sent.received[:, :batch.num_classes].argmax(1)
        images = None
        if self.gesco is not None:
            images = self.gesco.regenerate(sent.received, generator).cpu()
        return SystemOutput(images=images, labels=received_ids, channel_uses=sent.channel_uses.to(torch.float64),
                            info={"noise": "legacy table std" if channel == "legacy" else "Es/N0 per complex use"})


def gesco_map(labels: torch.Tensor, num_classes: int, instances: torch.Tensor | None = None,
              ignore_index: int | None = 255, instance_mode: str = "exact") -> torch.Tensor:
    """GESCO's transmitted map: one-hot classes [+ the instance-edge channel], (B, C[+1], H, W).

    The unlabelled-pixel rule: ``ignore_index`` pixels are sent as class 0; any other id outside
    ``0 .. num_classes - 1`` raises ValueError naming it.
    """
    labels = torch.as_tensor(labels)
    if ignore_index is not None:
        labels = torch.where(labels == ignore_index, torch.zeros_like(labels), labels)
    if labels.numel():
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"label ids span [{lo}, {hi}] but the model has {num_classes} classes "
                             f"(0..{num_classes - 1}; {ignore_index} marks unlabelled pixels)")
    return semantic_input(labels, num_classes, instances=instances, instance_mode=instance_mode)


# ---------------------------------------------------------------------------- registrations
_GESCO_SENDS = "one-hot map of the present classes + instance edges, analog"
_GESCO_COST = "(present classes + 1) x H x W / 2 complex uses per image (about 6 per pixel on the synthetic scenes)"


@register_system("gesco", usage="gesco[:FOLDER]", sends=_GESCO_SENDS,
                 receiver="FDS denoising, then the semantic diffusion model (DDIM, guidance)",
                 description="GESCO (Grassucci et al. 2023); default: the bundled synthetic-scenes model",
                 cost=_GESCO_COST)
def _gesco(arg: str | None, o: SystemOptions) -> System:
    from ..zoo import load_gesco
    return GESCOSystem(load_gesco(arg, steps=o.steps, guidance_scale=o.guidance_scale, device=o.device,
                                  sampler=o.sampler))


@register_system("gesco-map", sends=_GESCO_SENDS, receiver="FDS denoising only (the map GESCO conditions on)",
                 description="GESCO's map link alone, without the generator; any label space", cost=_GESCO_COST)
def _gesco_map(arg: str | None, o: SystemOptions) -> System:
    if arg:
        raise ValueError(f"gesco-map takes no argument, got {arg!r}")
    return GESCOSystem(None)


@register_system("gesco-digital", usage="gesco-digital[:MCS]",
                 sends="label + instance maps PNG-coded (lossless), 5G LDPC + QAM",
                 receiver="PNG decoding, then the bundled GESCO model; a lost map gives mid-grey",
                 description="GESCO with its map sent digitally (the cliff instead of graceful decline)",
                 cost="as many channel uses as the two files need")
def _gesco_digital(arg: str | None, o: SystemOptions) -> System:
    from ..zoo import load_gesco
    g = load_gesco(None, steps=o.steps, guidance_scale=o.guidance_scale, device=o.device, sampler=o.sampler)
    return GESCOSystem(g, link="ldpc", mcs=arg or o.mcs)
