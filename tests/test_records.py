"""Record files that cannot lose, hide or mix up records, provenance in every record, the stable
closed-form head, and ``reproduce verify`` (hmmlib.experiments.records / pipeline / reproduce).

Each test named after a probe of the review (R4, K6-K9, E3, E7, E10, E12) fails on the behaviour of
commit aadd076, where that case was silently accepted or resolved."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

from hmmlib.adapt.tasks import paper_task_and_splits, sub_seed  # noqa: E402
from hmmlib.adapt.theory import closed_form_head, closed_form_solve  # noqa: E402
from hmmlib.experiments import pipeline, records  # noqa: E402
from hmmlib.experiments.presets import get_preset  # noqa: E402
from hmmlib.experiments.records import (  # noqa: E402
    RecordsBusyError, append_record, compact, config_digest, load_records, locked, write_records,
)
from hmmlib.experiments.repro_presets import ReproGrid  # noqa: E402
from hmmlib.experiments.reproduce import main  # noqa: E402
from hmmlib.hmm.generators import paper_hmm  # noqa: E402

_ci = get_preset("ci")
#: The ideal sweep at one size and seed with short AdamW runs: 4 records in a few seconds, no pretraining.
PRESET = dataclasses.replace(
    _ci, name="tiny", tuning=dataclasses.replace(
        _ci.tuning, split_sizes=(60, 40, 40), seq_len=16,
        ideal={k: c.replace(num_steps=10) for k, c in _ci.tuning.ideal.items()}))
GRID = ReproGrid(fig_b1_sizes=(4,), fig_b1_seeds=1, extra_seeds=0, fig_b3_num_values=(2,), fig_b3_seeds=1,
                 ideal_sizes=(10,), ideal_seeds=1, prompt_restarts=1)


def _run(results, **kw):
    return pipeline.run("ideal", PRESET, grid=GRID, results=results, progress=False, **kw)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny ideal grid run once: (results folder, its record file, the records)."""
    base = tmp_path_factory.mktemp("tiny")
    _run(base)
    path = pipeline.results_path(base, "tiny", "ideal")
    return base, path, load_records(path)


def _copy(tiny, tmp_path) -> Path:
    path = pipeline.results_path(tmp_path, "tiny", "ideal")
    path.parent.mkdir(parents=True)
    path.write_bytes(tiny[1].read_bytes())
    return path


def _line(rec: dict) -> str:
    return json.dumps(rec, sort_keys=True) + "\n"


# --------------------------------------------------------------------------- R4: the closed-form head
def test_R4_closed_form_head_does_not_depend_on_rounding():
    """W of paper_hmm(10, 10, seed=1) has condition number 1.5e12: the plain pseudo-inverse's accuracy
    moves with perturbations of 1e-15 (0.80 to 1.00 on aadd076); the cut-off's does not."""
    hmm = paper_hmm(10, 10, seed=1)
    sz = _ci.tuning
    task, splits, _ = paper_task_and_splits(hmm, seed=sub_seed(1, 10), sizes=sz.split_sizes, seq_len=sz.seq_len)
    ds = splits["test"]
    g = torch.Generator().manual_seed(0)
    accs, plain = set(), set()
    for _ in range(6):
        W = hmm.W * (1 + 1e-15 * torch.randn(hmm.W.shape, generator=g, dtype=torch.float64))
        G = ds.G * (1 + 1e-15 * torch.randn(ds.G.shape, generator=g, dtype=torch.float64))
        accs.add(float(((G @ closed_form_head(W, task.mu) >= 0).long() == ds.y).double().mean()))
        plain.add(float(((G @ (torch.linalg.pinv(W).T @ task.mu) >= 0).long() == ds.y).double().mean()))
    assert len(accs) == 1 and len(plain) > 1
    cf = closed_form_solve(hmm.W, task.mu)
    assert (cf.rank, cf.dropped) == (8, 2) and cf.condition_number > 1e11 and 0 < cf.residual < 1
    # the cut-off changes nothing on a well-conditioned W: the exact pseudo-inverse
    W = torch.rand(10, 6, generator=g, dtype=torch.float64)
    mu = torch.randn(6, generator=g, dtype=torch.float64)
    assert torch.allclose(closed_form_head(W, mu), torch.linalg.pinv(W).T @ mu, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="rtol"):
        closed_form_solve(W, mu, rtol=2.0)


