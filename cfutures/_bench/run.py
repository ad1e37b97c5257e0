"""The benchmark runner: cfutures against its peers, in one process run.

    python -m benchmarks.run [--quick] [--filter SUBSTR] [--repeats N]
                             [--json PATH] [--no-chart] [--no-gc]

(from the source checkout; benchmarks/run.py is a thin entry to this
module, which ships inside the package so that `python -m cfutures` can
show its speed table wherever cfutures is installed).

Every workload (cfutures/_bench/workloads/) runs on each of its peers:
"stdlib" (concurrent.futures), "cfutures", and any other peer it names
(e.g. "asyncio"); its run() knows what to do with impl.name.  The peers
alternate within each repeat, and which one goes first rotates, so a slow
phase of a shared machine hits every peer alike.  After a warm-up, each
repeat gives one sample per peer; the report is the median per operation
(microseconds, or bytes per object) and the ratio cfutures / peer.  A ratio
below 1 means cfutures is faster or smaller; the speed-up is its inverse.

A full run (no --quick, no --filter) from the checkout saves
benchmarks/results/latest.json, latest.md (a table for the README) and
latest.png (the chart); --json PATH saves the JSON there instead, with the
.md and .png beside it (PATH's name with those suffixes).

Garbage collection stays enabled during a sample, as in a user's program
(a peer that allocates more tracked objects pays for its collections), and
gc.collect() runs before every sample so no peer pays for another's garbage.
--no-gc disables the collector during samples instead.
"""
import argparse
import datetime
import faulthandler
import gc
import importlib
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import threading
import time
import traceback

from .workloads import Impl, all_workloads

# The source checkout this module is in (cfutures/_bench/ -> the root), if
# it is one: git describes the commit measured.  Installed, it is not.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

DEFAULT_REPEATS = 9
QUICK_REPEATS = 5
# In a quick run, n shrinks so one sample of the slowest peer takes about
# this long (estimated from the warm-up): `python -m cfutures` stays short
# however many workloads land.
QUICK_SAMPLE_SECONDS = 0.08
# A measurement that takes longer than this prints every thread's stack to
# stderr (it does not stop the run): a hang shows where it hangs.
HANG_REPORT_SECONDS = 120

UNITS = {"time": "us/op", "bytes": "bytes/object",
         "instructions": "instructions/op"}
# Kinds whose value barely moves between runs (a count, not a time, within
# a few percent): one sample per peer, no warm-up.
DETERMINISTIC_KINDS = ("instructions",)
PEER_LABELS = {"stdlib": "concurrent.futures",
               "queue": "floor (SimpleQueue put + get + call)",
               "cfutures-1-worker": "cfutures, 1 worker"}
# Peers whose module is not their name: "cfutures-1-worker" is cfutures
# run another way (the workload looks at impl.name).
PEER_MODULES = {"stdlib": "concurrent.futures",
                "cfutures-1-worker": "cfutures"}


def peer_label(name):
    return PEER_LABELS.get(name, name)


def resolve_impl(name):
    """The Impl of a peer: its module, or None when it cannot be imported
    (the workload's run() then fails and the failure is reported)."""
    modname = PEER_MODULES.get(name, name)
    try:
        mod = importlib.import_module(modname)
    except ImportError:
        mod = None
    return Impl(name, mod)


def _watch_for_hang():
    try:
        faulthandler.dump_traceback_later(HANG_REPORT_SECONDS, repeat=True,
                                          file=sys.__stderr__)
    except (AttributeError, OSError, ValueError):
        pass    # no real stderr (e.g. captured): no hang report, still run


def _one_sample(workload, impl, n, gc_off):
    gc.collect()
    if gc_off:
        gc.disable()
    # Not for memory workloads: they start and stop tracemalloc, and the
    # watchdog's new C thread frees its start-up block outside the GIL,
    # through the allocator hooks tracemalloc swaps: on CPython 3.11 a
    # debug build aborts (tracemalloc_remove_trace assertion), a release
    # build may crash (CPython gh-128679).  They run no threads to hang.
    watch = workload.kind != "bytes"
    if watch:
        _watch_for_hang()
    try:
        value = workload.run(impl, n)
    finally:
        if watch:
            faulthandler.cancel_dump_traceback_later()
        if gc_off:
            gc.enable()
    if workload.kind == "time":
        return value / n * 1e6      # seconds for n ops -> microseconds per op
    return float(value)              # already bytes per object


