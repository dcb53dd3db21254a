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
from .semantic_unet import AttentionBlock, GroupNorm32, SemanticUNetConfig

__all__ = [
    "ENCODER_KINDS", "channel_mult_for", "unet_config_from_yaml", "diffusion_config_from_yaml",
    "build_diffusion", "EncoderConfig", "CDMEncoder", "HalfUNetEncoder", "JSCCEncoder", "AEEncoder",
    "build_encoder", "VDiffusionUNet", "PrototypeAutoencoder", "proto_log_snr", "proto_alpha_sigma",
    "proto_loss", "proto_sample", "num_parameters",
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

