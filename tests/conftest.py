"""Shared fixtures: every behaviour test runs on the stdlib (the oracle)
and on cfutures."""
import asyncio
import concurrent.futures
import os
import sys

import pytest

import cfutures

IMPLS = [concurrent.futures, cfutures]
IMPL_IDS = ["stdlib", "cfutures"]


# The race tests' rounds (and their timeouts) are multiplied by this: the
# free-threaded gate runs them longer, since they are what finds the races
# of a build without the GIL.
RACE_FACTOR = max(1, int(os.environ.get("CFUTURES_RACE_ROUNDS", "1")))


@pytest.fixture
def race_rounds():
    """race_rounds(n): n rounds, times CFUTURES_RACE_ROUNDS."""
    return lambda n: n * RACE_FACTOR


def pytest_collection_modifyitems(items):
    if RACE_FACTOR == 1:
        return
    for item in items:
        if "race" in item.name:
            mark = item.get_closest_marker("timeout")
            base = mark.args[0] if mark is not None and mark.args else 120
            item.add_marker(pytest.mark.timeout(base * RACE_FACTOR),
                            append=False)


@pytest.fixture(params=IMPLS, ids=IMPL_IDS)
def mod(request):
    """The module under test: concurrent.futures or cfutures."""
    return request.param


try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is in the test extra
    uvloop = None

# The event loops asyncio tests run under.
LOOPS = {"asyncio": asyncio.new_event_loop}
if uvloop is not None:
    LOOPS["uvloop"] = uvloop.new_event_loop


@pytest.fixture
def no_racy_generator_oracle(mod):
    """Skip the stdlib's run of a test that drives one map() or
    as_completed() iterator from two threads at once: the stdlib's are
    generators, which a free-threaded CPython 3.13 does not guard (two
    threads running one crash it; closing one that another thread runs is
    a data race in gen_close, which ThreadSanitizer reports)."""
    if (mod is concurrent.futures and sys.version_info < (3, 14)
            and not getattr(sys, "_is_gil_enabled", lambda: True)()):
        pytest.skip("the oracle is a generator, which a free-threaded "
                    "CPython 3.13 does not guard against two threads")


@pytest.fixture(params=sorted(LOOPS))
def loop_factory(request):
    return LOOPS[request.param]


@pytest.fixture
def run(loop_factory):
    """run(async_fn, *args, debug=None): run it to completion on a fresh
    loop."""
    def run(fn, *args, debug=None):
        with asyncio.Runner(loop_factory=loop_factory, debug=debug) as r:
            return r.run(fn(*args))
    return run


def _settle_threads(timeout=10.0):
    """Let threads that are finishing finish (joined, then a moment more).

    CPython 3.11's tracemalloc.start() and stop() race with a thread that
    is exiting: it frees its thread state after releasing the GIL, through
    the allocator hooks being swapped (CPython gh-128679, fixed in 3.12.9
    and 3.13.2).  The debug interpreter aborts on an assertion
    (`tracemalloc_remove_trace: Assertion ... tracing failed`), a release
    build may crash.  Tests that start or stop tracemalloc call this first,
    so no worker of an earlier test's dropped executor is mid-exit.  The
    shared to_thread pool's workers live on and are not waited for, nor is
    dask.distributed's offload pool (Dask-Offload_N, started by
    test_scale_out.py), which also lives as long as the process.
    """
    import gc
    import threading
    import time

    gc.collect()      # executors in cycles: their workers exit now
    deadline = time.monotonic() + timeout
    me = threading.current_thread()
    for t in threading.enumerate():
        if t is me or t.name.startswith(("cfutures.to_thread",
                                         "Dask-Offload")):
            continue
        t.join(max(0.0, deadline - time.monotonic()))
    # join() returns when the thread state is cleared; it is freed just
    # after, outside the GIL.
    time.sleep(0.02)


@pytest.fixture
def settle_threads():
    """A function: wait until no thread is exiting (see _settle_threads)."""
    return _settle_threads
