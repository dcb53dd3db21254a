"""Sweeps: systems x datasets x channels x SNRs, measured, resumable, shardable.

A sweep is a list of *work items*, one per ``(dataset, system, channel, snr_db, batch)``. Each
item sends one batch through one system (``samples`` times when the system samples), measures
it, and appends one JSON line to ``<out>/records/rank<r>.jsonl``::

    item ──► system.run(batch, channel, snr, generator) ──► metrics per image ──► one JSON line
             (generator seeded from (seed, item key):      (PSNR, SSIM, MS-SSIM,
              the same numbers whatever the order,          segmenter mIoU, map mIoU,
              the sharding or the resumption)               LPIPS, diversity, cost)

- **Resume**: on start every ``records/*.jsonl`` is read and the items already there are
  skipped; a line cut short by a kill is dropped. Nothing saved is recomputed.
- **Sharding**: with ``torchrun`` (``RANK``/``WORLD_SIZE``) rank ``r`` takes items
  ``i % world == r`` of the full, deterministic list and writes its own records file; rank 0
  aggregates once all ranks are done. Shards run on different machines are merged with
  ``gensemcom evaluate --merge DIR [DIR ...]``: records are keyed, so merging loses nothing and
  counts nothing twice.
- **Results** (``results.json``): a CompressAI-style file (``name``, ``description``,
  ``results``) in which ``results`` is a list of curves, one per (dataset, system, channel),
  each a dict of equal-length lists indexed by ``snr_db``: ``channel_uses_per_pixel``, ``bpp``,
  ``psnr``, ``ssim``, ``ms_ssim``, ``miou`` (segmenter on the output images, from the summed
  confusion matrix), ``map_miou`` (the received label map), ``lpips``, ``diversity``,
  ``lost_fraction``, ``fid``/``kid`` when asked; ``meta`` holds the git revision, seeds, the
  metric backends and every system's configuration. A reference curve ``"original"`` measures
  the clean images (the segmenter's own mIoU).

Conventions: metrics take images in [0, 1]; per-image PSNR is capped at 100 dB (a lossless image
is reported as 100); ``snr_db`` is Es/N0 per complex channel use, except on the ``legacy``
channel where it is a key of GESCO's table.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .channels.semantic import GESCO_SNR_TABLE
from .data.common import derive_seed
from .data.evalsets import EvalData
from .imageio import save_png, to_uint8
from .metrics import (ConfusionMatrix, frechet_distance, kid, miou_per_image, ms_ssim,
                      pairwise_diversity, psnr, ssim)
from .folderlock import FolderLock, FolderLockedError, describe_holder
from .models.io import atomic_write
from .semantics import colorize
from .systems.base import Batch, System, SystemOutput

__all__ = ["EvalData", "SweepConfig", "Sweep", "WorkItem", "read_records", "aggregate", "merge_records",
           "write_results", "build_segmenters", "FolderLockedError", "git_revision", "PSNR_CAP_DB"]

PSNR_CAP_DB = 100.0
RESULTS_NAME = "results.json"
SETTINGS_NAME = "sweep.json"
SKIPPED_NAME = "skipped.json"


@dataclass
class SweepConfig:
    """What to sweep and how to measure it (saved in ``sweep.json`` and in the results)."""

    channels: list[str] = field(default_factory=lambda: ["awgn", "rayleigh"])
    snrs: list[float] = field(default_factory=lambda: [-5.0, 0.0, 5.0, 10.0, 20.0])
    samples: int = 1
    seed: int = 0
    batch_size: int = 8
    fid: bool = False
    lpips: bool = False
    save_images: int = 0

    def __post_init__(self) -> None:
        if self.samples < 1 or self.batch_size < 1 or self.save_images < 0:
            raise ValueError("samples and batch_size must be >= 1 and save_images >= 0")
        if not self.channels or not self.snrs:
            raise ValueError("a sweep needs at least one channel and one SNR")
        for s in self.snrs:
            if isinstance(s, bool) or not isinstance(s, (int, float)) or math.isnan(s) or s == -math.inf:
                raise ValueError(f"unsupported SNR {s!r}: use a number of dB or inf")


@dataclass(frozen=True)
class WorkItem:
    dataset: str
    system: str
    channel: str
    snr_db: float
    batch: int

    @property
    def key(self) -> str:
        return f"{self.dataset}|{self.system}|{self.channel}|{snr_key(self.snr_db)}|{self.batch}"


def snr_key(snr: float) -> str:
    return "inf" if math.isinf(snr) and snr > 0 else f"{snr:g}"


def git_revision() -> str | None:
    """The checkout's commit (with ``-dirty`` when it has changes), or None outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _to01(x: torch.Tensor) -> torch.Tensor:
    return ((x.float().clamp(-1, 1) + 1) / 2)


