"""Semantic-map channels: GESCO's legacy table channel (against the reference vectors) and its physical twin
(channels/semantic.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gensemcom.channels.analog import RayleighChannel
from gensemcom.channels.semantic import (GESCO_SNR_TABLE, LegacyGescoChannel, SemanticMapChannel, fds_denoise,
                                         gesco_noise_std, median_pool3x3, transmitted_channels)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def one_hot_map(b: int, classes: int, h: int, w: int, seed: int, edges: bool = True) -> torch.Tensor:
    labels = torch.randint(0, classes, (b, h // 4, w // 4), generator=gen(seed))
    labels = labels.repeat_interleave(4, 1).repeat_interleave(4, 2)
    y = F.one_hot(labels, classes).permute(0, 3, 1, 2).float()
    if edges:
        e = torch.zeros(b, 1, h, w)
        e[:, :, :, 1:] += (labels[:, None, :, 1:] != labels[:, None, :, :-1]).float()
        y = torch.cat([y, e.clamp(max=1)], dim=1)
    return y


# ---------------------------------------------------------------------------------------------- reference

def test_table_verbatim_and_errors():
    assert GESCO_SNR_TABLE == {100: 0.0, 30: 0.05, 25: 0.08, 20: 0.13, 15: 0.22, 10: 0.36, 5: 0.6, 1: 0.9}
    assert gesco_noise_std(10) == 0.36 and gesco_noise_std(10.0) == 0.36
    for bad in (12, 0, 10.5, "10"):
        with pytest.raises(ValueError, match=r"\[1, 5, 10, 15, 20, 25, 30, 100\]"):
            LegacyGescoChannel(bad)


def test_reference_vectors(ref_io):
    y = ref_io["y"]
    ch = LegacyGescoChannel(10, pool="fds", has_edges=True)
    out = ch(y, noise=[ref_io["fds_snr10_noise_0"], ref_io["fds_snr10_noise_1"]])
    for b in range(2):
        assert (out.received[b] - ref_io[f"fds_snr10_out_{b}"]).abs().max().item() < 1e-6
    assert out.transmitted.tolist() == [[True] * 6, [True, True, True, False, False, True]]
    assert (out.received[1, 3:5] == 0).all()
    # channel uses: transmitted real values / 2 (6 and 4 channels of 32 x 64)
    assert out.real_values.tolist() == [6 * 2048, 4 * 2048]
    assert out.channel_uses.tolist() == [6144, 4096]
    assert out.channel_uses_per_pixel.tolist() == [3.0, 2.0]
    assert out.noise_std == 0.36


def test_batch_equals_per_sample_and_generator_draws(ref_io):
    y = ref_io["y"]
    ch = LegacyGescoChannel(5)
    batched = ch(y, generator=gen(0))
    g = gen(0)
    singles = [ch(y[b:b + 1], generator=g).received[0] for b in range(2)]
    assert torch.equal(batched.received, torch.stack(singles))
    # the draws are standard normals of shape (P_b, H, W), sample after sample
    g = gen(0)
    noise = [torch.randn(6, 32, 64, generator=g), torch.randn(4, 32, 64, generator=g)]
    assert torch.equal(ch(y, noise=noise).received, batched.received)
    with pytest.raises(ValueError, match=r"noise\[1\] must be \(4, 32, 64\)"):
        ch(y, noise=[noise[0], noise[0]])
    with pytest.raises(ValueError, match="one tensor per sample"):
        ch(y, noise=noise[:1])


def test_noiseless_key_and_pool_options(ref_io):
    y = ref_io["y"]
    out = LegacyGescoChannel(100)(y, generator=gen(1))
    keep = transmitted_channels(y)[:, :, None, None].float()
    assert torch.equal(out.received, fds_denoise(y, "fds") * keep)
    assert torch.equal(LegacyGescoChannel(100, pool="none")(y).received, y)
    med = LegacyGescoChannel(1, pool="median")(y, generator=gen(2)).received
    assert med.shape == y.shape and (med[1, 3:5] == 0).all()
    custom = LegacyGescoChannel(None, noise_std=0.0, pool="mean")(y)
    assert torch.equal(custom.received, fds_denoise(y, "mean") * keep)


def test_transmitted_channels_without_edges():
    y = one_hot_map(2, 5, 16, 16, 3, edges=False)
    y[0, 2] = 0  # class 2 absent from sample 0
    mask = transmitted_channels(y, has_edges=False)
    assert mask[0].tolist() == [True, True, False, True, True]
    out = LegacyGescoChannel(20, has_edges=False)(y, generator=gen(4))
    assert out.channel_uses.tolist() == [4 * 256 // 2, int(mask[1].sum()) * 256 // 2]
    assert (out.received[0, 2] == 0).all()


# ---------------------------------------------------------------------------------------------- filters

def test_fds_filters_exact_values():
    ones = torch.ones(1, 1, 4, 5)
    mean = fds_denoise(ones, "mean")
    assert mean[0, 0, 0, 0].item() == pytest.approx(4 / 9)  # zero padding counted
    assert mean[0, 0, 0, 2].item() == pytest.approx(6 / 9)
    assert mean[0, 0, 1, 1].item() == pytest.approx(1.0)
    fds = fds_denoise(ones, "fds")
    assert torch.allclose(fds, torch.ones_like(fds))  # every 3x3 window touches an interior pixel
    assert torch.equal(fds_denoise(ones, "none"), ones)
    spike = torch.zeros(2, 7, 7)
    spike[:, 3, 3] = 5.0
    assert torch.equal(fds_denoise(spike, "median"), torch.zeros_like(spike))
    with pytest.raises(ValueError, match="pool"):
        fds_denoise(ones, "max")
    with pytest.raises(ValueError, match="pool"):
        LegacyGescoChannel(10, pool="gaussian")


def test_median_matches_naive_reflect():
    x = torch.randn(2, 3, 6, 9, generator=gen(5))
    got = median_pool3x3(x)
    a = np.pad(x.numpy(), ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    expect = np.empty(x.shape, dtype=np.float32)
    for i in range(6):
        for j in range(9):
            expect[:, :, i, j] = np.median(a[:, :, i:i + 3, j:j + 3].reshape(2, 3, 9), axis=-1)
    assert np.allclose(got.numpy(), expect, atol=0)


# ---------------------------------------------------------------------------------------------- physical channel

def test_semantic_map_channel_noiseless_and_uses(ref_io):
    y = ref_io["y"]
    out = SemanticMapChannel("awgn", pool="none")(y, math.inf, generator=gen(6))
    assert torch.equal(out.received, y)
    legacy = LegacyGescoChannel(10)(y, generator=gen(6))
    assert torch.equal(out.channel_uses, legacy.channel_uses)
    assert torch.equal(out.transmitted, legacy.transmitted)
    assert [o.channel_uses for o in out.physical] == out.channel_uses.tolist()
    assert [o.channel_uses_per_pixel for o in out.physical] == out.channel_uses_per_pixel.tolist()


def test_semantic_map_channel_noise_power_per_sample():
    y = one_hot_map(2, 3, 128, 128, 7)  # 4 channels x 16384 = 65536 real values per sample
    snr = torch.tensor([0.0, 10.0])
    out = SemanticMapChannel("awgn", pool="fds")(y, snr, generator=gen(8))
    assert out.transmitted.all()
    for b in range(2):
        err = (out.noisy[b] - y[b]).pow(2).mean().item()
        signal = y[b].pow(2).mean().item()  # = mean |s|^2 / 2 per real value before normalisation
        n0 = 10 ** (-snr[b].item() / 10)
        assert abs(err / (signal * n0) - 1) < 0.03  # N0/2 per real value times scale^2 = 2 * signal
    assert torch.allclose(out.noise_var, 10 ** (-snr / 10))
    assert torch.equal(out.received, fds_denoise(out.noisy, "fds"))


def test_semantic_map_channel_fading_and_errors(ref_io):
    y = ref_io["y"]
    ch = SemanticMapChannel(RayleighChannel(block_size=256), pool="fds")
    a = ch(y, torch.tensor([5.0, 20.0]), generator=gen(9))
    b = ch(y, torch.tensor([5.0, 20.0]), generator=gen(9))
    assert torch.equal(a.received, b.received) and (a.received[1, 3:5] == 0).all()
    assert a.physical[0].csi.shape == (1, 6144)
    assert isinstance(SemanticMapChannel("rician", k_factor=2.0).channel.k_factor, float)
    with pytest.raises(ValueError, match="shape"):
        ch(y, torch.zeros(3))
    with pytest.raises(ValueError, match="awgn"):
        SemanticMapChannel("bsc")
    empty = torch.zeros(1, 3, 8, 8)  # no class present, no edge channel: nothing is sent
    out = SemanticMapChannel("awgn", has_edges=False)(empty, 10.0, generator=gen(10))
    assert out.channel_uses.tolist() == [0] and out.physical == [None] and (out.received == 0).all()
    out = LegacyGescoChannel(10, has_edges=False)(empty, generator=gen(10))
    assert out.channel_uses.tolist() == [0] and (out.received == 0).all()
