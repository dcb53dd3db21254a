"""SPIC's transmitter, receiver variants, rate accounting, link and registration.

The network is the reference tiny SPIC model (``tests/data/spic``; random weights), so images are
not meaningful; the tests check the numbers the pipeline must produce: file sizes and bpp counted
independently with the codecs, the start tensors in closed form, the channel-use cost from the
MCS, and clear errors on bad input. Sizes, classes and flags come from the reference config.
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from gensemcom.channels.coded import capacity_uses, get_mcs
from gensemcom.codecs import decode_image, decode_labels, encode_image, encode_labels
from gensemcom.systems.base import Batch
from gensemcom.systems.registry import SystemOptions, build_system
from gensemcom.systems.spic import (SPIC, SPIC_FIXED_PIXELS, SPICSystem, bpg_to_hevc_quality, heif_container_bytes,
                                    load_spic, training_coarse,
                                    parse_spic_flags, save_spic, spic_label_grey, spic_model_and_diffusion,
                                    spic_timesteps, upsample)

REF = Path(__file__).parent / "data" / "spic"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cfg() -> dict:
    return json.loads((REF / "spic_tiny_public_config.json").read_text())


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in load_file(str(REF / "spic_tiny_public_io.safetensors")).items()}


@pytest.fixture(scope="module")
def built(cfg):
    model, diffusion = spic_model_and_diffusion(shlex.split(cfg["config_flags"]))
    sd = {k: v.float() for k, v in load_file(str(REF / "spic_tiny_public_weights.safetensors")).items()}
    model.load_state_dict(sd, strict=True)
    return model.eval(), diffusion


@pytest.fixture(scope="module")
def short(cfg, built):
    """The same network over a 3-step window (fast link tests; the window is not a reference input)."""
    model, _ = built
    _, diffusion = spic_model_and_diffusion(shlex.split(cfg["config_flags"]) + ["--max_iter_time", "25"])
    return model, diffusion


def make(cfg, built, **kw) -> SPIC:
    model, diffusion = built
    c = cfg["config"]
    kw.setdefault("guidance_scale", cfg["guidance_scale"])
    return SPIC(model, diffusion, num_classes=c["num_classes"], coarse_size=(c["small_size"], c["large_size"]),
                max_iter_time=c["max_iter_time"], **kw)


def _uint8(x: torch.Tensor) -> list[np.ndarray]:
    return list(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())


# ------------------------------------------------------------------ transmitter and rate
@pytest.mark.parametrize("codec,quality", [("hevc", 30), ("jpeg", 75), ("webp", 60), ("jpegxl", 80),
                                           ("jpeg2000", 200)])
@pytest.mark.parametrize("label_codec", ["png", "webp", "jpegxl"])
def test_payloads_and_sent_rate_exact(cfg, built, io, codec, quality, label_codec):
    sp = make(cfg, built, image_codec=codec, quality=quality, label_codec=label_codec)
    x0, labels = io["x0"], io["label_ori"]
    payloads = sp.encode(x0, labels)
    area = F.interpolate(x0, (cfg["config"]["small_size"], cfg["config"]["large_size"]), mode="area")
    h, w = x0.shape[2:]
    for i, p in enumerate(payloads):
        # the coarse file is the codec on the rounded area downsample; the map file is lossless
        assert p.image_file == encode_image(_uint8(area)[i], codec, quality)
        assert p.label_file == encode_labels(labels[i].numpy(), label_codec)
        assert np.array_equal(decode_labels(p.label_file), labels[i].numpy())
        dec = torch.from_numpy(decode_image(p.image_file, codec)).permute(2, 0, 1).float() / 127.5 - 1
        assert torch.equal(p.coarse, dec)
    bits, bpp = sp.rate_bits(payloads, x0, labels)
    want = [8.0 * (len(p.label_file) + len(p.image_file)) for p in payloads]
    assert bits == want and bpp == [b / (h * w) for b in want]


def test_spic_compat_rate(cfg, built, io):
    """SPIC's evaluation: bilinear re-encode + grey label image, over a fixed 512 x 256."""
    sp = make(cfg, built, rate="spic", image_codec="jpeg", quality=60)
    x0, labels = io["x0"], io["label_ori"]
    payloads = sp.encode(x0, labels)
    bits, bpp = sp.rate_bits(payloads, x0, labels)
    bil = F.interpolate(x0, (cfg["config"]["small_size"], cfg["config"]["large_size"]), mode="bilinear",
                        align_corners=False)
    for i in range(x0.shape[0]):
        grey = spic_label_grey(labels[i].numpy())
        assert grey.max() == 255 or not (labels[i] == 255).any()
        want = 8 * (len(encode_image(_uint8(bil)[i], "jpeg", 60)) + len(encode_labels(grey, sp.label_codec)))
        assert bits[i] == want
        assert bpp[i] == want / SPIC_FIXED_PIXELS
    # it is not what is sent: the sent coarse file codes the area downsample
    assert [p.image_file for p in payloads] != [encode_image(a, "jpeg", 60) for a in _uint8(bil)]


