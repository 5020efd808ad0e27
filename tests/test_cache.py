"""The model cache: one training run per distinct (HMM, configs, device type, source), reused afterwards."""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import hmmlib
from hmmlib.lm.checkpoint import TEMP_MAX_AGE_S, load_checkpoint, save_checkpoint
from hmmlib.lm.pretrain import Pretrained, TrainConfig
from hmmlib.lm.transformer import TransformerConfig

cache_mod = importlib.import_module("hmmlib.lm.cache")


def tiny_configs():
    mcfg = TransformerConfig(num_symbols=6, d_model=16, num_layers=1, num_heads=2, max_len=16)
    tcfg = TrainConfig(num_steps=3, batch_size=4, seq_len=8, warmup_steps=1, eval_every=100, eval_num_seqs=4)
    return mcfg, tcfg


@pytest.fixture
def hmm() -> hmmlib.HMM:
    return hmmlib.dirichlet_hmm(3, 6, seed=0)


@pytest.fixture
def count_training(monkeypatch):
    """Counts real training runs (and lets them happen)."""
    calls = []
    real = cache_mod.pretrain

    def counting(*args, **kwargs):
        calls.append(kwargs.get("checkpoint_path"))
        return real(*args, **kwargs)

    monkeypatch.setattr(cache_mod, "pretrain", counting)
    return calls


def forbid_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pretrain() was called although the model is cached")

    monkeypatch.setattr(cache_mod, "pretrain", refuse)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_first_call_trains_and_writes_checkpoint_and_key(hmm, tmp_path, count_training):
    mcfg, tcfg = tiny_configs()
    result = cache_mod.pretrained_model(hmm, mcfg, tcfg, cache=tmp_path, device="cpu", progress=False)
    assert len(count_training) == 1
    assert result.step == tcfg.num_steps and result.model_cfg == mcfg and result.train_cfg == tcfg
    pts, jsons = sorted(tmp_path.glob("*.pt")), sorted(tmp_path.glob("*.json"))
    assert len(pts) == 1 and len(jsons) == 1 and pts[0].stem == jsons[0].stem
    assert Path(count_training[0]) == pts[0]
    assert len(pts[0].stem) >= 16 and all(c in "0123456789abcdef" for c in pts[0].stem)
    meta = json.loads(jsons[0].read_text())
    assert set(meta) == {"key", "sha256"}
    key = meta["key"]
    assert key == json.loads(json.dumps(cache_mod.model_key(hmm, mcfg, tcfg, "cpu")))
    assert key["model_cfg"] == mcfg.to_dict() and key["train_cfg"] == tcfg.to_dict() and key["device_type"] == "cpu"
    assert set(key) == {"hmm_sha256", "model_cfg", "train_cfg", "device_type", "torch_version", "numpy_version",
                        "source_sha256"}
    assert key["torch_version"] == torch.__version__ and key["numpy_version"] == np.__version__
    assert meta["sha256"] == load_checkpoint(pts[0])["sha256"]  # the entry's .json pins its checkpoint
    assert not list(tmp_path.glob("*.tmp"))


def test_second_call_loads_without_training(hmm, tmp_path, monkeypatch):
    mcfg, tcfg = tiny_configs()
    first = cache_mod.pretrained_model(hmm, mcfg, tcfg, cache=tmp_path, device="cpu", progress=False)
    files = sorted(p.name for p in tmp_path.iterdir())
    forbid_training(monkeypatch)
    # an equal HMM built again (a new object) hits the same entry: the key is the parameters
    second = cache_mod.pretrained_model(hmmlib.dirichlet_hmm(3, 6, seed=0), mcfg, tcfg, cache=tmp_path,
                                        device="cpu", progress=False)
    assert isinstance(second, Pretrained)
    assert second.model is not first.model
    assert_same_weights(second.model, first.model)
    assert second.step == first.step and second.history == first.history
    assert second.model_cfg == mcfg and second.train_cfg == tcfg
    assert not second.model.training
    assert sorted(p.name for p in tmp_path.iterdir()) == files


def test_retrain_forces_a_new_run(hmm, tmp_path, count_training):
    mcfg, tcfg = tiny_configs()
    cache_mod.pretrained_model(hmm, mcfg, tcfg, cache=tmp_path, device="cpu", progress=False)
    cache_mod.pretrained_model(hmm, mcfg, tcfg, cache=tmp_path, device="cpu", progress=False, retrain=True)
    assert len(count_training) == 2 and count_training[0] == count_training[1]


