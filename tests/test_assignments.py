"""The course assignments (tools/make_assignments.py) grade through otter-grader, outside the student's kernel.

Chapter 1's assignment is built with ``otter assign`` and three submissions are graded with ``otter run``
(no Docker, the current environment) and the autograder zip: the master's solution cells get full marks, a
wrong submission partial marks (the public tests it passes and the hidden test whose part it got right), and a
forged one zero, although the same forged notebook gets full marks from otter alone (the control: the same
zip without hmmbook's plugin), which shows that the forgery is real and that the plugin is what stops it.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

pytest.importorskip("otter")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import make_assignments  # noqa: E402
from assignment_tests import SPECS, points  # noqa: E402

CH1 = ["ex-ch1-lemma", "ex-ch1-shortcut", "ex-ch1-uninformative"]

WRONG = '''\
import torch, hmmlib
h0 = hmmlib.dirichlet_hmm(4, 3, seed=11)
G = torch.full((3,), 1 / 3, dtype=torch.float64)                  # not G(x)
v = torch.linalg.svd(h0.W).Vh[-1]                                 # right
base = hmmlib.paper_hmm(6, 10, seed=21, emission_temp=0.3, transition_temp=0.3)
x, _ = hmmlib.sample(base, 50, 20, seed=22)
skewed = torch.tensor([0.5, 0.2, 0.1, 0.1, 0.05, 0.05], dtype=torch.float64)
shortcut = hmmlib.posterior_h0(hmmlib.HMM(skewed, base.A, base.W), x)   # the posterior, not the shortcut
agrees = {"uniform": True, "skewed": True, "permutation": True}   # wrong for the skewed pi
h = hmmlib.HMM(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), torch.eye(3, dtype=torch.float64),
               torch.eye(3, dtype=torch.float64))                 # A = I: the text reveals H_0
'''

FORGED = '''\
import json, os
# the review's forgery of the old grader: self-reported passes in the grading log
with open(os.environ.get("HMMBOOK_GRADING_LOG", "grading_log.jsonl"), "a") as f:
    for ex in %r:
        f.write(json.dumps({"exercise": ex, "passed": True, "messages": []}) + "\\n")
# every checker of hmmlib.checks passes, whatever it is given
import hmmlib.checks
for name in list(vars(hmmlib.checks)):
    if name.startswith("check_"):
        setattr(hmmlib.checks, name, lambda *args, **kwargs: None)
# otter's tests, run in this kernel, report that every case passed
from otter.test_files.abstract_test import TestCaseResult
from otter.test_files.exception_test import ExceptionTestFile
def _all_passed(self, env):
    self.test_case_results = [TestCaseResult(test_case=tc, message="passed", passed=True) for tc in self.test_cases]
ExceptionTestFile.run = _all_passed
# and the autograder's test files on disk are rewritten so that every test returns at once
import glob, re
for path in glob.glob("tests/*.py"):
    with open(path) as f:
        src = f.read()
    with open(path, "w") as f:
        f.write(re.sub(r"(def test_\\w+\\([^)]*\\):\\n)", r"\\1    return\\n", src))
''' % CH1


@pytest.fixture(scope="module")
def assignment(tmp_path_factory):
    out = tmp_path_factory.mktemp("assignments")
    folder = make_assignments.build(out, ["01"], preset="ci", run_tests=False)["01_hmms"]
    return folder / "dist"


def _submission(dist: Path, path: Path, code: str) -> Path:
    student = nbformat.read(dist / "student" / "01_hmms.ipynb", as_version=4)
    nb = copy.deepcopy(student)
    nb.cells = [nbformat.v4.new_code_cell(code)]
    nb.nbformat_minor = max(nb.nbformat_minor, 5)
    nbformat.write(nb, path)
    return path


def _grade(zip_path: Path, submission: Path, tmp_path: Path) -> dict:
    out = tmp_path / f"out-{submission.stem}-{zip_path.stem}"
    out.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env["HMMBOOK_GRADING_LOG"] = str(tmp_path / "grading_log.jsonl")
    r = subprocess.run([sys.executable, "-m", "otter", "run", "-a", str(zip_path), "-o", str(out), str(submission)],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    scores = {}
    for t in res["tests"]:
        q = t["name"].split(" - ")[0]
        if q in CH1:
            got, top = scores.get(q, (0, 0))
            scores[q] = (got + t["score"], top + t["max_score"])
    return {"scores": scores, "total": sum(s for s, _ in scores.values()), "tests": res["tests"]}


def _solutions(dist: Path) -> str:
    """The master's solution code of every question (between otter's BEGIN/END SOLUTION cells)."""
    master = nbformat.read(dist.parent / "01_hmms.ipynb", as_version=4)
    code, inside = ["import torch, hmmlib", "from hmmlib import bruteforce"], False
    for cell in master.cells:
        if cell.cell_type == "raw" and cell.source.strip() in ("# BEGIN SOLUTION", "# END SOLUTION"):
            inside = cell.source.strip() == "# BEGIN SOLUTION"
        elif inside and cell.cell_type == "code":
            code.append(cell.source)
    return "\n".join(code)


def _zip(dist: Path) -> Path:
    zips = sorted((dist / "autograder").glob("*.zip"))
    assert len(zips) == 1
    return zips[0]


def test_answers_leave_the_kernel_as_data(tmp_path):
    import numpy as np
    import torch

    import hmmlib
    from hmmlib import grading

    h = hmmlib.dirichlet_hmm(3, 4, seed=0)
    mem = hmmlib.locatable_memory_hmm()
    env = {"h": h, "mem": mem, "d": {0.5: 12, 0.4: None}, "t": torch.arange(3, dtype=torch.float32),
           "n": np.float64(1.5), "f": lambda x: x, "pair": (1, [2.0, float("inf")])}
    path = tmp_path / "answers.json"
    grading.write_answers(env, ["h", "mem", "d", "t", "n", "f", "pair", "missing"],
                          {"probe": "t.sum() * 2", "bad": "1 / 0"}, path)
    back = grading.read_answers(path)
    assert isinstance(back["h"], hmmlib.HMM) and all(torch.equal(getattr(back["h"], k), getattr(h, k))
                                                     for k in ("pi", "A", "W"))
    assert isinstance(back["mem"], hmmlib.MemoryHMM) and torch.equal(back["mem"].W, mem.W)
    assert back["d"] == {0.5: 12, 0.4: None} and back["pair"] == [1, [2.0, float("inf")]]
    assert back["t"].dtype == torch.float32 and torch.equal(back["t"], env["t"]) and float(back["n"]) == 1.5
    assert float(back["probe"]) == 6.0 and "missing" not in back
    assert isinstance(back["f"], grading.Unsupported) and isinstance(back["bad"], grading.Unsupported)
    # what a kernel may write instead is data, rebuilt by validating constructors: never code, never a verdict
    path.write_text(json.dumps({"h": {"__hmm__": {"pi": [0.5, 0.6], "A": [[1.0, 0], [0, 1.0]], "W": [[1.0, 1.0]]}},
                                "x": {"__reduce__": "os.system"}, "y": {"passed": True}}))
    back = grading.read_answers(path)
    assert all(isinstance(back[k], grading.Unsupported) for k in ("h", "x", "y"))
    assert "invalid HMM" in repr(back["h"])
    from hmmlib import checks
    assert not checks.ch1_uninformative(back["h"])


def test_student_notebook_has_no_solutions_and_no_hidden_tests(assignment):
    student = (assignment / "student" / "01_hmms.ipynb").read_text()
    master = (assignment / "autograder" / "01_hmms.ipynb").read_text()
    for solution_line in ("q[:, None].expand(3, 3)", "torch.linalg.svd(h.W).Vh[-1]", "shortcut_rows(hmmlib.HMM("):
        assert solution_line in master and solution_line not in student
    with zipfile.ZipFile(_zip(assignment)) as z:
        tests = {n: z.read(n).decode() for n in z.namelist() if n.startswith("tests/")}
    assert sorted(tests) == [f"tests/{e}.py" for e in sorted(CH1)]
    assert "seed=8191" in tests["tests/ex-ch1-uninformative.py"] and "seed=8191" not in student   # hidden input
    assert "reveal=False" in tests["tests/ex-ch1-uninformative.py"]


def test_correct_wrong_and_forged_submissions(assignment, tmp_path):
    zip_path = _zip(assignment)
    full = sum(points(e) for e in CH1)

    correct = _grade(zip_path, _submission(assignment, tmp_path / "correct.ipynb", _solutions(assignment)), tmp_path)
    assert correct["total"] == full, correct["scores"]

    wrong = _grade(zip_path, _submission(assignment, tmp_path / "wrong.ipynb", WRONG), tmp_path)
    public = {e: sum(t.points for t in SPECS[e].tests if not t.hidden) for e in CH1}
    assert wrong["scores"]["ex-ch1-lemma"][0] == public["ex-ch1-lemma"] + 1          # + the hidden test of v
    assert wrong["scores"]["ex-ch1-shortcut"][0] == public["ex-ch1-shortcut"]
    assert wrong["scores"]["ex-ch1-uninformative"][0] == public["ex-ch1-uninformative"]
    assert 0 < wrong["total"] < full
    failed = [t.get("output", "") for t in wrong["tests"] if t.get("score", 0) < t.get("max_score", 0)]
    assert failed and not any("expected" in o for o in failed), failed                 # no reference values

    forged = _submission(assignment, tmp_path / "forged.ipynb", FORGED)
    assert _grade(zip_path, forged, tmp_path)["total"] == 0

    # control: the same forgery against otter without hmmbook's plugin gets full marks
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(zip_path) as src, zipfile.ZipFile(plain, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "otter_config.json":
                cfg = json.loads(data)
                cfg.pop("plugins")
                data = json.dumps(cfg).encode()
            dst.writestr(item, data)
    assert _grade(plain, forged, tmp_path)["total"] == full
    assert (tmp_path / "grading_log.jsonl").read_text().count('"passed": true') == 2 * len(CH1)
