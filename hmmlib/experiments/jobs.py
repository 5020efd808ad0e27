r"""The jobs of the reproduction grid and what one of them computes.

A *job* is one (figure, size, seed, method) cell of the paper's grid. Jobs that share a figure, size
and seed share the HMM, corpus, pretrained model and task (the paper's protocol, the authors' ``scripts/run_exps_seed.sh``:
a new HMM, corpus, model and task per seed), so they run together as one *unit*
(:func:`run_unit`), which pretrains (or loads from the model cache) once and returns one record per
pending method.

Methods (``model`` is ``trained`` or ``ideal``):

* ``fig-b1`` (Fig. B1/B2; HMM ``paper_hmm(K, 10, seed=s)``): ``head`` (converged logistic regression
  on the frozen masked LM's softmax at the ``[MASK]``), ``head_paper`` (the paper's protocol: AdamW,
  lr 0.01, 100 epochs of batch 128, 500 warmup steps, linear decay), ``prompt`` (from the converged
  head, ``prompt_restarts`` restarts chosen on validation), ``prefix`` and ``finetune`` (the first
  ``extra_seeds`` seeds); on the ideal model, same HMM and task: ``ideal_head`` (converged),
  ``ideal_head_adamw`` (the chapters' AdamW head) and ``ideal_prompt`` (from the converged head).
* ``fig-b3`` (memory HMM ``paper_memory_hmm(n, 4, 10, seed=s)`` against the vanilla ``paper_hmm(4n, 10,
  seed=s)``): ``memory_attention``, ``vanilla_head`` (converged), ``vanilla_head_paper`` and the ideal
  ``ideal_memory_attention``, ``ideal_vanilla_head``.
* ``ideal`` (chapters 3-4's sweep): ``ideal_head``, ``ideal_head_adamw``, ``ideal_prompt``, ``closed_form``.
"""
from __future__ import annotations

import importlib
import platform
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ..adapt.api import make_tuner, tune_and_evaluate
from ..adapt.configs import HeadConfig
from ..adapt.tasks import paper_task_and_splits, sub_seed
from ..hmm.generators import paper_hmm
from ..hmm.inference import masked_conditional
from ..lm.cache import pretrained_model
from ..lm.device import default_device
from ..lm.inputs import InputLayout
from .presets import Preset
from .records import ACCURACY_METRICS, SCHEMA_VERSION, config_digest, register_figure_metrics, versions
from .repro_presets import ReproGrid
from .runners import closed_form_accuracy, closed_form_extra

__all__ = ["FIGURES", "FigureSpec", "register_figure", "figure_specs", "all_figures", "FIG_B1_METHODS", "EXTRA_METHODS", "FIG_B3_METHODS", "IDEAL_METHODS", "Job", "Unit",
           "plan", "units", "run_unit", "usable_device"]

FIGURES = ("fig-b1", "fig-b3", "ideal")
FIG_B1_METHODS = ("head", "head_paper", "prompt", "ideal_head", "ideal_head_adamw", "ideal_prompt")
EXTRA_METHODS = ("prefix", "finetune")
FIG_B3_METHODS = ("memory_attention", "vanilla_head", "vanilla_head_paper", "ideal_memory_attention",
                  "ideal_vanilla_head")
IDEAL_METHODS = ("ideal_head", "ideal_head_adamw", "ideal_prompt", "closed_form")
NUM_SYMBOLS = 10


@dataclass(frozen=True, order=True)
class Job:
    """One cell: ``figure``, ``num_states`` (fig-b3: ``4 n_mem``), ``seed``, ``method``, at ``preset``."""

    figure: str
    num_states: int
    seed: int
    method: str
    preset: str

    @property
    def id(self) -> str:
        return f"{self.figure}/{self.preset}/K{self.num_states:02d}/s{self.seed:02d}/{self.method}"

    @property
    def model(self) -> str:
        return "ideal" if self.method.startswith("ideal") or self.method == "closed_form" else "trained"


@dataclass(frozen=True)
class Unit:
    """Jobs sharing a figure, size and seed (one HMM, corpus, model and task)."""

    figure: str
    num_states: int
    seed: int
    methods: tuple[str, ...]
    preset: str

    def jobs(self) -> list[Job]:
        return [Job(self.figure, self.num_states, self.seed, m, self.preset) for m in self.methods]


