"""The resumable results pipeline: plan a figure's jobs, skip the finished ones, run the rest on a
local process pool or a Ray cluster, append one validated record per finished job, and verify that
committed records regenerate.

* :func:`run` is idempotent: jobs whose record is already in their own file
  ``results/<preset>/<figure>.jsonl`` are skipped, so a rerun of a finished grid does nothing and a run
  killed halfway resumes where it stopped. It holds the lock of every file it writes (a second pipeline
  is refused), writes records from this process only (workers return them), one flushed line each, and
  rewrites a complete grid sorted by job id (:func:`hmmlib.experiments.records.compact`). A record is
  replaced only when asked (``rerun``), and the result says which. Records for the repository's
  ``results/repro/`` need a clean work tree (``force_dirty`` to override, recorded as ``git_clean: false``).
* Every worker fixes torch to ``threads`` intra-op threads (default 1), so a job's numbers do not
  depend on how many workers ran beside it, nor on whether it ran in a pool or on Ray. They do depend on
  the CPU's kernel level (``versions.cpu_capability``: AVX2 and AVX-512 kernels round differently, and a
  training run amplifies the last bit), so a record regenerates bit for bit on a machine of the same
  kernel level; :func:`verify` says when the levels differ.
* :func:`verify` re-runs committed records in a scratch folder (fresh pretraining) and lists every
  metric and config digest that differs (:class:`Mismatch`); ``python -m hmmlib.experiments.reproduce
  verify`` prints them and fails on one.
* :func:`estimate` measures a pretraining and a tuning step of the preset's model on this machine and
  turns the plan into CPU (or GPU) hours.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import random
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..display import progress_bar
from .jobs import Job, Unit, all_figures, plan, run_unit, units, usable_device
from .locate import default_results
from .presets import Preset
from .records import (GIT_STATE_ENV, append_record, compact, config_digest, git_state, load_records, locked,
                      replace_records)
from .repro_presets import ReproGrid, resolve_preset

__all__ = ["results_path", "status", "describe_plan", "measure_step_times", "run", "estimate", "Estimate", "DEFAULT_RESULTS",
           "verify", "Mismatch", "compare_records", "select_for_verify", "format_mismatches", "dirty_refusal"]

DEFAULT_RESULTS = default_results()


def results_path(results: str | os.PathLike, preset: str, figure: str) -> Path:
    """Where the records of ``figure`` at ``preset`` live: ``<results>/<preset>/<figure>.jsonl``."""
    return Path(results) / preset / f"{figure}.jsonl"


def status(jobs: list[Job], results: str | os.PathLike) -> tuple[list[Job], list[Job]]:
    """``(done, pending)``: the jobs whose record is in their own file
    (``<results>/<preset>/<figure>.jsonl``), and the others. Each file is read with
    :func:`~hmmlib.experiments.records.load_records`, which refuses a record of another figure or preset
    and two different records of one job, so a record in the wrong file is an error, not a job done."""
    have: dict[tuple[str, str], set[str]] = {}
    for fig, p in sorted({(j.figure, j.preset) for j in jobs}):
        have[fig, p] = {r["id"] for r in load_records(results_path(results, p, fig), figure=fig, preset=p)}
    done = [j for j in jobs if j.id in have[j.figure, j.preset]]
    return done, [j for j in jobs if j.id not in have[j.figure, j.preset]]


def _check_results(results: str | os.PathLike) -> Path:
    path = Path(results)
    if path.exists() and not path.is_dir():
        raise ValueError(f"--results {str(results)!r} is a file; it must be a folder (records go to "
                         f"<results>/<preset>/<figure>.jsonl).")
    return path


def dirty_refusal(preset_name: str, results: str | os.PathLike) -> str | None:
    """Why records of ``preset_name`` may not be written to ``results`` from this work tree, or ``None``:
    the committed ``results/repro/`` records must come from a clean tree (:func:`~hmmlib.experiments.records.git_state`)."""
    if preset_name != "repro" or Path(results).resolve() != DEFAULT_RESULTS.resolve():
        return None
    commit, clean, changed = git_state()
    if clean is False:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        return (f"the work tree has uncommitted changes ({shown}); records in {DEFAULT_RESULTS / 'repro'} must say "
                f"which commit produced them. Commit first, or pass --force-dirty (force_dirty=True) to record "
                f"git_clean: false.")
    return None


def _progress(total: int, enabled: bool | None):
    if enabled is None:
        enabled = sys.stderr.isatty()
    return progress_bar(total, enabled=bool(enabled) and total > 0, desc="jobs", unit="job", mininterval=1.0,
                        smoothing=0.1)


def _worker_init(threads: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    torch.set_num_threads(threads)


def _run_local(todo: list[Unit], preset, grid, workers: int, cache, threads, device,
               on_done: Callable[[list[dict]], None]) -> None:
    if workers <= 1:
        for u in todo:
            on_done(run_unit(u, preset, grid, cache=cache, threads=threads, device=device))
        return
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                             initargs=(threads,)) as pool:
        futures = {pool.submit(run_unit, u, preset, grid, cache=cache, threads=threads, device=device) for u in todo}
        while futures:
            finished, futures = wait(futures, return_when=FIRST_COMPLETED)
            for f in finished:
                on_done(f.result())


def _run_ray(todo: list[Unit], preset, grid, address: str, cache, threads, device, workers: int,
             on_done: Callable[[list[dict]], None]) -> None:
    try:
        import ray
    except ImportError:
        raise ValueError("--ray needs Ray: pip install -e '.[cluster]' (Ray is an optional extra).") from None
    started = not ray.is_initialized()
    if started:
        if address == "local":
            ray.init(num_cpus=max(1, workers), include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        task = ray.remote(num_cpus=threads or 1, num_gpus=1 if gpus and device != "cpu" else 0)(run_unit)
        refs = [task.remote(u, preset, grid, cache=cache, threads=threads, device=device) for u in todo]
        while refs:
            finished, refs = ray.wait(refs, num_returns=1)
            on_done(ray.get(finished[0]))
    finally:
        if started:
            ray.shutdown()


def run(figure: str, preset: str | Preset = "ci", *, grid: ReproGrid | None = None,
        results: str | os.PathLike = DEFAULT_RESULTS, workers: int = 1, ray: str | None = None,
        cache: str | os.PathLike | None = None, threads: int = 1, device: str | None = None,
        progress: bool | None = None, max_units: int | None = None,
        only: Callable[[Job], bool] | None = None, rerun: Callable[[Job], bool] | None = None,
        force_dirty: bool = False) -> dict[str, Any]:
    """Run the pending jobs of ``figure`` at ``preset`` and append their records under ``results``.

    Args:
        grid: override the preset's grid (e.g. a smaller one in a test).
        workers: local worker processes (1: in this process); with ``ray`` (an address, ``"auto"``, or
            ``"local"`` for a fresh local instance) the jobs go to Ray instead, one GPU each where the
            cluster has GPUs.
        cache: the pretrained-model cache folder; threads: torch threads per job.
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA if available); a device this machine lacks is a
            ``ValueError`` (:func:`~hmmlib.experiments.jobs.usable_device`).
        max_units: stop after this many units (jobs sharing a model), e.g. to run a grid in slices.
        only: run only the jobs for which this returns True.
        rerun: run again the finished jobs for which this returns True and *replace* their records
            (the only way a record is overwritten; the returned ``replaced`` lists them).
        force_dirty: allow writing ``results/repro/`` from a work tree with uncommitted changes.

    The run holds the lock of every record file it writes (:func:`~hmmlib.experiments.records.locked`):
    a second pipeline on the same files gets a ``RecordsBusyError``.

    Returns ``{"planned", "done_before", "ran", "replaced", "records": path per figure, "seconds"}``.
    """
    if max_units is not None and (isinstance(max_units, bool) or not isinstance(max_units, int) or max_units < 0):
        raise ValueError(f"max_units must be a whole number >= 0 (or None for all); got {max_units!r}.")
    if not isinstance(workers, int) or workers < 1 or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"workers and threads must be whole numbers >= 1; got {workers!r} and {threads!r}.")
    _check_results(results)
    usable_device(device)
    p, g = resolve_preset(preset, grid)
    why = dirty_refusal(p.name, results)
    if why and not force_dirty:
        raise ValueError(why)
    jobs = plan(figure, p, g)
    if only is not None:
        jobs = [j for j in jobs if only(j)]
    files = sorted({results_path(results, j.preset, j.figure) for j in jobs})
    with ExitStack() as stack:
        for f in files:
            stack.enter_context(locked(f))
        done, pending = status(jobs, results)
        again = {j.id for j in done if rerun is not None and rerun(j)}
        todo = units(pending + [j for j in done if j.id in again])
        if max_units is not None:
            todo = todo[:max_units]
        bar = _progress(sum(len(u.methods) for u in todo), progress)
        t0, ran, replaced = time.perf_counter(), 0, []
        cache = None if cache is None else str(cache)

        def on_done(recs: list[dict]) -> None:
            nonlocal ran
            commit, clean, _ = git_state()
            for r in recs:
                r["versions"].update(git_commit=commit, git_clean=clean)  # e.g. from a Ray worker elsewhere
                path = results_path(results, r["preset"], r["figure"])
                if r["id"] in again:
                    replaced.extend(replace_records(path, [r]))
                else:
                    append_record(path, r)
                ran += 1
            if bar is not None:
                bar.update(len(recs))

        before = os.environ.get(GIT_STATE_ENV)
        os.environ[GIT_STATE_ENV] = json.dumps(git_state())  # workers record the tree this run started from
        try:
            if ray:
                _run_ray(todo, p, g, ray, cache, threads, device, workers, on_done)
            else:
                _run_local(todo, p, g, workers, cache, threads, device, on_done)
        finally:
            if before is None:
                os.environ.pop(GIT_STATE_ENV, None)
            else:
                os.environ[GIT_STATE_ENV] = before
            if bar is not None:
                bar.close()
        paths = {}
        for fig in sorted({j.figure for j in jobs}):
            path = results_path(results, p.name, fig)
            paths[fig] = str(path)
            fig_jobs = [j for j in jobs if j.figure == fig]
            if path.exists() and not status(fig_jobs, results)[1]:
                compact(path)
    return {"planned": len(jobs), "done_before": len(done), "ran": ran, "replaced": sorted(replaced),
            "records": paths, "seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------- verify
@dataclass(frozen=True)
class Mismatch:
    """A committed record that the code does not regenerate: ``field`` (a metric as ``metrics.a.b``,
    ``config_sha256``, or ``record`` when the job is missing) with its ``committed`` and ``regenerated`` values."""

    id: str
    field: str
    committed: Any
    regenerated: Any


def _flat(d: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}"))
    return out


def compare_records(committed: dict, regenerated: dict) -> list[Mismatch]:
    """Every metric (exactly, nested ``extra`` included) and the config digest
    (:func:`~hmmlib.experiments.records.config_digest`) of two records of one job; where they differ,
    also the commit, CPU kernel level and torch version when those differ (possible causes)."""
    out = []
    a, b = _flat(committed["metrics"], "metrics"), _flat(regenerated["metrics"], "metrics")
    missing = object()
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, missing), b.get(k, missing)
        if va is missing or vb is missing or va != vb:
            out.append(Mismatch(committed["id"], k, None if va is missing else va, None if vb is missing else vb))
    da, db = config_digest(committed), config_digest(regenerated)
    if da != db:
        out.append(Mismatch(committed["id"], "config_sha256", da[:12], db[:12]))
    if out:  # what may explain it: another commit, or CPU kernels that round differently
        for k in ("git_commit", "cpu", "cpu_capability", "torch"):
            va, vb = committed["versions"].get(k), regenerated["versions"].get(k)
            if va is not None and va != vb:
                out.append(Mismatch(committed["id"], f"versions.{k}", va, vb))
    return out


def select_for_verify(records: list[dict], *, jobs: int | None = None, sample_seed: int = 0,
                      ids: list[str] | None = None) -> list[dict]:
    """Which committed ``records`` :func:`verify` re-runs: those of ``ids``; else, with ``jobs``, a random
    sample of ``jobs`` per method drawn with ``random.Random(sample_seed)``; else all."""
    by_id = {r["id"]: r for r in records}
    if ids:
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise ValueError(f"no committed record has id {unknown[0]!r} ({len(unknown)} unknown); ids look like "
                             f"{next(iter(by_id), 'fig-b1/ci/K04/s00/head')!r}.")
        return [by_id[i] for i in sorted(set(ids))]
    if jobs is None:
        return sorted(records, key=lambda r: r["id"])
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs (records per method to verify) must be a whole number >= 1; got {jobs!r}.")
    rng = random.Random(sample_seed)
    out = []
    for m in sorted({r["method"] for r in records}):
        mine = sorted((r for r in records if r["method"] == m), key=lambda r: r["id"])
        out += rng.sample(mine, min(jobs, len(mine)))
    return sorted(out, key=lambda r: r["id"])


def verify(figure: str, preset: str | Preset = "ci", *, grid: ReproGrid | None = None,
           results: str | os.PathLike = DEFAULT_RESULTS, jobs: int | None = None, sample_seed: int = 0,
           ids: list[str] | None = None, workers: int = 1, cache: str | os.PathLike | None = None,
           threads: int = 1, device: str | None = None, progress: bool | None = False) -> list[Mismatch]:
    """Re-run committed records of ``figure`` at ``preset`` (all, a sample of ``jobs`` per method, or ``ids``:
    :func:`select_for_verify`) in a scratch folder and compare them with :func:`compare_records`.

    Returns the mismatches (``[]``: every selected record regenerates exactly). The committed files are
    only read. A record whose job is no longer in the plan is a mismatch of field ``record``. Models are
    pretrained again in the scratch folder unless ``cache`` is given (a cached model would be trusted,
    not verified)."""
    p, g = resolve_preset(preset, grid)
    figs = all_figures() if figure == "all" else ("fig-b1" if figure == "fig-b2" else figure,)
    out: list[Mismatch] = []
    for fig in figs:
        path = results_path(results, p.name, fig)
        if not path.exists():
            if figure == "all":
                continue
            raise ValueError(f"no committed records at {path}; nothing to verify.")
        chosen = select_for_verify(load_records(path, figure=fig, preset=p.name), jobs=jobs, sample_seed=sample_seed,
                                   ids=ids)
        planned = {j.id for j in plan(fig, p, g)}
        for r in chosen:
            if r["id"] not in planned:
                out.append(Mismatch(r["id"], "record", "committed", "not in the current plan"))
        want = {r["id"] for r in chosen if r["id"] in planned}
        if not want:
            continue
        with tempfile.TemporaryDirectory(prefix="hmmbook-verify-") as tmp:
            run(fig, p, grid=g, results=tmp, workers=workers, cache=cache if cache is not None else Path(tmp) / "cache",
                threads=threads, device=device, progress=progress, only=lambda j: j.id in want)
            fresh = {r["id"]: r for r in load_records(results_path(tmp, p.name, fig))}
        for r in chosen:
            if r["id"] in want:
                out += compare_records(r, fresh[r["id"]])
    return out


def format_mismatches(mismatches: list[Mismatch]) -> str:
    """A table of ``mismatches``: id, field, committed value, regenerated value."""
    if not mismatches:
        return "every record regenerates exactly."
    rows = [("id", "field", "committed", "regenerated")] + [(m.id, m.field, repr(m.committed), repr(m.regenerated))
                                                           for m in mismatches]
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows)


# --------------------------------------------------------------------------- cost estimates
@dataclass(frozen=True)
class Estimate:
    """The plan's cost: ``jobs``, ``done``, ``pretrainings`` still to run, measured seconds per
    pretraining step and per tuning step, the estimated busy seconds, and the device measured on."""

    jobs: int
    done: int
    pretrainings: int
    pretrain_step_s: float
    tune_step_s: float
    seconds: float
    device: str

    def hours(self, workers: int = 1) -> float:
        """Wall-clock hours with ``workers`` jobs at a time (perfect packing)."""
        return self.seconds / 3600 / max(1, workers)


def _time_steps(fn: Callable[[], None], repeats: int = 3, cpu: bool = True) -> float:
    """Seconds per call of ``fn`` after a warm-up call: CPU time of this process (with one torch
    thread, the wall time on a dedicated core, and unaffected by other processes on a shared
    machine) when ``cpu``, else wall time (for a GPU)."""
    clock = time.process_time if cpu else time.perf_counter
    fn()  # warm-up
    t0 = clock()
    for _ in range(repeats):
        fn()
    return (clock() - t0) / repeats


def measure_step_times(preset: Preset, device: str | None = None, threads: int = 1) -> tuple[float, float]:
    """Seconds per pretraining step and per prompt-tuning step (forward and backward through the frozen
    model) of ``preset``'s masked LM, measured on ``device`` with ``threads`` torch threads."""
    from ..lm.pretrain import make_optimizer, mask_tokens, mlm_loss
    from ..lm.transformer import Transformer

    torch.set_num_threads(threads)
    dev = usable_device(device)
    mcfg, tcfg = preset.pretrain.configs(10, "mlm")
    pc = preset.tuning.tune_config("prompt", "transformer")
    g = torch.Generator(device=dev).manual_seed(0)
    model = Transformer(mcfg).to(dev)
    opt = make_optimizer(model, tcfg)
    tokens = torch.randint(10, (tcfg.batch_size, tcfg.seq_len), generator=g, device=dev)

    def pre_step():
        inputs, sel = mask_tokens(tokens, mcfg, tcfg.mlm_probability, g)
        loss = mlm_loss(model, inputs, sel, tokens)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    on_cpu = dev.type == "cpu"
    t_pre = _time_steps(pre_step, cpu=on_cpu)
    L = min(tcfg.seq_len, pc.max_positions or tcfg.seq_len)
    x = torch.randint(10, (pc.batch_size, L - 1 - pc.prompt_len), generator=g, device=dev)
    x[:, 0] = mcfg.mask_id
    prompt = torch.zeros(pc.prompt_len, mcfg.d_model, device=dev, requires_grad=True)
    model.requires_grad_(False)

    def tune_step():
        out = model(x, prompt=prompt, positions=torch.full((x.shape[0], 1), pc.prompt_len, dtype=torch.long,
                                                           device=dev)).probs()[:, 0]
        out.sum().backward()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    return t_pre, _time_steps(tune_step, cpu=on_cpu)


