"""The registered ``qgesco[:FOLDER|:BITS]`` system: same pipeline as GESCO, quantised receiver."""

from __future__ import annotations

import copy

import pytest
import torch

from gensemcom.data.synthetic import SyntheticScenes
from gensemcom.quant.model import quantize_model
from gensemcom.quant.packed import save_packed
from gensemcom.systems.base import Batch
from gensemcom.systems.qgesco import parse_bits
from gensemcom.systems.registry import SystemOptions, build_system
from gensemcom.zoo import load_gesco


def batch(n: int = 2, h: int = 16, w: int = 32) -> Batch:
    data = SyntheticScenes(n, h, w, seed=3)
    items = [data[i] for i in range(n)]
    return Batch(images=torch.stack([it["image"] for it in items]), labels=torch.stack([it["label"] for it in items]),
                 instances=torch.stack([it["instance"] for it in items]), names=[it["path"] for it in items],
                 num_classes=data.num_classes)


def test_parse_bits() -> None:
    assert parse_bits("8") == (8, None) and parse_bits("W4A8") == (4, 8) and parse_bits("w8a32") == (8, None)
    assert parse_bits("runs/model") is None
    with pytest.raises(ValueError, match="bits"):
        parse_bits("w16a8")


def test_qgesco_runs_like_gesco(tmp_path) -> None:
    opts = SystemOptions(steps=2)
    b = batch()
    fp = build_system("gesco", opts)
    q8 = build_system("qgesco:8", opts)
    assert q8.config()["quant"]["weight_bits"] == 8 and q8.name == "qgesco"
    outs = [s.run(b, "awgn", 10.0, torch.Generator().manual_seed(0)) for s in (fp, q8)]
    assert torch.equal(outs[0].labels, outs[1].labels)  # same channel draws
    diff = float((outs[0].images - outs[1].images).abs().mean())
    assert 0 < diff < 0.1
    # a packed folder (what `gensemcom quantize` writes) is loaded as it is
    gesco = load_gesco(steps=2)
    q = quantize_model(copy.deepcopy(gesco.model.float()), 8)
    save_packed(tmp_path / "p", q, extra={"diffusion": gesco.diffusion.config.to_dict(),
                                          "num_classes": gesco.num_classes})
    from_folder = build_system(f"qgesco:{tmp_path / 'p'}", opts)
    assert from_folder.config()["quant_source"].startswith("packed:")
    out = from_folder.run(b, "awgn", 10.0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.images, outs[1].images, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="neither bits"):
        build_system(f"qgesco:{tmp_path / 'nothing'}", opts)


@pytest.mark.slow
def test_qgesco_w8a8_spec() -> None:
    s = build_system("qgesco:w8a8", SystemOptions(steps=2))
    assert s.config()["quant"]["act_bits"] == 8
    out = s.run(batch(1), "awgn", 10.0, torch.Generator().manual_seed(0))
    assert torch.isfinite(out.images).all()


pytestmark = pytest.mark.usefixtures("one_thread")
