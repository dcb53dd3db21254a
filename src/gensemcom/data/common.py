"""Shared machinery of the image + label-map datasets: file discovery and pairing, loading,
the reference resize / crop / flip, seeding, and the base :class:`PairedSegmentationDataset`.

Every dataset item is a dict::

    image     (3, H, W) float32 in [-1, 1]
    label     (H, W) int64 class ids in [0, num_classes) (or ``ignore_index``)
    instance  (H, W) int64 instance ids (key absent when the dataset has no instances)
    path      str, the image file

Geometry follows GESCO/SDM (``guided_diffusion/image_datasets.py``): images are first halved with
``BOX`` while their short side is at least twice the target, then resized with ``BICUBIC``; label
and instance maps are resized from their full resolution with ``NEAREST`` to the image's final
size. The operations are:

* ``keep_aspect`` (:func:`resize_keep_aspect`): short side = ``size`` (Cityscapes, train and test).
* ``square`` (:func:`resize_square`): squash to ``size x size`` (COCO / ADE20K test).
* random crop (:func:`random_crop`): short side = a random integer in ``[size, ceil(size / 0.8)]``
  (256..320 for 256), then a random ``size x size`` crop (COCO / ADE20K train).
* center crop (:func:`center_crop`): short side = ``size``, central ``size x size`` crop.
* horizontal flip with probability 0.5 (:func:`random_hflip`), training only.

Randomness: the draws of one item are, in order, the crop's short side, the crop's top, the crop's
left and the flip. They come from a ``torch.Generator``: pass ``seed=`` to a dataset to derive one
per item from ``(seed, epoch, index)`` (deterministic, independent of access order and of the
number of DataLoader workers; call :meth:`PairedSegmentationDataset.set_epoch` to vary it per
epoch), or ``generator=`` to draw from one shared generator (depends on access order), or call
:meth:`PairedSegmentationDataset.get` with an explicit generator. With neither, torch's global RNG
is used (which DataLoader seeds per worker).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..runs import derive_seed  # noqa: F401  (re-exported)
from ..semantics import INSTANCE_MODES

__all__ = [
    "IMAGE_EXTENSIONS",
    "Sample",
    "derive_seed",
    "list_files",
    "keyed",
    "require_dir",
    "pair_samples",
    "load_rgb",
    "load_index_map",
    "box_halve",
    "resize_keep_aspect",
    "resize_square",
    "random_crop",
    "center_crop",
    "random_hflip",
    "image_to_tensor",
    "map_to_tensor",
    "PairedSegmentationDataset",
    "split_default",
]

#: file extensions treated as images when listing folders (lower case)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")



def _names(paths: Sequence[Path | str], root: Path | None = None, limit: int = 5) -> str:
    shown = []
    for p in list(paths)[:limit]:
        p = Path(p)
        try:
            shown.append(str(p.relative_to(root)) if root is not None else str(p))
        except ValueError:
            shown.append(str(p))
    more = f" ... ({len(paths) - limit} more)" if len(paths) > limit else ""
    return ", ".join(shown) + more


def require_dir(directory: Path | str, hint: str = "") -> Path:
    """``directory`` as a Path; FileNotFoundError naming it (and ``hint``) when it is not a folder."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} does not exist" + (f" ({hint})" if hint else ""))
    return directory


def list_files(directory: Path | str, suffixes: Iterable[str] = IMAGE_EXTENSIONS,
               recursive: bool = True, hint: str = "") -> list[Path]:
    """Sorted files under ``directory`` whose names end with one of ``suffixes`` (case-insensitive).

    Raises:
        FileNotFoundError: ``directory`` does not exist (the message names it).
    """
    directory = require_dir(directory, hint)
    suffixes = tuple(s.lower() for s in suffixes)
    if recursive:
        found = [Path(dp) / f for dp, _, files in os.walk(directory, followlinks=True) for f in files]
    else:
        found = [p for p in directory.iterdir() if p.is_file()]
    return sorted(p for p in found if p.name.lower().endswith(suffixes))


def keyed(files: Iterable[Path], root: Path, suffix: str | None = None) -> dict[str, Path]:
    """Map each file to its key: the path relative to ``root`` without ``suffix`` (or without its
    extension when ``suffix`` is None), in POSIX form. Files not ending in ``suffix`` are skipped.

    Raises:
        ValueError: two files give the same key (e.g. ``a.jpg`` and ``a.png``).
    """
    out: dict[str, Path] = {}
    for f in files:
        rel = f.relative_to(root).as_posix()
        if suffix is None:
            key = rel[: -len(f.suffix)] if f.suffix else rel
        elif rel.lower().endswith(suffix.lower()):
            key = rel[: -len(suffix)]
        else:
            continue
        if key in out:
            raise ValueError(f"two files under {root} share the key {key!r}: {out[key].name} and {f.name}")
        out[key] = f
    return out