# every field of both configs, with another valid value
MODEL_CHANGES = dict(num_symbols=7, d_model=32, num_layers=2, num_heads=4, d_mlp=24, max_len=20, dropout=0.1,
                     causal=True, tie_embeddings=False)
TRAIN_CHANGES = dict(objective="causal", num_steps=4, batch_size=5, seq_len=4, lr=2e-3, warmup_steps=2,
                     weight_decay=0.0, grad_clip=0.5, mlm_probability=0.2, corpus_tokens=64, doc_len=16,
                     eval_every=7, eval_num_seqs=5, seed=1, compile=True)


def test_the_change_lists_cover_every_config_field():
    assert set(MODEL_CHANGES) == {f.name for f in dataclasses.fields(TransformerConfig)}
    assert set(TRAIN_CHANGES) == {f.name for f in dataclasses.fields(TrainConfig)}


@pytest.fixture
def fake_training(monkeypatch):
    """Records where each call would train to, without training (and without writing the .pt)."""
    paths = []

    def fake(hmm, model_cfg, train_cfg, *, device=None, checkpoint_path=None, progress=True):
        paths.append(Path(checkpoint_path))
        save_checkpoint(checkpoint_path, {"step": 0})  # a stand-in file, so that the cache can record its checksum
        return Pretrained(model=None, model_cfg=model_cfg, train_cfg=train_cfg)

    monkeypatch.setattr(cache_mod, "pretrain", fake)
    return paths


@pytest.mark.filterwarnings("ignore:discarding a corrupt cached model")  # the stand-in files are not models
def test_any_change_gives_another_cache_file(hmm, tmp_path, fake_training):
    mcfg, tcfg = tiny_configs()

    def path_for(h=hmm, m=mcfg, t=tcfg, device="cpu"):
        cache_mod.pretrained_model(h, m, t, cache=tmp_path, device=device, progress=False)
        return fake_training[-1]

    base = path_for()
    assert path_for() == base  # deterministic
    assert path_for(h=hmmlib.dirichlet_hmm(3, 6, seed=0)) == base
    variants = {}
    for name, value in MODEL_CHANGES.items():
        variants[f"model.{name}"] = path_for(m=dataclasses.replace(mcfg, **{name: value}))
    for name, value in TRAIN_CHANGES.items():
        variants[f"train.{name}"] = path_for(t=dataclasses.replace(tcfg, **{name: value}))
    variants["device_type"] = path_for(device="meta")  # another device type (no GPU needed: nothing trains)
    variants["hmm.seed"] = path_for(h=hmmlib.dirichlet_hmm(3, 6, seed=1))
    variants["hmm.kind"] = path_for(h=hmmlib.paper_hmm(3, 6, seed=0))
    # the same HMM with one emission probability moved by 1e-9 (columns still sum to 1)
    W = hmm.W.clone()
    W[0, 0] += 1e-9
    W[1, 0] -= 1e-9
    variants["hmm.tiny_change"] = path_for(h=hmmlib.HMM(hmm.pi, hmm.A, W))
    A = hmm.A.clone()
    A[:, [0, 1]] = A[:, [1, 0]]
    variants["hmm.A"] = path_for(h=hmmlib.HMM(hmm.pi, A, hmm.W))
    names = list(variants)
    assert base not in variants.values()
    assert len(set(variants.values())) == len(variants), [
        (a, b) for i, a in enumerate(names) for b in names[i + 1:] if variants[a] == variants[b]]
    for p in [base, *variants.values()]:
        assert p.parent == tmp_path and p.suffix == ".pt"
        assert p.with_suffix(".json").is_file()


