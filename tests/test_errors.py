"""Bad inputs raise ValueError with a message that says what is wrong (one test per class)."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

import hmmlib
from hmmlib import HMM
from hmmlib.experiments.presets import PRESET_ENV

F64 = torch.float64


def _params(K=3, V=4):
    hmm = hmmlib.dirichlet_hmm(K, V, seed=0)
    return hmm.pi.clone(), hmm.A.clone(), hmm.W.clone()


@pytest.fixture
def hmm() -> HMM:
    return hmmlib.dirichlet_hmm(3, 4, seed=0)


# --------------------------------------------------------------------------- parameters
def test_non_stochastic_columns_of_A():
    pi, A, W = _params()
    A[:, 1] *= 1.1
    with pytest.raises(ValueError, match=r"column 1 of A sums to 1\.1, not 1 .*column-stochastic"):
        HMM(pi, A, W)
    # hmmlearn's row-stochastic transmat passed by mistake: the message points to the converter
    A = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.3, 0.3, 0.4]], dtype=F64)
    with pytest.raises(ValueError, match=r"column \d of A sums to .*from_hmmlearn_params"):
        HMM(pi, A, W)


def test_non_stochastic_columns_of_W():
    pi, A, W = _params()
    W[:, 2] = 0.0
    with pytest.raises(ValueError, match=r"column 2 of W sums to 0, not 1"):
        HMM(pi, A, W)


def test_pi_not_summing_to_one():
    pi, A, W = _params()
    with pytest.raises(ValueError, match=r"pi sums to 2, not 1 .*; normalise it"):
        HMM(2 * pi, A, W)


@pytest.mark.parametrize("which", ["pi", "A", "W"])
def test_negative_entries(which):
    params = dict(zip(("pi", "A", "W"), _params()))
    t = params[which]
    flat = t.view(-1)  # move mass so that sums stay 1 but one entry is negative
    flat[0] -= 1.0  # every entry is < 1, so this one becomes negative
    flat[1 if which == "pi" else t.shape[-1]] += 1.0  # same column for matrices
    with pytest.raises(ValueError, match=rf"{which}\[0(, 0)?\] = -.* is negative; probabilities must be >= 0"):
        HMM(**params)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("which", ["pi", "A", "W"])
def test_nan_and_inf_entries(which, bad):
    params = dict(zip(("pi", "A", "W"), _params()))
    params[which].view(-1)[1] = bad
    with pytest.raises(ValueError, match=rf"{which}\[.*\] is {bad}; all entries must be finite"):
        HMM(**params)


def test_wrong_shapes():
    pi, A, W = _params()
    with pytest.raises(ValueError, match=r"A must have shape \(num_states, num_states\) = \(3, 3\) to match pi; got \(3, 4\)"):
        HMM(pi, torch.cat([A, A[:, :1]], 1), W)
    with pytest.raises(ValueError, match=r"A must have shape .* got \(9,\)"):
        HMM(pi, A.reshape(-1), W)
    with pytest.raises(ValueError, match=r"W must have shape \(num_symbols, num_states\) = \(V, 3\); got \(3, 4\).*transpose"):
        HMM(pi, A, W.T.contiguous())  # hmmlearn's (K, V) layout by mistake
    with pytest.raises(ValueError, match=r"W must have shape .* got \(4,\)"):
        HMM(pi, A, W[:, 0])
    with pytest.raises(ValueError, match=r"pi must be a non-empty vector of shape \(num_states,\); got shape \(1, 3\)"):
        HMM(pi[None], A, W)
    with pytest.raises(ValueError, match=r"pi must be a non-empty vector .* got shape \(0,\)"):
        HMM(torch.zeros(0, dtype=F64), A, W)
    with pytest.raises(ValueError, match=r"transmat and emissionprob must be 2-D"):
        HMM.from_hmmlearn_params(pi.numpy(), A.numpy().reshape(-1), W.numpy().T)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_dtype(dtype):
    pi, A, W = _params()
    with pytest.raises(ValueError, match=rf"A has dtype {dtype}; use float32 or float64"):
        HMM(pi, A.to(dtype), W)
    with pytest.raises(ValueError, match=rf"W has dtype {dtype}"):
        HMM(pi.float(), A.float(), W.to(dtype))


def test_non_numeric_parameters():
    pi, A, W = _params()
    with pytest.raises(ValueError, match=r"pi must be an array of numbers"):
        HMM(["a", "b", "c"], A, W)
    with pytest.raises(ValueError, match=r"A must be an array of numbers"):
        HMM(pi, [[0.5, 0.5], [1.0]], W)  # ragged


# --------------------------------------------------------------------------- tokens
@pytest.mark.parametrize("bad_id,where", [(-1, r"\(sequence 1, position 2\)"), (4, r"\(sequence 1, position 2\)"),
                                          (1000, r"\(sequence 1, position 2\)")])
def test_token_ids_out_of_range(hmm, bad_id, where):
    x = torch.zeros(2, 5, dtype=torch.int64)
    x[1, 2] = bad_id
    for fn in (hmmlib.log_likelihood, hmmlib.posterior_marginals, hmmlib.posterior_h0, hmmlib.viterbi):
        with pytest.raises(ValueError, match=rf"token id {bad_id} at {where} is outside \[0, 4\).*missing="):
            fn(hmm, x)


@pytest.mark.parametrize("x", [torch.zeros(2, 3), np.zeros((2, 3)), [[0.0, 1.0]], torch.zeros(3, dtype=torch.complex64)],
                         ids=["torch-float", "numpy-float", "list-float", "complex"])
def test_float_tokens(hmm, x):
    with pytest.raises(ValueError, match=r"tokens must have an integer dtype .*; got torch\.(float|complex)"):
        hmmlib.posterior_marginals(hmm, x)


def test_bool_tokens(hmm):
    with pytest.raises(ValueError, match=r"integer dtype .*got torch\.bool"):
        hmmlib.log_likelihood(hmm, torch.tensor([True, False, True]))
    with pytest.raises(ValueError, match=r"integer dtype .*got torch\.bool"):
        hmmlib.log_likelihood(hmm, np.array([[True, False]]))


@pytest.mark.parametrize("shape", [(2, 3, 4), (1, 1, 1, 1)])
def test_tokens_of_wrong_rank(hmm, shape):
    with pytest.raises(ValueError, match=rf"tokens must have shape \(seq_len,\) or \(batch, seq_len\); got shape {re_shape(shape)}"):
        hmmlib.masked_token_conditionals(hmm, torch.zeros(shape, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"tokens must have shape"):
        hmmlib.log_likelihood(hmm, torch.tensor(2))  # 0-d


def re_shape(shape) -> str:
    return r"\(" + r", ".join(map(str, shape)) + r"\)"


@pytest.mark.parametrize("shape,reported", [((0, 5), (0, 5)), ((3, 0), (3, 0)), ((0,), (1, 0))])
def test_empty_tokens(hmm, shape, reported):
    with pytest.raises(ValueError, match=rf"tokens are empty \(shape {re_shape(reported)}\)"):
        hmmlib.next_token_conditionals(hmm, torch.zeros(shape, dtype=torch.int64))


def test_empty_list_tokens_say_empty(hmm):
    with pytest.raises(ValueError) as info:
        hmmlib.log_likelihood(hmm, [])
    assert "empty" in str(info.value), str(info.value)


def test_ragged_tokens(hmm):
    with pytest.raises(ValueError, match=r"rectangular array of integers"):
        hmmlib.log_likelihood(hmm, np.array([[0, 1], [2]], dtype=object))


# --------------------------------------------------------------------------- missing mask
def test_missing_mask_must_be_boolean(hmm):
    x = torch.zeros(2, 4, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"missing must be a boolean mask; got dtype torch\.int64"):
        hmmlib.posterior_marginals(hmm, x, missing=torch.zeros(2, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"missing must be a boolean mask; got dtype torch\.float"):
        hmmlib.log_likelihood(hmm, x, missing=np.zeros((2, 4)))


def test_missing_mask_of_wrong_shape(hmm):
    x = torch.zeros(2, 4, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"missing has shape \(1, 5\), which does not broadcast to the tokens' \(2, 4\)"):
        hmmlib.posterior_marginals(hmm, x, missing=torch.zeros(5, dtype=torch.bool))


# --------------------------------------------------------------------------- seeds, sizes, presets
def test_seed_and_generator_both_or_neither(hmm):
    with pytest.raises(ValueError, match=r"pass exactly one of seed=<int> or generator=<torch\.Generator>"):
        hmmlib.sample(hmm, 2, 3)
    with pytest.raises(ValueError, match=r"pass exactly one of seed"):
        hmmlib.sample(hmm, 2, 3, seed=0, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("seed", [1.5, "0", True, np.float64(3.0)])
def test_bad_seed_type(hmm, seed):
    with pytest.raises(ValueError, match=r"seed must be an int"):
        hmmlib.sample(hmm, 2, 3, seed=seed)


def test_bad_generator_type(hmm):
    with pytest.raises(ValueError, match=r"generator must be a torch\.Generator; got int"):
        hmmlib.sample(hmm, 2, 3, generator=0)


@pytest.mark.parametrize("name", ["num_seqs", "seq_len"])
@pytest.mark.parametrize("value", [0, -3, 2.0, True, None])
def test_bad_num_seqs_and_seq_len(hmm, name, value):
    kw = {"num_seqs": 2, "seq_len": 3, name: value}
    with pytest.raises(ValueError, match=rf"{name} must be a positive integer; got {re.escape(repr(value))}"):
        hmmlib.sample(hmm, kw["num_seqs"], kw["seq_len"], seed=0)


@pytest.mark.parametrize("call,match", [
    (lambda: hmmlib.paper_hmm(0), r"num_states must be a positive integer; got 0"),
    (lambda: hmmlib.paper_hmm(3, 2.5), r"num_symbols must be a positive integer; got 2\.5"),
    (lambda: hmmlib.paper_hmm(3, 4, num_perms=0), r"num_perms must be a positive integer; got 0"),
    (lambda: hmmlib.paper_hmm(3, 4, emission_temp=0.0), r"emission_temp must be a positive finite number; got 0\.0"),
    (lambda: hmmlib.paper_hmm(3, 4, transition_temp=math.inf), r"transition_temp must be a positive finite number"),
    (lambda: hmmlib.dirichlet_hmm(3, 4, emission_concentration=-1.0), r"emission_concentration must be a positive"),
    (lambda: hmmlib.dirichlet_hmm(True, 4), r"num_states must be a positive integer; got True"),
], ids=["K=0", "V-float", "perms=0", "temp=0", "temp=inf", "conc<0", "K-bool"])
def test_bad_generator_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_unknown_preset(monkeypatch):
    with pytest.raises(ValueError, match=r"unknown preset 'huge' .*choose one of ci, default, repro, paper"):
        hmmlib.get_preset("huge")
    monkeypatch.setenv(PRESET_ENV, "fast")
    with pytest.raises(ValueError, match=rf"unknown preset 'fast' \(from {PRESET_ENV}\)"):
        hmmlib.get_preset()


# --------------------------------------------------------------------------- inference-specific
def _impossible_case():
    W = torch.tensor([[0.7, 0.2], [0.3, 0.8], [0.0, 0.0]], dtype=F64)  # token 2 is never emitted
    hmm = HMM(torch.tensor([0.5, 0.5], dtype=F64), torch.tensor([[0.9, 0.5], [0.1, 0.5]], dtype=F64), W)
    return hmm, torch.tensor([[0, 1, 0, 1], [0, 1, 2, 1]])


@pytest.mark.parametrize("fn", [hmmlib.posterior_marginals, hmmlib.posterior_h0, hmmlib.masked_conditional,
                                hmmlib.masked_token_conditionals, hmmlib.next_token_conditionals],
                         ids=lambda f: f.__name__)
def test_impossible_sequence(fn):
    hmm, x = _impossible_case()
    with pytest.raises(ValueError, match=r"sequence 1 has probability 0 under the HMM"):
        fn(hmm, x)
    fn(hmm, x[:1])  # the possible sequence alone is fine


def test_impossible_sequence_reports_position():
    hmm, x = _impossible_case()
    with pytest.raises(ValueError, match=r"sequence 1 has probability 0 .*token at position 2 cannot be emitted"):
        hmmlib.posterior_marginals(hmm, x)


def test_posterior_h0_impossible_sequence_reports_the_right_position():
    hmm, x = _impossible_case()  # token 2 of sequence 1 is the impossible one; token 0 is fine
    with pytest.raises(ValueError, match=r"sequence 1 has probability 0") as info:
        hmmlib.posterior_h0(hmm, x)
    assert "position 0" not in str(info.value), str(info.value)


def test_backward_with_wrongly_shaped_scale(hmm):
    x = torch.zeros(2, 5, dtype=torch.int64)
    scale = hmmlib.forward(hmm, x).scale
    for bad in (scale.T, scale[:, :-1], scale[0]):
        with pytest.raises(ValueError, match=r"scale must have shape \(batch, seq_len\) = \(2, 5\) .*got"):
            hmmlib.backward(hmm, x, bad)


def test_inference_needs_an_hmm():
    pi, A, W = _params()
    with pytest.raises(ValueError, match=r"expected an HMM, got tuple"):
        hmmlib.log_likelihood((pi, A, W), torch.zeros(3, dtype=torch.int64))



# --------------------------------------------------------------------------- weak cases of the reliability review
@pytest.fixture
def no_cuda(monkeypatch):
    """This machine as one without a GPU (whatever it really has), and no cached default device."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("HMMBOOK_DEVICE", raising=False)
    hmmlib.default_device.cache_clear()
    yield
    hmmlib.default_device.cache_clear()


