"""asyncio.wait() on cfutures futures, and Future.remove_done_callback.

Since 3.11 asyncio.wait() passes its futures as they are to
asyncio.tasks._wait, which registers a done-callback, awaits a loop future
that the callback completes, and removes the callback again.  A cfutures
future is passed bare; the oracle is the same wait on the stdlib's future
wrapped with asyncio.wrap_future (asyncio.wait takes no bare stdlib
future).  Both must give the same done and pending sets.  Every test runs
under asyncio's own loop and uvloop.

remove_done_callback is an extension (concurrent.futures.Future has none):
its oracle is asyncio.Future's.  Tests named test_ext_* check what the
stdlib's concurrent future cannot do.
"""
import asyncio
import asyncio.tasks
import concurrent.futures
import gc
import logging
import random
import sys
import threading
import time
import types
import weakref

import pytest

import cfutures

# The loops (asyncio's and uvloop), `loop_factory`, `run` and `mod` are
# fixtures of conftest.py.
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def no_errors(caplog):
    """Fail the test if a callback error is logged (concurrent.futures,
    asyncio) or an unraisable exception is reported."""
    unraisable = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        with caplog.at_level(logging.ERROR):
            yield
    finally:
        sys.unraisablehook = old_hook
    gc.collect()
    errors = [r for r in caplog.records
              if r.name in ("concurrent.futures", "asyncio")
              and r.levelno >= logging.ERROR]
    assert errors == []
    assert unraisable == []


def aw(fut):
    """What asyncio.wait is given: a cfutures future as it is, a stdlib
    one wrapped (asyncio.wait rejects it bare)."""
    if isinstance(fut, cfutures.Future):
        return fut
    return asyncio.wrap_future(fut)


def later(delay, fn, *args):
    t = threading.Timer(delay, fn, args)
    t.daemon = True
    t.start()
    return t


def on_completion_code():
    return next(c for c in asyncio.tasks._wait.__code__.co_consts
                if getattr(c, "co_name", None) == "_on_completion")


# ---- the same scenario on both sides -------------------------------------
#
# A scenario is a list of steps, run in order by one completer: a thread,
# a pool worker, a coroutine on the loop thread, or the test itself before
# asyncio.wait is called ("done").  So which futures are done when the
# wait returns does not depend on timing.

class Boom(Exception):
    pass


def apply(futs, steps):
    for i, what in steps:
        f = futs[i]
        if what == "cancel":
            f.cancel()
        elif isinstance(what, BaseException):
            f.set_exception(what)
        else:
            f.set_result(what)


def outcome(w):
    """How a future given to asyncio.wait ended, comparable across sides."""
    if w.cancelled():
        return "cancelled"
    exc = w.exception()
    return ("raised", type(exc)) if exc is not None else ("ok", w.result())


COMPLETERS = ["thread", "pool", "coroutine", "done"]

BOOM = Boom("boom")
SCENARIOS = {
    # name: (number of futures, steps, asyncio.wait kwargs, done indices)
    "all": (3, [(0, "a"), (2, BOOM), (1, "b")],
            dict(return_when=asyncio.ALL_COMPLETED), {0, 1, 2}),
    "first_completed": (3, [(1, "b")],
                        dict(return_when=asyncio.FIRST_COMPLETED), {1}),
    "first_exception": (4, [(0, "a"), (2, "cancel"), (1, BOOM)],
                        dict(return_when=asyncio.FIRST_EXCEPTION),
                        {0, 1, 2}),
    "first_exception_none_raised": (
        2, [(1, "b"), (0, "a")], dict(return_when=asyncio.FIRST_EXCEPTION),
        {0, 1}),
    "timeout": (3, [(2, "c")], dict(timeout=0.2), {2}),
    "first_completed_timeout": (
        2, [], dict(timeout=0.02, return_when=asyncio.FIRST_COMPLETED),
        set()),
}


