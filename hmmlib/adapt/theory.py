r"""The theory of head and prompt tuning in the idealised model (Wei, Xie & Ma 2021; this book's formulation, chapters 3-4).

**Head tuning.** A perfect masked LM outputs :math:`G(x) = W p(x)` with :math:`p(x) = P(H_0\mid x_{1:T})`.
If :math:`W` has full column rank, :math:`b = (W^+)^\top\mu` gives :math:`b^\top G(x) = \mu^\top p(x)`
for every :math:`x` (R2); if :math:`Wv = 0` for some :math:`v \ne 0`, posteriors that differ along
:math:`v` give the same :math:`G` (R3).

**Prompt tuning: the fake token.** A prompt of :math:`k` fake tokens with non-negative emission rows
:math:`u_1,\dots,u_k` (":math:`P(z_j\mid H=h) = u_j[h]`", not normalised) sits at positions
:math:`-k,\dots,-1`, the ``[MASK]`` at 0 and the input at :math:`1..T`. The prompted input is
read as *one* sequence from the pretraining distribution, so the hidden state of its **first**
position has the start distribution:

.. math::

    H_{-k}\sim\text{prior}\ (\text{default } \pi),\qquad
    H_{-j+1}\sim A_{:,H_{-j}},\qquad\text{so}\quad H_{-j}\sim m_{-j} := A^{k-j}\,\text{prior},
    \quad H_0\sim m_0 = A^k\,\text{prior}.

For one token (:math:`k=1`): :math:`H_{-1}\sim` prior and :math:`H_0\sim A\,\text{prior}`. With the
time-reversed transition :math:`R_{h,h'} = P(H_{-1}=h'\mid H_0=h) = A_{h,h'}\,\text{prior}_{h'}/(A\,\text{prior})_h`,
conditional independence of the prompt and :math:`x` given :math:`H_0` gives (R4)

.. math::

    P(H_0=h\mid z, x) \propto m_0(h)\,P(z\mid H_0=h)\,P(x\mid H_0=h) \propto v_h\,p_h,\qquad
    v := P(z\mid H_0=\cdot) = Ru,\qquad
    G_u(x) = \frac{W(v\odot p)}{v^\top p},

where :math:`p` is the posterior of :math:`H_0` given :math:`x_{1:T}` **under the prior**
:math:`m_0` for :math:`H_0`. For :math:`k` tokens the likelihood of the prompt composes through
the reversed chain, each step reversed with the marginal of its own position:

.. math::

    v = R^{(1)}\big(u_k\odot R^{(2)}(u_{k-1}\odot\cdots R^{(k)}u_1)\big),\qquad
    R^{(j)} = \operatorname{reverse\_transition}(A, m_{-j}).

When the prior is stationary (:math:`A\,\text{prior} = \text{prior}`, e.g. uniform :math:`\pi` with the
paper's doubly-stochastic :math:`A`) all :math:`R^{(j)}` coincide, :math:`m_0 = \pi` and :math:`p` is
exactly :func:`hmmlib.posterior_h0`. A constant :math:`u` gives :math:`v\propto\mathbf 1` and
:math:`G_u = W p`: prompt tuning contains head tuning.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from ..hmm.model import HMM, column_tolerance
from ..hmm.inference import posterior_h0

__all__ = [
    "NonDegeneracy",
    "nondegeneracy",
    "closed_form_head",
    "closed_form_solve",
    "ClosedForm",
    "CLOSED_FORM_RTOL",
    "head_realizes",
    "kernel_direction",
    "degenerate_pair",
    "reverse_transition",
    "prompt_prior_h0",
    "prompt_reweighting",
    "reweight_posterior",
    "prompted_posterior",
    "prompted_posterior_augmented",
    "prompted_conditional",
    "prompt_for_reweighting",
    "best_linear_head_accuracy_two_symbols",
    "Counterexample",
    "counterexample_head_fails_prompt_works",
    "twin_state_hmm",
]


# --------------------------------------------------------------------------- input checks
def _matrix(name: str, value: Any) -> torch.Tensor:
    t = torch.as_tensor(value)
    if not t.is_floating_point():
        t = t.to(torch.float64)
    if t.dim() != 2 or t.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 2-D matrix (num_symbols, num_states); got shape {tuple(t.shape)}.")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} has non-finite entries; pass a finite matrix.")
    return t


def _vector(name: str, value: Any, K: int, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(value)
    if not t.is_floating_point():
        t = t.to(torch.float64)
    t = t.to(dtype=like.dtype, device=like.device)
    if t.shape != (K,):
        raise ValueError(f"{name} must have shape (num_states,) = ({K},); got {tuple(t.shape)}.")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} has non-finite entries.")
    return t


def _check_hmm(hmm: Any) -> None:
    if not isinstance(hmm, HMM):
        raise ValueError(f"expected an HMM, got {type(hmm).__name__}.")


def _prior(hmm: HMM, prior: Any) -> torch.Tensor:
    if prior is None:
        return hmm.pi
    p = _vector("prior", prior, hmm.num_states, hmm.pi)
    if (p < 0).any() or abs(float(p.sum()) - 1) > column_tolerance(p.dtype):
        raise ValueError(f"prior must be a probability vector (>= 0, summing to 1); got sum {float(p.sum()):.6g}.")
    return p


def _prompt(hmm: HMM, u: Any) -> torch.Tensor:
    """Prompt rows as (k, K) in the HMM's dtype/device, keeping autograd history."""
    t = u if isinstance(u, torch.Tensor) else torch.as_tensor(np.asarray(u, dtype=np.float64))
    if not t.is_floating_point():
        t = t.to(torch.float64)
    t = t.to(dtype=hmm.dtype, device=hmm.device)
    K = hmm.num_states
    if t.dim() == 1:
        t = t.unsqueeze(0)
    if t.dim() != 2 or t.shape[1] != K or t.shape[0] == 0:
        raise ValueError(
            f"u must have shape (num_states,) = ({K},) for one fake token or (k, {K}) for k tokens; "
            f"got {tuple(torch.as_tensor(u).shape)}."
        )
    with torch.no_grad():
        if not torch.isfinite(t).all():
            raise ValueError("u has non-finite entries.")
        if (t < 0).any():
            j, h = (int(i) for i in (t < 0).nonzero()[0])
            raise ValueError(
                f"u[{j}, {h}] = {float(t[j, h]):.3g} is negative; a fake token's emission row is a likelihood "
                "and must be >= 0 (parametrise it as u = softplus(theta) or exp(theta) to optimise freely)."
            )
        if (t.sum(1) == 0).any():
            raise ValueError("a row of u is all zero: that fake token has probability 0 under every state.")
    return t


