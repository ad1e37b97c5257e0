"""Scaling out: the code that waits and awaits, over a distributed executor.

DESIGN.md contract point 4: cfutures.wait() and as_completed() take any
concurrent.futures.Future, so a user who outgrows one machine swaps the
executor and keeps the rest.  The engine here is real: a dask.distributed
LocalCluster of two worker processes (one thread each) on loopback, started
once for the module and closed at its end.

What dask's executor hands out (distributed/cfexecutor.py): plain stdlib
futures, completed from the client's own event-loop thread (a tornado
loop in a thread of this process).  They stay PENDING until the task ends,
never RUNNING, so cancel() succeeds even while the task runs; dask then
cancels the task and calls set_running_or_notify_cancel(), which is when
wait() sees the future as done.  A worker process killed mid-task fails the
future with KilledWorker (allowed-failures is 0 here) and its nanny starts a
new one.  A stdlib future cannot be awaited: asyncio code wraps it
(asyncio.wrap_future, or loop.run_in_executor(executor, ...)).

Tests are differential where the behaviour is shared: the stdlib's wait()
and as_completed() are the oracle over the same dask futures (mod), and
the same fan-out body runs over a cfutures pool and dask's executor
(executor).  Tasks that must stay unfinished wait for a gate file, so
nothing depends on timing and no worker is left blocked after a test.
"""
import asyncio
import concurrent.futures as std
import logging
import os
import signal
import sys
import threading
import time

import pytest

import cfutures

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")
cloudpickle = pytest.importorskip("cloudpickle")

from distributed import Client, LocalCluster  # noqa: E402
from distributed.scheduler import KilledWorker  # noqa: E402

# Every test finishes in seconds; a hang fails it.  Blocking calls carry
# their own, shorter timeouts (T) so a failure says where it stuck.
pytestmark = pytest.mark.timeout(90)
T = 30


# ---- tasks (run in the worker processes) --------------------------------
# Pickled by value (see the cluster fixture): the workers need not import
# this module, and with it pytest and cfutures.

def square(x, delay=0.0):
    time.sleep(delay)
    return x * x


def fail(message):
    raise ValueError(message)


def gated(gate, value, pidfile=None, error=None, limit=T):
    """Return value (or raise ValueError(error)) once the file gate exists.

    pidfile: first write this process's pid there, to say the task runs."""
    if pidfile is not None:
        with open(pidfile + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(pidfile + ".tmp", pidfile)
    deadline = time.monotonic() + limit
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} never opened")
        time.sleep(0.005)
    if error is not None:
        raise ValueError(error)
    return value


# ---- fixtures ---------------------------------------------------------------

@pytest.fixture(scope="module")
def client():
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    # allowed-failures=0: a task whose worker dies fails at once with
    # KilledWorker instead of being retried elsewhere.
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True,
            host="127.0.0.1", dashboard_address=None,
            # No dashboard; the scheduler's small HTTP server (health
            # checks) on any free loopback port, not on 8787.
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            # Failed tasks and the killed worker are expected: keep their
            # log lines (from the worker processes too) out of the output.
            silence_logs=logging.CRITICAL,
        )
        try:
            c = Client(cluster)
            try:
                yield c
            finally:
                c.close()
        finally:
            cluster.close()
            cloudpickle.unregister_pickle_by_value(module)


@pytest.fixture
def dask_ex(client):
    """dask's concurrent.futures executor, with both workers up.

    pure=False: equal calls are distinct tasks (dask would otherwise merge
    them into one key)."""
    client.wait_for_workers(2, timeout=T)
    return client.get_executor(pure=False)


@pytest.fixture
def cf_pool():
    with cfutures.ThreadPoolExecutor(max_workers=2) as pool:
        yield pool


@pytest.fixture(params=["cfutures-pool", "dask"])
def executor(request):
    """The same code over a cfutures pool and over dask's executor."""
    return request.getfixturevalue(
        "cf_pool" if request.param == "cfutures-pool" else "dask_ex")


