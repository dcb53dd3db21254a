"""The small models that ship with the package (``gensemcom/assets/<name>``), and loaders.

=====================  ===================================================================
``gesco_synthetic``    GESCO semantic diffusion model, synthetic street scenes, 64x128,
                       12 classes + edges (recipe: ``scripts/train_bundled.sh``)
``deepjscc_synthetic`` Deep JSCC autoencoder, synthetic scenes, AWGN, SNR -5..20 dB
                       (``gensemcom train_jscc``)
``segmenter_synthetic`` small U-Net segmenter of the synthetic scenes (``gensemcom train_segmenter``)
``spic_synthetic``     SPIC (map + coarse image), synthetic scenes, 64x128, 16x32 coarse image
                       (``scripts/train_spic_bundled.sh``)
``diffjscc_fashion_mnist`` Diff-JSCC, Fashion-MNIST 32x32, 0.25 uses/px, AWGN 0-20 dB
                       (``scripts/train_diffjscc_gpu.py``, 190 s on one H200)
``deepjscc_fashion_mnist`` Deep JSCC at the same bandwidth (``scripts/train_deepjscc_fmnist.py``)
=====================  ===================================================================

Everything is read from the installed package; nothing is downloaded.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["BUNDLED", "bundled_path", "load_gesco"]

BUNDLED = ("gesco_synthetic", "deepjscc_synthetic", "segmenter_synthetic", "spic_synthetic", "diffjscc_fashion_mnist",
           "deepjscc_fashion_mnist")


def bundled_path(name: str) -> Path:
    """The folder of bundled model ``name`` (FileNotFoundError naming it when absent)."""
    if name not in BUNDLED:
        raise ValueError(f"unknown bundled model {name!r}; choose from {', '.join(BUNDLED)}")
    path = Path(str(resources.files("gensemcom") / "assets" / name))
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"bundled model {name!r} is missing: {path}/config.json not found "
                                "(the package was installed without its assets?)")
    return path


def load_gesco(folder: str | Path | None = None, steps: int = 20, guidance_scale: float | None = None,
               device: str = "cpu", sampler: str = "ddim"):
    """A :class:`gensemcom.systems.GESCO` from a saved model folder (default: the bundled one),
    sampling with ``sampler`` (a name of :data:`gensemcom.diffusion.SAMPLERS`) over ``steps``
    evenly spaced timesteps; ``guidance_scale`` defaults to the one saved with the model (or 2)."""
    from .diffusion.samplers import make_sampler

    make_sampler(sampler)  # an unknown name fails here, before the model is read
    from .diffusion import DiffusionConfig, GaussianDiffusion
    from .models.io import load_pretrained
    from .systems.gesco import GESCO

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    folder = Path(folder) if folder is not None else bundled_path("gesco_synthetic")
    model, _, config = load_pretrained(folder, device=device)
    if "diffusion" not in config:
        raise ValueError(f"{folder} has no diffusion settings in config.json")
    num_classes = int(config.get("num_classes", model.config.label_channels - 1))
    diffusion = GaussianDiffusion.from_config(DiffusionConfig(**dict(config["diffusion"], respacing=f"ddim{steps}")))
    s = guidance_scale if guidance_scale is not None else float(config.get("guidance_scale", 2.0))
    return GESCO(model.eval(), diffusion, num_classes, guidance_scale=s, method=sampler)
