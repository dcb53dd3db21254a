"""Diff-JSCC networks: the latent encoders, the latent-conditioned U-Net and the v-diffusion prototype.

After ``wangxuuu/Diff_JSCC`` ("Diffusion Models for Image Compression with Joint Source-Channel
Coding", code only; its ``models/`` is openai/improved-diffusion, Nichol & Dhariwal 2021, plus a
latent hook). The system that the repository's ``configs/cifar10.yaml`` configures::

    x0 (B, 3, 32, 32) in [-1, 1] --encoder E--> z (B, k) real        (k = 512 for CIFAR-10)
    receiver: improved-diffusion U-Net, no spatial condition, with
        emb = time_embed(sinusoid(t * 1000 / T)) + label_emb(class) + latent_emb(z)
    driving every ResBlock's scale-shift norm; cosine schedule, T = 4000, eps prediction,
    learned-range variance, loss mse + vb * T / 1000; sampled with a fresh 20-step DDIM process.

Here the receiver is :class:`~gensemcom.models.semantic_unet.SemanticUNet` with
``label_channels=0`` (no SPADE), ``num_classes`` (``label_emb``) and ``vector_dim`` registered as
``latent_emb``, so the reference's state dicts load with ``strict=True``
(:func:`unet_config_from_yaml`). The four encoders of the ``encoder_type`` key, with the
reference's key names:

- ``"cdm"`` (:class:`CDMEncoder`, the yaml default): conv3x3, then per level a ResBlock without
  time embedding and a stride-2 conv, then GroupNorm, SiLU, global average pool, 1x1 conv.
- ``"unet"`` (:class:`HalfUNetEncoder`): the U-Net's input blocks and middle block (ResBlocks
  without time embedding, attention), then the same pooled head.
- ``"jscc"`` (:class:`JSCCEncoder`): 5 x [zero pad 2, conv5x5 (strides 2,2,1,1,1), BatchNorm,
  PReLU], flattened: ``c_out * (H/4) * (W/4)`` values.
- ``"ae"`` (:class:`AEEncoder`): 5 x [conv4x4 stride 2, BatchNorm, ReLU], flattened:
  ``hidden_dims[-1] * (H/32) * (W/32)`` values.

The repository's earlier prototype (``Encdiffusion.py``: Crowson-style continuous-time
v-diffusion) is :class:`VDiffusionUNet` with :func:`proto_log_snr`, :func:`proto_loss` and
:func:`proto_sample`, and its autoencoder :class:`PrototypeAutoencoder`: a documented variant,
not the system the README's numbers come from.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..diffusion.gaussian import DiffusionConfig, GaussianDiffusion
from ..diffusion.schedules import named_betas
from .semantic_unet import AttentionBlock, GroupNorm32, SemanticUNet, SemanticUNetConfig

__all__ = [
    "ENCODER_KINDS", "channel_mult_for", "unet_config_from_yaml", "diffusion_config_from_yaml",
    "build_diffusion", "EncoderConfig", "CDMEncoder", "HalfUNetEncoder", "JSCCEncoder", "AEEncoder",
    "build_encoder", "VDiffusionUNet", "PrototypeAutoencoder", "proto_log_snr", "proto_alpha_sigma",
    "proto_loss", "proto_sample", "num_parameters", "DiffJSCCConfig", "DiffJSCC", "normalize_latent",
    "snr_feature", "COMPAT_MODES", "diffjscc_condition", "read_yaml_config", "train_settings_from_yaml",
]

ENCODER_KINDS = ("cdm", "unet", "jscc", "ae")


def channel_mult_for(image_size: int) -> tuple[int, ...]:
    """improved-diffusion's width multipliers per image size (32, 64 or 256)."""
    table = {256: (1, 1, 2, 2, 4, 4), 64: (1, 2, 3, 4), 32: (1, 2, 2, 2)}
    if image_size not in table:
        raise ValueError(f"unsupported image size {image_size}: Diff-JSCC's networks are defined for "
                         f"{sorted(table)}")
    return table[image_size]


def _attention_resolutions(spec: str | Sequence[int]) -> tuple[int, ...]:
    if isinstance(spec, str):
        return tuple(int(r) for r in spec.split(",") if r.strip())
    return tuple(int(r) for r in spec)


def unet_config_from_yaml(cfg: Mapping[str, Any]) -> SemanticUNetConfig:
    """The receiver U-Net that ``create_model`` builds from a Diff-JSCC yaml dict.

    Reads ``image_size``, ``num_channels``, ``num_res_blocks``, ``num_heads``,
    ``num_heads_upsample``, ``attention_resolutions`` (``"16,8"``), ``dropout``, ``learn_sigma``,
    ``class_cond`` + ``num_classes``, ``use_latent`` + ``latent_dim``, ``use_scale_shift_norm``.
    """
    size = int(cfg["image_size"])
    return SemanticUNetConfig(
        label_channels=0, image_size=size, model_channels=int(cfg["num_channels"]),
        channel_mult=channel_mult_for(size), num_res_blocks=int(cfg["num_res_blocks"]),
        attention_resolutions=_attention_resolutions(cfg.get("attention_resolutions", "16,8")),
        num_heads=int(cfg.get("num_heads", 4)), num_head_channels=-1,
        num_heads_upsample=int(cfg.get("num_heads_upsample", -1)), attention_order="legacy",
        in_channels=3, out_channels=6 if cfg.get("learn_sigma", True) else 3,
        dropout=float(cfg.get("dropout", 0.0)),
        use_scale_shift_norm=bool(cfg.get("use_scale_shift_norm", True)),
        resblock_updown=False, conv_resample=True, layout="sdm",
        vector_dim=int(cfg["latent_dim"]) if cfg.get("use_latent", True) else 0,
        vector_embed_name="latent_emb",
        num_classes=int(cfg.get("num_classes", 10)) if cfg.get("class_cond", True) else 0)


def diffusion_config_from_yaml(cfg: Mapping[str, Any], steps: int | None = None,
                               respacing: str | list[int] = "") -> DiffusionConfig:
    """``create_gaussian_diffusion`` from the yaml (``steps`` overrides ``diffusion_steps``:
    ``evaluate.py`` builds *fresh* 250- and 20-step processes this way, not respaced ones).

    improved-diffusion adds the variational term whenever the variance is learned:
    ``rescale_learned_sigmas`` scales it by ``T/1000`` (``"rescaled_hybrid"``), else ``"hybrid"``.
    """
    if cfg.get("use_kl", False):
        raise ValueError("use_kl (the pure variational-bound loss) is not supported; use rescale_learned_sigmas")
    learn_sigma = bool(cfg.get("learn_sigma", True))
    if learn_sigma:
        variance = "learned_range"
    else:
        variance = "fixed_small" if cfg.get("sigma_small", False) else "fixed_large"
    if learn_sigma:
        loss = "rescaled_hybrid" if cfg.get("rescale_learned_sigmas", True) else "hybrid"
    else:
        loss = "mse"
    return DiffusionConfig(
        steps=int(steps if steps is not None else cfg.get("diffusion_steps", 4000)),
        schedule=str(cfg.get("noise_schedule", "cosine")), respacing=respacing or cfg.get("timestep_respacing", ""),
        prediction="x0" if cfg.get("predict_xstart", False) else "epsilon", variance=variance, loss=loss,
        rescale_timesteps=bool(cfg.get("rescale_timesteps", True)))


