"""ThreadPoolExecutor workloads (issue 3).

Each run starts its pool and its worker threads before the clock starts
and shuts it down after the clock stops: what is timed is the work
through a warm pool.
"""
import hashlib
import time

from . import Impl, Workload


def _noop():
    pass


def _identity(x):
    return x


_BUF = b"\x5a" * (1 << 20)


def _sha256():
    return hashlib.sha256(_BUF).digest()


def _sleep_1ms():
    time.sleep(0.001)


def _warm_pool(impl: Impl, workers: int):
    ex = impl.mod.ThreadPoolExecutor(workers)
    # Start every worker, so thread creation is outside the timing.
    barrier_fs = [ex.submit(time.sleep, 0.005) for _ in range(workers)]
    for f in barrier_fs:
        f.result()
    return ex


def submit_all_then_wait(impl: Impl, n: int) -> float:
    ex = _warm_pool(impl, 4)
    try:
        t0 = time.perf_counter()
        fs = [ex.submit(_noop) for _ in range(n)]
        for f in fs:
            f.result()
        return time.perf_counter() - t0
    finally:
        ex.shutdown()


def map_items(impl: Impl, n: int) -> float:
    ex = _warm_pool(impl, 4)
    try:
        t0 = time.perf_counter()
        for _ in ex.map(_identity, range(n)):
            pass
        return time.perf_counter() - t0
    finally:
        ex.shutdown()


def round_trip(impl: Impl, n: int) -> float:
    ex = _warm_pool(impl, 1)
    try:
        submit = ex.submit
        t0 = time.perf_counter()
        for _ in range(n):
            submit(_noop).result()
        return time.perf_counter() - t0
    finally:
        ex.shutdown()


def hash_buffers(impl: Impl, n: int) -> float:
    ex = _warm_pool(impl, 4)
    try:
        t0 = time.perf_counter()
        for f in [ex.submit(_sha256) for _ in range(n)]:
            f.result()
        return time.perf_counter() - t0
    finally:
        ex.shutdown()


def sleep_tasks(impl: Impl, n: int) -> float:
    ex = _warm_pool(impl, 8)
    try:
        t0 = time.perf_counter()
        for f in [ex.submit(_sleep_1ms) for _ in range(n)]:
            f.result()
        return time.perf_counter() - t0
    finally:
        ex.shutdown()


WORKLOADS = [
    Workload(
        name="executor: submit 100k no-op tasks, then wait (4 workers)",
        run=submit_all_then_wait, n=100_000, quick_n=20_000,
        goal=">= 20x", goal_ratio=1 / 20, tags=("executor", "throughput"),
    ),
    Workload(
        name="executor: map over 100k items (4 workers)",
        run=map_items, n=100_000, quick_n=20_000,
        goal=">= 20x", goal_ratio=1 / 20, tags=("executor", "throughput"),
    ),
    Workload(
        name="executor: submit(noop).result() round trip (1 worker)",
        run=round_trip, n=5_000, quick_n=1_000,
        goal="<= 1/3", goal_ratio=1 / 3, tags=("executor", "latency"),
    ),
    Workload(
        name="executor: sha256 over 1 MiB buffers (4 workers, GIL released)",
        run=hash_buffers, n=64, quick_n=16,
        goal="<= 1x", goal_ratio=1.05, tags=("executor", "gil-released"),
    ),
    Workload(
        name="executor: time.sleep(1 ms) tasks (8 workers, GIL released)",
        run=sleep_tasks, n=400, quick_n=80,
        goal="<= 1x", goal_ratio=1.05, tags=("executor", "gil-released"),
    ),
]