# --------------------------------------------------------------------------- figures defined elsewhere
@dataclass(frozen=True)
class FigureSpec:
    """A figure of the pipeline defined outside this module.

    Attributes:
        plan: ``plan(preset, grid) -> list[Job]``, every job of the figure at ``preset``.
        run: ``run(unit, preset, grid, cache, device) -> (rows, pretrain_s, pretrain_cpu_s)`` with one row
            ``(method, metrics, configs, seeds, job_s, job_cpu_s)`` per method of ``unit`` (as ``_b1_unit``).
        metrics: the metric fields every record of the figure carries.
        description: one line for ``--help``.
    """

    plan: Callable[[Preset, ReproGrid], list[Job]]
    run: Callable[..., tuple[list, float | None, float | None]]
    metrics: tuple[str, ...] = ACCURACY_METRICS
    description: str = ""


_SPECS: dict[str, FigureSpec] = {}

#: Modules that define figures with :func:`register_figure` (imported on first use).
FIGURE_MODULES: tuple[str, ...] = ("hmmlib.experiments.attribution", "hmmlib.experiments.prefix_jobs")


def register_figure(name: str, spec: FigureSpec) -> None:
    """Add figure ``name`` to the pipeline (its records: ``results/<preset>/<name>.jsonl``)."""
    if name in FIGURES or name in ("fig-b2", "all"):
        raise ValueError(f"figure {name!r} is built in; choose another name.")
    _SPECS[name] = spec
    register_figure_metrics(name, spec.metrics)


def figure_specs() -> dict[str, FigureSpec]:
    """The registered figures beyond :data:`FIGURES`, after importing :data:`FIGURE_MODULES`."""
    for mod in FIGURE_MODULES:
        importlib.import_module(mod)
    return dict(_SPECS)


def all_figures() -> tuple[str, ...]:
    """Every figure the pipeline can run: :data:`FIGURES`, then the registered ones."""
    return FIGURES + tuple(sorted(figure_specs()))


def plan(figure: str, preset: Preset, grid: ReproGrid) -> list[Job]:
    """Every job of ``figure`` (``fig-b1``, ``fig-b2`` (= fig-b1's jobs), ``fig-b3``, ``ideal``, a registered
    figure, or ``all``)."""
    if figure == "all":
        return [j for f in all_figures() for j in plan(f, preset, grid)]
    if figure == "fig-b2":
        figure = "fig-b1"
    specs = figure_specs()
    if figure in specs:
        return sorted(specs[figure].plan(preset, grid))
    if figure not in FIGURES:
        raise ValueError(f"unknown figure {figure!r}; choose one of {', '.join(all_figures() + ('fig-b2', 'all'))}.")
    jobs = []
    if figure == "fig-b1":
        for K in grid.fig_b1_sizes:
            for s in range(grid.fig_b1_seeds):
                ms = FIG_B1_METHODS + (EXTRA_METHODS if s < grid.extra_seeds else ())
                jobs += [Job(figure, K, s, m, preset.name) for m in ms]
    elif figure == "fig-b3":
        for n in grid.fig_b3_num_values:
            for s in range(grid.fig_b3_seeds):
                jobs += [Job(figure, preset.memory.num_syntax * n, s, m, preset.name) for m in FIG_B3_METHODS]
    else:
        for K in grid.ideal_sizes:
            for s in range(grid.ideal_seeds):
                jobs += [Job(figure, K, s, m, preset.name) for m in IDEAL_METHODS]
    return sorted(jobs)


def units(jobs: list[Job]) -> list[Unit]:
    """Group ``jobs`` by (figure, size, seed), in a fixed order: seed by seed (so a run stopped early
    has every size at its first seeds), the ideal sweep last, and the largest size first within a seed
    (to balance a pool)."""
    groups: dict[tuple, list[str]] = {}
    for j in sorted(jobs):
        groups.setdefault((j.figure, j.num_states, j.seed, j.preset), []).append(j.method)
    out = [Unit(f, K, s, tuple(ms), p) for (f, K, s, p), ms in groups.items()]
    return sorted(out, key=lambda u: (u.figure != "ideal", -u.seed, u.num_states, u.figure), reverse=True)


# --------------------------------------------------------------------------- one unit
def _hmm_param_count(hmm) -> int:
    return int(sum(t.numel() for t in (hmm.pi, hmm.A, hmm.W)))


