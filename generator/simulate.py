"""Simulate stage: run generated job folders with ``nvflare simulator`` and judge the outcome.

Takes the output folder of ``generate`` (its manifest says each job's clients, rounds and receiver);
runs ``nvflare simulator -w <workspace>/<job> -n N -t N <out>/<job>`` per job (console log
``<workspace>/_logs/<job>.log``), up to ``parallel`` jobs at once, tells its caller of each job's
start, each round and each job's end (:class:`SimulateEvents`; the CLI's
:class:`generator.reporter.Reporter` prints them: this module prints nothing), and decides success
from NVFlare's own records, never from console text (a client script can print anything): the FedAvg
controller's records in the server's ``log.json`` must show every round started, the model saved
after the last one and the workflow finished (:mod:`generator.judge`); the simulator must exit 0;
NVFlare's loggers must have logged no error at any site; the server's model file must be saved
during this run; and a job with a receiver must have stored metrics from every site (and exactly the
counts of ``expect.metric_points_per_site``), read back from the receiver's own store
(:mod:`generator.metrics`). A failed job's reason starts with the exception that ended each client's
script. A job that streams to an MLflow tracking server is not started when the server does not
answer (:func:`generator.metrics.probe_mlflow_server`). Each metrics job also gets a plot of what
was stored, ``<reports>/<job>.png`` (:mod:`generator.plot`). The jobs expanded from one matrix job
are compared after the run (:mod:`generator.sweep`: ``SimulateEvents.sweeps_compared``, and
``<reports>/<matrix job>-sweep.png``). The results file and the plots never overwrite a file the
generator did not write (:mod:`generator.outputs`).

Every run goes through :mod:`generator.runner`: a per-job timeout (``TIMEOUT``) and SIGINT, SIGTERM
or SIGHUP (``INTERRUPTED``) stop the simulator and every process it started. Paths NVFlare's
simulator cannot carry (a space, a quote, ...) reach it through links (:mod:`generator.safepaths`).
"""

from __future__ import annotations

import contextlib
import difflib
import os
import shlex
import shutil
import signal
import struct
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .components import FRAMEWORKS
from .errors import JobgenError, OptionError, OutputError, Problem, SimulationError
from .judge import (
    LOG_JSON,
    LostClient,
    LostClientWatch,
    RoundTracker,
    client_exceptions,
    cross_site_problems,
    nvflare_errors,
    points_sent,
    worker_connected,
)
from .layout import (  # noqa: F401
    DEFAULT_OUT,
    FINAL_MODEL,
    LOGS_DIR,
    MPL_DIR,
    SERVER_SITE,
    TMP_DIR,
    WORKSPACE_MARKER,
    ManifestEntry,
    site_names,
)
from .lines import installed_line
from .metrics import PROBE_SECONDS, count_points, probe_mlflow_server, read_store, store_location
from .order import chosen_order
from .outputs import check_reports, check_results, folder_problems, one_run_in, record_report, write_results
from .plot import matplotlib_dir
from .runner import (
    Interrupted,
    RunOutcome,
    StopRun,
    check_interrupted,
    deferred_signals,
    interrupt_on_signals,
    mark_run,
    run_process,
    stop_earlier_run,
)
from .safepaths import check_paths, link_parent, new_link_folder, remove_links, remove_stale_links, run_paths
from .selection import listed, matrix_jobs, nearest, not_found, select_names
from .sweep import compare, last_values, model_mean, plot_names, plot_sweep
from .tracking import ProjectStoreFiller, check_store, project_store
from .write import edited_files, read_entries

#: Statuses of a job (``JobResult.status``).
OK, FAILED, TIMEOUT, INTERRUPTED = "ok", "FAILED", "TIMEOUT", "INTERRUPTED"


@dataclass
class JobResult:
    """The outcome of simulating one job.

    Attributes:
        name (str): job name.
        ok (bool): every check passed.
        status (str): ``ok``, ``FAILED`` (a check failed), ``TIMEOUT`` (stopped when its timeout
            expired) or ``INTERRUPTED`` (stopped by SIGINT, SIGTERM or SIGHUP to ``simulate``).
        timeout (float | None): the run's time limit in seconds (see :func:`job_timeout`).
        rounds (int): ``num_rounds`` of the job; ``rounds_started``: rounds the server started.
        wall_seconds (float): wall time of the simulator process, in seconds (of the tracking-server
            check when that stopped the job before it started).
        final_model (list | None): the server's final model (``server.npy``) as nested lists: saved
            by this run after the last round of a FedAvg run that finished; else None.
        last_model (list | None), model_round (int): the model this run saved when it is not
            final, and the round (1-based) after which it was saved (0: none saved). With FedAvg's
            early stopping (``workflow_args.stop_cond``) the final model is the best one saved,
            after round ``model_round``.
        stopped_round (int): the round (1-based) after which FedAvg stopped early (``stop_cond``
            met; 0: it did not).
        receiver (str | None): the receiver ``type`` (mlflow, tensorboard, wandb) if any.
        metric_points (dict): ``{site: {key: points}}`` found in the receiver's store.
        store (str | None): the receiver's store (MLflow tracking URI, or folder) if any.
        report (str | None): the PNG plotting the stored metrics, if any point was stored.
        workspace (str), log (str): the simulator workspace and the console log
            (``<workspace folder>/_logs/<job>.log``).
        problems (list[Problem]): why the job failed (empty when ``ok``), each printed
            ``<job>: <message>`` (see :func:`job_problem`).
        matrix (dict | None): for a job expanded from a matrix, its manifest entry's ``matrix``
            (``job``, ``values``, ``compare`` if set; :mod:`generator.sweep`).
        model_mean (float | None): the mean of ``final_model``'s entries (None: no final model).
        metric_last (dict): metric key -> its last value (highest step) averaged over sites.
        series (dict): the points read from the store, ``{site: {key: [(step, value)]}}``; kept in
            memory for the sweep plot, not written to ``results.json``.
        cross_site (dict | None): for a job with ``cross_site_eval``, the cross-site evaluation
            matrix NVFlare wrote, ``{evaluating site: {model: {metric: value}}}`` (models ``SRV_server``
            and each site's local model); None for other jobs or when no results were written.
        retried (str | None): why the job was run a second time (its first run lost a client before
            any code of the job ran there: see :func:`_lost_before_start`), else None. Everything
            else in the result is the second run's.
        job_id (str | None): NVFlare's id of the job on the system ``poc`` or ``submit`` ran it on
            (``nvflare job download <id>`` etc.); None for ``simulate``.
    """

    name: str
    ok: bool = False
    status: str = FAILED
    rounds: int = 0
    rounds_started: int = 0
    wall_seconds: float = 0.0
    final_model: list | None = None
    last_model: list | None = None
    model_round: int = 0
    stopped_round: int = 0
    receiver: str | None = None
    metric_points: dict = field(default_factory=dict)
    store: str | None = None
    report: str | None = None
    workspace: str = ""
    log: str = ""
    problems: list = field(default_factory=list)
    timeout: float | None = None
    matrix: dict | None = None
    model_mean: float | None = None
    metric_last: dict = field(default_factory=dict)
    series: dict = field(default_factory=dict, repr=False, compare=False)
    cross_site: dict | None = None
    retried: str | None = None
    job_id: str | None = None


