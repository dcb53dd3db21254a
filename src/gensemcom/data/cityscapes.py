"""Cityscapes (``gtFine``) with raw ``labelIds`` (35 classes) and instance ids, as GESCO uses it.

Layout (the official download)::

    root/leftImg8bit/{split}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    root/gtFine/{split}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
    root/gtFine/{split}/<city>/<city>_<seq>_<frame>_gtFine_instanceIds.png

Labels are the raw labelIds 0..33 (not the 19 trainIds); ``num_classes`` is 35 as in GESCO/SDM
(id 34 is reserved and never occurs). Instance ids are ``labelId * 1000 + k`` for objects annotated
per instance (person, rider, car, truck, bus, train, motorcycle, bicycle, ...) and the plain labelId
elsewhere; they are 16-bit PNGs read here at full precision (``instance_mode="exact"``), or clipped
to 255 as the reference's 8-bit loading (``instance_mode="reference_8bit"``).

Files are paired by their ``<city>/<city>_<seq>_<frame>`` stem. (The reference pairs three
independently sorted file lists by position, which silently mis-pairs when one file is missing.)

Geometry as the reference for train and test: short side -> ``size`` keeping the aspect ratio
(2048x1024 -> 512x256 for ``size=256``), no crop; flip p=0.5 when training.

:class:`CityscapesTrainIds` gives the 19 evaluation classes (trainIds 0..18, every other labelId
-> 255 = ignore), as SPIC (Pezone et al., arXiv 2310.15737) reads ``*_gtFine_labelTrainIds.png``;
the mapping (:data:`LABEL_TO_TRAIN_ID`, :func:`to_train_ids`) is cityscapesScripts' ``labels.py``,
which is how those files are made, so the raw labelIds are read and mapped here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .common import PairedSegmentationDataset, keyed, list_files, pair_samples, split_default

__all__ = ["Cityscapes", "CITYSCAPES_NUM_CLASSES", "CityscapesTrainIds", "CITYSCAPES_TRAIN_CLASSES",
           "LABEL_TO_TRAIN_ID", "TRAIN_ID_IGNORE", "to_train_ids"]

CITYSCAPES_NUM_CLASSES = 35

#: the 19 evaluation classes (trainIds 0..18)
CITYSCAPES_TRAIN_CLASSES = 19
#: the trainId of every pixel that is not one of the 19 classes
TRAIN_ID_IGNORE = 255
#: labelId -> trainId for labelIds 0..33 (cityscapesScripts ``labels.py``; licence plate, id -1,
#: never occurs in gtFine labelIds files); 255 = ignore
LABEL_TO_TRAIN_ID: tuple[int, ...] = (
    255, 255, 255, 255, 255, 255, 255, 0, 1, 255, 255, 2, 3, 4, 255, 255, 255, 5, 255, 6, 7, 8, 9, 10,
    11, 12, 13, 14, 15, 255, 255, 16, 17, 18,
)


def to_train_ids(label_ids: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Cityscapes labelIds (0..33; 34 and above, e.g. the reserved 34, count as ignore) -> trainIds
    0..18 with 255 for ignore; same type and shape as the input (int64)."""
    table = np.array(LABEL_TO_TRAIN_ID + (255,) * (256 - len(LABEL_TO_TRAIN_ID)), dtype=np.int64)
    if isinstance(label_ids, torch.Tensor):
        ids = label_ids.long()
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) > 255):
            raise ValueError(f"Cityscapes labelIds lie in [0, 255], got [{int(ids.min())}, {int(ids.max())}]")
        return torch.from_numpy(table).to(ids.device)[ids]
    ids = np.asarray(label_ids).astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() > 255):
        raise ValueError(f"Cityscapes labelIds lie in [0, 255], got [{ids.min()}, {ids.max()}]")
    return table[ids]

_IMAGE_SUFFIX = "_leftImg8bit.png"
_LABEL_SUFFIX = "_gtFine_labelIds.png"
_INSTANCE_SUFFIX = "_gtFine_instanceIds.png"


class Cityscapes(PairedSegmentationDataset):
    """Cityscapes images with labelIds and instance ids.

    Args:
        root: the folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        size: short side of the output (256 -> 256x512 images); None keeps 1024x2048.
        train: augment (flip); default: ``split == "train"``.
        random_flip: override the flip (default: ``train``).
        seed, generator: randomness of the augmentation (see :mod:`gensemcom.data.common`).
        instances: load the instance maps (the ``instance`` key); False drops them.
        instance_mode: ``"exact"`` (full 16-bit ids) or ``"reference_8bit"`` (clipped to 255).

    Items: ``image`` (3, H, W) in [-1, 1], ``label`` (H, W) int64 in [0, 34], ``instance`` (H, W)
    int64, ``path``.
    """

    num_classes = CITYSCAPES_NUM_CLASSES

    def __init__(self, root: str | Path, split: str = "train", *, size: int | None = 256,
                 train: bool | None = None, random_flip: bool | None = None, seed: int | None = None,
                 generator: torch.Generator | None = None, instances: bool = True,
                 instance_mode: str = "exact") -> None:
        if split not in ("train", "val", "test"):
            raise ValueError(f"Cityscapes split must be 'train', 'val' or 'test', got {split!r}")
        root = Path(root)
        train = split_default(train, split)
        img_dir = root / "leftImg8bit" / split
        gt_dir = root / "gtFine" / split
        images = keyed(list_files(img_dir, (_IMAGE_SUFFIX,), hint="Cityscapes images"), img_dir, _IMAGE_SUFFIX)
        gt_files = list_files(gt_dir, (_LABEL_SUFFIX, _INSTANCE_SUFFIX), hint="Cityscapes gtFine annotations")
        labels = keyed(gt_files, gt_dir, _LABEL_SUFFIX)
        inst = keyed(gt_files, gt_dir, _INSTANCE_SUFFIX) if instances else None
        samples = pair_samples(images, labels, inst, image_root=img_dir, label_root=gt_dir,
                               instance_root=gt_dir, what=f"Cityscapes {split}")
        super().__init__(samples, num_classes=CITYSCAPES_NUM_CLASSES, size=size,
                         resize="keep_aspect" if size is not None else "none", crop="none",
                         random_flip=train if random_flip is None else random_flip, seed=seed,
                         generator=generator, instance_mode=instance_mode)
        self.root, self.split, self.train = root, split, train


class CityscapesTrainIds(Cityscapes):
    """Cityscapes with the 19 trainIds (ignore = 255), as SPIC trains and evaluates.

    Same files and arguments as :class:`Cityscapes` (``instances`` default False: SPIC runs with
    ``--no_instance True``); labels are the raw labelIds mapped by :func:`to_train_ids`.

    Items: ``image`` (3, H, W) in [-1, 1], ``label`` (H, W) int64 in [0, 18] or 255, ``path``.
    """

    num_classes = CITYSCAPES_TRAIN_CLASSES

    def __init__(self, root: str | Path, split: str = "train", *, instances: bool = False, **kwargs) -> None:
        super().__init__(root, split, instances=instances, **kwargs)
        self.num_classes = CITYSCAPES_TRAIN_CLASSES
        self.ignore_index = TRAIN_ID_IGNORE

    def transform_label(self, label: np.ndarray) -> np.ndarray:
        return to_train_ids(label)