def build_diffusion(config: DiffusionConfig) -> GaussianDiffusion:
    """``GaussianDiffusion.from_config``, checking the schedule name first."""
    named_betas(config.schedule, 1)  # a clear error for an unknown schedule name
    return GaussianDiffusion.from_config(config)


# ------------------------------------------------------------------------------------------------
# Encoders
# ------------------------------------------------------------------------------------------------

class _PlainResBlock(nn.Module):
    """improved-diffusion ResBlock built without a time embedding (``emb_channels=None``):
    ``skip(x) + out_layers(in_layers(x))``. Keys ``in_layers.{0,2}``, ``out_layers.{0,3}``,
    ``skip_connection``."""

    def __init__(self, channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(GroupNorm32(32, channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.out_layers = nn.Sequential(GroupNorm32(32, out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x: torch.Tensor, *_: Any) -> torch.Tensor:
        return self.skip_connection(x) + self.out_layers(self.in_layers(x))


class _StrideConv(nn.Module):
    """Downsample by a stride-2 conv3x3 (key ``op``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, *_: Any) -> torch.Tensor:
        return self.op(x)


class _EncBlock(nn.Module):
    """The CDM encoder's level: ``resblock`` then ``conv.0`` (stride-2 conv)."""

    def __init__(self, channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.resblock = _PlainResBlock(channels, out_channels, dropout)
        self.conv = nn.Sequential(_StrideConv(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.resblock(x))


def _pooled_head(channels: int, latent_dim: int) -> nn.Sequential:
    """GroupNorm, SiLU, global average pool, 1x1 conv, flatten -> (B, latent_dim); keys ``out.0``, ``out.3``."""
    return nn.Sequential(GroupNorm32(32, channels), nn.SiLU(), nn.AdaptiveAvgPool2d((1, 1)),
                         nn.Conv2d(channels, latent_dim, 1), nn.Flatten())


def _check_image(x: torch.Tensor, in_channels: int, multiple: int, what: str) -> None:
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(f"{what} takes images (B, {in_channels}, H, W), got {tuple(x.shape)}")
    if x.shape[2] % multiple or x.shape[3] % multiple:
        raise ValueError(f"{what} needs height and width divisible by {multiple}, got {tuple(x.shape[2:])}")


class CDMEncoder(nn.Module):
    """``encoder_type: cdm``: conv3x3, per level [ResBlock -> stride-2 conv], pooled head.

    Args:
        in_channels: image channels.
        model_channels: base width (``cdm_defaults()``: 128; the yaml has no key for it).
        latent_dim: output size ``k`` (the yaml's ``out_channels``).
        channel_mult: width multipliers, one level each (32 px: (1, 2, 2, 2)).
        dropout: inside the ResBlocks (the yaml's ``dropout``).

    ``forward(x)``: (B, in_channels, H, W) -> (B, latent_dim); H, W divisible by 2^levels.
    """

    def __init__(self, in_channels: int = 3, model_channels: int = 128, latent_dim: int = 512,
                 channel_mult: Sequence[int] = (1, 2, 2, 2), dropout: float = 0.0) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.levels = len(channel_mult)
        ch = model_channels
        self.input_blocks = nn.ModuleList([nn.Sequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        for mult in channel_mult:
            self.input_blocks.append(nn.Sequential(_EncBlock(ch, int(mult * model_channels), dropout)))
            ch = int(mult * model_channels)
        self.out = _pooled_head(ch, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x, self.in_channels, 2 ** self.levels, "the CDM encoder")
        for block in self.input_blocks:
            x = block(x)
        return self.out(x)


class HalfUNetEncoder(nn.Module):
    """``encoder_type: unet``: the U-Net's input blocks and middle block (no time embedding), pooled head.

    Args:
        in_channels, model_channels, num_res_blocks, channel_mult, num_heads, dropout: as the U-Net.
        attention_ds: downsampling factors with attention (``image_size // r`` for each
            attention resolution ``r``).
        latent_dim: output size (the yaml's ``out_channels``).
    """

    def __init__(self, in_channels: int = 3, model_channels: int = 128, latent_dim: int = 512,
                 num_res_blocks: int = 3, attention_ds: Sequence[int] = (2, 4),
                 channel_mult: Sequence[int] = (1, 2, 2, 2), num_heads: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.levels = len(channel_mult)

        def attention(ch: int) -> AttentionBlock:
            return AttentionBlock(ch, num_heads, -1, "legacy")

        ch = model_channels
        self.input_blocks = nn.ModuleList([nn.Sequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        ds = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [_PlainResBlock(ch, int(mult * model_channels), dropout)]
                ch = int(mult * model_channels)
                if ds in attention_ds:
                    layers.append(attention(ch))
                self.input_blocks.append(nn.Sequential(*layers))
            if level != len(channel_mult) - 1:
                self.input_blocks.append(nn.Sequential(_StrideConv(ch)))
                ds *= 2
        self.middle_block = nn.Sequential(_PlainResBlock(ch, ch, dropout), attention(ch),
                                          _PlainResBlock(ch, ch, dropout))
        self.out = _pooled_head(ch, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x, self.in_channels, 2 ** (self.levels - 1), "the half-U-Net encoder")
        for block in self.input_blocks:
            x = block(x)
        return self.out(self.middle_block(x))


class JSCCEncoder(nn.Module):
    """``encoder_type: jscc`` (``models/jscc.py``): 5 x [ZeroPad2d(2), conv5x5, BatchNorm, PReLU].

    Channels (16, 32, 32, 32, c_out), strides (2, 2, 1, 1, 1): (B, 3, H, W) -> (B, c_out * H/4 * W/4).
    Keys ``encoder.{i}.{1: conv, 2: BatchNorm, 3: PReLU}``.
    """

    def __init__(self, in_channels: int = 3, c_out: int = 8, kernel_size: int = 5) -> None:
        super().__init__()
        self.in_channels = in_channels
        widths = (16, 32, 32, 32, c_out)
        strides = (2, 2, 1, 1, 1)
        total = kernel_size - 1  # "same" padding for the stride-1 layers, as the reference pads
        pad = (total // 2, total - total // 2, total // 2, total - total // 2)
        layers, ch = [], in_channels
        for width, stride in zip(widths, strides):
            layers.append(nn.Sequential(nn.ZeroPad2d(pad), nn.Conv2d(ch, width, kernel_size, stride=stride),
                                        nn.BatchNorm2d(width), nn.PReLU()))
            ch = width
        self.encoder = nn.Sequential(*layers)
        self.out = nn.Flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x, self.in_channels, 4, "the JSCC encoder")
        return self.out(self.encoder(x))


class AEEncoder(nn.Module):
    """``encoder_type: ae`` (``auto_encoder``): 5 x [conv4x4 stride 2 pad 1, BatchNorm, ReLU], flattened.

    (B, 3, H, W) -> (B, hidden_dims[-1] * H/32 * W/32). Keys ``encoder.{i}.{0: conv, 1: BatchNorm}``.
    """

    def __init__(self, in_channels: int = 3, hidden_dims: Sequence[int] = (12, 24, 48, 96, 512)) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.stages = len(hidden_dims)
        self.encoder = _conv_bn_relu_stack(in_channels, hidden_dims)
        self.out = nn.Flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x, self.in_channels, 2 ** self.stages, "the AE encoder")
        return self.out(self.encoder(x))


def _conv_bn_relu_stack(in_channels: int, hidden_dims: Sequence[int]) -> nn.Sequential:
    layers, ch = [], in_channels
    for width in hidden_dims:
        layers.append(nn.Sequential(nn.Conv2d(ch, int(width), 4, stride=2, padding=1),
                                    nn.BatchNorm2d(int(width)), nn.ReLU()))
        ch = int(width)
    return nn.Sequential(*layers)


@dataclass
class EncoderConfig:
    """Which encoder, and its constructor arguments (saved as JSON beside the weights).

    Attributes:
        kind: ``"cdm"``, ``"unet"``, ``"jscc"`` or ``"ae"``.
        image_size: square input size the latent size is computed for (32 for CIFAR-10).
        in_channels: image channels.
        model_channels: base width of ``cdm`` / ``unet``.
        latent_dim: output size of ``cdm`` / ``unet`` (the yaml's ``out_channels``).
        num_res_blocks, attention_resolutions, num_heads: ``unet`` only.
        dropout: ``cdm`` / ``unet`` ResBlock dropout.
        c_out: ``jscc`` output channels (latent ``c_out * (image_size/4)^2``).
        hidden_dims: ``ae`` widths (latent ``hidden_dims[-1] * (image_size/32)^2``).
    """

    kind: str = "cdm"
    image_size: int = 32
    in_channels: int = 3
    model_channels: int = 128
    latent_dim: int = 512
    num_res_blocks: int = 3
    attention_resolutions: tuple[int, ...] = (16, 8)
    num_heads: int = 4
    dropout: float = 0.0
    c_out: int = 8
    hidden_dims: tuple[int, ...] = (12, 24, 48, 96, 512)

    def __post_init__(self) -> None:
        self.attention_resolutions = _attention_resolutions(self.attention_resolutions)
        self.hidden_dims = tuple(int(h) for h in self.hidden_dims)
        if self.kind not in ENCODER_KINDS:
            raise ValueError(f"unknown encoder kind {self.kind!r}; expected one of {ENCODER_KINDS}")
        if self.kind in ("cdm", "unet"):
            channel_mult_for(self.image_size)
        if self.kind == "jscc" and self.image_size % 4:
            raise ValueError(f"the jscc encoder needs image_size divisible by 4, got {self.image_size}")
        if self.kind == "ae" and self.image_size % 2 ** len(self.hidden_dims):
            raise ValueError(f"the ae encoder needs image_size divisible by {2 ** len(self.hidden_dims)}, "
                             f"got {self.image_size}")

    @property
    def output_dim(self) -> int:
        """Values per image the encoder emits (the real latent size ``k``)."""
        if self.kind in ("cdm", "unet"):
            return self.latent_dim
        if self.kind == "jscc":
            return self.c_out * (self.image_size // 4) ** 2
        return self.hidden_dims[-1] * (self.image_size // 2 ** len(self.hidden_dims)) ** 2

    def build(self) -> nn.Module:
        if self.kind == "cdm":
            return CDMEncoder(self.in_channels, self.model_channels, self.latent_dim,
                              channel_mult_for(self.image_size), self.dropout)
        if self.kind == "unet":
            ds = tuple(self.image_size // r for r in self.attention_resolutions)
            return HalfUNetEncoder(self.in_channels, self.model_channels, self.latent_dim, self.num_res_blocks,
                                   ds, channel_mult_for(self.image_size), self.num_heads, self.dropout)
        if self.kind == "jscc":
            return JSCCEncoder(self.in_channels, self.c_out)
        return AEEncoder(self.in_channels, self.hidden_dims)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["attention_resolutions"] = list(self.attention_resolutions)
        d["hidden_dims"] = list(self.hidden_dims)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EncoderConfig":
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown EncoderConfig fields: {unknown}")
        return cls(**d)

    @classmethod
    def from_yaml(cls, cfg: Mapping[str, Any], kind: str | None = None,
                  cdm_model_channels: int = 128) -> "EncoderConfig":
        """The encoder ``diffusion_main.py`` builds for ``encoder_type`` (or ``kind``).

        As the reference: ``cdm`` takes its width from ``cdm_defaults()`` (``cdm_model_channels``,
        128) because the yaml has no ``model_channels`` key; ``unet`` takes the U-Net's
        ``num_channels``, ``num_res_blocks``, ``num_heads``, ``attention_resolutions``; both emit
        ``out_channels`` values; ``cdm`` and ``unet`` use the yaml's ``dropout``.
        """
        kind = kind or cfg.get("encoder_type", "cdm")
        return cls(kind=kind, image_size=int(cfg.get("image_size", 32)),
                   model_channels=int(cfg["num_channels"]) if kind == "unet" else int(cdm_model_channels),
                   latent_dim=int(cfg.get("out_channels", 512)),
                   num_res_blocks=int(cfg.get("num_res_blocks", 3)),
                   attention_resolutions=_attention_resolutions(cfg.get("attention_resolutions", "16,8")),
                   num_heads=int(cfg.get("num_heads", 4)), dropout=float(cfg.get("dropout", 0.0)),
                   c_out=int(cfg.get("c_out", 8)),
                   hidden_dims=tuple(cfg.get("hidden_dims", (12, 24, 48, 96, 512))))


def build_encoder(config: EncoderConfig | Mapping[str, Any]) -> nn.Module:
    """An encoder from an :class:`EncoderConfig` or its dict."""
    if not isinstance(config, EncoderConfig):
        config = EncoderConfig.from_dict(config)
    return config.build()


def num_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------------------------
# The prototype: continuous-time v-diffusion (Encdiffusion.py / Condiffusion.py)
# ------------------------------------------------------------------------------------------------

class _ResConv(nn.Module):
    """``main(x) + skip(x)``; main = conv3x3, Dropout2d(0.1), ReLU, conv3x3, [Dropout2d(0.1)], ReLU;
    skip = 1x1 conv without bias when the width changes. Keys ``main.{0,3}``, ``skip``."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, dropout_last: bool = True) -> None:
        super().__init__()
        self.main = nn.Sequential(nn.Conv2d(c_in, c_mid, 3, padding=1), nn.Dropout2d(0.1), nn.ReLU(),
                                  nn.Conv2d(c_mid, c_out, 3, padding=1),
                                  nn.Dropout2d(0.1) if dropout_last else nn.Identity(), nn.ReLU())
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.skip(x)


class _Skip(nn.Module):
    """``cat([main(x), x])`` along channels; key ``main``."""

    def __init__(self, *main: nn.Module) -> None:
        super().__init__()
        self.main = nn.Sequential(*main)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.main(x), x], dim=1)


class _Fourier(nn.Module):
    """Random Fourier features ``[cos(2 pi x W^T), sin(2 pi x W^T)]``; ``weight`` (out/2, in)."""

    def __init__(self, in_features: int, out_features: int, std: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features // 2, in_features) * std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = 2 * math.pi * x @ self.weight.T
        return torch.cat([f.cos(), f.sin()], dim=-1)


class VDiffusionUNet(nn.Module):
    """The prototype's residual U-Net (v-prediction, continuous log-SNR time).

    Input planes: ``[x (3), class embedding (4), Fourier(log_snr) (16), Linear(z) (con_emb)]``
    broadcast over H x W; widths ``c, 2c, 4c, 8c`` at 32, 16, 8, 4 px (average pooling down,
    nearest upsampling, skip concatenations). The reference hard-codes ``c = 64``.

    Args:
        base_width: ``c``.
        con_dim: latent size (None: no latent input).
        con_emb: latent planes.
        num_classes: classes of the 4-d class embedding.

    ``forward(x, log_snr, classes, latent=None)``: x (B, 3, H, W) with H, W divisible by 8,
    log_snr (B,), classes (B,) int64, latent (B, con_dim) -> v (B, 3, H, W).
    """

    def __init__(self, base_width: int = 64, con_dim: int | None = None, con_emb: int = 0,
                 num_classes: int = 10) -> None:
        super().__init__()
        c = base_width
        self.con_dim = con_dim
        self.timestep_embed = _Fourier(1, 16, std=0.2)
        self.class_embed = nn.Embedding(num_classes, 4)
        if con_dim is not None:
            self.con_embd = nn.Linear(con_dim, con_emb)
        up = nn.Upsample(scale_factor=2)
        self.net = nn.Sequential(
            _ResConv(3 + 16 + 4 + (con_emb if con_dim is not None else 0), c, c),
            _ResConv(c, c, c),
            _Skip(nn.AvgPool2d(2), _ResConv(c, 2 * c, 2 * c), _ResConv(2 * c, 2 * c, 2 * c),
                  _Skip(nn.AvgPool2d(2), _ResConv(2 * c, 4 * c, 4 * c), _ResConv(4 * c, 4 * c, 4 * c),
                        _Skip(nn.AvgPool2d(2), _ResConv(4 * c, 8 * c, 8 * c), _ResConv(8 * c, 8 * c, 8 * c),
                              _ResConv(8 * c, 8 * c, 8 * c), _ResConv(8 * c, 8 * c, 4 * c), up),
                        _ResConv(8 * c, 4 * c, 4 * c), _ResConv(4 * c, 4 * c, 2 * c), up),
                  _ResConv(4 * c, 2 * c, 2 * c), _ResConv(2 * c, 2 * c, c), up),
            _ResConv(2 * c, c, c),
            _ResConv(c, c, 3, dropout_last=False))

    def forward(self, x: torch.Tensor, log_snr: torch.Tensor, classes: torch.Tensor,
                latent: torch.Tensor | None = None) -> torch.Tensor:
        _check_image(x, 3, 8, "the v-diffusion network")
        b, _, h, w = x.shape

        def planes(v: torch.Tensor) -> torch.Tensor:
            return v[..., None, None].expand(-1, -1, h, w)

        parts = [x, planes(self.class_embed(classes)), planes(self.timestep_embed(log_snr[:, None]))]
        if latent is not None:
            if self.con_dim is None:
                raise ValueError("latent given but the network was built without con_dim")
            parts.append(planes(self.con_embd(latent)))
        elif self.con_dim is not None:
            raise ValueError(f"this network takes a latent (B, {self.con_dim})")
        return self.net(torch.cat(parts, dim=1))


class PrototypeAutoencoder(nn.Module):
    """The prototype's autoencoder (``models/autoencoder.py:Autoencoder``): encoder 5 x
    [conv4x4 s2 + BN + ReLU], decoder 4 x [tconv4x4 x2 + BN + ReLU], final tconv4x4 x2 + sigmoid.

    The diffusion prototype uses ``encoder(x).reshape(B, -1)`` as its latent (:meth:`latent`).
    """

    def __init__(self, in_channels: int = 3, hidden_dims: Sequence[int] = (12, 24, 48, 96, 96)) -> None:
        super().__init__()
        dims = [int(h) for h in hidden_dims]
        self.encoder = _conv_bn_relu_stack(in_channels, dims)
        rev = dims[::-1]
        self.decoder = nn.Sequential(*[
            nn.Sequential(nn.ConvTranspose2d(rev[i], rev[i + 1], 4, stride=2, padding=1),
                          nn.BatchNorm2d(rev[i + 1]), nn.ReLU()) for i in range(len(rev) - 1)])
        self.final_layer = nn.Sequential(nn.ConvTranspose2d(rev[-1], in_channels, 4, stride=2, padding=1),
                                         nn.Sigmoid())

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, hidden_dims[-1] * H/32 * W/32)."""
        return self.encoder(x).reshape(x.shape[0], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_layer(self.decoder(self.encoder(x)))


def proto_log_snr(t: torch.Tensor) -> torch.Tensor:
    """The prototype's schedule (DDPM's, in continuous time): ``-log(expm1(1e-4 + 10 t^2))``."""
    return -torch.special.expm1(1e-4 + 10 * t ** 2).log()


def proto_alpha_sigma(log_snr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``alpha = sqrt(sigmoid(log_snr))``, ``sigma = sqrt(sigmoid(-log_snr))``."""
    return log_snr.sigmoid().sqrt(), (-log_snr).sigmoid().sqrt()


def proto_loss(model: VDiffusionUNet, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
               classes: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
    """The prototype's training loss (scalar): mean over the batch of
    ``sigmoid(log_snr) * mean_pixels((v_hat - (alpha noise - sigma x0))^2)``, with
    ``x_t = alpha x0 + sigma noise`` at continuous times ``t`` (B,) in [0, 1]."""
    if t.shape != (x0.shape[0],):
        raise ValueError(f"t must be (B,) = ({x0.shape[0]},), got {tuple(t.shape)}")
    log_snr = proto_log_snr(t)
    alpha, sigma = proto_alpha_sigma(log_snr)
    a, s = alpha[:, None, None, None], sigma[:, None, None, None]
    v = model(x0 * a + noise * s, log_snr, classes, latent)
    target = noise * a - x0 * s
    return ((v - target).pow(2).mean(dim=(1, 2, 3)) * log_snr.sigmoid()).mean()


@torch.no_grad()
def proto_sample(model: VDiffusionUNet, x: torch.Tensor, steps: int, classes: torch.Tensor,
                 latent: torch.Tensor | None = None, eta: float = 0.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """The prototype's DDIM sampler over ``t = linspace(1, 0, steps + 1)[:-1]`` from ``x`` = x_T.

    Each step: ``x0_hat = alpha x - sigma v``, ``eps = sigma x + alpha v``, then
    ``x = alpha' x0_hat + sqrt(sigma'^2 - s^2) eps (+ s noise)`` with
    ``s = eta sqrt(sigma'^2/sigma^2) sqrt(1 - alpha^2/alpha'^2)``; returns the last ``x0_hat``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    ts = torch.linspace(1, 0, steps + 1)[:-1]
    log_snrs = proto_log_snr(ts).to(x.device)
    alphas, sigmas = proto_alpha_sigma(log_snrs)
    ones = x.new_ones(x.shape[0])
    pred = x
    for i in range(steps):
        v = model(x, ones * log_snrs[i], classes, latent).float()
        pred = x * alphas[i] - v * sigmas[i]
        eps = x * sigmas[i] + v * alphas[i]
        if i < steps - 1:
            ddim_sigma = eta * (sigmas[i + 1] ** 2 / sigmas[i] ** 2).sqrt() * \
                (1 - alphas[i] ** 2 / alphas[i + 1] ** 2).sqrt()
            x = pred * alphas[i + 1] + eps * (sigmas[i + 1] ** 2 - ddim_sigma ** 2).sqrt()
            if eta:
                x = x + torch.randn(x.shape, generator=generator, device=x.device) * ddim_sigma
    return pred



# ------------------------------------------------------------------------------------------------
# The communication system's model: encoder + channel + latent-conditioned diffusion receiver
# ------------------------------------------------------------------------------------------------

COMPAT_MODES = ("none", "diffjscc")
CLASS_LABEL_MODES = ("sent", "none")
TRAIN_CHANNELS = ("awgn", "rayleigh", "none")


@dataclass
class DiffJSCCConfig:
    """Everything that defines a Diff-JSCC model (saved as ``config.json`` beside the weights).

    Attributes:
        unet: the receiver (:class:`SemanticUNetConfig`, ``label_channels=0``); its
            ``vector_dim`` must be the encoder's output size (plus 1 with ``snr_input``) and its
            ``num_classes`` 0 exactly when ``class_label="none"``.
        encoder: the transmitter's encoder.
        diffusion: the training process (Diff-JSCC: cosine, T = 4000, learned range,
            ``rescaled_hybrid``, timesteps rescaled).
        compat: ``"none"`` (default): the latent is power-normalised per image to mean
            ``|s|^2 = 1`` per complex symbol and crosses the channel, in training too;
            ``"diffjscc"``: the published code's behaviour: the raw latent reaches the receiver
            unchanged (no normalisation, no channel, in training and at test).
        class_label: ``"sent"``: the class label conditions the receiver and is counted as
            ``ceil(log2(num_classes))`` bits per image, assumed delivered error-free (a control
            channel); ``"none"``: no class input.
        snr_input: append the channel SNR (``clamp(snr_db, -20, 40) / 20``) to the received latent
            (the receiver knows its SNR; makes one model SNR-adaptive).
        train_channel: channel used during training (``"awgn"``, ``"rayleigh"``, or ``"none"``:
            normalised but noiseless).
        train_snr_db: (low, high): each training image draws its SNR uniformly in this range
            (equal ends: one SNR).
        sample_steps: DDIM steps of the decoder (Diff-JSCC: 20).
        sample_process: ``"respaced"`` (default): ``sample_steps`` steps respaced from the
            training process (the network is called at timesteps it was trained on);
            ``"fresh"``: a new cosine process with ``sample_steps`` steps, as ``evaluate.py``
            builds it (its step i sits at alpha_bar((i+1)/N) but the network is told
            ``i * 1000/N``, about one decoder step early: :meth:`DiffJSCCConfig.from_yaml`'s default).
        inversion_steps: steps of the oracle DDIM inversion (Diff-JSCC: 250, a fresh process).
    """

    unet: SemanticUNetConfig
    encoder: EncoderConfig
    diffusion: DiffusionConfig = dataclasses.field(default_factory=lambda: DiffusionConfig(
        steps=4000, schedule="cosine", variance="learned_range", loss="rescaled_hybrid", rescale_timesteps=True))
    compat: str = "none"
    class_label: str = "sent"
    snr_input: bool = False
    train_channel: str = "awgn"
    train_snr_db: tuple[float, float] = (0.0, 20.0)
    sample_steps: int = 20
    sample_process: str = "respaced"
    inversion_steps: int = 250

    def __post_init__(self) -> None:
        if isinstance(self.unet, Mapping):
            self.unet = SemanticUNetConfig.from_dict(dict(self.unet))
        if isinstance(self.encoder, Mapping):
            self.encoder = EncoderConfig.from_dict(self.encoder)
        if isinstance(self.diffusion, Mapping):
            self.diffusion = DiffusionConfig(**self.diffusion)
        self.train_snr_db = tuple(float(v) for v in self.train_snr_db)
        problems = []
        for name, value, allowed in (("compat", self.compat, COMPAT_MODES),
                                     ("class_label", self.class_label, CLASS_LABEL_MODES),
                                     ("train_channel", self.train_channel, TRAIN_CHANNELS),
                                     ("sample_process", self.sample_process, ("fresh", "respaced"))):
            if value not in allowed:
                problems.append(f"{name} must be one of {allowed}, got {value!r}")
        if self.unet.label_channels:
            problems.append("the receiver takes no semantic map: unet.label_channels must be 0")
        want = self.encoder.output_dim + (1 if self.snr_input else 0)
        if self.unet.vector_dim != want:
            problems.append(f"unet.vector_dim is {self.unet.vector_dim} but the encoder emits "
                            f"{self.encoder.output_dim} values" + (" (+1 SNR input)" if self.snr_input else "")
                            + f": set vector_dim={want}")
        if (self.class_label == "none") != (self.unet.num_classes == 0):
            problems.append(f"class_label={self.class_label!r} needs unet.num_classes "
                            f"{'= 0' if self.class_label == 'none' else '> 0'}, got {self.unet.num_classes}")
        if self.compat == "diffjscc" and self.snr_input:
            problems.append("compat='diffjscc' has no channel, so snr_input must be False")
        lo, hi = (self.train_snr_db + (math.nan, math.nan))[:2]
        if len(self.train_snr_db) != 2 or not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            problems.append(f"train_snr_db must be (low, high) finite with low <= high, got {self.train_snr_db}")
        if self.sample_steps < 1 or self.inversion_steps < 1:
            problems.append("sample_steps and inversion_steps must be >= 1")
        if self.unet.in_channels != self.encoder.in_channels:
            problems.append("the encoder and the receiver disagree on image channels")
        if problems:
            raise ValueError("invalid DiffJSCCConfig: " + "; ".join(problems))

    @property
    def image_size(self) -> int:
        return self.encoder.image_size

    @property
    def latent_dim(self) -> int:
        """Real values sent per image (``k``)."""
        return self.encoder.output_dim

    @property
    def channel_uses(self) -> int:
        """Complex channel uses per image, ``ceil(k / 2)``."""
        return (self.latent_dim + 1) // 2

    @property
    def label_bits(self) -> int:
        """Bits per image for the class label (0 when it is not sent)."""
        n = self.unet.num_classes
        return 0 if self.class_label == "none" or n <= 1 else math.ceil(math.log2(n))

    def to_dict(self) -> dict[str, Any]:
        return {"unet": self.unet.to_dict(), "encoder": self.encoder.to_dict(), "diffusion": self.diffusion.to_dict(),
                "compat": self.compat, "class_label": self.class_label, "snr_input": self.snr_input,
                "train_channel": self.train_channel, "train_snr_db": list(self.train_snr_db),
                "sample_steps": self.sample_steps, "sample_process": self.sample_process,
                "inversion_steps": self.inversion_steps}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DiffJSCCConfig":
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown DiffJSCCConfig fields: {unknown}")
        return cls(**d)

    @classmethod
    def from_yaml(cls, cfg: Mapping[str, Any], **overrides: Any) -> "DiffJSCCConfig":
        """A config from the seed repository's yaml keys (``configs/cifar10.yaml``).

        The published behaviour is ``compat="diffjscc"``; pass ``compat="none"`` (and
        ``train_channel`` / ``train_snr_db`` / ``snr_input``) for the system with a real channel.
        ``encoder_type`` picks the encoder; ``latent_dim`` must equal its output size.
        """
        known = {f.name for f in dataclasses.fields(cls)} - {"unet", "encoder", "diffusion"}
        bad = sorted(set(overrides) - known)
        if bad:
            raise ValueError(f"unknown DiffJSCCConfig overrides: {bad}")
        if not cfg.get("use_latent", True):
            raise ValueError("use_latent is False: that yaml trains an unconditional model, not Diff-JSCC")
        encoder = EncoderConfig.from_yaml(cfg)
        snr_input = bool(overrides.get("snr_input", False))
        unet = unet_config_from_yaml(cfg)
        if unet.vector_dim != encoder.output_dim:
            raise ValueError(f"latent_dim {unet.vector_dim} in the yaml differs from what the "
                             f"{encoder.kind!r} encoder emits ({encoder.output_dim})")
        if snr_input:
            unet = dataclasses.replace(unet, vector_dim=unet.vector_dim + 1)
        class_label = "sent" if unet.num_classes else "none"
        args: dict[str, Any] = {"compat": "diffjscc", "class_label": class_label, "sample_process": "fresh"}
        args.update(overrides)
        return cls(unet=unet, encoder=encoder, diffusion=diffusion_config_from_yaml(cfg), **args)


def read_yaml_config(path: Any) -> dict[str, Any]:
    """Read a Diff_JSCC yaml file (``configs/cifar10.yaml`` keys) into a dict (needs PyYAML)."""
    from pathlib import Path

    try:
        import yaml
    except ImportError:
        raise ImportError("reading a yaml config needs PyYAML (pip install pyyaml)") from None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path} does not hold a mapping of Diff_JSCC keys")
    if cfg.get("use_label_embed", False) or cfg.get("use_time_embed", False):
        raise ValueError(f"{path}: use_label_embed / use_time_embed (an encoder conditioned on the label or "
                         "time) are not supported; the published configs set both False")
    return cfg


def train_settings_from_yaml(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The yaml's training keys in the platform trainer's terms: ``steps`` (``lr_anneal_steps``,
    the reference anneals the learning rate linearly to 0 over them), ``batch_size``, ``lr``,
    ``weight_decay``, ``ema_rate`` (the first of a comma-separated list), ``amp`` (``use_fp16``)."""
    ema = str(cfg.get("ema_rate", 0.9999)).split(",")[0]
    micro = int(cfg.get("microbatch", -1))
    batch = int(cfg.get("batch_size", 64))
    return {"steps": int(cfg.get("lr_anneal_steps", 100000)), "batch_size": batch,
            "grad_accum": batch // micro if micro > 0 else 1, "lr": float(cfg.get("lr", 1e-4)),
            "weight_decay": float(cfg.get("weight_decay", 0.0)), "ema_rate": float(ema),
            "amp": "fp16" if cfg.get("use_fp16", False) else "none"}


def snr_feature(snr_db: torch.Tensor) -> torch.Tensor:
    """The SNR as a network input: ``clamp(snr_db, -20, 40) / 20`` (B,) -> (B, 1); inf -> 2."""
    return snr_db.to(torch.float32).clamp(-20.0, 40.0)[:, None] / 20.0


class DiffJSCC(nn.Module):
    """Encoder + channel + latent-conditioned diffusion receiver (see :class:`DiffJSCCConfig`).

    ::

        images (B, 3, S, S) in [-1, 1] --encoder--> z (B, k)
          --[compat "none"] normalise: z * sqrt(k/2) / ||z||  (mean |s|^2 = 1 per complex symbol)
          --channel (AWGN / Rayleigh, ceil(k/2) complex uses, Es/N0 = snr_db)--> z_hat (B, k)
          --receiver: U-Net(x_t, t, class_labels, vector = z_hat [, snr feature])
          --DDIM (sample_steps) from Gaussian noise--> images (B, 3, S, S) in [-1, 1]

    Submodules ``encoder`` and ``unet`` (state-dict prefixes ``encoder.`` and ``unet.``).
    """

    def __init__(self, config: DiffJSCCConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = config.encoder.build()
        self.unet = SemanticUNet(config.unet)
        self._processes: dict[tuple[str, int], GaussianDiffusion] = {}

    # ------------------------------------------------------------------ processes
    @property
    def diffusion(self) -> GaussianDiffusion:
        """The training process."""
        return self._process("train", self.config.diffusion.steps)

    def _process(self, kind: str, steps: int) -> GaussianDiffusion:
        key = (kind, steps)
        if key not in self._processes:
            base = self.config.diffusion
            if kind == "train":
                cfg = base
            elif kind == "fresh":
                cfg = dataclasses.replace(base, steps=steps, respacing="")
            else:
                cfg = dataclasses.replace(base, respacing=str(steps))
            self._processes[key] = build_diffusion(cfg)
        return self._processes[key]

    def sampling_process(self, steps: int | None = None, process: str | None = None) -> GaussianDiffusion:
        """The decoder's process: ``steps`` (default ``sample_steps``), ``"fresh"`` or ``"respaced"``."""
        process = process or self.config.sample_process
        if process not in ("fresh", "respaced"):
            raise ValueError(f"process must be 'fresh' or 'respaced', got {process!r}")
        return self._process(process, int(steps or self.config.sample_steps))

    # ------------------------------------------------------------------ transmitter
    def check_images(self, images: torch.Tensor) -> None:
        s = self.config.image_size
        c = self.config.encoder.in_channels
        if images.ndim != 4 or images.shape[1] != c:
            raise ValueError(f"images must be (B, {c}, {s}, {s}), got {tuple(images.shape)}")
        if tuple(images.shape[2:]) != (s, s):
            raise ValueError(f"this Diff-JSCC model is built for {s}x{s} images (its latent size depends on it), "
                             f"got {tuple(images.shape[2:])}; resize or pad the images first")

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [-1, 1] -> the channel input (B, k): the latent, power-normalised
        per image to ``sqrt(k/2) z / ||z||`` unless ``compat="diffjscc"``."""
        self.check_images(images)
        z = self.encoder(images)
        if self.config.compat == "diffjscc":
            return z
        return normalize_latent(z)

    def send(self, z: torch.Tensor, channel: str, snr_db: float | torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """The channel input (B, k) -> what arrives (B, k). ``channel`` is ``"awgn"``,
        ``"rayleigh"`` (one gain per image, perfect CSI, MMSE) or ``"none"``; ``snr_db`` a number
        or (B,). With ``compat="diffjscc"`` the latent arrives unchanged (the published code)."""
        if self.config.compat == "diffjscc":
            return z
        from ..channels.analog import make_channel

        # the channel draws where the generator lives, so one CPU generator gives the same
        # draws whatever the model's device
        where = generator.device if generator is not None else z.device
        if isinstance(snr_db, torch.Tensor):
            snr_db = snr_db.to(where)
        return make_channel(channel)(z.to(where), snr_db, generator=generator).received.to(z.device)

    def model_kwargs(self, z_hat: torch.Tensor, class_labels: torch.Tensor | None,
                     snr_db: float | torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The receiver's inputs: ``vector`` (B, vector_dim) and ``class_labels`` (B,) when used."""
        b = z_hat.shape[0]
        if z_hat.ndim != 2 or z_hat.shape[1] != self.config.latent_dim:
            raise ValueError(f"the received latent must be (B, {self.config.latent_dim}), got {tuple(z_hat.shape)}")
        vector = z_hat
        if self.config.snr_input:
            if snr_db is None:
                raise ValueError("this model takes the channel SNR as an input (snr_input=True): pass snr_db")
            snr = torch.as_tensor(snr_db, dtype=torch.float32, device=z_hat.device)
            snr = snr.expand(b) if snr.ndim == 0 else snr
            if torch.isnan(snr).any():
                raise ValueError("snr_db contains NaN")
            vector = torch.cat([z_hat, snr_feature(snr).to(z_hat.dtype)], dim=1)
        kwargs = {"vector": vector}
        if self.config.class_label == "sent":
            if class_labels is None:
                raise ValueError("this model uses the class label (class_label='sent'): pass class_labels (B,)")
            kwargs["class_labels"] = torch.as_tensor(class_labels, device=z_hat.device)
        return kwargs

    # ------------------------------------------------------------------ training
    def training_losses(self, images: torch.Tensor, class_labels: torch.Tensor | None, *,
                        t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                        snr_db: torch.Tensor | float | None = None,
                        generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Per-image loss terms ``{"loss", "mse", "vb"}`` (B,), end to end into the encoder.

        The encoder runs in the module's mode (train mode in training, as the reference); the
        latent crosses ``train_channel`` at an SNR drawn per image from ``train_snr_db`` (or
        ``snr_db``); ``t`` is drawn uniformly from the training process when not given.
        """
        self.check_images(images)
        b = images.shape[0]
        d = self.diffusion
        dev = generator.device if generator is not None else images.device
        if t is None:
            t = torch.randint(0, d.num_timesteps, (b,), generator=generator, device=dev).to(images.device)
        if noise is None:
            noise = torch.randn(images.shape, generator=generator, device=dev).to(images.device)
        kwargs = self.training_inputs(images, class_labels, snr_db=snr_db, generator=generator)
        return d.training_losses(self.unet, images, t, None, noise=noise, model_kwargs=kwargs, return_terms=True)

    def training_inputs(self, images: torch.Tensor, class_labels: torch.Tensor | None, *,
                        snr_db: torch.Tensor | float | None = None,
                        generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The receiver's inputs in training: encode, normalise, ``train_channel`` at an SNR drawn
        per image from ``train_snr_db`` (or ``snr_db``), then :meth:`model_kwargs`."""
        b = images.shape[0]
        dev = generator.device if generator is not None else images.device
        z = self.encode(images)
        snr = None
        if self.config.compat != "diffjscc":
            if snr_db is None:
                lo, hi = self.config.train_snr_db
                snr = lo + (hi - lo) * torch.rand(b, generator=generator, device=dev).to(images.device)
            else:
                snr = torch.as_tensor(snr_db, dtype=torch.float32, device=images.device)
                snr = snr.expand(b) if snr.ndim == 0 else snr
            kind = self.config.train_channel
            z = self.send(z, kind, snr if kind != "none" else math.inf, generator=generator)
        return self.model_kwargs(z, class_labels, snr)

    # ------------------------------------------------------------------ receiver
    def decode(self, z_hat: torch.Tensor, class_labels: torch.Tensor | None = None,
               snr_db: float | torch.Tensor | None = None, *, noise: torch.Tensor | None = None,
               generator: torch.Generator | None = None, steps: int | None = None,
               process: str | None = None, method: str = "ddim", progress: bool = False) -> torch.Tensor:
        """The received latent -> images (B, 3, S, S) in [-1, 1], sampled from Gaussian noise
        (``noise`` = x_T, drawn from ``generator`` when None) with DDIM (x0 clipped)."""
        s = self.config.image_size
        kwargs = self.model_kwargs(z_hat, class_labels, snr_db)
        shape = (z_hat.shape[0], self.config.unet.in_channels, s, s)
        return self.sampling_process(steps, process).sample(
            self.unet, None, noise=noise, method=method, generator=generator, model_kwargs=kwargs,
            shape=shape, progress=progress)

    def oracle_decode(self, images: torch.Tensor, z_hat: torch.Tensor, class_labels: torch.Tensor | None = None,
                      snr_db: float | torch.Tensor | None = None, *, steps: int | None = None,
                      inversion_steps: int | None = None, process: str | None = None) -> torch.Tensor:
        """ORACLE, not a communication result: DDIM-invert the *transmitted* image (which the
        receiver does not have) with the received conditioning, then decode from that x_T.

        This is Diff_JSCC's "start from X_T (deterministic noise)" row: x_T carries 3 S^2 real
        values computed from the clean image, so it is an upper bound only."""
        self.check_images(images)
        kwargs = self.model_kwargs(z_hat, class_labels, snr_db)
        inv = self.sampling_process(inversion_steps or self.config.inversion_steps, process)
        x_T = inv.invert(self.unet, images, None, model_kwargs=kwargs)
        return self.sampling_process(steps, process).sample(
            self.unet, None, noise=x_T, method="ddim", model_kwargs=kwargs, shape=tuple(images.shape))

    # ------------------------------------------------------------------ I/O
    def save_pretrained(self, directory: Any, extra: dict[str, Any] | None = None,
                        dtype: torch.dtype | None = None) -> Any:
        """``model.safetensors`` (keys ``encoder.*``, ``unet.*``) + ``config.json`` (kind ``diffjscc``)."""
        from .io import save_module

        return save_module(directory, self, self.config.to_dict(), "diffjscc", extra=extra, dtype=dtype)

    @classmethod
    def from_trainer_output(cls, directory: Any, device: str | torch.device = "cpu") -> "DiffJSCC":
        """A model from the platform trainer's ``out/model`` folder trained with
        :func:`diffjscc_condition`: the EMA U-Net (``model.safetensors``) and the EMA encoder
        (``condition.safetensors``, keys ``encoder.*``); the Diff-JSCC config is read from the
        folder's ``config.json`` (``condition.diffjscc``)."""
        import json
        from pathlib import Path

        from safetensors.torch import load_file

        from .io import load_checkpoint

        directory = Path(directory)
        cfg = json.loads((directory / "config.json").read_text())
        cond = cfg.get("condition", {})
        if cond.get("kind") != "diffjscc":
            raise ValueError(f"{directory} was not trained with diffjscc_condition (condition: {cond.get('kind')})")
        model = cls(DiffJSCCConfig.from_dict(cond["diffjscc"]))
        load_checkpoint(model.unet, directory / "model.safetensors")
        enc = {k[len("encoder."):]: v for k, v in load_file(str(directory / "condition.safetensors")).items()}
        load_checkpoint(model.encoder, enc)
        model.saved_config = cfg
        return model.to(device).eval()

    @classmethod
    def from_pretrained(cls, directory: Any, device: str | torch.device = "cpu") -> "DiffJSCC":
        """Load a folder written by :meth:`save_pretrained`, or a platform trainer's ``out/model``
        (then :meth:`from_trainer_output`)."""
        from .io import load_module, read_config

        if read_config(directory).get("condition", {}).get("kind") == "diffjscc":
            return cls.from_trainer_output(directory, device=device)

        model, config = load_module(directory, lambda d: cls(DiffJSCCConfig.from_dict(d)), kind="diffjscc",
                                    device=device)
        model.saved_config = config
        return model


def diffjscc_condition(config: DiffJSCCConfig):
    """A :class:`gensemcom.conditioning.Condition` for the platform's trainer
    (:class:`gensemcom.train.Trainer`): it holds the encoder (trained with the network, kept in the
    EMA and the checkpoint, all-reduced under DDP) and builds the receiver's inputs exactly as
    :meth:`DiffJSCC.training_inputs` does (normalisation, ``train_channel`` at a per-image SNR,
    the SNR input, the class label from the items' ``"class"``). Pass ``config.unet`` as the
    trainer's model config; :meth:`DiffJSCC.from_trainer_output` loads the result."""
    from ..conditioning import Condition, Conditioned

    class DiffJSCCCondition(Condition):
        def __init__(self) -> None:
            super().__init__()
            self.diffjscc_config = config
            self.encoder = config.encoder.build()

        def check(self, model_config: Any) -> None:
            if model_config != config.unet:
                raise ValueError("the trainer's model config must be the Diff-JSCC config's unet")

        def config(self) -> dict[str, Any]:
            return {"kind": "diffjscc", "diffjscc": config.to_dict()}

        def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> Conditioned:
            x0 = batch["image"]
            labels = None
            if config.class_label == "sent":
                if "class" not in batch:
                    raise ValueError("this Diff-JSCC model uses the class label but the items have no 'class'")
                labels = batch["class"].long().to(x0.device)
            shell = _Shell(config, self.encoder)
            return Conditioned(x0, None, DiffJSCC.training_inputs(shell, x0, labels, generator=generator))

    return DiffJSCCCondition()


class _Shell:
    """Just enough of a :class:`DiffJSCC` (config + encoder) for its transmitter methods."""

    def __init__(self, config: DiffJSCCConfig, encoder: nn.Module) -> None:
        self.config, self.encoder = config, encoder

    check_images = DiffJSCC.check_images
    encode = DiffJSCC.encode
    send = DiffJSCC.send
    model_kwargs = DiffJSCC.model_kwargs


def normalize_latent(z: torch.Tensor) -> torch.Tensor:
    """Per-image power normalisation (B, k) -> ``sqrt(k/2) z / ||z||``: paired into ``k/2``
    complex symbols, each image then has mean ``|s|^2 = 1`` per symbol (an all-zero latent stays 0)."""
    if z.ndim != 2:
        raise ValueError(f"latent must be (B, k), got {tuple(z.shape)}")
    norm = z.norm(dim=1, keepdim=True)
    scale = math.sqrt(z.shape[1] / 2) / norm.clamp_min(torch.finfo(z.dtype).tiny)
    return z * torch.where(norm > 0, scale, torch.zeros_like(scale))
