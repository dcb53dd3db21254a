"""``gensemcom <command> [options]``: dispatch to ``gensemcom.cli.<command>.main(argv)``."""

from __future__ import annotations

import importlib
import sys
from typing import Sequence

COMMANDS = {
    "demo": "GESCO beside its baselines over AWGN and Rayleigh: results JSON, metric-vs-SNR plots, image grids",
    "train": "train a GESCO model (accepts GESCO's image_train.py flags; torchrun for several processes)",
    "sample": "maps -> channel at one or several SNRs -> regenerated images (accepts image_sample.py flags)",
    "evaluate": "sweep systems x datasets x channels x SNRs into a results JSON (resumable, torchrun-shardable)",
    "plot": "metric-vs-SNR, rate-distortion and image-grid PNGs from sweep results",
    "train_jscc": "train the Deep JSCC baseline on synthetic scenes",
    "train_segmenter": "train the small segmenter used for mIoU on synthetic scenes",
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: gensemcom <command> [options]\n\ncommands:")
        for name, what in COMMANDS.items():
            print(f"  {name.replace('_', '-'):16s} {what}")
        return 0 if argv else 2
    name, rest = argv[0].replace("-", "_"), argv[1:]
    if name not in COMMANDS:
        print(f"gensemcom: unknown command {name!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"gensemcom.cli.{name}")
    try:
        return int(module.main(rest) or 0)
    except (ValueError, FileNotFoundError, ImportError) as e:
        # our errors name the problem; a traceback from deep inside would only hide it
        print(f"gensemcom {name}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
