"""Layer 3: adapting a frozen model to a downstream task (chapters 3-4).

* :mod:`.tasks`: the paper's downstream tasks and their exact datasets;
* :mod:`.theory`: non-degeneracy, closed-form heads, prompt reweighting, counterexamples;
* :mod:`.theory_robust`: margin versions of the theorems and the measurements that test them;
* :mod:`.tuning`: head, prompt, prefix and fine-tuning on a frozen transformer;
* :mod:`.ideal`: head and prompt tuning on the ideal model (exact inference).

Imports :mod:`hmmlib.hmm` and :mod:`hmmlib.lm`.
"""
from . import tasks, theory, theory_robust
from .tasks import DownstreamTask, TaskDataset, paper_task, task_from_mu, make_splits, paper_task_and_splits, sub_seed
from .tuning import TuneConfig, Tuner, make_tuner, tune_and_evaluate

__all__ = ["tasks", "theory", "theory_robust", "DownstreamTask", "TaskDataset", "paper_task", "task_from_mu", "make_splits",
           "paper_task_and_splits", "sub_seed", "TuneConfig", "Tuner", "make_tuner", "tune_and_evaluate"]
