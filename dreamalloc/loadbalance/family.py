"""The load-balancing family's registration (``env.kind: load_balance``): its config schema, how its core is built
from an env node and a task list (the job laws), its fixed policies (the dispatch rules) and references (every
rule and the no-wait bound on the same streams), and the metric its tables report (mean job time)."""

from __future__ import annotations

from dreamalloc.core.checks import COUNT, POSITIVE, Range
from dreamalloc.core.family import EnvFamily, References, core_builder, env_schema, register_family
from dreamalloc.loadbalance.config import LoadBalanceConfig
from dreamalloc.loadbalance.env import LoadBalanceCore
from dreamalloc.loadbalance.references import dispatch_returns, no_wait_bound
from dreamalloc.loadbalance.rules import DISPATCH_RULES, DispatchRule

LoadBalanceEnvConf = env_schema(  # conf/env/load_balance.yaml: LoadBalanceConfig's options but the job laws
    "LoadBalanceEnvConf", LoadBalanceConfig, kind="load_balance", exclude=("tasks",),
    types={"service_rates": list[float] | None},
    ranges={"num_envs": COUNT, "num_servers": COUNT, "num_jobs": COUNT,
            "service_rates": Range(0, lo_open=True, each=True), "obs_high": POSITIVE, "obs_scale": POSITIVE,
            "reward_scale": POSITIVE, "trial_episodes": COUNT})


def lb_config(env: dict, tasks: list[dict]) -> LoadBalanceConfig:
    e = {k: v for k, v in env.items() if k not in ("num_envs", "kind")}
    if e.get("service_rates") is not None:
        e["service_rates"] = tuple(e["service_rates"])
    return LoadBalanceConfig(tasks=list(tasks), **e).validate()


make_core = core_builder(lb_config, LoadBalanceCore)


def references(core: LoadBalanceCore, trials: int, seed: int, k: int, device) -> References:
    """Every dispatch rule and the no-wait bound (every job served at once by the fastest server)."""
    per_rule = {r: dispatch_returns(r, core.cfg, trials, seed, k, device) for r in DISPATCH_RULES}
    return References(rules={r: v["return"] for r, v in per_rule.items()},
                      bound=no_wait_bound(core.cfg, trials, seed, k, device).numpy(),
                      extra={"heuristic_job_time": {r: float(v["mean_job_time"].mean()) for r, v in per_rule.items()}})


def fixed_policy(rule: str, cfg: LoadBalanceConfig, seed: int = 0, device="cpu") -> DispatchRule:
    return DispatchRule(rule, cfg.service_rates, seed, device)


def info_from_obs(obs, info: dict, cfg: LoadBalanceConfig) -> dict:
    """What the dispatch rules read, filled in from an observation where the caller's info lacks it (inference
    outside an env): the observed loads stand in for the true work, the last value is the incoming job's size."""
    S = cfg.num_servers
    scale = float(cfg.obs_scale)
    info.setdefault("work", obs[:, :S].double() / scale)
    info.setdefault("job_size", obs[:, S].double() / scale)
    return info


def footprint(env: dict, tasks: list[dict], units: int) -> tuple[int, str]:
    S, J = int(env["num_servers"]), int(env["num_jobs"])
    per = 5 * 8 * J + 2 * 8 * S + 4 * (S + 1)  # arrival, size, server, start, finish per job; busy; obs
    return units * per, f"({J:,} jobs x 40 B + {S} servers x 20 B)"


FAMILY = register_family(EnvFamily(
    kind="load_balance", schema=LoadBalanceEnvConf, make_core=make_core, env_config=lb_config,
    references=references, fixed_policy=fixed_policy, rules=DISPATCH_RULES, metrics=("mean_job_time",),
    agent_names=("dispatch",), info_from_obs=info_from_obs, streams=lambda stream: stream == "jobs",
    env_choices=("load_balance",), report_columns=("mean_job_time",), footprint=footprint))

__all__ = ["FAMILY", "LoadBalanceEnvConf", "info_from_obs", "lb_config", "make_core"]