class Gates:
    """Gate files for gated(); every gate is opened when the test ends, so
    no worker stays busy (a cancelled dask task still runs to its end)."""

    def __init__(self, tmp_path):
        self.dir = tmp_path
        self.paths = []

    def new(self):
        path = str(self.dir / f"gate{len(self.paths)}")
        self.paths.append(path)
        return path

    @staticmethod
    def open(path):
        with open(path, "w"):
            pass

    def open_all(self):
        for p in self.paths:
            self.open(p)


@pytest.fixture
def gates(tmp_path):
    g = Gates(tmp_path)
    yield g
    g.open_all()


def later(delay, fn, *args):
    t = threading.Timer(delay, fn, args)
    t.daemon = True
    t.start()
    return t


def wait_for_file(path, timeout=T):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.005)
    with open(path) as f:
        return f.read()


def in_thread(fn, *args, **kwargs):
    """Run a wait (fn, with a timeout of T) in a thread; returns a function
    that joins it and returns fn's result or raises its exception.

    The wait must have ended by an event, well before its timeout: a wait
    that missed the event would often return the same sets at T."""
    out = {}

    def target():
        t0 = time.monotonic()
        try:
            out["value"] = fn(*args, **kwargs)
        except BaseException as e:  # noqa: B902 - handed to the joiner
            out["error"] = e
        out["elapsed"] = time.monotonic() - t0

    t = threading.Thread(target=target, daemon=True)
    t.start()

    def join():
        t.join(T + 10)
        assert not t.is_alive(), "the waiting thread hangs"
        if "error" in out:
            raise out["error"]
        assert out["elapsed"] < T / 2, "woke by its timeout, not the event"
        return out["value"]
    return join


# ---- the same fan-out on one machine and on a cluster -----------------------

def test_fan_out(executor):
    fs = [executor.submit(square, i, 0.01 * (i % 3)) for i in range(20)]
    done, not_done = cfutures.wait(fs, timeout=T)
    assert (done, not_done) == (set(fs), set())
    seen = list(cfutures.as_completed(fs, timeout=T))
    assert sorted(seen, key=fs.index) == fs
    assert [f.result() for f in fs] == [i * i for i in range(20)]


def test_fan_out_first_exception(executor):
    fs = [executor.submit(square, i) for i in range(4)]
    bad = executor.submit(fail, "boom")
    done, _ = cfutures.wait(fs + [bad], timeout=T,
                            return_when=cfutures.FIRST_EXCEPTION)
    assert bad in done
    with pytest.raises(ValueError, match="boom"):
        bad.result()
    assert isinstance(bad.exception(), ValueError)


def test_dask_futures_are_stdlib_futures(dask_ex):
    # What the rest of this file relies on: the foreign-future path.
    f = dask_ex.submit(square, 3)
    assert type(f) is std.Future
    assert not isinstance(f, cfutures.Future)
    assert f.result(timeout=T) == 9


# ---- wait(): every return_when, timeouts, mixed with cfutures futures -------

WHENS = [std.FIRST_COMPLETED, std.FIRST_EXCEPTION, std.ALL_COMPLETED]


@pytest.mark.parametrize("when", WHENS)
def test_wait_snapshot_mixed(mod, when, dask_ex, cf_pool, gates):
    """Some futures already done, some not: the split is the oracle's."""
    ok = dask_ex.submit(square, 4)
    bad = dask_ex.submit(fail, "bad")
    pending = dask_ex.submit(gated, gates.new(), 1)
    cf_done = cf_pool.submit(square, 5)
    cf_pending = cfutures.Future()
    std_done = std.Future()
    std_done.set_result(6)
    for f in (ok, bad, cf_done):
        f.exception(timeout=T)
    fs = [ok, bad, pending, cf_done, cf_pending, std_done, ok]
    timeout = 0.2 if when == std.ALL_COMPLETED else T
    t0 = time.monotonic()
    done, not_done = mod.wait(fs, timeout=timeout, return_when=when)
    elapsed = time.monotonic() - t0
    assert done == {ok, bad, cf_done, std_done}
    assert not_done == {pending, cf_pending}
    if when == std.ALL_COMPLETED:
        assert elapsed >= 0.15      # waited out the timeout
    else:
        assert elapsed < T / 2      # returned at once: a future is done


