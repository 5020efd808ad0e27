r"""Chapter 7's verdicts from the records of :mod:`hmmlib.experiments.prefix_jobs`.

Every claim is a set of one-sided paired tests over seeds: for each seed :math:`s` a difference
:math:`d_s` (KL nats per output token, larger = the claim's direction), the mean, its 95% t-interval at
:math:`n-1` degrees of freedom, and the one-sided p-value of :math:`\bar d > 0`. An equivalence ("no
effect", "about equal") is two one-sided tests (TOST) against a margin fixed before any record existed:
:data:`EQUIV_FRACTION` of the frozen model's test KL on that task. All p-values of the chapter form one
family, corrected by Holm's step-down method at :data:`ALPHA`. A claim **transfers** when every one of its
tests rejects, **partly** when some do, and **does not transfer** when none does; with fewer than
:data:`MIN_SEEDS` seeds the row says **too few seeds**.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import stats

__all__ = ["PAPER", "summary", "table", "ALPHA", "MIN_SEEDS", "EQUIV_FRACTION", "Test", "Claim", "paired_test", "equivalence_test", "holm",
           "by_seed", "claims", "verdict_of"]

ALPHA = 0.05
MIN_SEEDS = 5
#: Equivalence margin: this fraction of the frozen model's test KL (stated before the grid was run).
EQUIV_FRACTION = 0.05


@dataclass
class Test:
    """One test of a claim: ``name``, per-seed differences ``d``, ``kind`` (``greater`` or ``equivalent``)
    and, for an equivalence, its ``margin``; filled by :func:`paired_test`/:func:`equivalence_test`."""

    name: str
    d: np.ndarray
    kind: str = "greater"
    margin: float | None = None
    mean: float = math.nan
    low: float = math.nan
    high: float = math.nan
    p: float = math.nan
    p_holm: float = math.nan
    reject: bool = False

    @property
    def n(self) -> int:
        return int(self.d.size)


@dataclass
class Claim:
    """A claim (``key`` R1..R11), its ``paper`` number, its tests and (after :func:`claims`) its verdict."""

    key: str
    text: str
    paper: str
    tests: list[Test] = field(default_factory=list)
    verdict: str = ""

    @property
    def n(self) -> int:
        return min((t.n for t in self.tests), default=0)


def _ci(d: np.ndarray) -> tuple[float, float, float]:
    n = d.size
    m = float(d.mean())
    if n < 2:
        return m, math.nan, math.nan
    hw = float(stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n))
    return m, m - hw, m + hw


def _p_greater(d: np.ndarray, shift: float = 0.0) -> float:
    """One-sided p of mean(d) > shift (t at n-1 df); 1 when undefined (fewer than 2 seeds or no spread)."""
    n = d.size
    if n < 2:
        return 1.0
    sd = d.std(ddof=1)
    if sd == 0:
        return 0.0 if d.mean() > shift else 1.0
    return float(stats.t.sf((d.mean() - shift) / (sd / math.sqrt(n)), n - 1))


def paired_test(t: Test) -> Test:
    t.mean, t.low, t.high = _ci(t.d)
    t.p = _p_greater(t.d)
    return t


def equivalence_test(t: Test) -> Test:
    """TOST: both mean(d) > -margin and mean(d) < margin; p is the larger of the two one-sided p-values."""
    t.mean, t.low, t.high = _ci(t.d)
    t.p = max(_p_greater(t.d, -t.margin), _p_greater(-t.d, -t.margin))
    return t


def holm(p: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (monotone, capped at 1)."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adj, run = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        run = max(run, min(1.0, (m - rank) * p[i]))
        adj[i] = run
    return adj


def verdict_of(rejects: list[bool], n: int) -> str:
    if n < MIN_SEEDS:
        return "too few seeds"
    if all(rejects):
        return "transfers"
    return "partly" if any(rejects) else "does not transfer"


def by_seed(records: list[dict], method: str, value: Callable[[dict], float] | str = "test_kl") -> dict[int, float]:
    """``{seed: value}`` of the records of ``method`` (``value``: a metric name or a function of a record)."""
    f = (lambda r: r["metrics"][value]) if isinstance(value, str) else value
    return {r["seed"]: float(f(r)) for r in records if r["method"] == method}


def _diff(a: dict[int, float], b: dict[int, float] | float) -> np.ndarray:
    if isinstance(b, dict):
        seeds = sorted(set(a) & set(b))
        return np.array([a[s] - b[s] for s in seeds])
    return np.array([a[s] - b for s in sorted(a)])


def _test(name: str, a, b) -> Test:
    return Test(name, _diff(a, b))


def _lengths(recs: list[dict], prefix: str) -> list[int]:
    return sorted({int(r["method"].split("-n")[1]) for r in recs if r["method"].startswith(prefix + "-n")})


def _test_set(name: str) -> Callable[[dict], float]:
    return lambda r: r["metrics"]["extra"]["tests"][name]["kl"]


def claims(recs: dict[str, list[dict]], paper: dict[str, str] | None = None) -> list[Claim]:
    """Every claim with its tests, Holm-corrected over the whole family, and its verdict. ``recs``:
    ``{figure: records}`` for ``ch7-r1`` .. ``ch7-r11`` (a missing figure drops its claim)."""
    P = paper or {}
    out: list[Claim] = []
    frozen = {f: next((r["metrics"]["test_kl"] for r in recs.get(f, []) if r["method"] == "frozen"), None)
              for f in recs}
    if "ch7-r1" in recs:
        r = recs["ch7-r1"]
        L = _lengths(r, "prompt")
        n10 = min(L, key=lambda n: abs(n - 10))
        c = Claim("R1", f"prefix beats the embedding-only prompt at n={n10}; the prompt stops gaining from "
                        f"{L[-2]} to {L[-1]}", P.get("R1", ""))
        c.tests.append(paired_test(_test(f"prompt - prefix, n={n10}", by_seed(r, f"prompt-n{n10:02d}"),
                                         by_seed(r, f"prefix-n{n10:02d}"))))
        c.tests.append(equivalence_test(Test(f"prompt n={L[-1]} - n={L[-2]} within margin",
                                             _diff(by_seed(r, f"prompt-n{L[-1]:02d}"), by_seed(r, f"prompt-n{L[-2]:02d}")),
                                             "equivalent", EQUIV_FRACTION * frozen["ch7-r1"])))
        out.append(c)
        c = Claim("R1b", "a 1-position direct prefix (fewer stored numbers) beats a 5-position prompt",
                  "(not in the paper: separates the layer-wise access from the parameter count)")
        c.tests.append(paired_test(_test("prompt n=5 - direct prefix n=1", by_seed(r, "prompt-n05"),
                                         by_seed(r, "direct-n01"))))
        out.append(c)
    if "ch7-r2" in recs:
        r = recs["ch7-r2"]
        disc = next(x["metrics"]["test_kl"] for x in r if x["method"] == "discrete")
        c = Claim("R2", "discrete < embedding-only < prefix (length 2)", P.get("R2", ""))
        c.tests.append(paired_test(Test("discrete - prompt", -_diff(by_seed(r, "prompt-n02"), disc))))
        c.tests.append(paired_test(_test("prompt - prefix", by_seed(r, "prompt-n02"), by_seed(r, "prefix-n02"))))
        out.append(c)
    if "ch7-r3" in recs:
        r = recs["ch7-r3"]
        sens = {p: {s: abs(by_seed(r, f"{p}-start0")[s] - by_seed(r, f"{p}-start1")[s])
                    for s in by_seed(r, f"{p}-start0")} for p in ("mlp", "direct")}
        spikes = lambda rec: rec["metrics"]["extra"]["chosen"]["spikes"]  # noqa: E731
        c = Claim("R3", "direct optimisation is more sensitive to the start, spikier and worse than the MLP",
                  P.get("R3", ""))
        c.tests.append(paired_test(_test("start sensitivity, direct - MLP", sens["direct"], sens["mlp"])))
        c.tests.append(paired_test(_test("gradient spikes, direct - MLP", by_seed(r, "direct-start0", spikes),
                                         by_seed(r, "mlp-start0", spikes))))
        c.tests.append(paired_test(_test("test KL, direct - MLP", by_seed(r, "direct-start0"), by_seed(r, "mlp-start0"))))
        out.append(c)
    if "ch7-r4" in recs:
        r = recs["ch7-r4"]
        c = Claim("R4", "in low data real text beats random, relevant beats irrelevant; no effect with full data",
                  P.get("R4", ""))
        c.tests.append(paired_test(_test("low: random - relevant", by_seed(r, "low-random"), by_seed(r, "low-relevant"))))
        c.tests.append(paired_test(_test("low: irrelevant - relevant", by_seed(r, "low-irrelevant"),
                                         by_seed(r, "low-relevant"))))
        c.tests.append(equivalence_test(Test("full: relevant - random within margin",
                                             _diff(by_seed(r, "full-relevant"), by_seed(r, "full-random")),
                                             "equivalent", EQUIV_FRACTION * frozen["ch7-r4"])))
        out.append(c)
    if "ch7-r5" in recs:
        r = recs["ch7-r5"]
        Ns = sorted({int(x["method"].split("-N")[1]) for x in r})
        lo, hi = Ns[0], Ns[-1]
        gap = {N: {s: v - by_seed(r, f"prefixinit-N{N:05d}")[s] for s, v in by_seed(r, f"finetune-N{N:05d}").items()}
               for N in (lo, hi)}
        c = Claim("R5", f"the prefix (text initialisation) beats fine-tuning with {lo} examples, less so with {hi}",
                  P.get("R5", ""))
        c.tests.append(paired_test(Test(f"fine-tuning - prefix, N={lo}", _diff(gap[lo], 0.0))))
        c.tests.append(paired_test(_test(f"gap(N={lo}) - gap(N={hi})", gap[lo], gap[hi])))
        out.append(c)
    if "ch7-r6" in recs:
        r = recs["ch7-r6"]
        L = _lengths(r, "prefix")
        best = min(L, key=lambda n: np.mean(list(by_seed(r, f"prefix-n{n:02d}", "val_kl").values())))
        c = Claim("R6", f"the length curve rises then dips (best on validation: n={best})", P.get("R6", ""))
        c.tests.append(paired_test(_test(f"n={L[0]} - n={best}", by_seed(r, f"prefix-n{L[0]:02d}"),
                                         by_seed(r, f"prefix-n{best:02d}"))))
        c.tests.append(paired_test(_test(f"n={L[-1]} - n={best}", by_seed(r, f"prefix-n{L[-1]:02d}"),
                                         by_seed(r, f"prefix-n{best:02d}"))))
        out.append(c)
    if "ch7-r7" in recs and "ch7-r1" in recs:
        r, r1 = recs["ch7-r7"], recs["ch7-r1"]
        c = Claim("R7", "the prefix beats the infix at every length", P.get("R7", ""))
        for n in _lengths(r, "infix"):
            c.tests.append(paired_test(_test(f"infix - prefix, n={n}", by_seed(r, f"infix-n{n:02d}"),
                                             by_seed(r1, f"prefix-n{n:02d}"))))
        out.append(c)
    if "ch7-r8" in recs:
        r = recs["ch7-r8"]
        seen, unseen = _test_set("seen_test"), _test_set("unseen_test")
        deg = {m: {s: by_seed(r, m, unseen)[s] - v for s, v in by_seed(r, m, seen).items()} for m in ("prefix", "finetune")}
        c = Claim("R8", "on unseen members the prefix beats fine-tuning, and degrades less", P.get("R8", ""))
        c.tests.append(paired_test(_test("unseen: fine-tuning - prefix", by_seed(r, "finetune", unseen),
                                         by_seed(r, "prefix", unseen))))
        c.tests.append(paired_test(_test("degradation, fine-tuning - prefix", deg["finetune"], deg["prefix"])))
        out.append(c)
    if "ch7-r9" in recs:
        r = recs["ch7-r9"]
        W = sorted({int(x["method"].split("-d")[1]) for x in r})
        gap = {w: {s: v - by_seed(r, f"finetune-d{w:03d}")[s] for s, v in by_seed(r, f"prompt-d{w:03d}").items()}
               for w in W}
        c = Claim("R9", "the prompt-to-fine-tuning gap shrinks as the model widens", P.get("R9", ""))
        for a, b in zip(W, W[1:]):
            c.tests.append(paired_test(_test(f"gap(d={a}) - gap(d={b})", gap[a], gap[b])))
        out.append(c)
    if "ch7-r10" in recs:
        r = recs["ch7-r10"]
        top = next(x["method"] for x in r if x["method"].startswith("top"))
        bot = next(x["method"] for x in r if x["method"].startswith("bottom"))
        c = Claim("R10", "the top layers ~ all layers, and beat the bottom layers", P.get("R10", ""))
        c.tests.append(paired_test(_test(f"{bot} - {top}", by_seed(r, bot), by_seed(r, top))))
        c.tests.append(equivalence_test(Test(f"{top} - all within margin", _diff(by_seed(r, top), by_seed(r, "all")),
                                             "equivalent", EQUIV_FRACTION * frozen["ch7-r10"])))
        out.append(c)
    if "ch7-r11" in recs:
        r = recs["ch7-r11"]
        c = Claim("R11", "prompt initialisation: target text < sampled vocabulary < uniform", P.get("R11", ""))
        c.tests.append(paired_test(_test("uniform - vocab", by_seed(r, "uniform"), by_seed(r, "vocab"))))
        c.tests.append(paired_test(_test("vocab - text", by_seed(r, "vocab"), by_seed(r, "text"))))
        out.append(c)
    tests = [t for c in out for t in c.tests]
    for t, p in zip(tests, holm([t.p for t in tests])):
        t.p_holm, t.reject = p, p < ALPHA
    for c in out:
        c.verdict = verdict_of([t.reject for t in c.tests], c.n)
    return out


#: The papers' numbers beside each claim (Li & Liang 2021, ACL version; Lester et al. 2021; Liu et al. 2022).
PAPER: dict[str, str] = {
    "R1": "Li & Liang Table 5 (E2E BLEU): prefix 70.3; embedding-only 48.1 (1), 62.2 (10), 61.9 (20)",
    "R1b": "",
    "R2": "Li & Liang §4.2/§7.2: discrete prompt < embedding-only < prefix (no number)",
    "R3": "Li & Liang §4.3 and fn. 3: direct P 'unstable', slightly worse, 'very sensitive to initialisation'",
    "R4": "Li & Liang §7.4, Fig. 5 (100 E2E examples): real words > random, relevant slightly > irrelevant; "
          "no effect with full data",
    "R5": "Li & Liang §6.3, Fig. 3: prefix +2.9 BLEU over fine-tuning in low data (text init), gap narrows",
    "R6": "Li & Liang Fig. 4: best length 10 (table-to-text), 200 (summarisation); longer prefixes dip",
    "R7": "Li & Liang Table 5 (E2E BLEU): prefix 70.3; infix 67.9 (1), 67.2 (10), 66.7 (20)",
    "R8": "Li & Liang Table 2 (WebNLG BLEU): unseen prefix 45.3 vs fine-tuning 26.7; seen 62.9 vs 64.7",
    "R9": "Lester et al. Fig. 1 (SuperGLUE): the prompt-to-model-tuning gap closes with size, matched at 11B",
    "R10": "Liu et al. (P-Tuning v2) depth ablation: prefixes on the top layers ~ all layers > bottom layers",
    "R11": "Lester et al. Fig. 3b: class-label (text) init > sampled vocabulary > random uniform at small sizes",
}


def summary(records: list[dict], method: str, value: Callable[[dict], float] | str = "test_kl") -> tuple[float, float, int]:
    """Mean, 95% t half-width (nan below 2 seeds) and number of seeds of ``value`` for ``method``."""
    v = np.array(list(by_seed(records, method, value).values()))
    m, lo, hi = _ci(v)
    return m, (hi - m) if v.size > 1 else math.nan, int(v.size)


def table(cl: list[Claim], preset: str) -> str:
    """The closing table (markdown): each test's mean difference, 95% t-interval, seeds, one-sided and
    Holm-adjusted p, and each claim's verdict, paper number and the preset of its records."""
    rows = ["| claim | paper | test (difference in KL nats/token) | seeds | mean [95% t-interval] | p | Holm p | verdict |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c in cl:
        for i, t in enumerate(c.tests):
            kind = " (TOST, margin ±%.4f)" % t.margin if t.kind == "equivalent" else ""
            rows.append(f"| {c.key if i == 0 else ''} | {c.paper if i == 0 else ''} | {t.name}{kind} | {t.n} | "
                        f"{t.mean:+.4f} [{t.low:+.4f}, {t.high:+.4f}] | {t.p:.3g} | {t.p_holm:.3g} | "
                        f"{(c.verdict + ' (' + preset + ')') if i == 0 else ''} |")
    return "\n".join(rows)
