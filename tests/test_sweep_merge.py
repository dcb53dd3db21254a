"""``evaluate --merge`` keeps everything a single sweep would report (issue 8 item 8): FID and KID
(the Inception features travel with the records) and the reasons of the skipped pairs."""

from __future__ import annotations

import json

from gensemcom.cli.evaluate import main
from gensemcom.data import build_eval_data
from gensemcom.evaluate import Sweep, SweepConfig
from gensemcom.systems.gesco import GESCOSystem
from gensemcom.systems.registry import build_system


def _run(folder, rank: int, world: int) -> Sweep:
    systems = {"jpeg+capacity": build_system("jpeg+capacity"), "gesco-map": GESCOSystem(None)}
    data = build_eval_data("synthetic:2", 32, 64, seed=7)
    # jpeg+capacity has no legacy channel, and 0 dB is not a key of GESCO's table: two skip reasons
    config = SweepConfig(channels=["awgn", "legacy"], snrs=[0.0, 20.0], batch_size=1, seed=3, fid=True,
                         save_images=1)
    sweep = Sweep(folder, systems, data, config, rank=rank, world=world)
    sweep.run(progress=False)
    return sweep


def _curves(results: dict) -> dict:
    return {(c["dataset"], c["system"], c["channel"]): {k: v for k, v in c.items() if k != "seconds_per_image"}
            for c in results["results"]}


def test_merged_shards_keep_fid_kid_and_skip_reasons(tmp_path):
    single = json.loads(_run(tmp_path / "one", 0, 1).finish().read_text())
    fid = _curves(single)[("synthetic", "jpeg+capacity", "awgn")]["fid"]
    assert len(fid) == 2 and all(v > 0 for v in fid)
    reasons = sorted(s["reason"] for s in single["skipped"])
    assert len(reasons) == 2 and "legacy" in reasons[0] + reasons[1] and "0" in reasons[1]

    for rank in (0, 1):  # shards run apart, as on two machines
        _run(tmp_path / f"shard{rank}", rank, 2)
    assert main(["--merge", str(tmp_path / "shard0"), str(tmp_path / "shard1"), "--out", str(tmp_path / "all")]) == 0
    merged = json.loads((tmp_path / "all" / "results.json").read_text())
    assert _curves(merged) == _curves(single)  # FID and KID included
    assert merged["skipped"] == single["skipped"]
    # the pictures came along too: a grid of the merged folder has every image
    from gensemcom.plot import compose_grid
    _, layout = compose_grid(tmp_path / "all", "synthetic", "awgn", ["jpeg+capacity"], ["0", "20"], count=1)
    assert layout["rows"] == ["#0 jpeg+capacity"]
