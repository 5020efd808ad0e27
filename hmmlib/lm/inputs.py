r"""What a frozen masked LM reads downstream: the one owner of the ``[MASK]``, the prompt or prefix
positions and the input length.

A downstream example is :math:`x_1..x_T`; the model reads

.. math:: \underbrace{z_1..z_P}_{\text{prompt or prefix}}\ [\mathrm{MASK}]\ x_1 .. x_n,
          \qquad n = \min(T,\ \text{positions} - 1 - P),

where ``positions`` is how many learned positions the model may use (its ``max_len``, or fewer:
the positions it was pretrained on, the paper's 80). The feature is the model's output at the
``[MASK]``. A prompt occupies positions :math:`0..P-1` of the input; a prefix occupies them inside
every attention layer; either way the ``[MASK]`` sits at position :math:`P` and the tokens after it.
Every tuner, the attention head and :func:`hmmlib.lm.model_masked_conditional` build their inputs here.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import _validate as check
from .transformer import Transformer, TransformerConfig

__all__ = ["InputLayout"]


@dataclass(frozen=True)
class InputLayout:
    """How many tokens a masked LM reads after ``num_virtual`` prompt/prefix positions and the ``[MASK]``.

    Attributes:
        model_cfg: the frozen model's config.
        num_virtual: prompt vectors or prefix positions before the ``[MASK]`` (0 for a head).
        max_positions: positions the model may use (default: all ``model_cfg.max_len``; more than
            ``max_len`` raises ``ValueError``).
    """

    model_cfg: TransformerConfig
    num_virtual: int = 0
    max_positions: int | None = None

    def __post_init__(self) -> None:
        if self.model_cfg.causal:
            raise ValueError("downstream inputs end in a [MASK] read by a masked LM; this model is causal (causal=True).")
        check.non_negative_int("num_virtual", self.num_virtual)
        check.positive_int("max_positions", self.max_positions, allow_none=True)
        if self.max_positions is not None and self.max_positions > self.model_cfg.max_len:
            raise ValueError(f"max_positions={self.max_positions} is more than the model's {self.model_cfg.max_len} "
                             f"learned positions (max_len); use max_positions <= {self.model_cfg.max_len}, or None "
                             "for all of them.")
        if self.max_tokens < 1:
            raise ValueError(f"{self.num_virtual} prompt/prefix positions and the [MASK] leave no room for tokens in "
                             f"{self.positions} positions; use a shorter prompt/prefix or more positions.")

    @classmethod
    def for_model(cls, model: Transformer, num_virtual: int = 0, max_positions: int | None = None) -> "InputLayout":
        if not isinstance(model, Transformer):
            raise ValueError(f"expected a hmmlib.Transformer; got {type(model).__name__}.")
        return cls(model.cfg, num_virtual, max_positions)

    @property
    def positions(self) -> int:
        """Positions used: ``max_positions`` (at most ``max_len``, checked when built), or ``max_len``."""
        return self.max_positions or self.model_cfg.max_len

    @property
    def max_tokens(self) -> int:
        """Input tokens read at most: ``positions - 1 - num_virtual``."""
        return self.positions - 1 - self.num_virtual

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, T)`` validated (symbols only) and cut to its first :attr:`max_tokens` tokens."""
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] == 0 or x.is_floating_point():
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"inputs must be integer token ids of shape (N, T) with T >= 1; got {shape}.")
        V = self.model_cfg.num_symbols
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= V):
            raise ValueError(f"input symbols must be in [0, {V}) (the model's num_symbols); "
                             f"got range [{int(x.min())}, {int(x.max())}].")
        return x[:, :self.max_tokens]

    def masked(self, x: torch.Tensor) -> torch.Tensor:
        """``[MASK] x_1 .. x_n`` ``(B, n + 1)`` (the prompt or prefix is passed to the model separately)."""
        x = self.tokens(x)
        return torch.cat([torch.full_like(x[:, :1], self.model_cfg.mask_id), x], 1)

    def mask_position(self, batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
        """``positions=`` argument selecting the ``[MASK]`` of each row: zeros ``(B, 1)`` (real-token index 0)."""
        return torch.zeros(batch_size, 1, dtype=torch.long, device=device)
