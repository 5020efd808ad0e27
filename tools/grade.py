"""Grade a folder of submitted notebooks with hmmlib.checks, and print one table: students x exercises.

    python tools/grade.py submissions/                     # every *.ipynb below it
    python tools/grade.py submissions/ --csv grades.csv --preset ci --timeout 600

Layout: ``submissions/<student>/<anything>.ipynb`` (one folder per student, any number of notebooks), or
``submissions/<student>.ipynb``. Each notebook runs top to bottom in a fresh kernel (nbclient, the current
Python environment, working directory = the notebook's folder) with errors allowed, so that one failing cell
does not hide the other exercises. Every call of a checker of :mod:`hmmlib.checks` (``checks.ch1_...`` or
``checks.check_ch1_...``) appends its result to a log that this script reads (``$HMMBOOK_GRADING_LOG``).

Cells of the table: ``pass``, ``FAIL`` (the checker's first message is in the details below the table),
``-`` (no checker called: not attempted, or the cell crashed before it). A notebook that crashes at a cell
outside an exercise is reported with its first error.

Student code runs with your permissions: grade inside a container or a throwaway account.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run_notebook(path: Path, log: Path, timeout: int, preset: str) -> dict:
    """Execute ``path`` with the grading log at ``log``; return {"errors": [...], "seconds": ...}."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    env_before = {k: os.environ.get(k) for k in ("HMMBOOK_GRADING_LOG", "HMMBOOK_PRESET", "TQDM_DISABLE")}
    os.environ.update({"HMMBOOK_GRADING_LOG": str(log), "HMMBOOK_PRESET": preset, "TQDM_DISABLE": "1"})
    t0 = time.perf_counter()
    errors = []
    try:
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                                resources={"metadata": {"path": str(path.parent)}})
        client.execute()
    except Exception as e:                                       # kernel died, timeout, unreadable notebook
        errors.append(f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}")
    finally:
        for k, v in env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                errors.append(f"cell {i}: {out.get('ename')}: {out.get('evalue', '')[:200]}")
    return {"errors": errors, "seconds": time.perf_counter() - t0}


def student_of(path: Path, folder: Path) -> str:
    rel = path.relative_to(folder)
    return rel.parts[0] if len(rel.parts) > 1 else path.stem


def grade(folder: Path, timeout: int = 900, preset: str = "ci") -> tuple[dict, dict]:
    """({student: {exercise: {"passed": bool, "messages": [...]}}}, {notebook: run info})."""
    results: dict[str, dict[str, dict]] = {}
    runs: dict[str, dict] = {}
    notebooks = sorted(p for p in folder.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    if not notebooks:
        raise SystemExit(f"grade: no notebooks under {folder}")
    for path in notebooks:
        student = student_of(path, folder)
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "log.jsonl"
            log.touch()
            print(f"running {path.relative_to(folder)} ...", file=sys.stderr, flush=True)
            runs[str(path.relative_to(folder))] = info = run_notebook(path, log, timeout, preset)
            for line in log.read_text(encoding="utf-8").splitlines():
                r = json.loads(line)
                prev = results.setdefault(student, {}).get(r["exercise"])
                # the last call of a checker counts, but a pass is not undone by a later exploratory failure
                if prev is None or not prev["passed"] or r["passed"]:
                    results[student][r["exercise"]] = {"passed": r["passed"], "messages": r["messages"]}
            results.setdefault(student, {})
            info["student"] = student
    return results, runs


def table(results: dict, exercises: list[str]) -> str:
    short = [e.replace("ex-", "") for e in exercises]
    width = max([len("student")] + [len(s) for s in results])
    cols = [max(len(s), 4) for s in short]
    lines = [" ".join([f"{'student':<{width}}"] + [f"{s:<{c}}" for s, c in zip(short, cols)] + ["score"])]
    for student in sorted(results):
        row = results[student]
        cells = []
        for e, c in zip(exercises, cols):
            mark = "-" if e not in row else ("pass" if row[e]["passed"] else "FAIL")
            cells.append(f"{mark:<{c}}")
        score = sum(1 for e in exercises if row.get(e, {}).get("passed"))
        lines.append(" ".join([f"{student:<{width}}"] + cells + [f"{score}/{len(exercises)}"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--csv", type=Path, help="also write the table (one row per student and exercise) here")
    ap.add_argument("--preset", default="ci", help="HMMBOOK_PRESET for the runs (default ci: fast)")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    ap.add_argument("--exercises", nargs="*", help="labels to grade (default: every checker in hmmlib.checks)")
    args = ap.parse_args(argv)

    from hmmlib.checks import CHECKS

    results, runs = grade(args.folder, args.timeout, args.preset)
    exercises = args.exercises or [e for e in CHECKS if any(e in r for r in results.values())] or list(CHECKS)
    print(table(results, exercises))
    details = []
    for student in sorted(results):
        for e in exercises:
            r = results[student].get(e)
            if r and not r["passed"]:
                details.append(f"{student} {e}: {r['messages'][0] if r['messages'] else 'failed'}")
    for nb, info in runs.items():
        for err in info["errors"][:3]:
            details.append(f"{info['student']} ({nb}) error: {err}")
    if details:
        print("\ndetails:\n  " + "\n  ".join(details))
    if args.csv:
        with args.csv.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["student", "exercise", "result", "message"])
            for student in sorted(results):
                for e in exercises:
                    r = results[student].get(e)
                    w.writerow([student, e, "-" if r is None else ("pass" if r["passed"] else "fail"),
                                "" if not r or r["passed"] else (r["messages"][0] if r["messages"] else "")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
