"""The platform every system plugs into: the registry's contract, samplers as objects, and one
trainer for the three shapes of receiver (SPADE map, map + concatenated image, latent + class)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from gensemcom.conditioning import CoarseImageCondition, LatentCondition
from gensemcom.data.synthetic import SyntheticScenes
from gensemcom.diffusion import DDIMSampler, DDPMSampler, DiffusionConfig, GaussianDiffusion, Sampler
from gensemcom.diffusion.schedules import linear_betas
from gensemcom.models.semantic_unet import SemanticUNet, SemanticUNetConfig
from gensemcom.systems.base import Batch, SystemOutput
from gensemcom.systems.registry import SystemOptions, available_systems, build_system
from gensemcom.systems.transport import check_snr
from gensemcom.train import TrainConfig, Trainer

H, W = 32, 64


def _batch(n: int = 2, seed: int = 4, size: tuple[int, int] = (H, W)) -> Batch:
    data = SyntheticScenes(n, *size, seed=seed)
    items = [data[i] for i in range(n)]
    return Batch(torch.stack([it["image"] for it in items]), torch.stack([it["label"] for it in items]),
                 torch.stack([it["instance"] for it in items]), [it["path"] for it in items], data.num_classes)


# ---------------------------------------------------------------------------- registry contract
def _contract_specs() -> list[str]:
    return [info.name for info in available_systems()]


def test_registry_lists_described_systems():
    infos = available_systems()
    names = [i.name for i in infos]
    assert len(names) == len(set(names)) and {"gesco", "gesco-map", "gesco-digital", "deepjscc", "map+ldpc",
                                              "jpeg+ldpc", "hevc+capacity"} <= set(names)
    for info in infos:
        assert info.description and info.sends and info.receiver and info.cost, info.name
        assert info.usage.split("[")[0] == info.name


@pytest.mark.slow
@pytest.mark.parametrize("spec", _contract_specs())
def test_every_registered_system_runs_through(spec, one_thread):
    """Shapes, cost fields, determinism under a seed, and a clear error for an unknown channel."""
    system = build_system(spec, SystemOptions(steps=2, bandwidth=0.5))
    batch = _batch(size=(64, 128))  # the bundled models' size
    reason = system.compatible(batch)
    if reason is not None:
        assert isinstance(reason, str) and reason
        return
    channel = system.channels[0]
    runs = [system.run(batch, channel, 10.0, torch.Generator().manual_seed(7)) for _ in range(2)]
    out = runs[0]
    assert isinstance(out, SystemOutput)
    assert out.images is not None or out.labels is not None
    if out.images is not None:
        assert out.images.shape == batch.images.shape and torch.isfinite(out.images).all()
        assert torch.equal(out.images, runs[1].images)
    if out.labels is not None:
        assert out.labels.shape == batch.labels.shape and torch.equal(out.labels, runs[1].labels)
    assert out.channel_uses.shape == (batch.size,) and out.channel_uses.dtype == torch.float64
    assert (out.channel_uses >= 0).all()
    if out.bits is not None:
        assert out.bits.shape == (batch.size,) and (out.bits >= 0).all()
    config = system.config()
    assert isinstance(config, dict) and config
    with pytest.raises(ValueError, match="does not support channel 'carrier-pigeon'"):
        system.run(batch, "carrier-pigeon", 10.0, torch.Generator().manual_seed(7))


def test_unknown_systems_name_the_problem():
    with pytest.raises(ValueError, match="unknown system 'gsco'.*registered: .*gesco"):
        build_system("gsco")
    with pytest.raises(ValueError, match="unknown codec 'gif'"):
        build_system("gif+ldpc")
    with pytest.raises(ValueError, match="gesco-map takes no argument"):
        build_system("gesco-map:x")


@pytest.mark.parametrize("value,expected", [(np.float32(5.0), 5.0), (np.int64(-3), -3.0), (torch.tensor(2.5), 2.5),
                                            (7, 7.0), (math.inf, math.inf)])
def test_snr_accepts_any_real_number(value, expected):
    assert check_snr(value) == expected


@pytest.mark.parametrize("value", [math.nan, -math.inf, "ten", None, True, np.float64("nan")])
def test_snr_rejects_what_is_not_one(value):
    with pytest.raises(ValueError, match="snr_db (must be a real number|is NaN|= -inf)"):
        check_snr(value)


def test_systems_accept_numpy_snr():
    system = build_system("jpeg+capacity")
    batch = _batch()
    a = system.run(batch, "awgn", np.float32(10.0), torch.Generator().manual_seed(1))
    b = system.run(batch, "awgn", 10.0, torch.Generator().manual_seed(1))
    assert torch.equal(a.images, b.images)


def test_gesco_unlabelled_rule_and_bad_ids():
    from gensemcom.systems.gesco import gesco_map
    labels = torch.tensor([[[0, 1], [255, 2]]])
    y = gesco_map(labels, 3)
    assert torch.equal(y.argmax(1), torch.tensor([[[0, 1], [0, 2]]]))  # ignore -> class 0
    with pytest.raises(ValueError, match=r"label ids span \[0, 7\].*3 classes"):
        gesco_map(torch.tensor([[[0, 7]]]), 3)


# ---------------------------------------------------------------------------- samplers as objects
def _tiny_model(**kw) -> SemanticUNet:
    base = dict(label_channels=5, image_size=16, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                attention_resolutions=(8,), num_head_channels=32, layout="sdm", spade_hidden=16)
    base.update(kw)
    torch.manual_seed(0)
    return SemanticUNet(SemanticUNetConfig(**base)).eval()


def test_sampler_objects_equal_method_names(one_thread):
    model = _tiny_model()
    d = GaussianDiffusion(linear_betas(1000), "ddim5")
    y = torch.rand(2, 5, 16, 16)
    z = torch.randn(2, 3, 16, 16)
    for name, obj in (("ddim", DDIMSampler()), ("ddpm", DDPMSampler())):
        a = d.sample(model, y, noise=z, guidance_scale=2.0, method=name, generator=torch.Generator().manual_seed(3))
        b = d.sample(model, y, noise=z, guidance_scale=2.0, method=obj, generator=torch.Generator().manual_seed(3))
        assert torch.equal(a, b)


def test_a_new_sampler_is_one_class(one_thread):
    """A sampler that takes the posterior mean (DDPM without noise) written as one class: its
    first step equals the closed form from p_mean_variance."""

    class MeanSampler(Sampler):
        name = "mean"

        def step(self, diffusion, out, x_t, t, generator):
            return out["mean"]

    model = _tiny_model()
    d = GaussianDiffusion(linear_betas(1000), "ddim4")
    y, z = torch.rand(1, 5, 16, 16), torch.randn(1, 3, 16, 16)
    seen = []
    d.sample(model, y, noise=z, method=MeanSampler(), callback=lambda i, x, o: seen.append((i, x)))
    with torch.no_grad():
        t = torch.tensor([3])
        expected = d.p_mean_variance(model(z, d.model_timesteps(t), y), z, t)["mean"]
    assert [i for i, _ in seen] == [3, 2, 1, 0]
    torch.testing.assert_close(seen[0][1], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    (dict(guidance_scale=float("nan")), "guidance_scale must be finite"),
    (dict(y=torch.full((1, 5, 16, 16), float("nan"))), "semantic map y contains NaN"),
    (dict(y=None), "pass shape="),
    (dict(start_step=9), r"start_step must be in \[0, 3\]"),
])
def test_sampler_bad_input(kwargs, match):
    model = _tiny_model()
    d = GaussianDiffusion(linear_betas(1000), "ddim4")
    args = dict(y=torch.rand(1, 5, 16, 16))
    args.update(kwargs)
    y = args.pop("y")
    with pytest.raises(ValueError, match=match):
        d.sample(model, y, **args)


# ---------------------------------------------------------------------------- one trainer, three shapes
def _train_cfg(tmp_path, steps: int, **kw) -> TrainConfig:
    return TrainConfig(out_dir=str(tmp_path), steps=steps, batch_size=2, lr=1e-3, save_interval=2, log_interval=1,
                       seed=3, ema_rate=0.9, **kw)


def test_trainer_spic_shaped_receiver(tmp_path, one_thread):
    """Map through SPADE + the coarse image concatenated to x_t, condition dropout on the map."""
    data = SyntheticScenes(4, H, W, seed=1)
    mc = SemanticUNetConfig(label_channels=data.num_classes, image_size=32, model_channels=32, channel_mult=(1, 2),
                            num_res_blocks=1, attention_resolutions=(8,), num_head_channels=32, layout="sdm",
                            spade_hidden=16, in_channels=3, concat_channels=3)
    cond = CoarseImageCondition(data.num_classes, coarse_size=(8, 16))
    tr = Trainer(mc, DiffusionConfig(loss="hybrid"), data, data.num_classes,
                 _train_cfg(tmp_path, 2, cond_drop_prob=0.2), condition=cond)
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    out = tr.train(progress=False)
    assert out["step"] == 2 and math.isfinite(out["loss"]) and "vb" in out
    assert any(not torch.equal(before[k], v) for k, v in tr.model.state_dict().items())
    # the condition is what SPIC's "resize" path builds: area down, bilinear up
    batch = cond.collate([data[0], data[1]])
    c = cond(batch, torch.Generator().manual_seed(0))
    low = torch.nn.functional.interpolate(batch["image"], (8, 16), mode="area")
    torch.testing.assert_close(c.model_kwargs["concat"],
                               torch.nn.functional.interpolate(low, (H, W), mode="bilinear"))
    with pytest.raises(ValueError, match="concat_channels=3"):
        Trainer(SemanticUNetConfig(**{**mc.to_dict(), "concat_channels": 0}), DiffusionConfig(), data,
                data.num_classes, _train_cfg(tmp_path / "x", 1), condition=cond)


class _ClassScenes(torch.utils.data.Dataset):
    """Synthetic scenes with a class label (the number of cars, capped): Diff-JSCC's item shape."""

    def __init__(self, n: int) -> None:
        self.scenes = SyntheticScenes(n, 16, 16, seed=2)

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i: int) -> dict:
        it = self.scenes[i]
        return {"image": it["image"], "class": torch.tensor(i % 3)}


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 4, stride=4)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))  # (B, 4, 4, 4) -> 64 values


