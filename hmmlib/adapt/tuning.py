r"""Downstream tuning: head, prompt, prefix and full fine-tuning (Wei, Xie & Ma 2021, digest sections
1.5-1.6 and 4.6-4.9; Li & Liang 2021). One interface: a :class:`TuneConfig` says what to train and
how; :func:`make_tuner` builds a :class:`Tuner` with ``fit(train, val=None) -> history``,
``evaluate(dataset) -> {accuracy, majority_rate, loss}`` and the parameter counts.

* :class:`TransformerTuner`, a *frozen* masked LM: the input is ``[MASK] x_1 .. x_T`` and the
  feature is the model's softmax over symbols at the ``[MASK]``. ``head``: ``nn.Linear(V, 2)`` on it
  (features computed once, without gradients); ``prompt``: ``prompt_len`` free input vectors before
  the ``[MASK]``, trained with the same head; ``prefix``: per-layer keys/values of length
  ``prefix_len`` from Li & Liang's MLP reparametrisation, dropped after training
  (:meth:`TransformerTuner.freeze_prefix`); ``finetune``: a deep copy of the model plus the head
  (a reference). The model's weights never change and none of its parameters gets a ``.grad``.
* :class:`hmmlib.tuning_ideal.IdealTuner`, an :class:`~hmmlib.HMM`: exact inference stands in for a
  perfect masked LM; ``head`` on :math:`G(x) = W p(x)` and ``prompt`` with fake tokens.

Every method minimises a 2-class cross-entropy with AdamW, minibatches from a ``torch.Generator``
seeded by ``cfg.seed``, linear warmup then linear decay, on the model's device.
"""
from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..lm.transformer import KV, Transformer, TransformerConfig

__all__ = ["METHODS", "PAPER_TUNING", "TuneConfig", "Tuner", "TransformerTuner", "PrefixEncoder",
           "make_tuner", "soft_prompt_from_tokens", "prefix_from_tokens", "tune_and_evaluate"]

METHODS = ("head", "prompt", "prefix", "finetune")

#: The paper's finetuning hyperparameters (``src/run_finetune_seed.sh``, digest section 4.9): AdamW
#: (default betas, no weight decay), lr 0.01 with 500 warmup steps then linear decay, 100 epochs of
#: batch 128, fp32, the final model; the HF ``Trainer`` defaults: gradient clipping 1.0, seed 42;
#: 20 soft-prompt vectors (``--prefix_len 20``, section 4.7).
PAPER_TUNING: dict[str, Any] = dict(lr=0.01, num_epochs=100, batch_size=128, weight_decay=0.0, warmup_steps=500,
                                    schedule="linear", grad_clip=1.0, prompt_len=20, init="random", seed=42)


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


