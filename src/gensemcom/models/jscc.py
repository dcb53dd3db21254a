"""Deep JSCC: an autoencoder whose latent is sent directly over an analog channel.

After Bourtsoulatze, Kurka, Gündüz, "Deep Joint Source-Channel Coding for Wireless Image
Transmission", IEEE Transactions on Cognitive Communications and Networking 5(3), 2019
(arXiv 1809.01733). The encoder maps pixels straight to channel symbols, with no quantisation
and no channel code; trained over a noisy channel, the image degrades gracefully as the SNR falls
instead of falling off a cliff.

::

    images (B, 3, H, W) in [-1, 1]
      --encode--> [Conv 5x5 /2 + PReLU] x num_down  (hidden/2, then hidden channels)
                  [Conv 5x5 /1 + PReLU] x 2         (hidden)
                   Conv 5x5 /1 + PReLU               (c)
      --> latent z (B, c, H/2^d, W/2^d), real
      --channel--> pair into c*h*w/2 complex symbols per image, normalise to unit mean power
                   per image, y = h s + w, equalise, undo the normalisation (channels.analog)
      --> received z_hat (B, c, h, w), in the units of z
      --decode--> [TConv 5x5 /1 + PReLU] x 3        (hidden)
                  [TConv 5x5 x2 + PReLU] x (num_down - 1), TConv 5x5 x2 + sigmoid (3)
      --> 2 * sigmoid - 1: images (B, 3, H, W) in [-1, 1]

Conventions:

- The power constraint is enforced by the channel, not by the network: every channel of
  :mod:`gensemcom.channels.analog` scales each image's symbols to mean ``|s|^2 = 1`` per complex
  symbol, so ``snr_db`` is Es/N0 per channel use, as in the paper. The latent is therefore *not*
  normalised here (that would normalise twice). The channel gives back ``z_hat`` in the latent's
  own units (it multiplies the per-image power scale back: one real number per image of side
  information, not counted in channel uses; the paper's decoder sees the normalised symbols,
  which differ from ``z_hat`` by exactly that per-image factor).
- Cost: ``c * h * w`` real values = ``c * h * w / 2`` complex channel uses per image;
  the bandwidth ratio is ``k / n = uses / (3 H W)`` (the paper's 1/6 .. 1/12 for c = 16 .. 8 at
  the default ``num_down = 2``).
- ``H`` and ``W`` must be divisible by ``2 ** num_down``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["DeepJSCCConfig", "DeepJSCC", "ACTIVATIONS", "num_parameters"]

ACTIVATIONS = ("prelu", "gelu", "relu")


@dataclass
class DeepJSCCConfig:
    """Constructor settings of :class:`DeepJSCC`.

    Attributes:
        latent_channels: c, channels of the latent (sets the bandwidth ratio).
        hidden: width of the inner layers (the first strided conv has ``hidden // 2``).
        num_down: stride-2 stages; the latent is (H / 2^num_down, W / 2^num_down).
        activation: ``"prelu"`` (the paper), ``"gelu"`` or ``"relu"``.
    """

    latent_channels: int = 16
    hidden: int = 64
    num_down: int = 2
    activation: str = "prelu"

    def __post_init__(self) -> None:
        for name in ("latent_channels", "hidden", "num_down"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"DeepJSCCConfig.{name} must be a positive int, got {v!r}")
        if self.hidden < 2:
            raise ValueError(f"DeepJSCCConfig.hidden must be >= 2, got {self.hidden}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"DeepJSCCConfig.activation must be one of {ACTIVATIONS}, got {self.activation!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DeepJSCCConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown DeepJSCCConfig fields: {unknown}")
        return cls(**d)


def _act(kind: str, channels: int) -> nn.Module:
    if kind == "prelu":
        return nn.PReLU(channels)
    return nn.GELU() if kind == "gelu" else nn.ReLU()


class DeepJSCC(nn.Module):
    """The Deep JSCC autoencoder (see the module docstring for the data flow).

    Args:
        config: the architecture (default: c = 16, hidden 64, H/4 x W/4 latent).
    """

    KIND = "deepjscc"

    def __init__(self, config: DeepJSCCConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or DeepJSCCConfig()
        c, h, a = cfg.latent_channels, cfg.hidden, cfg.activation
        down = [h // 2] + [h] * (cfg.num_down - 1)

        enc: list[nn.Module] = []
        cin = 3
        for cout in down:
            enc += [nn.Conv2d(cin, cout, 5, stride=2, padding=2), _act(a, cout)]
            cin = cout
        for _ in range(2):
            enc += [nn.Conv2d(cin, h, 5, padding=2), _act(a, h)]
            cin = h
        enc += [nn.Conv2d(cin, c, 5, padding=2), _act(a, c)]
        self.encoder = nn.Sequential(*enc)

        dec: list[nn.Module] = []
        cin = c
        for _ in range(3):
            dec += [nn.ConvTranspose2d(cin, h, 5, padding=2), _act(a, h)]
            cin = h
        ups = list(reversed(down))[1:] + [3]
        for i, cout in enumerate(ups):
            # kernel 5, padding 2, output_padding 1: exactly doubles the size
            dec.append(nn.ConvTranspose2d(cin, cout, 5, stride=2, padding=2, output_padding=1))
            if i < len(ups) - 1:
                dec.append(_act(a, cout))
            cin = cout
        self.decoder = nn.Sequential(*dec)

    # ------------------------------------------------------------------ geometry and cost
    @property
    def factor(self) -> int:
        """Downsampling factor ``2 ** num_down`` between image and latent."""
        return 2 ** self.config.num_down

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(c, h, w) of the latent of an H x W image; ValueError if H or W is not divisible."""
        f = self.factor
        if height % f or width % f or height <= 0 or width <= 0:
            raise ValueError(f"DeepJSCC with num_down={self.config.num_down} needs H and W divisible by "
                             f"{f}, got {height}x{width}; crop or pad the images (e.g. to "
                             f"{max(f, height // f * f)}x{max(f, width // f * f)})")
        return self.config.latent_channels, height // f, width // f

    def channel_uses(self, height: int, width: int) -> int:
        """Complex channel uses per H x W image: ``ceil(c * h * w / 2)``."""
        c, h, w = self.latent_shape(height, width)
        return (c * h * w + 1) // 2

    def bandwidth_ratio(self, height: int, width: int) -> float:
        """``k / n``: channel uses per source value, ``channel_uses / (3 H W)``."""
        return self.channel_uses(height, width) / (3 * height * width)

    # ------------------------------------------------------------------ the two halves
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> latent (B, c, H / 2^d, W / 2^d), not power normalised."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        self.latent_shape(images.shape[2], images.shape[3])
        return self.encoder(images)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Latent (B, c, h, w) -> images (B, 3, h * 2^d, w * 2^d) in [-1, 1]."""
        if latent.ndim != 4 or latent.shape[1] != self.config.latent_channels:
            raise ValueError(f"latent must be (B, {self.config.latent_channels}, h, w), got {tuple(latent.shape)}")
        return torch.sigmoid(self.decoder(latent)) * 2 - 1

    def forward(self, images: torch.Tensor, channel: Any, snr_db: float | torch.Tensor,
                generator: torch.Generator | None = None):
        """Encode, send the latent over ``channel``, decode.

        Args:
            images: (B, 3, H, W) in [-1, 1].
            channel: a :class:`gensemcom.channels.analog.Channel` (e.g.
                ``make_channel("awgn")``).
            snr_db: Es/N0 in dB per complex channel use: a number or a (B,) tensor; ``inf`` is
                noiseless.
            generator: source of the channel's noise and fading.

        Returns:
            ``(images_hat (B, 3, H, W) in [-1, 1], ChannelOutput)``.
        """
        z = self.encode(images)
        out = channel(z, snr_db, generator=generator, pixels=tuple(images.shape[2:]))
        return self.decode(out.received), out

    # ------------------------------------------------------------------ files
    def save_pretrained(self, directory: str | os.PathLike, extra: dict[str, Any] | None = None,
                        dtype: torch.dtype | None = None) -> Path:
        """Write ``model.safetensors`` + ``config.json`` (``dtype=torch.float16`` halves the size)."""
        from .io import save_module

        return save_module(directory, self, self.config.to_dict(), kind=self.KIND, extra=extra, dtype=dtype)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> "DeepJSCC":
        """Load a folder written by :meth:`save_pretrained` (float32, eval mode)."""
        from .io import load_module

        model, config = load_module(directory, lambda d: cls(DeepJSCCConfig.from_dict(d)), kind=cls.KIND,
                                    device=device)
        model.saved_config = config  # type: ignore[attr-defined]
        return model  # type: ignore[return-value]

    def extra_repr(self) -> str:
        return f"config={self.config}"


def num_parameters(module: nn.Module) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())

