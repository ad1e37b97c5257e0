"""The asyncio bridge: awaiting futures, batched wakeups, to_thread, install.

Differential where the stdlib has a counterpart: a concurrent.futures
future is awaited the way asyncio code must await it
(asyncio.wrap_future), a cfutures future directly; asyncio.to_thread is
the oracle of cfutures.to_thread.  Every test runs under asyncio's own
loop and uvloop.  Tests named test_ext_* check what has no stdlib
counterpart (the batching, awaiting a future directly).
"""
import asyncio
import concurrent.futures
import contextvars
import gc
import logging
import os
import signal
import sys
import threading
import time
import weakref

import pytest

import cfutures

# The loops (asyncio's and uvloop), `loop_factory`, `run` and `mod` are
# fixtures of conftest.py.
pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["asyncio", "cfutures"])
def to_thread(request):
    return {"asyncio": asyncio.to_thread,
            "cfutures": cfutures.to_thread}[request.param]


def aw(fut):
    """Await a concurrent future as asyncio code must: the stdlib's through
    wrap_future, cfutures' as it is."""
    if isinstance(fut, cfutures.Future):
        return fut
    return asyncio.wrap_future(fut)


async def await_it(awaitable):
    return await awaitable


async def wait_on(fut):
    return await aw(fut)


async def until(predicate, timeout=10):
    """Yield to the loop until predicate() holds (a fixed sleep is not
    enough on a loaded machine)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


def later(delay, fn, *args):
    t = threading.Timer(delay, fn, args)
    t.daemon = True
    t.start()
    return t


def run_in_loops(loop_factory, main, k=3, timeout=50):
    """Run main(i) to completion on k loops, one per thread, at once;
    return the k results in order; re-raise the first failure."""
    results, errors = [None] * k, []

    def in_thread(i):
        try:
            with asyncio.Runner(loop_factory=loop_factory) as r:
                results[i] = r.run(main(i))
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=in_thread, args=(i,))
               for i in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a loop hung"
    if errors:
        raise errors[0]
    return results


def set_pool(loop, pool):
    """Make `pool` the loop's default executor, where to_thread finds it."""
    loop.set_default_executor(pool)
    if not hasattr(loop, "_default_executor"):
        loop._default_executor = pool      # uvloop: see cfutures.install


def pool_type():
    return cfutures._aio_pool_type()


class Burst:
    """n jobs for a pool; job(i) returns i; all_ran is set once all of
    them have run.  With gated=True each job first waits for go."""

    def __init__(self, n, gated=False):
        self.left = n
        self.lock = threading.Lock()
        self.all_ran = threading.Event()
        self.go = threading.Event()
        if not gated:
            self.go.set()

    def job(self, i):
        self.go.wait(10)
        with self.lock:
            self.left -= 1
            if self.left == 0:
                self.all_ran.set()
        return i


class CountCalls:
    """Wrap loop.call_soon_threadsafe and count the calls."""

    def __init__(self, loop):
        self.loop = loop
        self.count = 0
        self.orig = loop.call_soon_threadsafe
        loop.call_soon_threadsafe = self

    def __call__(self, *args, **kwargs):
        self.count += 1
        return self.orig(*args, **kwargs)

    def restore(self):
        del self.loop.call_soon_threadsafe


# ---- awaiting a future ----------------------------------------------------

def test_await_finished_future(run, mod):
    async def main():
        f = mod.Future()
        f.set_result(42)
        g = mod.Future()
        g.set_exception(ValueError("boom"))
        h = mod.Future()
        h.set_result((1, 2))          # a tuple is a value, not args
        out = [await aw(f), await aw(h)]
        with pytest.raises(ValueError, match="boom"):
            await aw(g)
        return out
    assert run(main) == [42, (1, 2)]


def test_ext_await_finished_future_needs_no_loop():
    # A finished future returns at once: no loop, no yield.
    f = cfutures.Future()
    f.set_result("x")
    coro = await_it(f)
    with pytest.raises(StopIteration) as info:
        coro.send(None)
    assert info.value.value == "x"
    e = cfutures.Future()
    e.set_exception(KeyError("k"))
    with pytest.raises(KeyError):
        await_it(e).send(None)


def test_ext_future_is_not_an_asyncio_future():
    # asyncio.isfuture would make wrap_future return it unwrapped.
    f = cfutures.Future()
    assert not asyncio.isfuture(f)
    assert not hasattr(f, "_asyncio_future_blocking")
    assert not asyncio.iscoroutine(f)


def test_await_pending_future_completed_by_thread(run, mod):
    async def main():
        f, g = mod.Future(), mod.Future()
        later(0.02, f.set_result, "ok")
        later(0.03, g.set_exception, OSError("io"))
        r = await aw(f)
        with pytest.raises(OSError, match="io"):
            await aw(g)
        return r
    assert run(main) == "ok"


def test_future_used_like_a_loop_future(run, mod):
    # The tutorials' pattern: made in a coroutine, completed by another
    # coroutine, awaited, with done-callbacks.
    async def main():
        seen = []
        fut1, fut2 = mod.Future(), mod.Future()
        fut1.add_done_callback(lambda f: seen.append(("cb1", f.result())))
        fut2.add_done_callback(lambda f: seen.append(("cb2",
                                                      type(f.exception()))))

        async def producer():
            await asyncio.sleep(0.01)
            fut1.set_result("First Result")
            await asyncio.sleep(0.01)
            fut2.set_exception(RuntimeError("second failed"))

        task = asyncio.create_task(producer())
        r1 = await aw(fut1)
        with pytest.raises(RuntimeError):
            await aw(fut2)
        await task
        return r1, seen
    r1, seen = run(main)
    assert r1 == "First Result"
    assert seen == [("cb1", "First Result"), ("cb2", RuntimeError)]


