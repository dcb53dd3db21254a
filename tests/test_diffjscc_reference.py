"""Diff-JSCC against the tensors produced by running wangxuuu/Diff_JSCC's own code (CPU, float32).

Every input (configuration, weights, images, labels, timesteps, noise, step counts, SNRs) is read
from ``tests/data/diffjscc``; step counts and SNRs come from the key names (``ddim20_*``,
``betas_cosine250``, ``chan_awgn_snr10_*``), so a regenerated set with other values is checked
the same way. Tolerances are the reference README's: 1e-5 relative for single calls, encoders and
losses; the ill-conditioned 20-step cosine loops at 1e-3 (from noise) and 3e-3 (from the
inversion) absolute; the 250-step inversion at 1e-4.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gensemcom.diffusion import GaussianDiffusion
from gensemcom.models.diffjscc import (EncoderConfig, PrototypeAutoencoder, VDiffusionUNet, build_diffusion,
                                       diffusion_config_from_yaml, num_parameters, proto_alpha_sigma,
                                       proto_log_snr, proto_loss, proto_sample, unet_config_from_yaml)
from gensemcom.models.semantic_unet import SemanticUNet, SemanticUNetConfig, timestep_embedding
from gensemcom.systems.diffjscc import reference_channel

from conftest import assert_close

REF = Path(__file__).parent / "data" / "diffjscc"


def _load(name: str) -> dict[str, torch.Tensor]:
    # clone: safetensors' memory-mapped buffers are not 64-byte aligned and take other CPU kernels
    return {k: v.clone() for k, v in load_file(str(REF / name)).items()}


def _strip(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def cfg() -> dict:
    return json.loads((REF / "diffjscc_tiny_public_config.json").read_text())


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    return _load("diffjscc_tiny_public_io.safetensors")


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    sd = {}
    for part in ("unet_a", "unet_b", "encoders", "proto"):
        sd.update(_load(f"diffjscc_tiny_public_weights_{part}.safetensors"))
    return sd


@pytest.fixture(scope="module")
def unet(cfg, weights) -> SemanticUNet:
    model = SemanticUNet(unet_config_from_yaml(cfg["yaml_tiny"]))
    model.load_state_dict(_strip(weights, "unet."), strict=True)
    return model.eval()


def _encoder(cfg: dict, weights: dict, kind: str) -> torch.nn.Module:
    enc = EncoderConfig.from_yaml(cfg["yaml_tiny"], kind, cdm_model_channels=cfg["cdm_model_channels"]).build()
    enc.load_state_dict(_strip(weights, f"enc_{kind}."), strict=True)
    return enc


def _steps(io: dict, pattern: str) -> int:
    """The step count in a key name, e.g. ``ddim(\\d+)_sample`` -> 20."""
    found = {int(m.group(1)) for k in io for m in [re.fullmatch(pattern, k)] if m}
    assert len(found) == 1, f"expected one key matching {pattern}, got {sorted(found)}"
    return found.pop()


def _xT_key(io: dict) -> str:
    steps = _steps(io, r"ddim(\d+)_xT")
    return f"ddim{steps}_xT"


def _kwargs(io: dict, latent: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    return {"vector": io["enc_cdm_latent"] if latent is None else latent, "class_labels": io["y"]}


# ------------------------------------------------------------------------------------------------
# networks
# ------------------------------------------------------------------------------------------------

def test_unet_architecture_and_strict_load(cfg, unet):
    assert num_parameters(unet) == cfg["num_params"]["unet"]
    c = unet.config
    assert c.label_channels == 0 and c.num_classes == cfg["yaml_tiny"]["num_classes"]
    assert tuple(c.channel_mult) == tuple(cfg["unet_channel_mult"])
    assert tuple(c.attention_ds) == tuple(cfg["unet_attention_ds"])
    assert not any("spade" in k or "in_norm" in k for k in unet.state_dict())


def test_time_embedding_summands(cfg, io, unet):
    diffusion = build_diffusion(diffusion_config_from_yaml(cfg["yaml_tiny"]))
    t_model = diffusion.model_timesteps(io["unet_t"])
    assert_close(t_model, io["unet_t_model"], 1e-6, "t * 1000 / T")
    with torch.no_grad():
        emb_time = unet.time_embed(timestep_embedding(t_model, unet.config.model_channels))
        assert_close(emb_time, io["unet_emb_time"], 1e-5, "time_embed(sinusoid)")
        assert_close(unet.label_emb(io["y"]), io["unet_emb_label"], 1e-6, "label_emb(y)")
        assert_close(unet.latent_emb(io["enc_cdm_latent"]), io["unet_emb_latent"], 1e-5, "latent_emb(z)")


def test_unet_call(io, unet):
    with torch.no_grad():
        out = unet(io["unet_x"], io["unet_t_model"], None, **_kwargs(io))
    assert_close(out, io["unet_out"], 1e-5, "U-Net output")


@pytest.mark.parametrize("kind", ["cdm", "unet"])
def test_group_norm_encoders(cfg, io, weights, kind):
    enc = _encoder(cfg, weights, kind).eval()
    assert num_parameters(enc) == cfg["num_params"][f"enc_{kind}"]
    with torch.no_grad():
        assert_close(enc(io["x0"]), io[f"enc_{kind}_latent"], 1e-5, f"{kind} encoder")


@pytest.mark.parametrize("kind", ["jscc", "ae"])
def test_batchnorm_encoders_eval_and_train(cfg, io, weights, kind):
    enc = _encoder(cfg, weights, kind)
    assert num_parameters(enc) == cfg["num_params"][f"enc_{kind}"]
    with torch.no_grad():
        assert_close(enc.eval()(io["x0"]), io[f"enc_{kind}_latent_eval"], 1e-5, f"{kind} eval mode")
        # train mode: batch statistics (the reference's training loop); the ae case normalises
        # a batch of 2 at 1x1 resolution and is sensitive at the 3e-5 level
        assert_close(enc.train()(io["x0"]), io[f"enc_{kind}_latent_train"], 1e-5 if kind == "jscc" else 3e-5,
                     f"{kind} train mode")
    if kind == "jscc":
        bn = enc.encoder[0][2]
        assert_close(bn.running_mean, io["enc_jscc_train_running_mean_after"], 1e-5, "running mean")
        assert_close(bn.running_var, io["enc_jscc_train_running_var_after"], 1e-5, "running var")


# ------------------------------------------------------------------------------------------------
# diffusion
# ------------------------------------------------------------------------------------------------

def test_cosine_schedules_fresh_processes(cfg, io):
    keys = [k for k in io if re.fullmatch(r"betas_cosine\d+", k)]
    assert keys
    for key in keys:
        steps = int(key[len("betas_cosine"):])
        d = build_diffusion(diffusion_config_from_yaml(cfg["yaml_tiny"], steps=steps))
        assert d.num_timesteps == steps == io[key].numel()
        torch.testing.assert_close(torch.from_numpy(d.betas), io[key], rtol=1e-12, atol=0)
        # a fresh process: the network sees t * 1000 / steps
        t = torch.tensor([0, steps - 1])
        assert d.model_timesteps(t).tolist() == pytest.approx([0.0, (steps - 1) * 1000.0 / steps])


def test_p_mean_variance(cfg, io, unet):
    d = build_diffusion(diffusion_config_from_yaml(cfg["yaml_tiny"]))
    with torch.no_grad():
        model_out = unet(io["unet_x"], d.model_timesteps(io["unet_t"]), None, **_kwargs(io))
        out = d.p_mean_variance(model_out, io["unet_x"], io["unet_t"], clip_denoised=True)
        raw = d.p_mean_variance(model_out, io["unet_x"], io["unet_t"], clip_denoised=False)["pred_x0"]
    assert_close(out["mean"], io["pmv_mean"], 1e-5, "mean")
    assert_close(out["log_variance"], io["pmv_log_variance"], 1e-5, "log variance")
    # x0 = x_t / sqrt(abar) - sqrt(1/abar - 1) eps amplifies the network's rounding by up to
    # 1/sqrt(abar) (about 15 at t = 2911 of 4000): relative to the unclipped prediction's scale
    scale = raw.abs().max().item()
    err = (out["pred_x0"] - io["pmv_pred_xstart"]).abs().max().item()
    assert err <= 1e-5 * max(scale, 1.0), f"pred_x0: {err:.2e} vs scale {scale:.3g}"


@pytest.mark.parametrize("prefix", ["train", "train2"])
def test_hybrid_loss_and_latent_gradient(cfg, io, weights, unet, prefix):
    d = build_diffusion(diffusion_config_from_yaml(cfg["yaml_tiny"]))
    assert d.loss == "rescaled_hybrid"
    enc = _encoder(cfg, weights, "cdm").train()
    latent = enc(io["x0"]).detach().requires_grad_(True)
    terms = d.training_losses(unet, io["x0"], io[f"{prefix}_t"], None, noise=io[f"{prefix}_noise"],
                              model_kwargs={"vector": latent, "class_labels": io["y"]}, return_terms=True)
    assert_close(terms["mse"], io[f"{prefix}_mse"], 1e-5, "mse")
    # vb at t = T-1 is ~1e4: compare relative to each entry
    torch.testing.assert_close(terms["vb"], io[f"{prefix}_vb"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms["loss"], io[f"{prefix}_loss"], rtol=1e-5, atol=1e-6)
    if f"{prefix}_loss_mean" in io:
        mean = terms["loss"].mean()
        torch.testing.assert_close(mean.reshape(1), io[f"{prefix}_loss_mean"], rtol=1e-5, atol=1e-6)
        mean.backward()
        assert_close(latent.grad, io[f"{prefix}_dloss_dlatent"], 1e-5, "d loss / d latent")


def test_ddim_from_noise(cfg, io, unet):
    steps = _steps(io, r"ddim(\d+)_sample")
    d = build_diffusion(diffusion_config_from_yaml(cfg["yaml_tiny"], steps=steps))
    x = d.sample(unet, None, noise=io[f"ddim{steps}_xT"], method="ddim", clip_denoised=True,
                 model_kwargs=_kwargs(io), shape=io[f"ddim{steps}_xT"].shape)
    err = (x - io[f"ddim{steps}_sample"]).abs().max().item()
    assert err <= 1e-3, f"20-step DDIM from noise: max abs error {err:.2e}"


def test_ddim_inversion_and_decode(cfg, io, unet):
    inv_steps = _steps(io, r"ddim(\d+)_inverted_xT")
    half = _steps(io, rf"ddim{inv_steps}_inverted_x(\d+)")
    dec_steps = _steps(io, r"xt_ddim(\d+)_sample")
    inv = build_diffusion(diffusion_config_from_yaml(cfg["yaml_tiny"], steps=inv_steps))
    kw = _kwargs(io)
    x_half = inv.invert(unet, io["x0"], None, end_step=half - 1, model_kwargs=kw)
    assert (x_half - io[f"ddim{inv_steps}_inverted_x{half}"]).abs().max().item() <= 1e-4
    x_T = inv.invert(unet, io["x0"], None, model_kwargs=kw)
    err = (x_T - io[f"ddim{inv_steps}_inverted_xT"]).abs().max().item()
    assert err <= 1e-4, f"{inv_steps}-step inversion: max abs error {err:.2e}"
    dec = build_diffusion(diffusion_config_from_yaml(cfg["yaml_tiny"], steps=dec_steps))
    x0 = dec.sample(unet, None, noise=io[f"ddim{inv_steps}_inverted_xT"], method="ddim", model_kwargs=kw,
                    shape=io["x0"].shape)
    err = (x0 - io[f"xt_ddim{dec_steps}_sample"]).abs().max().item()
    assert err <= 3e-3, f"decode from the inverted x_T: max abs error {err:.2e}"


def test_ancestral_step(cfg, io, unet):
    n = _steps(io, r"ddpm(\d+)_step_out")
    d = build_diffusion(diffusion_config_from_yaml(cfg["yaml_tiny"], steps=n))
    t = io[f"ddpm{n}_step_t"]
    x = io[_xT_key(io)]
    with torch.no_grad():
        out = d.p_mean_variance(unet(x, d.model_timesteps(t), None, **_kwargs(io)), x, t)
    assert_close(out["pred_x0"], io[f"ddpm{n}_step_pred_xstart"], 1e-5, "pred_x0")
    step = d.p_sample(unet, x, t, None, noise=io[f"ddpm{n}_step_noise"], model_kwargs=_kwargs(io))
    assert_close(step, io[f"ddpm{n}_step_out"], 1e-5, "ancestral step")


def test_full_process_ddim_first_steps(cfg, io, unet):
    n = _steps(io, r"ddim(\d+)_step0_sample")
    d = build_diffusion(diffusion_config_from_yaml(cfg["yaml_tiny"], steps=n))
    x = io[_xT_key(io)]
    k = 0
    with torch.no_grad():
        while f"ddim{n}_step{k}_sample" in io:
            t = torch.full((x.shape[0],), n - 1 - k, dtype=torch.long)
            out = d.p_mean_variance(unet(x, d.model_timesteps(t), None, **_kwargs(io)), x, t)
            x = d.ddim_step(out, x, t)
            assert_close(x, io[f"ddim{n}_step{k}_sample"], 1e-5, f"DDIM step {k} of {n}")
            k += 1
    assert k >= 1


# ------------------------------------------------------------------------------------------------
# the unused channel, as written
# ------------------------------------------------------------------------------------------------

def test_reference_channel_as_written(io):
    z = io["enc_cdm_latent"]
    snr = _steps(io, r"chan_awgn_snr(\d+)_out")
    out, power, h = reference_channel(z, "awgn", snr, noise=io[f"chan_awgn_snr{snr}_noise"])
    assert_close(out, io[f"chan_awgn_snr{snr}_out"], 1e-5, "awgn")
    assert power.item() == pytest.approx(io[f"chan_awgn_snr{snr}_avg_power"].item(), rel=1e-5)
    assert torch.equal(h, io[f"chan_awgn_snr{snr}_h"])
    snr = _steps(io, r"chan_fading_real_snr(\d+)_out")
    n1n2 = io[f"chan_fading_real_snr{snr}_n1n2"]
    out, power, h = reference_channel(z, "fading-real", snr, noise=io[f"chan_fading_real_snr{snr}_noise"],
                                      gain_draws=n1n2)
    assert_close(h, io[f"chan_fading_real_snr{snr}_h"], 1e-6, "|h|")
    assert_close(out, io[f"chan_fading_real_snr{snr}_out"], 1e-5, "fading-real")
    assert power.item() == pytest.approx(io[f"chan_fading_real_snr{snr}_avg_power"].item(), rel=1e-5)
    with pytest.raises(ValueError, match="fading"):
        reference_channel(z, "fading", snr)


# ------------------------------------------------------------------------------------------------
# the v-diffusion prototype
# ------------------------------------------------------------------------------------------------

def test_prototype(cfg, io, weights):
    p = cfg["proto"]
    net = VDiffusionUNet(base_width=p["base_width_c"], con_dim=p["con_dim"], con_emb=p["con_emb"])
    net.load_state_dict(_strip(weights, "proto_diffusion."), strict=True)
    ae = PrototypeAutoencoder(hidden_dims=p["ae_hidden_dims"])
    ae.load_state_dict(_strip(weights, "proto_ae."), strict=True)
    assert num_parameters(net) == cfg["num_params"]["proto_diffusion"]
    assert num_parameters(ae) == cfg["num_params"]["proto_ae"]
    net.eval()
    with torch.no_grad():
        latent = ae.eval().latent(io["x0"])
        assert_close(latent, io["proto_latent"], 3e-5, "prototype latent")
        log_snr = proto_log_snr(io["proto_t"])
        assert_close(log_snr, io["proto_log_snr"], 1e-5, "log SNR")
        alpha, sigma = proto_alpha_sigma(log_snr)
        noised = io["x0"] * alpha[:, None, None, None] + io["proto_noise"] * sigma[:, None, None, None]
        assert_close(noised, io["proto_noised"], 1e-5, "noised")
        v = net(io["proto_noised"], io["proto_log_snr"], io["y"], io["proto_latent"])
        assert_close(v, io["proto_v"], 1e-5, "v prediction")
        loss = proto_loss(net, io["x0"], io["proto_t"], io["proto_noise"], io["y"], io["proto_latent"])
        assert loss.item() == pytest.approx(io["proto_loss"].item(), rel=1e-5)
        loss = proto_loss(net, io["x0"], io["proto_t"], io["proto_eval_loss_noise"], io["y"], io["proto_latent"])
        assert loss.item() == pytest.approx(io["proto_eval_loss"].item(), rel=1e-5)
        x = proto_sample(net, io["proto_xT"], p["ddim_steps"], io["y"], io["proto_latent"], eta=p["eta"])
        assert_close(x, io[f"proto_ddim{p['ddim_steps']}_sample"], 1e-4, "prototype DDIM")


# ------------------------------------------------------------------------------------------------
# the full-size configuration, on the meta device
# ------------------------------------------------------------------------------------------------

def test_full_size_manifest():
    m = json.loads((REF / "diffjscc_full_manifest.json").read_text())
    yaml = m["config"]

    def check(module: torch.nn.Module, entry: dict, what: str) -> None:
        sd = {k: list(v.shape) for k, v in module.state_dict().items()}
        assert sd == {k: list(v) for k, v in entry["state_dict"].items()}, what
        assert num_parameters(module) == entry["num_params"], what
        assert len(sd) == entry["num_tensors"], what

    with torch.device("meta"):
        check(SemanticUNet(unet_config_from_yaml(yaml)), m["unet"], "U-Net")
        for kind in ("cdm", "unet", "jscc", "ae"):
            check(EncoderConfig.from_yaml(yaml, kind).build(), m[f"enc_{kind}"], f"{kind} encoder")
        con_dim = m["proto_diffusion"]["state_dict"]["con_embd.weight"][1]
        con_emb = m["proto_diffusion"]["state_dict"]["con_embd.weight"][0]
        width = m["proto_diffusion"]["state_dict"]["net.0.main.0.weight"][0]
        check(VDiffusionUNet(base_width=width, con_dim=con_dim, con_emb=con_emb), m["proto_diffusion"], "prototype")
        ae_sd = m["proto_autoencoder"]["state_dict"]
        hidden = [ae_sd[f"encoder.{i}.0.weight"][0] for i in range(len(ae_sd)) if f"encoder.{i}.0.weight" in ae_sd]
        check(PrototypeAutoencoder(hidden_dims=hidden), m["proto_autoencoder"], "prototype autoencoder")


def test_unet_config_round_trip(cfg):
    c = unet_config_from_yaml(cfg["yaml_tiny"])
    assert SemanticUNetConfig.from_dict(c.to_dict()) == c
    assert isinstance(build_diffusion(diffusion_config_from_yaml(cfg["yaml_tiny"], steps=20)), GaussianDiffusion)
    assert math.isfinite(float(c.dropout))
