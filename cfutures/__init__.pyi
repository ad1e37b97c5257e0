import concurrent.futures as _std
from collections.abc import Callable, Coroutine, Generator, Iterable, Iterator
from concurrent.futures import (
    ALL_COMPLETED as ALL_COMPLETED,
    FIRST_COMPLETED as FIRST_COMPLETED,
    FIRST_EXCEPTION as FIRST_EXCEPTION,
    BrokenExecutor as BrokenExecutor,
    CancelledError as CancelledError,
    InvalidStateError as InvalidStateError,
    TimeoutError as TimeoutError,
)
from concurrent.futures._base import DoneAndNotDoneFutures
from typing import Any, ParamSpec, TypeVar

_T = TypeVar("_T")
_P = ParamSpec("_P")

class Future(_std.Future[_T]):
    def __await__(self) -> Generator[Any, None, _T]: ...
    def remove_done_callback(
        self, fn: Callable[[Future[_T]], object], /
    ) -> int: ...

class ThreadPoolExecutor(_std.ThreadPoolExecutor):
    def __init__(
        self,
        max_workers: int | None = ...,
        thread_name_prefix: str = ...,
        initializer: Callable[..., object] | None = ...,
        initargs: tuple[Any, ...] = ...,
    ) -> None: ...
    def submit(
        self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
    ) -> Future[_T]: ...
    def map(
        self,
        fn: Callable[..., _T],
        *iterables: Iterable[Any],
        timeout: float | None = ...,
        chunksize: int = ...,
        buffersize: int | None = ...,
    ) -> Iterator[_T]: ...

def wait(
    fs: Iterable[_std.Future[_T]],
    timeout: float | None = ...,
    return_when: str = ...,
) -> DoneAndNotDoneFutures[_T]: ...
def as_completed(
    fs: Iterable[_std.Future[_T]], timeout: float | None = ...
) -> Iterator[_std.Future[_T]]: ...
def to_thread(
    func: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs
) -> Coroutine[Any, Any, _T]: ...
def install(loop: Any = ...) -> ThreadPoolExecutor: ...