def run_scenario(run, mod, completer, name):
    n, steps, kwargs, _ = SCENARIOS[name]
    futs = [mod.Future() for _ in range(n)]
    pool = concurrent.futures.ThreadPoolExecutor(1)

    async def main():
        loop = asyncio.get_running_loop()
        ws = [aw(f) for f in futs]
        task = None
        if completer == "done":
            apply(futs, steps)
        elif completer == "thread":
            later(0.005, apply, futs, steps)
        elif completer == "pool":
            pool.submit(lambda: (time.sleep(0.005), apply(futs, steps)))
        else:
            async def complete():
                await asyncio.sleep(0.005)
                apply(futs, steps)
            task = asyncio.create_task(complete())
        done, pending = await asyncio.wait(ws, **kwargs)
        if task is not None:
            await task
        assert done | pending == set(ws) and not done & pending
        assert all(w.done() for w in done)
        return ({i for i, w in enumerate(ws) if w in done},
                {i: outcome(w) for i, w in enumerate(ws) if w in done},
                weakref.ref(loop))

    try:
        res = run(main)
    finally:
        pool.shutdown(wait=True)
    # The futures the wait left pending finish after its loop is closed:
    # nothing may be run on that loop or logged, and nothing keeps the
    # loop alive any more.
    t = threading.Thread(target=lambda: [f.set_result(None) for f in futs
                                         if not f.done()])
    t.start()
    t.join()
    gc.collect()
    if mod is cfutures:
        assert res[2]() is None
    del futs        # the stdlib future keeps wrap_future's callbacks
    gc.collect()
    assert res[2]() is None
    return res[:2]


@pytest.mark.parametrize("completer", COMPLETERS)
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_wait(run, mod, completer, name, no_errors):
    done, outcomes = run_scenario(run, mod, completer, name)
    assert done == SCENARIOS[name][3]
    expected = {}
    for i, what in SCENARIOS[name][1]:
        if i in done:
            expected[i] = ("cancelled" if what == "cancel"
                           else ("raised", Boom) if what is BOOM
                           else ("ok", what))
    assert outcomes == expected


def test_wait_in_debug_mode(run, mod, no_errors):
    # Debug mode checks that call_soon comes from the loop's thread.
    async def main():
        futs = [mod.Future() for _ in range(4)]
        later(0.005, futs[0].set_result, 0)
        later(0.01, futs[1].set_exception, BOOM)

        async def on_loop():
            await asyncio.sleep(0.005)
            futs[2].set_result(2)
        task = asyncio.create_task(on_loop())
        ws = [aw(f) for f in futs]
        done, pending = await asyncio.wait(ws[:3])
        futs[3].set_result(3)
        done2, _ = await asyncio.wait([ws[3]])
        await task
        return len(done), len(pending), len(done2)
    assert run(main, debug=True) == (3, 0, 1)


def test_wait_pool_futures_as_they_complete(run, mod, no_errors):
    # The usual loop: wait FIRST_COMPLETED until nothing is pending.
    def work(i):
        time.sleep(random.random() * 0.002)
        if i % 7 == 3:
            raise Boom(i)
        return i * i

    async def main():
        with mod.ThreadPoolExecutor(4) as pool:
            srcs = [pool.submit(work, i) for i in range(60)]
            ws = [aw(f) for f in srcs]
            pending, rounds, out = set(ws), 0, {}
            while pending:
                done, pending = await asyncio.wait(
                    pending, return_when=asyncio.FIRST_COMPLETED)
                assert done
                rounds += 1
                for w in done:
                    out[ws.index(w)] = outcome(w)
            return out, rounds
    out, rounds = run(main)
    assert out == {i: ("raised", Boom) if i % 7 == 3 else ("ok", i * i)
                   for i in range(60)}
    assert 1 <= rounds <= 60


