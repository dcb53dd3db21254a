"""Systems: each one's whole pipeline (transmitter, channel, receiver) in one module."""

from .gesco import GESCO, MAP_CHANNELS, map_channel

__all__ = ["GESCO", "MAP_CHANNELS", "map_channel"]
