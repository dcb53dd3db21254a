"""Honest progress (issue 9 item 5): the items of every system are spread over the run, so that
the rate seen so far predicts the time left; the shards of a sharded sweep get an even share of
every system."""

from __future__ import annotations

from collections import Counter

import pytest

from gensemcom.data import build_eval_data
from gensemcom.evaluate import Sweep, SweepConfig
from gensemcom.systems.gesco import GESCOSystem
from gensemcom.systems.registry import build_system


def _sweep(tmp_path, world: int = 1, rank: int = 0) -> Sweep:
    # listed first, as gesco is in the default list: the slow system of this test
    systems = {"gesco-map": GESCOSystem(None), "jpeg+capacity": build_system("jpeg+capacity"),
               "map+capacity": build_system("map+capacity")}
    data = build_eval_data("synthetic:6", 32, 64, seed=1)
    config = SweepConfig(channels=["awgn", "rayleigh"], snrs=[-5.0, 0.0, 10.0, 20.0], batch_size=1)
    return Sweep(tmp_path, systems, data, config, rank=rank, world=world)


def _group(item) -> tuple[str, str]:
    return item.dataset, item.system


def test_every_prefix_of_the_run_holds_each_system_in_proportion(tmp_path):
    items, _ = _sweep(tmp_path).items()
    total = Counter(_group(it) for it in items)
    assert len(items) == 3 * 6 * 4 * 2 + 6 and len(set(it.key for it in items)) == len(items)
    seen: Counter = Counter()
    for p, it in enumerate(items, 1):
        seen[_group(it)] += 1
        for g, n in total.items():
            assert abs(seen[g] - p * n / len(items)) <= 1.0 + 1e-9, (p, g)


def test_the_time_left_is_predicted_from_the_start(tmp_path):
    """With the slow system 100 times the cost of the others, the estimate a progress bar makes
    (elapsed / done * total) is within 15 % of the truth once 10 % of the items are done."""
    items, _ = _sweep(tmp_path).items()
    cost = [100.0 if it.system == "gesco-map" else 1.0 for it in items]
    total = sum(cost)
    elapsed = 0.0
    for done, c in enumerate(cost, 1):
        elapsed += c
        if done >= len(items) // 10:
            assert elapsed / done * len(items) == pytest.approx(total, rel=0.15), done


@pytest.mark.parametrize("world", [2, 3])
def test_shards_get_an_even_share_of_every_system(tmp_path, world):
    plan, _ = _sweep(tmp_path, world=world)._plan()
    assert sorted(it.key for it, _ in plan) == sorted(it.key for it in _sweep(tmp_path).items()[0])
    for g in {_group(it) for it, _ in plan}:
        per_rank = Counter(r for it, r in plan if _group(it) == g)
        assert set(per_rank) == set(range(world)) and max(per_rank.values()) - min(per_rank.values()) <= 1, g
    # every rank computes the same plan
    for rank in range(world):
        assert _sweep(tmp_path, world=world, rank=rank)._plan() == (plan, [])


def test_busy_machine_gets_fewer_torch_threads(monkeypatch, capsys):
    """Torch's thread per core fights other busy processes (26 min instead of 6 for the demo at
    load 8 on 2 cores): the commands use the cores that are free, and restore torch's setting."""
    import os

    import torch

    from gensemcom.cli.evaluate import auto_threads, torch_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.0, 0.0))
    assert auto_threads() == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two torchrun processes share the cores
    assert auto_threads() == 2
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setattr(os, "getloadavg", lambda: (8.4, 8.0, 7.0))
    assert auto_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch_threads(None, "demo"):
            assert torch.get_num_threads() == 1
        assert "the machine is busy (load 8.4); using 1 torch thread" in capsys.readouterr().err
        assert torch.get_num_threads() == 2
        with torch_threads(3, "demo"):  # --threads wins
            assert torch.get_num_threads() == 3
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # so does the environment
        with torch_threads(None, "demo"):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