def test_start_signal_shared_by_workers(run, mod):
    async def main():
        start = mod.Future()
        results = []

        async def worker(i):
            await aw(start)
            results.append((i, start.result()))

        tasks = [asyncio.create_task(worker(i)) for i in range(5)]
        await asyncio.sleep(0.01)
        start.set_result("go")
        await asyncio.gather(*tasks)
        return sorted(results)
    assert run(main) == [(i, "go") for i in range(5)]


def test_ext_completed_on_loop_thread_needs_no_threadsafe_call(run):
    async def main():
        loop = asyncio.get_running_loop()
        counter = CountCalls(loop)
        try:
            futs = [cfutures.Future() for _ in range(20)]

            async def complete():
                await asyncio.sleep(0)
                for i, f in enumerate(futs):
                    f.set_result(i)

            asyncio.get_running_loop().create_task(complete())
            out = [await f for f in futs]
        finally:
            counter.restore()
        return out, counter.count
    out, count = run(main)
    assert out == list(range(20))
    assert count == 0


# ---- cancellation, both ways ----------------------------------------------

def test_cancelling_task_cancels_pending_future(run, mod):
    async def main():
        f = mod.Future()
        task = asyncio.create_task(await_it(aw(f)))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.01)     # wrap_future cancels on a later turn
        return f.cancelled(), task.cancelled()
    assert run(main) == (True, True)


def test_cancelling_task_leaves_running_future(run, mod):
    async def main():
        f = mod.Future()
        assert f.set_running_or_notify_cancel()
        task = asyncio.create_task(await_it(aw(f)))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.01)
        f.set_result(1)               # completes normally, nobody waits
        return f.cancelled(), f.result()
    assert run(main) == (False, 1)


def test_cancelled_future_cancels_awaiter(run, mod):
    async def main():
        f = mod.Future()
        later(0.02, f.cancel)
        with pytest.raises(asyncio.CancelledError) as info:
            await aw(f)
        # asyncio's CancelledError, not concurrent.futures'
        return type(info.value)
    assert run(main) is asyncio.CancelledError


def test_cancelled_future_cancels_task(run, mod):
    async def main():
        f = mod.Future()
        task = asyncio.create_task(await_it(aw(f)))
        await asyncio.sleep(0.01)
        f.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return task.cancelled()
    assert run(main) is True


def test_await_already_cancelled_future(run, mod):
    async def main():
        f = mod.Future()
        f.cancel()
        with pytest.raises(asyncio.CancelledError):
            await aw(f)
    run(main)


# ---- asyncio's tools on cfutures futures ----------------------------------

def test_gather_return_exceptions(run, mod):
    async def main():
        futs = [mod.Future() for _ in range(4)]
        later(0.01, futs[0].set_result, 0)
        later(0.02, futs[1].set_exception, ValueError("v"))
        futs[2].set_result(2)
        later(0.01, futs[3].cancel)
        res = await asyncio.gather(*map(aw, futs), return_exceptions=True)
        return [type(r).__name__ if isinstance(r, BaseException) else r
                for r in res]
    assert run(main) == [0, "ValueError", 2, "CancelledError"]


def test_gather_propagates_first_exception(run, mod):
    async def main():
        a, b = mod.Future(), mod.Future()
        later(0.01, a.set_exception, KeyError("first"))
        with pytest.raises(KeyError):
            await asyncio.gather(aw(a), aw(b))
        b.set_result(None)
    run(main)


def as_asyncio_future(fut):
    """asyncio.wait (3.11+) takes asyncio futures only: a stdlib future is
    wrapped with wrap_future, a cfutures one with ensure_future (a Task
    awaiting it)."""
    if isinstance(fut, cfutures.Future):
        return asyncio.ensure_future(fut)
    return asyncio.wrap_future(fut)


def test_wait_first_completed_and_timeout(run, mod):
    async def main():
        a, b = mod.Future(), mod.Future()
        later(0.01, a.set_result, "a")
        done, pending = await asyncio.wait(
            [as_asyncio_future(a), as_asyncio_future(b)],
            return_when=asyncio.FIRST_COMPLETED)
        first = [d.result() for d in done]
        done2, pending2 = await asyncio.wait(pending, timeout=0.02)
        for p in pending2:
            p.cancel()
        await asyncio.sleep(0.01)
        return first, len(done2), len(pending2), b.cancelled()
    assert run(main) == (["a"], 0, 1, True)


def test_wait_for_timeout_cancels_future(run, mod):
    async def main():
        f = mod.Future()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(aw(f), 0.02)
        await asyncio.sleep(0.01)
        g = mod.Future()
        later(0.01, g.set_result, 5)
        return f.cancelled(), await asyncio.wait_for(aw(g), 5)
    assert run(main) == (True, 5)


def test_asyncio_timeout(run, mod):
    async def main():
        f = mod.Future()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.02):
                await aw(f)
        await asyncio.sleep(0.01)
        return f.cancelled()
    assert run(main) is True


def test_shield(run, mod):
    async def main():
        f = mod.Future()
        outer = asyncio.ensure_future(asyncio.shield(aw(f)))
        await asyncio.sleep(0.01)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        await asyncio.sleep(0.01)
        assert not f.cancelled()
        f.set_result("kept")
        return await aw(f)
    assert run(main) == "kept"


