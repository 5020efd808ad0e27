r"""Exact, batched inference in an HMM.

The core is the *scaled* forward-backward recursion, one GEMM per time step over
the whole batch (much faster than the log-space ``logsumexp`` recursion, which builds a (B, K, K)
tensor per step; ``benchmarks/inference.py`` times it against hmmlearn). With ``e_t = W[x_t, :]``:

.. math::

    \bar\alpha_t = A\hat\alpha_{t-1}\ (\bar\alpha_0=\pi),\quad
    c_t = \mathbf 1^\top(\bar\alpha_t\odot e_t),\quad
    \hat\alpha_t = \bar\alpha_t\odot e_t / c_t,

    \hat\beta_{T-1}=\mathbf 1,\quad
    \hat\beta_t = A^\top(e_{t+1}\odot\hat\beta_{t+1})/c_{t+1}.

Then ``alpha_hat_t = P(H_t | x_{0:t})``, ``alpha_bar_t = P(H_t | x_{0:t-1})``,
``c_t = P(x_t | x_{0:t-1})``, ``log P(x) = sum_t log c_t`` and the posterior
marginals are ``gamma_t = alpha_hat_t * beta_hat_t``.

A position can be marked *missing* (masked): its emission factor is 1 for
every state, which is exactly marginalising the unseen token.

This module holds the public functions, each a few lines of the math above; the tuned
time loops, buffer layouts and tiling live in the private :mod:`._kernels`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import _kernels
from .model import HMM

__all__ = [
    "check_tokens",
    "ForwardResult",
    "forward",
    "backward",
    "log_likelihood",
    "posterior_marginals",
    "posterior_h0",
    "masked_conditional",
    "masked_token_conditionals",
    "next_token_conditionals",
    "entropy",
    "viterbi",
]


# --------------------------------------------------------------------------- input checks
def check_tokens(x: Any, num_symbols: int, device: torch.device | str | None = None) -> tuple[torch.Tensor, bool]:
    """Validate token ids and return ``(tokens as int64 (B, T) on device, was_1d)``.

    Accepts a tensor, numpy array or nested list of integers, of shape ``(T,)``
    (one sequence) or ``(B, T)``. Raises ``ValueError`` for floats, booleans,
    other ranks, empty inputs and ids outside ``[0, num_symbols)``.
    """
    if not isinstance(x, torch.Tensor):
        try:
            arr = np.asarray(x)
        except ValueError:  # numpy >= 1.24 refuses ragged nested lists itself
            raise ValueError("tokens must be a rectangular array of integers; got ragged input (sequences of "
                             "different lengths): pad them to one length and mark the padding with missing=..., "
                             "or pass them one at a time.") from None
        if arr.size == 0:
            raise ValueError(f"tokens are empty (shape {arr.shape}); pass at least one sequence of length >= 1.")
        if arr.dtype == object:
            raise ValueError("tokens must be a rectangular array of integers; got ragged or non-numeric input.")
        x = torch.as_tensor(arr)
    if x.dtype == torch.bool or x.is_floating_point() or x.is_complex():
        raise ValueError(f"tokens must have an integer dtype (e.g. torch.int64); got {x.dtype}. Use x.long().")
    was_1d = x.dim() == 1
    if was_1d:
        x = x.unsqueeze(0)
    if x.dim() != 2:
        raise ValueError(f"tokens must have shape (seq_len,) or (batch, seq_len); got shape {tuple(x.shape)}.")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"tokens are empty (shape {tuple(x.shape)}); pass at least one sequence of length >= 1.")
    lo, hi = int(x.min()), int(x.max())
    if lo < 0 or hi >= num_symbols:
        b, t = (int(i) for i in ((x < 0) | (x >= num_symbols)).nonzero()[0])
        raise ValueError(
            f"token id {int(x[b, t])} at (sequence {b}, position {t}) is outside [0, {num_symbols}); "
            f"the HMM has num_symbols={num_symbols}. Special tokens (e.g. [MASK]) are not HMM symbols: "
            "use missing=... to mark a masked position."
        )
    return x.to(device=device, dtype=torch.int64), was_1d


def _check_missing(missing: Any, shape: tuple[int, int], device: torch.device) -> torch.Tensor | None:
    if missing is None:
        return None
    m = torch.as_tensor(missing, device=device)
    if m.dtype != torch.bool:
        raise ValueError(f"missing must be a boolean mask; got dtype {m.dtype}.")
    if m.dim() == 1:
        m = m.unsqueeze(0)
    try:
        return m.expand(shape)
    except RuntimeError:
        raise ValueError(f"missing has shape {tuple(m.shape)}, which does not broadcast to the tokens' {shape}.") from None


def _inputs(hmm: HMM, x: Any, missing: Any = None, emissions: bool = True) -> _kernels._Prepared:
    """Check ``hmm``, the tokens and the mask, and lay them out for the kernels."""
    if not isinstance(hmm, HMM):
        raise ValueError(f"expected an HMM, got {type(hmm).__name__}.")
    tokens, was_1d = check_tokens(x, hmm.num_symbols, hmm.device)
    m = _check_missing(missing, tuple(tokens.shape), hmm.device)
    return _kernels._prepare(hmm, tokens, was_1d, m, emissions)


# --------------------------------------------------------------------------- forward and backward
@dataclass(frozen=True)
class ForwardResult:
    """Results of the scaled forward pass.

    Attributes:
        alpha: filtered distributions ``P(H_t | x_{0:t})``, shape (B, T, K).
        scale: ``c_t = P(x_t | x_{0:t-1})``, shape (B, T); ``log_likelihood = scale.log().sum(1)``.
        log_likelihood: ``log P(x)``, shape (B,); ``-inf`` for impossible sequences.
    """

    alpha: torch.Tensor
    scale: torch.Tensor
    log_likelihood: torch.Tensor


def forward(hmm: HMM, x: Any, missing: Any = None) -> ForwardResult:
    """The scaled forward recursion ``alpha_t = (A alpha_{t-1}) * e_t / c_t`` (``alpha_{-1}``
    replaced by ``pi``) on a batch of sequences (always batched outputs)."""
    prep = _inputs(hmm, x, missing)
    alpha, c = _kernels._forward_kernel(hmm, prep)
    return ForwardResult(_kernels._batch_major(alpha), c[..., 0].T, _kernels._loglik_from_scales(c))


def backward(hmm: HMM, x: Any, scale: torch.Tensor, missing: Any = None) -> torch.Tensor:
    """Scaled backward messages ``beta_{T-1} = 1``, ``beta_t = A^T (e_{t+1} * beta_{t+1}) / c_{t+1}``,
    shape (B, T, K), given the forward's ``scale`` ``c``.

    ``alpha * beta`` is the posterior; ``beta_t`` is ``P(x_{t+1:} | H_t)`` divided by
    ``P(x_{t+1:} | x_{0:t})``.
    """
    prep = _inputs(hmm, x, missing)
    T, B, K = prep.shape
    scale = torch.as_tensor(scale, dtype=hmm.dtype, device=hmm.device)
    if scale.shape != (B, T):
        raise ValueError(f"scale must have shape (batch, seq_len) = {(B, T)} (ForwardResult.scale); got {tuple(scale.shape)}.")
    out = torch.empty(T, B, K, dtype=hmm.dtype, device=hmm.device)
    _kernels._backward_sweep(hmm, prep, scale.T.unsqueeze(2), lambda t, beta: out[t].copy_(beta))
    return _kernels._batch_major(out)


# --------------------------------------------------------------------------- public quantities
def log_likelihood(hmm: HMM, x: Any, missing: Any = None) -> torch.Tensor:
    """``log P(x) = sum_t log c_t`` for each sequence, shape (B,) (a scalar tensor for one 1-D sequence).

    Sequences impossible under the HMM get ``-inf``. Memory is O(T B): no messages are stored.
    """
    prep = _inputs(hmm, x, missing)
    _, c = _kernels._forward_kernel(hmm, prep, store=False)
    return _kernels._unbatch(_kernels._loglik_from_scales(c), prep.was_1d)


def posterior_marginals(hmm: HMM, x: Any, missing: Any = None) -> torch.Tensor:
    """Posterior marginals ``gamma_t = P(H_t = k | x) = alpha_t * beta_t`` for every position, shape (B, T, K).

    ``missing`` (bool, broadcastable to the tokens) marks masked positions whose
    tokens are marginalised out.
    """
    prep = _inputs(hmm, x, missing)
    gamma, c = _kernels._forward_kernel(hmm, prep)
    _kernels._raise_if_impossible(c.transpose(0, 1))
    g = gamma.unbind(0)
    _kernels._backward_sweep(hmm, prep, c, lambda t, beta: g[t].mul_(beta))
    out = _kernels._batch_major(gamma)
    # alpha * beta sums to 1 in exact arithmetic; over very long float32 sequences the
    # backward scales drift (~1e-4 at T = 1e5), so renormalise each row once at the end.
    out.div_(out.sum(-1, keepdim=True))
    return _kernels._unbatch(out, prep.was_1d)


def posterior_h0(hmm: HMM, x: Any) -> torch.Tensor:
    r"""``P(H_0 | X_{1:T} = x)`` for a masked position 0 placed *before* the sequence.

    ``x`` holds the observed tokens ``x_1 .. x_T`` (tensor index ``i`` is ``x_{i+1}``);
    ``H_0 ~ pi`` and ``H_1 ~ A[:, H_0]``. By Bayes' rule, for any ``A``,
    ``P(H_0 = h | x_{1:T}) \propto pi_h P(x_{1:T} | H_0 = h)``, and the likelihood is one
    normalised backward sweep ``b <- A^T (e_t * b) / sum`` from ``t = T`` down to 1.
    Shape (B, K).
    """
    prep = _inputs(hmm, x)
    post = _kernels._h0_sweep(hmm, prep).mul_(hmm.pi)
    z = post.sum(1, keepdim=True)
    if (z <= 0).any():
        zero_b = int((z[:, 0] <= 0).nonzero()[0])
        ll = log_likelihood(hmm, prep.xT[:, zero_b])
        raise ValueError(
            f"sequence {zero_b} has probability 0 under the HMM (log-likelihood {float(ll)}): some token "
            "cannot be emitted by any reachable state, so P(H_0 | x) is undefined. Check the tokens."
        )
    return _kernels._unbatch(post.div_(z), prep.was_1d)


def masked_conditional(hmm: HMM, x: Any) -> torch.Tensor:
    """``G(x) = P(X_0 | X_{1:T} = x) = W P(H_0 | x)``: what a perfect masked LM outputs
    at a ``[MASK]`` placed before the sequence. Shape (B, V)."""
    return posterior_h0(hmm, x) @ hmm.W.T


def masked_token_conditionals(hmm: HMM, x: Any) -> torch.Tensor:
    """``P(X_t | x_{-t})`` for every position ``t``: what a perfect masked LM outputs when
    position ``t`` alone is masked. Shape (B, T, V).

    ``P(H_t | x_{-t}) \\propto P(H_t | x_{<t}) * P(x_{>t} | H_t)`` (predictive times
    backward message), then multiply by ``W``.
    """
    prep = _inputs(hmm, x)
    alpha, c = _kernels._forward_kernel(hmm, prep)
    _kernels._raise_if_impossible(c.transpose(0, 1))
    post = _kernels._predictive(hmm, alpha)
    _kernels._backward_sweep(hmm, prep, c, lambda t, beta: post[t].mul_(beta))
    post.div_(post.sum(2, keepdim=True))
    return _kernels._unbatch(_kernels._batch_major(post @ hmm.W.T), prep.was_1d)


def next_token_conditionals(hmm: HMM, x: Any) -> torch.Tensor:
    """``P(X_t | x_{0:t-1}) = W A alpha_{t-1}`` for every position ``t`` (``t = 0``: ``W pi``): what a
    perfect causal LM outputs *before* reading token ``t``. Shape (B, T, V); entry ``t`` is the
    prediction for token ``t``, so the causal LM's loss at ``t`` is ``-log out[b, t, x_t]``."""
    prep = _inputs(hmm, x)
    alpha, c = _kernels._forward_kernel(hmm, prep)
    _kernels._raise_if_impossible(c.transpose(0, 1))
    return _kernels._unbatch(_kernels._batch_major(_kernels._predictive(hmm, alpha) @ hmm.W.T), prep.was_1d)


def entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shannon entropy in nats, ``-sum p log p`` along ``dim`` (with ``0 log 0 = 0``).

    The expected entropy of the exact conditional is the Bayes-optimal
    cross-entropy loss of a model predicting that conditional.
    """
    return -torch.special.xlogy(p, p).sum(dim)


# --------------------------------------------------------------------------- Viterbi
def viterbi(hmm: HMM, x: Any, tile_bytes: int = 4 << 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Most likely hidden path ``argmax_h P(h, x)`` and its log-probability.

    Max-product in log space, ``delta_t[h'] = max_h (log A[h', h] + delta_{t-1}[h]) + log e_t[h']``
    with ``delta_0 = log pi + log e_0``; the path is recovered backwards by
    ``h_{t-1} = argmax_h (delta_{t-1}[h] + log A[h_t, h])``. The batch is processed in tiles of
    ``tile_bytes // (K * K * itemsize)`` sequences (the size of the per-step score tensor);
    the result does not depend on the tiling.

    Returns:
        ``(paths int64 (B, T), log_prob (B,))``.
    """
    prep = _inputs(hmm, x, emissions=False)
    paths, best = _kernels._viterbi_tiles(hmm, prep, tile_bytes)
    return _kernels._unbatch(paths, prep.was_1d), _kernels._unbatch(best, prep.was_1d)
