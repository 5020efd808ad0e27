"""tools/make_student.py: the student edition has every exercise and no solution text.

The search of a *built* student website (`make student`) runs when one exists, and `make student` runs the
same search itself."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import make_student  # noqa: E402


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("student")
    removed = make_student.make_student(tmp / "src", tmp / "notebooks", branch="student-test")
    return tmp, removed


def test_every_chapter_loses_its_solutions_and_keeps_its_exercises(student):
    tmp, removed = student
    for path in sorted((ROOT / "book").glob("0*.ipynb")):
        src = json.loads(path.read_text(encoding="utf-8"))
        out = json.loads((tmp / "notebooks" / path.name).read_text(encoding="utf-8"))
        text = lambda nb: "".join("".join(c["source"]) for c in nb["cells"])
        n_sol = text(src).count("{solution-start}")
        assert n_sol > 0 and removed[path.name] >= 2 * n_sol
        assert "{solution-start}" not in text(out) and "{solution-end}" not in text(out)
        assert text(out).count("{exercise-start}") == text(src).count("{exercise-start}")
        assert all(not c.get("outputs") for c in out["cells"] if c["cell_type"] == "code")


def test_no_solution_phrase_in_the_student_sources(student):
    tmp, _ = student
    probes = make_student.solution_probes(ROOT)
    assert len(probes) > 50
    assert make_student.find_leaks(ROOT / "book", probes), "the probes must be found in the instructor's book"
    # the book (not hmmlib: its checkers' messages hint at what a right answer looks like, by design)
    assert not make_student.find_leaks(tmp / "src" / "book", probes)
    assert not make_student.find_leaks(tmp / "notebooks", probes)


def test_student_config_points_launch_buttons_at_the_student_branch(student):
    tmp, _ = student
    cfg = (tmp / "src" / "_config.yml").read_text()
    assert "branch: student-test" in cfg and "(student edition)" in cfg
    nb = json.loads((tmp / "notebooks" / "01_hmms.ipynb").read_text())
    first = next(c for c in nb["cells"] if c["cell_type"] == "code")
    import install_cell

    url, _ = install_cell.read_repository(tmp / "src" / "_config.yml")
    # the student chapter's install cell is the one for the student branch (while the URL is the placeholder,
    # that cell refuses to install; once it is set, it installs from ...@student-test)
    assert "".join(first["source"]) == install_cell.cell_source(nb, url, "student-test")
    assert "@student-test" in install_cell.cell_source(nb, "https://example.org/book", "student-test")


def test_unbalanced_solutions_are_errors():
    cell = lambda s: {"cell_type": "markdown", "metadata": {}, "source": s}
    with pytest.raises(ValueError, match="no solution-end"):
        make_student.split_solutions({"cells": [cell("```{solution-start} ex\n```"), cell("text")]})
    with pytest.raises(ValueError, match="without solution-start"):
        make_student.split_solutions({"cells": [cell("```{solution-end}\n```")]})


@pytest.mark.skipif(not (ROOT / "_build" / "student" / "html" / "index.html").is_file(),
                    reason="no built student edition (make student)")
def test_built_student_edition_has_no_solution_text():
    probes = make_student.solution_probes(ROOT)
    leaks = make_student.find_leaks(ROOT / "_build" / "student", probes)
    assert not leaks, leaks[:5]
