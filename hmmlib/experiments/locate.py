"""Where the committed records live, in a checkout and in an installed package.

The results pipeline writes ``results/<preset>/<figure>.jsonl`` in the repository. A checkout (``make``,
Binder, a course server) reads them there. A wheel (``pip install git+...``, which is what Colab's install
cell does) ships the same files as the data package ``hmmlib._results`` (see ``pyproject.toml``), so the
chapters that read records work from an installed package too. ``$HMMBOOK_RESULTS`` overrides both.

A chapter that asks for records that are not there must fail with a message, not quietly run a grid for
minutes or hours: :func:`check_may_run` is the rule for that (at most the ``ci`` grid runs unasked).
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["RESULTS_ENV", "RUN_MISSING_ENV", "default_results", "check_may_run"]

#: A folder of records to read instead of the checkout's ``results/`` or the package's copy.
RESULTS_ENV = "HMMBOOK_RESULTS"
#: Set to ``1`` to let a chapter run the missing jobs of a grid larger than ``ci`` in-process.
RUN_MISSING_ENV = "HMMBOOK_RUN_MISSING"


def default_results(package: Path | None = None) -> Path:
    """The folder of committed records: ``$HMMBOOK_RESULTS`` if set; else ``results/`` of the checkout that
    ``package`` (hmmlib's folder, default: this one) sits in; else the copy inside the package,
    ``hmmlib/_results``, which is what an installed wheel has. The path is returned even when it does not
    exist; readers of a missing file raise a ``ValueError`` that names it."""
    env = os.environ.get(RESULTS_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    package = Path(__file__).resolve().parents[1] if package is None else Path(package)
    root = package.parent
    if (root / "pyproject.toml").is_file() and (root / "results").is_dir():
        return root / "results"
    return package / "_results"


def check_may_run(figure: str, preset: str, missing: int, path: str | os.PathLike, *, allowed: bool = False) -> None:
    """Raise a ``ValueError`` when ``missing`` jobs of ``figure`` at ``preset`` would run in-process although
    their records are absent from ``path``, unless the grid is the ``ci`` one (seconds), ``allowed`` is true,
    or ``$HMMBOOK_RUN_MISSING`` is ``1``. The message names the missing file and both ways to fix it."""
    if missing <= 0 or preset == "ci" or allowed or os.environ.get(RUN_MISSING_ENV, "").strip() == "1":
        return
    raise ValueError(
        f"{missing} job(s) of {figure} at the {preset!r} preset have no record in {path}. Running them here could take "
        f"hours; either install a copy of hmmlib that ships the records (pip install from the repository: they are in "
        f"results/{preset}/{figure}.jsonl), or run them on purpose: python -m hmmlib.experiments.reproduce {figure} "
        f"--preset {preset} (or set {RUN_MISSING_ENV}=1).")
