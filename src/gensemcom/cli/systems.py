"""``gensemcom systems``: every registered system, with what it sends over the channel, how its
receiver reconstructs the image, and what it costs in channel uses.

The names are what ``gensemcom evaluate --systems`` and ``gensemcom demo --systems`` take
(``NAME[:ARG]``, e.g. ``gesco:runs/my_model`` or ``jpeg+ldpc:16qam-1/2``).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Sequence

from .common import HelpFormatter

__all__ = ["main", "build_parser", "format_systems"]

FIELDS = ("sends", "receiver", "cost")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``gensemcom systems``."""
    doc = __doc__.split("\n\n")
    p = argparse.ArgumentParser(prog="gensemcom systems", description=doc[0].replace("``", ""),
                                epilog=doc[1].replace("``", ""), formatter_class=HelpFormatter)
    p.add_argument("names", nargs="*", metavar="NAME", help="only these systems (default: all)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of text")
    return p


def format_systems(records: Sequence, width: int = 100) -> str:
    """Text blocks, one per system record (fields name, usage, description, sends, receiver, cost)."""
    blocks = []
    for r in records:
        lines = [f"{getattr(r, 'usage', None) or r.name}", f"    {r.description}"]
        for field in FIELDS:
            lines += textwrap.wrap(str(getattr(r, field)), width=width, initial_indent=f"    {field + ':':<10}",
                                   subsequent_indent=" " * 14)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..systems.registry import available_systems

    records = available_systems()
    if args.names:
        known = {r.name: r for r in records}
        unknown = [n for n in args.names if n.split(":", 1)[0].strip().lower() not in known]
        if unknown:
            raise ValueError(f"unknown system(s) {', '.join(unknown)}; registered: {', '.join(known)}")
        records = [known[n.split(":", 1)[0].strip().lower()] for n in args.names]
    if args.json:
        rows = [{k: getattr(r, k, None) for k in ("name", "usage", "description", *FIELDS)} for r in records]
        print(json.dumps(rows, indent=2))
    else:
        print(format_systems(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
