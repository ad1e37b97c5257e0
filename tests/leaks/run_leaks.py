"""Reference and memory leak gate for cfutures: a plain script, no pytest.

Each scenario exercises one part of the API many times.  The runner calls
it in rounds, the way CPython's ``regrtest -R 3:3`` does: some warm-up
rounds (caches fill, lazily created objects appear), then measured rounds.
After every round it collects garbage and reads

* ``sys.gettotalrefcount()`` (debug interpreters only),
* ``sys.getallocatedblocks()`` (objects and pymalloc blocks),
* the bytes glibc's malloc has handed out (``mallinfo2``: raw allocations
  such as the locks behind blocking waits, which the other two miss),
* ``threading.active_count()`` (threads an executor failed to join).

A scenario leaks when a counter grows in *every* measured round (CPython's
rule: ``[3, 0, 0]`` or ``[8, -8, 1]`` is noise, ``[5, 5, 6]`` is a leak);
malloc bytes must grow by more than MALLOC_SLACK each round, since glibc
keeps small amounts for itself.  A scenario that looks leaky is run again
with twice the rounds and fails only if it leaks there too, so the rare
``[2, 2, 2]`` of thread bookkeeping does not make CI flaky.

Run it under Debian's debug interpreter with the extension built for it
(.ci/run does this):

    python3.11-dbg tests/leaks/run_leaks.py            # all scenarios
    python3.11-dbg tests/leaks/run_leaks.py -k wait -v # a subset, verbose
    python tests/leaks/run_leaks.py --impl stdlib      # harness check

On a release interpreter only the block, malloc and thread counters are
available; the script says so and still runs.  Scenarios for parts that are
not built yet (executor, wait, await, to_thread) are skipped with a note.
Exit status: 0 clean, 1 a leak or a failing scenario, 2 the harness itself
is broken (its planted leak went unnoticed).
"""
import argparse
import asyncio
import concurrent.futures as std
import ctypes
import gc
import logging
import os
import queue
import signal
import sys
import threading
import time
import traceback
import weakref

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import cfutures  # noqa: E402

MALLOC_SLACK = 4096
WAIT = 10  # seconds; a scenario that blocks longer is broken, not slow


# ---- counters ----------------------------------------------------------

class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
        "fsmblks", "uordblks", "fordblks", "keepcost")]


def _malloc_counter():
    try:
        libc = ctypes.CDLL(None)
        mallinfo2 = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = _Mallinfo2
    mallinfo2.argtypes = []

    def malloc_bytes():
        info = mallinfo2()
        return info.uordblks + info.hblkhd
    return malloc_bytes


COUNTERS = []  # (name, function, threshold a round must exceed)
if hasattr(sys, "gettotalrefcount"):
    COUNTERS.append(("refs", sys.gettotalrefcount, 0))
COUNTERS.append(("blocks", sys.getallocatedblocks, 0))
_malloc = _malloc_counter()
if _malloc is not None:
    COUNTERS.append(("malloc", _malloc, MALLOC_SLACK))
COUNTERS.append(("threads", threading.active_count, 0))
BLOCKS = [name for name, _, _ in COUNTERS].index("blocks")


def _settle():
    """What CPython's dash_R does between rounds, in small."""
    sys._clear_type_cache()
    for _ in range(3):
        if not gc.collect():
            break


# ---- helpers the scenarios share ---------------------------------------

class Completer:
    """One long-lived thread that runs what it is given, in order.

    Scenarios hand it the completions of futures the main thread is
    blocked on, so waits really block and wake across threads without a
    thread per iteration."""

    def __init__(self):
        self._q = queue.SimpleQueue()
        self._idle = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="leaks-completer")
        self._thread.start()

    def _run(self):
        while True:
            item = self._q.get()
            if item is None:
                return
            delay, fn, args = item
            if delay:
                time.sleep(delay)
            try:
                fn(*args)
            except BaseException:
                traceback.print_exc()
            del item, fn, args
            if self._q.empty():
                self._idle.set()

    def later(self, fn, *args, delay=0.0):
        self._idle.clear()
        self._q.put((delay, fn, args))

    def drain(self):
        """Wait until everything handed over has run."""
        if not self._q.empty() or not self._idle.is_set():
            self.later(lambda: None)
            if not self._idle.wait(WAIT):
                raise RuntimeError("completer stuck")

    def stop(self):
        self._q.put(None)
        self._thread.join(WAIT)


