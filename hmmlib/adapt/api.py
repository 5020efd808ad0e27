"""Entry points: build the tuner a (model, config) pair calls for, and the fit-then-evaluate recipe."""
from __future__ import annotations

from typing import Any

from ..hmm.model import HMM
from ..lm.transformer import Transformer
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

    Returns ``{"tuner", "history", "<split>": metrics, "parameters": parameter_counts()}``.
    """
    tuner = make_tuner(model, cfg)
    history = tuner.fit(splits["train"], splits.get("val"))
    out: dict[str, Any] = {"tuner": tuner, "history": history, "parameters": tuner.parameter_counts()}
    out.update({name: tuner.evaluate(ds) for name, ds in splits.items()})
    return out
