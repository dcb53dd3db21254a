"""Synthetic street scenes: determinism, shapes, classes, instances, learnable textures."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from gensemcom.data import SYNTHETIC_CLASSES, SyntheticScenes, street_scene
from gensemcom.data.synthetic import THING_CLASSES
from gensemcom.semantics import instance_edges, saturate_instances_8bit, semantic_input


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in ("image", "label", "instance")) and a["path"] == b["path"]


def test_deterministic_and_independent_of_access_order():
    a = SyntheticScenes(6, 32, 64, seed=7)
    b = SyntheticScenes(6, 32, 64, seed=7)
    forward = [a[i] for i in range(6)]
    backward = [b[i] for i in reversed(range(6))][::-1]
    assert all(same(x, y) for x, y in zip(forward, backward))
    assert same(a[-1], forward[5])
    assert not torch.equal(forward[0]["label"], forward[1]["label"])  # items differ
    other = SyntheticScenes(6, 32, 64, seed=8)[0]
    assert not torch.equal(other["image"], forward[0]["image"])  # seeds differ
    with pytest.raises(IndexError):
        a[6]


@pytest.mark.parametrize("hw", [(32, 64), (48, 80), (64, 64), (256, 512)])
def test_shapes_and_ranges(hw):
    h, w = hw
    item = SyntheticScenes(2, h, w, seed=0)[1]
    assert item["image"].shape == (3, h, w) and item["image"].dtype == torch.float32
    assert item["image"].min() >= -1 and item["image"].max() <= 1
    assert item["label"].shape == item["instance"].shape == (h, w)
    assert item["label"].dtype == item["instance"].dtype == torch.int64
    assert 0 <= item["label"].min() and item["label"].max() < 12


def test_class_coverage_and_instance_ids():
    ds = SyntheticScenes(12, 32, 64, seed=0)
    present = torch.zeros(12, dtype=torch.bool)
    touching = 0
    for i in range(len(ds)):
        it = ds[i]
        label, inst = it["label"], it["instance"]
        present |= torch.bincount(label.flatten(), minlength=12).bool()
        things = inst >= 1000
        assert torch.equal(inst[things] // 1000, label[things])  # id = class * 1000 + k
        assert torch.equal(inst[~things], label[~things])  # stuff: id = class
        assert torch.equal(things, sum(label == c for c in THING_CLASSES).bool())
        # two touching objects: an edge that the reference's 8-bit loading loses
        exact = instance_edges(inst[None]).sum()
        touching += bool(exact > instance_edges(saturate_instances_8bit(inst)[None]).sum())
    assert present.all(), [SYNTHETIC_CLASSES[c][0] for c in (~present).nonzero().flatten().tolist()]
    assert touching >= 1


def test_fewer_classes():
    ds = SyntheticScenes(4, 32, 64, seed=1, num_classes=6)
    for i in range(4):
        assert ds[i]["label"].max() < 6
    with pytest.raises(ValueError, match="num_classes"):
        SyntheticScenes(1, 32, 64, num_classes=13)
    with pytest.raises(ValueError, match="16x16"):
        street_scene(8, 64, torch.Generator())


def test_classes_are_recognisable_from_pixels():
    """A nearest-mean-colour classifier already separates most pixels: the map is learnable."""
    train = SyntheticScenes(6, 64, 128, seed=0)
    sums, counts = torch.zeros(12, 3), torch.zeros(12)
    for i in range(len(train)):
        it = train[i]
        px, lab = it["image"].flatten(1).T, it["label"].flatten()
        sums.index_add_(0, lab, px)
        counts += torch.bincount(lab, minlength=12)
    means = sums / counts.clamp(min=1)[:, None]
    test = SyntheticScenes(3, 64, 128, seed=1)
    correct = total = 0
    for i in range(len(test)):
        it = test[i]
        px, lab = it["image"].flatten(1).T, it["label"].flatten()
        pred = torch.cdist(px, means).argmin(1)
        correct += (pred == lab).sum().item()
        total += lab.numel()
    assert correct / total > 0.7


def test_batches_into_network_input():
    batch = next(iter(DataLoader(SyntheticScenes(4, 32, 64, seed=0), batch_size=4)))
    y = semantic_input(batch["label"], 12, batch["instance"])
    assert batch["image"].shape == (4, 3, 32, 64) and y.shape == (4, 13, 32, 64)
    assert len(batch["path"]) == 4
