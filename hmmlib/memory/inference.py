r"""Exact inference in a :class:`~hmmlib.memory.MemoryHMM`, through its equivalent plain HMM.

Because the memory never changes, :math:`P(M \mid x_{0:T-1})` is the memory marginal of the
*filtered* distribution of the last hidden state of :func:`~hmmlib.memory.to_hmm`'s HMM (one
forward pass). Masked quantities use :math:`P(H_t \mid x_{-t}) \propto P(H_t \mid x_{<t})\,
P(x_{>t} \mid H_t)` (predictive times backward message), the formula of
:func:`hmmlib.masked_token_conditionals`.

The ``brute_*`` functions enumerate every memory content and every reader path ``(J, S)`` straight
from the memory HMM's definition (no equivalent HMM, no recursion): the ground truth for tests.
"""
from __future__ import annotations

import itertools
from typing import Any

import torch

from ..hmm.bruteforce import MAX_PATHS
from ..hmm.model import HMM
from ..hmm.inference import backward, check_tokens, forward, masked_token_conditionals
from .model import MemoryHMM, check_memory_hmm, marginalise_memory, memory_configurations, to_hmm

__all__ = ["memory_posterior", "masked_state_posteriors", "memory_masked_posteriors", "memory_masked_conditionals",
           "brute_memory_joint", "brute_memory_posterior", "brute_memory_masked_conditionals"]


def _tokens(mem: MemoryHMM, x: Any) -> torch.Tensor:
    check_memory_hmm(mem)
    return check_tokens(x, mem.num_symbols, mem.device)[0]


def memory_posterior(mem: MemoryHMM, x: Any, hmm: HMM | None = None) -> torch.Tensor:
    r""":math:`P(M_j = m \mid x_{0:T-1})` for every cell, shape ``(B, num_cells, num_values)``.

    ``x``: ``(T,)`` or ``(B, T)`` token ids. ``hmm`` may pass a precomputed ``to_hmm(mem)``.
    Raises ``ValueError`` for bad tokens and for sequences of probability 0.
    """
    x = _tokens(mem, x)
    hmm = to_hmm(mem) if hmm is None else hmm
    fw = forward(hmm, x)
    if torch.isinf(fw.log_likelihood).any():
        b = int(torch.isinf(fw.log_likelihood).nonzero()[0])
        raise ValueError(f"sequence {b} has probability 0 under the memory HMM; its memory posterior is undefined.")
    return marginalise_memory(mem, fw.alpha[:, -1])


def masked_state_posteriors(hmm: HMM, x: Any) -> torch.Tensor:
    r""":math:`P(H_t \mid x_{-t})` for every position of every sequence, ``(B, T, K)``, in a plain HMM
    (e.g. ``to_hmm(mem)``): predictive :math:`A\hat\alpha_{t-1}` (:math:`\pi` at ``t = 0``) times the
    scaled backward message, normalised."""
    fw = forward(hmm, x)
    if torch.isinf(fw.log_likelihood).any():
        b = int(torch.isinf(fw.log_likelihood).nonzero()[0])
        raise ValueError(f"sequence {b} has probability 0 under the HMM; its posteriors are undefined.")
    beta = backward(hmm, x, fw.scale)
    pred = torch.empty_like(fw.alpha)
    pred[:, 0] = hmm.pi
    pred[:, 1:] = fw.alpha[:, :-1] @ hmm.A.T
    post = pred * beta
    return post / post.sum(-1, keepdim=True)


def memory_masked_posteriors(mem: MemoryHMM, x: Any, hmm: HMM | None = None) -> torch.Tensor:
    r""":math:`q_{-t} = P(M_j \mid x_{-t})` for every position ``t`` and cell ``j``: ``(B, T, num_cells, num_values)``."""
    x = _tokens(mem, x)
    hmm = to_hmm(mem) if hmm is None else hmm
    return marginalise_memory(mem, masked_state_posteriors(hmm, x))


def memory_masked_conditionals(mem: MemoryHMM, x: Any, hmm: HMM | None = None) -> torch.Tensor:
    r""":math:`g_t = P(X_t \mid x_{-t})` for every position: what a perfect masked LM outputs when
    position ``t`` alone is masked, ``(B, T, V)`` (:func:`hmmlib.masked_token_conditionals` on the
    equivalent HMM)."""
    x = _tokens(mem, x)
    return masked_token_conditionals(to_hmm(mem) if hmm is None else hmm, x)


# --------------------------------------------------------------------------- brute force
def brute_memory_joint(mem: MemoryHMM, x: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""``P(M = c, (J, S)_{0:T-1} = path, X = x)`` for every memory content ``c`` and reader path, for ONE
    sequence ``x`` ``(T,)``, written out from the definition in float64 on the CPU.

    Returns:
        ``(p, configs, paths)``: ``p`` ``(C, P)``, ``configs`` ``(C, N)`` and ``paths`` ``(P, T)`` (pair indices).
    """
    check_memory_hmm(mem)
    mem = mem.to(device="cpu", dtype=torch.float64)
    x = check_tokens(x, mem.num_symbols)[0].reshape(-1)
    T, R, S = x.numel(), mem.num_reader_states, mem.num_syntax_states
    configs = memory_configurations(mem.num_cells, mem.num_values)
    if R ** T * configs.shape[0] > MAX_PATHS:
        raise ValueError(f"{configs.shape[0]} memories x {R}^{T} reader paths is too many for brute force; "
                         f"keep it below {MAX_PATHS}.")
    paths = torch.tensor(list(itertools.product(range(R), repeat=T)), dtype=torch.int64)
    p_path = mem.pi[paths[:, 0]].clone()
    for t in range(1, T):
        p_path *= mem.A[paths[:, t], paths[:, t - 1]]
    p_config = torch.ones(configs.shape[0], dtype=torch.float64)
    for j in range(mem.num_cells):
        p_config *= mem.memory_prior[j, configs[:, j]]
    p = p_config[:, None] * p_path[None, :]
    for t in range(T):
        cell, syn = paths[:, t] // S, paths[:, t] % S
        value = configs[:, cell]                                      # (C, P): M_{J_t}
        p *= mem.W[x[t], value * S + syn[None, :]]
    return p, configs, paths


def brute_memory_posterior(mem: MemoryHMM, x: Any) -> torch.Tensor:
    r""":math:`P(M_j = m \mid x)` ``(num_cells, num_values)`` by enumeration, for one sequence."""
    p, configs, _ = brute_memory_joint(mem, x)
    pc = p.sum(1)
    pc = pc / pc.sum()
    out = torch.zeros(mem.num_cells, mem.num_values, dtype=torch.float64)
    for j in range(mem.num_cells):
        out[j].index_add_(0, configs[:, j], pc)
    return out


def brute_memory_masked_conditionals(mem: MemoryHMM, x: Any) -> torch.Tensor:
    r""":math:`P(X_t = v \mid x_{-t})` ``(T, V)`` by trying every value ``v`` at ``t``, for one sequence."""
    x = check_tokens(x, mem.num_symbols)[0].reshape(-1).cpu()
    T, V = x.numel(), mem.num_symbols
    out = torch.zeros(T, V, dtype=torch.float64)
    for t in range(T):
        for v in range(V):
            xv = x.clone()
            xv[t] = v
            out[t, v] = brute_memory_joint(mem, xv)[0].sum()
        out[t] /= out[t].sum()
    return out
