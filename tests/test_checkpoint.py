"""Atomic checkpoints: round trip, crash safety, clear errors, latest / prune."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from dreamalloc.experiment.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)


def payload() -> dict:
    net = torch.nn.Linear(4, 3)
    return {
        "model": net.state_dict(),
        # shaped like an Adam state_dict (building a real optimiser imports torch._dynamo: seconds)
        "optim": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(3, 4)}},
                  "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0, 1]}]},
        "step": 1200,
        "counters": {"episodes": 7, "updates": [1, 2, 3]},
        "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
        "meta": {"agent": "dqn", "obs_dim": 257, "n_actions": 3, "obs_shape": (257,)},
    }


def test_round_trip_keeps_tensors_dicts_and_rng_states(tmp_path):
    data = payload()
    path = save_checkpoint(tmp_path / "sub" / "dir" / "c.pt", data)  # parent dirs are created
    assert path == tmp_path / "sub" / "dir" / "c.pt" and path.is_file()
    assert "format_version" not in data  # the caller's dict is not modified
    back = load_checkpoint(path)
    assert back["format_version"] == FORMAT_VERSION
    assert back["step"] == 1200 and back["counters"] == data["counters"] and back["meta"] == data["meta"]
    for k, v in data["model"].items():
        assert torch.equal(back["model"][k], v)
    assert back["optim"]["param_groups"] == data["optim"]["param_groups"]
    assert torch.equal(back["optim"]["state"][0]["exp_avg"], data["optim"]["state"][0]["exp_avg"])
    assert back["rng"]["python"] == data["rng"]["python"]
    assert torch.equal(back["rng"]["torch"], data["rng"]["torch"])
    np_state, np_back = data["rng"]["numpy"], back["rng"]["numpy"]
    assert np_back[0] == np_state[0] and np.array_equal(np_back[1], np_state[1]) and np_back[2:] == np_state[2:]
    assert list(tmp_path.joinpath("sub", "dir").iterdir()) == [path]  # no temp file left


def test_overwrite_replaces_old_checkpoint(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"step": 1})
    save_checkpoint(path, {"step": 2})
    assert load_checkpoint(path)["step"] == 2


def test_crash_during_save_keeps_old_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "c.pt", {"step": 1, "w": torch.arange(5)})
    before = path.read_bytes()

    def crashing_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")  # partial data, then the process "dies"
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 2})
    assert path.read_bytes() == before
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_keyboard_interrupt_during_save_removes_temp_file(tmp_path, monkeypatch):
    def interrupted(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "c.pt", {"step": 2})
    assert list(tmp_path.iterdir()) == []


def test_truncated_file_is_a_clear_error(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt_000000000010.pt", payload())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="ckpt_000000000010.pt could not be read") as err:
        load_checkpoint(path)
    assert "truncated" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_garbage_file_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("hello, not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.pt could not be read"):
        load_checkpoint(path)


def test_torch_file_without_format_version_is_rejected(tmp_path):
    path = tmp_path / "raw.pt"
    torch.save({"model": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="raw.pt is not a dreamalloc checkpoint"):
        load_checkpoint(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="not a dreamalloc checkpoint"):
        load_checkpoint(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)


def test_newer_format_version_is_rejected(tmp_path):
    path = tmp_path / "new.pt"
    torch.save({"format_version": FORMAT_VERSION + 1}, path)
    with pytest.raises(CheckpointError, match=f"format version {FORMAT_VERSION + 1}.*upgrade dreamalloc"):
        load_checkpoint(path)


def test_matching_meta_loads(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", payload())
    back = load_checkpoint(path, expected={"agent": "dqn", "obs_dim": 257, "n_actions": 3, "obs_shape": [257]})
    assert back["meta"]["agent"] == "dqn"


def test_mismatched_meta_names_key_both_values_and_fix(tmp_path):
    data = payload()
    data["meta"]["agent"] = "ppo"
    path = save_checkpoint(tmp_path / "ckpt_000000000005.pt", data)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, expected={"agent": "dqn", "obs_dim": 257, "n_actions": 4})
    msg = str(err.value)
    assert "ckpt_000000000005.pt" in msg
    assert "was written by agent 'ppo' but this run uses agent 'dqn'" in msg
    assert "n_actions 3 but this run uses n_actions 4" in msg
    assert "obs_dim" not in msg  # only the keys that differ
    assert "matches the checkpoint, or a different checkpoint" in msg


def test_meta_missing_key_or_section(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", {"meta": {"agent": "dqn"}})
    with pytest.raises(CheckpointError, match="does not record 'obs_dim'"):
        load_checkpoint(path, expected={"agent": "dqn", "obs_dim": 257})
    path = save_checkpoint(tmp_path / "d.pt", {"step": 3})
    with pytest.raises(CheckpointError, match="has no 'meta' section"):
        load_checkpoint(path, expected={"agent": "dqn"})
    assert load_checkpoint(path)["step"] == 3  # without expectations it loads


def test_checkpoint_path_format(tmp_path):
    assert checkpoint_path(tmp_path, 42) == tmp_path / "ckpt_000000000042.pt"
    with pytest.raises(ValueError):
        checkpoint_path(tmp_path, -1)


def test_latest_uses_step_number_and_ignores_other_files(tmp_path):
    assert latest_checkpoint(tmp_path / "absent") is None
    assert latest_checkpoint(tmp_path) is None
    for step in (5, 100, 20):
        save_checkpoint(checkpoint_path(tmp_path, step), {"step": step})
    # an unpadded name with a bigger number still sorts by its number, not lexically
    save_checkpoint(tmp_path / "ckpt_99.pt", {"step": 99})
    (tmp_path / "ckpt_000000999999.tmp-1234").write_bytes(b"crashed writer")
    (tmp_path / "ckpt_best.pt").write_bytes(b"not numbered")
    (tmp_path / "other.pt").write_bytes(b"x")
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 100)
    save_checkpoint(checkpoint_path(tmp_path, 1000), {"step": 1000})
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 1000)


def test_prune_keeps_newest_by_step(tmp_path):
    for step in (1, 30, 200, 4000, 50):
        save_checkpoint(checkpoint_path(tmp_path, step), {"step": step})
    (tmp_path / "notes.txt").write_text("keep me")
    prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_000000000200.pt", "ckpt_000000004000.pt",
                                                          "notes.txt"]
    prune_checkpoints(tmp_path, keep=5)  # keeping more than exist deletes nothing
    assert len(list(tmp_path.glob("ckpt_*.pt"))) == 2
    prune_checkpoints(tmp_path, keep=0)  # 0: keep every checkpoint (never the trained agent deleted)
    assert len(list(tmp_path.glob("ckpt_*.pt"))) == 2
    with pytest.raises(ValueError):
        prune_checkpoints(tmp_path, keep=-1)
