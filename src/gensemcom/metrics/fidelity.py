"""Pixel-fidelity metrics: PSNR, SSIM and MS-SSIM, one value per image.

Conventions shared by every function here:

* ``x`` and ``y`` are floating tensors of the same shape ``(B, C, H, W)`` (``C`` is 3 for our RGB
  images, any ``C >= 1`` works) with values in ``[0, data_range]``; values outside raise
  ``ValueError`` (clamp decoder outputs first).
* Computation is done in float64 whatever the input dtype; the result is a ``(B,)`` float64 tensor
  on the input's device.
* The metrics are symmetric in ``x`` and ``y``.

SSIM / MS-SSIM follow torchmetrics 1.9 (``StructuralSimilarityIndexMeasure`` /
``MultiScaleStructuralSimilarityIndexMeasure``) exactly by default. torchmetrics reflect-pads the
image by ``(window - 1) // 2`` and averages the SSIM map over the *whole* padded image, while
scikit-image (and Wang et al.'s original MATLAB code) average only over windows that lie inside the
image ("valid"); the two differ by about 1e-3 on 64x128 images. ``padding="valid"`` gives the latter.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["psnr", "ssim", "ms_ssim", "ms_ssim_num_scales", "MS_SSIM_WEIGHTS"]

#: Wang, Simoncelli & Bovik 2003, Table 1: the per-scale exponents of MS-SSIM, finest scale first.
MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

Padding = Literal["reflect", "valid"]


def _check_pair(x: Tensor, y: Tensor, data_range: float, what: str) -> tuple[Tensor, Tensor]:
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise ValueError(f"{what}: x and y must be torch tensors, got {type(x).__name__} and {type(y).__name__}")
    if x.shape != y.shape:
        raise ValueError(f"{what}: x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim != 4:
        raise ValueError(f"{what}: expected images of shape (B, C, H, W), got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{what}: got an empty tensor of shape {tuple(x.shape)}")
    if not (x.is_floating_point() and y.is_floating_point()):
        raise ValueError(f"{what}: expected floating-point images in [0, data_range], got {x.dtype} and {y.dtype}")
    if not (isinstance(data_range, (int, float)) and data_range > 0):
        raise ValueError(f"{what}: data_range must be a positive number, got {data_range!r}")
    for name, t in (("x", x), ("y", y)):
        lo, hi = t.min().item(), t.max().item()
        if lo < 0 or hi > data_range:
            raise ValueError(
                f"{what}: {name} has values in [{lo:.6g}, {hi:.6g}], outside [0, {data_range:g}]; "
                "clamp the images (e.g. x.clamp(0, 1)) before computing metrics"
            )
    return x.to(torch.float64), y.to(torch.float64)


def psnr(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio per image, in dB.

    ``10 * log10(data_range**2 / mse)`` with the MSE averaged over ``C, H, W`` of each image.

    Args:
        x, y: images ``(B, C, H, W)`` in ``[0, data_range]``.
        data_range: the peak value (1.0 for our images).

    Returns:
        ``(B,)`` float64; ``+inf`` for an image whose two versions are identical (MSE 0).
    """
    x, y = _check_pair(x, y, data_range, "psnr")
    mse = (x - y).square().flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)


def _gaussian_1d(window: int, sigma: float, device: torch.device) -> Tensor:
    offsets = torch.arange(window, dtype=torch.float64, device=device) - (window - 1) / 2
    g = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return g / g.sum()


def _blur(t: Tensor, g: Tensor) -> Tensor:
    """'valid' separable Gaussian filtering of every channel of ``t`` (N, C, H, W)."""
    c = t.shape[1]
    w = g.numel()
    t = F.conv2d(t, g.view(1, 1, w, 1).expand(c, 1, w, 1), groups=c)
    return F.conv2d(t, g.view(1, 1, 1, w).expand(c, 1, 1, w), groups=c)


def _check_ssim_params(window: int, sigma: float, k1: float, k2: float, padding: str, what: str) -> None:
    if not (isinstance(window, int) and window > 0 and window % 2 == 1):
        raise ValueError(f"{what}: window must be a positive odd integer, got {window!r}")
    if not sigma > 0:
        raise ValueError(f"{what}: sigma must be positive, got {sigma!r}")
    if not (k1 > 0 and k2 > 0):
        raise ValueError(f"{what}: k1 and k2 must be positive, got {k1!r} and {k2!r}")
    if padding not in ("reflect", "valid"):
        raise ValueError(f"{what}: padding must be 'reflect' or 'valid', got {padding!r}")