@pytest.mark.parametrize("when", WHENS)
def test_wait_wakes_on_completion(mod, when, dask_ex, gates):
    """Nothing done at the call; completions arrive from dask's loop thread
    (and a cfutures future from a timer) while the caller sleeps."""
    a_gate, b_gate = gates.new(), gates.new()
    a = dask_ex.submit(gated, a_gate, "a")
    b = dask_ex.submit(gated, b_gate, None, error="b failed")
    c = cfutures.Future()

    def drive():
        Gates.open(a_gate)
        a.result(timeout=T)
        if when == std.FIRST_COMPLETED:
            return
        Gates.open(b_gate)
        b.exception(timeout=T)
        if when == std.ALL_COMPLETED:
            c.set_result("c")

    t = later(0.1, drive)
    t0 = time.monotonic()
    done, not_done = mod.wait([a, b, c], timeout=T, return_when=when)
    assert time.monotonic() - t0 < T / 2    # the event, not the timeout
    t.join(T)
    if when == std.FIRST_COMPLETED:
        assert a in done and c in not_done
    elif when == std.FIRST_EXCEPTION:
        # a finished first and did not end the wait; b's exception did.
        assert done == {a, b} and not_done == {c}
    else:
        assert done == {a, b, c} and not_done == set()
    gates.open_all()
    assert a.result() == "a"
    assert isinstance(b.exception(timeout=T), ValueError)


@pytest.mark.parametrize("timeout", [0, 0.2])
def test_wait_timeout(mod, timeout, dask_ex, gates):
    f = dask_ex.submit(gated, gates.new(), 1)
    g = cfutures.Future()
    for when in WHENS:
        t0 = time.monotonic()
        done, not_done = mod.wait([f, g], timeout=timeout, return_when=when)
        assert (done, not_done) == (set(), {f, g})
        assert timeout * 0.75 <= time.monotonic() - t0 < timeout + 10
    # The waiters it installed on the dask future are gone again.
    assert f._waiters == []


@pytest.mark.parametrize("timeout", [0, 0.2])
def test_as_completed_timeout(mod, timeout, dask_ex, gates):
    ok = dask_ex.submit(square, 2)
    ok.result(timeout=T)
    pending = dask_ex.submit(gated, gates.new(), 1)
    it = mod.as_completed([ok, pending, cfutures.Future()], timeout=timeout)
    assert next(it) is ok
    with pytest.raises(std.TimeoutError) as info:
        next(it)
    assert str(info.value) == "2 (of 3) futures unfinished"
    assert pending._waiters == []


# ---- as_completed(): mixed, each future once --------------------------------

def test_as_completed_mixed(mod, dask_ex, cf_pool):
    dfs = [dask_ex.submit(square, i, 0.02 * (i % 4)) for i in range(12)]
    cfs = [cf_pool.submit(square, i, 0.01 * (i % 3)) for i in range(12, 20)]
    sf = std.Future()
    later(0.05, sf.set_result, "std")
    cf = cfutures.Future()
    later(0.08, cf.set_result, "cf")
    fs = dfs + cfs + [sf, cf] + dfs[:3]     # duplicates are yielded once
    seen = list(mod.as_completed(fs, timeout=T))
    assert len(seen) == len(set(fs)) == 22
    assert set(seen) == set(fs)
    assert [f.result() for f in dfs + cfs] == [i * i for i in range(20)]


def test_as_completed_yields_in_completion_order(mod, dask_ex, gates):
    paths = [gates.new() for _ in range(2)]
    fs = [dask_ex.submit(gated, p, i) for i, p in enumerate(paths)]
    it = mod.as_completed(fs, timeout=T)
    for i in (1, 0):
        Gates.open(paths[i])
        assert next(it) is fs[i]
    with pytest.raises(StopIteration):
        next(it)


