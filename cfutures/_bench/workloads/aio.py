"""Workloads of the asyncio bridge: to_thread, run_in_executor, await.

Each run(impl, n) runs one fresh event loop (asyncio's default loop unless
the name says uvloop) and returns the seconds its n operations took,
measured inside the loop.  The peers of the to_thread workloads are
"asyncio" (asyncio.to_thread, on the loop's default stdlib pool),
"cfutures" (cfutures.to_thread) and "anyio" (anyio.to_thread.run_sync);
the others compare a stdlib future or pool (through asyncio.wrap_future,
as asyncio code must use one) with a cfutures one (awaited directly).
"""
import asyncio
import threading
import time

from . import Workload

_clock = time.perf_counter


def _noop():
    pass


def _loop_factory(uv):
    if uv:
        import uvloop
        return uvloop.new_event_loop
    return asyncio.new_event_loop


def _run(main, uv=False):
    """Run the coroutine function main on a new loop.  The coroutine is
    made once the loop exists: one left unawaited warns."""
    with asyncio.Runner(loop_factory=_loop_factory(uv)) as runner:
        return runner.run(main())


def _to_thread_fn(impl):
    if impl.name == "asyncio":
        return asyncio.to_thread
    if impl.name == "cfutures":
        return impl.mod.to_thread
    if impl.name == "anyio":
        import anyio.to_thread
        return anyio.to_thread.run_sync
    raise ValueError(f"no to_thread for {impl.name}")


def _measure(impl, body, uv=False):
    """Run body() (a coroutine function returning its elapsed seconds)
    on the loop the peer runs on."""
    if impl.name == "anyio":
        import anyio
        out = []

        async def main():
            out.append(await body())
        anyio.run(main, backend="asyncio",
                  backend_options={"use_uvloop": uv})
        return out[0]
    return _run(body, uv)


def _gathered_to_thread(impl, n, uv=False):
    to_thread = _to_thread_fn(impl)

    async def body():
        t0 = _clock()
        await asyncio.gather(*[to_thread(_noop) for _ in range(n)])
        return _clock() - t0
    return _measure(impl, body, uv)


def _gathered_to_thread_uvloop(impl, n):
    return _gathered_to_thread(impl, n, uv=True)


def _serial_to_thread(impl, n):
    to_thread = _to_thread_fn(impl)

    async def body():
        await to_thread(_noop)          # the pool's first thread
        t0 = _clock()
        for _ in range(n):
            await to_thread(_noop)
        return _clock() - t0
    return _measure(impl, body)


def _run_in_executor(impl, n, gathered):
    Pool = impl.mod.ThreadPoolExecutor

    async def body():
        loop = asyncio.get_running_loop()
        with Pool() as pool:
            await loop.run_in_executor(pool, _noop)
            t0 = _clock()
            if gathered:
                await asyncio.gather(*[loop.run_in_executor(pool, _noop)
                                       for _ in range(n)])
            else:
                for _ in range(n):
                    await loop.run_in_executor(pool, _noop)
            return _clock() - t0
    return _run(body)


def _gathered_run_in_executor(impl, n):
    return _run_in_executor(impl, n, gathered=True)


def _serial_run_in_executor(impl, n):
    return _run_in_executor(impl, n, gathered=False)


def _awaitable(impl, fut):
    if impl.name == "cfutures":
        return fut
    return asyncio.wrap_future(fut)


def _await_burst_from_thread(impl, n):
    # n coroutines each await a future that another thread completes, all
    # in one burst: what a loop waiting on a pool's results sees.
    Future = impl.mod.Future

    async def body():
        futs = [Future() for _ in range(n)]

        async def waiter(f):
            return await _awaitable(impl, f)

        t0 = _clock()
        tasks = [asyncio.ensure_future(waiter(f)) for f in futs]
        await asyncio.sleep(0)

        def complete():
            for f in futs:
                f.set_result(None)
        t = threading.Thread(target=complete)
        t.start()
        await asyncio.gather(*tasks)
        elapsed = _clock() - t0
        t.join()
        return elapsed
    return _run(body)


def _await_finished(impl, n):
    Future = impl.mod.Future

    async def body():
        futs = []
        for i in range(n):
            f = Future()
            f.set_result(i)
            futs.append(f)
        t0 = _clock()
        for f in futs:
            await _awaitable(impl, f)
        return _clock() - t0
    return _run(body)


_TO_THREAD_PEERS = ("asyncio", "cfutures", "anyio")

WORKLOADS = [
    Workload("aio: gathered to_thread(noop)", _gathered_to_thread, n=5000,
             goal=">= 20x", goal_ratio=1 / 20, peers=_TO_THREAD_PEERS,
             quick_n=5000, tags=("aio",)),
    Workload("aio: await to_thread(noop), one at a time", _serial_to_thread,
             n=2000, goal="<= 1/3", goal_ratio=1 / 3,
             peers=_TO_THREAD_PEERS, quick_n=500, tags=("aio",)),
    Workload("aio: gathered to_thread(noop) on uvloop",
             _gathered_to_thread_uvloop, n=5000, peers=_TO_THREAD_PEERS,
             quick_n=1000, tags=("aio", "uvloop"), needs=("uvloop",)),
    Workload("aio: gathered run_in_executor(pool, noop)",
             _gathered_run_in_executor, n=5000, goal=">= 3x",
             goal_ratio=1 / 3, quick_n=1000, tags=("aio",)),
    Workload("aio: await run_in_executor(pool, noop), one at a time",
             _serial_run_in_executor, n=2000, quick_n=500, tags=("aio",)),
    Workload("aio: await futures completed by a thread in one burst",
             _await_burst_from_thread, n=5000, quick_n=1000, tags=("aio",)),
    Workload("aio: await a finished future", _await_finished, n=50000,
             quick_n=10000, tags=("aio",)),
]
