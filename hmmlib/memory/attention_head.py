r"""The single-query attention head of the memory experiments (``SingleQueryAttention`` in the authors' BERT,
``transformers/src/transformers/models/bert/modeling_bert.py`` of ``p-lambda/incontext-learning``), and its tuner.

The head reads a *sequence* of distributions over symbols :math:`g_1, \dots, g_T` (one per
position) and outputs class logits:

.. math::

    a_{k,t} = \operatorname{softmax}_t\!\Big(\frac{q_k^\top K_k g_t}{\sqrt{d}}\Big),\qquad
    o_k = \sum_t a_{k,t}\, V_k g_t,\qquad \text{logits} = R\,[o_1;\dots;o_H] + r,

with a learned query :math:`q_k \in \mathbb R^{d}` per head (initialised to **zero**, so the
attention starts uniform), keys and values ``Linear(in_dim, H d)`` and a linear readout. The
paper uses :math:`H` = ``in_dim`` heads of dimension :math:`d = 1`. Nothing depends on the position
index, so the output is invariant to a permutation of the positions.

:class:`AttentionHeadTuner` fits it with :class:`hmmlib.adapt.Tuner`'s loop (AdamW, seeded
minibatches, cross-entropy) on either

* the **ideal model**: the exact :math:`g_t = P(X_t \mid x_{-t})` stored in a
  :class:`~hmmlib.memory_tasks.MemoryTaskDataset`, or
* a **frozen masked LM** (:class:`hmmlib.Transformer`): its softmax at every position of one
  forward pass on ``[MASK] x_1 .. x_T`` (:func:`model_position_probs`), computed once without
  gradients, as the paper's ``shallow_probe_memory`` does.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..adapt.base import Tuner
from ..adapt.configs import HeadConfig
from ..adapt.frozen_lm import freeze
from ..lm.inputs import InputLayout
from ..lm.transformer import Transformer
from .model import MemoryHMM

__all__ = ["SingleQueryAttentionHead", "set_theorem_head", "model_position_probs", "AttentionHeadTuner"]


class SingleQueryAttentionHead(nn.Module):
    """Single-query multi-head attention over positions, then a linear readout (module docstring).

    Args:
        in_dim: size of each position's input (``V``, the number of symbols).
        num_heads: heads ``H`` (default ``in_dim``, the paper's choice).
        head_dim: ``d`` per head (the paper: 1).
        num_classes: outputs of the readout.
    """

    def __init__(self, in_dim: int, num_heads: int | None = None, head_dim: int = 1, num_classes: int = 2):
        super().__init__()
        num_heads = in_dim if num_heads is None else num_heads
        for name, v in (("in_dim", in_dim), ("num_heads", num_heads), ("head_dim", head_dim), ("num_classes", num_classes)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer; got {v!r}.")
        self.in_dim, self.num_heads, self.head_dim = in_dim, num_heads, head_dim
        self.query = nn.Parameter(torch.zeros(num_heads, head_dim))
        self.key = nn.Linear(in_dim, num_heads * head_dim)
        self.value = nn.Linear(in_dim, num_heads * head_dim)
        self.readout = nn.Linear(num_heads * head_dim, num_classes)

    def _check(self, g: torch.Tensor) -> None:
        if not isinstance(g, torch.Tensor) or g.dim() != 3 or g.shape[-1] != self.in_dim or g.shape[1] == 0:
            shape = tuple(g.shape) if isinstance(g, torch.Tensor) else type(g).__name__
            raise ValueError(f"inputs must have shape (batch, seq_len >= 1, in_dim={self.in_dim}); got {shape}.")

    def attention(self, g: torch.Tensor) -> torch.Tensor:
        """Attention weights ``(B, H, T)``; each ``[b, k]`` row sums to 1 over positions."""
        self._check(g)
        B, T, _ = g.shape
        k = self.key(g).view(B, T, self.num_heads, self.head_dim)
        scores = torch.einsum("bthd,hd->bht", k, self.query) / math.sqrt(self.head_dim)
        return scores.softmax(-1)

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, num_classes)`` from inputs ``g`` ``(B, T, in_dim)``."""
        a = self.attention(g)
        B, T, _ = g.shape
        v = self.value(g).view(B, T, self.num_heads, self.head_dim)
        out = torch.einsum("bht,bthd->bhd", a, v).reshape(B, -1)
        return self.readout(out)


@torch.no_grad()
def set_theorem_head(head: SingleQueryAttentionHead, kappa: Any, scale: float, b: Any) -> SingleQueryAttentionHead:
    r"""Set ``head`` to chapter 5's construction: head 0 has key :math:`\kappa`, query scale :math:`\lambda`
    (``scale``) and value :math:`b`; every other head has zero value; the class-1 logit is head 0's output
    and the class-0 logit is 0. The score (class 1 minus class 0) is then
    :math:`\sum_t a_t\, b^\top g_t` with :math:`a = \operatorname{softmax}_t(\lambda\kappa^\top g_t)`."""
    kw = dict(dtype=head.query.dtype, device=head.query.device)
    kappa, b = torch.as_tensor(kappa, **kw).reshape(-1), torch.as_tensor(b, **kw).reshape(-1)
    if kappa.numel() != head.in_dim or b.numel() != head.in_dim:
        raise ValueError(f"kappa and b must have in_dim={head.in_dim} entries; got {kappa.numel()} and {b.numel()}.")
    if not (math.isfinite(scale) and torch.isfinite(kappa).all() and torch.isfinite(b).all()):
        raise ValueError("kappa, scale and b must be finite.")
    for p in head.parameters():
        p.zero_()
    d = head.head_dim
    head.key.weight[0] = kappa                     # head 0, coordinate 0 of its key
    head.query[0, 0] = scale * math.sqrt(d)        # undo the 1/sqrt(d) of the scores
    head.value.weight[0] = b
    head.readout.weight[1, 0] = 1.0
    return head


@torch.no_grad()
def model_position_probs(model: Transformer, x: torch.Tensor, batch_size: int = 512,
                         max_positions: int | None = None) -> torch.Tensor:
    r"""A frozen masked LM's softmax over symbols at every position of ``[MASK] x_1 .. x_n``: ``(B, n+1, V)``
    float32 (position 0 is the ``[MASK]``; ``n`` as :class:`hmmlib.lm.inputs.InputLayout` decides), one forward
    pass per batch, in eval mode, without gradients.

    Only position 0 is a masked-LM prediction, the learned :math:`P(X_0 \mid x_{1:T})`. At a visible
    position ``t`` the model sees ``x_t`` itself, so its output there is **not**
    :math:`P(X_t \mid x_{-t})`: a BERT-style model trained with the 80/10/10 rule puts most of its mass
    on the token it sees. This is what the paper's attention head reads (``shallow_probe_memory``).
    """
    layout = InputLayout.for_model(model, 0, max_positions)
    x = layout.tokens(torch.as_tensor(x))
    was = model.training
    model.eval()
    try:
        return torch.cat([model(layout.masked(x[s:s + batch_size])).probs() for s in range(0, x.shape[0], batch_size)])
    finally:
        model.train(was)


class AttentionHeadTuner(Tuner):
    """Fit a :class:`SingleQueryAttentionHead` on an ideal model or a frozen masked LM (module docstring).

    Args:
        source: a :class:`~hmmlib.memory.MemoryHMM` (ideal model: datasets must carry exact
            ``conditionals``) or a masked-LM :class:`~hmmlib.Transformer` (frozen when wrapped).
        cfg: a :class:`~hmmlib.adapt.HeadConfig` with ``solver="adamw"`` (lr, steps, batch, seed; for a
            transformer, ``max_positions``: how many positions it reads, ``[MASK]`` included; the paper reads 79
            tokens of 128).
        num_heads, head_dim: the head's shape (default: ``V`` heads of dimension 1, the paper's).
    """

    def __init__(self, source: MemoryHMM | Transformer, cfg: HeadConfig, *, num_heads: int | None = None,
                 head_dim: int = 1):
        super().__init__(cfg, (HeadConfig,))
        if cfg.solver != "adamw":
            raise ValueError("the attention head is not a linear head on fixed features, so it has no converged "
                             "solve: train it with AdamW, HeadConfig.adamw(...) (solver='adamw').")
        if isinstance(source, MemoryHMM):
            self._frozen("model", None)
            V = source.num_symbols
            self.device, self.dtype = source.device, source.dtype
            self.num_frozen_parameters = sum(t.numel() for t in (source.memory_prior, source.pi, source.A, source.W))
        elif isinstance(source, Transformer):
            if source.cfg.causal:
                raise ValueError("the attention head reads a masked LM's outputs: it needs causal=False.")
            self._frozen("model", freeze(source))
            self.layout = InputLayout(source.cfg, 0, cfg.max_positions)
            V = source.cfg.num_symbols
            self.device, self.dtype = source.device, torch.float32
            self.num_frozen_parameters = sum(p.numel() for p in source.parameters())
        else:
            raise ValueError(f"source must be a MemoryHMM (ideal model) or a hmmlib.Transformer; got {type(source).__name__}.")
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(cfg.seed)
            self.head = SingleQueryAttentionHead(V, num_heads, head_dim).to(device=self.device, dtype=self.dtype)
        self._cache: dict[int, tuple[Any, torch.Tensor]] = {}

    def features(self, dataset) -> torch.Tensor:
        """What the head reads on ``dataset``: ``(B, T, V)`` exact conditionals or ``(B, n+1, V)`` model outputs."""
        if self.model is None:
            g = getattr(dataset, "conditionals", None)
            if not isinstance(g, torch.Tensor) or g.dim() != 3 or g.shape[2] != self.head.in_dim:
                raise ValueError("the ideal model needs a MemoryTaskDataset with exact conditionals (B, T, V); "
                                 "build it with with_conditionals=True.")
            return g.to(device=self.device, dtype=self.dtype)
        x = getattr(dataset, "x", None)
        if not isinstance(x, torch.Tensor) or x.dim() != 2:
            raise ValueError("expected a dataset with inputs x of shape (B, T).")
        hit = self._cache.get(id(dataset))
        if hit is not None and hit[0] is x:
            return hit[1]
        g = model_position_probs(self.model, x, self.cfg.eval_batch_size, self.layout.max_positions)
        self._cache[id(dataset)] = (x, g)
        return g

    def _prepare(self, dataset) -> dict[str, torch.Tensor]:
        return {"g": self.features(dataset), "y": dataset.y.to(self.device)}

    def _logits(self, data, idx):
        return self.head(data["g"][idx])
