"""The interface every method implements, so train.py and evaluate.py treat them alike.

An agent acts on a batch of observations [B, D] (torch, on its device) with an optional recurrent state,
learns from the transitions it is shown, and saves / loads its whole state. Adding a method means one
module here and one config file under conf/agent/.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from dreamalloc.core.spec import EnvSpec
from dreamalloc.nn.layers import masked_logits


class NonFiniteLossError(FloatingPointError):
    """Raised by ``update`` when a loss or a gradient is NaN or infinite, *before* any parameter changed: the
    agent still holds its last good state, so the caller can save a checkpoint and stop."""


def optimizer_step(opt: torch.optim.Optimizer, params, loss: torch.Tensor, max_grad_norm: float, who: str,
                   foreach: bool | None = None) -> torch.Tensor:
    """One guarded optimiser step: zero the gradients, backpropagate ``loss``, clip them to ``max_grad_norm``
    (when > 0) and step, unless the loss or the gradient norm is NaN / infinite: then ``NonFiniteLossError``
    is raised *before* ``opt.step()``, so no parameter and no optimiser state changed. Returns the gradient norm
    before clipping (a 0-dim tensor; zeros when ``max_grad_norm`` is 0). ``who`` names the module in messages.

    The check costs one device sync per step; for finite values the step is exactly the unguarded one."""
    params = list(params)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm > 0:
        norm = nn.utils.clip_grad_norm_(params, max_grad_norm, foreach=foreach)
        total = norm
    else:
        norm = torch.zeros(())
        grads = [p.grad for p in params if p.grad is not None]
        total = nn.utils.get_total_norm(grads, foreach=foreach) if grads else norm
    if not bool(torch.isfinite(loss.detach()).all() & torch.isfinite(total)):
        opt.zero_grad(set_to_none=True)
        raise NonFiniteLossError(f"{who}: the loss ({float(loss.detach().sum()):g}) or the gradient norm "
                                 f"({float(total):g}) is NaN or infinite; the update was not applied")
    opt.step()
    return norm


def flat_optimizer_step(flat, loss: torch.Tensor, max_grad_norm: float, who: str) -> torch.Tensor:
    """``optimizer_step`` for the compiled path (``dreamalloc.nn.fastmlp.FlatMLPs``, its gradient already in
    ``flat.g``): the same clipping, the bound optimiser's step and the same guard (``NonFiniteLossError`` before
    anything changed). Returns the norm before clipping (0 when ``max_grad_norm`` is 0)."""
    norm = flat.step(max_grad_norm) if bool(torch.isfinite(loss)) else float("nan")
    if not np.isfinite(norm):
        raise NonFiniteLossError(f"{who}: the loss ({float(loss):g}) or the gradient norm ({norm:g}) is NaN or "
                                 "infinite; the update was not applied")
    return torch.tensor(norm if max_grad_norm > 0 else 0.0, dtype=torch.float32)


def nonfinite_parameter(agent: Agent) -> str | None:
    """The name (``module.param``) of the first NaN / infinite parameter of the agent's networks, or None.

    The networks are the ``torch.nn.Module`` attributes of the agent; one device sync for all of them."""
    named = [(f"{attr}.{p_name}", p) for attr, m in vars(agent).items() if isinstance(m, torch.nn.Module)
             for p_name, p in m.named_parameters()]
    if not named:
        return None
    ok = torch.stack([torch.isfinite(p).all() for _, p in named])
    if bool(ok.all()):
        return None
    return named[int((~ok).nonzero()[0])][0]


def same_action(pending, action) -> bool:
    """Whether ``action`` is the one an agent's latest ``act`` returned (``pending``): the same values, wherever they
    were copied (the handshake of act / observe compares values, not tensor identity)."""
    if pending is None:
        return False
    if pending is action:
        return True
    a = torch.as_tensor(action)
    return a.shape == pending.shape and bool(torch.equal(a.to(pending.device, pending.dtype), pending))


@dataclass
class ActingStep:
    """One deterministic decision at batch 1 as a pure function, what an export (ONNX) holds: ``module(*inputs
    .values())`` returns a tuple whose first item is the action, then the recurrent state. Input names:
    ``obs`` [1, obs_dim]; ``mask`` [1, A] bool (masked action spaces); ``start`` [1] bool, True where a trial
    starts (the state inputs are then ignored: the step starts from zeros); ``noise`` Gumbel(0, 1) noise the
    step's sampling uses (Dreamer's latent draw), which the caller draws: -log(-log(U)) with U uniform in (0, 1].
    ``carry`` maps each output after the action to the input it feeds at the next call; ``inputs`` are
    examples with the initial state (zeros)."""

    module: nn.Module
    inputs: dict[str, torch.Tensor]
    outputs: tuple[str, ...]
    carry: dict[str, str] = field(default_factory=dict)


class GreedyStep(nn.Module):
    """(obs[, mask]) -> (action,): the argmax of a feed-forward net's output (its first item when ``first``:
    an actor-critic's logits), invalid actions masked as ``act`` masks them."""

    def __init__(self, net: nn.Module, first: bool):
        super().__init__()
        self.net, self.first = net, first

    def forward(self, obs: torch.Tensor, *mask: torch.Tensor) -> tuple[torch.Tensor]:
        # a net with ``reads_mask`` takes the mask too (a pointer head rescales action features over valid ones)
        out = self.net(obs, mask[0] if mask else None) if getattr(self.net, "reads_mask", False) else self.net(obs)
        return (masked_logits(out[0] if self.first else out, mask[0] if mask else None).argmax(-1),)

    @staticmethod
    def acting_step(net: nn.Module, first: bool, obs_dim: int, n_actions: int, masked: bool) -> ActingStep:
        inputs = {"obs": torch.zeros(1, obs_dim)}
        if masked:
            inputs["mask"] = torch.ones(1, n_actions, dtype=torch.bool)
        return ActingStep(GreedyStep(net, first), inputs, ("action",))


