"""cfutures.install() and uninstall(): unmodified asyncio code on cfutures.

The process-wide mode rebinds names that code looks up
(``concurrent.futures.ThreadPoolExecutor``, ``wait``, ``as_completed``,
``asyncio.to_thread``) and replaces ``run_in_executor`` on the event loop
classes (asyncio's ``BaseEventLoop`` and ``uvloop.Loop``), recording every
change so that uninstall() puts back exactly what was there.
``concurrent.futures.Future`` is left alone: every stdlib future (a
ProcessPoolExecutor's, say) must stay an instance of it, and cfutures'
Future already is one.

run_in_executor on a cfutures pool returns a C loop-side future
(``_cfutures._loop_future``) instead of ``asyncio.wrap_future``'s
asyncio.Future and its ``_chain_future`` callbacks; asyncio.to_thread
becomes a C call that is its own future (no Task, no coroutine frame) on
the loop's default executor.  Every case the fast path does not cover (a
stdlib executor, debug mode, a closed loop, the default executor not made
yet or shut down) runs the original method, so its behaviour and errors
are the original's.
"""
import asyncio
import asyncio.base_events
import asyncio.threads
import concurrent.futures as _cf
import importlib.machinery
import inspect
import sys
import threading
import types
import weakref

from . import _cfutures

_BaseEventLoop = asyncio.base_events.BaseEventLoop
_ORIG_RUN_IN_EXECUTOR = vars(_BaseEventLoop)["run_in_executor"]
_ORIG_SET_DEFAULT_EXECUTOR = vars(_BaseEventLoop)["set_default_executor"]
_StdPool = _cf.thread.ThreadPoolExecutor
_wrap_future = asyncio.futures.wrap_future
_loop_future = _cfutures._loop_future
_iscoroutine = asyncio.iscoroutine
_iscoroutinefunction = inspect.iscoroutinefunction



def _wrap_future_done_at_once():
    # Whether asyncio.wrap_future, on this interpreter, completes its future
    # at once when the wrapped call finished before it was wrapped and we
    # are on the loop's thread (CPython 3.13's _chain_future checks the
    # running loop; 3.11's always goes through call_soon_threadsafe, so its
    # future is done on a later turn at the earliest).  Read from the code
    # itself, not the version, so that backports are followed too.
    for const in asyncio.futures._chain_future.__code__.co_consts:
        if getattr(const, "co_name", None) == "_call_set_state":
            return "_get_running_loop" in const.co_names
    return False


_DONE_AT_ONCE = _wrap_future_done_at_once()
_MISSING = object()
_lock = threading.Lock()
_patches: list = []          # (namespace, name, previous value or _MISSING)
_uvloop_finder = None


def _pool_type():
    from . import ThreadPoolExecutor
    return ThreadPoolExecutor


# ---- run_in_executor ------------------------------------------------------

def _asyncio_run_in_executor(self, executor, func, *args):
    # asyncio's BaseEventLoop.run_in_executor, with a cfutures pool's future
    # bridged in C.  The default executor is made (lazily, as a cfutures pool
    # since concurrent.futures.ThreadPoolExecutor is rebound) and shutdown
    # checked by the original.
    if executor is None:
        executor = self._default_executor
        if executor is None or self._executor_shutdown_called:
            return _ORIG_RUN_IN_EXECUTOR(self, None, func, *args)
    if (self._closed or self._debug
            or not isinstance(executor, _Pool)):
        return _ORIG_RUN_IN_EXECUTOR(self, executor, func, *args)
    fut = executor.submit(func, *args)
    return (_loop_future(self, fut, _DONE_AT_ONCE)
            or _wrap_future(fut, loop=self))


def _asyncio_set_default_executor(self, executor):
    # asyncio checks isinstance(executor, concurrent.futures.ThreadPoolExecutor),
    # which now names cfutures' class: a stdlib pool (one made before
    # install(), from concurrent.futures.thread, or of a subclass defined
    # before) is still accepted, as without install().
    if isinstance(executor, _StdPool):
        self._default_executor = executor
        return
    return _ORIG_SET_DEFAULT_EXECUTOR(self, executor)


def _uvloop_base():
    return sys.modules["uvloop"].loop.Loop


def _uvloop_run_in_executor(self, executor, func, *args):
    # uvloop's Loop.run_in_executor, likewise.  uvloop keeps its default
    # executor out of reach of Python code and binds the stdlib's
    # ThreadPoolExecutor at import, so the default one is made here (a
    # cfutures pool, registered through set_default_executor so that
    # uvloop's shutdown_default_executor and close() shut it down) and
    # mirrored in the instance as _default_executor.
    base = _uvloop_base()
    if ((not _plainly_not_coroutine(func)
            and (_iscoroutine(func) or _iscoroutinefunction(func)))
            or self.is_closed()):
        return base.run_in_executor(self, executor, func, *args)
    if executor is None:
        self._check_default_executor()
        executor = self.__dict__.get("_default_executor")
        if executor is None:
            executor = _default_executor(self)
    if not isinstance(executor, _Pool):
        return base.run_in_executor(self, executor, func, *args)
    fut = executor.submit(func, *args)
    return (_loop_future(self, fut, _DONE_AT_ONCE)
            or _wrap_future(fut, loop=self))


