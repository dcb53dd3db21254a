"""Diff-GO^n: GESCO over a shared noise bank, with a goal-oriented noise-index transmitter.

Wanninayaka, Wijesinghe, Wang, Chao, Zhang, Ding, "Diff-GO^n: Enhancing Diffusion Models for
Goal-Oriented Communications", arXiv 2412.06980 (code: SuchinW/Diff-GO-n @ 65bc53d). The pipeline::

    image x (B,3,H,W) in [-1,1], labels (B,H,W), instances (B,H,W)
      --condition--> y (B, C+1, H, W): one-hot classes, then ONE edge channel =
                     instance edges + the image's FIND_EDGES map (values in [0, 2])
      --noise-index transmitter--> for K candidate indices i of the shared bank NB(eta):
                     x_hat_i = sample(model, y, x_T = NB[i], reverse-step noise from (seed, i));
                     i* = argmax_i score(x_hat_i, x)  (MS-SSIM, PSNR, LPIPS or the segmenter's mIoU)
      --channel--> y over GESCO's map link (analog, or coded) + i* in ceil(log2 N) bits
      --receiver--> x_hat = sample(model, y_received, x_T = NB[i*], the same step noise)

The receiver's image equals the transmitter's winning candidate bit for bit when the map arrives
unchanged (both run :meth:`DiffGO.generate` on one image at a time; see ``candidate_batch``).

What is exact to the published code (tests/test_diffgo_reference.py) and what is a named option:

- **Noise bank**: :class:`gensemcom.diffusion.noise_bank.NoiseBank`; ``compat="diffgo"`` is the
  published ``manual_seed(150); randn(1000, 3, H, W)`` stream, the default derives a seed per entry.
- **Image-edge channel** (:func:`image_edge_map`): ``edge_kind="unit"`` (default) feeds the image
  in [0, 1] to the 8-bit conversion, in training and in testing; this is the published *test*
  path exactly. ``edge_kind="wrapped"`` is the published *training* path, which feeds [-1, 1] to
  ``ToPILImage`` so that negative values wrap modulo 256: use it only to reproduce that code.
  ``edge_kind=None`` leaves the instance edges alone (GESCO's map).
- **NR-FD loss** (:func:`nrfd_losses`): per-sample bank indices at any batch size (default);
  ``compat="diffgo"``: one index per call and batch 1, as published.
- **Receiver denoising**: the published sampler's FDS has pooling switched off (``pool="none"``)
  and the GESCO table's noise on the present classes and the edge channel.
- **Published sampler**: 1000 ancestral steps, guidance 2, x_T = bank entry
  :func:`published_sampler_index` (23 under torch 2.13) for every image, step noise from the
  global RNG. Here the index is the transmitter's choice and the step noise a function of it.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from ..diffusion.gaussian import GaussianDiffusion
from ..diffusion.noise_bank import NoiseBank
from ..diffusion.samplers import DDPMSampler, Sampler, make_sampler
from .base import Batch, System, SystemOutput
from .gesco import MAP_CHANNELS, gesco_map, map_channel
from .registry import SystemOptions, register_system
from .transport import check_snr

__all__ = [
    "EDGE_KINDS",
    "SCORES",
    "image_to_uint8",
    "rgb_to_grey",
    "find_edges",
    "image_edge_map",
    "diffgo_map",
    "nrfd_losses",
    "BankNoise",
    "EarlyStopping",
    "IndexedDDPMSampler",
    "published_sampler_index",
    "step_seed",
    "DiffGO",
    "DiffGOSystem",
    "build_diffgo",
]

#: how the image reaches the 8-bit conversion of the edge map (see the module docstring)
EDGE_KINDS = ("unit", "wrapped")
#: candidate scores of the transmitter; higher is better for all but "lpips" (lower is better)
SCORES = ("ms_ssim", "psnr", "lpips", "miou")


# ---------------------------------------------------------------------------- the condition
def image_to_uint8(images: torch.Tensor, kind: str = "unit") -> torch.Tensor:
    """(B, 3, H, W) float images in [-1, 1] -> uint8, as ``ToPILImage`` (``mul(255).byte()``).

    ``"unit"``: ``(x + 1) / 2 * 255``, truncated toward zero, clamped to [0, 255] (values inside
    [-1, 1] need no clamping: the published test path). ``"wrapped"``: ``x * 255`` truncated and
    wrapped modulo 256, i.e. what ``.byte()`` does to the [-1, 1] image in the published training
    path (-0.21 -> -53.55 -> -53 -> 203).
    """
    if kind not in EDGE_KINDS:
        raise ValueError(f"unknown edge kind {kind!r}; use one of {EDGE_KINDS}")
    if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(f"images must be float (B, 3, H, W) in [-1, 1], got {tuple(images.shape)} {images.dtype}")
    x = images.float()
    if kind == "unit":
        return ((x + 1) / 2 * 255).trunc().clamp(0, 255).to(torch.uint8)
    return torch.remainder((x * 255).trunc().to(torch.int64), 256).to(torch.uint8)


def rgb_to_grey(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 RGB -> (B, H, W) uint8 luma, as PIL's ``convert("L")``:
    ``(19595 R + 38470 G + 7471 B + 2^15) >> 16`` (ITU-R 601-2 weights in 16-bit fixed point)."""
    if rgb.dtype != torch.uint8 or rgb.ndim != 4 or rgb.shape[1] != 3:
        raise ValueError(f"rgb must be uint8 (B, 3, H, W), got {tuple(rgb.shape)} {rgb.dtype}")
    r, g, b = rgb.to(torch.int64).unbind(1)
    return ((19595 * r + 38470 * g + 7471 * b + 0x8000) >> 16).to(torch.uint8)