def _ssim_and_cs(
    x: Tensor, y: Tensor, data_range: float, window: int, sigma: float, k1: float, k2: float, padding: str
) -> tuple[Tensor, Tensor]:
    """Per-image mean SSIM and mean contrast-structure term ``(2 s_xy + C2) / (s_x^2 + s_y^2 + C2)``.

    The SSIM mean covers the padded map for ``padding='reflect'`` (torchmetrics) and the valid map
    for ``'valid'``; the cs mean always covers the valid region only, as torchmetrics does.
    """
    pad = (window - 1) // 2
    if padding == "reflect":
        x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        y = F.pad(y, (pad, pad, pad, pad), mode="reflect")
    g = _gaussian_1d(window, sigma, x.device)
    b = x.shape[0]
    stats = _blur(torch.cat([x, y, x * x, y * y, x * y]), g).split(b)
    mu_x, mu_y = stats[0], stats[1]
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    # E[x^2] - E[x]^2 can come out slightly negative from rounding; torchmetrics clamps it too.
    var_x = (stats[2] - mu_xx).clamp(min=0.0)
    var_y = (stats[3] - mu_yy).clamp(min=0.0)
    cov_xy = stats[4] - mu_xy
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    cs_map = (2 * cov_xy + c2) / (var_x + var_y + c2)
    ssim_map = (2 * mu_xy + c1) / (mu_xx + mu_yy + c1) * cs_map
    if padding == "reflect":
        cs_map = cs_map[..., pad : cs_map.shape[-2] - pad, pad : cs_map.shape[-1] - pad]
    return ssim_map.flatten(1).mean(dim=1), cs_map.flatten(1).mean(dim=1)


def ssim(
    x: Tensor,
    y: Tensor,
    data_range: float = 1.0,
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    padding: Padding = "reflect",
) -> Tensor:
    """Structural similarity (Wang et al. 2004) with a Gaussian window, per image.

    Local means, variances and covariance use a normalised ``window x window`` Gaussian of standard
    deviation ``sigma`` (population statistics, i.e. no sample-covariance correction);
    ``C1 = (k1 * data_range)^2``, ``C2 = (k2 * data_range)^2``; the SSIM map is averaged over
    channels and positions.

    Args:
        x, y: images ``(B, C, H, W)`` in ``[0, data_range]``.
        data_range: the dynamic range of the pixel values.
        window: odd window side. torchmetrics derives it from sigma (``2 * int(3.5 * sigma + 0.5) + 1``,
            i.e. 11 for sigma 1.5) and so does scikit-image with ``gaussian_weights=True``.
        sigma: standard deviation of the Gaussian window, in pixels.
        k1, k2: the SSIM stabilisers.
        padding: ``"reflect"`` (default) reflect-pads by ``(window - 1) // 2`` and averages the
            whole map: identical to torchmetrics ``StructuralSimilarityIndexMeasure(data_range=1.0,
            reduction='none')``. ``"valid"`` averages only windows inside the image: identical to
            ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, data_range=1, channel_axis=...)``.

    Returns:
        ``(B,)`` float64 in ``[-1, 1]``; 1 for identical images.

    Raises:
        ValueError: bad shapes/ranges/parameters, or an image smaller than the window
            (``'valid'``) or not larger than the padding (``'reflect'``).
    """
    _check_ssim_params(window, sigma, k1, k2, padding, "ssim")
    x, y = _check_pair(x, y, data_range, "ssim")
    h, w = x.shape[-2:]
    if min(h, w) < window:
        raise ValueError(f"ssim: images must be at least {window}x{window} for window={window}, got {h}x{w}")
    return _ssim_and_cs(x, y, data_range, window, sigma, k1, k2, padding)[0]


def ms_ssim_num_scales(height: int, width: int, window: int = 11, max_scales: int = len(MS_SSIM_WEIGHTS)) -> int:
    """How many MS-SSIM scales an image of ``height x width`` supports (0 if none).

    Scale ``i`` (0-based) sees the image average-pooled ``i`` times by 2, i.e. of side
    ``floor(side / 2**i)``; every scale must be at least ``window`` pixels so that its valid region is
    not empty. Hence ``n`` scales need ``min(height, width) >= window * 2**(n - 1)`` (176 for 5 scales
    and window 11; 44 for 3 scales, so a 64x128 image gets 3).
    """
    side = min(height, width)
    n = 0
    while n < max_scales and side >= window * 2**n:
        n += 1
    return n


