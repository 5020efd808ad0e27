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
