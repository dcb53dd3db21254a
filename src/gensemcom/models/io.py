"""Checkpoint I/O: released GESCO/SDM ``.pt`` files, and our safetensors + config format.

- :func:`read_state_dict` reads ``.pt``/``.pth`` (with ``weights_only=True``) or ``.safetensors``,
  unwraps ``{"state_dict": ...}``/``{"model": ...}`` containers and strips a ``model.`` or
  ``module.`` key prefix (Q-GESCO / DistributedDataParallel).
- :func:`load_checkpoint` loads into a model strictly, and on any mismatch raises
  :class:`CheckpointMismatchError` listing the missing, unexpected and wrongly shaped keys with the
  flag that probably differs.
- :func:`save_pretrained` / :func:`load_pretrained` write and read a folder with
  ``model.safetensors`` and ``config.json`` (the network and diffusion constructor arguments).
- :func:`save_module` / :func:`load_module` do the same for any other network whose constructor
  takes one config (DeepJSCC, the segmenter): ``config.json`` holds ``"kind"`` and the config's
  ``to_dict()`` under ``"model"``, and the loader rebuilds the network with a factory.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..runs import atomic_write  # noqa: F401  (re-exported: older imports)

from .semantic_unet import SemanticUNet, SemanticUNetConfig

__all__ = ["CheckpointMismatchError", "read_state_dict", "load_checkpoint", "diagnose_mismatch",
           "save_pretrained", "load_pretrained", "save_module", "load_module", "read_config",
           "atomic_write", "read_json", "file_sha256"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class CheckpointMismatchError(ValueError):
    """The checkpoint's keys or shapes do not match the model; the message says which and why."""

    def __init__(self, message: str, missing: list[str], unexpected: list[str],
                 mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]) -> None:
        super().__init__(message)
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        try:
            sd: Any = load_file(str(path))
        except Exception as e:  # SafetensorError / OSError: say which file and what it probably means
            raise ValueError(f"{path} is not a readable safetensors file (truncated or damaged? "
                             f"{type(e).__name__}: {e})") from e
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # pickle errors name torch internals; say what it means
            raise ValueError(f"{path} is not a plain tensor checkpoint loadable with "
                             f"weights_only=True ({type(e).__name__}: {e})") from e
    for wrapper in ("state_dict", "model", "ema"):
        if isinstance(sd, Mapping) and wrapper in sd and isinstance(sd[wrapper], Mapping):
            sd = sd[wrapper]
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return strip_prefix(dict(sd))


