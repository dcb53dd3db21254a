"""Full-size configurations of the released GESCO/SDM models.

The flags are those of the GESCO README commands; a model built from a preset has exactly the
state-dict keys and shapes of the released checkpoints (``Cityscapes_ema_0.9999_190000.pt`` and
the like), checked against the manifests in ``tests/data/sdm/sdm_full_manifests.json``. At 256x512
(Cityscapes) one network call is about 7 TFLOP: build them on the ``meta`` device to inspect, on
a GPU to run.
"""

from __future__ import annotations

from typing import Any

from ..diffusion.gaussian import DiffusionConfig
from .semantic_unet import SemanticUNetConfig

__all__ = ["GESCO_PRESETS", "preset_flags", "preset_config", "GUIDANCE_SCALES", "IMAGE_SIZES"]

_COMMON: dict[str, Any] = dict(
    image_size=256, num_channels=256, num_res_blocks=2, attention_resolutions="32,16,8",
    num_head_channels=64, resblock_updown=True, use_scale_shift_norm=True, learn_sigma=True,
    class_cond=True, one_hot_label=True, diffusion_steps=1000, noise_schedule="linear",
)

#: dataset -> the reference flags of its released model.
GESCO_PRESETS: dict[str, dict[str, Any]] = {
    "cityscapes": dict(_COMMON, num_classes=35, no_instance=False),
    "ade20k": dict(_COMMON, num_classes=151, no_instance=True),
    "coco": dict(_COMMON, num_classes=183, no_instance=False),
}

#: classifier-free guidance scales of the GESCO README.
GUIDANCE_SCALES = {"cityscapes": 2.0, "ade20k": 2.5, "coco": 2.5}

#: (height, width) the reference feeds each dataset at.
IMAGE_SIZES = {"cityscapes": (256, 512), "ade20k": (256, 256), "coco": (256, 256)}


def preset_flags(name: str) -> dict[str, Any]:
    if name not in GESCO_PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(GESCO_PRESETS)}")
    return dict(GESCO_PRESETS[name])


def preset_config(name: str, reference: str = "gesco") -> tuple[SemanticUNetConfig, DiffusionConfig]:
    """(network config, diffusion config) of a released full-size model."""
    from ..legacy import config_from_flags

    return config_from_flags(preset_flags(name), reference=reference)
