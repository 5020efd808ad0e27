"""The Binder environment (binder/) agrees with the project's pins; no network needed.

Whether binder/requirements.txt resolves on Python 3.11 is checked against the real indexes by
tools/check_binder.sh, which .ci/run runs.
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-\[\]]+)==([^;\s]+)", line)
        assert m, f"{path.name}: {line!r} is not an exact pin (name==version)"
        pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def test_runtime_is_python_311():
    assert (ROOT / "binder" / "runtime.txt").read_text().strip() == "python-3.11"


def test_binder_pins_equal_the_project_pins():
    project, binder = _pins(ROOT / "requirements.txt"), _pins(ROOT / "binder" / "requirements.txt")
    for name, version in binder.items():
        if name == "torch":
            assert version.split("+")[0] == project["torch"].split("+")[0]
            assert version.endswith("+cpu"), "Binder should use the CPU-only torch wheel"
        else:
            assert project.get(name) == version, f"{name}: binder pins {version}, requirements.txt {project.get(name)}"


def test_binder_has_what_the_chapters_import():
    binder = _pins(ROOT / "binder" / "requirements.txt")
    for name in ("torch", "numpy", "matplotlib", "tqdm", "myst-nb", "ipykernel", "jupyterlab"):
        assert name in binder, f"binder/requirements.txt lacks {name}"
    assert "https://download.pytorch.org/whl/cpu" in (ROOT / "binder" / "requirements.txt").read_text()


def test_postbuild_installs_hmmlib_and_fills_the_model_cache():
    text = (ROOT / "binder" / "postBuild").read_text()
    assert "pip install --no-deps -e ." in text
    assert "tools/pretrain_cache.py" in text
    assert (ROOT / "tools" / "pretrain_cache.py").is_file()
