"""Network behaviour beyond the reference vectors: sizes, hooks, caching, errors."""

from __future__ import annotations

import pytest
import torch

from gensemcom.models import SemanticUNet, SemanticUNetConfig


def tiny(**kw) -> SemanticUNet:
    cfg = dict(label_channels=4, image_size=32, model_channels=32, channel_mult=(1, 2),
               num_res_blocks=1, attention_resolutions=(16,), num_head_channels=16)
    cfg.update(kw)
    torch.manual_seed(0)
    model = SemanticUNet(SemanticUNetConfig(**cfg))
    for p in model.parameters():  # the zero-initialised convs would make outputs trivial
        torch.nn.init.normal_(p, std=0.05)
    return model.eval()


def onehot(b: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, c, (b, h // 4, w // 4), generator=g).repeat_interleave(4, 1).repeat_interleave(4, 2)
    return torch.nn.functional.one_hot(ids, c).permute(0, 3, 1, 2).float()


@pytest.mark.parametrize("hw", [(32, 64), (48, 16), (16, 16)])
def test_any_size_and_non_square(hw):
    model = tiny()
    h, w = hw
    with torch.no_grad():
        out = model(torch.randn(2, 3, h, w), torch.tensor([3, 900]), onehot(2, 4, h, w))
    assert out.shape == (2, 6, h, w) and torch.isfinite(out).all()


def test_semantic_map_changes_output_only_through_decoder():
    model = tiny()
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([10])
    with torch.no_grad():
        a = model(x, t, onehot(1, 4, 32, 32, seed=1))
        b = model(x, t, onehot(1, 4, 32, 32, seed=2))
    assert (a - b).abs().max() > 1e-3


def test_concat_hook_spic():
    model = tiny(concat_channels=3)
    assert model.input_blocks[0][0].weight.shape[1] == 6
    x, t, y = torch.randn(1, 3, 32, 32), torch.tensor([5]), onehot(1, 4, 32, 32)
    with torch.no_grad():
        a = model(x, t, y, concat=torch.zeros(1, 3, 32, 32))
        b = model(x, t, y, concat=torch.ones(1, 3, 32, 32))
    assert (a - b).abs().max() > 1e-3
    with pytest.raises(ValueError, match="takes concat"):
        model(x, t, y)


def test_vector_hook_diff_jscc():
    model = tiny(vector_dim=8)
    assert "vector_embed.weight" in model.state_dict()
    x, t, y = torch.randn(2, 3, 32, 32), torch.tensor([5, 5]), onehot(2, 4, 32, 32)
    v = torch.randn(2, 8)
    with torch.no_grad():
        a = model(x, t, y, vector=v)
        b = model(x, t, y, vector=torch.zeros(2, 8))
    assert (a - b).abs().max() > 1e-3
    with pytest.raises(ValueError, match=r"vector \(B, 8\)"):
        model(x, t, y)


def test_cached_condition_equals_raw_map_and_is_reused():
    model = tiny()
    x, y = torch.randn(2, 3, 32, 64), onehot(2, 4, 32, 64)
    with torch.no_grad():
        cond = model.encode_condition(y)
        for t in (0, 400, 999):
            tt = torch.tensor([t, t])
            torch.testing.assert_close(model(x, tt, cond), model(x, tt, y), rtol=0, atol=1e-5)
    assert len(cond) == len(list(model.spade_norms()))


@pytest.mark.parametrize("order", ["legacy", "new"])
def test_attention_matches_explicit_softmax(order):
    """SDPA against the reference's einsum form: q, k scaled by ch^-1/4, float32 softmax."""
    from gensemcom.models.semantic_unet import AttentionBlock

    torch.manual_seed(0)
    block = AttentionBlock(64, num_heads=1, num_head_channels=16, order=order)
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(2, 64, 4, 6)
    b, c, n, heads, ch = 2, 64, 24, 4, 16
    qkv = block.qkv(block.norm(x.reshape(b, c, n)))
    if order == "legacy":
        q, k, v = qkv.reshape(b * heads, 3 * ch, n).split(ch, dim=1)
    else:
        q, k, v = (z.reshape(b * heads, ch, n) for z in qkv.chunk(3, dim=1))
    s = ch ** -0.25
    w = torch.softmax(torch.einsum("bct,bcs->bts", q * s, k * s), dim=-1)
    a = torch.einsum("bts,bcs->bct", w, v).reshape(b, c, n)
    expected = (x.reshape(b, c, n) + block.proj_out(a)).reshape(x.shape)
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_gradient_checkpointing_same_gradients():
    torch.manual_seed(0)
    x, y, t = torch.randn(2, 3, 32, 32), onehot(2, 4, 32, 32), torch.tensor([1, 500])
    grads = []
    for ckpt in (False, True):
        model = tiny(gradient_checkpointing=ckpt).train()
        model(x, t, y).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_bad_inputs_raise_clear_errors():
    model = tiny()
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([1])
    with pytest.raises(ValueError, match=r"y must be \(B, 4, H, W\).*got \(1, 5, 32, 32\)"):
        model(x, t, torch.zeros(1, 5, 32, 32))
    with pytest.raises(ValueError, match="does not match x"):
        model(x, t, torch.zeros(1, 4, 16, 16))
    with pytest.raises(ValueError, match="multiples of 2"):
        model(torch.randn(1, 3, 31, 32), t, torch.zeros(1, 4, 31, 32))
    with pytest.raises(ValueError, match=r"x must be \(B, 3, H, W\)"):
        model(torch.randn(1, 4, 32, 32), t, torch.zeros(1, 4, 32, 32))


@pytest.mark.parametrize("bad,match", [
    (dict(label_channels=-1), "label_channels must be >= 0"),
    (dict(layout="ldm"), "layout must be 'gesco' or 'sdm'"),
    (dict(out_channels=5), "out_channels must be 3"),
    (dict(num_head_channels=24), "not divisible by num_head_channels"),
    (dict(attention_resolutions=(5,)), "does not divide image_size"),
])
def test_bad_config(bad, match):
    cfg = dict(label_channels=4, image_size=32, model_channels=32, channel_mult=(1, 2),
               num_res_blocks=1, attention_resolutions=(16,), num_head_channels=16)
    cfg.update(bad)
    with pytest.raises(ValueError, match=match):
        SemanticUNetConfig(**cfg)


def test_config_dict_round_trip():
    cfg = SemanticUNetConfig(label_channels=4, image_size=32, model_channels=32, channel_mult=(1, 2),
                             attention_resolutions=(16,), num_head_channels=16, concat_channels=3)
    assert SemanticUNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown SemanticUNetConfig fields: \\['colour'\\]"):
        SemanticUNetConfig.from_dict(dict(cfg.to_dict(), colour=1))


@pytest.mark.parametrize("hooks", [{}, {"concat_channels": 3, "vector_dim": 5}])
def test_shared_encoder_branches_equal_separate_calls(hooks):
    model = tiny(**hooks)
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 3, 32, 32, generator=g), torch.tensor([10, 700])
    y1, y2 = onehot(2, 4, 32, 32, seed=1), torch.zeros(2, 4, 32, 32)
    extra = {}
    if hooks:
        extra = {"concat": torch.randn(2, 3, 32, 32, generator=g), "vector": torch.randn(2, 5, generator=g)}
    with torch.no_grad():
        both = model(x, t, torch.cat([y1, y2]), branches=2, **extra)
        cached = model(x, t, model.encode_condition(torch.cat([y1, y2])), branches=2, **extra)
        separate = torch.cat([model(x, t, y1, **extra), model(x, t, y2, **extra)])
    torch.testing.assert_close(both, separate, rtol=0, atol=1e-5)
    torch.testing.assert_close(cached, separate, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="with 2 branches"):
        model(x, t, y1, branches=2, **extra)
