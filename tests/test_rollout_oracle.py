"""scripts/rollout_oracle.py: the one-step lookahead over the visible holes with best fit after."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from script_module import load_script

from dreamalloc.alloc import AllocCore
from dreamalloc.alloc.env import AllocConfig
from dreamalloc.core.spec import ACTION_MASK

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "rollout_oracle.py"


def _script():
    return load_script("rollout_oracle")


def _env(hole_order="size", **kw):
    params = {"size_units": "fraction", "size_min": 0.004, "size_max": 0.05, "lifetime": "exponential",
              "life": 40, **kw}
    return AllocConfig(cells=256, stream="pattern", stream_params=params, action="hole", holes=8,
                       hole_order=hole_order, bitmap=False, summary=True, hole_features=8, size_scale="fraction")


def test_a_tiled_state_replays_the_source_row_exactly_in_every_row():
    oracle = _script()
    env = _env()
    src, sim = AllocCore(1, env), AllocCore(4, env)
    _, info = src.reset(seed=3)
    g = torch.Generator().manual_seed(0)
    for _ in range(30):  # somewhere inside an episode, the heap part full
        valid = info[ACTION_MASK][0].nonzero().flatten()
        _, _, _, _, info = src.step(valid[torch.randint(len(valid), (1,), generator=g)])
    sim.load_state_dict(oracle.tile_state(src.state_dict(), sim.state_dict()))
    for _ in range(40):
        o1, r1, t1, u1, _ = src.step(torch.zeros(1, dtype=torch.long))
        o4, r4, t4, u4, _ = sim.step(torch.zeros(4, dtype=torch.long))
        assert torch.equal(o4, o1.expand_as(o4)) and torch.equal(r4, r1.expand_as(r4))
        assert torch.equal(t4, t1.expand_as(t4)) and torch.equal(u4, u1.expand_as(u4))


def test_tile_state_refuses_a_state_it_cannot_spread():
    oracle = _script()
    with pytest.raises(ValueError, match="shape"):
        oracle.tile_state({"a": torch.zeros(2, 3)}, {"a": torch.zeros(4, 3)})
    with pytest.raises(ValueError, match="keys differ"):
        oracle.tile_state({"a": torch.zeros(1)}, {"b": torch.zeros(4)})


@pytest.mark.parametrize("base", ["best", "second"])
def test_lookahead_is_never_below_its_base_rule_and_finds_longer_episodes(base):
    """The rollout property: on the same stream the lookahead's return is at least its base rule's in every
    episode; and on this task (long exponential lifetimes filling a 256-cell heap) it is strictly above in some
    episodes, so the reference measures something."""
    oracle = _script()
    env = _env(oracle.BASES[base])
    gains = []
    for seed in range(3):
        base_play = oracle.play(env, seed, episodes=2, lookahead=False, base=base)
        look = oracle.play(env, seed, episodes=2, base=base)
        assert look["branched"] > 0 and look["moved"] > 0
        # cutting rollouts whose winner is known: the same play
        assert oracle.play(env, seed, episodes=2, base=base, stop_early=False) == look
        for b, o in zip(base_play["returns"], look["returns"], strict=True):
            assert o >= b - 1e-6
            gains.append(o - b)
    assert max(gains) > 0.5


def test_base_rule_mismatching_the_hole_order_is_refused():
    with pytest.raises(ValueError, match="hole_order=address"):
        _script().play(_env("size"), 0, 1, base="second")
    with pytest.raises(ValueError, match="choose one of"):
        _script().play(_env("size"), 0, 1, base="worst")
    with pytest.raises(ValueError, match="env.action=hole"):
        _script().play(AllocConfig(cells=64, action="heuristic"), 0, 1)


@pytest.mark.parametrize("base", ["best", "second"])
def test_base_rule_of_the_script_is_the_harness_rule_and_the_table_is_written(base, tmp_path, capsys):
    oracle = _script()
    out = tmp_path / "rows.json"
    rows = oracle.main(["--suite", "shift_lifetimes", "--cells", "256", "--trials", "2", "--sets", "ranges",
                        "--base", base, "--json", str(out)])
    assert [r["set"] for r in rows] == ["ranges"]
    r = rows[0]
    assert r["base"] == base and r["lookahead"] >= r["base_return"] and r["gain_lo"] <= r["gain"] <= r["gain_hi"]
    # the rule as the evaluation harness scores it, on the same streams (trial t on seed eval.seed + t, a trial's
    # K episodes on one task of the set's task distribution)
    from hydra import compose, initialize_config_dir

    from dreamalloc.experiment.config import family_of, make_core, register_configs, tasks_of, validate
    from dreamalloc.experiment.evaluation import references

    register_configs()
    with initialize_config_dir(config_dir=str(SCRIPT.parents[1] / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["suite=shift_lifetimes", "env.cells=256", "eval.trials=2"])
    validate(cfg)
    task = tasks_of(cfg.suite.heldout.ranges)[0]
    k = int(cfg.eval.episodes_per_trial)
    assert k > 1 and "ranges" in task  # a task distribution: the trial, not the episode, draws the task
    core = make_core(cfg.env, [task], 2, "cpu", trial_episodes=k)
    refs = references(family_of(cfg.env), core, cfg.env, task, 2, k, int(cfg.eval.seed), "cpu", "always")
    assert r["base_return"] == pytest.approx(float(refs.rules[base].mean()), abs=1e-6)
    saved = json.loads(out.read_text())
    assert saved["tasks"][0]["task"] == r["task"] and saved["sets"][0]["set"] == "ranges"
    assert "| ranges |" in capsys.readouterr().out


def test_unknown_set_is_one_error_naming_the_sets(capsys):
    with pytest.raises(SystemExit):
        _script().main(["--suite", "shift_lifetimes", "--cells", "256", "--sets", "nope"])
    err = capsys.readouterr().err
    assert "no held-out set nope" in err and "families" in err
