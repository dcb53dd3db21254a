"""Diff-JSCC as a communication system (placeholder while the model lands)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["reference_channel"]


def reference_channel(z: torch.Tensor, kind: str, snr_db: float, *, noise: torch.Tensor | None = None,
                      gain_draws: torch.Tensor | None = None, generator: torch.Generator | None = None,
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Diff_JSCC's ``models/noise_channel.Channel``, as written (the repository never calls it).

    Kept to document and test what the published code would have done; the system itself uses
    :mod:`gensemcom.channels` (complex pairing, Es/N0 per complex channel use).

    - ``"awgn"``: ``z_in = sqrt(k) z / ||z||`` per sample (mean power 1 per *real* value), then
      ``z_in + sigma n`` with ``sigma = sqrt(10^(-snr/10))`` and ``n ~ N(0, 1)`` per real value:
      the SNR is per real dimension, 3 dB off the complex convention.
    - ``"fading-real"``: ``z_in = sqrt(k/2) z / ||z||`` (power 1/2 per real value), one magnitude
      ``|h| = sqrt(a^2 + b^2)``, ``a, b ~ N(0, 1/2)``, per sample, noise ``sigma / sqrt(2) n``.
    - ``"fading"``: the complex version cannot run as written (it pairs ``z[:, :k]`` with the empty
      ``z[:, k:]``); a ValueError says so.

    Args:
        z: (B, k) latent.
        snr_db: the ``channel_snr`` argument, in dB.
        noise: (B, k) the N(0, 1) draws for the additive noise (drawn from ``generator`` if None).
        gain_draws: (B, 2) the raw N(0, 1) draws ``(a*sqrt2, b*sqrt2)`` of ``fading-real``.

    Returns:
        ``(out (B, k), average power (0-d), h)``: ``h`` is all ones (B, k) for ``awgn`` and the
        magnitudes (B, 1) for ``fading-real``.
    """
    if z.ndim != 2:
        raise ValueError(f"z must be (B, k), got {tuple(z.shape)}")
    std = math.sqrt(10 ** (-float(snr_db) / 10))
    if kind == "fading":
        raise ValueError("Diff_JSCC's 'fading' channel cannot run as written: it pairs z[:, :k] with the "
                         "empty z[:, k:] (a size mismatch); use 'fading-real' or the library's Rayleigh channel")
    if kind not in ("awgn", "fading-real"):
        raise ValueError(f"unknown reference channel {kind!r}; expected 'awgn', 'fading-real' or 'fading'")
    b, k = z.shape
    if kind == "fading-real":
        if gain_draws is None:
            gain_draws = torch.cat([torch.randn(b, 1, generator=generator), torch.randn(b, 1, generator=generator)],
                                   dim=1)
        n1 = gain_draws[:, 0:1] * (1 / math.sqrt(2))
        n2 = gain_draws[:, 1:2] * (1 / math.sqrt(2))
        h = torch.sqrt(n1.square() + n2.square())
    if noise is None:
        noise = torch.randn(b, k, generator=generator)
    if noise.shape != z.shape:
        raise ValueError(f"noise must have the shape of z {tuple(z.shape)}, got {tuple(noise.shape)}")
    if kind == "awgn":
        z_in = math.sqrt(k) * F.normalize(z, dim=1)
        out = z_in + noise * std
        h = torch.ones_like(z_in)
    else:
        z_in = math.sqrt(k // 2) * F.normalize(z, dim=1)
        out = h * z_in + noise * std / math.sqrt(2)
    return out, z_in.square().mean(), h