@pytest.mark.parametrize("corruption", ["garbage", "truncated", "foreign"])
def test_corrupt_cache_entry_warns_and_retrains(hmm, tmp_path, count_training, corruption):
    mcfg, tcfg = tiny_configs()
    first = cache_mod.pretrained_model(hmm, mcfg, tcfg, cache=tmp_path, device="cpu", progress=False)
    (path,) = tmp_path.glob("*.pt")
    data = path.read_bytes()
    if corruption == "garbage":
        path.write_bytes(b"not a checkpoint at all")
    elif corruption == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:
        torch.save({"a": 1}, path)
    with pytest.warns(UserWarning, match=r"discarding a corrupt cached model .*retraining"):
        again = cache_mod.pretrained_model(hmm, mcfg, tcfg, cache=tmp_path, device="cpu", progress=False)
    assert len(count_training) == 2
    assert_same_weights(again.model, first.model)  # same seed, same model
    # the entry was repaired: the next call loads it without training
    loaded = hmmlib.load_pretrained(path, device="cpu")
    assert_same_weights(loaded.model, first.model)


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch, fake_training, hmm):
    monkeypatch.setenv(cache_mod.CACHE_ENV, str(tmp_path / "models"))
    assert cache_mod.CACHE_ENV == "HMMBOOK_CACHE"
    assert cache_mod.cache_dir() == tmp_path / "models"
    assert hmmlib.cache_dir() == tmp_path / "models"
    mcfg, tcfg = tiny_configs()
    cache_mod.pretrained_model(hmm, mcfg, tcfg, device="cpu", progress=False)  # no cache= argument
    assert fake_training[-1].parent == tmp_path / "models"
    # "~" is expanded
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv(cache_mod.CACHE_ENV, "~/elsewhere")
    assert cache_mod.cache_dir() == tmp_path / "home" / "elsewhere"


def test_cache_dir_default_in_a_checkout(monkeypatch):
    monkeypatch.delenv(cache_mod.CACHE_ENV, raising=False)
    root = Path(__file__).resolve().parents[1]  # this checkout, found from the test file, not from hmmlib
    if Path(cache_mod.__file__).resolve().is_relative_to(root):
        expected = root / ".cache" / "models"  # git ignores .cache/
    else:  # an installed (non-editable) hmmlib
        expected = Path.home() / ".cache" / "hmmbook" / "models"
    assert cache_mod.cache_dir() == expected
    monkeypatch.setenv(cache_mod.CACHE_ENV, "")  # empty means unset
    assert cache_mod.cache_dir() == expected