def nvflare_command(python: str | None = None) -> list[str]:
    """The ``nvflare`` CLI run by ``python`` (default: this interpreter): ``python -m nvflare.cli``.

    The same entry point as the ``nvflare`` console script (``nvflare.cli:main``), started through
    the interpreter given, so that the simulator's ``sys.executable`` (which it starts its client
    workers with) is that path (see :mod:`generator.safepaths`).

    Raises:
        SimulationError: nvflare is not installed in this Python environment.
    """
    import importlib.util

    if importlib.util.find_spec("nvflare") is None:
        raise SimulationError("nvflare is not installed in this Python environment: run `make setup`")
    return [python or sys.executable, "-m", "nvflare.cli"]


#: :func:`job_timeout`'s terms, in seconds.
TIMEOUT_BASE, TIMEOUT_PER_ROUND, TIMEOUT_PER_CLIENT_ROUND, TIMEOUT_SUB_PROCESS, TIMEOUT_RECEIVER = 120, 30, 15, 60, 60


def job_timeout(info: ManifestEntry, override: float | None = None) -> float:
    """Seconds a job's simulator run may take before it is stopped and reported TIMEOUT.

    ``override`` (``simulate --timeout``) wins, then the job's own ``timeout`` key (``jobs.yaml``),
    else a default derived from the job::

        120 + num_rounds * (30 + 15 * num_clients) + 60 (sub-process) + 60 (receiver)

    Measured here (2 cores, idle): a shipped 5-round, 2-client job runs 14-17 s (no sleep) to
    33-38 s (metrics scripts: 15 s of sleeps); about 4-5 s go to starting and 3-6 s to ending the
    simulator (README "Speed"). The default is ten times or more that: 120 s for start, end and
    first imports (NVFlare, MLflow) on a loaded machine; each round 30 s plus 15 s per client,
    because the simulator runs every client as a process of its own on the same cores; a
    sub-process job starts one more Python per client that imports NVFlare and says HELLO; a job
    with a receiver imports its tracker and waits for its last metric events (2 s after the last
    one, then a 2 s grace). The shipped jobs get 420 to 540 s. Training that sleeps or computes
    longer per round needs its own ``timeout``.

    Args:
        info (ManifestEntry): the job's manifest entry (``num_rounds``, ``num_clients``,
            ``execution_mode``, ``receiver``, optionally ``timeout``).
        override (float | None): seconds from the command line.

    Returns:
        float: seconds.
    """
    if override:
        return float(override)
    if info.timeout:
        return float(info.timeout)
    seconds = TIMEOUT_BASE + info.num_rounds * (TIMEOUT_PER_ROUND + TIMEOUT_PER_CLIENT_ROUND * info.num_clients)
    if info.execution_mode == "external_process":
        seconds += TIMEOUT_SUB_PROCESS
    if info.receiver:
        seconds += TIMEOUT_RECEIVER
    return float(seconds)


def check_workspace(root: Path, out: Path | None = None) -> list[Problem]:
    """Why ``root`` cannot be the workspaces folder (empty: it can); checked before any job runs.

    ``root`` must be a folder (or not exist yet, below folders only), not a symlink, not inside the
    generated jobs folder ``out`` nor holding it, and, when it holds anything, hold our marker
    file :data:`WORKSPACE_MARKER`: each job's workspace in it is cleared before the job runs.

    Args:
        root (Path): the ``--workspace`` folder. out (Path | None): the ``--out`` folder.

    Returns:
        list[Problem]: one per reason, naming ``root`` (printed by the CLI, exit code 2).
    """
    root = Path(root)

    def problem(message: str) -> list[Problem]:
        return [Problem(str(root), 0, 0, "", f"--workspace: {message}")]

    unusable = folder_problems(root, "--workspace")
    if unusable:
        return unusable
    if out is not None:
        here, there = Path(os.path.abspath(root)), Path(os.path.abspath(out))
        if here == there or there in here.parents or here in there.parents:
            return problem(f"overlaps the generated jobs folder {out}: choose a folder beside it")
    if root.is_dir() and any(root.iterdir()) and not (root / WORKSPACE_MARKER).is_file():
        return problem(
            f"holds files the generator did not write (no {WORKSPACE_MARKER}); refusing to clear it: "
            "choose another --workspace"
        )
    return []


def timeout_source(info: ManifestEntry, override: float | None = None) -> str:
    """Where :func:`job_timeout`'s value for this job comes from, in words (for the TIMEOUT reason)."""
    if override:
        return "simulate --timeout"
    if info.timeout:
        return "the job's `timeout` key"
    return "the default from the job's rounds, clients, mode and receiver; set the job's `timeout` for more"


def prepare_workspace(root: Path, name: str) -> Path:
    """Make ``root/name`` a fresh, empty simulator workspace (and ``root/_logs/`` for its log).

    Raises:
        OutputError: ``root`` cannot be used (see :func:`check_workspace`).
    """
    root = Path(root)
    problems = check_workspace(root)
    if problems:
        raise OutputError(problems)
    root.mkdir(parents=True, exist_ok=True)
    (root / WORKSPACE_MARKER).write_text("simulator workspaces made by nvflare-jobgen\n")
    (root / LOGS_DIR).mkdir(exist_ok=True)
    ws = root / name
    if ws.is_symlink() or ws.is_file():  # e.g. the console log of a job of that name, before _logs/
        ws.unlink()
    elif ws.exists():
        shutil.rmtree(ws)
    ws.mkdir()
    return ws


def log_path(root: Path, name: str) -> Path:
    """The console log of job ``name``'s run: ``<root>/_logs/<name>.log``."""
    return Path(root) / LOGS_DIR / f"{name}.log"


def _run_env(bin_dir: str, ws: Path, tmp: str | None = None) -> dict[str, str]:
    """The simulator's environment: this one, with ``bin_dir`` first on ``PATH`` and W&B's files in ``ws``.

    Args:
        bin_dir (str): the folder of the Python that runs the simulator (a sub-process client is
            started as ``python3 ...``: that must be this environment's Python).
        ws (Path): the job's workspace: W&B's runs land in the server's job folder (the shipped
            receiver passes ``dir``; ``WANDB_DIR`` is dropped), and its cache (``WANDB_CACHE_DIR``:
            its debug logs, ``~/.cache/wandb`` by default) goes to ``ws/_wandb_cache`` unless set,
            so a run writes nothing to ``$HOME``.
        tmp (str | None): the run's temporary folder (:func:`run_tmp`), set as ``TMPDIR``, ``TEMP``
            and ``TMP`` (Python's ``tempfile.gettempdir`` reads them in that order): what the run's
            processes leave there (W&B's module-level ``TemporaryDirectory("wandb-media")``, never
            cleaned up in a process NVFlare ends) goes with the folder. None: unchanged.
    """
    env = dict(os.environ)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # MLflow 3's usage telemetry (see cli.main)
    env.pop("WANDB_DIR", None)
    env.setdefault("WANDB_CACHE_DIR", str(Path(ws) / "_wandb_cache"))
    if tmp is not None:
        env["TMPDIR"] = env["TEMP"] = env["TMP"] = tmp
    return env


