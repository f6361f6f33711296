"""Peak-memory evaluation (alloc/peak.py, ``evaluate.py eval.mode=peak``): whole traces, measured at their peak."""

import json
import math

import numpy as np
import pytest
import torch
from test_harness import cfg_of

from dreamalloc.alloc.env import AllocCore
from dreamalloc.alloc.heap import RULES
from dreamalloc.alloc.peak import peak_evaluation, peak_setup, replay_peak
from dreamalloc.alloc.workloads.traces import peak_live, read_trace, resolve_trace, write_trace
from dreamalloc.experiment.cli import evaluate_main, register_configs  # noqa: F401  (registers the schemas)

# cells at 16 B/cell: a0 = 4, a1 = 2, free a0, a2 = 3, a3 = 1 (see test_hand_worked_trace)
HAND = [(0, 0, 64), (0, 1, 32), (1, 0, 0), (0, 2, 48), (0, 3, 16)]


def replay(path, cells, rule, granularity=16):
    """Every rule's replay, stepping together (one heap each); ``rule``'s row."""
    setup = peak_setup(str(path), granularity, cells=cells, headroom=1.0)
    cfg = setup.env_config(heuristics=RULES, bitmap=False)
    every = torch.arange(len(RULES))
    return dict(zip(RULES, replay_peak(AllocCore(len(RULES), cfg), lambda obs, info: every), strict=True))[rule]


def test_rules_replayed_together_equal_each_replayed_alone():
    setup = peak_setup("sqlite_join", max_cells=4096)
    cfg = setup.env_config(heuristics=RULES, bitmap=False, max_allocs=1000)  # the first 1,000 allocations
    every = torch.arange(len(RULES))
    together = replay_peak(AllocCore(len(RULES), cfg), lambda obs, info: every)
    keys = ("extent_over_live", "frag_at_peak", "failures", "peak_live", "peak_extent", "decisions", "complete")
    for i, rule in enumerate(RULES):
        alone = replay_peak(AllocCore(1, cfg), lambda obs, info, i=i: torch.tensor([i]))[0]
        assert {k: together[i][k] for k in keys} == {k: alone[k] for k in keys}, rule
    assert len({r["peak_extent"] for r in together}) > 1  # the rules differ on this trace


def test_hand_worked_trace(tmp_path):
    path = write_trace(tmp_path / "hand.trace", HAND)
    # first fit: a0 [0, 4), a1 [4, 6), a0 freed, a2 [0, 3), a3 [3, 4): extent 6, live peaks at 6
    r = replay(path, 16, "first")
    assert (r["peak_live"], r["peak_extent"], r["failures"], r["decisions"], r["complete"]) == (6, 6, 0, 4, True)
    assert r["extent_over_live"] == 1.0 and r["frag_at_peak"] == 0.0
    # worst fit: a0 [0, 4), a1 [4, 6), a2 in the largest run [6, 16) -> [6, 9), a3 in [9, 16) -> [9, 10)
    r = replay(path, 16, "worst")
    assert (r["peak_live"], r["peak_extent"], r["failures"]) == (6, 10, 0)
    assert r["extent_over_live"] == pytest.approx(10 / 6)
    assert r["frag_at_peak"] == pytest.approx(1 - 6 / 10)  # live is 6 again after a3, when the extent is 10
    assert r["decision_us"] > 0 and r["policy_us"] <= r["decision_us_p99"]


def test_a_heap_too_small_counts_failures_and_goes_on(tmp_path):
    # 5 cells: a0 [0, 4); a1 (2 cells) fits nowhere: dropped; a0 freed; a2 [0, 3); a3 [3, 4)
    path = write_trace(tmp_path / "hand.trace", HAND)
    r = replay(path, 5, "first")
    assert (r["failures"], r["decisions"], r["complete"], r["peak_live"], r["peak_extent"]) == (1, 3, True, 4, 4)


def test_peak_live_counts_whole_cells():
    ev = np.array(HAND)
    assert peak_live(ev, 16) == 6
    assert peak_live(ev, 64) == 3  # every block is one cell at 64 B/cell: a1, a2, a3 live at the end
    assert peak_live(ev) == 96  # bytes: a0 + a1 (64 + 32), and a1 + a2 + a3 (32 + 48 + 16) at the end


