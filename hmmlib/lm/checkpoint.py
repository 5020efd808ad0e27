"""Checkpoints: written atomically (temp file + rename), read with ``torch.load(weights_only=True)``, and
verified against a SHA-256 checksum of their contents.

A checkpoint is a plain dictionary of tensors, numbers, strings and nested dicts, so it
loads without unpickling arbitrary objects. Anything that is not such a file, or lacks the
expected keys, raises ``ValueError``.

**Checksum.** :func:`save_checkpoint` stores, under the key ``"sha256"``, the SHA-256 of everything else in
the file (:func:`content_digest`: every tensor's dtype, shape and bytes, every number and string, in a
canonical order), and :func:`load_checkpoint` recomputes it: a flipped bit on disk, an interrupted copy or a
file edited behind hmmlib's back gives a ``ValueError`` that says the file is corrupt, where torch's own
reader would load it silently (it does not check the zip members' CRCs).

**Older files.** Checkpoints written before the checksum existed (format ``hmmlib-checkpoint-v1``) cannot be
verified. :func:`load_checkpoint` still loads them, with a ``UserWarning`` that they are unverified (re-saving
one adds the checksum); with ``require_checksum=True`` (what the model cache uses) they are refused, so the
cache retrains them instead of serving an unverified model.

**Orphaned temporary files.** A save writes ``<name>.<8 random characters>.tmp`` next to its target and
renames it; a process killed mid-write leaves that temporary file behind. Every save (and every call of the
model cache) removes such files in the same folder once they are older than :data:`TEMP_MAX_AGE_S`
(30 minutes): a save still in progress rewrites its file continuously, so it is never that old, and a
leftover is gone at the next save after half an hour (:func:`remove_stale_temp_files`).
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = ["save_checkpoint", "load_checkpoint", "content_digest", "remove_stale_temp_files", "atomic_write",
           "FORMAT", "LEGACY_FORMATS", "CHECKSUM_KEY", "TEMP_MAX_AGE_S"]

FORMAT = "hmmlib-checkpoint-v2"
#: Formats written by older versions of hmmlib: readable, but without a checksum.
LEGACY_FORMATS = ("hmmlib-checkpoint-v1",)
#: The key under which a checkpoint stores the SHA-256 of the rest of its contents.
CHECKSUM_KEY = "sha256"
#: Temporary files of a save older than this (seconds) are orphans of a killed process and are removed.
TEMP_MAX_AGE_S = 30 * 60

# tempfile.mkstemp's names: <prefix><8 characters of [a-z0-9_]><suffix>
_TEMP_NAME = re.compile(r"^.+\.[a-z0-9_]{8}\.tmp$")


# --------------------------------------------------------------------------- checksum
def _feed(h: "hashlib._Hash", v: Any) -> None:
    """Feed ``v`` to ``h`` in a canonical, type-tagged encoding (dict keys sorted)."""
    if isinstance(v, torch.Tensor):
        t = v.detach()
        if t.layout != torch.strided:
            t = t.to_dense()
        t = t.to("cpu").contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(v, dict):
        h.update(f"D{len(v)};".encode())
        for k in sorted(v, key=lambda k: (type(k).__name__, repr(k))):
            _feed(h, k)
            _feed(h, v[k])
    elif isinstance(v, (list, tuple)):
        h.update(f"L{len(v)};".encode())
        for x in v:
            _feed(h, x)
    else:  # None, bool, int, float (repr is exact), str, and the few other types weights_only allows
        r = repr(v)
        h.update(f"S{type(v).__name__}{len(r)};{r}".encode())


def content_digest(payload: dict[str, Any]) -> str:
    """SHA-256 (hex) of a checkpoint's contents, the key :data:`CHECKSUM_KEY` left out: the same for the
    dictionary that was saved and the one :func:`load_checkpoint` reads back (on any device)."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in payload.items() if k != CHECKSUM_KEY})
    return h.hexdigest()


