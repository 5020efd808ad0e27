"""The transformer: causal masking, the prompt and prefix hooks, ``positions`` and input validation.

Models here are tiny and randomly initialised; their weights are perturbed away from the
(near-symmetric) default initialisation so that every position genuinely depends on its
context and "this output changed" assertions are meaningful.
"""
from __future__ import annotations

import pytest
import torch

from hmmlib.lm.transformer import ModelOutput, Transformer, TransformerConfig

V = 5  # symbols 0..4, [MASK] = 5, [BOS] = 6
D, LAYERS, HEADS = 16, 2, 2
DH = D // HEADS
MAX_LEN = 24


def make_cfg(causal: bool, **kw) -> TransformerConfig:
    base = dict(num_symbols=V, d_model=D, num_layers=LAYERS, num_heads=HEADS, max_len=MAX_LEN, causal=causal)
    base.update(kw)
    return TransformerConfig(**base)


def make_model(causal: bool, seed: int = 0, **kw) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(make_cfg(causal, **kw))
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return model.eval()


def tokens(batch: int, length: int, seed: int = 0, high: int = V) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(high, (batch, length), generator=g)


def prefix_from(kv, P: int):
    """Per-layer (keys, values) of the first P real positions of a ``return_kv`` run."""
    return [(k[:, :, :P], v[:, :, :P]) for k, v in kv]


def assert_differs(a: torch.Tensor, b: torch.Tensor, min_diff: float = 1e-5) -> None:
    diff = float((a - b).detach().abs().max())
    assert diff > min_diff, f"outputs should differ, max |diff| = {diff}"


CAUSALITY = pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])


# --------------------------------------------------------------------------- shapes and basics
@CAUSALITY
def test_output_shapes_and_probs(causal):
    model = make_model(causal)
    x = tokens(3, 7)
    out = model(x, return_kv=True)
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (3, 7, V)  # symbols only, never [MASK] / [BOS]
    assert out.hidden.shape == (3, 7, D)
    assert len(out.kv) == LAYERS
    for k, v in out.kv:
        assert k.shape == v.shape == (3, HEADS, 7, DH)
    assert out.probs().dtype == torch.float32
    assert model(x).kv is None


def test_special_tokens_are_accepted_and_matter():
    model = make_model(False)
    x = tokens(2, 6)
    cfg = model.cfg
    assert (cfg.mask_id, cfg.bos_id, cfg.vocab_size) == (V, V + 1, V + 2)
    masked = x.clone()
    masked[:, 2] = cfg.mask_id
    bos = x.clone()
    bos[:, 0] = cfg.bos_id
    assert_differs(model(masked).logits, model(x).logits)
    assert_differs(model(bos).logits, model(x).logits)


def test_inputs_embeds_equal_tokens():
    model = make_model(False)
    x = tokens(2, 6)
    torch.testing.assert_close(model(inputs_embeds=model.embed(x)).logits, model(x).logits, rtol=0, atol=0)
    with pytest.raises(ValueError, match="exactly one of tokens or inputs_embeds"):
        model(x, inputs_embeds=model.embed(x))
    with pytest.raises(ValueError, match="exactly one of tokens or inputs_embeds"):
        model()


def test_untied_output_layer():
    model = make_model(False, tie_embeddings=False)
    out = model(tokens(2, 4))
    assert out.logits.shape == (2, 4, V)
    tied = make_model(False)
    # tied: the output layer reuses the symbols' input embeddings (one matrix fewer)
    assert tied.num_parameters() == model.num_parameters() - V * D


# --------------------------------------------------------------------------- causal masking
def test_causal_model_never_looks_ahead():
    model = make_model(True)
    x = tokens(3, 10, seed=1)
    base = model(x)
    for j in range(x.shape[1]):
        y = x.clone()
        y[:, j] = (y[:, j] + 1 + torch.arange(3)) % V  # a different symbol in every row
        out = model(y)
        assert torch.equal(out.logits[:, :j], base.logits[:, :j]), f"changing token {j} changed earlier logits"
        assert torch.equal(out.hidden[:, :j], base.hidden[:, :j])
        assert_differs(out.logits[:, j], base.logits[:, j])  # ... but it is seen from position j on


def test_bidirectional_model_sees_the_future():
    model = make_model(False)
    x = tokens(3, 10, seed=1)
    base = model(x)
    y = x.clone()
    y[:, -1] = (y[:, -1] + 1) % V
    out = model(y)
    for t in range(x.shape[1] - 1):
        assert_differs(out.logits[:, t], base.logits[:, t])


