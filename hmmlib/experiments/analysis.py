"""Small experiment runners for chapter 1: each returns numbers, the notebook plots them."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..hmm.generators import paper_hmm
from ..hmm.model import HMM
from ..hmm.inference import entropy, next_token_conditionals, masked_token_conditionals, posterior_h0
from ..hmm.sampling import sample

__all__ = ["H0Sharpening", "h0_sharpening", "generator_statistics", "bayes_losses"]


@dataclass(frozen=True)
class H0Sharpening:
    """How ``P(H_0 | x_{1:L})`` concentrates as the input length ``L`` grows.

    Attributes:
        lengths: the input lengths ``L``.
        entropy: mean entropy (nats) of ``P(H_0 | x_{1:L})`` over the sampled examples.
        accuracy: how often ``argmax_h P(H_0 = h | x_{1:L})`` is the true hidden ``H_0``.
        prior_entropy: entropy of ``pi`` (the ``L = 0`` value).
    """

    lengths: tuple[int, ...]
    entropy: torch.Tensor
    accuracy: torch.Tensor
    prior_entropy: float


def h0_sharpening(hmm: HMM, lengths: tuple[int, ...], num_seqs: int, *, seed: int) -> H0Sharpening:
    """Sample downstream examples ``x_0 .. x_Lmax`` and measure the posterior of the hidden ``H_0``
    from the first ``L`` visible tokens ``x_{1:L}``, for every ``L`` in ``lengths``."""
    L_max = max(lengths)
    tokens, states = sample(hmm, num_seqs, L_max + 1, seed=seed)
    h0 = states[:, 0]
    ent, acc = [], []
    for L in lengths:
        p = posterior_h0(hmm, tokens[:, 1 : L + 1])
        ent.append(entropy(p).mean())
        acc.append((p.argmax(1) == h0).double().mean())
    return H0Sharpening(tuple(lengths), torch.stack(ent), torch.stack(acc), float(entropy(hmm.pi)))


def generator_statistics(num_states: int, temps: list[float], *, which: str, num_symbols: int = 10,
                         seeds: range = range(10)) -> torch.Tensor:
    """Mean over seeds of the largest probability in each column of ``W`` (``which="emission"``)
    or of ``A`` (``which="transition"``), for each temperature in ``temps``: 1 is deterministic."""
    if which not in ("emission", "transition"):
        raise ValueError(f"which must be 'emission' or 'transition'; got {which!r}.")
    out = []
    for temp in temps:
        vals = []
        for s in seeds:
            kw = {"emission_temp": temp} if which == "emission" else {"transition_temp": temp}
            h = paper_hmm(num_states, num_symbols, seed=s, **kw)
            M = h.W if which == "emission" else h.A
            vals.append(M.max(0).values.mean())
        out.append(torch.stack(vals).mean())
    return torch.stack(out)


def bayes_losses(hmm: HMM, tokens: torch.Tensor) -> dict[str, float]:
    """Mean cross-entropy (nats per token) of the exact predictors on ``tokens``:

    * ``unigram``: the stationary token distribution ``W s``, ignoring context;
    * ``causal``: ``P(X_t | x_{0:t-1})``, the best possible next-token model;
    * ``masked``: ``P(X_t | x_{-t})``, the best possible masked-token model.

    Each is the Bayes-optimal loss of its objective (up to sampling noise).
    """
    idx = tokens.unsqueeze(-1)
    unigram = (hmm.W @ hmm.stationary()).clamp_min(1e-300)
    causal = next_token_conditionals(hmm, tokens).gather(-1, idx).squeeze(-1)
    masked = masked_token_conditionals(hmm, tokens).gather(-1, idx).squeeze(-1)
    return {
        "unigram": float(-unigram.log()[tokens].mean()),
        "causal": float(-causal.log().mean()),
        "masked": float(-masked.log().mean()),
    }
