"""A faster inference path for a :class:`~gensemcom.models.semantic_unet.SemanticUNet` (CPU first).

:func:`fast_unet` wraps a trained SemanticUNet (SDM, Wang et al. arXiv 2207.00050; GESCO,
Grassucci et al. arXiv 2306.04321) in :class:`FastSemanticUNet`: the same parameters (shared, not
copied), the same ``forward`` signature and the same outputs (within float32 rounding: 1e-5 on a
call), usable wherever the plain model is (``diffusion.sample(fast, y, ...)``, a system's
``model``). What it changes, all measured in ``benchmarks/bench_sampling.py``:

- **the all-zero map's SPADE modulation is cached per model.** Classifier-free guidance runs
  the decoder on the map and on an all-zero map; the latter's (1 + gamma, beta) per SPADE norm
  depends only on the weights and the feature-map size, so it is computed once per model and
  size (at batch 1, broadcast over the batch) instead of once per sampling run;
- **the guidance decoder runs batched or sequentially by size.** The encoder never reads the map
  and runs once for both branches; the middle and decoder blocks then run either on the stacked
  2B batch (``"batched"``, as the plain model) or branch after branch (``"sequential"``: no
  copies of the skip tensors, half-size working set). ``"auto"`` picks sequential from
  ``sequential_from`` pixels per image on (the measured crossover on this project's CPU);
- **attention's 1-D qkv/proj convolutions run as batched matrix products** laid out per head,
  so the fused ``scaled_dot_product_attention`` gets its inputs without a copy, instead of
  PyTorch's slow 1x1-convolution path at batch 1;
- **elementwise work is fused**: SPADE ``GN(x) * (1 + gamma) + beta`` and the FiLM time
  modulation as ``addcmul``; SiLU and residual additions in place;
- optionally **channels-last** memory format for the convolutions (``channels_last=True``).

The wrapper is for inference with frozen weights: the zero-map cache is not invalidated when the
weights change (call :meth:`FastSemanticUNet.clear_cache`). Training keeps using the plain model.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .semantic_unet import (AttentionBlock, ResBlock, SDMResBlock, SemanticCondition, SemanticUNet,
                            SPADEGroupNorm, _Conv, _Downsample, _Upsample, timestep_embedding)

__all__ = ["FastSemanticUNet", "FastCondition", "fast_unet", "GUIDANCE_DECODERS"]

#: how the two guidance branches run through the middle and decoder blocks
GUIDANCE_DECODERS = ("auto", "batched", "sequential")


class FastCondition(SemanticCondition):
    """A semantic map (B, L, H, W) with its SPADE modulations, as :class:`SemanticCondition`, that
    knows which rows are all zero (the unconditional guidance branch) and takes their modulation
    from the model's per-size cache.

    ``modulation(norm, size, rows)`` returns (1 + gamma, beta) for the rows ``rows`` (a slice;
    None: all), of batch size ``len(rows)``, or 1 (broadcast) when every row of it is all-zero.
    """

    def __init__(self, y: torch.Tensor, owner: "FastSemanticUNet") -> None:
        if owner.channels_last:  # the modulations come out in the convolutions' format
            y = y.contiguous(memory_format=torch.channels_last)
        super().__init__(y)
        self.owner = owner
        self.zero_rows = y.reshape(y.shape[0], -1).abs().amax(dim=1) == 0 if y.numel() else \
            torch.ones(y.shape[0], dtype=torch.bool, device=y.device)

    def modulation(self, norm: SPADEGroupNorm, size: tuple[int, int],
                   rows: slice | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        rows = slice(0, self.y.shape[0]) if rows is None else rows
        key = (id(norm), size[0], size[1], rows.start, rows.stop)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        zero = self.zero_rows[rows]
        if bool(zero.all()):
            hit = self.owner.zero_modulation(norm, size, self.y.dtype, self.y.device)
        elif not bool(zero.any()):
            hit = norm.modulation(self.y[rows], size)
        else:  # a mix: compute the non-zero rows, copy the cached zero-map rows in
            z = self.owner.zero_modulation(norm, size, self.y.dtype, self.y.device)
            idx = torch.nonzero(~zero).flatten()
            part = norm.modulation(self.y[rows][idx], size)
            hit = tuple(torch.empty((int(zero.numel()), *p.shape[1:]), dtype=p.dtype, device=p.device)
                        .copy_(zz.expand(int(zero.numel()), *p.shape[1:])).index_copy_(0, idx, p)
                        for p, zz in zip(part, z))
        self._cache[key] = hit
        return hit


class FastSemanticUNet(nn.Module):
    """A SemanticUNet's inference path with the speed-ups of the module docstring.

    Args:
        model: the network (its parameters are shared, not copied).
        guidance_decoder: ``"auto"``, ``"batched"`` or ``"sequential"`` (see the module docstring).
        sequential_from: with ``"auto"``, image sizes of at least this many pixels (H * W) decode
            the two guidance branches one after the other.
        channels_last: run the convolutions in channels-last memory format.

    ``forward(x, t, y, concat=None, vector=None, *, class_labels=None, branches=1)`` as
    :meth:`SemanticUNet.forward`; returns (branches * B, out_channels, H, W).
    """

    shares_encoder = True

    def __init__(self, model: SemanticUNet, guidance_decoder: str = "auto", sequential_from: int = 128 * 256,
                 channels_last: bool = False) -> None:
        super().__init__()
        if not isinstance(model, SemanticUNet):
            raise ValueError(f"fast_unet needs a SemanticUNet, got {type(model).__name__}")
        if guidance_decoder not in GUIDANCE_DECODERS:
            raise ValueError(f"guidance_decoder must be one of {GUIDANCE_DECODERS}, got {guidance_decoder!r}")
        if int(sequential_from) < 0:
            raise ValueError(f"sequential_from must be >= 0, got {sequential_from}")
        self.model = model
        self.config = model.config
        self.guidance_decoder = guidance_decoder
        self.sequential_from = int(sequential_from)
        self.channels_last = bool(channels_last)
        self._zero: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._attn: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        if channels_last:
            model.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------ caches
    def clear_cache(self) -> None:
        """Forget the cached zero-map modulations and attention weights (after changing weights)."""
        self._zero.clear()
        self._attn.clear()

    def zero_modulation(self, norm: SPADEGroupNorm, size: tuple[int, int], dtype: torch.dtype,
                        device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(1 + gamma, beta) of the all-zero map at ``size``, each (1, C, *size), cached per model."""
        key = (id(norm), size[0], size[1], dtype, device)
        hit = self._zero.get(key)
        if hit is None:
            with torch.inference_mode():
                y0 = torch.zeros((1, self.config.label_channels, *size), dtype=dtype, device=device)
                if self.channels_last:
                    y0 = y0.contiguous(memory_format=torch.channels_last)
                hit = norm.modulation(y0, size)
            self._zero[key] = hit
        return hit

    def encode_condition(self, y: torch.Tensor) -> FastCondition:
        """Wrap a semantic map (B, L, H, W) so that its SPADE modulations are computed once."""
        if isinstance(y, SemanticCondition):
            y = y.y
        self.model.encode_condition(y)  # the plain model's checks
        return FastCondition(y, self)

    def _attention_weights(self, block: AttentionBlock) -> tuple[torch.Tensor, ...]:
        """qkv weight (3C, C) and bias (3C, 1), proj weight (C, C) and bias (C, 1): the 1-D
        convolutions' kernels as matrices."""
        hit = self._attn.get(id(block))
        if hit is None:
            hit = (block.qkv.weight.detach()[:, :, 0].contiguous(), block.qkv.bias.detach()[:, None],
                   block.proj_out.weight.detach()[:, :, 0].contiguous(), block.proj_out.bias.detach()[:, None])
            self._attn[id(block)] = hit
        return hit

    # ------------------------------------------------------------------ blocks
    @staticmethod
    def _gn(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)

    def _spade(self, norm: SPADEGroupNorm, x: torch.Tensor, cond: FastCondition, rows: slice | None) -> torch.Tensor:
        scale, shift = cond.modulation(norm, (x.shape[-2], x.shape[-1]), rows)
        return torch.addcmul(shift, F.group_norm(x, 32, None, None, norm.norm.eps), scale)

    def _film(self, block: nn.Module, h: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb_out = block.emb_layers(emb).to(h.dtype)[..., None, None]
        scale, shift = emb_out.chunk(2, dim=1)
        return scale + 1, shift

    def _resblock(self, blk: ResBlock, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if not blk.use_scale_shift_norm:
            return blk(x, None, emb)
        h = F.silu(self._gn(blk.in_layers[0], x), inplace=True)
        if blk.updown:
            h, x = blk.h_upd(h), blk.x_upd(x)
        h = blk.in_layers[2](h)
        scale, shift = self._film(blk, h, emb)
        h = F.silu(torch.addcmul(shift, self._gn(blk.out_layers[0], h), scale), inplace=True)
        h = blk.out_layers[3](h)
        return h.add_(blk.skip_connection(x))

    def _sdmblock(self, blk: SDMResBlock, x: torch.Tensor, cond: FastCondition, rows: slice | None,
                  emb: torch.Tensor) -> torch.Tensor:
        if not blk.use_scale_shift_norm:
            return blk(x, _RowView(cond, rows), emb)
        h = F.silu(self._spade(blk.in_norm, x, cond, rows), inplace=True)
        if blk.updown:
            h, x = blk.h_upd(h), blk.x_upd(x)
        h = blk.in_layers[1](h)
        scale, shift = self._film(blk, h, emb)
        h = F.silu(torch.addcmul(shift, self._spade(blk.out_norm, h, cond, rows), scale), inplace=True)
        h = blk.out_layers[2](h)
        return h.add_(blk.skip_connection(x))

    def _attention(self, blk: AttentionBlock, x: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        n = hgt * wid
        heads = blk.num_heads
        ch = c // heads
        w_qkv, b_qkv, w_proj, b_proj = self._attention_weights(blk)
        flat = x.reshape(b, c, n)
        hn = self._gn(blk.norm, flat)
        qkv = torch.empty((b, 3 * c, n), dtype=x.dtype, device=x.device)
        for i in range(b):  # one GEMM per image: (3C, C) @ (C, n)
            torch.addmm(b_qkv, w_qkv, hn[i], out=qkv[i])
        # (B, heads, tokens, ch), contiguous in ch (as the plain model, for the fused kernel)
        if blk.order == "legacy":
            qkv = qkv.reshape(b, heads, 3 * ch, n).transpose(-1, -2).contiguous()
            q, k, v = qkv.split(ch, dim=-1)
        else:
            qkv = qkv.reshape(b, 3, heads, ch, n).transpose(-1, -2).contiguous()
            q, k, v = qkv.unbind(1)
        a = F.scaled_dot_product_attention(q, k, v).transpose(-1, -2).reshape(b, c, n)
        out = torch.empty_like(flat)
        for i in range(b):
            torch.addmm(b_proj, w_proj, a[i], out=out[i])
        return out.add_(flat).reshape(b, c, hgt, wid)

    def _layer(self, layer: nn.Module, h: torch.Tensor, cond: FastCondition | None, rows: slice | None,
               emb: torch.Tensor) -> torch.Tensor:
        if isinstance(layer, SDMResBlock):
            return self._sdmblock(layer, h, cond, rows, emb)
        if isinstance(layer, ResBlock):
            return self._resblock(layer, h, emb)
        if isinstance(layer, AttentionBlock):
            return self._attention(layer, h)
        if isinstance(layer, (_Conv, _Upsample, _Downsample)):
            return layer(h)
        return layer(h, None if cond is None else _RowView(cond, rows), emb)

    def _run(self, block: nn.Module, h: torch.Tensor, cond: FastCondition | None, rows: slice | None,
             emb: torch.Tensor) -> torch.Tensor:
        for layer in block:
            h = self._layer(layer, h, cond, rows, emb)
        return h

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, t: torch.Tensor, y: Any = None, concat: torch.Tensor | None = None,
                vector: torch.Tensor | None = None, *, class_labels: torch.Tensor | None = None,
                branches: int = 1) -> torch.Tensor:
        m, c = self.model, self.config
        if x.ndim != 4 or x.shape[1] != c.in_channels:
            raise ValueError(f"x must be (B, {c.in_channels}, H, W), got {tuple(x.shape)}")
        mult = c.size_multiple
        if x.shape[2] % mult or x.shape[3] % mult:
            raise ValueError(f"image height and width must be multiples of {mult} for "
                             f"{len(c.channel_mult)} levels, got {tuple(x.shape[2:])}")
        if branches < 1:
            raise ValueError(f"branches must be >= 1, got {branches}")
        m._check_y(y, x, branches)
        if c.label_channels and not isinstance(y, FastCondition):
            y = FastCondition(y.y if isinstance(y, SemanticCondition) else y, self)
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        emb = m.time_embed(timestep_embedding(t, c.model_channels))
        if c.num_classes:
            emb = emb + m.label_emb(m._check_class_labels(class_labels, x.shape[0]))
        elif class_labels is not None:
            raise ValueError("class_labels given but the model was built with num_classes=0")
        if c.vector_dim:
            if vector is None or vector.shape != (x.shape[0], c.vector_dim):
                raise ValueError(f"this model takes a vector (B, {c.vector_dim}) added to the time "
                                 f"embedding; got {None if vector is None else tuple(vector.shape)}")
            emb = emb + getattr(m, c.vector_embed_name)(vector.to(emb.dtype))
        elif vector is not None:
            raise ValueError("vector given but the model was built with vector_dim=0")
        if c.concat_channels:
            if concat is None or concat.shape != (x.shape[0], c.concat_channels, *x.shape[2:]):
                raise ValueError(f"this model takes concat (B, {c.concat_channels}, H, W); got "
                                 f"{None if concat is None else tuple(concat.shape)}")
            x = torch.cat([x, concat.to(x.dtype)], dim=1)
        elif concat is not None:
            raise ValueError("concat given but the model was built with concat_channels=0")
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)

        hs = []
        h = x
        for block in m.input_blocks:
            h = self._run(block, h, None, None, emb)
            hs.append(h)
        if branches == 1:
            return self._decode(hs, y, None, emb)
        sequential = self.guidance_decoder == "sequential" or (
            self.guidance_decoder == "auto" and x.shape[2] * x.shape[3] >= self.sequential_from)
        B = x.shape[0]
        if sequential:
            return torch.cat([self._decode(list(hs), y, slice(k * B, (k + 1) * B), emb) for k in range(branches)])
        hs = [torch.cat([z] * branches) for z in hs]
        return self._decode(hs, y, None, torch.cat([emb] * branches))

    def _decode(self, hs: list[torch.Tensor], cond: FastCondition | None, rows: slice | None,
                emb: torch.Tensor) -> torch.Tensor:
        m = self.model
        h = self._run(m.middle_block, hs[-1], cond, rows, emb)
        for block in m.output_blocks:
            h = self._run(block, torch.cat([h, hs.pop()], dim=1), cond, rows, emb)
        return m.out(h)


class _RowView(SemanticCondition):
    """A FastCondition restricted to rows, for blocks the fast path hands back to the plain model
    (they call ``cond.modulation(norm, size)``)."""

    def __init__(self, cond: FastCondition, rows: slice | None) -> None:
        super().__init__(cond.y if rows is None else cond.y[rows])
        self.cond, self.rows = cond, rows

    def modulation(self, norm: SPADEGroupNorm, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cond.modulation(norm, size, self.rows)


def fast_unet(model: nn.Module, guidance_decoder: str = "auto", sequential_from: int = 128 * 256,
              channels_last: bool = False) -> nn.Module:
    """``model`` wrapped in :class:`FastSemanticUNet` (a FastSemanticUNet is returned as is, with
    its settings unchanged)."""
    if isinstance(model, FastSemanticUNet):
        return model
    return FastSemanticUNet(model, guidance_decoder, sequential_from, channels_last)
