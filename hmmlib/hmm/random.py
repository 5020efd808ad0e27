"""One place that turns a seed or a generator into a ``torch.Generator``."""
from __future__ import annotations

import torch

from .. import _validate as check

__all__ = ["make_generator"]


def make_generator(
    seed: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Generator:
    """Return ``generator`` if given, else a new generator on ``device`` seeded with ``seed``.

    Exactly one of ``seed`` and ``generator`` must be given, so that every
    random draw in hmmlib is reproducible.
    """
    if (seed is None) == (generator is None):
        raise ValueError("pass exactly one of seed=<int> or generator=<torch.Generator> (randomness is always seeded).")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator; got {type(generator).__name__}.")
        if torch.device(generator.device).type != torch.device(device).type:
            raise ValueError(
                f"generator is on {generator.device} but the work runs on {device}; "
                f"create it with torch.Generator(device='{torch.device(device).type}')."
            )
        return generator
    check.seed(seed)  # a Python or numpy integer: np.int64(3) seeds exactly as 3
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g
