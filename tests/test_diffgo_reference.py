"""Diff-GO^n against the vectors made by running SuchinW/Diff-GO-n on CPU (tests/data/diffgo):
the condition (train and test edge paths), the receiver's FDS, a network call, the two NR-FD loss
calls with their drawn bank indices, the 1000-step guided sample from a bank entry with its
trajectory, and the full-size manifest. Every input, seed, index and timestep comes from the files."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file

from conftest import DATA, assert_close
from gensemcom.channels import LegacyGescoChannel, transmitted_channels
from gensemcom.diffusion.noise_bank import NoiseBank
from gensemcom.legacy import config_from_flags, model_and_diffusion_from_flags
from gensemcom.models import SemanticUNet
from gensemcom.semantics import instance_edges
from gensemcom.systems.diffgo import (
    IndexedDDPMSampler,
    diffgo_map,
    find_edges,
    image_edge_map,
    image_to_uint8,
    nrfd_losses,
    published_sampler_index,
    rgb_to_grey,
)

DIFFGO = DATA / "diffgo"
pytestmark = pytest.mark.usefixtures("one_thread")

# the edge paths of the published code: training feeds [-1, 1] (wrapping), testing (x + 1) / 2
PATHS = {"train": "wrapped", "test": "unit"}


@pytest.fixture(scope="module")
def cfg() -> dict:
    return json.loads((DIFFGO / "diffgo_tiny_public_config.json").read_text())


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    return load_file(str(DIFFGO / "diffgo_tiny_public_io.safetensors"))


@pytest.fixture(scope="module")
def tiny(cfg):
    model, diffusion = model_and_diffusion_from_flags(cfg["config"])
    weights = load_file(str(DIFFGO / "diffgo_tiny_public_weights.safetensors"))
    model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)
    return model.eval(), diffusion


def _seed_and_shape(text: str) -> tuple[int, tuple[int, ...]]:
    m = re.search(r"manual_seed\((\d+)\);\s*torch\.randn\(([\d,\s]+)\)", text)
    assert m, text
    return int(m.group(1)), tuple(int(v) for v in m.group(2).split(","))


@pytest.fixture(scope="module")
def bank(cfg) -> NoiseBank:
    seed, (size, *shape) = _seed_and_shape(cfg["tiny_bank"])
    return NoiseBank(seed, size, shape, compat="diffgo")


def _num_classes(cfg) -> int:
    return int(cfg["config"]["num_classes"])


@pytest.mark.parametrize("path", sorted(PATHS))
def test_image_edge_channel(io, path):
    kind = PATHS[path]
    u8 = image_to_uint8(io["x0"], kind)
    grey = rgb_to_grey(u8)
    assert torch.equal(grey, io[f"grey_{path}"])
    assert torch.equal(find_edges(grey), io[f"find_edges_{path}"])
    assert torch.equal(image_edge_map(io["x0"], kind), io[f"image_edges_{path}"])
    assert torch.equal(instance_edges(io["instances"]), io["inst_edges"])


@pytest.mark.parametrize("path", sorted(PATHS))
def test_condition(cfg, io, path):
    y = diffgo_map(io["labels"], _num_classes(cfg), io["instances"], io["x0"], PATHS[path])
    assert y.shape[1] == cfg["label_channels"]
    assert torch.equal(y, io[f"y_{path}"])


def test_the_two_paths_differ_and_the_wrap_is_the_difference(io):
    """The published train/test mismatch is real on these images: the grey levels differ
    wherever a channel value was negative."""
    assert not torch.equal(io["grey_train"], io["grey_test"])
    assert torch.equal(image_to_uint8(io["x0"].abs(), "wrapped"), (io["x0"].abs() * 255).trunc().to(torch.uint8))


def test_receiver_fds(io):
    """preprocess_input_FDS: GESCO's table noise on the present classes + edge, pooling off."""
    key = next(k for k in io if re.fullmatch(r"fds_snr\d+_y", k))
    snr = int(re.search(r"\d+", key).group())
    y = io["y_test"][:1]
    mask = transmitted_channels(y, has_edges=True)
    assert mask[0].nonzero().squeeze(1).tolist() == io[f"fds_snr{snr}_channels"].tolist()
    out = LegacyGescoChannel(snr, pool="none")(y, noise=[io[f"fds_snr{snr}_noise"]])
    assert_close(out.received, io[key], 1e-6, "FDS map")