@contextlib.contextmanager
def run_tmp(root: Path, name: str) -> Iterator[str]:
    """The ``TMPDIR`` of one run: a fresh, empty ``<root>/_tmp/<name>`` (:data:`generator.layout.TMP_DIR`),
    reached through a short link; removed with everything in it when the block ends (``<root>/_tmp``
    too, once no other run uses it, and the link's folder).

    The run's processes make Unix sockets in ``TMPDIR`` (``multiprocessing``'s managers:
    ``pymp-*/listener-*``; W&B's service), and a socket's path may hold at most 107 bytes
    (``sun_path``), far less than a workspace path may be: a run with a 92-character workspace path
    failed with ``OSError: AF_UNIX path too long``. So the folder is reached as ``<links>/t``, a
    link in a fresh ``jobgen-run-*`` folder in the shortest of :mod:`generator.safepaths`' link
    parents (``$TMPDIR`` of this process, ``/tmp``, ...); Python's ``tempfile`` and Go's
    ``os.TempDir`` use the path as given, without resolving the link. When no such folder can be
    made, the real path is used.

    Args:
        root (Path): the workspaces folder. name (str): the job.

    Yields:
        str: the path to set as the run's ``TMPDIR``.
    """
    folder = Path(root).absolute() / TMP_DIR / name
    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    parent = link_parent(shortest=True)
    links = new_link_folder(parent) if parent else None
    try:
        if links:
            os.symlink(folder, os.path.join(links, "t"))
        yield os.path.join(links, "t") if links else str(folder)
    finally:
        with deferred_signals():  # a stop signal now must not leave the folders behind
            if links:
                remove_links(links)
            shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(OSError):  # another job's run still uses it
                folder.parent.rmdir()


def _metric_problems(info: ManifestEntry, counts: dict, ws: Path | None = None) -> list[str]:
    problems = []
    sites = info.sites
    for site in sites:
        if not counts.get(site):
            problems.append(f"no metric from {site} arrived in the receiver's store")
    external = info.execution_mode == "external_process"
    for key, expected in info.expect.get("metric_points_per_site", {}).items():
        for site in sites:
            stored_keys = counts.get(site, {})
            got = stored_keys.get(key, 0)
            if got != expected and key not in stored_keys and stored_keys:
                problems.append(_key_not_stored(site, key, expected, stored_keys))
            elif got != expected:
                stored = sum(counts.get(site, {}).values())
                where = _where_points_went(site, stored, ws, external) if got < expected else ""
                problems.append(f"{site} stored {got} {key!r} points, expected {expected}{where}")
    return problems


def _key_not_stored(site: str, key: str, expected: int, stored: dict[str, int]) -> str:
    """The problem of an ``expect.metric_points_per_site`` key that ``site`` stored no point of while
    it stored others (``stored``: key -> points): a key the script does not log under that name, not
    points lost on the way (a trial's ``loss`` for the script's ``train_loss`` was blamed on the
    server's receiver)."""
    close = difflib.get_close_matches(key, list(stored), n=1, cutoff=0.5)
    keys = ", ".join(f"{name}={count}" for name, count in sorted(stored.items()))
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return (
        f"{site} stored no {key!r} point, expected {expected} (expect.metric_points_per_site): the keys it "
        f"stored are {keys}{hint}"
    )


#: What a missing-points problem says when NVFlare's Client API lost them between a sub-process
#: training script and its client job (each point sent fire-and-forget; see :func:`_where_points_went`).
LOST_FROM_SCRIPT = "the rest never reached it from the training script"


def _where_points_went(site: str, stored: int, ws: Path | None, external: bool) -> str:
    """Which leg lost a site's missing points, from the counts its client job logged (:func:`points_sent`):
    ``""`` when the site's log does not say (no ``ws``, or a ``submit`` download without site logs).

    Args:
        site (str): the site. ``stored`` (int): its values in the store, all keys together.
        ws (Path | None): the job's workspace (or downloaded result) with the site's ``log.json``.
        external (bool): the script runs in a sub-process (only then is there a leg from the
            script's process to the client job: in-process, the script's points are the client
            job's own events).

    One event the client job sent carries one value or more (W&B's ``log({a: 1, b: 2})``: two), so
    fewer stored values than events the server had means the server's receiver (or its store) lost
    some; more stored values than events cannot tell the script's leg from the receiver, and says so;
    as many stored values as events, in-process, means nothing was lost: the expectation is off.
    """
    counts = points_sent(ws / site) if ws is not None else None
    if counts is None:
        return ""
    log = f"{site}/{LOG_JSON}"
    if counts.server_had < counts.sent:
        return (
            f" ({site}'s client job sent {counts.sent} points in all ({log}); the server had {counts.server_had} "
            "of them when the run ended: the rest were lost between the client job and the server)"
        )
    receiver = f"in the server's receiver or its store; see {SERVER_SITE}/log.txt"
    fewer = "the script logged fewer than expect.metric_points_per_site says"
    if not external and stored == counts.sent:  # one value per point, each stored (a trial's expect was off by one)
        return (
            f" (nothing was lost on the way: {site}'s client job sent {counts.sent} points in all ({log}), the "
            f"server had them and its receiver stored {stored} values: {fewer})"
        )
    if external and stored >= counts.sent:
        also = f" (or, as some of its points carry several values, {receiver})" if stored > counts.sent else ""
        return (
            f" ({site}'s client job sent the server every point it got, {counts.sent} in all ({log}): "
            f"{LOST_FROM_SCRIPT}{also}, or {fewer}; in a sub-process job NVFlare's Client API sends each point "
            "from the script's process fire-and-forget)"
        )
    return (
        f" (the server had all {counts.sent} points {site}'s client job sent ({log}); its receiver stored "
        f"{stored} values: the rest were lost {receiver})"
    )


