"""Checkpoint integrity: a checksum verified on load, files from older hmmlib, orphaned temporary files."""
from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path

import pytest
import torch

import hmmlib
from hmmlib.lm import checkpoint as ck
from hmmlib.lm.checkpoint import (CHECKSUM_KEY, FORMAT, TEMP_MAX_AGE_S, content_digest, load_checkpoint,
                                  remove_stale_temp_files, save_checkpoint)
from hmmlib.lm.pretrain import TrainConfig, load_pretrained, pretrain
from hmmlib.lm.transformer import TransformerConfig


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    hmm = hmmlib.paper_hmm(4, 10, seed=0)
    mcfg = TransformerConfig(num_symbols=10, d_model=16, num_layers=1, num_heads=2, max_len=16)
    tcfg = TrainConfig(num_steps=3, batch_size=4, seq_len=8, warmup_steps=1, eval_every=100, eval_num_seqs=4)
    path = tmp_path_factory.mktemp("ck") / "model.pt"
    result = pretrain(hmm, mcfg, tcfg, device="cpu", progress=False, checkpoint_path=path)
    return result, path


def _tensor_members(path: Path) -> list[zipfile.ZipInfo]:
    """The zip members holding tensor bytes (``<archive>/data/<n>``), largest first."""
    with zipfile.ZipFile(path) as z:
        members = [i for i in z.infolist() if "/data/" in i.filename and i.filename.rsplit("/", 1)[1].isdigit()]
    return sorted(members, key=lambda i: -i.file_size)


def flip_bytes(src: Path, dst: Path, member: zipfile.ZipInfo, count: int = 16) -> None:
    """Copy ``src`` to ``dst`` with ``count`` bytes in the middle of ``member``'s data inverted (the zip's CRC left
    stale, as a bad disk would): torch's reader does not check it."""
    data = bytearray(src.read_bytes())
    h = member.header_offset
    name_len = int.from_bytes(data[h + 26:h + 28], "little")
    extra_len = int.from_bytes(data[h + 28:h + 30], "little")
    start = h + 30 + name_len + extra_len + member.file_size // 2 - count // 2
    for i in range(start, start + count):
        data[i] ^= 0xFF
    dst.write_bytes(bytes(data))