def _metrics(res: dict, *, trainable: int, total: int, pos0_tv: float | None, extra: dict) -> dict:
    return {"test_accuracy": float(res["test"]["accuracy"]),
            "val_accuracy": float(res["val"]["accuracy"]) if "val" in res else None,
            "train_accuracy": float(res["train"]["accuracy"]), "majority_rate": float(res["test"]["majority_rate"]),
            "pos0_tv": pos0_tv, "trainable_parameters": int(trainable), "total_parameters": int(total),
            "extra": extra}


def _tune_job(model, tc, splits: dict, *, pos0_tv, extra: dict) -> dict:
    """Metrics of :func:`~hmmlib.adapt.tune_and_evaluate` with ``tc``; a converged head adds its penalty path, a
    prompt its restarts and the converged head it started from."""
    r = tune_and_evaluate(model, tc, splits)
    extra = dict(extra)
    if "head" in r:
        h = r["head"]
        extra.update({k: h[k] for k in ("l2", "objective", "grad_norm", "iterations")}, converged=bool(h["converged"]),
                     val_by_l2={f"{k:.0e}": v for k, v in h["accuracy_by_l2"]["val"].items()},
                     test_by_l2={f"{k:.0e}": v for k, v in h["accuracy_by_l2"]["test"].items()})
    if "restarts" in r:
        start = r["start_head"]
        extra.update(best_restart=r["best_restart"], disagreement=r["disagreement"], test_spread=r["test_spread"],
                     restart_val=[x["val"]["accuracy"] for x in r["restarts"]],
                     restart_test=[x["test"]["accuracy"] for x in r["restarts"]],
                     head_test_accuracy=None if start is None else start["test"]["accuracy"])
    return _metrics(r, trainable=r["parameters"]["trainable"], total=r["parameters"]["total"], pos0_tv=pos0_tv,
                    extra=extra)


def _pos0_test_tv(model, hmm, test, max_positions: int | None) -> float:
    """Mean TV between the model's ``[MASK]`` distribution and the exact :math:`G` given the same
    (truncated) tokens, on the test inputs."""
    q = make_tuner(model, HeadConfig(max_positions=max_positions)).features(test).detach().cpu().double()
    n = InputLayout(model.cfg, 0, max_positions).max_tokens
    p = masked_conditional(hmm, test.x[:, :n]).double().cpu()
    return float(0.5 * (p - q).abs().sum(1).mean())


def _paper_head(seed: int, max_positions: int | None) -> HeadConfig:
    """The paper's head protocol (AdamW, lr 0.01, 100 epochs of batch 128, 500 warmup steps, linear decay)."""
    return HeadConfig.paper(seed=seed, max_positions=max_positions, log_every=10**9)


def _pretrained(hmm, preset: Preset, seed: int, cache: str | None, device) -> tuple[Any, float, dict]:
    t0, c0 = time.perf_counter(), time.process_time()
    mcfg, tcfg = preset.pretrain.configs(NUM_SYMBOLS, "mlm", seed=seed)
    res = pretrained_model(hmm, mcfg, tcfg, cache=cache, device=device, progress=False)
    info = {"pretrain_s": time.perf_counter() - t0, "pretrain_cpu_s": time.process_time() - c0}
    last = res.history[-1] if res.history else {}
    return res, last.get("pos0_tv"), {"model": mcfg.to_dict(), "pretrain": tcfg.to_dict(), **info}


