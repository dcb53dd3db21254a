"""Segmenters: the TinySegmenter, exported networks, spec parsing, augmentation, IoU, the CLI."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

from gensemcom.cli.train_segmenter import augment, iou_report
from gensemcom.metrics import ConfusionMatrix
from gensemcom.models import segmenter as segmenter_module
from gensemcom.models.segmenter import (Segmenter, TinySegmenter, TinySegmenterConfig, TorchScriptSegmenter,
                                        load_segmenter)

TINY = TinySegmenterConfig(num_classes=5, widths=(8, 16))



pytestmark = pytest.mark.usefixtures("one_thread")

def _images(b: int = 2, h: int = 16, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _tiny(seed: int = 0) -> TinySegmenter:
    torch.manual_seed(seed)
    return TinySegmenter(TINY).eval()


def test_default_size_and_shapes():
    m = TinySegmenter()
    assert isinstance(m, Segmenter) and m.num_classes == 12
    assert 0.2e6 < sum(p.numel() for p in m.parameters()) < 0.5e6
    x = _images(2, 64, 128)
    assert m.logits(x).shape == (2, 12, 64, 128)
    pred = m.predict(x)
    assert pred.shape == (2, 64, 128) and pred.dtype == torch.int64 and not pred.requires_grad
    assert 0 <= pred.min() and pred.max() < 12


def test_indivisible_size_is_a_clear_error():
    with pytest.raises(ValueError, match="divisible by 8, got 20x32"):
        TinySegmenter().logits(_images(1, 20, 32))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        TinySegmenter().logits(torch.zeros(1, 1, 16, 16))


def test_a_few_steps_reduce_the_loss():
    from gensemcom.data.synthetic import SyntheticScenes

    data = SyntheticScenes(8, 16, 32, seed=1, num_classes=6)
    x = torch.stack([data[i]["image"] for i in range(8)])
    y = torch.stack([data[i]["label"] for i in range(8)])
    torch.manual_seed(0)
    m = TinySegmenter(TinySegmenterConfig(num_classes=6, widths=(8, 16))).train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = nn.functional.cross_entropy(m(x), y, ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


def test_save_load_round_trip(tmp_path):
    m = _tiny()
    m.save_pretrained(tmp_path / "s")
    loaded = TinySegmenter.from_pretrained(tmp_path / "s")
    x = _images()
    assert loaded.config == m.config
    with torch.no_grad():
        assert torch.equal(loaded.logits(x), m.logits(x))
    via_spec = load_segmenter(str(tmp_path / "s"))
    assert isinstance(via_spec, TinySegmenter) and torch.equal(via_spec.predict(x), m.predict(x))


def test_other_kind_of_folder_is_refused(tmp_path):
    from gensemcom.models.jscc import DeepJSCC, DeepJSCCConfig

    DeepJSCC(DeepJSCCConfig(latent_channels=2, hidden=4)).save_pretrained(tmp_path / "j")
    with pytest.raises(ValueError, match="holds a 'deepjscc' model, not a 'tiny_segmenter' one"):
        load_segmenter(str(tmp_path / "j"))


def _scripted(tmp_path, module: nn.Module, name: str = "net.pt") -> str:
    path = tmp_path / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(module.eval()).save(str(path))
    return str(path)


class _Half(nn.Module):
    """Logits at half resolution, returned in a tuple (as DRN does)."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, classes, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.conv(x), x


