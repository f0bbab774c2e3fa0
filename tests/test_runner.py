"""The runner on small Python process trees (no NVFlare): log capture, timeouts, signals, leftovers.

Every process of a test tree writes its pid to a file as it starts; after the run each of those
pids must be gone (or a zombie: ended, waiting for its parent to collect it). The trees are shaped
like NVFlare's simulator: a child in the same session, a child in its own session
(``os.setsid``, as the simulator starts its client workers) with a grandchild in yet another one
(``start_new_session``, as a sub-process trainer is started), a process whose parent exited
before anyone could see it, and one that ignores SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from conftest import ROOT

from generator.runner import (
    Interrupted,
    RunOutcome,
    StopRun,
    check_interrupted,
    interrupt_on_signals,
    mark_run,
    processes_of,
    run_process,
    stop_earlier_run,
    stop_signal,
)

in_main_thread = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signal handlers need the main thread"
)

TREE = r"""
import os, signal, subprocess, sys, time

pid_dir, role = sys.argv[1], sys.argv[2]


def note(name):
    with open(os.path.join(pid_dir, name + ".tmp"), "w") as f:
        f.write(str(os.getpid()))
    os.replace(os.path.join(pid_dir, name + ".tmp"), os.path.join(pid_dir, name))


def spawn(role, **kw):
    return subprocess.Popen([sys.executable, __file__, pid_dir, role], **kw)


def wait_for(count):
    while len([n for n in os.listdir(pid_dir) if not n.endswith(".tmp")]) < count:
        time.sleep(0.02)


if role == "root":            # a tree like the simulator's: 4 processes, 3 sessions
    note("root")
    spawn("child")
    spawn("session", start_new_session=True)
    wait_for(4)
    print("ready", flush=True)
    time.sleep(600)
elif role == "child":
    note("child")
    time.sleep(600)
elif role == "session":
    note("session")
    spawn("grandchild", start_new_session=True)
    time.sleep(600)
elif role == "grandchild":
    note("grandchild")
    time.sleep(600)
elif role == "leaves-orphan":  # exits 0 at once, leaving a daemon whose parent is gone too
    note("root")
    spawn("middle", start_new_session=True).wait()
    wait_for(2)
    print("ready", flush=True)
elif role == "middle":         # the classic double fork: start the daemon, exit
    spawn("daemon", start_new_session=True)
elif role == "daemon":
    note("daemon")
    time.sleep(600)
elif role == "stubborn-root":
    note("root")
    spawn("stubborn")
    wait_for(2)
    print("ready", flush=True)
    time.sleep(600)
elif role == "stubborn":       # ignores SIGTERM: only SIGKILL ends it
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    note("stubborn")
    time.sleep(600)
"""


@pytest.fixture
def tree(tmp_path) -> tuple[Path, Path]:
    """The tree script and an empty folder for its pid files."""
    script = tmp_path / "tree.py"
    script.write_text(TREE)
    pids = tmp_path / "pids"
    pids.mkdir()
    return script, pids


def pids_of(folder: Path) -> dict[str, int]:
    return {p.name: int(p.read_text()) for p in folder.iterdir() if not p.name.endswith(".tmp")}


def running(pid: int) -> bool:
    """The pid is a live process (a zombie has ended: it only waits to be collected)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def assert_all_gone(pids: dict[str, int]) -> None:
    deadline = time.monotonic() + 5  # init may take a moment to collect re-parented processes
    while time.monotonic() < deadline and any(running(pid) for pid in pids.values()):
        time.sleep(0.05)
    assert {name: pid for name, pid in pids.items() if running(pid)} == {}


def run(script: Path, pids: Path, role: str, tmp_path: Path, on_line=None, **kw) -> tuple[RunOutcome, list[str]]:
    """Run the tree's ``role``; its outcome and console lines (each also given to ``on_line``)."""
    lines: list[str] = []

    def take(line: str) -> None:
        lines.append(line)
        if on_line:
            on_line(line)

    outcome = run_process(
        [sys.executable, str(script), str(pids), role],
        cwd=tmp_path,
        env=None,
        log_path=tmp_path / "logs" / "run.log",
        on_line=take,
        **kw,
    )
    return outcome, lines


def test_log_capture_exit_code_and_lines(tmp_path):
    code = "import sys\nprint('one')\nprint('two', file=sys.stderr)\nprint('caf\\u00e9')\nsys.exit(3)\n"
    lines: list[str] = []
    ticks: list[float] = []
    outcome = run_process(
        [sys.executable, "-c", code.replace("sys.exit(3)", "import time; time.sleep(1.2); sys.exit(3)")],
        cwd=tmp_path,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        log_path=tmp_path / "sub" / "console.log",
        on_line=lines.append,
        on_tick=lambda: ticks.append(time.monotonic()),
    )
    assert outcome.returncode == 3
    assert (outcome.timed_out, outcome.interrupted, outcome.stopped) == (False, None, 0)
    assert sorted(lines) == sorted(["one", "two", "café"])
    assert sorted((tmp_path / "sub/console.log").read_text(encoding="utf-8").splitlines()) == sorted(lines)
    assert len(ticks) >= 1  # about every 0.5 s while it ran (1.2 s)