def test_taskgroup(run, mod):
    async def main():
        futs = [mod.Future() for _ in range(3)]
        for i, f in enumerate(futs):
            later(0.01 * i, f.set_result, i)
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(await_it(aw(f))) for f in futs]
        ok = [t.result() for t in tasks]
        bad = mod.Future()
        stuck = mod.Future()
        later(0.01, bad.set_exception, ValueError("tg"))
        with pytest.raises(ExceptionGroup):
            async with asyncio.TaskGroup() as tg:
                tg.create_task(await_it(aw(bad)))
                tg.create_task(await_it(aw(stuck)))
        await asyncio.sleep(0.01)
        return ok, stuck.cancelled()
    assert run(main) == ([0, 1, 2], True)


def test_as_completed(run, mod):
    async def main():
        futs = [mod.Future() for _ in range(3)]
        for i, f in enumerate(futs):
            later(0.03 - 0.01 * i, f.set_result, i)
        return [await c for c in asyncio.as_completed(map(aw, futs))]
    assert sorted(run(main)) == [0, 1, 2]


def test_wrap_future_and_done_callbacks(run, mod):
    async def main():
        f = mod.Future()
        seen = []
        f.add_done_callback(lambda fut: seen.append(fut.result()))
        w = asyncio.wrap_future(f)
        assert asyncio.isfuture(w)
        later(0.01, f.set_result, 3)
        return await w, seen
    assert run(main) == (3, [3])


def test_ensure_future_of_future(run, mod):
    async def main():
        f = mod.Future()
        t = asyncio.ensure_future(aw(f))
        later(0.01, f.set_result, "e")
        return await t
    assert run(main) == "e"


# ---- several loops, threads, bursts ----------------------------------------

def test_one_future_awaited_from_two_loops_in_two_threads(loop_factory, mod):
    f = mod.Future()
    results, errors = [], []
    started = threading.Barrier(3)

    def in_thread():
        async def main():
            started.wait()
            return await aw(f)
        try:
            with asyncio.Runner(loop_factory=loop_factory) as r:
                results.append(r.run(main()))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=in_thread) for _ in range(2)]
    for t in threads:
        t.start()
    started.wait()
    time.sleep(0.02)
    f.set_result("both")
    for t in threads:
        t.join(10)
    assert errors == []
    assert results == ["both", "both"]


@pytest.mark.timeout(60)
def test_many_loops_many_futures_many_completers(loop_factory, mod):
    n_loops, n_futs = 3, 200
    futs = [mod.Future() for _ in range(n_futs)]
    sums, errors = [], []
    ready = threading.Barrier(n_loops + 1)

    def in_thread():
        async def main():
            ready.wait()
            res = await asyncio.gather(*map(aw, futs))
            return sum(res)
        try:
            with asyncio.Runner(loop_factory=loop_factory) as r:
                sums.append(r.run(main()))
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    def complete(part):
        for i in range(part, n_futs, 2):
            futs[i].set_result(i)

    loops = [threading.Thread(target=in_thread) for _ in range(n_loops)]
    for t in loops:
        t.start()
    ready.wait()
    completers = [threading.Thread(target=complete, args=(k,))
                  for k in range(2)]
    for t in completers:
        t.start()
    for t in completers + loops:
        t.join(30)
    assert errors == []
    assert sums == [sum(range(n_futs))] * n_loops


def test_ext_one_threadsafe_call_per_burst(run):
    n = 200

    async def main():
        loop = asyncio.get_running_loop()
        futs = [cfutures.Future() for _ in range(n)]
        tasks = [asyncio.create_task(await_it(f)) for f in futs]
        await asyncio.sleep(0.01)      # all are waiting
        counter = CountCalls(loop)
        try:
            completed = threading.Event()

            def burst():
                for i, f in enumerate(futs):
                    f.set_result(i)
                completed.set()

            threading.Thread(target=burst).start()
            # Hold the loop thread so the whole burst lands before a flush.
            completed.wait(10)
            res = await asyncio.gather(*tasks)
        finally:
            counter.restore()
        return res, counter.count
    res, count = run(main)
    assert res == list(range(n))
    assert count == 1


def test_ext_to_thread_burst_is_batched(run):
    n = 100

    async def main():
        loop = asyncio.get_running_loop()
        set_pool(loop, pool_type()(max_workers=4))
        counter = CountCalls(loop)
        burst = Burst(n)
        try:
            # ensure_future takes each call as a future, which starts it
            # (a call is lazy, as asyncio.to_thread's coroutine).
            calls = [asyncio.ensure_future(cfutures.to_thread(burst.job, i))
                     for i in range(n)]
            burst.all_ran.wait(10)
            time.sleep(0.01)            # let the last post land
            res = await asyncio.gather(*calls)
        finally:
            counter.restore()
        return res, counter.count
    res, count = run(main)
    assert res == list(range(n))
    assert count == 1


def test_loop_closed_while_future_pending(loop_factory, mod, caplog):
    f = mod.Future()
    loop = loop_factory()
    task = loop.create_task(wait_on(f))
    loop.run_until_complete(asyncio.sleep(0.01))
    assert not task.done()
    loop.close()
    unraisable = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
            t = threading.Thread(target=f.set_result, args=("late",))
            t.start()
            t.join()
    finally:
        sys.unraisablehook = old_hook
    assert f.result() == "late"
    assert unraisable == []
    assert not [r for r in caplog.records if r.name == "concurrent.futures"]
    ref = weakref.ref(loop)
    task._log_destroy_pending = False
    # (the stdlib future keeps its callbacks, and so the loop, while alive)
    del task, loop, f
    gc.collect()
    assert ref() is None


