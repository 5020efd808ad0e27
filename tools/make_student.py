"""Make the student edition: the book with every solution removed.

    python tools/make_student.py [--out _build/student_src] [--notebooks _build/student/notebooks]
                                 [--branch student]
    python tools/make_student.py --check _build/student      # search built output for solution text

What it writes to ``--out`` (default ``_build/student_src``) is a complete, publishable copy of the
repository's runnable part: ``_config.yml``, ``_toc.yml``, ``book/`` with every notebook stripped of each
gated solution (every cell from ``{solution-start}`` to ``{solution-end}``, both included), ``hmmlib/``,
``pyproject.toml``, ``requirements.txt``, ``binder/`` and the tools Binder's postBuild runs. Jupyter Book
builds it like the instructor's edition (``make student`` does, into ``_build/student/html``), and the
stripped notebooks, without outputs, are also written to ``--notebooks``.

Launch buttons: the copy's ``_config.yml`` says ``repository.branch: <--branch>`` (default ``student``), and
``repository.url: <--url>`` when given, so the Binder and Colab buttons of the student website, and the
chapters' Colab install cells, use that branch. Publish the copy there (book/instructors.md): the instructor's
branch, which has the solutions, is never linked.

Why not ``hide_solutions: true``: sphinx-exercise 1.2.1 raises ``NotImplementedError`` on gated solutions,
and it would only hide them from the HTML, not from the downloads, Binder or Colab.
"""
from __future__ import annotations

import argparse
import copy
import html
import json
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import install_cell  # noqa: E402
START = re.compile(r"^\s*(```+|:::+)\s*\{solution-start\}", re.M)
END = re.compile(r"^\s*(```+|:::+)\s*\{solution-end\}", re.M)
# What the student copy contains besides book/ (paths relative to the repository root; missing ones skipped).
COPY = ["_toc.yml", "hmmlib", "pyproject.toml", "requirements.txt", "binder", "tools/pretrain_cache.py",
        "tools/install_cell.py", "LICENSE", "README.md"]
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints", "*.egg-info")


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return src if isinstance(src, str) else "".join(src)


def split_solutions(nb: dict) -> tuple[dict, list[dict]]:
    """Return (the notebook without its gated solutions, the removed cells).

    Raises ``ValueError`` for an unclosed or nested solution, which would otherwise leak or drop text."""
    kept, removed, inside = [], [], False
    for i, cell in enumerate(nb["cells"]):
        src = _source(cell)
        starts, ends = bool(START.search(src)), bool(END.search(src))
        if starts and inside:
            raise ValueError(f"cell {i}: solution-start inside another solution")
        if starts:
            inside = True
        if inside:
            removed.append(cell)
        else:
            if ends:
                raise ValueError(f"cell {i}: solution-end without solution-start")
            kept.append(cell)
        if ends and inside:
            inside = False
    if inside:
        raise ValueError("a solution-start has no solution-end")
    out = copy.deepcopy(nb)
    out["cells"] = copy.deepcopy(kept)
    return out, removed


def clear_outputs(nb: dict) -> dict:
    nb = copy.deepcopy(nb)
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    return nb


