"""SPIC: a semantic map and a coarse image as bits, a doubly conditioned diffusion receiver.

Pezone, Musa, Caire, Barbarossa, "Semantic-Preserving Image Coding based on Conditional Diffusion
Models", arXiv 2310.15737 (code: frapez1/SPIC). The whole pipeline::

    image (B,3,H,W) in [-1,1], labels (B,H,W) class ids (ignore 255)
      transmitter:
        labels ------------------------------ lossless label codec (JPEG XL / PNG / WebP) --> map file
        image --area downsample to (small_size, large_size) = (h, w)--> uint8 --image codec
                 (HEVC-intra, JPEG XL, JPEG 2000, WebP, JPEG; a quality or a bit budget)---> coarse file
      link: the two files (ideal bits, 5G LDPC at an MCS, or the capacity link)
      receiver:
        map file --> ids --> one-hot y (B, C, H, W); ignore pixels all-zero vectors (SPADE)
        coarse file --> (B,3,h,w) --bilinear upsample to (H, W)--> c (concatenated to x_t)
        x_start at the last kept step (see ``start``) --20 guided steps--> x_0 (B,3,H,W)

The network is :class:`~gensemcom.models.semantic_unet.SemanticUNet` with ``concat_channels=3``
(input channels 0-2 x_t, 3-5 the upsampled coarse image) and ``layout="sdm"`` (no encoder
``spade_norm``): the map enters through SPADE in the middle and decoder blocks only.
Classifier-free guidance ``eps_u + s (eps_c - eps_u)`` zeroes the map only; the unconditional
branch keeps the coarse image.

Sampling (SPIC's ``--timestep_respacing 100 --max_iter_time 200 --s 1.5``): the respaced steps are
filtered to ``t <= max_iter_time`` (:func:`spic_timesteps`: 20 steps, 0 .. 192) and the chain
starts at the last kept step. ``start`` chooses the start tensor:

- ``"noised"`` (default, principled): the upsampled coarse image forward-noised to that step,
  ``sqrt(abar) c + sqrt(1 - abar) z`` (SDEdit), which is what the network was trained to denoise;
- ``"coarse"`` (SPIC's code, exact): the upsampled coarse image itself, no noise added.

When ``max_iter_time >= diffusion_steps`` the chain starts from pure noise (as SPIC does).
``method`` is ``"ddpm"`` (ancestral, SPIC) or ``"ddim"``.

Rate (``rate=``): ``"sent"`` (default): the bytes of both files as sent x 8 over the full image's
H x W. ``"spic"``: SPIC's evaluation, reproduced: the coarse part re-encoded from a *bilinear*
downsample of the original (the model was conditioned on the area one), the map part the label
codec applied to SPIC's grey label PNG (values ``round(trainId * 255 / 35)``, ignore 255), both
divided by a fixed 512 x 256 whatever the image size (:func:`spic_bpp_of_files` is
``calculate_bpp``).

Codecs: BPG (SPIC's) is HEVC-intra in a small container and is not packaged; ``"hevc"`` (x265
through libheif) is the stand-in. A BPG file is a 4-byte magic, two bytes of pixel format, bit
depth and colour space, the width, height and picture-data length as ue7 varints, then a compact
HEVC header and the slice NAL units: some 10-20 bytes besides the coded picture. The HEIF file here
carries ``ftyp`` + ``meta`` boxes (handler, item info and location, ``hvcC`` with the full
VPS/SPS/PPS, ``ispe``): a few hundred bytes (358 at 64x128), counted in the rate and reported
separately as ``container_bits`` (:func:`heif_container_bytes`; an upper bound of the difference,
since BPG keeps a compact parameter set). ``hevc`` quality q sets x265's constant rate factor
``crf = (100 - q) / 2`` (libheif), where BPG's ``-q`` fixes the quantiser QP:
:func:`bpg_to_hevc_quality` maps ``-q 35`` to quality 30 (crf 35), a comparable operating point,
not the same file. FLIF (SPIC's map codec) is not packaged either; JPEG
XL's lossless mode is its successor (``label_codec="jpegxl"``, the default).
"""

from __future__ import annotations

import argparse
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..codecs import (IMAGE_CODECS, LOSSLESS_LABEL_CODECS, QUALITY_RANGE, CodecError, _check_chroma, decode_image,
                      decode_labels, encode_image, encode_labels, encode_to_budget)
from ..diffusion.gaussian import DiffusionConfig, GaussianDiffusion
from ..diffusion.schedules import respace_timesteps
from ..models.semantic_unet import SemanticUNet, SemanticUNetConfig
from ..semantics import instance_edges, one_hot
from .base import PHYSICAL_CHANNELS, Batch, System, SystemOutput
from .registry import SystemOptions, register_system
from .transport import LINKS, PayloadLink, check_snr, draw_gains, gain_powers

__all__ = [
    "SPIC", "SPICSystem", "SPICPayload", "SPIC_FLAG_DEFAULTS", "SPIC_SCRIPT_FLAGS", "STARTS", "RATES",
    "spic_timesteps", "parse_spic_flags", "spic_config_from_flags", "spic_model_and_diffusion", "spic_map",
    "downsample", "upsample", "spic_label_grey", "spic_label_read_back", "spic_bpp_of_files", "spic_miou",
    "heif_container_bytes", "load_spic", "save_spic", "SPIC_FIXED_PIXELS", "bpg_to_hevc_quality",
    "training_coarse", "respacing_for_steps",
]

STARTS = ("noised", "coarse")
RATES = ("sent", "spic")
METHODS = ("ddpm", "ddim")
#: the divisor of SPIC's ``calculate_bpp`` (512 x 256), whatever the image size
SPIC_FIXED_PIXELS = 512 * 256

#: SPIC's ``sr_model_and_diffusion_defaults()`` (guided-diffusion's model/diffusion defaults plus
#: the coarse-image and sampling-window flags)
SPIC_FLAG_DEFAULTS: dict[str, Any] = dict(
    image_size=64, num_classes=151, num_channels=128, num_res_blocks=2, num_heads=4, num_heads_upsample=-1,
    num_head_channels=-1, attention_resolutions="16,8", channel_mult="", dropout=0.0, class_cond=False,
    use_checkpoint=False, use_scale_shift_norm=True, resblock_updown=False, use_fp16=False,
    use_new_attention_order=False, no_instance=False,
    learn_sigma=False, diffusion_steps=1000, noise_schedule="linear", timestep_respacing="", use_kl=False,
    predict_xstart=False, rescale_timesteps=False, rescale_learned_sigmas=False,
    large_size=128, small_size=64, compression_type="down+bpg", compression_level=35, max_iter_time=1000,
    image_path="", generated_semantic="", coarse_path="",
)

