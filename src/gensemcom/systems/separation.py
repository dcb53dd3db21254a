"""Digital baselines built on separation: a source codec, then a channel code.

:class:`SeparateCoding` sends the image itself with a classical codec under a bandwidth budget::

    images (B,3,H,W) in [-1,1] --uint8--> encode_to_budget(codec, budget bits) --> file | none fits
        --link: LDPCLink (real code) or the ideal capacity link--> file' | block error
        --decode_image--> (B,3,H,W) in [-1,1]
    no fit, block error or undecodable file --> LOST: the receiver shows mid-grey (zeros)

:class:`DigitalMap` sends the semantic map losslessly (what SPIC / Diff-GO^n transmit)::

    labels (B,H,W) [+ instances] --encode_labels (PNG / lossless WebP)--> file(s), sent back to back
        --the same links, as many channel uses as the file needs--> file' | block error
        --decode_labels--> received map;  optional regenerate(map, instances, generator) -> images
    block error (or over the optional bandwidth cap) --> LOST: all-ignore map, mid-grey image

Both show the digital *cliff*: above the SNR where the link works the result does not improve with
SNR, below it everything is lost at once (the ideal link degrades gracefully instead, since it
codes at the capacity of the actual SNR).

Links (``link=``):

- ``"ldpc"``: :class:`gensemcom.channels.coded.LDPCLink` with ``mcs`` (5G NR LDPC + Gray QAM,
  exact LLRs, perfect receiver CSI). Success means every block decoded correctly (a CRC is assumed
  to detect errors; its bits are not counted). The payload length is side information.
- ``"capacity"``: the ideal link, error-free at ``log2(1 + |h|^2 SNR)`` bits per channel use. On
  Rayleigh the transmitter knows the image's gain (CSIT) and codes at that instantaneous capacity.

Channels: ``"awgn"`` and ``"rayleigh"`` (one CN(0, 1) gain per image, drawn from the generator
before anything else, so both links see the same gains for the same seed). SNR is Es/N0 per
complex channel use.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch

from ..codecs import (IMAGE_CODECS, LABEL_CODECS, CodecError, _check_chroma, decode_image, decode_labels,
                      encode_labels, encode_to_budget, file_length)
from .base import PHYSICAL_CHANNELS, Batch, System, SystemOutput
from .registry import SystemOptions, register_system
from .transport import LINKS, PayloadLink, check_snr, draw_gains, gain_of, gain_powers, uses_allowed

__all__ = ["SeparateCoding", "DigitalMap", "LINKS"]

#: ``regenerate(labels (B,H,W) int64, instances (B,H,W) int64 | None, generator) -> (B,3,H,W)``
Regenerator = Callable[[torch.Tensor, "torch.Tensor | None", "torch.Generator | None"], torch.Tensor]


def _to_uint8(images: torch.Tensor) -> list[np.ndarray]:
    """(B,3,H,W) in [-1,1] -> B uint8 (H,W,3)."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [a for a in x.permute(0, 2, 3, 1).cpu().numpy()]


