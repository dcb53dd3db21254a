"""Systems by name, for sweeps and the command line.

=========================  ==========================================================================
``gesco[:FOLDER]``         GESCO: analog one-hot map + edges, FDS denoising, diffusion regeneration
                           (default: the bundled synthetic-scenes model)
``gesco-map``              GESCO's map link alone (no generator): works on any label space
``gesco-digital[:MCS]``    the map and instances losslessly coded (PNG), 5G LDPC + QAM, then GESCO
``map+ldpc[:MCS]``         the label map losslessly coded, 5G LDPC + QAM (what SPIC/Diff-GO^n send)
``map+capacity``           the same at Shannon capacity
``CODEC+ldpc[:MCS]``       separate coding: CODEC (jpeg, webp, jpeg2000, jpegxl, hevc) under the bit
                           budget of ``bandwidth`` channel uses per pixel, 5G LDPC + QAM
``CODEC+capacity``         the same at Shannon capacity (the ideal digital system)
``deepjscc[:FOLDER]``      Deep JSCC (default: the bundled model)
=========================  ==========================================================================

MCS names: see :data:`gensemcom.channels.coded.MCS_PRESETS` (e.g. ``16qam-1/2``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import System

__all__ = ["SystemOptions", "build_system", "SYSTEM_HELP"]

SYSTEM_HELP = __doc__


@dataclass
class SystemOptions:
    """Settings shared by the systems a command builds.

    Attributes:
        steps: DDIM steps of diffusion receivers.
        guidance_scale: classifier-free guidance (None: the model's own).
        bandwidth: complex channel uses per pixel allowed to the separate-coding baselines.
        mcs: default modulation and coding scheme of the LDPC links.
        device: where networks run.
    """

    steps: int = 20
    guidance_scale: float | None = None
    bandwidth: float = 0.5
    mcs: str = "16qam-1/2"
    device: str = "cpu"


def build_system(spec: str, options: SystemOptions | None = None, _cache: dict | None = None) -> System:
    """The system named by ``spec`` (see the module docstring); ValueError for an unknown name."""
    o = options or SystemOptions()
    name, _, arg = spec.partition(":")
    name = name.strip().lower()
    arg = arg.strip() or None
    if name in ("gesco", "gesco-digital"):
        from ..zoo import load_gesco
        from .gesco import GESCOSystem
        g = load_gesco(arg if name == "gesco" else None, steps=o.steps, guidance_scale=o.guidance_scale,
                       device=o.device)
        return GESCOSystem(g) if name == "gesco" else _gesco_digital(g, arg or o.mcs)
    if name == "gesco-map":
        from .gesco import GESCOSystem
        return GESCOSystem(None)
    if name == "deepjscc":
        from .deepjscc import DeepJSCCSystem
        return DeepJSCCSystem.from_pretrained(arg, device=o.device) if arg else DeepJSCCSystem.bundled(device=o.device)
    if "+" in name:
        source, link = name.split("+", 1)
        if link not in ("ldpc", "capacity"):
            raise ValueError(f"unknown link {link!r} in system {spec!r}: use +ldpc or +capacity")
        from .separation import DigitalMap, SeparateCoding
        mcs = arg or o.mcs
        if source == "map":
            return DigitalMap(codec="png", link=link, mcs=mcs)
        return SeparateCoding(codec=source, link=link, mcs=mcs, bandwidth=o.bandwidth)
    raise ValueError(f"unknown system {spec!r}; `gensemcom evaluate --help` lists them")


def _gesco_digital(gesco, mcs: str) -> System:
    """The map and instance map sent losslessly over LDPC, then GESCO regenerates the image."""
    import torch

    from ..semantics import semantic_input
    from .gesco import GESCOSystem
    from .separation import DigitalMap

    def regenerate(labels: torch.Tensor, instances: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        labels = labels.clone()
        labels[labels >= gesco.num_classes] = 0  # unlabelled pixels go in as background, as GESCO's loaders do
        y = semantic_input(labels, gesco.num_classes, instances=instances if gesco.has_edges else None)
        noise = torch.randn((y.shape[0], 3, *y.shape[2:]), generator=generator)
        return gesco.receive(y, generator, noise=noise).cpu()

    system = DigitalMap(codec="png", link="ldpc", mcs=mcs, send_instances=gesco.has_edges, regenerate=regenerate)
    system.name = "gesco-digital"
    system.stochastic = True
    receiver = GESCOSystem(gesco)
    system.compatible = receiver.compatible  # same label space and edges as GESCO itself
    link_config = system.config
    # the sampler's settings identify the records too (steps, guidance, model)
    system.config = lambda: {**link_config(), "system": "gesco-digital", "gesco": receiver.config()}
    return system
