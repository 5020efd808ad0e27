"""Exact inference (hmmlib.inference) against brute-force enumeration, hmmlearn, and itself
in other precisions / layouts."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import hmmlib
import hmmlib.hmm.inference as inference
from hmmlib.hmm import _kernels
from hmmlib import bruteforce as bf

from conftest import BRUTE_LENGTHS, NUM_SEQS, path_log_joint, sample_tokens

TOL = dict(atol=1e-10, rtol=0.0)  # probabilities in float64
LL_TOL = dict(atol=1e-10, rtol=1e-12)  # log-probabilities in float64


def _close(got, want, **tol):
    torch.testing.assert_close(torch.as_tensor(got, dtype=torch.float64),
                               torch.as_tensor(want, dtype=torch.float64), **(tol or TOL))


@pytest.fixture(params=BRUTE_LENGTHS, ids=lambda T: f"T{T}")
def seq_len(request) -> int:
    return request.param


# Every kernel layout, chosen in hmmlib.hmm._kernels by size, forced both ways: state-major (K, B)
# or batch-major (B, K) work buffers (Viterbi: (K, K, tile) or (tile, K, K) scores), and emission
# factors gathered up front or one step at a time. The brute-force tests run under all four.
LAYOUTS = [("state-major", "precomputed"), ("batch-major", "precomputed"),
           ("state-major", "per-step"), ("batch-major", "per-step")]


def force_layout(monkeypatch, major: str, emissions: str) -> None:
    big = 1 << 30
    monkeypatch.setattr(_kernels, "STATE_MAJOR_MAX_K", big if major == "state-major" else 0)
    monkeypatch.setattr(_kernels, "VITERBI_STATE_MAJOR_MAX_K", big if major == "state-major" else 0)
    monkeypatch.setattr(_kernels, "PRECOMPUTE_BYTES", big if emissions == "precomputed" else 0)


@pytest.fixture(params=LAYOUTS, ids=["-".join(p) for p in LAYOUTS])
def layout(request, monkeypatch) -> tuple[str, str]:
    force_layout(monkeypatch, *request.param)
    return request.param


@pytest.fixture
def tokens(small_hmm, seq_len, layout) -> torch.Tensor:
    x = sample_tokens(small_hmm, NUM_SEQS, seq_len, seed=1000 + seq_len)
    prep = inference._inputs(small_hmm, x)  # the forced layout is the one the kernels will use
    assert prep.state_major == (layout[0] == "state-major")
    assert (prep.e_all is None) == (layout[1] == "per-step")
    return x


def _with_dummy(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[dummy token 0, x]`` and the mask marking the dummy missing."""
    xx = torch.cat([torch.zeros(x.shape[0], 1, dtype=torch.int64), x], 1)
    missing = torch.zeros(xx.shape, dtype=torch.bool)
    missing[:, 0] = True
    return xx, missing


# =========================================================================== brute force, float64
def test_log_likelihood_matches_bruteforce(small_hmm, tokens):
    got = hmmlib.log_likelihood(small_hmm, tokens)
    assert got.shape == (tokens.shape[0],) and got.dtype == torch.float64
    want = [bf.brute_log_likelihood(small_hmm, x) for x in tokens]
    _close(got, want, **LL_TOL)


def test_posterior_marginals_match_bruteforce(small_hmm, tokens):
    got = hmmlib.posterior_marginals(small_hmm, tokens)
    assert got.shape == (*tokens.shape, small_hmm.num_states)
    want = torch.stack([bf.brute_posteriors(small_hmm, x) for x in tokens])
    _close(got, want)


