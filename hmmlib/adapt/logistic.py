r"""Head tuning on a frozen model, solved to convergence.

On a frozen model (the ideal one or a trained masked LM) the head's input :math:`f(x)` does not
change during training, so head tuning is binary logistic regression on fixed features, a convex
problem. This module solves it exactly (to a gradient norm of ``tol``) instead of running a fixed
number of AdamW steps:

.. math::

    J(w, c) = \frac1n\sum_{i=1}^n \Big[\log\big(1 + e^{z_i}\big) - y_i z_i\Big] + \frac{\lambda}{2}\lVert w\rVert_2^2,
    \qquad z_i = w^\top f(x_i) + c ,

with labels :math:`y_i\in\{0,1\}`, an unpenalised bias :math:`c` and the L2 penalty :math:`\lambda`
(``l2``). :math:`J` is strictly convex for :math:`\lambda>0` (even when the features sum to one,
as a distribution over symbols does: moving weight between :math:`w` and :math:`c` along
:math:`(t\mathbf 1, -t)` leaves the loss unchanged and strictly changes the penalty), so it has a
unique minimiser. We find it with Newton's method in float64,

.. math::

    \nabla J = \frac1n \tilde F^\top(\sigma(z) - y) + \lambda(w, 0),\qquad
    \nabla^2 J = \frac1n \tilde F^\top \operatorname{diag}(\sigma(z)(1-\sigma(z)))\tilde F + \lambda\,\mathrm{diag}(1,\dots,1,0),

with :math:`\tilde F = [F, \mathbf 1]`, and a backtracking (Armijo) line search, which converges
from any start. A two-class head ``nn.Linear(V, 2)`` with class-1 row :math:`w`, class-0 row 0 and
biases :math:`(0, c)` has exactly these logits' difference (:func:`as_linear_head`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["LogisticInfo", "logistic_objective", "fit_logistic_head", "as_linear_head", "load_into_head",
           "L2_GRID", "logistic_path", "fit_logistic_head_validated", "head_predictions", "head_accuracy",
           "DEFAULT_L2"]

#: The default L2 penalty :math:`\lambda` (per example: the loss is a mean). Small enough that the
#: penalty changes the ideal head's accuracy by less than the test set's resolution on the paper's
#: generator (measured in ``tests/test_logistic.py``), large enough that separable data still give a
#: finite minimiser.
DEFAULT_L2 = 1e-6


@dataclass(frozen=True)
class LogisticInfo:
    """How the solve went.

    Attributes:
        l2: the penalty :math:`\\lambda`; objective: :math:`J` at the solution; grad_norm: the
        Euclidean norm of :math:`\\nabla J` there; iterations: Newton steps taken; converged:
        ``grad_norm <= tol``; train_accuracy: the fitted head's accuracy on the training data.
    """

    l2: float
    objective: float
    grad_norm: float
    iterations: int
    converged: bool
    train_accuracy: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check(features: Any, y: Any, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    F = torch.as_tensor(features)
    if F.dim() != 2 or F.shape[0] == 0 or F.shape[1] == 0:
        raise ValueError(f"features must be a non-empty (num_examples, num_features) matrix; got shape {tuple(F.shape)}.")
    F = F.detach().to("cpu", torch.float64)
    if not torch.isfinite(F).all():
        raise ValueError("features has non-finite entries; compute them again (or drop those examples).")
    t = torch.as_tensor(y).detach().to("cpu").reshape(-1)
    if t.numel() != F.shape[0]:
        raise ValueError(f"y has {t.numel()} labels but features has {F.shape[0]} rows; pass one label per row.")
    if t.numel() and not ((t == 0) | (t == 1)).all():
        raise ValueError(f"y must hold labels 0 and 1 only; got values {sorted(set(t.tolist()))[:5]}.")
    if not isinstance(l2, (int, float)) or isinstance(l2, bool) or not math.isfinite(l2) or l2 <= 0:
        raise ValueError(f"l2 must be a finite number > 0 (it makes the minimiser unique and finite); got {l2!r}.")
    return F, t.to(torch.float64)


def logistic_objective(features: Any, y: Any, weight: Any, bias: Any, l2: float) -> float:
    r""":math:`J(w, c)` of the module docstring (mean log-loss plus :math:`\frac\lambda2\lVert w\rVert^2`), in float64."""
    F, t = _check(features, y, l2)
    w = torch.as_tensor(weight, dtype=torch.float64).reshape(-1)
    if w.numel() != F.shape[1]:
        raise ValueError(f"weight has {w.numel()} entries; the features have {F.shape[1]} columns.")
    z = F @ w + float(bias)
    return float((torch.nn.functional.softplus(z) - t * z).mean() + 0.5 * l2 * (w @ w))


def fit_logistic_head(features: Any, y: Any, l2: float = DEFAULT_L2, *, tol: float = 1e-10,
                      max_iter: int = 500, init: tuple[torch.Tensor, torch.Tensor] | None = None,
                      ) -> tuple[torch.Tensor, torch.Tensor, LogisticInfo]:
    r"""Minimise :math:`J(w, c)` (module docstring) by damped Newton steps in float64.

    Args:
        features: ``(n, V)`` fixed features, e.g. :math:`G(x)` or a frozen model's softmax at the mask.
        y: ``(n,)`` labels in {0, 1}, both present (``ValueError`` otherwise: with one class no finite
            minimiser exists).
        l2: the penalty :math:`\lambda > 0` on :math:`w` (not on the bias).
        tol: stop when :math:`\lVert\nabla J\rVert_2 \le` ``tol``.
        max_iter: at most this many Newton steps.
        init: a starting point ``(weight, bias)`` (e.g. the solution at a neighbouring ``l2``); default 0.
            The minimiser is unique, so the start changes only the number of steps.

    Returns:
        ``(weight (V,), bias (), info)`` in float64; the prediction is :math:`\mathbb 1[w^\top f + c > 0]`.
    """
    F, t = _check(features, y, l2)
    if torch.unique(t).numel() < 2:
        raise ValueError(f"every one of the {t.numel()} labels is {int(t[0])}: with one class the logistic loss has "
                         "no finite minimiser (the unpenalised bias runs to infinity). Pass labels of both classes "
                         "0 and 1.")
    n, V = F.shape
    Ft = torch.cat([F, torch.ones(n, 1, dtype=torch.float64)], 1)
    reg = torch.full((V + 1,), float(l2), dtype=torch.float64)
    reg[-1] = 0.0
    theta = torch.zeros(V + 1, dtype=torch.float64)
    if init is not None:
        theta[:V] = torch.as_tensor(init[0], dtype=torch.float64).reshape(-1)
        theta[V] = float(init[1])

    def objective(th: torch.Tensor) -> float:
        z = Ft @ th
        return float((torch.nn.functional.softplus(z) - t * z).mean() + 0.5 * (reg * th * th).sum())

    value, it, gnorm = objective(theta), 0, float("inf")
    for it in range(max_iter + 1):
        z = Ft @ theta
        s = torch.sigmoid(z)
        grad = Ft.T @ (s - t) / n + reg * theta
        gnorm = float(grad.norm())
        if gnorm <= tol or it == max_iter:
            break
        H = (Ft.T * (s * (1 - s))) @ Ft / n + torch.diag(reg)
        try:
            step = torch.linalg.solve(H, grad)
        except RuntimeError:  # numerically singular (vanishing curvature): least squares
            step = torch.linalg.lstsq(H, grad[:, None], driver="gelsd").solution[:, 0]
        slope = float(grad @ step)
        if slope <= 0:  # not a descent direction in floating point: fall back to the gradient
            step, slope = grad, float(grad @ grad)
        a = 1.0
        while a > 1e-16:
            cand = theta - a * step
            v = objective(cand)
            if v <= value - 1e-4 * a * slope:
                break
            a *= 0.5
        else:
            break  # no decrease possible at this precision: we are at the minimum to rounding
        theta, value = cand, v
    w, c = theta[:V].clone(), theta[V].clone()
    acc = float((((F @ w + c) > 0).to(torch.float64) == t).to(torch.float64).mean())
    return w, c, LogisticInfo(float(l2), value, gnorm, it, gnorm <= tol, acc)


#: Penalties tried by :func:`fit_logistic_head_validated`, largest first.
L2_GRID: tuple[float, ...] = tuple(10.0 ** -k for k in range(2, 13))


def head_predictions(features: Any, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    r"""The converged head's labels :math:`\mathbb 1[w^\top f + c > 0]` (long, on the CPU), in float64."""
    F = torch.as_tensor(features).detach().to("cpu", torch.float64)
    return ((F @ weight + bias) > 0).long()


