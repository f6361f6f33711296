"""The DreamerV3 diagnostics (dreamalloc/agents/dreamer/diagnostics.py, scripts/dreamer_diagnostics.py)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dreamalloc.agents import make_agent
from dreamalloc.agents.dreamer.diagnostics import _binned, _summary, diagnose, report
from dreamalloc.loadbalance import LoadBalanceCore

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(deter=32, hidden=16, stoch=4, classes=4, blocks=4, units=16, enc_layers=1, dec_layers=1, ac_layers=1,
            batch_size=4, batch_length=8, imag_length=5, learning_starts=16, train_ratio=8.0, replay_size=4096,
            warmup=0, bins=31)


def test_binned_and_summary_on_known_arrays():
    key = np.array([0.0, 1.0, 2.0, 3.0])
    pred, real = np.array([1.0, 1.0, 5.0, 7.0]), np.array([0.0, 2.0, 5.0, 5.0])
    rows = _binned(key, pred, real, [0, 2, 4])
    assert [(r["n"], r["bias"], r["real"]) for r in rows] == [(2, 0.0, 1.0), (2, 1.0, 5.0)]
    assert rows[0]["rmse"] == pytest.approx(1.0) and rows[1]["rmse"] == pytest.approx(2 ** 0.5)
    s = _summary(pred, real)
    assert s["bias"] == pytest.approx(0.5) and s["r2"] == pytest.approx(1 - 1.5 / real.var())


@pytest.mark.parametrize("timing", ["interval", "dispatch"])
def test_diagnose_on_load_balance_counts_and_drain(timing):
    """Two rows of 40-job episodes for 100 steps: ends at steps 39 and 79 of each row. The open-loop check keeps
    the windows that no episode end cuts; the value check the steps whose episode ended in the rollout; Park's
    timing puts a large share of the return on the episode's last step, dispatch timing almost none."""
    torch.manual_seed(0)
    core = LoadBalanceCore(2, num_jobs=40, obs_scale=1e-3, reward_scale=1e-3, reward_timing=timing)
    agent = make_agent("dreamer", core.obs_dim, core.n_actions, None, "cpu", **TINY)
    H, T = 5, 100
    d = diagnose(agent, core, T, seed=3, bin_key="jobs_in_system", horizon=H, bins=3)
    assert d["reward"]["all"]["n"] == 2 * T and sum(r["n"] for r in d["reward"]["by_bin"]) == 2 * T
    assert sum(r["n"] for r in d["reward"]["by_to_end"]) == 2 * T
    assert d["imagined"]["all"]["n"] == 2 * ((T - H) - 2 * (H - 1))
    assert d["value"]["all"]["n"] == 2 * 80
    assert d["rewards"]["episodes"] == 4
    assert len(d["decoder_r2"]) == core.obs_dim and sum(d["actions"]) == pytest.approx(1.0)
    if timing == "interval":
        assert d["rewards"]["end_share"] > 0.2
    else:
        assert d["rewards"]["end_share"] < 0.1
    text = report(0, d)
    assert "imagined" in text and "jobs_in_system" in text


def test_script_on_a_trained_run(tmp_path):
    run = tmp_path / "run"
    tiny = [f"agent.{k}={v}" for k, v in TINY.items()]
    cmd = [sys.executable, "train.py", "experiment=redovian2025_standard", "agent=dreamer", *tiny, "steps=96",
           "env.num_envs=2", "env.num_jobs=24", "eval.trials=2", "logger=disabled", "progress=off",
           f"hydra.run.dir={run}", f"checkpoint_dir={tmp_path / 'ckpt'}"]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    out = tmp_path / "diag.json"
    p = subprocess.run([sys.executable, "scripts/dreamer_diagnostics.py", str(run), "--steps", "30", "--envs", "2",
                        "--bin-key", "jobs_in_system", "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    series = json.loads(out.read_text())
    assert len(series) == 1 and series[0]["step"] == 96 and series[0]["rows"] == 2
    assert "== step 96" in p.stdout
    bad = subprocess.run([sys.executable, "scripts/dreamer_diagnostics.py", str(tmp_path / "nowhere")], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "does not exist" in bad.stderr


def test_r2_is_undefined_for_a_constant_target():
    real = np.full(6000, 1.0 - 1.0 / 333)
    assert np.isnan(_summary(real + 1e-4, real)["r2"])
