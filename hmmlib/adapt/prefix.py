"""Prompts and prefixes for a frozen :class:`~hmmlib.lm.Transformer`: built from real tokens, and the
prefix encoder with Li & Liang's MLP reparametrisation."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..lm.transformer import KV, Transformer, TransformerConfig

__all__ = ["token_ids", "soft_prompt_from_tokens", "prefix_from_tokens", "PrefixEncoder"]


def token_ids(tokens: Any, model: Transformer) -> torch.Tensor:
    t = torch.as_tensor(tokens, dtype=torch.long, device=model.tok_emb.weight.device).reshape(-1)
    if t.numel() == 0 or int(t.min()) < 0 or int(t.max()) >= model.cfg.num_symbols:
        raise ValueError(f"token ids must be symbols in [0, {model.cfg.num_symbols}); got {t.tolist()}.")
    return t


@torch.no_grad()
def soft_prompt_from_tokens(model: Transformer, tokens: Any) -> torch.Tensor:
    """The input embeddings ``(k, d_model)`` of symbols ``tokens``: as a ``prompt=`` they reproduce
    typing those symbols before the input (positions included)."""
    return model.embed(token_ids(tokens, model)).detach().clone()


@torch.no_grad()
def prefix_from_tokens(model: Transformer, tokens: Any) -> list[KV]:
    """Every layer's ``(keys, values)`` ``(1, H, P, d_head)`` of the symbols ``tokens`` run alone.

    In a causal model (or a one-layer one) this prefix reproduces typing the tokens exactly. In a
    bidirectional masked LM the typed tokens' keys/values from layer 2 on also depend on the input
    they precede, which a fixed prefix cannot; layer 1's are the same.
    """
    was = model.training
    model.eval()
    try:
        kv = model(token_ids(tokens, model)[None], return_kv=True).kv
    finally:
        model.train(was)
    return [(k.clone(), v.clone()) for k, v in kv]


class PrefixEncoder(nn.Module):
    """Per-layer prefix keys/values, reparametrised by an MLP during training (Li & Liang 2021).

    With ``mlp_hidden``: ``P' = embedding (P, d)``, ``flat = Linear(h, 2Ld)(tanh(Linear(d, h)(P')))``;
    without it, ``flat`` ``(P, 2Ld)`` is one parameter. ``flat[i]`` holds, per layer ``l``, the keys
    then the values of position ``i`` (head-major), the layout of PEFT's ``past_key_values``.
    :meth:`freeze` computes ``flat`` once, deletes the MLP and keeps ``flat`` as a buffer.

    ``init_kv`` (e.g. :func:`prefix_from_tokens`) sets the initial prefix: copied directly, or, with
    the MLP, its last layer is solved by least squares so that the MLP outputs it (exact when
    ``prefix_len <= mlp_hidden``; the official code regresses the MLP by 500 Adam steps instead).
    """

    def __init__(self, cfg: TransformerConfig, prefix_len: int, mlp_hidden: int | None = None,
                 init_kv: list[KV] | None = None, init_std: float = 0.02):
        super().__init__()
        self.cfg, self.prefix_len = cfg, prefix_len
        L, d = cfg.num_layers, cfg.d_model
        target = None if init_kv is None else self.flatten(init_kv).float()
        if target is not None and target.shape != (prefix_len, 2 * L * d):
            raise ValueError(f"init_kv has {target.shape[0]} positions; the prefix has {prefix_len}.")
        if mlp_hidden is None:
            self.prefix = nn.Parameter(target.clone() if target is not None else torch.randn(prefix_len, 2 * L * d) * init_std)
            self.mlp = None
        else:
            self.embedding = nn.Parameter(torch.randn(prefix_len, d))  # nn.Embedding's N(0, 1)
            self.mlp = nn.Sequential(nn.Linear(d, mlp_hidden), nn.Tanh(), nn.Linear(mlp_hidden, 2 * L * d))
            if target is not None:
                with torch.no_grad():
                    hid = self.mlp[1](self.mlp[0](self.embedding)).double()
                    w = torch.linalg.lstsq(hid.cpu(), target.double().cpu(), driver="gelsd").solution
                    self.mlp[2].weight.copy_(w.T)
                    self.mlp[2].bias.zero_()

    def flatten(self, kv: list[KV]) -> torch.Tensor:
        """``(P, 2Ld)`` from per-layer ``(1, H, P, d_head)`` keys and values (first batch row)."""
        if len(kv) != self.cfg.num_layers:
            raise ValueError(f"need one (keys, values) pair per layer ({self.cfg.num_layers}); got {len(kv)}.")
        parts = [t[0].permute(1, 0, 2).reshape(t.shape[2], -1) for k, v in kv for t in (k, v)]
        return torch.cat(parts, 1)

    def flat(self) -> torch.Tensor:
        if self.mlp is None:
            return self.prefix
        return self.mlp(self.embedding)

    def forward(self) -> list[KV]:
        c = self.cfg
        f = self.flat().view(self.prefix_len, 2 * c.num_layers, c.num_heads, c.d_head).permute(1, 2, 0, 3)
        return [(f[2 * i][None], f[2 * i + 1][None]) for i in range(c.num_layers)]

    @torch.no_grad()
    def freeze(self) -> None:
        """Replace the reparametrisation by its output, stored as a plain buffer (no gradients)."""
        flat = self.flat().detach().clone()
        for name in ("prefix", "embedding", "mlp"):
            if hasattr(self, name):
                delattr(self, name)
        self.mlp = None
        self.register_buffer("prefix", flat)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a saved frozen prefix is the MLP's output: drop the MLP so this encoder can receive it
        if prefix + "prefix" in state_dict and self.mlp is not None:
            self.freeze()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def frozen(self) -> bool:
        return "prefix" in self._buffers

    @property
    def num_stored(self) -> int:
        return self.prefix_len * 2 * self.cfg.num_layers * self.cfg.d_model
