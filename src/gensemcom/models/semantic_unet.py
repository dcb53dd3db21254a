"""The SDM / GESCO semantic diffusion U-Net.

Wang et al., "Semantic Image Synthesis via Diffusion Models" (SDM, arXiv 2207.00050), as used by
GESCO (Grassucci et al., arXiv 2306.04321) and every other system of this package. The network is
the guided-diffusion ADM U-Net whose encoder sees only the noisy image; the semantic map enters
through SPADE group norms in the middle block and in every decoder block::

    x_t (B,3,H,W) [+ concat (B,k,H,W)]          y (B,L,H,W) semantic map
          |                                          |
      conv3x3                                 (SPADE modulation: gamma, beta per
          |                                    decoder norm; depends on y only,
    encoder ResBlocks (GroupNorm, FiLM by t)   so it is computed once per map)
          |  skips ------------------------.         |
    middle: SDMResBlock, attention, SDMResBlock <----+
          |                                |         |
    decoder SDMResBlocks (+ attention) <---'  <------+
          |
    GN, SiLU, conv3x3 -> (B, 6, H, W) = [eps (3) | variance interpolation v (3)]

    t (B,) original timesteps -> sinusoidal(model_channels) -> MLP -> emb (B, 4*model_channels)
                                                          [+ Linear(vector) : Diff-JSCC hook]

State-dict names and shapes are those of the reference code, so released GESCO/SDM checkpoints load
with ``strict=True``. GESCO's encoder ResBlocks also build a SPADE norm they never call; with
``layout="gesco"`` those parameters exist (and stay unused) so GESCO files load strictly, with
``layout="sdm"`` they are absent (and with ``label_channels=0`` they are never built).

Conditioning inputs are declared in the config, so the same family serves every system:

- ``label_channels > 0``: a SPADE semantic map ``y`` (GESCO, SDM, SPIC, Diff-GO^n);
  ``label_channels = 0``: no map and no SPADE at all: the middle and decoder blocks are plain
  GroupNorm ResBlocks, which is the ADM / improved-diffusion U-Net (Nichol & Dhariwal 2021) with the
  key names of openai/improved-diffusion (Diff-JSCC's receiver);
- ``concat_channels``: image channels concatenated to ``x_t`` (SPIC);
- ``vector_dim``: a vector added through a Linear layer to the time embedding (Diff-JSCC's latent),
  registered as ``vector_embed`` or, with ``vector_embed_name="latent_emb"``, under Diff-JSCC's key;
- ``num_classes``: a class-label embedding (``label_emb``, an ``nn.Embedding``) added to the time
  embedding, as improved-diffusion's class-conditional models (Diff-JSCC's CIFAR-10 class).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SemanticUNetConfig",
    "SemanticUNet",
    "SemanticCondition",
    "timestep_embedding",
]


@dataclass
class SemanticUNetConfig:
    """Constructor arguments of :class:`SemanticUNet`; saved as JSON beside the weights.

    Attributes:
        label_channels: channels of the semantic input ``y`` (one-hot classes, plus one
            instance-edge channel when the dataset has instances): 36 Cityscapes, 184 COCO-Stuff,
            151 ADE20K.
        image_size: the nominal size used only to turn ``attention_resolutions`` into
            downsampling factors (``ds = image_size // r``), exactly as the reference does. Inputs
            may be any size divisible by ``2 ** (len(channel_mult) - 1)``, non-square too.
        model_channels: base width (``num_channels`` in the reference flags).
        channel_mult: width multiplier per level.
        num_res_blocks: ResBlocks per level in the encoder (the decoder has one more).
        attention_resolutions: feature-map sizes (in units of ``image_size``) with attention.
        num_heads, num_head_channels, num_heads_upsample: attention heads, as the reference
            (``num_head_channels > 0`` overrides ``num_heads``).
        attention_order: ``"legacy"`` (heads split before q/k/v, the released checkpoints) or
            ``"new"`` (``use_new_attention_order``).
        in_channels, out_channels: image channels in; 6 out with a learned variance, else 3.
        dropout: dropout rate inside ResBlocks.
        use_scale_shift_norm: FiLM (scale, shift) time conditioning, else additive.
        resblock_updown: down/up-sample with ResBlocks (else plain resampling layers).
        conv_resample: with ``resblock_updown=False``, resample with a learned conv.
        layout: ``"gesco"`` keeps GESCO's unused encoder ``spade_norm`` parameters (so released
            GESCO checkpoints load strictly); ``"sdm"`` omits them.
        spade_hidden: hidden width of the SPADE MLP (128 in the reference).
        concat_channels: extra input channels concatenated to ``x_t`` (SPIC's upsampled low-res
            image); 0 for GESCO.
        vector_dim: width of a vector added, through a Linear layer, to the time embedding
            (Diff-JSCC's received latent); 0 for GESCO.
        vector_embed_name: the attribute (and state-dict key prefix) of that Linear layer:
            ``"vector_embed"`` or ``"latent_emb"`` (Diff-JSCC's released key names).
        num_classes: classes of a class-label embedding ``label_emb`` (``nn.Embedding(num_classes,
            4 * model_channels)``) added to the time embedding; 0 for none. The forward pass then
            needs ``class_labels`` (B,) int64.
        gradient_checkpointing: recompute block activations in the backward pass (training only).
    """

    label_channels: int
    image_size: int = 256
    model_channels: int = 256
    channel_mult: tuple[float, ...] = (1, 1, 2, 2, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (32, 16, 8)
    num_heads: int = 4
    num_head_channels: int = 64
    num_heads_upsample: int = -1
    attention_order: str = "legacy"
    in_channels: int = 3
    out_channels: int = 6
    dropout: float = 0.0
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    conv_resample: bool = True
    layout: str = "gesco"
    spade_hidden: int = 128
    concat_channels: int = 0
    vector_dim: int = 0
    gradient_checkpointing: bool = False
    vector_embed_name: str = "vector_embed"
    num_classes: int = 0

    def __post_init__(self) -> None:
        self.channel_mult = tuple(self.channel_mult)
        self.attention_resolutions = tuple(int(r) for r in self.attention_resolutions)
        problems = []
        if self.label_channels < 0:
            problems.append(f"label_channels must be >= 0 (got {self.label_channels}; 0 builds a "
                            "network without a semantic map)")
        if self.num_classes < 0:
            problems.append(f"num_classes must be >= 0, got {self.num_classes}")
        if self.vector_dim < 0:
            problems.append(f"vector_dim must be >= 0, got {self.vector_dim}")
        if self.vector_embed_name not in ("vector_embed", "latent_emb"):
            problems.append(f"vector_embed_name must be 'vector_embed' or 'latent_emb', got "
                            f"{self.vector_embed_name!r}")
        if self.layout not in ("gesco", "sdm"):
            problems.append(f"layout must be 'gesco' or 'sdm', got {self.layout!r}")
        if self.attention_order not in ("legacy", "new"):
            problems.append(f"attention_order must be 'legacy' or 'new', got {self.attention_order!r}")
        if self.out_channels not in (self.in_channels, 2 * self.in_channels):
            problems.append(f"out_channels must be {self.in_channels} (fixed variance) or "
                            f"{2 * self.in_channels} (learned variance), got {self.out_channels}")
        widths = [int(m * self.model_channels) for m in self.channel_mult]
        for w in widths:
            if w % 32:
                problems.append(f"every level width must be a multiple of 32 (GroupNorm(32)); "
                                f"model_channels={self.model_channels} x channel_mult "
                                f"{self.channel_mult} gives {widths}")
                break
        if self.num_head_channels > 0:
            for w in widths:
                if w % self.num_head_channels:
                    problems.append(f"level width {w} is not divisible by num_head_channels "
                                    f"{self.num_head_channels}")
                    break
        for r in self.attention_resolutions:
            if r <= 0 or self.image_size % r:
                problems.append(f"attention resolution {r} does not divide image_size {self.image_size}")
        if problems:
            raise ValueError("invalid SemanticUNetConfig: " + "; ".join(problems))

    @property
    def learn_sigma(self) -> bool:
        return self.out_channels == 2 * self.in_channels

    @property
    def attention_ds(self) -> tuple[int, ...]:
        """Downsampling factors at which attention runs (``image_size // r``)."""
        return tuple(self.image_size // r for r in self.attention_resolutions)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 2 ** (len(self.channel_mult) - 1)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        d["attention_resolutions"] = list(self.attention_resolutions)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SemanticUNetConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown SemanticUNetConfig fields: {unknown}")
        return cls(**d)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (B,) -> (B, dim): first half cosines, second half sines.

    Frequencies ``exp(-ln(max_period) * i / (dim // 2))``, as the reference (the order matters for
    the weights of ``time_embed.0``). ``t`` may be fractional.
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 and cast back (the reference's ``normalization``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


class SemanticCondition:
    """A semantic map with its SPADE modulations, computed lazily and reused across calls.

    Every SPADE norm turns the map into a (gamma, beta) pair that depends on ``y`` and on the
    feature-map size only, not on ``x_t`` or ``t``. A sampler builds one ``SemanticCondition`` per
    map (with :meth:`SemanticUNet.encode_condition`) and passes it to every network call instead of
    the raw tensor; the first call fills the cache, later calls reuse it. Numbers are identical to
    passing ``y`` directly.

    Memory: one (1 + gamma, beta) pair per decoder norm at that norm's resolution; for the
    full-size Cityscapes model at 256x512 that is about 3.6 GB of float32 per image.
    """

    def __init__(self, y: torch.Tensor) -> None:
        self.y = y
        self._cache: dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def shape(self) -> torch.Size:
        return self.y.shape

    def modulation(self, norm: "SPADEGroupNorm", size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        key = (id(norm), size[0], size[1])
        hit = self._cache.get(key)
        if hit is None:
            hit = norm.modulation(self.y, size)
            self._cache[key] = hit
        return hit

    def __len__(self) -> int:
        return len(self._cache)


class SPADEGroupNorm(nn.Module):
    """Parameter-free GroupNorm(32) modulated by the semantic map (Park et al., SPADE).

    ``out = GN(x) * (1 + gamma(y)) + beta(y)`` with ``y`` resized (nearest) to ``x``'s size,
    ``gamma, beta = conv3x3(ReLU(conv3x3(y)))``.
    """

    def __init__(self, channels: int, label_channels: int, hidden: int = 128, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(32, channels, affine=False, eps=eps)
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_channels, hidden, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def modulation(self, y: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(1 + gamma, beta), each (B, C, *size), from the map ``y`` (B, L, H, W)."""
        if tuple(y.shape[-2:]) != tuple(size):
            y = F.interpolate(y, size=size, mode="nearest")
        actv = self.mlp_shared(y)
        return 1 + self.mlp_gamma(actv), self.mlp_beta(actv)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | SemanticCondition) -> torch.Tensor:
        size = (x.shape[-2], x.shape[-1])
        if isinstance(cond, SemanticCondition):
            scale, shift = cond.modulation(self, size)
        else:
            scale, shift = self.modulation(cond.to(x.dtype), size)
        return self.norm(x) * scale + shift


def _resampler(kind: str, channels: int, use_conv: bool) -> nn.Module:
    if kind == "up":
        return _Upsample(channels, use_conv)
    if kind == "down":
        return _Downsample(channels, use_conv)
    return nn.Identity()


class _Upsample(nn.Module):
    """Nearest x2 (then a conv3x3 when ``use_conv``); callable as a block or inside a ResBlock."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, cond: Any = None, emb: Any = None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class _Downsample(nn.Module):
    """Stride-2 conv3x3 when ``use_conv``, else 2x2 average pooling."""

    def __init__(self, channels: int, use_conv: bool) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2, 2)

    def forward(self, x: torch.Tensor, cond: Any = None, emb: Any = None) -> torch.Tensor:
        return self.op(x)


class ResBlock(nn.Module):
    """Encoder ResBlock: GroupNorm, time FiLM, no semantic input.

    Keys: ``in_layers.{0: GN, 2: conv}``, ``emb_layers.1``, ``out_layers.{0: GN, 3: conv}``,
    ``skip_connection``; with ``layout="gesco"`` also the unused ``spade_norm.*``.
    """

    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: int,
                 use_scale_shift_norm: bool, resample: str = "none", dead_spade: bool = False,
                 spade_hidden: int = 128) -> None:
        super().__init__()
        self.use_scale_shift_norm = use_scale_shift_norm
        if dead_spade:
            # Built by GESCO (with 3 label channels) and never called; kept so its checkpoints load.
            self.spade_norm = SPADEGroupNorm(channels, 3, spade_hidden)
        self.in_layers = nn.Sequential(GroupNorm32(32, channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.updown = resample != "none"
        self.h_upd = _resampler(resample, channels, False)
        self.x_upd = _resampler(resample, channels, False)
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, (2 if use_scale_shift_norm else 1) * out_channels))
        self.out_layers = nn.Sequential(GroupNorm32(32, out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x: torch.Tensor, cond: Any, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            h = self.in_layers[1](self.in_layers[0](x))
            h = self.in_layers[2](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[3](self.out_layers[2](self.out_layers[1](h)))
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class SDMResBlock(nn.Module):
    """Middle/decoder ResBlock: both norms are SPADE; the time FiLM acts on the SPADE output.

    Keys: ``in_norm``, ``in_layers.1`` (conv), ``emb_layers.1``, ``out_norm``,
    ``out_layers.2`` (conv), ``skip_connection``.
    """

    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: int,
                 label_channels: int, use_scale_shift_norm: bool, resample: str = "none",
                 spade_hidden: int = 128) -> None:
        super().__init__()
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_norm = SPADEGroupNorm(channels, label_channels, spade_hidden)
        self.in_layers = nn.Sequential(nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.updown = resample != "none"
        self.h_upd = _resampler(resample, channels, False)
        self.x_upd = _resampler(resample, channels, False)
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, (2 if use_scale_shift_norm else 1) * out_channels))
        self.out_norm = SPADEGroupNorm(out_channels, label_channels, spade_hidden)
        self.out_layers = nn.Sequential(nn.SiLU(), nn.Dropout(dropout),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x: torch.Tensor, cond: Any, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers[0](self.in_norm(x, cond))
        if self.updown:
            h = self.h_upd(h)
            x = self.x_upd(x)
        h = self.in_layers[1](h)
        emb_out = self.emb_layers(emb).type(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_norm(h, cond) * (1 + scale) + shift
        else:
            h = self.out_norm(h + emb_out, cond)
        return self.skip_connection(x) + self.out_layers(h)


class AttentionBlock(nn.Module):
    """Spatial self-attention with a residual; keys ``norm``, ``qkv`` (conv1d), ``proj_out``.

    ``attention_order="legacy"``: the qkv rows are grouped per head as [q_h; k_h; v_h] (the
    released checkpoints); ``"new"``: split into q, k, v first, then into heads. Runs
    ``scaled_dot_product_attention`` (equal to the reference's einsum form within rounding).
    """

    def __init__(self, channels: int, num_heads: int, num_head_channels: int, order: str = "legacy") -> None:
        super().__init__()
        self.num_heads = channels // num_head_channels if num_head_channels > 0 else num_heads
        if channels % self.num_heads:
            raise ValueError(f"attention width {channels} is not divisible into {self.num_heads} heads")
        self.order = order
        self.norm = GroupNorm32(32, channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor, cond: Any = None, emb: Any = None) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        flat = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(flat))
        n = hgt * wid
        ch = c // self.num_heads
        # (B, heads, tokens, ch), contiguous in ch, so that the fused (flash) kernels apply on CPU
        # and GPU. Legacy order: per head the rows are [q; k; v]; new order: [all q; all k; all v].
        if self.order == "legacy":
            qkv = qkv.reshape(b, self.num_heads, 3 * ch, n).transpose(-1, -2).contiguous()
            q, k, v = qkv.split(ch, dim=-1)
        else:
            qkv = qkv.reshape(b, 3, self.num_heads, ch, n).transpose(-1, -2).contiguous()
            q, k, v = qkv.unbind(1)
        a = F.scaled_dot_product_attention(q, k, v)
        h = self.proj_out(a.transpose(-1, -2).reshape(b, c, n))
        return (flat + h).reshape(b, c, hgt, wid)


class _Sequential(nn.ModuleList):
    """A block position of the U-Net: children called as ``child(h, cond, emb)``."""

    def forward(self, h: torch.Tensor, cond: Any, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            h = layer(h, cond, emb)
        return h


class _Conv(nn.Conv2d):
    def forward(self, x: torch.Tensor, cond: Any = None, emb: Any = None) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x)


class SemanticUNet(nn.Module):
    """The SDM/GESCO semantic U-Net (see the module docstring for the data flow).

    ``model(x, t, y)`` -> (B, out_channels, H, W).

    Args (forward):
        x: (B, in_channels, H, W) noisy image in the diffusion's scale ([-1, 1] data).
        t: (B,) original timesteps (integers, or floats when the diffusion rescales them).
        y: (B, label_channels, H, W) semantic map, or a :class:`SemanticCondition` built from one
           by :meth:`encode_condition` (reuses the SPADE modulations across calls).
        concat: (B, concat_channels, H, W) extra input concatenated to ``x`` (SPIC hook).
        vector: (B, vector_dim) added through ``vector_embed`` to the time embedding
           (Diff-JSCC hook).
    """

    def __init__(self, config: SemanticUNetConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        if config is None:
            config = SemanticUNetConfig(**kwargs)
        elif kwargs:
            raise TypeError("pass either a SemanticUNetConfig or keyword arguments, not both")
        self.config = config
        c = config
        mc = c.model_channels
        emb_dim = 4 * mc
        heads_up = c.num_heads if c.num_heads_upsample == -1 else c.num_heads_upsample
        attn_ds = set(c.attention_ds)

        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if c.num_classes:
            self.label_emb = nn.Embedding(c.num_classes, emb_dim)
        if c.vector_dim:
            self.add_module(c.vector_embed_name, nn.Linear(c.vector_dim, emb_dim))

        def attention(ch: int, heads: int) -> AttentionBlock:
            return AttentionBlock(ch, heads, c.num_head_channels, c.attention_order)

        dead_spade = c.layout == "gesco" and c.label_channels > 0

        def res(ch: int, out: int, resample: str = "none") -> ResBlock:
            return ResBlock(ch, emb_dim, c.dropout, out, c.use_scale_shift_norm, resample,
                            dead_spade=dead_spade, spade_hidden=c.spade_hidden)

        def sdm(ch: int, out: int, resample: str = "none") -> nn.Module:
            if not c.label_channels:  # no map: the plain ADM block (GroupNorm) in the map's place
                return ResBlock(ch, emb_dim, c.dropout, out, c.use_scale_shift_norm, resample)
            return SDMResBlock(ch, emb_dim, c.dropout, out, c.label_channels, c.use_scale_shift_norm,
                               resample, c.spade_hidden)

        ch = input_ch = int(c.channel_mult[0] * mc)
        self.input_blocks = nn.ModuleList(
            [_Sequential([_Conv(c.in_channels + c.concat_channels, ch, 3, padding=1)])])
        skip_chans = [ch]
        ds = 1
        for level, mult in enumerate(c.channel_mult):
            for _ in range(c.num_res_blocks):
                layers: list[nn.Module] = [res(ch, int(mult * mc))]
                ch = int(mult * mc)
                if ds in attn_ds:
                    layers.append(attention(ch, c.num_heads))
                self.input_blocks.append(_Sequential(layers))
                skip_chans.append(ch)
            if level != len(c.channel_mult) - 1:
                down = res(ch, ch, "down") if c.resblock_updown else _Downsample(ch, c.conv_resample)
                self.input_blocks.append(_Sequential([down]))
                skip_chans.append(ch)
                ds *= 2

        self.middle_block = _Sequential([sdm(ch, ch), attention(ch, c.num_heads), sdm(ch, ch)])

        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(c.channel_mult))[::-1]:
            for i in range(c.num_res_blocks + 1):
                skip = skip_chans.pop()
                layers = [sdm(ch + skip, int(mc * mult))]
                ch = int(mc * mult)
                if ds in attn_ds:
                    layers.append(attention(ch, heads_up))
                if level and i == c.num_res_blocks:
                    layers.append(sdm(ch, ch, "up") if c.resblock_updown
                                  else _Upsample(ch, c.conv_resample))
                    ds //= 2
                self.output_blocks.append(_Sequential(layers))

        self.out = nn.Sequential(GroupNorm32(32, ch), nn.SiLU(),
                                 nn.Conv2d(input_ch, c.out_channels, 3, padding=1))

    # ------------------------------------------------------------------ conditioning
    def encode_condition(self, y: torch.Tensor) -> SemanticCondition:
        """Wrap a semantic map so its SPADE modulations are computed once and reused."""
        if not self.config.label_channels:
            raise ValueError("this model has no semantic map input (label_channels=0): nothing to encode")
        self._check_y(y, None)
        return SemanticCondition(y)

    def spade_norms(self) -> Iterator[SPADEGroupNorm]:
        """The SPADE norms that read the semantic map (middle and decoder)."""
        for blocks in (self.middle_block, self.output_blocks):
            for m in blocks.modules():
                if isinstance(m, SDMResBlock):
                    yield m.in_norm
                    yield m.out_norm

    # ------------------------------------------------------------------ forward
    def _check_y(self, y: torch.Tensor | SemanticCondition | None, x: torch.Tensor | None,
                 branches: int = 1) -> None:
        c = self.config
        if not c.label_channels:
            # A map-free network takes y=None, or an empty (B, 0, H, W) placeholder.
            if y is not None and (isinstance(y, SemanticCondition) or y.ndim != 4 or y.shape[1] != 0):
                raise ValueError(f"this model has no semantic map input (label_channels=0) but was given "
                                 f"y of shape {tuple(y.shape)}; pass y=None")
            if branches != 1:
                raise ValueError("branches > 1 stacks several semantic maps; this model takes none "
                                 "(label_channels=0)")
            return
        if y is None:
            raise ValueError(f"this model needs a semantic map y (B, {c.label_channels}, H, W) "
                             f"(label_channels={c.label_channels}); got None")
        shape = tuple(y.shape)
        if len(shape) != 4 or shape[1] != c.label_channels:
            raise ValueError(f"semantic map y must be (B, {c.label_channels}, H, W) for this model "
                             f"(label_channels={c.label_channels}), got {shape}")
        if x is not None and (shape[0] != branches * x.shape[0] or shape[2:] != tuple(x.shape[2:])):
            raise ValueError(f"semantic map y {shape} does not match x {tuple(x.shape)} in batch "
                             f"or size" + (f" (with {branches} branches)" if branches > 1 else ""))

    #: the encoder never reads the semantic map, so maps that share x_t and t can share it
    shares_encoder = True

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | SemanticCondition | None = None,
                concat: torch.Tensor | None = None, vector: torch.Tensor | None = None, *,
                class_labels: torch.Tensor | None = None, branches: int = 1) -> torch.Tensor:
        """See the class docstring. ``branches=k``: ``y`` holds k maps per image, stacked as k
        batch blocks of B (e.g. [conditional; all-zero] for guidance); the encoder runs once on
        x (B) and the middle/decoder on the k blocks; returns (k*B, out_channels, H, W), equal
        to k separate calls."""
        c = self.config
        if x.ndim != 4 or x.shape[1] != c.in_channels:
            raise ValueError(f"x must be (B, {c.in_channels}, H, W), got {tuple(x.shape)}")
        m = c.size_multiple
        if x.shape[2] % m or x.shape[3] % m:
            raise ValueError(f"image height and width must be multiples of {m} for "
                             f"{len(c.channel_mult)} levels, got {tuple(x.shape[2:])}")
        if branches < 1:
            raise ValueError(f"branches must be >= 1, got {branches}")
        self._check_y(y, x, branches)
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(t, c.model_channels))
        if c.num_classes:
            emb = emb + self.label_emb(self._check_class_labels(class_labels, x.shape[0]))
        elif class_labels is not None:
            raise ValueError("class_labels given but the model was built with num_classes=0")
        if c.vector_dim:
            if vector is None or vector.shape != (x.shape[0], c.vector_dim):
                raise ValueError(f"this model takes a vector (B, {c.vector_dim}) added to the time "
                                 f"embedding; got {None if vector is None else tuple(vector.shape)}")
            emb = emb + getattr(self, c.vector_embed_name)(vector.to(emb.dtype))
        elif vector is not None:
            raise ValueError("vector given but the model was built with vector_dim=0")
        if c.concat_channels:
            if concat is None or concat.shape != (x.shape[0], c.concat_channels, *x.shape[2:]):
                raise ValueError(f"this model takes concat (B, {c.concat_channels}, H, W); got "
                                 f"{None if concat is None else tuple(concat.shape)}")
            x = torch.cat([x, concat.to(x.dtype)], dim=1)
        elif concat is not None:
            raise ValueError("concat given but the model was built with concat_channels=0")

        checkpointing = c.gradient_checkpointing and self.training and torch.is_grad_enabled()

        def run(block: nn.Module, h: torch.Tensor) -> torch.Tensor:
            if checkpointing:
                return torch.utils.checkpoint.checkpoint(block, h, y, emb, use_reentrant=False)
            return block(h, y, emb)

        hs = []
        h = x
        for block in self.input_blocks:
            h = run(block, h)
            hs.append(h)
        if branches > 1:
            hs = [torch.cat([z] * branches) for z in hs]
            h, emb = hs[-1], torch.cat([emb] * branches)
        h = run(self.middle_block, h)
        for block in self.output_blocks:
            h = run(block, torch.cat([h, hs.pop()], dim=1))
        return self.out(h)

    def _check_class_labels(self, labels: torch.Tensor | None, batch: int) -> torch.Tensor:
        n = self.config.num_classes
        if labels is None:
            raise ValueError(f"this model is class-conditional (num_classes={n}): pass class_labels (B,) int64")
        labels = torch.as_tensor(labels)
        if labels.shape != (batch,) or labels.is_floating_point() or labels.is_complex() \
                or labels.dtype == torch.bool:
            raise ValueError(f"class_labels must be integers of shape ({batch},), got "
                             f"{tuple(labels.shape)} {labels.dtype}")
        if batch and (int(labels.min()) < 0 or int(labels.max()) >= n):
            raise ValueError(f"class_labels must lie in [0, {n - 1}], got {labels.tolist()}")
        return labels.long()

    def num_parameters(self, live_only: bool = False) -> int:
        """Parameter count; ``live_only`` leaves out GESCO's unused encoder ``spade_norm``."""
        return sum(p.numel() for n, p in self.named_parameters()
                   if not (live_only and ".spade_norm." in n))
