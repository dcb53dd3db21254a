"""Classical image codecs under a bit budget, and lossless coding of label maps.

Image codecs (``IMAGE_CODECS``), all on 8-bit RGB ``(H, W, 3)`` uint8 numpy arrays:

============  ==========================  ===============  =========================================
codec         library                     ``quality``      meaning of ``quality`` (larger = more bits)
============  ==========================  ===============  =========================================
``jpeg``      Pillow (libjpeg)            1 .. 100         libjpeg quality factor; Huffman tables
                                                           optimised, baseline.
``webp``      Pillow (libwebp, lossy)     0 .. 100         libwebp quality, ``method=6``.
``jpeg2000``  Pillow (OpenJPEG)           1 .. 2400        target rate in hundredths of a bit per
                                                           pixel: one quality layer with compression
                                                           ratio ``24 bpp / (quality / 100)``; 9/7
                                                           wavelet, colour transform on, raw
                                                           codestream (no JP2 box).
``jpegxl``    pillow-jxl-plugin (libjxl)  1 .. 99          libjxl quality (mapped by libjxl to a
                                                           Butteraugli distance; below ~4 the
                                                           distance saturates and sizes stop
                                                           shrinking), effort 7, bare codestream.
``hevc``      pillow-heif (x265)          0 .. 100         x265 quality through libheif; one HEVC
                                                           intra picture in a HEIF file: the
                                                           stand-in for BPG.
============  ==========================  ===============  =========================================

Headers are kept minimal: no EXIF / XMP / ICC / thumbnails anywhere; JPEG's optional JFIF APP0
segment and OpenJPEG's "Created by OpenJPEG" comment are cut out of the files. HEIF keeps its
container (``ftyp`` + ``meta``, about 350 bytes), which BPG would not have: at small budgets
``hevc`` is handicapped by it.

Chroma: ``chroma=None`` is each codec's usual setting: 4:2:0 for ``jpeg``, ``webp`` (always) and
``hevc``; full-resolution chroma for ``jpeg2000`` and ``jpegxl`` (which have no such switch).
``chroma="444"`` is accepted by ``jpeg`` and ``hevc``.

:func:`encode_to_budget` returns the best-quality file that fits a bit budget.

Label maps (:func:`encode_labels` / :func:`decode_labels`) are coded losslessly: ``"png"`` (8-bit
grey for ids 0..255, the ignore id 255 included; 16-bit grey for ids up to 65535), ``"webp"``
(lossless, ids 0..255 only) or ``"jpegxl"`` (JPEG XL's lossless modular mode, 8-bit grey, ids
0..255, bare codestream; the successor of FLIF, which SPIC used and which no registry packages).
PNG and WebP files are self-delimiting (:func:`file_length`), so several can be sent back to back;
a bare JPEG XL codestream is not, so it travels as a payload of its own (hence ``LABEL_CODECS``,
the back-to-back ones, and ``LOSSLESS_LABEL_CODECS``, all of them).

Decoding a damaged file raises :class:`CodecError`, when the decoder notices; a file with flipped
bits in its entropy-coded data may also decode silently to a wrong image.
"""

from __future__ import annotations

import io
import math
import struct
from types import ModuleType

import numpy as np
from PIL import Image

__all__ = [
    "IMAGE_CODECS",
    "LABEL_CODECS",
    "LOSSLESS_LABEL_CODECS",
    "QUALITY_RANGE",
    "CodecError",
    "encode_image",
    "decode_image",
    "encode_to_budget",
    "encode_labels",
    "decode_labels",
    "file_length",
]

IMAGE_CODECS = ("jpeg", "webp", "jpeg2000", "jpegxl", "hevc")
LABEL_CODECS = ("png", "webp")
#: every lossless label codec; ``jpegxl`` files are not self-delimiting (see the module docstring)
LOSSLESS_LABEL_CODECS = LABEL_CODECS + ("jpegxl",)

#: inclusive (lowest, highest) ``quality`` per codec; a larger quality gives a larger file
QUALITY_RANGE: dict[str, tuple[int, int]] = {
    "jpeg": (1, 100),
    "webp": (0, 100),
    "jpeg2000": (1, 2400),
    "jpegxl": (1, 99),
    "hevc": (0, 100),
}

_CHROMA = {"jpeg": ("420", "444"), "hevc": ("420", "444"), "webp": ("420",)}

