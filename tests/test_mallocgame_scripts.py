"""The mallocGame scripts: the training loop runs an agent on the batched core, and the evaluation plays every
program of a set and agrees with the solvers' checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from script_module import load_script

from dreamalloc.mallocgame import program_set
from dreamalloc.mallocgame.solvers import check_placement, first_fit

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    return load_script(name)


def test_game_policies_on_a_held_out_set():
    train = _script("mallocgame_train")
    progs = {p.name: p for p in program_set("heldout_models")}
    ff = train.play("heldout_models", train.game_policy("first_fit"))
    assert set(ff) == set(progs)
    for name, (frac, off) in ff.items():
        assert frac == pytest.approx(check_placement(progs[name], first_fit(progs[name], "start"))
                                     / progs[name].total_benefit)
        assert off == first_fit(progs[name], "start").tolist()
    assert all(frac == 0.0 for frac, _ in train.play("heldout_models", train.game_policy("slow")).values())


def test_a_short_ppo_run_trains_and_evaluates():
    train = _script("mallocgame_train")
    agent, log = train.train("ppo", 0, 2048, 8, 1.0)
    assert log["episodes"] > 0 and 0.0 <= log["last50_train_return"] <= 1.0
    ev = train.play("heldout_batch", train.agent_policy(agent))
    progs = {p.name: p for p in program_set("heldout_batch")}
    for name, (frac, off) in ev.items():  # play() checks the placement against the env's own count
        assert 0.0 <= frac <= 1.0 and frac == pytest.approx(check_placement(progs[name], np.array(off))
                                                            / progs[name].total_benefit)


def test_capacity_fraction_rescales_a_program():
    train = _script("mallocgame_train")
    prog = max(program_set("train"), key=lambda q: q.capacity / q.size.max())  # room above its largest buffer
    small = train.with_capacity(prog, 0.25)
    assert small.capacity == max(int(0.25 * prog.peak_live()), int(prog.size.max())) < prog.capacity
    assert np.array_equal(small.size, prog.size) and np.array_equal(small.benefit, prog.benefit)
    assert small.meta["capacity_frac"] == 0.25
    tiny = train.with_capacity(prog, 1e-9)
    assert tiny.capacity == int(prog.size.max())  # never below the largest buffer (the instance stays valid)
    with pytest.raises(SystemExit):
        train.main(["--capacity-frac", "0.5", "--out", "x.json"])  # only with --solvers-only