def test_network_call(tiny, io):
    model, _ = tiny
    with torch.no_grad():
        assert_close(model(io["x"], io["t"], io["y_test"]), io["eps_out"], 1e-5, "eps_out")
        assert_close(model(io["x"], io["t"], torch.zeros_like(io["y_test"])), io["eps_out_uncond"], 1e-5,
                     "eps_out_uncond")


def test_nrfd_loss_calls(cfg, io, tiny, bank):
    """Each call: the bank index drawn by randint right after seeding, that entry as the forward
    noise and the target, x_t, the network output and the eps-MSE."""
    model, diffusion = tiny
    assert torch.allclose(torch.from_numpy(diffusion._arrays["betas"]), io["betas_linear1000"], rtol=0, atol=1e-15)
    for b, seed in enumerate(cfg["loss"]["global_rng_seed_before_call"]):
        x0, y, t = io["x0"][b:b + 1], io["y_train"][b:b + 1], io["loss_t"][b:b + 1]
        with torch.no_grad():
            terms = nrfd_losses(diffusion, model, x0, t, y, bank, torch.Generator().manual_seed(seed),
                                compat="diffgo")
            assert terms["bank_index"].tolist() == [int(io["loss_bank_index"][b])]
            noise = bank[int(terms["bank_index"])]
            assert torch.equal(noise, io["loss_noise"][b])
            x_t = diffusion.q_sample(x0, t, noise[None])
            assert_close(x_t[0], io["loss_x_t"][b], 1e-6, "x_t")
            assert_close(model(x_t, t, y)[0], io["loss_model_out"][b], 1e-5, "model_out")
        assert_close(terms["loss"], io["loss"][b:b + 1], 1e-5, "loss")
        # the CSV the published loss appends to (each value twice: noise None, then explicit)
        assert float(cfg["loss"]["loss_csv_first_lines"][2 * b]) == pytest.approx(float(terms["loss"]), rel=1e-5)
    with pytest.raises(ValueError, match="batch 1"):
        nrfd_losses(diffusion, model, io["x0"], io["loss_t"], io["y_train"], bank, compat="diffgo")


def test_nrfd_per_sample_default(io, tiny, bank):
    """The default draws one index per sample, at any batch size: the loss of each sample equals
    the loss of its own entry passed explicitly."""
    model, diffusion = tiny
    with torch.no_grad():
        terms = nrfd_losses(diffusion, model, io["x0"], io["loss_t"], io["y_train"], bank,
                            torch.Generator().manual_seed(5))
        explicit = diffusion.training_losses(model, io["x0"], io["loss_t"], io["y_train"],
                                             noise=bank[terms["bank_index"]])
    assert terms["bank_index"].shape == (2,)
    drawn = torch.randint(0, bank.size, (2,), generator=torch.Generator().manual_seed(5))
    assert torch.equal(terms["bank_index"], drawn)
    assert_close(terms["loss"], explicit, 1e-6, "per-sample loss")


def _step_rng(cfg) -> torch.Generator:
    seed = int(re.search(r"manual_seed\((\d+)\)", cfg["sampling"]["step_noise_rng"]).group(1))
    return torch.Generator().manual_seed(seed)


def test_step_noise_stream(cfg, io):
    """The reverse-step noise is the seeded stream, one (1, 3, H, W) draw per step."""
    g = _step_rng(cfg)
    shape = io["x_T"].shape
    draws = [torch.randn(shape, generator=g) for _ in range(cfg["sampling"]["steps"])]
    assert torch.equal(torch.stack(draws[:2]), io["sample_step_noise_first2"])
    assert torch.equal(torch.stack(draws[-2:]), io["sample_step_noise_last2"])
    total = sum(d.double().sum() for d in draws)
    assert float(total) == pytest.approx(float(io["sample_step_noise_sum"]), abs=1e-6)


def _sample_from(tiny, cfg, io, x, first_step: int, skip_draws: int):
    """Run the published sampler (DDPM, s, clip) from x at respaced index first_step, the step
    noise from the seeded stream after ``skip_draws`` draws; returns the trajectory by loop step."""
    model, diffusion = tiny
    g = _step_rng(cfg)
    for _ in range(skip_draws):
        torch.randn(io["x_T"].shape, generator=g)
    traj = {}
    last = diffusion.num_timesteps - 1

    def keep(i, x_prev, out):
        traj[last - i] = x_prev.clone()

    out = diffusion.sample(model, io["sample_y"], noise=x, guidance_scale=cfg["sampling"]["guidance"],
                           method=IndexedDDPMSampler([g]), start_step=first_step,
                           clip_denoised=cfg["sampling"]["clip_denoised"], callback=keep)
    return out, traj