#: flags of SPIC's ``image_train.py`` / ``image_sample.py`` outside the model (accepted, returned apart)
SPIC_SCRIPT_FLAGS: dict[str, Any] = dict(
    data_dir="", dataset_mode="", schedule_sampler="uniform", lr=1e-4, weight_decay=0.0, lr_anneal_steps=0,
    batch_size=1, microbatch=-1, ema_rate="0.9999", drop_rate=0.0, log_interval=10, save_interval=10000,
    resume_checkpoint="", fp16_scale_growth=1e-3, is_train=True, clip_denoised=True, num_samples=10000,
    use_ddim=False, model_path="", results_path="", s=1.0, input_img="",
)


# ------------------------------------------------------------------------------------------------
# Flags, network and process
# ------------------------------------------------------------------------------------------------

def spic_timesteps(num_steps: int, respacing: str | Sequence[int] | None, max_iter_time: int) -> list[int]:
    """SPIC's kept original timesteps: ``respace_timesteps(num_steps, respacing)`` filtered to
    ``t <= max_iter_time`` (``"100"``, 200 of 1000 -> 0, 10, ..., 182, 192: 20 steps)."""
    if isinstance(max_iter_time, bool) or not isinstance(max_iter_time, (int, np.integer)):
        raise ValueError(f"max_iter_time must be an integer timestep, got {max_iter_time!r}")
    kept = [t for t in respace_timesteps(num_steps, respacing) if t <= max_iter_time]
    if not kept:
        raise ValueError(f"max_iter_time {max_iter_time} keeps no step of respacing {respacing!r} "
                         f"over {num_steps} steps")
    return kept


def respacing_for_steps(num_steps: int, max_iter_time: int, steps: int) -> str:
    """The smallest ``timestep_respacing`` ``"N"`` whose window (:func:`spic_timesteps`) keeps
    exactly ``steps`` steps (``"100"`` for 20 steps under 200 of 1000); ValueError if none does."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    for n in range(steps, num_steps + 1):
        k = len(spic_timesteps(num_steps, str(n), max_iter_time))
        if k == steps:
            return str(n)
        if k > steps:
            break
    raise ValueError(f"no respacing keeps exactly {steps} steps at or below t={max_iter_time} of {num_steps}")


def _str2bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).lower()
    if s in ("yes", "true", "t", "y", "1"):
        return True
    if s in ("no", "false", "f", "n", "0"):
        return False
    raise ValueError(f"boolean value expected, got {v!r}")


def parse_spic_flags(flags: Mapping[str, Any] | Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """SPIC's command-line flags (argv list or dict) -> ``(model/diffusion flags, script flags)``,
    each completed with SPIC's defaults; types as SPIC's argparse (``"True"`` strings accepted).
    Unknown flags raise ValueError naming them."""
    known = {**SPIC_FLAG_DEFAULTS, **SPIC_SCRIPT_FLAGS}
    if isinstance(flags, Mapping):
        given = dict(flags)
    else:
        parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        for k in known:
            parser.add_argument(f"--{k}")
        ns, rest = parser.parse_known_args(list(flags))
        if rest:
            raise ValueError(f"unknown SPIC flags: {rest}")
        given = {k: v for k, v in vars(ns).items() if v is not None}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValueError(f"unknown SPIC flags: {unknown}")
    out: dict[str, Any] = {}
    for k, default in known.items():
        v = given.get(k, default)
        try:
            if isinstance(default, bool):
                v = _str2bool(v)
            elif isinstance(default, int):
                v = int(v)
            elif isinstance(default, float):
                v = float(v)
            else:
                v = str(v)
        except (TypeError, ValueError):
            raise ValueError(f"flag --{k}: cannot read {v!r} as {type(default).__name__}") from None
        out[k] = v
    return ({k: out[k] for k in SPIC_FLAG_DEFAULTS}, {k: out[k] for k in SPIC_SCRIPT_FLAGS})


def _channel_mult(image_size: int, spec: str) -> tuple[int | float, ...]:
    if spec == "":
        table = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}
        if image_size not in table:
            raise ValueError(f"no default channel_mult for image_size {image_size}; pass channel_mult")
        return table[image_size]
    return tuple(int(m) for m in spec.split(","))


def spic_config_from_flags(flags: Mapping[str, Any] | Sequence[str]
                           ) -> tuple[SemanticUNetConfig, DiffusionConfig, dict[str, Any]]:
    """SPIC flags -> (network config, diffusion config, SPIC settings).

    The network is SPIC's ``SuperResModel``: ``label_channels = num_classes`` (+1 instance-edge
    channel without ``no_instance``), ``concat_channels=3``, ``layout="sdm"``. The process keeps
    :func:`spic_timesteps`; the loss is guided-diffusion's hybrid (``rescale_learned_sigmas``
    would select SPIC's edited T/100 rescaling, which its recipes never use: rejected).
    The settings hold ``coarse_size`` (small_size, large_size) = (height, width),
    ``max_iter_time``, ``compression_type``/``compression_level`` and the kept timesteps.
    """
    f, _ = parse_spic_flags(flags)
    if not f["class_cond"]:
        raise ValueError("class_cond=False: SPIC's network needs the semantic map (pass --class_cond True)")
    if f["use_kl"]:
        raise ValueError("use_kl=True (a pure variational-bound loss) is not supported")
    if f["rescale_learned_sigmas"]:
        raise ValueError("rescale_learned_sigmas=True selects SPIC's edited RESCALED_MSE (bound x T/100), "
                         "which no SPIC recipe uses and this package does not implement")
    for k in ("image_size", "num_classes", "num_channels", "diffusion_steps", "small_size", "large_size"):
        if f[k] < 1:
            raise ValueError(f"flag {k}={f[k]} must be at least 1")
    attn = tuple(int(r) for r in f["attention_resolutions"].split(",")) if f["attention_resolutions"] else ()
    model_cfg = SemanticUNetConfig(
        label_channels=f["num_classes"] + (0 if f["no_instance"] else 1),
        image_size=f["image_size"], model_channels=f["num_channels"],
        channel_mult=_channel_mult(f["image_size"], f["channel_mult"]),
        num_res_blocks=f["num_res_blocks"], attention_resolutions=attn, num_heads=f["num_heads"],
        num_head_channels=f["num_head_channels"], num_heads_upsample=f["num_heads_upsample"],
        attention_order="new" if f["use_new_attention_order"] else "legacy",
        out_channels=6 if f["learn_sigma"] else 3, dropout=f["dropout"],
        use_scale_shift_norm=f["use_scale_shift_norm"], resblock_updown=f["resblock_updown"],
        layout="sdm", concat_channels=3, gradient_checkpointing=f["use_checkpoint"],
    )
    kept = spic_timesteps(f["diffusion_steps"], f["timestep_respacing"] or "", f["max_iter_time"])
    diff_cfg = DiffusionConfig(
        steps=f["diffusion_steps"], schedule=f["noise_schedule"], respacing=kept,
        prediction="x0" if f["predict_xstart"] else "epsilon",
        variance="learned_range" if f["learn_sigma"] else "fixed_large", loss="hybrid",
        rescale_timesteps=f["rescale_timesteps"],
    )
    settings = {"num_classes": f["num_classes"], "instances": not f["no_instance"],
                "coarse_size": [f["small_size"], f["large_size"]], "max_iter_time": f["max_iter_time"],
                "timestep_respacing": f["timestep_respacing"], "timesteps": kept,
                "compression_type": f["compression_type"], "compression_level": f["compression_level"]}
    return model_cfg, diff_cfg, settings


def spic_model_and_diffusion(flags: Mapping[str, Any] | Sequence[str], device: str | torch.device = "cpu"
                             ) -> tuple[SemanticUNet, GaussianDiffusion]:
    """SPIC's ``sr_create_model_and_diffusion`` from its flags; ``device="meta"`` builds the
    shapes only (the full 653M-parameter model without memory)."""
    model_cfg, diff_cfg, _ = spic_config_from_flags(flags)
    with torch.device(device):
        model = SemanticUNet(model_cfg)
    return model, GaussianDiffusion.from_config(diff_cfg)


# ------------------------------------------------------------------------------------------------
# Maps, resampling, SPIC's evaluation formulas
# ------------------------------------------------------------------------------------------------

def spic_map(labels: torch.Tensor, num_classes: int, ignore_index: int = 255,
             instances: torch.Tensor | None = None) -> torch.Tensor:
    """SPIC's semantic input: one-hot (B, num_classes, H, W) with ``ignore_index`` pixels as
    all-zero vectors (SPIC maps ignore to class 19 of a 20-channel one-hot and drops the last
    channel: the same tensor), plus the instance-edge channel when ``instances`` are given.

    Any other id outside ``0 .. num_classes - 1`` raises ValueError naming it.
    """
    labels = torch.as_tensor(labels)
    if labels.ndim == 4 and labels.shape[1] == 1:
        labels = labels[:, 0]
    y = one_hot(labels, num_classes, ignore_index=ignore_index)
    if instances is not None:
        y = torch.cat([y, instance_edges(torch.as_tensor(instances)).to(y.dtype)], dim=1)
    return y


def _check_size(size: Sequence[int], what: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be (height, width), got {size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"{what} must be positive, got {(h, w)}")
    return h, w


def downsample(images: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(B,3,H,W) -> (B,3,h,w) by area averaging (SPIC's ``F.interpolate(mode="area")``);
    ``size`` = (small_size, large_size) = (height, width)."""
    h, w = _check_size(size, "coarse size")
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got {tuple(images.shape)}")
    if h > images.shape[2] or w > images.shape[3]:
        raise ValueError(f"coarse size {(h, w)} is larger than the image {tuple(images.shape[2:])}")
    return F.interpolate(images, (h, w), mode="area")


