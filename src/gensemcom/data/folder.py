"""Your own data: a folder of images and a folder of label maps (and optionally instance maps)::

    root/images/**/<name>.{png,jpg,...}
    root/labels/**/<name>[label_suffix].png          8-bit or 16-bit index maps
    root/instances/**/<name>[instance_suffix].png    optional

Files are paired by their path relative to their folder without the extension (and suffix).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .common import IMAGE_EXTENSIONS, PairedSegmentationDataset, keyed, list_files, pair_samples

__all__ = ["ImageLabelFolder"]

_MAP_EXTENSIONS = (".png", ".bmp", ".tif", ".tiff")


def _keyed_with_suffix(files: list[Path], root: Path, suffix: str) -> dict[str, Path]:
    out = {}
    for key, path in keyed(files, root).items():
        if suffix:
            if not key.endswith(suffix):
                continue
            key = key[: -len(suffix)]
        out[key] = path
    return out


class ImageLabelFolder(PairedSegmentationDataset):
    """Images paired with label maps (and instance maps) by file stem.

    Args:
        root: the dataset folder.
        split: optional sub-folder of ``root`` (e.g. ``"train"``), used when it exists; a folder
            without split sub-folders serves every split.
        num_classes: label values must lie in ``[0, num_classes)`` (or equal ``ignore_index``).
        images, labels: sub-folder names.
        instances: sub-folder of instance maps, used when it exists; None never loads instances.
        label_suffix, instance_suffix: name endings to strip before pairing (e.g. ``"_seg"``).
        size: target size; None keeps the files' size (then ``resize``/crop are not applied).
        resize: ``"keep_aspect"`` (short side = size) or ``"square"`` (size x size).
        train: augment (flip; random crop when ``random_crop``).
        random_crop: with ``train``, the reference random crop to ``size x size``.
        random_flip: flip (default: ``train``).
        seed, generator: randomness of the augmentation (see :mod:`gensemcom.data.common`).
        ignore_index: label value allowed outside the class range (e.g. 255).
        instance_mode: ``"exact"`` or ``"reference_8bit"``.

    Items: ``image`` (3, H, W) in [-1, 1], ``label`` (H, W) int64, ``instance`` (H, W) int64 when
    present, ``path``.
    """

    def __init__(self, root: str | Path, num_classes: int, images: str = "images",
                 labels: str = "labels", instances: str | None = "instances", *,
                 split: str | None = None, label_suffix: str = "", instance_suffix: str = "",
                 size: int | None = None, resize: str = "keep_aspect", train: bool = False,
                 random_crop: bool = False, random_flip: bool | None = None, seed: int | None = None,
                 generator: torch.Generator | None = None, ignore_index: int | None = None,
                 instance_mode: str = "exact") -> None:
        root = Path(root)
        if split is not None and (root / split).is_dir():
            root = root / split
        if resize not in ("keep_aspect", "square"):
            raise ValueError(f"resize must be 'keep_aspect' or 'square', got {resize!r}")
        if random_crop and size is None:
            raise ValueError("random_crop needs a size")
        img_root, lbl_root = root / images, root / labels
        image_files = keyed(list_files(img_root, IMAGE_EXTENSIONS, hint="images"), img_root)
        label_files = _keyed_with_suffix(list_files(lbl_root, _MAP_EXTENSIONS, hint="label maps"),
                                         lbl_root, label_suffix)
        inst_root = root / instances if instances is not None else None
        inst_files = None
        if inst_root is not None and inst_root.is_dir():
            inst_files = _keyed_with_suffix(list_files(inst_root, _MAP_EXTENSIONS), inst_root, instance_suffix)
        samples = pair_samples(image_files, label_files, inst_files, image_root=img_root,
                               label_root=lbl_root, instance_root=inst_root, what=f"folder {root}")
        super().__init__(samples, num_classes=num_classes, size=size,
                         resize=resize if size is not None else "none",
                         crop="random" if (train and random_crop) else "none",
                         random_flip=train if random_flip is None else random_flip, seed=seed,
                         generator=generator, instance_mode=instance_mode, ignore_index=ignore_index)
        self.root, self.train = root, train
