"""Calibration data from the GESCO sampler, and BRECQ block reconstruction with AdaRound.

Q-Diffusion's "time-step-aware calibration" (Li et al., arXiv 2302.04304), as Q-GESCO uses it
(Pignata et al., arXiv 2410.02491):

1. :func:`collect_calibration`: ``cali_n`` sampling trajectories of the fp GESCO receiver (maps
   through the chosen channel at the chosen SNRs, DDIM with guidance), ``cali_st`` snapshots per
   trajectory. By default a snapshot is exactly what the network sees at that step: ``(x_t,
   t_model, y)`` for the conditional *and* the all-zero-map branch of guidance.
   ``kind="qgesco"`` stores what Q-GESCO's ``calibration_data.py`` stores: the step's *output*
   sample, the label ``t = i * 1000 / T`` for loop index ``i`` (so the label grows while the noise
   level falls), the conditional map only.
2. :func:`reconstruct`: BRECQ (Li et al., arXiv 2102.05426) over the units of
   :func:`~gensemcom.quant.model.reconstruction_units` (ResBlock, SPADE ResBlock with its map and
   time embedding replayed, attention block; single layers elsewhere): inputs from the
   weight-quantised network so far ("asym"), targets from the fp network, AdaRound's ``alpha``
   trained with Adam on ``rec + reg``, then fixed to hard decisions.
3. :func:`calibrate_activations`: activation quantisers initialised by min-max on the first
   batch, tracked with running statistics over the rest, then (``act_iters > 0``) their steps
   tuned per unit (LSQ; Adam lr 4e-4, cosine schedule, ``|.|^2.4`` loss as the reference).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .model import QuantLayer, QuantAttentionBlock, reconstruction_units, set_quant_state
from .quantizers import AdaRoundLoss, lp_loss

__all__ = ["CalibrationSet", "collect_calibration", "reconstruct", "calibrate_activations", "CALIBRATION_KINDS"]

CALIBRATION_KINDS = (None, "qgesco")


@dataclass
class CalibrationSet:
    """Network inputs for calibration: ``xs`` (N, 3, H, W), ``ts`` (N,), ``cs`` (N, L, H, W)."""

    xs: torch.Tensor
    ts: torch.Tensor
    cs: torch.Tensor

    def __post_init__(self) -> None:
        n = self.xs.shape[0]
        if self.ts.shape != (n,) or self.cs.shape[0] != n or self.cs.shape[2:] != self.xs.shape[2:]:
            raise ValueError(f"calibration set shapes do not fit: xs {tuple(self.xs.shape)}, "
                             f"ts {tuple(self.ts.shape)}, cs {tuple(self.cs.shape)}")

    def __len__(self) -> int:
        return self.xs.shape[0]

    def save(self, path: str) -> None:
        """Safetensors with Q-GESCO's names ``cali_xs``, ``cali_ts``, ``cali_cs``."""
        save_file({"cali_xs": self.xs.contiguous(), "cali_ts": self.ts.float().contiguous(),
                   "cali_cs": self.cs.contiguous()}, path)

    @classmethod
    def load(cls, path: str) -> "CalibrationSet":
        """From our safetensors, or Q-GESCO's ``cali_data_256.pth`` (dict of xs, ts, cs)."""
        if str(path).endswith(".safetensors"):
            d = load_file(path)
            return cls(d["cali_xs"], d["cali_ts"], d["cali_cs"])
        d = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(d, dict) or not {"xs", "ts", "cs"} <= set(d):
            raise ValueError(f"{path} is not a calibration set (a dict with xs, ts, cs)")
        return cls(d["xs"], d["ts"], d["cs"])


class _Recorder(nn.Module):
    """Passes every call to the network and keeps its inputs (both guidance branches)."""

    shares_encoder = False  # the sampler then calls with cat([x, x]) and cat([y, 0]): both recorded

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    @property
    def config(self) -> Any:
        return self.model.config

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, **kw: Any) -> torch.Tensor:
        self.calls.append((x.detach().cpu(), t.detach().cpu(), y.detach().cpu()))
        return self.model(x, t, y, **kw)


