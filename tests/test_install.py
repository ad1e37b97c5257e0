"""cfutures.install(): the one line that makes unmodified asyncio code use
cfutures, and cfutures.uninstall().

Differential: the same asyncio program runs with and without install()
(the `installed` fixture: "plain" is the oracle), on asyncio's loop and
uvloop.  Tests named test_ext_* check what only the installed mode has.
"""
import asyncio
import asyncio.base_events
import concurrent.futures
import contextvars
import functools
import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import pytest

import cfutures

pytestmark = pytest.mark.timeout(60)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(params=["plain", "install"])
def installed(request):
    """False for plain asyncio, True with cfutures.install() in force."""
    if request.param == "install":
        cfutures.install()
        yield True
        cfutures.uninstall()
    else:
        yield False


def noop():
    pass


def thread_names():
    return {t.name for t in threading.enumerate()}


# ---- results, exceptions, the returned future -----------------------------

def test_results_and_exceptions(installed, run):
    def boom(x):
        raise ValueError(x)

    async def main():
        loop = asyncio.get_running_loop()
        out = [await loop.run_in_executor(None, pow, 2, 10),
               await asyncio.to_thread(pow, 3, 2),
               await asyncio.to_thread(int, "ff", base=16)]
        for call in (lambda: loop.run_in_executor(None, boom, 1),
                     lambda: asyncio.to_thread(boom, 2)):
            with pytest.raises(ValueError) as info:
                await call()
            out.append(info.value.args)
        return out

    assert run(main) == [1024, 9, 255, (1,), (2,)]


def test_returned_future_is_an_asyncio_future(installed, run):
    async def main():
        loop = asyncio.get_running_loop()
        gate = threading.Event()
        f = loop.run_in_executor(None, gate.wait, 10)
        seen = [asyncio.isfuture(f), asyncio.iscoroutine(f), f.done(),
                f.get_loop() is loop]
        with pytest.raises(asyncio.InvalidStateError):
            f.result()
        called = []
        f.add_done_callback(lambda fut: called.append(fut is f))
        gate.set()
        seen.append(await f)
        seen.append((f.done(), f.result(), f.exception(), f.cancelled()))
        await asyncio.sleep(0)
        seen.append(called)
        # What asyncio builds on futures takes it.
        fs = [loop.run_in_executor(None, pow, 2, i) for i in range(20)]
        seen.append(await asyncio.gather(*fs))
        done, pending = await asyncio.wait(
            [loop.run_in_executor(None, noop) for _ in range(5)])
        seen.append((len(done), len(pending)))
        seen.append(await asyncio.wait_for(
            loop.run_in_executor(None, pow, 2, 3), 10))
        seen.append(await asyncio.shield(
            loop.run_in_executor(None, pow, 2, 4)))
        got = [await c for c in asyncio.as_completed(
            [loop.run_in_executor(None, pow, 2, 5)])]
        seen.append(got)
        return seen

    assert run(main) == [True, False, False, True, True,
                         (True, True, None, False), [True],
                         [2 ** i for i in range(20)], (5, 0), 8, 16, [32]]


def test_wait_for_timeout_cancels(installed, run):
    async def main():
        loop = asyncio.get_running_loop()
        gate = threading.Event()
        f = loop.run_in_executor(None, gate.wait, 10)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(f, 0.05)
        gate.set()
        return f.cancelled()

    assert run(main) is True


# ---- the first done-callback, before any await ----------------------------
#
# asyncio.shield(), gather(), wait() and a bare add_done_callback() add a
# callback to run_in_executor's future before (or instead of) awaiting it;
# with install() the loop may poll for a short call there (asgiref's
# sync_to_async shields every call).  Whatever the poll does, the future
# behaves as asyncio's: pending when returned, it stays so until the
# loop's next turn, callbacks run from the loop with their context, in the
# order added, a callback removed before completion never runs, and
# cancel() wins.  (On 3.13, asyncio's own future may be done when
# run_in_executor returns: see _check_done_at_once.)
# Many rounds of short calls, one at a time: the case that polls.

