"""Pretraining: MLM masking, data, evaluation against the truth, the training loop and checkpoints.

The two end-to-end runs use the ``ci`` preset's model and training configs on
``paper_hmm(4, 10, seed=0)``, with two overrides: ``num_steps=100`` (the preset's model has
essentially converged by then; a few seconds per run on one CPU thread) and ``eval_every=20``
(so that the learning curve has points before convergence).
"""
from __future__ import annotations

import dataclasses
import math
import os

import pytest
import torch
from torch import nn

import hmmlib
import importlib
from hmmlib.lm.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from hmmlib.hmm.inference import masked_token_conditionals, next_token_conditionals
from hmmlib.lm.pretrain import (
    HMMData,
    TrainConfig,
    causal_inputs,
    evaluate,
    load_pretrained,
    mask_tokens,
    pretrain,
)
from hmmlib.lm.transformer import ModelOutput, Transformer, TransformerConfig

CI = hmmlib.get_preset("ci").pretrain
pretrain_mod = importlib.import_module("hmmlib.lm.pretrain")  # (hmmlib.pretrain is also the function)
METRICS = {"tv", "kl", "model_loss", "bayes_loss", "excess_loss"}


def tolerance(p: float, n: int, num_sd: float = 5.0) -> float:
    """``num_sd`` binomial standard errors of a frequency over ``n`` trials, plus half a count."""
    return num_sd * math.sqrt(p * (1 - p) / n) + 0.5 / n


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_configs(V: int = 10, *, causal: bool = False, **train):
    """A model and a run that take a fraction of a second."""
    mcfg = TransformerConfig(num_symbols=V, d_model=16, num_layers=1, num_heads=2, max_len=16, causal=causal)
    kw = dict(objective="causal" if causal else "mlm", num_steps=4, batch_size=4, seq_len=8, warmup_steps=1,
              eval_every=100, eval_num_seqs=4)
    kw.update(train)
    return mcfg, TrainConfig(**kw)


def state_dicts_equal(a: nn.Module, b: nn.Module, atol: float = 0.0) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=atol, msg=lambda m, k=k: f"{k}: {m}")


@pytest.fixture(scope="module")
def paper4() -> hmmlib.HMM:
    return hmmlib.paper_hmm(4, 10, seed=0)


# --------------------------------------------------------------------------- MLM masking
MODEL_CFG = TransformerConfig(num_symbols=7, d_model=8, num_layers=1, num_heads=1)


@pytest.mark.parametrize("p", [0.15, 1.0])
def test_mask_tokens_selection_rate_and_80_10_10_split(p):
    Vs = MODEL_CFG.num_symbols
    x = torch.full((500, 400), 3)
    n = x.numel()
    inputs, selected = mask_tokens(x, MODEL_CFG, p, gen(0))
    assert inputs.shape == x.shape and selected.shape == x.shape and selected.dtype == torch.bool
    assert abs(selected.float().mean().item() - p) <= tolerance(p, n)
    m = int(selected.sum())
    chosen = inputs[selected]
    counts = torch.bincount(chosen, minlength=Vs + 2).double() / m
    # [MASK] 80%; a uniform random symbol 10% (it may be the original); kept 10%
    expected = torch.full((Vs + 2,), 0.1 / Vs, dtype=torch.float64)
    expected[3] += 0.1
    expected[MODEL_CFG.mask_id] = 0.8
    expected[MODEL_CFG.bos_id] = 0.0
    for s in range(Vs + 2):
        assert abs(counts[s].item() - expected[s].item()) <= tolerance(expected[s].item(), m), (s, counts[s], expected[s])
    assert counts[MODEL_CFG.bos_id] == 0


@pytest.mark.parametrize("p", [0.05, 0.5])
def test_mask_tokens_on_random_text(p):
    Vs = MODEL_CFG.num_symbols
    x = torch.randint(Vs, (300, 200), generator=gen(1))
    original = x.clone()
    inputs, selected = mask_tokens(x, MODEL_CFG, p, gen(2))
    assert torch.equal(x, original), "mask_tokens must not modify its input"
    n = x.numel()
    assert abs(selected.float().mean().item() - p) <= tolerance(p, n)
    assert torch.equal(inputs[~selected], x[~selected]), "unselected positions must stay unchanged"
    m = int(selected.sum())
    masked = inputs[selected] == MODEL_CFG.mask_id
    kept = inputs[selected] == x[selected]
    assert abs(masked.double().mean().item() - 0.8) <= tolerance(0.8, m)
    assert abs(kept.double().mean().item() - (0.1 + 0.1 / Vs)) <= tolerance(0.1 + 0.1 / Vs, m)
    replaced = inputs[selected][~masked]
    assert replaced.min() >= 0 and replaced.max() < Vs, "random replacements must be symbols, never special ids"
    assert int((inputs == MODEL_CFG.bos_id).sum()) == 0


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (64, 32)])
def test_mask_tokens_selects_at_least_one_position(shape):
    x = torch.randint(MODEL_CFG.num_symbols, shape, generator=gen(0))
    for seed in range(5):
        inputs, selected = mask_tokens(x, MODEL_CFG, 1e-12, gen(seed))
        assert int(selected.sum()) == 1
        assert torch.equal(inputs[~selected], x[~selected])


