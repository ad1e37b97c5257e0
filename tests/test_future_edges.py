"""Future edge cases found while building the memory gates (issue 6):
errors from the stdlib's waiters, odd timeouts, deep chains of futures."""
import concurrent.futures as std
import sys
import threading

import pytest

import cfutures


class _RaisingWaiter:
    """Stands in for the _Waiter that concurrent.futures.wait() installs."""

    def add_result(self, future):
        raise RuntimeError("waiter failed")

    add_exception = add_cancelled = add_result


@pytest.mark.parametrize("how", ["set_result", "set_exception"])
def test_stdlib_waiter_error_propagates(mod, how):
    # The future is finished, the error propagates, and (as in _base.py)
    # the callbacks do not run: they must never run with an error pending.
    f = mod.Future()
    calls = []
    f.add_done_callback(calls.append)
    f._waiters.append(_RaisingWaiter())
    with pytest.raises(RuntimeError, match="waiter failed"):
        getattr(f, how)(ValueError() if how == "set_exception" else 1)
    assert f.done()
    assert calls == []
    late = []
    f.add_done_callback(late.append)
    assert late == [f]


def test_stdlib_waiter_error_on_notify_cancel(mod):
    f = mod.Future()
    f.cancel()
    f._waiters.append(_RaisingWaiter())
    with pytest.raises(RuntimeError, match="waiter failed"):
        f.set_running_or_notify_cancel()
    assert f._state == "CANCELLED_AND_NOTIFIED"


# Up to 3.13 Condition.wait(nan) polls (`timeout > 0` is false), so NaN
# times out; from 3.14 it tests `timeout <= 0` and Lock.acquire() rejects
# NaN.  The running stdlib decides which this interpreter expects.
NAN_TIMEOUT_POLLS = sys.version_info < (3, 14)


@pytest.mark.parametrize("method", ["result", "exception"])
def test_nan_timeout_on_pending_future(mod, method):
    f = mod.Future()
    if NAN_TIMEOUT_POLLS:
        with pytest.raises(std.TimeoutError):
            getattr(f, method)(timeout=float("nan"))
    else:
        with pytest.raises(ValueError, match="NaN"):
            getattr(f, method)(timeout=float("nan"))
    # A finished future returns before it looks at the timeout.
    f.set_result(1)
    getattr(f, method)(timeout=float("nan"))


@pytest.mark.timeout(30)
def test_largest_timeout_still_waits(mod):
    # The largest timeout Lock.acquire() takes, in nanoseconds, is near
    # 2**63: the deadline must saturate, not wrap around into the past.
    f = mod.Future()
    threading.Timer(0.05, f.set_result, ("late",)).start()
    assert f.result(timeout=9223372036.0) == "late"


def test_too_large_timeout_is_overflow_error(mod):
    f = mod.Future()
    with pytest.raises(OverflowError):
        f.result(timeout=1e300)


def _timeout_outcome(m, method, timeout):
    # The future must still be pending when the call converts the timeout
    # (a finished future returns before looking at it), and a timeout of
    # 0.01 or less must run out first: the result comes 0.2 s later, which
    # a loaded machine does not reorder (0.01 s did, once).
    f = m.Future()
    t = threading.Timer(0.2, f.set_result, (1,))
    t.start()
    try:
        return "ok", getattr(f, method)(timeout=timeout)
    except Exception as e:  # noqa: B902 (the outcome is the point)
        return type(e), str(e)
    finally:
        t.cancel()
        t.join()


@pytest.mark.parametrize("method", ["result", "exception"])
@pytest.mark.parametrize("timeout", [
    "Decimal('0.01')", "Decimal('-1')", "Fraction(1, 100)", "True",
    "10**30", "10**400", "-10**400", "float('inf')", "float('-inf')",
    "float('nan')", "1e12", "1e-12", "9.3e9", "[]", "'1'"])
def test_ext_odd_timeouts_match_this_interpreter(method, timeout):
    # Exactly the stdlib's outcome, message included, on the interpreter
    # that runs (3.11 releases word the overflow messages differently).
    from decimal import Decimal  # noqa: F401 (used by eval)
    from fractions import Fraction  # noqa: F401
    value = eval(timeout)
    # The timer may fire before a slow (sanitized, loaded) run gets to wait,
    # and then neither implementation converts the timeout at all: a real
    # mismatch shows on every try, that race does not.
    for attempt in range(3):
        outcomes = (_timeout_outcome(cfutures, method, value),
                    _timeout_outcome(std, method, value))
        if outcomes[0] == outcomes[1]:
            break
    assert outcomes[0] == outcomes[1]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("cls", [cfutures.Future, cfutures._cfutures.Future],
                         ids=["public", "base"])
def test_ext_deep_chain_of_futures_deallocates(cls):
    # Each future's result is the next future: freeing the head must not
    # recurse once per link (it overflowed the C stack for the C type).
    # A thread with a small stack makes a chain of this length enough to
    # show it.  Not smaller: 3.13's trashcan lets a dealloc nest up to its
    # C recursion limit (10,000 here), calibrated for an 8 MiB stack, so a
    # 512 KiB thread overflows there even on a chain of stdlib futures.
    def build_and_free():
        head = cur = cls()
        for _ in range(200_000):
            nxt = cls()
            cur.set_result(nxt)
            cur = nxt
        del cur, nxt
        del head
        done.append(True)

    done = []
    old = threading.stack_size(4 * 1024 * 1024)
    try:
        t = threading.Thread(target=build_and_free)
        t.start()
    finally:
        threading.stack_size(old)
    t.join(50)
    assert done == [True]
