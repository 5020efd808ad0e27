"""Pretrain every model the chapters load (2-5), into hmmlib's model cache, so that a fresh checkout
(Binder's postBuild, a course server) opens chapters 2-5 without waiting for training.

    python tools/pretrain_cache.py            # the preset in $HMMBOOK_PRESET, else ``default``
    python tools/pretrain_cache.py ci

The cache is ``$HMMBOOK_CACHE`` if set, else ``.cache/models`` in the checkout (see ``hmmlib.cache``).
The calls mirror the chapters' own: the cache key covers the HMM, both configs, the preset's name and
hmmlib's version, so a model trained here is exactly the one a chapter asks for.
"""
from __future__ import annotations

import sys
import time

import hmmlib
from hmmlib.experiments import pretraining_sweep
from hmmlib.memory import paper_memory_hmm, to_hmm


def main(argv: list[str]) -> int:
    preset = hmmlib.get_preset(argv[1] if len(argv) > 1 else None)
    pt = preset.pretrain
    t0 = time.perf_counter()
    print(f"pretraining the {preset.name} preset's models into {hmmlib.cache_dir()}", flush=True)
    # Chapter 2: the masked LM for every HMM size of the sweep (chapters 3 and 4 reuse them).
    pretraining_sweep(preset, "mlm", progress=False)
    hmm = hmmlib.paper_hmm(10, 10, seed=0)
    # Chapter 2: the causal LM, and the masking-rate exercise's model.
    hmmlib.pretrained_model(hmm, pt.model_config(10, causal=True), pt.train_config("causal"),
                            preset=preset.name, progress=False)
    hmmlib.pretrained_model(hmm, pt.model_config(10), pt.train_config("mlm", mlm_probability=0.05),
                            preset=preset.name, progress=False)
    # Chapters 3 and 4: the masked LMs that the transformer tuning sweeps tune.
    for k in preset.tuning.transformer_num_states:
        hmmlib.pretrained_model(hmmlib.paper_hmm(k, 10, seed=0), pt.model_config(10), pt.train_config("mlm"),
                                preset=preset.name, progress=False)
    # Chapter 5: the masked LMs on each memory HMM (as a plain HMM) and on its vanilla counterpart.
    sz = preset.memory
    for n_values in sz.transformer_num_values:
        mem = paper_memory_hmm(n_values, sz.num_syntax, sz.num_symbols, seed=0)
        van = hmmlib.paper_hmm(sz.num_syntax * n_values, sz.num_symbols, seed=0)
        for h in (to_hmm(mem), van):
            hmmlib.pretrained_model(h, pt.model_config(sz.num_symbols), pt.train_config("mlm"),
                                    preset=preset.name, progress=False)
    n = len(list(hmmlib.cache_dir().glob("*.pt")))
    print(f"done in {time.perf_counter() - t0:.0f} s; {n} models in the cache", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
