r"""Grading outside the student's kernel: answers leave the kernel as data, verdicts are computed elsewhere.

The course assignments (``tools/make_assignments.py``) are graded by otter-grader. Otter runs a submission's
notebook in a Jupyter kernel and, by itself, would also run the tests in that kernel and read back the results
the kernel writes: a submission could then replace :mod:`hmmlib.checks` or otter's own classes and report full
marks. :class:`hmmlib.otter_plugin.HmmbookGrader` closes that door with this module:

1. after the student's last cell, one appended cell calls :func:`write_answers`: the values of the variables the
   tests read (and of the *probes*, expressions such as ``trained_count(7, 36, 1280, 800)`` that a hidden test
   evaluates on inputs the student never saw) are written to a JSON file as **plain data**: numbers, lists,
   tensors as nested lists, an :class:`~hmmlib.HMM` as its ``pi``, ``A``, ``W``;
2. the grading process (not the kernel) reads that file with :func:`read_answers`, rebuilds the objects with
   hmmlib's validating constructors, and runs every otter test case on them with :func:`run_tests`, importing a
   fresh :mod:`hmmlib.checks`.

What the kernel writes is only ever an *answer*: writing other numbers is answering differently, not forging a
verdict. Test functions name the answer variables as parameters (otter's exception-based format); a test that
needs a probe is decorated with :func:`probes`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

__all__ = ["Unsupported", "encode", "decode", "probes", "probes_of", "write_answers", "read_answers",
           "answer_names", "read_tests", "run_tests", "MAX_NUMBERS"]

#: The most numbers one answer may hold (larger answers are refused, not graded).
MAX_NUMBERS = 2_000_000
_PROBES_ATTR = "__hmmbook_probes__"


class Unsupported:
    """An answer that could not be passed as data (its type, or the error that rebuilding it raised); tests see
    this object instead, and a checker reports it as a wrong answer."""

    def __init__(self, why: str) -> None:
        self.why = why

    def __repr__(self) -> str:
        return f"<answer not gradable: {self.why}>"


def _count(v: Any) -> int:
    return v.numel() if isinstance(v, torch.Tensor) else 1


def encode(value: Any) -> Any:
    """``value`` as JSON-able data: ``None``, bools, numbers and strings as they are; lists and tuples
    element-wise; dicts as ``{"__dict__": [[key, value], ...]}`` (keys may be numbers); tensors and numpy
    arrays as ``{"__tensor__": nested list, "dtype": ...}``; an HMM or a memory HMM as its parameters.
    Anything else becomes ``{"__unsupported__": type name}``."""
    from hmmlib import HMM, MemoryHMM

    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, HMM):
        return {"__hmm__": {k: encode(getattr(value, k)) for k in ("pi", "A", "W")}}
    if isinstance(value, MemoryHMM):
        return {"__memory_hmm__": {k: encode(getattr(value, k)) for k in ("memory_prior", "pi", "A", "W")}}
    if type(value).__module__ == "numpy" or hasattr(value, "__array_interface__"):
        try:
            value = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            return {"__unsupported__": type(value).__name__}
    if isinstance(value, torch.Tensor):
        if value.numel() > MAX_NUMBERS:
            return {"__unsupported__": f"a tensor of {value.numel()} numbers (more than {MAX_NUMBERS})"}
        t = value.detach().to("cpu")
        if t.is_complex():
            return {"__unsupported__": "a complex tensor"}
        return {"__tensor__": t.tolist(), "dtype": str(t.dtype).removeprefix("torch.")}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {"__dict__": [[encode(k), encode(v)] for k, v in value.items()]}
    return {"__unsupported__": type(value).__name__}


_DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
           "bfloat16": torch.bfloat16, "int64": torch.int64, "int32": torch.int32, "int16": torch.int16,
           "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool}


def decode(data: Any) -> Any:
    """The inverse of :func:`encode`, run in the grading process: HMMs are rebuilt with hmmlib's validating
    constructors (an invalid one becomes an :class:`Unsupported` saying why)."""
    from hmmlib import HMM, MemoryHMM

    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        return [decode(v) for v in data]
    if not isinstance(data, dict) or len(data) not in (1, 2):
        return Unsupported(f"malformed answer data {str(data)[:80]}")
    if "__tensor__" in data:
        dtype = _DTYPES.get(data.get("dtype"))
        if dtype is None:
            return Unsupported(f"a tensor of dtype {data.get('dtype')!r}")
        try:
            return torch.tensor(data["__tensor__"], dtype=dtype)
        except (TypeError, ValueError, RuntimeError) as e:
            return Unsupported(f"a malformed tensor ({e})")
    if "__dict__" in data:
        out = {}
        for item in data["__dict__"]:
            if not (isinstance(item, list) and len(item) == 2):
                return Unsupported("a malformed dict")
            key = decode(item[0])
            if isinstance(key, list):
                key = tuple(key)
            try:
                out[key] = decode(item[1])
            except TypeError:
                return Unsupported("a dict with an unhashable key")
        return out
    for tag, cls, names in (("__hmm__", HMM, ("pi", "A", "W")),
                            ("__memory_hmm__", MemoryHMM, ("memory_prior", "pi", "A", "W"))):
        if tag in data:
            parts = data[tag]
            if not isinstance(parts, dict) or set(parts) != set(names):
                return Unsupported(f"a malformed {cls.__name__}")
            args = [decode(parts[n]) for n in names]
            try:
                return cls(*args)
            except (TypeError, ValueError, RuntimeError) as e:
                return Unsupported(f"an invalid {cls.__name__} ({e})")
    if "__unsupported__" in data:
        return Unsupported(f"a value of type {data['__unsupported__']}")
    return Unsupported(f"malformed answer data {str(data)[:80]}")


def probes(**expressions: str) -> Callable[[Callable], Callable]:
    """Decorate a test function whose parameters include names that are not the student's variables but
    values of ``expressions`` evaluated in the student's kernel at grading time (e.g.
    ``hidden_trained="trained_count(7, 36, 1280, 800)"``): the inputs live in the autograder's test files only.
    In an exception-based otter test cell (one function definition), write it as
    ``@__import__("hmmlib.grading").grading.probes(name="expression")``."""

    def mark(fn: Callable) -> Callable:
        setattr(fn, _PROBES_ATTR, {**getattr(fn, _PROBES_ATTR, {}), **expressions})
        return fn

    return mark


def probes_of(fn: Callable) -> dict[str, str]:
    return dict(getattr(fn, _PROBES_ATTR, {}))


def write_answers(env: dict, names: Iterable[str], probe_expressions: dict[str, str], path: str | Path) -> None:
    """In the student's kernel: write ``{name: encode(env[name])}`` for the ``names`` that ``env`` defines,
    and the encoded value of every probe expression that evaluates without error, to ``path`` (JSON)."""
    out: dict[str, Any] = {}
    for name in names:
        if name in env:
            out[name] = encode(env[name])
    for name, expr in probe_expressions.items():
        try:
            out[name] = encode(eval(expr, env))                     # noqa: S307 (the student's own code)
        except Exception as e:                                      # a failing probe is a wrong answer
            out[name] = {"__unsupported__": f"an error ({type(e).__name__}: {str(e)[:200]})"}
    Path(path).write_text(json.dumps(out, allow_nan=True), encoding="utf-8")


def read_answers(path: str | Path) -> dict[str, Any]:
    """In the grading process: the answers :func:`write_answers` wrote (``{}`` if the file is missing or not
    JSON: every test then fails), decoded."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): decode(v) for k, v in data.items()}


