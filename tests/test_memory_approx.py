"""The eta-approximate attention-head theorem (hmmlib.memory.approx_theorem)."""
from __future__ import annotations

import pytest
import torch

from hmmlib.adapt.tasks import paper_task
from hmmlib.experiments import check_theorem
from hmmlib.memory import locatable_memory_hmm, paper_memory_hmm, sample_memory
from hmmlib.memory.approx_theorem import check_approximate_theorem

F64 = torch.float64


def test_reduces_to_the_exact_theorem():
    loc = locatable_memory_hmm()
    mu = torch.tensor([1.0, -1.2, 0.5], dtype=F64)
    x, *_ = sample_memory(loc, 60, 24, seed=0)
    a = check_approximate_theorem(loc, mu, x, cell=0, syntax=0, scale=5.0, tau=0.0)
    e = check_theorem(loc, mu, x, cell=0, syntax=0, scale=5.0)     # a separate implementation of the exact one
    assert torch.equal(a.located, e.located)
    assert float(a.eta.max()) < 1e-12 and a.rank_residual < 1e-12
    assert torch.allclose(a.bound, e.bound, atol=1e-9) and torch.equal(a.correct, e.correct)


@pytest.mark.parametrize("n", [2, 7])
def test_sound_on_paper_memory_hmms(n):
    mem = paper_memory_hmm(n, seed=0)
    x, *_ = sample_memory(mem, 150, 64, seed=1)
    a = check_approximate_theorem(mem, paper_task(n, seed=0).mu, x, cell=0, syntax=0, scale=20.0, tau=0.1)
    g = a.margin > a.bound
    assert bool(a.correct[g].all())                                  # guaranteed => the head is right
    assert bool((a.outside / (1 - a.outside) <= a.beta * (1 + 1e-9) + 1e-15).all())
    assert bool((a.spread <= a.spread_bound + 1e-12).all())          # the bound on Delta


def test_errors():
    loc = locatable_memory_hmm()
    x, *_ = sample_memory(loc, 4, 12, seed=0)
    with pytest.raises(ValueError, match="tau"):
        check_approximate_theorem(loc, [1.0, -1.0, 0.5], x, cell=0, syntax=0, scale=5.0, tau=1.0)
    with pytest.raises(ValueError, match="num_values"):
        check_approximate_theorem(loc, [1.0, -1.0], x, cell=0, syntax=0, scale=5.0, tau=0.1)
    with pytest.raises(ValueError, match="scale"):
        check_approximate_theorem(loc, [1.0, -1.0, 0.5], x, cell=0, syntax=0, scale=0.0, tau=0.1)
