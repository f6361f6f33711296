"""Everything is checked before training: typed stream parameters, value ranges of every config group, held-out
tasks, the suite against the env, the env's memory footprint, hidden schemas, and every point of a sweep."""

from __future__ import annotations

import inspect
import logging
import math
from dataclasses import fields
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from test_harness import QUICK, ROOT, cfg_of, run_cli

from dreamalloc.agents import agent_classes
from dreamalloc.alloc.family import AllocEnvConf, heap_bytes_per_cell
from dreamalloc.alloc.heap import HeapBatch
from dreamalloc.alloc.workloads import STREAMS, make_stream, register_stream
from dreamalloc.alloc.workloads.adversarial import AdversarialStream
from dreamalloc.alloc.workloads.base import RequestStream
from dreamalloc.alloc.workloads.params import RANDOM_PARAMS, parse_params
from dreamalloc.core.checks import ranges_of
from dreamalloc.experiment import config as C
from dreamalloc.experiment.cli import register_configs  # noqa: F401  (registers the schemas)
from dreamalloc.experiment.config import validate
from dreamalloc.experiment.training import train
from dreamalloc.experiment.validation import GB, check_memory, env_footprint
from dreamalloc.loadbalance.family import LoadBalanceEnvConf

CONF = str(ROOT / "conf")
TWO_TASKS = [{"name": "a", "stream": "random"}, {"name": "b", "stream": "random", "params": {"size_max": 3}}]


# --- typed stream parameters (26.8) ----------------------------------------------------------------------
def test_every_stream_declares_each_of_its_parameters():
    for name, cls in STREAMS.items():
        sig = inspect.signature(cls.__init__).parameters
        named = {p for p, v in sig.items() if p not in ("self", "batch", "cells", "device")
                 and v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)}
        assert isinstance(cls.PARAMS, dict), name
        assert named <= set(cls.PARAMS), (name, named - set(cls.PARAMS))
        extra = set(cls.PARAMS) - named
        if any(v.kind == v.VAR_KEYWORD for v in sig.values()):  # the continuation's (random) or the parent's
            assert extra <= set(RANDOM_PARAMS) | set(AdversarialStream.PARAMS), (name, extra)
        else:
            assert not extra, (name, extra)


@pytest.mark.parametrize("stream,params,match", [
    ("random", {"size_max": "five"}, "parameter size_max='five' must be an integer"),
    ("dist", {"size_max": 2.5}, "size_max=2.5 must be an integer"),
    ("bf-good", {"free_prob": "half"}, "free_prob='half' must be a number"),
    ("wf-good", {"size_min": True}, "size_min=True must be an integer"),
    ("mixed", {"size_max": [5]}, "size_max=\\[5\\] must be an integer"),
    ("adversarial", {"target": "best", "holes": 3.5}, "holes=3.5 must be an integer or null"),
    ("adversarial", {"target": "best", "blind": "maybe"}, "blind must be true, false or a list"),  # the stream's
    ("adversarial", {"target": "luckiest"}, "target must name the rule that alone survives"),
    ("ff-good", {"target": "best"}, "stream 'ff-good' has no parameter\\(s\\) \\['target'\\]"),
    ("preholed", {"skip_unfit": "perhaps"}, "skip_unfit='perhaps' must be a boolean"),
    ("preholed", {"sizes": [8, 2.5]}, "sizes must be a non-empty list of integer"),
    ("preholed", {"occupied": [[1, 2, 3]]}, "occupied must be a list of \\[start, end\\]"),
    ("pattern", {"phase_len": 2.5}, "phase_len=2.5 must be an integer"),
    ("pattern", {"size_dist": "zipf"}, "size_dist must be one of uniform, classes"),
    ("pattern", {"classes": [2, "big"], "size_dist": "classes"}, "classes=\\[2, 'big'\\] must be .*a number"),
    ("pattern", {"alpha": "steep"}, "alpha='steep' must be a number"),
    ("trace", {"window": 2.5}, "window=2.5 must be an integer or null"),
    ("trace", {"random_start": "perhaps"}, "random_start='perhaps' must be a boolean"),
    ("trace", {"path": 7}, "path=7 must be a file path"),
    ("tasks", {"tasks": "random"}, "tasks must be a non-empty list"),
    ("shift", {"tasks": TWO_TASKS, "at": 2.5}, "at must be an integer >= 1 or \\[lo, hi\\]"),
    ("shift", {"tasks": TWO_TASKS, "span": "long"}, "span='long' must be an integer"),
    ("random", {"sizemax": 5}, "has no parameter\\(s\\) \\['sizemax'\\]; valid: free_prob, size_max, size_min"),
])
def test_wrong_type_or_unknown_parameter_fails_naming_it(stream, params, match):
    with pytest.raises(ValueError, match=match):
        make_stream(stream, 2, 256, **params)


