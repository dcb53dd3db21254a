"""Coded digital link (gensemcom.channels.coded) and the separation baselines
(gensemcom.systems.separation)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from gensemcom.channels.coded import (MCS, MCS_PRESETS, LDPCLink, capacity_bits, capacity_uses, get_mcs)
from gensemcom.codecs import encode_labels
from gensemcom.data.synthetic import SyntheticScenes
from gensemcom.systems.base import Batch
from gensemcom.systems.separation import DigitalMap, SeparateCoding


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def batch() -> Batch:
    ds = SyntheticScenes(2, 64, 128, seed=1)
    items = [ds[i] for i in range(2)]
    return Batch(images=torch.stack([x["image"] for x in items]), labels=torch.stack([x["label"] for x in items]),
                 instances=torch.stack([x["instance"] for x in items]), names=[x["path"] for x in items],
                 num_classes=12)


@pytest.fixture(scope="module")
def link16() -> LDPCLink:
    return LDPCLink("16qam-1/2")


def random_bits(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, n).astype(np.uint8)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(4.0 / ((a - b) ** 2).mean(dim=(1, 2, 3)))


# ------------------------------------------------------------------------------------------------
# MCS and the ideal link
# ------------------------------------------------------------------------------------------------

def test_mcs_presets_closed_forms():
    for name, m in MCS_PRESETS.items():
        assert m.name == name and get_mcs(name) is m
        assert m.n * m.rate == pytest.approx(m.k)
        assert m.n % m.bits_per_symbol == 0
        assert m.spectral_efficiency == pytest.approx(m.bits_per_symbol * m.rate)
    m = get_mcs("16qam-1/2")
    assert (m.k, m.n, m.symbols_per_block, m.spectral_efficiency) == (1024, 2048, 512, 2.0)
    assert m.shannon_threshold_db() == pytest.approx(10 * math.log10(3))
    assert get_mcs("64qam-2/3").n == 1536
    assert MCS("16qam", 0.5, k=512).name == "16qam-1/2@512"


def test_mcs_errors():
    with pytest.raises(ValueError, match="unknown MCS"):
        get_mcs("8psk-1/2")
    with pytest.raises(ValueError, match="constellation"):
        MCS("8psk", 0.5)
    with pytest.raises(ValueError, match="rate"):
        MCS("qpsk", 0.1)
    with pytest.raises(ValueError, match="multiple"):
        MCS("64qam", 0.5, k=1024)  # n = 2048 is not a multiple of 6
    with pytest.raises(ValueError, match="channel"):
        LDPCLink("qpsk-1/2", channel="rician")


def test_capacity_bits_closed_form():
    assert capacity_bits(1000, 10.0) == math.floor(1000 * math.log2(11))
    assert capacity_bits(4096, 20.0) == math.floor(4096 * math.log2(101))
    h = 0.3 - 0.4j  # |h|^2 = 0.25
    assert capacity_bits(1000, 10.0, h) == math.floor(1000 * math.log2(1 + 2.5))
    assert capacity_bits(0, 10.0) == 0
    assert capacity_bits(10, math.inf) == math.inf
    assert capacity_bits(10, 10.0, 0.0) == 0
    with pytest.raises(ValueError):
        capacity_bits(-1, 10.0)
    for bits, snr, g in [(1000, 5.0, None), (12345, -3.0, 0.7j), (7, 30.0, None)]:
        u = capacity_uses(bits, snr, g)
        c = math.log2(1 + abs(1 if g is None else g) ** 2 * 10 ** (snr / 10))
        assert u == math.ceil(bits / c)
        assert capacity_bits(u, snr, g) >= bits and capacity_bits(u - 1, snr, g) < bits
    assert capacity_uses(100, math.inf) == 0 and capacity_uses(100, 5.0, 0) == math.inf


# ------------------------------------------------------------------------------------------------
# LDPC link
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mcs", ["qpsk-1/2", "16qam-1/2", "64qam-2/3"])
def test_noiseless_decoding_is_exact(mcs):
    link = LDPCLink(mcs)
    payloads = [random_bits(1500, 1), bytes(range(200)), np.zeros(0, np.uint8), random_bits(1, 2)]
    results = link(payloads, math.inf, torch.Generator().manual_seed(0))
    m = link.mcs
    for p, r in zip(payloads, results):
        bits = np.unpackbits(np.frombuffer(p, np.uint8)) if isinstance(p, bytes) else p
        assert r.success and r.block_errors == 0 and r.bit_errors == 0
        assert np.array_equal(r.bits, bits)
        assert r.num_blocks == math.ceil(len(bits) / m.k)
        assert r.channel_uses == math.ceil(len(bits) / m.k) * m.n // m.bits_per_symbol == link.channel_uses(len(bits))
    assert results[1].data == payloads[1] and results[0].data is None


def test_high_and_very_low_snr(link16):
    payloads = [random_bits(2500, s) for s in range(2)]
    ok = link16(payloads, 20.0, torch.Generator().manual_seed(0))
    assert all(r.success and r.bit_errors == 0 for r in ok)
    bad = link16(payloads, -5.0, torch.Generator().manual_seed(0))
    assert all(not r.success and r.block_errors == r.num_blocks == 3 for r in bad)
    assert all(r.bit_errors > 0.2 * 2500 for r in bad)


def test_rayleigh_known_gains_and_reproducibility():
    link = LDPCLink("qpsk-1/2", channel="rayleigh")
    payloads = [random_bits(2048, 3), random_bits(900, 4)]
    res = link(payloads, 15.0, torch.Generator().manual_seed(0), gains=[0.8j, -0.6 + 0.3j])
    assert all(r.success for r in res) and res[0].gain == pytest.approx(0.8j)
    a = link(payloads, 3.0, torch.Generator().manual_seed(7))
    b = link(payloads, 3.0, torch.Generator().manual_seed(7))
    c = link(payloads, 3.0, torch.Generator().manual_seed(8))
    assert [r.gain for r in a] == [r.gain for r in b] != [r.gain for r in c]
    assert all(np.array_equal(x.bits, y.bits) and x.block_errors == y.block_errors for x, y in zip(a, b))
    with pytest.raises(ValueError, match="gains"):
        LDPCLink("qpsk-1/2")(payloads, 3.0, gains=[1, 1])


def test_waterfall_of_16qam_half_on_awgn(link16):
    """Shannon: 2 bits/use need Es/N0 >= 10 log10(3) = 4.77 dB. The k = 1024 LDPC code with BICM
    and 20 BP iterations has its 50 % block-error point about 1.5 dB above that."""
    thr = link16.mcs.shannon_threshold_db()
    g = torch.Generator().manual_seed(0)
    payloads = [torch.randint(0, 2, (4 * 1024,), generator=g).numpy() for _ in range(6)]  # 24 blocks

    def bler(snr_db: float, count: int = 6) -> float:
        res = link16(payloads[:count], snr_db, torch.Generator().manual_seed(1))
        return sum(r.block_errors for r in res) / sum(r.num_blocks for r in res)

    assert bler(thr - 0.5, count=2) == 1.0
    assert bler(thr + 0.5) == 1.0
    assert 0.2 < bler(thr + 1.5) < 0.9
    assert bler(thr + 2.5) == 0.0


def test_link_leaves_global_rng_alone(link16):
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    link16([random_bits(100, 0)], 5.0, torch.Generator().manual_seed(0))
    assert torch.equal(torch.rand(4), expected)


def test_sionna_import_keeps_global_rng():
    code = ("import torch; from gensemcom.channels.coded import _sionna_ldpc\n"
            "torch.manual_seed(5); a = torch.rand(3); torch.manual_seed(5); _sionna_ldpc()\n"
            "assert torch.equal(torch.rand(3), a)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ------------------------------------------------------------------------------------------------
# SeparateCoding
# ------------------------------------------------------------------------------------------------

def test_separate_coding_cliff_on_awgn(batch):
    system = SeparateCoding("jpeg", "ldpc", "16qam-1/2", bandwidth=0.5)
    assert system.name == "jpeg+ldpc(16qam-1/2)" and not system.stochastic
    m = system.mcs
    budget = (int(0.5 * 64 * 128) // m.symbols_per_block) * m.k
    assert budget == 8192 and system.budget_bits(64, 128) == budget

    good = system.run(batch, "awgn", 20.0, torch.Generator().manual_seed(0))
    assert not good.lost.any() and good.labels is None
    assert (psnr(good.images, batch.images) > 18.0).all()
    assert (good.bits <= budget).all() and good.info["budget_bits"] == [budget, budget]
    expected_uses = [math.ceil(b / m.k) * m.symbols_per_block for b in good.bits.tolist()]
    assert good.channel_uses.tolist() == expected_uses
    assert good.channel_uses.dtype == torch.float64 and good.info["block_errors"] == [0, 0]

    bad = system.run(batch, "awgn", -5.0, torch.Generator().manual_seed(0))
    assert bad.lost.all() and torch.equal(bad.images, torch.zeros_like(batch.images))
    assert bad.info["quality"] == good.info["quality"]  # same file, lost on the way
    assert all(e > 0 for e in bad.info["block_errors"])


def test_separate_coding_budgets(batch):
    narrow = SeparateCoding("jpeg", "ldpc", "16qam-1/2", bandwidth=0.3)
    assert narrow.budget_bits(64, 128) == (math.floor(0.3 * 8192) // 512) * 1024  # 4 codewords
    tiny = SeparateCoding("jpeg", "ldpc", "qpsk-1/2", bandwidth=0.01)  # 81 uses: no codeword fits
    out = tiny.run(batch, "awgn", 30.0)
    assert out.lost.all() and out.info["quality"] == [None, None] and out.channel_uses.tolist() == [0, 0]
    ideal = SeparateCoding("jpeg", "capacity", bandwidth=0.5)
    assert ideal.name == "jpeg+capacity"
    out = ideal.run(batch, "awgn", 10.0)
    budget = math.floor(4096 * math.log2(11))
    assert out.info["budget_bits"] == [budget, budget] and (out.bits <= budget).all() and not out.lost.any()
    assert out.channel_uses.tolist() == [math.ceil(b / math.log2(11)) for b in out.bits.tolist()]
    assert ideal.config()["link"] == "capacity" and ideal.config()["bandwidth"] == 0.5
    with pytest.raises(ValueError, match="channel"):
        ideal.run(batch, "legacy", 10.0)
    with pytest.raises(ValueError, match="bandwidth"):
        SeparateCoding(bandwidth=0)
    with pytest.raises(ValueError, match="link"):
        SeparateCoding(link="turbo")
    with pytest.raises(ValueError, match="codec"):
        SeparateCoding(codec="bpg")


def test_separate_coding_rayleigh_reproducible(batch):
    system = SeparateCoding("webp", "ldpc", "qpsk-1/2", bandwidth=0.5)
    a = system.run(batch, "rayleigh", 6.0, torch.Generator().manual_seed(3))
    b = system.run(batch, "rayleigh", 6.0, torch.Generator().manual_seed(3))
    assert torch.equal(a.images, b.images) and torch.equal(a.lost, b.lost) and a.info == b.info
    assert a.info["quality"][0] is not None  # the budget (4 codewords) fits a file
    ideal = SeparateCoding("webp", "capacity", bandwidth=0.5).run(batch, "rayleigh", 6.0,
                                                                   torch.Generator().manual_seed(3))
    assert ideal.info["gain_power"] == a.info["gain_power"]  # the gains are drawn first, link-independent
    uses = math.floor(0.5 * 8192)
    assert ideal.info["budget_bits"] == [math.floor(uses * math.log2(1 + g * 10 ** 0.6)) for g in a.info["gain_power"]]


# ------------------------------------------------------------------------------------------------
# DigitalMap
# ------------------------------------------------------------------------------------------------

def test_digital_map_exact_then_lost(batch):
    calls = []

    def regenerate(labels, instances, generator):
        calls.append((labels.clone(), None if instances is None else instances.clone()))
        return torch.full((labels.shape[0], 3, *labels.shape[1:]), 0.5)

    system = DigitalMap("png", "ldpc", "16qam-1/2", send_instances=True, regenerate=regenerate)
    assert system.stochastic and system.name == "map+inst[png]+ldpc(16qam-1/2)"
    out = system.run(batch, "awgn", 20.0, torch.Generator().manual_seed(0))
    assert not out.lost.any() and torch.equal(out.labels, batch.labels)
    assert torch.equal(calls[0][0], batch.labels) and torch.equal(calls[0][1], batch.instances)
    assert torch.equal(out.images, torch.full_like(batch.images, 0.5))
    files = [len(encode_labels(batch.labels[i].numpy())) + len(encode_labels(batch.instances[i].numpy()))
             for i in range(2)]
    assert out.bits.tolist() == [8.0 * f for f in files]
    assert out.channel_uses.tolist() == [math.ceil(8 * f / 1024) * 512 for f in files]

    lost = system.run(batch, "awgn", -5.0, torch.Generator().manual_seed(0))
    assert lost.lost.all() and (lost.labels == batch.ignore_index).all()
    assert torch.equal(lost.images, torch.zeros_like(batch.images)) and len(calls) == 1  # nothing to regenerate


def test_digital_map_capacity_and_cap(batch):
    system = DigitalMap("webp", "capacity")
    assert not system.stochastic
    out = system.run(batch, "awgn", 0.0)
    assert out.images is None and torch.equal(out.labels, batch.labels) and not out.lost.any()
    assert out.channel_uses.tolist() == [math.ceil(b / 1.0) for b in out.bits.tolist()]  # log2(1 + 1) = 1
    capped = DigitalMap("webp", "capacity", max_bandwidth=0.01).run(batch, "awgn", 0.0)
    assert capped.lost.all() and capped.channel_uses.tolist() == [0, 0]
    with pytest.raises(ValueError, match="instances"):
        DigitalMap(send_instances=True).run(Batch(batch.images, batch.labels, None, batch.names, 12), "awgn", 10.0)
    with pytest.raises(ValueError, match="label codec"):
        DigitalMap("jpeg")


def test_digital_map_rayleigh_reproducible(batch):
    system = DigitalMap("png", "ldpc", "qpsk-1/2")
    runs = [system.run(batch, "rayleigh", 2.0, torch.Generator().manual_seed(s)) for s in (11, 11)]
    assert torch.equal(runs[0].labels, runs[1].labels) and runs[0].info == runs[1].info
    for i in range(2):
        if runs[0].lost[i]:
            assert (runs[0].labels[i] == batch.ignore_index).all()
        else:
            assert torch.equal(runs[0].labels[i], batch.labels[i])
