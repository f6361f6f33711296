"""What PPO and A2C share: the actor-critic net, the [T, B] rollout storage and the act / observe / update cycle.

The cycle runs on the batched env's own tensors (no per-env Python): ``act`` samples from the masked policy
and remembers the log-probability and value it used; ``observe`` writes the transition into preallocated
[T, B] tensors, bootstrapping V(final obs) where a time limit cut an episode; ``update`` learns once the
rollout holds ``n_steps`` steps per env. Subclasses supply only ``_learn`` (the loss and its optimiser steps).

The storage is laid out for a recurrent (RL^2) learner as well: every tensor is [T, B, ...] in time order,
``first[t]`` marks observations that open an episode (where a recurrent state would be reset), the state
passed to ``act`` at the rollout's first step is kept as ``state0``, and minibatches are produced by
``_minibatches`` / ``_take`` / ``_evaluate``, which a recurrent subclass overrides to cut along env columns
and replay whole sequences from ``state0``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dreamalloc.agents.base import (
    ActingStep,
    Agent,
    GreedyStep,
    NonFiniteLossError,
    flat_optimizer_step,
    optimizer_step,
    same_action,
)
from dreamalloc.agents.returns import gae, nstep_returns
from dreamalloc.core.checks import COUNT, FINITE, NONNEG, POSITIVE, UNIT, OneOf, Range, between
from dreamalloc.nn import fastmlp
from dreamalloc.nn.fastmlp import as_numpy, mask_args
from dreamalloc.nn.layers import ACTIVATIONS, PointerHead, masked_logits, mlp, orthogonal_init

OPTIMIZERS = ("adam", "rmsprop")


@dataclass
class OnPolicyConfig:
    """Hyperparameters common to the on-policy agents (defaults: Stable-Baselines3's)."""

    RANGES: ClassVar[dict] = {  # checked at start by the harness (dreamalloc/core/checks.py); subclasses add theirs
        "n_steps": COUNT, "gamma": UNIT, "gae_lambda": UNIT, "lr": POSITIVE, "total_steps": NONNEG,
        "ent_coef": NONNEG, "vf_coef": NONNEG, "max_grad_norm": FINITE, "hidden": Range(lo=1, each=True),
        "activation": OneOf(tuple(ACTIVATIONS)), "optimizer": OneOf(OPTIMIZERS), "opt_eps": POSITIVE,
        "rms_alpha": between(0.0, 1.0, hi_open=True)}
    name: str = "onpolicy"
    n_steps: int = 128  # rollout length per env; a rollout is n_steps x num_envs transitions
    gamma: float = 0.99
    gae_lambda: float = 0.95  # 1.0: plain bootstrapped n-step returns
    lr: float = 3e-4
    anneal_lr: bool = False  # linear decay to 0 over total_steps
    total_steps: int = 0  # env steps of the whole run (``${steps}`` in the yaml); needed by the annealing
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5  # <= 0: no clipping
    normalize_advantage: bool = True
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    activation: str = "tanh"
    shared: bool = False  # one torso for policy and value (else two separate MLPs)
    optimizer: str = "adam"  # adam | rmsprop
    opt_eps: float = 1e-5
    rms_alpha: float = 0.99
    # units of a pointer head scoring each action from the features the observation holds for it and the torso's
    # output (EnvSpec.action_features: the allocation env's hole space with hole_features >= holes); 0: a linear
    # head over the torso
    pointer: int = 0
    # the compiled CPU path (dreamalloc/nn/fastmlp.py: same acting and losses, gradients written by hand) where
    # the net is two separate relu / tanh MLPs on the CPU without a pointer head; false: torch autograd everywhere
    fast: bool = True


class ActorCritic(nn.Module):
    """Policy logits and state value from an observation [..., D]; orthogonal init with the usual gains
    (sqrt 2 in the torsos, 0.01 on the policy head so the first policy is near uniform, 1 on the value). With
    ``pointer`` = (units, offset, width) the policy's last layer is a ``PointerHead`` over its torso's output
    and each action's features in the observation."""

    reads_mask = True  # forward takes the action mask (the pointer head rescales features over valid actions)

    def __init__(self, obs_dim: int, n_actions: int, hidden, activation: str = "tanh", shared: bool = False,
                 pointer: tuple[int, int, int] | None = None):
        super().__init__()
        hidden = [int(h) for h in hidden]
        self.shared = bool(shared)
        d = hidden[-1] if hidden else obs_dim
        self.pointer = None if pointer is None else PointerHead(d, n_actions, pointer[1], pointer[2], pointer[0])
        if self.shared:
            self.torso = orthogonal_init(mlp(obs_dim, hidden, None, activation))
            self.pi = orthogonal_init(nn.Linear(d, n_actions), 0.01) if pointer is None else nn.Identity()
            self.v = orthogonal_init(nn.Linear(d, 1), 1.0)
        else:
            self.torso = nn.Identity()
            self.pi = orthogonal_init(mlp(obs_dim, hidden, n_actions if pointer is None else None, activation),
                                      last_gain=0.01 if pointer is None else None)
            self.v = orthogonal_init(mlp(obs_dim, hidden, 1, activation), last_gain=1.0)

    def forward(self, obs: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [..., A] (not masked), value [...]) of observations [..., D]; ``mask`` [..., A] or None."""
        h = self.torso(obs)
        logits = self.pi(h) if self.pointer is None else self.pointer(self.pi(h), obs, mask)
        return logits, self.v(h).squeeze(-1)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.v(self.torso(obs)).squeeze(-1)


class Rollout:
    """One rollout of T steps x B envs in preallocated tensors; ``boot`` holds V(s_{t+1}) where it is not
    the next stored value: at truncated steps (V of the pre-reset final obs) and at t = T-1 (V of the obs
    after the rollout)."""

    KEYS = ("obs", "actions", "logp", "values", "rewards", "terminated", "ended", "boot", "first", "masks")

    def __init__(self, T: int, B: int, obs_dim: int, n_actions: int, device, masked: bool):
        f32 = dict(dtype=torch.float32, device=device)
        flag = dict(dtype=torch.bool, device=device)
        self.T, self.B = int(T), int(B)
        self.obs = torch.zeros(T, B, obs_dim, **f32)
        self.actions = torch.zeros(T, B, dtype=torch.long, device=device)
        self.logp = torch.zeros(T, B, **f32)
        self.values = torch.zeros(T, B, **f32)
        self.rewards = torch.zeros(T, B, **f32)
        self.terminated = torch.zeros(T, B, **flag)
        self.ended = torch.zeros(T, B, **flag)  # terminated or truncated: the last step of its episode
        self.boot = torch.zeros(T, B, **f32)
        self.first = torch.zeros(T, B, **flag)  # obs[t] opens an episode (a recurrent state resets there)
        self.masks = torch.ones(T, B, n_actions, **flag) if masked else None
        self.state0: Any = None  # recurrent state at the rollout's first step (None for feed-forward nets)
        self.pos = 0

    @property
    def full(self) -> bool:
        return self.pos >= self.T

    def add(self, obs, action, logp, value, reward, terminated, ended, first, mask) -> int:
        t = self.pos
        self.obs[t].copy_(obs)
        self.actions[t].copy_(action)
        self.logp[t].copy_(logp)
        self.values[t].copy_(value)
        self.rewards[t].copy_(reward)
        self.terminated[t].copy_(terminated)
        self.ended[t].copy_(ended)
        self.first[t].copy_(first)
        self.boot[t].zero_()
        if self.masks is not None:
            if mask is None:
                self.masks[t].fill_(True)
            else:
                self.masks[t].copy_(mask)
        self.pos = t + 1
        return t

    def next_values(self) -> torch.Tensor:
        """V(s_{t+1}) [T, B] for the return recursions (see returns.py)."""
        nv = torch.empty_like(self.values)
        nv[:-1] = self.values[1:]
        nv[-1] = self.boot[-1]
        truncated = self.ended & ~self.terminated
        return torch.where(truncated, self.boot, nv)

    def state_dict(self) -> dict:
        return {"pos": self.pos, "state0": self.state0, **{k: getattr(self, k) for k in self.KEYS}}

    def load_state_dict(self, state: dict, device) -> None:
        self.pos = int(state["pos"])
        self.state0 = state["state0"]
        for k in self.KEYS:
            if getattr(self, k) is not None and state[k] is not None:
                getattr(self, k).copy_(state[k].to(device))

    @classmethod
    def like(cls, state: dict, device) -> Rollout:
        obs = state["obs"]
        masks = state["masks"]
        ro = cls(obs.shape[0], obs.shape[1], obs.shape[2], masks.shape[2] if masks is not None else 1, device,
                 masks is not None)
        ro.load_state_dict(state, device)
        return ro


def policy_terms(logits: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of ``actions`` and the entropy under (already masked) ``logits``; masked actions
    have probability 0 and contribute nothing to the entropy."""
    logp_all = F.log_softmax(logits, -1)
    logp = logp_all.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def gumbel_argmax(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Gumbel-max sampling with uniforms ``u`` in [0, 1). u is kept off 0 so the noise stays finite (within
    [-4.5, 17] for float32): a masked action, at the dtype's lowest value, then never beats a valid one."""
    u = u.clamp(min=torch.finfo(u.dtype).tiny)
    return (logits - torch.log(-torch.log(u))).argmax(-1)


def explained_variance(pred: torch.Tensor, target: torch.Tensor) -> float:
    """1 - Var(target - pred) / Var(target) (unbiased variances, as torch's ``var``), NaN for a constant target;
    in numpy, a tenth of torch's per-call cost at rollout sizes."""
    t = target.detach().cpu().numpy().ravel()
    var = t.var(ddof=1)
    return float("nan") if var == 0 else float(1.0 - (t - pred.detach().cpu().numpy().ravel()).var(ddof=1) / var)


class OnPolicyAgent(Agent):
    """Base of the on-policy actor-critics; not itself an agent (no ``name``)."""

    learns = True
    Config = OnPolicyConfig

    def __init__(self, obs_dim, n_actions, env, device, **hparams):
        super().__init__(obs_dim, n_actions, env, torch.device(device))
        self.cfg = self._make_config(hparams)
        c = self.cfg
        self.net = self._build_net().to(self.device)
        params = list(self.net.parameters())
        if c.optimizer == "adam":  # the fused kernel: a third of the foreach step's time for these small nets
            self.opt = torch.optim.Adam(params, lr=c.lr, eps=c.opt_eps, fused=self.device.type in ("cpu", "cuda"))
        else:
            self.opt = torch.optim.RMSprop(params, lr=c.lr, alpha=c.rms_alpha, eps=c.opt_eps)
        # Our own generator: sampling and minibatch order continue exactly after a checkpoint is loaded.
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(int(torch.randint(0, 2**62, ())))
        self.fast = self._fast_path()
        self.rollout: Rollout | None = None
        self._pending: tuple | None = None  # (action, logp, value, mask, state) of the latest stochastic act
        self._first: torch.Tensor | None = None  # the next obs opens an episode, per env
        self._next_mask: torch.Tensor | None = None  # mask of the obs the next act should see
        self.n_updates = 0
        self.env_steps = 0
        self.metrics: dict[str, float] = {}

    # --- configuration ------------------------------------------------------------------------------
    def _make_config(self, hparams: dict):
        names = {f.name for f in fields(self.Config)}
        unknown = sorted(set(hparams) - names)
        if unknown:
            raise ValueError(f"unknown {self.name} hyperparameter(s) {unknown}; valid: {', '.join(sorted(names))}")
        c = self.Config(**{k: v for k, v in hparams.items()})
        c.hidden = [int(h) for h in c.hidden]

        def bad(msg):
            raise ValueError(f"agent={self.name}: {msg}")

        if c.n_steps < 1:
            bad(f"n_steps must be >= 1, got {c.n_steps}")
        if not 0.0 <= c.gamma <= 1.0 or not 0.0 <= c.gae_lambda <= 1.0:
            bad(f"gamma and gae_lambda must be in [0, 1], got {c.gamma} and {c.gae_lambda}")
        if c.lr <= 0:
            bad(f"lr must be > 0, got {c.lr}")
        if c.activation not in ACTIVATIONS:
            bad(f"unknown activation {c.activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        if c.optimizer not in OPTIMIZERS:
            bad(f"unknown optimizer {c.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if any(h < 1 for h in c.hidden):
            bad(f"hidden widths must be >= 1, got {c.hidden}")
        if c.pointer < 0:
            bad(f"pointer must be >= 0 (units of the pointer head; 0: none), got {c.pointer}")
        if c.pointer and len(getattr(self.env, "action_features", ()) or ()) != 2:
            bad("pointer > 0 needs an env whose observation holds features for each action (its EnvSpec's "
                "action_features; the allocation env gives them in the hole space with hole_features >= holes)")
        if self._anneals(c) and c.total_steps < 1:
            bad("annealing needs the run's length: set total_steps (total_steps: ${steps} in conf/agent/"
                f"{self.name}.yaml) or turn annealing off")
        return c

    def _anneals(self, c) -> bool:
        return bool(c.anneal_lr)

    def _build_net(self) -> nn.Module:
        c = self.cfg
        return ActorCritic(self.obs_dim, self.n_actions, c.hidden, c.activation, c.shared, self._pointer())

    def _pointer(self) -> tuple[int, int, int] | None:
        """(units, offset, width) of the pointer head, or None without one."""
        return (self.cfg.pointer, *self.env.action_features) if self.cfg.pointer else None

    def _fast_path(self) -> fastmlp.FlatMLPs | None:
        """The policy and value MLPs laid out for the compiled kernels, or None where they do not apply."""
        net = self.net
        if not (self.cfg.fast and fastmlp.AVAILABLE and self.device.type == "cpu" and type(net) is ActorCritic
                and not net.shared and net.pointer is None
                and fastmlp.plain_mlp(net.pi) == fastmlp.plain_mlp(net.v) is not None):
            return None
        flat = fastmlp.FlatMLPs([net.pi, net.v])
        flat.bind(self.opt)
        return flat

    def meta(self) -> dict:
        c = self.cfg
        return {**super().meta(), "hidden": list(c.hidden), "shared": bool(c.shared), "activation": c.activation}

    # --- acting ---------------------------------------------------------------------------------------
    def _sample(self, logits: torch.Tensor) -> torch.Tensor:
        """A draw from the (masked) logits with the agent's generator."""
        return gumbel_argmax(logits, torch.rand(logits.shape, generator=self.gen, device=logits.device,
                                                dtype=logits.dtype))

    def act(self, obs, state, info, deterministic=False):
        mask = info.get("action_mask") if info else None
        if self.fast is not None:
            f = self.fast
            u = _NO_U if deterministic else torch.rand((obs.shape[0], self.n_actions), generator=self.gen).numpy()
            a, logp, value = _ac_act(f.p, f.specs[0], f.specs[1], f.act, as_numpy(obs), *mask_args(mask), u,
                                     deterministic)
            action = torch.from_numpy(a)
            if deterministic:
                return action, state
            self._pending = (action, torch.from_numpy(logp), torch.from_numpy(value), mask, state)
            return action, state
        with torch.no_grad():
            logits, value = self.net(obs, mask)
            logits = masked_logits(logits, mask)
            if deterministic:
                return logits.argmax(-1), state
            action = self._sample(logits)
            logp = F.log_softmax(logits, -1).gather(-1, action.unsqueeze(-1)).squeeze(-1)
        self._pending = (action, logp, value, mask, state)
        return action, state

    def acting_step(self, masked: bool = False) -> ActingStep:
        """The mode of the policy (``act`` with ``deterministic``)."""
        return GreedyStep.acting_step(self.net, True, self.obs_dim, self.n_actions, masked)

    def observe(self, obs, action, reward, terminated, truncated, next_obs, info) -> None:
        pend = self._pending
        self._pending = None
        if pend is None or not same_action(pend[0], action):
            # Not the action of our latest act (e.g. an external driver): recompute what act would have kept.
            mask = self._next_mask
            with torch.no_grad():
                logits, value = self.net(obs, mask)
                logp, _ = policy_terms(masked_logits(logits, mask), action.long())
            pend = (action, logp, value, mask, None)
        _, logp, value, mask, state = pend
        B = obs.shape[0]
        if self.rollout is None or self.rollout.B != B:
            self.rollout = Rollout(self.cfg.n_steps, B, self.obs_dim, self.n_actions, self.device,
                                   masked=mask is not None)
            self._first = torch.ones(B, dtype=torch.bool, device=self.device)
        ro = self.rollout
        if ro.pos == 0:
            ro.state0 = state
        terminated = terminated.to(torch.bool)
        ended = terminated | truncated.to(torch.bool)
        t = ro.add(obs, action, logp, value, reward, terminated, ended, self._first, mask)
        if ro.full:  # V(obs after the rollout): the final obs where an episode ended, else the next obs
            with torch.no_grad():
                ro.boot[t] = self.net.value(next_obs)
        else:
            cut = ended & ~terminated
            if bool(cut.any()):
                rows = cut.nonzero().squeeze(1)
                with torch.no_grad():
                    ro.boot[t, rows] = self.net.value(next_obs[rows])
        self._first = ended
        self._next_mask = info.get("action_mask") if info else None

    # --- learning -------------------------------------------------------------------------------------
    def _progress_left(self, step: int) -> float:
        """1 at the start of the run, 0 at total_steps (SB3's progress_remaining)."""
        if self.cfg.total_steps < 1:
            return 1.0
        return max(0.0, 1.0 - step / self.cfg.total_steps)

    def update(self, step: int) -> dict[str, float]:
        """Learns when the rollout is full; returns that update's metrics, or {} when no update ran (so a log line
        never repeats an earlier update's losses)."""
        self.env_steps = int(step)
        ro = self.rollout
        if ro is None or not ro.full:
            return {}
        lr = self.cfg.lr * (self._progress_left(step) if self.cfg.anneal_lr else 1.0)
        for g in self.opt.param_groups:
            g["lr"] = lr
        adv, ret = self._targets(ro)
        try:
            with self._learning(ro):
                self.metrics = {**self._learn(adv, ret, step), "lr": lr, "updates": float(self.n_updates + 1)}
        except NonFiniteLossError:  # this rollout cannot be learnt from: drop it, so a skipping run goes on
            self._next_rollout(ro)
            raise
        self.metrics["explained_variance"] = explained_variance(self._values(ro), ret)
        self.n_updates += 1
        self._next_rollout(ro)
        return self.metrics

    # hooks of update() that a recurrent variant changes (rl2_ppo.py)
    def _learning(self, ro):
        """Context around the epochs of one update."""
        return nullcontext()

    def _values(self, ro) -> torch.Tensor:
        return ro.values

    def _next_rollout(self, ro) -> None:
        ro.pos = 0
        ro.state0 = None

    def _targets(self, ro: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
        """Advantages and value targets [T, B] (n-step returns when gae_lambda is 1)."""
        if self.fast is not None:  # the same recursion compiled (_ac_targets)
            adv, ret = _ac_targets(ro.rewards.numpy(), ro.values.numpy(), ro.boot.numpy(), ro.terminated.numpy(),
                                   ro.ended.numpy(), self.cfg.gamma, self.cfg.gae_lambda)
            return torch.from_numpy(adv), torch.from_numpy(ret)
        c, nv = self.cfg, ro.next_values()
        if c.gae_lambda == 1.0:
            ret = nstep_returns(ro.rewards, ro.values, nv, ro.terminated, ro.ended, c.gamma)
            return ret - ro.values, ret
        adv = gae(ro.rewards, ro.values, nv, ro.terminated, ro.ended, c.gamma, c.gae_lambda)
        return adv, adv + ro.values

    @abstractmethod
    def _learn(self, adv: torch.Tensor, ret: torch.Tensor, step: int) -> dict[str, float]:
        """One update from the rollout's advantages and returns (PPO's epochs, A2C's single step)."""

    def _minibatches(self, batch_size: int | None) -> Iterator[torch.Tensor]:
        """Index sets over the flattened T x B samples, freshly shuffled (all of them when batch_size is None)."""
        n = self.rollout.T * self.rollout.B
        if batch_size is None or batch_size >= n:
            yield torch.arange(n, device=self.device)
            return
        perm = torch.randperm(n, generator=self.gen, device=self.device)
        yield from perm.split(int(batch_size))

    def _take(self, idx: torch.Tensor, adv: torch.Tensor, ret: torch.Tensor) -> dict[str, torch.Tensor]:
        ro = self.rollout
        n = ro.T * ro.B
        mb = {"obs": ro.obs.view(n, -1)[idx], "actions": ro.actions.view(n)[idx], "logp": ro.logp.view(n)[idx],
              "values": ro.values.view(n)[idx], "adv": adv.reshape(n)[idx], "ret": ret.reshape(n)[idx]}
        mb["masks"] = ro.masks.view(n, -1)[idx] if ro.masks is not None else None
        return mb

    def _evaluate(self, mb: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked logits and values of a minibatch, with gradients."""
        logits, values = self.net(mb["obs"], mb["masks"])
        return masked_logits(logits, mb["masks"]), values

    def _fast_loss(self, idx: torch.Tensor, adv: torch.Tensor, ret: torch.Tensor, ppo: bool, clip: float = 0.0,
                   ) -> dict[str, torch.Tensor]:
        """The compiled kernel's loss on rollout samples ``idx`` (PPO's clipped surrogate, else A2C's policy
        gradient), with its gradient left in the flat buffer for ``_step``; the statistics ``ppo_loss`` gives."""
        ro, c, f = self.rollout, self.cfg, self.fast
        n = ro.T * ro.B
        out = _ac_grad(f.p, f.g, f.specs[0], f.specs[1], f.act, as_numpy(ro.obs.view(n, -1)),
                       ro.actions.view(n).numpy(), ro.logp.view(n).numpy(), ro.values.view(n).numpy(),
                       as_numpy(adv.reshape(n)), as_numpy(ret.reshape(n)),
                       *mask_args(ro.masks.view(n, -1) if ro.masks is not None else None), idx.numpy(), ppo,
                       float(clip), -1.0 if getattr(c, "clip_vf", None) is None else float(c.clip_vf),
                       float(c.ent_coef), float(c.vf_coef), bool(c.normalize_advantage))
        return dict(zip(_AC_STATS, torch.from_numpy(out).unbind(), strict=True))

    def _step(self, loss: torch.Tensor) -> torch.Tensor:
        """One optimiser step; ``NonFiniteLossError`` (nothing changed) for a NaN / inf loss or gradient. On the
        compiled path the gradient is the one ``_fast_loss`` left in the flat buffer (same clipping and guard)."""
        if self.fast is not None:
            return flat_optimizer_step(self.fast, loss, self.cfg.max_grad_norm, f"agent={self.name} net")
        return optimizer_step(self.opt, self.net.parameters(), loss, self.cfg.max_grad_norm, f"agent={self.name} net",
                              foreach=True)

    # --- checkpoints ----------------------------------------------------------------------------------
    def state_dict(self, include_replay: bool = True) -> dict:
        """Nets, optimiser, generator, counters and (with ``include_replay``) the partly filled rollout;
        without it a resumed run starts a fresh rollout."""
        keep = include_replay and self.rollout is not None
        return {"config": asdict(self.cfg), "net": self.net.state_dict(), "opt": self.opt.state_dict(),
                "gen": self.gen.get_state(), "n_updates": self.n_updates, "env_steps": self.env_steps,
                "metrics": dict(self.metrics),
                "rollout": self.rollout.state_dict() if keep else None,
                "first": self._first if keep else None, "next_mask": self._next_mask if keep else None}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        if self.fast is not None:
            self.fast.bind(self.opt)  # load_state_dict replaced the optimiser's state tensors
        self.gen.set_state(state["gen"].cpu())
        self.n_updates, self.env_steps = int(state["n_updates"]), int(state["env_steps"])
        self.metrics = dict(state.get("metrics", {}))
        ro = state.get("rollout")
        if ro is not None and ro["obs"].shape[0] == self.cfg.n_steps:
            self.rollout = Rollout.like(ro, self.device)
            self._first = state["first"].to(self.device)
            nm = state.get("next_mask")
            self._next_mask = nm.to(self.device) if nm is not None else None
        else:
            self.rollout, self._first, self._next_mask = None, None, None
        self._pending = None


# --- the compiled path ---------------------------------------------------------------------------------------
_AC_STATS = ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")
_NO_U = np.zeros((1, 1), dtype=np.float32)
_TINY = np.float32(np.finfo(np.float32).tiny)


@fastmlp.njit
def _ac_targets(rewards, values, boot, terminated, ended, gamma, lam):
    """``_targets`` in one pass: ``Rollout.next_values`` and returns.py's ``gae`` (``nstep_returns`` at lambda 1)
    over [T, B] arrays, in float32 as torch computes them; (advantages, value targets)."""
    T, B = rewards.shape
    adv = np.empty((T, B), dtype=np.float32)
    g, gl = np.float32(gamma), np.float32(gamma * lam)
    for b in range(B):
        last = np.float32(0.0)
        for t in range(T - 1, -1, -1):
            # V(s_{t+1}): the next stored value, or the bootstrap kept where a time limit cut the episode / at T-1
            nv = boot[t, b] if (t == T - 1 or (ended[t, b] and not terminated[t, b])) else values[t + 1, b]
            delta = rewards[t, b] + g * (np.float32(0.0) if terminated[t, b] else np.float32(1.0)) * nv - values[t, b]
            last = delta + (np.float32(0.0) if ended[t, b] else gl) * last
            adv[t, b] = last
    if lam == 1.0:  # n-step returns first, advantages from them, as _targets does it
        ret = adv + values
        return ret - values, ret
    return adv, adv + values


@fastmlp.njit
def _ac_act(p, spec_pi, spec_v, act, obs, mask, has_mask, u, deterministic):
    """``act``: (action, log-probability, value) per row; the draw is ``gumbel_argmax`` with uniforms ``u``."""
    logits, _ = fastmlp.forward(p, spec_pi, act, obs)
    logp_all, z = fastmlp.masked_log_softmax(logits, mask, has_mask)
    n, A = z.shape
    action = np.empty(n, dtype=np.int64)
    logp = np.empty(n, dtype=np.float32)
    for i in range(n):
        k, best = 0, np.float32(-np.inf)
        for j in range(A):
            s = z[i, j] if deterministic else z[i, j] - np.log(-np.log(max(u[i, j], _TINY)))
            if s > best or j == 0:
                k, best = j, s
        action[i] = k
        logp[i] = logp_all[i, k]
    if deterministic:  # no value needed; numba wants one return type, so logp stands in for it
        return action, logp, logp
    values, _ = fastmlp.forward(p, spec_v, act, obs)
    return action, logp, values[:, 0].copy()


@fastmlp.njit
def _ac_grad(p, g, spec_pi, spec_v, act, obs, actions, old_logp, old_values, adv, ret, mask, has_mask, idx, ppo, clip,
             clip_vf, ent_coef, vf_coef, normalize_advantage):
    """PPO's ``ppo_loss`` (``ppo``) or A2C's loss on samples ``idx`` of the flattened rollout, gradient into ``g``.
    Returns [loss, policy loss, value loss, entropy, approx KL, clip fraction] (the last two 0 for A2C)."""
    n = idx.size
    identity = n == obs.shape[0]  # A2C's whole rollout in order: no gather
    for i in range(n if identity else 0):
        identity = identity and idx[i] == i
    x = obs if identity else obs[idx]
    a = np.empty(n, dtype=np.float32)
    for i in range(n):
        a[i] = adv[idx[i]]
    if normalize_advantage and n > 1:
        mean = a.astype(np.float64).mean()
        std = np.sqrt(((a.astype(np.float64) - mean) ** 2).sum() / (n - 1))
        for i in range(n):
            a[i] = (a[i] - mean) / (std + 1e-8)
    logits, hs_pi = fastmlp.forward(p, spec_pi, act, x)
    values, hs_v = fastmlp.forward(p, spec_v, act, x)
    logp_all, _ = fastmlp.masked_log_softmax(logits, mask[idx] if has_mask else mask, has_mask)
    A = logits.shape[1]
    dz = np.zeros_like(logits)
    dv = np.zeros_like(values)
    prob = np.empty(A, dtype=np.float32)
    pl = vl = ent = kl = cf = 0.0
    for i in range(n):
        j = idx[i]
        act_i = actions[j]
        lp = logp_all[i, act_i]
        h = 0.0
        for k in range(A):
            prob[k] = np.exp(logp_all[i, k])
            h -= prob[k] * logp_all[i, k]
        ent += h
        if ppo:
            log_ratio = lp - old_logp[j]
            r = np.exp(log_ratio)
            rc = min(max(r, 1.0 - clip), 1.0 + clip)
            s1, s2 = a[i] * r, a[i] * rc
            pl -= min(s1, s2)
            inside = 1.0 if (1.0 - clip <= r <= 1.0 + clip) else 0.0
            # torch.min's gradient: to the smaller term, split evenly on a tie (clamp passes it only inside)
            d = a[i] * r if s1 < s2 else a[i] * r * inside if s2 < s1 else 0.5 * a[i] * r * (1.0 + inside)
            g_lp = -d / n
            kl += (r - 1.0) - log_ratio
            cf += 1.0 if abs(r - 1.0) > clip else 0.0
        else:
            pl -= a[i] * lp
            g_lp = -a[i] / n
        v, R = values[i, 0], ret[j]
        if clip_vf < 0:
            vl += (v - R) ** 2
            dv[i, 0] = vf_coef * 2.0 * (v - R) / n
        else:
            delta = v - old_values[j]
            vc = old_values[j] + min(max(delta, -clip_vf), clip_vf)
            e1, e2 = (v - R) ** 2, (vc - R) ** 2
            inside_v = 1.0 if -clip_vf <= delta <= clip_vf else 0.0
            vl += max(e1, e2)
            d1, d2 = 2.0 * (v - R), 2.0 * (vc - R) * inside_v
            dv[i, 0] = vf_coef * (d1 if e1 > e2 else d2 if e2 > e1 else 0.5 * (d1 + d2)) / n
        for k in range(A):
            pk = prob[k]
            # d(-ent_coef * mean H)/dz_k = ent_coef / n * p_k (log p_k + H); d logp_a / dz_k = [k == a] - p_k
            dz[i, k] = ent_coef / n * pk * (logp_all[i, k] + h) + g_lp * ((1.0 if k == act_i else 0.0) - pk)
    fastmlp.backward(p, g, spec_pi, act, hs_pi, dz)
    fastmlp.backward(p, g, spec_v, act, hs_v, dv)
    out = np.empty(6, dtype=np.float32)
    out[1], out[2], out[3] = pl / n, vl / n, ent / n
    out[0] = out[1] + vf_coef * out[2] - ent_coef * out[3]
    out[4], out[5] = kl / n, cf / n
    return out


__all__ = ["ActorCritic", "OnPolicyAgent", "OnPolicyConfig", "Rollout", "explained_variance", "gumbel_argmax",
           "policy_terms"]