@pytest.mark.parametrize("value,expected", [("no", False), ("false", False), ("No", False), ("off", False),
                                            (0, False), (False, False), ("yes", True), ("true", True),
                                            ("1", True), (1, True), (True, True)])
def test_bools_parse_by_an_explicit_rule(value, expected):
    assert make_stream("trace", 1, 256, random_start=value).random_start is expected
    assert make_stream("preholed", 1, 100, skip_unfit=value).skip_unfit is expected


def test_integral_floats_are_integers_and_nothing_is_truncated():
    assert make_stream("random", 1, 64, size_max=4.0).size_max == 4
    assert parse_params("trace", STREAMS["trace"].PARAMS, {"window": 8.0}) == {"window": 8}
    with pytest.raises(ValueError, match="integer"):
        make_stream("random", 1, 64, size_max=4.5)
    with pytest.raises(ValueError, match="boolean"):
        make_stream("trace", 1, 256, random_start=2)


def test_a_bad_parameter_of_a_sub_task_names_the_task():
    with pytest.raises(ValueError, match="task 'b': stream 'random': parameter size_max='x'"):
        make_stream("tasks", 2, 64, tasks=[TWO_TASKS[0], {"name": "b", "stream": "random",
                                                          "params": {"size_max": "x"}}])
    with pytest.raises(ValueError, match="task 'b': stream 'random' has no parameter"):
        make_stream("shift", 2, 64, tasks=[TWO_TASKS[0], {"name": "b", "stream": "random", "params": {"nope": 1}}])


def test_register_stream_needs_a_schema():
    class Bare(RequestStream):
        def reset(self, heaps, rows, seed, episode):
            pass

        def next(self, heaps, rows):
            raise NotImplementedError

    with pytest.raises(ValueError, match="declares no PARAMS schema"):
        register_stream("bare", Bare)
    assert "bare" not in STREAMS
    Bare.PARAMS = {}
    register_stream("bare", Bare)
    try:
        with pytest.raises(ValueError, match="stream 'bare' has no parameter"):
            make_stream("bare", 1, 8, x=1)
    finally:
        del STREAMS["bare"]


def test_load_balance_job_law_params_are_typed():
    base = QUICK[1:] + ["env=load_balance", "suite=lb_standard", "agent=dispatch"]
    for override, match in (("+suite.train.0.params.size_max=five", "task 'park'.*size_max must be a number"),
                            ("+suite.train.0.params.job_interval=true", "job_interval must be a number"),
                            ("+suite.heldout.park.0.params.size_shape=big", "heldout.park: task 'park'.*size_shape"),
                            ("+suite.train.0.params.speed=2", "unknown param\\(s\\) \\['speed'\\]")):
        with pytest.raises(ValueError, match=match):
            validate(cfg_of(base + [override]))


# --- held-out sets, suite and env, memory (26.6, 26.7) -----------------------------------------------------
@pytest.mark.parametrize("overrides,match", [
    (["+suite.heldout.lim2024.0.params.size_max=five"],
     "suite.heldout.lim2024: task 'mixed': stream 'mixed': parameter size_max='five' must be an integer"),
    (["suite.heldout.lim2024.1.stream=nope"], "suite.heldout.lim2024: task 'wf-good': unknown request stream 'nope'"),
    (["suite=traces", "suite.heldout.traces.1.params.path=/no/such.trace"],
     "suite.heldout.traces: task 'sqlite_insert': no trace file '/no/such.trace'"),
    (["+suite.heldout.lim2024.3.params.free_prob=1.5"], "task 'random': free_prob must lie in \\[0, 1\\)"),
    (["+suite.train.1.params.size_min=2.5"], "suite.train: task 'mixed': .*size_min=2.5 must be an integer"),
])
def test_bad_heldout_or_training_task_fails_at_start(overrides, match):
    cfg = cfg_of(QUICK + overrides)
    with pytest.raises(ValueError, match=match):
        validate(cfg)


