"""hmmlib.checks: every checker accepts the right answer, computed here independently (enumeration of all
hidden paths, numpy's linear algebra), and rejects the typical wrong ones with a message that says why."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import hmmlib
from hmmlib import checks, theory
from hmmlib.memory import MemoryHMM, locatable_memory_hmm


# ----------------------------------------------------------------------------- independent references
def _joint(hmm, x_with_slot, slot):
    """P(x_{-slot}, X_slot = v) for every v, by enumerating all hidden paths (numpy, float64).
    ``x_with_slot`` is a token sequence whose entry at ``slot`` is ignored."""
    pi, A, W = (np.asarray(t, dtype=np.float64) for t in (hmm.pi, hmm.A, hmm.W))
    K, V, T = pi.size, W.shape[0], len(x_with_slot)
    out = np.zeros(V)
    for path in itertools.product(range(K), repeat=T):
        p = pi[path[0]]
        for t in range(1, T):
            p *= A[path[t], path[t - 1]]
        for t in range(T):
            if t != slot:
                p *= W[x_with_slot[t], path[t]]
        out += p * W[:, path[slot]]
    return out


def brute_masked(hmm, x, slot):
    out = _joint(hmm, list(x), slot)
    return out / out.sum()


def brute_posterior_h(hmm, x_visible, which):
    """P(H_which | x_{1:T}) with H_0 the masked position before the input (x_visible = x_{1:T})."""
    pi, A, W = (np.asarray(t, dtype=np.float64) for t in (hmm.pi, hmm.A, hmm.W))
    K, T = pi.size, len(x_visible) + 1
    out = np.zeros(K)
    for path in itertools.product(range(K), repeat=T):
        p = pi[path[0]]
        for t in range(1, T):
            p *= A[path[t], path[t - 1]] * W[x_visible[t - 1], path[t]]
        out[path[which]] += p
    return out / out.sum()


def small_hmm(seed=0, K=3, V=3):
    return hmmlib.dirichlet_hmm(K, V, seed=seed)


def _fails(result, *words):
    assert not result, "a wrong answer passed"
    text = str(result).lower()
    for w in words:
        assert w.lower() in text, f"message lacks {w!r}: {result}"


# ----------------------------------------------------------------------------- the result object
def test_result_and_raising_variant():
    good = checks.ch1_uninformative(hmmlib.HMM(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64),
                                               torch.tensor([0.2, 0.2, 0.6], dtype=torch.float64)[:, None].expand(3, 3),
                                               torch.eye(3, dtype=torch.float64)))
    assert good and good.passed and "correct" in str(good) and good.messages == []
    bad_hmm = hmmlib.HMM(torch.full((3,), 1 / 3, dtype=torch.float64), torch.eye(3, dtype=torch.float64),
                         torch.eye(3, dtype=torch.float64))
    with pytest.raises(AssertionError, match="P\\(H_0 \\| x\\) differs from pi"):
        checks.check_ch1_uninformative(bad_hmm)
    assert set(checks.CHECKS) == {"ex-ch1-lemma", "ex-ch1-shortcut", "ex-ch1-uninformative", "ex-ch2-decomposition",
                                  "ex-ch2-right-context", "ex-ch3-min-norm", "ex-ch3-conditioning", "ex-ch3-rowspace",
                                  "ex-ch4-construct", "ex-ch4-contains", "ex-ch5-degenerate", "ex-ch5-reads",
                                  "ex-ch7-count"}
    for fn in checks.CHECKS.values():
        assert callable(getattr(checks, f"check_{fn.__name__}"))


def test_reveal_false_withholds_reference_values():
    h = small_hmm(seed=3)
    x, _ = hmmlib.sample(h, 12, 6, seed=3)
    P = np.stack([brute_masked(h, xi.tolist(), 2) for xi in x])
    q = np.asarray(h.W @ h.stationary())
    ce = float(-(P * np.log(q)).sum(1).mean())
    H = float(-(P * np.log(P)).sum(1).mean())
    shown = checks.ch2_decomposition(h, x, 2, ce + 0.5, H, ce + 0.5 - H)
    hidden = checks.ch2_decomposition(h, x, 2, ce + 0.5, H, ce + 0.5 - H, reveal=False)
    assert not shown and not hidden and len(shown.messages) == len(hidden.messages) == 2
    assert f"{ce:.6f}" in str(shown) and f"{ce:.6f}" not in str(hidden) and "not the expected value" in str(hidden)
    assert checks.ch2_decomposition(h, x, 2, ce, H, ce - H, reveal=False)
    with pytest.raises(AssertionError, match="not the expected value") as e:
        checks.check_ch2_decomposition(h, x, 2, ce + 0.5, H, ce + 0.5 - H, reveal=False)
    assert f"{ce:.6f}" not in str(e.value)
    # every checker takes reveal, and no withheld message of the chapters' checkers carries "expected <value>"
    import inspect
    for fn in checks.CHECKS.values():
        assert "reveal" in inspect.signature(fn).parameters
    msg = str(checks.ch5_reads({0.5: 12345, 0.4: 12345}, reveal=False))
    assert "expected" not in msg and "12345" in msg


def test_malformed_answer_is_a_failure_not_a_crash():
    r = checks.ch3_min_norm(torch.eye(2), [1.0, 2.0], "not a vector")
    assert not r and "could not check" in str(r)


# ----------------------------------------------------------------------------- chapter 1
def test_ch1_lemma():
    h = hmmlib.dirichlet_hmm(4, 3, seed=11)
    x, _ = hmmlib.sample(h, 1, 5, seed=12)
    G = brute_masked(h, [0] + x[0].tolist(), 0)
    v = np.linalg.svd(np.asarray(h.W))[2][-1]
    assert checks.ch1_lemma(G, v)
    _fails(checks.ch1_lemma(np.full(3, 1 / 3), v), "differs from the brute-force")
    _fails(checks.ch1_lemma(brute_posterior_h(h, x[0].tolist(), 0), v), "entries")      # a posterior, not G
    _fails(checks.ch1_lemma(G, np.zeros(4)), "non-zero")
    _fails(checks.ch1_lemma(G, np.ones(4)), "W v should be 0")


def test_ch1_shortcut():
    base = hmmlib.paper_hmm(4, 5, seed=21, emission_temp=0.3, transition_temp=0.3)
    x, _ = hmmlib.sample(base, 6, 4, seed=22)
    for pi, exact in ((torch.full((4,), 0.25, dtype=torch.float64), True),
                      (torch.tensor([0.55, 0.25, 0.15, 0.05], dtype=torch.float64), False)):
        h = hmmlib.HMM(pi, base.A, base.W)
        A = np.asarray(h.A)
        shortcut = np.stack([A.T @ brute_posterior_h(h, xi.tolist(), 1) for xi in x])
        assert checks.ch1_shortcut(h, x, shortcut, agrees=exact)
        _fails(checks.ch1_shortcut(h, x, shortcut, agrees=not exact), "pi is uniform")
        _fails(checks.ch1_shortcut(h, x, np.stack([brute_posterior_h(h, xi.tolist(), 1) for xi in x])), "A^T P(H_1")
    # posterior_h0 itself is not the shortcut when pi is skewed
    _fails(checks.ch1_shortcut(h, x, np.stack([brute_posterior_h(h, xi.tolist(), 0) for xi in x])), "shortcut")


def test_ch1_uninformative():
    pi = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    q = torch.tensor([0.2, 0.2, 0.6], dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64)
    assert checks.ch1_uninformative(hmmlib.HMM(pi, q[:, None].expand(3, 3), eye))
    _fails(checks.ch1_uninformative(hmmlib.HMM(pi, eye, eye)), "every column of A the same")
    cyc = torch.roll(eye, 1, 0)
    _fails(checks.ch1_uninformative(hmmlib.HMM(pi, cyc, eye)), "differs from pi")
    flat_W = torch.full((3, 3), 1 / 3, dtype=torch.float64)
    _fails(checks.ch1_uninformative(hmmlib.HMM(pi, eye, flat_W)), "identity")
    _fails(checks.ch1_uninformative(small_hmm(K=4, V=3)), "K=3")
    _fails(checks.ch1_uninformative("an HMM"), "hmmlib.HMM")


# ----------------------------------------------------------------------------- chapter 2
def test_ch2_decomposition():
    h = small_hmm(seed=3)
    x, _ = hmmlib.sample(h, 12, 6, seed=3)
    t = 2
    P = np.stack([brute_masked(h, xi.tolist(), t) for xi in x])
    q = np.asarray(h.W @ h.stationary())
    ce = float(-(P * np.log(q)).sum(1).mean())
    H = float(-(P * np.log(P)).sum(1).mean())
    kl = float((P * (np.log(P) - np.log(q))).sum(1).mean())
    assert checks.ch2_decomposition(h, x, t, ce, H, kl)
    sampled_ce = float(-np.log(q[x[:, t].numpy()]).mean())                     # the sampled token's loss
    _fails(checks.ch2_decomposition(h, x, t, sampled_ce, H, sampled_ce - H), "sampled token")
    ln2 = np.log(2)
    _fails(checks.ch2_decomposition(h, x, t, ce / ln2, H / ln2, kl / ln2), "nats")
    _fails(checks.ch2_decomposition(h, x, t, ce, H, kl + 0.01), "l(q) = h + kl")


def test_ch2_right_context():
    h = small_hmm(seed=4)
    x, _ = hmmlib.sample(h, 10, 6, seed=4)
    ent = lambda P: float(-(P * np.log(P)).sum(1).mean())
    f0 = ent(np.stack([brute_masked(h, xi.tolist(), 0) for xi in x]))
    fm = ent(np.stack([brute_masked(h, xi.tolist(), 3) for xi in x]))
    assert checks.ch2_right_context(h, x, f0, fm, mid=3)
    _fails(checks.ch2_right_context(h, x, fm, f0, mid=3), "position 0")
    f0_wrong = ent(np.stack([brute_masked(h, xi.tolist(), 1) for xi in x]))   # masked x_1 instead of the slot before
    _fails(checks.ch2_right_context(h, x, f0_wrong, fm, mid=3), "expected")


# ----------------------------------------------------------------------------- chapter 3
def test_ch3_min_norm():
    h8 = hmmlib.paper_hmm(8, 10, seed=0)
    mu = np.random.default_rng(1).standard_normal(8)
    W = np.asarray(h8.W)
    b = np.linalg.lstsq(W.T, mu, rcond=None)[0]                                 # numpy's minimum-norm solution
    n = np.linalg.svd(W)[0][:, -1]
    assert checks.ch3_min_norm(W, mu, b, b_other=b + 0.7 * n)
    _fails(checks.ch3_min_norm(W, mu, b + 0.7 * n), "minimum-norm")
    _fails(checks.ch3_min_norm(W, mu, b, b_other=b + 0.7 * np.ones(10)), "b_other should also satisfy")
    _fails(checks.ch3_min_norm(W, mu, np.linalg.pinv(W).T @ np.ones(8)), "W^T b should equal mu")


def test_ch3_conditioning():
    mu = np.array([1.0, -1.0, 0.2])
    right, smax = {}, {}
    for d in (0.2, 0.05, 0.01):
        W = np.array([[0.5 + d, 0.5 - d, 0.0], [0.5 - d, 0.5 + d, 0.0], [0.0, 0.0, 1.0]])
        s = np.linalg.svd(W, compute_uv=False)
        right[d] = (s.min(), np.linalg.norm(np.linalg.solve(W.T, mu)))
        smax[d] = (s.max(), right[d][1])
    assert checks.ch3_conditioning(right)
    _fails(checks.ch3_conditioning(smax), "sigma_min")
    _fails(checks.ch3_conditioning({0.2: right[0.2]}), "missing")
    _fails(checks.ch3_conditioning({d: (s, n * 2) for d, (s, n) in right.items()}), "|b|")


def test_ch3_rowspace():
    h15 = hmmlib.paper_hmm(15, 10, seed=0)
    W = np.asarray(h15.W)
    c = np.random.default_rng(2).standard_normal(10)
    mu = W.T @ c
    mu = mu - W.T @ np.full(10, np.median(mu))
    assert checks.ch3_rowspace(h15, mu, accuracy=1.0)
    _fails(checks.ch3_rowspace(h15, np.random.default_rng(3).standard_normal(15)), "row space")
    _fails(checks.ch3_rowspace(h15, W.T @ np.abs(c)), "both classes")
    _fails(checks.ch3_rowspace(h15, mu, accuracy=0.97), "100%")
    _fails(checks.ch3_rowspace(hmmlib.paper_hmm(8, 10, seed=0), np.ones(8)), "more states than symbols")


# ----------------------------------------------------------------------------- chapter 4
def _cycle_hmm(W):
    K = 6
    A = torch.zeros(K, K, dtype=torch.float64)
    for h in range(K):
        A[(h + 1) % K, h], A[(h + 2) % K, h] = 0.8, 0.2
    return hmmlib.HMM(torch.full((K,), 1 / K, dtype=torch.float64), A, torch.as_tensor(W, dtype=torch.float64))


W6 = [[0.7, 0.1, 0.8, 0.1, 0.3, 0.2], [0.2, 0.8, 0.1, 0.2, 0.3, 0.2], [0.1, 0.1, 0.1, 0.7, 0.4, 0.6]]


def test_ch4_construct():
    h6 = _cycle_hmm(W6)
    mu = np.array([0, 0, 1.0, -1.0, 0, 0])
    u = np.eye(6)[1]                            # state 1 leads only to states 2 and 3
    v = np.array([0, 0, 0.8, 0.2, 0, 0])        # its reweighting R u, by hand from A
    Ws = np.asarray(W6)[:, [2, 3]]
    b = np.linalg.lstsq(Ws.T, mu[[2, 3]] / v[[2, 3]], rcond=None)[0]
    assert checks.ch4_construct(h6, mu, u, b, num_test=300)
    _fails(checks.ch4_construct(h6, mu, np.full(6, 1 / 6), b, num_test=300), "accurate")     # no reweighting
    _fails(checks.ch4_construct(h6, -mu, u, b, num_test=300), "mu_2 > 0 > mu_3")
    full_rank = [[0.3, 0.2, 1, 0, 0.3, 0.1], [0.3, 0.2, 0, 1, 0.3, 0.1], [0.4, 0.6, 0, 0, 0.4, 0.8]]  # W^T (1,-1,0) = mu
    _fails(checks.ch4_construct(_cycle_hmm(full_rank), mu, u, b, num_test=300), "row space")
    bad = hmmlib.HMM(h6.pi, torch.roll(torch.eye(6, dtype=torch.float64), 1, 0), h6.W)
    _fails(checks.ch4_construct(bad, mu, u, b, num_test=300), "cycle")


def test_ch4_contains():
    h = small_hmm(seed=5, K=4, V=3)                 # pi is not stationary
    x, _ = hmmlib.sample(h, 5, 4, seed=0)
    u = np.full((2, 4), 0.37)
    prior = np.linalg.matrix_power(np.asarray(h.A), 2) @ np.asarray(h.pi)
    shifted = hmmlib.HMM(torch.as_tensor(prior), h.A, h.W)
    G_u = np.stack([brute_masked(shifted, [0] + xi.tolist(), 0) for xi in x])
    assert checks.ch4_contains(h, u, x, G_u)
    G_plain = np.stack([brute_masked(h, [0] + xi.tolist(), 0) for xi in x])   # forgot the prior A^k pi
    _fails(checks.ch4_contains(h, u, x, G_plain), "differs")
    _fails(checks.ch4_contains(h, np.array([[0.1, 0.2, 0.3, 0.4]] * 2), x, G_u), "constant")


# ----------------------------------------------------------------------------- chapter 5
def test_ch5_degenerate():
    loc = locatable_memory_hmm()
    S = loc.num_syntax_states
    W = loc.W.clone()
    W[:, 1 * S + 0] = W[:, 0 * S + 0]
    right = MemoryHMM(loc.memory_prior, loc.pi, loc.A, W)
    assert checks.ch5_degenerate(loc, right, accuracy=0.55)
    W2 = loc.W.clone()
    W2[:, 0 * S + 0] = W2[:, 1 * S + 0]                  # the other way round is right too
    assert checks.ch5_degenerate(loc, MemoryHMM(loc.memory_prior, loc.pi, loc.A, W2))
    _fails(checks.ch5_degenerate(loc, loc), "same column")
    W3 = loc.W.clone()
    W3[:, 1 * S + 1] = W3[:, 0 * S + 1]                  # wrong syntax state
    _fails(checks.ch5_degenerate(loc, MemoryHMM(loc.memory_prior, loc.pi, loc.A, W3)), "only the columns")
    _fails(checks.ch5_degenerate(loc, right, accuracy=0.9), "coin flip")
    _fails(checks.ch5_degenerate(loc, to_plain := hmmlib.to_hmm(right)), "MemoryHMM")


def test_ch5_reads():
    from hmmlib.memory import sample_memory

    check_theorem = checks.memory_check_theorem()

    mu = [1.0, -1.2, 0.5]
    right = {}
    for peak in (0.5, 0.4):                            # the book's solution loop
        noisy = locatable_memory_hmm(peak=peak)
        right[peak] = None
        for T in (6, 12, 24, 48, 96):
            xs, *_ = sample_memory(noisy, 200, T, seed=1)
            c = check_theorem(noisy, mu, xs, cell=0, syntax=0, scale=20.0)
            if (c.margin > c.bound).double().mean() >= 0.9:
                right[peak] = T
                break
    assert checks.ch5_reads(right, mu)
    shifted = {k: (None if v is None else v * 2) for k, v in right.items()}
    _fails(checks.ch5_reads(shifted, mu), "expected")
    _fails(checks.ch5_reads({0.5: right[0.5]}, mu), "peak 0.4")


# ----------------------------------------------------------------------------- chapter 7
def test_ch7_count():
    def by_hand(n, L, d, k):              # P' (n x d), Linear(d, k), Linear(k, 2 L d), biases; stored: n x 2 x L x d
        trained = sum(p.numel() for p in (torch.empty(n, d), torch.nn.Linear(d, k).weight, torch.nn.Linear(d, k).bias,
                                           torch.nn.Linear(k, 2 * L * d).weight, torch.nn.Linear(k, 2 * L * d).bias))
        return trained, n * 2 * L * d

    t, s = by_hand(5, 24, 1024, 512)
    assert checks.ch7_count(t, s)
    assert checks.ch7_count(*by_hand(7, 4, 48, 16), n=7, L=4, d=48, k=16)
    _fails(checks.ch7_count(t - 2 * 24 * 1024 - 512, s), "trained")           # forgot the biases
    _fails(checks.ch7_count(t, 5 * 24 * 1024), "stored")                       # keys only, no values
    assert "expected" not in str(checks.ch7_count(t, 5 * 24 * 1024, reveal=False))