def test_ext_failed_wakeup_is_retried_by_next_post(run):
    # call_soon_threadsafe failing with other than RuntimeError leaves a
    # running loop: the error is unraisable, and the burst stays queued
    # for the next post instead of being dropped (a lost wakeup).
    first, second = cfutures.Future(), cfutures.Future()
    unraisable = []

    async def main():
        loop = asyncio.get_running_loop()
        tasks = [asyncio.create_task(await_it(f)) for f in (first, second)]
        await asyncio.sleep(0.01)      # both are waiting
        orig = loop.call_soon_threadsafe
        fail = [1]

        def flaky(*args, **kwargs):
            if fail[0]:
                fail[0] -= 1
                raise ValueError("flaky")
            return orig(*args, **kwargs)

        loop.call_soon_threadsafe = flaky
        old_hook = sys.unraisablehook
        sys.unraisablehook = unraisable.append
        try:
            t = threading.Thread(target=first.set_result, args=(1,))
            t.start()
            t.join()
            await asyncio.sleep(0.01)
            assert not tasks[0].done()
            t = threading.Thread(target=second.set_result, args=(2,))
            t.start()
            t.join()
            return await asyncio.wait_for(asyncio.gather(*tasks), 10)
        finally:
            sys.unraisablehook = old_hook
            del loop.call_soon_threadsafe
    assert run(main) == [1, 2]
    assert [type(u.exc_value) for u in unraisable] == [ValueError]


def test_ext_loop_closed_while_to_thread_runs(loop_factory):
    gate = threading.Event()
    ran = threading.Event()
    loop = loop_factory()
    pool = pool_type()(max_workers=1)
    set_pool(loop, pool)

    def job():
        gate.wait(10)
        ran.set()
        return 1

    async def start():
        # ensure_future takes the lazy call as a future: that starts it.
        return asyncio.ensure_future(cfutures.to_thread(job))
    call = loop.run_until_complete(start())
    loop.close()
    gate.set()
    assert ran.wait(10)
    pool.shutdown(wait=True)
    assert not call.done()            # its loop is gone; nothing woke it
    ref = weakref.ref(loop)
    del loop, call
    gc.collect()
    assert ref() is None


def test_ext_no_leak_awaiting_pending_futures(run):
    async def main():
        for _ in range(200):
            f = cfutures.Future()
            later(0, f.set_result, [1])
            await f

    run(main)                           # warm up
    gc.collect()
    before = len(gc.get_objects())
    run(main)
    gc.collect()
    after = len(gc.get_objects())
    assert after - before < 100


# ---- the stdlib's bridges with cfutures objects ----------------------------

def _cfutures_pool_or_skip():
    if not hasattr(cfutures, "ThreadPoolExecutor"):
        pytest.skip("cfutures.ThreadPoolExecutor has not landed")
    return cfutures.ThreadPoolExecutor


def test_run_in_executor(run, mod):
    if mod is cfutures:
        _cfutures_pool_or_skip()

    async def main():
        loop = asyncio.get_running_loop()
        with mod.ThreadPoolExecutor(2) as pool:
            r = await loop.run_in_executor(pool, pow, 2, 10)
            with pytest.raises(ZeroDivisionError):
                await loop.run_in_executor(pool, divmod, 1, 0)
            res = await asyncio.gather(
                *[loop.run_in_executor(pool, abs, -i) for i in range(50)])
        return r, res
    assert run(main) == (1024, list(range(50)))


def test_run_in_executor_exceptions_and_cancel(run, mod):
    # What wrap_future's chain does on the loop: exceptions converted as
    # asyncio converts them, a cancelled task cancels the queued work, a
    # pool future cancelled by its pool cancels the asyncio future.
    if mod is cfutures:
        _cfutures_pool_or_skip()

    async def main():
        loop = asyncio.get_running_loop()
        with mod.ThreadPoolExecutor(1) as pool:
            with pytest.raises(asyncio.CancelledError):
                await loop.run_in_executor(
                    pool, _raise, concurrent.futures.CancelledError())
            with pytest.raises(KeyError):
                await loop.run_in_executor(pool, _raise, KeyError(1))
            release = threading.Event()
            blocker = loop.run_in_executor(pool, release.wait, 10)
            ran = []
            queued = loop.run_in_executor(pool, ran.append, 1)
            queued.cancel()
            with pytest.raises(asyncio.CancelledError):
                await queued
            # The chain cancels the pool future in a done-callback of the
            # asyncio future, which the loop runs on its next turn.
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            release.set()
            assert await blocker is True
            await loop.run_in_executor(pool, abs, 1)
            assert ran == []
    run(main)


def _raise(exc):
    raise exc


def test_wrap_future_completed_on_the_loop_thread(run, mod):
    # Completed by a coroutine of the same loop, and from another thread
    # for a loop other than the one the wrapping thread runs.
    async def main():
        f = mod.Future()
        w = asyncio.wrap_future(f)

        async def complete():
            f.set_result(7)
        await asyncio.ensure_future(complete())
        return await w
    assert run(main) == 7

    other = asyncio.new_event_loop()
    try:
        f = mod.Future()
        w = asyncio.wrap_future(f, loop=other)    # not the running loop

        async def main2():
            later(0.01, f.set_result, 8)
            return await w
        assert other.run_until_complete(main2()) == 8
    finally:
        other.close()


