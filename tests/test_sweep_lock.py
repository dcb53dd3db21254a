"""One writer per sweep folder (issue 9 item 3): a second process is refused and told who writes
the folder; a lock left by a killed process is taken over; shards of one job share the folder."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gensemcom.cli.evaluate import main
from gensemcom.evaluate import read_records
from gensemcom.folderlock import FolderLock, FolderLockedError

ARGS = ["--systems", "gesco-map,jpeg+ldpc", "--data", "synthetic:4", "--size", "32x64", "--channels", "awgn,rayleigh",
        "--snr", "-5,0,5,10,15,20,25,30", "--batch-size", "1", "--seed", "2", "--save-images", "0",
        "--segmenter", "synthetic=none", "--no-progress"]
ITEMS = 4 * 2 * 8 * 2 + 4  # images x systems x SNRs x channels + the clean references
ENV = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")

HOLDER = textwrap.dedent("""
    import sys, time
    from gensemcom.folderlock import FolderLock
    lock = FolderLock(sys.argv[1], sys.argv[2], info={"rank": int(sys.argv[3]), "world": int(sys.argv[4])}).acquire()
    print("held", flush=True)
    time.sleep(120)
""")


def _hold(folder: Path, slot: str = "rank0", rank: int = 0, world: int = 1) -> subprocess.Popen:
    """Another process holding a slot of ``folder`` (until killed)."""
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), slot, str(rank), str(world)], env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held", p.stderr.read()
    return p


def test_second_writer_is_refused_and_named_then_a_dead_holder_is_taken_over(tmp_path, capsys):
    out = tmp_path / "sweep"
    holder = _hold(out)
    try:
        assert main([*ARGS, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"is being written by pid {holder.pid} on host {socket.gethostname()}" in err
        assert not (out / "records").exists()  # nothing computed, nothing written
        # demo --fresh does not delete a folder that another process writes
        from gensemcom.cli.demo import main as demo
        (out / "keep.txt").write_text("x")
        assert demo(["--out", str(out), "--fresh", "--no-progress"]) == 2
        assert (out / "keep.txt").is_file() and f"pid {holder.pid}" in capsys.readouterr().err
        # the merge into a folder being written is refused too
        with pytest.raises(FolderLockedError, match=f"pid {holder.pid}"):
            from gensemcom.evaluate import merge_records
            merge_records([], out)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the holder died without releasing: its lock file is still there, naming it, and is taken over
    assert f'"pid": {holder.pid}' in (out / "locks" / "rank0.lock").read_text()
    assert main([*ARGS, "--snr", "20", "--channels", "awgn", "--out", str(out)]) == 0
    assert len(read_records(out)) == 4 * 2 + 4
    assert (out / "locks" / "rank0.lock").read_text() == ""  # released: it names nobody


def test_a_sweep_of_another_world_is_refused(tmp_path, capsys):
    """A rank of a 2-process job holds the folder: a single-process sweep would duplicate its half."""
    out = tmp_path / "sweep"
    holder = _hold(out, "rank1", rank=1, world=2)
    try:
        assert main([*ARGS, "--out", str(out)]) == 2
        assert f"pid {holder.pid} on host {socket.gethostname()} (rank 1 of 2)" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    with FolderLock(out, "rank0", info={"rank": 0, "world": 2}) as lock:  # the same job's rank 0 is welcome
        assert lock.held and lock.holders() == []


def test_two_evaluate_processes_on_one_folder_compute_each_item_once(tmp_path, capsys):
    out = tmp_path / "sweep"
    first = subprocess.Popen([sys.executable, "-m", "gensemcom.cli.evaluate", *ARGS, "--out", str(out)], env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    records = out / "records" / "rank0.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (records.is_file() and records.read_text().count("\n") >= 1):
        assert first.poll() is None, first.stderr.read()[-2000:]
        time.sleep(0.02)
    assert main([*ARGS, "--out", str(out)]) == 2  # the second one, while the first computes
    assert f"pid {first.pid}" in capsys.readouterr().err
    assert first.wait(timeout=300) == 0, first.stderr.read()[-2000:]
    lines = [ln for p in (out / "records").glob("*.jsonl") for ln in p.read_text().splitlines()]
    assert len(lines) == ITEMS == len(read_records(out))  # every item once, no duplicate
    assert main([*ARGS, "--out", str(out)]) == 0  # once it is done, the folder is free (nothing to compute)
    assert len(read_records(out)) == ITEMS
