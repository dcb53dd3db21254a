"""Networks: the SDM/GESCO semantic U-Net, checkpoint I/O and full-size presets."""

from .semantic_unet import SemanticCondition, SemanticUNet, SemanticUNetConfig

__all__ = ["SemanticUNet", "SemanticUNetConfig", "SemanticCondition"]