def _from_uint8(image: np.ndarray) -> torch.Tensor:
    """uint8 (H,W,3) -> (3,H,W) float32 in [-1,1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 127.5 - 1.0


class SeparateCoding(System):
    """Image codec under a bandwidth budget + channel code (see the module docstring).

    Args:
        codec: one of :data:`gensemcom.codecs.IMAGE_CODECS`.
        link: ``"ldpc"`` or ``"capacity"``.
        mcs: the LDPC scheme (an :class:`~gensemcom.channels.coded.MCS` or a preset name); unused
            by the capacity link.
        bandwidth: complex channel uses per pixel allowed per image, > 0.
        chroma: the codec's chroma setting (None: the codec's usual, see :mod:`gensemcom.codecs`).
        num_iter, device: of the LDPC decoder.

    Budget per image of H x W pixels, with ``U = floor(bandwidth * H * W)`` channel uses:

    - ``ldpc``: whole codewords only, ``floor(U / (n / bits_per_symbol)) * k`` bits, i.e.
      ``U * bits_per_symbol * rate`` rounded down to a multiple of k; nothing else (no CRC, no
      header) is taken from it.
    - ``capacity``: ``capacity_bits(U, snr_db, h)`` (h = 1 on AWGN).

    The best-quality file within the budget is sent (:func:`gensemcom.codecs.encode_to_budget`).
    The image is LOST (mid-grey, zeros in [-1, 1]) when even the lowest quality does not fit or
    the link fails. Reported ``channel_uses`` are the symbols actually sent: the file's codewords
    for ``ldpc``, ``capacity_uses(file bits, snr, h)`` for ``capacity`` (0 at infinite SNR), 0
    when nothing was sent.
    """

    stochastic = False
    channels = PHYSICAL_CHANNELS

    def __init__(self, codec: str = "jpeg", link: str = "ldpc", mcs: Any = "16qam-1/2", bandwidth: float = 0.5,
                 chroma: str | None = None, num_iter: int = 20, device: str | torch.device = "cpu") -> None:
        if codec not in IMAGE_CODECS:
            raise ValueError(f"unknown image codec {codec!r}; expected one of {IMAGE_CODECS}")
        self.codec = codec
        self.transport = PayloadLink(link, mcs, num_iter=num_iter, device=device)
        self.link, self.mcs = link, self.transport.mcs
        try:
            bw = float(bandwidth)
        except (TypeError, ValueError):
            raise ValueError(f"bandwidth must be a number > 0, got {bandwidth!r}") from None
        if not (math.isfinite(bw) and bw > 0):
            raise ValueError(f"bandwidth must be a finite number > 0 (channel uses per pixel), got {bandwidth!r}")
        self.bandwidth = bw
        _check_chroma(codec, chroma)  # now rather than on the first image
        self.chroma = chroma
        codec_name = codec if chroma is None else f"{codec}:{chroma}"
        self.name = f"{codec_name}+{self.transport.label}"

    def config(self) -> dict[str, Any]:
        return {"system": "separate_coding", "codec": self.codec, "chroma": self.chroma, **self.transport.config(),
                "bandwidth": self.bandwidth}

    def budget_bits(self, height: int, width: int, snr_db: float = math.inf,
                    gain: complex | None = None) -> int | float:
        """The file budget in bits for one image (``inf``: unlimited, capacity link at inf SNR)."""
        return self.transport.budget_bits(uses_allowed(self.bandwidth, height * width), snr_db, gain)

    def run(self, batch: Batch, channel: str, snr_db: float,
            generator: torch.Generator | None = None) -> SystemOutput:
        self.check_channel(channel)
        snr = check_snr(snr_db)
        b, h, w = batch.size, batch.images.shape[2], batch.images.shape[3]
        gains = draw_gains(channel, b, generator)
        files: list[bytes | None] = []
        qualities: list[int | None] = []
        budgets: list[int | None] = []
        for i, img in enumerate(_to_uint8(batch.images)):
            budget = self.budget_bits(h, w, snr, gain_of(gains, i))
            data, q = encode_to_budget(img, self.codec, budget, self.chroma)
            files.append(data)
            qualities.append(q)
            budgets.append(None if math.isinf(budget) else int(budget))
        deliveries = self.transport.send(files, channel, snr, generator, gains)
        received = [d.data for d in deliveries]
        uses = [d.channel_uses for d in deliveries]
        block_errors = [d.block_errors for d in deliveries]
        images = torch.zeros(b, 3, h, w)
        lost = torch.ones(b, dtype=torch.bool)
        for i, data in enumerate(received):
            if data is None:
                continue
            try:
                out = decode_image(data, self.codec)
            except CodecError:
                continue
            if out.shape != (h, w, 3):
                continue
            images[i] = _from_uint8(out)
            lost[i] = False
        info: dict[str, Any] = {"quality": qualities, "budget_bits": budgets, "block_errors": block_errors,
                                "allowed_uses": uses_allowed(self.bandwidth, h * w)}
        if gains is not None:
            info["gain_power"] = gain_powers(gains)
        return SystemOutput(
            images=images.to(batch.images.device, batch.images.dtype),
            labels=None,
            channel_uses=torch.tensor(uses, dtype=torch.float64),
            bits=torch.tensor([0.0 if f is None else 8.0 * len(f) for f in files], dtype=torch.float64),
            lost=lost,
            info=info,
        )

    def __repr__(self) -> str:
        return f"SeparateCoding({self.name!r}, bandwidth={self.bandwidth})"


class DigitalMap(System):
    """The semantic map coded losslessly and sent digitally (see the module docstring).

    Args:
        codec: label-map codec, ``"png"`` or ``"webp"`` (webp takes ids <= 255 only, so instance
            maps with ids above 255, e.g. Cityscapes', need ``"png"``).
        link: ``"ldpc"`` or ``"capacity"``.
        mcs: the LDPC scheme; unused by the capacity link.
        send_instances: also send the instance map (same codec, right after the label file).
        regenerate: None (the system only delivers the map: ``images=None``), or
            ``regenerate(labels (B,H,W), instances (B,H,W) or None, generator) -> (B,3,H,W)`` in
            [-1, 1], called on the images whose map arrived; lost ones are mid-grey.
        max_bandwidth: None (every map is sent with as many channel uses as it needs), or a cap in
            channel uses per pixel: a map needing more is not sent and counts as lost.
        num_iter, device: of the LDPC decoder.

    Cost: ``bits`` are the file bits (labels + instances); ``channel_uses`` the symbols sent:
    ``ceil(bits / k) * n / bits_per_symbol`` for ``ldpc``, ``ceil(bits / log2(1 + |h|^2 SNR))``
    for ``capacity`` (0 at infinite SNR). The capacity link loses a map only when its capacity is 0
    (h = 0, probability 0) or over ``max_bandwidth``; the LDPC link when any block fails.
    Lost maps come back as all ``batch.ignore_index``.
    """

    channels = PHYSICAL_CHANNELS

    def __init__(self, codec: str = "png", link: str = "ldpc", mcs: Any = "16qam-1/2", send_instances: bool = False,
                 regenerate: Regenerator | None = None, max_bandwidth: float | None = None, num_iter: int = 20,
                 device: str | torch.device = "cpu") -> None:
        if codec not in LABEL_CODECS:
            raise ValueError(f"unknown label codec {codec!r}; expected one of {LABEL_CODECS}")
        if regenerate is not None and not callable(regenerate):
            raise ValueError(f"regenerate must be None or a callable, got {type(regenerate).__name__}")
        if max_bandwidth is not None:
            try:
                mb = float(max_bandwidth)
            except (TypeError, ValueError):
                raise ValueError(f"max_bandwidth must be None or a number > 0, got {max_bandwidth!r}") from None
            if not (math.isfinite(mb) and mb > 0):
                raise ValueError(f"max_bandwidth must be None or a finite number > 0, got {max_bandwidth!r}")
            max_bandwidth = mb
        self.codec = codec
        self.transport = PayloadLink(link, mcs, num_iter=num_iter, device=device)
        self.link, self.mcs = link, self.transport.mcs
        self.send_instances = bool(send_instances)
        self.regenerate = regenerate
        self.max_bandwidth = max_bandwidth
        #: a regenerating receiver samples
        self.stochastic = regenerate is not None
        what = f"map{'+inst' if self.send_instances else ''}[{codec}]"
        self.name = f"{what}+{self.transport.label}"

    def config(self) -> dict[str, Any]:
        regen = None
        if self.regenerate is not None:
            regen = getattr(self.regenerate, "__qualname__", None) or type(self.regenerate).__name__
        return {"system": "digital_map", "codec": self.codec, **self.transport.config(),
                "send_instances": self.send_instances, "regenerate": regen, "max_bandwidth": self.max_bandwidth}

    def run(self, batch: Batch, channel: str, snr_db: float,
            generator: torch.Generator | None = None) -> SystemOutput:
        self.check_channel(channel)
        snr = check_snr(snr_db)
        if self.send_instances and batch.instances is None:
            raise ValueError("send_instances=True needs batch.instances")
        b, h, w = batch.size, batch.labels.shape[1], batch.labels.shape[2]
        gains = draw_gains(channel, b, generator)
        labels_np = batch.labels.detach().cpu().numpy()
        inst_np = batch.instances.detach().cpu().numpy() if self.send_instances else None
        label_files = [encode_labels(labels_np[i], self.codec) for i in range(b)]
        inst_files = [encode_labels(inst_np[i], self.codec) for i in range(b)] if inst_np is not None else None
        payloads = [label_files[i] + (inst_files[i] if inst_files is not None else b"") for i in range(b)]
        cap = None if self.max_bandwidth is None else uses_allowed(self.max_bandwidth, h * w)
        deliveries = self.transport.send(payloads, channel, snr, generator, gains, max_uses=cap)
        received = [d.data for d in deliveries]
        uses = [d.channel_uses for d in deliveries]
        block_errors = [d.block_errors for d in deliveries]

        out_labels = torch.full((b, h, w), batch.ignore_index, dtype=torch.int64)
        out_inst = torch.full((b, h, w), batch.ignore_index, dtype=torch.int64) if self.send_instances else None
        lost = torch.ones(b, dtype=torch.bool)
        for i, data in enumerate(received):
            if data is None:
                continue
            try:
                n_lab = file_length(data)
                lab = decode_labels(data[:n_lab])
                ins = decode_labels(data[n_lab:]) if self.send_instances else None
            except CodecError:
                continue
            if lab.shape != (h, w) or (ins is not None and ins.shape != (h, w)):
                continue
            out_labels[i] = torch.from_numpy(lab)
            if ins is not None:
                out_inst[i] = torch.from_numpy(ins)
            lost[i] = False

        images = None
        if self.regenerate is not None:
            images = torch.zeros(b, 3, h, w, dtype=batch.images.dtype, device=batch.images.device)
            keep = (~lost).nonzero().squeeze(1)
            if keep.numel():
                dev = batch.labels.device
                regen = self.regenerate(out_labels[keep].to(dev),
                                        None if out_inst is None else out_inst[keep].to(dev), generator)
                if tuple(regen.shape) != (keep.numel(), 3, h, w):
                    raise ValueError(f"regenerate returned shape {tuple(regen.shape)}, expected "
                                     f"{(keep.numel(), 3, h, w)}")
                images[keep.to(images.device)] = regen.to(images.device, images.dtype)

        info: dict[str, Any] = {"block_errors": block_errors,
                                "label_bits": [8 * len(f) for f in label_files]}
        if inst_files is not None:
            info["instance_bits"] = [8 * len(f) for f in inst_files]
        if gains is not None:
            info["gain_power"] = gain_powers(gains)
        return SystemOutput(
            images=images,
            labels=out_labels.to(batch.labels.device),
            channel_uses=torch.tensor(uses, dtype=torch.float64),
            bits=torch.tensor([8.0 * len(p) for p in payloads], dtype=torch.float64),
            lost=lost,
            info=info,
        )

    def __repr__(self) -> str:
        return f"DigitalMap({self.name!r})"


# ---------------------------------------------------------------------------- registrations
def _link_options(spec_link: str):
    def build_map(arg: str | None, o: SystemOptions) -> System:
        return DigitalMap(codec="png", link=spec_link, mcs=arg or o.mcs)
    return build_map


for _link in LINKS:
    _mcs_note = "[:MCS]" if _link == "ldpc" else ""
    _how = "5G LDPC + QAM at an MCS (the cliff)" if _link == "ldpc" else "an ideal code at the Shannon capacity"
    register_system(
        f"map+{_link}", usage=f"map+{_link}{_mcs_note}",
        description=f"the label map alone, PNG-coded (lossless), {_how}",
        sends="the label map as a PNG file (bits)", receiver="PNG decoding: the map exact, or lost",
        cost="as many channel uses as the file needs")(_link_options(_link))
    for _codec in IMAGE_CODECS:
        def _build(arg: str | None, o: SystemOptions, codec: str = _codec, link: str = _link) -> System:
            return SeparateCoding(codec=codec, link=link, mcs=arg or o.mcs, bandwidth=o.bandwidth)
        register_system(
            f"{_codec}+{_link}", usage=f"{_codec}+{_link}{_mcs_note}",
            description=f"separate coding: {_codec.upper()} under the bandwidth budget, {_how}",
            sends=f"the image as a {_codec.upper()} file (bits)", receiver=f"{_codec.upper()} decoding; lost: mid-grey",
            cost="--bandwidth channel uses per pixel (0.5 by default)")(_build)
