"""One config class per tuning method and model kind, in the style of PEFT.

Every config is a frozen dataclass; change one with :meth:`TuneConfig.replace` (``dataclasses.replace``).

The defaults are the book's methods: a :class:`HeadConfig` head is logistic regression on the frozen features,
solved to convergence with the penalty chosen on validation data (``solver="newton"``); a prompt starts from that
head and keeps the best of ``restarts`` runs on validation data (``head_init="converged"``). The paper's
protocols are labelled choices: ``HeadConfig.paper()`` / ``HeadConfig.adamw(...)`` (AdamW on the
cross-entropy) and ``PromptTuningConfig.paper()`` / ``FakeTokenPromptConfig.paper()`` (20 vectors from real
symbols, a fresh head, one run, the paper's optimiser).

===========================  ==================  ==========================================
config                       model               what is trained
===========================  ==================  ==========================================
:class:`HeadConfig`          HMM or Transformer  a linear head on the frozen model's output
:class:`FakeTokenPromptConfig`  HMM (ideal)      fake tokens' emission rows + the head
:class:`PromptTuningConfig`  Transformer         soft prompt vectors + the head
:class:`PrefixTuningConfig`  Transformer         per-layer keys/values (MLP-reparametrised) + the head
:class:`FineTuningConfig`    Transformer         a copy of the whole model + the head
===========================  ==================  ==========================================
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar

from .. import _validate as check
from .logistic import L2_GRID

__all__ = ["TuneConfig", "HeadConfig", "FakeTokenPromptConfig", "PromptTuningConfig", "PrefixTuningConfig",
           "FineTuningConfig", "PAPER_TUNING", "PAPER_PROMPT"]

#: The paper's finetuning hyperparameters (``src/run_finetune_seed.sh`` of ``sangmichaelxie/pretraining_analysis``): AdamW
#: (default betas, no weight decay), lr 0.01 with 500 warmup steps then linear decay, 100 epochs of
#: batch 128, fp32, the final model; the HF ``Trainer`` defaults: gradient clipping 1.0, seed 42;
#: 20 soft-prompt vectors (``--prefix_len 20``, section 4.7).
PAPER_TUNING: dict[str, Any] = dict(lr=0.01, num_epochs=100, batch_size=128, weight_decay=0.0, warmup_steps=500,
                                    schedule="linear", grad_clip=1.0, seed=42)

#: The paper's prompt protocol beyond :data:`PAPER_TUNING` (the authors' code; the book's appendix
#: ``book/papers.md``): 20 vectors initialised from the embedding rows of random symbols, a freshly
#: initialised head, one run.
PAPER_PROMPT: dict[str, Any] = dict(prompt_len=20, init="tokens", head_init="random", restarts=1)


@dataclass(frozen=True)
class TuneConfig:
    """How to optimise (shared by every method): a 2-class cross-entropy minimised with AdamW.

    Attributes:
        lr, weight_decay: AdamW's learning rate and (decoupled) weight decay.
        num_epochs: passes over the training set (the last batch of an epoch may be smaller).
        num_steps: if given, the number of optimisation steps, replacing ``num_epochs``.
        batch_size: examples per step.
        warmup_steps, schedule: linear warmup, then ``"linear"`` decay to 0 or ``"constant"``.
        grad_clip: clip the trainable parameters' gradient norm (0 disables it).
        log_every: steps between history entries (and validation); the last step is always logged.
        eval_batch_size: examples per forward pass in ``evaluate``.
        seed: seeds the initialisation, the init tokens and the minibatch order.
    """

    method: ClassVar[str] = "base"
    #: fields that :meth:`paper` sets beyond :data:`PAPER_TUNING`
    paper_protocol: ClassVar[dict[str, Any]] = {}

    lr: float = 1e-2
    num_epochs: int = 100
    num_steps: int | None = None
    batch_size: int = 128
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "linear"
    grad_clip: float = 1.0
    log_every: int = 100
    eval_batch_size: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        name = type(self).__name__
        for f in ("num_epochs", "batch_size", "log_every", "eval_batch_size"):
            check.positive_int(f"{name}.{f}", getattr(self, f))
        check.positive_int(f"{name}.num_steps", self.num_steps, allow_none=True)
        check.finite_number(f"{name}.lr", self.lr, low=0, strict=True)
        check.finite_number(f"{name}.weight_decay", self.weight_decay, low=0)
        check.finite_number(f"{name}.grad_clip", self.grad_clip, low=0)
        check.non_negative_int(f"{name}.warmup_steps", self.warmup_steps)
        check.one_of(f"{name}.schedule", self.schedule, ("linear", "constant"))
        check.seed(self.seed, f"{name}.seed")

    @classmethod
    def paper(cls, **overrides: Any) -> "TuneConfig":
        """The paper's protocol: its finetuning hyperparameters (:data:`PAPER_TUNING`) and the class's
        :attr:`paper_protocol`, with ``overrides``."""
        return cls(**{**PAPER_TUNING, **cls.paper_protocol, **overrides})

    def replace(self, **changes: Any) -> "TuneConfig":
        """A copy with ``changes`` (``dataclasses.replace``, validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return {"method": self.method, "config": type(self).__name__, **asdict(self)}


@dataclass(frozen=True)
class _FrozenLMMixin:
    """``max_positions``: positions the frozen transformer reads (prompt/prefix, ``[MASK]`` and tokens;
    the paper: 80); ``None``: all of the model's ``max_len``. See :class:`hmmlib.lm.inputs.InputLayout`."""

    max_positions: int | None = None


@dataclass(frozen=True)
class _ConvergedHeadMixin:
    """``l2_grid``: the penalties :math:`\\lambda` of the converged head (logistic regression on the frozen
    features, :mod:`hmmlib.adapt.logistic`); the one with the best validation accuracy is kept (ties: the larger)."""

    l2_grid: tuple[float, ...] = L2_GRID

    def _check_l2_grid(self) -> None:
        name, grid = type(self).__name__, self.l2_grid
        if isinstance(grid, (str, bytes)) or not hasattr(grid, "__iter__") or len(tuple(grid)) == 0:
            raise ValueError(f"{name}.l2_grid must be a non-empty tuple of penalties > 0; got {grid!r}.")
        for v in grid:
            check.finite_number(f"{name}.l2_grid", v, low=0, strict=True)
        object.__setattr__(self, "l2_grid", tuple(float(v) for v in grid))


@dataclass(frozen=True)
class _RestartsMixin(_ConvergedHeadMixin):
    """How a prompt run starts and how many run: ``head_init="converged"`` starts the head at the converged
    head of the frozen model (:class:`HeadConfig` with this ``l2_grid``), ``"random"`` at ``nn.Linear``'s
    init (the paper); ``restarts`` runs, run ``r`` seeded with ``sub_seed(seed, r)`` (prompt init, init
    tokens and minibatches), the one with the best validation accuracy kept (ties: the earliest)."""

    head_init: str = "converged"
    restarts: int = 3

    def _check_restarts(self) -> None:
        name = type(self).__name__
        check.one_of(f"{name}.head_init", self.head_init, ("converged", "random"))
        check.positive_int(f"{name}.restarts", self.restarts)
        self._check_l2_grid()


def _check_init(cfg: Any, length: int) -> None:
    name = type(cfg).__name__
    check.one_of(f"{name}.init", cfg.init, ("random", "tokens"))
    if cfg.init_tokens is None:
        return
    toks = tuple(cfg.init_tokens)
    if cfg.init != "tokens":
        raise ValueError(f"{name}.init_tokens is only used with init='tokens'.")
    if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in toks):
        raise ValueError(f"{name}.init_tokens must be non-negative symbol ids; got {toks!r}.")
    if len(toks) != length:
        raise ValueError(f"{name}.init_tokens has {len(toks)} symbols but the {cfg.method} has length {length}.")
    object.__setattr__(cfg, "init_tokens", toks)


