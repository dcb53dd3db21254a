"""Analog channels: conventions (pairing, power, SNR) and statistics of noise and fading."""

from __future__ import annotations

import math

import pytest
import torch

from gensemcom.channels.analog import (AWGNChannel, Channel, ChannelOutput, IdentityChannel, RayleighChannel,
                                       RicianChannel, awgn, channel_uses_for, complex_to_real, equalize,
                                       make_channel, normalize_power, pair_to_complex, rayleigh_fading,
                                       rician_fading, snr_db_to_noise_var)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def cplx(b: int, n: int, seed: int) -> torch.Tensor:
    z = torch.randn(b, n, 2, generator=gen(seed))
    return torch.view_as_complex(z)


# ---------------------------------------------------------------------------------------------- pairing, power, SNR

def test_pairing_order_padding_and_inverse():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    s, shape = pair_to_complex(x)
    assert s.dtype == torch.complex64 and s.shape == (2, 2)
    assert torch.equal(s, torch.tensor([[1 + 2j, 3 + 0j], [4 + 5j, 6 + 0j]], dtype=torch.complex64))
    assert torch.equal(complex_to_real(s, shape), x)
    y = torch.randn(3, 2, 5, 7, generator=gen(0), dtype=torch.float64)
    s, shape = pair_to_complex(y)
    assert s.dtype == torch.complex128 and s.shape == (3, 35)
    assert torch.equal(complex_to_real(s, shape), y)
    with pytest.raises(ValueError):
        complex_to_real(s, (3, 2, 5, 8))
    with pytest.raises(ValueError):
        pair_to_complex(s)


def test_normalize_power_unit_per_sample():
    s = cplx(4, 1001, 1) * torch.tensor([[0.1], [1.0], [7.0], [0.0]])
    out, scale = normalize_power(s)
    power = out.abs().pow(2).mean(dim=1)
    assert torch.allclose(power[:3], torch.ones(3), atol=1e-6)
    assert scale[3] == 1.0 and torch.equal(out[3], s[3])  # all-zero sample left alone
    assert torch.allclose(out * scale[:, None], s, atol=1e-5)


def test_snr_to_noise_variance_and_errors():
    no = snr_db_to_noise_var(10.0, 3)
    assert torch.allclose(no, torch.full((3,), 0.1))
    no = snr_db_to_noise_var(torch.tensor([0.0, 20.0, math.inf]), 3)
    assert torch.allclose(no, torch.tensor([1.0, 0.01, 0.0])) and no[2] == 0
    assert torch.allclose(snr_db_to_noise_var(torch.tensor(-3.0), 2), torch.full((2,), 10 ** 0.3))
    with pytest.raises(ValueError, match="NaN"):
        snr_db_to_noise_var(float("nan"), 2)
    with pytest.raises(ValueError, match="-inf"):
        snr_db_to_noise_var(-math.inf, 2)
    with pytest.raises(ValueError, match="shape"):
        snr_db_to_noise_var(torch.zeros(3), 2)
    with pytest.raises(ValueError, match="shape"):
        snr_db_to_noise_var(torch.zeros(2, 1), 2)
    with pytest.raises(ValueError):
        snr_db_to_noise_var("10", 2)


# ---------------------------------------------------------------------------------------------- AWGN

@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 10.0, 25.0])
def test_awgn_noise_variance_matches_n0(snr_db):
    s = torch.zeros(1, 200_000, dtype=torch.complex64)
    w = awgn(s, 10 ** (-snr_db / 10), generator=gen(2))
    n0 = 10 ** (-snr_db / 10)
    assert abs(w.abs().pow(2).mean().item() / n0 - 1) < 0.01
    # N0/2 per real dimension, real and imaginary parts uncorrelated, zero mean
    assert abs(w.real.pow(2).mean().item() / (n0 / 2) - 1) < 0.015
    assert abs(w.imag.pow(2).mean().item() / (n0 / 2) - 1) < 0.015
    assert abs((w.real * w.imag).mean().item()) / (n0 / 2) < 0.01
    assert abs(w.mean().item()) / math.sqrt(n0) < 0.01


