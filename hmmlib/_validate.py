"""Shared argument checks (a private module of hmmlib; every layer may import it).

Each function raises a ``ValueError`` that names the argument, says what it got and what it needs.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
import torch

__all__ = ["positive_int", "non_negative_int", "seed", "finite_number", "one_of", "positive_ints", "positive_numbers",
           "device"]


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def positive_int(name: str, v: Any, *, allow_none: bool = False) -> None:
    """``v`` is an integer >= 1 (or ``None`` when ``allow_none``)."""
    if v is None and allow_none:
        return
    if not _is_int(v) or v < 1:
        extra = " or None" if allow_none else ""
        raise ValueError(f"{name} must be a positive integer{extra}; got {v!r}.")


def non_negative_int(name: str, v: Any) -> None:
    """``v`` is an integer >= 0."""
    if not _is_int(v) or v < 0:
        raise ValueError(f"{name} must be a non-negative integer; got {v!r}.")


def seed(v: Any, name: str = "seed") -> None:
    """``v`` is an integer seed (booleans and floats are refused)."""
    if not _is_int(v):
        raise ValueError(f"{name} must be an int; got {v!r}.")


def finite_number(name: str, v: Any, *, low: float | None = None, strict: bool = False,
                  high: float | None = None, high_strict: bool = False) -> None:
    """``v`` is a finite real number, ``> low`` (``strict``) or ``>= low``, and ``< high``/``<= high``."""
    ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)
    if ok and low is not None:
        ok = v > low if strict else v >= low
    if ok and high is not None:
        ok = v < high if high_strict else v <= high
    if not ok:
        lo = "" if low is None else f" {'>' if strict else '>='} {low:g}"
        hi = "" if high is None else f"{' and' if lo else ''} {'<' if high_strict else '<='} {high:g}"
        raise ValueError(f"{name} must be a finite number{lo}{hi}; got {v!r}.")


def one_of(name: str, v: Any, options: Iterable[Any]) -> None:
    """``v`` is one of ``options``."""
    options = tuple(options)
    if v not in options:
        raise ValueError(f"{name} must be one of {options}; got {v!r}.")


def positive_ints(**kw: Any) -> None:
    """:func:`positive_int` for each keyword."""
    for name, v in kw.items():
        positive_int(name, v)


def positive_numbers(**kw: Any) -> None:
    """Each keyword is a finite number > 0."""
    for name, v in kw.items():
        ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        if not (ok and math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive finite number; got {v!r}.")


def device(v: Any, name: str = "device") -> torch.device:
    """``v`` as a ``torch.device`` that this machine has: a name torch knows, and for ``cuda`` (or ``mps``) a
    build and a machine that provide it, so that asking for a GPU where there is none fails here, with a
    hint, instead of deep inside torch (or, worse, running on the CPU under a GPU's name)."""
    try:
        dev = v if isinstance(v, torch.device) else torch.device(v)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"{name}={v!r} is not a torch device ({e}); use e.g. 'cpu' or 'cuda'.") from None
    hint = "use device='cpu' (or set HMMBOOK_DEVICE=cpu) to run on the CPU"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}={v!r} asks for CUDA, but torch.cuda.is_available() is False here (no GPU, "
                             f"or a CPU-only torch build {torch.__version__}); {hint}.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{name}={v!r} asks for GPU {dev.index}, but this machine has "
                             f"{torch.cuda.device_count()} (cuda:0 .. cuda:{torch.cuda.device_count() - 1}); "
                             f"pick one of them, or {hint}.")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name}={v!r} asks for Apple's MPS, which this machine or torch build lacks; {hint}.")
    return dev