def test_wrap_future_destination_already_done(loop_factory, mod):
    # The chain's copy asserts the asyncio future is not done: the loop's
    # exception handler gets that error, whichever way the copy ran.
    seen = []

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, ctx: seen.append(ctx))
        f = mod.Future()
        w = asyncio.wrap_future(f)
        w.set_result("mine")
        later(0.001, f.set_result, "theirs")
        await until(lambda: seen)
        return await w
    with asyncio.Runner(loop_factory=loop_factory) as r:
        assert r.run(main()) == "mine"
    assert len(seen) == 1
    assert isinstance(seen[0]["exception"], AssertionError)
    assert seen[0]["message"].startswith("Exception in callback")


@pytest.mark.timeout(60)
def test_run_in_executor_many_loops_many_rounds(loop_factory, mod):
    if mod is cfutures:
        _cfutures_pool_or_skip()
    pool = mod.ThreadPoolExecutor(4)

    async def main(k):
        loop = asyncio.get_running_loop()
        total = 0
        for i in range(30):
            res = await asyncio.gather(
                *[loop.run_in_executor(pool, abs, -j) for j in range(50)],
                loop.run_in_executor(pool, _raise, KeyError(i)),
                return_exceptions=True)
            assert isinstance(res[-1], KeyError)
            total += sum(res[:-1])
            total += await loop.run_in_executor(pool, abs, -k)
        return total
    try:
        totals = run_in_loops(loop_factory, main)
    finally:
        pool.shutdown()
    assert totals == [30 * (1225 + k) for k in range(3)]


def test_ext_asyncio_callback_shapes_known():
    # asyncio's own done-callbacks are recognised by their exact shape;
    # one that changed in this interpreter's asyncio (a new Python) would
    # silently lose the batching: fail here instead.
    import asyncio.futures  # noqa: F401 (recognised once imported)
    import asyncio.tasks  # noqa: F401
    shapes = cfutures._cfutures._asyncio_callback_shapes()
    assert shapes["chain"] is not None, "asyncio._chain_future changed"
    assert shapes["wait"] is not None, "asyncio.tasks._wait changed"


def _hands_over_at_once():
    # Whether this asyncio's _chain_future completes the wrapped future at
    # once when the source finishes on the loop's own thread: it came with
    # a 3.13 bugfix release (3.13.0 still defers), so look, not by version.
    code = next(c for c in asyncio.futures._chain_future.__code__.co_consts
                if getattr(c, "co_name", None) == "_call_set_state")
    return "source_loop" not in code.co_freevars


@pytest.mark.parametrize("on", ["loop_thread", "other_thread"])
def test_wrap_future_completed_where_set(run, mod, on):
    # _chain_future hands the outcome over on the loop's next turn in the
    # older shape, and at once when completed on the loop's own thread in
    # the newer: the stdlib decides when the wrapped future is done.
    async def main():
        f = mod.Future()
        w = asyncio.wrap_future(f)
        if on == "loop_thread":
            f.set_result(1)
        else:
            t = threading.Thread(target=f.set_result, args=(1,))
            t.start()
            t.join()
        done_at_once = w.done()
        return done_at_once, await w
    got = run(main)
    want = (on == "loop_thread" and _hands_over_at_once(), 1)
    assert got == want


def test_ext_run_in_executor_burst_is_batched(run):
    # loop.run_in_executor chains the pool future to an asyncio future;
    # with a cfutures pool the chain's hand-over to the loop is batched
    # like an await: one call_soon_threadsafe for a burst, not one each.
    n = 100

    async def main():
        loop = asyncio.get_running_loop()
        counter = CountCalls(loop)
        burst = Burst(n, gated=True)    # none done before all are chained
        try:
            with cfutures.ThreadPoolExecutor(4) as pool:
                futs = [loop.run_in_executor(pool, burst.job, i)
                        for i in range(n)]
                burst.go.set()
                burst.all_ran.wait(10)
                time.sleep(0.01)            # let the last post land
                res = await asyncio.gather(*futs)
        finally:
            counter.restore()
        return res, counter.count
    res, count = run(main)
    assert res == list(range(n))
    assert count == 1


def test_ext_run_in_executor_loop_closed_while_running(loop_factory, caplog):
    # The loop goes away while the pool still runs the call: the chain's
    # hand-over is dropped, as _call_set_state returns on a closed loop.
    release = threading.Event()
    pool = cfutures.ThreadPoolExecutor(1)

    async def main():
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(pool, release.wait, 10)
    loop = loop_factory()
    try:
        fut = loop.run_until_complete(main())
    finally:
        loop.close()
    with caplog.at_level(logging.DEBUG):
        release.set()
        pool.shutdown(wait=True)
    assert not fut.done()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_default_executor_and_shutdown(loop_factory, mod):
    if mod is cfutures:
        _cfutures_pool_or_skip()
    pool = mod.ThreadPoolExecutor(2, thread_name_prefix="mine")

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_default_executor(pool)
        name = await loop.run_in_executor(
            None, lambda: threading.current_thread().name)
        name2 = await asyncio.to_thread(
            lambda: threading.current_thread().name)
        await loop.shutdown_default_executor()
        return name, name2
    with asyncio.Runner(loop_factory=loop_factory) as r:
        name, name2 = r.run(main())
    assert name.startswith("mine") and name2.startswith("mine")
    with pytest.raises(RuntimeError):
        pool.submit(abs, 1)