def test_awgn_per_sample_snr_tensor_through_channel():
    snr = torch.tensor([-3.0, 0.0, 7.0, 15.0])
    x = torch.randn(4, 250_000, generator=gen(3)) * torch.tensor([[0.5], [1.0], [2.0], [4.0]])
    out = AWGNChannel()(x, snr, generator=gen(4))
    noise = out.symbols_rx - out.symbols_tx
    n0 = 10 ** (-snr / 10)
    assert torch.allclose(out.noise_var, n0)
    emp = noise.abs().pow(2).mean(dim=1)
    assert ((emp / n0 - 1).abs() < 0.01).all(), emp / n0
    assert out.channel_uses == 125_000


def test_infinite_snr_is_noiseless():
    x = torch.randn(3, 3, 9, 11, generator=gen(5)) * 5
    out = AWGNChannel()(x, math.inf, generator=gen(6))
    assert torch.equal(out.symbols_rx, out.symbols_tx)
    assert torch.equal(out.noise_var, torch.zeros(3))
    assert torch.equal(out.received, x)
    assert torch.equal(IdentityChannel()(x).received, x)
    s = cplx(2, 50, 7)
    assert torch.equal(awgn(s, 0.0, generator=gen(0)), s)
    for ch in (RayleighChannel(equalizer="zf"), RayleighChannel(equalizer="mmse"),
               RicianChannel(4.0, block_size=5)):
        o = ch(x, math.inf, generator=gen(8))
        assert torch.equal(o.symbols_rx, o.csi * o.symbols_tx)
        assert torch.allclose(o.received, x, atol=1e-4, rtol=1e-5)


def test_transmit_power_is_one_per_complex_symbol():
    x = torch.cat([torch.randn(1, 3, 7, 5, generator=gen(9)) * 0.01,
                   torch.rand(1, 3, 7, 5, generator=gen(10)) * 100 + 3])
    for ch in (AWGNChannel(), RayleighChannel(), RicianChannel(2.0), IdentityChannel()):
        out = ch(x, 10.0, generator=gen(11))
        p = out.symbols_tx.abs().pow(2).mean(dim=1)
        assert torch.allclose(p, torch.ones(2), atol=1e-6)
        assert torch.allclose(out.scale ** 2, pair_to_complex(x)[0].abs().pow(2).mean(1), rtol=1e-5)


# ---------------------------------------------------------------------------------------------- fading

def test_rayleigh_gain_statistics():
    h = rayleigh_fading(200_000, 3, generator=gen(12))
    assert h.shape == (200_000, 3) and (h == h[:, :1]).all()  # one gain per sample
    h = h[:, 0]
    assert abs(h.abs().pow(2).mean().item() - 1) < 0.01
    assert abs(h.real.var().item() - 0.5) < 0.01 and abs(h.imag.var().item() - 0.5) < 0.01
    assert abs(torch.corrcoef(torch.stack([h.real, h.imag]))[0, 1].item()) < 0.01
    assert abs(h.mean().item()) < 0.01


def test_block_fading_constant_within_blocks():
    h = rayleigh_fading(4, 50, block_size=7, generator=gen(13))
    assert h.shape == (4, 50)
    for start in range(0, 50, 7):
        block = h[:, start:start + 7]
        assert (block == block[:, :1]).all()
    firsts = h[:, ::7]
    assert (firsts[:, 1:] != firsts[:, :-1]).all()  # independent blocks differ
    hb = rayleigh_fading(50_000, 2, block_size=1, generator=gen(14))
    assert abs(hb.abs().pow(2).mean().item() - 1) < 0.01
    with pytest.raises(ValueError, match="block_size"):
        rayleigh_fading(2, 5, block_size=0)


