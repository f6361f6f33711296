"""Adaptation inside an episode: the env's ``on_fail="drop"``, the hidden lifetime regimes stream, the switching
oracle and the recovery curves, and the ``shift_rules`` suite built from them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from invariants import check_heaps
from script_module import load_script

from dreamalloc.alloc import AllocCore
from dreamalloc.alloc.heap import RULES
from dreamalloc.alloc.references import heuristic_returns, switching_oracle
from dreamalloc.alloc.workloads import make_stream
from dreamalloc.core.rollout import RECOVERY_STEPS, constant_policy, run_episodes
from dreamalloc.report.stats import recovery_curve

QUEUE = {"name": "queue", "life": 6, "dist": "fixed"}
SMALLKEEP = {"name": "smallkeep", "life": 3.4, "dist": "exponential", "by_size": -3}
REGIMES = {"size_min": 3, "size_max": 12, "max_life": 48, "at": [96, 160], "regimes": [QUEUE, SMALLKEEP]}
ENV = dict(cells=64, stream="regimes", stream_params=REGIMES, on_fail="drop", alloc_reward=0.0, drop_reward=-1.0,
           max_allocs=512)


def rule_core(B, rule="best", **kw):
    return AllocCore(B, **{**ENV, **kw, "heuristics": (rule,)})


def play(core, seed, steps):
    obs, info = core.reset(seed=seed)
    out = []
    for _ in range(steps):
        obs, r, term, trunc, info = core.step(torch.zeros(core.B, dtype=torch.long))
        out.append((obs.clone(), r.clone(), term.clone(), trunc.clone(), info["dropped"].clone(),
                    info["task_id"].clone(), info["segment"].clone()))
    return out


# ---------------------------------------------------------------------------------------------- on_fail=drop
def test_drop_episode_is_exactly_max_allocs_requests_and_never_terminates():
    core = rule_core(8, "worst", max_allocs=200)
    core.reset(seed=3)
    ret = torch.zeros(8, dtype=torch.float64)
    for _ in range(400):
        _, r, term, trunc, info = core.step(torch.zeros(8, dtype=torch.long))
        assert not bool(term.any())
        ret += r
        if trunc.any():
            fi = info["final_info"]
            rows = trunc.nonzero().squeeze(1)
            assert torch.equal(fi["allocations"][rows] + fi["dropped"][rows], torch.full_like(rows, 200))
            # return = 0 x placed - 1 x dropped (alloc_reward 0, drop_reward -1)
            assert torch.allclose(info["episode"]["r"][rows], -fi["dropped"][rows].double())
            break
    else:
        pytest.fail("no episode ended within 400 steps")
    assert int(fi["dropped"].max()) > 0  # worst fit on this load drops requests: the mechanism was exercised


def test_drop_matches_end_mode_until_the_first_failure():
    """Up to the first request that fits nowhere, on_fail=drop and on_fail=end are the same env."""
    kw = dict(cells=64, stream="random", stream_params={"size_min": 2, "size_max": 9, "free_prob": 0.3},
              heuristics=("first",), max_allocs=300)
    a, b = AllocCore(4, on_fail="end", **kw), AllocCore(4, on_fail="drop", **kw)
    oa, _ = a.reset(seed=5)
    ob, _ = b.reset(seed=5)
    live = torch.ones(4, dtype=torch.bool)
    for _ in range(300):
        act = torch.zeros(4, dtype=torch.long)
        oa, ra, ta, _, _ = a.step(act)
        ob, rb, _, _, ib = b.step(act)
        live &= ~ta
        if not live.any():
            break
        assert torch.equal(oa[live], ob[live])
        assert torch.equal(ra[live], rb[live])
        assert int(ib["dropped"][live].max()) == 0
    assert not live.any()  # every row met a failure (end mode terminated it)


def test_drop_steps_charge_every_dropped_request():
    core = rule_core(4, "next")
    core.reset(seed=11)
    prev = torch.zeros(4, dtype=torch.long)
    for _ in range(300):
        _, r, _, trunc, info = core.step(torch.zeros(4, dtype=torch.long))
        fin = info["final_info"]["dropped"] if trunc.any() else info["dropped"]
        now = torch.where(trunc, fin, info["dropped"])
        assert torch.allclose(r, -(now - prev).double())  # several drops in one step cost one each
        prev = torch.where(trunc, 0, info["dropped"])
        check_heaps(core.heaps)


def test_drop_resume_is_exact():
    a = rule_core(3, "first")
    a.reset(seed=2)
    for _ in range(150):
        a.step(torch.zeros(3, dtype=torch.long))
    b = rule_core(3, "first")
    b.reset(seed=99)
    b.load_state_dict(a.state_dict())
    for _ in range(300):
        oa, ra, ta, tra, ia = a.step(torch.zeros(3, dtype=torch.long))
        ob, rb, tb, trb, ib = b.step(torch.zeros(3, dtype=torch.long))
        assert torch.equal(oa, ob) and torch.equal(ra, rb) and torch.equal(tra, trb)
        assert torch.equal(ia["segment"], ib["segment"]) and torch.equal(ia["task_id"], ib["task_id"])


def test_on_fail_refusals():
    with pytest.raises(ValueError, match="unknown on_fail 'skip'"):
        AllocCore(1, cells=64, on_fail="skip")
    with pytest.raises(ValueError, match="terminal_reward='zero' has no effect with on_fail=drop"):
        AllocCore(1, cells=64, on_fail="drop", terminal_reward="zero")


# ---------------------------------------------------------------------------------------------- regimes
def test_regime_lifetimes_keep_the_load_and_follow_size():
    s = make_stream("regimes", 1, 64, **REGIMES)
    sizes = torch.arange(1, 65, dtype=torch.float64)
    pmf = torch.diff(torch.cat([torch.zeros(1, dtype=torch.float64), s.size_cdf.cpu()]))
    for i, reg in enumerate(REGIMES["regimes"]):
        cell_time = float((pmf * sizes * s.life_of[i].cpu()).sum())
        assert cell_time == pytest.approx(reg["life"] * s.mean_size, rel=1e-9)  # same load whatever by_size
    assert torch.allclose(s.life_of[0, 2:12], torch.full((10,), 6.0, dtype=torch.float64))  # fixed, by_size 0
    ratio = float(s.life_of[1, 2] / s.life_of[1, 11])  # size 3 vs size 12 under by_size -3: (12 / 3) ** 3
    assert ratio == pytest.approx(64.0)


def test_queue_regime_frees_in_birth_order_after_exactly_its_life():
    params = {**REGIMES, "regimes": [QUEUE], "at": 10 ** 9}
    core = rule_core(2, "first", stream_params=params, max_allocs=400)
    _, info = core.reset(seed=1)
    born = {}
    for _ in range(200):
        live_before = {(b, int(q)) for b in range(2) for q in core.heaps.block_seq[b][core.heaps.live[b]].tolist()}
        core.step(torch.zeros(2, dtype=torch.long))
        clock = core.heaps.clock(torch.arange(2))
        live_after = {(b, int(q)) for b in range(2) for q in core.heaps.block_seq[b][core.heaps.live[b]].tolist()}
        for b, q in live_before - live_after:  # freed this step: exactly 6 requests after its birth, or later
            born[(b, q)] = int(clock[b])
            assert int(clock[b]) - q >= 6
        for b, q in live_after:
            assert int(clock[b]) - q <= 7  # nothing outlives its life (+1: the pending request)
    assert len(born) > 50


def test_segments_switch_inside_the_drawn_range_and_cycle():
    out = play(rule_core(16, "best"), seed=4, steps=480)
    seg = torch.stack([o[6] for o in out])  # [T, B]
    tid = torch.stack([o[5] for o in out])
    done = torch.stack([o[3] for o in out])
    first_ep = torch.cumsum(done.long(), 0) == 0
    assert torch.equal(tid[first_ep], (seg % 2)[first_ep])  # cycle: queue, smallkeep, queue, ...
    assert int(seg[first_ep].max()) >= 2


def test_regime_stream_is_per_heap():
    """Heap b of a batch receives what a batch of one seeded like it receives."""
    batch = play(rule_core(4, "best"), seed=7, steps=120)
    one = play(rule_core(1, "best"), seed=9, steps=120)  # heap 2 of the batch has seed 7 + 2
    for (ob, rb, *_), (o1, r1, *_) in zip(batch, one, strict=True):
        assert torch.equal(ob[2], o1[0]) and torch.equal(rb[2], r1[0])


@pytest.mark.parametrize("bad, msg", [
    ({"regimes": []}, "regimes must be a non-empty list"),
    ({"regimes": [{"life": 0}]}, r"regimes\[0\].life must be > 0"),
    ({"regimes": [{"life": 5, "dist": "gamma"}]}, r"regimes\[0\].dist must be one of fixed, exponential, uniform"),
    ({"regimes": [{"life": 5, "colour": 1}]}, r"regimes\[0\] has unknown keys \['colour'\]"),
    ({"regimes": [QUEUE, QUEUE]}, "regime names must be distinct"),
    ({"regimes": [QUEUE], "order": "random"}, "order='random' needs at least two regimes"),
    ({"regimes": [QUEUE], "at": [9, 3]}, r"at must satisfy 1 <= lo <= hi"),
    ({"regimes": [QUEUE], "size_max": 100}, "size_max"),
])
def test_regime_stream_refusals(bad, msg):
    with pytest.raises(ValueError, match=msg):
        make_stream("regimes", 1, 64, **bad)


# ---------------------------------------------------------------------------------------------- oracle, recovery
def test_switching_oracle_plays_each_regimes_best_rule():
    kw = {**ENV, "stream_params": {**REGIMES, "at": [40, 60]}}
    orc = switching_oracle(16, 0, "cpu", 1, **kw)
    assert orc["rules"][0] == "next"  # queue: blocks die in birth order, next fit is a ring buffer
    assert orc["rules"][1] in ("best", "first")
    # its returns are those of the policy "rule of the decision's regime", replayed by hand
    core = AllocCore(16, **{**kw, "heuristics": RULES})
    table = torch.tensor([RULES.index(r) for r in orc["rules"]])
    res = run_episodes(core, lambda obs, info: table[info["task_id"]], 0, 1)
    assert np.array_equal(res["return"][:, 0], orc["return"][:, 0])
    for rule in RULES:  # on these 16 heaps the oracle is at least as good as every fixed rule
        assert orc["return"].mean() >= heuristic_returns(rule, 16, 0, "cpu", 1, **kw)["return"].mean()
    assert switching_oracle(4, 0, "cpu", 1, cells=64, stream="random") is None  # no in-episode tasks


def test_recovery_counts_every_decision_after_a_switch():
    core = rule_core(8, "best", stream_params={**REGIMES, "at": [30, 40]}, max_allocs=200)
    res = run_episodes(core, constant_policy(core, 0), 0, 1)
    n_total, n_rec = 0, 0
    core2 = rule_core(8, "best", stream_params={**REGIMES, "at": [30, 40]}, max_allocs=200)
    _, info = core2.reset(seed=0)
    done = torch.zeros(8, dtype=torch.bool)
    while not done.all():
        seg = info["segment"]
        _, r, _, trunc, info = core2.step(torch.zeros(8, dtype=torch.long))
        n_rec += int(((seg > 0) & ~done).sum())
        n_total += int((~done).sum())
        done |= trunc
    assert res["recovery_count"].shape == (RECOVERY_STEPS,)
    assert int(res["recovery_count"].sum()) == n_rec and 0 < n_rec < n_total
    assert float(res["recovery_sum"].sum()) <= 0.0  # only drops cost here
    x, y = recovery_curve(res["recovery_sum"], res["recovery_count"], window=8)
    assert x[0] == 0 and all(b - a == 8 for a, b in zip(x, x[1:], strict=False)) and len(y) == len(x)
    assert all(math.isfinite(v) and v <= 0.0 for v in y)


# ---------------------------------------------------------------------------------------------- the suite
@pytest.mark.slow
def test_shift_rules_is_a_real_test_oracle_beats_every_fixed_rule_by_10_percent():
    """On every held-out set of experiment=shift_rules the switching oracle drops >= 10 % fewer requests than the
    best fixed rule (64 episodes each, the evaluation's seeds)."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from dreamalloc.alloc.references import env_kwargs
    from dreamalloc.experiment.cli import register_configs  # noqa: F401  (registers the schemas)
    from dreamalloc.experiment.config import env_config, tasks_of

    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=shift_rules"])
    for set_name, tasks in cfg.suite.heldout.items():
        for task in tasks_of(tasks):
            kw = env_kwargs(env_config(cfg.env, [task]))
            orc = -float(switching_oracle(64, 0, "cpu", 1, **kw)["return"].mean())
            best = min(-float(heuristic_returns(r, 64, 0, "cpu", 1, **kw)["return"].mean()) for r in RULES)
            assert orc <= 0.9 * best, (set_name, orc, best)


def test_gym_env_with_drop_runs_on_the_torch_core():
    """The one-heap fast path implements on_fail='end' only: AllocEnv falls back to the torch core for 'drop' and the
    fast core refuses it by name."""
    import gymnasium as gym

    from dreamalloc.alloc.fast import FastAllocCore

    env = gym.make("dreamalloc/Alloc-v0", **{**ENV, "heuristics": ("next",)}, max_episode_steps=None)
    obs, _ = env.reset(seed=0)
    total, steps = 0.0, 0
    while True:
        obs, r, term, trunc, info = env.step(0)
        total += r
        steps += 1
        if term or trunc:
            break
    assert not term and info["allocations"] + info["dropped"] == 512 and total == -info["dropped"]
    with pytest.raises(ValueError, match="fast path implements on_fail='end' only"):
        FastAllocCore(**ENV)


def test_shift_rules_experiment_reports_the_oracle_and_recovery_plots(tmp_path):
    """python train.py experiment=shift_rules (a fixed-rule agent, a short budget): every held-out task's results
    hold the switching oracle and recovery curves (agent and references), and the evaluation writes the plots."""
    import json
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from dreamalloc.experiment.cli import register_configs  # noqa: F401  (registers the schemas)
    from dreamalloc.experiment.training import train

    conf = str(Path(__file__).resolve().parents[1] / "conf")
    overrides = ["experiment=shift_rules", "agent=heuristic", "agent.rule=best", "steps=256", "env.num_envs=4",
                 "env.max_allocs=160", "eval.trials=2", "logger=disabled", "progress=off",
                 f"run_dir={tmp_path}/run", f"checkpoint_dir={tmp_path}/ckpt"]
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    out = train(cfg, overrides=overrides)
    ev = next((Path(out["run_dir"]) / "eval").glob("step_*"))
    res = json.loads((ev / "results.json").read_text())
    assert set(res["sets"]) == {"seen", "short", "order", "family"}
    for s in res["sets"].values():
        for t in s["tasks"].values():
            rules = t["switching_oracle"]["rules"]
            assert len(rules) == 2 and set(rules) <= set(RULES) and len(t["switching_oracle"]["returns"]) == 2
            assert {"agent", "switching oracle", *RULES} <= set(t["recovery"])
            assert sum(t["recovery"]["agent"]["count"]) > 0
            # the agent plays best fit: its recovery curve is best fit's, decision for decision
            assert t["recovery"]["agent"] == t["recovery"]["best"]
    assert len(list(ev.glob("recovery_*.png"))) == 4
    assert "switching_oracle" in (ev / "results.md").read_text()


def test_rule_agreement_breaks_an_agents_choices_down_by_regime(tmp_path, capsys):
    """scripts/rule_agreement.py on a trained checkpoint (a best-fit agent): every decision of every trial is
    counted once, by regime and window since the switch, and the agent's address is best fit's in every split
    decision; a non-switching suite and an unknown set are refused with exit status 2."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from dreamalloc.experiment.cli import register_configs  # noqa: F401  (registers the schemas)
    from dreamalloc.experiment.training import train

    root = Path(__file__).resolve().parents[1]
    script = load_script("rule_agreement")

    def run(name, *extra):
        overrides = ["agent=heuristic", "agent.rule=best", "steps=64", "env.num_envs=2", "eval.trials=2",
                     "eval.baselines=off", "logger=disabled", "progress=off", f"run_dir={tmp_path}/{name}",
                     f"checkpoint_dir={tmp_path}/{name}_ckpt", *extra]
        with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=overrides)
        train(cfg, overrides=overrides)
        return str(tmp_path / f"{name}_ckpt")

    ckpt = run("best", "experiment=shift_rules", "env.max_allocs=160")
    capsys.readouterr()
    assert script.main([ckpt, "--sets", "seen,short", "--trials", "3", "--markdown"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| ") and "---" not in ln]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [dict(zip(head, (c.strip() for c in ln.strip("|").split("|")), strict=True)) for ln in lines[1:]]
    assert {r["set"] for r in rows} == {"seen", "short"}
    assert {r["regime"] for r in rows} == {"queue", "smallkeep"}
    # every decision of the 3 trials in exactly one window: as many as best fit makes on the same streams (fewer than
    # the 160 requests of an episode: a request that fits nowhere is dropped without a decision)
    from dreamalloc.experiment.config import make_core, tasks_of
    from dreamalloc.experiment.inference import load_agent

    cfg = load_agent(ckpt).config
    for s in ("seen", "short"):
        core = make_core(cfg.env, tasks_of(cfg.suite.heldout[s]), 3, "cpu", trial_episodes=1)
        best = run_episodes(core, constant_policy(core, list(cfg.env.heuristics).index("best")), int(cfg.eval.seed))
        assert sum(int(r["decisions"]) for r in rows if r["set"] == s) == int(best["length"].sum()) <= 3 * 160
    split = [r for r in rows if float(r["split"]) > 0]
    assert split and all(r["best"] == "1.00" for r in split)
    assert any(float(r["next"]) < 1.0 for r in split)  # the rules do disagree, and the table says so
    assert script.main([ckpt, "--sets", "nope"]) == 2
    assert "unknown held-out set" in capsys.readouterr().err
    plain = run("plain", "suite=lim2024", "env.heuristics=[first,next,best,worst]")
    assert script.main([plain]) == 2
    assert "does not switch regime" in capsys.readouterr().err


def test_a_request_dropped_at_the_start_is_charged_at_the_first_step():
    """A pre-filled heap (Mandal & Rohil's layout) whose first request fits nowhere: the drop happens at reset and is
    charged at the episode's first step, so the return is still minus every dropped request."""
    core = AllocCore(1, cells=100, stream="preholed", heuristics=("best",), on_fail="drop", alloc_reward=0.0,
                     stream_params={"sizes": [40, 3], "then": "repeat", "skip_unfit": False}, max_allocs=30)
    _, info = core.reset(seed=0)
    assert int(info["dropped"][0]) == 1 and int(info["request"][0]) == 3  # 40 fits in no hole: dropped at reset
    total = 0.0
    for _ in range(100):
        _, r, term, trunc, info = core.step(torch.zeros(1, dtype=torch.long))
        total += float(r[0])
        if trunc[0]:
            break
    assert not term[0] and trunc[0]
    assert total == -float(info["final_info"]["dropped"][0]) and total <= -2.0
