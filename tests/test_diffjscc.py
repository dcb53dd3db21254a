"""Diff-JSCC beyond the reference vectors: the map-free U-Net's inputs, the latent path through a
real channel (power, noise statistics, per-item SNR, fading), training end to end, decoding,
saving, the yaml, and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from gensemcom.models.diffjscc import (DiffJSCC, DiffJSCCConfig, EncoderConfig, normalize_latent,
                                       unet_config_from_yaml)
from gensemcom.models.semantic_unet import SemanticUNet, SemanticUNetConfig

REF = Path(__file__).parent / "data" / "diffjscc"


def tiny_unet_config(**kw) -> SemanticUNetConfig:
    cfg = dict(label_channels=0, image_size=32, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
               attention_resolutions=(16,), num_head_channels=-1, num_heads=2, resblock_updown=False,
               layout="sdm", vector_dim=64, vector_embed_name="latent_emb", num_classes=10)
    cfg.update(kw)
    return SemanticUNetConfig(**cfg)


def tiny_model(seed: int = 0, **kw) -> DiffJSCC:
    snr_input = kw.get("snr_input", False)
    class_label = kw.get("class_label", "sent")
    unet = tiny_unet_config(vector_dim=64 + (1 if snr_input else 0),
                            num_classes=10 if class_label == "sent" else 0)
    args = dict(unet=unet, encoder=EncoderConfig(kind="jscc", image_size=32, c_out=1), sample_steps=4,
                inversion_steps=5)
    args.update(kw)
    torch.manual_seed(seed)
    model = DiffJSCC(DiffJSCCConfig(**args))
    for p in model.unet.parameters():  # the zero-initialised convs would make outputs trivial
        torch.nn.init.normal_(p, std=0.05)
    return model.eval()


def images(b: int, seed: int = 0, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g) * 2 - 1


# ------------------------------------------------------------------------------------------------
# the map-free, class- and vector-conditioned U-Net (the platform hooks)
# ------------------------------------------------------------------------------------------------

def test_map_free_unet_has_no_spade_and_each_input_matters():
    torch.manual_seed(0)
    model = SemanticUNet(tiny_unet_config())
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    model.eval()
    assert not any("spade" in k or "in_norm" in k or "mlp_" in k for k in model.state_dict())
    assert {"label_emb.weight", "latent_emb.weight", "latent_emb.bias"} <= set(model.state_dict())
    assert list(model.spade_norms()) == []
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([3.0, 700.0])
    v, c = torch.randn(2, 64), torch.tensor([1, 7])
    with torch.no_grad():
        base = model(x, t, None, vector=v, class_labels=c)
        assert torch.equal(base, model(x, t, torch.zeros(2, 0, 32, 32), vector=v, class_labels=c))
        assert (base - model(x, t, None, vector=v, class_labels=torch.tensor([2, 7]))).abs().max() > 1e-4
        assert (base - model(x, t, None, vector=v * 0, class_labels=c)).abs().max() > 1e-4
        # per item: changing item 0's class leaves item 1 unchanged
        other = model(x, t, None, vector=v, class_labels=torch.tensor([2, 7]))
        torch.testing.assert_close(other[1], base[1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("call,match", [
    (lambda m, x, t, v, c: m(x, t, torch.zeros(2, 4, 32, 32), vector=v, class_labels=c), "no semantic map"),
    (lambda m, x, t, v, c: m(x, t, None, vector=v), "class_labels"),
    (lambda m, x, t, v, c: m(x, t, None, vector=v, class_labels=torch.tensor([1.0, 2.0])), "integers"),
    (lambda m, x, t, v, c: m(x, t, None, vector=v, class_labels=torch.tensor([1, 10])), r"\[0, 9\]"),
    (lambda m, x, t, v, c: m(x, t, None, vector=v, class_labels=torch.tensor([1])), r"shape \(2,\)"),
    (lambda m, x, t, v, c: m(x, t, None, vector=torch.zeros(2, 63), class_labels=c), r"vector \(B, 64\)"),
    (lambda m, x, t, v, c: m(x, t, None, class_labels=c), r"vector \(B, 64\)"),
])
def test_map_free_unet_bad_input(call, match):
    model = SemanticUNet(tiny_unet_config())
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([3, 5])
    with pytest.raises(ValueError, match=match):
        call(model, x, t, torch.zeros(2, 64), torch.tensor([0, 1]))


def test_map_models_still_need_a_map_and_reject_classes():
    model = SemanticUNet(SemanticUNetConfig(label_channels=4, image_size=32, model_channels=32, channel_mult=(1, 2),
                                            num_res_blocks=1, attention_resolutions=(16,), num_head_channels=16))
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([3])
    with pytest.raises(ValueError, match="needs a semantic map"):
        model(x, t, None)
    with pytest.raises(ValueError, match="num_classes=0"):
        model(x, t, torch.zeros(1, 4, 32, 32), class_labels=torch.tensor([1]))
    with pytest.raises(ValueError, match="vector_embed_name"):
        SemanticUNetConfig(label_channels=0, vector_embed_name="z_proj")


# ------------------------------------------------------------------------------------------------
# the latent path: power, channel statistics
# ------------------------------------------------------------------------------------------------

def test_latent_power_normalised_per_image():
    model = tiny_model()
    x = images(4) * torch.tensor([0.1, 1.0, 3.0, 0.5])[:, None, None, None]
    with torch.no_grad():
        z = model.encode(x)
    sym = torch.view_as_complex(z.reshape(4, -1, 2))
    torch.testing.assert_close(sym.abs().pow(2).mean(dim=1), torch.ones(4), rtol=1e-5, atol=0)
    assert model.config.channel_uses == 32 and z.shape == (4, 64)
    assert torch.equal(normalize_latent(torch.zeros(2, 6)), torch.zeros(2, 6))


def test_awgn_noise_matches_snr_per_item():
    """Received - sent is Gaussian with variance N0/2 per real value, N0 = 10^(-snr/10), for each
    item's own SNR; averaged over many draws."""
    model = tiny_model()
    with torch.no_grad():
        z = model.encode(images(3)).repeat(400, 1)  # 1200 x 64
    snr = torch.tensor([0.0, 10.0, 20.0]).repeat(400)
    g = torch.Generator().manual_seed(1)
    err = model.send(z, "awgn", snr, generator=g) - z
    for i, s in enumerate((0.0, 10.0, 20.0)):
        e = err[i::3]
        var = e.pow(2).mean().item()
        expected = 10 ** (-s / 10) / 2
        assert abs(var / expected - 1) < 0.03, (s, var, expected)  # n = 25600: std error 0.9%
        assert abs(e.mean().item()) < 4 * math.sqrt(expected / e.numel())
        kurt = (e.pow(4).mean() / e.pow(2).mean() ** 2).item()
        assert abs(kurt - 3) < 0.15  # Gaussian
    # noiseless: exactly the sent latent
    assert torch.equal(model.send(z[:3], "awgn", math.inf, generator=g), z[:3])