@pytest.mark.parametrize("shape", [(0, 5), (3, 0), (0, 0), (4,)])
def test_mask_tokens_refuses_empty_or_non_2d_batches(shape):
    x = torch.zeros(shape, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"tokens must be a non-empty \(batch, seq_len\) tensor; got shape"):
        mask_tokens(x, MODEL_CFG, 0.15, gen(0))


def test_mask_tokens_probability_one_selects_everything():
    x = torch.randint(MODEL_CFG.num_symbols, (20, 30), generator=gen(0))
    _, selected = mask_tokens(x, MODEL_CFG, 1.0, gen(0))
    assert bool(selected.all())


def test_mask_tokens_is_reproducible():
    x = torch.randint(MODEL_CFG.num_symbols, (16, 32), generator=gen(0))
    a = mask_tokens(x, MODEL_CFG, 0.3, gen(7))
    b = mask_tokens(x, MODEL_CFG, 0.3, gen(7))
    c = mask_tokens(x, MODEL_CFG, 0.3, gen(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_causal_inputs_shift_right_after_bos():
    cfg = TransformerConfig(num_symbols=4, d_model=8, num_layers=1, num_heads=1, causal=True)
    x = torch.tensor([[0, 1, 2, 3], [3, 3, 1, 0]])
    assert causal_inputs(x, cfg).tolist() == [[5, 0, 1, 2], [5, 3, 3, 1]]


# --------------------------------------------------------------------------- configs and argument checks
@pytest.mark.parametrize("kw,match", [
    (dict(objective="clm"), r"objective must be one of \('mlm', 'causal'\); got 'clm'"),
    (dict(mlm_probability=0.0), r"mlm_probability must be a finite number > 0 and <= 1"),
    (dict(mlm_probability=-0.1), r"mlm_probability must be a finite number > 0 and <= 1"),
    (dict(mlm_probability=1.5), r"mlm_probability must be a finite number > 0 and <= 1"),
    (dict(seq_len=32, corpus_tokens=1000, doc_len=48), r"doc_len \(48\) must be a multiple of seq_len \(32\)"),
    (dict(seq_len=32, corpus_tokens=100, doc_len=128), r"corpus_tokens >= doc_len"),
    (dict(seq_len=32, corpus_tokens=16), r"corpus_tokens >= doc_len"),
    (dict(num_steps=0), r"TrainConfig\.num_steps must be a positive integer"),
    (dict(batch_size=-2), r"TrainConfig\.batch_size must be a positive integer"),
    (dict(seq_len=1.5), r"TrainConfig\.seq_len must be a positive integer"),
    (dict(eval_every=0), r"TrainConfig\.eval_every must be a positive integer"),
    (dict(lr=0.0), r"TrainConfig\.lr must be a finite number > 0; got 0.0"),
    (dict(lr=float("nan")), r"TrainConfig\.lr must be a finite number > 0; got nan"),
    (dict(warmup_steps=-1), r"TrainConfig\.warmup_steps must be a non-negative integer"),
    (dict(weight_decay=-0.1), r"TrainConfig\.weight_decay must be a finite number >= 0"),
    (dict(weight_decay=float("inf")), r"TrainConfig\.weight_decay must be a finite number >= 0"),
    (dict(grad_clip=float("nan")), r"TrainConfig\.grad_clip must be a finite number >= 0"),
    (dict(seed=1.5), r"TrainConfig\.seed must be an int; got 1.5"),
    (dict(seed=True), r"TrainConfig\.seed must be an int"),
    (dict(compile="yes"), r"TrainConfig\.compile must be one of \(True, False\)"),
])
def test_train_config_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


def test_train_config_accepts_a_valid_corpus_and_round_trips():
    cfg = TrainConfig(seq_len=32, corpus_tokens=1024, doc_len=256, objective="causal", mlm_probability=1.0)
    assert TrainConfig(**cfg.to_dict()) == cfg


def test_train_config_rejects_negative_doc_len():
    with pytest.raises(ValueError, match="doc_len"):
        TrainConfig(seq_len=32, corpus_tokens=64, doc_len=-32)


def test_pretrain_argument_checks(paper4):
    mcfg, tcfg = tiny_configs()
    with pytest.raises(ValueError, match=r"model_cfg\.num_symbols=5 but the HMM has 10 symbols"):
        pretrain(paper4, dataclasses.replace(mcfg, num_symbols=5), tcfg, device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"model_cfg\.causal must be True exactly when"):
        pretrain(paper4, dataclasses.replace(mcfg, causal=True), tcfg, device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"model_cfg\.causal must be True exactly when"):
        pretrain(paper4, mcfg, dataclasses.replace(tcfg, objective="causal"), device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"seq_len=40 needs max_len > seq_len"):
        pretrain(paper4, mcfg, dataclasses.replace(tcfg, seq_len=40), device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"resume=True needs checkpoint_path"):
        pretrain(paper4, mcfg, tcfg, device="cpu", progress=False, resume=True)


# --------------------------------------------------------------------------- data
def test_fixed_corpus_batches_are_rows_of_the_corpus(paper4):
    cfg = TrainConfig(seq_len=8, batch_size=16, corpus_tokens=160, doc_len=16, seed=3)
    data = HMMData(paper4, cfg, gen(0))
    assert data.blocks.shape == (20, 8)  # 10 documents of 16 tokens, 2 blocks each
    seen = set()
    for _ in range(40):
        b = data.batch()
        assert b.shape == (16, 8) and b.dtype == torch.int64
        match = (b[:, None, :] == data.blocks[None]).all(-1)  # (batch, blocks)
        assert bool(match.any(1).all()), "every batch row must be a block of the fixed corpus"
        seen.update(map(tuple, b.tolist()))
    assert seen == set(map(tuple, data.blocks.tolist())), "batches should draw from the whole corpus"
    # deterministic for a seed: the corpus depends on cfg.seed, the draws on the generator
    again = HMMData(paper4, cfg, gen(0))
    assert torch.equal(again.blocks, data.blocks)
    first = HMMData(paper4, cfg, gen(0)).batch()
    assert torch.equal(again.batch(), first)
    assert not torch.equal(HMMData(paper4, cfg, gen(1)).batch(), first)
    other = HMMData(paper4, dataclasses.replace(cfg, seed=4), gen(0))
    assert not torch.equal(other.blocks, data.blocks)


def test_fresh_data_is_new_every_batch_and_reproducible(paper4):
    cfg = TrainConfig(seq_len=12, batch_size=6)
    data = HMMData(paper4, cfg, gen(0))
    assert data.blocks is None
    a, b = data.batch(), data.batch()
    assert a.shape == (6, 12) and not torch.equal(a, b)
    again = HMMData(paper4, cfg, gen(0))
    assert torch.equal(again.batch(), a) and torch.equal(again.batch(), b)


def test_pretrain_trains_on_the_fixed_corpus(paper4, monkeypatch):
    mcfg, tcfg = tiny_configs(num_steps=5, corpus_tokens=64, doc_len=16)
    seen = []
    original = HMMData.batch

    def recording(self):
        out = original(self)
        seen.append((self.blocks, out))
        return out

    monkeypatch.setattr(pretrain_mod.HMMData, "batch", recording)
    pretrain(paper4, mcfg, tcfg, device="cpu", progress=False)
    assert len(seen) == 5
    for blocks, b in seen:
        assert blocks is not None and blocks.shape == (8, 8)
        assert bool((b[:, None, :] == blocks[None]).all(-1).any(1).all())


# --------------------------------------------------------------------------- evaluate()
class Oracle(nn.Module):
    """Duck-typed stand-in for a Transformer: exact conditionals, a uniform or a unigram guess."""

    def __init__(self, hmm: hmmlib.HMM, cfg: TransformerConfig, kind: str):
        super().__init__()
        self.hmm, self.cfg, self.kind = hmm, cfg, kind
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, tokens, positions=None):
        B, T = tokens.shape
        cfg = self.cfg
        if self.kind == "uniform":
            logits = torch.zeros(B, T, cfg.num_symbols)
        elif self.kind == "unigram":  # W s, with s = lim A^n pi by power iteration
            h = self.hmm.to(dtype=torch.float64)
            u = h.W @ torch.linalg.matrix_power(h.A, 2000) @ h.pi
            logits = u.log().float().expand(B, T, -1)
        elif cfg.causal:  # inputs are [BOS] x_0 .. x_{T-2}; out[t] predicts x_t from x_{<t}
            assert bool((tokens[:, 0] == cfg.bos_id).all())
            x = torch.cat([tokens[:, 1:], torch.zeros(B, 1, dtype=tokens.dtype)], 1)
            logits = next_token_conditionals(self.hmm, x).log().float()
        else:  # one [MASK] per row; P(X_t | x_{-t}) does not depend on what stands at t
            mask = tokens == cfg.mask_id
            assert bool((mask.sum(1) == 1).all())
            logits = masked_token_conditionals(self.hmm, tokens.masked_fill(mask, 0)).log().float()
        if positions is not None:
            logits = logits[torch.arange(B)[:, None], positions]
        return ModelOutput(logits, torch.zeros(*logits.shape[:-1], 1))


@pytest.fixture(scope="module")
def dir_hmm() -> hmmlib.HMM:
    return hmmlib.dirichlet_hmm(3, 6, seed=0)  # every probability positive: any context is possible


@pytest.mark.parametrize("causal", [False, True], ids=["mlm", "causal"])
def test_evaluate_keys_and_ranges_for_a_real_model(dir_hmm, causal):
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(num_symbols=6, d_model=16, num_layers=1, num_heads=2, max_len=16, causal=causal))
    model.train()
    out = evaluate(model, dir_hmm, 16, 10)
    assert model.training, "evaluate() must restore training mode"
    expected = METRICS | {f"pos0_{k}" for k in METRICS} if not causal else METRICS
    assert expected <= set(out)
    assert causal == (not any(k.startswith("pos0_") for k in out))
    for prefix in ([""] if causal else ["", "pos0_"]):
        assert 0.0 <= out[prefix + "tv"] <= 1.0
        assert out[prefix + "kl"] >= 0.0
        assert out[prefix + "model_loss"] > 0.0 and out[prefix + "bayes_loss"] > 0.0
    assert evaluate(model.eval(), dir_hmm, 16, 10) == evaluate(model, dir_hmm, 16, 10)  # seeded held-out text
    assert not model.training