@dataclass(frozen=True)
class TuneConfig:
    """What to train and how.

    Attributes:
        method: ``"head"``, ``"prompt"``, ``"prefix"`` or ``"finetune"`` (ideal model: head, prompt).
        lr, weight_decay: AdamW's learning rate and (decoupled) weight decay.
        num_epochs: passes over the training set (the last batch of an epoch may be smaller).
        num_steps: if given, the number of optimisation steps, replacing ``num_epochs``.
        batch_size: examples per step.
        warmup_steps, schedule: linear warmup, then ``"linear"`` decay to 0 or ``"constant"``.
        grad_clip: clip the trainable parameters' gradient norm (0 disables it).
        prompt_len: soft-prompt vectors (transformer) or fake tokens (ideal model) for ``prompt``.
        prefix_len: prefix positions for ``prefix``.
        prefix_mlp_hidden: hidden width of the prefix MLP; ``None`` optimises the prefix directly.
        init: ``"random"`` (soft prompt / direct prefix ~ N(0, init_std^2); prefix MLP: PyTorch's
            defaults; fake tokens: theta ~ N(0, 1)) or ``"tokens"``: prompt = embeddings of real
            symbols (ideal model: their emission rows), prefix = the model's keys/values of them.
        init_tokens: the symbols for ``init="tokens"`` (default: drawn uniformly with ``seed``).
        init_std: std of a random soft prompt or direct prefix (default 0.02, the model's init,
            like the paper's prompt initialised from not-yet-pretrained embedding rows).
        prompt_lr_scale: multiplies the learning rate of the prompt/prefix (the paper's exp. 2: 10).
        positivity: fake-token rows ``u = exp(theta)`` or ``softplus(theta)`` (ideal model).
        freeze_prefix: drop the prefix MLP at the end of ``fit``.
        log_every: steps between history entries (and validation); the last step is always logged.
        eval_batch_size: examples per forward pass in ``evaluate``.
        seed: seeds the initialisation, the init tokens and the minibatch order.
    """

    method: str = "head"
    lr: float = 1e-2
    num_epochs: int = 100
    num_steps: int | None = None
    batch_size: int = 128
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "linear"
    grad_clip: float = 1.0
    prompt_len: int = 1
    prefix_len: int = 1
    prefix_mlp_hidden: int | None = 512
    init: str = "random"
    init_tokens: tuple[int, ...] | None = None
    init_std: float = 0.02
    prompt_lr_scale: float = 1.0
    positivity: str = "exp"
    freeze_prefix: bool = True
    log_every: int = 100
    eval_batch_size: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {self.method!r}.")
        for name in ("num_epochs", "batch_size", "prompt_len", "prefix_len", "log_every", "eval_batch_size",
                     "num_steps", "prefix_mlp_hidden"):
            v = getattr(self, name)
            if not _positive_int(v) and not (v is None and name in ("num_steps", "prefix_mlp_hidden")):
                raise ValueError(f"TuneConfig.{name} must be a positive integer; got {v!r}.")
        for name, lo, strict in (("lr", 0, True), ("prompt_lr_scale", 0, True), ("init_std", 0, True),
                                 ("weight_decay", 0, False), ("grad_clip", 0, False)):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < lo or (strict and v == lo):
                raise ValueError(f"TuneConfig.{name} must be a finite number {'>' if strict else '>='} {lo}; got {v!r}.")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be a non-negative integer; got {self.warmup_steps!r}.")
        for name, options in (("schedule", ("linear", "constant")), ("init", ("random", "tokens")),
                              ("positivity", ("exp", "softplus"))):
            if getattr(self, name) not in options:
                raise ValueError(f"{name} must be one of {options}; got {getattr(self, name)!r}.")
        if not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int; got {self.seed!r}.")
        if self.init_tokens is not None:
            toks = tuple(self.init_tokens)
            if self.init != "tokens":
                raise ValueError("init_tokens is only used with init='tokens'.")
            if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in toks):
                raise ValueError(f"init_tokens must be non-negative symbol ids; got {toks!r}.")
            want = self.prefix_len if self.method == "prefix" else self.prompt_len
            if self.method in ("prompt", "prefix") and len(toks) != want:
                raise ValueError(f"init_tokens has {len(toks)} symbols but the {self.method} has length {want}.")
            object.__setattr__(self, "init_tokens", toks)

    @classmethod
    def paper(cls, method: str = "head", **overrides: Any) -> "TuneConfig":
        """The paper's finetuning hyperparameters (:data:`PAPER_TUNING`), with ``overrides``."""
        return cls(**{**PAPER_TUNING, "method": method, **overrides})

    def replace(self, **changes: Any) -> "TuneConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- the common loop