def test_many_threads_wait_on_the_same_dask_futures(dask_ex, cf_pool):
    """Several threads' waiters come and go on the same futures while
    dask's loop thread completes them."""
    for _ in range(3):
        fs = [dask_ex.submit(square, i, 0.005 * (i % 5)) for i in range(16)]
        fs += [cf_pool.submit(square, i) for i in range(16, 20)]
        joins = []
        for k in range(8):
            if k % 2:
                joins.append(in_thread(lambda: set(
                    cfutures.as_completed(fs, timeout=T))))
            else:
                joins.append(in_thread(lambda k=k: cfutures.wait(
                    fs[k:], timeout=T).done | set(fs[:k])))
        for join in joins:
            assert join() == set(fs)
        assert all(f._waiters == [] for f in fs[:16])


# ---- asyncio: awaiting dask's futures ---------------------------------------

def test_await_from_asyncio(run, executor):
    """What asyncio code writes for any executor's futures: wrap_future,
    run_in_executor, gather.  Same body over both executors."""
    async def main():
        loop = asyncio.get_running_loop()
        one = await asyncio.wrap_future(executor.submit(square, 3))
        two = await loop.run_in_executor(executor, square, 4)
        many = await asyncio.gather(*(
            asyncio.wrap_future(executor.submit(square, i))
            for i in range(10)))
        with pytest.raises(ValueError, match="oops"):
            await asyncio.wrap_future(executor.submit(fail, "oops"))
        return one, two, many
    assert run(main) == (9, 16, [i * i for i in range(10)])


def test_await_mixed_with_cfutures_futures(run, dask_ex, cf_pool, gates):
    """A cfutures future is awaited as it is, a dask one through
    wrap_future; asyncio.wait and as_completed take both."""
    async def main():
        d = asyncio.wrap_future(dask_ex.submit(square, 5))
        c = cf_pool.submit(square, 6)
        slow = asyncio.wrap_future(dask_ex.submit(gated, gates.new(), 7))
        done, pending = await asyncio.wait(
            {d, c, slow}, timeout=T, return_when=asyncio.FIRST_COMPLETED)
        assert done and slow not in done
        done, pending = await asyncio.wait({d, c}, timeout=T)
        assert done == {d, c} and await d == 25 and await c == 36
        Gates.open(gates.paths[-1])
        got = [await f for f in asyncio.as_completed([slow, c], timeout=T)]
        assert sorted(got) == [7, 36]
    run(main)


def test_await_cfutures_wait_off_the_loop(run, dask_ex, gates):
    """Blocking cfutures.wait() over dask futures, moved to a thread with
    cfutures.to_thread: the loop stays free meanwhile."""
    gate = gates.new()
    fs = [dask_ex.submit(gated, gate, i) for i in range(2)]

    async def main():
        ticks = 0
        waiter = asyncio.ensure_future(cfutures.to_thread(
            cfutures.wait, fs, timeout=T))
        later(0.2, Gates.open, gate)
        while not waiter.done():
            ticks += 1
            await asyncio.sleep(0.01)
        done, not_done = await waiter
        return ticks, done, not_done
    ticks, done, not_done = run(main)
    assert ticks > 5 and done == set(fs) and not_done == set()


def test_cancel_awaiting_task_cancels_dask_future(run, mod, dask_ex, gates):
    """Cancelling the task that awaits wrap_future(f) cancels f (asyncio's
    chaining), dask cancels the task, and wait() then sees f done."""
    f = dask_ex.submit(gated, gates.new(), 1)

    async def main():
        task = asyncio.ensure_future(asyncio.wrap_future(f))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    run(main)
    assert f.cancelled()
    done, _ = mod.wait([f], timeout=T)
    assert done == {f}
    with pytest.raises(std.CancelledError):
        f.result(timeout=0)


# ---- cancellation -----------------------------------------------------------

