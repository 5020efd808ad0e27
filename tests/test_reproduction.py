"""Reading the records (hmmlib.experiments.reproduction): the sign-flip test against scipy's exact
permutation test, the t-interval against scipy, and the choice of committed records per build."""
from __future__ import annotations

import numpy as np
import pytest

from hmmlib.experiments import reproduction as rep

stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
def test_sign_flip_matches_scipy_exact_permutation_test(alternative):
    d = np.random.default_rng(3).normal(0.05, 0.1, size=11)
    ref = stats.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf,
                                 alternative=alternative).pvalue
    assert rep.sign_flip_pvalue(d, alternative) == pytest.approx(ref, abs=1e-12)


def test_sign_flip_with_random_patterns_is_never_zero_and_close_to_exact():
    d = np.full(40, 0.1)  # every seed positive: the exact p is 2^-40
    p = rep.sign_flip_pvalue(d, "greater")
    assert 0 < p <= 2 / 200_001
    d = np.random.default_rng(5).normal(0.02, 0.1, size=22)
    ref = stats.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf,
                                 alternative="greater").pvalue
    assert abs(rep.sign_flip_pvalue(d, "greater") - ref) < 4 * np.sqrt(ref * (1 - ref) / 200_000) + 1e-5


def test_t_interval_matches_scipy():
    a = np.array([0.91, 0.88, 0.95, 0.79, 0.85, 0.9])
    recs = [{"method": "head", "num_states": 12, "seed": s, "metrics": {"test_accuracy": v, "majority_rate": 0.6}}
            for s, v in enumerate(a)]
    s = rep.summarize(recs)[("head", 12)]
    lo, hi = stats.t.interval(0.95, len(a) - 1, loc=a.mean(), scale=stats.sem(a))
    assert s.mean == pytest.approx(a.mean()) and s.half_width == pytest.approx((hi - lo) / 2, rel=1e-3)


def test_record_sources_and_best_committed(tmp_path):
    assert rep.record_sources("ci")[0] == "ci"
    assert rep.record_sources("default")[:2] == ("paper", "repro")
    assert rep.record_sources("mine")[0] == "mine"
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "fig-b1.jsonl").write_text("")
    assert rep.best_committed("fig-b1", rep.record_sources("default"), tmp_path) == "default"
    with pytest.raises(ValueError, match="no committed records"):
        rep.best_committed("fig-b3", rep.record_sources("default"), tmp_path)


# --------------------------------------------------------------------------- intervals and paired tests
def test_bootstrap_interval_is_reproducible_and_covers_the_estimate():
    rng = np.random.default_rng(1)
    smp = {4: rng.normal(0.5, 0.1, 10), 8: rng.normal(0.3, 0.1, 10)}
    stat = lambda s: float(s[4].mean() - s[8].mean())
    est, lo, hi = rep.bootstrap_interval(smp, stat, n_boot=2000)
    assert (est, lo, hi) == rep.bootstrap_interval(smp, stat, n_boot=2000)
    assert lo < est < hi
    # the percentile interval of a mean difference is close to the normal-theory one
    se = np.sqrt(smp[4].var(ddof=1) / 10 + smp[8].var(ddof=1) / 10)
    assert abs((hi - lo) / (2 * 1.96 * se) - 1) < 0.25
    # rows of a 2-d array are resampled together (a ratio of paired columns stays finite)
    pairs = {4: np.column_stack([np.ones(5), 2 * np.ones(5)])}
    assert rep.bootstrap_interval(pairs, lambda s: float(s[4][:, 0].mean() / s[4][:, 1].mean())) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="at least one value"):
        rep.bootstrap_interval({4: np.array([])}, stat)
    with pytest.raises(ValueError, match="level"):
        rep.bootstrap_interval(smp, stat, level=1.5)


def _mcnemar_brute(acc_a, acc_b, n):
    """Every 2x2 table with these margins: the largest exact two-sided McNemar p-value."""
    from scipy.stats import binomtest

    na, nb = round(acc_a * n), round(acc_b * n)
    best = 0.0
    for both in range(n + 1):          # right for both
        b, c = na - both, nb - both    # right for a only, right for b only
        if b < 0 or c < 0 or both + b + c > n:
            continue
        p = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue
        best = max(best, p)
    return best


@pytest.mark.parametrize("a,b,n", [(0.9, 0.85, 40), (0.5, 0.55, 20), (1.0, 0.9, 30), (0.7, 0.7, 25), (0.05, 0.3, 20)])
def test_mcnemar_bound_equals_the_worst_table(a, b, n):
    assert rep.mcnemar_bound(a, b, n) == pytest.approx(_mcnemar_brute(a, b, n), abs=1e-12)


def test_mcnemar_bound_rejects_bad_input():
    with pytest.raises(ValueError, match="positive integer"):
        rep.mcnemar_bound(0.5, 0.5, 0)
    with pytest.raises(ValueError, match="accuracies"):
        rep.mcnemar_bound(1.5, 0.5, 10)


def test_holm_matches_its_definition():
    p = [0.01, 0.04, 0.03, 0.2]
    # sorted 0.01, 0.03, 0.04, 0.2 -> 4*0.01, 3*0.03, 2*0.04 (then monotone), 1*0.2
    assert rep.holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert rep.holm([]) == []
    with pytest.raises(ValueError, match="p-values"):
        rep.holm([1.2])