# How far above the binary-search result encode_to_budget keeps looking: file sizes of libwebp
# (and occasionally others) dip by a few bytes between neighbouring qualities.
_SCAN_WINDOW = 4


class CodecError(ValueError):
    """A file that its decoder cannot read (corrupt, truncated or of another format)."""


# ------------------------------------------------------------------------------------------------
# Plugins
# ------------------------------------------------------------------------------------------------

def _import_plugin(module: str, package: str, codec: str) -> ModuleType:
    try:
        return __import__(module)
    except ImportError as e:
        raise ImportError(f"codec {codec!r} needs the package {package!r}: pip install {package}") from e


def _heif() -> ModuleType:
    return _import_plugin("pillow_heif", "pillow-heif", "hevc")


def _jxl() -> ModuleType:
    return _import_plugin("pillow_jxl", "pillow-jxl-plugin", "jpegxl")


# ------------------------------------------------------------------------------------------------
# Checks
# ------------------------------------------------------------------------------------------------

def _check_codec(codec: str) -> str:
    if codec not in IMAGE_CODECS:
        raise ValueError(f"unknown image codec {codec!r}; expected one of {IMAGE_CODECS}")
    return codec


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"image must be a uint8 numpy array (H, W, 3), got {got}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image must not be empty, got {image.shape}")
    return np.ascontiguousarray(image)


def _check_quality(codec: str, quality: int) -> int:
    lo, hi = QUALITY_RANGE[codec]
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not lo <= quality <= hi:
        raise ValueError(f"quality for {codec!r} must be an int in [{lo}, {hi}], got {quality!r}")
    return int(quality)


def _check_chroma(codec: str, chroma: str | None) -> str | None:
    if chroma is None:
        return None
    allowed = _CHROMA.get(codec, ())
    if chroma not in allowed:
        raise ValueError(f"chroma {chroma!r} is not available for {codec!r}"
                         + (f"; use one of {allowed} or None" if allowed else "; use None"))
    return chroma


# ------------------------------------------------------------------------------------------------
# Header trimming
# ------------------------------------------------------------------------------------------------

def _strip_jfif(data: bytes) -> bytes:
    """Drop the JFIF APP0 segment that follows SOI; baseline decoders do not need it."""
    if data[:4] == b"\xff\xd8\xff\xe0":
        (length,) = struct.unpack(">H", data[4:6])
        return data[:2] + data[4 + length:]
    return data


def _strip_j2k_comments(data: bytes) -> bytes:
    """Drop COM (0xFF64) segments of a JPEG 2000 main header (between SOC and the first SOT).

    Tile-part lengths count from their own SOT marker, so the rest of the codestream is unchanged.
    """
    if data[:2] != b"\xff\x4f":
        return data
    out = [data[:2]]
    pos = 2
    while pos + 4 <= len(data):
        marker = data[pos:pos + 2]
        if marker == b"\xff\x90":  # SOT: end of the main header
            break
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if marker != b"\xff\x64":
            out.append(data[pos:pos + 2 + length])
        pos += 2 + length
    out.append(data[pos:])
    return b"".join(out)


# ------------------------------------------------------------------------------------------------
# Image codecs
# ------------------------------------------------------------------------------------------------

def encode_image(image: np.ndarray, codec: str, quality: int, chroma: str | None = None) -> bytes:
    """Compress one RGB image.

    Args:
        image: uint8 (H, W, 3).
        codec: one of :data:`IMAGE_CODECS`.
        quality: an int in ``QUALITY_RANGE[codec]`` (see the module docstring for its meaning).
        chroma: None (the codec's usual), or ``"420"`` / ``"444"`` where supported.

    Returns:
        The file's bytes.
    """
    codec = _check_codec(codec)
    image = _check_image(image)
    quality = _check_quality(codec, quality)
    chroma = _check_chroma(codec, chroma)
    h, w, _ = image.shape
    buf = io.BytesIO()
    if codec == "jpeg":
        Image.fromarray(image).save(buf, "JPEG", quality=quality, optimize=True,
                                    subsampling=0 if chroma == "444" else 2)
        return _strip_jfif(buf.getvalue())
    if codec == "webp":
        Image.fromarray(image).save(buf, "WEBP", quality=quality, method=6)
        return buf.getvalue()
    if codec == "jpeg2000":
        ratio = 2400.0 / quality  # 24 bpp raw / (quality / 100) bpp
        Image.fromarray(image).save(buf, "JPEG2000", quality_mode="rates", quality_layers=[ratio],
                                    irreversible=True, mct=1, no_jp2=True)
        return _strip_j2k_comments(buf.getvalue())
    if codec == "jpegxl":
        jxl = _jxl()
        enc = jxl.Encoder(mode="RGB", lossless=False, quality=quality, decoding_speed=0, effort=7,
                          use_container=False, use_original_profile=False, num_threads=1)
        return enc(image.tobytes(), w, h, jpeg_encode=False, exif=None, jumb=None, xmp=None, compress=False)
    heif = _heif()
    f = heif.from_bytes(mode="RGB", size=(w, h), data=image.tobytes())
    f.save(buf, format="HEIF", quality=quality, chroma=444 if chroma == "444" else 420,
           save_nclx_profile=False, exif=None, xmp=None)
    return buf.getvalue()


