r"""Reading the pipeline's records for chapter 6: per-size summaries over seeds, paired differences,
and the paper's numbers (Wei, Xie & Ma 2021, Figs. B1-B3 and the earlier set A; read from the figure
files of the authors' repository ``sangmichaelxie/pretraining_analysis``, ``figures/``).

Intervals over seeds are Student-t 95% intervals of the mean, :math:`\bar a \pm t_{0.975,n-1}\,s/\sqrt n`
(``None`` for one seed), or seed-bootstrap percentile intervals (:func:`bootstrap_interval`). Paired
comparisons over seeds use the exact sign-flip (permutation) test of the mean paired difference, which
assumes only that, under the null hypothesis, each seed's difference is as likely to be positive as
negative. Two heads on one test set are compared by McNemar's exact test; the records keep accuracies,
not per-example predictions, so :func:`mcnemar_bound` gives the largest p-value any per-example
agreement consistent with the two accuracies allows (a conservative test). :func:`holm` corrects a
family of p-values (Holm's step-down method).
"""
from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .memory_runners import PAPER_FIG_A2, PAPER_FIG_B3
from .pipeline import DEFAULT_RESULTS, results_path
from .runners import PAPER_FIG_B1
from .records import load_records

__all__ = ["PAPER_B1", "PAPER_B1_BAND", "PAPER_A1", "PAPER_B2", "PAPER_B3", "PAPER_A2", "Summary", "load",
           "records_at", "record_sources", "best_committed", "tuning_rows", "accuracy_table", "summarize", "paired", "Paired",
           "sign_flip_pvalue", "t_quantile", "bootstrap_interval", "mcnemar_bound", "holm"]

#: Fig. B1 means (set B, 20 seeds per the runner): method -> {num_states: test accuracy} (one copy, in runners).
PAPER_B1 = PAPER_FIG_B1
#: Fig. B1 band half-widths (their definition is not recoverable from the figure file: the band exceeds 1
#: at some sizes, so it is the mean plus or minus a multiple of a standard deviation or error).
PAPER_B1_BAND: dict[str, dict[int, float]] = {
    "prompt": {4: 0.0, 8: 0.0, 10: 0.032, 12: 0.008, 15: 0.014, 25: 0.049, 30: 0.078},
    "head": {4: 0.0, 8: 0.014, 10: 0.073, 12: 0.048, 15: 0.072, 25: 0.063, 30: 0.109},
}
#: Fig. A1 (set A, percent converted to fractions; no 12-state point): method -> {K: (mean, low, high)}.
PAPER_A1: dict[str, dict[int, tuple[float, float, float]]] = {
    "prompt": {4: (0.997, 0.994, 1.000), 8: (0.970, 0.938, 1.002), 10: (0.930, 0.884, 0.975),
               15: (0.870, 0.804, 0.935), 25: (0.748, 0.667, 0.829), 30: (0.751, 0.683, 0.819)},
    "head": {4: (0.940, 0.884, 0.996), 8: (0.840, 0.783, 0.896), 10: (0.797, 0.749, 0.845),
             15: (0.746, 0.699, 0.794), 25: (0.661, 0.612, 0.711), 30: (0.662, 0.621, 0.704)},
}
#: Fig. B2: "Prompt Acc - Head Acc" in accuracy (not the difference of the B1 means).
PAPER_B2: dict[int, float] = {4: 0.000, 8: 0.001, 10: 0.076, 12: 0.142, 15: 0.221, 25: 0.237, 30: 0.272}
#: Fig. B3 and Fig. A2: total hidden states -> (memory + attention, vanilla + linear) (one copy, in memory_runners).
PAPER_B3, PAPER_A2 = PAPER_FIG_B3, PAPER_FIG_A2

