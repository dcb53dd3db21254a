"""Semantic label maps: one-hot coding, instance edges, the network's label input, colours.

Conventions (see ``ARCHITECTURE.md``):

* A label map is an integer tensor ``(B, H, W)`` of class ids in ``[0, num_classes)``; an optional
  ``ignore_index`` marks pixels that belong to no class (they become all-zero one-hot vectors).
* An instance map is an integer tensor ``(B, H, W)``. Cityscapes-style ids are ``class * 1000 + k``
  for objects annotated per instance and the plain class id for everything else.
* What the SDM / GESCO network receives is :func:`semantic_input`: the one-hot classes, followed by
  one instance-edge channel when the dataset has instances (``num_classes + 1`` channels).

Two instance modes are offered, because the reference code does something subtly different from
what its description says:

``instance_mode="exact"`` (default)
    edges are computed from the full instance ids, so two touching cars (26001 | 26002) are
    separated by an edge.
``instance_mode="reference_8bit"``
    reproduces GESCO / SDM, which open instance PNGs with PIL as 8-bit ``"L"`` images: every id
    >= 255 saturates to 255 (:func:`saturate_instances_8bit`), so all instance-annotated objects share
    one value and the edges *between touching objects* (car | car, car | person) vanish; only edges
    against stuff regions (ids < 255) survive. Use it to match released GESCO checkpoints exactly.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = [
    "INSTANCE_MODES",
    "CITYSCAPES_LABELS",
    "CITYSCAPES_PALETTE",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_PALETTE",
    "one_hot",
    "instance_edges",
    "saturate_instances_8bit",
    "semantic_input",
    "label_channels",
    "default_palette",
    "colorize",
]

#: accepted values of ``instance_mode``
INSTANCE_MODES = ("exact", "reference_8bit")

#: Cityscapes ``labelIds`` 0..33 (the values stored in ``*_gtFine_labelIds.png``) as (name, RGB),
#: from the official ``cityscapesscripts.helpers.labels``; id 34 never occurs in the files (the
#: license plate has id -1 and is written as 0) but GESCO/SDM/SPADE reserve it: ``num_classes`` 35.
CITYSCAPES_LABELS: list[tuple[str, tuple[int, int, int]]] = [
    ("unlabeled", (0, 0, 0)), ("ego vehicle", (0, 0, 0)), ("rectification border", (0, 0, 0)),
    ("out of roi", (0, 0, 0)), ("static", (0, 0, 0)), ("dynamic", (111, 74, 0)),
    ("ground", (81, 0, 81)), ("road", (128, 64, 128)), ("sidewalk", (244, 35, 232)),
    ("parking", (250, 170, 160)), ("rail track", (230, 150, 140)), ("building", (70, 70, 70)),
    ("wall", (102, 102, 156)), ("fence", (190, 153, 153)), ("guard rail", (180, 165, 180)),
    ("bridge", (150, 100, 100)), ("tunnel", (150, 120, 90)), ("pole", (153, 153, 153)),
    ("polegroup", (153, 153, 153)), ("traffic light", (250, 170, 30)),
    ("traffic sign", (220, 220, 0)), ("vegetation", (107, 142, 35)), ("terrain", (152, 251, 152)),
    ("sky", (70, 130, 180)), ("person", (220, 20, 60)), ("rider", (255, 0, 0)),
    ("car", (0, 0, 142)), ("truck", (0, 0, 70)), ("bus", (0, 60, 100)), ("caravan", (0, 0, 90)),
    ("trailer", (0, 0, 110)), ("train", (0, 80, 100)), ("motorcycle", (0, 0, 230)),
    ("bicycle", (119, 11, 32)), ("reserved (id 34)", (0, 0, 0)),
]

#: (35, 3) uint8 colours of the Cityscapes labelIds
CITYSCAPES_PALETTE = torch.tensor([c for _, c in CITYSCAPES_LABELS], dtype=torch.uint8)

#: class id -> (name, RGB colour); the colour is both the palette colour and the texture's base
SYNTHETIC_CLASSES: list[tuple[str, tuple[int, int, int]]] = [
    ("sky", (70, 130, 180)),        # 0  vertical gradient
    ("building", (70, 70, 70)),     # 1  grid of lit windows
    ("road", (128, 64, 128)),       # 2  fine grain noise
    ("sidewalk", (244, 35, 232)),   # 3  tiles
    ("car", (0, 0, 142)),           # 4  horizontal stripes, per-car shade
    ("vegetation", (107, 142, 35)),  # 5 low-frequency blotches
    ("person", (220, 20, 60)),      # 6  fine checks, per-person shade
    ("pole", (153, 153, 153)),      # 7  plain light grey
    ("traffic sign", (220, 220, 0)),  # 8 diagonal stripes
    ("terrain", (152, 251, 152)),   # 9  horizontal bands
    ("fence", (190, 153, 153)),     # 10 vertical slats
    ("truck", (0, 60, 100)),        # 11 coarse checks, per-truck shade
]
#: (12, 3) uint8 colours of :data:`SYNTHETIC_CLASSES` (the synthetic scenes of :mod:`gensemcom.data.synthetic`)
SYNTHETIC_PALETTE = torch.tensor([c for _, c in SYNTHETIC_CLASSES], dtype=torch.uint8)


def _as_bhw(x: torch.Tensor, what: str) -> torch.Tensor:
    """Accept (B, H, W) or (B, 1, H, W) integer maps; return (B, H, W)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() != 3:
        raise ValueError(f"{what} must have shape (B, H, W) (or (B, 1, H, W)), got {tuple(x.shape)}")
    if x.dtype == torch.bool or x.is_floating_point() or x.is_complex():
        raise ValueError(f"{what} must be an integer tensor (int64 class/instance ids), got {x.dtype}")
    return x


