"""Run one command as a process tree and leave no process of it behind.

:func:`run_process` starts a command in its own session, copies its console output line by line
to a log file (and to a callback), and ends in one of four ways: the command exits, its timeout
expires, a signal arrives (SIGINT, SIGTERM or SIGHUP, see :func:`interrupt_on_signals`), or a
callback raises. In every case, before it returns, every process of the run is stopped: the
command, its children, and their children, also those that started their own session or process
group (NVFlare's simulator starts each client worker with ``preexec_fn=os.setsid``,
``simulator_runner.py:767``, and each sub-process trainer with ``start_new_session=True``,
``external_process_backend.py:488-497``), and those whose parent died first.

How the processes of a run are found (psutil):

- the command's descendants, walked every :data:`TICK` seconds and remembered (a remembered
  process is recognised by pid and start time, so a reused pid is never signalled);
- on Linux, this process is made a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``,
  ``man 2 prctl``) while the command runs: a process of the run whose parent exits is re-parented
  to us instead of to init, so it stays findable however short-lived its parent was. Such adopted
  processes are reaped here (``waitpid``) so none is left a zombie.

Stopping is SIGTERM to all of them at once, then SIGKILL to whatever still runs after a grace
period (:data:`TERM_GRACE`); processes started during the grace period are found and stopped too.

Several runs may go on at once, one per thread (``simulate --parallel``): each run's command is a
session leader, so a child of ours that belongs to another run in progress (its command, or a
process of its session re-parented to us) is left to that run. The subreaper setting is held
while any run is in progress.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

#: Seconds between two walks of the process tree (and two ``on_tick`` calls).
TICK = 0.5
#: Seconds between SIGTERM and SIGKILL when stopping a run. NVFlare's own simulator waits 3 s for
#: its processes to end before it kills them (``simulator_runner.py``, ``shutdown_grace_time=3``).
TERM_GRACE = 3.0
#: The signals that stop a run (as Ctrl-C does): what a terminal, CI cancellation, ``timeout`` and
#: ``kill`` send.
STOP_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)

# prctl options, <linux/prctl.h>.
_PR_SET_CHILD_SUBREAPER, _PR_GET_CHILD_SUBREAPER = 36, 37

#: The commands (pids) of the runs in progress in this process, and the lock that guards them,
#: the subreaper count and starting a command (so no run sees another's command before it is listed).
_RUNS_LOCK = threading.Lock()
_LIVE_ROOTS: set[int] = set()
_SUBREAPER = {"users": 0, "was": 0, "ok": False}


@dataclass
class RunOutcome:
    """How a run ended.

    Attributes:
        returncode (int | None): the command's exit code; negative: killed by that signal
            (``subprocess`` convention); None if it could not be collected.
        timed_out (bool): the timeout expired and the run was stopped.
        interrupted (str | None): the name of the signal that stopped the run (``"SIGTERM"``,
            ``"SIGHUP"``, ``"SIGINT"``), else None.
        seconds (float): wall time from start to the end of the stop, in seconds.
        stopped (int): processes of the run that were still running when it ended (the command
            itself after a timeout or a signal, and whatever it left behind), all stopped here.
        stopped_for (str | None): why a callback ended the run (the message of the
            :class:`StopRun` it raised), else None.
    """

    returncode: int | None
    timed_out: bool = False
    interrupted: str | None = None
    seconds: float = 0.0
    stopped: int = 0
    stopped_for: str | None = None


class StopRun(Exception):
    """Raised by an ``on_line`` or ``on_tick`` callback of :func:`run_process`: the run cannot end
    well, stop it now (like at its timeout). The message says why (``RunOutcome.stopped_for``)."""


class Interrupted(BaseException):
    """A stop signal arrived inside :func:`interrupt_on_signals` (raised where the code looks for one,
    :func:`check_interrupted`, never from the signal handler).

    A ``BaseException``, like ``KeyboardInterrupt``, so that no ``except Exception`` swallows it.

    Args:
        signum (int): the signal number.
    """

    def __init__(self, signum: int):
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(self.name)


#: The signal lists of the :func:`interrupt_on_signals` blocks in progress (outermost first).
_ACTIVE: list[list[int]] = []


@contextlib.contextmanager
def interrupt_on_signals(signums: tuple = STOP_SIGNALS) -> Iterator[list[int]]:
    """Record the stop signals of the block; the code in it stops where it looks (:func:`check_interrupted`).

    The handler only records the signal. It does not raise: a Python signal handler runs in the
    main thread between two of its bytecodes, wherever they are, also inside ``queue.Queue.get``,
    ``threading.Condition.wait`` or ``concurrent.futures.wait``; an exception raised there can
    leave a lock half-released (``RuntimeError: release unlocked lock``, seen once in CI in
    ``run_process``'s ``queue.get``) or held. So every waiting loop looks instead:
    :func:`run_process` every 0.1 s (in any thread), simulate between jobs, poc between two polls
    of its jobs and of its readiness checks. Outside the main thread (where Python cannot install
    signal handlers) nothing is installed; the block's code still sees the main thread's signals.

    Args:
        signums (tuple[int]): the signals (default :data:`STOP_SIGNALS`).

    Yields:
        list[int]: every signal received in the block, in order.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, _frame):
        received.append(signum)

    _ACTIVE.append(received)
    try:
        with _installed({s: handler for s in signums}):
            yield received
    finally:
        _ACTIVE[:] = [r for r in _ACTIVE if r is not received]  # by identity: two empty lists are equal