@pytest.mark.parametrize("k", [0.5, 3.0, 10.0])
def test_rician_k_factor_from_moments(k):
    h = rician_fading(200_000, 1, k, generator=gen(15))[:, 0]
    mean = h.mean()
    var = (h - mean).abs().pow(2).mean()
    assert abs((mean.abs().pow(2) / var).item() / k - 1) < 0.03
    assert abs(h.abs().pow(2).mean().item() - 1) < 0.01
    assert abs(torch.angle(mean).item()) < 0.01  # fixed LOS phase 0


def test_rician_phase_options_and_limits():
    h = rician_fading(100_000, 1, 3.0, los_phase=None, generator=gen(16))[:, 0]
    assert abs(h.mean().item()) < 0.01  # random LOS phase averages out
    assert abs(h.abs().pow(2).mean().item() - 1) < 0.01
    h = rician_fading(5, 4, math.inf, los_phase=math.pi / 2)
    assert torch.allclose(h, torch.full((5, 4), 1j, dtype=torch.complex64), atol=1e-7)
    h0 = rician_fading(3, 4, 0.0, generator=gen(17))
    assert torch.equal(h0, rayleigh_fading(3, 4, generator=gen(17)))
    with pytest.raises(ValueError, match="k_factor"):
        rician_fading(2, 2, -1.0)
    with pytest.raises(ValueError, match="k_factor"):
        RicianChannel(float("nan"))


def test_fading_channel_noise_and_block_structure():
    x = torch.randn(2, 400_000, generator=gen(18))
    out = RayleighChannel(block_size=1000)(x, torch.tensor([0.0, 10.0]), generator=gen(19))
    noise = out.symbols_rx - out.csi * out.symbols_tx
    emp = noise.abs().pow(2).mean(dim=1)
    assert ((emp / out.noise_var - 1).abs() < 0.01).all()
    assert (out.csi[:, :1000] == out.csi[:, :1]).all() and (out.csi[:, 1000] != out.csi[:, 0]).all()


# ---------------------------------------------------------------------------------------------- equalisation

def test_zero_forcing_recovers_symbols_at_infinite_snr():
    s = cplx(3, 100, 20)
    h = rayleigh_fading(3, 100, block_size=10, generator=gen(21))
    y = awgn(h * s, 0.0)
    assert torch.allclose(equalize(y, h, 0.0, "zf"), s, atol=1e-5, rtol=1e-5)
    assert torch.allclose(equalize(y, h, 0.0, "mmse"), s, atol=1e-5, rtol=1e-5)
    assert torch.equal(equalize(y, h, 0.1, "none"), y)
    assert torch.equal(equalize(y, None, 0.1, "zf"), y)


def test_mmse_formula():
    y = cplx(2, 6, 22)
    h = cplx(2, 6, 23)
    no = torch.tensor([0.3, 2.0])
    got = equalize(y, h, no, "mmse")
    for b in range(2):
        for i in range(6):
            expect = h[b, i].conj() * y[b, i] / (abs(h[b, i]) ** 2 + no[b])
            assert abs(got[b, i] - expect) < 1e-6
    with pytest.raises(ValueError, match="equalizer"):
        equalize(y, h, no, "lmmse")
    with pytest.raises(ValueError, match="equalizer"):
        RayleighChannel(equalizer="dfe")
    with pytest.raises(ValueError, match="noise variance"):
        equalize(y, h, -1.0, "mmse")


# ---------------------------------------------------------------------------------------------- objects, factory, uses

def test_make_channel_and_errors():
    assert isinstance(make_channel("awgn"), AWGNChannel)
    ch = make_channel("rayleigh", block_size=4, equalizer="zf")
    assert isinstance(ch, RayleighChannel) and ch.block_size == 4 and ch.equalizer == "zf"
    ch = make_channel("rician", k_factor=5.0)
    assert isinstance(ch, RicianChannel) and ch.k_factor == 5.0
    assert isinstance(make_channel("none"), IdentityChannel)
    with pytest.raises(ValueError, match="awgn.*rayleigh.*rician.*none"):
        make_channel("fading")


