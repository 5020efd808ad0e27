"""The hidden Markov model: parameters, validation, and conversions.

Conventions (the book's notation page, ``book/notation.md``)::

    pi[h]        = P(H_0 = h)                                 shape (K,)
    A[h_next, h] = P(H_{t+1} = h_next | H_t = h)               shape (K, K), columns sum to 1
    W[x, h]      = P(X_t = x | H_t = h)                        shape (V, K), columns sum to 1

so that ``A @ p`` propagates a distribution over states one step and ``W @ p``
turns a distribution over states into a distribution over tokens.
hmmlearn stores the transposes (row-stochastic ``transmat_`` and
``emissionprob_``); :func:`to_hmmlearn_params` and :meth:`HMM.from_hmmlearn_params`
are the only places that convert.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import _validate as check

__all__ = ["HMM", "ParamsMixin", "to_hmmlearn_params", "column_tolerance"]

_FLOAT_DTYPES = (torch.float32, torch.float64)


def column_tolerance(dtype: torch.dtype) -> float:
    """Largest accepted deviation of a column sum from 1 for a given dtype."""
    return 1e-9 if dtype == torch.float64 else 1e-5


def as_float_tensor(name: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        t = value
    elif isinstance(value, np.ndarray) and value.dtype in (np.float32, np.float64):
        t = torch.as_tensor(value)
    else:
        try:
            t = torch.as_tensor(np.asarray(value, dtype=np.float64))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name} must be an array of numbers; got {type(value).__name__} ({e}).") from e
    if not t.is_floating_point():
        t = t.to(torch.float64)
    if t.dtype not in _FLOAT_DTYPES:
        raise ValueError(
            f"{name} has dtype {t.dtype}; use float32 or float64 (e.g. {name}.to(torch.float32))."
        )
    return t


def check_distribution_columns(name: str, t: torch.Tensor, axis_name: str, tol: float) -> None:
    """Finite, non-negative, columns summing to 1 (for 1-D: the vector sums to 1)."""
    bad = ~torch.isfinite(t)
    if bad.any():
        idx = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"{name}{list(idx)} is {t[idx].item()}; all entries must be finite probabilities.")
    neg = t < 0
    if neg.any():
        idx = tuple(int(i) for i in neg.nonzero()[0])
        raise ValueError(
            f"{name}{list(idx)} = {t[idx].item():.3g} is negative; probabilities must be >= 0."
        )
    sums = t.sum(0)
    dev = (sums - 1).abs()
    if (dev > tol).any():
        if t.dim() == 1:
            raise ValueError(
                f"{name} sums to {sums.item():.12g}, not 1 (off by {dev.item():.2g}, tolerance {tol:g}); "
                f"normalise it: {name} / {name}.sum()."
            )
        j = int(dev.argmax())
        raise ValueError(
            f"column {j} of {name} sums to {sums[j].item():.12g}, not 1 (off by {dev[j].item():.2g}, tolerance {tol:g}); "
            f"{name} must be column-stochastic ({axis_name}); normalise with {name} / {name}.sum(0). "
            "If you have hmmlearn's row-stochastic matrix, use HMM.from_hmmlearn_params."
        )


class ParamsMixin:
    """The symbol count, dtype and device read off the parameters ``W`` and ``pi`` (of :class:`HMM` and
    :class:`hmmlib.memory.MemoryHMM`, whose tensors share one dtype and device)."""

    pi: torch.Tensor
    W: torch.Tensor

    @property
    def num_symbols(self) -> int:
        return self.W.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.pi.dtype

    @property
    def device(self) -> torch.device:
        return self.pi.device


@dataclass(frozen=True, eq=False)
class HMM(ParamsMixin):
    """A discrete HMM with column-stochastic parameters (see the module docstring).

    Attributes:
        pi: start distribution ``P(H_0 = h)``, shape ``(num_states,)``.
        A: transitions, ``A[h_next, h] = P(H_{t+1}=h_next | H_t=h)``, shape ``(num_states, num_states)``.
        W: emissions, ``W[x, h] = P(X_t = x | H_t = h)``, shape ``(num_symbols, num_states)``.

    All three share one dtype (float32 or float64) and one device. Construction
    validates shapes and that every column is a probability distribution, and
    raises ``ValueError`` otherwise.
    """

    pi: torch.Tensor
    A: torch.Tensor
    W: torch.Tensor

    def __post_init__(self) -> None:
        pi = as_float_tensor("pi", self.pi)
        A = as_float_tensor("A", self.A)
        W = as_float_tensor("W", self.W)
        if pi.dim() != 1 or pi.numel() == 0:
            raise ValueError(f"pi must be a non-empty vector of shape (num_states,); got shape {tuple(pi.shape)}.")
        K = pi.shape[0]
        if A.shape != (K, K):
            raise ValueError(
                f"A must have shape (num_states, num_states) = ({K}, {K}) to match pi; got {tuple(A.shape)}."
            )
        if W.dim() != 2 or W.shape[1] != K or W.shape[0] == 0:
            raise ValueError(
                f"W must have shape (num_symbols, num_states) = (V, {K}); got {tuple(W.shape)}. "
                "If you have hmmlearn's (num_states, num_symbols) emissionprob_, pass its transpose."
            )
        dtype = torch.promote_types(torch.promote_types(pi.dtype, A.dtype), W.dtype)
        # the tolerance follows the least precise input: float32 rounding survives a cast to float64
        tol = max(column_tolerance(t.dtype) for t in (pi, A, W))
        devices = {pi.device, A.device, W.device}
        if len(devices) > 1:
            raise ValueError(f"pi, A and W are on different devices {sorted(map(str, devices))}; move them to one.")
        pi, A, W = (t.to(dtype).contiguous() for t in (pi, A, W))
        check_distribution_columns("pi", pi, "", tol)
        check_distribution_columns("A", A, "A[h_next, h] = P(H_{t+1}=h_next | H_t=h)", tol)
        check_distribution_columns("W", W, "W[x, h] = P(X_t=x | H_t=h)", tol)
        object.__setattr__(self, "pi", pi)
        object.__setattr__(self, "A", A)
        object.__setattr__(self, "W", W)

    # -- basic properties -------------------------------------------------
    @property
    def num_states(self) -> int:
        return self.pi.shape[0]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "HMM":
        """A copy on another device and/or dtype (float32 or float64), values unchanged.

        The parameters were validated when this HMM was built, so the copy is not re-validated
        (float32 rounding would otherwise fail float64's tighter tolerance). A device this machine lacks
        (e.g. ``'cuda'`` without a GPU) raises ``ValueError``.
        """
        if device is not None:
            device = check.device(device)
        if dtype is not None and dtype not in _FLOAT_DTYPES:
            raise ValueError(f"dtype must be torch.float32 or torch.float64; got {dtype}.")
        kw = {"device": device, "dtype": dtype}
        return HMM.trusted(*(getattr(self, n).to(**kw) for n in ("pi", "A", "W")))

    @classmethod
    def trusted(cls, pi: torch.Tensor, A: torch.Tensor, W: torch.Tensor) -> "HMM":
        """An HMM from parameters that are already valid (a validated HMM's, moved or cast, or parts that
        are stochastic by construction), without re-validation. Anything else goes through ``HMM(pi, A, W)``."""
        hmm = object.__new__(cls)
        for name, t in (("pi", pi), ("A", A), ("W", W)):
            object.__setattr__(hmm, name, t.contiguous())
        return hmm

    def stationary(self) -> torch.Tensor:
        """A stationary distribution ``s`` with ``A s = s`` (eigenvector of eigenvalue 1)."""
        vals, vecs = torch.linalg.eig(self.A.double().cpu())
        j = int((vals - 1).abs().argmin())
        s = vecs[:, j].real.abs()
        return (s / s.sum()).to(self.dtype).to(self.device)

    def __repr__(self) -> str:
        return (
            f"HMM(num_states={self.num_states}, num_symbols={self.num_symbols}, "
            f"dtype={self.dtype}, device={self.device})"
        )

    # -- hmmlearn conversion ----------------------------------------------
    @classmethod
    def from_hmmlearn_params(cls, startprob: Any, transmat: Any, emissionprob: Any) -> "HMM":
        """Build from hmmlearn's row-stochastic ``startprob_``, ``transmat_`` (K,K), ``emissionprob_`` (K,V)."""
        A = as_float_tensor("transmat", transmat)
        W = as_float_tensor("emissionprob", emissionprob)
        if A.dim() != 2 or W.dim() != 2:
            raise ValueError("transmat and emissionprob must be 2-D (num_states x num_states, num_states x num_symbols).")
        return cls(as_float_tensor("startprob", startprob), A.T, W.T)

    @classmethod
    def from_hmmlearn(cls, model: Any) -> "HMM":
        """Build from a fitted ``hmmlearn.hmm.CategoricalHMM``."""
        return cls.from_hmmlearn_params(model.startprob_, model.transmat_, model.emissionprob_)

    def to_hmmlearn(self) -> Any:
        """An ``hmmlearn.hmm.CategoricalHMM`` with the same parameters (needs hmmlearn)."""
        from hmmlearn.hmm import CategoricalHMM

        startprob, transmat, emissionprob = to_hmmlearn_params(self)
        model = CategoricalHMM(n_components=self.num_states, n_features=self.num_symbols, init_params="", params="")
        model.startprob_, model.transmat_, model.emissionprob_ = startprob, transmat, emissionprob
        return model


def to_hmmlearn_params(hmm: HMM) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """hmmlearn's row-stochastic ``(startprob_, transmat_, emissionprob_)`` as float64 numpy arrays.

    ``transmat_ = A.T`` and ``emissionprob_ = W.T``. A float32 HMM is renormalised after the
    cast to float64, so the arrays are stochastic to float64 precision (as hmmlearn and
    :meth:`HMM.from_hmmlearn_params` expect); a float64 HMM is copied exactly.
    """
    pi, A, W = (t.detach().cpu().double().numpy() for t in (hmm.pi, hmm.A, hmm.W))
    if hmm.dtype != torch.float64:
        pi, A, W = pi / pi.sum(), A / A.sum(0), W / W.sum(0)
    return pi.copy(), np.ascontiguousarray(A.T), np.ascontiguousarray(W.T)
