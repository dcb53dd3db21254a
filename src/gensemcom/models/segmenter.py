"""Segmenters that judge semantic fidelity: the mIoU of a received or regenerated image.

A generative receiver is good when a segmentation network finds the same classes where they were
sent. Any network can play that part through the :class:`Segmenter` interface::

    images (B, 3, H, W) float in [-1, 1] --logits--> (B, C, H, W) --argmax--> predict (B, H, W) int64

Implementations:

- :class:`TinySegmenter`: a small U-Net (about 0.4 M parameters) trained by
  ``gensemcom train_segmenter`` on the synthetic street scenes; one is bundled with the package
  (``load_segmenter("bundled")``).
- :class:`TorchScriptSegmenter`: your own network exported to a file, e.g. DRN-D-105 for
  Cityscapes (the network of GESCO's and SDM's evaluation) or UperNet / InternImage for ADE20K.
  Export it once, where its code is installed::

      net = build_my_network().eval()                     # (B, 3, H, W) -> (B, C, h, w) logits
      torch.jit.trace(net, torch.randn(1, 3, 512, 1024)).save("drn_cityscapes.pt")
      # or torch.jit.script(net).save(...); or torch.export, with free batch and image size
      # (an exported program otherwise only accepts the example's exact shape):
      b, h, w = torch.export.Dim("b"), torch.export.Dim("h"), torch.export.Dim("w")
      ep = torch.export.export(net, (torch.randn(2, 3, 512, 1024),),
                               dynamic_shapes=({0: b, 2: h, 3: w},))
      torch.export.save(ep, "drn_cityscapes.pt2")

  then ``load_segmenter("torchscript:drn_cityscapes.pt:19:imagenet")``. State the input range the
  network expects (``"[-1,1]"``, ``"[0,1]"`` or ``"imagenet"``: [0, 1] then ImageNet mean/std);
  the conversion from our [-1, 1] images is done here. Outputs at a lower resolution are resized
  bilinearly to the input size; a tuple/list output uses its first element, a dict its ``"out"``.

Conventions: logits are float32 on the images' device; :meth:`Segmenter.predict` runs under
``torch.inference_mode`` and returns int64 class ids in ``[0, num_classes)``.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Segmenter", "TinySegmenterConfig", "TinySegmenter", "TorchScriptSegmenter", "load_segmenter",
           "INPUT_RANGES", "BUNDLED_SEGMENTER"]

INPUT_RANGES = ("[-1,1]", "[0,1]", "imagenet")
#: package-relative folder of the bundled synthetic-scene segmenter
BUNDLED_SEGMENTER = "assets/segmenter_synthetic"

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class Segmenter(ABC):
    """A semantic segmentation network for [-1, 1] images.

    Subclasses set ``num_classes`` and implement :meth:`logits`.
    """

    num_classes: int

    @abstractmethod
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float in [-1, 1] -> (B, num_classes, H, W) class scores."""

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, H, W) int64 class ids (no gradients)."""
        with torch.inference_mode():
            return self.logits(images).argmax(dim=1).long()


def _check_images(images: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [-1, 1], got {images.dtype}")


# ------------------------------------------------------------------------------------------------
# TinySegmenter
# ------------------------------------------------------------------------------------------------

@dataclass
class TinySegmenterConfig:
    """Constructor settings of :class:`TinySegmenter`.

    Attributes:
        num_classes: output classes (12 for the synthetic scenes).
        widths: channels per level; ``len(widths) - 1`` downsamplings, so H and W must be
            divisible by ``2 ** (len(widths) - 1)`` (8 by default).
        groups: GroupNorm groups (each width must be divisible by it).
    """

    num_classes: int = 12
    widths: tuple[int, ...] = (16, 32, 64, 96)
    groups: int = 8

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if len(self.widths) < 1 or any(w < 1 or w % self.groups for w in self.widths):
            raise ValueError(f"widths {self.widths} must be positive multiples of groups={self.groups}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TinySegmenterConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TinySegmenterConfig fields: {unknown}")
        return cls(**d)


class _DoubleConv(nn.Sequential):
    """(conv 3x3 -> GroupNorm -> SiLU) x 2."""

    def __init__(self, cin: int, cout: int, groups: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(groups, cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.GroupNorm(groups, cout), nn.SiLU())


class TinySegmenter(nn.Module, Segmenter):
    """A small U-Net: double-conv blocks with GroupNorm (batch-size independent, identical in
    train and eval mode), max-pool down, bilinear up + skip concatenation, 1x1 head.

    ::

        x (B,3,H,W) -> enc[0] -> pool -> enc[1] -> ... -> enc[L]   (widths[0..L], H/2^L)
                    <- dec[0] <- up+cat <- ... <- dec[L-1] <- up+cat
                    -> 1x1 conv -> logits (B, num_classes, H, W)
    """

    KIND = "tiny_segmenter"

    def __init__(self, config: TinySegmenterConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or TinySegmenterConfig()
        self.num_classes = cfg.num_classes
        w, g = cfg.widths, cfg.groups
        self.down = nn.ModuleList([_DoubleConv(3, w[0], g)] +
                                  [_DoubleConv(w[i - 1], w[i], g) for i in range(1, len(w))])
        self.up = nn.ModuleList([_DoubleConv(w[i + 1] + w[i], w[i], g) for i in range(len(w) - 1)])
        self.head = nn.Conv2d(w[0], cfg.num_classes, 1)

    @property
    def factor(self) -> int:
        return 2 ** (len(self.config.widths) - 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _check_images(images)
        f = self.factor
        if images.shape[2] % f or images.shape[3] % f:
            raise ValueError(f"TinySegmenter with {len(self.config.widths)} levels needs H and W divisible "
                             f"by {f}, got {images.shape[2]}x{images.shape[3]}")
        skips = []
        h = images
        for i, block in enumerate(self.down):
            if i:
                h = F.max_pool2d(h, 2)
            h = block(h)
            skips.append(h)
        for i in reversed(range(len(self.up))):
            h = F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False)
            h = self.up[i](torch.cat([h, skips[i]], dim=1))
        return self.head(h)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        p = next(self.parameters())
        return self(images.to(device=p.device, dtype=p.dtype)).to(images.device)

    def save_pretrained(self, directory: str | os.PathLike, extra: dict[str, Any] | None = None,
                        dtype: torch.dtype | None = None) -> Path:
        """Write ``model.safetensors`` + ``config.json`` (``dtype=torch.float16`` halves the size)."""
        from .io import save_module

        return save_module(directory, self, self.config.to_dict(), kind=self.KIND, extra=extra, dtype=dtype)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike,
                        device: str | torch.device = "cpu") -> "TinySegmenter":
        """Load a folder written by :meth:`save_pretrained` (float32, eval mode)."""
        from .io import load_module

        model, config = load_module(directory, lambda d: cls(TinySegmenterConfig.from_dict(d)),
                                    kind=cls.KIND, device=device)
        model.saved_config = config  # type: ignore[attr-defined]
        return model  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------
# Exported networks
# ------------------------------------------------------------------------------------------------

class TorchScriptSegmenter(Segmenter):
    """A user's exported segmentation network (TorchScript ``.pt``/``.ts``, or ``torch.export``
    ``.pt2``); see the module docstring for how to export one.

    Args:
        path: the exported file.
        num_classes: classes the network must output (checked on every call).
        input_range: what the network expects: ``"[-1,1]"`` (our images as they are), ``"[0,1]"``
            or ``"imagenet"`` ([0, 1] normalised with ImageNet mean and std).
        device: where to run the network.
        probe_size: (H, W) to run one dummy image through at load time, so a wrong class count
            fails at once (None: checked at the first call).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unknown ``input_range``, a file that is not an exported module, or a network
            whose output has a different number of classes.
    """

    def __init__(self, path: str | os.PathLike, num_classes: int, input_range: str = "[-1,1]",
                 device: str | torch.device = "cpu", probe_size: Sequence[int] | None = None) -> None:
        path = Path(path)
        if input_range not in INPUT_RANGES:
            raise ValueError(f"input_range must be one of {INPUT_RANGES}, got {input_range!r}")
        if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if not path.is_file():
            raise FileNotFoundError(f"segmenter file not found: {path}")
        self.path, self.num_classes, self.input_range = path, int(num_classes), input_range
        self.device = torch.device(device)
        try:
            if path.suffix == ".pt2":
                self.module = torch.export.load(str(path)).module().to(self.device)
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still works
                    self.module = torch.jit.load(str(path), map_location=self.device)
        except Exception as e:  # torch's own messages name its internals, say what it means here
            raise ValueError(f"{path} is not a TorchScript (torch.jit.save) or torch.export (.pt2) "
                             f"file ({type(e).__name__}: {e})") from e
        if hasattr(self.module, "eval"):
            try:
                self.module.eval()
            except Exception:  # exported programs' modules may refuse mode switches
                pass
        if probe_size is not None:
            h, w = probe_size
            self.logits(torch.zeros(1, 3, int(h), int(w)))

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, torch.float32)
        if self.input_range == "[-1,1]":
            return x
        x = (x + 1) / 2
        if self.input_range == "imagenet":
            mean = torch.tensor(_IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(_IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
            x = (x - mean) / std
        return x

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        _check_images(images)
        out = self.module(self._prepare(images))
        if isinstance(out, dict):
            if "out" not in out:
                raise ValueError(f"{self.path}: the network returned a dict without 'out' ({sorted(out)})")
            out = out["out"]
        elif isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[0] != images.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"{self.path}: expected (B, C, h, w) logits for {images.shape[0]} images, got {shape}")
        if out.shape[1] != self.num_classes:
            raise ValueError(f"{self.path}: the network outputs {out.shape[1]} classes, but "
                             f"num_classes={self.num_classes} was given")
        if out.shape[2:] != images.shape[2:]:
            out = F.interpolate(out.float(), size=images.shape[2:], mode="bilinear", align_corners=False)
        return out.float().to(images.device)

    def __repr__(self) -> str:
        return (f"TorchScriptSegmenter({str(self.path)!r}, num_classes={self.num_classes}, "
                f"input_range={self.input_range!r})")


# ------------------------------------------------------------------------------------------------
# Specs
# ------------------------------------------------------------------------------------------------

def bundled_segmenter_path() -> Path:
    """The folder of the bundled synthetic-scene segmenter (it may not exist yet)."""
    from importlib.resources import files

    return Path(str(files("gensemcom").joinpath(BUNDLED_SEGMENTER)))


def load_segmenter(spec: str, device: str | torch.device = "cpu") -> Segmenter:
    """Build a segmenter from a short description.

    Args:
        spec: one of

            - ``"bundled"``: the TinySegmenter shipped in ``gensemcom/assets/segmenter_synthetic``
              (synthetic street scenes, 12 classes);
            - a folder written by :meth:`TinySegmenter.save_pretrained`;
            - ``"torchscript:PATH:NUM_CLASSES"`` or ``"torchscript:PATH:NUM_CLASSES:INPUT_RANGE"``
              (``INPUT_RANGE`` one of ``[-1,1]``, ``[0,1]``, ``imagenet``; default ``[-1,1]``): a
              :class:`TorchScriptSegmenter`. PATH may itself contain colons.
        device: where to run it.

    Raises:
        ValueError: a malformed spec; FileNotFoundError: a missing file or folder.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("segmenter spec is empty; use 'bundled', a model folder or 'torchscript:PATH:NUM_CLASSES'")
    spec = spec.strip()
    if spec == "bundled":
        path = bundled_segmenter_path()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"the bundled segmenter is not installed (expected {path}); train one with "
                "`gensemcom train_segmenter --out runs/segmenter` and copy "
                "runs/segmenter/model there, or pass a model folder instead of 'bundled'")
        return TinySegmenter.from_pretrained(path, device=device)
    if spec.startswith("torchscript:"):
        rest = spec[len("torchscript:"):]
        input_range = "[-1,1]"
        head, sep, last = rest.rpartition(":")
        if sep and last in INPUT_RANGES:
            input_range, rest = last, head
        path, sep, count = rest.rpartition(":")
        usage = "expected 'torchscript:PATH:NUM_CLASSES[:INPUT_RANGE]'"
        if not sep or not path:
            raise ValueError(f"segmenter spec {spec!r}: {usage}")
        try:
            num_classes = int(count)
        except ValueError:
            raise ValueError(f"segmenter spec {spec!r}: NUM_CLASSES {count!r} is not an integer; {usage}") from None
        if num_classes < 1:
            raise ValueError(f"segmenter spec {spec!r}: NUM_CLASSES must be >= 1")
        return TorchScriptSegmenter(path, num_classes, input_range=input_range, device=device)
    scheme, sep, _ = spec.partition(":")
    if sep and len(scheme) > 1 and scheme.isalnum() and not Path(spec).exists():  # len 1: a drive letter
        raise ValueError(f"unknown segmenter spec {spec!r}; use 'bundled', a model folder or "
                         "'torchscript:PATH:NUM_CLASSES'")
    path = Path(spec)
    if not path.is_dir():
        raise FileNotFoundError(f"segmenter folder not found: {path} (a spec is 'bundled', a folder "
                                "saved by TinySegmenter.save_pretrained, or 'torchscript:PATH:NUM_CLASSES')")
    return TinySegmenter.from_pretrained(path, device=device)
