"""Size presets: the one switch between a CI smoke run, the website/Binder run and the paper's scale.

Set the environment variable ``HMMBOOK_PRESET`` to ``ci``, ``default`` (the
same as leaving it unset) or ``paper``. Every notebook calls :func:`get_preset`
once near the top and prints the result, so a reader always sees which sizes ran.
Only sizes differ between presets, never the code path.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields

__all__ = ["PRESET_ENV", "PRESET_NAMES", "HMMChapterSizes", "PretrainSizes", "MemorySizes", "TuningSizes", "Preset", "get_preset"]

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
class PretrainSizes:
    """Sizes for chapter 2 (pretraining); :meth:`model_config` and :meth:`train_config` build the configs.

    Attributes mirror :class:`hmmlib.transformer.TransformerConfig` and
    :class:`hmmlib.pretrain.TrainConfig`; ``num_states_sweep`` lists the HMM sizes compared.
    """

    d_model: int
    num_layers: int
    num_heads: int
    d_mlp: int | None
    dropout: float
    seq_len: int
    batch_size: int
    num_steps: int
    lr: float
    warmup_steps: int
    weight_decay: float
    mlm_probability: float
    corpus_tokens: int | None
    doc_len: int | None
    eval_every: int
    eval_num_seqs: int
    num_states_sweep: tuple[int, ...]

    def model_config(self, num_symbols: int, causal: bool = False):
        from ..lm.transformer import TransformerConfig

        return TransformerConfig(
            num_symbols=num_symbols, d_model=self.d_model, num_layers=self.num_layers, num_heads=self.num_heads,
            d_mlp=self.d_mlp, max_len=self.seq_len + 64, dropout=self.dropout, causal=causal,
        )

    def train_config(self, objective: str = "mlm", seed: int = 0, **overrides):
        from ..lm.pretrain import TrainConfig

        kw = dict(
            objective=objective, num_steps=self.num_steps, batch_size=self.batch_size, seq_len=self.seq_len,
            lr=self.lr, warmup_steps=self.warmup_steps, weight_decay=self.weight_decay,
            mlm_probability=self.mlm_probability, corpus_tokens=self.corpus_tokens, doc_len=self.doc_len,
            eval_every=self.eval_every, eval_num_seqs=self.eval_num_seqs, seed=seed,
        )
        kw.update(overrides)
        return TrainConfig(**kw)


@dataclass(frozen=True)
class TuningSizes:
    """Sizes for chapters 3 and 4 (head and prompt tuning); :meth:`tune_config` builds the configs.

    Attributes:
        num_states_sweep: HMM sizes of the ideal-model sweep (10 symbols).
        num_seeds: HMMs (and tasks) per size in the ideal-model sweep; seed ``s`` draws both.
        split_sizes: train/val/test examples (the paper's 5000/500/1000).
        seq_len: tokens per example; the label uses the posterior given all of them.
        num_steps, batch_size, lr: ideal-model tuning (AdamW, linear decay).
        prompt_len_ideal: fake tokens of ideal prompt tuning.
        transformer_num_states: HMM sizes tuned on the trained masked LM (the pretraining
            sweep's models, so they come from the cache).
        transformer_num_seeds: tasks per size on the trained model (one HMM per size).
        transformer_split_sizes: train/val/test examples for the trained model.
        transformer_num_steps, transformer_batch_size: steps and batch of every transformer method.
        prompt_len, prefix_len: soft-prompt vectors and prefix positions (the paper: 20 prompt vectors).
        lr_head, lr_prompt, lr_prefix, lr_finetune: learning rates of the transformer methods.
        warmup_steps: linear warmup of every method (the paper: 500).
        model_len: positions the trained model reads (``[MASK]``, prompt or prefix, tokens);
            ``None``: the pretraining length. The paper's ``max_seq_length`` was 80.
    """

    num_states_sweep: tuple[int, ...]
    num_seeds: int
    split_sizes: tuple[int, int, int]
    seq_len: int
    num_steps: int
    batch_size: int
    lr: float
    prompt_len_ideal: int
    transformer_num_states: tuple[int, ...]
    transformer_num_seeds: int
    transformer_split_sizes: tuple[int, int, int]
    transformer_num_steps: int
    transformer_batch_size: int
    prompt_len: int
    prefix_len: int
    lr_head: float
    lr_prompt: float
    lr_prefix: float
    lr_finetune: float
    warmup_steps: int = 0
    model_len: int | None = None

    def tune_config(self, method: str, model: str = "ideal", seed: int = 0, **overrides):
        """The :class:`hmmlib.tuning.TuneConfig` of ``method`` on the ``"ideal"`` or ``"transformer"`` model."""
        from ..adapt.tuning import TuneConfig

        if model not in ("ideal", "transformer"):
            raise ValueError(f"model must be 'ideal' or 'transformer'; got {model!r}.")
        if model == "ideal":
            kw = dict(method=method, lr=self.lr, num_steps=self.num_steps, batch_size=self.batch_size,
                      prompt_len=self.prompt_len_ideal)
        else:
            lr = {"head": self.lr_head, "prompt": self.lr_prompt, "prefix": self.lr_prefix,
                  "finetune": self.lr_finetune}.get(method, self.lr_head)
            kw = dict(method=method, lr=lr, num_steps=self.transformer_num_steps,
                      batch_size=self.transformer_batch_size, prompt_len=self.prompt_len, prefix_len=self.prefix_len)
        kw.update(seed=seed, log_every=10**9, warmup_steps=self.warmup_steps)
        kw.update(overrides)
        return TuneConfig(**kw)


@dataclass(frozen=True)
class MemorySizes:
    """Sizes for chapter 5 (the memory-augmented HMM); :meth:`tune_config` builds the head's config.

    Attributes:
        num_values_sweep: memory sizes ``n_mem`` of the experiment (``4 n_mem`` hidden states in all).
        num_syntax: syntax states (the paper's 4); num_symbols: vocabulary (10).
        num_seeds: memory HMMs (and tasks) per size on the ideal model; seed ``s`` draws both.
        split_sizes: train/val/test examples (the paper's 5000/500/1000); seq_len: tokens per example.
        num_steps, batch_size, lr, warmup_steps: tuning of every head (AdamW, linear decay).
        transformer_num_values: memory sizes also run on trained masked LMs (one seed; two
            pretrainings each: memory and vanilla HMM); model_len: tokens the trained model reads
            (the paper: 79 of 128; at most the pretraining length minus the [MASK]).
        theorem_num_seqs, theorem_seq_len: examples of the numerical checks of the theorem.
        sharpening_lengths: prefix lengths at which P(M | x_{1:t}) is measured.
    """

    num_values_sweep: tuple[int, ...]
    num_syntax: int
    num_symbols: int
    num_seeds: int
    split_sizes: tuple[int, int, int]
    seq_len: int
    num_steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    transformer_num_values: tuple[int, ...]
    model_len: int
    theorem_num_seqs: int
    theorem_seq_len: int
    sharpening_lengths: tuple[int, ...]

    def tune_config(self, seed: int = 0, **overrides):
        """The :class:`hmmlib.tuning.TuneConfig` (``method="head"``) of the attention and linear heads."""
        from ..adapt.tuning import TuneConfig

        kw = dict(method="head", lr=self.lr, num_steps=self.num_steps, batch_size=self.batch_size,
                  warmup_steps=self.warmup_steps, log_every=10**9, seed=seed)
        kw.update(overrides)
        return TuneConfig(**kw)


@dataclass(frozen=True)
class Preset:
    """All sizes for one preset; one field per chapter."""

    name: str
    hmms: HMMChapterSizes
    pretrain: PretrainSizes
    memory: MemorySizes
    tuning: TuningSizes

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
        memory=MemorySizes(
            num_values_sweep=(2, 3), num_syntax=4, num_symbols=10, num_seeds=1, split_sizes=(400, 100, 400),
            seq_len=64, num_steps=300, batch_size=128, lr=1e-2, warmup_steps=30, transformer_num_values=(3,),
            model_len=31, theorem_num_seqs=200, theorem_seq_len=32, sharpening_lengths=(1, 2, 4, 8, 16, 32),
        ),
        hmms=HMMChapterSizes(
            num_states=10, num_symbols=10, num_seqs=200, seq_len=64,
            sharpening_lengths=(1, 2, 4, 8, 16, 32), num_checks=5,
        ),
        pretrain=PretrainSizes(
            # measured: narrower models (32 wide, 2 heads) sit on the unigram plateau for 400+ steps
            d_model=64, num_layers=2, num_heads=4, d_mlp=None, dropout=0.0, seq_len=32, batch_size=32,
            num_steps=300, lr=3e-3, warmup_steps=20, weight_decay=0.01, mlm_probability=0.3,
            corpus_tokens=None, doc_len=None, eval_every=100, eval_num_seqs=128, num_states_sweep=(4, 10),
        ),
        tuning=TuningSizes(
            num_states_sweep=(4, 10, 25), num_seeds=2, split_sizes=(1000, 200, 500), seq_len=64,
            num_steps=1000, batch_size=128, lr=1e-2, prompt_len_ideal=1,
            transformer_num_states=(4, 10), transformer_num_seeds=1, transformer_split_sizes=(500, 100, 300),
            transformer_num_steps=60, transformer_batch_size=32, prompt_len=4, prefix_len=4,
            lr_head=1e-2, lr_prompt=1e-2, lr_prefix=1e-3, lr_finetune=1e-3,
        ),
    ),
    "default": Preset(
        name="default",
        memory=MemorySizes(
            num_values_sweep=(2, 3, 5, 7), num_syntax=4, num_symbols=10, num_seeds=2, split_sizes=(2000, 200, 1000),
            seq_len=128, num_steps=1000, batch_size=128, lr=1e-2, warmup_steps=100, transformer_num_values=(3, 7),
            model_len=63, theorem_num_seqs=1000, theorem_seq_len=32, sharpening_lengths=(1, 2, 4, 8, 16, 32, 64, 128),
        ),
        hmms=HMMChapterSizes(
            num_states=10, num_symbols=10, num_seqs=2000, seq_len=128,
            sharpening_lengths=(1, 2, 4, 8, 16, 32, 64, 128), num_checks=20,
        ),
        pretrain=PretrainSizes(
            # the ci model's shape (which escapes the MLM plateau), trained 3x longer on 2x longer text
            d_model=64, num_layers=2, num_heads=4, d_mlp=None, dropout=0.0, seq_len=64, batch_size=32,
            num_steps=900, lr=3e-3, warmup_steps=50, weight_decay=0.01, mlm_probability=0.3,
            corpus_tokens=None, doc_len=None, eval_every=100, eval_num_seqs=512, num_states_sweep=(4, 10, 30),
        ),
        tuning=TuningSizes(
            num_states_sweep=(4, 8, 10, 12, 15, 25, 30), num_seeds=5, split_sizes=(5000, 500, 1000), seq_len=128,
            num_steps=1000, batch_size=128, lr=1e-2, prompt_len_ideal=1,
            transformer_num_states=(4, 10, 30), transformer_num_seeds=1, transformer_split_sizes=(2000, 500, 1000),
            transformer_num_steps=300, transformer_batch_size=64, prompt_len=10, prefix_len=10,
            lr_head=1e-2, lr_prompt=1e-2, lr_prefix=1e-3, lr_finetune=1e-3,
        ),
    ),
    "paper": Preset(
        name="paper",
        memory=MemorySizes(
            num_values_sweep=(2, 3, 5, 7), num_syntax=4, num_symbols=10, num_seeds=5, split_sizes=(5000, 500, 1000),
            seq_len=128, num_steps=4000, batch_size=128, lr=1e-2, warmup_steps=500,
            transformer_num_values=(2, 3, 5, 7), model_len=79, theorem_num_seqs=2000, theorem_seq_len=32,
            sharpening_lengths=(1, 2, 4, 8, 16, 32, 64, 128),
        ),
        hmms=HMMChapterSizes(
            num_states=10, num_symbols=10, num_seqs=10000, seq_len=128,
            sharpening_lengths=(1, 2, 4, 8, 16, 32, 64, 128), num_checks=50,
        ),
        # The paper's run as actually executed (BERT-base size; wei2021.md section 4.5):
        # 51.2 M tokens = 5,000 documents of 10,240 tokens in 512-token blocks, 3 epochs of batch 8.
        pretrain=PretrainSizes(
            d_model=768, num_layers=12, num_heads=12, d_mlp=3072, dropout=0.1, seq_len=512, batch_size=8,
            num_steps=37500, lr=1e-5, warmup_steps=1000, weight_decay=0.0, mlm_probability=0.05,
            corpus_tokens=51_200_000, doc_len=10240, eval_every=500, eval_num_seqs=1024,
            num_states_sweep=(4, 8, 10, 12, 15, 25, 30),
        ),
        # The paper's finetuning (wei2021.md sections 4.4, 4.6-4.9): 20 seeds, 5000/500/1000 x 128 tokens,
        # lr 0.01, 100 epochs of batch 128 (~4000 steps), 20 prompt vectors.
        tuning=TuningSizes(
            num_states_sweep=(4, 8, 10, 12, 15, 25, 30), num_seeds=20, split_sizes=(5000, 500, 1000), seq_len=128,
            num_steps=4000, batch_size=128, lr=1e-2, prompt_len_ideal=1,
            transformer_num_states=(4, 8, 10, 12, 15, 25, 30), transformer_num_seeds=5,
            transformer_split_sizes=(5000, 500, 1000), transformer_num_steps=4000, transformer_batch_size=128,
            prompt_len=20, prefix_len=20, lr_head=1e-2, lr_prompt=1e-2, lr_prefix=1e-4, lr_finetune=3e-5,
            warmup_steps=500, model_len=80,
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
