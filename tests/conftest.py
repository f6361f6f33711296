"""Shared pytest set-up.

The suite runs torch on one intra-op thread (and so do the CLI processes the tests start, through
OMP_NUM_THREADS): on a 2-core machine the tests' many tiny tensor ops are faster that way, and with two
threads each op that opens a parallel region can stall for a scheduler slice whenever the other core is
busy (see docs/bench_env.md).
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session", autouse=True)
def single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
