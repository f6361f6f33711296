"""Property tests of the batched cores: random sequences of allocate / reset / checkpoint / restore (the stream
applies its frees between allocations) keep the heap invariants, and a core restored from a checkpoint file into
a fresh twin replays the recorded steps and then keeps stepping bit-identically (obs, reward, flags, info).

A checkpoint here is the real file format: ``core.state_dict()`` written with ``save_checkpoint`` and read back
with ``load_checkpoint``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dreamalloc.alloc import AllocCore
from dreamalloc.experiment.checkpoint import load_checkpoint, save_checkpoint
from dreamalloc.loadbalance import LoadBalanceCore
from tests.invariants import check_heaps

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
B, CELLS = 3, 32


def same(a, b, where: str = "") -> None:
    """``a`` and ``b`` are bit-identical: tensors by dtype, shape and bytes (NaN included), containers by keys."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert a.cpu().contiguous().numpy().tobytes() == b.cpu().contiguous().numpy().tobytes(), where
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.tobytes() == b.tobytes(), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and sorted(map(str, a)) == sorted(map(str, b)), (where, list(a), list(b))
        for k in a:
            same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def round_trip(state: dict) -> dict:
    with tempfile.TemporaryDirectory() as d:
        path = save_checkpoint(Path(d) / "ckpt.safetensors", {"env": state})
        return load_checkpoint(path)["env"]


OPS = st.lists(st.one_of(
    st.tuples(st.just("step"), st.lists(st.integers(0, 10 ** 6), min_size=B, max_size=B),
              st.lists(st.booleans(), min_size=B, max_size=B)),
    st.tuples(st.just("reset"), st.lists(st.booleans(), min_size=B, max_size=B)),
    st.tuples(st.just("checkpoint")),
    st.tuples(st.just("restore")),
), min_size=1, max_size=40)


def drive(make, seed: int, ops: list, pick_action, check=None) -> dict[str, int]:
    """Apply ``ops`` to a core made by ``make``; after a restore, a fresh twin loaded from the last checkpoint
    replays the steps recorded since it (each output equal to the recorded one), must then hold the core's
    exact state, and follows the core step for step from there. Returns counts of what happened."""
    core = make()
    core.reset(seed=seed)
    seen = {"steps": 0, "restores": 0, "replayed": 0}
    snap, since, twin = None, [], None
    for op in ops:
        if op[0] == "step":
            action = pick_action(core, op[1], op[2])
            got = core.step(action)
            if twin is not None:
                same(got, twin.step(action.clone()), "twin step")
            since.append(("step", action.clone(), got))
            seen["steps"] += 1
        elif op[0] == "reset":
            rows = [r for r in range(B) if op[1][r]] or [0]
            got = core.reset(rows=rows)
            if twin is not None:
                same(got, twin.reset(rows=rows), "twin reset")
            since.append(("reset", rows, got))
        elif op[0] == "checkpoint":
            snap, since = (round_trip(core.state_dict()), core.current()), []
        elif snap is not None:  # restore into a fresh twin
            twin = make()
            twin.load_state_dict(snap[0])
            same(twin.current(), snap[1], "current() after load")
            for kind, arg, got in since:
                again = twin.step(arg.clone()) if kind == "step" else twin.reset(rows=arg)
                same(again, got, f"replayed {kind}")
                seen["replayed"] += 1
            same(twin.state_dict(), core.state_dict(), "state after replay")
            seen["restores"] += 1
        if check is not None:
            check(core)
            if twin is not None:
                check(twin)
    return seen


def alloc_core() -> AllocCore:
    return AllocCore(B, cells=CELLS, stream="random", action="address", max_allocs=24, max_invalid=4)


