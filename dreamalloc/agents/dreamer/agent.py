"""DreamerV3 (Hafner et al., Nature 2025) as an agent of this codebase: act / observe / update / checkpoints.

Acting runs the RSSM posterior on each batch of observations and samples from the (masked) policy; every
transition is written to a sequence replay together with the latent the agent acted from; ``update`` does
``train_ratio`` replayed steps per env step (config.py), each gradient update being one step of one
optimiser on the sum of the world-model, actor, critic and replay-value losses. A NaN or infinite loss or
gradient raises ``NonFiniteLossError`` before any parameter changes.

Meta-RL (``meta: true``, preset conf/agent/dreamer_rl2.yaml; MAMBA's recipe, Rimon et al. 2024): the trial
is the unit. The RSSM state is zeroed only where ``info["trial_start"]`` is set (``reset_at: episode`` zeroes
it at every episode start instead: the ablation, and the non-meta control); an inner episode end writes no
extra record and no terminal flag, so the next episode's first observation follows the last step of the
previous one in the same replayed sequence (with that step's action and reward, as RL^2's inputs in the
observation do), the continue head is trained to 0 only where a trial ends (``info["trial_end"]``), and the
lambda-returns run across inner episode boundaries. The replayed sequences are windows of the trial's
stream: they span inner episode ends, start (with ``replay_context``) from the latent stored while acting,
and imagination starts from every state of a window, in late episodes of a trial too.
"""

from __future__ import annotations

import copy
import os
import shutil
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, fields

import torch
from torch.nn import functional as F

from dreamalloc.agents.base import ActingStep, Agent, NonFiniteLossError
from dreamalloc.agents.dreamer.actions import ActionSpace
from dreamalloc.agents.dreamer.behavior import ActorCritic
from dreamalloc.agents.dreamer.config import DreamerConfig, DreamerRL2Config, check
from dreamalloc.agents.dreamer.plan import lookahead_q
from dreamalloc.agents.dreamer.replay import SequenceReplay
from dreamalloc.agents.dreamer.world_model import WorldModel
from dreamalloc.nn.dense import norm_mlps
from dreamalloc.nn.optim import LaProp, adaptive_clip_

START_KEYS = ("trial_start", "episode_start", "_final_obs")  # info flags: the obs opens an episode (or trial)
EPISODE_KEYS = ("episode_start", "_final_obs")  # reset_at=episode: the flags of an episode's first obs


def _flag(x, B: int, device) -> torch.Tensor:
    return torch.as_tensor(x, device=device).to(torch.bool).reshape(B)


class _DreamerActStep(torch.nn.Module):
    """``DreamerAgent.acting_step``'s module: encoder, posterior step, (recurrent) actor and the mode."""

    def __init__(self, agent: DreamerAgent, masked: bool):
        super().__init__()
        self.wm, self.ac = agent.greedy_nets()
        self.space, self.masked = agent.space, masked
        self.gru = agent.ac.gru is not None
        self.noisy = agent.cfg.greedy_latent == "sample"  # else the latent's mode: no noise input

    def forward(self, obs, deter, stoch, prev_action, start, *extra):
        noise = extra[0] if self.noisy else torch.zeros(1, self.wm.rssm.stoch, self.wm.rssm.classes)
        extra = extra[1:] if self.noisy else extra
        ac_h = extra[0] if self.gru else None
        mask = extra[-1] if self.masked else None
        token = self.wm.encode(obs.float())
        deter, stoch, _ = self.wm.rssm.obs_step(deter, stoch, prev_action, token, start, noise)
        feat = self.wm.rssm.feat(deter, stoch)
        h = None if ac_h is None else self.ac.recur(feat, ac_h * (~start).float().unsqueeze(-1))
        index, onehot = self.space.sample(self.ac.logp(self.ac.inputs(feat, h), mask), True)
        return (index, deter, stoch, onehot) + (() if h is None else (h,))


