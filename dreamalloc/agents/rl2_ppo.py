"""RL^2-PPO (Duan et al. 2016, docs/reference.md §6): a GRU policy whose hidden state spans the episodes of a trial,
trained with PPO's clipped loss over truncated-BPTT chunks of the rollout.

The observation already carries what adaptation needs (previous action one-hot, previous reward,
episode-start flag: ``meta_obs`` in the allocation env, always in the meta tasks), so the net is an MLP
encoder -> GRU -> policy and value heads. The hidden state is reset where ``info["trial_start"]`` is set and
nowhere else: a trial is one meta-episode, so episode ends inside it neither reset the state nor cut the
returns (GAE runs with ``ended = terminated = trial_end``).

Storage. The rollout keeps n_steps + 1 rows per env: the extra row is the first step of the next rollout,
whose act-time value is the exact bootstrap V(s_T) under the hidden state the policy really had (the
successor of an episode end inside a trial is the reset obs, which ``observe`` never sees). Learning
therefore happens one step after the n_steps-th transition, and that row then opens the next rollout.
Each row also stores the hidden state the GRU was fed at that step (after any reset), so a chunk of
``bptt`` steps of one env column is replayed from its stored start with resets at the trial starts inside
it; on an unchanged net the replay reproduces the acting-time log-probabilities and values.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from dreamalloc.agents.base import ActingStep, same_action
from dreamalloc.agents.onpolicy import Rollout
from dreamalloc.agents.ppo import PPOAgent, PPOConfig
from dreamalloc.agents.returns import gae
from dreamalloc.core.checks import COUNT
from dreamalloc.nn.layers import PointerHead, masked_logits, mlp, orthogonal_init


@dataclass
class RL2PPOConfig(PPOConfig):
    RANGES: ClassVar[dict] = {"rnn_hidden": COUNT, "bptt": COUNT}
    name: str = "rl2_ppo"
    n_steps: int = 128
    batch_size: int = 512  # transitions per minibatch: batch_size / bptt chunks
    n_epochs: int = 8
    clip: float = 0.1
    ent_coef: float = 0.01
    lr: float = 2e-4
    rnn_hidden: int = 128  # GRU width
    bptt: int = 32  # steps per replayed chunk (divides n_steps)
    shared: bool = True  # the GRU torso serves policy and value (the only layout)


class RecurrentActorCritic(nn.Module):
    """obs [.., D] -> MLP encoder -> GRU cell -> (policy logits, value). Orthogonal init as ``ActorCritic``
    (gain sqrt 2 in the encoder, 0.01 on the policy head, 1 on the value head; gain 1 in the GRU). With
    ``pointer`` = (units, offset, width) the policy head is a ``PointerHead`` scoring each action from its
    features in the observation and the GRU state."""

    def __init__(self, obs_dim: int, n_actions: int, hidden, rnn_hidden: int, activation: str = "tanh",
                 pointer: tuple[int, int, int] | None = None):
        super().__init__()
        hidden = [int(h) for h in hidden]
        self.enc = orthogonal_init(mlp(obs_dim, hidden, None, activation))
        self.gru = nn.GRUCell(hidden[-1] if hidden else obs_dim, int(rnn_hidden))
        for name, p in self.gru.named_parameters():
            if name.startswith("weight"):
                nn.init.orthogonal_(p, 1.0)
            else:
                nn.init.zeros_(p)
        if pointer is None:
            self.pi = orthogonal_init(nn.Linear(int(rnn_hidden), n_actions), 0.01)
        else:
            units, offset, width = pointer
            self.pi = PointerHead(int(rnn_hidden), n_actions, offset, width, units)
        self.v = orthogonal_init(nn.Linear(int(rnn_hidden), 1), 1.0)

    def _logits(self, h: torch.Tensor, obs: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.pi(h) if isinstance(self.pi, nn.Linear) else self.pi(h, obs, mask)

    def step(self, obs: torch.Tensor, h: torch.Tensor, mask: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step of B envs: obs [B, D], h [B, H] (already reset), the action mask [B, A] or None -> logits
        [B, A] (not masked), value [B], h' [B, H]."""
        h = self.gru(self.enc(obs), h)
        return self._logits(h, obs, mask), self.v(h).squeeze(-1), h

    def sequence(self, obs: torch.Tensor, h0: torch.Tensor, reset: torch.Tensor, mask: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Replay of N sequences: obs [L, N, D], h0 [N, H] (the state fed at the first step), reset [L, N]
        (zero the state before that step), masks [L, N, A] or None -> logits [L, N, A] (not masked), values
        [L, N]."""
        x = self.enc(obs)
        h, out = h0, []
        for t in range(obs.shape[0]):
            h = torch.where(reset[t, :, None], torch.zeros_like(h), h)
            h = self.gru(x[t], h)
            out.append(h)
        hs = torch.stack(out)
        return self._logits(hs, obs, mask), self.v(hs).squeeze(-1)


class RecurrentRollout(Rollout):
    """``Rollout`` with n_steps + 1 rows (the last one is the next rollout's first step, see the module
    docstring), the GRU input state ``hidden`` [T+1, B, H] and ``trial_end`` [T+1, B]; ``first`` marks trial
    starts (where the state is reset)."""

    KEYS = Rollout.KEYS + ("hidden", "trial_end")

    def __init__(self, T: int, B: int, obs_dim: int, n_actions: int, device, masked: bool, rnn_hidden: int):
        super().__init__(int(T) + 1, B, obs_dim, n_actions, device, masked)
        self.n = int(T)  # rows learnt from; row n only supplies the bootstrap value
        self.hidden = torch.zeros(self.T, self.B, int(rnn_hidden), dtype=torch.float32, device=device)
        self.trial_end = torch.zeros(self.T, self.B, dtype=torch.bool, device=device)

    def shift(self) -> None:
        """After learning: the extra row becomes row 0 of the next rollout."""
        for k in self.KEYS:
            x = getattr(self, k)
            if x is not None:
                x[0].copy_(x[self.n])
        self.pos = 1

    @classmethod
    def like(cls, state: dict, device) -> RecurrentRollout:
        obs, masks = state["obs"], state["masks"]
        ro = cls(obs.shape[0] - 1, obs.shape[1], obs.shape[2], masks.shape[2] if masks is not None else 1, device,
                 masks is not None, state["hidden"].shape[2])
        ro.load_state_dict(state, device)
        return ro


class _RecurrentGreedyStep(nn.Module):
    """``RL2PPOAgent.acting_step``'s module: ``act`` with ``deterministic`` at batch 1."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, obs, h, start, *mask):
        h = torch.where(start[:, None], torch.zeros_like(h), h)
        m = mask[0] if mask else None
        logits, _, h_next = self.net.step(obs, h, m)
        return masked_logits(logits, m).argmax(-1), h_next


class RL2PPOAgent(PPOAgent):
    name = "rl2_ppo"
    Config = RL2PPOConfig

    def __init__(self, obs_dim, n_actions, env, device, **hparams):
        if env is not None and hasattr(env, "meta_obs") and not env.meta_obs:
            raise ValueError("agent=rl2_ppo needs the RL^2 observation (previous action, previous reward, "
                             "episode-start flag): set env.meta_obs=true (and env.trial_episodes=K for trials "
                             "of K episodes)")
        super().__init__(obs_dim, n_actions, env, device, **hparams)
        self.rollout: RecurrentRollout | None = None
        self._src: dict | None = None  # the rollout cut into chunks, during one update
        self._h_last: torch.Tensor | None = None  # state after the latest observed step (for checkpoints)
        self._resume_h: torch.Tensor | None = None

    def _make_config(self, hparams):
        c = super()._make_config(hparams)

        def bad(msg):
            raise ValueError(f"agent=rl2_ppo: {msg}")

        if c.rnn_hidden < 1:
            bad(f"rnn_hidden must be >= 1, got {c.rnn_hidden}")
        if c.bptt < 1 or c.n_steps % c.bptt:
            bad(f"bptt must be >= 1 and divide n_steps, got bptt={c.bptt}, n_steps={c.n_steps}")
        if c.batch_size % c.bptt:
            bad(f"batch_size counts transitions and must be a multiple of bptt, got batch_size={c.batch_size}, "
                f"bptt={c.bptt}")
        if not c.shared:
            bad("shared must be true: policy and value read the same GRU state")
        return c

    def _build_net(self) -> nn.Module:
        c = self.cfg
        return RecurrentActorCritic(self.obs_dim, self.n_actions, c.hidden, c.rnn_hidden, c.activation,
                                    self._pointer())

    def meta(self) -> dict:
        return {**super().meta(), "rnn_hidden": int(self.cfg.rnn_hidden)}

    # --- acting -------------------------------------------------------------------------------------------
    def initial_state(self, batch: int) -> torch.Tensor:
        """Zeros [B, H]; right after ``load_state_dict`` the saved state of the trials in progress (once, when
        B matches), so a resumed run continues them exactly."""
        h, self._resume_h = self._resume_h, None
        if h is not None and h.shape[0] == batch:
            return h.to(self.device).clone()
        return torch.zeros(batch, self.cfg.rnn_hidden, device=self.device)

    @staticmethod
    def _trial_start(info: dict | None, B: int, device) -> torch.Tensor:
        """Rows whose obs opens a trial. Envs without trials (e.g. CartPole): rows that just autoreset."""
        info = info or {}
        flag = info.get("trial_start", info.get("_final_obs"))
        if flag is None:
            return torch.zeros(B, dtype=torch.bool, device=device)
        return torch.as_tensor(flag, device=device).to(torch.bool).reshape(B)

    def act(self, obs, state, info, deterministic=False):
        B = obs.shape[0]
        mask = info.get("action_mask") if info else None
        start = self._trial_start(info, B, obs.device)
        h = torch.zeros(B, self.cfg.rnn_hidden, device=obs.device) if state is None else state
        h = torch.where(start[:, None], torch.zeros_like(h), h)
        with torch.no_grad():
            logits, value, h_next = self.net.step(obs, h, mask)
            logits = masked_logits(logits, mask)
            if deterministic:
                return logits.argmax(-1), h_next
            action = self._sample(logits)
            logp = F.log_softmax(logits, -1).gather(-1, action.unsqueeze(-1)).squeeze(-1)
        self._pending = (action, logp, value, mask, h, start, h_next)
        return action, h_next

    def acting_step(self, masked: bool = False) -> ActingStep:
        """The mode of the recurrent policy: (obs, h, start[, mask]) -> (action, next h), h zeroed at ``start``."""
        inputs = {"obs": torch.zeros(1, self.obs_dim), "h": torch.zeros(1, self.cfg.rnn_hidden),
                  "start": torch.ones(1, dtype=torch.bool)}
        if masked:
            inputs["mask"] = torch.ones(1, self.n_actions, dtype=torch.bool)
        return ActingStep(_RecurrentGreedyStep(self.net), inputs, ("action", "next_h"), {"next_h": "h"})

    def observe(self, obs, action, reward, terminated, truncated, next_obs, info) -> None:
        pend, self._pending = self._pending, None
        if pend is None or not same_action(pend[0], action):
            raise RuntimeError("rl2_ppo: observe() needs the action returned by this agent's latest stochastic "
                               "act() (the GRU state it acted from is stored with the transition)")
        _, logp, value, mask, h, start, self._h_last = pend
        B = obs.shape[0]
        if self.rollout is None or self.rollout.B != B:
            self.rollout = RecurrentRollout(self.cfg.n_steps, B, self.obs_dim, self.n_actions, self.device,
                                            mask is not None, self.cfg.rnn_hidden)
        terminated = terminated.to(torch.bool)
        ended = terminated | truncated.to(torch.bool)
        trial_end = info.get("trial_end") if info else None
        trial_end = ended if trial_end is None else trial_end.to(torch.bool)  # no trials: a trial is an episode
        ro = self.rollout
        t = ro.add(obs, action, logp, value, reward, terminated, ended, start, mask)
        ro.hidden[t].copy_(h)
        ro.trial_end[t].copy_(trial_end)

    # --- learning -----------------------------------------------------------------------------------------
    # update() is PPOAgent's; a rollout keeps n_steps + 1 rows (the last opens the next rollout), and the
    # epochs replay it in bptt chunks from the stored GRU states.
    @contextmanager
    def _learning(self, ro):
        self._src = self._chunked(ro)
        try:
            yield
        finally:
            self._src = None

    def _values(self, ro) -> torch.Tensor:
        return ro.values[:ro.n]

    def _next_rollout(self, ro) -> None:
        ro.shift()

    def _targets(self, ro: RecurrentRollout) -> tuple[torch.Tensor, torch.Tensor]:
        """GAE over whole trials [n_steps, B]: cut (and not bootstrapped) at trial ends only."""
        n, c = ro.n, self.cfg
        values, tend = ro.values[:n], ro.trial_end[:n]
        adv = gae(ro.rewards[:n], values, ro.values[1:n + 1], tend, tend, c.gamma, c.gae_lambda)
        return adv, adv + values

    def _chunk(self, x: torch.Tensor) -> torch.Tensor:
        """[n_steps, B, ...] -> [bptt, C, ...]; chunk j * B + b is steps j*bptt .. (j+1)*bptt - 1 of env b."""
        L, n = self.cfg.bptt, self.rollout.n
        x = x[:n]
        J, B = n // L, x.shape[1]
        return x.reshape(J, L, *x.shape[1:]).transpose(0, 1).reshape(L, J * B, *x.shape[2:])

    def _chunked(self, ro: RecurrentRollout) -> dict[str, torch.Tensor]:
        src = {k: self._chunk(getattr(ro, k)) for k in ("obs", "actions", "logp", "values", "first")}
        src["masks"] = self._chunk(ro.masks) if ro.masks is not None else None
        src["h0"] = self._chunk(ro.hidden)[0]
        return src

    def _minibatches(self, batch_size: int | None) -> Iterator[torch.Tensor]:
        """Chunk index sets of batch_size / bptt chunks, freshly shuffled."""
        n = (self.rollout.n // self.cfg.bptt) * self.rollout.B
        per = n if batch_size is None else max(1, int(batch_size) // self.cfg.bptt)
        if per >= n:
            yield torch.arange(n, device=self.device)
            return
        yield from torch.randperm(n, generator=self.gen, device=self.device).split(per)

    def _take(self, idx, adv, ret):
        s = self._src if self._src is not None else self._chunked(self.rollout)
        mb = {k: (v[:, idx] if k != "h0" else v[idx]) for k, v in s.items() if v is not None}
        mb["masks"] = s["masks"][:, idx] if s["masks"] is not None else None
        mb["adv"], mb["ret"] = self._chunk(adv)[:, idx], self._chunk(ret)[:, idx]
        return mb

    def _evaluate(self, mb):
        logits, values = self.net.sequence(mb["obs"], mb["h0"], mb["first"], mb["masks"])
        return masked_logits(logits, mb["masks"]), values

    # --- checkpoints --------------------------------------------------------------------------------------
    def state_dict(self, include_replay: bool = True) -> dict:
        """PPO's state plus the GRU state the trials in progress carry (``initial_state`` hands it back)."""
        out = super().state_dict(include_replay)
        out["hidden_last"] = self._h_last
        return out

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict({**state, "rollout": None})
        ro = state.get("rollout")
        if ro is not None and ro["obs"].shape[0] == self.cfg.n_steps + 1 and "hidden" in ro:
            self.rollout = RecurrentRollout.like(ro, self.device)
        h = state.get("hidden_last")
        self._h_last = None if h is None else h.to(self.device)
        self._resume_h = self._h_last


__all__ = ["RL2PPOAgent", "RL2PPOConfig", "RecurrentActorCritic", "RecurrentRollout"]
