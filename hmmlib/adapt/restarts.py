r"""Converged heads and prompt tuning started from them, on a frozen model (ideal or trained).

* :func:`converged_head`: head tuning as logistic regression on the frozen model's features, solved
  to convergence (:mod:`hmmlib.adapt.logistic`), the penalty chosen on the validation split;
* :func:`prompt_from_converged_head`: prompt tuning (non-convex) started from that head, with
  ``num_restarts`` random prompt initialisations (restart ``r`` uses seed ``sub_seed(cfg.seed, r)``),
  the restart with the best validation accuracy kept; how much the restarts disagree is reported.

Both call the existing tuners (:func:`hmmlib.adapt.tuning.make_tuner`) and only set the head's
starting point, so the training loop is the one every chapter uses.
"""
from __future__ import annotations

from typing import Any

import torch

from .api import make_tuner
from .configs import HeadConfig, TuneConfig
from .logistic import L2_GRID, head_accuracy, load_into_head, logistic_path
from .tasks import sub_seed

__all__ = ["frozen_features", "converged_head", "prompt_from_converged_head"]


def frozen_features(model: Any, dataset, max_positions: int | None = None) -> torch.Tensor:
    r"""What a head on the frozen ``model`` reads for each example, ``(N, V)``: :math:`G(x) = W p(x)`
    for the ideal model (an :class:`~hmmlib.HMM`), the softmax at the ``[MASK]`` for a trained masked LM
    reading at most ``max_positions`` positions (:class:`hmmlib.lm.inputs.InputLayout`)."""
    from ..hmm.model import HMM

    cfg = HeadConfig() if isinstance(model, HMM) else HeadConfig(max_positions=max_positions)
    return make_tuner(model, cfg).features(dataset).detach().cpu()


def converged_head(model: Any, splits: dict, *, l2_grid: tuple[float, ...] = L2_GRID,
                   max_positions: int | None = None) -> dict[str, Any]:
    """The converged linear head on ``model``'s frozen features (:func:`frozen_features`) of
    ``splits["train"]``, penalty chosen on ``splits["val"]``.

    Returns ``{"weight", "bias", "info" (LogisticInfo), "val_by_l2", "accuracy_by_l2" (split -> penalty ->
    accuracy, the whole path, so a reader can see what a floor on the penalty would change), "<split>": {"accuracy",
    "majority_rate"}}`` for every split, and ``"parameters"``: ``{"trainable": V + 1}`` (the two-class
    head ``nn.Linear(V, 2)`` it loads into has ``2V + 2``, of which half are redundant)."""
    feats = {k: frozen_features(model, ds, max_positions) for k, ds in splits.items()}
    if "val" not in splits:
        raise ValueError("converged_head chooses the penalty on splits['val']; add a validation split.")
    path = logistic_path(feats["train"], splits["train"].y, l2_grid=l2_grid)
    by_l2 = {k: {l2: head_accuracy(feats[k], ds.y, w, c) for l2, w, c, _ in path} for k, ds in splits.items()}
    _, w, c, info = max(path, key=lambda r: (by_l2["val"][r[0]], r[0]))  # ties: the larger penalty
    out: dict[str, Any] = {"weight": w, "bias": c, "info": info, "val_by_l2": by_l2["val"], "accuracy_by_l2": by_l2,
                           "parameters": {"trainable": int(w.numel()) + 1}}
    for k, ds in splits.items():
        out[k] = {"accuracy": by_l2[k][info.l2], "majority_rate": float(ds.majority_rate)}
    return out


def prompt_from_converged_head(model: Any, cfg: TuneConfig, splits: dict, *, num_restarts: int = 3,
                               head: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, Any]:
    """Prompt tuning (a :class:`~hmmlib.adapt.PromptTuningConfig` on a trained masked LM, a
    :class:`~hmmlib.adapt.FakeTokenPromptConfig` on the ideal model) with the head started at the converged one, from
    ``num_restarts`` prompt initialisations; keeps the restart with the best validation accuracy
    (ties: the earliest).

    Returns ``{"best": r, "restarts": [{"seed", "<split>": metrics, ...}], "<split>": metrics of the
    kept restart, "parameters", "disagreement", "test_spread", "tuner": the kept restart's tuner,
    "head": converged head (if computed here)}``, where ``disagreement`` is the mean, over the other restarts, of the fraction of test
    examples on which their prediction differs from the kept one's, and ``test_spread`` is the range
    of the restarts' test accuracies.
    """
    if cfg.method != "prompt":
        raise ValueError(f"cfg.method must be 'prompt'; got {cfg.method!r}.")
    if not isinstance(num_restarts, int) or num_restarts < 1:
        raise ValueError(f"num_restarts must be a positive integer; got {num_restarts!r}.")
    if "val" not in splits:
        raise ValueError("restarts are selected on splits['val']; add a validation split.")
    ch = None
    if head is None:
        ch = converged_head(model, splits, max_positions=getattr(cfg, "max_positions", None))
        head = (ch["weight"], ch["bias"])
    runs, preds, tuners = [], [], []
    for r in range(num_restarts):
        seed = sub_seed(cfg.seed, r)
        tuner = make_tuner(model, cfg.replace(seed=seed))
        load_into_head(tuner.head, *head)
        history = tuner.fit(splits["train"], splits["val"])
        run = {"seed": seed, "final_train_loss": history[-1]["train_loss"] if history else None}
        run.update({k: tuner.evaluate(ds) for k, ds in splits.items()})
        run["parameters"] = tuner.parameter_counts()
        runs.append(run)
        preds.append(tuner.predict(splits["test"]).cpu())
        tuners.append(tuner)
    best = max(range(num_restarts), key=lambda i: (runs[i]["val"]["accuracy"], -i))
    others = [i for i in range(num_restarts) if i != best]
    disagreement = (sum(float((preds[i] != preds[best]).double().mean()) for i in others) / len(others)
                    if others else 0.0)
    tests = [r["test"]["accuracy"] for r in runs]
    out = {"best": best, "restarts": runs, "parameters": runs[best]["parameters"], "disagreement": disagreement,
           "test_spread": max(tests) - min(tests), "tuner": tuners[best]}
    out.update({k: runs[best][k] for k in splits})
    if ch is not None:
        out["head"] = ch
    return out