def upsample(coarse: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(B,3,h,w) -> (B,3,H,W) bilinearly, ``align_corners=False``, no antialiasing (what SPIC's
    ``SuperResModel`` concatenates to x_t, and its chain's start)."""
    h, w = _check_size(size, "image size")
    return F.interpolate(coarse, (h, w), mode="bilinear", align_corners=False)


def spic_label_grey(train_ids: np.ndarray | torch.Tensor) -> np.ndarray:
    """SPIC's saved label PNG value: ``save_image(id / 255 * 255 / 35)``, i.e.
    ``floor(id * 255 / 35 + 0.5)`` in float32 clamped to 255 (ignore 255 -> 255); uint8."""
    ids = torch.as_tensor(np.asarray(train_ids)).float()
    x = ids / 255.0 * 255.0 / 35.0
    return x.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).numpy()


def spic_label_read_back(grey: np.ndarray) -> np.ndarray:
    """SPIC's ``get_semantic_maps``: ``grey // 7`` with 36 (from 255) -> 19; int64."""
    ids = np.asarray(grey).astype(np.int64) // 7
    ids[ids == 36] = 19
    return ids


def spic_bpp_of_files(*groups: Sequence[int], pixels: int = SPIC_FIXED_PIXELS) -> float:
    """SPIC's printed BPP: for each group of files (``.bpg`` byte counts, ``.flif`` byte counts),
    the mean over files of ``bytes * 8 / pixels``; the sum over groups (``calculate_bpp``).
    (SPIC then rounds the printed value to 4 digits.)"""
    total = 0.0
    for sizes in groups:
        sizes = list(sizes)
        if not sizes:
            raise ValueError("a group of files is empty (SPIC divides by the file count)")
        total += sum(int(b) * 8 / pixels for b in sizes) / len(sizes)
    return total


def spic_miou(gt: np.ndarray | torch.Tensor, pred: np.ndarray | torch.Tensor, num_classes: int = 19,
              ignore_id: int | None = None) -> float:
    """SPIC's ``calculate_mIoU`` over a set of maps (any shape, values 0 .. num_classes).

    Ground-truth pixels equal to ``ignore_id`` (default ``num_classes``, SPIC's 19) are left out
    of the prediction; per class c < num_classes, ``I = #(pred == gt == c)``, ``U = #pred_c +
    #gt_c - I`` (predictions of ``num_classes`` are not a class), ``IoU = I / (U + eps)`` with
    ``eps = np.spacing(1)``, and the mean over *all* classes (absent ones count as 0).
    """
    ignore = num_classes if ignore_id is None else ignore_id
    g = np.asarray(gt).astype(np.int64)
    p = np.asarray(pred).astype(np.int64)
    if g.shape != p.shape:
        raise ValueError(f"ground truth {g.shape} and prediction {p.shape} differ in shape")
    keep = g != ignore
    inter = np.zeros(num_classes, np.int64)
    area_p = np.zeros(num_classes, np.int64)
    area_g = np.zeros(num_classes, np.int64)
    for c in range(num_classes):
        pc = (p == c) & keep
        gc = g == c
        inter[c] = np.sum(pc & gc)
        area_p[c] = np.sum(pc)
        area_g[c] = np.sum(gc)
    union = area_p + area_g - inter
    return float(np.mean(1.0 * inter / (np.spacing(1) + union)))


def heif_container_bytes(data: bytes) -> int:
    """Bytes of a HEIF file outside its ``mdat`` payload (``ftyp``, ``meta`` and box headers):
    the container overhead that a BPG file would mostly not have."""
    pos, payload = 0, 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[pos + 8:pos + 16])[0], 16
        elif size == 0:
            size = len(data) - pos
        if kind == b"mdat":
            payload += size - header
        pos += size
    return len(data) - payload


