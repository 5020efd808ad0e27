"""The optimizer and learning-rate schedule shared by pretraining and every tuning method.

AdamW with decoupled weight decay, and a schedule of ``warmup_steps`` linear warmup steps
followed by linear decay to 0 at ``total_steps`` (or a constant rate): the schedule of BERT,
of the paper's finetuning script and of Li & Liang's prefix-tuning.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

__all__ = ["adamw", "warmup_decay", "lr_scheduler"]


def adamw(params: Iterable[Any], lr: float, weight_decay: float, *, fused: bool = False) -> torch.optim.AdamW:
    """AdamW over ``params`` (tensors or parameter groups). With ``fused``, the fused kernel where this
    torch build has one for the device (one kernel for all parameters instead of several per tensor)."""
    params = list(params)
    if fused:
        try:
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
        except (RuntimeError, TypeError, ValueError):
            pass
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def warmup_decay(total_steps: int, warmup_steps: int, schedule: str = "linear") -> Callable[[int], float]:
    r"""The learning-rate factor at step :math:`s` (0-based):

    .. math:: f(s) = \frac{s + 1}{w} \ (s < w),\qquad f(s) = \max\Big(0, \frac{N - s}{\max(1, N - w)}\Big)\ (s \ge w)

    with :math:`w` = ``warmup_steps`` and :math:`N` = ``total_steps``; ``schedule="constant"`` keeps
    :math:`f = 1` after the warmup."""
    if schedule not in ("linear", "constant"):
        raise ValueError(f"schedule must be 'linear' or 'constant'; got {schedule!r}.")

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return f


def lr_scheduler(opt: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                 schedule: str = "linear") -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying :func:`warmup_decay` to every parameter group of ``opt``."""
    return torch.optim.lr_scheduler.LambdaLR(opt, warmup_decay(total_steps, warmup_steps, schedule))