ROUNDS = 100


def _done_at_once():
    """Whether this interpreter's wrap_future completes its future at once
    when the call finished before it was wrapped, on the loop's thread
    (3.13's does; 3.11's completes it on a later turn)."""
    for const in asyncio.futures._chain_future.__code__.co_consts:
        if getattr(const, "co_name", None) == "_call_set_state":
            return "_get_running_loop" in const.co_names
    return False


def _check_done_at_once(seen):
    """seen: rounds that start with whether run_in_executor's future was
    done when returned.  Where wrap_future completes on a later turn it
    never is; where it completes at once on the loop's thread (3.13), it
    is when the worker ran the call before it was wrapped, and the rest
    of the round follows from that, as for the interpreter's asyncio."""
    if not _done_at_once():
        assert {r[0] for r in seen} == {False}


def test_first_callback_shield_one_at_a_time(installed, run):
    async def main():
        loop = asyncio.get_running_loop()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            out = []
            for i in range(ROUNDS):
                for ex in (None, pool):
                    out.append(await asyncio.shield(
                        loop.run_in_executor(ex, pow, 2, i % 8)))
            gathered = [(await asyncio.gather(
                loop.run_in_executor(None, abs, -i)))[0]
                for i in range(ROUNDS)]
            waited = 0
            for _ in range(ROUNDS):
                done, _ = await asyncio.wait(
                    [loop.run_in_executor(pool, noop)])
                waited += len(done)
        return out, gathered, waited

    assert run(main) == ([2 ** (i % 8) for i in range(ROUNDS)
                          for _ in range(2)],
                         list(range(ROUNDS)), ROUNDS)


def test_first_callback_bare(installed, run):
    async def main():
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, noop)    # a started pool
        seen = []
        for i in range(ROUNDS):
            f = loop.run_in_executor(None, pow, 3, i % 5)
            done0 = f.done()            # see _check_done_at_once
            calls = []
            ctx = contextvars.copy_context()
            ctx.run(VAR.set, "given")
            f.add_done_callback(lambda fut: calls.append(("a", fut.result(),
                                                          VAR.get())))
            # Nothing runs, and the future does not complete, inside a
            # synchronous call.
            after_add = (f.done(), list(calls))
            f.add_done_callback(lambda fut: calls.append(("b", VAR.get())),
                                context=ctx)
            while not f.done():
                await asyncio.sleep(0)
            at_done = list(calls)       # run by the loop, after done()
            await asyncio.sleep(0)
            seen.append((done0, after_add,
                         at_done == calls or at_done == [], list(calls)))
            f.add_done_callback(lambda fut: calls.append("late"))
            assert calls[-1] != "late"  # call_soon, as for a done future
            await asyncio.sleep(0)
            assert calls[-1] == "late"
        return seen

    seen = run(main)
    _check_done_at_once(seen)
    assert seen == [(done0, (done0, []), True,
                     [("a", 3 ** (i % 5), "unset"), ("b", "given")])
                    for i, (done0, *_) in enumerate(seen)]


def test_first_callback_removed_before_completion(installed, run):
    async def main():
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, noop)    # a started pool
        seen = []
        for i in range(ROUNDS):
            f = loop.run_in_executor(None, noop)
            done0 = f.done()
            calls = []

            def first(fut):
                calls.append("first")

            def second(fut):
                calls.append("second")

            f.add_done_callback(first)
            removed = f.remove_done_callback(first)
            f.add_done_callback(first)
            f.add_done_callback(second)
            f.add_done_callback(first)
            removed_again = f.remove_done_callback(first)
            await f
            await asyncio.sleep(0)
            seen.append((done0, removed, removed_again, list(calls)))
        return seen

    seen = run(main)
    _check_done_at_once(seen)
    assert seen == [(True, 0, 0, ["first", "first", "second", "first"])
                    if done0 else (False, 1, 2, ["second"])
                    for done0, *_ in seen]