def test_causal_model_with_prefix_is_causal_among_real_tokens():
    model = make_model(True)
    x = tokens(2, 9, seed=2)
    P = 3
    prefix = prefix_from(model(x[:, :P], return_kv=True).kv, P)
    rest = x[:, P:]
    base = model(rest, prefix=prefix)
    for j in range(rest.shape[1]):
        y = rest.clone()
        y[:, j] = (y[:, j] + 1) % V
        out = model(y, prefix=prefix)
        assert torch.equal(out.logits[:, :j], base.logits[:, :j])
        assert_differs(out.logits[:, j], base.logits[:, j])


# --------------------------------------------------------------------------- prompt hook
@CAUSALITY
def test_prompt_shapes(causal):
    model = make_model(causal)
    x = tokens(2, 5)
    prompt = torch.randn(3, D)
    out = model(x, prompt=prompt, return_kv=True)
    assert out.logits.shape == (2, 5, V)  # prompt positions are dropped
    assert out.hidden.shape == (2, 5, D)
    for k, v in out.kv:  # keys/values of the real tokens only
        assert k.shape == v.shape == (2, HEADS, 5, DH)
    assert_differs(out.logits, model(x).logits)  # the prompt does something


@CAUSALITY
def test_empty_prompt_and_empty_prefix_change_nothing(causal):
    model = make_model(causal)
    x = tokens(2, 6)
    base = model(x)
    out = model(x, prompt=torch.zeros(0, D))
    assert torch.equal(out.logits, base.logits)
    out = model(x, prompt=torch.zeros(2, 0, D))
    assert torch.equal(out.logits, base.logits)
    empty = [(torch.zeros(1, HEADS, 0, DH), torch.zeros(1, HEADS, 0, DH)) for _ in range(LAYERS)]
    out = model(x, prefix=empty)
    assert torch.equal(out.logits, base.logits)
    assert torch.equal(out.hidden, base.hidden)


@CAUSALITY
def test_soft_prompt_of_real_embeddings_equals_typing_the_tokens(causal):
    model = make_model(causal)
    x = tokens(3, 8, seed=3)
    P = 3
    typed = model(x)
    # one (B, P, d) prompt per row
    out = model(x[:, P:], prompt=model.embed(x[:, :P]))
    assert torch.equal(out.logits, typed.logits[:, P:])
    assert torch.equal(out.hidden, typed.hidden[:, P:])
    # one shared (P, d) prompt for the whole batch
    shared = x.clone()
    shared[:, :P] = x[0, :P]
    out = model(shared[:, P:], prompt=model.embed(x[0, :P]))
    assert torch.equal(out.logits, model(shared).logits[:, P:])


@CAUSALITY
def test_per_batch_prompts_act_row_by_row(causal):
    model = make_model(causal)
    x = tokens(3, 5, seed=4)
    prompts = torch.randn(3, 2, D, generator=torch.Generator().manual_seed(0))
    out = model(x, prompt=prompts).logits
    for b in range(3):
        row = model(x[b:b + 1], prompt=prompts[b]).logits[0]
        torch.testing.assert_close(out[b], row, rtol=1e-5, atol=1e-6)
    assert_differs(out[0], model(x[:1], prompt=prompts[1]).logits[0])


def test_causal_prompt_is_seen_by_the_first_real_position():
    model = make_model(True)
    x = tokens(2, 5)
    a = model(x, prompt=torch.randn(2, D, generator=torch.Generator().manual_seed(0))).logits
    b = model(x, prompt=torch.randn(2, D, generator=torch.Generator().manual_seed(1))).logits
    assert_differs(a[:, 0], b[:, 0])


@pytest.mark.parametrize("shape", [(D,), (2, D + 1), (1, 2, 3, D)])
def test_prompt_of_wrong_shape(shape):
    model = make_model(False)
    with pytest.raises(ValueError, match=r"prompt must be \(P, d_model\) or \(B, P, d_model\)"):
        model(tokens(2, 4), prompt=torch.zeros(shape))


def test_prompt_with_wrong_batch_size_raises_value_error():
    model = make_model(False)
    with pytest.raises(ValueError, match="prompt"):
        model(tokens(2, 4), prompt=torch.zeros(3, 2, D))


# --------------------------------------------------------------------------- prefix hook
@CAUSALITY
@pytest.mark.parametrize("P", [1, 4])
def test_prefix_of_real_keys_values_equals_typing_the_tokens(causal, P):
    model = make_model(causal)
    x = tokens(3, 9, seed=5)
    full = model(x, return_kv=True)
    out = model(x[:, P:], prefix=prefix_from(full.kv, P))
    torch.testing.assert_close(out.logits, full.logits[:, P:], rtol=0, atol=1e-5)
    torch.testing.assert_close(out.hidden, full.hidden[:, P:], rtol=0, atol=1e-5)


