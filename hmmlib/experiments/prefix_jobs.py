r"""Chapter 7's experiments (Li & Liang 2021, prefix-tuning) as figures of the results pipeline.

One job is one (experiment, setting, seed) cell; its record lives in ``results/<preset>/ch7-rN.jsonl``
(``python -m hmmlib.experiments.reproduce ch7-r1 --preset repro``). Every trained cell follows one protocol:

* the **same learning-rate grid** for every method (prompt, prefix, infix, fine-tuning), each rate trained
  with early stopping on a **validation split** (the lowest validation KL over checkpoints every
  ``eval_every`` steps), the rate chosen on validation KL, and the **test set scored once**, for the
  chosen model only; the per-rate validation curves, gradient norms and spikes go to ``extra``;
* a seed fixes the method's initialisation, the minibatch order and, in low data, the training subset
  and its dev split (30% of the training size, the paper's section 6.3);
* the family, the tasks and the pretrained causal LM are fixed (family seed 0): seeds are tuning runs,
  as in the paper, which tuned one GPT-2.

Figures (cells): ``ch7-r1`` prefix against embedding-only prompt per length, and a direct one-position
prefix (fewer parameters than a 5-position prompt); ``ch7-r2`` the best discrete prompt of length 1-2
(exhaustive, chosen on validation) beside a trained prompt and prefix of length 2; ``ch7-r3`` MLP against
direct prefix, each from two starts (same minibatches); ``ch7-r4`` initialisation (random, relevant and
irrelevant tokens) in low and full data; ``ch7-r5`` prefix (random and token initialisation) against
fine-tuning per training size; ``ch7-r6`` prefix length in low data; ``ch7-r7`` infix per length (paired
with ``ch7-r1``'s prefix); ``ch7-r8`` seen/unseen members; ``ch7-r9`` prompt against fine-tuning per model
width; ``ch7-r10`` prefix on all, the top half and the bottom half of the layers of a deeper model;
``ch7-r11`` prompt initialisation (uniform, sampled vocabulary, target text).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from ..adapt.causal_tuning import (CausalFinetuneConfig, CausalInfixConfig, CausalPrefixConfig, CausalPromptConfig,
                                   TrainSettings, evaluate, fit, make_causal_tuner)
from ..adapt.generation import GenerationData, GenerationTask
from ..hmm.families import mixture_hmm, perturbed_hmm, symbol_channel, through_channel
from ..hmm.generators import dirichlet_hmm
from ..hmm.sampling import sample
from ..lm.cache import pretrained_model
from ..lm.pretrain import TrainConfig
from ..lm.transformer import TransformerConfig
from .jobs import FigureSpec, Job, Unit, register_figure
from .prefix_presets import PrefixSizes, prefix_sizes

__all__ = ["Ch7Grid", "CH7_GRIDS", "CH7_METRICS", "CH7_FIGURES", "ch7_grid", "cells", "SPIKE_FACTOR"]

#: What every chapter-7 record carries in ``metrics``.
CH7_METRICS = ("test_kl", "test_kl_se", "test_excess_nll", "val_kl", "lr", "best_step", "trainable_parameters",
               "stored_parameters", "extra")
#: A gradient-norm spike: a step whose pre-clipping norm exceeds this multiple of the run's median.
SPIKE_FACTOR = 10.0


@dataclass(frozen=True)
class Ch7Grid:
    """The grid of chapter 7 at one preset (model and family sizes: :class:`PrefixSizes` ``base``).

    Attributes:
        base: preset whose :class:`PrefixSizes` give the family and the main model.
        num_seeds: tuning seeds per cell; num_steps, eval_every, batch_size: every run.
        lr_grid: the learning rates every method is trained at (chosen per run on validation KL).
        num_train, num_val, num_test: examples of the full training, validation and test sets.
        low_data: training examples of R4's low-data regime and R6; data_sizes: R5's training sizes.
        lengths: R1/R7 lengths; length_sweep: R6's; widths: R9's model widths; deep_layers: R10's depth.
        prefix_len: the length of the single-length cells (R3, R4, R5, R8, R10, R11).
    """

    base: str
    num_seeds: int
    num_steps: int
    eval_every: int
    batch_size: int
    lr_grid: tuple[float, ...]
    num_train: int
    num_val: int
    num_test: int
    low_data: int
    data_sizes: tuple[int, ...]
    lengths: tuple[int, ...]
    length_sweep: tuple[int, ...]
    widths: tuple[int, ...]
    deep_layers: int
    prefix_len: int = 5

    def to_dict(self) -> dict:
        return asdict(self)


_REPRO = Ch7Grid(base="default", num_seeds=10, num_steps=150, eval_every=25, batch_size=32,
                 lr_grid=(1e-3, 3e-3, 1e-2, 3e-2, 1e-1), num_train=1000, num_val=300, num_test=500, low_data=100,
                 data_sizes=(50, 200, 1000), lengths=(1, 5, 10, 20), length_sweep=(1, 2, 5, 10, 20, 40),
                 widths=(32, 64, 128), deep_layers=4)
CH7_GRIDS: dict[str, Ch7Grid] = {
    "ci": Ch7Grid(base="ci", num_seeds=2, num_steps=20, eval_every=10, batch_size=32, lr_grid=(1e-2, 1e-1),
                  num_train=200, num_val=60, num_test=100, low_data=40, data_sizes=(40, 200), lengths=(1, 5),
                  length_sweep=(1, 5, 15), widths=(32, 64), deep_layers=2),
    "default": replace(_REPRO, num_seeds=5),
    "repro": _REPRO,
    "paper": _REPRO,
}

CH7_FIGURES = ("ch7-r1", "ch7-r2", "ch7-r3", "ch7-r4", "ch7-r5", "ch7-r6", "ch7-r7", "ch7-r8", "ch7-r9", "ch7-r10",
               "ch7-r11")


def ch7_grid(preset: str) -> Ch7Grid:
    """Chapter 7's grid at ``preset``."""
    if preset not in CH7_GRIDS:
        raise ValueError(f"no chapter-7 grid for preset {preset!r}; choose one of {sorted(CH7_GRIDS)}.")
    return CH7_GRIDS[preset]


