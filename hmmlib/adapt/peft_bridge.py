"""The same conditional-generation task through Hugging Face PEFT, on the book model exported to
``GPT2LMHeadModel`` (:func:`hmmlib.lm.hf_bridge.to_gpt2`): what the standard library does, beside what
:mod:`hmmlib.adapt.causal_tuning` writes by hand.

The loss and the scores use the symbols' logits only (the book model's output distribution); the
layout is the book's ``[BOS] x [SEP] y`` (:func:`hmmlib.adapt.generation.lm_inputs`).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..lm.hf_bridge import symbol_logits, to_gpt2
from ..lm.optim import adamw, lr_scheduler
from ..lm.transformer import Transformer
from .causal_tuning import TrainSettings
from .generation import GenerationData, lm_inputs, score

__all__ = ["peft_model", "peft_logits", "peft_fit", "peft_evaluate"]


def peft_model(model: Transformer, method: str, num_virtual_tokens: int, *, prefix_projection: bool = True,
               encoder_hidden_size: int = 64, seed: int = 0):
    """``get_peft_model`` on the exported model with ``PrefixTuningConfig`` (``method="prefix"``) or
    ``PromptTuningConfig`` (``"prompt"``, random init)."""
    from peft import PrefixTuningConfig, PromptTuningConfig, get_peft_model

    if method == "prefix":
        cfg = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=num_virtual_tokens,
                                 prefix_projection=prefix_projection, encoder_hidden_size=encoder_hidden_size)
    elif method == "prompt":
        cfg = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=num_virtual_tokens)
    else:
        raise ValueError(f"method must be 'prefix' or 'prompt'; got {method!r}.")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(to_gpt2(model), cfg)


def _logits(pm, cfg, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    ids = lm_inputs(cfg, x, y)
    out = pm(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    out = out[:, out.shape[1] - ids.shape[1]:]  # prompt tuning returns the virtual positions too
    Tx, Ty = x.shape[1], y.shape[1]
    return symbol_logits(out[:, Tx + 1:Tx + 1 + Ty], cfg.num_symbols)


def peft_fit(pm, model: Transformer, train: GenerationData, settings: TrainSettings) -> list[float]:
    """Train the PEFT model's trainable parameters on the NLL of ``y``; returns the loss per step."""
    params = [p for p in pm.parameters() if p.requires_grad]
    opt = adamw(params, settings.lr, settings.weight_decay)
    sched = lr_scheduler(opt, settings.num_steps, settings.warmup_steps)
    g = torch.Generator().manual_seed(settings.seed)
    losses = []
    pm.train()
    for _ in range(settings.num_steps):
        idx = torch.randint(0, len(train), (min(settings.batch_size, len(train)),), generator=g)
        x, y = train.x[idx], train.y[idx]
        loss = F.cross_entropy(_logits(pm, model.cfg, x, y).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        opt.step()
        sched.step()
        losses.append(loss.item())
    pm.eval()
    return losses


@torch.no_grad()
def peft_logits(pm, model: Transformer, data: GenerationData, batch_size: int = 512) -> torch.Tensor:
    pm.eval()
    return torch.cat([_logits(pm, model.cfg, data.x[i:i + batch_size], data.y[i:i + batch_size]).float()
                      for i in range(0, len(data), batch_size)])


def peft_evaluate(pm, model: Transformer, data: GenerationData) -> dict[str, Any]:
    """Excess NLL and KL to the exact conditional (:func:`hmmlib.adapt.generation.score`)."""
    return score(peft_logits(pm, model, data), data, per_example=True)