class _Echo(nn.Module):
    """Returns its input: shows what the segmenter received."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_torchscript_segmenter_loads_and_predicts(tmp_path):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 1)
    path = _scripted(tmp_path, conv)
    seg = TorchScriptSegmenter(path, 4)
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(seg.logits(x), conv(x))
    assert seg.predict(x).shape == (2, 16, 32)

    half = TorchScriptSegmenter(_scripted(tmp_path, _Half(6), "half.pt"), 6, probe_size=(16, 16))
    assert half.logits(x).shape == (2, 6, 16, 32)


@pytest.mark.parametrize("input_range", ["[-1,1]", "[0,1]", "imagenet"])
def test_torchscript_input_range(tmp_path, input_range):
    seg = TorchScriptSegmenter(_scripted(tmp_path, _Echo()), 3, input_range=input_range)
    x = _images()
    got = seg.logits(x)
    if input_range == "[-1,1]":
        want = x
    elif input_range == "[0,1]":
        want = (x + 1) / 2
    else:
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        want = ((x + 1) / 2 - mean) / std
    torch.testing.assert_close(got, want)


def test_torchscript_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        TorchScriptSegmenter(tmp_path / "nope.pt", 3)
    path = _scripted(tmp_path, nn.Conv2d(3, 4, 1))
    seg = TorchScriptSegmenter(path, 5)
    with pytest.raises(ValueError, match="outputs 4 classes, but num_classes=5"):
        seg.logits(_images())
    with pytest.raises(ValueError, match="outputs 4 classes"):
        TorchScriptSegmenter(path, 5, probe_size=(8, 8))
    with pytest.raises(ValueError, match="input_range"):
        TorchScriptSegmenter(path, 4, input_range="0..255")
    junk = tmp_path / "junk.pt"
    junk.write_text("not a model")
    with pytest.raises(ValueError, match="not a TorchScript"):
        TorchScriptSegmenter(junk, 4)


def test_load_segmenter_specs(tmp_path, monkeypatch):
    path = _scripted(tmp_path, nn.Conv2d(3, 4, 1))
    seg = load_segmenter(f"torchscript:{path}:4")
    assert isinstance(seg, TorchScriptSegmenter) and seg.num_classes == 4 and seg.input_range == "[-1,1]"
    assert load_segmenter(f"torchscript:{path}:4:imagenet").input_range == "imagenet"
    for bad, match in [("", "empty"), (f"torchscript:{path}", "NUM_CLASSES"),
                       (f"torchscript:{path}:four", "not an integer"), ("torchscript::4", "expected"),
                       (f"torchscript:{path}:0", ">= 1"), ("onnx:model.onnx", "unknown segmenter spec")]:
        with pytest.raises(ValueError, match=match):
            load_segmenter(bad)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_segmenter(f"torchscript:{tmp_path / 'missing.pt'}:4")
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        load_segmenter(str(tmp_path / "no_such_folder"))
    monkeypatch.setattr(segmenter_module, "BUNDLED_SEGMENTER", "assets/no_such_segmenter")
    with pytest.raises(FileNotFoundError, match="bundled segmenter is not installed"):
        load_segmenter("bundled")


def test_augment_is_label_consistent_and_seeded():
    x = _images(8, 16, 32)
    y = torch.arange(32).expand(8, 16, 32).clone()  # column index: reveals flips
    a, ya = augment(x, y, torch.Generator().manual_seed(0))
    b, yb = augment(x, y, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and torch.equal(ya, yb)
    assert a.shape == x.shape and a.min() >= -1 and a.max() <= 1
    flipped = ya[:, 0, 0] == 31
    assert flipped.any() and (~flipped).any()
    # a flipped image is (up to the photometric jitter) the mirror of the original
    for i in range(8):
        src = x[i].flip(-1) if flipped[i] else x[i]
        assert torch.corrcoef(torch.stack([a[i].flatten(), src.flatten()]))[0, 1] > 0.5


def test_confusion_and_iou():
    target = torch.tensor([[0, 0, 1, 1, 2, 255]])
    pred = torch.tensor([[0, 1, 1, 1, 0, 2]])
    conf = ConfusionMatrix(4).update(pred, target)
    assert conf.to_list() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    rep = iou_report(conf, ["a", "b", "c", "d"])
    assert rep["per_class_iou"] == {"a": pytest.approx(1 / 3, abs=1e-4), "b": pytest.approx(2 / 3, abs=1e-4),
                                  "c": 0.0, "d": None}
    assert rep["miou"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3, abs=1e-4)
    assert rep["pixel_accuracy"] == pytest.approx(3 / 5)


def test_cli_tiny_run_writes_model_and_eval(tmp_path):
    from gensemcom.cli.train_segmenter import main

    out = tmp_path / "run"
    assert main(["--out", str(out), "--steps", "3", "--batch-size", "2", "--size", "16x32", "--num-scenes", "8",
                 "--widths", "8,16", "--eval-scenes", "2", "--no-progress", "--warmup", "0"]) == 0
    report = json.loads((out / "eval.json").read_text())
    assert set(report["per_class_iou"]) == {"sky", "building", "road", "sidewalk", "car", "vegetation", "person",
                                            "pole", "traffic sign", "terrain", "fence", "truck"}
    assert 0 <= report["miou"] <= 1 and report["trained_steps"] == 3
    seg = load_segmenter(str(out / "model"))
    assert seg.num_classes == 12 and (out / "model" / "eval.json").is_file()
