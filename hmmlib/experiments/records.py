"""Result records of the reproduction pipeline: one JSON line per finished job, checked against a schema.

A record holds the metrics of one (figure, size, seed, method) cell, the full configs and seeds that
produced it, a SHA-256 hash of them (``config_sha256``, :func:`config_digest`), and where and with what it
ran (``versions``: the git commit and whether the work tree was clean, library versions, torch's thread
count and CPU kernel level; ``device``: the device actually used). Files (``results/<preset>/<figure>.jsonl``)
cannot lose or hide records:

* one writer at a time (:func:`locked`, a file lock); appends are flushed lines, rewrites atomic
  (:func:`write_records`: a unique temporary file, then a rename);
* a last line without its newline is kept when it is a complete record, and only a last line that is
  not JSON counts as an interrupted write (dropped by the next append);
* :func:`load_records` refuses, naming the file and line, a record of another figure or preset than its
  file and two different records of one job (identical copies are read once);
* a finished grid is rewritten sorted by job id (:func:`compact`), so a run killed halfway and restarted
  ends with the same file as an uninterrupted one, up to the fields in :data:`VOLATILE` (wall times,
  host); a record is replaced only explicitly (:func:`replace_records`, ``reproduce --rerun``).

Records of schema 1 written before these fields existed stay valid: ``config_sha256`` and the new
``versions`` keys are optional.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import platform
import subprocess
import sys
import warnings
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["SCHEMA_VERSION", "RECORD_SCHEMA", "VOLATILE", "ACCURACY_METRICS", "FIGURE_METRICS", "register_figure_metrics",
           "validate_record", "append_record", "load_records", "write_records", "replace_records", "compact", "locked",
           "RecordsBusyError", "versions", "git_state", "GIT_STATE_ENV", "cpu_model", "config_digest", "stable_view"]

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
        "versions": {"type": "object", "required": ["hmmlib", "git_commit", "torch", "python"],
                     "properties": {"git_clean": {"type": ["boolean", "null"]}, "torch_threads": {"type": "integer"},
                                    "cpu_capability": {"type": "string"}, "cpu": {"type": "string"}}},
        "config_sha256": {"type": "string"},  # optional (records written before it existed lack it)
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


class RecordsBusyError(RuntimeError):
    """Another process holds the lock of a record file (:func:`locked`)."""


@contextmanager
def locked(path: str | os.PathLike) -> Iterator[Path]:
    """Hold the writer's lock of the record file ``path`` (an exclusive ``fcntl.flock`` on ``<path>.lock``).

    Only one pipeline at a time may append to or rewrite a record file; a second one gets a
    :class:`RecordsBusyError` at once instead of duplicating work or racing a rewrite. The lock file stays
    (removing it would let two writers lock two different files); it is ignored by git. Where ``fcntl`` is
    missing (Windows) no lock is taken.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover - Windows
        yield path
        return
    lock = path.with_name(path.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RecordsBusyError(f"{path} is being written by another pipeline (it holds {lock}); wait for it "
                                   f"to finish, or write elsewhere with --results.") from None
        yield path
    finally:
        os.close(fd)  # releases the lock


def _lines(path: Path) -> tuple[list[str], bool]:
    """The lines of ``path`` and whether its last line is an interrupted write: a last line without its
    newline that is not valid JSON (a complete record that only lacks the newline is kept)."""
    text = path.read_text(encoding="utf-8")
    if not text:
        return [], False
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
        return lines, False
    try:
        json.loads(lines[-1])
        return lines, False
    except json.JSONDecodeError:
        return lines[:-1], True


def _repair(path: Path) -> None:
    """Before appending: drop a last line cut short by a killed writer (no newline, not JSON), or add the
    newline a complete last record lacks."""
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    cut = data.rfind(b"\n") + 1
    try:
        json.loads(data[cut:].decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        warnings.warn(f"{path}: dropping an incomplete last line ({len(data) - cut} bytes) left by an interrupted run.",
                      stacklevel=3)
        with open(path, "r+b") as f:
            f.truncate(cut)
        return
    with open(path, "ab") as f:  # a complete record without its newline: keep it
        f.write(b"\n")


def append_record(path: str | os.PathLike, record: dict) -> None:
    """Validate ``record`` and append it as one line, flushed to disk before returning (the caller holds
    :func:`locked` when other writers may exist; :func:`hmmlib.experiments.pipeline.run` does)."""
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


def _expected(path: Path, figure: str | None, preset: str | None) -> tuple[str | None, str | None]:
    """The figure and preset a file's records must have: given, or read from ``<preset>/<figure>.jsonl``."""
    if figure is None and path.suffix == ".jsonl" and path.stem in FIGURE_METRICS:
        figure = path.stem
        preset = preset if preset is not None else path.parent.name
    return figure, preset


def load_records(path: str | os.PathLike, *, validate: bool = True, figure: str | None = None,
                 preset: str | None = None) -> list[dict]:
    """The records in ``path`` (``[]`` if it does not exist), sorted by id.

    Refused with a ``ValueError`` naming the file and line: a line that is not JSON (except an interrupted
    last write: a last line without newline that is not JSON, ignored here and dropped by the next
    append), a record that fails :func:`validate_record`, a record of another figure or preset than the
    file's (``figure``/``preset``, by default read from the path ``<preset>/<figure>.jsonl`` when its stem
    is a figure), and two records with the same id that differ outside :data:`VOLATILE` (naming both
    lines). Identical duplicates are read once.
    """
    path = Path(path)
    if not path.exists():
        return []
    if path.is_dir():
        raise ValueError(f"{path} is a folder; expected a record file (<results>/<preset>/<figure>.jsonl).")
    figure, preset = _expected(path, figure, preset)
    lines, _ = _lines(path)
    out: dict[str, tuple[int, dict]] = {}
    for i, line in enumerate(lines, 1):
        if not line.strip():
            raise ValueError(f"{path}, line {i}, is blank; remove that line (a record file has one JSON record "
                             f"per line).")
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}, line {i}, is not JSON ({e}); remove that line and rerun the grid.") from None
        if validate:
            try:
                validate_record(rec)
            except ValueError as e:
                raise ValueError(f"{path}, line {i}: {e}") from None
        elif not isinstance(rec, dict) or "id" not in rec:
            raise ValueError(f"{path}, line {i}, is not a record (a JSON object with an id).")
        for field, want in (("figure", figure), ("preset", preset)):
            if want is not None and rec.get(field) != want:
                raise ValueError(f"{path}, line {i}: record {rec.get('id')!r} has {field} {rec.get(field)!r}, but this "
                                 f"file holds {field} {want!r}; move the line to the file of its own figure and preset.")
        if rec["id"] in out:
            j, first = out[rec["id"]]
            if stable_view(first) != stable_view(rec):
                raise ValueError(f"{path}: lines {j} and {i} are two different records of job {rec['id']!r}; keep the "
                                 f"right one and delete the other (or delete both and rerun the job).")
            continue
        out[rec["id"]] = (i, rec)
    return [out[k][1] for k in sorted(out)]


def write_records(path: str | os.PathLike, records: list[dict]) -> None:
    """Replace ``path`` by ``records``, sorted by id, atomically: a uniquely named temporary file in the same
    folder, flushed to disk, then renamed over ``path`` (a reader sees the old file or the new one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recs = sorted(records, key=lambda r: r["id"])
    for r in recs:
        validate_record(r)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(json.dumps(r, sort_keys=True, allow_nan=False) + "\n" for r in recs))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def compact(path: str | os.PathLike) -> None:
    """Rewrite ``path`` with its records sorted by id, one per id (:func:`write_records`)."""
    write_records(path, load_records(path))


def replace_records(path: str | os.PathLike, records: list[dict]) -> list[str]:
    """Put ``records`` in ``path`` in place of the records with the same ids (appending the new ones);
    returns the ids replaced. The explicit way to overwrite a record (``reproduce --rerun``)."""
    have = {r["id"]: r for r in load_records(path)}
    replaced = sorted(r["id"] for r in records if r["id"] in have)
    have.update({r["id"]: r for r in records})
    write_records(path, list(have.values()))
    return replaced


def stable_view(record: dict) -> dict:
    """``record`` without the :data:`VOLATILE` fields: what two runs of the same job must agree on."""
    return {k: v for k, v in record.items() if k not in VOLATILE}


#: Environment variable through which :func:`hmmlib.experiments.pipeline.run` hands its git state to workers.
GIT_STATE_ENV = "HMMBOOK_GIT_STATE"


@lru_cache(maxsize=1)
def git_state() -> tuple[str, bool | None, tuple[str, ...]]:
    """``(commit, clean, changed)`` of the repository holding this hmmlib: the HEAD commit (``"unknown"``
    outside git), whether the work tree is clean, and the paths that are not (tracked changes and untracked
    files anywhere in the repository except ``results/``, which the pipeline itself writes). ``clean`` is
    ``None`` when git cannot tell. A pipeline passes its own state to its workers in
    :data:`GIT_STATE_ENV` (JSON), so that every record of a run names the tree the run started from."""
    env = os.environ.get(GIT_STATE_ENV)
    if env:
        commit, clean, changed = json.loads(env)
        return commit, clean, tuple(changed)
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        commit = out.stdout.strip() if out.returncode == 0 else ""
        if commit:
            st = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", ".", ":(exclude)results"],
                                capture_output=True, text=True, timeout=30)
            if st.returncode == 0:
                changed = tuple(line[3:] for line in st.stdout.splitlines() if line.strip())
                return commit, not changed, changed
            return commit, None, ()
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown", None, ()


def config_digest(record: dict) -> str:
    """sha256 of what determines a record's numbers: its id, full ``configs`` and ``seeds`` (canonical JSON)."""
    key = {"id": record["id"], "configs": record.get("configs"), "seeds": record.get("seeds")}
    return hashlib.sha256(json.dumps(key, sort_keys=True, allow_nan=False).encode()).hexdigest()


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`), ``""`` if unknown."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or ""


def versions() -> dict[str, Any]:
    """What the record was computed with: hmmlib's version, the git commit and whether the repository's work
    tree was clean (:func:`git_state`), torch's, numpy's and Python's versions, the platform, torch's
    intra-op thread count, the CPU model and torch's CPU kernel level (``torch.backends.cpu.get_cpu_capability()``:
    ``AVX512``, ``AVX2``, ...): float rounding depends on them, see :mod:`hmmlib.experiments.pipeline`."""
    import numpy
    import torch

    from .. import __version__

    commit, clean, _ = git_state()
    return {"hmmlib": __version__, "git_commit": commit, "git_clean": clean, "torch": torch.__version__,
            "python": platform.python_version(), "numpy": numpy.__version__, "platform": sys.platform,
            "torch_threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu": cpu_model()}