CUDA_HINT = r"asks for CUDA, but torch\.cuda\.is_available\(\) is False .*use device='cpu' \(or set HMMBOOK_DEVICE=cpu\)"


def test_cuda_asked_for_without_a_gpu(no_cuda, hmm, monkeypatch):
    """H15, P9, E5: an AssertionError from inside torch before; a ValueError that says how to run on the CPU now."""
    with pytest.raises(ValueError, match=CUDA_HINT):  # H15
        hmm.to("cuda")
    with pytest.raises(ValueError, match=CUDA_HINT):
        hmm.to(torch.device("cuda", 0))
    assert hmm.to("cpu").device.type == "cpu" and hmm.to(dtype=torch.float32).dtype == torch.float32
    mcfg = hmmlib.TransformerConfig(num_symbols=4, d_model=8, num_layers=1, num_heads=1, max_len=8)
    tcfg = hmmlib.TrainConfig(num_steps=1, batch_size=2, seq_len=4, warmup_steps=0, eval_num_seqs=2)
    with pytest.raises(ValueError, match=CUDA_HINT):  # P9
        hmmlib.pretrain(hmm, mcfg, tcfg, device="cuda", progress=False)
    monkeypatch.setenv("HMMBOOK_DEVICE", "cuda")  # E5
    with pytest.raises(ValueError, match=r"HMMBOOK_DEVICE='cuda' asks for CUDA, but .*HMMBOOK_DEVICE=cpu"):
        hmmlib.default_device()
    with pytest.raises(ValueError, match=r"HMMBOOK_DEVICE='cuda' asks for CUDA"):
        hmmlib.pretrained_model(hmm, mcfg, tcfg, progress=False)
    monkeypatch.setenv("HMMBOOK_DEVICE", "cpu")
    hmmlib.default_device.cache_clear()
    from hmmlib.lm.device import resolve_device

    assert hmmlib.default_device() == torch.device("cpu") == resolve_device(None) == resolve_device("cpu")
    assert resolve_device("meta").type == "meta"  # a device with no hardware behind it stays usable