def test_install(loop_factory):
    async def main():
        pool = cfutures.install()
        loop = asyncio.get_running_loop()
        assert isinstance(pool, concurrent.futures.ThreadPoolExecutor)
        thread = threading.current_thread().name
        names = [
            await loop.run_in_executor(
                None, lambda: threading.current_thread().name),
            await asyncio.to_thread(lambda: threading.current_thread().name),
            await cfutures.to_thread(lambda: threading.current_thread().name),
        ]
        return pool, thread, names
    with asyncio.Runner(loop_factory=loop_factory) as r:
        pool, thread, names = r.run(main())
    assert all(n.startswith("cfutures") and n != thread for n in names), names
    with pytest.raises(RuntimeError):   # asyncio.run shut it down at the end
        pool.submit(abs, 1)


def test_install_with_explicit_loop(loop_factory):
    loop = loop_factory()
    try:
        pool = cfutures.install(loop)
        name = loop.run_until_complete(loop.run_in_executor(
            None, lambda: threading.current_thread().name))
        assert name.startswith("cfutures")
    finally:
        loop.close()
        pool.shutdown()


# ---- to_thread ------------------------------------------------------------

def test_to_thread_result_args_kwargs(run, to_thread):
    def f(a, b, /, *, fn=None, func=None):
        return (a, b, fn, func, threading.current_thread() is not main)
    main = threading.current_thread()

    async def go():
        return await to_thread(f, 1, 2, fn="x", func="y")
    assert run(go) == (1, 2, "x", "y", True)


def test_to_thread_is_what_asyncio_dispatches_on(run, to_thread):
    import inspect

    async def go():
        call = to_thread(abs, -3)
        checks = (asyncio.iscoroutine(call), inspect.isawaitable(call))
        return checks, await call
    assert run(go) == ((True, True), 3)


def test_ext_to_thread_is_not_an_inspect_coroutine(run):
    # A README difference: inspect.iscoroutine() is true only for Python's
    # own coroutine type, which a C object cannot be, and
    # getcoroutinestate() reads a frame it does not have.  A real coroutine
    # around the call measured 2x (one at a time) to 5x (gathered) slower.
    import inspect

    async def go():
        call = cfutures.to_thread(abs, -3)
        checks = (inspect.iscoroutine(call), asyncio.iscoroutine(call))
        return checks, await call
    assert run(go) == ((False, True), 3)


def test_to_thread_exception(run, to_thread):
    def boom():
        raise LookupError("deep")

    async def go():
        with pytest.raises(LookupError, match="deep") as info:
            await to_thread(boom)
        return info.value.__traceback__ is not None
    assert run(go) is True


def test_to_thread_base_exception(run, to_thread):
    class Stop(BaseException):
        pass

    def boom():
        raise Stop

    async def go():
        with pytest.raises(Stop):
            await to_thread(boom)
    run(go)


def test_to_thread_copies_context(run, to_thread):
    var = contextvars.ContextVar("var", default="unset")

    def f():
        seen = var.get()
        var.set("changed in thread")
        return seen

    async def go():
        var.set("set in task")
        seen = await to_thread(f)
        return seen, var.get()
    assert run(go) == ("set in task", "set in task")


def test_to_thread_gather_create_task_taskgroup(run, to_thread):
    async def go():
        g = await asyncio.gather(*[to_thread(abs, -i) for i in range(20)])
        t = await asyncio.create_task(to_thread(abs, -7))
        async with asyncio.TaskGroup() as tg:
            tt = tg.create_task(to_thread(abs, -8))
        w = await asyncio.wait_for(to_thread(abs, -9), 5)
        s = await asyncio.shield(to_thread(abs, -10))
        c = to_thread(abs, 0)
        assert asyncio.iscoroutine(c)
        c.close()
        return g, t, tt.result(), w, s
    assert run(go) == (list(range(20)), 7, 8, 9, 10)


@pytest.mark.timeout(30)
def test_to_thread_never_awaited_never_runs(run, to_thread):
    ran = threading.Event()

    async def go():
        call = to_thread(ran.set)
        for _ in range(5):
            await asyncio.sleep(0.01)
        assert not ran.is_set()
        with pytest.warns(RuntimeWarning, match="never awaited"):
            del call
            gc.collect()
    run(go)
    assert not ran.is_set()


@pytest.mark.timeout(30)
def test_to_thread_closed_never_runs(run, to_thread, recwarn):
    ran = threading.Event()

    async def go():
        call = to_thread(ran.set)
        call.close()
        await asyncio.sleep(0.02)
        del call
        gc.collect()
    run(go)
    assert not ran.is_set()
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


@pytest.mark.timeout(30)
def test_to_thread_started_without_await(run, to_thread):
    # ensure_future and create_task start the call; nobody awaits it.
    ran = [threading.Event(), threading.Event()]

    async def go():
        asyncio.ensure_future(to_thread(ran[0].set))
        t = asyncio.create_task(to_thread(ran[1].set))
        for _ in range(500):
            if all(e.is_set() for e in ran):
                break
            await asyncio.sleep(0.01)
        await t
    run(go)
    assert all(e.is_set() for e in ran)


@pytest.mark.timeout(30)
@pytest.mark.filterwarnings("ignore:coroutine 'to_thread' was never awaited")
def test_to_thread_taskgroup_finished_never_runs(run, to_thread):
    # TaskGroup.create_task on a finished group refuses the call.
    ran = threading.Event()

    async def go():
        async with asyncio.TaskGroup() as tg:
            pass
        with pytest.raises(RuntimeError):
            tg.create_task(to_thread(ran.set))
        await asyncio.sleep(0.05)
    run(go)
    assert not ran.is_set()


