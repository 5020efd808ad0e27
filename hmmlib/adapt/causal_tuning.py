r"""Tuning a frozen *causal* LM for conditional generation (Li & Liang 2021), one interface for
every method.

One config class per method, in the style of PEFT (:class:`CausalPrefixConfig`, :class:`CausalPromptConfig`,
:class:`CausalInfixConfig`, :class:`CausalFinetuneConfig`); :func:`make_causal_tuner` turns one into a tuner,
a ``torch.nn.Module`` whose trainable parts are exactly its parameters with ``requires_grad``
(the frozen base model is held outside the module, so ``tuner.state_dict()`` is the tuned part).
Every tuner maps ``(x, y)`` to the logits of ``y_t`` given ``[BOS] x [SEP] y_{<t}`` (layout in
:mod:`hmmlib.adapt.generation`):

* **prefix** ``[PREFIX; BOS x SEP y]``: per-layer keys and values of ``prefix_len`` positions,
  through Li & Liang's MLP (``mlp_hidden``) or directly (``mlp_hidden=None``), on every layer or on
  a subset (``layers``); :meth:`PrefixTuner.finish` drops the MLP, keeping ``prefix_len x 2 L d`` numbers;
* **prompt** (embedding-only) ``[P_e; BOS x SEP y]``: ``prompt_len`` input vectors;
* **infix** ``[BOS x INFIX SEP y]``: per-layer keys and values inserted at ``position``, so they
  reach the output but not the encoding of ``x`` before them;
* **finetune**: a trained copy of the whole model (the reference).

Position convention (Hugging Face / PEFT): ``n`` prefix or prompt positions occupy positions
``0 .. n-1``, and the real tokens start at ``n``, exactly as if ``n`` tokens had been typed first.
Initialisations: ``"random"`` (normal), ``"uniform"`` (U(0, 1) for a prefix, as the paper's A.5;
U(-0.5, 0.5) for a prompt, as Lester et al.), ``"zeros"``, ``"tokens"`` (a prefix: the model's own
keys and values of a symbol string; a prompt: their embeddings) and, for a prompt, ``"vocab"``
(embeddings of symbols drawn at random).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Any, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .. import _validate as check
from ..lm.optim import adamw, lr_scheduler
from ..lm.transformer import KV, Transformer
from .generation import GenerationData, lm_inputs, output_positions, score
from .prefix import PrefixEncoder, prefix_from_tokens, soft_prompt_from_tokens

__all__ = ["CausalPrefixConfig", "CausalPromptConfig", "CausalInfixConfig", "CausalFinetuneConfig", "TrainSettings", "CausalTuner",
           "PrefixTuner", "PromptTuner", "InfixTuner", "FinetuneTuner", "make_causal_tuner", "fit", "evaluate", "logits_on",
           "batch_prefixes"]


def _check_tokens_field(name: str, init: str, tokens: Any, length: int, allowed: tuple[str, ...]) -> tuple | None:
    check.one_of(f"{name}.init", init, allowed)
    if init != "tokens":
        if tokens is not None:
            raise ValueError(f"{name}.init_tokens is only used with init='tokens'; got init={init!r}.")
        return None
    if tokens is None:
        raise ValueError(f"{name}: init='tokens' needs init_tokens, a string of symbol ids (e.g. (0, 3, 1)).")
    toks = tuple(tokens)
    if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in toks):
        raise ValueError(f"{name}.init_tokens must be non-negative symbol ids; got {toks!r}.")
    if len(toks) != length:
        raise ValueError(f"{name}.init_tokens has {len(toks)} symbols but the length is {length}: "
                         "one symbol per position (make them equal).")
    return toks


@dataclass(frozen=True)
class CausalPrefixConfig:
    """Prefix tuning: ``prefix_len`` positions of keys/values, on ``layers`` (default: all).

    ``mlp_hidden``: the reparametrisation's hidden width (``None``: optimise the keys/values directly).
    ``init_std``: std of a random direct prefix (the official code's ``randn``: 1).
    """

    prefix_len: int = 5
    mlp_hidden: int | None = 64
    layers: tuple[int, ...] | None = None
    init: str = "random"
    init_tokens: tuple[int, ...] | None = None
    init_std: float = 1.0

    def __post_init__(self) -> None:
        check.positive_int("CausalPrefixConfig.prefix_len", self.prefix_len)
        check.positive_int("CausalPrefixConfig.mlp_hidden", self.mlp_hidden, allow_none=True)
        check.finite_number("CausalPrefixConfig.init_std", self.init_std, low=0.0, strict=True)
        if self.layers is not None:
            layers = tuple(self.layers)
            if not layers or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in layers) \
                    or len(set(layers)) != len(layers):
                raise ValueError(f"CausalPrefixConfig.layers must be distinct non-negative layer indices (or None for all); "
                                 f"got {self.layers!r}.")
            object.__setattr__(self, "layers", tuple(sorted(layers)))
        toks = _check_tokens_field("CausalPrefixConfig", self.init, self.init_tokens, self.prefix_len,
                                   ("random", "uniform", "zeros", "tokens"))
        object.__setattr__(self, "init_tokens", toks)


@dataclass(frozen=True)
class CausalPromptConfig:
    """Embedding-only prompt tuning: ``prompt_len`` input vectors. ``init_std=None``: the std of the
    model's symbol embeddings."""

    prompt_len: int = 5
    init: str = "random"
    init_tokens: tuple[int, ...] | None = None
    init_std: float | None = None

    def __post_init__(self) -> None:
        check.positive_int("CausalPromptConfig.prompt_len", self.prompt_len)
        if self.init_std is not None:
            check.finite_number("CausalPromptConfig.init_std", self.init_std, low=0.0, strict=True)
        toks = _check_tokens_field("CausalPromptConfig", self.init, self.init_tokens, self.prompt_len,
                                   ("random", "uniform", "vocab", "tokens"))
        object.__setattr__(self, "init_tokens", toks)


@dataclass(frozen=True)
class CausalInfixConfig:
    """Infix tuning: ``infix_len`` positions of keys/values inserted before token ``position`` of
    ``[BOS] x [SEP] ...`` (``1 <= position <= x_len + 1``; ``None``: just before ``[SEP]``)."""

    infix_len: int = 5
    mlp_hidden: int | None = 64
    position: int | None = None
    init: str = "random"
    init_std: float = 1.0

    def __post_init__(self) -> None:
        check.positive_int("CausalInfixConfig.infix_len", self.infix_len)
        check.positive_int("CausalInfixConfig.mlp_hidden", self.mlp_hidden, allow_none=True)
        check.positive_int("CausalInfixConfig.position (index in [BOS] x [SEP] y, >= 1)", self.position, allow_none=True)
        check.finite_number("CausalInfixConfig.init_std", self.init_std, low=0.0, strict=True)
        check.one_of("CausalInfixConfig.init", self.init, ("random", "uniform", "zeros"))


@dataclass(frozen=True)
class CausalFinetuneConfig:
    """Full fine-tuning of a copy of the model (the reference)."""


MethodConfig = Union[CausalPrefixConfig, CausalPromptConfig, CausalInfixConfig, CausalFinetuneConfig]


@dataclass(frozen=True)
class TrainSettings:
    """AdamW, ``num_steps`` minibatches of ``batch_size`` drawn with ``seed``, linear warmup then decay."""

    lr: float = 1e-2
    num_steps: int = 200
    batch_size: int = 32
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    warmup_steps: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        check.finite_number("TrainSettings.lr", self.lr, low=0.0, strict=True)
        check.positive_int("TrainSettings.num_steps", self.num_steps)
        check.positive_int("TrainSettings.batch_size", self.batch_size)
        check.finite_number("TrainSettings.weight_decay", self.weight_decay, low=0.0)
        check.finite_number("TrainSettings.grad_clip", self.grad_clip, low=0.0)
        check.non_negative_int("TrainSettings.warmup_steps", self.warmup_steps)
        check.seed(self.seed)

    def replace(self, **changes: Any) -> "TrainSettings":
        return replace(self, **changes)


# --------------------------------------------------------------------------- tuners
class CausalTuner(nn.Module):
    """Base class. The frozen ``base`` model is not a submodule: ``parameters()`` and ``state_dict()``
    hold the tuned part only. Constructing a tuner sets ``requires_grad=False`` on ``base``."""

    def __init__(self, model: Transformer, config: MethodConfig):
        super().__init__()
        if not isinstance(model, Transformer) or not model.cfg.causal:
            raise ValueError("causal tuning needs a causal hmmlib Transformer (TransformerConfig(causal=True)).")
        object.__setattr__(self, "base", model)
        model.requires_grad_(False)
        model.eval()
        self.config = config

    @property
    def extra_len(self) -> int:
        """Positions the method adds to the input (prefix, prompt or infix length)."""
        return 0

    def check_fits(self, seq_len: int) -> None:
        """Refuse, before any training, inputs that with the added positions exceed the model's positions."""
        total = self.extra_len + seq_len
        if total > self.base.cfg.max_len:
            raise ValueError(f"{type(self).__name__}: {self.extra_len} added positions + {seq_len} input tokens = "
                             f"{total} > max_len={self.base.cfg.max_len} learned positions; shorten the "
                             f"prefix/prompt/infix to at most {self.base.cfg.max_len - seq_len}.")

    def check_data(self, data: GenerationData) -> None:
        self.check_fits(data.seq_len)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    @property
    def num_trainable(self) -> int:
        """Parameters optimised during training (a reparametrised prefix: embedding + MLP)."""
        return sum(p.numel() for p in self.trainable_parameters())

    @property
    def num_stored(self) -> int:
        """Numbers kept per task after :meth:`finish` (parameters and buffers of the tuner)."""
        return sum(t.numel() for t in self.state_dict().values())

    def finish(self) -> None:
        """Called at the end of :func:`fit` (a prefix drops its MLP here)."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _place(kv: list[KV], layers: Sequence[int] | None, num_layers: int) -> list[KV | None]:
    if layers is None:
        return list(kv)
    full: list[KV | None] = [None] * num_layers
    for j, i in enumerate(layers):
        full[i] = kv[j]
    return full


def _kv_encoder(model: Transformer, length: int, mlp_hidden: int | None, layers: Sequence[int] | None,
                init: str, init_std: float, init_kv: list[KV] | None) -> PrefixEncoder:
    cfg = model.cfg if layers is None else replace(model.cfg, num_layers=len(layers))
    enc = PrefixEncoder(cfg, length, mlp_hidden, init_kv=init_kv, init_std=init_std)
    with torch.no_grad():
        target = enc.prefix if mlp_hidden is None else enc.embedding
        if init == "uniform":
            target.uniform_(0.0, 1.0)
        elif init == "zeros":
            (enc.prefix if mlp_hidden is None else enc.mlp[2].weight).zero_()
            if mlp_hidden is not None:
                enc.mlp[2].bias.zero_()
    return enc


class PrefixTuner(CausalTuner):
    """``[PREFIX; BOS x SEP y]``: see :class:`CausalPrefixConfig`."""

    def __init__(self, model: Transformer, config: CausalPrefixConfig):
        super().__init__(model, config)
        L = model.cfg.num_layers
        if config.layers is not None and max(config.layers) >= L:
            raise ValueError(f"CausalPrefixConfig.layers {config.layers} name a layer >= num_layers={L}; use indices 0..{L - 1}.")
        if config.prefix_len >= model.cfg.max_len:
            raise ValueError(f"prefix_len={config.prefix_len} leaves no position for the input "
                             f"(max_len={model.cfg.max_len}); shorten the prefix.")
        init_kv = None
        if config.init == "tokens":
            if max(config.init_tokens) >= model.cfg.num_symbols:
                raise ValueError(f"init_tokens must be symbols in [0, {model.cfg.num_symbols}); got {config.init_tokens}.")
            kv = prefix_from_tokens(model, list(config.init_tokens))
            init_kv = kv if config.layers is None else [kv[i] for i in config.layers]
        self.encoder = _kv_encoder(model, config.prefix_len, config.mlp_hidden, config.layers, config.init,
                                   config.init_std, init_kv)

    @property
    def extra_len(self) -> int:
        return self.config.prefix_len

    def prefix(self) -> list[KV | None]:
        """Per-layer ``(keys, values)`` ``(1, H, P, d_head)`` (``None`` on layers without a prefix)."""
        return _place(self.encoder(), self.config.layers, self.base.cfg.num_layers)

    def forward(self, x, y):
        B = x.shape[0]
        pos = output_positions(x.shape[1], y.shape[1], B)
        return self.base(lm_inputs(self.base.cfg, x, y), prefix=self.prefix(), positions=pos).logits

    def finish(self) -> None:
        """Drop the reparametrisation: keep only the computed keys/values (a buffer)."""
        self.encoder.freeze()


class PromptTuner(CausalTuner):
    """``[P_e; BOS x SEP y]``: see :class:`CausalPromptConfig`."""

    def __init__(self, model: Transformer, config: CausalPromptConfig):
        super().__init__(model, config)
        n, d, V = config.prompt_len, model.cfg.d_model, model.cfg.num_symbols
        emb = model.tok_emb.weight[:V].detach()
        std = float(emb.std()) if config.init_std is None else config.init_std
        if config.init == "tokens":
            if max(config.init_tokens) >= V:
                raise ValueError(f"init_tokens must be symbols in [0, {V}); got {config.init_tokens}.")
            p = soft_prompt_from_tokens(model, list(config.init_tokens))
        elif config.init == "vocab":
            p = emb[torch.randint(0, V, (n,))].clone()
        elif config.init == "uniform":
            p = torch.rand(n, d) - 0.5
        else:
            p = torch.randn(n, d) * std
        self.prompt = nn.Parameter(p.float().to(model.device))

    @property
    def extra_len(self) -> int:
        return self.config.prompt_len

    def forward(self, x, y):
        pos = output_positions(x.shape[1], y.shape[1], x.shape[0])
        return self.base(lm_inputs(self.base.cfg, x, y), prompt=self.prompt, positions=pos).logits


class InfixTuner(CausalTuner):
    """``[BOS x INFIX SEP y]``: the frozen model encodes the tokens before ``position`` alone (a causal
    model's keys/values there do not depend on what follows), the infix's keys/values are appended,
    and the rest is run with all of it as a per-row prefix; positions continue across the infix."""

    def __init__(self, model: Transformer, config: CausalInfixConfig):
        super().__init__(model, config)
        self.encoder = _kv_encoder(model, config.infix_len, config.mlp_hidden, None, config.init, config.init_std, None)

    @property
    def extra_len(self) -> int:
        return self.config.infix_len

    def check_data(self, data: GenerationData) -> None:
        super().check_data(data)
        self._position(data.x.shape[1])

    def _position(self, x_len: int) -> int:
        p = self.config.position
        p = x_len + 1 if p is None else p
        if not 1 <= p <= x_len + 1:
            raise ValueError(f"CausalInfixConfig.position={p} must be in [1, x_len + 1 = {x_len + 1}]: after [BOS] and "
                             "at the latest just before [SEP], so that every prediction of y comes after the infix.")
        return p

    def forward(self, x, y):
        B, Tx = x.shape
        p = self._position(Tx)
        tokens = lm_inputs(self.base.cfg, x, y)
        with torch.no_grad():
            before = self.base(tokens[:, :p], return_kv=True).kv
        infix = self.encoder()
        prefix = [(torch.cat([kb, ki.expand(B, -1, -1, -1)], 2), torch.cat([vb, vi.expand(B, -1, -1, -1)], 2))
                  for (kb, vb), (ki, vi) in zip(before, infix)]
        rest = tokens[:, p:]
        pos = output_positions(Tx, y.shape[1], B) - p
        return self.base(rest, prefix=prefix, positions=pos).logits

    def finish(self) -> None:
        self.encoder.freeze()


class FinetuneTuner(CausalTuner):
    """A trained copy of the whole model (the base stays frozen and untouched)."""

    def __init__(self, model: Transformer, config: CausalFinetuneConfig):
        super().__init__(model, config)
        self.model = copy.deepcopy(model).requires_grad_(True)

    def forward(self, x, y):
        pos = output_positions(x.shape[1], y.shape[1], x.shape[0])
        return self.model(lm_inputs(self.base.cfg, x, y), positions=pos).logits


_TUNERS = {CausalPrefixConfig: PrefixTuner, CausalPromptConfig: PromptTuner, CausalInfixConfig: InfixTuner, CausalFinetuneConfig: FinetuneTuner}


def make_causal_tuner(model: Transformer, config: MethodConfig, *, seed: int = 0) -> CausalTuner:
    """The tuner for ``config``; ``seed`` seeds its initialisation (the global RNG is left as it was)."""
    if type(config) not in _TUNERS:
        raise ValueError(f"config must be one of {[c.__name__ for c in _TUNERS]}; got {type(config).__name__}.")
    check.seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _TUNERS[type(config)](model, config)


def batch_prefixes(prefixes: Sequence[Sequence[KV]]) -> list[KV]:
    """Stack single-row prefixes (one per example) into one per-row prefix ``(B, H, P, d_head)`` per layer."""
    return [(torch.cat([p[i][0] for p in prefixes]), torch.cat([p[i][1] for p in prefixes])) for i in range(len(prefixes[0]))]


# --------------------------------------------------------------------------- training and evaluation
def fit(tuner: CausalTuner, train: GenerationData, settings: TrainSettings, *, log_every: int = 50,
        finish: bool = True, val: GenerationData | None = None, eval_every: int | None = None) -> list[dict[str, float]]:
    """Minimise the mean NLL of ``y`` over minibatches; returns ``[{step, train_loss, grad_norm}]``
    (``grad_norm``: the largest pre-clipping norm since the last entry). Checks the lengths first.

    With ``val``: every ``eval_every`` steps (and at the last) the KL to the truth on ``val`` is logged
    (``val_kl``) and the trainable parameters with the lowest one are restored at the end (early
    stopping on validation data); that entry carries ``best: True``."""
    tuner.check_data(train)
    if val is not None:
        tuner.check_data(val)
        eval_every = eval_every or log_every
        check.positive_int("eval_every", eval_every)
    params = tuner.trainable_parameters()
    if not params:
        raise ValueError("the tuner has no trainable parameters (was it already finished?).")
    opt = adamw(params, settings.lr, settings.weight_decay)
    sched = lr_scheduler(opt, settings.num_steps, settings.warmup_steps)
    g = torch.Generator().manual_seed(settings.seed)
    n, hist, run, cnt, gmax = len(train), [], 0.0, 0, 0.0
    best: tuple[float, list[torch.Tensor] | None, int] = (math.inf, None, -1)
    tuner.train()
    for step in range(settings.num_steps):
        idx = torch.randint(0, n, (min(settings.batch_size, n),), generator=g)
        x, y = train.x[idx].to(tuner.base.device), train.y[idx].to(tuner.base.device)
        loss = F.cross_entropy(tuner(x, y).flatten(0, 1).float(), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, settings.grad_clip if settings.grad_clip > 0 else math.inf)
        opt.step()
        sched.step()
        run, cnt, gmax = run + loss.item(), cnt + 1, max(gmax, gn.item())
        last = step + 1 == settings.num_steps
        do_val = val is not None and ((step + 1) % eval_every == 0 or last)
        if (step + 1) % log_every == 0 or last or do_val:
            hist.append({"step": step + 1, "train_loss": run / cnt, "grad_norm": gmax})
            run, cnt, gmax = 0.0, 0, 0.0
            if do_val:
                kl = score(logits_on(tuner, val), val)["kl"]
                hist[-1]["val_kl"] = kl
                if kl < best[0]:
                    best = (kl, [p.detach().clone() for p in params], len(hist) - 1)
    if best[1] is not None:
        with torch.no_grad():
            for p, b in zip(params, best[1]):
                p.copy_(b)
        hist[best[2]]["best"] = True
    tuner.eval()
    if finish:
        tuner.finish()
    return hist


@torch.no_grad()
def logits_on(tuner: CausalTuner, data: GenerationData, batch_size: int = 512) -> torch.Tensor:
    """The tuner's logits for every example, ``(N, T_y, V)``, on the CPU."""
    tuner.check_data(data)
    was = tuner.training
    tuner.eval()
    dev = tuner.base.device
    out = [tuner(data.x[i:i + batch_size].to(dev), data.y[i:i + batch_size].to(dev)).float().cpu()
           for i in range(0, len(data), batch_size)]
    tuner.train(was)
    return torch.cat(out)


def evaluate(tuner: CausalTuner, data: GenerationData, batch_size: int = 512,
             per_example: bool = False) -> dict[str, Any]:
    """:func:`hmmlib.adapt.generation.score` of the tuner's predictions (excess NLL and KL, with s.e.)."""
    return score(logits_on(tuner, data, batch_size), data, per_example)
