"""Checkpoints: a safe format (no pickle), round trip, digest, crash safety, clear errors, latest / prune."""

from __future__ import annotations

import json
import os
import pickle
import random
import struct

import numpy as np
import pytest
import torch

from dreamalloc.experiment import checkpoint as ck
from dreamalloc.experiment.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    checkpoint_path,
    convert_legacy,
    latest_checkpoint,
    load_checkpoint,
    newest_readable,
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
        "counters": {"episodes": 7, "updates": [1, 2, 3], "best": float("-inf"), "nan": float("nan")},
        "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
                "generator": np.random.default_rng(3).bit_generator.state},
        "meta": {"agent": "dqn", "obs_dim": 257, "n_actions": 3, "obs_shape": (257,)},
        "mixed": {"bool": torch.tensor([True, False]), "u32": np.arange(5, dtype=np.uint32),
                  "f16": torch.ones(2, dtype=torch.float16), "scalar": np.float32(1.5), "dtype": torch.int16,
                  "empty": torch.zeros(0, 3), "view": torch.arange(10)[2:8:2], "__dunder__": 1, 5: "int key",
                  (1, 2): "tuple key"},
    }


def test_round_trip_keeps_tensors_dicts_and_rng_states(tmp_path):
    data = payload()
    path = save_checkpoint(tmp_path / "sub" / "dir" / "c.safetensors", data)  # parent dirs are created
    assert path.is_file()
    assert "format_version" not in data  # the caller's dict is not modified
    back = load_checkpoint(path)
    assert back["format_version"] == FORMAT_VERSION == 2
    assert back["step"] == 1200 and back["meta"] == data["meta"]
    assert back["counters"]["updates"] == [1, 2, 3] and back["counters"]["best"] == float("-inf")
    assert np.isnan(back["counters"]["nan"])
    for k, v in data["model"].items():
        assert torch.equal(back["model"][k], v)
    assert back["optim"]["param_groups"] == data["optim"]["param_groups"]  # tuples stay tuples
    assert torch.equal(back["optim"]["state"][0]["exp_avg"], data["optim"]["state"][0]["exp_avg"])
    assert back["rng"]["python"] == data["rng"]["python"]
    assert torch.equal(back["rng"]["torch"], data["rng"]["torch"])
    assert back["rng"]["generator"] == data["rng"]["generator"]
    np_state, np_back = data["rng"]["numpy"], back["rng"]["numpy"]
    assert np_back[0] == np_state[0] and np.array_equal(np_back[1], np_state[1]) and np_back[2:] == np_state[2:]
    assert np_back[1].dtype == np_state[1].dtype
    np.random.set_state(np_back)  # usable as is
    m = back["mixed"]
    assert m["bool"].dtype == torch.bool and m["u32"].dtype == np.uint32 and m["f16"].dtype == torch.float16
    assert type(m["scalar"]) is np.float32 and m["dtype"] is torch.int16 and m["empty"].shape == (0, 3)
    assert m["view"].tolist() == [2, 4, 6] and m["__dunder__"] == 1 and m[5] == "int key"
    assert m[(1, 2)] == "tuple key"
    assert list(tmp_path.joinpath("sub", "dir").iterdir()) == [path]  # no temp file left


def test_file_is_plain_safetensors_with_a_json_document(tmp_path):
    from safetensors import safe_open

    path = save_checkpoint(tmp_path / "c.safetensors", {"w": torch.arange(3.0), "step": 4})
    with safe_open(str(path), "pt") as f:  # any safetensors reader opens it
        meta = f.metadata()
        assert torch.equal(f.get_tensor("t0"), torch.arange(3.0))
    doc = json.loads(meta["dreamalloc"])
    assert doc["format_version"] == 2 and doc["payload"]["step"] == 4 and len(meta["digest"]) == 64


def test_unsupported_objects_are_refused_naming_where(tmp_path):
    with pytest.raises(TypeError, match=r"payload\.agent\.fn has type function"):
        save_checkpoint(tmp_path / "c.safetensors", {"agent": {"fn": lambda: 0}})
    with pytest.raises(TypeError, match="numpy array of Python objects"):
        save_checkpoint(tmp_path / "c.safetensors", {"a": np.array([object()])})
    assert list(tmp_path.iterdir()) == []


class Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize("writer", ["torch_zip", "bare_pickle"])
def test_malicious_pickle_is_never_run(tmp_path, writer, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "ckpt_000000000100.pt"
    if writer == "torch_zip":
        torch.save({"format_version": 1, "x": Boom()}, path)
    else:
        path.write_bytes(pickle.dumps({"format_version": 1, "x": Boom()}))
    with pytest.raises(CheckpointError, match="ckpt_000000000100.pt is of format 1.*arbitrary code.*--trust"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="format 1"):
        newest_readable(tmp_path)
    with pytest.raises(CheckpointError, match="refusing to read"):
        convert_legacy(path)
    assert not (tmp_path / "PWNED").exists()


def test_convert_legacy_with_trust(tmp_path):
    old = tmp_path / "ckpt_000000000007.pt"
    torch.save({"format_version": 1, "step": 7, "w": torch.ones(2), "rng": np.random.get_state()}, old)
    new = convert_legacy(old, trust=True)
    assert new == checkpoint_path(tmp_path, 7)
    back = load_checkpoint(new)
    assert back["step"] == 7 and torch.equal(back["w"], torch.ones(2))


def test_edited_file_fails_its_digest(tmp_path):
    path = save_checkpoint(tmp_path / "c.safetensors", {"config": {"agent": {"lr": 0.001}}, "w": torch.zeros(4)})
    data = bytearray(path.read_bytes())
    i = data.index(b"0.001")
    data[i:i + 5] = b"0.002"  # a hand-edited learning rate
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="c.safetensors fails its content digest"):
        load_checkpoint(path)
    data = bytearray(save_checkpoint(path, {"w": torch.zeros(4)}).read_bytes())
    data[-1] ^= 0x40  # one flipped bit in the tensor bytes
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="digest"):
        load_checkpoint(path)


def test_crash_during_save_keeps_old_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "c.safetensors", {"step": 1, "w": torch.arange(5)})
    before = path.read_bytes()
    real_fsync = os.fsync

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="no space left.*previous checkpoint .* is unchanged"):
        save_checkpoint(path, {"step": 2})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert path.read_bytes() == before
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]


def test_read_only_folder_is_a_clear_error(tmp_path, monkeypatch):
    real_open = open

    def denied(file, mode="r", *a, **kw):
        if "w" in mode and str(file).startswith(str(tmp_path)):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, mode, *a, **kw)

    monkeypatch.setattr("builtins.open", denied)
    with pytest.raises(OSError, match="permission denied"):
        save_checkpoint(tmp_path / "c.safetensors", {"step": 2})
    with pytest.raises(OSError, match="the checkpoint folder .* is not writable.*before training starts"):
        ck.check_writable(tmp_path / "sub", "the checkpoint folder")
    monkeypatch.setattr("builtins.open", real_open)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []


