"""The logging interface: exact JSONL, run_info, tables / summary files, W&B offline and disabled modes.

W&B is only ever used offline or disabled here, with its cache / config / data folders inside tmp_path.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dreamalloc.experiment.logging import Logger, load_run_info
from dreamalloc.report.results import read_jsonl


@pytest.fixture(autouse=True)
def wandb_sandbox(tmp_path, monkeypatch):
    """Keep W&B away from the network and from the home directory."""
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    for var, sub in (("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config"), ("WANDB_DATA_DIR", "data")):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home" / sub))
    monkeypatch.setenv("WANDB_SILENT", "true")


CONFIG = {"agent": {"name": "dqn", "lr": 3e-4}, "env": {"cells": 256}, "seed": 3, "tags": ("a", "b")}


def test_jsonl_is_exact(tmp_path, monkeypatch):
    with Logger(tmp_path / "run", CONFIG, mode="disabled") as log:
        log.log({"loss": 0.25, "episodes": 3}, step=0)
        log.log({"np_f32": np.float32(0.5), "np_i64": np.int64(7), "t0": torch.tensor(2.5),
                 "t1": torch.tensor([4], dtype=torch.int32), "nan": float("nan"), "inf": np.float64("inf"),
                 "flag": np.bool_(True), "phase": "train"}, step=np.int64(10))
    text = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert text == (
        '{"step": 0, "loss": 0.25, "episodes": 3}\n'
        '{"step": 10, "np_f32": 0.5, "np_i64": 7, "t0": 2.5, "t1": 4, "nan": null, "inf": null, "flag": true, '
        '"phase": "train"}\n'
    )
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert rows[0] == {"step": 0, "loss": 0.25, "episodes": 3}
    assert type(rows[1]["np_i64"]) is int and rows[1]["nan"] is None


def test_jsonl_appends_across_loggers_and_is_flushed_each_call(tmp_path):
    run = tmp_path / "run"
    log = Logger(run, CONFIG, mode="disabled")
    log.log({"x": 1}, step=1)
    assert [r["x"] for r in read_jsonl(run / "metrics.jsonl")] == [1]  # visible before close
    log.close()
    with Logger(run, CONFIG, mode="disabled") as log:
        log.log({"x": 2}, step=2)
    assert [(r["step"], r["x"]) for r in read_jsonl(run / "metrics.jsonl")] == [(1, 1), (2, 2)]


def test_read_jsonl_skips_torn_last_line_only(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1}\n\n{"step": 2}\n{"step": 3, "lo')
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]
    path.write_text('{"step": 1}\n{"ste\n{"step": 3}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_jsonl(path)


def test_bad_values_are_rejected_with_the_metric_name(tmp_path):
    with Logger(tmp_path, CONFIG, mode="disabled") as log:
        with pytest.raises(ValueError, match="'q' has 3 elements"):
            log.log({"q": torch.zeros(3)}, step=0)
        with pytest.raises(TypeError, match="'d' has type dict"):
            log.log({"d": {"a": 1}}, step=0)
        with pytest.raises(ValueError, match="'step' is reserved"):
            log.log({"step": 5}, step=0)
        with pytest.raises(TypeError, match="step must be an integer"):
            log.log({"x": 1}, step=1.5)
    assert read_jsonl(tmp_path / "metrics.jsonl") == []


@pytest.mark.parametrize("mode", ["Offline", "dryrun", "", "shared"])
def test_bad_mode_is_a_value_error_naming_the_modes(tmp_path, mode):
    with pytest.raises(ValueError, match="offline, online, disabled"):
        Logger(tmp_path / "run", CONFIG, mode=mode)
    assert not (tmp_path / "run").exists()


def test_run_info_records_config_git_versions_host(tmp_path):
    with Logger(tmp_path, CONFIG, mode="disabled") as log:
        assert log.wandb_run_id is None
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info == load_run_info(tmp_path)
    assert info["config"] == {"agent": {"name": "dqn", "lr": 3e-4}, "env": {"cells": 256}, "seed": 3,
                              "tags": ["a", "b"]}
    assert "git_commit" in info and "git_dirty" in info
    if info["git_commit"] is not None:  # this test file lives in the repo, so normally a checkout
        assert len(info["git_commit"]) == 40 and isinstance(info["git_dirty"], bool)
    assert info["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert info["versions"]["torch"] == torch.__version__ and info["versions"]["numpy"] == np.__version__
    assert info["versions"]["gymnasium"]
    assert info["hostname"]
    assert info["wandb"]["mode"] == "disabled" and info["wandb"]["run_id"] is None
    assert load_run_info(tmp_path / "elsewhere") is None


def test_disabled_mode_writes_no_wandb_folder_and_tables_summary_images_still_work(tmp_path):
    image = tmp_path / "plot.png"
    image.write_bytes(b"\x89PNG not really")
    with Logger(tmp_path, CONFIG, mode="disabled") as log:
        log.log_table("eval/held_out", ["method", "return", "n"],
                      [["dqn", np.float32(1.5), 3], ["first fit, start", 0.25, torch.tensor(4)]])
        log.log_image("memory_map", image, step=3)
        with pytest.raises(FileNotFoundError, match="missing.png"):
            log.log_image("memory_map", tmp_path / "missing.png")
        with pytest.raises(ValueError, match="row 0 has 2 cells but there are 3 columns"):
            log.log_table("bad", ["a", "b", "c"], [[1, 2]])
        with pytest.raises(ValueError, match="relative name"):
            log.log_table("../escape", ["a"], [[1]])
        log.log_summary({"best_return": np.float64(2.0), "final": 1})
        log.log_summary({"final": 5, "nan": float("nan")})
    assert not (tmp_path / "wandb").exists()
    assert (tmp_path / "tables" / "eval" / "held_out.csv").read_text() == (
        'method,return,n\ndqn,1.5,3\n"first fit, start",0.25,4\n')
    assert json.loads((tmp_path / "summary.json").read_text()) == {"best_return": 2.0, "final": 5, "nan": None}
    assert image.exists()
    assert not list(tmp_path.rglob("*.tmp-*"))


def test_close_is_idempotent_and_logging_after_close_fails(tmp_path):
    log = Logger(tmp_path, CONFIG, mode="disabled")
    log.close()
    log.close()
    with pytest.raises(RuntimeError, match="closed"):
        log.log({"x": 1}, step=0)


def test_offline_run_creates_wandb_files_and_resumes_same_run(tmp_path):
    run = tmp_path / "run"
    image = tmp_path / "plot.png"
    import wandb

    wandb.Image(np.zeros((4, 4, 3), dtype=np.uint8)).image.save(image)
    log = Logger(run, CONFIG, mode="offline", name="test", group="g", tags=["unit"])
    run_id = log.wandb_run_id
    assert isinstance(run_id, str) and len(run_id) == 8
    log.log({"loss": np.float32(0.5), "nan": float("nan")}, step=1)
    log.log_table("results", ["method", "return"], [["dqn", 1.0]])
    log.log_image("map", image, step=1)
    log.log_summary({"best": 1.0})
    log.close()
    log.close()

    assert load_run_info(run)["wandb"]["run_id"] == run_id
    (offline,) = (run / "wandb").glob(f"offline-run-*-{run_id}")
    assert (offline / f"run-{run_id}.wandb").stat().st_size > 0
    assert list((offline / "files" / "media" / "table").glob("results_*.table.json"))
    assert list((offline / "files" / "media" / "images").glob("map_*.png"))

    with Logger(run, CONFIG, mode="offline", resume_id=run_id) as log:
        assert log.wandb_run_id == run_id
        log.log({"loss": 0.25}, step=2)
    info = load_run_info(run)
    assert info["wandb"]["run_id"] == run_id and info["wandb"]["resumed_from"] == run_id
    assert len(list((run / "wandb").glob(f"offline-run-*-{run_id}"))) >= 1
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl")] == [1, 2]


def test_importing_dreamalloc_and_a_disabled_logger_never_import_wandb(tmp_path):
    code = ("import sys, dreamalloc, dreamalloc.experiment.logging as L\n"
            f"with L.Logger({str(tmp_path)!r}, {{}}, mode='disabled') as log: log.log({{'x': 1}}, step=0)\n"
            "assert 'wandb' not in sys.modules, 'wandb was imported'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "time" not in read_jsonl(tmp_path / "metrics.jsonl")[0]  # deterministic files: no wall clock


# --- training's console / train.log lines, timing outside metrics.jsonl, the steps notice ------------------
def test_training_log_lines_timing_and_rounding_notice(tmp_path, caplog):
    import logging as pylogging

    from hydra import compose, initialize_config_dir

    from dreamalloc.experiment.cli import register_configs  # noqa: F401
    from dreamalloc.experiment.training import train

    root = Path(__file__).resolve().parents[1]
    metrics = []
    for name in ("a", "b"):
        with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=["env=alloc64", "env.num_envs=8", "eval.trials=2", "logger=disabled",
                                               "progress=off", "agent.rule=worst", "steps=100", "logger.every=32",
                                               "eval.timeline=false", "seed=1"])
        cfg.run_dir, cfg.checkpoint_dir = str(tmp_path / name / "run"), str(tmp_path / name / "ckpt")
        with caplog.at_level(pylogging.INFO, logger="dreamalloc"):
            out = train(cfg, [])
        run = Path(out["run_dir"])
        assert out["step"] == 104  # 100 rounded up to a multiple of 8 envs ...
        metrics.append((run / "metrics.jsonl").read_text())
        text = (run / "train.log").read_text()
        assert "steps=100 is not a multiple of env.num_envs=8" in text and "104 env steps" in text  # ... said so
        lines = [x for x in text.splitlines() if "steps/s" in x]
        assert len(lines) == 4 and "step 104/104" in lines[-1]  # 32, 64, 96 and the last step
        timing = [json.loads(x) for x in (run / "timing.jsonl").read_text().splitlines()]
        assert [t["step"] for t in timing] == [32, 64, 96, 104]
        assert all(t["time/steps_per_second"] > 0 and t["time/wall_seconds"] >= 0 for t in timing)
        assert "time/" not in metrics[-1] and "steps_per_second" not in metrics[-1]
    assert metrics[0] == metrics[1]  # deterministic: no wall-clock numbers in metrics.jsonl
    assert any("not a multiple" in r.getMessage() for r in caplog.records if r.name == "dreamalloc")


def test_onpolicy_update_returns_no_stale_losses():
    from dreamalloc.agents import make_agent
    from dreamalloc.alloc.env import AllocConfig, AllocCore

    cfg = AllocConfig(cells=64, stream="mixed").validate()
    core = AllocCore(2, cfg)
    agent = make_agent("ppo", cfg.obs_dim, cfg.n_actions, cfg, "cpu", n_steps=4, batch_size=8)
    obs, info = core.reset(seed=0)
    got = []
    for t in range(1, 10):
        a, _ = agent.act(obs, None, info)
        next_obs, r, te, tr, info = core.step(a)
        agent.observe(obs, a, r, te, tr, info.get("final_obs", next_obs), info)
        obs = next_obs
        got.append(agent.update(2 * t))
    assert [bool(u) for u in got] == [False, False, False, True, False, False, False, True, False]
    assert got[3]["updates"] == 1.0 and got[7]["updates"] == 2.0 and "explained_variance" in got[7]
