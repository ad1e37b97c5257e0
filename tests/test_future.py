"""Future: the behaviour of concurrent.futures.Future, run on both modules."""
import concurrent.futures as std
import gc
import logging
import pickle
import re
import signal
import subprocess
import sys
import threading
import time
import weakref

import pytest

import cfutures

REPR = re.compile(r"<Future at 0x[0-9a-f]+ state=(\w+)(?: (returned|raised) (\w+))?>")


def finished(mod, value=None, exc=None):
    f = mod.Future()
    if exc is not None:
        f.set_exception(exc)
    else:
        f.set_result(value)
    return f


# ---- identity ------------------------------------------------------------

def test_ext_identity_is_stdlib_subclass():
    f = cfutures.Future()
    assert isinstance(f, std.Future)
    assert issubclass(cfutures.Future, std.Future)
    # The C type must come first, so no stdlib method runs on a C object.
    assert cfutures.Future.__mro__[1] is cfutures._cfutures.Future
    for name in ("result", "exception", "set_result", "set_exception",
                 "cancel", "cancelled", "running", "done", "__repr__",
                 "add_done_callback", "set_running_or_notify_cancel",
                 "_invoke_callbacks", "__init__"):
        assert getattr(cfutures.Future, name) is not getattr(std.Future, name), name


def test_ext_exceptions_are_the_stdlib_classes():
    assert cfutures.CancelledError is std.CancelledError
    assert cfutures.TimeoutError is std.TimeoutError
    assert cfutures.InvalidStateError is std.InvalidStateError
    assert cfutures.BrokenExecutor is std.BrokenExecutor
    for name in ("FIRST_COMPLETED", "FIRST_EXCEPTION", "ALL_COMPLETED"):
        assert getattr(cfutures, name) is getattr(std, name)


# ---- states --------------------------------------------------------------

def test_pending_state(mod):
    f = mod.Future()
    assert (f.done(), f.running(), f.cancelled()) == (False, False, False)
    assert f._state == "PENDING"


def test_running_state(mod):
    f = mod.Future()
    assert f.set_running_or_notify_cancel() is True
    assert (f.done(), f.running(), f.cancelled()) == (False, True, False)
    assert f.cancel() is False
    assert f._state == "RUNNING"
    f.set_result(1)
    assert (f.done(), f.running(), f.cancelled()) == (True, False, False)


def test_cancel_states(mod):
    f = mod.Future()
    assert f.cancel() is True
    assert (f.done(), f.running(), f.cancelled()) == (True, False, True)
    assert f._state == "CANCELLED"
    assert f.cancel() is True
    assert f.set_running_or_notify_cancel() is False
    assert f._state == "CANCELLED_AND_NOTIFIED"
    assert f.cancel() is True
    assert f.cancelled() and f.done()


def test_cancel_finished_returns_false(mod):
    f = finished(mod, 1)
    assert f.cancel() is False
    assert not f.cancelled()


def test_set_running_twice_raises_and_logs(mod, caplog):
    f = mod.Future()
    f.set_running_or_notify_cancel()
    with caplog.at_level(logging.CRITICAL, logger="concurrent.futures"):
        with pytest.raises(RuntimeError, match="Future in unexpected state"):
            f.set_running_or_notify_cancel()
    assert f"Future {id(f)} in unexpected state: RUNNING" in caplog.text
    f.set_result(2)
    with pytest.raises(RuntimeError):
        f.set_running_or_notify_cancel()


def test_future_takes_no_arguments(mod):
    with pytest.raises(TypeError):
        mod.Future(1)
    with pytest.raises(TypeError):
        mod.Future(x=1)


# ---- results and exceptions ---------------------------------------------

def test_result(mod):
    f = finished(mod, 42)
    assert f.result() == 42
    assert f.result(timeout=0) == 42
    assert f.result(None) == 42
    assert f.exception() is None
    assert f._result == 42 and f._exception is None


def test_exception(mod):
    err = ValueError("boom")
    f = finished(mod, exc=err)
    with pytest.raises(ValueError) as info:
        f.result()
    assert info.value is err
    assert f.exception() is err
    assert f.exception(timeout=1) is err


