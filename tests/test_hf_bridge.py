"""The book's causal model exported to Hugging Face GPT-2, a prefix as its key/value cache, and
PEFT's prefix tuning reading the same numbers (all built from configs: no downloads)."""
import pytest
import torch

pytest.importorskip("transformers")

from hmmlib.adapt.causal_tuning import CausalPrefixConfig, make_causal_tuner  # noqa: E402
from hmmlib.adapt.generation import lm_inputs, output_positions  # noqa: E402
from hmmlib.adapt.prefix import prefix_from_tokens  # noqa: E402
from hmmlib.lm.hf_bridge import prefix_to_cache, symbol_logits, to_gpt2  # noqa: E402
from hmmlib.lm.transformer import Transformer, TransformerConfig  # noqa: E402

V = 7


def _model(tie=True, seed=0):
    torch.manual_seed(seed)
    m = Transformer(TransformerConfig(num_symbols=V, d_model=32, num_layers=2, num_heads=4, max_len=40,
                                      causal=True, tie_embeddings=tie))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return m.eval()


@pytest.mark.parametrize("tie", [True, False])
def test_exported_gpt2_has_identical_logits(tie):
    m = _model(tie)
    hf = to_gpt2(m)
    x = torch.randint(0, V + 2, (3, 17))
    with torch.no_grad():
        assert (m(x).logits - symbol_logits(hf(input_ids=x).logits, V)).abs().max() < 1e-5


def test_prefix_as_cache_gives_the_same_logits():
    m = _model()
    hf = to_gpt2(m)
    tuner = make_causal_tuner(m, CausalPrefixConfig(4, 16), seed=1)
    tuner.finish()
    prefix = tuner.prefix()
    x = torch.randint(0, V, (3, 12))
    with torch.no_grad():
        want = m(x, prefix=prefix).logits
        got = symbol_logits(hf(input_ids=x, cache=prefix_to_cache(prefix, 3)).logits, V)
    assert (want - got).abs().max() < 1e-5
    own = prefix_from_tokens(m, [1, 2])  # and the typed-tokens prefix: the same as typing them in GPT-2
    with torch.no_grad():
        typed = symbol_logits(hf(input_ids=torch.cat([torch.tensor([[1, 2]] * 3), x], 1)).logits, V)[:, 2:]
        cached = symbol_logits(hf(input_ids=x, cache=prefix_to_cache(own, 3)).logits, V)
    assert (typed - cached).abs().max() < 1e-5


def test_peft_prefix_with_hmmlib_numbers_matches():
    pytest.importorskip("peft")
    from hmmlib.adapt.peft_bridge import peft_model

    m = _model()
    tuner = make_causal_tuner(m, CausalPrefixConfig(3, None), seed=2)
    pm = peft_model(m, "prefix", 3, prefix_projection=False)
    with torch.no_grad():
        pm.prompt_encoder["default"].embedding.weight.copy_(tuner.encoder.prefix)
    x, y = torch.randint(0, V, (2, 4)), torch.randint(0, V, (2, 5))
    ids = lm_inputs(m.cfg, x, y)
    with torch.no_grad():
        got = symbol_logits(pm(input_ids=ids, attention_mask=torch.ones_like(ids)).logits, V)[:, 5:10]
        want = tuner(x, y)
    assert (got - want).abs().max() < 1e-5
    assert output_positions(4, 5, 2)[0, 0] == 5


def test_export_errors():
    with pytest.raises(ValueError, match="causal"):
        to_gpt2(Transformer(TransformerConfig(num_symbols=V, d_model=16, num_heads=2)))
    m = Transformer(TransformerConfig(num_symbols=20, d_model=8, num_heads=2, causal=True))
    with torch.no_grad():
        m.out_bias.copy_(torch.randn(20))
    with pytest.raises(ValueError, match="linearly independent"):
        to_gpt2(m)
    with pytest.raises(ValueError, match="every layer"):
        prefix_to_cache([None, None], 2)
