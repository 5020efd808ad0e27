r"""Exact, batched inference in an HMM.

The core is the *scaled* forward-backward recursion, one GEMM per time step over
the whole batch (``../shared/reference/hmm_software.md`` measured it 10-300x
faster than log-space ``logsumexp``). With ``e_t = W[x_t, :]``:

.. math::

    \bar\alpha_t = A\hat\alpha_{t-1}\ (\bar\alpha_0=\pi),\quad
    c_t = \mathbf 1^\top(\bar\alpha_t\odot e_t),\quad
    \hat\alpha_t = \bar\alpha_t\odot e_t / c_t,

    \hat\beta_{T-1}=\mathbf 1,\quad
    \hat\beta_t = A^\top(e_{t+1}\odot\hat\beta_{t+1})/c_{t+1}.

Then ``alpha_hat_t = P(H_t | x_{0:t})``, ``alpha_bar_t = P(H_t | x_{0:t-1})``,
``c_t = P(x_t | x_{0:t-1})``, ``log P(x) = sum_t log c_t`` and the posterior
marginals are ``gamma_t = alpha_hat_t * beta_hat_t``.

Buffers are time-major ``(T, B, K)`` (results are returned as batch-major views of
them); for few states (K <= 12) the storage behind them is state-major ``(T, K, B)``, so
that each step's GEMM is ``A @ (K, B)`` and its sums run along the batch.
A position can be marked *missing* (masked): its emission factor is 1 for
every state, which is exactly marginalising the unseen token.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import sys

import numpy as np
import torch

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
        arr = np.asarray(x)
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


_PRECOMPUTE_BYTES = 1 << 26  # gather all emission factors up front below this size (64 MiB)


_STATE_MAJOR_MAX_K = 12  # up to this many states the recursions run on state-major (K, B) buffers


@dataclass(frozen=True)
class _Prepared:
    """Tokens in time-major order and the emission table extended by a 'missing' row of ones.

    Small problems gather every emission factor once into ``e_all`` (T, B, K); large
    ones gather one step at a time to keep memory at O(B K).

    Every (B, K) or (T, B, K) work tensor is allocated through :meth:`mat` / :meth:`steps`.
    For few states (``state_major``) they are transposed views of state-major ``(K, B)``
    storage: the kernels are written once against the (B, K) shapes, and torch then runs
    each per-step sum, division and product along the long batch axis (a reduction over a
    contiguous axis of 10 elements costs several times more) and each GEMM as ``A @ (K, B)``.
    """

    xT: torch.Tensor  # (T, B) int64; id V means "missing"
    W_ext: torch.Tensor  # (V + 1, K): W with a row of ones appended
    was_1d: bool
    e_all: torch.Tensor | None
    state_major: bool = False

    def __post_init__(self) -> None:
        # Per-step views, made once: indexing a tensor inside the time loop costs a few
        # microseconds per step, which matters when the per-step work is small.
        object.__setattr__(self, "_x_steps", self.xT.unbind(0))
        object.__setattr__(self, "_e_steps", None if self.e_all is None else self.e_all.unbind(0))
        object.__setattr__(self, "_W_ext_T", self.W_ext.T.contiguous() if self.state_major else None)

    @property
    def shape(self) -> tuple[int, int, int]:
        T, B = self.xT.shape
        return T, B, self.W_ext.shape[1]

    def mat(self, fill: float | None = None) -> torch.Tensor:
        """A (B, K) work tensor (state-major storage when ``state_major``)."""
        _, B, K = self.shape
        W = self.W_ext
        t = torch.empty((K, B) if self.state_major else (B, K), dtype=W.dtype, device=W.device)
        if fill is not None:
            t.fill_(fill)
        return t.T if self.state_major else t

    def steps(self, n: int) -> torch.Tensor:
        """An (n, B, K) per-step buffer (state-major storage when ``state_major``)."""
        _, B, K = self.shape
        W = self.W_ext
        if self.state_major:
            return _empty_large((n, K, B), W.dtype, W.device).transpose(1, 2)
        return _empty_large((n, B, K), W.dtype, W.device)

    def emissions(self, t: int, buf: torch.Tensor) -> torch.Tensor:
        """``e_t[b, k] = W[x[b, t], k]`` (1 for a missing token), shape (B, K); may use ``buf`` (from :meth:`mat`)."""
        if self._e_steps is not None:
            return self._e_steps[t]
        if self.state_major:
            return torch.index_select(self._W_ext_T, 1, self._x_steps[t], out=buf.T).T
        return torch.index_select(self.W_ext, 0, self._x_steps[t], out=buf)


_HUGEPAGE_MIN_BYTES = 16 << 20
_MADV_HUGEPAGE = 14
_madvise: Any = None


def _empty_large(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``torch.empty``, asking Linux for transparent huge pages when the buffer is large.

    A fresh multi-hundred-megabyte buffer is first touched inside the time loop, and
    faulting it in 4 KiB pages cost ~70 ms per 200 MB here (a sixth of a K = 200
    posterior pass). ``madvise(MADV_HUGEPAGE)`` on the not yet touched range lets the
    kernel back it with 2 MiB pages, which roughly halves that. Purely advisory: a no-op
    off Linux, on non-CPU devices, or where it is not allowed.
    """
    global _madvise
    t = torch.empty(shape, dtype=dtype, device=device)
    nbytes = t.numel() * t.element_size()
    if t.device.type != "cpu" or nbytes < _HUGEPAGE_MIN_BYTES or not sys.platform.startswith("linux"):
        return t
    if _madvise is None:
        try:
            import ctypes

            fn = ctypes.CDLL(None, use_errno=True).madvise
            fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            fn.restype = ctypes.c_int
            _madvise = fn
        except (OSError, AttributeError):
            _madvise = False
    if _madvise:
        huge = 2 << 20
        start = -(-t.data_ptr() // huge) * huge
        end = (t.data_ptr() + nbytes) // huge * huge
        if end > start:
            _madvise(start, end - start, _MADV_HUGEPAGE)
    return t


def _prepare(hmm: HMM, x: Any, missing: Any = None) -> _Prepared:
    if not isinstance(hmm, HMM):
        raise ValueError(f"expected an HMM, got {type(hmm).__name__}.")
    tokens, was_1d = check_tokens(x, hmm.num_symbols, hmm.device)
    m = _check_missing(missing, tuple(tokens.shape), hmm.device)
    if m is not None:
        tokens = tokens.masked_fill(m, hmm.num_symbols)
    W_ext = torch.cat([hmm.W, torch.ones_like(hmm.W[:1])], 0)
    xT = tokens.T.contiguous()
    T, B = xT.shape
    K = hmm.num_states
    state_major = K <= _STATE_MAJOR_MAX_K
    e_all = None
    if xT.numel() * K * hmm.W.element_size() <= _PRECOMPUTE_BYTES:
        if state_major:  # e_all[t] is a (B, K) view of (K, B) memory
            e_all = _empty_large((K, T, B), hmm.dtype, hmm.device)
            torch.index_select(W_ext.T.contiguous(), 1, xT.reshape(-1), out=e_all.view(K, T * B))
            e_all = e_all.permute(1, 2, 0)
        else:
            e_all = _empty_large((T, B, K), hmm.dtype, hmm.device)
            torch.index_select(W_ext, 0, xT.reshape(-1), out=e_all.view(T * B, K))
    return _Prepared(xT, W_ext, was_1d, e_all, state_major)


def _raise_if_impossible(c: torch.Tensor) -> None:
    """``c`` holds per-sequence normalisers, shape (B, ...); zero means P(x) = 0."""
    zero = (c <= 0).reshape(c.shape[0], -1).any(1)
    if zero.any():
        b = int(zero.nonzero()[0])
        t = int((c[b].reshape(-1) <= 0).nonzero()[0])
        raise ValueError(
            f"sequence {b} has probability 0 under the HMM (token at position {t} cannot be emitted by any "
            "reachable state), so its posterior is undefined. Check the tokens, or use float64 if the HMM has "
            "tiny emission probabilities."
        )


# --------------------------------------------------------------------------- kernels
def _forward_kernel(hmm: HMM, prep: _Prepared, store: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Scaled forward pass, time loop only.

    Returns ``(alpha, c)``: time-major ``alpha[t, b] = P(H_t | x_{0:t})`` of shape (T, B, K)
    (``None`` when ``store`` is false) and ``c[t, b] = P(x_t | x_{0:t-1})`` of shape (T, B, 1).
    """
    T, B, K = prep.shape
    dt, dev = hmm.dtype, hmm.device
    A_T = hmm.A.T.contiguous()  # row-vector convention: pred_row = alpha_row @ A^T
    c = torch.empty(T, B, 1, dtype=dt, device=dev)
    cs = c.unbind(0)
    alpha = prep.steps(T if store else 2)
    a_steps = alpha.unbind(0) if store else alpha.unbind(0) * ((T + 1) // 2)  # step t writes a_steps[t]
    pred = prep.mat()
    ebuf = prep.mat()
    for t in range(T):
        a = a_steps[t]
        e = prep.emissions(t, ebuf)
        if t == 0:
            torch.mul(e, hmm.pi, out=a)
        else:
            torch.mm(a_steps[t - 1], A_T, out=pred)
            torch.mul(pred, e, out=a)
        torch.sum(a, 1, keepdim=True, out=cs[t])
        a.div_(cs[t])
    return (alpha if store else None), c


def _backward_sweep(hmm: HMM, prep: _Prepared, c: torch.Tensor, visit: Callable[[int, torch.Tensor], None]) -> None:
    """Scaled backward pass ``beta_t = A^T (e_{t+1} * beta_{t+1}) / c_{t+1}`` from ``t = T-1`` down to 0,
    calling ``visit(t, beta_t)`` (beta_t of shape (B, K)) at every step; nothing is stored."""
    T, B, K = prep.shape
    cs = c.unbind(0)
    beta = prep.mat(fill=1.0)
    nxt = prep.mat()
    eb = prep.mat()
    ebuf = prep.mat()
    visit(T - 1, beta)
    for t in range(T - 2, -1, -1):
        torch.mul(prep.emissions(t + 1, ebuf), beta, out=eb)
        torch.mm(eb, hmm.A, out=nxt)  # row convention: (e * beta)_row @ A
        nxt.div_(cs[t + 1])
        beta, nxt = nxt, beta
        visit(t, beta)


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
    """The scaled forward recursion on a batch of sequences (always batched outputs)."""
    prep = _prepare(hmm, x, missing)
    alpha, c = _forward_kernel(hmm, prep)
    return ForwardResult(_batch_major(alpha), c[..., 0].T, _loglik_from_scales(c))


def backward(hmm: HMM, x: Any, scale: torch.Tensor, missing: Any = None) -> torch.Tensor:
    """Scaled backward messages ``beta_hat`` of shape (B, T, K), given the forward's ``scale``.

    ``alpha * beta`` is the posterior; ``beta_t`` is ``P(x_{t+1:} | H_t)`` divided by
    ``P(x_{t+1:} | x_{0:t})``.
    """
    prep = _prepare(hmm, x, missing)
    T, B, K = prep.shape
    scale = torch.as_tensor(scale, dtype=hmm.dtype, device=hmm.device)
    if scale.shape != (B, T):
        raise ValueError(f"scale must have shape (batch, seq_len) = {(B, T)} (ForwardResult.scale); got {tuple(scale.shape)}.")
    out = torch.empty(T, B, K, dtype=hmm.dtype, device=hmm.device)
    _backward_sweep(hmm, prep, scale.T.unsqueeze(2), lambda t, beta: out[t].copy_(beta))
    return _batch_major(out)


def _loglik_from_scales(c: torch.Tensor) -> torch.Tensor:
    """``sum_t log c_t`` from time-major scales (T, B, 1); ``-inf`` where some ``c_t = 0``."""
    c = c[..., 0]
    ll = torch.log(c.clamp_min(0)).sum(0)
    return ll.masked_fill((c <= 0).any(0), float("-inf"))


def _batch_major(t: torch.Tensor) -> torch.Tensor:
    """Time-major (T, B, ...) storage seen as (B, T, ...) (a transposed view, no copy)."""
    return t.transpose(0, 1)


def _unbatch(t: torch.Tensor, was_1d: bool) -> torch.Tensor:
    return t[0] if was_1d else t


# --------------------------------------------------------------------------- public quantities
def log_likelihood(hmm: HMM, x: Any, missing: Any = None) -> torch.Tensor:
    """``log P(x)`` for each sequence, shape (B,) (a scalar tensor for one 1-D sequence).

    Sequences impossible under the HMM get ``-inf``. Memory is O(T B): no messages are stored.
    """
    prep = _prepare(hmm, x, missing)
    _, c = _forward_kernel(hmm, prep, store=False)
    return _unbatch(_loglik_from_scales(c), prep.was_1d)


def posterior_marginals(hmm: HMM, x: Any, missing: Any = None) -> torch.Tensor:
    """Posterior marginals ``P(H_t = k | x)`` for every position, shape (B, T, K).

    ``missing`` (bool, broadcastable to the tokens) marks masked positions whose
    tokens are marginalised out.
    """
    prep = _prepare(hmm, x, missing)
    gamma, c = _forward_kernel(hmm, prep)
    _raise_if_impossible(c.transpose(0, 1))
    g = gamma.unbind(0)
    _backward_sweep(hmm, prep, c, lambda t, beta: g[t].mul_(beta))
    out = _batch_major(gamma)
    # alpha * beta sums to 1 in exact arithmetic; over very long float32 sequences the
    # backward scales drift (~1e-4 at T = 1e5), so renormalise each row once at the end.
    out.div_(out.sum(-1, keepdim=True))
    return _unbatch(out, prep.was_1d)


def posterior_h0(hmm: HMM, x: Any) -> torch.Tensor:
    r"""``P(H_0 | X_{1:T} = x)`` for a masked position 0 placed *before* the sequence.

    ``x`` holds the observed tokens ``x_1 .. x_T`` (tensor index ``i`` is ``x_{i+1}``);
    ``H_0 ~ pi`` and ``H_1 ~ A[:, H_0]``. By Bayes' rule, for any ``A``,
    ``P(H_0 = h | x_{1:T}) \propto pi_h P(x_{1:T} | H_0 = h)``, and the likelihood is one
    normalised backward sweep ``b <- A^T (e_t * b) / sum`` from ``t = T`` down to 1.
    Shape (B, K).
    """
    prep = _prepare(hmm, x)
    T, B, K = prep.shape
    b = prep.mat(fill=1.0)
    eb = prep.mat()
    ebuf = prep.mat()
    for t in range(T - 1, -1, -1):
        torch.mul(prep.emissions(t, ebuf), b, out=eb)
        torch.mm(eb, hmm.A, out=b)
        b.div_(b.sum(1, keepdim=True).clamp_min_(torch.finfo(b.dtype).tiny))
    post = b.mul_(hmm.pi)
    z = post.sum(1, keepdim=True)
    if (z <= 0).any():
        zero_b = int((z[:, 0] <= 0).nonzero()[0])
        ll = log_likelihood(hmm, prep.xT[:, zero_b])
        raise ValueError(
            f"sequence {zero_b} has probability 0 under the HMM (log-likelihood {float(ll)}): some token "
            "cannot be emitted by any reachable state, so P(H_0 | x) is undefined. Check the tokens."
        )
    return _unbatch(post.div_(z), prep.was_1d)


def masked_conditional(hmm: HMM, x: Any) -> torch.Tensor:
    """``G(x) = P(X_0 | X_{1:T} = x) = W P(H_0 | x)``: what a perfect masked LM outputs
    at a ``[MASK]`` placed before the sequence. Shape (B, V)."""
    return posterior_h0(hmm, x) @ hmm.W.T


def _predictive(hmm: HMM, alpha: torch.Tensor) -> torch.Tensor:
    """``P(H_t | x_{0:t-1})`` for every t from time-major ``alpha`` (T, B, K): ``pi``, then ``A alpha_{t-1}``."""
    pred = torch.empty_like(alpha)
    pred[0] = hmm.pi
    torch.matmul(alpha[:-1], hmm.A.T, out=pred[1:])
    return pred


def masked_token_conditionals(hmm: HMM, x: Any) -> torch.Tensor:
    """``P(X_t | x_{-t})`` for every position ``t``: what a perfect masked LM outputs when
    position ``t`` alone is masked. Shape (B, T, V).

    ``P(H_t | x_{-t}) \\propto P(H_t | x_{<t}) * P(x_{>t} | H_t)`` (predictive times
    backward message), then multiply by ``W``.
    """
    prep = _prepare(hmm, x)
    alpha, c = _forward_kernel(hmm, prep)
    _raise_if_impossible(c.transpose(0, 1))
    post = _predictive(hmm, alpha)
    _backward_sweep(hmm, prep, c, lambda t, beta: post[t].mul_(beta))
    post.div_(post.sum(2, keepdim=True))
    return _unbatch(_batch_major(post @ hmm.W.T), prep.was_1d)


def next_token_conditionals(hmm: HMM, x: Any) -> torch.Tensor:
    """``P(X_t | x_{0:t-1})`` for every position ``t`` (``t = 0``: ``W pi``): what a perfect
    causal LM outputs *before* reading token ``t``. Shape (B, T, V); entry ``t`` is the
    prediction for token ``t``, so the causal LM's loss at ``t`` is ``-log out[b, t, x_t]``."""
    prep = _prepare(hmm, x)
    alpha, c = _forward_kernel(hmm, prep)
    _raise_if_impossible(c.transpose(0, 1))
    return _unbatch(_batch_major(_predictive(hmm, alpha) @ hmm.W.T), prep.was_1d)


def entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shannon entropy in nats, ``-sum p log p`` along ``dim`` (with ``0 log 0 = 0``).

    The expected entropy of the exact conditional is the Bayes-optimal
    cross-entropy loss of a model predicting that conditional.
    """
    return -torch.special.xlogy(p, p).sum(dim)


# --------------------------------------------------------------------------- Viterbi
_VITERBI_STATE_MAJOR_MAX_K = 64  # up to this many states the (K, K, tile) layout is faster


def viterbi(hmm: HMM, x: Any, tile_bytes: int = 4 << 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Most likely hidden path ``argmax_h P(h, x)`` and its log-probability.

    Max-product in log space, ``delta_t[h'] = max_h (log A[h', h] + delta_{t-1}[h]) + log e_t[h']``,
    over batch tiles of ``tile_bytes // (K * K * itemsize)`` sequences (the size of the per-step
    score tensor). Only the maxima are computed going forward (``amax`` is several times faster
    than a max with indices); the path is recovered backwards by
    ``h_{t-1} = argmax_h (delta_{t-1}[h] + log A[h_t, h])``, which recomputes the
    same sums and so always picks a maximiser. The result does not depend on the tiling.

    For small K the scores are laid out state-major, ``(K, K, tile)``, so that every
    elementwise operation and the reduction run along the long batch axis; for large K
    batch-major ``(tile, K, K)`` with a contiguous reduction axis is faster.

    Returns:
        ``(paths int64 (B, T), log_prob (B,))``.
    """
    prep = _prepare(hmm, x)
    T, B, K = prep.shape
    dt, dev = hmm.dtype, hmm.device
    log_W = prep.W_ext.log()
    log_A = hmm.A.log()  # log_A[h', h]
    log_pi = hmm.pi.log()
    tile = max(1, min(B, tile_bytes // (K * K * hmm.W.element_size())))
    paths = torch.empty(B, T, dtype=torch.int64, device=dev)
    best = torch.empty(B, dtype=dt, device=dev)
    state_major = K <= _VITERBI_STATE_MAJOR_MAX_K
    # Work buffers are allocated once and reused by every tile (the last tile may use fresh ones).
    if state_major:
        log_WT = log_W.T.contiguous()  # (K, V + 1)
        log_A3 = log_A.unsqueeze(2)  # (K, K, 1)
        log_pi = log_pi.unsqueeze(1)
        scores_buf = torch.empty(K, K, tile, dtype=dt, device=dev)
        m_buf = torch.empty(K, tile, dtype=dt, device=dev)
    else:
        scores_buf = torch.empty(tile, K, K, dtype=dt, device=dev)
        m_buf = torch.empty(tile, K, dtype=dt, device=dev)
    back_buf = torch.empty(tile, K, dtype=dt, device=dev)
    for b0 in range(0, B, tile):
        b1 = min(B, b0 + tile)
        n = b1 - b0
        back = back_buf[:n]
        xs = prep.xT[:, b0:b1].reshape(-1)
        if state_major:
            scores = scores_buf if n == tile else torch.empty(K, K, n, dtype=dt, device=dev)
            m = m_buf if n == tile else torch.empty(K, n, dtype=dt, device=dev)
            # d[t] (K, n) starts as the log emission factors of step t, all gathered in one go
            d = torch.index_select(log_WT, 1, xs).view(K, T, n).unbind(1)
            d[0].add_(log_pi)
            for t in range(1, T):
                torch.add(log_A3, d[t - 1], out=scores)  # scores[h', h, b] = log A[h', h] + d[h, b]
                torch.amax(scores, 1, out=m)
                d[t].add_(m)
            best[b0:b1], state = d[T - 1].max(0)
            d = [dd.T for dd in d]  # (n, K) views for the backtracking
        else:
            scores, m = scores_buf[:n], m_buf[:n]
            d = torch.index_select(log_W, 0, xs).view(T, n, K).unbind(0)
            d[0].add_(log_pi)
            for t in range(1, T):
                torch.add(d[t - 1].unsqueeze(1), log_A, out=scores)  # scores[b, h', h] = d[b, h] + log A[h', h]
                torch.amax(scores, 2, out=m)
                d[t].add_(m)
            best[b0:b1], state = d[T - 1].max(1)
        states = [state]
        for t in range(T - 1, 0, -1):
            torch.index_select(log_A, 0, state, out=back)  # back[b, h] = log A[state_b, h]
            state = back.add_(d[t - 1]).argmax(1)
            states.append(state)
        states.reverse()
        torch.stack(states, 1, out=paths[b0:b1])
    return _unbatch(paths, prep.was_1d), _unbatch(best, prep.was_1d)
