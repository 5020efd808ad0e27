r"""``fig-attr``: why the paper's numbers differ from the book's, one config change at a time.

Every job is one (arm, size, seed, method) cell; a method is named ``<arm>.<method>``. The HMM
(``paper_hmm(K, 10, seed=s)``) and the task and splits are those of ``fig-b1`` (same seeds), so an
arm is a config change of the preset's Fig. B1 cell and nothing else:

* ``base``: the preset's own pretrained model (the ``fig-b1`` model, bit for bit); ``base.head`` (the
  converged head, as ``fig-b1``'s ``head``), ``base.prompt`` (the book's prompt cut as on the weaker
  arms, below) and ``base.prompt_paper``: the paper's prompt protocol
  (Wei et al. 2021, Appendix on experimental details; the authors' ``src/run_finetune_seed.sh`` and
  their ``SoftEmbedding``): :data:`AttrGrid.paper_prompt_len` vectors initialised from embedding rows,
  a *fresh* head trained jointly, AdamW at lr 0.01 with linear warmup (an eighth of the steps, as the
  paper's 500 of about 4,000) and linear decay, batch 128, one run, the final model; cut to
  :data:`AttrGrid.paper_prompt_steps` steps and read at the model's pretrained positions.
* weaker or different pretraining, all at a *reduced* budget of ``num_steps // reduced_divisor``
  steps of the same batches: ``steps`` (only the budget cut), ``mask5`` (5% masking, the paper's
  ``--mlm_probability 0.05``), ``long`` (training blocks ``long_factor`` times longer, at the same
  tokens per step, read downstream at the preset's positions, as the paper's 512-token blocks read at
  80) and ``big`` (``big_layers`` layers of width ``big_width``: deeper and wider, same tokens).
  Each has ``.head`` (converged) and ``.prompt`` (the book's protocol: prompt from the converged head,
  one restart of ``prompt_steps`` steps).
* ``ideal_n<n>``: no training at all: the ideal model read through the first ``n`` tokens,
  :math:`G_n(x) = P(X_0 \mid x_1..x_n) = W\,P(H_0 \mid x_1..x_n)`; the label still uses all the
  tokens. ``.head`` (converged) and ``.prompt`` (fake-token prompt from the converged head).

``pos0_tv`` is, for every record, the mean total-variation distance on the test inputs between what
the head reads and the exact :math:`G` of the tokens a trained model's head reads (the preset's
``max_positions - 1``); for ``ideal_n<n>`` it is exact, :math:`\mathrm{TV}(G_n, G_m)`. ``extra.tv_full``
is the distance to :math:`G` of all the tokens.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

import torch

from ..adapt.api import make_tuner, tune_and_evaluate
from ..adapt.configs import HeadConfig, PromptTuningConfig
from ..adapt.tasks import TaskDataset, paper_task_and_splits, sub_seed
from ..hmm.generators import paper_hmm
from ..hmm.inference import posterior_h0
from ..lm.cache import pretrained_model
from ..lm.inputs import InputLayout
from .jobs import NUM_SYMBOLS, FigureSpec, Job, Unit, _metrics, _tune_job, register_figure
from .presets import Preset
from .records import ACCURACY_METRICS
from .repro_presets import ReproGrid

__all__ = ["FIGURE", "AttrGrid", "ATTR_GRIDS", "TRAINED_ARMS", "arm_of", "attr_plan", "paper_prompt_config",
           "arm_configs", "truncated_split", "m_ref_len"]

FIGURE = "fig-attr"
TRAINED_ARMS = ("base", "steps", "mask5", "long", "big")


@dataclass(frozen=True)
class AttrGrid:
    """The cells of ``fig-attr`` at one preset (see the module docstring for the arms).

    Attributes:
        sizes, seeds: hidden-state counts and seeds ``0..seeds-1``.
        ctx_lengths: ``n`` of the ``ideal_n<n>`` arms (a value above the head's tokens is cut to it).
        reduced_divisor: the weaker arms pretrain ``num_steps // reduced_divisor`` steps.
        prompt_steps: steps of the book's prompt on the weaker arms (one restart).
        paper_prompt_steps, paper_prompt_len: the paper-protocol prompt's steps and vectors.
        long_factor: ``long``'s block length over the preset's; big_layers, big_width: ``big``'s shape.
    """

    sizes: tuple[int, ...]
    seeds: int
    ctx_lengths: tuple[int, ...]
    reduced_divisor: int
    prompt_steps: int
    paper_prompt_steps: int
    paper_prompt_len: int = 20
    long_factor: int = 4
    big_layers: int = 4
    big_width: int = 96

    def to_dict(self) -> dict:
        return asdict(self)


#: The paper's HMMs are sparse: the ideal posterior of H_0 stops changing after 2-4 tokens (measured), so
#: only the shortest contexts move TV; 63 is the context a trained head reads at the default/repro presets.
_CTX = (1, 2, 3, 63)
ATTR_GRIDS: dict[str, AttrGrid] = {
    "ci": AttrGrid(sizes=(4, 12), seeds=2, ctx_lengths=(1, 2, 31), reduced_divisor=4, prompt_steps=30,
                   paper_prompt_steps=40, paper_prompt_len=8, long_factor=2, big_width=96),
    "default": AttrGrid(sizes=(10, 12, 25), seeds=2, ctx_lengths=_CTX, reduced_divisor=4, prompt_steps=150,
                        paper_prompt_steps=200),
    # measured: about 200 CPU s per (size, seed) on one core of the 2-core development machine; 20 of them: 67 CPU minutes
    "repro": AttrGrid(sizes=(10, 12, 15, 25), seeds=5, ctx_lengths=_CTX, reduced_divisor=4, prompt_steps=150,
                      paper_prompt_steps=200),
    "paper": AttrGrid(sizes=(10, 12, 15, 25, 30), seeds=10, ctx_lengths=_CTX, reduced_divisor=4, prompt_steps=4000,
                      paper_prompt_steps=4000),
}


def arm_of(method: str) -> tuple[str, str]:
    """``"mask5.head" -> ("mask5", "head")``."""
    arm, _, m = method.partition(".")
    if not m:
        raise ValueError(f"a fig-attr method is '<arm>.<method>'; got {method!r}.")
    return arm, m


def _methods(g: AttrGrid) -> tuple[str, ...]:
    ms = ["base.head", "base.prompt", "base.prompt_paper"]
    ms += [f"{a}.{m}" for a in TRAINED_ARMS[1:] for m in ("head", "prompt")]
    ms += [f"ideal_n{n}.{m}" for n in g.ctx_lengths for m in ("head", "prompt")]
    return tuple(ms)


def attr_plan(preset: Preset, grid: ReproGrid) -> list[Job]:
    """Every job of ``fig-attr`` at ``preset`` (its :data:`ATTR_GRIDS` entry; ``grid`` is not used)."""
    g = ATTR_GRIDS[preset.name]
    return [Job(FIGURE, K, s, m, preset.name) for K in g.sizes for s in range(g.seeds) for m in _methods(g)]


# --------------------------------------------------------------------------- configs of the arms
def arm_configs(preset: Preset, arm: str, seed: int, g: AttrGrid):
    """``(model_cfg, train_cfg)`` of trained ``arm`` (a config change of the preset's pretraining)."""
    mcfg, tcfg = preset.pretrain.configs(NUM_SYMBOLS, "mlm", seed=seed)
    if arm == "base":
        return mcfg, tcfg
    if arm not in TRAINED_ARMS:
        raise ValueError(f"unknown trained arm {arm!r}; choose one of {TRAINED_ARMS}.")
    n = max(1, tcfg.num_steps // g.reduced_divisor)
    tcfg = replace(tcfg, num_steps=n, warmup_steps=min(tcfg.warmup_steps, n // 10), eval_every=n)
    if arm == "mask5":
        tcfg = replace(tcfg, mlm_probability=0.05)
    elif arm == "long":
        L = tcfg.seq_len * g.long_factor
        tcfg = replace(tcfg, seq_len=L, batch_size=max(1, tcfg.batch_size // g.long_factor))
        mcfg = replace(mcfg, max_len=L + 64)
    elif arm == "big":
        mcfg = replace(mcfg, num_layers=g.big_layers, d_model=g.big_width)
    return mcfg, tcfg


def paper_prompt_config(g: AttrGrid, seed: int, max_positions: int) -> PromptTuningConfig:
    """The paper's prompt protocol cut to ``g.paper_prompt_steps`` steps: ``g.paper_prompt_len`` vectors
    from embedding rows, AdamW lr 0.01 (the prompt's rate equal to the head's), warmup an eighth of the
    steps then linear decay, batch 128, clipping 1, no weight decay, a fresh head, one run."""
    n = g.paper_prompt_steps
    return PromptTuningConfig(lr=0.01, prompt_len=g.paper_prompt_len, init="tokens", num_steps=n, batch_size=128,
                              warmup_steps=n // 8, schedule="linear", weight_decay=0.0, grad_clip=1.0,
                              max_positions=max_positions, seed=seed, log_every=10**9, head_init="random",
                              restarts=1)


def truncated_split(hmm, ds: TaskDataset, n: int) -> TaskDataset:
    r"""``ds`` as the ideal model reading only ``x_1..x_n``: posterior :math:`P(H_0\mid x_{1:n})`,
    :math:`G_n = W P(H_0 \mid x_{1:n})`; labels unchanged (they use every token)."""
    x = ds.x[:, :n].contiguous()
    post = posterior_h0(hmm, x)
    return TaskDataset(x=x, h0=ds.h0, posterior=post, G=post @ hmm.W.T, y=ds.y, majority_rate=ds.majority_rate)


def _tv(p: torch.Tensor, q: torch.Tensor) -> float:
    return float(0.5 * (p.double() - q.double()).abs().sum(1).mean())


# --------------------------------------------------------------------------- one unit
def _attr_unit(unit: Unit, preset: Preset, grid: ReproGrid, cache, device):
    g = ATTR_GRIDS[preset.name]
    sz, K, s = preset.tuning, unit.num_states, unit.seed
    hmm = paper_hmm(K, NUM_SYMBOLS, seed=s)
    task_seed = sub_seed(s, K, 1)  # fig-b1's task and splits
    _, splits, tries = paper_task_and_splits(hmm, seed=task_seed, sizes=sz.transformer_split_sizes,
                                             seq_len=sz.seq_len)
    seeds = {"hmm": s, "task": task_seed, "task_tries": tries}
    head_pos = sz.tune_config("head", "transformer").max_positions
    base_cfg = {"split_sizes": list(sz.transformer_split_sizes), "seq_len": sz.seq_len, "num_symbols": NUM_SYMBOLS,
                "attr_grid": g.to_dict()}
    test = splits["test"]
    by_arm: dict[str, list[str]] = {}
    for m in unit.methods:
        arm, meth = arm_of(m)
        by_arm.setdefault(arm, []).append(meth)
    out, pre_s, pre_cpu = [], 0.0, 0.0
    m_ref = None
    for arm, meths in by_arm.items():
        if arm.startswith("ideal_n"):
            if m_ref is None:
                m_ref = posterior_h0(hmm, test.x[:, :m_ref_len(preset, head_pos)]) @ hmm.W.T
            n = int(arm[len("ideal_n"):])
            t0, c0 = time.perf_counter(), time.process_time()
            n_eff = min(n, m_ref_len(preset, head_pos))
            sp = {k: truncated_split(hmm, ds, n_eff) for k, ds in splits.items()}
            tv, tv_full = _tv(sp["test"].G, m_ref), _tv(sp["test"].G, test.G)
            extra = {"ctx_tokens": n_eff, "tv_full": tv_full}
            setup = (time.perf_counter() - t0, time.process_time() - c0)
            for meth in meths:
                t0, c0 = time.perf_counter(), time.process_time()
                cfg = dict(base_cfg, arm=arm, ctx_tokens=n_eff)
                if meth == "head":  # the converged head (its records carry its penalty path, not its config)
                    met = _tune_job(hmm, sz.tune_config("head", "ideal", seed=s), sp, pos0_tv=tv, extra=extra)
                else:  # one prompt run from the converged head
                    tc = sz.tune_config("prompt", "ideal", seed=s, restarts=1)
                    cfg["tune"] = tc.to_dict()
                    met = _tune_job(hmm, tc, sp, pos0_tv=tv, extra=extra)
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
                if meth == "head":
                    dt, dc = dt + setup[0], dc + setup[1]
                out.append((f"{arm}.{meth}", met, cfg, seeds, dt, dc))
            continue
        mcfg, tcfg = arm_configs(preset, arm, s, g)
        t0, c0 = time.perf_counter(), time.process_time()
        res = pretrained_model(hmm, mcfg, tcfg, cache=cache, device=device, progress=False)
        pre_s += time.perf_counter() - t0
        pre_cpu += time.process_time() - c0
        model = res.model
        q = make_tuner(model, HeadConfig(max_positions=head_pos)).features(test).detach().cpu().double()
        n_tok = InputLayout(model.cfg, 0, head_pos).max_tokens
        ref = posterior_h0(hmm, test.x[:, :n_tok]) @ hmm.W.T
        extra = {"tv_full": _tv(q, test.G), "pretrain_steps": tcfg.num_steps}
        tv = _tv(q, ref)
        for meth in meths:
            t0, c0 = time.perf_counter(), time.process_time()
            cfg = dict(base_cfg, arm=arm, model=mcfg.to_dict(), pretrain=tcfg.to_dict())
            if meth == "head":
                met = _tune_job(model, sz.tune_config("head", "transformer", seed=s), splits, pos0_tv=tv, extra=extra)
            elif meth == "prompt":
                tc = sz.tune_config("prompt", "transformer", seed=s, num_steps=g.prompt_steps, restarts=1)
                cfg["tune"] = tc.to_dict()
                met = _tune_job(model, tc, splits, pos0_tv=tv, extra=extra)
            elif meth == "prompt_paper":
                tc = paper_prompt_config(g, s, head_pos)
                cfg["tune"] = tc.to_dict()
                r = tune_and_evaluate(model, tc, splits)
                met = _metrics(r, trainable=r["parameters"]["trainable"], total=r["parameters"]["total"], pos0_tv=tv,
                               extra=dict(extra, final_train_loss=r["history"][-1]["train_loss"] if r["history"] else None))
            else:
                raise ValueError(f"unknown fig-attr method {meth!r} for arm {arm!r}.")
            out.append((f"{arm}.{meth}", met, cfg, seeds, time.perf_counter() - t0, time.process_time() - c0))
    return out, pre_s, pre_cpu


def m_ref_len(preset: Preset, head_pos: int | None) -> int:
    """Tokens a trained model's head reads at ``preset`` (the reference context of ``pos0_tv``)."""
    mcfg, _ = preset.pretrain.configs(NUM_SYMBOLS, "mlm")
    return InputLayout(mcfg, 0, head_pos).max_tokens


register_figure(FIGURE, FigureSpec(plan=attr_plan, run=_attr_unit, metrics=ACCURACY_METRICS,
                                   description="attribution: weak-model stand-ins, weaker pretraining, the paper's "
                                               "prompt protocol, a larger model"))


# --------------------------------------------------------------------------- reading the records
#: (label, method, reference method) per row of the attribution: each effect is a paired per-seed
#: difference ``method - reference`` on the same HMM and task. ``b1:`` names a ``fig-b1`` method;
#: ``floor:`` the converged head with its penalty floored at 1e-8 (read from the penalty path).
HEAD_EFFECTS = (("paper's optimiser for the head", "b1:head_paper", "b1:head"),
                ("penalty floored at 1e-8", "floor:b1:head", "b1:head"),
                ("a quarter of the pretraining steps", "steps.head", "base.head"),
                ("5% masking (same reduced budget)", "mask5.head", "steps.head"),
                ("long blocks read at 64 (same reduced budget)", "long.head", "steps.head"),
                ("larger model (same reduced budget)", "big.head", "steps.head"),
                ("5% masking and a quarter of the steps", "mask5.head", "base.head"))
PROMPT_EFFECTS = (("the paper's prompt protocol (cut)", "base.prompt_paper", "b1:prompt"),
                  ("the book's prompt cut to 1 restart", "base.prompt", "b1:prompt"),
                  ("a quarter of the pretraining steps", "steps.prompt", "base.prompt"),
                  ("5% masking (same reduced budget)", "mask5.prompt", "steps.prompt"),
                  ("long blocks read at 64 (same reduced budget)", "long.prompt", "steps.prompt"),
                  ("larger model (same reduced budget)", "big.prompt", "steps.prompt"),
                  ("5% masking and a quarter of the steps", "mask5.prompt", "base.prompt"))


def _floored(rec: dict, floor: float = 1e-8) -> float:
    e = rec["metrics"]["extra"]
    val = {k: v for k, v in e["val_by_l2"].items() if float(k) >= floor}
    return e["test_by_l2"][max(val, key=lambda k: (val[k], float(k)))]


def accuracy_by_seed(attr: list[dict], b1: list[dict]) -> dict[tuple[str, int], dict[int, float]]:
    """``{(name, K): {seed: test accuracy}}`` for every fig-attr method and ``b1:<method>`` /
    ``floor:b1:head`` of the fig-b1 records (at the sizes and seeds fig-attr has)."""
    out: dict[tuple[str, int], dict[int, float]] = {}
    have = {(r["num_states"], r["seed"]) for r in attr}
    for r in attr:
        out.setdefault((r["method"], r["num_states"]), {})[r["seed"]] = r["metrics"]["test_accuracy"]
    for r in b1:
        key = (r["num_states"], r["seed"])
        if key not in have:
            continue
        out.setdefault(("b1:" + r["method"], key[0]), {})[key[1]] = r["metrics"]["test_accuracy"]
        if r["method"] == "head" and {"val_by_l2", "test_by_l2"} <= set(r["metrics"]["extra"]):
            out.setdefault(("floor:b1:head", key[0]), {})[key[1]] = _floored(r)
    return out


def effect_samples(acc: dict, method: str, reference: str, sizes) -> dict[int, "np.ndarray"]:
    """Per size, the per-seed paired differences ``method - reference`` (seeds with both)."""
    import numpy as np

    out = {}
    for K in sizes:
        a, b = acc.get((method, K), {}), acc.get((reference, K), {})
        seeds = sorted(set(a) & set(b))
        if seeds:
            out[K] = np.array([a[s] - b[s] for s in seeds])
    return out