# --------------------------------------------------------------------------- head tuning
@dataclass(frozen=True)
class NonDegeneracy:
    """How far ``W`` (or ``W[:, support]``) is from losing column rank.

    ``sigma_min`` is the ``K``-th largest singular value for ``K`` columns (0 when ``K > V``), so
    ``full_column_rank`` iff ``rank == num_columns``; ``condition_number = sigma_max / sigma_min``
    (``inf`` when ``sigma_min == 0``). A head realising ``mu`` has ``||b|| <= ||mu|| / sigma_min``.
    """

    rank: int
    num_columns: int
    sigma_min: float
    sigma_max: float
    condition_number: float
    full_column_rank: bool


def nondegeneracy(W: Any, support: Any = None, rtol: float | None = None) -> NonDegeneracy:
    """Rank, extreme singular values and condition number of ``W`` (V, K) or ``W[:, support]``.

    The rank counts singular values above ``rtol * sigma_max`` (default
    ``max(V, K) * eps``, numpy's ``matrix_rank`` rule).
    """
    W = _matrix("W", W).to(torch.float64)
    if support is not None:
        idx = torch.as_tensor(support, dtype=torch.int64).reshape(-1)
        if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= W.shape[1]:
            raise ValueError(f"support must be a non-empty list of column indices in [0, {W.shape[1]}); got {idx.tolist()}.")
        W = W[:, idx]
    V, K = W.shape
    s = torch.linalg.svdvals(W)
    tol = (max(V, K) * torch.finfo(torch.float64).eps if rtol is None else rtol) * float(s[0])
    rank = int((s > tol).sum())
    smin = float(s[K - 1]) if K <= V else 0.0
    cond = float(s[0]) / smin if smin > 0 else float("inf")
    return NonDegeneracy(rank, K, smin, float(s[0]), cond, rank == K)


