"""What an installed hmmlib (a wheel, as on Colab) needs: every subpackage in the wheel, the committed records
inside it as hmmlib._results, and a clear error instead of an hours-long grid when records are missing."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import setuptools

from hmmlib.experiments import locate

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_of_hmmlib_is_in_the_wheel():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    listed = set(re.findall(r'"(hmmlib[\w.]*)"', re.search(r"(?m)^packages = \[(.*)\]$", text).group(1)))
    found = set(setuptools.find_packages(str(ROOT), include=["hmmlib*"]))
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages in pyproject.toml"
    assert "hmmlib._results" in listed and '"hmmlib._results" = "results"' in text


def test_records_come_from_the_checkout_or_from_the_package(tmp_path, monkeypatch):
    monkeypatch.delenv(locate.RESULTS_ENV, raising=False)
    assert locate.default_results() == ROOT / "results"
    installed = tmp_path / "site-packages" / "hmmlib"
    installed.mkdir(parents=True)
    assert locate.default_results(installed) == installed / "_results"
    checkout = tmp_path / "repo"
    (checkout / "hmmlib").mkdir(parents=True)
    (checkout / "results").mkdir()
    (checkout / "pyproject.toml").write_text("")
    assert locate.default_results(checkout / "hmmlib") == checkout / "results"
    monkeypatch.setenv(locate.RESULTS_ENV, str(tmp_path / "mine"))
    assert locate.default_results(installed) == tmp_path / "mine"


def test_a_missing_grid_larger_than_ci_is_an_error_not_a_run(monkeypatch):
    monkeypatch.delenv(locate.RUN_MISSING_ENV, raising=False)
    with pytest.raises(ValueError, match=r"results/default/ideal\.jsonl.*reproduce ideal --preset default"):
        locate.check_may_run("ideal", "default", 560, "/x/hmmlib/_results")
    locate.check_may_run("ideal", "ci", 40, "/x")                    # the ci grid runs in seconds
    locate.check_may_run("ideal", "default", 0, "/x")                # nothing missing
    locate.check_may_run("ideal", "default", 3, "/x", allowed=True)  # asked for
    monkeypatch.setenv(locate.RUN_MISSING_ENV, "1")
    locate.check_may_run("ideal", "repro", 3, "/x")
