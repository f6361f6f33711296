"""Decision latency at batch 1: what an allocator pays per request to ask a policy for an action.

For each agent (built by the harness from its config, as ``train.py`` builds it, on one env of the allocation
family) the script times ``agent.act(obs, state, info, deterministic=True)`` on one observation at a time (eager,
what ``load_agent(...).agent`` runs) and, for the learnt agents, a TorchScript export of the same decision
(``torch.jit.trace`` of the agent's ``acting_step()``, the module the ONNX export holds too, frozen and optimised
for inference, run under ``torch.inference_mode``, Dreamer's Gumbel noise drawn per call). It reports the median
and the 99th percentile over ``--calls`` calls after a warm-up, in microseconds, and checks that the export takes
the eager agent's actions on every observation it was timed on (the Dreamer export draws its own latent noise, so
its actions are compared only for the MLP and GRU agents). With ``onnxruntime`` installed (the ``export`` extra)
it also times the ONNX export of ``dreamalloc.experiment.onnx_export`` (what ``scripts/export_policy.py --onnx``
writes) through ``OnnxPolicy.predict`` on one thread, numpy in and out, Dreamer's Gumbel noise drawn per call;
that export is checked against the torch module before it is timed, and its actions against eager's here too
(MLP and GRU agents).

    python scripts/bench_latency.py                      # heuristic, dqn, ppo, rl2_ppo, dreamer_1m, dreamer (12M),
                                                         # dreamer_rl2 (the small meta preset, latent-only actor:
                                                         # ac_gru=0), dreamer_rl2_gru (with its GRU actor-critic,
                                                         # ac_gru=64, the preset's default since 2026-12-07)
    python scripts/bench_latency.py --agents dqn,ppo --calls 5000
    python scripts/bench_latency.py --export DIR         # also writes DIR/AGENT.torchscript.pt and DIR/AGENT.onnx
    python scripts/bench_latency.py --fresh-process      # each agent timed in a new Python process

Untrained weights: latency depends on the network's shape, not on its values. The observations are those of a
real env stepped with the eager agent's own actions (episodes reset as they end). One torch thread unless
``--threads`` says otherwise. The last lines are ``latency_us_median_p99: AGENT eager M P [export M P] [onnx M P]``
per agent, then ``weights_floor_mb_us: AGENT MB US`` for each ONNX export: the megabytes of weight matrices one
decision reads and the median time one thread takes to stream them alone (each matrix times a vector, numpy),
a floor under any float32 decision of that network on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hydra import compose, initialize_config_dir  # noqa: E402

from dreamalloc.agents.dreamer.rssm import gumbel_like  # noqa: E402
from dreamalloc.experiment.cli import register_configs  # noqa: E402,F401  (registers the schemas)
from dreamalloc.experiment.config import make_core  # noqa: E402
from dreamalloc.experiment.training import build_agent  # noqa: E402

try:
    import onnxruntime  # noqa: E402,F401

    from dreamalloc.experiment.onnx_export import OnnxPolicy, onnx_model  # noqa: E402
except ImportError:  # the export extra is not installed: no ONNX column
    OnnxPolicy = onnx_model = None

ROOT = Path(__file__).resolve().parents[1]
ENV = ["env=alloc64"]
CASES = {
    "heuristic": ENV + ["agent=heuristic", "agent.rule=best"],
    "dqn": ENV + ["agent=dqn"],
    "ppo": ENV + ["agent=ppo"],
    "rl2_ppo": ENV + ["agent=rl2_ppo", "env.meta_obs=true", "env.trial_episodes=3"],
    "dreamer_1m": ENV + ["agent=dreamer_1m"],
    "dreamer": ENV + ["agent=dreamer"],  # the 12M preset, the default
    "dreamer_rl2": ENV + ["agent=dreamer_rl2", "env.meta_obs=true", "env.trial_episodes=3",
                          "agent.ac_gru=0"],  # the meta preset with a latent-only actor
    "dreamer_rl2_gru": ENV + ["agent=dreamer_rl2", "env.meta_obs=true", "env.trial_episodes=3",
                              "agent.ac_gru=64"],  # + the GRU actor-critic (the preset since 2026-12-07)
}


def build(name: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=CASES[name] + ["device=cpu", "env.num_envs=1"])
    core = make_core(cfg.env, cfg.suite.train, 1, torch.device("cpu"))
    return build_agent(cfg, core, torch.device("cpu")), core, cfg


def percentiles(ns: list[int]) -> tuple[float, float]:
    a = np.asarray(ns, dtype=np.float64) / 1e3
    return float(np.median(a)), float(np.percentile(a, 99))


def time_eager(agent, core, calls: int, warmup: int) -> tuple[list[int], list]:
    """Per-call nanoseconds of ``agent.act`` at batch 1, and the (obs, info, state, action) of each timed call."""
    obs, info = core.reset(seed=0)
    state = agent.initial_state(1)
    times, seen = [], []
    for i in range(warmup + calls):
        t0 = time.perf_counter_ns()
        with torch.no_grad():
            action, nstate = agent.act(obs, state, info, deterministic=True)
        t1 = time.perf_counter_ns()
        if i >= warmup:
            times.append(t1 - t0)
            seen.append((obs, info, state, action))
        obs, _, _, _, info = core.step(action)
        state = nstate
    return times, seen


def export(name: str, agent):
    """A traced TorchScript module of the agent's acting step (``agent.acting_step()``, what the ONNX export holds
    too), frozen (weights folded in as constants) and passed through ``torch.jit.optimize_for_inference``; None for
    the heuristic (nothing to export)."""
    if name == "heuristic":
        return None
    step = agent.acting_step(False)
    with torch.inference_mode():
        mod = torch.jit.trace(step.module.eval(), tuple(step.inputs.values()), check_trace=False)
    return torch.jit.optimize_for_inference(torch.jit.freeze(mod.eval()))


def _step_inputs(name: str, agent, state, info) -> dict:
    """The acting step's state inputs and trial-start flag for one eager call, by input name (obs and Dreamer's
    Gumbel noise apart)."""
    start = info["trial_start"].reshape(1)
    if name == "rl2_ppo":
        return {"h": torch.zeros(1, agent.cfg.rnn_hidden) if state is None else state, "start": start}
    if name.startswith("dreamer"):
        s = agent.initial_state(1) if state is None else state
        out = {"deter": s["deter"], "stoch": s["stoch"], "prev_action": s["action"], "start": s["first"] | start}
        return out | ({"ac_h": s["ac_h"]} if "ac_h" in s else {})
    return {}


def time_export(name: str, agent, mod, seen: list, warmup: int) -> tuple[list[int], int]:
    """Per-call nanoseconds of the export on the eager run's inputs (Dreamer's Gumbel noise drawn in the timed
    call), and how many actions differ from eager's."""
    times, differ = [], 0
    order = list(agent.acting_step(False).inputs)
    shape = (1, agent.wm.rssm.stoch, agent.wm.rssm.classes) if "noise" in order else None
    with torch.inference_mode():
        for i, (obs, info, state, action) in enumerate(seen[:warmup] + seen):
            feeds = {"obs": obs, **_step_inputs(name, agent, state, info)}
            t0 = time.perf_counter_ns()
            if shape is not None:
                feeds["noise"] = gumbel_like(torch.empty(shape))
            a = mod(*(feeds[k] for k in order))[0]
            t1 = time.perf_counter_ns()
            if i >= warmup:
                times.append(t1 - t0)
                differ += int(not torch.equal(a, action))
    return times, differ