def _without_password(uri: str) -> str:
    """``uri`` with the password of a ``user:password@host`` part replaced by ``***`` (for messages)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def tracking_server_problem(info: ManifestEntry, server_dir: Path, timeout: float = PROBE_SECONDS) -> str | None:
    """Why a job's MLflow tracking server cannot be used, checked before the job starts.

    Only an ``http(s)://`` ``tracking_uri`` of an ``mlflow`` receiver is checked (a SQLite store
    needs no server). MLflow's client inside NVFlare's ``MLflowReceiver`` retries a dead server for
    minutes, silently; this answers within ``timeout`` + 1 seconds.

    Args:
        info (ManifestEntry): the job's manifest entry. server_dir (Path): ``<workspace>/server``.
        timeout (float): seconds per connect and answer.

    Returns:
        str | None: the reason, naming the URI; None when the server answered as MLflow does.
    """
    if info.receiver != "mlflow" or not info.tracking_uri:
        return None
    uri = store_location(info, server_dir)
    why = probe_mlflow_server(uri, timeout)
    if why is None:
        return None
    return (
        f"the MLflow tracking server {_without_password(uri)} (receiver.tracking_uri) cannot be used: {why}; "
        "the job was not started (start the server, or fix tracking_uri)"
    )


class SimulateEvents:
    """What ``simulate`` tells its caller while it runs; every method here does nothing.

    The CLI passes a :class:`generator.reporter.Reporter`, which prints each event as one line (or a
    block) under a lock, so jobs run in parallel threads never interleave mid-line. Methods may be
    called from worker threads (``simulate --parallel``).
    """

    def job_started(self, name: str, info: ManifestEntry, timeout: float) -> None:
        """A job is about to run: ``info`` is its manifest entry, ``timeout`` its limit in seconds."""

    def sweeps_compared(self, sweeps: list) -> None:
        """After ``all_finished``: the :class:`generator.sweep.Sweep` of each matrix job (may be empty)."""

    def round_started(self, name: str, number: int, rounds: int, seconds: float) -> None:
        """The server of job ``name`` started round ``number`` (1-based) of ``rounds``, ``seconds`` into the run."""

    def leftovers_stopped(self, name: str, count: int) -> None:
        """The simulator of job ``name`` exited but left ``count`` processes running; they were stopped."""

    def earlier_run_stopped(self, folder: str, pids: list[int]) -> None:
        """Before this run cleared ``folder``, the processes ``pids`` that an earlier run there left
        running (it was killed before it could stop them) were stopped."""

    def job_retried(self, name: str, reason: str) -> None:
        """Job ``name``'s first run was stopped for ``reason`` and the job runs again (once)."""

    def order_chosen(self, order: list[str], source: str) -> None:
        """Before the first job: the jobs start in ``order``, not in file order, longest first by
        their wall times in the earlier results file ``source`` (:mod:`generator.order`)."""

    def folders_edited(self, files: list[tuple[Path, str]]) -> None:
        """Before the first job: files of the jobs to run that are not what ``generate`` wrote
        (:func:`generator.write.edited_files`: ``(path, "edited" | "added")``); they run as they are."""

    def job_finished(self, result: JobResult) -> None:
        """A job ended (any status): its result, problems, store and plot are known."""

    def all_finished(self, results: list[JobResult]) -> None:
        """Every job ran (or the run was stopped): ``results`` in file order, before results.json is written."""


def job_problem(name: str, message: str) -> Problem:
    """A problem of simulated job ``name``, printed ``<name>: <message>``; ``message`` names the files it concerns."""
    return Problem(name, 0, 0, "", message)


def simulate_job(
    out: Path,
    workspace_root: Path,
    name: str,
    info: ManifestEntry,
    events: SimulateEvents | None = None,
    reports: Path | None = None,
    timeout: float | None = None,
) -> JobResult:
    """Run one generated job in the simulator and check what it produced.

    The run is stopped, with every process it started, when its timeout expires (status
    ``TIMEOUT``) or a stop signal arrives (``INTERRUPTED``; in any thread, the signals the main
    thread's :func:`generator.runner.interrupt_on_signals` records: how a worker thread of
    ``simulate --parallel`` learns of Ctrl-C).

    Args:
        out (Path): the generated jobs folder. workspace_root (Path): where workspaces go.
        name (str): the job. info (ManifestEntry): its manifest entry (see ``pipeline.job_info``).
        events (SimulateEvents | None): told of each started round (None: nobody).
        reports (Path | None): where to write ``<job>.png`` for a metrics job (None: no plot).
        timeout (float | None): seconds, overriding the job's (see :func:`job_timeout`).

    When NVFlare's simulator stops running a client mid-run (its worker died, or the link to it
    broke: see :class:`generator.judge.LostClientWatch`), the run is stopped at once instead of
    waiting for the timeout, and the job is ``FAILED``; if that client's worker never reached the
    simulator (no code of the job ran there), the job is run once more (``JobResult.retried``; the
    first run's console log is kept as ``<log>.1``).

    Returns:
        JobResult: ``ok`` False with ``problems`` (:class:`Problem`) when any check failed.

    Raises:
        JobgenError: the workspace path cannot be passed to NVFlare (see :mod:`generator.safepaths`).
    """
    events = events or SimulateEvents()
    result = JobResult(name=name, rounds=info.num_rounds, receiver=info.receiver)
    if _refused(result, info, workspace_root):
        return result
    log = log_path(workspace_root, name)
    result.log = str(log)
    result.timeout = job_timeout(info, timeout)
    first_log = log.with_name(log.name + ".1")
    for attempt in (1, 2):
        ws = prepare_workspace(workspace_root, name)
        result.workspace = str(ws)
        if attempt == 1:
            with contextlib.suppress(FileNotFoundError):
                first_log.unlink()  # a first run's log left by an earlier simulate
        started_epoch = time.time()
        tracker = RoundTracker.for_job(ws, info)
        outcome, lost = _run_simulator(out, ws, log, result, info, tracker, events)
        reason = _lost_before_start(outcome, lost, ws, info) if attempt == 1 else None
        if not reason:
            break
        log.replace(first_log)
        result.retried = (
            f"{reason}: stopped that run after {outcome.seconds:.1f} s (log: {first_log}), running the job again"
        )
        events.job_retried(name, result.retried)
    result.wall_seconds = outcome.seconds
    if outcome.interrupted or outcome.timed_out:
        _stopped(result, info, outcome, tracker, ws, log, timeout)
        return result
    if outcome.stopped_for:
        _lost_client(result, info, outcome, lost, tracker, ws, log)
        return result
    if outcome.stopped:  # not a failed check: the run's own outputs are judged below
        events.leftovers_stopped(name, outcome.stopped)
    judge_run(result, ws, tracker, outcome.returncode, started_epoch, info)
    if info.cross_site_eval:
        judge_cross_site(result, info, ws)
    if result.receiver:
        judge_metrics(result, info, ws, since_ms=int(started_epoch * 1000) - 1000, reports=reports)
    if result.problems:
        result.problems[:0] = [job_problem(name, m) for m in client_exceptions(ws, log, info.clients)]
    result.ok = not result.problems
    result.status = OK if result.ok else FAILED
    return result


