"""The fake-quantised GESCO U-Net against Q-GESCO's own model outputs and checkpoint layout.

Inputs, flags, unit order and checkpoint keys come from tests/data/qgesco/ (reference vectors of
ispamm/Q-GESCO @ 75bbfdc); tolerance: outputs 1e-5 relative to their largest magnitude, dequantised
weights exact (the reference README's).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gensemcom.legacy import model_and_diffusion_from_flags
from gensemcom.quant.model import (
    QuantLayer,
    decoder_splits,
    enable_adaround,
    load_qgesco_checkpoint,
    load_qgesco_state_dict,
    qgesco_state_dict,
    quant_layers,
    quantize_model,
    reconstruction_units,
    set_quant_state,
)

DATA = Path(__file__).parent / "data" / "qgesco"
CFG = json.loads((DATA / "qgesco_tiny_public_config.json").read_text())
IO = load_file(str(DATA / "qgesco_tiny_public_io.safetensors"))
FP = load_file(str(DATA / "qgesco_tiny_public_fp_weights.safetensors"))
QCKPT = load_file(str(DATA / "qgesco_tiny_public_qckpt_quant.safetensors"))


def close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> None:
    assert a.shape == b.shape
    err = float((a - b).abs().max())
    assert err <= rel * float(b.abs().max()), f"max error {err} vs scale {float(b.abs().max())}"


@pytest.fixture(scope="module")
def fp_model():
    model, _ = model_and_diffusion_from_flags(CFG["gesco_config"])
    model.load_state_dict(FP, strict=True)
    return model.eval()


def inputs():
    return IO["x"].clone(), IO["t"].clone(), IO["y"].clone()


def reference_checkpoint() -> dict[str, torch.Tensor]:
    """The tiny quantized_model.pth, rebuilt from its two safetensors parts in the file's order."""
    sd = {}
    for key, shape, dtype in CFG["qckpt_keys"]:
        v = QCKPT[key] if key in QCKPT else FP[key[len("model."):]]
        assert list(v.shape) == shape and str(v.dtype).endswith(dtype)
        sd[key] = v
    return sd


def test_units_and_fp_outputs(fp_model) -> None:
    x, t, y = inputs()
    assert t.tolist() == CFG["fwd_t"]
    with torch.no_grad():
        close(fp_model(x, t, y), IO["fp_out"])
        close(fp_model(x, t, torch.zeros_like(y)), IO["fp_out_y0"])
    q = quantize_model(copy.deepcopy(fp_model), compat="qgesco")
    units = [[kind, f"model.{path}"] for kind, path, _ in reconstruction_units(q)]
    assert units == CFG["reconstruction_units"]
    # every Conv/Linear that runs is quantised; GESCO's dead encoder spade_norm is not touched
    n_live = sum(1 for n, m in fp_model.named_modules()
                 if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv1d, torch.nn.Linear)) and ".spade_norm." not in n)
    assert len(list(quant_layers(q))) == n_live


def test_quant_off_and_round_to_nearest(fp_model) -> None:
    x, t, y = inputs()
    q = quantize_model(copy.deepcopy(fp_model), CFG["weight_quant_params"]["n_bits"],
                       channel_wise=CFG["weight_quant_params"]["channel_wise"],
                       scale_method=CFG["weight_quant_params"]["scale_method"], compat="qgesco")
    with torch.no_grad():
        set_quant_state(q, weight=False)
        close(q(x, t, y), IO["q_off_out"])
        set_quant_state(q, weight=True)
        close(q(x, t, y), IO["q_w8_rtn_out"])


def test_default_mode_zero_points_in_range(fp_model) -> None:
    """The default quantiser differs from the reference only on channels whose weights do not
    span 0 (none in this random model: then the outputs agree too)."""
    x, t, y = inputs()
    q = quantize_model(copy.deepcopy(fp_model), CFG["weight_quant_params"]["n_bits"])
    one_signed = 0
    for _, layer in quant_layers(q):
        wq = layer.weight_quantizer
        assert float(wq.zero_point.min()) >= wq.qmin and float(wq.zero_point.max()) <= wq.qmax
        w = layer.weight.detach().reshape(layer.weight.shape[0], -1)
        one_signed += int(((w.min(1).values >= 0) | (w.max(1).values <= 0)).sum())
    if one_signed == 0:
        with torch.no_grad():
            close(q(x, t, y), IO["q_w8_rtn_out"])


