"""The order jobs start in (:mod:`generator.order`): longest first by the earlier results, when
several run at once. Fast: no NVFlare run (the simulator and POC tests see the order in their runs)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from conftest import ROOT

from generator import simulate
from generator.order import chosen_order, earlier_seconds, start_order


def _results(path, entries) -> str:
    marked = [{"generator": "nvflare-jobgen", "engine": "simulate", **e} if isinstance(e, dict) else e for e in entries]
    path.write_text(json.dumps(marked))
    return str(path)


def test_the_earlier_results_give_each_ok_jobs_wall_seconds(tmp_path):
    path = _results(
        tmp_path / "results.json",
        [
            {"name": "a", "status": "ok", "wall_seconds": 12.5},
            {"name": "b", "status": "FAILED", "wall_seconds": 90.0},  # a failed run says nothing of its length
            {"name": "c", "status": "TIMEOUT", "wall_seconds": 600.0},
            {"name": "d", "ok": True, "wall_seconds": 3},  # an entry without status: its ok flag
            {"name": "e", "status": "ok", "wall_seconds": 0.0},
            {"name": "f", "status": "ok", "wall_seconds": True},
            {"name": "g", "status": "ok", "wall_seconds": "7"},
            {"name": 5, "status": "ok", "wall_seconds": 7.0},
            {"name": "h", "status": "ok"},
            "not an entry",
        ],
    )
    assert earlier_seconds(path) == {"a": 12.5, "d": 3.0}


@pytest.mark.parametrize("content", ["", "{", '{"a": 1}', "null", "[1, 2]"])
def test_an_unreadable_or_odd_results_file_gives_no_times(tmp_path, content):
    (tmp_path / "results.json").write_text(content)
    assert earlier_seconds(tmp_path / "results.json") == {}


def test_no_results_file_gives_no_times(tmp_path):
    assert earlier_seconds(tmp_path / "missing.json") == {}
    assert earlier_seconds(None) == {}
    (tmp_path / "folder").mkdir()
    assert earlier_seconds(tmp_path / "folder") == {}


def test_untimed_jobs_start_first_then_the_longest():
    known = {"a": 10.0, "c": 40.0, "d": 10.0, "e": 35.0}
    assert start_order(["a", "b", "c", "d", "e", "f"], known, 3) == ["b", "f", "c", "e", "a", "d"]


def test_one_at_a_time_or_nothing_known_keeps_file_order():
    assert start_order(["a", "b", "c"], {"c": 40.0}, 1) == ["a", "b", "c"]
    assert start_order(["a", "b", "c"], {}, 4) == ["a", "b", "c"]
    assert start_order([], {"a": 1.0}, 2) == []


class _Events(simulate.SimulateEvents):
    def __init__(self):
        self.seen: list = []

    def order_chosen(self, order, source):
        self.seen.append(("order", order, source))

    def job_started(self, name, info, timeout):
        self.seen.append(("started", name))


@pytest.mark.parametrize("parallel", [1, 2])
def test_simulate_starts_the_longest_first_and_keeps_file_order_in_its_results(tmp_path, monkeypatch, parallel):
    """``simulate_all`` with each job's run replaced (no NVFlare): the start order comes from the
    results file it is about to replace; the results and the new file keep ``jobs.yaml`` order."""
    from generator.pipeline import generate

    (tmp_path / "client_scripts").mkdir()
    shutil.copy(ROOT / "client_scripts/train_full.py", tmp_path / "client_scripts")
    jobs = "".join(f"  - name: {n}\n    script: train_full.py\n" for n in "abcd")
    (tmp_path / "jobs.yaml").write_text("jobs:\n" + jobs)
    generate(tmp_path / "jobs.yaml", tmp_path / "out")
    results = _results(
        tmp_path / "results.json",
        [
            {"name": "a", "status": "ok", "wall_seconds": 5.0},
            {"name": "b", "status": "ok", "wall_seconds": 30.0},
            {"name": "d", "status": "ok", "wall_seconds": 20.0},
        ],
    )

    def one(out, workspace, name, info, reports, timeout, events):
        events.job_started(name, info, 1.0)
        time.sleep(0.3 if parallel > 1 else 0)  # the next job is taken once one of the first two ended
        return simulate.JobResult(name=name, rounds=1, status="ok", wall_seconds=float(ord(name)))

    monkeypatch.setattr(simulate, "_simulate_one", one)
    events = _Events()
    got = simulate.simulate_all(tmp_path / "out", tmp_path / "ws", None, results, None, None, events, parallel)

    started = [e[1] for e in events.seen if e[0] == "started"]
    if parallel == 1:  # one at a time: the order would change nothing but what runs when
        assert started == ["a", "b", "c", "d"] and events.seen[0][0] == "started"
    else:  # c has no time: it may be the longest; then b 30 s, d 20 s, a 5 s
        assert events.seen[0] == ("order", ["c", "b", "d", "a"], results)
        assert {*started[:2]} == {"c", "b"} and {*started[2:]} == {"d", "a"}  # two threads: either may say it first
    assert [r.name for r in got] == ["a", "b", "c", "d"]
    written = json.loads(Path(results).read_text())
    assert [(r["name"], r["wall_seconds"]) for r in written] == [("a", 97.0), ("b", 98.0), ("c", 99.0), ("d", 100.0)]


def test_jobs_the_results_file_does_not_time_take_their_times_from_the_other_commands_results(tmp_path):
    """A trial: `make poc` of all jobs after a `poc` of three started the job known (to `simulate`)
    to be longest 13th of 14, as untimed, and it ended last, alone. The other commands' results
    files beside it time the rest; a job timed nowhere still starts first."""
    build = tmp_path / "build"
    build.mkdir()
    poc = _results(build / "poc-results.json", [{"name": "a", "status": "ok", "wall_seconds": 10.0}])
    _results(
        build / "results.json",
        [
            {"name": "a", "status": "ok", "wall_seconds": 99.0},  # poc's own time wins
            {"name": "b", "status": "ok", "wall_seconds": 40.0},
            {"name": "c", "status": "ok", "wall_seconds": 5.0},
        ],
    )
    _results(build / "submit-results.json", [{"name": "c", "status": "ok", "wall_seconds": 50.0}])  # results.json first
    (build / "other-results.json").write_text(json.dumps([{"name": "d", "status": "ok", "wall_seconds": 80.0}]))
    events = _Events()

    order = chosen_order(["a", "b", "c", "d"], poc, 2, events)

    assert order == ["d", "b", "a", "c"]  # d: timed nowhere we look
    assert events.seen == [
        ("order", order, f"{poc} and, for the jobs it does not time, {build / 'results.json'}"),
    ]
    assert chosen_order(["a", "b", "c", "d"], poc, 1, events) == ["a", "b", "c", "d"]  # one at a time: file order
    first = _Events()  # a first `poc` after `make run`: its own file does not exist yet
    (build / "poc-results.json").unlink()
    assert chosen_order(["b", "a"], poc, 2, first) == ["a", "b"]  # a 99 s, b 40 s in results.json
    assert first.seen == [("order", ["a", "b"], str(build / "results.json"))]
    alone = _Events()
    assert chosen_order(["b", "c"], build / "results.json", 2, alone) == ["b", "c"]
    assert alone.seen == []  # its own file times both, in file order already