@CAUSALITY
def test_batch_one_prefix_is_shared_by_every_row(causal):
    model = make_model(causal)
    P = 3
    head = tokens(1, P, seed=6)
    tails = tokens(4, 5, seed=7)
    full_inputs = torch.cat([head.expand(4, -1), tails], 1)
    full = model(full_inputs, return_kv=True)
    # keys/values of row 0 only, (1, H, P, dh), broadcast over the 4 rows. In the causal model
    # every row has the same first-P keys; in the bidirectional model they depend on the tail,
    # so use one row's full context as the reference there.
    prefix = prefix_from([(k[:1], v[:1]) for k, v in full.kv], P)
    out = model(tails, prefix=prefix)
    if causal:
        torch.testing.assert_close(out.logits, full.logits[:, P:], rtol=0, atol=1e-5)
    else:
        torch.testing.assert_close(out.logits[:1], full.logits[:1, P:], rtol=0, atol=1e-5)
        for b in range(4):
            row = model(tails[b:b + 1], prefix=prefix).logits[0]
            torch.testing.assert_close(out.logits[b], row, rtol=1e-5, atol=1e-6)


def test_causal_prefix_is_visible_to_every_real_position():
    model = make_model(True)
    x = tokens(2, 8, seed=8)
    P = 3
    prefix = prefix_from(model(x, return_kv=True).kv, P)
    base = model(x[:, P:], prefix=prefix).logits
    # change only the values of the prefix (keys unchanged): real position 0 must notice
    changed = [(k, v + 1.0) for k, v in prefix]
    out = model(x[:, P:], prefix=changed).logits
    for t in range(x.shape[1] - P):
        assert_differs(out[:, t], base[:, t])
    # and the prefix's last position is visible too (not only earlier ones)
    last_only = [(k, v.clone()) for k, v in prefix]
    for _, v in last_only:
        v[:, :, -1] += 1.0
    assert_differs(model(x[:, P:], prefix=last_only).logits[:, 0], base[:, 0])


@CAUSALITY
def test_return_kv_with_prefix_gives_the_real_tokens_only(causal):
    model = make_model(causal)
    x = tokens(2, 7, seed=9)
    full = model(x, return_kv=True)
    P = 3
    out = model(x[:, P:], prefix=prefix_from(full.kv, P), return_kv=True)
    for (k, v), (fk, fv) in zip(out.kv, full.kv):
        assert k.shape == (2, HEADS, 7 - P, DH)
        torch.testing.assert_close(k, fk[:, :, P:], rtol=0, atol=1e-5)
        torch.testing.assert_close(v, fv[:, :, P:], rtol=0, atol=1e-5)


def _good_prefix(P=2, B=1):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(B, HEADS, P, DH, generator=g), torch.randn(B, HEADS, P, DH, generator=g)) for _ in range(LAYERS)]


@pytest.mark.parametrize("case", [
    "too_few_layers", "too_many_layers", "wrong_heads", "wrong_d_head", "keys_values_differ",
    "three_dims", "P_differs_between_layers",
])
def test_prefix_of_wrong_shape_raises(case):
    model = make_model(True)
    prefix = _good_prefix()
    model(tokens(2, 4), prefix=prefix)  # the unmodified prefix is fine
    k, v = prefix[1]
    if case == "too_few_layers":
        prefix = prefix[:1]
    elif case == "too_many_layers":
        prefix = prefix + prefix[:1]
    elif case == "wrong_heads":
        prefix[1] = (torch.zeros(1, HEADS + 1, 2, DH), torch.zeros(1, HEADS + 1, 2, DH))
    elif case == "wrong_d_head":
        prefix[1] = (torch.zeros(1, HEADS, 2, DH + 1), torch.zeros(1, HEADS, 2, DH + 1))
    elif case == "keys_values_differ":
        prefix[1] = (k, v[:, :, :1])
    elif case == "three_dims":
        prefix[1] = (k[0], v[0])
    elif case == "P_differs_between_layers":
        prefix[1] = (torch.zeros(1, HEADS, 3, DH), torch.zeros(1, HEADS, 3, DH))
    match = "per layer" if "layers" in case and "between" not in case else "prefix layer 1"
    with pytest.raises(ValueError, match=match):
        model(tokens(2, 4), prefix=prefix)


def test_prefix_with_wrong_batch_size_raises_value_error():
    model = make_model(True)
    with pytest.raises(ValueError, match="prefix"):
        model(tokens(2, 4), prefix=_good_prefix(B=3))


