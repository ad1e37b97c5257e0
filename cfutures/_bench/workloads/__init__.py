"""Benchmark workloads, one module per concept (future, executor, wait, aio,
libraries, free_threaded, instructions).

A workload is a function ``run(impl, n)`` that does ``n`` operations with
one implementation and returns its measurement: seconds for the n
operations (kind "time"), bytes per object (kind "bytes"), or
instructions per operation (kind "instructions", counted by callgrind:
the same on every run, so it is measured once).  ``impl`` is
an Impl: ``impl.name`` is "stdlib", "cfutures" or a peer's name, and
``impl.mod`` the module that provides Future, ThreadPoolExecutor, wait,
as_completed (concurrent.futures or cfutures; a peer may provide less).
The runner (cfutures/_bench/run.py) calls each impl alternately, repeats, and
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
    # Modules every peer needs (uvloop): without one the runner skips the
    # workload, as it leaves out a peer that is not installed.
    needs: Tuple[str, ...] = ()
    # Anything else it needs (a program such as valgrind, a cfutures
    # function not in this build): returns what is missing, in a word or
    # two, or None; the runner then skips the workload and names it.
    unavailable: Optional[Callable[[], Optional[str]]] = None
    # The peer the goal is measured against; None: "stdlib" when it is a
    # peer (an instruction count's goal is against its floor, "queue").
    baseline: Optional[str] = None
    tags: Tuple[str, ...] = field(default=())


def all_workloads(errors=None):
    """Every workload of every concept module, in a stable order.

    A concept module that has not landed yet is skipped; one that fails to
    import is skipped too, and (name, exception) is appended to ``errors``
    when a list is given, so the runner can report it."""
    from . import future
    found = list(future.WORKLOADS)
    for name in ("executor", "wait", "aio", "libraries", "free_threaded",
                 "instructions"):
        modname = f"{__name__}.{name}"
        try:
            mod = __import__(modname, fromlist=["WORKLOADS"])
            found.extend(mod.WORKLOADS)
        except ModuleNotFoundError as exc:
            if exc.name != modname and errors is not None:
                errors.append((modname, exc))
        except Exception as exc:
            if errors is not None:
                errors.append((modname, exc))
    return found
