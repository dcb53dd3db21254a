"""Digital modulation: constellations, demapping, BER against theory, capacity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gensemcom.channels.analog import awgn
from gensemcom.channels.digital import (Constellation, DigitalLink, awgn_capacity, demap_hard, demap_llr,
                                        exp1, map_bits, q_function, qam_constellation,
                                        rayleigh_ergodic_capacity, theoretical_ber)

KINDS = ("bpsk", "qpsk", "16qam", "64qam")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_bits(b: int, n: int, seed: int) -> torch.Tensor:
    return torch.randint(0, 2, (b, n), generator=gen(seed))


# ---------------------------------------------------------------------------------------------- constellations

@pytest.mark.parametrize("kind", KINDS)
def test_constellation_unit_energy_and_gray_labelling(kind):
    c = Constellation(kind)
    assert c.points.shape == (2 ** c.bits_per_symbol,)
    assert abs((c.points.abs() ** 2).mean().item() - 1) < 1e-6
    assert len(set(c.points.tolist())) == c.size
    # Gray: every pair of nearest neighbours differs in exactly one bit
    d = (c.points[:, None] - c.points[None]).abs()
    dmin = d[d > 0].min()
    near = (d - dmin).abs() < 1e-5
    hamming = (c.bit_labels[:, None] != c.bit_labels[None]).sum(-1)
    assert (hamming[near] == 1).all()


def test_explicit_bpsk_qpsk_maps_and_aliases():
    assert torch.equal(map_bits(torch.tensor([[0, 1, 1, 0]]), "bpsk"),
                       torch.tensor([[1, -1, -1, 1]], dtype=torch.complex64))
    q = map_bits(torch.tensor([[0, 0, 0, 1, 1, 0, 1, 1]]), "qpsk") * math.sqrt(2)
    assert torch.allclose(q, torch.tensor([[1 + 1j, 1 - 1j, -1 + 1j, -1 - 1j]], dtype=torch.complex64))
    assert Constellation("16-QAM").kind == "16qam" and Constellation("QAM64").bits_per_symbol == 6
    assert qam_constellation(4).kind == "16qam" and qam_constellation(8).kind == "256qam"
    with pytest.raises(ValueError, match="bpsk"):
        Constellation("8psk")
    with pytest.raises(ValueError):
        qam_constellation(3)


@pytest.mark.parametrize("kind", KINDS)
def test_hard_round_trip_with_padding(kind):
    k = Constellation(kind).bits_per_symbol
    n = 6 * 50 + 1  # not a multiple of 2, 4 or 6
    bits = random_bits(3, n, 1)
    s = map_bits(bits, kind)
    assert s.shape == (3, math.ceil(n / k))
    assert torch.equal(demap_hard(s, kind, num_bits=n), bits)
    full = demap_hard(s, kind)
    assert full.shape == (3, s.shape[1] * k) and (full[:, n:] == 0).all()  # zero padding
    # also through a noiseless channel, and with bool / float inputs
    assert torch.equal(demap_hard(awgn(s, 0.0), kind, num_bits=n), bits)
    assert torch.equal(map_bits(bits.bool(), kind), map_bits(bits.float(), kind))


def test_bit_validation():
    with pytest.raises(ValueError, match="0 and 1"):
        map_bits(torch.tensor([[0, 2]]), "qpsk")
    with pytest.raises(ValueError, match="0 and 1"):
        map_bits(torch.tensor([[0.0, 0.5]]), "qpsk")
    with pytest.raises(ValueError, match=r"\(B, n\)"):
        map_bits(torch.tensor([0, 1]), "qpsk")
    with pytest.raises(ValueError, match="num_bits"):
        demap_hard(map_bits(torch.tensor([[0, 1]]), "qpsk"), "qpsk", num_bits=3)


# ---------------------------------------------------------------------------------------------- BER vs theory

@pytest.mark.parametrize("kind,esno_db", [("bpsk", (2.0, 5.0)), ("qpsk", (5.0, 8.0)),
                                          ("16qam", (10.0, 14.0)), ("64qam", (16.0, 20.0))])
def test_awgn_ber_matches_theory(kind, esno_db):
    link = DigitalLink(kind, "awgn")
    bits = random_bits(1, 240_000, 2)
    g = gen(3)
    for snr in esno_db:
        out = link(bits, snr, generator=g)
        theory = theoretical_ber(kind, esno_db=snr, method="exact")
        assert out.errors.sum().item() > 700  # enough errors for a 10 % tolerance
        assert abs(out.ber / theory - 1) < 0.10, (kind, snr, out.ber, theory)


def test_rayleigh_ber_matches_theory():
    link = DigitalLink("bpsk", "rayleigh", block_size=1)
    bits = random_bits(2, 100_000, 4)
    for snr in (5.0, 10.0):
        out = link(bits, snr, generator=gen(5))
        theory = theoretical_ber("bpsk", ebno_db=snr, channel="rayleigh")
        assert abs(out.ber / theory - 1) < 0.10, (snr, out.ber, theory)
    with pytest.raises(ValueError, match="BPSK and QPSK"):
        theoretical_ber("16qam", ebno_db=5.0, channel="rayleigh")


def test_theory_closed_forms():
    assert theoretical_ber("bpsk", ebno_db=0.0) == pytest.approx(0.0786496, rel=1e-5)
    assert theoretical_ber("qpsk", esno_db=3.0103) == pytest.approx(0.0786496, rel=1e-4)  # Es = 2 Eb
    assert q_function(0.0) == 0.5 and q_function(3.0) == pytest.approx(1.349898e-3, rel=1e-5)
    # standard square M-QAM approximation, 16-QAM at Eb/N0 = 10 dB: (3/4) Q(sqrt(3 * 4 * 10 / 15))
    assert theoretical_ber("16qam", ebno_db=10.0) == pytest.approx(0.75 * q_function(math.sqrt(8.0)), rel=1e-9)
    for kind in ("16qam", "64qam"):
        ebno = np.array([8.0, 12.0, 16.0])
        assert np.allclose(theoretical_ber(kind, ebno_db=ebno), theoretical_ber(kind, ebno_db=ebno, method="exact"),
                           rtol=0.01)
    for kind in ("bpsk", "qpsk"):
        assert theoretical_ber(kind, ebno_db=4.0, method="exact") == theoretical_ber(kind, ebno_db=4.0)
    with pytest.raises(ValueError, match="exactly one"):
        theoretical_ber("qpsk", ebno_db=1.0, esno_db=1.0)


# ---------------------------------------------------------------------------------------------- LLRs

def test_llr_bpsk_closed_form_and_sign():
    bits = random_bits(2, 5000, 6)
    s = map_bits(bits, "bpsk")
    no = torch.tensor([0.5, 2.0])
    y = awgn(s, no, generator=gen(7))
    llr = demap_llr(y, no, "bpsk")
    assert torch.allclose(llr, 4 * y.real / no[:, None], rtol=1e-4, atol=1e-4)
    assert torch.equal((llr < 0).long(), demap_hard(y, "bpsk"))


@pytest.mark.parametrize("kind", KINDS)
def test_llr_sign_agrees_with_hard_decisions_and_grows_with_snr(kind):
    bits = random_bits(1, 12_000, 8)
    s = map_bits(bits, kind)
    h = torch.polar(torch.rand(1, s.shape[1], generator=gen(9)) + 0.5,
                    torch.rand(1, s.shape[1], generator=gen(10)) * 6.3)
    mags = []
    for snr in (5.0, 15.0, 25.0):
        no = 10 ** (-snr / 10)
        y = awgn(h * s, no, generator=gen(11))  # same noise shape at every SNR
        llr = demap_llr(y, no, kind, h=h)
        hard = demap_hard(y / h, kind)
        agree = ((llr < 0).long() == hard).float().mean().item()
        if kind in ("bpsk", "qpsk"):  # per-bit decisions are separable: exact agreement
            assert agree == 1.0, (kind, snr, agree)
        else:  # bitwise MAP and symbol ML can differ near decision boundaries at low SNR
            assert agree >= {5.0: 0.9, 15.0: 0.99, 25.0: 0.999}[snr], (kind, snr, agree)
            assert ((llr < 0).long() == bits[:, :llr.shape[1]]).float().mean() > 0.6  # informative
        mags.append(llr.abs().mean().item())
    assert mags[0] < mags[1] < mags[2]
    with pytest.raises(ValueError, match="> 0"):
        demap_llr(y, 0.0, kind)


# ---------------------------------------------------------------------------------------------- capacity

def test_awgn_capacity_points():
    assert awgn_capacity(0.0) == pytest.approx(1.0)
    assert awgn_capacity(10 * math.log10(3)) == pytest.approx(2.0)
    assert awgn_capacity(10 * math.log10(255)) == pytest.approx(8.0)
    assert np.allclose(awgn_capacity([0.0, 10.0]), [1.0, math.log2(11)])


def test_rayleigh_ergodic_capacity():
    assert exp1(1.0) == pytest.approx(0.21938393439552, rel=1e-12)
    assert exp1(0.01) == pytest.approx(4.0379295765381, rel=1e-10)
    assert exp1(5.0) == pytest.approx(1.1482955912753e-3, rel=1e-10)
    # 0 dB: log2(e) * e * E1(1)
    assert rayleigh_ergodic_capacity(0.0) == pytest.approx(math.log2(math.e) * math.e * 0.21938393439552, rel=1e-10)
    # against numerical quadrature of E[log2(1 + snr g)], g ~ Exp(1) (substitution g = t / (1 - t))
    t = np.linspace(0, 1, 400_001)[1:-1]
    g = t / (1 - t)
    for db in (-10.0, 0.0, 10.0, 30.0):
        snr = 10 ** (db / 10)
        f = np.log2(1 + snr * g) * np.exp(-g) / (1 - t) ** 2
        quad = np.trapezoid(f, t)
        assert rayleigh_ergodic_capacity(db) == pytest.approx(quad, rel=1e-4)
        assert rayleigh_ergodic_capacity(db) < awgn_capacity(db)  # Jensen
    # high-SNR asymptote log2(snr) - gamma log2(e)
    assert rayleigh_ergodic_capacity(60.0) == pytest.approx(math.log2(1e6) - 0.5772156649 * math.log2(math.e), abs=1e-4)


# ---------------------------------------------------------------------------------------------- link bookkeeping

def test_digital_link_uses_and_per_sample_snr():
    bits = random_bits(2, 1001, 12)
    out = DigitalLink("16qam")(bits, torch.tensor([-5.0, math.inf]), generator=gen(13), pixels=(7, 11), soft=True)
    assert out.channel_uses == 251 == out.symbols_tx.shape[1]
    assert out.channel_uses_per_pixel == pytest.approx(251 / 77)
    assert out.bits.shape == bits.shape and out.llr.shape == (2, 1001)
    assert torch.equal(out.llr[1], torch.where(bits[1] == 0, math.inf, -math.inf))
    assert out.errors[1] == 0 and out.errors[0] > 0
    assert out.ber == pytest.approx(out.errors.sum().item() / 2002)
    assert DigitalLink("bpsk")(bits, 0.0, generator=gen(1)).channel_uses == 1001
    assert DigitalLink("64qam", "rayleigh")(bits, 30.0, generator=gen(1)).channel_uses == 167
    with pytest.raises(ValueError, match="channel"):
        DigitalLink("qpsk", "rician")


# ---------------------------------------------------------------------------------------------- 38.211 / Sionna

SIONNA_KINDS = (("bpsk", "pam", 1), ("qpsk", "qam", 2), ("16qam", "qam", 4), ("64qam", "qam", 6),
                (8, "qam", 8))  # 256-QAM by bits per symbol


@pytest.fixture(scope="module")
def sionna_mapping():
    """``sionna.phy.mapping``, imported with torch's global RNG state kept (importing Sionna reseeds it)."""
    state = torch.get_rng_state()
    try:
        import sionna.phy.mapping as mapping
    finally:
        torch.set_rng_state(state)
    return mapping


