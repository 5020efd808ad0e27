"""A compact transformer usable as a masked LM (bidirectional) or a causal LM.

Pre-LayerNorm blocks, learned absolute positions, fused multi-head attention through
``torch.nn.functional.scaled_dot_product_attention``, a GELU MLP, and an output layer over
the HMM's symbols (tied to their input embeddings by default).

Vocabulary: the HMM's symbols ``0 .. V-1``, then ``[MASK] = V`` and ``[BOS] = V + 1``.
The model predicts symbols only, so its output distribution is directly comparable with
the exact conditionals of :mod:`hmmlib.inference`.

Hooks used by the tuning chapters:

* ``prompt``: soft prompt vectors prepended to the input embeddings; they occupy
  positions ``0 .. P-1`` and the real tokens start at position ``P``;
* ``prefix``: per-layer keys and values prepended inside every attention layer, seen by
  every real position (in causal mode too); real tokens' positions start after the prefix;
* ``return_kv`` / ``positions``: the keys and values of every layer (to build a prefix from
  real tokens) and the outputs at chosen positions only.

Devices, one rule: token ids and ``positions`` (data) are moved to the model's device; a
``prompt``, ``prefix`` or ``inputs_embeds`` (computed or trained tensors) on another device is a
``ValueError``, never moved silently.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TransformerConfig", "Transformer", "ModelOutput", "KV"]

KV = tuple[torch.Tensor, torch.Tensor]  # (keys, values), each (B or 1, num_heads, P, d_head)


@dataclass(frozen=True)
class TransformerConfig:
    """Architecture as data (saved with every checkpoint).

    Attributes:
        num_symbols: the HMM's vocabulary size ``V``; the model's input vocabulary adds
            ``[MASK]`` and ``[BOS]``.
        d_model, num_layers, num_heads: width, depth and heads.
        d_mlp: hidden width of the MLP (default ``4 * d_model``).
        max_len: number of learned positions (prompt/prefix positions included).
        dropout: dropout in attention and residual branches (0 disables it).
        causal: ``True`` for a causal LM, ``False`` for a masked LM.
        tie_embeddings: output layer shares the symbols' input embeddings.
    """

    num_symbols: int
    d_model: int = 128
    num_layers: int = 4
    num_heads: int = 4
    d_mlp: int | None = None
    max_len: int = 256
    dropout: float = 0.0
    causal: bool = False
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        for name in ("num_symbols", "d_model", "num_layers", "num_heads", "max_len"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"TransformerConfig.{name} must be a positive integer; got {v!r}.")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by num_heads={self.num_heads}.")
        if self.d_mlp is not None and (not isinstance(self.d_mlp, int) or self.d_mlp < 1):
            raise ValueError(f"TransformerConfig.d_mlp must be a positive integer or None (= 4 * d_model); got {self.d_mlp!r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout}.")

    @property
    def mask_id(self) -> int:
        return self.num_symbols

    @property
    def bos_id(self) -> int:
        return self.num_symbols + 1

    @property
    def vocab_size(self) -> int:
        return self.num_symbols + 2

    @property
    def mlp_width(self) -> int:
        return self.d_mlp or 4 * self.d_model

    @property
    def d_head(self) -> int:
        return self.d_model // self.num_heads

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ModelOutput:
    """What :meth:`Transformer.forward` returns (real-token positions only; prompt positions are dropped).

    Attributes:
        logits: ``(B, T_out, V)`` logits over symbols, at every real position or at ``positions``.
        hidden: ``(B, T_out, d_model)`` final hidden states (after the last LayerNorm), same positions.
        kv: per layer, the ``(keys, values)`` of the real tokens, if ``return_kv`` was set.
    """

    logits: torch.Tensor
    hidden: torch.Tensor
    kv: list[KV] | None = None

    def probs(self) -> torch.Tensor:
        """Softmax of the logits in float32: the model's distribution over symbols."""
        return self.logits.float().softmax(-1)


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.num_heads, self.d_head, self.dropout = cfg.num_heads, cfg.d_head, cfg.dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor, causal: bool, prefix: KV | None, want_kv: bool, select=None):
        """``select(y)`` picks the output rows that are needed (applied before the output projection)."""
        B, T, D = x.shape
        # unbind on the (B, T, 3, H, d_head) view: its backward stacks the three gradients straight into the
        # projection's layout (a permute first would need one more copy of them)
        q, k, v = (t.transpose(1, 2) for t in self.qkv(x).view(B, T, 3, self.num_heads, self.d_head).unbind(2))
        own = (k, v) if want_kv else None
        mask, is_causal = None, causal
        if prefix is not None and prefix[0].shape[2] > 0:
            pk, pv = prefix
            P = pk.shape[2]
            k = torch.cat([pk.to(k.dtype).expand(B, -1, -1, -1), k], 2)
            v = torch.cat([pv.to(v.dtype).expand(B, -1, -1, -1), v], 2)
            if causal:  # every query sees the whole prefix, then its own past
                mask = torch.ones(T, P + T, dtype=torch.bool, device=x.device).tril(P)
                is_causal = False
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=is_causal)
        y = y.transpose(1, 2).reshape(B, T, D)
        return self.proj(y if select is None else select(y)), own


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.mlp_width), nn.GELU(), nn.Linear(cfg.mlp_width, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, causal: bool, prefix: KV | None, want_kv: bool, select=None):
        """With ``select``, only the selected rows are carried past the attention (the last
        block, when only some positions' outputs are needed)."""
        a, kv = self.attn(self.ln1(x), causal, prefix, want_kv, select)
        x = (x if select is None else select(x)) + self.drop(a)
        x = x + self.drop(self.mlp(self.ln2(x)))
        return x, kv


