"""Plots that cannot mislead (issue 9 item 6), checked on the figure objects and layouts: one
style per system everywhere, the cost and the images per point in every legend entry, 95 %
confidence bands, grids with SNR headers and rows of one width, a table that says what it averages."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from PIL import Image
from scipy.stats import t as student_t

from gensemcom.data import build_eval_data
from gensemcom.evaluate import Sweep, SweepConfig, read_records
from gensemcom.plot import (compose_grid, figure_rate, figure_vs_snr, format_table, load_results, make_plots,
                            system_styles)
from gensemcom.systems.gesco import GESCOSystem
from gensemcom.systems.registry import SystemOptions, build_system


def _curve(dataset, system, channel, uses, n, psnr, ci=None, miou=None):
    c = {"dataset": dataset, "system": system, "channel": channel, "snr_db": [-5.0, 0.0, 10.0],
         "images": [n] * 3, "channel_uses_per_pixel": uses, "psnr": psnr}
    if ci is not None:
        c["psnr_ci95"] = ci
    if miou is not None:
        c["miou"] = miou
    return c


RESULTS = {"results": [
    _curve("synthetic", "gesco", "awgn", [6.0] * 3, 8, [14.0, 15.0, 16.0], [0.5, 0.4, 0.3], [0.7, 0.8, 0.8]),
    _curve("synthetic", "gesco", "rayleigh", [6.0] * 3, 8, [13.0, 14.0, 15.0], [0.6, 0.5, 0.4], [0.6, 0.7, 0.8]),
    _curve("synthetic", "jpeg+capacity", "awgn", [0.3, 0.4, 0.5], 8, [10.0, 18.0, 25.0], [1.0, 0.8, 0.6],
           [0.1, 0.5, 0.8]),
    _curve("synthetic", "deepjscc", "rayleigh", [0.5] * 3, 8, [12.0, 13.0, 14.0], [0.2, 0.2, 0.2],
           [0.5, 0.6, 0.6]),
    _curve("photos", "jpeg+capacity", "awgn", [0.3, 0.4, 0.5], 4, [9.0, 17.0, 24.0], [2.0, 1.5, 1.0]),
    _curve("photos", "my-system", "awgn", [1.0] * 3, 4, [11.0, 12.0, 13.0], None),
    {"dataset": "synthetic", "system": "original", "channel": "none", "snr_db": [math.inf], "images": [8],
     "miou": [0.98]},
]}


def _lines(fig):
    """(label, data line) of every curve: plotted lines, and the data lines of error-bar plots."""
    out = [(ln.get_label(), ln) for ax in fig.axes for ln in ax.get_lines()
           if not ln.get_label().startswith(("clean", "_"))]
    return out + [(c.get_label(), c.lines[0]) for ax in fig.axes for c in ax.containers]


def test_one_style_per_system_whatever_else_is_plotted():
    few = system_styles(["gesco", "jpeg+ldpc"])
    many = system_styles(["zeta", "jpeg+ldpc", "deepjscc", "gesco", "alpha", "q-gesco", "spic", "my-system"])
    assert few["gesco"] == many["gesco"] and few["jpeg+ldpc"] == many["jpeg+ldpc"]
    pairs = [(s["color"], s["marker"]) for s in many.values()]
    assert len(set(pairs)) == len(pairs)  # no two systems look alike
    colours = [s["color"] for n, s in many.items() if n in ("gesco", "jpeg+ldpc", "deepjscc", "q-gesco", "spic")]
    assert len(set(colours)) == len(colours)  # the known systems differ in colour, not only in marker
    assert system_styles(["my-system"]) == {"my-system": many["my-system"]}
    # a figure draws a system in its style, in every panel, and so does the rate figure
    styles = system_styles([c["system"] for c in RESULTS["results"]])
    assert styles["gesco"] == many["gesco"] and styles["my-system"] == many["my-system"]
    for fig in (figure_vs_snr(RESULTS, "psnr"), figure_rate(RESULTS, "psnr")):
        assert len(_lines(fig)) == 6
        for label, ln in _lines(fig):
            name = label.split(":")[0]
            assert (ln.get_color(), ln.get_marker()) == (styles[name]["color"], styles[name]["marker"]), name


def test_legends_state_the_cost_and_the_images_per_point():
    fig = figure_vs_snr(RESULTS, "psnr")
    labels = {t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()}
    assert "gesco: 6 uses/px, n=8" in labels
    assert "deepjscc: 0.5 uses/px, n=8" in labels
    assert "jpeg+capacity: 0.3-0.5 uses/px, n=8" in labels and "jpeg+capacity: 0.3-0.5 uses/px, n=4" in labels
    # every curve is in the legend of its own panel (so two datasets with other costs are not merged)
    for ax in (a for a in fig.axes if a.get_lines()):
        assert {ln.get_label() for ln in ax.get_lines()} <= {t.get_text() for t in ax.get_legend().get_texts()}


def test_per_image_metrics_have_a_95ci_band_and_set_metrics_say_they_have_none():
    fig = figure_vs_snr(RESULTS, "psnr", datasets=["synthetic"], systems=["gesco"], title="x")
    ax = fig.axes[0]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1
    verts = bands[0].get_paths()[0].vertices
    upper = {(x, y) for x, y in verts}
    for x, y, e in zip([-5.0, 0.0, 10.0], [14.0, 15.0, 16.0], [0.5, 0.4, 0.3]):
        assert (x, pytest.approx(y + e)) in [(a, pytest.approx(b)) for a, b in upper]
        assert any(a == x and b == pytest.approx(y - e) for a, b in upper)
    assert "95% CI" in ax.get_title()
    fig = figure_vs_snr(RESULTS, "miou")
    assert all(not any(isinstance(c, PolyCollection) for c in a.collections) for a in fig.axes)
    assert all("no band" in a.get_title() for a in fig.axes)
    # the rate figure: error bars of the same half-widths
    fig = figure_rate(RESULTS, "psnr", datasets=["synthetic"], systems=["gesco"])
    segs = [s for c in fig.axes[0].collections for s in c.get_segments()]
    assert sorted(round(float(s[1][1] - s[0][1]), 6) for s in segs) == [0.6, 0.8, 1.0]


def test_the_ci_is_that_of_the_mean_over_images(tmp_path):
    """The band's half-width from a real sweep: Student's t over the images (each image's samples
    averaged first), computed here from the records."""
    data = build_eval_data("synthetic:6", 32, 64, seed=2)
    systems = {"jpeg+capacity": build_system("jpeg+capacity", SystemOptions(bandwidth=0.5)),
               "gesco-map": GESCOSystem(None)}
    sweep = Sweep(tmp_path, systems, data, SweepConfig(channels=["awgn"], snrs=[5.0], batch_size=4, save_images=2))
    sweep.run(progress=False)
    res = load_results(sweep.finish())
    c = next(c for c in res["results"] if c["system"] == "jpeg+capacity")
    vals = np.array([v for r in read_records(tmp_path).values() if r["system"] == "jpeg+capacity"
                     for v in r["metrics"]["psnr"][0]])
    assert len(vals) == 6 == c["images"][0]
    want = student_t.ppf(0.975, 5) * vals.std(ddof=1) / math.sqrt(6)
    assert c["psnr_ci95"][0] == pytest.approx(want, rel=1e-9)
    m = next(c for c in res["results"] if c["system"] == "gesco-map")
    assert m["map_miou_per_image_ci95"][0] > 0 and "map_miou_ci95" not in m  # the set's mIoU has none
    files = {f.name for f in make_plots(tmp_path, tmp_path / "plots")}
    assert {"psnr_vs_snr.png", "map_miou_vs_snr.png", "grid_synthetic_awgn.png"} <= files


def _png(path: Path, value: int, h: int = 8, w: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)


def test_grid_has_snr_headers_and_rows_of_one_width(tmp_path):
    root = tmp_path / "images" / "synthetic"
    for i in range(2):
        _png(root / "original" / f"{i:04d}.png", 10)
        _png(root / "original" / f"{i:04d}_map.png", 20)
        for snr in ("-5", "20"):
            _png(root / "gesco" / "awgn" / snr / f"{i:04d}.png", 30)      # GESCO: an image and a map
            _png(root / "gesco" / "awgn" / snr / f"{i:04d}_map.png", 40)
            _png(root / "jpeg+ldpc" / "awgn" / snr / f"{i:04d}.png", 50)  # an image only
            _png(root / "map+ldpc" / "awgn" / snr / f"{i:04d}_map.png", 60)  # a map only
    canvas, layout = compose_grid(tmp_path, "synthetic", "awgn", ["gesco", "jpeg+ldpc", "map+ldpc"], ["-5", "20"])
    assert layout["columns"] == ["original", "map sent", "-5 dB", "20 dB"]
    assert layout["rows"][:4] == ["#0 gesco", "#0 gesco: received map", "#0 jpeg+ldpc", "#0 map+ldpc: received map"]
    assert len(layout["rows"]) == 8
    assert all(len(r) == 4 for r in layout["cells"])  # every row: one cell per column
    xs = [[x for x, _, _, _ in r] for r in layout["cells"]]
    assert all(x == xs[0] for x in xs)  # columns line up
    arr = np.asarray(canvas)
    x0, y0, w, h = layout["cells"][1][2]  # GESCO's received map at -5 dB
    assert (arr[y0:y0 + h, x0:x0 + w] == 40).all()
    x0, y0, w, h = layout["cells"][0][3]  # GESCO's image at 20 dB
    assert (arr[y0:y0 + h, x0:x0 + w] == 30).all()
    assert canvas.size == (layout["width"], layout["height"])
    _, legacy = compose_grid(tmp_path, "synthetic", "awgn", ["jpeg+ldpc"], ["-5", "20"], count=1)
    assert legacy["rows"] == ["#0 jpeg+ldpc"]


def test_table_says_what_uses_per_pixel_averages():
    text = format_table(RESULTS)
    assert "synthetic / awgn: psnr at SNR (dB)" in text
    header = next(ln for ln in text.splitlines() if ln.startswith("system"))
    assert "uses/px*" in header and " n " in header
    assert "* uses/px: complex channel uses per pixel, the mean over the images and the SNRs of the row" in text
    assert "~ marks a cost that changes with the SNR" in text
    lines = text.splitlines()
    start = lines.index("synthetic / awgn: psnr at SNR (dB)")
    row = next(ln for ln in lines[start:] if ln.startswith("jpeg+capacity"))
    assert "~   0.40" in row and row.split()[3] == "8"
    gesco = next(ln for ln in lines[start:] if ln.startswith("gesco"))
    assert gesco.split()[1:3] == ["6.00", "8"]  # a constant cost has no mark
