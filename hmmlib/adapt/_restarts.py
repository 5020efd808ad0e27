r"""What :meth:`hmmlib.adapt.Tuner.fit` runs beyond the AdamW loop (private: the configs choose it).

* The converged head (:class:`~hmmlib.adapt.HeadConfig`, ``solver="newton"``): on a frozen model the head's input
  :math:`f(x)` does not change, so head tuning is binary logistic regression on fixed features, solved to
  convergence (:func:`hmmlib.adapt.logistic.logistic_path`) at each penalty of ``cfg.l2_grid``; the penalty with
  the best validation accuracy is kept (ties: the larger). The solution, the whole path and the validation
  accuracy at each penalty are the tuner's :attr:`solution` (:class:`HeadSolution`).
* Prompt tuning (a config with ``restarts`` and ``head_init``): the head starts at the converged one
  (``head_init="converged"``, computed by a head tuner on the same frozen model: :attr:`start_head`) or at
  ``nn.Linear``'s init (``"random"``); ``cfg.restarts`` runs, run ``r`` drawing the trainable parts and the
  minibatches with seed ``sub_seed(cfg.seed, r)`` (run 0 trains the tuner as built, which the constructor drew
  with that seed; later runs draw afresh), the run with the best validation accuracy kept (ties: the
  earliest). Every run is the tuner's :attr:`restarts` (:class:`Restart`); :func:`evaluate_restarts` scores
  them on every split and says how much they disagree.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .configs import HeadConfig, TuneConfig
from .logistic import LogisticInfo, head_accuracy, load_into_head, logistic_path
from .tasks import sub_seed

__all__ = ["HeadSolution", "Restart", "solves_head", "run_seed", "fit_converged_head", "converged_logits",
           "fit_prompt", "evaluate_restarts"]


@dataclass(frozen=True)
class HeadSolution:
    """A converged head: ``weight`` (V,) and ``bias`` () in float64, the solve's ``info`` (``info.l2`` is the
    chosen penalty), ``path``: ``[(l2, weight, bias, info), ...]`` at every penalty of the grid (largest first)
    and ``val_by_l2``: validation accuracy at each penalty (empty without validation data)."""

    weight: torch.Tensor
    bias: torch.Tensor
    info: LogisticInfo
    path: list
    val_by_l2: dict

    def accuracy_by_l2(self, features: Any, y: Any) -> dict[float, float]:
        """Accuracy on ``(features, y)`` of the head at every penalty of the path."""
        return {l2: head_accuracy(features, y, w, c) for l2, w, c, _ in self.path}


@dataclass(frozen=True)
class Restart:
    """One prompt run: its ``seed``, the trained parts (``state``, the tuner's ``state_dict``), its
    ``history`` and its validation accuracy (``None`` without validation data)."""

    seed: int
    state: dict
    history: list
    val_accuracy: float | None


def solves_head(cfg: TuneConfig) -> bool:
    """Whether ``cfg`` asks for the converged head."""
    return isinstance(cfg, HeadConfig) and cfg.solver == "newton"


def run_seed(cfg: TuneConfig, r: int = 0) -> int:
    """The seed of run ``r``: ``sub_seed(cfg.seed, r)`` for a config with restarts, else ``cfg.seed``."""
    return sub_seed(cfg.seed, r) if hasattr(cfg, "restarts") else cfg.seed


def _features64(tuner, dataset) -> torch.Tensor:
    return tuner.features(dataset).detach().to("cpu", torch.float64)


def fit_converged_head(tuner, train, val) -> list[dict[str, float]]:
    """Fit ``tuner``'s head (a float64 ``nn.Linear(V, 2)`` on the CPU) as the converged logistic head (module
    docstring): class-1 row and bias the solution, class 0's zero (:func:`~hmmlib.adapt.logistic.load_into_head`).
    Returns one history entry per penalty."""
    cfg = tuner.cfg
    path = logistic_path(_features64(tuner, train), train.y, l2_grid=cfg.l2_grid)
    val_by_l2: dict[float, float] = {}
    if val is not None:
        fv = _features64(tuner, val)
        val_by_l2 = {l2: head_accuracy(fv, val.y, w, c) for l2, w, c, _ in path}
    elif len(path) > 1:
        raise ValueError("HeadConfig chooses its penalty on validation data: call fit(train, val), or give a "
                         "single penalty, e.g. HeadConfig(l2_grid=(1e-6,)).")
    _, w, c, info = max(path, key=lambda r: (val_by_l2.get(r[0], 0.0), r[0]))
    load_into_head(tuner.head, w, c)
    tuner.__dict__["solution"] = HeadSolution(w, c, info, path, val_by_l2)
    tuner.history = [{"l2": l2, "objective": i.objective, "train_accuracy": i.train_accuracy,
                      **({"val_accuracy": val_by_l2[l2]} if val_by_l2 else {})} for l2, _, _, i in path]
    return tuner.history


def converged_logits(tuner, dataset) -> torch.Tensor:
    r"""``(N, 2)`` logits of a converged head in float64 on the CPU: row ``k`` is :math:`f(x)^\top w_k + c_k`,
    the same arithmetic as :func:`~hmmlib.adapt.logistic.head_predictions`, so a prediction is
    :math:`\mathbb 1[w^\top f + c > 0]` bit for bit."""
    f = _features64(tuner, dataset)
    W = tuner.head.weight.detach().to("cpu", torch.float64)
    b = tuner.head.bias.detach().to("cpu", torch.float64)
    return torch.stack([f @ W[k] + b[k] for k in range(W.shape[0])], 1)


def fit_prompt(tuner, train, val) -> list[dict[str, float]]:
    """``cfg.restarts`` runs of the AdamW loop from the converged head (or a fresh one), the best on ``val``
    kept (module docstring); returns the kept run's history."""
    cfg = tuner.cfg
    if val is None and cfg.restarts > 1:
        raise ValueError(f"restarts={cfg.restarts} are chosen between on validation data: call fit(train, val), "
                         "or set restarts=1.")
    head = None
    if cfg.head_init == "converged":
        start = tuner.head_tuner()
        start.fit(train, val)
        tuner.__dict__["start_head"] = start
        head = (start.solution.weight, start.solution.bias)
    runs = []
    for r in range(cfg.restarts):
        seed = run_seed(cfg, r)
        if r > 0:
            tuner._init_trainable(seed)
        if head is not None:
            load_into_head(tuner.head, *head)
        history = tuner._train(train, val, seed)
        acc = None if val is None else tuner.evaluate(val)["accuracy"]
        runs.append(Restart(seed, {k: v.detach().clone() for k, v in tuner.state_dict().items()}, history, acc))
    best = max(range(len(runs)), key=lambda i: (runs[i].val_accuracy or 0.0, -i))
    tuner.load_state_dict(runs[best].state)
    tuner.__dict__.update(restarts=runs, best_restart=best)
    tuner.history = runs[best].history
    return tuner.history


