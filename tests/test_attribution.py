"""fig-attr: the arms are config changes of the preset, and the short-context ideal reader is exact."""
from __future__ import annotations

import pytest
import torch

from hmmlib.adapt.tasks import paper_task_and_splits
from hmmlib.experiments import attribution as att
from hmmlib.experiments.jobs import figure_specs, plan
from hmmlib.experiments.presets import get_preset
from hmmlib.experiments.repro_presets import resolve_preset
from hmmlib.hmm.generators import paper_hmm
from hmmlib.hmm.inference import masked_conditional


def test_fig_attr_is_registered_and_planned():
    assert "fig-attr" in figure_specs()
    p, g = resolve_preset("repro")
    jobs = plan("fig-attr", p, g)
    ag = att.ATTR_GRIDS["repro"]
    assert {j.num_states for j in jobs} == {10, 12, 15, 25} and {j.seed for j in jobs} == set(range(5))
    assert len(jobs) == len(ag.sizes) * ag.seeds * (3 + 2 * 4 + 2 * len(ag.ctx_lengths))
    assert all(j.model == ("ideal" if j.method.startswith("ideal") else "trained") for j in jobs)


def test_arms_change_one_thing():
    p, g = get_preset("repro"), att.ATTR_GRIDS["repro"]
    m0, t0 = att.arm_configs(p, "base", 0, g)
    ms, ts = att.arm_configs(p, "steps", 0, g)
    assert m0 == ms and ts.num_steps == t0.num_steps // 4 and ts.mlm_probability == t0.mlm_probability
    _, tm = att.arm_configs(p, "mask5", 0, g)
    assert tm.mlm_probability == 0.05 and tm.num_steps == ts.num_steps
    ml, tl = att.arm_configs(p, "long", 0, g)
    assert tl.seq_len * tl.batch_size == ts.seq_len * ts.batch_size and tl.seq_len == 4 * ts.seq_len
    assert ml.max_len >= tl.seq_len
    mb, _ = att.arm_configs(p, "big", 0, g)
    assert mb.num_layers > m0.num_layers and mb.d_model > m0.d_model
    with pytest.raises(ValueError, match="unknown trained arm"):
        att.arm_configs(p, "bigger", 0, g)
    with pytest.raises(ValueError, match="<arm>.<method>"):
        att.arm_of("head")


def test_paper_prompt_config():
    cfg = att.paper_prompt_config(att.ATTR_GRIDS["repro"], 3, 64)
    assert (cfg.prompt_len, cfg.init, cfg.lr, cfg.batch_size, cfg.seed) == (20, "tokens", 0.01, 128, 3)
    assert cfg.warmup_steps == cfg.num_steps // 8


def test_truncated_split_is_the_short_context_conditional():
    hmm = paper_hmm(6, 10, seed=0)
    _, splits, _ = paper_task_and_splits(hmm, seed=1, sizes=(50, 20, 30), seq_len=16)
    ds = splits["test"]
    for n in (1, 3):
        tr = att.truncated_split(hmm, ds, n)
        # G_n against an independent route: the masked conditional of the first n tokens
        assert torch.allclose(tr.G, masked_conditional(hmm, ds.x[:, :n]).to(tr.G.dtype), atol=1e-10)
        assert torch.equal(tr.y, ds.y) and tr.x.shape[1] == n
