"""Random HMMs: the generator of Wei, Xie & Ma (2021) and a plain Dirichlet HMM.

Both are deterministic functions of their ``seed``: the same seed gives the
same HMM on every machine (they draw with numpy's PCG64 in float64).
"""
from __future__ import annotations

import numpy as np
import torch

from .._validate import positive_ints, positive_numbers
from .model import HMM

__all__ = ["paper_hmm", "dirichlet_hmm", "softmax_temp"]


def softmax_temp(u: np.ndarray, temp: float, axis: int = -1) -> np.ndarray:
    """``softmax((u - 0.5) / temp)`` along ``axis``: the paper's recipe for a random distribution.

    ``temp`` large gives nearly uniform distributions; ``temp`` small gives
    nearly one-hot ones (the largest of the ``u`` wins).
    """
    z = (u - 0.5) / temp
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def paper_hmm(
    num_states: int,
    num_symbols: int = 10,
    *,
    start_temp: float = 10.0,
    transition_temp: float = 0.01,
    emission_temp: float = 0.01,
    num_perms: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> HMM:
    """The HMM generator of the paper's experiments (``src/generate_data.py``).

    * ``pi = softmax((U - 0.5) / start_temp)``, ``U ~ Uniform[0,1]^K``;
    * ``A = sum_k m_k P_k``: a mixture of ``num_perms`` (default ``num_states``)
      random permutation matrices ``P_k`` with weights
      ``m = softmax((U - 0.5) / transition_temp)``; ``A`` is doubly stochastic;
    * each column ``W[:, h] = softmax((U - 0.5) / emission_temp)`` over symbols.

    With the defaults (10, 0.01, 0.01) the start is nearly uniform, the dynamics
    are a noisy near-permutation, and each state emits one symbol with
    probability around 0.9.
    """
    positive_ints(num_states=num_states, num_symbols=num_symbols)
    positive_numbers(start_temp=start_temp, transition_temp=transition_temp, emission_temp=emission_temp)
    num_perms = num_states if num_perms is None else num_perms
    positive_ints(num_perms=num_perms)
    rng = np.random.default_rng(seed)
    K, V = num_states, num_symbols
    pi = softmax_temp(rng.random(K), start_temp)
    mixing = softmax_temp(rng.random(num_perms), transition_temp)
    A = np.zeros((K, K))
    cols = np.arange(K)
    for m in mixing:
        perm = rng.permutation(K)
        A[perm, cols] += m  # column h moves to perm[h]
    W = softmax_temp(rng.random((V, K)), emission_temp, axis=0)
    return HMM(*(torch.as_tensor(a) for a in (pi, A, W))).to(device=device, dtype=dtype)


def dirichlet_hmm(
    num_states: int,
    num_symbols: int,
    *,
    start_concentration: float = 1.0,
    transition_concentration: float = 1.0,
    emission_concentration: float = 1.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> HMM:
    """A random HMM whose ``pi`` and every column of ``A`` and ``W`` are Dirichlet draws.

    Concentrations below 1 give peaked (sparse) distributions, above 1 flat ones.
    """
    positive_ints(num_states=num_states, num_symbols=num_symbols)
    positive_numbers(
        start_concentration=start_concentration,
        transition_concentration=transition_concentration,
        emission_concentration=emission_concentration,
    )
    rng = np.random.default_rng(seed)
    K, V = num_states, num_symbols

    def draw(alpha: float, size: int, n: int) -> np.ndarray:
        x = rng.dirichlet(np.full(size, alpha), size=n).T  # (size, n), columns are draws
        x = np.maximum(x, 0.0)
        return x / x.sum(0, keepdims=True)

    pi = draw(start_concentration, K, 1)[:, 0]
    A = draw(transition_concentration, K, K)
    W = draw(emission_concentration, V, K)
    return HMM(*(torch.as_tensor(a) for a in (pi, A, W))).to(device=device, dtype=dtype)
