"""DQN with Stable-Baselines3's semantics, on the batched env's tensors.

Lim & Maddukuri trained SB3's DQN; this agent follows SB3 step for step so their numbers are a fair target:

* counters: ``env_steps`` grows by B per batched env call, ``calls`` by one. Actions are uniformly random
  while ``env_steps < learning_starts``, then epsilon-greedy with epsilon falling linearly from
  ``exploration_initial_eps`` to ``exploration_final_eps`` over the first ``exploration_fraction`` of
  ``total_steps`` (SB3's ``get_linear_fn`` of the progress made so far);
* after each call: the target net is updated when ``calls % max(target_update_interval // B, 1) == 0``
  (Polyak with ``tau``; tau 1 copies), then, every ``train_freq`` calls and once ``env_steps >
  learning_starts``, ``gradient_steps`` gradient steps (-1: one per env step of the round). As in SB3,
  ``train_freq`` counts env calls, so with B envs a round holds ``train_freq x B`` transitions;
* loss: Huber between Q(s, a) and r + gamma (1 - terminated) max_a' Q_target(s', a') on a minibatch drawn
  uniformly with replacement; Adam; gradient norm clipped at ``max_grad_norm``. A time-limit truncation
  bootstraps from the pre-reset final observation; a termination does not.

Differences from SB3, on purpose: invalid actions (``info["action_mask"]``) are never taken, not even by
random exploration, and the bootstrap maximum runs over the next state's valid actions only (its mask is
stored with the transition); with several envs each env draws its own exploration coin (SB3 draws one for
the batch); ``double_q`` (off by default) chooses a' with the online net.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar

import numpy as np
import torch
from torch.nn import functional as F

from dreamalloc.agents.base import (
    ActingStep,
    Agent,
    GreedyStep,
    NonFiniteLossError,
    flat_optimizer_step,
    optimizer_step,
)
from dreamalloc.core.checks import COUNT, FINITE, NONNEG, POSITIVE, UNIT, OneOf, Range, between, ge
from dreamalloc.nn import fastmlp
from dreamalloc.nn.fastmlp import as_numpy, mask_args
from dreamalloc.nn.layers import ACTIVATIONS, masked_logits, mlp


@dataclass
class DQNConfig:
    """Defaults: Lim & Maddukuri's SB3 DQN (docs/reference.md section 1); other keys at SB3's defaults."""

    RANGES: ClassVar[dict] = {  # checked at start by the harness (dreamalloc/core/checks.py)
        "lr": POSITIVE, "gamma": UNIT, "buffer_size": COUNT, "learning_starts": NONNEG, "batch_size": COUNT,
        "train_freq": COUNT, "gradient_steps": ge(-1), "target_update_interval": COUNT,
        "tau": between(0.0, 1.0, lo_open=True), "exploration_fraction": UNIT, "exploration_initial_eps": UNIT,
        "exploration_final_eps": UNIT, "max_grad_norm": FINITE, "hidden": Range(lo=1, each=True),
        "activation": OneOf(tuple(ACTIVATIONS)), "total_steps": NONNEG}
    name: str = "dqn"
    lr: float = 1e-4
    gamma: float = 1.0
    buffer_size: int = 1_000_000  # transitions; storage grows with use (min(buffer_size, total_steps) at first)
    learning_starts: int = 100  # env steps of uniformly random actions before any learning
    batch_size: int = 32
    train_freq: int = 4  # env calls (B env steps each) between training rounds, as SB3 counts them
    gradient_steps: int = 1  # per training round; -1: as many as env steps in the round
    target_update_interval: int = 10_000  # env steps
    tau: float = 1.0  # target update rate (1: hard copy)
    exploration_fraction: float = 0.1  # of total_steps over which epsilon falls
    exploration_initial_eps: float = 1.0
    exploration_final_eps: float = 0.05
    max_grad_norm: float = 10.0  # <= 0: no clipping
    double_q: bool = False
    hidden: list[int] = field(default_factory=lambda: [32, 32])
    activation: str = "relu"
    total_steps: int = 0  # env steps of the whole run (``${steps}`` in the yaml): the epsilon schedule needs it
    # the compiled CPU path (dreamalloc/nn/fastmlp.py: same update, gradients written by hand) where the Q-net is
    # a relu / tanh MLP on the CPU; false: torch autograd everywhere
    fast: bool = True


class Replay:
    """A ring of transitions in preallocated tensors on the agent's device, allocated as it fills (doubling,
    up to ``capacity`` rows) so a 1e6-transition buffer costs only what a run uses."""

    KEYS = ("obs", "next_obs", "actions", "rewards", "terminated", "next_mask")

    def __init__(self, capacity: int, obs_dim: int, n_actions: int, device, initial: int):
        self.capacity, self.obs_dim, self.n_actions, self.device = int(capacity), obs_dim, n_actions, device
        self.pos = 0  # next row to write
        self.size = 0  # rows holding transitions
        self.masked: bool | None = None  # decided by the first transitions (whether the env gives masks)
        self.rows = 0
        self.initial = max(1, min(self.capacity, int(initial)))
        for k in self.KEYS:
            setattr(self, k, None)

    def _allocate(self, rows: int) -> None:
        """Grow every tensor to ``rows`` rows, keeping the stored ones (only before the ring first wraps).

        Uninitialised storage: only rows below ``size`` are ever read, and every row is written before it is
        (so the memory is touched, and resident, as the ring fills rather than all at once)."""
        dev, D, A = self.device, self.obs_dim, self.n_actions
        new = {"obs": torch.empty(rows, D, dtype=torch.float32, device=dev),
               "next_obs": torch.empty(rows, D, dtype=torch.float32, device=dev),
               "actions": torch.empty(rows, dtype=torch.long, device=dev),
               "rewards": torch.empty(rows, dtype=torch.float32, device=dev),
               "terminated": torch.empty(rows, dtype=torch.bool, device=dev),
               "next_mask": torch.empty(rows, A, dtype=torch.bool, device=dev) if self.masked else None}
        for k, t in new.items():
            old = getattr(self, k)
            if t is not None and old is not None and self.size:
                t[: self.size].copy_(old[: self.size])
            setattr(self, k, t)
        self.rows = rows

    def add(self, obs, action, reward, terminated, next_obs, next_mask) -> None:
        B = obs.shape[0]
        if self.masked is None:
            self.masked = next_mask is not None
        if self.rows < self.capacity and self.pos + B > self.rows:
            # the first allocation holds whole batches: a run of ``initial`` env steps takes ceil(initial / B)
            # calls, and one row short would double the buffer (and copy it) at the run's last step
            rows = -(-self.initial // B) * B if self.rows == 0 else 2 * self.rows
            self._allocate(min(self.capacity, max(rows, self.pos + B)))
        p = self.pos
        idx = slice(p, p + B) if p + B <= self.capacity else torch.arange(p, p + B, device=self.device) % self.capacity
        self.obs[idx] = obs
        self.next_obs[idx] = next_obs
        self.actions[idx] = action
        self.rewards[idx] = reward.to(torch.float32)
        self.terminated[idx] = terminated
        if self.masked:
            self.next_mask[idx] = True if next_mask is None else next_mask
        self.pos = (p + B) % self.capacity
        self.size = min(self.size + B, self.capacity)

    def draw(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """Rows of ``n`` transitions drawn uniformly with replacement (SB3's sampling)."""
        return torch.randint(0, self.size, (n,), generator=gen, device=self.device)

    def sample(self, n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """``n`` transitions (``draw``)."""
        i = self.draw(n, gen)
        return {k: getattr(self, k)[i] if getattr(self, k) is not None else None for k in self.KEYS}

    def state_dict(self) -> dict:
        """Only the filled rows (a checkpoint is as big as the replay actually is)."""
        out = {"capacity": self.capacity, "pos": self.pos, "size": self.size, "masked": self.masked}
        for k in self.KEYS:
            t = getattr(self, k)
            out[k] = t[: self.size].clone() if t is not None else None
        return out

    def load_state_dict(self, state: dict) -> None:
        self.capacity, self.pos, self.size = int(state["capacity"]), int(state["pos"]), int(state["size"])
        self.masked = state["masked"]
        for k in self.KEYS:
            setattr(self, k, None)
        self.rows = 0
        if self.masked is not None:
            # Room up to where the ring writes next; a wrapped ring (size == capacity) gets all of it.
            self._allocate(max(self.size, min(self.capacity, self.initial)))
            for k in self.KEYS:
                if state[k] is not None:
                    getattr(self, k)[: self.size].copy_(state[k].to(self.device))


class DQNAgent(Agent):
    name = "dqn"
    replay_by_default = False  # checkpoints leave the replay out unless save_replay=true
    training_modules = ("q_target",)
    Config = DQNConfig
    learns = True

    def __init__(self, obs_dim, n_actions, env, device, **hparams):
        super().__init__(obs_dim, n_actions, env, torch.device(device))
        self.cfg = c = self._make_config(hparams)
        self.q = mlp(obs_dim, c.hidden, n_actions, c.activation).to(self.device)  # PyTorch's default init, as SB3
        self.q_target = mlp(obs_dim, c.hidden, n_actions, c.activation).to(self.device)
        self.q_target.load_state_dict(self.q.state_dict())
        self.q_target.requires_grad_(False)
        # The fused kernel where there is one: about a third of the per-tensor step's time for these small nets.
        self.opt = torch.optim.Adam(self.q.parameters(), lr=c.lr, fused=self.device.type in ("cpu", "cuda"))
        # Our own generator (seeded from torch's global one): exploration and replay draws continue exactly
        # after a checkpoint is loaded.
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(int(torch.randint(0, 2**62, ())))
        self.replay = self._new_replay()
        self.fast = self._fast_path()
        self.env_steps = 0  # SB3's num_timesteps
        self.calls = 0  # SB3's _n_calls: batched env steps observed
        self.n_updates = 0  # gradient steps taken
        self.target_syncs = 0
        self._train_due = 0  # env steps collected in a round that is due for training (0: none due)
        self.metrics: dict[str, float | torch.Tensor] = {}

    # --- configuration ------------------------------------------------------------------------------
    def _make_config(self, hparams: dict) -> DQNConfig:
        names = {f.name for f in fields(DQNConfig)}
        unknown = sorted(set(hparams) - names)
        if unknown:
            raise ValueError(f"unknown dqn hyperparameter(s) {unknown}; valid: {', '.join(sorted(names))}")
        c = DQNConfig(**hparams)
        c.hidden = [int(h) for h in c.hidden]

        def bad(msg):
            raise ValueError(f"agent=dqn: {msg}")

        for key in ("buffer_size", "batch_size", "train_freq", "target_update_interval"):
            if int(getattr(c, key)) < 1:
                bad(f"{key} must be >= 1, got {getattr(c, key)}")
        if c.learning_starts < 0:
            bad(f"learning_starts must be >= 0, got {c.learning_starts}")
        if c.gradient_steps < -1:
            bad(f"gradient_steps must be >= 0, or -1 for one per env step, got {c.gradient_steps}")
        if not 0.0 <= c.gamma <= 1.0:
            bad(f"gamma must be in [0, 1], got {c.gamma}")
        if not 0.0 < c.tau <= 1.0:
            bad(f"tau must be in (0, 1], got {c.tau}")
        if c.lr <= 0:
            bad(f"lr must be > 0, got {c.lr}")
        if not 0.0 <= c.exploration_fraction <= 1.0:
            bad(f"exploration_fraction must be in [0, 1], got {c.exploration_fraction}")
        for key in ("exploration_initial_eps", "exploration_final_eps"):
            if not 0.0 <= getattr(c, key) <= 1.0:
                bad(f"{key} must be in [0, 1], got {getattr(c, key)}")
        if c.activation not in ACTIVATIONS:
            bad(f"unknown activation {c.activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        if any(h < 1 for h in c.hidden):
            bad(f"hidden widths must be >= 1, got {c.hidden}")
        if c.exploration_fraction > 0 and c.total_steps < 1:
            bad("the epsilon schedule needs the run's length: set total_steps (total_steps: ${steps} in "
                "conf/agent/dqn.yaml) or exploration_fraction=0")
        return c

    def _new_replay(self) -> Replay:
        """An empty buffer whose first allocation is what the run will fill: min(buffer_size, total_steps)."""
        c = self.cfg
        initial = min(c.buffer_size, c.total_steps) if c.total_steps > 0 else min(c.buffer_size, 65_536)
        return Replay(c.buffer_size, self.obs_dim, self.n_actions, self.device, initial)

    def meta(self) -> dict:
        return {**super().meta(), "hidden": list(self.cfg.hidden), "activation": self.cfg.activation}

    def _fast_path(self) -> tuple[fastmlp.FlatMLPs, fastmlp.FlatMLPs] | None:
        """(online, target) nets laid out for the compiled kernels, or None where they do not apply."""
        if not (self.cfg.fast and fastmlp.AVAILABLE and self.device.type == "cpu"
                and fastmlp.plain_mlp(self.q) is not None):
            return None
        online, target = fastmlp.FlatMLPs([self.q]), fastmlp.FlatMLPs([self.q_target])
        online.bind(self.opt)
        return online, target

    # --- acting ---------------------------------------------------------------------------------------
    def epsilon(self, env_steps: int | None = None) -> float:
        """SB3's linear schedule at ``env_steps`` (default: the steps observed so far)."""
        c = self.cfg
        t = self.env_steps if env_steps is None else env_steps
        progress = t / c.total_steps if c.total_steps > 0 else 1.0
        if progress >= c.exploration_fraction:
            return c.exploration_final_eps
        return c.exploration_initial_eps + progress * (c.exploration_final_eps - c.exploration_initial_eps) / (
            c.exploration_fraction)

    def act(self, obs, state, info, deterministic=False):
        mask = info.get("action_mask") if info else None
        eps = 0.0 if deterministic else 1.0 if self.env_steps < self.cfg.learning_starts else self.epsilon()
        if eps < 1.0:
            if self.fast is not None:
                f = self.fast[0]
                greedy = torch.from_numpy(fastmlp.greedy(f.p, f.specs[0], f.act, as_numpy(obs), *mask_args(mask)))
            else:
                with torch.no_grad():
                    greedy = masked_logits(self.q(obs), mask).argmax(-1)
            if eps <= 0.0:
                return greedy, state
        # Uniform over the valid actions: argmax of masked uniform noise.
        B = obs.shape[0]
        noise = torch.rand((B, self.n_actions), generator=self.gen, device=obs.device)
        rand = masked_logits(noise, mask).argmax(-1)
        if eps >= 1.0:
            return rand, state
        coin = torch.rand((B,), generator=self.gen, device=obs.device) < eps
        return torch.where(coin, rand, greedy), state

    def acting_step(self, masked: bool = False) -> ActingStep:
        """The greedy action of the Q-network (``act`` with ``deterministic``)."""
        return GreedyStep.acting_step(self.q, False, self.obs_dim, self.n_actions, masked)

    # --- learning -------------------------------------------------------------------------------------
    def observe(self, obs, action, reward, terminated, truncated, next_obs, info) -> None:
        """Store the transitions, then SB3's per-call bookkeeping (target update; is a training round due)."""
        next_mask = info.get("action_mask") if info else None
        fin = info.get("final_info") if info else None
        if next_mask is not None and fin is not None and "action_mask" in fin:
            # An episode ended: its next state is the pre-reset final one, with that state's mask.
            next_mask = torch.where(info["_final_obs"][:, None], fin["action_mask"], next_mask)
        self.replay.add(obs, action.long(), reward, terminated.to(torch.bool), next_obs, next_mask)
        B = obs.shape[0]
        self.env_steps += B
        self.calls += 1
        c = self.cfg
        if self.calls % max(c.target_update_interval // B, 1) == 0:
            self._sync_target()
        if self.calls % c.train_freq == 0 and self.env_steps > c.learning_starts:
            self._train_due = c.train_freq * B

    def _sync_target(self) -> None:
        with torch.no_grad():
            if self.cfg.tau >= 1.0:
                for t, s in zip(self.q_target.parameters(), self.q.parameters(), strict=True):
                    t.copy_(s)
            else:
                for t, s in zip(self.q_target.parameters(), self.q.parameters(), strict=True):
                    t.lerp_(s, self.cfg.tau)
        self.target_syncs += 1

    def targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """TD targets [n]: r + gamma (1 - terminated) max over the next state's valid actions."""
        with torch.no_grad():
            next_q = masked_logits(self.q_target(batch["next_obs"]), batch["next_mask"])
            if self.cfg.double_q:
                a = masked_logits(self.q(batch["next_obs"]), batch["next_mask"]).argmax(-1, keepdim=True)
                best = next_q.gather(1, a).squeeze(1)
            else:
                best = next_q.max(-1).values
            return batch["rewards"] + (~batch["terminated"]).float() * self.cfg.gamma * best

    def update(self, step: int) -> dict[str, float]:
        """Trains when a round is due. Metrics are 0-dim tensors (``float()`` them): no GPU sync per step."""
        if not self._train_due or self.replay.size == 0:
            return self.metrics
        c = self.cfg
        n = c.gradient_steps if c.gradient_steps >= 0 else self._train_due
        self._train_due = 0
        loss = q_mean = None
        for i in range(n):
            if self.fast is not None:
                loss, q_mean = self._fast_step(i)
                continue
            batch = self.replay.sample(c.batch_size, self.gen)
            target = self.targets(batch)
            q = self.q(batch["obs"]).gather(1, batch["actions"][:, None]).squeeze(1)
            loss = F.smooth_l1_loss(q, target)
            try:
                optimizer_step(self.opt, self.q.parameters(), loss, c.max_grad_norm, "agent=dqn q")
            except NonFiniteLossError:
                self.n_updates += i  # the gradient steps of this round that were applied
                raise
            q_mean = q.detach().mean()
        self.n_updates += n
        self.metrics = {"epsilon": self.epsilon(), "updates": float(self.n_updates),
                        "replay_size": float(self.replay.size)}
        if loss is not None:
            self.metrics.update(loss=loss.detach(), q=q_mean)
        return self.metrics

    def _fast_step(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The gradient step above in the compiled kernel: the same minibatch draw, loss, clipping and Adam."""
        online, target = self.fast
        rp, c = self.replay, self.cfg
        loss, q_mean = _dqn_grad(online.p, online.g, online.specs[0], target.p, target.specs[0], online.act,
                                 rp.draw(c.batch_size, self.gen).numpy(), as_numpy(rp.obs), rp.actions.numpy(),
                                 rp.rewards.numpy(), rp.terminated.numpy(), as_numpy(rp.next_obs),
                                 *mask_args(rp.next_mask), c.gamma, c.double_q)
        loss = torch.tensor(loss, dtype=torch.float32)
        try:
            flat_optimizer_step(online, loss, c.max_grad_norm, "agent=dqn q")
        except NonFiniteLossError:
            self.n_updates += i  # the gradient steps of this round that were applied
            raise
        return loss, torch.tensor(q_mean, dtype=torch.float32)

    # --- checkpoints ----------------------------------------------------------------------------------
    def state_dict(self, include_replay: bool = True) -> dict:
        return {"config": asdict(self.cfg), "q": self.q.state_dict(), "q_target": self.q_target.state_dict(),
                "opt": self.opt.state_dict(), "gen": self.gen.get_state(), "env_steps": self.env_steps,
                "calls": self.calls, "n_updates": self.n_updates, "target_syncs": self.target_syncs,
                "train_due": self._train_due,
                "metrics": {k: float(v) for k, v in self.metrics.items()},
                "replay": self.replay.state_dict() if include_replay else None}

    def load_state_dict(self, state: dict) -> None:
        """Without a stored replay the buffer starts empty (learning resumes as it refills)."""
        self.q.load_state_dict(state["q"])
        self.q_target.load_state_dict(state["q_target"])
        self.opt.load_state_dict(state["opt"])
        if self.fast is not None:
            self.fast[0].bind(self.opt)  # load_state_dict replaced the optimiser's state tensors
        self.gen.set_state(state["gen"].cpu())
        self.env_steps, self.calls = int(state["env_steps"]), int(state["calls"])
        self.n_updates, self.target_syncs = int(state["n_updates"]), int(state["target_syncs"])
        self._train_due = int(state["train_due"])
        self.metrics = dict(state.get("metrics", {}))
        self.replay = self._new_replay()
        if state.get("replay") is not None:
            self.replay.load_state_dict(state["replay"])


@fastmlp.njit
def _dqn_grad(p, g, spec, pt, spec_t, act, idx, obs, actions, rewards, terminated, next_obs, next_mask, has_mask,
              gamma, double_q):
    """``update``'s loss on transitions ``idx`` of the replay arrays: writes dLoss/dparams into ``g``; returns
    (Huber loss, mean Q(s, a))."""
    n = idx.size
    x, nx = obs[idx], next_obs[idx]
    nmask = next_mask[idx] if has_mask else next_mask
    next_q = fastmlp.masked(fastmlp.forward(pt, spec_t, act, nx)[0], nmask, has_mask)
    if double_q:
        a_next = fastmlp.greedy(p, spec, act, nx, nmask, has_mask)
    q_all, hs = fastmlp.forward(p, spec, act, x)
    dq = np.zeros_like(q_all)
    loss, q_sum = 0.0, 0.0
    for i in range(n):
        if double_q:
            best = next_q[i, a_next[i]]
        else:
            best = next_q[i, 0]
            for k in range(1, next_q.shape[1]):
                best = max(best, next_q[i, k])
        j = idx[i]
        y = rewards[j] + (0.0 if terminated[j] else 1.0) * gamma * best
        a = actions[j]
        d = q_all[i, a] - np.float32(y)
        q_sum += q_all[i, a]
        if abs(d) < 1.0:  # smooth_l1 with beta 1
            loss += 0.5 * d * d
            dq[i, a] = d / n
        else:
            loss += abs(d) - 0.5
            dq[i, a] = (1.0 if d > 0 else -1.0) / n
    fastmlp.backward(p, g, spec, act, hs, dq)
    return loss / n, q_sum / n


__all__ = ["DQNAgent", "DQNConfig", "Replay"]
