"""Layer 2: the language model and its pretraining (chapter 2).

* :mod:`.transformer`: a compact masked or causal :class:`Transformer` with prompt/prefix hooks;
* :mod:`.optim`: AdamW and the warmup-then-linear-decay schedule (used by pretraining and tuning);
* :mod:`.pretrain`: :class:`TrainConfig`, :func:`pretrain`, :func:`evaluate` against the exact conditionals;
* :mod:`.checkpoint`: atomic checkpoints loaded with ``weights_only=True``;
* :mod:`.cache`: pretrained models keyed by everything that determines their weights;
* :mod:`.device`: the compute device (``HMMBOOK_DEVICE``).

Imports only :mod:`hmmlib.hmm`.
"""
from .transformer import Transformer, TransformerConfig, ModelOutput, KV
from .pretrain import TrainConfig, Pretrained, pretrain, evaluate, load_pretrained, model_masked_conditional
from .checkpoint import save_checkpoint, load_checkpoint
from .cache import pretrained_model, cache_dir, model_key
from .device import default_device

__all__ = ["Transformer", "TransformerConfig", "ModelOutput", "KV", "TrainConfig", "Pretrained", "pretrain", "evaluate",
           "load_pretrained", "model_masked_conditional", "save_checkpoint", "load_checkpoint", "pretrained_model",
           "cache_dir", "model_key", "default_device"]
