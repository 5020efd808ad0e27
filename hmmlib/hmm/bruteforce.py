"""Brute-force enumeration over all hidden paths: the ground truth for tiny HMMs.

Everything here sums ``P(h, x)`` over all ``K^T`` paths in float64, with no
recursion, so it checks :mod:`hmmlib.inference` independently. Keep
``K ** T`` below about a million.
"""
from __future__ import annotations

import itertools
from typing import Any

import torch

from .model import HMM

__all__ = ["all_paths", "joint", "brute_posteriors", "brute_log_likelihood", "brute_h0_posterior",
           "brute_masked_token_conditionals", "brute_next_token_conditionals", "brute_viterbi"]

MAX_PATHS = 2_000_000


def all_paths(num_states: int, seq_len: int) -> torch.Tensor:
    """Every hidden path, shape (K^T, T), int64."""
    if num_states ** seq_len > MAX_PATHS:
        raise ValueError(f"{num_states}^{seq_len} paths is too many for brute force; keep K^T <= {MAX_PATHS}.")
    return torch.tensor(list(itertools.product(range(num_states), repeat=seq_len)), dtype=torch.int64)


def joint(hmm: HMM, x: Any, missing: Any = None) -> torch.Tensor:
    """``P(H = h, X = x)`` for every path ``h`` (float64, shape (K^T,)) for ONE sequence ``x`` (T,).

    Positions with ``missing[t]`` contribute no emission factor (the token is summed out).
    """
    hmm = hmm.to(dtype=torch.float64, device="cpu")
    x = torch.as_tensor(x, dtype=torch.int64).reshape(-1)
    T = x.numel()
    miss = torch.zeros(T, dtype=torch.bool) if missing is None else torch.as_tensor(missing).reshape(-1)
    h = all_paths(hmm.num_states, T)
    p = hmm.pi[h[:, 0]].clone()
    for t in range(1, T):
        p *= hmm.A[h[:, t], h[:, t - 1]]
    for t in range(T):
        if not miss[t]:
            p *= hmm.W[x[t], h[:, t]]
    return p


def brute_log_likelihood(hmm: HMM, x: Any, missing: Any = None) -> float:
    return float(torch.log(joint(hmm, x, missing).sum()))


def brute_posteriors(hmm: HMM, x: Any, missing: Any = None) -> torch.Tensor:
    """``P(H_t = k | x)``, shape (T, K)."""
    p = joint(hmm, x, missing)
    p = p / p.sum()
    T = torch.as_tensor(x).numel()
    h = all_paths(hmm.num_states, T)
    out = torch.zeros(T, hmm.num_states, dtype=torch.float64)
    for t in range(T):
        out[t].index_add_(0, h[:, t], p)
    return out


def brute_h0_posterior(hmm: HMM, x: Any) -> torch.Tensor:
    """``P(H_0 | x_{1:T})`` with a masked position 0 before ``x``: shape (K,)."""
    x = torch.as_tensor(x, dtype=torch.int64).reshape(-1)
    xx = torch.cat([torch.zeros(1, dtype=torch.int64), x])
    missing = torch.zeros(xx.numel(), dtype=torch.bool)
    missing[0] = True
    return brute_posteriors(hmm, xx, missing)[0]


def brute_masked_token_conditionals(hmm: HMM, x: Any) -> torch.Tensor:
    """``P(X_t = v | x_{-t})`` by trying every value ``v`` at ``t``: shape (T, V)."""
    x = torch.as_tensor(x, dtype=torch.int64).reshape(-1)
    T, V = x.numel(), hmm.num_symbols
    out = torch.zeros(T, V, dtype=torch.float64)
    for t in range(T):
        for v in range(V):
            xv = x.clone()
            xv[t] = v
            out[t, v] = joint(hmm, xv).sum()
        out[t] /= out[t].sum()
    return out


def brute_next_token_conditionals(hmm: HMM, x: Any) -> torch.Tensor:
    """``P(X_t = v | x_{0:t-1})`` as ratios of prefix probabilities: shape (T, V)."""
    x = torch.as_tensor(x, dtype=torch.int64).reshape(-1)
    T, V = x.numel(), hmm.num_symbols
    out = torch.zeros(T, V, dtype=torch.float64)
    for t in range(T):
        prefix = x[:t]
        denom = joint(hmm, prefix).sum() if t > 0 else torch.tensor(1.0, dtype=torch.float64)
        for v in range(V):
            out[t, v] = joint(hmm, torch.cat([prefix, torch.tensor([v])])).sum() / denom
    return out


def brute_viterbi(hmm: HMM, x: Any) -> tuple[torch.Tensor, float]:
    """The most probable path and its log-probability."""
    p = joint(hmm, x)
    i = int(p.argmax())
    return all_paths(hmm.num_states, torch.as_tensor(x).numel())[i], float(torch.log(p[i]))
