"""Post-training quantisation of the semantic diffusion U-Net (Q-GESCO, arXiv 2410.02491).

- :mod:`.quantizers`: uniform affine fake quantisers, AdaRound, learned-step activation quantisers;
  ``compat="qgesco"`` reproduces the published code, the default fixes its quirks.
- :mod:`.model`: :func:`quantize_model` (every Conv/Linear and attention block of a SemanticUNet),
  split quantisation, Q-GESCO ``quantized_model.pth`` read/write.
- :mod:`.calibrate`: calibration sets from the sampler, BRECQ/AdaRound reconstruction,
  activation calibration.
- :mod:`.packed`: int8/int4 packed checkpoints (about 1/4 and 1/8 of fp32).
- :mod:`.runtime`: ONNX Runtime QDQ int8 graph of the network call (optional dependency).
- :mod:`.accounting`: weight bytes, FLOPs and bit-operations.

Typical use::

    q = quantize_model(model, 8, split=True)           # min-max init, weights fake-quantised
    reconstruct(q, collect_calibration(gesco, maps, cali_n=8, cali_st=5), iters=2000)
    save_packed("runs/q8", q)                          # then load_packed / qgesco:runs/q8
"""

from .calibrate import CalibrationSet, calibrate_activations, collect_calibration, reconstruct  # noqa: F401
from .model import (  # noqa: F401
    QuantAttentionBlock,
    QuantLayer,
    load_qgesco_checkpoint,
    load_qgesco_state_dict,
    qgesco_state_dict,
    quantize_model,
    reconstruction_units,
    set_quant_state,
)
from .packed import load_packed, load_quantized, save_packed  # noqa: F401
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
