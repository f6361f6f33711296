"""Request streams (workloads) and their registry: ``make_stream(name, batch, cells, **params)``."""

from __future__ import annotations

from dreamalloc.alloc.workloads.adversarial import (
    AdversarialStream,
    FfGoodStream,
    NfGoodStream,
    PreholedStream,
    SfGoodStream,
)
from dreamalloc.alloc.workloads.base import ALLOC, FREE, FREE_ALL, Requests, RequestStream, ScriptedStream
from dreamalloc.alloc.workloads.families import PatternStream
from dreamalloc.alloc.workloads.lim import BfGoodStream, MixedStream, RandomStream, WfGoodStream
from dreamalloc.alloc.workloads.params import parse_params
from dreamalloc.alloc.workloads.regimes import RegimeStream
from dreamalloc.alloc.workloads.shift import ShiftStream
from dreamalloc.alloc.workloads.tasks import TaskStream
from dreamalloc.alloc.workloads.traces import TraceStream

STREAMS: dict[str, type[RequestStream]] = {
    "pattern": PatternStream,  # parameterised size / lifetime / phase families (families.py)
    "random": RandomStream,
    "bf-good": BfGoodStream,
    "wf-good": WfGoodStream,
    "mixed": MixedStream,
    "adversarial": AdversarialStream,  # only `target` (first|next|best|worst|second) survives (adversarial.py)
    "ff-good": FfGoodStream,  # adversarial, target="first"
    "nf-good": NfGoodStream,  # adversarial, target="next"
    "sf-good": SfGoodStream,  # adversarial, target="second"
    "preholed": PreholedStream,  # Mandal & Rohil's pre-holed heap, then a list of sizes
    "trace": TraceStream,  # a recorded real-program trace: stream_params={"path": "python_json"}
    "shift": ShiftStream,  # in-episode switches between tasks: stream_params={"tasks": [...], "at": 64}
    "tasks": TaskStream,  # a distribution over the others: stream_params={"tasks": [{name, stream, params}]}
    "regimes": RegimeStream,  # one size law, lifetime regimes switching at hidden points (regimes.py)
}
ALIASES = {"dist": "random", "ff-bad": "bf-good", "bf_good": "bf-good", "wf_good": "wf-good", "ff_good": "ff-good",
           "nf_good": "nf-good", "sf_good": "sf-good"}


def stream_names() -> list[str]:
    return sorted(STREAMS)


def make_stream(name: str, batch: int, cells: int, device="cpu", **params) -> RequestStream:
    """Build a registered stream; unknown names and parameters fail with the list of valid ones."""
    key = ALIASES.get(name, name)
    if key not in STREAMS:
        raise ValueError(f"unknown request stream {name!r}; choose one of {', '.join(stream_names())} "
                         f"(aliases: {', '.join(sorted(ALIASES))})")
    cls = STREAMS[key]
    if cls.PARAMS is not None:  # typed: a value of the wrong type or an unknown name fails here, named
        params = parse_params(name, cls.PARAMS, params)
    try:
        return cls(batch, cells, device, **params)
    except TypeError as e:
        raise ValueError(f"bad parameters {sorted(params)} for stream {name!r}: {e}") from None


def stream_tasks(name: str, params: dict, in_episode: bool = False) -> list[tuple[str, dict]] | None:
    """The tasks a stream switches among, each as its own (stream, params), or None (``RequestStream.tasks_of``);
    with ``in_episode`` only for streams that switch inside an episode. None too for an unknown name
    (``make_stream`` reports that)."""
    cls = STREAMS.get(ALIASES.get(name, name))
    if cls is None or (in_episode and not cls.SWITCHES_IN_EPISODE):
        return None
    return cls.tasks_of(dict(params or {}))


def register_stream(name: str, cls: type[RequestStream]) -> None:
    """Add a stream family under a name (later workload families use this). The class must declare its typed
    parameter schema ``PARAMS`` (a dict of name -> ``workloads.params.Spec``; ``{}`` for none)."""
    if not isinstance(getattr(cls, "PARAMS", None), dict):
        raise ValueError(f"stream class {cls.__name__} declares no PARAMS schema: give it PARAMS = {{name: Spec}} "
                         "(see dreamalloc/alloc/workloads/params.py)")
    STREAMS[name] = cls


__all__ = ["ALLOC", "FREE", "FREE_ALL", "STREAMS", "Requests", "RequestStream", "ScriptedStream",
           "TaskStream", "make_stream", "register_stream", "stream_names", "stream_tasks"]
