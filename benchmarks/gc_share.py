"""python -m benchmarks.gc_share: how much of submit-all is the collector.

The runner's "submit 100k no-op tasks, then wait" row, taken the way the
runner takes it (gc.collect() before each sample, the collector on), with
a gc.callbacks timer around every collection inside the sample.  It
prints, for the stdlib and cfutures, the time per task, how many
collections a sample ran and how much of the time they took, and the
speed-up with and without them.  Meant for a free-threaded build
(PYTHON_GIL=0), whose collector walks the whole heap each time; it runs
on any build.
"""
import concurrent.futures
import gc
import statistics
import sys
import time

import cfutures

TASKS = 100_000
WORKERS = 4


def _noop():
    pass


class CollectionTimer:
    """Counts the collections, and the seconds they take, since reset()."""

    def __init__(self):
        self.reset()
        self._started = 0.0

    def reset(self):
        self.count = 0
        self.seconds = 0.0

    def __call__(self, phase, info):
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.count += 1
            self.seconds += time.perf_counter() - self._started


def sample(mod, pool, timer):
    """One sample: (µs a task, collections, µs a task in them)."""
    gc.collect()
    timer.reset()
    t0 = time.perf_counter()
    fs = [pool.submit(_noop) for _ in range(TASKS)]
    mod.wait(fs)
    elapsed = time.perf_counter() - t0
    del fs
    return (elapsed / TASKS * 1e6, timer.count, timer.seconds / TASKS * 1e6)


def main(repeats=7):
    mods = (concurrent.futures, cfutures)
    pools = {mod: mod.ThreadPoolExecutor(WORKERS) for mod in mods}
    timer = CollectionTimer()
    gc.callbacks.append(timer)
    try:
        for pool in pools.values():
            # Start every worker outside the timing.
            for f in [pool.submit(time.sleep, 0.005) for _ in range(WORKERS)]:
                f.result()
        samples = {mod: [] for mod in mods}
        for _ in range(repeats):
            for mod in mods:
                samples[mod].append(sample(mod, pools[mod], timer))
    finally:
        gc.callbacks.remove(timer)
        for pool in pools.values():
            pool.shutdown()
    total, outside = {}, {}
    for mod in mods:
        rows = samples[mod]
        total[mod] = statistics.median(r[0] for r in rows)
        outside[mod] = statistics.median(r[0] - r[2] for r in rows)
        print("%-18s %6.2f µs a task; collections a sample %s, %.2f µs a "
              "task in them" % (mod.__name__, total[mod],
                                sorted(r[1] for r in rows),
                                statistics.median(r[2] for r in rows)))
    std = concurrent.futures
    print("speed-up %.1fx; with the collections taken out of both %.1fx"
          % (total[std] / total[cfutures], outside[std] / outside[cfutures]))
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print("(%s, GIL %s, medians of %d samples)"
          % (sys.version.split()[0], "on" if gil else "off", repeats))


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