#: Relative cut-off of :func:`closed_form_head`: singular values of :math:`W` below
#: ``CLOSED_FORM_RTOL * sigma_max(W)`` are treated as zero.
CLOSED_FORM_RTOL = 1e-8


class ClosedForm(NamedTuple):
    r"""The closed-form head and how well it is determined (:func:`closed_form_solve`).

    Attributes:
        b: the head ``(V,)``.
        rank: singular values of ``W`` kept (above ``rtol * sigma_max``).
        dropped: singular values of ``W`` set to zero (``min(V, K) - rank``).
        condition_number: ``sigma_max / sigma_min`` over all ``min(V, K)`` singular values (``inf`` if one is 0).
        residual: :math:`\|W^\top b - \mu\|_2 / \|\mu\|_2`, the part of :math:`\mu` the head does not realise.
        rtol: the relative cut-off used.
    """

    b: torch.Tensor
    rank: int
    dropped: int
    condition_number: float
    residual: float
    rtol: float


def closed_form_solve(W: Any, mu: Any, rtol: float = CLOSED_FORM_RTOL) -> ClosedForm:
    r"""The head :math:`b = (W_r^+)^\top\mu` from the SVD :math:`W = U\Sigma V^\top`, keeping the singular values
    :math:`\sigma_i > \text{rtol}\cdot\sigma_{\max}`: :math:`b = U_r\Sigma_r^{-1}V_r^\top\mu`.

    Why a cut-off: in float64 a computed singular value carries an absolute error of about
    :math:`\epsilon\,\sigma_{\max}` (:math:`\epsilon\approx 2.2\cdot10^{-16}`), so the inverse of one near
    :math:`10^{-12}\sigma_{\max}` (the paper's generator makes such :math:`W`: two states emitting the same
    symbol) is wrong in its leading digit, :math:`\|b\|` reaches :math:`10^{12}`, and the sign of
    :math:`b^\top G(x)` becomes rounding noise that depends on the BLAS library. With the cut-off
    :math:`\|b\|_2 \le \|\mu\|_2 / (\text{rtol}\,\sigma_{\max})`, so a rounding error of :math:`\epsilon` in
    :math:`G(x)` moves :math:`b^\top G(x)` by at most about :math:`\epsilon\|\mu\|_2/(\text{rtol}\,\sigma_{\max})
    \approx 2\cdot10^{-8}\|\mu\|_2/\sigma_{\max}`: the head is a reproducible function of :math:`W` and
    :math:`\mu`. The price: directions with :math:`\sigma_i \le \text{rtol}\,\sigma_{\max}` are treated as the
    kernel of :math:`W` (R3), and ``residual`` says how much of :math:`\mu` the head then fails to realise.
    """
    W = _matrix("W", W)
    mu = _vector("mu", mu, W.shape[1], W)
    if not isinstance(rtol, (int, float)) or isinstance(rtol, bool) or not 0 <= rtol < 1:
        raise ValueError(f"rtol must be a number in [0, 1); got {rtol!r}.")
    U, s, Vh = torch.linalg.svd(W, full_matrices=False)
    keep = s > rtol * s[0]
    r = int(keep.sum())
    b = U[:, :r] @ ((Vh[:r] @ mu) / s[:r])
    smin = float(s[-1]) if W.shape[0] >= W.shape[1] else 0.0  # K > V: W has a kernel
    cond = float(s[0]) / smin if smin > 0 else float("inf")
    res = float((W.T @ b - mu).norm() / mu.norm()) if float(mu.norm()) > 0 else 0.0
    return ClosedForm(b, r, int(s.numel()) - r, cond, res, float(rtol))


