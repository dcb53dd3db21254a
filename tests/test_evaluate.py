"""Sweeps: measured values, resumption after a kill, sharding and merging, plots."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gensemcom.data import build_eval_data as build_data
from gensemcom.evaluate import EvalData, Sweep, SweepConfig, read_records
from gensemcom.metrics import ConfusionMatrix
from gensemcom.plot import make_plots
from gensemcom.systems.gesco import GESCOSystem
from gensemcom.systems.registry import SystemOptions, build_system

H, W = 32, 64


def _data(n: int = 4) -> list[EvalData]:
    return build_data(f"synthetic:{n}", H, W, seed=3)


def _systems() -> dict:
    return {"gesco-map": GESCOSystem(None),
            "jpeg+capacity": build_system("jpeg+capacity", SystemOptions(bandwidth=0.5))}


def _config(**kw) -> SweepConfig:
    base = dict(channels=["awgn", "rayleigh"], snrs=[0.0, 20.0], batch_size=2, seed=5)
    base.update(kw)
    return SweepConfig(**base)


def _strip(results: dict) -> list[dict]:
    """Curves without timings (which differ from run to run)."""
    return [{k: v for k, v in c.items() if k != "seconds_per_image"} for c in results["results"]]


def test_sweep_values_match_direct_computation(tmp_path):
    data = _data()
    sweep = Sweep(tmp_path, _systems(), data, _config())
    sweep.run(progress=False)
    results = json.loads(sweep.finish().read_text())
    curves = {(c["system"], c["channel"]): c for c in results["results"]}
    assert set(curves) == {("gesco-map", "awgn"), ("gesco-map", "rayleigh"), ("jpeg+capacity", "awgn"),
                           ("jpeg+capacity", "rayleigh"), ("original", "none")}
    # 2 batches x 2 SNRs x 2 channels x 2 systems + the 2 reference items
    assert len(read_records(tmp_path)) == 18

    # the map link: mIoU of the received maps from the summed confusion matrices, recomputed here
    sys_map = GESCOSystem(None)
    batches = data[0].batches(2)
    for snr_i, snr in enumerate((0.0, 20.0)):
        cm = ConfusionMatrix(data[0].num_classes, 255)
        for b, batch in enumerate(batches):
            gen = sweep._generator(__import__("gensemcom.evaluate", fromlist=["WorkItem"]).WorkItem(
                "synthetic", "gesco-map", "awgn", snr, b))
            out = sys_map.run(batch, "awgn", snr, gen)
            cm.update(out.labels, batch.labels)
        assert curves[("gesco-map", "awgn")]["map_miou"][snr_i] == pytest.approx(float(cm.miou()), abs=1e-12)
    # more SNR, better map
    c = curves[("gesco-map", "awgn")]
    assert c["map_miou"][1] > c["map_miou"][0]
    # channel uses per pixel of the map link: present classes + edges, halved (complex pairs)
    assert 0 < c["channel_uses_per_pixel"][0] <= (12 + 1) / 2
    # JPEG at capacity: the mean of per-image PSNRs, and the budget grows with SNR
    j = curves[("jpeg+capacity", "awgn")]
    assert j["psnr"][1] > j["psnr"][0] or j["lost_fraction"][0] > 0
    recs = [r for r in read_records(tmp_path).values() if r["system"] == "jpeg+capacity" and r["channel"] == "awgn"
            and r["snr_db"] == "20"]
    assert j["psnr"][1] == pytest.approx(np.mean([v for r in recs for v in r["metrics"]["psnr"][0]]))
    assert j["bpp"][1] <= 0.5 * math.log2(1 + 100) + 1e-9  # never above capacity


def test_sweep_items_are_seeded_by_key_not_order(tmp_path):
    data = _data(2)
    a = Sweep(tmp_path / "a", _systems(), data, _config(snrs=[0.0]))
    b = Sweep(tmp_path / "b", _systems(), data, _config(snrs=[0.0]))
    items = a.items()[0]
    ra = [a.measure(it) for it in items]
    rb = [b.measure(it) for it in reversed(items)][::-1]
    for x, y in zip(ra, rb):
        assert x["metrics"] == y["metrics"] and x["channel_uses_per_pixel"] == y["channel_uses_per_pixel"]


def test_sharded_sweep_equals_single_process(tmp_path):
    data = _data()
    single = Sweep(tmp_path / "one", _systems(), data, _config())
    single.run(progress=False)
    want = _strip(json.loads(single.finish().read_text()))

    for rank in (0, 1):  # the two ranks write their own files into one folder
        Sweep(tmp_path / "two", _systems(), data, _config(), rank=rank, world=2).run(progress=False)
    shards = sorted(p.name for p in (tmp_path / "two" / "records").iterdir())
    assert shards == ["rank0.jsonl", "rank1.jsonl"]
    got = _strip(json.loads(Sweep(tmp_path / "two", _systems(), data, _config(), rank=0, world=2).finish().read_text()))
    assert got == want

    # shards run apart (different folders, e.g. machines) merge without loss or double counting
    for rank in (0, 1):
        Sweep(tmp_path / f"m{rank}", _systems(), data, _config(), rank=rank, world=2).run(progress=False)
    from gensemcom.cli.evaluate import main
    assert main(["--merge", str(tmp_path / "m0"), str(tmp_path / "m1"), str(tmp_path / "m1"),
                 "--out", str(tmp_path / "merged")]) == 0
    assert _strip(json.loads((tmp_path / "merged" / "results.json").read_text())) == want


def test_sweep_refuses_to_mix_settings(tmp_path):
    data = _data(2)
    Sweep(tmp_path, _systems(), data, _config(snrs=[0.0])).run(progress=False)
    with pytest.raises(ValueError, match="different seed"):
        Sweep(tmp_path, _systems(), data, _config(snrs=[0.0], seed=6)).run(progress=False)
    # more SNRs is fine: only the new items are computed
    before = read_records(tmp_path)
    Sweep(tmp_path, _systems(), data, _config(snrs=[0.0, 10.0])).run(progress=False)
    after = read_records(tmp_path)
    assert set(before) < set(after)
    assert all(after[k] == v for k, v in before.items())


def test_killed_sweep_resumes_without_recomputing(tmp_path):
    """A real kill (SIGKILL) in the middle of a sweep, then a rerun: the saved records are kept as
    they are, the rest is computed, and the results equal an uninterrupted sweep's."""
    args = ["--systems", "gesco-map,jpeg+ldpc", "--data", "synthetic:4", "--size", f"{H}x{W}",
            "--channels", "awgn,rayleigh", "--snr", "-5,0,5,10,20", "--batch-size", "1", "--seed", "2",
            "--save-images", "0", "--segmenter", "synthetic=none", "--no-progress"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "gensemcom.cli.evaluate", *args, "--out", str(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    records = killed / "records" / "rank0.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if records.is_file() and records.read_text().count("\n") >= 6:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # a write cut short by the kill leaves a torn line: simulate the worst case too
    with open(records, "a") as f:
        f.write('{"key": "synthetic|jpeg+ldpc|awg')
    saved = read_records(killed)
    assert 6 <= len(saved) < 4 * 2 * 5 * 2 + 4

    from gensemcom.cli.evaluate import main
    assert main([*args, "--out", str(killed)]) == 0
    resumed = read_records(killed)
    assert all(resumed[k] == v for k, v in saved.items())  # nothing saved was recomputed
    assert len(resumed) == 4 * 2 * 5 * 2 + 4

    assert main([*args, "--out", str(tmp_path / "straight")]) == 0
    a = _strip(json.loads((killed / "results.json").read_text()))
    b = _strip(json.loads((tmp_path / "straight" / "results.json").read_text()))
    assert a == b


def test_plots_and_grid(tmp_path):
    data = _data(2)
    sweep = Sweep(tmp_path, _systems(), data, _config(save_images=2))
    sweep.run(progress=False)
    sweep.finish()
    files = make_plots(tmp_path, tmp_path / "plots", grid_images=2)
    names = {f.name for f in files}
    assert {"psnr_vs_snr.png", "map_miou_vs_snr.png", "grid_synthetic_awgn.png"} <= names
    for f in files:
        assert Image.open(f).size[0] > 100
    grid = np.asarray(Image.open(tmp_path / "plots" / "grid_synthetic_awgn.png"))
    # 2 images x 2 systems rows; columns: original, map, then per SNR (map for gesco-map / image for jpeg)
    assert grid.shape[0] == 28 + 4 * (H + 3)
    assert grid.shape[1] == 130 + (2 + 2) * (W + 3)


def test_unsupported_and_incompatible_pairs_are_recorded(tmp_path):
    data = _data(2)
    sweep = Sweep(tmp_path, _systems(), data, _config(channels=["awgn", "legacy"], snrs=[20.0]))
    sweep.run(progress=False)
    res = json.loads(sweep.finish().read_text())
    why = {(s["system"], s["channel"]): s["reason"] for s in res["skipped"]}
    assert "legacy" in why[("jpeg+capacity", "legacy")]
    assert ("gesco-map", "legacy") not in why


def test_registry_names_and_errors():
    o = SystemOptions(bandwidth=0.25, mcs="qpsk-1/2")
    s = build_system("webp+ldpc", o)
    assert s.config()["codec"] == "webp" and s.config()["bandwidth"] == 0.25
    assert build_system("hevc+capacity", o).config()["link"] == "capacity"
    assert build_system("map+ldpc:64qam-2/3", o).config()["link"] == "ldpc"
    with pytest.raises(ValueError, match="unknown system 'gsco'"):
        build_system("gsco", o)
    with pytest.raises(ValueError, match="unknown link 'ldcp'"):
        build_system("jpeg+ldcp", o)
    with pytest.raises(ValueError, match="codec"):
        build_system("gif+ldpc", o)


def test_fid_and_kid_in_a_sweep_match_direct_computation(tmp_path):
    from gensemcom.metrics import InceptionFeatures, frechet_distance, kid

    data = _data(3)
    sweep = Sweep(tmp_path, {"jpeg+capacity": build_system("jpeg+capacity")}, data,
                  _config(channels=["awgn"], snrs=[20.0], batch_size=3, fid=True))
    assert sweep.backends["fid"]["backend"] == "fid-helper" and len(sweep.backends["fid"]["sha256"]) == 64
    sweep.run(progress=False)
    res = json.loads(sweep.finish().read_text())
    curve = next(c for c in res["results"] if c["system"] == "jpeg+capacity")
    # the same numbers from the images themselves
    inc = InceptionFeatures()
    batch = data[0].batches(3)[0]
    from gensemcom.evaluate import WorkItem
    gen = sweep._generator(WorkItem("synthetic", "jpeg+capacity", "awgn", 20.0, 0))
    out = build_system("jpeg+capacity").run(batch, "awgn", 20.0, gen)
    real = inc((batch.images + 1) / 2).double()
    fake = inc((out.images.clamp(-1, 1) + 1) / 2).double()
    want = frechet_distance(real.mean(0), torch.cov(real.T), fake.mean(0), torch.cov(fake.T))
    assert curve["fid"][0] == pytest.approx(want, rel=1e-4)
    km, _ = kid(real, fake, subsets=100, subset_size=3, generator=torch.Generator().manual_seed(0))
    assert curve["kid"][0] == pytest.approx(float(km), rel=1e-4, abs=1e-9)
    assert res["meta"]["backends"]["fid"]["sha256"] == sweep.backends["fid"]["sha256"]


def test_lpips_without_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("GENSEMCOM_LPIPS_WEIGHTS", raising=False)
    with pytest.raises(FileNotFoundError, match="LPIPS"):
        Sweep(tmp_path, _systems(), _data(2), _config(lpips=True))


def test_stochastic_system_draws_several_samples_with_diversity(tmp_path):
    data = build_data("synthetic:2", 64, 128, seed=4)
    gesco = build_system("gesco", SystemOptions(steps=2))
    sweep = Sweep(tmp_path, {"gesco": gesco}, data, _config(channels=["awgn"], snrs=[20.0], samples=2))
    sweep.run(progress=False)
    rec = next(r for r in read_records(tmp_path).values() if r["system"] == "gesco")
    assert rec["samples"] == 2 and len(rec["metrics"]["psnr"]) == 2
    assert rec["metrics"]["psnr"][0] != rec["metrics"]["psnr"][1]  # two different draws
    div = rec["metrics"]["diversity"][0]
    assert len(div) == 2 and all(0 < d < 1 for d in div)


def test_torchrun_shards_and_rank0_aggregates(tmp_path):
    """Two processes under torchrun: each takes half the items, rank 0 writes the same results
    as one process."""
    args = ["--systems", "gesco-map,jpeg+capacity", "--data", "synthetic:4", "--size", f"{H}x{W}",
            "--channels", "awgn", "--snr=0,20", "--batch-size", "2", "--seed", "9", "--save-images", "0",
            "--segmenter", "synthetic=none", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    torchrun = Path(sys.executable).parent / "torchrun"
    r = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", "29533", "-m",
                        "gensemcom.cli.evaluate", *args, "--out", str(tmp_path / "tr")], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "tr" / "records").iterdir()) == ["rank0.jsonl", "rank1.jsonl"]
    from gensemcom.cli.evaluate import main
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    a = _strip(json.loads((tmp_path / "tr" / "results.json").read_text()))
    b = _strip(json.loads((tmp_path / "one" / "results.json").read_text()))
    assert a == b


