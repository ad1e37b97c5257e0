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
    """Represents the result of an asynchronous computation.

    A concurrent.futures.Future (a subclass of it) whose methods are written
    in C.  It is also awaitable: ``await future`` in a coroutine, on any
    running event loop, waits without blocking the loop and returns the
    result or raises the exception.  Like asyncio.Future it has
    remove_done_callback(), so asyncio.wait() takes it as it is.
    """

    __slots__ = ()


class ThreadPoolExecutor(_cfutures.ThreadPoolExecutor,
                         _std.ThreadPoolExecutor):
    """An Executor that runs calls on a pool of threads.

    Args:
        max_workers: The maximum number of threads that can be used to
            execute the given calls (default: min(32, os.cpu_count() + 4)).
        thread_name_prefix: An optional name prefix to give our threads.
        initializer: A callable used to initialize worker threads.
        initargs: A tuple of arguments to pass to the initializer.

    A concurrent.futures.ThreadPoolExecutor (a subclass of it) written in
    C; its futures are cfutures.Future.
    """
    # No signature line here: inspect.signature() and help() find the C
    # type's text signature further along the MRO.

    if hasattr(_std.ThreadPoolExecutor, "prepare_context"):
        # 3.14+: the stdlib's workers run tasks through a context that a
        # subclass may replace (InterpreterPoolExecutor does).  cfutures'
        # workers are C code that runs fn(*args, **kwargs) itself, so say
        # so when the class is made rather than ignore the override.
        def __init_subclass__(cls, **kwargs):
            super().__init_subclass__(**kwargs)
            if "prepare_context" in cls.__dict__:
                raise TypeError(
                    f"{cls.__qualname__}: cfutures.ThreadPoolExecutor runs "
                    "tasks in its own C workers and does not support "
                    "overriding prepare_context()")


_cfutures._set_public_types(Future, ThreadPoolExecutor)


# Every other public name of this interpreter's concurrent.futures (Executor,
# ProcessPoolExecutor, 3.14's InterpreterPoolExecutor, ...) is the stdlib's
# own object, so `import cfutures as futures` is a complete drop-in.  Looked
# up on first use, as the stdlib does for its executors: importing cfutures
# does not import multiprocessing.
_FROM_STDLIB = tuple(n for n in _std.__all__ if n not in globals())
__all__ += _FROM_STDLIB


def __getattr__(name):
    if name in _FROM_STDLIB:
        value = getattr(_std, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_FROM_STDLIB))


# ---- asyncio bridge (src/aio.c) -------------------------------------------
# Future.__await__ lives in C; these are the functions around it.

to_thread = _cfutures.to_thread
__all__ += ["install", "to_thread", "uninstall"]


def _aio_pool_type():
    # The C ThreadPoolExecutor when the package has it; until then the
    # stdlib's, which to_thread only needs for submit().
    return globals().get("ThreadPoolExecutor", _std.ThreadPoolExecutor)


def install(loop=None):
    """Make asyncio code use cfutures: process-wide, or for one loop.

    Called with no running loop and no *loop* (once, at program start,
    before importing libraries that bind the names), it is the one line
    that makes unmodified asyncio code fast, in the style of
    ``uvloop.install()``, and returns None:

    - ``concurrent.futures.ThreadPoolExecutor``, ``.wait`` and
      ``.as_completed`` become cfutures' (``concurrent.futures.Future``
      stays the stdlib's; cfutures' futures are instances of it);
    - ``asyncio.to_thread`` becomes cfutures' C call on the running loop's
      default executor (context copied, as asyncio's);
    - ``loop.run_in_executor`` of asyncio's loops and uvloop's (also
      uvloop imported later) bridges a cfutures pool's future in C, for
      the default executor too, which becomes a cfutures pool, made on
      first use as asyncio makes its own.

    ``uninstall()`` undoes all of it.

    Called inside a running loop, or with *loop*: makes a new cfutures
    pool that loop's default executor, gives that loop the same
    ``run_in_executor`` fast path, and returns the pool;
    ``loop.shutdown_default_executor()`` (called by ``asyncio.run`` at its
    end) shuts it down.
    """
    if loop is None:
        import asyncio
        loop = asyncio._get_running_loop()
        if loop is None:
            from . import _install
            _install.install_process()
            return None
    pool = _aio_pool_type()(thread_name_prefix="cfutures")
    loop.set_default_executor(pool)
    if getattr(loop, "_default_executor", None) is not pool:
        # uvloop keeps its default executor out of reach of Python code:
        # record it where cfutures.to_thread looks for it.
        loop._default_executor = pool
    from . import _install
    _install.install_loop(loop)
    return pool


def uninstall():
    """Undo install(): restore every name and method the process-wide
    install() replaced, and give loops that install(loop) gave the fast
    path their own run_in_executor back.  Executors made meanwhile (the
    default executor install(loop) set) stay as they are."""
    import sys
    _install = sys.modules.get(__name__ + "._install")
    if _install is not None:
        _install.uninstall()


_cfutures._aio_configure(_aio_pool_type())


def _after_fork_in_child():
    _cfutures._aio_forget_shared_pool()


import os as _os  # noqa: E402

if hasattr(_os, "register_at_fork"):
    _os.register_at_fork(after_in_child=_after_fork_in_child)