def test_posterior_marginals_with_missing_match_bruteforce(small_hmm, tokens):
    B, T = tokens.shape
    g = torch.Generator().manual_seed(77 + T)
    missing = torch.rand(B, T, generator=g) < 0.4
    missing[0] = True  # one sequence entirely unobserved: the answer is the prior P(H_t)
    if B > 1 and T > 1:
        missing[1] = False
        missing[1, T // 2] = True
    got = hmmlib.posterior_marginals(small_hmm, tokens, missing=missing)
    want = torch.stack([bf.brute_posteriors(small_hmm, x, m) for x, m in zip(tokens, missing)])
    _close(got, want)
    # the fully-missing row is the prior pi, A pi, A^2 pi, ...
    prior = [small_hmm.pi]
    for _ in range(T - 1):
        prior.append(small_hmm.A @ prior[-1])
    _close(got[0], torch.stack(prior))
    ll = hmmlib.log_likelihood(small_hmm, tokens, missing=missing)
    _close(ll, [bf.brute_log_likelihood(small_hmm, x, m) for x, m in zip(tokens, missing)], **LL_TOL)
    assert ll[0].abs() < 1e-12  # nothing observed: P = 1


def test_missing_mask_broadcasts_over_batch(small_hmm, tokens):
    T = tokens.shape[1]
    m1 = torch.zeros(T, dtype=torch.bool)
    m1[T // 2] = True
    got = hmmlib.posterior_marginals(small_hmm, tokens, missing=m1)
    want = hmmlib.posterior_marginals(small_hmm, tokens, missing=m1.expand(tokens.shape).clone())
    _close(got, want, atol=0.0, rtol=0.0)
    want_bf = torch.stack([bf.brute_posteriors(small_hmm, x, m1) for x in tokens])
    _close(got, want_bf)


def test_posterior_h0_matches_bruteforce(small_hmm, tokens):
    got = hmmlib.posterior_h0(small_hmm, tokens)
    assert got.shape == (tokens.shape[0], small_hmm.num_states)
    want = torch.stack([bf.brute_h0_posterior(small_hmm, x) for x in tokens])
    _close(got, want)


def test_posterior_h0_equals_marginals_with_dummy_token(small_hmm, tokens):
    xx, missing = _with_dummy(tokens)
    want = hmmlib.posterior_marginals(small_hmm, xx, missing=missing)[:, 0]
    _close(hmmlib.posterior_h0(small_hmm, tokens), want, atol=1e-12, rtol=0.0)


def test_masked_conditional_matches_bruteforce(small_hmm, tokens):
    got = hmmlib.masked_conditional(small_hmm, tokens)
    assert got.shape == (tokens.shape[0], small_hmm.num_symbols)
    # = P(X_0 | x_{1:T}) by enumerating every value of X_0 (independent of the H_0 route)
    V = small_hmm.num_symbols
    want = torch.stack([_brute_first_token_conditional(small_hmm, x, V) for x in tokens])
    _close(got, want)


def _brute_first_token_conditional(hmm, x, V) -> torch.Tensor:
    """P(X_0 = v | x_{1:T}) ~ P(X_0 = v, x_{1:T}), enumerating every v and every path of [v, x]."""
    joint = torch.stack([bf.joint(hmm, torch.cat([torch.tensor([v]), x])).sum() for v in range(V)])
    return joint / joint.sum()


def test_masked_token_conditionals_match_bruteforce(small_hmm, tokens):
    got = hmmlib.masked_token_conditionals(small_hmm, tokens)
    assert got.shape == (*tokens.shape, small_hmm.num_symbols)
    want = torch.stack([bf.brute_masked_token_conditionals(small_hmm, x) for x in tokens])
    _close(got, want)


def test_next_token_conditionals_match_bruteforce(small_hmm, tokens):
    got = hmmlib.next_token_conditionals(small_hmm, tokens)
    assert got.shape == (*tokens.shape, small_hmm.num_symbols)
    want = torch.stack([bf.brute_next_token_conditionals(small_hmm, x) for x in tokens])
    _close(got, want)


def test_forward_matches_bruteforce(small_hmm, tokens):
    B, T = tokens.shape
    fr = hmmlib.forward(small_hmm, tokens)
    assert fr.alpha.shape == (B, T, small_hmm.num_states)
    assert fr.scale.shape == (B, T) and fr.log_likelihood.shape == (B,)
    for b, x in enumerate(tokens):
        prefix_ll = [0.0] + [bf.brute_log_likelihood(small_hmm, x[: t + 1]) for t in range(T)]
        for t in range(T):
            # alpha_t = P(H_t | x_{0:t}): the last marginal of the prefix
            _close(fr.alpha[b, t], bf.brute_posteriors(small_hmm, x[: t + 1])[t])
            # c_t = P(x_t | x_{0:t-1}) = P(x_{0:t}) / P(x_{0:t-1})
            _close(fr.scale[b, t], math.exp(prefix_ll[t + 1] - prefix_ll[t]), atol=1e-10, rtol=1e-10)
        _close(fr.log_likelihood[b], prefix_ll[-1], **LL_TOL)


def test_backward_times_forward_is_posterior(small_hmm, tokens):
    fr = hmmlib.forward(small_hmm, tokens)
    beta = hmmlib.backward(small_hmm, tokens, fr.scale)
    assert beta.shape == fr.alpha.shape
    want = torch.stack([bf.brute_posteriors(small_hmm, x) for x in tokens])
    _close(fr.alpha * beta, want)
    # beta_t[h] = P(x_{t+1:} | H_t = h) / P(x_{t+1:} | x_{0:t})
    B, T = tokens.shape
    for b, x in enumerate(tokens):
        for t in range(T):  # t = T-1: the empty suffix, P = 1 on both sides
            cond = torch.tensor([_suffix_prob(small_hmm, x[t + 1:], h) for h in range(small_hmm.num_states)],
                                dtype=torch.float64)
            ratio = math.exp(bf.brute_log_likelihood(small_hmm, x) - bf.brute_log_likelihood(small_hmm, x[: t + 1]))
            _close(beta[b, t] * ratio, cond, atol=1e-10, rtol=1e-9)


def _suffix_prob(hmm, suffix, h) -> float:
    """P(x_{t+1:} = suffix | H_t = h), by brute force from the one-hot start A[:, h]."""
    sub = hmmlib.HMM(hmm.A[:, h].clone(), hmm.A, hmm.W)
    return math.exp(bf.brute_log_likelihood(sub, suffix)) if len(suffix) else 1.0


def test_viterbi_matches_bruteforce(small_hmm, tokens):
    paths, logp = hmmlib.viterbi(small_hmm, tokens)
    assert paths.shape == tokens.shape and paths.dtype == torch.int64
    assert logp.shape == (tokens.shape[0],)
    for b, x in enumerate(tokens):
        _, best = bf.brute_viterbi(small_hmm, x)
        _close(logp[b], best, **LL_TOL)
        # the returned path really attains the maximum (paths may differ under ties)
        _close(path_log_joint(small_hmm, paths[b], x), best, **LL_TOL)


def _all_outputs(hmm, tokens, missing):
    return (hmmlib.posterior_marginals(hmm, tokens, missing=missing), hmmlib.posterior_h0(hmm, tokens),
            hmmlib.masked_token_conditionals(hmm, tokens), hmmlib.next_token_conditionals(hmm, tokens),
            hmmlib.log_likelihood(hmm, tokens), *hmmlib.viterbi(hmm, tokens))


@pytest.mark.parametrize("make", [lambda: hmmlib.dirichlet_hmm(3, 5, seed=51), lambda: hmmlib.dirichlet_hmm(16, 7, seed=52),
                                  lambda: hmmlib.dirichlet_hmm(70, 9, seed=53)], ids=["K3", "K16", "K70"])
def test_forced_layouts_agree_on_longer_inputs(make, monkeypatch):
    """Beyond brute force's reach (T = 40): every forced layout against the one chosen by size."""
    hmm = make()
    tokens = sample_tokens(hmm, 5, 40, seed=54)
    missing = torch.zeros(tokens.shape, dtype=torch.bool)
    missing[:, 20] = True
    ref = _all_outputs(hmm, tokens, missing)
    for layout in LAYOUTS:
        force_layout(monkeypatch, *layout)
        got = _all_outputs(hmm, tokens, missing)
        for g, r in zip(got, ref):
            if g.dtype == torch.int64:  # Viterbi paths (a tie would be a 1e-300 coincidence here)
                assert torch.equal(g, r), layout
            else:
                _close(g, r, atol=1e-12, rtol=1e-12)


# =========================================================================== posterior_h0 vs the shortcut
def _shortcut_h0(hmm, x):
    """The original code's shortcut: P(H_0 | x) ~ A^T P(H_1 | x), normalised."""
    xx, missing = _with_dummy(x)
    gamma1 = hmmlib.posterior_marginals(hmm, xx, missing=missing)[:, 1]  # P(H_1 | x_{1:T})
    s = gamma1 @ hmm.A  # row form of A^T gamma1
    return s / s.sum(1, keepdim=True)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("temps", [(0.01, 0.01), (1.0, 1.0)], ids=["near-deterministic", "mixed"])
def test_posterior_h0_equals_shortcut_only_for_uniform_pi(seed, temps):
    K, V = 5, 4
    base = hmmlib.paper_hmm(K, V, transition_temp=temps[0], emission_temp=temps[1], seed=seed)
    # the paper's A is doubly stochastic, the shortcut's precondition (with a uniform pi)
    _close(base.A.sum(0), torch.ones(K), atol=1e-12, rtol=0.0)
    _close(base.A.sum(1), torch.ones(K), atol=1e-12, rtol=0.0)
    uniform = hmmlib.HMM(torch.full((K,), 1.0 / K, dtype=torch.float64), base.A, base.W)
    x = sample_tokens(uniform, 4, 6, seed=seed)
    _close(hmmlib.posterior_h0(uniform, x), _shortcut_h0(uniform, x), atol=1e-12, rtol=0.0)
    # with the uniform pi, P(H_1 | x_{1:T}) is also the plain posterior of the first token
    s = hmmlib.posterior_marginals(uniform, x)[:, 0] @ uniform.A
    _close(hmmlib.posterior_h0(uniform, x), s / s.sum(1, keepdim=True), atol=1e-12, rtol=0.0)

    if temps == (1.0, 1.0):
        # a clearly non-uniform start: the shortcut is wrong, posterior_h0 still matches brute force
        pi = torch.softmax(torch.arange(K, dtype=torch.float64), 0)
        skewed = hmmlib.HMM(pi, base.A, base.W)
        got = hmmlib.posterior_h0(skewed, x)
        _close(got, torch.stack([bf.brute_h0_posterior(skewed, xi) for xi in x]))
        diff = (got - _shortcut_h0(skewed, x)).abs().amax(1)
        assert (diff > 1e-3).all(), diff


# =========================================================================== impossible sequences, entropy
def _hmm_with_unemittable_token() -> hmmlib.HMM:
    W = torch.tensor([[0.7, 0.2], [0.3, 0.8], [0.0, 0.0]], dtype=torch.float64)
    A = torch.tensor([[0.9, 0.5], [0.1, 0.5]], dtype=torch.float64)
    return hmmlib.HMM(torch.tensor([0.5, 0.5], dtype=torch.float64), A, W)


def test_log_likelihood_of_impossible_sequence_is_minus_inf():
    hmm = _hmm_with_unemittable_token()
    x = torch.tensor([[0, 1, 0], [0, 2, 1]])
    ll = hmmlib.log_likelihood(hmm, x)
    assert ll[1] == -math.inf
    _close(ll[0], bf.brute_log_likelihood(hmm, x[0]), **LL_TOL)
    assert hmmlib.forward(hmm, x).log_likelihood[1] == -math.inf
    # masking the impossible token makes the sequence possible again
    missing = torch.tensor([[False, False, False], [False, True, False]])
    ll_m = hmmlib.log_likelihood(hmm, x, missing=missing)
    _close(ll_m[1], bf.brute_log_likelihood(hmm, x[1], missing[1]), **LL_TOL)


def test_entropy():
    V = 7
    uniform = torch.full((3, V), 1.0 / V, dtype=torch.float64)
    _close(hmmlib.entropy(uniform), torch.full((3,), math.log(V), dtype=torch.float64), atol=1e-12, rtol=0.0)
    onehot = torch.zeros(2, V, dtype=torch.float64)
    onehot[:, 2] = 1.0
    assert torch.equal(hmmlib.entropy(onehot), torch.zeros(2, dtype=torch.float64))  # 0 log 0 = 0
    p = torch.tensor([[0.5, 0.25], [0.25, 0.0]], dtype=torch.float64)  # along dim 0
    _close(hmmlib.entropy(p, dim=0), [-(0.5 * math.log(0.5) + 0.25 * math.log(0.25)), -0.25 * math.log(0.25)],
           atol=1e-15, rtol=0.0)


# =========================================================================== 1-D convenience
@pytest.mark.parametrize("make", [lambda: hmmlib.dirichlet_hmm(3, 5, seed=11), lambda: hmmlib.paper_hmm(4, 5, seed=12)],
                         ids=["dirichlet", "paper"])
def test_one_dimensional_input_drops_batch_axis(make):
    hmm = make()
    xb = sample_tokens(hmm, 1, 7, seed=5)
    x1 = xb[0]
    K, V, T = hmm.num_states, hmm.num_symbols, 7
    cases = [
        (hmmlib.log_likelihood, ()),
        (hmmlib.posterior_marginals, (T, K)),
        (hmmlib.posterior_h0, (K,)),
        (hmmlib.masked_conditional, (V,)),
        (hmmlib.masked_token_conditionals, (T, V)),
        (hmmlib.next_token_conditionals, (T, V)),
    ]
    for fn, shape in cases:
        one, batched = fn(hmm, x1), fn(hmm, xb)
        assert one.shape == shape, fn.__name__
        assert batched.shape == (1, *shape), fn.__name__
        _close(one, batched[0], atol=0.0, rtol=0.0)
        # lists and numpy arrays are accepted too
        _close(fn(hmm, x1.tolist()), one, atol=0.0, rtol=0.0)
        _close(fn(hmm, x1.numpy().astype(np.int32)), one, atol=0.0, rtol=0.0)
    p1, l1 = hmmlib.viterbi(hmm, x1)
    pb, lb = hmmlib.viterbi(hmm, xb)
    assert p1.shape == (T,) and l1.shape == () and torch.equal(p1, pb[0]) and l1 == lb[0]
    # missing as a 1-D mask for a 1-D sequence
    m = torch.zeros(T, dtype=torch.bool)
    m[3] = True
    _close(hmmlib.posterior_marginals(hmm, x1, missing=m),
           hmmlib.posterior_marginals(hmm, xb, missing=m[None])[0], atol=0.0, rtol=0.0)
    # forward/backward are always batched
    fr = hmmlib.forward(hmm, x1)
    assert fr.alpha.shape == (1, T, K) and fr.scale.shape == (1, T)
    assert hmmlib.backward(hmm, x1, fr.scale).shape == (1, T, K)


# =========================================================================== Viterbi rescaling
@pytest.mark.parametrize("major", ["state-major", "batch-major"])
def test_viterbi_rescaling_changes_no_path(major, monkeypatch):
    """Scores are rescaled every VITERBI_RESCALE_EVERY steps: in float64 the same paths and
    log-probabilities as without rescaling; an impossible sequence still gets -inf, never nan."""
    force_layout(monkeypatch, major, "precomputed")
    hmm = _hmm_with_unemittable_token()
    x = sample_tokens(hmm, 6, 300, seed=71)
    x[5, 150] = 2  # no state emits token 2
    paths, logp = hmmlib.viterbi(hmm, x)
    monkeypatch.setattr(_kernels, "VITERBI_RESCALE_EVERY", 10**9)
    ref_paths, ref_logp = hmmlib.viterbi(hmm, x)
    assert torch.equal(paths[:5], ref_paths[:5])
    _close(logp[:5], ref_logp[:5], atol=0.0, rtol=1e-12)
    assert logp[5] == -math.inf and ref_logp[5] == -math.inf
    for b in range(5):
        _close(path_log_joint(hmm, paths[b], x[b]), logp[b], atol=0.0, rtol=1e-12)


# =========================================================================== Viterbi tiling
def test_viterbi_tiles_agree():
    hmm = hmmlib.dirichlet_hmm(6, 8, seed=3)
    x = sample_tokens(hmm, 9, 30, seed=4)
    p_ref, l_ref = hmmlib.viterbi(hmm, x)
    for tile_bytes in (1, 6 * 6 * 8 * 2, 6 * 6 * 8 * 4):  # tiles of 1, 2 and 4 sequences
        p, l = hmmlib.viterbi(hmm, x, tile_bytes=tile_bytes)
        assert torch.equal(p, p_ref)
        _close(l, l_ref, atol=0.0, rtol=0.0)
    for b in range(x.shape[0]):
        _close(path_log_joint(hmm, p_ref[b], x[b]), l_ref[b], atol=1e-10, rtol=1e-12)


# =========================================================================== more states, default layout
# Above STATE_MAJOR_MAX_K = 12 states the kernels run batch-major, above VITERBI_STATE_MAJOR_MAX_K = 64
# Viterbi does too: brute force at the sizes where those branches are the ones chosen by size.
MEDIUM_HMM_SPECS = [
    ("dir-K13-V5", lambda: hmmlib.dirichlet_hmm(13, 5, seed=61)),
    ("paper-K16-V6", lambda: hmmlib.paper_hmm(16, 6, transition_temp=0.3, emission_temp=0.3, seed=62)),
    ("dir-K70-V6", lambda: hmmlib.dirichlet_hmm(70, 6, transition_concentration=0.3, seed=63)),
]


@pytest.fixture(scope="module", params=MEDIUM_HMM_SPECS, ids=[c[0] for c in MEDIUM_HMM_SPECS])
def medium_hmm(request) -> hmmlib.HMM:
    return request.param[1]()


@pytest.mark.parametrize("T", [1, 2, 3])
def test_more_than_12_states_match_bruteforce(medium_hmm, T):
    hmm = medium_hmm
    x = sample_tokens(hmm, 2, T, seed=64 + T)
    prep = inference._inputs(hmm, x)
    assert not prep.state_major  # the batch-major kernels, as chosen by size
    assert (hmm.num_states > _kernels.VITERBI_STATE_MAJOR_MAX_K) == (hmm.num_states == 70)
    _close(hmmlib.log_likelihood(hmm, x), [bf.brute_log_likelihood(hmm, xi) for xi in x], **LL_TOL)
    _close(hmmlib.posterior_marginals(hmm, x), torch.stack([bf.brute_posteriors(hmm, xi) for xi in x]))
    _close(hmmlib.next_token_conditionals(hmm, x), torch.stack([bf.brute_next_token_conditionals(hmm, xi) for xi in x]))
    _close(hmmlib.masked_token_conditionals(hmm, x),
           torch.stack([bf.brute_masked_token_conditionals(hmm, xi) for xi in x]))
    if hmm.num_states ** (T + 1) <= bf.MAX_PATHS:  # H_0 adds a position
        _close(hmmlib.posterior_h0(hmm, x), torch.stack([bf.brute_h0_posterior(hmm, xi) for xi in x]))
    paths, logp = hmmlib.viterbi(hmm, x)
    for b, xi in enumerate(x):
        _, best = bf.brute_viterbi(hmm, xi)
        _close(logp[b], best, **LL_TOL)
        _close(path_log_joint(hmm, paths[b], xi), best, **LL_TOL)


# =========================================================================== hmmlearn
HMMLEARN_CASES = [
    ("dirichlet-K20-V30", lambda: hmmlib.dirichlet_hmm(20, 30, seed=21)),
    ("dirichlet-peaked-K20-V30", lambda: hmmlib.dirichlet_hmm(
        20, 30, transition_concentration=0.3, emission_concentration=0.3, seed=22)),
    ("paper-K20-V30-mixed", lambda: hmmlib.paper_hmm(20, 30, transition_temp=0.3, emission_temp=0.3, seed=23)),
    ("dirichlet-K70-V30", lambda: hmmlib.dirichlet_hmm(70, 30, seed=24)),  # batch-major Viterbi
]


@pytest.fixture(scope="module", params=HMMLEARN_CASES, ids=[c[0] for c in HMMLEARN_CASES])
def hmmlearn_case(request):
    import hmmlearn.hmm  # noqa: F401  (a hard import: without hmmlearn these tests fail, they never skip)

    hmm = request.param[1]()
    x = sample_tokens(hmm, 20, 100, seed=31)
    return hmm, x


@pytest.mark.parametrize("implementation", ["log", "scaling"])
def test_agrees_with_hmmlearn(hmmlearn_case, implementation):
    hmm, x = hmmlearn_case
    B, T = x.shape
    model = hmm.to_hmmlearn()
    model.implementation = implementation
    X = x.reshape(-1, 1).numpy()
    lengths = [T] * B

    ll = hmmlib.log_likelihood(hmm, x)
    per_seq = np.array([model.score(x[b].reshape(-1, 1).numpy()) for b in range(B)])
    _close(ll, per_seq, atol=1e-9, rtol=1e-12)
    _close(ll.sum(), model.score(X, lengths), atol=1e-8, rtol=1e-12)

    post = hmmlib.posterior_marginals(hmm, x)
    _close(post.reshape(B * T, -1), model.predict_proba(X, lengths))

    paths, logp = hmmlib.viterbi(hmm, x)
    total, hl_paths = model.decode(X, lengths, algorithm="viterbi")
    assert np.array_equal(paths.reshape(-1).numpy(), hl_paths)
    _close(logp.sum(), total, atol=1e-8, rtol=1e-12)
    for b in range(3):
        lp_b, path_b = model.decode(x[b].reshape(-1, 1).numpy(), algorithm="viterbi")
        _close(logp[b], lp_b, atol=1e-10, rtol=1e-12)
        assert np.array_equal(paths[b].numpy(), path_b)


# =========================================================================== float32
F32_CASES = [
    ("dirichlet", lambda dt: hmmlib.dirichlet_hmm(10, 12, seed=41, dtype=dt)),
    ("paper", lambda dt: hmmlib.paper_hmm(10, 12, seed=42, dtype=dt)),
]


@pytest.mark.parametrize("make", [c[1] for c in F32_CASES], ids=[c[0] for c in F32_CASES])
def test_float32_agrees_with_float64(make):
    h64, h32 = make(torch.float64), make(torch.float32)
    assert h32.dtype == torch.float32
    x = sample_tokens(h64, 8, 200, seed=43)
    for fn in (hmmlib.posterior_marginals, hmmlib.posterior_h0, hmmlib.masked_conditional,
               hmmlib.masked_token_conditionals, hmmlib.next_token_conditionals):
        got = fn(h32, x)
        assert got.dtype == torch.float32, fn.__name__
        _close(got, fn(h64, x), atol=1e-5, rtol=0.0)
    ll32, ll64 = hmmlib.log_likelihood(h32, x), hmmlib.log_likelihood(h64, x)
    assert ll32.dtype == torch.float32
    _close(ll32, ll64, atol=0.0, rtol=1e-5)
    _, v32 = hmmlib.viterbi(h32, x)
    _, v64 = hmmlib.viterbi(h64, x)
    _close(v32, v64, atol=0.0, rtol=1e-5)


LONG_T = 100_000
# Measured on this code (CPU, torch 2.13): worst float32 - float64 differences at T = 100,000 were
# posteriors 1.5e-7, filtered alpha 1.7e-7, masked/next-token conditionals 2.1e-7, P(H_0 | x) 4.4e-8, log-likelihood
# 1.4e-8 relative; unnormalised alpha*beta rows drift from 1 by up to 3.2e-4 (hence the final
# renormalisation); float32 Viterbi log-probabilities 2.9e-7 relative (0.07 nats), its paths scored
# in float64 equal to the optimum (before Viterbi rescaled its scores every 64 steps: 2.0e-4, i.e.
# 64 nats, and a path 5 nats below the optimum). The bounds below leave a margin of about 5x.


@pytest.fixture(scope="module")
def long_case(request):
    """(float32 HMM, float64 HMM, one sequence of length 100,000)."""
    if request.param == "dirichlet":
        make = lambda dt: hmmlib.dirichlet_hmm(10, 10, seed=0, dtype=dt)  # noqa: E731
        assert (make(torch.float64).W > 0).all()  # every token sequence is possible: uniform random tokens will do
        x = torch.randint(0, 10, (LONG_T,), generator=torch.Generator().manual_seed(1))
    else:
        make = lambda dt: hmmlib.paper_hmm(10, 10, seed=0, dtype=dt)  # noqa: E731
        x = sample_tokens(make(torch.float32), 1, LONG_T, seed=1)[0]
    return make(torch.float32), make(torch.float64), x


def _max_err(f32: torch.Tensor, f64: torch.Tensor) -> float:
    assert f32.dtype == torch.float32 and f64.dtype == torch.float64
    return (f32.double() - f64).abs().max().item()


@pytest.mark.parametrize("long_case", ["dirichlet", "paper"], indirect=True)
def test_float32_long_sequence_agrees_with_float64(long_case):
    h32, h64, x = long_case
    post32 = hmmlib.posterior_marginals(h32, x)
    assert post32.shape == (LONG_T, 10)
    assert _max_err(post32, hmmlib.posterior_marginals(h64, x)) <= 1e-6
    assert _max_err(hmmlib.posterior_h0(h32, x), hmmlib.posterior_h0(h64, x)) <= 1e-6
    fr32, fr64 = hmmlib.forward(h32, x), hmmlib.forward(h64, x)
    assert _max_err(fr32.alpha, fr64.alpha) <= 1e-6  # what the next-token conditionals W A alpha are made of
    ll32, ll64 = fr32.log_likelihood, fr64.log_likelihood
    assert abs((ll32.double() - ll64) / ll64).item() <= 1e-7
    # the unnormalised float32 product alpha * beta drifts, but stays within 2e-3 of a distribution
    drift = ((fr32.alpha * hmmlib.backward(h32, x, fr32.scale)).sum(-1).double() - 1).abs().max().item()
    assert drift <= 2e-3, drift


@pytest.mark.parametrize("long_case", ["dirichlet"], indirect=True)
def test_float32_long_sequence_viterbi_against_float64(long_case):
    h32, h64, x = long_case
    p32, l32 = hmmlib.viterbi(h32, x)
    p64, l64 = hmmlib.viterbi(h64, x)
    assert abs((l32.double() - l64) / l64).item() <= 2e-6
    # both paths, scored in float64 term by term, attain the float64 optimum
    lA, lW = h64.A.log(), h64.W.log()
    for p in (p64, p32):
        score = (h64.pi.log()[p[0]] + lA[p[1:], p[:-1]].sum() + lW[x, p].sum()).item()
        assert abs(score - l64.item()) <= 1e-9 * abs(l64.item())


def _hmmlearn_score(hmm: hmmlib.HMM, x, startprob=None) -> float:
    """``log P(x)`` from hmmlearn (its log-space forward), optionally with another start distribution."""
    model = hmm.to_hmmlearn()
    model.implementation = "log"
    if startprob is not None:
        model.startprob_ = np.asarray(startprob, dtype=np.float64)
    return float(model.score(np.asarray(x, dtype=np.int64).reshape(-1, 1)))


def test_posterior_h0_agrees_with_hmmlearn(hmmlearn_case):
    """``P(H_0 = h | x_{1:T}) ~ pi_h P(x_{1:T} | H_1 ~ A[:, h])``: one hmmlearn score per state,
    with the start distribution A[:, h]."""
    hmm, x = hmmlearn_case
    assert not inference._inputs(hmm, x).state_major
    got = hmmlib.posterior_h0(hmm, x[:2])
    for b in range(2):
        logw = torch.tensor([math.log(float(hmm.pi[h])) + _hmmlearn_score(hmm, x[b], hmm.A[:, h].numpy())
                             for h in range(hmm.num_states)], dtype=torch.float64)
        _close(got[b], torch.softmax(logw, 0), atol=1e-10, rtol=1e-9)


def test_next_token_conditionals_agree_with_hmmlearn(hmmlearn_case):
    """``P(X_t = v | x_{<t}) = P(x_{<t}, v) / P(x_{<t})`` as ratios of hmmlearn scores."""
    hmm, x = hmmlearn_case
    got = hmmlib.next_token_conditionals(hmm, x[:1])[0]
    V = hmm.num_symbols
    for t in (0, 1, 37, x.shape[1] - 1):
        prefix = x[0, :t].tolist()
        denom = _hmmlearn_score(hmm, prefix) if t else 0.0
        want = [math.exp(_hmmlearn_score(hmm, prefix + [v]) - denom) for v in range(V)]
        _close(got[t], want, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("major", [True, False])
def test_viterbi_threads_change_nothing_and_are_restored(major, monkeypatch):
    """The Viterbi loop runs on VITERBI_THREADS threads: the same paths and log-probabilities, bit for bit, as on
    the caller's thread count, which is restored afterwards."""
    if not major:
        monkeypatch.setattr(_kernels, "VITERBI_STATE_MAJOR_MAX_K", 0)
    hmm = hmmlib.dirichlet_hmm(7, 5, seed=3)
    x, _ = hmmlib.sample(hmm, 300, 90, seed=4)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        p1, l1 = hmmlib.viterbi(hmm, x)
        assert torch.get_num_threads() == 2
        monkeypatch.setattr(_kernels, "VITERBI_THREADS", None)
        p2, l2 = hmmlib.viterbi(hmm, x)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(p1, p2) and torch.equal(l1, l2)