def test_first_callback_then_cancel(installed, run):
    async def main():
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, noop)    # a started pool
        seen = []
        for i in range(ROUNDS):
            f = loop.run_in_executor(None, noop)
            done0 = f.done()
            calls = []
            f.add_done_callback(lambda fut: calls.append(fut.cancelled()))
            cancelled = f.cancel()
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            seen.append((done0, cancelled, f.cancelled(), list(calls)))
        return seen

    seen = run(main)
    _check_done_at_once(seen)
    assert seen == [(True, False, False, [False]) if done0
                    else (False, True, True, [True]) for done0, *_ in seen]


def test_first_call_of_a_new_pool(installed, run):
    """A pool's first submit waits for its new worker to start, which may
    run the call meanwhile: the future run_in_executor returns is then
    done at once only where the interpreter's asyncio does that."""
    async def main():
        loop = asyncio.get_running_loop()
        seen = []
        for _ in range(20):
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                f = loop.run_in_executor(pool, noop)
                done = f.done()
                calls = []
                f.add_done_callback(calls.append)
                removed = f.remove_done_callback(calls.append)
                await f
                await asyncio.sleep(0)
                seen.append((done, removed, len(calls)))
        return seen

    seen = run(main)
    _check_done_at_once(seen)
    assert all(s in [(False, 1, 0), (True, 0, 1)] for s in seen), seen


def test_first_callback_shield_outer_cancelled(installed, run):
    """asgiref's pattern: the task awaiting shield(f) is cancelled; f runs
    on and is awaited afterwards."""
    async def main():
        loop = asyncio.get_running_loop()
        gate = threading.Event()
        f = loop.run_in_executor(None, lambda: gate.wait(10) and "ran")
        task = asyncio.create_task(_await(asyncio.shield(f)))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        state = (f.done(), f.cancelled())
        gate.set()
        return state, await f

    assert run(main) == ((False, False), "ran")


# ---- cancellation, both ways ----------------------------------------------

def test_cancel_awaiting_task(installed, run):
    async def main():
        loop = asyncio.get_running_loop()
        gate, ran = threading.Event(), threading.Event()

        def work():
            ran.set()
            gate.wait(10)
            return "finished anyway"

        f = loop.run_in_executor(None, work)
        task = asyncio.ensure_future(f)
        waiter = asyncio.create_task(_await(f))
        await asyncio.to_thread(ran.wait, 10)
        for _ in range(1000):          # until the waiter awaits f
            if waiter._fut_waiter is not None:
                break
            await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        gate.set()
        # The function runs on; the returned future was cancelled with its
        # awaiter, as asyncio's wrap_future future is.
        return f.cancelled(), task is f

    assert run(main) == (True, True)


async def _await(aw):
    return await aw


def test_cancel_task_awaiting_to_thread(installed, run):
    async def main():
        gate, ran, finished = (threading.Event(), threading.Event(),
                               threading.Event())

        def work():
            ran.set()
            gate.wait(10)
            finished.set()

        task = asyncio.create_task(_await(asyncio.to_thread(work)))
        await asyncio.sleep(0)
        await asyncio.get_running_loop().run_in_executor(None, ran.wait, 10)
        task.cancel("stop")
        with pytest.raises(asyncio.CancelledError):
            await task
        gate.set()
        return await asyncio.to_thread(finished.wait, 10)

    assert run(main) is True


def test_cancel_returned_future_before_it_runs(installed, run):
    async def main():
        loop = asyncio.get_running_loop()
        gate = threading.Event()
        ran = []
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            busy = loop.run_in_executor(pool, gate.wait, 10)
            queued = loop.run_in_executor(pool, ran.append, 1)
            waiter = asyncio.create_task(_await(queued))
            await asyncio.sleep(0)
            assert queued.cancel("why") is True
            assert queued.cancel() is False
            with pytest.raises(asyncio.CancelledError):
                await waiter
            gate.set()
            await busy
        return ran, queued.cancelled()

    assert run(main) == ([], True)


