"""``gensemcom quantize``: Q-GESCO's quantize_model.py command line, and a small run to the end."""

from __future__ import annotations

import copy
import json
import shlex

import pytest
import torch

from gensemcom.cli.main import main as gensemcom_main
from gensemcom.cli.quantize import main
from gensemcom.models.io import load_pretrained
from gensemcom.quant.model import load_qgesco_checkpoint, quantize_model
from gensemcom.quant.packed import load_packed
from gensemcom.zoo import bundled_path

#: the README command of ispamm/Q-GESCO, verbatim
QGESCO_README = (
    "--data_dir ./data_val --dataset_mode cityscapes --attention_resolutions 32,16,8 --diffusion_steps 100 "
    "--use_ddim True --image_size 256 --learn_sigma True --noise_schedule linear --num_channels 256 "
    "--num_head_channels 64 --num_res_blocks 2 --resblock_updown True --use_fp16 False --use_scale_shift_norm True "
    "--num_classes 35 --class_cond True --no_instance False --batch_size 1 --model_path "
    "./Cityscapes_ema_0.9999_190000.pt --results_path ./logs --s 2 --one_hot_label True --snr 100 --pool None "
    "--unet_model unet --use_pretrained --timesteps 100 --eta 0 --skip_type quad --ptq --weight_bit 8 "
    "--quant_mode qdiff --split --logdir ./logs --cond --cali_n 51 --cali_st 5 --cali_iters 20000 "
    "--cali_batch_size 1 --cali_data_path ./cali_data_256.pth")


def test_readme_command_is_accepted(tmp_path, monkeypatch) -> None:
    """Every flag parses; without the released checkpoint the run stops naming the missing file."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="--model_path ./Cityscapes_ema_0.9999_190000.pt"):
        main(shlex.split(QGESCO_README))
    assert gensemcom_main(["quantize"] + shlex.split(QGESCO_README)) == 2  # a one-line error, no traceback


def test_bad_flags(tmp_path) -> None:
    with pytest.raises(ValueError, match="quant_mode"):
        main(["--quant_mode", "brecq", "--logdir", str(tmp_path)])
    with pytest.raises(ValueError, match="at most 8"):
        main(["--weight_bit", "16", "--logdir", str(tmp_path)])


def test_small_run_writes_both_formats(tmp_path) -> None:
    out = tmp_path / "logs"
    argv = ["--dataset_mode", "synthetic", "--synthetic_size", "16x32", "--cali_n", "1", "--cali_st", "2",
            "--cali_steps", "2", "--cali_iters", "1", "--cali_batch_size", "1", "--ptq", "--split", "--quant_act",
            "--cali_iters_a", "0", "--weight_bit", "8", "--logdir", str(out), "--no-progress"]
    assert main(argv) == 0
    report = json.loads((out / "quantize.json").read_text())
    assert report["units"] and all(u["samples"] == 4 for u in report["units"])  # 1 x 2 snapshots x 2 branches
    assert report["accounting"]["summary"]["paper_claims"] == {"memory": 0.75, "flops": 0.79}
    packed, _ = load_packed(out / "packed")
    model, _, _ = load_pretrained(bundled_path("gesco_synthetic"))
    q = quantize_model(copy.deepcopy(model.float()), 8, 8, split=True, init=False)
    load_qgesco_checkpoint(q, str(out / "quantized_model.pth"))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 16, 32, generator=g)
    y = torch.zeros(1, model.config.label_channels, 16, 32)
    y[:, 2] = 1
    with torch.no_grad():
        a, b = packed(x, torch.tensor([300]), y), q(x, torch.tensor([300]), y)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # Q-GESCO's layout (fp32 weights + fp32 alpha) is about 8x our packed int8 file
    pth = (out / "quantized_model.pth").stat().st_size
    assert pth > 7 * (out / "packed" / "model.safetensors").stat().st_size


pytestmark = pytest.mark.usefixtures("one_thread")
