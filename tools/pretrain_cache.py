"""Pretrain every model the chapters load (2-5), into hmmlib's model cache, so that a fresh checkout
(Binder's postBuild, a course server) opens the chapters without waiting for training.

    python tools/pretrain_cache.py            # the preset in $HMMBOOK_PRESET, else ``default``
    python tools/pretrain_cache.py ci

The cache is ``$HMMBOOK_CACHE`` if set, else ``.cache/models`` in the checkout (see hmmlib's cache module).
The calls mirror the chapters' own: the cache key covers the HMM, the configs, the device type and the
source of the modules that produce the weights, so a model trained here is exactly the one a chapter asks for.
Train on the device the chapters will use (Binder: the CPU).
"""
from __future__ import annotations

import sys
import time

import hmmlib
from hmmlib.experiments import pretraining_sweep
from hmmlib.experiments.prefix_presets import prefix_sizes
from hmmlib.experiments.prefix_runners import prefix_setup


def main(argv: list[str]) -> int:
    preset = hmmlib.get_preset(argv[1] if len(argv) > 1 else None)

    def train(hmm, objective="mlm", **overrides):
        return hmmlib.pretrained_for(hmm, preset, objective, progress=False, **overrides)

    t0 = time.perf_counter()
    print(f"pretraining the {preset.name} preset's models into {hmmlib.cache_dir()}", flush=True)
    # Chapter 2: the masked LM for every HMM size of the sweep (chapters 3 and 4 reuse them).
    pretraining_sweep(preset, "mlm", progress=False)
    hmm = hmmlib.paper_hmm(10, 10, seed=0)
    # Chapter 2: the causal LM, and the masking-rate exercise's model.
    train(hmm, "causal")
    train(hmm, "mlm", mlm_probability=0.05)
    # Chapters 3 and 4: the masked LMs that the transformer tuning sweeps tune.
    for k in preset.tuning.transformer_num_states:
        train(hmmlib.paper_hmm(k, 10, seed=0))
    # Chapter 5: the masked LMs on each memory HMM (as a plain HMM) and on its vanilla counterpart.
    sz = preset.memory
    for n_values in sz.transformer_num_values:
        mem = hmmlib.paper_memory_hmm(n_values, sz.num_syntax, sz.num_symbols, seed=0)
        train(hmmlib.to_hmm(mem))
        train(hmmlib.paper_hmm(sz.num_syntax * n_values, sz.num_symbols, seed=0))
    # Chapter 7: the causal LM pretrained on the family of HMMs.
    prefix_setup(prefix_sizes(preset.name))
    n = len(list(hmmlib.cache_dir().glob("*.pt")))
    print(f"done in {time.perf_counter() - t0:.0f} s; {n} models in the cache", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
