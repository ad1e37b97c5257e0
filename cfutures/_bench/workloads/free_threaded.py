"""Workloads for a free-threaded build (issue 11): parallel Python.

They run on any build.  With the GIL, pure-Python tasks on 2 workers take
turns and two submitting threads take turns too, so the rows are only
informative there and carry no goal; the goals apply when the GIL is off
(a free-threaded build run with PYTHON_GIL=0, or one where importing
cfutures left it off).  cfutures is imported before this module (it is
part of the package), so the GIL's state is settled when it is read.

"cfutures, 1 worker" is a peer of the scaling row: the same cfutures pool
with one worker, so the speed-up of that row is the throughput of 2
workers over 1 (at most 2.0 on 2 cores).
"""
import sys
import threading
import time

from . import Workload

_clock = time.perf_counter

# Iterations of the CPU-bound task: a few milliseconds of pure Python
# (about 2 ms on 3.11 here; more on a free-threaded 3.13, which does not
# specialize bytecode).
SPIN = 60_000

ONE_WORKER = "cfutures-1-worker"


def gil_off():
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    return is_enabled is not None and not is_enabled()


def _spin():
    x = 0
    for i in range(SPIN):
        x += i
    return x


def _noop():
    pass


def _pool(impl, workers):
    mod = impl.mod
    ex = mod.ThreadPoolExecutor(workers)
    # Start every worker, so thread creation is outside the timing.
    for f in [ex.submit(time.sleep, 0.005) for _ in range(workers)]:
        f.result()
    return ex


def _cpu_tasks(impl, n):
    # n CPU-bound tasks on 2 workers (1 for the one-worker peer): the
    # seconds for all of them, so the speed-up is a throughput ratio.
    ex = _pool(impl, 1 if impl.name == ONE_WORKER else 2)
    try:
        t0 = _clock()
        for f in [ex.submit(_spin) for _ in range(n)]:
            f.result()
        return _clock() - t0
    finally:
        ex.shutdown()


def _two_submitters(impl, n):
    # Two threads each submit n/2 no-op tasks to one pool (4 workers) and
    # wait for theirs, at the same time: the submit path under contention.
    ex = _pool(impl, 4)
    half = n // 2
    start = threading.Barrier(3)
    errors = []

    def submitter():
        try:
            start.wait()
            submit = ex.submit
            for f in [submit(_noop) for _ in range(half)]:
                f.result()
        except BaseException as exc:     # reported by the caller
            errors.append(exc)
    threads = [threading.Thread(target=submitter) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        start.wait()
        t0 = _clock()
        for t in threads:
            t.join()
        elapsed = _clock() - t0
    finally:
        ex.shutdown()
    if errors:
        raise errors[0]
    return elapsed * n / (2 * half)


def _goal(ratio, text):
    """The goal, only where it applies: with the GIL off."""
    return dict(goal=text, goal_ratio=ratio) if gil_off() else {}


WORKLOADS = [
    Workload(
        name="free-threaded: CPU-bound Python tasks of a few ms, 2 workers "
             "vs 1 (throughput)",
        run=_cpu_tasks, n=200, quick_n=40,
        peers=(ONE_WORKER, "cfutures"), baseline=ONE_WORKER,
        tags=("free-threaded",), **_goal(1 / 1.9, ">= 1.9x"),
    ),
    Workload(
        name="free-threaded: CPU-bound Python tasks of a few ms, 2 workers",
        run=_cpu_tasks, n=200, quick_n=40,
        tags=("free-threaded",), **_goal(1.05, "<= 1x"),
    ),
    Workload(
        name="free-threaded: 2 threads submit 100k no-op tasks at once, "
             "then wait (4 workers)",
        run=_two_submitters, n=100_000, quick_n=20_000,
        tags=("free-threaded",), **_goal(1 / 40, ">= 40x"),
    ),
]