def closed_form_head(W: Any, mu: Any, rtol: float = CLOSED_FORM_RTOL) -> torch.Tensor:
    r"""The head :math:`b = (W^+)^\top\mu` (Moore-Penrose pseudo-inverse), shape ``(V,)``.

    :math:`W^\top b` is the orthogonal projection of :math:`\mu` on the row space of :math:`W`, so
    :math:`b^\top W p = \mu^\top p` for all :math:`p` iff :math:`\mu` is in that row space (always,
    when :math:`W` has full column rank); it is then the minimum-norm such head.

    Singular values of :math:`W` below ``rtol`` (default :data:`CLOSED_FORM_RTOL` :math:`=10^{-8}`) times the
    largest are treated as zero, so that the answer does not depend on rounding (:func:`closed_form_solve`
    explains the choice and also returns the rank used and the condition number).
    """
    return closed_form_solve(W, mu, rtol).b


def head_realizes(W: Any, mu: Any, atol: float = 1e-9) -> bool:
    r"""Whether a linear head on :math:`G = Wp` reproduces :math:`\mu^\top p` exactly: :math:`W^\top b = \mu`
    for :math:`b` = :func:`closed_form_head` (i.e. :math:`\mu \in \operatorname{rowspace}(W)`)."""
    W = _matrix("W", W)
    b = closed_form_head(W, mu)
    return bool(torch.allclose(W.T @ b, _vector("mu", mu, W.shape[1], W), rtol=0, atol=atol))


def kernel_direction(W: Any) -> torch.Tensor:
    r"""A unit vector :math:`v` with :math:`Wv = 0` (the last right-singular vector; :math:`\mathbf 1^\top v = 0`
    follows since :math:`\mathbf 1^\top W = \mathbf 1^\top`). Raises if ``W`` has full column rank."""
    W = _matrix("W", W)
    if nondegeneracy(W).full_column_rank:
        raise ValueError("W has full column rank, so its kernel is {0}; head tuning can realise every mu (R2).")
    v = torch.linalg.svd(W, full_matrices=True).Vh[-1]
    return v * torch.sign(v[int(v.abs().argmax())])  # fix the sign: largest entry positive