def test_to_thread_gather_return_exceptions(run, to_thread):
    async def go():
        res = await asyncio.gather(to_thread(int, "1"), to_thread(int, "x"),
                                   return_exceptions=True)
        return res[0], type(res[1])
    assert run(go) == (1, ValueError)


def test_to_thread_wait_for_timeout(run, to_thread):
    gate = threading.Event()

    async def go():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(to_thread(gate.wait, 10), 0.02)
        gate.set()
        async with asyncio.timeout(5):
            return await to_thread(abs, -1)
    assert run(go) == 1


def test_to_thread_cancel_before_start_never_runs(loop_factory, to_thread):
    gate = threading.Event()
    ran = []

    async def go():
        loop = asyncio.get_running_loop()
        pool = pool_type()(max_workers=1)
        set_pool(loop, pool)
        blocker = asyncio.ensure_future(to_thread(gate.wait, 10))
        await asyncio.sleep(0.01)
        queued = asyncio.ensure_future(to_thread(ran.append, 1))
        await asyncio.sleep(0.01)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        gate.set()
        await blocker
        await to_thread(ran.append, 2)
        return ran

    with asyncio.Runner(loop_factory=loop_factory) as r:
        assert r.run(go()) == [2]


def test_to_thread_task_cancelled_while_running(run, to_thread):
    gate = threading.Event()
    started = threading.Event()
    finished = threading.Event()

    def job():
        started.set()
        gate.wait(10)
        finished.set()
        return "unseen"

    async def go():
        task = asyncio.create_task(to_thread(job))
        # Running, not queued (a queued call is cancelled and never runs).
        await until(started.is_set)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.set()
        assert finished.wait(10)
        await asyncio.sleep(0.02)
        return task.cancelled()
    assert run(go) is True


def test_to_thread_task_cancelled_before_first_step(run, to_thread):
    ran = []

    async def go():
        task = asyncio.create_task(to_thread(ran.append, 1))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.05)
        return ran
    # asyncio's never submits; cfutures' cancels its pool future, which may
    # have started already: both end cancelled, and at most one run.
    assert run(go) in ([], [1])


def test_to_thread_outside_running_loop(loop_factory, to_thread):
    loop = loop_factory()
    try:
        assert loop.run_until_complete(to_thread(abs, -3)) == 3
    finally:
        loop.close()
    with asyncio.Runner(loop_factory=loop_factory) as r:
        assert r.run(to_thread(abs, -4)) == 4


def test_to_thread_many_concurrent_loops(loop_factory, to_thread):
    async def main(k):
        res = await asyncio.gather(*[to_thread(abs, -i) for i in range(100)])
        return sum(res) + k
    assert run_in_loops(loop_factory, main) == [4950, 4951, 4952]


def _busy(seconds, value):
    # Holds the GIL, as pure-Python work does.
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    if isinstance(value, BaseException):
        raise value
    return value


@pytest.mark.timeout(60)
def test_to_thread_one_at_a_time_around_the_poll_window(loop_factory,
                                                       to_thread):
    # Calls awaited one by one, lasting from nothing to well past the few
    # tens of microseconds a loop thread may poll for a call it just
    # submitted: every outcome arrives once, by whichever way it came,
    # in several loops at once.
    durations = [0, 0, 5e-6, 20e-6, 28e-6, 30e-6, 35e-6, 60e-6, 2e-4]

    async def main(k):
        total = 0
        for i in range(300):
            d = durations[(i * 7 + k) % len(durations)]
            if i % 5 == 0:
                with pytest.raises(KeyError) as info:
                    await to_thread(_busy, d, KeyError(i))
                assert info.value.args == (i,)
            elif i % 5 == 1:
                assert await to_thread(time.sleep, d / 2) is None
            else:
                assert await to_thread(_busy, d, value=i) == i
                total += i
        return total
    expected = sum(i for i in range(300) if i % 5 > 1)
    assert run_in_loops(loop_factory, main) == [expected] * 3


@pytest.mark.timeout(30)
def test_to_thread_waiting_on_the_loop_does_not_deadlock(run, to_thread):
    # The call can only finish once the loop runs something else: a
    # ready callback, a timer, another task.  A loop thread that polled
    # for the call without bound would hang here.
    async def main():
        loop = asyncio.get_running_loop()
        for _ in range(20):
            ev = threading.Event()
            loop.call_soon(ev.set)
            assert await to_thread(ev.wait, 10) is True
            ev = threading.Event()
            loop.call_later(0.001, ev.set)
            assert await to_thread(ev.wait, 10) is True
            ev = threading.Event()

            async def setter():
                ev.set()
            task = asyncio.ensure_future(setter())
            assert await to_thread(ev.wait, 10) is True
            await task
    run(main)


def test_ext_to_thread_stop_iteration_becomes_runtime_error(run):
    def f():
        raise StopIteration(5)

    async def go():
        with pytest.raises(RuntimeError) as info:
            await cfutures.to_thread(f)
        return type(info.value.__cause__)
    assert run(go) is StopIteration


def test_ext_to_thread_is_a_future_in_a_running_loop(run):
    async def go():
        c = cfutures.to_thread(abs, -1)
        assert asyncio.isfuture(c) and asyncio.iscoroutine(c)
        assert c.get_loop() is asyncio.get_running_loop()
        assert await c == 1
        assert c.done() and c.result() == 1 and c.exception() is None
        assert await c == 1             # like a future, awaitable again
        seen = []
        c.add_done_callback(seen.append)
        await asyncio.sleep(0)
        return seen == [c]
    assert run(go) is True


