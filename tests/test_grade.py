"""tools/grade.py runs submitted notebooks and tabulates hmmlib.checks results per student and exercise."""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import grade  # noqa: E402

SETUP = "import torch\nfrom hmmlib import checks\nW = torch.eye(2, dtype=torch.float64)\n"


def test_grade_table(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    (tmp_path / "alice").mkdir()
    nbformat.write(new_notebook(cells=[new_code_cell(SETUP + "checks.check_ch3_min_norm(W, [1.0, 2.0], [1.0, 2.0])")]),
                   tmp_path / "alice" / "ch3.ipynb")
    nbformat.write(new_notebook(cells=[new_code_cell("1 / 0"),
                                       new_code_cell(SETUP + "checks.check_ch3_min_norm(W, [1.0, 2.0], [2.0, 2.0])")]),
                   tmp_path / "bob.ipynb")
    results, runs = grade.grade(tmp_path, timeout=120)
    assert results["alice"]["ex-ch3-min-norm"]["passed"]
    assert not results["bob"]["ex-ch3-min-norm"]["passed"]
    assert any("ZeroDivisionError" in e for e in runs["bob.ipynb"]["errors"])
    text = grade.table(results, ["ex-ch3-min-norm", "ex-ch1-lemma"])
    assert "alice" in text and "pass" in text and "FAIL" in text and "1/2" in text and "0/2" in text
