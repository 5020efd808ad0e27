"""hmmlib's layers import only downward (hmm < lm < adapt < memory < experiments), so there is no import cycle;
every module imports on its own; modules stay readable in one sitting."""
from __future__ import annotations

import ast
import importlib
import pathlib
import subprocess
import sys

import pytest

import hmmlib

ROOT = pathlib.Path(hmmlib.__file__).resolve().parent
LAYERS = {"_validate": 0, "hmm": 1, "lm": 2, "adapt": 3, "memory": 4, "experiments": 5}
MODULES = sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts)


def _dotted(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def _imports(path: pathlib.Path) -> list[str]:
    """Absolute names of the hmmlib modules that ``path`` imports (relative imports resolved)."""
    package = _dotted(path) if path.name == "__init__.py" else _dotted(path).rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "hmmlib" or target.startswith("hmmlib."):
                names = [f"{target}.{a.name}" for a in node.names] if not node.module or target.count(".") == 0 else [target]
                out.extend(names)
        elif isinstance(node, ast.Import):
            out.extend(a.name for a in node.names if a.name.startswith("hmmlib"))
    return out


@pytest.mark.parametrize("path", [p for p in MODULES if _layer(_dotted(p)) is not None and p.parent != ROOT],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_a_module_imports_only_its_own_layer_or_lower_ones(path):
    own = _layer(_dotted(path))
    for target in _imports(path):
        layer = _layer(target)
        assert layer is None or layer <= own, f"{_dotted(path)} (layer {own}) imports {target} (layer {layer})"


def test_the_layer_table_names_every_subpackage():
    subpackages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert subpackages == {k for k in LAYERS if k != "_validate"}


@pytest.mark.parametrize("name", ["hmmlib.hmm", "hmmlib.lm", "hmmlib.adapt", "hmmlib.memory", "hmmlib.experiments"])
def test_each_layer_imports_in_a_fresh_interpreter_without_the_layers_above(name):
    """Importing a layer loads no module of a higher layer (checked in a fresh process)."""
    code = (f"import sys, importlib; importlib.import_module({name!r}); "
            "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith('hmmlib.')}))")
    # the package __init__ imports every layer, so load the subpackage without running it
    code = ("import importlib.util, sys, types, pathlib; "
            f"root = pathlib.Path({str(ROOT)!r}); "
            "pkg = types.ModuleType('hmmlib'); pkg.__path__ = [str(root)]; sys.modules['hmmlib'] = pkg; " + code)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded = set(eval(out.stdout))
    own = LAYERS[name.split(".")[1]]
    assert all(LAYERS[m] <= own for m in loaded if m in LAYERS), (name, loaded)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_stay_short(path):
    assert len(path.read_text().splitlines()) <= 550, f"{path.relative_to(ROOT)}: split it (about 500 lines at most)"


def test_public_api_is_curated_with_the_version_first():
    assert hmmlib.__all__[0] == "__version__"
    for name in hmmlib.__all__:
        assert hasattr(hmmlib, name), name
    for sub in ("hmm", "lm", "adapt", "memory", "experiments"):
        mod = importlib.import_module(f"hmmlib.{sub}")
        missing = [n for n in mod.__all__ if not hasattr(mod, n)]
        assert not missing, (sub, missing)