def _jscc_trainer(out, steps: int) -> Trainer:
    mc = SemanticUNetConfig(label_channels=0, image_size=16, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                            attention_resolutions=(8,), num_head_channels=32, layout="sdm", vector_dim=64,
                            num_classes=3)
    torch.manual_seed(5)
    cond = LatentCondition(_Encoder(), channel="awgn", snr_range_db=(0.0, 10.0), class_labels=True)
    return Trainer(mc, DiffusionConfig(steps=100, schedule="cosine", loss="rescaled_hybrid"), _ClassScenes(6), 3,
                   _train_cfg(out, steps), condition=cond)


def test_trainer_diffjscc_shaped_receiver_end_to_end(tmp_path, one_thread):
    """No map; the encoder's latent goes through AWGN into the time embedding with a class label;
    the encoder is trained through the channel, kept in the EMA and the checkpoint, and a killed
    run resumes exactly."""
    tr = _jscc_trainer(tmp_path / "a", 4)
    enc0 = {k: v.clone() for k, v in tr.condition.state_dict().items()}
    full = tr.train(progress=False)
    assert not torch.equal(enc0["encoder.conv.weight"], tr.condition.state_dict()["encoder.conv.weight"])
    ck = tr.latest_checkpoint()
    saved = load_file(str(ck / "ema_condition.safetensors"))
    torch.testing.assert_close(saved["encoder.conv.weight"], tr.ema_condition.state_dict()["encoder.conv.weight"])
    assert (tmp_path / "a" / "model" / "condition.safetensors").is_file()

    half = _jscc_trainer(tmp_path / "b", 2)
    half.train(progress=False)
    resumed = _jscc_trainer(tmp_path / "b", 4)
    out = resumed.train(progress=False)
    assert out["loss"] == full["loss"]
    for k, v in tr.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    for k, v in tr.ema_condition.state_dict().items():
        assert torch.equal(v, resumed.ema_condition.state_dict()[k]), k


