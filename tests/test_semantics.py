"""Label maps: one-hot coding, instance edges, the network's label input, colours."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gensemcom.semantics import (CITYSCAPES_PALETTE, colorize, default_palette, instance_edges,
                                 label_channels, one_hot, saturate_instances_8bit, semantic_input)


def reference_edges(inst: np.ndarray) -> np.ndarray:
    """The reference ``get_edges`` written as plain loops over the four neighbours."""
    b, h, w = inst.shape
    out = np.zeros_like(inst, dtype=np.float32)
    for n in range(b):
        for i in range(h):
            for j in range(w):
                for di, dj in ((0, 1), (0, -1), (1, 0), (-1, 0)):
                    ii, jj = i + di, j + dj
                    if 0 <= ii < h and 0 <= jj < w and inst[n, ii, jj] != inst[n, i, j]:
                        out[n, i, j] = 1
    return out[:, None]


def test_one_hot_round_trip():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (2, 5, 7), generator=g)
    y = one_hot(labels, 10)
    assert y.shape == (2, 10, 5, 7) and y.dtype == torch.float32
    assert torch.equal(y.argmax(1), labels)
    assert torch.equal(y.sum(1), torch.ones(2, 5, 7))
    # (B, 1, H, W) is accepted as well
    assert torch.equal(one_hot(labels[:, None], 10), y)


def test_one_hot_ignore_index():
    labels = torch.tensor([[[0, 255], [2, 1]]])
    y = one_hot(labels, 3, ignore_index=255)
    assert torch.equal(y[0, :, 0, 1], torch.zeros(3))
    assert torch.equal(y.sum(1), torch.tensor([[[1.0, 0.0], [1.0, 1.0]]]))
    assert y[0, 2, 1, 0] == 1 and y[0, 1, 1, 1] == 1 and y[0, 0, 0, 0] == 1


def test_one_hot_out_of_range_error_names_values():
    labels = torch.tensor([[[0, 12], [-1, 3]]])
    with pytest.raises(ValueError) as e:
        one_hot(labels, 10)
    msg = str(e.value)
    assert "[0, 9]" in msg and "min -1" in msg and "max 12" in msg and "-1, 12" in msg
    with pytest.raises(ValueError, match="ignore_index=255"):
        one_hot(torch.tensor([[[255, 10]]]), 10, ignore_index=255)


def test_one_hot_rejects_non_integer_and_bad_shape():
    with pytest.raises(ValueError, match="integer"):
        one_hot(torch.zeros(1, 2, 2), 3)
    with pytest.raises(ValueError, match="integer"):
        one_hot(torch.zeros(1, 2, 2, dtype=torch.bool), 3)
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        one_hot(torch.zeros(2, 2, dtype=torch.long), 3)


def test_instance_edges_hand_example():
    inst = torch.tensor([[[1, 1, 2],
                          [1, 1, 2],
                          [3, 3, 3]]])
    expected = torch.tensor([[[[0, 1, 1],
                               [1, 1, 1],
                               [1, 1, 1]]]], dtype=torch.float32)
    assert torch.equal(instance_edges(inst), expected)
    ring = torch.full((1, 4, 4), 5)
    ring[0, 1:3, 1:3] = 7
    e = instance_edges(ring)[0, 0]
    assert e.shape == (4, 4)
    assert e.sum() == 12 and e[0, 0] == e[0, 3] == e[3, 0] == e[3, 3] == 0


def test_instance_edges_match_loop_reference():
    g = torch.Generator().manual_seed(1)
    inst = torch.randint(0, 3, (2, 6, 9), generator=g)
    assert np.array_equal(instance_edges(inst).numpy(), reference_edges(inst.numpy()))


def test_semantic_input_layout_and_instance_modes():
    # road (7) on the left, then two touching cars 26001 | 26002
    labels = torch.tensor([[[7, 7, 26, 26, 26, 26]] * 3])
    inst = torch.tensor([[[7, 7, 26001, 26001, 26002, 26002]] * 3])
    y = semantic_input(labels, 35, inst)
    assert y.shape == (1, 36, 3, 6)
    assert torch.equal(y[:, :35], one_hot(labels, 35))
    assert torch.equal(y[:, 35:], instance_edges(inst))
    exact = y[0, 35, 0]
    ref = semantic_input(labels, 35, inst, instance_mode="reference_8bit")[0, 35, 0]
    assert exact.tolist() == [0, 1, 1, 1, 1, 0]  # road|car and car|car edges
    assert ref.tolist() == [0, 1, 1, 0, 0, 0]  # car|car edge vanished (both ids -> 255)
    assert semantic_input(labels, 35).shape == (1, 35, 3, 6)
    with pytest.raises(ValueError, match="instance_mode"):
        semantic_input(labels, 35, inst, instance_mode="8bit")
    with pytest.raises(ValueError, match="same"):
        semantic_input(labels, 35, inst[:, :2])


def test_saturate_and_label_channels():
    inst = torch.tensor([[7, 254, 255, 26001, 33000]])
    assert saturate_instances_8bit(inst).tolist() == [[7, 254, 255, 255, 255]]
    assert label_channels(35, True) == 36 and label_channels(151, False) == 151
    with pytest.raises(ValueError):
        label_channels(0, True)


def test_colorize():
    labels = torch.tensor([[[7, 26], [23, 0]]])
    rgb = colorize(labels, "cityscapes")
    assert rgb.shape == (1, 2, 2, 3) and rgb.dtype == torch.uint8
    assert rgb[0, 0, 0].tolist() == [128, 64, 128] and rgb[0, 0, 1].tolist() == [0, 0, 142]
    assert rgb[0, 1, 0].tolist() == [70, 130, 180]
    assert CITYSCAPES_PALETTE.shape == (35, 3)
    pal = default_palette(256)
    assert len({tuple(c) for c in pal.tolist()}) == 256  # distinct colours
    assert torch.equal(colorize(labels), pal[labels])  # deterministic default
    assert colorize(labels[0], [[0, 0, 0]] * 30).shape == (2, 2, 3)
    with pytest.raises(ValueError, match="palette"):
        colorize(torch.tensor([[40]]), "cityscapes")