class DreamerAgent(Agent):
    name = "dreamer"
    Config = DreamerConfig
    learns = True
    multi_discrete = True
    replay_by_default = False  # checkpoints leave the replay out unless save_replay=true
    acting_keys = ("greedy_latent", "greedy_ema", "greedy_plan")

    def __init__(self, obs_dim, n_actions, env, device, **hparams):
        super().__init__(obs_dim, n_actions, env, torch.device(device))
        names = {f.name for f in fields(self.Config)}
        unknown = sorted(set(hparams) - names)
        if unknown:
            raise ValueError(f"unknown dreamer hyperparameter(s) {unknown}; valid: {', '.join(sorted(names))}")
        self.cfg = c = check(self.Config(**hparams))
        cuda = self.device.type == "cuda"
        self.amp = c.precision == "bf16" and cuda
        if c.precision == "bf16" and not cuda:
            warnings.warn("agent=dreamer: precision=bf16 needs CUDA; running in fp32", stacklevel=2)
        self.space = ActionSpace(n_actions)
        if c.greedy_plan > 0 and self.space.multi:
            raise ValueError(f"agent=dreamer: greedy_plan needs a single Discrete action space (it enumerates the "
                             f"actions), not {self.space}; use greedy_plan=0")
        self.wm = WorldModel(obs_dim, self.space, c).to(self.device)
        self.ac = ActorCritic(self.wm.rssm.feat_dim, self.space, c).to(self.device)
        # greedy_ema: averaged copies of the networks for deterministic acting (the critic and heads come along:
        # greedy_plan reads them; a few hundred kB at the small presets); nn.Module attributes, so policy exports
        # carry them
        self.ema_wm: WorldModel | None = None
        self.ema_ac: ActorCritic | None = None
        if c.greedy_ema > 0:
            self.ema_wm = copy.deepcopy(self.wm).requires_grad_(False)
            self.ema_ac = copy.deepcopy(self.ac).requires_grad_(False)
            self._ema_pairs = [(e, p) for net, enet in ((self.wm, self.ema_wm), (self.ac, self.ema_ac))
                               for p, e in zip(net.parameters(), enet.parameters(), strict=True) if p.requires_grad]
        self._img_step = None
        self._imag_buf: torch.Tensor | None = None  # imagined features, kept between updates
        if c.compile:
            # the posterior step (a sequence's 64 dependent steps of a few rows: per-op overhead) compiles on any
            # device; the prior step on CUDA only (compiled on the CPU, imagination got slower: docs/results.md)
            if not cuda and not (os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")):
                raise ValueError("agent=dreamer: compile=true on the CPU needs a C++ compiler for torch.compile "
                                 "(g++, or set CXX); install one or use agent.compile=false")
            self.wm.obs_step_fn = torch.compile(self.wm.rssm.post_step, dynamic=False)
            if cuda:
                self._img_step = torch.compile(self.wm.rssm.img_step)
        self.params = [p for p in (*self.wm.parameters(), *self.ac.parameters()) if p.requires_grad]
        if c.optimizer == "laprop":
            self.opt = LaProp(self.params, lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps)
        else:
            self.opt = torch.optim.Adam(self.params, lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps)
        self.replay: SequenceReplay | None = None
        self.n_updates, self.env_steps, self._credit = 0, 0, 0.0
        self._counted: int | None = None  # env_steps already credited with updates
        self._pending: dict | None = None
        self._next: dict | None = None  # what the next record of each env carries in (prev action, reward, first)
        self.metrics: dict[str, float] = {}
        self._last_state: dict | None = None  # the recurrent state after the last act (saved in checkpoints)
        self._resume_state: dict | None = None  # ... and loaded: initial_state hands it out once

    def _starts(self, info, B: int) -> torch.Tensor | None:
        """Where the RSSM state is zeroed before this observation: ``trial_start`` (or, for drivers without
        it, the episode flags), every episode start with ``reset_at: episode``; None when info says nothing."""
        keys = EPISODE_KEYS if self.cfg.reset_at == "episode" else START_KEYS
        for k in keys:
            if info and k in info:
                return _flag(info[k], B, self.device)
        return None

    # --- acting -------------------------------------------------------------------------------------
    def initial_state(self, batch: int) -> dict:
        """Zeros; right after ``load_state_dict`` the saved state of the rows' trials in progress (once, when
        ``batch`` matches), so a resumed run continues them exactly."""
        saved, self._resume_state = self._resume_state, None
        if saved is not None and saved["deter"].shape[0] == batch:
            return {k: v.to(self.device).clone() for k, v in saved.items()}
        deter, stoch = self.wm.rssm.initial(batch, self.device)
        state = {"deter": deter, "stoch": stoch, "action": torch.zeros(batch, self.space.dim, device=self.device),
                 "first": torch.ones(batch, dtype=torch.bool, device=self.device)}
        if self.cfg.ac_gru > 0:
            state["ac_h"] = torch.zeros(batch, self.cfg.ac_gru, device=self.device)
        return state

    def greedy_nets(self) -> tuple[WorldModel, ActorCritic]:
        """The world model and actor-critic that deterministic acting uses: the averaged copies with
        ``greedy_ema`` > 0, else the trained networks themselves."""
        return (self.ema_wm, self.ema_ac) if self.ema_wm is not None else (self.wm, self.ac)

    @contextmanager
    def greedy_on_trained_weights(self):
        """Within the block deterministic acting uses the trained weights even with ``greedy_ema`` (to compare the
        two on one checkpoint)."""
        ema, self.ema_wm, self.ema_ac = (self.ema_wm, self.ema_ac), None, None
        try:
            yield self
        finally:
            self.ema_wm, self.ema_ac = ema

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema_wm is not None:
            ema, params = zip(*self._ema_pairs, strict=True)
            torch._foreach_lerp_(list(ema), list(params), 1.0 - self.cfg.greedy_ema)

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else nullcontext()

    def act(self, obs, state, info, deterministic=False):
        B = obs.shape[0]
        if state is None:
            state = self.initial_state(B)
        first = state["first"].clone()
        starts = self._starts(info, B)
        if starts is not None:
            first |= starts
        mask = info.get("action_mask") if info else None
        wm, ac = self.greedy_nets() if deterministic else (self.wm, self.ac)
        with torch.no_grad(), self._autocast():
            token = wm.encode(obs.to(self.device).float())
            noise = None  # a draw from the posterior; its mode (no noise) when acting greedily with greedy_latent: mode
            if deterministic and self.cfg.greedy_latent == "mode":
                noise = torch.zeros(B, wm.rssm.stoch, wm.rssm.classes, device=self.device)
            deter, stoch, _ = wm.rssm.obs_step(state["deter"], state["stoch"], state["action"], token, first, noise)
            feat = wm.rssm.feat(deter, stoch)
            h = None
            if ac.gru is not None:  # the recurrent actor-critic resets where the latent does
                h = ac.recur(feat, state["ac_h"] * (~first).float().unsqueeze(-1))
            if deterministic and self.cfg.greedy_plan > 0:  # argmax of a one-step lookahead (plan.py)
                action = lookahead_q(wm, ac, deter, stoch, h, self.cfg.greedy_plan, mask).argmax(-1)
                onehot = self.space.onehot(action)
            else:
                logp = ac.logp(ac.inputs(feat, h), mask)
                action, onehot = self.space.sample(logp, deterministic)
        deter, stoch = deter.float(), stoch.float()
        new = {"deter": deter, "stoch": stoch, "action": onehot.float(),
               "first": torch.zeros_like(first)}
        if h is not None:
            new["ac_h"] = h.float()
        self._pending = {"action": action, "deter_in": state["deter"], "stoch_in": state["stoch"], "first": first,
                         "deter": deter, "stoch": stoch, "mask": mask}
        self._last_state = new
        return action, new

    def acting_step(self, masked: bool = False) -> ActingStep:
        """``act`` with ``deterministic`` at batch 1: (obs, deter, stoch, prev_action (the last action's one-hot),
        start[, noise][, ac_h][, mask]) -> (action, deter, stoch, one-hot[, ac_h]); ``start`` resets the latent
        (pass the trial starts, or the episode starts with ``reset_at: episode``); ``noise`` is the Gumbel noise
        of the latent's draw [1, stoch, classes], an input only with ``greedy_latent: sample`` (with ``mode`` the
        step takes the posterior's mode and is a function of its inputs alone)."""
        if self.cfg.greedy_plan > 0:
            raise NotImplementedError("agent=dreamer: greedy_plan (a lookahead over drawn latents) has no exported "
                                      "acting step; export or time the agent with agent.greedy_plan=0")
        s = {k: v.cpu() for k, v in self.initial_state(1).items()}
        rssm = self.wm.rssm
        inputs = {"obs": torch.zeros(1, self.obs_dim), "deter": s["deter"], "stoch": s["stoch"],
                  "prev_action": s["action"], "start": s["first"]}
        if self.cfg.greedy_latent == "sample":
            inputs["noise"] = torch.zeros(1, rssm.stoch, rssm.classes)
        outputs = ["action", "next_deter", "next_stoch", "next_action"]
        if "ac_h" in s:
            inputs["ac_h"] = s["ac_h"]
            outputs.append("next_ac_h")
        if masked:
            inputs["mask"] = torch.ones(1, self.space.dim, dtype=torch.bool)
        carry = {"next_deter": "deter", "next_stoch": "stoch", "next_action": "prev_action"}
        if "ac_h" in inputs:
            carry["next_ac_h"] = "ac_h"
        return ActingStep(_DreamerActStep(self, masked), inputs, tuple(outputs), carry)

    def observe(self, obs, action, reward, terminated, truncated, next_obs, info) -> None:
        B, dev = obs.shape[0], self.device
        if self.replay is None:
            c = self.cfg
            self.replay = self._new_replay(B, max(c.replay_size // B, c.batch_length + 1),
                                           bool(info and "action_mask" in info))
        if self._next is None or self._next["reward"].shape[0] != B:
            self._next = {"prev_action": torch.full((B, *self._act_shape), -1, dtype=torch.long, device=dev),
                          "reward": torch.zeros(B, device=dev), "first": torch.ones(B, dtype=torch.bool, device=dev)}
        pend, self._pending = self._pending, None
        if pend is None or pend["action"] is not action:  # an external driver acted: no latent to store
            d0, s0 = self.wm.rssm.initial(B, dev)
            pend = {"deter_in": d0, "stoch_in": s0, "deter": d0, "stoch": s0, "first": self._next["first"],
                    "mask": None}
        action = action.to(dev).long()
        reward = reward.to(dev).float()
        terminated, truncated = _flag(terminated, B, dev), _flag(truncated, B, dev)
        nx = self._next
        rows = torch.arange(B, device=dev)
        no = torch.zeros(B, dtype=torch.bool, device=dev)
        self.replay.add(rows, obs.to(dev).float(), nx["prev_action"], nx["reward"], pend["first"], no, no,
                        pend["mask"], pend["deter_in"], pend["stoch_in"])
        ended = terminated | truncated
        if self.cfg.meta and info and "trial_end" in info:  # only a trial's end closes a replayed sequence
            ended = ended & _flag(info["trial_end"], B, dev)
        if bool(ended.any()):  # the final observation of each ended episode (trial) is a record of its own
            r = ended.nonzero().squeeze(1)
            yes = torch.ones(r.numel(), dtype=torch.bool, device=dev)
            self.replay.add(r, next_obs.to(dev).float()[r], action[r], reward[r], ~yes, terminated[r], yes, None,
                            pend["deter"][r], pend["stoch"][r])
        starts = self._starts(info, B)
        starts = ended.clone() if starts is None else starts
        ended_a = ended.view(B, *[1] * len(self._act_shape))
        self._next = {"prev_action": torch.where(ended_a, -1, action), "reward": torch.where(ended, 0.0, reward),
                      "first": starts}
        self.env_steps += B

    @property
    def _act_shape(self) -> tuple[int, ...]:
        """Shape of one env's integer action: () for Discrete, (D,) for MultiDiscrete."""
        return (len(self.space.nvec),) if self.space.multi else ()

    def _new_replay(self, envs: int, capacity: int, masked: bool) -> SequenceReplay:
        c = self.cfg
        return SequenceReplay(envs, capacity, self.obs_dim, self.space.dim, c.deter, c.stoch, self.device,
                              masked=masked, action_dims=len(self.space.nvec) if self.space.multi else None,
                              classes=c.classes, latent_dtype=c.replay_latents)

    # --- learning -------------------------------------------------------------------------------------
    def update(self, step: int) -> dict[str, float]:
        """Gradient updates owed by the env steps since the last call: ``train_ratio`` replayed steps per env
        step, once ``learning_starts`` env steps were observed."""
        c = self.cfg
        if self.replay is None or self.env_steps < c.learning_starts or not self.replay.can_sample(c.batch_length):
            return self.metrics
        if self._counted is None:  # learning starts now, with one update
            self._counted, self._credit = self.env_steps, 1.0
        self._credit += (self.env_steps - self._counted) * c.train_ratio / (c.batch_size * c.batch_length)
        self._counted = self.env_steps
        sums: dict[str, float] = {}
        n = 0
        while self._credit >= 1.0:
            self._credit -= 1.0
            for k, v in self.train_step().items():
                sums[k] = sums.get(k, 0.0) + v
            n += 1
        if n:
            self.metrics = {k: v / n for k, v in sums.items()}
        return self.metrics

    def actent(self) -> float:
        """The entropy scale at this point of training: ``actent``, or with ``actent_decay`` > 0 a linear fall to
        ``actent_end`` over the first ``actent_decay`` env steps."""
        c = self.cfg
        if c.actent_decay <= 0:
            return c.actent
        f = min(self.env_steps / c.actent_decay, 1.0)
        return c.actent + f * (c.actent_end - c.actent)

    def _lr(self) -> float:
        c = self.cfg
        return c.lr * min(1.0, (self.n_updates + 1) / c.warmup) if c.warmup > 0 else c.lr

    def train_step(self, data: dict | None = None) -> dict[str, float]:
        """One gradient update on a replayed batch (sampled unless ``data`` is given)."""
        c = self.cfg
        if data is None:
            data = self.replay.sample(c.batch_size, c.batch_length)
        B, T = data["reward"].shape
        if c.replay_context:
            deter0 = data["deter"][:, 0]
            stoch0 = F.one_hot(data["stoch"][:, 0], c.classes).float()
        else:
            deter0, stoch0 = self.wm.rssm.initial(B, self.device)
        with self._autocast():
            wm_losses, deter, stoch, feat = self.wm.loss(data, deter0, stoch0)
            K = c.imag_last if 0 < c.imag_last < T else T  # imagination starts: the last K steps of each row
            N = B * K
            d = deter.detach()[:, -K:].reshape(N, -1)
            s = stoch.detach()[:, -K:].reshape(N, c.stoch, c.classes)
            mask0 = data["mask"][:, -K:].reshape(N, -1) if "mask" in data else None
            logps = []  # the policy's log-probabilities with their graph: the actor loss reuses them
            rep_h = self._replay_ac_states(feat.detach(), data["first"])  # [B, T, G] or None
            hs = [None if rep_h is None else rep_h[:, -K:].reshape(N, -1)]  # the recurrent actor-critic's states

            def policy(f, h):
                with torch.enable_grad():
                    if h > 0 and hs[0] is not None:  # the start state's GRU state already saw its features
                        hs.append(self.ac.recur(f, hs[-1]))
                    logps.append(self.ac.logp(self.ac.inputs(f, hs[-1]), mask0 if h == 0 else None))
                return self.space.sample(logps[-1].detach())[1].to(f.dtype)

            with torch.no_grad():
                ifeat, iact = self.wm.rssm.imagine(d, s, policy, c.imag_length, self._img_step, self._imag_buf)
            self._imag_buf = ifeat  # reused next update (only read by this update's losses and backward)
            rfeat = feat.detach()[:, -K:]
            # the predicted rewards and continues and both critics in one pass over the imagined features
            if rep_h is None:
                irew, icont, *values = norm_mlps(ifeat, self.wm.prediction_heads() + self.ac.value_heads())
            else:  # the critic reads [features | GRU state] (detached: the actor trains the GRU)
                irew, icont = norm_mlps(ifeat, self.wm.prediction_heads())
                ifeat = self.ac.inputs(ifeat, torch.stack([h.detach() for h in hs], 1))
                rfeat = self.ac.inputs(rfeat, rep_h[:, -K:])
                values = None
            rep = {"feat": rfeat, "reward": data["reward"][:, -K:],
                   "terminal": data["terminal"][:, -K:], "last": data["last"][:, -K:], "discount": self.wm.discount}
            actent = self.actent()
            ac_losses, metrics = self.ac.loss(ifeat, iact, irew, icont, mask0, rep if c.loss_repval > 0 else None,
                                              torch.stack(logps, 1), actent=actent, values=values)
            if c.actent_decay > 0:
                metrics["actent"] = actent
        scales = {"dyn": c.kl_dyn, "rep": c.kl_rep, "rec": c.loss_rec, "rew": c.loss_rew, "con": c.loss_con,
                  "policy": c.loss_policy, "value": c.loss_value, "repval": c.loss_repval}
        losses = {**wm_losses, **ac_losses}
        total = sum(scales[k] * v.float() for k, v in losses.items())
        if not bool(torch.isfinite(total)):
            bad = [k for k, v in losses.items() if not bool(torch.isfinite(v))]
            raise NonFiniteLossError(f"agent=dreamer: non-finite loss ({', '.join(bad) or 'total'}) at update "
                                     f"{self.n_updates}; parameters are those of the last good update")
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        grads = [p.grad for p in self.params if p.grad is not None]
        gnorm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        if not bool(torch.isfinite(gnorm)):
            self.opt.zero_grad(set_to_none=True)
            raise NonFiniteLossError(f"agent=dreamer: non-finite gradient at update {self.n_updates}; parameters "
                                     "are those of the last good update")
        if c.agc > 0:
            adaptive_clip_(self.params, c.agc)
        lr = self._lr()
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.step()
        self.ac.update_slow()
        self._update_ema()
        self.n_updates += 1
        if c.replay_context and "env" in data:
            self.replay.write_latents(data, deter, stoch)
        out = {f"loss/{k}": float(v.detach()) for k, v in losses.items()}
        out.update({k: float(v) for k, v in metrics.items()})
        out.update(loss=float(total.detach()), grad_norm=float(gnorm), lr=lr, updates=float(self.n_updates))
        return out

    def _replay_ac_states(self, feat: torch.Tensor, first: torch.Tensor) -> torch.Tensor | None:
        """The recurrent actor-critic's states [B, T, G] over replayed posterior features [B, T, F] (zeros at
        each window's start and where ``first`` resets; no gradient), or None without ``ac_gru``."""
        if self.ac.gru is None:
            return None
        with torch.no_grad():
            h = feat.new_zeros(feat.shape[0], self.cfg.ac_gru, dtype=torch.float32)
            keep = (~first).float().unsqueeze(-1)
            out = []
            for t in range(feat.shape[1]):
                h = self.ac.recur(feat[:, t], h * keep[:, t])
                out.append(h)
        return torch.stack(out, 1)

    # --- checkpoints ----------------------------------------------------------------------------------
    def state_dict(self, include_replay: bool = True) -> dict:
        return {"config": asdict(self.cfg), "wm": self.wm.state_dict(), "ac": self.ac.state_dict(),
                "opt": self.opt.state_dict(), "n_updates": self.n_updates, "env_steps": self.env_steps,
                "credit": self._credit, "counted": self._counted, "next": self._next,
                "metrics": dict(self.metrics),
                "replay": self.replay.state_dict() if include_replay and self.replay is not None else None,
                "replay_envs": self.replay.B if self.replay is not None else None,
                "carry": self._last_state,
                "ema": None if self.ema_wm is None else {"wm": self.ema_wm.state_dict(),
                                                         "ac": self.ema_ac.state_dict()}}

    def load_state_dict(self, state: dict) -> None:
        self.wm.load_state_dict(state["wm"])
        self.ac.load_state_dict(state["ac"])
        if self.ema_wm is not None:  # a checkpoint saved without the average starts it from its trained weights
            ema = state.get("ema") or {"wm": state["wm"], "ac": state["ac"]}
            self.ema_wm.load_state_dict(ema["wm"])
            self.ema_ac.load_state_dict(ema["ac"])
        self.opt.load_state_dict(state["opt"])
        self.n_updates, self.env_steps = int(state["n_updates"]), int(state["env_steps"])
        self._credit = float(state["credit"])
        self._counted = state.get("counted")
        nx = state.get("next")
        self._next = {k: v.to(self.device) for k, v in nx.items()} if nx is not None else None
        self.metrics = dict(state.get("metrics", {}))
        rep = state.get("replay")
        if rep is not None:
            B = int(state["replay_envs"])
            cap = int(rep.get("capacity", rep["obs"].shape[1]))  # older states: the rings were full depth
            self.replay = self._new_replay(B, cap, rep.get("mask") is not None)
            self.replay.load_state_dict({k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in rep.items()})
        else:
            self.replay = None
        self._pending = None
        carry = state.get("carry")
        self._resume_state = {k: v.to(self.device) for k, v in carry.items()} if carry is not None else None
        self._last_state = self._resume_state

    def meta(self) -> dict:
        c = self.cfg
        return {**super().meta(), "deter": c.deter, "hidden": c.hidden, "classes": c.classes, "units": c.units}


class DreamerRL2Agent(DreamerAgent):
    """``agent=dreamer_rl2``: the dreamer with ``meta: true`` by default (conf/agent/dreamer_rl2.yaml)."""

    name = "dreamer_rl2"
    Config = DreamerRL2Config


__all__ = ["DreamerAgent", "DreamerRL2Agent"]
