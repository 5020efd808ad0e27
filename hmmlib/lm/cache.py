"""A cache of pretrained models, keyed by everything that determines them.

The key hashes the HMM's parameters (so any generator, seed or hand-made HMM is covered),
the model and training configs, the device type and the source of the modules that produce the
weights (:data:`WEIGHT_SOURCES`): editing ``pretrain.py`` retrains, editing a chapter does not. One call returns
the cached checkpoint or trains and stores it; later chapters and repeated book builds reuse
the model instead of retraining.

The folder is ``$HMMBOOK_CACHE`` if set, else ``.cache/models`` in the project (a folder git
ignores) when hmmlib runs from a checkout, else ``~/.cache/hmmbook/models``.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import torch

from ..hmm.model import HMM
from .device import default_device
from .pretrain import Pretrained, TrainConfig, load_pretrained, pretrain
from .transformer import TransformerConfig

__all__ = ["CACHE_ENV", "WEIGHT_SOURCES", "cache_dir", "source_digest", "model_key", "model_digest", "pretrained_model"]

CACHE_ENV = "HMMBOOK_CACHE"


def cache_dir() -> Path:
    """Where cached models live (see the module docstring)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "hmmlib").is_dir():
        return root / ".cache" / "models"
    return Path.home() / ".cache" / "hmmbook" / "models"


def _hmm_digest(hmm: HMM) -> str:
    h = hashlib.sha256()
    for t in (hmm.pi, hmm.A, hmm.W):
        a = t.detach().to("cpu", torch.float64).contiguous()
        h.update(str(tuple(a.shape)).encode())
        h.update(a.numpy().tobytes())
    return h.hexdigest()


#: The modules whose source determines a pretrained model's weights (data, model, loop and optimizer), relative to
#: hmmlib's folder. Editing one of them retrains; editing anything else (a chapter, a tuner, a preset) does not.
WEIGHT_SOURCES = ("hmm/model.py", "hmm/random.py", "hmm/sampling.py", "lm/transformer.py", "lm/optim.py",
                  "lm/pretrain.py")


#: hmmlib's folder, where :data:`WEIGHT_SOURCES` are read.
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def source_digest(files: tuple[str, ...] = WEIGHT_SOURCES, root: Path | None = None) -> str:
    """SHA-256 of the source of ``files`` (paths relative to ``root``, default :data:`PACKAGE_ROOT`), in order."""
    root = PACKAGE_ROOT if root is None else Path(root)
    h = hashlib.sha256()
    for name in files:
        h.update(name.encode())
        h.update((root / name).read_bytes())
    return h.hexdigest()


def model_key(hmm: HMM, model_cfg: TransformerConfig, train_cfg: TrainConfig,
              device: torch.device | str | None = None) -> dict:
    """Everything that determines a pretrained model's weights, as a JSON-able dict: the HMM's parameters,
    the two configs, the device type (CPU and CUDA kernels round differently) and the source of
    :data:`WEIGHT_SOURCES`. Not a preset's name: two presets with the same configs share a model."""
    dev = torch.device(device) if device is not None else default_device()
    return {
        "hmm_sha256": _hmm_digest(hmm),
        "model_cfg": model_cfg.to_dict(),
        "train_cfg": train_cfg.to_dict(),
        "device_type": dev.type,
        "source_sha256": source_digest(),
    }


def model_digest(key: dict) -> str:
    """The file name stem of a cache entry: 20 hex digits of the SHA-256 of the key's canonical JSON."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def pretrained_model(
    hmm: HMM,
    model_cfg: TransformerConfig,
    train_cfg: TrainConfig,
    *,
    cache: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    retrain: bool = False,
) -> Pretrained:
    """Return the cached model for these inputs, training and caching it first if needed.

    A corrupt cache entry is reported with a warning and replaced by a fresh training run.
    """
    key = model_key(hmm, model_cfg, train_cfg, device)
    digest = model_digest(key)
    folder = Path(cache) if cache is not None else cache_dir()
    path = folder / f"{digest}.pt"
    if path.exists() and not retrain:
        try:
            return load_pretrained(path, device)
        except ValueError as e:
            warnings.warn(f"discarding a corrupt cached model ({e}); retraining.", stacklevel=2)
    result = pretrain(hmm, model_cfg, train_cfg, device=device, checkpoint_path=path, progress=progress)
    (folder / f"{digest}.json").write_text(json.dumps(key, indent=2, sort_keys=True))
    return result