def decode_image(data: bytes, codec: str) -> np.ndarray:
    """Decompress a file made by :func:`encode_image`.

    Returns:
        uint8 (H, W, 3).

    Raises:
        CodecError: the decoder cannot read ``data``.
    """
    codec = _check_codec(codec)
    data = bytes(data)
    try:
        if codec == "jpegxl":
            _, info, raw, *_ = _jxl().Decoder(num_threads=1)(data)
            if info.mode != "RGB":
                raise CodecError(f"expected an RGB JPEG XL image, got mode {info.mode!r}")
            out = np.frombuffer(raw, np.uint8).reshape(info.height, info.width, 3).copy()
        elif codec == "hevc":
            heif = _heif()
            f = heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True)
            out = np.asarray(f.to_pillow().convert("RGB")).copy()
        else:
            fmt = {"jpeg": "JPEG", "webp": "WEBP", "jpeg2000": "JPEG2000"}[codec]
            with Image.open(io.BytesIO(data), formats=[fmt]) as im:
                im.load()
                out = np.asarray(im.convert("RGB")).copy()
    except CodecError:
        raise
    except ImportError:
        raise
    except Exception as e:  # each library has its own error types (OSError, RuntimeError, ...)
        raise CodecError(f"cannot decode {len(data)} bytes as {codec}: {e}") from e
    return out


def encode_to_budget(image: np.ndarray, codec: str, max_bits: float,
                     chroma: str | None = None) -> tuple[bytes | None, int | None]:
    """The highest quality whose file fits in ``max_bits`` bits.

    A binary search over ``QUALITY_RANGE[codec]`` (file sizes grow with quality, nearly
    monotonically), then a scan of a few qualities above the result to absorb small dips in size.
    On return the chosen file fits and the quality just above it (if any) was tried and did not.

    Args:
        image: uint8 (H, W, 3).
        codec: one of :data:`IMAGE_CODECS`.
        max_bits: the budget in bits, >= 0 (``inf``: the highest quality).
        chroma: as in :func:`encode_image`.

    Returns:
        ``(file, quality)``, or ``(None, None)`` when even the lowest quality does not fit.
    """
    codec = _check_codec(codec)
    image = _check_image(image)
    chroma = _check_chroma(codec, chroma)
    try:
        budget = float(max_bits)
    except (TypeError, ValueError):
        raise ValueError(f"max_bits must be a number >= 0, got {max_bits!r}") from None
    if math.isnan(budget) or budget < 0:
        raise ValueError(f"max_bits must be >= 0, got {max_bits!r}")
    lo, hi = QUALITY_RANGE[codec]
    cache: dict[int, bytes] = {}

    def fits(q: int) -> bool:
        if q not in cache:
            cache[q] = encode_image(image, codec, q, chroma)
        return 8 * len(cache[q]) <= budget

    if not fits(lo):
        return None, None
    if fits(hi):
        return cache[hi], hi
    while hi - lo > 1:  # invariant: lo fits, hi does not
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    best, q, misses = lo, lo + 1, 0
    qmax = QUALITY_RANGE[codec][1]
    while q <= qmax and misses < _SCAN_WINDOW:
        if fits(q):
            best, misses = q, 0
        else:
            misses += 1
        q += 1
    return cache[best], best


# ------------------------------------------------------------------------------------------------
# Label maps
# ------------------------------------------------------------------------------------------------