def test_budget(cfg, built, io):
    x0, labels = io["x0"], io["label_ori"]
    h, w = x0.shape[2:]
    sp = make(cfg, built, image_codec="webp", coarse_bpp=1.0)
    for p in sp.encode(x0, labels):
        assert 8 * len(p.image_file) <= 1.0 * h * w
        assert p.quality is not None
    tiny = make(cfg, built, image_codec="hevc", coarse_bpp=0.01)
    with pytest.raises(ValueError, match="cannot code the .* coarse image within"):
        tiny.encode(x0, labels)
    with pytest.raises(ValueError, match="either quality or coarse_bpp"):
        make(cfg, built, quality=30, coarse_bpp=1.0)


def test_bad_input(cfg, built, io):
    sp = make(cfg, built, image_codec="jpeg", quality=50)
    x0, labels = io["x0"], io["label_ori"]
    bad = labels.clone()
    bad[0, 0, 0] = cfg["config"]["num_classes"]  # out of range and not the ignore id
    with pytest.raises(ValueError, match="label ids span"):
        sp.encode(x0, bad)
    with pytest.raises(ValueError, match="labels must lie in"):
        sp.receive(bad, io["lowres"], torch.Generator().manual_seed(0))
    wrong = F.interpolate(io["lowres"], scale_factor=2, mode="nearest")
    with pytest.raises(ValueError, match="coarse images are .* but this SPIC takes"):
        sp.receive(labels, wrong, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="larger than the images"):
        SPIC(sp.model, sp.diffusion, num_classes=sp.num_classes, coarse_size=(64, 128)).encode(x0, labels)
    with pytest.raises(ValueError, match="unknown image codec"):
        make(cfg, built, image_codec="bpg")
    with pytest.raises(ValueError, match="unknown label codec"):
        make(cfg, built, label_codec="flif")
    with pytest.raises(ValueError, match="unknown start"):
        make(cfg, built, start="noise")
    with pytest.raises(ValueError, match="max_iter_time -1 keeps no step"):
        spic_timesteps(1000, "10", -1)
    with pytest.raises(ValueError, match="unknown SPIC flags"):
        parse_spic_flags(["--no_such_flag", "1"])