def test_exception_keeps_traceback_and_context(mod):
    try:
        1 / 0
    except ZeroDivisionError as e:
        err = e
    f = finished(mod, exc=err)
    with pytest.raises(ZeroDivisionError) as info:
        try:
            raise KeyError("outer")
        except KeyError:
            f.result()
    assert info.value.__traceback__ is not None
    assert isinstance(info.value.__context__, KeyError)


def test_exception_class_is_instantiated(mod):
    f = finished(mod, exc=ValueError)
    with pytest.raises(ValueError):
        f.result()
    assert f.exception() is ValueError


def test_set_exception_none_returns_none(mod):
    f = mod.Future()
    f.set_exception(None)
    assert f.done()
    assert f.result() is None
    assert f.exception() is None


def test_non_exception_object_raises_type_error(mod):
    f = finished(mod, exc=42)
    with pytest.raises(TypeError, match="exceptions must derive from BaseException"):
        f.result()
    assert f.exception() == 42


def test_base_exception_is_stored(mod):
    f = finished(mod, exc=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        f.result()


def test_cancelled_result_raises(mod):
    f = mod.Future()
    f.cancel()
    with pytest.raises(std.CancelledError):
        f.result()
    with pytest.raises(std.CancelledError):
        f.exception()
    f.set_running_or_notify_cancel()
    with pytest.raises(std.CancelledError):
        f.result(timeout=0)


@pytest.mark.parametrize("timeout", [0, -1, 0.01, 0.05])
def test_result_timeout(mod, timeout):
    f = mod.Future()
    start = time.monotonic()
    with pytest.raises(std.TimeoutError):
        f.result(timeout=timeout)
    with pytest.raises(std.TimeoutError):
        f.exception(timeout)
    assert time.monotonic() - start >= 2 * max(timeout, 0) * 0.9


@pytest.mark.parametrize("bad", ["1", [], object()])
def test_result_bad_timeout_type(mod, bad):
    f = mod.Future()
    with pytest.raises(TypeError):
        f.result(timeout=bad)


def test_result_bad_keyword(mod):
    f = finished(mod, 1)
    with pytest.raises(TypeError):
        f.result(tmeout=1)
    with pytest.raises(TypeError):
        f.result(1, 2)


def test_second_completion_is_invalid_state(mod):
    f = finished(mod, 1)
    with pytest.raises(std.InvalidStateError) as info:
        f.set_result(2)
    assert re.fullmatch(r"FINISHED: <Future at 0x[0-9a-f]+ state=finished returned int>",
                        str(info.value))
    with pytest.raises(std.InvalidStateError):
        f.set_exception(ValueError())
    assert f.result() == 1
    g = mod.Future()
    g.cancel()
    with pytest.raises(std.InvalidStateError, match=r"^CANCELLED: <Future"):
        g.set_result(1)
    g.set_running_or_notify_cancel()
    with pytest.raises(std.InvalidStateError, match=r"^CANCELLED_AND_NOTIFIED: <Future"):
        g.set_exception(ValueError())


def test_set_result_on_running(mod):
    f = mod.Future()
    f.set_running_or_notify_cancel()
    f.set_result("x")
    assert f.result() == "x"


# ---- repr ----------------------------------------------------------------

def test_repr(mod):
    f = mod.Future()
    assert REPR.fullmatch(repr(f)).groups() == ("pending", None, None)
    assert hex(id(f)) in repr(f)
    f.set_running_or_notify_cancel()
    assert REPR.fullmatch(repr(f)).group(1) == "running"
    f.set_result([1])
    assert REPR.fullmatch(repr(f)).groups() == ("finished", "returned", "list")
    g = finished(mod, exc=OSError())
    assert REPR.fullmatch(repr(g)).groups() == ("finished", "raised", "OSError")
    h = mod.Future()
    h.cancel()
    assert REPR.fullmatch(repr(h)).group(1) == "cancelled"


def test_repr_of_subclass(mod):
    class MyFuture(mod.Future):
        pass
    f = MyFuture()
    assert repr(f).startswith("<MyFuture at 0x")
    f.set_result(None)
    assert repr(f).endswith("state=finished returned NoneType>")


# ---- callbacks -----------------------------------------------------------

def test_callback_runs_once_at_completion(mod):
    f = mod.Future()
    calls = []
    f.add_done_callback(calls.append)
    f.add_done_callback(lambda fut: calls.append("second"))
    assert calls == []
    f.set_result(5)
    assert calls == [f, "second"]
    with pytest.raises(std.InvalidStateError):
        f.set_result(6)
    f.cancel()
    assert calls == [f, "second"]


def test_callback_runs_at_once_when_done(mod):
    f = finished(mod, 1)
    calls = []
    f.add_done_callback(calls.append)
    assert calls == [f]


def test_callback_on_cancel(mod):
    f = mod.Future()
    calls = []
    f.add_done_callback(calls.append)
    f.cancel()
    assert calls == [f]
    f.set_running_or_notify_cancel()
    assert calls == [f]


def test_callback_runs_in_completing_thread(mod):
    f = mod.Future()
    where = []
    f.add_done_callback(lambda fut: where.append(threading.current_thread()))
    t = threading.Thread(target=f.set_result, args=(1,))
    t.start()
    t.join()
    assert where == [t]


def test_callback_error_is_logged_and_others_run(mod, caplog):
    f = mod.Future()
    calls = []
    f.add_done_callback(lambda fut: 1 / 0)
    f.add_done_callback(calls.append)
    with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
        f.set_result(1)
    assert calls == [f]
    [record] = [r for r in caplog.records if r.name == "concurrent.futures"]
    assert record.getMessage() == f"exception calling callback for {f!r}"
    assert record.exc_info[0] is ZeroDivisionError


def test_callback_error_when_done_is_logged(mod, caplog):
    f = finished(mod, 1)
    with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
        f.add_done_callback(lambda fut: {}["missing"])
    assert "exception calling callback for" in caplog.text
    assert "KeyError" in caplog.text


def test_non_callable_callback_is_logged(mod, caplog):
    f = mod.Future()
    f.add_done_callback(42)
    with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
        f.set_result(1)
    assert "TypeError" in caplog.text


def test_callback_base_exception_propagates(mod):
    f = mod.Future()

    def stop(fut):
        raise SystemExit(3)
    f.add_done_callback(stop)
    with pytest.raises(SystemExit):
        f.set_result(1)
    assert f.done() and f.result() == 1


def test_callback_adding_callback(mod):
    f = mod.Future()
    calls = []
    f.add_done_callback(lambda fut: fut.add_done_callback(lambda g: calls.append("inner")))
    f.set_result(1)
    assert calls == ["inner"]


def test_exc_info_restored_after_logged_callback(mod, caplog):
    f = mod.Future()
    f.add_done_callback(lambda fut: 1 / 0)
    try:
        raise KeyError("handled")
    except KeyError:
        with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
            f.set_result(1)
        assert sys.exc_info()[0] is KeyError


# ---- typing, weak references, pickling, GC -------------------------------

def test_generic_alias(mod):
    alias = mod.Future[int]
    assert alias.__origin__ is mod.Future
    assert alias.__args__ == (int,)


def test_weakref(mod):
    f = mod.Future()
    r = weakref.ref(f)
    assert r() is f
    del f
    gc.collect()
    assert r() is None


def test_not_picklable(mod):
    with pytest.raises(TypeError):
        pickle.dumps(mod.Future())


def test_attributes_can_be_set(mod):
    f = mod.Future()
    f.tag = "x"
    assert f.tag == "x"


@pytest.mark.parametrize("how", ["result", "exception", "callback", "attribute"])
def test_cycles_are_collected(mod, how):
    gc.collect()
    f = mod.Future()
    if how == "result":
        f.set_result([f])
    elif how == "exception":
        try:
            raise ValueError(f)
        except ValueError as e:
            f.set_exception(e)
        f.exception()
    elif how == "callback":
        f.add_done_callback(lambda fut, keep=f: None)
    else:
        f.me = f
    r = weakref.ref(f)
    del f
    gc.collect()
    assert r() is None


# ---- waiting across threads ----------------------------------------------

@pytest.mark.timeout(30)
def test_result_from_other_thread(mod):
    f = mod.Future()
    threading.Timer(0.05, f.set_result, ("late",)).start()
    assert f.result(timeout=10) == "late"


@pytest.mark.timeout(30)
def test_exception_wakes_waiter(mod):
    f = mod.Future()
    threading.Timer(0.05, f.set_exception, (KeyError("k"),)).start()
    with pytest.raises(KeyError):
        f.result(timeout=10)


@pytest.mark.timeout(30)
def test_cancel_wakes_waiter(mod):
    f = mod.Future()
    threading.Timer(0.05, f.cancel).start()
    with pytest.raises(std.CancelledError):
        f.result(timeout=10)


@pytest.mark.timeout(60)
def test_many_waiters_all_wake(mod):
    for _ in range(20):
        f = mod.Future()
        results = []
        ready = threading.Barrier(17)

        def waiter():
            ready.wait()
            results.append(f.result(timeout=20))
        threads = [threading.Thread(target=waiter) for _ in range(16)]
        for t in threads:
            t.start()
        ready.wait()
        f.set_result(7)
        for t in threads:
            t.join(20)
        assert results == [7] * 16


@pytest.mark.timeout(60)
def test_race_complete_cancel_callbacks_waiters(mod, race_rounds):
    """Completion races cancellation, callbacks and waiters: exactly one
    outcome wins, every callback runs once, every waiter wakes."""
    for _ in range(race_rounds(200)):
        f = mod.Future()
        calls = []
        outcomes = []
        woke = []
        go = threading.Event()

        def add_callbacks():
            go.wait()
            for i in range(20):
                f.add_done_callback(lambda fut, i=i: calls.append(i))

        def complete():
            go.wait()
            try:
                f.set_result(1)
                outcomes.append("result")
            except std.InvalidStateError:
                pass

        def cancel():
            go.wait()
            if f.cancel():
                outcomes.append("cancel")

        def wait():
            go.wait()
            try:
                woke.append(f.result(timeout=20))
            except std.CancelledError:
                woke.append("cancelled")

        threads = [threading.Thread(target=t) for t in
                   (add_callbacks, complete, cancel, wait, wait, wait)]
        for t in threads:
            t.start()
        go.set()
        for t in threads:
            t.join(20)
        assert len(outcomes) == 1
        assert sorted(calls) == list(range(20))
        expected = 1 if outcomes == ["result"] else "cancelled"
        assert woke == [expected] * 3


@pytest.mark.timeout(60)
def test_race_many_completers(mod, race_rounds):
    for _ in range(race_rounds(100)):
        f = mod.Future()
        wins = []
        go = threading.Barrier(8)

        def complete(i):
            go.wait()
            try:
                f.set_result(i)
                wins.append(i)
            except std.InvalidStateError:
                pass
        threads = [threading.Thread(target=complete, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert len(wins) == 1 and f.result() == wins[0]


@pytest.mark.timeout(30)
@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer")
def test_ctrl_c_interrupts_result(mod):
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        f = mod.Future()
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            f.result()
        assert time.monotonic() - start < 5
        # Still usable afterwards, nothing left behind.
        f.set_result(3)
        assert f.result() == 3
        g = mod.Future()
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(KeyboardInterrupt):
            g.exception(timeout=30)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.timeout(30)
def test_signal_handler_that_returns_keeps_waiting(mod):
    hits = []
    old = signal.signal(signal.SIGALRM, lambda *a: hits.append(1))
    try:
        f = mod.Future()
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        threading.Timer(0.3, f.set_result, (9,)).start()
        assert f.result(timeout=10) == 9
        assert hits == [1]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ---- the stdlib's functions on cfutures futures ------------------------

@pytest.mark.timeout(60)
def test_stdlib_wait_sees_completions(mod):
    fs = [mod.Future() for _ in range(50)]
    timers = [threading.Timer(0.001 * i, f.set_result, (i,)) for i, f in enumerate(fs)]
    for t in timers:
        t.start()
    done, not_done = std.wait(fs, timeout=30)
    assert len(done) == 50 and not not_done
    assert sorted(f.result() for f in done) == list(range(50))


@pytest.mark.timeout(60)
def test_stdlib_as_completed_sees_completions(mod):
    fs = [mod.Future() for _ in range(50)]
    for i, f in enumerate(fs):
        threading.Timer(0.001 * i, f.set_exception, (ValueError(i),)).start()
    seen = [f for f in std.as_completed(fs, timeout=30)]
    assert len(seen) == 50 and set(seen) == set(fs)


def test_stdlib_wait_ignores_unnotified_cancel(mod):
    f = mod.Future()
    f.cancel()
    done, not_done = std.wait([f], timeout=0)
    assert not done
    f.set_running_or_notify_cancel()
    done, not_done = std.wait([f], timeout=0)
    assert done == {f}


def test_ext_every_stdlib_name_is_there():
    # `import cfutures as futures` is a complete drop-in: every public name
    # of this interpreter's concurrent.futures, cfutures' class where it
    # has one and the stdlib's object otherwise.
    for name in std.__all__:
        assert name in cfutures.__all__, name
        ours = getattr(cfutures, name)
        if name in ("Future", "ThreadPoolExecutor", "wait", "as_completed"):
            assert ours is not getattr(std, name), name
        else:
            assert ours is getattr(std, name), name
    assert set(std.__all__) <= set(dir(cfutures))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        cfutures.nope


def test_ext_import_does_not_load_multiprocessing():
    # ProcessPoolExecutor comes from the stdlib on first use, as there.
    r = subprocess.run(
        [sys.executable, "-c",
         "import sys, cfutures; print('multiprocessing' in sys.modules); "
         "cfutures.ProcessPoolExecutor; "
         "print('multiprocessing' in sys.modules)"],
        capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["False", "True"], r.stderr


@pytest.mark.timeout(120)
def test_ext_process_pool_through_cfutures():
    # The stdlib's ProcessPoolExecutor, reached through cfutures, with
    # cfutures.wait and as_completed over its futures.
    with cfutures.ProcessPoolExecutor(2) as ex:
        fs = [ex.submit(abs, -i) for i in range(20)]
        done, not_done = cfutures.wait(fs, timeout=60)
        assert not not_done
        assert sorted(f.result() for f in cfutures.as_completed(fs)) == \
            list(range(20))


def test_methods_take_keywords_as_the_stdlibs(mod):
    # The stdlib's methods are Python functions: their parameters may be
    # passed by keyword, and a wrong call raises Python's own TypeError.
    f = mod.Future()
    seen = []
    f.add_done_callback(fn=seen.append)
    f.set_result(result=1)
    assert f.result() == 1 and seen == [f]
    g = mod.Future()
    g.set_exception(exception=ValueError("x"))
    assert isinstance(g.exception(), ValueError)
    with mod.ThreadPoolExecutor(1) as ex:
        assert ex.__exit__(exc_type=None, exc_val=None, exc_tb=None) is False


@pytest.mark.parametrize("call", [
    "f.set_result()", "f.set_result(1, 2)", "f.set_result(x=1)",
    "f.set_result(1, result=2)", "f.set_exception()",
    "f.add_done_callback()", "ex.__exit__()", "ex.__exit__(None)",
    "ex.__exit__(None, None, None, None)"])
def test_bad_method_arguments_match(call):
    # The same TypeError, word for word, as the stdlib's.
    def outcome(m):
        f = m.Future()
        ex = m.ThreadPoolExecutor(1)
        try:
            eval(call)
        except TypeError as e:
            return str(e)
        finally:
            ex.shutdown()
        return None
    want = outcome(std)
    assert want is not None
    assert outcome(cfutures) == want
