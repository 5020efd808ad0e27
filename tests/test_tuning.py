"""Downstream tuning (hmmlib.adapt): the ideal model's head and prompt tuning
against the theory, and the frozen transformer's head / prompt / prefix tuning and fine-tuning
(exactness of token initialisations, lossless MLP drop, frozen weights, parameter counts)."""
from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)

import hmmlib  # noqa: E402
from hmmlib import tasks, theory  # noqa: E402
from hmmlib.adapt import (  # noqa: E402
    PAPER_TUNING, FakeTokenPromptConfig, FineTuningConfig, HeadConfig, PrefixEncoder, PrefixTuningConfig,
    PromptTuningConfig, TransformerTuner, make_tuner, prefix_from_tokens, tune_and_evaluate,
)
from hmmlib.adapt.ideal import IdealTuner, _prior_ratio, ideal_prompted_features  # noqa: E402

V = 10
#: the AdamW loop alone, once: a fresh head and one run (the tests of the loop's mechanics)
LOOP = dict(head_init="random", restarts=1)


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def paper_splits():
    hmm = hmmlib.paper_hmm(4, V, seed=0)
    task, splits, _ = tasks.paper_task_and_splits(hmm, seed=0, sizes=(512, 128, 512), seq_len=32)
    return hmm, task, splits


@pytest.fixture(scope="module")
def small_splits():
    """Short inputs for the transformer tests."""
    hmm = hmmlib.paper_hmm(4, V, seed=1)
    _, splits, _ = tasks.paper_task_and_splits(hmm, seed=1, sizes=(96, 32, 32), seq_len=12)
    return splits


