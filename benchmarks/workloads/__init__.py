"""Benchmark workloads, one module per concept (future, executor, wait, aio).

A workload is a function ``run(impl, n)`` that does ``n`` operations with
one implementation and returns its measurement: seconds for the n
operations (kind "time"), or bytes per object (kind "bytes").  ``impl`` is
an Impl: ``impl.name`` is "stdlib", "cfutures" or a peer's name, and
``impl.mod`` the module that provides Future, ThreadPoolExecutor, wait,
as_completed (concurrent.futures or cfutures; a peer may provide less).
The runner in benchmarks/run.py calls each impl alternately, repeats, and
reports medians and the ratio cfutures / stdlib.
"""
from dataclasses import dataclass, field
from typing import Callable, Optional, Tuple


@dataclass(frozen=True)
class Impl:
    name: str
    mod: object


@dataclass(frozen=True)
class Workload:
    name: str                  # e.g. "future: create+set_result+result"
    run: Callable[[Impl, int], float]
    n: int                     # operations per measurement
    kind: str = "time"         # "time" (seconds for n ops) or "bytes" (per object)
    goal: Optional[str] = None  # the goal, e.g. ">= 13x" or "<= 1/12"
    goal_ratio: Optional[float] = None  # cfutures/stdlib must be <= this
    peers: Tuple[str, ...] = ("stdlib", "cfutures")
    quick_n: Optional[int] = None  # n for `python -m cfutures` (a quick run)
    tags: Tuple[str, ...] = field(default=())


def all_workloads():
    """Every workload of every concept module, in a stable order."""
    from . import future
    found = list(future.WORKLOADS)
    for name in ("executor", "wait", "aio"):
        try:
            mod = __import__(f"{__name__}.{name}", fromlist=["WORKLOADS"])
        except ImportError:
            continue
        found.extend(mod.WORKLOADS)
    return found
