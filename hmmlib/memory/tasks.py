r"""Downstream tasks on the memory of a :class:`~hmmlib.memory.MemoryHMM` (as in the authors' ``src/generate_data_memory.py``).

An example is a sequence :math:`x = x_{0:T-1}` of the memory HMM; its label is a linear threshold of
the posterior of one cell :math:`j^\star` (``cell``):

.. math::

    q(x) = P(M_{j^\star} \mid X = x), \qquad y = \mathbb 1\!\left[\mu^\top q(x) \ge 0\right].

The paper's version (one cell) draws ``mu`` exactly as for the vanilla HMM, with ``num_values`` in
place of the number of states: :func:`hmmlib.adapt.paper_task` ``(num_values)``, a
:math:`2\times n` weight matrix with 6 entries drawn with replacement, argmax. Tasks whose training
split has a single class are redrawn, as in :mod:`hmmlib.adapt.tasks`.

Datasets also store the exact per-position masked conditionals :math:`g_t = P(X_t\mid x_{-t})`,
what a perfect masked LM would output at every position: the attention head's input on the ideal
model.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .model import MemoryHMM, check_memory_hmm, sample_memory, to_hmm
from .inference import memory_masked_conditionals, memory_posterior
from .. import _validate as check
from ..adapt.tasks import SPLITS, DownstreamTask, SingleClassError, check_two_classes, paper_task, sub_seed

__all__ = ["MemoryTaskDataset", "make_memory_dataset", "make_memory_splits", "memory_task_and_splits"]

_CHUNK = 1024  # sequences per exact-inference call (bounds the forward-backward buffers)


@dataclass(eq=False)
class MemoryTaskDataset:
    r"""Examples of a memory task with the exact quantities of the idealised model.

    Attributes:
        x: inputs :math:`x_{0:T-1}`, int64 ``(B, T)``.
        memory: the true memory contents, int64 ``(B, num_cells)``.
        posterior: exact :math:`q(x) = P(M_{j^\star} \mid x)`, ``(B, num_values)``.
        conditionals: exact :math:`g_t = P(X_t \mid x_{-t})` for every position, ``(B, T, V)``
            (``None`` when not requested).
        y: labels :math:`\mathbb 1[\mu^\top q(x) \ge 0]`, int64 ``(B,)``.
        majority_rate: frequency of the more common label (the constant classifier's accuracy).
        cell: the task's cell :math:`j^\star`.
    """

    x: torch.Tensor
    memory: torch.Tensor
    posterior: torch.Tensor
    conditionals: torch.Tensor | None
    y: torch.Tensor
    majority_rate: float
    cell: int

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def num_classes_present(self) -> int:
        return int(torch.unique(self.y).numel())


def _check(mem: MemoryHMM, task: DownstreamTask, cell: int) -> None:
    check_memory_hmm(mem)
    if not isinstance(task, DownstreamTask):
        raise ValueError(f"task must be a DownstreamTask (e.g. hmmlib.adapt.paper_task(num_values, seed=...)); "
                         f"got {type(task).__name__}.")
    if task.num_states != mem.num_values:
        raise ValueError(f"task.mu has length {task.num_states} but the memory has num_values={mem.num_values}; "
                         "draw the task over the memory's values (paper_task(mem.num_values, seed=...)).")
    if not isinstance(cell, int) or isinstance(cell, bool) or not 0 <= cell < mem.num_cells:
        raise ValueError(f"cell must be an int in [0, {mem.num_cells}); got {cell!r}.")


def make_memory_dataset(
    mem: MemoryHMM,
    task: DownstreamTask,
    num_examples: int,
    seq_len: int,
    *,
    seed: int,
    cell: int = 0,
    with_conditionals: bool = True,
    require_two_classes: bool = True,
) -> MemoryTaskDataset:
    r"""Sample ``num_examples`` sequences of length ``seq_len`` (:func:`~hmmlib.memory.sample_memory`) and
    label them with ``task`` on :math:`P(M_{\text{cell}} \mid x)`, computed exactly.

    Raises:
        ValueError: if ``require_two_classes`` and every example has the same label.
    """
    _check(mem, task, cell)
    check.positive_int("num_examples", num_examples)
    check.positive_int("seq_len", seq_len)
    check.seed(seed)
    x, memory, _, _ = sample_memory(mem, int(num_examples), int(seq_len), seed=int(seed))
    hmm = to_hmm(mem)
    post = torch.cat([memory_posterior(mem, x[i:i + _CHUNK], hmm)[:, cell] for i in range(0, len(x), _CHUNK)])
    cond = None
    if with_conditionals:
        cond = torch.cat([memory_masked_conditionals(mem, x[i:i + _CHUNK], hmm) for i in range(0, len(x), _CHUNK)])
    y = task.labels(post)
    rate = float(y.double().mean())
    ds = MemoryTaskDataset(x, memory, post, cond, y, max(rate, 1.0 - rate), cell)
    if require_two_classes:
        check_two_classes(y, "memory HMM", "memory_task_and_splits does this")
    return ds


def make_memory_splits(
    mem: MemoryHMM,
    task: DownstreamTask,
    sizes: tuple[int, int, int] = (5000, 500, 1000),
    seq_len: int = 128,
    *,
    seed: int,
    cell: int = 0,
    with_conditionals: bool = True,
) -> dict[str, MemoryTaskDataset]:
    """Train/val/test splits (the paper's 5000/500/1000 x 128 tokens by default), each from its own
    sub-seed of ``seed``; a single-class *train* split raises ``ValueError``."""
    if len(sizes) != 3:
        raise ValueError(f"sizes must be (train, val, test); got {sizes!r}.")
    check.seed(seed)
    return {
        name: make_memory_dataset(mem, task, n, seq_len, seed=sub_seed(seed, i), cell=cell,
                                  with_conditionals=with_conditionals, require_two_classes=(name == "train"))
        for i, (name, n) in enumerate(zip(SPLITS, sizes))
    }


def memory_task_and_splits(
    mem: MemoryHMM,
    *,
    seed: int,
    sizes: tuple[int, int, int] = (5000, 500, 1000),
    seq_len: int = 128,
    cell: int = 0,
    num_nonzero: int = 6,
    max_tries: int = 20,
    with_conditionals: bool = True,
) -> tuple[DownstreamTask, dict[str, MemoryTaskDataset], int]:
    """The paper's loop: draw :func:`~hmmlib.adapt.paper_task` ``(num_values)`` and its splits, redrawing
    (new sub-seed) while the train split has one class, at most ``max_tries`` times.

    Returns:
        ``(task, splits, num_tries)``.
    """
    check.positive_int("max_tries", max_tries)
    check.seed(seed)
    for i in range(int(max_tries)):
        task = paper_task(mem.num_values, seed=sub_seed(seed, 0, i), num_nonzero=num_nonzero)
        try:
            splits = make_memory_splits(mem, task, sizes, seq_len, seed=sub_seed(seed, 2, i), cell=cell,
                                        with_conditionals=with_conditionals)
            return task, splits, i + 1
        except SingleClassError:
            pass
    raise ValueError(f"none of {max_tries} task draws had two classes in its train split; "
                     "increase max_tries or the train size, or use a different seed or memory HMM.")
