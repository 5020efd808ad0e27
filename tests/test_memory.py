"""The memory-augmented HMM (hmmlib.memory, memory_inference, memory_tasks): sampling, the equivalent plain
HMM, exact inference against brute force, constructors, tasks and input validation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import hmmlib
from hmmlib import bruteforce
from hmmlib.memory.model import (
    MemoryHMM,
    equivalent_state_index,
    locatable_memory_hmm,
    marginalise_memory,
    marginalise_reader,
    memory_configurations,
    paper_memory_hmm,
    sample_memory,
    syntax_blocks,
    to_hmm,
)
from hmmlib.memory.inference import (
    brute_memory_joint,
    brute_memory_masked_conditionals,
    brute_memory_posterior,
    masked_state_posteriors,
    memory_masked_conditionals,
    memory_masked_posteriors,
    memory_posterior,
)
from hmmlib.memory.tasks import make_memory_dataset, make_memory_splits, memory_task_and_splits
from hmmlib.adapt.tasks import paper_task, task_from_mu

from conftest import binomial_tolerance

F64 = torch.float64


def random_memory_hmm(num_cells: int, num_values: int, num_syntax: int, num_symbols: int, seed: int,
                      concentration: float = 1.0, dtype=F64) -> MemoryHMM:
    """Dirichlet parts: a generic memory HMM (no structure for bugs to hide behind)."""
    rng = np.random.default_rng(seed)
    R = num_cells * num_syntax

    def cols(rows: int, n: int) -> np.ndarray:
        return rng.dirichlet(np.full(rows, concentration), size=n).T

    return MemoryHMM(torch.as_tensor(cols(num_values, num_cells).T), torch.as_tensor(cols(R, 1)[:, 0]),
                     torch.as_tensor(cols(R, R)), torch.as_tensor(cols(num_symbols, num_values * num_syntax))).to(dtype=dtype)


TINY = [  # (N, n, S, V, seed): reader paths (N S)^T times n^N memories stay small for T <= 4
    (2, 2, 2, 3, 0),
    (2, 3, 1, 4, 1),
    (1, 3, 2, 3, 2),
    (2, 2, 2, 2, 3),
]


# --------------------------------------------------------------------------- sampling
def test_sampling_statistics():
    N, n, S, B, T = 2, 3, 2, 20000, 6
    base = random_memory_hmm(N, n, S, 4, seed=5)
    # W = identity: token m*S+s reveals the value read and the syntax state exactly
    mem = MemoryHMM(base.memory_prior, base.pi, base.A, torch.eye(n * S, dtype=F64))
    x, memory, cells, syntax = sample_memory(mem, B, T, seed=0)
    assert x.shape == cells.shape == syntax.shape == (B, T) and memory.shape == (B, N)
    # memory values follow the prior, cell by cell
    for j in range(N):
        freq = torch.bincount(memory[:, j], minlength=n).double() / B
        assert ((freq - mem.memory_prior[j]).abs() <= binomial_tolerance(mem.memory_prior[j], B)).all()
    # the value emitted is the value of the cell read, at every position: the memory is fixed over time
    values, syn = x // S, x % S
    assert torch.equal(syn, syntax)
    assert torch.equal(values, memory.gather(1, cells))
    # (J_0, S_0) ~ pi and (J, S) moves by A
    pair = cells * S + syntax
    freq0 = torch.bincount(pair[:, 0], minlength=N * S).double() / B
    assert ((freq0 - mem.pi).abs() <= binomial_tolerance(mem.pi, B)).all()
    prev, nxt = pair[:, :-1].reshape(-1), pair[:, 1:].reshape(-1)
    for h in range(N * S):
        sel = nxt[prev == h]
        freq = torch.bincount(sel, minlength=N * S).double() / sel.numel()
        assert ((freq - mem.A[:, h]).abs() <= binomial_tolerance(mem.A[:, h], sel.numel())).all()


def test_emissions_follow_W():
    mem = random_memory_hmm(2, 2, 2, 5, seed=6)
    x, memory, cells, syntax = sample_memory(mem, 20000, 4, seed=1)
    col = (memory.gather(1, cells) * mem.num_syntax_states + syntax).reshape(-1)
    x = x.reshape(-1)
    for c in range(mem.W.shape[1]):
        sel = x[col == c]
        freq = torch.bincount(sel, minlength=mem.num_symbols).double() / sel.numel()
        assert ((freq - mem.W[:, c]).abs() <= binomial_tolerance(mem.W[:, c], sel.numel())).all()


def test_seeds_reproduce():
    mem = random_memory_hmm(2, 3, 2, 4, seed=0)
    a, b, c = (sample_memory(mem, 50, 10, seed=s) for s in (3, 3, 4))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], c[0])
    g = torch.Generator().manual_seed(3)
    assert all(torch.equal(u, v) for u, v in zip(a, sample_memory(mem, 50, 10, generator=g)))
    p, q = paper_memory_hmm(3, seed=7), paper_memory_hmm(3, seed=7)
    assert all(torch.equal(getattr(p, k), getattr(q, k)) for k in ("memory_prior", "pi", "A", "W"))
    assert not torch.equal(p.W, paper_memory_hmm(3, seed=8).W)


# --------------------------------------------------------------------------- the equivalent HMM
@pytest.mark.parametrize("N,n,S,V,seed", TINY)
def test_to_hmm_is_a_valid_equivalent_hmm(N, n, S, V, seed):
    mem = random_memory_hmm(N, n, S, V, seed)
    big = to_hmm(mem)
    hmmlib.HMM(big.pi, big.A, big.W)  # stochastic: passes the HMM's validation
    assert big.num_states == mem.num_total_states == n ** N * N * S
    # the memory never changes: no transition between different memory contents
    C, R = n ** N, N * S
    blocks = big.A.reshape(C, R, C, R)
    for c in range(C):
        for d in range(C):
            if c != d:
                assert blocks[c, :, d].abs().max() == 0
            else:
                assert torch.equal(blocks[c, :, c], mem.A)
    # every sequence has the same probability under both models
    x, *_ = sample_memory(mem, 3, 4, seed=seed)
    for b in range(3):
        p_mem = brute_memory_joint(mem, x[b])[0].sum()
        assert abs(bruteforce.brute_log_likelihood(big, x[b]) - float(p_mem.log())) < 1e-10


def test_state_index_layout():
    mem = random_memory_hmm(2, 3, 2, 5, seed=4)
    big = to_hmm(mem)
    x, memory, cells, syntax = sample_memory(mem, 200, 5, seed=0)
    idx = equivalent_state_index(mem, memory[:, None, :].expand(-1, 5, -1), cells, syntax)
    S = mem.num_syntax_states
    assert torch.equal(big.W[:, idx.reshape(-1)], mem.W[:, (memory.gather(1, cells) * S + syntax).reshape(-1)])
    configs = memory_configurations(2, 3)
    assert torch.equal(configs[5], torch.tensor([1, 2]))  # 5 = 1 * 3 + 2: cell 0 most significant
    # a point mass on one state marginalises to the right cells and reader pair
    for k in (0, 7, big.num_states - 1):
        e = torch.zeros(big.num_states, dtype=F64)
        e[k] = 1
        c, r = divmod(k, mem.num_reader_states)
        m = marginalise_memory(mem, e)
        assert m.shape == (2, 3)
        assert all(m[j, configs[c, j]] == 1 for j in range(2))
        assert marginalise_reader(mem, e)[r] == 1


def test_to_hmm_refuses_huge_memories():
    mem = random_memory_hmm(4, 5, 2, 6, seed=0)  # 5^4 * 4 * 2 = 5000 states
    with pytest.raises(ValueError, match="5000 hidden states.*fewer cells or values"):
        to_hmm(mem)
    with pytest.raises(ValueError, match="fewer cells or values"):
        memory_posterior(mem, [0, 1])
    assert to_hmm(random_memory_hmm(2, 2, 2, 3, seed=0), max_states=16).num_states == 16


# --------------------------------------------------------------------------- exact inference
@pytest.mark.parametrize("N,n,S,V,seed", TINY)
def test_memory_posterior_matches_brute_force(N, n, S, V, seed):
    mem = random_memory_hmm(N, n, S, V, seed, concentration=0.5)
    x, *_ = sample_memory(mem, 4, 4, seed=seed + 10)
    q = memory_posterior(mem, x)
    assert q.shape == (4, N, n)
    for b in range(4):
        assert (q[b] - brute_memory_posterior(mem, x[b])).abs().max() < 1e-10
    # the memory is constant: every position's posterior marginal gives the same memory posterior
    gamma = hmmlib.posterior_marginals(to_hmm(mem), x)
    assert (marginalise_memory(mem, gamma) - q[:, None]).abs().max() < 1e-10


@pytest.mark.parametrize("N,n,S,V,seed", TINY)
def test_masked_quantities_match_brute_force(N, n, S, V, seed):
    mem = random_memory_hmm(N, n, S, V, seed, concentration=0.5)
    x, *_ = sample_memory(mem, 3, 4, seed=seed + 20)
    g = memory_masked_conditionals(mem, x)
    qm = memory_masked_posteriors(mem, x)
    assert g.shape == (3, 4, V) and qm.shape == (3, 4, N, n)
    for b in range(3):
        assert (g[b] - brute_memory_masked_conditionals(mem, x[b])).abs().max() < 1e-10
        # P(M | x_{-t}) by enumeration: sum the joint over every value of the masked token
        for t in range(4):
            total = 0
            for v in range(V):
                xv = x[b].clone()
                xv[t] = v
                p, configs, _ = brute_memory_joint(mem, xv)
                total = total + p.sum(1)
            total = total / total.sum()
            for j in range(N):
                ref = torch.zeros(n, dtype=F64).index_add_(0, configs[:, j], total)
                assert (qm[b, t, j] - ref).abs().max() < 1e-10


def test_single_cell_posterior_is_the_block_marginal():
    mem = paper_memory_hmm(3, seed=1)
    x, *_ = sample_memory(mem, 5, 20, seed=0)
    gamma = hmmlib.posterior_marginals(to_hmm(mem), x)            # (B, T, 3 * 4), index m * 4 + s
    blocks = gamma.reshape(5, 20, 3, 4).sum(-1)
    assert (blocks - memory_posterior(mem, x)[:, None, 0]).abs().max() < 1e-10


def test_masked_state_posteriors_give_the_masked_conditionals():
    mem = random_memory_hmm(2, 2, 2, 4, seed=9)
    big = to_hmm(mem)
    x, *_ = sample_memory(mem, 6, 7, seed=2)
    post = masked_state_posteriors(big, x)
    assert (post @ big.W.T - hmmlib.masked_token_conditionals(big, x)).abs().max() < 1e-12
    # P(H_t | x_{-t}) by enumeration (16 states: three positions), position t marked missing
    short = x[:2, :3]
    post = masked_state_posteriors(big, short)
    for b in range(2):
        for t in range(3):
            miss = torch.zeros(3, dtype=torch.bool)
            miss[t] = True
            ref = bruteforce.brute_posteriors(big, short[b], miss)[t]
            assert (post[b, t] - ref).abs().max() < 1e-12


def test_float32_memory_hmm():
    mem = random_memory_hmm(2, 2, 2, 3, seed=0).to(dtype=torch.float32)
    assert mem.dtype == torch.float32 and to_hmm(mem).dtype == torch.float32
    x, *_ = sample_memory(mem, 2, 4, seed=0)
    assert (memory_posterior(mem, x)[0].double() - brute_memory_posterior(mem, x[0])).abs().max() < 1e-5


# --------------------------------------------------------------------------- constructors
def test_paper_memory_hmm_structure():
    for n in (2, 7):
        mem = paper_memory_hmm(n, seed=3)
        assert (mem.num_cells, mem.num_values, mem.num_syntax_states, mem.num_symbols) == (1, n, 4, 10)
        assert mem.num_total_states == 4 * n
        reader = hmmlib.paper_hmm(4, 10, num_perms=4 * n, seed=3)
        assert torch.equal(mem.A, reader.A) and torch.equal(mem.pi, reader.pi)
        assert (mem.A.sum(1) - 1).abs().max() < 1e-12                   # doubly stochastic
        assert (mem.pi - 0.25).abs().max() < 0.05 and (mem.memory_prior - 1 / n).abs().max() < 0.1 / n
        assert mem.W.max(0).values.mean() > 0.8                          # peaked emissions, temperature 0.01
        big = to_hmm(mem)
        assert torch.equal(big.A, torch.kron(torch.eye(n, dtype=F64), mem.A))  # one block, copied


def test_locatable_memory_hmm_satisfies_the_assumptions():
    mem = locatable_memory_hmm()
    N, n, S, V = mem.num_cells, mem.num_values, mem.num_syntax_states, mem.num_symbols
    assert mem.num_total_states == 54 > V
    # syntax: a deterministic cycle; s* = 0 always reads cell 0
    R = mem.A.reshape(N, S, N, S).sum(0)                                     # P(S' | J, S)
    for s in range(S):
        assert torch.equal(R[s, :, (s - 1) % S], torch.ones(N, dtype=F64))
    x, memory, cells, syntax = sample_memory(mem, 500, 12, seed=0)
    assert (cells[syntax == 0] == 0).all() and (cells[syntax != 0] == 1).any()
    # disjoint symbol blocks, W_{s*} of full column rank, the plain HMM's W of rank <= V < 54
    blocks = syntax_blocks(S, V)
    for s, block in enumerate(blocks):
        W_s = mem.emissions_of_syntax_state(s)
        assert W_s[block].sum(0).sub(1).abs().max() < 1e-12
        assert torch.linalg.matrix_rank(W_s) == n
    assert torch.linalg.matrix_rank(to_hmm(mem).W) <= V
    with pytest.raises(ValueError, match="task_cell"):
        locatable_memory_hmm(task_cell=2)
    with pytest.raises(ValueError, match="at least one symbol per syntax state"):
        locatable_memory_hmm(num_syntax=11)


def test_sharpening_and_mutual_information():
    from hmmlib.experiments.memory_runners import memory_sharpening, token_mutual_information

    sh = memory_sharpening(locatable_memory_hmm(), (1, 4, 16, 32), 300, seed=0)
    assert sh.entropy[-1] < 0.05 < sh.entropy[0] < sh.prior_entropy and sh.accuracy[-1] > 0.97
    # I(X_0; X_d) against enumeration with the tokens in between summed out
    hmm = hmmlib.dirichlet_hmm(3, 3, seed=1)
    for d in (1, 3):
        J = torch.zeros(3, 3, dtype=F64)
        for a in range(3):
            for b in range(3):
                x = torch.zeros(d + 1, dtype=torch.int64)
                x[0], x[d] = a, b
                miss = torch.ones(d + 1, dtype=torch.bool)
                miss[0] = miss[d] = False
                J[a, b] = bruteforce.joint(hmm, x, miss).sum()
        mi = (J * (J / (J.sum(1, keepdim=True) * J.sum(0, keepdim=True))).log()).sum()
        assert abs(float(token_mutual_information(hmm, [d])[0]) - float(mi)) < 1e-12


# --------------------------------------------------------------------------- tasks
def test_memory_dataset_fields_and_labels():
    mem = locatable_memory_hmm()
    task = task_from_mu([1.0, -1.0, 0.5])
    ds = make_memory_dataset(mem, task, 50, 9, seed=0, cell=0)
    assert ds.x.shape == (50, 9) and ds.memory.shape == (50, 2) and ds.conditionals.shape == (50, 9, 10)
    # fields against enumeration, on a short dataset (54 states: brute force reaches 4 positions)
    short = make_memory_dataset(mem, task, 6, 4, seed=1, cell=0, require_two_classes=False)
    for i in range(6):
        q = brute_memory_posterior(mem, short.x[i])[0]
        assert (short.posterior[i] - q).abs().max() < 1e-10
        assert (short.conditionals[i] - brute_memory_masked_conditionals(mem, short.x[i])).abs().max() < 1e-10
        if abs(float(task.mu @ q)) > 1e-9:
            assert int(short.y[i]) == int(float(task.mu @ q) >= 0)
    other = make_memory_dataset(mem, task, 50, 9, seed=0, cell=1)
    assert not torch.equal(other.posterior, ds.posterior)                  # the task's cell matters
    splits = make_memory_splits(mem, task, (20, 10, 30), 6, seed=3)
    assert [len(splits[k]) for k in ("train", "val", "test")] == [20, 10, 30]
    assert not torch.equal(splits["train"].x[:10], splits["val"].x)


def test_single_class_tasks_are_rejected():
    mem = locatable_memory_hmm()
    with pytest.raises(ValueError, match="single class"):
        make_memory_dataset(mem, task_from_mu([1.0, 1.0, 1.0]), 30, 6, seed=0)
    assert make_memory_dataset(mem, task_from_mu([1.0, 1.0, 1.0]), 30, 6, seed=0,
                               require_two_classes=False).majority_rate == 1.0
    task, splits, tries = memory_task_and_splits(mem, seed=0, sizes=(50, 10, 10), seq_len=8)
    assert splits["train"].num_classes_present == 2 and tries >= 1 and task.num_states == 3
    # n = 1: every task has one class, whatever the draw
    one = MemoryHMM(torch.ones(2, 1, dtype=F64), mem.pi, mem.A, mem.W[:, :3])
    with pytest.raises(ValueError, match="none of 3 task draws"):
        memory_task_and_splits(one, seed=0, sizes=(10, 5, 5), seq_len=4, max_tries=3)


def test_task_validation():
    mem = locatable_memory_hmm()
    with pytest.raises(ValueError, match="num_values=3"):
        make_memory_dataset(mem, paper_task(4, seed=0), 10, 5, seed=0)
    with pytest.raises(ValueError, match="cell must be an int in \\[0, 2\\)"):
        make_memory_dataset(mem, paper_task(3, seed=0), 10, 5, seed=0, cell=2)
    with pytest.raises(ValueError, match="DownstreamTask"):
        make_memory_dataset(mem, [1.0, -1.0, 0.0], 10, 5, seed=0)


# --------------------------------------------------------------------------- validation
def _parts(mem: MemoryHMM) -> dict:
    return {k: getattr(mem, k).clone() for k in ("memory_prior", "pi", "A", "W")}


@pytest.mark.parametrize("name,edit,match", [
    ("A", lambda t: t * 1.1, "column 0 of A sums to"),
    ("W", lambda t: t.flip(0) * 0.5, "column 0 of W sums to"),
    ("pi", lambda t: t * 2, "pi sums to"),
    ("memory_prior", lambda t: t * 2, "ROW of memory_prior"),
    ("A", lambda t: t.index_put((torch.tensor([0]), torch.tensor([0])), torch.tensor(float("nan"), dtype=F64)),
     "must be finite"),
    ("W", lambda t: t - t.max(), "negative"),
    ("pi", lambda t: t[:-1], "pi must be a vector of shape \\(num_cells \\* num_syntax_states,\\)"),
    ("A", lambda t: t[:, :-1], "A must have shape"),
    ("W", lambda t: t[:, :-1], "W must have shape \\(num_symbols, num_values \\* S\\)"),
    ("memory_prior", lambda t: t[0], "memory_prior must have shape \\(num_cells, num_values\\)"),
    ("W", lambda t: t.half(), "dtype torch.float16"),
])
def test_bad_parameters_raise(name, edit, match):
    parts = _parts(random_memory_hmm(2, 2, 2, 3, seed=0))
    MemoryHMM(**parts)  # the unedited parts are fine
    parts[name] = edit(parts[name])
    with pytest.raises(ValueError, match=match):
        MemoryHMM(**parts)


def test_bad_inputs_raise():
    mem = random_memory_hmm(2, 2, 2, 3, seed=0)
    with pytest.raises(ValueError, match="outside \\[0, 3\\)"):
        memory_posterior(mem, [[0, 1, 3]])
    with pytest.raises(ValueError, match="outside \\[0, 3\\)"):
        memory_masked_conditionals(mem, [0, -1])
    with pytest.raises(ValueError, match="integer dtype"):
        memory_posterior(mem, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="num_seqs must be a positive integer"):
        sample_memory(mem, 0, 5, seed=0)
    with pytest.raises(ValueError, match="exactly one of seed"):
        sample_memory(mem, 2, 5)
    with pytest.raises(ValueError, match="expected a MemoryHMM"):
        to_hmm(hmmlib.paper_hmm(4))
    with pytest.raises(ValueError, match="num_values must be a positive integer"):
        paper_memory_hmm(0)
    with pytest.raises(ValueError, match="syntax state must be an int"):
        mem.emissions_of_syntax_state(2)
    with pytest.raises(ValueError, match="probability 0"):
        memory_posterior(MemoryHMM(mem.memory_prior, mem.pi, mem.A,
                                   torch.tensor([[1.0] * 4, [0.0] * 4, [0.0] * 4], dtype=F64)), [0, 1])
    with pytest.raises(ValueError, match="too many for brute force"):
        brute_memory_joint(mem, [0] * 12)


# --------------------------------------------------------------------------- presets
def test_memory_presets():
    paper = hmmlib.get_preset("paper").memory
    assert paper.num_values_sweep == (2, 3, 5, 7) and paper.num_seeds == 5
    assert paper.split_sizes == (5000, 500, 1000) and paper.seq_len == 128 and paper.head.max_positions == 80
    h = paper.head
    assert h.num_steps == 4000 and h.warmup_steps == 500 and h.lr == 0.01 and h.batch_size == 128
    for name in ("ci", "default", "paper"):
        p = hmmlib.get_preset(name)
        # the trained model reads [MASK] + tokens: no more than the positions it was pretrained on
        assert 2 <= p.memory.head.max_positions <= p.pretrain.seq_len < p.pretrain.configs(10)[0].max_len
        assert set(p.memory.transformer_num_values) <= set(p.memory.num_values_sweep)
        cfg = p.memory.tune_config(seed=3)
        assert cfg.method == "head" and cfg.seed == 3 and cfg.num_steps == p.memory.head.num_steps
    assert "memory:" in str(hmmlib.get_preset("ci"))