def _other_line(result: JobResult, info: ManifestEntry) -> bool:
    """Whether the job is written for another NVFlare line than the installed one (it would not
    load); records why in ``result``. No I/O once :func:`generator.lines.installed_line` is cached."""
    line = info.nvflare_version
    if line and line != installed_line():
        result.problems.append(
            job_problem(
                result.name,
                f"written for NVFlare {line} (nvflare_version) but this environment's nvflare is the "
                f"{installed_line()} line: simulate it with NVFlare {line}, or generate it for {installed_line()}",
            )
        )
        return True
    return False


def _refused(result: JobResult, info: ManifestEntry, workspace_root: Path) -> bool:
    """Whether the job cannot start here (another NVFlare line, :func:`_other_line`, or its MLflow
    server does not answer); records why in ``result``."""
    if _other_line(result, info):
        return True
    probe_started = time.monotonic()
    unreachable = tracking_server_problem(info, Path(workspace_root) / result.name / SERVER_SITE)
    if unreachable:  # before the workspace is made: the job never starts
        result.problems.append(job_problem(result.name, unreachable))
        result.wall_seconds = round(time.monotonic() - probe_started, 2)
        return True
    return False


def _run_simulator(
    out, ws: Path, log: Path, result: JobResult, info: ManifestEntry, tracker, events
) -> tuple[RunOutcome, LostClient | None]:
    """Run ``nvflare simulator`` on the job folder, telling ``events`` of each round the server starts.

    Returns the run's outcome and, when the run was stopped because the simulator lost a client
    (``outcome.stopped_for`` is its message), that client."""
    name, n = result.name, str(info.num_clients)
    started = time.monotonic()

    watch = LostClientWatch(ws, info.sites)
    lost: list[LostClient] = []

    def on_tick() -> None:
        for number in tracker.poll():
            events.round_started(name, number, result.rounds, time.monotonic() - started)
        for client in watch.poll():  # nothing runs that client any more: the run can only time out
            lost.append(client)
            raise StopRun(client.message)

    check_interrupted()  # a signal while the job was being prepared: nothing is started
    with run_paths(ws) as paths, run_tmp(ws.parent, name) as tmp:
        cmd = nvflare_command(paths.python)
        cmd += ["simulator", "-w", paths.workspace, "-n", n, "-t", n]
        cmd += ["-c", ",".join(info.clients)] if info.clients else []  # the job's client names
        cmd.append(str(Path(out).resolve() / name))
        outcome = run_process(
            cmd,
            cwd=paths.cwd,
            env=mark_run(_run_env(paths.bin_dir, ws, tmp), ws.parent),  # see stop_earlier_run
            log_path=log,
            timeout=result.timeout,
            on_tick=on_tick,
        )
    return outcome, (lost[0] if lost and outcome.stopped_for else None)


def _stopped(
    result: JobResult, info: ManifestEntry, outcome: RunOutcome, tracker, ws: Path, log: Path, timeout
) -> None:
    """Record a run stopped by a signal (``INTERRUPTED``) or by its timeout (``TIMEOUT``) in ``result``."""
    tracker.poll()
    result.rounds_started = tracker.rounds_started
    if outcome.interrupted:
        result.status = INTERRUPTED
        message = (  # the job's closing line names the log
            f"interrupted by {outcome.interrupted} after {outcome.seconds:.1f} s: stopped the simulator "
            f"and every process it started ({outcome.stopped})"
        )
        result.problems.append(job_problem(result.name, message))
        return
    result.status = TIMEOUT
    message = (
        f"timed out after {result.timeout:g} s ({timeout_source(info, timeout)}): stopped the simulator and "
        f"every process it started ({outcome.stopped}); it was {tracker.where_stopped()}; log: {log}"
    )
    # a client that failed may be why the run hung
    result.problems[:0] = [job_problem(result.name, m) for m in [*client_exceptions(ws, log, info.clients), message]]


def _lost_before_start(outcome: RunOutcome, lost: LostClient | None, ws: Path, info: ManifestEntry) -> str | None:
    """Why the job should run again: the run was stopped because the simulator lost a client
    whose worker never reached it, so no code of the job ran there; else None.

    Seen on NVFlare 2.9 with several simulators running at once (``simulate --parallel``, tests):
    the simulator picks a free port for a client's worker (``get_open_ports``), starts the worker,
    which listens on it only after its imports, and connects to it; another process that took the
    port in between answers instead and resets the connection ("Communication error with client
    site-1: [Errno 104] Connection reset by peer", ``simulator_runner.py``). Or the worker itself
    finds its port taken and ends ("OSError: [Errno 98] Address already in use",
    :data:`generator.judge.WORKER_FAILED`). Or the simulator told a worker another client's name
    (:data:`generator.judge.WORKER_CELL`; the run is stopped as soon as the worker names its cell,
    before it is sent a task). The job is not at fault.
    """
    if not lost or outcome.interrupted or outcome.timed_out:
        return None
    if lost.before_job:
        return f"{lost.message}; no code of the job ran there"
    site = lost.site
    sites = [site] if site else info.sites
    never = [s for s in sites if not worker_connected(ws, s)]
    if not never:
        return None
    return (
        f"NVFlare's simulator lost {', '.join(never)} before its worker reached the simulator "
        f'("{outcome.stopped_for}"), so no code of the job ran there'
    )


def _lost_client(
    result: JobResult, info: ManifestEntry, outcome: RunOutcome, lost: LostClient | None, tracker, ws: Path, log: Path
) -> None:
    """Record a run stopped because NVFlare's simulator stopped running a client (``FAILED``)."""
    tracker.poll()
    result.rounds_started = tracker.rounds_started
    result.status = FAILED
    site = lost.site if lost else None
    who = site or "a client"
    site_log = f"; {site}'s log: {ws / site / 'log.txt'}" if site else ""
    message = (
        f'NVFlare\'s simulator stopped running {who} after {outcome.seconds:.1f} s ("{outcome.stopped_for}"): '
        f"the server would have waited for its results until the timeout ({result.timeout:g} s), so the run "
        f"was stopped with every process it started ({outcome.stopped}){site_log}; log: {log}"
    )
    result.problems[:0] = [job_problem(result.name, m) for m in [*client_exceptions(ws, log, info.clients), message]]