def ms_ssim(
    x: Tensor,
    y: Tensor,
    data_range: float = 1.0,
    weights: Sequence[float] = MS_SSIM_WEIGHTS,
    scales: int | None = None,
    window: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    padding: Padding = "reflect",
) -> Tensor:
    """Multi-scale SSIM (Wang, Simoncelli & Bovik 2003), per image.

    ``MS-SSIM = prod_{i < n-1} relu(cs_i)^w_i * relu(ssim_{n-1})^w_{n-1}`` where ``cs_i`` is the mean
    contrast-structure term at scale ``i`` (always over the valid region), ``ssim_{n-1}`` the mean SSIM at
    the coarsest scale (see ``padding``), and each next scale is ``avg_pool2d(kernel=2, stride=2)`` of
    the previous one (odd sides are floored). Negative means are clamped to 0 before the power
    (torchmetrics' default ``normalize="relu"``), so the result is in ``[0, 1]``.

    Scale selection:

    * ``scales=None``: ``n = ms_ssim_num_scales(H, W, window, len(weights))``, the most scales the
      image supports (3 for 64x128, all 5 from 176x176 on).
    * ``scales=n`` explicitly: ``ValueError`` naming the minimal size ``window * 2**(n-1)`` if the
      image is smaller.
    * When ``n < len(weights)`` the first ``n`` weights are renormalised to sum to 1
      (``w[:n] / sum(w[:n])``); when ``n == len(weights)`` the weights are used as given (the standard
      ones sum to 1.0001, kept so that 5 scales equal the published definition and torchmetrics).

    With ``padding="reflect"`` this equals torchmetrics
    ``MultiScaleStructuralSimilarityIndexMeasure(data_range=1.0, reduction='none', betas=w_used)``.

    Args:
        x, y: images ``(B, C, H, W)`` in ``[0, data_range]``.
        data_range: dynamic range of the pixel values.
        weights: per-scale exponents, finest first.
        scales: number of scales to use, or None for as many as the size allows.
        window, sigma, k1, k2, padding: as in :func:`ssim`.

    Returns:
        ``(B,)`` float64 in ``[0, 1]``.
    """
    _check_ssim_params(window, sigma, k1, k2, padding, "ms_ssim")
    weights = [float(v) for v in weights]
    if not weights or any(v < 0 for v in weights):
        raise ValueError(f"ms_ssim: weights must be a non-empty sequence of non-negative numbers, got {weights}")
    x, y = _check_pair(x, y, data_range, "ms_ssim")
    h, w = x.shape[-2:]
    available = ms_ssim_num_scales(h, w, window, len(weights))
    if scales is None:
        if available == 0:
            raise ValueError(f"ms_ssim: images must be at least {window}x{window} for window={window}, got {h}x{w}")
        n = available
    else:
        if not (isinstance(scales, int) and 1 <= scales <= len(weights)):
            raise ValueError(f"ms_ssim: scales must be an integer in [1, {len(weights)}] or None, got {scales!r}")
        if scales > available:
            need = window * 2 ** (scales - 1)
            raise ValueError(
                f"ms_ssim: {scales} scales with window={window} need min(H, W) >= {need}, got {h}x{w} "
                f"(which supports {available}); use scales=None to pick the scales automatically"
            )
        n = scales
    used = weights[:n]
    if n < len(weights):
        total = sum(used)
        if total <= 0:
            raise ValueError(f"ms_ssim: the {n} weights used, {used}, sum to zero")
        used = [v / total for v in used]

    factors = []
    for i in range(n):
        sim, cs = _ssim_and_cs(x, y, data_range, window, sigma, k1, k2, padding)
        if i < n - 1:
            factors.append(cs.clamp(min=0.0) ** used[i])
            x = F.avg_pool2d(x, 2)
            y = F.avg_pool2d(y, 2)
        else:
            factors.append(sim.clamp(min=0.0) ** used[i])
    return torch.stack(factors).prod(dim=0)