@dataclass(frozen=True)
class HeadConfig(_FrozenLMMixin, _ConvergedHeadMixin, TuneConfig):
    """Head tuning: ``nn.Linear(V, 2)`` on the frozen model's output at the ``[MASK]`` (ideal model: ``G(x)``;
    the attention head: the outputs at every position). ``max_positions`` applies to a transformer only.

    ``solver="newton"`` (the default): the features are computed once and the head is the minimiser of the
    penalised log-loss (:func:`hmmlib.adapt.logistic.logistic_path`) at each penalty of ``l2_grid``, the one
    with the best validation accuracy kept; the optimisation fields (``lr``, ``num_steps``, ...) are unused.
    ``solver="adamw"``: those fields' AdamW run on the cross-entropy (the paper's optimiser:
    :meth:`paper`; any other: :meth:`adamw`). The attention head is not a linear head on fixed features and
    takes ``"adamw"`` only."""

    method: ClassVar[str] = "head"
    paper_protocol: ClassVar[dict[str, Any]] = {"solver": "adamw"}

    solver: str = "newton"

    @classmethod
    def adamw(cls, **fields: Any) -> "HeadConfig":
        """A head trained by AdamW with ``fields`` (``HeadConfig(solver="adamw", **fields)``)."""
        return cls(**{"solver": "adamw", **fields})

    def __post_init__(self) -> None:
        TuneConfig.__post_init__(self)
        check.positive_int("HeadConfig.max_positions", self.max_positions, allow_none=True)
        check.one_of("HeadConfig.solver", self.solver, ("newton", "adamw"))
        self._check_l2_grid()


