"""The single-query attention head (hmmlib.attention_head) and chapter 5's theorem (hmmlib.memory_experiments)."""
from __future__ import annotations

import math

import pytest
import torch

import hmmlib
from hmmlib.memory.attention_head import AttentionHeadTuner, SingleQueryAttentionHead, model_position_probs, set_theorem_head
from hmmlib.memory.model import locatable_memory_hmm, sample_memory
from hmmlib.experiments.memory_runners import check_theorem, theorem_head
from hmmlib.memory.tasks import make_memory_splits
from hmmlib.adapt.tasks import task_from_mu
from hmmlib.adapt import FakeTokenPromptConfig, HeadConfig

F64 = torch.float64
MU = torch.tensor([1.0, -1.2, 0.5], dtype=F64)   # two classes on the locatable HMM's three values


@pytest.fixture(scope="module")
def locatable():
    mem = locatable_memory_hmm()
    splits = make_memory_splits(mem, task_from_mu(MU), (400, 100, 400), 24, seed=0)
    return mem, splits


def test_shapes_counts_and_uniform_attention_at_init():
    torch.manual_seed(0)
    head = SingleQueryAttentionHead(10)
    assert head.num_heads == 10 and head.head_dim == 1
    # the paper's head: query 10 + keys 110 + values 110 + readout 22
    assert sum(p.numel() for p in head.parameters()) == 252
    g = torch.rand(4, 7, 10).softmax(-1)
    a = head.attention(g)
    assert a.shape == (4, 10, 7) and torch.allclose(a, torch.full_like(a, 1 / 7))
    assert head(g).shape == (4, 2)
    wide = SingleQueryAttentionHead(10, num_heads=3, head_dim=4, num_classes=5)
    assert wide(g).shape == (4, 5) and wide.attention(g).shape == (4, 3, 7)


def test_output_is_invariant_to_a_permutation_of_positions():
    torch.manual_seed(1)
    head = SingleQueryAttentionHead(10, num_heads=4, head_dim=3)
    with torch.no_grad():
        head.query.normal_()
    g = torch.rand(5, 9, 10, dtype=torch.float32).softmax(-1)
    perm = torch.randperm(9)
    out, out_perm = head(g), head(g[:, perm])
    assert torch.allclose(out, out_perm, atol=1e-6)
    assert not torch.allclose(head.attention(g), head.attention(g[:, perm]))   # the weights do move
    # and it is not invariant to changing one position's content
    g2 = g.clone()
    g2[:, 0] = g[:, 0].flip(-1)
    assert not torch.allclose(head(g2), out, atol=1e-6)


def test_bad_head_inputs():
    head = SingleQueryAttentionHead(10)
    with pytest.raises(ValueError, match="in_dim=10"):
        head(torch.rand(2, 5, 9))
    with pytest.raises(ValueError, match="in_dim=10"):
        head(torch.rand(5, 10))
    with pytest.raises(ValueError, match="num_heads must be a positive integer"):
        SingleQueryAttentionHead(10, num_heads=0)
    with pytest.raises(ValueError, match="in_dim=10 entries"):
        set_theorem_head(head, torch.ones(9), 1.0, torch.ones(10))


def test_theorem_identity_bound_and_closed_form_head(locatable):
    mem, _ = locatable
    x, *_ = sample_memory(mem, 300, 32, seed=5)
    for scale in (3.0, 20.0):
        chk = check_theorem(mem, MU, x, cell=0, syntax=0, scale=scale)
        assert chk.identity_error < 1e-10                        # b^T g_t = mu^T q_{-t} on T*
        assert chk.delta == pytest.approx(1.0)                   # kappa^T g is 1 on T*, 0 elsewhere
        assert ((chk.key[chk.located] - 1).abs() < 1e-12).all()
        ratio = chk.outside / (1 - chk.outside)
        assert (ratio <= chk.leakage_bound * (1 + 1e-9)).all()   # the leakage bound holds
        above = chk.margin > chk.bound
        assert above.double().mean() > 0.9                      # the bound is informative here
        assert chk.correct[above].all()                          # ... and never wrong
        assert set(chk.y.tolist()) == {0, 1}
    # the attention weights are uniform on T* up to the leakage
    a = chk.attention[0]
    inside = a[chk.located[0]]
    assert torch.allclose(inside, torch.full_like(inside, 1 / inside.numel()), rtol=1e-6)


