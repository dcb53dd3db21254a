"""Figures and tables from sweep results (``results.json`` of :mod:`gensemcom.evaluate`).

- :func:`figure_vs_snr` / :func:`plot_vs_snr`: a metric against SNR, one curve per system, one
  panel per channel (a row per dataset).
- :func:`figure_rate` / :func:`plot_rate`: a metric against the rate (channel uses or bits per pixel).
- :func:`compose_grid` / :func:`image_grid`: per image, the original and the map sent, then one
  column per SNR, a row per system and what it delivers (a system that sends a map and
  regenerates an image, like GESCO, gets a row for each).
- :func:`format_table`: the demo's text table; :func:`make_plots`: every figure of a sweep folder.

Rules that keep a figure honest: a system has one colour and one marker in every figure
(:func:`system_styles`: fixed for the known systems, derived from the name for others); every
legend entry states the curve's cost (complex channel uses per pixel) and the number of images
behind each point; per-image metrics carry a band (or error bars) of the 95 % confidence interval
of the mean over images (Student's t); metrics of the whole set (mIoU of the summed confusion,
FID, KID) have none and the panel says so.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .models.io import atomic_write

__all__ = ["load_results", "system_styles", "figure_vs_snr", "plot_vs_snr", "figure_rate", "plot_rate",
           "compose_grid", "image_grid", "format_table", "make_plots", "METRIC_LABELS", "SET_METRICS"]

METRIC_LABELS = {
    "psnr": "PSNR (dB)", "ssim": "SSIM", "ms_ssim": "MS-SSIM", "miou": "mIoU (segmenter on output)",
    "map_miou": "mIoU of the received map", "lpips": "LPIPS", "fid": "FID", "kid": "KID",
    "diversity": "diversity (mean |a-b|)", "lost_fraction": "fraction of images lost",
    "miou_per_image": "mean per-image mIoU (segmenter)", "map_miou_per_image": "mean per-image mIoU of the map",
    "channel_uses_per_pixel": "complex channel uses per pixel", "bpp": "bits per pixel",
}
#: metrics of the whole set (no per-image values, so no confidence band)
SET_METRICS = ("miou", "map_miou", "fid", "kid", "lost_fraction")

# the known systems: one colour (tab20) and marker each, fixed whatever else a figure holds
_KNOWN = {
    "gesco": ("#1f77b4", "o"), "gesco-map": ("#aec7e8", "s"), "gesco-digital": ("#17becf", "D"),
    "q-gesco": ("#393b79", "o"), "qgesco": ("#393b79", "o"), "spic": ("#bcbd22", "s"),
    "diff-go": ("#637939", "^"), "diffgo": ("#637939", "^"), "diff-jscc": ("#843c39", "v"),
    "diffjscc": ("#843c39", "v"), "deepjscc": ("#ff7f0e", "P"),
    "map+ldpc": ("#9467bd", "^"), "map+capacity": ("#c5b0d5", "v"),
    "jpeg+ldpc": ("#d62728", "X"), "jpeg+capacity": ("#ff9896", "*"),
    "webp+ldpc": ("#2ca02c", "<"), "webp+capacity": ("#98df8a", ">"),
    "jpeg2000+ldpc": ("#8c564b", "p"), "jpeg2000+capacity": ("#c49c94", "h"),
    "jpegxl+ldpc": ("#e377c2", "d"), "jpegxl+capacity": ("#f7b6d2", "H"),
    "hevc+ldpc": ("#7f7f7f", "8"), "hevc+capacity": ("#c7c7c7", "o"),
}
# other systems: colours none of the known ones has (tab20b/tab20c), a marker each
_COLOURS = ["#8c6d31", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363", "#e7ba52", "#ad494a",
            "#a55194", "#6baed6", "#fd8d3c", "#74c476", "#9e9ac8", "#5254a3"]
_MARKERS = "osD^v<>pPX*hHd8"


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """A sweep folder's (or a file's) results, with ``snr_db`` as floats (``inf`` for noiseless)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"no results file at {path} (run `gensemcom evaluate` first)")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    for c in results.get("results", []):
        c["snr_db"] = [float(x) for x in c["snr_db"]]  # JSON keeps a noiseless SNR as "inf"
    return results


