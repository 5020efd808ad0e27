"""Showing values in notebooks, with or without the book's build tools.

:func:`glue` is myst-nb's ``glue`` when myst-nb is installed (the website build, Binder, ``make lab``), so
numbers computed in a chapter can be quoted in its prose; elsewhere (Colab, a bare Jupyter) it just shows the
value when ``display=True`` and otherwise does nothing. Chapters use
``from hmmlib.display import glue`` instead of ``from myst_nb import glue``, so that they run where myst-nb
is not installed.
"""
from __future__ import annotations

from typing import Any

__all__ = ["glue", "HAVE_MYST_NB"]

try:
    from myst_nb import glue as _myst_glue
except ImportError:           # Colab and other environments without the book's build tools
    _myst_glue = None

HAVE_MYST_NB = _myst_glue is not None


def glue(name: str, variable: Any, display: bool = True) -> None:
    """Store ``variable`` under ``name`` for the book's ``{glue}`` roles (via myst-nb when installed), and show
    it when ``display`` is true."""
    if _myst_glue is not None:
        _myst_glue(name, variable, display=display)
        return
    if display:
        try:
            from IPython.display import display as _show
        except ImportError:
            print(repr(variable))
        else:
            _show(variable)