def test_16qam_is_the_38211_table():
    # TS 38.211 section 5.1.3, written out independently of both implementations
    b = Constellation("16qam").bit_labels.double()
    i = (1 - 2 * b[:, 0]) * (2 - (1 - 2 * b[:, 2]))
    q = (1 - 2 * b[:, 1]) * (2 - (1 - 2 * b[:, 3]))
    want = (i + 1j * q) / math.sqrt(10)
    assert torch.allclose(Constellation("16qam").points_as(torch.complex128), want.to(torch.complex128), atol=1e-15)
    # 64-QAM, section 5.1.4
    b = Constellation("64qam").bit_labels.double()
    i = (1 - 2 * b[:, 0]) * (4 - (1 - 2 * b[:, 2]) * (2 - (1 - 2 * b[:, 4])))
    q = (1 - 2 * b[:, 1]) * (4 - (1 - 2 * b[:, 3]) * (2 - (1 - 2 * b[:, 5])))
    assert torch.allclose(Constellation("64qam").points_as(torch.complex128), (i + 1j * q) / math.sqrt(42),
                          atol=1e-15)


@pytest.mark.parametrize("kind,stype,k", SIONNA_KINDS)
def test_symbols_match_sionna_mapper(sionna_mapping, kind, stype, k):
    bits = random_bits(3, k * 400, 20 + k)
    ours = map_bits(bits, kind)
    theirs = sionna_mapping.Mapper(stype, k, precision="single", device="cpu")(bits.float())
    assert theirs.shape == ours.shape
    assert (ours - theirs).abs().max().item() < 1e-6  # float32 rounding of the normalisation only
    # the constellations themselves, point for point in double precision
    sc = sionna_mapping.Constellation(stype, k, precision="double", device="cpu")()
    assert (Constellation(kind).points_as(torch.complex128) - sc).abs().max().item() < 1e-14


