r"""Export the book's causal :class:`~hmmlib.lm.transformer.Transformer` to Hugging Face
``GPT2LMHeadModel``, and hand a prefix to it as a key/value cache.

Both are pre-LayerNorm transformers with learned absolute positions, fused ``qkv`` attention
scaled by :math:`1/\sqrt{d_{head}}` and an exact-GELU MLP, so the export is a copy of weights:

* GPT-2's ``Conv1D`` stores ``(in, out)`` matrices: every ``nn.Linear`` weight is transposed;
* ``c_attn`` splits its output into queries, keys and values, each head-major: the same layout as
  the book's ``qkv``;
* GPT-2's output layer has no bias, the book's has ``out_bias`` ``b``. It is moved into the final
  LayerNorm's bias: with ``W`` the symbols' output rows (``V x d``), logits are
  ``W (g * z + beta) + b = W (g * z + beta')`` for ``beta' = beta + delta`` with ``W delta = b``,
  which has an exact solution when ``W`` has full row rank (``V <= d_model``, generic).
  Only the symbols' logits are compared; the rows of ``[MASK]`` and ``[BOS]`` are not symbols.

Nothing is downloaded: the model is built from a ``GPT2Config``.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .transformer import KV, Transformer

__all__ = ["gpt2_config", "to_gpt2", "prefix_to_cache", "symbol_logits"]


def gpt2_config(model: Transformer):
    """The ``transformers.GPT2Config`` with the book model's architecture (dropout off)."""
    from transformers import GPT2Config

    c = model.cfg
    return GPT2Config(
        vocab_size=c.vocab_size, n_positions=c.max_len, n_embd=c.d_model, n_layer=c.num_layers, n_head=c.num_heads,
        n_inner=c.mlp_width, activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        layer_norm_epsilon=1e-5, tie_word_embeddings=c.tie_embeddings, bos_token_id=c.bos_id, eos_token_id=c.bos_id,
        pad_token_id=c.mask_id,
    )


@torch.no_grad()
def to_gpt2(model: Transformer, *, tol: float = 1e-6):
    """A ``GPT2LMHeadModel`` (float32, eval mode) whose symbol logits equal ``model``'s.

    Raises:
        ValueError: if ``model`` is not causal, or its output bias cannot be moved into the final
            LayerNorm (the symbols' output rows are rank-deficient, e.g. ``num_symbols > d_model``).
    """
    from transformers import GPT2LMHeadModel

    c = model.cfg
    if not c.causal:
        raise ValueError("only a causal model (TransformerConfig(causal=True)) has a GPT-2 equivalent.")
    hf = GPT2LMHeadModel(gpt2_config(model)).float().eval()
    sd = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    t = hf.transformer
    t.wte.weight.copy_(sd["tok_emb.weight"])
    t.wpe.weight.copy_(sd["pos_emb.weight"])
    for i, blk in enumerate(t.h):
        p = f"blocks.{i}."
        for ln_hf, ln in ((blk.ln_1, "ln1"), (blk.ln_2, "ln2")):
            ln_hf.weight.copy_(sd[p + ln + ".weight"])
            ln_hf.bias.copy_(sd[p + ln + ".bias"])
        for conv, lin in ((blk.attn.c_attn, "attn.qkv"), (blk.attn.c_proj, "attn.proj"),
                          (blk.mlp.c_fc, "mlp.0"), (blk.mlp.c_proj, "mlp.2")):
            conv.weight.copy_(sd[p + lin + ".weight"].T)
            conv.bias.copy_(sd[p + lin + ".bias"])
    W = sd["tok_emb.weight"][: c.num_symbols] if c.tie_embeddings else sd["out.weight"]
    if not c.tie_embeddings:
        hf.lm_head.weight.zero_()
        hf.lm_head.weight[: c.num_symbols].copy_(W)
    b = sd["out_bias"].double()
    delta = torch.linalg.lstsq(W.double(), b[:, None], driver="gelsd").solution[:, 0]
    resid = float((W.double() @ delta - b).abs().max())
    if resid > tol * max(1.0, float(b.abs().max())):
        raise ValueError(f"the output bias cannot be moved into the final LayerNorm (residual {resid:.2e}): "
                         f"the {c.num_symbols} symbol rows of the output layer must be linearly independent "
                         f"(num_symbols <= d_model={c.d_model}).")
    t.ln_f.weight.copy_(sd["ln_f.weight"])
    t.ln_f.bias.copy_((sd["ln_f.bias"].double() + delta).float())
    return hf


def prefix_to_cache(prefix: Sequence[KV], batch_size: int):
    """A ``transformers.DynamicCache`` holding a per-layer prefix, expanded to ``batch_size`` rows.

    Pass it as ``cache=`` (``past_key_values=`` before transformers 5.40) with real tokens only:
    GPT-2 then starts their positions at the prefix length, the book's convention.
    """
    from transformers import DynamicCache

    if any(kv is None for kv in prefix):
        raise ValueError("a GPT-2 cache needs keys and values at every layer; this prefix skips some layers.")
    return DynamicCache(ddp_cache_data=[(k.expand(batch_size, -1, -1, -1).float(), v.expand(batch_size, -1, -1, -1).float())
                                        for k, v in prefix])


def symbol_logits(hf_logits: torch.Tensor, num_symbols: int) -> torch.Tensor:
    """The symbols' logits from a GPT-2 output ``(..., vocab_size)``: the book model's ``logits``."""
    return hf_logits[..., :num_symbols]
