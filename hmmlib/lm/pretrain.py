"""Pretraining a transformer on text sampled from an HMM, measured against the exact conditionals.

* data: a fresh sample every step, or a fixed corpus cut into blocks (both seeded, on the device);
* objectives: masked LM (BERT's masking: ``mlm_probability``, 80/10/10 mask/random/keep) or causal LM;
* loop: AdamW, linear warmup then linear decay, gradient clipping, bf16 autocast (and optional
  ``torch.compile``) on CUDA, float32 on CPU, a progress bar with loss, excess loss and tokens/s;
* evaluation against the truth: :func:`evaluate` compares the model's distribution with
  :mod:`hmmlib.inference`'s exact conditional on held-out text;
* checkpoints: everything needed to resume bit-for-bit (weights, optimizer, scheduler, RNG states).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .checkpoint import load_checkpoint, save_checkpoint
from .device import resolve_device
from .inputs import InputLayout
from .optim import adamw, lr_scheduler
from ..hmm.model import HMM
from .. import _validate as check
from ..display import progress_bar
from ..hmm.inference import masked_conditional, masked_token_conditionals, next_token_conditionals
from ..hmm.sampling import sample
from .transformer import Transformer, TransformerConfig

__all__ = ["TrainConfig", "HMMData", "mask_tokens", "causal_inputs", "evaluate", "Pretrained", "pretrain",
           "model_masked_conditional", "make_optimizer", "mlm_loss",
           "load_pretrained", "pretrained_from_state", "CHECKPOINT_KEYS"]


@dataclass(frozen=True)
class TrainConfig:
    """Pretraining hyperparameters (saved with every checkpoint).

    Attributes:
        objective: ``"mlm"`` (masked LM) or ``"causal"``.
        num_steps, batch_size, seq_len: optimisation steps and the shape of each batch.
        lr, warmup_steps, weight_decay, grad_clip: AdamW with linear warmup and linear decay to 0
            (``warmup_steps <= num_steps``).
        mlm_probability: fraction of positions selected for the MLM loss (80/10/10 split).
        corpus_tokens: ``None`` samples fresh text every step; otherwise a fixed corpus of
            this many tokens, in documents of ``doc_len`` tokens cut into ``seq_len`` blocks.
        doc_len: document length of the fixed corpus (default ``seq_len``).
        eval_every, eval_num_seqs: evaluation period (steps) and held-out sequences.
        seed: seeds the model's initialisation, the data and the masking.
        compile: ``torch.compile`` the model (CUDA only).
    """

    objective: str = "mlm"
    num_steps: int = 1000
    batch_size: int = 32
    seq_len: int = 128
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    mlm_probability: float = 0.15
    corpus_tokens: int | None = None
    doc_len: int | None = None
    eval_every: int = 100
    eval_num_seqs: int = 256
    seed: int = 0
    compile: bool = False

    def __post_init__(self) -> None:
        check.one_of("TrainConfig.objective", self.objective, ("mlm", "causal"))
        for name in ("num_steps", "batch_size", "seq_len", "eval_every", "eval_num_seqs"):
            check.positive_int(f"TrainConfig.{name}", getattr(self, name))
        check.finite_number("TrainConfig.lr", self.lr, low=0, strict=True)
        check.non_negative_int("TrainConfig.warmup_steps", self.warmup_steps)
        if self.warmup_steps > self.num_steps:
            raise ValueError(
                f"TrainConfig.warmup_steps={self.warmup_steps} is more than num_steps={self.num_steps}: the learning "
                f"rate would stop at {self.num_steps}/{self.warmup_steps} of lr and never reach its peak. Use "
                f"warmup_steps <= num_steps (e.g. warmup_steps={max(1, self.num_steps // 10)}).")
        check.finite_number("TrainConfig.weight_decay", self.weight_decay, low=0)
        check.finite_number("TrainConfig.grad_clip", self.grad_clip, low=0)
        check.finite_number("TrainConfig.mlm_probability", self.mlm_probability, low=0, strict=True, high=1)
        check.seed(self.seed, "TrainConfig.seed")
        check.one_of("TrainConfig.compile", self.compile, (True, False))
        check.positive_int("TrainConfig.doc_len", self.doc_len, allow_none=True)
        check.positive_int("TrainConfig.corpus_tokens", self.corpus_tokens, allow_none=True)
        if self.corpus_tokens is not None:
            doc = self.doc_len or self.seq_len
            if doc % self.seq_len or self.corpus_tokens < doc:
                raise ValueError(f"doc_len ({doc}) must be a multiple of seq_len ({self.seq_len}) and corpus_tokens >= doc_len.")

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- data
class HMMData:
    """Training batches sampled from ``hmm`` on its device, reproducibly from ``generator``."""

    def __init__(self, hmm: HMM, cfg: TrainConfig, generator: torch.Generator):
        self.hmm, self.cfg, self.g = hmm, cfg, generator
        self.blocks = None
        if cfg.corpus_tokens is not None:
            doc = cfg.doc_len or cfg.seq_len
            corpus, _ = sample(hmm, cfg.corpus_tokens // doc, doc, seed=cfg.seed + 1_000_003)
            self.blocks = corpus.reshape(-1, cfg.seq_len)

    def batch(self) -> torch.Tensor:
        """``(batch_size, seq_len)`` int64 tokens."""
        cfg = self.cfg
        if self.blocks is None:
            return sample(self.hmm, cfg.batch_size, cfg.seq_len, generator=self.g)[0]
        idx = torch.randint(self.blocks.shape[0], (cfg.batch_size,), generator=self.g, device=self.g.device)
        return self.blocks[idx]


def mask_tokens(tokens: torch.Tensor, model_cfg: TransformerConfig, mlm_probability: float,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: each position is selected with probability ``mlm_probability``; a selected
    position becomes ``[MASK]`` (80%), a uniformly random symbol (10%) or stays (10%).

    Returns ``(inputs, selected)``; the loss is taken at ``selected`` against the original tokens.
    At least one position is always selected.
    """
    if tokens.dim() != 2 or tokens.numel() == 0:
        raise ValueError(f"tokens must be a non-empty (batch, seq_len) tensor; got shape {tuple(tokens.shape)}.")
    dev = tokens.device
    u = torch.rand(tokens.shape + (3,), generator=generator, device=dev)
    selected = u[..., 0] < mlm_probability
    if not selected.any():
        selected[0, 0] = True
    to_mask = selected & (u[..., 1] < 0.8)
    to_random = selected & ~to_mask & (u[..., 2] < 0.5)
    rand = torch.randint(model_cfg.num_symbols, tokens.shape, generator=generator, device=dev)
    # elementwise selects instead of boolean-index writes (each of those runs a nonzero()); the same ids
    inputs = torch.where(to_random, rand, tokens).masked_fill_(to_mask, model_cfg.mask_id)
    return inputs, selected