class Tuner:
    """Base class: the training loop, evaluation and parameter counts shared by every tuner.

    Subclasses set ``cfg``, ``device``, ``head`` and implement :meth:`trainable_parameters`,
    ``_prepare(dataset) -> dict`` (tensors on the device, with ``"y"``) and ``_logits(data, idx)``.
    """

    cfg: TuneConfig
    device: torch.device
    head: nn.Linear

    def trainable_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def _prepare(self, dataset) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _logits(self, data: dict[str, torch.Tensor], idx: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @contextmanager
    def _training(self) -> Iterator[None]:
        yield

    _eval_mode = _training

    def _after_fit(self) -> None:
        pass

    # -- counts
    @property
    def num_trainable_parameters(self) -> int:
        """Parameters optimised by ``fit`` (for a reparametrised prefix: embedding + MLP + head)."""
        return self._num_trainable

    @property
    def num_stored_parameters(self) -> int:
        """Parameters to keep after training on top of the frozen model (for a prefix: the
        computed ``prefix_len x 2 L d`` keys/values + head; otherwise the trainable ones)."""
        return self.num_trainable_parameters

    def parameter_counts(self) -> dict[str, int]:
        return {"trainable": self.num_trainable_parameters, "stored": self.num_stored_parameters,
                "total": self.num_total_parameters}

    # -- training
    def _optimizer(self) -> torch.optim.AdamW:
        cfg = self.cfg
        head = list(self.head.parameters())
        ids = {id(p) for p in head}
        rest = [p for p in self.trainable_parameters() if id(p) not in ids]
        groups = [{"params": head, "lr": cfg.lr}]
        if rest:
            scale = 1.0 if cfg.method == "finetune" else cfg.prompt_lr_scale
            groups.append({"params": rest, "lr": cfg.lr * scale})
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def _lr_factor(self, total: int):
        cfg = self.cfg

        def f(step: int) -> float:
            if step < cfg.warmup_steps:
                return (step + 1) / cfg.warmup_steps
            if cfg.schedule == "constant":
                return 1.0
            return max(0.0, (total - step) / max(1, total - cfg.warmup_steps))
        return f

    def fit(self, train, val=None) -> list[dict[str, float]]:
        """Train on ``train`` (a :class:`hmmlib.tasks.TaskDataset`); returns the history, one
        entry every ``log_every`` steps and at the end: ``step``, ``epoch``, ``lr``, ``train_loss``
        (mean over the steps since the last entry) and, with ``val``, ``val_accuracy``/``val_loss``."""
        cfg = self.cfg
        data = self._prepare(train)
        y = data["y"]
        n = y.shape[0]
        per_epoch = math.ceil(n / cfg.batch_size)
        total = cfg.num_steps if cfg.num_steps is not None else cfg.num_epochs * per_epoch
        params = self.trainable_parameters()
        opt = self._optimizer()
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self._lr_factor(total))
        g = torch.Generator()  # on the CPU: the same batches on every device
        g.manual_seed(cfg.seed)
        history: list[dict[str, float]] = []
        running, count = torch.zeros((), device=self.device), 0
        with self._training():
            for step in range(total):
                j = step % per_epoch
                if j == 0:
                    perm = torch.randperm(n, generator=g).to(self.device)
                idx = perm[j * cfg.batch_size:(j + 1) * cfg.batch_size]
                loss = F.cross_entropy(self._logits(data, idx), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                lr = opt.param_groups[0]["lr"]
                opt.step()
                sched.step()
                running += loss.detach().float()
                count += 1
                if (step + 1) % cfg.log_every == 0 or step + 1 == total:
                    entry = {"step": step + 1, "epoch": (step + 1) / per_epoch, "lr": lr,
                             "train_loss": float(running) / count}
                    if val is not None:
                        m = self.evaluate(val)
                        entry.update(val_accuracy=m["accuracy"], val_loss=m["loss"])
                    history.append(entry)
                    running.zero_()
                    count = 0
        self._after_fit()
        self.history = history
        return history

    # -- evaluation
    @torch.no_grad()
    def logits(self, dataset) -> torch.Tensor:
        """The head's ``(N, 2)`` logits on ``dataset`` (no gradients)."""
        data = self._prepare(dataset)
        n, bs = data["y"].shape[0], self.cfg.eval_batch_size
        with self._eval_mode():
            out = [self._logits(data, torch.arange(s, min(n, s + bs), device=self.device)) for s in range(0, n, bs)]
        return torch.cat(out)

    def predict(self, dataset) -> torch.Tensor:
        """Predicted labels ``(N,)`` (int64)."""
        return self.logits(dataset).argmax(1)

    def evaluate(self, dataset) -> dict[str, float]:
        """``accuracy``, ``majority_rate`` (the constant classifier's accuracy), mean cross-entropy
        ``loss`` and ``num_examples`` on ``dataset``."""
        logits = self.logits(dataset)
        y = dataset.y.to(self.device)
        return {"accuracy": float((logits.argmax(1) == y).double().mean()),
                "majority_rate": float(dataset.majority_rate),
                "loss": float(F.cross_entropy(logits, y)),
                "num_examples": int(y.numel())}


# --------------------------------------------------------------------------- prompts and prefixes from tokens
def _token_ids(tokens: Any, model: Transformer) -> torch.Tensor:
    t = torch.as_tensor(tokens, dtype=torch.long, device=model.tok_emb.weight.device).reshape(-1)
    if t.numel() == 0 or int(t.min()) < 0 or int(t.max()) >= model.cfg.num_symbols:
        raise ValueError(f"token ids must be symbols in [0, {model.cfg.num_symbols}); got {t.tolist()}.")
    return t


@torch.no_grad()
def soft_prompt_from_tokens(model: Transformer, tokens: Any) -> torch.Tensor:
    """The input embeddings ``(k, d_model)`` of symbols ``tokens``: as a ``prompt=`` they reproduce
    typing those symbols before the input (positions included)."""
    return model.embed(_token_ids(tokens, model)).detach().clone()


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
        kv = model(_token_ids(tokens, model)[None], return_kv=True).kv
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

    @property
    def frozen(self) -> bool:
        return "prefix" in self._buffers

    @property
    def num_stored(self) -> int:
        return self.prefix_len * 2 * self.cfg.num_layers * self.cfg.d_model


# --------------------------------------------------------------------------- the trained transformer
class TransformerTuner(Tuner):
    """Head / prompt / prefix tuning of a frozen masked-LM :class:`~hmmlib.Transformer`, or
    fine-tuning of a copy of it (see the module docstring). The model's weights never change."""

    def __init__(self, model: Transformer, cfg: TuneConfig):
        if not isinstance(model, Transformer):
            raise ValueError(f"expected a hmmlib.Transformer; got {type(model).__name__}.")
        if model.cfg.causal:
            raise ValueError("downstream tuning reads the output at a [MASK]: it needs a masked LM (causal=False).")
        if not isinstance(cfg, TuneConfig):
            raise ValueError(f"cfg must be a TuneConfig; got {type(cfg).__name__}.")
        self.model, self.cfg = model, cfg
        mc = model.cfg
        self.device = next(model.parameters()).device
        self.prompt: nn.Parameter | None = None
        self.prefix: PrefixEncoder | None = None
        self.init_token_ids: torch.Tensor | None = None
        n_init = cfg.prompt_len if cfg.method == "prompt" else cfg.prefix_len
        if cfg.init == "tokens" and cfg.method in ("prompt", "prefix"):
            if cfg.init_tokens is not None:
                self.init_token_ids = _token_ids(cfg.init_tokens, model)
            else:
                g = torch.Generator().manual_seed(cfg.seed)
                self.init_token_ids = torch.randint(mc.num_symbols, (n_init,), generator=g).to(self.device)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(cfg.seed)
            self.head = nn.Linear(mc.num_symbols, 2).to(self.device)
            self.net = model
            if cfg.method == "finetune":
                self.net = copy.deepcopy(model).requires_grad_(True).eval()
            elif cfg.method == "prompt":
                init = (soft_prompt_from_tokens(model, self.init_token_ids) if self.init_token_ids is not None
                        else torch.randn(cfg.prompt_len, mc.d_model) * cfg.init_std)
                self.prompt = nn.Parameter(init.float().to(self.device))
            elif cfg.method == "prefix":
                kv = None if self.init_token_ids is None else prefix_from_tokens(model, self.init_token_ids)
                self.prefix = PrefixEncoder(mc, cfg.prefix_len, cfg.prefix_mlp_hidden, kv, cfg.init_std).to(self.device)
        self._num_trainable = sum(p.numel() for p in self.trainable_parameters())
        self.history: list[dict[str, float]] = []

    def trainable_parameters(self) -> list[nn.Parameter]:
        ps = list(self.head.parameters())
        if self.cfg.method == "finetune":
            ps += list(self.net.parameters())
        elif self.prompt is not None:
            ps.append(self.prompt)
        elif self.prefix is not None:
            ps += list(self.prefix.parameters())
        return ps

    @property
    def num_stored_parameters(self) -> int:
        if self.prefix is not None:
            return self.prefix.num_stored + sum(p.numel() for p in self.head.parameters())
        return self.num_trainable_parameters

    @property
    def num_total_parameters(self) -> int:
        """The frozen model's parameters plus the trainable ones (finetune: the copy plus the head)."""
        if self.cfg.method == "finetune":
            return self.num_trainable_parameters
        return sum(p.numel() for p in self.model.parameters()) + self.num_trainable_parameters

    def freeze_prefix(self) -> None:
        """Drop the prefix MLP, keeping its output as a plain tensor (outputs do not change)."""
        if self.prefix is None:
            raise ValueError("freeze_prefix needs method='prefix'.")
        self.prefix.freeze()

    @property
    def _extra_len(self) -> int:
        m = self.cfg.method
        return 1 + (self.cfg.prompt_len if m == "prompt" else self.cfg.prefix_len if m == "prefix" else 0)

    def _check(self, dataset) -> torch.Tensor:
        x = getattr(dataset, "x", None)
        if not isinstance(x, torch.Tensor) or x.dim() != 2:
            raise ValueError("expected a TaskDataset with inputs x of shape (N, T).")
        mc = self.model.cfg
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= mc.num_symbols):
            raise ValueError(f"the dataset's symbols must be in [0, {mc.num_symbols}) (the model's num_symbols).")
        if x.shape[1] + self._extra_len > mc.max_len:
            raise ValueError(f"inputs of length {x.shape[1]} plus {self._extra_len} ([MASK] and prompt/prefix) "
                             f"positions exceed the model's max_len={mc.max_len}; truncate x (the paper keeps 79 or 59 tokens).")
        return x.to(self.device)

    def mask_probs(self, x: torch.Tensor) -> torch.Tensor:
        """The (prompted / prefixed / fine-tuned) model's softmax over symbols at the ``[MASK]``
        before ``x`` ``(B, T)``: ``(B, V)`` float32, differentiable in the trainable parameters."""
        x = x.to(self.device)
        inputs = torch.cat([torch.full_like(x[:, :1], self.model.cfg.mask_id), x], 1)
        kw: dict[str, Any] = {}
        if self.prompt is not None:
            kw["prompt"] = self.prompt
        if self.prefix is not None:
            kw["prefix"] = self.prefix()
        pos = torch.zeros(x.shape[0], 1, dtype=torch.long, device=self.device)
        return self.net(inputs, positions=pos, **kw).probs()[:, 0]

    @torch.no_grad()
    def features(self, dataset) -> torch.Tensor:
        """What the head sees on ``dataset``: :meth:`mask_probs` ``(N, V)``, without gradients."""
        x, bs = self._check(dataset), self.cfg.eval_batch_size
        with self._eval_mode():
            return torch.cat([self.mask_probs(x[s:s + bs]) for s in range(0, x.shape[0], bs)])

    def _prepare(self, dataset) -> dict[str, torch.Tensor]:
        y = dataset.y.to(self.device)
        if self.cfg.method == "head":  # the model is frozen: its features once, without gradients
            return {"f": self.features(dataset), "y": y}
        return {"x": self._check(dataset), "y": y}

    def _logits(self, data, idx):
        f = data["f"][idx] if "f" in data else self.mask_probs(data["x"][idx])
        return self.head(f)

    @contextmanager
    def _eval_mode(self, training: bool = False) -> Iterator[None]:
        """Both nets in eval mode (``training``: the fine-tuned copy in train mode, and the frozen
        model with ``requires_grad=False``, so gradients flow through it but none of its parameters
        gets one); flags and modes are restored afterwards."""
        nets = list({id(self.model): self.model, id(self.net): self.net}.values())
        was, flags = [n.training for n in nets], [p.requires_grad for p in self.model.parameters()]
        for n in nets:
            n.train(training and n is not self.model)
        if training:
            self.model.requires_grad_(False)
        try:
            yield
        finally:
            for n, w in zip(nets, was):
                n.train(w)
            for p, f in zip(self.model.parameters(), flags):
                p.requires_grad_(f)

    def _training(self):
        if self.prefix is not None and self.prefix.frozen:
            raise ValueError("the prefix MLP was dropped (freeze_prefix); build a new tuner to train again.")
        return self._eval_mode(training=True)

    def _after_fit(self) -> None:
        if self.prefix is not None and self.cfg.freeze_prefix:
            self.freeze_prefix()


# --------------------------------------------------------------------------- entry points
def make_tuner(model: Any, cfg: TuneConfig) -> Tuner:
    """A :class:`TransformerTuner` for a :class:`~hmmlib.Transformer`, an
    :class:`~hmmlib.tuning_ideal.IdealTuner` for an :class:`~hmmlib.HMM` (the ideal model)."""
    from ..hmm.model import HMM
    if isinstance(model, HMM):
        from .ideal import IdealTuner
        return IdealTuner(model, cfg)
    return TransformerTuner(model, cfg)


def tune_and_evaluate(model: Any, cfg: TuneConfig, splits: dict) -> dict[str, Any]:
    """Fit on ``splits["train"]`` (validating on ``splits.get("val")``) and evaluate on every split.

    Returns ``{"tuner", "history", "<split>": metrics, "parameters": parameter_counts()}``.
    """
    tuner = make_tuner(model, cfg)
    history = tuner.fit(splits["train"], splits.get("val"))
    out: dict[str, Any] = {"tuner": tuner, "history": history, "parameters": tuner.parameter_counts()}
    out.update({name: tuner.evaluate(ds) for name, ds in splits.items()})
    return out

