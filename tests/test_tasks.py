"""Downstream tasks (hmmlib.tasks): the paper's generator, datasets, splits, rejection of single-class tasks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import hmmlib
from hmmlib import bruteforce, tasks
from hmmlib.adapt.tasks import (
    DownstreamTask,
    make_dataset,
    make_splits,
    paper_task,
    paper_task_and_splits,
    sample_task_with_two_classes,
    task_from_mu,
)

F64 = torch.float64


# --------------------------------------------------------------------------- paper_task
def test_paper_task_statistics():
    K, n_seeds = 10, 2000
    task_list = [paper_task(K, seed=s) for s in range(n_seeds)]
    nnz = np.array([int((t.weights != 0).sum()) for t in task_list])
    support = np.array([t.support.numel() for t in task_list])
    assert nnz.max() <= 6 and support.max() <= 6 and support.min() >= 1
    # with replacement: P(6 distinct positions among 20) = 20*19*...*15 / 20^6
    p_distinct = math.prod(range(15, 21)) / 20**6
    frac_distinct = float((nnz == 6).mean())
    assert abs(frac_distinct - p_distinct) < 5 * math.sqrt(p_distinct * (1 - p_distinct) / n_seeds)
    assert (nnz < 6).any()  # duplicates happen
    vals = torch.cat([t.weights[t.weights != 0] for t in task_list]).numpy()
    n = vals.size
    assert abs(vals.mean()) < 5 / math.sqrt(n)
    assert abs(vals.var() - 1) < 5 * math.sqrt(2 / n)
    # the kurtosis of a normal is 3: rules out e.g. uniform values of variance 1
    assert abs((vals**4).mean() / vals.var() ** 2 - 3) < 0.3
    # positions are uniform over the 2K entries
    counts = sum((t.weights != 0).reshape(-1).double() for t in task_list)
    expected = float(counts.mean())
    assert (counts - expected).abs().max() < 5 * math.sqrt(expected)


def test_paper_task_determinism_and_validation():
    a, b, c = paper_task(7, seed=3), paper_task(7, seed=3), paper_task(7, seed=4)
    assert torch.equal(a.weights, b.weights) and not torch.equal(a.weights, c.weights)
    assert a.weights.shape == (2, 7) and a.mu.dtype == F64
    assert paper_task(1, seed=0).num_states == 1
    assert int((paper_task(5, seed=0, num_nonzero=1).weights != 0).sum()) == 1
    with pytest.raises(ValueError, match="num_states must be a positive integer"):
        paper_task(0, seed=0)
    with pytest.raises(ValueError, match="num_nonzero must be a positive integer"):
        paper_task(4, seed=0, num_nonzero=0)
    with pytest.raises(ValueError, match="seed must be an int"):
        paper_task(4, seed=1.5)


def test_task_validation():
    t = task_from_mu([1.0, 0.0, -2.0])
    assert t.support.tolist() == [0, 2] and t.weights is None and t.mu.dtype == F64
    assert t.labels(torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [2 / 3, 0, 1 / 3]])).tolist() == [1, 0, 1]  # tie -> 1
    with pytest.raises(ValueError, match=r"mu must be a non-empty vector"):
        task_from_mu([[1.0, 2.0]])
    with pytest.raises(ValueError, match="non-finite"):
        task_from_mu([1.0, float("nan")])
    with pytest.raises(ValueError, match=r"weights must have shape \(2, num_states\) = \(2, 3\)"):
        DownstreamTask(mu=torch.zeros(3), weights=torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"mu must equal weights\[1\] - weights\[0\]"):
        DownstreamTask(mu=torch.ones(3), weights=torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"posterior must have shape \(\.\.\., num_states\)"):
        t.labels(torch.ones(4, 2))


# --------------------------------------------------------------------------- datasets
TINY = [
    lambda: hmmlib.dirichlet_hmm(3, 4, seed=1),
    lambda: hmmlib.dirichlet_hmm(2, 2, start_concentration=0.1, transition_concentration=0.1,
                                 emission_concentration=0.1, seed=5),
    lambda: hmmlib.paper_hmm(3, 4, seed=0),
    lambda: hmmlib.paper_hmm(4, 3, seed=3),
]


@pytest.mark.parametrize("make_hmm", TINY, ids=["dir-K3-V4", "dir-K2-V2-peaked", "paper-K3-V4", "paper-K4-V3"])
def test_dataset_against_brute_force(make_hmm):
    hmm = make_hmm()
    K = hmm.num_states
    mu = torch.randn(K, generator=torch.Generator().manual_seed(K), dtype=F64)
    task = task_from_mu(mu)
    ds = make_dataset(hmm, task, 12, 4, seed=7, require_two_classes=False)
    tokens, states = hmmlib.sample(hmm, 12, 5, seed=7)
    assert torch.equal(ds.x, tokens[:, 1:]) and torch.equal(ds.h0, states[:, 0])
    assert ds.x.dtype == ds.y.dtype == ds.h0.dtype == torch.int64 and ds.x.shape == (12, 4)
    for i in range(len(ds)):
        p = bruteforce.brute_h0_posterior(hmm, ds.x[i])
        torch.testing.assert_close(ds.posterior[i], p, rtol=0, atol=1e-12)
        # G(x) = P(X_0 | x_{1:T}) by trying every value of X_0 (not through P(H_0 | x))
        joint = torch.stack([bruteforce.joint(hmm, torch.cat([torch.tensor([v]), ds.x[i]])).sum()
                             for v in range(hmm.num_symbols)])
        torch.testing.assert_close(ds.G[i], joint / joint.sum(), rtol=0, atol=1e-12)
        score = float(mu @ p)
        if abs(score) > 1e-9:
            assert int(ds.y[i]) == int(score >= 0)
    assert ds.majority_rate >= 0.5


def test_dataset_determinism():
    hmm = hmmlib.paper_hmm(5, seed=2)
    task = task_from_mu(torch.tensor([1.0, -1.0, 0.5, 0.0, -0.3]))
    a = make_dataset(hmm, task, 64, 16, seed=11, require_two_classes=False)
    b = make_dataset(hmm, task, 64, 16, seed=11, require_two_classes=False)
    c = make_dataset(hmm, task, 64, 16, seed=12, require_two_classes=False)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and torch.equal(a.posterior, b.posterior)
    assert not torch.equal(a.x, c.x)


def test_single_class_rejected():
    hmm = hmmlib.paper_hmm(4, seed=0)
    always = task_from_mu(torch.ones(4))  # mu^T p = 1 for every p
    with pytest.raises(tasks.SingleClassError, match=r"all 50 examples have label 1: the task has a single class .* Redraw"):
        make_dataset(hmm, always, 50, 8, seed=0)
    assert issubclass(tasks.SingleClassError, ValueError)
    # the redraw loop catches only this error: any other ValueError from the splits propagates
    with pytest.raises(ValueError, match="sizes must be"):
        paper_task_and_splits(hmm, seed=0, sizes=(50, 10))
    ds = make_dataset(hmm, always, 50, 8, seed=0, require_two_classes=False)
    assert ds.majority_rate == 1.0 and ds.num_classes_present == 1
    with pytest.raises(ValueError, match="single class"):
        make_splits(hmm, always, sizes=(50, 10, 10), seq_len=8, seed=0)
    # one state: every task has one class, so redrawing never succeeds
    one = hmmlib.HMM(torch.ones(1), torch.ones(1, 1), torch.full((3, 1), 1 / 3))
    with pytest.raises(ValueError, match="none of 3 task draws had two classes"):
        sample_task_with_two_classes(one, seed=0, max_tries=3, num_probe=20, probe_len=4)
    with pytest.raises(ValueError, match="none of 2 task draws had two classes in its train split"):
        paper_task_and_splits(one, seed=0, max_tries=2, sizes=(20, 5, 5), seq_len=4)


def test_single_class_redraw(monkeypatch):
    hmm = hmmlib.paper_hmm(6, seed=1)
    real = tasks.paper_task
    calls = []

    def first_single_class(num_states, *, seed, num_nonzero=6):
        calls.append(seed)
        if len(calls) == 1:
            return task_from_mu(torch.ones(num_states))
        return task_from_mu(torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, -1.0]))

    monkeypatch.setattr(tasks, "paper_task", first_single_class)
    task = sample_task_with_two_classes(hmm, seed=5, num_probe=200, probe_len=16)
    assert len(calls) == 2 and calls[0] != calls[1] and task.mu[1] == -1.0
    calls.clear()
    task, splits, tries = paper_task_and_splits(hmm, seed=5, sizes=(200, 20, 20), seq_len=16)
    assert tries == 2 and splits["train"].num_classes_present == 2
    monkeypatch.setattr(tasks, "paper_task", real)
    # the real generator, and determinism per seed
    t1 = sample_task_with_two_classes(hmm, seed=9, num_probe=300, probe_len=32)
    t2 = sample_task_with_two_classes(hmm, seed=9, num_probe=300, probe_len=32)
    assert torch.equal(t1.weights, t2.weights)
    probe = make_dataset(hmm, t1, 300, 32, seed=123, require_two_classes=False)
    assert probe.num_classes_present == 2


def test_make_splits_paper_sizes():
    hmm = hmmlib.paper_hmm(4, seed=0)
    task, splits, tries = paper_task_and_splits(hmm, seed=0)
    assert list(splits) == ["train", "val", "test"] and 1 <= tries <= 20
    assert [len(splits[k]) for k in splits] == [5000, 500, 1000]
    assert all(s.x.shape[1] == 128 for s in splits.values())
    assert not torch.equal(splits["val"].x, splits["test"].x[:500])  # different sub-seeds
    assert not torch.equal(splits["train"].x[:500], splits["val"].x)
    again = make_splits(hmm, task, seed=tasks.sub_seed(0, 2, tries - 1))
    assert all(torch.equal(again[k].x, splits[k].x) and torch.equal(again[k].y, splits[k].y) for k in splits)
    # posteriors and labels of the first test rows against hmmlearn (length 128: beyond brute force):
    # P(H_0 = h | x) ~ pi_h P(x | H_1 ~ A[:, h]), one hmmlearn score per state
    model = hmm.to_hmmlearn()
    test = splits["test"]
    for i in range(8):
        logw = []
        for h in range(hmm.num_states):
            model.startprob_ = hmm.A[:, h].numpy()
            logw.append(math.log(float(hmm.pi[h])) + model.score(test.x[i].numpy().reshape(-1, 1)))
        p = torch.softmax(torch.tensor(logw, dtype=F64), 0)
        torch.testing.assert_close(test.posterior[i], p, rtol=0, atol=1e-10)
        score = float(task.mu @ p)
        if abs(score) > 1e-9:
            assert int(test.y[i]) == int(score >= 0)


def test_dataset_bad_inputs():
    hmm = hmmlib.paper_hmm(4, seed=0)
    task = paper_task(4, seed=0)
    with pytest.raises(ValueError, match=r"task.mu has length 5 but the HMM has num_states=4"):
        make_dataset(hmm, paper_task(5, seed=0), 10, 4, seed=0)
    with pytest.raises(ValueError, match="task must be a DownstreamTask"):
        make_dataset(hmm, torch.ones(4), 10, 4, seed=0)
    with pytest.raises(ValueError, match="expected an HMM"):
        make_dataset("hmm", task, 10, 4, seed=0)
    with pytest.raises(ValueError, match="num_examples must be a positive integer"):
        make_dataset(hmm, task, 0, 4, seed=0)
    with pytest.raises(ValueError, match="seq_len must be a positive integer"):
        make_dataset(hmm, task, 10, -1, seed=0)
    with pytest.raises(ValueError, match="seed must be an int"):
        make_dataset(hmm, task, 10, 4, seed=None)
    with pytest.raises(ValueError, match=r"sizes must be \(train, val, test\)"):
        make_splits(hmm, task, sizes=(10, 10), seed=0)
