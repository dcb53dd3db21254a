"""Synthetic street scenes: label map, instance map and a rendered image, generated on the fly.

The data of the demo, the tests and the small bundled checkpoint. Each scene is a street seen from
the road: sky, a skyline of buildings and trees, a road vanishing at the horizon between sidewalks
(and terrain), a fence, poles with traffic signs, and cars, trucks and persons drawn far to near
(nearer objects occlude farther ones, so touching instances occur). Every class is rendered with
its own colour *and* texture (gradient, windows, noise, tiles, stripes, checks, blotches) and every
object with a little shading of its own, so a small diffusion model can learn map -> image and a
small segmenter image -> map.

Item ``i`` is a pure function of ``(seed, i, height, width, num_classes)``: identical across runs
and independent of the order in which items are read. Instance ids follow Cityscapes: ``class *
1000 + k`` (k = 0, 1, ... per class in drawing order) for cars, persons and trucks, the class id
elsewhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..semantics import SYNTHETIC_CLASSES, SYNTHETIC_PALETTE
from .common import derive_seed

__all__ = ["SYNTHETIC_CLASSES", "SYNTHETIC_PALETTE", "THING_CLASSES", "SyntheticScenes",
           "street_scene", "render_scene"]

SKY, BUILDING, ROAD, SIDEWALK, CAR, VEGETATION, PERSON, POLE, SIGN, TERRAIN, FENCE, TRUCK = range(12)
#: classes drawn as separate instances (id ``class * 1000 + k``)
THING_CLASSES = (CAR, PERSON, TRUCK)
_MIN_CLASSES = 6  # sky, building, road, sidewalk, car, vegetation


class _Canvas:
    """Label and instance maps being painted; shapes are painted over what is there."""

    def __init__(self, height: int, width: int, num_classes: int) -> None:
        self.h, self.w, self.num_classes = height, width, num_classes
        self.yy = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
        self.xx = torch.arange(width, dtype=torch.float32)[None, :].expand(height, width)
        self.label = torch.zeros(height, width, dtype=torch.long)
        self.inst = torch.full((height, width), -1, dtype=torch.long)
        self.count = {c: 0 for c in THING_CLASSES}

    def rect(self, x0: float, y0: float, x1: float, y1: float) -> torch.Tensor:
        """Mask of the pixels whose centres lie in [x0, x1) x [y0, y1); at least one pixel wide/high."""
        x0, x1 = round(x0), max(round(x1), round(x0) + 1)
        y0, y1 = round(y0), max(round(y1), round(y0) + 1)
        m = torch.zeros(self.h, self.w, dtype=torch.bool)
        m[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
        return m

    def ellipse(self, cx: float, cy: float, rx: float, ry: float) -> torch.Tensor:
        rx, ry = max(rx, 0.6), max(ry, 0.6)
        return ((self.xx + 0.5 - cx) / rx) ** 2 + ((self.yy + 0.5 - cy) / ry) ** 2 <= 1.0

    def paint(self, mask: torch.Tensor, cls: int, thing: bool = False) -> bool:
        """Paint ``cls`` (a new instance when ``thing``); classes >= num_classes are skipped."""
        if cls >= self.num_classes or not mask.any():
            return False
        self.label[mask] = cls
        if thing:
            self.inst[mask] = cls * 1000 + self.count[cls]
            self.count[cls] += 1
        else:
            self.inst[mask] = -1
        return True

    def instances(self) -> torch.Tensor:
        return torch.where(self.inst < 0, self.label, self.inst)


def street_scene(height: int, width: int, generator: torch.Generator,
                 num_classes: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one street-like scene.

    Args:
        height, width: map size (at least 16 x 16; meant for 32x64 .. 256x512).
        generator: the source of every random choice.
        num_classes: 6..12; classes with id >= num_classes are not drawn (terrain falls back to
            sidewalk).

    Returns:
        label (H, W) int64 in [0, num_classes), instance (H, W) int64.
    """
    if height < 16 or width < 16:
        raise ValueError(f"synthetic scenes need at least 16x16 pixels, got {height}x{width}")
    if not _MIN_CLASSES <= num_classes <= len(SYNTHETIC_CLASSES):
        raise ValueError(f"num_classes must be in [{_MIN_CLASSES}, {len(SYNTHETIC_CLASSES)}], got {num_classes}")
    H, W = height, width

    def u(lo: float = 0.0, hi: float = 1.0) -> float:
        return lo + (hi - lo) * torch.rand((), generator=generator).item()

    def ri(lo: int, hi: int) -> int:  # inclusive
        return int(torch.randint(lo, hi + 1, (), generator=generator).item())

    cv = _Canvas(H, W, num_classes)
    yy, xx = cv.yy + 0.5, cv.xx + 0.5
    horizon = H * u(0.36, 0.5)
    ground = H - horizon

    # skyline: buildings and trees standing on the horizon
    x = -W * u(0.0, 0.1)
    while x < W:
        bw = W * u(0.1, 0.26)
        top = horizon - H * u(0.12, 0.34)
        if u() < 0.72:
            cv.paint(cv.rect(x, top, x + bw, horizon + 1), BUILDING)
        else:
            trunk = cv.rect(x + bw * 0.45, horizon - H * 0.08, x + bw * 0.55, horizon + 1)
            cv.paint(trunk | cv.ellipse(x + bw / 2, top + (horizon - top) * 0.4, bw / 2, (horizon - top) * 0.45),
                     VEGETATION)
        x += bw
    cv.paint(cv.rect(0, horizon, W, H), SIDEWALK)

    # road: a trapezoid from a vanishing point on the horizon
    vx = W * u(0.35, 0.65)
    lb, rb = W * u(-0.25, 0.15), W * u(0.85, 1.25)
    t = ((yy - horizon) / ground).clamp(min=0)
    below = yy >= horizon

    def edge(bottom: float) -> torch.Tensor:  # x of a line from (vx, horizon) to (bottom, H)
        return vx + (bottom - vx) * t

    cv.paint(below & (xx >= edge(lb)) & (xx < edge(rb)), ROAD)
    walk = W * u(0.12, 0.3)
    sides = []
    for side, bottom in (("left", lb), ("right", rb)):
        outer = bottom - walk if side == "left" else bottom + walk
        sides.append((side, bottom, outer))
        if u() < 0.7:  # terrain beyond the sidewalk
            region = below & ((xx < edge(outer)) if side == "left" else (xx >= edge(outer)))
            cv.paint(region, TERRAIN)
    if u() < 0.6:  # a fence along one side, in front of the skyline
        side, bottom, outer = sides[ri(0, 1)]
        fh = H * u(0.05, 0.09)
        x0, x1 = (0.0, vx * u(0.5, 0.9)) if side == "left" else (vx + (W - vx) * u(0.1, 0.5), float(W))
        cv.paint(cv.rect(x0, horizon - fh, x1, horizon + max(1.0, ground * 0.02)), FENCE)

    def on_walk(tt: float, which: str) -> float:  # an x on the sidewalk at depth tt
        _, bottom, outer = sides[0] if which == "left" else sides[1]
        a, b = vx + (bottom - vx) * tt, vx + (outer - vx) * tt
        return a + (b - a) * u(0.2, 0.8)

    # objects, drawn far to near: ("pole"|"car"|"truck"|"person", depth t in (0, 1])
    objects = [("pole", u(0.3, 0.95)) for _ in range(ri(1, 2))]
    objects += [("car", u(0.12, 1.0)) for _ in range(ri(1, 4))]
    objects += [("truck", u(0.1, 0.7)) for _ in range(ri(0, 1) if u() < 0.6 else 0)]
    objects += [("person", u(0.25, 1.0)) for _ in range(ri(1, 3))]
    objects.sort(key=lambda o: o[1])
    for kind, tt in objects:
        base = horizon + tt * ground
        s = 0.2 + 0.8 * tt  # apparent scale
        side = "left" if u() < 0.5 else "right"
        if kind == "pole":
            px = on_walk(tt, side)
            pw = max(1.0, W * 0.008 * s)
            ph = H * (0.25 + 0.25 * s)
            cv.paint(cv.rect(px - pw / 2, base - ph, px + pw / 2, base), POLE)
            if u() < 0.85:
                sw, sh = max(2.0, pw * 4), max(2.0, pw * 3)
                cv.paint(cv.rect(px - sw / 2, base - ph - sh * 0.3, px + sw / 2, base - ph + sh * 0.7), SIGN)
        elif kind in ("car", "truck"):
            a, b = vx + (lb - vx) * tt, vx + (rb - vx) * tt  # the road's extent at depth tt
            cx = a + (b - a) * u(0.15, 0.85)
            if kind == "car":
                cw, ch = W * 0.18 * s, H * 0.13 * s
                # sometimes a second car right behind the first one (touching instances)
                for k in range(2 if u() < 0.4 else 1):
                    x = cx + k * cw * 0.9
                    body = cv.rect(x - cw / 2, base - ch * 0.6, x + cw / 2, base)
                    cabin = cv.rect(x - cw * 0.3, base - ch, x + cw * 0.3, base - ch * 0.55)
                    cv.paint(body | cabin, CAR, thing=True)
            else:
                cw, ch = W * 0.2 * s, H * 0.2 * s
                box = cv.rect(cx - cw / 2, base - ch, cx + cw * 0.22, base)
                cab = cv.rect(cx + cw * 0.2, base - ch * 0.65, cx + cw / 2, base)
                cv.paint(box | cab, TRUCK, thing=True)
        else:  # person
            px = on_walk(tt, side)
            ph = H * 0.2 * s
            pw = max(1.0, ph * 0.3)
            body = cv.rect(px - pw / 2, base - ph * 0.8, px + pw / 2, base)
            head = cv.ellipse(px, base - ph * 0.88, pw * 0.45, ph * 0.12)
            cv.paint(body | head, PERSON, thing=True)
    return cv.label, cv.instances()