def find_edges(grey: torch.Tensor) -> torch.Tensor:
    """PIL's ``ImageFilter.FIND_EDGES`` on (B, H, W) uint8: the 3x3 kernel with 8 at the centre
    and -1 around, clipped to [0, 255]; the 1-pixel border is the input unchanged (PIL copies it)."""
    if grey.dtype != torch.uint8 or grey.ndim != 3:
        raise ValueError(f"grey must be uint8 (B, H, W), got {tuple(grey.shape)} {grey.dtype}")
    g = grey.to(torch.int64)
    out = g.clone()
    if g.shape[1] >= 3 and g.shape[2] >= 3:
        c = g[:, 1:-1, 1:-1]
        around = sum(g[:, 1 + dy:g.shape[1] - 1 + dy, 1 + dx:g.shape[2] - 1 + dx]
                     for dy in (-1, 0, 1) for dx in (-1, 0, 1)) - c
        out[:, 1:-1, 1:-1] = (8 * c - around).clamp(0, 255)
    return out.to(torch.uint8)


def image_edge_map(images: torch.Tensor, kind: str = "unit") -> torch.Tensor:
    """Diff-GO^n's image-edge map: (B, 3, H, W) in [-1, 1] -> (B, 1, H, W) float32 in [0, 1]
    (``ToTensor(FIND_EDGES(ToPILImage(image).convert("L")))``); ``kind`` as :func:`image_to_uint8`."""
    return (find_edges(rgb_to_grey(image_to_uint8(images, kind))).float() / 255)[:, None]


def diffgo_map(labels: torch.Tensor, num_classes: int, instances: torch.Tensor | None, images: torch.Tensor | None,
               edge_kind: str | None = "unit", ignore_index: int | None = 255,
               instance_mode: str = "exact") -> torch.Tensor:
    """Diff-GO^n's condition (B, C + 1, H, W): one-hot classes, then instance edges plus the
    image-edge map (:func:`image_edge_map`) in one channel, values in [0, 2].

    ``edge_kind=None``: no image edges (GESCO's map; ``images`` may be None). Labels and the
    unlabelled-pixel rule as :func:`gensemcom.systems.gesco.gesco_map`.
    """
    if instances is None:
        raise ValueError("Diff-GO^n's condition has an edge channel: pass instances")
    y = gesco_map(labels, num_classes, instances, ignore_index, instance_mode=instance_mode)
    if edge_kind is None:
        return y
    if images is None:
        raise ValueError("the image-edge channel needs the images (or use edge_kind=None)")
    if images.shape[0] != y.shape[0] or images.shape[2:] != y.shape[2:]:
        raise ValueError(f"images {tuple(images.shape)} do not match the maps {tuple(y.shape)}")
    y[:, -1:] = y[:, -1:] + image_edge_map(images, edge_kind).to(y.device)
    return y


# ---------------------------------------------------------------------------- NR-FD training
def nrfd_losses(diffusion: GaussianDiffusion, model: nn.Module, x_0: torch.Tensor, t: torch.Tensor | int,
                y: torch.Tensor, bank: NoiseBank, generator: torch.Generator | None = None, *,
                compat: str | None = None, **kwargs: Any) -> dict[str, torch.Tensor]:
    """Noise-restricted forward diffusion: the training loss with the noise drawn from ``bank``.

    Args:
        x_0: (B, C, H, W) images in [-1, 1]; ``y`` their conditions; ``t`` respaced indices (B,).
        bank: entries of shape (C, H, W).
        generator: draws the bank indices (``torch.randint(0, N, (B,))``).
        compat: ``None``: one index per sample, any batch size; ``"diffgo"``: the published
            behaviour, one index per call, batch 1 only.
        kwargs: passed to :meth:`GaussianDiffusion.training_losses`.

    Returns:
        the loss terms (``"loss"``, ``"mse"``, ...; (B,) each) and ``"bank_index"`` (B,).
    """
    if compat not in (None, "diffgo"):
        raise ValueError(f"unknown NR-FD compat {compat!r}; use None or 'diffgo'")
    bank.check_shape(x_0.shape, "the images")
    b = x_0.shape[0]
    if compat == "diffgo" and b != 1:
        raise ValueError(f"compat='diffgo' reproduces the published NR-FD loss, which takes batch 1 (got {b}); "
                         "use compat=None for per-sample bank noise")
    idx, noise = bank.draw(b, generator, device=x_0.device)
    terms = diffusion.training_losses(model, x_0, t, y, noise=noise.to(x_0.dtype), generator=generator,
                                      return_terms=True, **kwargs)
    terms["bank_index"] = idx
    return terms


