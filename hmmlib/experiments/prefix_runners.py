"""Chapter 7's experiments: a causal LM pretrained on a family of HMMs, tuned by every method of
:mod:`hmmlib.adapt.causal_tuning`, scored against the exact conditional.

:func:`prefix_setup` builds the family, the tasks, the datasets and the (cached) pretrained model;
:func:`run` trains one method with one seed and returns a flat record; the ``r*`` functions run the
paper's claims (Li & Liang 2021, sections 4.3 and 6-7) as lists of records, and
:func:`summarize` turns records into means with 95% intervals over seeds.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from ..adapt.causal_tuning import (CausalFinetuneConfig, CausalInfixConfig, CausalPrefixConfig, CausalPromptConfig, TrainSettings, evaluate,
                                   fit, make_causal_tuner)
from ..adapt.generation import GenerationData, GenerationTask, distance_to_family, score
from ..hmm.families import mixture_hmm, perturbed_hmm, symbol_channel, through_channel
from ..hmm.generators import dirichlet_hmm
from ..hmm.model import HMM
from ..lm.cache import pretrained_model
from ..lm.pretrain import TrainConfig
from ..lm.transformer import Transformer, TransformerConfig
from .prefix_presets import PrefixSizes

__all__ = ["PAPER", "PrefixSetup", "prefix_setup", "run", "summarize", "r1_prefix_vs_prompt", "r3_reparametrisation",
           "r4_initialisation", "r5_data_size", "r6_prefix_length", "r7_infix", "r8_extrapolation", "r10_layers", "settings_for", "step0_kl", "paired"]

#: The paper's numbers beside each experiment (ACL version; Li & Liang Tables 2 and 5, Figs. 3-6).
PAPER: dict[str, Any] = {
    "R1": {"PREFIX": 70.3, "EMB-1": 48.1, "EMB-10": 62.2, "EMB-20": 61.9, "metric": "E2E BLEU (Table 5)"},
    "R3": "direct optimisation of P 'unstable, slightly worse, very sensitive to initialisation' (sec. 4.3, fn. 3)",
    "R4": "random init: low BLEU, high variance; real words clearly better (Fig. 5 axis 0.45-0.60 BLEU); relevant "
          "slightly > irrelevant; no effect with full data (sec. 7.4)",
    "R5": {"avg_gain_bleu": 2.9, "note": "prefix > FT in low data, gap narrows with data (Fig. 3); Fig. 6: "
           "random-init prefix >= FT from 20% of E2E"},
    "R6": {"best_len_dart": 10, "best_len_xsum": 200, "note": "rises then dips; train loss keeps falling (Fig. 4)"},
    "R7": {"PREFIX": 70.3, "INFIX-1": 67.9, "INFIX-10": 67.2, "INFIX-20": 66.7, "metric": "E2E BLEU (Table 5)"},
    "R8": {"prefix_unseen": 45.3, "ft_unseen": 26.7, "prefix_seen": 62.9, "ft_seen": 64.7,
           "metric": "WebNLG BLEU (Table 2)"},
    "R10": "P-Tuning v2: prefixes on the top layers ~ all layers >> bottom layers",
}


@dataclass
class PrefixSetup:
    """Everything the chapter's experiments share (built by :func:`prefix_setup`)."""

    sizes: PrefixSizes
    family: list[HMM]
    task: GenerationTask
    target: HMM
    target_task: GenerationTask
    model: Transformer
    pretrain_seconds: float
    data: dict[str, GenerationData] = field(default_factory=dict)
    distance: dict[str, dict[str, float]] = field(default_factory=dict)
    channel: torch.Tensor | None = None
    memo: dict = field(default_factory=dict, repr=False)