def test_closed_form_ties_count_as_class_one():
    """A posterior with no mass on the task's support has margin mu'p = 0 (label 1) and b'G equal to rounding
    noise of either sign: it counts as class 1 (ideal/default/K04/s04 went from 1.0 to 0.737 without this)."""
    from types import SimpleNamespace

    from hmmlib.experiments.runners import closed_form_accuracy

    W = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]], dtype=torch.float64)
    mu = torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64)
    G = (W @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)).repeat(4, 1)
    G += torch.tensor([[1e-16, -1e-16, 0.0], [-1e-16, 1e-16, 0.0], [0.0, 0.0, 0.0], [2e-16, -2e-16, 0.0]],
                      dtype=torch.float64)
    ds = SimpleNamespace(G=G, y=torch.ones(4, dtype=torch.long))
    b = closed_form_head(W, mu)
    assert ((G @ b >= 0).long() == 1).sum() < 4  # the bare sign test is rounding noise here
    assert closed_form_accuracy(SimpleNamespace(W=W), SimpleNamespace(mu=mu), ds) == 1.0


def test_R4_closed_form_record_says_what_was_dropped(tiny):
    rec = next(r for r in tiny[2] if r["method"] == "closed_form")  # K = 10, seed 0: one singular value 8e-11
    extra = rec["metrics"]["extra"]
    assert extra["dropped"] == 1 and extra["rank"] == 9 and extra["rtol"] == 1e-8
    assert extra["condition_number"] > 1e9 and "ill-conditioned" in extra["note"]