def test_ext_to_thread_shared_pool_when_default_is_not_ours(run):
    class Other(concurrent.futures.Executor):
        def submit(self, fn, *args, **kwargs):  # pragma: no cover
            raise AssertionError("must not be used")

    async def go():
        loop = asyncio.get_running_loop()
        if hasattr(loop, "_default_executor"):
            loop._default_executor = Other()
        name = await cfutures.to_thread(
            lambda: threading.current_thread().name)
        if hasattr(loop, "_default_executor"):
            loop._default_executor = None
        return name
    assert run(go).startswith("cfutures.to_thread")


def test_ext_to_thread_shut_down_pool_raises(run):
    async def go():
        loop = asyncio.get_running_loop()
        pool = pool_type()(max_workers=1)
        pool.shutdown()
        set_pool(loop, pool)
        with pytest.raises(RuntimeError):
            await cfutures.to_thread(abs, 1)
    run(go)


def test_ext_no_reference_leaks(run):
    # Everything handed in or out loses its references: arguments,
    # results, exceptions, the future, across every path.
    arg, res = object(), object()
    msg = object()

    def fn(a, *, k):
        return res

    def raise_it():
        raise ValueError(msg)           # a fresh one: a raised instance
                                        # keeps growing its traceback

    async def go():
        for _ in range(50):
            assert await cfutures.to_thread(fn, arg, k=arg) is res
            with pytest.raises(ValueError):
                await cfutures.to_thread(raise_it)
            await asyncio.gather(cfutures.to_thread(fn, arg, k=arg),
                                 cfutures.to_thread(raise_it),
                                 return_exceptions=True)
            f = cfutures.Future()
            later(0, f.set_result, res)
            assert await f is res
            g = cfutures.Future()
            t = asyncio.ensure_future(g)
            await asyncio.sleep(0)
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            c = cfutures.to_thread(fn, arg, k=arg)
            c.cancel()
        await asyncio.sleep(0.05)

    def counts():
        gc.collect()
        return [sys.getrefcount(o) for o in (arg, res, msg, fn, raise_it)]

    run(go)                         # warm up caches
    # A leak stays; a reference in flight goes.  Without the GIL a pool
    # worker runs on after posting a call's outcome, and until it drops
    # the call (with its exception) it holds one more reference to msg:
    # under load, for longer than the loop's last sleep.  So the baseline
    # is the lowest count seen over a while, and the check waits for the
    # counts to come down to it; a leak (50 rounds) never does.
    before = counts()
    for _ in range(10):
        time.sleep(0.02)
        before = [min(b, c) for b, c in zip(before, counts())]
    run(go)
    for _ in range(100):
        after = counts()
        if all(a <= b for a, b in zip(after, before)):
            break
        time.sleep(0.02)
    assert all(a <= b for a, b in zip(after, before)), (before, after)


def test_ext_asyncio_debug_mode(loop_factory):
    # Debug mode checks that call_soon runs on the loop's thread and that
    # callbacks are not coroutines: the bridge must pass its checks.
    async def main():
        f = cfutures.Future()
        later(0.01, f.set_result, 1)
        g = cfutures.Future()

        async def setter():
            g.set_result(2)
        asyncio.create_task(setter())
        res = await asyncio.gather(
            f, g, *[cfutures.to_thread(abs, -i) for i in range(10)])
        return res, await asyncio.create_task(cfutures.to_thread(abs, -3))
    with asyncio.Runner(debug=True, loop_factory=loop_factory) as r:
        assert r.run(main()) == ([1, 2] + list(range(10)), 3)


def test_unretrieved_exception_is_reported(loop_factory, to_thread):
    # asyncio logs an exception nobody retrieved when its future or task
    # is collected; so does a to_thread() call.
    reported = []

    def boom():
        raise ValueError("lost")

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda lp, ctx: reported.append(ctx))
        fut = asyncio.ensure_future(to_thread(boom))
        while not fut.done():
            await asyncio.sleep(0.01)
        del fut
        gc.collect()
        await asyncio.sleep(0)

    with asyncio.Runner(loop_factory=loop_factory) as r:
        r.run(main())
    assert [type(c.get("exception")) for c in reported] == [ValueError]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_ext_to_thread_after_fork():
    # The shared pool's threads do not exist in a forked child: it must get
    # a working pool, not hang.
    async def go():
        return await cfutures.to_thread(abs, -1)
    assert asyncio.run(go()) == 1       # the shared pool exists now
    pid = os.fork()
    if pid == 0:                        # pragma: no cover - the child
        signal.alarm(10)
        try:
            os._exit(0 if asyncio.run(go()) == 1 else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_ext_await_pool_futures(run):
    Pool = _cfutures_pool_or_skip()
    gate = threading.Event()
    ran = []

    async def main():
        with Pool(max_workers=2) as pool:
            res = await asyncio.gather(*[pool.submit(abs, -i)
                                         for i in range(200)])
            with pytest.raises(ZeroDivisionError):
                await pool.submit(divmod, 1, 0)
            blockers = [pool.submit(gate.wait, 10) for _ in range(2)]
            queued = pool.submit(ran.append, 1)
            task = asyncio.ensure_future(queued)
            await asyncio.sleep(0.01)
            task.cancel()               # cancels the queued call
            with pytest.raises(asyncio.CancelledError):
                await task
            gate.set()
            await asyncio.gather(*blockers)
            return res, queued.cancelled(), ran
    assert run(main) == (list(range(200)), True, [])