def test_a_gpu_index_this_machine_lacks(monkeypatch, hmm):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"device='cuda:3' asks for GPU 3, but this machine has 1 \(cuda:0 \.\. cuda:0\)"):
        hmm.to("cuda:3")


def test_a_bad_device_name_is_still_refused(monkeypatch):
    """E8 stays as it was."""
    monkeypatch.setenv("HMMBOOK_DEVICE", "gpu0")
    hmmlib.default_device.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"HMMBOOK_DEVICE='gpu0' is not a torch device .*use e\.g\. 'cpu' or 'cuda'"):
            hmmlib.default_device()
    finally:
        hmmlib.default_device.cache_clear()


def test_ragged_token_lists_get_hmmlibs_message(hmm):
    """H19: numpy's own 'inhomogeneous shape' error before (the hmmlib message was dead code on numpy >= 1.24)."""
    for ragged in ([[0, 1], [2]], [[0, 1, 2], [1, 2], [0]]):
        with pytest.raises(ValueError, match=r"rectangular array of integers; got ragged input .*missing="):
            hmmlib.log_likelihood(hmm, ragged)


def test_numpy_integers_are_sizes_and_seeds(hmm):
    """S4: np.int64 seeds and sizes were refused by sample(); they are integers, as _validate and TrainConfig say."""
    x, s = hmmlib.sample(hmm, np.int64(2), np.int32(5), seed=np.int64(3))
    x0, s0 = hmmlib.sample(hmm, 2, 5, seed=3)
    assert x.shape == (2, 5) and torch.equal(x, x0) and torch.equal(s, s0)
    for bad in (np.float64(2.0), np.bool_(True)):
        with pytest.raises(ValueError, match=r"num_seqs must be a positive integer"):
            hmmlib.sample(hmm, bad, 5, seed=0)
    with pytest.raises(ValueError, match=r"num_seqs must be a positive integer; got np\.int64\(0\)"):
        hmmlib.sample(hmm, np.int64(0), 5, seed=0)


