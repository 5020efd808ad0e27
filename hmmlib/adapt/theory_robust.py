r"""Robust (margin) versions of the head and prompt theorems, and the measurements that test them.

The exact theorems of :mod:`hmmlib.adapt.theory` need equalities that the paper's HMMs never satisfy
(a reweighting exactly zero off the task's support, :math:`(Ru)\odot W^\top b = \mu` exactly). Here:

* :func:`effective_reweighting`: the prompt's reweighting *of the label's posterior*
  :math:`p = P(H_0\mid x)` under :math:`\pi` (no stationarity needed):
  :math:`P(H_0\mid z,x)\propto v'\odot p` with :math:`v' = (Ru)\odot m_0\oslash\pi`, :math:`m_0 = A^k\pi`;
* :func:`sparse_prompt_conditions`: the best one-token prompt for the *approximate* sparse corollary
  (a linear program), its leak :math:`c = \max_{h\notin S} v'_h|(W^\top b)_h|`, and the guarantee
  "correct wherever :math:`|\mu^\top p(x)| > c\,P(H_0\notin S\mid x)`";
* :func:`perceptron` and :func:`head_sample_bound`: the margin-based sample complexity of a head,
  :math:`\mathbb E[\text{error}] \le \|\mu\|^2/(\gamma^2\sigma_{\min}^2(n+1))`;
* :func:`shortcut_posterior_h0`: the original code's :math:`A^\top P(H_1\mid x)` (not Bayes' rule);
* :func:`nearest_neighbour_accuracy`: leave-one-out 1-NN accuracy, a measurement of how much of the
  label a representation (``G`` or ``p``) still carries on *realised* inputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..hmm.model import HMM
from ..hmm.inference import posterior_marginals
from .theory import _check_hmm, _prompt, prompt_prior_h0, prompt_reweighting

__all__ = [
    "effective_reweighting",
    "SparsePromptConditions",
    "sparse_prompt_conditions",
    "perceptron",
    "head_sample_bound",
    "shortcut_posterior_h0",
    "nearest_neighbour_accuracy",
    "linearly_separable",
    "binomial_se",
]


def binomial_se(rate: float, n: int) -> float:
    r"""Standard error :math:`\sqrt{r(1-r)/n}` of a rate measured on ``n`` independent examples
    (floored at :math:`1/(2n)` so that a measured 0 or 1 still has a non-zero margin)."""
    if not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"n must be a positive number of examples; got {n!r}.")
    if not 0.0 <= float(rate) <= 1.0:
        raise ValueError(f"rate must be in [0, 1]; got {rate!r}.")
    return max(float(np.sqrt(rate * (1 - rate) / n)), 0.5 / n)


def effective_reweighting(hmm: HMM, u: Any) -> torch.Tensor:
    r"""The reweighting :math:`v'` with :math:`P(H_0\mid z, x) = (v'\odot p)/(v'^\top p)` for the label's
    posterior :math:`p = P(H_0\mid x)` under the HMM's own :math:`\pi` (what the datasets store).

    :math:`v' = v\odot m_0\oslash\pi` with :math:`v` = :func:`~hmmlib.adapt.theory.prompt_reweighting`
    and :math:`m_0 = A^k\pi` (:func:`~hmmlib.adapt.theory.prompt_prior_h0`): behind a prompt,
    :math:`H_0` has prior :math:`m_0`, and :math:`P(H_0 = h\mid x)` under :math:`m_0` is proportional to
    :math:`m_{0,h}/\pi_h` times the one under :math:`\pi`. Equals :math:`v` when :math:`A\pi = \pi`.
    Raises ``ValueError`` if some :math:`\pi_h = 0`.
    """
    _check_hmm(hmm)
    U = _prompt(hmm, u)
    if (hmm.pi <= 0).any():
        raise ValueError("pi has a zero entry, so P(H_0 | x) under pi cannot be reweighted into the prompted "
                         "posterior; use an HMM with a positive start distribution.")
    return prompt_reweighting(hmm, U) * prompt_prior_h0(hmm, U.shape[0]) / hmm.pi


@dataclass(frozen=True)
class SparsePromptConditions:
    r"""The conditions of the sparse corollary, exact and approximate, for one HMM and task.

    Attributes:
        support: :math:`S = \operatorname{supp}\mu`.
        sigma_min_support: :math:`\sigma_{\min}(W_{:,S})` (condition (a) iff ``> 0``).
        exact_b: condition (b) holds exactly: some one-token :math:`u\ge0` has :math:`v'` zero off :math:`S`
            and positive on it (the linear program's optimum :math:`\eta` is 0 up to ``tol``).
        eta: the smallest :math:`\max_{h\notin S} v'_h` over one-token prompts with
            :math:`\min_{h\in S} v'_h = 1` (a linear program); 0 iff ``exact_b``.
        u: the optimal fake token; v: its :math:`v'` (``(K,)``).
        b: the head solving :math:`W_{:,S}^\top b = \mu_S\oslash v'_S` (least squares).
        leak: :math:`c = \max_{h\notin S} v'_h\,|(W^\top b)_h|`, the size of the error term.
        leak_bound: :math:`\eta\,\|\mu_S\oslash v'_S\|_2/\sigma_{\min}(W_{:,S})`, which bounds ``leak``.
        head_residual: :math:`\max_{h\in S}|v'_h(W^\top b)_h - \mu_h|` (0 when (a) holds).
        r_row_max: :math:`\min_h\max_{h'}R_{h,h'}`: 1 iff the reversed chain is a permutation.
    """

    support: list[int]
    sigma_min_support: float
    exact_b: bool
    eta: float
    u: torch.Tensor
    v: torch.Tensor
    b: torch.Tensor
    leak: float
    leak_bound: float
    head_residual: float
    r_row_max: float

    def guaranteed(self, posterior: torch.Tensor, mu: Any) -> torch.Tensor:
        r"""Bool ``(N,)``: where the approximate corollary guarantees the constructed prompt and head:
        :math:`|\mu^\top p(x)| > c\,P(H_0\notin S\mid x) + r` (``r`` = ``head_residual``)."""
        mu = torch.as_tensor(mu, dtype=posterior.dtype)
        off = 1.0 - posterior[:, self.support].sum(1)
        return (posterior @ mu).abs() > self.leak * off + self.head_residual


def sparse_prompt_conditions(hmm: HMM, mu: Any, tol: float = 1e-9) -> SparsePromptConditions:
    r"""Which conditions of the sparse corollary hold for ``hmm`` and ``mu``, and with what constants.

    The one-token prompt minimises :math:`\eta = \max_{h\notin S}v'_h` subject to :math:`v'_h\ge 1` on
    :math:`S` and :math:`u\ge0`, with :math:`v' = D R u` linear in :math:`u`
    (:math:`D = \operatorname{diag}(A\pi\oslash\pi)`); solved with ``scipy.optimize.linprog`` (HiGHS).
    """
    from scipy.optimize import linprog

    from .theory import nondegeneracy, reverse_transition

    _check_hmm(hmm)
    K = hmm.num_states
    mu = torch.as_tensor(mu, dtype=torch.float64).reshape(-1)
    if mu.numel() != K or not torch.isfinite(mu).all():
        raise ValueError(f"mu must be a finite vector of num_states={K} entries; got shape {tuple(mu.shape)}.")
    S = [int(h) for h in torch.nonzero(mu).reshape(-1)]
    off = [h for h in range(K) if h not in S]
    if not S:
        raise ValueError("mu is all zero: the task has no support.")
    R = reverse_transition(hmm).to(torch.float64)
    D = (prompt_prior_h0(hmm, 1) / hmm.pi).to(torch.float64)
    M = (D[:, None] * R).numpy()                              # v' = M u
    # variables (u_1..u_K, eta): minimise eta s.t. M_off u <= eta, M_S u >= 1, u >= 0, eta >= 0
    c = np.r_[np.zeros(K), 1.0]
    A_ub = np.vstack([np.c_[M[off], -np.ones(len(off))], np.c_[-M[S], np.zeros(len(S))]]) if off else \
        np.c_[-M[S], np.zeros(len(S))]
    b_ub = np.r_[np.zeros(len(off)), -np.ones(len(S))]
    res = linprog(c, A_ub=A_ub, b_ub=b_ub, bounds=[(0, None)] * (K + 1), method="highs")
    if res.status != 0:
        raise ValueError(f"the linear program for the prompt failed ({res.message}); the support of mu may be "
                         "unreachable by any prompt (a state with probability 0 under A pi).")
    u = torch.as_tensor(res.x[:K], dtype=torch.float64).clamp_min(0)
    v = torch.as_tensor(M @ u.numpy(), dtype=torch.float64)
    eta = float(v[off].max()) if off else 0.0
    W = hmm.W.to(torch.float64)
    target = mu[S] / v[S]
    b = torch.linalg.lstsq(W[:, S].T, target.unsqueeze(1), driver="gelsd").solution.squeeze(1)
    wb = W.T @ b
    leak = float((v[off] * wb[off].abs()).max()) if off else 0.0
    smin = nondegeneracy(W, support=S).sigma_min
    leak_bound = eta * float(target.norm()) / smin if smin > 0 else float("inf")
    return SparsePromptConditions(S, smin, eta <= tol, eta, u, v, b, leak, leak_bound,
                                  float((v[S] * wb[S] - mu[S]).abs().max()), float(R.max(1).values.min()))


# --------------------------------------------------------------------------- head: sample complexity
def perceptron(G: Any, y: Any, max_epochs: int = 1000) -> tuple[torch.Tensor, int, bool]:
    r"""The perceptron on features ``G`` ``(N, V)`` and labels ``y`` in {0, 1}, no bias, cycling through the
    examples in order until an epoch makes no mistake (or ``max_epochs``).

    Predicts :math:`\mathbb 1[w^\top G > 0]`; on a mistake :math:`w \leftarrow w + (2y-1)G`. Returns
    ``(w, mistakes, converged)``. Novikoff: if some :math:`b` has :math:`(2y-1)b^\top G\ge\gamma` and
    :math:`\|G\|\le 1`, it makes at most :math:`\|b\|^2/\gamma^2` mistakes.
    """
    G = torch.as_tensor(G, dtype=torch.float64)
    s = 2 * torch.as_tensor(y).reshape(-1).to(torch.float64) - 1
    if G.dim() != 2 or G.shape[0] != s.numel() or G.shape[0] == 0:
        raise ValueError(f"G must have shape (N, V) and y shape (N,) with N >= 1; got {tuple(G.shape)}, {tuple(s.shape)}.")
    if not isinstance(max_epochs, int) or max_epochs < 1:
        raise ValueError(f"max_epochs must be a positive int; got {max_epochs!r}.")
    Gn, sn = G.numpy(), s.numpy()
    w = np.zeros(G.shape[1])
    mistakes = 0
    for _ in range(max_epochs):
        clean = True
        for g, si in zip(Gn, sn):
            if si * (w @ g) <= 0:
                w += si * g
                mistakes += 1
                clean = False
        if clean:
            return torch.as_tensor(w), mistakes, True
    return torch.as_tensor(w), mistakes, False


def head_sample_bound(mu: Any, sigma_min: float, gamma: float, num_examples: int) -> float:
    r"""The bound :math:`\|\mu\|_2^2/(\gamma^2\sigma_{\min}^2(n+1))` on the expected test error of the
    perceptron trained on :math:`n` examples of margin at least :math:`\gamma` (chapter 3)."""
    if not (sigma_min > 0 and gamma > 0) or num_examples < 0:
        raise ValueError(f"need sigma_min > 0, gamma > 0 and num_examples >= 0; got {sigma_min}, {gamma}, {num_examples}.")
    mu = torch.as_tensor(mu, dtype=torch.float64)
    return float(mu.norm() ** 2) / (gamma**2 * sigma_min**2 * (num_examples + 1))


# --------------------------------------------------------------------------- labels: the shortcut
def shortcut_posterior_h0(hmm: HMM, x: Any) -> torch.Tensor:
    r"""The original code's :math:`A^\top P(H_1\mid x_{1:T})`, with :math:`P(H_1\mid x)` computed as if
    :math:`H_1\sim\pi` (shape ``(B, K)``). It equals Bayes' rule :func:`hmmlib.posterior_h0` when
    :math:`A\pi = \pi` and :math:`\pi_{h'} = \pi_h` wherever :math:`A_{h',h} > 0`; not in general."""
    _check_hmm(hmm)
    return posterior_marginals(hmm, x)[:, 0] @ hmm.A


# --------------------------------------------------------------------------- realised posteriors
def nearest_neighbour_accuracy(features: Any, y: Any) -> float:
    r"""Leave-one-out accuracy of the 1-nearest-neighbour rule (Euclidean) on ``features`` ``(N, d)``.

    A measurement of how much of the label a representation keeps on the realised inputs: if the
    label is a function of the features that changes only across well-separated regions, it is near 1;
    when inputs of opposite labels share (nearly) the same features it falls. By Cover and Hart (1967)
    its error :math:`R_{NN}` tends, as :math:`N\to\infty`, to at most :math:`2R^\star(1-R^\star)`, so
    :math:`R^\star \ge (1-\sqrt{1-2R_{NN}})/2` asymptotically, where :math:`R^\star` is the error of the
    best function of the features (any head).
    """
    X = torch.as_tensor(features, dtype=torch.float64)
    y = torch.as_tensor(y).reshape(-1)
    if X.dim() != 2 or X.shape[0] != y.numel() or X.shape[0] < 2:
        raise ValueError(f"features must be (N, d) with N >= 2 and y (N,); got {tuple(X.shape)}, {tuple(y.shape)}.")
    d = torch.cdist(X, X)
    d.fill_diagonal_(float("inf"))
    return float((y[d.argmin(1)] == y).double().mean())


def linearly_separable(features: Any, y: Any) -> bool:
    r"""Whether some :math:`b` has :math:`(2y_i - 1)\,b^\top f_i\ge 1` for every example (a linear program).

    For features that sum to 1 (``G`` or ``p``) a bias is implicit, so this is "some linear head is right
    on every example". Infeasibility is decided by HiGHS to its tolerances (about 1e-7): use it on examples
    whose labels have a clear margin, where a separating head does not need huge weights.
    """
    from scipy.optimize import linprog

    X = torch.as_tensor(features, dtype=torch.float64)
    s = 2 * torch.as_tensor(y).reshape(-1).to(torch.float64) - 1
    if X.dim() != 2 or X.shape[0] != s.numel() or X.shape[0] == 0:
        raise ValueError(f"features must be (N, d) with N >= 1 and y (N,); got {tuple(X.shape)}, {tuple(s.shape)}.")
    A_ub = -(s[:, None] * X).numpy()
    res = linprog(np.zeros(X.shape[1]), A_ub=A_ub, b_ub=-np.ones(X.shape[0]), bounds=[(None, None)] * X.shape[1],
                  method="highs")
    if res.status not in (0, 2):
        raise ValueError(f"the separability linear program did not finish ({res.message}).")
    return res.status == 0