@pytest.mark.parametrize("causal", [False, True], ids=["mlm", "causal"])
def test_evaluate_scores_the_exact_model_as_perfect(dir_hmm, causal):
    cfg = TransformerConfig(num_symbols=6, d_model=8, num_layers=1, num_heads=1, causal=causal)
    exact = evaluate(Oracle(dir_hmm, cfg, "exact"), dir_hmm, 64, 12)
    prefixes = [""] if causal else ["", "pos0_"]
    for prefix in prefixes:
        assert exact[prefix + "tv"] < 1e-5
        assert abs(exact[prefix + "kl"]) < 1e-5
        assert abs(exact[prefix + "excess_loss"]) < 1e-5
    uniform = evaluate(Oracle(dir_hmm, cfg, "uniform"), dir_hmm, 64, 12)
    for prefix in prefixes:
        # a uniform guess costs log V per token, whatever the text; the truth is the same
        assert uniform[prefix + "model_loss"] == pytest.approx(math.log(6), abs=1e-6)
        assert uniform[prefix + "bayes_loss"] == pytest.approx(exact[prefix + "bayes_loss"], abs=1e-12)
        assert uniform[prefix + "excess_loss"] > 0.05 and uniform[prefix + "kl"] > 0.05 and uniform[prefix + "tv"] > 0.05


