"""Prefix / prompt / infix tuning of a causal LM (chapter 7): exactness against independent
computations (typing the tokens, each row alone, the model's own keys and values), the frozen
base, and the validation of every option."""
import math

import pytest
import torch

from hmmlib.adapt.causal_tuning import (CausalFinetuneConfig, CausalInfixConfig, CausalPrefixConfig, CausalPromptConfig, TrainSettings,
                                        batch_prefixes, evaluate, fit, logits_on, make_causal_tuner)
from hmmlib.adapt.generation import GenerationTask, lm_inputs, output_positions, score
from hmmlib.adapt.prefix_theory import layer1_residual, prompt_to_prefix
from hmmlib.adapt.prefix import PrefixEncoder
from hmmlib.hmm import dirichlet_hmm
from hmmlib.lm.transformer import Transformer, TransformerConfig

V, XL, YL = 6, 4, 5


def _model(seed=0, layers=2, max_len=40):
    torch.manual_seed(seed)
    m = Transformer(TransformerConfig(num_symbols=V, d_model=32, num_layers=layers, num_heads=4, max_len=max_len,
                                      causal=True))
    with torch.no_grad():  # away from the tiny init, so that every check has something to see
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return m.eval()


@pytest.fixture(scope="module")
def data():
    fam = [dirichlet_hmm(3, V, seed=s, emission_concentration=0.3) for s in range(3)]
    task = GenerationTask(fam, XL, YL)
    return task.sample(64, seed=1), task.sample(32, seed=2)


def _typed(model, tokens, x, y):
    """The frozen model on ``[tokens; BOS x SEP y]``, at the y positions: typing the tokens."""
    B = x.shape[0]
    t = torch.as_tensor(tokens).expand(B, -1)
    inp = torch.cat([t, lm_inputs(model.cfg, x, y)], 1)
    return model(inp, positions=output_positions(XL, YL, B) + t.shape[1]).logits


@pytest.mark.parametrize("mlp_hidden", [None, 16])
@pytest.mark.parametrize("layers", [3, 1])
def test_prefix_of_own_keys_values_reproduces_typing(data, mlp_hidden, layers):
    m = _model(layers=layers)
    tr, _ = data
    toks = (1, 4, 2)
    tuner = make_causal_tuner(m, CausalPrefixConfig(3, mlp_hidden, init="tokens", init_tokens=toks))
    with torch.no_grad():
        got = tuner(tr.x, tr.y)
    assert torch.allclose(got, _typed(m, toks, tr.x, tr.y), atol=2e-5)


def test_prompt_of_token_embeddings_reproduces_typing(data):
    m = _model()
    tr, _ = data
    tuner = make_causal_tuner(m, CausalPromptConfig(2, init="tokens", init_tokens=(5, 0)))
    with torch.no_grad():
        assert torch.allclose(tuner(tr.x, tr.y), _typed(m, (5, 0), tr.x, tr.y), atol=2e-5)


def test_infix_of_own_keys_values_reproduces_typing(data):
    """Infix keys/values = the model's own for tokens u typed in context at the infix position."""
    m = _model()
    tr, _ = data
    u = torch.tensor([3, 1])
    B = tr.x.shape[0]
    tuner = make_causal_tuner(m, CausalInfixConfig(2, None, position=XL + 1))
    # the typed sequence [BOS x u SEP y]; u's keys/values depend on x, so take row 0 and test on it
    x, y = tr.x[:1], tr.y[:1]
    typed = torch.cat([torch.tensor([[m.cfg.bos_id]]), x, u[None], torch.tensor([[m.cfg.bos_id]]), y[:, :-1]], 1)
    kv = m(typed[:, :XL + 3], return_kv=True).kv
    own = [(k[:, :, XL + 1:], v[:, :, XL + 1:]) for k, v in kv]
    tuner.encoder = PrefixEncoder(m.cfg, 2, None, init_kv=own)
    want = m(typed, positions=output_positions(XL, YL, 1) + 2).logits
    with torch.no_grad():
        assert torch.allclose(tuner(x, y), want, atol=2e-5)
    assert B > 1


