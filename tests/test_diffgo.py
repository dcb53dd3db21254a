"""Diff-GO^n's noise-index transmitter and its system: the receiver reproduces the transmitter's
image bit for bit, the chosen index is the best candidate, index-derived step noise, cost
accounting, the registry spec, the trainer's noise provider, and bad input.

The network is the tiny reference model of tests/data/diffgo (random weights) on a short
respaced process, so that every generation takes a fraction of a second."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from conftest import DATA
from gensemcom.diffusion.noise_bank import NoiseBank
from gensemcom.legacy import model_and_diffusion_from_flags
from gensemcom.metrics import lpips_available, miou_per_image, ms_ssim
from gensemcom.models.segmenter import TinySegmenter, TinySegmenterConfig
from gensemcom.systems.base import Batch
from gensemcom.systems.diffgo import (
    BankNoise,
    DiffGO,
    DiffGOSystem,
    IndexedDDPMSampler,
    _parse_arg,
    step_seed,
)
from gensemcom.systems.gesco import map_channel

DIFFGO = DATA / "diffgo"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    return load_file(str(DIFFGO / "diffgo_tiny_public_io.safetensors"))


@pytest.fixture(scope="module")
def tiny():
    cfg = json.loads((DIFFGO / "diffgo_tiny_public_config.json").read_text())
    model, diffusion = model_and_diffusion_from_flags(dict(cfg["config"], timestep_respacing="2"))
    weights = load_file(str(DIFFGO / "diffgo_tiny_public_weights.safetensors"))
    model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)
    return model.eval(), diffusion, int(cfg["config"]["num_classes"])


def _diffgo(tiny, io, **kw) -> DiffGO:
    model, diffusion, num_classes = tiny
    kw.setdefault("bank", NoiseBank(3, 50, io["x0"].shape[1:]))
    return DiffGO(model, diffusion, num_classes, **kw)


def _inputs(io):
    return io["x0"], io["labels"][:, 0], io["instances"][:, 0]


@pytest.mark.parametrize("method,candidate_batch", [("ddpm", 1), ("ddim", 2)])
def test_receiver_reproduces_the_transmitters_image_bit_for_bit(tiny, io, method, candidate_batch):
    d = _diffgo(tiny, io, candidates=3, method=method, channel="none", candidate_batch=candidate_batch)
    images, labels, instances = _inputs(io)
    out = d.run(images, labels, instances, math.inf, torch.Generator().manual_seed(0))
    assert out["indices"].shape == (2,) and out["index_bits"].tolist() == [d.index_bits] * 2 == [6, 6]
    assert torch.equal(out["images"], out["transmitter_images"])
    # the receiver alone, from the map and the index, again
    rx = d.receive(d.noiseless_received(out["sent"]), out["indices"])
    assert torch.equal(rx, out["transmitter_images"])
    assert d.stats["generations_per_image"] == 3 + (candidate_batch > 1)


def test_chosen_index_is_the_best_candidate(tiny, io):
    d = _diffgo(tiny, io, candidates=3, candidate_policy="first", method="ddpm")
    images, labels, instances = (v[:1] for v in _inputs(io))
    y = d.noiseless_received(d.condition(labels, instances, images))
    best, chosen, scores = d.select(y, images, labels)
    for b in range(1):
        # independent recomputation: each candidate alone, scored with metrics.ms_ssim in [0, 1]
        alone = torch.cat([d.generate(y[b:b + 1], [k]) for k in range(3)])
        s = ms_ssim((alone + 1) / 2, ((images[b:b + 1] + 1) / 2).expand_as(alone)).double()
        assert torch.equal(scores[b], s)
        assert int(best[b]) == int(torch.argmax(s))
        assert torch.equal(chosen[b], alone[int(best[b])])
    # more candidates never score worse: K=3 includes K=1's candidate (index 0)
    assert (scores.max(1).values >= scores[:, 0]).all()


def test_step_noise_is_a_function_of_the_index_and_the_shared_seed(tiny, io):
    model, diffusion, _ = tiny
    d = _diffgo(tiny, io, method="ddpm", step_seed=7)
    y = d.condition(io["labels"][:, 0], io["instances"][:, 0], io["x0"])
    a = d.generate(y[:1], [5])
    ref = diffusion.sample(model, y[:1], noise=d.bank[5][None], guidance_scale=d.guidance_scale,
                           method=IndexedDDPMSampler([torch.Generator().manual_seed(step_seed(7, 5))]))
    assert torch.equal(a, ref)
    assert torch.equal(a, d.generate(y[:1], [5]))
    assert not torch.equal(a, d.generate(y[:1], [6]))
    other = _diffgo(tiny, io, method="ddpm", step_seed=8, bank=d.bank)
    assert not torch.equal(a, other.generate(y[:1], [5]))
    # each sample's noise depends on its own index only, not on the batch it is generated in (up to
    # float rounding of batched network calls, amplified by the random weights; a shared stream
    # would change the images by O(1))
    pair = d.generate(torch.cat([y[:1], y[:1]]), [5, 9])
    assert torch.allclose(pair[0], a[0], atol=1e-3) and torch.allclose(pair[1], d.generate(y[:1], [9])[0], atol=1e-3)


def test_candidate_indices(tiny, io):
    d = _diffgo(tiny, io, candidates=5)
    c = d.candidate_indices(3, torch.Generator().manual_seed(1))
    assert c.shape == (3, 5) and all(len(set(r.tolist())) == 5 for r in c)
    assert ((c >= 0) & (c < d.bank.size)).all()
    assert torch.equal(c, d.candidate_indices(3, torch.Generator().manual_seed(1)))
    huge = _diffgo(tiny, io, candidates=4, bank=NoiseBank(0, 10**9, d.bank.shape))
    h = huge.candidate_indices(2, torch.Generator().manual_seed(1))
    assert h.shape == (2, 4) and int(h.max()) < 10**9 and all(len(set(r.tolist())) == 4 for r in h)
    assert torch.equal(_diffgo(tiny, io, candidates=3, candidate_policy="first").candidate_indices(2),
                       torch.tensor([[0, 1, 2], [0, 1, 2]]))


def test_miou_and_psnr_scores(tiny, io):
    torch.manual_seed(0)
    seg = TinySegmenter(TinySegmenterConfig(num_classes=tiny[2])).eval()
    d = _diffgo(tiny, io, candidates=2, score="miou", segmenter=seg)
    cand = torch.rand(2, 3, 32, 64) * 2 - 1
    labels = io["labels"][0, 0]
    expected = miou_per_image(seg.predict(cand), labels.expand(2, -1, -1), tiny[2])
    assert torch.equal(d.scores(cand, io["x0"][:1], labels), torch.nan_to_num(expected, nan=0.0))
    p = _diffgo(tiny, io, score="psnr")
    s = p.scores(io["x0"][:1], io["x0"][:1])
    assert math.isinf(float(s[0]))


@pytest.mark.skipif(lpips_available(), reason="LPIPS weights are present here")
def test_lpips_without_weights_is_a_clear_error(tiny, io):
    with pytest.raises(ValueError, match="LPIPS weights"):
        _diffgo(tiny, io, score="lpips")


def test_system_cost_accounting(tiny, io):
    d = _diffgo(tiny, io, candidates=1, bank=NoiseBank(3, 1000, io["x0"].shape[1:]))
    system = DiffGOSystem(d)
    batch = Batch(io["x0"], io["labels"][:, 0], io["instances"][:, 0], ["a", "b"], tiny[2])
    out = system.run(batch, "awgn", 10.0, torch.Generator().manual_seed(0))
    y = d.condition(batch.labels, batch.instances, batch.images)
    map_uses = map_channel("awgn", 10.0, has_edges=True)(y).channel_uses.double()
    assert torch.equal(out.channel_uses, map_uses + 10)  # 1000 entries: 10 index bits at 1 bit per use
    assert out.bits.tolist() == [10.0, 10.0]
    assert out.images.shape == batch.images.shape and len(out.info["bank_index"]) == 2
    half = DiffGOSystem(d, index_bits_per_use=4.0).run(batch, "awgn", 10.0, torch.Generator().manual_seed(0))
    assert torch.equal(half.channel_uses, map_uses + 3)
    assert system.config()["index_bits"] == 10 and system.name == "diffgo-k1"
    wrong = Batch(io["x0"], io["labels"][:, 0], None, ["a", "b"], tiny[2])
    with pytest.raises(ValueError, match="instance"):
        system.run(wrong, "awgn", 10.0)


def test_registry_spec():
    assert _parse_arg(None) == (None, 1)
    assert _parse_arg("16") == (None, 16)
    assert _parse_arg("runs/m1") == ("runs/m1", 1)
    assert _parse_arg("runs/m1:4") == ("runs/m1", 4)
    assert _parse_arg("C:/x/m:8") == ("C:/x/m", 8)
    with pytest.raises(ValueError, match="K"):
        _parse_arg("runs/m1:x4")


def test_registered_system_builds_on_the_bundled_model():
    from gensemcom.systems.registry import SystemOptions, available_systems, build_system
    assert "diffgo" in {i.name for i in available_systems()}
    s = build_system("diffgo:4", SystemOptions(steps=2))
    assert isinstance(s, DiffGOSystem) and s.diffgo.candidates == 4 and s.diffgo.bank.size == 1000
    assert s.diffgo.bank.shape == (3, 64, 128) and s.diffgo.index_bits == 10
    with pytest.raises(ValueError, match="candidates"):
        build_system("diffgo:0", SystemOptions(steps=2))


def test_bank_noise_provider(io):
    bank = NoiseBank(3, 20, io["x0"].shape[1:])
    provider = BankNoise(bank)
    noise = provider((4, *bank.shape), torch.Generator().manual_seed(2))
    assert noise.shape == (4, *bank.shape)
    assert torch.equal(noise, bank[provider.last_indices])
    assert torch.equal(provider.last_indices, torch.randint(0, 20, (4,), generator=torch.Generator().manual_seed(2)))
    with pytest.raises(ValueError, match="batch 1"):
        BankNoise(bank, compat="diffgo")((2, *bank.shape))
    with pytest.raises(ValueError, match="shape"):
        provider((1, 3, 8, 8))


def test_bad_input(tiny, io):
    d = _diffgo(tiny, io, candidates=2)
    y = d.condition(io["labels"][:, 0], io["instances"][:, 0], io["x0"])
    with pytest.raises(ValueError, match="outside the bank"):
        d.receive(y, [0, d.bank.size])
    with pytest.raises(ValueError, match="outside the bank"):
        d.generate(y[:1], [-1])
    small = _diffgo(tiny, io, bank=NoiseBank(0, 10, (3, 16, 16)))
    with pytest.raises(ValueError, match=r"\(3, 16, 16\)"):
        small.generate(y[:1], [0])
    with pytest.raises(ValueError, match="shape"):
        _diffgo(tiny, io, bank=NoiseBank(0, 10, (1, 32, 64)))
    with pytest.raises(ValueError, match="K"):
        _diffgo(tiny, io, candidates=0)
    with pytest.raises(ValueError, match="exceeds"):
        _diffgo(tiny, io, candidates=51)
    with pytest.raises(ValueError, match="score"):
        _diffgo(tiny, io, score="fid")
    with pytest.raises(ValueError, match="segmenter"):
        _diffgo(tiny, io, score="miou")
    with pytest.raises(ValueError, match="label channels"):
        DiffGO(tiny[0], tiny[1], tiny[2] + 1, d.bank)
    with pytest.raises(ValueError, match="step noise"):
        _diffgo(tiny, io, method="ddim", eta=0.5)
    with pytest.raises(ValueError, match="indices for"):
        d.generate(y, [0])
    with pytest.raises(ValueError, match="edge"):
        _diffgo(tiny, io, edge_kind="sobel")


def test_digital_link_payload_and_bit_exact_receiver(tiny, io):
    """link='capacity': labels + instances + the 8-bit edge map as PNG and the index in bytes; the
    receiver decodes them and regenerates the transmitter's choice exactly."""
    from gensemcom.codecs import decode_labels, encode_labels, file_length
    d = _diffgo(tiny, io, candidates=2, bank=NoiseBank(3, 1000, io["x0"].shape[1:]))
    system = DiffGOSystem(d, link="capacity")
    batch = Batch(io["x0"], io["labels"][:, 0], io["instances"][:, 0], ["a", "b"], tiny[2])
    out = system.run(batch, "awgn", 20.0, torch.Generator().manual_seed(0))
    assert not out.lost.any() and out.info["received_index"] == out.info["bank_index"]
    y = d.condition(batch.labels, batch.instances, batch.images)
    assert torch.equal(out.images, d.receive(y, out.info["bank_index"]))
    payloads, sizes = system._payloads(batch, torch.tensor(out.info["bank_index"]))
    assert out.bits.tolist() == [8.0 * len(p) for p in payloads]
    for i, p in enumerate(payloads):
        assert sizes[i]["index_bits"] == 16  # ceil(10 / 8) bytes
        assert int.from_bytes(p[-2:], "big") == out.info["bank_index"][i]
        n = file_length(p)
        assert p[:n] == encode_labels(batch.labels[i].numpy())
        assert (decode_labels(p[:n]) == batch.labels[i].numpy()).all()
    assert system._decode(b"not a payload", 32, 64) is None
    assert system.config()["link"]["link"] == "capacity" and system.name == "diffgo-k2+capacity"
    with pytest.raises(ValueError, match="link"):
        DiffGOSystem(d, link="fm")
    with pytest.raises(ValueError, match="legacy"):
        system.run(batch, "legacy", 10)


def test_early_stopping_rule():
    from gensemcom.systems.diffgo import EarlyStopping
    es = EarlyStopping("min", window=2, min_delta=0.1, patience=2)
    # window means: -, 9.5, 8.5 (improves > 10%? 8.5 < 9.5*0.9=8.55 yes), 8.25 (no), 8.25 (no) -> stop
    seq = [10.0, 9.0, 8.0, 8.5, 8.0]
    stops = [es.update(v) for v in seq]
    assert stops == [False, False, False, False, True]
    assert es.best == 8.5 and es.bad_checks == 2
    again = EarlyStopping("min", window=2, min_delta=0.1, patience=2)
    again.load_state_dict(es.state_dict())
    assert again.stopped and again.values == seq
    up = EarlyStopping("max", window=1, min_delta=0.0, patience=1)
    assert [up.update(v) for v in (0.1, 0.2, 0.2)] == [False, False, True]
    with pytest.raises(ValueError, match="does not match"):
        EarlyStopping("max").load_state_dict(es.state_dict())
    with pytest.raises(ValueError, match="non-finite"):
        EarlyStopping().update(float("nan"))
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping("lowest")