# ------------------------------------------------------------------ receiver
class _Recorder(torch.nn.Module):
    """Wraps the network and records the x_t of the first call."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config, self.first = model, model.config, None
        self.shares_encoder = model.shares_encoder
        self.encode_condition = model.encode_condition

    def forward(self, x, t, y=None, **kw):
        if self.first is None:
            self.first = (x.clone(), t.clone())
        return self.model(x, t, y, **kw)


def test_start_noised_is_forward_noised_coarse(cfg, short, io):
    model, diffusion = short
    sp = make(cfg, short, start="noised")
    sp.model = _Recorder(model)
    seed = cfg["sample_rng_seed"]
    sp.receive(io["label_ori"], io["lowres"], torch.Generator().manual_seed(seed))
    x_first, t_first = sp.model.first
    z = torch.randn(io["lowres_up"].shape, generator=torch.Generator().manual_seed(seed))
    last = diffusion.num_timesteps - 1
    ab = diffusion.alphas_cumprod[last]
    want = math.sqrt(ab) * io["lowres_up"] + math.sqrt(1 - ab) * z
    assert (x_first - want).abs().max().item() < 1e-5
    assert t_first.tolist() == [diffusion.timesteps[-1]] * x_first.shape[0]


def test_start_coarse_is_the_upsampled_coarse(cfg, short, io):
    model, _ = short
    sp = make(cfg, short, start="coarse")
    sp.model = _Recorder(model)
    sp.receive(io["label_ori"], io["lowres"], torch.Generator().manual_seed(0))
    assert torch.equal(sp.model.first[0], io["sample_start"])


def test_full_chain_starts_from_noise(cfg, built, io):
    model, _ = built
    c = cfg["config"]
    m, d = spic_model_and_diffusion(shlex.split(cfg["config_flags"]) + ["--max_iter_time", str(c["diffusion_steps"]),
                                                                        "--timestep_respacing", "ddim4"])
    m.load_state_dict(model.state_dict())
    sp = SPIC(_Recorder(m.eval()), d, num_classes=c["num_classes"], coarse_size=(c["small_size"], c["large_size"]),
              max_iter_time=c["diffusion_steps"], start="coarse", guidance_scale=1.0)
    sp.receive(io["label_ori"], io["lowres"], torch.Generator().manual_seed(7))
    z = torch.randn(io["lowres_up"].shape, generator=torch.Generator().manual_seed(7))
    assert torch.equal(sp.model.first[0], z)


def test_ddim_deterministic_and_ddpm_seeded(cfg, short, io):
    sp = make(cfg, short, method="ddim", start="coarse")
    a = sp.receive(io["label_ori"], io["lowres"], torch.Generator().manual_seed(1))
    b = sp.receive(io["label_ori"], io["lowres"], torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    sp = make(cfg, short, method="ddpm", start="noised")
    a = sp.receive(io["label_ori"], io["lowres"], torch.Generator().manual_seed(1))
    b = sp.receive(io["label_ori"], io["lowres"], torch.Generator().manual_seed(1))
    c = sp.receive(io["label_ori"], io["lowres"], torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == io["x0"].shape and a.abs().max() <= 1 + 1e-6


def test_run_error_free(cfg, short, io):
    sp = make(cfg, short, image_codec="jpeg", quality=70, start="coarse")
    out = sp.run(io["x0"], io["label_ori"], torch.Generator().manual_seed(0))
    assert out["images"].shape == io["x0"].shape
    assert out["bpp"] == [b / io["x0"][0, 0].numel() for b in out["bits"]]


# ------------------------------------------------------------------ over a link
def _batch(cfg, io) -> Batch:
    return Batch(images=io["x0"], labels=io["label_ori"], instances=None, names=["a", "b"],
                 num_classes=cfg["config"]["num_classes"])


def test_system_ldpc_clean_and_cliff(cfg, short, io):
    sp = make(cfg, short, image_codec="jpeg", quality=50, start="coarse")
    system = SPICSystem(sp, link="ldpc", mcs="16qam-1/2")
    batch = _batch(cfg, io)
    mcs = get_mcs("16qam-1/2")
    payloads = sp.encode(batch.images, batch.labels)
    want_uses = [sum(math.ceil(8 * len(f) / mcs.k) * mcs.symbols_per_block for f in (p.label_file, p.image_file))
                 for p in payloads]
    good = system.run(batch, "awgn", 30.0, torch.Generator().manual_seed(0))
    assert not good.lost.any() and good.info["map_lost"] == [False, False]
    assert torch.equal(good.labels, batch.labels)
    assert good.channel_uses.tolist() == want_uses
    assert good.bits.tolist() == [float(p.bits) for p in payloads]
    bad = system.run(batch, "awgn", -10.0, torch.Generator().manual_seed(0))
    assert bad.lost.all() and torch.equal(bad.images, torch.zeros_like(bad.images))
    assert (bad.labels == batch.ignore_index).all()
    assert bad.channel_uses.tolist() == want_uses  # sent, then lost


def test_system_capacity_and_rayleigh(cfg, short, io):
    sp = make(cfg, short, image_codec="webp", quality=50, start="coarse")
    system = SPICSystem(sp, link="capacity")
    batch = _batch(cfg, io)
    payloads = sp.encode(batch.images, batch.labels)
    out = system.run(batch, "awgn", 5.0, torch.Generator().manual_seed(0))
    assert out.channel_uses.tolist() == [capacity_uses(8 * len(p.label_file), 5.0) + capacity_uses(
        8 * len(p.image_file), 5.0) for p in payloads]
    assert not out.lost.any()
    ray = system.run(batch, "rayleigh", 5.0, torch.Generator().manual_seed(0))
    assert len(ray.info["gain_power"]) == 2


def test_system_map_lost_shows_coarse(cfg, short, io):
    """Only the map lost: the upsampled coarse image is shown."""
    sp = make(cfg, short, image_codec="jpeg", quality=50, start="coarse", label_codec="png")
    system = SPICSystem(sp, link="capacity")
    batch = _batch(cfg, io)
    sent = system.transport.send

    def drop_maps(payloads, *a, **k):
        out = sent(payloads, *a, **k)
        if payloads[0][:4] == b"\x89PNG":
            for d in out:
                d.data = None
        return out

    system.transport.send = drop_maps
    out = system.run(batch, "awgn", 10.0, torch.Generator().manual_seed(0))
    coarse = torch.stack([p.coarse for p in sp.encode(batch.images, batch.labels)])
    assert out.info["map_lost"] == [True, True] and not out.lost.any()
    assert torch.equal(out.images, upsample(coarse, batch.images.shape[2:]).clamp(-1, 1))


def test_container_overhead(cfg, built, io):
    sp = make(cfg, built, image_codec="hevc", quality=30)
    p = sp.encode(io["x0"], io["label_ori"])[0]
    over = heif_container_bytes(p.image_file)
    assert 100 < over < len(p.image_file)


# ------------------------------------------------------------------ saving, loading, registry
def test_save_load_and_registry(cfg, built, io, tmp_path):
    model, _ = built
    c = cfg["config"]
    full = spic_model_and_diffusion(shlex.split(cfg["config_flags"]) + ["--max_iter_time", "1000"])[1]
    folder = save_spic(tmp_path / "m", model, full, num_classes=c["num_classes"],
                       coarse_size=(c["small_size"], c["large_size"]), max_iter_time=c["max_iter_time"],
                       timestep_respacing=c["timestep_respacing"], guidance_scale=cfg["guidance_scale"])
    sp = load_spic(folder, start="coarse")
    assert sp.diffusion.timesteps == io["respaced_timesteps"].tolist()
    g = torch.Generator().manual_seed(cfg["sample_rng_seed"])
    out = sp.receive(io["label_ori"], io["lowres"], g)
    assert (out - io["sample"]).abs().max().item() <= 1e-4
    system = build_system(f"spic:{folder}:jpeg", SystemOptions())
    assert isinstance(system, SPICSystem) and system.spic.image_codec == "jpeg" and system.link == "ldpc"
    assert build_system(f"spic+capacity:{folder}", SystemOptions()).link == "capacity"
    with pytest.raises((ValueError, FileNotFoundError), match="not a saved gensemcom model"):
        build_system(f"spic:{tmp_path / 'nothing'}", SystemOptions())


def test_training_coarse_and_bpg_mapping(cfg, io):
    c = cfg["config"]
    size = (c["small_size"], c["large_size"])
    assert torch.equal(training_coarse(io["x0"], size), io["lowres"])  # SPIC's "resize"
    coded = training_coarse(io["x0"], size, "jpeg", [40, 90])
    for i, q in enumerate([40, 90]):
        want = decode_image(encode_image(_uint8(io["lowres"])[i], "jpeg", q), "jpeg")
        assert torch.equal(coded[i], torch.from_numpy(want).permute(2, 0, 1).float() / 127.5 - 1)
    assert bpg_to_hevc_quality(c["compression_level"]) == 100 - 2 * c["compression_level"]
    with pytest.raises(ValueError, match="BPG quality"):
        bpg_to_hevc_quality(52)
    with pytest.raises(ValueError, match="one quality per image"):
        training_coarse(io["x0"], size, "jpeg", [40])


def _script(name: str):
    """SPIC's commands: ``gensemcom train``/``sample`` route SPIC's flags to these modules."""
    import importlib
    return importlib.import_module({"spic_image_train": "gensemcom.cli.train_spic",
                                    "spic_image_sample": "gensemcom.cli.sample_spic"}[name])


def test_seed_commands_run(tmp_path):
    """SPIC's image_train.py / image_sample.py flags through the scripts (synthetic data, tiny net)."""
    net = ["--attention_resolutions", "8", "--diffusion_steps", "1000", "--image_size", "64", "--learn_sigma", "True",
           "--noise_schedule", "linear", "--num_channels", "32", "--channel_mult", "1,1", "--num_head_channels", "32",
           "--num_res_blocks", "1", "--resblock_updown", "True", "--use_fp16", "True", "--use_scale_shift_norm",
           "True", "--num_classes", "12", "--class_cond", "True", "--large_size", "32", "--small_size", "16",
           "--no_instance", "True"]
    from gensemcom.cli.main import main as gensemcom  # SPIC's flags route train/sample to SPIC's commands
    assert gensemcom(["train", "--data_dir", "x", "--dataset_mode", "synthetic", "--lr", "1e-4",
                      "--batch_size", "1", "--use_checkpoint", "True", *net, "--out",
                      str(tmp_path / "train"), "--max_steps", "1", "--synthetic_count", "4"]) == 0
    assert (tmp_path / "train" / "model" / "config.json").is_file()
    assert gensemcom(["sample", "--data_dir", "x", "--dataset_mode", "synthetic", "--batch_size", "1", *net,
                      "--num_samples", "1", "--s", "1.5", "--max_iter_time", "20",
                      "--timestep_respacing", "100", "--model_path", str(tmp_path / "train" / "model"),
                      "--results_path", str(tmp_path / "res"), "--synthetic_count", "1"]) == 0
    res = json.loads((tmp_path / "res" / "results.json").read_text())
    assert res["timesteps"] == [0, 10, 20] and res["quality"] == bpg_to_hevc_quality(35)
    files = sorted(p.name for p in (tmp_path / "res" / "compressed").iterdir())
    hevc = (tmp_path / "res" / "compressed" / files[0]).read_bytes()
    assert files[0].endswith(".hevc") and res["num_samples"] == 1
    # bpp as sent: the coarse file plus the map file (JPEG XL lossless, the default here) over H x W
    from gensemcom.data.synthetic import SyntheticScenes
    item = SyntheticScenes(1, seed=2000)[0]
    bits = 8 * (len(hevc) + len(encode_labels(item["label"].numpy(), "jpegxl")))
    assert res["bpp_sent"] == bits / item["label"].numel()


