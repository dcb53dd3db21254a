"""Post-training quantisation of the semantic diffusion U-Net (Q-GESCO, arXiv 2410.02491).

- :mod:`.quantizers`: uniform affine fake quantisers, AdaRound, learned-step activation quantisers;
  ``compat="qgesco"`` reproduces the published code, the default fixes its quirks.
"""

from .quantizers import (  # noqa: F401
    COMPATS,
    ActQuantizer,
    AdaRoundLoss,
    BetaSchedule,
    WeightQuantizer,
    adaround_regularizer,
    fake_quant,
    init_scale,
    quant_range,
)
