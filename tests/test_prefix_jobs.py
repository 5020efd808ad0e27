"""Chapter 7's pipeline figures (hmmlib.experiments.prefix_jobs) and verdicts (prefix_verdicts)."""
import numpy as np
import pytest
import torch
from scipy.stats import ttest_1samp

from hmmlib.adapt.causal_tuning import CausalPrefixConfig, TrainSettings, evaluate, fit, make_causal_tuner
from hmmlib.experiments import prefix_jobs as pj
from hmmlib.experiments import prefix_verdicts as pv
from hmmlib.experiments.jobs import plan
from hmmlib.experiments.pipeline import DEFAULT_RESULTS, results_path
from hmmlib.experiments.records import load_records
from hmmlib.experiments.repro_presets import resolve_preset


def test_holm_matches_the_step_down_rule():
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = list(rng.uniform(0, 0.1, size=rng.integers(1, 12)))
        adj = pv.holm(p)
        order = np.argsort(p, kind="stable")
        m = len(p)
        reject = np.zeros(m, bool)
        for i, j in enumerate(order):  # reject while p_(i) <= alpha / (m - i)
            if p[j] > 0.05 / (m - i):
                break
            reject[j] = True
        assert list(reject) == [a <= 0.05 for a in adj]


def test_paired_test_matches_scipy_and_the_verdict_rule():
    d = np.array([0.3, 0.1, 0.2, -0.05, 0.15, 0.12])
    t = pv.paired_test(pv.Test("x", d))
    assert t.p == pytest.approx(ttest_1samp(d, 0.0, alternative="greater").pvalue, rel=1e-10)
    assert t.low < d.mean() < t.high
    e = pv.equivalence_test(pv.Test("e", d - d.mean(), "equivalent", 1.0))
    assert e.p < 1e-3  # far inside a wide margin
    assert pv.verdict_of([True, True], 4) == "too few seeds"
    assert pv.verdict_of([True, False], 5) == "partly"
    assert pv.verdict_of([False, False], 10) == "does not transfer"
    assert pv.verdict_of([True], 10) == "transfers"


@pytest.mark.parametrize("figure", pj.CH7_FIGURES)
def test_ci_records_are_complete_and_valid(figure):
    p, g = resolve_preset("ci")
    ids = {j.id for j in plan(figure, p, g)}
    recs = load_records(results_path(DEFAULT_RESULTS, "ci", figure))
    assert {r["id"] for r in recs} == ids
    for r in recs:
        m = r["metrics"]
        if m["lr"] is not None:  # the rate is one of the shared grid, chosen as the lowest validation KL
            by = m["extra"]["by_lr"]
            assert m["lr"] in pj.ch7_grid("ci").lr_grid
            assert m["val_kl"] == min(v["val_kl"] for v in by.values())


def test_ci_verdicts_refuse_below_five_seeds():
    recs = {f: load_records(results_path(DEFAULT_RESULTS, "ci", f)) for f in pj.CH7_FIGURES}
    cl = pv.claims(recs)
    assert {c.key for c in cl} >= {f"R{i}" for i in range(1, 12)}
    assert all(c.verdict == "too few seeds" for c in cl)


def test_fit_restores_the_best_validation_checkpoint():
    ctx = pj._context("ci", None, torch.device("cpu"))
    model, _ = ctx.model()
    train, val = ctx.split("train"), ctx.split("val")
    t = make_causal_tuner(model, CausalPrefixConfig(2, 16), seed=0)
    hist = fit(t, train, TrainSettings(lr=0.3, num_steps=12, seed=0), log_every=1, val=val, eval_every=3)
    vals = [h["val_kl"] for h in hist if "val_kl" in h]
    assert len(vals) == 4 and sum(h.get("best", False) for h in hist) == 1
    assert evaluate(t, val)["kl"] == pytest.approx(min(vals), abs=1e-6)


def test_bad_names_raise():
    with pytest.raises(ValueError, match="chapter-7 grid"):
        pj.ch7_grid("huge")
    with pytest.raises(ValueError, match="chapter-7 figure"):
        pj.cells("ch7-r99", pj.ch7_grid("ci"))