def test_warmup_longer_than_training_is_refused():
    """P10: warmup_steps=100 with num_steps=3 used to run at 3% of the configured peak lr, silently."""
    with pytest.raises(ValueError, match=r"warmup_steps=100 is more than num_steps=3: .*3/100 of lr .*warmup_steps <= "
                                         r"num_steps"):
        hmmlib.TrainConfig(num_steps=3, warmup_steps=100)
    assert hmmlib.TrainConfig(num_steps=3, warmup_steps=3).warmup_steps == 3  # a warmup of the whole run is fine
    assert hmmlib.TrainConfig().warmup_steps <= hmmlib.TrainConfig().num_steps


@pytest.fixture(scope="module")
def task_splits():
    h = hmmlib.paper_hmm(4, 10, seed=0)
    _, splits, _ = hmmlib.adapt.tasks.paper_task_and_splits(h, seed=0, sizes=(64, 16, 32), seq_len=8)
    return h, splits


def _small_lm(max_len: int = 16) -> hmmlib.Transformer:
    torch.manual_seed(0)
    return hmmlib.Transformer(hmmlib.TransformerConfig(num_symbols=10, d_model=16, num_layers=1, num_heads=2,
                                                       max_len=max_len))


@pytest.mark.parametrize("kind", ["ideal", "transformer"])
def test_one_class_labels_are_refused_by_fit(task_splits, kind):
    """T4: a tuner trained on one class used to succeed silently (test accuracy below the majority rate)."""
    import dataclasses

    h, splits = task_splits
    model = h if kind == "ideal" else _small_lm()
    train = splits["train"]
    for label in (0, 1):
        one = dataclasses.replace(train, y=torch.full_like(train.y, label))
        with pytest.raises(hmmlib.SingleClassError, match=rf"every one of the {len(train)} training labels is {label}: "
                                                           r"a classifier needs examples of both classes"):
            hmmlib.make_tuner(model, hmmlib.HeadConfig(num_steps=5)).fit(one)


