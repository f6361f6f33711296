"""Seeding, RNG snapshots and device selection."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from dreamalloc.experiment.seeding import rng_preserved, rng_state, seed_everything, select_device, set_rng_state


@pytest.fixture(autouse=True)
def restore_torch_flags():
    """seed_everything changes process-wide torch flags; give other tests the state they started with."""
    det, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn_det, bench = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    state = rng_state()
    yield
    torch.use_deterministic_algorithms(det, warn_only=warn_only)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_det, bench
    set_rng_state(state)


def draws() -> tuple:
    return random.random(), random.randrange(10**9), np.random.rand(4).tolist(), torch.rand(4).tolist()


def test_same_seed_same_draws_from_all_generators():
    seed_everything(123)
    first = draws()
    seed_everything(123)
    assert draws() == first
    seed_everything(124)
    other = draws()
    # each generator individually changes with the seed
    assert all(a != b for a, b in zip(first, other, strict=True))


def test_deterministic_flag_sets_and_clears_torch_determinism(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    seed_everything(0, deterministic_torch=True)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    seed_everything(0, deterministic_torch=False)
    assert not torch.are_deterministic_algorithms_enabled()


def test_existing_cublas_config_is_kept(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    seed_everything(0)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "3", True])
def test_bad_seed_is_rejected(seed):
    with pytest.raises(ValueError, match="seed must be an integer"):
        seed_everything(seed)


def test_rng_state_round_trip_reproduces_next_draws():
    seed_everything(7)
    draws()  # advance the generators somewhere arbitrary
    state = rng_state()
    expected = draws()
    draws()
    set_rng_state(state)
    assert draws() == expected


def test_rng_state_survives_a_checkpoint(tmp_path):
    from dreamalloc.experiment.checkpoint import load_checkpoint, save_checkpoint

    seed_everything(11)
    save_checkpoint(tmp_path / "c.pt", {"rng": rng_state()})
    expected = draws()
    seed_everything(99)
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert draws() == expected


def test_set_rng_state_names_missing_keys():
    with pytest.raises(ValueError, match="missing numpy, torch"):
        set_rng_state({"python": random.getstate()})


def test_gpu_snapshot_on_cpu_machine_warns_but_restores_cpu_draws(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    state = rng_state()
    assert state["cuda"] is None
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8)]  # as if written on a 1-GPU machine
    expected = draws()
    with pytest.warns(UserWarning, match="1 CUDA generator"):
        set_rng_state(state)
    assert draws() == expected


def test_select_device_auto_and_cpu(monkeypatch):
    assert select_device("cpu") == torch.device("cpu")
    assert select_device(" CPU ") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")


def test_select_device_auto_picks_cuda_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device("auto") == torch.device("cuda")


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:1"])
def test_select_device_cuda_without_gpu_says_what_to_do(monkeypatch, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError) as err:
        select_device(name)
    assert str(err.value) == (f"device={name} requested but no CUDA device is available; "
                              "use device=cpu or device=auto")


def test_select_device_cuda_index_out_of_range(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert select_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match=r"only 1 CUDA device\(s\)"):
        select_device("cuda:1")


@pytest.mark.parametrize("name", ["tpu", "gpu", "cuda0", "cuda:x", ""])
def test_select_device_unknown_name_lists_choices(name):
    with pytest.raises(ValueError, match=r"auto\|cpu\|cuda"):
        select_device(name)


def test_rng_preserved_puts_every_generator_back_even_after_an_error():
    """After the block (which draws from every generator, then raises) the next draws are those without it."""
    seed_everything(7)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    seed_everything(7)
    try:
        with rng_preserved():
            random.random(), np.random.rand(3), torch.rand(5)
            raise RuntimeError("scoring failed")
    except RuntimeError:
        pass
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected
