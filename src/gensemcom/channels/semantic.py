"""Semantic-map channels: GESCO's (reference-compatible, FDS denoising) and a physical counterpart.

What GESCO sends (Grassucci et al., arXiv 2306.04321; its ``preprocess_input_FDS``): the semantic
map ``y`` (B, C, H, W) = one-hot classes, then (when the dataset has instances) one instance-edge
channel last. Per sample:

1. the **transmitted channels** are the classes present in the image, in ascending order, plus
   the edge channel (always, when ``has_edges``); a class is present when its one-hot channel has
   any nonzero value. The list of present classes is error-free side information;
2. each transmitted value gets additive noise;
3. the receiver denoises every transmitted channel with a fixed 3x3 filter, by default GESCO's
   "Fast Denoising Semantic" (FDS) block: 3x3 average pool (stride 1, zero padding 1, the
   padding counted in the mean) then 3x3 max pool (stride 1, padding 1);
4. the map is rebuilt: transmitted channels in place, absent classes all zero. No clipping and
   no re-binarisation: the diffusion model receives real values.

:class:`LegacyGescoChannel` reproduces the reference exactly: the noise is ``sigma * N(0, 1)``
with ``sigma`` looked up in :data:`GESCO_SNR_TABLE`. **That table is not a physical SNR**: its
keys are nominal "dB" labels and its values noise *standard deviations* on a {0, 1} map without
power normalisation (``-20 log10 sigma`` is 26.0, 21.9, 17.7, 13.2, 8.9, 4.4, 0.9 dB, roughly a
PSNR with peak 1). Use it to compare with published GESCO / Q-GESCO numbers.

:class:`SemanticMapChannel` is the default for physically meaningful experiments: the same
selection, denoising and re-expansion, but the transmitted values go through a channel of
:mod:`.analog` (real values paired into complex symbols, power normalised per sample to 1 per
complex symbol, SNR = Es/N0 in dB, AWGN / Rayleigh / Rician).

Channel uses of both: the transmitted real values per image ``P_b * H * W`` (``P_b`` transmitted
channels of sample b), paired into ``ceil(P_b * H * W / 2)`` complex symbols; per pixel divided by
``H * W``. They differ per sample, so they are reported as (B,) tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .analog import (Channel, ChannelOutput, IdentityChannel, SnrLike, check_snr_db, make_channel,
                     snr_db_to_noise_var)

__all__ = [
    "GESCO_SNR_TABLE",
    "POOLS",
    "gesco_noise_std",
    "fds_denoise",
    "median_pool3x3",
    "transmitted_channels",
    "SemanticChannelOutput",
    "LegacyGescoChannel",
    "SemanticMapChannel",
]

#: GESCO's "SNR" lookup table: nominal dB key -> noise **standard deviation** added to the {0, 1}
#: semantic map. A table of labels, not a formula and not Es/N0 (see the module docstring).
GESCO_SNR_TABLE: dict[int, float] = {100: 0.0, 30: 0.05, 25: 0.08, 20: 0.13, 15: 0.22, 10: 0.36, 5: 0.6, 1: 0.9}

POOLS = ("fds", "median", "mean", "none")


def gesco_noise_std(snr_db_key: int | float) -> float:
    """Noise std for a key of :data:`GESCO_SNR_TABLE` (any real number equal to a key: ``10``,
    ``10.0``, ``np.int64(10)``...); ValueError listing the keys otherwise."""
    try:
        key: int | float | None = check_snr_db(snr_db_key, "snr_db_key")
        problem = ""
    except ValueError as e:  # NaN, not a number...: still list what the table supports
        key, problem = None, f" ({e})"
    if key is not None and key.is_integer():
        key = int(key)
    if key is None or key not in GESCO_SNR_TABLE:
        raise ValueError(f"unsupported GESCO SNR key {snr_db_key!r}{problem}; the legacy table supports only "
                         f"{sorted(GESCO_SNR_TABLE)} (nominal dB labels of noise std "
                         f"{[GESCO_SNR_TABLE[k] for k in sorted(GESCO_SNR_TABLE)]}); for other values "
                         "use SemanticMapChannel with a physical SNR")
    return GESCO_SNR_TABLE[key]


def median_pool3x3(x: torch.Tensor) -> torch.Tensor:
    """3x3 median filter, stride 1, reflect padding 1 (GESCO's ``MedianPool2d``).

    Args:
        x: (..., H, W) with H, W >= 2.

    Returns:
        Same shape.
    """
    if x.ndim < 2 or x.shape[-1] < 2 or x.shape[-2] < 2:
        raise ValueError(f"median pooling needs (..., H, W) with H, W >= 2, got {tuple(x.shape)}")
    lead = x.shape[:-2]
    flat = x.reshape(-1, 1, *x.shape[-2:])
    padded = F.pad(flat, (1, 1, 1, 1), mode="reflect")
    windows = padded.unfold(2, 3, 1).unfold(3, 3, 1)  # (N, 1, H, W, 3, 3)
    med = windows.reshape(*windows.shape[:4], 9).median(dim=-1).values
    return med.reshape(*lead, *x.shape[-2:])


def fds_denoise(x: torch.Tensor, kind: str = "fds") -> torch.Tensor:
    """Receiver-side denoising of a (noisy) semantic map, channel by channel.

    Args:
        x: (B, C, H, W) or (C, H, W).
        kind: ``"fds"``: 3x3 average pool (stride 1, zero padding 1, ``count_include_pad=True``)
            then 3x3 max pool (stride 1, padding 1), GESCO's default; ``"median"``: 3x3 median
            with reflect padding; ``"mean"``: the average pool only; ``"none"``: identity.

    Returns:
        Same shape as ``x``.
    """
    if kind not in POOLS:
        raise ValueError(f"unknown pool {kind!r}; expected one of {POOLS}")
    if x.ndim not in (3, 4):
        raise ValueError(f"x must be (B, C, H, W) or (C, H, W), got {tuple(x.shape)}")
    if kind == "none":
        return x
    if kind == "median":
        return median_pool3x3(x)
    out = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=True)
    if kind == "fds":
        out = F.max_pool2d(out, kernel_size=3, stride=1, padding=1)
    return out


def transmitted_channels(y: torch.Tensor, has_edges: bool = True) -> torch.Tensor:
    """Which channels of each sample are sent: present classes, plus the edge channel (last).

    Args:
        y: semantic map (B, C, H, W): C classes, or C - 1 classes and an edge channel.
        has_edges: whether the last channel is the edge map (always transmitted).

    Returns:
        bool (B, C).
    """
    if y.ndim != 4:
        raise ValueError(f"semantic map must be (B, C, H, W), got {tuple(y.shape)}")
    if has_edges and y.shape[1] < 2:
        raise ValueError("has_edges=True needs at least one class channel and the edge channel")
    mask = (y != 0).flatten(2).any(dim=2)
    if has_edges:
        mask[:, -1] = True
    return mask


@dataclass
class SemanticChannelOutput:
    """What a semantic-map channel delivered and used.

    Attributes:
        received: (B, C, H, W): denoised transmitted channels in place, absent classes zero.
        noisy: (B, C, H, W): the same before denoising.
        transmitted: bool (B, C): the transmitted channels (side information).
        real_values: int64 (B,) transmitted real values per image, ``P_b * H * W``.
        channel_uses: int64 (B,) complex symbols per image, ``ceil(real_values / 2)``.
        channel_uses_per_pixel: float64 (B,) ``channel_uses / (H * W)``.
        noise_std: legacy channel: the table's std (float); physical channel: None.
        noise_var: physical channel: (B,) N0 per complex symbol; legacy: None.
        physical: physical channel: one :class:`.analog.ChannelOutput` per sample (None for a
            sample that transmits nothing); legacy: None.
    """

    received: torch.Tensor
    noisy: torch.Tensor
    transmitted: torch.Tensor
    real_values: torch.Tensor
    channel_uses: torch.Tensor
    channel_uses_per_pixel: torch.Tensor
    noise_std: float | None = None
    noise_var: torch.Tensor | None = None
    physical: list[ChannelOutput | None] | None = None


def _usage(mask: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    real = mask.sum(dim=1).to(torch.int64).cpu() * (h * w)
    uses = (real + 1) // 2
    return real, uses, uses.to(torch.float64) / (h * w)


class _SemanticBase:
    def __init__(self, pool: str, has_edges: bool) -> None:
        if pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r}; expected one of {POOLS}")
        self.pool = pool
        self.has_edges = bool(has_edges)

    def _finish(self, y: torch.Tensor, noisy: torch.Tensor, mask: torch.Tensor, **extra) -> SemanticChannelOutput:
        keep = mask[:, :, None, None].to(noisy.dtype)
        received = fds_denoise(noisy, self.pool) * keep
        real, uses, per_pixel = _usage(mask, y.shape[2], y.shape[3])
        return SemanticChannelOutput(received=received, noisy=noisy, transmitted=mask, real_values=real,
                                     channel_uses=uses, channel_uses_per_pixel=per_pixel, **extra)


class LegacyGescoChannel(_SemanticBase):
    """GESCO's reference channel: present-class selection, ``sigma * N(0, 1)`` noise with sigma
    from :data:`GESCO_SNR_TABLE`, FDS denoising, zero re-expansion (see the module docstring).

    Args:
        snr_db_key: a key of :data:`GESCO_SNR_TABLE` (nominal dB label, not an Es/N0).
        pool: ``"fds"`` (the reference), ``"median"``, ``"mean"`` or ``"none"``.
        has_edges: whether the last channel of ``y`` is the instance-edge map.
        noise_std: use this std instead of the table (then ``snr_db_key`` is ignored), e.g.
            ``10 ** (-db / 20)`` for a formula-based variant.

    Call: ``channel(y (B, C, H, W), generator=None, noise=None) -> SemanticChannelOutput``.
    ``noise``: optional list of B tensors (P_b, H, W), the standard-normal draws of each sample's
    transmitted channels in ascending channel order (edge last); otherwise they are drawn with
    ``torch.randn((P_b, H, W), generator=generator)`` sample after sample.
    """

    def __init__(self, snr_db_key: int | float | None = 10, pool: str = "fds", has_edges: bool = True,
                 *, noise_std: float | None = None) -> None:
        super().__init__(pool, has_edges)
        if noise_std is None:
            self.noise_std = gesco_noise_std(snr_db_key)
        else:
            if not (math.isfinite(noise_std) and noise_std >= 0):
                raise ValueError(f"noise_std must be finite and >= 0, got {noise_std!r}")
            self.noise_std = float(noise_std)
        self.snr_db_key = snr_db_key if noise_std is None else None

    def __call__(self, y: torch.Tensor, generator: torch.Generator | None = None,
                 noise: Sequence[torch.Tensor] | None = None) -> SemanticChannelOutput:
        mask = transmitted_channels(y, self.has_edges)
        b, c, h, w = y.shape
        if noise is not None and len(noise) != b:
            raise ValueError(f"noise must hold one tensor per sample ({b}), got {len(noise)}")
        noisy = torch.zeros_like(y)
        for i in range(b):
            idx = mask[i].nonzero().squeeze(1)
            if noise is None:
                z = torch.randn((idx.numel(), h, w), generator=generator, dtype=y.dtype, device=y.device)
            else:
                z = noise[i]
                if tuple(z.shape) != (idx.numel(), h, w):
                    raise ValueError(f"noise[{i}] must be ({idx.numel()}, {h}, {w}) for the "
                                     f"{idx.numel()} transmitted channels {idx.tolist()}, got {tuple(z.shape)}")
                z = z.to(device=y.device, dtype=y.dtype)
            noisy[i, idx] = y[i, idx] + z * self.noise_std
        return self._finish(y, noisy, mask, noise_std=self.noise_std)

    def __repr__(self) -> str:
        return (f"LegacyGescoChannel(snr_db_key={self.snr_db_key!r}, pool={self.pool!r}, "
                f"has_edges={self.has_edges}, noise_std={self.noise_std})")


class SemanticMapChannel(_SemanticBase):
    """GESCO's selection, denoising and re-expansion around a physical channel of :mod:`.analog`.

    Per sample, the transmitted channels (P_b, H, W) are one real payload: paired into complex
    symbols, power normalised to 1 per complex symbol, sent at Es/N0 = ``snr_db`` through
    ``channel``, equalised and unnormalised; then denoised with ``pool`` and re-expanded.

    Args:
        channel: an :class:`.analog.Channel` or a kind for :func:`.analog.make_channel`
            (``"awgn"``, ``"rayleigh"``, ``"rician"``, ``"none"``).
        pool: ``"fds"`` (default), ``"median"``, ``"mean"`` or ``"none"``.
        has_edges: whether the last channel of ``y`` is the instance-edge map.
        **channel_kwargs: passed to :func:`.analog.make_channel` when ``channel`` is a kind.

    Call: ``channel(y (B, C, H, W), snr_db (real number or (B,) tensor / array), generator=None)
    -> SemanticChannelOutput``.
    """

    def __init__(self, channel: Channel | str = "awgn", pool: str = "fds", has_edges: bool = True,
                 **channel_kwargs) -> None:
        super().__init__(pool, has_edges)
        if isinstance(channel, str):
            channel = make_channel(channel, **channel_kwargs)
        elif channel_kwargs:
            raise ValueError("channel keyword arguments are only used with a channel kind string")
        if not isinstance(channel, Channel):
            raise ValueError(f"channel must be an analog Channel or a kind, got {type(channel).__name__}")
        self.channel = channel

    def __call__(self, y: torch.Tensor, snr_db: SnrLike, generator: torch.Generator | None = None
                 ) -> SemanticChannelOutput:
        mask = transmitted_channels(y, self.has_edges)
        b, c, h, w = y.shape
        noise_var = snr_db_to_noise_var(snr_db, b, device=y.device)  # validates snr_db first
        if isinstance(snr_db, np.ndarray) and snr_db.ndim > 0:
            snr_db = torch.from_numpy(np.asarray(snr_db, dtype=np.float64))
        if isinstance(snr_db, torch.Tensor) and snr_db.ndim > 0:
            if snr_db.shape != (b,):
                raise ValueError(f"snr_db tensor must be a scalar or have shape ({b},), got {tuple(snr_db.shape)}")
            snrs: list[SnrLike] = [snr_db[i] for i in range(b)]
        else:
            snrs = [check_snr_db(snr_db)] * b
        noisy = torch.zeros_like(y)
        outputs: list[ChannelOutput | None] = []
        for i in range(b):
            idx = mask[i].nonzero().squeeze(1)
            if idx.numel() == 0:  # nothing to send (empty map without an edge channel)
                outputs.append(None)
                continue
            out = self.channel(y[i, idx][None], snrs[i], generator, pixels=h * w)
            noisy[i, idx] = out.received[0]
            outputs.append(out)
        if isinstance(self.channel, IdentityChannel):
            noise_var = torch.zeros_like(noise_var)
        return self._finish(y, noisy, mask, noise_var=noise_var, physical=outputs)

    def __repr__(self) -> str:
        return f"SemanticMapChannel({self.channel!r}, pool={self.pool!r}, has_edges={self.has_edges})"
