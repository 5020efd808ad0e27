"""hmmlib.display.glue works with and without myst-nb."""
from __future__ import annotations

import builtins
import importlib
import sys

import hmmlib.display


def test_glue_uses_myst_nb_when_installed(monkeypatch):
    calls = []
    monkeypatch.setattr(hmmlib.display, "_myst_glue", lambda n, v, display=True: calls.append((n, v, display)))
    hmmlib.display.glue("x", 1.5, display=False)
    assert calls == [("x", 1.5, False)]


def test_glue_without_myst_nb(monkeypatch, capsys):
    real_import = builtins.__import__

    def no_myst(name, *args, **kwargs):
        if name == "myst_nb" or name.startswith("myst_nb."):
            raise ImportError("no myst_nb here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_myst)
    monkeypatch.delitem(sys.modules, "myst_nb", raising=False)
    try:
        mod = importlib.reload(hmmlib.display)
        assert not mod.HAVE_MYST_NB
        mod.glue("hidden", 3, display=False)
        assert capsys.readouterr().out == ""
        mod.glue("shown", 42)
        assert "42" in capsys.readouterr().out
    finally:
        monkeypatch.setattr(builtins, "__import__", real_import)
        importlib.reload(hmmlib.display)
