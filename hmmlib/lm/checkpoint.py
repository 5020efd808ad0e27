"""Checkpoints: written atomically (temp file + rename), read with ``torch.load(weights_only=True)``.

A checkpoint is a plain dictionary of tensors, numbers, strings and nested dicts, so it
loads without unpickling arbitrary objects. Anything that is not such a file, or lacks the
expected keys, raises ``ValueError``.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["save_checkpoint", "load_checkpoint", "FORMAT"]

FORMAT = "hmmlib-checkpoint-v1"


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus a format tag) to ``path`` atomically: a crash mid-write never
    leaves a truncated file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, required: tuple[str, ...] = (), map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        ValueError: the file is missing, truncated, not a torch file, not an hmmlib
            checkpoint, or lacks one of the ``required`` keys.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no checkpoint at {path}; train a model first or check the path.")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, pickle of foreign objects, random bytes ...
        raise ValueError(
            f"{path} is not a readable hmmlib checkpoint ({type(e).__name__}: {str(e)[:200]}). "
            "It may be truncated or corrupt: delete it and retrain (the model cache does this for you)."
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is a torch file but not an hmmlib checkpoint (expected format {FORMAT!r}).")
    missing = [k for k in required if k not in data]
    if missing:
        raise ValueError(f"checkpoint {path} lacks {missing}; it was written by another version or another tool.")
    return data