# --------------------------------------------------------------------------- provenance (E7)
def test_records_carry_provenance(tiny):
    for r in tiny[2]:
        v = r["versions"]
        assert v["torch_threads"] == 1 and isinstance(v["git_clean"], (bool, type(None)))
        assert v["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and v["numpy"]
        assert r["config_sha256"] == config_digest(r) and r["device"] == "cpu"
    changed = dict(tiny[2][0], configs={**tiny[2][0]["configs"], "seq_len": 17})
    assert config_digest(changed) != config_digest(tiny[2][0])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_E7_cuda_without_a_gpu_is_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="--device cpu"):
        _run(tmp_path, device="cuda")
    assert not any(tmp_path.rglob("*.jsonl"))
    assert main(["ideal", "--preset", "ci", "--results", str(tmp_path), "--device", "cuda", "--workers", "1"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_E6_cuda_from_the_environment_is_refused_in_a_dry_run(tmp_path, monkeypatch, capsys):
    from hmmlib.lm.device import default_device

    monkeypatch.setenv("HMMBOOK_DEVICE", "cuda")
    default_device.cache_clear()
    try:
        assert main(["ideal", "--preset", "ci", "--results", str(tmp_path), "--dry-run"]) == 2
    finally:
        monkeypatch.undo()
        default_device.cache_clear()
    assert "HMMBOOK_DEVICE=cpu" in capsys.readouterr().err


def test_dirty_tree_is_refused_for_repro_records(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "DEFAULT_RESULTS", tmp_path)
    monkeypatch.setattr(pipeline, "git_state", lambda: ("abc", False, ("hmmlib/x.py",)))
    repro = dataclasses.replace(PRESET, name="repro")
    with pytest.raises(ValueError, match="--force-dirty"):
        pipeline.run("ideal", repro, grid=GRID, results=tmp_path, max_units=0, progress=False)
    out = pipeline.run("ideal", repro, grid=GRID, results=tmp_path, max_units=0, progress=False, force_dirty=True)
    assert out["ran"] == 0
    pipeline.run("ideal", repro, grid=GRID, results=tmp_path / "elsewhere", max_units=0, progress=False)  # not results/


# --------------------------------------------------------------------------- record files (K6-K9)
def test_K9_complete_last_record_without_newline_is_kept(tiny, tmp_path):
    path = _copy(tiny, tmp_path)
    path.write_bytes(path.read_bytes()[:-1])  # the last record lacks only its newline
    assert len(load_records(path)) == len(tiny[2])
    out = _run(tmp_path)  # nothing to do: the record is there, not "incomplete"
    assert out["ran"] == 0 and out["done_before"] == len(tiny[2])
    append_record(path, tiny[2][0] | {"id": tiny[2][0]["id"].replace("s00", "s01"), "seed": 1})
    assert len(path.read_text().splitlines()) == len(tiny[2]) + 1
    assert [json.loads(x)["id"] for x in path.read_text().splitlines()[:-1]] == [r["id"] for r in tiny[2]]


def test_K6_record_of_another_figure_in_a_file_is_refused(tiny, tmp_path):
    path = _copy(tiny, tmp_path)
    other = dict(tiny[2][0], figure="fig-b1", id=tiny[2][0]["id"].replace("ideal/", "fig-b1/"))
    with open(path, "a") as f:
        f.write(_line(other))
    n = len(tiny[2]) + 1
    with pytest.raises(ValueError, match=rf"ideal.jsonl, line {n}: .* has figure 'fig-b1'"):
        load_records(path)
    with pytest.raises(ValueError, match=f"line {n}"):
        _run(tmp_path)


def test_K7_record_moved_to_another_figures_file_is_not_done(tiny, tmp_path):
    path = _copy(tiny, tmp_path)
    moved = path.read_text().splitlines(keepends=True)
    path.write_text("".join(moved[1:]))
    b1 = pipeline.results_path(tmp_path, "tiny", "fig-b1")
    b1.write_text(moved[0])
    from hmmlib.experiments.jobs import plan
    jobs = plan("ideal", PRESET, GRID)
    with pytest.raises(ValueError, match="fig-b1.jsonl, line 1: .* has figure 'ideal'"):
        pipeline.status(jobs + plan("fig-b1", PRESET, GRID), tmp_path)
    done, pending = pipeline.status(jobs, tmp_path)  # per file: the moved job is pending in its own file
    assert [j.id for j in pending] == [json.loads(moved[0])["id"]] and len(done) == len(jobs) - 1


def test_K8_conflicting_duplicates_are_an_error_naming_both_lines(tiny, tmp_path):
    path = _copy(tiny, tmp_path)
    n = len(tiny[2])
    with open(path, "a") as f:
        f.write(_line(tiny[2][1]))  # an identical copy: read once
    assert len(load_records(path)) == n
    tampered = json.loads(json.dumps(tiny[2][1]))
    tampered["metrics"]["test_accuracy"] = 0.999
    for where in ("append", "prepend"):
        path.write_bytes(tiny[1].read_bytes())
        text = path.read_text()
        path.write_text(text + _line(tampered) if where == "append" else _line(tampered) + text)
        a, b = (2, n + 1) if where == "append" else (1, 3)
        with pytest.raises(ValueError, match=f"lines {a} and {b} are two different records"):
            load_records(path)
        with pytest.raises(ValueError, match="two different records"):
            compact(path)


def test_blank_line_and_interrupted_write(tiny, tmp_path):
    path = _copy(tiny, tmp_path)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + "\n" + "".join(lines[1:]))
    with pytest.raises(ValueError, match="line 2, is blank"):
        load_records(path)
    path.write_text("".join(lines) + lines[0][:40])  # a writer killed mid-line: not JSON
    assert len(load_records(path)) == len(lines)
    with pytest.warns(UserWarning, match="incomplete last line"):
        append_record(path, json.loads(lines[0]))
    assert path.read_text().count("\n") == len(lines) + 1


def test_rewrites_are_atomic_with_unique_temporary_files(tiny, tmp_path, monkeypatch):
    path = _copy(tiny, tmp_path)
    before = path.read_bytes()

    def killed(src, dst):
        raise OSError("killed before the rename")

    monkeypatch.setattr(records.os, "replace", killed)
    with pytest.raises(OSError):
        write_records(path, tiny[2])
    monkeypatch.undo()
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["ideal.jsonl"]
    write_records(path, list(reversed(tiny[2])))
    assert path.read_bytes() == before


def test_second_writer_is_refused(tiny, tmp_path):
    path = _copy(tiny, tmp_path)
    with locked(path):
        with pytest.raises(RecordsBusyError, match="another pipeline"):
            _run(tmp_path)
        with pytest.raises(RecordsBusyError):
            with locked(path):
                pass
    assert _run(tmp_path)["ran"] == 0  # released


def test_rerun_replaces_records_explicitly(tiny, tmp_path):
    path = _copy(tiny, tmp_path)
    out = _run(tmp_path, rerun=lambda j: j.method == "closed_form")
    assert out["replaced"] == [r["id"] for r in tiny[2] if r["method"] == "closed_form"] and out["ran"] == 1
    assert [r["id"] for r in load_records(path)] == [r["id"] for r in tiny[2]]


def test_old_records_stay_loadable():
    root = Path(__file__).resolve().parents[1] / "results"
    for path in sorted(root.glob("*/*.jsonl")):
        assert load_records(path)  # schema 1, with or without the optional provenance fields


# --------------------------------------------------------------------------- bad input (E3, E10, E12)
def test_E10_negative_max_units_is_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="max_units"):
        _run(tmp_path, max_units=-1)
    assert main(["ideal", "--preset", "ci", "--results", str(tmp_path), "--max-units", "-1", "--workers", "1"]) == 2
    assert "max_units" in capsys.readouterr().err and not any(tmp_path.rglob("*.jsonl"))


