"""The reproduction pipeline (hmmlib.experiments.pipeline): record schema, the plan of each preset,
idempotent and resumable runs (a run killed halfway and restarted gives the same records as an
uninterrupted one), a process pool and Ray giving the same records as one process."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

from hmmlib.experiments import pipeline  # noqa: E402
from hmmlib.experiments.jobs import EXTRA_METHODS, FIG_B1_METHODS, FIG_B3_METHODS, plan, units  # noqa: E402
from hmmlib.experiments.presets import get_preset  # noqa: E402
from hmmlib.experiments.records import (  # noqa: E402
    append_record, load_records, stable_view, validate_record,
)
from hmmlib.experiments.repro_presets import GRIDS, ReproGrid, resolve_preset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# A grid small enough for a test: one size, two seeds (two units, so a run can be killed between
# them), tiny pretraining and tuning. Built the same way in the subprocess below.
TINY = """
import dataclasses
from hmmlib.experiments.presets import get_preset
from hmmlib.experiments.repro_presets import ReproGrid
ci = get_preset("ci")
PRESET = dataclasses.replace(
    ci, name="tiny",
    pretrain=dataclasses.replace(ci.pretrain, train=dataclasses.replace(
        ci.pretrain.train, num_steps=20, eval_every=20, eval_num_seqs=16, batch_size=8)),
    tuning=dataclasses.replace(
        ci.tuning, transformer_split_sizes=(60, 40, 40), seq_len=24,
        ideal={k: c.replace(num_steps=20) for k, c in ci.tuning.ideal.items()},
        transformer={k: c.replace(num_steps=4, batch_size=16) for k, c in ci.tuning.transformer.items()}),
)
GRID = ReproGrid(fig_b1_sizes=(4,), fig_b1_seeds=2, extra_seeds=1, fig_b3_num_values=(2,), fig_b3_seeds=1,
                 ideal_sizes=(4,), ideal_seeds=1, prompt_restarts=2)
"""
_ns: dict = {}
exec(TINY, _ns)
PRESET, GRID = _ns["PRESET"], _ns["GRID"]


def _run(results, cache, **kw):
    return pipeline.run("fig-b1", PRESET, grid=GRID, results=results, cache=cache, progress=False, **kw)


def _stable(path):
    return [stable_view(r) for r in load_records(path)]


# --------------------------------------------------------------------------- records
def _record():
    return {"schema": 1, "id": "fig-b1/ci/K04/s00/head", "figure": "fig-b1", "preset": "ci", "num_states": 4,
            "seed": 0, "method": "head", "model": "trained",
            "metrics": {"test_accuracy": 0.9, "val_accuracy": 0.8, "train_accuracy": 1.0, "majority_rate": 0.6,
                        "pos0_tv": 0.1, "trainable_parameters": 11, "total_parameters": 100, "extra": {}},
            "configs": {}, "seeds": {"hmm": 0, "task": 1}, "timing": {"job_s": 1.0}, "device": "cpu", "host": "h",
            "versions": {"hmmlib": "0", "git_commit": "x", "torch": "2", "python": "3"}}


@pytest.mark.parametrize("path,value,match", [
    (("metrics", "test_accuracy"), 1.2, "<= 1.0"),
    (("metrics", "majority_rate"), 0.3, ">= 0.5"),
    (("metrics", "pos0_tv"), float("nan"), "NaN"),
    (("num_states",), "4", "integer"),
    (("figure",), "fig-b9", "one of"),
    (("metrics", "trainable_parameters"), True, "integer"),
])
def test_schema_rejects_bad_fields(path, value, match):
    rec = _record()
    validate_record(rec)
    d = rec
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value
    with pytest.raises(ValueError, match=match):
        validate_record(rec)


def test_schema_rejects_missing_fields_and_tensors():
    rec = _record()
    del rec["metrics"]["pos0_tv"]
    with pytest.raises(ValueError, match="lacks pos0_tv"):
        validate_record(rec)
    rec = _record()
    rec["configs"]["x"] = torch.ones(1)
    with pytest.raises(ValueError, match="plain JSON"):
        validate_record(rec)


def test_truncated_last_line_is_dropped_and_repaired(tmp_path):
    path = tmp_path / "r.jsonl"
    a, b = _record(), _record()
    b["id"] = "fig-b1/ci/K04/s01/head"
    append_record(path, a)
    with open(path, "a") as f:
        f.write(json.dumps(b)[:50])  # a writer killed mid-line
    assert [r["id"] for r in load_records(path)] == [a["id"]]
    with pytest.warns(UserWarning, match="incomplete last line"):
        append_record(path, b)
    assert [r["id"] for r in load_records(path)] == [a["id"], b["id"]]
    assert path.read_text().count("\n") == 2


# --------------------------------------------------------------------------- plans
def test_repro_grid_has_the_issue_s_seeds_and_sizes():
    preset, grid = resolve_preset("repro")
    jobs = plan("fig-b1", preset, grid)
    for K in (4, 8, 10, 12, 15, 25, 30):
        for m in ("head", "head_paper", "prompt", "ideal_head", "ideal_prompt"):
            assert len({j.seed for j in jobs if j.num_states == K and j.method == m}) >= 10
        for m in EXTRA_METHODS:
            assert len({j.seed for j in jobs if j.num_states == K and j.method == m}) >= 1
    b3 = plan("fig-b3", preset, grid)
    assert sorted({j.num_states for j in b3}) == [8, 12, 20, 28]
    assert all(len({j.seed for j in b3 if j.num_states == K}) >= 5 for K in (8, 12, 20, 28))
    assert len(plan("fig-b2", preset, grid)) == len(jobs)
    assert len(units(jobs)) == 70  # one pretrained model per (size, seed)
    assert preset.name == "repro" and preset.pretrain.train.num_steps > get_preset("default").pretrain.train.num_steps


def test_plan_and_preset_errors():
    preset, grid = resolve_preset("ci")
    with pytest.raises(ValueError, match="unknown figure"):
        plan("fig-b7", preset, grid)
    with pytest.raises(ValueError, match="unknown preset"):
        resolve_preset("huge")


# --------------------------------------------------------------------------- runs
@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of the tiny grid in this process."""
    base = tmp_path_factory.mktemp("ref")
    out = _run(base / "results", base / "cache")
    return base, out


