"""The recurrent state-space model: a block GRU carries the deterministic state ``deter`` [B, D]; the
stochastic state ``stoch`` [B, S, K] is S one-hot categoricals of K classes.

``observe`` (posterior) sees the encoder's token of each observation; ``imagine`` (prior) predicts the
stochastic state from ``deter`` alone, which is all the actor-critic sees in imagination. ``is_first``
zeroes the carried state and the previous action, so the state of a new episode starts from zeros whether
it is the first row of a replayed sequence or a reset in the middle of one.
"""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from dreamalloc.nn.dense import norm_mlp, trunc_normal_in_
from dreamalloc.nn.fastmlp import as_numpy, kernel_ok, njit, njit_reassoc, sigmoid32, tanh32
from dreamalloc.nn.norms import RMSNorm, run_layers


class BlockLinear(nn.Module):
    """A Linear map that is block diagonal over ``blocks`` groups: [..., (g i)] -> [..., (g o)]. The GRU of
    DreamerV3 uses it to afford a large ``deter`` at a fraction of the cost of a dense layer."""

    def __init__(self, in_features: int, out_features: int, blocks: int):
        super().__init__()
        if in_features % blocks or out_features % blocks:
            raise ValueError(f"BlockLinear: {in_features} and {out_features} must divide by {blocks} blocks")
        self.g = int(blocks)
        self.weight = nn.Parameter(torch.empty(blocks, in_features // blocks, out_features // blocks))
        self.bias = nn.Parameter(torch.zeros(out_features))
        trunc_normal_in_(self.weight, in_features // blocks)

    def blocks_out(self, x: torch.Tensor, bias: bool = True) -> torch.Tensor:
        """[N, g i] -> [g, N, o] with the bias added unless ``bias`` is False (one batched matmul; the caller picks
        the layout)."""
        g, i, o = self.weight.shape
        y = torch.bmm(x.reshape(-1, g, i).transpose(0, 1), self.weight)
        return y.add_(self.bias.view(g, 1, o)) if bias else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, _, o = self.weight.shape
        y = self.blocks_out(x)
        return y.transpose(0, 1).reshape(*x.shape[:-1], g * o)

    def split(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The weights for forward_shared when each block's own input has ``n`` features: ([g, n, o] for the
        blocks, [shared, g o] for the shared part). Recurrent loops split once per sequence, not per step."""
        g, i, o = self.weight.shape
        return self.weight[:, :n], self.weight[:, n:].transpose(0, 1).reshape(i - n, g * o)

    def forward_shared(self, x: torch.Tensor, shared: torch.Tensor, parts=None) -> torch.Tensor:
        """``forward`` of the input whose block j is [x's block j, shared] (x [N, g i'], shared [N, s]), without
        building that g-times-repeated input: the shared part is one dense product with the stacked weights.
        ``parts``: ``split(i')`` computed beforehand."""
        g, _, o = self.weight.shape
        n = x.shape[-1] // g
        own_w, shared_w = parts if parts is not None else self.split(n)
        own = torch.bmm(x.reshape(-1, g, n).transpose(0, 1), own_w)  # [g, N, o]
        y = torch.addmm(self.bias, shared, shared_w).view(-1, g, o) + own.transpose(0, 1)
        return y.reshape(-1, g * o)


@njit_reassoc
def _gru_forward(gates, bias, prev, out):
    """out[i, b d + j] = prev + u (tanh(r c) - prev) with r, c, u the reset, candidate and update gates of block b
    (``gates`` [g, N, 3 d] without their bias, ``bias`` [g 3 d]); r = sigmoid, u = sigmoid(. - 1). The inner loop
    runs over 1-D row slices: indexing the 3-D array there made numba gather instead of load."""
    g, n, d3 = gates.shape
    d = d3 // 3
    for b in range(g):
        bb = bias[b * d3:(b + 1) * d3]
        for i in range(n):
            gi, pr, ou = gates[b, i], prev[i, b * d:(b + 1) * d], out[i, b * d:(b + 1) * d]
            for j in range(d):
                r = sigmoid32(gi[j] + bb[j])
                c = tanh32(r * (gi[d + j] + bb[d + j]))
                u = sigmoid32(gi[2 * d + j] + bb[2 * d + j] - np.float32(1.0))
                ou[j] = pr[j] + u * (c - pr[j])


@njit_reassoc
def _gru_backward(gates, bias, prev, dout, dgates, dprev):
    """The gradients of _gru_forward's output towards the gates (``dgates`` [g, N, 3 d], also the bias's before the
    sum over rows) and ``prev`` [N, g d], from ``dout`` [N, g d]; the gates are recomputed, not stored. Each row goes
    through local buffers: with the arrays themselves in the inner loop numba could not rule out their overlap and
    left it scalar (4x slower)."""
    g, n, d3 = gates.shape
    d = d3 // 3
    one = np.float32(1.0)
    x, y = np.empty(d3, np.float32), np.empty(d3, np.float32)
    pv, dv, dpv = np.empty(d, np.float32), np.empty(d, np.float32), np.empty(d, np.float32)
    for b in range(g):
        bb = bias[b * d3:(b + 1) * d3]
        for i in range(n):
            gi = gates[b, i]
            for k in range(d3):
                x[k] = gi[k] + bb[k]
            pr, dr = prev[i, b * d:(b + 1) * d], dout[i, b * d:(b + 1) * d]
            for j in range(d):
                pv[j], dv[j] = pr[j], dr[j]
            for j in range(d):
                r = sigmoid32(x[j])
                c = tanh32(r * x[d + j])
                u = sigmoid32(x[2 * d + j] - one)
                dpv[j] = dv[j] * (one - u)
                dz = dv[j] * u * (one - c * c)  # z = r cp, c = tanh(z)
                y[j] = dz * x[d + j] * r * (one - r)
                y[d + j] = dz * r
                y[2 * d + j] = dv[j] * (c - pv[j]) * u * (one - u)
            dg, dp = dgates[b, i], dprev[i, b * d:(b + 1) * d]
            for k in range(d3):
                dg[k] = y[k]
            for j in range(d):
                dp[j] = dpv[j]


class _GRUUpdate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gates, bias, prev):
        out = torch.empty(prev.shape, dtype=prev.dtype)
        _gru_forward(as_numpy(gates), as_numpy(bias), as_numpy(prev), out.numpy())
        ctx.save_for_backward(gates, bias, prev)
        return out

    @staticmethod
    def backward(ctx, dout):
        gates, bias, prev = ctx.saved_tensors
        dgates, dprev = torch.empty(gates.shape, dtype=gates.dtype), torch.empty(prev.shape, dtype=prev.dtype)
        _gru_backward(as_numpy(gates), as_numpy(bias), as_numpy(prev), as_numpy(dout), dgates.numpy(), dprev.numpy())
        return dgates, dgates.sum(1).reshape(-1), dprev


def gru_update(gates: torch.Tensor, bias: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """DreamerV3's block-GRU update: the next state [N, g d] from the gates [g, N, 3 d] (reset, candidate, update of
    each block, before their ``bias`` [g 3 d]) and the previous state ``prev`` [N, g d]:
    ``u tanh(r c) + (1 - u) prev`` with r = sigmoid(reset), u = sigmoid(update - 1). On the CPU in float32 one
    compiled pass (with its backward) instead of torch's eight passes over [g, N, d] tensors and a transposing copy
    (a third of the imagination's time at the 1M preset); tanh and sigmoid there are fastmlp's rational
    approximation, within 4e-7 of torch's (tests/test_dreamer.py)."""
    g = gates.shape[0]
    if kernel_ok(gates, bias, prev) and prev.dim() == 2:
        return _GRUUpdate.apply(gates, bias, prev)
    # (clone + add_: with ``gates + bias`` a frozen TorchScript trace of the acting step failed, a view's size wrong)
    gates = gates.clone().add_(bias.view(g, 1, -1))
    reset, cand, update = gates.unflatten(-1, (3, -1)).unbind(-2)  # each [g, N, d]
    old = prev.view(prev.shape[0], g, -1).transpose(0, 1)
    cand = torch.tanh(torch.sigmoid(reset) * cand)
    # update * cand + (1 - update) * prev, in prev's dtype (a float32 carry under bf16 autocast)
    new = torch.lerp(old, cand.to(prev.dtype), torch.sigmoid(update - 1.0).to(prev.dtype))
    return new.transpose(0, 1).reshape(prev.shape)


def softmax_small(x: torch.Tensor) -> torch.Tensor:
    """softmax over the last dim of [..., S, K] computed along dim -2 of the transposed view: the same values,
    several times faster on CPU when K is a handful of classes (the innermost-dim kernel is poor there)."""
    return torch.softmax(x.transpose(-1, -2), -2).transpose(-1, -2).contiguous()


def unimix_dist(logits: torch.Tensor, unimix: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probabilities, probabilities) of (1 - unimix) softmax(logits) + unimix uniform: no class ever has
    probability 0, which bounds the KL terms and keeps the latents from collapsing to deterministic codes."""
    logits = logits.float()
    if unimix <= 0:
        probs = softmax_small(logits)
        return torch.log(probs), probs
    probs = (1.0 - unimix) * softmax_small(logits) + unimix / logits.shape[-1]
    return torch.log(probs), probs


def unimix_logits(logits: torch.Tensor, unimix: float) -> torch.Tensor:
    """The log-probabilities of unimix_dist."""
    return unimix_dist(logits, unimix)[0]


def gumbel_like(x: torch.Tensor) -> torch.Tensor:
    """Gumbel(0, 1) noise shaped like ``x``: argmax(logits + noise) is a draw from softmax(logits)."""
    u = torch.rand_like(x).clamp_(min=torch.finfo(x.dtype).tiny)
    return -torch.log(-torch.log(u))


@njit
def _argmax_onehot(x, noise, out):
    """out[n, s] = the one-hot of the first argmax over k of x[n, s, k] + noise[n, s, k] (float32 sums, as torch;
    a NaN counts as the largest, as in torch.argmax)."""
    n, s, k = x.shape
    for i in range(n):
        for j in range(s):
            best = x[i, j, 0] + noise[i, j, 0]
            arg = 0
            for c in range(1, k):
                v = x[i, j, c] + noise[i, j, c]
                if (v > best or v != v) and best == best:
                    best, arg = v, c
            for c in range(k):
                out[i, j, c] = 0.0
            out[i, j, arg] = 1.0


def argmax_onehot(x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The one-hot [..., K] of ``(x + noise).argmax(-1)`` (without gradient), in x's dtype. On the CPU in float32 one
    compiled pass over [N, S, K] (torch's argmax over a last dimension of a handful of classes and the one-hot
    after it took about 4x as long)."""
    if kernel_ok(x, noise) and x.dim() == 3 and x.shape == noise.shape:
        out = torch.empty(x.shape, dtype=x.dtype)
        _argmax_onehot(x.detach().numpy(), noise.detach().numpy(), out.numpy())
        return out
    return F.one_hot((x + noise).argmax(-1), x.shape[-1]).to(x.dtype)


def sample_onehot(logits: torch.Tensor, noise: torch.Tensor | None = None,
                  probs: torch.Tensor | None = None) -> torch.Tensor:
    """A one-hot draw from ``logits`` [..., K] with straight-through gradients (the gradient of the
    probabilities passes through the discrete sample); ``noise``: Gumbel noise drawn beforehand (gumbel_like);
    ``probs``: softmax(logits) when the caller has it already."""
    onehot = argmax_onehot(logits, gumbel_like(logits) if noise is None else noise)
    if not torch.is_grad_enabled():  # acting and imagination: no gradient to pass through
        return onehot
    probs = softmax_small(logits) if probs is None else probs
    return onehot + probs - probs.detach()


def categorical_kl(lhs: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """KL(lhs || rhs) [...] of S categoricals given as log-probabilities [..., S, K], summed over S."""
    return (lhs.exp() * (lhs - rhs)).sum((-2, -1))


class RSSM(nn.Module):
    def __init__(self, n_actions: int, token_dim: int, deter: int = 2048, hidden: int = 256, stoch: int = 32,
                 classes: int = 16, blocks: int = 8, unimix: float = 0.01, imglayers: int = 2, obslayers: int = 1,
                 dynlayers: int = 1, eps: float = 1e-4):
        super().__init__()
        self.deter, self.stoch, self.classes, self.blocks = int(deter), int(stoch), int(classes), int(blocks)
        self.n_actions, self.unimix = int(n_actions), float(unimix)
        self.dynin = nn.ModuleList([norm_mlp(d, hidden, 1, eps=eps) for d in (deter, stoch * classes, n_actions)])
        layers: list[nn.Module] = []
        d = deter + 3 * hidden * blocks  # each block sees its slice of deter and all three embeddings
        for _ in range(int(dynlayers)):
            layers += [BlockLinear(d, deter, blocks), RMSNorm(deter, eps), nn.SiLU()]
            d = deter
        self.dynhid = nn.Sequential(*layers)
        self.gru = BlockLinear(d, 3 * deter, blocks)
        self.obs_net = norm_mlp(deter + token_dim, hidden, obslayers, stoch * classes, eps=eps)
        self._obs_rest = tuple(self.obs_net)[1:]  # after the first Linear, which post_step splits (not registered)
        self.img_net = norm_mlp(deter, hidden, imglayers, stoch * classes, eps=eps)

    @property
    def feat_dim(self) -> int:
        return self.deter + self.stoch * self.classes

    def initial(self, batch: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        device = device if device is not None else self.gru.weight.device
        return (torch.zeros(batch, self.deter, device=device),
                torch.zeros(batch, self.stoch, self.classes, device=device))

    @staticmethod
    def feat(deter: torch.Tensor, stoch: torch.Tensor) -> torch.Tensor:
        """What the heads see: [..., deter + S K]."""
        return torch.cat([deter, stoch.flatten(-2).to(deter.dtype)], -1)

    def _logits(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        logits = rearrange(net(x), "... (s k) -> ... s k", s=self.stoch)
        return unimix_logits(logits, self.unimix)

    def weights(self) -> dict:
        """Views of the weights that the steps slice, made once per sequence and passed to every step: a slice
        taken inside a loop costs a full-size zero gradient per step in backward."""
        w = {"obs": self.obs_net[0].weight[:, :self.deter].t()}
        if len(self.dynhid):
            w["dyn"] = self.dynhid[0].split(self.deter // self.blocks)
        return w

    def core(self, deter: torch.Tensor, stoch: torch.Tensor, action: torch.Tensor | None,
             act_emb: torch.Tensor | None = None, w: dict | None = None) -> torch.Tensor:
        """One block-GRU step: the next ``deter`` from the previous state and action (one-hot [B, A]), or from
        the action's embedding ``act_emb`` = dynin[2](action) when computed beforehand; ``w``: weights()."""
        # (actions are one-hot: DreamerV3's action / max(1, |action|) is the identity)
        act_emb = self.dynin[2](action) if act_emb is None else act_emb
        emb = torch.cat([self.dynin[0](deter), self.dynin[1](stoch.flatten(-2)), act_emb], -1)  # [B, 3 H]
        # block j of the GRU's input is [deter's block j, emb]; forward_shared never materialises it g times
        layers = list(self.dynhid)
        if layers:
            x = run_layers(layers[1:], layers[0].forward_shared(deter, emb, w["dyn"] if w is not None else None))
            gates = self.gru.blocks_out(x, bias=False)  # [g, B, 3 d]
        else:
            gates = self.gru.blocks_out(torch.cat([rearrange(deter, "b (g d) -> b g d", g=self.blocks),
                                                   emb.unsqueeze(1).expand(-1, self.blocks, -1)], -1), bias=False)
        return gru_update(gates, self.gru.bias, deter)

    def prior(self, deter: torch.Tensor) -> torch.Tensor:
        """Log-probabilities [..., S, K] of the stochastic state predicted from ``deter`` alone."""
        return self._logits(self.img_net, deter)

    def obs_inputs(self, actions, tokens, is_first, noise=None):
        """What the posterior steps need that does not depend on the carried state, for any number of steps at
        once ([B, ...] or [B, T, ...]): the embeddings of the previous actions (zeroed at ``is_first``), the
        tokens' share of obs_net's first layer (its bias included) and the Gumbel noise of the draws (drawn here
        unless given: [..., stoch, classes])."""
        keep = (~is_first).to(tokens.dtype).unsqueeze(-1)
        act_emb = self.dynin[2](actions * keep)
        first = self.obs_net[0]
        tok = F.linear(tokens, first.weight[:, self.deter:], first.bias)
        if noise is None:
            noise = gumbel_like(tokens.new_empty(*tokens.shape[:-1], self.stoch, self.classes))
        return act_emb, tok, noise

    def post_step(self, deter, stoch, act_emb, tok, noise, keep=None, w=None):
        """Posterior step from obs_inputs' slices: (deter, stoch, logits); ``keep`` [B, 1] (0 where the step
        starts an episode) zeroes the carry, or is None when no row starts one; ``w``: weights()."""
        w = self.weights() if w is None else w
        if keep is not None:
            deter, stoch = deter * keep, stoch * keep.unsqueeze(-1)
        deter = self.core(deter, stoch, None, act_emb, w)
        x = run_layers(self._obs_rest, torch.addmm(tok, deter, w["obs"]))
        logits, probs = unimix_dist(rearrange(x, "... (s k) -> ... s k", s=self.stoch), self.unimix)
        return deter, sample_onehot(logits, noise, probs), logits

    def obs_step(self, deter, stoch, action, token, is_first, noise=None):
        """Posterior step: (deter, stoch, logits) after seeing ``token`` [B, E]; ``is_first`` [B] resets;
        ``noise``: the draw's Gumbel noise [B, stoch, classes] (drawn here when None)."""
        token = token.to(deter.dtype)
        keep = (~is_first).to(deter.dtype).unsqueeze(-1)
        return self.post_step(deter, stoch, *self.obs_inputs(action, token, is_first, noise), keep)

    def img_step(self, deter, stoch, action, w=None):
        """Prior step: (deter, stoch) after taking ``action`` (one-hot [B, A]) without an observation."""
        deter = self.core(deter, stoch, action, None, w)
        return deter, sample_onehot(self.prior(deter))

    def observe(self, deter, stoch, actions, tokens, is_first, step=None):
        """Posterior over a sequence: from the carry (deter [B, D], stoch [B, S, K]), previous actions [B, T, A],
        tokens [B, T, E] and is_first [B, T] to deters [B, T, D], stochs and posterior logits [B, T, S, K].
        Everything that does not depend on the carry is computed for all steps first (obs_inputs), so the loop
        runs only the recurrent part; ``step`` replaces ``post_step`` (e.g. by its torch.compile'd version)."""
        step = step or self.post_step
        tokens = tokens.to(deter.dtype)
        # unbind, not x[:, t]: one backward node for the whole sequence instead of a zero-filled copy per step
        act_emb, tok, noise = (x.unbind(1) for x in self.obs_inputs(actions, tokens, is_first))
        keep = (~is_first).to(deter.dtype).unsqueeze(-1).unbind(1)
        resets = is_first.any(0).tolist()
        w = self.weights()
        deters, stochs, logits = [], [], []
        for t in range(tokens.shape[1]):
            deter, stoch, logit = step(deter, stoch, act_emb[t], tok[t], noise[t], keep[t] if resets[t] else None, w)
            deters.append(deter)
            stochs.append(stoch)
            logits.append(logit)
        return torch.stack(deters, 1), torch.stack(stochs, 1), torch.stack(logits, 1)

    def imagine(self, deter, stoch, policy, horizon: int, step=None, out: torch.Tensor | None = None):
        """Roll the prior ``horizon`` steps from the start states (deter [N, D], stoch [N, S, K]) with actions
        from ``policy(feat, step) -> one-hot [N, A]``. Returns the features [N, H+1, D + S K] and actions
        [N, H+1, A] (the start state first; the last action is drawn but leads nowhere). Each step's features
        are written once into the output, which is both the policy's input and what the heads read later
        (stacking per-step states and concatenating them again costs more than the GRU steps on CPU). ``out``:
        a buffer of that shape to write them into (a fresh 40 MB tensor costs its page faults on every update)."""
        step = step or self.img_step
        w = self.weights()
        shape = (deter.shape[0], horizon + 1, self.feat_dim)
        feats = out if out is not None and out.shape == shape and out.dtype == deter.dtype else deter.new_empty(shape)
        actions = []
        for h in range(horizon + 1):
            feat = self.feat(deter, stoch)  # its own tensor: a policy may keep it for a backward pass
            feats[:, h] = feat
            actions.append(policy(feat, h))
            if h < horizon:
                deter, stoch = step(deter, stoch, actions[-1], w)
        return feats, torch.stack(actions, 1)


__all__ = ["RSSM", "BlockLinear", "argmax_onehot", "categorical_kl", "gru_update", "gumbel_like", "sample_onehot",
           "softmax_small", "unimix_dist", "unimix_logits"]
