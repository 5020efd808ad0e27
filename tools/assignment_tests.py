"""The autograder tests of the course assignments (tools/make_assignments.py): per gradable exercise, the
variables the tests read and otter exception-based test cases with their points.

Each test is one function whose parameters are the student's variables (otter passes them by name; during
grading :mod:`hmmlib.otter_plugin` calls it outside the student's kernel on the answers as data). Hidden tests
recompute the reference from inputs fixed here, never from the student's kernel (a student who redefines ``hmm``
or ``x`` changes nothing), and some evaluate the answer on inputs the student never sees (other seeds, other
sizes: the ``seed=...`` and probe arguments below). Graded calls pass ``reveal=False`` so that no message shows
the reference value. This file is part of the autograder only: it is not shipped with hmmlib.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Test:
    points: float
    hidden: bool
    source: str          # one function definition (otter's exception-based format)


@dataclass(frozen=True)
class Spec:
    reads: str           # what the tests read, for the student ("`h`, an hmmlib.HMM")
    tests: list[Test] = field(default_factory=list)


def _t(points, hidden, source):
    return Test(points, hidden, source.strip() + "\n")


SPECS: dict[str, Spec] = {
    "ex-ch1-lemma": Spec("`G` ($G(x)$ for the HMM `hmmlib.dirichlet_hmm(4, 3, seed=11)` and the 5 tokens of "
                         "`hmmlib.sample(h, 1, 5, seed=12)`) and `v` (a non-zero vector with $Wv = 0$)", [
        _t(1, False, '''
def test_shapes(G, v):
    import torch
    assert torch.as_tensor(G).numel() == 3, "G should have one entry per symbol (3)"
    assert torch.as_tensor(v).numel() == 4, "v should have one entry per state (4)"
'''),
        _t(2, True, '''
def test_G(G):
    import torch, hmmlib
    from hmmlib import checks
    h = hmmlib.dirichlet_hmm(4, 3, seed=11)
    checks.check_ch1_lemma(G, torch.linalg.svd(h.W).Vh[-1], reveal=False)
'''),
        _t(1, True, '''
def test_v(v):
    import hmmlib
    from hmmlib import checks
    h = hmmlib.dirichlet_hmm(4, 3, seed=11)
    x, _ = hmmlib.sample(h, 1, 5, seed=12)
    checks.check_ch1_lemma(hmmlib.masked_conditional(h, x[0]), v, reveal=False)
'''),
    ]),
    "ex-ch1-shortcut": Spec("`shortcut` (the rows $A^\\top P(H_1\\mid x)$ for the skewed $\\pi$, shape (50, 6)) "
                            "and `agrees` (a dict: `'uniform'`, `'skewed'`, `'permutation'` to `True`/`False`)", [
        _t(1, False, '''
def test_shapes(shortcut, agrees):
    import torch
    assert tuple(torch.as_tensor(shortcut).shape) == (50, 6), "shortcut should have one row per input: (50, 6)"
    assert set(agrees) == {"uniform", "skewed", "permutation"}, "agrees needs the three keys"
'''),
        _t(2, True, '''
def test_shortcut(shortcut):
    import torch, hmmlib
    from hmmlib import checks
    base = hmmlib.paper_hmm(6, 10, seed=21, emission_temp=0.3, transition_temp=0.3)
    x, _ = hmmlib.sample(base, 50, 20, seed=22)
    skewed = torch.tensor([0.5, 0.2, 0.1, 0.1, 0.05, 0.05], dtype=torch.float64)
    checks.check_ch1_shortcut(hmmlib.HMM(skewed, base.A, base.W), x, shortcut, reveal=False)
'''),
        _t(1, True, '''
def test_agrees(agrees):
    import torch, hmmlib
    from hmmlib import checks
    base = hmmlib.paper_hmm(6, 10, seed=21, emission_temp=0.3, transition_temp=0.3)
    x, _ = hmmlib.sample(base, 50, 20, seed=22)
    skewed = torch.tensor([0.5, 0.2, 0.1, 0.1, 0.05, 0.05], dtype=torch.float64)
    cases = {"uniform": (torch.full((6,), 1 / 6, dtype=torch.float64), base.A), "skewed": (skewed, base.A),
             "permutation": (skewed, torch.roll(torch.eye(6, dtype=torch.float64), 1, 0))}
    for name, (pi, A) in cases.items():
        h = hmmlib.HMM(pi, A, base.W)
        ref = hmmlib.posterior_marginals(hmmlib.HMM(A @ pi, A, base.W), x)[:, 0] @ A
        checks.check_ch1_shortcut(h, x, ref, agrees=bool(agrees[name]), reveal=False)
'''),
    ]),
    "ex-ch1-uninformative": Spec("`h` (an `hmmlib.HMM` with $K = V = 3$)", [
        _t(1, False, '''
def test_shape(h):
    import torch, hmmlib
    assert isinstance(h, hmmlib.HMM), "h should be an hmmlib.HMM"
    assert (h.num_states, h.num_symbols) == (3, 3), "h should have 3 states and 3 symbols"
    assert torch.allclose(h.W.double(), torch.eye(3, dtype=torch.float64)), "W should be the identity"
'''),
        _t(2, True, '''
def test_uninformative(h):
    from hmmlib import checks
    checks.check_ch1_uninformative(h, reveal=False)
'''),
        _t(1, True, '''
def test_unseen_inputs(h):
    from hmmlib import checks
    checks.check_ch1_uninformative(h, num_samples=400, seq_len=15, seed=8191, reveal=False)
'''),
    ]),
    "ex-ch2-decomposition": Spec("`cross_entropy`, `entropy` and `kl` (numbers, for the chapter's HMM "
                                 "(`hmmlib.paper_hmm(10, 10, seed=0)`), the inputs "
                                 "`hmmlib.sample(hmm, 2000, 32, seed=3)` and position 5)", [
        _t(1, False, '''
def test_sum(cross_entropy, entropy, kl):
    assert abs(float(cross_entropy) - (float(entropy) + float(kl))) < 1e-10, "L(q) should equal H + KL to 1e-10"
'''),
        _t(3, True, '''
def test_values(cross_entropy, entropy, kl):
    import hmmlib
    from hmmlib import checks
    hmm = hmmlib.paper_hmm(10, 10, seed=0)
    x, _ = hmmlib.sample(hmm, 2000, 32, seed=3)
    checks.check_ch2_decomposition(hmm, x, 5, float(cross_entropy), float(entropy), float(kl), reveal=False)
'''),
    ]),
    "ex-ch2-right-context": Spec("`floor_pos0` and `floor_mid` (numbers, for the chapter's HMM "
                                 "(`hmmlib.paper_hmm(10, 10, seed=0)`), the inputs "
                                 "`hmmlib.sample(hmm, 2000, 33, seed=4)` and middle position 16)", [
        _t(1, False, '''
def test_order(floor_pos0, floor_mid):
    assert float(floor_pos0) > float(floor_mid), "the floor at position 0 should be the higher one"
'''),
        _t(2, True, '''
def test_values(floor_pos0, floor_mid):
    import hmmlib
    from hmmlib import checks
    hmm = hmmlib.paper_hmm(10, 10, seed=0)
    x, _ = hmmlib.sample(hmm, 2000, 33, seed=4)
    checks.check_ch2_right_context(hmm, x, float(floor_pos0), float(floor_mid), mid=16, reveal=False)
'''),
    ]),
    "ex-ch3-min-norm": Spec("`mu8` (your task, 8 entries), `b8` (the closed-form head) and `b_other` (another head "
                            "with $W^\\top b' = \\mu$), for `hmmlib.paper_hmm(8, 10, seed=0)`", [
        _t(1, False, '''
def test_shapes(mu8, b8, b_other):
    import torch
    assert torch.as_tensor(mu8).numel() == 8, "mu8 should have one entry per state (8)"
    assert torch.as_tensor(b8).numel() == 10 and torch.as_tensor(b_other).numel() == 10, "heads have 10 entries"
'''),
        _t(2, True, '''
def test_min_norm(mu8, b8):
    import hmmlib
    from hmmlib import checks
    checks.check_ch3_min_norm(hmmlib.paper_hmm(8, 10, seed=0).W, mu8, b8, reveal=False)
'''),
        _t(1, True, '''
def test_other(mu8, b_other):
    import hmmlib
    from hmmlib import checks, theory
    W = hmmlib.paper_hmm(8, 10, seed=0).W
    checks.check_ch3_min_norm(W, mu8, theory.closed_form_head(W, mu8), b_other, reveal=False)
'''),
    ]),
    "ex-ch3-conditioning": Spec("`conditioning` (a dict from each $\\delta$ in 0.2, 0.05, 0.01 to the pair "
                                "`(sigma_min, head_norm)`)", [
        _t(1, False, '''
def test_keys(conditioning):
    assert sorted(float(d) for d in conditioning) == [0.01, 0.05, 0.2], "one entry per delta: 0.2, 0.05, 0.01"
    assert all(len(v) == 2 for v in conditioning.values()), "each value is (sigma_min, head_norm)"
'''),
        _t(2, True, '''
def test_values(conditioning):
    from hmmlib import checks
    checks.check_ch3_conditioning(conditioning, reveal=False)
'''),
    ]),
    "ex-ch3-rowspace": Spec("`mu15` (your task, 15 entries) and `acc15` (the closed-form head's test accuracy), "
                            "for `hmmlib.paper_hmm(15, 10, seed=0)`", [
        _t(1, False, '''
def test_shape(mu15):
    import torch
    mu = torch.as_tensor(mu15)
    assert mu.numel() == 15, "mu15 should have one entry per state (15)"
    assert bool((mu > 0).any()) and bool((mu < 0).any()), "mu15 needs both signs so that both classes occur"
'''),
        _t(2, True, '''
def test_rowspace(mu15, acc15):
    import hmmlib
    from hmmlib import checks
    checks.check_ch3_rowspace(hmmlib.paper_hmm(15, 10, seed=0), mu15, float(acc15), reveal=False)
'''),
        _t(1, True, '''
def test_unseen_inputs(mu15):
    import torch, hmmlib
    from hmmlib import theory
    from hmmlib.adapt.tasks import make_splits, task_from_mu
    h = hmmlib.paper_hmm(15, 10, seed=0)
    mu = torch.as_tensor(mu15, dtype=torch.float64).reshape(-1)
    ds = make_splits(h, task_from_mu(mu), (10, 10, 500), 64, seed=4242)["test"]
    acc = ((ds.G @ theory.closed_form_head(h.W, mu) >= 0).long() == ds.y).double().mean().item()
    assert acc == 1.0, "the closed-form head for mu15 is not 100% accurate on new test inputs"
'''),
    ]),
    "ex-ch4-construct": Spec("`h6` (your 6-state HMM), `mu6` (the task), `u6` (the prompt) and `b6` (the head)", [
        _t(1, False, '''
def test_shapes(h6, mu6):
    import torch, hmmlib
    assert isinstance(h6, hmmlib.HMM) and (h6.num_states, h6.num_symbols) == (6, 3), "h6: 6 states, 3 symbols"
    assert torch.as_tensor(mu6).numel() == 6, "mu6 should have 6 entries"
'''),
        _t(2, True, '''
def test_construct(h6, mu6, u6, b6):
    from hmmlib import checks
    checks.check_ch4_construct(h6, mu6, u6, b6, reveal=False)
'''),
        _t(1, True, '''
def test_unseen_inputs(h6, mu6, u6, b6):
    from hmmlib import checks
    checks.check_ch4_construct(h6, mu6, u6, b6, num_test=1000, seed=977, reveal=False)
'''),
    ]),
    "ex-ch4-contains": Spec("`u_const` (a constant `(2, 15)` prompt) and `G15` ($G_u$ on the inputs "
                            "`hmmlib.sample(h15, 100, 64, seed=0)` of the HMM `hmmlib.paper_hmm(15, 10, seed=0)`)", [
        _t(1, False, '''
def test_shape(u_const):
    import torch
    u = torch.as_tensor(u_const)
    assert tuple(u.shape) == (2, 15), "u_const should be 2 fake tokens of 15 entries"
    assert bool((u == u[:, :1]).all()), "every row of u_const should be constant"
'''),
        _t(2, True, '''
def test_contains(u_const, G15):
    import hmmlib
    from hmmlib import checks
    h15 = hmmlib.paper_hmm(15, 10, seed=0)
    x15, _ = hmmlib.sample(h15, 100, 64, seed=0)
    checks.check_ch4_contains(h15, u_const, x15, G15, reveal=False)
'''),
    ]),
    "ex-ch5-degenerate": Spec("`degenerate` (an `hmmlib.MemoryHMM`: `loc` with values 0 and 1 emitting the same "
                              "column in syntax state 0)", [
        _t(1, False, '''
def test_type(degenerate):
    import hmmlib
    assert isinstance(degenerate, hmmlib.MemoryHMM), "degenerate should be an hmmlib.MemoryHMM"
    assert tuple(degenerate.W.shape) == tuple(hmmlib.locatable_memory_hmm().W.shape), "W should have loc's shape"
'''),
        _t(2, True, '''
def test_degenerate(degenerate):
    import hmmlib
    from hmmlib import checks
    checks.check_ch5_degenerate(hmmlib.locatable_memory_hmm(), degenerate, reveal=False)
'''),
        _t(1, True, '''
def test_unseen_inputs(degenerate):
    import hmmlib
    from hmmlib import checks
    from hmmlib.memory import sample_memory
    xs, mem, *_ = sample_memory(degenerate, 400, 24, seed=5151)
    c = checks.memory_check_theorem()(degenerate, [1.0, -1.0, 0.0], xs, cell=0, syntax=0, scale=20.0)
    sel = mem[:, 0] <= 1
    acc = c.correct[sel].double().mean().item()
    checks.check_ch5_degenerate(hmmlib.locatable_memory_hmm(), degenerate, accuracy=acc, reveal=False)
'''),
    ]),
    "ex-ch5-reads": Spec("`needed` (a dict from each peak, 0.5 and 0.4, to the smallest length $T$; `None` or "
                         "`float('inf')` when none suffices)", [
        _t(1, False, '''
def test_keys(needed):
    assert {0.5, 0.4} <= {float(p) for p in needed}, "needed should have the peaks 0.5 and 0.4"
'''),
        _t(2, True, '''
def test_values(needed):
    import math
    from hmmlib import checks
    answers = {float(p): (None if T is None or (isinstance(T, float) and math.isinf(T)) else int(T))
               for p, T in needed.items() if float(p) in (0.5, 0.4)}
    checks.check_ch5_reads(answers, [1.0, -1.2, 0.5], reveal=False)
'''),
    ]),
    "ex-ch7-count": Spec("`gpt2_trained` and `gpt2_stored` (the two counts for GPT-2-medium), and the functions "
                         "`trained_count(n, L, d, k)` and `stored_count(n, L, d)`", [
        _t(1, False, '''
def test_integers(gpt2_trained, gpt2_stored):
    assert float(gpt2_trained) == int(gpt2_trained) > 0 and float(gpt2_stored) == int(gpt2_stored) > 0, \\
        "both counts are positive integers"
'''),
        _t(2, True, '''
def test_gpt2(gpt2_trained, gpt2_stored):
    from hmmlib import checks
    checks.check_ch7_count(gpt2_trained, gpt2_stored, reveal=False)
'''),
        _t(1, True, '''
@__import__("hmmlib.grading").grading.probes(t_large="trained_count(7, 36, 1280, 800)",
                                             s_large="stored_count(7, 36, 1280)")
def test_unseen_sizes(t_large, s_large):
    from hmmlib import checks
    checks.check_ch7_count(t_large, s_large, n=7, L=36, d=1280, k=800, reveal=False)
'''),
    ]),
}


def points(label: str) -> float:
    return sum(t.points for t in SPECS[label].tests)
