"""Segmentation agreement metrics: confusion matrix, per-class IoU, mIoU, pixel accuracy.

Conventions:

* ``pred`` and ``target`` are integer label maps of the same shape (any shape for
  :func:`confusion_matrix`; ``(B, ...)`` for :func:`miou_per_image`), torch tensors or numpy arrays,
  with class ids in ``[0, num_classes)``.
* Pixels whose *target* equals ``ignore_index`` are skipped. Every prediction must be a valid class
  id (a segmentation network never outputs ``ignore_index``); invalid ids raise ``ValueError``.
* The confusion matrix has rows = target class, columns = predicted class (torchmetrics'
  ``MulticlassConfusionMatrix`` layout).
* ``missing``: a prediction value meaning "no class arrived" (e.g. a label map lost on a digital
  link, all ``255``). Such pixels are misses of their target class (they count in its ``FN``)
  and false positives of no class. The matrix then has one more column, ``(C, C + 1)``, the last
  one counting the missing predictions.
* ``IoU_c = TP_c / (TP_c + FP_c + FN_c)``. A class absent from both target and prediction (among the
  counted pixels) has IoU ``NaN`` and is left out of the mean: ``mIoU = nanmean(IoU)``. If
  ``ignore_index`` is itself a class id in ``[0, num_classes)`` that class never occurs in the
  target, and its IoU is reported as ``NaN`` too.

Relation to torchmetrics ``MulticlassJaccardIndex(num_classes, ignore_index=...)``: with
``average='macro'`` it drops classes absent from both in the same way, so its value equals
:meth:`ConfusionMatrix.miou`; with ``average=None`` it reports absent classes as ``0.0``
(``zero_division=0``) where :meth:`ConfusionMatrix.iou` reports ``NaN``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["confusion_matrix", "ConfusionMatrix", "miou_per_image"]


def _as_labels(t: Any, name: str) -> Tensor:
    if isinstance(t, np.ndarray):
        t = torch.from_numpy(t)
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a torch tensor or numpy array, got {type(t).__name__}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class ids, got dtype {t.dtype}")
    return t.to(torch.int64)


def _bad_values(t: Tensor, limit: int = 10) -> list[int]:
    return torch.unique(t)[:limit].tolist()


def _check_num_classes(num_classes: int) -> None:
    if not (isinstance(num_classes, int) and num_classes >= 1):
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")


def _valid_pixels(pred: Any, target: Any, num_classes: int, ignore_index: int | None,
                  missing: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Validated int64 ``pred`` (``missing`` mapped to ``num_classes``), ``target`` and the boolean
    mask of counted pixels."""
    _check_num_classes(num_classes)
    pred = _as_labels(pred, "pred")
    target = _as_labels(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    target = target.to(pred.device)
    if missing is not None:
        if 0 <= missing < num_classes:
            raise ValueError(f"missing={missing} is a class id; use a value outside [0, {num_classes})")
        pred = torch.where(pred == missing, torch.full_like(pred, num_classes), pred)
    bad = (pred < 0) | (pred >= num_classes + (missing is not None))
    if bad.any():
        raise ValueError(
            f"pred holds values outside [0, {num_classes}): {_bad_values(pred[bad])} "
            f"({int(bad.sum())} pixels)"
        )
    valid = target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
    bad = valid & ((target < 0) | (target >= num_classes))
    if bad.any():
        raise ValueError(
            f"target holds values outside [0, {num_classes}) that are not ignore_index={ignore_index}: "
            f"{_bad_values(target[bad])} ({int(bad.sum())} pixels)"
        )
    return pred, target, valid


def confusion_matrix(pred: Any, target: Any, num_classes: int, ignore_index: int | None = 255,
                     missing: int | None = None) -> Tensor:
    """Confusion matrix of two label maps.

    Args:
        pred: predicted class ids, any shape, integer dtype, values in ``[0, num_classes)``.
        target: reference class ids, same shape; values in ``[0, num_classes)`` or ``ignore_index``.
        num_classes: ``C``.
        ignore_index: target value whose pixels are skipped (None: skip nothing).
        missing: prediction value meaning "no class arrived" (see the module docstring), or None.

    Returns:
        ``(C, C)`` (``(C, C + 1)`` with ``missing``) int64 tensor on the inputs' device; entry
        ``[t, p]`` counts the pixels of target class ``t`` predicted as ``p``.

    Raises:
        ValueError: shape mismatch, non-integer dtype, or out-of-range ids (the message lists them).
    """
    pred, target, valid = _valid_pixels(pred, target, num_classes, ignore_index, missing)
    cols = num_classes + (missing is not None)
    codes = target[valid] * cols + pred[valid]
    return torch.bincount(codes, minlength=num_classes * cols).view(num_classes, cols)


def _iou_from_matrix(matrix: Tensor, ignore_index: int | None) -> Tensor:
    """Per-class IoU of one ``(C, C)`` or a stack ``(B, C, C)`` of matrices (``C + 1`` columns with a
    missing column); NaN for absent classes."""
    m = matrix.to(torch.float64)
    c = m.shape[-2]
    tp = torch.diagonal(m, dim1=-2, dim2=-1)
    union = m.sum(dim=-1) + m.sum(dim=-2)[..., :c] - tp
    iou = tp / union  # 0 / 0 -> NaN for a class absent from both
    if ignore_index is not None and 0 <= ignore_index < m.shape[-1]:
        iou[..., ignore_index] = float("nan")
    return iou


class ConfusionMatrix:
    """Accumulating confusion matrix (rows = target, columns = prediction) for a whole data set.

    Shards computed separately (other processes, other runs) combine with ``a + b`` or
    ``a.merge(b)``; :meth:`to_list` / :meth:`from_list` round-trip through JSON.

    Example:
        >>> cm = ConfusionMatrix(num_classes=35)
        >>> for pred, target in batches:  # (B, H, W) label maps
        ...     cm.update(pred, target)
        >>> cm.miou(), cm.pixel_accuracy()
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255, missing: int | None = None) -> None:
        _check_num_classes(num_classes)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.missing = missing
        self.matrix = torch.zeros(num_classes, num_classes + (missing is not None), dtype=torch.int64)

    def update(self, pred: Any, target: Any) -> "ConfusionMatrix":
        """Add the pixels of ``pred`` / ``target`` (same shape, see :func:`confusion_matrix`); returns self."""
        self.matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index, self.missing).cpu()
        return self

    def _check_compatible(self, other: "ConfusionMatrix") -> None:
        if not isinstance(other, ConfusionMatrix):
            raise ValueError(f"can only merge with a ConfusionMatrix, got {type(other).__name__}")
        if other.matrix.shape != self.matrix.shape or (other.num_classes, other.ignore_index) != (
                self.num_classes, self.ignore_index):
            raise ValueError(
                "cannot merge confusion matrices with different settings: "
                f"num_classes={self.num_classes}, ignore_index={self.ignore_index} vs "
                f"num_classes={other.num_classes}, ignore_index={other.ignore_index}"
            )

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add another shard's counts into this one (in place); returns self."""
        self._check_compatible(other)
        self.matrix += other.matrix
        return self

    def __add__(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        self._check_compatible(other)
        out = ConfusionMatrix(self.num_classes, self.ignore_index, self.missing)
        out.matrix = self.matrix + other.matrix
        return out

    def to_list(self) -> list[list[int]]:
        """The counts as nested Python ints (JSON-serialisable), ``[target][pred]``."""
        return self.matrix.tolist()

    @classmethod
    def from_list(cls, rows: Sequence[Sequence[int]], ignore_index: int | None = 255,
                  missing: int | None = None) -> "ConfusionMatrix":
        """Rebuild from :meth:`to_list` output (``num_classes`` is the number of rows; with
        ``missing`` the list has one more column)."""
        matrix = torch.as_tensor(rows, dtype=torch.int64)
        extra = missing is not None
        if matrix.ndim != 2 or matrix.shape[0] + extra != matrix.shape[1] or matrix.shape[0] == 0:
            raise ValueError(
                f"from_list expects a non-empty C x {'(C + 1)' if extra else 'C'} list of counts, "
                f"got shape {tuple(matrix.shape)}"
            )
        if (matrix < 0).any():
            raise ValueError("from_list: counts must be non-negative")
        out = cls(matrix.shape[0], ignore_index, missing)
        out.matrix = matrix
        return out

    def iou(self) -> Tensor:
        """Per-class IoU ``(C,)`` float64; NaN for classes absent from both target and prediction."""
        return _iou_from_matrix(self.matrix, self.ignore_index)

    def miou(self) -> float:
        """Mean IoU over the classes whose IoU is defined (nanmean); NaN if none is."""
        return float(torch.nanmean(self.iou()))

    def pixel_accuracy(self) -> float:
        """Fraction of counted pixels predicted correctly; NaN if no pixel was counted."""
        total = int(self.matrix.sum())
        return float(torch.diagonal(self.matrix).sum()) / total if total else float("nan")

    def __repr__(self) -> str:
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"pixels={int(self.matrix.sum())})"
        )


def miou_per_image(pred: Any, target: Any, num_classes: int, ignore_index: int | None = 255,
                   missing: int | None = None) -> Tensor:
    """mIoU of each image on its own.

    Args:
        pred, target: label maps ``(B, ...)`` (typically ``(B, H, W)``), as in :func:`confusion_matrix`.
        num_classes: ``C``.
        ignore_index: target value to skip.
        missing: prediction value meaning "no class arrived" (see the module docstring).

    Returns:
        ``(B,)`` float64: nanmean over classes of the image's IoU (classes absent from both the image's
        target and prediction do not count); NaN for an image with no counted pixel.
    """
    pred, target, valid = _valid_pixels(pred, target, num_classes, ignore_index, missing)
    if pred.ndim < 1 or pred.shape[0] == 0:
        raise ValueError(f"miou_per_image expects a batch (B, ...) with B >= 1, got shape {tuple(pred.shape)}")
    b = pred.shape[0]
    cols = num_classes + (missing is not None)
    cc = num_classes * cols
    image = torch.arange(b, device=pred.device).view(b, *([1] * (pred.ndim - 1))).expand_as(pred)
    codes = image[valid] * cc + target[valid] * cols + pred[valid]
    matrices = torch.bincount(codes, minlength=b * cc).view(b, num_classes, cols)
    return torch.nanmean(_iou_from_matrix(matrices, ignore_index), dim=1)
