"""The converged head (hmmlib.adapt.logistic) against independent solvers on the same features:
scikit-learn's LogisticRegression (L-BFGS) and scipy's trust-region Newton-CG, to 1e-6 in the objective."""
from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

import hmmlib  # noqa: E402
from hmmlib.adapt import tasks  # noqa: E402
from hmmlib.adapt.logistic import (  # noqa: E402
    as_linear_head, fit_logistic_head, fit_logistic_head_validated, load_into_head, logistic_objective,
)

sklearn_lm = pytest.importorskip("sklearn.linear_model")
scipy_opt = pytest.importorskip("scipy.optimize")
scipy_special = pytest.importorskip("scipy.special")


def _paper_features(K: int, seed: int, n: int = 800):
    hmm = hmmlib.paper_hmm(K, 10, seed=seed)
    _, splits, _ = tasks.paper_task_and_splits(hmm, seed=seed, sizes=(n, 200, 200), seq_len=32)
    return splits


def _dirichlet_features(seed: int, n: int = 600, V: int = 8):
    """Features on the simplex with labels from a noisy linear rule (not separable)."""
    g = np.random.default_rng(seed)
    F = g.dirichlet(np.full(V, 0.7), size=n)
    w = g.standard_normal(V) * 4
    y = (F @ w + 0.3 * g.standard_normal(n) > np.median(F @ w)).astype(np.int64)
    return F, y


def _sklearn_objective(F, y, l2):
    n = F.shape[0]
    # sklearn minimises C * sum(log-loss) + ||w||^2 / 2 (bias unpenalised): C = 1 / (n * l2) is our J times n/C
    clf = sklearn_lm.LogisticRegression(C=1.0 / (n * l2), tol=1e-14, max_iter=100_000, solver="lbfgs")
    clf.fit(F, y)
    return logistic_objective(F, y, clf.coef_[0], clf.intercept_[0], l2), clf


def _scipy_objective(F, y, l2):
    n, V = F.shape
    Ft = np.hstack([F, np.ones((n, 1))])
    reg = np.r_[np.full(V, l2), 0.0]

    def fun(th):
        z = Ft @ th
        return np.mean(np.logaddexp(0, z) - y * z) + 0.5 * np.sum(reg * th * th)

    def jac(th):
        s = scipy_special.expit(Ft @ th)
        return Ft.T @ (s - y) / n + reg * th

    def hessp(th, p):
        s = scipy_special.expit(Ft @ th)
        return Ft.T @ ((s * (1 - s)) * (Ft @ p)) / n + reg * p

    res = scipy_opt.minimize(fun, np.zeros(V + 1), jac=jac, hessp=hessp, method="trust-ncg",
                             options={"gtol": 1e-12, "maxiter": 10_000})
    return logistic_objective(F, y, res.x[:V], res.x[V], l2)


@pytest.mark.parametrize("l2", [1e-2, 1e-4])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_sklearn_and_scipy_on_simplex_features(seed, l2):
    F, y = _dirichlet_features(seed)
    w, c, info = fit_logistic_head(F, y, l2)
    ours = logistic_objective(F, y, w, c, l2)
    sk, clf = _sklearn_objective(F, y, l2)
    sp = _scipy_objective(F, y, l2)
    assert info.converged and info.l2 == l2
    assert abs(ours - sk) <= 1e-6 and abs(ours - sp) <= 1e-6
    assert ours <= min(sk, sp) + 1e-9  # never worse than either independent solver
    # same predictions as scikit-learn's head
    assert (((torch.as_tensor(F) @ w + c) > 0).numpy() == clf.predict(F).astype(bool)).mean() >= 0.995


@pytest.mark.parametrize("K,seed", [(4, 3), (12, 5), (25, 7)])
def test_matches_independent_solvers_on_the_papers_G(K, seed):
    """On the features the book's heads read, G(x) = W p(x) of the paper's generator (ill-conditioned:
    nearby hidden states share a dominant symbol)."""
    sp = _paper_features(K, seed)
    F, y = sp["train"].G.numpy(), sp["train"].y.numpy()
    l2 = 1e-3
    w, c, info = fit_logistic_head(F, y, l2)
    ours = info.objective
    assert abs(ours - logistic_objective(F, y, w, c, l2)) <= 1e-12
    sk, _ = _sklearn_objective(F, y, l2)
    sp_obj = _scipy_objective(F, y, l2)
    assert abs(ours - sk) <= 1e-6 and abs(ours - sp_obj) <= 1e-6
    assert ours <= min(sk, sp_obj) + 1e-9


def test_separable_data_small_penalty_converges_and_separates():
    """Separable data: the minimiser is finite for l2 > 0, and with a small penalty it separates the data."""
    g = np.random.default_rng(0)
    F = g.dirichlet(np.ones(5), size=600)
    F = F[np.abs(F[:, 0] - F[:, 1]) > 0.05][:300]  # a margin of 0.05 / sqrt(2)
    y = (F[:, 0] > F[:, 1]).astype(np.int64)
    w, c, info = fit_logistic_head(F, y, 1e-6)
    assert info.converged and info.train_accuracy == 1.0
    assert abs(info.objective - _scipy_objective(F, y, 1e-6)) <= 1e-6