def test_setup_sizes_the_heap_from_the_trace():
    s = peak_setup("sqlite_insert", max_cells=4096)
    ev = read_trace(resolve_trace("sqlite_insert"))
    assert s.granularity >= 16 and s.granularity & (s.granularity - 1) == 0  # a power of two
    assert s.peak_live == peak_live(ev, s.granularity)
    assert s.cells == math.ceil(2.0 * s.peak_live) <= 4096
    assert peak_live(ev, s.granularity // 2) * 2 > 4096  # the smallest granularity that fits
    assert s.allocations == int((ev[:, 0] == 0).sum()) and s.largest <= s.cells
    assert peak_setup("sqlite_insert", granularity=64, cells=20000).cells == 20000


@pytest.mark.parametrize("kw,match", [
    (dict(headroom=0.5), "headroom"), (dict(granularity=0), "granularity"), (dict(granularity="fine"), "granularity"),
    (dict(cells=1), "cells"), (dict(cells=256), "blocks are live at once"),
    (dict(granularity=16, cells=100), "largest block")])
def test_bad_setups_are_clear_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        peak_setup("sort_gpl", **kw)


def test_rules_and_agent_on_the_same_heap():
    """An agent that plays best fit (in the hole space, by its mask) gets exactly best fit's row; the bound is 1."""
    from dreamalloc.alloc.env import AllocConfig

    base = AllocConfig(cells=256, stream="trace", action="hole", holes=4, bitmap=False, summary=True,
                       hole_features=4).validate()

    def make_policy(core):
        def smallest_fitting_hole(obs, info):
            lengths = obs[:, -4 * 2 + 1::2]  # the hole features: (start, length) of the first 4 fitting runs
            masked = torch.where(info["action_mask"], lengths, torch.inf)
            return masked.argmin(1)
        return smallest_fitting_hole

    out = peak_evaluation(base, make_policy, method="hole agent", traces=["sort_gpl"], max_cells=2048)
    rows = {r["method"]: r for r in out["rows"]}
    assert list(rows) == ["hole agent", *RULES, "capacity bound"]
    assert all(r["cells"] == out["traces"]["sort_gpl"]["cells"] for r in rows.values())
    assert rows["capacity bound"]["extent_over_live"] == 1.0
    for r in RULES:
        assert rows[r]["complete"] and rows[r]["extent_over_live"] >= 1.0 and rows[r]["peak_live"] <= \
            rows[r]["peak_extent"]
    agent = rows["hole agent"]
    assert agent["invalid"] == 0 and agent["complete"]
    # best fit among the first 4 fitting holes is best fit whenever at most 4 holes fit; here it matches
    assert (agent["peak_extent"], agent["failures"]) == (rows["best"]["peak_extent"], rows["best"]["failures"])


def test_evaluate_py_peak_mode_writes_the_table(tmp_path):
    cfg = cfg_of(["agent=heuristic", "agent.rule=worst", "env.bitmap=false", "eval.mode=peak", "logger=disabled",
                  "+eval.mode_params.traces=[sort_gpl]", "+eval.mode_params.max_cells=2048"], tmp_path)
    evaluate_main(cfg)
    doc = json.loads((tmp_path / "run" / "eval" / "peak.json").read_text())
    assert doc["mode"] == "peak" and doc["method"].startswith("heuristic")
    rows = {r["method"]: r for r in doc["rows"]}
    agent = rows[doc["method"]]
    for k in ("extent_over_live", "failures", "peak_extent"):  # the agent plays worst fit: worst fit's numbers
        assert agent[k] == rows["worst"][k]
    table = (tmp_path / "run" / "eval" / "peak.md").read_text()
    assert "extent_over_live" in table and "capacity bound" in table
    assert (tmp_path / "run" / "eval" / "peak.csv").exists()


@pytest.mark.parametrize("override,match", [("eval.mode=flat", "eval.mode"),
                                            ("+eval.mode_params.trace=[sort_gpl]", "unknown key")])
def test_bad_mode_options_are_clear_errors(tmp_path, override, match, capsys):
    cfg = cfg_of(["agent=heuristic", "env.bitmap=false", "eval.mode=peak", "logger=disabled", override], tmp_path)
    with pytest.raises(SystemExit):
        evaluate_main(cfg)
    assert match in capsys.readouterr().err


def _doc(label, agent_extent, worst_extent=10, cells=16):
    row = dict(trace="hand", cells=cells, granularity=16, frag_at_peak=0.0, decision_us=5.0, policy_us=1.0)
    return {"mode": "peak", "label": label, "rows": [
        {**row, "method": label, "extent_over_live": agent_extent / 6, "peak_extent": agent_extent, "failures": 0},
        {**row, "method": "worst", "extent_over_live": worst_extent / 6, "peak_extent": worst_extent, "failures": 0},
        {**row, "method": "capacity bound", "extent_over_live": 1.0, "peak_extent": 6, "failures": 0}]}


def test_peak_table_merges_seeds_and_keeps_rules_once(tmp_path):
    from dreamalloc.report.tables import peak_rows

    rows = peak_rows([_doc("ppo", 6), _doc("ppo", 8), _doc("dqn", 7)])
    by = {r["method"]: r for r in rows}
    assert [r["method"] for r in rows][:2] == ["ppo", "dqn"] and set(by) == {"ppo", "dqn", "worst", "capacity bound"}
    m, lo, hi = by["ppo"]["extent_over_live"]
    assert by["ppo"]["seeds"] == 2 and m == pytest.approx(7 / 6) and lo < m < hi
    assert by["dqn"]["extent_over_live"] == pytest.approx(7 / 6) and by["worst"]["extent_over_live"] == 10 / 6
    with pytest.raises(ValueError, match="differs between peak documents"):
        peak_rows([_doc("ppo", 6), _doc("dqn", 6, worst_extent=9, cells=17)])


def test_peak_table_script(tmp_path, capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import peak_table

    assert peak_table.main([str(tmp_path)]) == 2
    assert "no peak.json" in capsys.readouterr().err
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "peak.json").write_text("{not json")
    assert peak_table.main([str(tmp_path)]) == 2
    assert "not JSON" in capsys.readouterr().err
    doc = _doc("ppo", 6)
    for r in doc["rows"]:
        r["trace"] = "sort_gpl"
    (tmp_path / "a" / "peak.json").write_text(json.dumps(doc))
    out = tmp_path / "t.md"
    assert peak_table.main([str(tmp_path), "--out", str(out)]) == 0
    text = out.read_text()
    assert "| sort_gpl" in text and "capacity bound" in text and "peak live KiB" in text
    assert " 2248 |" in text  # sort_gpl's peak live bytes, 2,301,708 B = 2,247.8 KiB (no decimals in the table)


def test_train_py_refuses_an_evaluation_mode(tmp_path):
    from dreamalloc.experiment.training import train

    cfg = cfg_of(["agent=heuristic", "env.bitmap=false", "eval.mode=peak", "logger=disabled", "steps=64"], tmp_path)
    with pytest.raises(ValueError, match="evaluate.py mode"):
        train(cfg, overrides=[])