def stop_signal() -> int | None:
    """The first stop signal an :func:`interrupt_on_signals` block in progress recorded (None: none).

    Safe to call from any thread (it reads lists that only the main thread's handler appends to)."""
    for received in list(_ACTIVE):
        if received:
            return received[0]
    return None


def check_interrupted() -> None:
    """Raise :class:`Interrupted` if a stop signal was recorded (see :func:`interrupt_on_signals`).

    Raises:
        Interrupted: with the first signal recorded.
    """
    signum = stop_signal()
    if signum is not None:
        raise Interrupted(signum)


@contextlib.contextmanager
def deferred_signals() -> Iterator[list[int]]:
    """Hold stop signals for the block: record them instead of acting on them (a stop, or the
    writing of results, must finish).

    A Python handler that was installed before (e.g. :func:`interrupt_on_signals`'s) is still
    called, so it records the signal too, but what it raises is dropped.

    Yields:
        list[int]: the signals received in the block, in order.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def make_handler(previous):
        def handler(signum, frame):
            received.append(signum)
            if callable(previous) and previous is not signal.default_int_handler:
                with contextlib.suppress(Interrupted, KeyboardInterrupt):
                    previous(signum, frame)

        return handler

    with _installed({s: make_handler(signal.getsignal(s)) for s in STOP_SIGNALS}):
        yield received


@contextlib.contextmanager
def _installed(handlers: dict) -> Iterator[None]:
    """Install ``{signum: handler}`` for the block; put the previous handlers back after it."""
    previous = {s: signal.signal(s, h) for s, h in handlers.items()}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


@contextlib.contextmanager
def _subreaper() -> Iterator[bool]:
    """Make this process a child subreaper while any run is in the block (Linux); yields whether it is one."""
    if not sys.platform.startswith("linux"):
        yield False
        return
    import ctypes

    with _RUNS_LOCK:
        if _SUBREAPER["users"] == 0:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                was = ctypes.c_int(0)
                libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(was), 0, 0, 0)
                _SUBREAPER.update(was=was.value, ok=libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
            except (OSError, AttributeError):
                _SUBREAPER.update(was=0, ok=False)
        _SUBREAPER["users"] += 1
        ok = _SUBREAPER["ok"]
    try:
        yield ok
    finally:
        with _RUNS_LOCK:
            _SUBREAPER["users"] -= 1
            if _SUBREAPER["users"] == 0 and _SUBREAPER["ok"] and not _SUBREAPER["was"]:
                ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def _children_of_self() -> set[int]:
    try:
        return {p.pid for p in psutil.Process().children()}
    except psutil.Error:
        return set()


def _session(proc: psutil.Process) -> int | None:
    """The session id of ``proc`` (None: it is gone)."""
    try:
        return os.getsid(proc.pid)
    except OSError:
        return None


def _running(proc: psutil.Process) -> bool:
    """The process exists (same pid and start time) and is not a zombie."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class ProcessTree:
    """The processes of one run: the command's descendants, remembered as they are seen.

    Args:
        root (subprocess.Popen): the command.
        others (set[int]): pids of this process's own children that are not part of the run
            (children it had before the run started); every other child of ours that appears
            while we are a subreaper is a process of the run that lost its parent.
    """

    def __init__(self, root: subprocess.Popen, others: set[int]):
        self.root = root
        self.others = set(others) | {root.pid}
        self.seen: dict[tuple[int, float], psutil.Process] = {}
        self.refresh()

    def _remember(self, proc: psutil.Process) -> None:
        try:
            self.seen.setdefault((proc.pid, proc.create_time()), proc)
        except psutil.Error:
            pass

    def _adopted(self) -> list[psutil.Process]:
        """Children of ours that belong to the run (re-parented to us, the subreaper), not to another
        run in progress (its command, or a process of that command's session)."""
        with _RUNS_LOCK:
            theirs = _LIVE_ROOTS - {self.root.pid}
            try:
                children = psutil.Process().children()
            except psutil.Error:
                return []
        return [p for p in children if p.pid not in self.others and p.pid not in theirs and _session(p) not in theirs]

    def refresh(self) -> None:
        """Walk the tree now and remember every process in it; reap adopted processes that ended."""
        tops = [*self._adopted(), *(p for p in self.seen.values() if _running(p))]
        if self.root.poll() is None:  # not reaped yet, so its pid is still its own
            with contextlib.suppress(psutil.Error):
                tops.append(psutil.Process(self.root.pid))
        for top in tops:
            self._remember(top)
            try:
                for child in top.children(recursive=True):
                    self._remember(child)
            except psutil.Error:
                pass
        self.reap()

    def reap(self) -> None:
        """Collect the exit status of adopted processes that ended, so no zombie stays behind."""
        for proc in self._adopted():
            with contextlib.suppress(psutil.Error, ChildProcessError, OSError):
                if proc.status() == psutil.STATUS_ZOMBIE:
                    os.waitpid(proc.pid, os.WNOHANG)

    def alive(self) -> list[psutil.Process]:
        """Every process of the run that is still running (refreshes the tree first)."""
        self.refresh()
        return [p for p in self.seen.values() if _running(p)]

    def stop(self, grace: float = TERM_GRACE) -> int:
        """SIGTERM every process of the run, SIGKILL what still runs after ``grace`` seconds.

        Args:
            grace (float): seconds between SIGTERM and SIGKILL.

        Returns:
            int: how many processes were signalled (0: none was running).
        """
        signalled: set[tuple[int, float]] = set()

        def send(procs: list[psutil.Process], sig: int) -> None:
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    proc.send_signal(sig)
                    signalled.add((proc.pid, proc.create_time()))

        procs = self.alive()
        send(procs, signal.SIGTERM)
        end = time.monotonic() + grace
        while procs and time.monotonic() < end:
            time.sleep(0.05)
            procs = self.alive()
            send([p for p in procs if (p.pid, p.create_time()) not in signalled], signal.SIGTERM)
        for _ in range(50):  # each pass kills what is left, including anything started meanwhile
            procs = self.alive()
            if not procs:
                break
            send(procs, signal.SIGKILL)
            psutil.wait_procs(procs, timeout=0.2)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.root.wait(timeout=5)
        self.reap()
        return len(signalled)