def head_accuracy(features: Any, y: Any, weight: torch.Tensor, bias: torch.Tensor) -> float:
    """Fraction of ``y`` that :func:`head_predictions` gets right."""
    y = torch.as_tensor(y).detach().to("cpu").reshape(-1)
    return float((head_predictions(features, weight, bias) == y).double().mean())


def logistic_path(features: Any, y: Any, *, l2_grid: tuple[float, ...] = L2_GRID, tol: float = 1e-10,
                  max_iter: int = 500) -> list[tuple[float, torch.Tensor, torch.Tensor, LogisticInfo]]:
    r"""The converged head at each penalty of ``l2_grid``, largest first, each solve started from the
    previous solution (a warm-started regularisation path): ``[(l2, weight, bias, info), ...]``."""
    grid = sorted({float(v) for v in l2_grid}, reverse=True)
    if not grid:
        raise ValueError("l2_grid must hold at least one penalty > 0.")
    out, start = [], None
    for l2 in grid:
        w, c, info = fit_logistic_head(features, y, l2, tol=tol, max_iter=max_iter, init=start)
        start = (w, c)
        out.append((l2, w, c, info))
    return out


def fit_logistic_head_validated(features: Any, y: Any, val_features: Any, val_y: Any, *,
                                l2_grid: tuple[float, ...] = L2_GRID, tol: float = 1e-10,
                                max_iter: int = 500) -> tuple[torch.Tensor, torch.Tensor, LogisticInfo, dict[float, float]]:
    r"""The converged head at each penalty of ``l2_grid`` (:func:`logistic_path`), keeping the one with
    the best validation accuracy (ties: the larger penalty).

    The scale of a good :math:`\lambda` depends on how far apart the features are (on the paper's
    generator :math:`G(x)` varies by little, and :math:`\lambda = 10^{-4}` can leave the head below the
    majority rate where :math:`10^{-8}` reaches 0.99), so it is chosen on held-out data, never on the test split.

    Returns:
        ``(weight, bias, info, val_accuracy_by_l2)``; ``info.l2`` is the chosen penalty.
    """
    best, path = None, {}
    for l2, w, c, info in logistic_path(features, y, l2_grid=l2_grid, tol=tol, max_iter=max_iter):
        acc = head_accuracy(val_features, val_y, w, c)
        path[l2] = acc
        if best is None or acc > best[3]:
            best = (w, c, info, acc)
    return best[0], best[1], best[2], path


def as_linear_head(weight: torch.Tensor, bias: torch.Tensor, *, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> nn.Linear:
    """The two-class head ``nn.Linear(V, 2)`` whose logit difference (class 1 minus class 0) is
    ``weight @ f + bias``: class-1 row ``weight``, class-0 row 0, biases ``(0, bias)``."""
    w = torch.as_tensor(weight).reshape(-1)
    return load_into_head(nn.Linear(w.numel(), 2).to(device=device, dtype=dtype), w, bias)


def load_into_head(head: nn.Linear, weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    """Copy a solution of :func:`fit_logistic_head` into an existing ``nn.Linear(V, 2)`` (in place)."""
    w = torch.as_tensor(weight).reshape(-1)
    if tuple(head.weight.shape) != (2, w.numel()):
        raise ValueError(f"head must be nn.Linear({w.numel()}, 2); got weight shape {tuple(head.weight.shape)}.")
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.weight[1] = w.to(head.weight)
        head.bias[1] = torch.as_tensor(bias).to(head.bias)
    return head