def causal_inputs(tokens: torch.Tensor, model_cfg: TransformerConfig) -> torch.Tensor:
    """``[BOS] x_0 .. x_{T-2}``: the causal LM at position ``t`` predicts ``x_t``."""
    bos = torch.full_like(tokens[:, :1], model_cfg.bos_id)
    return torch.cat([bos, tokens[:, :-1]], 1)


# --------------------------------------------------------------------------- evaluation
def _compare(p_exact: torch.Tensor, q_model: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Mean TV, KL(exact || model), model loss, Bayes loss and excess loss over rows.

    ``q_model`` may be a single row (e.g. a unigram distribution) broadcast against all rows.
    """
    q_model = q_model.expand_as(p_exact)
    p, q = p_exact.double(), q_model.double().clamp_min(1e-12)
    idx = target.unsqueeze(-1)
    model_loss = -q.gather(-1, idx).log().mean()
    bayes_loss = -p.gather(-1, idx).clamp_min(1e-300).log().mean()
    kl = torch.special.xlogy(p, p / q).sum(-1).mean()
    return {
        "tv": float(0.5 * (p - q).abs().sum(-1).mean()),
        "kl": float(kl),
        "model_loss": float(model_loss),
        "bayes_loss": float(bayes_loss),
        "excess_loss": float(model_loss - bayes_loss),
    }


@torch.no_grad()
def evaluate(model: Transformer, hmm: HMM, num_seqs: int, seq_len: int, *, seed: int = 12345) -> dict[str, float]:
    """Compare the model with the exact conditionals on ``num_seqs`` held-out sequences.

    * MLM: one random position per sequence is masked and the model's distribution there is
      compared with ``P(X_t | x_{-t})``; then ``[MASK]`` replaces position 0 and the model is
      compared with ``G(x) = W P(H_0 | x_{1:T})`` (keys prefixed ``pos0_``);
    * causal: every position, against ``P(X_t | x_{0:t-1})``.

    Returns TV distance, KL(exact || model), the model's loss, the Bayes-optimal loss and the
    excess loss (nats per token), plus the same for the best context-free predictor, the
    stationary unigram distribution ``W s`` (keys prefixed ``unigram_``).
    """
    cfg = model.cfg
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    h = hmm.to(device=dev)
    x, _ = sample(h, num_seqs, seq_len, seed=seed)
    unigram = (h.W @ h.stationary()).float()

    def compare(p, q, target, prefix=""):
        res = {f"{prefix}{k}": v for k, v in _compare(p, q, target).items()}
        base = _compare(p, unigram, target)
        res.update({f"{prefix}unigram_{k.replace('model_loss', 'loss')}": v for k, v in base.items() if k != "bayes_loss"})
        return res

    try:
        if cfg.causal:
            q = model(causal_inputs(x, cfg)).probs()
            p = next_token_conditionals(h, x)
            return compare(p.reshape(-1, cfg.num_symbols), q.reshape(-1, cfg.num_symbols), x.reshape(-1))
        g = torch.Generator(device=dev)
        g.manual_seed(seed + 1)
        t = torch.randint(seq_len, (num_seqs,), generator=g, device=dev)
        rows = torch.arange(num_seqs, device=dev)
        inputs = x.clone()
        inputs[rows, t] = cfg.mask_id
        q = model(inputs, positions=t[:, None]).probs()[:, 0]
        p = masked_token_conditionals(h, x)[rows, t]
        out = compare(p, q, x[rows, t])
        inputs0 = x.clone()
        inputs0[:, 0] = cfg.mask_id
        q0 = model(inputs0, positions=torch.zeros(num_seqs, 1, dtype=torch.long, device=dev)).probs()[:, 0]
        p0 = masked_conditional(h, x[:, 1:])
        out.update(compare(p0, q0, x[:, 0], prefix="pos0_"))
        return out
    finally:
        model.train(was_training)


# --------------------------------------------------------------------------- training
@dataclass
class Pretrained:
    """A pretrained model with its configs and learning curve."""

    model: Transformer
    model_cfg: TransformerConfig
    train_cfg: TrainConfig
    history: list[dict[str, float]] = field(default_factory=list)
    step: int = 0
    tokens_per_second: float = float("nan")


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """Fused AdamW (where available) over the model's trainable parameters, with the config's
    learning rate and weight decay."""
    return adamw([p for p in model.parameters() if p.requires_grad], cfg.lr, cfg.weight_decay, fused=True)


def mlm_loss(model: Transformer, inputs: torch.Tensor, selected: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Cross-entropy at the ``selected`` positions only: the output layer runs on those rows alone."""
    logits = model(inputs, positions=selected).logits
    return F.cross_entropy(logits.float(), tokens[selected])


def _loss(model: Transformer, tokens: torch.Tensor, cfg: TrainConfig, g: torch.Generator) -> torch.Tensor:
    mcfg = model.cfg
    if cfg.objective == "causal":
        logits = model(causal_inputs(tokens, mcfg)).logits
        return F.cross_entropy(logits.float().reshape(-1, mcfg.num_symbols), tokens.reshape(-1))
    inputs, selected = mask_tokens(tokens, mcfg, cfg.mlm_probability, g)
    return mlm_loss(model, inputs, selected, tokens)


def _rng_state(g: torch.Generator) -> dict[str, torch.Tensor]:
    state = {"data": g.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def pretrain(
    hmm: HMM,
    model_cfg: TransformerConfig,
    train_cfg: TrainConfig,
    *,
    device: torch.device | str | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    stop_at: int | None = None,
    progress: bool = True,
) -> Pretrained:
    """Pretrain a fresh :class:`Transformer` on text from ``hmm``.

    Args:
        device: where to train (default :func:`hmmlib.default_device`); one this machine lacks raises ``ValueError``.
        checkpoint_path: where to save the final (or ``stop_at``) state.
        resume: continue from ``checkpoint_path`` (same configs required).
        stop_at: stop after this many steps (the schedule still assumes ``num_steps``),
            e.g. to resume later.
        progress: show a progress bar.
    """
    if model_cfg.num_symbols != hmm.num_symbols:
        raise ValueError(f"model_cfg.num_symbols={model_cfg.num_symbols} but the HMM has {hmm.num_symbols} symbols.")
    if (model_cfg.causal) != (train_cfg.objective == "causal"):
        raise ValueError("model_cfg.causal must be True exactly when train_cfg.objective == 'causal'.")
    if train_cfg.seq_len + 1 > model_cfg.max_len:
        raise ValueError(f"seq_len={train_cfg.seq_len} needs max_len > seq_len; got max_len={model_cfg.max_len}.")
    if resume and checkpoint_path is None:
        raise ValueError("resume=True needs checkpoint_path.")
    check.positive_int("stop_at", stop_at, allow_none=True)
    dev = resolve_device(device)
    h = hmm.to(device=dev, dtype=torch.float32)
    end = train_cfg.num_steps if stop_at is None else min(stop_at, train_cfg.num_steps)

    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(train_cfg.seed)
        model = Transformer(model_cfg).to(dev)
        opt = make_optimizer(model, train_cfg)
        sched = lr_scheduler(opt, train_cfg.num_steps, train_cfg.warmup_steps)
        g = torch.Generator(device=dev)
        g.manual_seed(train_cfg.seed)
        result = Pretrained(model, model_cfg, train_cfg)
        if resume:
            state = load_checkpoint(checkpoint_path, ("model", "optimizer", "scheduler", "rng", "step"), map_location=dev)
            if state["model_cfg"] != model_cfg.to_dict() or state["train_cfg"] != train_cfg.to_dict():
                raise ValueError(f"{checkpoint_path} was trained with other configs; it cannot be resumed with these.")
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            g.set_state(state["rng"]["data"].cpu() if dev.type == "cpu" else state["rng"]["data"])
            torch.set_rng_state(state["rng"]["torch"].cpu())
            if "cuda" in state["rng"] and torch.cuda.is_available():
                torch.cuda.set_rng_state(state["rng"]["cuda"].cpu())
            result.step, result.history = int(state["step"]), list(state["history"])
        data = HMMData(h, train_cfg, g)
        step_fn = torch.compile(model) if (train_cfg.compile and dev.type == "cuda") else model
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
        model.train()
        bar = progress_bar(end, enabled=progress, initial=result.step, desc="pretraining", mininterval=1.0, leave=True)
        tokens_seen, t0 = 0, time.perf_counter()
        while result.step < end:
            tokens = data.batch()
            with autocast:
                loss = _loss(step_fn, tokens, train_cfg, g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if train_cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
            opt.step()
            sched.step()
            result.step += 1
            tokens_seen += tokens.numel()
            if result.step % train_cfg.eval_every == 0 or result.step == end:
                with autocast:
                    metrics = evaluate(model, h, train_cfg.eval_num_seqs, train_cfg.seq_len)
                rate = tokens_seen / max(1e-9, time.perf_counter() - t0)
                result.history.append({"step": result.step, "train_loss": loss.item(), "tokens_per_second": rate, **metrics})
                if bar is not None:
                    bar.set_postfix(loss=f"{loss.item():.3f}", excess=f"{metrics['excess_loss']:.3f}", tok_s=f"{rate:,.0f}")
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        result.tokens_per_second = tokens_seen / max(1e-9, time.perf_counter() - t0) if tokens_seen else float("nan")
        model.eval()
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, {
                "model_cfg": model_cfg.to_dict(), "train_cfg": train_cfg.to_dict(),
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "rng": _rng_state(g), "step": result.step, "history": result.history,
            })
    return result


#: The keys every checkpoint written by :func:`pretrain` holds (and :func:`load_pretrained` needs).
CHECKPOINT_KEYS = ("model_cfg", "train_cfg", "model", "step")


def load_pretrained(path: str | Path, device: torch.device | str | None = None, *,
                    require_checksum: bool = False) -> Pretrained:
    """Load a model saved by :func:`pretrain` (weights only; ``torch.load(weights_only=True)``), its checksum
    verified (:func:`hmmlib.lm.checkpoint.load_checkpoint`; ``require_checksum`` refuses an older file that has none)."""
    dev = resolve_device(device)
    state = load_checkpoint(path, CHECKPOINT_KEYS, map_location=dev, require_checksum=require_checksum)
    return pretrained_from_state(state, path, dev)


def pretrained_from_state(state: dict[str, Any], path: str | Path, device: torch.device) -> Pretrained:
    """The :class:`Pretrained` model held by a checkpoint ``state`` read from ``path`` (named in errors), on ``device``."""
    try:
        model_cfg = TransformerConfig(**state["model_cfg"])
        train_cfg = TrainConfig(**state["train_cfg"])
        model = Transformer(model_cfg).to(device)
        model.load_state_dict(state["model"])
    except (TypeError, RuntimeError, ValueError) as e:
        raise ValueError(f"checkpoint {path} does not match this version of hmmlib ({e}); delete it and retrain.") from None
    model.eval()
    return Pretrained(model, model_cfg, train_cfg, list(state.get("history", [])), int(state["step"]))


@torch.no_grad()
def model_masked_conditional(model: Transformer, x: torch.Tensor) -> torch.Tensor:
    """The masked LM's distribution at a ``[MASK]`` placed before ``x = x_1 .. x_T`` (all of it, within the
    model's positions): the learned counterpart of :func:`hmmlib.masked_conditional`. Shape (B, V), float32."""
    layout = InputLayout.for_model(model)
    if x.dim() == 2 and x.shape[1] > layout.max_tokens:
        raise ValueError(f"x has {x.shape[1]} tokens; the model reads at most {layout.max_tokens} after the [MASK].")
    return model(layout.masked(x), positions=layout.mask_position(x.shape[0])).probs()[:, 0]
