"""Calibration data from the sampler and BRECQ/AdaRound reconstruction that completes.

The reference model, calibration set, flags and the units where the published script crashed come
from tests/data/qgesco/; iteration counts are kept tiny (the reference used 100 per unit).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gensemcom.legacy import model_and_diffusion_from_flags
from gensemcom.quant.calibrate import CalibrationSet, calibrate_activations, collect_calibration, reconstruct
from gensemcom.quant.calibrate import _cache
from gensemcom.quant.model import quant_layers, quantize_model, reconstruction_units, set_quant_state
from gensemcom.quant.quantizers import lp_loss
from gensemcom.zoo import load_gesco

DATA = Path(__file__).parent / "data" / "qgesco"
CFG = json.loads((DATA / "qgesco_tiny_public_config.json").read_text())
IO = load_file(str(DATA / "qgesco_tiny_public_io.safetensors"))


@pytest.fixture(scope="module")
def tiny():
    model, _ = model_and_diffusion_from_flags(CFG["gesco_config"])
    model.load_state_dict(load_file(str(DATA / "qgesco_tiny_public_fp_weights.safetensors")))
    c = load_file(str(DATA / "qgesco_tiny_public_cali.safetensors"))
    cali = CalibrationSet(c["cali_xs"], c["cali_ts"], c["cali_cs"])
    assert len(cali) == CFG["calibration"]["N"]
    return model.eval(), cali


def test_calibration_set_round_trip(tiny, tmp_path) -> None:
    _, cali = tiny
    cali.save(str(tmp_path / "c.safetensors"))
    back = CalibrationSet.load(str(tmp_path / "c.safetensors"))
    assert torch.equal(back.xs, cali.xs) and torch.equal(back.ts, cali.ts) and torch.equal(back.cs, cali.cs)
    torch.save({"xs": cali.xs, "ts": cali.ts, "cs": cali.cs}, tmp_path / "cali_data_256.pth")
    assert torch.equal(CalibrationSet.load(str(tmp_path / "cali_data_256.pth")).cs, cali.cs)
    with pytest.raises(ValueError, match="do not fit"):
        CalibrationSet(cali.xs, cali.ts[:-1], cali.cs)


def test_reference_cali_labels_are_reversed(tiny) -> None:
    """Q-GESCO's stored labels: t = i * 1000 / T for loop index i (i + 1 a multiple of T / cali_st)."""
    _, cali = tiny
    st = CFG["calibration"]["cali_st"]
    steps = CFG["gesco_config"]["diffusion_steps"]
    every = steps // st
    expect = [i * 1000.0 / steps for i in range(steps) if (i + 1) % every == 0]
    assert cali.ts[:st].tolist() == expect


def test_reconstruction_completes_where_the_published_script_crashed(tiny) -> None:
    """The first layer (UnboundLocalError) and the first SPADE block (TypeError: emb not replayed)."""
    model, cali = tiny
    crash_units = sorted({v["unit"][len("model."):] for v in CFG["published_crashes"].values()})
    q = quantize_model(copy.deepcopy(model), compat="qgesco")
    report = reconstruct(q, cali, iters=3, batch_size=CFG["calibration"]["cali_batch_size"],
                         max_samples=CFG["calibration"]["cached_samples_per_unit"],
                         generator=torch.Generator().manual_seed(0), units=crash_units)
    assert [r["unit"] for r in report] == [u for _, u, _ in reconstruction_units(q) if u in crash_units]
    for r in report:
        assert r["samples"] == CFG["calibration"]["cached_samples_per_unit"]
        layers = [m for m in q.get_submodule(r["unit"]).modules() if hasattr(m, "weight_quantizers")]
        assert all(wq.rounding == "hard" and wq.alpha is not None for la in layers for wq in la.weight_quantizers())


def crop(cali: CalibrationSet, n: int, size: int = 8) -> CalibrationSet:
    """The first n samples, cropped to size x 2 size (this one-level U-Net takes any size): fast."""
    return CalibrationSet(cali.xs[:n, :, :size, : 2 * size], cali.ts[:n], cali.cs[:n, :, :size, : 2 * size])


