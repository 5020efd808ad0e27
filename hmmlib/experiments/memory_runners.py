r"""Experiment runners for chapter 5 (the memory-augmented HMM): each returns numbers for the notebook.

* :func:`theorem_head` and :func:`check_theorem`: the attention head of chapter 5's theorem, and every
  quantity of its proof computed exactly on a batch of sequences;
* :func:`memory_sharpening` and :func:`token_mutual_information`: why the memory is a long-range
  dependence;
* :func:`memory_vs_vanilla`: the experiment of the paper's Fig. B3 (the authors' ``scripts/exp2_*``) at a preset's
  sizes, on the ideal model and on trained masked LMs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..memory.attention_head import AttentionHeadTuner, SingleQueryAttentionHead, set_theorem_head
from ..hmm.generators import paper_hmm
from ..hmm.model import HMM
from ..hmm.inference import entropy, forward
from ..memory.model import MemoryHMM, marginalise_memory, marginalise_reader, paper_memory_hmm, sample_memory, to_hmm
from ..memory.inference import masked_state_posteriors, memory_posterior
from ..memory.tasks import memory_task_and_splits
from .presets import Preset
from .runners import pretrained_for
from ..adapt.api import tune_and_evaluate
from ..adapt.configs import HeadConfig
from ..adapt.tasks import paper_task_and_splits

__all__ = ["PAPER_FIG_B3", "PAPER_FIG_A2", "theorem_head", "TheoremCheck", "check_theorem", "MemorySharpening", "memory_sharpening",
           "token_mutual_information", "MemoryRow", "memory_vs_vanilla"]

#: The paper's Fig. B3 (``figures/memory_vs_vanilla.pdf`` of ``sangmichaelxie/pretraining_analysis``, read off
#: the plot), total hidden states -> (memory HMM + attention head,
#: vanilla HMM + linear head) mean test accuracy. The vanilla points at 8 and 12 are exp. 1's (20 seeds).
PAPER_FIG_B3: dict[int, tuple[float, float]] = {8: (1.000, 0.925), 12: (1.000, 0.653), 20: (1.000, 0.726),
                                                28: (0.989, 0.732)}
#: The paper's figure set A (``memory_plot.pdf``, percent scale); see ``PAPER_FIG_A1`` on the two sets.
PAPER_FIG_A2: dict[int, tuple[float, float]] = {8: (0.998, 0.832), 12: (0.999, 0.807), 20: (0.999, 0.644),
                                                28: (0.978, 0.662)}


# --------------------------------------------------------------------------- the theorem
def theorem_head(mem: MemoryHMM, mu: Any, syntax: int) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The key :math:`\kappa` and value :math:`b` of the theorem's head for syntax state :math:`s^\star`:
    :math:`\kappa` is the indicator of the symbols :math:`s^\star` can emit, and
    :math:`b = (W_{s^\star}^+)^\top\mu`, so :math:`b^\top W_{s^\star} = \mu^\top` when :math:`W_{s^\star}` has
    linearly independent columns."""
    W_s = mem.emissions_of_syntax_state(syntax)
    mu = torch.as_tensor(mu, dtype=mem.dtype, device=mem.device).reshape(-1)
    if mu.numel() != mem.num_values:
        raise ValueError(f"mu must have num_values={mem.num_values} entries; got {mu.numel()}.")
    kappa = (W_s.sum(1) > 0).to(mem.dtype)
    return kappa, torch.linalg.pinv(W_s).T @ mu


