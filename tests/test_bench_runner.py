"""The benchmark runner produces its JSON, table and chart; a peer that
fails is reported, not fatal.  No timing is asserted here."""
import json
import os
import sys

import pytest

from cfutures._bench import run
from cfutures._bench.workloads import Workload, all_workloads

EXPECTED_WORKLOAD_KEYS = {"name", "kind", "unit", "n", "repeats", "goal",
                          "goal_ratio", "baseline", "peers", "ratios",
                          "speedups", "goal_met"}


def _tiny(name):
    [w] = [w for w in all_workloads() if w.name == name]
    return Workload(**{**w.__dict__, "n": 50, "quick_n": 50})


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", [
    "future: create + set_result + result",
    "future: memory per pending future",
])
def test_runner_writes_json_with_expected_keys(tmp_path, name,
                                              settle_threads):
    # The memory workload starts and stops tracemalloc: no thread of an
    # earlier test may be exiting then (see conftest._settle_threads).
    settle_threads()
    results = run.run_benchmarks([_tiny(name)], repeats=2)
    path = tmp_path / "r.json"
    written = run.save(results, str(path), chart=False)
    assert str(path) in written and (tmp_path / "r.md").exists()
    data = json.loads(path.read_text())
    assert data["schema"] == 1
    assert {"date", "python", "cpu_count", "git_commit"} <= set(
        data["machine"])
    assert data["settings"]["repeats"] == 2
    [w] = data["workloads"]
    assert set(w) >= EXPECTED_WORKLOAD_KEYS
    assert w["name"] == name
    assert set(w["peers"]) == {"stdlib", "cfutures"}
    for rec in w["peers"].values():
        assert rec["error"] is None
        assert len(rec["samples"]) == 2
        assert rec["median"] > 0
    ratio = w["ratios"]["stdlib"]
    assert ratio == pytest.approx(w["peers"]["cfutures"]["median"]
                                  / w["peers"]["stdlib"]["median"])
    assert w["speedups"]["stdlib"] == pytest.approx(1 / ratio)
    assert w["goal_met"] == (ratio <= w["goal_ratio"])
    assert name in (tmp_path / "r.md").read_text()


@pytest.mark.timeout(60)
def test_failing_peer_is_reported_not_fatal(tmp_path):
    calls = []

    def run_fn(impl, n):
        calls.append(impl.name)
        if impl.name == "cfutures":
            raise RuntimeError("broken on purpose")
        return 0.001

    ws = [Workload("t: fails for cfutures", run_fn, 10, goal=">= 2x",
                   goal_ratio=0.5),
          Workload("t: missing peer", run_fn, 10,
                   peers=("stdlib", "no_such_peer_module"))]
    results = run.run_benchmarks(ws, repeats=3)
    first, second = results["workloads"]
    cf = first["peers"]["cfutures"]
    assert cf["error"] == "RuntimeError: broken on purpose"
    assert "Traceback" in cf["traceback"]
    assert cf["median"] is None and first["goal_met"] is None
    assert first["peers"]["stdlib"]["samples"] == [1e-3 / 10 * 1e6] * 3
    assert calls.count("cfutures") == 1     # not retried after failing
    assert second["peers"]["stdlib"]["error"] is None
    assert second["missing_peers"] == ["no_such_peer_module"]
    assert "no_such_peer_module" not in second["peers"]
    assert "RuntimeError" in run.text_table(results)
    run.save(results, str(tmp_path / "r.json"), chart=False)


@pytest.mark.timeout(60)
def test_peers_alternate_and_rotate():
    order = []
    w = Workload("t: order", lambda impl, n: order.append(impl.name) or 1.0,
                 1, peers=("stdlib", "cfutures"))
    run.run_benchmarks([w], repeats=4)
    assert order == ["stdlib", "cfutures",                 # warm-up
                     "stdlib", "cfutures", "cfutures", "stdlib",
                     "stdlib", "cfutures", "cfutures", "stdlib"]