def test_uninterrupted_run_writes_one_valid_record_per_job(reference):
    base, out = reference
    path = pipeline.results_path(base / "results", "tiny", "fig-b1")
    recs = load_records(path)
    expected = 2 * len(FIG_B1_METHODS) + len(EXTRA_METHODS)
    assert out["ran"] == expected == len(recs) == out["planned"]
    assert [r["id"] for r in recs] == sorted(r["id"] for r in recs)  # compacted: sorted by id
    assert all(r["versions"]["torch"] == torch.__version__ for r in recs)
    # the converged head is at least as accurate on the training split as AdamW's on the same features
    by = {(r["seed"], r["method"]): r["metrics"] for r in recs}
    for s in (0, 1):
        assert by[(s, "ideal_head")]["train_accuracy"] >= by[(s, "ideal_head_adamw")]["train_accuracy"] - 0.02


def test_rerun_is_idempotent(reference, tmp_path):
    base, _ = reference
    path = pipeline.results_path(base / "results", "tiny", "fig-b1")
    before = path.read_bytes()
    out = _run(base / "results", base / "cache")
    assert out["ran"] == 0 and out["done_before"] == out["planned"]
    assert path.read_bytes() == before


def test_killed_and_restarted_run_gives_the_same_records(reference, tmp_path):
    base, _ = reference
    results, cache = tmp_path / "results", tmp_path / "cache"
    path = pipeline.results_path(results, "tiny", "fig-b1")
    code = TINY + (f"\nfrom hmmlib.experiments import pipeline\n"
                   f"pipeline.run('fig-b1', PRESET, grid=GRID, results={str(results)!r}, cache={str(cache)!r}, "
                   f"progress=False)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and not (path.exists() and path.read_text().count("\n") >= 1):
            time.sleep(0.05)
            assert proc.poll() is None, "the run finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # killed after its first unit
    finally:
        proc.wait()
    first = load_records(path)
    assert 0 < len(first) < 2 * len(FIG_B1_METHODS) + len(EXTRA_METHODS)
    with open(path, "a") as f:
        f.write('{"schema": 1, "id": "fig-b1/ci/K04/s01/he')  # as if killed mid-write
    with pytest.warns(UserWarning, match="incomplete last line"):
        out = _run(results, cache)
    assert out["done_before"] == len(first)
    assert _stable(path) == _stable(pipeline.results_path(base / "results", "tiny", "fig-b1"))


def test_process_pool_gives_the_same_records(reference, tmp_path):
    base, _ = reference
    out = _run(tmp_path / "results", base / "cache", workers=2)
    assert out["ran"] == out["planned"]
    assert (_stable(pipeline.results_path(tmp_path / "results", "tiny", "fig-b1"))
            == _stable(pipeline.results_path(base / "results", "tiny", "fig-b1")))


@pytest.mark.ray
@pytest.mark.skipif(os.environ.get("HMMBOOK_TEST_RAY") != "1",
                    reason="opt-in (HMMBOOK_TEST_RAY=1; `make test-ray` installs Ray and runs it, as CI does)")
def test_ray_gives_the_same_records(reference, tmp_path):
    ray = pytest.importorskip("ray")
    base, _ = reference
    try:  # a local Ray instance can fail to start on an overloaded machine (its raylet gives up after ~40 s)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as e:  # noqa: BLE001 - any start-up failure is the environment's, not the pipeline's
        pytest.skip(f"Ray could not start a local instance here: {type(e).__name__}: {e}")
    try:
        out = _run(tmp_path / "results", base / "cache", workers=2, ray="auto")
    finally:
        ray.shutdown()
    assert out["ran"] == out["planned"]
    assert (_stable(pipeline.results_path(tmp_path / "results", "tiny", "fig-b1"))
            == _stable(pipeline.results_path(base / "results", "tiny", "fig-b1")))


def test_dry_run_prints_the_plan_and_an_estimate(reference, capsys):
    from hmmlib.experiments.reproduce import main

    base, _ = reference
    assert main(["fig-b1", "--preset", "ci", "--dry-run", "--workers", "2", "--results", str(base / "results")]) == 0
    text = capsys.readouterr().out
    assert "fig-b1 at preset 'ci'" in text and "hours" in text and "ms per pretraining step" in text
    est = pipeline.estimate("fig-b1", "ci", results=base / "results", step_times=(0.01, 0.02))
    # the whole ci grid: 2 sizes x 2 seeds, one pretraining each; none of its jobs is in this results folder
    assert est.pretrainings == 4 and est.done == 0 and est.seconds > 4 * get_preset("ci").pretrain.train.num_steps * 0.01


def test_records_at_fills_missing_jobs_without_touching_the_committed_file(reference, tmp_path, monkeypatch):
    from hmmlib.experiments.reproduction import records_at

    base, _ = reference
    full = load_records(pipeline.results_path(base / "results", "tiny", "fig-b1"))
    path = pipeline.results_path(tmp_path, "tiny", "fig-b1")
    path.parent.mkdir(parents=True)
    for r in full[: len(full) // 2]:  # a partial set, as if a run had been stopped
        append_record(path, r)
    before = path.read_bytes()
    # a grid larger than ci is not run unasked: the error names the file and the command that makes it
    monkeypatch.delenv("HMMBOOK_RUN_MISSING", raising=False)
    with pytest.raises(ValueError, match=r"job\(s\) of fig-b1 at the 'tiny' preset have no record.*reproduce fig-b1"):
        records_at("fig-b1", PRESET, tmp_path, grid=GRID)
    assert path.read_bytes() == before
    monkeypatch.setenv("HMMBOOK_RUN_MISSING", "1")
    got = records_at("fig-b1", PRESET, tmp_path, grid=GRID)
    assert path.read_bytes() == before
    assert [stable_view(r) for r in got] == [stable_view(r) for r in full]


def test_units_go_seed_by_seed_so_a_stopped_run_covers_every_size():
    p, g = resolve_preset("repro")
    order = units(plan("all", p, g))
    first_b1 = [u for u in order if u.figure == "fig-b1"][: len(g.fig_b1_sizes)]
    assert sorted(u.num_states for u in first_b1) == sorted(g.fig_b1_sizes) and {u.seed for u in first_b1} == {0}
    assert all(u.figure == "ideal" for u in order[-len(g.ideal_sizes) * g.ideal_seeds:])
    seeds = [u.seed for u in order if u.figure != "ideal"]
    assert seeds == sorted(seeds)
