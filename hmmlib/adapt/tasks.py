r"""Downstream tasks: a linear threshold of the posterior of the masked hidden state.

A downstream example is a sequence :math:`x_0, x_1, \dots, x_T` sampled from the HMM whose
token :math:`x_0` is masked. The model and the label see only :math:`x = x_{1:T}`, and

.. math::

    p(x) = P(H_0 \mid X_{1:T} = x), \qquad G(x) = W\,p(x), \qquad
    y = F^\star(x) = \mathbb 1\!\left[\mu^\top p(x) \ge 0\right].

The paper's generator (``src/generate_data.py``) draws a :math:`2\times K` matrix with 6 entries,
chosen uniformly *with replacement* among the :math:`2K`, set to :math:`\mathcal N(0,1)`, and
labels an example by the argmax over the two classes of ``weights @ p``; that is
:math:`\mu = w_1 - w_0` (we break exact ties towards class 1, matching ``>= 0``). Tasks whose
training split has a single class are rejected and redrawn (the paper's run script retries up
to 20 times).

All randomness is seeded: tasks are drawn with numpy's PCG64 (same task on every machine),
datasets with :func:`hmmlib.sample`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..hmm.model import HMM
from .. import _validate as check
from ..hmm.inference import posterior_h0
from ..hmm.sampling import sample

__all__ = [
    "DownstreamTask",
    "task_from_mu",
    "paper_task",
    "sample_task_with_two_classes",
    "TaskDataset",
    "make_dataset",
    "make_splits",
    "paper_task_and_splits",
    "sub_seed",
    "SingleClassError",
    "check_two_classes",
]

SPLITS = ("train", "val", "test")


class SingleClassError(ValueError):
    """Every example of a split that must have both labels has the same label (redraw the task)."""


def check_two_classes(y: torch.Tensor, model: str, redraw: str) -> None:
    """Raise :class:`SingleClassError` if the labels ``y`` hold a single class (``model`` and ``redraw``
    complete the message: what the task was drawn on, and what redraws it)."""
    if torch.unique(y).numel() < 2:
        raise SingleClassError(f"all {y.numel()} examples have label {int(y[0])}: the task has a single class on "
                               f"this {model}. Redraw the task with another seed ({redraw}).")


def sub_seed(seed: int, *keys: int) -> int:
    """A deterministic 63-bit seed derived from ``seed`` and integer ``keys`` (numpy ``SeedSequence``).

    Different keys give statistically independent streams, so the splits of one task and the
    redraws of a task never share random numbers.
    """
    check.seed(seed)
    words = np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFFFFFF, *map(int, keys)]).generate_state(2, np.uint32)
    return int((int(words[0]) << 31) ^ int(words[1]))


def _as_vector(name: str, value: Any) -> torch.Tensor:
    try:
        t = torch.as_tensor(np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value,
                                       dtype=np.float64))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be an array of real numbers; got {type(value).__name__} ({e}).") from e
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} has non-finite entries; all entries must be finite real numbers.")
    return t


# --------------------------------------------------------------------------- tasks
@dataclass(frozen=True, eq=False)
class DownstreamTask:
    r"""A binary task :math:`y = \mathbb 1[\mu^\top p(x) \ge 0]` on the posterior :math:`p(x)` of :math:`H_0`.

    Attributes:
        mu: the task vector, float64, shape ``(num_states,)``.
        weights: the ``(2, num_states)`` class-weight matrix ``mu`` came from (``mu = weights[1] -
            weights[0]``), or ``None`` for a task built directly from ``mu``.
        support: the sorted indices ``h`` with ``mu[h] != 0`` (int64), set automatically.
    """

    mu: torch.Tensor
    weights: torch.Tensor | None = None
    support: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        mu = _as_vector("mu", self.mu)
        if mu.dim() != 1 or mu.numel() == 0:
            raise ValueError(f"mu must be a non-empty vector of shape (num_states,); got shape {tuple(mu.shape)}.")
        object.__setattr__(self, "mu", mu)
        if self.weights is not None:
            w = _as_vector("weights", self.weights)
            if w.shape != (2, mu.numel()):
                raise ValueError(
                    f"weights must have shape (2, num_states) = (2, {mu.numel()}) to match mu; got {tuple(w.shape)}."
                )
            if not torch.allclose(w[1] - w[0], mu, rtol=0, atol=1e-12):
                raise ValueError("mu must equal weights[1] - weights[0] (the class-1 minus the class-0 scores).")
            object.__setattr__(self, "weights", w)
        object.__setattr__(self, "support", (mu != 0).nonzero().reshape(-1))

    @property
    def num_states(self) -> int:
        return self.mu.numel()

    def scores(self, posterior: torch.Tensor) -> torch.Tensor:
        r""":math:`\mu^\top p` for each row of ``posterior`` (shape ``(..., K)``), in float64."""
        posterior = torch.as_tensor(posterior)
        if posterior.shape[-1:] != (self.num_states,):
            raise ValueError(
                f"posterior must have shape (..., num_states) = (..., {self.num_states}); got {tuple(posterior.shape)}."
            )
        return posterior.to(torch.float64) @ self.mu.to(posterior.device)

    def labels(self, posterior: torch.Tensor) -> torch.Tensor:
        r"""Labels :math:`\mathbb 1[\mu^\top p \ge 0]` (int64) for each row of ``posterior``."""
        return (self.scores(posterior) >= 0).to(torch.int64)

    def __repr__(self) -> str:
        return f"DownstreamTask(num_states={self.num_states}, support={self.support.tolist()})"


def task_from_mu(mu: Any) -> DownstreamTask:
    r"""The task :math:`\mathbb 1[\mu^\top p(x) \ge 0]` for a given vector ``mu`` (shape ``(K,)``)."""
    return DownstreamTask(mu=mu)


def paper_task(num_states: int, *, seed: int, num_nonzero: int = 6) -> DownstreamTask:
    r"""The paper's task generator (``src/generate_data.py``).

    A flat vector of :math:`2K` zeros gets ``num_nonzero`` positions drawn uniformly *with
    replacement*; those positions are set to independent :math:`\mathcal N(0,1)` draws (a repeated
    position keeps its last draw, as numpy's fancy assignment does), and the vector is reshaped to
    ``weights`` of shape ``(2, K)``. The label is the argmax over classes of ``weights @ p``, i.e.
    :math:`\mu = w_1 - w_0`, which has at most ``num_nonzero`` non-zero entries.
    """
    check.positive_int("num_states", num_states)
    check.positive_int("num_nonzero", num_nonzero)
    check.seed(seed)
    rng = np.random.default_rng(seed)
    flat = np.zeros(2 * num_states)
    idx = rng.integers(0, 2 * num_states, size=num_nonzero)
    vals = rng.standard_normal(num_nonzero)
    for i, v in zip(idx, vals):  # explicit loop: "last draw wins" on repeats, by construction
        flat[i] = v
    weights = torch.as_tensor(flat.reshape(2, num_states))
    return DownstreamTask(mu=weights[1] - weights[0], weights=weights)


# --------------------------------------------------------------------------- datasets
@dataclass(eq=False)
class TaskDataset:
    r"""Examples of a downstream task, with the exact quantities of the idealised model.

    Attributes:
        x: inputs :math:`x_{1:T}`, int64 ``(N, T)`` (the masked :math:`x_0` is dropped).
        h0: the true hidden state :math:`H_0` of each example, int64 ``(N,)``.
        posterior: exact :math:`p(x) = P(H_0 \mid x_{1:T})`, ``(N, K)``.
        G: exact :math:`G(x) = W p(x)`, what a perfect masked LM outputs at the mask, ``(N, V)``.
        y: labels :math:`\mathbb 1[\mu^\top p(x) \ge 0]`, int64 ``(N,)``.
        majority_rate: the frequency of the more common label (the constant classifier's accuracy).
    """

    x: torch.Tensor
    h0: torch.Tensor
    posterior: torch.Tensor
    G: torch.Tensor
    y: torch.Tensor
    majority_rate: float

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def num_classes_present(self) -> int:
        return int(torch.unique(self.y).numel())

    def subset(self, num_examples: int) -> "TaskDataset":
        """The first ``num_examples`` examples (the majority rate recomputed on them)."""
        check.positive_int("num_examples", num_examples)
        if num_examples > len(self):
            raise ValueError(f"the dataset has {len(self)} examples; cannot take {num_examples}.")
        y = self.y[:num_examples]
        rate = float(y.double().mean())
        return TaskDataset(x=self.x[:num_examples], h0=self.h0[:num_examples], posterior=self.posterior[:num_examples],
                           G=self.G[:num_examples], y=y, majority_rate=max(rate, 1.0 - rate))

    def truncate(self, seq_len: int) -> "TaskDataset":
        """The same examples with inputs cut to their first ``seq_len`` tokens; the labels and exact
        quantities still refer to the full input (what a model with a shorter context is asked)."""
        check.positive_int("seq_len", seq_len)
        if seq_len > self.x.shape[1]:
            raise ValueError(f"cannot truncate inputs of length {self.x.shape[1]} to {seq_len} tokens.")
        return TaskDataset(x=self.x[:, :seq_len].contiguous(), h0=self.h0, posterior=self.posterior, G=self.G,
                           y=self.y, majority_rate=self.majority_rate)


def _check_task(hmm: HMM, task: DownstreamTask) -> None:
    if not isinstance(hmm, HMM):
        raise ValueError(f"expected an HMM, got {type(hmm).__name__}.")
    if not isinstance(task, DownstreamTask):
        raise ValueError(f"task must be a DownstreamTask (see paper_task, task_from_mu); got {type(task).__name__}.")
    if task.num_states != hmm.num_states:
        raise ValueError(
            f"task.mu has length {task.num_states} but the HMM has num_states={hmm.num_states}; "
            "draw the task for this HMM (e.g. paper_task(hmm.num_states, seed=...))."
        )


def make_dataset(
    hmm: HMM,
    task: DownstreamTask,
    num_examples: int,
    seq_len: int,
    *,
    seed: int,
    require_two_classes: bool = True,
) -> TaskDataset:
    r"""Sample ``num_examples`` examples of ``task`` with inputs of length ``seq_len``.

    Each example is a sequence of length ``seq_len + 1`` from :func:`hmmlib.sample`
    (:math:`H_0\sim\pi`); its first token is masked (dropped), and the posterior of :math:`H_0`
    given the remaining :math:`x_{1:T}` is computed exactly by Bayes' rule
    (:func:`hmmlib.posterior_h0`, valid for any ``A``). The label is
    :math:`\mathbb 1[\mu^\top p(x)\ge 0]`.

    Raises:
        ValueError: if ``require_two_classes`` and every example has the same label (the paper
        rejects such tasks; redraw the task, e.g. with :func:`sample_task_with_two_classes`).
    """
    _check_task(hmm, task)
    check.positive_int("num_examples", num_examples)
    check.positive_int("seq_len", seq_len)
    check.seed(seed)
    tokens, states = sample(hmm, int(num_examples), int(seq_len) + 1, seed=int(seed))
    x, h0 = tokens[:, 1:].contiguous(), states[:, 0].contiguous()
    post = posterior_h0(hmm, x)
    G = post @ hmm.W.T
    y = task.labels(post)
    rate = float(y.double().mean())
    ds = TaskDataset(x=x, h0=h0, posterior=post, G=G, y=y, majority_rate=max(rate, 1.0 - rate))
    if require_two_classes:
        check_two_classes(y, "HMM", "sample_task_with_two_classes or paper_task_and_splits do this")
    return ds


def make_splits(
    hmm: HMM,
    task: DownstreamTask,
    sizes: tuple[int, int, int] = (5000, 500, 1000),
    seq_len: int = 128,
    *,
    seed: int,
) -> dict[str, TaskDataset]:
    """The paper's train/val/test splits (5000/500/1000 examples of 128 tokens by default).

    Each split uses its own sub-seed of ``seed``. A task whose *train* split has a single class
    raises ``ValueError`` (as the paper's finetuning would crash); val and test may be single-class.
    """
    if len(sizes) != 3:
        raise ValueError(f"sizes must be (train, val, test); got {sizes!r}.")
    check.seed(seed)
    return {
        name: make_dataset(hmm, task, n, seq_len, seed=sub_seed(seed, i), require_two_classes=(name == "train"))
        for i, (name, n) in enumerate(zip(SPLITS, sizes))
    }


def sample_task_with_two_classes(
    hmm: HMM,
    *,
    seed: int,
    num_nonzero: int = 6,
    max_tries: int = 20,
    num_probe: int = 1000,
    probe_len: int = 128,
) -> DownstreamTask:
    """Draw :func:`paper_task` tasks (try ``i`` uses ``sub_seed(seed, i)``) until one has both
    labels on a probe set of ``num_probe`` examples of length ``probe_len``.

    Raises:
        ValueError: if none of ``max_tries`` draws has two classes.
    """
    check.positive_int("max_tries", max_tries)
    check.seed(seed)
    for i in range(int(max_tries)):
        task = paper_task(hmm.num_states, seed=sub_seed(seed, 0, i), num_nonzero=num_nonzero)
        probe = make_dataset(hmm, task, num_probe, probe_len, seed=sub_seed(seed, 1, i), require_two_classes=False)
        if probe.num_classes_present == 2:
            return task
    raise ValueError(
        f"none of {max_tries} task draws had two classes on {num_probe} probe examples; "
        "increase max_tries or num_probe, or use a different seed or HMM."
    )


def paper_task_and_splits(
    hmm: HMM,
    *,
    seed: int,
    sizes: tuple[int, int, int] = (5000, 500, 1000),
    seq_len: int = 128,
    num_nonzero: int = 6,
    max_tries: int = 20,
) -> tuple[DownstreamTask, dict[str, TaskDataset], int]:
    """The paper's loop: draw a task and its splits, redrawing (new sub-seed) while the train split
    has one class, at most ``max_tries`` times.

    Returns:
        ``(task, splits, num_tries)``.

    Raises:
        ValueError: if every try gave a single-class train split.
    """
    check.positive_int("max_tries", max_tries)
    check.seed(seed)
    for i in range(int(max_tries)):
        task = paper_task(hmm.num_states, seed=sub_seed(seed, 0, i), num_nonzero=num_nonzero)
        try:
            return task, make_splits(hmm, task, sizes, seq_len, seed=sub_seed(seed, 2, i)), i + 1
        except SingleClassError:
            pass
    raise ValueError(
        f"none of {max_tries} task draws had two classes in its train split; "
        "increase max_tries or the train size, or use a different seed or HMM."
    )
