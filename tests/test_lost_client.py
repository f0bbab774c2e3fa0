"""A client NVFlare's simulator stops running mid-run: found in the server's records, the run stopped at
once, and the job run again only when no code of the job ran at that client.

NVFlare 2.9's simulator picks a free port for each client's worker, starts the worker, and connects
to it once the worker listens; another simulator's process that took the port in between answers
instead and resets the connection. The simulator logs "Communication error with client site-1:
[Errno 104] Connection reset by peer" and never runs site-1 again, so the server waits for it until
the job's timeout (seen in CI about once in 300 job runs with several simulators at once). The
records below are copied from such a run. The simulate tests here run a stand-in for ``nvflare``
that writes those records (the race cannot be caused on purpose); the real simulator is run by
``test_simulate_runs.py`` on a client whose worker process dies mid-run.
"""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from generator import simulate
from generator.judge import (
    SIMULATOR_CLIENT_RUNNER,
    WORKER_CELL,
    WORKER_FAILED,
    LostClient,
    LostClientWatch,
    worker_connected,
)
from generator.layout import ManifestEntry
from generator.lines import installed_line

RESET = "Communication error with client site-1: [Errno 104] Connection reset by peer"


def record(message: str, full_name: str = SIMULATOR_CLIENT_RUNNER, level: str = "ERROR", name: str = "") -> str:
    """One ``log.json`` line as NVFlare's ``JsonFormatter`` writes it."""
    fields = {
        "asctime": "2026-12-01 11:35:09,182",
        "name": name or full_name.rsplit(".", 1)[-1],
        "fullName": full_name,
        "levelname": level,
        "fl_ctx": "",
        "message": message,
    }
    return json.dumps(fields) + "\n"


WORKER_STARTED = record("ClientTaskWorker started to run", "__main__.ClientTaskWorker", "INFO")
#: The records a simulator worker writes when its listener cannot bind the port the simulator chose
#: (seen on NVFlare 2.9 under ``simulate --parallel``; reproduced by running NVFlare's
#: ``simulator_worker`` with ``--port`` of a bound socket): MPM's message, then its traceback.
BIND = "Execute exception: OSError: [Errno 98] Address already in use"
WORKER_BIND_FAILED = record(BIND, WORKER_FAILED[0], name="MPM") + record(
    "Traceback (most recent call last):\n"
    '  File ".../nvflare/private/fed/app/simulator/simulator_worker.py", line 228, in _create_connection\n'
    "    listener = Listener(address)\n"
    "OSError: [Errno 98] Address already in use",
    WORKER_FAILED[0],
    name="MPM",
)


def test_the_watch_finds_each_message_of_a_lost_client_once(tmp_path):
    log = tmp_path / "server" / "log.json"
    log.parent.mkdir()
    watch = LostClientWatch(tmp_path)
    assert watch.poll() == []  # no log yet
    log.write_text(
        record("Round 0 started.", "nvflare.app_common.workflows.fedavg.FedAvg", "INFO")
        + record(RESET, level="INFO")  # not an error
        + record(RESET, full_name="custom.train.Logger")  # not NVFlare's simulator
        + record(RESET)
    )
    assert watch.poll() == [LostClient("site-1", RESET)]
    assert watch.poll() == []  # read once
    with log.open("a") as f:
        f.write(record("Subprocess died for client site-2 before send, exit code: -9"))
        f.write(record("run_client_thread error: Failed to create connection to the child process"))
        f.write(record("Simulate Run client: site-1 on GPU group: None", level="INFO"))
    assert watch.poll() == [
        LostClient("site-2", "Subprocess died for client site-2 before send, exit code: -9"),
        LostClient(None, "run_client_thread error: Failed to create connection to the child process"),
    ]


def test_the_watch_finds_a_worker_that_ended_before_it_reached_the_simulator(tmp_path):
    for site in ("site-1", "site-2", "site-3"):
        (tmp_path / site).mkdir()
    watch = LostClientWatch(tmp_path, ["site-1", "site-2", "site-3"])
    assert watch.poll() == []
    # site-1 started, then failed: NVFlare's own messages tell of that ("Subprocess died ...")
    (tmp_path / "site-1" / "log.json").write_text(WORKER_STARTED + WORKER_BIND_FAILED)
    (tmp_path / "site-2" / "log.json").write_text(
        record(BIND, WORKER_FAILED[0], level="WARNING", name="MPM")  # not an error
        + record(BIND, "custom.train.Logger")  # not NVFlare's process monitor
    )
    assert watch.poll() == []
    with (tmp_path / "site-2" / "log.json").open("a") as f:
        f.write(WORKER_BIND_FAILED)
    expected = LostClient("site-2", f"site-2's simulator worker ended before it reached the simulator: {BIND}")
    assert watch.poll() == [expected]
    with (tmp_path / "site-2" / "log.json").open("a") as f:
        f.write(WORKER_BIND_FAILED)  # a later worker of the same site (the END_RUN task's) is not read
    assert watch.poll() == []
    assert LostClientWatch(tmp_path).poll() == []  # no sites: only the server's log