@dataclass(frozen=True)
class TheoremCheck:
    r"""Every quantity of the theorem's proof on a batch (``B`` sequences of length ``T``).

    Attributes:
        located: ``(B, T)`` bool, :math:`t \in T^\star` (:math:`P(S_t = s^\star\mid x_{-t}) = 1`).
        key: ``(B, T)`` :math:`\kappa^\top g_t`; delta: the measured gap :math:`1 - \max_{t\notin T^\star}\kappa^\top g_t`.
        identity_error: :math:`\max_{t\in T^\star}|b^\top g_t - \mu^\top q_{-t}|`.
        attention: ``(B, T)`` the head's weights; outside: ``(B,)`` their mass outside :math:`T^\star`.
        leakage_bound: ``(B,)`` :math:`(T - |T^\star|)e^{-\lambda\delta}/|T^\star|`, which bounds outside / (1 - outside).
        margin: ``(B,)`` :math:`|\mu^\top q(x)|`; bound: ``(B,)`` the theorem's right-hand side.
        score: ``(B,)`` the head's score; y: ``(B,)`` labels; correct: ``(B,)`` sign agreement.
    """

    located: torch.Tensor
    key: torch.Tensor
    delta: float
    identity_error: float
    attention: torch.Tensor
    outside: torch.Tensor
    leakage_bound: torch.Tensor
    margin: torch.Tensor
    bound: torch.Tensor
    score: torch.Tensor
    y: torch.Tensor
    correct: torch.Tensor


def check_theorem(mem: MemoryHMM, mu: Any, x: Any, *, cell: int, syntax: int, scale: float) -> TheoremCheck:
    r"""Build the theorem's head (:func:`theorem_head`, query scale :math:`\lambda` = ``scale``) and compute,
    exactly and in the memory HMM's dtype, every quantity its proof uses on the sequences ``x`` ``(B, T)``."""
    hmm = to_hmm(mem)
    mu = torch.as_tensor(mu, dtype=mem.dtype, device=mem.device).reshape(-1)
    post = masked_state_posteriors(hmm, x)                                   # P(H_t | x_{-t})
    g = post @ hmm.W.T                                                       # g_t
    S = mem.num_syntax_states
    reader = marginalise_reader(mem, post).view(*post.shape[:2], mem.num_cells, S)
    located = (reader[..., syntax].sum(-1) - 1).abs() < 1e-12
    if not located.any(1).all():
        raise ValueError("some sequence has no position where the syntax state is surely s*; use longer sequences.")
    q_minus = marginalise_memory(mem, post)[:, :, cell]                      # P(M_j* | x_{-t})
    q = memory_posterior(mem, x, hmm)[:, cell]
    kappa, b = theorem_head(mem, mu, syntax)
    key, val = g @ kappa, g @ b
    delta = float(1 - key[~located].max()) if (~located).any() else 1.0
    identity_error = float((val - q_minus @ mu)[located].abs().max())
    head = set_theorem_head(SingleQueryAttentionHead(mem.num_symbols).to(mem.dtype), kappa.cpu(), scale, b.cpu())
    head = head.to(mem.device)
    with torch.no_grad():
        attention = head.attention(g)[:, 0]
        logits = head(g)
    score = logits[:, 1] - logits[:, 0]
    n_in = located.sum(1).to(mem.dtype)
    T = g.shape[1]
    leakage_bound = (T - n_in) * math.exp(-scale * delta) / n_in
    spread = ((q_minus - q[:, None]).abs().sum(-1) * located).amax(1)       # max_{T*} ||q_{-t} - q||_1
    off = (val.abs() * ~located).amax(1)
    bound = mu.abs().max() * spread + leakage_bound * off
    margin = (q @ mu).abs()
    y = (q @ mu >= 0).long()
    return TheoremCheck(located, key, delta, identity_error, attention, (attention * ~located).sum(1), leakage_bound,
                        margin, bound, score, y, ((score > 0).long() == y))


# --------------------------------------------------------------------------- long-range dependence
@dataclass(frozen=True)
class MemorySharpening:
    r"""How :math:`P(M_j \mid x_{0:t-1})` concentrates with the prefix length ``t``.

    Attributes:
        lengths: prefix lengths; entropy: mean entropy (nats) of the posterior of cell ``cell``;
        accuracy: how often its argmax is the true value; prior_entropy: the ``t = 0`` entropy.
    """

    lengths: tuple[int, ...]
    entropy: torch.Tensor
    accuracy: torch.Tensor
    prior_entropy: float


def memory_sharpening(mem: MemoryHMM, lengths: tuple[int, ...], num_seqs: int, *, seed: int,
                      cell: int = 0) -> MemorySharpening:
    """One forward pass gives the memory posterior after every prefix (the filtered state's memory marginal)."""
    x, memory, _, _ = sample_memory(mem, num_seqs, max(lengths), seed=seed)
    alpha = forward(to_hmm(mem), x).alpha                                    # (B, T, K)
    q = marginalise_memory(mem, alpha[:, [t - 1 for t in lengths]])[:, :, cell]  # (B, L, n)
    acc = (q.argmax(-1) == memory[:, cell, None]).double().mean(0)
    return MemorySharpening(tuple(lengths), entropy(q).mean(0), acc, float(entropy(mem.memory_prior[cell])))


def token_mutual_information(hmm: HMM, distances: list[int]) -> torch.Tensor:
    r"""Exact :math:`I(X_0; X_d)` in nats for each distance ``d``, with :math:`H_0\sim\pi`:
    :math:`P(X_0 = a, X_d = b) = [W\,\mathrm{diag}(\pi)\,(A^d)^\top W^\top]_{ab}`."""
    W, A, pi = (t.double() for t in (hmm.W, hmm.A, hmm.pi))
    out = []
    for d in distances:
        J = W @ torch.diag(pi) @ torch.linalg.matrix_power(A, d).T @ W.T
        pa, pb = J.sum(1, keepdim=True), J.sum(0, keepdim=True)
        out.append(torch.where(J > 0, J * (J / (pa * pb)).log(), torch.zeros_like(J)).sum().clamp_min(0.0))
    return torch.stack(out)


# --------------------------------------------------------------------------- Fig. B3
@dataclass(frozen=True)
class MemoryRow:
    """One size and seed of :func:`memory_vs_vanilla` (``model`` is ``"ideal"`` or ``"trained"``)."""

    num_values: int
    num_states: int
    seed: int
    model: str
    memory_accuracy: float
    memory_majority: float
    vanilla_accuracy: float
    vanilla_majority: float
    attention_parameters: int
    linear_parameters: int


def memory_vs_vanilla(preset: Preset, num_values: int, seed: int = 0, *, trained: bool = False,
                      device: torch.device | str | None = None, progress: bool = False) -> MemoryRow:
    r"""Memory HMM + attention head against vanilla HMM (``paper_hmm(4 n_mem)``) + linear head at position 0.

    The attention head is trained (AdamW, ``preset.memory``'s recipe); the linear head is logistic
    regression on frozen features, solved to convergence (:class:`~hmmlib.adapt.HeadConfig`'s default,
    penalty chosen on the validation split).

    Ideal model: the attention head reads the exact :math:`P(X_t\mid x_{-t})`, the linear head the exact
    :math:`G(x) = W P(H_0\mid x)`. Trained model (``trained=True``): one masked LM pretrained on each HMM
    (``preset.pretrain``, cached), the attention head on its outputs at every position of
    ``[MASK]`` and the first tokens, and the linear head at the ``[MASK]``, both reading
    ``preset.memory.head.max_positions`` positions (labels use all ``seq_len`` tokens, as in the paper).
    """
    sz = preset.memory
    mem = paper_memory_hmm(num_values, sz.num_syntax, sz.num_symbols, seed=seed)
    van = paper_hmm(sz.num_syntax * num_values, sz.num_symbols, seed=seed)
    _, msplits, _ = memory_task_and_splits(mem, seed=seed, sizes=sz.split_sizes, seq_len=sz.seq_len,
                                           with_conditionals=not trained)
    _, vsplits, _ = paper_task_and_splits(van, seed=seed, sizes=sz.split_sizes, seq_len=sz.seq_len)
    cfg = sz.tune_config(seed=seed)
    if not trained:
        att, lin_model = AttentionHeadTuner(mem, cfg), van
    else:
        models = [pretrained_for(h, preset, device=device, progress=progress).model for h in (to_hmm(mem), van)]
        att, lin_model = AttentionHeadTuner(models[0], cfg), models[1]
    att.fit(msplits["train"])
    lin = tune_and_evaluate(lin_model, HeadConfig(max_positions=cfg.max_positions if trained else None), vsplits)
    m, v = att.evaluate(msplits["test"]), lin["test"]
    return MemoryRow(num_values, sz.num_syntax * num_values, seed, "trained" if trained else "ideal",
                     m["accuracy"], m["majority_rate"], v["accuracy"], v["majority_rate"],
                     att.num_trainable_parameters, lin["parameters"]["trainable"])