def collect_calibration(gesco: Any, maps: torch.Tensor, cali_n: int, cali_st: int,
                        snrs: Sequence[float] = (math.inf,), generator: torch.Generator | None = None,
                        kind: str | None = None) -> CalibrationSet:
    """Run the fp receiver of ``gesco`` (:class:`gensemcom.systems.gesco.GESCO`) and keep snapshots.

    Args:
        maps: (M, L, H, W) semantic maps as sent; trajectory i uses map ``i % M`` through
            ``gesco``'s channel at SNR ``snrs[i % len(snrs)]``.
        cali_n: trajectories; cali_st: snapshots per trajectory, at the sampler steps ``k`` with
            ``(k + 1) % (T // cali_st) == 0`` (k = 0 is the first, noisiest, step), as the reference.
        kind: None (network inputs of both branches) or ``"qgesco"`` (see the module docstring).

    Returns:
        a :class:`CalibrationSet` of ``cali_n * cali_st`` (x 2 with guidance, default kind) samples.
    """
    if kind not in CALIBRATION_KINDS:
        raise ValueError(f"kind must be None or 'qgesco', got {kind!r}")
    if cali_n < 1 or cali_st < 1:
        raise ValueError(f"cali_n and cali_st must be >= 1, got {cali_n}, {cali_st}")
    if maps.ndim != 4 or maps.shape[0] < 1:
        raise ValueError(f"maps must be (M, L, H, W) with M >= 1, got {tuple(maps.shape)}")
    steps = len(gesco.diffusion.timesteps)
    if cali_st > steps:
        raise ValueError(f"cali_st {cali_st} exceeds the sampler's {steps} steps")
    every = steps // cali_st
    keep = [k for k in range(steps) if (k + 1) % every == 0][:cali_st]
    xs, ts, cs = [], [], []
    device = next(gesco.model.parameters()).device
    for i in range(cali_n):
        y = maps[i % maps.shape[0]: i % maps.shape[0] + 1]
        received = gesco.send(y, float(snrs[i % len(snrs)]), generator).received
        noise = torch.randn((1, 3, *received.shape[2:]), generator=generator)
        rec = _Recorder(gesco.model)
        outputs: list[torch.Tensor] = []
        with torch.no_grad():
            gesco.diffusion.sample(rec, received.to(device), noise=noise.to(device),
                                   guidance_scale=gesco.guidance_scale, method=gesco.method, eta=gesco.eta,
                                   clip_denoised=gesco.clip_denoised, generator=generator, cache_condition=False,
                                   callback=lambda t, x_prev, out: outputs.append(x_prev.detach().cpu()))
        if len(rec.calls) != steps:
            raise ValueError(f"the sampler made {len(rec.calls)} network calls for {steps} steps; "
                             "calibration needs a one-call-per-step sampler (ddim, ddpm)")
        for k in keep:
            x, t, c = rec.calls[k]
            if kind == "qgesco":
                xs.append(outputs[k])
                ts.append(torch.tensor([k * (1000.0 / steps)]))
                cs.append(received.cpu())
            else:
                xs.append(x)
                ts.append(t.float())
                cs.append(c)
    return CalibrationSet(torch.cat(xs), torch.cat(ts), torch.cat(cs))


# ---------------------------------------------------------------------------------------- caching
class _Stop(Exception):
    pass