def test_one_class_labels_are_refused_by_the_converged_head():
    """T5: fit_logistic_head returned converged=True on one class, though no finite minimiser exists."""
    from hmmlib.adapt.logistic import fit_logistic_head

    F = torch.rand(20, 5, generator=torch.Generator().manual_seed(0))
    for label in (0, 1):
        with pytest.raises(ValueError, match=rf"every one of the 20 labels is {label}: .*no finite minimiser"):
            fit_logistic_head(F, torch.full((20,), label, dtype=torch.long))
    y = torch.zeros(20, dtype=torch.long)
    y[0] = 1
    assert fit_logistic_head(F, y)[2].converged  # two classes, however unbalanced, are fine


@pytest.mark.parametrize("kind", ["ideal", "transformer"])
def test_labels_outside_0_1_are_refused(task_splits, kind):
    """T7: an IndexError from torch's cross-entropy before."""
    import dataclasses

    h, splits = task_splits
    model = h if kind == "ideal" else _small_lm()
    tuner = hmmlib.make_tuner(model, hmmlib.HeadConfig(num_steps=2))
    bad = dataclasses.replace(splits["train"], y=splits["train"].y * 3)
    with pytest.raises(ValueError, match=r"training labels y must be 0 or 1 \(two classes\); got also \[3\]"):
        tuner.fit(bad)
    with pytest.raises(ValueError, match=r"evaluation labels y must be 0 or 1"):
        tuner.evaluate(dataclasses.replace(splits["test"], y=splits["test"].y - 1))


