"""Figures from sweep results (``results.json`` of :mod:`gensemcom.evaluate`), as PNG.

- :func:`plot_vs_snr`: a metric against SNR, one curve per system, one panel per channel (a
  row per dataset).
- :func:`plot_rate`: a metric against the rate (channel uses per pixel, or bits per pixel).
- :func:`image_grid`: per image, a row per system: original, map sent, then what arrived at each
  SNR (the regenerated image, with the received map beside it when the system sends a map).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .models.io import atomic_write

__all__ = ["load_results", "plot_vs_snr", "plot_rate", "image_grid", "METRIC_LABELS"]

METRIC_LABELS = {
    "psnr": "PSNR (dB)", "ssim": "SSIM", "ms_ssim": "MS-SSIM", "miou": "mIoU (segmenter on output)",
    "map_miou": "mIoU of the received map", "lpips": "LPIPS", "fid": "FID", "kid": "KID",
    "diversity": "diversity (mean |a-b|)", "lost_fraction": "fraction of images lost",
    "channel_uses_per_pixel": "channel uses per pixel", "bpp": "bits per pixel",
}


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"no results file at {path} (run `gensemcom evaluate` first)")
    results = json.loads(path.read_text())
    for c in results.get("results", []):
        c["snr_db"] = [float(x) for x in c["snr_db"]]  # JSON keeps a noiseless SNR as "inf"
    return results


def _save(fig, out: str | os.PathLike) -> Path:
    out = Path(out)
    atomic_write(out, lambda p: fig.savefig(p, format="png", dpi=120, bbox_inches="tight"))
    _plt().close(fig)
    return out


def _curves(results: dict, metric: str, datasets: Sequence[str] | None, systems: Sequence[str] | None) -> list[dict]:
    out = []
    for c in results["results"]:
        if c["system"] == "original" or metric not in c:
            continue
        if datasets and c["dataset"] not in datasets or systems and c["system"] not in systems:
            continue
        out.append(c)
    return out


def _style(systems: list[str]) -> dict[str, dict]:
    markers = "osD^v<>pPX*h"
    cmap = _plt().get_cmap("tab10")
    return {s: {"color": cmap(i % 10), "marker": markers[i % len(markers)]} for i, s in enumerate(systems)}


def plot_vs_snr(results: dict, metric: str, out: str | os.PathLike, datasets: Sequence[str] | None = None,
                systems: Sequence[str] | None = None, title: str | None = None) -> Path:
    """``metric`` vs SNR: a panel per channel (columns) and dataset (rows), a curve per system.
    For mIoU the segmenter's value on the clean images (system ``original``) is drawn dashed."""
    plt = _plt()
    curves = _curves(results, metric, datasets, systems)
    if not curves:
        raise ValueError(f"no curve in the results has metric {metric!r}")
    dsets = sorted({c["dataset"] for c in curves})
    chans = sorted({c["channel"] for c in curves})
    style = _style(sorted({c["system"] for c in curves}))
    fig, axes = plt.subplots(len(dsets), len(chans), figsize=(4.6 * len(chans), 3.4 * len(dsets)),
                             squeeze=False, sharey="row")
    # the clean images' value: informative for the segmenter's mIoU (its own ceiling), trivial
    # (perfect) for the fidelity metrics, so drawn only for the former
    ref = {c["dataset"]: c.get(metric, [None])[0] for c in results["results"]
           if c["system"] == "original" and metric in ("miou", "miou_per_image")}
    for i, d in enumerate(dsets):
        for j, ch in enumerate(chans):
            ax = axes[i][j]
            for c in curves:
                if c["dataset"] != d or c["channel"] != ch:
                    continue
                xs = [x for x, y in zip(c["snr_db"], c[metric]) if y is not None and math.isfinite(x)]
                ys = [y for x, y in zip(c["snr_db"], c[metric]) if y is not None and math.isfinite(x)]
                ax.plot(xs, ys, label=c["system"], **style[c["system"]], markersize=4)
            if ref.get(d) is not None:
                ax.axhline(ref[d], color="0.5", ls="--", lw=1, label="clean images")
            ax.set_title(f"{d} / {ch}", fontsize=10)
            ax.set_xlabel("SNR (dB)" if ch != "legacy" else "GESCO table key")
            if j == 0:
                ax.set_ylabel(METRIC_LABELS.get(metric, metric))
            ax.grid(alpha=0.3)
    handles, labels = {}, {}
    for ax in axes.flat:
        for h, l in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(l, h)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(6, len(handles)),
               bbox_to_anchor=(0.5, -0.02), fontsize=8)
    fig.suptitle(title or f"{METRIC_LABELS.get(metric, metric)} vs SNR")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return _save(fig, out)


