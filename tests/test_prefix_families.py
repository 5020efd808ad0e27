"""HMM families: mixtures, channels and the exact restart conditional, against brute force."""
import math

import pytest
import torch

from hmmlib.hmm import bruteforce, dirichlet_hmm
from hmmlib.hmm.families import (member_posterior, mixture_hmm, perturbed_hmm, restart_conditionals,
                                 symbol_channel, through_channel)


def _family():
    return [dirichlet_hmm(2, 3, seed=s, emission_concentration=0.5) for s in range(3)]


def test_restart_conditionals_match_brute_force():
    fam = _family()
    w = [0.5, 0.3, 0.2]
    x = torch.tensor([[0, 1, 2], [2, 2, 1]])
    y = torch.tensor([[1, 0, 2], [2, 1, 1]])
    p = restart_conditionals(fam, x, y, w)
    lik = lambda m, s: math.exp(bruteforce.brute_log_likelihood(m, s)) if len(s) else 1.0  # noqa: E731
    for b in range(2):
        for t in range(3):
            den = sum(wc * lik(m, x[b]) * lik(m, y[b, :t]) for wc, m in zip(w, fam))
            for v in range(3):
                s = torch.cat([y[b, :t], torch.tensor([v])])
                num = sum(wc * lik(m, x[b]) * lik(m, s) for wc, m in zip(w, fam))
                assert abs(num / den - float(p[b, t, v])) < 1e-10


def test_mixture_is_the_weighted_sum_of_members():
    fam = _family()
    mix = mixture_hmm(fam, [0.2, 0.5, 0.3])
    for s in ([0, 1], [2, 0, 1, 1]):
        want = sum(w * math.exp(bruteforce.brute_log_likelihood(m, s)) for w, m in zip([0.2, 0.5, 0.3], fam))
        assert abs(math.exp(bruteforce.brute_log_likelihood(mix, s)) - want) < 1e-12
    post = member_posterior(fam, torch.zeros(4, 0, dtype=torch.long))
    assert torch.allclose(post, torch.full((4, 3), 1 / 3, dtype=post.dtype))


def test_channel_and_perturbation():
    M = symbol_channel(5, 0.3, seed=1)
    assert torch.allclose(M.sum(0), torch.ones(5, dtype=M.dtype))
    assert sorted(M.diag().tolist())[-1] <= 1.0 and (M > 0).sum() <= 10
    h = dirichlet_hmm(2, 5, seed=0)
    noisy = through_channel(h, M)
    for s in ([0, 4], [3]):  # P'(x) = sum_{x0} prod M[x_t, x0_t] P(x0)
        import itertools
        want = sum(math.exp(bruteforce.brute_log_likelihood(h, list(z)))
                   * math.prod(float(M[a, b]) for a, b in zip(s, z)) for z in itertools.product(range(5), repeat=len(s)))
        assert abs(math.exp(bruteforce.brute_log_likelihood(noisy, s)) - want) < 1e-12
    assert torch.equal(perturbed_hmm(h, 0.0).A, h.A)
    assert not torch.allclose(perturbed_hmm(h, 0.5, seed=1).W, h.W)


def test_family_errors():
    fam = _family()
    with pytest.raises(ValueError, match="share the vocabulary"):
        mixture_hmm([fam[0], dirichlet_hmm(2, 4, seed=0)])
    with pytest.raises(ValueError, match="weights"):
        mixture_hmm(fam, [0.5, 0.5])
    with pytest.raises(ValueError, match="amount"):
        perturbed_hmm(fam[0], 1.5)
    with pytest.raises(ValueError, match="M must be"):
        through_channel(fam[0], torch.eye(4))
    with pytest.raises(ValueError, match="same number of rows"):
        restart_conditionals(fam, torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
