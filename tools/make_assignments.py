"""Make the course assignments: one otter-grader assignment per chapter with gradable exercises.

    python tools/make_assignments.py [--out _build/assignments] [--chapters 01 03] [--preset ci]
                                     [--no-run-tests] [--master-only]

For each chapter ``book/NN_*.ipynb`` with an exercise in ``tools/assignment_tests.SPECS`` it writes
``<out>/<chapter>/master.ipynb`` and runs ``otter assign`` on it, which writes ``<out>/<chapter>/dist/``:
``student/<chapter>.ipynb`` (solutions removed, public tests for ``grader.check``) and
``autograder/<chapter>.ipynb`` plus ``autograder/*.zip`` (the zip that Gradescope takes and ``otter run`` /
``otter grade`` use).

The master notebook is the chapter as the student edition has it (every other exercise's gated solution
removed, as ``tools/make_student.py`` does), where each gradable exercise becomes an otter question: the
prompt, a note naming the variables the tests read and the points, the book's solution code between in-cell
``# BEGIN SOLUTION`` / ``# END SOLUTION`` markers (so that otter replaces it by ``...``), and the tests of
``tools/assignment_tests.py`` (public and hidden, with points: partial credit per test). The student notebook
is searched for every phrase that occurs only in a solution (``make_student.find_leaks``). The autograder
grades with :class:`hmmlib.otter_plugin.HmmbookGrader`, outside the student's kernel, at ``--preset``.
"""
from __future__ import annotations

import argparse
import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from assignment_tests import SPECS, points  # noqa: E402
from make_student import END, START, _source, find_leaks, solution_probes  # noqa: E402

EX_START = re.compile(r"\{exercise-start\}[^\n]*\n:label:\s*(\S+)")
SOL_START = re.compile(r"\{solution-start\}\s*(\S+)")
DIRECTIVE = re.compile(r"^\s*(```+|:::+)\s*\{solution-(start|end)\}[^\n]*\n(:class:[^\n]*\n)?(```+|:::+)?\s*$",
                       re.M)