def test_wait_mixed_with_tasks_and_loop_futures(run, mod, no_errors):
    async def main():
        loop = asyncio.get_running_loop()
        f, g = mod.Future(), mod.Future()
        lf = loop.create_future()
        task = asyncio.create_task(asyncio.sleep(0.005, "task"))
        wf, wg = aw(f), aw(g)
        # A task finishes first.
        done, pending = await asyncio.wait(
            [wf, task, lf], return_when=asyncio.FIRST_COMPLETED)
        first = (done == {task}, pending == {wf, lf})
        # Then a cfutures/stdlib future, completed by a thread.
        later(0.005, f.set_result, "f")
        slow = asyncio.create_task(asyncio.sleep(10))
        done, pending = await asyncio.wait(
            [wf, slow, lf], return_when=asyncio.FIRST_COMPLETED)
        second = (done == {wf}, pending == {slow, lf})
        # All of them, the loop future set by a callback on the loop.
        slow.cancel()
        loop.call_later(0.005, lf.set_result, "lf")
        later(0.01, g.set_exception, BOOM)
        done, pending = await asyncio.wait([wf, wg, slow, lf, task])
        third = (done == {wf, wg, slow, lf, task}, pending == set())
        return first, second, third, wg.exception() is BOOM
    assert run(main) == ((True, True), (True, True), (True, True), True)


def test_wait_cancelled_leaves_futures_pending(run, mod, no_errors):
    # Cancelling the task that waits neither cancels the futures (asyncio
    # .wait does not) nor leaves a callback behind that would run later.
    futs = [mod.Future() for _ in range(3)]

    async def main():
        loop = asyncio.get_running_loop()
        ws = [aw(f) for f in futs]
        t = asyncio.create_task(asyncio.wait(ws))
        await asyncio.sleep(0.01)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        states = [f.done() for f in futs]
        return states, weakref.ref(loop)

    states, ref = run(main)
    assert states == [False] * 3
    later(0, apply, futs, [(0, 1), (1, BOOM), (2, "cancel")]).join()
    gc.collect()
    if mod is cfutures:
        assert ref() is None
    del futs        # the stdlib future keeps wrap_future's callbacks
    gc.collect()
    assert ref() is None


def test_wait_task_outlives_closed_loop(loop_factory, mod, no_errors):
    # The loop is closed while asyncio.wait still waits on it; then the
    # future completes in another thread.  The callback cannot be run on
    # that loop: it is dropped, silently.
    f = mod.Future()
    loop = loop_factory()

    async def waiting():
        return await asyncio.wait([aw(f)])
    task = loop.create_task(waiting())
    loop.run_until_complete(asyncio.sleep(0.01))
    assert not task.done()
    loop.close()
    t = threading.Thread(target=f.set_result, args=("late",))
    t.start()
    t.join()
    assert f.result() == "late"
    assert not task.done()
    task._log_destroy_pending = False
    ref = weakref.ref(loop)
    del task, loop, f
    gc.collect()
    assert ref() is None


@pytest.mark.timeout(60)
@pytest.mark.parametrize("return_when", [asyncio.ALL_COMPLETED,
                                         asyncio.FIRST_COMPLETED,
                                         asyncio.FIRST_EXCEPTION])
def test_wait_races_completers_and_timeout(loop_factory, mod, return_when,
                                           no_errors, race_rounds):
    # Many threads complete futures while the wait's timeout expires: the
    # wait returns consistent sets, a second wait gets every future (no
    # lost wakeup), and no callback is left behind or run twice.
    rounds, nfut, nthreads = race_rounds(30), 12, 3
    rng = random.Random(5)
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)

    def completer(futs, go, delays):
        go.wait()
        for f, d in zip(futs, delays):
            if d:
                time.sleep(d)
            if rng.random() < 0.2:
                f.set_exception(BOOM)
            else:
                f.set_result(None)

    async def main():
        loop = asyncio.get_running_loop()
        for _ in range(rounds):
            futs = [mod.Future() for _ in range(nfut)]
            ws = [aw(f) for f in futs]
            go = threading.Event()
            threads = [
                threading.Thread(target=completer, args=(
                    futs[k::nthreads], go,
                    [rng.random() * 0.001 for _ in futs[k::nthreads]]))
                for k in range(nthreads)]
            for t in threads:
                t.start()
            go.set()
            timeout = rng.random() * 0.003
            done, pending = await asyncio.wait(
                ws, timeout=timeout, return_when=return_when)
            assert done | pending == set(ws) and not done & pending
            assert all(w.done() for w in done)
            if pending:
                done2, pending2 = await asyncio.wait_for(
                    asyncio.wait(pending), 10)
                assert pending2 == set() and done2 == pending
            for t in threads:
                t.join()
        return weakref.ref(loop)

    try:
        with asyncio.Runner(loop_factory=loop_factory) as r:
            ref = r.run(main())
    finally:
        sys.setswitchinterval(old_interval)
    gc.collect()
    assert ref() is None