def test_cancelled_by_executor_shutdown(installed, run):
    """shutdown(cancel_futures=True) cancels queued calls: their asyncio
    futures are cancelled, as wrap_future's."""
    async def main():
        loop = asyncio.get_running_loop()
        gate, started = threading.Event(), threading.Event()

        def hold():
            started.set()
            return gate.wait(10)
        pool = concurrent.futures.ThreadPoolExecutor(1)
        busy = loop.run_in_executor(pool, hold)
        queued = loop.run_in_executor(pool, noop)
        # The worker has taken `busy`: only `queued` is left to cancel
        # (without the GIL, the worker may not have reached it yet).
        started.wait(10)
        pool.shutdown(wait=False, cancel_futures=True)
        gate.set()
        await busy
        with pytest.raises(asyncio.CancelledError):
            await queued
        return queued.cancelled()

    assert run(main) is True


def test_to_thread_cancelled_by_executor_shutdown(installed, run):
    """The same for asyncio.to_thread on the loop's default executor."""
    async def main():
        loop = asyncio.get_running_loop()
        pool = concurrent.futures.ThreadPoolExecutor(1)
        loop.set_default_executor(pool)
        gate, started = threading.Event(), threading.Event()

        def hold():
            started.set()
            return gate.wait(10)
        busy = asyncio.ensure_future(asyncio.to_thread(hold))
        queued = asyncio.ensure_future(asyncio.to_thread(noop))
        # Until the worker has taken `busy`: only `queued` is left to
        # cancel (the loop runs the to_thread calls meanwhile).
        for _ in range(10_000):
            if started.is_set():
                break
            await asyncio.sleep(0.001)
        pool.shutdown(wait=False, cancel_futures=True)
        gate.set()
        await busy
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(queued, 10)
        return queued.cancelled()

    assert run(main) is True


def test_ext_cfutures_to_thread_cancelled_by_shutdown(run):
    async def main():
        pool = cfutures.ThreadPoolExecutor(1)
        loop = asyncio.get_running_loop()
        loop.set_default_executor(pool)
        loop._default_executor = pool     # uvloop: where to_thread looks
        gate = threading.Event()
        busy = asyncio.ensure_future(cfutures.to_thread(gate.wait, 10))
        queued = cfutures.to_thread(noop)
        waiter = asyncio.ensure_future(_await(queued))
        await asyncio.sleep(0.01)
        pool.shutdown(wait=False, cancel_futures=True)
        gate.set()
        await busy
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(waiter, 10)
        return queued.cancelled()

    assert run(main) is True


# ---- contextvars ----------------------------------------------------------

VAR = contextvars.ContextVar("VAR", default="unset")


def test_contextvars(installed, run):
    async def main():
        VAR.set("task's")
        loop = asyncio.get_running_loop()
        # to_thread copies the context; run_in_executor does not.
        return (await asyncio.to_thread(VAR.get),
                await loop.run_in_executor(None, VAR.get))

    assert run(main) == ("task's", "unset")


def test_to_thread_context_is_a_copy(installed, run):
    async def main():
        VAR.set("before")
        await asyncio.to_thread(VAR.set, "in thread")
        return VAR.get()

    assert run(main) == "before"


# ---- default executors ----------------------------------------------------

@pytest.mark.parametrize("pool_mod", [concurrent.futures, cfutures],
                         ids=["stdlib_pool", "cfutures_pool"])
def test_set_default_executor(installed, run, pool_mod):
    pool = pool_mod.ThreadPoolExecutor(2, thread_name_prefix="mine")

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_default_executor(pool)
        name = lambda: threading.current_thread().name  # noqa: E731
        return ((await loop.run_in_executor(None, name))[:4],
                (await asyncio.to_thread(name))[:4],
                (await asyncio.gather(*[asyncio.to_thread(name)
                                        for _ in range(10)]))[0][:4])

    assert run(main) == ("mine", "mine", "mine")
    # asyncio.run shut it down.
    with pytest.raises(RuntimeError):
        pool.submit(noop)


