"""A small, exactly resumable training loop for the networks that are not diffusion models
(Deep JSCC, the segmenter).

::

    for step in range(start, config.steps):
        batch = batches(step, generator)                 # the caller's data (and augmentation)
        loss, metrics = loss_fn(model, batch, generator)  # the caller's objective
        AdamW step (lr: constant or cosine, with optional warm-up)
        every log_every steps        -> one JSON line in out/log.jsonl
        every checkpoint_every steps -> out/checkpoints/step_XXXXXXX/ + latest.json
    final weights -> out/model/ (model.safetensors + config.json)

- **One generator.** Every random draw of the run (batch indices, augmentation, channel noise,
  SNRs) must come from the ``torch.Generator`` handed to ``batches`` and ``loss_fn``; it is seeded
  with ``config.seed`` and its state is saved in every checkpoint (with torch's global RNG state,
  for layers such as dropout). Parameter initialisation is the caller's: build the model after
  ``torch.manual_seed(seed)``.
- **Atomic checkpoints.** A checkpoint folder (``model.safetensors``, ``state.pt`` with the
  optimiser, generator and step, ``meta.json``) is written under a temporary name and renamed into
  place, then ``latest.json`` is replaced atomically. A run killed at any moment resumes from the
  last complete checkpoint and ends with bit-identical weights to an uninterrupted run (on the
  same machine and torch build). ``state.pt`` is read with ``weights_only=True``.
- On resume, log lines written after the checkpoint are dropped (those steps are redone).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .models.io import load_checkpoint, save_module
from .runs import CheckpointFolder, atomic_write, trim_log

__all__ = ["FitConfig", "fit", "latest_checkpoint", "lr_at"]

LossFn = Callable[[nn.Module, Any, torch.Generator], "tuple[torch.Tensor, dict[str, float]]"]
Batches = Callable[[int, torch.Generator], Any]

SCHEDULES = ("constant", "cosine")


@dataclass
class FitConfig:
    """Settings of a :func:`fit` run (saved in ``fit_config.json`` and every checkpoint).

    Attributes:
        out: run folder (``checkpoints/``, ``log.jsonl``, ``model/``).
        steps: optimiser steps to reach (a resumed run continues up to this number; with the
            cosine schedule, raising it on resume stretches the remaining decay).
        batch_size: passed on to the caller through ``config``; recorded for the log.
        lr, weight_decay: AdamW settings (peak learning rate).
        seed: seed of the run's generator.
        checkpoint_every: steps between checkpoints (a checkpoint is also written at the end).
        log_every: steps between lines of ``log.jsonl``.
        schedule: ``"constant"`` or ``"cosine"`` (decay to ``min_lr_ratio * lr`` at ``steps``).
        warmup: linear warm-up steps from ``lr / warmup`` to ``lr``.
        min_lr_ratio: the cosine schedule's final fraction of ``lr``.
        grad_clip: clip the gradient norm to this value (0: no clipping).
        keep_checkpoints: how many checkpoint folders to keep.
    """

    out: str
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    checkpoint_every: int = 200
    log_every: int = 10
    schedule: str = "cosine"
    warmup: int = 0
    min_lr_ratio: float = 0.05
    grad_clip: float = 0.0
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError(f"steps must be >= 0 and batch_size >= 1, got {self.steps}, {self.batch_size}")
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError("checkpoint_every and log_every must be >= 1")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not (self.lr > 0 and self.weight_decay >= 0 and self.warmup >= 0 and 0 <= self.min_lr_ratio <= 1):
            raise ValueError("need lr > 0, weight_decay >= 0, warmup >= 0, 0 <= min_lr_ratio <= 1")


def lr_at(config: FitConfig, step: int) -> float:
    """Learning rate of optimiser step ``step`` (0-based): warm-up, then constant or cosine."""
    if config.warmup and step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    if config.schedule == "constant":
        return config.lr
    span = max(config.steps - config.warmup, 1)
    t = min(max(step - config.warmup, 0) / span, 1.0)
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def latest_checkpoint(out: str | os.PathLike) -> Path | None:
    """The checkpoint folder ``out/checkpoints/latest.json`` points at, or None."""
    return CheckpointFolder(out).latest()


def _default_save(model: nn.Module, directory: Path, extra: dict[str, Any]) -> None:
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(directory, extra=extra)
        return
    cfg = getattr(model, "config", None)
    save_module(directory, model, cfg.to_dict() if hasattr(cfg, "to_dict") else {},
                kind=type(model).__name__, extra=extra)


def _save_checkpoint(out: Path, config: FitConfig, model: nn.Module, opt: torch.optim.Optimizer,
                     gen: torch.Generator, step: int) -> Path:
    meta: dict[str, Any] = {"step": step, "fit": asdict(config)}
    cfg = getattr(model, "config", None)
    if hasattr(cfg, "to_dict"):
        meta["model"] = cfg.to_dict()
    state = {"step": step, "optimizer": opt.state_dict(), "generator": gen.get_state(),
             "torch_rng": torch.get_rng_state()}
    return CheckpointFolder(out, keep=config.keep_checkpoints).save(step, {"model": model.state_dict()}, state, meta)


def _load_checkpoint(path: Path, config: FitConfig, model: nn.Module, opt: torch.optim.Optimizer,
                     gen: torch.Generator) -> int:
    meta = json.loads((path / "meta.json").read_text())
    for key in ("seed", "batch_size"):
        if meta["fit"].get(key) != getattr(config, key):
            raise ValueError(f"checkpoint {path} was written with {key}={meta['fit'].get(key)}, this run has "
                             f"{key}={getattr(config, key)}; use the same value or another --out")
    load_checkpoint(model, path / "model.safetensors")
    state = CheckpointFolder.load_state(path)
    opt.load_state_dict(state["optimizer"])
    gen.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"])


def fit(model: nn.Module, loss_fn: LossFn, batches: Batches, config: FitConfig, progress: bool = True,
        resume: bool = True, save_model: Callable[[nn.Module, Path, dict[str, Any]], None] | None = None,
        on_step: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Train ``model`` to ``config.steps`` optimiser steps (see the module docstring).

    Args:
        model: the network (on the device it should train on).
        loss_fn: ``(model, batch, generator) -> (scalar loss tensor, {name: float})``.
        batches: ``(step, generator) -> batch`` (any object ``loss_fn`` understands).
        config: the run settings.
        progress: show a tqdm bar with the loss.
        resume: continue from ``out/checkpoints/latest.json`` when present.
        save_model: ``(model, folder, extra) -> None`` writes the final model (default: the
            model's ``save_pretrained(folder, extra=extra)``, else :func:`save_module` with its
            ``config.to_dict()``).
        on_step: called as ``on_step(step, metrics)`` after each optimiser step and checkpoint.

    Returns:
        ``{"step", "loss", <metrics>, "seconds", "model_dir"}`` of the last step.
    """
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    step = 0
    if resume and (ck := latest_checkpoint(out)) is not None:
        step = _load_checkpoint(ck, config, model, opt, gen)
    log = out / "log.jsonl"
    trim_log(log, step)
    atomic_write(out / "fit_config.json", lambda p: Path(p).write_text(json.dumps(asdict(config), indent=2) + "\n"))

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=config.steps, initial=step, desc=out.name or "fit", unit="step")
    model.train()
    last: dict[str, float] = {}
    t_start = t_last = time.perf_counter()
    steps_since = 0
    try:
        while step < config.steps:
            lr = lr_at(config, step)
            for group in opt.param_groups:
                group["lr"] = lr
            batch = batches(step, gen)
            opt.zero_grad(set_to_none=True)
            loss, metrics = loss_fn(model, batch, gen)
            loss.backward()
            if config.grad_clip > 0:
                nn.utils.clip_grad_norm_(params, config.grad_clip)
            opt.step()
            step += 1
            steps_since += 1
            last = {"loss": float(loss.detach()), **{k: float(v) for k, v in metrics.items()}}
            if not math.isfinite(last["loss"]):
                raise FloatingPointError(f"non-finite loss at step {step}: {last}")
            if step % config.log_every == 0 or step == config.steps:
                now = time.perf_counter()
                record = {"step": step, **{k: round(v, 6) for k, v in last.items()}, "lr": lr,
                          "s_per_step": round((now - t_last) / steps_since, 4)}
                with open(log, "a") as f:
                    f.write(json.dumps(record) + "\n")
                t_last, steps_since = now, 0
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{last['loss']:.4f}")
            if step % config.checkpoint_every == 0 or step == config.steps:
                _save_checkpoint(out, config, model, opt, gen, step)
            if on_step is not None:
                on_step(step, last)
    finally:
        if bar is not None:
            bar.close()
    model.eval()
    model_dir = out / "model"
    (save_model or _default_save)(model, model_dir, {"trained_steps": step})
    return {"step": step, **last, "seconds": round(time.perf_counter() - t_start, 3), "model_dir": str(model_dir)}