def prefix_setup(sizes: PrefixSizes, *, seed: int = 0, progress: bool = False) -> PrefixSetup:
    """The family (sparse Dirichlet members), the tasks, the data splits and the causal LM pretrained on the
    family's mixture (from the model cache when it is there)."""
    s = sizes
    family = [dirichlet_hmm(s.num_states, s.num_symbols, start_concentration=0.1, transition_concentration=0.2,
                            emission_concentration=0.2, seed=1000 * seed + c) for c in range(s.num_members)]
    channel = symbol_channel(s.num_symbols, s.channel, seed=555 + seed)
    noisy = [through_channel(m, channel) for m in family]
    target = perturbed_hmm(family[0], s.perturb, seed=777 + seed)
    mcfg = TransformerConfig(num_symbols=s.num_symbols, d_model=s.d_model, num_layers=s.num_layers,
                             num_heads=s.num_heads, max_len=s.pretrain_seq_len + 16, causal=True)
    tcfg = TrainConfig(objective="causal", num_steps=s.pretrain_steps, batch_size=s.pretrain_batch_size,
                       seq_len=s.pretrain_seq_len, lr=s.pretrain_lr, warmup_steps=min(100, s.pretrain_steps // 10),
                       weight_decay=0.01, eval_every=s.pretrain_steps, eval_num_seqs=128, seed=seed)
    t0 = time.perf_counter()
    pre = pretrained_model(mixture_hmm(family).to(dtype=torch.float32), mcfg, tcfg, progress=progress)
    model = pre.model.eval()
    task = GenerationTask(noisy, s.x_len, s.y_len)
    target_task = GenerationTask([target], s.x_len, s.y_len)
    seen = list(range(s.num_seen))
    unseen = list(range(s.num_seen, s.num_members))
    data = {
        "train": task.sample(s.num_train, seed=10 + seed), "test": task.sample(s.num_test, seed=20 + seed),
        "seen_train": task.sample(s.num_train, seed=30 + seed, members=seen),
        "seen_test": task.sample(s.num_test, seed=40 + seed, members=seen),
        "unseen_test": task.sample(s.num_test, seed=50 + seed, members=unseen),
        "target_train": target_task.sample(s.num_train, seed=60 + seed),
        "target_test": target_task.sample(s.num_test, seed=70 + seed),
    }
    n, T = s.num_test, s.x_len + s.y_len
    dist = {"target": distance_to_family(target, family, num=n, seq_len=T, seed=80 + seed),
            "task_member_0": distance_to_family(noisy[0], family, num=n, seq_len=T, seed=81 + seed)}
    return PrefixSetup(s, family, task, target, target_task, model, time.perf_counter() - t0, data, dist, channel)


def settings_for(setup: PrefixSetup, config: Any, seed: int, **over: Any) -> TrainSettings:
    """The preset's steps and batch with the learning rate of ``config``'s method."""
    s = setup.sizes
    if isinstance(config, CausalPrefixConfig) or isinstance(config, CausalInfixConfig):
        lr = s.lr_prefix if config.mlp_hidden is not None else s.lr_direct
    elif isinstance(config, CausalPromptConfig):
        lr = s.lr_prompt
    else:
        lr = s.lr_finetune
    kw = dict(lr=lr, num_steps=s.num_steps, batch_size=s.batch_size, seed=seed)
    kw.update(over)
    return TrainSettings(**kw)


def run(setup: PrefixSetup, config: Any, *, train: str | GenerationData = "train", test: Sequence[str] = ("test",),
        seed: int = 0, num_train: int | None = None, settings: TrainSettings | None = None,
        train_score: bool = False, **labels: Any) -> dict[str, Any]:
    """Train ``config``'s method with ``seed`` (initialisation, minibatches and, with ``num_train``, the
    training subset) and score it on each of ``test``; a flat record with ``labels``."""
    st = settings or settings_for(setup, config, seed)
    full = setup.data[train] if isinstance(train, str) else train
    num_train = None if num_train is not None and num_train >= len(full) else num_train
    key = (repr(config), repr(st), train if isinstance(train, str) else id(train), num_train, seed, tuple(test), train_score)
    if key in setup.memo:
        return dict(setup.memo[key], **labels)
    data = full
    if num_train is not None:
        g = torch.Generator().manual_seed(10_000 + seed)
        data = data.subset(torch.randperm(len(data), generator=g)[:num_train])
    tuner = make_causal_tuner(setup.model, config, seed=seed)
    trainable = tuner.num_trainable
    t0 = time.perf_counter()
    hist = fit(tuner, data, st)
    rec = dict(labels, method=type(config).__name__.removeprefix("Causal").removesuffix("Config").lower(), seed=seed, lr=st.lr,
               num_train=len(data), trainable=trainable, stored=tuner.num_stored, seconds=time.perf_counter() - t0,
               final_train_loss=hist[-1]["train_loss"], max_grad_norm=max(h["grad_norm"] for h in hist))
    for name in test:
        m = evaluate(tuner, setup.data[name], per_example=True)
        rec.update({f"{name}_{k}": v for k, v in m.items()})
    if train_score:
        rec.update({f"train_{k}": v for k, v in evaluate(tuner, data).items()})
    setup.memo[key] = {k: v for k, v in rec.items() if k not in labels}
    return rec


def summarize(records: list[dict], by: Sequence[str], value: str) -> list[dict]:
    """Mean, standard error and 95% t-interval half-width of ``value`` over the records sharing ``by``."""
    groups: dict[tuple, list[float]] = {}
    for r in records:
        groups.setdefault(tuple(r[k] for k in by), []).append(float(r[value]))
    out = []
    for key, vals in groups.items():
        n = len(vals)
        mean = sum(vals) / n
        sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else float("nan")
        se = sd / math.sqrt(n) if n > 1 else float("nan")
        t = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78}.get(n, 1.96 if n > 30 else 2.2)
        out.append(dict(zip(by, key), mean=mean, sd=sd, se=se, ci95=t * se if n > 1 else float("nan"), n=n))
    return out