def test_ext_completed_on_loop_thread_needs_no_threadsafe_call(run):
    # A future completed by another coroutine wakes asyncio.wait through
    # call_soon: no self-pipe write.
    async def main():
        loop = asyncio.get_running_loop()
        futs = [cfutures.Future() for _ in range(5)]
        calls = []
        orig = loop.call_soon_threadsafe

        def counting(*args, **kwargs):
            calls.append(args)
            return orig(*args, **kwargs)
        loop.call_soon_threadsafe = counting
        try:
            async def complete():
                await asyncio.sleep(0.005)
                for i, f in enumerate(futs):
                    f.set_result(i)
            task = asyncio.create_task(complete())
            done, pending = await asyncio.wait(futs)
            await task
        finally:
            del loop.call_soon_threadsafe
        return len(done), len(pending), calls
    assert run(main) == (5, 0, [])


def make_on_completion(counter, waiter, return_when=asyncio.ALL_COMPLETED):
    """A function with asyncio.wait's own _on_completion code, on cells of
    our choosing: what asyncio.tasks._wait registers."""
    code = on_completion_code()
    # cur_task (3.14+): the task awaiting asyncio.wait, for its
    # awaited-by bookkeeping, which skips what is not an asyncio future.
    cells = {"counter": counter, "return_when": return_when,
             "timeout_handle": None, "waiter": waiter, "cur_task": None}
    fn = types.FunctionType(
        code, asyncio.tasks.__dict__, "_on_completion", None,
        tuple(types.CellType(cells[v]) for v in code.co_freevars))
    counter_cell = fn.__closure__[code.co_freevars.index("counter")]
    return fn, counter_cell


class FakeWaiter:
    """Stands for _wait's loop future: records where it is completed."""

    def __init__(self):
        self.threads = []

    def done(self):
        return bool(self.threads)

    def set_result(self, value):
        self.threads.append(threading.get_ident())


def test_ext_wait_callback_runs_on_the_loop_thread(run):
    # asyncio.wait's callback, for a future completed by another thread,
    # runs on the loop's thread (asyncio.Future's semantics), not in the
    # completer; other callbacks still run in the completer.
    async def main():
        waiter = FakeWaiter()
        fn, counter = make_on_completion(1, waiter)
        seen = []
        f = cfutures.Future()
        f.add_done_callback(fn)
        f.add_done_callback(lambda _: seen.append(threading.get_ident()))
        t = later(0.005, f.set_result, 1)
        deadline = time.monotonic() + 10
        while not waiter.threads and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        t.join()
        return waiter.threads, counter.cell_contents, seen, t.ident
    threads, counter, seen, tid = run(main)
    assert threads == [threading.get_ident()]
    assert counter == 0
    assert seen == [tid]


def test_ext_wait_callback_without_running_loop_is_plain():
    # Registered outside a running loop, it is an ordinary callback.
    waiter = FakeWaiter()
    fn, counter = make_on_completion(1, waiter)
    f = cfutures.Future()
    f.add_done_callback(fn)
    t = later(0, f.set_result, 1)
    t.join()
    assert waiter.threads == [t.ident]
    assert f.remove_done_callback(fn) == 0


