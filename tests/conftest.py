"""Shared fixtures: the reference tiny model and the vectors produced by the original GESCO code.

``tests/data/sdm`` holds numbers produced by running ispamm/GESCO on CPU in float32 (see its
README in the project's shared reference material); the tests check our code reproduces them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gensemcom.legacy import model_and_diffusion_from_flags

DATA = Path(__file__).parent / "data"
SDM = DATA / "sdm"


@pytest.fixture(scope="session")
def ref_config() -> dict:
    return json.loads((SDM / "sdm_tiny_public_config.json").read_text())


@pytest.fixture(scope="session")
def ref_io() -> dict[str, torch.Tensor]:
    return load_file(str(SDM / "sdm_tiny_public_io.safetensors"))


@pytest.fixture(scope="session")
def ref_extra() -> dict[str, torch.Tensor]:
    return load_file(str(SDM / "sdm_tiny_public_extra.safetensors"))


@pytest.fixture(scope="session")
def ref_weights() -> dict[str, torch.Tensor]:
    return load_file(str(SDM / "sdm_tiny_public_weights.safetensors"))


@pytest.fixture(scope="session")
def ref_flags(ref_config) -> dict:
    return dict(ref_config["config"])


@pytest.fixture(scope="session")
def ref_model(ref_flags, ref_weights):
    """The tiny reference network (ddim25 process) with the reference's random weights."""
    model, diffusion = model_and_diffusion_from_flags(ref_flags)
    model.load_state_dict(ref_weights, strict=True)
    model.eval()
    return model, diffusion


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rel: float, what: str) -> None:
    """Max error relative to the expected tensor's scale (max |expected|, at least 1)."""
    scale = max(expected.abs().max().item(), 1.0)
    err = (actual - expected).abs().max().item()
    assert err <= rel * scale, f"{what}: max abs error {err:.3e} > {rel:.0e} x scale {scale:.3g}"


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module, restored after it. The test box has 2 cores shared
    with other jobs: small networks, BP decoding and 2048x2048 eigendecompositions gain nothing
    from a second thread, and competing thread pools make them several times slower. Modules opt in
    with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