def evaluate_restarts(tuner, splits: dict) -> dict[str, Any]:
    """Every run of a fitted prompt ``tuner`` on every split: ``{"restarts": [{"seed", "final_train_loss",
    "<split>": metrics}], "best_restart", "disagreement", "test_spread"}``, where ``disagreement`` is the mean,
    over the other runs, of the fraction of test examples on which their prediction differs from the kept
    run's, and ``test_spread`` the range of the runs' test accuracies (both 0 without a ``"test"`` split).
    The tuner is left holding the kept run."""
    runs, best = tuner.restarts, tuner.best_restart
    rows, preds = [], []
    for run in runs:
        tuner.load_state_dict(run.state)
        row = {"seed": run.seed, "final_train_loss": run.history[-1]["train_loss"] if run.history else None}
        row.update({k: tuner.evaluate(ds) for k, ds in splits.items()})
        rows.append(row)
        if "test" in splits:
            preds.append(tuner.predict(splits["test"]).cpu())
    tuner.load_state_dict(runs[best].state)
    others = [i for i in range(len(runs)) if i != best]
    disagreement = (sum(float((preds[i] != preds[best]).double().mean()) for i in others) / len(others)
                    if others and preds else 0.0)
    tests = [r["test"]["accuracy"] for r in rows if "test" in r]
    return {"restarts": rows, "best_restart": best, "disagreement": disagreement,
            "test_spread": max(tests) - min(tests) if tests else 0.0}