def encode_labels(labels: np.ndarray, codec: str = "png") -> bytes:
    """Losslessly compress a label (or instance) map.

    Args:
        labels: (H, W) integer ids >= 0 (numpy, or anything ``np.asarray`` takes, e.g. a tensor).
        codec: ``"png"`` (8-bit grey when every id is <= 255, else 16-bit grey, ids <= 65535),
            ``"webp"`` (lossless; ids <= 255 only) or ``"jpegxl"`` (lossless; ids <= 255 only).

    Returns:
        The file's bytes; :func:`decode_labels` gives ``labels`` back exactly.
    """
    if codec not in LOSSLESS_LABEL_CODECS:
        raise ValueError(f"unknown label codec {codec!r}; expected one of {LOSSLESS_LABEL_CODECS}")
    arr = np.asarray(labels)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"labels must be a non-empty (H, W) map, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {arr.dtype}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0:
        raise ValueError(f"labels must be >= 0, got {lo}")
    buf = io.BytesIO()
    if hi <= 255:
        im = Image.fromarray(arr.astype(np.uint8))
        if codec == "png":
            im.save(buf, "PNG", optimize=True)
        elif codec == "jpegxl":
            h, w = arr.shape
            enc = _jxl().Encoder(mode="L", lossless=True, quality=100, decoding_speed=0, effort=7,
                                 use_container=False, use_original_profile=True, num_threads=1)
            return enc(np.ascontiguousarray(arr, dtype=np.uint8).tobytes(), w, h, jpeg_encode=False, exif=None,
                       jumb=None, xmp=None, compress=False)
        else:
            im.save(buf, "WEBP", lossless=True, quality=100, method=6, exact=True)
        return buf.getvalue()
    if codec in ("webp", "jpegxl"):
        raise ValueError(f"{codec} codes ids up to 255 only, got {hi}; use codec='png' (16-bit)")
    if hi > 65535:
        raise ValueError(f"png codes ids up to 65535, got {hi}")
    Image.fromarray(arr.astype("<u2")).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def decode_labels(data: bytes) -> np.ndarray:
    """Decode a file made by :func:`encode_labels` (PNG, WebP or a JPEG XL codestream, recognised
    by its signature).

    Returns:
        int64 (H, W).

    Raises:
        CodecError: ``data`` is not a readable PNG / WebP label file.
    """
    data = bytes(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        fmt = "PNG"
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        fmt = "WEBP"
    elif data[:2] == b"\xff\x0a":
        try:
            _, info, raw, *_ = _jxl().Decoder(num_threads=1)(data)
        except ImportError:
            raise
        except Exception as e:
            raise CodecError(f"cannot decode {len(data)} bytes as a JPEG XL label map: {e}") from e
        if info.mode != "L":
            raise CodecError(f"expected a grey JPEG XL label map, got mode {info.mode!r}")
        return np.frombuffer(raw, np.uint8).reshape(info.height, info.width).astype(np.int64)
    else:
        raise CodecError("label data is neither PNG, WebP nor a JPEG XL codestream")
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as im:
            im.load()
            arr = np.asarray(im)
    except Exception as e:
        raise CodecError(f"cannot decode {len(data)} bytes as a {fmt} label map: {e}") from e
    if arr.ndim == 3:  # lossless WebP comes back as RGB(A) with R = G = B = id
        arr = arr[..., 0]
    return arr.astype(np.int64)


def file_length(data: bytes) -> int:
    """Length in bytes of the PNG or WebP file at the start of ``data`` (files sent back to back).

    PNG: the chunks are walked up to IEND; WebP: the RIFF size field.

    Raises:
        CodecError: ``data`` does not start with a complete PNG or WebP file.
    """
    data = bytes(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        pos = 8
        while pos + 8 <= len(data):
            (length,) = struct.unpack(">I", data[pos:pos + 4])
            kind = data[pos + 4:pos + 8]
            pos += 12 + length
            if kind == b"IEND":
                if pos > len(data):
                    break
                return pos
        raise CodecError("truncated PNG: no IEND chunk")
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        (size,) = struct.unpack("<I", data[4:8])
        end = 8 + size + (size & 1)
        if end > len(data):
            raise CodecError("truncated WebP file")
        return end
    raise CodecError("data starts with neither a PNG nor a WebP file")