@dataclass(frozen=True)
class FakeTokenPromptConfig(_RestartsMixin, TuneConfig):
    """Prompt tuning on the ideal model: ``prompt_len`` fake tokens with learnable non-negative emission rows
    ``u = positivity(theta)`` (``"exp"`` or ``"softplus"``), trained with the head. ``init="random"``:
    ``theta ~ N(0, 1)``; ``"tokens"``: the emission rows of real symbols ``init_tokens`` (default: drawn with the
    run's seed). ``head_init``, ``restarts``, ``l2_grid``: see :class:`_RestartsMixin` (default: from the
    converged head, best of 3 on validation data); :meth:`paper`: the paper's protocol (:data:`PAPER_PROMPT`)."""

    method: ClassVar[str] = "prompt"
    paper_protocol: ClassVar[dict[str, Any]] = PAPER_PROMPT

    prompt_len: int = 1
    init: str = "random"
    init_tokens: tuple[int, ...] | None = None
    positivity: str = "exp"

    def __post_init__(self) -> None:
        TuneConfig.__post_init__(self)
        check.positive_int("FakeTokenPromptConfig.prompt_len", self.prompt_len)
        check.one_of("FakeTokenPromptConfig.positivity", self.positivity, ("exp", "softplus"))
        _check_init(self, self.prompt_len)
        self._check_restarts()


@dataclass(frozen=True)
class PromptTuningConfig(_FrozenLMMixin, _RestartsMixin, TuneConfig):
    """Prompt tuning of a frozen transformer: ``prompt_len`` input vectors before the ``[MASK]``, trained with the
    head. ``init="random"``: ``N(0, init_std^2)`` (the model's own init); ``"tokens"``: the embeddings of real
    symbols ``init_tokens`` (default: drawn with the run's seed). ``prompt_lr_scale`` multiplies the prompt's
    learning rate (the paper's exp. 2: 10). ``head_init``, ``restarts``, ``l2_grid``: see
    :class:`_RestartsMixin` (default: from the converged head, best of 3 on validation data); :meth:`paper`: the
    paper's protocol (:data:`PAPER_PROMPT`: 20 vectors from embedding rows, a fresh head, lr 0.01, 100 epochs,
    one run)."""

    method: ClassVar[str] = "prompt"
    paper_protocol: ClassVar[dict[str, Any]] = PAPER_PROMPT

    prompt_len: int = 1
    init: str = "random"
    init_tokens: tuple[int, ...] | None = None
    init_std: float = 0.02
    prompt_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        TuneConfig.__post_init__(self)
        check.positive_int("PromptTuningConfig.prompt_len", self.prompt_len)
        check.positive_int("PromptTuningConfig.max_positions", self.max_positions, allow_none=True)
        check.finite_number("PromptTuningConfig.init_std", self.init_std, low=0, strict=True)
        check.finite_number("PromptTuningConfig.prompt_lr_scale", self.prompt_lr_scale, low=0, strict=True)
        _check_init(self, self.prompt_len)
        self._check_restarts()


@dataclass(frozen=True)
class PrefixTuningConfig(_FrozenLMMixin, TuneConfig):
    """Prefix tuning (Li & Liang 2021): per-layer keys and values at ``prefix_len`` positions, trained through
    an MLP of width ``mlp_hidden`` (``None``: the prefix directly), which is dropped after training when
    ``freeze_mlp``. ``init="tokens"``: the model's own keys/values of ``init_tokens``; ``"random"``: PyTorch's
    MLP init (direct prefix: ``N(0, init_std^2)``)."""

    method: ClassVar[str] = "prefix"

    prefix_len: int = 1
    mlp_hidden: int | None = 512
    init: str = "random"
    init_tokens: tuple[int, ...] | None = None
    init_std: float = 0.02
    prompt_lr_scale: float = 1.0
    freeze_mlp: bool = True

    def __post_init__(self) -> None:
        TuneConfig.__post_init__(self)
        check.positive_int("PrefixTuningConfig.prefix_len", self.prefix_len)
        check.positive_int("PrefixTuningConfig.mlp_hidden", self.mlp_hidden, allow_none=True)
        check.positive_int("PrefixTuningConfig.max_positions", self.max_positions, allow_none=True)
        check.finite_number("PrefixTuningConfig.init_std", self.init_std, low=0, strict=True)
        check.finite_number("PrefixTuningConfig.prompt_lr_scale", self.prompt_lr_scale, low=0, strict=True)
        check.one_of("PrefixTuningConfig.freeze_mlp", self.freeze_mlp, (True, False))
        _check_init(self, self.prefix_len)


@dataclass(frozen=True)
class FineTuningConfig(_FrozenLMMixin, TuneConfig):
    """Full fine-tuning of a copy of the transformer plus the head (the reference; the original stays frozen)."""

    method: ClassVar[str] = "finetune"

    def __post_init__(self) -> None:
        TuneConfig.__post_init__(self)
        check.positive_int("FineTuningConfig.max_positions", self.max_positions, allow_none=True)
