"""mallocGame: a hand-worked program, the no-overlap invariant (hypothesis), batch rows == single envs, bad
instances, the solvers against brute force, checkpoints and the gymnasium faces."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dreamalloc.core.actions import ActionError
from dreamalloc.core.spec import DomainCore
from dreamalloc.mallocgame import MALLOC_GAME_ID, InstanceError, MallocGameCore, make_instance, program_set
from dreamalloc.mallocgame.instances import load_programs
from dreamalloc.mallocgame.solvers import (
    brute_force,
    check_placement,
    first_fit,
    game_gaps,
    game_optimum,
    greedy,
    milp,
    rollout_search,
)

# A: [0,3) 4 units worth 8; B: [1,4) 4 worth 4; C: [2,5) 4 worth 6; D: [4,6) 2 worth 5; fast memory of 10.
HAND = {"name": "hand", "capacity": 10, "buffers": [[0, 3, 4, 8], [1, 4, 4, 4], [2, 5, 4, 6], [4, 6, 2, 5]]}
K = 8
SLOW = K


def hand_core(**kw) -> MallocGameCore:
    return MallocGameCore(1, tasks=[{"stream": "instances", "params": {"instances": [HAND]}}], autoreset=False,
                          **kw)


def _mask(*gaps: int) -> list[bool]:
    m = [False] * (K + 1)
    for g in gaps:
        m[g] = True
    m[SLOW] = True
    return m


def test_hand_worked_placements_rewards_and_masks():
    core = hand_core()
    assert isinstance(core.domain, DomainCore) and core.spec.masked and core.spec.n_actions == K + 1
    obs, info = core.reset(seed=0)
    # step 0, buffer A: nothing placed, one gap [0, 10)
    assert info["action_mask"][0].tolist() == _mask(0)
    assert info["gap_bottom"][0, 0] == 0 and info["gap_length"][0, 0] == 10
    assert obs[0, :2].tolist() == pytest.approx([0.4, 1.0])  # size / capacity, benefit / the largest
    # demand still to come over A's live range: B and C (8 units); the largest 4; their benefit 10 / (10 + A's 8);
    # d / (1 + d), d = A's benefit per unit 2 / the program's 23 / 14
    d = 2 / (23 / 14)
    assert obs[0, 6:11].tolist() == pytest.approx([0.8, 0.0, 0.4, 10 / 18, d / (1 + d)])
    assert obs[0, 11:14].tolist() == [1.0, 0.0, 0.0] and obs[0, 11 + K + K] == 1.0  # gap 0: valid, bottom 0, length 1
    assert obs[0, 11 + 3 * K:].tolist() == [0.0] * 16  # nothing placed yet
    obs, r, term, _, info = core.step([0])  # A at 0
    assert r.item() == pytest.approx(8 / 23) and not term.item()
    # B's view of the address space: A covers [0, 4) of 10 = bins 0-5 of 16 and 0.4 of bin 6
    assert obs[0, 11 + 3 * K:].tolist() == pytest.approx([1.0] * 6 + [0.4] + [0.0] * 9)
    # buffer B is live with A: [0, 4) taken, gap [4, 10)
    assert info["action_mask"][0].tolist() == _mask(0)
    assert (info["gap_bottom"][0, 0].item(), info["gap_length"][0, 0].item()) == (4, 6)
    _, r, _, _, info = core.step([SLOW])  # B to slow memory
    assert r.item() == 0.0
    # buffer C is live with A only: gap [4, 10)
    assert (info["gap_bottom"][0, 0].item(), info["gap_length"][0, 0].item()) == (4, 6)
    _, r, _, _, info = core.step([0])  # C at 4
    assert r.item() == pytest.approx(6 / 23)
    # buffer D [4, 6) is live with C [2, 5) only ([4, 8) taken): two gaps, [0, 4) and [8, 10)
    assert info["action_mask"][0].tolist() == _mask(0, 1)
    assert info["gap_bottom"][0, :2].tolist() == [0, 8] and info["gap_length"][0, :2].tolist() == [4, 2]
    _, r, term, _, info = core.step([1])  # D at 8
    assert r.item() == pytest.approx(5 / 23) and term.item()
    assert info["benefit_fraction"][0].item() == pytest.approx(19 / 23) and info["fast_benefit"][0].item() == 19
    assert core.domain.placement(0)["offset"].tolist() == [0, -1, 4, 8]


def test_hand_worked_other_path_and_unnormalised_reward():
    core = hand_core(normalize_reward=False)
    core.reset(seed=0)
    rewards = []
    for a, mask in ((0, _mask(0)), (0, _mask(0)), (SLOW, _mask()), (0, _mask(0))):
        assert core.current()[1]["action_mask"][0].tolist() == mask
        rewards.append(core.step([a])[1].item())
    assert rewards == [8.0, 4.0, 0.0, 5.0]  # A at 0, B at 4, C fits nowhere ([0, 8) taken), D at 0 (B has ended)
    assert core.domain.placement(0)["offset"].tolist() == [0, 4, -1, 0]


def test_hand_worked_solvers():
    inst = make_instance(**HAND)
    assert brute_force(inst)[0] == 19.0
    assert game_optimum(inst, K) == 19.0
    m = milp(inst, 5.0)
    assert m["optimal"] and m["value"] == 19.0 and m["bound"] == pytest.approx(19.0)
    assert check_placement(inst, greedy(inst, "size")) == 17.0  # A at 0, B at 4, C slow, D at 0
    assert check_placement(inst, first_fit(inst, "start")) == 17.0
    assert check_placement(inst, greedy(inst, "density")) == 19.0  # A (2), D (2.5) first, then C (1.5) fits at 4
    assert rollout_search(inst, K).tolist() == [0, -1, 4, 0]  # B to slow: C is worth more than B
    with pytest.raises(ValueError, match="overlap in address"):
        check_placement(inst, [0, 2, -1, -1])


def test_masked_actions_go_to_slow_memory_or_raise_and_out_of_range_ones_are_refused():
    core = hand_core()
    core.reset(seed=0)
    _, r, _, _, info = core.step([3])  # only gap 0 exists: A goes to slow memory, flagged
    assert r.item() == 0.0 and info["invalid"].tolist() == [True] and core.domain.placement(0)["offset"][0] == -1
    _, r, _, _, info = core.step([0])
    assert r.item() == pytest.approx(4 / 23) and info["invalid"].tolist() == [False]
    strict = hand_core(invalid_action="error")
    strict.reset(seed=0)
    with pytest.raises(ValueError, match="masked action: env 0 chose gap 3"):
        strict.step([3])
    with pytest.raises(ActionError, match="out of range"):
        strict.step([K + 1])


# ---------------------------------------------------------------------------------------------- invariants
@st.composite
def instances(draw):
    cap = draw(st.integers(1, 24))
    n = draw(st.integers(1, 9))
    bufs = []
    for _ in range(n):
        s = draw(st.integers(0, 8))
        bufs.append([s, s + draw(st.integers(1, 5)), draw(st.integers(1, cap)), float(draw(st.integers(0, 9)))])
    return {"name": "h", "capacity": cap, "buffers": bufs}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances(), st.data(), st.integers(1, 4))
def test_no_overlap_and_masks_match_the_reference(inst_json, data, n_gaps):
    inst = make_instance(inst_json["name"], inst_json["capacity"], inst_json["buffers"])
    core = MallocGameCore(1, tasks=[{"stream": "instances", "params": {"instances": [inst_json]}}], n_gaps=n_gaps,
                          normalize_reward=False, autoreset=False)
    _, info = core.reset(seed=0)
    off = np.full(inst.n, -1, np.int64)
    total = 0.0
    for k in range(inst.n):
        ref = game_gaps(inst, off, k, n_gaps)
        mask = info["action_mask"][0]
        assert mask.tolist() == [g < len(ref) for g in range(n_gaps)] + [True]
        assert info["gap_bottom"][0, :len(ref)].tolist() == [b for b, _ in ref]
        assert info["gap_length"][0, :len(ref)].tolist() == [ln for _, ln in ref]
        a = data.draw(st.sampled_from(mask.nonzero().squeeze(1).tolist()))
        _, r, term, _, info = core.step([a])
        if a < n_gaps:
            off[k] = ref[a][0]
        total += r.item()
        assert term.item() == (k == inst.n - 1)
    placed = core.domain.placement(0)
    assert placed["offset"].tolist() == off.tolist()
    assert check_placement(inst, off) == pytest.approx(total)  # raises if live buffers overlap in address
    assert total <= game_optimum(inst, n_gaps) + 1e-9


def test_synthetic_programs_are_valid_instances():
    core = MallocGameCore(16, tasks=[{"stream": "synthetic", "params": {"n_buffers": 20, "horizon": 30}}])
    core.reset(seed=3)
    for b in range(16):
        p = core.domain.placement(b)
        inst = make_instance("s", p["capacity"], [[int(s), int(e), int(z), float(v)] for s, e, z, v in
                                                   zip(p["start"], p["end"], p["size"], p["benefit"], strict=True)])
        assert inst.n == 20 and (inst.start.tolist(), inst.size.tolist()) == (p["start"].tolist(), p["size"].tolist())
        assert inst.capacity >= inst.size.max() and inst.capacity <= max(inst.peak_live() // 2, inst.size.max())


# ---------------------------------------------------------------------------------------------- seeding
MIXED = [{"name": "train", "stream": "programs", "params": {"set": "train"}},
         {"name": "syn", "stream": "synthetic", "params": {"n_buffers": 24}}]


def _first_fit(info):
    return torch.where(info["action_mask"][:, 0], 0, K)


def test_batch_row_equals_single_env_seeded_the_same():
    batch = MallocGameCore(4, tasks=MIXED)
    obs, info = batch.reset(seed=11)
    singles = [MallocGameCore(1, tasks=MIXED) for _ in range(4)]
    outs = [s.reset(seed=11 + b) for b, s in enumerate(singles)]
    tasks = set()
    for _ in range(300):
        for b in range(4):
            assert torch.equal(obs[b], outs[b][0][0])
            assert torch.equal(info["action_mask"][b], outs[b][1]["action_mask"][0])
        tasks |= set(info["task_id"].tolist())
        obs, r, term, _, info = batch.step(_first_fit(info))
        for b, s in enumerate(singles):
            o, rs, ts, _, i = s.step(_first_fit(outs[b][1]))
            assert rs.item() == r[b].item() and ts.item() == term[b].item()
            outs[b] = (o, i)
    assert tasks == {0, 1}


def test_cycle_draw_plays_every_program_in_order():
    progs = program_set("heldout_models")
    core = MallocGameCore(len(progs), tasks=[{"stream": "programs", "params": {"set": "heldout_models",
                                                                               "draw": "cycle"}}])
    core.reset(seed=0)
    assert [int(core.domain.n[b]) for b in range(len(progs))] == [p.n for p in progs]
    assert [int(core.domain.cap[b]) for b in range(len(progs))] == [p.capacity for p in progs]


def test_state_dict_round_trip():
    a = MallocGameCore(3, tasks=MIXED)
    _, info = a.reset(seed=5)
    for _ in range(30):
        _, _, _, _, info = a.step(_first_fit(info))
    state = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in a.state_dict().items()}
    b = MallocGameCore(3, tasks=MIXED)
    b.load_state_dict(state)
    ob, ib = b.current()
    oa, ia = a.current()
    assert torch.equal(oa, ob) and torch.equal(ia["action_mask"], ib["action_mask"])
    for _ in range(200):
        oa, ra, ta, _, ia = a.step(_first_fit(ia))
        ob, rb, tb, _, ib = b.step(_first_fit(ib))
        assert torch.equal(oa, ob) and torch.equal(ra, rb) and torch.equal(ta, tb)
    with pytest.raises(KeyError, match="mallocgame state without"):
        b.load_state_dict({k: v for k, v in state.items() if k != "mg_off"})


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("capacity,buffers,match", [
    (10, [[0, 2, -3, 1.0]], "size -3; sizes must be integers > 0"),
    (10, [[0, 2, 0, 1.0]], "size 0"),
    (10, [[3, 3, 2, 1.0]], r"empty live range \[3, 3\)"),
    (10, [[4, 2, 2, 1.0]], "empty live range"),
    (10, [[-1, 2, 2, 1.0]], "negative time"),
    (10, [[0, 2, 11, 1.0]], r"size 11 is larger than the fast memory \(capacity 10\)"),
    (10, [[0, 2, 2, -1.0]], "benefit -1.0"),
    (10, [[0, 2, 2, float("nan")]], "benefit nan"),
    (10, [[0, 2, 2]], "must be \\[start, end, size, benefit\\]"),
    (0, [[0, 2, 2, 1.0]], "capacity must be an integer > 0"),
    (10, [], "non-empty list"),
    (10, [[0.5, 2, 2, 1.0]], "non-integer live range"),
])
def test_bad_instances_get_one_clear_error(capacity, buffers, match):
    with pytest.raises(InstanceError, match=match):
        make_instance("bad", capacity, buffers)


@pytest.mark.parametrize("kw,match", [
    ({"tasks": [{"stream": "heap"}]}, "stream must be one of programs, instances, synthetic"),
    ({"tasks": [{"stream": "synthetic", "params": {"n_buffer": 3}}]}, r"unknown param\(s\) \['n_buffer'\]"),
    ({"tasks": [{"stream": "synthetic", "params": {"capacity_frac": 0}}]}, "capacity_frac must be in"),
    ({"tasks": [{"stream": "programs", "params": {"set": "test"}}]}, "unknown program set 'test'"),
    ({"tasks": [{"stream": "instances", "params": {"instances": [{"capacity": 4, "buffers": [[0, 1, 5, 1]]}]}}]},
     "larger than the fast memory"),
    ({"n_gaps": 0}, "n_gaps must be an integer >= 1"),
    ({"invalid_action": "clip"}, "invalid_action must be 'slow'"),
])
def test_bad_configs_get_one_clear_error(kw, match):
    with pytest.raises(ValueError, match=match):
        MallocGameCore(1, **kw)


# ---------------------------------------------------------------------------------------------- solvers
def _tiny(rng) -> dict:
    cap = int(rng.integers(2, 7))
    bufs = []
    for _ in range(int(rng.integers(2, 6))):
        s = int(rng.integers(0, 5))
        bufs.append([s, s + int(rng.integers(1, 4)), int(rng.integers(1, cap + 1)), float(rng.integers(1, 10))])
    return {"name": "tiny", "capacity": cap, "buffers": bufs}


def test_milp_is_optimal_on_tiny_instances_and_heuristics_are_bounded_by_it():
    rng = np.random.default_rng(2026)
    gaps_seen = 0
    for _ in range(40):
        inst = make_instance(**_tiny(rng))
        best, off = brute_force(inst)
        assert check_placement(inst, off) == best
        m = milp(inst, 10.0)
        assert m["optimal"] and m["value"] == pytest.approx(best) and m["bound"] >= best - 1e-6
        for f in (greedy(inst, "size"), greedy(inst, "density"), first_fit(inst, "start"), first_fit(inst, "size")):
            assert check_placement(inst, f) <= best
        g = game_optimum(inst, K)
        assert g <= best
        search = check_placement(inst, rollout_search(inst, K))
        assert check_placement(inst, first_fit(inst, "start")) <= search <= g  # first-fit = the game's gap 0
        gaps_seen += check_placement(inst, greedy(inst, "size")) < best
    assert gaps_seen > 0  # the greedy is not optimal everywhere: the instances do test something


def test_milp_reports_a_bound_under_a_time_limit():
    inst = program_set("train", ["lstm"], [1])[0]
    m = milp(inst, 2.0)
    assert m["bound"] >= m["value"] and m["bound"] <= inst.total_benefit + 1e-6
    check_placement(inst, m["offsets"])


# ---------------------------------------------------------------------------------------------- data and faces
def test_recorded_programs_and_their_sets():
    progs, prov = load_programs()
    assert prov["command"] == "python scripts/mallocgame_record.py"
    models = {p.meta["model"] for p in progs}
    assert len(models) >= 8
    train = {p.meta["model"] for p in program_set("train")}
    held = {p.meta["model"] for p in program_set("heldout_models")}
    assert train and held and not train & held
    assert min(p.meta["batch"] for p in program_set("heldout_batch")) > max(p.meta["batch"]
                                                                             for p in program_set("train"))
    for p in progs:
        assert p.capacity >= p.size.max() and p.total_benefit > 0 and (p.end > p.start).all()


def test_gymnasium_single_and_vector_env():
    env = gym.make(MALLOC_GAME_ID, tasks=[{"stream": "instances", "params": {"instances": [HAND]}}])
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and info["action_mask"].tolist() == _mask(0)
    total, done = 0.0, False
    for a in (0, SLOW, 0, 1):
        obs, r, term, trunc, info = env.step(a)
        total += r
        done = term or trunc
    assert done and total == pytest.approx(19 / 23)
    with pytest.raises(ActionError):
        env.step(1.0)
    check_env(gym.make(MALLOC_GAME_ID, tasks=[{"stream": "synthetic", "params": {}}]).unwrapped,
              skip_render_check=True)
    meta = gym.make(MALLOC_GAME_ID, tasks=[{"stream": "synthetic", "params": {}}], meta_obs=True).unwrapped
    check_env(meta, skip_render_check=True)
    assert meta.observation_space.shape == (51 + K + 3,)
    venv = gym.make_vec(MALLOC_GAME_ID, num_envs=3, vectorization_mode="vector_entry_point",
                        tasks=[{"stream": "synthetic", "params": {}}])
    obs, info = venv.reset(seed=1)
    assert obs.shape == (3, venv.single_observation_space.shape[0]) and info["action_mask"].shape == (3, K + 1)
    obs, r, term, trunc, info = venv.step(np.full(3, SLOW))
    assert (r == 0).all() and not term.any()


def test_game_first_fit_equals_the_first_fit_solver_on_every_recorded_program():
    progs = program_set("all")
    core = MallocGameCore(len(progs), tasks=[{"stream": "programs", "params": {"set": "all", "draw": "cycle"}}],
                          normalize_reward=False)
    _, info = core.reset(seed=0)
    got = torch.full((len(progs),), float("nan"), dtype=torch.float64)
    for _ in range(max(p.n for p in progs)):
        _, _, term, _, info = core.step(_first_fit(info))
        got = torch.where(term & got.isnan(), info["episode"]["r"], got) if "episode" in info else got
    assert got.tolist() == [check_placement(p, first_fit(p, "start")) for p in progs]
