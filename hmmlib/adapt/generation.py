r"""Conditional-generation tasks with an exact target, for a causal LM (the prefix-tuning chapter).

A :class:`GenerationTask` is a family of HMMs (the *members*) over one vocabulary. An example draws a
member ``c``, a short input ``x`` from it (the "table": it identifies ``c`` only through its text)
and an output ``y``: a fresh sequence of the same member, its chain restarted from ``pi_c``. The
exact conditional :math:`p(y_t \mid x, y_{<t})` comes from :func:`hmmlib.hmm.families.restart_conditionals`.
With one member, ``y`` is simply text of that (for example perturbed) HMM.

The causal LM reads ``[BOS] x [SEP] y_0 .. y_{T_y-2}`` with ``[SEP] = [BOS]`` ("a new text starts here",
which pretraining showed only at position 0) and predicts ``y_t`` at the token before it
(:func:`lm_inputs`). Scores (:func:`score`): per output token, the excess negative log-likelihood
:math:`-\log q(y_t) + \log p(y_t)` of the sampled tokens and :math:`\mathrm{KL}(p(\cdot) \| q(\cdot))` at
every position, averaged per example, with standard errors across examples. Both have the
same expectation; the KL has less variance.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .. import _validate as check
from ..hmm.families import restart_conditionals
from ..hmm.model import HMM
from ..hmm.sampling import sample
from ..lm.transformer import TransformerConfig

__all__ = ["GenerationTask", "GenerationData", "lm_inputs", "output_positions", "score", "distance_to_family"]


@dataclass
class GenerationData:
    """Examples of a :class:`GenerationTask` with their exact conditionals.

    Attributes:
        x: ``(N, T_x)`` inputs; y: ``(N, T_y)`` outputs; member: ``(N,)`` the member that emitted both.
        p_true: ``(N, T_y, V)`` float32, ``p(y_t = v | x, y_{<t})``.
    """

    x: torch.Tensor
    y: torch.Tensor
    member: torch.Tensor
    p_true: torch.Tensor

    def __len__(self) -> int:
        return self.y.shape[0]

    def subset(self, idx: Any) -> "GenerationData":
        idx = torch.as_tensor(idx, dtype=torch.long)
        return GenerationData(self.x[idx], self.y[idx], self.member[idx], self.p_true[idx])

    @property
    def seq_len(self) -> int:
        """Tokens the LM reads: ``[BOS] x [SEP] y_{0:T_y-1}``."""
        return self.x.shape[1] + self.y.shape[1] + 1


@dataclass(frozen=True)
class GenerationTask:
    """A family of HMMs, a member prior, and the input/output lengths (module docstring)."""

    members: tuple[HMM, ...]
    x_len: int
    y_len: int
    weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", tuple(self.members))
        if not self.members or not all(isinstance(m, HMM) for m in self.members):
            raise ValueError("members must be a non-empty sequence of HMM objects.")
        check.non_negative_int("x_len", self.x_len)
        check.positive_int("y_len", self.y_len)

    @property
    def num_symbols(self) -> int:
        return self.members[0].num_symbols

    def sample(self, num: int, *, seed: int, members: Sequence[int] | None = None) -> GenerationData:
        """``num`` examples; the member is drawn from the prior restricted to ``members`` (default: all),
        while the exact conditional always uses the whole family and prior (what a reader of ``x`` knows)."""
        check.positive_int("num", num)
        check.seed(seed)
        C = len(self.members)
        allowed = list(range(C)) if members is None else list(members)
        if not allowed or any(not isinstance(c, int) or not 0 <= c < C for c in allowed):
            raise ValueError(f"members must be a non-empty list of member indices in [0, {C}); got {members!r}.")
        w = torch.ones(C, dtype=torch.float64) if self.weights is None else torch.tensor(self.weights, dtype=torch.float64)
        prior = torch.zeros(C, dtype=torch.float64)
        prior[allowed] = w[allowed]
        g = torch.Generator().manual_seed(seed)
        member = torch.multinomial(prior / prior.sum(), num, replacement=True, generator=g)
        x = torch.zeros(num, self.x_len, dtype=torch.long)
        y = torch.zeros(num, self.y_len, dtype=torch.long)
        for c in member.unique().tolist():
            rows = (member == c).nonzero()[:, 0]
            sub = int(torch.randint(0, 2**31 - 1, (), generator=g))
            m = self.members[c]
            if self.x_len:
                x[rows] = sample(m, len(rows), self.x_len, seed=sub)[0].long().cpu()
            y[rows] = sample(m, len(rows), self.y_len, seed=sub + 1)[0].long().cpu()
        weights = None if self.weights is None else list(self.weights)
        p = restart_conditionals(self.members, x, y, weights).float().cpu()
        return GenerationData(x, y, member, p)


def lm_inputs(cfg: TransformerConfig, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[BOS] x [SEP] y_0 .. y_{T_y-2}`` with ``[SEP] = [BOS]``: ``(B, T_x + T_y + 1)``."""
    bos = torch.full((x.shape[0], 1), cfg.bos_id, dtype=torch.long, device=x.device)
    return torch.cat([bos, x, bos, y[:, :-1]], 1)


