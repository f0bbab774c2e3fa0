"""The reporter (what every command prints) and simulate's parallel scheduling, without NVFlare runs.

The reporter gets the events ``simulate`` emits and prints today's lines; lines written from many
threads at once come out whole. ``simulate --parallel``'s scheduler (``_run_parallel``) is run
with a stand-in for one job's simulation: it keeps at most N jobs running, returns results in
file order, and starts no job once a stop signal was received.
"""

from __future__ import annotations

import io
import threading
import time
import types

import pytest

from generator import simulate
from generator.layout import ManifestEntry
from generator.reporter import Reporter, table
from generator.runner import RunOutcome
from generator.simulate import JobResult, job_problem


def streams() -> tuple[Reporter, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    return Reporter(out, err), out, err


def test_simulate_events_print_the_progress_lines():
    reporter, out, err = streams()
    reporter.job_started(
        "np-a",
        ManifestEntry(nvflare_version="2.9", num_clients=2, num_rounds=5, execution_mode="in_process", script="t.py"),
        420.0,
    )
    reporter.round_started("np-a", 3, 5, 12.345)
    reporter.leftovers_stopped("np-a", 2)
    assert out.getvalue().splitlines() == [
        "np-a: simulating 2 clients, 5 rounds (timeout 420 s)",
        "  np-a: round 3 of 5 (12.3 s)",
        "  np-a: stopped 2 process(es) the simulator left running",
    ]
    assert err.getvalue() == ""


def test_a_finished_job_prints_status_problems_store_and_plot():
    reporter, out, err = streams()
    result = JobResult(name="np-m", status="FAILED", wall_seconds=31.04, log="ws/_logs/np-m.log", receiver="mlflow")
    result.problems = [job_problem("np-m", "site-1 stored 3 'loss' points, expected 4"), job_problem("np-m", "x\ny")]
    result.store, result.report = "sqlite:///ws/np-m/server/simulate_job/mlflow.db", "build/reports/np-m.png"
    reporter.job_finished(result)
    assert out.getvalue().splitlines() == [
        "np-m: FAILED in 31.0 s; log: ws/_logs/np-m.log",
        "np-m: metrics store (mlflow): sqlite:///ws/np-m/server/simulate_job/mlflow.db",
        "np-m: metrics plot: build/reports/np-m.png",
    ]
    # one line per problem, whatever the message holds
    assert err.getvalue().splitlines() == ["np-m: site-1 stored 3 'loss' points, expected 4", "np-m: x\\x0ay"]


def test_a_job_that_never_started_says_so():
    reporter, out, _ = streams()
    reporter.job_finished(JobResult(name="j", status="FAILED"))
    assert out.getvalue() == "j: FAILED, not started; log: none\n"
    # its row has no wall time rather than 0.0 s (a poc job refused before it was submitted)
    ran = JobResult(name="k", status="ok", rounds=1, rounds_started=1, wall_seconds=12.34, log="k.log")
    assert [line.split()[:4] for line in table([JobResult(name="j", status="FAILED", rounds=2), ran])[1:]] == [
        ["j", "FAILED", "0/2", "-"],
        ["k", "ok", "1/1", "12.3"],
    ]


def test_an_interrupted_job_prints_its_log_once(tmp_path):
    reporter, out, err = streams()
    log = tmp_path / "_logs" / "stuck.log"
    result = JobResult(name="stuck", rounds=1, status="ok", wall_seconds=3.0, log=str(log))
    tracker = types.SimpleNamespace(poll=lambda: None, rounds_started=1)
    info = ManifestEntry(nvflare_version="2.9", num_clients=2, num_rounds=1, execution_mode="in_process", script="t.py")
    outcome = RunOutcome(returncode=-15, interrupted="SIGTERM", seconds=2.5, stopped=3)
    simulate._stopped(result, info, outcome, tracker, tmp_path / "stuck", log, None)
    reporter.job_finished(result)
    assert out.getvalue().splitlines() == [f"stuck: INTERRUPTED in 3.0 s; log: {log}"]
    assert err.getvalue().splitlines() == [
        "stuck: interrupted by SIGTERM after 2.5 s: stopped the simulator and every process it started (3)"
    ]


def test_the_table_keeps_the_order_given_and_pads_columns():
    done = JobResult(name="long-job-name", ok=True, status="ok", rounds=2, rounds_started=2, wall_seconds=9.96)
    done.final_model = [[2.0, 3.0], [4.5, 5.0]]
    done.metric_points = {"site-2": {"loss": 2}, "site-1": {"loss": 2, "acc": 2}}
    cut = JobResult(name="b", status="INTERRUPTED", rounds=5, rounds_started=1, wall_seconds=3.0)
    cut.last_model, cut.model_round = [[1.0]], 1
    cut.log, cut.problems = "ws/_logs/b.log", [job_problem("b", "interrupted by SIGINT")]
    failed = JobResult(name="c", status="FAILED", rounds=5, log="ws/_logs/c.log")
    failed.problems = [job_problem("c", "nvflare simulator exited with code 2"), job_problem("c", "server: boom")]
    reporter, out, _ = streams()
    reporter.all_finished([done, cut, failed])
    assert out.getvalue().splitlines() == [
        "",
        "job            status       rounds  wall s  final model" + " " * 28 + "metric points per site",
        "long-job-name  ok           2/2     10.0    [[2 3], [4.5 5]]"
        + " " * 23
        + "site-1: acc=2, loss=2; site-2: loss=2",
        "b              INTERRUPTED  1/5     3.0     not final (after round 1 of 5): [[1]]  -",
        "c              FAILED       0/5     0.0     -" + " " * 38 + "-",
        # of several jobs, why each one that failed did, grouped under the table (not one the user stopped)
        "",
        "FAILED c; log: ws/_logs/c.log",
        "  nvflare simulator exited with code 2",
        "  server: boom",
    ]
    reporter, out, _ = streams()
    reporter.all_finished([failed])  # one job: its problems are right above the table
    assert out.getvalue().splitlines()[-1].startswith("c  ")
    assert table([]) == ["job  status  rounds  wall s  final model  metric points per site"]


def test_lines_from_many_threads_come_out_whole():
    reporter, out, _ = streams()
    long = "x" * 5000

    def job(i: int) -> None:
        for n in range(50):
            reporter.round_started(f"job-{i}-{long}", n, 50, 0.0)
            reporter.job_finished(JobResult(name=f"job-{i}", status="ok", log=long))

    threads = [threading.Thread(target=job, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = out.getvalue().splitlines()
    assert len(lines) == 8 * 50 * 2
    expected = {f"  job-{i}-{long}: round {n} of 50 (0.0 s)" for i in range(8) for n in range(50)}
    expected |= {f"job-{i}: ok in 0.0 s; log: {long}" for i in range(8)}
    assert set(lines) == expected


def test_the_reporter_follows_a_replaced_stdout(capsys):
    Reporter().validated("jobs.yaml", ["a", "b"])
    Reporter().line("oops", err=True)
    assert capsys.readouterr() == ("jobs.yaml: 2 job(s) valid: a, b\n", "oops\n")


def fake_jobs(monkeypatch, seconds: dict[str, float]) -> dict:
    """Replace one job's simulation with a sleep; record how many ran at once."""
    state = {"running": 0, "most": 0, "started": []}
    lock = threading.Lock()

    def fake_one(out, workspace, name, info, reports, timeout, events):
        with lock:
            state["running"] += 1
            state["most"] = max(state["most"], state["running"])
            state["started"].append(name)
        time.sleep(seconds[name])
        with lock:
            state["running"] -= 1
        return JobResult(name=name, ok=True, status="ok")

    monkeypatch.setattr(simulate, "_simulate_one", fake_one)
    return state


@pytest.mark.parametrize("parallel", [2, 3])
def test_parallel_runs_at_most_n_jobs_and_keeps_file_order(monkeypatch, parallel):
    seconds = {"a": 0.6, "b": 0.1, "c": 0.3, "d": 0.1, "e": 0.2}
    state = fake_jobs(monkeypatch, seconds)
    manifest = {name: {} for name in seconds}
    results = simulate._run_parallel("out", "ws", manifest, list(seconds), None, None, None, [], parallel)
    assert [r.name for r in results] == list(seconds)
    assert state["most"] == parallel


def test_parallel_starts_no_job_after_a_stop_signal(monkeypatch):
    seconds = {"a": 0.3, "b": 0.3, "c": 0.3, "d": 0.3}
    state = fake_jobs(monkeypatch, seconds)
    received: list[int] = []
    timer = threading.Timer(0.1, lambda: received.append(2))  # as interrupt_on_signals records SIGINT
    timer.start()
    results = simulate._run_parallel(
        "out", "ws", {n: {} for n in seconds}, list(seconds), None, None, None, received, 2
    )
    timer.join()
    assert state["started"] == ["a", "b"]
    assert [r.name for r in results] == ["a", "b"]


def test_only_the_reporter_writes_to_stdout_or_stderr():
    """No other module of the package calls ``print`` or names ``sys.stdout`` / ``sys.stderr``."""
    import ast
    from pathlib import Path

    import generator

    found = []
    for path in sorted(Path(generator.__file__).parent.glob("*.py")):
        if path.name == "reporter.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                found.append(f"{path.name}:{node.lineno}: print")
            if isinstance(node, ast.Attribute) and node.attr in ("stdout", "stderr"):
                if isinstance(node.value, ast.Name) and node.value.id == "sys":
                    found.append(f"{path.name}:{node.lineno}: sys.{node.attr}")
    assert found == []


def test_a_run_stopped_before_its_first_job_prints_no_table_and_says_nothing_was_written(capsys):
    from generator.simulate import RunInterrupted

    Reporter().all_finished([])
    assert capsys.readouterr().out == ""
    (problem,) = RunInterrupted("SIGINT", "build/poc-results.json", 0, "poc").problems
    assert str(problem) == "poc: interrupted by SIGINT before any job ran; no results written"
    (problem,) = RunInterrupted("SIGTERM", "build/results.json", 2).problems
    assert str(problem) == "simulate: interrupted by SIGTERM; the results of 2 job(s) are in build/results.json"


def test_a_console_whose_reader_went_away_is_dropped_and_the_command_goes_on(tmp_path):
    """``python -m generator poc | head -1``: the rest of the run's lines go nowhere, no
    BrokenPipeError cuts the run short (seen: a POC run that then never exited), none at exit either."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    read, write = os.pipe()
    os.close(read)  # `head -1` has read its line and exited
    with os.fdopen(write, "w") as stream:
        reporter = Reporter(stdout=stream)
        reporter.line("first")
        reporter.lines(["second", "third"])
        reporter.flush()
        assert os.path.samestat(os.fstat(stream.fileno()), os.stat(os.devnull))

    read, write = os.pipe()
    os.close(read)
    done = subprocess.run(
        [sys.executable, "-m", "generator", "validate"],
        cwd=ROOT,
        stdout=write,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    os.close(write)
    assert (done.returncode, done.stderr) == (0, "")


def test_a_job_that_ran_on_a_remote_system_but_was_not_downloaded_names_its_nvflare_job():
    """``submit`` interrupted: the server ran the job (it is not "not started"); its result stays there."""
    reporter, out, _ = streams()
    reporter.job_finished(JobResult(name="j", status="INTERRUPTED", job_id="f93b1e7b"))
    assert out.getvalue() == "j: INTERRUPTED in 0.0 s; log: not downloaded (NVFlare job f93b1e7b)\n"
