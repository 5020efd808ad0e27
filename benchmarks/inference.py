"""Inference benchmark: hmmlib vs hmmlearn (and optionally dynamax), in one process.

Run from the repository root::

    .venv/bin/python benchmarks/inference.py            # full run (a few minutes)
    .venv/bin/python benchmarks/inference.py --quick    # CI smoke test (tiny sizes, < 30 s)
    .venv/bin/python benchmarks/inference.py --dynamax  # also time dynamax's hmm_smoother, if it imports

What is measured (see benchmarks/README.md for the numbers on the project machine):

* posterior marginals: ``hmmlib.posterior_marginals`` in float32 and float64 against
  hmmlearn's fastest ``predict_proba`` (``CategoricalHMM(implementation="scaling")`` built
  with ``hmm.to_hmmlearn()``), on the same HMMs and the same sequences, for every
  K x T x V in the grid; the largest absolute difference of the posteriors;
* the machine's float32/float64 GEMM throughput (``torch.mm`` 2048^3, best of 3) and the
  fraction of the float32 peak that hmmlib reaches at K = 200 (flop model 4 B T K^2);
* sampling throughput (tokens/s) of ``hmmlib.sample`` vs hmmlearn's ``sample``;
* Viterbi (seq/s) vs hmmlearn ``decode(algorithm="viterbi")``, checking the log-probabilities.

Timing protocol: ``torch.set_num_threads(2)`` (``--threads``), one warm-up call, then the
best of 3. The project machine is shared and its speed drifts, so a timed call during which
other processes used the CPU (read from /proc/stat) does not count towards the 3 (at most 8
calls), and the float32 GEMM peak is measured several times during the run (next to every
K = 200 configuration) and the largest value is used for %peak. hmmlearn loops over
sequences in Python, so its cost is linear in the number of sequences: it is timed on as many
sequences as fit in about a second per run (best of 3) and extrapolated per sequence; the
output says how many sequences each hmmlearn figure is based on.

The exit status is 1 if a correctness check fails (float64 posteriors further than 1e-10
from hmmlearn, Viterbi log-probabilities disagreeing); performance targets are reported
in the final table only (``--strict`` makes a failed target an exit status of 2).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

import hmmlib

F64_TOL = 1e-10


# --------------------------------------------------------------------------- helpers
def load_average() -> str:
    """The 1-minute load average (the machine may be shared: a load well above the thread count
    means other work competed with the benchmark)."""
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "n/a"


def _busy_ticks() -> int | None:
    """CPU ticks spent by everything on the machine (None where /proc/stat is unavailable)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]  # user nice system irq softirq steal


def _own_ticks() -> float:
    t = os.times()
    return (t.user + t.system) * os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.0


DISTURBED = {"samples": 0, "disturbed": 0}


def timed(fn) -> tuple[float, bool]:
    """Wall time of one call of ``fn`` and whether other processes used CPU meanwhile
    (the machine may be shared; such a sample is 'disturbed')."""
    b0, m0 = _busy_ticks(), _own_ticks()
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    if b0 is None:
        return dt, False
    other = (_busy_ticks() - b0) - (_own_ticks() - m0)
    hz = os.sysconf("SC_CLK_TCK")
    disturbed = other > 2 + 0.05 * dt * hz * (os.cpu_count() or 1)
    DISTURBED["samples"] += 1
    DISTURBED["disturbed"] += disturbed
    return dt, disturbed


def best_of(fn, repeats: int = 3, warmup: int = 1, max_tries: int = 8, max_seconds: float = 20.0) -> float:
    """Best wall time of ``repeats`` undisturbed calls of ``fn`` after ``warmup`` untimed calls.

    A call during which other processes used the CPU does not count towards ``repeats``
    (it still counts for the minimum); at most ``max_tries`` calls or ``max_seconds``.
    """
    for _ in range(warmup):
        fn()
    best, clean, tries, spent = float("inf"), 0, 0, 0.0
    while clean < repeats and tries < max_tries and (tries < repeats or spent < max_seconds):
        dt, disturbed = timed(fn)
        best = min(best, dt)
        clean += not disturbed
        tries += 1
        spent += dt
    return best


