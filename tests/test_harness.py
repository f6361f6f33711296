"""The experiment harness as a user meets it: configs, train.py, resume, evaluate.py, sweeps."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dreamalloc.alloc.heap import RULES
from dreamalloc.alloc.references import capacity_bound, heuristic_returns
from dreamalloc.experiment.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from dreamalloc.experiment.cli import register_configs  # noqa: F401  (registers the schemas)
from dreamalloc.experiment.config import validate
from dreamalloc.experiment.training import train

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")
PY = sys.executable
QUICK = ["env=alloc64", "env.num_envs=8", "eval.trials=3", "eval.episodes_per_trial=2", "logger=disabled",
         "progress=off"]


def cfg_of(overrides, tmp_path=None):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    if tmp_path is not None:
        cfg.run_dir = str(tmp_path / "run")
        cfg.checkpoint_dir = str(tmp_path / "ckpt")
    return cfg


def run_cli(script, args, cwd, timeout=240, **kw):
    env = {**os.environ, "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([PY, str(ROOT / script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)


# --- configuration ---------------------------------------------------------------------------------
def test_misspelt_key_fails_naming_the_key():
    with pytest.raises(Exception, match="num_envz"):
        cfg_of(["env.num_envz=3"])
    with pytest.raises(Exception, match="rulez"):
        cfg_of(["agent.rulez=best"])


def test_wrong_type_fails_naming_the_key():
    with pytest.raises(Exception, match="cells"):
        cfg_of(["env.cells=many"])


@pytest.mark.parametrize("override,match", [
    ("logger.mode=sometimes", "logger.mode"), ("progress=maybe", "progress"), ("steps=0", "steps"),
    ("env.action=teleport", "action space"), ("env.heuristics=[best,luckiest]", "luckiest"),
    ("agent.rule=luckiest", None), ("eval.trials=0", "eval.trials")])
def test_bad_values_fail_with_the_choices(override, match, tmp_path):
    cfg = cfg_of(QUICK + [override], tmp_path)
    with pytest.raises(ValueError, match=match or "luckiest"):
        validate(cfg)
        train(cfg)


def test_unknown_group_option_lists_choices(tmp_path):
    r = run_cli("train.py", ["agent=telepathy"], tmp_path, timeout=60)
    assert r.returncode != 0 and "telepathy" in r.stderr and "heuristic" in r.stderr


def test_cli_user_error_is_one_line(tmp_path):
    r = run_cli("train.py", QUICK + ["env.action=teleport", f"hydra.run.dir={tmp_path}/r"], tmp_path, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("dreamalloc: error:") and "Traceback" not in r.stderr


# --- determinism, evaluation protocol ---------------------------------------------------------------
def test_same_seed_same_metric_files(tmp_path):
    files = []
    for name in ("a", "b"):
        cfg = cfg_of(QUICK + ["steps=1024", "logger.every=64", "seed=3"], tmp_path / name)
        out = train(cfg)
        files.append((Path(out["run_dir"]) / "metrics.jsonl").read_text())
        res = json.loads((Path(out["run_dir"]) / "eval" / "step_000000001024" / "results.json").read_text())
        files.append(json.dumps(res["sets"], sort_keys=True))
    assert files[0] == files[2] and files[1] == files[3]
    assert len(files[0].splitlines()) >= 16


def test_evaluation_equals_direct_computation(tmp_path):
    """The protocol on a heuristic agent reproduces a direct batched rollout of the same streams."""
    cfg = cfg_of(QUICK + ["agent.rule=worst", "steps=8", "eval.trials=5", "eval.episodes_per_trial=3",
                          "eval.seed=77"], tmp_path)
    res = train(cfg)["results"]
    for task in ("mixed", "wf-good", "bf-good", "random"):
        t = res["sets"]["lim2024"]["tasks"][task]
        direct = heuristic_returns("worst", 5, 77, k=3, cells=64, stream=task)["return"]
        np.testing.assert_allclose(np.asarray(t["returns"]), direct)
        per_rule = {r: heuristic_returns(r, 5, 77, k=3, cells=64, stream=task)["return"].mean() for r in RULES}
        assert t["hindsight_best"]["rule"] == max(RULES, key=lambda r: per_rule[r])
        np.testing.assert_allclose(np.asarray(t["capacity_bound"]),
                                   capacity_bound(5, 77, k=3, cells=64, stream=task)["return"])
    run = Path(res and cfg.run_dir)
    out = run / "eval" / "step_000000000008"
    for f in ("results.json", "results.md", "results.csv", "adaptation_lim2024_mixed.png"):
        assert (out / f).stat().st_size > 0, f
    assert list(out.glob("timeline_*.png"))


# --- checkpoints and resume ---------------------------------------------------------------------------
def test_checkpoint_incompatibility_is_a_clear_error(tmp_path):
    cfg = cfg_of(QUICK + ["steps=64"], tmp_path)
    train(cfg)
    ckpt = latest_checkpoint(tmp_path / "ckpt" / "heuristic_lim2024_s0")
    with pytest.raises(CheckpointError, match="agent.*'dqn'"):
        load_checkpoint(ckpt, expected={"agent": "dqn"})
    with pytest.raises(CheckpointError, match="obs_dim"):
        load_checkpoint(ckpt, expected={"obs_dim": 999})
    # evaluate.py on an env the agent was not trained for: one clear line
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a checkpoint")
    r = run_cli("evaluate.py", QUICK + [f"checkpoint={bad}", f"hydra.run.dir={tmp_path}/ev"], tmp_path, timeout=60)
    assert r.returncode == 2 and "garbage.pt" in r.stderr and "Traceback" not in r.stderr


def test_sigkill_then_resume(tmp_path):
    args = QUICK + ["steps=6000", "checkpoint_every=512", "logger.every=128", "env.num_envs=16",
                    f"checkpoint_dir={tmp_path}/ckpt", f"hydra.run.dir={tmp_path}/run", "run_name=killme"]
    env = {**os.environ, "WANDB_SILENT": "true"}
    proc = subprocess.Popen([PY, str(ROOT / "train.py"), *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckdir = tmp_path / "ckpt" / "killme"
    deadline = time.time() + 120
    while time.time() < deadline and (latest_checkpoint(ckdir) is None if ckdir.exists() else True):
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(latest_checkpoint(ckdir))["step"]
    assert 0 < killed_at < 6000
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    r = run_cli("train.py", [f"resume={tmp_path}/run", "progress=off"], tmp_path)
    assert r.returncode == 0, r.stderr
    final = load_checkpoint(latest_checkpoint(ckdir))
    assert final["step"] == 6000 and final["config"]["steps"] == 6000  # the original config
    after = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    resumed = after[len(lines):]
    assert resumed and resumed[0]["step"] > killed_at and resumed[-1]["step"] >= 6000
    assert all(not any(isinstance(v, float) and np.isnan(v) for v in line.values()) for line in resumed)


def test_resume_continues_like_an_uninterrupted_run(tmp_path):
    """Stop at a checkpoint, resume: the env stream and counters pick up exactly where they were."""
    full = train(cfg_of(QUICK + ["steps=2048", "logger.every=256"], tmp_path / "full"))
    part = cfg_of(QUICK + ["steps=1024", "logger.every=256"], tmp_path / "part")
    train(part)
    more = [f"resume={tmp_path / 'part' / 'ckpt' / 'heuristic_lim2024_s0'}", "steps=2048", "logger.every=256"]
    out = train(cfg_of(QUICK + more, tmp_path / "part"), overrides=QUICK + more)
    assert out["step"] == full["step"] == 2048 and out["episodes"] == full["episodes"]
    same = (tmp_path / "full" / "run" / "metrics.jsonl").read_bytes()
    assert (tmp_path / "part" / "run" / "metrics.jsonl").read_bytes() == same  # one run, as if never stopped


# --- model selection ------------------------------------------------------------------------------------
# PPO seed 1 on this budget scores best early (validation 4.27 at 512 steps, 3.69 at the end): best != last
SELECT = QUICK + ["agent=ppo", "seed=1", "steps=4096", "logger.every=512", "eval.select_trials=4"]


def _training_lines(run_dir: Path) -> list[dict]:
    """The training lines of metrics.jsonl (not those of model selection or of the evaluation)."""
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [x for x in lines if any(k.startswith("train/") for k in x)]


def test_model_selection_keeps_the_best_weights_and_leaves_training_alone(tmp_path):
    import torch

    from dreamalloc.experiment.checkpoint import flatten
    from dreamalloc.experiment.config import make_core
    from dreamalloc.experiment.evaluation import evaluate_suite, validation_return
    from dreamalloc.experiment.training import build_agent, protocol_phases

    plain = train(cfg_of(SELECT, tmp_path / "plain"))
    cfg = cfg_of(SELECT + ["eval.select_every=512"], tmp_path / "sel")
    out = train(cfg)
    sel = json.loads((tmp_path / "sel" / "run" / "selection.json").read_text())
    steps = [s for s, _ in sel["history"]]
    scores = [r for _, r in sel["history"]]
    assert steps == list(range(512, 4097, 512)) and len(set(scores)) > 1
    assert sel["best_return"] == max(scores)
    assert sel["best_step"] == max(s for s, r in sel["history"] if r == max(scores))  # a tie: the later weights
    # scoring does not move training: the same env stream, metrics and final weights as the run without it
    assert _training_lines(tmp_path / "sel" / "run") == _training_lines(tmp_path / "plain" / "run")
    ckdir = Path(out["checkpoint"]).parent
    a, b = flatten(load_checkpoint(out["checkpoint"])["agent"]), flatten(load_checkpoint(plain["checkpoint"])["agent"])
    assert a.keys() == b.keys() and any(isinstance(v, torch.Tensor) for v in a.values())
    for k, v in a.items():
        assert torch.equal(v, b[k]) if isinstance(v, torch.Tensor) else v == b[k], k
    # exactly one best file, of the recorded step, and its weights score what selection recorded
    best = sorted(p.name for p in ckdir.glob("best_*"))
    assert best == [f"best_{sel['best_step']:012d}.safetensors"] and Path(sel["best_file"]).name == best[0]
    payload = load_checkpoint(ckdir / best[0])
    assert payload["step"] == sel["best_step"]
    # the final weights are evaluated as without selection; the kept weights beside them, "(selected)"
    res = json.loads((Path(out["run_dir"]) / "eval" / "step_000000004096_selected" / "results.json").read_text())
    last = json.loads((Path(out["run_dir"]) / "eval" / "step_000000004096" / "results.json").read_text())
    assert res["selected"]["step"] == sel["best_step"] and res["selected"]["validation_return"] == sel["best_return"]
    assert res["label"] == last["label"] + " (selected)" and "selected" not in last
    assert sel["best_step"] < 4096 and res["sets"] != last["sets"] and out["results"]["sets"] == res["sets"]
    plain_res = json.loads((Path(plain["run_dir"]) / "eval" / "step_000000004096" / "results.json").read_text())
    assert last["sets"] == plain_res["sets"] and last["label"] == plain_res["label"]  # the plain run's weights
    core = make_core(cfg.env, protocol_phases(cfg)[0].tasks, int(cfg.env.num_envs), torch.device("cpu"))
    agent = build_agent(cfg, core, torch.device("cpu"))
    agent.load_state_dict(payload["agent"])
    assert validation_return(agent, cfg.env, cfg.suite, cfg.eval, torch.device("cpu")) == sel["best_return"]
    again = evaluate_suite(agent, cfg.env, cfg.suite, cfg.eval, torch.device("cpu"), "ppo", 1, 4096)
    assert {n: {t: v["returns"] for t, v in s["tasks"].items()} for n, s in again["sets"].items()} == \
        {n: {t: v["returns"] for t, v in s["tasks"].items()} for n, s in res["sets"].items()}


def test_model_selection_survives_a_kill_between_checkpoints(tmp_path, monkeypatch):
    """Killed after a new best was kept but before a checkpoint recorded it: the resumed run still has the best
    its checkpoint records, drops the newer one, and ends exactly as an uninterrupted run."""
    from dreamalloc.experiment.training import Run

    # PPO seed 0 scores 3.43, 4.44, 4.44, 4.48, 4.48, 4.76, ... at every 512 steps: a new best (ties go later)
    args = QUICK + ["agent=ppo", "seed=0", "steps=4096", "logger.every=512", "eval.select_trials=4",
                    "eval.select_every=512", "checkpoint_every=1024", "keep_checkpoints=0"]
    full = train(cfg_of(args, tmp_path / "full"))
    step = Run.train_step

    def killed(self):
        if self.step >= 2816:
            raise SystemExit("killed")  # nothing saves: as SIGKILL
        return step(self)

    monkeypatch.setattr(Run, "train_step", killed)
    with pytest.raises(SystemExit):
        train(cfg_of(args, tmp_path / "part"), overrides=args)
    monkeypatch.setattr(Run, "train_step", step)
    ckdir = next((tmp_path / "part" / "ckpt").iterdir())
    assert sorted(p.name for p in ckdir.glob("best_*")) == ["best_000000002048.safetensors",
                                                            "best_000000002560.safetensors"]
    out = train(cfg_of(args + [f"resume={ckdir}"], tmp_path / "part"), overrides=args + [f"resume={ckdir}"])
    a = json.loads((tmp_path / "part" / "run" / "selection.json").read_text())
    b = json.loads((tmp_path / "full" / "run" / "selection.json").read_text())
    assert {k: v for k, v in a.items() if k != "best_file"} == {k: v for k, v in b.items() if k != "best_file"}
    assert [p.name for p in ckdir.glob("best_*")] == [Path(b["best_file"]).name]
    assert (tmp_path / "part" / "run" / "metrics.jsonl").read_bytes() == \
        (tmp_path / "full" / "run" / "metrics.jsonl").read_bytes()
    ra = json.loads((Path(out["run_dir"]) / "eval" / "step_000000004096_selected" / "results.json").read_text())
    rb = json.loads((Path(full["run_dir"]) / "eval" / "step_000000004096_selected" / "results.json").read_text())
    assert ra["sets"] == rb["sets"] and ra["selected"] == rb["selected"]


@pytest.mark.parametrize("override,match", [
    (QUICK + ["eval.select_trials=0"], "eval.select_trials"), (QUICK + ["eval.select_every=-5"], "eval.select_every"),
    (["experiment=redovian2025_forgetting", "eval.select_every=100"], "protocol=forgetting")])
def test_model_selection_bad_config(override, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        validate(cfg_of(override, tmp_path))


# --- sweeps --------------------------------------------------------------------------------------------
def test_two_job_multirun(tmp_path):
    r = run_cli("train.py", ["-m", "seed=0,1", *QUICK, "steps=128", f"checkpoint_dir={tmp_path}/ckpt",
                             f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path)
    assert r.returncode == 0, r.stderr
    results = sorted((tmp_path / "sweep").glob("*/eval/*/results.json"))
    assert len(results) == 2
    seeds = sorted(json.loads(p.read_text())["seed"] for p in results)
    assert seeds == [0, 1]
    cmp = subprocess.run([PY, str(ROOT / "scripts" / "compare.py"), str(tmp_path / "sweep"), "--out",
                          str(tmp_path / "cmp")], capture_output=True, text=True, timeout=120)
    assert cmp.returncode == 0, cmp.stderr
    assert "heuristic:best" in cmp.stdout and (tmp_path / "cmp" / "compare.md").exists()


@pytest.mark.parametrize("launcher", ["joblib", "local_submitit"])
def test_sweep_launchers(launcher, tmp_path):
    """The joblib launcher, and the SLURM launcher's code path through submitit's local executor."""
    extra = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else []
    r = run_cli("train.py", ["-m", f"hydra/launcher={launcher}", *extra, "seed=0,1", *QUICK, "steps=64",
                             f"checkpoint_dir={tmp_path}/ckpt", f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    results = sorted((tmp_path / "sweep").glob("*/eval/*/results.json"))
    assert sorted(json.loads(p.read_text())["seed"] for p in results) == [0, 1]


def test_evaluate_cli_on_checkpoint_and_heuristic(tmp_path):
    train(cfg_of(QUICK + ["steps=64", "agent.rule=worst"], tmp_path))
    ck = tmp_path / "ckpt" / "heuristic_lim2024_s0"
    r = run_cli("evaluate.py", QUICK + [f"checkpoint={ck}", "suite=lim2024_mixed", "eval.trials=2",
                                        f"hydra.run.dir={tmp_path}/ev"], tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "ev" / "eval" / "results.json").read_text())
    assert res["method"] == "heuristic:worst" and res["suite"] == "lim2024_mixed" and res["step"] == 64
    assert "| mixed" in r.stdout
    r = run_cli("evaluate.py", QUICK + ["agent.rule=second", "env.heuristics=[best,worst,first,next,second]",
                                        "eval.trials=2", f"hydra.run.dir={tmp_path}/h"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "h" / "eval" / "results.json").read_text())["method"] == "heuristic:second"


def test_evaluate_cli_keeps_the_runs_evaluation_protocol(tmp_path):
    """A checkpoint is evaluated with the eval settings it was trained with (here 1 episode per trial, not the
    default 3), and an eval.* override on the command line still wins."""
    quick = [o for o in QUICK if not o.startswith("eval.")]
    train(cfg_of(quick + ["steps=64", "eval.episodes_per_trial=1", "eval.trials=2"], tmp_path))
    ck = tmp_path / "ckpt" / "heuristic_lim2024_s0"
    r = run_cli("evaluate.py", quick + [f"checkpoint={ck}", f"hydra.run.dir={tmp_path}/ev"], tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "ev" / "eval" / "results.json").read_text())
    assert res["episodes_per_trial"] == 1
    assert all(len(t["returns"]) == 2 for s in res["sets"].values() for t in s["tasks"].values())
    r = run_cli("evaluate.py", quick + [f"checkpoint={ck}", "eval.trials=3", f"hydra.run.dir={tmp_path}/ev3"],
                tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "ev3" / "eval" / "results.json").read_text())
    assert res["episodes_per_trial"] == 1
    assert all(len(t["returns"]) == 3 for s in res["sets"].values() for t in s["tasks"].values())


def test_evaluate_takes_how_the_agent_acts_from_the_command_line(tmp_path):
    """evaluate.py checkpoint=... applies an agent's acting keys given on the command line (Dreamer's
    greedy_ema / greedy_latent / greedy_plan: the same trained agent acting greedily another way) and still
    refuses any other agent key that differs from the checkpoint's."""
    small = ["agent=dreamer_rl2", "agent.deter=32", "agent.hidden=16", "agent.units=16", "agent.blocks=2",
             "agent.greedy_ema=0.9", "env.meta_obs=true"]
    train(cfg_of(QUICK + small + ["steps=64"], tmp_path))
    ck = next((tmp_path / "ckpt").iterdir())
    base = [o for o in QUICK if not o.startswith("env")] + [f"checkpoint={ck}", "eval.trials=2",
                                                            "agent=dreamer_rl2"]  # agent=: the schema of agent.KEY
    r = run_cli("evaluate.py", base + ["agent.greedy_ema=0", "agent.greedy_latent=sample", "agent.greedy_plan=2",
                                       f"hydra.run.dir={tmp_path}/ev"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert all(k in r.stdout for k in ("agent.greedy_ema=0", "agent.greedy_latent=sample", "agent.greedy_plan=2"))
    assert json.loads((tmp_path / "ev" / "eval" / "results.json").read_text())["step"] == 64
    r = run_cli("evaluate.py", base + ["agent.lr=0.1", f"hydra.run.dir={tmp_path}/bad"], tmp_path)
    assert r.returncode != 0 and "agent.lr" in r.stderr and "greedy" not in r.stderr
    r = run_cli("evaluate.py", [*base[:-1], "agent=ppo", f"hydra.run.dir={tmp_path}/other"], tmp_path)
    assert r.returncode != 0 and "agent.name: checkpoint 'dreamer_rl2', this run 'ppo'" in r.stderr


def test_agent_modules_are_discovered_with_their_schema():
    from dreamalloc.agents import agent_classes

    assert agent_classes()["heuristic"].Config().rule == "best"
    assert OmegaConf.get_type(cfg_of(["agent=heuristic"]).agent).__name__ == "HeuristicConfig"


def test_checkpoint_of_another_agent_and_suite_loads_without_naming_them(tmp_path):
    """evaluate.py and resume take the agent and suite from the checkpoint, whole: a PPO checkpoint on the
    mixed suite loads under today's defaults (heuristic agent, lim2024 suite) without agent=/suite=."""
    train(cfg_of(QUICK + ["steps=128", "agent=ppo", "agent.n_steps=8", "agent.batch_size=32",
                          "suite=lim2024_mixed"], tmp_path))
    ck = tmp_path / "ckpt" / "ppo_lim2024_mixed_s0"
    r = run_cli("evaluate.py", QUICK + [f"checkpoint={ck}", "eval.trials=2", f"hydra.run.dir={tmp_path}/ev"],
                tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "ev" / "eval" / "results.json").read_text())
    assert res["method"].startswith("ppo") and res["suite"] == "lim2024_mixed" and res["step"] == 128
    path = latest_checkpoint(ck)
    more = [f"resume={path}", "agent=ppo", "agent.n_steps=8", "agent.batch_size=32", "steps=192",
            "agent.total_steps=192"]
    out = train(cfg_of(QUICK + more, tmp_path), overrides=QUICK + more)
    assert out["step"] == 192
    resumed = load_checkpoint(latest_checkpoint(ck))
    assert resumed["config"]["agent"]["name"] == "ppo" and resumed["config"]["suite"]["name"] == "lim2024_mixed"


def test_non_finite_loss_saves_the_last_good_state_and_stops(tmp_path, monkeypatch):
    from dreamalloc.agents.base import NonFiniteLossError
    from dreamalloc.agents.ppo import PPOAgent

    real = PPOAgent.update

    def update(self, step):
        if step >= 96:
            raise NonFiniteLossError("policy loss is nan")
        return real(self, step)

    monkeypatch.setattr(PPOAgent, "update", update)
    cfg = cfg_of(QUICK + ["steps=256", "agent=ppo", "agent.n_steps=4", "agent.batch_size=16"], tmp_path)
    with pytest.raises(NonFiniteLossError, match="policy loss is nan.*step 96.*ckpt_"):
        train(cfg)
    ck = load_checkpoint(latest_checkpoint(tmp_path / "ckpt" / "ppo_lim2024_s0"))
    assert ck["step"] == 96 and ck["agent"]["n_updates"] == 2  # updates at 32 and 64 ran; the one at 96 did not


# --- evaluation references: cached, recomputed, or off ------------------------------------------------
def _heuristic_eval(tmp_path, extra=()):
    import torch

    from dreamalloc.experiment.config import make_core
    from dreamalloc.experiment.training import build_agent

    cfg = cfg_of(QUICK + ["agent.rule=worst", "eval.trials=2", "eval.timeline=false", *extra], tmp_path)
    core = make_core(cfg.env, cfg.suite.train, 1, torch.device("cpu"))
    return cfg, build_agent(cfg, core, torch.device("cpu"))


def _count_references():
    """Wrap the alloc family's references with a call counter (the family is a frozen dataclass)."""
    from dreamalloc.core.family import family

    fam = family("alloc")
    calls = []
    real = fam.references

    def counting(*a, **kw):
        calls.append(a[1:4])
        return real(*a, **kw)

    object.__setattr__(fam, "references", counting)
    return fam, real, calls


def test_evaluation_references_are_cached(tmp_path):
    import torch

    from dreamalloc.experiment.evaluation import clear_reference_cache, evaluate_suite
    from dreamalloc.report import validate_results

    cfg, agent = _heuristic_eval(tmp_path)
    n_tasks = sum(len(v) for v in cfg.suite.heldout.values())
    fam, real, calls = _count_references()
    try:
        clear_reference_cache()
        dev = torch.device("cpu")

        def run(**over):
            e = OmegaConf.merge(cfg.eval, over)
            res = evaluate_suite(agent, cfg.env, cfg.suite, e, dev, "heuristic:worst", 0, 8)
            res.pop("_timelines")
            return res

        first = run()
        assert len(calls) == n_tasks == 4
        second = run()
        assert len(calls) == n_tasks  # the second evaluation reuses every rule and bound
        assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
        always = run(baselines="always")
        assert len(calls) == 2 * n_tasks  # always: recomputed
        assert json.dumps(always, sort_keys=True) == json.dumps(first, sort_keys=True)
        other_seed = run(seed=5)  # another seed is another key: computed, not reused
        assert len(calls) == 3 * n_tasks
        assert other_seed["sets"] != first["sets"]
        off = run(baselines="off")
        assert len(calls) == 3 * n_tasks  # off: no rule runs
        validate_results(off)
        for s_off, s_on in zip(off["sets"].values(), first["sets"].values(), strict=True):
            for name, t in s_off["tasks"].items():
                assert t["baselines"] == "off" and "hindsight_best" not in t and "capacity_bound" not in t
                assert t["returns"] == s_on["tasks"][name]["returns"]  # the agent's numbers do not change
    finally:
        object.__setattr__(fam, "references", real)
        clear_reference_cache()


def test_baselines_off_report_and_bad_choice(tmp_path):
    from dreamalloc.report import markdown_table, results_table, validate_results

    cfg = cfg_of(QUICK + ["agent.rule=worst", "steps=8", "eval.trials=2", "eval.baselines=off"], tmp_path)
    res = train(cfg)["results"]
    validate_results(res)
    rows = results_table(res)
    assert {r["hindsight_rule"] for r in rows} == {"off"}
    assert all(r["hindsight_best"] is None and r["capacity_bound"] is None for r in rows)
    md = (Path(cfg.run_dir) / "eval" / "step_000000000008" / "results.md").read_text()
    assert md.count("| off ") == len(rows) == 4  # the rule column says off, the numbers are empty
    assert "off" in markdown_table(rows, ["task", "hindsight_rule", "capacity_bound"])
    bad = dict(res["sets"]["lim2024"]["tasks"]["mixed"], baselines="sometimes")
    with pytest.raises(ValueError, match="baselines"):
        validate_results({**res, "sets": {"lim2024": {"tasks": {"mixed": bad}}}})
    with pytest.raises(ValueError, match="eval.baselines"):
        validate(cfg_of(QUICK + ["eval.baselines=sometimes"]))
