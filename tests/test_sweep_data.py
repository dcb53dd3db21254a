"""Real datasets in sweeps: ``--data cityscapes:DIR,ade20k:DIR,coco:DIR,folder:DIR`` on fixture
trees in each layout, with a user's segmenter (issue 8 item 5)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from test_datasets import gradient_rgb, make_ade, make_cityscapes, make_coco, save

from gensemcom.data import build_eval_data
from gensemcom.data.common import load_index_map
from gensemcom.data.evalsets import parse_data_spec
from gensemcom.evaluate import build_segmenters, read_records
from gensemcom.metrics import ConfusionMatrix


def make_folder(root: Path, n: int = 3, h: int = 24, w: int = 40) -> Path:
    """Own data: images in two sub-folders, 8-bit maps with classes 0..4 and 255 unlabelled."""
    for i in range(n):
        sub = "a" if i % 2 else "b"
        label = np.full((h, w), i % 5, np.uint8)
        label[: h // 3] = 4
        label[:, -3:] = 255
        save(root / "images" / sub / f"img{i}.png", gradient_rgb(h, w, 25 * i))
        save(root / "labels" / sub / f"img{i}.png", label)
    return root


class _Colour(torch.nn.Module):
    """A deterministic 'segmenter': a fixed 1x1 convolution of the image, as logits."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(classes)
        self.weight = torch.nn.Parameter(torch.randn(classes, 3, 1, 1, generator=g), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(x, self.weight)


def _segmenter(path: Path, classes: int) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit still works
        torch.jit.save(torch.jit.script(_Colour(classes)), str(path))
    return f"torchscript:{path}:{classes}"


def test_parse_data_spec_keeps_colons_in_paths():
    assert parse_data_spec("cityscapes:/data/c:s:n=4") == ("cityscapes", "/data/c:s", {"n": "4"})
    assert parse_data_spec("coco-stuff:/d:name=x:split=val") == ("coco", "/d", {"name": "x", "split": "val"})
    assert parse_data_spec("synthetic:8") == ("synthetic", "8", {})
    assert parse_data_spec("photos") == ("photos", None, {})


def test_each_layout_at_the_sweep_size(tmp_path):
    city = make_cityscapes(tmp_path / "cs")
    ade = make_ade(tmp_path / "ade", layout="sdm", n=3)
    coco = make_coco(tmp_path / "coco")
    own = make_folder(tmp_path / "own")
    data = build_eval_data(f"cityscapes:{city}:n=2,ade20k:{ade},coco:{coco},folder:{own}:classes=5", 32, 64)
    by = {d.name: d for d in data}
    assert list(by) == ["cityscapes", "ade20k", "coco", "folder"]
    assert [len(by[k].items) for k in by] == [2, 3, 3, 3]
    assert [by[k].num_classes for k in by] == [35, 151, 183, 5]
    for d in data:
        b = d.batches(2)
        assert len(b) == -(-len(d.items) // 2)
        batch = b[0]
        assert batch.images.shape == (2, 3, 32, 64) and batch.labels.shape == (2, 32, 64)
        assert batch.images.min() >= -1 and batch.images.max() <= 1
        assert batch.num_classes == d.num_classes and d.fingerprint
    # instances where the layout has them
    assert by["cityscapes"].batches(2)[0].instances is not None
    assert by["coco"].batches(2)[0].instances is not None
    assert by["ade20k"].batches(2)[0].instances is None
    # Cityscapes keeps its 2:1 aspect at 32x64: the labels are those of the file, resized by nearest
    item = by["cityscapes"].items[0]
    want = np.asarray(load_index_map(city / "gtFine/val/aachen/aachen_000000_000019_gtFine_labelIds.png")
                      .resize((64, 32), 0))
    assert np.array_equal(item["label"].numpy(), want)
    assert item["path"].endswith("aachen_000000_000019_leftImg8bit.png")
    # the dataset's own label transform applies (ADE20K: v - 1, 0 -> 150; COCO: 255 -> 182)
    assert set(by["coco"].items[0]["label"].unique().tolist()) == {5, 182}
    assert by["ade20k"].items[0]["label"].max() <= 150
    # one folder: names are unique across its sub-folders, the 255s stay unlabelled
    names = [str(by["folder"].items[i]["path"]) for i in range(3)]
    assert len(set(names)) == 3
    assert (by["folder"].items[0]["label"] == 255).any() and by["folder"].ignore_index == 255


def test_folder_classes_inferred_and_errors(tmp_path, capsys):
    own = make_folder(tmp_path / "own")
    d = build_eval_data(f"folder:{own}", 16, 16)[0]
    assert d.num_classes == 5 and "inferred" in d.description
    assert "5 classes, inferred" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"label values 4 lie outside \[0, 2\]"):
        build_eval_data(f"folder:{own}:classes=3", 16, 16)[0].batches(1)[0]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_eval_data(f"cityscapes:{tmp_path / 'nowhere'}", 16, 32)
    with pytest.raises(ValueError, match="needs its folder"):
        build_eval_data("ade20k", 16, 16)
    with pytest.raises(ValueError, match="unknown data 'imagenet:/x'"):
        build_eval_data("imagenet:/x", 16, 16)
    with pytest.raises(ValueError, match="n= takes a whole number"):
        build_eval_data(f"folder:{own}:n=two", 16, 16)
    with pytest.raises(ValueError, match="classes= does not apply to coco"):
        build_eval_data(f"coco:{own}:classes=3", 16, 16)
    with pytest.raises(ValueError, match="two data sets are called 'folder'"):
        build_eval_data(f"folder:{own},folder:{own}", 16, 16)
    assert [d.name for d in build_eval_data(f"folder:{own},folder:{own}:name=again", 16, 16)] == ["folder", "again"]


def test_segmenter_per_data_set_and_for_all(tmp_path):
    city = make_cityscapes(tmp_path / "cs")
    own = make_folder(tmp_path / "own")
    data = build_eval_data(f"synthetic:2,cityscapes:{city},folder:{own}:classes=5", 32, 64)
    seg35, seg5 = _segmenter(tmp_path / "s35.pt", 35), _segmenter(tmp_path / "s5.pt", 5)
    segs, info = build_segmenters(data, [f"cityscapes={seg35}", f"folder={seg5}"])
    assert info == {"synthetic": "bundled", "cityscapes": seg35, "folder": seg5}
    segs, info = build_segmenters(data[1:2], [seg35])  # no DATASET=: every data set
    assert info == {"cityscapes": seg35}
    with pytest.raises(ValueError, match="no data set is called 'ade20k'"):
        build_segmenters(data, [f"ade20k={seg35}"])
    with pytest.raises(ValueError, match="predicts 5 classes, data set cityscapes has 35"):
        build_segmenters(data, [f"cityscapes={seg5}"])


def test_evaluate_over_every_layout_with_a_segmenter(tmp_path):
    """The whole command on the four layouts: results per data set, the segmenter's mIoU on the
    clean images equal to a direct computation, the data recorded in the settings."""
    from gensemcom.cli.evaluate import main

    city = make_cityscapes(tmp_path / "cs")
    ade = make_ade(tmp_path / "ade", layout="gesco", n=2)
    coco = make_coco(tmp_path / "coco", n=2)
    own = make_folder(tmp_path / "own", n=2)
    seg = _segmenter(tmp_path / "s35.pt", 35)
    out = tmp_path / "sweep"
    args = ["--systems", "jpeg+capacity,map+capacity", "--data",
            f"cityscapes:{city}:n=2,ade20k:{ade},coco:{coco},folder:{own}:classes=5", "--size", "32x64",
            "--channels", "awgn", "--snr", "0,20", "--batch-size", "2", "--save-images", "0",
            "--segmenter", f"cityscapes={seg}", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    curves = {(c["dataset"], c["system"]): c for c in res["results"]}
    for d in ("cityscapes", "ade20k", "coco", "folder"):
        assert curves[(d, "jpeg+capacity")]["snr_db"] == [0.0, 20.0]
        assert curves[(d, "jpeg+capacity")]["images"] == [2, 2]
        assert len(curves[(d, "map+capacity")]["map_miou"]) == 2
    assert "miou" in curves[("cityscapes", "jpeg+capacity")] and "miou" not in curves[("ade20k", "jpeg+capacity")]
    # the clean images through the same segmenter, computed here
    from gensemcom.models.segmenter import load_segmenter
    batch = build_eval_data(f"cityscapes:{city}:n=2", 32, 64)[0].batches(2)[0]
    cm = ConfusionMatrix(35, 255)
    cm.update(load_segmenter(seg).predict(batch.images), batch.labels)
    assert curves[("cityscapes", "original")]["miou"][0] == pytest.approx(float(cm.miou()), abs=1e-12)
    meta = res["meta"]
    assert meta["backends"]["miou"] == {"cityscapes": seg}
    assert meta["datasets"]["coco"]["images"] == 2 and len(meta["datasets"]["coco"]["items"]) == 16
    names = {n for r in read_records(out).values() if r["dataset"] == "folder" for n in r["names"]}
    assert names == {str(own / "images" / "a" / "img1.png"), str(own / "images" / "b" / "img0.png")}


def test_fashion_mnist_eval_set_runs_diffjscc_and_deepjscc(tmp_path):
    """fashion-mnist:N (the IDX files from a folder here) through a sweep with the bundled Diff-JSCC
    and its Deep JSCC baseline at the same 0.25 channel uses per pixel."""
    import gzip

    from gensemcom.data.evalsets import build_eval_data
    from gensemcom.evaluate import Sweep, SweepConfig
    from gensemcom.systems.registry import build_system

    rng = np.random.default_rng(0)
    root = tmp_path / "fm"
    root.mkdir()
    imgs = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    with gzip.open(root / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(np.array([0x803, 3, 28, 28], dtype=">u4").tobytes() + imgs.tobytes())
    with gzip.open(root / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(np.array([0x801, 3], dtype=">u4").tobytes() + np.array([1, 7, 3], dtype=np.uint8).tobytes())
    data = build_eval_data(f"fashion-mnist:2:dir={root}", 64, 128)
    assert data[0].num_classes == 10 and data[0].items[1]["image"].shape == (3, 32, 32)
    assert int(data[0].items[1]["label"][0, 0]) == 7
    systems = {s: build_system(s) for s in ("diffjscc", "deepjscc:fashion-mnist")}
    sweep = Sweep(tmp_path / "sweep", systems, data, SweepConfig(channels=["awgn"], snrs=[10.0], batch_size=2, seed=1))
    sweep.run(progress=False)
    results = json.loads(sweep.finish().read_text())
    curves = {c["system"]: c for c in results["results"] if c["system"] != "original"}
    assert set(curves) == set(systems)
    for c in curves.values():
        assert c["channel_uses_per_pixel"][0] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="fashion-mnist:N takes a number"):
        build_eval_data("fashion-mnist:x", 64, 128)