def test_suite_and_env_of_different_kinds_name_the_env_to_use():
    with pytest.raises(ValueError, match="'lb_standard' has task streams jobs .*load_balance family.*env=load_balance"):
        validate(cfg_of(["suite=lb_standard"]))
    with pytest.raises(ValueError, match="'lim2024' has task streams .*the alloc family.*env=alloc256"):
        validate(cfg_of(["env=load_balance", "agent=dispatch"]))


def test_heuristic_agent_on_the_load_balance_env_names_dispatch(tmp_path):
    with pytest.raises(ValueError, match="use agent=dispatch"):
        train(cfg_of(QUICK[1:] + ["env=load_balance", "suite=lb_standard", "steps=16"], tmp_path))
    assert not (tmp_path / "ckpt").exists()


def test_env_memory_is_refused_above_the_limit_and_warned_above_the_threshold(caplog):
    with pytest.raises(ValueError, match="about 2[0-9]{3}.[0-9] GiB.*32 envs.*1,000,000,000 cells.*memory_gb=8"):
        validate(cfg_of(["env.cells=1000000000"]))
    with pytest.raises(ValueError, match="17 envs \\(env.num_envs=1 \\+ eval.trials=16\\)"):
        validate(cfg_of(["env.cells=100000000", "env.num_envs=1"]))
    check_memory(cfg_of(["env.cells=100000000", "env.num_envs=1", "max_env_memory_gb=1000",
                         "warn_env_memory_gb=1000"]))  # the limit is configurable
    caplog.set_level(logging.WARNING, logger="dreamalloc")
    check_memory(cfg_of(["env.cells=10000000", "env.num_envs=1", "eval.trials=1"]))
    assert any("warn_env_memory_gb=1" in r.getMessage() for r in caplog.records)
    caplog.clear()
    check_memory(cfg_of([]))
    assert not caplog.records


def test_footprint_counts_the_heap_state_it_will_allocate():
    h = HeapBatch(3, 100)
    per_heap_cell = sum(t.element_size() * t.numel() for t in vars(h).values() if hasattr(t, "element_size")
                        and t.dim() == 2) / (3 * 100)
    assert per_heap_cell <= heap_bytes_per_cell() <= per_heap_cell + 16  # + the [N] index row
    need, how = env_footprint(cfg_of(["env.cells=1000", "env.num_envs=4", "eval.trials=2"]))
    assert need >= 6 * 1000 * (per_heap_cell + 4) and "6 envs" in how  # state + float32 bitmap per heap
    pattern, _ = env_footprint(cfg_of(["suite=traces", "env.cells=1000", "env.num_envs=4", "eval.trials=2"]))
    assert pattern > need  # the pattern stream keeps a death time per heap cell
    lb, how = env_footprint(cfg_of(["env=load_balance", "suite=lb_standard", "env.num_envs=2", "eval.trials=2"]))
    assert lb >= 4 * 1000 * 40 and "1,000 jobs" in how and lb < GB


