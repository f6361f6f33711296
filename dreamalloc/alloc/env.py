"""The batched allocation environment on torch tensors: B heaps stepping together, on CPU or GPU.

The gymnasium envs (``vector.py``, ``alloc.py``) are thin numpy views of this core; agents that live on
the same device can also drive it directly. Step semantics follow Lim & Maddukuri (docs/reference.md §1):

* the agent acts only on allocation requests; frees are applied by the env between its steps;
* reward ``alloc_reward`` (0.1) per successful allocation, ``invalid_reward`` (-10) for an invalid address
  or hole: an action that ``info["action_mask"]`` marks False (the request does not fit there, or there is
  no k-th fitting hole) is a penalised no-op (heap and request unchanged, the episode goes on), never moved
  or clipped to a valid one. The step that ends the episode earns, by
  ``terminal_reward``: "lim" (default, their code): 0 when the failing request came straight after the
  placement, ``alloc_reward`` when frees came in between; "zero": always 0; "alloc": always ``alloc_reward``
  (the return is then exactly 0.1 x successful allocations);
* ``on_fail="end"`` (default): terminated when the next allocation request fits in no free run; truncated once
  ``max_allocs``
  (default 2 N) allocations have succeeded, or once ``max_invalid`` (default: ``max_allocs``) invalid
  actions have been taken in the episode (an agent stuck on an invalid address would otherwise never end
  its episode), so an episode lasts at most ``max_allocs + max_invalid`` steps.
* ``on_fail="drop"``: a request that fits in no free run is dropped instead (never placed, never freed later)
  and earns ``drop_reward``; the stream moves on to its next request, so an episode is exactly ``max_allocs``
  allocation requests, placed or dropped (the heap's request clock ``HeapBatch.clock``), and is only ever
  truncated, never terminated. A step's reward is what its placement earns (``alloc_reward``) plus
  ``drop_reward`` for every request dropped before the next one that fits; ``info["dropped"]`` counts the
  episode's dropped requests. The agent is only asked about requests that fit. In the address and hole
  spaces ``info`` carries ``n_invalid`` (invalid actions so far in the episode of the returned obs) and the
  step's ``invalid`` (its action was invalid) and ``invalid_truncated`` (it was truncated by ``max_invalid``);
  under autoreset ``final_info`` has them for the finished episode;
* ``step()`` takes an integer tensor or array of shape (B,) with values in [0, n_actions) (see
  ``core.actions``): anything else (None, a rule name, floats, another shape, an out-of-range value) is an
  ``ActionError`` saying what is expected; ``step()`` before ``reset()`` is a ``RuntimeError``.
* ``skip_forced``: after the agent's placement the env itself places every request on which all rules of
  ``heuristics`` choose the same address, and the step's reward is the sum of what those placements earn;
  the agent is asked only where the rules part (and at each episode's first request). In the heuristic
  action space that is where its choice changes the heap: placements and episode returns are those of the
  same policy without skipping, an episode just has fewer steps (``info["episode"]["l"]`` counts the agent's
  decisions). In the ``address`` / ``hole`` spaces the env's placement on the skipped requests is the rules'
  common one, so the agent places (anywhere its space allows) only the requests on which the rules disagree.

Meta-RL trials (RL^2, docs/reference.md §6): a trial is ``trial_episodes`` consecutive episodes of a heap, and a
task distribution keeps its task for the whole trial. Every info carries ``trial_start`` (the returned
obs opens a trial: recurrent agents reset their state there and only there), ``trial_end`` (this step
closed a trial) and ``episode_start``; with ``meta_obs`` the observation also holds the previous action
(one-hot), the previous reward and the episode-start flag (zeros for the action and reward at trial
start; kept across episode boundaries inside a trial). Each heap runs at its own point in its trial.
``info["task_id"]`` (task / shift streams) is for analysis; agents see it only with ``task_obs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from dreamalloc.alloc.heap import ALIGNS, RULES, FreeRuns, HeapBatch, heap_metrics, place_address
from dreamalloc.alloc.workloads import ALLOC, FREE, FREE_ALL, make_stream, stream_tasks
from dreamalloc.core.actions import ActionSpec
from dreamalloc.core.family import config_from_kwargs
from dreamalloc.core.gym_faces import to_numpy
from dreamalloc.core.trials import Trials

ACTION_SPACES = ("heuristic", "address", "hole")
SIZE_SCALES = ("raw", "fraction")
TERMINAL_REWARDS = ("lim", "zero", "alloc")
ON_FAIL = ("end", "drop")
HOLE_ORDERS = ("address", "size")  # the order of the fitting runs the hole space and the hole features list
LIM_ORDER = ("best", "worst", "first")  # Lim & Maddukuri's action order


@dataclass
class AllocConfig:
    """Everything an allocation env is built from (the keyword arguments of the gymnasium envs)."""

    cells: int = 256
    stream: str = "random"
    stream_params: dict = field(default_factory=dict)
    action: str = "heuristic"  # heuristic | address | hole
    heuristics: tuple = LIM_ORDER  # rules the heuristic action chooses among, in action order
    holes: int = 8  # K for the hole action space
    hole_order: str = "address"  # which fitting runs are holes 0..K-1: address (first fit's first) | size (best fit's)
    align: str = "start"  # where heuristics and holes place a block in its run: start | end
    bitmap: bool = True  # observe the occupancy bitmap
    history: int = 0  # observe the last n request sizes, most recent first (-1 before any)
    summary: bool = False  # observe free fraction, largest run fraction, runs / N, frag_largest
    hole_features: int = 0  # observe (start / N, length / N) of the first k runs that fit (in hole_order)
    size_scale: str = "raw"  # request size as raw cells (Lim) or as a fraction of N (Mandal)
    alloc_reward: float = 0.1
    invalid_reward: float = -10.0
    terminal_reward: str = "lim"  # what the episode's last successful allocation earns: lim | zero | alloc
    on_fail: str = "end"  # a request that fits nowhere ends the episode (end) or is dropped with drop_reward (drop)
    drop_reward: float = -1.0  # what each dropped request costs with on_fail=drop
    max_allocs: int | None = None  # truncation; None means 2 * cells
    max_invalid: int | None = None  # truncation after this many invalid actions in an episode; None: max_allocs
    ideal: bool = False  # compacting heap: the capacity bound no allocator can pass
    trial_episodes: int = 1  # K: episodes per meta-RL trial (a task distribution keeps its task for a trial)
    meta_obs: bool = False  # observe previous action (one-hot), previous reward, episode-start flag (RL^2)
    task_obs: bool = False  # observe the current task id (one-hot): an oracle, off for adaptive agents
    skip_forced: bool = False  # heuristic space: the env places requests on which every rule agrees itself

    @classmethod
    def from_kwargs(cls, base: AllocConfig | None = None, **kwargs) -> AllocConfig:
        """A config from keyword arguments (over ``base``); an unknown option is an error listing the valid ones."""
        return config_from_kwargs(cls, base, "allocation env", kwargs)

    def validate(self) -> AllocConfig:
        def bad(msg):
            raise ValueError(f"invalid allocation env config: {msg}")

        if not isinstance(self.cells, (int, np.integer)) or self.cells < 2:
            bad(f"cells must be an integer >= 2, got {self.cells!r}")
        if self.action not in ACTION_SPACES:
            bad(f"unknown action space {self.action!r}; choose one of {', '.join(ACTION_SPACES)}")
        self.heuristics = tuple(self.heuristics)
        if not self.heuristics:
            bad("heuristics must name at least one placement rule")
        for r in self.heuristics:
            if r not in RULES:
                bad(f"unknown placement heuristic {r!r}; choose among {', '.join(RULES)}")
        if self.hole_order not in HOLE_ORDERS:
            bad(f"unknown hole_order {self.hole_order!r}; choose one of {', '.join(HOLE_ORDERS)}")
        if self.align not in ALIGNS:
            bad(f"unknown align {self.align!r}; choose one of {', '.join(ALIGNS)}")
        if self.terminal_reward not in TERMINAL_REWARDS:
            bad(f"unknown terminal_reward {self.terminal_reward!r}; choose one of {', '.join(TERMINAL_REWARDS)}")
        if self.on_fail not in ON_FAIL:
            bad(f"unknown on_fail {self.on_fail!r}; choose one of {', '.join(ON_FAIL)}")
        if self.on_fail == "drop" and self.terminal_reward != "lim":
            bad(f"terminal_reward={self.terminal_reward!r} has no effect with on_fail=drop (no episode ends on a "
                "failed request); leave it at its default")
        if self.size_scale not in SIZE_SCALES:
            bad(f"unknown size_scale {self.size_scale!r}; choose one of {', '.join(SIZE_SCALES)}")
        for name in ("holes", "history", "hole_features"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 0:
                bad(f"{name} must be a non-negative integer, got {v!r}")
        if self.action == "hole" and self.holes < 1:
            bad("holes must be >= 1 for the hole action space")
        if not isinstance(self.trial_episodes, (int, np.integer)) or self.trial_episodes < 1:
            bad(f"trial_episodes must be an integer >= 1, got {self.trial_episodes!r}")
        if self.task_obs and self.n_tasks < 2:
            bad(f"task_obs needs a stream with several tasks (tasks, shift, regimes, ...), not {self.stream!r}")
        if self.max_allocs is None:
            self.max_allocs = 2 * self.cells
        if self.max_allocs < 1:
            bad(f"max_allocs must be >= 1, got {self.max_allocs}")
        if self.max_invalid is None:
            self.max_invalid = self.max_allocs
        if isinstance(self.max_invalid, bool) or not isinstance(self.max_invalid, (int, np.integer)) or \
                self.max_invalid < 1:
            bad(f"max_invalid must be an integer >= 1 (invalid actions per episode before truncation), got "
                f"{self.max_invalid!r}")
        return self

    @property
    def n_actions(self) -> int:
        return {"heuristic": len(self.heuristics), "address": self.cells, "hole": self.holes}[self.action]

    @property
    def n_tasks(self) -> int:
        """Tasks the stream switches among (1 for a single stream)."""
        tasks = stream_tasks(self.stream, self.stream_params)
        return 1 if tasks is None else len(tasks)

    @property
    def meta_dim(self) -> int:
        """Width of the meta-RL part of the observation: previous action one-hot, reward, episode start."""
        return (self.n_actions + 2) if self.meta_obs else 0

    @property
    def domain_obs_dim(self) -> int:
        """Width of the heap's own observation (without the RL^2 inputs and the task one-hot)."""
        return (self.cells if self.bitmap else 0) + 1 + self.history + 4 * self.summary + 2 * self.hole_features

    @property
    def action_features(self) -> tuple[int, ...]:
        """``EnvSpec.action_features``: in the hole space with ``hole_features >= holes`` the observation holds
        each hole action's (start, length), 2 values per hole from this offset; () otherwise."""
        if self.action != "hole" or self.hole_features < self.holes:
            return ()
        return (self.domain_obs_dim - 2 * self.hole_features, 2)  # the hole features close the heap's own part

    @property
    def obs_dim(self) -> int:
        return ((self.cells if self.bitmap else 0) + 1 + self.history + 4 * self.summary + 2 * self.hole_features
                + self.meta_dim + (self.n_tasks if self.task_obs else 0))

    def obs_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        size_hi = float(self.cells) if self.size_scale == "raw" else 1.0
        lo = [0.0] * (self.cells if self.bitmap else 0) + [0.0] + [-1.0] * self.history
        hi = [1.0] * (self.cells if self.bitmap else 0) + [size_hi] + [size_hi] * self.history
        lo += [0.0] * (4 * self.summary + 2 * self.hole_features)
        hi += [1.0] * (4 * self.summary + 2 * self.hole_features)
        if self.meta_obs:
            r_lo = min(self.invalid_reward, self.alloc_reward, 0.0)
            r_hi = max(self.invalid_reward, self.alloc_reward, 0.0)
            if self.on_fail == "drop":  # a step can drop every request left in the episode
                r_lo = min(r_lo, self.alloc_reward + self.drop_reward * self.max_allocs)
                r_hi = max(r_hi, self.alloc_reward + self.drop_reward * self.max_allocs)
            lo += [0.0] * self.n_actions + [r_lo, 0.0]
            hi += [1.0] * self.n_actions + [r_hi, 1.0]
        if self.task_obs:
            lo += [0.0] * self.n_tasks
            hi += [1.0] * self.n_tasks
        return np.asarray(lo, np.float32), np.asarray(hi, np.float32)


