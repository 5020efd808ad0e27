r"""The :math:`\eta`-approximate attention-head theorem of chapter 5, computed exactly on a batch.

The exact theorem needs positions where the syntax state is *certain* and a key with
:math:`\kappa^\top g_t = 1` there; no paper HMM has either. Here :math:`T^\star_\tau` is the set of
positions with :math:`P(J_t = j^\star, S_t = s^\star\mid x_{-t}) \ge 1-\tau`, :math:`\eta_t` is one minus
that probability, and the key only needs a gap :math:`\delta = \min_{T^\star}\kappa^\top g_t -
\max_{t\notin T^\star}\kappa^\top g_t` (of any sign). The score of the head with key :math:`\kappa`, query
scale :math:`\lambda` and value :math:`b = (W_{s^\star}^+)^\top\mu` then satisfies

.. math::

    \Big|\frac{\text{score}}{1-\varepsilon} - \mu^\top q\Big| \le \|\mu\|_\infty\Delta + \eta\,C + r_0 + \beta B,
    \qquad C = \|\mu\|_\infty + \max_c |b^\top W_{:,c}|,\quad \beta = \frac{(T-|T^\star|)e^{-\lambda\delta}}{|T^\star|},

with :math:`\eta = \max_{T^\star}\eta_t`, :math:`r_0 = \|W_{s^\star}^\top b - \mu\|_\infty` and :math:`\Delta, B` as in
the exact theorem. It also measures the two sides of the bound on :math:`\Delta` (chapter 5):
:math:`\Delta(x) \le 2(1 + 1/c)(1-\bar q)/(c\,\bar q)` with :math:`\bar q = \max_m q_m(x)` and :math:`c` the
smallest ratio :math:`\min_m L_t(m)/\max_m L_t(m)` of one token's likelihoods.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .attention_head import SingleQueryAttentionHead, set_theorem_head
from .inference import masked_state_posteriors, memory_posterior
from .model import MemoryHMM, marginalise_memory, marginalise_reader, to_hmm

__all__ = ["ApproxTheoremCheck", "dominant_key", "check_approximate_theorem"]


@dataclass(frozen=True)
class ApproxTheoremCheck:
    r"""Per sequence (``(B,)`` tensors unless stated): ``located`` ``(B, T)`` (:math:`T^\star_\tau`; a row with
    none gets ``bound = inf``),
    ``eta``, ``delta`` (key gap), ``beta`` (leakage bound), ``outside`` (attention mass off :math:`T^\star`),
    ``spread`` (:math:`\Delta`), ``margin``, ``bound`` (the right-hand side), ``score``, ``y``, ``correct``,
    ``value_const`` (:math:`C`, scalar), ``rank_residual`` (:math:`r_0`, scalar), ``q_max``
    (:math:`\bar q`), ``lik_ratio`` (:math:`c`) and ``spread_bound`` (the bound on :math:`\Delta`)."""

    located: torch.Tensor
    eta: torch.Tensor
    delta: torch.Tensor
    beta: torch.Tensor
    outside: torch.Tensor
    spread: torch.Tensor
    margin: torch.Tensor
    bound: torch.Tensor
    score: torch.Tensor
    y: torch.Tensor
    correct: torch.Tensor
    value_const: float
    rank_residual: float
    q_max: torch.Tensor
    lik_ratio: torch.Tensor
    spread_bound: torch.Tensor


def dominant_key(mem: MemoryHMM, syntax: int) -> torch.Tensor:
    r"""A key for syntax state :math:`s^\star` on any memory HMM: :math:`\kappa_x = 1` for the symbols that some
    column of :math:`W_{s^\star}` emits with more probability than every column of the other syntax states."""
    W_s = mem.emissions_of_syntax_state(syntax)
    others = [mem.emissions_of_syntax_state(s) for s in range(mem.num_syntax_states) if s != syntax]
    if not others:
        return torch.ones(mem.num_symbols, dtype=mem.dtype, device=mem.device)
    other_max = torch.cat(others, 1).max(1).values
    return (W_s.max(1).values > other_max).to(mem.dtype)


def check_approximate_theorem(mem: MemoryHMM, mu: Any, x: Any, *, cell: int, syntax: int, scale: float, tau: float,
                              kappa: Any = None) -> ApproxTheoremCheck:
    r"""Every quantity of the :math:`\eta`-approximate theorem on sequences ``x`` ``(B, T)``, exactly.

    ``kappa`` defaults to :func:`dominant_key`. A sequence with no position in :math:`T^\star_\tau` gets an
    infinite bound (no guarantee). Raises ``ValueError`` if ``tau`` is not in [0, 1) or ``scale <= 0``.
    """
    if not isinstance(tau, (int, float)) or not 0 <= tau < 1:
        raise ValueError(f"tau must be in [0, 1); got {tau!r}.")
    if not isinstance(scale, (int, float)) or scale <= 0:
        raise ValueError(f"scale (the query scale lambda) must be > 0; got {scale!r}.")
    hmm = to_hmm(mem)
    mu = torch.as_tensor(mu, dtype=mem.dtype, device=mem.device).reshape(-1)
    if mu.numel() != mem.num_values:
        raise ValueError(f"mu must have num_values={mem.num_values} entries; got {mu.numel()}.")
    post = masked_state_posteriors(hmm, x)                                    # P(H_t | x_{-t})
    g = post @ hmm.W.T
    S = mem.num_syntax_states
    reader = marginalise_reader(mem, post).view(*post.shape[:2], mem.num_cells, S)
    p_star = reader[..., cell, syntax]                                        # P(J_t = j*, S_t = s* | x_{-t})
    located = p_star >= 1 - tau - 1e-12                                      # tau = 0: certain (to rounding)
    applicable = located.any(1)                                               # T* is not empty
    kappa = dominant_key(mem, syntax) if kappa is None else torch.as_tensor(kappa, dtype=mem.dtype, device=mem.device)
    W_s = mem.emissions_of_syntax_state(syntax)
    b = torch.linalg.pinv(W_s).T @ mu
    key, val = g @ kappa, g @ b
    inf = torch.tensor(float("inf"), dtype=mem.dtype, device=mem.device)
    in_min = torch.where(located, key, inf).amin(1)
    out_max = torch.where(located, -inf, key).amax(1)
    n_in = located.sum(1).to(mem.dtype).clamp_min(1)
    T = g.shape[1]
    delta = torch.where(n_in < T, in_min - out_max, torch.ones_like(in_min))
    beta = (T - n_in) * torch.exp(-scale * delta) / n_in
    eta = torch.where(located, 1 - p_star, torch.zeros_like(p_star)).amax(1)
    value_const = float(mu.abs().max() + (b @ hmm.W).abs().max())
    rank_residual = float((W_s.T @ b - mu).abs().max())
    q_minus = marginalise_memory(mem, post)[:, :, cell]
    q = memory_posterior(mem, x, hmm)[:, cell]
    spread = ((q_minus - q[:, None]).abs().sum(-1) * located).amax(1)
    off = (val.abs() * ~located).amax(1)
    bound = mu.abs().max() * spread + eta * value_const + rank_residual + beta * off
    bound = torch.where(applicable, bound, inf)                               # no located position: no guarantee
    head = set_theorem_head(SingleQueryAttentionHead(mem.num_symbols).to(mem.dtype), kappa.cpu(), scale, b.cpu())
    with torch.no_grad():
        attention = head.to(mem.device).attention(g)[:, 0]
        logits = head(g)
    score = logits[:, 1] - logits[:, 0]
    margin = (q @ mu).abs()
    y = (q @ mu >= 0).long()
    # the bound on Delta: likelihood ratios L_t(m) ∝ q(m) / q_{-t}(m), smallest min/max ratio over T*
    ratio = q[:, None, :] / q_minus.clamp_min(torch.finfo(mem.dtype).tiny)
    c_t = ratio.amin(-1) / ratio.amax(-1)
    lik_ratio = torch.where(located, c_t, torch.ones_like(c_t)).amin(1)
    lik_ratio = torch.where(applicable, lik_ratio, torch.zeros_like(lik_ratio))
    q_max = q.amax(1)
    spread_bound = 2 * (1 + 1 / lik_ratio) * (1 - q_max) / (lik_ratio * q_max)
    spread_bound = torch.where(lik_ratio > 0, spread_bound, inf).nan_to_num(nan=float("inf"))  # c = 0: no bound
    return ApproxTheoremCheck(located, eta, delta, beta, (attention * ~located).sum(1), spread, margin, bound, score,
                              y, (score > 0).long() == y, value_const, rank_residual, q_max, lik_ratio, spread_bound)