def test_flipped_tensor_bytes_are_detected(trained, tmp_path):
    """C3: 16 flipped bytes inside a tensor's zip member loaded silently before the checksum; now a ValueError."""
    result, path = trained
    members = _tensor_members(path)
    assert len(members) >= 5
    for j, member in enumerate((members[0], members[len(members) // 2], members[-1])):
        if member.file_size < 16:
            continue
        bad = tmp_path / f"flipped{j}.pt"
        flip_bytes(path, bad, member)
        raw = torch.load(bad, weights_only=True)  # torch alone reads the damaged file without complaint
        assert raw["format"] == FORMAT
        with pytest.raises(ValueError, match=r"is corrupt: the SHA-256 of its contents .*Delete it and retrain"):
            load_checkpoint(bad)
        with pytest.raises(ValueError, match=r"is corrupt"):
            load_pretrained(bad, device="cpu")
    good = load_pretrained(path, device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(good.model.state_dict().values(), result.model.state_dict().values()))


def test_the_checksum_covers_every_value(trained):
    """The digest changes with any tensor entry, dtype, shape, number or string, and not with the device or
    the order of a dict's keys; it is stored in the file and equals the recomputed one."""
    _, path = trained
    state = load_checkpoint(path)
    assert state[CHECKSUM_KEY] == content_digest(state)
    base = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": {"x": 1, "y": 0.5, "z": "s"}, "c": [1, None]}
    d0 = content_digest(base)
    assert content_digest({"c": [1, None], "b": {"z": "s", "y": 0.5, "x": 1}, "a": base["a"].clone()}) == d0
    assert content_digest({**base, CHECKSUM_KEY: "anything"}) == d0
    variants = [
        {**base, "a": base["a"].reshape(3, 2)},
        {**base, "a": base["a"].double()},
        {**base, "a": torch.where(torch.arange(6).reshape(2, 3) == 2, torch.nextafter(base["a"], base["a"] + 1),
                                  base["a"])},  # one entry moved by one ulp
        {**base, "b": {"x": 2, "y": 0.5, "z": "s"}},
        {**base, "b": {"x": 1, "y": 0.5000000001, "z": "s"}},
        {**base, "b": {"x": 1, "y": 0.5, "z": "t"}},
        {**base, "b": {"x": True, "y": 0.5, "z": "s"}},
        {**base, "c": [1, 0]},
        {**base, "d": 0},
    ]
    digests = {content_digest(v) for v in variants}
    assert d0 not in digests and len(digests) == len(variants)


def test_a_checkpoint_edited_and_saved_by_torch_is_detected(trained, tmp_path):
    """A file rewritten by plain torch.save with one weight changed (its stored checksum kept) is refused."""
    _, path = trained
    state = torch.load(path, weights_only=True)
    name = next(iter(state["model"]))
    state["model"][name] = state["model"][name] + 1.0
    torch.save(state, tmp_path / "edited.pt")
    with pytest.raises(ValueError, match="is corrupt"):
        load_checkpoint(tmp_path / "edited.pt")


def test_a_loaded_checkpoint_can_be_saved_again(trained, tmp_path):
    _, path = trained
    state = load_checkpoint(path)
    again = load_checkpoint(save_checkpoint(tmp_path / "again.pt", state))
    assert again[CHECKSUM_KEY] == state[CHECKSUM_KEY]


def _legacy_copy(path: Path, dst: Path) -> Path:
    """What hmmlib wrote before the checksum: torch.save({"format": "hmmlib-checkpoint-v1", **payload})."""
    state = torch.load(path, weights_only=True)
    state.pop(CHECKSUM_KEY)
    state["format"] = "hmmlib-checkpoint-v1"
    torch.save(state, dst)
    return dst


def test_checkpoints_from_before_the_checksum_load_with_a_warning(trained, tmp_path):
    """Decision for older files: loaded (with a warning that they are unverified) unless a checksum is required."""
    result, path = trained
    old = _legacy_copy(path, tmp_path / "old.pt")
    with pytest.warns(UserWarning, match=r"older hmmlib \(hmmlib-checkpoint-v1\) without a checksum: loaded unverified"):
        loaded = load_pretrained(old, device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(loaded.model.state_dict().values(), result.model.state_dict().values()))
    with pytest.raises(ValueError, match=r"without a checksum, so it cannot be verified; delete it and retrain"):
        load_checkpoint(old, require_checksum=True)
    with pytest.raises(ValueError, match=r"cannot be verified"):
        load_pretrained(old, device="cpu", require_checksum=True)
    # saving it again adds the checksum
    with pytest.warns(UserWarning):
        state = load_checkpoint(old)
    resaved = save_checkpoint(tmp_path / "resaved.pt", state)
    assert load_checkpoint(resaved, require_checksum=True)["format"] == FORMAT


def _orphan(folder: Path, name: str, age_s: float) -> Path:
    p = folder / name
    p.write_bytes(b"PK\x03\x04 half a checkpoint")
    t = time.time() - age_s
    os.utime(p, (t, t))
    return p


def test_a_save_removes_orphaned_temporary_files(tmp_path):
    """C16: a save killed mid-write leaves <name>.<8 chars>.tmp; the next save in that folder removes such files
    once they are older than TEMP_MAX_AGE_S, and nothing else."""
    old = _orphan(tmp_path, "model.pt.ab12_x9z.tmp", TEMP_MAX_AGE_S + 60)
    old_other = _orphan(tmp_path, "other.pt.0000aaaa.tmp", 10 * TEMP_MAX_AGE_S)
    fresh = _orphan(tmp_path, "model.pt.qwertyui.tmp", 60)  # a save that may still be running
    foreign = [_orphan(tmp_path, n, 10 * TEMP_MAX_AGE_S) for n in ("notes.tmp", "model.pt", "x.tmp.bak", "a.b.tmp")]
    save_checkpoint(tmp_path / "new.pt", {"x": torch.arange(3)})
    assert not old.exists() and not old_other.exists()
    assert fresh.exists() and all(p.exists() for p in foreign)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["model.pt.qwertyui.tmp", "notes.tmp", "model.pt", "x.tmp.bak", "a.b.tmp", "new.pt"])
    # the helper alone, with its age threshold
    assert remove_stale_temp_files(tmp_path, max_age_s=30) == [fresh]
    assert remove_stale_temp_files(tmp_path / "does-not-exist") == []


def test_a_killed_save_leaves_a_file_that_the_next_save_removes(tmp_path, monkeypatch):
    """The orphan is the temporary file save_checkpoint itself makes (its name matches the cleaning rule)."""
    target = tmp_path / "model.pt"
    made = []
    real_mkstemp = ck.tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        made.append(Path(name))
        return fd, name

    monkeypatch.setattr(ck.tempfile, "mkstemp", mkstemp)
    save_checkpoint(target, {"x": torch.arange(3)})
    monkeypatch.undo()
    (tmp,) = made
    assert ck._TEMP_NAME.match(tmp.name) and tmp.parent == tmp_path
    orphan = _orphan(tmp_path, tmp.name, TEMP_MAX_AGE_S + 1)  # as a SIGKILL between write and rename leaves it
    save_checkpoint(target, {"x": torch.arange(4)})
    assert not orphan.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
