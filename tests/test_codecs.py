"""Image codecs under a bit budget and lossless label-map coding (gensemcom.codecs)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from gensemcom.codecs import (IMAGE_CODECS, QUALITY_RANGE, CodecError, decode_image, decode_labels,
                              encode_image, encode_labels, encode_to_budget, file_length)
from gensemcom.data.synthetic import SyntheticScenes


@pytest.fixture(scope="module")
def scene():
    item = SyntheticScenes(2, 64, 128, seed=1)[0]
    image = ((item["image"].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    return image, item["label"].numpy(), item["instance"].numpy()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / mse)


# ------------------------------------------------------------------------------------------------
# Image codecs
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("codec", IMAGE_CODECS)
def test_round_trip_shape_and_quality_ordering(scene, codec):
    image = scene[0]
    lo, hi = QUALITY_RANGE[codec]
    sizes, psnrs = [], []
    for q in (lo, (lo + hi) // 2, hi):
        data = encode_image(image, codec, q)
        out = decode_image(data, codec)
        assert out.shape == image.shape and out.dtype == np.uint8
        sizes.append(len(data))
        psnrs.append(psnr(image, out))
    assert sizes[0] < sizes[1] < sizes[2]
    assert psnrs[0] < psnrs[1] < psnrs[2]
    assert psnrs[2] > 25.0  # the highest quality is a faithful copy even with 4:2:0 chroma


@pytest.mark.parametrize("codec", ["jpeg", "hevc"])
def test_full_chroma_beats_420_at_high_quality(scene, codec):
    image = scene[0]
    q = QUALITY_RANGE[codec][1] - 10
    p420 = psnr(image, decode_image(encode_image(image, codec, q), codec))
    p444 = psnr(image, decode_image(encode_image(image, codec, q, chroma="444"), codec))
    assert p444 > p420 + 3.0  # the synthetic scenes have sharp colour edges


def test_headers_are_trimmed(scene):
    image = scene[0]
    jpeg = encode_image(image, "jpeg", 50)
    assert jpeg[:2] == b"\xff\xd8" and jpeg[2:4] != b"\xff\xe0"  # no JFIF APP0
    j2k = encode_image(image, "jpeg2000", 100)
    assert j2k[:2] == b"\xff\x4f" and b"OpenJPEG" not in j2k
    for codec, data in (("jpeg", jpeg), ("jpeg2000", j2k)):
        assert decode_image(data, codec).shape == image.shape


def test_bad_arguments(scene):
    image = scene[0]
    with pytest.raises(ValueError, match="unknown image codec"):
        encode_image(image, "bpg", 10)
    with pytest.raises(ValueError, match="quality"):
        encode_image(image, "jpeg", 0)
    with pytest.raises(ValueError, match="quality"):
        encode_image(image, "jpegxl", 100)
    with pytest.raises(ValueError, match="uint8"):
        encode_image(image.astype(np.float32), "jpeg", 10)
    with pytest.raises(ValueError, match="chroma"):
        encode_image(image, "webp", 10, chroma="444")
    with pytest.raises(ValueError, match="max_bits"):
        encode_to_budget(image, "jpeg", -1)
    with pytest.raises(ValueError, match="unknown image codec"):
        decode_image(b"", "png")


@pytest.mark.parametrize("codec", IMAGE_CODECS)
def test_corrupt_data_raises_codec_error(scene, codec):
    data = encode_image(scene[0], codec, (QUALITY_RANGE[codec][0] + QUALITY_RANGE[codec][1]) // 2)
    for bad in (data[: len(data) // 2], data[:10], b"not an image file at all" * 4):
        with pytest.raises(CodecError):
            decode_image(bad, codec)


def test_missing_plugin_names_the_package(scene, monkeypatch):
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # makes `import pillow_heif` fail
    with pytest.raises(ImportError, match="pip install pillow-heif"):
        encode_image(scene[0], "hevc", 50)
    monkeypatch.setitem(sys.modules, "pillow_jxl", None)
    with pytest.raises(ImportError, match="pip install pillow-jxl-plugin"):
        decode_image(b"\xff\x0a", "jpegxl")


@pytest.mark.parametrize("codec", IMAGE_CODECS)
@pytest.mark.parametrize("budget", [6000, 14000])
def test_budget_respected_and_tight(scene, codec, budget):
    image = scene[0]
    data, q = encode_to_budget(image, codec, budget)
    assert data is not None and 8 * len(data) <= budget
    assert data == encode_image(image, codec, q)  # deterministic encoders: the file is the quality's
    lo, hi = QUALITY_RANGE[codec]
    assert lo <= q <= hi
    if q < hi:
        assert 8 * len(encode_image(image, codec, q + 1)) > budget
    assert decode_image(data, codec).shape == image.shape


@pytest.mark.parametrize("codec", IMAGE_CODECS)
def test_budget_below_smallest_file(scene, codec):
    image = scene[0]
    lo = QUALITY_RANGE[codec][0]
    smallest = 8 * len(encode_image(image, codec, lo))
    assert encode_to_budget(image, codec, smallest - 1) == (None, None)
    data, q = encode_to_budget(image, codec, smallest)
    assert data is not None and 8 * len(data) <= smallest


def test_unlimited_budget_gives_highest_quality(scene):
    data, q = encode_to_budget(scene[0], "jpeg", float("inf"))
    assert q == QUALITY_RANGE["jpeg"][1] and data == encode_image(scene[0], "jpeg", q)


# ------------------------------------------------------------------------------------------------
# Label maps
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("codec", ["png", "webp"])
def test_label_round_trip_8bit_with_ignore(scene, codec):
    labels = scene[1].copy()
    labels[:5, :9] = 255  # ignore id
    data = encode_labels(labels, codec)
    out = decode_labels(data)
    assert out.dtype == np.int64 and np.array_equal(out, labels)
    if codec == "png":
        assert data[24] == 8  # IHDR bit depth
    assert file_length(data + b"trailing") == len(data)


def test_label_round_trip_16bit(scene):
    inst = scene[2]
    assert inst.max() > 255
    data = encode_labels(inst, "png")
    assert data[24] == 16
    assert np.array_equal(decode_labels(data), inst)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 65536, size=(13, 7))
    ids[0, 0] = 65535
    assert np.array_equal(decode_labels(encode_labels(ids)), ids)


def test_label_errors(scene):
    with pytest.raises(ValueError, match="webp"):
        encode_labels(scene[2], "webp")
    with pytest.raises(ValueError, match=">= 0"):
        encode_labels(np.full((4, 4), -1), "png")
    with pytest.raises(ValueError, match="65535"):
        encode_labels(np.full((4, 4), 70000), "png")
    with pytest.raises(ValueError, match="integers"):
        encode_labels(np.zeros((4, 4), np.float32), "png")
    with pytest.raises(ValueError, match="unknown label codec"):
        encode_labels(scene[1], "jpeg")
    data = encode_labels(scene[1], "png")
    with pytest.raises(CodecError):
        decode_labels(data[: len(data) // 2])
    with pytest.raises(CodecError):
        decode_labels(b"GIF89a....")
    with pytest.raises(CodecError):
        file_length(data[:-4])


def test_back_to_back_files(scene):
    a = encode_labels(scene[1], "webp")
    b = encode_labels(scene[2], "png")
    both = a + b
    n = file_length(both)
    assert n == len(a)
    assert np.array_equal(decode_labels(both[:n]), scene[1])
    assert np.array_equal(decode_labels(both[n:]), scene[2])