# two-sided 95% Student-t quantiles t_{0.975, df}
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
         20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
         29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t_quantile(df: int) -> float:
    """:math:`t_{0.975,\\mathrm{df}}` (tabulated; the next smaller tabulated df above 30, 1.960 beyond 120)."""
    if df < 1:
        raise ValueError(f"df must be at least 1; got {df}.")
    if df in _T975:
        return _T975[df]
    smaller = [d for d in _T975 if d <= df]
    return 1.960 if df > 120 else _T975[max(smaller)]


@dataclass(frozen=True)
class Summary:
    """Test accuracy of one (figure, method, size) over seeds: mean, 95% t-interval half-width
    (``None`` for one seed), standard deviation, number of seeds, and the mean majority rate."""

    mean: float
    half_width: float | None
    std: float
    n: int
    majority: float


def load(preset: str, figure: str, results: str | os.PathLike = DEFAULT_RESULTS) -> list[dict]:
    """The records of ``figure`` (``fig-b1``, ``fig-b3``, ``ideal`` or a registered figure such as ``fig-attr``) at ``preset``."""
    from .jobs import figure_specs

    figure_specs()  # registers the figures defined in their own modules (their records' metrics)
    path = results_path(results, preset, figure)
    if not Path(path).exists():
        raise ValueError(f"no records at {path}; run python -m hmmlib.experiments.reproduce {figure} --preset {preset}.")
    return load_records(path)


def records_at(figure: str, preset, results: str | os.PathLike = DEFAULT_RESULTS, *, grid=None,
               progress: bool | None = False) -> list[dict]:
    """Every record of ``figure``'s grid at ``preset`` (a name or a :class:`Preset`): the committed ones,
    and any job they lack run now in this process (into a temporary copy: the committed files are not
    changed). With the ``ci`` and ``default`` records committed this reads files. Missing jobs run only at
    the ``ci`` preset or when asked (``$HMMBOOK_RUN_MISSING=1``); otherwise a ``ValueError`` names the file and
    the command that makes it (:func:`~hmmlib.experiments.locate.check_may_run`)."""
    import shutil
    import tempfile

    from .jobs import plan
    from .locate import check_may_run
    from .pipeline import run
    from .repro_presets import resolve_preset

    p, grid = resolve_preset(preset, grid)
    ids = {j.id for j in plan(figure, p, grid)}
    path = results_path(results, p.name, figure)
    have = [r for r in load_records(path) if r["id"] in ids] if Path(path).exists() else []
    if {r["id"] for r in have} >= ids:
        return sorted(have, key=lambda r: r["id"])
    check_may_run(figure, p.name, len(ids - {r["id"] for r in have}), path)
    with tempfile.TemporaryDirectory() as tmp:
        copy = results_path(tmp, p.name, figure)
        copy.parent.mkdir(parents=True, exist_ok=True)
        if Path(path).exists():
            shutil.copyfile(path, copy)
        run(figure, p, grid=grid, results=tmp, progress=progress)
        return sorted((r for r in load_records(copy) if r["id"] in ids), key=lambda r: r["id"])


def record_sources(preset_name: str) -> tuple[str, ...]:
    """Which committed records a build at ``preset_name`` reads, best first: the ``ci`` build reads its
    own (small, and what the tests check); every other build reads the richest committed set
    (``paper``, then ``repro``, then ``default``), its own preset first when it is none of these."""
    if preset_name == "ci":
        return ("ci", "default", "repro", "paper")
    order = ("paper", "repro", "default", "ci")
    return order if preset_name in order else (preset_name,) + order


def best_committed(figure: str, prefer: tuple[str, ...], results: str | os.PathLike = DEFAULT_RESULTS) -> str:
    """The first preset of ``prefer`` whose records of ``figure`` are committed under ``results``."""
    for name in prefer:
        if results_path(results, name, figure).exists():
            return name
    raise ValueError(f"no committed records of {figure} for any of {prefer}; run python -m "
                     f"hmmlib.experiments.reproduce {figure} --preset ci")


#: Record method -> the method name of :class:`~hmmlib.experiments.runners.TuningRow` (chapters 3-4).
_ROW_METHOD = {"ideal_head": ("ideal", "head"), "ideal_head_adamw": ("ideal", "head_adamw"),
               "ideal_prompt": ("ideal", "prompt"), "closed_form": ("ideal", "closed_form")}


