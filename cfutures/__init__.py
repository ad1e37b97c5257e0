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

# The one place the version is written: pyproject.toml reads it from here
# (tool.setuptools.dynamic), so the metadata and the module agree.
__version__ = "0.1.0"

try:
    from . import _cfutures
except ImportError as _exc:
    import importlib.util as _util
    import sys as _sys
    if _util.find_spec(__name__ + "._cfutures") is not None:
        raise           # built, but it failed to load: show why
    # Without this, Python blames "a partially initialized module (most
    # likely due to a circular import)", which sends the reader astray.
    raise ImportError(
        "cfutures' C extension (cfutures._cfutures) is not built for this "
        f"Python ({_sys.implementation.cache_tag}) in {__path__[0]}. "
        "In a source checkout, build it with `pip install .` (which also "
        "copies the build into the checkout's cfutures/) or, for a build in "
        "place, `pip install setuptools && python setup.py build_ext "
        "--inplace`.", name=__name__ + "._cfutures") from None
from ._cfutures import as_completed, wait

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
]


class Future(_cfutures.Future, _std.Future):
    """Represents the result of an asynchronous computation."""

    __slots__ = ()


class ThreadPoolExecutor(_cfutures.ThreadPoolExecutor,
                         _std.ThreadPoolExecutor):
    """An Executor that runs calls on a pool of threads.

    ThreadPoolExecutor(max_workers=None, thread_name_prefix='',
    initializer=None, initargs=())
    """


_cfutures._set_public_types(Future, ThreadPoolExecutor)


# ---- asyncio bridge (src/aio.c) -------------------------------------------
# Future.__await__ lives in C; these are the functions around it.

to_thread = _cfutures.to_thread
__all__ += ["install", "to_thread"]


def _aio_pool_type():
    # The C ThreadPoolExecutor when the package has it; until then the
    # stdlib's, which to_thread only needs for submit().
    return globals().get("ThreadPoolExecutor", _std.ThreadPoolExecutor)


def install(loop=None):
    """Make a new cfutures thread pool the default executor of *loop*.

    *loop* defaults to the running loop.  Afterwards
    ``loop.run_in_executor(None, ...)``, ``asyncio.to_thread`` and
    ``cfutures.to_thread`` run on it, and ``loop.shutdown_default_executor()``
    (called by ``asyncio.run`` at its end) shuts it down.  Returns the pool.
    """
    if loop is None:
        import asyncio
        loop = asyncio.get_running_loop()
    pool = _aio_pool_type()(thread_name_prefix="cfutures")
    loop.set_default_executor(pool)
    if not hasattr(loop, "_default_executor"):
        # uvloop keeps its default executor out of reach of Python code:
        # record it where cfutures.to_thread looks for it.
        loop._default_executor = pool
    return pool


_cfutures._aio_configure(_aio_pool_type())


def _after_fork_in_child():
    _cfutures._aio_forget_shared_pool()


import os as _os  # noqa: E402

if hasattr(_os, "register_at_fork"):
    _os.register_at_fork(after_in_child=_after_fork_in_child)
