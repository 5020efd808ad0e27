"""Head and prompt tuning theory (hmmlib.theory), checked against numpy and brute-force enumeration."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import hmmlib
from hmmlib import bruteforce, theory as th
from hmmlib.adapt.tasks import make_dataset, task_from_mu

F64 = torch.float64

TINY = {
    "dir-K3-V4": lambda: hmmlib.dirichlet_hmm(3, 4, seed=1),
    "dir-K4-V3-peaked": lambda: hmmlib.dirichlet_hmm(
        4, 3, start_concentration=0.3, transition_concentration=0.3, emission_concentration=0.3, seed=3),
    "dir-K2-V2": lambda: hmmlib.dirichlet_hmm(2, 2, seed=0),
    "paper-K3-V4": lambda: hmmlib.paper_hmm(3, 4, seed=0),
    "paper-K4-V5-2perms": lambda: hmmlib.paper_hmm(4, 5, num_perms=2, seed=5),
}


@pytest.fixture(params=list(TINY.values()), ids=list(TINY))
def tiny_hmm(request) -> hmmlib.HMM:
    return request.param()


def _positive(shape, seed):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=F64) + 0.1


# --------------------------------------------------------------------------- brute force for the prompted model
def brute_prompted(hmm: hmmlib.HMM, U: torch.Tensor, x: torch.Tensor, prior: torch.Tensor):
    """``(P(H_0 | z, x), P(X_0 | z, x))`` summing over every path of positions -k..T by hand."""
    k, T = U.shape[0], x.numel()
    paths = bruteforce.all_paths(hmm.num_states, k + 1 + T)  # column j is position j - k
    w = prior[paths[:, 0]] * U[0][paths[:, 0]]
    for j in range(1, k + 1 + T):
        w = w * hmm.A[paths[:, j], paths[:, j - 1]]
        if j < k:
            w = w * U[j][paths[:, j]]
        elif j > k:
            w = w * hmm.W[x[j - k - 1], paths[:, j]]
    post = torch.zeros(hmm.num_states, dtype=F64).index_add_(0, paths[:, k], w)
    post = post / post.sum()
    return post, hmm.W @ post


@pytest.mark.parametrize("k", [1, 2])
def test_prompted_matches_brute_force(tiny_hmm, k):
    hmm = tiny_hmm
    K = hmm.num_states
    x, _ = hmmlib.sample(hmm, 3, 4, seed=k)
    priors = [None, torch.softmax(torch.randn(K, generator=torch.Generator().manual_seed(1), dtype=F64), 0)]
    for prior in priors:
        U = _positive((k, K), seed=10 * k + K)
        U[0, 0] = 0.0  # zeros are allowed
        post = th.prompted_posterior(hmm, U, x, prior=prior)
        G = th.prompted_conditional(hmm, U, x, prior=prior)
        aug = th.prompted_posterior_augmented(hmm, U, x, prior=prior)
        for i in range(x.shape[0]):
            bp, bG = brute_prompted(hmm, U, x[i], hmm.pi if prior is None else prior)
            torch.testing.assert_close(post[i], bp, rtol=0, atol=1e-10)
            torch.testing.assert_close(G[i], bG, rtol=0, atol=1e-10)
            torch.testing.assert_close(aug[i], bp, rtol=0, atol=1e-10)
    if k == 1:  # a (K,) row is a one-token prompt; a 1-D x gives a 1-D output
        torch.testing.assert_close(th.prompted_conditional(hmm, U[0], x[0], prior=prior), G[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_composed_and_augmented_agree_on_long_inputs(k):
    hmm = hmmlib.paper_hmm(8, seed=3)
    x, _ = hmmlib.sample(hmm, 20, 64, seed=0)
    U = _positive((k, 8), seed=k)
    torch.testing.assert_close(th.prompted_posterior(hmm, U, x), th.prompted_posterior_augmented(hmm, U, x),
                               rtol=0, atol=1e-10)


def test_uniform_prompt_is_head_tuning():
    hmm = hmmlib.paper_hmm(5, seed=1)
    x, _ = hmmlib.sample(hmm, 16, 20, seed=0)
    for k in (1, 3):
        U = torch.full((k, 5), 0.37, dtype=F64)
        m0 = th.prompt_prior_h0(hmm, k)
        # P(H_k) with nothing observed, by enumerating every path of positions 0..k
        unseen = torch.ones(k + 1, dtype=torch.bool)
        brute = bruteforce.brute_posteriors(hmm, torch.zeros(k + 1, dtype=torch.int64), unseen)[k]
        torch.testing.assert_close(m0, brute, rtol=0, atol=1e-12)
        ref = hmmlib.masked_conditional(hmmlib.HMM(m0, hmm.A, hmm.W), x)
        torch.testing.assert_close(th.prompted_conditional(hmm, U, x), ref, rtol=0, atol=1e-12)
    # with a stationary prior (uniform, for the paper's doubly-stochastic A) it is exactly G(x)
    flat = hmmlib.HMM(torch.full((5,), 0.2, dtype=F64), hmm.A, hmm.W)
    torch.testing.assert_close(th.prompted_conditional(flat, torch.ones(2, 5), x),
                               hmmlib.masked_conditional(flat, x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2])
def test_gradcheck(k):
    hmm = hmmlib.dirichlet_hmm(3, 4, seed=2)
    x, _ = hmmlib.sample(hmm, 4, 6, seed=1)
    u = _positive((k, 3), seed=k).requires_grad_(True)
    head = torch.tensor([0.3, -1.0, 2.0, 0.5], dtype=F64)
    assert torch.autograd.gradcheck(lambda u: th.prompted_conditional(hmm, u, x), (u,))
    assert torch.autograd.gradcheck(lambda u: (th.prompted_conditional(hmm, u, x) @ head).sum(), (u,))
    assert torch.autograd.gradcheck(lambda u: th.prompted_posterior_augmented(hmm, u, x), (u,))


# --------------------------------------------------------------------------- reversed chain
def test_reverse_transition_brute_force(tiny_hmm):
    hmm = tiny_hmm
    K = hmm.num_states
    for prior in (None, torch.softmax(torch.arange(K, dtype=F64), 0)):
        R = th.reverse_transition(hmm, prior)
        two = hmmlib.HMM(hmm.pi if prior is None else prior, hmm.A, hmm.W)
        j = bruteforce.joint(two, [0, 0], missing=[True, True]).reshape(K, K)  # j[h_-1, h_0]
        torch.testing.assert_close(R, (j / j.sum(0)).T, rtol=0, atol=1e-12)


def test_reverse_transition_unreachable_state():
    A = torch.tensor([[0.5, 0.5, 1.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0]], dtype=F64)  # nothing enters 2
    hmm = hmmlib.HMM(torch.full((3,), 1 / 3, dtype=F64), A, torch.eye(3, dtype=F64))
    R = th.reverse_transition(hmm)
    torch.testing.assert_close(R[2], hmm.pi)  # the documented fallback for a state nothing enters
    # the reachable rows: P(H_-1 | H_0 = h) by enumerating the two-step chain
    j = bruteforce.joint(hmm, [0, 0], missing=[True, True]).reshape(3, 3)  # j[h_-1, h_0]
    torch.testing.assert_close(R[:2], (j[:, :2] / j[:, :2].sum(0)).T, rtol=0, atol=1e-12)


def test_prompt_for_reweighting():
    hmm = hmmlib.paper_hmm(4, seed=0)
    v = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=F64)
    u = th.prompt_for_reweighting(hmm, v)
    assert (u >= 0).all()
    torch.testing.assert_close(th.prompt_reweighting(hmm, u), v, rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match=r"outside the cone \{R u : u >= 0\}"):
        th.prompt_for_reweighting(hmmlib.dirichlet_hmm(3, 3, seed=0), torch.tensor([1.0, 0.0, 0.0]))


# --------------------------------------------------------------------------- head tuning
def test_nondegeneracy_vs_numpy():
    for W in (hmmlib.paper_hmm(4, 10, seed=1).W, hmmlib.dirichlet_hmm(5, 7, seed=0).W):
        nd = th.nondegeneracy(W)
        Wn = W.numpy()
        s = np.linalg.svd(Wn, compute_uv=False)
        assert nd.rank == np.linalg.matrix_rank(Wn) == W.shape[1] and nd.full_column_rank
        assert nd.sigma_min == pytest.approx(s.min(), rel=1e-12)
        assert nd.sigma_max == pytest.approx(s.max(), rel=1e-12)
        assert nd.condition_number == pytest.approx(np.linalg.cond(Wn), rel=1e-9)
    W = hmmlib.paper_hmm(12, 10, seed=0).W  # more states than symbols
    nd = th.nondegeneracy(W)
    assert nd.rank == np.linalg.matrix_rank(W.numpy()) == 10 and not nd.full_column_rank
    assert nd.sigma_min == 0.0 and nd.condition_number == float("inf") and nd.num_columns == 12
    sub = th.nondegeneracy(W, support=[0, 3, 7])
    s = np.linalg.svd(W[:, [0, 3, 7]].numpy(), compute_uv=False)
    assert sub.num_columns == 3 and sub.sigma_min == pytest.approx(s.min(), rel=1e-12)
    dup = torch.tensor([[0.5, 0.5, 0.2], [0.5, 0.5, 0.8]], dtype=F64)  # two equal columns
    assert th.nondegeneracy(dup).rank == 2 and th.nondegeneracy(dup[:, 1:]).full_column_rank


def test_closed_form_head_exact():
    hmm = hmmlib.paper_hmm(4, 10, seed=0)
    mu = torch.tensor([1.3, -0.4, 0.0, -0.8], dtype=F64)
    ds = make_dataset(hmm, task_from_mu(mu), 2000, 32, seed=0)
    b = th.closed_form_head(hmm.W, mu)
    assert b.shape == (10,) and th.head_realizes(hmm.W, mu)
    torch.testing.assert_close(ds.G @ b, ds.posterior @ mu, rtol=0, atol=1e-10)
    assert torch.equal((ds.G @ b >= 0).long(), ds.y)
    assert torch.linalg.norm(b) <= torch.linalg.norm(mu) / th.nondegeneracy(hmm.W).sigma_min + 1e-9
    # more states than symbols: a generic mu is outside the row space of W
    W12 = hmmlib.paper_hmm(12, 10, seed=0).W
    assert not th.head_realizes(W12, torch.randn(12, generator=torch.Generator().manual_seed(0), dtype=F64))
    assert th.head_realizes(W12, W12.T @ torch.arange(10, dtype=F64))


def test_kernel_direction_and_degenerate_pair():
    W = hmmlib.paper_hmm(6, 4, seed=0).W
    v = th.kernel_direction(W)
    torch.testing.assert_close(W @ v, torch.zeros(4, dtype=F64), rtol=0, atol=1e-12)
    assert float(v.sum()) == pytest.approx(0, abs=1e-12) and float(v.abs().max()) > 0.1  # not the zero vector
    lo, hi, v2 = th.degenerate_pair(W)
    assert torch.equal(v, v2) and (lo >= -1e-15).all() and (hi >= -1e-15).all()
    assert float((hi - lo).abs().sum()) > 0.1 and float(lo.sum()) == pytest.approx(1)
    torch.testing.assert_close(W @ lo, W @ hi, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="full column rank"):
        th.kernel_direction(hmmlib.paper_hmm(4, 10, seed=0).W)


def test_best_linear_head_accuracy_two_symbols():
    gen = torch.Generator().manual_seed(0)
    g = torch.rand(40, generator=gen, dtype=F64).round(decimals=1)  # ties on purpose
    G = torch.stack([g, 1 - g], 1)
    y = (torch.rand(40, generator=gen) < 0.5).long()
    heads = torch.randn(20000, 2, generator=gen, dtype=F64)  # random heads never beat the scan, and reach it
    accs = (((G @ heads.T) >= 0).long() == y[:, None]).double().mean(0)
    assert float(accs.max()) == pytest.approx(th.best_linear_head_accuracy_two_symbols(G, y), abs=1e-12)
    assert th.best_linear_head_accuracy_two_symbols(G, (g >= 0.5).long()) == 1.0


# --------------------------------------------------------------------------- the worked counterexample
def test_counterexample():
    hmm, mu, u, b = th.counterexample_head_fails_prompt_works()
    W = hmm.W
    assert (u >= 0).all() and torch.equal(torch.sign(W.T @ b), torch.sign(mu))
    assert not th.head_realizes(W, mu) and float(mu @ th.kernel_direction(W)) != 0
    v = th.prompt_reweighting(hmm, u)
    torch.testing.assert_close(v * (W.T @ b), mu, rtol=0, atol=1e-12)
    xs = [torch.tensor(list(itertools.product([0, 1], repeat=T))) for T in range(1, 7)]
    sampled, _ = hmmlib.sample(hmm, 4000, 129, seed=0)
    for x in xs + [sampled[:, 1:]]:
        p = hmmlib.posterior_h0(hmm, x)
        score = p @ mu
        out = th.prompted_conditional(hmm, u, x) @ b
        torch.testing.assert_close(out * (p @ v), score, rtol=0, atol=1e-10)  # exact realisation
        decided = score.abs() > 1e-9
        assert torch.equal((out >= 0)[decided], (score >= 0)[decided])
    # no linear head on G(x) is right on every input
    p = hmmlib.posterior_h0(hmm, sampled[:, 1:])
    G, y = p @ W.T, (p @ mu >= 0).long()
    assert th.best_linear_head_accuracy_two_symbols(G, y) < 0.85
    assert 0.2 < float(y.double().mean()) < 0.8  # two classes, not too unbalanced
    x6 = xs[-1]
    p6 = hmmlib.posterior_h0(hmm, x6)
    assert th.best_linear_head_accuracy_two_symbols(p6 @ W.T, (p6 @ mu >= 0).long()) < 1
    # two inputs with nearly the same G but different labels
    g, order = torch.sort(G[:, 0])
    ys = y[order]
    gap = torch.where(ys[1:] != ys[:-1], g[1:] - g[:-1], torch.inf)
    assert float(gap.min()) < 1e-3
    with pytest.raises(ValueError, match="negative entries"):
        th.counterexample_head_fails_prompt_works(0.5, 0.5)
    with pytest.raises(ValueError, match="cycle_prob and skip_prob"):
        th.counterexample_head_fails_prompt_works(0.9, 0.2)


# --------------------------------------------------------------------------- bad inputs
def test_bad_inputs():
    hmm = hmmlib.dirichlet_hmm(3, 4, seed=0)
    x = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match=r"u\[0, 1\] = -0.5 is negative.*softplus"):
        th.prompted_conditional(hmm, torch.tensor([1.0, -0.5, 1.0]), x)
    with pytest.raises(ValueError, match=r"u must have shape \(num_states,\) = \(3,\) .* got \(4,\)"):
        th.prompted_conditional(hmm, torch.ones(4), x)
    with pytest.raises(ValueError, match=r"u must have shape .* got \(2, 2\)"):
        th.prompted_posterior(hmm, torch.ones(2, 2), x)
    with pytest.raises(ValueError, match=r"u must have shape .* got \(1, 2, 3\)"):
        th.prompted_posterior(hmm, torch.ones(1, 2, 3), x)
    with pytest.raises(ValueError, match="all zero"):
        th.prompted_posterior(hmm, torch.zeros(3), x)
    with pytest.raises(ValueError, match="non-finite"):
        th.prompted_posterior(hmm, torch.tensor([1.0, float("inf"), 1.0]), x)
    with pytest.raises(ValueError, match="incompatible"):
        th.prompted_posterior(hmmlib.HMM(torch.ones(2) / 2, torch.eye(2), torch.eye(2)), torch.tensor([1.0, 0.0]),
                              torch.tensor([1]))
    with pytest.raises(ValueError, match=r"prior must have shape \(num_states,\) = \(3,\)"):
        th.reverse_transition(hmm, torch.ones(2) / 2)
    with pytest.raises(ValueError, match="prior must be a probability vector"):
        th.prompted_conditional(hmm, torch.ones(3), x, prior=torch.ones(3))
    with pytest.raises(ValueError, match="expected an HMM"):
        th.reverse_transition(hmm.W)
    with pytest.raises(ValueError, match="num_tokens must be a non-negative int"):
        th.prompt_prior_h0(hmm, -1)
    with pytest.raises(ValueError, match=r"mu must have shape \(num_states,\) = \(3,\); got \(4,\)"):
        th.closed_form_head(hmm.W, torch.ones(4))
    with pytest.raises(ValueError, match=r"mu must have shape"):
        th.head_realizes(hmm.W, torch.ones(2))
    with pytest.raises(ValueError, match="W must be a non-empty 2-D matrix"):
        th.nondegeneracy(torch.ones(3))
    with pytest.raises(ValueError, match=r"support must be a non-empty list of column indices in \[0, 3\)"):
        th.nondegeneracy(hmm.W, support=[0, 5])
    with pytest.raises(ValueError, match=r"G must have shape \(N, 2\)"):
        th.best_linear_head_accuracy_two_symbols(torch.ones(3, 3), torch.ones(3))
