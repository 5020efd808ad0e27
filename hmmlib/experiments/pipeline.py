"""The resumable results pipeline: plan a figure's jobs, skip the finished ones, run the rest on a
local process pool or a Ray cluster, and append one validated record per finished job.

* :func:`run` is idempotent: jobs whose record is already in ``results/<preset>/<figure>.jsonl`` are
  skipped, so a rerun of a finished grid does nothing and a run killed halfway resumes where it stopped.
  Records are written by this process only (workers return them), one flushed line each; when the
  grid is complete the file is rewritten sorted by job id (:func:`hmmlib.experiments.records.compact`).
* Every worker fixes torch to ``threads`` intra-op threads (default 1), so a job's numbers do not
  depend on how many workers ran beside it, nor on whether it ran in a pool or on Ray.
* :func:`estimate` measures a pretraining and a tuning step of the preset's model on this machine and
  turns the plan into CPU (or GPU) hours.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from .jobs import Job, Unit, plan, run_unit, units
from .presets import Preset
from .records import append_record, compact, load_records
from .repro_presets import ReproGrid, resolve_preset

__all__ = ["results_path", "status", "describe_plan", "measure_step_times", "run", "estimate", "Estimate", "DEFAULT_RESULTS"]

DEFAULT_RESULTS = __import__("hmmlib.experiments.locate", fromlist=["default_results"]).default_results()


def results_path(results: str | os.PathLike, preset: str, figure: str) -> Path:
    """Where the records of ``figure`` at ``preset`` live: ``<results>/<preset>/<figure>.jsonl``."""
    return Path(results) / preset / f"{figure}.jsonl"


def status(jobs: list[Job], results: str | os.PathLike) -> tuple[list[Job], list[Job]]:
    """``(done, pending)``: the jobs with a record under ``results``, and the others."""
    have: set[str] = set()
    for fig in sorted({j.figure for j in jobs}):
        for p in sorted({j.preset for j in jobs}):
            have |= {r["id"] for r in load_records(results_path(results, p, fig))}
    done = [j for j in jobs if j.id in have]
    return done, [j for j in jobs if j.id not in have]


def _progress(total: int, enabled: bool | None):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled or total == 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="jobs", unit="job", mininterval=1.0, smoothing=0.1)


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
        only: Callable[[Job], bool] | None = None) -> dict[str, Any]:
    """Run the pending jobs of ``figure`` at ``preset`` and append their records under ``results``.

    Args:
        grid: override the preset's grid (e.g. a smaller one in a test).
        workers: local worker processes (1: in this process); with ``ray`` (an address, ``"auto"``, or
            ``"local"`` for a fresh local instance) the jobs go to Ray instead, one GPU each where the
            cluster has GPUs.
        cache: the pretrained-model cache folder; threads: torch threads per job.
        max_units: stop after this many units (jobs sharing a model), e.g. to run a grid in slices.
        only: run only the jobs for which this returns True.

    Returns ``{"planned", "done_before", "ran", "records": path per figure, "seconds"}``.
    """
    p, g = resolve_preset(preset, grid)
    jobs = plan(figure, p, g)
    if only is not None:
        jobs = [j for j in jobs if only(j)]
    done, pending = status(jobs, results)
    todo = units(pending)
    if max_units is not None:
        todo = todo[:max_units]
    bar = _progress(sum(len(u.methods) for u in todo), progress)
    t0, ran = time.perf_counter(), 0
    cache = None if cache is None else str(cache)

    def on_done(recs: list[dict]) -> None:
        nonlocal ran
        for r in recs:
            append_record(results_path(results, r["preset"], r["figure"]), r)
            ran += 1
        if bar is not None:
            bar.update(len(recs))

    try:
        if ray:
            _run_ray(todo, p, g, ray, cache, threads, device, workers, on_done)
        else:
            _run_local(todo, p, g, workers, cache, threads, device, on_done)
    finally:
        if bar is not None:
            bar.close()
    paths = {}
    for fig in sorted({j.figure for j in jobs}):
        path = results_path(results, p.name, fig)
        paths[fig] = str(path)
        fig_jobs = [j for j in jobs if j.figure == fig]
        if path.exists() and not status(fig_jobs, results)[1]:
            compact(path)
    return {"planned": len(jobs), "done_before": len(done), "ran": ran, "records": paths,
            "seconds": time.perf_counter() - t0}


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
    from ..lm.device import default_device
    from ..lm.pretrain import make_optimizer, mask_tokens, mlm_loss
    from ..lm.transformer import Transformer

    torch.set_num_threads(threads)
    dev = torch.device(device) if device else default_device()
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
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
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
