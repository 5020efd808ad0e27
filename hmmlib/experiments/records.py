"""Result records of the reproduction pipeline: one JSON line per finished job, checked against a schema.

A record holds the metrics of one (figure, size, seed, method) cell, the full configs and seeds that
produced it, and where and with what it ran. Files are append-only JSON lines
(``results/<preset>/<figure>.jsonl``); a line cut short by a killed run is dropped when the file is
next opened, and a finished grid is rewritten sorted by job id (:func:`compact`), so a run killed
halfway and restarted ends with the same file as an uninterrupted one, up to the fields in
:data:`VOLATILE` (wall times, host).
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["SCHEMA_VERSION", "RECORD_SCHEMA", "VOLATILE", "ACCURACY_METRICS", "FIGURE_METRICS", "register_figure_metrics",
           "validate_record", "append_record", "load_records", "compact", "versions", "stable_view"]

SCHEMA_VERSION = 1

#: The metrics every record of an accuracy figure (fig-b1, fig-b3, ideal) carries.
ACCURACY_METRICS = ("test_accuracy", "val_accuracy", "train_accuracy", "majority_rate", "pos0_tv",
                    "trainable_parameters", "total_parameters", "extra")

#: figure -> the metric fields its records must carry. A figure defined outside ``jobs.py`` registers
#: its own with :func:`register_figure_metrics` (through :func:`hmmlib.experiments.jobs.register_figure`).
FIGURE_METRICS: dict[str, tuple[str, ...]] = {f: ACCURACY_METRICS for f in ("fig-b1", "fig-b3", "ideal")}


def register_figure_metrics(figure: str, required: tuple[str, ...]) -> None:
    """Declare that records of ``figure`` must carry the metric fields ``required``."""
    if not isinstance(figure, str) or not figure:
        raise ValueError(f"figure must be a non-empty string; got {figure!r}.")
    FIGURE_METRICS[figure] = tuple(required)

_NUM = ["number"]
_ACC = {"type": "number", "minimum": 0.0, "maximum": 1.0}
_OPT_NUM = {"type": ["number", "null"]}

#: A JSON-schema-like description of a record (``type``, ``required``, ``properties``, ``minimum``,
#: ``maximum``, ``enum``), checked by :func:`validate_record` (no third-party validator needed).
RECORD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["schema", "id", "figure", "preset", "num_states", "seed", "method", "model", "metrics", "configs",
                 "seeds", "timing", "device", "host", "versions"],
    "properties": {
        "schema": {"type": "integer", "enum": [SCHEMA_VERSION]},
        "id": {"type": "string"},
        "figure": {"type": "string"},  # one of FIGURE_METRICS, checked in validate_record
        "preset": {"type": "string"},
        "num_states": {"type": "integer", "minimum": 1},
        "seed": {"type": "integer", "minimum": 0},
        "method": {"type": "string"},
        "model": {"type": "string", "enum": ["trained", "ideal"]},
        "metrics": {
            "type": "object",
            "required": [],  # per figure: FIGURE_METRICS, checked in validate_record
            "properties": {
                "test_accuracy": _ACC, "val_accuracy": {"type": ["number", "null"], "minimum": 0.0, "maximum": 1.0},
                "train_accuracy": _ACC, "majority_rate": {"type": "number", "minimum": 0.5, "maximum": 1.0},
                "pos0_tv": _OPT_NUM, "trainable_parameters": {"type": "integer", "minimum": 0},
                "total_parameters": {"type": "integer", "minimum": 0}, "extra": {"type": "object"},
            },
        },
        "configs": {"type": "object"},
        "seeds": {"type": "object", "required": ["hmm", "task"]},
        "timing": {"type": "object", "required": ["job_s"], "properties": {"job_s": {"type": "number", "minimum": 0}}},
        "device": {"type": "string"},
        "host": {"type": "string"},
        "versions": {"type": "object", "required": ["hmmlib", "git_commit", "torch", "python"]},
    },
}

#: Fields that legitimately differ between two runs of the same job (not compared by the tests).
VOLATILE = ("timing", "host")

_TYPES = {"object": dict, "string": str, "integer": int, "number": (int, float), "null": type(None),
          "array": list, "boolean": bool}


def _check(value: Any, schema: dict, where: str) -> None:
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else types
        ok = any(isinstance(value, _TYPES[t]) and not (isinstance(value, bool) and t in ("integer", "number"))
                 for t in names)
        if not ok:
            raise ValueError(f"record field {where} must be of type {'/'.join(names)}; got {value!r}.")
    if "enum" in schema and value not in schema["enum"]:
        raise ValueError(f"record field {where} must be one of {schema['enum']}; got {value!r}.")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value != value:
            raise ValueError(f"record field {where} is NaN; a record holds finite numbers (or null).")
        if "minimum" in schema and value < schema["minimum"]:
            raise ValueError(f"record field {where} must be >= {schema['minimum']}; got {value!r}.")
        if "maximum" in schema and value > schema["maximum"]:
            raise ValueError(f"record field {where} must be <= {schema['maximum']}; got {value!r}.")
    if isinstance(value, dict):
        missing = [k for k in schema.get("required", []) if k not in value]
        if missing:
            raise ValueError(f"record field {where} lacks {', '.join(missing)}; a record needs every field of RECORD_SCHEMA.")
        for k, sub in schema.get("properties", {}).items():
            if k in value:
                _check(value[k], sub, f"{where}.{k}")


def validate_record(record: Any) -> dict:
    """Check ``record`` against :data:`RECORD_SCHEMA` (and that it survives a JSON round trip);
    returns it, or raises ``ValueError`` naming the first field that is wrong."""
    _check(record, RECORD_SCHEMA, "record")
    fig = record["figure"]
    if fig not in FIGURE_METRICS:
        raise ValueError(f"record field record.figure must be one of {sorted(FIGURE_METRICS)}; got {fig!r}.")
    missing = [k for k in FIGURE_METRICS[fig] if k not in record["metrics"]]
    if missing:
        raise ValueError(f"record field record.metrics lacks {', '.join(missing)}; a record of {fig} needs every "
                         f"field of FIGURE_METRICS[{fig!r}].")
    try:
        json.dumps(record, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"record is not plain JSON ({e}); convert tensors and numpy numbers with float()/int().") from None
    return record


def _repair(path: Path) -> None:
    """Drop a last line cut short by a killed writer (no trailing newline)."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        warnings.warn(f"{path}: dropping an incomplete last line ({len(data) - cut} bytes) left by an interrupted run.",
                      stacklevel=3)
        with open(path, "r+b") as f:
            f.truncate(cut)


