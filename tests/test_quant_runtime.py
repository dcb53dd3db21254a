"""The integer runtime (ONNX Runtime QDQ int8 graph) against fake quantisation and fp32.

Tolerances (stated here, measured on the bundled model at 16x32): the exported float graph equals
torch within 1e-4 relative; the int8 graph's eps differs from the fp32 eps by at most 8% (mean
absolute difference relative to the mean magnitude; 2.0% measured, our W8A8 fake quantisation
2.7%) and from our W8A8 fake quantisation (symmetric int8 weights, min-max activations) by at
most as much (3.3% measured).
"""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from gensemcom.diffusion import DiffusionConfig, GaussianDiffusion  # noqa: E402
from gensemcom.models.io import load_pretrained  # noqa: E402
from gensemcom.quant.calibrate import CalibrationSet, calibrate_activations  # noqa: E402
from gensemcom.quant.model import quantize_model, set_quant_state  # noqa: E402
from gensemcom.quant.runtime import OrtNetwork, export_onnx, quantize_onnx  # noqa: E402
from gensemcom.zoo import bundled_path  # noqa: E402

H, W = 16, 32  # small inputs keep the test fast; the benchmark runs the bundled size


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().mean() / b.abs().mean())


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model, _, config = load_pretrained(bundled_path("gesco_synthetic"))
    model = model.float().eval()
    g = torch.Generator().manual_seed(0)
    lc = model.config.label_channels
    ys = torch.zeros(4, lc, H, W)
    for i in range(4):
        ys[i, 1 + i] = 1
        ys[i, 5 + i, :, : W // 2] = 1
        ys[i, 1 + i, :, : W // 2] = 0
    cali = CalibrationSet(torch.randn(4, 3, H, W, generator=g), torch.tensor([50.0, 300.0, 600.0, 900.0]), ys)
    tmp = tmp_path_factory.mktemp("ort")
    q = quantize_model(copy.deepcopy(model), 8, 8, symmetric=True)
    fp_path = export_onnx(q, tmp / "net.onnx", H, W)
    int8_path = quantize_onnx(fp_path, tmp / "net_int8.onnx",
                              [(cali.xs[i: i + 1], cali.ts[i: i + 1], cali.cs[i: i + 1]) for i in range(len(cali))])
    calibrate_activations(q, cali, batch=1, running=False)
    return model, q, cali, fp_path, int8_path, config


def test_exported_graph_is_the_network(setup) -> None:
    model, q, cali, fp_path, _, _ = setup
    net = OrtNetwork(fp_path, model.config, threads=1)
    x, t, y = cali.xs[:2], cali.ts[:2], cali.cs[:2]
    set_quant_state(q, weight=True, act=False)
    with torch.no_grad():
        ref = q(x, t, y)
    set_quant_state(q, weight=True, act=True)
    out = net(x, t, y)
    assert float((out - ref).abs().max()) <= 1e-4 * float(ref.abs().max())


def test_int8_graph_agrees_with_fake_quantisation(setup) -> None:
    model, q, cali, _, int8_path, _ = setup
    net = OrtNetwork(int8_path, model.config, threads=1)
    g = torch.Generator().manual_seed(1)
    x, t, y = torch.randn(2, 3, H, W, generator=g), torch.tensor([100.0, 700.0]), cali.cs[1:3]
    with torch.no_grad():
        fp = model(x, t, y)[:, :3]
        fake = q(x, t, y)[:, :3]
    ort = net(x, t, y)[:, :3]
    assert 0 < rel(ort, fp) <= 0.08
    assert rel(fake, fp) <= 0.08
    assert rel(ort, fake) <= 0.08


def test_int8_graph_samples(setup) -> None:
    model, _, cali, _, int8_path, config = setup
    net = OrtNetwork(int8_path, model.config, threads=1)
    diffusion = GaussianDiffusion.from_config(DiffusionConfig(**dict(config["diffusion"], respacing="ddim2")))
    noise = torch.randn(1, 3, H, W, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a = diffusion.sample(net, cali.cs[:1], noise=noise, guidance_scale=2.0)
        b = diffusion.sample(model, cali.cs[:1], noise=noise, guidance_scale=2.0)
    assert a.shape == b.shape and torch.isfinite(a).all()
    assert float((a - b).abs().mean()) < 0.1


pytestmark = pytest.mark.usefixtures("one_thread")
