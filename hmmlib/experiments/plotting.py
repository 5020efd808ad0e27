"""Plotting helpers with the book's house style: explicit axes in, axes out, no titles
(captions belong to the page)."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap

__all__ = ["use_book_style", "plot_matrix", "plot_states_and_tokens", "plot_curve", "plot_learning_curve",
           "plot_distributions"]


def use_book_style() -> None:
    """Small, readable figures that look the same on the website and in Jupyter."""
    plt.rcParams.update({
        "figure.figsize": (6.0, 3.2),
        "figure.dpi": 110,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": False,
        "font.size": 10,
        "legend.frameon": False,
    })


def _np(x) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=float)


def plot_matrix(ax: Axes, M, *, xlabel: str, ylabel: str, cmap: str = "viridis", vmax: float | None = 1.0,
                colorbar: bool = True) -> Axes:
    """Heat map of a matrix (e.g. ``A`` or ``W``) with integer tick labels."""
    M = _np(M)
    im = ax.imshow(M, cmap=cmap, vmin=0.0, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    step_x = max(1, M.shape[1] // 10)
    step_y = max(1, M.shape[0] // 10)
    ax.set_xticks(range(0, M.shape[1], step_x))
    ax.set_yticks(range(0, M.shape[0], step_y))
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return ax


def plot_states_and_tokens(ax: Axes, tokens, states, num_states: int, symbols: Sequence[str] | None = None) -> Axes:
    """One sequence: each token printed in a cell coloured by its hidden state."""
    tokens, states = _np(tokens).astype(int), _np(states).astype(int)
    T = len(tokens)
    cmap = ListedColormap(plt.get_cmap("tab20" if num_states > 10 else "tab10").colors[:num_states])
    ax.imshow(states[None, :], cmap=cmap, vmin=-0.5, vmax=num_states - 0.5, aspect="auto")
    for t, x in enumerate(tokens):
        ax.text(t, 0, symbols[x] if symbols is not None else str(x), ha="center", va="center", fontsize=8)
    ax.set_yticks([])
    ax.set_xlabel("position $t$ (colour = hidden state $H_t$, text = token $X_t$)")
    ax.set_xticks(range(0, T, max(1, T // 16)))
    return ax


def plot_curve(ax: Axes, x, y, *, label: str | None = None, xlabel: str = "", ylabel: str = "",
               logx: bool = False, **kw) -> Axes:
    """A line with markers; several calls share an axis and a legend."""
    ax.plot(_np(x), _np(y), marker="o", ms=3, label=label, **kw)
    if logx:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if label is not None:
        ax.legend()
    return ax


def plot_learning_curve(ax: Axes, history: list[dict], *, key: str = "model_loss", floor_key: str = "bayes_loss",
                        baseline_key: str | None = "unigram_loss", label: str = "model") -> Axes:
    """The model's evaluation loss over training, with the Bayes-optimal floor (dashed) and the
    unigram baseline (dotted) from the same evaluations."""
    steps = [r["step"] for r in history]
    line, = ax.plot(steps, [r[key] for r in history], marker="o", ms=3, label=label)
    ax.plot(steps, [r[floor_key] for r in history], ls="--", color=line.get_color(), alpha=0.7,
            label=f"{label}: Bayes-optimal floor")
    if baseline_key is not None and baseline_key in history[0]:
        ax.plot(steps, [r[baseline_key] for r in history], ls=":", color="gray", label="unigram baseline")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (nats per token)")
    ax.legend(fontsize=8)
    return ax


def plot_distributions(ax: Axes, exact, model, *, labels: tuple[str, str] = ("exact", "model")) -> Axes:
    """Two distributions over symbols side by side as bars."""
    exact, model = _np(exact), _np(model)
    idx = np.arange(len(exact))
    ax.bar(idx - 0.2, exact, width=0.4, label=labels[0])
    ax.bar(idx + 0.2, model, width=0.4, label=labels[1])
    ax.set_xticks(idx)
    ax.set_xlabel("symbol")
    ax.set_ylabel("probability")
    ax.legend(fontsize=8)
    return ax