class StdPoolSubclass(concurrent.futures.ThreadPoolExecutor):
    """Defined before any install(): a subclass of the stdlib's pool."""


@pytest.mark.parametrize("make", [
    lambda: StdPoolSubclass(2, thread_name_prefix="mine"),
    lambda: concurrent.futures.thread.ThreadPoolExecutor(
        2, thread_name_prefix="mine")], ids=["subclass", "thread_module"])
def test_set_default_executor_stdlib_pool_made_otherwise(installed, run, make):
    """asyncio's set_default_executor checks the class that install()
    rebinds; a stdlib pool is still accepted."""
    pool = make()

    async def main():
        loop = asyncio.get_running_loop()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            loop.set_default_executor(pool)
        name = lambda: threading.current_thread().name  # noqa: E731
        return ((await loop.run_in_executor(None, name))[:4],
                (await asyncio.to_thread(name))[:4])

    assert run(main) == ("mine", "mine")


def test_default_executor_made_lazily(installed, loop_factory):
    loop = loop_factory()
    try:
        name = lambda: threading.current_thread().name  # noqa: E731
        got = loop.run_until_complete(loop.run_in_executor(None, name))
        got2 = loop.run_until_complete(asyncio.to_thread(name))
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
    prefix = "uvloop" if "uvloop" in type(loop).__module__ else "asyncio"
    assert got.startswith(prefix) and got2.startswith(prefix)


def test_shutdown_default_executor(installed, run):
    async def main():
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, noop)
        await loop.shutdown_default_executor()
        errors = []
        try:
            loop.run_in_executor(None, noop)
        except RuntimeError as e:
            errors.append(str(e))
        try:
            await asyncio.to_thread(noop)
        except RuntimeError as e:
            errors.append(str(e))
        return errors

    assert run(main) == ["Executor shutdown has been called"] * 2


def test_shutdown_default_executor_before_use(installed, run):
    async def main():
        loop = asyncio.get_running_loop()
        await loop.shutdown_default_executor()
        with pytest.raises(RuntimeError, match="Executor shutdown"):
            loop.run_in_executor(None, noop)
        with pytest.raises(RuntimeError, match="Executor shutdown"):
            await asyncio.to_thread(noop)

    run(main)


def test_asyncio_run_leaves_no_threads(installed, loop_factory):
    before = threading.active_count()

    async def main():
        loop = asyncio.get_running_loop()
        await asyncio.gather(*[asyncio.to_thread(time.sleep, 0.01)
                               for _ in range(8)])
        await asyncio.gather(*[loop.run_in_executor(None, time.sleep, 0.01)
                               for _ in range(8)])

    with asyncio.Runner(loop_factory=loop_factory) as r:
        r.run(main())
    # asyncio.run's cleanup joined the default executor's workers.
    assert threading.active_count() == before, thread_names()


def test_loop_closed_mid_call(installed, loop_factory):
    errors = []
    loop = loop_factory()
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    gate, ran, done = threading.Event(), threading.Event(), threading.Event()

    def work():
        ran.set()
        gate.wait(10)
        done.set()
        return 1

    async def start():
        f = loop.run_in_executor(None, work)
        t = asyncio.ensure_future(asyncio.to_thread(work))
        await asyncio.get_running_loop().run_in_executor(None, ran.wait, 10)
        return f, t

    f, t = loop.run_until_complete(start())
    loop.close()                  # shuts the default executor down, no wait
    gate.set()
    assert done.wait(10)
    time.sleep(0.05)
    assert not f.done()
    del f, t
    gc.collect()
    # asyncio's to_thread leaves a pending Task, reported when collected;
    # the installed to_thread makes no Task (README "Differences").
    assert [c for c in errors
            if c["message"] != "Task was destroyed but it is pending!"] == []


# ---- the types stay the stdlib's ------------------------------------------