def bpg_to_hevc_quality(bpg_q: int) -> int:
    """BPG's ``-q`` (the HEVC quantiser QP, 0..51) -> the ``hevc`` codec's quality whose x265 rate
    factor ``crf = (100 - quality) / 2`` equals it: ``100 - 2 q`` (35 -> 30)."""
    if isinstance(bpg_q, bool) or not isinstance(bpg_q, (int, np.integer)) or not 0 <= bpg_q <= 51:
        raise ValueError(f"BPG quality (-q) must be an int in [0, 51], got {bpg_q!r}")
    return 100 - 2 * int(bpg_q)


def training_coarse(images: torch.Tensor, coarse_size: Sequence[int], codec: str | None = None,
                    qualities: Sequence[int] | None = None, chroma: str | None = None) -> torch.Tensor:
    """The coarse image a SPIC network is trained on, (B,3,H,W) -> (B,3,h,w) in [-1, 1].

    ``codec=None``: SPIC's ``compression_type "resize"``, the area downsample unquantised.
    Otherwise (SPIC's ``"down+bpg"``, coded on the fly): the area downsample rounded to 8 bits,
    coded by ``codec`` at ``qualities[i]`` and decoded, as the receiver will see it.
    """
    small = downsample(images.detach().float().cpu(), coarse_size)
    if codec is None:
        return small
    if qualities is None or len(qualities) != images.shape[0]:
        raise ValueError(f"give one quality per image ({images.shape[0]}), got {qualities!r}")
    out = [_from_uint8(decode_image(encode_image(a, codec, int(q), chroma), codec))
           for a, q in zip(_to_uint8(small), qualities)]
    return torch.stack(out)


def _to_uint8(images: torch.Tensor) -> list[np.ndarray]:
    """(B,3,h,w) in [-1,1] -> B uint8 (h,w,3), rounded (as OpenCV's float -> uint8 write)."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return list(x.permute(0, 2, 3, 1).cpu().numpy())


def _from_uint8(image: np.ndarray) -> torch.Tensor:
    """uint8 (h,w,3) -> (3,h,w) float32 in [-1,1] (SPIC: x / 255 * 2 - 1)."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 127.5 - 1.0


# ------------------------------------------------------------------------------------------------
# The pipeline
# ------------------------------------------------------------------------------------------------

@dataclass
class SPICPayload:
    """What the transmitter sends for one image.

    Attributes:
        label_file: the losslessly coded map.
        image_file: the coded coarse image.
        quality: the image codec's quality used.
        coarse: (3, h, w) in [-1, 1], the coarse image as the receiver decodes it.
    """

    label_file: bytes
    image_file: bytes
    quality: int
    coarse: torch.Tensor

    @property
    def bits(self) -> int:
        return 8 * (len(self.label_file) + len(self.image_file))


