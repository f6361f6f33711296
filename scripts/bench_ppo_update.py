"""One PPO minibatch step three ways: torch eager, ``torch.compile``, and the compiled CPU kernel the agent takes by
default (``agent.fast``: nn/fastmlp.py, ``_ac_grad`` in agents/onpolicy.py).

The step is the one ``PPOAgent._learn`` takes per minibatch (the agent's own ``ActorCritic``, ``policy_terms``
and ``ppo_loss``, backward, gradient clipping, fused Adam) on the benchmark's shapes: ``--batch`` rows of the
257-wide observation of a 256-cell heap, two [64, 64] tanh MLPs, 3 actions. It prints the time of the first call
(the compile), the median per step after a warm-up, ``compiled_speedup_vs_eager`` and ``kernel_speedup_vs_eager``.

    python scripts/bench_ppo_update.py [--batch 256] [--steps 300] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dreamalloc.agents.onpolicy import ActorCritic, _ac_grad, policy_terms  # noqa: E402
from dreamalloc.agents.ppo import ppo_loss  # noqa: E402
from dreamalloc.nn.fastmlp import FlatMLPs  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--obs", type=int, default=257)
    p.add_argument("--steps", type=int, default=300, help="timed steps per variant")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    B = a.batch
    data = (torch.randn(B, a.obs, generator=g), torch.randint(0, 3, (B,), generator=g),
            torch.randn(B, generator=g) * 0.1 - 1.1, torch.randn(B, generator=g), torch.randn(B, generator=g),
            torch.randn(B, generator=g))
    out = {}
    for name in ("eager", "compiled", "kernel"):
        torch.manual_seed(0)
        net = ActorCritic(a.obs, 3, [64, 64], "tanh", False)
        opt = torch.optim.Adam(net.parameters(), lr=3e-4, eps=1e-5, fused=True)
        if name == "kernel":
            flat = FlatMLPs([net.pi, net.v])
            flat.bind(opt)
            obs, act, old_logp, adv, old_values, ret = (np.ascontiguousarray(x.numpy()) for x in data)
            # _ac_grad's arguments after the nets: the minibatch (all rows, in order), no mask, PPO's loss with
            # clip 0.2, no value clipping, ent_coef 0.01, vf_coef 0.5, normalised advantages (as loss_of below)
            args = (obs, act, old_logp, old_values, adv, ret, np.ones((1, 1), dtype=np.bool_), False, np.arange(B),
                    True, 0.2, -1.0, 0.01, 0.5, True)

            def step(flat=flat, args=args):
                _ac_grad(flat.p, flat.g, flat.specs[0], flat.specs[1], flat.act, *args)
                flat.step(0.5)

            out[name] = _time(name, step, a.steps)
            continue

        def loss_of(obs, act, old_logp, adv, old_values, ret, net=net):
            logits, values = net(obs)
            logp, ent = policy_terms(logits, act)
            return ppo_loss(logp, old_logp, adv, values, old_values, ret, ent, 0.2, None, 0.01, 0.5, True)[0]

        fn = torch.compile(loss_of) if name == "compiled" else loss_of

        def step(fn=fn, net=net, opt=opt):
            loss = fn(*data)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 0.5, foreach=True)
            opt.step()

        out[name] = _time(name, step, a.steps)
    out["speedup"] = out["eager"] / out["compiled"]
    out["kernel_speedup"] = out["eager"] / out["kernel"]
    print(f"compiled_speedup_vs_eager: {out['speedup']:.2f}")
    print(f"kernel_speedup_vs_eager: {out['kernel_speedup']:.2f}")
    return out


def _time(name: str, step, steps: int) -> float:
    """Median milliseconds of ``step`` after the first call (printed: a compile) and 20 warm-up calls."""
    t = time.perf_counter()
    step()
    first = time.perf_counter() - t
    for _ in range(20):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    ms = statistics.median(times) * 1e3
    print(f"{name:9s} first call {first:7.2f} s, median step {ms:.3f} ms", flush=True)
    return ms


if __name__ == "__main__":
    main()