def _plainly_not_coroutine(func):
    # What uvloop's check (asyncio.iscoroutine, inspect.iscoroutinefunction:
    # about 1.3 us for a plain function, on 3.11) would answer False for,
    # decided in a fraction of that; anything else gets the full check.
    tp = type(func)
    if tp is _BuiltinFunctionType:
        return True
    return (tp is _FunctionType
            and not func.__code__.co_flags & inspect.CO_COROUTINE
            and "_is_coroutine_marker" not in func.__dict__)


_FunctionType = types.FunctionType
_BuiltinFunctionType = types.BuiltinFunctionType


def _uvloop_set_default_executor(self, executor):
    _uvloop_base().set_default_executor(self, executor)
    # Where cfutures (and its to_thread) can see it.
    self._default_executor = executor


def _default_executor(loop):
    """The loop's default executor, made as its run_in_executor(None, ...)
    would make it, or asyncio's RuntimeError after shutdown_default_executor.
    (The C asyncio.to_thread asks here when it cannot read it directly.)"""
    if isinstance(loop, _BaseEventLoop):
        executor = loop._default_executor
        loop._check_default_executor()
        if executor is None:
            executor = _cf.ThreadPoolExecutor(thread_name_prefix="asyncio")
            loop._default_executor = executor
        return executor
    check = getattr(loop, "_check_default_executor", None)
    if check is not None:
        check()
    executor = getattr(loop, "_default_executor", None)
    if executor is None:
        prefix = "uvloop" if "uvloop" in type(loop).__module__ else "asyncio"
        executor = _Pool(thread_name_prefix=prefix)
        loop.set_default_executor(executor)
        if getattr(loop, "_default_executor", None) is not executor:
            loop._default_executor = executor
    return executor


# ---- the patch record -----------------------------------------------------

def _patch(namespace, name, value):
    if isinstance(namespace, type):
        previous = vars(namespace).get(name, _MISSING)
    else:
        previous = namespace.__dict__.get(name, _MISSING)
    _patches.append((namespace, name, previous))
    setattr(namespace, name, value)


def _patch_uvloop(module):
    if not any(ns is module.Loop for ns, _, _ in _patches):
        _patch(module.Loop, "run_in_executor", _uvloop_run_in_executor)
        _patch(module.Loop, "set_default_executor",
               _uvloop_set_default_executor)


class _UvloopFinder:
    """Patches uvloop.Loop when uvloop is imported after install()."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "uvloop":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            with _lock:
                if _patches:
                    _patch_uvloop(module)

        loader.exec_module = exec_and_patch
        return spec


def install_process():
    global _Pool, _uvloop_finder
    with _lock:
        if _patches:
            return
        _Pool = _pool_type()
        from . import as_completed, wait
        _patch(_cf, "ThreadPoolExecutor", _Pool)
        _patch(_cf, "wait", wait)
        _patch(_cf, "as_completed", as_completed)
        to_thread = _cfutures._asyncio_to_thread
        _patch(asyncio, "to_thread", to_thread)
        _patch(asyncio.threads, "to_thread", to_thread)
        _patch(_BaseEventLoop, "run_in_executor", _asyncio_run_in_executor)
        _patch(_BaseEventLoop, "set_default_executor",
               _asyncio_set_default_executor)
        _cfutures._aio_set_default_executor_hook(_default_executor)
        if "uvloop" in sys.modules:
            _patch_uvloop(sys.modules["uvloop"])
        else:
            _uvloop_finder = _UvloopFinder()
            sys.meta_path.insert(0, _uvloop_finder)


def uninstall():
    """Undo install(): put back every name and method it replaced, and
    take back the run_in_executor that install(loop) gave a loop.

    Pools made meanwhile (loops' default executors) stay what they are.
    Does nothing if install() was not called."""
    global _uvloop_finder
    with _lock:
        for loop in list(_fast_loops):
            bound = vars(loop).get("run_in_executor")
            if getattr(bound, "__func__", None) in _FAST_RUN_IN_EXECUTOR:
                del loop.run_in_executor
        _fast_loops.clear()
        if _uvloop_finder is not None:
            try:
                sys.meta_path.remove(_uvloop_finder)
            except ValueError:
                pass
            _uvloop_finder = None
        _cfutures._aio_set_default_executor_hook(None)
        while _patches:
            namespace, name, previous = _patches.pop()
            if previous is _MISSING:
                delattr(namespace, name)
            else:
                setattr(namespace, name, previous)


def installed():
    return bool(_patches)


def install_loop(loop):
    """The running-loop mode's fast path: run_in_executor on this loop."""
    global _Pool
    _Pool = _pool_type()
    if isinstance(loop, _BaseEventLoop):
        method = _asyncio_run_in_executor
    elif "uvloop" in sys.modules and isinstance(loop, _uvloop_base()):
        method = _uvloop_run_in_executor
    else:
        return
    with _lock:
        loop.run_in_executor = types.MethodType(method, loop)
        _fast_loops.add(loop)


_Pool = None
# Loops that install(loop) gave the fast path, for uninstall().
_fast_loops = weakref.WeakSet()
_FAST_RUN_IN_EXECUTOR = (_asyncio_run_in_executor, _uvloop_run_in_executor)