def degenerate_pair(W: Any, p: Any = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Two distributions :math:`p_\pm = p \pm t v` over states with :math:`W p_- = W p_+` (R3).

    :math:`v` = :func:`kernel_direction`, ``p`` defaults to uniform and :math:`t` is the largest step
    keeping both non-negative, so the pair is as far apart as the simplex allows. A masked LM
    cannot tell them apart; a task with :math:`\mu^\top v \ne 0` may label them differently.
    Returns ``(p_minus, p_plus, v)``.
    """
    W = _matrix("W", W)
    K = W.shape[1]
    v = kernel_direction(W)
    p = torch.full((K,), 1.0 / K, dtype=W.dtype) if p is None else _vector("p", p, K, W)
    if (p < 0).any() or abs(float(p.sum()) - 1) > 1e-9:
        raise ValueError("p must be a probability vector over states (>= 0, summing to 1).")
    nz = v.abs() > 1e-12
    t = float((p[nz] / v[nz].abs()).min())
    return p - t * v, p + t * v, v


# --------------------------------------------------------------------------- the reversed chain
def reverse_transition(hmm: HMM, prior: Any = None) -> torch.Tensor:
    r"""Time-reversed transition :math:`R_{h,h'} = P(H_{-1}=h'\mid H_0=h) = A_{h,h'}\,\text{prior}_{h'}/(A\,\text{prior})_h`.

    ``prior`` is the distribution of :math:`H_{-1}` (default ``hmm.pi``), so :math:`H_0\sim A\,\text{prior}`.
    Rows sum to 1. A state with :math:`(A\,\text{prior})_h = 0` is unreachable; its row is set
    to ``prior`` (any choice is harmless, since it has posterior probability 0). Shape ``(K, K)``.
    """
    _check_hmm(hmm)
    prior = _prior(hmm, prior)
    joint = hmm.A * prior  # joint[h, h'] = P(H_0=h, H_{-1}=h')
    marg = joint.sum(1, keepdim=True)
    return torch.where(marg > 0, joint / marg.clamp_min(torch.finfo(marg.dtype).tiny), prior.expand_as(joint))


def prompt_prior_h0(hmm: HMM, num_tokens: int, prior: Any = None) -> torch.Tensor:
    r"""The marginal :math:`m_0 = A^k\,\text{prior}` of :math:`H_0` behind a ``num_tokens``-token prompt."""
    _check_hmm(hmm)
    if not isinstance(num_tokens, int) or isinstance(num_tokens, bool) or num_tokens < 0:
        raise ValueError(f"num_tokens must be a non-negative int (the prompt length); got {num_tokens!r}.")
    m = _prior(hmm, prior)
    for _ in range(num_tokens):
        m = hmm.A @ m
    return m / m.sum()


def prompt_reweighting(hmm: HMM, u: Any, prior: Any = None) -> torch.Tensor:
    r"""The prompt likelihood :math:`v_h = P(z_{-k..-1}\mid H_0=h)`, shape ``(K,)`` (differentiable in ``u``).

    ``u`` is ``(K,)`` for one token or ``(k, K)`` with row ``j`` the token at position ``-k+j``:
    :math:`v = R^{(1)}(u_k\odot R^{(2)}(u_{k-1}\odot\cdots R^{(k)}u_1))` with :math:`H_{-k}\sim` ``prior``.
    """
    _check_hmm(hmm)
    U = _prompt(hmm, u)
    m = _prior(hmm, prior)
    lam = U[0]  # P(z_{-k} | H_{-k})
    for j in range(1, U.shape[0]):
        lam = U[j] * (reverse_transition(hmm, m) @ lam)  # P(z_{-k..-k+j} | H_{-k+j})
        m = hmm.A @ m
        m = m / m.sum()
    return reverse_transition(hmm, m) @ lam


def reweight_posterior(p: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    r""":math:`(v\odot p)/(v^\top p)` row-wise for ``p`` of shape ``(..., K)``: the posterior after the prompt."""
    q = p * v
    z = q.sum(-1, keepdim=True)
    if (z.detach() <= 0).any():
        raise ValueError("v^T p = 0 for some input: the prompt and the input are incompatible (probability 0).")
    return q / z


def prompted_posterior(hmm: HMM, u: Any, x: Any, prior: Any = None) -> torch.Tensor:
    r""":math:`P(H_0\mid z_{-k..-1}, x_{1:T}) = (v\odot p)/(v^\top p)`, shape ``(B, K)`` (``(K,)`` for one 1-D ``x``).

    :math:`v` = :func:`prompt_reweighting`, :math:`p` = posterior of :math:`H_0` under the prior
    :math:`m_0 = A^k\,\text{prior}` (module docstring). Differentiable in ``u``.
    """
    U = _prompt(hmm, u)
    v = prompt_reweighting(hmm, U, prior)
    m0 = prompt_prior_h0(hmm, U.shape[0], prior)
    p = posterior_h0(HMM(m0, hmm.A, hmm.W), x)
    return reweight_posterior(p, v)


def prompted_conditional(hmm: HMM, u: Any, x: Any, prior: Any = None) -> torch.Tensor:
    r""":math:`G_u(x) = P(X_0\mid z, x_{1:T}) = W(v\odot p)/(v^\top p)`: the prompted masked LM's output,
    shape ``(B, V)`` (``(V,)`` for one 1-D ``x``). Differentiable in ``u``."""
    return prompted_posterior(hmm, u, x, prior) @ hmm.W.T


def prompted_posterior_augmented(hmm: HMM, u: Any, x: Any, prior: Any = None) -> torch.Tensor:
    r"""Same as :func:`prompted_posterior`, by forward filtering through the prompt instead of reversing.

    :math:`a \leftarrow \text{prior}\odot u_1`, then :math:`a\leftarrow (Aa)\odot u_j` for each further token;
    :math:`Aa \propto P(H_0, z)`; times the likelihood :math:`P(x_{1:T}\mid H_0)` (the posterior of
    :math:`H_0` under a uniform prior), normalised.
    """
    _check_hmm(hmm)
    U = _prompt(hmm, u)
    a = _prior(hmm, prior) * U[0]
    for j in range(1, U.shape[0]):
        a = (hmm.A @ (a / a.sum())) * U[j]
    a = hmm.A @ (a / a.sum())
    K = hmm.num_states
    lik = posterior_h0(HMM(torch.full((K,), 1.0 / K, dtype=hmm.dtype, device=hmm.device), hmm.A, hmm.W), x)
    return reweight_posterior(lik, a)


def prompt_for_reweighting(hmm: HMM, v: Any, prior: Any = None, atol: float = 1e-12) -> torch.Tensor:
    r"""A one-token prompt :math:`u = R^{-1}v` that produces a target reweighting :math:`v` (R5).

    Raises ``ValueError`` if :math:`R` is singular or :math:`R^{-1}v` has a negative entry (below
    ``-atol``): then :math:`v` is outside the cone :math:`\{Ru: u\ge 0\}`. Tiny negatives are set to 0.
    """
    R = reverse_transition(hmm, prior)
    v = _vector("v", v, hmm.num_states, R)
    try:
        u = torch.linalg.solve(R, v)
    except RuntimeError as e:
        raise ValueError(f"the reversed transition R is singular, so u = R^-1 v is undefined ({e}).") from e
    if (u < -atol).any():
        raise ValueError(
            f"R^-1 v = {u.tolist()} has negative entries: no non-negative one-token prompt gives this "
            "reweighting (v is outside the cone {R u : u >= 0}); try a longer prompt or other dynamics."
        )
    return u.clamp_min(0)


def best_linear_head_accuracy_two_symbols(G: Any, y: Any) -> float:
    r"""The exact best accuracy of any linear head :math:`\mathbb 1[b^\top G\ge 0]` when :math:`V = 2`.

    With two symbols :math:`G = (g, 1-g)` and :math:`b^\top G = (b_0-b_1)g + b_1` is affine in :math:`g`,
    so the heads are exactly the thresholds on :math:`g` (either orientation) and the constant
    classifiers; this scans all of them.
    """
    G = torch.as_tensor(G, dtype=torch.float64)
    y = torch.as_tensor(y).reshape(-1).to(torch.int64)
    if G.dim() != 2 or G.shape[1] != 2 or G.shape[0] != y.numel():
        raise ValueError(f"G must have shape (N, 2) and y shape (N,); got {tuple(G.shape)} and {tuple(y.shape)}.")
    g, order = torch.sort(G[:, 0])
    ys = y[order].double()
    n = ys.numel()
    # predict 1 for g >= threshold, the threshold between distinct consecutive values (or at the ends)
    ones_above = torch.cat([ys.flip(0).cumsum(0).flip(0), torch.zeros(1, dtype=torch.float64)])
    zeros_below = torch.cat([torch.zeros(1, dtype=torch.float64), (1 - ys).cumsum(0)])
    cut = torch.cat([torch.tensor([True]), g[1:] > g[:-1], torch.tensor([True])])
    acc = ((ones_above + zeros_below) / n)[cut]
    return float(torch.maximum(acc, 1 - acc).max())


# --------------------------------------------------------------------------- the book's counterexample
class Counterexample(NamedTuple):
    """This book's construction (chapter 4; not an example of the paper): ``b^T G_u(x) * (v^T p) == mu^T p(x)`` for every ``x``."""

    hmm: HMM
    mu: torch.Tensor
    u: torch.Tensor
    b: torch.Tensor


def counterexample_head_fails_prompt_works(cycle_prob: float = 0.85, skip_prob: float = 0.15) -> Counterexample:
    r"""An HMM and task where no linear head on :math:`G` works but one fake token plus a linear head does.

    :math:`V=2`, :math:`K=3`, :math:`W = \begin{pmatrix}1&1/2&0\\0&1/2&1\end{pmatrix}` (kernel
    :math:`(1,-2,1)`), :math:`\mu = (3,-1,-2)` (:math:`\mu^\top(1,-2,1) = 3 \ne 0`), uniform :math:`\pi`, and a
    noisy 3-cycle: :math:`h\to h+1` with ``cycle_prob``, :math:`h\to h+2` (skip a state) with ``skip_prob``,
    stay with the rest. :math:`A` is doubly stochastic, so :math:`\pi` is stationary and :math:`R = A`.
    The head :math:`b = (1,-3)` gives :math:`W^\top b = (1,-1,-3)`, with :math:`\mu`'s signs;
    :math:`v = \mu\oslash W^\top b = (3,1,2/3)` and :math:`u = R^{-1}v \ge 0`, so :math:`v\odot W^\top b = \mu`
    and :math:`b^\top G_u(x) = \mu^\top p(x) / v^\top p(x)` for every :math:`x`.

    Why skip noise: with the symmetric cycle (0.9 on the cycle, 0.05 elsewhere) the posteriors of
    :math:`H_0` for :math:`T \ge 3` concentrate near a few points that a threshold on :math:`G` still
    separates (best head accuracy 1). With the defaults, the best linear head on :math:`G` reaches
    only about 0.79 at :math:`T = 128` (see :func:`best_linear_head_accuracy_two_symbols`).
    Raises ``ValueError`` if the probabilities are invalid or make :math:`R^{-1}v` negative.
    """
    stay = 1.0 - cycle_prob - skip_prob
    if not all(isinstance(q, (int, float)) for q in (cycle_prob, skip_prob)) or min(cycle_prob, skip_prob) < 0 \
            or stay < -1e-12:
        raise ValueError(
            f"cycle_prob and skip_prob must be >= 0 with cycle_prob + skip_prob <= 1; got {cycle_prob!r}, {skip_prob!r}."
        )
    f64 = torch.float64
    K = 3
    A = torch.zeros(K, K, dtype=f64)
    for h in range(K):
        A[(h + 1) % K, h] += cycle_prob
        A[(h + 2) % K, h] += skip_prob
        A[h, h] += stay if stay > 1e-12 else 0.0
    W = torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.5, 1.0]], dtype=f64)
    hmm = HMM(torch.full((K,), 1.0 / K, dtype=f64), A / A.sum(0), W)
    mu = torch.tensor([3.0, -1.0, -2.0], dtype=f64)
    b = torch.tensor([1.0, -3.0], dtype=f64)
    u = prompt_for_reweighting(hmm, mu / (W.T @ b))
    return Counterexample(hmm, mu, u, b)