def test_positions_beyond_max_len_raise():
    model = make_model(True)
    model(tokens(1, MAX_LEN))  # exactly max_len is fine
    with pytest.raises(ValueError, match=rf"exceed max_len={MAX_LEN}"):
        model(tokens(1, MAX_LEN + 1))
    model(tokens(1, MAX_LEN - 2), prefix=_good_prefix(P=2))
    with pytest.raises(ValueError, match=rf"exceed max_len={MAX_LEN}"):
        model(tokens(1, MAX_LEN - 1), prefix=_good_prefix(P=2))
    model(tokens(1, MAX_LEN - 3), prompt=torch.zeros(3, D))
    with pytest.raises(ValueError, match=rf"exceed max_len={MAX_LEN}"):
        model(tokens(1, MAX_LEN - 2), prompt=torch.zeros(3, D))
    with pytest.raises(ValueError, match=rf"exceed max_len={MAX_LEN}"):
        model(tokens(1, MAX_LEN - 3), prompt=torch.zeros(2, D), prefix=_good_prefix(P=2))


# --------------------------------------------------------------------------- positions=
@CAUSALITY
def test_positions_index_returns_the_chosen_rows(causal):
    model = make_model(causal)
    x = tokens(3, 8, seed=10)
    full = model(x)
    idx = torch.tensor([[0, 7], [3, 3], [5, 1]])
    out = model(x, positions=idx)
    assert out.logits.shape == (3, 2, V) and out.hidden.shape == (3, 2, D)
    rows = torch.arange(3)[:, None]
    torch.testing.assert_close(out.logits, full.logits[rows, idx], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.hidden, full.hidden[rows, idx], rtol=1e-6, atol=1e-6)


@CAUSALITY
def test_positions_bool_mask_returns_selected_rows_in_row_major_order(causal):
    model = make_model(causal)
    x = tokens(3, 8, seed=11)
    full = model(x)
    mask = torch.zeros(3, 8, dtype=torch.bool)
    mask[0, [1, 6]] = True
    mask[2, [0, 2, 7]] = True
    out = model(x, positions=mask)
    assert out.logits.shape == (5, V) and out.hidden.shape == (5, D)
    expected = torch.stack([full.logits[0, 1], full.logits[0, 6], full.logits[2, 0], full.logits[2, 2], full.logits[2, 7]])
    torch.testing.assert_close(out.logits, expected, rtol=1e-6, atol=1e-6)


