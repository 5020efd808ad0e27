"""The HMM class, the generators, hmmlearn conversion, and presets."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

import hmmlib
from hmmlib import HMM
from hmmlib.hmm.generators import softmax_temp
from hmmlib.hmm.model import column_tolerance
from hmmlib.experiments.presets import PRESET_ENV, PRESET_NAMES

F64 = torch.float64


def _equal_hmms(a: HMM, b: HMM) -> bool:
    return all(torch.equal(x, y) for x, y in ((a.pi, b.pi), (a.A, b.A), (a.W, b.W)))


# =========================================================================== HMM basics
def test_hmm_basic_properties_and_conversion():
    pi = [0.25, 0.75]
    A = [[0.9, 0.3], [0.1, 0.7]]
    W = [[0.5, 0.1], [0.25, 0.1], [0.25, 0.8]]
    hmm = HMM(pi, A, W)  # nested lists become float64 tensors
    assert hmm.num_states == 2 and hmm.num_symbols == 3
    assert hmm.dtype == F64 and hmm.device == torch.device("cpu")
    assert torch.equal(hmm.A, torch.tensor(A, dtype=F64))
    assert repr(hmm) == "HMM(num_states=2, num_symbols=3, dtype=torch.float64, device=cpu)"
    with pytest.raises(dataclasses.FrozenInstanceError):
        hmm.pi = torch.tensor([0.5, 0.5])
    # integer tensors are accepted (as float64)
    one_hot = HMM(torch.tensor([0, 1]), torch.tensor([[1, 0], [0, 1]]), torch.tensor([[1, 0], [0, 1]]))
    assert one_hot.dtype == F64 and torch.equal(one_hot.pi, torch.tensor([0.0, 1.0], dtype=F64))
    h32 = hmm.to(dtype=torch.float32)
    assert h32.dtype == torch.float32 and h32.A.dtype == h32.W.dtype == torch.float32
    torch.testing.assert_close(h32.W.double(), hmm.W, atol=1e-7, rtol=0)


def test_column_tolerance_depends_on_dtype():
    assert column_tolerance(torch.float32) > column_tolerance(F64)
    eps = 5e-7  # fine for float32 rounding, far too much for float64
    A = torch.tensor([[0.5, 0.5 + eps], [0.5, 0.5]], dtype=F64)
    pi = torch.tensor([0.5, 0.5], dtype=F64)
    W = torch.eye(2, dtype=F64)
    HMM(pi.float(), A.float(), W.float())  # accepted
    with pytest.raises(ValueError, match="column 1 of A sums to"):
        HMM(pi, A, W)


def test_stationary_distribution():
    # two states: A = [[1-a, b], [a, 1-b]] has the stationary distribution (b, a) / (a + b)
    a, b = 0.2, 0.05
    two = HMM([0.5, 0.5], [[1 - a, b], [a, 1 - b]], [[1.0, 0.0], [0.0, 1.0]])
    torch.testing.assert_close(two.stationary(), torch.tensor([b, a], dtype=F64) / (a + b), atol=1e-12, rtol=0)
    # an ergodic chain: the limit of A^n pi (power iteration, not an eigen-solver)
    hmm = hmmlib.dirichlet_hmm(6, 4, seed=7)
    s = hmm.stationary()
    assert s.shape == (6,) and (s >= 0).all()
    limit = torch.linalg.matrix_power(hmm.A, 2000) @ hmm.pi
    torch.testing.assert_close(s, limit, atol=1e-10, rtol=0)
    # a doubly stochastic A has the uniform distribution as a stationary one
    paper = hmmlib.paper_hmm(5, 4, transition_temp=1.0, seed=2)
    torch.testing.assert_close(paper.stationary(), torch.full((5,), 0.2, dtype=F64), atol=1e-10, rtol=0)


def test_float32_hmm_can_be_converted_to_float64():
    h32 = hmmlib.paper_hmm(10, 10, seed=0, dtype=torch.float32)
    h64 = h32.to(dtype=torch.float64)
    assert h64.dtype == F64
    assert torch.equal(h64.A, h32.A.double())


def test_hmm_accepts_float32_numpy_parameters():
    rng = np.random.default_rng(0)
    pi = rng.random(10).astype(np.float32)
    pi /= pi.sum()
    A = rng.random((10, 10)).astype(np.float32)
    A /= A.sum(0)
    W = rng.random((12, 10)).astype(np.float32)
    W /= W.sum(0)
    hmm = HMM(pi, A, W)
    np.testing.assert_array_equal(hmm.A.numpy(), A)


# =========================================================================== hmmlearn conversion
@pytest.mark.parametrize("make", [lambda: hmmlib.dirichlet_hmm(5, 7, seed=1), lambda: hmmlib.paper_hmm(6, 4, seed=2)],
                         ids=["dirichlet", "paper"])
def test_hmmlearn_params_round_trip_is_exact(make):
    hmm = make()
    startprob, transmat, emissionprob = hmmlib.to_hmmlearn_params(hmm)
    assert transmat.shape == (hmm.num_states, hmm.num_states)
    assert emissionprob.shape == (hmm.num_states, hmm.num_symbols)
    # hmmlearn stores row-stochastic transposes
    np.testing.assert_array_equal(transmat, hmm.A.numpy().T)
    np.testing.assert_array_equal(emissionprob, hmm.W.numpy().T)
    back = HMM.from_hmmlearn_params(startprob, transmat, emissionprob)
    assert _equal_hmms(back, hmm)
    # the returned arrays are copies: mutating them does not touch the HMM
    startprob[:] = 0
    assert hmm.pi.sum() > 0.5


def test_hmmlearn_model_round_trip():
    import hmmlearn.hmm  # noqa: F401  (a hard import: this test fails, never skips, without hmmlearn)
    hmm = hmmlib.dirichlet_hmm(4, 6, seed=9)
    model = hmm.to_hmmlearn()
    assert model.n_components == 4 and model.n_features == 6
    np.testing.assert_array_equal(model.transmat_, hmm.A.numpy().T)
    assert _equal_hmms(HMM.from_hmmlearn(model), hmm)


# =========================================================================== generators
@pytest.mark.parametrize("gen", [
    lambda seed: hmmlib.paper_hmm(6, 7, seed=seed),
    lambda seed: hmmlib.dirichlet_hmm(6, 7, seed=seed),
], ids=["paper", "dirichlet"])
def test_generators_are_deterministic_per_seed(gen):
    a, b, c = gen(3), gen(3), gen(4)
    assert _equal_hmms(a, b)
    assert not torch.equal(a.A, c.A) and not torch.equal(a.W, c.W) and not torch.equal(a.pi, c.pi)


def test_generator_dtype_argument():
    h = hmmlib.paper_hmm(4, 5, seed=1, dtype=torch.float32)
    h64 = hmmlib.paper_hmm(4, 5, seed=1)
    assert h.dtype == torch.float32 and h64.dtype == F64
    assert torch.equal(h.W, h64.W.float())
    assert hmmlib.dirichlet_hmm(3, 4, seed=0, dtype=torch.float32).A.dtype == torch.float32


@pytest.mark.parametrize("K", [3, 6, 10])
@pytest.mark.parametrize("num_perms", [None, 1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paper_transitions_are_doubly_stochastic_permutation_mixtures(K, num_perms, seed):
    A = hmmlib.paper_hmm(K, 5, num_perms=num_perms, transition_temp=0.5, seed=seed).A
    ones = torch.ones(K, dtype=F64)
    torch.testing.assert_close(A.sum(0), ones, atol=1e-12, rtol=0)
    torch.testing.assert_close(A.sum(1), ones, atol=1e-12, rtol=0)
    assert (A >= 0).all()
    n = K if num_perms is None else num_perms
    # a mixture of n permutation matrices has at most n non-zeros in every row and column
    nz = A > 0
    assert (nz.sum(0) <= n).all() and (nz.sum(1) <= n).all()
    if n == 1:  # a single permutation: a 0/1 matrix with one 1 per row and column
        assert set(A.unique().tolist()) <= {0.0, 1.0}
        assert (nz.sum(0) == 1).all() and (nz.sum(1) == 1).all()


def test_paper_start_is_nearly_uniform():
    # pi = softmax((U - 0.5) / start_temp) with U in [0, 1): max/min <= exp(1 / start_temp)
    for seed in range(5):
        for temp in (10.0, 1.0):
            pi = hmmlib.paper_hmm(10, 4, start_temp=temp, seed=seed).pi
            assert pi.max() / pi.min() <= math.exp(1.0 / temp)
    pi = hmmlib.paper_hmm(10, 4, start_temp=0.01, seed=0).pi
    assert pi.max() / pi.min() > math.exp(1.0)  # and a small temperature is not uniform


def test_paper_emissions_are_peaked_around_0_9():
    K, V, temp = 500, 10, 0.01
    W = hmmlib.paper_hmm(K, V, emission_temp=temp, seed=0).W
    col_max = W.max(0).values
    # the expected maximum of softmax((U - 0.5) / temp) over V uniforms, by independent Monte Carlo
    n_mc = 200_000
    ref = softmax_temp(np.random.default_rng(12345).random((n_mc, V)), temp).max(1)
    assert 0.88 < ref.mean() < 0.97  # "each state emits one symbol with probability around 0.9"
    se = math.sqrt(col_max.var().item() / K + ref.var() / n_mc)
    assert abs(col_max.mean().item() - ref.mean()) <= 5 * se
    # every column is a distribution peaked on a single symbol most of the time
    assert (col_max > 0.5).double().mean() > 0.8


def test_paper_emission_entropy_increases_with_temperature():
    temps = [0.01, 0.03, 0.1, 0.3, 1.0, 10.0]
    V = 10
    # the same seed gives the same uniforms, so each column's entropy is non-decreasing in temp
    H = torch.stack([hmmlib.entropy(hmmlib.paper_hmm(40, V, emission_temp=t, seed=5).W, dim=0) for t in temps])
    assert (H.diff(dim=0) >= -1e-12).all()
    assert (H.mean(1).diff() > 0).all()
    assert H[0].mean() < 0.3  # near one-hot
    assert (math.log(V) - H[-1]).max() < 1e-3  # near uniform


def test_dirichlet_concentration_controls_peakedness():
    flat = hmmlib.dirichlet_hmm(200, 8, emission_concentration=10.0, seed=0).W
    peaked = hmmlib.dirichlet_hmm(200, 8, emission_concentration=0.1, seed=0).W
    assert hmmlib.entropy(peaked, 0).mean() < 0.5 * hmmlib.entropy(flat, 0).mean()
    assert peaked.max(0).values.mean() > flat.max(0).values.mean() + 0.3


# =========================================================================== presets
@pytest.mark.parametrize("name", PRESET_NAMES)
def test_get_preset_reads_environment(monkeypatch, name):
    monkeypatch.setenv(PRESET_ENV, name)
    preset = hmmlib.get_preset()
    assert preset.name == name
    text = str(preset)
    assert f"'{name}'" in text and PRESET_ENV in text and "num_seqs=" in text
    monkeypatch.setenv(PRESET_ENV, f"  {name.upper()} ")  # case and whitespace are forgiven
    assert hmmlib.get_preset().name == name


def test_get_preset_defaults_and_explicit_names(monkeypatch):
    monkeypatch.delenv(PRESET_ENV, raising=False)
    assert hmmlib.get_preset().name == "default"
    monkeypatch.setenv(PRESET_ENV, "")
    assert hmmlib.get_preset().name == "default"
    monkeypatch.setenv(PRESET_ENV, "paper")
    assert hmmlib.get_preset("ci").name == "ci"  # an explicit name wins over the environment


def test_presets_are_consistent():
    ci, default, paper = (hmmlib.get_preset(n) for n in ("ci", "default", "paper"))
    assert ci.hmms.num_seqs <= default.hmms.num_seqs <= paper.hmms.num_seqs
    for p in (ci, default, paper):
        h = p.hmms
        assert min(h.num_states, h.num_symbols, h.num_seqs, h.seq_len, h.num_checks) >= 1
        assert max(h.sharpening_lengths) <= h.seq_len
        assert list(h.sharpening_lengths) == sorted(set(h.sharpening_lengths))
