"""The lazy noise bank: the published Diff-GO^n recipe entry for entry (full-size statistics and
the tiny bank from tests/data/diffgo), laziness, the derived default, and bad input."""

from __future__ import annotations

import json
import re
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import DATA
from gensemcom.diffusion.noise_bank import NoiseBank, index_bits

DIFFGO = DATA / "diffgo"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cfg() -> dict:
    return json.loads((DIFFGO / "diffgo_tiny_public_config.json").read_text())


@pytest.fixture(scope="module")
def full() -> dict[str, torch.Tensor]:
    return load_file(str(DIFFGO / "diffgo_bank_public.safetensors"))


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    return load_file(str(DIFFGO / "diffgo_tiny_public_io.safetensors"))


def _recipe(text: str) -> tuple[int, tuple[int, ...]]:
    """(seed, (size, C, H, W)) from the config's ``torch.manual_seed(S); torch.randn(N, C, H, W)``."""
    m = re.search(r"manual_seed\((\d+)\);\s*torch\.randn\(([\d,\s]+)\)", text)
    assert m, text
    return int(m.group(1)), tuple(int(v) for v in m.group(2).split(","))


def test_full_size_bank_entry_for_entry(cfg, full):
    """Every entry of the 1000 x 3 x 256 x 512 bank against the reference's per-entry
    mean/std/min/max; entry 0 whole and the crops of entries 0, 1, 2, 999 bit for bit."""
    seed, (size, *shape) = _recipe(cfg["bank"]["call"])
    assert size == full["bank_stats"].shape[0] and tuple(shape) == tuple(full["bank_entry_0"].shape)
    bank = NoiseBank(seed, size, shape, compat="diffgo")
    assert torch.equal(bank[0], full["bank_entry_0"])
    crops = full["bank_crops"]
    h, w = crops.shape[-2:]
    for k, i in enumerate(full["bank_crop_indices"].tolist()):
        assert torch.equal(bank[i][:, :h, :w], crops[k]), i
    stats = torch.empty(size, 4, dtype=torch.float64)
    for i, e in enumerate(bank):  # sequential: no skipping after the first entry
        e = e.double()
        stats[i] = torch.stack([e.mean(), e.std(), e.min(), e.max()])
    assert torch.allclose(stats, full["bank_stats"], rtol=0, atol=1e-12)
    # constant memory: at most ~256 generator states whatever the size
    assert bank.cache_nbytes <= 300 * 5056


def test_tiny_bank_and_its_prefix_property(cfg, io):
    seed, (size, *shape) = _recipe(cfg["tiny_bank"])
    head = io["bank_tiny_head"]
    bank = NoiseBank(seed, size, shape, compat="diffgo")
    assert torch.equal(bank[:head.shape[0]], head)
    # random access in any order equals the materialised recipe
    ref = torch.randn(size, *shape, generator=torch.Generator().manual_seed(seed))
    for i in [size - 1, 0, size // 2, 1, size // 2 + 1, size - 2]:
        assert torch.equal(bank[i], ref[i]), i
    assert torch.equal(bank[[3, 1, 3]], ref[[3, 1, 3]])


@pytest.mark.parametrize("shape,size", [((3, 5, 5), 7), ((1, 3, 3), 5), ((1, 1, 5), 3), ((2, 7), 9)])
def test_stream_groups_that_straddle_entries_and_the_tail(shape, size):
    """numel not a multiple of 16: Box-Muller groups cross entries, and ATen recomputes the last
    16 values from 16 further draws; every entry still equals the materialised recipe."""
    ref = torch.randn(size, *shape, generator=torch.Generator().manual_seed(7))
    bank = NoiseBank(7, size, shape, compat="diffgo", checkpoint_every=2)
    for i in [size - 1, 0, size // 2, size - 2, 1]:
        assert torch.equal(bank[i], ref[i]), i
    assert torch.equal(bank[:], ref)


def test_lazy_any_size():
    """Neither recipe materialises the bank: a 10^9-entry bank costs one entry per access."""
    huge = NoiseBank(3, 10**9, (3, 256, 512))
    t0 = time.perf_counter()
    e = huge[10**9 - 1]
    assert time.perf_counter() - t0 < 5.0
    assert e.shape == (3, 256, 512) and huge.cache_nbytes == 0 and huge.bits == 30
    stream = NoiseBank(150, 10**6, (3, 32, 64), compat="diffgo")
    for i in (10_000, 20_000, 19_999):
        stream[i]
    # one generator state per checkpoint_every entries passed, plus the cursor: at most 256 + 1
    state = torch.Generator().get_state().numel()
    assert stream.checkpoint_every == 10**6 // 256 + 1
    assert stream.cache_nbytes == (20_000 // stream.checkpoint_every + 1) * state


def test_derived_recipe_is_a_function_of_seed_and_index():
    a = NoiseBank(11, 10**4, (3, 8, 16))
    b = NoiseBank(11, 10**4, (3, 8, 16))
    c = NoiseBank(12, 10**4, (3, 8, 16))
    assert torch.equal(a[9999], b[9999]) and torch.equal(a[5], b[[5]][0])
    assert not torch.equal(a[5], c[5]) and not torch.equal(a[5], a[6])
    # the same entry whatever else was drawn before, and on the requested device
    b[17]
    assert torch.equal(a[5], b.entry(5, device="cpu"))
    # close to standard normal over many entries
    x = a[:200]
    assert abs(x.mean().item()) < 0.01 and abs(x.std().item() - 1) < 0.01
    assert NoiseBank(**a.config()).config() == a.config()


def test_draw_matches_the_reference_index_draw(cfg, io):
    """NR-FD's index: ``torch.randint(0, N, (1,))`` right after seeding the RNG."""
    seed, (size, *shape) = _recipe(cfg["tiny_bank"])
    bank = NoiseBank(seed, size, shape, compat="diffgo")
    for b, s in enumerate(cfg["loss"]["global_rng_seed_before_call"]):
        idx, noise = bank.draw(1, torch.Generator().manual_seed(s))
        assert idx.tolist() == [int(io["loss_bank_index"][b])]
        assert torch.equal(noise[0], io["loss_noise"][b])


def test_index_bits():
    assert [index_bits(n) for n in (1, 2, 3, 4, 5, 1000, 1024, 1025, 10**4)] == [0, 1, 2, 2, 3, 10, 10, 11, 14]


def test_bad_input():
    bank = NoiseBank(0, 10, (3, 4, 4))
    with pytest.raises(ValueError, match="outside the bank"):
        bank[10]
    with pytest.raises(ValueError, match="outside the bank"):
        bank.batch(torch.tensor([0, -1]))
    with pytest.raises(ValueError, match="integers"):
        bank.entry(1.5)
    with pytest.raises(ValueError, match="shape"):
        bank.check_shape((2, 3, 8, 8))
    bank.check_shape((2, 3, 4, 4))
    with pytest.raises(ValueError, match="compat"):
        NoiseBank(0, 10, (3, 4, 4), compat="gesco")
    with pytest.raises(ValueError, match="size"):
        NoiseBank(0, 0, (3, 4, 4))
    with pytest.raises(ValueError, match="seed"):
        NoiseBank(-1, 3, (3, 4, 4))
    with pytest.raises(ValueError, match="batch"):
        bank.draw(0)
