"""Size presets: the one switch between a CI smoke run, the website/Binder run and the paper's scale.

Set the environment variable ``HMMBOOK_PRESET`` to ``ci``, ``default`` (the
same as leaving it unset) or ``paper``. Every notebook calls :func:`get_preset`
once near the top and prints the result, so a reader always sees which sizes ran.
Only sizes differ between presets, never the code path.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields

__all__ = ["PRESET_ENV", "PRESET_NAMES", "HMMChapterSizes", "Preset", "get_preset"]

PRESET_ENV = "HMMBOOK_PRESET"
PRESET_NAMES = ("ci", "default", "paper")


@dataclass(frozen=True)
class HMMChapterSizes:
    """Sizes for chapter 1 (HMMs and exact inference).

    Attributes:
        num_states: hidden states of the demo HMM.
        num_symbols: vocabulary size (the paper's 10).
        num_seqs: sequences averaged over in the experiments.
        seq_len: length of the demo sequences.
        sharpening_lengths: input lengths at which the posterior of ``H_0`` is measured.
        num_checks: random small HMMs compared against brute-force enumeration.
    """

    num_states: int
    num_symbols: int
    num_seqs: int
    seq_len: int
    sharpening_lengths: tuple[int, ...]
    num_checks: int


@dataclass(frozen=True)
class Preset:
    """All sizes for one preset; one field per chapter."""

    name: str
    hmms: HMMChapterSizes

    def __str__(self) -> str:
        parts = []
        for f in fields(self):
            if f.name == "name":
                continue
            v = getattr(self, f.name)
            inner = ", ".join(f"{g.name}={getattr(v, g.name)}" for g in fields(v))
            parts.append(f"  {f.name}: {inner}")
        return f"hmmlib preset '{self.name}' (set {PRESET_ENV}=ci|default|paper to change)\n" + "\n".join(parts)


_PRESETS: dict[str, Preset] = {
    "ci": Preset(
        name="ci",
        hmms=HMMChapterSizes(
            num_states=10, num_symbols=10, num_seqs=200, seq_len=64,
            sharpening_lengths=(1, 2, 4, 8, 16, 32), num_checks=5,
        ),
    ),
    "default": Preset(
        name="default",
        hmms=HMMChapterSizes(
            num_states=10, num_symbols=10, num_seqs=2000, seq_len=128,
            sharpening_lengths=(1, 2, 4, 8, 16, 32, 64, 128), num_checks=20,
        ),
    ),
    "paper": Preset(
        name="paper",
        hmms=HMMChapterSizes(
            num_states=10, num_symbols=10, num_seqs=10000, seq_len=128,
            sharpening_lengths=(1, 2, 4, 8, 16, 32, 64, 128), num_checks=50,
        ),
    ),
}


def get_preset(name: str | None = None) -> Preset:
    """The preset named ``name``, else the one in ``$HMMBOOK_PRESET``, else ``default``."""
    if name is None:
        name = os.environ.get(PRESET_ENV, "").strip() or "default"
    key = name.lower()
    if key not in _PRESETS:
        raise ValueError(f"unknown preset {name!r} (from {PRESET_ENV}); choose one of {', '.join(PRESET_NAMES)}.")
    return _PRESETS[key]
