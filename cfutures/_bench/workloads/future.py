"""Workloads of the Future itself: its life cycle, its waiters, its size.

Each run(impl, n) returns seconds for n operations (kind "time") or bytes
per object (kind "bytes").  Each measurement is kept to a fraction of a
second on the stdlib, so a full run of the runner takes a few minutes.
"""
import threading
import time
import tracemalloc

from . import Workload

_clock = time.perf_counter


def _create_set_result(impl, n):
    Future = impl.mod.Future
    t0 = _clock()
    for i in range(n):
        f = Future()
        f.set_result(i)
        f.result()
    return _clock() - t0


def _noop(_f):
    pass


def _callback_set_result(impl, n):
    # A callback added while pending, run by set_result: what every
    # executor, wait() and asyncio bridge does per future.
    Future = impl.mod.Future
    cb = _noop
    t0 = _clock()
    for i in range(n):
        f = Future()
        f.add_done_callback(cb)
        f.set_result(i)
    return _clock() - t0


def _exception_roundtrip(impl, n):
    Future = impl.mod.Future
    exc = ValueError("boom")
    t0 = _clock()
    for _ in range(n):
        f = Future()
        f.set_exception(exc)
        f.exception()
    return _clock() - t0


def _done_cancel_pending(impl, n):
    Future = impl.mod.Future
    t0 = _clock()
    for _ in range(n):
        f = Future()
        f.done()
        f.running()
        f.cancel()
        f.cancelled()
    return _clock() - t0


def _cross_thread_pingpong(impl, n):
    # A thread blocked in result() woken by another thread's set_result,
    # both ways: n round trips.  Measures the blocking wait and its wakeup,
    # which is what a caller of executor.submit(...).result() pays.
    Future = impl.mod.Future
    ping = [Future() for _ in range(n)]
    pong = [Future() for _ in range(n)]

    def echo():
        for i in range(n):
            pong[i].set_result(ping[i].result())

    t = threading.Thread(target=echo)
    t.start()
    t0 = _clock()
    for i in range(n):
        ping[i].set_result(i)
        pong[i].result()
    elapsed = _clock() - t0
    t.join()
    return elapsed


def _memory_pending(impl, n):
    # tracemalloc counts every allocation (object, dict, lock, list), so the
    # difference over n live futures is their whole footprint.
    Future = impl.mod.Future
    keep = [None] * n
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            keep[i] = Future()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        if not was_tracing:
            tracemalloc.stop()
    del keep
    return (after - before) / n


WORKLOADS = [
    Workload(
        name="future: create + set_result + result",
        run=_create_set_result,
        n=100_000,
        quick_n=20_000,
        goal=">= 13x",
        goal_ratio=1 / 13,
    ),
    Workload(
        name="future: memory per pending future",
        run=_memory_pending,
        n=20_000,
        quick_n=5_000,
        kind="bytes",
        goal="<= 1/12",
        goal_ratio=1 / 12,
    ),
    Workload(
        name="future: add_done_callback + set_result",
        run=_callback_set_result,
        n=100_000,
        quick_n=20_000,
    ),
    Workload(
        name="future: set_exception + exception",
        run=_exception_roundtrip,
        n=100_000,
        quick_n=20_000,
    ),
    Workload(
        name="future: done/running/cancel on pending",
        run=_done_cancel_pending,
        n=100_000,
        quick_n=20_000,
    ),
    Workload(
        name="future: result() woken by another thread (round trip)",
        run=_cross_thread_pingpong,
        n=2_000,
        quick_n=500,
    ),
]
