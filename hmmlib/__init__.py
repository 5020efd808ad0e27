"""hmmlib: the companion package of *hmmbook*.

HMMs and exact inference, presets, and (in later chapters) the transformer,
pretraining and head/prompt/prefix tuning. Notation: ``book/notation.md``.
"""
from .hmm import HMM, to_hmmlearn_params
from .generators import paper_hmm, dirichlet_hmm
from .sampling import sample
from .inference import (
    check_tokens,
    forward,
    backward,
    log_likelihood,
    posterior_marginals,
    posterior_h0,
    masked_conditional,
    masked_token_conditionals,
    next_token_conditionals,
    entropy,
    viterbi,
)
from .presets import Preset, get_preset, PRESET_ENV
from .device import default_device

__version__ = "0.1.0"
from .transformer import Transformer, TransformerConfig, ModelOutput
from .pretrain import TrainConfig, Pretrained, pretrain, evaluate, load_pretrained
from .checkpoint import save_checkpoint, load_checkpoint
from .cache import pretrained_model, cache_dir
from . import tasks, theory, tuning, tuning_ideal
from .tasks import DownstreamTask, TaskDataset, paper_task, make_splits, paper_task_and_splits
from .tuning import TuneConfig, make_tuner, tune_and_evaluate
from . import memory, memory_inference, memory_tasks, attention_head, memory_experiments
from .memory import MemoryHMM, to_hmm, sample_memory, paper_memory_hmm, locatable_memory_hmm
from .memory_inference import memory_posterior, memory_masked_posteriors, memory_masked_conditionals
from .memory_tasks import MemoryTaskDataset, memory_task_and_splits
from .attention_head import SingleQueryAttentionHead, AttentionHeadTuner
