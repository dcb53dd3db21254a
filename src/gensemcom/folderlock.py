"""One writer per results folder: an advisory lock that says who holds it.

A :class:`FolderLock` is a file ``<folder>/locks/<slot>.lock`` locked with ``fcntl.flock`` and
holding a JSON line about its holder (pid, host, start time, command, and what the caller adds,
e.g. the rank and world of a sharded sweep). The kernel drops the lock when its holder exits,
however it exits (``kill -9`` included), so a lock is never stale: a file left behind by a dead
process is simply taken over, and its old content is only shown while it is really held.

    with FolderLock("runs/sweep", "rank0", info={"rank": 0, "world": 1}):
        ...  # this process is the one writer of slot rank0

A second process asking for a held slot gets :class:`FolderLockedError` naming the holder.
:meth:`FolderLock.holders` lists the live holders of the other slots (a sharded sweep checks
that they belong to the same job). Filesystems without ``flock`` support (some network mounts
answer ``ENOLCK``) cannot be locked: the lock then warns once and proceeds unlocked.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["FolderLock", "FolderLockedError"]

try:
    import fcntl
except ImportError:  # Windows: no advisory locks here
    fcntl = None  # type: ignore[assignment]


class FolderLockedError(RuntimeError):
    """The folder (slot) is held by another live process; ``holder`` says who."""

    def __init__(self, message: str, holder: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.holder = holder or {}


def describe_holder(h: dict[str, Any]) -> str:
    """``pid 123 on host x (rank 0 of 2), since 2026-..., running `gensemcom evaluate ...```"""
    parts = [f"pid {h.get('pid', '?')} on host {h.get('host', '?')}"]
    if "rank" in h and "world" in h:
        parts.append(f"(rank {h['rank']} of {h['world']})")
    if h.get("started"):
        parts.append(f"since {h['started']}")
    s = " ".join(parts)
    if h.get("command"):
        s += f", running `{h['command']}`"
    return s


class FolderLock:
    """An exclusive, advisory lock on one slot of a folder (see the module docstring).

    Args:
        folder: the results folder.
        slot: the lock's name within the folder (e.g. ``"rank0"``).
        info: JSON-able facts about the holder written into the lock file.
    """

    def __init__(self, folder: str | os.PathLike, slot: str = "writer", info: dict[str, Any] | None = None) -> None:
        self.folder = Path(folder)
        self.path = self.folder / "locks" / f"{slot}.lock"
        self.info = dict(info or {})
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "FolderLock":
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise FolderLockedError(
                    f"{self.folder} is being written by {describe_holder(holder)}; wait for it to finish "
                    "or use another output folder", holder) from None
            except OSError as e:
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    os.close(fd)
                    raise
                print(f"gensemcom: warning: cannot lock {self.path} on this filesystem ({e.strerror}); "
                      "make sure no other process writes into this folder", file=sys.stderr)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300], **self.info}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # a released lock names nobody
        finally:
            os.close(fd)  # closing drops the flock

    def holders(self) -> list[dict[str, Any]]:
        """The live holders of the folder's other slots (each with ``slot`` added)."""
        out = []
        for p in sorted(self.path.parent.glob("*.lock")):
            if p == self.path:
                continue
            try:
                fd = os.open(p, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                if fcntl is None:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    fcntl.flock(fd, fcntl.LOCK_UN)  # nobody holds it
                except BlockingIOError:
                    out.append({**_read(fd), "slot": p.stem})
                except OSError:
                    continue
            finally:
                os.close(fd)
        return out

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # interpreter shutdown
            pass


def _read(fd: int) -> dict[str, Any]:
    try:
        data = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        return json.loads(data) if data else {}
    except (OSError, json.JSONDecodeError):
        return {}