def test_stdlib_futures_still_instances(installed):
    assert isinstance(concurrent.futures.Future(), concurrent.futures.Future)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        f = pool.submit(pow, 2, 5)
        assert isinstance(f, concurrent.futures.Future)
        assert concurrent.futures.wait([f]).done == {f}
        assert list(concurrent.futures.as_completed([f])) == [f]
    with concurrent.futures.ProcessPoolExecutor(1) as pool:
        fs = [pool.submit(pow, 2, i) for i in range(4)]
        assert all(isinstance(f, concurrent.futures.Future) for f in fs)
        done, _ = concurrent.futures.wait(fs, timeout=60)
        assert done == set(fs)
        got = sorted(f.result() for f in
                     concurrent.futures.as_completed(fs, timeout=60))
    assert got == [1, 2, 4, 8]
    assert concurrent.futures.Future is concurrent.futures._base.Future


def test_ext_names_rebound():
    originals = (concurrent.futures.ThreadPoolExecutor,
                 concurrent.futures.wait, concurrent.futures.as_completed,
                 asyncio.to_thread)
    assert cfutures.install() is None
    try:
        assert concurrent.futures.ThreadPoolExecutor is \
            cfutures.ThreadPoolExecutor
        assert concurrent.futures.wait is cfutures.wait
        assert concurrent.futures.as_completed is cfutures.as_completed
        assert asyncio.to_thread is asyncio.threads.to_thread
        assert asyncio.to_thread is not originals[3]
        # Left alone: subclassing the stdlib's pool in its module keeps
        # working (3.14's InterpreterPoolExecutor does).
        assert concurrent.futures.thread.ThreadPoolExecutor is originals[0]
        assert concurrent.futures.Future is concurrent.futures._base.Future
    finally:
        cfutures.uninstall()


def _snapshot():
    import asyncio.threads
    snap = {
        "cf": dict(vars(concurrent.futures)),
        "asyncio.to_thread": asyncio.to_thread,
        "threads.to_thread": asyncio.threads.to_thread,
        "BaseEventLoop": dict(vars(asyncio.base_events.BaseEventLoop)),
        "meta_path": list(sys.meta_path),
    }
    if "uvloop" in sys.modules:
        snap["uvloop.Loop"] = dict(vars(sys.modules["uvloop"].Loop))
    return snap


def test_ext_uninstall_restores_everything():
    pytest.importorskip("uvloop")
    before = _snapshot()
    for _ in range(3):
        cfutures.install()
        cfutures.install()        # twice is once
        assert _snapshot() != before
        cfutures.uninstall()
        assert _snapshot() == before
    cfutures.uninstall()          # without install: nothing
    assert _snapshot() == before


def test_ext_fast_path_types(loop_factory):
    cfutures.install()
    try:
        async def main():
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, noop)     # makes the default
            f = loop.run_in_executor(None, noop)
            call = asyncio.to_thread(noop)
            with cfutures.ThreadPoolExecutor(2) as pool:
                g = loop.run_in_executor(pool, noop)
                await g
            with concurrent.futures.thread.ThreadPoolExecutor(2) as pool:
                h = loop.run_in_executor(pool, noop)
                await h
            await f
            await call
            return (type(f).__name__, type(g).__name__, type(h),
                    type(call).__name__,
                    type(loop._default_executor) is cfutures.ThreadPoolExecutor)

        with asyncio.Runner(loop_factory=loop_factory) as r:
            got = r.run(main())
        assert got == ("_LoopFuture", "_LoopFuture", asyncio.Future,
                       "_ToThreadCall", True)
    finally:
        cfutures.uninstall()


def test_ext_debug_mode_takes_asyncio_path():
    """asyncio's debug checks (coroutine functions refused) stay its own."""
    cfutures.install()
    try:
        async def coro():
            pass

        async def main():
            loop = asyncio.get_running_loop()
            f = loop.run_in_executor(None, noop)
            await f
            with pytest.raises(TypeError):
                loop.run_in_executor(None, coro)
            return type(f)
        with asyncio.Runner(debug=True) as r:
            assert r.run(main()) is asyncio.Future
    finally:
        cfutures.uninstall()