@pytest.mark.parametrize("kind,stype,k", SIONNA_KINDS[:4])
@pytest.mark.parametrize("faded", [False, True])
def test_llrs_match_sionna_app_demapper(sionna_mapping, kind, stype, k, faded):
    """Exact ("app") LLRs, ours ``log P(0)/P(1)`` = minus Sionna's ``log P(1)/P(0)``, per-sample N0 from
    -3 to 30 dB; with fading through Sionna's equivalent ``y / h`` at ``N0 / |h|^2``. Double precision:
    relative difference < 1e-9 (of max(1, |LLR|)); single precision < 1e-4."""
    g = gen(30 + k)
    bits = random_bits(4, k * 1500, 31 + k)
    no = 10 ** (-torch.tensor([-3.0, 5.0, 15.0, 30.0], dtype=torch.float64) / 10)
    for prec, cdtype, tol in (("double", torch.complex128, 1e-9), ("single", torch.complex64, 1e-4)):
        s = map_bits(bits, kind).to(cdtype)
        h = None
        if faded:
            h = torch.polar(torch.rand(s.shape, generator=g, dtype=torch.float64) + 0.2,
                            torch.rand(s.shape, generator=g, dtype=torch.float64) * 2 * math.pi).to(cdtype)
        y = awgn(s if h is None else h * s, no.to(s.real.dtype), generator=g)
        ours = demap_llr(y, no.to(s.real.dtype), kind, h=h)
        demapper = sionna_mapping.Demapper("app", stype, k, precision=prec, device="cpu")
        n_eff = no.to(s.real.dtype)[:, None].expand(s.shape)
        theirs = demapper(y, n_eff) if h is None else demapper(y / h, n_eff / h.abs() ** 2)
        assert ours.shape == theirs.shape == bits.shape
        rel = ((ours + theirs).abs() / theirs.abs().clamp_min(1.0)).max().item()
        assert rel < tol, (prec, rel)
        # and the bits decided from them are Sionna's hard decisions
        hard = sionna_mapping.Demapper("app", stype, k, hard_out=True, precision=prec, device="cpu")
        agree = (torch.as_tensor(hard(y, n_eff) if h is None else hard(y / h, n_eff / h.abs() ** 2)).long()
                 == (ours < 0).long())
        assert agree.float().mean().item() > 0.9999


@pytest.mark.parametrize("kind,stype,k", SIONNA_KINDS[:4])
def test_hard_decisions_match_sionna_maxlog(sionna_mapping, kind, stype, k):
    # max-log hard decisions are the bits of the nearest point: our minimum-distance demapper
    g = gen(40 + k)
    bits = random_bits(2, k * 2000, 41 + k)
    s = map_bits(bits, kind)
    y = awgn(s, 10 ** (-3 / 10), generator=g)
    theirs = sionna_mapping.Demapper("maxlog", stype, k, hard_out=True, device="cpu", precision="single")(
        y, torch.tensor(10 ** (-3 / 10)))
    assert torch.equal(theirs.long(), demap_hard(y, kind))
    assert (demap_hard(y, kind) != bits).any()  # the test has errors to agree on