def test_spec_options(cfg, built, tmp_path):
    from gensemcom.systems.spic import _parse_arg
    assert _parse_arg("runs/m:jpegxl:start=coarse:method=ddim:quality=40") == (
        "runs/m", "jpegxl", {"start": "coarse", "method": "ddim", "quality": 40})
    assert _parse_arg("hevc") == (None, "hevc", {})
    with pytest.raises(ValueError, match="unknown SPIC option 'speed'"):
        _parse_arg("speed=3")
    with pytest.raises(ValueError, match="expected int"):
        _parse_arg("quality=high")
    model, _ = built
    c = cfg["config"]
    full = spic_model_and_diffusion(shlex.split(cfg["config_flags"]) + ["--max_iter_time", "1000"])[1]
    folder = save_spic(tmp_path / "m", model, full, num_classes=c["num_classes"],
                       coarse_size=(c["small_size"], c["large_size"]))
    sys_ = build_system(f"spic:{folder}:webp:start=coarse:method=ddim:quality=33:max_iter_time=50:guidance=2",
                        SystemOptions())
    sp = sys_.spic
    assert (sp.image_codec, sp.start, sp.method, sp.quality, sp.guidance_scale) == ("webp", "coarse", "ddim", 33, 2.0)
    assert sp.diffusion.timesteps[-1] <= 50


