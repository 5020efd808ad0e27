r"""Checkers for the book's gradable exercises: is a student's answer right, and if not, what is wrong.

Each checker takes the student's answer (plus the inputs the exercise fixes, so that the reference can be
recomputed with hmmlib's exact functions) and returns a :class:`CheckResult`: ``bool(result)`` says whether it
passed and ``str(result)`` lists what is wrong. ``check_<name>(...)`` takes the same arguments and raises
``AssertionError`` with that message instead, for a notebook cell or an autograder test::

    from hmmlib import checks
    checks.check_ch1_uninformative(h)          # raises AssertionError("... what is wrong ...") unless right

Every checker also takes ``reveal`` (default ``True``, for a student checking their own work): with
``reveal=False`` (what the course assignments' graded tests pass) a message says what is wrong without the
reference value ("cross_entropy = 1.31 is not the expected value (tolerance 1e-08)" instead of "..., expected
1.29"). A checker only *computes* a verdict: grades come from the otter-grader assignments
(``tools/make_assignments.py``), whose tests call these checkers outside the student's kernel
(:mod:`hmmlib.otter_plugin`). :data:`CHECKS` maps each exercise's label (as in the book, e.g.
``"ex-ch1-uninformative"``) to its checker.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

__all__ = ["CheckResult", "CHECKS",
           "ch1_lemma", "ch1_shortcut", "ch1_uninformative", "ch2_decomposition", "ch2_right_context",
           "ch3_min_norm", "ch3_conditioning", "ch3_rowspace", "ch4_construct", "ch4_contains",
           "ch5_degenerate", "ch5_reads", "ch7_count"]

CHECKS: dict[str, Callable[..., "CheckResult"]] = {}


@dataclass
class CheckResult:
    """The outcome of one checker: ``passed``, and ``messages`` saying what is wrong (empty when right)."""

    exercise: str
    passed: bool
    messages: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        if self.passed:
            return f"{self.exercise}: correct."
        return f"{self.exercise}: not yet right:\n" + "\n".join(f"  - {m}" for m in self.messages)

    def _repr_markdown_(self) -> str:
        if self.passed:
            return f"**{self.exercise}**: correct."
        return f"**{self.exercise}**: not yet right:\n\n" + "\n".join(f"- {m}" for m in self.messages)


class _Problems:
    """Collects what is wrong; ``need`` records a message when a condition fails. With ``reveal=False`` a
    message that would show a reference value is replaced by its ``withheld`` form."""

    def __init__(self, reveal: bool = True) -> None:
        self.messages: list[str] = []
        self.reveal = reveal

    def need(self, ok: bool, message: str, withheld: str | None = None) -> bool:
        if not ok:
            self.messages.append(message if self.reveal or withheld is None else withheld)
        return bool(ok)


def _checker(label: str):
    """Register ``fn`` as the checker of exercise ``label`` and add ``check_<fn name>`` that raises."""

    def wrap(fn: Callable[[_Problems, Any], None]) -> Callable[..., CheckResult]:
        @functools.wraps(fn)
        def run(*args, reveal: bool = True, **kwargs) -> CheckResult:
            p = _Problems(reveal)
            try:
                fn(p, *args, **kwargs)
            except (ValueError, TypeError, IndexError, RuntimeError) as e:   # malformed answers are wrong answers
                p.messages.append(f"could not check the answer: {type(e).__name__}: {e}")
            return CheckResult(label, not p.messages, p.messages)

        def check(*args, reveal: bool = True, **kwargs) -> CheckResult:
            result = run(*args, reveal=reveal, **kwargs)
            if not result:
                raise AssertionError(str(result))
            return result

        sig = inspect.signature(fn)
        reveal = inspect.Parameter("reveal", inspect.Parameter.KEYWORD_ONLY, default=True, annotation=bool)
        run.__signature__ = check.__signature__ = sig.replace(parameters=list(sig.parameters.values())[1:] + [reveal])
        check.__name__ = check.__qualname__ = f"check_{fn.__name__}"
        check.__doc__ = f"Like :func:`{fn.__name__}`, but raise ``AssertionError`` with the message when wrong."
        globals()[check.__name__] = check
        __all__.append(check.__name__)
        CHECKS[label] = run
        return run

    return wrap


# ----------------------------------------------------------------------------- helpers
def _theory():
    from hmmlib.adapt import theory

    return theory


def memory_check_theorem():
    """``check_theorem`` of chapter 5."""
    from hmmlib.experiments import check_theorem

    return check_theorem


def _t(x: Any) -> torch.Tensor:
    return torch.as_tensor(x).detach().to("cpu", torch.float64)


def _close(a: Any, b: Any, atol: float) -> bool:
    a, b = _t(a), _t(b)
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=0, atol=atol))


def _is_hmm(p: _Problems, hmm: Any, name: str = "the HMM") -> bool:
    from hmmlib import HMM

    return p.need(isinstance(hmm, HMM), f"{name} should be an hmmlib.HMM; got {type(hmm).__name__}")


def _all_sequences(V: int, T: int) -> torch.Tensor:
    return torch.cartesian_prod(*[torch.arange(V)] * T).reshape(-1, T) if T > 1 else torch.arange(V)[:, None]


# ----------------------------------------------------------------------------- chapter 1
@_checker("ex-ch1-lemma")
def ch1_lemma(p: _Problems, G: Any, v: Any, hmm=None, x: Any = None) -> None:
    """Exercise "The lemma on another HMM": ``G`` is :math:`G(x)` for ``hmm`` (default
    ``dirichlet_hmm(4, 3, seed=11)``) and the 5 tokens ``x`` (default ``sample(hmm, 1, 5, seed=12)``), and ``v``
    is a non-zero kernel vector of ``W``."""
    from hmmlib import bruteforce, dirichlet_hmm, sample

    hmm = dirichlet_hmm(4, 3, seed=11) if hmm is None else hmm
    x = (sample(hmm, 1, 5, seed=12)[0][0] if x is None else torch.as_tensor(x)).reshape(-1)
    ref = bruteforce.brute_masked_token_conditionals(hmm, torch.cat([torch.zeros(1, dtype=torch.int64), x]))[0]
    G, v = _t(G).reshape(-1), _t(v).reshape(-1)
    if p.need(G.shape == ref.shape, f"G should have {ref.numel()} entries (one per symbol); got {G.numel()}"):
        p.need(abs(float(G.sum()) - 1) < 1e-9 and bool((G >= -1e-12).all()),
               f"G should be a probability distribution; it sums to {float(G.sum()):.6f}")
        p.need(_close(G, ref, 1e-9), "G differs from the brute-force P(X_0 | x_{1:5}) "
               f"(largest difference {float((G - ref).abs().max()):.2e})")
    if p.need(v.numel() == hmm.num_states, f"v should have K={hmm.num_states} entries; got {v.numel()}"):
        p.need(float(v.norm()) > 1e-6, "v should be non-zero")
        if float(v.norm()) > 1e-6:
            Wv = _t(hmm.W) @ v / v.norm()
            p.need(float(Wv.abs().max()) < 1e-9, f"W v should be 0; |W v|/|v| = {float(Wv.norm()):.2e}")


@_checker("ex-ch1-shortcut")
def ch1_shortcut(p: _Problems, hmm, x: Any, shortcut: Any, agrees: bool | None = None) -> None:
    r"""Exercise "When is the shortcut exact?": ``shortcut`` ``(N, K)`` is :math:`A^\top P(H_1\mid x)` for each
    row of ``x``, computed with ``hmm``'s exact posteriors; ``agrees`` (optional) is the student's claim that it
    equals ``posterior_h0`` (to 1e-12), which holds when ``pi`` is uniform and ``A`` doubly stochastic."""
    from hmmlib import HMM, posterior_h0, posterior_marginals

    if not _is_hmm(p, hmm):
        return
    x = torch.as_tensor(x)
    post_h1 = posterior_marginals(HMM(hmm.A @ hmm.pi, hmm.A, hmm.W), x)[:, 0]
    ref = post_h1 @ hmm.A
    p.need(_close(shortcut, ref, 1e-10),
           "shortcut should be A^T P(H_1 | x) (in row form: P(H_1 | x) @ A), with P(H_1 | x) from the HMM whose "
           "first visible state has prior A pi")
    if agrees is not None:
        truth = bool((ref - posterior_h0(hmm, x)).abs().max() < 1e-12)
        p.need(bool(agrees) == truth, f"for this HMM the shortcut {'does' if truth else 'does not'} equal "
               "P(H_0 | x): it is exact when pi is uniform and A is doubly stochastic",
               withheld="agrees (whether the shortcut equals P(H_0 | x) to 1e-12) is wrong for this HMM: compare "
               "the two to 1e-12 on every row")


@_checker("ex-ch1-uninformative")
def ch1_uninformative(p: _Problems, hmm, num_samples: int = 100, seq_len: int = 8, seed: int = 31) -> None:
    r"""Exercise "Construct an HMM whose text says nothing": ``hmm`` has K = V = 3, ``W`` the identity, and
    :math:`P(H_0\mid x_{1:T}) = \pi` for every ``x``. Checked exactly on every sequence of 1 and 2 tokens (the
    posterior depends on ``x`` only through :math:`x_1` when ``W`` is the identity) and on sampled inputs."""
    from hmmlib import posterior_h0, sample

    if not _is_hmm(p, hmm):
        return
    if not p.need((hmm.num_states, hmm.num_symbols) == (3, 3),
                  f"the HMM should have K=3 states and V=3 symbols; got K={hmm.num_states}, V={hmm.num_symbols}"):
        return
    p.need(_close(hmm.W, torch.eye(3), 1e-12), "the emission matrix W should be the identity (each token "
           "reveals its state); a W that hides the state makes the task trivial")
    pi = _t(hmm.pi)
    for T in (1, 2):
        xs = _all_sequences(3, T)
        prob = torch.stack([_t(hmm.W[xs[i, 0]] @ hmm.A @ hmm.pi) for i in range(len(xs))])
        xs = xs[prob > 1e-12]
        if len(xs):
            post = _t(posterior_h0(hmm, xs))
            err = float((post - pi).abs().max())
            if not p.need(err < 1e-10, f"P(H_0 | x) differs from pi by up to {err:.3f} (e.g. for x = "
                          f"{xs[int((post - pi).abs().max(1).values.argmax())].tolist()}): the next state must not "
                          "depend on the current one (every column of A the same distribution)"):
                return
    xs, _ = sample(hmm, num_samples, seq_len, seed=seed)
    err = float((_t(posterior_h0(hmm, xs)) - pi).abs().max())
    p.need(err < 1e-10, f"on {num_samples} sampled inputs P(H_0 | x) differs from pi by up to {err:.2e}")


# ----------------------------------------------------------------------------- chapter 2
@_checker("ex-ch2-decomposition")
def ch2_decomposition(p: _Problems, hmm, x: Any, position: int, cross_entropy: float, entropy: float, kl: float,
                      atol: float = 1e-8) -> None:
    r"""Exercise "The decomposition, numerically": for the masked position ``position`` of the sequences ``x``
    (``sample(hmm, 2000, 32, seed=3)`` and 5 in the book) and the unigram :math:`q = W s`, the student's
    :math:`L(q)`, Bayes-optimal loss and :math:`\E[\mathrm{KL}(P\,\|\,q)]`, as expectations given the contexts."""
    from hmmlib import entropy as H
    from hmmlib import masked_token_conditionals

    x = torch.as_tensor(x)
    P = _t(masked_token_conditionals(hmm, x)[:, position])
    q = _t(hmm.W @ hmm.stationary()).expand_as(P)
    ref_ce = float(-(P * q.log()).sum(1).mean())
    ref_h = float(_t(H(P)).mean())
    ref_kl = float((torch.special.xlogy(P, P) - P * q.log()).sum(1).mean())
    got = {"cross_entropy": float(cross_entropy), "entropy": float(entropy), "kl": float(kl)}
    p.need(abs(got["cross_entropy"] - (got["entropy"] + got["kl"])) < 1e-10,
           "your numbers do not satisfy L(q) = H + KL to 1e-10")
    for name, ref in (("cross_entropy", ref_ce), ("entropy", ref_h), ("kl", ref_kl)):
        hint = {"cross_entropy": "use -sum_x p_x log q_x given each context, not the sampled token",
                "entropy": "the Bayes-optimal loss is the mean entropy of the exact P(X_t | x_{-t}), in nats",
                "kl": "E[KL(P(.|X_{-t}) || q)] with natural logarithms"}[name]
        p.need(abs(got[name] - ref) < atol, f"{name} = {got[name]:.6f}, expected {ref:.6f}: {hint}",
               withheld=f"{name} = {got[name]:.6f} is not the expected value (tolerance {atol:g}): {hint}")


@_checker("ex-ch2-right-context")
def ch2_right_context(p: _Problems, hmm, x: Any, floor_pos0: float, floor_mid: float, mid: int = 16,
                      atol: float = 1e-8) -> None:
    r"""Exercise "A one-sided model": with ``x`` ``(N, T+1)`` and position 0 masked, ``floor_pos0`` is the mean
    entropy of :math:`P(X_0\mid x_{1:T})` (``masked_conditional(hmm, x[:, 1:])``) and ``floor_mid`` that of
    :math:`P(X_{mid}\mid x_{-mid})`."""
    from hmmlib import entropy as H
    from hmmlib import masked_conditional, masked_token_conditionals

    x = torch.as_tensor(x)
    ref0 = float(_t(H(masked_conditional(hmm, x[:, 1:]))).mean())
    refm = float(_t(H(masked_token_conditionals(hmm, x)[:, mid])).mean())
    hint0 = "the mean entropy of the exact P(X_0 | x_{1:T}), the [MASK] before the input"
    hintm = "mean entropy of masked_token_conditionals at that position"
    p.need(abs(float(floor_pos0) - ref0) < atol, f"floor at position 0 = {float(floor_pos0):.6f}, expected "
           f"{ref0:.6f} ({hint0})", withheld=f"floor at position 0 = {float(floor_pos0):.6f} is not the expected "
           f"value (tolerance {atol:g}; {hint0})")
    p.need(abs(float(floor_mid) - refm) < atol, f"floor at position {mid} = {float(floor_mid):.6f}, expected "
           f"{refm:.6f} ({hintm})", withheld=f"floor at position {mid} = {float(floor_mid):.6f} is not the "
           f"expected value (tolerance {atol:g}; {hintm})")


# ----------------------------------------------------------------------------- chapter 3
@_checker("ex-ch3-min-norm")
def ch3_min_norm(p: _Problems, W: Any, mu: Any, b: Any, b_other: Any = None) -> None:
    r"""Exercise "The closed-form head is the smallest": ``b`` solves :math:`W^\top b = \mu` with the smallest
    norm (:math:`b = (W^+)^\top\mu`); ``b_other`` (optional) is another solution, which must be longer."""
    closed_form_head = _theory().closed_form_head

    W, mu, b = _t(W), _t(mu).reshape(-1), _t(b).reshape(-1)
    ref = closed_form_head(W, mu)
    if not p.need(b.shape == ref.shape, f"b should have V={W.shape[0]} entries; got {b.numel()}"):
        return
    p.need(_close(W.T @ b, mu, 1e-9), "W^T b should equal mu")
    p.need(_close(b, ref, 1e-9), f"b is not the minimum-norm head: |b| = {float(b.norm()):.4f}, "
           f"|(W^+)^T mu| = {float(ref.norm()):.4f}",
           withheld=f"b is not the minimum-norm head (|b| = {float(b.norm()):.4f}): it has a component in the "
           "left null space of W")
    if b_other is not None:
        bo = _t(b_other).reshape(-1)
        p.need(_close(W.T @ bo, mu, 1e-9), "b_other should also satisfy W^T b_other = mu (add a vector n with W^T n = 0)")
        p.need(float(bo.norm()) > float(ref.norm()) and not _close(bo, ref, 1e-9),
               "b_other should differ from b and be longer")


def _conditioning_W(delta: float) -> torch.Tensor:
    return torch.tensor([[0.5 + delta, 0.5 - delta, 0.0], [0.5 - delta, 0.5 + delta, 0.0], [0.0, 0.0, 1.0]],
                        dtype=torch.float64)


@_checker("ex-ch3-conditioning")
def ch3_conditioning(p: _Problems, answers: dict, mu: Any = (1.0, -1.0, 0.2), W_of_delta: Callable | None = None,
                     rtol: float = 1e-6) -> None:
    r"""Exercise "Nearly identical states": ``answers`` maps each :math:`\delta` (0.2, 0.05, 0.01) to
    ``(sigma_min, head_norm)`` — :math:`\sigma_{\min}(W)` and :math:`\|(W^+)^\top\mu\|` for the student's
    :math:`W(\delta)` (``W_of_delta``, default the exercise's example columns)."""
    closed_form_head, nondegeneracy = _theory().closed_form_head, _theory().nondegeneracy

    W_of_delta = W_of_delta or _conditioning_W
    missing = [d for d in (0.2, 0.05, 0.01) if not any(abs(float(k) - d) < 1e-12 for k in answers)]
    p.need(not missing, f"answers should cover delta in (0.2, 0.05, 0.01); missing {missing}")
    for delta, value in sorted(answers.items(), key=lambda kv: -float(kv[0])):
        W = _t(W_of_delta(float(delta)))
        p.need(W.shape == (3, 3) and bool((W >= 0).all()) and _close(W.sum(0), torch.ones(3), 1e-9),
               f"W({delta}) should be a 3x3 column-stochastic matrix")
        smin, norm = (float(v) for v in value)
        ref_s, ref_n = nondegeneracy(W).sigma_min, float(closed_form_head(W, mu).norm())
        p.need(abs(smin - ref_s) <= rtol * max(1.0, ref_s), f"delta={delta}: sigma_min = {smin:.6g}, expected {ref_s:.6g}",
               withheld=f"delta={delta}: sigma_min = {smin:.6g} is not the smallest singular value of W(delta)")
        p.need(abs(norm - ref_n) <= rtol * max(1.0, ref_n),
               f"delta={delta}: |b| = {norm:.6g}, expected {ref_n:.6g} (b = pinv(W)^T mu)",
               withheld=f"delta={delta}: |b| = {norm:.6g} is not the norm of the closed-form head b = pinv(W)^T mu")


@_checker("ex-ch3-rowspace")
def ch3_rowspace(p: _Problems, hmm, mu: Any, accuracy: float | None = None) -> None:
    r"""Exercise "More states than symbols": ``mu`` lies in the row space of ``hmm.W`` (K > V) and takes both
    signs, so both classes occur; ``accuracy`` (optional) is the closed-form head's test accuracy, which must be 1."""
    head_realizes = _theory().head_realizes

    if not _is_hmm(p, hmm):
        return
    mu = _t(mu).reshape(-1)
    p.need(hmm.num_states > hmm.num_symbols, f"use an HMM with more states than symbols (K={hmm.num_states}, "
           f"V={hmm.num_symbols})")
    if not p.need(mu.numel() == hmm.num_states, f"mu should have K={hmm.num_states} entries; got {mu.numel()}"):
        return
    p.need(head_realizes(hmm.W, mu), "mu is not in the row space of W (no b with W^T b = mu); take mu = W^T c")
    p.need(bool((mu > 0).any()) and bool((mu < 0).any()),
           "mu should have positive and negative entries so that both classes occur (shift it by W^T (t 1))")
    if accuracy is not None:
        p.need(float(accuracy) == 1.0, f"the closed-form head should be 100% accurate; got {float(accuracy):.3f}")


# ----------------------------------------------------------------------------- chapter 4
@_checker("ex-ch4-construct")
def ch4_construct(p: _Problems, hmm, mu: Any, u: Any, b: Any, num_test: int = 1000, seq_len: int = 32,
                  seed: int = 0) -> None:
    r"""Exercise "Construct a prompt that beats every head": the 6-state cycle HMM with 3 symbols, the task
    ``mu`` on states {2, 3}, a prompt ``u`` (``(K,)`` or ``(k, K)``) and a head ``b`` with 100% accuracy on
    ``num_test`` test examples (``make_splits(hmm, task_from_mu(mu), (200, 10, num_test), seq_len, seed=seed)``)
    while no head alone realises ``mu``."""
    from hmmlib import make_splits, tasks
    th = _theory()
    task_from_mu = tasks.task_from_mu
    head_realizes, nondegeneracy, prompted_conditional = th.head_realizes, th.nondegeneracy, th.prompted_conditional

    if not _is_hmm(p, hmm):
        return
    K = 6
    if not p.need((hmm.num_states, hmm.num_symbols) == (K, 3),
                  f"the HMM should have K=6 states and V=3 symbols; got K={hmm.num_states}, V={hmm.num_symbols}"):
        return
    A_ref = torch.zeros(K, K, dtype=torch.float64)
    for h in range(K):
        A_ref[(h + 1) % K, h], A_ref[(h + 2) % K, h] = 0.8, 0.2
    p.need(_close(hmm.A, A_ref, 1e-12), "A should be the cycle: h -> h+1 with probability 0.8, h -> h+2 with 0.2 "
           "(column h is the distribution of the next state)")
    p.need(_close(hmm.pi, torch.full((K,), 1 / K, dtype=torch.float64), 1e-12), "pi should be uniform")
    mu = _t(mu).reshape(-1)
    if not p.need(mu.numel() == K, f"mu should have 6 entries; got {mu.numel()}"):
        return
    p.need(bool((mu[[0, 1, 4, 5]] == 0).all()) and float(mu[2]) > 0 > float(mu[3]),
           "mu should be supported on states {2, 3} with mu_2 > 0 > mu_3")
    p.need(nondegeneracy(hmm.W, support=[2, 3]).full_column_rank, "the columns W[:, 2] and W[:, 3] should be independent")
    p.need(not head_realizes(hmm.W, mu), "mu is in the row space of W, so a head alone already realises it; "
           "choose W so that it is not")
    ds = make_splits(hmm, task_from_mu(mu), (200, 10, num_test), seq_len, seed=seed)["test"]
    G_u = _t(prompted_conditional(hmm, u, ds.x))
    acc = float((((G_u @ _t(b).reshape(-1)) >= 0).long() == ds.y).double().mean())
    p.need(acc == 1.0, f"prompt u and head b are {acc:.1%} accurate on {num_test} test examples; they should be "
           f"100% (majority rate {ds.majority_rate:.1%}): check that v = R u is zero off {{2, 3}} and that "
           "v * (W^T b) = mu there")


@_checker("ex-ch4-contains")
def ch4_contains(p: _Problems, hmm, u: Any, x: Any, G_u: Any) -> None:
    r"""Exercise "Prompt tuning contains head tuning": ``u`` ``(k, K)`` has constant rows and ``G_u`` is the
    prompted conditional on ``x``, which must equal :math:`G` computed with the prior :math:`A^k\pi` of
    :math:`H_0` behind ``k`` tokens."""
    from hmmlib import HMM, masked_conditional
    prompt_prior_h0, prompted_conditional = _theory().prompt_prior_h0, _theory().prompted_conditional

    u = _t(u)
    u2 = u.reshape(-1, u.shape[-1])
    p.need(bool((u2 == u2[:, :1]).all()), "every fake token u should be a constant vector (c 1)")
    ref = _t(prompted_conditional(hmm, u, x))
    p.need(_close(G_u, ref, 1e-10), "G_u differs from theory.prompted_conditional(hmm, u, x)")
    plain = _t(masked_conditional(HMM(prompt_prior_h0(hmm, u2.shape[0]), hmm.A, hmm.W), x))
    p.need(_close(ref, plain, 1e-10) or not bool((u2 == u2[:, :1]).all()),
           "(the constant prompt should reproduce G with the prior A^k pi)")


# ----------------------------------------------------------------------------- chapter 5
@_checker("ex-ch5-degenerate")
def ch5_degenerate(p: _Problems, loc, degenerate, mu: Any = (1.0, -1.0, 0.0), syntax: int = 0,
                   accuracy: float | None = None) -> None:
    r"""Exercise "When the values are indistinguishable": ``degenerate`` is ``loc`` with values 0 and 1 emitting
    the same column in syntax state ``syntax`` (every other parameter unchanged); then :math:`W_{s^\star}` has
    rank ``num_values - 1`` and no :math:`b` has :math:`b^\top W_{s^\star} = \mu^\top`. ``accuracy`` (optional):
    the theorem's head on examples whose memory is 0 or 1, which must be below 75%."""
    from hmmlib import MemoryHMM

    if not p.need(isinstance(degenerate, MemoryHMM), f"degenerate should be a hmmlib.MemoryHMM; got "
                  f"{type(degenerate).__name__}"):
        return
    for name in ("memory_prior", "pi", "A"):
        p.need(_close(getattr(degenerate, name), getattr(loc, name), 1e-12), f"{name} should be loc's")
    if not p.need(tuple(degenerate.W.shape) == tuple(loc.W.shape), "W should have loc's shape"):
        return
    S = loc.num_syntax_states
    c0, c1 = 0 * S + syntax, 1 * S + syntax
    W, W0 = _t(degenerate.W), _t(loc.W)
    others = [j for j in range(W.shape[1]) if j not in (c0, c1)]
    p.need(_close(W[:, others], W0[:, others], 1e-12), "only the columns of values 0 and 1 in syntax state s* "
           "may change (keep the other syntax states as they are)")
    p.need(_close(W[:, c0], W[:, c1], 1e-12), f"values 0 and 1 should emit the same column in syntax state "
           f"{syntax} (columns {c0} and {c1} of W)")
    p.need(_close(W[:, c0], W0[:, c0], 1e-12) or _close(W[:, c1], W0[:, c1], 1e-12),
           "the shared column should be loc's column of value 0 or of value 1")
    W_s = _t(degenerate.emissions_of_syntax_state(syntax))
    rank = int(torch.linalg.matrix_rank(W_s))
    p.need(rank == loc.num_values - 1, f"W_s* should lose rank ({loc.num_values - 1}); its rank is {rank}")
    mu = _t(mu).reshape(-1)
    b = torch.linalg.lstsq(W_s.T, mu[:, None]).solution[:, 0]
    p.need(float((b @ W_s - mu).abs().max()) > 0.5, "(some b satisfies b^T W_s* = mu^T: the values are still "
           "distinguishable)")
    if accuracy is not None:
        p.need(float(accuracy) < 0.75, f"the theorem's head should be no better than a coin flip when M_0 is 0 or "
               f"1; you report {float(accuracy):.1%}")


@_checker("ex-ch5-reads")
def ch5_reads(p: _Problems, answers: dict, mu: Any = (1.0, -1.2, 0.5), lengths: tuple[int, ...] = (6, 12, 24, 48, 96),
              num_seqs: int = 200, seed: int = 1, share: float = 0.9) -> None:
    r"""Exercise "How many reads does the bound need?": ``answers`` maps each emission ``peak`` (0.5 and 0.4,
    0.7 optional) of ``locatable_memory_hmm(peak=peak)`` to the smallest ``T`` in ``lengths`` at which the margin
    exceeds the bound for at least ``share`` of ``sample_memory(hmm, num_seqs, T, seed=seed)`` (``None`` if
    none does); ``mu`` is the chapter's task (cell 0, syntax state 0, scale 20)."""
    from hmmlib import locatable_memory_hmm, sample_memory
    check_theorem = memory_check_theorem()

    for peak in (0.5, 0.4):
        p.need(any(abs(float(k) - peak) < 1e-12 for k in answers), f"answers should include peak {peak}")
    for peak, T in answers.items():
        noisy = locatable_memory_hmm(peak=float(peak))
        ref = None
        for L in lengths:
            xs, *_ = sample_memory(noisy, num_seqs, L, seed=seed)
            c = check_theorem(noisy, mu, xs, cell=0, syntax=0, scale=20.0)
            if float((c.margin > c.bound).double().mean()) >= share:
                ref = L
                break
        p.need(T == ref, f"peak {peak}: you answer T = {T}, expected {ref}"
               + (" (none of the lengths suffices)" if ref is None else ""),
               withheld=f"peak {peak}: T = {T} is not the smallest of {lengths} at which the margin exceeds the "
               f"bound on at least {share:.0%} of the inputs (None if none does)")


# ----------------------------------------------------------------------------- chapter 7
def _prefix_counts(n: int, L: int, d: int, k: int) -> tuple[int, int]:
    """(trained, stored) numbers of prefix-tuning with the MLP reparametrisation: the embedding ``P'`` of
    ``n x d``, an MLP ``d -> k -> 2 L d``; stored: ``n`` keys and values of width ``d`` at each of ``L`` layers."""
    return n * d + (d * k + k) + (k * 2 * L * d + 2 * L * d), n * 2 * L * d


@_checker("ex-ch7-count")
def ch7_count(p: _Problems, trained: Any, stored: Any, n: int = 5, L: int = 24, d: int = 1024, k: int = 512) -> None:
    r"""Exercise "The paper's parameter count": ``trained`` is the number of trained parameters of prefix-tuning
    with the MLP reparametrisation (``P'`` of ``n x d``, an MLP :math:`d	o k	o 2Ld` with biases) and ``stored``
    the number kept after training (``n`` keys and values of width ``d`` at each of ``L`` layers), for a prefix
    of length ``n`` (default GPT-2-medium: L = 24, d = 1024, n = 5, k = 512)."""
    ref_t, ref_s = _prefix_counts(int(n), int(L), int(d), int(k))
    for name, got, ref, hint, vague in (
            ("trained", trained, ref_t, "n d (the embedding P') + d k + k (first layer) + k 2Ld + 2Ld (second layer)",
             "count the embedding P' and the weights and biases of both layers of the MLP"),
            ("stored", stored, ref_s, "n positions x 2 (key and value) x L layers x d",
             "after training only the prefix's keys and values at every layer are kept")):
        try:
            ok = float(got) == float(ref)
        except (TypeError, ValueError):
            ok = False
        p.need(ok, f"{name} = {got} for (n, L, d, k) = {(n, L, d, k)}, expected {ref}: {hint}",
               withheld=f"{name} = {got} is not the right count for (n, L, d, k) = {(n, L, d, k)}: {vague}")