def cell(client: str) -> str:
    """The record a simulator worker writes once it knows its client (copied from a run, 2026-12-02)."""
    return record(
        f"{client}.simulate_job: created backbone external connector to tcp://localhost:49315",
        WORKER_CELL[0],
        "INFO",
        name="CoreCell",
    )


def test_the_watch_finds_a_worker_given_another_clients_name(tmp_path):
    for site in ("site-1", "site-2"):
        (tmp_path / site).mkdir()
    watch = LostClientWatch(tmp_path, ["site-1", "site-2"])
    (tmp_path / "site-1" / "log.json").write_text(WORKER_STARTED + cell("site-1"))  # its own name
    (tmp_path / "site-2" / "log.json").write_text(cell("site-1"))  # before it started: not its cell
    assert watch.poll() == []
    with (tmp_path / "site-2" / "log.json").open("a") as f:
        f.write(WORKER_STARTED + record(cell("site-1").strip(), "custom.train.Logger", "INFO"))  # a script's words
    assert watch.poll() == []
    with (tmp_path / "site-2" / "log.json").open("a") as f:
        f.write(cell("site-1"))
    message = (
        "NVFlare's simulator gave site-2's worker the name of client site-1 (its shared build_ctx), "
        "so site-2 would never run"
    )
    assert watch.poll() == [LostClient("site-2", message, before_job=True)]
    with (tmp_path / "site-2" / "log.json").open("a") as f:
        f.write(WORKER_STARTED + cell("site-1"))  # read no more
    assert watch.poll() == []


def test_a_worker_connected_only_when_its_own_record_says_so(tmp_path):
    assert not worker_connected(tmp_path, "site-1")  # no folder, no log: it never started
    site = tmp_path / "site-1"
    site.mkdir()
    (site / "log.json").write_text(record("ClientTaskWorker started to run", "custom.train.Logger", "INFO"))
    assert not worker_connected(tmp_path, "site-1")  # a script's logger saying the same words
    with (site / "log.json").open("a") as f:
        f.write(WORKER_STARTED)
    assert worker_connected(tmp_path, "site-1")


#: A stand-in for ``python -m nvflare.cli simulator -w WS ...``: each run appends a line to
#: ``runs``, then does what the next word of ``plan`` says: ``race`` (site-1 lost before its worker
#: started, then wait as the real simulator does), ``died`` (site-1's worker started, then lost),
#: ``bind`` (site-2's worker ended at once, its port taken, and the simulator, as NVFlare's, does not
#: notice for 60 s), ``swap`` (site-2's worker started as client site-1, and the simulator, as
#: NVFlare's, waits), or ``exit`` (exit 0 at once without writing anything).
FAKE = textwrap.dedent(
    """
    import json, os, sys, time

    here = os.path.dirname(os.path.abspath(__file__))
    ws = sys.argv[sys.argv.index("-w") + 1]
    with open(os.path.join(here, "runs"), "a") as f:
        f.write(ws + "\\n")
    runs = len(open(os.path.join(here, "runs")).read().splitlines())
    step = open(os.path.join(here, "plan")).read().split()[runs - 1]
    print(f"fake simulator run {runs}: {step}", flush=True)
    if step == "exit":
        sys.exit(0)
    if step == "bind":
        os.makedirs(os.path.join(ws, "site-2"), exist_ok=True)
        with open(os.path.join(ws, "site-2", "log.json"), "w") as f:
            f.write(WORKER_BIND_FAILED)
        time.sleep(600)
    if step == "swap":
        os.makedirs(os.path.join(ws, "site-2"), exist_ok=True)
        with open(os.path.join(ws, "site-2", "log.json"), "w") as f:
            f.write(WORKER_STARTED + SITE_1_CELL)
        time.sleep(600)
    os.makedirs(os.path.join(ws, "server"), exist_ok=True)
    if step == "died":
        os.makedirs(os.path.join(ws, "site-1"), exist_ok=True)
        with open(os.path.join(ws, "site-1", "log.json"), "w") as f:
            f.write(WORKER_STARTED)
        message = "Subprocess died for client site-1, exit code: 3"
    else:
        message = RESET
    with open(os.path.join(ws, "server", "log.json"), "w") as f:
        f.write(json.dumps({"fullName": SIMULATOR_CLIENT_RUNNER, "levelname": "ERROR", "message": message}) + "\\n")
    time.sleep(600)
    """
)