def read_tests(paths: Iterable[str | Path]) -> dict[str, str]:
    """{path: source} of test files, read once before the submission runs (its kernel can write to disk)."""
    return {str(p): Path(p).read_text(encoding="utf-8") for p in sorted(map(str, paths))}


def _test_files(tests: Iterable[str | Path] | dict[str, str]):
    from otter.test_files import ExceptionTestFile

    sources = tests if isinstance(tests, dict) else read_tests(tests)
    return [ExceptionTestFile.from_string(src, path=path) for path, src in sources.items()]


def answer_names(test_paths: Iterable[str | Path] | dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """(the variable names the tests read, the probe expressions by name) of otter exception-based test files."""
    import inspect

    names: set[str] = set()
    probe_exprs: dict[str, str] = {}
    for tf in _test_files(test_paths):
        for tc in tf.test_cases:
            fn = tc.body.test_func
            p = probes_of(fn)
            probe_exprs.update(p)
            names.update(n for n in inspect.signature(fn).parameters if n != "env" and n not in p)
    return sorted(names), probe_exprs


def run_tests(test_paths: Iterable[str | Path] | dict[str, str], answers: dict[str, Any]):
    """Run every test case of the otter exception-based test files (paths, or {path: source} as
    :func:`read_tests` returns) on ``answers`` (in this process) and
    return the ``TestFile`` objects with their results. An answer a test needs but the submission did not
    define is ``None``."""
    files = _test_files(test_paths)
    for tf in files:
        tf.run(dict(answers))
    return files
