r"""Families of HMMs over one vocabulary: their mixture, perturbed members, and the exact
conditional of a *restarted* member (the prefix-tuning chapter's tasks).

* A mixture :math:`\sum_c w_c\,\mathrm{HMM}_c` is itself an HMM: block-diagonal ``A``, the members'
  ``W`` side by side, ``pi = (w_c pi_c)_c``. :func:`mixture_hmm` builds it, so pretraining on a
  family and scoring against it reuse the single-HMM code.
* In the chapter's conditional task, a member ``c ~ w`` is drawn, ``x`` is a sequence from it, and
  ``y`` is a *fresh* sequence from the same member (its chain restarted from ``pi_c``). Then

  .. math:: p(y_t \mid x, y_{<t}) = \sum_c \rho_t(c)\, p_c(y_t \mid y_{<t}),\qquad
            \rho_t(c) \propto w_c\, p_c(x)\, p_c(y_{<t}),

  computed exactly by the forward algorithm (:func:`restart_conditionals`).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from .. import _validate as check
from .inference import check_tokens, log_likelihood, next_token_conditionals
from .model import HMM

__all__ = ["mixture_hmm", "perturbed_hmm", "symbol_channel", "through_channel", "restart_conditionals", "member_posterior"]


def _check_members(members: Sequence[HMM], weights: Any = None) -> tuple[list[HMM], torch.Tensor]:
    members = list(members)
    if not members or not all(isinstance(m, HMM) for m in members):
        raise ValueError("members must be a non-empty sequence of HMM objects.")
    V = members[0].num_symbols
    if any(m.num_symbols != V for m in members):
        raise ValueError(f"every member must share the vocabulary; got num_symbols {[m.num_symbols for m in members]}.")
    dev, dt = members[0].device, members[0].dtype
    members = [m.to(device=dev, dtype=dt) for m in members]
    if weights is None:
        w = torch.full((len(members),), 1.0 / len(members), dtype=dt, device=dev)
    else:
        w = torch.as_tensor(weights, dtype=dt, device=dev).reshape(-1)
        if w.numel() != len(members) or bool((w < 0).any()) or abs(float(w.sum()) - 1) > 1e-6:
            raise ValueError(f"weights must be {len(members)} non-negative numbers summing to 1; got {w.tolist()}.")
    return members, w


def mixture_hmm(members: Sequence[HMM], weights: Any = None) -> HMM:
    """The HMM whose sequences are those of member ``c ~ weights`` (uniform by default).

    States are ``(c, h)`` in member-major order; ``A`` is block-diagonal (a sequence never leaves its member).
    """
    members, w = _check_members(members, weights)
    pi = torch.cat([wc * m.pi for wc, m in zip(w, members)])
    A = torch.block_diag(*[m.A for m in members])
    W = torch.cat([m.W for m in members], 1)
    return HMM(pi, A, W)


def perturbed_hmm(hmm: HMM, amount: float, *, seed: int = 0) -> HMM:
    """``(1 - amount) * theta + amount * theta_rand`` for ``pi``, ``A`` and ``W``, where ``theta_rand``
    has uniform-Dirichlet columns drawn with ``seed``: a member pushed out of the family."""
    check.finite_number("amount (a convex-combination weight)", amount, low=0.0, high=1.0)
    check.seed(seed)
    g = torch.Generator().manual_seed(seed)

    def rand_cols(shape: tuple[int, ...]) -> torch.Tensor:
        e = -torch.rand(shape, generator=g, dtype=torch.float64).log()  # Exp(1) -> Dirichlet(1) columns
        return (e / e.sum(0, keepdim=True)).to(hmm.dtype).to(hmm.device)

    K, V = hmm.num_states, hmm.num_symbols
    mix = lambda t, r: (1 - amount) * t + amount * r  # noqa: E731
    return HMM(mix(hmm.pi, rand_cols((K,))), mix(hmm.A, rand_cols((K, K))), mix(hmm.W, rand_cols((V, K))))


def symbol_channel(num_symbols: int, amount: float, *, seed: int = 0) -> torch.Tensor:
    """``M = (1 - amount) I + amount P`` with ``P`` a random permutation matrix drawn with ``seed``:
    each emitted symbol is replaced, with probability ``amount``, by its fixed partner. ``M[x', x]``
    is column-stochastic."""
    check.positive_int("num_symbols", num_symbols)
    check.finite_number("amount (a probability)", amount, low=0.0, high=1.0)
    check.seed(seed)
    perm = torch.randperm(num_symbols, generator=torch.Generator().manual_seed(seed))
    P = torch.zeros(num_symbols, num_symbols, dtype=torch.float64)
    P[perm, torch.arange(num_symbols)] = 1.0
    return (1 - amount) * torch.eye(num_symbols, dtype=torch.float64) + amount * P


def through_channel(hmm: HMM, M: torch.Tensor) -> HMM:
    """The HMM whose symbols are ``hmm``'s passed through the channel ``M`` (``W' = M W``): still an HMM."""
    M = torch.as_tensor(M).to(dtype=hmm.dtype, device=hmm.device)
    if M.shape != (hmm.num_symbols, hmm.num_symbols):
        raise ValueError(f"M must be ({hmm.num_symbols}, {hmm.num_symbols}), column-stochastic; got {tuple(M.shape)}.")
    return HMM(hmm.pi, hmm.A, M @ hmm.W)


def member_posterior(members: Sequence[HMM], x: Any, weights: Any = None) -> torch.Tensor:
    """``P(c | x)`` for each row of ``x`` ``(B, T)``: shape ``(B, C)``. An empty ``x`` gives the prior."""
    members, w = _check_members(members, weights)
    if isinstance(x, torch.Tensor) and x.dim() == 2 and x.shape[1] == 0 and x.shape[0] > 0:
        return w.expand(x.shape[0], -1).clone()
    x, _ = check_tokens(x, members[0].num_symbols, members[0].device)
    logp = torch.stack([log_likelihood(m, x) for m in members], 1) + w.log()
    return logp.softmax(1)


def restart_conditionals(members: Sequence[HMM], x: Any, y: Any, weights: Any = None) -> torch.Tensor:
    """``p(y_t = v | x, y_{<t})`` when ``y`` restarts the member that emitted ``x`` (module docstring).

    Args:
        members: the family, sharing one vocabulary.
        x: ``(B, Tx)`` conditioning sequences (a ``(B, 0)`` tensor gives ``p(y_t | y_{<t})`` of the mixture).
        y: ``(B, Ty)`` outputs.
    Returns:
        ``(B, Ty, V)``: row ``t`` is the exact distribution of ``y_t`` before reading it.
    """
    members, w = _check_members(members, weights)
    y, _ = check_tokens(y, members[0].num_symbols, members[0].device)
    if y.dim() != 2:
        raise ValueError(f"y must be a (batch, seq_len) tensor; got shape {tuple(y.shape)}.")
    rho = member_posterior(members, x, w).log()  # (B, C)
    if rho.shape[0] != y.shape[0]:
        raise ValueError(f"x and y need the same number of rows; got {rho.shape[0]} and {y.shape[0]}.")
    preds = torch.stack([next_token_conditionals(m, y) for m in members], 1)  # (B, C, Ty, V)
    # log p_c(y_{<t}) = sum_{s<t} log p_c(y_s | y_{<s})
    step = preds.gather(3, y[:, None, :, None].expand(-1, len(members), -1, 1)).squeeze(3).log()
    before = torch.cat([torch.zeros_like(step[..., :1]), step.cumsum(2)[..., :-1]], 2)  # (B, C, Ty)
    post = (rho[:, :, None] + before).softmax(1)
    return (post[..., None] * preds).sum(1)
