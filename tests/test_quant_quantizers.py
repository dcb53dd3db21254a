"""Quantisers, AdaRound and activation quantisers against Q-GESCO's own numbers.

Every input (tensors, bit widths, cases, iteration counts, step counts) comes from
tests/data/qgesco/ (copied from the reference vectors made by running ispamm/Q-GESCO @ 75bbfdc).
compat="qgesco" must match exactly; the default must fix the documented quirks.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from gensemcom.quant.quantizers import (
    ActQuantizer,
    AdaRoundLoss,
    BetaSchedule,
    WeightQuantizer,
    adaround_regularizer,
    init_scale,
    quant_range,
)

DATA = Path(__file__).parent / "data" / "qgesco"
REF = load_file(str(DATA / "qgesco_tiny_public_quantizers.safetensors"))
CFG = json.loads((DATA / "qgesco_tiny_public_config.json").read_text())


def parse_case(case: str) -> dict:
    """``uaq_b{bits}_{cw|pt}_{method}[_sym]`` -> quantiser settings."""
    prefix, b, granularity, *rest = case.split("_")
    assert prefix == "uaq" and b.startswith("b") and granularity in ("cw", "pt")
    method = "_".join(rest)
    symmetric = method.endswith("_sym")
    if symmetric:
        method = method[: -len("_sym")]
    return dict(n_bits=int(b[1:]), channel_wise=granularity == "cw", scale_method=method, symmetric=symmetric)


def case_input(case: str) -> torch.Tensor:
    return REF["w_mse"] if parse_case(case)["scale_method"] == "mse" else REF["w"]


CASES = CFG["quantizer_cases"]


@pytest.mark.parametrize("case", CASES)
def test_qgesco_uniform_affine_exact(case: str) -> None:
    p = parse_case(case)
    q = WeightQuantizer(p["n_bits"], p["symmetric"], p["channel_wise"], p["scale_method"], compat="qgesco")
    x = case_input(case).clone()
    out = q(x)
    delta, zero, ref_out = REF[f"{case}_delta"], REF[f"{case}_zero_point"], REF[f"{case}_out"]
    assert torch.equal(q.delta.reshape(delta.shape), delta)
    assert torch.equal(q.zero_point.reshape(zero.shape), zero)
    assert torch.equal(out, ref_out)


@pytest.mark.parametrize("case", CASES)
def test_default_fixes_zero_point_and_clipping(case: str) -> None:
    p = parse_case(case)
    x = case_input(case).clone()
    q = WeightQuantizer(p["n_bits"], p["symmetric"], p["channel_wise"], p["scale_method"])
    out = q(x)
    qmin, qmax = quant_range(p["n_bits"], p["symmetric"])
    # the zero point is an integer of the grid, so it can be stored as one
    assert float(q.zero_point.min()) >= qmin and float(q.zero_point.max()) <= qmax
    assert torch.equal(q.zero_point, q.zero_point.round())
    if p["scale_method"] == "max":
        # min-max: nothing clipped, every error at most half a step
        err = (out - x).abs()
        assert bool((err <= q.delta / 2 * (1 + 1e-5) + 1e-12).all())
    # where the reference has no quirk (per-tensor ranges spanning 0, symmetric grids) both agree
    lo, hi = float(x.min()), float(x.max())
    if not p["channel_wise"] and lo < 0 < hi and p["scale_method"] != "max_scale":
        assert torch.equal(out, REF[f"{case}_out"])
    if p["symmetric"] and p["scale_method"] == "max":
        assert torch.equal(out, REF[f"{case}_out"])


@pytest.mark.parametrize("case", [c for c in CASES if parse_case(c)["channel_wise"] and c.endswith("_max")])
def test_reference_quirk_is_what_the_default_fixes(case: str) -> None:
    """The reference clips an all-positive channel and puts an all-negative one's zero point
    above the grid; per channel with a mixed sign both modes agree exactly."""
    p = parse_case(case)
    x = case_input(case)
    ref_out, ref_zero = REF[f"{case}_out"], REF[f"{case}_zero_point"].flatten()
    _, qmax = quant_range(p["n_bits"], p["symmetric"])
    flat = x.reshape(x.shape[0], -1)
    positive = (flat.min(1).values > 0).nonzero().flatten()
    negative = (flat.max(1).values < 0).nonzero().flatten()
    mixed = ((flat.min(1).values < 0) & (flat.max(1).values > 0)).nonzero().flatten()
    assert len(positive) and len(negative) and len(mixed)
    ref_delta = REF[f"{case}_delta"].flatten()
    for c in positive.tolist():  # clipped: the largest weights lose more than half a step
        assert float((ref_out[c] - x[c]).abs().max()) > float(ref_delta[c]) / 2 * 1.01
    for c in negative.tolist():
        assert float(ref_zero[c]) > qmax
    ours = WeightQuantizer(p["n_bits"], False, True, "max")(x.clone())
    assert torch.equal(ours[mixed], ref_out[mixed])


def test_mse_constant_channel() -> None:
    """Q-GESCO's MSE search fails on a constant channel (the config records it); ours does not."""
    assert "NoneType" in CFG["mse_init_on_constant_channel"]
    w = REF["w"].clone()  # channel 2 is all zero
    n_bits = parse_case(CASES[0])["n_bits"]
    with pytest.raises(ValueError, match="constant channel"):
        init_scale(w, n_bits, channel_wise=True, scale_method="mse", compat="qgesco")
    d, z = init_scale(w, n_bits, channel_wise=True, scale_method="mse")
    assert torch.isfinite(d).all() and torch.isfinite(z).all()