@pytest.mark.parametrize("causal", [False, True], ids=["mlm", "causal"])
def test_evaluate_unigram_baseline(dir_hmm, causal):
    cfg = TransformerConfig(num_symbols=6, d_model=8, num_layers=1, num_heads=1, causal=causal)
    prefixes = [""] if causal else ["", "pos0_"]
    # emissions that do not depend on the state: every exact conditional is the unigram u itself
    u = torch.tensor([0.5, 0.2, 0.1, 0.1, 0.05, 0.05], dtype=torch.float64)
    iid = hmmlib.HMM(dir_hmm.pi, dir_hmm.A, u[:, None].expand(6, 3).clone())
    out = evaluate(Oracle(iid, cfg, "uniform"), iid, 64, 12)
    for prefix in prefixes:
        assert out[prefix + "unigram_tv"] == pytest.approx(0.0, abs=1e-6)
        assert out[prefix + "unigram_kl"] == pytest.approx(0.0, abs=1e-6)
        assert out[prefix + "unigram_loss"] == pytest.approx(out[prefix + "bayes_loss"], abs=1e-6)
    # state-dependent emissions: the context helps, the unigram is worse than the truth
    exact = evaluate(Oracle(dir_hmm, cfg, "exact"), dir_hmm, 64, 12)
    for prefix in prefixes:
        assert out[prefix + "unigram_loss"] > 0.5  # > 0: a real loss, not a placeholder
        assert exact[prefix + "unigram_kl"] > 0.01 and exact[prefix + "unigram_tv"] > 0.01
        assert exact[prefix + "unigram_loss"] > exact[prefix + "bayes_loss"] + 0.01
    out = evaluate(Oracle(dir_hmm, cfg, "unigram"), dir_hmm, 64, 12)
    for prefix in prefixes:
        # a model that outputs W s is scored exactly like the reported unigram baseline
        assert out[prefix + "unigram_loss"] == pytest.approx(out[prefix + "model_loss"], abs=1e-6)
        assert out[prefix + "unigram_tv"] == pytest.approx(out[prefix + "tv"], abs=1e-6)
        assert out[prefix + "unigram_kl"] == pytest.approx(out[prefix + "kl"], abs=1e-6)


