"""Workloads of wait() and as_completed().

Each run(impl, n) returns seconds for n operations.  What the stdlib pays
per call is O(N) Condition acquisitions and list edits over all N futures,
so the workloads keep N large (100k futures, or 2,000 pending futures per
call) and count what one user-visible operation costs.
"""
import sys
import threading
import time

from . import Workload

_clock = time.perf_counter

PENDING = 2_000     # futures pending in each wait() call


def _noop():
    pass


def _submit_as_completed(impl, n):
    # The headline: submit n no-op tasks to the module's
    # ThreadPoolExecutor and iterate as_completed over their futures.
    # Pool start and shutdown are outside the timing.
    mod = impl.mod
    with mod.ThreadPoolExecutor() as ex:
        ex.submit(_noop).result()       # start a worker before timing
        t0 = _clock()
        fs = [ex.submit(_noop) for _ in range(n)]
        for _ in mod.as_completed(fs):
            pass
        elapsed = _clock() - t0
    return elapsed


def _as_completed_installed(impl, n):
    # as_completed over n pending futures, completed after its first next()
    # installed the waiters: every future goes through install, notify,
    # yield and removal, without a thread handoff deciding the timing
    # (one thread; another thread completing them would race the
    # iteration, and how often the iterator blocks would vary run to run).
    mod = impl.mod
    fs = [mod.Future() for _ in range(n)]
    t0 = _clock()
    it = mod.as_completed(fs)
    fs[0].set_result(None)
    next(it)                       # waiters installed on all n
    for f in fs[1:]:
        f.set_result(None)
    for _ in it:
        pass
    return _clock() - t0


def _wait_first_completed_blocking(impl, n):
    # n rounds of done, pending = wait(pending, FIRST_COMPLETED) over 2,000
    # pending futures, each round woken by another thread completing one of
    # them; a fresh future replaces it, so every call waits on 2,000.
    #
    # Lockstep: the main thread releases `go`, then calls wait(); the other
    # thread, woken by `go`, needs the GIL to complete its future.  A long
    # switch interval keeps the GIL with the main thread until wait()
    # blocks, so every call installs its waiters on all 2,000 futures,
    # blocks, is woken, and removes them: the path the issue measures,
    # with no forced preemption deciding it.
    mod = impl.mod
    wait, first = mod.wait, mod.FIRST_COMPLETED
    futures = [mod.Future() for _ in range(PENDING + n)]
    # A bare Lock as a binary semaphore (released by the main thread,
    # taken by the completer): the cheapest cross-thread signal.
    go = threading.Lock()
    go.acquire()

    def complete():
        for f in futures[:n]:
            go.acquire()
            f.set_result(None)
    t = threading.Thread(target=complete)
    t.start()
    pending = set(futures[:PENDING])
    old = sys.getswitchinterval()
    sys.setswitchinterval(0.5)
    try:
        t0 = _clock()
        for i in range(n):
            go.release()
            done, pending = wait(pending, return_when=first)
            pending.add(futures[PENDING + i])
        elapsed = _clock() - t0
    finally:
        sys.setswitchinterval(old)
        t.join()
    return elapsed


def _wait_first_completed_one_done(impl, n):
    # n rounds over 2,000 futures of which one is done when wait() is
    # called (completed in the loop): the stdlib still takes all 2,000
    # Conditions for its snapshot; nothing blocks.
    mod = impl.mod
    wait, first = mod.wait, mod.FIRST_COMPLETED
    futures = [mod.Future() for _ in range(PENDING + n)]
    pending = set(futures[:PENDING])
    t0 = _clock()
    for i in range(n):
        futures[i].set_result(None)
        done, pending = wait(pending, return_when=first)
        pending.add(futures[PENDING + i])
    return _clock() - t0


WORKLOADS = [
    Workload(
        name="wait: submit + as_completed, 100k no-op tasks",
        run=_submit_as_completed,
        n=100_000,
        quick_n=20_000,
        goal=">= 20x",
        goal_ratio=1 / 20,
    ),
    Workload(
        name="wait: as_completed over 100k futures completing while it waits",
        run=_as_completed_installed,
        n=100_000,
        quick_n=20_000,
    ),
    Workload(
        name="wait: wait(FIRST_COMPLETED) over 2,000 pending, woken by "
             "another thread",
        run=_wait_first_completed_blocking,
        n=200,
        quick_n=30,
        goal=">= 20x",
        goal_ratio=1 / 20,
    ),
    Workload(
        name="wait: wait(FIRST_COMPLETED) over 2,000, one done",
        run=_wait_first_completed_one_done,
        n=200,
        quick_n=30,
    ),
]
