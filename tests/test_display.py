"""hmmlib.display.glue works with and without myst-nb."""
from __future__ import annotations

import builtins
import importlib
import sys

import hmmlib.display


def test_glue_uses_myst_nb_when_installed(monkeypatch):
    calls = []
    monkeypatch.setattr(hmmlib.display, "_myst_glue", lambda n, v, display=True: calls.append((n, v, display)))
    hmmlib.display.glue("x", 1.5, display=False)
    assert calls == [("x", 1.5, False)]


def test_glue_without_myst_nb(monkeypatch, capsys):
    real_import = builtins.__import__

    def no_myst(name, *args, **kwargs):
        if name == "myst_nb" or name.startswith("myst_nb."):
            raise ImportError("no myst_nb here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_myst)
    monkeypatch.delitem(sys.modules, "myst_nb", raising=False)
    try:
        mod = importlib.reload(hmmlib.display)
        assert not mod.HAVE_MYST_NB
        mod.glue("hidden", 3, display=False)
        assert capsys.readouterr().out == ""
        mod.glue("shown", 42)
        assert "42" in capsys.readouterr().out
    finally:
        monkeypatch.setattr(builtins, "__import__", real_import)
        importlib.reload(hmmlib.display)


def test_progress_bar_respects_tqdm_disable_even_in_notebooks(monkeypatch):
    """tqdm's notebook bar overrides TQDM_DISABLE with disable=False; progress_bar must not."""
    import tqdm.auto
    import tqdm.notebook

    monkeypatch.setattr(tqdm.auto, "tqdm", tqdm.notebook.tqdm)   # what tqdm.auto is inside Jupyter
    monkeypatch.setenv("TQDM_DISABLE", "1")
    # the bug this guards against: tqdm's own notebook bar ignores the variable
    assert not tqdm.notebook.tqdm(total=3, display=False).disable
    assert hmmlib.display.progress_bar(3, enabled=True, desc="x") is None
    for off in ("", "0", "false", "No"):
        monkeypatch.setenv("TQDM_DISABLE", off)
        assert not hmmlib.display.progress_disabled()
    monkeypatch.setenv("TQDM_DISABLE", "0")
    monkeypatch.setattr(tqdm.auto, "tqdm", tqdm.std.tqdm)
    bar = hmmlib.display.progress_bar(3, enabled=True, desc="x", disable=False)
    assert bar is not None and bar.total == 3
    bar.close()
    assert hmmlib.display.progress_bar(3, enabled=False) is None


def test_pretraining_in_a_kernel_shows_no_widget_when_disabled(tmp_path):
    """As in the website build: a notebook that pretrains with progress=True, run with TQDM_DISABLE=1 by a
    Jupyter kernel (where tqdm.auto is the ipywidgets bar), has no widget output."""
    import os

    import nbformat
    from nbclient import NotebookClient

    code = ("from hmmlib.hmm.generators import paper_hmm\n"
            "from hmmlib.lm.pretrain import pretrain, TrainConfig\n"
            "from hmmlib.lm.transformer import TransformerConfig\n"
            "hmm = paper_hmm(4, 10, seed=0)\n"
            "cfg = TransformerConfig(num_symbols=10, d_model=8, num_heads=2, num_layers=1, max_len=16)\n"
            "tcfg = TrainConfig(num_steps=3, batch_size=4, seq_len=8, warmup_steps=1, eval_every=3, eval_num_seqs=4)\n"
            "r = pretrain(hmm, cfg, tcfg, progress=True)\n"
            "print('steps', r.step)")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    old = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        if old is None:
            del os.environ["TQDM_DISABLE"]
        else:
            os.environ["TQDM_DISABLE"] = old
    outputs = nb.cells[0].outputs
    assert any("steps 3" in o.get("text", "") for o in outputs), outputs
    assert not [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})], outputs
