"""Plain MLPs' forward, backward and optimiser steps compiled with numba, for the small nets of PPO, A2C and DQN on
the CPU.

At these sizes (a few thousand to a few tens of thousands of weights, minibatches of 32-320) torch spends most of
a gradient step in per-op dispatch and autograd bookkeeping, not in arithmetic. ``FlatMLPs`` lays the weights of
one or more ``mlp(...)`` stacks (Linear / activation / ... / Linear) end to end in one float32 buffer, with every
``nn.Parameter`` a view into it, so the torch modules (checkpoints, acting exports, evaluation) and the compiled
kernels read and write the same numbers. An agent writes its loss as one numba function over that buffer,
calling ``forward`` / ``backward`` here, and steps it with ``adam_step`` / ``rmsprop_step``; the optimiser's state
is torch's own (``exp_avg`` / ``exp_avg_sq`` / ``square_avg`` / ``step`` become views into flat buffers too), so a
checkpoint is the same whichever path trained it.

What this costs to keep: the gradients are written by hand, so every loss that runs here is also kept in torch
and the tests compare the two (tests/test_fastmlp.py: parameters after updates agree to float32 rounding).
Supported: ``nn.Sequential`` stacks of ``nn.Linear`` with bias and one of relu / tanh between them, on the CPU
in float32. Anything else (layer norm, other activations, pointer heads, recurrent nets, CUDA) stays on torch.

The numba helpers every kernel of the package uses live here too: ``njit`` / ``njit_reassoc`` and ``kernel_ok``
(whether tensors may leave torch for a kernel), used by norms.py's RMSNorm and the Dreamer's latent draw.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

try:  # numba is a dependency; without it every agent keeps its torch path
    import numba
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None

AVAILABLE = numba is not None
ACT_CODES = {nn.ReLU: 0, nn.Tanh: 1}
FMIN = np.float32(np.finfo(np.float32).min)  # masked_logits' fill value

if AVAILABLE:
    # numpy's error model: a division by zero gives inf / NaN as in torch (and lets loops vectorise)
    njit = numba.njit(cache=True, nogil=True, error_model="numpy")
    # the same with reassociation, so that sums vectorise (the Dreamer's RMSNorm; deterministic for a given machine)
    njit_reassoc = numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract", "nsz"})
else:  # pragma: no cover
    def njit(f):
        return f

    njit_reassoc = njit


def kernel_ok(*tensors: torch.Tensor) -> bool:
    """Whether these tensors may go through a numba kernel: float32 on the CPU, not empty, and not while torch traces
    (``torch.jit.trace``, ``torch.compile``, ``torch.export`` / ONNX export see torch ops only)."""
    if not AVAILABLE or torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return False
    return all(t.device.type == "cpu" and t.dtype == torch.float32 and t.numel() > 0 for t in tensors)


_BLAS_PINNED = False


def one_blas_thread() -> None:
    """Run the OpenBLAS that numba's ``np.dot`` calls (scipy's; numpy's too) on one thread, once per process. Products
    this small lose more to OpenBLAS's worker threads than they gain: with its default of one thread per core, a
    PPO / A2C run here took twice the CPU time (the workers spin between calls). Other BLAS (torch's) is untouched."""
    global _BLAS_PINNED
    if _BLAS_PINNED:
        return
    import scipy.linalg.cython_blas  # noqa: F401  (loads the library numba binds to)
    from threadpoolctl import ThreadpoolController

    ThreadpoolController().select(internal_api="openblas").limit(limits=1)
    _BLAS_PINNED = True


NO_MASK = np.ones((1, 1), dtype=np.bool_)  # the placeholder a kernel gets with has_mask False


def as_numpy(t: torch.Tensor) -> np.ndarray:
    """A CPU tensor's numbers as a C-contiguous numpy array (no copy when it already is one), as kernels take them."""
    return np.ascontiguousarray(t.detach().numpy())


def mask_args(mask: torch.Tensor | None) -> tuple[np.ndarray, bool]:
    """A kernel's (mask, has_mask) arguments for an action mask or None."""
    return (NO_MASK, False) if mask is None else (as_numpy(mask), True)


def plain_mlp(net: nn.Module) -> int | None:
    """The activation code of ``net`` if it is a stack these kernels run (Linear, act, ..., Linear, all Linear
    with bias, one activation kind), else None."""
    if not isinstance(net, nn.Sequential) or len(net) == 0:
        return None
    mods = list(net)
    acts = {type(m) for m in mods[1::2]}
    if len(mods) % 2 == 0 or len(acts) > 1 or (acts and next(iter(acts)) not in ACT_CODES):
        return None
    if not all(isinstance(m, nn.Linear) and m.bias is not None for m in mods[0::2]):
        return None
    return ACT_CODES[next(iter(acts))] if acts else 0


class FlatMLPs:
    """The Linear weights of ``nets`` (plain MLPs, all with the same activation) in one flat float32 buffer.

    ``p`` is the buffer (numpy, sharing memory with every ``nn.Parameter``), ``specs[k]`` net k's layout
    ``[offset, L, d0, d1, ..., dL]`` for the kernels, ``act`` the activation code. ``bind(opt)`` makes the
    optimiser's per-parameter state views into flat buffers (``m`` / ``v`` / ``step``); call it again after
    ``opt.load_state_dict``, which replaces those tensors."""

    def __init__(self, nets: list[nn.Module]):
        codes = {plain_mlp(n) for n in nets}
        if None in codes or len(codes) != 1:
            raise ValueError("FlatMLPs: every net must be a plain MLP (Linear / relu or tanh / ... / Linear), "
                             "all with the same activation")
        self.act = codes.pop()
        one_blas_thread()
        self.params: list[nn.Parameter] = []
        specs = []
        off = 0
        for net in nets:
            lin = list(net)[0::2]
            specs.append(np.array([off, len(lin), lin[0].in_features] + [m.out_features for m in lin],
                                  dtype=np.int64))
            for m in lin:
                self.params += [m.weight, m.bias]
                off += m.weight.numel() + m.bias.numel()
        if any(p.device.type != "cpu" or p.dtype != torch.float32 for p in self.params):
            raise ValueError("FlatMLPs: CPU float32 parameters only")
        self.size = off
        self.specs = specs
        self.flat = torch.empty(off, dtype=torch.float32)
        off = 0
        for t in self.params:  # each parameter becomes a view of its slice, keeping its values
            view = self.flat[off:off + t.numel()].view(t.shape)
            view.copy_(t.detach())
            t.data = view
            off += t.numel()
        self.p = self.flat.numpy()
        self.g = np.zeros(off, dtype=np.float32)  # the gradient buffer the kernels write
        self.opt: torch.optim.Optimizer | None = None

    def bind(self, opt: torch.optim.Optimizer) -> None:
        """Point ``opt``'s state for our parameters at flat buffers (keeping what it holds): Adam's ``exp_avg`` /
        ``exp_avg_sq`` become ``m`` / ``v``, RMSprop's ``square_avg`` becomes ``v``; ``step`` is one float per
        parameter, all equal."""
        if set(map(id, (p for g in opt.param_groups for p in g["params"]))) != set(map(id, self.params)):
            raise ValueError("FlatMLPs.bind: the optimiser must hold exactly these nets' parameters")
        if not isinstance(opt, (torch.optim.Adam, torch.optim.RMSprop)) or len(opt.param_groups) != 1:
            raise ValueError(f"FlatMLPs.bind: one param group of Adam or RMSprop only, got {type(opt).__name__} with "
                             f"{len(opt.param_groups)}")
        g = opt.param_groups[0]
        extras = [k for k in ("weight_decay", "momentum") if g.get(k, 0)] + \
            [k for k in ("amsgrad", "centered", "maximize") if g.get(k, False)]
        if extras:
            raise ValueError(f"FlatMLPs.bind: the kernels step plain Adam / RMSprop; this optimiser sets {extras}")
        keys = ("exp_avg", "exp_avg_sq") if isinstance(opt, torch.optim.Adam) else ("square_avg",)
        bufs = {k: torch.zeros(self.size, dtype=torch.float32) for k in keys}
        steps = torch.zeros(len(self.params), dtype=torch.float32)
        for i, p in enumerate(self.params):
            st = opt.state[p]
            off = int(sum(q.numel() for q in self.params[:i]))
            for k in keys:
                view = bufs[k][off:off + p.numel()].view(p.shape)
                if k in st:
                    view.copy_(st[k])
                st[k] = view
            if "step" in st:
                steps[i] = float(st["step"])
            st["step"] = steps[i]
        if steps.numel() and not bool((steps == steps[0]).all()):
            raise ValueError("FlatMLPs.bind: the optimiser's parameters are at different step counts")
        self.m = bufs[keys[0]].numpy()
        self.v = bufs[keys[-1]].numpy()
        self.steps = steps.numpy()
        self.opt = opt

    def hyper(self) -> tuple[float, float, float, float]:
        """(lr, beta1 or alpha, beta2 or alpha, eps) of the bound optimiser's (single) param group."""
        g = self.opt.param_groups[0]
        if isinstance(self.opt, torch.optim.Adam):
            b1, b2 = g["betas"]
            return float(g["lr"]), float(b1), float(b2), float(g["eps"])
        return float(g["lr"]), float(g["alpha"]), float(g["alpha"]), float(g["eps"])

    def step(self, max_grad_norm: float) -> float:
        """Clip ``g`` to ``max_grad_norm`` (<= 0: no clipping) and apply the bound optimiser; returns the norm
        before clipping (NaN / infinite: nothing was changed)."""
        lr, a, b, eps = self.hyper()
        if isinstance(self.opt, torch.optim.Adam):
            return adam_step(self.p, self.g, self.m, self.v, self.steps, lr, a, b, eps, max_grad_norm)
        return rmsprop_step(self.p, self.g, self.v, self.steps, lr, a, eps, max_grad_norm)


# --- kernels ------------------------------------------------------------------------------------------------
@njit
def relu_(y):
    for i in range(y.size):
        if y[i] < 0:
            y[i] = 0


# tanh(x) ~ x P(x^2) / Q(x^2) on |x| <= 7.9 (beyond, float32 tanh is within 3e-7 of +-1): a rational fit made for
# the Dreamer's float32 kernels (block-GRU gates, SiLU after RMSNorm), at most 6 float32 ulp from tanh (|error| <
# 4e-7), branch-free so that the loops calling it vectorise (numba has no vector tanh / exp here: its scalar calls made
# a fused gate kernel slower than torch's). tanh_ below is the correctly rounded (slower) one the small MLPs use.
_TANH_P = (1.0, 0.13000459969043732, 0.00300891837105155, 1.0095295692735817e-05, -1.5387579210823787e-08,
           2.538762776393977e-11)
_TANH_Q = (1.0, 0.46333783864974976, 0.024121662601828575, 0.0002404282713541761)
_P = tuple(np.float32(v) for v in _TANH_P)
_Q = tuple(np.float32(v) for v in _TANH_Q)
_CLAMP = np.float32(7.9)


@njit_reassoc
def tanh32(x):
    x = min(max(x, -_CLAMP), _CLAMP)
    u = x * x
    p = _P[0] + u * (_P[1] + u * (_P[2] + u * (_P[3] + u * (_P[4] + u * _P[5]))))
    q = _Q[0] + u * (_Q[1] + u * (_Q[2] + u * _Q[3]))
    return x * p / q


@njit_reassoc
def sigmoid32(x):
    return np.float32(0.5) + np.float32(0.5) * tanh32(np.float32(0.5) * x)


@njit
def tanh_(y):
    """tanh in place, vectorisable (numba's scalar tanh is about 40x slower than a SIMD one here). In float64:
    e = expm1(-2|x| / 64) by its Taylor series to degree 10 (|argument| <= 0.3), squared up six times with
    expm1(2z) = e (2 + e), then tanh|x| = -e / (2 + e); |x| is capped at 9.5, where float32 tanh is 1. Correctly
    rounded to float32 on a dense grid over [-12, 12] and 1e-30..10 (tests/test_fastmlp.py)."""
    for i in range(y.size):
        x = np.float64(y[i])
        a = abs(x)
        a = a if a < 9.5 else 9.5
        z = a * (-2.0 / 64.0)
        e = z * (1.0 + z * (1.0 / 2 + z * (1.0 / 6 + z * (1.0 / 24 + z * (1.0 / 120 + z * (
            1.0 / 720 + z * (1.0 / 5040 + z * (1.0 / 40320 + z * (1.0 / 362880 + z * (1.0 / 3628800))))))))))
        e = e * (2.0 + e)
        e = e * (2.0 + e)
        e = e * (2.0 + e)
        e = e * (2.0 + e)
        e = e * (2.0 + e)
        e = e * (2.0 + e)
        t = e / (2.0 + e)
        y[i] = np.float32(-t if x >= 0 else t)


@njit
def _layer(p, spec, layer):
    """(W [out, in], b [out]) of layer ``layer`` of the net laid out by ``spec``."""
    off = spec[0]
    for k in range(layer):
        off += spec[3 + k] * spec[2 + k] + spec[3 + k]
    din, dout = spec[2 + layer], spec[3 + layer]
    W = p[off:off + dout * din].reshape(dout, din)
    return W, p[off + dout * din:off + dout * din + dout]


@njit
def forward(p, spec, act, x):
    """Output [n, dL] of the net on x [n, d0] (C-contiguous float32) and the inputs of each layer (for
    ``backward``): ``hs[0]`` is x, ``hs[l]`` the activation after layer l - 1."""
    hs = [x]
    h = x
    L = spec[1]
    for layer in range(L):
        W, b = _layer(p, spec, layer)
        y = np.dot(h, W.T)
        n, d = y.shape
        for i in range(n):
            for j in range(d):
                y[i, j] += b[j]
        if layer < L - 1:
            if act == 0:
                relu_(y.ravel())
            else:
                tanh_(y.ravel())
            hs.append(y)
        h = y
    return h, hs


@njit
def greedy(p, spec, act, x, mask, has_mask):
    """argmax over the net's outputs on x, invalid actions left out as ``masked_logits`` does."""
    out = masked(forward(p, spec, act, x)[0], mask, has_mask)
    n, A = out.shape
    best = np.empty(n, dtype=np.int64)
    for i in range(n):
        k = 0
        for j in range(1, A):
            if out[i, j] > out[i, k]:
                k = j
        best[i] = k
    return best


@njit
def backward(p, g, spec, act, hs, dy):
    """Writes into ``g`` (the net's slice of a flat gradient, same layout as ``p``) the gradient of the net's
    parameters given dy = dLoss/dOutput [n, dL]."""
    L = spec[1]
    for layer in range(L - 1, -1, -1):
        W, _ = _layer(p, spec, layer)
        gW, gb = _layer(g, spec, layer)
        x = hs[layer]
        gW[:, :] = np.dot(dy.T, x)
        n, d = dy.shape
        gb[:] = 0
        for i in range(n):  # row by row: contiguous, vectorised over j
            for j in range(d):
                gb[j] += dy[i, j]
        if layer > 0:
            dx = np.dot(dy, W)
            flat_dx, flat_x = dx.ravel(), x.ravel()
            if act == 0:
                for i in range(flat_dx.size):
                    if flat_x[i] <= 0:
                        flat_dx[i] = 0
            else:
                for i in range(flat_dx.size):
                    flat_dx[i] *= 1 - flat_x[i] * flat_x[i]
            dy = dx


@njit
def masked(logits, mask, has_mask):
    """A copy of ``logits`` with ``masked_logits``' rule applied: invalid actions at the float32 minimum unless a row
    has no valid action."""
    n, A = logits.shape
    z = logits.copy()
    if has_mask:
        for i in range(n):
            any_valid = False
            for k in range(A):
                any_valid = any_valid or mask[i, k]
            if any_valid:
                for k in range(A):
                    if not mask[i, k]:
                        z[i, k] = FMIN
    return z


@njit
def masked_log_softmax(logits, mask, has_mask):
    """log-softmax over ``masked`` logits, and the masked logits themselves."""
    z = masked(logits, mask, has_mask)
    n, A = z.shape
    out = np.empty_like(z)
    for i in range(n):
        mx = z[i, 0]
        for k in range(1, A):
            mx = max(mx, z[i, k])
        s = 0.0
        for k in range(A):
            s += np.exp(z[i, k] - mx)
        lse = mx + np.log(s)
        for k in range(A):
            out[i, k] = z[i, k] - lse
    return out, z


@njit
def grad_norm(g):
    """The gradient's 2-norm (float32 products and sums, as clip_grad_norm_; BLAS's dot)."""
    return np.sqrt(np.float64(np.dot(g, g)))


@njit
def _clip(g, max_grad_norm):
    norm = grad_norm(g)
    if max_grad_norm > 0 and np.isfinite(norm):
        coef = min(max_grad_norm / (norm + 1e-6), 1.0)
        c32 = np.float32(coef)
        for i in range(g.size):
            g[i] *= c32
    return norm


@njit
def adam_step(p, g, m, v, steps, lr, beta1, beta2, eps, max_grad_norm):
    """torch's Adam (no weight decay, no amsgrad) after clip_grad_norm_; returns the norm before clipping. A NaN /
    infinite norm changes nothing (optimizer_step's guard): the caller raises."""
    norm = _clip(g, max_grad_norm)
    if not np.isfinite(norm):
        return norm
    t = steps[0] + 1.0
    steps[:] = t
    bc1 = 1.0 - beta1 ** t
    bc2_sqrt = np.sqrt(1.0 - beta2 ** t)
    step_size = np.float32(lr / bc1)
    b1, b2 = np.float32(beta1), np.float32(beta2)
    e, s2 = np.float32(eps), np.float32(bc2_sqrt)
    for i in range(p.size):
        gi = g[i]
        m[i] += (gi - m[i]) * (1 - b1)
        v[i] = v[i] * b2 + (1 - b2) * gi * gi
        p[i] -= step_size * m[i] / (np.sqrt(v[i]) / s2 + e)
    return norm


@njit
def rmsprop_step(p, g, v, steps, lr, alpha, eps, max_grad_norm):
    """torch's RMSprop (no momentum, not centred, no weight decay) after clip_grad_norm_ (same guard)."""
    norm = _clip(g, max_grad_norm)
    if not np.isfinite(norm):
        return norm
    steps[:] = steps[0] + 1.0
    a, e, lr32 = np.float32(alpha), np.float32(eps), np.float32(lr)
    for i in range(p.size):
        gi = g[i]
        v[i] = v[i] * a + (1 - a) * gi * gi
        p[i] -= lr32 * gi / (np.sqrt(v[i]) + e)
    return norm


__all__ = ["AVAILABLE", "NO_MASK", "FlatMLPs", "adam_step", "as_numpy", "backward", "forward", "grad_norm", "greedy",
           "mask_args", "masked", "masked_log_softmax", "njit", "one_blas_thread", "plain_mlp", "relu_",
           "rmsprop_step", "sigmoid32", "tanh32", "tanh_"]
