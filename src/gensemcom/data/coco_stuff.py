"""COCO-Stuff (182 classes + "unlabelled" = 183) with instance maps, in the SDM / GESCO layout::

    root/images/{train2017,val2017}/<id>.jpg
    root/labels/{train2017,val2017}/<id>.png        (0..181, 255 = unlabelled)
    root/images/{train_inst,val_inst}/<id>.png      (instance maps; sic: under images/)

Label 255 becomes class 182. Files are paired by their stem (the reference pairs sorted lists).
Geometry as ADE20K: training random crop + flip, evaluation squash to ``size x size``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .common import PairedSegmentationDataset, keyed, list_files, pair_samples, split_default

__all__ = ["COCOStuff", "COCO_STUFF_NUM_CLASSES", "coco_label_transform"]

COCO_STUFF_NUM_CLASSES = 183
_SPLITS = {"train": ("train2017", "train_inst"), "val": ("val2017", "val_inst")}


def coco_label_transform(label: np.ndarray) -> np.ndarray:
    """Stored COCO-Stuff values -> class ids: 255 (unlabelled) -> 182, the rest unchanged."""
    out = np.array(label, dtype=np.int64)
    out[out == 255] = 182
    return out


class COCOStuff(PairedSegmentationDataset):
    """COCO-Stuff images, 183-class label maps and instance maps.

    Args:
        root: dataset folder (see the module docstring).
        split: ``"train"`` or ``"val"``.
        size: square output side (256).
        train: augment; default: ``split == "train"``.
        random_crop: random crop when training (default True), else centre crop.
        random_flip: flip when training (default: ``train``).
        seed, generator: randomness of the augmentation (see :mod:`gensemcom.data.common`).
        instances: load the instance maps; False drops the ``instance`` key (and needs no folder).
        instance_mode: ``"exact"`` or ``"reference_8bit"`` (ids clipped to 255 as the reference).

    Items: ``image`` (3, size, size) in [-1, 1], ``label`` (size, size) int64 in [0, 182],
    ``instance`` (size, size) int64, ``path``.
    """

    num_classes = COCO_STUFF_NUM_CLASSES

    def __init__(self, root: str | Path, split: str = "train", *, size: int = 256,
                 train: bool | None = None, random_crop: bool = True, random_flip: bool | None = None,
                 seed: int | None = None, generator: torch.Generator | None = None,
                 instances: bool = True, instance_mode: str = "exact") -> None:
        if split not in _SPLITS:
            raise ValueError(f"COCO-Stuff split must be 'train' or 'val', got {split!r}")
        root = Path(root)
        sub, inst_sub = _SPLITS[split]
        train = split_default(train, split)
        img_root, lbl_root, inst_root = root / "images" / sub, root / "labels" / sub, root / "images" / inst_sub
        images = keyed(list_files(img_root, (".jpg", ".jpeg", ".png"), hint="COCO-Stuff images"), img_root)
        labels = keyed(list_files(lbl_root, (".png",), hint="COCO-Stuff label maps"), lbl_root)
        inst = None
        if instances:
            inst = keyed(list_files(inst_root, (".png",),
                                    hint="COCO instance maps; pass instances=False to go without"),
                         inst_root)
        samples = pair_samples(images, labels, inst, image_root=img_root, label_root=lbl_root,
                               instance_root=inst_root, what=f"COCO-Stuff {split}")
        super().__init__(samples, num_classes=COCO_STUFF_NUM_CLASSES, size=size, resize="square",
                         crop=("random" if random_crop else "center") if train else "none",
                         random_flip=train if random_flip is None else random_flip, seed=seed,
                         generator=generator, instance_mode=instance_mode)
        self.root, self.split, self.train = root, split, train

    def transform_label(self, label: np.ndarray) -> np.ndarray:
        return coco_label_transform(label)