def paired(records: list[dict], a: dict, b: dict, key: str = "test_kl_per_example") -> dict[str, float]:
    """Mean and standard error of ``kl(a) - kl(b)`` over the same test examples: ``a`` and ``b`` select
    records by their fields (e.g. ``{"method": "prefix", "length": 5}``), paired by seed. The standard
    error is the larger of the examples' (each example's difference averaged over seeds) and, with
    several seeds, the seeds' (the spread of the per-seed mean differences)."""
    def pick(sel: dict) -> dict[int, torch.Tensor]:
        return {r["seed"]: r[key] for r in records if all(r.get(k) == v for k, v in sel.items())}
    ra, rb = pick(a), pick(b)
    seeds = sorted(set(ra) & set(rb))
    if not seeds:
        raise ValueError(f"no seed has records matching both {a} and {b}.")
    per = torch.stack([ra[s] - rb[s] for s in seeds]).double()  # (seeds, examples)
    d = per.mean(0)
    se = float(d.std() / len(d) ** 0.5)
    if len(seeds) > 1:  # training noise: the spread of the per-seed means, if larger
        se = max(se, float(per.mean(1).std() / len(seeds) ** 0.5))
    return {"diff": float(d.mean()), "se": se, "num_seeds": len(seeds)}


def _seeds(setup: PrefixSetup) -> range:
    return range(setup.sizes.num_seeds)


def _sweep(make: Callable[[int], list[dict]], setup: PrefixSetup) -> list[dict]:
    return [r for seed in _seeds(setup) for r in make(seed)]


def r1_prefix_vs_prompt(setup: PrefixSetup) -> list[dict]:
    """R1: prefix (MLP) against embedding-only prompt at each length of ``sizes.lengths``."""
    s = setup.sizes
    return _sweep(lambda seed: [run(setup, cfg, seed=seed, length=n)
                                for n in s.lengths
                                for cfg in (CausalPrefixConfig(n, s.mlp_hidden), CausalPromptConfig(n))], setup)


def r3_reparametrisation(setup: PrefixSetup, prefix_len: int = 5) -> list[dict]:
    """R3: MLP against direct prefix at each learning rate of ``sizes.lr_sweep`` (divergences kept)."""
    s = setup.sizes
    out = []
    for seed in _seeds(setup):
        for lr in s.lr_sweep:
            for hidden, name in ((s.mlp_hidden, "mlp"), (None, "direct")):
                cfg = CausalPrefixConfig(prefix_len, hidden)
                out.append(run(setup, cfg, seed=seed, settings=settings_for(setup, cfg, seed, lr=lr), param=name))
    return out


