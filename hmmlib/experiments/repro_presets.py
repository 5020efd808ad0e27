"""The reproduction grids (which sizes and how many seeds per figure) and the ``repro`` preset.

``repro`` sits between ``default`` and ``paper``: the default preset's model shape, pretrained
longer, and the paper's full grid of sizes with at least 10 seeds for head and prompt tuning, sized
(by measurement, see :data:`REPRO_MEASUREMENTS`) to finish on a 2-core CPU in at most 3 hours.
:func:`resolve_preset` returns a :class:`~hmmlib.experiments.presets.Preset` (``get_preset(name)``) and a
:class:`ReproGrid` for any of ``ci``, ``default``, ``repro`` and ``paper``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from .presets import Preset, get_preset

__all__ = ["ReproGrid", "GRIDS", "REPRO_PRESET_NAMES", "resolve_preset", "REPRO_MEASUREMENTS"]

REPRO_PRESET_NAMES = ("ci", "default", "repro", "paper")


@dataclass(frozen=True)
class ReproGrid:
    """Which cells of the paper's grid a preset runs.

    Attributes:
        fig_b1_sizes: hidden-state counts of Fig. B1/B2 (10 symbols); fig_b1_seeds: seeds per size
            for head and prompt tuning (each seed: a new HMM, corpus, pretrained model and task).
        extra_seeds: seeds (the first ones) that also run prefix tuning and fine-tuning.
        fig_b3_num_values: memory sizes ``n_mem`` of Fig. B3 (``4 n_mem`` hidden states);
            fig_b3_seeds: seeds per size.
        ideal_sizes, ideal_seeds: the ideal-model sweep of chapters 3 and 4.
        prompt_restarts: prompt initialisations per job, the best on validation kept.
    """

    fig_b1_sizes: tuple[int, ...]
    fig_b1_seeds: int
    extra_seeds: int
    fig_b3_num_values: tuple[int, ...]
    fig_b3_seeds: int
    ideal_sizes: tuple[int, ...]
    ideal_seeds: int
    prompt_restarts: int

    def to_dict(self) -> dict:
        return asdict(self)


_PAPER_SIZES = (4, 8, 10, 12, 15, 25, 30)

GRIDS: dict[str, ReproGrid] = {
    "ci": ReproGrid(fig_b1_sizes=(4, 12), fig_b1_seeds=2, extra_seeds=1, fig_b3_num_values=(2, 3), fig_b3_seeds=1,
                    ideal_sizes=(4, 10, 25), ideal_seeds=2, prompt_restarts=2),
    "default": ReproGrid(fig_b1_sizes=(4, 10, 12, 30), fig_b1_seeds=3, extra_seeds=1, fig_b3_num_values=(2, 3, 5, 7),
                         fig_b3_seeds=2, ideal_sizes=_PAPER_SIZES, ideal_seeds=20, prompt_restarts=3),
    "repro": ReproGrid(fig_b1_sizes=_PAPER_SIZES, fig_b1_seeds=10, extra_seeds=3, fig_b3_num_values=(2, 3, 5, 7),
                       fig_b3_seeds=5, ideal_sizes=_PAPER_SIZES, ideal_seeds=20, prompt_restarts=3),
    "paper": ReproGrid(fig_b1_sizes=_PAPER_SIZES, fig_b1_seeds=20, extra_seeds=5, fig_b3_num_values=(2, 3, 5, 7),
                       fig_b3_seeds=5, ideal_sizes=_PAPER_SIZES, ideal_seeds=20, prompt_restarts=3),
}

#: CPU seconds (one torch thread) of the jobs of one Fig. B1 unit at 30 states, seed 0, measured on
#: the shared 2-core development machine (load average about 12, so wall times were 3-9x longer);
#: :func:`hmmlib.experiments.pipeline.estimate` measures its own step times. Projection for the whole
#: ``repro`` grid from these: about 4.5 CPU hours (fig-b1 3.2, fig-b3 0.9, ideal 0.4), i.e. about 2.3 h
#: on 2 dedicated cores with 2 workers.
REPRO_MEASUREMENTS: dict[str, float] = {
    "pretrain": 80.3, "head": 2.3, "head_paper": 7.1, "prompt": 47.9, "prefix": 14.5, "finetune": 18.2,
    "ideal_head": 0.0, "ideal_head_adamw": 0.8, "ideal_prompt": 5.5,
}


def resolve_preset(name: str | Preset, grid: ReproGrid | None = None) -> tuple[Preset, ReproGrid]:
    """The preset and grid for ``name`` (``ci``, ``default``, ``repro`` or ``paper``); a
    :class:`Preset` passes through, with ``grid`` or else the grid of its name."""
    if grid is not None and not isinstance(grid, ReproGrid):
        raise ValueError(f"grid must be a ReproGrid; got {type(grid).__name__}.")
    if isinstance(name, Preset):
        if grid is not None:
            return name, grid
        if name.name not in GRIDS:
            raise ValueError(f"no reproduction grid for preset {name.name!r}; use one of {', '.join(GRIDS)}.")
        return name, GRIDS[name.name]
    key = str(name).strip().lower()
    if key not in GRIDS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(REPRO_PRESET_NAMES)}.")
    return get_preset(key), grid or GRIDS[key]
