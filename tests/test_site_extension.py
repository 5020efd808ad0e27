"""book/_ext/hmmbook_site.py: quiet kernels, the repository-URL notice, executed-notebook downloads."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "book" / "_ext"))
import hmmbook_site  # noqa: E402


class _Log:
    def __init__(self):
        self.info_msgs, self.warnings = [], []

    def info(self, msg, *a, **k):
        self.info_msgs.append(str(msg))

    def warning(self, msg, *a, **k):
        self.warnings.append(str(msg))


def _app(tmp_path, url):
    return SimpleNamespace(config=SimpleNamespace(html_theme_options={"repository_url": url}), srcdir=str(tmp_path))


def test_quiet_kernels_keeps_user_settings():
    env = {"PYTHONWARNINGS": "error::FutureWarning"}
    hmmbook_site.quiet_kernels(env)
    assert env["TQDM_DISABLE"] == "1"
    assert env["PYTHONWARNINGS"] == "error::FutureWarning,ignore:IProgress not found"
    hmmbook_site.quiet_kernels(env)                                  # idempotent
    assert env["PYTHONWARNINGS"].count("IProgress") == 1
    env = {"TQDM_DISABLE": "0"}
    hmmbook_site.quiet_kernels(env)
    assert env["TQDM_DISABLE"] == "0"


def test_placeholder_url_is_a_notice_not_a_warning(tmp_path, monkeypatch):
    log = _Log()
    monkeypatch.setattr(hmmbook_site, "logger", log)
    monkeypatch.delenv("HMMBOOK_PUBLISH", raising=False)
    hmmbook_site.check_repository_url(_app(tmp_path, hmmbook_site.PLACEHOLDER_URL))
    assert not log.warnings and any("placeholder" in m for m in log.info_msgs)
    monkeypatch.setenv("HMMBOOK_PUBLISH", "1")
    hmmbook_site.check_repository_url(_app(tmp_path, hmmbook_site.PLACEHOLDER_URL))
    assert any("placeholder" in m for m in log.warnings)
    log2 = _Log()
    monkeypatch.setattr(hmmbook_site, "logger", log2)
    hmmbook_site.check_repository_url(_app(tmp_path, "https://github.com/someone/hmmbook"))
    assert not log2.warnings and not log2.info_msgs


def test_stale_install_cell_url_is_a_warning(tmp_path, monkeypatch):
    (tmp_path / "book").mkdir()
    cell = {"cell_type": "code", "metadata": {"tags": ["remove-cell", "hmmbook-install"]}, "outputs": [],
            "source": ['REPOSITORY_URL = "https://github.com/old/place"\n']}
    (tmp_path / "book" / "01_x.ipynb").write_text(json.dumps({"cells": [cell]}))
    log = _Log()
    monkeypatch.setattr(hmmbook_site, "logger", log)
    hmmbook_site.check_repository_url(_app(tmp_path, "https://github.com/new/place"))
    assert any("rerun `python tools/install_cell.py`" in m for m in log.warnings)


def test_config_urls_agree_with_the_install_cells():
    sys.path.insert(0, str(ROOT / "tools"))
    import install_cell

    url, _ = install_cell.read_repository(ROOT / "_config.yml")
    assert hmmbook_site.PLACEHOLDER_URL == "https://github.com/hmmbook/hmmbook"
    assert url.startswith("https://")


def test_executed_notebooks_replace_sources(tmp_path):
    out = tmp_path / "html"
    (out / "_sources" / "book").mkdir(parents=True)
    (tmp_path / "jupyter_execute" / "book").mkdir(parents=True)
    (out / "_sources" / "book" / "01_x.ipynb").write_text("source")
    (tmp_path / "jupyter_execute" / "book" / "01_x.ipynb").write_text("executed")
    (tmp_path / "jupyter_execute" / "book" / "stale.ipynb").write_text("not in the site")
    app = SimpleNamespace(outdir=str(out), builder=SimpleNamespace(format="html"))
    hmmbook_site.executed_notebook_downloads(app, None)
    assert (out / "_sources" / "book" / "01_x.ipynb").read_text() == "executed"
    assert not (out / "_sources" / "book" / "stale.ipynb").exists()
