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


_BLOCK_HMMLIB = (
    "import subprocess, sys\n"
    "class _NoHmmlib:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] == 'hmmlib':\n"
    "            raise ImportError('hmmlib hidden by the test')\n"
    "sys.meta_path.insert(0, _NoHmmlib())\n"
    "def _pip(args, **k):\n"
    "    print('PIP', ' '.join(args[3:]))\n"
    "    raise SystemExit(0)\n"
    "subprocess.check_call = _pip\n")


def _run_cell(source: str, **env) -> subprocess.CompletedProcess:
    """Run an install cell in a fresh interpreter where hmmlib cannot be imported and pip only prints its args."""
    return subprocess.run([sys.executable, "-c", _BLOCK_HMMLIB + source], capture_output=True, text=True,
                          cwd=ROOT, env={"PATH": "", **env})


def test_cell_refuses_to_install_from_the_placeholder():
    """With the placeholder address the cell must not call pip, and must say how to set the address."""
    nb = json.loads(CHAPTERS[0].read_text(encoding="utf-8"))
    out = _run_cell(install_cell.cell_source(nb, install_cell.PLACEHOLDER_URL, "main"))
    assert out.returncode != 0 and "PIP" not in out.stdout, (out.stdout, out.stderr)
    assert "RuntimeError" in out.stderr and install_cell.PLACEHOLDER_URL in out.stderr
    assert "repository.url in _config.yml" in out.stderr and "python tools/install_cell.py" in out.stderr


def test_cell_installs_from_a_real_address_or_the_override():
    nb = json.loads(CHAPTERS[0].read_text(encoding="utf-8"))
    out = _run_cell(install_cell.cell_source(nb, "https://example.org/x/y", "dev"))
    assert out.returncode == 0, out.stderr
    assert "PIP install --quiet hmmlib @ git+https://example.org/x/y@dev" in out.stdout
    # HMMBOOK_INSTALL_SOURCE (a wheel or checkout) is used even while the address is the placeholder
    out = _run_cell(install_cell.cell_source(nb, install_cell.PLACEHOLDER_URL, "main"),
                    HMMBOOK_INSTALL_SOURCE="/tmp/hmmlib.whl")
    assert out.returncode == 0, out.stderr
    assert "PIP install --quiet /tmp/hmmlib.whl" in out.stdout


def test_placeholder_matches_the_site_extension():
    """The book build's notice and the install cell must agree on what the placeholder is."""
    text = (ROOT / "book" / "_ext" / "hmmbook_site.py").read_text(encoding="utf-8")
    assert f'PLACEHOLDER_URL = "{install_cell.PLACEHOLDER_URL}"' in text


def test_check_mode_reports_stale_cells(tmp_path):
    nb = json.loads(CHAPTERS[0].read_text(encoding="utf-8"))
    nb["cells"] = [c for c in nb["cells"] if install_cell.TAG not in c["metadata"].get("tags", [])]
    path = tmp_path / "01_x.ipynb"
    path.write_text(json.dumps(nb))
    assert install_cell.main(["--check", str(path)]) == 1
    assert install_cell.main([str(path)]) == 0
    assert install_cell.main(["--check", str(path)]) == 0
