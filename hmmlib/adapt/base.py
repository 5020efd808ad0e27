"""The base class of every tuner: a ``torch.nn.Module`` that owns the training loop.

A tuner wraps a frozen model (an HMM, a transformer, a memory HMM) and registers only what it
trains (a head, a prompt, a prefix, or a fine-tuned copy) as its own parameters and buffers, so

* the trainable parts are the parameters with ``requires_grad`` (freeze one by turning it off);
* ``tuner.state_dict()`` holds exactly the tuned parts (a student can save a tuned prompt) and
  ``load_state_dict`` restores them into a tuner built the same way;
* the frozen model is never registered: it does not appear in ``parameters()`` or ``state_dict()``.

Subclasses implement ``_prepare(dataset) -> dict`` (tensors on the device, with ``"y"``) and
``_logits(data, idx) -> (len(idx), 2)``, and may override ``_train_mode`` / ``_after_fit``; a tuner whose
head reads fixed features (``features(dataset)``) and can re-draw its trainable parts
(``_init_trainable(seed)``) also runs the converged head and prompt restarts.

What ``fit`` runs is the config's:

* a :class:`~hmmlib.adapt.HeadConfig` with ``solver="newton"``: the converged head (logistic regression on the
  features, the penalty chosen on validation data; :mod:`hmmlib.adapt._restarts`);
* a prompt config (``restarts``, ``head_init``): ``restarts`` runs of the loop below from the converged head (or a
  fresh one), the best on validation data kept;
* anything else: the loop: AdamW (:func:`hmmlib.lm.optim.adamw`), warmup then linear decay, gradient clipping,
  minibatches from a CPU ``torch.Generator`` seeded by ``cfg.seed`` (the same batches on every device).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..lm.optim import adamw, lr_scheduler
from . import _restarts
from .configs import HeadConfig, TuneConfig
from .tasks import SingleClassError

__all__ = ["Tuner"]


class Tuner(nn.Module):
    """Training loop, evaluation and parameter counts shared by every tuner (see the module docstring).

    Attributes set by subclasses: ``cfg``, ``head`` (the classifier, an ``nn.Module``), ``device`` and
    ``num_frozen_parameters`` (numbers in the frozen model).
    """

    head: nn.Module
    #: after ``fit`` with a converged head: its :class:`~hmmlib.adapt._restarts.HeadSolution`
    solution: "_restarts.HeadSolution | None" = None
    #: after ``fit`` with a prompt config: the converged head it started from (a tuner; ``None`` for a fresh
    #: head), every run (:class:`~hmmlib.adapt._restarts.Restart`) and the index of the one kept
    start_head: "Tuner | None" = None
    restarts: "list[_restarts.Restart] | None" = None
    best_restart: int | None = None

    def __init__(self, cfg: TuneConfig, accepts: tuple[type, ...]):
        super().__init__()
        if not isinstance(cfg, accepts):
            names = " or ".join(t.__name__ for t in accepts)
            raise ValueError(f"{type(self).__name__} takes a {names}; got {type(cfg).__name__}.")
        self.cfg = cfg
        self.history: list[dict[str, float]] = []

    def _frozen(self, name: str, model: Any) -> None:
        """Keep ``model`` as attribute ``name`` without registering it (not in ``parameters()`` or ``state_dict()``)."""
        self.__dict__[name] = model
        self.__dict__["_wrapped"] = model

    def head_tuner(self) -> "Tuner":
        """A converged-head tuner (:class:`~hmmlib.adapt.HeadConfig`) on the same frozen model, reading the same
        positions, with this config's ``l2_grid``: where a prompt starts (``head_init="converged"``)."""
        cfg = self.cfg
        return type(self)(self._wrapped, HeadConfig(l2_grid=cfg.l2_grid, eval_batch_size=cfg.eval_batch_size,
                                                    max_positions=getattr(cfg, "max_positions", None)))

    def _new_head(self, num_symbols: int, device: torch.device, dtype: torch.dtype | None = None) -> nn.Linear:
        """``nn.Linear(V, 2)`` with its init drawn from the global RNG, on ``device``; a converged head's lives
        in float64 on the CPU, its solver's arithmetic."""
        head = nn.Linear(num_symbols, 2)
        if _restarts.solves_head(self.cfg):
            return head.to(torch.float64)
        return head.to(device=device, dtype=dtype)

    def _init_trainable(self, seed: int) -> None:
        """Draw the trainable parts afresh with ``seed`` (what the constructor does with ``cfg.seed``)."""
        raise NotImplementedError(f"{type(self).__name__} cannot re-draw its parameters (no restarts).")

    # -- what subclasses provide
    def _prepare(self, dataset) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _logits(self, data: dict[str, torch.Tensor], idx: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @contextmanager
    def _train_mode(self) -> Iterator[None]:
        yield

    def _after_fit(self) -> None:
        pass

    # -- parameters
    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters ``fit`` optimises: every registered one with ``requires_grad``."""
        return [p for p in self.parameters() if p.requires_grad]

    @property
    def num_trainable_parameters(self) -> int:
        """Numbers optimised by ``fit`` (for a reparametrised prefix: embedding + MLP + head): counted when
        ``fit`` ran (an MLP dropped afterwards still counts), before that the ones it would optimise. A converged
        head trains ``V + 1``: the class-1 row and bias (class 0's logit is 0; the other ``V + 1`` are redundant)."""
        if _restarts.solves_head(self.cfg):
            return self.head.weight.shape[1] + 1
        trained = self.__dict__.get("_num_trained")
        return trained if trained is not None else sum(p.numel() for p in self.trainable_parameters())

    @property
    def num_stored_parameters(self) -> int:
        """Numbers kept after training on top of the frozen model: the size of ``state_dict()``."""
        return sum(t.numel() for t in self.state_dict().values())

    @property
    def num_total_parameters(self) -> int:
        """The frozen model's numbers plus the trainable ones."""
        return self.num_frozen_parameters + self.num_trainable_parameters

    num_frozen_parameters: int = 0

    def parameter_counts(self) -> dict[str, int]:
        return {"trainable": self.num_trainable_parameters, "stored": self.num_stored_parameters,
                "total": self.num_total_parameters}

    # -- training
    def _optimizer(self, params: list[nn.Parameter]) -> torch.optim.AdamW:
        """The head at ``lr``; every other trainable part at ``lr * prompt_lr_scale`` (if the config has one)."""
        cfg = self.cfg
        ids = {id(p) for p in self.head.parameters()}
        head = [p for p in params if id(p) in ids]
        rest = [p for p in params if id(p) not in ids]
        groups = [{"params": head, "lr": cfg.lr}]
        if rest:
            groups.append({"params": rest, "lr": cfg.lr * getattr(cfg, "prompt_lr_scale", 1.0)})
        return adamw(groups, cfg.lr, cfg.weight_decay)

    def fit(self, train, val=None) -> list[dict[str, float]]:
        """Train on ``train`` (a task dataset) as the config says (module docstring); ``val`` chooses a converged
        head's penalty and a prompt's restart, so those need it (unless there is one penalty / one run). Returns
        the history: for the AdamW loop one entry every ``log_every`` steps and at the end: ``step``, ``epoch``,
        ``lr``, ``train_loss`` (mean over the steps since the last entry) and, with ``val``,
        ``val_accuracy``/``val_loss`` (a prompt: the kept run's); for a converged head one entry per penalty."""
        cfg = self.cfg
        labels = getattr(train, "y", None)
        if not isinstance(labels, torch.Tensor) or labels.dim() != 1:
            raise ValueError(f"expected a task dataset with labels y of shape (N,); got {type(train).__name__}.")
        if labels.numel() == 0:
            raise ValueError("the training set is empty; fit needs at least one example.")
        _check_labels(labels, "training")
        if torch.unique(labels).numel() < 2:
            raise SingleClassError(f"every one of the {labels.numel()} training labels is {int(labels[0])}: a classifier "
                                   "needs examples of both classes 0 and 1 to learn anything (its best fit predicts "
                                   "the one class). Draw the task again (paper_task_and_splits redraws single-class "
                                   "tasks) or use a larger training split.")
        if _restarts.solves_head(cfg):
            return _restarts.fit_converged_head(self, train, val)
        if hasattr(cfg, "restarts"):
            return _restarts.fit_prompt(self, train, val)
        return self._train(train, val, cfg.seed)

    def _train(self, train, val, seed: int) -> list[dict[str, float]]:
        """The AdamW loop of :meth:`fit`, its minibatches drawn with ``seed``."""
        cfg = self.cfg
        data = self._prepare(train)
        y = data["y"]
        n = y.shape[0]
        params = self.trainable_parameters()
        if not params:
            raise ValueError("nothing to train: every parameter has requires_grad=False.")
        self.__dict__["_num_trained"] = sum(p.numel() for p in params)
        per_epoch = math.ceil(n / cfg.batch_size)
        total = cfg.num_steps if cfg.num_steps is not None else cfg.num_epochs * per_epoch
        opt = self._optimizer(params)
        sched = lr_scheduler(opt, total, cfg.warmup_steps, cfg.schedule)
        g = torch.Generator().manual_seed(seed)
        history: list[dict[str, float]] = []
        running, count = torch.zeros((), device=self.device), 0
        with self._train_mode():
            for step in range(total):
                j = step % per_epoch
                if j == 0:
                    perm = torch.randperm(n, generator=g).to(self.device)
                idx = perm[j * cfg.batch_size:(j + 1) * cfg.batch_size]
                loss = F.cross_entropy(self._logits(data, idx), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                lr = opt.param_groups[0]["lr"]
                opt.step()
                sched.step()
                running += loss.detach().float()
                count += 1
                if (step + 1) % cfg.log_every == 0 or step + 1 == total:
                    entry = {"step": step + 1, "epoch": (step + 1) / per_epoch, "lr": lr,
                             "train_loss": float(running) / count}
                    if val is not None:
                        m = self.evaluate(val)
                        entry.update(val_accuracy=m["accuracy"], val_loss=m["loss"])
                    history.append(entry)
                    running.zero_()
                    count = 0
        self._after_fit()
        self.history = history
        return history

    def load_state_dict(self, state_dict, *args: Any, **kwargs: Any):
        """``nn.Module.load_state_dict``, with a ``ValueError`` naming the shapes when ``state_dict`` was saved
        from a tuner built another way (e.g. another ``prompt_len``)."""
        own = self.state_dict()
        wrong = [f"{k} has shape {tuple(v.shape)} in the state_dict but {tuple(own[k].shape)} in this tuner"
                 for k, v in state_dict.items() if k in own and hasattr(v, "shape") and v.shape != own[k].shape]
        if wrong:
            raise ValueError(f"cannot load this state_dict into a {type(self).__name__} built with "
                             f"{type(self.cfg).__name__}: " + "; ".join(wrong) + ". Build the tuner with the config "
                             "the state_dict was saved from (e.g. the same prompt_len or prefix_len).")
        try:
            return super().load_state_dict(state_dict, *args, **kwargs)
        except RuntimeError as e:
            raise ValueError(f"cannot load this state_dict into a {type(self).__name__}: {' '.join(str(e).split())} "
                             "Build the tuner with the config the state_dict was saved from.") from None

    # -- evaluation
    @torch.no_grad()
    def logits(self, dataset) -> torch.Tensor:
        """The head's ``(N, 2)`` logits on ``dataset`` (no gradients); a converged head's in float64 on the CPU,
        the solver's own arithmetic (:func:`hmmlib.adapt.logistic.head_predictions`)."""
        if _restarts.solves_head(self.cfg):
            return _restarts.converged_logits(self, dataset)
        data = self._prepare(dataset)
        n, bs = data["y"].shape[0], self.cfg.eval_batch_size
        out = [self._logits(data, torch.arange(s, min(n, s + bs), device=self.device)) for s in range(0, n, bs)]
        if not out:
            raise ValueError("the dataset is empty.")
        return torch.cat(out)

    def predict(self, dataset) -> torch.Tensor:
        """Predicted labels ``(N,)`` (int64)."""
        return self.logits(dataset).argmax(1)

    def evaluate(self, dataset) -> dict[str, float]:
        """``accuracy``, ``majority_rate`` (the constant classifier's accuracy), mean cross-entropy ``loss`` and
        ``num_examples`` on ``dataset``.

        Allowed before :meth:`fit`: it then measures the head as it stands, the seeded initialisation (the same
        for the same config) or a head set by hand (a closed-form or theorem head), which is how such heads
        are evaluated."""
        _check_labels(getattr(dataset, "y", None), "evaluation")
        logits = self.logits(dataset)
        y = dataset.y.to(logits.device)
        return {"accuracy": float((logits.argmax(1) == y).double().mean()),
                "majority_rate": float(dataset.majority_rate),
                "loss": float(F.cross_entropy(logits, y)),
                "num_examples": int(y.numel())}


def _check_labels(y: Any, what: str) -> None:
    """Labels must be 0 or 1 (a ``ValueError`` otherwise, instead of an ``IndexError`` from the cross-entropy)."""
    if isinstance(y, torch.Tensor) and y.numel() and not ((y == 0) | (y == 1)).all():
        bad = sorted(set(torch.unique(y).tolist()) - {0, 1})[:5]
        raise ValueError(f"the {what} labels y must be 0 or 1 (two classes); got also {bad}. Map the classes to 0 and 1.")
