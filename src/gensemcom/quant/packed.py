"""Packed integer checkpoints of a quantised U-Net (what makes Q-GESCO's memory saving real).

Q-GESCO saves ``quantized_model.pth`` with the float32 weights *and* a float32 AdaRound ``alpha``
per weight, twice the size of the fp32 checkpoint. Here every quantised weight is stored as its
integers (``uint8``; at 4 bits two per byte, low nibble first), with a float32 step and an integer
zero point per output channel; everything else (biases, norms, activation steps) in float32::

    <folder>/model.safetensors   qweight (uint8), delta (float32), zero_point (uint8 or int16),
                                 float (float32): each the concatenation over all layers
    <folder>/config.json         {"kind": "quantized_semantic_unet", "model": {...}, "quant": {...},
                                  "layers": {layer: {"parts": [{shape, bits, qmin, offset, bytes,
                                  channel_offset, channels}], "split"}}, "floats": {key: {offset, shape}}}

Four concatenated tensors rather than one per layer keep the safetensors header (about 100 bytes
per tensor) from mattering on small models.
Integers are stored as ``q - qmin`` (unsigned) so symmetric grids use the same format. Loading
rebuilds the fake-quantised network with each weight ``(q - z) * delta`` in float32, which equals
the saved model's quantised weight exactly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..models.semantic_unet import SemanticUNet, SemanticUNetConfig
from .model import QuantLayer, load_act_quantizers, quant_layers, quantize_model, set_quant_state
from .quantizers import ActQuantizer

__all__ = ["KIND", "pack_nibbles", "unpack_nibbles", "save_packed", "load_packed", "packed_state", "load_quantized"]

KIND = "quantized_semantic_unet"
WEIGHTS, CONFIG = "model.safetensors", "config.json"


def pack_nibbles(u: torch.Tensor) -> torch.Tensor:
    """Flat uint8 values in [0, 15] -> bytes (two per byte, element 2i in the low nibble)."""
    u = u.reshape(-1).to(torch.uint8)
    if u.numel() and int(u.max()) > 15:
        raise ValueError("pack_nibbles takes values in [0, 15]")
    if u.numel() % 2:
        u = torch.cat([u, u.new_zeros(1)])
    return u[0::2] | (u[1::2] << 4)


def unpack_nibbles(b: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_nibbles`: the first ``n`` values."""
    out = torch.stack([b & 15, b >> 4], dim=1).reshape(-1)
    return out[:n]


def packed_state(model: SemanticUNet) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """-> (tensors, layer table, float table) of the packed format for a quantised model.

    Four tensors: ``qweight`` (uint8, every part's integers ``q - qmin``, 4-bit parts two per
    byte, each part starting on a byte), ``delta`` (float32, per channel), ``zero_point``
    (uint8 when every zero point is in [0, 255], else int16) and ``float`` (float32, every other
    floating-point tensor of the state dict); the tables give each entry's offset and shape.
    """
    layers = dict(quant_layers(model))
    if not layers:
        raise ValueError("save_packed needs a quantised model (gensemcom.quant.quantize_model)")
    qweights, deltas, zeros = [], [], []
    table: dict[str, Any] = {}
    wpos = cpos = 0
    for path, layer in layers.items():
        parts = []
        for q, w_int in zip(layer.weight_quantizers(), layer.integer_weight()):
            if q.n_bits > 8:
                raise ValueError(f"{path}: packed export supports up to 8 bits, got {q.n_bits}")
            u = (w_int - q.qmin).round().to(torch.uint8).reshape(-1)
            packed = pack_nibbles(u) if q.n_bits <= 4 else u
            zp = q.zero_point.detach().reshape(-1)
            if zp.numel() and (float(zp.abs().max()) > 32767 or not torch.equal(zp, zp.round())):
                raise ValueError(f"{path}: zero point not storable as an integer")
            d = q.delta.detach().float().reshape(-1)
            parts.append({"shape": list(w_int.shape), "bits": q.n_bits, "qmin": q.qmin,
                          "per_channel": q.channel_wise, "offset": wpos, "bytes": packed.numel(),
                          "channel_offset": cpos, "channels": d.numel()})
            qweights.append(packed.cpu())
            deltas.append(d.cpu())
            zeros.append(zp.round().cpu())
            wpos += packed.numel()
            cpos += d.numel()
        table[path] = {"parts": parts, "split": layer.split}
    skip = {f"{p}.weight" for p in layers}
    floats, ftable, fpos = [], {}, 0
    for k, v in model.state_dict().items():
        if ".spade_norm." in k or k in skip or "_quantizer" in k:
            continue
        if not v.is_floating_point():
            raise ValueError(f"{k}: unexpected non-float tensor in the model")
        floats.append(v.detach().float().reshape(-1).cpu())
        ftable[k] = {"offset": fpos, "shape": list(v.shape)}
        fpos += v.numel()
    z = torch.cat(zeros)
    zdtype = torch.uint8 if z.numel() == 0 or (float(z.min()) >= 0 and float(z.max()) <= 255) else torch.int16
    tensors = {"qweight": torch.cat(qweights), "delta": torch.cat(deltas), "zero_point": z.to(zdtype),
               "float": torch.cat(floats) if floats else torch.zeros(0)}
    # activation quantisers (initialised ones) travel in the float table too
    for name, m in model.named_modules():
        if isinstance(m, ActQuantizer) and m.inited:
            for k in ("delta", "zero_point"):
                ftable[f"{name}.{k}"] = {"offset": fpos, "shape": []}
                tensors["float"] = torch.cat([tensors["float"], getattr(m, k).detach().float().reshape(1).cpu()])
                fpos += 1
    return tensors, table, ftable