def system_styles(names: Sequence[str]) -> dict[str, dict[str, str]]:
    """``{name: {"color", "marker"}}``: distinct within ``names``, and a function of the name alone
    (the same in every figure), except that two unknown names whose hashes collide in one call
    are told apart (the figures here call it over every system of a results file).

    The known systems (GESCO, its variants, the baselines, the systems of this package) have fixed
    styles with colours of their own; any other name gets the (colour, marker) pair that a hash of
    the name picks among the colours no known system has."""
    out: dict[str, dict[str, str]] = {}
    for n in set(names):
        if n in _KNOWN:
            out[n] = {"color": _KNOWN[n][0], "marker": _KNOWN[n][1]}
    combos = [(c, m) for m in _MARKERS for c in _COLOURS]
    used: set[tuple[str, str]] = set()
    for n in sorted(set(names) - set(out)):
        i = zlib.crc32(n.encode()) % len(combos)
        while combos[i] in used:
            i = (i + 1) % len(combos)
        used.add(combos[i])
        out[n] = {"color": combos[i][0], "marker": combos[i][1]}
    return out


def _results_styles(results: dict) -> dict[str, dict[str, str]]:
    return system_styles([c["system"] for c in results["results"]])


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


def _span(values: Sequence[float | None], fmt: str) -> str:
    v = [x for x in values if x is not None]
    if not v:
        return "?"
    lo, hi = min(v), max(v)
    if math.isclose(lo, hi, rel_tol=1e-3, abs_tol=1e-9):
        return format(lo, fmt)
    return f"{format(lo, fmt)}-{format(hi, fmt)}"


def curve_label(c: dict) -> str:
    """``"gesco: 6 uses/px, n=8"``: the system, its channel uses per pixel (a range when it
    varies with SNR) and the images per point."""
    uses = _span(c.get("channel_uses_per_pixel", []), ".3g")
    n = _span(c.get("images", []), "d")
    return f"{c['system']}: {uses} uses/px, n={n}"


def _points(c: dict, xkey: str, metric: str) -> tuple[list, list, list]:
    """(x, y, ci) where both x and y are finite; ci None where there is none."""
    ci = c.get(f"{metric}_ci95") or [None] * len(c[metric])
    xs, ys, es = [], [], []
    for x, y, e in zip(c[xkey], c[metric], ci):
        if x is None or y is None or not math.isfinite(x) or not math.isfinite(y):
            continue
        xs.append(x)
        ys.append(y)
        es.append(e)
    return xs, ys, es


def _band_note(metric: str) -> str:
    if metric in SET_METRICS:
        return "no band: one value per set"
    return "band: 95% CI of the mean over images"