def _floats(t: torch.Tensor) -> list[float]:
    return [float(v) for v in t.detach().double().cpu()]


# ------------------------------------------------------------------------------------------------
# Records
# ------------------------------------------------------------------------------------------------

def read_records(folder: str | os.PathLike) -> dict[str, dict]:
    """Every complete record under ``folder/records/*.jsonl``, by key (a torn last line is skipped)."""
    out: dict[str, dict] = {}
    for path in sorted(Path(folder, "records").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            out[rec["key"]] = rec
    return out


def _repair_tail(path: Path) -> None:
    """Drop a partial last line (a write interrupted by a kill) so appends start clean."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(cut)


def _append(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def merge_records(folders: Sequence[str | os.PathLike], out: str | os.PathLike) -> int:
    """Copy the records of several sweep folders (shards run apart) into ``out``; keys dedupe.

    Everything a record points to comes along: the Inception features of FID/KID and the saved
    pictures (copied beside the records, same relative paths), and the skip reasons of every
    folder (their union). Returns the number of records in ``out``.

    Raises:
        FileNotFoundError: a folder holds no records; ValueError: folders with other settings;
        FolderLockedError: a process is writing ``out``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with FolderLock(out, "rank0", info={"rank": 0, "world": 1, "merge": True}) as lock:
        if lock.holders():
            raise FolderLockedError(f"{out} is being written by {describe_holder(lock.holders()[0])}; "
                                    "merge once it has finished")
        merged: dict[str, dict] = read_records(out)  # merging into a folder keeps what it holds
        settings = json.loads((out / SETTINGS_NAME).read_text()) if (out / SETTINGS_NAME).is_file() else None
        skipped = _read_skipped(out)
        for f in folders:
            f = Path(f)
            if not (f / "records").is_dir():
                raise FileNotFoundError(f"{f} is not a sweep folder (no records/ in it)")
            s = f / SETTINGS_NAME
            if s.is_file():
                this = json.loads(s.read_text())
                if settings is not None and _identity(this) != _identity(settings):
                    raise ValueError(f"{f} holds a sweep with other settings than the others; cannot merge")
                settings = this
            recs = read_records(f)
            if f.resolve() != out.resolve():
                for rec in recs.values():
                    for rel in [rec.get("features")] + [x for v in (rec.get("pictures") or {}).values() for x in v]:
                        if rel and (f / rel).is_file() and not (out / rel).is_file():
                            (out / rel).parent.mkdir(parents=True, exist_ok=True)
                            shutil.copyfile(f / rel, out / rel)
                if (f / "images").is_dir():  # the originals beside the pictures, for the grids
                    shutil.copytree(f / "images", out / "images", dirs_exist_ok=True)
            merged.update(recs)
            skipped += [x for x in _read_skipped(f) if x not in skipped]
        lines = "".join(json.dumps(r) + "\n" for r in merged.values())
        atomic_write(out / "records" / "merged.jsonl", lambda p: Path(p).write_text(lines))
        if settings is not None:
            _write_json(out / SETTINGS_NAME, settings)
        _write_json(out / SKIPPED_NAME, skipped)
    return len(merged)


def _read_skipped(folder: Path) -> list[dict]:
    p = Path(folder) / SKIPPED_NAME
    return json.loads(p.read_text()) if p.is_file() else []


def _write_json(path: Path, value: Any) -> None:
    atomic_write(path, lambda p: Path(p).write_text(json.dumps(value, indent=2) + "\n"))


def _identity(settings: dict) -> dict:
    """The settings that give a record its meaning (extending the SNR list is allowed)."""
    cfg = settings.get("config", {})
    return {"seed": cfg.get("seed"), "samples": cfg.get("samples"), "batch_size": cfg.get("batch_size"),
            "systems": settings.get("systems"), "datasets": settings.get("datasets"),
            "backends": _without_paths(settings.get("backends"))}


def _without_paths(v: Any) -> Any:
    """Backend descriptions minus file paths (installs differ; the sha256 identifies the weights)."""
    if isinstance(v, dict):
        return {k: _without_paths(x) for k, x in v.items() if k != "path"}
    return v


# ------------------------------------------------------------------------------------------------
# The sweep
# ------------------------------------------------------------------------------------------------

#: the segmenter a data set gets when --segmenter does not name one (by the kind of data)
DEFAULT_SEGMENTERS = {"synthetic": "bundled"}


def build_segmenters(data: Sequence[EvalData], specs: Sequence[str] = (), device: str = "cpu") -> tuple[dict, dict]:
    """The segmenter of each data set, for the mIoU of the output images.

    Args:
        data: the sweep's data sets.
        specs: ``DATASET=SPEC`` (that data set) or ``SPEC`` (every data set), later ones winning;
            SPEC is ``bundled``, a model folder, ``torchscript:PATH:NUM_CLASSES[:RANGE]`` or ``none``
            (see :func:`gensemcom.models.segmenter.load_segmenter`). Without one, the synthetic
            scenes get the bundled segmenter and other data none.
        device: where the segmenters run.

    Returns:
        ``(segmenters, info)``: data-set name -> segmenter, and -> its spec (recorded).

    Raises:
        ValueError: a spec naming no data set of the sweep, or a segmenter whose classes differ
        from its data set's.
    """
    from .models.segmenter import load_segmenter
    names = [d.name for d in data]
    chosen = {d.name: DEFAULT_SEGMENTERS[d.kind] for d in data if d.kind in DEFAULT_SEGMENTERS}
    for s in specs:
        k, eq, v = s.partition("=")
        if eq and not k.startswith("torchscript") and "/" not in k:
            if k not in names:
                raise ValueError(f"--segmenter {s!r}: no data set is called {k!r} (this sweep has {', '.join(names)})")
            chosen[k] = v
        else:
            chosen.update({n: s for n in names})
    segs, info = {}, {}
    for d in data:
        spec = chosen.get(d.name)
        if spec and spec != "none":
            seg = load_segmenter(spec, device=device)
            if seg.num_classes != d.num_classes:
                raise ValueError(f"segmenter {spec!r} predicts {seg.num_classes} classes, data set {d.name} has "
                                 f"{d.num_classes}")
            segs[d.name], info[d.name] = seg, spec
    return segs, info


class _Original(System):
    """The clean images themselves: the reference row (segmenter mIoU on clean images)."""

    name = "original"
    channels = ("none",)

    def config(self) -> dict[str, Any]:
        return {"system": "original"}

    def run(self, batch, channel, snr_db, generator=None) -> SystemOutput:
        return SystemOutput(images=batch.images, labels=None, channel_uses=torch.zeros(batch.size, dtype=torch.float64))


class Sweep:
    """Run a sweep into ``out`` (see the module docstring).

    Args:
        out: the sweep folder (records, results, images).
        systems: name -> :class:`System`.
        datasets: the evaluation sets.
        config: :class:`SweepConfig`.
        segmenters: dataset name -> a segmenter (``predict(images [-1,1]) -> (B,H,W)``, with
            ``num_classes``) or absent: no segmenter mIoU for that dataset.
        segmenter_info: dataset name -> JSON-able description of its segmenter (recorded).
        rank, world: this process's share (default: ``RANK``/``WORLD_SIZE`` from torchrun, else 0/1).
    """

    def __init__(self, out: str | os.PathLike, systems: dict[str, System], datasets: Sequence[EvalData],
                 config: SweepConfig, segmenters: dict[str, Any] | None = None,
                 segmenter_info: dict[str, Any] | None = None, rank: int | None = None,
                 world: int | None = None) -> None:
        self.out = Path(out)
        self.systems = dict(systems)
        self.systems.setdefault("original", _Original())
        self.datasets = {d.name: d for d in datasets}
        if len(self.datasets) != len(datasets):
            raise ValueError(f"two data sets share a name: {[d.name for d in datasets]}")
        self.config = config
        self.segmenters = segmenters or {}
        self.segmenter_info = segmenter_info or {}
        self.rank = int(os.environ.get("RANK", 0)) if rank is None else rank
        self.world = int(os.environ.get("WORLD_SIZE", 1)) if world is None else world
        if not 0 <= self.rank < self.world:
            raise ValueError(f"rank {self.rank} outside a world of {self.world}")
        self._batches = {name: d.batches(config.batch_size) for name, d in self.datasets.items()}
        self._lpips = None
        self._inception = None
        self.backends = self._backends()

    # -- settings ---------------------------------------------------------------------------------

    def _backends(self) -> dict[str, Any]:
        b: dict[str, Any] = {"psnr": "gensemcom.metrics.psnr (data range 1, capped at 100 dB)",
                             "ssim": "gensemcom.metrics.ssim (Gaussian 11x11, sigma 1.5)",
                             "ms_ssim": "gensemcom.metrics.ms_ssim (scales fitted to the image size)",
                             "miou": {k: self.segmenter_info.get(k, "segmenter") for k in self.segmenters}}
        if self.config.lpips:
            from .metrics import LPIPS
            self._lpips = LPIPS()
            b["lpips"] = self._lpips.info() if hasattr(self._lpips, "info") else "LPIPS-Alex (local weights)"
        if self.config.fid:
            from .metrics import InceptionFeatures
            self._inception = InceptionFeatures()
            b["fid"] = self._inception.backend_info()
        return b

    def settings(self) -> dict[str, Any]:
        return {"config": asdict(self.config),
                "systems": {k: s.config() for k, s in sorted(self.systems.items())},
                "datasets": {k: {"images": len(d.items), "num_classes": d.num_classes, "description": d.description,
                                 **({"items": d.fingerprint} if d.fingerprint else {})}
                             for k, d in sorted(self.datasets.items())},
                "backends": self.backends}

    def _check_settings(self) -> None:
        path = self.out / SETTINGS_NAME
        mine = json.loads(json.dumps(self.settings()))
        if path.is_file():
            old = json.loads(path.read_text())
            a, b = _identity(old), _identity(mine)
            diff = sorted(k for k in a if a[k] != b[k])
            if diff:
                raise ValueError(f"{self.out} holds a sweep with different {', '.join(diff)}; "
                                 "use another --out (records would not be comparable)")
        if self.rank == 0 or not path.is_file():
            atomic_write(path, lambda p: Path(p).write_text(json.dumps(mine, indent=2) + "\n"))

    # -- items ------------------------------------------------------------------------------------

    def items(self) -> tuple[list[WorkItem], list[dict]]:
        """The full, ordered list of work items, and the skipped (dataset, system, channel) with why.

        The items of every (dataset, system) are spread evenly over the list (item ``j`` of a group
        of ``n`` sits at ``(j + 1/2) / n`` of the way), so that the slow ones (diffusion receivers)
        are not all first: any stretch of the run holds each system in proportion, and the
        progress bar's rate, hence its estimate of the time left, is right from the start."""
        plan, skipped = self._plan()
        return [it for it, _ in plan], skipped

    def _groups(self) -> tuple[list[list[WorkItem]], list[dict]]:
        groups, skipped = [], []
        for dname, batches in self._batches.items():
            for sname, system in self.systems.items():
                channels = ["none"] if sname == "original" else self.config.channels
                snrs = [math.inf] if sname == "original" else self.config.snrs
                reason = system.compatible(batches[0]) if len(batches) else "empty dataset"
                group: list[WorkItem] = []
                for ch in channels:
                    why = reason or (None if system.supports(ch) else f"{sname} does not implement channel {ch}")
                    if why:
                        skipped.append({"dataset": dname, "system": sname, "channel": ch, "reason": why})
                        continue
                    ch_snrs = snrs
                    if ch == "legacy":
                        # GESCO's table has keys, not SNRs: the other values do not exist there
                        ch_snrs = [s for s in snrs if s in GESCO_SNR_TABLE]
                        missing = [snr_key(s) for s in snrs if s not in GESCO_SNR_TABLE]
                        if missing:
                            skipped.append({"dataset": dname, "system": sname, "channel": ch,
                                            "reason": f"not keys of GESCO's table {sorted(GESCO_SNR_TABLE)}: "
                                                      f"{', '.join(missing)}"})
                    group += [WorkItem(dname, sname, ch, float(s), b) for s in ch_snrs for b in range(len(batches))]
                if group:
                    groups.append(group)
        return groups, skipped

    def _plan(self) -> tuple[list[tuple[WorkItem, int]], list[dict]]:
        """Every item with the rank that computes it, in run order (see :meth:`items`).

        Ranks take turns within each group (item ``j`` of group ``g`` goes to ``(j + g) % world``):
        every rank gets its share of every system, whatever the number of systems and ranks."""
        groups, skipped = self._groups()
        keyed = [((j + 0.5) / len(g), gi, j, it) for gi, g in enumerate(groups) for j, it in enumerate(g)]
        keyed.sort(key=lambda t: t[:3])
        return [(it, (j + gi) % self.world) for _, gi, j, it in keyed], skipped

    def _generator(self, item: WorkItem) -> torch.Generator:
        return torch.Generator().manual_seed(derive_seed(self.config.seed, zlib.crc32(item.key.encode())))

    def _lock(self) -> FolderLock:
        """This rank's writer lock on the folder; refuses a folder that another job is writing."""
        lock = FolderLock(self.out, f"rank{self.rank}", info={"rank": self.rank, "world": self.world}).acquire()
        others = [h for h in lock.holders() if h.get("world") != self.world]
        if others:
            lock.release()
            raise FolderLockedError(f"{self.out} is being written by {describe_holder(others[0])}, another "
                                    "sweep over this folder; wait for it to finish or use another output folder",
                                    others[0])
        return lock

    def run(self, progress: bool = True) -> Path:
        """Compute this rank's missing items; returns its records file.

        Raises:
            FolderLockedError: another process is writing this folder (the message names it).
        """
        with self._lock():
            self._check_settings()
            records = self.out / "records" / f"rank{self.rank}.jsonl"
            _repair_tail(records)
            done = set(read_records(self.out))
            plan, skipped = self._plan()
            _write_json(self.out / SKIPPED_NAME, skipped)
            mine = [it for it, r in plan if r == self.rank and it.key not in done]
            bar = tqdm(mine, desc=f"sweep rank {self.rank}" if self.world > 1 else "sweep", unit="item",
                       disable=not progress, dynamic_ncols=True)
            for item in bar:
                bar.set_postfix_str(f"{item.system} {item.channel} {snr_key(item.snr_db)} dB", refresh=False)
                _append(records, self.measure(item))
            bar.close()
        return records

    # -- one item ---------------------------------------------------------------------------------

    def measure(self, item: WorkItem) -> dict[str, Any]:
        """Run and measure one work item -> its record."""
        data = self.datasets[item.dataset]
        batch = self._batches[item.dataset][item.batch]
        system = self.systems[item.system]
        gen = self._generator(item)
        k_samples = self.config.samples if system.stochastic else 1
        seg = self.segmenters.get(item.dataset)
        t0 = time.perf_counter()
        outputs = [system.run(batch, item.channel, item.snr_db, gen) for _ in range(k_samples)]
        seconds = time.perf_counter() - t0

        ref = _to01(batch.images)
        metrics: dict[str, list] = {}
        conf_seg = ConfusionMatrix(data.num_classes, data.ignore_index)
        # a lost map arrives as all ignore_index: misses of every class, false positives of none
        conf_map = ConfusionMatrix(data.num_classes, data.ignore_index, missing=data.ignore_index)
        has_images = outputs[0].images is not None
        if has_images:
            for name in ("psnr", "ssim", "ms_ssim") + (("lpips",) if self._lpips else ()) + (("miou",) if seg else ()):
                metrics[name] = []
            for o in outputs:
                x = _to01(o.images)
                metrics["psnr"].append(_floats(psnr(x, ref).clamp(max=PSNR_CAP_DB)))
                metrics["ssim"].append(_floats(ssim(x, ref)))
                metrics["ms_ssim"].append(_floats(ms_ssim(x, ref)))
                if self._lpips:
                    metrics["lpips"].append(_floats(self._lpips(x, ref)))
                if seg:
                    pred = seg.predict(o.images.float())
                    metrics["miou"].append(_floats(miou_per_image(pred, batch.labels, data.num_classes,
                                                                  data.ignore_index)))
                    conf_seg.update(pred, batch.labels)
            if k_samples > 1:
                metrics["diversity"] = [_floats(pairwise_diversity(torch.stack([_to01(o.images) for o in outputs])))]
        if outputs[0].labels is not None:
            metrics["map_miou"] = []
            for o in outputs:
                metrics["map_miou"].append(_floats(miou_per_image(o.labels, batch.labels, data.num_classes,
                                                                  data.ignore_index, missing=data.ignore_index)))
                conf_map.update(o.labels, batch.labels)

        first = outputs[0]
        rec: dict[str, Any] = {
            "key": item.key, "dataset": item.dataset, "system": item.system, "channel": item.channel,
            "snr_db": snr_key(item.snr_db), "batch": item.batch, "names": batch.names, "samples": k_samples,
            "height": batch.images.shape[2], "width": batch.images.shape[3],
            "channel_uses_per_pixel": _floats(first.channel_uses / batch.pixels),
            "bpp": None if first.bits is None else _floats(first.bits / batch.pixels),
            "lost": None if first.lost is None else [bool(v) for v in torch.stack([o.lost for o in outputs]).any(0)],
            "metrics": metrics, "seconds": round(seconds, 4), "rank": self.rank,
            "info": _jsonable(first.info),
        }
        if has_images and seg:
            rec["confusion"] = conf_seg.to_list()
        if first.labels is not None:
            rec["map_confusion"] = conf_map.to_list()
            rec["map_missing"] = data.ignore_index
        if self._inception is not None and has_images:
            rec["features"] = self._save_features(item, [o.images for o in outputs])
        if self.config.save_images and item.batch * self.config.batch_size < self.config.save_images:
            rec["pictures"] = self._save_pictures(item, batch, outputs, data)
        return rec

    def _save_features(self, item: WorkItem, images: list[torch.Tensor]) -> str:
        from safetensors.torch import save_file
        feats = torch.cat([self._inception(_to01(x)) for x in images]).float()
        rel = f"features/{zlib.crc32(item.key.encode()):08x}.safetensors"
        atomic_write(self.out / rel, lambda p: save_file({"features": feats.contiguous()}, p))
        return rel

    def _save_pictures(self, item: WorkItem, batch: Batch, outputs: list[SystemOutput], data: EvalData) -> dict:
        n = min(batch.size, self.config.save_images - item.batch * self.config.batch_size)
        root = Path("images") / item.dataset
        pics: dict[str, list[str]] = {"images": [], "maps": []}
        for i in range(n):
            stem = f"{item.batch * self.config.batch_size + i:04d}"
            if item.system == "original":
                save_png(self.out / root / "original" / f"{stem}.png", to_uint8(batch.images[i]))
                save_png(self.out / root / "original" / f"{stem}_map.png",
                         _colour_map(batch.labels[i], data.palette, data.ignore_index))
                continue
            cond = root / item.system / item.channel / snr_key(item.snr_db)
            o = outputs[0]
            if o.images is not None:
                save_png(self.out / cond / f"{stem}.png", to_uint8(o.images[i]))
                pics["images"].append(str(cond / f"{stem}.png"))
            if o.labels is not None:
                save_png(self.out / cond / f"{stem}_map.png", _colour_map(o.labels[i], data.palette, data.ignore_index))
                pics["maps"].append(str(cond / f"{stem}_map.png"))
        return pics

    # -- results ----------------------------------------------------------------------------------

    def finish(self) -> Path | None:
        """After every rank has run: wait for the others (torchrun), then rank 0 writes results.json."""
        if self.world > 1 and "MASTER_ADDR" in os.environ:
            import torch.distributed as dist
            if not dist.is_initialized():
                from datetime import timedelta
                # ranks can finish hours apart (diffusion items on CPU): wait for the slowest
                dist.init_process_group("gloo", timeout=timedelta(days=2))
            dist.barrier()
        if self.rank != 0:
            return None
        _, skipped = self._plan()
        with self._lock():
            return write_results(self.out, skipped=skipped, reference_features=self._reference_features)

    def _reference_features(self, dataset: str) -> torch.Tensor | None:
        if self._inception is None:
            return None
        data = self.datasets[dataset]
        return torch.cat([self._inception(_to01(b.images)) for b in data.batches(self.config.batch_size)])


def _colour_map(labels: torch.Tensor, palette: Any, ignore_index: int) -> torch.Tensor:
    """(H, W) ids -> (H, W, 3) uint8; unlabelled (or lost) pixels black."""
    void = labels == ignore_index
    rgb = colorize(torch.where(void, torch.zeros_like(labels), labels), palette)
    rgb[void] = 0
    return rgb


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, torch.Tensor):
        return _jsonable(v.tolist())
    if isinstance(v, (np.generic,)):
        return v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return "inf" if v > 0 else None  # JSON has no inf/NaN: +inf (a noiseless SNR) as "inf", NaN as null
    return v