def test_sample_start_of_the_chain(cfg, io, tiny, bank):
    """x_T is the bank entry the published sampler picks; the first two steps from it match."""
    assert int(io["sample_bank_index"]) == cfg["sampling"]["bank_index"]
    assert torch.equal(bank[int(io["sample_bank_index"])][None], io["x_T"])
    assert torch.equal(io["sample_y"], io["y_test"][cfg["sampling"]["sample_from"]:][:1])
    model, diffusion = tiny
    g = _step_rng(cfg)
    x, last = io["x_T"], diffusion.num_timesteps - 1
    steps = io["sample_traj_steps"].tolist()
    with torch.no_grad():
        for k in range(2):  # the first two loop steps (t = last, last - 1), p_sample with the stream's draws
            x = diffusion.p_sample(model, x, last - k, io["sample_y"], guidance_scale=cfg["sampling"]["guidance"],
                                   noise=torch.randn(x.shape, generator=g),
                                   clip_denoised=cfg["sampling"]["clip_denoised"])
            if k in steps:
                assert_close(x, io["sample_traj"][steps.index(k)], 1e-5, f"x after step {k}")


def test_sample_end_of_chain(cfg, io, tiny):
    """From the stored x after the second-to-last checkpoint step k, the remaining steps (their
    step noise = draws k+1.. of the stream) reproduce the final sample."""
    steps = io["sample_traj_steps"].tolist()
    last = tiny[1].num_timesteps - 1
    j = len(steps) - 3  # e.g. k = 989: ten steps to go
    k = steps[j]
    out, traj = _sample_from(tiny, cfg, io, io["sample_traj"][j], last - (k + 1), k + 1)
    for jj in range(j + 1, len(steps)):
        assert_close(traj[steps[jj]], io["sample_traj"][jj], 1e-5, f"x after step {steps[jj]}")
    assert_close(out, io["sample"], 1e-5, "sample")


@pytest.mark.slow
def test_full_1000_step_sample(cfg, io, tiny, bank):
    """The whole published chain: 1000 ancestral steps from the bank entry (about 50 s on one core)."""
    out, traj = _sample_from(tiny, cfg, io, bank[int(io["sample_bank_index"])][None], tiny[1].num_timesteps - 1, 0)
    for j, k in enumerate(io["sample_traj_steps"].tolist()):
        assert_close(traj[k], io["sample_traj"][j], 1e-4, f"x after step {k}")
    assert_close(out, io["sample"], 1e-4, "sample")


def test_published_sampler_index(cfg):
    """The constant index of image_sample.py, replayed from the dead seed code of the bank's
    constructor at the hard-coded full-size shape."""
    full = load_file(str(DIFFGO / "diffgo_bank_public.safetensors"))
    _, (size, *shape) = _seed_and_shape(cfg["bank"]["call"])
    seeds = cfg["bank"]["seed_vector"]
    assert torch.equal(full["seed_vector"], torch.tensor(seeds))
    assert published_sampler_index(shape, size, num_seeds=len(seeds)) == int(full["sampler_bank_index_as_coded"])
    assert int(full["sampler_bank_index_as_coded"]) == cfg["bank"]["sampler_bank_index_as_coded"]


def test_full_size_manifest():
    manifest = json.loads((DIFFGO / "diffgo_full_manifests.json").read_text())["cityscapes"]
    for flags in (manifest["config"], dict(manifest["config"], **{k: v[1] for k, v in
                                                                  manifest["train_config_differs"].items()})):
        cfg, diff = config_from_flags(flags)
        with torch.device("meta"):
            model = SemanticUNet(cfg)
        shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
        assert shapes == manifest["state_dict"]
        assert model.num_parameters() == manifest["num_params"]
        assert cfg.label_channels == manifest["config"]["num_classes"] + 1
    sdm = json.loads((DATA / "sdm" / "sdm_full_manifests.json").read_text())["cityscapes"]
    assert manifest["identical_to_sdm_cityscapes_manifest"] == (sdm["state_dict"] == manifest["state_dict"])
