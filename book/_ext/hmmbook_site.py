"""hmmbook's small Sphinx extension (loaded through ``sphinx.local_extensions`` in ``_config.yml``).

1. **Quiet notebook execution.** Before any chapter executes it sets, for the kernels the build starts,
   ``TQDM_DISABLE=1`` (tqdm >= 4.66 reads it: no progress bars on the website) and a warnings filter for
   tqdm's "IProgress not found" warning (which would print the build machine's paths). Values already in the
   environment win, so ``TQDM_DISABLE=0 jupyter-book build .`` shows the bars again.
2. **One repository URL.** ``repository.url`` in ``_config.yml`` is the only place the URL lives: the
   repository, issue and launch buttons use it, and ``tools/install_cell.py`` embeds it in the chapters'
   Colab install cell. While it is the placeholder, every build prints a notice (an info message, so that CI's
   ``-W`` build still passes); ``HMMBOOK_PUBLISH=1`` turns the notice into a Sphinx warning for a real
   release (``HMMBOOK_PUBLISH=1 jupyter-book build . -W`` fails until the URL is set). A chapter whose install
   cell embeds a different URL is a Sphinx warning: rerun ``python tools/install_cell.py``.
3. **A clean browser console.** Each script is included once (jupyter-book 1.x adds sphinx-thebe's and
   sphinx-togglebutton's inline scripts twice, and the second ``const THEBE_JS_URL`` is a SyntaxError), and the
   theme's colour mode defaults to ``light`` (an empty mode makes the theme log an error on every page).
   MathJax is loaded on every page, since the navigation shows section titles with math everywhere.
4. **Downloads with outputs.** After an HTML build the ``.ipynb`` download button serves the *executed*
   notebook (myst-nb's copy in ``_build/jupyter_execute``) instead of the output-free source.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.console import bold, red

logger = logging.getLogger(__name__)

PLACEHOLDER_URL = "https://github.com/hmmbook/hmmbook"
TQDM_WARNING_FILTER = "ignore:IProgress not found"
INSTALL_CELL_TAG = "hmmbook-install"
_URL_IN_CELL = re.compile(r"^REPOSITORY_URL = \"([^\"]*)\"", re.M)


def quiet_kernels(environ: dict = os.environ) -> None:
    """Set the variables that keep progress bars and tqdm's widget warning out of executed notebooks."""
    environ.setdefault("TQDM_DISABLE", "1")
    filters = [f for f in environ.get("PYTHONWARNINGS", "").split(",") if f]
    if TQDM_WARNING_FILTER not in filters:
        environ["PYTHONWARNINGS"] = ",".join(filters + [TQDM_WARNING_FILTER])


def _repository_url(app: Sphinx) -> str:
    return (app.config.html_theme_options or {}).get("repository_url", "") or ""


def check_repository_url(app: Sphinx) -> None:
    url = _repository_url(app)
    if url.rstrip("/") == PLACEHOLDER_URL:
        message = (f"repository.url in _config.yml is still the placeholder {PLACEHOLDER_URL}: the repository, "
                   "issue, Binder and Colab buttons and the chapters' install cells point there. Set it when you "
                   "publish, then rerun `python tools/install_cell.py` (see README, 'Publishing').")
        if os.environ.get("HMMBOOK_PUBLISH", "") not in ("", "0"):
            logger.warning(message)
        else:
            logger.info(bold(red("hmmbook notice: ")) + message)
    # The install cells must embed the same URL (tools/install_cell.py writes them from _config.yml).
    for path in sorted(Path(app.srcdir).glob("book/*.ipynb")):
        try:
            cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        except (OSError, ValueError, KeyError):
            continue
        for cell in cells:
            if INSTALL_CELL_TAG in cell.get("metadata", {}).get("tags", []):
                m = _URL_IN_CELL.search("".join(cell["source"]))
                if m and m.group(1).rstrip("/") != url.rstrip("/"):
                    logger.warning(f"{path.name}: the install cell installs from {m.group(1)} but repository.url "
                                   f"is {url}; rerun `python tools/install_cell.py`.")
                break


def executed_notebook_downloads(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    executed = Path(app.outdir).parent / "jupyter_execute"
    sources = Path(app.outdir) / "_sources"
    copied = 0
    for nb in executed.rglob("*.ipynb"):
        target = sources / nb.relative_to(executed)
        if target.is_file():
            shutil.copyfile(nb, target)
            copied += 1
    logger.info(f"hmmbook: {copied} executed notebooks placed behind the download buttons")


def default_theme_mode(app: Sphinx, config) -> None:
    context = dict(config.html_context or {})
    context.setdefault("default_mode", "light")      # pydata-sphinx-theme reads it from html_context
    config.html_context = context


def dedupe_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        attrs = getattr(js, "attributes", {}) or {}
        filename = getattr(js, "filename", js) or ""          # inline scripts have None or "" as filename
        key = (str(filename), tuple(sorted((k, str(v)) for k, v in attrs.items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    context["script_files"] = unique


def setup(app: Sphinx) -> dict:
    quiet_kernels()
    # MathJax on every page: the navigation shows section titles with math on pages that have none themselves
    # (search, index, proof index), where Sphinx would otherwise leave the TeX raw.
    app.set_html_assets_policy("always")
    app.connect("config-inited", default_theme_mode)
    app.connect("html-page-context", dedupe_scripts, priority=900)
    app.connect("builder-inited", check_repository_url)
    app.connect("build-finished", executed_notebook_downloads)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
