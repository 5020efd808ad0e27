"""The compute device, picked once, and checked wherever one is asked for.

:func:`resolve_device` is what every function with a ``device=`` argument calls: ``None`` means
:func:`default_device`; an explicit device must exist on this machine. Asking for CUDA where
``torch.cuda.is_available()`` is False raises a ``ValueError`` that says to use ``device='cpu'`` (or
``HMMBOOK_DEVICE=cpu``), instead of an ``AssertionError`` from inside torch.
"""
from __future__ import annotations

import os
from functools import lru_cache

import torch

from .. import _validate as check

__all__ = ["default_device", "resolve_device", "DEVICE_ENV"]

DEVICE_ENV = "HMMBOOK_DEVICE"


@lru_cache(maxsize=1)
def default_device() -> torch.device:
    """CUDA if available, else CPU; override with ``HMMBOOK_DEVICE=cpu`` (or ``cuda:1``), which must name a
    device this machine has (:func:`hmmlib._validate.device`)."""
    name = os.environ.get(DEVICE_ENV)
    if name:
        return check.device(name, DEVICE_ENV)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: torch.device | str | None = None) -> torch.device:
    """``device`` as a checked ``torch.device``, or :func:`default_device` when it is ``None``."""
    return default_device() if device is None else check.device(device)
