"""Sizes of the prefix-tuning chapter (chapter 7) per preset; :func:`prefix_sizes` picks them for
``hmmlib.get_preset().name`` (to be folded into :class:`~hmmlib.experiments.presets.Preset`)."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PrefixSizes", "prefix_sizes"]


@dataclass(frozen=True)
class PrefixSizes:
    """Sizes for chapter 7.

    Attributes:
        num_members, num_states, num_symbols: the pretraining family (members x states, one vocabulary).
        x_len, y_len: input ("table") and output lengths of the conditional task.
        perturb: how far the adaptation target is pushed out of the family (:func:`hmmlib.hmm.families.perturbed_hmm`).
        channel: the conditional task's symbol noise (:func:`hmmlib.hmm.families.symbol_channel`).
        num_seen: members whose examples train the task in the extrapolation experiment (R8).
        d_model, num_layers, num_heads: the causal LM.
        pretrain_seq_len, pretrain_steps, pretrain_batch_size, pretrain_lr: its pretraining.
        num_seeds: seeds per configuration.
        num_train, num_test: examples of the full training set and of the test set.
        low_data: training examples of the low-data experiments (R4).
        data_sizes: training-set sizes of the data-efficiency experiment (R5).
        num_steps, batch_size: steps and batch of every tuning run.
        mlp_hidden: the prefix MLP's hidden width.
        lr_prefix, lr_direct, lr_prompt, lr_finetune: learning rates per method (tuned once, reported).
        lengths: prefix / prompt / infix lengths compared in R1 and R7.
        length_sweep: prefix lengths of R6.
        lr_sweep: learning rates of R3.
        peft_steps: steps of the PEFT runs in the bridge section.
    """

    num_members: int
    num_states: int
    num_symbols: int
    x_len: int
    y_len: int
    perturb: float
    channel: float
    num_seen: int
    d_model: int
    num_layers: int
    num_heads: int
    pretrain_seq_len: int
    pretrain_steps: int
    pretrain_batch_size: int
    pretrain_lr: float
    num_seeds: int
    num_train: int
    num_test: int
    low_data: int
    data_sizes: tuple[int, ...]
    num_steps: int
    batch_size: int
    mlp_hidden: int
    lr_prefix: float
    lr_direct: float
    lr_prompt: float
    lr_finetune: float
    lengths: tuple[int, ...]
    length_sweep: tuple[int, ...]
    lr_sweep: tuple[float, ...]
    peft_steps: int


_COMMON = dict(num_members=6, num_states=4, num_symbols=12, x_len=8, y_len=12, perturb=0.5, channel=0.5, num_seen=4,
               num_heads=4, mlp_hidden=64, pretrain_batch_size=32, pretrain_lr=3e-3)

_SIZES = {
    "ci": PrefixSizes(**_COMMON, d_model=64, num_layers=2, pretrain_seq_len=40, pretrain_steps=200, num_seeds=1,
                      num_train=400, num_test=200, low_data=50, data_sizes=(25, 400), num_steps=30, batch_size=32,
                      lr_prefix=1e-2, lr_direct=1e-1, lr_prompt=3e-2, lr_finetune=1e-3, lengths=(1, 5),
                      length_sweep=(1, 5, 15), lr_sweep=(1e-3, 1e-1), peft_steps=30),
    "default": PrefixSizes(**_COMMON, d_model=64, num_layers=2, pretrain_seq_len=48, pretrain_steps=1200,
                           num_seeds=3, num_train=1000, num_test=500, low_data=50, data_sizes=(25, 100, 1000),
                           num_steps=150, batch_size=32, lr_prefix=1e-2, lr_direct=1e-1, lr_prompt=3e-2,
                           lr_finetune=1e-3, lengths=(1, 5, 10), length_sweep=(1, 2, 5, 10, 20),
                           lr_sweep=(1e-3, 1e-2, 1e-1), peft_steps=150),
    "repro": PrefixSizes(**_COMMON, d_model=128, num_layers=4, pretrain_seq_len=64, pretrain_steps=4000,
                         num_seeds=5, num_train=5000, num_test=2000, low_data=100, data_sizes=(50, 100, 200, 500, 5000),
                         num_steps=1000, batch_size=32, lr_prefix=1e-2, lr_direct=1e-1, lr_prompt=3e-2,
                         lr_finetune=3e-4, lengths=(1, 5, 10, 20), length_sweep=(1, 2, 5, 10, 20, 40),
                         lr_sweep=(1e-4, 1e-3, 1e-2, 1e-1), peft_steps=1000),
}
_SIZES["paper"] = _SIZES["repro"]


def prefix_sizes(name: str | None = None) -> PrefixSizes:
    """The sizes for preset ``name`` (default: ``hmmlib.get_preset().name``)."""
    if name is None:
        from .presets import get_preset

        name = get_preset().name
    if name not in _SIZES:
        raise ValueError(f"no prefix-tuning sizes for preset {name!r}; choose one of {sorted(_SIZES)}.")
    return _SIZES[name]