def test_theorem_head_construction():
    mem = locatable_memory_hmm()
    kappa, b = theorem_head(mem, MU, syntax=0)
    W_s = mem.emissions_of_syntax_state(0)
    assert torch.allclose(b @ W_s, MU, atol=1e-12)
    assert set(kappa.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(kappa @ W_s, torch.ones(W_s.shape[1], dtype=F64), atol=1e-12)  # kappa^T g = 1 under s*
    for s in range(1, mem.num_syntax_states):  # every other syntax state puts mass outside kappa (the gap)
        assert (kappa @ mem.emissions_of_syntax_state(s)).max() < 1 - 1e-6
    head = set_theorem_head(SingleQueryAttentionHead(10).double(), kappa, 7.0, b)
    g = torch.rand(3, 6, 10, dtype=F64).softmax(-1)
    a = torch.softmax(7.0 * (g @ kappa), -1)
    logits = head(g)
    assert torch.allclose(logits[:, 1] - logits[:, 0], (a * (g @ b)).sum(1), atol=1e-12)


def test_closed_form_head_is_perfect_through_the_tuner(locatable):
    mem, splits = locatable
    tuner = AttentionHeadTuner(mem, HeadConfig.adamw(num_steps=1))
    kappa, b = theorem_head(mem, MU, syntax=0)
    set_theorem_head(tuner.head, kappa, 20.0, b)
    for split in ("train", "test"):
        assert tuner.evaluate(splits[split])["accuracy"] == 1.0


def test_trained_head_reaches_100_percent_on_the_locatable_hmm(locatable):
    mem, splits = locatable
    tuner = AttentionHeadTuner(mem, HeadConfig.adamw(lr=0.03, num_steps=300, batch_size=64, warmup_steps=20, seed=0))
    before = tuner.evaluate(splits["test"])["accuracy"]
    tuner.fit(splits["train"])
    m = tuner.evaluate(splits["test"])
    assert m["accuracy"] >= 0.99 > before and m["majority_rate"] < 0.9
    assert tuner.parameter_counts()["trainable"] == 252


def test_seeded_fit_reproduces(locatable):
    mem, splits = locatable
    cfg = HeadConfig.adamw(num_steps=20, batch_size=32, seed=3)
    a, b = AttentionHeadTuner(mem, cfg), AttentionHeadTuner(mem, cfg)
    a.fit(splits["train"])
    b.fit(splits["train"])
    assert all(torch.equal(p, q) for p, q in zip(a.head.parameters(), b.head.parameters()))
    c = AttentionHeadTuner(mem, cfg.replace(seed=4))
    c.fit(splits["train"])
    assert not torch.equal(a.head.key.weight, c.head.key.weight)


def test_frozen_masked_lm_gets_no_gradient(locatable):
    mem, splits = locatable
    torch.manual_seed(0)
    model = hmmlib.Transformer(hmmlib.TransformerConfig(num_symbols=10, d_model=16, num_layers=1, num_heads=2,
                                                         max_len=32))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    probs = model_position_probs(model, splits["val"].x)
    assert probs.shape == (100, 25, 10)
    tuner = AttentionHeadTuner(model, HeadConfig.adamw(num_steps=5, batch_size=16, max_positions=13))
    assert tuner.features(splits["val"]).shape == (100, 13, 10)  # [MASK] and 12 tokens
    assert not model.training and not any(p.requires_grad for p in model.parameters())  # frozen when wrapped
    assert set(tuner.state_dict()) == {f"head.{k}" for k in tuner.head.state_dict()}
    tuner.fit(splits["train"])
    assert all(p.grad is None for p in model.parameters())
    assert all(p.grad is not None for p in tuner.head.parameters())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    counts = tuner.parameter_counts()
    assert counts["total"] == counts["trainable"] + sum(p.numel() for p in model.parameters())


def test_tuner_validation(locatable):
    mem, splits = locatable
    with pytest.raises(ValueError, match="AttentionHeadTuner takes a HeadConfig; got FakeTokenPromptConfig"):
        AttentionHeadTuner(mem, FakeTokenPromptConfig())
    with pytest.raises(ValueError, match="MemoryHMM"):
        AttentionHeadTuner(hmmlib.paper_hmm(4), HeadConfig.adamw())
    no_cond = make_memory_splits(mem, task_from_mu(MU), (30, 5, 5), 8, seed=1, with_conditionals=False)
    with pytest.raises(ValueError, match="exact conditionals"):
        AttentionHeadTuner(mem, HeadConfig.adamw(num_steps=1)).fit(no_cond["train"])
    model = hmmlib.Transformer(hmmlib.TransformerConfig(num_symbols=10, d_model=16, num_layers=1, num_heads=2,
                                                         max_len=8))
    assert model_position_probs(model, splits["val"].x).shape == (100, 8, 10)  # cut to the model's 8 positions
    with pytest.raises(ValueError, match="symbols must be in \\[0, 10\\)"):
        model_position_probs(model, torch.full((2, 3), 10))
    with pytest.raises(ValueError, match="max_positions must be a positive integer"):
        AttentionHeadTuner(model, HeadConfig.adamw(max_positions=0))
    causal = hmmlib.Transformer(hmmlib.TransformerConfig(num_symbols=10, d_model=16, num_layers=1, num_heads=2,
                                                          causal=True))
    with pytest.raises(ValueError, match="causal=False"):
        AttentionHeadTuner(causal, HeadConfig.adamw())
    assert math.isfinite(AttentionHeadTuner(mem, HeadConfig.adamw()).evaluate(splits["val"])["loss"])
    with pytest.raises(ValueError, match="no converged solve"):  # the converged head is for a linear head
        AttentionHeadTuner(mem, HeadConfig())