def _b1_unit(unit: Unit, preset: Preset, grid: ReproGrid, cache, device) -> list[tuple[str, dict, dict, dict, float]]:
    sz, K, s = preset.tuning, unit.num_states, unit.seed
    hmm = paper_hmm(K, NUM_SYMBOLS, seed=s)
    task_seed = sub_seed(s, K, 1)
    if unit.figure == "ideal":
        split_sizes, task_seed = sz.split_sizes, sub_seed(s, K)  # chapters 3-4's ideal sweep
    else:
        split_sizes = sz.transformer_split_sizes
    task, splits, tries = paper_task_and_splits(hmm, seed=task_seed, sizes=split_sizes, seq_len=sz.seq_len)
    seeds = {"hmm": s, "task": task_seed, "task_tries": tries}
    base_cfg = {"split_sizes": list(split_sizes), "seq_len": sz.seq_len, "num_symbols": NUM_SYMBOLS}
    out = []
    model, pos0, pre_cfg = None, None, {}
    for m in unit.methods:
        t0, c0 = time.perf_counter(), time.process_time()
        cfg: dict = dict(base_cfg)
        if m == "closed_form":  # b = (W^+)^T mu
            res = {k: {"accuracy": closed_form_accuracy(hmm, task, ds), "majority_rate": ds.majority_rate}
                   for k, ds in splits.items()}
            met = _metrics(res, trainable=0, total=_hmm_param_count(hmm), pos0_tv=None,
                           extra=closed_form_extra(hmm, task))
        elif m.startswith("ideal"):
            tc = {"ideal_head": sz.tune_config("head", "ideal", seed=s),
                  "ideal_head_adamw": sz.tune_config("head", "ideal", seed=s, solver="adamw"),
                  "ideal_prompt": sz.tune_config("prompt", "ideal", seed=s, restarts=grid.prompt_restarts)}[m]
            if m != "ideal_head":  # the converged head's records carry its path, not its config
                cfg["tune"] = tc.to_dict()
            met = _tune_job(hmm, tc, splits, pos0_tv=None, extra={})
        else:
            if model is None:
                res_pt, pos0, pre_cfg = _pretrained(hmm, preset, s, cache, device)
                model = res_pt.model
                head_pos = sz.tune_config("head", "transformer").max_positions
                pos0_test = _pos0_test_tv(model, hmm, splits["test"], head_pos)
                t0, c0 = time.perf_counter(), time.process_time()  # job time excludes the shared pretraining
            cfg.update({k: v for k, v in pre_cfg.items() if not k.startswith("pretrain_")})
            if m == "head":
                tc = sz.tune_config("head", "transformer", seed=s)
            elif m == "prompt":
                tc = sz.tune_config("prompt", "transformer", seed=s, restarts=grid.prompt_restarts)
            else:
                tc = _paper_head(s, head_pos) if m == "head_paper" else sz.tune_config(m, "transformer", seed=s)
            if m != "head":
                cfg["tune"] = tc.to_dict()
            met = _tune_job(model, tc, splits, pos0_tv=pos0, extra={"pos0_tv_test": pos0_test})
        out.append((m, met, cfg, seeds, time.perf_counter() - t0, time.process_time() - c0))
    return out, pre_cfg.get("pretrain_s"), pre_cfg.get("pretrain_cpu_s")


def _b3_unit(unit: Unit, preset: Preset, grid: ReproGrid, cache, device):
    from ..memory.attention_head import AttentionHeadTuner
    from ..memory.model import paper_memory_hmm, to_hmm
    from ..memory.tasks import memory_task_and_splits

    sz, s = preset.memory, unit.seed
    n = unit.num_states // sz.num_syntax
    mem = paper_memory_hmm(n, sz.num_syntax, sz.num_symbols, seed=s)
    van = paper_hmm(unit.num_states, sz.num_symbols, seed=s)
    ideal_mem = "ideal_memory_attention" in unit.methods
    _, msplits, mtries = memory_task_and_splits(mem, seed=s, sizes=sz.split_sizes, seq_len=sz.seq_len,
                                                with_conditionals=ideal_mem)
    _, vsplits, vtries = paper_task_and_splits(van, seed=s, sizes=sz.split_sizes, seq_len=sz.seq_len)
    seeds = {"hmm": s, "task": s, "task_tries": [mtries, vtries]}
    base = {"split_sizes": list(sz.split_sizes), "seq_len": sz.seq_len, "num_symbols": sz.num_symbols,
            "num_values": n, "num_syntax": sz.num_syntax}
    tc = sz.tune_config(seed=s)
    out, pre, models = [], [0.0, 0.0], {}

    def trained(which):
        if which not in models:
            res, pos0, pcfg = _pretrained(to_hmm(mem) if which == "memory" else van, preset, s, cache, device)
            pre[0] += pcfg.pop("pretrain_s")
            pre[1] += pcfg.pop("pretrain_cpu_s")
            models[which] = (res.model, pos0, pcfg)
        return models[which]

    for m in unit.methods:
        t0, c0, p0 = time.perf_counter(), time.process_time(), list(pre)
        cfg = dict(base)
        if m in ("memory_attention", "ideal_memory_attention"):
            if m == "memory_attention":
                model, pos0, pcfg = trained("memory")
                cfg.update(pcfg)
                tuner = AttentionHeadTuner(model, tc)
            else:
                pos0, tuner = None, AttentionHeadTuner(mem, tc)
            tuner.fit(msplits["train"], msplits["val"])
            res = {k: tuner.evaluate(ds) for k, ds in msplits.items()}
            cfg["tune"] = tc.to_dict()
            met = _metrics(res, trainable=tuner.num_trainable_parameters, total=tuner.num_total_parameters,
                           pos0_tv=pos0, extra={})
        elif m == "ideal_vanilla_head":
            met = _tune_job(van, HeadConfig(), vsplits, pos0_tv=None, extra={})
        else:
            model, pos0, pcfg = trained("vanilla")
            cfg.update(pcfg)
            if m == "vanilla_head":
                met = _tune_job(model, HeadConfig(max_positions=tc.max_positions), vsplits, pos0_tv=pos0, extra={})
            else:
                tcp = _paper_head(s, tc.max_positions)
                cfg["tune"] = tcp.to_dict()
                met = _tune_job(model, tcp, vsplits, pos0_tv=pos0, extra={})
        dt = time.perf_counter() - t0 - (pre[0] - p0[0])  # job time excludes the pretraining
        out.append((m, met, cfg, seeds, dt, time.process_time() - c0 - (pre[1] - p0[1])))
    return out, pre[0], pre[1]


