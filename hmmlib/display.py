"""Showing values in notebooks, with or without the book's build tools.

:func:`glue` is myst-nb's ``glue`` when myst-nb is installed (the website build, Binder, ``make lab``), so
numbers computed in a chapter can be quoted in its prose; elsewhere (Colab, a bare Jupyter) it just shows the
value when ``display=True`` and otherwise does nothing. Chapters use
``from hmmlib.display import glue`` instead of ``from myst_nb import glue``, so that they run where myst-nb
is not installed.

:func:`progress_bar` is the one progress bar of the package (pretraining, the results pipeline): tqdm's, off
when ``TQDM_DISABLE`` is set, which the website build does.
"""
from __future__ import annotations

import os
from typing import Any

__all__ = ["glue", "HAVE_MYST_NB", "progress_bar", "progress_disabled"]

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


def progress_disabled() -> bool:
    """Whether ``TQDM_DISABLE`` asks for no progress bars (any value but empty, ``0``, ``false``, ``no``, ``off``).

    tqdm >= 4.66 reads this variable for its terminal bar, but its notebook bar (what ``tqdm.auto`` picks in
    Jupyter when ipywidgets is installed) overrides it with ``disable=False`` and would put a widget, and the
    widget manager it loads from a CDN, into the website. So the package checks the variable itself.
    """
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no", "off")


def progress_bar(total: int, *, enabled: bool, **kwargs: Any):
    """A ``tqdm.auto`` bar over ``total`` steps, or ``None`` when ``enabled`` is false or
    :func:`progress_disabled`. Keyword arguments go to tqdm (``desc``, ``initial``, ``unit``, ...)."""
    if not enabled or progress_disabled():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, **kwargs)
