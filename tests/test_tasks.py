"""Task distributions: per-heap task draws that are reproducible and follow the weights."""

import pytest
import torch

from dreamalloc.alloc import AllocCore
from dreamalloc.alloc.workloads import TaskStream, make_stream

TASKS = [{"name": "small", "stream": "random", "params": {"size_max": 2}},
         {"name": "big", "stream": "random", "params": {"size_min": 6, "size_max": 9}, "weight": 3.0}]


def _run(B, seed, steps=200):
    core = AllocCore(B, cells=64, stream="tasks", stream_params={"tasks": TASKS})
    core.reset(seed=seed)
    seen = []
    for _ in range(steps):
        seen.append((core.stream.task_id.clone(), core.request.clone()))
        core.step(torch.zeros(B, dtype=torch.long))
    return seen


def test_requests_follow_each_heaps_task():
    for tid, req in _run(64, 0):
        assert (req[tid == 0] <= 2).all() and (req[tid == 1] >= 6).all()


def test_task_draws_follow_weights_and_are_reproducible():
    core = AllocCore(4000, cells=64, stream="tasks", stream_params={"tasks": TASKS})
    core.reset(seed=1)
    frac_big = core.stream.task_id.float().mean().item()
    assert abs(frac_big - 0.75) < 0.03  # weight 3 : 1
    a, b = _run(5, 7, 150), _run(5, 7, 150)
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b, strict=True))
    # heap b of a batch equals a batch of one seeded seed + b
    single = _run(1, 7 + 3, 150)
    assert all(int(x[1][3]) == int(y[1][0]) for x, y in zip(a, single, strict=True))


def test_tasks_change_between_episodes():
    ids = {int(t[0][0]) for t in _run(1, 3, 2000)}
    assert ids == {0, 1}


@pytest.mark.parametrize("tasks,match", [([], "non-empty"), ("random", "non-empty"),
                                         ([{"params": {}}], "stream"), ([{"stream": "random", "colour": 1}], "colour"),
                                         ([{"stream": "nope"}], "nope"),
                                         ([{"stream": "random", "weight": -1}], "weights")])
def test_bad_task_lists(tasks, match):
    with pytest.raises(ValueError, match=match):
        make_stream("tasks", 2, 64, tasks=tasks)


def test_state_round_trip():
    s = make_stream("tasks", 3, 64, tasks=TASKS)
    assert isinstance(s, TaskStream) and s.names == ["small", "big"]