def usable_device(device: str | torch.device | None = None) -> torch.device:
    """The torch device ``device`` names (default :func:`hmmlib.lm.device.default_device`), after checking
    that this machine has it: CUDA asked for without a usable GPU is a ``ValueError`` (a record must not say
    ``cuda`` for jobs that ran on the CPU)."""
    try:
        dev = torch.device(device) if device is not None else default_device()
    except RuntimeError as e:
        raise ValueError(f"device {device!r} is not a torch device ({e}); use 'cpu' or 'cuda'.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(dev)!r} was asked for (--device or HMMBOOK_DEVICE), but torch finds no CUDA "
                         f"GPU on this machine; run on the CPU with --device cpu (or HMMBOOK_DEVICE=cpu).")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {str(dev)!r}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                         f"use cuda:0..cuda:{torch.cuda.device_count() - 1} or --device cpu.")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {str(dev)!r}: the pipeline runs on 'cpu' or 'cuda'.")
    return dev


def run_unit(unit: Unit, preset: Preset, grid: ReproGrid, *, cache: str | None = None, threads: int | None = 1,
             device: str | None = None) -> list[dict]:
    """Run every method of ``unit`` and return one record per method (see :mod:`hmmlib.experiments.records`).

    ``threads`` fixes torch's intra-op threads (1 by default: one job per core, and results that do not
    depend on the thread count); ``cache`` is the pretrained-model cache folder (default:
    :func:`hmmlib.lm.cache.cache_dir`). The record's ``device`` is the one the job ran on: ``device`` for
    trained models (refused by :func:`usable_device` when this machine lacks it), ``cpu`` for the ideal
    model (exact inference on the HMM, which lives on the CPU)."""
    if threads is not None:
        torch.set_num_threads(int(threads))
    dev = usable_device(device)
    t0 = time.perf_counter()
    specs = figure_specs()
    if unit.figure in specs:
        rows, pre_s, pre_cpu = specs[unit.figure].run(unit, preset, grid, cache, dev)
    elif unit.figure == "fig-b3":
        rows, pre_s, pre_cpu = _b3_unit(unit, preset, grid, cache, dev)
    else:
        rows, pre_s, pre_cpu = _b1_unit(unit, preset, grid, cache, dev)
    total = time.perf_counter() - t0
    ver, host = versions(), platform.node()
    recs = []
    for m, met, cfg, seeds, dt, cpu in rows:
        job = Job(unit.figure, unit.num_states, unit.seed, m, preset.name)
        rec = {"schema": SCHEMA_VERSION, "id": job.id, "figure": unit.figure, "preset": preset.name,
               "num_states": unit.num_states, "seed": unit.seed, "method": m, "model": job.model,
               "metrics": met, "configs": {**cfg, "grid": grid.to_dict()}, "seeds": seeds,
               "timing": {"job_s": max(0.0, dt), "job_cpu_s": max(0.0, cpu), "unit_s": total,
                          "pretrain_s": pre_s, "pretrain_cpu_s": pre_cpu},
               "device": "cpu" if job.model == "ideal" else str(dev.type), "host": host, "versions": ver}
        rec["config_sha256"] = config_digest(rec)
        recs.append(rec)
    return recs
