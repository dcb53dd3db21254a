"""Packed integer checkpoints: exact round trips, file sizes, sampling from the packed model."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from gensemcom.diffusion import DiffusionConfig, GaussianDiffusion
from gensemcom.legacy import model_and_diffusion_from_flags
from gensemcom.models.io import load_pretrained
from gensemcom.quant.model import load_qgesco_state_dict, quantize_model, set_quant_state
from gensemcom.quant.packed import load_packed, load_quantized, pack_nibbles, save_packed, unpack_nibbles
from gensemcom.zoo import bundled_path

DATA = Path(__file__).parent / "data" / "qgesco"
CFG = json.loads((DATA / "qgesco_tiny_public_config.json").read_text())
IO = load_file(str(DATA / "qgesco_tiny_public_io.safetensors"))


def test_nibbles_round_trip() -> None:
    g = torch.Generator().manual_seed(0)
    for n in (0, 1, 7, 64):
        u = torch.randint(0, 16, (n,), generator=g, dtype=torch.uint8)
        b = pack_nibbles(u)
        assert b.numel() == (n + 1) // 2
        assert torch.equal(unpack_nibbles(b, n), u)
    assert pack_nibbles(torch.tensor([1, 2], dtype=torch.uint8)).tolist() == [1 + 2 * 16]
    with pytest.raises(ValueError, match="0, 15"):
        pack_nibbles(torch.tensor([16], dtype=torch.uint8))


def test_qgesco_checkpoint_round_trip(tmp_path) -> None:
    """Q-GESCO's tiny calibrated model (zero points above 255 included) -> packed -> same outputs."""
    fp = load_file(str(DATA / "qgesco_tiny_public_fp_weights.safetensors"))
    qk = load_file(str(DATA / "qgesco_tiny_public_qckpt_quant.safetensors"))
    model, _ = model_and_diffusion_from_flags(CFG["gesco_config"])
    model.load_state_dict(fp)
    q = quantize_model(model.eval(), compat="qgesco", init=False)
    load_qgesco_state_dict(q, {k: qk[k] if k in qk else fp[k[len("model."):]] for k, _, _ in CFG["qckpt_keys"]})
    save_packed(tmp_path / "p", q)
    zps = torch.cat([v.flatten() for k, v in qk.items() if k.endswith("zero_point")])
    outside = bool((zps < 0).any() or (zps > 255).any())
    stored = load_file(str(tmp_path / "p" / "model.safetensors"))["zero_point"].dtype
    assert stored == (torch.int16 if outside else torch.uint8)
    q2, config = load_packed(tmp_path / "p")
    x, t, y = IO["x"].clone(), IO["t"].clone(), IO["y"].clone()
    with torch.no_grad():
        out = q2(x, t, y)
        assert torch.equal(out, q(x, t, y))
        err = float((out - IO["q_w8_adaround_out"]).abs().max())
        assert err <= 1e-5 * float(IO["q_w8_adaround_out"].abs().max())


@pytest.fixture(scope="module")
def bundled():
    model, diffusion, config = load_pretrained(bundled_path("gesco_synthetic"))
    return model.float().eval(), config


@pytest.mark.parametrize("bits,limit", [(8, 0.26), (4, 0.14)])
def test_bundled_packed_size_and_round_trip(bundled, tmp_path, bits: int, limit: float) -> None:
    model, config = bundled
    fp_file = tmp_path / "fp32.safetensors"
    save_file({k: v.float().contiguous() for k, v in model.state_dict().items()}, str(fp_file))
    q = quantize_model(copy.deepcopy(model), bits, split=True)
    save_packed(tmp_path / "p", q, extra={"diffusion": config["diffusion"], "num_classes": config["num_classes"]})
    ratio = (tmp_path / "p" / "model.safetensors").stat().st_size / fp_file.stat().st_size
    assert ratio <= limit, f"{bits}-bit packed file is {ratio:.3f} of the fp32 one"
    q2, cfg = load_packed(tmp_path / "p")
    assert cfg["num_classes"] == config["num_classes"]
    g = torch.Generator().manual_seed(1)
    h, w = config["image_hw"]
    x = torch.randn(1, 3, h, w, generator=g)
    y = torch.zeros(1, model.config.label_channels, h, w)
    y[:, 1] = 1
    t = torch.tensor([500])
    with torch.no_grad():
        assert torch.equal(q2(x, t, y), q(x, t, y))


def test_packed_model_samples_as_the_fake_quantised_one(bundled, tmp_path) -> None:
    model, config = bundled
    q = quantize_model(copy.deepcopy(model), 8, 8)
    h, w = (s // 2 for s in config["image_hw"])  # any multiple of the model's size_multiple works
    y = torch.zeros(1, model.config.label_channels, h, w)
    y[:, 2, :, : w // 2] = 1
    y[:, 4, :, w // 2:] = 1
    set_quant_state(q, weight=True, act=True)
    with torch.no_grad():
        q(torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0)), torch.tensor([100]), y)  # act init
    save_packed(tmp_path / "p", q)
    q2, _ = load_packed(tmp_path / "p")
    diffusion = GaussianDiffusion.from_config(DiffusionConfig(**dict(config["diffusion"], respacing="ddim2")))
    outs = []
    for net in (q, q2):
        noise = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            outs.append(diffusion.sample(net, y, noise=noise, guidance_scale=2.0))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=1e-6)


def test_load_quantized_either_format(tmp_path) -> None:
    """What quant_sampling.py --resume --cali_ckpt needs: a .pth in Q-GESCO's layout (with the fp
    model's flags) or a packed folder, giving the same network."""
    fp = load_file(str(DATA / "qgesco_tiny_public_fp_weights.safetensors"))
    qk = load_file(str(DATA / "qgesco_tiny_public_qckpt_quant.safetensors"))
    torch.save({k: qk[k] if k in qk else fp[k[len("model."):]] for k, _, _ in CFG["qckpt_keys"]},
               tmp_path / "quantized_model.pth")
    model, _ = model_and_diffusion_from_flags(CFG["gesco_config"])
    model.load_state_dict(fp)
    wb = CFG["weight_quant_params"]["n_bits"]
    q = load_quantized(tmp_path / "quantized_model.pth", model.eval(), weight_bits=wb)
    save_packed(tmp_path / "p", q)
    q2 = load_quantized(tmp_path / "p")
    x, t, y = IO["x"].clone(), IO["t"].clone(), IO["y"].clone()
    with torch.no_grad():
        a, b = q(x, t, y), q2(x, t, y)
    assert torch.equal(a, b)
    assert float((a - IO["q_w8_adaround_out"]).abs().max()) <= 1e-5 * float(IO["q_w8_adaround_out"].abs().max())
    with pytest.raises(ValueError, match="fp model"):
        load_quantized(tmp_path / "quantized_model.pth")


def test_load_packed_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="missing config.json"):
        load_packed(tmp_path)
    with pytest.raises(ValueError, match="packed quantised"):
        load_packed(bundled_path("gesco_synthetic"))
    with pytest.raises(ValueError, match="quantize_model"):
        save_packed(tmp_path / "x", model_and_diffusion_from_flags(CFG["gesco_config"])[0])


pytestmark = pytest.mark.usefixtures("one_thread")
