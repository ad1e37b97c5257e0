"""Instructions, not seconds: a no-op submit + wait counted by callgrind.

Time moves with the machine's load; the number of instructions a task
costs does not.  Each sample runs a child interpreter under
``valgrind --tool=callgrind`` twice, with BASE tasks and with BASE + n,
and returns the difference over n: interpreter start-up, imports and the
pool's threads are in both runs and cancel.  The instructions of every
thread are counted (callgrind runs them one at a time), so a worker's
share is in the count, as is the garbage collector's.  Where valgrind
switches threads decides how often the worker finds the queue empty, so
the count moves by a few percent between runs (2,900 to 2,960 for
cfutures here), far less than a time does on a shared machine: the
runner takes one sample.  The garbage collector's share depends on the
heap the child starts with and on n (a full pass comes when the objects
made since the last one reach a quarter of the old ones): compare counts
made with the same n.

The peers: "stdlib" and "cfutures" submit n no-op tasks to a one-worker
pool and wait() for them; "queue" is the floor: a ``queue.SimpleQueue``
put, get and call of the same function in one thread, what any pool has
to do at the least.  The goal is relative to that floor.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

from . import Workload

BASE = 200          # tasks in the first run; the second runs BASE + n

# The child: everything in a function, so names are locals on every peer.
CHILD = r"""
import sys


def noop():
    pass


def floor(n):
    import queue
    q = queue.SimpleQueue()
    put, get = q.put, q.get
    for _ in range(n):
        put(noop)
    for _ in range(n):
        get()()


def pool(modname, n):
    import importlib
    mod = importlib.import_module(modname)
    with mod.ThreadPoolExecutor(1) as ex:
        ex.submit(noop).result()        # the worker is started
        submit = ex.submit
        fs = [submit(noop) for _ in range(n)]
        mod.wait(fs)


peer, n = sys.argv[1], int(sys.argv[2])
if peer == "queue":
    floor(n)
else:
    pool({"stdlib": "concurrent.futures"}.get(peer, peer), n)
"""

_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def _package_root(impl):
    """The directory the child must import cfutures from: the one this
    process measures (a checkout's cfutures/, or site-packages)."""
    import cfutures
    return os.path.dirname(os.path.dirname(os.path.abspath(
        cfutures.__file__)))


def _start(peer, n, root, out):
    env = dict(os.environ, PYTHONHASHSEED="0",
               PYTHONPATH=os.pathsep.join(
                   [root] + [p for p in os.environ.get(
                       "PYTHONPATH", "").split(os.pathsep) if p]))
    return subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
         # With site imported, as any program starts: without it (-S)
         # start-up is a third shorter, but the smaller heap makes the
         # collector's full passes come sooner, and cfutures' count rose
         # from about 3,000 to 3,460 per task.
         sys.executable, "-c", CHILD, peer, str(n)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _collected(proc, peer):
    try:
        _, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"callgrind run of {peer} failed "
                           f"({proc.returncode}): {err.strip()[-500:]}")
    m = _COLLECTED.search(err)
    if m is None:
        raise RuntimeError("callgrind printed no instruction count")
    return int(m.group(1))


def counts(peer, sizes, root, out_dir=None):
    """Instructions callgrind counts for children running each of sizes
    tasks, run side by side (most of the time is valgrind's start-up).
    out_dir keeps the callgrind.out.<peer>.<n> files (for
    callgrind_annotate)."""
    with tempfile.TemporaryDirectory(prefix="cfutures-callgrind-") as d:
        where = out_dir or d
        procs = [_start(peer, n, root,
                        os.path.join(where, f"callgrind.out.{peer}.{n}"))
                 for n in sizes]
        try:
            return [_collected(p, peer) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.communicate()


def _no_valgrind():
    return None if shutil.which("valgrind") else "valgrind"


def _submit_wait_instructions(impl, n):
    first, second = counts(impl.name, (BASE, BASE + n), _package_root(impl))
    return (second - first) / n


WORKLOADS = [
    Workload(
        name="instructions: no-op submit + wait per task (callgrind, "
             "1 worker)",
        run=_submit_wait_instructions,
        n=5_000,
        quick_n=1_000,
        kind="instructions",
        goal="<= 2x the floor",
        goal_ratio=2.0,
        peers=("stdlib", "cfutures", "queue"),
        baseline="queue",
        unavailable=_no_valgrind,
        tags=("instructions",),
    ),
]


def main(argv):
    """python -m cfutures._bench.workloads.instructions PEER N OUT_DIR:
    keep both runs' callgrind files to see where the instructions go."""
    peer, n, out_dir = argv[0], int(argv[1]), argv[2]
    os.makedirs(out_dir, exist_ok=True)
    first, second = counts(peer, (BASE, BASE + n),
                           _package_root(None), out_dir)
    print(f"{peer}: {(second - first) / n:,.0f} instructions per task "
          f"(callgrind.out.{peer}.{BASE} and .{BASE + n} in {out_dir})")


if __name__ == "__main__":
    main(sys.argv[1:])