def alloc_action(core, picks: list[int], valid: list[bool]) -> torch.Tensor:
    """Per heap: the pick-th valid address when ``valid`` (a placement), else any address (often masked)."""
    mask = core.current()[1]["action_mask"]
    out = []
    for b in range(B):
        ok = mask[b].nonzero().squeeze(1)
        out.append(int(ok[picks[b] % ok.numel()]) if valid[b] and ok.numel() else picks[b] % CELLS)
    return torch.tensor(out, dtype=torch.long)


@SETTINGS
@given(seed=st.integers(0, 2 ** 31 - 1), ops=OPS)
def test_alloc_core_keeps_heap_invariants_and_restores_bit_identically(seed, ops):
    drive(alloc_core, seed, ops, alloc_action, check=lambda c: check_heaps(c.heaps))


@SETTINGS
@given(seed=st.integers(0, 2 ** 31 - 1), picks=st.lists(st.integers(0, 10 ** 6), min_size=B, max_size=B))
def test_masked_address_is_a_penalised_no_op_and_a_valid_one_places_the_request(seed, picks):
    core = alloc_core()
    core.reset(seed=seed)
    for _ in range(6):  # a few placements so the heap has holes and live blocks
        core.step(alloc_action(core, picks, [True] * B))  # (rows whose episode ends restart by themselves)
    mask = core.current()[1]["action_mask"]
    occ, used, request = core.heaps.occ.clone(), core.heaps.used.clone(), core.domain.request.clone()
    bad = [int((~mask[b]).nonzero()[picks[b] % int((~mask[b]).sum())]) if bool((~mask[b]).any()) else -1
           for b in range(B)]
    rows = [b for b in range(B) if bad[b] >= 0]
    action = torch.tensor([bad[b] if bad[b] >= 0 else int(mask[b].nonzero()[0]) for b in range(B)])
    _, reward, term, trunc, info = core.step(action)
    for b in rows:  # nothing placed, nothing freed, the same request still pending, the penalty paid
        assert float(reward[b]) == core.cfg.invalid_reward and not bool(term[b])
        assert bool(info["invalid"][b])
        if not bool(trunc[b]):
            assert torch.equal(core.heaps.occ[b], occ[b]) and int(core.heaps.used[b]) == int(used[b])
            assert int(core.domain.request[b]) == int(request[b])
    for b in set(range(B)) - set(rows):  # a valid address: the request's cells are now in use
        assert not bool(info["invalid"][b]) and float(reward[b]) != core.cfg.invalid_reward
    check_heaps(core.heaps)


def test_alloc_sequences_exercise_frees_restores_and_replays():
    """The strategies above reach what they claim to: streams free blocks, restores replay steps."""
    core, freed = alloc_core(), 0
    core.reset(seed=3)
    for _ in range(60):
        before = core.heaps.n_live.clone()
        _, _, term, trunc, _ = core.step(alloc_action(core, [5, 9, 1], [True] * B))
        freed += int(((core.heaps.n_live < before + 1) & ~(term | trunc)).sum())  # placed one, yet no more live
    assert freed > 0
    ops = [("step", [1, 2, 3], [True] * B), ("checkpoint",), ("step", [4, 5, 6], [True, False, True]),
           ("reset", [True, False, False]), ("step", [7, 8, 9], [True] * B), ("restore",),
           ("step", [1, 1, 1], [True] * B), ("step", [2, 2, 2], [False] * B)]
    seen = drive(alloc_core, 11, ops, alloc_action, check=lambda c: check_heaps(c.heaps))
    assert seen == {"steps": 5, "restores": 1, "replayed": 3}


def lb_core() -> LoadBalanceCore:
    return LoadBalanceCore(B, num_servers=3, num_jobs=20)


def lb_action(core, picks: list[int], _valid: list[bool]) -> torch.Tensor:
    return torch.tensor([p % core.spec.n_actions for p in picks], dtype=torch.long)


@SETTINGS
@given(seed=st.integers(0, 2 ** 31 - 1), ops=OPS)
def test_load_balance_core_restores_bit_identically(seed, ops):
    drive(lb_core, seed, ops, lb_action)
