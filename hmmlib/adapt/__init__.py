"""Layer 3: adapting a frozen model to a downstream task (chapters 3-4).

* :mod:`.tasks`: the paper's downstream tasks and their exact datasets;
* :mod:`.theory`: non-degeneracy, closed-form heads, prompt reweighting, counterexamples;
* :mod:`.theory_robust`: margin versions of the theorems and the measurements that test them;
* :mod:`.configs`: one config per tuning method and model kind (PEFT style); the defaults are the book's
  methods (the converged head; a prompt from it, best of 3 restarts), ``.paper()`` the paper's protocols;
* :mod:`.base`: :class:`Tuner`, the ``nn.Module`` that owns the training loop;
* :mod:`.frozen_lm`, :mod:`.prefix`: head, prompt, prefix and fine-tuning of a frozen transformer;
* :mod:`.ideal`: head and fake-token prompt tuning on the ideal model (exact inference);
* :mod:`.api`: :func:`make_tuner`, :func:`tune_and_evaluate`.

Imports :mod:`hmmlib.hmm` and :mod:`hmmlib.lm`.
"""
from . import tasks, theory, theory_robust
from .tasks import (DownstreamTask, TaskDataset, SingleClassError, paper_task, task_from_mu, make_dataset, make_splits,
                    paper_task_and_splits, sub_seed)
from .configs import (TuneConfig, HeadConfig, FakeTokenPromptConfig, PromptTuningConfig, PrefixTuningConfig,
                      FineTuningConfig, PAPER_TUNING)
from .base import Tuner
from .frozen_lm import TransformerTuner
from .ideal import IdealTuner
from .prefix import PrefixEncoder, prefix_from_tokens, soft_prompt_from_tokens
from .api import make_tuner, tune_and_evaluate

__all__ = ["tasks", "theory", "theory_robust", "DownstreamTask", "TaskDataset", "SingleClassError", "paper_task", "task_from_mu",
           "make_dataset", "make_splits", "paper_task_and_splits", "sub_seed", "TuneConfig", "HeadConfig",
           "FakeTokenPromptConfig", "PromptTuningConfig", "PrefixTuningConfig", "FineTuningConfig", "PAPER_TUNING",
           "Tuner", "TransformerTuner", "IdealTuner", "PrefixEncoder", "prefix_from_tokens", "soft_prompt_from_tokens",
           "make_tuner", "tune_and_evaluate"]
