"""hmmlib.sample: the flat-CDF batched sampler."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import hmmlib
from hmmlib.hmm.sampling import FlatCDF

from conftest import binomial_tolerance

F64 = torch.float64
LARGEST_UNIFORM = float(np.nextafter(1.0, 0.0))  # 1 - 2**-53: the largest double in torch.rand's [0, 1)

SAMPLER_CASES = [
    ("dirichlet-K4-V6", lambda: hmmlib.dirichlet_hmm(4, 6, seed=3)),
    ("dirichlet-peaked-K5-V6", lambda: hmmlib.dirichlet_hmm(
        5, 6, start_concentration=0.5, transition_concentration=0.3, emission_concentration=0.3, seed=8)),
    ("paper-K4-V6", lambda: hmmlib.paper_hmm(4, 6, seed=3)),
    ("paper-mixed-K5-V6", lambda: hmmlib.paper_hmm(5, 6, transition_temp=0.3, emission_temp=0.3, seed=4)),
]


def _zero_pattern_hmm() -> hmmlib.HMM:
    """Zeros in the first, last and middle categories; columns whose only mass is first or last."""
    pi = torch.tensor([0.0, 0.3, 0.7, 0.0], dtype=F64)
    A = torch.tensor([
        [0.0, 0.5, 0.0, 1.0],
        [0.6, 0.0, 0.0, 0.0],
        [0.4, 0.0, 0.0, 0.0],
        [0.0, 0.5, 1.0, 0.0],
    ], dtype=F64)
    W = torch.tensor([
        [0.0, 1.0, 0.0, 0.0],
        [0.5, 0.0, 0.0, 0.2],
        [0.0, 0.0, 0.0, 0.3],
        [0.5, 0.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.5],
    ], dtype=F64)
    return hmmlib.HMM(pi, A, W)


def _check_frequencies(hmm: hmmlib.HMM, tokens: torch.Tensor, states: torch.Tensor) -> None:
    """Empirical start, transition and emission frequencies within 5 binomial standard errors."""
    N, T = states.shape
    K, V = hmm.num_states, hmm.num_symbols
    # start: N independent draws from pi
    start = torch.bincount(states[:, 0], minlength=K).double() / N
    assert ((start - hmm.pi).abs() <= binomial_tolerance(hmm.pi, N)).all(), (start, hmm.pi)
    # transitions: given n_h visits to h (before the last step), the next states are n_h iid draws
    # from A[:, h] (strong Markov property), so each count is Binomial(n_h, A[h', h])
    prev, nxt = states[:, :-1].reshape(-1), states[:, 1:].reshape(-1)
    trans = torch.zeros(K, K, dtype=F64).index_put_((nxt, prev), torch.ones(prev.numel(), dtype=F64), accumulate=True)
    n_h = trans.sum(0)
    assert (n_h > 0).all()  # every state was visited
    freq = trans / n_h
    assert ((freq - hmm.A).abs() <= binomial_tolerance(hmm.A, n_h)).all(), (freq, hmm.A)
    # emissions: given the states, tokens are independent draws from W[:, h]
    h, x = states.reshape(-1), tokens.reshape(-1)
    emit = torch.zeros(V, K, dtype=F64).index_put_((x, h), torch.ones(x.numel(), dtype=F64), accumulate=True)
    m_h = emit.sum(0)
    freq = emit / m_h
    assert ((freq - hmm.W).abs() <= binomial_tolerance(hmm.W, m_h)).all(), (freq, hmm.W)


@pytest.mark.parametrize("make", [c[1] for c in SAMPLER_CASES], ids=[c[0] for c in SAMPLER_CASES])
def test_empirical_frequencies_match_parameters(make):
    hmm = make()
    tokens, states = hmmlib.sample(hmm, 20_000, 12, seed=2024)
    _check_frequencies(hmm, tokens, states)


def test_frequency_check_has_power():
    """The same check rejects samples from a slightly different HMM (so it is not vacuous)."""
    hmm = hmmlib.dirichlet_hmm(4, 6, seed=3)
    A = hmm.A.clone()
    A[:, 0] = 0.9 * A[:, 0] + 0.1 * torch.eye(4, dtype=F64)[:, (int(A[:, 0].argmin()))]
    other = hmmlib.HMM(hmm.pi, A, hmm.W)
    tokens, states = hmmlib.sample(other, 20_000, 12, seed=2024)
    with pytest.raises(AssertionError):
        _check_frequencies(hmm, tokens, states)


def test_shapes_dtypes_and_ranges():
    for hmm in (hmmlib.dirichlet_hmm(3, 7, seed=0), hmmlib.paper_hmm(5, 4, seed=1, dtype=torch.float32)):
        for n, T in ((1, 1), (3, 17), (64, 2)):
            tokens, states = hmmlib.sample(hmm, n, T, seed=0)
            for t in (tokens, states):
                assert t.shape == (n, T) and t.dtype == torch.int64 and t.is_contiguous()
            assert tokens.min() >= 0 and tokens.max() < hmm.num_symbols
            assert states.min() >= 0 and states.max() < hmm.num_states


def test_zero_probability_categories_are_never_drawn():
    hmm = _zero_pattern_hmm()
    tokens, states = hmmlib.sample(hmm, 5_000, 30, seed=11)
    assert (hmm.pi[states[:, 0]] > 0).all()
    assert (hmm.A[states[:, 1:], states[:, :-1]] > 0).all()
    assert (hmm.W[tokens, states] > 0).all()
    # and the positive ones all occur, at the right rates
    _check_frequencies(hmm, tokens, states)
    assert set(states[:, 0].tolist()) == {1, 2}


def test_flat_cdf_never_draws_zero_probability_at_the_edges():
    M = torch.tensor([[0.0, 0.0, 0.5], [1.0, 0.0, 0.0], [0.0, 1.0, 0.5]], dtype=F64)  # columns: (0,1,0), (0,0,1), (.5,0,.5)
    f = FlatCDF(M)
    u = torch.tensor([0.0, 1e-300, 0.25, 0.49, 0.5, 0.75, 0.999999], dtype=F64)
    for k, allowed in ((0, {1}), (1, {2}), (2, {0, 2})):
        got = f.draw(torch.full_like(u, k, dtype=torch.int64), u)
        assert set(got.tolist()) <= allowed, (k, got)
    got = f.draw(torch.full_like(u, 2, dtype=torch.int64), u)
    assert got.tolist() == [0, 0, 0, 0, 2, 2, 2]  # inverse CDF: u < 0.5 -> 0, else 2


def test_flat_cdf_draw_stays_in_range_for_the_largest_uniform():
    M = torch.full((2, 2), 0.5, dtype=F64)
    got = FlatCDF(M).draw(torch.tensor([0, 1]), torch.tensor([LARGEST_UNIFORM, LARGEST_UNIFORM], dtype=F64))
    assert (got < 2).all(), got


def test_sample_stays_in_range_for_the_largest_uniform(monkeypatch):
    hmm = hmmlib.dirichlet_hmm(3, 4, seed=0)
    real_rand = torch.rand

    def largest_rand(*size, generator=None, device=None, dtype=None):
        shape = size[0] if len(size) == 1 and not isinstance(size[0], int) else size
        real_rand(shape, generator=generator, device=device, dtype=dtype)  # keep the stream moving
        return torch.full(tuple(shape), LARGEST_UNIFORM, dtype=dtype, device=device)

    monkeypatch.setattr(torch, "rand", largest_rand)
    tokens, states = hmmlib.sample(hmm, 2, 5, seed=0)
    assert (states < hmm.num_states).all() and (tokens < hmm.num_symbols).all(), (states, tokens)


def test_same_seed_same_samples_different_seed_different_samples():
    hmm = hmmlib.dirichlet_hmm(5, 8, seed=1)
    a = hmmlib.sample(hmm, 50, 40, seed=123)
    b = hmmlib.sample(hmm, 50, 40, seed=123)
    c = hmmlib.sample(hmm, 50, 40, seed=124)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])


def test_generator_argument_matches_seed_and_advances():
    hmm = hmmlib.paper_hmm(5, 6, transition_temp=0.3, seed=2)
    g = torch.Generator().manual_seed(7)
    first = hmmlib.sample(hmm, 30, 25, generator=g)
    by_seed = hmmlib.sample(hmm, 30, 25, seed=7)
    assert torch.equal(first[0], by_seed[0]) and torch.equal(first[1], by_seed[1])
    second = hmmlib.sample(hmm, 30, 25, generator=g)  # the generator's stream has moved on
    assert not torch.equal(first[0], second[0])
    g.manual_seed(7)
    again = hmmlib.sample(hmm, 30, 25, generator=g)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


def test_samples_are_possible_under_the_model():
    hmm = hmmlib.paper_hmm(6, 5, seed=5)
    tokens, _ = hmmlib.sample(hmm, 200, 40, seed=3)
    assert torch.isfinite(hmmlib.log_likelihood(hmm, tokens)).all()