@dataclass
class SPIC:
    """SPIC around a trained network (see the module docstring).

    Attributes:
        model: SemanticUNet with ``concat_channels=3``; ``label_channels`` = ``num_classes``
            (+1 with ``instances``).
        diffusion: the process over SPIC's kept steps (:func:`spic_timesteps`).
        num_classes: classes of the map (19 for Cityscapes trainIds).
        coarse_size: (height, width) of the coarse image (SPIC: small_size=64, large_size=128).
        image_codec: one of :data:`gensemcom.codecs.IMAGE_CODECS` (``"hevc"``: BPG's stand-in).
        quality: the codec quality (None with ``coarse_bpp``; default: 30 for ``hevc``, else the
            middle of the codec's range).
        coarse_bpp: instead of a quality, the best quality whose coarse file fits in
            ``coarse_bpp * H * W`` bits (per full-image pixel); a codec that cannot is an error.
        label_codec: ``"jpegxl"`` (default: lossless JPEG XL, the successor of SPIC's FLIF and the
            smallest of the three on label maps), ``"png"`` or ``"webp"`` (all lossless).
        chroma: the image codec's chroma setting (None: its usual).
        guidance_scale: SPIC's ``s`` (1.5), on the map only.
        method, eta: ``"ddpm"`` (SPIC) or ``"ddim"`` (eta for ddim).
        start: ``"noised"`` (default) or ``"coarse"`` (SPIC's code).
        rate: ``"sent"`` (default) or ``"spic"`` (SPIC's evaluation formula).
        clip_denoised: clip x0 predictions to [-1, 1] (SPIC: on).
        ignore_index: the unlabelled id of the maps given (255).
    """

    model: nn.Module
    diffusion: GaussianDiffusion
    num_classes: int = 19
    coarse_size: tuple[int, int] = (64, 128)
    image_codec: str = "hevc"
    quality: int | None = None
    coarse_bpp: float | None = None
    label_codec: str = "jpegxl"
    chroma: str | None = None
    guidance_scale: float = 1.5
    method: str = "ddpm"
    eta: float = 0.0
    start: str = "noised"
    rate: str = "sent"
    clip_denoised: bool = True
    ignore_index: int = 255
    max_iter_time: int | None = None
    autocast: torch.dtype | None = None
    _full_chain: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        cfg = self.model.config
        if cfg.concat_channels != 3:
            raise ValueError(f"SPIC needs a network with concat_channels=3 (the coarse image), got "
                             f"{cfg.concat_channels}")
        if cfg.label_channels not in (self.num_classes, self.num_classes + 1):
            raise ValueError(f"the network takes {cfg.label_channels} label channels; num_classes "
                             f"{self.num_classes} needs {self.num_classes} or {self.num_classes + 1} (with edges)")
        self.has_edges = cfg.label_channels == self.num_classes + 1
        self.coarse_size = _check_size(self.coarse_size, "coarse_size")
        if self.image_codec not in IMAGE_CODECS:
            raise ValueError(f"unknown image codec {self.image_codec!r}; expected one of {IMAGE_CODECS}")
        if self.label_codec not in LOSSLESS_LABEL_CODECS:
            raise ValueError(f"unknown label codec {self.label_codec!r}; expected one of {LOSSLESS_LABEL_CODECS}")
        _check_chroma(self.image_codec, self.chroma)
        if self.quality is not None and self.coarse_bpp is not None:
            raise ValueError("give either quality or coarse_bpp (a bit budget), not both")
        if self.coarse_bpp is not None:
            b = float(self.coarse_bpp)
            if not (math.isfinite(b) and b > 0):
                raise ValueError(f"coarse_bpp must be a finite number > 0, got {self.coarse_bpp!r}")
        elif self.quality is None:
            lo, hi = QUALITY_RANGE[self.image_codec]
            self.quality = 30 if self.image_codec == "hevc" else (lo + hi) // 2
        if self.quality is not None:
            lo, hi = QUALITY_RANGE[self.image_codec]
            if isinstance(self.quality, bool) or not isinstance(self.quality, (int, np.integer)) \
                    or not lo <= self.quality <= hi:
                raise ValueError(f"quality for {self.image_codec!r} must be an int in [{lo}, {hi}], "
                                 f"got {self.quality!r}")
        for name, value, allowed in (("start", self.start, STARTS), ("rate", self.rate, RATES),
                                     ("method", self.method, METHODS)):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; use one of {allowed}")
        # SPIC starts from pure noise when the window is the whole process
        top = self.diffusion.original_num_steps
        self._full_chain = self.max_iter_time is not None and self.max_iter_time >= top

    # -------------------------------------------------------------- transmitter
    def check_batch(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        if tuple(labels.shape) != (images.shape[0], *images.shape[2:]):
            raise ValueError(f"labels {tuple(labels.shape)} do not match images {tuple(images.shape)}")
        h, w = self.coarse_size
        if h > images.shape[2] or w > images.shape[3]:
            raise ValueError(f"coarse size {(h, w)} is larger than the images {tuple(images.shape[2:])}")
        ids = labels[labels != self.ignore_index]
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.num_classes):
            raise ValueError(f"label ids span [{int(ids.min())}, {int(ids.max())}] but SPIC has "
                             f"{self.num_classes} classes (0..{self.num_classes - 1}; "
                             f"{self.ignore_index} marks unlabelled pixels)")

    def coarse_budget_bits(self, height: int, width: int) -> float | None:
        """The coarse file's budget in bits for an H x W image (None: coded at ``quality``)."""
        return None if self.coarse_bpp is None else float(self.coarse_bpp) * height * width

    def _code_coarse(self, img: np.ndarray, budget: float | None) -> tuple[bytes, int]:
        if budget is None:
            return encode_image(img, self.image_codec, int(self.quality), self.chroma), int(self.quality)
        data, q = encode_to_budget(img, self.image_codec, budget, self.chroma)
        if data is None:
            lo = QUALITY_RANGE[self.image_codec][0]
            smallest = 8 * len(encode_image(img, self.image_codec, lo, self.chroma))
            raise ValueError(f"codec {self.image_codec!r} cannot code the {img.shape[0]}x{img.shape[1]} coarse "
                             f"image within {budget:.0f} bits (coarse_bpp {self.coarse_bpp}); its smallest "
                             f"file (quality {lo}) has {smallest} bits")
        return data, int(q)

    def encode(self, images: torch.Tensor, labels: torch.Tensor,
               instances: torch.Tensor | None = None) -> list[SPICPayload]:
        """The transmitter: (B,3,H,W) in [-1,1] and (B,H,W) ids -> one :class:`SPICPayload` each.

        With edges (``instances``) the instance map is coded after the label map, same codec,
        inside ``label_file`` (PNG/WebP only: they are self-delimiting).
        """
        labels = torch.as_tensor(labels)
        self.check_batch(images, labels)
        if self.has_edges:
            if instances is None:
                raise ValueError("this SPIC model takes instance edges: pass instances")
            if self.label_codec == "jpegxl":
                raise ValueError("label_codec 'jpegxl' cannot carry the instance map too (JPEG XL "
                                 "codestreams are not self-delimiting); use png or webp")
        b, _, hh, ww = images.shape
        coarse = downsample(images.detach().float().cpu(), self.coarse_size)
        budget = self.coarse_budget_bits(hh, ww)
        labels_np = labels.detach().cpu().numpy()
        out = []
        for i, img in enumerate(_to_uint8(coarse)):
            label_file = encode_labels(labels_np[i], self.label_codec)
            if self.has_edges:
                label_file += encode_labels(torch.as_tensor(instances)[i].cpu().numpy(), self.label_codec)
            data, q = self._code_coarse(img, budget)
            out.append(SPICPayload(label_file, data, q, _from_uint8(decode_image(data, self.image_codec))))
        return out

    def decode_labels(self, label_file: bytes, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A received map file -> (H, W) ids [+ (H, W) instance ids]; CodecError when unreadable."""
        from ..codecs import file_length
        if self.has_edges:
            n = file_length(label_file)
            lab, ins = decode_labels(label_file[:n]), decode_labels(label_file[n:])
        else:
            lab, ins = decode_labels(label_file), None
        if lab.shape != tuple(size) or (ins is not None and ins.shape != tuple(size)):
            raise CodecError(f"decoded map is {lab.shape}, expected {tuple(size)}")
        return torch.from_numpy(lab), None if ins is None else torch.from_numpy(ins)

    def decode_coarse(self, image_file: bytes) -> torch.Tensor:
        """A received coarse file -> (3, h, w) in [-1, 1]; CodecError when unreadable or of the
        wrong size."""
        arr = decode_image(image_file, self.image_codec)
        if arr.shape[:2] != self.coarse_size:
            raise CodecError(f"decoded coarse image is {arr.shape[:2]}, expected {self.coarse_size}")
        return _from_uint8(arr)

    # -------------------------------------------------------------- rate
    def rate_bits(self, payloads: Sequence[SPICPayload], images: torch.Tensor | None = None,
                  labels: torch.Tensor | None = None) -> tuple[list[float], list[float]]:
        """Per image ``(bits, bpp)`` under :attr:`rate`.

        ``"sent"``: both files' bits, over the image's H x W. ``"spic"``: SPIC's evaluation
        (needs the original ``images`` and ``labels``): the codec at the sent quality on a bilinear
        downsample, plus the label codec on SPIC's grey label image, over 512 x 256.
        """
        if self.rate == "sent":
            if images is None:
                raise ValueError("rate 'sent' needs the images (for H x W)")
            pixels = images.shape[2] * images.shape[3]
            bits = [float(p.bits) for p in payloads]
            return bits, [b / pixels for b in bits]
        if images is None or labels is None:
            raise ValueError("rate 'spic' re-encodes the originals: pass images and labels")
        bilinear = F.interpolate(images.detach().float().cpu(), self.coarse_size, mode="bilinear",
                                 align_corners=False)
        bits = []
        lab = torch.as_tensor(labels).cpu().numpy()
        for i, img in enumerate(_to_uint8(bilinear)):
            coarse = encode_image(img, self.image_codec, payloads[i].quality, self.chroma)
            grey = encode_labels(spic_label_grey(lab[i]), self.label_codec)
            bits.append(8.0 * (len(coarse) + len(grey)))
        return bits, [b / SPIC_FIXED_PIXELS for b in bits]

    # -------------------------------------------------------------- receiver
    def condition(self, labels: torch.Tensor, instances: torch.Tensor | None = None) -> torch.Tensor:
        """(B,H,W) received ids -> the network's map (B, label_channels, H, W)."""
        return spic_map(labels, self.num_classes, self.ignore_index, instances if self.has_edges else None)

    def receive(self, labels: torch.Tensor, coarse: torch.Tensor, generator: torch.Generator | None = None,
                instances: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                callback: Any = None) -> torch.Tensor:
        """Regenerate (B,3,H,W) in [-1,1] from the received ids (B,H,W) and coarse images (B,3,h,w).

        Randomness, in order, from ``generator``: the start noise (``start="noised"`` or the full
        chain; or ``noise`` given), then one draw per step (DDPM). With ``start="coarse"`` the
        first draw is the first step's, as in SPIC's code.
        """
        labels = torch.as_tensor(labels)
        if labels.ndim != 3:
            raise ValueError(f"labels must be (B, H, W), got {tuple(labels.shape)}")
        if coarse.ndim != 4 or coarse.shape[1] != 3 or coarse.shape[0] != labels.shape[0]:
            raise ValueError(f"coarse must be (B, 3, h, w) with B = {labels.shape[0]}, got {tuple(coarse.shape)}")
        if tuple(coarse.shape[2:]) != self.coarse_size:
            raise ValueError(f"coarse images are {tuple(coarse.shape[2:])} but this SPIC takes "
                             f"{self.coarse_size} (small_size x large_size = height x width)")
        if self.has_edges and instances is None:
            raise ValueError("this SPIC model takes instance edges: pass instances")
        device = next(self.model.parameters()).device
        y = self.condition(labels, instances).to(device)
        b, _, h, w = y.shape
        up = upsample(coarse.float(), (h, w)).to(device)
        shape = (b, 3, h, w)
        last = self.diffusion.num_timesteps - 1
        common = dict(guidance_scale=self.guidance_scale, method=self.method, eta=self.eta,
                      clip_denoised=self.clip_denoised, generator=generator, concat=up,
                      autocast=self.autocast, callback=callback)
        if self.start == "coarse" and not self._full_chain:
            return self.diffusion.sample(self.model, y, noise=up, **common)
        if noise is None:
            noise = torch.randn(shape, generator=generator,
                                device=generator.device if generator is not None else "cpu")
        noise = noise.to(device)
        if self._full_chain:
            return self.diffusion.sample(self.model, y, noise=noise, **common)
        return self.diffusion.sample(self.model, y, noise=noise, init_image=up, start_step=last, **common)

    def run(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None,
            instances: torch.Tensor | None = None) -> dict[str, Any]:
        """Error-free bits: encode -> decode -> receive. Returns ``images``, ``coarse`` (B,3,h,w),
        ``payloads``, ``bits`` and ``bpp`` (under :attr:`rate`)."""
        payloads = self.encode(images, labels, instances)
        coarse = torch.stack([p.coarse for p in payloads])
        hw = tuple(images.shape[2:])
        received = [self.decode_labels(p.label_file, hw) for p in payloads]
        ids = torch.stack([r[0] for r in received])
        inst = torch.stack([r[1] for r in received]) if self.has_edges else None
        out = self.receive(ids, coarse, generator, inst)
        bits, bpp = self.rate_bits(payloads, images, labels)
        return {"images": out, "coarse": coarse, "payloads": payloads, "bits": bits, "bpp": bpp}

    def config(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "edges": self.has_edges, "coarse_size": list(self.coarse_size),
                "image_codec": self.image_codec, "quality": self.quality, "coarse_bpp": self.coarse_bpp,
                "label_codec": self.label_codec, "chroma": self.chroma, "guidance_scale": self.guidance_scale,
                "method": self.method, "eta": self.eta, "start": self.start, "rate": self.rate,
                "clip_denoised": self.clip_denoised, "timesteps": list(self.diffusion.timesteps),
                "max_iter_time": self.max_iter_time}


# ------------------------------------------------------------------------------------------------
# Saving and loading
# ------------------------------------------------------------------------------------------------

#: the SPIC settings stored under ``"spic"`` in a model folder's config.json
_SAVED = ("num_classes", "coarse_size", "guidance_scale", "max_iter_time", "timestep_respacing")


def save_spic(directory: str | Path, model: SemanticUNet, diffusion: GaussianDiffusion, *, num_classes: int,
              coarse_size: Sequence[int], max_iter_time: int = 200, timestep_respacing: str = "100",
              guidance_scale: float = 1.5, codecs: dict[str, Any] | None = None,
              extra: dict[str, Any] | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write a SPIC model folder (:func:`gensemcom.models.io.save_pretrained` plus a ``"spic"``
    section: classes, coarse size, sampling window, guidance, and optionally ``codecs``: the
    default ``image_codec`` / ``quality`` / ``label_codec`` of :class:`SPIC` for this model, e.g.
    the codec its coarse images were trained with). ``diffusion`` is the training process (all
    steps); the window is re-applied by :func:`load_spic`."""
    from ..models.io import save_pretrained
    spic = {"num_classes": int(num_classes), "coarse_size": list(_check_size(coarse_size, "coarse_size")),
            "max_iter_time": int(max_iter_time), "timestep_respacing": str(timestep_respacing),
            "guidance_scale": float(guidance_scale)}
    for k, v in (codecs or {}).items():
        if k not in ("image_codec", "quality", "label_codec"):
            raise ValueError(f"codecs takes image_codec, quality, label_codec; got {k!r}")
        spic[k] = v
    return save_pretrained(directory, model, diffusion, extra={"kind": "semantic_unet", "system": "spic",
                                                               "spic": spic, **(extra or {})}, dtype=dtype)


def load_spic(folder: str | Path, *, device: str | torch.device = "cpu", max_iter_time: int | None = None,
              timestep_respacing: str | None = None, guidance_scale: float | None = None,
              **kwargs: Any) -> SPIC:
    """A :class:`SPIC` from a folder written by :func:`save_spic`; the sampling window
    (``timestep_respacing``, ``max_iter_time``), ``guidance_scale`` and the codecs default to the
    saved ones; ``kwargs`` go to :class:`SPIC` (codec, quality, start, method, rate, ...)."""
    from ..models.io import load_pretrained
    model, _, config = load_pretrained(folder, device=device)
    spic = config.get("spic")
    if not isinstance(spic, dict) or any(k not in spic for k in _SAVED):
        raise ValueError(f"{folder} is not a SPIC model folder (config.json has no complete 'spic' section)")
    if "diffusion" not in config:
        raise ValueError(f"{folder} has no diffusion settings in config.json")
    d = dict(config["diffusion"])
    mit = int(spic["max_iter_time"] if max_iter_time is None else max_iter_time)
    resp = str(spic["timestep_respacing"] if timestep_respacing is None else timestep_respacing)
    d["respacing"] = spic_timesteps(int(d["steps"]), resp, mit)
    diffusion = GaussianDiffusion.from_config(DiffusionConfig(**d))
    s = float(spic["guidance_scale"] if guidance_scale is None else guidance_scale)
    if "image_codec" not in kwargs and "image_codec" in spic:  # the saved codec defaults, all or nothing
        kwargs["image_codec"] = spic["image_codec"]
        if "quality" not in kwargs and "coarse_bpp" not in kwargs and spic.get("quality") is not None:
            kwargs["quality"] = int(spic["quality"])
    if "label_codec" not in kwargs and "label_codec" in spic:
        kwargs["label_codec"] = spic["label_codec"]
    return SPIC(model.eval(), diffusion, num_classes=int(spic["num_classes"]),
                coarse_size=tuple(spic["coarse_size"]), guidance_scale=s, max_iter_time=mit, **kwargs)


# ------------------------------------------------------------------------------------------------
# Over a channel
# ------------------------------------------------------------------------------------------------

class SPICSystem(System):
    """SPIC behind the sweep interface: both files over a digital link.

    Args:
        spic: the pipeline.
        link: ``"ldpc"`` (5G NR LDPC + QAM at ``mcs``: the cliff) or ``"capacity"`` (ideal code at
            the Shannon capacity of the SNR).
        mcs, num_iter: of the LDPC link.

    The map file and the coarse file are sent as two payloads (the map first), each in whole
    codewords, on the image's block-fading gain (Rayleigh: one CN(0,1) draw per image, drawn
    before anything else). Outcomes per image:

    - both arrive: SPIC's receiver;
    - the coarse file is lost: the image is LOST (mid-grey), the map still counts if it arrived;
    - only the map is lost: the upsampled coarse image is shown (``info["map_lost"]``), the map
      comes back all ``ignore_index``.

    ``bits`` are the bits sent (both files); ``info["bpp"]`` the rate under ``spic.rate``.
    """

    channels = PHYSICAL_CHANNELS
    stochastic = True

    def __init__(self, spic: SPIC, link: str = "ldpc", mcs: Any = "16qam-1/2", num_iter: int = 20,
                 device: str | torch.device = "cpu") -> None:
        if link not in LINKS:
            raise ValueError(f"unknown link {link!r}; expected one of {LINKS}")
        self.spic = spic
        self.transport = PayloadLink(link, mcs, num_iter=num_iter, device=device)
        self.link = link
        self.name = f"spic[{spic.image_codec}]+{self.transport.label}"

    def compatible(self, batch: Batch) -> str | None:
        if batch.num_classes != self.spic.num_classes:
            return f"SPIC takes {self.spic.num_classes} classes, the data has {batch.num_classes}"
        h, w = self.spic.coarse_size
        if h > batch.images.shape[2] or w > batch.images.shape[3]:
            return f"SPIC's coarse size {(h, w)} is larger than the images {tuple(batch.images.shape[2:])}"
        if self.spic.has_edges and batch.instances is None:
            return "this SPIC model takes instance edges but the data has no instance maps"
        return None

    def config(self) -> dict[str, Any]:
        return {"system": "spic", **self.spic.config(), "link": self.transport.config(),
                "model": self.spic.model.config.to_dict()}

    def run(self, batch: Batch, channel: str, snr_db: float,
            generator: torch.Generator | None = None) -> SystemOutput:
        self.check_channel(channel)
        reason = self.compatible(batch)
        if reason:
            raise ValueError(reason)
        snr = check_snr(snr_db)
        sp = self.spic
        b, h, w = batch.size, batch.images.shape[2], batch.images.shape[3]
        sp_ignore, sp.ignore_index = sp.ignore_index, batch.ignore_index
        try:
            gains = draw_gains(channel, b, generator)
            payloads = sp.encode(batch.images, batch.labels, batch.instances if sp.has_edges else None)
            maps = self.transport.send([p.label_file for p in payloads], channel, snr, generator, gains)
            coarse_d = self.transport.send([p.image_file for p in payloads], channel, snr, generator, gains)
            labels = torch.full((b, h, w), batch.ignore_index, dtype=torch.int64)
            inst = torch.zeros((b, h, w), dtype=torch.int64) if sp.has_edges else None
            coarse = torch.zeros(b, 3, *sp.coarse_size)
            map_ok = torch.zeros(b, dtype=torch.bool)
            coarse_ok = torch.zeros(b, dtype=torch.bool)
            for i in range(b):
                if maps[i].data is not None:
                    try:
                        lab, ins = sp.decode_labels(maps[i].data, (h, w))
                        labels[i] = lab
                        if inst is not None and ins is not None:
                            inst[i] = ins
                        map_ok[i] = True
                    except CodecError:
                        pass
                if coarse_d[i].data is not None:
                    try:
                        coarse[i] = sp.decode_coarse(coarse_d[i].data)
                        coarse_ok[i] = True
                    except CodecError:
                        pass
            images = torch.zeros(b, 3, h, w)
            both = (map_ok & coarse_ok).nonzero().squeeze(1)
            if both.numel():
                out = sp.receive(labels[both], coarse[both], generator, None if inst is None else inst[both])
                images[both] = out.float().cpu()
            only_coarse = (~map_ok & coarse_ok).nonzero().squeeze(1)
            if only_coarse.numel():
                images[only_coarse] = upsample(coarse[only_coarse], (h, w)).clamp(-1, 1)
            _, bpp = sp.rate_bits(payloads, batch.images, batch.labels)
        finally:
            sp.ignore_index = sp_ignore
        info: dict[str, Any] = {
            "quality": [p.quality for p in payloads], "bpp": bpp, "rate": sp.rate,
            "label_bits": [8 * len(p.label_file) for p in payloads],
            "coarse_bits": [8 * len(p.image_file) for p in payloads],
            "map_lost": [bool(not m) for m in map_ok], "coarse_lost": [bool(not c) for c in coarse_ok],
            "block_errors": [m.block_errors + c.block_errors for m, c in zip(maps, coarse_d)],
        }
        if sp.image_codec == "hevc":
            info["container_bits"] = [8 * heif_container_bytes(p.image_file) for p in payloads]
        if gains is not None:
            info["gain_power"] = gain_powers(gains)
        return SystemOutput(
            images=images.to(batch.images.device, batch.images.dtype),
            labels=labels.to(batch.labels.device),
            channel_uses=torch.tensor([float(m.channel_uses + c.channel_uses) for m, c in zip(maps, coarse_d)],
                                      dtype=torch.float64),
            bits=torch.tensor([float(p.bits) for p in payloads], dtype=torch.float64),
            lost=~coarse_ok,
            info=info,
        )

    def __repr__(self) -> str:
        return f"SPICSystem({self.name!r})"


# ------------------------------------------------------------------------------------------------
# Registration: spic[:FOLDER][:CODEC]
# ------------------------------------------------------------------------------------------------

#: ``KEY=VALUE`` options of the system spec and their types
_SPEC_OPTIONS = {"start": str, "method": str, "rate": str, "label_codec": str, "quality": int, "coarse_bpp": float,
                 "guidance": float, "eta": float, "max_iter_time": int, "respacing": str}


def _parse_arg(arg: str | None) -> tuple[str | None, str | None, dict[str, Any]]:
    """``FOLDER``, ``CODEC`` and ``KEY=VALUE`` tokens separated by ``:``, in any order ->
    (folder, codec, options); e.g. ``runs/m:jpegxl:start=coarse:method=ddim``."""
    if not arg:
        return None, None, {}
    folder_parts, codec, opts = [], None, {}
    for tok in arg.split(":"):
        if "=" in tok:
            key, _, value = tok.partition("=")
            if key not in _SPEC_OPTIONS:
                raise ValueError(f"unknown SPIC option {key!r} in {arg!r}; known: {', '.join(_SPEC_OPTIONS)}")
            try:
                opts[key] = _SPEC_OPTIONS[key](value)
            except ValueError:
                raise ValueError(f"SPIC option {key}={value!r}: expected {_SPEC_OPTIONS[key].__name__}") from None
        elif tok in IMAGE_CODECS and codec is None:
            codec = tok
        elif tok:
            folder_parts.append(tok)
    return (":".join(folder_parts) or None), codec, opts


def _default_folder() -> Path:
    from importlib import resources
    path = Path(str(resources.files("gensemcom") / "assets" / "spic_synthetic"))
    if not (path / "config.json").is_file():
        raise ValueError("no bundled SPIC model is installed (gensemcom/assets/spic_synthetic); "
                         "give a trained one: spic:FOLDER[:CODEC]")
    return path


def _build(arg: str | None, o: SystemOptions, link: str) -> System:
    folder, codec, opts = _parse_arg(arg)
    kwargs: dict[str, Any] = {k: v for k, v in opts.items() if k not in ("guidance", "max_iter_time", "respacing")}
    if codec is not None:
        kwargs["image_codec"] = codec
    guidance = opts.get("guidance", o.guidance_scale)
    path = folder if folder is not None else _default_folder()
    sp = load_spic(path, device=o.device, guidance_scale=guidance, max_iter_time=opts.get("max_iter_time"),
                   timestep_respacing=opts.get("respacing"), **kwargs)
    if "respacing" not in opts and o.steps != sp.diffusion.num_timesteps:  # --steps: as many steps in the window
        resp = respacing_for_steps(sp.diffusion.original_num_steps, sp.max_iter_time, o.steps)
        sp = load_spic(path, device=o.device, guidance_scale=guidance, max_iter_time=opts.get("max_iter_time"),
                       timestep_respacing=resp, **kwargs)
    return SPICSystem(sp, link=link, mcs=o.mcs)


_SENDS = "the label map (lossless JPEG XL) + a coarse image (HEVC-intra by default) as bits"
_RECEIVER = "SPIC's diffusion model: map via SPADE, upsampled coarse image concatenated, guided DDPM"


@register_system("spic", usage="spic[:FOLDER][:CODEC][:KEY=VALUE...]", sends=_SENDS, receiver=_RECEIVER,
                 description="SPIC (Pezone et al. 2023): map + coarse image over 5G LDPC at --mcs; --steps steps "
                             "up to max_iter_time (20: SPIC's window); options "
                             "start=noised|coarse, method=ddpm|ddim, quality=, coarse_bpp=, rate=sent|spic, "
                             "label_codec=, guidance=, max_iter_time=, respacing=",
                 cost="bits: map JPEG XL + coarse HEVC; as many LDPC channel uses as they need")
def _spic(arg: str | None, o: SystemOptions) -> System:
    return _build(arg, o, "ldpc")


@register_system("spic+capacity", usage="spic+capacity[:FOLDER][:CODEC][:KEY=VALUE...]", sends=_SENDS,
                 receiver=_RECEIVER,
                 description="SPIC with both files over an ideal capacity-achieving code",
                 cost="bits: map JPEG XL + coarse HEVC at log2(1 + SNR) bits per channel use")
def _spic_capacity(arg: str | None, o: SystemOptions) -> System:
    return _build(arg, o, "capacity")

