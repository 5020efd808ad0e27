"""Run a figure of Wei, Xie & Ma (2021) at a preset: ``python -m hmmlib.experiments.reproduce FIGURE``.

Examples::

    python -m hmmlib.experiments.reproduce fig-b1 --preset repro --workers 2
    python -m hmmlib.experiments.reproduce all --preset paper --dry-run
    python -m hmmlib.experiments.reproduce fig-b3 --preset repro --ray auto

FIGURE is ``fig-b1`` (also Fig. B2's data), ``fig-b2`` (the same jobs), ``fig-b3``, ``ideal``
(chapters 3-4's ideal-model sweep) or ``all``. Finished jobs are skipped, so the command can be
interrupted and rerun. Records go to ``<results>/<preset>/<figure>.jsonl``.
"""
from __future__ import annotations

import argparse
import os
import sys

from .jobs import all_figures
from .pipeline import DEFAULT_RESULTS, describe_plan, estimate, run
from .repro_presets import REPRO_PRESET_NAMES

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m hmmlib.experiments.reproduce", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("figure", choices=all_figures() + ("fig-b2", "all"))
    ap.add_argument("--preset", default=os.environ.get("HMMBOOK_PRESET") or "default", choices=REPRO_PRESET_NAMES)
    ap.add_argument("--results", default=str(DEFAULT_RESULTS), help="folder of the records (default: results/)")
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1)),
                    help="local worker processes (default: one per CPU core)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per job (default 1)")
    ap.add_argument("--ray", default=None, metavar="ADDRESS",
                    help="run on a Ray cluster: an address, 'auto', or 'local' for a fresh local instance")
    ap.add_argument("--cache", default=None, help="pretrained-model cache folder (default: hmmlib's)")
    ap.add_argument("--device", default=None, help="torch device of every job (default: CUDA if available)")
    ap.add_argument("--max-units", type=int, default=None, help="stop after this many (size, seed) units")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and its estimated cost; run nothing")
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="progress bar (default: when stderr is a terminal)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.workers < 1 or args.threads < 1:
        print("--workers and --threads must be at least 1.", file=sys.stderr)
        return 2
    if args.dry_run:
        print(describe_plan(args.figure, args.preset, results=args.results))
        est = estimate(args.figure, args.preset, results=args.results, device=args.device)
        kind = "GPU" if est.device.startswith("cuda") else "CPU"
        print(f"\n{args.figure} at preset {args.preset!r}: {est.jobs} jobs, {est.done} done, "
              f"{est.jobs - est.done} to run ({est.pretrainings} pretrainings).")
        print(f"measured on {est.device}: {est.pretrain_step_s * 1e3:.1f} ms per pretraining step, "
              f"{est.tune_step_s * 1e3:.1f} ms per prompt-tuning step.")
        print(f"estimated {est.seconds / 3600:.2f} {kind} hours of busy time (one job per {kind}); "
              f"{est.hours(args.workers):.2f} h wall-clock with {args.workers} workers.")
        return 0
    out = run(args.figure, args.preset, results=args.results, workers=args.workers, ray=args.ray, cache=args.cache,
              threads=args.threads, device=args.device, progress=args.progress, max_units=args.max_units)
    print(f"{args.figure} at preset {args.preset!r}: {out['planned']} jobs, {out['done_before']} already done, "
          f"{out['ran']} run now in {out['seconds']:.0f} s; records: {', '.join(out['records'].values())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