def test_rayleigh_mmse_error_matches_theory():
    model = tiny_model()
    with torch.no_grad():
        z = model.encode(images(2)).repeat(500, 1)
    g = torch.Generator().manual_seed(2)
    clean = model.send(z, "rayleigh", math.inf, generator=g)
    torch.testing.assert_close(clean, z, rtol=0, atol=1e-5)
    # at high SNR the MMSE estimate is close to z except in deep fades; its mean squared error
    # matches E[N0 / (|h|^2 + N0)] per complex symbol, with |h|^2 ~ Exp(1)
    snr = 10.0
    n0 = 10 ** (-snr / 10)
    out = model.send(z, "rayleigh", snr, generator=g)
    mse = (out - z).pow(2).sum(dim=1).mean().item() / 32  # per complex symbol
    # E[N0/(G+N0)] for G ~ Exp(1): N0 * exp(N0) * E1(N0)
    from scipy.special import exp1

    expected = n0 * math.exp(n0) * exp1(n0)
    assert abs(mse / expected - 1) < 0.15, (mse, expected)


def test_compat_reference_has_no_normalisation_and_no_channel():
    model = tiny_model(compat="diffjscc")
    x = images(2) * 3
    with torch.no_grad():
        z = model.encode(x)
        torch.testing.assert_close(z, model.encoder(x))
    assert torch.equal(model.send(z, "awgn", 0.0), z)