def test_load_qgesco_checkpoint_reproduces_outputs(fp_model, tmp_path) -> None:
    x, t, y = inputs()
    sd = reference_checkpoint()
    q = quantize_model(copy.deepcopy(fp_model), compat="qgesco", init=False)
    load_qgesco_state_dict(q, sd)
    with torch.no_grad():
        for name in [k for k in IO if k.startswith("deq_weight.")]:
            layer = q.get_submodule(name[len("deq_weight."):])
            assert torch.equal(layer.quantized_weight(), IO[name])
        close(q(x, t, y), IO["q_w8_adaround_out"])
        close(q(x, t, torch.zeros_like(y)), IO["q_w8_adaround_out_y0"])
    # and writes the same layout back: same keys, shapes, values
    out = qgesco_state_dict(q)
    assert set(out) == set(sd)
    for k, v in sd.items():
        assert torch.equal(out[k], v), k
    path = tmp_path / "quantized_model.pth"
    torch.save(dict(out), path)
    q2 = quantize_model(copy.deepcopy(fp_model), compat="qgesco", init=False)
    load_qgesco_checkpoint(q2, str(path))
    with torch.no_grad():
        assert torch.equal(q2(x, t, y), q(x, t, y))


def test_checkpoint_errors(fp_model) -> None:
    sd = reference_checkpoint()
    q = quantize_model(copy.deepcopy(fp_model), compat="qgesco", init=False)
    bad = {k: v for k, v in sd.items() if not k.endswith("out.2.weight_quantizer.alpha")}
    with pytest.raises(ValueError, match="lacks 1 quantiser"):
        load_qgesco_state_dict(q, bad)
    bad = dict(sd, **{"model.not_a_layer.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="does not"):
        load_qgesco_state_dict(quantize_model(copy.deepcopy(fp_model), init=False), bad)
    with pytest.raises(ValueError, match="already quantised"):
        quantize_model(q)


def test_full_size_manifest_on_meta() -> None:
    """The full Cityscapes quantized_model.pth, key for key and shape for shape, on the meta device."""
    man = json.loads((DATA / "qgesco_full_cityscapes_qckpt_manifest.json").read_text())
    with torch.device("meta"):
        model, _ = model_and_diffusion_from_flags(man["config"])
        n_fp = model.num_parameters()
        q = quantize_model(model, compat="qgesco", init=False)
        enable_adaround(q)
    sd = qgesco_state_dict(q)
    assert {k: list(v.shape) for k, v in sd.items()} == man["state_dict"]
    assert len(sd) == man["num_tensors"]
    assert sum(v.numel() for v in sd.values()) == man["num_elements"]
    assert len(list(quant_layers(q))) == man["num_quant_modules"]
    live = sum(v.numel() for k, v in sd.items() if "_quantizer." not in k)
    assert live == man["num_fp_params_in_ckpt"]
    assert n_fp == man["fp_state_dict_num_params"]


def test_split_quantisation(fp_model) -> None:
    x, t, y = inputs()
    splits = decoder_splits(fp_model)
    assert splits  # every decoder position's first block has a 1x1 skip conv on cat([h, skip])
    q = quantize_model(copy.deepcopy(fp_model), split=True)
    for path, s in splits.items():
        layer = q.get_submodule(path)
        assert isinstance(layer, QuantLayer) and layer.split == s
        # two quantisers, each from its own half of the input columns
        w = layer.weight.detach()
        for quantizer, part in zip(layer.weight_quantizers(), (w[:, :s], w[:, s:])):
            span = part.reshape(part.shape[0], -1)
            expect = (span.max(1).values.clamp(min=0) - span.min(1).values.clamp(max=0)) / 255
            torch.testing.assert_close(quantizer.delta.flatten(), expect, rtol=1e-6, atol=0)
    with torch.no_grad():
        set_quant_state(q, weight=False)
        close(q(x, t, y), IO["fp_out"])
        set_quant_state(q, weight=True)
        # a finer grid on each half: at least as close to full precision as one quantiser
        q1 = quantize_model(copy.deepcopy(fp_model))
        e_split = (q(x, t, y) - IO["fp_out"]).abs().mean()
        e_one = (q1(x, t, y) - IO["fp_out"]).abs().mean()
        assert float(e_split) <= float(e_one) * 1.05


def test_activation_quantisation_runs_and_is_close(fp_model) -> None:
    x, t, y = inputs()
    q = quantize_model(copy.deepcopy(fp_model), 8, 8)
    with torch.no_grad():
        set_quant_state(q, weight=True, act=True)
        out = q(x, t, y)  # first call initialises every activation quantiser (min-max)
        assert all(a.inited for _, layer in quant_layers(q) for a in layer.act_quantizers())
        err = float((out - IO["fp_out"]).abs().max())
        assert 0 < err < 0.1 * float(IO["fp_out"].abs().max())


pytestmark = pytest.mark.usefixtures("one_thread")