@pytest.mark.slow  # waits out a real timeout (seconds) while the tree starts
def test_timeout_stops_every_process_including_other_sessions(tree, tmp_path):
    script, pids = tree
    outcome, lines = run(script, pids, "root", tmp_path, timeout=8, grace=2)

    assert "ready" in lines
    assert outcome.timed_out and outcome.interrupted is None
    assert outcome.returncode == -signal.SIGTERM
    found = pids_of(pids)
    assert sorted(found) == ["child", "grandchild", "root", "session"]
    assert_all_gone(found)
    assert outcome.stopped == 4


def test_a_process_left_behind_by_a_finished_command_is_stopped(tree, tmp_path):
    """The command exits 0 but leaves a daemon (double fork: its parent is gone before we look)."""
    script, pids = tree
    outcome, lines = run(script, pids, "leaves-orphan", tmp_path, timeout=60, grace=2)

    assert lines == ["ready"]
    assert (outcome.returncode, outcome.timed_out, outcome.interrupted) == (0, False, None)
    found = pids_of(pids)
    assert sorted(found) == ["daemon", "root"]
    assert_all_gone(found)
    assert outcome.stopped == 1


@pytest.mark.slow  # waits out a real timeout (seconds) while the tree starts
def test_a_process_ignoring_sigterm_is_killed_after_the_grace(tree, tmp_path):
    script, pids = tree
    started = time.monotonic()
    outcome, _ = run(script, pids, "stubborn-root", tmp_path, timeout=6, grace=1)

    assert outcome.timed_out
    found = pids_of(pids)
    assert sorted(found) == ["root", "stubborn"]
    assert_all_gone(found)
    assert time.monotonic() - started < 60  # bounded: not a speed check, a hang check


def test_an_exception_in_a_callback_stops_the_run_and_propagates(tree, tmp_path):
    script, pids = tree

    def on_line(line):
        if line == "ready":
            raise RuntimeError("parser failed")

    with pytest.raises(RuntimeError, match="parser failed"):
        run_process(
            [sys.executable, str(script), str(pids), "root"],
            cwd=tmp_path,
            env=None,
            log_path=tmp_path / "run.log",
            timeout=60,
            on_line=on_line,
            grace=2,
        )
    assert_all_gone(pids_of(pids))


@pytest.mark.parametrize("callback", ["on_line", "on_tick"])
def test_a_callback_raising_stop_run_stops_the_whole_run_and_says_why(tree, tmp_path, callback):
    script, pids = tree
    seen: list[str] = []

    def on_line(line):
        seen.append(line)
        if callback == "on_line" and line == "ready":
            raise StopRun("site-1 lost")

    def on_tick():
        if callback == "on_tick" and "ready" in seen:
            raise StopRun("site-1 lost")

    outcome, _ = run(script, pids, "root", tmp_path, on_line=on_line, timeout=120, on_tick=on_tick, grace=2)
    assert outcome.stopped_for == "site-1 lost"
    assert not outcome.timed_out and outcome.interrupted is None
    assert outcome.stopped == 4  # the whole simulator-like tree was running, and was stopped
    assert_all_gone(pids_of(pids))


DRIVER = """
import json, sys
from generator.runner import interrupt_on_signals, run_process

script, pids, log = sys.argv[1:4]
with interrupt_on_signals() as received:
    outcome = run_process([sys.executable, script, pids, sys.argv[4]], cwd=None, env=None, log_path=log,
                          on_line=lambda line: print(line, flush=True), timeout=120, grace=1)
print(json.dumps({**outcome.__dict__, "received": received}), flush=True)
"""


@pytest.mark.slow  # a driver interpreter per signal, stopped from outside
@pytest.mark.parametrize(
    "signals, role",
    [
        ([signal.SIGTERM], "root"),
        ([signal.SIGHUP], "root"),
        ([signal.SIGINT], "root"),  # what Ctrl-C sends (to the foreground process group)
        ([signal.SIGTERM, signal.SIGTERM, signal.SIGINT], "stubborn-root"),  # impatient: the stop still ends
    ],
    ids=["SIGTERM", "SIGHUP", "SIGINT", "repeated"],
)
def test_a_stop_signal_to_the_caller_stops_the_whole_run(tree, tmp_path, signals, role):
    script, pids = tree
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    proc = subprocess.Popen(
        [sys.executable, str(driver), str(script), str(pids), str(tmp_path / "run.log"), role],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        for sig in signals:
            proc.send_signal(sig)
            time.sleep(0.1)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    result = json.loads(out.strip().splitlines()[-1])
    assert result["interrupted"] == signal.Signals(signals[0]).name
    assert result["received"][0] == signals[0]
    assert not result["timed_out"]
    assert_all_gone(pids_of(pids))


@in_main_thread
def test_a_stop_signal_is_recorded_and_raised_only_where_the_code_looks():
    with interrupt_on_signals((signal.SIGUSR1,)) as received:
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)  # the handler ran meanwhile, and raised nothing
        assert received == [signal.SIGUSR1] and stop_signal() == signal.SIGUSR1
        with pytest.raises(Interrupted, match="SIGUSR1"):
            check_interrupted()
    assert stop_signal() is None  # the block is over
    check_interrupted()


