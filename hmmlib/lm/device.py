"""The compute device, picked once."""
from __future__ import annotations

import os
from functools import lru_cache

import torch

__all__ = ["default_device", "DEVICE_ENV"]

DEVICE_ENV = "HMMBOOK_DEVICE"


@lru_cache(maxsize=1)
def default_device() -> torch.device:
    """CUDA if available, else CPU; override with ``HMMBOOK_DEVICE=cpu`` (or ``cuda:1``)."""
    name = os.environ.get(DEVICE_ENV)
    if name:
        try:
            return torch.device(name)
        except RuntimeError as e:
            raise ValueError(f"{DEVICE_ENV}={name!r} is not a torch device ({e}); use e.g. 'cpu' or 'cuda'.") from None
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