def random_model(num_layers: int = 2, causal: bool = False, seed: int = 0) -> hmmlib.Transformer:
    """A tiny transformer with large random weights, so that its outputs vary a lot with the input
    (the default 0.02 init gives nearly uniform outputs, which would make equality tests weak)."""
    torch.manual_seed(seed)
    cfg = hmmlib.TransformerConfig(num_symbols=V, d_model=32, num_layers=num_layers, num_heads=2, max_len=64,
                                   causal=causal)
    model = hmmlib.Transformer(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model.eval()


def hard_probs(model, prompt_tokens, x):
    """The model's distribution at a [MASK] typed after ``prompt_tokens`` and before ``x``."""
    k = len(prompt_tokens)
    inputs = torch.cat([torch.tensor(prompt_tokens, dtype=torch.long).expand(x.shape[0], -1),
                        torch.full_like(x[:, :1], model.cfg.mask_id), x], 1)
    with torch.no_grad():
        return model(inputs, positions=torch.full((x.shape[0], 1), k)).probs()[:, 0]


def clone_state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(model, state):
    now = model.state_dict()
    assert now.keys() == state.keys()
    for k in state:
        assert torch.equal(now[k], state[k]), k


# --------------------------------------------------------------------------- configuration
def test_config_validation_and_paper_values():
    cfg = PromptTuningConfig.paper(prompt_len=20)
    assert (cfg.method, cfg.lr, cfg.num_epochs, cfg.batch_size, cfg.warmup_steps, cfg.weight_decay, cfg.prompt_len,
            cfg.schedule, cfg.seed) == ("prompt", 0.01, 100, 128, 500, 0.0, 20, "linear", 42)
    assert HeadConfig.paper(lr=0.1).lr == 0.1 and PAPER_TUNING["lr"] == 0.01
    # the defaults are the book's methods; the paper's are labelled choices
    assert HeadConfig().solver == "newton" and HeadConfig.paper().solver == "adamw" == HeadConfig.adamw(lr=0.1).solver
    for cls in (PromptTuningConfig, FakeTokenPromptConfig):
        assert (cls().head_init, cls().restarts) == ("converged", 3)
        paper = cls.paper()
        assert (paper.prompt_len, paper.init, paper.head_init, paper.restarts, paper.lr) == (20, "tokens", "random", 1, 0.01)
    assert HeadConfig(l2_grid=[1, 1e-3]).l2_grid == (1.0, 1e-3)
    bad = [(HeadConfig, dict(lr=0)), (HeadConfig, dict(lr=float("nan"))), (HeadConfig, dict(batch_size=0)),
           (HeadConfig, dict(num_epochs=0)), (HeadConfig, dict(num_steps=0)), (HeadConfig, dict(num_steps=2.5)),
           (HeadConfig, dict(weight_decay=-1.0)), (HeadConfig, dict(grad_clip=-1.0)), (HeadConfig, dict(warmup_steps=-1)),
           (HeadConfig, dict(schedule="cosine")), (HeadConfig, dict(seed=0.5)), (HeadConfig, dict(max_positions=0)),
           (PromptTuningConfig, dict(prompt_len=0)), (PrefixTuningConfig, dict(prefix_len=-1)),
           (PrefixTuningConfig, dict(mlp_hidden=0)), (PromptTuningConfig, dict(init="zeros")),
           (FakeTokenPromptConfig, dict(positivity="square")), (PromptTuningConfig, dict(init_tokens=(1,))),
           (PromptTuningConfig, dict(prompt_len=3, init="tokens", init_tokens=(1, 2))),
           (FakeTokenPromptConfig, dict(prompt_len=2, init="tokens", init_tokens=(1, -2))),
           (PromptTuningConfig, dict(prompt_lr_scale=0)), (PrefixTuningConfig, dict(freeze_mlp="yes")),
           (HeadConfig, dict(solver="lbfgs")), (HeadConfig, dict(l2_grid=())), (HeadConfig, dict(l2_grid=(1e-3, 0.0))),
           (PromptTuningConfig, dict(restarts=0)), (FakeTokenPromptConfig, dict(head_init="zeros")),
           (FakeTokenPromptConfig, dict(l2_grid=(float("nan"),)))]
    for cls, kw in bad:
        with pytest.raises(ValueError, match=cls.__name__):
            cls(**kw)
    hmm = hmmlib.paper_hmm(3, V, seed=0)
    for cfg in (PromptTuningConfig(), PrefixTuningConfig(), FineTuningConfig()):  # configs of a transformer
        with pytest.raises(ValueError, match=f"ideal model has no embeddings.*{type(cfg).__name__} is for a Transformer"):
            make_tuner(hmm, cfg)
    with pytest.raises(ValueError, match="TransformerTuner takes a HeadConfig or PromptTuningConfig"):
        make_tuner(random_model(), FakeTokenPromptConfig())   # the ideal model's prompt on a transformer
    with pytest.raises(ValueError, match="symbols in"):
        make_tuner(hmm, FakeTokenPromptConfig(prompt_len=1, init="tokens", init_tokens=(V,)))
    with pytest.raises(ValueError, match="masked LM"):
        make_tuner(random_model(causal=True), HeadConfig())
    with pytest.raises(ValueError, match="symbols in"):
        make_tuner(random_model(), PrefixTuningConfig(prefix_len=1, init="tokens", init_tokens=(V,)))
    with pytest.raises(ValueError, match="model must be an HMM"):
        make_tuner("bert", HeadConfig())


def test_bad_datasets(small_splits):
    with pytest.raises(ValueError, match="TaskDataset of this HMM"):  # a 4-state dataset on a 3-state HMM
        make_tuner(hmmlib.paper_hmm(3, V, seed=0), HeadConfig(num_steps=1)).fit(small_splits["train"])
    with pytest.raises(ValueError, match="leave no room for tokens"):  # 64 positions: 63 prompt vectors + [MASK]
        make_tuner(random_model(), PromptTuningConfig(prompt_len=63))
    empty = small_splits["train"].subset(1)
    empty = type(empty)(x=empty.x[:0], h0=empty.h0[:0], posterior=empty.posterior[:0], G=empty.G[:0], y=empty.y[:0],
                        majority_rate=1.0)
    for model in (hmmlib.paper_hmm(4, V, seed=1), random_model()):
        with pytest.raises(ValueError, match="training set is empty"):
            make_tuner(model, HeadConfig(num_steps=1)).fit(empty)


def test_inputs_longer_than_the_model_reads_are_cut_to_the_layout(small_splits):
    """A tuner reads [prompt] [MASK] and the first max_positions - 1 - prompt_len tokens, whatever the data length."""
    model, ds = random_model(), small_splits["test"]
    tuner = make_tuner(model, PromptTuningConfig(prompt_len=2, max_positions=8))
    assert tuner.layout.max_tokens == 5
    cut = type(ds)(x=ds.x[:, :5], h0=ds.h0, posterior=ds.posterior, G=ds.G, y=ds.y, majority_rate=ds.majority_rate)
    assert torch.equal(tuner.features(ds), tuner.features(cut))
    assert not torch.equal(tuner.features(ds), make_tuner(model, PromptTuningConfig(prompt_len=2)).features(ds))


# --------------------------------------------------------------------------- the ideal model
def test_ideal_head_full_rank_matches_closed_form(paper_splits):
    hmm, task, splits = paper_splits
    assert theory.nondegeneracy(hmm.W).full_column_rank
    tuner = make_tuner(hmm, HeadConfig.adamw(lr=0.1, num_steps=300, schedule="constant"))
    assert isinstance(tuner, IdealTuner)
    history = tuner.fit(splits["train"], splits["val"])
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    res = tuner.evaluate(splits["test"])
    closed = make_tuner(hmm, HeadConfig())
    closed.set_closed_form_head(task.mu)
    assert closed.evaluate(splits["test"])["accuracy"] == 1.0  # b^T G(x) = mu^T p(x) exactly (R2)
    agree = (tuner.predict(splits["test"]) == closed.predict(splits["test"])).double().mean()
    assert res["accuracy"] >= 0.97 and float(agree) >= 0.97, (res, agree)
    assert res["num_examples"] == 512


def test_ideal_prompt_beats_head_on_counterexample():
    ce = theory.counterexample_head_fails_prompt_works()
    splits = tasks.make_splits(ce.hmm, tasks.task_from_mu(ce.mu), (512, 128, 512), 32, seed=0)
    base = dict(lr=0.1, num_steps=400, schedule="constant")
    head = make_tuner(ce.hmm, HeadConfig())                       # the converged head: the best a head can do
    head.fit(splits["train"], splits["val"])
    prompt = make_tuner(ce.hmm, FakeTokenPromptConfig(prompt_len=1, **base))
    prompt.fit(splits["train"], splits["val"])
    acc_head = head.evaluate(splits["test"])["accuracy"]
    acc_prompt = prompt.evaluate(splits["test"])["accuracy"]
    best_head = theory.best_linear_head_accuracy_two_symbols(splits["test"].G, splits["test"].y)
    assert acc_head <= best_head + 1e-12 < 0.9  # no linear head on G can do it (R3)
    assert acc_prompt >= 0.95 and acc_prompt > acc_head, (acc_prompt, acc_head)
    assert (prompt.prompt_rows >= 0).all()


@pytest.mark.parametrize("positivity", ["exp", "softplus"])
def test_ideal_prompt_features_match_theory_and_finite_differences(positivity):
    hmm = hmmlib.dirichlet_hmm(3, 4, seed=0)  # pi not stationary: exercises the m_0 / pi reweighting
    x, _ = hmmlib.sample(hmm, 5, 6, seed=1)
    p = hmmlib.posterior_h0(hmm, x)
    ratio = _prior_ratio(hmm, 2)
    assert ratio is not None
    theta = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    got = ideal_prompted_features(hmm, theta, p, positivity=positivity, prior_ratio=ratio)
    u = theta.exp() if positivity == "exp" else torch.nn.functional.softplus(theta)
    torch.testing.assert_close(got, theory.prompted_conditional(hmm, u, x), rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda t: ideal_prompted_features(hmm, t, p, positivity=positivity, prior_ratio=ratio), (theta,))


def test_ideal_token_prompt_equals_typed_symbols():
    hmm = hmmlib.dirichlet_hmm(3, 4, seed=2)
    ds = tasks.make_dataset(hmm, tasks.task_from_mu([1.0, -1.0, 0.5]), 6, 5, seed=0, require_two_classes=False)
    tokens = (2, 0)
    tuner = make_tuner(hmm, FakeTokenPromptConfig(prompt_len=2, init="tokens", init_tokens=tokens))
    full = torch.cat([torch.tensor(tokens).expand(6, -1), torch.zeros(6, 1, dtype=torch.long), ds.x], 1)
    want = hmmlib.masked_token_conditionals(hmm, full)[:, len(tokens)]  # P(X_0 | 2, 0, ., x)
    torch.testing.assert_close(tuner.features(ds), want, rtol=0, atol=1e-10)
    assert tuner.num_trainable_parameters == 2 * 3 + 2 * 4 + 2


def test_schedule_and_determinism(paper_splits):
    hmm, _, splits = paper_splits
    cfg = FakeTokenPromptConfig(lr=0.1, num_steps=4, warmup_steps=2, log_every=1, batch_size=64, seed=3, **LOOP)
    a, b = make_tuner(hmm, cfg), make_tuner(hmm, cfg)
    ha, hb = a.fit(splits["train"]), b.fit(splits["train"])
    assert [round(h["lr"] / 0.1, 12) for h in ha] == [0.5, 1.0, 1.0, 0.5]
    assert ha == hb and torch.equal(a.theta, b.theta) and torch.equal(a.head.weight, b.head.weight)
    c = make_tuner(hmm, cfg.replace(seed=4))
    c.fit(splits["train"])
    assert not torch.equal(a.theta, c.theta)
    out = tune_and_evaluate(hmm, cfg.replace(num_steps=None, num_epochs=2, log_every=3), splits)
    assert [h["step"] for h in out["history"]] == [3, 6, 9, 12, 15, 16] and out["history"][-1]["epoch"] == 2.0
    assert {"train", "val", "test"} <= set(out) and out["parameters"]["trainable"] == 2 * V + 2 + 4


# --------------------------------------------------------------------------- the transformer: exactness
def test_soft_prompt_from_tokens_equals_hard_tokens(small_splits):
    model, ds = random_model(), small_splits["test"]
    tokens = (3, 1, 4)
    tuner = make_tuner(model, PromptTuningConfig(prompt_len=3, init="tokens", init_tokens=tokens))
    want = hard_probs(model, tokens, ds.x)
    torch.testing.assert_close(tuner.features(ds), want, rtol=0, atol=1e-6)
    assert (hard_probs(model, (), ds.x) - want).abs().max() > 1e-3  # the prompt does change the output


@pytest.mark.parametrize("hidden", [None, 16])
def test_prefix_from_tokens_equals_hard_tokens(small_splits, hidden):
    x, tokens = small_splits["test"].x, (5, 2, 7)
    # one-layer masked LM: the typed tokens' keys/values cannot depend on the input, so the tuner's init is exact
    model = random_model(num_layers=1)
    tuner = make_tuner(model, PrefixTuningConfig(prefix_len=3, mlp_hidden=hidden, init="tokens", init_tokens=tokens))
    torch.testing.assert_close(tuner.features(small_splits["test"]), hard_probs(model, tokens, x), rtol=0, atol=1e-5)
    # causal model, every position: the encoder (with or without MLP) reproduces typing the tokens
    causal = random_model(causal=True)
    enc = PrefixEncoder(causal.cfg, 3, hidden, prefix_from_tokens(causal, tokens))
    with torch.no_grad():
        hard = causal(torch.cat([torch.tensor(tokens).expand(x.shape[0], -1), x], 1)).logits[:, 3:]
        torch.testing.assert_close(causal(x, prefix=enc()).logits, hard, rtol=0, atol=1e-4)


def test_prefix_in_bidirectional_model():
    """Per-example keys/values of the typed tokens reproduce them exactly in a 2-layer masked LM;
    the tokens' keys/values computed alone (no input to attend to) do not from layer 2 on."""
    model, tokens = random_model(), (5, 2, 7)
    x, _ = hmmlib.sample(hmmlib.paper_hmm(4, V, seed=1), 8, 12, seed=0)
    hard_in = torch.cat([torch.tensor(tokens).expand(8, -1), torch.full((8, 1), model.cfg.mask_id), x], 1)
    with torch.no_grad():
        out = model(hard_in, return_kv=True)
        prefix = [(k[:, :, :3], v[:, :, :3]) for k, v in out.kv]
        inputs = hard_in[:, 3:]
        torch.testing.assert_close(model(inputs, prefix=prefix).logits, out.logits[:, 3:], rtol=0, atol=1e-5)
        alone = model(inputs, prefix=prefix_from_tokens(model, tokens)).logits
    assert (alone - out.logits[:, 3:]).abs().max() > 1e-3


def test_dropping_prefix_mlp_changes_nothing(small_splits):
    model = random_model()
    cfg = PrefixTuningConfig(prefix_len=4, mlp_hidden=24, lr=0.01, num_steps=3, batch_size=32, freeze_mlp=False)
    tuner = make_tuner(model, cfg)
    tuner.fit(small_splits["train"])
    before = tuner.features(small_splits["test"])
    n_train = tuner.num_trainable_parameters
    tuner.freeze_prefix()
    assert list(tuner.prefix.parameters()) == [] and tuner.prefix.frozen
    assert tuner.prefix.prefix.shape == (4, 2 * 2 * 32) and not tuner.prefix.prefix.requires_grad
    assert torch.equal(tuner.features(small_splits["test"]), before)
    assert tuner.num_trainable_parameters == n_train and tuner.num_stored_parameters == 4 * 2 * 2 * 32 + 2 * V + 2
    with pytest.raises(ValueError, match="freeze_prefix"):
        tuner.fit(small_splits["train"])
    # fit() drops it by default, at the end
    tuner = make_tuner(model, cfg.replace(freeze_mlp=True))
    tuner.fit(small_splits["train"])
    assert tuner.prefix.frozen


# --------------------------------------------------------------------------- the transformer: frozen weights
@pytest.mark.parametrize("method", ["head", "prompt", "prefix"])
def test_frozen_model_is_untouched(small_splits, method):
    model = random_model().train()
    state = clone_state(model)
    common = dict(lr=0.05, num_steps=3, batch_size=32)
    cfg = {"head": HeadConfig.adamw(**common), "prompt": PromptTuningConfig(prompt_len=2, **common, **LOOP),
           "prefix": PrefixTuningConfig(prefix_len=2, mlp_hidden=16, freeze_mlp=False, **common)}[method]
    tuner = make_tuner(model, cfg)
    assert isinstance(tuner, TransformerTuner)
    trainable = tuner.trainable_parameters()
    start = [p.detach().clone() for p in trainable]
    history = tuner.fit(small_splits["train"], small_splits["val"])
    assert len(history) == 1 and "val_accuracy" in history[0]
    assert_same_state(model, state)
    assert all(p.grad is None for p in model.parameters())
    assert not any(p.requires_grad for p in model.parameters()) and not model.training  # frozen once, when wrapped
    assert not any(k.startswith("model.") for k in tuner.state_dict())  # the frozen model is not the tuner's
    assert all(p.grad is not None for p in trainable)
    assert all(not torch.equal(p, q) for p, q in zip(trainable, start))
    res = tuner.evaluate(small_splits["test"])
    assert set(res) == {"accuracy", "majority_rate", "loss", "num_examples"} and 0 <= res["accuracy"] <= 1


def test_finetune_trains_a_copy(small_splits):
    model = random_model()
    state = clone_state(model)
    tuner = make_tuner(model, FineTuningConfig(lr=1e-3, num_steps=3, batch_size=32))
    tuner.fit(small_splits["train"])
    assert_same_state(model, state)
    assert all(p.grad is None for p in model.parameters())
    assert tuner.net is not model and not tuner.net.training
    assert any(not torch.equal(a, b) for a, b in zip(tuner.net.state_dict().values(), state.values()))


def test_parameter_counts():
    model = random_model()
    n_model = sum(p.numel() for p in model.parameters())
    head, d, L = 2 * V + 2, 32, 2
    assert make_tuner(model, HeadConfig.adamw()).num_trainable_parameters == head
    assert make_tuner(model, HeadConfig.adamw()).num_total_parameters == n_model + head
    # the converged head trains the class-1 row and bias (class 0's logit is 0)
    assert make_tuner(model, HeadConfig()).num_trainable_parameters == V + 1
    assert make_tuner(model, PromptTuningConfig(prompt_len=5)).num_trainable_parameters == 5 * d + head
    t = make_tuner(model, PrefixTuningConfig(prefix_len=3, mlp_hidden=16))
    assert t.num_trainable_parameters == 3 * d + (d * 16 + 16) + (16 * 2 * L * d + 2 * L * d) + head
    assert t.num_stored_parameters == 3 * 2 * L * d + head
    t = make_tuner(model, PrefixTuningConfig(prefix_len=3, mlp_hidden=None))
    assert t.num_trainable_parameters == t.num_stored_parameters == 3 * 2 * L * d + head
    t = make_tuner(model, FineTuningConfig())
    assert t.num_trainable_parameters == t.num_total_parameters == n_model + head
    hmm = hmmlib.paper_hmm(4, V, seed=0)
    assert make_tuner(hmm, HeadConfig.adamw()).num_trainable_parameters == head
    t = make_tuner(hmm, FakeTokenPromptConfig(prompt_len=2))
    assert t.num_trainable_parameters == 2 * 4 + head and t.num_total_parameters == 4 + 16 + 40 + 2 * 4 + head


# --------------------------------------------------------------------------- tuners are modules: save and load what was tuned
def _same_features(a, b, ds):
    torch.testing.assert_close(a.logits(ds), b.logits(ds), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["head", "converged_head", "prompt", "prefix", "prefix_mlp", "finetune",
                                  "ideal_prompt"])
def test_tuned_parts_round_trip_through_a_state_dict(small_splits, tmp_path, kind):
    """What a tuner learned is its state_dict: saved, loaded into a fresh tuner built the same way (another seed),
    it gives the same logits; the fresh tuner's own initialisation gives different ones."""
    common = dict(lr=0.05, num_steps=5, batch_size=32, seed=0)
    model = random_model() if kind != "ideal_prompt" else hmmlib.paper_hmm(4, V, seed=1)
    cfg = {"head": HeadConfig.adamw(**common), "converged_head": HeadConfig(l2_grid=(1e-6,), seed=0),
           "prompt": PromptTuningConfig(prompt_len=2, **common, **LOOP),
           "prefix": PrefixTuningConfig(prefix_len=2, mlp_hidden=None, **common),
           "prefix_mlp": PrefixTuningConfig(prefix_len=2, mlp_hidden=8, **common),
           "finetune": FineTuningConfig(**common), "ideal_prompt": FakeTokenPromptConfig(prompt_len=2, **common, **LOOP)}[kind]
    tuner = make_tuner(model, cfg)
    tuner.fit(small_splits["train"])
    path = tmp_path / "tuned.pt"
    torch.save(tuner.state_dict(), path)
    fresh = make_tuner(model, cfg.replace(seed=1))
    ds = small_splits["test"]
    assert not torch.equal(fresh.logits(ds), tuner.logits(ds))
    fresh.load_state_dict(torch.load(path, weights_only=True))
    _same_features(fresh, tuner, ds)
    if kind in ("prompt", "prefix", "prefix_mlp", "ideal_prompt"):
        assert tuner.num_stored_parameters < 1000  # a few vectors and a head, never the frozen model


def test_a_part_frozen_by_requires_grad_is_not_trained(paper_splits):
    """Trainable parts are found by requires_grad: freezing the head leaves only the fake tokens to train."""
    hmm, _, splits = paper_splits
    tuner = make_tuner(hmm, FakeTokenPromptConfig(prompt_len=1, lr=0.1, num_steps=5, **LOOP))
    tuner.head.requires_grad_(False)
    head = tuner.head.weight.detach().clone()
    theta = tuner.theta.detach().clone()
    tuner.fit(splits["train"])
    assert torch.equal(tuner.head.weight, head) and not torch.equal(tuner.theta, theta)
    assert tuner.num_trainable_parameters == 4
    tuner.theta.requires_grad_(False)
    with pytest.raises(ValueError, match="nothing to train"):
        tuner.fit(splits["train"])
