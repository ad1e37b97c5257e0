# pyright: strict
# mypy: enable-error-code="deprecated"
"""The whole public API of cfutures, as type checkers see it and as it runs.

The `types` gate of .ci/run checks this file with `mypy --strict` and
pyright (strict), against cfutures/__init__.pyi; pytest runs it, so every
line that type-checks also works.  assert_type() pins what the checkers
infer (and does nothing at runtime).  The `if TYPE_CHECKING:` blocks hold
code that must NOT type-check, each line with the ignore comment that
silences its error: both checkers are run so that an ignore comment that
silences nothing is an error (mypy --strict's warn_unused_ignores,
pyright's reportUnnecessaryTypeIgnoreComment), so those lines keep failing.
"""
import asyncio
import concurrent.futures
import threading
from typing import TYPE_CHECKING, assert_type

import cfutures

# (the name of the generic NamedTuple typeshed gives the stdlib's wait())
from concurrent.futures._base import DoneAndNotDoneFutures


def square(x: int) -> int:
    return x * x


def fail(message: str) -> int:
    raise ValueError(message)


def greet(name: str, *, punctuation: str = "!") -> str:
    return f"hello {name}{punctuation}"


# ---- Future ---------------------------------------------------------------

def test_future() -> None:
    f: cfutures.Future[int] = cfutures.Future()
    assert isinstance(f, concurrent.futures.Future)
    seen: list[int] = []

    def on_done(fut: cfutures.Future[int]) -> None:
        seen.append(fut.result())

    f.add_done_callback(on_done)
    assert f.remove_done_callback(on_done) == 1
    f.add_done_callback(on_done)
    assert not f.done() and not f.running() and not f.cancelled()
    assert f.set_running_or_notify_cancel()
    assert f.running()
    timer = threading.Timer(0.01, f.set_result, (6,))
    timer.start()
    assert_type(f.result(timeout=5), int)
    # The callback runs in the timer's thread, after result() may return.
    timer.join()
    assert f.result() == 6 and seen == [6]
    assert f.exception(timeout=None) is None

    g = cfutures.Future[str]()
    g.set_exception(ValueError("no"))
    assert isinstance(g.exception(), ValueError)
    try:
        g.result()
    except ValueError:
        pass
    else:
        raise AssertionError("result() did not raise")

    h: cfutures.Future[None] = cfutures.Future()
    assert h.cancel() and h.cancelled()
    try:
        h.result(timeout=0)
    except cfutures.CancelledError:
        pass
    try:
        h.set_result(None)
    except cfutures.InvalidStateError:
        pass

    pending: cfutures.Future[int] = cfutures.Future()
    try:
        pending.result(timeout=0.001)
    except cfutures.TimeoutError:
        pass

    if TYPE_CHECKING:
        f.set_result("six")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
        f.get_loop()  # type: ignore[attr-defined]  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]


# ---- ThreadPoolExecutor ---------------------------------------------------

def test_executor() -> None:
    started: list[str] = []
    with cfutures.ThreadPoolExecutor(
        max_workers=2,
        thread_name_prefix="typed",
        initializer=started.append,
        initargs=("worker",),
    ) as pool:
        assert_type(pool, cfutures.ThreadPoolExecutor)
        assert isinstance(pool, concurrent.futures.ThreadPoolExecutor)
        f = pool.submit(square, 3)
        assert_type(f, cfutures.Future[int])
        assert f.result(timeout=5) == 9
        assert pool.submit(greet, "you", punctuation=".").result() == \
            "hello you."
        squares = pool.map(square, [1, 2, 3], timeout=5, chunksize=1,
                           buffersize=2)
        assert_type(list(squares), list[int])
        assert list(pool.map(pow, [2, 3], [2, 2])) == [4, 9]
        bad = pool.submit(fail, "boom")
        assert isinstance(bad.exception(timeout=5), ValueError)
        if TYPE_CHECKING:
            pool.submit(square, "3")  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
            pool.submit(greet, "you", punct=".")  # type: ignore[call-arg]  # pyright: ignore[reportCallIssue]
    assert started == ["worker", "worker"] or started == ["worker"]

    pool = cfutures.ThreadPoolExecutor()
    pool.shutdown(wait=True, cancel_futures=False)
    try:
        pool.submit(square, 1)
    except RuntimeError:
        pass

    def broken_init() -> None:
        raise OSError("no")

    broken = cfutures.ThreadPoolExecutor(1, initializer=broken_init)
    try:
        broken.submit(square, 1).result(timeout=5)
    except cfutures.BrokenExecutor:
        pass
    broken.shutdown()


# ---- wait() and as_completed() --------------------------------------------