def _write_nb(nb: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def student_config(text: str, branch: str, url: str | None = None) -> str:
    """The instructor's _config.yml with the student title and the launch buttons on ``branch`` (of ``url``,
    when given: e.g. a public repository for the student edition of a private instructor repository)."""
    if url is not None:
        text, n = re.subn(r"(?m)^(repository:\n(?:[ \t]+.*\n)*?)[ \t]+url:.*\n", rf"\1  url: {url}\n", text)
        if n != 1:
            raise ValueError("_config.yml: expected one `url:` under `repository:`")
    text, n = re.subn(r"(?m)^(repository:\n(?:[ \t]+.*\n)*?)[ \t]+branch:.*\n", rf"\1  branch: {branch}\n", text)
    if n != 1:
        raise ValueError("_config.yml: expected one `branch:` under `repository:`")
    text, n = re.subn(r'(?m)^title:\s*"?(.*?)"?\s*$', r'title: "\1 (student edition)"', text, count=1)
    if n != 1:
        raise ValueError("_config.yml: expected a `title:`")
    return text


def make_student(out: Path, notebooks: Path | None, branch: str = "student", root: Path = ROOT,
                 url: str | None = None) -> dict:
    """Write the student copy; return {notebook name: number of removed cells}."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():                       # keep the student build's execution cache and _build
        if old.name not in (".jupyter_cache", "_build"):
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    (out / "_config.yml").write_text(student_config((root / "_config.yml").read_text(), branch, url))
    repo_url, repo_branch = install_cell.read_repository(out / "_config.yml")
    for rel in COPY:
        src = root / rel
        if src.is_dir():
            shutil.copytree(src, out / rel, ignore=IGNORE)
        elif src.is_file():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out / rel)
    shutil.copytree(root / "book", out / "book", ignore=IGNORE)
    removed = {}
    if notebooks is not None:
        if notebooks.exists():
            shutil.rmtree(notebooks)
        notebooks.mkdir(parents=True)
    for path in sorted((out / "book").rglob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        stripped, cut = split_solutions(nb)
        stripped = clear_outputs(stripped)
        if path.name[:2].isdigit():      # chapters: the Colab install cell installs from the student branch
            install_cell.update_notebook(stripped, repo_url, repo_branch)
        removed[path.name] = len(cut)
        _write_nb(stripped, path)
        if notebooks is not None:
            _write_nb(stripped, notebooks / path.relative_to(out / "book"))
    for path in (out / "book").rglob("*.md"):
        if START.search(path.read_text(encoding="utf-8")):
            raise ValueError(f"{path}: solutions in Markdown pages are not stripped; move them to a notebook")
    return removed


# ----------------------------------------------------------------------------- leak check
def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _visible_text(raw: str) -> str:
    raw = re.sub(r"(?s)<(script|style)\b.*?</\1>", " ", raw)
    return html.unescape(re.sub(r"<[^>]+>", " ", raw))


def solution_probes(root: Path = ROOT, n_words: int = 7) -> list[str]:
    """Word sequences that occur in some solution and nowhere else in the book's notebooks and pages."""
    solution_text, other_text = [], []
    for path in sorted((root / "book").glob("*.ipynb")):
        nb = json.loads(path.read_text(encoding="utf-8"))
        kept, cut = split_solutions(nb)
        solution_text += [_source(c) for c in cut if not START.search(_source(c)) or _source(c).count("\n") > 2]
        other_text += [_source(c) for c in kept["cells"]]
    other_text += [p.read_text(encoding="utf-8") for p in (root / "book").glob("*.md")]
    others = " " + " ".join(_words(" ".join(other_text))) + " "
    probes = []
    for text in solution_text:
        for line in text.splitlines():
            line = re.sub(r"(```+|:::+)\s*\{solution-(start|end)\}.*", "", line)
            w = _words(line)
            for i in range(0, max(len(w) - n_words + 1, 0), n_words):
                probe = " ".join(w[i:i + n_words])
                wordy = sum(t.isalpha() and len(t) >= 2 for t in w[i:i + n_words]) >= 3   # not just numbers
                if wordy and f" {probe} " not in others and probe not in probes:
                    probes.append(probe)
    return probes


def find_leaks(folder: Path, probes: list[str]) -> list[tuple[str, str]]:
    """(file, probe) for every probe found in the text of a file under ``folder``."""
    leaks = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix not in (".html", ".ipynb", ".js", ".json", ".md", ".txt", ".py"):
            continue
        if "mathjax" in path.parts or path.name.endswith(".min.js"):
            continue
        raw = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix == ".ipynb":
            nb = json.loads(raw)
            raw = "\n".join(_source(c) for c in nb["cells"])
        elif path.suffix == ".html":
            raw = _visible_text(raw)
        text = " " + " ".join(_words(raw)) + " "
        leaks += [(str(path.relative_to(folder)), p) for p in probes if f" {p} " in text]
    return leaks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "_build" / "student_src")
    ap.add_argument("--notebooks", type=Path, default=ROOT / "_build" / "student" / "notebooks")
    ap.add_argument("--branch", default="student", help="branch the student edition's launch buttons open")
    ap.add_argument("--url", default=None, help="repository of the student edition (default: _config.yml's)")
    ap.add_argument("--check", type=Path, metavar="FOLDER",
                    help="only search FOLDER (a built student edition) for solution text, and exit 1 on a leak")
    args = ap.parse_args(argv)
    if args.check is not None:
        probes = solution_probes()
        leaks = find_leaks(args.check, probes)
        for f, p in leaks[:20]:
            print(f"LEAK {f}: ...{p}...", file=sys.stderr)
        print(f"make_student: searched {args.check} for {len(probes)} solution-only phrases: "
              f"{'%d leaks' % len(leaks) if leaks else 'none found'}")
        return 1 if leaks else 0
    removed = make_student(args.out, args.notebooks, args.branch, url=args.url)
    for name, n in removed.items():
        print(f"{name}: {n} solution cells removed")
    print(f"student sources in {args.out}; notebooks in {args.notebooks}; launch buttons open branch {args.branch!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
