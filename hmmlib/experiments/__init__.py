"""Layer 5: presets, the runners the chapters call, and plotting.

* :mod:`.presets`: the size switch (``HMMBOOK_PRESET``); presets hold the real config objects;
* :mod:`.runners`: pretraining and tuning sweeps (chapters 2-4), :func:`pretrained_for`;
* :mod:`.memory_runners`: chapter 5's experiments; :mod:`.analysis`: chapter 1's;
* :mod:`.plotting`: the house style.

The only layer that knows presets exist.
"""
from .presets import Preset, get_preset, PRESET_ENV, PRESET_NAMES
from .runners import (pretrained_for, SweepRow, pretraining_sweep, PAPER_FIG_A1, PAPER_FIG_B1, TuningRow,
                      ideal_tuning_sweep,
                      transformer_tuning_sweep, summarize)
from .memory_runners import (PAPER_FIG_A2, PAPER_FIG_B3, theorem_head, check_theorem, memory_sharpening,
                             token_mutual_information,
                             memory_vs_vanilla)
from . import plotting, analysis

__all__ = ["Preset", "get_preset", "PRESET_ENV", "PRESET_NAMES", "SweepRow", "pretraining_sweep", "PAPER_FIG_A1",
           "PAPER_FIG_B1",
           "TuningRow", "ideal_tuning_sweep", "transformer_tuning_sweep", "pretrained_for", "summarize",
           "PAPER_FIG_A2", "PAPER_FIG_B3", "theorem_head", "check_theorem", "memory_sharpening", "token_mutual_information",
           "memory_vs_vanilla", "plotting", "analysis"]
