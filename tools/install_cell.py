"""Insert or update the Colab install cell: the first code cell of every chapter notebook.

    python tools/install_cell.py                 # all of book/0*.ipynb, from _config.yml
    python tools/install_cell.py --check         # exit 1 if any chapter's cell is missing or stale

The cell is tagged ``remove-cell`` (Jupyter Book leaves it off the website) and ``hmmbook-install`` (how this
script finds it again; running the script twice changes nothing). When ``import hmmlib`` works, which is the
case under ``make test`` (nbval), ``make book``, ``make lab`` and on Binder, the cell does nothing. Otherwise
(Colab, a fresh environment) it pip-installs hmmlib (with its ``hf`` extra, transformers and peft, in a chapter
that uses them) from ``repository.url`` at ``repository.branch``, both read
from ``_config.yml`` when this script runs and written into the cell, plus myst-nb if the chapter still
imports it directly. ``HMMBOOK_INSTALL_SOURCE`` overrides where hmmlib comes from (a local checkout, a wheel),
which is how the test of a Colab-like environment installs the working tree. While ``repository.url`` is still
the placeholder (:data:`PLACEHOLDER_URL`, an address anyone could register) the cell installs nothing: it raises
an error that says to set ``repository.url`` in ``_config.yml`` and rerun this script.

Rerun this script whenever ``repository.url`` or ``repository.branch`` changes, or a chapter is added;
``tests/test_install_cell.py`` fails until you do, and the book build warns about a stale URL.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TAG = "hmmbook-install"
TAGS = ["remove-cell", TAG]
MYST_NB_PIN = "myst-nb==1.4.0"

#: The address _config.yml ships with. Anyone could register it, so a cell never installs from it.
PLACEHOLDER_URL = "https://github.com/hmmbook/hmmbook"

TEMPLATE = '''\
# Colab and other fresh environments: install hmmlib when it is missing (nothing happens when it imports).
# Written by tools/install_cell.py from _config.yml; hidden on the website.
REPOSITORY_URL = "{url}"
try:
    import hmmlib  # noqa: F401
except ImportError:
    import importlib, os, subprocess, sys
{resolve}
    print("installing hmmlib from", source.split("@", 1)[-1].strip(), "(a minute or two) ...")
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", source{extra}])
    importlib.invalidate_caches()
    import hmmlib  # noqa: F401'''

#: Where the cell installs from once repository.url is set.
SOURCE = '''\
    source = os.environ.get("HMMBOOK_INSTALL_SOURCE") or "hmmlib{extras} @ git+" + REPOSITORY_URL + "@{branch}"'''

#: While repository.url is the placeholder the cell refuses, and says how to set it.
REFUSE = '''\
    source = os.environ.get("HMMBOOK_INSTALL_SOURCE")
    if not source:
        raise RuntimeError(
            "hmmlib is not installed, and this chapter's install cell still holds the placeholder address "
            + REPOSITORY_URL + ", which it will not install from (anyone could register it). Whoever publishes "
            "the book: set repository.url in _config.yml, then run `python tools/install_cell.py` and commit the "
            "chapters. Readers: install hmmlib yourself (pip install 'hmmlib @ git+<the book repository URL>') "
            "or set HMMBOOK_INSTALL_SOURCE to a checkout or wheel of it, then rerun this cell.")'''


def read_repository(config: Path = ROOT / "_config.yml") -> tuple[str, str]:
    """(url, branch) of ``repository:`` in ``_config.yml`` (parsed with PyYAML when available)."""
    text = config.read_text(encoding="utf-8")
    try:
        import yaml
    except ImportError:
        block = re.search(r"(?m)^repository:\n((?:[ \t]+.*\n?)*)", text)
        fields = dict(re.findall(r"(?m)^[ \t]+(\w+):[ \t]*(\S+)", block.group(1))) if block else {}
    else:
        fields = (yaml.safe_load(text) or {}).get("repository") or {}
    url, branch = str(fields.get("url") or "").strip().rstrip("/"), str(fields.get("branch") or "main").strip()
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"{config}: repository.url must be an https URL; got {url!r}")
    return url, branch


def cell_source(nb: dict, url: str, branch: str) -> str:
    imports_myst = any("myst_nb" in _source(c) for c in nb["cells"]
                       if c["cell_type"] == "code" and TAG not in c.get("metadata", {}).get("tags", []))
    extra = f', "{MYST_NB_PIN}"' if imports_myst else ""
    uses_hf = any(re.search(r"\b(peft|transformers)\b|hf_bridge|peft_bridge", _source(c)) for c in nb["cells"]
                  if c["cell_type"] == "code" and TAG not in c.get("metadata", {}).get("tags", []))
    extras = "[hf]" if uses_hf else ""
    resolve = REFUSE if url == PLACEHOLDER_URL else SOURCE.format(extras=extras, branch=branch)
    return TEMPLATE.format(url=url, resolve=resolve, extra=extra)


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return src if isinstance(src, str) else "".join(src)


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def update_notebook(nb: dict, url: str, branch: str) -> bool:
    """Make the install cell the first code cell of ``nb`` (in place); return whether anything changed."""
    source = cell_source(nb, url, branch)
    cells = nb["cells"]
    existing = [i for i, c in enumerate(cells) if TAG in c.get("metadata", {}).get("tags", [])]
    first_code = next((i for i, c in enumerate(cells) if c["cell_type"] == "code"), len(cells))
    if len(existing) == 1 and existing[0] == first_code:
        cell = cells[first_code]
        if _source(cell) == source and cell["metadata"].get("tags") == TAGS and not cell.get("outputs"):
            return False
        cell["source"] = _lines(source)
        cell["metadata"]["tags"] = TAGS
        cell["outputs"], cell["execution_count"] = [], None
        return True
    for i in reversed(existing):
        del cells[i]
    first_code = next((i for i, c in enumerate(cells) if c["cell_type"] == "code"), len(cells))
    cell = {"cell_type": "code", "execution_count": None, "metadata": {"tags": TAGS}, "outputs": [],
            "source": _lines(source)}
    if nb.get("nbformat", 4) >= 4 and nb.get("nbformat_minor", 0) >= 5:
        cell["id"] = "hmmbook-install"
    cells.insert(first_code, cell)
    return True


def dumps(nb: dict) -> str:
    """The notebook as Jupyter writes it (nbformat when installed: same key order and indentation)."""
    try:
        import nbformat
    except ImportError:
        return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    return nbformat.writes(nbformat.from_dict(nb)) + "\n"


def chapters(root: Path = ROOT) -> list[Path]:
    return sorted((root / "book").glob("[0-9][0-9]_*.ipynb"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", type=Path, help="default: the chapters, book/NN_*.ipynb")
    ap.add_argument("--config", type=Path, default=ROOT / "_config.yml")
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a cell is missing or stale")
    args = ap.parse_args(argv)
    url, branch = read_repository(args.config)
    stale = []
    for path in args.notebooks or chapters(args.config.parent):
        text = path.read_text(encoding="utf-8")
        nb = json.loads(text)
        if update_notebook(nb, url, branch):
            stale.append(path)
            if not args.check:
                path.write_text(dumps(nb), encoding="utf-8")
    verb = "stale or missing in" if args.check else "updated"
    print(f"install cell ({url} @ {branch}): {verb} {len(stale)} notebook(s)"
          + ("".join(f"\n  {p}" for p in stale)))
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
