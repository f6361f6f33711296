"""Shared pytest fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def single_thread():
    """Run a module's many tiny tensor ops on one intra-op thread.

    On a small machine, torch's CPU thread pool makes some tiny ops slow (repeat_interleave without
    ``output_size`` took 1-5 ms per call with 2 threads, 10 us with 1), which dominates property tests.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