def _copy_package(tmp_path) -> Path:
    import shutil
    root = tmp_path / "hmmlib_copy"
    shutil.copytree(cache_mod.PACKAGE_ROOT, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_editing_a_module_that_makes_the_weights_changes_the_key(hmm, tmp_path, monkeypatch):
    """The key follows the source of the modules that produce the weights, and nothing else in the package."""
    mcfg, tcfg = tiny_configs()
    root = _copy_package(tmp_path)
    monkeypatch.setattr(cache_mod, "PACKAGE_ROOT", root)

    def digest():
        return cache_mod.model_digest(cache_mod.model_key(hmm, mcfg, tcfg, "cpu"))

    base = digest()
    for other in ("adapt/frozen_lm.py", "experiments/presets.py", "memory/attention_head.py", "lm/cache.py"):
        with open(root / other, "a") as f:
            f.write("\n# an edit that cannot change a pretrained model\n")
        assert digest() == base, other
    seen = {base}
    for name in cache_mod.WEIGHT_SOURCES:
        with open(root / name, "a") as f:
            f.write("\n# an edit to a module that produces the weights\n")
        d = digest()
        assert d not in seen, name
        seen.add(d)


@pytest.mark.filterwarnings("ignore:discarding a corrupt cached model")
def test_two_presets_with_the_same_configs_share_one_model(hmm, tmp_path, fake_training, monkeypatch):
    from hmmlib.experiments import pretrained_for

    monkeypatch.setenv(cache_mod.CACHE_ENV, str(tmp_path))
    ci = hmmlib.get_preset("ci")
    renamed = dataclasses.replace(ci, name="my-course")
    pretrained_for(hmm, ci, device="cpu", progress=False)
    pretrained_for(hmm, renamed, device="cpu", progress=False)
    assert len(fake_training) == 2 and fake_training[0] == fake_training[1]
    pretrained_for(hmm, ci, "causal", device="cpu", progress=False)
    assert fake_training[2] != fake_training[0]


# --------------------------------------------------------------------------- integrity of entries (issue 22, C3 C9-C12 C16)
def _flip_tensor_bytes(path: Path) -> None:
    from test_checkpoint import _tensor_members, flip_bytes  # tests/ is on sys.path (pytest's default prepend import mode)

    flip_bytes(path, path, _tensor_members(path)[0])


def test_a_cache_entry_with_flipped_bytes_is_retrained(hmm, tmp_path, count_training):
    """C3: the cache used to serve a checkpoint with flipped tensor bytes; now it warns and retrains."""
    mcfg, tcfg = tiny_configs()
    first = cache_mod.pretrained_model(hmm, mcfg, tcfg, cache=tmp_path, device="cpu", progress=False)
    (path,) = tmp_path.glob("*.pt")
    _flip_tensor_bytes(path)
    with pytest.warns(UserWarning, match=r"discarding a corrupt cached model .*is corrupt.*retraining"):
        again = cache_mod.pretrained_model(hmm, mcfg, tcfg, cache=tmp_path, device="cpu", progress=False)
    assert len(count_training) == 2
    assert_same_weights(again.model, first.model)
    assert load_checkpoint(path)["sha256"] == json.loads(path.with_suffix(".json").read_text())["sha256"]


def _entry(tmp_path, hmm, mcfg, tcfg) -> Path:
    return tmp_path / f"{cache_mod.model_digest(cache_mod.model_key(hmm, mcfg, tcfg, 'cpu'))}.pt"


@pytest.mark.parametrize("how", ["pt_only", "pt_and_json", "forged_json"])
def test_an_entry_of_another_config_is_never_served(hmm, tmp_path, count_training, how):
    """C9: the d_model=16 model copied over the d_model=32 entry used to be served as the d_model=32 model."""
    mcfg, tcfg = tiny_configs()
    big = dataclasses.replace(mcfg, d_model=32)
    cache_mod.pretrained_model(hmm, mcfg, tcfg, cache=tmp_path, device="cpu", progress=False)
    small_pt, big_pt = _entry(tmp_path, hmm, mcfg, tcfg), _entry(tmp_path, hmm, big, tcfg)
    big_pt.write_bytes(small_pt.read_bytes())
    if how == "pt_and_json":
        big_pt.with_suffix(".json").write_text(small_pt.with_suffix(".json").read_text())
        match = r"describes another model \(differs in \['model_cfg'\]\)"
    elif how == "forged_json":  # a key file that names the requested key and the copied file's true checksum
        meta = {"key": cache_mod.model_key(hmm, big, tcfg, "cpu"), "sha256": load_checkpoint(small_pt)["sha256"]}
        big_pt.with_suffix(".json").write_text(json.dumps(meta))
        match = r"holds a model trained with another model_cfg \(differs in \['d_model'\]\)"
    else:
        match = r"key file .*\.json is missing"
    with pytest.warns(UserWarning, match=match):
        got = cache_mod.pretrained_model(hmm, big, tcfg, cache=tmp_path, device="cpu", progress=False)
    assert got.model_cfg.d_model == 32 and got.model.cfg.d_model == 32
    assert len(count_training) == 2
    forbid = cache_mod.pretrained_model(hmm, big, tcfg, cache=tmp_path, device="cpu", progress=False)  # repaired
    assert forbid.model_cfg.d_model == 32 and len(count_training) == 2


def test_an_entry_of_another_hmm_with_the_same_configs_is_never_served(tmp_path, count_training):
    """The configs match but the HMM does not: the copied checkpoint is not the one the key file pins."""
    mcfg, tcfg = tiny_configs()
    h1, h2 = hmmlib.dirichlet_hmm(3, 6, seed=0), hmmlib.dirichlet_hmm(3, 6, seed=1)
    m1 = cache_mod.pretrained_model(h1, mcfg, tcfg, cache=tmp_path, device="cpu", progress=False)
    m2 = cache_mod.pretrained_model(h2, mcfg, tcfg, cache=tmp_path, device="cpu", progress=False)
    p1, p2 = _entry(tmp_path, h1, mcfg, tcfg), _entry(tmp_path, h2, mcfg, tcfg)
    p2.write_bytes(p1.read_bytes())
    with pytest.warns(UserWarning, match=r"is not the checkpoint its key file .* describes"):
        got = cache_mod.pretrained_model(h2, mcfg, tcfg, cache=tmp_path, device="cpu", progress=False)
    assert len(count_training) == 3
    assert_same_weights(got.model, m2.model)
    assert any(not torch.equal(a, b) for a, b in zip(got.model.state_dict().values(), m1.model.state_dict().values()))


def test_an_entry_from_before_the_checksum_is_retrained(hmm, tmp_path, count_training):
    """An entry as older hmmlib wrote it (v1 checkpoint, the bare key as .json) is not served unverified."""
    mcfg, tcfg = tiny_configs()
    first = cache_mod.pretrained_model(hmm, mcfg, tcfg, cache=tmp_path, device="cpu", progress=False)
    (path,) = tmp_path.glob("*.pt")
    state = torch.load(path, weights_only=True)
    state.pop("sha256")
    torch.save({**state, "format": "hmmlib-checkpoint-v1"}, path)
    meta = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps(meta["key"]))
    with pytest.warns(UserWarning, match=r"discarding .*from an older hmmlib .*retraining"):
        again = cache_mod.pretrained_model(hmm, mcfg, tcfg, cache=tmp_path, device="cpu", progress=False)
    assert len(count_training) == 2
    assert_same_weights(again.model, first.model)