# --------------------------------------------------------------------------- pretraining at the ci preset
CI_STEPS, CI_EVAL_EVERY = 100, 20


def unigram_entropy(hmm: hmmlib.HMM) -> float:
    u = hmm.W.double() @ hmm.stationary().double()
    return float(-(u * u.log()).sum())


@pytest.fixture(scope="module")
def ci_runs(paper4, tmp_path_factory):
    """The ci preset's configs (num_steps and eval_every overridden, see above), both objectives;
    each run also writes a checkpoint."""
    folder = tmp_path_factory.mktemp("ci")
    runs = {}
    for objective in ("mlm", "causal"):
        mcfg, tcfg = CI.configs(paper4.num_symbols, objective, num_steps=CI_STEPS, eval_every=CI_EVAL_EVERY)
        path = folder / f"{objective}.pt"
        runs[objective] = (pretrain(paper4, mcfg, tcfg, device="cpu", progress=False, checkpoint_path=path), path)
    return runs


@pytest.mark.parametrize("objective", ["mlm", "causal"])
def test_pretraining_learns_the_hmm(ci_runs, paper4, objective):
    result, _ = ci_runs[objective]
    h = result.history
    assert result.step == CI_STEPS
    assert [r["step"] for r in h] == list(range(CI_EVAL_EVERY, CI_STEPS + 1, CI_EVAL_EVERY))
    first, last = h[0], h[-1]
    assert last["excess_loss"] < 0.3 * first["excess_loss"], [r["excess_loss"] for r in h]
    assert last["kl"] < first["kl"] and last["tv"] < first["tv"]
    # better than the best context-free predictor, never (much) better than the truth
    assert last["model_loss"] < unigram_entropy(paper4) - 0.3
    assert last["model_loss"] < last["unigram_loss"]
    assert last["model_loss"] >= last["bayes_loss"] - 0.05
    assert math.isfinite(last["train_loss"]) and last["tokens_per_second"] > 0
    assert not result.model.training


def test_pretraining_is_deterministic_for_a_seed(ci_runs, paper4):
    # a short rerun of the ci causal config with stop_at reproduces the first steps exactly
    result, _ = ci_runs["causal"]
    mcfg, tcfg = result.model_cfg, result.train_cfg
    a = pretrain(paper4, mcfg, tcfg, device="cpu", progress=False, stop_at=3)
    b = pretrain(paper4, mcfg, tcfg, device="cpu", progress=False, stop_at=3)
    c = pretrain(paper4, mcfg, dataclasses.replace(tcfg, seed=1), device="cpu", progress=False, stop_at=3)
    assert a.step == 3
    state_dicts_equal(a.model, b.model)
    assert not torch.equal(a.model.tok_emb.weight, c.model.tok_emb.weight)


# --------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip(ci_runs):
    result, path = ci_runs["mlm"]
    loaded = load_pretrained(path, device="cpu")
    assert loaded.model_cfg == result.model_cfg and loaded.train_cfg == result.train_cfg
    assert loaded.step == result.step == CI_STEPS
    assert loaded.history == result.history
    assert not loaded.model.training
    state_dicts_equal(loaded.model, result.model)
    x = torch.randint(10, (4, 20), generator=gen(0))
    x[:, 3] = result.model_cfg.mask_id
    with torch.no_grad():
        assert torch.equal(loaded.model(x).logits, result.model(x).logits)
    assert not list(path.parent.glob("*.tmp"))


