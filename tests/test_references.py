"""References a reader can follow: the book, hmmlib, the tools and the READMEs cite the papers themselves (section,
figure, table, appendix) and the authors' code (repository and file), never a private summary of them ("the
digest") nor a file outside this repository. book/papers.md gathers the papers' protocols and numbers with their
sources.

A failure lists every offending line as ``path:line: text``; replace each with the paper's own location (see
book/papers.md for the sources)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: What readers see: the chapters and pages, hmmlib's docstrings and comments, the tools, the READMEs.
SCOPE = ("book", "hmmlib", "tools", "README.md", "results/README.md", "hmmlib/README.md")
SUFFIXES = {".py", ".md", ".ipynb", ".sh", ".yml", ".toml", ".txt"}

#: A citation of a private summary of a paper, or of a file that readers do not have.
PATTERNS = {
    "the digest": re.compile(r"\b(?:the|reference|this|our|a)\s+digest\b", re.I),
    "digest section": re.compile(r"\bdigest(?:'s)?,?\s*(?:sections?|§|R\d|appendix|table|figure)", re.I),
    "digest of": re.compile(r"\bdigest\s+of\b|\bdigest's\b|\(\s*digest\b", re.I),
    "a summary file": re.compile(r"\b(?:wei2021|prefix_tuning|hmm_software|executable_books)\.md\b", re.I),
    "shared folder": re.compile(r"(?:^|[\s`'\"(])(?:\.\./)*shared/(?:reference|reviews)\b"),
    "absolute path": re.compile(r"(?:^|[\s`'\"(])/(?:work|home|Users|tmp)/[\w.-]+"),
}
RELATIVE = re.compile(r"(?:^|[\s`'\"(])((?:\.\./)+[\w.-]+(?:/[\w.-]+)*)")


def _files() -> list[Path]:
    out = []
    for name in SCOPE:
        p = ROOT / name
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            out += [f for f in sorted(p.rglob("*")) if f.is_file() and f.suffix in SUFFIXES
                    and "__pycache__" not in f.parts and "_static" not in f.parts]
    return sorted(set(out))


def offences(path: Path, text: str) -> list[str]:
    """Every line of ``text`` (the content of ``path``) that cites a summary or a file outside the repository."""
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        hits = [what for what, rx in PATTERNS.items() if rx.search(line)]
        for rel in RELATIVE.findall(line):
            target = (path.parent / rel).resolve()
            if not target.is_relative_to(ROOT):
                hits.append(f"path outside the repository ({rel})")
        if hits:
            where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            found.append(f"{where}:{n}: [{', '.join(hits)}] {line.strip()[:160]}")
    return found


def test_nothing_cites_the_digest_or_a_file_outside_the_repository():
    files = _files()
    assert any(f.name == "papers.md" for f in files) and any(f.suffix == ".ipynb" for f in files)
    bad = [o for f in files for o in offences(f, f.read_text(encoding="utf-8"))]
    assert not bad, ("references a reader cannot follow (cite the paper's section/figure/table or the authors' "
                     "repository and file instead):\n" + "\n".join(bad))


@pytest.mark.parametrize("line", [
    "The body of the paper was not available to us (see the reference digest).",
    "the paper's protocol, digest section 4.1: a new HMM",
    "(digest R4, :mod:`hmmlib.theory`)",
    "sketched in the digest's section 2.5",
    "The paper's Fig. B1 (wei2021.md section 4.10)",
    "the whole batch (``../shared/reference/hmm_software.md`` measured it",
    "see shared/reference/prefix_tuning.md",
    "Digest of the prefix-tuning paper",
    "as the digest's claims say",
    "(digest, 4.10)",
    "read /work/shared/notes.txt",
])
def test_the_check_catches_what_it_should(line):
    assert offences(ROOT / "hmmlib" / "x.py", line)


@pytest.mark.parametrize("line", [
    "digest = model_digest(key)",
    "return h.hexdigest()",
    "path = folder / f\"{digest}.pt\"",
    "see ``src/run_finetune_seed.sh`` of ``sangmichaelxie/pretraining_analysis``",
    "Li & Liang 2021, Section 7.2, Table 5",
    "the cache falls back to ~/.cache/hmmbook/models",
    "../results/README.md",
])
def test_the_check_lets_legitimate_lines_pass(line):
    assert not offences(ROOT / "hmmlib" / "x.py", line)


def test_a_path_that_leaves_the_repository_is_caught():
    assert offences(ROOT / "book" / "x.md", "see ../../notes.md")
    assert not offences(ROOT / "book" / "x.md", "see ../results/README.md")


def test_the_papers_page_is_in_the_book_with_the_labels_the_chapters_use():
    toc = (ROOT / "_toc.yml").read_text(encoding="utf-8")
    assert "file: book/papers" in toc
    page = (ROOT / "book" / "papers.md").read_text(encoding="utf-8")
    defined = set(re.findall(r"(?m)^\(([\w-]+)\)=$", page))
    used = set()
    for f in (ROOT / "book").glob("*"):
        if f.suffix in {".md", ".ipynb"}:
            used |= {m for m in re.findall(r"\{ref\}`(?:[^`<]*<)?(papers[\w-]*)>?`", f.read_text(encoding="utf-8"))}
    assert used and used <= defined, f"labels used but not defined in book/papers.md: {used - defined}"
    for source in ("arXiv:2106.09226", "arXiv:2101.00190", "sangmichaelxie/pretraining_analysis",
                   "XiangLi1999/PrefixTuning"):
        assert source in page