def test_E12_results_that_is_a_file_is_refused(tmp_path, capsys):
    f = tmp_path / "results.txt"
    f.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        _run(f)
    assert main(["ideal", "--preset", "ci", "--results", str(f), "--workers", "1"]) == 2
    assert "must be a folder" in capsys.readouterr().err


def test_E3_bad_preset_environment_variable_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HMMBOOK_PRESET", "garbage")
    with pytest.raises(SystemExit) as e:
        main(["ideal", "--results", str(tmp_path), "--dry-run"])
    assert e.value.code == 2 and "HMMBOOK_PRESET='garbage'" in capsys.readouterr().err


# --------------------------------------------------------------------------- verify
def test_verify_passes_on_untouched_records_and_finds_a_tampered_metric(tiny, tmp_path, capsys):
    assert pipeline.verify("ideal", PRESET, grid=GRID, results=tiny[0]) == []
    path = _copy(tiny, tmp_path)
    recs = load_records(path)
    recs[2]["metrics"]["test_accuracy"] = 0.5 if recs[2]["metrics"]["test_accuracy"] != 0.5 else 0.6
    recs[3]["configs"]["seq_len"] = 99
    write_records(path, recs)
    bad = pipeline.verify("ideal", PRESET, grid=GRID, results=tmp_path)
    assert {(m.id, m.field) for m in bad} == {(recs[2]["id"], "metrics.test_accuracy"), (recs[3]["id"], "config_sha256")}
    assert next(m for m in bad if m.field == "metrics.test_accuracy").committed in (0.5, 0.6)
    one = pipeline.verify("ideal", PRESET, grid=GRID, results=tmp_path, jobs=1, sample_seed=3)
    assert len({m.id for m in one}) <= 2
    assert pipeline.verify("ideal", PRESET, grid=GRID, results=tmp_path, ids=[recs[0]["id"]]) == []
    with pytest.raises(ValueError, match="no committed record has id"):
        pipeline.verify("ideal", PRESET, grid=GRID, results=tmp_path, ids=["ideal/tiny/K99/s00/x"])
    table = pipeline.format_mismatches(bad)
    assert "committed" in table.splitlines()[0] and recs[2]["id"] in table


def test_verify_cli_exit_status(tmp_path, capsys):
    """The CLI on the committed ci records of one job (the closed-form head at K = 10, seed 1: R4)."""
    root = Path(__file__).resolve().parents[1] / "results"
    rid = "ideal/ci/K10/s01/closed_form"
    assert main(["verify", "ideal", "--preset", "ci", "--results", str(root), "--ids", rid]) == 0
    assert "0 mismatch" in capsys.readouterr().out
    path = pipeline.results_path(tmp_path, "ci", "ideal")
    path.parent.mkdir(parents=True)
    recs = [r for r in load_records(pipeline.results_path(root, "ci", "ideal")) if r["id"] == rid]
    recs[0]["metrics"]["train_accuracy"] = 0.123
    write_records(path, recs)
    assert main(["verify", "ideal", "--preset", "ci", "--results", str(tmp_path), "--ids", rid]) == 1
    out = capsys.readouterr().out
    assert "metrics.train_accuracy" in out and "0.123" in out