def test_ext_install_in_running_loop(run):
    async def main():
        loop = asyncio.get_running_loop()
        pool = cfutures.install()
        assert isinstance(pool, cfutures.ThreadPoolExecutor)
        f = loop.run_in_executor(None, threading.current_thread)
        t = await f
        return type(f).__name__, t.name.startswith("cfutures")

    assert run(main) == ("_LoopFuture", True)
    # The process-wide names were not touched.
    assert concurrent.futures.ThreadPoolExecutor is \
        concurrent.futures.thread.ThreadPoolExecutor


def test_ext_uninstall_takes_back_a_loops_fast_path(loop_factory):
    # install(loop) gives that loop cfutures' run_in_executor; uninstall()
    # gives it back its class's, while the loop runs on.
    loop = loop_factory()
    try:
        pool = cfutures.install(loop)
        own = type(loop).run_in_executor
        assert "run_in_executor" in vars(loop)

        async def call():
            f = loop.run_in_executor(None, threading.current_thread)
            return type(f).__name__, (await f).name

        kind, name = loop.run_until_complete(call())
        assert kind == "_LoopFuture" and name.startswith("cfutures")
        cfutures.uninstall()
        assert "run_in_executor" not in vars(loop)
        assert loop.run_in_executor.__func__ is own
        kind, name = loop.run_until_complete(call())
        # The class's path, on the pool install(loop) made, which stays.
        assert kind != "_LoopFuture" and name.startswith("cfutures")
        assert loop._default_executor is pool
        cfutures.uninstall()          # again: nothing
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


def test_exception_never_retrieved_is_reported(installed, loop_factory):
    errors = []
    loop = loop_factory()
    loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
    try:
        def boom():
            raise KeyError("lost")

        async def main():
            f = loop.run_in_executor(None, boom)
            await asyncio.wait([f])
        loop.run_until_complete(main())
        gc.collect()
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
    assert [type(c["exception"]) for c in errors] == [KeyError]
    assert errors[0]["message"] == "Future exception was never retrieved"


# ---- whole programs -------------------------------------------------------

def _python(code, timeout=60):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=ROOT)


def test_ext_process_exits():
    r = _python("""
        import cfutures
        cfutures.install()
        import asyncio, concurrent.futures, threading

        async def main():
            loop = asyncio.get_running_loop()
            await asyncio.gather(*[asyncio.to_thread(pow, 2, i)
                                   for i in range(100)])
            await loop.run_in_executor(None, pow, 2, 2)
            with concurrent.futures.ProcessPoolExecutor(1) as pp:
                assert await loop.run_in_executor(pp, pow, 2, 3) == 8
            # left running: the interpreter must still exit
            concurrent.futures.ThreadPoolExecutor(2).submit(pow, 2, 4)
        asyncio.run(main())
        print("ok")
    """)
    assert (r.returncode, r.stdout.strip(), r.stderr) == (0, "ok", "")


def test_ext_uvloop_imported_after_install():
    pytest.importorskip("uvloop")
    r = _python("""
        import cfutures
        cfutures.install()
        import asyncio, uvloop

        async def main():
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, pow, 2, 2)
            f = loop.run_in_executor(None, pow, 2, 3)
            assert await f == 8
            print(type(f).__name__, type(loop._default_executor).__name__)
        uvloop.run(main())
        cfutures.uninstall()
        assert "run_in_executor" not in vars(uvloop.Loop)
    """)
    assert (r.returncode, r.stdout.strip(), r.stderr) == \
        (0, "_LoopFuture ThreadPoolExecutor", "")


def test_coroutine_function_refused_on_uvloop(installed):
    uvloop = pytest.importorskip("uvloop")

    async def coro():
        pass

    async def main():
        loop = asyncio.get_running_loop()
        refused = []
        for fn in (coro, coro(), functools.partial(coro)):
            try:
                loop.run_in_executor(None, fn)
            except TypeError:
                refused.append(True)
            if asyncio.iscoroutine(fn):
                fn.close()
        return refused

    assert uvloop.run(main()) == [True, True, True]