def test_keyboard_interrupt_during_save_removes_temp_file(tmp_path, monkeypatch):
    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "c.safetensors", {"step": 2})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage,match", [
    (lambda d: d[: len(d) // 2], "truncated|corrupt"),
    (lambda d: b"", "truncated or empty"),
    (lambda d: d[:5], "truncated or empty"),
    (lambda d: b"hello, not a checkpoint at all", "truncated or not a safetensors file|not a dreamalloc"),
    (lambda d: struct.pack("<Q", 7) + b'{"a":1}', "no dreamalloc document"),
    (lambda d: struct.pack("<Q", 5) + b"\xff\xfe{{{", "header is not JSON"),
    # a header length whose low byte is 0x80 (as a pickle's first byte), cut short: truncated, not "a pickle"
    (lambda d: struct.pack("<Q", 640) + b'{"__metadata__": {"dreamalloc"', "truncated"),
])
def test_damaged_files_are_clear_errors(tmp_path, damage, match):
    path = save_checkpoint(tmp_path / "ckpt_000000000010.safetensors", payload())
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=match) as err:
        load_checkpoint(path)
    assert "ckpt_000000000010.safetensors" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_other_safetensors_file_is_rejected(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="model.safetensors is not a dreamalloc checkpoint"):
        load_checkpoint(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(CheckpointError, match="nope.safetensors does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)


def test_newer_format_version_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setattr(ck, "FORMAT_VERSION", FORMAT_VERSION + 1)
    path = save_checkpoint(tmp_path / "new.safetensors", {"step": 1})
    monkeypatch.setattr(ck, "FORMAT_VERSION", FORMAT_VERSION)
    with pytest.raises(CheckpointError, match=f"format version {FORMAT_VERSION + 1}.*upgrade dreamalloc"):
        load_checkpoint(path)


def test_matching_meta_loads(tmp_path):
    path = save_checkpoint(tmp_path / "c.safetensors", payload())
    back = load_checkpoint(path, expected={"agent": "dqn", "obs_dim": 257, "n_actions": 3, "obs_shape": [257]})
    assert back["meta"]["agent"] == "dqn"


def test_mismatched_meta_names_key_both_values_and_fix(tmp_path):
    data = payload()
    data["meta"]["agent"] = "ppo"
    path = save_checkpoint(tmp_path / "ckpt_000000000005.safetensors", data)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, expected={"agent": "dqn", "obs_dim": 257, "n_actions": 4})
    msg = str(err.value)
    assert "ckpt_000000000005.safetensors" in msg
    assert "was written by agent 'ppo' but this run uses agent 'dqn'" in msg
    assert "n_actions 3 but this run uses n_actions 4" in msg
    assert "obs_dim" not in msg  # only the keys that differ
    assert "matches the checkpoint, or a different checkpoint" in msg


def test_meta_missing_key_or_section(tmp_path):
    path = save_checkpoint(tmp_path / "c.safetensors", {"meta": {"agent": "dqn"}})
    with pytest.raises(CheckpointError, match="does not record 'obs_dim'"):
        load_checkpoint(path, expected={"agent": "dqn", "obs_dim": 257})
    path = save_checkpoint(tmp_path / "d.safetensors", {"step": 3})
    with pytest.raises(CheckpointError, match="has no 'meta' section"):
        load_checkpoint(path, expected={"agent": "dqn"})
    assert load_checkpoint(path)["step"] == 3  # without expectations it loads


def test_checkpoint_path_format(tmp_path):
    assert checkpoint_path(tmp_path, 42) == tmp_path / "ckpt_000000000042.safetensors"
    with pytest.raises(ValueError):
        checkpoint_path(tmp_path, -1)


def test_latest_uses_step_number_and_ignores_other_files(tmp_path):
    assert latest_checkpoint(tmp_path / "absent") is None
    assert latest_checkpoint(tmp_path) is None
    for step in (5, 100, 20):
        save_checkpoint(checkpoint_path(tmp_path, step), {"step": step})
    # an unpadded name with a bigger number still sorts by its number, not lexically
    save_checkpoint(tmp_path / "ckpt_99.safetensors", {"step": 99})
    (tmp_path / ".ckpt_000000999999.safetensors.tmp-1234").write_bytes(b"crashed writer")
    (tmp_path / "ckpt_best.safetensors").write_bytes(b"not numbered")
    (tmp_path / "other.safetensors").write_bytes(b"x")
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 100)
    save_checkpoint(checkpoint_path(tmp_path, 1000), {"step": 1000})
    assert latest_checkpoint(tmp_path) == checkpoint_path(tmp_path, 1000)


def test_newest_readable_falls_back_past_a_corrupt_latest(tmp_path):
    for step in (10, 20, 30):
        save_checkpoint(checkpoint_path(tmp_path, step), {"step": step})
    checkpoint_path(tmp_path, 30).write_bytes(b"\x00" * 3)
    said = []
    path, back = newest_readable(tmp_path, warn=said.append)
    assert path == checkpoint_path(tmp_path, 20) and back["step"] == 20
    assert len(said) == 1 and "ckpt_000000000030.safetensors" in said[0] and "using ckpt_000000000020" in said[0]
    assert newest_readable(tmp_path / "empty") is None
    for step in (10, 20):
        checkpoint_path(tmp_path, step).write_bytes(b"")
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        newest_readable(tmp_path)


def test_prune_keeps_newest_by_step_and_never_the_protected_file(tmp_path):
    for step in (1, 30, 200, 4000, 50):
        save_checkpoint(checkpoint_path(tmp_path, step), {"step": step})
    (tmp_path / "notes.txt").write_text("keep me")
    prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_000000000200.safetensors",
                                                          "ckpt_000000004000.safetensors", "notes.txt"]
    prune_checkpoints(tmp_path, keep=5)  # keeping more than exist deletes nothing
    prune_checkpoints(tmp_path, keep=0)  # 0 keeps every checkpoint
    assert len(list(tmp_path.glob("ckpt_*"))) == 2
    # only the candidates are considered, and the protected one survives even when it is the oldest
    other = save_checkpoint(checkpoint_path(tmp_path, 9), {"step": 9})
    gone = prune_checkpoints(tmp_path, keep=1, candidates=[checkpoint_path(tmp_path, 200), other], protect=other)
    assert gone == [checkpoint_path(tmp_path, 200)] and other.exists() and checkpoint_path(tmp_path, 4000).exists()
    with pytest.raises(ValueError, match="keep must be >= 0"):
        prune_checkpoints(tmp_path, keep=-1)
