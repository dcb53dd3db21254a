"""Deep JSCC as a system: the analog, non-generative baseline.

Bourtsoulatze, Kurka, Gündüz, "Deep Joint Source-Channel Coding for Wireless Image
Transmission", IEEE TCCN 2019. The whole pipeline::

    images (B, 3, H, W) in [-1, 1]
        --encoder--> latent (B, c, H/2^d, W/2^d), real
        --channel--> c*h*w/2 complex symbols per image, unit mean power per image,
                     AWGN or Rayleigh block fading (one gain per image, perfect CSI, MMSE
                     equalisation), per-image power scale undone
        --decoder--> images (B, 3, H, W) in [-1, 1]

Only the image travels (no label map): ``SystemOutput.labels`` is None; semantic fidelity is
measured by segmenting the received images. Cost: ``channel_uses = c*h*w/2`` per image, the same at
every SNR; ``info["bandwidth_ratio"] = channel_uses / (3 H W)``. The receiver is deterministic
given the channel draw (``stochastic = False``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..channels.analog import make_channel
from ..models.jscc import DeepJSCC
from .base import PHYSICAL_CHANNELS, Batch, System, SystemOutput
from .registry import SystemOptions, register_system
from .transport import check_snr

__all__ = ["DeepJSCCSystem", "BUNDLED_DEEPJSCC"]

#: package-relative folder of the bundled synthetic-scene Deep JSCC model
BUNDLED_DEEPJSCC = "assets/deepjscc_synthetic"
#: Deep JSCC on Fashion-MNIST 32x32 at 0.25 channel uses per pixel (scripts/train_deepjscc_fmnist.py)
BUNDLED_DEEPJSCC_FMNIST = "assets/deepjscc_fashion_mnist"


class DeepJSCCSystem(System):
    """Deep JSCC around a trained :class:`gensemcom.models.jscc.DeepJSCC`.

    Args:
        model: the autoencoder (put in eval mode; runs on its own device).
        source: where it was loaded from (recorded in :meth:`config`).
    """

    name = "deepjscc"
    stochastic = False
    channels = PHYSICAL_CHANNELS

    def __init__(self, model: DeepJSCC, source: str | None = None) -> None:
        self.model = model.eval()
        self.source = source
        self._channels = {kind: make_channel(kind) for kind in self.channels}

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, device: str | torch.device = "cpu") -> "DeepJSCCSystem":
        """Load a model folder written by ``DeepJSCC.save_pretrained`` (or ``train_jscc``)."""
        return cls(DeepJSCC.from_pretrained(folder, device=device), source=str(folder))

    @classmethod
    def bundled(cls, device: str | torch.device = "cpu") -> "DeepJSCCSystem":
        """The model shipped in ``gensemcom/assets/deepjscc_synthetic`` (synthetic scenes, 64x128)."""
        from importlib.resources import files

        path = Path(str(files("gensemcom").joinpath(BUNDLED_DEEPJSCC)))
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"the bundled Deep JSCC model is not installed (expected {path}); train one with "
                "`gensemcom train_jscc --out runs/deepjscc` and copy runs/deepjscc/model "
                "there, or use DeepJSCCSystem.from_pretrained(folder)")
        system = cls.from_pretrained(path, device=device)
        system.source = "bundled"
        return system

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"name": self.name, "model": self.model.config.to_dict()}
        if self.source is not None:
            cfg["source"] = self.source
        saved = getattr(self.model, "saved_config", None)
        if isinstance(saved, dict) and "trained_steps" in saved:
            cfg["trained_steps"] = saved["trained_steps"]
        return cfg

    def run(self, batch: Batch, channel: str, snr_db: float,
            generator: torch.Generator | None = None) -> SystemOutput:
        """Encode ``batch.images``, send the latent over ``channel`` at ``snr_db``, decode.

        ``snr_db`` is Es/N0 per complex channel use (``inf``: noiseless). The channel's noise and
        fading are drawn from ``generator`` on its device (the CPU for a default generator),
        so results do not depend on the model's device.
        """
        self.check_channel(channel)
        snr_db = check_snr(snr_db)
        h, w = batch.images.shape[2:]
        uses = self.model.channel_uses(h, w)
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            z = self.model.encode(batch.images.to(device, torch.float32))
            # the channel runs where the generator lives (CPU by default), so one CPU generator
            # gives the same draws whatever the model's device
            where = generator.device if generator is not None else torch.device("cpu")
            out = self._channels[channel](z.to(where), snr_db, generator=generator, pixels=(h, w))
            images = self.model.decode(out.received.to(device)).to(batch.images.device)
        return SystemOutput(
            images=images, labels=None,
            channel_uses=torch.full((batch.size,), float(uses), dtype=torch.float64),
            info={"bandwidth_ratio": self.model.bandwidth_ratio(h, w), "channel_uses_per_pixel": uses / (h * w)})


@register_system("deepjscc", usage="deepjscc[:FOLDER|:fashion-mnist]",
                 sends="the encoder's latent, analog (power-normalised)",
                 receiver="the Deep JSCC decoder", description="Deep JSCC (Bourtsoulatze et al. 2019); "
                 "default: the bundled synthetic-scenes model; :fashion-mnist the 0.25 uses/px one",
                 cost="the latent's size / 2 complex uses per image "
                 "(0.5 per pixel for the bundled model)")
def _deepjscc(arg: str | None, o: SystemOptions) -> System:
    if arg == "fashion-mnist":  # the bundled baseline of Diff-JSCC (0.25 uses per pixel, 32x32)
        from importlib.resources import files
        system = DeepJSCCSystem.from_pretrained(Path(str(files("gensemcom").joinpath(BUNDLED_DEEPJSCC_FMNIST))),
                                                device=o.device)
        system.source = "bundled:fashion-mnist"
        return system
    return DeepJSCCSystem.from_pretrained(arg, device=o.device) if arg else DeepJSCCSystem.bundled(device=o.device)