class _DiscardHandler(logging.Handler):
    """Formats every record (so the traceback path runs) and keeps none."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = 0

    def emit(self, record):
        self.format(record)
        self.records += 1


LOG = _DiscardHandler()
COMPLETER = None


def expect(exc_type, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except exc_type:
        return
    raise AssertionError(f"{fn!r} did not raise {exc_type.__name__}")


async def cancel_and_wait(task):
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def ident(x):
    return x


def boom(*args):
    raise ValueError("boom")


# ---- scenarios -----------------------------------------------------------
#
# Each takes the module under test (cfutures, or concurrent.futures for a
# harness check) and runs a bounded amount of work; `n` is the number of
# repetitions of its core, so a leak of one reference per call shows as a
# growth of at least `n` per round.

SCENARIOS = []


def scenario(n=50, needs=None, ignore=()):
    """Register a scenario; `needs(mod)` says if the API it uses exists;
    `ignore` names counters that mean nothing for it."""
    def register(fn):
        SCENARIOS.append((fn.__name__, fn, n, needs, frozenset(ignore)))
        return fn
    return register


@scenario()
def future_set_result(mod, n):
    for i in range(n):
        f = mod.Future()
        check(not f.done() and f._state == "PENDING", "pending")
        f.set_result([i])
        check(f.result() == [i] and f.result(timeout=0) == [i], "result")
        check(f.exception() is None and f._result == [i], "no exception")
        repr(f)
        expect(std.InvalidStateError, f.set_result, i)
        expect(std.InvalidStateError, f.set_exception, ValueError())
        check(f.cancel() is False, "cancel finished")
        f.set_result  # noqa: B018 (method lookup)


@scenario()
def future_set_exception(mod, n):
    for i in range(n):
        f = mod.Future()
        try:
            raise KeyError(i)
        except KeyError as e:
            f.set_exception(e)
        try:
            f.result()
        except KeyError as e:
            check(e.__traceback__ is not None, "traceback")
        check(isinstance(f.exception(timeout=1), KeyError), "exception")
        repr(f)
        g = mod.Future()
        g.set_exception(ValueError)      # a class: raised as an instance
        expect(ValueError, g.result)
        h = mod.Future()
        h.set_exception(None)            # allowed: result() returns None
        check(h.result() is None, "None exception")
        k = mod.Future()
        k.set_exception(42)              # not an exception: TypeError
        expect(TypeError, k.result)
        b = mod.Future()
        b.set_exception(KeyboardInterrupt())
        expect(KeyboardInterrupt, b.result)


@scenario()
def future_cancel(mod, n):
    for _ in range(n):
        f = mod.Future()
        check(f.cancel() and f.cancel() and f.cancelled(), "cancel")
        expect(std.CancelledError, f.result)
        expect(std.CancelledError, f.exception, timeout=0)
        expect(std.InvalidStateError, f.set_result, 1)
        check(f.set_running_or_notify_cancel() is False, "notify cancel")
        check(f._state == "CANCELLED_AND_NOTIFIED", "notified")
        repr(f)


@scenario()
def future_running(mod, n):
    for i in range(n):
        f = mod.Future()
        check(f.set_running_or_notify_cancel() is True, "running")
        check(f.running() and not f.cancel(), "running, not cancellable")
        expect(RuntimeError, f.set_running_or_notify_cancel)  # logs
        f.set_result(i)
        expect(RuntimeError, f.set_running_or_notify_cancel)


@scenario()
def future_callbacks(mod, n):
    calls = []
    for i in range(n):
        f = mod.Future()
        f.add_done_callback(calls.append)           # one: stored bare
        f.set_result(i)
        g = mod.Future()
        for _ in range(3):                          # many: stored in a list
            g.add_done_callback(calls.append)
        g.add_done_callback(boom)                   # raises: logged
        g.add_done_callback(42)                     # not callable: logged
        g.add_done_callback(lambda fut, i=i: calls.append(i))
        g.set_exception(ValueError(i))
        f.add_done_callback(calls.append)           # done: runs at once
        f.add_done_callback(boom)                   # done, raises: logged
        h = mod.Future()
        h.add_done_callback(calls.append)
        h.cancel()
        r = mod.Future()
        r.add_done_callback(lambda fut: fut.add_done_callback(calls.append))
        r.set_result(None)
        k = mod.Future()

        def interrupt(fut):
            raise KeyboardInterrupt
        k.add_done_callback(interrupt)              # propagates
        k.add_done_callback(calls.append)
        expect(KeyboardInterrupt, k.set_result, 1)
    check(len(calls) >= 8 * n, "callbacks ran")
    calls.clear()


@scenario(n=30)
def future_blocking_waits(mod, n):
    """result()/exception() blocking until another thread completes."""
    for i in range(n):
        f = mod.Future()
        COMPLETER.later(f.set_result, i, delay=0.0005)
        check(f.result(timeout=WAIT) == i, "woken by result")
        f = mod.Future()
        COMPLETER.later(f.set_exception, ValueError(i), delay=0.0005)
        check(isinstance(f.exception(timeout=WAIT), ValueError), "woken")
        f = mod.Future()
        COMPLETER.later(f.cancel, delay=0.0005)
        expect(std.CancelledError, f.result, WAIT)
        f = mod.Future()
        expect(std.TimeoutError, f.result, 0)
        expect(std.TimeoutError, f.result, 0.0005)
        expect(std.TimeoutError, f.exception, timeout=0.0005)
        expect(TypeError, f.result, "1")
        f.set_result(None)
    COMPLETER.drain()


@scenario(n=10)
def future_many_waiters(mod, n):
    """Several threads blocked on one future, all woken by one result."""
    for i in range(n):
        f = mod.Future()
        got = []
        threads = [threading.Thread(target=lambda: got.append(
            f.result(timeout=WAIT))) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.001)
        f.set_result(i)
        for t in threads:
            t.join(WAIT)
        check(got == [i] * 4, "all waiters woke")


@scenario(n=10, needs=lambda mod: hasattr(signal, "setitimer")
          and threading.current_thread() is threading.main_thread())
def future_wait_interrupted(mod, n):
    """A signal handler raising out of a blocking result()."""
    class Interrupt(Exception):
        pass

    def handler(signum, frame):
        raise Interrupt
    old = signal.signal(signal.SIGALRM, handler)
    try:
        for i in range(n):
            f = mod.Future()
            try:
                # Inside the try: on a loaded machine the alarm may come
                # before result() blocks.
                signal.setitimer(signal.ITIMER_REAL, 0.002)
                f.result(WAIT)
            except Interrupt:
                pass
            else:
                raise AssertionError("result() was not interrupted")
            f.set_result(i)
            check(f.result() == i, "usable after interrupt")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@scenario()
def future_cycles_and_weakrefs(mod, n):
    refs = []
    for i in range(n):
        f = mod.Future()
        f.set_result([f])                           # result -> future
        g = mod.Future()
        try:
            raise ValueError(g)
        except ValueError as e:
            g.set_exception(e)                      # exception -> future
        g.exception()
        h = mod.Future()
        h.add_done_callback(lambda fut, keep=h: None)  # callback -> future
        k = mod.Future()
        k.me = k                                    # __dict__ -> future
        refs.extend(weakref.ref(x) for x in (f, g, h, k))
        del f, g, h, k
    gc.collect()
    check(all(r() is None for r in refs), "cycles collected")


class _Sub:
    """Mixed into a subclass of mod.Future by the scenario below."""

    def __init__(self, tag):
        super().__init__()
        self.tag = tag


@scenario()
def future_subclass(mod, n):
    Sub = type("Sub", (_Sub, mod.Future), {})
    for i in range(n):
        f = Sub(i)
        f.set_result(f.tag)
        check(f.result() == i, "subclass result")
        repr(f)
    expect(TypeError, mod.Future, 1)


@scenario()
def future_misc(mod, n):
    """The rest of the surface: private helpers the stdlib calls, the
    compatibility attributes, generic alias, pickling, bad arguments."""
    import pickle
    for i in range(n):
        f = mod.Future()
        f._condition, f._waiters, f._state, f._result  # noqa: B018
        f.add_done_callback(ident)
        f._invoke_callbacks()
        f.set_result(i)
        check(f._Future__get_result() == i, "private get_result")
        mod.Future[int]  # noqa: B018
        expect(TypeError, pickle.dumps, f)
        expect(TypeError, f.result, 1, 2)
        expect(TypeError, f.result, timeout=1, bogus=2)
        expect(TypeError, mod.Future, x=1)
        g = mod.Future()
        expect(OverflowError, g.result, 1e300)
        expect(std.TimeoutError, g.exception, float("nan"))
        g.set_exception(ValueError(i))
        expect(ValueError, g._Future__get_result)
        repr(g)


@scenario(n=20)
def stdlib_wait_on_futures(mod, n):
    """concurrent.futures.wait/as_completed reach into _condition and
    _waiters: the lazily made compatibility objects."""
    for i in range(n):
        fs = [mod.Future() for _ in range(4)]
        fs[0].set_result(0)
        COMPLETER.later(fs[1].set_result, 1, delay=0.0005)
        COMPLETER.later(fs[2].set_exception, ValueError(2), delay=0.0005)
        done, not_done = std.wait(fs, timeout=WAIT,
                                  return_when=std.FIRST_EXCEPTION)
        check(fs[2] in done and fs[3] in not_done, "FIRST_EXCEPTION")
        done, not_done = std.wait(fs, timeout=0.0005)
        check(len(done) == 3, "timeout")
        fs[3].cancel()
        COMPLETER.later(fs[3].set_running_or_notify_cancel, delay=0.0005)
        done, not_done = std.wait(fs, timeout=WAIT)
        check(not not_done, "ALL_COMPLETED")
        gs = [mod.Future() for _ in range(3)]
        for j, g in enumerate(gs):
            COMPLETER.later(g.set_result, j, delay=0.0002)
        check(len(list(std.as_completed(gs + gs[:1], timeout=WAIT))) == 3,
              "as_completed")
        h = mod.Future()
        expect(std.TimeoutError, lambda: list(std.as_completed([h], 0.0005)))
        h._condition, h._waiters, h._state  # noqa: B018
        h.set_running_or_notify_cancel()
        h.set_result(None)
    COMPLETER.drain()


# ---- scenarios for parts that land later (guarded) ----------------------

def _has(*names):
    return lambda mod: all(hasattr(mod, name) for name in names)


def _slow(x):
    time.sleep(0.001)
    return x


@scenario(n=5, needs=_has("ThreadPoolExecutor"))
def executor_submit_map_shutdown(mod, n):
    for i in range(n):
        with mod.ThreadPoolExecutor(max_workers=2,
                                    thread_name_prefix="leaks") as ex:
            fs = [ex.submit(pow, 2, k) for k in range(20)]
            check([f.result(timeout=WAIT) for f in fs]
                  == [2 ** k for k in range(20)], "submit")
            check(isinstance(ex.submit(boom).exception(timeout=WAIT),
                             ValueError), "submit raising")
            check(ex.submit(ident, x=i).result(timeout=WAIT) == i, "kwargs")
            check(list(ex.map(abs, range(-10, 0), timeout=WAIT))
                  == list(range(10, 0, -1)), "map")
            check(list(ex.map(pow, [2, 3], [3, 2])) == [8, 9], "map 2 args")
            expect(ValueError, list, ex.map(boom, [1, 2]))
            it = ex.map(_slow, range(10))
            check(next(it) == 0, "map partially consumed")
            del it                                  # cancels the rest
        expect(RuntimeError, ex.submit, ident, 1)
        ex.shutdown()                               # twice is fine
        ex = mod.ThreadPoolExecutor(max_workers=1)
        gate = threading.Event()
        first = ex.submit(gate.wait, WAIT)
        rest = [ex.submit(ident, k) for k in range(10)]
        deadline = time.monotonic() + WAIT
        while not first.running() and time.monotonic() < deadline:
            time.sleep(0.0005)      # else cancel_futures may cancel it too
        COMPLETER.later(gate.set, delay=0.002)
        ex.shutdown(wait=True, cancel_futures=True)
        check(first.result() is True, "running one finished")
        check(all(f.cancelled() or f.done() for f in rest), "cancelled")
        ex = mod.ThreadPoolExecutor(max_workers=1)
        ex.submit(ident, 1)
        ex.shutdown(wait=False)
        ex.shutdown(wait=True)
    COMPLETER.drain()


@scenario(n=5, needs=_has("ThreadPoolExecutor"))
def executor_dropped_without_shutdown(mod, n):
    """An executor nobody shuts down: once it is garbage, its workers
    must exit (the stdlib wakes them from a weakref callback)."""
    baseline = threading.active_count()
    for i in range(n):
        ex = mod.ThreadPoolExecutor(max_workers=2)
        fs = [ex.submit(_slow, k) for k in range(4)]
        check([f.result(timeout=WAIT) for f in fs] == list(range(4)), "ran")
        del ex, fs
    gc.collect()
    deadline = time.monotonic() + WAIT
    while threading.active_count() > baseline and time.monotonic() < deadline:
        time.sleep(0.001)
    check(threading.active_count() == baseline, "workers exited")


@scenario(n=5, needs=_has("ThreadPoolExecutor"))
def executor_broken_and_errors(mod, n):
    for _ in range(n):
        ex = mod.ThreadPoolExecutor(max_workers=1, initializer=boom)
        f = ex.submit(ident, 1)
        expect(std.BrokenExecutor, f.result, WAIT)
        expect(std.BrokenExecutor, ex.submit, ident, 1)
        ex.shutdown(wait=True)
        expect(ValueError, mod.ThreadPoolExecutor, max_workers=0)
        expect(TypeError, mod.ThreadPoolExecutor, initializer=42)
        with mod.ThreadPoolExecutor(1, initializer=ident,
                                    initargs=(1,)) as ex:
            f = ex.submit(ident, 2)
            f.add_done_callback(boom)               # logged in the worker
            check(f.result(timeout=WAIT) == 2, "initargs")
            expect(TypeError, ex.submit)
            pending = [ex.submit(_slow, k) for k in range(5)]
            pending[-1].cancel()
            std.wait(pending, timeout=WAIT)


@scenario(n=10, needs=_has("wait", "as_completed"))
def wait_and_as_completed(mod, n):
    for i in range(n):
        fs = [mod.Future() for _ in range(4)] + [std.Future()]
        fs[0].set_result(0)
        COMPLETER.later(fs[1].set_result, 1, delay=0.0005)
        COMPLETER.later(fs[4].set_exception, ValueError(4), delay=0.001)
        done, not_done = mod.wait(fs, timeout=WAIT,
                                  return_when=mod.FIRST_COMPLETED)
        check(fs[0] in done, "FIRST_COMPLETED")
        done, not_done = mod.wait(fs, timeout=WAIT,
                                  return_when=mod.FIRST_EXCEPTION)
        check(fs[4] in done, "FIRST_EXCEPTION")
        done, not_done = mod.wait(fs, timeout=0.0005)
        check(len(not_done) == 2, "timeout")
        fs[2].cancel()
        fs[2].set_running_or_notify_cancel()
        COMPLETER.later(fs[3].set_result, 3, delay=0.0005)
        done, not_done = mod.wait(fs, timeout=WAIT)
        check(not not_done, "ALL_COMPLETED")
        gs = [mod.Future() for _ in range(5)] + [std.Future()]
        for j, g in enumerate(gs):
            COMPLETER.later(g.set_result, j, delay=0.0002)
        check(len(list(mod.as_completed(gs + gs[:2], timeout=WAIT))) == 6,
              "as_completed")
        h = [mod.Future(), std.Future()]
        expect(std.TimeoutError, list, mod.as_completed(h, timeout=0.0005))
        it = mod.as_completed(h + [fs[0]], timeout=WAIT)
        check(next(it) is fs[0], "done first")
        del it                                      # dropped while waiting
        for g in h:
            g.set_result(None)
    COMPLETER.drain()


def _awaitable(mod):
    """True once Future.__await__ is implemented (aio branch)."""
    if mod is std:
        return False
    f = mod.Future()
    f.set_result(None)
    try:
        it = f.__await__()
        try:
            next(it)
        except StopIteration:
            pass
    except (NotImplementedError, AttributeError, TypeError):
        return False
    return True


async def _await_one(f):
    return await f


def _await_scenario(mod, n, loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        for i in range(n):
            f = mod.Future()
            f.set_result(i)
            check(await f == i, "await done")
            f = mod.Future()
            COMPLETER.later(f.set_result, i, delay=0.0005)
            check(await f == i, "await pending")
            f = mod.Future()
            COMPLETER.later(f.set_exception, ValueError(i), delay=0.0005)
            try:
                await f
            except ValueError:
                pass
            else:
                raise AssertionError("exception not raised")
            f = mod.Future()
            f.cancel()
            try:
                await f
            except asyncio.CancelledError:
                pass
            f = mod.Future()
            task = loop.create_task(_await_one(f))
            await asyncio.sleep(0)
            await cancel_and_wait(task)
            check(f.cancelled(), "cancelling the task cancels the future")
            burst = [mod.Future() for _ in range(10)]
            for j, g in enumerate(burst):
                COMPLETER.later(g.set_result, j)
            got = await asyncio.wait_for(asyncio.gather(
                *(_await_one(g) for g in burst)), WAIT)
            check(got == list(range(10)), "burst")
            w = mod.Future()
            COMPLETER.later(w.set_result, i, delay=0.0005)
            check(await asyncio.wrap_future(w) == i, "wrap_future")
        COMPLETER.drain()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())


@scenario(n=20, needs=_awaitable)
def await_futures(mod, n):
    _await_scenario(mod, n, None)


def _uvloop():
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop


# uvloop is built for release interpreters, whose Py_DECREF does not
# maintain the debug interpreter's total: "refs" only ever grows with it.
# Leaked objects still show as blocks.
@scenario(n=20, needs=lambda mod: _awaitable(mod) and _uvloop() is not None,
          ignore=("refs",))
def await_futures_uvloop(mod, n):
    _await_scenario(mod, n, _uvloop().new_event_loop)


def _wait_scenario(mod, n, loop_factory):
    """asyncio.wait on bare futures: the callback bound to the loop, its
    removal, a timeout that expires, a wait left on a closed loop."""
    async def main():
        for i in range(n):
            fs = [mod.Future() for _ in range(4)]
            fs[0].set_result(0)                         # done before
            for j, f in enumerate(fs[1:3], 1):
                COMPLETER.later(f.set_result, j, delay=0.0002)
            done, pending = await asyncio.wait(
                fs, return_when=asyncio.FIRST_COMPLETED)
            check(fs[0] in done, "first completed")
            done, pending = await asyncio.wait(fs, timeout=0.001)
            check(fs[3] in pending, "timeout")
            COMPLETER.later(fs[3].set_exception, ValueError(i))
            done, pending = await asyncio.wait(
                fs, return_when=asyncio.FIRST_EXCEPTION)
            check(len(done) == 4 and not pending, "all")
            f = mod.Future()
            task = asyncio.ensure_future(asyncio.wait([f]))
            await asyncio.sleep(0)
            await cancel_and_wait(task)
            f.set_result(None)
            f = mod.Future()
            cb = boom                   # removed: never runs
            f.add_done_callback(cb)
            f.add_done_callback(ident)
            f.add_done_callback(cb)
            check(f.remove_done_callback(cb) == 2, "remove_done_callback")
            f.set_result(None)
        COMPLETER.drain()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
    # A wait whose loop is closed under it; the future completes later.
    loop = (loop_factory or asyncio.new_event_loop)()
    f = mod.Future()
    task = loop.create_task(asyncio.wait([f]))
    loop.run_until_complete(asyncio.sleep(0.001))
    loop.close()
    COMPLETER.later(f.set_result, None)
    COMPLETER.drain()
    task._log_destroy_pending = False
    del task


def _waitable(mod):
    return _awaitable(mod) and hasattr(mod.Future, "remove_done_callback")


@scenario(n=20, needs=_waitable)
def asyncio_wait(mod, n):
    _wait_scenario(mod, n, None)


@scenario(n=20, needs=lambda mod: _waitable(mod) and _uvloop() is not None,
          ignore=("refs",))
def asyncio_wait_uvloop(mod, n):
    _wait_scenario(mod, n, _uvloop().new_event_loop)


@scenario(n=20, needs=lambda mod: _has("to_thread")(mod)
          and _awaitable(mod))
def to_thread_calls(mod, n):
    async def main():
        for i in range(n):
            check(await mod.to_thread(ident, i) == i, "to_thread")
            check(await mod.to_thread(ident, x=i) == i, "kwargs")
            try:
                await mod.to_thread(boom)
            except ValueError:
                pass
            else:
                raise AssertionError("exception not raised")
            # Cancel the task while its call runs (a running call is not
            # cancelled; its result is dropped), then let the call and the
            # worker finish, so nothing is in flight at the reading.
            started, release = threading.Event(), threading.Event()

            def job():
                started.set()
                release.wait(WAIT)
            task = asyncio.ensure_future(mod.to_thread(job))
            while not started.is_set():
                await asyncio.sleep(0.0005)
            await cancel_and_wait(task)
            release.set()
            await asyncio.sleep(0.002)
    asyncio.run(main())


@scenario(n=10, needs=lambda mod: _has("ThreadPoolExecutor")(mod)
          and _awaitable(mod))
def executor_with_asyncio(mod, n):
    async def main():
        loop = asyncio.get_running_loop()
        with mod.ThreadPoolExecutor(2) as ex:
            for i in range(n):
                check(await loop.run_in_executor(ex, ident, i) == i,
                      "run_in_executor")
                check(await ex.submit(ident, i) == i, "await submit")
                fs = [ex.submit(_slow, k) for k in range(4)]
                check(await asyncio.gather(*(_await_one(f) for f in fs))
                      == list(range(4)), "gather")
                # The chain's hand-over through the loop's batch: a burst,
                # an exception, a cancelled call, a chain never completed.
                rs = await asyncio.gather(
                    *[loop.run_in_executor(ex, ident, k) for k in range(8)],
                    loop.run_in_executor(ex, boom), return_exceptions=True)
                check(rs[:8] == list(range(8)), "gathered run_in_executor")
                queued = loop.run_in_executor(ex, _slow, i)
                queued.cancel()
                await asyncio.sleep(0)
                f = mod.Future()
                w = asyncio.wrap_future(f)
                del f, w
    asyncio.run(main())


# ---- the runner ------------------------------------------------------------

def warm_up_asyncio():
    """asyncio itself settles over its first dozen event loops (a few
    references a loop, then none): get that behind us, with the stdlib's
    own futures, before any scenario is measured."""
    async def main():
        loop = asyncio.get_running_loop()
        f = std.Future()
        COMPLETER.later(f.set_result, 1)
        await asyncio.wrap_future(f)
        task = loop.create_task(asyncio.sleep(WAIT))
        await asyncio.sleep(0)
        await cancel_and_wait(task)
        await asyncio.wait_for(asyncio.gather(
            *(asyncio.sleep(0) for _ in range(10))), WAIT)
        await loop.run_in_executor(None, ident, 1)
    for _ in range(15):
        with asyncio.Runner() as runner:
            runner.run(main())
    COMPLETER.drain()


def leaked(name, deltas, threshold):
    return all(d > threshold for d in deltas)


_POOL = {}


def _pooled(value):
    """An int that is already allocated, so storing it allocates nothing
    (CPython's refleak.py does the same)."""
    return _POOL.setdefault(value, value)


try:
    from sys import _getquickenedcount  # 3.11: specialized code is counted
except ImportError:
    def _getquickenedcount():
        return 0


def run_scenario(fn, mod, n, warmups, rounds):
    """Run warm-ups, then measured rounds; the per-round deltas of each
    counter.  Nothing is allocated between the readings but what the
    scenario itself leaves behind."""
    for _ in range(warmups):
        fn(mod, n)
    deltas = [[0] * rounds for _ in COUNTERS]
    before = [0] * len(COUNTERS)
    after = [0] * len(COUNTERS)
    # Three readings before the first measured one: by then both lists
    # hold large ints, and each reading frees as many as it makes.
    for r in range(-3, rounds):
        if r >= 0:
            fn(mod, n)
        _settle()
        for c in range(len(COUNTERS)):
            after[c] = COUNTERS[c][1]()
        after[BLOCKS] -= _getquickenedcount()
        if r >= 0:
            for c in range(len(COUNTERS)):
                deltas[c][r] = _pooled(after[c] - before[c])
        before, after = after, before
    return deltas


def _leaky(mod, n, _sink=[]):  # noqa: B006 (the planted leak)
    for _ in range(n):
        f = mod.Future()
        f.set_result(object())
        _sink.append(f)


def canary(mod, warmups, rounds):
    """The harness must see a leak that is there."""
    deltas = run_scenario(_leaky, mod, 50, warmups, rounds)
    return any(leaked(name, d, t)
               for (name, _, t), d in zip(COUNTERS, deltas))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-R", default="3:3", metavar="WARMUP:ROUNDS",
                   help="warm-up and measured rounds (default 3:3)")
    p.add_argument("-k", action="append", default=[],
                   help="only scenarios whose name contains this")
    p.add_argument("--impl", choices=["cfutures", "stdlib"],
                   default="cfutures",
                   help="stdlib runs the scenarios on concurrent.futures, "
                        "to check the harness for false positives")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--list", action="store_true")
    args = p.parse_args(argv)
    warmups, rounds = (int(x) for x in args.R.split(":"))
    mod = std if args.impl == "stdlib" else cfutures

    selected = [s for s in SCENARIOS
                if not args.k or any(k in s[0] for k in args.k)]
    if args.list:
        for name, *_ in selected:
            print(name)
        return 0

    global COMPLETER
    COMPLETER = Completer()
    logger = logging.getLogger("concurrent.futures")
    logger.addHandler(LOG)
    logger.propagate = False
    names = [name for name, _, _ in COUNTERS]
    print(f"leak gate: {sys.executable} {sys.version.split()[0]}, "
          f"impl={args.impl} ({mod.__file__}), -R {warmups}:{rounds}, "
          f"counters: {', '.join(names)}")
    if "refs" not in names:
        print("  note: not a debug interpreter, reference counts are not "
              "checked (use python3.11-dbg)")

    warm_up_asyncio()
    if not canary(mod, warmups, rounds):
        print("HARNESS BROKEN: a planted leak was not detected")
        return 2

    failures = 0
    t0 = time.monotonic()
    for name, fn, n, needs, ignore in selected:
        if needs is not None and not needs(mod):
            print(f"  skip  {name} (API not available yet)")
            continue
        start = time.monotonic()
        try:
            deltas = run_scenario(fn, mod, n, warmups, rounds)
        except BaseException:
            failures += 1
            print(f"  ERROR {name}")
            traceback.print_exc()
            if COMPLETER is not None:
                COMPLETER.drain()
            continue
        bad = [cname for (cname, _, t), d in zip(COUNTERS, deltas)
               if cname not in ignore and leaked(cname, d, t)]
        if bad:
            # Threads and the allocator leave a little noise now and then
            # (a +2 here and there); a real leak survives twice the rounds.
            print(f"  ...   {name}: growth in {', '.join(bad)} "
                  f"{[list(d) for d in deltas]}, confirming with -R "
                  f"{2 * warmups}:{2 * rounds}")
            deltas = run_scenario(fn, mod, n, 2 * warmups, 2 * rounds)
            bad = [cname for (cname, _, t), d in zip(COUNTERS, deltas)
                   if cname not in ignore and leaked(cname, d, t)]
        took = time.monotonic() - start
        if bad:
            failures += 1
        if bad or args.verbose:
            detail = "  ".join(f"{cname}={list(d)}" for (cname, _, _), d
                               in zip(COUNTERS, deltas))
            status = "LEAK " if bad else "ok   "
            print(f"  {status} {name} ({took:.1f}s)  {detail}")
        else:
            print(f"  ok    {name} ({took:.1f}s)")
    COMPLETER.stop()
    print(f"leak gate: {len(selected)} scenarios, {failures} failed, "
          f"{time.monotonic() - t0:.1f}s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
