"""Layer 4: the memory-augmented HMM (chapter 5).

* :mod:`.model`: :class:`MemoryHMM` (validation, the equivalent plain HMM, sampler, constructors);
* :mod:`.inference`: exact memory posteriors and masked conditionals, with brute force;
* :mod:`.tasks`: its downstream tasks;
* :mod:`.attention_head`: the single-query attention head and its tuner.

Imports :mod:`hmmlib.hmm`, :mod:`hmmlib.lm` and :mod:`hmmlib.adapt`.
"""
from .model import (MemoryHMM, to_hmm, sample_memory, paper_memory_hmm, locatable_memory_hmm, marginalise_memory,
                    marginalise_reader)
from .inference import (memory_posterior, masked_state_posteriors, memory_masked_posteriors, memory_masked_conditionals,
                        brute_memory_posterior)
from .tasks import MemoryTaskDataset, make_memory_splits, memory_task_and_splits
from .attention_head import SingleQueryAttentionHead, AttentionHeadTuner, set_theorem_head, model_position_probs

__all__ = ["MemoryHMM", "to_hmm", "sample_memory", "paper_memory_hmm", "locatable_memory_hmm", "marginalise_memory",
           "marginalise_reader", "memory_posterior", "masked_state_posteriors", "memory_masked_posteriors",
           "memory_masked_conditionals", "brute_memory_posterior", "MemoryTaskDataset", "make_memory_splits",
           "memory_task_and_splits", "SingleQueryAttentionHead", "AttentionHeadTuner", "set_theorem_head",
           "model_position_probs"]