def test_bad_input_named() -> None:
    with pytest.raises(ValueError, match="compat"):
        WeightQuantizer(8, compat="qdiff")
    with pytest.raises(ValueError, match="n_bits"):
        WeightQuantizer(1)
    with pytest.raises(ValueError, match="scale_method"):
        init_scale(REF["w"], 8, scale_method="percentile")
    with pytest.raises(ValueError, match="NaN"):
        init_scale(torch.tensor([float("nan"), 1.0]), 8)


# ---------------------------------------------------------------------------------------- AdaRound
def _adaround() -> WeightQuantizer:
    q = WeightQuantizer(8, False, True, "max", compat="qgesco")  # the module's quantiser: W8 per channel
    q.init(REF["w"])
    return q


def test_module_rtn_output() -> None:
    """The QuantModule's conv(8->16, 3x3, pad 1) has a bias the file does not give: recover it from
    qm_out_rtn and check it is one constant per channel (i.e. the rest is exactly our W8 conv)."""
    wq = _adaround()(REF["w"])
    res = REF["qm_out_rtn"] - F.conv2d(REF["qm_x"], wq, None, padding=1)
    bias = res.mean((0, 2, 3))
    torch.testing.assert_close(res, bias[None, :, None, None].expand_as(res), rtol=0, atol=1e-6)


def _bias() -> torch.Tensor:
    wq = _adaround()(REF["w"])
    return (REF["qm_out_rtn"] - F.conv2d(REF["qm_x"], wq, None, padding=1)).mean((0, 2, 3))


def test_adaround_init_and_fixed_alpha() -> None:
    q = _adaround()
    assert torch.equal(q.delta, REF["ada_delta"]) and torch.equal(q.zero_point, REF["ada_zero_point"])
    q.enable_adaround(REF["w"])
    assert torch.equal(q.alpha.data, REF["ada_alpha_init"])
    assert torch.equal(q.soft_rounding().data, REF["ada_h_init"])
    assert torch.equal(q(REF["w"]).data, REF["ada_out_soft_init"])
    q.rounding = "hard"
    assert torch.equal(q(REF["w"]).data, REF["ada_out_hard_init"])
    q.enable_adaround(alpha=REF["ada_alpha_fixed"])
    assert torch.equal(q.soft_rounding().data, REF["ada_h_fixed"])
    assert torch.equal(q(REF["w"]).data, REF["ada_out_soft_fixed"])
    q.rounding = "hard"
    assert torch.equal(q(REF["w"]).data, REF["ada_out_hard_fixed"])


def test_adaround_hard_rounding_ties() -> None:
    """At alpha = 0 (w/delta on a .5 tie) the reference rounds half up; ours rounds half to even,
    so that the hard decision at initialisation is round-to-nearest."""
    delta = torch.tensor([[0.5]])
    w = torch.tensor([[0.25, 0.75, 1.25, 1.75, 0.3]])  # w/delta = 0.5, 1.5, 2.5, 3.5, 0.6
    for compat, expect in (("qgesco", [1.0, 2.0, 3.0, 4.0, 1.0]), (None, [0.0, 2.0, 2.0, 4.0, 1.0])):
        q = WeightQuantizer(8, True, True, "max", compat=compat)
        q.set_scale(delta, torch.zeros(1, 1))
        q.enable_adaround(w)
        q.rounding = "hard"
        assert q(w).div(delta).flatten().tolist() == expect
        if compat is None:
            assert torch.equal(q(w), torch.round(w / delta) * delta)


