"""Shared fixtures and helpers for the hmmlib test suite.

Everything here is deliberately independent of :mod:`hmmlib.inference`: the
reference quantities come from :mod:`hmmlib.bruteforce` (enumeration over all
paths) or from the direct formulas written out below.
"""
from __future__ import annotations

import math

import pytest
import torch

import hmmlib
from hmmlib import bruteforce

# The tests run many tiny tensor ops; on a small shared machine intra-op threading only adds
# synchronisation overhead (a 4096-element product took 70 ms with 2 threads, 1 ms with 1).
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _cache_brute_force_paths():
    """Memoise :func:`hmmlib.bruteforce.all_paths` (a pure function whose result is only read)
    for the session: the enumeration helpers rebuild the same (K^T, T) table on every call."""
    original = bruteforce.all_paths
    cache: dict[tuple[int, int], torch.Tensor] = {}

    def cached(num_states: int, seq_len: int) -> torch.Tensor:
        key = (num_states, seq_len)
        if key not in cache:
            cache[key] = original(num_states, seq_len)
        return cache[key]

    bruteforce.all_paths = cached
    yield
    bruteforce.all_paths = original

# --------------------------------------------------------------------------- small HMMs for brute force
# (id, factory) pairs; every HMM has K <= 4 so that K^T stays tiny for T <= 6.
SMALL_HMM_SPECS = [
    # plain Dirichlet HMMs, flat and peaked
    ("dir-K2-V3-c1-s0", lambda: hmmlib.dirichlet_hmm(2, 3, seed=0)),
    ("dir-K3-V4-c1-s1", lambda: hmmlib.dirichlet_hmm(3, 4, seed=1)),
    ("dir-K4-V3-c1-s2", lambda: hmmlib.dirichlet_hmm(4, 3, seed=2)),
    ("dir-K3-V5-c0.3-s3", lambda: hmmlib.dirichlet_hmm(
        3, 5, start_concentration=0.3, transition_concentration=0.3, emission_concentration=0.3, seed=3)),
    ("dir-K4-V4-c0.2-s4", lambda: hmmlib.dirichlet_hmm(
        4, 4, start_concentration=0.2, transition_concentration=0.2, emission_concentration=0.2, seed=4)),
    ("dir-K2-V2-c0.1-s5", lambda: hmmlib.dirichlet_hmm(
        2, 2, start_concentration=0.1, transition_concentration=0.1, emission_concentration=0.1, seed=5)),
    # the paper's near-deterministic generator
    ("paper-K3-V4-s0", lambda: hmmlib.paper_hmm(3, 4, seed=0)),
    ("paper-K3-V4-s1", lambda: hmmlib.paper_hmm(3, 4, seed=1)),
    ("paper-K3-V4-s2", lambda: hmmlib.paper_hmm(3, 4, seed=2)),
    ("paper-K4-V3-s3", lambda: hmmlib.paper_hmm(4, 3, seed=3)),
    ("paper-K2-V4-s4", lambda: hmmlib.paper_hmm(2, 4, seed=4)),
    ("paper-K4-V5-2perms-s5", lambda: hmmlib.paper_hmm(4, 5, num_perms=2, seed=5)),
]
SMALL_HMM_IDS = [name for name, _ in SMALL_HMM_SPECS]

# sequence lengths used against brute force (K^T <= 4^6 = 4096 paths)
BRUTE_LENGTHS = (1, 2, 4, 6)
NUM_SEQS = 3


@pytest.fixture(params=SMALL_HMM_SPECS, ids=SMALL_HMM_IDS)
def small_hmm(request) -> hmmlib.HMM:
    return request.param[1]()


def sample_tokens(hmm: hmmlib.HMM, num_seqs: int, seq_len: int, seed: int) -> torch.Tensor:
    """Tokens drawn from ``hmm`` itself, so every sequence has positive probability."""
    x, _ = hmmlib.sample(hmm, num_seqs, seq_len, seed=seed)
    return x


def path_log_joint(hmm: hmmlib.HMM, path, x) -> float:
    """``log P(H = path, X = x)`` written out term by term (float64)."""
    pi, A, W = (t.double().cpu() for t in (hmm.pi, hmm.A, hmm.W))
    path = [int(h) for h in path]
    x = [int(v) for v in x]
    terms = [pi[path[0]]] + [A[path[t], path[t - 1]] for t in range(1, len(path))]
    terms += [W[x[t], path[t]] for t in range(len(x))]
    total = 0.0
    for p in terms:
        p = float(p)
        if p == 0.0:
            return -math.inf
        total += math.log(p)
    return total


def binomial_tolerance(p: torch.Tensor, n, num_sd: float = 5.0) -> torch.Tensor:
    """Allowed |empirical frequency - p| for ``n`` Bernoulli(p) trials: ``num_sd`` binomial
    standard errors ``sqrt(p (1-p) / n)``, plus a half-count continuity correction ``0.5 / n``
    where ``p > 0`` (for ``p == 0`` the tolerance is exactly 0: such events must never occur)."""
    p = p.double()
    n = torch.as_tensor(n, dtype=torch.float64).clamp_min(1)
    sd = torch.sqrt(p * (1 - p) / n)
    return num_sd * sd + torch.where(p > 0, 0.5 / n, torch.zeros_like(p))