def test_legacy_keys_inf_snr_and_map_only_plots(tmp_path):
    """Legacy-table SNRs that are not keys are skipped with the reason; a noiseless SNR and a
    sweep of map-only systems still aggregate, print and plot."""
    data = _data(2)
    sweep = Sweep(tmp_path, {"gesco-map": GESCOSystem(None)}, data,
                  _config(channels=["awgn", "legacy"], snrs=[-5.0, 20.0, math.inf]))
    sweep.run(progress=False)
    res = json.loads(sweep.finish().read_text())
    why = [s["reason"] for s in res["skipped"] if s["channel"] == "legacy"]
    assert len(why) == 1 and "-5" in why[0] and "inf" in why[0]
    legacy = next(c for c in res["results"] if c["channel"] == "legacy")
    assert legacy["snr_db"] == [20.0]
    awgn = next(c for c in res["results"] if c["channel"] == "awgn")
    assert awgn["snr_db"] == [-5.0, 20.0, "inf"]
    files = make_plots(tmp_path, tmp_path / "plots", grid_images=1)
    assert any(f.name == "map_miou_vs_snr.png" for f in files)
    from gensemcom.cli.demo import print_table
    from gensemcom.plot import load_results
    print_table(load_results(tmp_path))
    with pytest.raises(ValueError, match="unsupported SNR"):
        _config(snrs=[-math.inf])