def figure_vs_snr(results: dict, metric: str, datasets: Sequence[str] | None = None,
                  systems: Sequence[str] | None = None, title: str | None = None):
    """The figure of :func:`plot_vs_snr` (a matplotlib Figure, not saved)."""
    plt = _plt()
    curves = _curves(results, metric, datasets, systems)
    if not curves:
        raise ValueError(f"no curve in the results has metric {metric!r}")
    dsets = sorted({c["dataset"] for c in curves})
    chans = sorted({c["channel"] for c in curves})
    style = _results_styles(results)
    fig, axes = plt.subplots(len(dsets), len(chans), figsize=(5.2 * len(chans), 3.8 * len(dsets)),
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
                xs, ys, es = _points(c, "snr_db", metric)
                st = style[c["system"]]
                ax.plot(xs, ys, label=curve_label(c), color=st["color"], marker=st["marker"], markersize=4)
                band = [(x, y, e) for x, y, e in zip(xs, ys, es) if e is not None]
                if band:
                    bx, by, be = (np.array(v, dtype=float) for v in zip(*band))
                    ax.fill_between(bx, by - be, by + be, color=st["color"], alpha=0.18, linewidth=0)
            if ref.get(d) is not None:
                ax.axhline(ref[d], color="0.5", ls="--", lw=1, label="clean images")
            ax.set_title(f"{d} / {ch} ({_band_note(metric)})", fontsize=9)
            ax.set_xlabel("SNR (dB, Es/N0 per complex channel use)" if ch != "legacy" else "GESCO table key")
            if j == 0:
                ax.set_ylabel(METRIC_LABELS.get(metric, metric))
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    fig.suptitle(title or f"{METRIC_LABELS.get(metric, metric)} vs SNR")
    fig.tight_layout()
    return fig


def plot_vs_snr(results: dict, metric: str, out: str | os.PathLike, datasets: Sequence[str] | None = None,
                systems: Sequence[str] | None = None, title: str | None = None) -> Path:
    """``metric`` vs SNR as a PNG: a panel per channel (columns) and dataset (rows), a curve per
    system with its 95 % CI band; for mIoU the segmenter's value on the clean images (system
    ``original``) is drawn dashed."""
    return _save(figure_vs_snr(results, metric, datasets, systems, title), out)


def figure_rate(results: dict, metric: str, rate: str = "channel_uses_per_pixel",
                datasets: Sequence[str] | None = None, systems: Sequence[str] | None = None):
    """The figure of :func:`plot_rate` (a matplotlib Figure, not saved)."""
    plt = _plt()
    curves = [c for c in _curves(results, metric, datasets, systems) if rate in c]
    if not curves:
        raise ValueError(f"no curve has both {metric!r} and {rate!r}")
    dsets = sorted({c["dataset"] for c in curves})
    chans = sorted({c["channel"] for c in curves})
    style = _results_styles(results)
    fig, axes = plt.subplots(len(dsets), len(chans), figsize=(5.2 * len(chans), 3.8 * len(dsets)), squeeze=False)
    for i, d in enumerate(dsets):
        for j, ch in enumerate(chans):
            ax = axes[i][j]
            for c in curves:
                if c["dataset"] != d or c["channel"] != ch:
                    continue
                xs, ys, es = _points(c, rate, metric)
                if not xs:
                    continue
                st = style[c["system"]]
                err = None if all(e is None for e in es) else [0.0 if e is None else e for e in es]
                ax.errorbar(xs, ys, yerr=err, label=curve_label(c), color=st["color"], marker=st["marker"],
                            markersize=4, linestyle="none", capsize=2, elinewidth=0.8)
            ax.set_title(f"{d} / {ch} (one point per SNR; "
                         f"{'no bars: one value per set' if metric in SET_METRICS else 'bars: 95% CI'})", fontsize=9)
            ax.set_xlabel(METRIC_LABELS.get(rate, rate))
            ax.set_ylabel(METRIC_LABELS.get(metric, metric))
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_rate(results: dict, metric: str, out: str | os.PathLike, rate: str = "channel_uses_per_pixel",
              datasets: Sequence[str] | None = None, systems: Sequence[str] | None = None) -> Path:
    """``metric`` against ``rate`` (channel uses or bits per pixel) as a PNG: one point per SNR
    with 95 % CI bars, a panel per channel and dataset."""
    return _save(figure_rate(results, metric, rate, datasets, systems), out)


# ------------------------------------------------------------------------------------------------
# image grids


def _load_rgb(path: Path, size: tuple[int, int]) -> np.ndarray:
    if path.is_file():
        im = Image.open(path).convert("RGB")
        if im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.NEAREST)
        return np.asarray(im)
    return np.full((*size, 3), 255, np.uint8)  # not saved (e.g. an item the sweep skipped)


