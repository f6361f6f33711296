"""The fault matrix (docs/reliability.md): kills, full disks, bad checkpoints and configs lose nothing.

Each kill is a real SIGKILL of a training process, at an exact point chosen by patching one function in the
child (during an update, during a checkpoint write, during an evaluation); the run is then resumed with
``resume=RUN_DIR`` and its metrics.jsonl must equal an uninterrupted run's byte for byte.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from dreamalloc.agents.base import NonFiniteLossError
from dreamalloc.experiment.checkpoint import (
    CheckpointError,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from dreamalloc.experiment.cli import register_configs  # noqa: F401  (registers the schemas)
from dreamalloc.experiment.training import TrainingError, run_checkpoint_dir, train

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
BASE = ["env=alloc64", "env.num_envs=8", "eval.trials=2", "eval.episodes_per_trial=2", "logger=disabled",
        "progress=off", "agent=ppo", "agent.n_steps=8", "agent.batch_size=32", "agent.n_epochs=2",
        "steps=768", "checkpoint_every=128", "logger.every=64", "eval.every=256", "eval.timeline=false"]


def cfg_of(overrides, where: Path):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    cfg.run_dir, cfg.checkpoint_dir = str(where / "run"), str(where / "ckpt")
    return cfg


_CHILD = r"""
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from hydra import compose, initialize_config_dir
import dreamalloc.experiment.cli  # registers the schemas
from dreamalloc.experiment import training, checkpoint
where, point, at = Path({where!r}), {point!r}, {at!r}
def die():
    os.kill(os.getpid(), signal.SIGKILL)
if point == "update":
    from dreamalloc.agents.onpolicy import OnPolicyAgent
    seen = []
    def dying(real):
        def step(self, loss):
            if self.env_steps >= at:
                seen.append(1)
                if len(seen) == 2:
                    die()  # one optimiser step of this update applied, the rest not
            return real(self, loss)
        return step
    OnPolicyAgent._step = dying(OnPolicyAgent._step)  # torch autograd's and the compiled path's step alike
elif point == "checkpoint":
    real_replace = os.replace
    def replace(a, b):
        if str(b).endswith(f"ckpt_{{at:012d}}.safetensors"):
            die()  # the temporary file is written and fsynced, the rename never happens
        return real_replace(a, b)
    checkpoint.os.replace = replace
elif point == "eval":
    real_eval = training.evaluate_suite
    def evaluate(agent, env, suite, ev, device, method, seed, step):
        if step >= at:
            die()
        return real_eval(agent, env, suite, ev, device, method, seed, step)
    training.evaluate_suite = evaluate
with initialize_config_dir(config_dir={conf!r}, version_base="1.3"):
    cfg = compose("config", overrides={over!r})