def test_channel_outputs_shapes_dtypes_and_reproducibility():
    x = torch.randn(2, 3, 4, 5, generator=gen(24), dtype=torch.float64)
    for kind, kw in (("awgn", {}), ("rayleigh", {}), ("rician", {"k_factor": 1.0}), ("none", {})):
        ch = make_channel(kind, **kw)
        a = ch(x, 5.0, generator=gen(25))
        b = ch(x, 5.0, generator=gen(25))
        assert isinstance(a, ChannelOutput)
        assert a.received.shape == x.shape and a.received.dtype == torch.float64
        assert a.symbols_tx.dtype == torch.complex128 and a.symbols_rx.shape == (2, 30)
        assert torch.equal(a.received, b.received)
        assert (a.csi is None) == (kind in ("awgn", "none"))
        assert a.noise_var.shape == (2,)


def test_channel_uses_counts():
    x = torch.randn(2, 3, 5, 7, generator=gen(26))  # 105 real values -> 53 complex symbols
    for ch in (AWGNChannel(), RayleighChannel(block_size=3), RicianChannel(2.0), IdentityChannel()):
        out = ch(x, 3.0, generator=gen(27), pixels=35)
        assert out.channel_uses == 53 == out.symbols_tx.shape[1]
        assert out.channel_uses_per_pixel == pytest.approx(53 / 35)
        assert ch(x, 3.0, generator=gen(27)).channel_uses_per_pixel is None
    assert channel_uses_for((4, 3, 16, 16), pixels=(16, 16)) == (384, 1.5)
    with pytest.raises(ValueError, match="pixels"):
        channel_uses_for((1, 4), pixels=0)


def test_a_new_channel_is_one_apply_method():
    """``Channel.apply`` is the one method a channel model implements; the base class pairs, normalises
    and undoes both around it. A fixed phase rotation with ZF equalisation, checked by hand."""

    class PhaseChannel(Channel):
        kind = "phase"

        def apply(self, s, no, generator):
            h = torch.full_like(s, complex(math.cos(0.7), math.sin(0.7)))
            y = awgn(h * s, no, generator)
            return y, y / h, h

    x = torch.randn(2, 3, 4, 5, generator=gen(40), dtype=torch.float64)
    out = PhaseChannel()(x, 12.0, generator=gen(41))
    s, _ = pair_to_complex(x)
    unit, scale = normalize_power(s)
    h = complex(math.cos(0.7), math.sin(0.7))
    w = awgn(torch.zeros_like(unit), 10 ** (-1.2), generator=gen(41))  # the same draw the channel made
    assert torch.allclose(out.symbols_rx, h * unit + w, atol=1e-12)
    assert torch.allclose(out.received, complex_to_real((unit + w / h) * scale[:, None], x.shape), atol=1e-12)
    assert torch.allclose(PhaseChannel()(x, math.inf).received, x, atol=1e-12)
    with pytest.raises(NotImplementedError, match="apply"):
        Channel()(x, 10.0)


# ---------------------------------------------------------------------------------------------- SNR arguments

def test_check_snr_db_accepts_any_real_number():
    import numpy as np

    from gensemcom.channels import check_snr_db

    for value, want in ((5, 5.0), (5.5, 5.5), (np.float32(5.0), 5.0), (np.float64(-3.25), -3.25),
                        (np.int64(3), 3.0), (np.int8(-2), -2.0), (torch.tensor(7.5), 7.5),
                        (torch.tensor(4, dtype=torch.int32), 4.0), (np.array(2.5), 2.5), (math.inf, math.inf),
                        (np.float32(np.inf), math.inf)):
        got = check_snr_db(value)
        assert type(got) is float and got == want, (value, got)
    for nan in (float("nan"), np.float32("nan"), np.float64("nan"), torch.tensor(float("nan")), np.array(np.nan)):
        with pytest.raises(ValueError, match="snr_db is NaN"):
            check_snr_db(nan)
    with pytest.raises(ValueError, match="my_snr is NaN"):
        check_snr_db(math.nan, "my_snr")
    for minus_inf in (-math.inf, np.float32(-np.inf), torch.tensor(-math.inf)):
        with pytest.raises(ValueError, match="-inf"):
            check_snr_db(minus_inf)
    for bad in (True, np.bool_(False), "10", 1j, np.complex64(1), None, torch.tensor(True), torch.tensor(1j)):
        with pytest.raises(ValueError, match="snr_db must be a real number"):
            check_snr_db(bad)
    for many in (torch.zeros(2), np.zeros(3), [1.0]):
        with pytest.raises(ValueError, match="snr_db must be a"):
            check_snr_db(many)


