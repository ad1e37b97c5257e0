"""Chains of futures completed by each other's done-callbacks (issue 12).

The stdlib runs such a chain recursively in Python, one link per few
frames; cfutures runs it in C, and past a depth it runs the nested
completions' callbacks iteratively.  These check that long chains neither
crash nor change what a program sees: which futures finish, with what,
in what order the callbacks run, and the RecursionError the stdlib raises
under a low recursion limit."""
import os
import subprocess
import sys
import textwrap

import pytest

# A small thread stack for the tests below, still far too small for one C
# frame per link of their chains (about 0.7 KiB each): 4 MiB, since 3.13's
# trashcan lets a dealloc nest up to its C recursion limit (10,000 here),
# calibrated for an 8 MiB stack, so the stdlib's own chain (its completed
# futures keep their callbacks, and freeing one frees the rest in turn)
# overflows a smaller one there (1 MiB on 3.13.0).
STACK = 4 * 1024 * 1024

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(code, timeout=120):
    """Run code in a fresh interpreter that imports this checkout; a crash
    fails the test that ran it, not the whole run."""
    env = dict(os.environ)
    env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=HERE)


CHAIN = """
    import importlib, logging, sys, threading
    mod = importlib.import_module({modname!r})
    logged = []
    class Keep(logging.Handler):
        def emit(self, record):
            logged.append((record.getMessage().split(" for ")[0],
                           record.exc_info[0].__name__))
    log = logging.getLogger("concurrent.futures")
    log.addHandler(Keep())
    log.propagate = False

    def chain(n):
        fs = [mod.Future() for _ in range(n)]
        for a, b in zip(fs, fs[1:]):
            a.add_done_callback(lambda f, b=b: b.set_result(f.result() + 1))
        fs[0].set_result(0)
        done = [f.done() for f in fs]
        k = done.index(False) if False in done else n
        assert done == [True] * k + [False] * (n - k), "not a prefix"
        assert [f.result() for f in fs[:k]] == list(range(k))
        return k
"""


def _chain(modname, body):
    r = run_script(textwrap.dedent(CHAIN).format(modname=modname)
                   + textwrap.dedent(body))
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr[-3000:])
    return r.stdout


@pytest.mark.timeout(300)
@pytest.mark.parametrize("modname", ["concurrent.futures", "cfutures"])
def test_long_chain_completes_like_the_stdlib(modname):
    # The reproducer: cfutures segfaulted, once per link in C.
    out = _chain(modname, """
        sys.setrecursionlimit(200_000)
        print(chain(50_000), logged)
    """)
    assert out.split() == ["50000", "[]"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("modname", ["concurrent.futures", "cfutures"])
def test_long_chain_completes_on_a_small_thread_stack(modname):
    out = _chain(modname, f"""
        STACK = {STACK}
        sys.setrecursionlimit(200_000)
        res = []
        threading.stack_size(STACK)
        t = threading.Thread(target=lambda: res.append(chain(20_000)))
        t.start()
        t.join()
        print(res, logged)
    """)
    assert out.split() == ["[20000]", "[]"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("modname", ["concurrent.futures", "cfutures"])
def test_long_chain_under_the_default_recursion_limit(modname):
    # The stdlib runs out of recursion somewhere along the chain: the
    # link that fails is logged once as a RecursionError, the futures
    # before it hold their results and the rest stay pending.  Where
    # exactly depends on the frames each link costs, so only the shape is
    # compared.
    out = _chain(modname, """
        sys.setrecursionlimit(1000)
        k = chain(5_000)
        print(0 < k < 5_000, logged)
    """)
    assert out.split(None, 1) == [
        "True", "[('exception calling callback', 'RecursionError')]\n"]


ORDER = """
    import importlib, sys
    mod = importlib.import_module({modname!r})
    sys.setrecursionlimit(100_000)
    events = []

    def link(b, name):
        def cb(f):
            events.append(("enter", name))
            b.set_result(f.result() + 1)
            events.append(("leave", name))
        return cb

    # A chain whose links also have a second callback, and branches: each
    # future completes the next and, every 7th, a side future with its own
    # callbacks.
    n = {n}
    fs = [mod.Future() for _ in range(n)]
    for i, (a, b) in enumerate(zip(fs, fs[1:])):
        a.add_done_callback(link(b, i))
        if i % 7 == 0:
            side = mod.Future()
            side.add_done_callback(lambda f, i=i: events.append(("side", i)))
            a.add_done_callback(lambda f, s=side: s.set_result(f.result()))
        a.add_done_callback(lambda f, i=i: events.append(("after", i)))
    fs[0].set_result(0)
    assert fs[-1].result() == n - 1
    print(repr(events))
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("n", [10, 60])
def test_shallow_chain_runs_callbacks_in_the_stdlibs_order(n):
    # Below the depth where cfutures switches to iterating, every
    # interleaving (a callback's code after the set_result it made, the
    # nested future's callbacks, the siblings) is the stdlib's.
    outs = []
    for modname in ["concurrent.futures", "cfutures"]:
        r = run_script(textwrap.dedent(ORDER).format(modname=modname, n=n))
        assert r.returncode == 0, (r.returncode, r.stderr[-3000:])
        outs.append(r.stdout)
    assert outs[0] == outs[1]


@pytest.mark.timeout(120)
def test_ext_deep_chain_runs_every_callback_once_depth_first():
    # Past that depth the nested completions' callbacks run after the
    # callback that completed them returns ("leave" comes earlier), but
    # each runs once, and futures are still visited depth first: with the
    # "leave" events set aside the order is the stdlib's.
    outs = []
    for modname in ["concurrent.futures", "cfutures"]:
        r = run_script(textwrap.dedent(ORDER).format(modname=modname,
                                                      n=3000))
        assert r.returncode == 0, (r.returncode, r.stderr[-3000:])
        events = eval(r.stdout)
        outs.append([e for e in events if e[0] != "leave"])
        assert sorted(e for e in events if e[0] == "leave") == sorted(
            ("leave", i) for i in range(2999))
    assert outs[0] == outs[1]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("modname", ["concurrent.futures", "cfutures"])
def test_dropping_a_pending_chain_on_a_small_thread_stack(modname):
    # Each future's callback holds the next future: freeing the head frees
    # the chain, which must not recurse once per link either.
    r = run_script(f"""
        import importlib, threading
        mod = importlib.import_module({modname!r})
        def run():
            head = cur = mod.Future()
            for _ in range(50_000):
                nxt = mod.Future()
                cur.add_done_callback(
                    lambda f, b=nxt: b.set_result(f.result() + 1))
                cur = nxt
            del cur, nxt
            del head
            print("freed")
        threading.stack_size({STACK})
        t = threading.Thread(target=run)
        t.start()
        t.join()
    """)
    assert (r.returncode, r.stdout) == (0, "freed\n"), r.stderr[-3000:]
