"""Image tensors <-> PNG files at the package's boundaries (images in [-1, 1] inside)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .models.io import atomic_write

__all__ = ["to_uint8", "save_png"]


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8."""
    return ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def save_png(path: str | Path, array: np.ndarray | torch.Tensor) -> None:
    """Write an (H, W, 3) uint8 array (or tensor) as PNG, atomically."""
    if isinstance(array, torch.Tensor):
        array = array.cpu().numpy()
    atomic_write(path, lambda p: Image.fromarray(array).save(p, format="PNG"))
