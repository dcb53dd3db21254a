"""A shared, lazily generated noise bank (Diff-GO^n's noise-restricted diffusion).

Wanninayaka et al., "Diff-GO^n: Enhancing Diffusion Models for Goal-Oriented Communications",
arXiv 2412.06980. Transmitter and receiver share a finite set of N Gaussian noise tensors
``NB(eta) = {eps^(0), ..., eps^(N-1)}``, each of shape ``(C, H, W)``, identified only by a seed
``eta``: the bank is never transmitted. Training draws its forward-diffusion noise from the bank
(noise-restricted forward diffusion, NR-FD); the receiver starts its reverse process from the
entry whose index the transmitter sent.

Nothing is materialised: an entry is generated when asked for (the published code keeps the
whole ``1000 x 3 x 256 x 512`` float32 bank in memory, 1.57 GB, three times per process). Entries
are always generated on the CPU in float32 and then moved, so every device and every process
holding the same ``(seed, size, shape, compat)`` sees bit-identical entries.

Two recipes (``compat=``):

``None`` (default): per-entry derived seeds.
    Entry ``i`` is ``torch.randn(shape, generator=Generator().manual_seed(s_i))`` with
    ``s_i = blake2b("gensemcom-noisebank:{seed}:{i}")`` (63 bits). Any entry costs one ``randn`` of
    its own size; no state, no cache; any size (10^9 entries is no different from 10).
``"diffgo"``: the published recipe, entry for entry.
    ``torch.manual_seed(seed); torch.randn(size, *shape)`` on the CPU. That tensor is one
    Mersenne-Twister stream: every float32 value consumes one 32-bit draw, and the Box-Muller
    transform works on independent groups of 16 consecutive values, so entry ``i`` is ``randn`` of
    the stream from draw ``i * numel`` on (groups straddling entries, and the reference's tail
    recomputation when ``size * numel`` is not a multiple of 16, are handled exactly). To reach
    draw ``k`` the generator is advanced by drawing (and discarding) uniforms in fixed-size chunks:
    **cost** ``k`` Mersenne-Twister draws (about 2-3 ns each on one CPU core: 0.4 M draws per
    full-size Cityscapes entry, so about 1 s to reach entry 999 the first time), and constant
    memory. Generator states (5 KB each) are cached every ``checkpoint_every`` entries (by
    default at most 256 of them), and the state after the last access is kept, so later random
    access costs at most ``checkpoint_every`` entries of skipping and sequential access costs
    nothing extra.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Iterator, Sequence

import torch

__all__ = ["NoiseBank", "BANK_COMPAT", "index_bits"]

BANK_COMPAT = (None, "diffgo")

#: values skipped per ``uniform_`` call when advancing the stream (4 MB of float32)
_SKIP_CHUNK = 1 << 20
#: the reference's Box-Muller group (ATen ``normal_fill``)
_GROUP = 16


def index_bits(size: int) -> int:
    """Bits of a fixed-length index into ``size`` entries: ``ceil(log2 size)`` (0 for one entry)."""
    if size < 1:
        raise ValueError(f"a bank needs at least one entry, got size {size}")
    return (size - 1).bit_length()


def _derived_seed(seed: int, i: int) -> int:
    h = hashlib.blake2b(f"gensemcom-noisebank:{seed}:{i}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


class NoiseBank:
    """N Gaussian noise tensors of one shape, shared from a seed, generated on demand.

    Args:
        seed: the bank's identifier ``eta`` (an integer >= 0).
        size: number of entries N (>= 1); the index takes :attr:`bits` = ``ceil(log2 N)`` bits.
        shape: (C, H, W) of every entry (the image shape of the diffusion model).
        compat: ``None`` (per-entry derived seeds, the default) or ``"diffgo"`` (the published
            ``manual_seed(seed); randn(size, *shape)`` stream); see the module docstring.
        checkpoint_every: ``"diffgo"`` only: cache the generator state every this many entries
            (default ``ceil(size / 256)``).

    Indexing: ``bank[i]`` -> (C, H, W); ``bank[a:b]``, ``bank[[i, j]]`` or a LongTensor -> (B, C, H, W).
    :meth:`batch` does the same with a ``device``; :meth:`draw` picks random entries (NR-FD).
    """

    def __init__(self, seed: int, size: int, shape: Sequence[int], compat: str | None = None, *,
                 checkpoint_every: int | None = None) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"the bank seed must be an integer >= 0, got {seed!r}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"the bank size must be an integer >= 1, got {size!r}")
        shape = tuple(int(s) for s in shape)
        if len(shape) == 0 or any(s < 1 for s in shape):
            raise ValueError(f"the bank's entry shape must be non-empty with positive sizes, got {shape}")
        if compat not in BANK_COMPAT:
            raise ValueError(f"unknown bank compat {compat!r}; use one of {BANK_COMPAT}")
        self.seed, self.size, self.shape, self.compat = seed, size, shape, compat
        self.numel = math.prod(shape)
        if checkpoint_every is None:
            checkpoint_every = max(1, math.ceil(size / 256))
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
        self.checkpoint_every = int(checkpoint_every)
        # "diffgo": stream offset (in draws) -> generator state; the offset-0 state is the seed itself
        self._checkpoints: dict[int, torch.Tensor] = {}
        self._cursor: tuple[int, torch.Generator] | None = None

    # ------------------------------------------------------------------ description
    @property
    def bits(self) -> int:
        """Bits of an index: ``ceil(log2 size)``."""
        return index_bits(self.size)

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"NoiseBank(seed={self.seed}, size={self.size}, shape={self.shape}, compat={self.compat!r})"

    def config(self) -> dict[str, Any]:
        """JSON-able description; ``NoiseBank(**config)`` rebuilds the same bank."""
        return {"seed": self.seed, "size": self.size, "shape": list(self.shape), "compat": self.compat}

    @property
    def cache_nbytes(self) -> int:
        """Bytes held by the cached generator states (independent of ``size`` for the default)."""
        n = sum(s.numel() for s in self._checkpoints.values())
        return n + (self._cursor[1].get_state().numel() if self._cursor is not None else 0)

    # ------------------------------------------------------------------ checks
    def check_index(self, index: Any) -> torch.Tensor:
        """Indices as an int64 CPU tensor; ValueError for anything outside ``0 .. size - 1``."""
        if isinstance(index, torch.Tensor):
            if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
                raise ValueError(f"bank indices must be integers, got a {index.dtype} tensor")
            idx = index.detach().to("cpu", torch.int64)
        else:
            values = [index] if not isinstance(index, (list, tuple)) else list(index)
            for v in values:
                if isinstance(v, bool) or not isinstance(v, int) and not (hasattr(v, "__index__")):
                    raise ValueError(f"bank indices must be integers, got {v!r}")
            idx = torch.tensor([int(v) for v in values], dtype=torch.int64)
            if not isinstance(index, (list, tuple)):
                idx = idx[0]
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.size):
            bad = idx[(idx < 0) | (idx >= self.size)].flatten()[:5].tolist()
            raise ValueError(f"bank index {bad if len(bad) > 1 else bad[0]} is outside the bank "
                             f"(0 .. {self.size - 1}; {self.bits} bits)")
        return idx

    def check_shape(self, shape: Sequence[int], what: str = "the model") -> None:
        """ValueError unless ``shape`` (C, H, W) (or (B, C, H, W)) matches the bank's entries."""
        s = tuple(int(v) for v in shape)
        if len(s) == len(self.shape) + 1:
            s = s[1:]
        if s != self.shape:
            raise ValueError(f"the noise bank holds entries of shape {self.shape} but {what} needs {s}: "
                             "build the bank with the model's (channels, height, width)")

    # ------------------------------------------------------------------ access
    def entry(self, i: int, device: str | torch.device | None = None) -> torch.Tensor:
        """Entry ``i`` (C, H, W), float32, on ``device`` (default CPU)."""
        i = int(self.check_index(i))
        if self.compat == "diffgo":
            x = self._stream_entry(i)
        else:
            g = torch.Generator().manual_seed(_derived_seed(self.seed, i))
            x = torch.randn(self.shape, generator=g)
        return x if device is None else x.to(device)

    def batch(self, indices: Any, device: str | torch.device | None = None) -> torch.Tensor:
        """Entries at ``indices`` (B,) stacked: (B, C, H, W), float32, on ``device``."""
        idx = self.check_index(indices).reshape(-1)
        out = torch.empty((idx.numel(), *self.shape))
        for k, i in enumerate(idx.tolist()):
            out[k] = self.entry(i)
        return out if device is None else out.to(device)

    def __getitem__(self, key: Any) -> torch.Tensor:
        if isinstance(key, slice):
            return self.batch(list(range(*key.indices(self.size))))
        if isinstance(key, torch.Tensor) and key.ndim > 0:
            return self.batch(key)
        if isinstance(key, (list, tuple)) or (hasattr(key, "__len__") and not isinstance(key, (str, bytes))):
            return self.batch(list(key))
        return self.entry(key)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for i in range(self.size):
            yield self.entry(i)

    def draw(self, batch: int, generator: torch.Generator | None = None,
             device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """NR-FD noise: ``batch`` indices uniform over the bank (int64 (B,), from ``generator``
        with ``torch.randint(0, size, (B,))``) and their entries (B, C, H, W) on ``device``.

        With the default CPU generator seeded as the reference's global RNG, one draw of
        ``batch=1`` is the published ``torch.randint(0, 1000, (1,))``.
        """
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        idx = torch.randint(0, self.size, (batch,), generator=generator, device=_gen_device(generator))
        return idx.cpu(), self.batch(idx, device)

    # ------------------------------------------------------------------ the published stream
    def _generator_at(self, offset: int) -> torch.Generator:
        """A CPU generator that has made exactly ``offset`` 32-bit draws since ``manual_seed(seed)``."""
        g = torch.Generator()
        start = max((o for o in self._checkpoints if o <= offset), default=0)
        if self._cursor is not None and start < self._cursor[0] <= offset:
            start = self._cursor[0]
            g.set_state(self._cursor[1].get_state())
        elif start > 0:
            g.set_state(self._checkpoints[start])
        else:
            g.manual_seed(self.seed)
        stride = self.checkpoint_every * self.numel
        buf = torch.empty(min(_SKIP_CHUNK, max(offset - start, 1)))
        pos = start
        while pos < offset:
            next_mark = (pos // stride + 1) * stride
            stop = min(offset, next_mark, pos + buf.numel())
            buf[:stop - pos].uniform_(generator=g)  # float32 uniform: one 32-bit draw per value
            pos = stop
            if pos % stride == 0 and pos not in self._checkpoints:
                self._checkpoints[pos] = g.get_state()
        return g

    def _normals(self, offset: int, count: int) -> torch.Tensor:
        """``randn`` of ``count`` values (a multiple of 16) of the stream from draw ``offset``."""
        g = self._generator_at(offset)
        out = torch.randn(count, generator=g)
        self._cursor = (offset + count, g)
        return out

    def _stream_entry(self, i: int) -> torch.Tensor:
        n, total = self.numel, self.size * self.numel
        if total < _GROUP:  # randn of < 16 values uses another transform: just make it
            g = torch.Generator().manual_seed(self.seed)
            return torch.randn(self.size, *self.shape, generator=g)[i].clone()
        start, end = i * n, (i + 1) * n
        out = torch.empty(n)
        # positions before tail_start come from their own group of 16; when total is not a
        # multiple of 16, ATen recomputes the last 16 values from 16 further draws
        tail_start = total if total % _GROUP == 0 else total - _GROUP
        main_end = min(end, tail_start)
        if start < main_end:
            a = (start // _GROUP) * _GROUP
            b = -(-main_end // _GROUP) * _GROUP
            out[:main_end - start] = self._normals(a, b - a)[start - a:main_end - a]
        if end > tail_start:
            tail = self._normals(total, _GROUP)
            lo = max(start, tail_start)
            out[lo - start:] = tail[lo - tail_start:end - tail_start]
        return out.view(self.shape)


def _gen_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")
