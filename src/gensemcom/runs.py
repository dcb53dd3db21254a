"""Files of a long run, written so that nothing is lost when it is killed, and its seeds.

- :func:`atomic_write`: write a file under a temporary name and rename it into place.
- :func:`derive_seed`: mix integers (seed, epoch, index, ...) into one well-spread seed.
- :class:`CheckpointFolder`: ``OUT/checkpoints/step_XXXXXXX/`` folders written atomically, a
  ``latest.json`` pointer replaced atomically, pruning, and the run log trimmed on resume. Both
  training loops (:mod:`gensemcom.train` and :mod:`gensemcom.fit`) keep their checkpoints here.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from safetensors.torch import save_file

__all__ = ["atomic_write", "derive_seed", "CheckpointFolder", "trim_log"]

_MASK64 = (1 << 64) - 1
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def derive_seed(*values: int) -> int:
    """Mix integers into one well-spread seed in ``[0, 2**63)`` (stable across runs and platforms)."""
    h = 0x1234_5678_9ABC_DEF0
    for v in values:
        h = _splitmix64(h ^ (int(v) & _MASK64))
    return h >> 1


def trim_log(log: str | os.PathLike, step: int) -> None:
    """Drop the JSON lines of ``log`` whose ``step`` is after ``step`` (they are redone on resume)."""
    log = Path(log)
    if not log.is_file():
        return
    kept = [ln for ln in log.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= step]
    atomic_write(log, lambda p: Path(p).write_text("".join(k + "\n" for k in kept)))


class CheckpointFolder:
    """``out/checkpoints/``: one complete folder per saved step and a ``latest.json`` pointer.

    A checkpoint is written under ``.tmp-step_XXXXXXX``, renamed into place, and only then is
    ``latest.json`` replaced (atomically): a run killed at any moment finds the last complete
    checkpoint. ``keep`` folders are kept, older ones removed.
    """

    def __init__(self, out: str | os.PathLike, keep: int = 2) -> None:
        self.dir = Path(out) / "checkpoints"
        self.keep = max(int(keep), 1)

    def save(self, step: int, tensors: Mapping[str, Mapping[str, torch.Tensor]], state: dict[str, Any],
             meta: dict[str, Any], state_name: str = "state.pt") -> Path:
        """Write ``step_XXXXXXX/`` with one ``NAME.safetensors`` per entry of ``tensors``, the
        torch-saved ``state`` (optimiser, generators; read back with ``weights_only=True``) and
        ``meta.json``; returns the folder."""
        name = f"step_{step:07d}"
        final, tmp = self.dir / name, self.dir / f".tmp-{name}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for file, sd in tensors.items():
            save_file({k: v.detach().cpu().contiguous() for k, v in sd.items()}, str(tmp / f"{file}.safetensors"))
        torch.save(state, tmp / state_name)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        atomic_write(self.dir / "latest.json",
                     lambda p: Path(p).write_text(json.dumps({"step": step, "path": name}) + "\n"))
        done = sorted(p for p in self.dir.glob("step_*") if p.is_dir())
        for p in done[:-self.keep]:
            shutil.rmtree(p, ignore_errors=True)
        return final

    def latest(self) -> Path | None:
        """The folder ``latest.json`` points at, or None."""
        pointer = self.dir / "latest.json"
        if not pointer.is_file():
            return None
        try:
            path = self.dir / json.loads(pointer.read_text())["path"]
        except (ValueError, KeyError) as e:
            raise ValueError(f"{pointer} is not a checkpoint pointer ({e}); remove it to start over") from None
        return path if path.is_dir() else None

    @staticmethod
    def load_state(path: str | os.PathLike, state_name: str = "state.pt") -> dict[str, Any]:
        """The ``state`` saved with a checkpoint (``weights_only=True``)."""
        return torch.load(Path(path) / state_name, map_location="cpu", weights_only=True)