def judge_run(
    result: JobResult,
    ws: Path,
    tracker: RoundTracker,
    code: int | None,
    started_epoch: float,
    info: ManifestEntry | None = None,
) -> None:
    """Fill ``result`` from NVFlare's records of a finished simulator run (metrics aside).

    Args:
        result (JobResult): the job's result; ``rounds_started``, the models and ``problems`` are set.
        ws (Path): the job's simulator workspace. tracker (RoundTracker): fed during the run; it
            reads what is left of the server's log here.
        code (int | None): the simulator's exit code (None: it did not exit by itself).
        started_epoch (float): when the run started, seconds since the epoch: an older model file
            is not this run's.
        info (ManifestEntry | None): the job's manifest entry: its ``framework`` picks the model file
            (:data:`generator.components.FRAMEWORKS`: NPModelPersistor's ``server.npy``, read with
            numpy, or PTFileModelPersistor's ``FL_global_model.pt``, read with torch:
            ``{parameter: nested lists}``), and ``expect.model_mean`` is checked against the final
            model. None: a numpy job, nothing expected.
    """
    tracker.poll()
    result.rounds_started, result.stopped_round = tracker.rounds_started, tracker.stopped_round
    messages = []
    if code not in (0, None):
        messages.append(f"nvflare simulator exited with code {code}")
    messages += tracker.problems()
    framework = info.framework if info else "numpy"
    model = ws / FRAMEWORKS[framework].model_file
    params = None
    if model.is_file() and model.stat().st_mtime >= started_epoch - 1:
        try:
            params = _read_model(model, framework)
        except Exception as e:  # a file torch or numpy cannot read: the run's result is unusable
            messages.append(f"cannot read the model saved at {model}: {type(e).__name__}: {e}")
    if params is not None:
        if tracker.model_is_final:
            result.final_model, result.model_round = params, tracker.saved_round
            result.model_mean = model_mean(params)
        else:
            result.last_model, result.model_round = params, tracker.saved_round
    if result.last_model is not None:
        saved = (
            f"after round {result.model_round} of {result.rounds}" if result.model_round else "before any round ended"
        )
        messages.append(f"the model saved at {model} is not final: it was saved {saved}")
    elif result.final_model is None and params is None:
        messages.append(f"no final model saved at {model}")
    expect = info.expect if info else {}
    tolerance = expect.get("tolerance") or 0.0
    within = f", tolerance {tolerance:g}" if tolerance else ""
    expected = expect.get("model_mean")
    if expected is not None and result.model_mean is not None and not _close(result.model_mean, expected, tolerance):
        got, want = f"{result.model_mean:g}", f"{expected:g}"
        if got == want:  # apart in digits %g does not show (a trial: "-0.123827, expected -0.123827")
            got, want = repr(float(result.model_mean)), repr(float(expected))
        off = f": off by {abs(result.model_mean - expected):.3g}" if tolerance else ""
        messages.append(f"the final model's mean is {got}, expected {want} (expect.model_mean{within}{off})")
    expected = expect.get("final_model")
    if expected is not None and result.final_model is not None:
        messages += final_model_differences(result.final_model, expected, tolerance)
    messages += nvflare_errors(ws)
    result.problems += [job_problem(result.name, m) for m in messages]


def final_model_differences(model, expected, tolerance: float = 0.0) -> list[str]:
    """How a final model differs from ``expect.final_model``, one message per difference (empty: equal).

    Args:
        model (list | dict): the final model as :func:`_read_model` gives it: nested lists (numpy's
            ``server.npy``) or ``{parameter: nested lists}`` (a PyTorch state_dict).
        expected (list | dict): ``expect.final_model`` from jobs.yaml, of the same shape. Values are
            compared exactly (``6 == 6.0``) or as float32 (:func:`_same_values`), shapes by the
            nesting of the lists.
        tolerance (float): ``expect.tolerance``: a value within this of the expected one (absolute)
            is equal too; 0: not.
    """

    def where(saved, wanted) -> str:
        if not tolerance:
            return "(expect.final_model)"
        off = _largest_difference(saved, wanted)
        return f"(expect.final_model, tolerance {tolerance:g}" + (f": off by up to {off:.3g})" if off else ")")

    if not isinstance(model, dict):
        if _same_values(model, expected, tolerance):
            return []
        return [f"the final model is {model}, expected {expected} {where(model, expected)}"]
    plain = where(None, None)
    messages = [f"the final model has no parameter {name!r} {plain}" for name in expected if name not in model]
    extra = [name for name in model if name not in expected]
    if extra:
        messages.append(f"the final model has parameters that are not expected: {', '.join(extra)} {plain}")
    for name, value in expected.items():
        if name in model and not _same_values(model[name], value, tolerance):
            messages.append(f"the final model's {name} is {model[name]}, expected {value} {where(model[name], value)}")
    return messages


def _largest_difference(saved, expected) -> float | None:
    """The largest ``|saved - expected|`` over two nested lists of numbers of the same nesting, else None."""
    if isinstance(saved, list) and isinstance(expected, list):
        if len(saved) != len(expected):
            return None
        parts = [_largest_difference(a, b) for a, b in zip(saved, expected, strict=True)]
        return None if any(p is None for p in parts) else max(parts, default=0.0)
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (saved, expected))
    return abs(saved - expected) if numbers else None


def _same_values(saved, expected, tolerance: float = 0.0) -> bool:
    """``saved`` (a model's ``tolist()``) equals ``expected`` value by value, with the same nesting.

    A saved value equals the number written in ``jobs.yaml`` or that number rounded to float32, the
    dtype of the example's models (``0.1`` is saved as ``0.10000000149011612``), or lies within
    ``tolerance`` of it (:func:`_close`).
    """
    if isinstance(saved, list) or isinstance(expected, list):
        return (
            isinstance(saved, list)
            and isinstance(expected, list)
            and len(saved) == len(expected)
            and all(_same_values(a, b, tolerance) for a, b in zip(saved, expected, strict=True))
        )
    if isinstance(expected, bool) or not isinstance(expected, int | float):
        return False
    return _close(saved, expected, tolerance)


def _close(saved, expected: float, tolerance: float = 0.0) -> bool:
    """One saved number against the one written: equal, equal to it rounded to float32, or (with a
    ``tolerance`` above 0) within that of it, ``|saved - expected| <= tolerance``."""
    if isinstance(saved, bool) or not isinstance(saved, int | float):
        return False
    if saved == expected or (tolerance and abs(saved - expected) <= tolerance):
        return True
    try:
        return saved == struct.unpack("f", struct.pack("f", expected))[0]
    except OverflowError:  # beyond float32's range
        return False


def _read_model(path: Path, framework: str):
    """A saved model as plain data: numpy's ``server.npy`` as nested lists, a PyTorch checkpoint as
    ``{parameter: nested lists}`` (:func:`generator.ptmodel.read_final_model`)."""
    if framework == "pytorch":
        from .ptmodel import read_final_model

        return read_final_model(path)
    import numpy as np

    return np.load(path).tolist()


def judge_cross_site(result: JobResult, info: ManifestEntry, ws: Path) -> None:
    """Read a run's cross-site evaluation matrix into ``result.cross_site``; a missing cell is a problem.

    With :func:`judge_run`, the judging of one run that any runner of a job folder can reuse
    (:func:`generator.judge.cross_site_problems`: every client evaluates the server's model and
    every client's local model).

    Args:
        result (JobResult): the job's result; ``cross_site`` and ``problems`` are filled in.
        info (ManifestEntry): the job's manifest entry (its clients: ``site-1`` .. ``site-<num_clients>``).
        ws (Path): the job's simulator workspace (or a downloaded run laid out as one).
    """
    server_models = FRAMEWORKS[info.framework].server_models
    result.cross_site, messages = cross_site_problems(ws, info.sites, *([server_models] if server_models else []))
    result.problems += [job_problem(result.name, m) for m in messages]