def test_latent_condition_rejects_a_map_network(tmp_path):
    mc = SemanticUNetConfig(label_channels=5, image_size=16, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                            attention_resolutions=(8,), num_head_channels=32, layout="sdm")
    with pytest.raises(ValueError, match="label_channels=0"):
        Trainer(mc, DiffusionConfig(), _ClassScenes(2), 3, _train_cfg(tmp_path, 1),
                condition=LatentCondition(_Encoder()))


@pytest.mark.parametrize("call,match", [
    (lambda d, m, x, y: d.q_sample(x, 4, torch.randn_like(x)), r"0\.\.3, got \[4\]"),
    (lambda d, m, x, y: d.training_losses(m, x, torch.tensor([-1]), y), r"0\.\.3, got \[-1\]"),
    (lambda d, m, x, y: d.invert(m, x, y, end_step=7), r"end_step must be in \[0, 3\]"),
    (lambda d, m, x, y: d.p_sample(m, x, 9, y), r"0\.\.3, got \[9\]"),
])
def test_timesteps_outside_the_process_are_rejected(call, match):
    model = _tiny_model()
    d = GaussianDiffusion(linear_betas(1000), "ddim4")
    with pytest.raises(ValueError, match=match):
        call(d, model, torch.rand(1, 3, 16, 16) * 2 - 1, torch.rand(1, 5, 16, 16))


def test_no_import_cycle_between_semantics_and_data():
    import ast
    import inspect

    import gensemcom.semantics as semantics
    tree = ast.parse(inspect.getsource(semantics))
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    assert not any(m.startswith("data") for m in imported), imported


def test_capacity_link_at_a_huge_finite_snr():
    """1e6 dB overflowed 10 ** (snr / 10); the capacity is computed in the log domain instead."""
    from gensemcom.channels.coded import capacity_bits, capacity_uses
    assert capacity_bits(10, 1e6) == math.floor(10 * 1e5 * math.log2(10.0))
    assert capacity_uses(8000, 1e6) == 1
    out = build_system("jpeg+capacity").run(_batch(), "awgn", 1e6, torch.Generator().manual_seed(0))
    assert not out.lost.any()