# ---- ordinary callbacks keep concurrent.futures' semantics ----------------

def _on_completion(record):
    """A callback that shares asyncio.wait's name but not its code."""
    def _on_completion(fut):
        record.append((threading.get_ident(), fut.result()))
    return _on_completion


@pytest.mark.parametrize("same_name", [False, True],
                         ids=["plain", "named_on_completion"])
def test_add_done_callback_in_coroutine_runs_in_completing_thread(
        run, mod, same_name):
    async def main():
        record = []
        if same_name:
            cb = _on_completion(record)
        else:
            def cb(fut):
                record.append((threading.get_ident(), fut.result()))
        f = mod.Future()
        f.add_done_callback(cb)
        right_after = []

        def complete():
            f.set_result(7)
            # Run by set_result itself, before it returned.
            right_after.append(list(record))
        t = threading.Thread(target=complete)
        t.start()
        t.join()
        # Already done: run at once, in this thread, not on a later turn.
        g = mod.Future()
        g.set_result(8)
        g.add_done_callback(cb)
        now = list(record)
        return t.ident, right_after, now
    tid, right_after, now = run(main)
    assert right_after == [[(tid, 7)]]
    assert now == [(tid, 7), (threading.get_ident(), 8)]


# ---- remove_done_callback -------------------------------------------------
#
# The oracle is asyncio.Future: a future of a loop that is not running,
# whose callbacks run when the loop is run briefly.

@pytest.fixture(params=["asyncio", "cfutures"])
def cbfut(request):
    """(make, finish): make() a pending future; finish(f, value) completes
    it and runs its callbacks."""
    if request.param == "cfutures":
        yield cfutures.Future, lambda f, v: f.set_result(v)
        return
    loop = asyncio.new_event_loop()

    def finish(f, v):
        f.set_result(v)
        loop.run_until_complete(asyncio.sleep(0))
        loop.run_until_complete(asyncio.sleep(0))
    yield (lambda: asyncio.Future(loop=loop)), finish
    loop.close()


class Recorder:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def __call__(self, fut):
        self.log.append(self.name)


class Named:
    """Callables equal by name: a new object each time, as bound methods."""

    def __init__(self, name, log):
        self.name, self.log = name, log

    def __call__(self, fut):
        self.log.append(self.name)

    def __eq__(self, other):
        return isinstance(other, Named) and other.name == self.name

    __hash__ = None


def test_ext_remove_done_callback_counts(cbfut):
    make, finish = cbfut
    log = []
    a, b = Recorder("a", log), Recorder("b", log)
    f = make()
    assert f.remove_done_callback(a) == 0
    f.add_done_callback(a)
    assert f.remove_done_callback(b) == 0
    assert f.remove_done_callback(a) == 1
    for cb in (a, b, a, a, b):
        f.add_done_callback(cb)
    assert f.remove_done_callback(a) == 3
    assert f.remove_done_callback(a) == 0
    f.add_done_callback(a)
    finish(f, 1)
    assert log == ["b", "b", "a"]
    assert f.remove_done_callback(a) == 0
    assert f.remove_done_callback(b) == 0


def test_ext_remove_done_callback_by_equality(cbfut):
    make, finish = cbfut
    log = []

    class Obj:
        def meth(self, fut):
            log.append("meth")
    o = Obj()
    f = make()
    f.add_done_callback(o.meth)
    f.add_done_callback(Named("x", log))
    f.add_done_callback(o.meth)
    f.add_done_callback(Named("y", log))
    assert o.meth is not o.meth
    assert f.remove_done_callback(o.meth) == 2
    assert f.remove_done_callback(Named("x", log)) == 1
    finish(f, None)
    assert log == ["y"]