def tuning_rows(records: list[dict]) -> list:
    """Records as :class:`~hmmlib.experiments.runners.TuningRow` (``ideal_head`` -> model ``ideal``,
    method ``head``; ``ideal_head_adamw`` -> ``head_adamw``; trained-model methods keep their names
    with model ``transformer``), for :func:`~hmmlib.experiments.runners.summarize`."""
    from .runners import TuningRow

    out = []
    for r in records:
        model, method = _ROW_METHOD.get(r["method"], ("transformer", r["method"]))
        m = r["metrics"]
        out.append(TuningRow(model, r["num_states"], r["seed"], method, m["test_accuracy"], m["train_accuracy"],
                             m["majority_rate"], m["trainable_parameters"]))
    return out


def accuracy_table(records: list[dict], metric: str = "test_accuracy") -> dict[tuple[str, int], dict[int, float]]:
    """``{(method, num_states): {seed: metric}}``."""
    out: dict[tuple[str, int], dict[int, float]] = {}
    for r in records:
        out.setdefault((r["method"], r["num_states"]), {})[r["seed"]] = r["metrics"][metric]
    return out


def summarize(records: list[dict]) -> dict[tuple[str, int], Summary]:
    """A :class:`Summary` of the test accuracy per (method, num_states)."""
    maj: dict[tuple[str, int], list[float]] = {}
    for r in records:
        maj.setdefault((r["method"], r["num_states"]), []).append(r["metrics"]["majority_rate"])
    out = {}
    for key, by_seed in accuracy_table(records).items():
        a = np.array([by_seed[s] for s in sorted(by_seed)], dtype=np.float64)
        n = a.size
        sd = float(a.std(ddof=1)) if n > 1 else 0.0
        out[key] = Summary(float(a.mean()), t_quantile(n - 1) * sd / math.sqrt(n) if n > 1 else None, sd, n,
                           float(np.mean(maj[key])))
    return out


def sign_flip_pvalue(d: np.ndarray, alternative: str = "greater") -> float:
    r"""Exact sign-flip p-value of the mean of paired differences ``d`` (all :math:`2^n` sign patterns
    for :math:`n\le 20`, else 200,000 seeded random ones, with the observed pattern counted so that
    :math:`p \ge 1/200{,}001`): ``greater`` tests mean > 0, ``less`` mean < 0,
    ``two-sided`` :math:`|\text{mean}|`."""
    d = np.asarray(d, dtype=np.float64)
    n = d.size
    if n == 0:
        raise ValueError("need at least one paired difference.")
    if n <= 20:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    else:
        signs = np.random.default_rng(0).choice((1.0, -1.0), size=(200_000, n))
    stats = signs @ d / n
    obs = d.mean()
    eps = 1e-12
    if alternative == "greater":
        hits = stats >= obs - eps
    elif alternative == "less":
        hits = stats <= obs + eps
    elif alternative == "two-sided":
        hits = np.abs(stats) >= abs(obs) - eps
    else:
        hits = None
    if hits is not None:
        # random patterns: count the observed one too, (hits + 1) / (draws + 1), so p is never 0
        return float(hits.mean()) if n <= 20 else float((hits.sum() + 1) / (hits.size + 1))
    raise ValueError(f"alternative must be 'greater', 'less' or 'two-sided'; got {alternative!r}.")


@dataclass(frozen=True)
class Paired:
    """Per-seed differences ``a - b`` at one size: their mean, median, 95% t-interval of the mean
    (``None`` for one seed), the sign-flip p-value of mean > 0, and the seeds used (those with both)."""

    mean: float
    median: float
    low: float | None
    high: float | None
    p_greater: float
    n: int
    diffs: tuple[float, ...]