def test_numpy_snr_accepted_by_every_channel():
    """Each entry point that takes ``snr_db`` gives the same result for ``np.float32`` / ``np.int64`` as for
    the Python float (same generator seed), and names NaN."""
    import numpy as np

    from gensemcom.channels import (DigitalLink, LDPCLink, LegacyGescoChannel, SemanticMapChannel, capacity_bits,
                                    capacity_uses, gesco_noise_std)
    from gensemcom.channels.coded import MCS

    x = torch.randn(2, 3, 4, 6, generator=gen(50))
    y = torch.zeros(2, 4, 8, 8)
    y[:, 0, :4], y[:, 2, 4:], y[:, 3] = 1.0, 1.0, (torch.rand(2, 8, 8, generator=gen(51)) > 0.8).float()
    bits = torch.randint(0, 2, (2, 96), generator=gen(52))
    calls = {
        "awgn": lambda s: AWGNChannel()(x, s, generator=gen(53)).received,
        "rayleigh": lambda s: RayleighChannel(block_size=4)(x, s, generator=gen(53)).received,
        "rician": lambda s: RicianChannel(2.0)(x, s, generator=gen(53)).received,
        "none": lambda s: IdentityChannel()(x, s).received,
        "map": lambda s: SemanticMapChannel("rayleigh")(y, s, generator=gen(54)).received,
        "digital": lambda s: DigitalLink("16qam", "rayleigh")(bits, s, generator=gen(55), soft=True).llr,
        "ldpc": lambda s: torch.from_numpy(LDPCLink(MCS("qpsk", 1 / 2, k=48), "rayleigh")(
            [bits[0].numpy()], s, generator=gen(56))[0].bits),
        "capacity_bits": lambda s: torch.tensor(capacity_bits(100, s, gain=0.5)),
        "capacity_uses": lambda s: torch.tensor(capacity_uses(1000, s)),
        "noise_var": lambda s: snr_db_to_noise_var(s, 2),
    }
    for name, call in calls.items():
        want = call(6.0)
        for s in (np.float32(6.0), np.int64(6), torch.tensor(6.0)):
            assert torch.equal(call(s), want), (name, type(s))
        with pytest.raises(ValueError, match="NaN"):
            call(np.float32("nan"))
    assert gesco_noise_std(np.int64(10)) == gesco_noise_std(np.float32(10.0)) == 0.36
    assert LegacyGescoChannel(np.int32(5)).noise_std == 0.6
    with pytest.raises(ValueError, match=r"NaN.*\[1, 5, 10, 15, 20, 25, 30, 100\]"):
        gesco_noise_std(math.nan)
    # one SNR per batch item as a numpy array
    per_item = np.array([3.0, 9.0], dtype=np.float32)
    assert torch.equal(SemanticMapChannel("awgn")(y, per_item, generator=gen(57)).received,
                       SemanticMapChannel("awgn")(y, torch.tensor([3.0, 9.0]), generator=gen(57)).received)
    assert torch.equal(snr_db_to_noise_var(per_item, 2), snr_db_to_noise_var(torch.tensor([3.0, 9.0]), 2))
    with pytest.raises(ValueError, match="NaN at batch items \\[1\\]"):
        snr_db_to_noise_var(np.array([1.0, np.nan]), 2)
