"""wait() and as_completed(): differential tests against concurrent.futures.

Every behaviour test runs with the stdlib (the oracle) and with cfutures.
Tests over mixed lists run each module's functions over a mix of cfutures
futures and stdlib futures; the stdlib functions on cfutures futures are
docs/DESIGN.md, contract 4: the other direction.  Tests named test_ext_*
check what the stdlib does not promise (and so cannot be run on it).
"""
import concurrent.futures as std
import gc
import random
import signal
import sys
import threading
import time
import weakref

import pytest

import cfutures

IMPLS = [std, cfutures]
IDS = ["stdlib", "cfutures"]


@pytest.fixture(params=IMPLS, ids=IDS)
def mod(request):
    """Functions and futures from one module: the stdlib or cfutures."""
    return request.param


@pytest.fixture(params=IMPLS, ids=["std-wait", "cf-wait"])
def wmod(request):
    """The module whose wait()/as_completed() is under test."""
    return request.param


@pytest.fixture(params=IMPLS, ids=["std-futures", "cf-futures"])
def fmod(request):
    """The module whose Future is waited on."""
    return request.param


@pytest.fixture
def busy_gil():
    """Switch threads often, so races interleave at many more points."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(old)


def later(delay, fn, *args):
    t = threading.Timer(delay, fn, args)
    t.daemon = True
    t.start()
    return t


def mixed(n):
    """n futures alternating between cfutures and the stdlib."""
    return [(cfutures if i % 2 else std).Future() for i in range(n)]


def raised(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except BaseException as e:   # noqa: B902 - the test compares any error
        return type(e), str(e)
    return None


# ---- names and types ---------------------------------------------------

def test_constants_are_the_stdlib_values():
    assert cfutures.FIRST_COMPLETED is std.FIRST_COMPLETED
    assert cfutures.FIRST_EXCEPTION is std.FIRST_EXCEPTION
    assert cfutures.ALL_COMPLETED is std.ALL_COMPLETED
    assert "wait" in cfutures.__all__ and "as_completed" in cfutures.__all__


def test_signatures_match():
    import inspect
    for name in ("wait", "as_completed"):
        assert (str(inspect.signature(getattr(cfutures, name)))
                == str(inspect.signature(getattr(std, name))))


def test_wait_returns_the_stdlib_namedtuple(mod):
    f = mod.Future()
    f.set_result(1)
    r = mod.wait([f])
    assert type(r) is std._base.DoneAndNotDoneFutures
    assert r.done == {f} and r.not_done == set()
    done, not_done = r
    assert type(done) is set and type(not_done) is set


def test_as_completed_is_an_iterator(mod):
    f = mod.Future()
    f.set_result(1)
    it = mod.as_completed([f])
    assert iter(it) is it
    assert next(it) is f
    with pytest.raises(StopIteration):
        next(it)
    with pytest.raises(StopIteration):
        next(it)


# ---- argument handling ---------------------------------------------------

def test_wait_argument_errors_match(mod):
    f = mod.Future()
    cases = [
        lambda m: m.wait(),
        lambda m: m.wait([f], None, m.ALL_COMPLETED, 1),
        lambda m: m.wait([f], bogus=1),
        lambda m: m.wait([f], 0, timeout=0),
        lambda m: m.wait([[]]),
        lambda m: m.wait(3),
        lambda m: m.wait([1, 2], timeout=0),
        lambda m: m.wait([f], timeout="soon"),
        lambda m: m.wait([f], return_when="SOMETIME"),
        lambda m: m.wait([f], return_when=None),
    ]
    for case in cases:
        got = raised(case, mod)
        want = raised(case, std)
        assert got is not None and got == want


def test_as_completed_argument_errors_match(mod):
    f = mod.Future()
    cases = [
        lambda m: m.as_completed(),
        lambda m: m.as_completed([f], 1, 2),
        lambda m: m.as_completed([f], bogus=1),
        lambda m: next(m.as_completed([[]])),
        lambda m: next(m.as_completed(3)),
        lambda m: next(m.as_completed([1])),
        lambda m: next(m.as_completed([f], timeout="soon")),
    ]
    for case in cases:
        got = raised(case, mod)
        want = raised(case, std)
        assert got is not None and got == want


def test_keyword_arguments(mod):
    f = mod.Future()
    f.set_result(None)
    r = mod.wait(fs=[f], timeout=1, return_when=mod.FIRST_COMPLETED)
    assert r.done == {f}
    assert list(mod.as_completed(fs=[f], timeout=1)) == [f]


def test_fs_may_be_any_iterable(mod):
    fs = [mod.Future() for _ in range(4)]
    for f in fs:
        f.set_result(1)
    assert mod.wait(iter(fs)).done == set(fs)
    assert mod.wait(tuple(fs)).done == set(fs)
    assert mod.wait(frozenset(fs)).done == set(fs)
    assert set(mod.as_completed(f for f in fs)) == set(fs)
    assert set(mod.as_completed({f: 1 for f in fs})) == set(fs)


def test_wait_does_not_change_its_argument(mod):
    fs = {mod.Future() for _ in range(4)}
    copy = set(fs)
    next(iter(fs)).set_result(1)
    done, not_done = mod.wait(fs, return_when=mod.FIRST_COMPLETED)
    assert fs == copy and not_done is not fs and done | not_done == fs


@pytest.mark.timeout(30)
@pytest.mark.parametrize("block", [False, True], ids=["done", "blocking"])
def test_wait_all_done_gives_new_sets(wmod, block):
    # Every future done: done is a new set of them all (not the argument,
    # which stays as it was), not_done a new empty one.
    fs = set(mixed(6))
    copy = set(fs)
    if block:
        later(0.02, lambda: [f.set_result(1) for f in fs])
    else:
        for f in fs:
            f.set_result(1)
    done, not_done = wmod.wait(fs, timeout=10)
    assert type(done) is set and type(not_done) is set
    assert done == fs and done is not fs and not_done == set()
    done.clear()
    not_done.add(1)
    assert fs == copy
    assert wmod.wait(fs).done == fs


# ---- wait() --------------------------------------------------------------

@pytest.mark.parametrize("when", ["FIRST_COMPLETED", "FIRST_EXCEPTION",
                                  "ALL_COMPLETED", "bogus"])
def test_wait_empty(mod, when):
    assert mod.wait([], timeout=0, return_when=when) == (set(), set())
    assert mod.wait([], return_when=when) == (set(), set())


def test_wait_bad_return_when_passes_when_all_done(mod):
    fs = [mod.Future() for _ in range(3)]
    for f in fs:
        f.set_result(1)
    assert mod.wait(fs, return_when="bogus") == (set(fs), set())
    p = mod.Future()
    with pytest.raises(ValueError, match="Invalid return condition: 'bogus'"):
        mod.wait(fs + [p], return_when="bogus")


def test_wait_return_when_compares_by_equality(mod):
    f, g = mod.Future(), mod.Future()
    f.set_result(1)
    r = mod.wait([f, g], return_when="".join(["FIRST_", "COMPLETED"]))
    assert r == ({f}, {g})


def test_wait_timeout_does_not_matter_when_done(mod):
    f = mod.Future()
    f.set_result(1)
    assert mod.wait([f], timeout="not a number").done == {f}


def test_wait_duplicates_once(mod):
    f, g = mod.Future(), mod.Future()
    f.set_result(1)
    done, not_done = mod.wait([f, g, f, g, g], timeout=0)
    assert done == {f} and not_done == {g}


@pytest.mark.parametrize("timeout", [0, 0.0, -1, -0.5, 0.01, 0.05])
def test_wait_timeout(mod, timeout):
    fs = [mod.Future() for _ in range(5)]
    fs[2].set_result(1)
    for when in (mod.ALL_COMPLETED, mod.FIRST_EXCEPTION):
        t0 = time.monotonic()
        done, not_done = mod.wait(fs, timeout=timeout, return_when=when)
        elapsed = time.monotonic() - t0
        assert done == {fs[2]} and not_done == set(fs) - {fs[2]}
        assert elapsed >= max(timeout, 0) * 0.9 - 0.002
        assert elapsed < max(timeout, 0) + 5
    done, not_done = mod.wait(fs[:2], timeout=timeout,
                              return_when=mod.FIRST_COMPLETED)
    assert done == set() and not_done == set(fs[:2])


def test_wait_first_completed_returns_at_once_if_any_done(mod):
    fs = [mod.Future() for _ in range(100)]
    fs[37].set_exception(KeyError())
    fs[61].set_result(None)
    done, not_done = mod.wait(fs, return_when=mod.FIRST_COMPLETED)
    assert done == {fs[37], fs[61]} and len(not_done) == 98


def test_wait_first_completed_wakes_on_one(mod):
    for _ in range(5):
        fs = [mod.Future() for _ in range(50)]
        later(0.01, fs[17].set_result, 17)
        done, not_done = mod.wait(fs, timeout=30,
                                  return_when=mod.FIRST_COMPLETED)
        assert fs[17] in done and done | not_done == set(fs)
        assert not done & not_done


def test_wait_all_completed_waits_for_all(mod):
    fs = [mod.Future() for _ in range(30)]

    def complete():
        for i, f in enumerate(fs):
            if i % 3 == 0:
                f.set_exception(ValueError(i))
            else:
                f.set_result(i)
            time.sleep(0.001)
    later(0.01, complete)
    done, not_done = mod.wait(fs, timeout=30)
    assert done == set(fs) and not_done == set()


def test_wait_first_exception(mod):
    fs = [mod.Future() for _ in range(6)]
    fs[0].set_result(1)
    # A result alone does not end a FIRST_EXCEPTION wait.
    done, not_done = mod.wait(fs, timeout=0.02,
                              return_when=mod.FIRST_EXCEPTION)
    assert done == {fs[0]}

    def complete():
        fs[1].set_result(2)
        time.sleep(0.03)
        fs[2].set_exception(OSError())
    later(0.02, complete)
    done, not_done = mod.wait(fs, timeout=30,
                              return_when=mod.FIRST_EXCEPTION)
    assert {fs[0], fs[1], fs[2]} <= done and fs[5] in not_done
    # Already raised: returns at once.
    done, not_done = mod.wait(fs, timeout=30,
                              return_when=mod.FIRST_EXCEPTION)
    assert fs[2] in done


def test_wait_first_exception_without_exception_is_all_completed(mod):
    fs = [mod.Future() for _ in range(5)]

    def complete():
        for f in fs:
            time.sleep(0.005)
            f.set_result(None)
    later(0, complete)
    done, not_done = mod.wait(fs, timeout=30,
                              return_when=mod.FIRST_EXCEPTION)
    assert done == set(fs) and not not_done


def test_wait_first_exception_cancelled_is_not_an_exception(mod):
    fs = [mod.Future() for _ in range(3)]
    fs[0].cancel()
    fs[0].set_running_or_notify_cancel()
    done, not_done = mod.wait(fs, timeout=0.02,
                              return_when=mod.FIRST_EXCEPTION)
    assert done == {fs[0]} and not_done == {fs[1], fs[2]}


def test_wait_set_exception_none(mod):
    # set_exception(None) calls add_exception on stdlib waiters, so it ends a
    # FIRST_EXCEPTION wait; the early check (exception() is not None) does
    # not count it.
    fs = [mod.Future() for _ in range(3)]
    later(0.02, fs[0].set_exception, None)
    done, not_done = mod.wait(fs, timeout=30,
                              return_when=mod.FIRST_EXCEPTION)
    assert done == {fs[0]}
    t0 = time.monotonic()
    done, not_done = mod.wait(fs, timeout=0.05,
                              return_when=mod.FIRST_EXCEPTION)
    assert done == {fs[0]}
    assert time.monotonic() - t0 >= 0.045     # no early return


def test_wait_bare_cancel_is_not_done(mod):
    f, g = mod.Future(), mod.Future()
    assert f.cancel()
    assert mod.wait([f, g], timeout=0) == (set(), {f, g})
    assert mod.wait([f], timeout=0.02,
                    return_when=mod.FIRST_COMPLETED) == (set(), {f})
    assert not f.set_running_or_notify_cancel()
    assert mod.wait([f, g], timeout=0) == ({f}, {g})


def test_wait_notify_cancel_wakes_but_cancel_does_not(mod):
    f, g = mod.Future(), mod.Future()
    seen = []

    def step():
        f.cancel()
        time.sleep(0.1)
        seen.append(time.monotonic())
        f.set_running_or_notify_cancel()
    later(0.02, step)
    done, not_done = mod.wait([f, g], timeout=30,
                              return_when=mod.FIRST_COMPLETED)
    woke = time.monotonic()
    assert done == {f} and not_done == {g}
    assert seen and woke >= seen[0]


def test_wait_running_is_not_done(mod):
    f = mod.Future()
    assert f.set_running_or_notify_cancel()
    assert not f.cancel()
    assert mod.wait([f], timeout=0.01) == (set(), {f})
    later(0.02, f.set_result, 1)
    assert mod.wait([f], timeout=30) == ({f}, set())


def test_wait_subclasses(mod):
    class Sub(mod.Future):
        pass

    class StdSub(std.Future):
        pass
    fs = [Sub(), StdSub(), Sub(), StdSub()]

    def complete():
        fs[0].set_result(1)
        time.sleep(0.01)
        fs[1].set_exception(KeyError())
    later(0.01, complete)
    done, _ = mod.wait(fs, timeout=30, return_when=mod.FIRST_EXCEPTION)
    assert {fs[0], fs[1]} <= done
    later(0.01, fs[2].set_result, 1)
    later(0.01, fs[3].set_result, 1)
    assert set(mod.as_completed(fs, timeout=30)) == set(fs)


def test_wait_foreign_future_interface():
    """A concurrent.futures.Future subclass with its own methods: cfutures
    waits on it through the stdlib's protocol, as the stdlib does."""
    calls = []

    class Custom(std.Future):
        def exception(self, timeout=None):
            calls.append("exception")
            return super().exception(timeout)
    for m in IMPLS:
        calls.clear()
        f, g = Custom(), Custom()
        f.set_exception(KeyError())
        assert m.wait([f, g], return_when=m.FIRST_EXCEPTION) == ({f}, {g})
        assert calls == ["exception"]


