"""What a mallocGame env is built from: the action space's width, the observation's address bins, the reward's
scale and the tasks (which programs the rows play).

A task is ``{name, stream, params, weight}`` (the schema of the other families, so ``ranges`` / ``choices`` /
``samples`` expand task distributions through ``core.tasks.expand_tasks``); one is drawn per trial. Streams:

* ``programs``: recorded programs (``data/programs.json.gz``); params ``set`` (``train``, ``heldout_models``,
  ``heldout_batch``, ``all``), optional ``models`` / ``batches`` lists that narrow it, and ``draw``: ``random``
  (default: the episode's program drawn uniformly from (seed, episode)) or ``cycle`` (program number
  (seed + episode) mod the set's size: row b of a batch seeded 0 plays program b, for evaluations);
* ``instances``: the same, over instances given inline (params ``instances``: a list of instance dicts, ``draw``);
* ``synthetic``: a fresh random program per episode from (seed, episode); params ``n_buffers`` (32),
  ``horizon`` (48 schedule steps), ``mean_duration`` (8: live ranges 1 + Exponential), ``size_scale`` (64) and
  ``size_sigma`` (1.0: sizes ceil(size_scale x LogNormal(0, sigma))), ``max_uses`` (4: benefit = size x uses,
  uses uniform in 1..max_uses) and ``capacity_frac`` (0.5: capacity = that fraction of the peak live size, at
  least the largest buffer).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dreamalloc.core.family import config_from_kwargs
from dreamalloc.core.tasks import check_tasks
from dreamalloc.mallocgame.instances import Instance, InstanceError, from_json, program_set

STREAMS = ("programs", "instances", "synthetic")
SYNTHETIC = {"n_buffers": 32, "horizon": 48, "mean_duration": 8.0, "size_scale": 64, "size_sigma": 1.0,
             "max_uses": 4, "capacity_frac": 0.5}
DRAWS = ("random", "cycle")
TRAIN_TASK = {"name": "train", "stream": "programs", "params": {"set": "train"}}


def _bad(msg: str):
    raise ValueError(f"invalid mallocgame env config: {msg}")


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def task_pool(task: dict) -> list[Instance] | None:
    """The instances a ``programs`` / ``instances`` task draws from (checked); None for ``synthetic``."""
    p, where = dict(task.get("params") or {}), f"task {task.get('name')!r}"
    stream = task["stream"]
    valid = {"programs": ("set", "models", "batches", "draw"), "instances": ("instances", "draw"),
             "synthetic": tuple(SYNTHETIC)}[stream]
    unknown = sorted(set(p) - set(valid))
    if unknown:
        _bad(f"{where} ({stream}) has unknown param(s) {unknown}; valid: {', '.join(valid)}")
    if p.get("draw", "random") not in DRAWS:
        _bad(f"{where}: draw must be one of {', '.join(DRAWS)}, got {p.get('draw')!r}")
    if stream == "programs":
        try:
            return program_set(p.get("set", "train"), p.get("models"), p.get("batches"))
        except ValueError as e:
            _bad(f"{where}: {e}")
    if stream == "instances":
        items = p.get("instances")
        if not isinstance(items, (list, tuple)) or not items:
            _bad(f"{where}: params.instances must be a non-empty list of instances")
        try:
            return [from_json(d) for d in items]
        except InstanceError as e:
            _bad(f"{where}: {e}")
    law = {**SYNTHETIC, **p}
    for key in ("n_buffers", "horizon", "size_scale", "max_uses"):
        if not isinstance(law[key], int) or isinstance(law[key], bool) or law[key] < 1:
            _bad(f"{where}: {key} must be an integer >= 1, got {law[key]!r}")
    for key in ("mean_duration", "size_sigma"):
        if not _num(law[key]) or law[key] < 0:
            _bad(f"{where}: {key} must be a number >= 0, got {law[key]!r}")
    if not _num(law["capacity_frac"]) or not 0 < law["capacity_frac"] <= 1:
        _bad(f"{where}: capacity_frac must be in (0, 1], got {law['capacity_frac']!r}")
    return None


@dataclass
class MallocGameConfig:
    """Everything a mallocGame env is built from (the keyword arguments of the gymnasium envs)."""

    tasks: list = field(default_factory=lambda: [dict(TRAIN_TASK)])
    n_gaps: int = 8  # K: actions 0..K-1 place the buffer at the bottom of the k-th feasible gap; action K: slow
    addr_bins: int = 16  # the observation's address-occupancy profile over the buffer's live range
    normalize_reward: bool = True  # reward = benefit / the program's total benefit (a return is a fraction)
    invalid_action: str = "slow"  # a masked gap: the buffer goes to slow memory (info["invalid"]); "error": raise
    trial_episodes: int = 1
    meta_obs: bool = False
    task_obs: bool = False

    @classmethod
    def from_kwargs(cls, base: MallocGameConfig | None = None, **kwargs) -> MallocGameConfig:
        return config_from_kwargs(cls, base, "mallocgame env", kwargs)

    def validate(self) -> MallocGameConfig:
        for name, low in (("n_gaps", 1), ("addr_bins", 1), ("trial_episodes", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                _bad(f"{name} must be an integer >= {low}, got {v!r}")
        if self.invalid_action not in ("slow", "error"):
            _bad(f"invalid_action must be 'slow' (a masked gap sends the buffer to slow memory) or 'error', got "
                 f"{self.invalid_action!r}")
        try:
            self.tasks = check_tasks(self.tasks, STREAMS, "mallocgame env", self.task_obs)
        except ValueError as e:
            _bad(str(e))
        return self

    @property
    def n_actions(self) -> int:
        return self.n_gaps + 1

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @property
    def base_obs_dim(self) -> int:
        return 11 + 3 * self.n_gaps + self.addr_bins


__all__ = ["DRAWS", "STREAMS", "SYNTHETIC", "TRAIN_TASK", "MallocGameConfig", "task_pool"]
