r"""Private kernels behind :mod:`hmmlib.hmm.inference`: buffer layouts, the time loops, tiling.

Nothing here validates user input; :mod:`.inference` does that and then calls these with
int64 tokens of shape (B, T) on the HMM's device. The recursions are the ones written out
in :mod:`.inference` (scaled forward-backward, one GEMM per step over the whole batch;
max-product Viterbi); this module only decides how memory is laid out:

* buffers are time-major ``(T, B, K)``; for few states (``K <= STATE_MAJOR_MAX_K``) the
  storage behind them is state-major ``(T, K, B)``, so that each step's GEMM is
  ``A @ (K, B)`` and its sums and divisions run along the long batch axis;
* all emission factors are gathered up front when they fit in ``PRECOMPUTE_BYTES``,
  otherwise one step at a time (memory O(B K));
* large fresh CPU buffers get ``madvise(MADV_HUGEPAGE)`` before first touch;
* Viterbi runs on ``VITERBI_THREADS`` CPU threads over batch tiles, laid out ``(K, K, tile)`` for ``K <= VITERBI_STATE_MAJOR_MAX_K``
  and ``(tile, K, K)`` above.

The three thresholds are module constants so that tests can force every branch
(``monkeypatch.setattr(_kernels, "STATE_MAJOR_MAX_K", 0)``); the results do not depend on them.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .model import HMM

PRECOMPUTE_BYTES = 1 << 26  # gather all emission factors up front below this size (64 MiB)
STATE_MAJOR_MAX_K = 12  # up to this many states the recursions run on state-major (K, B) buffers
VITERBI_STATE_MAJOR_MAX_K = 64  # up to this many states the Viterbi scores are laid out (K, K, tile)
VITERBI_RESCALE_EVERY = 64  # Viterbi subtracts each sequence's best score every this many steps
VITERBI_THREADS = 1  # torch threads inside the CPU Viterbi loop (None: leave torch's setting)

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


# --------------------------------------------------------------------------- inputs laid out for the loops
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
            return _gather_columns(self._W_ext_T, self._x_steps[t], out=buf.T).T
        return torch.index_select(self.W_ext, 0, self._x_steps[t], out=buf)


def _gather_columns(M: torch.Tensor, idx: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``M[:, idx]`` for a contiguous (K, V) ``M`` and int64 ``idx`` (n,): a (K, n) copy of the same values.

    ``torch.gather`` with the index broadcast over the rows, not ``index_select`` along dimension 1: for K = 10
    and n = 256,000 the latter took 11 ms against 0.9 ms (one thread), and it was a third of a whole Viterbi call."""
    return torch.gather(M, 1, idx.expand(M.shape[0], -1), out=out)


def _prepare(hmm: HMM, tokens: torch.Tensor, was_1d: bool, missing: torch.Tensor | None = None,
             emissions: bool = True) -> _Prepared:
    """Lay out validated ``tokens`` (int64 (B, T) on the HMM's device) and an optional boolean
    ``missing`` mask of the same shape for the kernels below. ``emissions=False`` skips gathering the
    emission factors up front (the Viterbi gathers their logarithms itself)."""
    if missing is not None:
        tokens = tokens.masked_fill(missing, hmm.num_symbols)
    W_ext = torch.cat([hmm.W, torch.ones_like(hmm.W[:1])], 0)
    xT = tokens.T.contiguous()
    T, B = xT.shape
    K = hmm.num_states
    state_major = K <= STATE_MAJOR_MAX_K
    e_all = None
    if emissions and xT.numel() * K * hmm.W.element_size() <= PRECOMPUTE_BYTES:
        if state_major:  # e_all[t] is a (B, K) view of (K, B) memory
            e_all = _empty_large((K, T, B), hmm.dtype, hmm.device)
            _gather_columns(W_ext.T.contiguous(), xT.reshape(-1), out=e_all.view(K, T * B))
            e_all = e_all.permute(1, 2, 0)
        else:
            e_all = _empty_large((T, B, K), hmm.dtype, hmm.device)
            torch.index_select(W_ext, 0, xT.reshape(-1), out=e_all.view(T * B, K))
    return _Prepared(xT, W_ext, was_1d, e_all, state_major)


# --------------------------------------------------------------------------- small helpers
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


def _predictive(hmm: HMM, alpha: torch.Tensor) -> torch.Tensor:
    """``P(H_t | x_{0:t-1})`` for every t from time-major ``alpha`` (T, B, K): ``pi``, then ``A alpha_{t-1}``."""
    pred = torch.empty_like(alpha)
    pred[0] = hmm.pi
    torch.matmul(alpha[:-1], hmm.A.T, out=pred[1:])
    return pred


# --------------------------------------------------------------------------- time loops
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


def _h0_sweep(hmm: HMM, prep: _Prepared) -> torch.Tensor:
    """``P(x_{1:T} | H_0)`` up to a positive factor per sequence, shape (B, K): the normalised
    backward sweep ``b <- A^T (e_t * b) / sum`` from the last token down to the first."""
    T, B, K = prep.shape
    b = prep.mat(fill=1.0)
    eb = prep.mat()
    ebuf = prep.mat()
    for t in range(T - 1, -1, -1):
        torch.mul(prep.emissions(t, ebuf), b, out=eb)
        torch.mm(eb, hmm.A, out=b)
        b.div_(b.sum(1, keepdim=True).clamp_min_(torch.finfo(b.dtype).tiny))
    return b