def _mean(rows: Iterable[Iterable[float]]) -> float | None:
    vals = [v for r in rows for v in r if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(vals)) if vals else None


def _per_image(rows: list[list[float]]) -> list[float]:
    """Rows of one record (one per sample drawn, each over the images) -> one value per image,
    the mean over its samples (the draws of one image are not independent images)."""
    out = []
    for vals in zip(*rows) if rows else ():
        v = [x for x in vals if x is not None and not (isinstance(x, float) and math.isnan(x))]
        if v:
            out.append(float(np.mean(v)))
    return out


def _ci95(per_record: Iterable[list[float]]) -> float | None:
    """Half-width of the 95 % confidence interval of the mean over images (Student's t), or None
    with fewer than two images."""
    vals = np.array([v for r in per_record for v in r], dtype=np.float64)
    if len(vals) < 2:
        return None
    from scipy.stats import t
    return float(t.ppf(0.975, len(vals) - 1) * vals.std(ddof=1) / math.sqrt(len(vals)))


def aggregate(records: dict[str, dict], reference_features: Callable[[str], torch.Tensor | None] | None = None,
              folder: Path | None = None, kid_subset: int = 100) -> list[dict]:
    """Records -> curves (one per dataset, system, channel; lists indexed by SNR, ascending)."""
    groups: dict[tuple[str, str, str], dict[str, list[dict]]] = {}
    for rec in records.values():
        groups.setdefault((rec["dataset"], rec["system"], rec["channel"]), {}).setdefault(rec["snr_db"], []).append(rec)
    curves = []
    ref_cache: dict[str, Any] = {}
    for (dset, sysname, ch), by_snr in sorted(groups.items()):
        snrs = sorted(by_snr, key=lambda s: float(s))
        curve: dict[str, Any] = {"dataset": dset, "system": sysname, "channel": ch,
                                 "snr_db": [float(s) for s in snrs], "images": []}
        names = ("psnr", "ssim", "ms_ssim", "lpips", "miou_per_image", "map_miou_per_image", "diversity")
        cols: dict[str, list] = {k: [] for k in ("channel_uses_per_pixel", "bpp", "lost_fraction", "miou",
                                                 "map_miou", "seconds_per_image") + names
                                 + tuple(n + "_ci95" for n in names)}
        fid_col, kid_col = [], []
        for s in snrs:
            recs = sorted(by_snr[s], key=lambda r: r["batch"])
            curve["images"].append(sum(len(r["names"]) for r in recs))
            cols["channel_uses_per_pixel"].append(_mean(r["channel_uses_per_pixel"] for r in recs))
            cols["bpp"].append(_mean(r["bpp"] for r in recs if r["bpp"] is not None))
            lost = [v for r in recs if r["lost"] is not None for v in r["lost"]]
            cols["lost_fraction"].append(float(np.mean(lost)) if lost else None)
            n_img = sum(len(r["names"]) * r["samples"] for r in recs)
            cols["seconds_per_image"].append(sum(r["seconds"] for r in recs) / max(1, n_img))
            for col, m in (("psnr", "psnr"), ("ssim", "ssim"), ("ms_ssim", "ms_ssim"), ("lpips", "lpips"),
                           ("diversity", "diversity"), ("miou_per_image", "miou"), ("map_miou_per_image", "map_miou")):
                cols[col].append(_mean(row for r in recs for row in r["metrics"].get(m, [])))
                cols[col + "_ci95"].append(_ci95(_per_image(r["metrics"].get(m, [])) for r in recs))
            for key, col in (("confusion", "miou"), ("map_confusion", "map_miou")):
                mats = [ConfusionMatrix.from_list(r[key], missing=r.get("map_missing") if key == "map_confusion"
                                                  else None) for r in recs if r.get(key) is not None]
                cols[col].append(float(sum(mats[1:], mats[0]).miou()) if mats else None)
            fid_kid: tuple[float | None, float | None] = (None, None)
            if folder is not None and recs and all("features" in r for r in recs):
                from safetensors.torch import load_file
                fake = torch.cat([load_file(folder / r["features"])["features"] for r in recs]).double()
                if dset not in ref_cache:
                    # the clean images' features: saved by the "original" items (so a merged
                    # folder has them too), else computed by the caller
                    orig = sorted((r for r in records.values() if r["dataset"] == dset and r["system"] == "original"),
                                  key=lambda r: r["batch"])
                    if orig and all("features" in r and (folder / r["features"]).is_file() for r in orig):
                        ref_cache[dset] = torch.cat([load_file(folder / r["features"])["features"] for r in orig])
                    else:
                        ref_cache[dset] = reference_features(dset) if reference_features is not None else None
                real = ref_cache[dset]
                if real is not None and len(fake) >= 2 and len(real) >= 2:
                    mu1, mu2 = real.double().mean(0), fake.mean(0)
                    s1, s2 = torch.cov(real.double().T), torch.cov(fake.T)
                    km, _ = kid(real.double(), fake, subsets=kid_subset, subset_size=min(len(real), len(fake)),
                                generator=torch.Generator().manual_seed(0))
                    fid_kid = (float(frechet_distance(mu1, s1, mu2, s2)), float(km))
            fid_col.append(fid_kid[0])
            kid_col.append(fid_kid[1])
        for k, v in cols.items():
            if any(x is not None for x in v):
                curve[k] = v
        if any(v is not None for v in fid_col):
            curve["fid"], curve["kid"] = fid_col, kid_col
        curves.append(curve)
    return curves


def write_results(folder: str | os.PathLike, skipped: list[dict] | None = None,
                  reference_features: Callable[[str], torch.Tensor | None] | None = None) -> Path:
    """Aggregate ``folder``'s records into ``folder/results.json`` (atomically)."""
    folder = Path(folder)
    records = read_records(folder)
    if skipped is None:
        skipped = _read_skipped(folder)
    settings_path = folder / SETTINGS_NAME
    settings = json.loads(settings_path.read_text()) if settings_path.is_file() else {}
    results = {
        "name": "gensemcom sweep",
        "description": "metric vs SNR per dataset, system and channel; see gensemcom.evaluate",
        "meta": {"git": git_revision(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 "records": len(records), "torch": torch.__version__, **settings},
        "results": aggregate(records, reference_features, folder),
        "skipped": skipped or [],
    }
    path = folder / RESULTS_NAME
    atomic_write(path, lambda p: Path(p).write_text(json.dumps(_jsonable(results), indent=1) + "\n"))
    return path