def test_positions_count_real_tokens_after_a_prompt():
    model = make_model(False)
    x = tokens(2, 6, seed=12)
    prompt = torch.randn(3, D, generator=torch.Generator().manual_seed(0))
    full = model(x, prompt=prompt)
    idx = torch.tensor([[0], [5]])
    out = model(x, prompt=prompt, positions=idx)
    torch.testing.assert_close(out.logits[:, 0], full.logits[torch.arange(2), idx[:, 0]], rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize("field", ["num_symbols", "d_model", "num_layers", "num_heads", "max_len"])
@pytest.mark.parametrize("value", [0, -1, 2.0])
def test_config_rejects_non_positive_sizes(field, value):
    kw = dict(num_symbols=V, d_model=8, num_layers=1, num_heads=1, max_len=8)
    kw[field] = value
    with pytest.raises(ValueError, match=rf"TransformerConfig\.{field} must be a positive integer"):
        TransformerConfig(**kw)


@pytest.mark.parametrize("d_mlp", [0, -1])
def test_config_rejects_non_positive_d_mlp(d_mlp):
    with pytest.raises(ValueError, match="d_mlp"):
        TransformerConfig(num_symbols=V, d_model=8, num_heads=2, d_mlp=d_mlp)


def test_config_d_model_divisible_by_heads():
    with pytest.raises(ValueError, match=r"d_model=10 must be divisible by num_heads=4"):
        TransformerConfig(num_symbols=V, d_model=10, num_heads=4)
    assert TransformerConfig(num_symbols=V, d_model=12, num_heads=4).d_head == 3


@pytest.mark.parametrize("dropout", [-0.1, 1.0, 1.5])
def test_config_dropout_range(dropout):
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        TransformerConfig(num_symbols=V, dropout=dropout)


def test_config_round_trips_through_dict():
    cfg = make_cfg(True, d_mlp=24, dropout=0.1, tie_embeddings=False)
    assert TransformerConfig(**cfg.to_dict()) == cfg
    assert cfg.mlp_width == 24 and make_cfg(False).mlp_width == 4 * D


@pytest.mark.parametrize("bad", [-1, V + 2, 100])
def test_out_of_range_token_ids_raise(bad):
    model = make_model(False)
    x = tokens(2, 4)
    x[1, 2] = bad
    with pytest.raises(ValueError, match=rf"token ids must be in \[0, {V + 2}\)"):
        model(x)


@pytest.mark.parametrize("x, match", [
    (torch.zeros(4, dtype=torch.int64), r"tokens must be a tensor of shape \(batch, seq_len\); got \(4,\)"),
    (torch.zeros(1, 2, 3, dtype=torch.int64), r"tokens must be a tensor of shape \(batch, seq_len\)"),
    (torch.zeros(2, 4), r"tokens must be int64 \(or int32\) ids; got dtype torch.float32: convert with tokens.long\(\)"),
    (torch.zeros(2, 4, dtype=torch.int16), r"got dtype torch.int16: convert with tokens.long\(\)"),
    (torch.zeros(2, 4, dtype=torch.uint8), r"got dtype torch.uint8: convert with tokens.long\(\)"),
], ids=["1d", "3d", "float", "int16", "uint8"])
def test_tokens_of_wrong_shape_or_dtype_raise(x, match):
    with pytest.raises(ValueError, match=match):
        make_model(False)(x)


def test_device_rule_tensors_on_another_device_are_refused():
    """Token ids move to the model's device; a prompt, prefix or embeddings elsewhere is a ValueError.
    (The ``meta`` device stands in for a second device on a CPU-only machine.)"""
    model = make_model(False)
    d = model.cfg.d_model
    x = tokens(2, 4)
    with pytest.raises(ValueError, match=r"prompt is on meta but the model is on cpu"):
        model(x, prompt=torch.zeros(3, d, device="meta"))
    with pytest.raises(ValueError, match=r"inputs_embeds is on meta"):
        model(inputs_embeds=torch.zeros(2, 4, d, device="meta"))
    kv = [(torch.zeros(1, model.cfg.num_heads, 2, model.cfg.d_head, device="meta"),) * 2] * model.cfg.num_layers
    with pytest.raises(ValueError, match=r"prefix is on meta"):
        model(x, prefix=kv)


def test_dropout_is_active_in_training_mode_only():
    model = make_model(False, dropout=0.3)
    x = tokens(2, 6)
    model.eval()
    assert torch.equal(model(x).logits, model(x).logits)
    model.train()
    torch.manual_seed(0)
    a = model(x).logits
    b = model(x).logits
    assert_differs(a, b)


def _reference_forward(model: Transformer, tokens: torch.Tensor) -> torch.Tensor:
    """The masked LM written out plainly: pre-LayerNorm blocks, per-head softmax(q k^T / sqrt(d)) v, a GELU MLP,
    tied output layer."""
    cfg, F = model.cfg, torch.nn.functional
    B, T = tokens.shape
    x = model.tok_emb.weight[tokens] + model.pos_emb.weight[:T]
    for blk in model.blocks:
        h = F.layer_norm(x, (cfg.d_model,), blk.ln1.weight, blk.ln1.bias)
        q, k, v = (h @ blk.attn.qkv.weight.T + blk.attn.qkv.bias).split(cfg.d_model, -1)
        heads = []
        for i in range(cfg.num_heads):
            s = slice(i * cfg.d_head, (i + 1) * cfg.d_head)
            att = (q[..., s] @ k[..., s].transpose(1, 2)) / cfg.d_head ** 0.5
            heads.append(att.softmax(-1) @ v[..., s])
        x = x + torch.cat(heads, -1) @ blk.attn.proj.weight.T + blk.attn.proj.bias
        h = F.layer_norm(x, (cfg.d_model,), blk.ln2.weight, blk.ln2.bias)
        x = x + blk.mlp(h)
    h = F.layer_norm(x, (cfg.d_model,), model.ln_f.weight, model.ln_f.bias)
    return h @ model.tok_emb.weight[: cfg.num_symbols].T + model.out_bias


def test_forward_and_gradients_equal_a_plain_reference():
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(num_symbols=10, d_model=32, num_layers=2, num_heads=4, max_len=40))
    for p in model.parameters():  # away from the initialisation's zeros, so every term matters
        p.data.add_(0.1 * torch.randn_like(p))
    x = torch.randint(12, (5, 21), generator=torch.Generator().manual_seed(1))
    sel = torch.rand(5, 21, generator=torch.Generator().manual_seed(2)) < 0.3
    out = model(x, positions=sel).logits
    ref = _reference_forward(model, x)[sel]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad(out.logsumexp(-1).sum(), list(model.parameters()))
    ref_grads = torch.autograd.grad(ref.logsumexp(-1).sum(), list(model.parameters()))
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