def time_onnx(name: str, agent, policy, seen: list, warmup: int) -> tuple[list[int], int]:
    """Per-call nanoseconds of ``OnnxPolicy.predict`` on the eager run's inputs (its recurrent state converted
    to numpy beforehand), and how many actions differ from eager's (not compared where the export draws Dreamer's
    latent: ``greedy_latent: sample``)."""
    times, differ = [], 0
    compare = "noise" not in policy.input_names
    for i, (obs, info, state, action) in enumerate(seen[:warmup] + seen):
        x = obs[0].numpy()
        feeds = {k: v.numpy() for k, v in _step_inputs(name, agent, state, info).items()}
        start = bool(feeds.pop("start", info["trial_start"].numpy())[0])
        t0 = time.perf_counter_ns()
        a, _ = policy.predict(x, feeds or None, start)
        t1 = time.perf_counter_ns()
        if i >= warmup:
            times.append(t1 - t0)
            differ += int(compare and not np.array_equal(a, action[0].numpy()))
    return times, differ


def weights_floor(data: bytes, calls: int, warmup: int) -> tuple[float, float]:
    """The weights an exported decision reads, and the time one thread takes just to stream them: every weight
    matrix of the ONNX model (its initializers of two or more dimensions), each multiplied by a vector, in one call
    after another (numpy's BLAS, float32). Returns (megabytes, median microseconds): a floor for any fp32 decision
    of that model at batch 1 on this machine (the model also has the nonlinearities, normalisations and the
    latent's argmax between those products)."""
    import onnx
    from onnx import numpy_helper

    mats = []
    for init in onnx.load_from_string(data).graph.initializer:
        w = numpy_helper.to_array(init)
        if w.ndim >= 2 and w.dtype == np.float32:
            w = np.ascontiguousarray(w.reshape(-1, w.shape[-1]))
            mats.append((w, np.ones(w.shape[-1], np.float32)))
    times = []
    for i in range(warmup + calls):
        t0 = time.perf_counter_ns()
        for w, x in mats:
            w @ x
        if i >= warmup:
            times.append(time.perf_counter_ns() - t0)
    return sum(w.nbytes for w, _ in mats) / 1e6, percentiles(times)[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    p.add_argument("--calls", type=int, default=2000, help="timed calls per agent (default 2000)")
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--export", default=None, metavar="DIR", help="write each TorchScript export to DIR")
    p.add_argument("--fresh-process", action="store_true",
                   help="time each agent in a new Python process (as an allocator would embed one policy)")
    p.add_argument("--row-json", action="store_true", help=argparse.SUPPRESS)  # --fresh-process's child
    args = p.parse_args(argv)
    names = [n.strip() for n in args.agents.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown or not names:
        p.error(f"unknown agent(s) {unknown}; choose among {', '.join(CASES)}")
    if args.calls < 10:
        p.error("--calls must be >= 10 (a 99th percentile needs calls)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"python {platform.python_version()}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"cpu cores {os.cpu_count()}; load average at start "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"batch 1, {args.calls} timed calls after {args.warmup} warm-up calls, deterministic actions, untrained "
          "weights; env=alloc64 (rl2_ppo: with the RL^2 inputs, trials of 3)")
    rows = []
    for name in names:
        if args.fresh_process:  # this agent alone in a new interpreter; its row comes back as one JSON line
            cmd = [sys.executable, os.path.abspath(__file__), "--agents", name, "--calls", str(args.calls), "--warmup",
                   str(args.warmup), "--threads", str(args.threads), "--row-json"]
            if args.export:
                cmd += ["--export", args.export]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()
            print("\n".join(x for x in out if x.startswith(f"  {name}:")), flush=True)
            rows.append(tuple(json.loads(next(x for x in out if x.startswith("ROW "))[4:])))
            continue
        agent, core, cfg = build(name)
        n_params = sum(m.numel() for mod in agent.policy_modules().values() for m in mod.parameters())
        times, seen = time_eager(agent, core, args.calls, args.warmup)
        em, ep = percentiles(times)
        mod = export(name, agent)
        xm = xp = None
        differ = None
        if mod is not None:
            xt, differ = time_export(name, agent, mod, seen, min(args.warmup, len(seen)))
            xm, xp = percentiles(xt)
            if args.export:
                Path(args.export).mkdir(parents=True, exist_ok=True)
                mod.save(str(Path(args.export) / f"{name}.torchscript.pt"))
        om = op = floor = None
        if mod is not None and OnnxPolicy is not None:
            data = onnx_model(agent, make_core(cfg.env, cfg.suite.train, 1, torch.device("cpu")))
            policy = OnnxPolicy(data, threads=args.threads)
            ot, odiffer = time_onnx(name, agent, policy, seen, min(args.warmup, len(seen)))
            odiffer = odiffer if "noise" not in policy.input_names else None  # a drawn latent: not comparable
            om, op = percentiles(ot)
            if args.export:
                (Path(args.export) / f"{name}.onnx").write_bytes(data)
            floor = weights_floor(data, args.calls, min(args.warmup, args.calls))
        rows.append((name, n_params, em, ep, xm, xp, om, op, floor))
        if args.row_json:
            print("ROW " + json.dumps(rows[-1]))
        print(f"  {name}: {n_params:,} policy parameters; eager median {em:.1f} us, p99 {ep:.1f} us"
              + ("" if xm is None else f"; TorchScript median {xm:.1f} us, p99 {xp:.1f} us, actions differing "
                 f"from eager: {differ}/{args.calls}")
              + ("" if om is None else f"; ONNX Runtime median {om:.1f} us, p99 {op:.1f} us"
                 + (f", actions differing from eager: {odiffer}/{args.calls}" if odiffer is not None else ""))
              + ("" if floor is None else f"; its {floor[0]:.2f} MB of weight matrices streamed alone: median "
                 f"{floor[1]:.1f} us"),
              flush=True)
    print(f"load average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    print("| agent | policy parameters | eager median us | eager p99 us | TorchScript median us | TorchScript p99 us "
          "| ONNX Runtime median us | ONNX Runtime p99 us |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, n, em, ep, xm, xp, om, op, _ in rows:
        x = ("-", "-") if xm is None else (f"{xm:.1f}", f"{xp:.1f}")
        o = ("-", "-") if om is None else (f"{om:.1f}", f"{op:.1f}")
        print(f"| {name} | {n:,} | {em:.1f} | {ep:.1f} | {x[0]} | {x[1]} | {o[0]} | {o[1]} |")
    print()
    for name, _, em, ep, xm, xp, om, op, _ in rows:
        print(f"latency_us_median_p99: {name} eager {em:.1f} {ep:.1f}"
              + ("" if xm is None else f" export {xm:.1f} {xp:.1f}")
              + ("" if om is None else f" onnx {om:.1f} {op:.1f}"))
    for name, *_, floor in rows:  # the distance to the limit: the weights alone, streamed once per decision
        if floor is not None:
            print(f"weights_floor_mb_us: {name} {floor[0]:.2f} {floor[1]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