def strip_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove a ``model.`` or ``module.`` prefix carried by every key."""
    for prefix in ("module.", "model."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _hints(model: nn.Module, missing: list[str], unexpected: list[str],
           mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]) -> list[str]:
    cfg = getattr(model, "config", None)
    hints = []
    names = missing + unexpected
    if any(".spade_norm." in k for k in unexpected):
        hints.append("the checkpoint has GESCO's unused encoder spade_norm tensors: build the "
                      "model with layout='gesco' (reference='gesco')")
    if any(".spade_norm." in k for k in missing):
        hints.append("the checkpoint has no encoder spade_norm tensors (an SDM or Q-GESCO "
                      "file): build the model with layout='sdm' (reference='sdm')")
    for k, want, got in mismatched:
        if "mlp_shared.0.weight" in k and ".spade_norm." not in k:
            hints.append(f"semantic input: checkpoint has {got[1]} label channels, model has "
                         f"{want[1]}; num_classes / no_instance / one_hot_label probably differ "
                         "(one_hot_label=False gives 2 channels)")
            break
    for k, want, got in mismatched:
        # blame only the dimension that actually differs: out.2.weight is (out_channels,
        # model_channels, 3, 3), so another num_channels changes it without learn_sigma differing
        if k == "out.2.weight" and got[0] != want[0]:
            hints.append(f"output: checkpoint has {got[0]} channels, model {want[0]}: learn_sigma differs")
        if k == "input_blocks.0.0.weight":
            if got[0] != want[0]:
                hints.append(f"base width: checkpoint {got[0]}, model {want[0]}: num_channels "
                             "(or channel_mult[0]) differs")
            if got[1] != want[1]:
                hints.append(f"input channels: checkpoint {got[1]}, model {want[1]}: "
                             "concat_channels / in_channels differ")
        if k.endswith("emb_layers.1.weight") and got[1] == want[1] and 2 * got[0] in (want[0], 4 * want[0]):
            hints.append("time conditioning width: use_scale_shift_norm differs")
    if any(".qkv." in k or ".proj_out." in k for k in names):
        hints.append("attention layers differ: attention_resolutions (or image_size, which "
                     "turns them into downsampling factors) differs")
    if any(re.search(r"\.op\.weight$", k) for k in names) or \
            any(re.search(r"^(input|output)_blocks\.\d+\.\d+\.(in_layers|in_norm)", k) for k in names):
        hints.append("block layout differs: num_res_blocks, channel_mult or resblock_updown differ")
    if any(k.startswith("vector_embed.") for k in names):
        hints.append("vector_dim (the Diff-JSCC time-embedding hook) differs")
    if cfg is not None and not hints and mismatched:
        if any(k == "input_blocks.0.0.weight" for k, _, _ in mismatched):
            hints.append("layer widths differ: num_channels or channel_mult differ")
        else:  # the first level agrees, later ones do not
            hints.append("layer widths differ beyond the first level: channel_mult differs")
    out: list[str] = []
    for h in hints:
        if h not in out:
            out.append(h)
    return out


def diagnose_mismatch(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> CheckpointMismatchError | None:
    """Compare a state dict with a model; ``None`` when keys and shapes agree."""
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in own)
    mismatched = [(k, tuple(own[k].shape), tuple(state_dict[k].shape))
                  for k in own if k in state_dict and own[k].shape != state_dict[k].shape]
    if not (missing or unexpected or mismatched):
        return None

    def listing(title: str, items: list[str]) -> str:
        shown = items[:12]
        more = f" ... and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
        return f"\n  {title} ({len(items)}): " + ", ".join(shown) + more

    msg = "checkpoint does not match the model:"
    if missing:
        msg += listing("missing in checkpoint", missing)
    if unexpected:
        msg += listing("unexpected in checkpoint", unexpected)
    if mismatched:
        msg += listing("wrong shape (model vs checkpoint)",
                       [f"{k} {list(a)} vs {list(b)}" for k, a, b in mismatched])
    hints = _hints(model, missing, unexpected, mismatched)
    if hints:
        msg += "\n  probably: " + "; ".join(hints)
    return CheckpointMismatchError(msg, missing, unexpected, mismatched)


def load_checkpoint(model: nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor]) -> nn.Module:
    """Load a released GESCO/SDM checkpoint (or any state dict) into ``model``, strictly."""
    sd = read_state_dict(source) if isinstance(source, (str, os.PathLike)) else strip_prefix(dict(source))
    err = diagnose_mismatch(model, sd)
    if err is not None:
        raise err
    model.load_state_dict(sd, strict=True)
    return model


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (what identifies a checkpoint or data file in a results folder)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _write_folder(directory: Path, module: nn.Module, config: dict[str, Any],
                  dtype: torch.dtype | None) -> None:
    """Write ``module``'s weights (floating point ones in ``dtype`` if given) and ``config``."""
    tensors = {k: v.detach().to("cpu", dtype=dtype if dtype is not None and v.is_floating_point() else v.dtype)
               .contiguous() for k, v in module.state_dict().items()}
    if dtype is not None:
        config["stored_dtype"] = str(dtype).replace("torch.", "")
    atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(tensors, p, metadata={"format": "pt"}))
    atomic_write(directory / CONFIG_NAME,
                 lambda p: Path(p).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n"))


def save_pretrained(directory: str | os.PathLike, model: SemanticUNet, diffusion: Any = None,
                    extra: dict[str, Any] | None = None, dtype: torch.dtype | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (model + diffusion config) to a folder.

    ``dtype`` (e.g. ``torch.float16``) stores the floating-point weights in that type (half the
    size); :func:`load_pretrained` loads them into a float32 model."""
    directory = Path(directory)
    config: dict[str, Any] = {"format": "gensemcom", "version": 1, "model": model.config.to_dict()}
    dcfg = getattr(diffusion, "config", None)
    if dcfg is not None:
        config["diffusion"] = dcfg.to_dict()
    if extra:
        config.update(extra)
    _write_folder(directory, model, config, dtype)
    return directory


def save_module(directory: str | os.PathLike, module: nn.Module, config_dict: dict[str, Any], kind: str,
                extra: dict[str, Any] | None = None, dtype: torch.dtype | None = None) -> Path:
    """Save any network as ``model.safetensors`` + ``config.json`` in ``directory``.

    Args:
        module: the network; its ``state_dict()`` is stored.
        config_dict: JSON-able constructor settings (e.g. ``module.config.to_dict()``), stored
            under ``"model"``.
        kind: what the folder holds (e.g. ``"deepjscc"``); :func:`load_module` checks it.
        extra: more JSON-able top-level entries (training steps, metrics, ...).
        dtype: store floating-point weights in this type (``torch.float16`` halves the size);
            they are loaded back into the float32 network.
    """
    directory = Path(directory)
    config: dict[str, Any] = {"format": "gensemcom", "version": 1, "kind": kind, "model": dict(config_dict)}
    if extra:
        config.update(extra)
    _write_folder(directory, module, config, dtype)
    return directory


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; ValueError naming the file (and the line) when it is not valid JSON,
    FileNotFoundError naming it when it is missing."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a JSON text file") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of a saved folder; FileNotFoundError naming what is missing."""
    directory = Path(directory)
    cfg_path, w_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    if not directory.is_dir():
        raise FileNotFoundError(f"model folder not found: {directory}")
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise FileNotFoundError(f"{directory} is not a saved gensemcom model: missing {p.name}")
    config = read_json(cfg_path)
    if not isinstance(config, dict) or "model" not in config:
        raise ValueError(f"{cfg_path} has no 'model' section")
    return config


def load_module(directory: str | os.PathLike, factory: Callable[[dict[str, Any]], nn.Module],
                kind: str | None = None, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Read a folder written by :func:`save_module` -> ``(module in eval mode, config.json)``.

    Args:
        factory: builds the (float32) network from the stored ``config["model"]`` dict, e.g.
            ``lambda d: DeepJSCC(DeepJSCCConfig.from_dict(d))``.
        kind: when given, the folder's ``"kind"`` must equal it (ValueError otherwise).
    """
    config = read_config(directory)
    stored = config.get("kind")
    if kind is not None and stored != kind:
        raise ValueError(f"{directory} holds a {stored or 'semantic diffusion'!r} model, not a {kind!r} one")
    module = factory(config["model"])
    load_checkpoint(module, Path(directory) / WEIGHTS_NAME)
    module.to(device).eval()
    return module, config


def load_pretrained(directory: str | os.PathLike, device: str | torch.device = "cpu"):
    """Read a folder written by :func:`save_pretrained` -> ``(model, diffusion or None, config)``."""
    from ..diffusion.gaussian import DiffusionConfig, GaussianDiffusion

    directory = Path(directory)
    cfg_path, w_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise FileNotFoundError(f"{directory} is not a saved gensemcom model: missing {p.name}")
    config = read_json(cfg_path)
    if not isinstance(config, dict) or "model" not in config:
        raise ValueError(f"{cfg_path} has no 'model' section")
    if config.get("kind", "semantic_unet") != "semantic_unet":
        raise ValueError(f"{directory} holds a {config['kind']!r} model, not a semantic diffusion model; "
                         "load it with that model's own loader")
    model = SemanticUNet(SemanticUNetConfig.from_dict(config["model"]))
    load_checkpoint(model, w_path)
    model.to(device).eval()
    try:
        diffusion = (GaussianDiffusion.from_config(DiffusionConfig(**config["diffusion"]))
                     if "diffusion" in config else None)
    except TypeError as e:  # unknown or missing fields
        raise ValueError(f"{cfg_path}: its 'diffusion' section does not fit this version ({e})") from None
    return model, diffusion, config
