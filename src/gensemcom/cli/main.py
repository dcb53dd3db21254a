"""``gensemcom <command> [options]``: dispatch to ``gensemcom.cli.<command>.main(argv)``.

Nothing heavy is imported here or at the top of the command modules (torch is imported after the
arguments are parsed), so ``--help`` answers at once. Errors that name the problem (ValueError,
OSError such as a missing or unreadable file, ImportError of an optional dependency) are printed
as one line, ``gensemcom CMD: error: ...``, with exit status 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

COMMANDS = {
    "demo": "GESCO beside its baselines over AWGN and Rayleigh: results JSON, metric-vs-SNR plots, image grids",
    "train": "train a GESCO model (accepts GESCO's image_train.py flags; --config X.yaml: Diff-JSCC; torchrun)",
    "train_diffjscc": "train a Diff-JSCC model from the seed's yaml config (the latent through a real channel)",
    "sample": "maps -> channel at one or several SNRs -> regenerated images (accepts image_sample.py flags)",
    "evaluate": "sweep systems x datasets x channels x SNRs into a results JSON (resumable, torchrun-shardable)",
    "plot": "metric-vs-SNR, rate-distortion and image-grid PNGs from sweep results",
    "systems": "list the registered systems: what each sends, its receiver and its channel-use cost",
    "train_jscc": "train the Deep JSCC baseline on synthetic scenes",
    "train_segmenter": "train the small segmenter used for mIoU on synthetic scenes",
    "quantize": "Q-GESCO post-training quantisation (accepts quantize_model.py flags): packed int8/int4 + accounting",
}


def _one_line(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    if isinstance(e, OSError) and e.filename and str(e.filename) not in text:
        text = f"{text}: {e.filename}"
    return text


def _known_errors() -> tuple[type[BaseException], ...]:
    """ValueError (our checks; JSON and codec errors are ValueErrors), OSError (files, folders,
    permissions), ImportError (optional dependencies), and torch's out-of-memory when torch is loaded."""
    known: list[type[BaseException]] = [ValueError, OSError, ImportError]
    torch = sys.modules.get("torch")
    oom = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None) if torch is not None else None
    if oom is not None:
        known.append(oom)
    return tuple(known)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: gensemcom <command> [options]   (gensemcom <command> --help for its options)\n\ncommands:")
        for name, what in COMMANDS.items():
            print(f"  {name.replace('_', '-'):16s} {what}")
        return 0 if argv else 2
    name, rest = argv[0].replace("-", "_"), argv[1:]
    if name not in COMMANDS:
        print(f"gensemcom: unknown command {argv[0]!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"gensemcom.cli.{name}")
    try:
        return int(module.main(rest) or 0)
    except KeyboardInterrupt:
        print(f"gensemcom {name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `gensemcom systems | head`: the reader left; nothing is wrong
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:
        if not isinstance(e, _known_errors()):
            raise  # a bug: the traceback is what helps
        # our errors name the problem; a traceback from deep inside would only hide it
        hint = " (try a smaller batch size)" if "OutOfMemory" in type(e).__name__ else ""
        print(f"gensemcom {name}: error: {_one_line(e)}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
