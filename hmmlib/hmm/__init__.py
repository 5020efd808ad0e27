"""Layer 1: hidden Markov models and exact inference (chapter 1).

* :mod:`.model`: the :class:`HMM` (validation, devices, hmmlearn conversion);
* :mod:`.generators`: the paper's random HMMs and Dirichlet HMMs;
* :mod:`.sampling`: a batched, seeded sampler;
* :mod:`.inference`: forward-backward, posteriors, masked and next-token conditionals, Viterbi
  (the tuned time loops and buffer layouts behind it are in the private :mod:`._kernels`);
* :mod:`.bruteforce`: enumeration over all paths, the ground truth for tests and chapters.

Imports nothing from the other layers.
"""
from .model import HMM, to_hmmlearn_params, column_tolerance
from .generators import paper_hmm, dirichlet_hmm, softmax_temp
from .sampling import sample
from .inference import (
    check_tokens, ForwardResult, forward, backward, log_likelihood, posterior_marginals, posterior_h0,
    masked_conditional, masked_token_conditionals, next_token_conditionals, entropy, viterbi,
)
from . import bruteforce

__all__ = ["HMM", "to_hmmlearn_params", "column_tolerance", "paper_hmm", "dirichlet_hmm", "softmax_temp", "sample",
           "check_tokens", "ForwardResult", "forward", "backward", "log_likelihood", "posterior_marginals",
           "posterior_h0", "masked_conditional", "masked_token_conditionals",
           "next_token_conditionals", "entropy", "viterbi", "bruteforce"]