class Agent(ABC):
    name: ClassVar[str]
    n_updates: int = 0  # learning agents count their updates; the harness checks parameters when it changes
    Config: ClassVar[type]  # dataclass of the agent's hyperparameters (its Hydra schema, with a ``name`` field)
    learns: ClassVar[bool] = False
    multi_discrete: ClassVar[bool] = False  # takes n_actions as a tuple (MultiDiscrete nvec)
    # what checkpoints hold of the data an agent learns from, unless ``save_replay`` says otherwise: True for a
    # small on-policy rollout in progress, False for an off-policy replay buffer (DQN, Dreamer; a resumed run
    # then refills it)
    replay_by_default: ClassVar[bool] = True
    training_modules: ClassVar[tuple[str, ...]] = ()  # nn.Module attributes acting never uses (target nets)
    # hyperparameters that change only how a trained agent acts greedily: evaluate.py takes them from the command
    # line (agent.KEY=...) where every other agent key comes from the checkpoint
    acting_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, obs_dim: int, n_actions: int, env: EnvSpec | None, device: torch.device, **hparams):
        """``env`` is the env's ``EnvSpec`` (None for an env without one, e.g. CartPole through the gymnasium
        adapter): all an agent may know of the env; ``n_actions`` is a tuple for a MultiDiscrete action space
        (agents with ``multi_discrete`` only). Trial and episode boundaries come in each step's info."""
        if not isinstance(n_actions, (int, np.integer)) and not self.multi_discrete:
            raise ValueError(f"agent={self.name}: supports Discrete actions only, got a MultiDiscrete action space "
                             f"{list(n_actions)} (agent=dreamer takes it)")
        self.obs_dim, self.n_actions, self.env, self.device = obs_dim, n_actions, env, device

    def initial_state(self, batch: int) -> Any:
        """Recurrent state at the start of a trial (None for feed-forward agents)."""
        return None

    @abstractmethod
    def act(self, obs: torch.Tensor, state: Any, info: dict, deterministic: bool = False
            ) -> tuple[torch.Tensor, Any]:
        """Actions [B] (int64) and the next recurrent state. ``info`` carries e.g. ``action_mask``."""

    def observe(self, obs, action, reward, terminated, truncated, next_obs, info) -> None:  # noqa: B027
        """One batched env transition (``next_obs`` is the pre-reset final obs where an episode ended)."""

    def update(self, step: int) -> dict[str, float]:
        """Learn from what was observed so far if it is time to; returns metrics to log."""
        return {}

    # --- the policy alone (a policy export: weights to act with, no optimiser, replay or counters) ---------
    def policy_modules(self) -> dict[str, torch.nn.Module]:
        """The networks the agent acts with: its nn.Module attributes but ``training_modules``."""
        return {k: v for k, v in vars(self).items() if isinstance(v, torch.nn.Module) and k not in
                self.training_modules}

    def policy_state(self) -> dict[str, dict]:
        """The parameters and buffers of ``policy_modules`` (what ``load_policy_state`` takes)."""
        return {k: m.state_dict() for k, m in self.policy_modules().items()}

    def load_policy_state(self, state: dict[str, dict]) -> None:
        """Load ``policy_state`` output; the networks must match (the same names and shapes)."""
        mods = self.policy_modules()
        if sorted(state) != sorted(mods):
            raise ValueError(f"agent={self.name}: the policy holds networks {sorted(state)}, this agent acts with "
                             f"{sorted(mods)}")
        for k, m in mods.items():
            m.load_state_dict(state[k])

    def acting_step(self, masked: bool = False) -> ActingStep:
        """The deterministic decision at batch 1 as a pure module (``ActingStep``), for exports; ``masked``: the
        env gives action masks, which the step then takes as its ``mask`` input."""
        raise NotImplementedError(f"agent={self.name}: has no exportable acting step (an ONNX export covers dqn, "
                                  "ppo, a2c, rl2_ppo and dreamer)")

    def state_dict(self, include_replay: bool = True) -> dict:
        """Everything needed to continue training; replay buffers only when ``include_replay``."""
        return {}

    def load_state_dict(self, state: dict) -> None:  # noqa: B027 (stateless agents keep nothing)
        return None

    def meta(self) -> dict:
        """What a checkpoint must match to be loaded into this agent."""
        return {"agent": self.name, "obs_dim": self.obs_dim, "n_actions": self.n_actions,
                "action_space": getattr(self.env, "action_space", None)}
