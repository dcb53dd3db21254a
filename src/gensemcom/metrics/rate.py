"""Rate and bandwidth accounting.

Conventions:

* **Pixels** are spatial positions: an ``H x W`` RGB image has ``H * W`` pixels (not ``3 * H * W``).
* **bits per pixel (bpp)** = (bits sent for the image) / ``(H * W)``; used for digital schemes that
  transmit a bit stream (e.g. a compressed semantic map).
* A **channel use** is one complex symbol sent over the channel (two real dimensions, I and Q).
  **Channel uses per pixel** = (complex symbols sent for the image) / ``(H * W)``.
* The **bandwidth ratio** (bandwidth compression ratio) of deep joint source-channel coding,
  Bourtsoulatze, Kurka & Gunduz, "Deep Joint Source-Channel Coding for Wireless Image
  Transmission", IEEE TCCN 2019: ``k / n`` with ``k`` the number of complex channel uses and
  ``n = channels * H * W`` the number of real source values (``n = 3 * H * W`` for RGB). E.g. a
  32x32 RGB image (``n = 3072``) sent in ``k = 256`` channel uses has ratio 1/12.

Every function accepts a Python number (returns a float) or a tensor / array of per-image counts
(returns a float64 tensor of the same shape). Counts must be non-negative and sizes positive integers.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import torch
from torch import Tensor

__all__ = ["bits_per_pixel", "channel_uses_per_pixel", "bandwidth_ratio"]

Count = Union[int, float, Tensor, np.ndarray]


def _check_size(what: str, **sizes: int) -> None:
    for name, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
            raise ValueError(f"{what}: {name} must be a positive integer, got {v!r}")


def _ratio(what: str, count: Count, denominator: int) -> Union[float, Tensor]:
    if isinstance(count, (Tensor, np.ndarray)):
        t = torch.as_tensor(count).to(torch.float64)
        if (t < 0).any():
            raise ValueError(f"{what}: counts must be non-negative, got minimum {t.min().item()}")
        return t / denominator
    if isinstance(count, bool) or not isinstance(count, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what}: count must be a number, tensor or array, got {type(count).__name__}")
    if count < 0:
        raise ValueError(f"{what}: count must be non-negative, got {count}")
    return float(count) / denominator


def bits_per_pixel(bits: Count, height: int, width: int) -> Union[float, Tensor]:
    """``bits / (height * width)``: bits spent per spatial pixel."""
    _check_size("bits_per_pixel", height=height, width=width)
    return _ratio("bits_per_pixel", bits, height * width)


def channel_uses_per_pixel(uses: Count, height: int, width: int) -> Union[float, Tensor]:
    """``uses / (height * width)``: complex channel symbols per spatial pixel."""
    _check_size("channel_uses_per_pixel", height=height, width=width)
    return _ratio("channel_uses_per_pixel", uses, height * width)


def bandwidth_ratio(channel_uses: Count, height: int, width: int, channels: int = 3) -> Union[float, Tensor]:
    """``k / n`` with ``k = channel_uses`` (complex) and ``n = channels * height * width`` (real values)."""
    _check_size("bandwidth_ratio", height=height, width=width, channels=channels)
    return _ratio("bandwidth_ratio", channel_uses, channels * height * width)