def save_packed(directory: str | os.PathLike, model: SemanticUNet, extra: dict[str, Any] | None = None) -> Path:
    """Write the packed checkpoint of a quantised model to ``directory``; returns it.

    ``extra``: more JSON entries (e.g. the fp folder's ``diffusion``, ``num_classes``).
    """
    quant = getattr(model, "quant_config", None)
    if quant is None:
        raise ValueError("save_packed needs a model from gensemcom.quant.quantize_model")
    tensors, table, ftable = packed_state(model)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    mcfg = model.config.to_dict()
    mcfg["layout"] = "sdm"  # GESCO's never-called encoder spade_norm is not stored
    config: dict[str, Any] = {"format": "gensemcom", "version": 1, "kind": KIND, "model": mcfg,
                              "quant": quant, "layers": table, "floats": ftable}
    for k, v in (extra or {}).items():
        if k not in config:
            config[k] = v
    tensors = {k: v.cpu() for k, v in tensors.items()}
    save_file(tensors, str(directory / WEIGHTS), metadata={"format": "pt"})
    (directory / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return directory


def load_packed(directory: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[SemanticUNet, dict]:
    """Read a folder of :func:`save_packed` -> (fake-quantised model in eval mode, config)."""
    directory = Path(directory)
    for name in (CONFIG, WEIGHTS):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory} is not a packed quantised model: missing {name}")
    try:
        config = json.loads((directory / CONFIG).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{directory / CONFIG} is not valid JSON ({e.msg})") from None
    if not isinstance(config, dict) or config.get("kind") != KIND:
        raise ValueError(f"{directory} does not hold a packed quantised model (kind {KIND!r})")
    tensors = load_file(str(directory / WEIGHTS))
    q = config["quant"]
    model = SemanticUNet(SemanticUNetConfig.from_dict(config["model"]))
    quantize_model(model, q["weight_bits"], q.get("act_bits"), symmetric=q["symmetric"],
                   channel_wise=q["channel_wise"], scale_method=q["scale_method"],
                   act_scale_method=q.get("act_scale_method", "max"), act_symmetric=q.get("act_symmetric", False),
                   sm_bits=q.get("sm_bits", 8),
                   split=q.get("split", False), compat=q.get("compat"), init=False)
    layers = dict(quant_layers(model))
    if set(layers) != set(config["layers"]):
        raise ValueError(f"{directory}: the layer table does not match the model built from its config")
    blob, deltas, zeros, floats = (tensors[k] for k in ("qweight", "delta", "zero_point", "float"))
    with torch.no_grad():
        for path, entry in config["layers"].items():
            layer: QuantLayer = layers[path]
            ws = []
            for part, quantizer in zip(entry["parts"], layer.weight_quantizers()):
                shape = part["shape"]
                n = int(torch.tensor(shape).prod()) if shape else 1
                raw = blob[part["offset"]: part["offset"] + part["bytes"]]
                u = unpack_nibbles(raw, n) if part["bits"] <= 4 else raw
                w_int = u.float().reshape(shape) + part["qmin"]
                view = (-1,) + (1,) * (len(shape) - 1) if part["per_channel"] else ()
                c0, c1 = part["channel_offset"], part["channel_offset"] + part["channels"]
                delta, zp = deltas[c0:c1].reshape(view), zeros[c0:c1].float().reshape(view)
                quantizer.set_scale(delta, zp)
                ws.append((w_int - zp) * delta)
            layer.weight.copy_(ws[0] if len(ws) == 1 else torch.cat(ws, dim=1))
        state = {}
        for k, e in config["floats"].items():
            n = int(torch.tensor(e["shape"]).prod()) if e["shape"] else 1
            state[k] = floats[e["offset"]: e["offset"] + n].reshape(e["shape"]).clone()
        load_act_quantizers(model, state)
        missing = model.load_state_dict(state, strict=False)
        lacking = [k for k in missing.missing_keys if "_quantizer" not in k and k not in
                   {f"{p}.weight" for p in layers} and ".spade_norm." not in k]
        if missing.unexpected_keys or lacking:
            raise ValueError(f"{directory}: tensors do not match the model (unexpected "
                             f"{missing.unexpected_keys[:3]}, missing {lacking[:3]})")
    # the weights already lie on their grids: run them as they are
    set_quant_state(model, weight=False, act=bool(q.get("act_bits")))
    model.packed_from = str(directory)
    return model.to(device).eval(), config


def load_quantized(source: str | os.PathLike, fp_model: SemanticUNet | None = None, *, weight_bits: int = 8,
                   act_bits: int | None = None, split: bool = False, compat: str | None = "qgesco",
                   device: str | torch.device = "cpu") -> SemanticUNet:
    """A quantised model for sampling from either format (what ``quant_sampling.py --resume
    --cali_ckpt`` needs): a packed folder (self-describing), or a Q-GESCO ``quantized_model.pth``
    loaded into a copy of ``fp_model`` wrapped with the given settings (Q-GESCO's README run:
    8-bit weights, no activation quantisation; its ``--split`` had no effect, so ``split=False``).
    """
    import copy

    from .model import load_qgesco_checkpoint

    path = Path(source)
    if path.is_dir():
        return load_packed(path, device=device)[0]
    if not path.is_file():
        raise FileNotFoundError(f"quantised model {path} not found")
    if fp_model is None:
        raise ValueError(f"{path} is a Q-GESCO checkpoint: pass the fp model it was made from (its flags)")
    q = quantize_model(copy.deepcopy(fp_model).float(), weight_bits, act_bits, split=split, compat=compat, init=False)
    load_qgesco_checkpoint(q, str(path))
    return q.to(device).eval()