def _error_text(exc):
    return f"{type(exc).__name__}: {exc}".strip()


def measure_workload(workload, repeats, quick=False, gc_off=False):
    """Measure one workload on all of its peers; never raises for a
    failing peer, it is recorded in the peer's "error"."""
    n = workload.n
    if quick:
        n = workload.quick_n or max(1, workload.n // 10)
    deterministic = workload.kind in DETERMINISTIC_KINDS
    if deterministic:
        repeats = 1
    peers = list(dict.fromkeys(workload.peers))
    impls = {name: resolve_impl(name) for name in peers}
    # A peer that is not installed (anyio without the bench extra) is left
    # out and named, rather than reported as an error in every table.
    missing = [name for name in peers
               if name not in ("stdlib", "cfutures") and impls[name].mod is None]
    peers = [name for name in peers if name not in missing]
    per_peer = {name: {"samples": [], "error": None, "traceback": None}
                for name in peers}

    def attempt(name, n_ops):
        rec = per_peer[name]
        if rec["error"] is not None:
            return None
        try:
            return _one_sample(workload, impls[name], n_ops, gc_off)
        except Exception as exc:  # a failing peer is reported, not fatal
            rec["error"] = _error_text(exc)
            rec["traceback"] = traceback.format_exc()
            return None

    n_warm = max(1, n // 10)
    slowest = 0.0
    for name in peers if not deterministic else ():
        # warm-up: imports, caches, thread starts
        t0 = time.perf_counter()
        attempt(name, n_warm)
        slowest = max(slowest, time.perf_counter() - t0)
    if quick and slowest > 0:
        shrunk = int(QUICK_SAMPLE_SECONDS * n_warm / slowest)
        # A workload with a goal keeps its quick_n: its ratio depends on n
        # (asyncio's per-call cost grows with the number gathered), and a
        # goal is judged at the size it was set for.
        floor = workload.quick_n if workload.goal and workload.quick_n else 1
        n = max(floor, min(n, shrunk))
    for r in range(repeats):
        k = r % len(peers)
        for name in peers[k:] + peers[:k]:
            value = attempt(name, n)
            if value is not None:
                per_peer[name]["samples"].append(value)

    for rec in per_peer.values():
        s = rec["samples"]
        # A peer that failed part-way has no median: its samples stay in
        # the JSON, but a ratio needs the full set.
        ok = s and not rec["error"]
        rec["median"] = statistics.median(s) if ok else None
        rec["min"] = min(s) if s else None
        rec["max"] = max(s) if s else None
        if rec["traceback"] is None:
            del rec["traceback"]

    cf = per_peer.get("cfutures", {}).get("median")
    ratios, speedups, paired = {}, {}, {}
    for name in peers:
        if name == "cfutures":
            continue
        other = per_peer[name]["median"]
        if cf is not None and other:
            ratios[name] = cf / other
            speedups[name] = other / cf if cf else float("inf")
            # The same repeat's samples ran back to back: their ratio
            # cancels a slow phase of the machine that hit both.
            pairs = [c / o for c, o in zip(per_peer["cfutures"]["samples"],
                                           per_peer[name]["samples"]) if o]
            paired[name] = statistics.median(pairs) if pairs else None
        else:
            ratios[name] = speedups[name] = paired[name] = None

    baseline = workload.baseline
    if baseline not in ratios:
        baseline = ("stdlib" if "stdlib" in ratios
                    else next(iter(ratios), None))
    goal_met = None
    if workload.goal_ratio is not None and baseline is not None:
        ratio = ratios[baseline]
        goal_met = None if ratio is None else ratio <= workload.goal_ratio
    return {
        "name": workload.name,
        "kind": workload.kind,
        "unit": UNITS.get(workload.kind, workload.kind),
        "n": n,
        "repeats": repeats,
        "goal": workload.goal,
        "goal_ratio": workload.goal_ratio,
        "baseline": baseline,
        "peers": per_peer,
        "missing_peers": missing,
        "ratios": ratios,
        "speedups": speedups,
        "paired_ratio_medians": paired,
        "goal_met": goal_met,
    }


def _git(*args):
    if not os.path.exists(os.path.join(ROOT, ".git")):
        return None         # installed: site-packages is no checkout
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _loadavg():
    try:
        return list(os.getloadavg())
    except (AttributeError, OSError):
        return None


def fmt_load(load):
    if not load:
        return "unknown"
    return ", ".join(f"{x:.2f}" for x in load)


def machine_info():
    import cfutures
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc)
                .isoformat(timespec="seconds"),
        "python": sys.version,
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "loadavg_start": _loadavg(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "cfutures_file": getattr(cfutures._cfutures, "__file__", None),
    }


def select(workloads, substr):
    if not substr:
        return list(workloads)
    s = substr.lower()
    return [w for w in workloads if s in w.name.lower()]


# Pools that live as long as the process, by thread name: their threads
# stay after a workload on purpose (cfutures.to_thread's shared pool).
LIFETIME_THREAD_PREFIXES = ("cfutures.to_thread",)


def _missing_modules(workload):
    return [m for m in workload.needs if importlib.util.find_spec(m) is None]


def run_benchmarks(workloads=None, repeats=None, quick=False, substr=None,
                   gc_off=False, progress=None):
    """Run the workloads and return the results dict (what the JSON holds).
    progress(result) is called after each workload.  A workload that needs
    a module which is not installed (uvloop) is skipped and named in
    "skipped", as a peer that is not installed is left out."""
    load_errors = []
    if workloads is None:
        workloads = all_workloads(load_errors)
    workloads = select(workloads, substr)
    if repeats is None:
        repeats = QUICK_REPEATS if quick else DEFAULT_REPEATS
    results = {
        "schema": 1,
        "machine": machine_info(),
        "settings": {
            "repeats": repeats,
            "warmup": "one run per peer at n/10 before the repeats",
            "quick_n": (f"quick_n or n/10, shrunk so a sample takes about "
                        f"{QUICK_SAMPLE_SECONDS} s, but not below quick_n "
                        f"for a workload with a goal" if quick else None),
            "quick": quick,
            "filter": substr,
            "order": "peers alternate within each repeat; the first rotates",
            "gc": ("disabled during samples" if gc_off else
                   "enabled during samples; gc.collect() before each"),
            "ratio": "cfutures median / peer median (below 1: cfutures "
                     "is faster or smaller); speedup = its inverse; "
                     "paired_ratio_medians = median over repeats of the "
                     "ratio within a repeat (a cross-check)",
        },
        "load_errors": [f"{mod}: {_error_text(exc)}"
                        for mod, exc in load_errors],
        "skipped": [],
        "workloads": [],
    }
    t0 = time.perf_counter()
    for w in workloads:
        missing = _missing_modules(w)
        other = w.unavailable() if w.unavailable and not missing else None
        if missing or other:
            skip = {"name": w.name, "missing": missing}
            if other:
                skip["unavailable"] = other
            results["skipped"].append(skip)
            continue
        threads_before = set(threading.enumerate())
        t1 = time.perf_counter()
        res = measure_workload(w, repeats, quick=quick, gc_off=gc_off)
        res["seconds"] = round(time.perf_counter() - t1, 3)
        # A workload that leaves threads running skews the ones after it.
        res["threads_left_running"] = sum(
            1 for t in threading.enumerate()
            if t not in threads_before
            and not t.name.startswith(LIFETIME_THREAD_PREFIXES))
        results["workloads"].append(res)
        if progress is not None:
            progress(res)
    results["machine"]["loadavg_end"] = _loadavg()
    results["machine"]["duration_s"] = round(time.perf_counter() - t0, 2)
    return results


# ---- formatting --------------------------------------------------------

def fmt_value(value, kind):
    if value is None:
        return "-"
    if kind == "bytes":
        return f"{value:,.0f} B"
    if kind == "instructions":
        return f"{value:,.0f} instr"
    if value >= 100:
        return f"{value:,.0f} us"
    if value >= 10:
        return f"{value:.1f} us"
    return f"{value:.3g} us"


def fmt_factor(x):
    if x is None:
        return "-"
    if x < 10:
        return f"{x:.2f}x"     # 0.95x, not a rounded "1.0x" beside 1.049
    return f"{x:.1f}x" if x < 100 else f"{x:.0f}x"


def fmt_target(workload):
    """The speed-up cfutures aims for on a workload, in the units of the
    speed-up column (the JSON keeps the goal as the issue wrote it)."""
    return f">= {1 / workload['goal_ratio']:.3g}x"


def _rows(results):
    """One row per (workload, peer other than cfutures): the comparison."""
    for w in results["workloads"]:
        cf = w["peers"].get("cfutures")
        others = [p for p in w["peers"] if p != "cfutures"]
        if not others:      # only cfutures: report its own number
            others = [None]
        for i, peer in enumerate(others):
            label = w["name"] if i == 0 else f"  vs {peer_label(peer)}"
            if i == 0 and peer not in (None, "stdlib"):
                label = f"{w['name']} (vs {peer_label(peer)})"
            rec = w["peers"].get(peer) if peer else None
            shown = (peer, "cfutures") if i == 0 else (peer,)
            err = [f"{p}: {w['peers'][p]['error']}" for p in shown
                   if p and w["peers"].get(p, {}).get("error")]
            goal = ""
            if peer == w["baseline"] and w["goal_ratio"]:
                goal = fmt_target(w) + {True: " yes", False: " NO",
                                        None: " (no result)"}[w["goal_met"]]
            yield {
                "label": label,
                "peer": peer_label(peer) if peer else "-",
                "other": fmt_value(rec and rec["median"], w["kind"]),
                "cfutures": fmt_value(cf and cf["median"], w["kind"]),
                "ratio": ("-" if not peer or w["ratios"].get(peer) is None
                          else f"{w['ratios'][peer]:.3f}"),
                "factor": fmt_factor(w["speedups"].get(peer)),
                "goal": goal,
                "errors": err,
            }


def text_table(results):
    rows = list(_rows(results))
    lines = []
    cols = [(r["label"], r["other"], r["cfutures"], r["ratio"], r["factor"],
             r["goal"]) for r in rows]
    head = ("workload", "stdlib/peer", "cfutures", "cf/peer", "speed-up",
            "target met")
    widths = [max(len(str(c[i])) for c in cols + [head])
              for i in range(len(head))]
    align = "<>>>><"

    def line(cells):
        return "  ".join(f"{c:{a}{wd}}" for c, a, wd
                         in zip(cells, align, widths)).rstrip()

    lines.append(line(head))
    lines.append("  ".join("-" * wd for wd in widths))
    for r, c in zip(rows, cols):
        lines.append(line(c))
        for e in r["errors"]:
            lines.append(f"    error: {e}")
    for w in results["workloads"]:
        if w.get("threads_left_running", 0) > 0:
            lines.append(f"warning: {w['name']} left "
                         f"{w['threads_left_running']} thread(s) running")
    for e in results.get("load_errors", ()):
        lines.append(f"error: workloads not loaded: {e}")
    note = not_installed_note(results)
    if note:
        lines.append(note)
    return "\n".join(lines)


def not_installed_note(results):
    """A line naming the optional modules a run went without, and one
    naming anything else it went without (valgrind)."""
    skipped, peers, other = {}, {}, {}
    for s in results.get("skipped", ()):
        if s.get("unavailable"):
            other[s["unavailable"]] = other.get(s["unavailable"], 0) + 1
        for m in s["missing"]:
            skipped[m] = skipped.get(m, 0) + 1
    for w in results["workloads"]:
        for m in w.get("missing_peers", ()):
            peers[m] = peers.get(m, 0) + 1
    lines = []
    if other:
        lines.append("not available here: " + ", ".join(
            f"{what} ({k} workload{'s' * (k > 1)} skipped)"
            for what, k in other.items()))
    if not skipped and not peers:
        return "\n".join(lines)
    parts = [f"{m} ({k} workload{'s' * (k > 1)} skipped)"
             for m, k in skipped.items()]
    parts += [f"{m} (a peer, left out of {k} workload{'s' * (k > 1)})"
              for m, k in peers.items() if m not in skipped]
    names = " ".join(dict.fromkeys([*skipped, *peers]))
    lines.insert(0, f"not installed: {', '.join(parts)}; "
                    f"`pip install {names}` adds them")
    return "\n".join(lines)


# On the project's 2-core VM, a quiet machine gives the round trips their
# 35x; at load 3 they measured 5-6x (both sides wait for a CPU).
BUSY_LOAD_PER_CPU = 0.5


def legend(results):
    """What the table's columns mean, and how busy the machine was."""
    m = results["machine"]
    cpus = m.get("cpu_count") or 1
    load = m.get("loadavg_start")
    text = [
        "speed-up = peer time / cfutures time (memory: peer bytes / "
        "cfutures bytes); target met = whether it reaches the speed-up "
        "this project aims for.",
        f"Load average at the start {fmt_load(load)} (1, 5, 15 min) on "
        f"{cpus} CPUs, at the end {fmt_load(m.get('loadavg_end'))}.",
    ]
    if load and load[0] >= BUSY_LOAD_PER_CPU * cpus:
        text.append(
            "The machine is busy: the speed-ups shrink when other work "
            "takes the CPUs (a thread wakeup then waits for a CPU on both "
            "sides; on a 2-core machine at load 3 the round trips measured "
            "5-6x where a quiet one gives 35x). Rerun on a quiet machine.")
    else:
        text.append(
            "Speed-ups shrink on a busy machine (on 2 cores at load 3 the "
            "round trips measured 5-6x where a quiet one gives 35x).")
    return "\n".join(textwrap.fill(t, 79) for t in text)


def markdown_table(results):
    m = results["machine"]
    s = results["settings"]
    out = [
        "| workload | concurrent.futures (or peer) | cfutures "
        "| cfutures / peer | speed-up | target met |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in _rows(results):
        label = r["label"].strip()
        if label.startswith("vs "):
            label = "&nbsp;&nbsp;↳ " + label
        goal = r["goal"]
        goal = goal.replace(" yes", " ✅").replace(" NO", " ❌")
        goal = goal.replace(">=", "≥")
        err = "; ".join(r["errors"])
        cells = [label, r["other"].replace("us", "µs"),
                 r["cfutures"].replace("us", "µs"), r["ratio"], r["factor"],
                 goal + (f" error: {err}" if err else "")]
        out.append("| " + " | ".join(cells) + " |")
    commit = (m.get("git_commit") or "unknown")[:10]
    out.append("")
    out.append(
        f"Medians of {s['repeats']} alternating repeats per peer, per "
        f"operation (µs) or per object (bytes). Python "
        f"{m['python'].split()[0]}, {m.get('cpu') or m['machine']}, "
        f"{m['cpu_count']} cores, {m['date'][:10]}, commit {commit}. "
        "Speed-up = peer / cfutures; target met: whether it reaches the "
        "speed-up this project aims for. Load average "
        f"{fmt_load(m.get('loadavg_start'))} at the start. Produced by "
        "`python -m benchmarks.run`.")
    return "\n".join(out) + "\n"


def draw_chart(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    bars = []       # (label, factor or None, goal factor or None, color, note)
    for w in results["workloads"]:
        for peer in (p for p in w["peers"] if p != "cfutures"):
            label = w["name"]
            if peer != "stdlib":
                label += f" (vs {peer_label(peer)})"
            if w["kind"] == "bytes":
                label += " [memory]"
            elif w["kind"] == "instructions":
                label += " [instructions]"
            factor = w["speedups"].get(peer)
            goal = None
            if peer == w["baseline"] and w["goal_ratio"]:
                goal = 1 / w["goal_ratio"]
            if factor is None:
                color, note = "#bbbbbb", "error"
            elif goal is None:
                color = "#4c72b0" if peer == "stdlib" else "#8172b2"
                note = fmt_factor(factor)
            elif factor >= goal * (1 - 1e-9):
                color, note = "#55a868", fmt_factor(factor) + " met"
            else:
                color, note = "#dd8452", fmt_factor(factor) + " missed"
            bars.append((label, factor, goal, color, note))
    if not bars:
        return None

    # Long names wrap, so the bars and their notes keep the width.
    bars = [(textwrap.fill(b[0], 58),) + b[1:] for b in bars]
    height = 1.4 + 0.5 * len(bars)
    fig, ax = plt.subplots(figsize=(14, height))
    ys = list(range(len(bars)))[::-1]
    ax.barh(ys, [b[1] or 0 for b in bars], color=[b[3] for b in bars],
            height=0.6)
    ax.set_xscale("log")
    hi = max([b[1] or 1 for b in bars] + [b[2] or 1 for b in bars]) * 3
    lo = min([b[1] for b in bars if b[1]] + [1.0]) / 1.5
    ax.set_xlim(lo, hi)
    ticks = [t * 10 ** e for e in range(-2, 5) for t in (1, 2, 5)]
    ax.xaxis.set_major_locator(FixedLocator([t for t in ticks
                                             if lo <= t <= hi]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}x"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.axvline(1.0, color="#444444", lw=1)
    for y, (label, factor, goal, color, note) in zip(ys, bars):
        if goal:
            ax.plot([goal, goal], [y - 0.36, y + 0.36], color="black", lw=2)
            note += f"  (target {goal:.3g}x)"
        ax.text((factor or 1.0) * 1.05, y, note, va="center", fontsize=9)
    ax.set_yticks(ys)
    ax.set_yticklabels([b[0] for b in bars], fontsize=9)
    ax.set_xlabel("speed-up = peer time / cfutures time (memory: peer bytes "
                  "/ cfutures bytes), log scale; black bar = target")
    m = results["machine"]
    commit = (m.get("git_commit") or "unknown")[:10]
    ax.set_title(
        "cfutures vs concurrent.futures (higher is better)\n"
        f"Python {m['python'].split()[0]}, {m['cpu_count']} cores, "
        f"{m['date'][:10]}, commit {commit}, medians of "
        f"{results['settings']['repeats']} repeats", fontsize=10)
    ax.grid(axis="x", which="both", alpha=0.25)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save(results, json_path, chart=True):
    os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
    with open(json_path, "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    stem = os.path.splitext(json_path)[0]
    written = [json_path]
    with open(stem + ".md", "w") as f:
        f.write(markdown_table(results))
    written.append(stem + ".md")
    if chart:
        try:
            if draw_chart(results, stem + ".png"):
                written.append(stem + ".png")
        except ImportError:
            print("matplotlib is not installed: no chart "
                  "(pip install matplotlib)", file=sys.stderr)
    return written


def main(argv=None, results_dir=None, prog="python -m benchmarks.run"):
    """The command line.  results_dir: where a full run saves latest.*
    (the checkout's benchmarks/results/); None: only --json saves."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Benchmark cfutures against concurrent.futures and "
                    "other peers (medians and ratios, alternating peers).")
    p.add_argument("--quick", action="store_true",
                   help="small n and fewer repeats (seconds, not minutes)")
    p.add_argument("--filter", metavar="SUBSTR",
                   help="only workloads whose name contains SUBSTR")
    p.add_argument("--repeats", type=int, metavar="N",
                   help=f"samples per peer (default {DEFAULT_REPEATS}, "
                        f"quick {QUICK_REPEATS})")
    p.add_argument("--json", metavar="PATH",
                   help="save the results as JSON to PATH, with a Markdown "
                        "table (.md) and the chart (.png) beside it under "
                        "the same name (default for a full run from the "
                        "checkout: benchmarks/results/latest.json)")
    p.add_argument("--no-chart", action="store_true", help="draw no chart")
    p.add_argument("--no-gc", action="store_true",
                   help="disable the garbage collector during samples")
    p.add_argument("--list", action="store_true",
                   help="list the workloads and exit")
    args = p.parse_args(argv)

    if args.list:
        for w in select(all_workloads(), args.filter):
            print(f"{w.name}  [{w.kind}, n={w.n}, peers: "
                  f"{', '.join(w.peers)}]")
        return 0
    if args.repeats is not None and args.repeats < 1:
        p.error("--repeats must be at least 1")

    def progress(res):
        parts = []
        for name, rec in res["peers"].items():
            v = "error" if rec["error"] else fmt_value(rec["median"],
                                                       res["kind"])
            parts.append(f"{name} {v}")
        print(f"  {res['name']}: " + ", ".join(parts), file=sys.stderr,
              flush=True)

    results = run_benchmarks(repeats=args.repeats, quick=args.quick,
                             substr=args.filter, gc_off=args.no_gc,
                             progress=progress)
    if not results["workloads"] and not results["skipped"]:
        print(f"no workload matches {args.filter!r}", file=sys.stderr)
        return 2
    print()
    print(text_table(results))
    m = results["machine"]
    print(f"\nMedians of {results['settings']['repeats']} repeats per peer, "
          f"{m['duration_s']} s.")
    print(legend(results))

    json_path = args.json
    if (json_path is None and results_dir is not None and not args.quick
            and not args.filter):
        json_path = os.path.join(results_dir, "latest.json")
    if json_path:
        for path in save(results, json_path, chart=not args.no_chart):
            print(f"wrote {os.path.relpath(path)}")
    else:
        print("(saved nothing: a quick or filtered run, or one outside the "
              "checkout, saves only with --json PATH)")
    failed = [w["name"] for w in results["workloads"]
              if any(r["error"] for r in w["peers"].values())]
    failed += results["load_errors"]
    if failed:
        print(f"\n{len(failed)} workload(s) had a failing peer: "
              + "; ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