def test_cityscapes_train_ids_and_seed_sample_command(cfg, tmp_path):
    """Cityscapes read as SPIC reads it (trainIds, ignore 255), through the image_sample.py flags."""
    from PIL import Image

    from gensemcom.data.cityscapes import CityscapesTrainIds, to_train_ids
    # cityscapesScripts: unlabeled 0 -> 255, road 7 -> 0, car 26 -> 13, caravan 29 -> 255, bicycle 33 -> 18
    assert to_train_ids(np.array([0, 7, 26, 29, 33])).tolist() == [255, 0, 13, 255, 18]
    h, w = cfg["image_hw"]
    ids = np.arange(h * w).reshape(h, w) % 34
    root = tmp_path / "cs"
    for k, stem in enumerate(["aachen_000000_000019", "aachen_000001_000019"]):
        img = root / "leftImg8bit" / "val" / "aachen" / f"{stem}_leftImg8bit.png"
        gt = root / "gtFine" / "val" / "aachen" / f"{stem}_gtFine_labelIds.png"
        img.parent.mkdir(parents=True, exist_ok=True)
        gt.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(((np.indices((h, w)).sum(0) * (k + 3)) % 256).astype(np.uint8)).convert("RGB").save(img)
        Image.fromarray(np.roll(ids, k, axis=1).astype(np.uint8)).save(gt)
    ds = CityscapesTrainIds(root, "val", size=h)
    item = ds[0]
    assert ds.num_classes == 19 and "instance" not in item
    assert torch.equal(item["label"], torch.from_numpy(to_train_ids(ids)))
    flags = shlex.split(cfg["config_flags"])
    _script("spic_image_sample").main(flags + [
        "--data_dir", str(root), "--dataset_mode", "cityscapes", "--num_samples", "2", "--max_iter_time", "20",
        "--compression_type", "down+bpg", "--model_path", str(REF / "spic_tiny_public_weights.safetensors"),
        "--results_path", str(tmp_path / "res")])
    res = json.loads((tmp_path / "res" / "results.json").read_text())
    assert res["num_samples"] == 2 and res["timesteps"][-1] <= 20
    grey = np.asarray(Image.open(tmp_path / "res" / "labels" / f"{Path(item['path']).name.split('.')[0]}.png"))
    assert np.array_equal(grey, spic_label_grey(item["label"].numpy()))


