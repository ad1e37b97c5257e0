"""Futures completed through the stdlib's private protocol (issue 12).

CPython's own tests, and code written against _base.py, set a future's
_state, _result and _exception directly, under _condition, then
notify_all().  The stdlib treats that as a completion for threads blocked
in result() and exception() (they wait on that Condition) and for any
later reader, but runs no done-callback."""
import concurrent.futures as std
import threading
import time

import pytest

import cfutures
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    PENDING,
    RUNNING,
)


def complete_by_hand(f, state=FINISHED, result=None, exception=None,
                     pause=0.0):
    with f._condition:
        f._state = state
        # A waiter woken by the state write must still see what follows.
        time.sleep(pause)
        f._exception = exception
        f._result = result
        f._condition.notify_all()


def create_future(mod, state=PENDING, exception=None, result=None):
    # As Lib/test/test_concurrent_futures/util.py builds its futures.
    f = mod.Future()
    f._state = state
    f._exception = exception
    f._result = result
    return f


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["result", "exception"])
@pytest.mark.parametrize("outcome", ["result", "exception"])
def test_hand_completion_wakes_blocked_readers(mod, method, outcome):
    for pause in [0.0, 0.05]:
        f = mod.Future()
        exc = ValueError("by hand")
        seen = []
        started = threading.Barrier(4)

        def reader():
            started.wait()
            try:
                seen.append(getattr(f, method)(timeout=30))
            except BaseException as e:
                seen.append(e)

        threads = [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        started.wait()
        time.sleep(0.05)
        if outcome == "result":
            complete_by_hand(f, result=42, pause=pause)
        else:
            complete_by_hand(f, exception=exc, pause=pause)
        for t in threads:
            t.join(30)
        if outcome == "result":
            expected = 42 if method == "result" else None
        else:
            expected = exc
        assert seen == [expected] * 3
        assert f.done() and not f.cancelled()


@pytest.mark.timeout(60)
def test_hand_completion_runs_no_callbacks(mod):
    f = mod.Future()
    calls = []
    f.add_done_callback(calls.append)
    complete_by_hand(f, result=1)
    assert calls == []
    assert f.result() == 1
    # Added now, it runs at once, as on any done future.
    f.add_done_callback(calls.append)
    assert calls == [f]
    with pytest.raises(std.InvalidStateError):
        f.set_result(2)


STATES = [PENDING, RUNNING, CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED]


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("outcome", ["result", "exception"])
def test_future_set_up_by_hand(mod, state, outcome):
    exc = OSError("made")
    if outcome == "result":
        f = create_future(mod, state=state, result=7)
    else:
        f = create_future(mod, state=state, exception=exc)
    assert f._state == state
    assert (f._result, f._exception) == ((7, None) if outcome == "result"
                                         else (None, exc))
    assert f.done() == (state in [CANCELLED, CANCELLED_AND_NOTIFIED,
                                  FINISHED])
    assert f.running() == (state == RUNNING)
    assert f.cancelled() == (state in [CANCELLED, CANCELLED_AND_NOTIFIED])
    shown = repr(f).split(" state=")[1]
    if state == FINISHED:
        assert shown == ("finished returned int>" if outcome == "result"
                         else "finished raised OSError>")
        if outcome == "result":
            assert (f.result(), f.exception()) == (7, None)
        else:
            assert f.exception() is exc
            with pytest.raises(OSError):
                f.result()
    elif f.cancelled():
        with pytest.raises(std.CancelledError):
            f.result()
    else:
        with pytest.raises(std.TimeoutError):
            f.result(timeout=0)
    # Both wait()s see the state (wait() counts a plain CANCELLED as not
    # done yet, as ever).
    waited = state in [CANCELLED_AND_NOTIFIED, FINISHED]
    for w in [std.wait, cfutures.wait]:
        done, not_done = w([f], timeout=0)
        assert (f in done, f in not_done) == (waited, not waited)


def test_state_can_go_back_to_pending(mod):
    f = create_future(mod, state=FINISHED, result=1)
    f._state = PENDING
    f._result = None
    assert not f.done()
    f.set_result(2)
    assert f.result() == 2


@pytest.mark.timeout(60)
def test_stdlib_wait_started_after_a_hand_completion_sees_it(mod):
    f = mod.Future()
    g = mod.Future()
    complete_by_hand(f, exception=KeyError("k"))
    for w in [std.wait, cfutures.wait]:
        done, not_done = w([f, g], timeout=5,
                           return_when=std.FIRST_EXCEPTION)
        assert (done, not_done) == ({f}, {g})
    assert list(cfutures.as_completed([f], timeout=5)) == [f]


@pytest.mark.timeout(60)
def test_ext_blocked_cfutures_wait_wakes_on_hand_completion():
    # The stdlib's wait() and as_completed() sleep on a waiter only
    # set_result() and friends notify, so a hand completion reaches them
    # at their timeout only (and wait() then reports the future not done).
    # cfutures' wake at once.
    f = cfutures.Future()
    out = []

    def waiter():
        out.append(cfutures.wait([f], timeout=30))
        out.append(list(cfutures.as_completed([f], timeout=30)))

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    complete_by_hand(f, result=3)
    t.join(30)
    assert time.monotonic() - t0 < 20
    assert out == [({f}, set()), [f]]


def test_ext_bad_state_is_refused():
    f = cfutures.Future()
    with pytest.raises(ValueError):
        f._state = "BOGUS"
    with pytest.raises(TypeError):
        del f._state
    with pytest.raises(TypeError):
        del f._result
    assert f._state == PENDING


@pytest.mark.parametrize("how", ["result", "exception", "cancel", "hand"])
def test_init_again_starts_the_future_over(mod, how):
    # Future.__init__() on a used future resets it, as _base.Future's does.
    f = mod.Future()
    calls = []
    old_condition = f._condition
    old_waiters = f._waiters
    if how == "result":
        f.set_result(1)
    elif how == "exception":
        f.set_exception(ValueError())
    elif how == "cancel":
        f.cancel()
    else:
        complete_by_hand(f, result=5)
    f.__init__()
    assert (f._state, f._result, f._exception) == (PENDING, None, None)
    assert not f.done() and not f.cancelled() and not f.running()
    assert f._condition is not old_condition
    assert f._waiters is not old_waiters and f._waiters == []
    with pytest.raises(std.TimeoutError):
        f.result(timeout=0)
    f.add_done_callback(calls.append)
    f.set_result(2)
    assert (f.result(), calls) == (2, [f])


def test_init_again_forgets_pending_callbacks(mod):
    f = mod.Future()
    calls = []
    f.add_done_callback(calls.append)
    f.set_running_or_notify_cancel()
    f.__init__()
    assert f._state == PENDING
    f.set_result(1)
    assert calls == []