def test_regulariser_and_beta_schedule() -> None:
    demo = CFG["adaround_demo"]
    for beta, value in zip(REF["ada_reg_betas"].tolist(), REF["ada_reg_values_w0p01"]):
        got = demo["weight"] * adaround_regularizer(REF["ada_h_fixed"], beta)
        torch.testing.assert_close(got, value, rtol=1e-5, atol=0)
    sched = BetaSchedule(demo["iters"], demo["warmup"])
    for count, b in zip(REF["ada_temp_counts"].tolist(), REF["ada_temp_b"].tolist()):
        assert sched(count) == pytest.approx(b, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("phase", sorted(CFG["adaround_demo"]["lossfn_counts"]))
def test_loss_function_and_gradient(phase: str) -> None:
    demo = CFG["adaround_demo"]
    q = _adaround()
    q.enable_adaround(alpha=REF["ada_alpha_fixed"])
    loss = AdaRoundLoss([q], demo["iters"], demo["weight"], demo["warmup"])
    loss.count = int(REF[f"lossfn_{phase}_count"]) - 1  # the call increments it
    pred = F.conv2d(REF["qm_x"], q(REF["w"]), _bias(), padding=1)
    torch.testing.assert_close(pred, REF[f"lossfn_{phase}_pred"], rtol=1e-5, atol=1e-6)
    total, rec, reg = loss(pred, REF["lossfn_target"])
    torch.testing.assert_close(rec.reshape(1), REF[f"lossfn_{phase}_rec"], rtol=1e-5, atol=0)
    torch.testing.assert_close(total.reshape(1), REF[f"lossfn_{phase}_total"], rtol=1e-5, atol=0)
    if loss.count < loss.loss_start:
        assert float(reg) == 0.0
    total.backward()
    ref = REF[f"lossfn_{phase}_dalpha"]
    torch.testing.assert_close(q.alpha.grad, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
    if loss.count >= loss.loss_start:
        # one Adam step (lr 1e-3, AdaRound's optimiser) from this gradient
        torch.optim.Adam([q.alpha], lr=1e-3).step()
        torch.testing.assert_close(q.alpha.data, REF["ada_alpha_after_adam_step"], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------- activations
def _act(prefix: str, **kw) -> None:
    a = ActQuantizer(8, compat="qgesco", **kw)
    x = REF["act_x"].clone().requires_grad_()
    out = a(x)
    (out * REF["act_upstream_grad"]).sum().backward()
    assert torch.equal(a.delta.data.reshape(1), REF[f"{prefix}_delta"])
    assert torch.equal(a.zero_point.reshape(1), REF[f"{prefix}_zero_point"])
    assert torch.equal(out.data, REF[f"{prefix}_out"])
    torch.testing.assert_close(a.delta.grad.reshape(1), REF[f"{prefix}_grad_delta"], rtol=1e-5, atol=0)
    assert torch.equal(x.grad, REF[f"{prefix}_grad_x"])
    return a


def test_activation_quantizer_lsq() -> None:
    a = _act("act")
    a.running_stat = True
    out = a(REF["act_running_x2"])
    for k in ("x_min", "x_max", "delta", "zero_point"):
        assert torch.equal(getattr(a, k).data.reshape(1), REF[f"act_running_{k}"]), k
    assert torch.equal(out.data, REF["act_running_out"])


def test_activation_quantizer_symmetric() -> None:
    _act("act_sym", symmetric=True)


def test_softmax_quantizer() -> None:
    a = ActQuantizer(int(CFG["sm_abit"]), always_zero=True, compat="qgesco")
    out = a(REF["sm_p"])
    assert torch.equal(a.delta.data.reshape(1), REF["sm_delta"])
    assert torch.equal(a.zero_point.reshape(1), REF["sm_zero_point"])
    assert torch.equal(out, REF["sm_out"])
    # the reference's step (max - min) / 255 clips the largest probabilities; ours spans [0, max]
    ours = ActQuantizer(int(CFG["sm_abit"]), always_zero=True)
    out = ours(REF["sm_p"]).detach()
    assert float((out - REF["sm_p"]).abs().max()) <= float(ours.delta.detach()) / 2 * (1 + 1e-5)
    assert float(ours.delta.detach()) == pytest.approx(float(REF["sm_p"].max()) / (2 ** int(CFG["sm_abit"]) - 1))


def test_default_activation_running_update_keeps_zero_in_range() -> None:
    a = ActQuantizer(8)
    a(REF["act_x"] + 10)  # all positive: the default widens the range to 0
    assert float(a.zero_point) == 0.0
    a.running_stat = True
    a(REF["act_running_x2"])
    assert 0 <= float(a.zero_point) <= 255


pytestmark = pytest.mark.usefixtures("one_thread")