def test_bundled_model_runs():
    """The bundled synthetic-scenes SPIC model through the registry (a 3-step window to stay fast)."""
    from gensemcom.data.synthetic import SyntheticScenes
    folder = Path(__file__).parents[1] / "src" / "gensemcom" / "assets" / "spic_synthetic"
    assert (folder / "model.safetensors").stat().st_size < 8 * 2**20
    system = build_system("spic+capacity:max_iter_time=20", SystemOptions())
    sp = system.spic
    assert (sp.image_codec, sp.label_codec, sp.coarse_size) == ("jpegxl", "jpegxl", (16, 32))
    data = SyntheticScenes(2, seed=2000)
    items = [data[i] for i in range(2)]
    batch = Batch(images=torch.stack([it["image"] for it in items]), labels=torch.stack([it["label"] for it in items]),
                  instances=None, names=["a", "b"], num_classes=data.num_classes)
    out = system.run(batch, "awgn", 20.0, torch.Generator().manual_seed(0))
    assert not out.lost.any() and torch.equal(out.labels, batch.labels)
    assert out.images.shape == batch.images.shape and out.images.abs().max() <= 1


def test_steps_option_sets_the_window(cfg, io):
    from gensemcom.systems.spic import respacing_for_steps
    c = cfg["config"]
    n = len(io["respaced_timesteps"])
    # a --steps equal to the saved window's length keeps that window as it is
    bundled = json.loads((Path(__file__).parents[1] / "src" / "gensemcom" / "assets" / "spic_synthetic" /
                          "config.json").read_text())
    saved = bundled["spic"]
    window = spic_timesteps(bundled["diffusion"]["steps"], saved["timestep_respacing"], saved["max_iter_time"])
    assert build_system("spic", SystemOptions(steps=len(window))).spic.diffusion.timesteps == window
    for steps in (1, 7, n, 33):
        r = respacing_for_steps(c["diffusion_steps"], c["max_iter_time"], steps)
        assert len(spic_timesteps(c["diffusion_steps"], r, c["max_iter_time"])) == steps
    assert build_system("spic", SystemOptions(steps=5)).spic.diffusion.num_timesteps == 5
    with pytest.raises(ValueError, match="no respacing keeps"):
        respacing_for_steps(c["diffusion_steps"], 3, 10)