def append_record(path: str | os.PathLike, record: dict) -> None:
    """Validate ``record`` and append it as one line, flushed to disk before returning."""
    validate_record(record)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        _repair(path)
    line = json.dumps(record, sort_keys=True, allow_nan=False) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def load_records(path: str | os.PathLike, *, validate: bool = True) -> list[dict]:
    """The records in ``path`` (``[]`` if it does not exist), sorted by id; an incomplete last
    line is ignored. If a job id occurs twice, the first record wins."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    elif lines:
        lines.pop()  # no trailing newline: the writer was killed mid-line
    out: dict[str, dict] = {}
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}, line {i + 1}, is not JSON ({e}); remove that line and rerun the grid.") from None
        if validate:
            try:
                validate_record(rec)
            except ValueError as e:
                raise ValueError(f"{path}, line {i + 1}: {e}") from None
        out.setdefault(rec["id"], rec)
    return [out[k] for k in sorted(out)]


def compact(path: str | os.PathLike) -> None:
    """Rewrite ``path`` with its records sorted by id, one per id (atomically: a new file then a rename)."""
    path = Path(path)
    recs = load_records(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r, sort_keys=True, allow_nan=False) + "\n" for r in recs), encoding="utf-8")
    os.replace(tmp, path)


def stable_view(record: dict) -> dict:
    """``record`` without the :data:`VOLATILE` fields: what two runs of the same job must agree on."""
    return {k: v for k, v in record.items() if k not in VOLATILE}


@lru_cache(maxsize=1)
def _git_commit() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        commit = out.stdout.strip() if out.returncode == 0 else ""
        if commit:
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "hmmlib"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def versions() -> dict[str, str]:
    """hmmlib's version and git commit (``-dirty`` when hmmlib has uncommitted changes), torch's and Python's."""
    import torch

    from .. import __version__

    return {"hmmlib": __version__, "git_commit": _git_commit(), "torch": torch.__version__,
            "python": platform.python_version(), "numpy": __import__("numpy").__version__,
            "platform": sys.platform}