@contextmanager
def _threads(n: int | None, device: torch.device):
    """Run the body with ``n`` torch threads on the CPU (``None`` or another device: unchanged), then restore."""
    before = torch.get_num_threads()
    if n is None or device.type != "cpu" or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _viterbi_tiles(hmm: HMM, prep: _Prepared, tile_bytes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Max-product over batch tiles on ``VITERBI_THREADS`` CPU threads (see :func:`_viterbi_loop`)."""
    with _threads(VITERBI_THREADS, hmm.device):
        return _viterbi_loop(hmm, prep, tile_bytes)


def _viterbi_loop(hmm: HMM, prep: _Prepared, tile_bytes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Max-product over batch tiles of ``tile_bytes // (K * K * itemsize)`` sequences; returns
    ``(paths int64 (B, T), log_prob (B,))``. Only the maxima are computed going forward (``amax``
    is several times faster than a max with indices); the backtracking recomputes the same sums,
    so it always picks a maximiser. Work buffers are allocated once and reused by every tile.

    Every ``VITERBI_RESCALE_EVERY`` steps each sequence's best score is subtracted from its
    ``delta_t`` (and added to a float64 offset): argmaxes are unchanged, and the scores stay small
    enough for float32 (unrescaled, a T = 100,000 float32 run had scores of -3e5, whose rounding
    put the log-probability 64 nats off and the path 5 nats below the optimum).

    Each step's adds and maxima are small (a tile is a few MiB), and splitting them over threads cost more than it
    saved: on the shared 2-core machine one thread was 3-10x faster than two at K = 10-200 (the results are the
    same: every add and maximum is computed exactly as before, only by one thread)."""
    T, B, K = prep.shape
    dt, dev = hmm.dtype, hmm.device
    log_W = prep.W_ext.log()
    log_A = hmm.A.log()  # log_A[h', h]
    log_pi = hmm.pi.log()
    tile = max(1, min(B, tile_bytes // (K * K * hmm.W.element_size())))
    paths = torch.empty(B, T, dtype=torch.int64, device=dev)
    best = torch.empty(B, dtype=dt, device=dev)
    state_major = K <= VITERBI_STATE_MAJOR_MAX_K
    lowest = torch.finfo(dt).min
    if state_major:
        log_WT = log_W.T.contiguous()  # (K, V + 1)
        log_A3 = log_A.unsqueeze(2)  # (K, K, 1)
        log_pi = log_pi.unsqueeze(1)
        scores_buf = torch.empty(K, K, tile, dtype=dt, device=dev)
        m_buf = torch.empty(K, tile, dtype=dt, device=dev)
        sums_buf = torch.empty(K, tile, dtype=dt, device=dev)  # the backtracking's sums, laid out as d[t]
        top_buf = torch.empty(tile, dtype=dt, device=dev)
    else:
        scores_buf = torch.empty(tile, K, K, dtype=dt, device=dev)
        m_buf = torch.empty(tile, K, dtype=dt, device=dev)
    back_buf = torch.empty(tile, K, dtype=dt, device=dev)
    for b0 in range(0, B, tile):
        b1 = min(B, b0 + tile)
        n = b1 - b0
        back = back_buf[:n]
        xs = prep.xT[:, b0:b1].reshape(-1)
        offset = torch.zeros(n, dtype=torch.float64, device=dev)  # what the rescaling took off each sequence
        if state_major:
            scores = scores_buf if n == tile else torch.empty(K, K, n, dtype=dt, device=dev)
            m = m_buf if n == tile else torch.empty(K, n, dtype=dt, device=dev)
            # d[t] (K, n) starts as the log emission factors of step t, all gathered in one go
            d = _gather_columns(log_WT, xs, out=_empty_large((K, T * n), dt, dev)).view(K, T, n).unbind(1)
            d[0].add_(log_pi)
            for t in range(1, T):
                torch.add(log_A3, d[t - 1], out=scores)  # scores[h', h, b] = log A[h', h] + d[h, b]
                torch.amax(scores, 1, out=m)
                d[t].add_(m)
                if t % VITERBI_RESCALE_EVERY == 0:
                    top = d[t].amax(0).clamp_min_(lowest)  # finite, even for an impossible sequence
                    d[t].sub_(top)
                    offset += top
            last, state = d[T - 1].max(0)
        else:
            scores, m = scores_buf[:n], m_buf[:n]
            d = torch.index_select(log_W, 0, xs).view(T, n, K).unbind(0)
            d[0].add_(log_pi)
            for t in range(1, T):
                torch.add(d[t - 1].unsqueeze(1), log_A, out=scores)  # scores[b, h', h] = d[b, h] + log A[h', h]
                torch.amax(scores, 2, out=m)
                d[t].add_(m)
                if t % VITERBI_RESCALE_EVERY == 0:
                    top = d[t].amax(1, keepdim=True).clamp_min_(lowest)
                    d[t].sub_(top)
                    offset += top[:, 0]
            last, state = d[T - 1].max(1)
        best[b0:b1] = offset.add_(last).to(dt) if T > VITERBI_RESCALE_EVERY else last
        path = torch.empty(T, n, dtype=torch.int64, device=dev)  # path[t] = the state at step t
        path[T - 1] = state
        if state_major:  # the sums laid out (K, n) as d[t], maximised along the batch-contiguous axis
            sums, top_sum = sums_buf[:, :n], top_buf[:n]
            for t in range(T - 1, 0, -1):
                torch.index_select(log_A, 0, path[t], out=back)  # back[b, h] = log A[path_t[b], h]
                torch.add(back.T, d[t - 1], out=sums)
                torch.max(sums, 0, out=(top_sum, path[t - 1]))  # the first maximiser, as argmax
        else:
            for t in range(T - 1, 0, -1):
                torch.index_select(log_A, 0, path[t], out=back)
                torch.argmax(back.add_(d[t - 1]), 1, out=path[t - 1])
        paths[b0:b1] = path.T
    return paths, best
