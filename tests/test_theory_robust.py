"""Robust theory tools (hmmlib.adapt.theory_robust), checked against brute force and independent computations."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import hmmlib
from hmmlib.adapt import theory as th
from hmmlib.adapt import theory_robust as tr
from hmmlib.adapt.tasks import make_dataset, task_from_mu

from test_theory import brute_prompted

F64 = torch.float64


def _skewed_hmm(seed: int = 0) -> hmmlib.HMM:
    """A Dirichlet HMM whose pi is far from stationary."""
    h = hmmlib.dirichlet_hmm(4, 3, seed=seed)
    pi = torch.tensor([0.55, 0.05, 0.1, 0.3], dtype=F64)
    return hmmlib.HMM(pi, h.A, h.W)


@pytest.mark.parametrize("k", [1, 2])
def test_effective_reweighting_matches_brute_force(k):
    hmm = _skewed_hmm(1)
    U = torch.rand(k, 4, generator=torch.Generator().manual_seed(k), dtype=F64) + 0.1
    x, _ = hmmlib.sample(hmm, 3, 4, seed=k)
    vp = tr.effective_reweighting(hmm, U)
    p = hmmlib.posterior_h0(hmm, x)
    ours = (p * vp) / (p * vp).sum(1, keepdim=True)
    for i in range(3):
        brute, _ = brute_prompted(hmm, U, x[i], hmm.pi)
        assert torch.allclose(ours[i], brute, atol=1e-12)


def test_effective_reweighting_rejects_zero_pi():
    h = hmmlib.dirichlet_hmm(3, 3, seed=0)
    bad = hmmlib.HMM(torch.tensor([0.5, 0.5, 0.0], dtype=F64), h.A, h.W)
    with pytest.raises(ValueError, match="zero entry"):
        tr.effective_reweighting(bad, torch.ones(3, dtype=F64))


def _cycle_hmm():
    K = 6
    A = torch.zeros(K, K, dtype=F64)
    for h in range(K):
        A[(h + 1) % K, h], A[(h + 2) % K, h] = 0.8, 0.2
    W = torch.tensor([[0.7, 0.1, 0.8, 0.1, 0.3, 0.2], [0.2, 0.8, 0.1, 0.2, 0.3, 0.2],
                      [0.1, 0.1, 0.1, 0.7, 0.4, 0.6]], dtype=F64)
    return hmmlib.HMM(torch.full((K,), 1 / K, dtype=F64), A, W)


def test_sparse_conditions_exact_case():
    hmm = _cycle_hmm()
    mu = torch.tensor([0, 0, 1.0, -1.0, 0, 0], dtype=F64)
    c = tr.sparse_prompt_conditions(hmm, mu)
    assert c.support == [2, 3] and c.exact_b and c.leak < 1e-9 and c.sigma_min_support > 0
    # the constructed prompt and head realise mu exactly: every example correct (forward filtering, not R)
    ds = make_dataset(hmm, task_from_mu(mu), 300, 16, seed=0)
    post = th.prompted_posterior_augmented(hmm, c.u, ds.x)
    assert ((post @ hmm.W.T @ c.b >= 0).long() == ds.y).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sparse_conditions_lp_is_optimal_and_sound(seed):
    hmm = hmmlib.paper_hmm(8, 5, seed=seed, transition_temp=0.3)
    mu = torch.zeros(8, dtype=F64)
    mu[[1, 4, 6]] = torch.tensor([1.0, -0.7, 0.4], dtype=F64)
    c = tr.sparse_prompt_conditions(hmm, mu)
    # optimal: no random non-negative prompt does better (eta = max off / min on)
    U = torch.rand(3000, 8, generator=torch.Generator().manual_seed(seed), dtype=F64) ** 4
    V = torch.stack([tr.effective_reweighting(hmm, u) for u in U])
    ratio = V[:, [0, 2, 3, 5, 7]].max(1).values / V[:, [1, 4, 6]].min(1).values
    assert c.eta <= float(ratio.min()) + 1e-9
    assert c.leak <= c.leak_bound * (1 + 1e-9)
    # sound: wherever guaranteed, the constructed prompt is right (prompted posterior by forward filtering)
    ds = make_dataset(hmm, task_from_mu(mu), 400, 12, seed=seed, require_two_classes=False)
    ok = ((th.prompted_posterior_augmented(hmm, c.u, ds.x) @ hmm.W.T @ c.b >= 0).long() == ds.y)
    g = c.guaranteed(ds.posterior, mu)
    assert bool(ok[g].all())


def test_sparse_conditions_errors():
    hmm = _cycle_hmm()
    with pytest.raises(ValueError, match="num_states"):
        tr.sparse_prompt_conditions(hmm, torch.ones(3))
    with pytest.raises(ValueError, match="no support"):
        tr.sparse_prompt_conditions(hmm, torch.zeros(6))


def test_perceptron_mistake_bound():
    gen = torch.Generator().manual_seed(0)
    G = torch.rand(500, 5, generator=gen, dtype=F64)
    G = G / G.sum(1, keepdim=True)
    b = torch.tensor([1.0, -2.0, 0.5, 0.3, -0.1], dtype=F64)
    s = G @ b
    keep = s.abs() >= 0.1
    G, y = G[keep], (s[keep] >= 0).long()
    w, mistakes, converged = tr.perceptron(G, y)
    assert converged and bool((((G @ w) > 0).long() == y).all())
    gamma = float((G @ b).abs().min())
    R = float(G.norm(dim=1).max())
    assert mistakes <= (b.norm() * R / gamma) ** 2   # Novikoff


def test_perceptron_and_bound_errors():
    with pytest.raises(ValueError, match="shape"):
        tr.perceptron(torch.zeros(3, 2), torch.zeros(4))
    with pytest.raises(ValueError, match="max_epochs"):
        tr.perceptron(torch.zeros(3, 2), torch.zeros(3), max_epochs=0)
    with pytest.raises(ValueError, match="sigma_min"):
        tr.head_sample_bound(torch.ones(3), 0.0, 0.1, 10)
    assert tr.head_sample_bound(torch.tensor([3.0, 4.0]), 0.5, 0.5, 99) == pytest.approx(25 / (0.0625 * 100))


def _with(A, pi, W):
    return hmmlib.HMM(torch.as_tensor(pi, dtype=F64), torch.as_tensor(A, dtype=F64), torch.as_tensor(W, dtype=F64))


def test_shortcut_exact_and_inexact_cases():
    W = hmmlib.dirichlet_hmm(4, 3, seed=2).W
    skew = [0.55, 0.05, 0.1, 0.3]
    swap = [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]]        # two 2-cycles
    cases = {
        "identity, skewed pi": (torch.eye(4), skew, True),
        "two 2-cycles, pi constant on each": (swap, [0.35, 0.35, 0.15, 0.15], True),
        "uniform pi, doubly stochastic": (hmmlib.paper_hmm(4, 3, seed=0, transition_temp=1.0).A, [0.25] * 4, True),
        "4-cycle, skewed pi": (torch.roll(torch.eye(4), 1, 0), skew, False),
        "two 2-cycles, skewed pi": (swap, skew, False),
    }
    for name, (A, pi, exact) in cases.items():
        hmm = _with(A, pi, W)
        x, _ = hmmlib.sample(hmm, 50, 6, seed=0)
        gap = (tr.shortcut_posterior_h0(hmm, x) - hmmlib.posterior_h0(hmm, x)).abs().max()
        assert (gap < 1e-12) == exact, (name, float(gap))


def test_nearest_neighbour_accuracy_matches_a_loop():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(60, 3, generator=gen, dtype=F64)
    y = (X[:, 0] + 0.3 * torch.randn(60, generator=gen, dtype=F64) > 0).long()
    Xn, yn = X.numpy(), y.numpy()
    hits = 0
    for i in range(60):
        d = [np.linalg.norm(Xn[i] - Xn[j]) if j != i else np.inf for j in range(60)]
        hits += yn[int(np.argmin(d))] == yn[i]
    assert tr.nearest_neighbour_accuracy(X, y) == pytest.approx(hits / 60)
    with pytest.raises(ValueError, match="N >= 2"):
        tr.nearest_neighbour_accuracy(X[:1], y[:1])


def test_binomial_se():
    assert tr.binomial_se(0.5, 100) == pytest.approx(0.05)
    assert tr.binomial_se(1.0, 100) == pytest.approx(0.005)
    with pytest.raises(ValueError, match="rate"):
        tr.binomial_se(1.5, 10)
    with pytest.raises(ValueError, match="positive"):
        tr.binomial_se(0.5, 0)


def test_linearly_separable_against_known_cases():
    gen = torch.Generator().manual_seed(3)
    X = torch.rand(80, 4, generator=gen, dtype=F64)
    X = X / X.sum(1, keepdim=True)
    b = torch.tensor([1.0, -1.0, 0.5, -0.2], dtype=F64)
    y = (X @ b >= 0).long()
    assert tr.linearly_separable(X[(X @ b).abs() > 1e-3], y[(X @ b).abs() > 1e-3])
    # XOR-like labels on the corners of a square (with a constant feature) are not separable
    Q = torch.tensor([[0, 0, 1], [1, 1, 1], [0, 1, 1], [1, 0, 1]], dtype=F64)
    assert not tr.linearly_separable(Q, torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="features"):
        tr.linearly_separable(Q, torch.tensor([0, 1]))