def test_validated_penalty_is_chosen_on_validation_data_and_beats_a_large_one():
    """The validated head is at least as good on validation data as every penalty of the grid."""
    sp = _paper_features(12, 11, n=1000)
    w, c, info, path = fit_logistic_head_validated(sp["train"].G, sp["train"].y, sp["val"].G, sp["val"].y)
    assert path[info.l2] == max(path.values())
    assert info.l2 == max(l for l, a in path.items() if a == path[info.l2])  # ties go to the larger penalty


def test_linear_head_has_the_same_decision():
    F, y = _dirichlet_features(3)
    w, c, _ = fit_logistic_head(F, y, 1e-3)
    head = as_linear_head(w, c, dtype=torch.float64)
    logits = head(torch.as_tensor(F))
    assert torch.allclose(logits[:, 1] - logits[:, 0], torch.as_tensor(F) @ w + c, atol=1e-12)
    with pytest.raises(ValueError, match="nn.Linear"):
        load_into_head(torch.nn.Linear(3, 2), w, c)


@pytest.mark.parametrize("kwargs,match", [
    (dict(features=np.ones(4), y=[0, 1, 0, 1]), "matrix"),
    (dict(features=np.ones((4, 2)), y=[0, 1, 0]), "one label per row"),
    (dict(features=np.ones((4, 2)), y=[0, 1, 2, 1]), "labels 0 and 1"),
    (dict(features=np.ones((4, 2)), y=[0, 1, 0, 1], l2=0.0), "l2 must be"),
    (dict(features=np.full((4, 2), np.nan), y=[0, 1, 0, 1]), "non-finite"),
])
def test_bad_input_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit_logistic_head(**kwargs)


def test_warm_started_path_reaches_each_penalty_s_own_optimum():
    """Each point of the warm-started regularisation path is the cold-started minimiser at that penalty
    (scipy, an independent solver), to 1e-6 in the objective, down to the smallest penalty of the grid."""
    from hmmlib.adapt.logistic import logistic_path

    F, y = _dirichlet_features(5)
    for l2, w, c, info in logistic_path(F, y, l2_grid=(1e-2, 1e-4, 1e-6)):
        assert info.converged
        assert abs(info.objective - _scipy_objective(F, y, l2)) <= 1e-6, l2


def test_converged_head_reports_the_whole_path_and_its_choice():
    from hmmlib.adapt import HeadConfig, tune_and_evaluate

    sp = _paper_features(12, 11, n=1000)
    hmm = hmmlib.paper_hmm(12, 10, seed=11)
    r = tune_and_evaluate(hmm, HeadConfig(), sp)
    by = r["head"]["accuracy_by_l2"]
    assert set(by) == set(sp) and by["val"] == r["tuner"].solution.val_by_l2
    chosen = r["head"]["l2"]
    assert by["val"][chosen] == max(by["val"].values())
    assert chosen == max(l for l, a in by["val"].items() if a == by["val"][chosen])  # ties go to the larger penalty
    # the reported test accuracy is the chosen head's, recomputed here from its weights
    sol = r["tuner"].solution
    G = sp["test"].G.double()
    acc = float((((G @ sol.weight + sol.bias) > 0).long() == sp["test"].y).double().mean())
    assert r["test"]["accuracy"] == by["test"][chosen] == acc
    assert r["parameters"]["trainable"] == 11


@pytest.mark.parametrize("K", [4, 30])
def test_default_head_is_the_converged_head_on_held_out_hmms(K):
    """On HMMs the book does not use, the preset's default head (``tune_config("head")``) is the minimiser of
    the penalised log-loss at the penalty it chose, to 1e-6 in the objective against scipy's trust-region
    Newton-CG, and that penalty is the best on validation data of every penalty, each solved by scipy too."""
    from hmmlib.adapt import tune_and_evaluate
    from hmmlib.adapt.tasks import sub_seed
    from hmmlib.experiments.presets import get_preset

    sz = get_preset("ci").tuning
    for s in (1000, 1001, 1002):
        hmm = hmmlib.paper_hmm(K, 10, seed=s)
        _, sp, _ = tasks.paper_task_and_splits(hmm, seed=sub_seed(s, K), sizes=sz.split_sizes, seq_len=sz.seq_len)
        r = tune_and_evaluate(hmm, sz.tune_config("head", "ideal", seed=s), sp)
        F, y = sp["train"].G.numpy(), sp["train"].y.numpy()
        l2 = r["head"]["l2"]
        assert r["head"]["converged"]
        assert abs(r["head"]["objective"] - _scipy_objective(F, y, l2)) <= 1e-6, (K, s, l2)
        val = r["head"]["accuracy_by_l2"]["val"]
        assert val[l2] == max(val.values()) == r["val"]["accuracy"]