#: The environment variable that marks every process a run starts (the command and, inherited,
#: everything it starts: NVFlare copies ``os.environ`` into its job processes, ``process_launcher.py``)
#: with the real path of the run's folder (``simulate``'s workspaces folder, ``poc``'s workspace;
#: symbolic links resolved, so every spelling of the folder is one mark), so a later run there
#: finds what an earlier one left running (:func:`processes_of`).
RUN_FOLDER_ENV = "JOBGEN_RUN_FOLDER"


def mark_run(env: dict[str, str], folder: str | Path) -> dict[str, str]:
    """``env`` with :data:`RUN_FOLDER_ENV` set to the real path of ``folder`` (changed in place and returned)."""
    env[RUN_FOLDER_ENV] = os.path.realpath(folder)
    return env


def processes_of(folder: str | Path) -> list[psutil.Process]:
    """Every running process (not a zombie) marked by :func:`mark_run` with ``folder``: started by a
    run of ours there, or by one of its processes. This process and its ancestors are never in the
    list. A process that merely works in the folder (a shell cd'ed into it, ``tail -f`` of a log)
    is not marked, so it is never listed; nor are other users' processes (their environment cannot
    be read).
    """
    mark = os.path.realpath(folder)
    ours = {os.getpid()}
    with contextlib.suppress(psutil.Error):
        ours.update(parent.pid for parent in psutil.Process().parents())
    found = []
    for proc in psutil.process_iter():
        if proc.pid in ours:
            continue
        with contextlib.suppress(psutil.Error, OSError):
            if proc.environ().get(RUN_FOLDER_ENV) == mark and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