# ------------------------------------------------------------------------------------------------
# training, decoding, saving
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [{}, {"snr_input": True, "train_channel": "rayleigh"},
                                {"compat": "diffjscc"}, {"class_label": "none"}])
def test_training_reaches_the_encoder_through_the_channel(kw):
    model = tiny_model(**kw).train()
    x, c = images(2), torch.tensor([3, 6])
    terms = model.training_losses(x, c if model.config.class_label == "sent" else None,
                                  generator=torch.Generator().manual_seed(0))
    assert set(terms) == {"loss", "mse", "vb"} and terms["loss"].shape == (2,)
    terms["loss"].mean().backward()
    grads = [p.grad for p in model.encoder.parameters() if p.requires_grad]
    assert all(gr is not None for gr in grads) and sum(gr.abs().sum().item() for gr in grads) > 0
    # same generator, same loss
    model.zero_grad()
    again = model.training_losses(x, c if model.config.class_label == "sent" else None,
                                  generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again["loss"], terms["loss"])


def test_training_snr_changes_the_loss_only_with_a_channel():
    model = tiny_model(train_snr_db=(0.0, 0.0))
    x, c = images(2), torch.tensor([3, 6])
    t = torch.tensor([5, 2000])
    noise = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        low = model.training_losses(x, c, t=t, noise=noise, snr_db=-10.0, generator=torch.Generator().manual_seed(0))
        high = model.training_losses(x, c, t=t, noise=noise, snr_db=60.0, generator=torch.Generator().manual_seed(0))
        ref = model.training_losses(x, c, t=t, noise=noise, snr_db=math.inf, generator=torch.Generator().manual_seed(0))
    assert (low["mse"] - ref["mse"]).abs().max() > 1e-6
    torch.testing.assert_close(high["mse"], ref["mse"], rtol=1e-3, atol=1e-5)


def test_decode_from_noise_is_seeded_and_oracle_is_separate():
    model = tiny_model(snr_input=True)
    x, c = images(2), torch.tensor([3, 6])
    with torch.no_grad():
        z = model.send(model.encode(x), "awgn", 10.0, generator=torch.Generator().manual_seed(0))
        a = model.decode(z, c, 10.0, generator=torch.Generator().manual_seed(5), process="fresh")
        b = model.decode(z, c, 10.0, generator=torch.Generator().manual_seed(5), process="fresh")
        other = model.decode(z, c, 10.0, generator=torch.Generator().manual_seed(6), process="fresh")
        resp = model.decode(z, c, 10.0, generator=torch.Generator().manual_seed(5), process="respaced")
        oracle = model.oracle_decode(x, z, c, 10.0)
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, b) and (a - other).abs().max() > 1e-3
    assert a.abs().max() <= 1 and (a - resp).abs().max() > 1e-4
    assert oracle.shape == x.shape and torch.isfinite(oracle).all()
    assert model.sampling_process().num_timesteps == 4 and model.config.sample_process == "respaced"
    assert model.sampling_process(process="respaced").timesteps[-1] == 3999


def test_save_and_load_round_trip(tmp_path):
    model = tiny_model(snr_input=True)
    model.save_pretrained(tmp_path / "m")
    loaded = DiffJSCC.from_pretrained(tmp_path / "m")
    assert loaded.config == model.config
    x, c = images(2), torch.tensor([3, 6])
    with torch.no_grad():
        z = model.encode(x)
        torch.testing.assert_close(loaded.encode(x), z)
        g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
        torch.testing.assert_close(loaded.decode(z, c, 5.0, generator=g1), model.decode(z, c, 5.0, generator=g2))
    assert set(json.loads((tmp_path / "m" / "config.json").read_text())["model"]) >= {"unet", "encoder"}


