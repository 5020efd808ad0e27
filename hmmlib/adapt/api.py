"""Entry points: build the tuner a (model, config) pair calls for, and the fit-then-evaluate recipe."""
from __future__ import annotations

from typing import Any

from ..hmm.model import HMM
from ..lm.transformer import Transformer
from . import _restarts
from .base import Tuner
from .configs import TuneConfig
from .frozen_lm import TransformerTuner
from .ideal import IdealTuner

__all__ = ["make_tuner", "tune_and_evaluate"]


def make_tuner(model: HMM | Transformer, cfg: TuneConfig) -> Tuner:
    """An :class:`IdealTuner` for an :class:`~hmmlib.HMM` (the ideal model), a :class:`TransformerTuner` for a
    masked-LM :class:`~hmmlib.Transformer`; each refuses a config that is not for its kind of model."""
    if isinstance(model, HMM):
        return IdealTuner(model, cfg)
    if isinstance(model, Transformer):
        return TransformerTuner(model, cfg)
    raise ValueError(f"model must be an HMM (the ideal model) or a hmmlib.Transformer; got {type(model).__name__} "
                     "(for a MemoryHMM's attention head use hmmlib.memory.AttentionHeadTuner).")


def tune_and_evaluate(model: HMM | Transformer, cfg: TuneConfig, splits: dict) -> dict[str, Any]:
    """Fit on ``splits["train"]`` (validating on ``splits.get("val")``) and evaluate on every split.

    Returns ``{"tuner", "history", "<split>": metrics, "parameters": parameter_counts()}``, and

    * for a converged head (:class:`HeadConfig`, ``solver="newton"``): ``"head"``: ``{"l2", "objective",
      "grad_norm", "iterations", "converged"}`` of the chosen penalty and ``"accuracy_by_l2"``: split -> penalty ->
      accuracy along the whole path (so a reader sees what another penalty would have given);
    * for a prompt: ``"restarts"`` (each run's seed, final training loss and metrics on every split),
      ``"best_restart"``, ``"disagreement"`` and ``"test_spread"`` (:func:`~hmmlib.adapt._restarts.evaluate_restarts`),
      and ``"start_head"``: the converged head it started from, evaluated on every split (``None`` for a fresh head).
    """
    tuner = make_tuner(model, cfg)
    history = tuner.fit(splits["train"], splits.get("val"))
    out: dict[str, Any] = {"tuner": tuner, "history": history, "parameters": tuner.parameter_counts()}
    if tuner.restarts is not None:
        out.update(_restarts.evaluate_restarts(tuner, splits))
        start = tuner.start_head
        out["start_head"] = None if start is None else {k: start.evaluate(ds) for k, ds in splits.items()}
    out.update({name: tuner.evaluate(ds) for name, ds in splits.items()})
    sol = tuner.solution
    if sol is not None:
        out["head"] = {**{k: v for k, v in sol.info.to_dict().items() if k != "train_accuracy"},
                       "accuracy_by_l2": {k: sol.accuracy_by_l2(tuner.features(ds), ds.y) for k, ds in splits.items()}}
    return out
