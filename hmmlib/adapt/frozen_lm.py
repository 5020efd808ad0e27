r"""Head, prompt, prefix and fine-tuning of a frozen masked-LM :class:`~hmmlib.lm.Transformer`
(Wei, Xie & Ma 2021, Figure 1 and Section 3.1, and the authors' ``src/run_finetune.py``; Li & Liang 2021, Section 4).

The model reads ``[prompt/prefix] [MASK] x_1 .. x_n`` (:class:`hmmlib.lm.inputs.InputLayout`) and the feature
is its softmax over symbols at the ``[MASK]``; a head ``nn.Linear(V, 2)`` maps it to class logits.

* :class:`HeadConfig`: the head alone (features computed once per dataset, without gradients);
* :class:`PromptTuningConfig`: ``prompt_len`` free input vectors, trained with the head;
* :class:`PrefixTuningConfig`: per-layer keys/values from the MLP reparametrisation (:class:`PrefixEncoder`),
  dropped after training;
* :class:`FineTuningConfig`: a deep copy of the model plus the head (a reference).

The wrapped model is frozen once, when wrapped (``requires_grad=False``, eval mode), as PEFT does, and is
not registered: the tuner's ``state_dict()`` holds only what was tuned.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

from ..lm.inputs import InputLayout
from ..lm.transformer import Transformer
from ._restarts import run_seed
from .base import Tuner
from .configs import FineTuningConfig, HeadConfig, PrefixTuningConfig, PromptTuningConfig
from .prefix import PrefixEncoder, prefix_from_tokens, soft_prompt_from_tokens, token_ids

__all__ = ["TransformerTuner", "freeze"]

_CONFIGS = (HeadConfig, PromptTuningConfig, PrefixTuningConfig, FineTuningConfig)


def freeze(model: nn.Module) -> nn.Module:
    """Turn off every parameter's gradient and switch to eval mode (dropout off); returns ``model``."""
    return model.requires_grad_(False).eval()