@dataclass(frozen=True)
class Sample:
    """The files of one dataset item (``instance`` None when the dataset has no instances)."""

    key: str
    image: Path
    label: Path
    instance: Path | None = None


def pair_samples(images: dict[str, Path], labels: dict[str, Path],
                 instances: dict[str, Path] | None = None, *, image_root: Path | None = None,
                 label_root: Path | None = None, instance_root: Path | None = None,
                 what: str = "dataset") -> list[Sample]:
    """Pair files by key (see :func:`keyed`), sorted by key.

    Raises:
        FileNotFoundError: no images, or images without a label (or instance) file, or label /
            instance files without an image; the message counts and names them.
    """
    if not images:
        raise FileNotFoundError(f"{what}: no images found" + (f" under {image_root}" if image_root else ""))
    problems = []
    for kind, files, root in (("label", labels, label_root), ("instance", instances, instance_root)):
        if files is None:
            continue
        missing = sorted(k for k in images if k not in files)
        if missing:
            problems.append(f"{len(missing)} image{'s' if len(missing) > 1 else ''} "
                            f"{'have' if len(missing) > 1 else 'has'} no {kind} file: "
                            f"{_names([images[k] for k in missing], image_root)}")
        orphans = sorted(k for k in files if k not in images)
        if orphans:
            problems.append(f"{len(orphans)} {kind} file{'s' if len(orphans) > 1 else ''} "
                            f"{'have' if len(orphans) > 1 else 'has'} no image: "
                            f"{_names([files[k] for k in orphans], root)}")
    if problems:
        raise FileNotFoundError(f"{what}: " + "; ".join(problems))
    return [Sample(k, images[k], labels[k], instances[k] if instances is not None else None)
            for k in sorted(images)]


# --------------------------------------------------------------------------------------------
# loading


def load_rgb(path: Path | str) -> Image.Image:
    """Open an image file as an RGB PIL image (fully loaded, file closed)."""
    with Image.open(path) as im:
        im.load()
        return im.convert("RGB")


def load_index_map(path: Path | str, saturate_8bit: bool = False) -> Image.Image:
    """Open a label or instance PNG as a 32-bit integer ``"I"`` PIL image at full precision.

    Accepts 8-bit (``"L"``, ``"P"``: the palette *indices* are the ids), 16-bit (``"I;16"``),
    32-bit (``"I"``) and binary images, and RGB images whose three channels are equal.

    Args:
        saturate_8bit: clip ids to [0, 255] as the reference's ``convert("L")`` does (see
            :func:`gensemcom.semantics.saturate_instances_8bit`).

    Raises:
        ValueError: a colour-coded (RGB with differing channels) or floating-point map.
    """
    with Image.open(path) as im:
        im.load()
        mode = im.mode
        if mode in ("L", "P", "1"):
            arr = np.asarray(im if mode != "1" else im.convert("L"), dtype=np.int64)
        elif mode.startswith("I"):
            arr = np.asarray(im.convert("I") if mode != "I" else im, dtype=np.int64)
        elif mode in ("RGB", "RGBA"):
            rgb = np.asarray(im.convert("RGB"), dtype=np.int64)
            if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()):
                raise ValueError(
                    f"{path} is a colour-coded {mode} image; expected a single-channel index map "
                    "(one class / instance id per pixel). Convert it first (e.g. the full ADE20K "
                    "release encodes classes as R/10*256+G: use the ADEChallengeData2016 "
                    "annotations instead).")
            arr = rgb[..., 0]
        else:
            raise ValueError(f"{path}: unsupported mode {mode!r} for a label/instance map; expected "
                             "an 8-, 16- or 32-bit integer index image")
    if saturate_8bit:
        arr = np.clip(arr, 0, 255)
    if arr.size and (arr.min() < -(2 ** 31) or arr.max() >= 2 ** 31):
        raise ValueError(f"{path}: ids do not fit in 32 bits")
    return Image.fromarray(arr.astype(np.int32))  # mode "I"


# --------------------------------------------------------------------------------------------
# geometry (PIL in, PIL out; maps are resized with NEAREST from their original resolution)

Maps = list  # list[Image.Image | None]