def one_hot(labels: torch.Tensor, num_classes: int, ignore_index: int | None = None,
            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot code a label map.

    Args:
        labels: (B, H, W) (or (B, 1, H, W)) integer class ids in ``[0, num_classes)``.
        num_classes: number of channels of the output.
        ignore_index: pixels with this value become all-zero vectors (may lie outside the range,
            e.g. 255).
        dtype: floating dtype of the result.

    Returns:
        (B, num_classes, H, W) tensor of 0/1 on the device of ``labels``.

    Raises:
        ValueError: non-integer dtype, wrong shape, or a label outside ``[0, num_classes)`` that is
            not ``ignore_index`` (the message names the min/max found and some offending values).
    """
    labels = _as_bhw(labels, "labels")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    labels = labels.long()
    valid = torch.ones_like(labels, dtype=torch.bool) if ignore_index is None else labels != ignore_index
    if labels.numel():
        bad = valid & ((labels < 0) | (labels >= num_classes))
        if bad.any():
            offending = torch.unique(labels[bad])
            shown = ", ".join(str(v) for v in offending[:8].tolist())
            more = f" (and {offending.numel() - 8} more)" if offending.numel() > 8 else ""
            kept = labels[valid]
            raise ValueError(
                f"labels must lie in [0, {num_classes - 1}] for num_classes={num_classes}"
                + (f" (ignore_index={ignore_index} allowed)" if ignore_index is not None else "")
                + f"; found min {kept.min().item()}, max {kept.max().item()}; offending values: "
                f"{shown}{more}")
    index = torch.where(valid, labels, torch.zeros_like(labels))
    out = torch.zeros(labels.shape[0], num_classes, *labels.shape[1:], dtype=dtype, device=labels.device)
    out.scatter_(1, index[:, None], valid[:, None].to(dtype))
    return out


def instance_edges(instances: torch.Tensor) -> torch.Tensor:
    """Instance boundary map, as the reference ``get_edges``.

    A pixel is 1 when its id differs from its left, right, upper or lower neighbour; both pixels of
    every differing pair are marked (boundaries are two pixels wide).

    Args:
        instances: (B, H, W) (or (B, 1, H, W)) integer instance ids.

    Returns:
        (B, 1, H, W) float32 tensor of 0/1.
    """
    inst = _as_bhw(instances, "instances")
    edge = torch.zeros_like(inst, dtype=torch.bool)
    dx = inst[:, :, 1:] != inst[:, :, :-1]
    dy = inst[:, 1:, :] != inst[:, :-1, :]
    edge[:, :, 1:] |= dx
    edge[:, :, :-1] |= dx
    edge[:, 1:, :] |= dy
    edge[:, :-1, :] |= dy
    return edge[:, None].float()


def saturate_instances_8bit(instances: torch.Tensor) -> torch.Tensor:
    """What the reference sees after ``Image.open(instance_png).convert("L")``: ids clipped to [0, 255].

    Cityscapes/COCO objects (ids ``class * 1000 + k`` >= 1000) all become 255, so edges between two
    touching instance-annotated objects vanish. Same shape and dtype as ``instances``.
    """
    if not isinstance(instances, torch.Tensor) or instances.is_floating_point() or instances.dtype == torch.bool:
        raise ValueError("instances must be an integer torch.Tensor")
    return instances.clamp(0, 255)


def _check_mode(instance_mode: str) -> None:
    if instance_mode not in INSTANCE_MODES:
        raise ValueError(f"instance_mode must be one of {INSTANCE_MODES}, got {instance_mode!r}")


def semantic_input(labels: torch.Tensor, num_classes: int, instances: torch.Tensor | None = None,
                   ignore_index: int | None = None, instance_mode: str = "exact",
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The label input ``y`` of the semantic diffusion network.

    Args:
        labels: (B, H, W) integer class ids (see :func:`one_hot`).
        num_classes: classes of the dataset (35 Cityscapes, 151 ADE20K, 183 COCO-Stuff).
        instances: optional (B, H, W) integer instance ids; when given, an edge channel is appended.
        ignore_index: label value that becomes an all-zero one-hot vector.
        instance_mode: ``"exact"`` (full ids) or ``"reference_8bit"`` (ids saturated at 255 as the
            reference's 8-bit PNG loading; see the module docstring).
        dtype: floating dtype of the result.

    Returns:
        (B, num_classes, H, W) without instances, (B, num_classes + 1, H, W) with them: the one-hot
        classes first, the instance-edge map last.
    """
    _check_mode(instance_mode)
    y = one_hot(labels, num_classes, ignore_index=ignore_index, dtype=dtype)
    if instances is None:
        return y
    inst = _as_bhw(instances, "instances")
    if inst.shape != y[:, 0].shape:
        raise ValueError(f"instances {tuple(inst.shape)} and labels {tuple(y[:, 0].shape)} must have "
                         "the same (B, H, W) shape")
    if instance_mode == "reference_8bit":
        inst = saturate_instances_8bit(inst)
    return torch.cat([y, instance_edges(inst).to(device=y.device, dtype=dtype)], dim=1)


def label_channels(num_classes: int, has_instances: bool) -> int:
    """Channels of :func:`semantic_input`: ``num_classes`` plus one edge channel with instances."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return num_classes + int(bool(has_instances))


def default_palette(n: int = 256) -> torch.Tensor:
    """A deterministic (n, 3) uint8 palette with distinct colours (the PASCAL VOC bit-spread scheme).

    Colour ``i`` spreads the bits of ``i`` over the high bits of R, G and B; 0 is black. Any
    ``n <= 2**24`` gives distinct colours.
    """
    if n < 1:
        raise ValueError(f"palette size must be >= 1, got {n}")
    out = torch.zeros(n, 3, dtype=torch.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
            if c == 0:
                break
        out[i] = torch.tensor([r, g, b], dtype=torch.uint8)
    return out


def colorize(labels: torch.Tensor,
             palette: torch.Tensor | Sequence[Sequence[int]] | str | None = None) -> torch.Tensor:
    """Colour a label map for display.

    Args:
        labels: (B, H, W) or (H, W) integer class ids, all >= 0.
        palette: (N, 3) colours (tensor or nested sequence of 0..255), or ``"cityscapes"`` (the 35
            labelId colours of :data:`CITYSCAPES_PALETTE`), or ``"synthetic"`` (the colours of
            :data:`SYNTHETIC_CLASSES`), or None for
            :func:`default_palette` with 256 colours (distinct, deterministic; ids up to 255, e.g.
            an ignore value of 255, are covered).

    Returns:
        (B, H, W, 3) (or (H, W, 3)) uint8 tensor on the CPU.

    Raises:
        ValueError: a label is negative or has no colour in the palette.
    """
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError("labels must be an integer torch.Tensor of class ids")
    if isinstance(palette, str):
        if palette == "cityscapes":
            pal = CITYSCAPES_PALETTE
        elif palette == "synthetic":
            pal = SYNTHETIC_PALETTE
        else:
            raise ValueError(f"unknown palette {palette!r}: use 'cityscapes', 'synthetic', None or "
                             "an (N, 3) array")
    elif palette is None:
        pal = default_palette(256)
    else:
        pal = torch.as_tensor(palette)
        if pal.dim() != 2 or pal.shape[1] != 3:
            raise ValueError(f"palette must have shape (N, 3), got {tuple(pal.shape)}")
        if pal.is_floating_point() or (pal.numel() and (pal.min() < 0 or pal.max() > 255)):
            raise ValueError("palette colours must be integers in [0, 255]")
        pal = pal.to(torch.uint8)
    labels = labels.detach().cpu().long()
    if labels.numel() and (labels.min() < 0 or labels.max() >= pal.shape[0]):
        raise ValueError(f"labels span [{labels.min().item()}, {labels.max().item()}] but the palette "
                         f"has colours for [0, {pal.shape[0] - 1}]")
    return pal[labels]
