r"""What a prefix can express that an embedding-only prompt cannot (chapter 7's proposition).

In a causal transformer, a prompt's positions attend only to earlier prompt positions, so their keys
and values at every layer are a fixed function :math:`\Phi(P_e)` of the prompt alone. Hence

* a prompt :math:`P_e` acts exactly as the prefix :math:`\Phi(P_e)` (:func:`prompt_to_prefix`); and
* at layer 1 the prompt's keys and values are :math:`(W_K u + b_K,\ W_V u + b_V)` with
  :math:`u = \mathrm{LN}_1(e + p)`: a pair confined to a ``d``-dimensional affine subspace of
  :math:`\mathbb{R}^{2d}`, while a prefix sets keys and values independently.
  :func:`layer1_residual` measures how far a prefix's layer-1 pairs are from that subspace.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..lm.transformer import KV, Transformer

__all__ = ["prompt_to_prefix", "layer1_residual"]


@torch.no_grad()
def prompt_to_prefix(model: Transformer, prompt: torch.Tensor) -> list[KV]:
    r""":math:`\Phi(P_e)`: every layer's keys and values ``(1, H, n, d_head)`` of the prompt ``(n, d_model)``
    run alone at positions ``0 .. n-1``."""
    if prompt.dim() != 2 or prompt.shape[1] != model.cfg.d_model:
        raise ValueError(f"prompt must be (n, d_model={model.cfg.d_model}); got {tuple(prompt.shape)}.")
    was = model.training
    model.eval()
    try:
        kv = model(inputs_embeds=prompt[None].to(model.tok_emb.weight.dtype), return_kv=True).kv
    finally:
        model.train(was)
    return [(k.clone(), v.clone()) for k, v in kv]


@torch.no_grad()
def layer1_residual(model: Transformer, prefix: Sequence[KV]) -> torch.Tensor:
    r"""Per prefix position, the relative distance of layer 1's ``(k, v)`` from
    :math:`\{(W_K u + b_K, W_V u + b_V) : u \in \mathbb{R}^d\}`:
    :math:`\min_u \|[W_K; W_V] u - (k - b_K; v - b_V)\| / \|(k - b_K; v - b_V)\|`, shape ``(n,)``.
    Zero for any prompt's prefix; a free prefix is generically at a positive distance."""
    attn = model.blocks[0].attn
    d = model.cfg.d_model
    Wqkv, bqkv = attn.qkv.weight.double(), attn.qkv.bias.double()
    M = Wqkv[d:]  # (2d, d): keys then values
    b = bqkv[d:]
    k, v = prefix[0]
    n = k.shape[2]
    flat = lambda t: t[0].permute(1, 0, 2).reshape(n, d).double()  # noqa: E731  (n, d), head-major
    target = torch.cat([flat(k), flat(v)], 1) - b  # (n, 2d)
    u = torch.linalg.lstsq(M, target.T).solution
    return (M @ u - target.T).norm(dim=0) / target.norm(dim=1)