def box_halve(image: Image.Image, min_side: int) -> Image.Image:
    """Halve the image with ``BOX`` filtering while its short side is >= ``2 * min_side``."""
    while min(image.size) >= 2 * min_side:
        image = image.resize(tuple(s // 2 for s in image.size), resample=Image.BOX)
    return image


def _maps_to(maps: Sequence[Image.Image | None], size_wh: tuple[int, int]) -> Maps:
    return [None if m is None else m.resize(size_wh, resample=Image.NEAREST) for m in maps]


def _short_side_to(image: Image.Image, short: int) -> Image.Image:
    image = box_halve(image, short)
    scale = short / min(image.size)
    return image.resize(tuple(round(s * scale) for s in image.size), resample=Image.BICUBIC)


def resize_keep_aspect(image: Image.Image, maps: Sequence[Image.Image | None],
                       size: int) -> tuple[Image.Image, Maps]:
    """Short side -> ``size`` keeping the aspect ratio (2048x1024 -> 512x256 for 256)."""
    image = _short_side_to(image, size)
    return image, _maps_to(maps, image.size)


def resize_square(image: Image.Image, maps: Sequence[Image.Image | None],
                  size: int | tuple[int, int]) -> tuple[Image.Image, Maps]:
    """Squash to ``size x size`` (or ``(height, width)``), ignoring the aspect ratio."""
    h, w = (size, size) if isinstance(size, int) else size
    image = box_halve(image, min(h, w))
    image = image.resize((w, h), resample=Image.BICUBIC)
    return image, _maps_to(maps, image.size)


def _crop(image: Image.Image, maps: Sequence[Image.Image | None], top: int, left: int,
          size: int) -> tuple[Image.Image, Maps]:
    box = (left, top, left + size, top + size)
    return image.crop(box), [None if m is None else m.crop(box) for m in maps]


def _randint(lo: int, hi: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [lo, hi] (inclusive)."""
    return int(torch.randint(lo, hi + 1, (1,), generator=generator).item())


def random_crop(image: Image.Image, maps: Sequence[Image.Image | None], size: int,
                generator: torch.Generator | None, min_crop_frac: float = 0.8,
                max_crop_frac: float = 1.0) -> tuple[Image.Image, Maps]:
    """The reference ``random_crop_arr``: short side -> a random integer in
    ``[ceil(size / max_crop_frac), ceil(size / min_crop_frac)]``, then a random ``size x size`` crop.
    Draws: short side, top, left (in that order) from ``generator``."""
    short = _randint(math.ceil(size / max_crop_frac), math.ceil(size / min_crop_frac), generator)
    image = _short_side_to(image, short)
    maps = _maps_to(maps, image.size)
    w, h = image.size
    top = _randint(0, h - size, generator)
    left = _randint(0, w - size, generator)
    return _crop(image, maps, top, left, size)


def center_crop(image: Image.Image, maps: Sequence[Image.Image | None],
                size: int) -> tuple[Image.Image, Maps]:
    """The reference ``center_crop_arr``: short side -> ``size``, then the central square."""
    image = _short_side_to(image, size)
    maps = _maps_to(maps, image.size)
    w, h = image.size
    return _crop(image, maps, (h - size) // 2, (w - size) // 2, size)


def random_hflip(image: Image.Image, maps: Sequence[Image.Image | None],
                 generator: torch.Generator | None, p: float = 0.5) -> tuple[Image.Image, Maps]:
    """Mirror left-right with probability ``p`` (one draw from ``generator``)."""
    if torch.rand((), generator=generator).item() < p:
        t = Image.Transpose.FLIP_LEFT_RIGHT
        return image.transpose(t), [None if m is None else m.transpose(t) for m in maps]
    return image, list(maps)


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) float32 in [-1, 1] (``x / 127.5 - 1``)."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(arr / 127.5 - 1.0).permute(2, 0, 1).contiguous()


def map_to_tensor(m: Image.Image | np.ndarray) -> torch.Tensor:
    """Index map (PIL ``"I"`` image or array) -> (H, W) int64."""
    return torch.from_numpy(np.asarray(m, dtype=np.int64).copy())


# --------------------------------------------------------------------------------------------
# base dataset

RESIZE_MODES = ("keep_aspect", "square", "none")
CROP_MODES = ("random", "center", "none")


class PairedSegmentationDataset(Dataset):
    """Image + label (+ instance) files, loaded, resized, augmented and returned as tensors.

    Subclasses find the files (a list of :class:`Sample`) and may override :meth:`transform_label`.

    Args:
        samples: the files of each item.
        num_classes: label values must lie in ``[0, num_classes)`` (or equal ``ignore_index``)
            after :meth:`transform_label`; otherwise :meth:`get` raises a ValueError naming the file.
        size: target size (see ``resize`` / ``crop``); None keeps the original size.
        resize: ``"keep_aspect"`` (short side = size), ``"square"`` (size x size) or ``"none"``;
            used when ``crop`` is ``"none"``.
        crop: ``"random"`` (reference random crop), ``"center"`` or ``"none"``.
        random_flip: mirror left-right with probability 0.5.
        seed: derive each item's generator from ``(seed, epoch, index)``.
        generator: one shared generator for all draws (order dependent); not with ``seed``.
        instance_mode: ``"exact"`` (full-precision instance ids) or ``"reference_8bit"`` (ids
            clipped to 255 at load, as the reference).
        ignore_index: a label value allowed outside ``[0, num_classes)``.
    """

    #: classes of the dataset (set by subclasses or the constructor)
    num_classes: int = 0

    def __init__(self, samples: Sequence[Sample], *, num_classes: int, size: int | None,
                 resize: str = "keep_aspect", crop: str = "none", random_flip: bool = False,
                 seed: int | None = None, generator: torch.Generator | None = None,
                 instance_mode: str = "exact", ignore_index: int | None = None) -> None:
        super().__init__()
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
        if crop not in CROP_MODES:
            raise ValueError(f"crop must be one of {CROP_MODES}, got {crop!r}")
        if instance_mode not in INSTANCE_MODES:
            raise ValueError(f"instance_mode must be one of {INSTANCE_MODES}, got {instance_mode!r}")
        if size is not None and size < 1:
            raise ValueError(f"size must be a positive integer or None, got {size}")
        if size is None and (crop != "none" or resize != "none"):
            raise ValueError("size=None keeps the original size: it needs resize='none' and crop='none'")
        if seed is not None and generator is not None:
            raise ValueError("give either seed (per-item generators) or generator (one shared), not both")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.samples = list(samples)
        self.num_classes = num_classes
        self.size = size
        self.resize = resize
        self.crop = crop
        self.random_flip = random_flip
        self.seed = seed
        self.generator = generator
        self.instance_mode = instance_mode
        self.ignore_index = ignore_index
        self.epoch = 0

    @property
    def has_instances(self) -> bool:
        """Whether items carry an ``instance`` map."""
        return bool(self.samples) and self.samples[0].instance is not None

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Change the per-item augmentation draws (with ``seed``) for a new epoch."""
        self.epoch = int(epoch)

    def generator_for(self, index: int) -> torch.Generator | None:
        """The generator :meth:`__getitem__` uses for item ``index``."""
        if self.seed is not None:
            return torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, index))
        return self.generator

    def __getitem__(self, index: int) -> dict:
        return self.get(index, self.generator_for(index))

    def transform_label(self, label: np.ndarray) -> np.ndarray:
        """Dataset-specific mapping of the stored label values (identity here); (H, W) int64."""
        return label

    def get(self, index: int, generator: torch.Generator | None = None) -> dict:
        """Item ``index`` with its random draws taken from ``generator`` (torch's global RNG if None).

        Returns:
            dict with ``image`` (3, H, W) float32 in [-1, 1], ``label`` (H, W) int64, ``instance``
            (H, W) int64 (only when the dataset has instances) and ``path`` (str).
        """
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        s = self.samples[index]
        image = load_rgb(s.image)
        maps = [load_index_map(s.label)]
        if s.instance is not None:
            maps.append(load_index_map(s.instance, saturate_8bit=self.instance_mode == "reference_8bit"))
        for m, p in zip(maps, (s.label, s.instance)):
            if m.size != image.size:
                raise ValueError(f"{p} is {m.size[0]}x{m.size[1]} but its image {s.image} is "
                                 f"{image.size[0]}x{image.size[1]} (width x height)")
        if self.crop == "random":
            image, maps = random_crop(image, maps, self.size, generator)
        elif self.crop == "center":
            image, maps = center_crop(image, maps, self.size)
        elif self.resize == "keep_aspect":
            image, maps = resize_keep_aspect(image, maps, self.size)
        elif self.resize == "square":
            image, maps = resize_square(image, maps, self.size)
        if self.random_flip:
            image, maps = random_hflip(image, maps, generator)
        label = self.transform_label(np.asarray(maps[0], dtype=np.int64))
        self._check_label(label, s.label)
        out = {"image": image_to_tensor(image), "label": map_to_tensor(label)}
        if s.instance is not None:
            out["instance"] = map_to_tensor(maps[1])
        out["path"] = str(s.image)
        return out

    def _check_label(self, label: np.ndarray, path: Path) -> None:
        bad = (label < 0) | (label >= self.num_classes)
        if self.ignore_index is not None:
            bad &= label != self.ignore_index
        if bad.any():
            values = np.unique(label[bad])
            shown = ", ".join(str(v) for v in values[:8])
            raise ValueError(f"{path}: label values {shown}{' ...' if values.size > 8 else ''} lie "
                             f"outside [0, {self.num_classes - 1}] (num_classes={self.num_classes}"
                             + (f", ignore_index={self.ignore_index}" if self.ignore_index is not None else "")
                             + ")")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({len(self)} items, num_classes={self.num_classes}, "
                f"size={self.size}, resize={self.resize!r}, crop={self.crop!r}, "
                f"random_flip={self.random_flip}, instances={self.has_instances})")


def split_default(train: bool | None, split: str, train_splits: Sequence[str] = ("train",)) -> bool:
    """``train`` if given, else whether ``split`` is a training split."""
    return (split in train_splits) if train is None else bool(train)