def judge_metrics(result: JobResult, info: ManifestEntry, ws: Path, since_ms: int, reports: Path | None) -> None:
    """Read the receiver's store, compare it with the job's expectations, plot what arrived.

    With :func:`judge_run`, the judging of one run that any runner of a job folder can reuse.

    Args:
        result (JobResult): the job's result (``receiver`` set); ``store``, ``metric_points``,
            ``report`` and ``problems`` are filled in.
        info (ManifestEntry): the job's manifest entry (``num_clients``, ``expect``, the receiver's store).
        ws (Path): the job's simulator workspace (the store is found under ``ws/server``).
        since_ms (int): only points logged at or after this time (ms since the epoch) count.
        reports (Path | None): where to write ``<job>.png`` (None: no plot).
    """
    result.store = store_location(info, ws / SERVER_SITE)
    with _READERS_LOCK:
        try:
            series = read_store(result.receiver, result.store, since_ms=since_ms, sites=info.sites)
        except SimulationError as e:
            result.problems += [job_problem(result.name, p.message) for p in e.problems]
            return
        result.metric_points = count_points(series)
        result.series, result.metric_last = series, last_values(series)
        result.problems += [job_problem(result.name, m) for m in _metric_problems(info, result.metric_points, ws)]
        if reports and any(any(keys.values()) for keys in series.values()):
            from .plot import plot_metrics

            path = Path(reports) / f"{result.name}.png"
            plot_metrics(result.name, series, path)
            record_report(Path(reports), path)
            result.report = str(path)


#: Held while a job's store is read back and plotted: two threads of ``simulate --parallel`` that
#: import MLflow (or matplotlib) at once fail ("partially initialized module 'mlflow.tracking'",
#: seen here), and every plot is recorded in one reports manifest.
_READERS_LOCK = threading.Lock()


def simulate_all(
    out: str | Path,
    workspace: str | Path,
    names: list[str] | None = None,
    results_path: str | Path | None = None,
    reports: str | Path | None = None,
    timeout: float | None = None,
    events: SimulateEvents | None = None,
    parallel: int = 1,
) -> list[JobResult]:
    """Simulate every generated job (or those in ``names``), tell ``events``, write results.

    SIGINT, SIGTERM and SIGHUP stop every running job and every process it started; each is
    recorded ``INTERRUPTED`` (jobs not started yet are not run), ``events.all_finished`` and the
    results of the jobs run so far are still written, and :class:`RunInterrupted` is raised (exit
    code 128 + the signal's number).

    Args:
        out: the generated jobs folder. workspace: the workspaces folder.
        names: only these jobs. results_path: where to write ``results.json`` (None: nowhere).
        reports: where to write one PNG per metrics job (None: no plots).
        timeout: seconds per job, overriding each job's (see :func:`job_timeout`).
        events (SimulateEvents | None): told of each job's start, rounds and end, and of the results.
        parallel (int): how many simulator runs may go on at once (>= 1), each in its own workspace
            and log; above 1 the jobs start longest first by their times in the earlier
            ``results_path`` (:mod:`generator.order`); results stay in the order of the manifest
            (``jobs.yaml``).

    Returns:
        list[JobResult]: one per job, in file order; every ``ok``: every job passed its checks.

    Raises:
        OptionError: ``out`` is not a folder or holds no jobs, or a requested job is not there.
        OutputError: ``out`` is not a generated folder, the workspace is not ours or another run
            is using it (:func:`generator.outputs.one_run_in`), or the results file or a plot would
            overwrite a file the generator did not write (checked before any job runs).
        JobgenError: the workspace or the Python environment is at a path NVFlare cannot be given
            (see :mod:`generator.safepaths`); raised before any job runs.
        RunInterrupted: a stop signal arrived.
    """
    events = events or SimulateEvents()
    out = Path(out)
    manifest, selected = selected_jobs(out, names)
    _check_outputs(out, Path(workspace), manifest, selected, results_path, reports)
    store = project_store(results_path, [manifest[n] for n in selected])
    if store:
        events = ProjectStoreFiller(events, store, manifest, _READERS_LOCK)
    run = _run_parallel if parallel > 1 else _run_serial
    results = Path(results_path) if results_path else None
    with one_run_in({"--workspace": Path(workspace)}, "simulate", jobs=out, results=results):
        stopped = stop_earlier_run(workspace)
        if stopped:
            events.earlier_run_stopped(str(workspace), stopped)
        remove_stale_links(workspace)  # what such a run left in /tmp
        report_edits(out, selected, events)
        order = chosen_order(selected, results_path, parallel, events)  # read before results_path is replaced
        return _simulate_held(out, workspace, manifest, order, results_path, reports, timeout, events, parallel, run)


def _simulate_held(out, workspace, manifest, order, results_path, reports, timeout, events, parallel, run):
    """:func:`simulate_all` once its workspaces folder is held (:func:`generator.outputs.one_run_in`):
    the jobs started in ``order`` (:func:`generator.order.start_order`), the results in file order."""
    with interrupt_on_signals() as received, matplotlib_dir(Path(workspace) / MPL_DIR):
        results = run(out, Path(workspace), manifest, order, reports, timeout, events, received, parallel)
        rank = {name: i for i, name in enumerate(manifest)}
        results.sort(key=lambda r: rank[r.name])  # file order, as started or not
        events.all_finished(results)  # a signal from here on is only recorded: the results are written
        events.sweeps_compared(compare_sweeps(results, manifest, reports))
        if results_path and results:  # none: stopped before the first job, an earlier run's file is kept
            write_results(Path(results_path), [result_record(r) for r in results], "simulate")
    if received:
        raise RunInterrupted(signal.Signals(received[0]).name, results_path, len(results))
    return results


def result_record(result: JobResult) -> dict:
    """``result`` as one entry of ``results.json``: its fields (``series`` left out), each problem as its message."""
    record = {**asdict(result), "problems": [p.message for p in result.problems]}
    record.pop("series")
    return record


def compare_sweeps(results: list[JobResult], manifest: dict, reports) -> list:
    """The sweeps among ``results`` (:func:`generator.sweep.compare`), each plotted into ``reports``
    as ``<matrix job>-sweep.png`` when its jobs stored a metric (None: no plots)."""
    sweeps = compare(results, manifest)
    for sweep in sweeps:
        if reports and sweep.curves:
            with _READERS_LOCK:
                path = Path(reports) / f"{sweep.plot_name}.png"
                plot_sweep(sweep, path)
                record_report(Path(reports), path)
                sweep.report = str(path)
    return sweeps


def report_edits(out: Path, selected: list[str], events) -> None:
    """Tell ``events.folders_edited`` the files of the ``selected`` job folders of ``out`` that are
    not what ``generate`` wrote (:func:`generator.write.edited_files`), if any."""
    edited = edited_files(out, selected)
    if edited:
        events.folders_edited(edited)