def _tensors_equal(a, b, where: str = "") -> None:
    """Nested dicts/lists of tensors and plain values, compared exactly (bit for bit)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _tensors_equal(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _tensors_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


@pytest.mark.parametrize("corpus", ["fresh", "fixed"])
@pytest.mark.parametrize("objective", ["mlm", "causal"])
def test_resume_equals_training_in_one_go(paper4, tmp_path, objective, corpus):
    """On CPU, stopping at step 20 and resuming gives bit for bit the run made in one go: weights,
    AdamW moments and step counts, the scheduler, the RNG states and every logged metric but the
    wall-clock throughput."""
    # dropout > 0 so that the global torch RNG (restored from the checkpoint) matters too
    extra = dict(corpus_tokens=2048, doc_len=64) if corpus == "fixed" else {}
    mcfg, tcfg = CI.configs(10, objective, num_steps=40, batch_size=4, seq_len=16, warmup_steps=5,
                            eval_every=10, eval_num_seqs=8, **extra)
    mcfg = dataclasses.replace(mcfg, dropout=0.1)
    whole = pretrain(paper4, mcfg, tcfg, device="cpu", progress=False, checkpoint_path=tmp_path / "whole.pt")
    path = tmp_path / "run.pt"
    half = pretrain(paper4, mcfg, tcfg, device="cpu", progress=False, stop_at=20, checkpoint_path=path)
    assert half.step == 20
    mid = load_checkpoint(path)
    assert mid["step"] == 20
    # the schedule at step 20 of 40 with 5 warmup steps: lr * (40 - 20) / (40 - 5)
    assert mid["scheduler"]["last_epoch"] == 20
    assert mid["scheduler"]["_last_lr"] == pytest.approx([tcfg.lr * 20 / 35], rel=1e-12)
    assert not torch.allclose(half.model.tok_emb.weight, whole.model.tok_emb.weight, atol=1e-6)
    resumed = pretrain(paper4, mcfg, tcfg, device="cpu", progress=False, resume=True, checkpoint_path=path)
    assert resumed.step == 40
    state_dicts_equal(resumed.model, whole.model)  # atol = 0
    assert [r["step"] for r in resumed.history] == [10, 20, 30, 40]
    for got, want in zip(resumed.history, whole.history):
        assert {k: v for k, v in got.items() if k != "tokens_per_second"} == \
            {k: v for k, v in want.items() if k != "tokens_per_second"}
    a, b = load_checkpoint(tmp_path / "whole.pt"), load_checkpoint(path)  # the resumed run saved its final state
    assert b["step"] == 40
    for key in ("model", "optimizer", "scheduler", "rng"):
        _tensors_equal(a[key], b[key], key)
    assert a["optimizer"]["state"][0]["step"] == 40  # the AdamW moments really were carried over


def test_stop_at_zero_raises_and_writes_nothing(paper4, tmp_path):
    mcfg, tcfg = tiny_configs()
    path = tmp_path / "never.pt"
    with pytest.raises(ValueError, match=r"stop_at"):
        pretrain(paper4, mcfg, tcfg, device="cpu", progress=False, stop_at=0, checkpoint_path=path)
    assert not path.exists() and not list(tmp_path.iterdir())
    # nor does it overwrite an existing checkpoint
    pretrain(paper4, mcfg, tcfg, device="cpu", progress=False, stop_at=1, checkpoint_path=path)
    before = path.read_bytes()
    for bad in (0, -3):
        with pytest.raises(ValueError, match=r"stop_at"):
            pretrain(paper4, mcfg, tcfg, device="cpu", progress=False, stop_at=bad, checkpoint_path=path, resume=True)
    assert path.read_bytes() == before


@pytest.fixture(scope="module")
def tiny_run(paper4, tmp_path_factory):
    mcfg, tcfg = tiny_configs()
    path = tmp_path_factory.mktemp("tiny") / "tiny.pt"
    result = pretrain(paper4, mcfg, tcfg, device="cpu", progress=False, stop_at=2, checkpoint_path=path)
    return result, path


@pytest.mark.parametrize("change", ["lr", "seed", "num_steps", "d_model", "causal_and_objective"])
def test_resume_with_other_configs_raises(paper4, tiny_run, tmp_path, change):
    result, path = tiny_run
    mcfg, tcfg = result.model_cfg, result.train_cfg
    if change == "lr":
        tcfg = dataclasses.replace(tcfg, lr=tcfg.lr * 2)
    elif change == "seed":
        tcfg = dataclasses.replace(tcfg, seed=tcfg.seed + 1)
    elif change == "num_steps":
        tcfg = dataclasses.replace(tcfg, num_steps=tcfg.num_steps + 1)
    elif change == "d_model":
        mcfg = dataclasses.replace(mcfg, d_model=32)
    else:
        mcfg = dataclasses.replace(mcfg, causal=True)
        tcfg = dataclasses.replace(tcfg, objective="causal")
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"trained with other configs; it cannot be resumed"):
        pretrain(paper4, mcfg, tcfg, device="cpu", progress=False, resume=True, checkpoint_path=path)
    assert path.read_bytes() == before


def test_resume_from_a_missing_checkpoint_raises(paper4, tmp_path):
    mcfg, tcfg = tiny_configs()
    with pytest.raises(ValueError, match=r"no checkpoint at .*nope\.pt"):
        pretrain(paper4, mcfg, tcfg, device="cpu", progress=False, resume=True, checkpoint_path=tmp_path / "nope.pt")


_side_effects: list[str] = []


def _record(msg: str) -> str:
    _side_effects.append(msg)
    return msg


class Booby:
    """Unpickling this would call _record: a weights_only load must refuse it."""

    def __reduce__(self):
        return (_record, ("unpickled an arbitrary object",))


@pytest.mark.parametrize("kind", ["truncated", "random_bytes", "empty", "foreign_torch_file", "list_payload",
                                  "arbitrary_object", "missing", "directory", "missing_keys"])
def test_bad_checkpoint_files_raise_helpful_errors(tiny_run, tmp_path, kind):
    _, good = tiny_run
    bad = tmp_path / "bad.pt"
    if kind == "truncated":
        data = good.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
        match = r"not a readable hmmlib checkpoint .*truncated or corrupt: delete it and retrain"
    elif kind == "random_bytes":
        bad.write_bytes(torch.randint(256, (4096,), generator=gen(0), dtype=torch.uint8).numpy().tobytes())
        match = r"not a readable hmmlib checkpoint"
    elif kind == "empty":
        bad.write_bytes(b"")
        match = r"not a readable hmmlib checkpoint"
    elif kind == "foreign_torch_file":
        torch.save({"a": 1}, bad)
        match = rf"is a torch file but not an hmmlib checkpoint \(expected format '{FORMAT}'\)"
    elif kind == "list_payload":
        torch.save([1, 2, 3], bad)
        match = r"is a torch file but not an hmmlib checkpoint"
    elif kind == "arbitrary_object":
        torch.save({"format": FORMAT, "obj": Booby()}, bad)
        match = r"not a readable hmmlib checkpoint"
    elif kind == "missing":
        bad = tmp_path / "does_not_exist.pt"
        match = r"no checkpoint at .*does_not_exist\.pt; train a model first or check the path"
    elif kind == "directory":
        bad = tmp_path / "adir.pt"
        bad.mkdir()
        match = r"no checkpoint at"
    else:
        save_checkpoint(bad, {"model_cfg": {}, "step": 0})
        match = r"lacks \['train_cfg', 'model'\]"
    _side_effects.clear()
    with pytest.raises(ValueError, match=match):
        load_pretrained(bad, device="cpu")
    assert not _side_effects, "loading a checkpoint must never run pickled code"


def _bigger_model(s):
    s["model_cfg"]["d_model"] = 32  # the weights no longer fit the config


def _unknown_model_field(s):
    s["model_cfg"]["new_field"] = 1


def _renamed_train_field(s):
    s["train_cfg"]["task"] = s["train_cfg"].pop("objective")


@pytest.mark.parametrize("mutate", [_bigger_model, _unknown_model_field, _renamed_train_field])
def test_checkpoint_from_another_version_raises(tiny_run, tmp_path, mutate):
    _, good = tiny_run
    state = load_checkpoint(good)
    assert state.pop("format") == FORMAT
    mutate(state)
    path = save_checkpoint(tmp_path / "other.pt", state)
    with pytest.raises(ValueError, match=r"(?s)does not match this version of hmmlib .* delete it and retrain"):
        load_pretrained(path, device="cpu")


def test_save_checkpoint_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "deep" / "er" / "ck.pt"  # parents are created
    assert save_checkpoint(path, {"x": torch.arange(5), "step": 1}) == path
    before = path.read_bytes()
    assert sorted(p.name for p in path.parent.iterdir()) == ["ck.pt"]

    # an object torch.save cannot serialise: the error propagates, the old file survives
    with pytest.raises(Exception):
        save_checkpoint(path, {"x": torch.arange(3), "fn": lambda: 0})
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["ck.pt"], "no temporary file may be left behind"

    # a crash in the middle of writing (after some bytes went out), even a KeyboardInterrupt
    def crashing_save(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a zip file")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"x": torch.arange(7)})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["ck.pt"]
    assert torch.equal(load_checkpoint(path)["x"], torch.arange(5))

    # a successful save replaces the file and still leaves no temporary file
    save_checkpoint(path, {"x": torch.arange(9)})
    assert torch.equal(load_checkpoint(path, ("x",))["x"], torch.arange(9))
    assert sorted(p.name for p in path.parent.iterdir()) == ["ck.pt"]
    assert not os.path.exists(str(path) + ".tmp")


def test_load_checkpoint_checks_required_keys(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"a": 1, "b": torch.ones(2)})
    assert load_checkpoint(path, ("a", "b"))["a"] == 1
    with pytest.raises(ValueError, match=r"lacks \['c'\]; it was written by another version or another tool"):
        load_checkpoint(path, ("a", "c"))


# =========================================================================== the optimised step against references
def _reference_mask_tokens(tokens, model_cfg, mlm_probability, generator):
    """BERT's masking written plainly (boolean-index writes), drawing the same random numbers in the same order."""
    u = torch.rand(tokens.shape + (3,), generator=generator, device=tokens.device)
    selected = u[..., 0] < mlm_probability
    if not selected.any():
        selected[0, 0] = True
    inputs = tokens.clone()
    to_mask = selected & (u[..., 1] < 0.8)
    to_random = selected & ~to_mask & (u[..., 2] < 0.5)
    inputs[to_mask] = model_cfg.mask_id
    rand = torch.randint(model_cfg.num_symbols, tokens.shape, generator=generator, device=tokens.device)
    inputs[to_random] = rand[to_random]
    return inputs, selected


