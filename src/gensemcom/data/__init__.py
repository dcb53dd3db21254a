"""Datasets of images with semantic label maps (and instance maps).

Every dataset returns dicts with ``image`` (3, H, W) float32 in [-1, 1], ``label`` (H, W) int64,
``instance`` (H, W) int64 (absent when the dataset has none) and ``path`` (str); they batch with
the default DataLoader collate. :func:`build_dataset` builds one by name; :data:`DATASET_INFO`
holds what a model and a sampler need to know about each (classes, instances, size, guidance).
:func:`build_eval_data` builds the evaluation sets of a sweep from specs such as
``cityscapes:DIR,folder:DIR:classes=21`` (:mod:`gensemcom.data.evalsets`).
Turn a batch into the network's label input with :func:`gensemcom.semantics.semantic_input`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ..semantics import label_channels
from .ade20k import ADE20K, ade20k_label_transform
from .cityscapes import Cityscapes
from .coco_stuff import COCOStuff, coco_label_transform
from .common import PairedSegmentationDataset, Sample, derive_seed
from .evalsets import EvalData, build_eval_data
from .folder import ImageLabelFolder
from .synthetic import SYNTHETIC_CLASSES, SYNTHETIC_PALETTE, SyntheticScenes, render_scene, street_scene

__all__ = [
    "DatasetInfo",
    "DATASET_INFO",
    "build_dataset",
    "build_eval_data",
    "EvalData",
    "Cityscapes",
    "ADE20K",
    "COCOStuff",
    "ImageLabelFolder",
    "SyntheticScenes",
    "PairedSegmentationDataset",
    "Sample",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_PALETTE",
    "street_scene",
    "render_scene",
    "ade20k_label_transform",
    "coco_label_transform",
    "derive_seed",
]


@dataclass(frozen=True)
class DatasetInfo:
    """What GESCO's flags say about a dataset (README of ispamm/GESCO).

    Attributes (also readable as ``info["num_classes"]`` etc.):
        num_classes: one-hot channels (``--num_classes``); None for ``"folder"`` (user-given).
        has_instances: whether an instance-edge channel is appended (``--no_instance False``);
            None for ``"folder"`` (whether an ``instances/`` folder exists).
        image_size: (height, width) of the images the models see; None for ``"folder"``.
        guidance_scale: classifier-free guidance scale ``s`` used for sampling.
    """

    num_classes: int | None
    has_instances: bool | None
    image_size: tuple[int, int] | None
    guidance_scale: float

    @property
    def label_channels(self) -> int:
        """Channels of the network's label input (``num_classes`` + 1 with instances)."""
        if self.num_classes is None or self.has_instances is None:
            raise ValueError("a folder dataset's label channels depend on its num_classes and on "
                             "whether it has instance maps: use label_channels(num_classes, has_instances)")
        return label_channels(self.num_classes, self.has_instances)

    def __getitem__(self, key: str) -> Any:
        if key == "label_channels":
            return self.label_channels
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_size"] = list(self.image_size) if self.image_size else None
        if self.num_classes is not None and self.has_instances is not None:
            d["label_channels"] = self.label_channels
        return d


DATASET_INFO: dict[str, DatasetInfo] = {
    "cityscapes": DatasetInfo(35, True, (256, 512), 2.0),
    "ade20k": DatasetInfo(151, False, (256, 256), 2.5),
    "coco": DatasetInfo(183, True, (256, 256), 2.5),
    "synthetic": DatasetInfo(len(SYNTHETIC_CLASSES), True, (64, 128), 2.0),
    "folder": DatasetInfo(None, None, None, 2.0),
}

_BUILDERS = {"cityscapes": Cityscapes, "ade20k": ADE20K, "coco": COCOStuff,
             "folder": ImageLabelFolder, "synthetic": SyntheticScenes}
_ALIASES = {"coco_stuff": "coco", "coco-stuff": "coco", "cocostuff": "coco", "ade": "ade20k"}


def build_dataset(name: str, root: str | Path | None = None, **kw: Any) -> Dataset:
    """Build a dataset by name.

    Args:
        name: ``"cityscapes"``, ``"ade20k"``, ``"coco"`` (COCO-Stuff), ``"folder"`` or ``"synthetic"``.
        root: the dataset folder (not used by ``"synthetic"``).
        **kw: constructor arguments of the class (e.g. ``split="val"``, ``size=256``, ``seed=0``;
            ``num_classes`` for ``"folder"``; ``num_images``, ``height``, ``width``, ``seed`` for
            ``"synthetic"``).

    Raises:
        ValueError: unknown name, or a missing root.
    """
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _BUILDERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(_BUILDERS)}")
    if key == "synthetic":
        if root is not None:
            raise ValueError("the synthetic dataset has no root folder; pass num_images, height, width, seed")
        kw.setdefault("num_images", 1000)
        return SyntheticScenes(**kw)
    if root is None:
        raise ValueError(f"dataset {name!r} needs root= (the dataset folder)")
    if key == "folder" and "num_classes" not in kw:
        raise ValueError("the folder dataset needs num_classes=")
    return _BUILDERS[key](root, **kw)