def test_dropping_the_mlp_changes_no_output(data):
    m = _model()
    tr, te = data
    tuner = make_causal_tuner(m, CausalPrefixConfig(4, 16), seed=3)
    fit(tuner, tr, TrainSettings(lr=1e-2, num_steps=3, batch_size=8), finish=False)
    before = logits_on(tuner, te)
    trained = tuner.num_trainable
    tuner.finish()
    assert torch.allclose(logits_on(tuner, te), before, atol=1e-6)
    L, d = m.cfg.num_layers, m.cfg.d_model
    assert tuner.num_stored == 4 * 2 * L * d < trained
    assert tuner.num_trainable == 0


def test_rows_with_different_prefixes_equal_each_row_alone(data):
    m = _model()
    tr, _ = data
    a = make_causal_tuner(m, CausalPrefixConfig(3, 16), seed=1).prefix()
    b = make_causal_tuner(m, CausalPrefixConfig(3, None), seed=2).prefix()
    inp = lm_inputs(m.cfg, tr.x[:2], tr.y[:2])
    with torch.no_grad():
        both = m(inp, prefix=batch_prefixes([a, b])).logits
        assert torch.allclose(both[0], m(inp[:1], prefix=a).logits[0], atol=1e-6)
        assert torch.allclose(both[1], m(inp[1:], prefix=b).logits[0], atol=1e-6)
        assert not torch.allclose(both[0], m(inp[:1], prefix=b).logits[0], atol=1e-3)


@pytest.mark.parametrize("config", [CausalPrefixConfig(3, 16), CausalPrefixConfig(2, None, layers=(1,)), CausalPromptConfig(3),
                                    CausalInfixConfig(2, 16), CausalFinetuneConfig()])
def test_frozen_weights_bit_identical_after_training(data, config):
    m = _model()
    tr, _ = data
    before = {k: v.clone() for k, v in m.state_dict().items()}
    tuner = make_causal_tuner(m, config)
    fit(tuner, tr, TrainSettings(lr=1e-1, num_steps=3, batch_size=8))
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert all(p.grad is None for p in m.parameters())
    assert set(tuner.state_dict()) and not any(k.startswith("base") for k in tuner.state_dict())


def test_zero_keys_and_values_are_not_a_no_op(data):
    m = _model()
    _, te = data
    zero = make_causal_tuner(m, CausalPrefixConfig(3, None, init="zeros"))
    assert float(zero.encoder.prefix.detach().abs().max()) == 0.0
    frozen = make_causal_tuner(m, CausalFinetuneConfig())
    qz, qf = logits_on(zero, te).log_softmax(-1), logits_on(frozen, te).log_softmax(-1)
    kl = (qf.exp() * (qf - qz)).sum(-1).mean()
    assert kl > 1e-4


def test_trained_prefix_lowers_the_loss(data):
    m = _model()
    tr, _ = data
    tuner = make_causal_tuner(m, CausalPrefixConfig(3, 16))
    hist = fit(tuner, tr, TrainSettings(lr=3e-2, num_steps=40, batch_size=32), log_every=10)
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]


def test_prompt_acts_as_the_prefix_of_its_own_keys_values(data):
    m = _model()
    tr, _ = data
    p = torch.randn(3, m.cfg.d_model)
    inp = lm_inputs(m.cfg, tr.x, tr.y)
    with torch.no_grad():
        a = m(inp, prompt=p).logits
        b = m(inp, prefix=prompt_to_prefix(m, p)).logits
    assert torch.allclose(a, b, atol=2e-5)
    assert float(layer1_residual(m, prompt_to_prefix(m, p)).max()) < 1e-5
    free = make_causal_tuner(m, CausalPrefixConfig(3, None), seed=0).prefix()
    assert float(layer1_residual(m, free).min()) > 0.1