def test_wait_leaves_no_waiters_behind(wmod, fmod):
    fs = [std.Future(), fmod.Future(), fmod.Future()]
    later(0.01, fs[1].set_result, 1)
    wmod.wait(fs, timeout=30, return_when=wmod.FIRST_COMPLETED)
    wmod.wait(fs, timeout=0.01)
    for f in fs:
        if isinstance(f, cfutures.Future) and wmod is cfutures:
            continue   # a cfutures wait uses C nodes, not _waiters
        assert f._waiters == []


# ---- the argument's shape, and what an early return leaves linked ---------

def _set_with_holes(fs):
    """A set whose table has had deletions (dummy slots)."""
    extra = [object() for _ in range(len(fs))]
    s = set(extra) | set(fs)
    s.difference_update(extra)
    return s


_SHAPES = {
    "set": set,
    "frozenset": frozenset,
    "set-with-holes": _set_with_holes,
    "list-with-duplicates": lambda fs: fs + fs[::3] + fs[:1],
    "dict-keys": dict.fromkeys,
    "keys-view": lambda fs: dict.fromkeys(fs).keys(),
    "generator": lambda fs: (f for f in fs),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("shape", sorted(_SHAPES))
@pytest.mark.parametrize("kinds", ["own", "mixed"])
@pytest.mark.parametrize("when", ["FIRST_COMPLETED", "FIRST_EXCEPTION",
                                  "ALL_COMPLETED"])
def test_wait_any_shape_of_many(wmod, shape, kinds, when):
    """Hundreds of futures in each shape of argument: done and not_done
    hold exactly the right ones, as new plain sets, whether the call
    returns at once (a future done among them, anywhere), blocks until
    another thread completes one, or times out; and every future is left
    as it was found (completing them all afterwards reaches no call that
    has returned, and a later wait() sees them all done)."""
    own = wmod if kinds == "own" else None
    for rnd in range(6):
        fs = ([own.Future() for _ in range(300)] if own else mixed(300))
        pick = fs[(rnd * 97) % len(fs)]
        arg = _SHAPES[shape](fs)
        if rnd % 3 == 0:
            # One done before the call, at a different place each round.
            pick.set_exception(KeyError(rnd))
            want_done = {pick}
            timeout = 30 if when != "ALL_COMPLETED" else 0.01
        elif rnd % 3 == 1:
            # Completed by another thread while the call blocks.
            later(0.01, pick.set_exception, KeyError(rnd))
            want_done = {pick}
            timeout = 30 if when != "ALL_COMPLETED" else None
        else:
            # Nothing completes: the call times out.
            want_done = set()
            timeout = 0.01
        if timeout is None:
            # ALL_COMPLETED: the rest complete too, a little later.
            later(0.05, lambda: [f.set_result(2) for f in fs
                                 if f is not pick])
            want_done = set(fs)
        r = wmod.wait(arg, timeout=timeout, return_when=when)
        assert type(r.done) is set and type(r.not_done) is set
        assert r.done == want_done
        assert r.not_done == set(fs) - want_done
        for f in fs:
            if not f.done():
                f.set_result(1)
        if not isinstance(arg, type(f for f in ())):
            assert wmod.wait(arg, timeout=0) == (set(fs), set())
        for f in fs:
            if not (isinstance(f, cfutures.Future) and wmod is cfutures):
                assert f._waiters == []


# ---- as_completed() --------------------------------------------------------

def test_as_completed_empty(mod):
    assert list(mod.as_completed([])) == []
    assert list(mod.as_completed([], timeout=0)) == []


def test_as_completed_done_first_then_completion_order(mod):
    fs = [mod.Future() for _ in range(6)]
    fs[3].set_result(3)
    fs[1].set_exception(KeyError())
    fs[5].cancel()
    fs[5].set_running_or_notify_cancel()

    def complete():
        for i in (2, 0, 4):
            time.sleep(0.03)
            fs[i].set_result(i)
    later(0, complete)
    out = list(mod.as_completed(fs + fs, timeout=30))
    assert set(out[:3]) == {fs[3], fs[1], fs[5]}
    assert out[3:] == [fs[2], fs[0], fs[4]]


def test_as_completed_batch_of_many(mod):
    fs = [mod.Future() for _ in range(300)]
    it = mod.as_completed(fs, timeout=30)
    fs[0].set_result(0)
    assert next(it) is fs[0]
    for f in fs[1:]:
        f.set_result(None)
    out = list(it)
    assert len(out) == 299 and set(out) == set(fs[1:])


def test_as_completed_duplicates_once(mod):
    f, g = mod.Future(), mod.Future()
    g.set_result(2)
    later(0.01, f.set_result, 1)
    assert list(mod.as_completed([f, g, f, f, g], timeout=30)) == [g, f]


@pytest.mark.parametrize("timeout", [0, -1, 0.01, 0.05])
def test_as_completed_timeout(mod, timeout):
    fs = [mod.Future() for _ in range(5)]
    fs[1].set_result(1)
    fs[4].set_result(4)
    it = mod.as_completed(fs, timeout=timeout)
    got = []
    t0 = time.monotonic()
    with pytest.raises(std.TimeoutError) as info:
        for f in it:
            got.append(f)
    elapsed = time.monotonic() - t0
    assert info.type is TimeoutError
    assert str(info.value) == "3 (of 5) futures unfinished"
    assert set(got) == {fs[1], fs[4]}
    assert elapsed >= max(timeout, 0) * 0.9 - 0.002
    assert elapsed < max(timeout, 0) + 5
    # A generator that raised is finished.
    with pytest.raises(StopIteration):
        next(it)


def test_as_completed_timeout_counts_what_was_yielded(mod):
    fs = [mod.Future() for _ in range(4)]
    later(0.01, fs[2].set_result, 2)
    it = mod.as_completed(fs, timeout=1.0)
    assert next(it) is fs[2]
    with pytest.raises(TimeoutError, match=r"^3 \(of 4\) futures unfinished$"):
        next(it)


def test_as_completed_timeout_zero_all_done(mod):
    fs = [mod.Future() for _ in range(3)]
    for f in fs:
        f.set_result(None)
    assert set(mod.as_completed(fs, timeout=0)) == set(fs)


def test_as_completed_is_lazy_like_a_generator(mod):
    """Nothing happens before the first next(): fs is not read and the
    timeout clock does not start (the stdlib's as_completed is a
    generator)."""
    consumed = []
    f = mod.Future()

    def gen():
        consumed.append(1)
        yield f
    it = mod.as_completed(gen(), timeout=0.2)
    time.sleep(0.3)
    assert consumed == []
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        next(it)
    assert consumed == [1]
    assert time.monotonic() - t0 >= 0.15


def test_as_completed_close_before_start(mod):
    it = mod.as_completed([mod.Future()], timeout=0)
    it.close()
    with pytest.raises(StopIteration):
        next(it)


def test_as_completed_close_removes_waiters(wmod, fmod):
    fs = [fmod.Future() for _ in range(4)] + [std.Future()]
    fs[0].set_result(0)
    it = wmod.as_completed(fs)
    assert next(it) is fs[0]
    it.close()
    it.close()
    with pytest.raises(StopIteration):
        next(it)
    for f in fs:
        if not (isinstance(f, cfutures.Future) and wmod is cfutures):
            assert f._waiters == []
    # Completing after close must not reach the closed iterator.
    for f in fs[1:]:
        f.set_result(1)


def test_as_completed_dropped_removes_waiters(wmod, fmod):
    fs = [fmod.Future() for _ in range(3)] + [std.Future()]
    fs[0].set_result(0)
    it = wmod.as_completed(fs)
    assert next(it) is fs[0]
    del it
    gc.collect()
    for f in fs:
        if not (isinstance(f, cfutures.Future) and wmod is cfutures):
            assert f._waiters == []
    for f in fs[1:]:
        f.set_result(1)


def test_as_completed_keeps_no_reference_to_yielded(mod):
    fs = [mod.Future() for _ in range(6)]
    refs = [weakref.ref(f) for f in fs]
    fs[0].set_result(0)
    fs[1].set_result(1)
    it = mod.as_completed(fs, timeout=30)
    first = next(it)    # fs is read at the first next()
    del fs[:], first
    gc.collect()
    dead = [r for r in refs if r() is None]
    assert len(dead) == 1
    for r in refs[2:]:
        r().set_result(None)
    for f in it:
        del f
    gc.collect()
    assert all(r() is None for r in refs)


def test_as_completed_with_exceptions_and_cancels(mod):
    fs = [mod.Future() for _ in range(9)]

    def complete():
        for i, f in enumerate(fs):
            if i % 3 == 0:
                f.set_result(i)
            elif i % 3 == 1:
                f.set_exception(ValueError(i))
            else:
                f.cancel()
                f.set_running_or_notify_cancel()
    later(0.01, complete)
    out = list(mod.as_completed(fs, timeout=30))
    assert sorted(map(id, out)) == sorted(map(id, fs))


def test_as_completed_ignores_bare_cancel(mod):
    f = mod.Future()
    f.cancel()
    with pytest.raises(TimeoutError):
        list(mod.as_completed([f], timeout=0.02))
    later(0.02, f.set_running_or_notify_cancel)
    assert list(mod.as_completed([f], timeout=30)) == [f]


def test_as_completed_concurrent_next_is_refused(mod,
                                                  no_racy_generator_oracle):
    f = mod.Future()
    g = std.Future()     # its _waiters shows when the other thread is in
    it = mod.as_completed([f, g], timeout=30)
    got = []
    t = threading.Thread(target=lambda: got.extend(it))
    t.start()
    deadline = time.monotonic() + 30
    while not g._waiters and time.monotonic() < deadline:
        time.sleep(0.001)
    with pytest.raises(ValueError, match="generator already executing"):
        next(it)
    with pytest.raises(ValueError, match="generator already executing"):
        it.close()
    f.set_result(1)
    g.set_result(2)
    t.join(30)
    assert len(got) == 2 and set(got) == {f, g}


def test_as_completed_in_cycle_is_collected(wmod, fmod):
    def make():
        f = fmod.Future()
        g = std.Future()
        d = fmod.Future()
        d.set_result(None)
        it = wmod.as_completed([f, g, d])
        next(it)
        f.add_done_callback(lambda _: it)
        g.add_done_callback(lambda _: it)
        return weakref.ref(f), weakref.ref(g)
    rf, rg = make()
    gc.collect()
    assert rf() is None and rg() is None


# ---- Ctrl-C ----------------------------------------------------------------

@pytest.fixture
def alarm():
    """Raise KeyboardInterrupt in the main thread after `delay` seconds."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    old = signal.signal(signal.SIGALRM, handler)

    def arm(delay):
        signal.setitimer(signal.ITIMER_REAL, delay)
    yield arm
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("timeout", [None, 20])
@pytest.mark.parametrize("when", ["FIRST_COMPLETED", "ALL_COMPLETED"])
def test_wait_interrupted(mod, alarm, timeout, when):
    fs = mixed(4)
    alarm(0.1)
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        mod.wait(fs, timeout=timeout, return_when=when)
    assert time.monotonic() - t0 < 10


@pytest.mark.timeout(60)
@pytest.mark.parametrize("timeout", [None, 20])
def test_as_completed_interrupted(mod, alarm, timeout):
    fs = mixed(4)
    fs[0].set_result(0)
    it = mod.as_completed(fs, timeout=timeout)
    assert next(it) is fs[0]
    alarm(0.1)
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        next(it)
    assert time.monotonic() - t0 < 10
    with pytest.raises(StopIteration):
        next(it)
    for f in fs:
        f.set_result(None) if not f.done() else None
        if isinstance(f, std.Future) and not isinstance(f, cfutures.Future):
            assert f._waiters == []


@pytest.mark.timeout(60)
def test_ext_wait_interrupted_removes_waiters(alarm):
    # The stdlib's wait() leaves its waiter installed when interrupted.
    fs = mixed(6)
    alarm(0.1)
    with pytest.raises(KeyboardInterrupt):
        cfutures.wait(fs)
    for f in fs:
        if not isinstance(f, cfutures.Future):
            assert f._waiters == []
        f.set_result(None)   # must not reach the dead call


def test_signal_handler_that_returns_keeps_waiting(mod):
    hits = []
    old = signal.signal(signal.SIGALRM, lambda *a: hits.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.02)
        f = mod.Future()
        later(0.2, f.set_result, 1)
        assert mod.wait([f], timeout=30) == ({f}, set())
        assert hits
        signal.setitimer(signal.ITIMER_REAL, 0.02)
        g = mod.Future()
        later(0.2, g.set_result, 1)
        assert list(mod.as_completed([g], timeout=30)) == [g]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ---- mixed lists, both directions -------------------------------------------

def test_mixed_wait_and_as_completed(wmod):
    fs = mixed(40)
    fs[0].set_result(0)
    fs[1].set_result(1)

    def complete():
        for f in fs[2:]:
            time.sleep(0.0005)
            f.set_result(None)
    later(0.01, complete)
    done, not_done = wmod.wait(fs, return_when=wmod.FIRST_COMPLETED)
    assert {fs[0], fs[1]} <= done
    out = list(wmod.as_completed(fs, timeout=30))
    assert len(out) == 40 and set(out) == set(fs)
    assert wmod.wait(fs, timeout=30) == (set(fs), set())


def test_stdlib_functions_on_cfutures(busy_gil):
    """contract 4: concurrent.futures.wait/as_completed take our futures."""
    fs = [cfutures.Future() for _ in range(50)]
    for i, f in enumerate(fs[:10]):
        f.set_result(i)
    fs[10].cancel()
    later(0.01, fs[10].set_running_or_notify_cancel)
    for i, f in enumerate(fs[11:]):
        later(0.001 * i, f.set_exception if i % 2 else f.set_result, i)
    out = list(std.as_completed(fs, timeout=30))
    assert len(out) == 50 and set(out) == set(fs)
    assert std.wait(fs, timeout=0) == (set(fs), set())


# ---- races: no completion may be missed -------------------------------------

def _race_round(wmod, fmods, n, nthreads, how):
    fs = [fmods[i % len(fmods)].Future() for i in range(n)]
    order = list(range(n))
    random.shuffle(order)
    start = threading.Barrier(nthreads + 1)

    def completer(k):
        start.wait()
        for i in order[k::nthreads]:
            f = fs[i]
            r = i % 7
            if r == 0:
                f.cancel()
                f.set_running_or_notify_cancel()
            elif r == 1:
                f.set_exception(KeyError(i))
            else:
                f.set_running_or_notify_cancel()
                f.set_result(i)
            if i % 13 == 0:
                time.sleep(0)
    threads = [threading.Thread(target=completer, args=(k,))
               for k in range(nthreads)]
    for t in threads:
        t.start()
    start.wait()
    if how == "as_completed":
        out = list(wmod.as_completed(fs, timeout=30))
        assert len(out) == n and set(out) == set(fs)
    elif how == "first":
        pending = set(fs)
        while pending:
            done, pending = wmod.wait(pending, timeout=30,
                                      return_when=wmod.FIRST_COMPLETED)
            assert done and all(f.done() for f in done)
    else:
        done, not_done = wmod.wait(fs, timeout=30, return_when=how)
        if how == wmod.ALL_COMPLETED:
            assert not not_done and done == set(fs)
        else:
            assert any(f.done() and not f.cancelled()
                       and f.exception() is not None for f in done) \
                or not not_done
    for t in threads:
        t.join()
    for f in fs:
        if not (isinstance(f, cfutures.Future) and wmod is cfutures):
            assert f._waiters == []


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["as_completed", "first", "ALL_COMPLETED",
                                 "FIRST_EXCEPTION"])
@pytest.mark.parametrize("futs", ["cf", "std", "mixed"])
def test_race_completions_vs_installing(wmod, how, futs, busy_gil,
                                       race_rounds):
    fmods = {"cf": [cfutures], "std": [std], "mixed": [cfutures, std]}[futs]
    n = 200 if wmod is std or futs != "cf" else 1000
    for _ in range(race_rounds(10)):
        _race_round(wmod, fmods, n, 6, how)


@pytest.mark.timeout(120)
def test_race_many_waiters_on_shared_futures(wmod, busy_gil, race_rounds):
    """Several threads wait on the same futures, each with its own call,
    while others complete them."""
    for _ in range(race_rounds(5)):
        fs = mixed(200)
        errors = []

        def waiter(k):
            try:
                if k % 2:
                    out = list(wmod.as_completed(fs, timeout=30))
                    assert len(out) == len(fs)
                else:
                    done, not_done = wmod.wait(fs, timeout=30)
                    assert not not_done
            except BaseException as e:  # noqa: B902
                errors.append(e)
        waiters = [threading.Thread(target=waiter, args=(k,))
                   for k in range(6)]
        for t in waiters:
            t.start()

        def completer(part):
            for f in part:
                f.set_result(None)
        completers = [threading.Thread(target=completer, args=(fs[k::4],))
                      for k in range(4)]
        for t in completers:
            t.start()
        for t in completers + waiters:
            t.join(60)
        assert not errors


@pytest.mark.timeout(120)
def test_race_stdlib_functions_on_fresh_cfutures(busy_gil, race_rounds):
    """The stdlib's wait/as_completed create _condition and _waiters on
    futures that other threads are completing at that very moment."""
    for rnd in range(race_rounds(30)):
        fs = [cfutures.Future() for _ in range(300)]
        start = threading.Barrier(9)

        def completer(part):
            start.wait()
            for f in part:
                f.set_result(None)
        threads = [threading.Thread(target=completer, args=(fs[k::8],))
                   for k in range(8)]
        for t in threads:
            t.start()
        start.wait()
        if rnd % 2:
            out = list(std.as_completed(fs, timeout=30))
            assert len(out) == 300
        else:
            done, not_done = std.wait(fs, timeout=30)
            assert not not_done
        for t in threads:
            t.join()


@pytest.mark.timeout(120)
def test_race_close_while_completing(wmod, busy_gil, race_rounds):
    """Dropping an as_completed iterator while other threads complete its
    futures: no completion reaches a closed iterator."""
    for _ in range(race_rounds(30)):
        fs = mixed(100)
        start = threading.Barrier(5)

        def completer(part):
            start.wait()
            for f in part:
                f.set_result(None)
        threads = [threading.Thread(target=completer, args=(fs[k::4],))
                   for k in range(4)]
        for t in threads:
            t.start()
        it = wmod.as_completed(fs, timeout=30)
        start.wait()
        for _, f in zip(range(random.randrange(5, 50)), it):
            pass
        it.close()
        del it
        for t in threads:
            t.join()
        for f in fs:
            if not isinstance(f, cfutures.Future):
                assert f._waiters == []


@pytest.mark.timeout(120)
def test_race_timeouts_while_completing(wmod, busy_gil, race_rounds):
    """Short timeouts expiring while completions arrive: every future is
    either reported done or not, never both, never lost."""
    for _ in range(race_rounds(20)):
        fs = mixed(100)

        def completer():
            for f in fs:
                f.set_result(None)
                time.sleep(0.00005)
        t = threading.Thread(target=completer)
        t.start()
        seen = set()
        while len(seen) < len(fs):
            try:
                for f in wmod.as_completed(fs, timeout=0.002):
                    seen.add(f)
            except TimeoutError:
                pass
            done, not_done = wmod.wait(fs, timeout=0.001)
            assert not done & not_done and done | not_done == set(fs)
            assert all(f.done() for f in done)
        t.join()
        assert wmod.wait(fs, timeout=0) == (set(fs), set())


# ---- process pool futures ------------------------------------------------

@pytest.fixture(scope="module")
def process_pool():
    with std.ProcessPoolExecutor(max_workers=2) as pool:
        yield pool


@pytest.mark.timeout(120)
def test_process_pool_futures(wmod, process_pool):
    fs = [process_pool.submit(pow, 2, i) for i in range(20)]
    fs.append(process_pool.submit(divmod, 1, 0))
    slow = process_pool.submit(time.sleep, 0.3)
    out = list(wmod.as_completed(fs + [slow], timeout=60))
    assert len(out) == 22
    assert sorted(f.result() for f in fs[:20]) == [2 ** i for i in range(20)]
    done, not_done = wmod.wait(fs, return_when=wmod.FIRST_EXCEPTION)
    assert fs[-1] in done
    slow = process_pool.submit(time.sleep, 0.5)
    done, not_done = wmod.wait([slow], timeout=0)
    assert not_done == {slow}
    assert wmod.wait([slow], timeout=60).done == {slow}
    assert slow._waiters == []


@pytest.mark.timeout(120)
def test_process_pool_mixed_with_cfutures(wmod, process_pool):
    cfs = [cfutures.Future() for _ in range(10)]
    pfs = [process_pool.submit(pow, 3, i) for i in range(10)]

    def complete():
        for i, f in enumerate(cfs):
            time.sleep(0.005)
            f.set_result(i)
    later(0, complete)
    out = list(wmod.as_completed(cfs + pfs, timeout=60))
    assert set(out) == set(cfs + pfs) and len(out) == 20
    slow = process_pool.submit(time.sleep, 0.5)
    c = cfutures.Future()
    later(0.05, c.set_result, 1)
    done, not_done = wmod.wait([slow, c], timeout=60,
                               return_when=wmod.FIRST_COMPLETED)
    assert c in done
    assert wmod.wait([slow, c], timeout=60) == ({slow, c}, set())


# ---- thread pools ------------------------------------------------------------

@pytest.fixture(params=IMPLS, ids=["std-pool", "cf-pool"])
def pool_cls(request):
    """The ThreadPoolExecutor of a module (cfutures': once it lands)."""
    cls = getattr(request.param, "ThreadPoolExecutor", None)
    if cls is None:
        pytest.skip("cfutures.ThreadPoolExecutor is not built yet")
    return cls


@pytest.mark.timeout(120)
def test_thread_pool_futures(wmod, pool_cls):
    with pool_cls(max_workers=4) as pool:
        fs = [pool.submit(time.sleep, 0.0001 * (i % 5)) for i in range(500)]
        assert len(list(wmod.as_completed(fs, timeout=60))) == 500
        fs = [pool.submit(pow, 2, i) for i in range(500)]
        done, not_done = wmod.wait(fs, timeout=60)
        assert len(done) == 500 and not not_done


@pytest.mark.timeout(120)
def test_thread_pool_submit_as_completed_many(wmod, pool_cls):
    with pool_cls() as pool:
        for _ in range(3):
            fs = [pool.submit(int) for _ in range(5000)]
            out = list(wmod.as_completed(fs, timeout=60))
            assert len(out) == 5000 and set(out) == set(fs)
            pending = set(pool.submit(time.sleep, 0.0001) for _ in range(200))
            while pending:
                done, pending = wmod.wait(pending, timeout=60,
                                          return_when=wmod.FIRST_COMPLETED)
                assert done


@pytest.mark.timeout(120)
def test_race_stdlib_and_cfutures_waiters_together(busy_gil):
    """std.wait/as_completed (through _condition and _waiters) and
    cfutures.wait/as_completed (through C nodes) on the same futures at
    the same time, while other threads complete them."""
    for _ in range(10):
        fs = mixed(200)
        errors = []

        def waiter(k):
            m = (std, cfutures)[k % 2]
            try:
                if k % 4 < 2:
                    out = list(m.as_completed(fs, timeout=30))
                    assert len(out) == len(fs)
                else:
                    done, not_done = m.wait(fs, timeout=30)
                    assert not not_done
            except BaseException as e:  # noqa: B902
                errors.append(e)
        waiters = [threading.Thread(target=waiter, args=(k,))
                   for k in range(8)]
        for t in waiters:
            t.start()

        def completer(part):
            for f in part:
                f.set_result(None)
        completers = [threading.Thread(target=completer, args=(fs[k::4],))
                      for k in range(4)]
        for t in completers:
            t.start()
        for t in completers + waiters:
            t.join(60)
        assert not errors
        for f in fs:
            assert f._waiters == []


# ---- differential: every state, every mode, against the oracle ---------------

from hypothesis import given, settings, strategies as st  # noqa: E402

STATES = ["pending", "running", "cancelled", "notified", "result",
          "exception", "exception-none"]


def _make(m, state):
    f = m.Future()
    if state == "running":
        f.set_running_or_notify_cancel()
    elif state in ("cancelled", "notified"):
        f.cancel()
        if state == "notified":
            f.set_running_or_notify_cancel()
    elif state == "result":
        f.set_result(state)
    elif state == "exception":
        f.set_exception(KeyError(state))
    elif state == "exception-none":
        f.set_exception(None)
    return f


def _outcome(m, states, picks, return_when, timeout):
    """What wait() and as_completed() say about futures in these states,
    as indices, so two modules' answers compare."""
    fs = [_make(m, s) for s in states]
    index = {id(f): i for i, f in enumerate(fs)}
    arg = [fs[i] for i in picks]
    try:
        done, not_done = m.wait(arg, timeout=timeout, return_when=return_when)
        waited = (sorted(index[id(f)] for f in done),
                  sorted(index[id(f)] for f in not_done))
    except Exception as e:  # noqa: B902
        waited = (type(e), str(e))
    got = []
    try:
        for f in m.as_completed(arg, timeout=timeout):
            got.append(index[id(f)])
        err = None
    except Exception as e:  # noqa: B902
        err = (type(e), str(e))
    return waited, sorted(got), err


@settings(max_examples=150, deadline=None)
@given(states=st.lists(st.sampled_from(STATES), min_size=0, max_size=6),
       data=st.data(),
       return_when=st.sampled_from(["FIRST_COMPLETED", "FIRST_EXCEPTION",
                                    "ALL_COMPLETED", "NEVER"]),
       timeout=st.sampled_from([0, -1, 0.001]))
def test_differential_states(states, data, return_when, timeout):
    picks = data.draw(st.lists(st.integers(0, max(len(states) - 1, 0)),
                               max_size=8)) if states else []
    want = _outcome(std, states, picks, return_when, timeout)
    assert _outcome(cfutures, states, picks, return_when, timeout) == want
    # Mixed: the even-numbered futures from the stdlib, the rest ours.
    assert _mixed_outcome(states, picks, return_when, timeout) == want


def _mixed_outcome(states, picks, return_when, timeout):
    class Mixed:
        @staticmethod
        def Future():
            Mixed.count += 1
            return (std if Mixed.count % 2 else cfutures).Future()
        wait = staticmethod(cfutures.wait)
        as_completed = staticmethod(cfutures.as_completed)
    Mixed.count = 0
    return _outcome(Mixed, states, picks, return_when, timeout)


# ---- odd foreign futures ------------------------------------------------------

class _DequeWaiters(std.Future):
    """A Future subclass keeping its waiters in a deque, not a list."""

    def __init__(self):
        super().__init__()
        import collections
        self._waiters = collections.deque()


def test_foreign_waiters_not_a_list(wmod):
    fs = [_DequeWaiters() for _ in range(4)]
    fs[0].set_result(0)
    later(0.02, fs[1].set_result, 1)
    done, not_done = wmod.wait(fs, timeout=30, return_when=wmod.FIRST_COMPLETED)
    assert fs[0] in done
    fs[1].result(timeout=30)
    done, not_done = wmod.wait(fs, timeout=0.01)
    assert done == {fs[0], fs[1]}
    later(0.01, fs[2].set_result, 2)
    later(0.02, fs[3].set_result, 3)
    assert set(wmod.as_completed(fs, timeout=30)) == set(fs)
    assert all(len(f._waiters) == 0 for f in fs)


class _Unlockable(std.Future):
    """A Future whose _condition cannot be read once `broken` is set."""

    broken = False

    def __getattribute__(self, name):
        if name == "_condition" and object.__getattribute__(self, "broken"):
            raise RuntimeError("no condition here")
        return object.__getattribute__(self, name)


@pytest.mark.parametrize("how", ["wait", "as_completed"])
def test_ext_error_midway_leaves_nothing_installed(how):
    # The stdlib leaves the Conditions it acquired so far locked when one
    # future fails in _AcquireFutures, so this cannot run on the oracle.
    for _ in range(20):
        fs = mixed(10)
        bad = _Unlockable()
        bad.broken = True
        with pytest.raises(RuntimeError, match="no condition here"):
            if how == "wait":
                cfutures.wait(fs + [bad], timeout=30)
            else:
                list(cfutures.as_completed(fs + [bad], timeout=30))
        for f in fs:
            if not isinstance(f, cfutures.Future):
                assert f._waiters == []
            f.set_result(None)      # must not reach the failed call
        assert cfutures.wait(fs, timeout=0).not_done == set()


# ---- odd timeouts: the stdlib's conversions and errors ------------------------

def _timeout_outcome(m, fn, timeout):
    f = m.Future()
    later(0.1, f.set_result, 1)
    try:
        if fn == "wait":
            r = m.wait([f], timeout=timeout)
            return "ok", len(r.done)
        return "ok", len(list(m.as_completed([f], timeout=timeout)))
    except Exception as e:  # noqa: B902
        return type(e), str(e)
    finally:
        f.result(timeout=30)


@pytest.mark.parametrize("fn", ["wait", "as_completed"])
@pytest.mark.parametrize("timeout", [
    "Decimal('0.01')", "Decimal('-1')", "Fraction(1, 100)", "True",
    "10**30", "10**400", "-10**400", "float('inf')", "float('-inf')",
    "float('nan')", "1e12", "1e-12", "9.3e9", "[]"])
def test_odd_timeouts_match(fn, timeout):
    from decimal import Decimal  # noqa: F401 - used by eval
    from fractions import Fraction  # noqa: F401
    value = eval(timeout)
    want = _timeout_outcome(std, fn, value)
    got = _timeout_outcome(cfutures, fn, value)
    if want[0] is OverflowError:
        # The message comes from the interpreter's time conversion and
        # changed between 3.11 patch releases; cfutures gives 3.11.7's.
        assert got[0] is OverflowError
    else:
        assert got == want
