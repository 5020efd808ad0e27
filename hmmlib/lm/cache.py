"""A cache of pretrained models, keyed by everything that determines them.

The key hashes the HMM's parameters (so any generator, seed or hand-made HMM is covered),
the model and training configs, the device type, the versions of torch and numpy (an upgrade may change
the kernels, hence the weights) and the source of the modules that produce the
weights (:data:`WEIGHT_SOURCES`): editing ``pretrain.py`` retrains, editing a chapter does not. One call returns
the cached checkpoint or trains and stores it; later chapters and repeated book builds reuse
the model instead of retraining.

An entry is ``<digest>.pt`` (the checkpoint, with its own checksum) and ``<digest>.json`` (the key and the
checkpoint's checksum). It is served only if the checkpoint's checksum verifies, matches the one the
``.json`` recorded, the ``.json``'s key is the requested key, and the checkpoint's configs are the requested
ones; anything else (a damaged file, a file copied over another entry, an entry from an older hmmlib) is
reported with a warning, discarded and retrained. Before training, the folder is checked for writability
(so that a trained model is never lost for want of a place to store it), and orphaned temporary files of
killed saves are removed (:func:`hmmlib.lm.checkpoint.remove_stale_temp_files`).

The folder is ``$HMMBOOK_CACHE`` if set, else ``.cache/models`` in the project (a folder git
ignores) when hmmlib runs from a checkout, else ``~/.cache/hmmbook/models``.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from ..hmm.model import HMM
from .checkpoint import CHECKSUM_KEY, atomic_write, load_checkpoint, remove_stale_temp_files
from .device import resolve_device
from .pretrain import CHECKPOINT_KEYS, Pretrained, TrainConfig, pretrain, pretrained_from_state
from .transformer import TransformerConfig

__all__ = ["CACHE_ENV", "WEIGHT_SOURCES", "cache_dir", "source_digest", "model_key", "model_digest", "pretrained_model",
           "check_writable"]

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
    the two configs, the device type (CPU and CUDA kernels round differently), the torch and numpy versions
    and the source of :data:`WEIGHT_SOURCES`. Not a preset's name: two presets with the same configs share a model."""
    dev = resolve_device(device)
    return {
        "hmm_sha256": _hmm_digest(hmm),
        "model_cfg": model_cfg.to_dict(),
        "train_cfg": train_cfg.to_dict(),
        "device_type": dev.type,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "source_sha256": source_digest(),
    }


def model_digest(key: dict) -> str:
    """The file name stem of a cache entry: 20 hex digits of the SHA-256 of the key's canonical JSON."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def check_writable(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed and write (then remove) a probe file in it; ``ValueError`` if either fails,
    saying to set ``HMMBOOK_CACHE`` to a writable folder. Called before training, not after."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"the model cache folder {folder} cannot be written ({type(e).__name__}: {e}); a model "
                         f"trained now could not be stored. Set {CACHE_ENV} to a writable folder (or pass "
                         "cache=...).") from None
    return folder


def _differences(a: dict, b: dict) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _load_entry(path: Path, key: dict, device: torch.device | str | None) -> Pretrained:
    """The cached model at ``path`` if it is exactly the one ``key`` asks for (module docstring), else ``ValueError``."""
    sidecar = path.with_suffix(".json")
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"its key file {sidecar.name} is missing or unreadable ({type(e).__name__})") from None
    want = json.loads(json.dumps(key))
    if not isinstance(meta, dict) or not isinstance(meta.get("key"), dict) or CHECKSUM_KEY not in meta:
        raise ValueError(f"its key file {sidecar.name} is from an older hmmlib (no checkpoint checksum)")
    if meta["key"] != want:
        raise ValueError(f"its key file {sidecar.name} describes another model (differs in "
                         f"{_differences(meta['key'], want)})")
    dev = resolve_device(device)
    state = load_checkpoint(path, CHECKPOINT_KEYS, map_location=dev, require_checksum=True)
    if state[CHECKSUM_KEY] != meta[CHECKSUM_KEY]:
        raise ValueError(f"{path.name} is not the checkpoint its key file {sidecar.name} describes (checksum "
                         f"{state[CHECKSUM_KEY][:16]}... instead of {str(meta[CHECKSUM_KEY])[:16]}...)")
    for name in ("model_cfg", "train_cfg"):
        if state[name] != want[name]:
            raise ValueError(f"{path.name} holds a model trained with another {name} (differs in "
                             f"{_differences(state[name], want[name])})")
    return pretrained_from_state(state, path, dev)


def _write_sidecar(path: Path, key: dict) -> None:
    """Record ``key`` and the checksum of the checkpoint just written at ``path`` next to it, atomically."""
    checksum = load_checkpoint(path, require_checksum=True)[CHECKSUM_KEY]
    text = json.dumps({"key": key, CHECKSUM_KEY: checksum}, indent=2, sort_keys=True)
    atomic_write(path.with_suffix(".json"), lambda f: f.write(text.encode()))


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

    An entry that is not exactly the requested model (corrupt, copied from another entry, or written by an
    older hmmlib) is reported with a warning and replaced by a fresh training run. A cache folder that cannot
    be written raises ``ValueError`` before any training.
    """
    key = model_key(hmm, model_cfg, train_cfg, device)
    digest = model_digest(key)
    folder = Path(cache) if cache is not None else cache_dir()
    path = folder / f"{digest}.pt"
    remove_stale_temp_files(folder)
    if path.exists() and not retrain:
        try:
            return _load_entry(path, key, device)
        except ValueError as e:
            warnings.warn(f"discarding a corrupt cached model ({e}); retraining.", stacklevel=2)
    check_writable(folder)
    result = pretrain(hmm, model_cfg, train_cfg, device=device, checkpoint_path=path, progress=progress)
    _write_sidecar(path, key)
    return result