def test_score_against_a_direct_computation(data):
    _, te = data
    q = torch.randn(te.p_true.shape)
    s = score(q, te)
    lq = q.log_softmax(-1)
    kl = sum(float(te.p_true[n, t, v] * (math.log(te.p_true[n, t, v]) - lq[n, t, v]))
             for n in range(3) for t in range(YL) for v in range(V) if te.p_true[n, t, v] > 0)
    assert abs(score(q[:3], te.subset([0, 1, 2]))["kl"] - kl / (3 * YL)) < 1e-5
    assert s["kl"] > 0 and s["kl_se"] > 0


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kw, msg", [
    (dict(prefix_len=0), "prefix_len"), (dict(prefix_len=2.5), "prefix_len"), (dict(layers=()), "layers"),
    (dict(layers=(0, 0)), "layers"), (dict(layers=(-1,)), "layers"), (dict(mlp_hidden=0), "mlp_hidden"),
    (dict(init="tokens"), "init_tokens"), (dict(init="tokens", init_tokens=(1, 2)), "one symbol per position"),
    (dict(init_tokens=(1, 2, 3)), "only used with init='tokens'"), (dict(init="text"), "init"),
    (dict(init="tokens", init_tokens=(1, -2, 3)), "non-negative"),
])
def test_prefix_config_errors(kw, msg):
    with pytest.raises(ValueError, match=msg):
        CausalPrefixConfig(**{"prefix_len": 3, **kw})


def test_errors_that_need_the_model(data):
    m = _model()
    tr, _ = data
    with pytest.raises(ValueError, match="layer >= num_layers"):
        make_causal_tuner(m, CausalPrefixConfig(3, layers=(0, 2)))
    with pytest.raises(ValueError, match=r"symbols in \[0, 6\)"):
        make_causal_tuner(m, CausalPrefixConfig(2, init="tokens", init_tokens=(1, 6)))
    with pytest.raises(ValueError, match=r"symbols in \[0, 6\)"):
        make_causal_tuner(m, CausalPromptConfig(1, init="tokens", init_tokens=(7,)))
    with pytest.raises(ValueError, match="position"):
        fit(make_causal_tuner(m, CausalInfixConfig(2, position=XL + 2)), tr, TrainSettings(num_steps=1))
    with pytest.raises(ValueError, match="position"):
        CausalInfixConfig(2, position=0)
    with pytest.raises(ValueError, match="causal"):
        make_causal_tuner(Transformer(TransformerConfig(num_symbols=V, d_model=16, num_heads=2)), CausalPromptConfig(1))
    with pytest.raises(ValueError, match="config must be"):
        make_causal_tuner(m, TrainSettings())


def test_too_long_prefix_rejected_before_training(data):
    m = _model(max_len=30)
    tr, _ = data
    tuner = make_causal_tuner(m, CausalPrefixConfig(30 - tr.seq_len + 1, 16))
    before = {k: v.clone() for k, v in tuner.state_dict().items()}
    with pytest.raises(ValueError, match="max_len=30"):
        fit(tuner, tr, TrainSettings(num_steps=5))
    assert all(torch.equal(before[k], v) for k, v in tuner.state_dict().items())
    ok = make_causal_tuner(m, CausalPrefixConfig(30 - tr.seq_len, 16))
    fit(ok, tr, TrainSettings(num_steps=1))
    with pytest.raises(ValueError, match="no position"):
        make_causal_tuner(m, CausalPrefixConfig(30))


def test_train_settings_and_task_errors():
    with pytest.raises(ValueError, match="lr"):
        TrainSettings(lr=0)
    with pytest.raises(ValueError, match="num_steps"):
        TrainSettings(num_steps=0)
    fam = [dirichlet_hmm(2, V, seed=0)]
    with pytest.raises(ValueError, match="y_len"):
        GenerationTask(fam, 2, 0)
    with pytest.raises(ValueError, match="member indices"):
        GenerationTask(fam, 2, 3).sample(4, seed=0, members=[1])
    with pytest.raises(ValueError, match="logits must have shape"):
        te = GenerationTask(fam, 2, 3).sample(4, seed=0)
        score(torch.zeros(4, 3, V + 1), te)
