"""concurrent.futures in C: change one import, keep the behaviour.

The C types in ``cfutures._cfutures`` carry all behaviour.  The public
classes here are thin subclasses that also derive from the stdlib classes,
so ``isinstance(f, concurrent.futures.Future)`` holds and code that checks
types (asyncio's ``wrap_future``, ``set_default_executor``) accepts them.
The C type comes first in the MRO, so no stdlib method ever runs on a
cfutures object.
"""
import concurrent.futures as _std
from concurrent.futures import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    BrokenExecutor,
    CancelledError,
    InvalidStateError,
    TimeoutError,
)

from . import _cfutures
from ._cfutures import as_completed, wait

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "BrokenExecutor",
    "CancelledError",
    "Future",
    "InvalidStateError",
    "TimeoutError",
    "as_completed",
    "wait",
]


class Future(_cfutures.Future, _std.Future):
    """Represents the result of an asynchronous computation."""

    __slots__ = ()


_cfutures._set_public_types(Future, None)