def r4_initialisation(setup: PrefixSetup, prefix_len: int = 5) -> list[dict]:
    """R4: initialisations of a direct prefix on the perturbed target, with ``low_data`` and full data.

    ``relevant``: the model's keys/values of text drawn from the target; ``irrelevant``: of text from an
    HMM outside the family; ``random``: N(0, 1); ``uniform``: U(0, 1) (the paper's A.5)."""
    from ..hmm.sampling import sample

    s = setup.sizes
    rel = sample(setup.target, 1, prefix_len, seed=901)[0][0].tolist()
    other = dirichlet_hmm(s.num_states, s.num_symbols, seed=99_999)
    irr = sample(other, 1, prefix_len, seed=902)[0][0].tolist()
    inits = {"random": CausalPrefixConfig(prefix_len, None), "uniform": CausalPrefixConfig(prefix_len, None, init="uniform"),
             "relevant": CausalPrefixConfig(prefix_len, None, init="tokens", init_tokens=tuple(rel)),
             "irrelevant": CausalPrefixConfig(prefix_len, None, init="tokens", init_tokens=tuple(irr))}
    return _sweep(lambda seed: [run(setup, cfg, train="target_train", test=("target_test",), seed=seed, num_train=n,
                                    init=name, regime=regime)
                                for regime, n in (("low", s.low_data), ("full", None))
                                for name, cfg in inits.items()], setup)


def r5_data_size(setup: PrefixSetup, prefix_len: int = 5) -> list[dict]:
    """R5: prefix (MLP, random init) against full fine-tuning at each size of ``sizes.data_sizes``."""
    s = setup.sizes
    return _sweep(lambda seed: [run(setup, cfg, seed=seed, num_train=n, size=n)
                                for n in s.data_sizes
                                for cfg in (CausalPrefixConfig(prefix_len, s.mlp_hidden), CausalFinetuneConfig())], setup)


def r6_prefix_length(setup: PrefixSetup) -> list[dict]:
    """R6: prefix length sweep, train and test excess loss (``low_data`` examples, so overfitting can show)."""
    s = setup.sizes
    return _sweep(lambda seed: [run(setup, CausalPrefixConfig(n, s.mlp_hidden), seed=seed, num_train=s.low_data * 2,
                                    train_score=True, length=n) for n in s.length_sweep], setup)


def r7_infix(setup: PrefixSetup) -> list[dict]:
    """R7: prefix against infix (just before ``[SEP]``) at each length of ``sizes.lengths``."""
    s = setup.sizes
    return _sweep(lambda seed: [run(setup, cfg, seed=seed, length=n)
                                for n in s.lengths
                                for cfg in (CausalPrefixConfig(n, s.mlp_hidden), CausalInfixConfig(n, s.mlp_hidden))], setup)


def r8_extrapolation(setup: PrefixSetup, prefix_len: int = 5) -> list[dict]:
    """R8: train on the seen members only; test on seen and unseen members' examples."""
    s = setup.sizes
    return _sweep(lambda seed: [run(setup, cfg, train="seen_train", test=("seen_test", "unseen_test"), seed=seed)
                                for cfg in (CausalPrefixConfig(prefix_len, s.mlp_hidden), CausalFinetuneConfig())], setup)


def r10_layers(setup: PrefixSetup, prefix_len: int = 5, k: int | None = None) -> list[dict]:
    """R10: prefix on the top ``k`` layers, the bottom ``k`` (default: half of them) and all layers."""
    s = setup.sizes
    L = s.num_layers
    k = k or max(1, L // 2)
    subsets = {"all": None, f"top-{k}": tuple(range(L - k, L)), f"bottom-{k}": tuple(range(k))}
    return _sweep(lambda seed: [run(setup, CausalPrefixConfig(prefix_len, s.mlp_hidden, layers=lay), seed=seed, layers=name)
                                for name, lay in subsets.items()], setup)


def step0_kl(setup: PrefixSetup, prefix_len: int = 5, data: str = "test") -> dict[str, float]:
    """KL to the truth of the frozen model alone and with an all-zero prefix (not a no-op)."""
    d = setup.data[data]
    frozen = make_causal_tuner(setup.model, CausalFinetuneConfig())
    zero = make_causal_tuner(setup.model, CausalPrefixConfig(prefix_len, None, init="zeros"))
    return {"frozen": evaluate(frozen, d, per_example=True), "zeros": evaluate(zero, d, per_example=True)}