def twin_state_hmm(noise: float = 0.05) -> tuple[HMM, torch.Tensor]:
    r"""An HMM with two *twin* hidden states that emit identically, and a task that asks which twin :math:`H_0` is.

    :math:`K = V = 4`. States 0 and 1 emit symbols 0 and 1; the twins 2 and 3 both emit symbols
    2 and 3 with probability 1/2 each, so :math:`W` has two equal columns and kernel
    :math:`e_2 - e_3`. The chain follows two 2-cycles, :math:`0\leftrightarrow 2` and
    :math:`1\leftrightarrow 3`, with probability ``1 - noise`` (the rest spread uniformly), so the
    following tokens reveal which twin came before: the exact posterior tells the twins apart,
    the emission does not. Task :math:`\mu = (1, -1, 1, -1)` (balanced classes: states 0 and 2 against 1 and 3).
    No function of :math:`G = Wp` can compute it on the whole simplex (:math:`\mu^\top(e_2 - e_3) = 2 \ne 0`),
    and no prompt with a linear head can either on the *edge* between the twins (the twins' columns are
    equal and :math:`\mu` has opposite signs on them; chapter 4, ``prop-prompt-limits``). The realised
    posteriors of this HMM avoid that edge (each is a sharp peak plus a floor), and there a prompt,
    whose normalisation makes it non-linear in :math:`p`, does separate the twins (chapter 4).
    Returns ``(hmm, mu)``.
    """
    if not isinstance(noise, (int, float)) or not 0 <= noise < 1:
        raise ValueError(f"noise must be a probability in [0, 1); got {noise!r}.")
    f64 = torch.float64
    K = 4
    A = torch.full((K, K), noise / K, dtype=f64)
    for a, b in ((0, 2), (2, 0), (1, 3), (3, 1)):  # two 2-cycles, 0 <-> 2 and 1 <-> 3
        A[b, a] += 1 - noise
    W = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5]], dtype=f64)
    hmm = HMM(torch.full((K,), 1.0 / K, dtype=f64), A, W)
    return hmm, torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=f64)
