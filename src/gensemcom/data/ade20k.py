"""ADE20K scene parsing (150 classes + "unlabelled" = 151), no instances.

Two layouts are accepted (``layout="auto"`` picks the one present):

``"gesco"`` (GESCO's loader)::

    root/{training,validation}/**/<name>.jpg
    root/{training,validation}/**/<name>_seg.png

``"sdm"`` (SDM / ``ADEChallengeData2016``)::

    root/images/{training,validation}/<name>.jpg
    root/annotations/{training,validation}/<name>.png

The label PNGs must be single-channel index maps (0 = unlabelled, 1..150 = classes), as in
``ADEChallengeData2016``. The label transform is the reference's: ``value - 1`` in uint8 arithmetic
(so 0 -> 255), then every value > 150 -> 150; i.e. classes 1..150 -> 0..149 and unlabelled -> 150.

Geometry as the reference: training uses the random crop (short side in [size, ceil(size/0.8)],
random ``size x size`` crop; ``random_crop=False`` -> centre crop) and flip p=0.5; evaluation
squashes to ``size x size``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .common import PairedSegmentationDataset, keyed, list_files, pair_samples, split_default

__all__ = ["ADE20K", "ADE20K_NUM_CLASSES", "ade20k_label_transform"]

ADE20K_NUM_CLASSES = 151
_SPLITS = {"train": "training", "val": "validation", "training": "training", "validation": "validation"}


def ade20k_label_transform(label: np.ndarray) -> np.ndarray:
    """Stored ADE20K values -> class ids: ``(v - 1) mod 256``, then values > 150 -> 150."""
    out = (np.asarray(label, dtype=np.int64) - 1) % 256
    out[out > 150] = 150
    return out


class ADE20K(PairedSegmentationDataset):
    """ADE20K images and 151-class label maps.

    Args:
        root: dataset folder (either layout, see the module docstring).
        split: ``"train"``/``"training"`` or ``"val"``/``"validation"``.
        size: square output side (256).
        train: augment; default: the training split.
        random_crop: random crop when training (default True), else centre crop.
        random_flip: flip when training (default: ``train``).
        seed, generator: randomness of the augmentation (see :mod:`gensemcom.data.common`).
        layout: ``"auto"``, ``"gesco"`` or ``"sdm"``.

    Items: ``image`` (3, size, size) in [-1, 1], ``label`` (size, size) int64 in [0, 150], ``path``.
    """

    num_classes = ADE20K_NUM_CLASSES

    def __init__(self, root: str | Path, split: str = "train", *, size: int = 256,
                 train: bool | None = None, random_crop: bool = True, random_flip: bool | None = None,
                 seed: int | None = None, generator: torch.Generator | None = None,
                 layout: str = "auto") -> None:
        if split not in _SPLITS:
            raise ValueError(f"ADE20K split must be one of {sorted(_SPLITS)}, got {split!r}")
        if layout not in ("auto", "gesco", "sdm"):
            raise ValueError(f"layout must be 'auto', 'gesco' or 'sdm', got {layout!r}")
        root = Path(root)
        sub = _SPLITS[split]
        train = split_default(train, sub, ("training",))
        if layout == "auto":
            layout = "sdm" if (root / "images" / sub).is_dir() else "gesco"
        if layout == "gesco":
            folder = root / sub
            files = list_files(folder, (".jpg", "_seg.png"),
                               hint=f"ADE20K (GESCO layout: {sub}/*.jpg + *_seg.png; or the SDM "
                                    f"layout images/{sub}, annotations/{sub})")
            images = keyed([f for f in files if f.suffix.lower() == ".jpg"], folder)
            labels = keyed(files, folder, "_seg.png")
            img_root = lbl_root = folder
        else:
            img_root, lbl_root = root / "images" / sub, root / "annotations" / sub
            images = keyed(list_files(img_root, (".jpg", ".jpeg", ".png"), hint="ADE20K images"), img_root)
            labels = keyed(list_files(lbl_root, (".png",), hint="ADE20K annotations"), lbl_root)
        samples = pair_samples(images, labels, image_root=img_root, label_root=lbl_root,
                               what=f"ADE20K {sub}")
        super().__init__(samples, num_classes=ADE20K_NUM_CLASSES, size=size, resize="square",
                         crop=("random" if random_crop else "center") if train else "none",
                         random_flip=train if random_flip is None else random_flip, seed=seed,
                         generator=generator)
        self.root, self.split, self.train, self.layout = root, sub, train, layout

    def transform_label(self, label: np.ndarray) -> np.ndarray:
        return ade20k_label_transform(label)
