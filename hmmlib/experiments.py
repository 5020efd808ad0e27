"""Experiment runners shared by the chapters: each returns plain numbers for a notebook to show."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .cache import pretrained_model
from .generators import paper_hmm
from .presets import Preset
from .pretrain import Pretrained

__all__ = ["SweepRow", "pretraining_sweep"]


@dataclass(frozen=True)
class SweepRow:
    """One HMM size of a pretraining sweep: the final evaluation of the model and its baselines."""

    num_states: int
    objective: str
    tv: float
    excess_loss: float
    bayes_loss: float
    unigram_tv: float
    pos0_tv: float | None
    result: Pretrained


def pretraining_sweep(preset: Preset, objective: str = "mlm", *, num_states: tuple[int, ...] | None = None,
                      hmm_seed: int = 0, progress: bool = True) -> list[SweepRow]:
    """Pretrain (or load from the cache) one model per HMM size of the paper's generator
    (10 symbols) and report its final distance to the exact conditionals."""
    sizes = preset.pretrain
    rows = []
    for K in num_states or sizes.num_states_sweep:
        hmm = paper_hmm(K, 10, seed=hmm_seed)
        res = pretrained_model(hmm, sizes.model_config(10, causal=objective == "causal"),
                               sizes.train_config(objective), preset=preset.name, progress=progress)
        last = res.history[-1]
        rows.append(SweepRow(K, objective, last["tv"], last["excess_loss"], last["bayes_loss"], last["unigram_tv"],
                             last.get("pos0_tv"), res))
    return rows