def test_the_key_holds_the_torch_and_numpy_versions(hmm, monkeypatch):
    """C10: a torch or numpy upgrade retrains instead of reusing weights made by the old kernels."""
    mcfg, tcfg = tiny_configs()
    key = cache_mod.model_key(hmm, mcfg, tcfg, "cpu")
    assert key["torch_version"] == torch.__version__ and key["numpy_version"] == np.__version__
    base = cache_mod.model_digest(key)
    monkeypatch.setattr(torch, "__version__", "99.0.0+test")
    after_torch = cache_mod.model_digest(cache_mod.model_key(hmm, mcfg, tcfg, "cpu"))
    monkeypatch.setattr(np, "__version__", "99.0.0")
    after_numpy = cache_mod.model_digest(cache_mod.model_key(hmm, mcfg, tcfg, "cpu"))
    assert len({base, after_torch, after_numpy}) == 3


def _unwritable(folder: Path, monkeypatch) -> None:
    """Make ``folder`` refuse new files: chmod where that binds, else (as root) a probe that fails like it."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return
    real = cache_mod.tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == folder:
            raise PermissionError(13, "Permission denied", str(folder))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(cache_mod.tempfile, "mkstemp", mkstemp)


def test_an_unwritable_cache_folder_is_refused_before_training(hmm, tmp_path, count_training, monkeypatch):
    """C11: the folder used to be found unwritable only after training, losing the model."""
    mcfg, tcfg = tiny_configs()
    folder = tmp_path / "ro"
    _unwritable(folder, monkeypatch)
    try:
        with pytest.raises(ValueError, match=r"model cache folder .*ro cannot be written \(PermissionError.*Set "
                                             r"HMMBOOK_CACHE to a writable folder"):
            cache_mod.pretrained_model(hmm, mcfg, tcfg, cache=folder, device="cpu", progress=False)
        assert count_training == []
    finally:
        folder.chmod(0o755)


def test_a_cache_folder_under_a_file_is_refused_before_training(hmm, tmp_path, count_training):
    """C12: a cache path below a file used to give NotADirectoryError after training."""
    mcfg, tcfg = tiny_configs()
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(ValueError, match=r"afile/models cannot be written \((NotADirectoryError|FileExistsError).*"
                                         r"Set HMMBOOK_CACHE to a writable folder"):
        cache_mod.pretrained_model(hmm, mcfg, tcfg, cache=tmp_path / "afile" / "models", device="cpu", progress=False)
    assert count_training == []


def test_a_read_only_cache_still_serves_its_models(hmm, tmp_path, monkeypatch):
    """Writability is needed to train, not to load: a shared, read-only cache keeps working."""
    mcfg, tcfg = tiny_configs()
    first = cache_mod.pretrained_model(hmm, mcfg, tcfg, cache=tmp_path, device="cpu", progress=False)
    forbid_training(monkeypatch)
    _unwritable(tmp_path, monkeypatch)
    try:
        again = cache_mod.pretrained_model(hmm, mcfg, tcfg, cache=tmp_path, device="cpu", progress=False)
    finally:
        tmp_path.chmod(0o755)
    assert_same_weights(again.model, first.model)


def test_the_cache_removes_orphaned_temporary_files(hmm, tmp_path, monkeypatch):
    """C16: a killed save's <digest>.pt.<8 chars>.tmp is removed by the next cache call (a hit, no training),
    once older than TEMP_MAX_AGE_S; a recent one (a save that may be running) is kept."""
    mcfg, tcfg = tiny_configs()
    cache_mod.pretrained_model(hmm, mcfg, tcfg, cache=tmp_path, device="cpu", progress=False)
    (path,) = tmp_path.glob("*.pt")
    old, fresh = tmp_path / f"{path.name}.k1ll3d_x.tmp", tmp_path / f"{path.name}.running.tmp"
    for p, age in ((old, TEMP_MAX_AGE_S + 5), (fresh, 5)):
        p.write_bytes(b"PK\x03\x04" + bytes(1000))
        t = time.time() - age
        os.utime(p, (t, t))
    forbid_training(monkeypatch)
    cache_mod.pretrained_model(hmm, mcfg, tcfg, cache=tmp_path, device="cpu", progress=False)
    assert not old.exists() and fresh.exists()
