"""python -m cfutures: what cfutures does, then how fast it does it.

A short tour of the API (each step prints what it does and what it got),
then a quick side-by-side run of the benchmark workloads against
concurrent.futures (cfutures/_bench/, installed with the package).  The
full, slower and saved run is `python -m benchmarks.run` in the source
checkout.
"""
import asyncio
import concurrent.futures
import sys
import threading
import time

import cfutures


def step(title):
    print(f"\n-- {title}")


def say(text):
    print(f"   {text}")


def demo_future():
    step("A future completed from another thread")
    f = cfutures.Future()
    threading.Timer(0.05, f.set_result, ("hello from a thread",)).start()
    say(f"{f!r}")
    t0 = time.perf_counter()
    value = f.result(timeout=5)
    say(f"result() waited {1e3 * (time.perf_counter() - t0):.0f} ms "
        f"and got {value!r}")
    say(f"{f!r}")
    say("isinstance(f, concurrent.futures.Future) = "
        f"{isinstance(f, concurrent.futures.Future)}")

    step("Callbacks")
    f = cfutures.Future()
    f.add_done_callback(lambda fut: say(f"callback: result {fut.result()}"))
    say("set_result(42) runs the callbacks in the completing thread:")
    f.set_result(42)
    say("a callback added to a done future runs at once:")
    f.add_done_callback(lambda fut: say(f"late callback: {fut.result()}"))

    step("An exception")
    f = cfutures.Future()
    f.set_exception(ValueError("bad input"))
    say(f"exception() = {f.exception()!r}")
    try:
        f.result()
    except ValueError as exc:
        say(f"result() raised ValueError({exc})")

    step("A timeout")
    f = cfutures.Future()
    try:
        f.result(timeout=0.1)
    except cfutures.TimeoutError:
        say("result(timeout=0.1) raised TimeoutError; the future is "
            f"still pending: done() = {f.done()}")

    step("A cancellation")
    f = cfutures.Future()
    f.add_done_callback(lambda fut: say(f"callback: cancelled() = "
                                        f"{fut.cancelled()}"))
    say(f"cancel() = {f.cancel()}")
    try:
        f.result()
    except cfutures.CancelledError:
        say("result() raised CancelledError (the stdlib's own class: "
            f"{cfutures.CancelledError is concurrent.futures.CancelledError})")
    f = cfutures.Future()
    f.set_running_or_notify_cancel()
    say(f"a running future cannot be cancelled: cancel() = {f.cancel()}")


def _square(x):
    return x * x


def demo_executor():
    if not hasattr(cfutures, "ThreadPoolExecutor"):
        return
    step("ThreadPoolExecutor")
    with cfutures.ThreadPoolExecutor(max_workers=4) as pool:
        f = pool.submit(_square, 7)
        say(f"submit(square, 7).result() = {f.result()}")
        say(f"map(square, range(8)) = {list(pool.map(_square, range(8)))}")
        if hasattr(cfutures, "wait") and hasattr(cfutures, "as_completed"):
            step("wait() and as_completed()")
            fs = [pool.submit(time.sleep, d) for d in (0.03, 0.01, 0.02)]
            done, not_done = cfutures.wait(
                fs, return_when=cfutures.FIRST_COMPLETED)
            say(f"wait(FIRST_COMPLETED): {len(done)} done, "
                f"{len(not_done)} not yet")
            order = [fs.index(f) for f in cfutures.as_completed(fs)]
            say(f"as_completed yields in completion order: futures {order}")


def demo_asyncio():
    if not hasattr(cfutures.Future, "__await__"):
        return
    step("asyncio: await a cfutures future")

    async def main():
        f = cfutures.Future()
        threading.Timer(0.02, f.set_result, ("done in a thread",)).start()
        say(f"await f -> {await f!r} (the loop kept running meanwhile)")
        if hasattr(cfutures, "to_thread"):
            total = await cfutures.to_thread(sum, range(1000))
            say(f"await cfutures.to_thread(sum, range(1000)) -> {total}")
            t0 = time.perf_counter()
            await asyncio.gather(*(cfutures.to_thread(_square, i)
                                   for i in range(1000)))
            say(f"1000 gathered to_thread calls took "
                f"{1e3 * (time.perf_counter() - t0):.1f} ms")

    asyncio.run(main())


def speed_table():
    step("Speed: cfutures against concurrent.futures (a quick run)")
    from cfutures._bench import run
    # The instruction count runs valgrind twice per peer (half a minute):
    # the full run has it; the tour keeps to seconds.
    workloads = [w for w in run.all_workloads()
                 if w.kind != "instructions"]
    print(f"   measuring {len(workloads)} workloads, each on every peer, "
          "alternating: ", end="", flush=True)
    results = run.run_benchmarks(
        workloads, quick=True,
        progress=lambda res: print(".", end="", flush=True))
    print("\n")
    print(run.text_table(results))
    m = results["machine"]
    print(f"\nMedians of {results['settings']['repeats']} repeats per peer "
          f"(us per operation, bytes per object); Python "
          f"{m['python'].split()[0]}, {m['duration_s']} s.")
    print(run.legend(results))
    print("A quick run on small n; the full run (JSON, chart, table) is\n"
          "`python -m benchmarks.run` in the source checkout.")


def main():
    print(f"cfutures: concurrent.futures in C (Python "
          f"{sys.version.split()[0]})")
    demo_future()
    # The executor, wait() and the asyncio bridge land piece by piece; a
    # build without one skips (or, for a stub, notes) its part of the tour.
    for demo in (demo_executor, demo_asyncio):
        try:
            demo()
        except NotImplementedError as exc:
            say(f"(not in this build yet: {exc})")
    speed_table()


if __name__ == "__main__":
    main()