def plot_rate(results: dict, metric: str, out: str | os.PathLike, rate: str = "channel_uses_per_pixel",
              datasets: Sequence[str] | None = None, systems: Sequence[str] | None = None) -> Path:
    """``metric`` against ``rate`` (channel uses or bits per pixel): one point per SNR, a panel
    per channel and dataset."""
    plt = _plt()
    curves = [c for c in _curves(results, metric, datasets, systems) if rate in c]
    if not curves:
        raise ValueError(f"no curve has both {metric!r} and {rate!r}")
    dsets = sorted({c["dataset"] for c in curves})
    chans = sorted({c["channel"] for c in curves})
    style = _style(sorted({c["system"] for c in curves}))
    fig, axes = plt.subplots(len(dsets), len(chans), figsize=(4.6 * len(chans), 3.4 * len(dsets)), squeeze=False)
    for i, d in enumerate(dsets):
        for j, ch in enumerate(chans):
            ax = axes[i][j]
            for c in curves:
                if c["dataset"] == d and c["channel"] == ch:
                    pts = [(x, y) for x, y in zip(c[rate], c[metric]) if x is not None and y is not None]
                    if pts:
                        ax.scatter(*zip(*pts), label=c["system"], s=18, **style[c["system"]])
            ax.set_title(f"{d} / {ch}", fontsize=10)
            ax.set_xlabel(METRIC_LABELS.get(rate, rate))
            ax.set_ylabel(METRIC_LABELS.get(metric, metric))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out)


def _load_rgb(path: Path, size: tuple[int, int]) -> np.ndarray:
    if path.is_file():
        return np.asarray(Image.open(path).convert("RGB"))
    return np.full((*size, 3), 255, np.uint8)  # not saved (e.g. a system that sends no image)


def image_grid(folder: str | os.PathLike, out: str | os.PathLike, dataset: str, channel: str,
               systems: Sequence[str], snrs: Sequence[str], count: int = 2, label_width: int = 110) -> Path:
    """An image grid from the PNGs a sweep saved (``--save-images``): for each of the first
    ``count`` images, a row per system: original | map sent | per SNR: received map (if the system
    sends one) and output image."""
    folder = Path(folder)
    root = folder / "images" / dataset
    first = root / "original" / "0000.png"
    if not first.is_file():
        raise FileNotFoundError(f"{first} not found: run the sweep with --save-images >= 1")
    h, w = np.asarray(Image.open(first)).shape[:2]
    gap = 3
    rows, names = [], []
    for i in range(count):
        stem = f"{i:04d}"
        if not (root / "original" / f"{stem}.png").is_file():
            break
        for s in systems:
            cells = [_load_rgb(root / "original" / f"{stem}.png", (h, w)),
                     _load_rgb(root / "original" / f"{stem}_map.png", (h, w))]
            sends_map = any((root / s / channel / snr / f"{stem}_map.png").is_file() for snr in snrs)
            sends_img = any((root / s / channel / snr / f"{stem}.png").is_file() for snr in snrs)
            for snr in snrs:
                d = root / s / channel / snr
                if sends_map:
                    cells.append(_load_rgb(d / f"{stem}_map.png", (h, w)))
                if sends_img:
                    cells.append(_load_rgb(d / f"{stem}.png", (h, w)))
            rows.append(cells)
            names.append(f"#{i} {s}")
    if not rows:
        raise ValueError(f"no saved images for dataset {dataset!r} in {folder}")
    ncol = max(len(r) for r in rows)
    header = 16
    canvas = Image.new("RGB", (label_width + ncol * (w + gap), header + len(rows) * (h + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((label_width, 2), f"{dataset} / {channel}: original, map sent, then per SNR ({', '.join(snrs)} dB)",
              fill="black")
    for r, (cells, name) in enumerate(zip(rows, names)):
        y = header + r * (h + gap)
        draw.text((2, y + h // 2 - 5), name[:18], fill="black")
        for c, cell in enumerate(cells):
            canvas.paste(Image.fromarray(cell), (label_width + c * (w + gap), y))
    out = Path(out)
    atomic_write(out, lambda p: canvas.save(p, format="PNG"))
    return out