class TransformerTuner(Tuner):
    """One of the four methods on a frozen masked LM, chosen by the config's class (module docstring)."""

    def __init__(self, model: Transformer, cfg: HeadConfig | PromptTuningConfig | PrefixTuningConfig | FineTuningConfig):
        super().__init__(cfg, _CONFIGS)
        if not isinstance(model, Transformer):
            raise ValueError(f"expected a hmmlib.Transformer; got {type(model).__name__}.")
        if model.cfg.causal:
            raise ValueError("downstream tuning reads the output at a [MASK]: it needs a masked LM (causal=False).")
        self._frozen("model", freeze(model))
        mc = model.cfg
        self.device = model.device
        self.num_frozen_parameters = 0 if isinstance(cfg, FineTuningConfig) else sum(p.numel() for p in model.parameters())
        virtual = getattr(cfg, "prompt_len", 0) + getattr(cfg, "prefix_len", 0)
        self.layout = InputLayout(mc, virtual, cfg.max_positions)
        self._init_trainable(run_seed(cfg))

    def _init_trainable(self, seed: int) -> None:
        """The head (``nn.Linear``'s init) and the method's trainable part, drawn with ``seed``."""
        cfg, model = self.cfg, self.model
        mc = model.cfg
        self.init_token_ids = self._init_tokens(model, seed)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            self.head = self._new_head(mc.num_symbols, self.device)   # registered first: the optimizer's order
            self.prompt: nn.Parameter | None = None
            self.prefix: PrefixEncoder | None = None
            if isinstance(cfg, FineTuningConfig):
                self.net = copy.deepcopy(model).requires_grad_(True)
            elif isinstance(cfg, PromptTuningConfig):
                init = (soft_prompt_from_tokens(model, self.init_token_ids) if self.init_token_ids is not None
                        else torch.randn(cfg.prompt_len, mc.d_model) * cfg.init_std)
                self.prompt = nn.Parameter(init.float().to(self.device))
            elif isinstance(cfg, PrefixTuningConfig):
                kv = None if self.init_token_ids is None else prefix_from_tokens(model, self.init_token_ids)
                self.prefix = PrefixEncoder(mc, cfg.prefix_len, cfg.mlp_hidden, kv, cfg.init_std).to(self.device)

    def _init_tokens(self, model: Transformer, seed: int) -> torch.Tensor | None:
        cfg = self.cfg
        if getattr(cfg, "init", "random") != "tokens":
            return None
        if cfg.init_tokens is not None:
            return token_ids(cfg.init_tokens, model)
        n = cfg.prompt_len if isinstance(cfg, PromptTuningConfig) else cfg.prefix_len
        g = torch.Generator().manual_seed(seed)
        return torch.randint(model.cfg.num_symbols, (n,), generator=g).to(self.device)

    @property
    def net(self) -> Transformer:
        """The network that runs: the fine-tuned copy, or the frozen model."""
        return self._modules.get("net") or self.model

    @net.setter
    def net(self, module: Transformer) -> None:
        self._modules["net"] = module

    @property
    def num_stored_parameters(self) -> int:
        """Numbers kept after training: for a prefix, its ``prefix_len x 2 L d`` keys/values (the MLP is dropped)
        plus the head; otherwise the size of ``state_dict()``."""
        if self.prefix is not None:
            return self.prefix.num_stored + sum(p.numel() for p in self.head.parameters())
        return super().num_stored_parameters

    def freeze_prefix(self) -> None:
        """Drop the prefix MLP, keeping its output as a plain buffer (outputs do not change)."""
        if self.prefix is None:
            raise ValueError("freeze_prefix needs a PrefixTuningConfig.")
        self.prefix.freeze()

    def mask_probs(self, x: torch.Tensor) -> torch.Tensor:
        """The (prompted / prefixed / fine-tuned) model's softmax over symbols at the ``[MASK]`` before ``x``
        ``(B, T)`` (cut to :attr:`layout`'s length): ``(B, V)`` float32, differentiable in the trainable parts."""
        kw: dict[str, Any] = {}
        if self.prompt is not None:
            kw["prompt"] = self.prompt
        if self.prefix is not None:
            kw["prefix"] = self.prefix()
        inputs = self.layout.masked(x.to(self.device))
        return self.net(inputs, positions=self.layout.mask_position(x.shape[0], self.device), **kw).probs()[:, 0]

    def _inputs(self, dataset) -> torch.Tensor:
        x = getattr(dataset, "x", None)
        if not isinstance(x, torch.Tensor):
            raise ValueError("expected a TaskDataset with inputs x of shape (N, T).")
        return self.layout.tokens(x).to(self.device)

    @torch.no_grad()
    def features(self, dataset) -> torch.Tensor:
        """What the head sees on ``dataset``: :meth:`mask_probs` ``(N, V)``, without gradients."""
        x, bs = self._inputs(dataset), self.cfg.eval_batch_size
        return torch.cat([self.mask_probs(x[s:s + bs]) for s in range(0, x.shape[0], bs)])

    def _prepare(self, dataset) -> dict[str, torch.Tensor]:
        y = dataset.y.to(self.device)
        if isinstance(self.cfg, HeadConfig):  # the model is frozen: its features once, without gradients
            return {"f": self.features(dataset), "y": y}
        return {"x": self._inputs(dataset), "y": y}

    def _logits(self, data, idx):
        f = data["f"][idx] if "f" in data else self.mask_probs(data["x"][idx])
        return self.head(f)

    @contextmanager
    def _train_mode(self) -> Iterator[None]:
        if self.prefix is not None and self.prefix.frozen:
            raise ValueError("the prefix MLP was dropped (freeze_prefix); build a new tuner to train again.")
        if isinstance(self.cfg, FineTuningConfig):
            self.net.train()
        try:
            yield
        finally:
            self.net.eval()

    def _after_fit(self) -> None:
        if self.prefix is not None and self.cfg.freeze_mlp:
            self.freeze_prefix()