class Transformer(nn.Module):
    """The book's language model; see the module docstring for the hooks."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.out = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.num_symbols, bias=False)
        self.out_bias = nn.Parameter(torch.zeros(cfg.num_symbols))
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token embeddings (no positions) of ids in ``[0, vocab_size)``: ``(B, T, d_model)``."""
        return self.tok_emb(tokens)

    @property
    def device(self) -> torch.device:
        return self.tok_emb.weight.device

    def _check_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Validate token ids and move them to the model's device (ids are data, so they move; see :meth:`forward`)."""
        if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
            shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ValueError(f"tokens must be a tensor of shape (batch, seq_len); got {shape}.")
        if tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"tokens must be int64 (or int32) ids; got dtype {tokens.dtype}: convert with tokens.long().")
        if tokens.numel():
            lo, hi = (int(v) for v in torch.aminmax(tokens))  # one pass (and one sync), not two
            if lo < 0 or hi >= self.cfg.vocab_size:
                raise ValueError(
                    f"token ids must be in [0, {self.cfg.vocab_size}) (symbols, [MASK]={self.cfg.mask_id}, "
                    f"[BOS]={self.cfg.bos_id}); got range [{lo}, {hi}]."
                )
        return tokens.to(self.device)

    def _check_device(self, name: str, t: torch.Tensor) -> None:
        if t.device != self.device:
            raise ValueError(f"{name} is on {t.device} but the model is on {self.device}: a {name} is trained "
                             f"or computed, so it is not moved silently; create it there or call .to({str(self.device)!r}).")

    def output_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over symbols from final hidden states."""
        w = self.tok_emb.weight[: self.cfg.num_symbols] if self.out is None else self.out.weight
        return F.linear(hidden, w, self.out_bias)

    @staticmethod
    def _selector(positions: torch.Tensor | None, B: int, n_real: int, offset: int):
        """A function picking the requested real positions from a (B, offset + n_real, ...) tensor."""
        if positions is None:
            return (lambda y: y[:, offset:]) if offset else None
        if positions.dtype == torch.bool:
            if positions.shape != (B, n_real):
                raise ValueError(f"a boolean positions mask must have shape (B, T) = {(B, n_real)}; got {tuple(positions.shape)}.")
            # the row indices once (a boolean index runs nonzero() at every use): row-major order, as y[:, offset:][positions]
            rows = positions.reshape(-1).nonzero().squeeze(1)
            return lambda y: y[:, offset:].reshape(-1, y.shape[-1]).index_select(0, rows)
        if positions.dim() != 2 or positions.shape[0] != B or (positions.numel() and (
                int(positions.min()) < 0 or int(positions.max()) >= n_real)):
            raise ValueError(f"positions must be (B={B}, n) indices in [0, {n_real}); got shape {tuple(positions.shape)}.")
        idx = positions + offset
        return lambda y: y.gather(1, idx.unsqueeze(-1).expand(-1, -1, y.shape[-1]))

    def forward(
        self,
        tokens: torch.Tensor | None = None,
        *,
        inputs_embeds: torch.Tensor | None = None,
        prompt: torch.Tensor | None = None,
        prefix: Sequence[KV] | None = None,
        positions: torch.Tensor | None = None,
        return_kv: bool = False,
    ) -> ModelOutput:
        """Run the model.

        Args:
            tokens: ``(B, T)`` ids, or give ``inputs_embeds`` ``(B, T, d_model)`` instead.
            prompt: ``(P, d_model)`` or ``(B, P, d_model)`` soft prompt, prepended to the input.
            prefix: one ``(keys, values)`` pair per layer, each ``(1 or B, num_heads, P, d_head)``, or
                ``None`` for a layer without a prefix (a prefix on a subset of layers); the real tokens'
                positions start at ``P`` either way.
            positions: where to return outputs (default: every real position): ``(B, n)``
                indices, giving ``(B, n, ...)`` outputs, or a ``(B, T)`` boolean mask, giving
                ``(N, ...)`` outputs for the ``N`` selected positions in row-major order.
            return_kv: also return each layer's keys and values of the real tokens.
        """
        cfg = self.cfg
        if (tokens is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of tokens or inputs_embeds.")
        if tokens is not None:
            x = self.embed(self._check_tokens(tokens))
        else:
            x = inputs_embeds
            self._check_device("inputs_embeds", x)
            if x.dim() != 3 or x.shape[-1] != cfg.d_model:
                raise ValueError(f"inputs_embeds must be (batch, seq_len, d_model={cfg.d_model}); got {tuple(x.shape)}.")
        B, T, _ = x.shape
        P_prompt = 0
        if prompt is not None:
            self._check_device("prompt", prompt)
            if prompt.dim() == 2:
                prompt = prompt.unsqueeze(0)
            if prompt.dim() != 3 or prompt.shape[-1] != cfg.d_model or prompt.shape[0] not in (1, B):
                raise ValueError(
                    f"prompt must be (P, d_model) or (B, P, d_model) with B={B} (or 1) and d_model={cfg.d_model}; "
                    f"got {tuple(prompt.shape)}."
                )
            P_prompt = prompt.shape[1]
            x = torch.cat([prompt.to(x.dtype).expand(B, -1, -1), x], 1)
        P_prefix = 0
        if prefix is not None:
            if len(prefix) != cfg.num_layers:
                raise ValueError(f"prefix needs one (keys, values) pair per layer ({cfg.num_layers}); got {len(prefix)}.")
            given = [kv for kv in prefix if kv is not None]
            if not given:
                raise ValueError("prefix has no (keys, values) pair: give at least one layer's, or pass prefix=None.")
            for k, v in given:
                self._check_device("prefix", k)
                self._check_device("prefix", v)
            P_prefix = given[0][0].shape[2]
            want = (cfg.num_heads, P_prefix, cfg.d_head)
            for i, kv in enumerate(prefix):
                if kv is None:
                    continue
                k, v = kv
                if k.dim() != 4 or tuple(k.shape[1:]) != want or k.shape != v.shape or k.shape[0] not in (1, B):
                    raise ValueError(
                        f"prefix layer {i}: keys and values must be (1 or B={B}, {want[0]}, P={P_prefix}, {want[2]}) "
                    "with one P for every layer; "
                        f"got {tuple(k.shape)}, {tuple(v.shape)}."
                    )
        start = P_prefix
        total = start + x.shape[1]
        if total > cfg.max_len:
            raise ValueError(f"prefix + prompt + tokens = {total} positions exceed max_len={cfg.max_len}.")
        x = self.drop(x + self.pos_emb.weight[start:total])
        if positions is not None:
            positions = positions.to(self.device)
        select = self._selector(positions, B, x.shape[1] - P_prompt, P_prompt)
        kvs: list[KV] = []
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x, kv = block(x, cfg.causal, None if prefix is None else prefix[i], return_kv, select if i == last else None)
            if return_kv:
                kvs.append((kv[0][:, :, P_prompt:], kv[1][:, :, P_prompt:]))
        h = self.ln_f(x)
        return ModelOutput(self.output_logits(h), h, kvs if return_kv else None)
