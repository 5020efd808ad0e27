"""hmmlib: the companion package of *hmmbook*.

Five layers, each importing only the ones above it in this list (``hmmlib/README.md``):

1. :mod:`hmmlib.hmm`: HMMs and exact inference;
2. :mod:`hmmlib.lm`: the transformer, pretraining, checkpoints and the model cache;
3. :mod:`hmmlib.adapt`: downstream tasks, theory and the tuning methods;
4. :mod:`hmmlib.memory`: the memory-augmented HMM and the attention head;
5. :mod:`hmmlib.experiments`: presets, runners and plotting.

Notation: ``book/notation.md``.
"""
__version__ = "0.2.0"

from . import hmm, lm, adapt, memory, experiments
from .hmm import (HMM, to_hmmlearn_params, paper_hmm, dirichlet_hmm, sample, check_tokens, forward, backward,
                  log_likelihood, posterior_marginals, posterior_h0, masked_conditional, masked_token_conditionals,
                  next_token_conditionals, entropy, viterbi, bruteforce)
from .lm import (Transformer, TransformerConfig, ModelOutput, TrainConfig, Pretrained, pretrain, evaluate,
                 load_pretrained, save_checkpoint, load_checkpoint, pretrained_model, cache_dir, default_device)
from .adapt import (tasks, theory, DownstreamTask, TaskDataset, SingleClassError, paper_task, make_splits,
                    paper_task_and_splits, TuneConfig, HeadConfig, FakeTokenPromptConfig, PromptTuningConfig,
                    PrefixTuningConfig, FineTuningConfig, Tuner, make_tuner, tune_and_evaluate)
from .memory import (MemoryHMM, to_hmm, sample_memory, paper_memory_hmm, locatable_memory_hmm, memory_posterior,
                     memory_masked_posteriors, memory_masked_conditionals, MemoryTaskDataset, memory_task_and_splits,
                     SingleQueryAttentionHead, AttentionHeadTuner)
from .experiments import Preset, get_preset, PRESET_ENV, pretrained_for, plotting
from . import checks, display  # exercise checkers; glue with or without myst-nb (above every layer)

__all__ = [
    "__version__", "hmm", "lm", "adapt", "memory", "experiments",
    "HMM", "to_hmmlearn_params", "paper_hmm", "dirichlet_hmm", "sample", "check_tokens", "forward", "backward",
    "log_likelihood", "posterior_marginals", "posterior_h0", "masked_conditional", "masked_token_conditionals",
    "next_token_conditionals", "entropy", "viterbi", "bruteforce",
    "Transformer", "TransformerConfig", "ModelOutput", "TrainConfig", "Pretrained", "pretrain", "evaluate",
    "load_pretrained", "save_checkpoint", "load_checkpoint", "pretrained_model", "cache_dir", "default_device",
    "tasks", "theory", "DownstreamTask", "TaskDataset", "SingleClassError", "paper_task", "make_splits",
    "paper_task_and_splits", "TuneConfig", "HeadConfig", "FakeTokenPromptConfig", "PromptTuningConfig",
    "PrefixTuningConfig", "FineTuningConfig", "Tuner", "make_tuner", "tune_and_evaluate",
    "MemoryHMM", "to_hmm", "sample_memory", "paper_memory_hmm", "locatable_memory_hmm", "memory_posterior",
    "memory_masked_posteriors", "memory_masked_conditionals", "MemoryTaskDataset", "memory_task_and_splits",
    "SingleQueryAttentionHead", "AttentionHeadTuner",
    "Preset", "get_preset", "PRESET_ENV", "pretrained_for", "plotting", "checks", "display",
]
