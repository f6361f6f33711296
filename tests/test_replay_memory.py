"""Replay memory follows the data: Dreamer's sequence replay grows with what it holds (and samples exactly as a
replay allocated at full capacity does), stores its latents compactly and resumes bit for bit."""

from __future__ import annotations

import pytest
import torch
from test_dreamer import TINY, Chain, drive

from dreamalloc.agents import make_agent
from dreamalloc.agents.dreamer.replay import SequenceReplay


def fill(rp: SequenceReplay, records: int, seed: int = 0) -> None:
    """``records`` rounds of adds: every env most rounds, a random subset (episode ends) in others."""
    g = torch.Generator().manual_seed(seed)
    B, d = rp.B, rp.dims
    for i in range(records):
        rows = torch.arange(B) if i % 3 else torch.randperm(B, generator=g)[: max(1, B // 2)].sort().values
        n = rows.numel()
        rp.add(rows, torch.randn(n, d["obs"], generator=g), torch.randint(0, 3, (n,), generator=g),
               torch.randn(n, generator=g), torch.rand(n, generator=g) < 0.1, torch.rand(n, generator=g) < 0.1,
               torch.rand(n, generator=g) < 0.1, torch.rand(n, d["n_actions"], generator=g) < 0.8,
               torch.randn(n, d["deter"], generator=g), torch.randint(0, 4, (n, d["stoch"]), generator=g))


def new(capacity: int, initial: int, **kw) -> SequenceReplay:
    return SequenceReplay(3, capacity, 5, 3, deter=6, stoch=2, device="cpu", masked=True, classes=4,
                          initial=initial, **kw)


def sample_all(rp: SequenceReplay, seed: int) -> dict:
    return rp.sample(32, 4, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("records", [6, 40, 150])  # short of, around, and past the capacity (wrapped)
def test_growing_replay_samples_exactly_like_a_full_one(records):
    full, grown = new(64, 64), new(64, 2)
    fill(full, records)
    fill(grown, records)
    most = int(grown.written.max())
    assert grown.rows == min(64, max(2, 1 << (most - 1).bit_length()))  # doubled as it filled
    assert torch.equal(full.written, grown.written)
    for seed in range(3):
        a, b = sample_all(full, seed), sample_all(grown, seed)
        assert list(a) == list(b)
        for k in a:
            assert torch.equal(a[k], b[k]), k
        deter, stoch = torch.randn(32, 4, 6), torch.nn.functional.one_hot(torch.randint(0, 4, (32, 4, 2)), 4)
        full.write_latents(a, deter, stoch)
        grown.write_latents(b, deter, stoch)
    assert torch.equal(full.deter[:, : grown.rows], grown.deter) and torch.equal(full.stoch[:, : grown.rows],
                                                                                 grown.stoch)


def test_a_short_run_holds_what_it_wrote_not_the_capacity():
    rp = SequenceReplay(16, 1_000_000 // 16, 40, 3, deter=2048, stoch=32, device="cpu", classes=32)
    assert rp.rows == 1024 and rp.nbytes() < 16 * 1024 * (40 * 4 + 2048 * 4 + 32 + 32)
    full_bytes = 16 * (1_000_000 // 16) * (40 * 4 + 8 + 4 + 3 + 2048 * 4 + 32)
    assert rp.nbytes() * 50 < full_bytes
    fill(rp, 1500)
    assert 1024 < int(rp.written.max()) <= 2048 and rp.rows == 2048


def test_compact_latents_store_small_and_sample_in_the_model_dtypes():
    rp = new(64, 8, latent_dtype="bfloat16")
    assert rp.deter.dtype == torch.bfloat16 and rp.stoch.dtype == torch.uint8
    fill(rp, 20)
    s = sample_all(rp, 0)
    assert s["deter"].dtype == torch.float32 and s["stoch"].dtype == torch.long
    ref = new(64, 8)
    fill(ref, 20)
    assert torch.equal(s["deter"], sample_all(ref, 0)["deter"].bfloat16().float())  # rounded once, on write
    with pytest.raises(ValueError, match="latent dtype must be one of float32, bfloat16, float16"):
        new(64, 8, latent_dtype="int8")


@pytest.mark.parametrize("latents", ["float32", "bfloat16"])
def test_replay_state_resumes_bit_for_bit(latents):
    a = new(64, 2, latent_dtype=latents)
    fill(a, 30)
    state = a.state_dict()
    assert state["capacity"] == 64 and state["deter"].dtype == a.deter.dtype and state["obs"].shape[1] == a.rows
    b = new(64, 2, latent_dtype=latents)
    b.load_state_dict(state)
    for rp in (a, b):
        fill(rp, 60, seed=1)  # grows further, then wraps
    for k in SequenceReplay.KEYS:
        assert torch.equal(getattr(a, k), getattr(b, k)), k
    assert torch.equal(sample_all(a, 3)["deter"], sample_all(b, 3)["deter"])


def test_replay_loads_a_full_depth_state_written_before_growth():
    """A state from before growable rings: no ``capacity``, full-depth rings, float32 / int64 latents."""
    old = new(16, 16)
    fill(old, 10)
    state = {k: v for k, v in old.state_dict().items() if k != "capacity"}
    state["stoch"] = state["stoch"].long()
    rp = new(16, 2, latent_dtype="bfloat16")
    rp.load_state_dict(state)
    assert rp.rows == 16 and rp.C == 16 and rp.stoch.dtype == torch.uint8
    assert torch.equal(rp.stoch.long(), state["stoch"]) and torch.equal(rp.obs, state["obs"])


def test_dreamer_with_compact_latents_resumes_exactly():
    torch.manual_seed(0)
    a = make_agent("dreamer", 3, 3, None, "cpu", **{**TINY, "replay_latents": "bfloat16"})
    drive(a, Chain(B=2), 40)
    assert a.n_updates > 0 and a.replay.deter.dtype == torch.bfloat16
    b = make_agent("dreamer", 3, 3, None, "cpu", **{**TINY, "replay_latents": "bfloat16"})
    b.load_state_dict(a.state_dict(include_replay=True))
    for k in SequenceReplay.KEYS:
        x, y = getattr(a.replay, k), getattr(b.replay, k)
        assert (x is None and y is None) or torch.equal(x, y), k
    torch.manual_seed(1)
    ma = a.train_step()
    torch.manual_seed(1)
    mb = b.train_step()
    assert ma == mb
