r"""The memory-augmented HMM (Wei, Xie & Ma 2021): a latent memory read again and again.

A sequence is generated as follows (the book's definition, chapter 5):

1. **memory**: ``N`` cells, each holding a value in ``{0, .., n_values - 1}``; cell ``j`` is drawn
   once per sequence from ``memory_prior[j]`` (cells independent) and never changes;
2. **reader**: a Markov chain ``(J_t, S_t)`` of the cell being read ``J_t`` and a "syntax" state
   ``S_t``, started from ``pi`` and moved by ``A``; it does not depend on the memory;
3. **emission**: ``X_t ~ W[:, (M_{J_t}, S_t)]``: the token depends on the value stored in the cell
   being read and on the syntax state.

Index conventions (one for every function of hmmlib)::

    pair (j, s)    -> j * S + s          rows/columns of A, entries of pi      (num_cells * S)
    column (m, s)  -> m * S + s          columns of W                          (num_values * S)
    pi[j*S+s]              = P(J_0 = j, S_0 = s)
    A[j'*S+s', j*S+s]      = P(J_{t+1}=j', S_{t+1}=s' | J_t=j, S_t=s)        columns sum to 1
    W[x, m*S+s]            = P(X_t = x | M_{J_t} = m, S_t = s)                 columns sum to 1
    memory_prior[j, m]     = P(M_j = m)                                        rows sum to 1

The **equivalent plain HMM** (:func:`to_hmm`) has the hidden state ``(M_1, .., M_N, J, S)``; its
index is ``c * (N * S) + j * S + s`` where ``c = sum_j M_j n_values^(N-1-j)`` numbers the memory
configuration with cell 0 most significant (so for ``N = 1`` it is ``m * S + s``, the layout of
the paper's experiments). Its transition matrix is block-diagonal, ``kron(I, A)``: the memory
never changes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._validate import positive_ints, positive_numbers
from ..hmm.generators import paper_hmm, softmax_temp
from ..hmm.model import HMM, ParamsMixin, as_float_tensor, check_distribution_columns, column_tolerance
from ..hmm.random import make_generator
from ..hmm.sampling import FlatCDF

__all__ = ["MemoryHMM", "MAX_EQUIVALENT_STATES", "to_hmm", "memory_configurations", "equivalent_state_index",
           "marginalise_memory", "marginalise_reader", "sample_memory", "paper_memory_hmm",
           "locatable_memory_hmm", "syntax_blocks"]

#: :func:`to_hmm` refuses equivalent HMMs with more hidden states than this.
MAX_EQUIVALENT_STATES = 4096


@dataclass(frozen=True, eq=False)
class MemoryHMM(ParamsMixin):
    """A memory-augmented HMM with column-stochastic ``pi``, ``A``, ``W`` (see the module docstring).

    Attributes:
        memory_prior: ``(num_cells, num_values)``, row ``j`` is the prior of cell ``j``.
        pi: ``(num_cells * S,)`` start distribution of the reader ``(J_0, S_0)``.
        A: ``(num_cells * S, num_cells * S)`` reader transitions, columns sum to 1.
        W: ``(num_symbols, num_values * S)`` emissions, column ``m * S + s``; columns sum to 1.

    ``S`` (``num_syntax_states``) is inferred from the shapes. Construction validates shapes,
    finiteness, non-negativity and normalisation (tolerance as for :class:`~hmmlib.HMM`) and raises
    ``ValueError`` saying what to fix.
    """

    memory_prior: torch.Tensor
    pi: torch.Tensor
    A: torch.Tensor
    W: torch.Tensor

    def __post_init__(self) -> None:
        prior, pi, A, W = (as_float_tensor(n, getattr(self, n)) for n in ("memory_prior", "pi", "A", "W"))
        if prior.dim() != 2 or prior.numel() == 0:
            raise ValueError(
                f"memory_prior must have shape (num_cells, num_values) with one row per cell; got {tuple(prior.shape)}."
            )
        N, n = prior.shape
        if pi.dim() != 1 or pi.numel() == 0 or pi.numel() % N:
            raise ValueError(
                f"pi must be a vector of shape (num_cells * num_syntax_states,) = ({N} * S,), indexed j * S + s; "
                f"got shape {tuple(pi.shape)}."
            )
        S = pi.numel() // N
        if A.shape != (N * S, N * S):
            raise ValueError(
                f"A must have shape (num_cells * S, num_cells * S) = ({N * S}, {N * S}) to match pi; got {tuple(A.shape)}."
            )
        if W.dim() != 2 or W.shape[0] == 0 or W.shape[1] != n * S:
            raise ValueError(
                f"W must have shape (num_symbols, num_values * S) = (V, {n * S}), column m * S + s for value m and "
                f"syntax state s; got {tuple(W.shape)}."
            )
        devices = {t.device for t in (prior, pi, A, W)}
        if len(devices) > 1:
            raise ValueError(f"memory_prior, pi, A and W are on different devices {sorted(map(str, devices))}; move them to one.")
        dtype = torch.promote_types(torch.promote_types(prior.dtype, pi.dtype), torch.promote_types(A.dtype, W.dtype))
        tol = max(column_tolerance(t.dtype) for t in (prior, pi, A, W))
        prior, pi, A, W = (t.to(dtype).contiguous() for t in (prior, pi, A, W))
        # rows of the prior are distributions: check its transpose's columns
        try:
            check_distribution_columns("memory_prior.T", prior.T, "memory_prior[j, m] = P(M_j = m)", tol)
        except ValueError as e:
            raise ValueError(f"{e} (each ROW of memory_prior, one per cell, must sum to 1)") from None
        check_distribution_columns("pi", pi, "", tol)
        check_distribution_columns("A", A, "A[j'*S+s', j*S+s] = P(J',S' | J=j, S=s)", tol)
        check_distribution_columns("W", W, "W[x, m*S+s] = P(X=x | M_J=m, S=s)", tol)
        for name, t in (("memory_prior", prior), ("pi", pi), ("A", A), ("W", W)):
            object.__setattr__(self, name, t)

    # -- sizes
    @property
    def num_cells(self) -> int:
        return self.memory_prior.shape[0]

    @property
    def num_values(self) -> int:
        return self.memory_prior.shape[1]

    @property
    def num_syntax_states(self) -> int:
        return self.pi.numel() // self.num_cells

    @property
    def num_reader_states(self) -> int:
        """``num_cells * num_syntax_states``: the states of the chain ``(J, S)``."""
        return self.pi.numel()

    @property
    def num_total_states(self) -> int:
        """Hidden states of the equivalent plain HMM: ``num_values ** num_cells * num_cells * S``."""
        return self.num_values ** self.num_cells * self.num_reader_states

    def emissions_of_syntax_state(self, s: int) -> torch.Tensor:
        """``W_s = [W[:, m * S + s]]_m`` ``(num_symbols, num_values)``: what each value emits in syntax state ``s``."""
        S = self.num_syntax_states
        if not isinstance(s, int) or not 0 <= s < S:
            raise ValueError(f"syntax state must be an int in [0, {S}); got {s!r}.")
        return self.W[:, s::S]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "MemoryHMM":
        """A copy on another device and/or dtype (float32 or float64), values unchanged (not re-validated)."""
        if dtype is not None and dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64; got {dtype}.")
        return MemoryHMM.trusted(*(getattr(self, n).to(device=device, dtype=dtype)
                                   for n in ("memory_prior", "pi", "A", "W")))

    @classmethod
    def trusted(cls, memory_prior: torch.Tensor, prior: torch.Tensor, A: torch.Tensor, W: torch.Tensor) -> "MemoryHMM":
        """A memory HMM from parameters that are already valid (e.g. a validated one's on another device),
        without re-validation. Use the constructor for anything else."""
        mem = object.__new__(cls)
        for name, t in (("memory_prior", memory_prior), ("pi", prior), ("A", A), ("W", W)):
            object.__setattr__(mem, name, t.contiguous())
        return mem

    def __repr__(self) -> str:
        return (f"MemoryHMM(num_cells={self.num_cells}, num_values={self.num_values}, "
                f"num_syntax_states={self.num_syntax_states}, num_symbols={self.num_symbols}, "
                f"num_total_states={self.num_total_states}, dtype={self.dtype}, device={self.device})")


def check_memory_hmm(mem: Any) -> None:
    if not isinstance(mem, MemoryHMM):
        raise ValueError(f"expected a MemoryHMM; got {type(mem).__name__}.")


# --------------------------------------------------------------------------- the equivalent plain HMM
def memory_configurations(num_cells: int, num_values: int, device: torch.device | str | None = None) -> torch.Tensor:
    """All memory contents ``(num_values ** num_cells, num_cells)`` int64; row ``c`` is configuration ``c``
    (cell 0 most significant digit, base ``num_values``)."""
    c = torch.arange(num_values ** num_cells, device=device)
    powers = num_values ** torch.arange(num_cells - 1, -1, -1, device=device)
    return (c[:, None] // powers) % num_values


def equivalent_state_index(mem: MemoryHMM, memory: torch.Tensor, cell: torch.Tensor, syntax: torch.Tensor) -> torch.Tensor:
    """Index in :func:`to_hmm`'s state space of ``(memory (..., N), J, S)``: ``c * N S + j S + s``."""
    N, n, S = mem.num_cells, mem.num_values, mem.num_syntax_states
    powers = n ** torch.arange(N - 1, -1, -1, device=memory.device)
    c = (memory * powers).sum(-1)
    return c * (N * S) + cell * S + syntax


def to_hmm(mem: MemoryHMM, max_states: int = MAX_EQUIVALENT_STATES) -> HMM:
    r"""The equivalent plain :class:`~hmmlib.HMM` over ``(M_1, .., M_N, J, S)`` (module docstring).

    ``pi_big = prior_config (x) pi`` with ``prior_config[c] = prod_j memory_prior[j, M_j(c)]``,
    ``A_big = I (x) A`` (block-diagonal: the memory never changes) and
    ``W_big[:, c N S + j S + s] = W[:, M_j(c) S + s]``. Both models give every token sequence the
    same probability, so exact inference in the plain HMM is exact inference in the memory HMM.

    Raises:
        ValueError: if the plain HMM would have more than ``max_states`` states.
    """
    check_memory_hmm(mem)
    N, n, S, K = mem.num_cells, mem.num_values, mem.num_syntax_states, mem.num_total_states
    if K > max_states:
        raise ValueError(
            f"the equivalent HMM would have {n}^{N} * {N} * {S} = {K} hidden states, more than max_states={max_states}; "
            "use fewer cells or values (or raise max_states if you have the memory: A alone is K^2 numbers)."
        )
    configs = memory_configurations(N, n, mem.device)                       # (C, N)
    C = configs.shape[0]
    prior_config = mem.memory_prior[torch.arange(N, device=mem.device), configs].prod(1)  # (C,)
    pi = (prior_config[:, None] * mem.pi[None, :]).reshape(-1)
    A = torch.kron(torch.eye(C, dtype=mem.dtype, device=mem.device), mem.A)
    cells = torch.arange(N, device=mem.device).repeat_interleave(S)          # j of pair j*S+s
    syn = torch.arange(S, device=mem.device).repeat(N)                       # s of pair j*S+s
    cols = configs[:, cells] * S + syn[None, :]                              # (C, N S): column of W
    W = mem.W[:, cols.reshape(-1)]
    return HMM.trusted(pi, A, W)  # the parts are stochastic by construction: no re-validation


def marginalise_memory(mem: MemoryHMM, state_probs: torch.Tensor) -> torch.Tensor:
    """``P(M_j = m | .)`` ``(..., N, num_values)`` from a distribution over :func:`to_hmm`'s states ``(..., K)``."""
    N, n = mem.num_cells, mem.num_values
    if state_probs.shape[-1] != mem.num_total_states:
        raise ValueError(f"expected (..., {mem.num_total_states}) probabilities over the equivalent HMM's states; "
                         f"got {tuple(state_probs.shape)}.")
    lead = state_probs.shape[:-1]
    config = state_probs.reshape(*lead, *([n] * N), mem.num_reader_states).sum(-1)   # (..., n, .., n)
    d = len(lead)
    out = [config.sum(dim=tuple(d + i for i in range(N) if i != j)) if N > 1 else config for j in range(N)]
    return torch.stack(out, -2)


def marginalise_reader(mem: MemoryHMM, state_probs: torch.Tensor) -> torch.Tensor:
    """``P(J = j, S = s | .)`` ``(..., N * S)`` (index ``j S + s``) from probabilities over :func:`to_hmm`'s states."""
    if state_probs.shape[-1] != mem.num_total_states:
        raise ValueError(f"expected (..., {mem.num_total_states}) probabilities; got {tuple(state_probs.shape)}.")
    return state_probs.reshape(*state_probs.shape[:-1], -1, mem.num_reader_states).sum(-2)


# --------------------------------------------------------------------------- sampling
def sample_memory(
    mem: MemoryHMM,
    num_seqs: int,
    seq_len: int,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw ``num_seqs`` sequences of length ``seq_len`` on the memory HMM's device, all at once.

    ``M_j ~ memory_prior[j]`` once per sequence; ``(J_0, S_0) ~ pi``; ``(J_{t+1}, S_{t+1}) ~ A[:, (J_t, S_t)]``;
    ``X_t ~ W[:, M_{J_t} * S + S_t]``. Same inverse-CDF draws as :func:`hmmlib.sample`; one seed,
    one result.

    Returns:
        ``(tokens, memory, cells, syntax)``: int64 ``(B, T)``, ``(B, N)``, ``(B, T)``, ``(B, T)``.
    """
    check_memory_hmm(mem)
    for name, v in (("num_seqs", num_seqs), ("seq_len", seq_len)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer; got {v!r}.")
    dev, N, S = mem.device, mem.num_cells, mem.num_syntax_states
    g = make_generator(seed, generator, dev)
    f64 = dict(generator=g, device=dev, dtype=torch.float64)
    cells_idx = torch.arange(N, device=dev).expand(num_seqs, N)
    memory = FlatCDF(mem.memory_prior.T).draw(cells_idx, torch.rand(num_seqs, N, **f64))
    start, trans = FlatCDF(mem.pi.unsqueeze(1)), FlatCDF(mem.A)
    u = torch.rand(seq_len, num_seqs, **f64)
    pair = torch.empty(seq_len, num_seqs, dtype=torch.int64, device=dev)
    pair[0] = start.draw(torch.zeros(num_seqs, dtype=torch.int64, device=dev), u[0])
    for t in range(1, seq_len):
        pair[t] = trans.draw(pair[t - 1], u[t])
    pair = pair.T.contiguous()
    cells, syntax = pair // S, pair % S
    values = memory.gather(1, cells)                                          # M_{J_t}
    tokens = FlatCDF(mem.W).draw(values * S + syntax, torch.rand(num_seqs, seq_len, **f64))
    return tokens, memory, cells, syntax


# --------------------------------------------------------------------------- constructors
def paper_memory_hmm(
    num_values: int,
    num_syntax: int = 4,
    num_symbols: int = 10,
    *,
    start_temp: float = 10.0,
    transition_temp: float = 0.01,
    emission_temp: float = 0.01,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> MemoryHMM:
    r"""The paper's memory experiment (the authors' ``src/generate_data_memory.py``): one cell, ``num_syntax`` syntax states.

    * reader: ``pi`` and the ``num_syntax x num_syntax`` block ``A`` are those of
      :func:`hmmlib.paper_hmm` ``(num_syntax, num_perms = num_syntax * num_values)``: a mixture of
      ``4 n_mem`` random permutation matrices at ``transition_temp``, and a start at ``start_temp``.
      The equivalent HMM's transition is this block copied for every value (block-diagonal);
    * emissions: each pair ``(m, s)`` gets its own column ``softmax((U - 0.5) / emission_temp)``;
    * the memory prior is ``softmax((U - 0.5) / start_temp)`` over values.

    One deviation, documented in chapter 5: the paper draws one near-uniform start over all
    ``4 n_mem`` pairs ``(m, s)``; here the value and the syntax start are drawn separately (both
    near-uniform at temperature 10), so that the memory is independent of the reader, as the
    model's definition requires. The vanilla comparison of the paper is just
    :func:`hmmlib.paper_hmm` ``(4 n_mem)``.
    """
    positive_ints(num_values=num_values, num_syntax=num_syntax, num_symbols=num_symbols)
    positive_numbers(start_temp=start_temp, transition_temp=transition_temp, emission_temp=emission_temp)
    reader = paper_hmm(num_syntax, num_symbols, start_temp=start_temp, transition_temp=transition_temp,
                       num_perms=num_syntax * num_values, seed=seed)
    rng = np.random.default_rng([seed, 1])  # an independent stream for the memory's parts
    W = softmax_temp(rng.random((num_symbols, num_values * num_syntax)), emission_temp, axis=0)
    prior = softmax_temp(rng.random((1, num_values)), start_temp, axis=1)
    mem = MemoryHMM(torch.as_tensor(prior), reader.pi, reader.A, torch.as_tensor(W))
    return mem.to(device=device, dtype=dtype)


def syntax_blocks(num_syntax: int, num_symbols: int) -> list[list[int]]:
    """Split the symbols ``0 .. V-1`` into ``num_syntax`` disjoint consecutive blocks (sizes differ by at most 1,
    the larger ones first)."""
    if num_symbols < num_syntax:
        raise ValueError(f"need at least one symbol per syntax state: num_symbols={num_symbols} < num_syntax={num_syntax}.")
    sizes = [num_symbols // num_syntax + (i < num_symbols % num_syntax) for i in range(num_syntax)]
    starts = np.cumsum([0] + sizes)
    return [list(range(int(starts[i]), int(starts[i + 1]))) for i in range(num_syntax)]


def locatable_memory_hmm(
    num_cells: int = 2,
    num_values: int = 3,
    num_syntax: int = 3,
    num_symbols: int = 10,
    *,
    task_cell: int = 0,
    task_syntax: int = 0,
    peak: float = 0.7,
    memory_prior: Any = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> MemoryHMM:
    r"""A memory HMM built to satisfy chapter 5's theorem exactly.

    * syntax: the deterministic cycle ``s -> s + 1 mod S``, started uniformly;
    * reading: syntax state ``task_syntax`` (``s*``) always reads cell ``task_cell`` (``j*``); every
      other syntax state reads a uniformly random cell, independently at each step, so
      ``A[j' S + s', j S + s] = 1[s' = s + 1 mod S] * P(J = j' | S = s')``;
    * emissions: syntax state ``s`` emits only symbols of its own block (:func:`syntax_blocks`);
      value ``m`` puts ``peak`` on the ``m``-th symbol of the block (cyclically) and spreads the rest
      uniformly over the block. The neighbours of a position reveal its syntax state (locatability)
      and, when ``num_values`` is at most the size of ``s*``'s block, the columns ``W_{s*}`` are
      linearly independent (non-degeneracy) for any ``peak`` above ``1 / block size``.

    The equivalent HMM has ``num_values ** num_cells * num_cells * num_syntax`` states (54 by
    default), far more than the 10 symbols.
    """
    positive_ints(num_cells=num_cells, num_values=num_values, num_syntax=num_syntax, num_symbols=num_symbols)
    for name, v, hi in (("task_cell", task_cell, num_cells), ("task_syntax", task_syntax, num_syntax)):
        if not isinstance(v, int) or not 0 <= v < hi:
            raise ValueError(f"{name} must be an int in [0, {hi}); got {v!r}.")
    if not (isinstance(peak, (int, float)) and 0 < peak <= 1):
        raise ValueError(f"peak must be in (0, 1]; got {peak!r}.")
    N, n, S, V = num_cells, num_values, num_syntax, num_symbols
    blocks = syntax_blocks(S, V)
    read = np.full((S, N), 1.0 / N)                 # read[s, j] = P(J = j | S = s)
    read[task_syntax] = 0.0
    read[task_syntax, task_cell] = 1.0
    A = np.zeros((N * S, N * S))
    for s in range(S):
        s_next = (s + 1) % S
        for j in range(N):
            A[np.arange(N) * S + s_next, j * S + s] = read[s_next]
    pi = np.array([read[s, j] / S for j in range(N) for s in range(S)])
    W = np.zeros((V, n * S))
    for s, block in enumerate(blocks):
        for m in range(n):
            W[block, m * S + s] = (1 - peak) / len(block)
            W[block[m % len(block)], m * S + s] += peak
    prior = np.full((N, n), 1.0 / n) if memory_prior is None else memory_prior
    mem = MemoryHMM(torch.as_tensor(prior, dtype=torch.float64), torch.as_tensor(pi), torch.as_tensor(A),
                    torch.as_tensor(W))
    return mem.to(device=device, dtype=dtype)