def paired(records: list[dict], a: str, b: str) -> dict[int, Paired]:
    """:class:`Paired` differences of test accuracy, method ``a`` minus method ``b``, per size."""
    tab = accuracy_table(records)
    out = {}
    for K in sorted({k for (_, k) in tab}):
        A, B = tab.get((a, K), {}), tab.get((b, K), {})
        seeds = sorted(set(A) & set(B))
        if not seeds:
            continue
        d = np.array([A[s] - B[s] for s in seeds])
        n = d.size
        if n > 1:
            hw = t_quantile(n - 1) * d.std(ddof=1) / math.sqrt(n)
            low, high = float(d.mean() - hw), float(d.mean() + hw)
        else:
            low = high = None
        out[K] = Paired(float(d.mean()), float(np.median(d)), low, high, sign_flip_pvalue(d), n, tuple(map(float, d)))
    return out


def bootstrap_interval(samples: dict, stat, *, n_boot: int = 4000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float, float]:
    r"""``(estimate, low, high)``: ``stat(samples)`` and its seed-bootstrap percentile interval.

    ``samples`` maps a key (a size) to an array of per-seed values (or per-seed paired differences), one
    row per seed (a 2-d array keeps several values of one seed together); each replicate resamples every key's seeds with replacement, independently across keys, and
    evaluates ``stat`` on the resampled dict. ``n_boot`` replicates from ``numpy.random.default_rng(seed)``."""
    if not samples or any(np.asarray(v).size == 0 for v in samples.values()):
        raise ValueError("bootstrap_interval needs at least one value for every key of samples.")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1); got {level!r}.")
    arrs = {k: np.asarray(v, dtype=np.float64) for k, v in samples.items()}
    rng = np.random.default_rng(seed)
    reps = np.empty(n_boot)
    for b in range(n_boot):
        reps[b] = stat({k: a[rng.integers(0, len(a), len(a))] for k, a in arrs.items()})
    lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return float(stat(arrs)), float(lo), float(hi)


def _binom_two_sided(m: int, k: int) -> float:
    """Exact two-sided p-value of ``min(b, c) = k`` among ``m`` discordant pairs, ``Bin(m, 1/2)``."""
    from scipy.stats import binom

    if m == 0:
        return 1.0
    return float(min(1.0, 2.0 * binom.cdf(k, m, 0.5)))


def mcnemar_bound(acc_a: float, acc_b: float, n: int) -> float:
    r"""The largest exact two-sided McNemar p-value compatible with accuracies ``acc_a`` and ``acc_b`` of
    two classifiers on the same ``n`` test examples.

    With :math:`b` examples right for a only and :math:`c` right for b only, :math:`b - c = n(a - b)` is
    known from the accuracies but :math:`b + c` is not; it can be at most
    :math:`\min(2\min(n_a, n - n_b) - d,\ 2\min(n - n_a, n_b) + d)`. The exact test's p-value grows
    with :math:`b + c` at fixed :math:`d`, so the maximum over every feasible :math:`b + c` is a valid
    (conservative) p-value: a difference it calls significant is significant whatever the per-example
    agreement was."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer; got {n!r}.")
    na, nb = round(acc_a * n), round(acc_b * n)
    if not (0 <= na <= n and 0 <= nb <= n):
        raise ValueError(f"accuracies must be in [0, 1]; got {acc_a!r}, {acc_b!r}.")
    d = na - nb
    top = min(2 * min(na, n - nb) - d, 2 * min(n - na, nb) + d)
    best = 0.0
    for m in range(abs(d), top + 1, 2):
        best = max(best, _binom_two_sided(m, (m - abs(d)) // 2))
    return best


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as ``pvalues``): reject where ``adjusted < alpha``
    controls the family-wise error rate at ``alpha``."""
    p = np.asarray(pvalues, dtype=np.float64)
    if p.size == 0:
        return []
    if np.any((p < 0) | (p > 1)):
        raise ValueError("p-values must lie in [0, 1].")
    order = np.argsort(p, kind="stable")
    adj = np.empty_like(p)
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (p.size - i) * p[j]))
        adj[j] = running
    return adj.tolist()