def test_ext_remove_done_callback_comparison_error(cbfut):
    make, finish = cbfut
    log = []

    class Bad(Recorder):
        def __eq__(self, other):
            raise ZeroDivisionError
        __hash__ = None

    f = make()
    f.add_done_callback(Recorder("a", log))
    f.add_done_callback(Bad("bad", log))
    with pytest.raises(ZeroDivisionError):
        f.remove_done_callback(Recorder("z", log))
    finish(f, None)
    assert log == ["a", "bad"]


def test_ext_remove_done_callback_comparison_adds_callback(cbfut):
    # The future's callbacks change while they are compared: the new one
    # is kept, the removal still happens.
    make, finish = cbfut
    log = []
    f = make()
    late = Recorder("late", log)

    class Sneaky(Recorder):
        added = False

        def __eq__(self, other):
            if not self.added:
                self.added = True
                f.add_done_callback(late)
            return False
        __hash__ = None

    a = Recorder("a", log)
    f.add_done_callback(Sneaky("sneaky", log))
    f.add_done_callback(a)
    assert f.remove_done_callback(a) == 1
    finish(f, None)
    assert log == ["sneaky", "late"]


@pytest.mark.parametrize("nothers", [0, 2], ids=["single", "list"])
def test_ext_remove_done_callback_comparison_completes_future(nothers):
    # The future completes while its callbacks are compared: they run,
    # each once, and none is counted as removed.  (asyncio.Future would
    # put them back on a done future, where they never run.)
    log = []
    f = cfutures.Future()
    a = Recorder("a", log)

    class Completer(Recorder):
        def __eq__(self, other):
            if not f.done():
                f.set_result(1)
            return False
        __hash__ = None

    f.add_done_callback(Completer("c", log))
    for _ in range(nothers):
        f.add_done_callback(a)
    assert f.remove_done_callback(a) == 0
    assert log == ["c"] + ["a"] * nothers


def test_ext_remove_done_callback_removes_wait_binding(run):
    # asyncio.wait's callback is registered bound to the loop; removing
    # the function removes the binding too.
    async def main():
        loop = asyncio.get_running_loop()
        waiter = FakeWaiter()
        fn, counter = make_on_completion(5, waiter)
        log = []
        other = Recorder("other", log)
        f = cfutures.Future()
        f.add_done_callback(fn)
        assert f.remove_done_callback(fn) == 1
        f.add_done_callback(fn)
        f.add_done_callback(other)
        f.add_done_callback(fn)
        assert f.remove_done_callback(fn) == 2
        assert f.remove_done_callback(fn) == 0
        f.add_done_callback(fn)
        f.set_result(None)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return log, counter.cell_contents, weakref.ref(loop)
    log, counter, ref = run(main)
    assert log == ["other"]
    assert counter == 4                 # only the last one ran
    gc.collect()
    assert ref() is None


@pytest.mark.timeout(60)
def test_ext_remove_done_callback_races_completion(race_rounds):
    # remove_done_callback in one thread, set_result in another: every
    # callback is removed or run, exactly once.  Comparisons run Python
    # code (Named.__eq__), so threads switch in the middle of a removal.
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for rnd in range(race_rounds(300)):
            log = []
            f = cfutures.Future()
            cbs = [Named(f"n{i % 5}", log) for i in range(12)]
            for cb in cbs:
                f.add_done_callback(cb)
            removed = []
            barrier = threading.Barrier(3)

            def remover(name):
                barrier.wait()
                removed.append((name, f.remove_done_callback(
                    Named(name, log))))

            def completer():
                barrier.wait()
                f.set_result(rnd)
            threads = [threading.Thread(target=remover, args=("n1",)),
                       threading.Thread(target=remover, args=("n3",)),
                       threading.Thread(target=completer)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            counts = {f"n{i}": log.count(f"n{i}") for i in range(5)}
            for name, k in removed:
                total = sum(c.name == name for c in cbs)
                assert k in (0, total)          # all or none, atomically
                assert counts[name] + k == total
            for name in ("n0", "n2", "n4"):
                assert counts[name] == sum(c.name == name for c in cbs)
    finally:
        sys.setswitchinterval(old_interval)
