"""Noise schedules and timestep respacing (the guided-diffusion conventions).

All schedules are float64 NumPy arrays of betas, one per original timestep ``0 .. T-1``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["linear_betas", "cosine_betas", "named_betas", "respace_timesteps"]


def linear_betas(num_steps: int) -> np.ndarray:
    """Ho et al.'s linear schedule, rescaled by ``1000 / T`` so any ``T`` spans the same process.

    ``betas = linspace(1e-4 * 1000/T, 0.02 * 1000/T, T)``.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    scale = 1000.0 / num_steps
    return np.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=np.float64)


def cosine_betas(num_steps: int, max_beta: float = 0.999, offset: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal's cosine schedule: ``alpha_bar(t) = cos((t + s)/(1 + s) * pi/2)^2``.

    ``beta_i = min(1 - alpha_bar((i+1)/T) / alpha_bar(i/T), max_beta)``.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")

    def alpha_bar(u: float) -> float:
        return math.cos((u + offset) / (1 + offset) * math.pi / 2) ** 2

    return np.array([min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), max_beta)
                     for i in range(num_steps)], dtype=np.float64)


def named_betas(kind: str, num_steps: int) -> np.ndarray:
    """``kind`` is ``"linear"`` or ``"cosine"``."""
    if kind == "linear":
        return linear_betas(num_steps)
    if kind == "cosine":
        return cosine_betas(num_steps)
    raise ValueError(f"unknown noise schedule {kind!r}: use 'linear' or 'cosine'")


def respace_timesteps(num_steps: int, spec: str | int | Sequence[int] | None) -> list[int]:
    """The original timesteps kept by a respacing, ascending.

    ``spec`` follows guided-diffusion's ``timestep_respacing``:

    - ``""`` or ``None``: keep all ``num_steps``.
    - ``"ddimN"``: the smallest integer stride ``k`` with ``len(range(0, T, k)) == N``
      (the DDIM paper's uniform striding); an error if none exists.
    - ``"N"`` or ``"a,b,c"``: split ``0..T-1`` into as many equal sections (the first
      ``T % sections`` one step longer) and take ``a``, ``b``, ... evenly spaced steps from each,
      rounding fractional positions (Python's ``round``, half to even).
    - a sequence of ints: taken as the kept steps themselves.
    """
    if spec is None or spec == "":
        return list(range(num_steps))
    if isinstance(spec, int):
        spec = str(spec)
    if not isinstance(spec, str):
        steps = sorted(set(int(s) for s in spec))
        if not steps or steps[0] < 0 or steps[-1] >= num_steps:
            raise ValueError(f"respaced timesteps must lie in [0, {num_steps - 1}], got {steps[:3]}...")
        return steps
    if spec.startswith("ddim"):
        try:
            desired = int(spec[4:])
        except ValueError:
            raise ValueError(f"bad respacing {spec!r}: expected 'ddimN' with an integer N") from None
        for stride in range(1, num_steps):
            if len(range(0, num_steps, stride)) == desired:
                return list(range(0, num_steps, stride))
        if desired == num_steps:
            return list(range(num_steps))
        raise ValueError(f"cannot take exactly {desired} of {num_steps} steps with an integer "
                         f"stride ('{spec}'); use section counts such as '{desired}' instead")
    try:
        counts = [int(x) for x in spec.split(",")]
    except ValueError:
        raise ValueError(f"bad respacing {spec!r}: expected '', 'ddimN', 'N' or 'a,b,c'") from None
    size_per, extra = divmod(num_steps, len(counts))
    start, steps = 0, []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if size < count or count < 1:
            raise ValueError(f"respacing {spec!r}: cannot take {count} steps from a section of {size}")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        pos = 0.0
        for _ in range(count):
            steps.append(start + round(pos))
            pos += stride
        start += size
    return sorted(set(steps))
