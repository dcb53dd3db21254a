"""Fashion-MNIST from its IDX files, as Debian's ``dataset-fashion-mnist`` package installs them.

Xiao, Rasul, Vollgraf, "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning
Algorithms", arXiv 1708.07747 (MIT licence): 70,000 grayscale 28x28 images of 10 clothing classes.
``apt-get install dataset-fashion-mnist`` puts the four files in ``/usr/share/datasets/fashion-mnist``
(:data:`DEBIAN_ROOT`)::

    train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz   60,000
    t10k-images-idx3-ubyte.gz   t10k-labels-idx1-ubyte.gz    10,000

(gzipped or not). Nothing is downloaded. Images are made 32x32 for the 32x32 networks by zero
padding (2 pixels each side; the background is black, so this adds only background) or by
bilinear resizing, and repeated to 3 channels.

Items (the shared dataset convention): ``image`` (C, 32, 32) float32 in [-1, 1], ``class``
() int64, ``label`` (32, 32) int64 filled with the class id, ``path``.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = ["FashionMNIST", "FASHION_MNIST_CLASSES", "DEBIAN_ROOT", "read_idx", "write_idx"]

DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                         "bag", "ankle boot")
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _open(path: Path):
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (``.gz`` or raw) of unsigned bytes -> array of its shape, uint8."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file missing: {path}")
    with _open(path) as f:
        head = f.read(4)
        if len(head) != 4 or head[:2] != b"\x00\x00" or head[2] != 0x08:
            raise ValueError(f"{path} is not an unsigned-byte IDX file (magic {head!r})")
        ndim = head[3]
        dims = struct.unpack(f">{ndim}I", f.read(4 * ndim))
        data = np.frombuffer(bytearray(f.read()), dtype=np.uint8)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} ({int(np.prod(dims))} bytes) but holds {data.size}")
    return data.reshape(dims)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file (for fixtures)."""
    array = np.asarray(array, dtype=np.uint8)
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.tobytes())


def _find(root: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"Fashion-MNIST file {stem}[.gz] not found in {root}"
                            + (" (install it with `apt-get install dataset-fashion-mnist`)"
                               if root == DEBIAN_ROOT else ""))


class FashionMNIST(Dataset):
    """Fashion-MNIST made 32x32 (no download).

    Args:
        root: the folder with the IDX files (default: Debian's :data:`DEBIAN_ROOT`).
        split: ``"train"`` (60,000) or ``"test"`` (10,000).
        size: output side (32).
        resize: ``"pad"`` (zero-pad 28 -> 32, centred; needs ``size >= 28``) or ``"bilinear"``.
        channels: 3 (gray repeated, for RGB networks) or 1.
        num_images: keep the first N (None: all).
    """

    num_classes = 10

    def __init__(self, root: str | Path | None = None, split: str = "train", size: int = 32,
                 resize: str = "pad", channels: int = 3, num_images: int | None = None) -> None:
        root = Path(root) if root is not None else DEBIAN_ROOT
        if split not in _FILES:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if resize not in ("pad", "bilinear"):
            raise ValueError(f"resize must be 'pad' or 'bilinear', got {resize!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if not root.is_dir():
            raise FileNotFoundError(f"Fashion-MNIST folder not found: {root}"
                                    + (" (install it with `apt-get install dataset-fashion-mnist`)"
                                       if root == DEBIAN_ROOT else ""))
        images = read_idx(_find(root, _FILES[split][0]))
        labels = read_idx(_find(root, _FILES[split][1])).astype(np.int64)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"Fashion-MNIST {split} files disagree: images {images.shape}, labels {labels.shape}")
        if resize == "pad" and (size < images.shape[1] or size < images.shape[2]):
            raise ValueError(f"resize='pad' needs size >= {max(images.shape[1:])}, got {size}")
        if num_images is not None:
            images, labels = images[:num_images], labels[:num_images]
        self.images, self.labels = images, labels
        self.split, self.size, self.resize, self.channels, self.root = split, size, resize, channels, root
        self.classes = FASHION_MNIST_CLASSES

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        img = torch.from_numpy(np.ascontiguousarray(self.images[index])).float()[None] / 255.0
        h, w = img.shape[1:]
        if self.resize == "pad":
            top, left = (self.size - h) // 2, (self.size - w) // 2
            img = F.pad(img, (left, self.size - w - left, top, self.size - h - top))
        elif (h, w) != (self.size, self.size):
            img = F.interpolate(img[None], size=(self.size, self.size), mode="bilinear", align_corners=False,
                                antialias=True)[0]
        img = (img * 2 - 1).expand(self.channels, -1, -1).contiguous()
        c = int(self.labels[index])
        return {"image": img, "class": torch.tensor(c, dtype=torch.int64),
                "label": torch.full((self.size, self.size), c, dtype=torch.int64),
                "path": f"fashion-mnist/{self.split}/{index:05d}"}
