"""The mallocGame family through the harness (``python train.py experiment=mallocgame ...``): the fixed rule played
as an agent scores exactly its own reference on the same programs, and a learner trains and is evaluated."""

from __future__ import annotations

import numpy as np
from test_harness import cfg_of

from dreamalloc.experiment.config import validate
from dreamalloc.experiment.training import train

QUICK = ["experiment=mallocgame", "env.num_envs=4", "eval.trials=4", "logger=disabled", "progress=off"]


def test_first_gap_agent_scores_its_reference_on_the_held_out_programs(tmp_path):
    cfg = cfg_of(QUICK + ["agent=heuristic", "agent.rule=first_gap", "steps=64"], tmp_path)
    validate(cfg)
    res = train(cfg, overrides=[])["results"]
    for set_name in ("heldout_models", "heldout_batch"):
        (task,) = res["sets"][set_name]["tasks"].values()
        agent, ref = np.asarray(task["returns"]), np.asarray(task["hindsight_best"]["returns"])
        assert task["hindsight_best"]["rule"] == "first_gap" and np.array_equal(agent, ref)
        assert 0.0 < agent.mean() < 1.0 and task["heuristics"]["slow"] == 0.0
        assert np.all(np.asarray(task["capacity_bound"]) == 1.0)  # every buffer in fast memory


def test_ppo_trains_and_is_evaluated(tmp_path):
    cfg = cfg_of(QUICK + ["agent=ppo", "agent.n_steps=32", "agent.batch_size=64", "steps=512"], tmp_path)
    out = train(cfg, overrides=[])
    assert out["step"] == 512 and set(out["results"]["sets"]) == {"heldout_models", "heldout_batch"}
    assert out["results"]["columns"] == ["benefit_fraction"]