def stop_processes(procs: list[psutil.Process], grace: float = TERM_GRACE) -> None:
    """SIGTERM ``procs``, then SIGKILL those still running after ``grace`` seconds; wait (up to
    ``grace`` s more) until they are gone. Processes that already ended are skipped."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)
        _, procs = psutil.wait_procs(procs, timeout=grace)


def stop_earlier_run(folder: str | Path) -> list[int]:
    """Stop what an earlier run in ``folder`` left running (:func:`processes_of`; that run was killed
    before it could stop them, e.g. by SIGKILL) before this run clears the folder; the caller
    holds the folder's lock (:func:`generator.outputs.one_run_in`), so no run in progress owns them.

    Returns:
        list[int]: the pids stopped, in ascending order (empty: none was running).
    """
    procs = processes_of(folder)
    stop_processes(procs)
    return sorted(p.pid for p in procs)


def _pump(stream, log, lines: queue.Queue) -> None:
    """Copy ``stream`` to ``log`` line by line (flushed, for readers of the log) and queue each line."""
    try:
        for line in stream:
            log.write(line)
            log.flush()
            lines.put(line.rstrip("\n"))
    except (OSError, ValueError):
        pass
    finally:
        lines.put(None)


def run_attached(
    argv: list[str], grace: float = TERM_GRACE, env: dict[str, str] | None = None
) -> tuple[int, str | None]:
    """Run ``argv`` in this terminal until it ends or a stop signal comes; then stop every process it started.

    Unlike :func:`run_process`, the command stays in this process's group and keeps the terminal
    (standard input and output): a viewer such as ``wandb leet`` reads the keyboard, and a Ctrl-C
    at the terminal reaches it as usual. A SIGINT, SIGTERM or SIGHUP sent to this process alone (a
    process manager, ``timeout``, ``kill``) is what it would miss: it is recorded here, and the
    command's whole tree (``mlflow ui`` runs uvicorn and job-runner workers) gets SIGTERM, then
    SIGKILL after ``grace`` seconds (:class:`ProcessTree`, this process a subreaper meanwhile, so
    workers that lost their parent are still found). Before this, such a signal killed this process
    and left ``mlflow ui`` and its 8 workers serving the port.

    Args:
        argv (list[str]): the command; never passed through a shell.
        grace (float): seconds between SIGTERM and SIGKILL when stopping.
        env (dict[str, str] | None): the command's environment (None: this process's).

    Returns:
        tuple[int, str | None]: its exit code, and the name of the stop signal that ended it (None:
        it ended by itself).

    Raises:
        OSError: the command cannot be started (nothing runs then).
    """
    with _subreaper(), deferred_signals() as held:
        with _RUNS_LOCK:
            others = _children_of_self()
            proc = subprocess.Popen(argv, env=env)
            _LIVE_ROOTS.add(proc.pid)
        tree = ProcessTree(proc, others)
        try:
            next_tick = time.monotonic() + TICK
            while proc.poll() is None and not held:
                time.sleep(0.1)
                if time.monotonic() >= next_tick:
                    tree.refresh()
                    next_tick = time.monotonic() + TICK
        finally:
            tree.stop(grace)
            with _RUNS_LOCK:
                _LIVE_ROOTS.discard(proc.pid)
        return proc.returncode, signal.Signals(held[0]).name if held else None


def run_process(
    argv: list[str],
    *,
    cwd: str | Path | None,
    env: dict[str, str] | None,
    log_path: str | Path,
    timeout: float | None = None,
    on_line: Callable[[str], None] | None = None,
    on_tick: Callable[[], None] | None = None,
    grace: float = TERM_GRACE,
) -> RunOutcome:
    """Run ``argv`` to its end, its timeout or a stop signal, then stop every process it started.

    The command runs in a new session (``start_new_session``): a Ctrl-C at the terminal reaches
    only this process, which then stops the whole run itself. Its stdout and stderr go, merged,
    to ``log_path`` (written as they come, flushed per line) and to ``on_line``. Standard input is
    ``/dev/null``.

    Args:
        argv (list[str]): the command; never passed through a shell.
        cwd (str | Path | None): its working directory (None: ours).
        env (dict | None): its environment (None: ours).
        log_path (str | Path): the console log to write (replaced; its folder is created).
        timeout (float | None): seconds after which the run is stopped (None: no limit).
        on_line (callable | None): called in this thread with each console line (no newline).
        on_tick (callable | None): called in this thread about every :data:`TICK` seconds.
            Either may raise :class:`StopRun` to stop the run at once.
        grace (float): seconds between SIGTERM and SIGKILL when stopping.

    Returns:
        RunOutcome: how the run ended. A stop signal (SIGINT, SIGTERM or SIGHUP during the run, or
        one an :func:`interrupt_on_signals` block recorded before it: the run is then stopped at
        its first look) is reported in ``interrupted``, a :class:`StopRun` in ``stopped_for``;
        neither is raised.

    Raises:
        OSError: the command cannot be started (nothing runs then).
        Exception: whatever ``on_line`` or ``on_tick`` raised, after the run was stopped.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    timed_out, interrupted, stopped_for = False, None, None
    with _subreaper(), open(log_path, "w", encoding="utf-8", errors="replace") as log:
        with _RUNS_LOCK:
            others = _children_of_self()
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                start_new_session=True,
            )
            _LIVE_ROOTS.add(proc.pid)
        tree = ProcessTree(proc, others)
        lines: queue.Queue = queue.Queue()
        reader = threading.Thread(target=_pump, args=(proc.stdout, log, lines), name="run_process-log", daemon=True)
        reader.start()
        deadline = None if timeout is None else started + timeout
        next_tick = started + TICK
        stopped = 0
        # Signals are held for the whole run and looked at between two waits of at most 0.1 s: the
        # caller's (interrupt_on_signals, any thread) and, with none, SIGINT/SIGTERM/SIGHUP here.
        with deferred_signals() as held:
            try:
                while True:
                    signum = held[0] if held else stop_signal()
                    if signum is not None:
                        interrupted = signal.Signals(signum).name
                        break
                    try:
                        line = lines.get(timeout=0.1)
                        while line is not None:
                            if on_line:
                                on_line(line)
                            line = lines.get_nowait()
                    except queue.Empty:
                        pass
                    now = time.monotonic()
                    if now >= next_tick:
                        tree.refresh()
                        if on_tick:
                            on_tick()
                        next_tick = now + TICK
                    if proc.poll() is not None:
                        break
                    if deadline is not None and now >= deadline:
                        timed_out = True
                        break
            except Interrupted as e:  # a callback raised it (check_interrupted)
                interrupted = e.name
            except StopRun as e:
                stopped_for = str(e) or "stopped"
            finally:
                stopped = tree.stop(grace)
                with _RUNS_LOCK:
                    _LIVE_ROOTS.discard(proc.pid)
                reader.join(timeout=5)
                # A process we could not find may still hold the pipe open; closing the pipe then
                # would block until the reader's read returns, so the (daemon) reader is left to it.
                if not reader.is_alive():
                    proc.stdout.close()
            if interrupted is None and held:  # it came while the run was being stopped
                interrupted = signal.Signals(held[0]).name
        while on_line and not interrupted and not stopped_for:  # lines that came after the last look
            try:
                line = lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                on_line(line)
    return RunOutcome(
        returncode=proc.returncode,
        timed_out=timed_out,
        interrupted=interrupted,
        seconds=round(time.monotonic() - started, 2),
        stopped=stopped,
        stopped_for=stopped_for,
    )