def test_cli_huge_heap_is_one_line_not_a_traceback(tmp_path):
    r = run_cli("train.py", ["env.cells=1000000000", "logger=disabled", f"hydra.run.dir={tmp_path}/r"], tmp_path,
                timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("dreamalloc: error: config error: the env would need") and \
        "max_env_memory_gb" in r.stderr


# --- keep_checkpoints -------------------------------------------------------------------------------------
def test_keep_checkpoints_zero_keeps_every_one_and_negative_fails_at_start(tmp_path):
    with pytest.raises(ValueError, match="config error: keep_checkpoints=-1 must be >= 0"):
        validate(cfg_of(QUICK + ["keep_checkpoints=-1"]))
    out = train(cfg_of(QUICK + ["steps=64", "checkpoint_every=16", "keep_checkpoints=0", "eval.trials=1",
                                "eval.episodes_per_trial=1", "eval.timeline=false", "suite=lim2024_mixed"], tmp_path))
    kept = sorted(p.name for p in (tmp_path / "ckpt" / "heuristic_lim2024_mixed_s0").glob("ckpt_*"))
    assert kept == [f"ckpt_{s:012d}.safetensors" for s in (16, 32, 48, 64)] and Path(out["checkpoint"]).is_file()
    assert "0: keep every checkpoint" in inspect.getsource(C.Config)


# --- value ranges of every group (21.3) ---------------------------------------------------------------------
LB = ["env=load_balance", "suite=lb_standard", "agent=dispatch"]
RANGE_CASES = [
    # env (allocation and load balancing)
    ([], "env.cells=-4"), ([], "env.cells=0"), ([], "env.num_envs=0"), ([], "env.holes=0"),
    ([], "env.alloc_reward=nan"), ([], "env.invalid_reward=-inf"), ([], "env.history=-1"),
    ([], "env.max_allocs=0"), ([], "env.trial_episodes=0"), ([], "env.hole_features=-2"),
    (LB, "env.num_servers=0"), (LB, "env.num_jobs=0"), (LB, "env.obs_scale=0.0"), (LB, "env.reward_scale=nan"),
    (LB, "env.num_envs=0"),
    # suite
    ([], "suite.train.0.weight=0.0"), ([], "suite.train.1.weight=-1.0"), ([], "suite.train.0.samples=-1"),
    ([], "+suite.heldout.lim2024.2.weight=0.0"), (["suite=traces"], "suite.train.0.seed=-3"),
    # logger, eval, top level
    ([], "logger.every=-1"), ([], "eval.trials=0"), ([], "eval.episodes_per_trial=0"), ([], "eval.every=-5"),
    ([], "eval.seed=-1"), ([], "steps=0"), ([], "seed=-1"), ([], "checkpoint_every=-1"), ([], "keep_checkpoints=-2"),
    ([], "max_env_memory_gb=0.0"),
    # agents
    ([], "agent.rule=luckiest"), (LB, "agent.rule=fastest"), (LB, "agent.seed=-1"),
    (["agent=dqn"], "agent.lr=0.0"), (["agent=dqn"], "agent.gamma=1.5"), (["agent=dqn"], "agent.batch_size=0"),
    (["agent=dqn"], "agent.exploration_final_eps=1.5"), (["agent=dqn"], "agent.exploration_initial_eps=-0.1"),
    (["agent=dqn"], "agent.tau=0.0"), (["agent=dqn"], "agent.hidden=[32,0]"),
    (["agent=dqn"], "agent.gradient_steps=-2"),
    (["agent=ppo"], "agent.lr=-0.001"), (["agent=ppo"], "agent.gamma=-0.1"), (["agent=ppo"], "agent.clip=1.5"),
    (["agent=ppo"], "agent.clip=0.0"), (["agent=ppo"], "agent.batch_size=0"), (["agent=ppo"], "agent.n_epochs=0"),
    (["agent=ppo"], "agent.gae_lambda=2.0"), (["agent=ppo"], "agent.ent_coef=-1.0"), (["agent=ppo"], "agent.n_steps=0"),
    (["agent=ppo"], "agent.target_kl=0.0"), (["agent=ppo"], "agent.activation=sigmoidish"),
    (["agent=a2c"], "agent.lr=0.0"), (["agent=a2c"], "agent.n_steps=0"), (["agent=a2c"], "agent.rms_alpha=1.0"),
    (["agent=rl2_ppo", "env.meta_obs=true"], "agent.bptt=0"),
    (["agent=rl2_ppo", "env.meta_obs=true"], "agent.rnn_hidden=0"),
    (["agent=dreamer"], "agent.lr=0.0"), (["agent=dreamer"], "agent.batch_size=0"),
    (["agent=dreamer"], "agent.unimix=1.0"), (["agent=dreamer"], "agent.lam=1.5"),
    (["agent=dreamer"], "agent.train_ratio=0.0"), (["agent=dreamer"], "agent.beta1=1.0"),
    (["agent=dreamer_1m"], "agent.imag_length=0"), (["agent=dreamer"], "agent.precision=fp8"),
]


@pytest.mark.parametrize("base,override", RANGE_CASES, ids=[f"{'+'.join(b) or 'default'}:{o}" for b, o in RANGE_CASES])
def test_out_of_range_value_is_one_config_error_naming_it(base, override):
    key, value = override.lstrip("+").split("=", 1)
    cfg = cfg_of(base + [override])
    with pytest.raises(ValueError) as e:
        validate(cfg)
    msg = str(e.value)
    assert msg.startswith(f"config error: {key}="), msg
    assert " must be " in msg and "\n" not in msg
    shown = msg.split("=", 1)[1].split(" must be ")[0]
    if value not in ("nan", "-inf"):
        assert shown.replace("'", "").replace(" ", "") == value or float(shown) == float(value), (shown, value)
    else:
        assert math.isnan(float(shown)) or math.isinf(float(shown))


def test_every_range_table_names_real_fields():
    classes = [C.Config, AllocEnvConf, LoadBalanceEnvConf, C.TaskConf, C.LoggerConf, C.EvalConf]
    classes += [cls.Config for cls in agent_classes().values()]
    rules = {cls.Config for cls in agent_classes().values() if getattr(cls, "fixed", False)}
    for cls in classes:
        table = ranges_of(cls)
        assert table or cls in rules, cls  # a fixed agent's rule is checked against its family's rules
        assert set(table) <= {f.name for f in fields(cls)}, (cls, set(table) - {f.name for f in fields(cls)})


def test_defaults_pass_every_range():
    for agent in sorted(agent_classes()):
        if agent == "dispatch":
            validate(cfg_of(LB))
        else:
            validate(cfg_of([f"agent={agent}"] + (["env.meta_obs=true"] if agent == "rl2_ppo" else [])))


# --- hidden schemas, presets (26.7) ---------------------------------------------------------------------
@pytest.mark.parametrize("preset", sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")))
def test_every_experiment_preset_composes_and_validates(preset):
    validate(cfg_of([f"experiment={preset}"]))


@pytest.mark.parametrize("suite", sorted(p.stem for p in (ROOT / "conf" / "suite").glob("*.yaml")))
def test_every_suite_composes_and_validates_with_its_env(suite):
    family_env = {"mallocgame": ["env=mallocgame", "agent=ppo"]}.get(suite, [])
    validate(cfg_of([f"suite={suite}"] + (LB[:1] + LB[2:] if suite.startswith("lb_") else family_env)))


def test_schemas_are_not_group_choices():
    for group in ("agent", "env", "suite", "logger"):
        with initialize_config_dir(config_dir=CONF, version_base="1.3"):
            with pytest.raises(Exception) as e:
                compose("config", overrides=[f"{group}=nope"])
        listed = str(e.value).split("Available options", 1)[1].split("Config search path", 1)[0]
        assert "schema" not in listed and len(listed.split()) > 2, (group, listed)
    with pytest.raises(Exception, match="Could not find 'agent/ppo_schema'"):
        cfg_of(["agent=ppo_schema"])
    from omegaconf import OmegaConf
    assert OmegaConf.get_type(cfg_of(["agent=ppo"]).agent).__name__ == "PPOConfig"
    assert OmegaConf.get_type(cfg_of(LB).env).__name__ == "LoadBalanceEnvConf"


def test_cli_choice_list_hides_schemas(tmp_path):
    r = run_cli("train.py", ["agent=nope"], tmp_path, timeout=60)
    assert r.returncode != 0 and "heuristic" in r.stderr and "_schema" not in r.stderr
    r = run_cli("train.py", ["agent=ppo_schema"], tmp_path, timeout=60)
    assert r.returncode != 0 and "Could not find 'agent/ppo_schema'" in r.stderr


# --- sweeps (26.10) -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_sweep_with_a_bad_point_fails_before_any_job(launcher, tmp_path):
    extra = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"] if launcher == "joblib" else []
    r = run_cli("train.py", ["-m", *extra, "env.cells=64,0", "steps=64", "logger=disabled",
                             f"hydra.sweep.dir={tmp_path}/sweep", f"checkpoint_dir={tmp_path}/ckpt"], tmp_path,
                timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "sweep job #1 of 2 (env.cells=0 steps=64 logger=disabled " in r.stderr
    assert "env.cells=0 must be >= 2" in r.stderr and "no job was started" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "ckpt").exists()  # the good point did not run


@pytest.mark.parametrize("preset", sorted(p.stem for p in (ROOT / "conf" / "agent").glob("*.yaml")))
def test_every_agent_preset_composes_and_validates(preset):
    overrides = {"dispatch": LB, "rl2_ppo": ["agent=rl2_ppo", "env.meta_obs=true"]}.get(preset, [f"agent={preset}"])
    validate(cfg_of(overrides))
