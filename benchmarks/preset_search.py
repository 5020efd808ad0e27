"""How the default pretraining preset was chosen: excess loss after a fixed CPU time budget.

For each candidate (width, depth, heads, learning rate, masking rate) the script times a few
training steps, sets the number of steps that fits the budget, pretrains on the paper's 10-state
HMM (10 symbols) and prints the final distance to the exact conditionals. Run from the repository
root:  .venv/bin/python benchmarks/preset_search.py [--budget 120] [--threads 2]
"""
from __future__ import annotations

import argparse
import time

import torch

import hmmlib
from hmmlib.lm.pretrain import TrainConfig, _loss, make_optimizer, HMMData
from hmmlib.lm.transformer import Transformer, TransformerConfig

CANDIDATES = [
    # d_model, layers, heads, lr, mlm_probability, batch, seq_len
    (64, 2, 4, 3e-3, 0.30, 32, 64),
    (96, 3, 4, 2e-3, 0.15, 64, 64),
    (96, 3, 4, 2e-3, 0.30, 64, 64),
    (96, 3, 4, 5e-3, 0.30, 64, 64),
    (128, 2, 4, 2e-3, 0.30, 64, 64),
    (128, 4, 4, 1e-3, 0.15, 64, 64),
]


def seconds_per_step(mc: TransformerConfig, tc: TrainConfig, hmm: hmmlib.HMM) -> float:
    model = Transformer(mc)
    opt = make_optimizer(model, tc)
    g = torch.Generator()
    g.manual_seed(0)
    data = HMMData(hmm.to(dtype=torch.float32), tc, g)
    for i in range(13):
        if i == 3:
            t0 = time.perf_counter()
        loss = _loss(model, data.batch(), tc, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / 10


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=120.0, help="seconds of training per candidate")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--num-states", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    hmm = hmmlib.paper_hmm(args.num_states, 10, seed=0)
    print(f"budget {args.budget:.0f} s per candidate, {args.threads} threads, paper HMM with {args.num_states} states")
    print(f"{'d':>4} {'L':>2} {'H':>2} {'lr':>7} {'mask':>5} {'B':>3} {'T':>3} {'steps':>6} {'time':>6} | "
          f"{'excess':>7} {'TV':>6} {'pos0 TV':>7} {'unigram TV':>10}")
    for d, L, H, lr, p, B, T in CANDIDATES:
        mc = TransformerConfig(num_symbols=10, d_model=d, num_layers=L, num_heads=H, max_len=T + 64)
        probe = TrainConfig(batch_size=B, seq_len=T, lr=lr, mlm_probability=p)
        steps = max(50, int(args.budget / seconds_per_step(mc, probe, hmm)))
        tc = TrainConfig(num_steps=steps, batch_size=B, seq_len=T, lr=lr, warmup_steps=max(1, steps // 12),
                         mlm_probability=p, eval_every=steps, eval_num_seqs=512)
        t0 = time.perf_counter()
        r = hmmlib.pretrain(hmm, mc, tc, device="cpu", progress=False).history[-1]
        print(f"{d:>4} {L:>2} {H:>2} {lr:>7.0e} {p:>5.2f} {B:>3} {T:>3} {steps:>6} {time.perf_counter() - t0:>5.0f}s | "
              f"{r['excess_loss']:>7.3f} {r['tv']:>6.3f} {r['pos0_tv']:>7.3f} {r['unigram_tv']:>10.3f}", flush=True)


if __name__ == "__main__":
    main()
