"""Every chapter starts with the Colab install cell that tools/install_cell.py writes from _config.yml.

If this fails after a merge or a change of repository.url: run `python tools/install_cell.py`."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import install_cell  # noqa: E402

CHAPTERS = install_cell.chapters(ROOT)


def test_there_are_chapters():
    assert len(CHAPTERS) >= 5


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_starts_with_the_install_cell(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    url, branch = install_cell.read_repository(ROOT / "_config.yml")
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    first = code[0]
    assert install_cell.TAG in first["metadata"].get("tags", []), \
        f"{path.name}: the first code cell is not the install cell; run `python tools/install_cell.py`"
    assert "remove-cell" in first["metadata"]["tags"]
    assert "".join(first["source"]) == install_cell.cell_source(nb, url, branch), \
        f"{path.name}: the install cell is stale (repository.url or branch changed?); run `python tools/install_cell.py`"
    assert sum(install_cell.TAG in c["metadata"].get("tags", []) for c in code) == 1


def test_update_is_idempotent_and_moves_a_misplaced_cell():
    nb = json.loads(CHAPTERS[0].read_text(encoding="utf-8"))
    assert not install_cell.update_notebook(copy.deepcopy(nb), *install_cell.read_repository(ROOT / "_config.yml"))
    bare = copy.deepcopy(nb)
    bare["cells"] = [c for c in bare["cells"] if install_cell.TAG not in c["metadata"].get("tags", [])]
    bare["cells"].append(copy.deepcopy(nb["cells"][0]) | {"cell_type": "code", "outputs": [], "execution_count": None,
                                                          "metadata": {"tags": [install_cell.TAG]}})
    assert install_cell.update_notebook(bare, "https://example.org/x/y", "dev")
    first = next(c for c in bare["cells"] if c["cell_type"] == "code")
    assert 'REPOSITORY_URL = "https://example.org/x/y"' in "".join(first["source"]) and "@dev" in "".join(first["source"])
    assert sum(install_cell.TAG in c["metadata"].get("tags", []) for c in bare["cells"]) == 1
    assert not install_cell.update_notebook(bare, "https://example.org/x/y", "dev")


def test_cell_does_nothing_where_hmmlib_imports():
    """Under nbval, `make book` and Binder hmmlib imports, so the cell must not call pip."""
    nb = json.loads(CHAPTERS[0].read_text(encoding="utf-8"))
    source = "".join(next(c for c in nb["cells"] if c["cell_type"] == "code")["source"])
    probe = ("import subprocess\n"
             "def _no_pip(*a, **k):\n    raise SystemExit('pip was called')\n"
             "subprocess.check_call = _no_pip\n" + source + "\nprint('quiet')\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout == "quiet\n"


def test_check_mode_reports_stale_cells(tmp_path):
    nb = json.loads(CHAPTERS[0].read_text(encoding="utf-8"))
    nb["cells"] = [c for c in nb["cells"] if install_cell.TAG not in c["metadata"].get("tags", [])]
    path = tmp_path / "01_x.ipynb"
    path.write_text(json.dumps(nb))
    assert install_cell.main(["--check", str(path)]) == 1
    assert install_cell.main([str(path)]) == 0
    assert install_cell.main(["--check", str(path)]) == 0