class AllocDomain:
    """The allocation dynamics of B heaps over one ``HeapBatch`` (a ``core.DomainCore``); ``AllocCore`` adds the
    episodes, trials and RL^2 inputs."""

    def __init__(self, num_heaps: int, cfg: AllocConfig, device="cpu"):
        self.cfg = cfg
        self.B, self.N = int(num_heaps), int(cfg.cells)
        self.device = dev = torch.device(device)
        self.obs_dim, self.n_actions, self.n_tasks = cfg.domain_obs_dim, cfg.n_actions, cfg.n_tasks
        self.masked = cfg.action != "heuristic"
        self.action_space = cfg.action
        self.action_features = cfg.action_features
        self.max_episode_steps = cfg.max_allocs + (cfg.max_invalid if self.masked else 0)
        self.heaps = HeapBatch(self.B, self.N, dev)
        self.stream = make_stream(cfg.stream, self.B, self.N, dev, **dict(cfg.stream_params))
        self.request = torch.zeros(self.B, dtype=torch.long, device=dev)
        self.hist = torch.full((self.B, cfg.history), -1, dtype=torch.long, device=dev)
        self.n_invalid = torch.zeros(self.B, dtype=torch.long, device=dev)  # invalid actions this episode
        self.freed = torch.zeros(self.B, dtype=torch.bool, device=dev)  # frees applied since the placement
        self.drop = cfg.on_fail == "drop"
        if cfg.trial_episodes > 1 and hasattr(self.stream, "set_trial_length"):
            self.stream.set_trial_length(cfg.trial_episodes)
        f64 = dict(dtype=torch.float64, device=dev)  # rewards in float64: exact sums of 0.1 in the returns
        self._alloc_r = torch.tensor(cfg.alloc_reward, **f64)
        self._invalid_r = torch.tensor(cfg.invalid_reward, **f64)
        self._drop_r = torch.tensor(cfg.drop_reward, **f64)
        self.carry = torch.zeros(self.B, **f64)  # drops at an episode's start, charged at its first step
        self.placed_at = torch.full((self.B,), -1, dtype=torch.long, device=dev)  # the last step's addresses
        self.runs: FreeRuns = FreeRuns.of(self.heaps.occ)
        self.action_spec = ActionSpec(cfg.n_actions, self.B, dev, "heap", f"the {cfg.action} action space "
                                      f"Discrete({cfg.n_actions})",
                                      cfg.heuristics if cfg.action == "heuristic" else ())

    @property
    def task_id(self) -> torch.Tensor | None:
        return getattr(self.stream, "task_id", None)

    # ----------------------------------------------------------------------------------------------
    def start(self, rows: torch.Tensor, seed: torch.Tensor, episode: torch.Tensor, trial: torch.Tensor) -> None:
        """New episodes in ``rows``: empty heaps, the stream's episode ``(seed, episode)`` up to its first request
        (a task stream keeps its task for ``trial_episodes`` episodes)."""
        self.heaps._reset(rows)
        self.hist[rows] = -1
        self.n_invalid[rows] = 0
        self.stream.reset(self.heaps, rows, seed, episode)
        self._advance(rows)
        if rows.numel() < self.B and bool((self.heaps.used[rows] == 0).all()):  # the common case, cheaply
            mask = torch.zeros(self.B, dtype=torch.bool, device=self.device)
            mask[rows] = True
            self.runs = self.runs.emptied(mask)
        else:
            self.runs = FreeRuns.of(self.heaps.occ)
        if self.drop:  # a pre-filled heap may not fit its first request: dropped, charged at the first step
            self.carry[rows] = 0.0
            self._drop_unfit(rows[self.runs.largest()[rows] < self.request[rows]], self.carry)

    def _advance(self, rows: torch.Tensor) -> None:
        """Apply the stream's frees until every row has a pending allocation request."""
        first = rows
        for _ in range(4 * self.N + 16):
            if rows.numel() == 0:
                self.heaps.check_size(self.request[first])  # one check per step: streams must stay in [1, N]
                return
            req = self.stream.next(self.heaps, rows)
            is_alloc = req.op == ALLOC
            f = (req.op == FREE) & (req.block >= 0)
            if f.any():
                self.heaps._release(rows[f], req.block[f])
            fa = req.op == FREE_ALL
            if fa.any():
                self.heaps._clear(rows[fa])
            self.freed[rows[f | fa]] = True
            a_rows = rows[is_alloc]
            self.request[a_rows] = req.size[is_alloc]
            rows = rows[~is_alloc]
        raise RuntimeError(f"stream {self.cfg.stream!r} issued {4 * self.N + 16} requests in a row without an "
                           "allocation; a stream must keep allocating")

    # ----------------------------------------------------------------------------------------------
    def addresses(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode actions into start addresses and validity, against the current free runs."""
        runs, size, cfg = self.runs, self.request, self.cfg
        if cfg.action == "heuristic":
            addr = torch.full_like(size, -1)
            for i, rule in enumerate(cfg.heuristics):
                m = action == i
                if m.any():
                    addr = torch.where(m, place_address(runs, size, rule, self.heaps.rover, cfg.align), addr)
            return addr, addr >= 0
        if cfg.action == "address":
            return action, runs.window_free(action, size)
        start, length = runs.first_fitting(size, cfg.holes, cfg.hole_order == "size")
        st = start.gather(1, action[:, None]).squeeze(1)
        ln = length.gather(1, action[:, None]).squeeze(1)
        valid = ln > 0
        addr = st + ln - size if cfg.align == "end" else st
        return torch.where(valid, addr, -1), valid

    def _place_and_advance(self, rows: torch.Tensor, addr: torch.Tensor) -> None:
        """Place each row's pending request at ``addr`` and apply the stream's frees up to its next request."""
        size = self.request[rows]
        self.heaps._place(rows, addr, size)
        self.freed[rows] = False
        if self.cfg.history and rows.numel():
            self.hist[rows] = torch.cat([size[:, None], self.hist[rows, :-1]], 1)
        self._advance(rows)
        if self.cfg.ideal:
            self._compact_where_needed(rows)

    def _placement_reward(self, rows: torch.Tensor, fits: torch.Tensor) -> torch.Tensor:
        """What the latest placement of each row earns: ``alloc_reward``, or the terminal rule's value when
        the next request fits nowhere (the episode ends on it)."""
        alloc_r = self._alloc_r
        if self.drop:  # no episode ends on a failed request
            return alloc_r.expand(rows.numel())
        last = {"lim": torch.where(self.freed[rows], alloc_r, 0.0), "zero": torch.zeros_like(alloc_r),
                "alloc": alloc_r}[self.cfg.terminal_reward]
        return torch.where(fits, alloc_r, last)

    def _skip_forced(self, rows: torch.Tensor, reward: torch.Tensor, fits: torch.Tensor) -> bool:
        """``skip_forced``: place, for the agent, every following request on which all rules of the action set
        agree (a move with no choice in it), adding what each placement earns to this step's reward, until
        a request where the rules part, the episode's end, or truncation. Returns whether anything was placed."""
        cfg, placed = self.cfg, False
        rows = rows[self.heaps.clock(rows) < cfg.max_allocs]
        while rows.numel():
            runs = FreeRuns.of(self.heaps.occ[rows])
            size, rover = self.request[rows], self.heaps.rover[rows]
            addrs = [place_address(runs, size, rule, rover, cfg.align) for rule in cfg.heuristics]
            same = torch.stack([a == addrs[0] for a in addrs[1:]]).all(0) if len(addrs) > 1 else \
                torch.ones_like(size, dtype=torch.bool)
            rows, at = rows[same], addrs[0][same]
            if rows.numel() == 0:
                break
            self._place_and_advance(rows, at)
            placed = True
            f = FreeRuns.of(self.heaps.occ[rows]).largest() >= self.request[rows]
            reward[rows] += self._placement_reward(rows, f)
            if self.drop and not bool(f.all()) and self._drop_unfit(rows[~f], reward):
                f = self.runs.largest()[rows] >= self.request[rows]
            fits[rows] = f
            rows = rows[f & (self.heaps.clock(rows) < cfg.max_allocs)]
        return placed

    def step(self, a: torch.Tensor):
        """Place each heap's request as its checked action says; apply the frees up to the next request."""
        addr, valid = self.addresses(a)
        self.placed_at = torch.where(valid, addr, -1)  # where this step put each row's block (-1: invalid action)
        rows = valid.nonzero().squeeze(1)
        self._place_and_advance(rows, addr[rows])
        runs = FreeRuns.of(self.heaps.occ)
        fits = runs.largest() >= self.request
        every = torch.arange(self.B, device=self.device)
        reward = torch.where(valid, self._placement_reward(every, fits), self._invalid_r)
        if self.drop:
            reward += self.carry
            self.carry.zero_()
            if not bool(fits.all()) and self._drop_unfit(every[~fits], reward):
                runs = self.runs
                fits = runs.largest() >= self.request
        if self.cfg.skip_forced and self._skip_forced(rows[fits[rows]], reward, fits):
            runs = FreeRuns.of(self.heaps.occ)
        terminated = valid & ~fits & (not self.drop)
        truncated = valid & (fits | self.drop) & (self.heaps.clock(every) >= self.cfg.max_allocs)
        facts = {}
        if self.masked:  # heuristic actions are always valid; the others may not be
            invalid = ~valid
            self.n_invalid += invalid
            invalid_trunc = invalid & (self.n_invalid >= self.cfg.max_invalid)
            truncated |= invalid_trunc
            facts = {"invalid": invalid, "invalid_truncated": invalid_trunc}
        self.runs = runs
        return reward, terminated, truncated, facts

    def _drop_unfit(self, todo: torch.Tensor, reward: torch.Tensor) -> bool:
        """``on_fail="drop"``: in the heap rows ``todo`` (whose pending request fits nowhere) drop the request
        (``drop_reward`` added to ``reward[row]``), let the stream move on to its next allocation request and
        repeat until one fits or the episode has had ``max_allocs`` requests (the row is then truncated, not
        terminated). Returns whether anything was dropped (``self.runs`` is then refreshed)."""
        todo = todo[self.heaps.clock(todo) < self.cfg.max_allocs]
        if todo.numel() == 0:
            return False
        while todo.numel():
            self.heaps._drop(todo)
            reward[todo] += self._drop_r
            todo = todo[self.heaps.clock(todo) < self.cfg.max_allocs]
            self._advance(todo)
            if self.cfg.ideal:
                self._compact_where_needed(todo)
            todo = todo[FreeRuns.of(self.heaps.occ[todo]).largest() < self.request[todo]]
        self.runs = FreeRuns.of(self.heaps.occ)
        return True

    def _compact_where_needed(self, rows: torch.Tensor) -> None:
        """Ideal heap: compact the rows whose request fits in the free cells but in no single run, so the
        agent always sees (and its mask describes) the heap it will act on."""
        if rows.numel() == 0:
            return
        largest = FreeRuns.of(self.heaps.occ[rows]).largest()
        req = self.request[rows]
        short = (largest < req) & (self.N - self.heaps.used[rows] >= req)
        if short.any():
            self.heaps._compact(rows[short])

    # ----------------------------------------------------------------------------------------------
    def action_mask(self) -> torch.Tensor | None:
        """[B, n_actions] bool for the address and hole spaces (every heuristic is always valid)."""
        if self.cfg.action == "address":
            return self.runs.address_mask(self.request)
        if self.cfg.action == "hole":
            n_fit = self.runs.n_fitting(self.request)
            return torch.arange(self.cfg.holes, device=self.device)[None, :] < n_fit[:, None]
        return None

    def info(self) -> dict:
        info = heap_metrics(self.heaps, self.runs)
        info["request"] = self.request.clone()
        if self.task_id is not None:
            info["task_id"] = self.task_id.clone()
        if getattr(self.stream, "segment", None) is not None:
            info["segment"] = self.stream.segment.clone()
        if self.drop:
            info["dropped"] = self.heaps.n_dropped.clone()
        return self._add_mask(info)

    def _add_mask(self, info: dict) -> dict:
        """The address and hole spaces' keys: the action mask, invalid actions so far, and this step's flags."""
        mask = self.action_mask()
        if mask is not None:
            info["action_mask"] = mask
            info["n_invalid"] = self.n_invalid.clone()
            info["invalid"] = info["invalid_truncated"] = torch.zeros_like(mask[:, 0])
        return info

    def observe(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """[n, domain obs_dim] float32, written part by part into one fresh buffer (one pass over the bitmap)."""
        cfg, N = self.cfg, float(self.N)
        sel = (lambda t: t) if rows is None else (lambda t: t[rows])
        scale = 1.0 if cfg.size_scale == "raw" else 1.0 / N
        n = self.B if rows is None else rows.numel()
        out = torch.empty((n, self.obs_dim), dtype=torch.float32, device=self.device)
        i = 0
        if cfg.bitmap:
            out[:, : self.N].copy_(sel(self.heaps.occ))
            i = self.N
        out[:, i] = sel(self.request) * scale
        i += 1
        if cfg.history:
            h = sel(self.hist).float()
            out[:, i: i + cfg.history] = torch.where(h < 0, -1.0, h * scale)
            i += cfg.history
        if cfg.summary:
            runs = self.runs
            free = (self.N - sel(self.heaps.used)).float()
            largest = sel(runs.largest()).float()
            frag = torch.where(free > 0, 1.0 - largest / free.clamp(min=1), 0.0)
            out[:, i: i + 4] = torch.stack([free / N, largest / N, sel(runs.counts()).float() / N, frag], 1)
            i += 4
        if cfg.hole_features:
            st, ln = self.runs.first_fitting(self.request, cfg.hole_features, cfg.hole_order == "size")
            out[:, i: i + 2 * cfg.hole_features] = torch.stack([sel(st).float() / N, sel(ln).float() / N],
                                                               2).flatten(1)
            i += 2 * cfg.hole_features
        return out

    # ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue these episodes exactly (for checkpoints)."""
        return {"heaps": self.heaps.state_dict(), "stream": self.stream.state_dict(),
                "request": self.request.clone(), "hist": self.hist.clone(), "n_invalid": self.n_invalid.clone(),
                "freed": self.freed.clone(), "carry": self.carry.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.heaps.load_state_dict(state["heaps"])
        self.stream.load_state_dict(state["stream"])
        for k in ("request", "hist"):
            getattr(self, k).copy_(state[k])
        for k in ("n_invalid", "freed", "carry"):  # absent in older checkpoints
            if k in state:
                getattr(self, k).copy_(state[k])
        self.runs = FreeRuns.of(self.heaps.occ)


class AllocCore(Trials):
    """B allocation envs: ``AllocDomain``'s dynamics inside the trials component; tensors in, tensors out."""

    def __init__(self, num_heaps: int, config: AllocConfig | None = None, device="cpu",
                 autoreset: bool = True, jit: bool | None = None, **overrides):
        from dreamalloc.alloc.jit import make_domain  # (jit imports this module)

        cfg = AllocConfig.from_kwargs(config, **overrides).validate()
        super().__init__(make_domain(num_heaps, cfg, device, jit), cfg.trial_episodes, cfg.meta_obs, cfg.task_obs,
                         autoreset, unit="heap")

    def step(self, action):
        """``Trials.step``; the compiled domain runs it fused with its own step where it can (same results)."""
        out = self._fused(action, False)
        return super().step(action) if out is None else out

    def step_numpy(self, action):
        """``step`` as the gymnasium face returns it (numpy arrays, also inside info); the fused compiled step
        builds them directly."""
        out = self._fused(action, True)
        return tuple(to_numpy(x) for x in super().step(action)) if out is None else out

    def _fused(self, action, as_numpy: bool):
        fused = getattr(self.domain, "fused_step", None)
        return None if fused is None else fused(self, action, as_numpy=as_numpy)


__all__ = ["ACTION_SPACES", "LIM_ORDER", "AllocConfig", "AllocCore", "AllocDomain"]
