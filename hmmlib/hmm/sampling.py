"""Batched sampling from an HMM: all sequences at once, looping over time only.

Categorical draws use inverse-CDF sampling against one flat, sorted table per
matrix: row ``h`` of a column-stochastic matrix becomes the interval
``[2h, 2h + 1]`` of a single increasing 1-D array, so one ``searchsorted``
serves every sequence whatever its current state, with no per-row gather.
"""
from __future__ import annotations

import torch

from .. import _validate as check
from .model import HMM
from .random import make_generator

__all__ = ["sample", "FlatCDF"]


class FlatCDF:
    """Inverse-CDF sampler for the columns of a column-stochastic matrix ``M`` (C, K).

    Column ``k``'s normalised CDF is stored shifted to ``[2k, 2k + 1]`` in one sorted
    float64 array, so a uniform ``u`` in ``[0, 1)`` for column ``k`` is found by one
    ``searchsorted`` of ``2k + u``. ``right=True`` never returns a zero-probability
    category, and each column's last entry is exactly ``2k + 1 > 2k + u``.
    """

    def __init__(self, M: torch.Tensor):
        C, K = M.shape
        cdf = M.T.to(torch.float64).cumsum(1)  # (K, C)
        cdf = cdf / cdf[:, -1:]
        self.table = (cdf + 2.0 * torch.arange(K, dtype=torch.float64, device=M.device)[:, None]).reshape(-1)
        self.num_categories = C

    def draw(self, cols: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """One draw from column ``cols[i]`` per entry, given uniforms ``u`` (float64, same shape)."""
        idx = torch.searchsorted(self.table, torch.add(u, cols, alpha=2), right=True)
        # 2k + u can round up to 2k + 1 when u is within 2^-52 of 1: clamp into column k
        return idx.sub_(cols, alpha=self.num_categories).clamp_(0, self.num_categories - 1)

    def _draw_into(self, cols: torch.Tensor, u: torch.Tensor, out: torch.Tensor, query: torch.Tensor) -> None:
        """:meth:`draw` writing into ``out`` (int64) with ``query`` (float64) as scratch: the same
        arithmetic, so the same draws, without allocating inside a time loop."""
        torch.add(u, cols, alpha=2, out=query)
        torch.searchsorted(self.table, query, right=True, out=out)
        out.sub_(cols, alpha=self.num_categories).clamp_(0, self.num_categories - 1)


def sample(
    hmm: HMM,
    num_seqs: int,
    seq_len: int,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``num_seqs`` sequences of length ``seq_len`` from ``hmm`` on its device.

    ``H_0 ~ pi``, ``H_{t+1} ~ A[:, H_t]``, ``X_t ~ W[:, H_t]``. The hidden path is
    drawn first (one vectorised step per position), then all emissions at once.
    Give ``seed`` or a ``torch.Generator`` on the HMM's device; the same seed gives
    the same samples. Sizes and seeds may be Python or numpy integers.

    Returns:
        ``(tokens, states)``: int64 tensors of shape ``(num_seqs, seq_len)``.
    """
    check.positive_ints(num_seqs=num_seqs, seq_len=seq_len)  # Python or numpy integers
    num_seqs, seq_len = int(num_seqs), int(seq_len)
    g = make_generator(seed, generator, hmm.device)
    dev = hmm.device
    start = FlatCDF(hmm.pi.unsqueeze(1))
    trans = FlatCDF(hmm.A)
    emit = FlatCDF(hmm.W)
    u = torch.rand(seq_len, num_seqs, generator=g, device=dev, dtype=torch.float64)
    states = torch.empty(seq_len, num_seqs, dtype=torch.int64, device=dev)
    s_steps, u_steps = states.unbind(0), u.unbind(0)  # per-step views, made once
    query = torch.empty(num_seqs, dtype=torch.float64, device=dev)
    start._draw_into(torch.zeros(num_seqs, dtype=torch.int64, device=dev), u_steps[0], s_steps[0], query)
    for t in range(1, seq_len):
        trans._draw_into(s_steps[t - 1], u_steps[t], s_steps[t], query)
    states = states.T.contiguous()
    tokens = emit.draw(states, torch.rand(states.shape, generator=g, device=dev, dtype=torch.float64))
    return tokens, states