# --------------------------------------------------------------------------- temporary files
def remove_stale_temp_files(folder: str | os.PathLike, max_age_s: float = TEMP_MAX_AGE_S) -> list[Path]:
    """Remove ``*.<8 characters>.tmp`` files (the temporary names of :func:`save_checkpoint` and
    :func:`atomic_write`) in ``folder`` last modified more than ``max_age_s`` seconds ago; returns them.

    Nothing else is touched, and a folder that does not exist or cannot be written is left alone.
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    now = time.time()
    for p in entries:
        if not _TEMP_NAME.match(p.name):
            continue
        try:
            if p.is_file() and now - p.stat().st_mtime > max_age_s:
                p.unlink()
                removed.append(p)
        except OSError:  # removed by someone else meanwhile, or not ours to remove
            pass
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> Path:
    """Call ``write(f)`` on a binary file opened at a unique temporary name next to ``path``, then rename it
    to ``path``: a crash mid-write never leaves a truncated file under the final name (the temporary file is
    removed on an exception; after a kill, by :func:`remove_stale_temp_files`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


# --------------------------------------------------------------------------- save and load
def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus a format tag and its checksum, :func:`content_digest`) to ``path`` atomically:
    a crash mid-write never leaves a truncated file under the final name.

    The keys ``"format"`` and :data:`CHECKSUM_KEY` are the file's own: a dictionary read by
    :func:`load_checkpoint` can be saved again as it is (its old tag and checksum are replaced)."""
    data = {"format": FORMAT, **{k: v for k, v in payload.items() if k not in ("format", CHECKSUM_KEY)}}
    data[CHECKSUM_KEY] = content_digest(data)
    return atomic_write(path, lambda f: torch.save(data, f))


def load_checkpoint(path: str | os.PathLike, required: tuple[str, ...] = (), map_location: Any = "cpu", *,
                    require_checksum: bool = False) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` and verify its checksum.

    Args:
        required: keys the checkpoint must hold.
        map_location: where its tensors go.
        require_checksum: refuse a file without a checksum (written by an older hmmlib) instead of
            loading it with a warning.

    Raises:
        ValueError: the file is missing, truncated, not a torch file, not an hmmlib checkpoint, corrupt
            (its contents do not match its checksum), unverifiable with ``require_checksum``, or lacks one
            of the ``required`` keys.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no checkpoint at {path}; train a model first or check the path.")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, pickle of foreign objects, random bytes ...
        msg = str(e).split("\n")[0][:160]  # torch's first line; its later advice (weights_only=False) is unsafe here
        raise ValueError(
            f"{path} is not a readable hmmlib checkpoint ({type(e).__name__}: {msg}). "
            "It may be truncated or corrupt: delete it and retrain (the model cache does this for you)."
        ) from None
    fmt = data.get("format") if isinstance(data, dict) else None
    if fmt == FORMAT:
        stored, actual = data.get(CHECKSUM_KEY), content_digest(data)
        if stored != actual:
            raise ValueError(
                f"{path} is corrupt: the SHA-256 of its contents is {actual[:16]}..., but the checkpoint records "
                f"{str(stored)[:16]}... (a damaged disk or copy, or a file edited after it was saved). "
                "Delete it and retrain (the model cache does this for you).")
    elif fmt in LEGACY_FORMATS:
        if require_checksum:
            raise ValueError(f"{path} was written by an older hmmlib ({fmt}) without a checksum, so it cannot be "
                             "verified; delete it and retrain.")
        warnings.warn(f"{path} was written by an older hmmlib ({fmt}) without a checksum: loaded unverified. "
                      "Save it again with hmmlib.save_checkpoint to add one.", UserWarning, stacklevel=2)
    else:
        raise ValueError(f"{path} is a torch file but not an hmmlib checkpoint (expected format {FORMAT!r}).")
    missing = [k for k in required if k not in data]
    if missing:
        raise ValueError(f"checkpoint {path} lacks {missing}; it was written by another version or another tool.")
    return data
