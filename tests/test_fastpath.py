"""The fast inference path (models/fastpath.py) against the plain network and the reference vectors.

The reference's tiny GESCO model (tests/data/sdm) gives one network call (1e-5) and 25-step guided
DDIM samples with and without clipping (1e-4, relative to the sample's scale as in
test_reference_vectors.py); every input is read from the files. Other configurations (attention
order, additive time embedding, resampling layers, hooks) are checked against the plain model.
"""

from __future__ import annotations

import pytest
import torch

from conftest import assert_close
from gensemcom.diffusion.gaussian import Conditioning
from gensemcom.models.fastpath import FastCondition, FastSemanticUNet, fast_unet
from gensemcom.models.semantic_unet import SemanticUNet, SemanticUNetConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def test_network_call_matches_reference(ref_model, ref_io):
    model, _ = ref_model
    fast = fast_unet(model)
    with torch.inference_mode():
        raw = fast(ref_io["x"], ref_io["t"], ref_io["y"])
        cond = fast.encode_condition(ref_io["y"])
        cached = fast(ref_io["x"], ref_io["t"], cond)
    assert_close(raw, ref_io["eps_out"], 1e-5, "eps_out (fast, raw map)")
    assert_close(cached, ref_io["eps_out"], 1e-5, "eps_out (fast, cached)")
    assert isinstance(cond, FastCondition) and len(cond) == len(list(model.spade_norms()))


@pytest.mark.parametrize("decoder", ["batched", "sequential"])
@pytest.mark.parametrize("clip,key", [(True, "ddim25_s2_sample"), (False, "ddim25_s2_noclip_sample")])
def test_guided_ddim_sample_matches_reference(ref_model, ref_io, decoder, clip, key):
    model, diffusion = ref_model
    assert diffusion.timesteps == ref_io["ddim25_timesteps"].tolist()
    fast = fast_unet(model, decoder)
    x0 = diffusion.sample(fast, ref_io["y"], noise=ref_io["x_T"], guidance_scale=2.0, method="ddim",
                          eta=0.0, clip_denoised=clip)
    assert_close(x0, ref_io[key], 1e-4, f"{key} (fast, {decoder} decoder)")


def test_zero_map_modulation_is_cached_per_model(ref_model, ref_io):
    """The all-zero (unconditional) map's SPADE modulations are computed once per model and
    size, shared by later runs, and equal to computing them from a zero map."""
    model, _ = ref_model
    fast = FastSemanticUNet(model, "sequential")
    y = ref_io["y"]
    norm = next(model.spade_norms())
    size = tuple(y.shape[-2:])
    cond = fast.encode_condition(torch.cat([y, torch.zeros_like(y)]))
    B = y.shape[0]
    with torch.inference_mode():
        scale, shift = cond.modulation(norm, size, slice(B, 2 * B))
        ref_scale, ref_shift = norm.modulation(torch.zeros_like(y), size)
        again = fast.encode_condition(torch.cat([y, torch.zeros_like(y)])).modulation(norm, size, slice(B, 2 * B))
        mixed = cond.modulation(norm, size)  # all rows: computed ones and the cached zero rows
    assert scale.shape[0] == 1  # broadcast over the batch
    torch.testing.assert_close(scale.expand_as(ref_scale), ref_scale, rtol=0, atol=1e-6)
    torch.testing.assert_close(shift.expand_as(ref_shift), ref_shift, rtol=0, atol=1e-6)
    assert again[0] is scale  # the model's cache, not a recomputation
    full = norm.modulation(torch.cat([y, torch.zeros_like(y)]), size)
    torch.testing.assert_close(mixed[0], full[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(mixed[1], full[1], rtol=0, atol=1e-5)


def _tiny(**kw) -> SemanticUNet:
    torch.manual_seed(0)
    cfg = dict(label_channels=5, image_size=16, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
               attention_resolutions=(8,), num_head_channels=16, layout="sdm", spade_hidden=16)
    m = SemanticUNet(SemanticUNetConfig(**{**cfg, **kw})).eval()
    with torch.no_grad():
        for p in m.parameters():  # every layer non-trivial (zero-initialised output convs otherwise)
            p.normal_(0, 0.05)
    return m


@pytest.mark.parametrize("kw", [
    {},
    {"attention_order": "new"},
    {"use_scale_shift_norm": False},
    {"resblock_updown": False},
    {"concat_channels": 2, "vector_dim": 4},
    {"layout": "gesco"},
])
@pytest.mark.parametrize("decoder", ["batched", "sequential"])
def test_guided_call_equals_plain_model(kw, decoder):
    model = _tiny(**kw)
    fast = fast_unet(model, decoder)
    g = torch.Generator().manual_seed(1)
    B, H, W = 2, 16, 24
    x = torch.randn(B, 3, H, W, generator=g)
    y = (torch.rand(B, 5, H, W, generator=g) > 0.5).float()
    t = torch.tensor([3, 700])
    extra = {}
    if kw.get("concat_channels"):
        extra["concat"] = torch.randn(B, 2, H, W, generator=g)
    if kw.get("vector_dim"):
        extra["vector"] = torch.randn(B, 4, generator=g)
    with torch.inference_mode():
        plain = model(x, t, y, **extra)
        out = fast(x, t, y, **extra)
        torch.testing.assert_close(out, plain, rtol=0, atol=1e-5)
        cp = Conditioning(model, y, 2.0, True, extra)
        cf = Conditioning(fast, y, 2.0, True, extra)
        assert cf.shared_encoder
        ts = torch.tensor([5, 400])
        guided_plain = model(x, ts, cp.cond, branches=2, **cp.extra)
        guided_fast = fast(x, ts, cf.cond, branches=2, **cf.extra)
    torch.testing.assert_close(guided_fast, guided_plain, rtol=0, atol=1e-5)


def test_channels_last_and_samplers_agree():
    model = _tiny()
    g = torch.Generator().manual_seed(2)
    y = (torch.rand(1, 5, 16, 16, generator=g) > 0.5).float()
    noise = torch.randn(1, 3, 16, 16, generator=g)
    from gensemcom.diffusion import GaussianDiffusion
    from gensemcom.diffusion.schedules import linear_betas
    d = GaussianDiffusion(linear_betas(1000), respacing="ddim10")
    ref = d.sample(model, y, noise=noise, guidance_scale=2.0, method="dpm++2m")
    fast = fast_unet(_tiny(), channels_last=True)
    out = d.sample(fast, y, noise=noise, guidance_scale=2.0, method="dpm++2m")
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-4)


def test_bad_arguments():
    model = _tiny()
    with pytest.raises(ValueError, match="guidance_decoder"):
        fast_unet(model, "parallel")
    with pytest.raises(ValueError, match="SemanticUNet"):
        fast_unet(torch.nn.Linear(2, 2))
    fast = fast_unet(model)
    assert fast_unet(fast) is fast
    with pytest.raises(ValueError, match="semantic map y"):
        fast(torch.zeros(1, 3, 16, 16), torch.tensor([1]), torch.zeros(1, 4, 16, 16))
    with pytest.raises(ValueError, match="multiples of 2"):
        fast(torch.zeros(1, 3, 15, 16), torch.tensor([1]), torch.zeros(1, 5, 15, 16))
