"""Systems by name, registered once (CompressAI's ``register_model`` pattern).

Each system module registers a factory with :func:`register_system`::

    @register_system("gesco", usage="gesco[:FOLDER]", sends="one-hot map + edges, analog", ...)
    def _gesco(arg: str | None, options: SystemOptions) -> System: ...

``build_system("gesco:runs/m1", options)`` splits the spec at the first ``:``, looks the name up
and calls the factory with the rest (``"runs/m1"``) or None. ``available_systems()`` lists every
registration (``gensemcom systems`` prints it). The registry imports every module of
:mod:`gensemcom.systems` on first use, so a new system is one module and its decorator.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # pragma: no cover
    from .base import System

__all__ = ["SystemOptions", "SystemInfo", "register_system", "build_system", "available_systems",
           "system_help"]


@dataclass
class SystemOptions:
    """Settings shared by the systems a command builds.

    Attributes:
        steps: sampling steps (network calls per guided pair) of diffusion receivers.
        sampler: the sampler of diffusion receivers: ``"ddim"``, ``"ddpm"``, ``"dpm++2m"``,
            ``"dpm++3m"``, ``"dpm++2m-sde"``, ``"unipc"``, ... (:data:`gensemcom.diffusion.SAMPLERS`).
        guidance_scale: classifier-free guidance (None: the model's own).
        bandwidth: complex channel uses per pixel allowed to the separate-coding baselines.
        mcs: default modulation and coding scheme of the LDPC links.
        device: where networks run.
    """

    steps: int = 20
    sampler: str = "ddim"
    guidance_scale: float | None = None
    bandwidth: float = 0.5
    mcs: str = "16qam-1/2"
    device: str = "cpu"


#: ``factory(arg, options) -> System``; ``arg`` is the spec after the first ``:`` (or None).
Factory = Callable[[str | None, SystemOptions], "System"]


@dataclass(frozen=True)
class SystemInfo:
    """One registered system.

    Attributes:
        name: what ``--systems`` takes (before any ``:``).
        usage: the full spec form, e.g. ``"gesco[:FOLDER]"``.
        description: one line.
        sends: what crosses the channel.
        receiver: how the image is reconstructed.
        cost: the channel-use / bit cost, in words.
        factory: builds the system.
    """

    name: str
    usage: str
    description: str
    sends: str
    receiver: str
    cost: str
    factory: Factory


_REGISTRY: dict[str, SystemInfo] = {}
_LOADED = False


def register_system(name: str, *, description: str, sends: str, receiver: str, cost: str,
                    usage: str | None = None) -> Callable[[Factory], Factory]:
    """Decorator: register ``factory`` under ``name`` (lower case, no ``:``)."""
    key = name.strip().lower()
    if not key or ":" in key:
        raise ValueError(f"system names are non-empty and contain no ':', got {name!r}")

    def decorate(factory: Factory) -> Factory:
        if key in _REGISTRY and _REGISTRY[key].factory is not factory:
            raise ValueError(f"system {key!r} is registered twice")
        _REGISTRY[key] = SystemInfo(key, usage or key, description, sends, receiver, cost, factory)
        return factory

    return decorate


def _load_all() -> None:
    """Import every module of this package once, so that their decorators run."""
    global _LOADED
    if _LOADED:
        return
    package = importlib.import_module(__package__)
    for module in pkgutil.iter_modules(package.__path__):
        if module.name not in ("registry", "base"):
            importlib.import_module(f"{__package__}.{module.name}")
    _LOADED = True


def available_systems() -> list[SystemInfo]:
    """Every registered system, by name."""
    _load_all()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def build_system(spec: str, options: SystemOptions | None = None) -> "System":
    """The system named by ``spec`` (``NAME[:ARG]``); ValueError for an unknown name."""
    _load_all()
    name, _, arg = str(spec).partition(":")
    name = name.strip().lower()
    info = _REGISTRY.get(name)
    if info is None:
        if "+" in name:  # CODEC+LINK: say which half is wrong
            source, link = name.split("+", 1)
            if link not in ("ldpc", "capacity"):
                raise ValueError(f"unknown link {link!r} in system {spec!r}: use +ldpc or +capacity")
            raise ValueError(f"unknown codec {source!r} in system {spec!r}; registered: "
                             f"{', '.join(sorted(k for k in _REGISTRY if k.endswith('+' + link)))}")
        raise ValueError(f"unknown system {spec!r}; registered: {', '.join(sorted(_REGISTRY))} "
                         "(`gensemcom systems` describes them)")
    return info.factory(arg.strip() or None, options or SystemOptions())


def system_help() -> str:
    """A text table of the registered systems (for ``--help`` epilogues)."""
    rows = [(i.usage, i.description) for i in available_systems()]
    width = max(len(u) for u, _ in rows)
    return "systems:\n" + "\n".join(f"  {u:<{width}}  {d}" for u, d in rows)


def __getattr__(name: str) -> str:
    # SYSTEM_HELP is built on first access: building it imports every system module
    if name == "SYSTEM_HELP":
        return system_help()
    raise AttributeError(name)
