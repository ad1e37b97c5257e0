"""The benchmark runner produces its JSON, table and chart; a peer that
fails is reported, not fatal.  No timing is asserted here."""
import json
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