def chapters_with_exercises(root: Path = ROOT) -> dict[str, Path]:
    """{chapter stem: notebook} for every chapter that has an exercise in SPECS."""
    out = {}
    for path in sorted((root / "book").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        labels = {m for c in nb.cells for m in EX_START.findall(_source(c))}
        if labels & set(SPECS):
            out[path.stem] = path
    return out


def _raw(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_raw_cell(text)


def _config(name: str, preset: str, requirements: str | None) -> str:
    lines = [f"# ASSIGNMENT CONFIG", f"name: {name}", "init_cell: true", "check_all_cell: false",
             "export_cell:", "    pdf: false", "tests:", "    ok_format: false", "    files: false",
             "generate:", "    pdf: false", "    show_hidden: true", "    plugins:",
             f"        - hmmlib.otter_plugin.HmmbookGrader:", f"            preset: {preset}"]
    if requirements:
        lines.insert(2, f"requirements: {requirements}")
    return "\n".join(lines) + "\n"


def _solution_code(src: str, first: bool, reads: str) -> str:
    names = [n for n in re.findall(r"`([A-Za-z_]\w*)(?:\([^`]*\))?`", reads) if n not in ("True", "False", "None")]
    head = f"# Your answer: define {', '.join(dict.fromkeys(names))} (see above)\n" if first else ""
    return f"{head}# BEGIN SOLUTION\n{src.rstrip()}\n# END SOLUTION\n"


def master_notebook(path: Path, preset: str = "ci", requirements: str | None = None) -> nbformat.NotebookNode:
    """The otter master notebook of one chapter (see the module docstring)."""
    nb = nbformat.read(path, as_version=4)
    cells, out = nb.cells, []
    i, inside = 0, None                                     # inside: label of the solution being copied
    while i < len(cells):
        cell, src = cells[i], _source(cells[i])
        m = EX_START.search(src)
        if m and m.group(1) in SPECS:
            label = m.group(1)
            spec = SPECS[label]
            out.append(_raw(f"# BEGIN QUESTION\nname: {label}\n"))
            while not re.search(r"\{exercise-end\}", _source(cells[i])):
                out.append(cells[i])
                i += 1
            out.append(cells[i])
            out.append(nbformat.v4.new_markdown_cell(
                f"*Graded ({points(label):g} points):* the tests read {spec.reads}. Public tests run with "
                f"`grader.check(\"{label}\")`; hidden ones only when your work is graded."))
            i += 1
            if not START.search(_source(cells[i])):
                raise ValueError(f"{path.name}: {label} has no solution right after the exercise")
            sol = []
            while True:
                sol.append(cells[i])
                if END.search(_source(cells[i])):
                    break
                i += 1
            i += 1
            code = [c for c in sol if c.cell_type == "code" and not str(c.get("id", "")).startswith("check-")]
            prose = [DIRECTIVE.sub("", _source(c)).strip() for c in sol if c.cell_type == "markdown"]
            prose = [p for p in prose if p]
            if prose:
                out.append(nbformat.v4.new_markdown_cell("_Your explanation (read by the instructor, not "
                                                         "autograded):_"))
            out.append(_raw("# BEGIN SOLUTION"))
            for k, c in enumerate(code):
                c = copy.deepcopy(c)
                c.source = _solution_code(_source(c), k == 0, spec.reads)
                c.outputs, c.execution_count = [], None
                out.append(c)
            for p in prose:
                out.append(nbformat.v4.new_markdown_cell(p))
            out.append(_raw("# END SOLUTION"))
            out.append(_raw("# BEGIN TESTS"))
            for t in spec.tests:
                cfg = f'""" # BEGIN TEST CONFIG\npoints: {t.points}\nhidden: {str(t.hidden).lower()}\n""" # END TEST CONFIG\n'
                out.append(nbformat.v4.new_code_cell(cfg + t.source))
            out.append(_raw("# END TESTS"))
            out.append(_raw("# END QUESTION"))
            continue
        if START.search(src):                               # another exercise's solution: removed
            while not END.search(_source(cells[i])):
                i += 1
            i += 1
            continue
        out.append(cell)
        i += 1
    for c in out:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
        c.pop("id", None)
    nb.cells = [_raw(_config(f"hmmbook-{path.stem}", preset, requirements))] + out
    nb.nbformat, nb.nbformat_minor = 4, 4
    return nb


def autograder_requirements(root: Path = ROOT) -> str:
    """The requirements the Gradescope image installs: the book's pins (CPU PyTorch from its index) and
    hmmlib itself, shipped in the zip (``files/hmmbook``, installed by path)."""
    pins = [line for line in (root / "requirements.txt").read_text().splitlines()
            if line and not line.startswith("#") and not line.split("==")[0] in (
                "jupyter-book", "myst-nb", "sphinx", "sphinx-proof", "sphinx-exercise", "jupyterlab", "selenium",
                "pytest", "pytest-xdist", "pytest-timeout", "nbval")]
    return "\n".join(["--extra-index-url https://download.pytorch.org/whl/cpu", *pins,
                      "/autograder/source/files/hmmbook", ""])


def build(out: Path, chapters: list[str] | None = None, preset: str = "ci", run_tests: bool = True,
          master_only: bool = False, root: Path = ROOT) -> dict[str, Path]:
    """Write the assignments; return {chapter: its folder}."""
    found = chapters_with_exercises(root)
    if chapters:
        unknown = [c for c in chapters if not any(s.startswith(c) for s in found)]
        if unknown:
            raise ValueError(f"no chapter with gradable exercises matches {unknown}; choose from {sorted(found)}")
        found = {s: p for s, p in found.items() if any(s.startswith(c) for c in chapters)}
    done = {}
    for stem, path in found.items():
        folder = out / stem
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        pkg = folder / "hmmbook"                          # hmmlib for the Gradescope image (pip install path)
        shutil.copytree(root / "hmmlib", pkg / "hmmlib", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for extra in ("pyproject.toml", "README.md", "LICENSE"):
            if (root / extra).is_file():
                shutil.copy2(root / extra, pkg / extra)
        if (root / "results").is_dir():
            shutil.copytree(root / "results", pkg / "results")
        (folder / "requirements.txt").write_text(autograder_requirements(root))
        nb = master_notebook(path, preset, "requirements.txt")
        cfg = nb.cells[0]
        cfg.source = cfg.source.replace("init_cell: true", "init_cell: true\nautograder_files:\n    - hmmbook")
        nbformat.write(nb, folder / f"{stem}.ipynb")
        done[stem] = folder
        if master_only:
            continue
        cmd = [sys.executable, "-m", "otter", "assign", f"{stem}.ipynb", "dist", "-v"]
        if not run_tests:
            cmd.append("--no-run-tests")
        r = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"otter assign failed for {stem}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        leaks = find_leaks(folder / "dist" / "student", solution_probes(root))
        if leaks:
            raise RuntimeError(f"{stem}: solution text in the student notebook: {leaks[:5]}")
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "_build" / "assignments")
    ap.add_argument("--chapters", nargs="*", help="chapter prefixes, e.g. 01 05 (default: every chapter with one)")
    ap.add_argument("--preset", default="ci", help="HMMBOOK_PRESET the autograder runs submissions at (default ci)")
    ap.add_argument("--no-run-tests", action="store_true", help="do not check the solutions against the tests")
    ap.add_argument("--master-only", action="store_true", help="write the master notebooks, do not run otter")
    args = ap.parse_args(argv)
    done = build(args.out, args.chapters, args.preset, not args.no_run_tests, args.master_only)
    for stem, folder in done.items():
        zips = sorted((folder / "dist" / "autograder").glob("*.zip"))
        print(f"{stem}: {folder / 'dist' / 'student'}; autograder {zips[-1] if zips else '(not built)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
