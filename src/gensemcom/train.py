"""One training loop for the diffusion receivers of every system.

::

    dataset[i] -> condition.collate -> batch {image, label, instance?, class?}
        -> condition(batch, generator): x0, y (map or None), model_kwargs (concat / vector / class)
           (GESCO: one-hot + edges, noise-aware; SPIC: + coarse image; Diff-JSCC: encoder latent
            through the channel, class label; see :mod:`gensemcom.conditioning`)
        -> [condition dropout on y] -> t ~ U{0..N-1}, noise -> diffusion.training_losses
        -> AdamW step (network + the condition's own parameters) -> EMA of both

- **Reproducible and resumable.** All randomness of a run (data order, timesteps, noise,
  dropout, channel noise) comes from one seeded ``torch.Generator`` per process, whose state is
  saved in every checkpoint together with the model, the EMA weights, the optimiser and the
  step. Checkpoints are written to a temporary folder and renamed into place, then
  ``checkpoints/latest.json`` is replaced atomically: a run killed at any moment resumes from
  the last complete checkpoint and continues exactly as an uninterrupted run would.
- **Data order** is a function of (seed, step): batch ``k`` is read from a seeded permutation
  of the epoch it falls in, so a resumed run reads the same images in the same order.
- **Several processes**: under ``torchrun`` (``WORLD_SIZE > 1``) the model is wrapped in
  DistributedDataParallel (gloo on CPU, NCCL on GPU); each rank reads its share of every
  global batch and has its own generator (seed + rank); rank 0 writes checkpoints and logs.
- **Mixed precision**: ``amp="bf16"|"fp16"`` on GPU (fp16 with a gradient scaler); on CPU the
  default is float32 (this CPU has no fast bf16).
- Logs: JSON lines in ``log.jsonl`` (step, loss terms, lr, images/s); a tqdm progress bar.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .conditioning import GESCO_TRAIN_NOISE_STDS, Condition, SemanticMapCondition
from .diffusion.gaussian import DiffusionConfig, GaussianDiffusion
from .models.io import save_pretrained
from .models.semantic_unet import SemanticUNet, SemanticUNetConfig
from .runs import CheckpointFolder, atomic_write, trim_log

__all__ = ["TrainConfig", "Trainer", "GESCO_TRAIN_NOISE_STDS", "step_batch_indices"]


@dataclass
class TrainConfig:
    """Settings of a training run (saved in ``train_config.json`` and in every checkpoint).

    Attributes:
        out_dir: run folder (checkpoints, logs, the final model).
        steps: optimiser steps to reach (a resumed run continues to this number).
        batch_size: global batch per optimiser step (split over processes).
        grad_accum: micro-batches per optimiser step (gradient accumulation).
        lr, weight_decay: AdamW settings.
        ema_rate: EMA decay, updated after every optimiser step.
        cond_drop_prob: probability of zeroing a sample's whole map (for guidance).
        noise_aware: ``"none"``; ``"gesco"`` (GESCO's std list, noise broadcast over channels);
            ``"channel"`` (the map through ``train_channel`` at an SNR drawn uniformly per sample
            from ``snr_range_db``).
        train_channel: ``"awgn"`` | ``"rayleigh"`` for ``noise_aware="channel"``.
        snr_range_db: (low, high) dB for ``noise_aware="channel"``.
        amp: ``"none"``, ``"bf16"``, ``"fp16"`` (the last two need a GPU).
        save_interval, log_interval, keep_checkpoints: in optimiser steps.
        seed: the run's seed.
        num_workers: DataLoader workers.
        instance_mode: passed to the semantic-map builder (``"exact"`` or ``"reference_8bit"``).
    """

    out_dir: str
    steps: int = 1000
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    ema_rate: float = 0.9999
    cond_drop_prob: float = 0.0
    noise_aware: str = "none"
    train_channel: str = "awgn"
    snr_range_db: tuple[float, float] = (0.0, 20.0)
    amp: str = "none"
    save_interval: int = 1000
    log_interval: int = 10
    keep_checkpoints: int = 2
    seed: int = 0
    num_workers: int = 0
    instance_mode: str = "exact"
    grad_clip: float = 0.0

    def __post_init__(self) -> None:
        self.snr_range_db = tuple(float(v) for v in self.snr_range_db)  # type: ignore[assignment]
        problems = []
        if self.steps < 1 or self.batch_size < 1 or self.grad_accum < 1:
            problems.append("steps, batch_size and grad_accum must be >= 1")
        if self.batch_size % self.grad_accum:
            problems.append(f"batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}")
        if self.noise_aware not in ("none", "gesco", "channel"):
            problems.append(f"noise_aware must be 'none', 'gesco' or 'channel', got {self.noise_aware!r}")
        if self.amp not in ("none", "bf16", "fp16"):
            problems.append(f"amp must be 'none', 'bf16' or 'fp16', got {self.amp!r}")
        if not 0.0 <= self.cond_drop_prob < 1.0:
            problems.append(f"cond_drop_prob must be in [0, 1), got {self.cond_drop_prob}")
        if not 0.0 <= self.ema_rate < 1.0:
            problems.append(f"ema_rate must be in [0, 1), got {self.ema_rate}")
        if self.save_interval < 1 or self.log_interval < 1:
            problems.append("save_interval and log_interval must be >= 1")
        if problems:
            raise ValueError("invalid TrainConfig: " + "; ".join(problems))


def step_batch_indices(step: int, batch_size: int, n: int, seed: int) -> list[tuple[int, int]]:
    """(epoch, dataset index) pairs of global batch ``step``: consecutive slices of per-epoch
    permutations seeded by (seed, epoch), so the order depends only on (seed, step)."""
    out: list[tuple[int, int]] = []
    pos = step * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        take = min(batch_size - len(out), n - offset)
        out.extend((epoch, i) for i in perm[offset:offset + take].tolist())
        pos += take
    return out


class _EpochView(torch.utils.data.Dataset):
    """Reads ``dataset`` by (epoch, index) keys; a dataset with ``get(index, generator)`` draws
    its augmentation from a generator derived from (seed, epoch, index): different each epoch,
    the same in a resumed run, and independent of workers and read order."""

    def __init__(self, dataset: torch.utils.data.Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        get = getattr(self.dataset, "get", None)
        if get is None:
            return self.dataset[index]
        from .runs import derive_seed

        return get(index, torch.Generator().manual_seed(derive_seed(self.seed, epoch, index)))


def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class _MicroBatchSampler:
    """Index lists of one rank's micro-batches, step after step, from ``start_step`` on."""

    def __init__(self, n: int, batch_size: int, seed: int, start_step: int, rank: int,
                 per_rank: int, micro: int) -> None:
        self.n, self.batch_size, self.seed, self.start = n, batch_size, seed, start_step
        self.rank, self.per_rank, self.micro = rank, per_rank, micro

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start
        while True:
            idx = step_batch_indices(step, self.batch_size, self.n, self.seed)
            mine = idx[self.rank * self.per_rank:(self.rank + 1) * self.per_rank]
            for k in range(0, self.per_rank, self.micro):
                yield mine[k:k + self.micro]
            step += 1


class Trainer:
    """Train a :class:`SemanticUNet` receiver with a :class:`GaussianDiffusion`.

    Args:
        model_config, diffusion_config: what to train (saved beside the weights).
        dataset: items ``{"image": (3,H,W) in [-1,1], "label"?: (H,W) int64, "instance"?,
            "class"?}`` (what the condition reads).
        num_classes: classes of the label space (recorded with the model; with the default
            condition, the one-hot width of the map).
        config: the run settings.
        device: where to train (default: CUDA if available, else CPU).
        condition: how a batch becomes the network's inputs (:mod:`gensemcom.conditioning`);
            default: the semantic map (+ edges when ``label_channels == num_classes + 1``) with
            the config's ``noise_aware`` settings, i.e. GESCO's training.
    """

    def __init__(self, model_config: SemanticUNetConfig, diffusion_config: DiffusionConfig,
                 dataset: torch.utils.data.Dataset, num_classes: int, config: TrainConfig,
                 device: str | torch.device | None = None, condition: Condition | None = None) -> None:
        self.cfg = config
        self.model_config, self.diffusion_config = model_config, diffusion_config
        self.dataset, self.num_classes = dataset, num_classes
        if condition is None:
            if model_config.label_channels not in (num_classes, num_classes + 1):
                raise ValueError(f"model label_channels {model_config.label_channels} must be num_classes "
                                 f"({num_classes}) or num_classes + 1 (with instance edges)")
            condition = SemanticMapCondition(num_classes, model_config.label_channels == num_classes + 1,
                                             noise_aware=config.noise_aware, channel=config.train_channel,
                                             snr_range_db=config.snr_range_db, instance_mode=config.instance_mode)
        condition.check(model_config)
        self.rank, self.world = _dist_info()
        if config.batch_size % (self.world * config.grad_accum):
            raise ValueError(f"batch_size {config.batch_size} must be divisible by processes x "
                             f"grad_accum = {self.world} x {config.grad_accum}")
        if device is None:
            if torch.cuda.is_available():
                device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            else:
                device = torch.device("cpu")
        self.device = torch.device(device)
        if config.amp != "none" and self.device.type != "cuda":
            raise ValueError(f"amp={config.amp!r} needs a GPU; this run is on {self.device}")
        self.out = Path(config.out_dir)
        torch.manual_seed(config.seed)  # parameter initialisation only; all else uses self.gen
        self.model = SemanticUNet(model_config).to(self.device)
        self.ema = SemanticUNet(model_config).to(self.device).eval()
        self.ema.load_state_dict(self.model.state_dict())
        self.ema.requires_grad_(False)
        self.condition = condition.to(self.device)
        self.ema_condition = copy.deepcopy(self.condition).eval().requires_grad_(False)
        self.diffusion = GaussianDiffusion.from_config(diffusion_config)
        self.params = list(self.model.parameters()) + [p for p in self.condition.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda") if config.amp == "fp16" else None
        self.gen = torch.Generator().manual_seed(config.seed + self.rank)
        self.step = 0
        self.ddp: nn.Module = self.model
        if self.world > 1:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.checkpoints = CheckpointFolder(self.out, keep=config.keep_checkpoints)

    @property
    def with_edges(self) -> bool:
        return bool(getattr(self.condition, "with_edges", False))

    # ------------------------------------------------------------------ data
    def _batches(self) -> Iterator[list[dict[str, torch.Tensor]]]:
        """This rank's micro-batches for steps ``self.step, self.step + 1, ...``."""
        cfg = self.cfg
        per_rank = cfg.batch_size // self.world
        micro = per_rank // cfg.grad_accum
        sampler = _MicroBatchSampler(len(self.dataset), cfg.batch_size, cfg.seed, self.step,
                                     self.rank, per_rank, micro)
        loader = torch.utils.data.DataLoader(_EpochView(self.dataset, cfg.seed), batch_sampler=sampler,
                                             collate_fn=self.condition.collate, num_workers=cfg.num_workers)
        group: list[dict[str, torch.Tensor]] = []
        for mb in loader:
            group.append(mb)
            if len(group) == cfg.grad_accum:
                yield group
                group = []

    # ------------------------------------------------------------------ checkpoints
    @property
    def ckpt_dir(self) -> Path:
        return self.checkpoints.dir

    def _tensors(self) -> dict[str, dict[str, torch.Tensor]]:
        out = {"model": self.model.state_dict(), "ema": self.ema.state_dict()}
        if self.condition.state_dict():
            out["condition"] = self.condition.state_dict()
            out["ema_condition"] = self.ema_condition.state_dict()
        return out

    def save_checkpoint(self) -> Path:
        """Write checkpoints/step_XXXXXXX/ atomically and point latest.json at it (rank 0),
        plus every rank's generator state."""
        rng = {"generator": self.gen.get_state(), "torch": torch.get_rng_state()}
        if self.world > 1:
            gathered: list[Any] = [None] * self.world
            torch.distributed.all_gather_object(gathered, rng)
        else:
            gathered = [rng]
        final = self.ckpt_dir / f"step_{self.step:07d}"
        if self.rank == 0:
            state = {"step": self.step, "optimizer": self.opt.state_dict(),
                     "rng": {str(r): g for r, g in enumerate(gathered)}, "world_size": self.world}
            if self.scaler is not None:
                state["scaler"] = self.scaler.state_dict()
            meta = {"step": self.step, "model": self.model_config.to_dict(), "condition": self.condition.config(),
                    "diffusion": self.diffusion_config.to_dict(), "train": _jsonable(asdict(self.cfg))}
            final = self.checkpoints.save(self.step, self._tensors(), state, meta, state_name="trainer_state.pt")
        if self.world > 1:
            torch.distributed.barrier()
        return final

    def latest_checkpoint(self) -> Path | None:
        return self.checkpoints.latest()

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        path = Path(path)
        from .models.io import load_checkpoint

        load_checkpoint(self.model, path / "model.safetensors")
        load_checkpoint(self.ema, path / "ema.safetensors")
        if self.condition.state_dict():
            self.condition.load_state_dict(load_file(str(path / "condition.safetensors")))
            self.ema_condition.load_state_dict(load_file(str(path / "ema_condition.safetensors")))
        state = self.checkpoints.load_state(path, "trainer_state.pt")
        if state["world_size"] != self.world:
            raise ValueError(f"checkpoint {path} was written by {state['world_size']} processes; "
                             f"resume with the same number (now {self.world})")
        self.opt.load_state_dict(state["optimizer"])
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        rng = state["rng"][str(self.rank)]
        self.gen.set_state(rng["generator"])
        torch.set_rng_state(rng["torch"])
        self.step = int(state["step"])

    # ------------------------------------------------------------------ loop
    def _log(self, record: dict[str, Any]) -> None:
        if self.rank == 0:
            with open(self.out / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def _sync_condition_grads(self) -> None:
        """All-reduce the condition's gradients (DDP wraps the network only)."""
        if self.world == 1:
            return
        for p in self.condition.parameters():
            if p.grad is not None:
                torch.distributed.all_reduce(p.grad)
                p.grad.div_(self.world)

    def train(self, resume: bool = True, progress: bool = True,
              on_step: Callable[["Trainer", dict[str, float]], None] | None = None) -> dict[str, Any]:
        """Run until ``config.steps``; resumes from ``checkpoints/latest.json`` when present."""
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        if resume and (ck := self.latest_checkpoint()) is not None:
            self.load_checkpoint(ck)
        if self.rank == 0:
            trim_log(self.out / "log.jsonl", self.step)
            atomic_write(self.out / "train_config.json", lambda p: Path(p).write_text(json.dumps(
                {"train": _jsonable(asdict(cfg)), "model": self.model_config.to_dict(),
                 "condition": self.condition.config(), "diffusion": self.diffusion_config.to_dict()},
                indent=2) + "\n"))
        bar = None
        if progress and self.rank == 0:
            from tqdm.auto import tqdm
            bar = tqdm(total=cfg.steps, initial=self.step, desc="training", unit="step")
        autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
        batches = iter(self._batches())
        t_last, n_img = time.perf_counter(), 0
        self.model.train()
        self.condition.train()
        last: dict[str, float] = {}
        while self.step < cfg.steps:
            micro_batches = next(batches)
            self.opt.zero_grad(set_to_none=True)
            sums: dict[str, float] = {}
            for i, mb in enumerate(micro_batches):
                mb = {k: v.to(self.device) for k, v in mb.items()}
                sync = self.world == 1 or i == len(micro_batches) - 1
                ctx = self.ddp.no_sync() if not sync else contextlib.nullcontext()
                with ctx:
                    with torch.autocast(self.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                        c = self.condition(mb, self.gen)
                        t = torch.randint(self.diffusion.num_timesteps, (c.x0.shape[0],),
                                          generator=self.gen).to(self.device)
                        noise = torch.randn(c.x0.shape, generator=self.gen).to(self.device)
                        terms = self.diffusion.training_losses(
                            self.ddp, c.x0, t, c.y, noise=noise, cond_drop_prob=cfg.cond_drop_prob,
                            generator=self.gen, return_terms=True, model_kwargs=c.model_kwargs)
                    loss = terms["loss"].mean() / len(micro_batches)
                    if self.scaler is not None:
                        self.scaler.scale(loss).backward()
                    else:
                        loss.backward()
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + v.detach().float().mean().item() / len(micro_batches)
                n_img += c.x0.shape[0]
            self._sync_condition_grads()
            if self.scaler is not None:
                self.scaler.unscale_(self.opt)
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
            if self.scaler is not None:
                self.scaler.step(self.opt)
                self.scaler.update()
            else:
                self.opt.step()
            with torch.no_grad():
                for ema, live in ((self.ema, self.model), (self.ema_condition, self.condition)):
                    for e, p in zip(ema.parameters(), live.parameters()):
                        e.mul_(cfg.ema_rate).add_(p.detach(), alpha=1 - cfg.ema_rate)
                    for e, b in zip(ema.buffers(), live.buffers()):
                        e.copy_(b)
            self.step += 1
            last = sums
            if not all(math.isfinite(v) for v in sums.values()):
                raise FloatingPointError(f"non-finite loss at step {self.step}: {sums}")
            if self.step % cfg.log_interval == 0 or self.step == cfg.steps:
                now = time.perf_counter()
                self._log({"step": self.step, **{k: round(v, 6) for k, v in sums.items()},
                           "lr": cfg.lr, "images_per_s": round(n_img * self.world / max(now - t_last, 1e-9), 3)})
                t_last, n_img = now, 0
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{sums['loss']:.4f}")
            if on_step is not None:
                on_step(self, sums)
            if self.step % cfg.save_interval == 0 or self.step == cfg.steps:
                self.save_checkpoint()
        if bar is not None:
            bar.close()
        if self.rank == 0:
            extra: dict[str, Any] = {"trained_steps": self.step, "num_classes": self.num_classes,
                                     "condition": self.condition.config()}
            save_pretrained(self.out / "model", self.ema, self.diffusion, extra=extra)
            if self.ema_condition.state_dict():
                save_file({k: v.detach().cpu().contiguous() for k, v in self.ema_condition.state_dict().items()},
                          str(self.out / "model" / "condition.safetensors"))
        return {"step": self.step, **last}


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}
