"""Channels: physical (analog and digital) models and semantic-map channels (GESCO's and a physical one).

- :mod:`.analog`: real payload -> complex symbols (pairs), per-sample power normalisation,
  AWGN / Rayleigh / Rician flat fading, ZF / MMSE equalisation, ``make_channel``.
- :mod:`.digital`: BPSK / QPSK / 16-QAM / 64-QAM with the Gray bit labelling of 3GPP TS 38.211
  (as Sionna's and any 5G NR mapper), hard and exact-LLR demapping,
  BER theory, AWGN and Rayleigh ergodic capacity, an uncoded ``DigitalLink``.
- :mod:`.semantic`: semantic-map channels: GESCO's reference channel ``LegacyGescoChannel`` (SNR
  lookup table of noise stds + FDS denoising) and ``SemanticMapChannel`` (the default physical map
  channel), the same map handling over a physical channel.

Shared convention: SNR in dB is Es/N0 per complex channel use (unit symbol energy), so the noise
variance per complex symbol is ``N0 = 10 ** (-snr_db / 10)``; ``inf`` is noiseless. The GESCO
table is not an SNR and is only used by :class:`LegacyGescoChannel`.
"""

from .analog import (CHANNEL_KINDS, EQUALIZERS, AWGNChannel, Channel, ChannelOutput, IdentityChannel,
                     RayleighChannel, RicianChannel, awgn, channel_uses_for, check_snr_db, complex_to_real, equalize,
                     make_channel, normalize_power, pair_to_complex, per_pixel, rayleigh_fading,
                     rician_fading, snr_db_to_noise_var)
from .digital import (CONSTELLATIONS, Constellation, DigitalLink, DigitalOutput, awgn_capacity,
                      demap_hard, demap_llr, exp1, map_bits, q_function, qam_constellation,
                      rayleigh_ergodic_capacity, theoretical_ber)
from .semantic import (GESCO_SNR_TABLE, POOLS, LegacyGescoChannel, SemanticChannelOutput,
                       SemanticMapChannel, fds_denoise, gesco_noise_std, median_pool3x3,
                       transmitted_channels)

__all__ = [
    "CHANNEL_KINDS", "EQUALIZERS", "AWGNChannel", "Channel", "ChannelOutput", "IdentityChannel",
    "RayleighChannel", "RicianChannel", "awgn", "channel_uses_for", "check_snr_db", "complex_to_real", "equalize",
    "make_channel", "normalize_power", "pair_to_complex", "per_pixel", "rayleigh_fading", "rician_fading",
    "snr_db_to_noise_var",
    "CONSTELLATIONS", "Constellation", "DigitalLink", "DigitalOutput", "awgn_capacity", "demap_hard",
    "demap_llr", "exp1", "map_bits", "q_function", "qam_constellation", "rayleigh_ergodic_capacity", "theoretical_ber",
    "GESCO_SNR_TABLE", "POOLS", "LegacyGescoChannel", "SemanticChannelOutput", "SemanticMapChannel",
    "fds_denoise", "gesco_noise_std", "median_pool3x3", "transmitted_channels",
]

# coded digital link (5G NR LDPC via Sionna, imported lazily) and the ideal capacity link
from .coded import (CODED_CHANNELS, LDPCLink, LinkResult, MCS, MCS_PRESETS, capacity_bits, capacity_uses,
                    get_mcs)

__all__ += ["CODED_CHANNELS", "LDPCLink", "LinkResult", "MCS", "MCS_PRESETS", "capacity_bits", "capacity_uses",
            "get_mcs"]