@in_main_thread
def test_signals_landing_inside_queue_and_thread_waits_leave_them_working():
    """CI once saw ``RuntimeError: release unlocked lock``: the handler raised inside ``queue.get``.
    Here signals land at random moments in queue and thread-start waits, 300 times; the old
    raising handler fails on this within a few (its exception escapes ``Thread.start``)."""
    lines: queue.Queue = queue.Queue()
    for _ in range(300):
        with interrupt_on_signals((signal.SIGUSR1,)):
            sender = threading.Timer(random.uniform(0, 0.003), os.kill, (os.getpid(), signal.SIGUSR1))
            sender.start()
            with pytest.raises(Interrupted):
                while True:
                    with contextlib.suppress(queue.Empty):
                        lines.get(timeout=0.0002)
                    check_interrupted()
            sender.join()
    lines.put("still works")
    assert lines.get(timeout=1) == "still works"


def test_a_signal_recorded_before_a_run_in_any_thread_stops_it_at_once(tree, tmp_path, monkeypatch):
    """A worker thread of ``simulate --parallel`` learns of the main thread's signal from its run."""
    script, pids = tree
    monkeypatch.setattr("generator.runner._ACTIVE", [[signal.SIGINT]])
    box = []
    worker = threading.Thread(target=lambda: box.append(run(script, pids, "root", tmp_path, timeout=60, grace=1)))
    worker.start()
    worker.join(30)  # well before the run's timeout
    outcome, _ = box[0]
    assert outcome.interrupted == "SIGINT" and not outcome.timed_out
    assert_all_gone(pids_of(pids))


@in_main_thread
def test_nested_blocks_each_leave_with_their_own_list():
    with interrupt_on_signals((signal.SIGUSR1,)) as outer:
        with interrupt_on_signals((signal.SIGUSR1,)):
            pass  # both lists empty (equal) when this one ends
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)
        assert outer == [signal.SIGUSR1] and stop_signal() == signal.SIGUSR1
    assert stop_signal() is None


def test_only_the_processes_a_run_marked_are_what_it_left_behind(tmp_path):
    """A killed run's processes carry its folder in their environment (``mark_run``) and are stopped by
    the next run there; a user's process working in the folder (a shell cd'ed into it, ``tail -f``
    of a log) or naming it (``timeout 600 python -m generator poc --workspace DIR``) is left alone."""
    folder, other = tmp_path / "ws", tmp_path / "other"
    (folder / "job").mkdir(parents=True)
    other.mkdir()
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    left = subprocess.Popen(sleep, env=mark_run(dict(os.environ), folder), cwd=tmp_path)
    elsewhere = subprocess.Popen(sleep, env=mark_run(dict(os.environ), other))
    working_there = subprocess.Popen(sleep, cwd=folder / "job")
    naming_it = subprocess.Popen([*sleep, "--workspace", str(folder)])
    procs = [left, elsewhere, working_there, naming_it]
    try:
        assert [p.pid for p in processes_of(folder)] == [left.pid]
        assert [p.pid for p in processes_of(Path(os.path.relpath(folder)))] == [left.pid]  # same folder
        (tmp_path / "link").symlink_to(folder)
        assert [p.pid for p in processes_of(tmp_path / "link")] == [left.pid]  # and through a link
        assert stop_earlier_run(folder) == [left.pid]
        left.wait(timeout=5)  # it ended (stop_processes collected it: its exit code is not kept)
        assert [p.poll() for p in procs[1:]] == [None, None, None]
        assert stop_earlier_run(folder) == []
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


ATTACHED = r"""
import sys
from generator.runner import run_attached

code, stopped_by = run_attached([sys.executable, sys.argv[1], sys.argv[2], "root"], grace=1.0)
print("ended", code, stopped_by, flush=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_viewer_run_attached_is_stopped_with_its_whole_tree_when_only_we_get_the_signal(tree, tmp_path, signum):
    """``view`` keeps its viewer in this terminal; a stop signal sent to the generator alone (not to
    the terminal's group) must still end every process of the viewer (``mlflow ui`` and workers)."""
    script, pids = tree
    driver = tmp_path / "driver.py"
    driver.write_text(ATTACHED)
    proc = subprocess.Popen(
        [sys.executable, str(driver), str(script), str(pids)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the signal below reaches the driver only, never its tree
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        started = pids_of(pids)
        assert len(started) == 4
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert out.split()[:1] == ["ended"] and out.split()[2] == signal.Signals(signum).name
    assert_all_gone(started)


def test_a_viewer_run_attached_that_ends_by_itself_gives_its_exit_code():
    from generator.runner import run_attached

    assert run_attached([sys.executable, "-c", "raise SystemExit(3)"]) == (3, None)