def _capture(model: nn.Module, unit: nn.Module, cali: CalibrationSet, idx: torch.Tensor, batch: int,
             want_output: bool) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Run ``model`` on the calibration samples ``idx`` until ``unit``; -> (its inputs, its output)."""
    device = next(model.parameters()).device
    args_all: list[list[torch.Tensor]] = []
    outs: list[torch.Tensor] = []

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        args_all.append([a.detach() if isinstance(a, torch.Tensor) else a for a in args])
        outs.append(output.detach())
        raise _Stop

    handle = unit.register_forward_hook(hook)
    try:
        with torch.no_grad():
            for s in range(0, len(idx), batch):
                j = idx[s: s + batch]
                try:
                    model(cali.xs[j].to(device), cali.ts[j].to(device), cali.cs[j].to(device))
                except _Stop:
                    pass
    finally:
        handle.remove()
    n_args = 1 if isinstance(unit, QuantLayer) else len(args_all[0])
    inputs = [torch.cat([a[i] for a in args_all]) for i in range(n_args)]
    return inputs, (torch.cat(outs) if want_output else None)


def _unit_layers(unit: nn.Module) -> list[QuantLayer]:
    return [m for m in unit.modules() if isinstance(m, QuantLayer)]


def _cache(model: nn.Module, unit: nn.Module, cali: CalibrationSet, idx: torch.Tensor, batch: int, asym: bool,
           act: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
    set_quant_state(model, weight=False, act=False)
    fp_inputs, target = _capture(model, unit, cali, idx, batch, True)
    if asym:
        set_quant_state(model, weight=True, act=act)
        inputs, _ = _capture(model, unit, cali, idx, batch, False)
    else:
        inputs = fp_inputs
    return inputs, target


# ---------------------------------------------------------------------------------------- BRECQ
def reconstruct(model: nn.Module, cali: CalibrationSet, *, iters: int = 20000, batch_size: int = 1,
                weight: float = 0.01, warmup: float = 0.2, b_range: tuple[float, float] = (20.0, 2.0),
                lr: float = 1e-3, p: float = 2.0, asym: bool = True, cache_batch: int = 8,
                max_samples: int | None = None, generator: torch.Generator | None = None,
                units: Sequence[str] | None = None,
                log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """AdaRound over every unit of a model from :func:`~gensemcom.quant.model.quantize_model`.

    Args:
        cali: the calibration set (network inputs).
        iters, batch_size: Adam steps per unit and samples per step (Q-GESCO: 20000, 1).
        weight, warmup, b_range, lr, p: the AdaRound loss (0.01, 0.2, (20, 2), 1e-3, 2).
        asym: unit inputs from the quantised network so far (else from the fp one).
        cache_batch: samples per forward while caching unit inputs/outputs.
        max_samples: cache a random subset of this many samples per unit (memory); all by default.
        units: restrict to these unit paths (default: all, in order).
        log: called with one line per unit.

    Returns:
        per unit: path, kind, seconds (of which cache_seconds collecting its inputs and targets),
        samples cached, final rec loss, share of weights rounded otherwise than to nearest.
        Leaves weight quantisation on (hard decisions) and activation quantisation off.
    """
    if iters < 1 or batch_size < 1:
        raise ValueError(f"iters and batch_size must be >= 1, got {iters}, {batch_size}")
    all_units = reconstruction_units(model)
    if units is not None:
        unknown = set(units) - {path for _, path, _ in all_units}
        if unknown:
            raise ValueError(f"unknown units {sorted(unknown)}")
        all_units = [u for u in all_units if u[1] in set(units)]
    grads = {n: prm.requires_grad for n, prm in model.named_parameters()}
    for prm in model.parameters():
        prm.requires_grad_(False)
    report = []
    try:
        for kind, path, unit in all_units:
            t0 = time.perf_counter()
            n = len(cali)
            idx = (torch.randperm(n, generator=generator)[:max_samples] if max_samples else torch.arange(n))
            inputs, target = _cache(model, unit, cali, idx, cache_batch, asym, act=False)
            t_cache = time.perf_counter() - t0
            layers = _unit_layers(unit)
            quantizers, alphas = [], []
            for layer in layers:
                for q, part in zip(layer.weight_quantizers(), layer.weight_parts()):
                    alphas.append(q.enable_adaround(part.detach()))
                    q.rounding = "soft"
                    quantizers.append(q)
                layer.use_weight_quant, layer.use_act_quant = True, False
            if any(layer.compat == "qgesco" for layer in layers):  # the reference regularises the first halves only
                reg_q = [layer.weight_quantizer for layer in layers]
            else:
                reg_q = quantizers
            loss_fn = AdaRoundLoss(reg_q, iters, weight, warmup, b_range, p)
            opt = torch.optim.Adam(alphas, lr=lr)
            m = target.shape[0]
            rec = torch.tensor(float("nan"))
            with torch.enable_grad():
                for _ in range(iters):
                    j = torch.randperm(m, generator=generator)[:batch_size]
                    opt.zero_grad()
                    pred = unit(*[a[j] if isinstance(a, torch.Tensor) else a for a in inputs])
                    total, rec, _ = loss_fn(pred, target[j])
                    total.backward()
                    opt.step()
            changed = total_w = 0
            with torch.no_grad():
                for q, (layer, part) in zip(quantizers, [(la, pt) for la in layers for pt in la.weight_parts()]):
                    q.rounding = "hard"
                    near = torch.round(part / q.delta) - torch.floor(part / q.delta)
                    changed += int((q.hard_rounding(part) != near).sum())
                    total_w += part.numel()
            entry = {"unit": path, "kind": kind, "seconds": time.perf_counter() - t0, "cache_seconds": t_cache,
                     "rec": float(rec.detach()),
                     "samples": m, "changed_from_nearest": changed / max(total_w, 1)}
            report.append(entry)
            if log:
                log(f"{kind} {path}: {entry['seconds']:.1f}s rec {entry['rec']:.4g} "
                    f"changed {100 * entry['changed_from_nearest']:.2f}%")
    finally:
        for name, prm in model.named_parameters():
            prm.requires_grad_(grads.get(name, False))
        for q in (q for _, layer in _all_layers(model) for q in layer.weight_quantizers()):
            if q.alpha is not None:
                q.alpha.requires_grad_(False)
        set_quant_state(model, weight=True, act=False)
    return report


def _all_layers(model: nn.Module) -> list[tuple[str, QuantLayer]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QuantLayer)]


def calibrate_activations(model: nn.Module, cali: CalibrationSet, *, batch: int = 8, act_iters: int = 0,
                          lr: float = 4e-4, p: float = 2.4, batch_size: int = 1,
                          generator: torch.Generator | None = None,
                          running: bool = True, units: Sequence[str] | None = None,
                          log: Callable[[str], None] | None = None) -> None:
    """Initialise (min-max on the first batch) and track (running min/max over the rest) every
    activation quantiser of a model built with ``act_bits``; then, with ``act_iters``, tune each
    unit's steps by reconstruction (Adam, cosine schedule, ``|.|^p`` loss); ``units`` restricts
    that tuning to these unit paths."""
    act_qs = [m for m in model.modules() if hasattr(m, "act_quantizers") and m.act_quantizers()]
    if not act_qs:
        raise ValueError("the model has no activation quantisers: quantize_model(..., act_bits=8)")
    device = next(model.parameters()).device
    set_quant_state(model, weight=True, act=True)
    quantizers = [a for m in act_qs for a in m.act_quantizers()]
    with torch.no_grad():
        for s in range(0, len(cali), batch):
            if s == batch and running:
                for a in quantizers:
                    a.running_stat = True
            model(cali.xs[s: s + batch].to(device), cali.ts[s: s + batch].to(device),
                  cali.cs[s: s + batch].to(device))
    for a in quantizers:
        a.running_stat = False
    if act_iters <= 0:
        return
    for prm in model.parameters():
        prm.requires_grad_(False)
    for kind, path, unit in reconstruction_units(model):
        if units is not None and path not in units:
            continue
        qs = [a for m in unit.modules() if isinstance(m, (QuantLayer, QuantAttentionBlock))
              for a in m.act_quantizers()]
        if not qs:
            continue
        t0 = time.perf_counter()
        inputs, target = _cache(model, unit, cali, torch.arange(len(cali)), batch, True, act=True)
        params = [a.delta for a in qs]
        for prm in params:
            prm.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=act_iters, eta_min=0.0)
        set_quant_state(unit, weight=True, act=True)
        with torch.enable_grad():
            for _ in range(act_iters):
                j = torch.randperm(target.shape[0], generator=generator)[:batch_size]
                opt.zero_grad()
                loss = lp_loss(unit(*[a[j] for a in inputs]), target[j], p=p, reduction="mean")
                loss.backward()
                opt.step()
                sched.step()
        for prm in params:
            prm.requires_grad_(False)
        if log:
            log(f"act {kind} {path}: {time.perf_counter() - t0:.1f}s loss {float(loss):.4g}")
    set_quant_state(model, weight=True, act=True)