def _generate_into(out: Path) -> str:
    """The make command that writes generated jobs into ``out``: ``make generate``, with ``OUT=`` when
    ``out`` is not the default ``build/jobs`` (a trial's ``--out /tmp/x`` was told plain ``make generate``)."""
    if out == Path(DEFAULT_OUT):
        return "make generate"
    return f"make generate OUT={shlex.quote(str(out))}"


def selected_jobs(out: Path, names: list[str] | None) -> tuple[dict, list[str]]:
    """The generated jobs of ``out`` and the ones to run (``simulate``, ``poc``, ``submit``).

    Args:
        out (Path): the output folder of ``generate`` (``--out``). names (list[str] | None): the
            ``--job`` values, in any order, repeats allowed: a job's name, a matrix job's name as
            written (the manifest entries' ``matrix.job``: every job it expanded to) or a pattern
            (:mod:`generator.selection`); None: every job.

    Returns:
        tuple[dict, list[str]]: the manifest (name -> :class:`generator.layout.ManifestEntry`) and
        the names to run, in file order (the manifest's), each once.

    Raises:
        OptionError: ``out`` is not a folder of generated jobs, or a name selects none of its jobs.
    """
    first = f"run `{_generate_into(out)}` first"
    if not out.is_dir():
        why = "is a file, not a folder of generated jobs" if out.exists() else "no such folder"
        raise OptionError([Problem(str(out), 0, 0, "", f"--out: {why}: {first}")])
    manifest = read_entries(out)
    if not manifest:
        raise OptionError([Problem(str(out), 0, 0, "", f"--out: no generated jobs here: {first}")])
    if not names:
        return manifest, list(manifest)
    matrices = matrix_jobs((n, e.matrix["job"] if e.matrix else None) for n, e in manifest.items())
    chosen = select_names(names, list(manifest), matrices)
    if chosen.unknown:
        raise OptionError(
            [Problem(str(out), 0, 0, "", f"--job {n!r}: {_no_such_job(n, manifest, matrices)}") for n in chosen.unknown]
        )
    return manifest, chosen.jobs


def _check_outputs(out: Path, workspace: Path, manifest: dict, selected: list[str], results_path, reports) -> None:
    """Refuse, before any job runs, a results file, plot, or workspace folder we may not write."""
    managed = {"the generated jobs folder": out, "the workspaces folder": workspace}
    problems = check_results(Path(results_path), managed) if results_path else []
    if reports:
        plots = [n for n in selected if manifest[n].receiver] + plot_names(selected, manifest)
        problems += check_reports(Path(reports), plots, managed)
    store = project_store(results_path, [manifest[n] for n in selected])
    problems += check_store(store) if store else []
    problems += check_workspace(workspace, out)
    if problems:
        raise OutputError(problems)
    problems = check_paths(workspace)
    if problems:
        raise JobgenError(problems)


def _run_serial(out, workspace, manifest, selected, reports, timeout, events, received, _parallel) -> list[JobResult]:
    """Run the jobs one after the other in this (the main) thread, until a stop signal (the
    results so far are written all the same)."""
    results: list[JobResult] = []
    for name in selected:
        if received:
            break
        results.append(_simulate_one(out, workspace, name, manifest[name], reports, timeout, events))
    return results


def _run_parallel(out, workspace, manifest, selected, reports, timeout, events, received, parallel) -> list[JobResult]:
    """Run up to ``parallel`` jobs at once in worker threads, started in the order of ``selected``;
    on a stop signal stop them all.

    The main thread only waits (and receives the signal, :func:`interrupt_on_signals`, which
    records it in ``received``); each worker's run sees it within 0.1 s and stops
    (:func:`generator.runner.run_process`). Jobs not started by then are not run. Returns the
    results in the order of ``selected``.
    """
    done: dict[str, JobResult] = {}

    def work(name: str) -> None:
        if not received:
            done[name] = _simulate_one(out, workspace, name, manifest[name], reports, timeout, events)

    installed_line()  # read once here: a worker's first lines then come with no I/O before them (_simulate_one)
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="simulate") as pool:
        futures = [pool.submit(work, name) for name in selected]
        wait(futures)
        for future in futures:
            future.result()  # a worker's error (e.g. a path NVFlare cannot be given) is raised here
    return [done[name] for name in selected if name in done]


def _simulate_one(out: Path, workspace, name: str, info: ManifestEntry, reports, timeout, events) -> JobResult:
    """Simulate one job of :func:`simulate_all`, telling ``events`` when it starts (not for a job of
    another NVFlare line: a trial saw "simulating" and then "FAILED, not started") and ends. The
    check comes before the job's first line at no cost (no I/O: the parallel jobs' first lines keep
    their start order); a tracking server's probe, which can take seconds, comes after it."""
    other = JobResult(name=name, rounds=info.num_rounds, receiver=info.receiver)
    if _other_line(other, info):
        other.matrix = info.matrix
        events.job_finished(other)
        return other
    events.job_started(name, info, job_timeout(info, timeout))
    try:
        result = simulate_job(out, Path(workspace), name, info, events, reports=reports, timeout=timeout)
    except Interrupted as e:  # while it was being prepared (see _run_simulator): it never started
        result = JobResult(name=name, rounds=info.num_rounds, receiver=info.receiver, status=INTERRUPTED)
        result.problems.append(job_problem(name, f"interrupted by {e.name}"))
        result.log = str(log_path(workspace, name))
    result.matrix = info.matrix
    events.job_finished(result)
    return result


class RunInterrupted(JobgenError):
    """``simulate`` (or ``poc``, ``submit``) was stopped by a signal; its exit code is 128 + the
    signal's number (shell convention).

    Args:
        signal_name (str): e.g. ``"SIGTERM"``. results_path: where the results were written (or None).
        jobs (int): how many jobs are in the results (the interrupted one included).
        command (str): the command that was stopped, as the message names it.
    """

    def __init__(self, signal_name: str, results_path, jobs: int, command: str = "simulate"):
        if not jobs:
            where = " before any job ran; no results written"
        else:
            where = f"; the results of {jobs} job(s) are in {results_path}" if results_path else ""
        super().__init__([Problem(command, 0, 0, "", f"interrupted by {signal_name}{where}")])
        self.exit_code = 128 + signal.Signals[signal_name].value


def _no_such_job(name: str, manifest: dict, matrices: dict) -> str:
    """Why ``--job name`` selects nothing, with the nearest job or matrix job name, else every name."""
    close = nearest(name, list(manifest), matrices)
    have = listed(list(manifest)) + (f"; matrix jobs: {listed(list(matrices))}" if matrices else "")
    hint = f"; did you mean {close!r}?" if close else f" (have: {have})"
    return f"{not_found(name, 'generated job')}{hint}"
