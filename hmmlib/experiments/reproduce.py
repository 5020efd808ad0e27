"""Run or verify a figure of Wei, Xie & Ma (2021): ``python -m hmmlib.experiments.reproduce [verify] FIGURE``.

Examples::

    python -m hmmlib.experiments.reproduce fig-b1 --preset repro --workers 2
    python -m hmmlib.experiments.reproduce all --preset paper --dry-run
    python -m hmmlib.experiments.reproduce fig-b3 --preset repro --ray auto
    python -m hmmlib.experiments.reproduce ideal --preset default --rerun closed_form
    python -m hmmlib.experiments.reproduce verify all --preset ci
    python -m hmmlib.experiments.reproduce verify fig-b1 --preset repro --jobs 3 --sample-seed 0

FIGURE is ``fig-b1`` (also Fig. B2's data), ``fig-b2`` (the same jobs), ``fig-b3``, ``ideal``
(chapters 3-4's ideal-model sweep), a registered figure, or ``all``. Finished jobs are skipped, so the
command can be interrupted and rerun; ``--rerun METHOD`` runs a method's finished jobs again and replaces
their records (and says so). Records go to ``<results>/<preset>/<figure>.jsonl``; one pipeline at a time
may write a file. Records for ``results/repro/`` need a clean work tree (or ``--force-dirty``).

``verify`` re-runs committed records (all, ``--jobs N`` per method sampled with ``--sample-seed``, or
``--ids``) in a scratch folder, prints a table of every metric or config digest that differs (id, field,
committed, regenerated) and exits with status 1 on any difference.
"""
from __future__ import annotations

import argparse
import os
import sys

from .jobs import all_figures, plan
from .pipeline import DEFAULT_RESULTS, describe_plan, estimate, format_mismatches, run, verify
from .records import RecordsBusyError
from .repro_presets import REPRO_PRESET_NAMES, resolve_preset

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m hmmlib.experiments.reproduce", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("figure", choices=all_figures() + ("fig-b2", "all"))
    ap.add_argument("--preset", default=None, choices=REPRO_PRESET_NAMES,
                    help="the size preset (default: $HMMBOOK_PRESET, else 'default')")
    ap.add_argument("--results", default=str(DEFAULT_RESULTS), help="folder of the records (default: results/)")
    ap.add_argument("--workers", type=int, default=None,
                    help="local worker processes (default: one per CPU core; verify: 1)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per job (default 1)")
    ap.add_argument("--cache", default=None, help="pretrained-model cache folder (default: hmmlib's)")
    ap.add_argument("--device", default=None, help="torch device of every job (default: CUDA if available)")
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                    help="progress bar (default: when stderr is a terminal)")
    return ap


def _run_parser() -> argparse.ArgumentParser:
    ap = _parser()
    ap.add_argument("--ray", default=None, metavar="ADDRESS",
                    help="run on a Ray cluster: an address, 'auto', or 'local' for a fresh local instance")
    ap.add_argument("--max-units", type=int, default=None, help="stop after this many (size, seed) units (>= 0)")
    ap.add_argument("--rerun", nargs="+", default=None, metavar="METHOD",
                    help="run these methods' finished jobs again and replace their records")
    ap.add_argument("--force-dirty", action="store_true",
                    help="write results/repro/ records from a work tree with uncommitted changes")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and its estimated cost; run nothing")
    return ap


def _verify_parser() -> argparse.ArgumentParser:
    ap = _parser()
    ap.prog += " verify"
    ap.add_argument("--jobs", type=int, default=None, help="verify a random sample of this many records per method")
    ap.add_argument("--sample-seed", type=int, default=0, help="seed of that sample (default 0)")
    ap.add_argument("--ids", nargs="+", default=None, help="verify these record ids")
    return ap


def _preset(ap: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    if args.preset is not None:
        return args.preset
    env = os.environ.get("HMMBOOK_PRESET")
    if not env:
        return "default"
    if env.strip().lower() not in REPRO_PRESET_NAMES:
        ap.error(f"HMMBOOK_PRESET={env!r} is not a preset; set it to one of {', '.join(REPRO_PRESET_NAMES)} "
                 f"(or unset it), or pass --preset.")
    return env.strip().lower()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verifying = bool(argv) and argv[0] == "verify"
    ap = _verify_parser() if verifying else _run_parser()
    args = ap.parse_args(argv[1:] if verifying else argv)
    preset = _preset(ap, args)
    workers = args.workers if args.workers is not None else (1 if verifying else max(1, os.cpu_count() or 1))
    if workers < 1 or args.threads < 1:
        ap.error("--workers and --threads must be at least 1.")
    try:
        if verifying:
            bad = verify(args.figure, preset, results=args.results, jobs=args.jobs, sample_seed=args.sample_seed,
                         ids=args.ids, workers=workers, cache=args.cache, threads=args.threads, device=args.device,
                         progress=args.progress)
            print(f"verify {args.figure} at preset {preset!r}: {len(bad)} mismatch(es)")
            print(format_mismatches(bad))
            return 1 if bad else 0
        if args.dry_run:
            print(describe_plan(args.figure, preset, results=args.results))
            est = estimate(args.figure, preset, results=args.results, device=args.device)
            kind = "GPU" if est.device.startswith("cuda") else "CPU"
            print(f"\n{args.figure} at preset {preset!r}: {est.jobs} jobs, {est.done} done, "
                  f"{est.jobs - est.done} to run ({est.pretrainings} pretrainings).")
            print(f"measured on {est.device}: {est.pretrain_step_s * 1e3:.1f} ms per pretraining step, "
                  f"{est.tune_step_s * 1e3:.1f} ms per prompt-tuning step.")
            print(f"estimated {est.seconds / 3600:.2f} {kind} hours of busy time (one job per {kind}); "
                  f"{est.hours(workers):.2f} h wall-clock with {workers} workers.")
            return 0
        rerun = None
        if args.rerun:
            methods = {j.method for j in plan(args.figure, *resolve_preset(preset))}
            unknown = sorted(set(args.rerun) - methods)
            if unknown:
                raise ValueError(f"--rerun {' '.join(unknown)}: {args.figure} has no such method; its methods are "
                                 f"{', '.join(sorted(methods))}.")
            rerun = lambda j, ms=frozenset(args.rerun): j.method in ms  # noqa: E731
        out = run(args.figure, preset, results=args.results, workers=workers, ray=args.ray, cache=args.cache,
                  threads=args.threads, device=args.device, progress=args.progress, max_units=args.max_units,
                  rerun=rerun, force_dirty=args.force_dirty)
    except (ValueError, RecordsBusyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.figure} at preset {preset!r}: {out['planned']} jobs, {out['done_before']} already done, "
          f"{out['ran']} run now in {out['seconds']:.0f} s; records: {', '.join(out['records'].values())}")
    if out["replaced"]:
        print(f"replaced {len(out['replaced'])} record(s) (--rerun): {', '.join(out['replaced'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