def test_a_tuner_state_dict_of_another_prompt_length(task_splits):
    """U3: torch's RuntimeError 'size mismatch' before; a ValueError naming the shapes and the fix now."""
    model = _small_lm()
    two = hmmlib.make_tuner(model, hmmlib.PromptTuningConfig(prompt_len=2, num_steps=2))
    three = hmmlib.make_tuner(model, hmmlib.PromptTuningConfig(prompt_len=3, num_steps=2))
    with pytest.raises(ValueError, match=r"cannot load this state_dict into a TransformerTuner built with "
                                         r"PromptTuningConfig: prompt has shape \(2, 16\) in the state_dict but "
                                         r"\(3, 16\) in this tuner\. .*same prompt_len"):
        three.load_state_dict(two.state_dict())
    head = hmmlib.make_tuner(model, hmmlib.HeadConfig())
    with pytest.raises(ValueError, match=r"cannot load this state_dict into a TransformerTuner: .*Missing key.*prompt"):
        three.load_state_dict(head.state_dict())
    fresh = hmmlib.make_tuner(model, hmmlib.PromptTuningConfig(prompt_len=2, num_steps=2, seed=5))
    fresh.load_state_dict(two.state_dict())  # the same shapes load as before
    assert torch.equal(fresh.prompt, two.prompt)


def test_max_positions_beyond_the_model_is_refused():
    """U4: max_positions=500 on a 16-position model was clamped to 16 silently."""
    model = _small_lm(max_len=16)
    with pytest.raises(ValueError, match=r"max_positions=500 is more than the model's 16 learned positions \(max_len\); "
                                         r"use max_positions <= 16, or None"):
        hmmlib.make_tuner(model, hmmlib.PromptTuningConfig(num_steps=2, prompt_len=2, max_positions=500))
    assert hmmlib.make_tuner(model, hmmlib.PromptTuningConfig(prompt_len=2, max_positions=16)).layout.max_tokens == 13


def test_evaluate_before_fit_measures_the_seeded_initial_head(task_splits):
    """U6, decided: evaluate before fit is allowed (chapter 5 evaluates hand-set theorem heads this way); it
    measures the head as it stands, the seeded initialisation, the same for the same config."""
    h, splits = task_splits
    cfg = hmmlib.HeadConfig.adamw(num_steps=20, lr=0.1)
    a, b = hmmlib.make_tuner(h, cfg), hmmlib.make_tuner(h, cfg)
    before = a.evaluate(splits["test"])
    assert before == b.evaluate(splits["test"]) and a.history == []
    a.fit(splits["train"])
    assert a.evaluate(splits["test"])["loss"] != before["loss"]