def _smooth_noise(height: int, width: int, cell: int, generator: torch.Generator) -> torch.Tensor:
    """(H, W) noise in about [-1, 1] varying over ``cell`` pixels (bilinear upsampled)."""
    coarse = torch.rand(1, 1, height // cell + 2, width // cell + 2, generator=generator) * 2 - 1
    up = F.interpolate(coarse, scale_factor=cell, mode="bilinear", align_corners=False)
    return up[0, 0, :height, :width]


def render_scene(label: torch.Tensor, instance: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Render an image of a synthetic scene.

    Args:
        label: (H, W) int64 class ids of :data:`SYNTHETIC_CLASSES`.
        instance: (H, W) int64 instance ids (per-object shading of cars, persons, trucks).
        generator: source of the noise and shading.

    Returns:
        (3, H, W) float32 in [-1, 1] (values of 8-bit pixels: ``k / 127.5 - 1``).
    """
    H, W = label.shape
    yy = torch.arange(H, dtype=torch.float32)[:, None].expand(H, W)
    xx = torch.arange(W, dtype=torch.float32)[None, :].expand(H, W)
    col = {i: torch.tensor(c, dtype=torch.float32)[:, None, None] for i, (_, c) in enumerate(SYNTHETIC_CLASSES)}

    def mix(mask: torch.Tensor, a: tuple[int, int, int], b: torch.Tensor) -> torch.Tensor:
        """Colour ``a`` where ``mask``, else ``b`` (a (3, 1, 1) colour): (3, H, W)."""
        a = torch.tensor(a, dtype=torch.float32).reshape(3, 1, 1)
        return torch.where(mask[None], a, b).expand(3, H, W)

    grain = torch.randn(H, W, generator=generator)
    blotch = _smooth_noise(H, W, max(2, min(H, W) // 12), generator)
    ones = torch.ones(3, H, W)
    tex = {
        SKY: col[SKY] + (torch.tensor([130.0, 95.0, 60.0])[:, None, None] * (yy / H).clamp(max=0.6) / 0.6),
        BUILDING: mix(((xx % 8) < 4) & ((yy % 10) < 5), (175, 170, 120), col[BUILDING]),
        ROAD: col[ROAD] + 14.0 * grain[None],
        SIDEWALK: mix(((xx % 8) < 1) | ((yy % 6) < 1), (140, 20, 130), col[SIDEWALK]),
        CAR: mix((yy % 4) < 2, (60, 60, 200), col[CAR]),
        VEGETATION: col[VEGETATION] + torch.tensor([25.0, 45.0, 20.0])[:, None, None] * blotch[None],
        PERSON: mix((((xx // 2) + (yy // 2)) % 2) < 1, (120, 10, 40), col[PERSON]),
        POLE: col[POLE] * ones,
        SIGN: mix(((xx + yy) % 6) < 3, (150, 110, 0), col[SIGN]),
        TERRAIN: mix((yy % 6) < 3, (100, 190, 100), col[TERRAIN]),
        FENCE: mix((xx % 4) < 2, (110, 80, 80), col[FENCE]),
        TRUCK: mix((((xx // 4) + (yy // 4)) % 2) < 1, (60, 130, 170), col[TRUCK]),
    }
    image = torch.zeros(3, H, W)
    for cls, t in tex.items():
        m = label == cls
        if m.any():
            image = torch.where(m[None], t, image)

    # per-object shading (things) and per-image illumination
    shade = torch.ones(H, W)
    for iid in torch.unique(instance[instance >= 1000]).tolist():
        shade[instance == iid] = 0.75 + 0.5 * torch.rand((), generator=generator).item()
    light = 0.92 + 0.16 * torch.rand((), generator=generator).item()
    image = image * shade[None] * light + 3.0 * torch.randn(3, H, W, generator=generator)
    image = image.clamp(0, 255).round()
    return image / 127.5 - 1.0


class SyntheticScenes(Dataset):
    """A deterministic dataset of synthetic street scenes (see the module docstring).

    Args:
        num_images: number of items.
        height, width: image size (any, at least 16x16; e.g. 32x64 .. 256x512).
        seed: dataset seed; item ``i`` depends only on ``(seed, i, height, width, num_classes)``.
        num_classes: 6..12 classes of :data:`SYNTHETIC_CLASSES` to draw.

    Items: ``image`` (3, H, W) float32 in [-1, 1], ``label`` (H, W) int64 in [0, num_classes),
    ``instance`` (H, W) int64, ``path`` (``"synthetic/seed<seed>/<index>"``).
    """

    has_instances = True

    def __init__(self, num_images: int, height: int = 64, width: int = 128, seed: int = 0,
                 num_classes: int = 12) -> None:
        super().__init__()
        if num_images < 0:
            raise ValueError(f"num_images must be >= 0, got {num_images}")
        if height < 16 or width < 16:
            raise ValueError(f"synthetic scenes need at least 16x16 pixels, got {height}x{width}")
        if not _MIN_CLASSES <= num_classes <= len(SYNTHETIC_CLASSES):
            raise ValueError(f"num_classes must be in [{_MIN_CLASSES}, {len(SYNTHETIC_CLASSES)}], "
                             f"got {num_classes}")
        self.num_images, self.height, self.width = num_images, height, width
        self.seed, self.num_classes = seed, num_classes
        self.class_names = [n for n, _ in SYNTHETIC_CLASSES[:num_classes]]
        self.palette = SYNTHETIC_PALETTE[:num_classes]

    def __len__(self) -> int:
        return self.num_images

    def generator_for(self, index: int) -> torch.Generator:
        """The generator item ``index`` is drawn from."""
        return torch.Generator().manual_seed(derive_seed(self.seed, index, 0x5C3E))

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_images:
            if -self.num_images <= index < 0:
                index += self.num_images
            else:
                raise IndexError(f"index {index} out of range for {self.num_images} synthetic scenes")
        g = self.generator_for(index)
        label, inst = street_scene(self.height, self.width, g, self.num_classes)
        image = render_scene(label, inst, g)
        return {"image": image, "label": label, "instance": inst,
                "path": f"synthetic/seed{self.seed}/{index:06d}"}

    def __repr__(self) -> str:
        return (f"SyntheticScenes({self.num_images} images, {self.height}x{self.width}, "
                f"seed={self.seed}, num_classes={self.num_classes})")