def test_wait_and_as_completed() -> None:
    with cfutures.ThreadPoolExecutor() as pool:
        fs = [pool.submit(square, i) for i in range(10)]
        # cfutures futures in, cfutures futures out.
        done, not_done = cfutures.wait(
            fs, timeout=5, return_when=cfutures.ALL_COMPLETED)
        assert_type(done, set[cfutures.Future[int]])
        assert done == set(fs) and not not_done
        result = cfutures.wait(fs, return_when=cfutures.FIRST_COMPLETED)
        assert_type(result.done, set[cfutures.Future[int]])
        assert cfutures.wait(
            fs, return_when=cfutures.FIRST_EXCEPTION).not_done == set()
        total = 0
        for f in cfutures.as_completed(fs, timeout=5):
            assert_type(f, cfutures.Future[int])
            total += f.result()
        assert total == sum(i * i for i in range(10))
        # cfutures futures have remove_done_callback (asyncio's), the
        # stdlib's do not.
        assert next(cfutures.as_completed(fs)).remove_done_callback(
            print) == 0

        # Any concurrent.futures.Future in, concurrent.futures.Future out.
        other: concurrent.futures.Future[int] = concurrent.futures.Future()
        other.set_result(1)
        mixed = cfutures.wait([fs[0], other], timeout=5)
        assert_type(mixed, DoneAndNotDoneFutures[int])
        assert mixed.done == {fs[0], other}
        for g in cfutures.as_completed([other, fs[1]]):
            assert_type(g, concurrent.futures.Future[int])
            if TYPE_CHECKING:
                g.remove_done_callback(print)  # type: ignore[attr-defined]  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]

    # The stdlib's functions take cfutures futures.
    f = cfutures.Future[int]()
    f.set_result(2)
    assert concurrent.futures.wait([f]).done == {f}
    assert list(concurrent.futures.as_completed([f])) == [f]


# ---- asyncio --------------------------------------------------------------

async def asyncio_main() -> None:
    loop = asyncio.get_running_loop()
    pool = cfutures.install(loop)
    assert_type(pool, cfutures.ThreadPoolExecutor)
    if TYPE_CHECKING:   # not run: another pool would replace this one
        assert_type(cfutures.install(), "cfutures.ThreadPoolExecutor | None")
        assert_type(cfutures.uninstall(), None)

    # A cfutures.Future is awaitable.
    value = await pool.submit(square, 4)
    assert_type(value, int)
    assert value == 16

    # to_thread(): a coroutine and an asyncio future.
    call = cfutures.to_thread(greet, "loop", punctuation="?")
    assert asyncio.isfuture(call) and asyncio.iscoroutine(call)
    assert_type(await call, str)
    assert call.result() == "hello loop?" and call.done()
    gathered = await asyncio.gather(cfutures.to_thread(square, 1),
                                    cfutures.to_thread(greet, "g"))
    assert_type(gathered, tuple[int, str])
    assert list(gathered) == [1, "hello g!"]   # (a list at runtime)

    # ensure_future() returns the call itself, not a Task.
    started = asyncio.ensure_future(cfutures.to_thread(square, 5))
    assert not isinstance(started, asyncio.Task)
    assert await started == 25
    assert started.get_loop() is loop
    if TYPE_CHECKING:
        started.get_name()  # type: ignore[attr-defined]  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType]
        started.set_result(1)  # type: ignore[deprecated]  # pyright: ignore[reportDeprecated]

    # asyncio.wait() refuses coroutines, to_thread() calls too (the stub
    # cannot say so: see cfutures/__init__.pyi): make them tasks.
    done, pending = await asyncio.wait(
        [asyncio.create_task(cfutures.to_thread(square, i))
         for i in range(3)], timeout=5)
    assert_type(done, set[asyncio.Task[int]])
    assert not pending and {d.result() for d in done} == {0, 1, 4}

    # It also takes cfutures futures as they are (README, asyncio), but
    # typeshed types it for asyncio futures only: wrap_future() is the
    # typed way (or await them, gather them, or use asyncio.as_completed).
    wrapped = [asyncio.wrap_future(pool.submit(square, i)) for i in range(3)]
    done_w, _ = await asyncio.wait(wrapped)
    assert_type(done_w, set[asyncio.Future[int]])
    if TYPE_CHECKING:
        await asyncio.wait([pool.submit(square, 1)])  # type: ignore[type-var]  # pyright: ignore[reportArgumentType]
    for next_done in asyncio.as_completed([pool.submit(square, 3)]):
        assert await next_done == 9

    # Tasks, timeouts, shields, executors.
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(cfutures.to_thread(square, 6))
    assert_type(task, asyncio.Task[int])
    assert task.result() == 36
    assert await asyncio.wait_for(cfutures.to_thread(square, 7), 5) == 49
    assert await asyncio.shield(pool.submit(square, 8)) == 64
    assert await loop.run_in_executor(pool, square, 9) == 81
    assert await loop.run_in_executor(None, square, 10) == 100
    assert await asyncio.to_thread(square, 11) == 121


def test_asyncio() -> None:
    asyncio.run(asyncio_main())


if __name__ == "__main__":
    test_future()
    test_executor()
    test_wait_and_as_completed()
    test_asyncio()
    print("ok")