def compose_grid(folder: str | os.PathLike, dataset: str, channel: str, systems: Sequence[str],
                 snrs: Sequence[str], count: int = 2, label_width: int = 130,
                 gap: int = 3) -> tuple[Image.Image, dict[str, Any]]:
    """The image grid of :func:`image_grid` and its layout.

    Columns: ``original``, ``map sent``, then one per SNR (headed ``"<snr> dB"``, or ``"key <k>"``
    on the legacy channel). Rows: for each of the first ``count`` images, a row per system and
    output: ``"<system>"`` (the image it delivers) and ``"<system>: received map"`` (the map it
    delivers, for systems that send one). Every row has one cell per column.

    Returns:
        ``(image, layout)`` with layout ``{"columns": [...], "rows": [...], "cells": [[(x, y, w, h),
        ...] per row], "width", "height"}``.
    """
    folder = Path(folder)
    root = folder / "images" / dataset
    first = root / "original" / "0000.png"
    if not first.is_file():
        raise FileNotFoundError(f"{first} not found: run the sweep with --save-images >= 1")
    h, w = np.asarray(Image.open(first)).shape[:2]
    columns = ["original", "map sent"] + [(f"key {s}" if channel == "legacy" else f"{s} dB") for s in snrs]
    rows: list[list[np.ndarray]] = []
    names: list[str] = []
    for i in range(count):
        stem = f"{i:04d}"
        if not (root / "original" / f"{stem}.png").is_file():
            break
        orig = [_load_rgb(root / "original" / f"{stem}.png", (h, w)),
                _load_rgb(root / "original" / f"{stem}_map.png", (h, w))]
        for s in systems:
            for suffix, what in ((".png", ""), ("_map.png", ": received map")):
                if not any((root / s / channel / snr / f"{stem}{suffix}").is_file() for snr in snrs):
                    continue
                rows.append(orig + [_load_rgb(root / s / channel / snr / f"{stem}{suffix}", (h, w)) for snr in snrs])
                names.append(f"#{i} {s}{what}")
    if not rows:
        raise ValueError(f"no saved images for dataset {dataset!r} in {folder}")
    title_h, header_h = 14, 14
    top = title_h + header_h
    width = label_width + len(columns) * (w + gap)
    height = top + len(rows) * (h + gap)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    unit = "GESCO table key" if channel == "legacy" else "SNR in dB (Es/N0 per complex channel use)"
    draw.text((2, 1), f"{dataset} / {channel}: columns per {unit}", fill="black")
    for c, name in enumerate(columns):
        draw.text((label_width + c * (w + gap) + 1, title_h), name[: max(3, w // 6)], fill="black")
    cells = []
    for r, (row, name) in enumerate(zip(rows, names)):
        y = top + r * (h + gap)
        # the row's name, wrapped to the label column
        words, line, lines = name.split(" "), "", []
        for word in words:
            if len(line) + len(word) + 1 > label_width // 6 and line:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        lines.append(line)
        for k, text in enumerate(lines[:4]):
            draw.text((2, y + 2 + 11 * k), text, fill="black")
        boxes = []
        for c, cell in enumerate(row):
            x = label_width + c * (w + gap)
            canvas.paste(Image.fromarray(cell), (x, y))
            boxes.append((x, y, w, h))
        cells.append(boxes)
    return canvas, {"columns": columns, "rows": names, "cells": cells, "width": width, "height": height}


def image_grid(folder: str | os.PathLike, out: str | os.PathLike, dataset: str, channel: str,
               systems: Sequence[str], snrs: Sequence[str], count: int = 2, label_width: int = 130) -> Path:
    """An image grid from the PNGs a sweep saved (``--save-images``), as a PNG; see :func:`compose_grid`."""
    canvas, _ = compose_grid(folder, dataset, channel, systems, snrs, count, label_width)
    out = Path(out)
    atomic_write(out, lambda p: canvas.save(p, format="PNG"))
    return out


# ------------------------------------------------------------------------------------------------
# table and every figure of a folder


def _fmt(v: float | None, digits: int = 1) -> str:
    return "    -" if v is None else f"{v:5.{digits}f}"


def format_table(results: dict, metrics: Sequence[str] = ("psnr", "miou", "map_miou")) -> str:
    """A per dataset/channel text table: one row per system, ``metric`` at each SNR, with the
    system's channel uses per pixel and the images per point."""
    curves = [c for c in results["results"] if c["system"] != "original"]
    lines: list[str] = []
    varies = False
    for dset in sorted({c["dataset"] for c in curves}):
        for ch in sorted({c["channel"] for c in curves if c["dataset"] == dset}):
            rows = [c for c in curves if c["dataset"] == dset and c["channel"] == ch]
            snrs = sorted({s for c in rows for s in c["snr_db"]})
            head = " ".join(f"{('inf' if math.isinf(s) else f'{s:g}'):>5}" for s in snrs)
            for m in metrics:
                have = [c for c in rows if m in c and any(v is not None for v in c[m])]
                if not have:
                    continue
                lines += ["", f"{dset} / {ch}: {m} at SNR (dB)", f"{'system':<16} {'uses/px*':>8} {'n':>4} {head}"]
                for c in have:
                    vals = dict(zip(c["snr_db"], c[m]))
                    cu = [v for v in c.get("channel_uses_per_pixel", []) if v is not None]
                    mark = " "
                    if cu and not math.isclose(min(cu), max(cu), rel_tol=1e-3, abs_tol=1e-9):
                        mark, varies = "~", True
                    n = _span(c.get("images", []), "d")
                    cells = " ".join(_fmt(vals.get(s), 1 if m == "psnr" else 2) for s in snrs)
                    lines.append(f"{c['system']:<16} {mark}{(sum(cu) / len(cu) if cu else 0):7.2f} {n:>4} {cells}")
    if lines:
        lines += ["", "* uses/px: complex channel uses per pixel, the mean over the images and the SNRs of the row"
                  + ("; ~ marks a cost that changes with the SNR" if varies else "")
                  + ". n: images per point."]
    return "\n".join(lines).lstrip("\n")


def make_plots(folder: str | os.PathLike, out: str | os.PathLike | None = None, metrics: Sequence[str] | None = None,
               grid_images: int = 2) -> list[Path]:
    """Every figure a sweep folder (or its ``results.json``) supports; returns the files written."""
    folder = Path(folder)
    results = load_results(folder)
    root = folder if folder.is_dir() else folder.parent
    out = Path(out) if out else root / "plots"
    present = {k for c in results["results"] if c["system"] != "original" for k in c if isinstance(c.get(k), list)}
    wanted = list(metrics) if metrics else [m for m in ("psnr", "ms_ssim", "ssim", "miou", "map_miou", "lpips", "fid",
                                                         "diversity", "lost_fraction") if m in present]
    unknown = [m for m in wanted if m not in present]
    if unknown:
        raise ValueError(f"no curve has {', '.join(unknown)}; these results have "
                         f"{', '.join(m for m in METRIC_LABELS if m in present)}")
    written = []
    for m in wanted:
        written.append(plot_vs_snr(results, m, out / f"{m}_vs_snr.png"))
    # rate against distortion (PSNR, MS-SSIM), meaning (mIoU) and perception (LPIPS, FID)
    for m in ("psnr", "ms_ssim", "miou", "lpips", "fid"):
        if m in wanted:
            written.append(plot_rate(results, m, out / f"{m}_vs_channel_uses.png"))
    if "bpp" in present and "psnr" in wanted:
        written.append(plot_rate(results, "psnr", out / "psnr_vs_bpp.png", rate="bpp"))
    if grid_images and (root / "images").is_dir():
        for dataset in sorted(p.name for p in (root / "images").iterdir() if p.is_dir()):
            curves = [c for c in results["results"] if c["dataset"] == dataset and c["system"] != "original"]
            for channel in sorted({c["channel"] for c in curves}):
                systems = [c["system"] for c in curves if c["channel"] == channel]
                snrs = sorted({s for c in curves if c["channel"] == channel for s in c["snr_db"]})
                keys = ["inf" if s == float("inf") else f"{s:g}" for s in snrs]
                written.append(image_grid(root, out / f"grid_{dataset}_{channel}.png", dataset, channel,
                                          systems, keys, count=grid_images))
    return written
