"""The registered Diff-JSCC systems: build from a saved folder, run over AWGN and Rayleigh,
cost fields, determinism, the oracle's labelling, compatibility and bad input; the training and
evaluation helpers on a tiny run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gensemcom.data.fashion_mnist import FashionMNIST, write_idx
from gensemcom.systems.base import Batch
from gensemcom.systems.diffjscc import DiffJSCCSystem, class_labels_from_maps, evaluate_diffjscc
from gensemcom.systems.registry import SystemOptions, available_systems, build_system

from test_diffjscc import images, tiny_model


def _batch(b: int = 2, classes=(3, 6), size: int = 32) -> Batch:
    x = images(b, size=size)
    labels = torch.stack([torch.full((size, size), c, dtype=torch.int64) for c in classes[:b]])
    return Batch(x, labels, None, [f"img{i}" for i in range(b)], 10)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("diffjscc") / "model"
    tiny_model(snr_input=True).save_pretrained(path)
    return path


def test_registered_with_cost_and_oracle_labelled():
    infos = {i.name: i for i in available_systems()}
    assert {"diffjscc", "diffjscc-oracle"} <= set(infos)
    assert "ORACLE" in infos["diffjscc-oracle"].receiver and "upper bound" in infos["diffjscc-oracle"].description
    assert "0.25 per pixel" in infos["diffjscc"].cost


@pytest.mark.parametrize("channel", ["awgn", "rayleigh"])
def test_runs_deterministically_with_its_cost(folder, channel):
    system = build_system(f"diffjscc:{folder}", SystemOptions(steps=3))
    batch = _batch()
    assert system.compatible(batch) is None
    a = system.run(batch, channel, 5.0, torch.Generator().manual_seed(1))
    b = system.run(batch, channel, 5.0, torch.Generator().manual_seed(1))
    c = system.run(batch, channel, 5.0, torch.Generator().manual_seed(2))
    assert a.images.shape == batch.images.shape and torch.equal(a.images, b.images)
    assert (a.images - c.images).abs().max() > 1e-4
    assert a.images.abs().max() <= 1 and a.labels is None
    assert a.channel_uses.tolist() == [32.0, 32.0] and a.channel_uses.dtype == torch.float64
    assert a.bits.tolist() == [4.0, 4.0]
    assert a.info["channel_uses_per_pixel"] == 32 / 1024 and a.info["oracle"] is False
    assert system.config()["steps"] == 3 and system.stochastic


def test_oracle_system_is_marked(folder):
    system = build_system(f"diffjscc-oracle:{folder}", SystemOptions(steps=2))
    out = system.run(_batch(), "awgn", 10.0, torch.Generator().manual_seed(0))
    assert out.info["oracle"] is True and system.config()["oracle"] is True and system.name == "diffjscc-oracle"
    assert torch.isfinite(out.images).all()


def test_compatibility_and_bad_input(folder):
    system = build_system(f"diffjscc:{folder}")
    assert "32x32" in system.compatible(_batch(size=64))
    mixed = _batch()
    mixed.labels[0, 0, 0] = 1
    assert "one class per image" in system.compatible(mixed)
    assert "outside the model's 10 classes" in system.compatible(_batch(classes=(3, 12)))
    with pytest.raises(ValueError, match="one class per image"):
        system.run(mixed, "awgn", 5.0)
    with pytest.raises(ValueError, match="does not support channel 'legacy'"):
        system.run(_batch(), "legacy", 5.0)
    with pytest.raises(ValueError, match="NaN"):
        system.run(_batch(), "awgn", math.nan)
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        build_system(f"diffjscc:{folder.parent / 'nothing'}")
    assert class_labels_from_maps(torch.zeros(2, 0, 0, dtype=torch.long)) is None


def test_class_free_model_takes_any_map(tmp_path):
    tiny_model(class_label="none").save_pretrained(tmp_path / "m")
    system = DiffJSCCSystem.from_pretrained(tmp_path / "m", steps=2)
    batch = _batch()
    batch.labels[0, :4] = 1
    assert system.compatible(batch) is None
    out = system.run(batch, "awgn", 0.0, torch.Generator().manual_seed(0))
    assert out.bits is None and out.info["class_label"] == "none"


def test_evaluate_helper(tmp_path):
    root = tmp_path / "fm"
    root.mkdir()
    rng = np.random.default_rng(0)
    write_idx(root / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (3, 28, 28)))
    write_idx(root / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, 3))
    model = tiny_model(sample_steps=2)
    records = evaluate_diffjscc(model, FashionMNIST(root, split="test"), [0.0, 20.0], num_images=3, batch_size=2)
    assert [r["snr_db"] for r in records] == [0.0, 20.0]
    assert all(r["n"] == 3 and 0 < r["psnr"] < 60 and -1 <= r["ssim"] <= 1 and r["oracle"] is False
               for r in records)


class _Classes(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict:
        return {"image": images(1, seed=i)[0], "class": torch.tensor(i % 3)}


def test_platform_trainer_trains_the_encoder_with_ema(tmp_path):
    """The platform's Trainer with diffjscc_condition: the encoder is trained through the
    channel, kept in the EMA, and the output loads as a DiffJSCC model that the system runs."""
    from gensemcom.models.diffjscc import DiffJSCC, diffjscc_condition
    from gensemcom.train import TrainConfig, Trainer

    cfg = tiny_model(snr_input=True).config
    cond = diffjscc_condition(cfg)
    enc0 = {k: v.clone() for k, v in cond.state_dict().items()}
    tr = Trainer(cfg.unet, cfg.diffusion, _Classes(), 10,
                 TrainConfig(out_dir=str(tmp_path), steps=2, batch_size=2, lr=1e-3, save_interval=2, log_interval=1,
                             seed=3, ema_rate=0.5), condition=cond)
    out = tr.train(progress=False)
    assert out["step"] == 2 and math.isfinite(out["loss"])
    moved = [k for k, v in tr.condition.state_dict().items() if not torch.equal(v, enc0[k])]
    assert any(k.startswith("encoder.") and "weight" in k for k in moved)
    model = DiffJSCC.from_trainer_output(tmp_path / "model")
    assert DiffJSCC.from_pretrained(tmp_path / "model").config == model.config
    for k, v in tr.ema_condition.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v)
    for k, v in tr.ema.state_dict().items():
        torch.testing.assert_close(model.unet.state_dict()[k], v)
    system = DiffJSCCSystem(model, steps=2)
    res = system.run(_batch(), "awgn", 10.0, torch.Generator().manual_seed(0))
    assert torch.isfinite(res.images).all()


def test_trainer_from_the_seed_yaml(tmp_path):
    """`gensemcom train`'s path for Diff-JSCC: the seed's yaml keys (here the tiny reference
    configuration) give the model, process and training settings; the run loads back."""
    yaml = pytest.importorskip("yaml")
    import json
    from pathlib import Path

    from gensemcom.models.diffjscc import DiffJSCC
    from gensemcom.systems.diffjscc import diffjscc_trainer

    cfg = json.loads((Path(__file__).parent / "data" / "diffjscc" / "diffjscc_tiny_public_config.json").read_text())
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg["yaml_tiny"]))
    tr = diffjscc_trainer(tmp_path / "tiny.yaml", _Classes(), tmp_path / "run",
                          train={"steps": 1, "batch_size": 2, "save_interval": 1, "snr_input": True},
                          device="cpu")
    assert tr.cfg.lr == cfg["yaml_tiny"]["lr"] and tr.cfg.ema_rate == cfg["yaml_tiny"]["ema_rate"]
    assert tr.diffusion_config.steps == cfg["yaml_tiny"]["diffusion_steps"]
    assert tr.condition.diffjscc_config.compat == "none" and tr.model_config.vector_dim == 65
    tr.train(progress=False)
    model = DiffJSCC.from_trainer_output(tmp_path / "run" / "model")
    assert model.config.snr_input and model.config.encoder.kind == cfg["yaml_tiny"]["encoder_type"]