@pytest.mark.timeout(60)
def test_chart_is_drawn(tmp_path):
    pytest.importorskip("matplotlib")
    results = run.run_benchmarks(
        [_tiny("future: create + set_result + result")], repeats=1)
    run.draw_chart(results, str(tmp_path / "c.png"))
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(60)
def test_cli_quick_filtered_run_saves_where_told(tmp_path, capsys,
                                                settle_threads):
    settle_threads()      # the memory workload uses tracemalloc
    path = tmp_path / "sub" / "out.json"
    status = run.main(["--quick", "--filter", "MEMORY per pending",
                       "--repeats", "1", "--json", str(path), "--no-chart"])
    assert status == 0
    data = json.loads(path.read_text())
    assert [w["name"] for w in data["workloads"]] == [
        "future: memory per pending future"]
    assert data["settings"]["quick"] is True
    assert data["load_errors"] == []
    assert (tmp_path / "sub" / "out.md").exists()
    assert not (tmp_path / "sub" / "out.png").exists()
    assert "memory per pending future" in capsys.readouterr().out


def test_cli_rejects_bad_repeats():
    with pytest.raises(SystemExit):
        run.main(["--repeats", "0"])


def test_broken_concept_module_is_reported(monkeypatch):
    import types
    broken = types.ModuleType("cfutures._bench.workloads.wait")  # no WORKLOADS
    monkeypatch.setitem(sys.modules, "cfutures._bench.workloads.wait",
                        broken)
    errors = []
    names = [w.name for w in all_workloads(errors)]
    assert "future: memory per pending future" in names
    assert [mod for mod, _ in errors] == ["cfutures._bench.workloads.wait"]
    assert isinstance(errors[0][1], AttributeError)


def test_memory_workload_runs_without_hang_watchdog(monkeypatch,
                                                    settle_threads):
    # faulthandler's watchdog is a new C thread; starting it right before
    # tracemalloc.start()/stop() aborted the debug interpreter (CPython
    # 3.11, gh-128679).  Time workloads keep it.
    armed = []
    monkeypatch.setattr(run.faulthandler, "dump_traceback_later",
                        lambda *a, **k: armed.append(a))
    settle_threads()
    run.run_benchmarks([_tiny("future: memory per pending future")],
                       repeats=1)
    assert armed == []
    run.run_benchmarks([_tiny("future: create + set_result + result")],
                       repeats=1)
    assert armed


@pytest.mark.timeout(60)
def test_workload_needing_a_missing_module_is_skipped_quietly(recwarn):
    # A fresh `pip install .` has no uvloop: its workload is skipped as a
    # missing anyio peer is left out, and builds no coroutine it never
    # awaits (a RuntimeWarning).
    calls = []
    ws = [Workload("t: needs a module", lambda impl, n: calls.append(1),
                   10, needs=("no_such_module_for_cfutures",)),
          Workload("t: runs", lambda impl, n: 0.001, 10)]
    results = run.run_benchmarks(ws, repeats=1)
    assert calls == []
    assert [w["name"] for w in results["workloads"]] == ["t: runs"]
    assert results["skipped"] == [{"name": "t: needs a module",
                                   "missing": ["no_such_module_for_cfutures"]}]
    text = run.text_table(results)
    assert "error" not in text
    assert "not installed: no_such_module_for_cfutures" in text
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_uvloop_workload_declares_uvloop():
    [w] = [w for w in all_workloads() if "uvloop" in w.name]
    assert w.needs == ("uvloop",)