def _tune_steps(preset: Preset, grid: ReproGrid, method: str) -> int:
    sz = preset.tuning
    if method in ("prompt", "prefix", "finetune"):
        steps = sz.tune_config(method, "transformer").num_steps or 0
        return steps * {"prompt": grid.prompt_restarts, "prefix": 2, "finetune": 3}[method]  # MLP; optimizer state
    if method in ("memory_attention",):
        return 1 + sz.transformer_split_sizes[0] // 64  # one pass for the features
    return 0


def estimate(figure: str, preset: str | Preset = "ci", *, grid: ReproGrid | None = None,
             results: str | os.PathLike = DEFAULT_RESULTS, device: str | None = None,
             step_times: tuple[float, float] | None = None, overhead_s: float = 5.0) -> Estimate:
    """The dry run's numbers: pending jobs and their estimated busy seconds, from measured step times
    (or ``step_times = (pretrain_step_s, tune_step_s)``). A pretraining costs ``num_steps`` steps plus
    10% for its evaluations; prompt, prefix and fine-tuning cost their steps at the measured tuning
    step; every job adds ``overhead_s`` (data, exact inference, converged heads)."""
    p, g = resolve_preset(preset, grid)
    dev = str(usable_device(device))
    jobs = plan(figure, p, g)
    done, pending = status(jobs, results)
    t_pre, t_tune = step_times or measure_step_times(p, device)
    n_pre = 0
    for u in units(pending):
        trained = [m for m in u.methods if not (m.startswith("ideal") or m == "closed_form")]
        if trained:
            n_pre += (2 if u.figure == "fig-b3" and any(m in ("memory_attention",) for m in trained)
                      and any(m.startswith("vanilla") for m in trained) else 1)
    secs = n_pre * p.pretrain.train.num_steps * t_pre * 1.1
    secs += sum(_tune_steps(p, g, j.method) * t_tune + overhead_s for j in pending)
    return Estimate(len(jobs), len(done), n_pre, t_pre, t_tune, secs, dev)


def describe_plan(figure: str, preset: str | Preset, *, grid: ReproGrid | None = None,
                  results: str | os.PathLike = DEFAULT_RESULTS) -> str:
    """One line per (figure, size, method): jobs planned and done."""
    p, g = resolve_preset(preset, grid)
    jobs = plan(figure, p, g)
    done, _ = status(jobs, results)
    have = {j.id for j in done}
    rows: dict[tuple, list[int]] = {}
    for j in jobs:
        c = rows.setdefault((j.figure, j.num_states, j.method), [0, 0])
        c[0] += 1
        c[1] += j.id in have
    lines = [f"{'figure':7} {'K':>3} {'method':22} {'done':>9}"]
    lines += [f"{f:7} {K:3d} {m:22} {d:4d}/{n:<4d}" for (f, K, m), (n, d) in sorted(rows.items())]
    return "\n".join(lines)
