"""Q-GESCO: GESCO with a post-training-quantised semantic diffusion model.

Pignata, Grassucci, Cicchetti, Comminiello, "Lightweight Diffusion Models for Resource-Constrained
Semantic Communication", arXiv 2410.02491. The transmitter, channel and receiver are GESCO's
(:mod:`gensemcom.systems.gesco`); the receiver's network is fake-quantised
(:mod:`gensemcom.quant`).

Spec ``qgesco[:FOLDER|:BITS]``:

- ``qgesco`` / ``qgesco:8`` / ``qgesco:4``: the bundled model, weights quantised to 8 / 4 bits
  per output channel with min-max scales and round-to-nearest (no calibration: quick, for sweeps);
- ``qgesco:w8a8``, ``qgesco:w4a8``: also activations (8 bits, per tensor), their ranges taken from
  a small calibration set drawn from the fp sampler itself (2 synthetic scenes x 4 snapshots,
  both guidance branches);
- ``qgesco:FOLDER``: a packed model written by ``gensemcom quantize`` (calibrated with AdaRound),
  or a saved fp model folder (then quantised as ``qgesco:8``).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import torch

from .gesco import GESCO, GESCOSystem
from .registry import SystemOptions, register_system

__all__ = ["QGESCOSystem", "build_qgesco", "parse_bits"]


def parse_bits(arg: str) -> tuple[int, int | None] | None:
    """``"8"``, ``"4"``, ``"w8a8"``, ``"W4A8"``, ``"w8a32"`` -> (weight bits, activation bits or None)."""
    m = re.fullmatch(r"(?:w?(\d+))(?:a(\d+))?", arg.strip().lower())
    if not m:
        return None
    wb, ab = int(m.group(1)), int(m.group(2)) if m.group(2) else None
    if not 2 <= wb <= 8 or (ab is not None and not 2 <= ab <= 32):
        raise ValueError(f"qgesco bits {arg!r}: weights 2..8 bits, activations 2..8 (or 32 for none)")
    return wb, (None if ab == 32 else ab)


class QGESCOSystem(GESCOSystem):
    """GESCO's pipeline with a quantised receiver network (see the module docstring)."""

    def __init__(self, gesco: GESCO, quant: dict[str, Any], source: str) -> None:
        super().__init__(gesco)
        self.name = "qgesco"
        self.quant, self.source = dict(quant), source

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg.update(system="qgesco", quant=self.quant, quant_source=self.source)
        return cfg


def _calibrate_acts(gesco: GESCO, q: torch.nn.Module, hw: tuple[int, int]) -> None:
    from ..data.synthetic import SyntheticScenes
    from ..quant.calibrate import calibrate_activations, collect_calibration
    from ..semantics import semantic_input

    data = SyntheticScenes(2, *hw, seed=11, num_classes=gesco.num_classes)
    maps = torch.cat([semantic_input(data[i]["label"][None], gesco.num_classes,
                                     data[i]["instance"][None] if gesco.has_edges else None) for i in range(2)])
    fp = copy.copy(gesco)
    fp.model = gesco.model
    cali = collect_calibration(fp, maps, 2, min(4, len(gesco.diffusion.timesteps)),
                               generator=torch.Generator().manual_seed(0))
    calibrate_activations(q, cali, batch=4)


def build_qgesco(arg: str | None, options: SystemOptions) -> QGESCOSystem:
    """The factory of ``qgesco[:FOLDER|:BITS]``."""
    from ..quant.model import quantize_model
    from ..quant.packed import KIND, load_packed
    from ..zoo import load_gesco

    bits = parse_bits(arg) if arg else (8, None)
    kw = dict(steps=options.steps, guidance_scale=options.guidance_scale, device=options.device,
              sampler=options.sampler)
    if bits is None:
        folder = Path(arg)
        cfg_path = folder / "config.json"
        if not cfg_path.is_file():
            raise ValueError(f"qgesco:{arg}: neither bits (8, 4, w8a8, w4a8) nor a model folder with config.json")
        cfg = json.loads(cfg_path.read_text())
        if cfg.get("kind") == KIND:
            from ..diffusion import DiffusionConfig, GaussianDiffusion
            if "diffusion" not in cfg:
                raise ValueError(f"{folder}: the packed model has no diffusion settings in config.json")
            model, _ = load_packed(folder, device=options.device)
            diffusion = GaussianDiffusion.from_config(DiffusionConfig(**dict(cfg["diffusion"],
                                                                               respacing=f"ddim{options.steps}")))
            num_classes = int(cfg.get("num_classes", model.config.label_channels - 1))
            s = options.guidance_scale if options.guidance_scale is not None else float(cfg.get("guidance_scale", 2.0))
            gesco = GESCO(model, diffusion, num_classes, guidance_scale=s, method=options.sampler)
            return QGESCOSystem(gesco, cfg["quant"], f"packed:{folder}")
        gesco = load_gesco(folder, **kw)
        bits, source = (8, None), f"fp:{folder} (round to nearest)"
    else:
        gesco = load_gesco(None, **kw)
        source = "bundled gesco_synthetic (round to nearest" + (", activations from 8 sampler snapshots)"
                                                                 if bits[1] else ")")
    fp_model = gesco.model.float()
    q = quantize_model(copy.deepcopy(fp_model), bits[0], bits[1])
    if bits[1]:
        _calibrate_acts(gesco, q, (64, 128))
    gesco.model = q.eval()
    return QGESCOSystem(gesco, q.quant_config, source)


register_system("qgesco", usage="qgesco[:FOLDER|:BITS]",
                sends="one-hot map of the present classes + instance edges, analog (as GESCO)",
                receiver="FDS denoising, then the quantised semantic diffusion model (fake-quantised W8/W4[A8])",
                description="Q-GESCO (Pignata et al. 2024): GESCO with a post-training-quantised receiver",
                cost="as GESCO")(build_qgesco)