def output_positions(x_len: int, y_len: int, batch: int, device: Any = None) -> torch.Tensor:
    """Where :func:`lm_inputs` predicts ``y``: the ``[SEP]`` and ``y_0 .. y_{T_y-2}``, ``(B, T_y)``."""
    return torch.arange(x_len + 1, x_len + 1 + y_len, device=device).expand(batch, -1)


def score(logits: torch.Tensor, data: GenerationData, per_example: bool = False) -> dict[str, Any]:
    """Excess NLL and KL(true || model) in nats per output token, mean and standard error over examples
    (with ``per_example``, also ``kl_per_example``, ``(N,)``, for paired comparisons on the same examples).

    ``logits`` ``(N, T_y, V)`` are the model's, at the positions of :func:`output_positions`.
    """
    if logits.shape != data.p_true.shape:
        raise ValueError(f"logits must have shape {tuple(data.p_true.shape)} (examples, T_y, V); got {tuple(logits.shape)}.")
    logq = logits.float().cpu().log_softmax(-1)
    p = data.p_true
    logp = p.clamp_min(1e-30).log()
    tok = data.y[..., None]
    excess = (logp.gather(2, tok) - logq.gather(2, tok)).squeeze(2).mean(1)
    kl = torch.where(p > 0, p * (logp - logq), torch.zeros_like(p)).sum(2).mean(1)
    n = len(data)
    se = lambda t: float(t.std() / n ** 0.5) if n > 1 else float("nan")  # noqa: E731
    out: dict[str, Any] = {"excess_nll": float(excess.mean()), "excess_nll_se": se(excess),
                           "kl": float(kl.mean()), "kl_se": se(kl)}
    if per_example:
        out["kl_per_example"] = kl
    return out


def distance_to_family(target: HMM, family: Sequence[HMM], *, num: int, seq_len: int, seed: int) -> dict[str, float]:
    r"""How far ``target`` is from what pretraining on ``family`` taught: per token,
    :math:`\frac1T E_{y \sim \text{target}}[\log p_{\text{target}}(y) - \log p_{\text{family}}(y)]`
    (the mixture, uniform prior) and the same against the closest single member (``min_member``)."""
    y = sample(target, num, seq_len, seed=seed)[0].long().cpu()
    empty = torch.zeros(num, 0, dtype=torch.long)

    def rate(members: Sequence[HMM]) -> torch.Tensor:
        p = restart_conditionals(list(members), empty, y)
        return p.gather(2, y[..., None]).squeeze(2).log().mean(1)

    own = rate([target])
    mix = float((own - rate(family)).mean())
    best = min(float((own - rate([m])).mean()) for m in family)
    return {"to_mixture": mix, "to_closest_member": best}
