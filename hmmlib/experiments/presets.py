"""Size presets: the one switch between a CI smoke run, the website/Binder run and the paper's scale.

Set the environment variable ``HMMBOOK_PRESET`` to ``ci``, ``default`` (the same as leaving it unset), ``repro``
(hours on a CPU; the results pipeline's grid, records committed under ``results/``) or ``paper`` (GPUs). Every notebook calls :func:`get_preset` once near the top and prints the result, so a reader
always sees which sizes ran. Only sizes differ between presets, never the code path.

A preset holds the real config objects (:class:`~hmmlib.lm.TransformerConfig`, :class:`~hmmlib.lm.TrainConfig`,
one tuning config per method and model kind); change one with ``dataclasses.replace`` or ``cfg.replace(...)``.
Nothing below this layer knows that presets exist.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

from ..adapt.configs import (FakeTokenPromptConfig, FineTuningConfig, HeadConfig, PrefixTuningConfig,
                             PromptTuningConfig, TuneConfig)
from ..lm.pretrain import TrainConfig
from ..lm.transformer import TransformerConfig

__all__ = ["PRESET_ENV", "PRESET_NAMES", "HMMChapterSizes", "PretrainSizes", "MemorySizes", "TuningSizes", "Preset",
           "get_preset"]

PRESET_ENV = "HMMBOOK_PRESET"
PRESET_NAMES = ("ci", "default", "repro", "paper")


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
class PretrainSizes:
    """Chapter 2 (pretraining): the model and the training run, as configs.

    Attributes:
        model: the masked LM's architecture (``num_symbols`` and ``causal`` are set from the HMM and the
            objective by :meth:`configs`).
        train: the masked-LM training run (``objective`` is set by :meth:`configs`).
        num_states_sweep: the HMM sizes compared in chapter 2.
    """

    model: TransformerConfig
    train: TrainConfig
    num_states_sweep: tuple[int, ...]

    def configs(self, num_symbols: int, objective: str = "mlm", **train_overrides: Any) -> tuple[TransformerConfig, TrainConfig]:
        """The model and training configs for an HMM with ``num_symbols`` symbols and ``objective``."""
        model = replace(self.model, num_symbols=num_symbols, causal=objective == "causal")
        return model, replace(self.train, objective=objective, **train_overrides)

    # the sizes readers look up most, without a hop through the configs
    @property
    def seq_len(self) -> int:
        return self.train.seq_len

    @property
    def mlm_probability(self) -> float:
        return self.train.mlm_probability


@dataclass(frozen=True)
class TuningSizes:
    """Chapters 3 and 4 (head and prompt tuning): sizes, and one tuning config per method and model kind.

    Attributes:
        num_states_sweep: HMM sizes of the ideal-model sweep (10 symbols).
        num_seeds: HMMs (and tasks) per size in the ideal-model sweep; seed ``s`` draws both.
        split_sizes: train/val/test examples (the paper's 5000/500/1000).
        seq_len: tokens per example; the label uses the posterior given all of them.
        ideal: ``{"head": HeadConfig, "prompt": FakeTokenPromptConfig}`` on the ideal model.
        transformer: ``{"head", "prompt", "prefix", "finetune"}`` configs on the trained masked LM; their
            ``max_positions`` is how many positions the model reads (the pretraining length, or the paper's 80).
            The head is the converged one and the prompt starts from it (best of 3 on validation data); the
            heads' optimisation fields are what ``tune_config("head", model, solver="adamw")`` trains with AdamW.
        transformer_num_states: HMM sizes tuned on the trained masked LM (the pretraining sweep's models).
        transformer_num_seeds: tasks per size on the trained model (one HMM per size).
        transformer_split_sizes: train/val/test examples for the trained model.
    """

    num_states_sweep: tuple[int, ...]
    num_seeds: int
    split_sizes: tuple[int, int, int]
    seq_len: int
    ideal: Mapping[str, TuneConfig]
    transformer: Mapping[str, TuneConfig]
    transformer_num_states: tuple[int, ...]
    transformer_num_seeds: int
    transformer_split_sizes: tuple[int, int, int]

    def tune_config(self, method: str, model: str = "ideal", seed: int = 0, **overrides: Any) -> TuneConfig:
        """The preset's config of ``method`` on the ``"ideal"`` or ``"transformer"`` model, with ``seed`` and
        ``overrides`` applied by ``dataclasses.replace``."""
        table = {"ideal": self.ideal, "transformer": self.transformer}.get(model)
        if table is None:
            raise ValueError(f"model must be 'ideal' or 'transformer'; got {model!r}.")
        if method not in table:
            raise ValueError(f"the {model} model has no method {method!r}; choose one of {tuple(table)}.")
        return replace(table[method], seed=seed, **overrides)


@dataclass(frozen=True)
class MemorySizes:
    """Chapter 5 (the memory-augmented HMM).

    Attributes:
        num_values_sweep: memory sizes ``n_mem`` of the experiment (``4 n_mem`` hidden states in all).
        num_syntax: syntax states (the paper's 4); num_symbols: vocabulary (10).
        num_seeds: memory HMMs (and tasks) per size on the ideal model; seed ``s`` draws both.
        split_sizes: train/val/test examples (the paper's 5000/500/1000); seq_len: tokens per example.
        head: the :class:`HeadConfig` (AdamW) of the attention head; its ``max_positions`` is what
            a trained model reads, ``[MASK]`` included (the paper: 80, i.e. 79 of 128 tokens).
        transformer_num_values: memory sizes also run on trained masked LMs (one seed; two pretrainings each).
        theorem_num_seqs, theorem_seq_len: examples of the numerical checks of the theorem.
        sharpening_lengths: prefix lengths at which P(M | x_{1:t}) is measured.
    """

    num_values_sweep: tuple[int, ...]
    num_syntax: int
    num_symbols: int
    num_seeds: int
    split_sizes: tuple[int, int, int]
    seq_len: int
    head: HeadConfig
    transformer_num_values: tuple[int, ...]
    theorem_num_seqs: int
    theorem_seq_len: int
    sharpening_lengths: tuple[int, ...]

    def tune_config(self, seed: int = 0, **overrides: Any) -> HeadConfig:
        """:attr:`head` with ``seed`` and ``overrides`` (``dataclasses.replace``)."""
        return replace(self.head, seed=seed, **overrides)


@dataclass(frozen=True)
class Preset:
    """All sizes and configs for one preset; one field per chapter."""

    name: str
    hmms: HMMChapterSizes
    pretrain: PretrainSizes
    memory: MemorySizes
    tuning: TuningSizes

    def __str__(self) -> str:
        lines = [f"hmmlib preset '{self.name}' (set {PRESET_ENV}=ci|default|repro|paper to change)"]
        for f in fields(self):
            if f.name == "name":
                continue
            v = getattr(self, f.name)
            lines.append(f"  {f.name}: " + ", ".join(f"{g.name}={_short(getattr(v, g.name))}" for g in fields(v)))
        return "\n".join(lines)


def _short(v: Any) -> str:
    """A config's non-default fields only (``HeadConfig(lr=0.01, ...)``), so the printed preset stays readable."""
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k}: {_short(c)}" for k, c in v.items()) + "}"
    if hasattr(v, "__dataclass_fields__"):
        parts = [f"{f.name}={getattr(v, f.name)!r}" for f in fields(v) if getattr(v, f.name) != f.default]
        return f"{type(v).__name__}({', '.join(parts)})"
    return repr(v)


def _tuning(num_states_sweep, num_seeds, split_sizes, seq_len, *, steps, batch, lr, prompt_len_ideal, t_states,
            t_seeds, t_splits, t_steps, t_batch, prompt_len, prefix_len, lrs, warmup=0, positions) -> TuningSizes:
    """The tuning section of a preset: shared optimisation settings, then one config per method."""
    ideal_kw = dict(lr=lr, num_steps=steps, batch_size=batch, warmup_steps=warmup, log_every=10**9)
    t_kw = dict(num_steps=t_steps, batch_size=t_batch, warmup_steps=warmup, log_every=10**9, max_positions=positions)
    return TuningSizes(
        num_states_sweep=num_states_sweep, num_seeds=num_seeds, split_sizes=split_sizes, seq_len=seq_len,
        ideal={"head": HeadConfig(**ideal_kw), "prompt": FakeTokenPromptConfig(prompt_len=prompt_len_ideal, **ideal_kw)},
        transformer={"head": HeadConfig(lr=lrs["head"], **t_kw),
                     "prompt": PromptTuningConfig(lr=lrs["prompt"], prompt_len=prompt_len, **t_kw),
                     "prefix": PrefixTuningConfig(lr=lrs["prefix"], prefix_len=prefix_len, **t_kw),
                     "finetune": FineTuningConfig(lr=lrs["finetune"], **t_kw)},
        transformer_num_states=t_states, transformer_num_seeds=t_seeds, transformer_split_sizes=t_splits)


def _pretrain(*, d_model, num_layers, num_heads, d_mlp, dropout, seq_len, num_states_sweep, **train) -> PretrainSizes:
    # 64 learned positions beyond the pretraining length leave room for prompts and prefixes
    model = TransformerConfig(num_symbols=10, d_model=d_model, num_layers=num_layers, num_heads=num_heads, d_mlp=d_mlp,
                              max_len=seq_len + 64, dropout=dropout)
    return PretrainSizes(model, TrainConfig(objective="mlm", seq_len=seq_len, **train), num_states_sweep)


_LR = {"head": 1e-2, "prompt": 1e-2, "prefix": 1e-3, "finetune": 1e-3}

_PRESETS: dict[str, Preset] = {
    "ci": Preset(
        name="ci",
        hmms=HMMChapterSizes(num_states=10, num_symbols=10, num_seqs=200, seq_len=64,
                             sharpening_lengths=(1, 2, 4, 8, 16, 32), num_checks=5),
        # measured: narrower models (32 wide, 2 heads) sit on the unigram plateau for 400+ steps
        pretrain=_pretrain(d_model=64, num_layers=2, num_heads=4, d_mlp=None, dropout=0.0, seq_len=32, batch_size=32,
                           num_steps=300, lr=3e-3, warmup_steps=20, weight_decay=0.01, mlm_probability=0.3,
                           eval_every=100, eval_num_seqs=128, num_states_sweep=(4, 10)),
        memory=MemorySizes(num_values_sweep=(2, 3), num_syntax=4, num_symbols=10, num_seeds=1,
                           split_sizes=(400, 100, 400), seq_len=64,
                           head=HeadConfig.adamw(lr=1e-2, num_steps=300, batch_size=128, warmup_steps=30, log_every=10**9,
                                           max_positions=32),
                           transformer_num_values=(3,), theorem_num_seqs=200, theorem_seq_len=32,
                           sharpening_lengths=(1, 2, 4, 8, 16, 32)),
        tuning=_tuning((4, 10, 25), 2, (1000, 200, 500), 64, steps=1000, batch=128, lr=1e-2, prompt_len_ideal=1,
                       t_states=(4, 10), t_seeds=1, t_splits=(500, 100, 300), t_steps=60, t_batch=32, prompt_len=4,
                       prefix_len=4, lrs=_LR, positions=32),
    ),
    "default": Preset(
        name="default",
        hmms=HMMChapterSizes(num_states=10, num_symbols=10, num_seqs=2000, seq_len=128,
                             sharpening_lengths=(1, 2, 4, 8, 16, 32, 64, 128), num_checks=20),
        # the ci model's shape (which escapes the MLM plateau), trained 3x longer on 2x longer text
        pretrain=_pretrain(d_model=64, num_layers=2, num_heads=4, d_mlp=None, dropout=0.0, seq_len=64, batch_size=32,
                           num_steps=900, lr=3e-3, warmup_steps=50, weight_decay=0.01, mlm_probability=0.3,
                           eval_every=100, eval_num_seqs=512, num_states_sweep=(4, 10, 30)),
        memory=MemorySizes(num_values_sweep=(2, 3, 5, 7), num_syntax=4, num_symbols=10, num_seeds=2,
                           split_sizes=(2000, 200, 1000), seq_len=128,
                           head=HeadConfig.adamw(lr=1e-2, num_steps=1000, batch_size=128, warmup_steps=100, log_every=10**9,
                                           max_positions=64),
                           transformer_num_values=(3, 7), theorem_num_seqs=1000, theorem_seq_len=32,
                           sharpening_lengths=(1, 2, 4, 8, 16, 32, 64, 128)),
        tuning=_tuning((4, 8, 10, 12, 15, 25, 30), 5, (5000, 500, 1000), 128, steps=1000, batch=128, lr=1e-2,
                       prompt_len_ideal=1, t_states=(4, 10, 30), t_seeds=1, t_splits=(2000, 500, 1000), t_steps=300,
                       t_batch=64, prompt_len=10, prefix_len=10, lrs=_LR, positions=64),
    ),
    "paper": Preset(
        name="paper",
        hmms=HMMChapterSizes(num_states=10, num_symbols=10, num_seqs=10000, seq_len=128,
                             sharpening_lengths=(1, 2, 4, 8, 16, 32, 64, 128), num_checks=50),
        # The paper's run as actually executed (BERT-base size; the authors' src/run_pretrain.sh and src/run_mlm.py):
        # 51.2 M tokens = 5,000 documents of 10,240 tokens in 512-token blocks, 3 epochs of batch 8.
        pretrain=_pretrain(d_model=768, num_layers=12, num_heads=12, d_mlp=3072, dropout=0.1, seq_len=512,
                           batch_size=8, num_steps=37500, lr=1e-5, warmup_steps=1000, weight_decay=0.0,
                           mlm_probability=0.05, corpus_tokens=51_200_000, doc_len=10240, eval_every=500,
                           eval_num_seqs=1024, num_states_sweep=(4, 8, 10, 12, 15, 25, 30)),
        memory=MemorySizes(num_values_sweep=(2, 3, 5, 7), num_syntax=4, num_symbols=10, num_seeds=5,
                           split_sizes=(5000, 500, 1000), seq_len=128,
                           head=HeadConfig.adamw(lr=1e-2, num_steps=4000, batch_size=128, warmup_steps=500, log_every=10**9,
                                           max_positions=80),
                           transformer_num_values=(2, 3, 5, 7), theorem_num_seqs=2000, theorem_seq_len=32,
                           sharpening_lengths=(1, 2, 4, 8, 16, 32, 64, 128)),
        # The paper's finetuning (the authors' src/run_finetune_seed.sh and scripts/exp1_*): 20 seeds, 5000/500/1000 x 128 tokens,
        # lr 0.01, 100 epochs of batch 128 (~4000 steps), 20 prompt vectors, max_seq_length 80.
        tuning=_tuning((4, 8, 10, 12, 15, 25, 30), 20, (5000, 500, 1000), 128, steps=4000, batch=128, lr=1e-2,
                       prompt_len_ideal=1, t_states=(4, 8, 10, 12, 15, 25, 30), t_seeds=5,
                       t_splits=(5000, 500, 1000), t_steps=4000, t_batch=128, prompt_len=20, prefix_len=20,
                       lrs={"head": 1e-2, "prompt": 1e-2, "prefix": 1e-4, "finetune": 3e-5}, warmup=500,
                       positions=80),
    ),
}


def _repro(d: Preset) -> Preset:
    """``repro``: ``default``'s model shape, context (64 positions) and tuning steps, pretrained 2400 steps instead
    of 900 (position-0 TV to the exact :math:`G(x)` about 0.06 at 30 states instead of about 0.15, measured), on the
    paper's 7 sizes with the paper's split sizes (5000/500/1000). Its grid of seeds is
    :data:`hmmlib.experiments.repro_presets.GRIDS` ``["repro"]``."""
    paper_sizes = (4, 8, 10, 12, 15, 25, 30)
    pretrain = replace(d.pretrain, train=replace(d.pretrain.train, num_steps=2400, warmup_steps=100, eval_every=600),
                       num_states_sweep=paper_sizes)
    tuning = replace(d.tuning, transformer_num_states=paper_sizes, transformer_num_seeds=10,
                     transformer_split_sizes=(5000, 500, 1000))
    memory = replace(d.memory, num_seeds=5, split_sizes=(5000, 500, 1000), transformer_num_values=(2, 3, 5, 7))
    return replace(d, name="repro", pretrain=pretrain, tuning=tuning, memory=memory)


_PRESETS["repro"] = _repro(_PRESETS["default"])


def get_preset(name: str | None = None) -> Preset:
    """The preset named ``name``, else the one in ``$HMMBOOK_PRESET``, else ``default``."""
    if name is None:
        name = os.environ.get(PRESET_ENV, "").strip() or "default"
    key = name.lower()
    if key not in _PRESETS:
        raise ValueError(f"unknown preset {name!r} (from {PRESET_ENV}); choose one of {', '.join(PRESET_NAMES)}.")
    return _PRESETS[key]