def test_adaround_improves_a_layer(tiny) -> None:
    """On the output conv, AdaRound lowers the reconstruction error below round-to-nearest."""
    model, cali = tiny
    cali = crop(cali, 8)
    q = quantize_model(copy.deepcopy(model))
    unit = "out.2"
    layer = q.get_submodule(unit)
    idx = torch.arange(8)
    inputs, target = _cache(q, layer, cali, idx, 8, True, act=False)
    with torch.no_grad():
        rtn = float(lp_loss(layer(inputs[0]), target))
    reconstruct(q, cali, iters=150, batch_size=4, max_samples=8, warmup=0.2, generator=torch.Generator().manual_seed(0),
                units=[unit])
    with torch.no_grad():
        ada = float(lp_loss(layer(inputs[0]), target))
    assert ada < rtn


def test_split_and_w4a8_calibration_runs(tiny) -> None:
    model, cali = tiny
    small = crop(cali, 4)
    q = quantize_model(copy.deepcopy(model), 4, 8, split=True)
    splits = [p for p, la in quant_layers(q) if la.split]
    assert splits
    unit = splits[0].rsplit(".", 1)[0]  # the decoder block holding a split skip conv
    reconstruct(q, small, iters=2, units=[unit], generator=torch.Generator().manual_seed(0))
    calibrate_activations(q, small, batch=2, act_iters=2, units=[unit], generator=torch.Generator().manual_seed(0))
    for _, layer in quant_layers(q):
        for a in layer.act_quantizers():
            assert a.inited and 0 <= float(a.zero_point) <= a.qmax
    x, t, y = (v.clone() for v in (small.xs, small.ts, small.cs))
    with torch.no_grad():
        out = q(x, t, y)
        set_quant_state(q, weight=False, act=False)
        fp = q(x, t, y)
    assert torch.isfinite(out).all()
    assert 0 < float((out - fp).abs().mean()) < 0.5 * float(fp.abs().mean())


@pytest.fixture(scope="module")
def bundled_gesco():
    return load_gesco(steps=4)


@pytest.mark.parametrize("kind", [None, "qgesco"])
def test_collect_calibration_from_the_sampler(bundled_gesco, kind) -> None:
    gesco = bundled_gesco
    lc = gesco.model.config.label_channels
    maps = torch.zeros(2, lc, 16, 32)
    maps[0, 1] = 1
    maps[1, 2, :, :16] = 1
    maps[1, 3, :, 16:] = 1
    cali_n, cali_st = 2, 2
    cali = collect_calibration(gesco, maps, cali_n, cali_st, snrs=[float("inf")],
                               generator=torch.Generator().manual_seed(0), kind=kind)
    steps = len(gesco.diffusion.timesteps)
    keep = [k for k in range(steps) if (k + 1) % (steps // cali_st) == 0]
    # an independent replay of trajectory 0: same generator draws, the sampler's own steps
    g = torch.Generator().manual_seed(0)
    received = gesco.send(maps[:1], float("inf"), g).received
    noise = torch.randn((1, 3, 16, 32), generator=g)
    states = [noise]
    with torch.no_grad():
        gesco.diffusion.sample(gesco.model, received, noise=noise, guidance_scale=gesco.guidance_scale,
                               callback=lambda t, x_prev, out: states.append(x_prev))
    model_t = gesco.diffusion.model_timesteps(torch.arange(steps - 1, -1, -1))
    if kind is None:
        assert len(cali) == cali_n * cali_st * 2  # both guidance branches
        for j, k in enumerate(keep):
            xs, ts, cs = cali.xs[2 * j: 2 * j + 2], cali.ts[2 * j: 2 * j + 2], cali.cs[2 * j: 2 * j + 2]
            # the step's input x_t (the replay runs the encoder once for both branches: rounding differs)
            torch.testing.assert_close(xs[0], states[k][0], rtol=1e-4, atol=1e-4)
            assert ts.tolist() == [float(model_t[k])] * 2
            assert torch.equal(cs[0], received[0]) and not cs[1].any()
    else:
        assert len(cali) == cali_n * cali_st
        for j, k in enumerate(keep):
            torch.testing.assert_close(cali.xs[j], states[k + 1][0], rtol=1e-4, atol=1e-4)  # the step's output
            assert float(cali.ts[j]) == k * 1000.0 / steps
            assert torch.equal(cali.cs[j], received[0])
    with pytest.raises(ValueError, match="kind"):
        collect_calibration(gesco, maps, 1, 1, kind="qdiff")
    with pytest.raises(ValueError, match="exceeds"):
        collect_calibration(gesco, maps, 1, steps + 1)


pytestmark = pytest.mark.usefixtures("one_thread")
