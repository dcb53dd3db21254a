"""Training: resume after a kill equals an uninterrupted run; data-parallel with 2 processes;
noise-aware maps; flags that would be silently ignored are refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gensemcom.cli.train import main as train_main
from gensemcom.data import SyntheticScenes
from gensemcom.diffusion import DiffusionConfig
from gensemcom.models import SemanticUNetConfig
from gensemcom.train import GESCO_TRAIN_NOISE_STDS, TrainConfig, Trainer, step_batch_indices

TINY = ["--image_size", "32", "--num_channels", "32", "--channel_mult", "1,2", "--attention_resolutions", "16",
        "--num_head_channels", "32", "--num_res_blocks", "1", "--learn_sigma", "True", "--spade_hidden", "32",
        "--synthetic_size", "32x64", "--synthetic_count", "24", "--batch_size", "4", "--no_progress"]


def _weights(run: Path, step: int) -> dict[str, dict[str, torch.Tensor]]:
    ck = run / "checkpoints" / f"step_{step:07d}"
    state = torch.load(ck / "trainer_state.pt", weights_only=True)
    return {"model": load_file(str(ck / "model.safetensors")), "ema": load_file(str(ck / "ema.safetensors")),
            "opt": {f"{i}.{k}": v for i, st in state["optimizer"]["state"].items() for k, v in st.items()
                    if isinstance(v, torch.Tensor)}}


def test_data_order_depends_only_on_seed_and_step():
    a = [step_batch_indices(s, 5, 12, seed=3) for s in range(10)]
    assert a == [step_batch_indices(s, 5, 12, seed=3) for s in range(10)]
    # each epoch is a permutation: 12 items per epoch
    flat = [i for batch in a for i in batch]
    for e in range(4):
        assert sorted(i for ep, i in flat if ep == e) == list(range(12))
    assert a != [step_batch_indices(s, 5, 12, seed=4) for s in range(10)]


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    steps = ["--steps", "8", "--save_interval", "2", "--log_interval", "1"]
    assert train_main(["--dataset_mode", "synthetic", "--out", str(tmp_path / "straight"), *TINY, *steps]) == 0

    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "gensemcom", "train", "--dataset_mode", "synthetic", "--out", str(run), *TINY, *steps]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "checkpoints" / "step_0000004").is_dir():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # mid-run: after the step-4 checkpoint, before the end
    proc.wait()
    assert (run / "checkpoints" / "latest.json").is_file()
    assert not (run / "model").exists(), "the run finished before it was killed; make it longer"

    assert train_main(["--dataset_mode", "synthetic", "--out", str(run), *TINY, *steps]) == 0
    a, b = _weights(tmp_path / "straight", 8), _weights(run, 8)
    for part in ("model", "ema", "opt"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}:{k} differs after resume"
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 9))  # no step logged twice
    straight = [json.loads(x) for x in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in log] == [r["loss"] for r in straight]


def test_two_process_data_parallel(tmp_path):
    run = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(Path(__file__).parent / "helpers" / "ddp_train.py"), str(run), *TINY,
           "--steps", "3", "--save_interval", "3", "--log_interval", "1"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    for r in (0, 1):
        assert json.loads((run / f"rank{r}.json").read_text()) == {"rc": 0, "world": 2}
    meta = json.loads((run / "checkpoints" / "step_0000003" / "meta.json").read_text())
    assert meta["step"] == 3
    state = torch.load(run / "checkpoints" / "step_0000003" / "trainer_state.pt", weights_only=True)
    assert state["world_size"] == 2 and set(state["rng"]) == {"0", "1"}
    # the two ranks drew different noise (seed + rank) but share the weights DDP keeps in sync
    assert not torch.equal(state["rng"]["0"]["generator"], state["rng"]["1"]["generator"])
    assert [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3]


def _trainer(tmp_path, **kw) -> Trainer:
    data = SyntheticScenes(8, 32, 64, seed=0)
    mc = SemanticUNetConfig(label_channels=data.num_classes + 1, image_size=32, model_channels=32,
                            channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,),
                            num_head_channels=32, layout="sdm", spade_hidden=32)
    return Trainer(mc, DiffusionConfig(), data, data.num_classes,
                   TrainConfig(out_dir=str(tmp_path), steps=2, batch_size=2, **kw))


def test_gesco_noise_aware_maps(tmp_path):
    tr = _trainer(tmp_path, noise_aware="gesco")
    y = torch.zeros(64, 13, 32, 64)
    seen = set()
    for _ in range(60):
        d = tr.condition.noisy(y, tr.gen) - y
        # the same noise in every channel of a sample
        assert torch.equal(d, d[:, :1].expand_as(d))
        std = d[:, 0].std().item()
        nearest = min(GESCO_TRAIN_NOISE_STDS, key=lambda s: abs(s - std))
        assert abs(std - nearest) < 0.02 * max(nearest, 0.05)
        seen.add(nearest)
    assert seen == set(GESCO_TRAIN_NOISE_STDS)


def test_channel_noise_aware_maps(tmp_path):
    tr = _trainer(tmp_path, noise_aware="channel", snr_range_db=(0.0, 0.0))
    y = torch.nn.functional.one_hot(torch.randint(0, 13, (2, 32, 64)), 13).permute(0, 3, 1, 2).float()
    noisy = tr.condition.noisy(y, tr.gen)
    assert noisy.shape == y.shape and (noisy - y).abs().mean() > 0.05


@pytest.mark.parametrize("flags,match", [
    (["--schedule_sampler", "loss-second-moment"], "only 'uniform'"),
    (["--ema_rate", "0.9999,0.99"], "one EMA rate"),
    (["--snr", "10"], "--snr has no effect in GESCO training"),
    pytest.param(["--use_fp16", "True"], "needs a GPU", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="fp16 runs on a GPU")),
    (["--batch_size", "6", "--microbatch", "4"], "not a multiple of --microbatch"),
    (["--dataset_mode", "kitti"], "use one of"),
])
def test_train_flags_are_refused_not_ignored(tmp_path, flags, match, capsys):
    argv = ["--dataset_mode", "synthetic", "--out", str(tmp_path), *TINY, "--steps", "1", *flags]
    with pytest.raises((SystemExit, ValueError)) as info:
        train_main(argv)
    text = capsys.readouterr().err + str(info.value)
    assert match in text
