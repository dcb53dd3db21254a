"""Deep JSCC: geometry, cost, power, noiseless identity, learning, files, the system and the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gensemcom.channels.analog import make_channel
from gensemcom.models.io import load_pretrained
from gensemcom.models.jscc import DeepJSCC, DeepJSCCConfig, num_parameters
from gensemcom.systems import deepjscc as deepjscc_module
from gensemcom.systems.base import Batch
from gensemcom.systems.deepjscc import DeepJSCCSystem

TINY = DeepJSCCConfig(latent_channels=4, hidden=8)



pytestmark = pytest.mark.usefixtures("one_thread")

def _images(b: int = 2, h: int = 16, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _model(cfg: DeepJSCCConfig = TINY, seed: int = 0) -> DeepJSCC:
    torch.manual_seed(seed)
    return DeepJSCC(cfg).eval()


def test_shapes_and_range():
    m = _model(DeepJSCCConfig(latent_channels=6, hidden=8, num_down=3))
    x = _images(3, 32, 64)
    z = m.encode(x)
    assert z.shape == (3, 6, 4, 8)
    y = m.decode(z)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    out, ch = m(x, make_channel("awgn"), 5.0, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and ch.received.shape == z.shape


def test_default_parameter_count():
    assert 0.4e6 < num_parameters(DeepJSCC()) < 0.8e6


def test_indivisible_size_is_a_clear_error():
    m = _model()
    with pytest.raises(ValueError, match="divisible by 4, got 18x32"):
        m.encode(_images(1, 18, 32))
    with pytest.raises(ValueError, match="divisible by 4"):
        m.channel_uses(64, 130)


@pytest.mark.parametrize("c,d,h,w", [(16, 2, 64, 128), (8, 2, 64, 128), (12, 3, 32, 64), (3, 1, 6, 10)])
def test_channel_uses_and_bandwidth_ratio_closed_form(c, d, h, w):
    m = _model(DeepJSCCConfig(latent_channels=c, hidden=8, num_down=d))
    uses = math.ceil(c * (h // 2 ** d) * (w // 2 ** d) / 2)
    assert m.channel_uses(h, w) == uses
    assert m.bandwidth_ratio(h, w) == pytest.approx(uses / (3 * h * w))
    if (c * h * w) % (2 * 4 ** d) == 0:
        assert m.bandwidth_ratio(h, w) == pytest.approx(c / (6 * 4 ** d))
    _, out = m(_images(2, h, w), make_channel("awgn"), 10.0)
    assert out.channel_uses == uses


def test_paper_ratio_default():
    assert DeepJSCC().bandwidth_ratio(64, 128) == pytest.approx(1 / 6)


@pytest.mark.parametrize("kind", ["awgn", "rayleigh"])
def test_transmitted_symbols_have_unit_power(kind):
    m = _model()
    x = _images(4) * torch.tensor([0.1, 1.0, 3.0, 10.0]).view(4, 1, 1, 1)
    _, out = m(x, make_channel(kind), 0.0, torch.Generator().manual_seed(0))
    power = out.symbols_tx.abs().pow(2).mean(dim=1)
    torch.testing.assert_close(power, torch.ones(4), rtol=1e-5, atol=1e-5)


def test_noiseless_channel_gives_the_deterministic_autoencoder():
    m = _model()
    x = _images(3)
    with torch.no_grad():
        ref = m.decode(m.encode(x))
        awgn, _ = m(x, make_channel("awgn"), math.inf, torch.Generator().manual_seed(0))
        ray, _ = m(x, make_channel("rayleigh"), math.inf, torch.Generator().manual_seed(0))
    assert torch.equal(awgn, ref)
    torch.testing.assert_close(ray, ref, rtol=1e-4, atol=1e-4)


def test_same_generator_same_output_and_noise_hurts():
    m = _model()
    x = _images(2)
    with torch.no_grad():
        a, _ = m(x, make_channel("awgn"), -5.0, torch.Generator().manual_seed(3))
        b, _ = m(x, make_channel("awgn"), -5.0, torch.Generator().manual_seed(3))
        c, _ = m(x, make_channel("awgn"), math.inf)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_a_few_steps_reduce_the_loss():
    from gensemcom.data.synthetic import SyntheticScenes

    data = SyntheticScenes(8, 16, 32, seed=2)
    x = torch.stack([data[i]["image"] for i in range(8)])
    m = _model().train()
    channel = make_channel("awgn")
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(25):
        out, _ = m(x, channel, 10.0, g)
        loss = torch.nn.functional.mse_loss(out, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5


def test_save_load_round_trip(tmp_path):
    m = _model()
    x = _images(2)
    m.save_pretrained(tmp_path / "m", extra={"trained_steps": 7})
    loaded = DeepJSCC.from_pretrained(tmp_path / "m")
    assert loaded.config == m.config and not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded.decode(loaded.encode(x)), m.decode(m.encode(x)))
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["kind"] == "deepjscc" and cfg["trained_steps"] == 7

    m.save_pretrained(tmp_path / "h", dtype=torch.float16)
    half = DeepJSCC.from_pretrained(tmp_path / "h")
    assert json.loads((tmp_path / "h" / "config.json").read_text())["stored_dtype"] == "float16"
    assert next(half.parameters()).dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(half.decode(half.encode(x)), m.decode(m.encode(x)), atol=5e-3, rtol=0)


def test_wrong_kind_of_folder_is_refused(tmp_path):
    _model().save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="'deepjscc' model, not a semantic diffusion"):
        load_pretrained(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="missing model.safetensors"):
        (tmp_path / "e").mkdir()
        (tmp_path / "e" / "config.json").write_text("{}")
        DeepJSCC.from_pretrained(tmp_path / "e")


def _batch(b: int = 2, h: int = 16, w: int = 32) -> Batch:
    return Batch(images=_images(b, h, w), labels=torch.zeros(b, h, w, dtype=torch.long), instances=None,
                 names=[f"x{i}" for i in range(b)], num_classes=3)


def test_system_run(tmp_path):
    m = _model()
    m.save_pretrained(tmp_path / "m", extra={"trained_steps": 3})
    system = DeepJSCCSystem.from_pretrained(tmp_path / "m")
    assert system.name == "deepjscc" and not system.stochastic and system.channels == ("awgn", "rayleigh")
    assert system.config()["trained_steps"] == 3 and system.config()["model"] == TINY.to_dict()
    batch = _batch()
    out = system.run(batch, "rayleigh", 5.0, torch.Generator().manual_seed(0))
    again = system.run(batch, "rayleigh", 5.0, torch.Generator().manual_seed(0))
    assert torch.equal(out.images, again.images)
    assert out.images.shape == batch.images.shape and out.labels is None and out.bits is None and out.lost is None
    assert out.channel_uses.dtype == torch.float64 and out.channel_uses.tolist() == [m.channel_uses(16, 32)] * 2
    assert out.info["bandwidth_ratio"] == pytest.approx(4 / 96)
    json.dumps(out.info)
    clean = system.run(batch, "awgn", math.inf)
    with torch.no_grad():
        assert torch.equal(clean.images, m.decode(m.encode(batch.images)))
    with pytest.raises(ValueError, match="does not support channel 'legacy'"):
        system.run(batch, "legacy", 5.0)


def test_bundled_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(deepjscc_module, "BUNDLED_DEEPJSCC", "assets/no_such_model")
    with pytest.raises(FileNotFoundError, match="train_jscc"):
        DeepJSCCSystem.bundled()


def test_cli_tiny_run_writes_model_and_eval(tmp_path):
    from gensemcom.cli.train_jscc import main

    out = tmp_path / "run"
    args = ["--out", str(out), "--steps", "3", "--batch-size", "2", "--size", "16x32", "--num-scenes", "8",
            "--latent-channels", "2", "--hidden", "8", "--eval-scenes", "2", "--no-progress",
            "--checkpoint-every", "2", "--warmup", "0"]
    assert main(args) == 0
    report = json.loads((out / "eval.json").read_text())
    assert set(report["psnr_db"]) == {"awgn", "rayleigh"}
    assert list(report["psnr_db"]["awgn"]) == ["-5", "0", "5", "10", "20"]
    assert report["channel_uses"] == 2 * 4 * 8 // 2 and report["trained_steps"] == 3
    assert (out / "model" / "eval.json").is_file()
    assert DeepJSCCSystem.from_pretrained(out / "model").model.config.latent_channels == 2
    assert len((out / "log.jsonl").read_text().splitlines()) == 1  # log_every 10: only the last step
    with pytest.raises(SystemExit):
        main(["--snr-range", "20,-5"])
