"""Unmodified asyncio code and libraries, with the one line and without.

The one line is ``cfutures.install()`` called with no running loop: it
rebinds concurrent.futures' ThreadPoolExecutor, wait and as_completed and
asyncio.to_thread, and gives every new loop's run_in_executor cfutures'
fast path (issue 14).  Each sample here calls ``cfutures.install()``
(peer "cfutures") or ``cfutures.uninstall()`` (peer "asyncio": plain
asyncio, the code as it runs today), then runs code that knows nothing of
cfutures in a fresh ``asyncio.run``, and ends with ``uninstall()``, so the
workloads after it run unpatched.  The time is measured inside the loop,
after a first call has started the default executor's thread.

Libraries bind some names when they are imported.  asgiref makes its
executors with the ``ThreadPoolExecutor`` it imported, so a program that
calls install() before importing Django gets cfutures pools there; the
asgiref workload reproduces that for each sample (it points asgiref.sync's
name at whatever concurrent.futures.ThreadPoolExecutor is then) rather
than re-import asgiref.  It calls ``sync_to_async(f)`` with asgiref's
default, ``thread_sensitive=True``, which is what Django uses, inside a
``ThreadSensitiveContext`` as Django's ASGIHandler wraps each request: the
calls run one at a time on that context's one-thread executor.

These rows are skipped when this cfutures has no uninstall() (the
process-wide install() is newer than the runner), and the library rows
when aiofiles or asgiref is not installed (`pip install ".[bench]"`).
"""
import asyncio
import os
import tempfile
import time

from . import Workload

_clock = time.perf_counter

PLAIN = "asyncio"       # the peer that runs the code without the line
PEERS = (PLAIN, "cfutures")

FILES = 100             # distinct small files the aiofiles workload reads
FILE_SIZE = 512


def _noop():
    pass


def _no_install():
    import cfutures
    if hasattr(cfutures, "uninstall"):
        return None
    return "cfutures.install() without a loop (not in this cfutures)"


def _run_unmodified(impl, body):
    """asyncio.run(body()) with the one line (peer "cfutures") or without
    it; body returns its own elapsed seconds."""
    import cfutures
    if impl.name == "cfutures":
        cfutures.install()
    elif impl.name == PLAIN:
        cfutures.uninstall()
    else:
        raise ValueError(f"no such peer here: {impl.name}")
    try:
        return asyncio.run(body())
    finally:
        cfutures.uninstall()


# ---- asyncio's own calls -------------------------------------------------

def _gathered_to_thread(impl, n):
    async def body():
        await asyncio.to_thread(_noop)
        t0 = _clock()
        await asyncio.gather(*[asyncio.to_thread(_noop) for _ in range(n)])
        return _clock() - t0
    return _run_unmodified(impl, body)


def _serial_to_thread(impl, n):
    async def body():
        await asyncio.to_thread(_noop)
        t0 = _clock()
        for _ in range(n):
            await asyncio.to_thread(_noop)
        return _clock() - t0
    return _run_unmodified(impl, body)


def _serial_run_in_executor(impl, n):
    async def body():
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, _noop)
        t0 = _clock()
        for _ in range(n):
            await loop.run_in_executor(None, _noop)
        return _clock() - t0
    return _run_unmodified(impl, body)


def _gathered_run_in_executor_pool(impl, n):
    # The code passes its own pool: a stdlib one without the line, a
    # cfutures one with it (what a program that swapped the import and
    # added the line runs).
    import concurrent.futures

    async def body():
        loop = asyncio.get_running_loop()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            await loop.run_in_executor(pool, _noop)
            t0 = _clock()
            await asyncio.gather(*[loop.run_in_executor(pool, _noop)
                                   for _ in range(n)])
            return _clock() - t0
    return _run_unmodified(impl, body)


# ---- aiofiles --------------------------------------------------------------

def _aiofiles_read(impl, n):
    # n reads of small files, one at a time, each an open, a read and a
    # close: three run_in_executor(None, ...) calls in aiofiles.
    import aiofiles
    with tempfile.TemporaryDirectory(prefix="cfutures-bench-") as d:
        paths = []
        for i in range(FILES):
            path = os.path.join(d, f"f{i}")
            with open(path, "wb") as f:
                f.write(bytes([i % 256]) * FILE_SIZE)
            paths.append(path)

        async def body():
            async with aiofiles.open(paths[0], "rb") as f:
                await f.read()
            t0 = _clock()
            for i in range(n):
                async with aiofiles.open(paths[i % FILES], "rb") as f:
                    data = await f.read()
                if len(data) != FILE_SIZE:
                    raise AssertionError("short read")
            return _clock() - t0
        return _run_unmodified(impl, body)


# ---- asgiref ---------------------------------------------------------------

def _asgiref_sync_to_async(impl, n):
    import concurrent.futures

    import asgiref.sync as sync

    call = sync.sync_to_async(_noop)        # thread_sensitive=True

    async def body():
        # As asgiref would have made it had it been imported now: with
        # the one line, a cfutures pool.
        sync.ThreadPoolExecutor = concurrent.futures.ThreadPoolExecutor
        async with sync.ThreadSensitiveContext():
            await call()
            t0 = _clock()
            for _ in range(n):
                await call()
            return _clock() - t0

    saved = sync.ThreadPoolExecutor
    try:
        return _run_unmodified(impl, body)
    finally:
        sync.ThreadPoolExecutor = saved


def _one_line(name, run, n, quick_n, speedup, library=None):
    # A row of this group: unmodified code with the one line against
    # without it, its goal a speed-up of at least `speedup`; `library`
    # names the third-party package the row needs.
    return Workload(
        name="one line: " + name, run=run, n=n, quick_n=quick_n,
        goal=f">= {speedup}x", goal_ratio=1 / speedup, peers=PEERS,
        needs=(library,) if library else (), unavailable=_no_install,
        tags=("aio", "install") + (("libraries",) if library else ()),
    )


WORKLOADS = [
    _one_line("gathered asyncio.to_thread(noop), unmodified code",
              _gathered_to_thread, 5000, 5000, 10),
    _one_line("await asyncio.to_thread(noop), one at a time",
              _serial_to_thread, 2000, 500, 4),
    _one_line("await loop.run_in_executor(None, noop), one at a time",
              _serial_run_in_executor, 2000, 500, 4),
    _one_line("gathered loop.run_in_executor(pool, noop), a cfutures pool "
              "against a stdlib pool",
              _gathered_run_in_executor_pool, 5000, 5000, 10),
    _one_line("aiofiles reads 512-byte files, one at a time",
              _aiofiles_read, 1000, 200, 2, library="aiofiles"),
    _one_line("asgiref sync_to_async(noop) (thread_sensitive, as Django), "
              "one at a time",
              _asgiref_sync_to_async, 1000, 200, 2, library="asgiref"),
]
