"""Real-dataset loaders on tiny fixture trees in the official / reference layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from gensemcom.data import (ADE20K, DATASET_INFO, COCOStuff, Cityscapes, ImageLabelFolder,
                            SyntheticScenes, ade20k_label_transform, build_dataset)
from gensemcom.data.common import derive_seed, load_index_map
from gensemcom.semantics import instance_edges, semantic_input


def save(path: Path, arr: np.ndarray) -> Path:
    """Write an array as an image: uint8 (H, W, 3) RGB, uint8 (H, W) 8-bit, uint16 (H, W) 16-bit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def gradient_rgb(h: int, w: int, shift: int = 0) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 255 // max(w - 1, 1) + shift) % 256, y * 255 // max(h - 1, 1),
                     np.full_like(x, 128)], -1).astype(np.uint8)


# ---------------------------------------------------------------------------- Cityscapes

CITY_FRAMES = [("aachen", "aachen_000000_000019"), ("aachen", "aachen_000001_000019"),
               ("bremen", "bremen_000000_000019")]


def city_maps(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Road (7) with two touching cars (26): instance ids 26001 | 26002 side by side."""
    label = np.full((h, w), 7, np.uint8)
    inst = np.full((h, w), 7, np.uint16)
    r0, r1 = h // 4, 3 * h // 4
    label[r0:r1, w // 4: 3 * w // 4] = 26
    inst[r0:r1, w // 4: w // 2] = 26001
    inst[r0:r1, w // 2: 3 * w // 4] = 26002
    return label, inst


def make_cityscapes(root: Path, split: str = "val", h: int = 64, w: int = 128,
                    frames=CITY_FRAMES) -> Path:
    label, inst = city_maps(h, w)
    for i, (city, stem) in enumerate(frames):
        save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", gradient_rgb(h, w, 40 * i))
        gt = root / "gtFine" / split / city
        save(gt / f"{stem}_gtFine_labelIds.png", label)
        save(gt / f"{stem}_gtFine_instanceIds.png", inst)
        save(gt / f"{stem}_gtFine_color.png", gradient_rgb(h, w))  # ignored
    return root


def test_cityscapes_pairing_shapes_and_values(tmp_path):
    root = make_cityscapes(tmp_path)
    ds = Cityscapes(root, "val", size=32)
    assert len(ds) == 3 and ds.num_classes == 35 and ds.has_instances
    assert [Path(s.image).parent.name for s in ds.samples] == ["aachen", "aachen", "bremen"]
    for s in ds.samples:  # each image is paired with the label files of its own frame
        stem = s.image.name.replace("_leftImg8bit.png", "")
        assert s.label.name == f"{stem}_gtFine_labelIds.png"
        assert s.instance.name == f"{stem}_gtFine_instanceIds.png"
    item = ds[2]
    assert item["image"].shape == (3, 32, 64) and item["image"].dtype == torch.float32
    assert -1 <= item["image"].min() and item["image"].max() <= 1
    assert item["label"].shape == (32, 64) and item["label"].dtype == torch.int64
    assert set(item["label"].unique().tolist()) == {7, 26}
    assert set(item["instance"].unique().tolist()) == {7, 26001, 26002}  # full 16-bit precision
    assert item["path"].endswith("bremen_000000_000019_leftImg8bit.png")
    # batches and becomes the 36-channel network input
    batch = next(iter(DataLoader(ds, batch_size=2)))
    y = semantic_input(batch["label"], 35, batch["instance"])
    assert batch["image"].shape == (2, 3, 32, 64) and y.shape == (2, 36, 32, 64)


def test_cityscapes_resize_2048x1024_to_256x512(tmp_path):
    root = make_cityscapes(tmp_path, h=1024, w=2048, frames=CITY_FRAMES[:1])
    item = Cityscapes(root, "val")[0]  # default size 256
    assert item["image"].shape == (3, 256, 512)
    assert item["label"].shape == item["instance"].shape == (256, 512)
    label, _ = city_maps(1024, 2048)
    assert torch.equal(item["label"], torch.from_numpy(label[::4, ::4].astype(np.int64)))


def test_cityscapes_reference_8bit_instances(tmp_path):
    root = make_cityscapes(tmp_path)
    exact = Cityscapes(root, "val", size=32)[0]["instance"]
    ref = Cityscapes(root, "val", size=32, instance_mode="reference_8bit")[0]["instance"]
    assert set(ref.unique().tolist()) == {7, 255}
    e_exact, e_ref = instance_edges(exact[None])[0, 0], instance_edges(ref[None])[0, 0]
    row = 16  # cars occupy rows 8..23, cols 16..31 (26001) and 32..47 (26002)
    assert e_exact[row, 31] == 1 and e_exact[row, 32] == 1  # car | car boundary
    assert e_ref[row, 31] == 0 and e_ref[row, 32] == 0  # vanished in the reference's 8-bit mode
    assert e_exact[row, 15] == e_ref[row, 15] == 1  # road | car survives in both
    # the same through semantic_input on exact ids
    y_ref = semantic_input(exact[None] * 0 + 26, 35, exact[None], instance_mode="reference_8bit")
    assert torch.equal(y_ref[0, 35], e_ref)


def test_cityscapes_errors_name_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"leftImg8bit[/\\]val does not exist"):
        Cityscapes(tmp_path, "val")
    root = make_cityscapes(tmp_path)
    gt = root / "gtFine" / "val" / "aachen"
    (gt / "aachen_000001_000019_gtFine_labelIds.png").unlink()
    (gt / "aachen_000000_000019_gtFine_instanceIds.png").unlink()
    with pytest.raises(FileNotFoundError) as e:
        Cityscapes(root, "val")
    msg = str(e.value)
    assert "1 image has no label file: aachen/aachen_000001_000019_leftImg8bit.png" in msg
    assert "1 image has no instance file: aachen/aachen_000000_000019_leftImg8bit.png" in msg
    # without instances only the missing label file matters
    with pytest.raises(FileNotFoundError, match="no label file"):
        Cityscapes(root, "val", instances=False)
    with pytest.raises(ValueError, match="split"):
        Cityscapes(root, "validation")


def test_cityscapes_seeded_flip_is_deterministic(tmp_path):
    root = make_cityscapes(tmp_path)
    a = Cityscapes(root, "val", size=32, train=True, seed=3)
    b = Cityscapes(root, "val", size=32, train=True, seed=3)
    items_a = [a[i] for i in range(3)]
    items_b = [b[i] for i in reversed(range(3))][::-1]  # other access order
    for x, y in zip(items_a, items_b):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["instance"], y["instance"])
    # over epochs both orientations occur, and the flip moves image and maps together
    plain = Cityscapes(root, "val", size=32)[0]
    seen = set()
    for epoch in range(8):
        a.set_epoch(epoch)
        it = a[0]
        flipped = torch.equal(it["image"], plain["image"].flip(-1))
        assert flipped or torch.equal(it["image"], plain["image"])
        assert torch.equal(it["instance"], plain["instance"].flip(-1) if flipped else plain["instance"])
        seen.add(flipped)
    assert seen == {True, False}


# ---------------------------------------------------------------------------- ADE20K

ADE_VALUES = [0, 1, 150, 200]  # stored values; expected classes 150, 0, 149, 150


def ade_label(h: int = 32, w: int = 32) -> np.ndarray:
    label = np.zeros((h, w), np.uint8)
    for k, v in enumerate(ADE_VALUES):
        label[:, k * w // 4:(k + 1) * w // 4] = v
    return label


def make_ade(root: Path, layout: str = "gesco", n: int = 2, h: int = 32, w: int = 32) -> Path:
    for i in range(n):
        name = f"ADE_val_{i + 1:08d}"
        if layout == "gesco":
            save(root / "validation" / f"{name}.jpg", gradient_rgb(h, w, 30 * i))
            save(root / "validation" / f"{name}_seg.png", ade_label(h, w))
        else:
            save(root / "images" / "validation" / f"{name}.jpg", gradient_rgb(h, w, 30 * i))
            save(root / "annotations" / "validation" / f"{name}.png", ade_label(h, w))
    return root


def test_ade20k_label_transform():
    out = ade20k_label_transform(np.array([0, 1, 2, 150, 151, 200, 255]))
    assert out.tolist() == [150, 0, 1, 149, 150, 150, 150]


@pytest.mark.parametrize("layout", ["gesco", "sdm"])
def test_ade20k_layouts(tmp_path, layout):
    root = make_ade(tmp_path, layout)
    ds = ADE20K(root, "val", size=32)
    assert len(ds) == 2 and ds.layout == layout and not ds.has_instances
    item = ds[1]
    assert item["image"].shape == (3, 32, 32) and "instance" not in item
    assert item["path"].endswith("ADE_val_00000002.jpg")
    expected = ade20k_label_transform(ade_label())
    assert torch.equal(item["label"], torch.from_numpy(expected))
    assert item["label"][0, ::8].tolist() == [150, 0, 149, 150]
    # evaluation squashes to size x size, whatever the aspect ratio
    root2 = make_ade(tmp_path / "wide", layout, n=1, h=30, w=50)
    assert ADE20K(root2, "val", size=24)[0]["image"].shape == (3, 24, 24)


def test_ade20k_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="validation does not exist"):
        ADE20K(tmp_path, "val")
    root = make_ade(tmp_path)
    (root / "validation" / "ADE_val_00000001_seg.png").unlink()
    with pytest.raises(FileNotFoundError, match="1 image has no label file: ADE_val_00000001.jpg"):
        ADE20K(root, "val")
    rgb_root = tmp_path / "rgb"
    save(rgb_root / "validation" / "x.jpg", gradient_rgb(8, 8))
    save(rgb_root / "validation" / "x_seg.png", gradient_rgb(8, 8))  # colour-coded: rejected
    with pytest.raises(ValueError, match="colour-coded"):
        ADE20K(rgb_root, "val", size=8)[0]


# ---------------------------------------------------------------------------- COCO-Stuff


def make_coco(root: Path, split: str = "val", n: int = 3, h: int = 40, w: int = 48,
              square: tuple[int, int, int] | None = None) -> Path:
    """Label 255 on the left third; with ``square=(top, left, side)`` a white square labelled 1 on a
    black image (to check that crops and flips keep image and maps aligned)."""
    sub, inst_sub = ("val2017", "val_inst") if split == "val" else ("train2017", "train_inst")
    for i in range(n):
        name = f"{i:012d}"
        label = np.full((h, w), 5, np.uint8)
        label[:, : w // 3] = 255
        img = gradient_rgb(h, w, 20 * i)
        if square is not None:
            top, left, side = square
            img = np.zeros((h, w, 3), np.uint8)
            img[top:top + side, left:left + side] = 255
            label[:] = 0
            label[top:top + side, left:left + side] = 1
        inst = np.where(label == 1, 1001, label.astype(np.uint16)).astype(np.uint16)
        save(root / "images" / sub / f"{name}.jpg", img)
        save(root / "labels" / sub / f"{name}.png", label)
        save(root / "images" / inst_sub / f"{name}.png", inst)
    return root


def test_coco_255_to_182_and_instances(tmp_path):
    root = make_coco(tmp_path)
    ds = COCOStuff(root, "val", size=24)
    assert len(ds) == 3 and ds.num_classes == 183
    item = ds[0]
    assert item["image"].shape == (3, 24, 24) and item["label"].shape == item["instance"].shape == (24, 24)
    assert set(item["label"].unique().tolist()) == {5, 182}
    assert item["path"].endswith("000000000000.jpg")
    assert "instance" not in COCOStuff(root, "val", size=24, instances=False)[0]


def test_coco_missing_instance_folder(tmp_path):
    root = make_coco(tmp_path)
    for f in (root / "images" / "val_inst").iterdir():
        f.unlink()
    (root / "images" / "val_inst").rmdir()
    with pytest.raises(FileNotFoundError, match=r"val_inst does not exist.*instances=False"):
        COCOStuff(root, "val")
    assert len(COCOStuff(root, "val", instances=False)) == 3


def test_coco_train_random_crop_is_seeded_and_aligned(tmp_path):
    root = make_coco(tmp_path, split="train", n=1, h=48, w=64, square=(12, 8, 16))
    seen_shapes, flips = set(), set()
    for seed in range(10):
        ds = COCOStuff(root, "train", size=32, seed=seed)
        it = ds[0]
        again = COCOStuff(root, "train", size=32, seed=seed)[0]
        assert torch.equal(it["image"], again["image"]) and torch.equal(it["label"], again["label"])
        assert it["image"].shape == (3, 32, 32) and it["label"].shape == (32, 32)
        assert torch.equal(it["instance"] == 1001, it["label"] == 1)
        inside = it["label"] == 1
        if inside.sum() >= 4:  # the bright square of the image is where its label is
            bright = it["image"].mean(0)
            assert bright[inside].mean() > 0.5 and bright[~inside].mean() < -0.5
        seen_shapes.add(tuple(inside.nonzero().float().mean(0).round().tolist()) if inside.any() else None)
        cols = inside.any(0).nonzero()
        if cols.numel():
            flips.add(bool(cols.float().mean() > 16))
    assert len(seen_shapes) > 3  # the crops differ between seeds
    assert flips == {True, False}  # and both orientations occur
    # without a seed, draws come from a shared generator (or torch's global RNG)
    g = torch.Generator().manual_seed(0)
    ds = COCOStuff(root, "train", size=32)
    assert torch.equal(ds.get(0, generator=torch.Generator().manual_seed(5))["label"],
                       ds.get(0, generator=torch.Generator().manual_seed(5))["label"])
    assert COCOStuff(root, "train", size=32, generator=g)[0]["image"].shape == (3, 32, 32)


# ---------------------------------------------------------------------------- folder


def test_image_label_folder(tmp_path):
    label16 = np.zeros((20, 30), np.uint16)
    label16[:, 15:] = 300  # needs a 16-bit map
    save(tmp_path / "images" / "b.png", gradient_rgb(20, 30))
    save(tmp_path / "images" / "a.jpg", gradient_rgb(20, 30, 50))
    save(tmp_path / "labels" / "a.png", np.full((20, 30), 3, np.uint8))
    save(tmp_path / "labels" / "b.png", label16)
    ds = ImageLabelFolder(tmp_path, num_classes=400)
    assert len(ds) == 2 and not ds.has_instances
    a, b = ds[0], ds[1]
    assert a["path"].endswith("a.jpg") and b["path"].endswith("b.png")
    assert a["image"].shape == (3, 20, 30) and a["label"].unique().tolist() == [3]
    assert b["label"].unique().tolist() == [0, 300] and "instance" not in b
    assert ImageLabelFolder(tmp_path, 400, size=10)[0]["image"].shape == (3, 10, 15)
    assert ImageLabelFolder(tmp_path, 400, size=10, resize="square")[1]["label"].shape == (10, 10)
    with pytest.raises(ValueError, match=r"b\.png: label values 300 lie outside \[0, 9\]"):
        ImageLabelFolder(tmp_path, num_classes=10)[1]
    save(tmp_path / "images" / "c.png", gradient_rgb(20, 30))
    with pytest.raises(FileNotFoundError, match="1 image has no label file: c.png"):
        ImageLabelFolder(tmp_path, num_classes=400)
    (tmp_path / "images" / "c.png").unlink()
    save(tmp_path / "instances" / "a.png", np.full((20, 30), 2001, np.uint16))
    save(tmp_path / "instances" / "b.png", np.full((20, 30), 7, np.uint16))
    ds = ImageLabelFolder(tmp_path, num_classes=400)
    assert ds.has_instances and ds[0]["instance"].unique().tolist() == [2001]
    # a split sub-folder is used when it exists, else the folder serves every split
    assert len(build_dataset("folder", tmp_path, num_classes=400, split="train", train=True)) == 2
    save(tmp_path / "val" / "images" / "z.png", gradient_rgb(20, 30))
    save(tmp_path / "val" / "labels" / "z.png", np.zeros((20, 30), np.uint8))
    assert ImageLabelFolder(tmp_path, 400, split="val")[0]["path"].endswith("z.png")


# ---------------------------------------------------------------------------- shared


def test_load_index_map_modes(tmp_path):
    p16 = save(tmp_path / "i16.png", np.array([[26001, 7]], np.uint16))
    assert np.asarray(load_index_map(p16)).tolist() == [[26001, 7]]
    assert np.asarray(load_index_map(p16, saturate_8bit=True)).tolist() == [[255, 7]]
    pal = Image.fromarray(np.array([[3, 1]], np.uint8)).convert("P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 9, 9, 9] + [0] * 756)
    pal.save(tmp_path / "p.png")
    assert np.asarray(load_index_map(tmp_path / "p.png")).tolist() == [[3, 1]]  # indices, not colours


def test_build_dataset_and_info(tmp_path):
    assert DATASET_INFO["cityscapes"].label_channels == 36
    assert DATASET_INFO["ade20k"].label_channels == 151 and DATASET_INFO["coco"].label_channels == 184
    assert DATASET_INFO["cityscapes"].image_size == (256, 512)
    assert DATASET_INFO["coco"].guidance_scale == 2.5 and DATASET_INFO["cityscapes"].guidance_scale == 2.0
    assert DATASET_INFO["ade20k"]["num_classes"] == 151 and not DATASET_INFO["ade20k"]["has_instances"]
    assert DATASET_INFO["folder"].num_classes is None and "folder" in DATASET_INFO
    with pytest.raises(ValueError, match="folder"):
        DATASET_INFO["folder"].label_channels
    assert isinstance(build_dataset("cityscapes", make_cityscapes(tmp_path / "c"), split="val"), Cityscapes)
    assert isinstance(build_dataset("ade20k", make_ade(tmp_path / "a"), split="val"), ADE20K)
    assert isinstance(build_dataset("coco", make_coco(tmp_path / "o"), split="val"), COCOStuff)
    assert isinstance(build_dataset("synthetic", num_images=2, height=32, width=64), SyntheticScenes)
    with pytest.raises(ValueError, match="unknown dataset"):
        build_dataset("imagenet", tmp_path)
    with pytest.raises(ValueError, match="root"):
        build_dataset("cityscapes")
    assert derive_seed(1, 2) == derive_seed(1, 2) != derive_seed(2, 1)