cfg.run_dir, cfg.checkpoint_dir = str(where / "run"), str(where / "ckpt")
training.train(cfg, overrides={over!r})
"""


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    where = tmp_path_factory.mktemp("full")
    out = train(cfg_of(BASE, where), overrides=BASE)
    return where, out


@pytest.mark.parametrize("point,at", [("update", 448), ("checkpoint", 384), ("eval", 512)])
def test_sigkill_then_resume_writes_the_uninterrupted_metrics(point, at, tmp_path, uninterrupted):
    full, out = uninterrupted
    code = _CHILD.format(root=str(ROOT), where=str(tmp_path), point=point, at=at, conf=str(ROOT / "conf"),
                         over=BASE)
    r = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "WANDB_SILENT": "true"})
    assert r.returncode == -9, r.stderr[-2000:]  # it really was killed
    ckdir = run_checkpoint_dir(tmp_path / "run")
    assert not list(ckdir.glob(".*tmp*")) or point == "checkpoint"  # only a kill mid-write leaves its temp file
    assert all(load_checkpoint(p)["step"] < at for p in list_checkpoints(ckdir))
    stale = list(ckdir.glob(".ckpt_*.tmp-*"))
    assert len(stale) == (point == "checkpoint")  # the write killed between fsync and rename
    written = (tmp_path / "run" / "metrics.jsonl").read_bytes().splitlines(keepends=True)
    seen = load_checkpoint(latest_checkpoint(ckdir))["loop"]["metric_lines"]  # what the resume point had logged
    again = [f"resume={tmp_path / 'run'}"]
    res = train(cfg_of(BASE + again, tmp_path), overrides=BASE + again)
    assert not list(ckdir.glob(".*tmp*"))  # the resume removed the stale temp file
    discarded = tmp_path / "run" / "metrics.discarded.jsonl"
    # the checkpoint / eval kills come after lines logged past the resume point; the update kill does not
    assert (len(written) > seen) == (point != "update") and len(written) >= seen
    if point == "update":
        assert not discarded.exists()
    else:
        assert discarded.read_bytes() == b"".join(written[seen:])  # exactly the lines the resume replays
    assert [json.loads(x)["step"] for x in written[seen:]] == sorted({json.loads(x)["step"] for x in written[seen:]})
    assert res["step"] == out["step"] == 768 and res["episodes"] == out["episodes"]
    mine = (tmp_path / "run" / "metrics.jsonl").read_bytes()
    assert mine == (full / "run" / "metrics.jsonl").read_bytes()  # no duplicated or missing line, same values
    ours, theirs = load_checkpoint(latest_checkpoint(ckdir))["agent"], load_checkpoint(out["checkpoint"])["agent"]
    for k, v in theirs["net"].items():
        assert torch.equal(v, ours["net"][k]), k  # bit-identical on CPU
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert len(info["invocations"]) == 2 and info["invocations"][1]["resumed_at_step"] < at
    assert info["command"] == info["invocations"][0]["command"]


def test_sweep_points_never_share_a_checkpoint_folder_and_keep_0_keeps_the_final(tmp_path):
    r = subprocess.run([PY, str(ROOT / "train.py"), "-m", "agent.rule=best,worst", "env=alloc64", "env.num_envs=4",
                        "steps=64", "eval.trials=2", "logger=disabled", "progress=off", "keep_checkpoints=0",
                        f"checkpoint_dir={tmp_path}/ckpt", f"hydra.sweep.dir={tmp_path}/sweep"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path,
                       env={**os.environ, "WANDB_SILENT": "true"})
    assert r.returncode == 0, r.stderr[-2000:]
    folders = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert len(folders) == 2 and any("rule-best" in f for f in folders) and any("rule-worst" in f for f in folders)
    for f in folders:
        ck = load_checkpoint(latest_checkpoint(tmp_path / "ckpt" / f))
        assert ck["config"]["agent"]["rule"] in f and ck["step"] == 64
    for summary in (tmp_path / "sweep").glob("*/summary.json"):
        assert Path(json.loads(summary.read_text())["checkpoint"]).is_file()  # the reported file exists


def test_a_rerun_never_overwrites_and_resume_true_takes_the_newest(tmp_path):
    over = ["env=alloc64", "env.num_envs=4", "steps=32", "eval.trials=2", "logger=disabled", "progress=off"]
    first = train(cfg_of(over, tmp_path / "a"), overrides=over)
    cfg = cfg_of(over + ["steps=64"], tmp_path / "b")
    cfg.checkpoint_dir = str(tmp_path / "a" / "ckpt")
    second = train(cfg, overrides=over + ["steps=64"])
    assert Path(first["checkpoint"]).is_file() and Path(second["checkpoint"]).parent.name.endswith("_v2")
    cfg = cfg_of(over + ["steps=96", "resume=true"], tmp_path / "c")
    cfg.checkpoint_dir = str(tmp_path / "a" / "ckpt")
    third = train(cfg, overrides=over + ["steps=96", "resume=true"])
    assert third["step"] == 96 and Path(third["checkpoint"]).parent == Path(second["checkpoint"]).parent
    assert Path(first["checkpoint"]).is_file()


def test_resume_true_falls_back_past_a_corrupt_latest(tmp_path, capsys):
    over = ["env=alloc64", "env.num_envs=4", "steps=64", "checkpoint_every=16", "eval.trials=2",
            "logger=disabled", "progress=off"]
    train(cfg_of(over, tmp_path), overrides=over)
    ckdir = run_checkpoint_dir(tmp_path / "run")
    latest = latest_checkpoint(ckdir)
    latest.write_bytes(latest.read_bytes()[:100])
    more = over + ["steps=80", "resume=true"]
    out = train(cfg_of(more, tmp_path), overrides=more)
    assert out["step"] == 80
    err = capsys.readouterr().err
    assert "skipping an unreadable checkpoint" in err and latest.name in err


@pytest.mark.parametrize("path", ["evaluate", "resume_dir", "resume_true"])
def test_a_malicious_checkpoint_runs_nothing_on_any_load_path(path, tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'PWNED'}",))

    run = tmp_path / "run"
    ckdir = tmp_path / "ckpt" / "heuristic_lim2024_s0"
    ckdir.mkdir(parents=True)
    run.mkdir()
    (run / "checkpoint_dir.txt").write_text(str(ckdir) + "\n")
    evil = ckdir / "ckpt_000000000064.pt"
    evil.write_bytes(pickle.dumps({"format_version": 1, "x": Boom()}))
    bad = checkpoint_path(ckdir, 128)  # and a new-format name holding a torch.save pickle
    torch.save({"format_version": 2, "x": Boom()}, bad)
    args = {"evaluate": ["evaluate.py", f"checkpoint={run}"],
            "resume_dir": ["train.py", f"resume={run}"],
            "resume_true": ["train.py", "resume=true", f"checkpoint_dir={tmp_path / 'ckpt'}"]}[path]
    r = subprocess.run([PY, str(ROOT / args[0]), *args[1:], "logger=disabled", "progress=off",
                        f"hydra.run.dir={tmp_path / 'out'}"], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path, env={**os.environ, "WANDB_SILENT": "true"})
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "format 1" in r.stderr and "arbitrary code" in r.stderr and "ckpt_000000000128" in r.stderr
    assert not (tmp_path / "PWNED").exists()


def test_resume_refuses_a_changed_config_and_an_unknown_stored_key(tmp_path):
    over = ["env=alloc64", "env.num_envs=4", "steps=32", "eval.trials=2", "logger=disabled", "progress=off",
            "agent=ppo", "agent.n_steps=4", "agent.batch_size=16"]
    out = train(cfg_of(over, tmp_path), overrides=over)
    path = Path(out["checkpoint"])
    more = over + [f"resume={path}", "agent.lr=0.5", "env.alloc_reward=1.0", "steps=64"]
    with pytest.raises(CheckpointError, match=r"agent.lr: checkpoint 0.0003, this run 0.5; env.alloc_reward"):
        train(cfg_of(more, tmp_path), overrides=more)
    payload = load_checkpoint(path)
    payload["config"]["agent"]["lr_typo"] = 1.0  # re-signed by hand, so the digest holds: the schema catches it
    save_checkpoint(path, {k: v for k, v in payload.items() if k != "format_version"})
    more = over + [f"resume={path}", "steps=64"]
    with pytest.raises(CheckpointError, match="lr_typo"):
        train(cfg_of(more, tmp_path), overrides=more)


def test_evaluate_refuses_an_env_override_of_a_checkpoint_and_train_refuses_checkpoint(tmp_path):
    over = ["env=alloc64", "env.num_envs=4", "steps=32", "eval.trials=2", "logger=disabled", "progress=off"]
    out = train(cfg_of(over, tmp_path), overrides=over)
    r = subprocess.run([PY, str(ROOT / "evaluate.py"), f"checkpoint={out['checkpoint']}", "env.cells=128",
                        "logger=disabled", f"hydra.run.dir={tmp_path / 'ev'}"], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and "env.cells: checkpoint 64, this run 128" in r.stderr, r.stderr[-1500:]
    with pytest.raises(ValueError, match="checkpoint= is read by evaluate.py only"):
        cfg = cfg_of(over, tmp_path / "x")
        cfg.checkpoint = out["checkpoint"]
        train(cfg, overrides=over)


def test_disk_full_while_logging_saves_a_checkpoint_and_leaves_no_torn_line(tmp_path, monkeypatch):
    from dreamalloc.experiment import logging as log

    real_write, calls = os.write, []

    def write(fd, data):
        calls.append(1)
        if len(calls) == 3:  # the third metric line hits a full disk half-way
            real_write(fd, data[: len(data) // 2])
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(log, "_os_write", write)
    over = ["env=alloc64", "env.num_envs=4", "steps=256", "logger.every=16", "eval.trials=2", "logger=disabled",
            "progress=off"]
    with pytest.raises(TrainingError, match="could not append to .*metrics.jsonl.*state is saved in .*ckpt_"):
        train(cfg_of(over, tmp_path), overrides=over)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(x)["step"] for x in lines)
    ck = load_checkpoint(latest_checkpoint(run_checkpoint_dir(tmp_path / "run")))
    assert ck["step"] == 48 and ck["loop"]["metric_lines"] == 2


def test_unwritable_checkpoint_folder_fails_before_training(tmp_path, monkeypatch):
    from dreamalloc.experiment import checkpoint as ckm

    real_open = open

    def denied(file, mode="r", *a, **kw):
        if "w" in mode and ".write-probe" in str(file) and "ckpt" in str(file):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, mode, *a, **kw)

    monkeypatch.setattr(ckm, "open", denied, raising=False)
    over = ["env=alloc64", "env.num_envs=4", "steps=100000", "logger=disabled", "progress=off"]
    with pytest.raises(OSError, match="the checkpoint folder .* is not writable"):
        train(cfg_of(over, tmp_path), overrides=over)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # nothing was trained


def test_nan_parameter_stops_naming_it_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from dreamalloc.agents.ppo import PPOAgent

    real = PPOAgent._learn

    def learn(self, adv, ret, step):
        out = real(self, adv, ret, step)
        if step >= 96:
            with torch.no_grad():
                next(self.net.parameters()).fill_(float("nan"))
        return out

    monkeypatch.setattr(PPOAgent, "_learn", learn)
    over = ["env=alloc64", "env.num_envs=8", "steps=256", "checkpoint_every=64", "eval.trials=2",
            "logger=disabled", "progress=off", "agent=ppo", "agent.n_steps=4", "agent.batch_size=16"]
    with pytest.raises(Exception, match=r"parameter net\..* became NaN .* step 96.*last good checkpoint is .*64"):
        train(cfg_of(over, tmp_path), overrides=over)
    ck = load_checkpoint(latest_checkpoint(run_checkpoint_dir(tmp_path / "run")))
    assert ck["step"] == 64 and all(torch.isfinite(v).all() for v in ck["agent"]["net"].values())


# --- a real NaN: one reward of NaN from the env, through a learning agent's loss ------------------------------
NAN_BASE = ["env=alloc64", "env.num_envs=8", "steps=256", "checkpoint_every=128", "eval.trials=2",
            "logger=disabled", "progress=off"]
NAN_AGENTS = {"ppo": ["agent=ppo", "agent.n_steps=4", "agent.batch_size=16"],
              "dqn": ["agent=dqn", "agent.learning_starts=16", "agent.batch_size=64", "agent.buffer_size=64"]}


def poison_one_reward(monkeypatch, at_call: int) -> None:
    """The ``at_call``-th env step of the run gives heap 0 a reward of NaN (once; evaluations come later)."""
    from dreamalloc.alloc.env import AllocDomain

    real, calls = AllocDomain.step, []

    def step(self, a):
        reward, terminated, truncated, facts = real(self, a)
        calls.append(1)
        if len(calls) == at_call:
            reward = reward.clone()
            reward[0] = float("nan")
        return reward, terminated, truncated, facts

    monkeypatch.setattr(AllocDomain, "step", step)


def finite_net(ck: dict) -> bool:
    net = ck["agent"]["net"] if "net" in ck["agent"] else ck["agent"]["q"]
    return all(bool(torch.isfinite(v).all()) for v in net.values() if v.is_floating_point())


@pytest.mark.parametrize("agent", ["ppo", "dqn"])
def test_nan_loss_stops_before_the_step_and_saves_the_last_good_state(agent, tmp_path, monkeypatch):
    from dreamalloc.agents.onpolicy import OnPolicyAgent

    poison_one_reward(monkeypatch, at_call=6)  # env step 48: PPO's rollout 33..64, DQN's replay from then on
    before, real_update = {}, OnPolicyAgent.update

    def update(self, step):  # the net as each update finds it
        before[step] = {k: v.clone() for k, v in self.net.state_dict().items()}
        return real_update(self, step)

    monkeypatch.setattr(OnPolicyAgent, "update", update)
    over = NAN_BASE + NAN_AGENTS[agent]
    with pytest.raises(NonFiniteLossError, match=rf"agent={agent} (net|q): the loss \(nan\) or the gradient norm "
                       r"\(nan\) is NaN or infinite; the update was not applied; training stopped at step \d+") as e:
        train(cfg_of(over, tmp_path), overrides=over)
    at = int(re.search(r"stopped at step (\d+)", str(e.value)).group(1))
    saved = re.search(r"saved in (\S+)$", str(e.value)).group(1)
    assert at >= 48 and Path(saved).is_file()
    ck = load_checkpoint(saved)
    assert ck["step"] == at and finite_net(ck)
    if agent == "ppo":  # rollouts end at 32, 64, ...: the update at 64 is refused, the one at 32 is kept
        assert at == 64 and ck["agent"]["n_updates"] == 1
        assert not torch.equal(before[64]["pi.0.weight"], before[8]["pi.0.weight"])  # the update at 32 ran
        for k, v in before[64].items():
            assert torch.equal(v, ck["agent"]["net"][k]), k  # not one bit changed by the refused update


@pytest.mark.parametrize("agent", ["ppo", "dqn"])
def test_nan_loss_with_skip_warns_and_training_goes_on(agent, tmp_path, monkeypatch, capsys):
    poison_one_reward(monkeypatch, at_call=6)
    over = NAN_BASE + NAN_AGENTS[agent] + ["on_nonfinite=skip"]
    out = train(cfg_of(over, tmp_path), overrides=over)
    err = capsys.readouterr().err
    skipped = [int(s) for s in re.findall(r"warning: update skipped at step (\d+): agent=\w+ (?:net|q): the loss", err)]
    assert out["step"] == 256 and skipped and min(skipped) >= 48
    ck = load_checkpoint(out["checkpoint"])
    assert finite_net(ck)
    if agent == "ppo":  # 8 rollouts, the one holding the NaN dropped
        assert skipped == [64] and ck["agent"]["n_updates"] == 7
    else:  # the NaN transition stays in the replay: only the rounds that sample it are skipped
        assert ck["agent"]["n_updates"] > 0


def test_disk_full_while_saving_a_checkpoint_mid_training_keeps_the_previous_one(tmp_path, monkeypatch):
    from dreamalloc.experiment import training as tr

    real_save, real_fsync, kept = tr.save_checkpoint, os.fsync, {}

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    def save(path, payload):  # the checkpoint at step 128 meets a full disk while its temp file is flushed
        if payload["step"] == 128:
            monkeypatch.setattr(os, "fsync", full)
        try:
            out = real_save(path, payload)
        finally:
            monkeypatch.setattr(os, "fsync", real_fsync)
        kept[out.name] = out.read_bytes()
        return out

    monkeypatch.setattr(tr, "save_checkpoint", save)
    over = ["env=alloc64", "env.num_envs=8", "steps=256", "checkpoint_every=64", "eval.trials=2", "logger=disabled",
            "progress=off"]
    with pytest.raises(TrainingError) as e:
        train(cfg_of(over, tmp_path), overrides=over)
    msg = str(e.value)
    # (the errno tag is doubled, "[Errno 28] [Errno 28] could not ...": training.py wraps str(e) into a new OSError)
    assert re.search(r"could not write checkpoint \S+ckpt_000000000128\.safetensors: no space left on the device; "
                     r"the previous checkpoint in \S+ is unchanged; training stopped at step 128$", msg), msg
    assert msg.count("no space left") == 1 and "\n" not in msg
    ckdir = run_checkpoint_dir(tmp_path / "run")
    assert sorted(p.name for p in ckdir.iterdir()) == ["ckpt_000000000064.safetensors", "run.json"]  # no temp file
    assert (ckdir / "ckpt_000000000064.safetensors").read_bytes() == kept["ckpt_000000000064.safetensors"]
    assert load_checkpoint(ckdir / "ckpt_000000000064.safetensors")["step"] == 64


def test_unwritable_run_directory_fails_before_training(tmp_path, monkeypatch):
    from dreamalloc.experiment import checkpoint as ckm

    real_open = open

    def denied(file, mode="r", *a, **kw):
        if "w" in mode and ".write-probe" in str(file) and str(file).startswith(str(tmp_path / "run")):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, mode, *a, **kw)

    monkeypatch.setattr(ckm, "open", denied, raising=False)
    over = ["env=alloc64", "env.num_envs=4", "steps=100000", "logger=disabled", "progress=off"]
    with pytest.raises(OSError, match=r"the run directory \S+/run is not writable: permission denied"):
        train(cfg_of(over, tmp_path), overrides=over)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    assert not [p for p in (tmp_path / "ckpt").rglob("*") if p.is_file()]  # no checkpoint either


@pytest.mark.parametrize("max_norm", [0.0, 0.5])
def test_guarded_optimizer_step_changes_nothing_when_non_finite_and_is_the_plain_step_otherwise(max_norm):
    import copy

    from dreamalloc.agents.base import optimizer_step

    torch.manual_seed(0)
    net, x = torch.nn.Linear(3, 2), torch.randn(4, 3)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    start = copy.deepcopy(net.state_dict())
    bad = {"loss (nan)": lambda: net(x).sum() * float("nan"),
           "loss (0) or the gradient norm (nan)": lambda: (net.weight * 0).sqrt().sum()}  # finite loss, NaN grad
    for what, loss in bad.items():
        with pytest.raises(NonFiniteLossError, match=rf"agent=t net: the {re.escape(what)}.*not applied"):
            optimizer_step(opt, net.parameters(), loss(), max_norm, "agent=t net")
        assert all(torch.equal(v, start[k]) for k, v in net.state_dict().items())
        assert opt.state_dict()["state"] == {}  # Adam never stepped: no moments, no step count
    twin = copy.deepcopy(net)
    topt = torch.optim.Adam(twin.parameters(), lr=0.1)
    for _ in range(3):
        norm = optimizer_step(opt, net.parameters(), (net(x) ** 2).sum(), max_norm, "agent=t net")
        topt.zero_grad(set_to_none=True)
        (twin(x) ** 2).sum().backward()
        if max_norm > 0:
            torch.nn.utils.clip_grad_norm_(twin.parameters(), max_norm)
        topt.step()
        assert (float(norm) > 0) == (max_norm > 0)
    assert all(torch.equal(v, twin.state_dict()[k]) for k, v in net.state_dict().items())
    assert not torch.equal(net.weight, start["weight"])


def test_runs_started_together_claim_different_checkpoint_folders(tmp_path):
    """Issue 26.1: a parallel sweep over keys that do not enter the run name (steps, eval.*) must not share a
    folder: the claim is an exclusive create, so of N simultaneous claims each gets its own folder."""
    from concurrent.futures import ThreadPoolExecutor

    from omegaconf import OmegaConf

    from dreamalloc.experiment.training import fresh_checkpoint_dir

    cfg = OmegaConf.create({"checkpoint_dir": str(tmp_path)})
    with ThreadPoolExecutor(8) as pool:
        dirs = list(pool.map(lambda _: fresh_checkpoint_dir(cfg, "ppo_lim2024_s0"), range(8)))
    assert len(set(dirs)) == 8 and all((d / "run.json").exists() for d in dirs)
    assert sorted(d.name for d in dirs)[0] == "ppo_lim2024_s0"


def test_any_other_error_during_training_saves_the_state_and_says_where(tmp_path, monkeypatch):
    """Issue 26.5: not only I/O errors: an exception from anywhere in the loop (here a bug in the agent's update)
    ends in one TrainingError message naming the exception and the checkpoint it saved, which resume continues."""
    from dreamalloc.agents.ppo import PPOAgent
    from dreamalloc.experiment.checkpoint import load_checkpoint

    real = PPOAgent.update

    def update(self, step):
        if step >= 128:
            raise RuntimeError("simulated bug in the update")
        return real(self, step)

    monkeypatch.setattr(PPOAgent, "update", update)
    cfg = cfg_of(["agent=ppo", "env=alloc64", "env.num_envs=8", "steps=512", "eval.trials=2", "logger=disabled",
                  "progress=off", "agent.n_steps=8"], tmp_path)
    with pytest.raises(TrainingError, match=r"RuntimeError: simulated bug in the update; training stopped at step 128 "
                                            r"and its state is saved in .*ckpt_000000000128"):
        train(cfg, overrides=[])
    saved = sorted((tmp_path / "ckpt").rglob("ckpt_*.safetensors"))
    assert [p.name for p in saved] == ["ckpt_000000000128.safetensors"]
    assert load_checkpoint(saved[0])["step"] == 128


def test_runs_started_at_once_never_share_a_run_directory(tmp_path):
    """Hydra names a run's folder by the second it started: two runs started together get the same name. The
    first holds it while it runs, the second writes to NAME_2; a finished run's folder is reused (as before), a
    killed run's stale claim is taken over, and a resumed run always takes its own folder back."""
    from dreamalloc.experiment.training import RUN_CLAIM, claim_run_dir, release_run_dir

    base = tmp_path / "12-00-00_ppo_lim2024_s0"
    a = claim_run_dir(base)
    b = claim_run_dir(base)  # this process holds `a`: a second run goes elsewhere
    assert a == base and b == base.with_name(base.name + "_2")
    assert claim_run_dir(base, resumed=True) == base  # a resumed run writes where it wrote before
    release_run_dir(a)
    assert not (a / RUN_CLAIM).exists() and claim_run_dir(base) == base  # finished: reused
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (b / RUN_CLAIM).write_text(json.dumps({"pid": int(dead.stdout)}) + "\n")  # a run killed without cleaning up
    assert claim_run_dir(b) == b