def test_cancel_wakes_a_wait_in_progress(mod, dask_ex, gates, tmp_path):
    """cancel() of a running and of a queued dask task while another thread
    waits: the wait ends once dask has noticed (CANCELLED_AND_NOTIFIED)."""
    pidfiles = [str(tmp_path / f"pid{i}") for i in range(2)]
    running = [dask_ex.submit(gated, gates.new(), i, pidfile=p)
               for i, p in enumerate(pidfiles)]
    for p in pidfiles:      # one on each worker (one thread each)
        wait_for_file(p)
    queued = dask_ex.submit(gated, gates.new(), 2)
    other = cfutures.Future()
    join = in_thread(mod.wait, [queued, other], timeout=T,
                     return_when=std.FIRST_COMPLETED)
    time.sleep(0.05)
    assert queued.cancel()
    assert queued.cancelled()
    done, not_done = join()
    assert done == {queued} and not_done == {other}

    # A running task: dask's futures are never RUNNING, so this succeeds
    # too (the worker finishes the call, its result is dropped).
    assert running[0].cancel()
    it = mod.as_completed(running, timeout=T)
    assert next(it) is running[0]
    gates.open_all()
    assert next(it) is running[1] and running[1].result() == 1
    with pytest.raises(std.CancelledError):
        running[0].result(timeout=0)
    assert all(f._waiters == [] for f in running + [queued])


def test_cancel_then_as_completed(mod, dask_ex, cf_pool, gates):
    fs = [dask_ex.submit(gated, gates.new(), i) for i in range(3)]
    cf = cf_pool.submit(square, 9)
    for f in fs:
        assert f.cancel()
    seen = list(mod.as_completed(fs + [cf], timeout=T))
    assert set(seen) == set(fs + [cf])
    assert all(f.cancelled() for f in fs) and cf.result() == 81


# ---- a worker process killed mid-task ---------------------------------------

def test_worker_killed_mid_task(client, dask_ex, gates, tmp_path):
    """SIGKILL the worker process running a task: the future fails with
    KilledWorker, waits in progress return (the stdlib's and cfutures',
    side by side: one kill costs a worker restart), nothing hangs; the
    nanny starts a new worker and the cluster keeps working."""
    pidfile = str(tmp_path / "pid")
    victim = dask_ex.submit(gated, gates.new(), "never", pidfile=pidfile)
    bystander = cfutures.Future()
    pid = int(wait_for_file(pidfile))
    assert pid in client.run(os.getpid).values()

    waits = {m: in_thread(m.wait, [victim, bystander], timeout=T,
                          return_when=std.FIRST_EXCEPTION)
             for m in (std, cfutures)}
    firsts = {m: in_thread(lambda m=m: next(m.as_completed(
                  [bystander, victim], timeout=T)))
              for m in (std, cfutures)}
    time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)

    for m in (std, cfutures):
        done, not_done = waits[m]()
        assert done == {victim} and not_done == {bystander}
        assert firsts[m]() is victim
    assert isinstance(victim.exception(timeout=0), KilledWorker)
    with pytest.raises(KilledWorker):
        victim.result(timeout=0)
    assert victim._waiters == []

    # And from asyncio.
    async def main():
        with pytest.raises(KilledWorker):
            await asyncio.wrap_future(victim)
    asyncio.run(main())

    client.wait_for_workers(2, timeout=T)
    assert dask_ex.submit(square, 11).result(timeout=T) == 121


# ---- the README's example ---------------------------------------------------

def readme_example():
    """The Python block of the README's "Scaling out" section."""
    path = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")
    if not os.path.exists(path):
        # The wheel gate runs a copy of tests/ beside an installed wheel.
        pytest.skip("no README.md beside tests/ (tests run outside a "
                    "checkout or sdist)")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    section = text.split("\n## Scaling out\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_example(executor):
    """The README's fan-out function, on both executors (its __main__
    part is not run: the cluster is this module's).  Defined outside any
    importable module, the functions reach dask's workers by value."""
    namespace = {"__name__": "readme_example"}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    assert namespace["fan_out"](executor, range(10)) == [
        namespace["price"](i) for i in range(10)]
