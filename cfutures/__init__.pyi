# Type information for cfutures (PEP 561; py.typed marks the package).
#
# What the checker is told, and why:
# - cfutures.Future[T] is a concurrent.futures.Future[T] (it is a subclass at
#   runtime) that is also awaitable: `await f` gives T.
# - wait() and as_completed() hand back the futures they were given: cfutures
#   futures in, cfutures futures out; any other concurrent.futures.Future in,
#   concurrent.futures.Future out.
# - to_thread() returns a _ToThreadCall[T]: a coroutine that is also an
#   asyncio future.  At runtime it is neither an asyncio.Future nor a Task,
#   but asyncio takes it as a future (asyncio.isfuture() is true: it speaks
#   asyncio's future protocol), and typeshed has no type for such
#   "future-like" objects other than asyncio.Future.  So it is declared a
#   subclass of asyncio.Future (and of Coroutine): asyncio.ensure_future(call)
#   is then typed as the call itself, which it is at runtime, not as a Task
#   (typeshed's only other choice), and create_task() and gather() take it.
#   The asyncio.Future methods it lacks (set_result, set_exception) are
#   marked deprecated so that the checkers flag them.  One false accept
#   remains: asyncio.wait([call]) type-checks, but asyncio.wait() refuses
#   anything that is a coroutine (TypeError); pass it a task.
# - cfutures.Future is NOT declared an asyncio.Future: it is not one (no
#   get_loop(), and result()/cancel() take the concurrent.futures
#   arguments), and asyncio.ensure_future() wraps it in a Task.  typeshed types
#   asyncio.wait() for asyncio futures and tasks only, so
#   `asyncio.wait([pool.submit(f)])` runs but does not type-check; the README
#   shows the typed alternatives.
import asyncio
import concurrent.futures as _std
from collections.abc import Callable, Coroutine, Generator, Iterable, Iterator
import sys
from concurrent.futures import (
    ALL_COMPLETED as ALL_COMPLETED,
    FIRST_COMPLETED as FIRST_COMPLETED,
    FIRST_EXCEPTION as FIRST_EXCEPTION,
    BrokenExecutor as BrokenExecutor,
    CancelledError as CancelledError,
    Executor as Executor,
    InvalidStateError as InvalidStateError,
    ProcessPoolExecutor as ProcessPoolExecutor,
    TimeoutError as TimeoutError,
)

if sys.version_info >= (3, 14):
    from concurrent.futures import (
        InterpreterPoolExecutor as InterpreterPoolExecutor,
    )
from concurrent.futures._base import DoneAndNotDoneFutures
from types import TracebackType
from typing import Any, Generic, NamedTuple, TypeVar, overload

from typing_extensions import ParamSpec, TypeVarTuple, Unpack, deprecated

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "BrokenExecutor",
    "CancelledError",
    "Future",
    "InvalidStateError",
    "ThreadPoolExecutor",
    "TimeoutError",
    "as_completed",
    "wait",
    # The rest of the running version's concurrent.futures.__all__: the
    # stdlib's own objects.
    "Executor",
    "ProcessPoolExecutor",
    "install",
    "to_thread",
    "uninstall",
]
if sys.version_info >= (3, 14):
    __all__ += ["InterpreterPoolExecutor"]

__version__: str

_T = TypeVar("_T")
_P = ParamSpec("_P")
_Ts = TypeVarTuple("_Ts")

class Future(_std.Future[_T]):
    def __init__(self) -> None: ...
    def __await__(self) -> Generator[Any, None, _T]: ...
    # The callback gets this future, a cfutures.Future.  (The C method takes
    # fn positionally only; see tests/typing/stubtest-allowlist.txt.)
    def add_done_callback(self, fn: Callable[[Future[_T]], object]) -> None: ...
    # asyncio.Future's remove_done_callback, which asyncio.wait() uses.
    def remove_done_callback(self, fn: Callable[[Future[_T]], object], /) -> int: ...

class ThreadPoolExecutor(_std.ThreadPoolExecutor):
    @overload
    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        initializer: Callable[[], object] | None = None,
        initargs: tuple[()] = (),
    ) -> None: ...
    @overload
    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        *,
        initializer: Callable[[Unpack[_Ts]], object],
        initargs: tuple[Unpack[_Ts]],
    ) -> None: ...
    @overload
    def __init__(
        self,
        max_workers: int | None,
        thread_name_prefix: str,
        initializer: Callable[[Unpack[_Ts]], object],
        initargs: tuple[Unpack[_Ts]],
    ) -> None: ...
    def submit(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> Future[_T]: ...
    # buffersize= on every version (the stdlib has it from 3.14).
    def map(
        self,
        fn: Callable[..., _T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[_T]: ...
    # shutdown(), __enter__() and __exit__() are the stdlib's (typeshed's).

# At runtime wait() returns the stdlib's DoneAndNotDoneFutures, whose fields
# typeshed types as sets of concurrent.futures.Future; this is the same
# named 2-tuple with the futures' real type.
class _DoneAndNotDoneFutures(NamedTuple, Generic[_T]):
    done: set[Future[_T]]
    not_done: set[Future[_T]]

@overload
def wait(  # type: ignore[overload-overlap]
    fs: Iterable[Future[_T]],
    timeout: float | None = None,
    return_when: str = "ALL_COMPLETED",
) -> _DoneAndNotDoneFutures[_T]: ...
@overload
def wait(
    fs: Iterable[_std.Future[_T]],
    timeout: float | None = None,
    return_when: str = "ALL_COMPLETED",
) -> DoneAndNotDoneFutures[_T]: ...
@overload
def as_completed(
    fs: Iterable[Future[_T]], timeout: float | None = None
) -> Iterator[Future[_T]]: ...
@overload
def as_completed(
    fs: Iterable[_std.Future[_T]], timeout: float | None = None
) -> Iterator[_std.Future[_T]]: ...

class _ToThreadCall(asyncio.Future[_T], Coroutine[Any, Any, _T]):
    def __await__(self) -> Generator[Any, None, _T]: ...
    def send(self, value: Any, /) -> Any: ...
    @overload
    def throw(
        self,
        typ: type[BaseException],
        val: BaseException | object = ...,
        tb: TracebackType | None = ...,
        /,
    ) -> Any: ...
    @overload
    def throw(
        self, typ: BaseException, val: None = None, tb: TracebackType | None = ..., /
    ) -> Any: ...
    def close(self) -> None: ...
    @deprecated("a to_thread() call has no set_result(): its thread completes it")
    def set_result(self, result: _T, /) -> None: ...
    @deprecated("a to_thread() call has no set_exception(): its thread completes it")
    def set_exception(self, exception: type | BaseException, /) -> None: ...

def to_thread(
    func: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
) -> _ToThreadCall[_T]: ...
@overload
def install(loop: asyncio.AbstractEventLoop) -> ThreadPoolExecutor: ...
@overload
def install(loop: None = None) -> ThreadPoolExecutor | None: ...
def uninstall() -> None: ...