@pytest.mark.parametrize("p", [0.01, 0.15, 0.3, 1.0])
def test_mask_tokens_equals_the_plain_reference_exactly(p):
    cfg = TransformerConfig(num_symbols=10, d_model=16, num_layers=1, num_heads=2, max_len=64)
    tokens = torch.randint(10, (37, 29), generator=torch.Generator().manual_seed(1))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for _ in range(3):  # and the generators stay in step
        a, sa = mask_tokens(tokens, cfg, p, g1)
        b, sb = _reference_mask_tokens(tokens, cfg, p, g2)
        assert torch.equal(a, b) and torch.equal(sa, sb)
    assert torch.equal(g1.get_state(), g2.get_state())


def _reference_selector(positions, B, n_real, offset):
    """The boolean-mask selection written plainly: ``y[:, offset:][positions]``."""
    if positions is None or positions.dtype != torch.bool:
        return _ORIGINAL_SELECTOR(positions, B, n_real, offset)
    return lambda y: y[:, offset:][positions]


_ORIGINAL_SELECTOR = Transformer._selector


@pytest.mark.parametrize("prompt_len", [0, 3])
def test_mlm_loss_and_gradients_equal_the_plain_selection_bit_for_bit(prompt_len, monkeypatch):
    """The masked-LM step (loss and every gradient) is the same, bit for bit, as with a plain boolean index."""
    torch.manual_seed(0)
    cfg = TransformerConfig(num_symbols=10, d_model=32, num_layers=2, num_heads=4, max_len=48)
    model = Transformer(cfg)
    tokens = torch.randint(10, (8, 24), generator=torch.Generator().manual_seed(2))
    inputs, selected = mask_tokens(tokens, cfg, 0.3, torch.Generator().manual_seed(3))
    prompt = torch.randn(prompt_len, cfg.d_model) if prompt_len else None

    def loss_and_grads():
        model.zero_grad(set_to_none=True)
        logits = model(inputs, prompt=prompt, positions=selected).logits
        loss = torch.nn.functional.cross_entropy(logits, tokens[selected])
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    loss, grads = loss_and_grads()
    monkeypatch.setattr(Transformer, "_selector", staticmethod(_reference_selector))
    ref_loss, ref_grads = loss_and_grads()
    assert torch.equal(loss, ref_loss)
    assert all(torch.equal(a, b) for a, b in zip(grads, ref_grads))
    # and the selected rows are those of the full forward pass (to rounding: the last block then multiplies
    # fewer rows)
    full = model(inputs, prompt=prompt).logits[selected]
    torch.testing.assert_close(model(inputs, prompt=prompt, positions=selected).logits, full, atol=1e-5, rtol=1e-5)