def linear_extrapolation(run_n, per_run_budget: float, n_max: int) -> tuple[float, int]:
    """Per-item time of a callable ``run_n(n)`` whose cost is linear in ``n``.

    After a warm-up call on one item, probes on 1, 2, 4, ... items (until a probe takes a
    tenth of the budget) estimate the per-item cost; then ``n`` is chosen so that one run
    takes about ``per_run_budget`` seconds (at most ``n_max``), and the best of 3 runs on
    ``n`` items gives the per-item time. Returns ``(seconds per item, n)``.
    """
    run_n(1)
    n = 1
    while True:
        t0 = time.perf_counter()
        run_n(n)
        dt = time.perf_counter() - t0
        if dt >= 0.1 * per_run_budget or n >= n_max:
            break
        n = min(2 * n, n_max)
    n = int(max(1, min(n_max, per_run_budget * n / max(dt, 1e-9))))
    return best_of(lambda: run_n(n), repeats=3, warmup=0) / n, n


PEAKS: dict[torch.dtype, list[float]] = {}


def matmul_peak(dtype: torch.dtype, n: int) -> float:
    """GEMM throughput (flop/s) of ``torch.mm`` on n x n matrices, best of 3; every measurement
    is also recorded in ``PEAKS`` (the run reports the largest one seen)."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    c = torch.empty(n, n, dtype=dtype)
    t = best_of(lambda: torch.mm(a, b, out=c))
    PEAKS.setdefault(dtype, []).append(2 * n**3 / t)
    return 2 * n**3 / t


def fmt(x: float, digits: int = 0) -> str:
    if x != x:
        return "-"
    if abs(x) >= 100 or digits == 0:
        return f"{x:,.0f}"
    return f"{x:,.{digits}f}"


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.rjust(w) for h, w in zip(headers, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    print()


def hmmlearn_model(hmm: hmmlib.HMM):
    model = hmm.to_hmmlearn()
    model.implementation = "scaling"
    return model


def hmmlearn_inputs(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    B, T = x.shape
    return x.reshape(-1, 1).numpy(), np.full(B, T)


# --------------------------------------------------------------------------- posterior marginals
@dataclass
class PostRow:
    K: int
    V: int
    T: int
    B: int
    f32: float  # seq/s
    f64: float
    hl: float
    hl_n: int
    diff64: float
    diff32: float
    dyn: float = float("nan")
    dyn_diff: float = float("nan")


def dynamax_smoother(hmm: hmmlib.HMM, x: torch.Tensor):
    """dynamax's ``hmm_smoother`` (float32, jit + vmap over sequences) on the same HMM and tokens.

    Returns ``(run, result)``: ``run()`` computes the smoothed marginals and waits for them
    (what is timed; dynamax also computes the summed transition posteriors here: its
    ``compute_trans_probs`` flag is a traced argument and cannot be switched off under jit);
    ``result()`` returns them as a float64 numpy array (B, T, K).
    """
    import jax
    import jax.numpy as jnp
    from dynamax.hidden_markov_model import hmm_smoother

    pi = jnp.asarray(hmm.pi.double().numpy(), dtype=jnp.float32)
    A_row = jnp.asarray(hmm.A.T.double().numpy(), dtype=jnp.float32)  # dynamax: row-stochastic
    logW = jnp.asarray(np.log(hmm.W.T.double().numpy()), dtype=jnp.float32)  # (K, V)
    xs = jnp.asarray(x.numpy())

    @jax.jit
    def smooth(xs):
        def one(seq):
            return hmm_smoother(pi, A_row, logW[:, seq].T).smoothed_probs

        return jax.vmap(one)(xs)

    out = {}

    def run():
        out["p"] = smooth(xs).block_until_ready()

    return run, lambda: np.asarray(out["p"], dtype=np.float64)


def bench_posteriors(Ks, Ts, Vs, B, hl_budget, use_dynamax, mm_n) -> list[PostRow]:
    rows = []
    for K in Ks:
        for V in Vs:
            for T in Ts:
                if K == max(Ks):  # the GEMM peak drifts with the machine's load: sample it next to these runs
                    matmul_peak(torch.float32, mm_n)
                h64 = hmmlib.dirichlet_hmm(
                    K, V, transition_concentration=0.5, emission_concentration=0.5, seed=7 * K + V + T
                )
                h32 = h64.to(dtype=torch.float32)
                x, _ = hmmlib.sample(h64, B, T, seed=K + V + T)
                t64 = best_of(lambda: hmmlib.posterior_marginals(h64, x))
                t32 = best_of(lambda: hmmlib.posterior_marginals(h32, x))
                p64 = hmmlib.posterior_marginals(h64, x)
                p32 = hmmlib.posterior_marginals(h32, x)

                model = hmmlearn_model(h64)
                X, lengths = hmmlearn_inputs(x)
                out = {}

                def run_hl(n):
                    out["p"] = model.predict_proba(X[: n * T], lengths[:n])

                per_seq, n = linear_extrapolation(run_hl, hl_budget, B)
                ref = torch.from_numpy(out["p"]).reshape(n, T, K)
                d64 = float((p64[:n] - ref).abs().max())
                d32 = float((p32[:n].double() - ref).abs().max())
                row = PostRow(K, V, T, B, B / t32, B / t64, 1 / per_seq, n, d64, d32)
                if use_dynamax:
                    run_dyn, dyn_result = dynamax_smoother(h64, x)
                    row.dyn = B / best_of(run_dyn)  # the warm-up call includes the jit compilation
                    row.dyn_diff = float(np.abs(dyn_result()[:n] - ref.numpy()).max())
                rows.append(row)
                print(
                    f"  K={K:4d} V={V:5d} T={T:4d}: hmmlib f32 {B / t32:10,.0f}  f64 {B / t64:10,.0f}  "
                    f"hmmlearn {1 / per_seq:8,.0f} seq/s (on {n} seqs)  max|diff| f64 {d64:.1e} f32 {d32:.1e}",
                    flush=True,
                )
    return rows


# --------------------------------------------------------------------------- sampling
@dataclass
class SampleRow:
    name: str
    N: int
    L: int
    hmmlib_tps: float
    hl_tps: float
    hl_n: int


def bench_sampling(specs, N, L, hl_budget) -> list[SampleRow]:
    rows = []
    for name, hmm in specs:
        t = best_of(lambda: hmmlib.sample(hmm, N, L, seed=0))
        model = hmm.to_hmmlearn()

        def run_hl(n):
            for i in range(n):
                model.sample(L, random_state=i)

        per_seq, n = linear_extrapolation(run_hl, hl_budget, N)
        rows.append(SampleRow(name, N, L, N * L / t, L / per_seq, n))
        print(
            f"  {name}: hmmlib {N * L / t / 1e6:7.2f}M tokens/s ({N} x {L})  "
            f"hmmlearn {L / per_seq / 1e6:7.3f}M tokens/s (on {n} seqs of {L})",
            flush=True,
        )
    return rows


# --------------------------------------------------------------------------- Viterbi
@dataclass
class ViterbiRow:
    K: int
    V: int
    T: int
    B: int
    f64: float
    f32: float
    hl: float
    hl_n: int
    lp_diff: float  # max |log p(hmmlib f64) - log p(hmmlearn)| per sequence, on the checked sequences
    lp_diff32: float
    path_agree: float  # fraction of checked sequences with identical paths (f64)


def bench_viterbi(Ks, Ts, V, B, hl_budget, n_check) -> list[ViterbiRow]:
    rows = []
    for K in Ks:
        for T in Ts:
            h64 = hmmlib.dirichlet_hmm(
                K, V, transition_concentration=0.5, emission_concentration=0.5, seed=7 * K + V + T
            )
            h32 = h64.to(dtype=torch.float32)
            x, _ = hmmlib.sample(h64, B, T, seed=K + V + T)
            t64 = best_of(lambda: hmmlib.viterbi(h64, x))
            t32 = best_of(lambda: hmmlib.viterbi(h32, x))
            paths, lp = hmmlib.viterbi(h64, x)
            _, lp32 = hmmlib.viterbi(h32, x)
            model = h64.to_hmmlearn()
            X, lengths = hmmlearn_inputs(x)
            per_seq, n = linear_extrapolation(
                lambda n: model.decode(X[: n * T], lengths[:n], algorithm="viterbi"), hl_budget, B
            )
            # per-sequence check on the first n_check sequences (one decode call each)
            m = min(n_check, B)
            ref_lp = np.empty(m)
            agree = 0
            for b in range(m):
                ref_lp[b], ref_path = model.decode(x[b].reshape(-1, 1).numpy(), algorithm="viterbi")
                agree += int(np.array_equal(ref_path, paths[b].numpy()))
            d = float(np.abs(lp[:m].numpy() - ref_lp).max())
            d32 = float(np.abs(lp32[:m].double().numpy() - ref_lp).max())
            rows.append(ViterbiRow(K, V, T, B, B / t64, B / t32, 1 / per_seq, n, d, d32, agree / m))
            print(
                f"  K={K:4d} V={V:5d} T={T:4d}: hmmlib f64 {B / t64:10,.0f}  f32 {B / t32:10,.0f}  "
                f"hmmlearn {1 / per_seq:8,.0f} seq/s (on {n} seqs)  max|dlogp| f64 {d:.1e} f32 {d32:.1e}  "
                f"paths equal {agree}/{m}",
                flush=True,
            )
    return rows


# --------------------------------------------------------------------------- main
@dataclass
class Target:
    name: str
    target: str
    measured: str
    ok: bool | None  # None: not measured in this run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test for CI (< 30 s)")
    ap.add_argument("--dynamax", action="store_true", help="also time dynamax's hmm_smoother (if it imports)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--only", choices=["posteriors", "sampling", "viterbi"], action="append",
                    help="run only these sections (repeatable; default: all)")
    ap.add_argument("--strict", action="store_true", help="exit with status 2 if a performance target fails")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    use_dynamax = False
    if args.dynamax:
        try:
            import jax

            jax.config.update("jax_enable_x64", False)
            import dynamax  # noqa: F401

            use_dynamax = True
        except Exception as e:  # noqa: BLE001
            print(f"--dynamax: dynamax does not import ({type(e).__name__}: {e}); skipping it.")

    if args.quick:
        Ks, Ts, Vs, B = (10, 50), (8, 32), (50,), 64
        vit_Ks, vit_Ts, n_check = (10, 50), (32,), 8
        mm_n, hl_budget, samp_N, samp_L = 512, 0.03, 64, 128
        samp_specs = [("paper_hmm(10)", hmmlib.paper_hmm(10)), ("dirichlet K=20,V=50", hmmlib.dirichlet_hmm(20, 50))]
    else:
        Ks, Ts, Vs, B = (10, 50, 200), (32, 256), (50, 1000), 1000
        vit_Ks, vit_Ts, n_check = (10, 50, 200), (32, 256), 20
        mm_n, hl_budget, samp_N, samp_L = 2048, 1.0, 1000, 1024
        samp_specs = [
            ("paper_hmm(10)", hmmlib.paper_hmm(10)),
            ("paper_hmm(100, 50)", hmmlib.paper_hmm(100, 50)),
        ]
    T_long = max(Ts)

    import hmmlearn

    print(
        f"hmmlib {hmmlib.__version__} ({os.path.dirname(hmmlib.__file__)}) | torch {torch.__version__} | hmmlearn {hmmlearn.__version__} | "
        f"numpy {np.__version__} | python {platform.python_version()}"
    )
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch threads = {torch.get_num_threads()}, load average at the start: {load_average()}"
          + ("   [--quick: tiny sizes, a smoke test; the targets are not meaningful]" if args.quick else ""))
    wall0 = time.perf_counter()

    print(f"\n== GEMM peak: torch.mm {mm_n}^3, best of 3")
    peak32 = matmul_peak(torch.float32, mm_n)
    peak64 = matmul_peak(torch.float64, mm_n)
    print(f"  float32 {peak32 / 1e9:.1f} GFLOP/s   float64 {peak64 / 1e9:.1f} GFLOP/s")

    sections = set(args.only or ["posteriors", "sampling", "viterbi"])
    if "posteriors" in sections:
        print(
            f"\n== Posterior marginals, B = {B} sequences per configuration. hmmlib: best of 3 after a warm-up. "
            f"hmmlearn (implementation='scaling'): timed on the first n sequences (about {hl_budget:g} s per run, "
            "best of 3) and extrapolated per sequence: its cost is linear because it loops over sequences in Python.\n"
            "   max|diff| is over those n sequences, against hmmlearn's predict_proba."
        )
    post: list[PostRow] = []
    if "posteriors" in sections:
        post = bench_posteriors(Ks, Ts, Vs, B, hl_budget, use_dynamax, mm_n)
        # The machine is shared and its speed drifts: the float32 GEMM peak is measured again
        # next to every largest-K run and after the posteriors; %peak uses the largest value
        # seen (the conservative choice).
        matmul_peak(torch.float32, mm_n)
        print("  float32 GEMM peak measurements (GFLOP/s): "
              + ", ".join(f"{p / 1e9:.0f}" for p in PEAKS[torch.float32]) + " -> using the largest")
        peak32 = max(PEAKS[torch.float32])

    samp: list[SampleRow] = []
    if "sampling" in sections:
        print("\n== Sampling (tokens/s). hmmlib: best of 3 after a warm-up. hmmlearn: sample() of one sequence at a "
              "time, a few sequences timed (best of 3) and extrapolated.")
        samp = bench_sampling(samp_specs, samp_N, samp_L, hl_budget)

    vit: list[ViterbiRow] = []
    if "viterbi" in sections:
        print(
            f"\n== Viterbi, V = {Vs[0]}, B = {B}. hmmlib: best of 3 after a warm-up. hmmlearn decode(algorithm='viterbi') "
            f"timed on n sequences (best of 3) and extrapolated; log-probabilities and paths checked per sequence "
            f"on the first {n_check}."
        )
        vit = bench_viterbi(vit_Ks, vit_Ts, Vs[0], B, hl_budget, n_check)

    # ---------------------------------------------------------------- tables
    if post:
        matmul_peak(torch.float32, mm_n)  # once more at the end; the largest value seen is used
        peak32 = max(PEAKS[torch.float32])
    print(f"\n== Summary (threads = {torch.get_num_threads()}; GEMM peak f32 {peak32 / 1e9:.0f} GFLOP/s "
          f"(largest of {len(PEAKS[torch.float32])} measurements: "
          + ", ".join(f"{p / 1e9:.0f}" for p in PEAKS[torch.float32]) + f"), f64 {peak64 / 1e9:.0f} GFLOP/s)")
    if post:
        print(f"\n-- Posterior marginals, B = {B} (sequences per second; ratios = hmmlib / hmmlearn; "
              "(n) = sequences hmmlearn was timed on; GFLOP/s by the 4*B*T*K^2 flop model)")
        headers = ["K", "V", "T", "hmmlib f32", "hmmlib f64", "hmmlearn", "(n)", "f32/hl", "f64/hl",
                   "f32 GFLOP/s", "%peak32", "max|d| f64", "max|d| f32"]
        if use_dynamax:
            headers += ["dynamax f32", "dyn/hl", "max|d| dyn"]
        table = []
        for r in post:
            gfl = 4 * r.T * r.K**2 * r.f32
            row = [str(r.K), str(r.V), str(r.T), fmt(r.f32), fmt(r.f64), fmt(r.hl), str(r.hl_n),
                   f"{r.f32 / r.hl:.1f}x", f"{r.f64 / r.hl:.1f}x", f"{gfl / 1e9:.1f}", f"{100 * gfl / peak32:.0f}%",
                   f"{r.diff64:.1e}", f"{r.diff32:.1e}"]
            if use_dynamax:
                row += [fmt(r.dyn), f"{r.dyn / r.hl:.1f}x", f"{r.dyn_diff:.1e}"]
            table.append(row)
        print_table(headers, table)
    if samp:
        print("-- Sampling (tokens per second)")
        print_table(["HMM", "size", "hmmlib", "hmmlearn", "(n seqs)", "ratio"],
                    [[s.name, f"{s.N}x{s.L}", fmt(s.hmmlib_tps), fmt(s.hl_tps), str(s.hl_n),
                      f"{s.hmmlib_tps / s.hl_tps:.0f}x"] for s in samp])
    if vit:
        print(f"-- Viterbi, B = {B} (sequences per second)")
        print_table(["K", "V", "T", "hmmlib f64", "hmmlib f32", "hmmlearn", "(n)", "f64/hl", "f32/hl",
                     "max|dlogp| f64", "max|dlogp| f32", "paths equal"],
                    [[str(v.K), str(v.V), str(v.T), fmt(v.f64), fmt(v.f32), fmt(v.hl), str(v.hl_n),
                      f"{v.f64 / v.hl:.2f}x", f"{v.f32 / v.hl:.2f}x", f"{v.lp_diff:.1e}", f"{v.lp_diff32:.1e}",
                      f"{100 * v.path_agree:.0f}%"] for v in vit])

    # ---------------------------------------------------------------- targets
    targets: list[Target] = []
    for K, need in ((10, 3.0), (50, 12.0), (200, 30.0)):
        name = f"f32 posteriors K={K}, T={T_long}: speed-up vs hmmlearn"
        rs = [r for r in post if r.K == K and r.T == T_long]
        if not rs:
            targets.append(Target(name, f">= {need:g}x", "not run", None))
            continue
        detail = ", ".join(f"V={r.V}: {r.f32 / r.hl:.1f}x" for r in rs)
        targets.append(Target(name, f">= {need:g}x", detail, min(r.f32 / r.hl for r in rs) >= need))
    name = f"f32 posteriors K=200, T={T_long}: fraction of f32 GEMM peak ({peak32 / 1e9:.0f} GFLOP/s)"
    rs = [r for r in post if r.K == 200 and r.T == T_long]
    if rs:
        fr = [4 * r.T * r.K**2 * r.f32 / peak32 for r in rs]
        targets.append(Target(name, ">= 50%", ", ".join(f"V={r.V}: {100 * f:.0f}%" for r, f in zip(rs, fr)),
                              min(fr) >= 0.5))
    else:
        targets.append(Target(name, ">= 50%", "not run", None))
    d64 = max((r.diff64 for r in post), default=float("nan"))
    d32 = max((r.diff32 for r in post), default=float("nan"))
    targets.append(Target("f64 posteriors: max |diff| vs hmmlearn, all configs", f"<= {F64_TOL:g}",
                          f"{d64:.1e} (f32: {d32:.1e})" if post else "not run", d64 <= F64_TOL if post else None))
    targets.append(Target("sampling throughput (hmmlib.sample)", ">= 5M tokens/s",
                          ", ".join(f"{s.name}: {s.hmmlib_tps / 1e6:.1f}M" for s in samp) or "not run",
                          min(s.hmmlib_tps for s in samp) >= 5e6 if samp else None))
    vs = [v for v in vit if v.K == 200]
    targets.append(Target("Viterbi f64 K=200: speed vs hmmlearn", ">= 1.0x",
                          ", ".join(f"T={v.T}: {v.f64 / v.hl:.2f}x" for v in vs) or "not run",
                          min(v.f64 / v.hl for v in vs) >= 1 if vs else None))
    vlp = max((v.lp_diff for v in vit), default=float("nan"))
    vlp_ok = all(v.lp_diff <= 1e-9 * v.T for v in vit)
    targets.append(Target("Viterbi f64 log-prob agreement with hmmlearn", "<= 1e-9 * T",
                          f"{vlp:.1e}" if vit else "not run", vlp_ok if vit else None))

    print("== Targets" + ("  [--quick: tiny sizes; performance targets are not meaningful]" if args.quick else ""))
    print_table(["target", "required", "measured", "result"],
                [[t.name, t.target, t.measured, "-" if t.ok is None else ("PASS" if t.ok else "FAIL")]
                 for t in targets])
    print(f"total wall time {time.perf_counter() - wall0:.0f} s; load average at the end: {load_average()}; "
          f"{DISTURBED['disturbed']} of {DISTURBED['samples']} timed calls overlapped CPU use by other processes "
          "(those were repeated, up to 8 calls per measurement)")

    correctness_ok = (not post or d64 <= F64_TOL) and vlp_ok
    if not correctness_ok:
        print("CORRECTNESS CHECK FAILED")
        return 1
    if args.strict and any(t.ok is False for t in targets):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