class Events(simulate.SimulateEvents):
    def __init__(self):
        self.retried: list[tuple[str, str]] = []

    def job_retried(self, name, reason):
        self.retried.append((name, reason))


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Run ``plan`` (words of :data:`FAKE`) as job ``j``; returns (result, events, runs, workspaces)."""
    bin_dir = tmp_path / "fake"
    bin_dir.mkdir()
    script = bin_dir / "nvflare_fake.py"
    script.write_text(
        f"SIMULATOR_CLIENT_RUNNER = {SIMULATOR_CLIENT_RUNNER!r}\nRESET = {RESET!r}\n"
        f"WORKER_STARTED = {WORKER_STARTED!r}\nWORKER_BIND_FAILED = {WORKER_BIND_FAILED!r}\n"
        f"SITE_1_CELL = {cell('site-1')!r}\n" + FAKE
    )
    monkeypatch.setattr(simulate, "nvflare_command", lambda python=None: [sys.executable, str(script)])

    def run(plan: str):
        (bin_dir / "plan").write_text(plan)
        out, root = tmp_path / "jobs", tmp_path / "workspaces"
        (out / "j").mkdir(parents=True)
        info = ManifestEntry(installed_line(), 2, 1, "in_process", "train.py", timeout=300)
        events = Events()
        result = simulate.simulate_job(out, root, "j", info, events=events)
        runs = (bin_dir / "runs").read_text().splitlines()
        return result, events, runs, root

    return run


def test_a_client_lost_before_its_worker_started_runs_the_job_again(fake):
    result, events, runs, root = fake("race exit")

    assert len(runs) == 2  # run again, once, in the same (emptied) workspace
    assert result.retried and events.retried == [("j", result.retried)]
    assert "lost site-1 before its worker reached the simulator" in result.retried
    assert RESET in result.retried
    first = root / "_logs" / "j.log.1"
    assert f"log: {first}" in result.retried
    assert "fake simulator run 1: race" in first.read_text()  # the first run's log is kept
    assert "fake simulator run 2: exit" in (root / "_logs" / "j.log").read_text()
    # the result is the second run's: it wrote nothing, so it fails its checks (not a TIMEOUT)
    assert result.status == simulate.FAILED
    assert any("server log" in p.message and "was not written" in p.message for p in result.problems)


def test_a_worker_that_could_not_bind_its_port_runs_the_job_again_at_once(fake):
    result, events, runs, root = fake("bind exit")

    assert len(runs) == 2  # not after the simulator's 60 s (its stand-in would wait 600 s)
    assert "lost site-2 before its worker reached the simulator" in result.retried
    assert f"site-2's simulator worker ended before it reached the simulator: {BIND}" in result.retried
    assert "fake simulator run 2: exit" in (root / "_logs" / "j.log").read_text()


def test_a_worker_given_another_clients_name_runs_the_job_again_at_once(fake):
    result, events, runs, root = fake("swap exit")

    assert len(runs) == 2  # not after the job's 300 s timeout (its stand-in would wait 600 s)
    assert result.retried.startswith("NVFlare's simulator gave site-2's worker the name of client site-1 ")
    assert "no code of the job ran there: stopped that run after " in result.retried
    assert "fake simulator run 2: exit" in (root / "_logs" / "j.log").read_text()


@pytest.mark.parametrize(
    "plan, why",
    [("bind bind", BIND), ("swap swap", "the name of client site-1")],
    ids=["port taken", "another client's name"],
)
def test_a_worker_lost_before_the_job_twice_fails_the_job_naming_the_site(fake, plan, why):
    result, events, runs, root = fake(plan)

    assert len(runs) == 2 and len(events.retried) == 1
    assert result.status == simulate.FAILED
    (problem,) = [p.message for p in result.problems]
    assert problem.startswith("NVFlare's simulator stopped running site-2 after ")
    assert why in problem and f"site-2's log: {root / 'j' / 'site-2' / 'log.txt'}" in problem


def test_a_second_lost_client_fails_the_job_at_once(fake):
    result, events, runs, root = fake("race race")

    assert len(runs) == 2 and len(events.retried) == 1  # never a third run
    assert result.status == simulate.FAILED  # stopped at once, not after the job's 300 s timeout
    (problem,) = [p.message for p in result.problems]
    assert problem.startswith("NVFlare's simulator stopped running site-1 after ")
    assert f'("{RESET}")' in problem
    assert "until the timeout (300 s)" in problem
    assert f"log: {root / '_logs' / 'j.log'}" in problem


def test_a_client_whose_worker_had_started_is_not_run_again(fake):
    result, events, runs, root = fake("died")

    assert len(runs) == 1 and events.retried == [] and result.retried is None
    assert result.status == simulate.FAILED
    (problem,) = [p.message for p in result.problems]
    assert '("Subprocess died for client site-1, exit code: 3")' in problem
    assert f"site-1's log: {root / 'j' / 'site-1' / 'log.txt'}" in problem
    assert not (root / "_logs" / "j.log.1").exists()


def test_an_earlier_first_run_log_is_removed(fake, tmp_path):
    logs = tmp_path / "workspaces" / "_logs"
    logs.mkdir(parents=True)
    (tmp_path / "workspaces" / simulate.WORKSPACE_MARKER).write_text("")
    (logs / "j.log.1").write_text("an earlier simulate's first run\n")
    result, events, runs, root = fake("died")
    assert not (logs / "j.log.1").exists()  # it would describe another simulate than this one's