class BankNoise:
    """The trainer's noise provider for NR-FD: ``provider(shape, generator, device) -> noise``
    (B, C, H, W) drawn from ``bank`` per sample; the last indices are kept in :attr:`last_indices`.
    ``compat="diffgo"``: batch 1 only, as published."""

    def __init__(self, bank: NoiseBank, compat: str | None = None) -> None:
        if compat not in (None, "diffgo"):
            raise ValueError(f"unknown NR-FD compat {compat!r}; use None or 'diffgo'")
        self.bank, self.compat = bank, compat
        self.last_indices: torch.Tensor | None = None

    def __call__(self, shape: Sequence[int], generator: torch.Generator | None = None,
                 device: str | torch.device | None = None) -> torch.Tensor:
        self.bank.check_shape(shape, "the training images")
        if self.compat == "diffgo" and shape[0] != 1:
            raise ValueError(f"compat='diffgo' trains at batch 1 as published, got batch {shape[0]}")
        self.last_indices, noise = self.bank.draw(int(shape[0]), generator, device)
        return noise

    def config(self) -> dict[str, Any]:
        return {"noise": "bank", "bank": self.bank.config(), "compat": self.compat}


class EarlyStopping:
    """A stated, configurable early-stopping criterion for training (Diff-GO^n's paper proposes
    one but the published code has none; this rule is ours).

    Every check feeds one value of the monitored quantity (the training loss averaged since the
    last check, a validation loss, or a validation metric such as mIoU). The value compared is the
    mean of the last ``window`` checks, which smooths the per-step noise of diffusion losses.
    A check *improves* when that mean beats the best so far by more than ``min_delta`` relative
    (``mode="min"``: ``mean < best * (1 - min_delta)``; ``"max"``: ``mean > best * (1 + min_delta)``,
    with ``|best|`` for negative values). Training stops after ``patience`` consecutive checks
    without improvement, never before ``window`` checks.

    Args:
        mode: ``"min"`` (losses) or ``"max"`` (mIoU, MS-SSIM).
        window: checks averaged (>= 1).
        min_delta: required relative improvement (>= 0).
        patience: checks without improvement before stopping (>= 1).

    :meth:`state_dict` / :meth:`load_state_dict` carry it through a resumed run.
    """

    def __init__(self, mode: str = "min", window: int = 5, min_delta: float = 0.01, patience: int = 3) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if window < 1 or patience < 1:
            raise ValueError(f"window and patience must be >= 1, got {window} and {patience}")
        if not (math.isfinite(min_delta) and min_delta >= 0):
            raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta}")
        self.mode, self.window, self.min_delta, self.patience = mode, int(window), float(min_delta), int(patience)
        self.values: list[float] = []
        self.best: float | None = None
        self.bad_checks = 0
        self.stopped = False

    def _better(self, value: float, best: float) -> bool:
        margin = self.min_delta * abs(best)
        return value < best - margin if self.mode == "min" else value > best + margin

    def update(self, value: float) -> bool:
        """Record one check; True when training should stop."""
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"early stopping got a non-finite value {value}")
        self.values.append(value)
        if len(self.values) < self.window:
            return False
        mean = sum(self.values[-self.window:]) / self.window
        if self.best is None or self._better(mean, self.best):
            self.best, self.bad_checks = mean, 0
        else:
            self.bad_checks += 1
        self.stopped = self.bad_checks >= self.patience
        return self.stopped

    def config(self) -> dict[str, Any]:
        return {"mode": self.mode, "window": self.window, "min_delta": self.min_delta, "patience": self.patience}

    def state_dict(self) -> dict[str, Any]:
        return {"values": list(self.values), "best": self.best, "bad_checks": self.bad_checks,
                "stopped": self.stopped, **self.config()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if {k: state.get(k) for k in self.config()} != self.config():
            raise ValueError(f"early-stopping state {({k: state.get(k) for k in self.config()})} does not match "
                             f"this criterion {self.config()}")
        self.values, self.best = list(state["values"]), state["best"]
        self.bad_checks, self.stopped = int(state["bad_checks"]), bool(state["stopped"])


# ---------------------------------------------------------------------------- sampling from an index
def step_seed(seed: int, index: int) -> int:
    """The seed of the reverse-step noise for bank entry ``index`` under the shared ``seed``."""
    h = hashlib.blake2b(f"gensemcom-diffgo-steps:{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


class IndexedDDPMSampler(DDPMSampler):
    """Ancestral sampling whose step noise for sample b comes from its own CPU generator
    (``generators[b]``), so each image depends only on its own inputs, not on the batch."""

    name = "ddpm"

    def __init__(self, generators: Sequence[torch.Generator]) -> None:
        self.generators = list(generators)

    def step(self, diffusion, out, x_t, t, generator):
        if len(self.generators) != x_t.shape[0]:
            raise ValueError(f"{len(self.generators)} step generators for a batch of {x_t.shape[0]}")
        noise = torch.stack([torch.randn(x_t.shape[1:], generator=g) for g in self.generators]).to(x_t.device)
        return diffusion.ddpm_step(out, t, noise)


def published_sampler_index(shape: Sequence[int] = (3, 256, 512), bank_size: int = 1000,
                            seed_space: int = 100_000, num_seeds: int = 10) -> int:
    """The bank index the published ``image_sample.py`` uses for every image (23 under torch 2.13).

    Replays the end of its ``GaussianDiffusion.__init__`` on a CPU generator: ``manual_seed(0)``,
    ``num_seeds`` seeds from ``multinomial(ones(seed_space), num_seeds)``, then ``manual_seed(s);
    randn(1, *shape)`` for each; the sampler then draws ``randint(0, bank_size, (1,))``.
    """
    g = torch.Generator().manual_seed(0)
    seeds = torch.multinomial(torch.ones(seed_space), num_seeds, generator=g)
    for s in seeds.tolist():
        g.manual_seed(s)
        torch.randn(1, *shape, generator=g)
    return int(torch.randint(0, bank_size, (1,), generator=g))


# ---------------------------------------------------------------------------- the system
@dataclass
class DiffGO:
    """Diff-GO^n around a trained semantic diffusion model and a shared noise bank.

    Attributes:
        model, diffusion: the network (``label_channels = num_classes + 1``) and the sampling process.
        num_classes: classes of the one-hot map.
        bank: the shared :class:`NoiseBank` (entries shaped like the model's images).
        candidates: K, the indices the transmitter tries per image (1 <= K <= N).
        score: ``"ms_ssim"`` (default), ``"psnr"``, ``"lpips"`` (needs local weights) or
            ``"miou"`` (needs ``segmenter``): how a candidate is compared with the real image.
        candidate_policy: ``"random"``: K distinct indices drawn from the run's generator per
            image; ``"first"``: indices 0 .. K-1 for every image.
        step_seed: the shared seed of the reverse-step noise (DDPM): entry i uses the generator
            seeded with :func:`step_seed` ``(step_seed, i)``.
        edge_kind: the image-edge channel (:data:`EDGE_KINDS`), or None for instance edges only.
        guidance_scale, method, eta, clip_denoised: the sampler: ``"ddpm"`` (step noise from the
            index) or any deterministic sampler name (``"ddim"`` at eta 0, ``"dpm++2m"``, ``"unipc"``).
        channel, pool, k_factor: the map link as :func:`gensemcom.systems.gesco.map_channel`.
        candidate_batch: candidates generated per network batch. 1 (default): every candidate
            is generated exactly as the receiver will, so the winner needs no regeneration; > 1:
            faster on a GPU, and the winner is regenerated once at batch 1 (bit-exact again).
        segmenter, lpips: the scorers' networks (``score="miou"`` / ``"lpips"``).
    """

    model: nn.Module
    diffusion: GaussianDiffusion
    num_classes: int
    bank: NoiseBank
    candidates: int = 1
    score: str = "ms_ssim"
    candidate_policy: str = "random"
    step_seed: int = 0
    edge_kind: str | None = "unit"
    guidance_scale: float = 2.0
    method: str = "ddim"
    eta: float = 0.0
    clip_denoised: bool = True
    channel: str = "awgn"
    pool: str = "fds"
    k_factor: float = 3.0
    candidate_batch: int = 1
    segmenter: Any = None
    lpips: Any = None
    #: the last :meth:`select` call's transmitter cost
    stats: dict[str, float] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        lc = self.model.config.label_channels
        if lc != self.num_classes + 1:
            raise ValueError(f"Diff-GO^n conditions on {self.num_classes} classes + an edge channel "
                             f"({self.num_classes + 1} label channels); the model takes {lc}")
        if not isinstance(self.bank, NoiseBank):
            raise ValueError(f"bank must be a NoiseBank, got {type(self.bank).__name__}")
        if self.bank.shape[0] != self.model.config.in_channels:
            raise ValueError(f"the noise bank holds entries of shape {self.bank.shape} but the model generates "
                             f"{self.model.config.in_channels}-channel images")
        if isinstance(self.candidates, bool) or not isinstance(self.candidates, int) or self.candidates < 1:
            raise ValueError(f"candidates K must be an integer >= 1, got {self.candidates!r}")
        if self.candidates > self.bank.size:
            raise ValueError(f"candidates K={self.candidates} exceeds the bank's {self.bank.size} entries")
        if self.score not in SCORES:
            raise ValueError(f"unknown score {self.score!r}; use one of {SCORES}")
        if self.score == "miou" and self.segmenter is None:
            raise ValueError("score='miou' needs a segmenter (gensemcom.models.segmenter.load_segmenter)")
        if self.score == "lpips" and self.lpips is None:
            from ..metrics import LPIPS, lpips_available
            if not lpips_available():
                raise ValueError("score='lpips' needs local LPIPS weights ($GENSEMCOM_LPIPS_WEIGHTS); "
                                 "none found: use score='ms_ssim' or 'miou'")
            self.lpips = LPIPS()
        if self.candidate_policy not in ("random", "first"):
            raise ValueError(f"unknown candidate_policy {self.candidate_policy!r}; use 'random' or 'first'")
        if self.edge_kind is not None and self.edge_kind not in EDGE_KINDS:
            raise ValueError(f"unknown edge_kind {self.edge_kind!r}; use one of {EDGE_KINDS} or None")
        if self.method != "ddpm" and make_sampler(self.method, self.eta).stochastic:
            raise ValueError(f"method {self.method!r} (eta {self.eta}) draws step noise that is not derived from the "
                             "bank index: use 'ddpm' (index-seeded step noise) or a deterministic sampler")
        if self.channel not in MAP_CHANNELS:
            raise ValueError(f"unknown channel {self.channel!r}; use one of {MAP_CHANNELS}")
        if self.candidate_batch < 1:
            raise ValueError(f"candidate_batch must be >= 1, got {self.candidate_batch}")

    @property
    def index_bits(self) -> int:
        """Bits per image for the index: ``ceil(log2 N)``."""
        return self.bank.bits

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ transmitter
    def condition(self, labels: torch.Tensor, instances: torch.Tensor | None, images: torch.Tensor | None,
                  ignore_index: int | None = 255) -> torch.Tensor:
        """The map to send (B, C + 1, H, W) (:func:`diffgo_map`)."""
        return diffgo_map(labels, self.num_classes, instances, images, self.edge_kind, ignore_index)

    def generate(self, y: torch.Tensor, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] from maps ``y`` (B, C + 1, H, W) and bank indices (B,):
        x_T = bank[i_b]; with DDPM the step noise of sample b from :func:`step_seed` (i_b)."""
        idx = self.bank.check_index(torch.as_tensor(indices).reshape(-1))
        if idx.numel() != y.shape[0]:
            raise ValueError(f"{idx.numel()} indices for {y.shape[0]} maps")
        self.bank.check_shape((y.shape[0], 3, *y.shape[2:]), "the maps")
        device = self.device
        x_T = self.bank.batch(idx, device)
        if self.method == "ddpm":
            sampler: Sampler = IndexedDDPMSampler(
                [torch.Generator().manual_seed(step_seed(self.step_seed, int(i))) for i in idx])
        else:
            sampler = make_sampler(self.method, self.eta)
        return self.diffusion.sample(self.model, y.to(device), noise=x_T, guidance_scale=self.guidance_scale,
                                     method=sampler, clip_denoised=self.clip_denoised)

    def candidate_indices(self, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(count, K) int64: the candidate indices of ``count`` images (distinct per image)."""
        k, n = self.candidates, self.bank.size
        if self.candidate_policy == "first":
            return torch.arange(k).expand(count, k).clone()
        rows = []
        for _ in range(count):
            if n <= 1 << 16:
                rows.append(torch.randperm(n, generator=generator)[:k])
                continue
            chosen: list[int] = []
            while len(chosen) < k:  # huge banks: rejection of repeats
                for v in torch.randint(0, n, (k,), generator=generator).tolist():
                    if v not in chosen and len(chosen) < k:
                        chosen.append(v)
            rows.append(torch.tensor(chosen))
        return torch.stack(rows)

    def scores(self, candidates: torch.Tensor, image: torch.Tensor, labels: torch.Tensor | None = None,
               ignore_index: int = 255) -> torch.Tensor:
        """(K,) float64 scores of candidates (K, 3, H, W) against ``image`` (1, 3, H, W), all in
        [-1, 1]; higher is better (LPIPS is negated). ``labels`` (H, W) for ``"miou"``."""
        from ..metrics import miou_per_image, ms_ssim, psnr
        a = (candidates.float().cpu() + 1) / 2
        b = ((image.float().cpu() + 1) / 2).expand_as(a)
        if self.score == "ms_ssim":
            return ms_ssim(a.clamp(0, 1), b.clamp(0, 1)).double()
        if self.score == "psnr":
            return psnr(a.clamp(0, 1), b.clamp(0, 1)).double()
        if self.score == "lpips":
            with torch.inference_mode():
                return -self.lpips(a.clamp(0, 1), b.clamp(0, 1)).double().cpu()
        if labels is None:
            raise ValueError("score='miou' needs the image's label map")
        params = _params(self.segmenter)
        pred = self.segmenter.predict(candidates.to(params[0].device if params else candidates.device)).cpu()
        target = labels.cpu().expand(pred.shape[0], *labels.shape[-2:])
        return torch.nan_to_num(miou_per_image(pred, target, self.num_classes, ignore_index), nan=0.0)

    def select(self, y: torch.Tensor, images: torch.Tensor, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None, ignore_index: int = 255,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The noise-index transmitter: for each image try K candidate indices on the map ``y``
        it sends, score them against the real image and keep the best.

        Returns:
            best indices int64 (B,), their images (B, 3, H, W) (exactly what :meth:`generate`
            gives the receiver for the same map and index), and all scores float64 (B, K).
        """
        b = y.shape[0]
        cand = self.candidate_indices(b, generator)
        best = torch.empty(b, dtype=torch.int64)
        out = torch.empty((b, 3, *y.shape[2:]))
        all_scores = torch.empty(b, self.candidates, dtype=torch.float64)
        t0 = time.perf_counter()
        for i in range(b):
            imgs = []
            for k0 in range(0, self.candidates, self.candidate_batch):
                ks = cand[i, k0:k0 + self.candidate_batch]
                imgs.append(self.generate(y[i:i + 1].expand(len(ks), *y.shape[1:]), ks).cpu())
            imgs_t = torch.cat(imgs)
            s = self.scores(imgs_t, images[i:i + 1], None if labels is None else labels[i], ignore_index)
            all_scores[i] = s
            k = int(torch.argmax(s))  # first maximum: ties go to the earlier candidate
            best[i] = cand[i, k]
            out[i] = imgs_t[k] if self.candidate_batch == 1 else self.generate(y[i:i + 1], best[i:i + 1])[0].cpu()
        self.stats = {"transmitter_seconds_per_image": (time.perf_counter() - t0) / max(b, 1),
                      "generations_per_image": self.candidates + (self.candidate_batch > 1)}
        return best, out, all_scores

    # ------------------------------------------------------------------ link and receiver
    def send_map(self, y: torch.Tensor, snr_db: float, generator: torch.Generator | None = None):
        """The map over the configured channel (:func:`map_channel`) -> SemanticChannelOutput."""
        ch = map_channel(self.channel, snr_db, pool=self.pool, has_edges=True, k_factor=self.k_factor)
        return ch(y, generator=generator)

    def receive(self, received: torch.Tensor, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """The receiver: images (B, 3, H, W) in [-1, 1] from the received map and indices,
        one image at a time (so the result matches the transmitter's candidate exactly)."""
        idx = self.bank.check_index(torch.as_tensor(indices).reshape(-1))
        return torch.cat([self.generate(received[i:i + 1], idx[i:i + 1]).cpu() for i in range(received.shape[0])])

    def noiseless_received(self, y: torch.Tensor) -> torch.Tensor:
        """What the receiver conditions on when the map arrives without noise: ``y`` after the
        receiver's denoising (``pool``) with absent classes zero. The transmitter generates its
        candidates on this map, since it cannot know the channel noise."""
        return map_channel("none", math.inf, pool=self.pool, has_edges=True)(y).received

    def run(self, images: torch.Tensor, labels: torch.Tensor, instances: torch.Tensor, snr_db: float,
            generator: torch.Generator | None = None, ignore_index: int = 255) -> dict[str, Any]:
        """condition -> select the index on the noiseless received map -> send map (+ index,
        error-free) -> receive. With ``channel="none"`` the receiver's images equal the
        transmitter's chosen candidates bit for bit."""
        y = self.condition(labels, instances, images, ignore_index)
        best, tx_images, scores = self.select(self.noiseless_received(y), images, labels, generator, ignore_index)
        sent = self.send_map(y, snr_db, generator)
        rx = self.receive(sent.received, best)
        return {"images": rx, "transmitter_images": tx_images, "indices": best, "scores": scores, "sent": y,
                "received": sent.received, "channel_uses": sent.channel_uses,
                "index_bits": torch.full((y.shape[0],), self.index_bits, dtype=torch.int64)}


def _params(module: Any) -> list[torch.Tensor]:
    return list(module.parameters()) if isinstance(module, nn.Module) else []


class DiffGOSystem(System):
    """Diff-GO^n behind the sweep interface.

    Links (``link=``):

    ``"analog"`` (default)
        The map as GESCO sends it: present classes + the edge channel, ``ceil(P H W / 2)``
        complex uses; the image edges ride in the edge channel GESCO already sends, so they add
        no channel use. The index, ``ceil(log2 N)`` bits, is counted as ``ceil(bits /
        index_bits_per_use)`` further complex uses of a reliable digital link (default 1 bit per
        use, e.g. QPSK at rate 1/2) and assumed error-free, like the class list. The transmitter
        selects on the noiseless received map (the receiver's FDS applied to the clean map).
    ``"ldpc"`` / ``"capacity"``
        One payload per image over :class:`gensemcom.systems.transport.PayloadLink`: the label
        map and the instance map as lossless PNG, the 8-bit FIND_EDGES image-edge map as PNG when
        ``edge_kind`` is set, and the index in ``ceil(bits / 8)`` bytes. Cost: the payload's bits
        and the link's channel uses. A payload with a block error is lost (mid-grey image,
        labels ``ignore_index``). The receiver conditions on the decoded map exactly, so the
        transmitter selects on the clean map and the received image equals its choice.
    """

    channels = ("awgn", "rayleigh", "legacy")

    def __init__(self, diffgo: DiffGO, index_bits_per_use: float = 1.0, *, link: str = "analog",
                 mcs: Any = "16qam-1/2", num_iter: int = 20) -> None:
        if not index_bits_per_use > 0:
            raise ValueError(f"index_bits_per_use must be > 0, got {index_bits_per_use}")
        if link not in ("analog", "ldpc", "capacity"):
            raise ValueError(f"unknown link {link!r} for Diff-GO^n; use 'analog', 'ldpc' or 'capacity'")
        self.diffgo = diffgo
        self.index_bits_per_use = float(index_bits_per_use)
        self.link = link
        self.transport = None
        self.name = f"diffgo-k{diffgo.candidates}"
        if link != "analog":
            from .transport import PayloadLink
            self.transport = PayloadLink(link, mcs, num_iter=num_iter)
            self.channels = ("awgn", "rayleigh")
            self.name += f"+{self.transport.label}"
        self.stochastic = diffgo.candidate_policy == "random"

    def compatible(self, batch: Batch) -> str | None:
        if batch.num_classes != self.diffgo.num_classes:
            return f"{self.name} takes {self.diffgo.num_classes} classes, the data has {batch.num_classes}"
        if batch.instances is None:
            return f"{self.name} sends an edge channel but the data has no instance maps"
        return None

    def config(self) -> dict[str, Any]:
        d = self.diffgo
        cfg = {"system": self.name, "candidates": d.candidates, "score": d.score,
               "candidate_policy": d.candidate_policy, "bank": d.bank.config(), "index_bits": d.index_bits,
               "step_seed": d.step_seed, "edge_kind": d.edge_kind, "guidance_scale": d.guidance_scale,
               "method": d.method, "eta": d.eta, "steps": len(d.diffusion.timesteps), "num_classes": d.num_classes,
               "model": d.model.config.to_dict()}
        if self.transport is None:
            cfg.update(link="analog", pool=d.pool, index_bits_per_use=self.index_bits_per_use)
        else:
            cfg["link"] = self.transport.config()
        return cfg

    def run(self, batch: Batch, channel: str, snr_db: float,
            generator: torch.Generator | None = None) -> SystemOutput:
        self.check_channel(channel)
        reason = self.compatible(batch)
        if reason:
            raise ValueError(reason)
        if channel != "legacy":
            snr_db = check_snr(snr_db)
        if self.transport is not None:
            return self._run_digital(batch, channel, snr_db, generator)
        d = self.diffgo
        y = d.condition(batch.labels, batch.instances, batch.images, batch.ignore_index)
        best, _, scores = d.select(d.noiseless_received(y), batch.images, batch.labels, generator,
                                   batch.ignore_index)
        ch = map_channel(channel, snr_db, pool=d.pool, has_edges=True, k_factor=d.k_factor)
        sent = ch(y, generator=generator)
        images = d.receive(sent.received, best)
        index_uses = math.ceil(d.index_bits / self.index_bits_per_use)
        uses = sent.channel_uses.to(torch.float64) + index_uses
        return SystemOutput(images=images, labels=sent.received[:, :batch.num_classes].argmax(1), channel_uses=uses,
                            bits=torch.full((batch.size,), float(d.index_bits), dtype=torch.float64),
                            info={"noise": "legacy table std" if channel == "legacy" else "Es/N0 per complex use",
                                  "bank_index": best.tolist(), "best_score": scores.max(1).values.tolist(),
                                  "transmitter_seconds_per_image": d.stats.get("transmitter_seconds_per_image"),
                                  "index_channel_uses": index_uses})

    def _payloads(self, batch: Batch, best: torch.Tensor) -> tuple[list[bytes], list[dict[str, int]]]:
        from ..codecs import encode_labels
        d = self.diffgo
        edges = None
        if d.edge_kind is not None:
            edges = find_edges(rgb_to_grey(image_to_uint8(batch.images, d.edge_kind))).cpu().numpy()
        n_bytes = max(1, math.ceil(d.index_bits / 8))
        payloads, sizes = [], []
        for i in range(batch.size):
            files = [encode_labels(batch.labels[i].cpu().numpy()), encode_labels(batch.instances[i].cpu().numpy())]
            if edges is not None:
                files.append(encode_labels(edges[i]))
            payloads.append(b"".join(files) + int(best[i]).to_bytes(n_bytes, "big"))
            sizes.append({"label_bits": 8 * len(files[0]), "instance_bits": 8 * len(files[1]),
                          "edge_bits": 8 * len(files[2]) if edges is not None else 0, "index_bits": 8 * n_bytes})
        return payloads, sizes

    def _decode(self, data: bytes | None, h: int, w: int) -> tuple[torch.Tensor, ...] | None:
        """(labels, instances, edges or None, index) from a delivered payload, or None."""
        from ..codecs import CodecError, decode_labels, file_length
        if data is None:
            return None
        d = self.diffgo
        n_bytes = max(1, math.ceil(d.index_bits / 8))
        body, tail = data[:-n_bytes], data[-n_bytes:]
        maps = []
        try:
            for _ in range(3 if d.edge_kind is not None else 2):
                n = file_length(body)
                maps.append(torch.from_numpy(decode_labels(body[:n])))
                body = body[n:]
        except CodecError:
            return None
        index = int.from_bytes(tail, "big")
        if body or any(m.shape != (h, w) for m in maps) or index >= d.bank.size:
            return None
        return (*maps, None, index) if len(maps) == 2 else (*maps, index)

    def _run_digital(self, batch: Batch, channel: str, snr_db: float,
                     generator: torch.Generator | None) -> SystemOutput:
        from .transport import draw_gains, gain_powers
        d = self.diffgo
        b, h, w = batch.size, batch.labels.shape[1], batch.labels.shape[2]
        gains = draw_gains(channel, b, generator)
        y = d.condition(batch.labels, batch.instances, batch.images, batch.ignore_index)
        best, _, scores = d.select(y, batch.images, batch.labels, generator, batch.ignore_index)
        payloads, sizes = self._payloads(batch, best)
        assert self.transport is not None
        deliveries = self.transport.send(payloads, channel, snr_db, generator, gains)
        images = torch.zeros(b, 3, h, w)
        labels = torch.full((b, h, w), batch.ignore_index, dtype=torch.int64)
        lost = torch.ones(b, dtype=torch.bool)
        rx_index: list[int | None] = [None] * b
        for i, dl in enumerate(deliveries):
            got = self._decode(dl.data, h, w)
            if got is None:
                continue
            lab, inst, edges, index = got
            y_rx = gesco_map(lab[None], d.num_classes, inst[None], batch.ignore_index)
            if edges is not None:
                y_rx[:, -1:] = y_rx[:, -1:] + (edges.to(torch.uint8).float() / 255)[None, None]
            images[i] = d.receive(y_rx, [index])[0]
            labels[i], lost[i], rx_index[i] = lab, False, index
        info: dict[str, Any] = {"bank_index": best.tolist(), "received_index": rx_index,
                                "best_score": scores.max(1).values.tolist(),
                                "block_errors": [dl.block_errors for dl in deliveries],
                                "transmitter_seconds_per_image": d.stats.get("transmitter_seconds_per_image"),
                                **{k: [s[k] for s in sizes] for k in sizes[0]}}
        if gains is not None:
            info["gain_power"] = gain_powers(gains)
        return SystemOutput(images=images, labels=labels,
                            channel_uses=torch.tensor([dl.channel_uses for dl in deliveries], dtype=torch.float64),
                            bits=torch.tensor([8.0 * len(p) for p in payloads], dtype=torch.float64), lost=lost,
                            info=info)


# ---------------------------------------------------------------------------- registration
def _parse_arg(arg: str | None) -> tuple[str | None, int]:
    """``FOLDER``, ``K``, ``FOLDER:K`` or None -> (folder or None, K)."""
    if not arg:
        return None, 1
    folder, _, k = arg.rpartition(":")
    if not folder and not k.strip().isdigit():
        return k, 1
    if not k.strip().isdigit():
        raise ValueError(f"diffgo[:FOLDER][:K]: K must be a positive integer, got {k!r}")
    return (folder or None), int(k)


def build_diffgo(folder: str | None = None, candidates: int = 1, *, steps: int = 20, sampler: str = "ddim",
                 guidance_scale: float | None = None, device: str = "cpu", bank_size: int = 1000,
                 bank_seed: int = 150, bank_compat: str | None = None, score: str = "ms_ssim",
                 edge_kind: str | None = None, **kwargs: Any) -> DiffGO:
    """A :class:`DiffGO` from a saved model folder (default: the bundled GESCO model), DDIM
    ``steps``. ``edge_kind=None`` (default here) because the bundled GESCO model was trained
    without image edges; a model trained with them takes ``edge_kind="unit"``."""
    import json
    from pathlib import Path

    from ..zoo import bundled_path, load_gesco
    if candidates < 1:
        raise ValueError(f"candidates K must be >= 1, got {candidates}")
    g = load_gesco(folder, steps=steps, guidance_scale=guidance_scale, device=device, sampler=sampler)
    saved = json.loads((Path(folder or bundled_path("gesco_synthetic")) / "config.json").read_text())
    if "image_hw" not in saved:
        raise ValueError(f"{folder}/config.json has no image_hw: the bank's entry shape is unknown")
    h, w = (int(v) for v in saved["image_hw"])
    bank = NoiseBank(bank_seed, bank_size, (g.model.config.in_channels, h, w), compat=bank_compat)
    return DiffGO(g.model, g.diffusion, g.num_classes, bank, candidates=candidates, score=score,
                  edge_kind=edge_kind, guidance_scale=g.guidance_scale, method=g.method, **kwargs)


@register_system("diffgo", usage="diffgo[:FOLDER][:K]",
                 sends="GESCO's map (present classes + edges, analog) + the chosen noise-bank index",
                 receiver="FDS denoising, then the semantic diffusion model from bank entry [index] (DDIM)",
                 description="Diff-GO^n (Wanninayaka et al. 2024): the transmitter picks the best of K "
                             "bank indices by MS-SSIM; default the bundled GESCO model, K=1",
                 cost="GESCO's map uses + ceil(log2 N) index bits (10 for N=1000) at 1 bit per use")
def _diffgo(arg: str | None, o: SystemOptions) -> System:
    folder, k = _parse_arg(arg)
    return DiffGOSystem(build_diffgo(folder, k, steps=o.steps, sampler=o.sampler, guidance_scale=o.guidance_scale,
                                     device=o.device))


@register_system("diffgo-digital", usage="diffgo-digital[:FOLDER][:K]",
                 sends="label + instance maps PNG-coded (lossless) + the chosen index, 5G LDPC + QAM",
                 receiver="PNG decoding, then the semantic diffusion model from bank entry [index]; a lost "
                          "payload gives mid-grey",
                 description="Diff-GO^n with its map and index sent digitally (default the bundled GESCO model, K=1)",
                 cost="as many channel uses as the files + ceil(log2 N / 8) index bytes need")
def _diffgo_digital(arg: str | None, o: SystemOptions) -> System:
    folder, k = _parse_arg(arg)
    return DiffGOSystem(build_diffgo(folder, k, steps=o.steps, sampler=o.sampler, guidance_scale=o.guidance_scale,
                                     device=o.device), link="ldpc", mcs=o.mcs)
