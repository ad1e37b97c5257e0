"""Future: races between the threads that complete, cancel, read and wait
on one future (issue 11).

Without the GIL (a free-threaded build, PYTHON_GIL=0) these run truly in
parallel, and they are what checks the guards of src/future.c (README,
"Concurrency model").  With the GIL they still pass on both modules; the
free-threaded gate runs them with CFUTURES_RACE_ROUNDS times the rounds.
Every wait here has a timeout, and a waiter still blocked long after its
future completed is a lost wakeup, reported as a failure."""
import concurrent.futures as std
import random
import threading

import pytest

import cfutures

# Generous: only a wakeup that never comes takes this long.
LOST = 30.0


def spin(n):
    """Busy-wait a few microseconds (a sleep would be far too long)."""
    for _ in range(n):
        pass


def run_threads(targets, deadline=LOST):
    """Start one thread per target, join them; the names of any still
    running after `deadline` seconds (a lost wakeup or a deadlock)."""
    threads = [threading.Thread(target=t, daemon=True) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(deadline)
    return [t.name for t in threads if t.is_alive()]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("method", ["result", "exception"])
def test_race_blocking_read_vs_completion(mod, method, race_rounds):
    """result(timeout)/exception(timeout) check the state and go to sleep
    while other threads complete the future: none sleeps through it."""
    for _ in range(race_rounds(20)):
        fs = [mod.Future() for _ in range(300)]
        seen = [[] for _ in range(3)]
        errors = []

        def reader(k):
            rnd = random.Random(k)
            try:
                for f in fs:
                    spin(rnd.randrange(200))
                    seen[k].append(getattr(f, method)(timeout=2 * LOST))
            except BaseException as e:  # noqa: B902
                errors.append(e)

        def completer(part, seed):
            rnd = random.Random(seed)
            for i, f in part:
                spin(rnd.randrange(300))
                f.set_result(i)

        items = list(enumerate(fs))
        stuck = run_threads(
            [lambda k=k: reader(k) for k in range(3)]
            + [lambda: completer(items[0::2], 10),
               lambda: completer(items[1::2], 11)])
        assert not stuck, "a reader slept through a completion"
        assert not errors
        expected = list(range(300)) if method == "result" else [None] * 300
        assert seen == [expected] * 3


@pytest.mark.timeout(120)
def test_race_complete_cancel_running_callbacks_readers(mod, race_rounds):
    """set_result, set_exception, cancel, set_running_or_notify_cancel,
    add_done_callback and blocked readers all at once: one consistent
    outcome, every callback run once, every reader told that outcome."""
    for rnd in range(race_rounds(300)):
        f = mod.Future()
        exc = ValueError(rnd)
        calls = []
        wins = []
        woke = []
        go = threading.Barrier(8)

        def attempt(name, action):
            go.wait()
            try:
                r = action()
            except std.InvalidStateError:
                return
            except RuntimeError:        # set_running on a done future
                return
            if r is not False:
                wins.append(name)

        def add_callbacks():
            go.wait()
            for i in range(10):
                f.add_done_callback(lambda fut, i=i: calls.append(i))

        def reader():
            go.wait()
            try:
                woke.append(("result", f.result(timeout=LOST)))
            except std.CancelledError:
                woke.append(("cancelled", None))
            except ValueError as e:
                woke.append(("exception", e))

        stuck = run_threads([
            lambda: attempt("result", lambda: f.set_result(rnd)),
            lambda: attempt("exception", lambda: f.set_exception(exc)),
            lambda: attempt("cancel", f.cancel),
            lambda: attempt("running", f.set_running_or_notify_cancel),
            add_callbacks, reader, reader, reader])
        assert not stuck
        # A cancel that won leaves the future CANCELLED: then the executor's
        # set_running_or_notify_cancel returns False (no "running" win).
        if "cancel" in wins:
            assert wins == ["cancel"]
            assert f.cancelled()
            assert woke == [("cancelled", None)] * 3
        else:
            done = [w for w in wins if w != "running"]
            assert len(done) == 1
            if done == ["result"]:
                assert woke == [("result", rnd)] * 3
            else:
                assert woke == [("exception", exc)] * 3
        assert sorted(calls) == list(range(10))


@pytest.mark.timeout(120)
def test_race_condition_and_waiters_made_once(mod, race_rounds):
    """Threads touching _condition and _waiters of a fresh future at once
    all get the same objects (the stdlib makes them in __init__;
    cfutures on first use)."""
    for _ in range(race_rounds(300)):
        f = mod.Future()
        go = threading.Barrier(6)
        got = []

        def touch(k):
            go.wait()
            if k % 2:
                got.append((f._condition, f._waiters))
            else:
                got.append((f._waiters, f._condition)[::-1])

        assert not run_threads([lambda k=k: touch(k) for k in range(6)])
        conds = {id(c) for c, _ in got}
        lists = {id(w) for _, w in got}
        assert len(conds) == 1 and len(lists) == 1
        assert got[0][0] is f._condition and got[0][1] is f._waiters


@pytest.mark.timeout(180)
def test_race_stdlib_wait_vs_completion(mod, race_rounds):
    """The stdlib's wait() and as_completed() make _condition and
    _waiters on a future at the very moment another thread completes it:
    they hear that completion."""
    for rnd in range(race_rounds(1500)):
        f = mod.Future()
        go = threading.Barrier(2)
        out = []

        def waiter():
            go.wait()
            if rnd % 2:
                out.append(std.wait([f], timeout=LOST))
            else:
                out.append(list(std.as_completed([f], timeout=LOST)))

        def completer():
            go.wait()
            spin(rnd % 50)
            f.set_result(rnd)

        assert not run_threads([waiter, completer], LOST + 10)
        if rnd % 2:
            done, not_done = out[0]
            assert done == {f} and not not_done
        else:
            assert out[0] == [f]
        assert f._waiters == []


@pytest.mark.timeout(120)
def test_race_outcome_readers_vs_hand_writers(mod, race_rounds):
    """_result and _exception are writable: threads reading a future's
    outcome (result(), exception(), _result, repr) while another replaces
    it never see a freed or half-written object."""
    for _ in range(race_rounds(20)):
        f = mod.Future()
        f.set_result(["start"])
        stop = threading.Event()
        errors = []

        def writer():
            for i in range(3000):
                f._result = [i]
                if i % 7 == 0:
                    f._exception = None
            stop.set()

        def reader(k):
            try:
                while not stop.is_set():
                    for v in (f.result(), f._result, f.result(timeout=1)):
                        assert type(v) is list and len(v) == 1
                    assert f.exception() is None
                    assert "state=finished returned list" in repr(f)
            except BaseException as e:  # noqa: B902
                errors.append(e)
                stop.set()

        assert not run_threads([writer] + [lambda k=k: reader(k)
                                           for k in range(3)])
        assert not errors, errors[0]


@pytest.mark.timeout(120)
def test_ext_race_init_vs_readers(race_rounds):
    """__init__ starting a used future over while other threads read and
    complete it: no crash, and a reader sees a consistent outcome.  (The
    stdlib's __init__ writes its attributes one by one, unguarded, so a
    reader there may see a FINISHED future with the reset _result.)"""
    for _ in range(race_rounds(20)):
        f = cfutures.Future()
        stop = threading.Event()
        errors = []

        def reinit():
            for i in range(1000):
                f.__init__()
                try:
                    f.set_result([i])
                except std.InvalidStateError:
                    pass
            stop.set()

        def reader():
            try:
                while not stop.is_set():
                    try:
                        v = f.result(timeout=0)
                    except std.TimeoutError:
                        continue
                    assert type(v) is list
                    f._condition
                    repr(f)
            except BaseException as e:  # noqa: B902
                errors.append(e)
                stop.set()

        assert not run_threads([reinit, reader, reader])
        assert not errors, errors[0]