def test_aio_workload_without_uvloop_leaves_no_coroutine(monkeypatch):
    # Called anyway, the uvloop workload fails before it makes the
    # coroutine, so nothing warns "coroutine ... was never awaited".
    import gc
    import warnings

    import cfutures
    from cfutures._bench.workloads import Impl, aio
    monkeypatch.setitem(sys.modules, "uvloop", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            aio._gathered_to_thread_uvloop(Impl("cfutures", cfutures), 1)
        except ImportError:
            pass
        else:
            pytest.fail("no ImportError without uvloop")
        gc.collect()
    assert [str(w.message) for w in caught
            if issubclass(w.category, RuntimeWarning)] == []


@pytest.mark.timeout(60)
def test_shared_to_thread_pool_is_not_a_thread_left_running():
    import threading
    started = []

    def run_fn(impl, n):
        if not started:
            t = threading.Thread(target=threading.Event().wait, args=(5,),
                                 name="cfutures.to_thread_99", daemon=True)
            t.start()
            started.append(t)
        return 0.001

    results = run.run_benchmarks([Workload("t: pool", run_fn, 1)],
                                 repeats=1)
    assert results["workloads"][0]["threads_left_running"] == 0
    assert "left" not in run.text_table(results)


def test_table_formats_speedups_targets_and_load():
    assert run.fmt_factor(1 / 1.049) == "0.95x"     # not "1.0x"
    assert run.fmt_factor(35.4) == "35.4x"
    assert run.fmt_load([3.08740234375, 1.283203125, 0.5]) == \
        "3.09, 1.28, 0.50"
    w = Workload("t: goal", lambda impl, n: 0.001, 10, goal="<= 1x",
                 goal_ratio=1.05)
    results = run.run_benchmarks([w], repeats=1)
    text = run.text_table(results)
    assert "goal" not in text.splitlines()[0]
    assert ">= 0.952x" in text
    md = run.markdown_table(results)
    assert "≥ 0.952x" in md


def test_legend_says_a_busy_machine_shrinks_speedups():
    results = {"machine": {"cpu_count": 2, "loadavg_start": [3.0, 2, 1],
                           "loadavg_end": [3.1, 2, 1]}}
    busy = " ".join(run.legend(results).split())
    assert "3.00, 2.00, 1.00" in busy and "The machine is busy" in busy
    results["machine"]["loadavg_start"] = [0.1, 0.1, 0.1]
    quiet = " ".join(run.legend(results).split())
    assert "The machine is busy" not in quiet
    assert "shrink on a busy machine" in quiet


def test_cli_help_says_json_writes_md_and_png(capsys):
    with pytest.raises(SystemExit):
        run.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert ".md" in out and ".png" in out


def test_unavailable_workload_is_skipped_and_named():
    calls = []
    ws = [Workload("t: needs valgrind", lambda impl, n: calls.append(1),
                   10, unavailable=lambda: "valgrind"),
          Workload("t: runs", lambda impl, n: 0.001, 10,
                   unavailable=lambda: None)]
    results = run.run_benchmarks(ws, repeats=1)
    assert calls == []
    assert [w["name"] for w in results["workloads"]] == ["t: runs"]
    assert results["skipped"] == [{"name": "t: needs valgrind",
                                   "missing": [], "unavailable": "valgrind"}]
    text = run.text_table(results)
    assert "not available here: valgrind (1 workload skipped)" in text
    assert "pip install" not in text


def test_instruction_count_runs_once_per_peer_against_its_floor(tmp_path):
    counts = {"stdlib": 50_000.0, "cfutures": 3_000.0, "queue": 1_300.0}
    calls = []

    def run_fn(impl, n):
        calls.append((impl.name, n))
        return counts[impl.name]

    w = Workload("t: instructions", run_fn, 100, kind="instructions",
                 goal="<= 2x the floor", goal_ratio=2.0,
                 peers=("stdlib", "cfutures", "queue"), baseline="queue")
    results = run.run_benchmarks([w], repeats=5)
    # A count is the same every time: no warm-up, one sample per peer.
    assert sorted(calls) == [("cfutures", 100), ("queue", 100),
                             ("stdlib", 100)]
    [res] = results["workloads"]
    assert res["repeats"] == 1 and res["baseline"] == "queue"
    assert res["unit"] == "instructions/op"
    assert res["peers"]["cfutures"]["median"] == 3_000.0
    assert res["ratios"]["queue"] == pytest.approx(3_000 / 1_300)
    assert res["goal_met"] is False
    text = run.text_table(results)
    assert "3,000 instr" in text and "floor" in text
    run.save(results, str(tmp_path / "r.json"), chart=False)


@pytest.mark.parametrize("peer", ["queue", "stdlib", "cfutures"])
def test_instruction_workload_child_runs_without_valgrind(peer):
    # The child callgrind runs, run plainly: it does its n tasks and exits.
    import subprocess

    from cfutures._bench.workloads import instructions
    root = instructions._package_root(None)
    # The parent's environment too: under the asan gate the extension
    # needs the preloaded sanitizer runtime (LD_PRELOAD).
    proc = subprocess.run(
        [sys.executable, "-c", instructions.CHILD, peer, "20"],
        capture_output=True, text=True, timeout=60,
        env=dict(os.environ, PYTHONPATH=root))
    assert proc.returncode == 0, proc.stderr


def test_instruction_workload_declares_valgrind(monkeypatch):
    from cfutures._bench.workloads import instructions
    [w] = instructions.WORKLOADS
    monkeypatch.setattr(instructions.shutil, "which", lambda name: None)
    assert w.unavailable() == "valgrind"
    assert w.baseline == "queue" and w.kind == "instructions"


def test_one_line_rows_skip_without_process_wide_install(monkeypatch):
    import cfutures
    from cfutures._bench.workloads import libraries
    monkeypatch.delattr(cfutures, "uninstall", raising=False)
    ws = [w for w in all_workloads() if w.name.startswith("one line:")]
    assert len(ws) == len(libraries.WORKLOADS) == 6
    results = run.run_benchmarks(ws, repeats=1)
    assert results["workloads"] == []
    assert {s["unavailable"] for s in results["skipped"]
            if s.get("unavailable")} <= {libraries._no_install()}
    assert libraries._no_install() is not None


@pytest.mark.timeout(60)
@pytest.mark.parametrize("peer, expected", [
    ("cfutures", ["install", "uninstall"]),
    ("asyncio", ["uninstall", "uninstall"]),
])
def test_one_line_rows_run_unmodified_code_installed_or_not(
        monkeypatch, peer, expected):
    # Each sample sets the process-wide state itself and leaves it
    # uninstalled, whatever ran before it.
    import cfutures
    from cfutures._bench.workloads import Impl, libraries
    calls = []
    monkeypatch.setattr(cfutures, "install",
                        lambda loop=None: calls.append("install"),
                        raising=False)
    monkeypatch.setattr(cfutures, "uninstall",
                        lambda: calls.append("uninstall"), raising=False)
    assert libraries._no_install() is None
    for fn in (libraries._gathered_to_thread, libraries._serial_to_thread,
               libraries._serial_run_in_executor):
        del calls[:]
        assert fn(Impl(peer, cfutures), 5) > 0
        assert calls == expected


@pytest.mark.timeout(60)
@pytest.mark.parametrize("lib", ["aiofiles", "asgiref"])
def test_library_rows_run(monkeypatch, lib):
    pytest.importorskip(lib)
    import cfutures
    from cfutures._bench.workloads import Impl, libraries
    monkeypatch.setattr(cfutures, "install", lambda loop=None: None,
                        raising=False)
    monkeypatch.setattr(cfutures, "uninstall", lambda: None, raising=False)
    fn = {"aiofiles": libraries._aiofiles_read,
          "asgiref": libraries._asgiref_sync_to_async}[lib]
    before = None
    if lib == "asgiref":
        import asgiref.sync
        before = asgiref.sync.ThreadPoolExecutor
    assert fn(Impl("cfutures", cfutures), 5) > 0
    if lib == "asgiref":
        # The import-time name the workload pointed elsewhere is restored.
        assert asgiref.sync.ThreadPoolExecutor is before


@pytest.mark.parametrize("name", ["_cpu_tasks", "_two_submitters"])
@pytest.mark.parametrize("peer", ["stdlib", "cfutures", "cfutures-1-worker"])
def test_free_threaded_rows_run(name, peer):
    import concurrent.futures

    import cfutures
    from cfutures._bench.workloads import Impl, free_threaded
    mod = concurrent.futures if peer == "stdlib" else cfutures
    assert getattr(free_threaded, name)(Impl(peer, mod), 4) > 0


def test_free_threaded_goals_only_without_the_gil():
    from cfutures._bench.workloads import free_threaded
    ws = free_threaded.WORKLOADS
    assert all((w.goal_ratio is not None) == free_threaded.gil_off()
               for w in ws)
    assert ws[0].baseline == "cfutures-1-worker"
    assert run.resolve_impl("cfutures-1-worker").mod is not None


def _gc_share_module():
    path = os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "benchmarks", "gc_share.py")
    if not os.path.exists(path):
        pytest.skip("benchmarks/ is not beside tests/ (an installed copy)")
    import importlib.util
    spec = importlib.util.spec_from_file_location("gc_share", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.timeout(60)
def test_gc_share_counts_the_collections_in_a_sample(monkeypatch, capsys):
    import gc
    gc_share = _gc_share_module()
    timer = gc_share.CollectionTimer()
    gc.callbacks.append(timer)
    try:
        gc.collect()
        gc.collect()
    finally:
        gc.callbacks.remove(timer)
    assert timer.count == 2 and timer.seconds > 0
    monkeypatch.setattr(gc_share, "TASKS", 2_000)
    gc_share.main(1)
    out = capsys.readouterr().out
    assert out.count("µs a task;") == 2, out
    assert "speed-up" in out
    assert not any(cb is timer or isinstance(cb, gc_share.CollectionTimer)
                   for cb in gc.callbacks)
