"""An integer runtime for the quantised U-Net: an ONNX Runtime QDQ int8 graph of the network call.

Fake quantisation (:mod:`gensemcom.quant.model`) computes in float32 and saves nothing at run time.
Here the network call ``(x_t, t, y) -> (B, 6, H, W)`` is exported to ONNX with the quantised
weights, and ONNX Runtime's static quantisation inserts QuantizeLinear/DequantizeLinear pairs on
the inputs of every Conv, MatMul and Gemm (weights int8 symmetric per output channel, activations
uint8 per tensor from min-max over calibration inputs, the same points our fake quantiser
covers: layer inputs and the two attention matmuls); ORT's graph optimiser fuses them into its
integer kernels (on x86 U8S8 with AVX-512 VNNI).

Why ONNX Runtime: on this CPU it was the fastest route measured when the issue was written (about
2.7x over our float32 torch call; PT2E + Inductor 1.9x after minutes of compilation, ``torch.ao``
eager 1.2-1.3x, torchao's int8/int4 paths cover linear layers only), and it runs on ONNX Runtime's
stock CPU package. Weights of a model calibrated with ``symmetric=True`` lie on the grid ORT
recomputes (``absmax / 127`` per channel), so its integers are our AdaRound integers; an
asymmetric model's weights are re-rounded onto the symmetric grid.

``onnxruntime`` and ``onnx`` are optional dependencies (``pip install onnxruntime``).
"""

from __future__ import annotations

import contextlib
import copy
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from .model import QuantLayer, set_quant_state

__all__ = ["dequantized_copy", "export_onnx", "quantize_onnx", "OrtNetwork", "require_onnxruntime"]


def require_onnxruntime() -> Any:
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError:
        raise ImportError("the integer runtime needs onnxruntime and onnx: pip install onnxruntime onnx") from None
    return onnxruntime


def dequantized_copy(model: nn.Module) -> nn.Module:
    """A float copy of a fake-quantised model whose weights are the quantised ones (quantisation
    off), i.e. the same network function with the weights on their integer grids."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for layer in m.modules():
            if isinstance(layer, QuantLayer) and layer.use_weight_quant:
                layer.weight.copy_(layer.quantized_weight())
    set_quant_state(m, weight=False, act=False)
    return m.eval()


class _Call(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.model(x, t, y)


def export_onnx(model: nn.Module, path: str | os.PathLike, height: int, width: int, opset: int = 17) -> Path:
    """Export the network call ``(x (B,3,H,W), t (B,) float, y (B,L,H,W)) -> out`` (batch dynamic)
    of a fake-quantised (its quantised weights, see :func:`dequantized_copy`) or float model."""
    require_onnxruntime()
    if any(isinstance(m, QuantLayer) for m in model.modules()):
        model = dequantized_copy(model)
    cfg = model.config
    x = torch.zeros(1, cfg.in_channels, height, width)
    y = torch.zeros(1, cfg.label_channels, height, width)
    t = torch.zeros(1)
    path = Path(path)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Call(model.eval()), (x, t, y), str(path), input_names=["x", "t", "y"],
                          output_names=["out"], opset_version=opset, dynamo=False,
                          dynamic_axes={k: {0: "batch"} for k in ("x", "t", "y", "out")})
    return path


def quantize_onnx(fp_path: str | os.PathLike, out_path: str | os.PathLike,
                  calibration: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                  per_channel: bool = True, op_types: tuple[str, ...] = ("Conv", "MatMul", "Gemm")) -> Path:
    """ORT static quantisation (QDQ format, int8 weights, uint8 activations, min-max) of an
    exported network; ``calibration`` yields network inputs ``(x, t, y)`` (one sample each or
    batches), e.g. those of a :class:`~gensemcom.quant.calibrate.CalibrationSet`."""
    require_onnxruntime()
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    items = [{"x": x.float().numpy(), "t": t.float().reshape(-1).numpy(), "y": y.float().numpy()}
             for x, t, y in calibration]
    if not items:
        raise ValueError("quantize_onnx needs at least one calibration input")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(items)

        def get_next(self) -> dict | None:
            return next(self.it, None)

    fp_path, out_path = Path(fp_path).resolve(), Path(out_path).resolve()
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):  # ORT writes scratch files to the cwd
        pre = os.path.join(tmp, "pre.onnx")
        quant_pre_process(str(fp_path), pre, skip_symbolic_shape=True)
        quantize_static(pre, str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=list(op_types), calibrate_method=CalibrationMethod.MinMax)
    return out_path


class OrtNetwork(nn.Module):
    """An exported network as a callable the samplers accept: ``net(x, t, y) -> out`` (torch).

    Has no ``encode_condition`` and ``shares_encoder = False``, so the samplers pass the raw map
    and stack the guidance branches in the batch.
    """

    shares_encoder = False

    def __init__(self, path: str | os.PathLike, config: Any, threads: int | None = None) -> None:
        super().__init__()
        ort = require_onnxruntime()
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.config = config
        # an empty parameter, so that callers asking next(model.parameters()).device get the CPU
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, **unused: Any) -> torch.Tensor:
        if unused:
            raise ValueError(f"the exported network takes (x, t, y) only, got {sorted(unused)}")
        t = torch.as_tensor(t).float().reshape(-1).expand(x.shape[0]) if torch.as_tensor(t).numel() == 1 \
            else torch.as_tensor(t).float()
        out = self.session.run(None, {"x": x.detach().float().cpu().numpy(), "t": t.cpu().numpy(),
                                      "y": y.detach().float().cpu().numpy()})[0]
        return torch.from_numpy(out).to(x.device)