def test_from_yaml_full_size_bandwidth():
    yaml = json.loads((REF / "diffjscc_full_manifest.json").read_text())["config"]
    cfg = DiffJSCCConfig.from_yaml(yaml)
    assert cfg.compat == "diffjscc" and cfg.class_label == "sent" and cfg.label_bits == 4
    assert cfg.sample_process == "fresh"
    assert cfg.latent_dim == 512 and cfg.channel_uses == 256
    assert cfg.channel_uses / (32 * 32) == 0.25
    assert cfg.diffusion.steps == 4000 and cfg.diffusion.loss == "rescaled_hybrid"
    real = DiffJSCCConfig.from_yaml(yaml, compat="none", snr_input=True, train_snr_db=(0, 20))
    assert real.unet.vector_dim == 513
    for kind, k in (("jscc", 8 * 64), ("ae", 512)):
        assert DiffJSCCConfig.from_yaml(dict(yaml, encoder_type=kind)).latent_dim == k
    with pytest.raises(ValueError, match="latent_dim 512 in the yaml differs"):
        DiffJSCCConfig.from_yaml(dict(yaml, encoder_type="jscc", c_out=4))
    with pytest.raises(ValueError, match="unknown DiffJSCCConfig overrides"):
        DiffJSCCConfig.from_yaml(yaml, colour=1)


def test_bad_input_is_named():
    model = tiny_model()
    with pytest.raises(ValueError, match="built for 32x32 images"):
        model.encode(images(1, size=64))
    with pytest.raises(ValueError, match=r"received latent must be \(B, 64\)"):
        model.decode(torch.zeros(1, 63), torch.tensor([1]))
    with pytest.raises(ValueError, match="pass class_labels"):
        model.decode(torch.zeros(1, 64), None)
    with pytest.raises(ValueError, match="pass snr_db"):
        tiny_model(snr_input=True).decode(torch.zeros(1, 64), torch.tensor([1]))
    with pytest.raises(ValueError, match="vector_dim"):
        DiffJSCCConfig(unet=tiny_unet_config(vector_dim=32), encoder=EncoderConfig(kind="jscc", c_out=1))
    with pytest.raises(ValueError, match="class_label='none' needs unet.num_classes = 0"):
        DiffJSCCConfig(unet=tiny_unet_config(), encoder=EncoderConfig(kind="jscc", c_out=1), class_label="none")
    with pytest.raises(ValueError, match="unknown encoder kind"):
        EncoderConfig(kind="vae")
    with pytest.raises(ValueError, match="unsupported image size 48"):
        unet_config_from_yaml({"image_size": 48, "num_channels": 32, "num_res_blocks": 1, "latent_dim": 8})


def test_seed_yaml_file(tmp_path):
    yaml = pytest.importorskip("yaml")
    from gensemcom.models.diffjscc import read_yaml_config, train_settings_from_yaml

    cfg = json.loads((REF / "diffjscc_full_manifest.json").read_text())["config"]
    (tmp_path / "cifar10.yaml").write_text(yaml.safe_dump(cfg))
    read = read_yaml_config(tmp_path / "cifar10.yaml")
    assert DiffJSCCConfig.from_yaml(read) == DiffJSCCConfig.from_yaml(cfg)
    t = train_settings_from_yaml(read)
    assert t == {"steps": 100000, "batch_size": 64, "grad_accum": 1, "lr": 1e-4, "weight_decay": 0.0,
                 "ema_rate": 0.9999, "amp": "none"}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(dict(cfg, use_label_embed=True)))
    with pytest.raises(ValueError, match="use_label_embed"):
        read_yaml_config(tmp_path / "bad.yaml")
    with pytest.raises(FileNotFoundError, match="config file not found"):
        read_yaml_config(tmp_path / "none.yaml")
