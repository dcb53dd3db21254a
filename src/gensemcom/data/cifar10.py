"""CIFAR-10 from its python-pickle release (``cifar-10-batches-py``), read from local files only.

Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009. The folder holds::

    root/data_batch_1 .. data_batch_5    training, 10,000 images each
    root/test_batch                      test, 10,000 images
    root/batches.meta                    label_names (optional; the standard names otherwise)

Each batch is a pickled dict with ``data`` (N, 3072) uint8 (the red, green and blue 32x32 planes,
row-major) and ``labels`` (N ints in 0..9), keys as bytes (the files were written by Python 2) or
str. The files are read with a restricted unpickler that only rebuilds NumPy arrays, lists and
plain values, so a tampered file cannot run code.

Items (the shared dataset convention of :mod:`gensemcom.data`): ``image`` (3, 32, 32) float32 in
[-1, 1], ``class`` () int64 (the key the trainer's LatentCondition reads), ``label`` (32, 32)
int64 filled with the class id (an image classification set seen as a one-class map, so sweeps that
expect maps work), ``path`` (``"cifar10/<split>/<index>"``).
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["CIFAR10", "CIFAR10_CLASSES", "read_cifar_batch", "write_cifar_batch"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_SPLITS = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}

_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"), ("copy_reg", "_reconstructor"),
            ("copyreg", "_reconstructor"), ("builtins", "object")}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch file")
        return super().find_class(module, name)


def _get(d: dict, key: str) -> Any:
    if key in d:
        return d[key]
    return d.get(key.encode())


def read_cifar_batch(path: str | Path, data: bytes | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One batch file (or its bytes, ``data``) -> ``(images (N, 32, 32, 3) uint8, labels (N,) int64)``.

    Raises:
        FileNotFoundError: the file is missing (naming it).
        ValueError: it is not a CIFAR batch (naming what is wrong).
    """
    path = Path(path)
    if data is None and not path.is_file():
        raise FileNotFoundError(f"CIFAR-10 batch file missing: {path}")
    try:
        if data is None:
            with open(path, "rb") as f:
                d = _SafeUnpickler(f, encoding="bytes").load()
        else:
            d = _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise ValueError(f"{path} is not a CIFAR-10 python batch file ({e})") from None
    if not isinstance(d, dict) or _get(d, "data") is None or _get(d, "labels") is None:
        raise ValueError(f"{path} is not a CIFAR-10 python batch file: no 'data'/'labels' entries")
    data = np.asarray(_get(d, "data"))
    labels = np.asarray(_get(d, "labels"), dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise ValueError(f"{path}: expected data (N, 3072) uint8 and N labels, got {data.shape} {data.dtype} "
                         f"and {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: labels must lie in 0..9")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def write_cifar_batch(path: str | Path, images: np.ndarray, labels: Sequence[int],
                      batch_label: str = "batch") -> None:
    """Write images (N, 32, 32, 3) uint8 and labels as a CIFAR-10 python batch file (bytes keys,
    pickle protocol 2, as the released files); used for test fixtures and small exports."""
    images = np.asarray(images, dtype=np.uint8)
    if images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise ValueError(f"images must be (N, 32, 32, 3), got {images.shape}")
    d = {b"batch_label": batch_label.encode(), b"labels": [int(v) for v in labels],
         b"data": images.transpose(0, 3, 1, 2).reshape(len(images), -1).copy(),
         b"filenames": [f"image_{i:05d}.png".encode() for i in range(len(images))]}
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)


def _read_tar(path: Path, split: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """The split's batches read straight from ``cifar-10-python.tar.gz`` (no extraction)."""
    try:
        tar = tarfile.open(path, "r:*")
    except tarfile.TarError as e:
        raise ValueError(f"{path} is neither a CIFAR-10 folder nor a readable tar archive ({e})") from None
    with tar:
        members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
        missing = [name for name in _SPLITS[split] if name not in members]
        if missing:
            raise FileNotFoundError(f"CIFAR-10 {split} split in {path} is incomplete: missing {', '.join(missing)}")
        return [read_cifar_batch(f"{path}:{name}", tar.extractfile(members[name]).read())
                for name in _SPLITS[split]]


class CIFAR10(Dataset):
    """CIFAR-10 from a local ``cifar-10-batches-py`` folder (no download).

    Args:
        root: the folder holding ``data_batch_*`` / ``test_batch`` (or its parent, which holds
            ``cifar-10-batches-py``), or the release archive ``cifar-10-python.tar.gz`` itself.
        split: ``"train"`` (50,000) or ``"test"`` (10,000).
        num_images: keep the first N (None: all).

    Raises:
        FileNotFoundError: a batch file of the split is missing (naming it).
    """

    num_classes = 10

    def __init__(self, root: str | Path, split: str = "train", num_images: int | None = None) -> None:
        root = Path(root)
        if split not in _SPLITS:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if root.is_file():
            parts = _read_tar(root, split)
        else:
            if not (root / _SPLITS["test"][0]).exists() and (root / "cifar-10-batches-py").is_dir():
                root = root / "cifar-10-batches-py"
            if not root.is_dir():
                raise FileNotFoundError(f"CIFAR-10 folder not found: {root} (unpack cifar-10-python.tar.gz "
                                        "there, or pass the .tar.gz itself)")
            missing = [name for name in _SPLITS[split] if not (root / name).is_file()]
            if missing:
                raise FileNotFoundError(f"CIFAR-10 {split} split in {root} is incomplete: missing {', '.join(missing)}")
            parts = [read_cifar_batch(root / name) for name in _SPLITS[split]]
        self.images = np.concatenate([p[0] for p in parts])
        self.labels = np.concatenate([p[1] for p in parts])
        if num_images is not None:
            self.images, self.labels = self.images[:num_images], self.labels[:num_images]
        self.split = split
        self.root = root
        self.classes = CIFAR10_CLASSES

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        img = torch.from_numpy(np.ascontiguousarray(self.images[index])).permute(2, 0, 1).float() / 127.5 - 1
        c = int(self.labels[index])
        return {"image": img, "class": torch.tensor(c, dtype=torch.int64),
                "label": torch.full(img.shape[1:], c, dtype=torch.int64), "path": f"cifar10/{self.split}/{index:05d}"}