# --------------------------------------------------------------------------- cells
def cells(figure: str, g: Ch7Grid) -> dict[str, dict[str, Any]]:
    """``{method: spec}`` of ``figure``: what each cell trains (``kind``, ``n``, ``model``, ``train``,
    ``tests``, ``num_train``, ``init``, ``layers``, ``start``) and ``once`` for deterministic cells (seed 0 only)."""
    n5 = g.prefix_len
    out: dict[str, dict[str, Any]] = {}
    if figure == "ch7-r1":
        out["frozen"] = dict(kind="frozen", once=True)
        for n in g.lengths:
            out[f"prefix-n{n:02d}"] = dict(kind="prefix", n=n)
            out[f"prompt-n{n:02d}"] = dict(kind="prompt", n=n)
        out["direct-n01"] = dict(kind="direct", n=1)
    elif figure == "ch7-r2":
        out["discrete"] = dict(kind="discrete", n=2, once=True)
        out["prompt-n02"] = dict(kind="prompt", n=2)
        out["prefix-n02"] = dict(kind="prefix", n=2)
    elif figure == "ch7-r3":
        for p in ("mlp", "direct"):
            for a in (0, 1):
                out[f"{p}-start{a}"] = dict(kind="prefix" if p == "mlp" else "direct", n=n5, start=a)
    elif figure == "ch7-r4":
        out["frozen"] = dict(kind="frozen", once=True, train="target", tests=("target_test",))
        for regime in ("low", "full"):
            for init in ("random", "relevant", "irrelevant"):
                out[f"{regime}-{init}"] = dict(kind="prefix", n=n5, init=init, train="target", tests=("target_test",),
                                               num_train=g.low_data if regime == "low" else None)
    elif figure == "ch7-r5":
        for N in g.data_sizes:
            out[f"prefix-N{N:05d}"] = dict(kind="prefix", n=n5, num_train=N)
            out[f"prefixinit-N{N:05d}"] = dict(kind="prefix", n=n5, num_train=N, init="task")
            out[f"finetune-N{N:05d}"] = dict(kind="finetune", num_train=N)
    elif figure == "ch7-r6":
        for n in g.length_sweep:
            out[f"prefix-n{n:02d}"] = dict(kind="prefix", n=n, num_train=g.low_data, train_score=True)
    elif figure == "ch7-r7":
        for n in g.lengths:
            out[f"infix-n{n:02d}"] = dict(kind="infix", n=n)
    elif figure == "ch7-r8":
        out["frozen"] = dict(kind="frozen", once=True, train="seen", tests=("seen_test", "unseen_test"))
        for k in ("prefix", "finetune"):
            out[k] = dict(kind=k, n=n5, train="seen", tests=("seen_test", "unseen_test"))
    elif figure == "ch7-r9":
        for d in g.widths:
            out[f"frozen-d{d:03d}"] = dict(kind="frozen", once=True, model=f"d{d}")
            out[f"prompt-d{d:03d}"] = dict(kind="prompt", n=n5, model=f"d{d}")
            out[f"finetune-d{d:03d}"] = dict(kind="finetune", model=f"d{d}")
    elif figure == "ch7-r10":
        L = g.deep_layers
        k = max(1, L // 2)
        out["frozen"] = dict(kind="frozen", once=True, model="deep")
        for name, lay in (("all", None), (f"top{k}", tuple(range(L - k, L))), (f"bottom{k}", tuple(range(k)))):
            out[name] = dict(kind="prefix", n=n5, model="deep", layers=lay)
    elif figure == "ch7-r11":
        out["frozen"] = dict(kind="frozen", once=True, train="target", tests=("target_test",))
        for init in ("uniform", "vocab", "text"):
            out[init] = dict(kind="prompt", n=n5, init=init, train="target", tests=("target_test",))
    else:
        raise ValueError(f"unknown chapter-7 figure {figure!r}; choose one of {CH7_FIGURES}.")
    return out


def _plan(figure: str):
    def plan(preset, grid) -> list[Job]:
        g = ch7_grid(preset.name)
        K = prefix_sizes(g.base).num_states
        return [Job(figure, K, s, m, preset.name) for m, spec in cells(figure, g).items()
                for s in range(1 if spec.get("once") else g.num_seeds)]
    return plan


# --------------------------------------------------------------------------- shared context
@dataclass
class _Context:
    sizes: PrefixSizes
    grid: Ch7Grid
    family: list
    noisy: list
    target: Any
    cache: str | None
    device: Any
    models: dict
    data: dict
    pretrain_s: float = 0.0
    pretrain_cpu_s: float = 0.0

    def model(self, key: str = "main"):
        if key not in self.models:
            s = self.sizes
            d, L = s.d_model, s.num_layers
            if key == "deep":
                L = self.grid.deep_layers
            elif key.startswith("d"):
                d = int(key[1:])
            mcfg = TransformerConfig(num_symbols=s.num_symbols, d_model=d, num_layers=L, num_heads=s.num_heads,
                                     max_len=s.pretrain_seq_len + 16, causal=True)
            tcfg = TrainConfig(objective="causal", num_steps=s.pretrain_steps, batch_size=s.pretrain_batch_size,
                               seq_len=s.pretrain_seq_len, lr=s.pretrain_lr,
                               warmup_steps=min(100, s.pretrain_steps // 10), weight_decay=0.01,
                               eval_every=s.pretrain_steps, eval_num_seqs=128, seed=0)
            t0, c0 = time.perf_counter(), time.process_time()
            pre = pretrained_model(mixture_hmm(self.family).to(dtype=torch.float32), mcfg, tcfg, cache=self.cache,
                                   device=self.device, progress=False)
            self.pretrain_s += time.perf_counter() - t0
            self.pretrain_cpu_s += time.process_time() - c0
            self.models[key] = (pre.model.eval(), {"model": mcfg.to_dict(), "pretrain": tcfg.to_dict()})
        return self.models[key]

    def split(self, name: str) -> GenerationData:
        """``{main,seen,unseen,target}_{train,val,test}`` (``main_`` dropped)."""
        if name not in self.data:
            g, s = self.grid, self.sizes
            task, base = name.rsplit("_", 1) if "_" in name else ("main", name)
            num = {"train": g.num_train, "val": g.num_val, "test": g.num_test}[base]
            seed = {"main": 10, "seen": 30, "unseen": 50, "target": 60}[task] + {"train": 0, "val": 5, "test": 10}[base]
            if task == "target":
                self.data[name] = GenerationTask([self.target], s.x_len, s.y_len).sample(num, seed=seed)
            else:
                members = {"main": None, "seen": list(range(s.num_seen)),
                           "unseen": list(range(s.num_seen, s.num_members))}[task]
                self.data[name] = GenerationTask(self.noisy, s.x_len, s.y_len).sample(num, seed=seed, members=members)
        return self.data[name]


def _context(preset_name: str, cache, device) -> _Context:
    g = ch7_grid(preset_name)
    s = prefix_sizes(g.base)
    family = [dirichlet_hmm(s.num_states, s.num_symbols, start_concentration=0.1, transition_concentration=0.2,
                            emission_concentration=0.2, seed=c) for c in range(s.num_members)]
    channel = symbol_channel(s.num_symbols, s.channel, seed=555)
    noisy = [through_channel(m, channel) for m in family]
    target = perturbed_hmm(family[0], s.perturb, seed=777)
    return _Context(s, g, family, noisy, target, cache, device, {}, {})


def _tokens(ctx: _Context, which: str, n: int) -> tuple[int, ...]:
    """Real-text initialisations: ``relevant``/``text``: a sample of the target HMM; ``irrelevant``: of an HMM
    outside the family; ``task``: of the task's member 0 (through the channel)."""
    s = ctx.sizes
    if which in ("relevant", "text"):
        hmm, seed = ctx.target, 901
    elif which == "irrelevant":
        hmm, seed = dirichlet_hmm(s.num_states, s.num_symbols, seed=99_999), 902
    else:
        hmm, seed = ctx.noisy[0], 903
    return tuple(int(t) for t in sample(hmm, 1, n, seed=seed)[0][0].tolist())


def _config(ctx: _Context, spec: dict, seed: int):
    kind, n, init = spec["kind"], spec.get("n"), spec.get("init", "random")
    hid = ctx.sizes.mlp_hidden
    if kind in ("prefix", "direct"):
        h = hid if kind == "prefix" else None
        if init in ("relevant", "irrelevant", "task"):
            return CausalPrefixConfig(n, h, layers=spec.get("layers"), init="tokens", init_tokens=_tokens(ctx, init, n))
        return CausalPrefixConfig(n, h, layers=spec.get("layers"))
    if kind == "prompt":
        if init == "text":
            return CausalPromptConfig(n, init="tokens", init_tokens=_tokens(ctx, "text", n))
        return CausalPromptConfig(n, init=init)
    if kind == "infix":
        return CausalInfixConfig(n, hid)
    if kind == "finetune":
        return CausalFinetuneConfig()
    raise ValueError(f"no config for cell kind {kind!r}.")


def _splits(ctx: _Context, spec: dict, seed: int) -> tuple[GenerationData, GenerationData, dict[str, GenerationData]]:
    task = spec.get("train", "main")
    pre = "" if task == "main" else task + "_"
    train, val = ctx.split(pre + "train"), ctx.split(pre + "val")
    N = spec.get("num_train")
    if N is not None and N < len(train):
        gen = torch.Generator().manual_seed(10_000 + seed)
        train = train.subset(torch.randperm(len(train), generator=gen)[:N])
        nv = max(10, math.ceil(0.3 * N))  # the paper's dev split: 30% of the training size
        val = val.subset(torch.randperm(len(val), generator=gen)[:nv])
    tests = {t: ctx.split(t) for t in spec.get("tests", ("test",))}
    return train, val, tests


def _grad_stats(hist: list[dict]) -> dict[str, float]:
    norms = torch.tensor([h["grad_norm"] for h in hist], dtype=torch.float64)
    med = float(norms.median())
    return {"max_grad_norm": float(norms.max()), "median_grad_norm": med,
            "spikes": int((norms > SPIKE_FACTOR * med).sum()), "final_train_loss": float(hist[-1]["train_loss"])}


def _scores(tuner, tests: dict[str, GenerationData]) -> tuple[dict, dict]:
    first, others = None, {}
    for name, data in tests.items():
        m = evaluate(tuner, data)
        others[name] = {"kl": m["kl"], "kl_se": m["kl_se"], "excess_nll": m["excess_nll"]}
        first = first or others[name]
    return first, others


def _discrete(ctx: _Context, model, val, tests, n_max: int) -> tuple[dict, dict]:
    """Every discrete prompt of length 1..``n_max``, typed before ``[BOS] x [SEP]`` (a prefix of the model's
    own keys/values, exact by the chapter's proposition), scored on validation; the best scored on test."""
    import itertools

    V = ctx.sizes.num_symbols
    val_kl = {}
    for n in range(1, n_max + 1):
        for toks in itertools.product(range(V), repeat=n):
            t = make_causal_tuner(model, CausalPrefixConfig(n, None, init="tokens", init_tokens=toks))
            val_kl[toks] = evaluate(t, val)["kl"]
    best = min(val_kl, key=val_kl.get)
    tuner = make_causal_tuner(model, CausalPrefixConfig(len(best), None, init="tokens", init_tokens=best))
    first, others = _scores(tuner, tests)
    vals = sorted(val_kl.values())
    return first, {"best_tokens": list(best), "val_kl": val_kl[best], "num_candidates": len(val_kl),
                   "val_kl_quartiles": [vals[len(vals) // 4], vals[len(vals) // 2], vals[3 * len(vals) // 4]],
                   "tests": others, "stored": 2 * len(best) * model.cfg.num_layers * model.cfg.d_model}


def _cell(ctx: _Context, spec: dict, seed: int) -> tuple[dict, dict]:
    g = ctx.grid
    model, mcfgs = ctx.model(spec.get("model", "main"))
    train, val, tests = _splits(ctx, spec, seed)
    cfg: dict[str, Any] = {**mcfgs, "cell": {k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.items()},
                           "num_train": len(train), "num_val": len(val)}
    if spec["kind"] == "frozen":
        t = make_causal_tuner(model, CausalFinetuneConfig())
        first, others = _scores(t, tests)
        met = dict(test_kl=first["kl"], test_kl_se=first["kl_se"], test_excess_nll=first["excess_nll"],
                   val_kl=evaluate(t, val)["kl"], lr=None, best_step=0, trainable_parameters=0, stored_parameters=0,
                   extra={"tests": others})
        return met, cfg
    if spec["kind"] == "discrete":
        first, extra = _discrete(ctx, model, val, tests, spec["n"])
        met = dict(test_kl=first["kl"], test_kl_se=first["kl_se"], test_excess_nll=first["excess_nll"],
                   val_kl=extra.pop("val_kl"), lr=None, best_step=0, trainable_parameters=0,
                   stored_parameters=extra.pop("stored"), extra=extra)
        return met, cfg
    conf = _config(ctx, spec, seed)
    init_seed = seed + 1000 * spec.get("start", 0)
    by_lr, best = {}, None
    for lr in g.lr_grid:
        st = TrainSettings(lr=lr, num_steps=g.num_steps, batch_size=g.batch_size, seed=seed)
        tuner = make_causal_tuner(model, conf, seed=init_seed)
        trainable = tuner.num_trainable
        hist = fit(tuner, train, st, log_every=1, val=val, eval_every=g.eval_every)
        b = next(h for h in hist if h.get("best"))
        row = {"val_kl": float(b["val_kl"]), "best_step": int(b["step"]), **_grad_stats(hist),
               "val_curve": [float(h["val_kl"]) for h in hist if "val_kl" in h]}
        if spec.get("train_score"):
            row["train_kl"] = evaluate(tuner, train)["kl"]
        by_lr[f"{lr:.0e}"] = row
        if best is None or row["val_kl"] < best[1]["val_kl"]:
            best = (lr, row, tuner, trainable)
    lr, row, tuner, trainable = best
    first, others = _scores(tuner, tests)  # the test set, once: the model chosen on validation
    cfg["config"] = {"type": type(conf).__name__, **{k: (list(v) if isinstance(v, tuple) else v)
                                                     for k, v in asdict(conf).items()}}
    cfg["train"] = {"num_steps": g.num_steps, "batch_size": g.batch_size, "eval_every": g.eval_every,
                    "lr_grid": list(g.lr_grid), "init_seed": init_seed, "data_seed": seed}
    met = dict(test_kl=first["kl"], test_kl_se=first["kl_se"], test_excess_nll=first["excess_nll"],
               val_kl=row["val_kl"], lr=lr, best_step=row["best_step"], trainable_parameters=int(trainable),
               stored_parameters=int(tuner.num_stored),
               extra={"tests": others, "by_lr": by_lr, "chosen": {k: v for k, v in row.items() if k != "val_curve"}})
    return met, cfg


def _run(figure: str):
    def run(unit: Unit, preset, grid, cache, device) -> tuple[list, float, float]:
        ctx = _context(preset.name, cache, device)
        specs = cells(figure, ctx.grid)
        rows = []
        for m in unit.methods:
            p0, c0p = ctx.pretrain_s, ctx.pretrain_cpu_s
            t0, c0 = time.perf_counter(), time.process_time()
            met, cfg = _cell(ctx, specs[m], unit.seed)
            dt = time.perf_counter() - t0 - (ctx.pretrain_s - p0)
            dc = time.process_time() - c0 - (ctx.pretrain_cpu_s - c0p)
            cfg = {**cfg, "ch7_grid": ctx.grid.to_dict()}
            seeds = {"hmm": 0, "task": unit.seed, "family": 0, "channel": 555, "target": 777}
            rows.append((m, met, cfg, seeds, dt, dc))
        return rows, ctx.pretrain_s, ctx.pretrain_cpu_s
    return run


for _f in CH7_FIGURES:
    register_figure(_f, FigureSpec(plan=_plan(_f), run=_run(_f), metrics=CH7_METRICS,
                                   description=f"chapter 7 ({_f[4:].upper()}): prefix-tuning on a causal LM"))


def run_by_seed(preset: str, figures: tuple[str, ...] = CH7_FIGURES, **kw: Any) -> int:
    """Run chapter 7's grid at ``preset`` seed by seed across ``figures`` (one unit of each figure per round),
    so that a run stopped early has every claim at its first seeds; resumable (finished jobs are skipped).
    Returns the number of records written."""
    from .pipeline import run

    total = 0
    while True:
        ran = sum(run(f, preset, max_units=1, **kw)["ran"] for f in figures)
        total += ran
        if ran == 0:
            return total


if __name__ == "__main__":  # python -m hmmlib.experiments.prefix_jobs PRESET [FIGURE ...]
    import sys

    args = sys.argv[1:] or ["repro"]
    n = run_by_seed(args[0], tuple(args[1:]) or CH7_FIGURES, workers=1)
    print(f"chapter 7 at preset {args[0]!r}: {n} records written")
