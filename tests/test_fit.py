"""The generic training loop: learning, checkpoints, bit-exact resume, logs, schedule, errors."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from gensemcom.fit import FitConfig, fit, latest_checkpoint, lr_at



pytestmark = pytest.mark.usefixtures("one_thread")

class _Killed(Exception):
    pass


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(0.2), nn.Linear(16, 1))


def _batches(step: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(8, 4, generator=g)
    return x, x.sum(dim=1, keepdim=True) + 0.01 * torch.randn(8, 1, generator=g)


def _loss(model: nn.Module, batch, g: torch.Generator):
    x, y = batch
    x = x + 0.01 * torch.randn(x.shape, generator=g)  # the generator is used inside the loss too
    loss = nn.functional.mse_loss(model(x), y)
    return loss, {"rmse": loss.detach().sqrt().item()}


def _cfg(out, **kw) -> FitConfig:
    base = dict(out=str(out), steps=9, batch_size=8, lr=1e-2, seed=3, checkpoint_every=3, log_every=2, warmup=2)
    return FitConfig(**{**base, **kw})


def _strip_times(path) -> list[dict]:
    return [{k: v for k, v in json.loads(ln).items() if k != "s_per_step"} for ln in path.read_text().splitlines()]


def test_fit_learns_and_writes_its_files(tmp_path):
    out = tmp_path / "run"
    result = fit(_model(), _loss, _batches, _cfg(out, steps=60, checkpoint_every=20, log_every=10), progress=False)
    log = _strip_times(out / "log.jsonl")
    assert [r["step"] for r in log] == [10, 20, 30, 40, 50, 60]
    assert log[-1]["loss"] < 0.5 * log[0]["loss"] and "rmse" in log[0] and "lr" in log[0]
    assert result["step"] == 60 and result["model_dir"] == str(out / "model")
    assert (out / "model" / "model.safetensors").is_file() and (out / "model" / "config.json").is_file()
    assert sorted(p.name for p in (out / "checkpoints").glob("step_*")) == ["step_0000040", "step_0000060"]
    assert latest_checkpoint(out) == out / "checkpoints" / "step_0000060"
    state = torch.load(out / "checkpoints" / "step_0000060" / "state.pt", weights_only=True)
    assert state["step"] == 60 and {"optimizer", "generator", "torch_rng"} <= set(state)
    assert json.loads((out / "fit_config.json").read_text())["seed"] == 3


def test_resume_after_a_kill_is_bit_exact(tmp_path):
    ref_model = _model()
    fit(ref_model, _loss, _batches, _cfg(tmp_path / "ref"), progress=False)

    def kill_at_5(step, metrics):
        if step == 5:
            raise _Killed

    model = _model()
    with pytest.raises(_Killed):
        fit(model, _loss, _batches, _cfg(tmp_path / "run"), progress=False, on_step=kill_at_5)
    assert latest_checkpoint(tmp_path / "run").name == "step_0000003"
    torch.manual_seed(1234)  # a different process state: the resumed run must not depend on it
    resumed = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(0.2), nn.Linear(16, 1))
    result = fit(resumed, _loss, _batches, _cfg(tmp_path / "run"), progress=False)
    assert result["step"] == 9
    for (k, a), b in zip(ref_model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert _strip_times(tmp_path / "run" / "log.jsonl") == _strip_times(tmp_path / "ref" / "log.jsonl")


def test_resume_with_other_seed_is_refused(tmp_path):
    fit(_model(), _loss, _batches, _cfg(tmp_path, steps=3), progress=False)
    with pytest.raises(ValueError, match="seed=3"):
        fit(_model(), _loss, _batches, _cfg(tmp_path, steps=6, seed=4), progress=False)
    # resume=False starts afresh
    assert fit(_model(), _loss, _batches, _cfg(tmp_path, steps=2, seed=4), progress=False, resume=False)["step"] == 2


def test_schedule():
    cfg = FitConfig(out="x", steps=100, lr=1.0, warmup=10, min_lr_ratio=0.1)
    assert lr_at(cfg, 0) == pytest.approx(0.1) and lr_at(cfg, 9) == pytest.approx(1.0)
    assert lr_at(cfg, 10) == pytest.approx(1.0) and lr_at(cfg, 100) == pytest.approx(0.1)
    assert lr_at(cfg, 55) == pytest.approx(0.55)
    assert lr_at(FitConfig(out="x", schedule="constant"), 500) == 1e-3
    with pytest.raises(ValueError, match="schedule"):
        FitConfig(out="x", schedule="linear")


def test_non_finite_loss_stops_the_run(tmp_path):
    def bad(model, batch, g):
        return model(batch[0]).sum() * float("nan"), {}

    with pytest.raises(FloatingPointError, match="step 1"):
        fit(_model(), bad, _batches, _cfg(tmp_path), progress=False)
