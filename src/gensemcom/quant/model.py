"""Fake-quantised semantic U-Net: layer and attention wrappers, Q-GESCO checkpoints.

:func:`quantize_model` turns a :class:`~gensemcom.models.semantic_unet.SemanticUNet` into the
network Q-GESCO calibrates (Pignata et al., arXiv 2410.02491, following Q-Diffusion, arXiv
2302.04304), in place: every ``Conv2d``, ``Conv1d`` and ``Linear`` becomes a :class:`QuantLayer`
(time-embedding linears, first conv, every ResBlock conv and embedding linear, every SPADE conv,
attention ``qkv``/``proj_out``, skip 1x1 convs, output conv: nothing stays in full precision, as
published) and every ``AttentionBlock`` a :class:`QuantAttentionBlock` whose two matmuls and
softmax can be quantised. The model stays a ``SemanticUNet`` (its forward, guidance branches
and cached SPADE modulation work unchanged).

The decoder's first ResBlock of each position reads ``cat([h, skip])``; with ``split=True`` its
1x1 skip convolution gets two weight quantisers (input columns ``[:split]`` and ``[split:]``) and
two activation quantisers, because the two halves have very different ranges (Q-Diffusion's
"split" shortcut quantisation, which Q-GESCO parses and never applies).

State-dict keys are the fp model's plus ``<layer>.weight_quantizer.{alpha,zero_point,delta}``,
so :func:`qgesco_state_dict` / :func:`load_qgesco_state_dict` read and write Q-GESCO's
``quantized_model.pth`` layout (``model.`` prefix, no encoder ``spade_norm``).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..models.semantic_unet import AttentionBlock, GroupNorm32, ResBlock, SDMResBlock, SemanticUNet
from .quantizers import ActQuantizer, WeightQuantizer, check_compat

__all__ = [
    "QuantLayer",
    "QuantAttentionBlock",
    "quantize_model",
    "quant_layers",
    "set_quant_state",
    "reconstruction_units",
    "decoder_splits",
    "qgesco_state_dict",
    "load_qgesco_state_dict",
    "load_qgesco_checkpoint",
    "enable_adaround",
    "load_act_quantizers",
]

_QUANTISABLE = (nn.Conv2d, nn.Conv1d, nn.Linear)


class QuantLayer(nn.Module):
    """A ``Conv2d``/``Conv1d``/``Linear`` with a fake-quantised weight and, optionally, input.

    Shares the wrapped layer's ``weight`` and ``bias`` Parameters (same keys). Extra positional
    arguments (the U-Net calls its first conv as ``conv(h, y, emb)``) are ignored.

    Attributes:
        use_weight_quant, use_act_quant: what the forward applies.
        split: 0, or the number of input channels of the first half (split quantisation).
    """

    def __init__(self, layer: nn.Module, weight_params: Mapping[str, Any], act_params: Mapping[str, Any] | None,
                 compat: str | None = None) -> None:
        super().__init__()
        if isinstance(layer, nn.Conv2d):
            self.kind, self.fwd = "conv2d", F.conv2d
        elif isinstance(layer, nn.Conv1d):
            self.kind, self.fwd = "conv1d", F.conv1d
        elif isinstance(layer, nn.Linear):
            self.kind, self.fwd = "linear", F.linear
        else:
            raise ValueError(f"QuantLayer wraps Conv2d, Conv1d or Linear, not {type(layer).__name__}")
        self.fwd_kwargs: dict[str, Any] = {}
        if self.kind != "linear":
            if layer.padding_mode != "zeros":
                raise ValueError(f"padding_mode {layer.padding_mode!r} is not supported")
            self.fwd_kwargs = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                                   groups=layer.groups)
        self.weight = layer.weight
        self.bias = layer.bias
        self.compat = check_compat(compat)
        self.weight_params, self.act_params = dict(weight_params), dict(act_params) if act_params else None
        self.weight_quantizer = WeightQuantizer(**self.weight_params, compat=compat)
        self.act_quantizer = ActQuantizer(**self.act_params, compat=compat) if self.act_params else None
        self.split = 0
        self.use_weight_quant = False
        self.use_act_quant = False

    def extra_repr(self) -> str:
        return f"{self.kind}, weight={tuple(self.weight.shape)}, split={self.split}"

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    def set_split(self, split: int) -> None:
        """Quantise input channels ``[:split]`` and ``[split:]`` separately (weights and inputs)."""
        if self.kind == "linear" or not 0 < split < self.weight.shape[1]:
            raise ValueError(f"cannot split a {self.kind} with {self.weight.shape[1]} inputs at {split}")
        self.split = int(split)
        self.weight_quantizer_0 = WeightQuantizer(**self.weight_params, compat=self.compat)
        if self.act_params:
            self.act_quantizer_0 = ActQuantizer(**self.act_params, compat=self.compat)

    def weight_quantizers(self) -> list[WeightQuantizer]:
        return [self.weight_quantizer] + ([self.weight_quantizer_0] if self.split else [])

    def act_quantizers(self) -> list[ActQuantizer]:
        if self.act_quantizer is None:
            return []
        return [self.act_quantizer] + ([self.act_quantizer_0] if self.split else [])

    def weight_parts(self, w: torch.Tensor | None = None) -> list[torch.Tensor]:
        w = self.weight if w is None else w
        return [w[:, : self.split], w[:, self.split:]] if self.split else [w]

    def init_quantizers(self) -> None:
        """Scales of the weight quantiser(s) from the current weight (min-max / MSE)."""
        for q, part in zip(self.weight_quantizers(), self.weight_parts()):
            q.init(part.detach())

    def quantized_weight(self) -> torch.Tensor:
        parts = [q(p) for q, p in zip(self.weight_quantizers(), self.weight_parts())]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def integer_weight(self) -> list[torch.Tensor]:
        """The stored integers of each part (float tensors holding integers)."""
        with torch.no_grad():
            return [q.integer(p) for q, p in zip(self.weight_quantizers(), self.weight_parts())]

    def forward(self, x: torch.Tensor, *unused: Any, **unused_kw: Any) -> torch.Tensor:
        if self.use_act_quant and self.act_quantizer is not None:
            if self.split:
                x = torch.cat([self.act_quantizer(x[:, : self.split]), self.act_quantizer_0(x[:, self.split:])], 1)
            else:
                x = self.act_quantizer(x)
        w = self.quantized_weight() if self.use_weight_quant else self.weight
        return self.fwd(x, w, self.bias, **self.fwd_kwargs)


class QuantAttentionBlock(nn.Module):
    """:class:`~gensemcom.models.semantic_unet.AttentionBlock` with quantisable matmuls.

    Same keys (``norm``, ``qkv``, ``proj_out``). The attention is written out as the reference's
    ``QKVAttentionLegacy`` (q and k each scaled by ``ch^(-1/4)``, softmax in float32) when
    activations are quantised: the scaled q and k, v, and the softmax probabilities (unsigned,
    zero point 0, ``sm_bits``) are fake-quantised before their matmuls. Without activation
    quantisation it runs the fused ``scaled_dot_product_attention`` (the same maths, no
    (tokens x tokens) matrix kept for the backward pass).
    """

    def __init__(self, block: AttentionBlock, act_params: Mapping[str, Any] | None = None, sm_bits: int = 8,
                 compat: str | None = None) -> None:
        super().__init__()
        self.num_heads, self.order = block.num_heads, block.order
        self.norm, self.qkv, self.proj_out = block.norm, block.qkv, block.proj_out
        self.use_act_quant = False
        if act_params:
            self.act_quantizer_q = ActQuantizer(**act_params, compat=compat)
            self.act_quantizer_k = ActQuantizer(**act_params, compat=compat)
            self.act_quantizer_v = ActQuantizer(**act_params, compat=compat)
            self.act_quantizer_w = ActQuantizer(sm_bits, always_zero=True, compat=compat)
        self.has_act_quant = bool(act_params)

    def act_quantizers(self) -> list[ActQuantizer]:
        if not self.has_act_quant:
            return []
        return [self.act_quantizer_q, self.act_quantizer_k, self.act_quantizer_v, self.act_quantizer_w]

    def forward(self, x: torch.Tensor, cond: Any = None, emb: Any = None) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        flat = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(flat))
        n, heads = hgt * wid, self.num_heads
        ch = c // heads
        quant = self.use_act_quant and self.has_act_quant
        if not quant:  # nothing to quantise between the matmuls: the fused kernel (same maths)
            if self.order == "legacy":
                z = qkv.reshape(b, heads, 3 * ch, n).transpose(-1, -2).contiguous()
                q, k, v = z.split(ch, dim=-1)
            else:
                z = qkv.reshape(b, 3, heads, ch, n).transpose(-1, -2).contiguous()
                q, k, v = z.unbind(1)
            a = F.scaled_dot_product_attention(q, k, v)
            return (flat + self.proj_out(a.transpose(-1, -2).reshape(b, c, n))).reshape(b, c, hgt, wid)
        if self.order == "legacy":
            q, k, v = qkv.reshape(b * heads, 3 * ch, n).split(ch, dim=1)
        else:
            q, k, v = (z.reshape(b * heads, ch, n) for z in qkv.chunk(3, dim=1))
        scale = 1 / ch ** 0.25
        q, k = q * scale, k * scale
        if quant:
            q, k, v = self.act_quantizer_q(q), self.act_quantizer_k(k), self.act_quantizer_v(v)
        w = torch.einsum("bct,bcs->bts", q, k)
        w = torch.softmax(w.float(), dim=-1).type(w.dtype)
        if quant:
            w = self.act_quantizer_w(w)
        a = torch.einsum("bts,bcs->bct", w, v).reshape(b, -1, n)
        return (flat + self.proj_out(a)).reshape(b, c, hgt, wid)


def _replace(module: nn.Module, fn) -> None:
    for name, child in list(module.named_children()):
        if name == "spade_norm":  # GESCO's encoder norm that is never called stays as it is
            continue
        new = fn(child)
        if new is not None:
            setattr(module, name, new)
        else:
            _replace(child, fn)


def decoder_splits(model: SemanticUNet) -> dict[str, int]:
    """``{path of a decoder skip conv: channels of h in cat([h, skip])}`` (from the config)."""
    c = model.config
    mc = c.model_channels
    ch = int(c.channel_mult[0] * mc)
    skips = [ch]
    for level, mult in enumerate(c.channel_mult):
        for _ in range(c.num_res_blocks):
            ch = int(mult * mc)
            skips.append(ch)
        if level != len(c.channel_mult) - 1:
            skips.append(ch)
    out: dict[str, int] = {}
    for i, block in enumerate(model.output_blocks):
        skip = skips.pop()
        first = block[0]
        conv = getattr(first, "skip_connection", None)
        if isinstance(conv, (nn.Conv2d, QuantLayer)):
            cin = conv.weight.shape[1]
            out[f"output_blocks.{i}.0.skip_connection"] = cin - skip
    return out


def quantize_model(model: SemanticUNet, weight_bits: int = 8, act_bits: int | None = None, *,
                   symmetric: bool = False, channel_wise: bool = True, scale_method: str = "max",
                   act_scale_method: str = "max", act_symmetric: bool = False, sm_bits: int = 8, split: bool = False,
                   compat: str | None = None, init: bool = True) -> SemanticUNet:
    """Wrap ``model`` (in place) for fake quantisation; returns it with weight quantisation on.

    Args:
        weight_bits: bits per weight (8 or 4 in Q-GESCO's experiments).
        act_bits: bits per activation (layer inputs, attention q/k/v), None for W*A32.
        symmetric, channel_wise, scale_method: the weight quantiser (Q-GESCO: asymmetric, per
            output channel, ``"max"``).
        act_scale_method, act_symmetric: the activation quantisers' initial scale (per tensor) and grid.
        sm_bits: bits of the softmax-probability quantiser (with ``act_bits``).
        split: split quantisation of the decoder's skip convolutions (see the module docstring).
        compat: ``None`` or ``"qgesco"`` (see :mod:`gensemcom.quant.quantizers`).
        init: compute the weight scales now (min-max/MSE from the weights). ``False`` leaves
            zero scales of the right shapes (a model on the meta device, or one about to load a
            checkpoint).
    """
    if not isinstance(model, SemanticUNet):
        raise ValueError(f"quantize_model takes a SemanticUNet, got {type(model).__name__}")
    if any(isinstance(m, QuantLayer) for m in model.modules()):
        raise ValueError("the model is already quantised")
    check_compat(compat)
    wp = dict(n_bits=weight_bits, symmetric=symmetric, channel_wise=channel_wise, scale_method=scale_method)
    ap = dict(n_bits=act_bits, scale_method=act_scale_method, symmetric=act_symmetric) if act_bits else None
    WeightQuantizer(**wp)  # validate before touching the model
    if ap:
        ActQuantizer(**ap)
    splits = decoder_splits(model) if split else {}
    _replace(model, lambda m: QuantAttentionBlock(m, ap, sm_bits, compat) if isinstance(m, AttentionBlock) else None)
    _replace(model, lambda m: QuantLayer(m, wp, ap, compat) if isinstance(m, _QUANTISABLE) else None)
    layers = dict(quant_layers(model))
    for path, s in splits.items():
        layers[path].set_split(s)
    for layer in layers.values():
        if init and layer.weight.device.type != "meta":
            layer.init_quantizers()
        else:
            for q, part in zip(layer.weight_quantizers(), layer.weight_parts()):
                shape = (part.shape[0],) + (1,) * (part.ndim - 1) if channel_wise else ()
                q.set_scale(torch.zeros(shape, device=part.device), torch.zeros(shape, device=part.device))
    model.quant_config = dict(weight_bits=weight_bits, act_bits=act_bits, symmetric=symmetric,
                              channel_wise=channel_wise, scale_method=scale_method,
                              act_scale_method=act_scale_method, act_symmetric=act_symmetric, sm_bits=sm_bits,
                              split=split, compat=compat)
    set_quant_state(model, weight=True, act=False)
    return model


def quant_layers(model: nn.Module) -> Iterator[tuple[str, QuantLayer]]:
    for name, m in model.named_modules():
        if isinstance(m, QuantLayer):
            yield name, m


def set_quant_state(model: nn.Module, weight: bool = True, act: bool = False) -> None:
    """Switch weight and activation fake quantisation on or off everywhere in ``model``."""
    for m in model.modules():
        if isinstance(m, QuantLayer):
            m.use_weight_quant, m.use_act_quant = weight, act
        elif isinstance(m, QuantAttentionBlock):
            m.use_act_quant = act


def reconstruction_units(model: nn.Module, prefix: str = "") -> list[tuple[str, str, nn.Module]]:
    """BRECQ's units, depth first: ``("block", path, m)`` for a ResBlock, SDMResBlock or attention
    block, ``("layer", path, m)`` for a QuantLayer elsewhere (Q-Diffusion's ``recon_model`` order)."""
    units = []
    for name, child in model.named_children():
        path = f"{prefix}{name}"
        if isinstance(child, (ResBlock, SDMResBlock, QuantAttentionBlock)):
            units.append(("block", path, child))
        elif isinstance(child, QuantLayer):
            units.append(("layer", path, child))
        elif isinstance(child, (GroupNorm32, nn.GroupNorm)):
            continue
        else:
            units.extend(reconstruction_units(child, path + "."))
    return units


# ---------------------------------------------------------------------------------------- Q-GESCO files
def enable_adaround(model: nn.Module) -> None:
    """AdaRound on every weight quantiser (alpha initialised from the weights), hard decisions."""
    for _, layer in quant_layers(model):
        for q, part in zip(layer.weight_quantizers(), layer.weight_parts()):
            if q.alpha is None:
                q.enable_adaround(part.detach())
            q.rounding = "hard"


def qgesco_state_dict(model: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """The state dict in Q-GESCO's ``quantized_model.pth`` layout: ``model.`` + every key, without
    the encoder's unused ``spade_norm`` (AdaRound must be enabled for the ``alpha`` entries)."""
    return OrderedDict((f"model.{k}", v) for k, v in model.state_dict().items() if ".spade_norm." not in k)


def load_qgesco_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load a Q-GESCO ``quantized_model.pth`` state dict into a model from :func:`quantize_model`.

    Weights and every ``<layer>.weight_quantizer.{alpha,zero_point,delta}`` (and activation
    quantiser entries when present) are taken from the file; AdaRound's hard decisions are used,
    as ``quant_sampling.py --resume`` does. Raises ValueError naming missing or unknown keys.
    """
    sd = {(k[len("model."):] if k.startswith("model.") else k): v for k, v in state_dict.items()}
    layers = dict(quant_layers(model))
    if not layers:
        raise ValueError("load_qgesco_state_dict needs a model from quantize_model()")
    missing = []
    for path, layer in layers.items():
        names = ["weight_quantizer"] + (["weight_quantizer_0"] if layer.split else [])
        for name, q, part in zip(names, layer.weight_quantizers(), layer.weight_parts()):
            keys = [f"{path}.{name}.{k}" for k in ("alpha", "zero_point", "delta")]
            if not all(k in sd for k in keys):
                missing.extend(k for k in keys if k not in sd)
                continue
            alpha, zero, delta = (sd.pop(k) for k in keys)
            if alpha.shape != part.shape:
                raise ValueError(f"{keys[0]} has shape {tuple(alpha.shape)}, the weight {tuple(part.shape)}")
            q.set_scale(delta.to(part.device, part.dtype), zero.to(part.device, part.dtype))
            q.enable_adaround(alpha=alpha.to(part.device, part.dtype))
            q.rounding = "hard"
    if missing:
        raise ValueError(f"the checkpoint lacks {len(missing)} quantiser entries, e.g. {missing[:3]}")
    load_act_quantizers(model, sd)
    own = {k for k in model.state_dict() if ".weight_quantizer" not in k and ".act_quantizer" not in k}
    unknown = sorted(k for k in sd if k not in own)
    if unknown:
        raise ValueError(f"the checkpoint has {len(unknown)} keys this model does not, e.g. {unknown[:3]}")
    lacking = sorted(k for k in own if k not in sd and ".spade_norm." not in k)
    if lacking:
        raise ValueError(f"the checkpoint lacks {len(lacking)} weights of this model, e.g. {lacking[:3]}")
    with torch.no_grad():
        params = dict(model.named_parameters())
        params.update(dict(model.named_buffers()))
        for k, v in sd.items():
            target = params[k]
            if target.shape != v.shape:
                raise ValueError(f"{k}: checkpoint shape {tuple(v.shape)}, model {tuple(target.shape)}")
            target.copy_(v)
    set_quant_state(model, weight=True, act=any(a.inited for m in model.modules() if isinstance(m, ActQuantizer)
                                                for a in [m]))


def load_act_quantizers(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Pop every ``<quantiser>.{delta,zero_point,x_min,x_max}`` entry into the model's activation
    quantisers (they hold no state until initialised, so load_state_dict cannot place them)."""
    for name, m in model.named_modules():
        if isinstance(m, ActQuantizer) and f"{name}.delta" in tensors:
            m.delta = torch.nn.Parameter(tensors.pop(f"{name}.delta").reshape(()).clone())
            m.zero_point = tensors.pop(f"{name}.zero_point").reshape(()).clone()
            for k in ("x_min", "x_max"):
                if f"{name}.{k}" in tensors:
                    setattr(m, k, tensors.pop(f"{name}.{k}").reshape(()).clone())


def load_qgesco_checkpoint(model: nn.Module, path: str) -> None:
    """:func:`load_qgesco_state_dict` from a ``quantized_model.pth`` file (``weights_only=True``)."""
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(sd, Mapping):
        raise ValueError(f"{path} does not hold a state dict")
    load_qgesco_state_dict(model, sd)
