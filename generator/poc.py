"""POC and submit stages: run generated job folders on a real NVFlare system and judge them as ``simulate`` does.

Takes the output folder of ``generate`` and gives one :class:`generator.simulate.JobResult` per job,
judged from NVFlare's own records exactly as a simulated run is (:func:`generator.simulate.judge_run`,
:func:`generator.simulate.judge_metrics`).

- ``poc`` (:func:`poc_all`) prepares and starts NVFlare's POC system on this machine
  (:mod:`generator.pocsystem`: the clients the selected jobs run on, one free loopback port,
  ``HOME`` and the POC workspace inside ``--workspace``), waits until every client is connected
  (:func:`generator.admin.ready_session`, on the session that then runs the jobs), runs the jobs,
  and always stops the system and every process left under its workspace: after success, a failed
  job, a timeout, a stop signal or an error (:func:`generator.pocsystem.stop_poc`).
- ``submit`` (:func:`submit_all`) does the same against a system that already runs, through an
  admin startup kit (production, or someone's POC; :func:`generator.admin.admin_kit`); it never
  starts or stops anything.

Each job goes through NVFlare's Python admin API (``nvflare.fuel.flare_api.flare_api``):
``Session.submit_job`` (a copy of the folder as generated, its ``@ALL`` deploy_map pinned to the
job's own sites, :func:`pin_sites`: this path keeps every config key as written, a dotted key such
as ``mlflow.note.content`` included), the job's status polled with
``get_job_meta`` until it ends or its timeout (:func:`generator.simulate.job_timeout`) passes
(then ``abort_job``: ``TIMEOUT``), ``download_job_result`` into ``<downloads>/<job>/`` laid out
as a simulator workspace (:data:`generator.layout.DOWNLOAD_MAP`), the clients' run logs added
from the POC workspace when the system is local. Up to ``parallel`` jobs run at once (NVFlare's
server schedules several when resources allow). Progress goes to the caller's events (the CLI's
:class:`generator.reporter.Reporter`); this module prints nothing.

Imports nvflare (lazily); the generate path never imports this module.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from .admin import (
    System,
    admin_kit,
    close_session,
    connected_clients,
    download_result,
    login,
    nvflare_hint,
    unreachable,
)
from .errors import OutputError, Problem, SimulationError
from .judge import RoundTracker, client_exceptions
from .layout import DOWNLOAD_LOGS, DOWNLOAD_MAP, MPL_DIR, POC_RESULTS_MARKER, SERVER_SITE, ManifestEntry
from .lines import installed_line
from .order import chosen_order
from .outputs import check_reports, check_results, one_run_in, write_results
from .plot import matplotlib_dir
from .pocsystem import (
    POC_LOG,
    POC_MAX_JOBS,
    check_downloads,
    check_poc_paths,
    check_poc_workspace,
    counted_sites,
    prepare_poc,
    route,
    sites_for,
    start_poc,
    stop_poc,
)
from .runner import Interrupted, check_interrupted, interrupt_on_signals, stop_earlier_run
from .safepaths import remove_stale_links, run_paths
from .simulate import (
    FAILED,
    INTERRUPTED,
    OK,
    TIMEOUT,
    JobResult,
    RunInterrupted,
    compare_sweeps,
    job_problem,
    job_timeout,
    judge_cross_site,
    judge_metrics,
    judge_run,
    report_edits,
    result_record,
    selected_jobs,
)
from .sweep import plot_names

#: NVFlare's job status once the job ended normally (``nvflare/apis/job_def.py``, ``RunStatus.FINISHED_COMPLETED``).
COMPLETED = "FINISHED:COMPLETED"
#: Seconds between two polls of a running job's status (and of the POC server's log for progress).
POLL_SECONDS = 0.5
#: Seconds an aborted job may take to end before its result is fetched anyway.
ABORT_GRACE = 30
#: Seconds the processes of a stopped POC system get to exit by themselves before they are sent
#: The same once ``shutdown all`` was accepted: NVFlare's server and clients then take about 5 s more
#: to exit by themselves (measured here), with every job already ended and its result downloaded,
#: How messages name the ``--downloads`` folder.
DOWNLOADS = "the downloads folder"


class PocEvents:
    """What ``poc`` and ``submit`` tell their caller while they run; every method here does nothing.

    The events of :class:`generator.simulate.SimulateEvents` (``round_started``, ``job_finished``,
    ``all_finished``) plus the system's steps and each job's submission. The CLI passes a
    :class:`generator.reporter.Reporter`.
    """

    def system_step(self, text: str) -> None:
        """A step of the system's life (prepared, started, stopped), in words."""

    def earlier_run_stopped(self, folder: str, pids: list[int]) -> None:
        """Before this run cleared the POC workspace ``folder``, the processes ``pids`` of the POC system
        an earlier run there left running (it was killed before it could stop it) were stopped."""

    def job_submitted(self, name: str, info: ManifestEntry, timeout: float, job_id: str) -> None:
        """Job ``name`` was accepted by the server as ``job_id``; ``timeout`` is its limit in seconds."""

    def round_started(self, name: str, number: int, rounds: int, seconds: float) -> None:
        """The server of job ``name`` started round ``number`` of ``rounds``, ``seconds`` after submission."""

    def order_chosen(self, order: list[str], source: str) -> None:
        """Before the first submission: the jobs go in ``order``, not in file order, longest first
        by their wall times in the earlier results file ``source`` (:mod:`generator.order`)."""

    def folders_edited(self, files: list[tuple[Path, str]]) -> None:
        """Before the first job: files of the jobs to run that are not what ``generate`` wrote
        (:func:`generator.write.edited_files`); they are submitted as they are."""

    def job_finished(self, result: JobResult) -> None:
        """A job ended (any status), judged."""

    def all_finished(self, results: list[JobResult]) -> None:
        """Every job ended (or the run was stopped): ``results`` in file order."""

    def sweeps_compared(self, sweeps: list) -> None:
        """After ``all_finished``: the :class:`generator.sweep.Sweep` of each matrix job (may be empty)."""


# --- one job ------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """A submitted job while it runs."""

    name: str
    info: ManifestEntry
    result: JobResult
    job_id: str
    started: float
    deadline: float
    tracker: RoundTracker | None = None
    status: str = ""
    aborted_at: float | None = None
    clients_ended_at: float | None = None
    problems: list = field(default_factory=list)
    fetched: bool | None = None  # None: not fetched yet; else whether its result was downloaded


class _LiveTracker(RoundTracker):
    """A :class:`RoundTracker` of ``info``'s job on a log file given by path (a local POC server's run
    log of one job, ``<server workspace>/<job id>/log.json``)."""

    def __init__(self, log: Path, info: ManifestEntry, server: str):
        super().__init__(log.parent, info.num_rounds, info.workflow, info.num_clients, info.clients, server)
        self._log = log

    @property
    def log_path(self) -> Path:
        return self._log

    def poll(self, final: bool = False) -> list[int]:
        """The rounds started since the last poll (``final``: the job ended; the log is read anyway)."""
        return super().poll()


#: Seconds between two reads of a remote server's run log for round progress (``submit``).
REMOTE_PROGRESS_SECONDS = 3.0


class _RemoteTracker(RoundTracker):
    """A :class:`RoundTracker` of ``info``'s job on a system with no files here (``submit``), for
    progress only (the job is judged from its downloaded result).

    Every :data:`REMOTE_PROGRESS_SECONDS` it reads the records of the workflow's round-start logger
    from the server's run log (``<job id>/log.json`` in the server's workspace) with the admin API's
    ``grep`` command (``Session.grep_target``: one command, about 0.02 s on a POC server). A server
    that refuses it (NVFlare's ``shell_commands`` right, which a project admin has) gives no progress
    and is not asked again.

    Args:
        session: the logged-in admin session (``flare_api.Session``). job_id (str): NVFlare's job id.
        info (ManifestEntry): the job's manifest entry. server (str): the server's identity in ``fl_ctx``.
    """

    def __init__(self, session, job_id: str, info: ManifestEntry, server: str):
        super().__init__(Path(job_id), info.num_rounds, info.workflow, info.num_clients, info.clients, server)
        self._session, self._job_id = session, job_id
        self._lines, self._next, self.off = 0, 0.0, False

    def poll(self, final: bool = False) -> list[int]:
        """The rounds started since the last read; reads at most every :data:`REMOTE_PROGRESS_SECONDS`,
        but at once when ``final`` (the job ended: its last rounds are told before its result)."""
        now = time.monotonic()
        if self.off or (now < self._next and not final):
            return []
        self._next = now + REMOTE_PROGRESS_SECONDS
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                text = self._session.grep_target(
                    SERVER_SITE, pattern=self.spec.round_started[0], file=f"{self._job_id}/log.json"
                )
        except Exception:  # refused, or the command is unknown: no progress, the run goes on
            self.off = True
            return []
        lines = str(text or "").splitlines()
        if len(lines) < self._lines:  # NVFlare rotated the log (20 MB): the new file holds newer records
            self._lines = 0
        new, self._lines = lines[self._lines :], len(lines)
        started = []
        for line in new:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    started.append(self.feed(record))
        return [n for n in started if n is not None]


def arrange_download(downloaded: Path, job_dir: Path) -> None:
    """Lay a downloaded job result out in ``job_dir`` as a simulator workspace
    (:data:`generator.layout.DOWNLOAD_MAP`); ``job_dir`` is replaced.

    Args:
        downloaded (Path): ``<destination>/<job id>`` from ``Session.download_job_result``.
        job_dir (Path): ``<downloads>/<job>``.
    """
    if job_dir.exists():
        shutil.rmtree(job_dir)
    for source, target in DOWNLOAD_MAP:  # the logs first, then the rest of the run folder
        if (downloaded / source).exists():
            (job_dir / target).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(downloaded / source), str(job_dir / target))


def _copy_logs(source: Path, target: Path) -> None:
    """Copy the run logs (:data:`DOWNLOAD_LOGS`) a local site's ``source`` folder holds into ``target``."""
    for name in DOWNLOAD_LOGS:
        if (source / name).is_file():
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, target / name)


def _copy_site_logs(system: System, session, run: _Run, job_dir: Path) -> None:
    """Put each client's run logs in ``job_dir/<site>/``: from the local POC workspace
    (``<sites_dir>/<site>/<job id>/``), else what ``Session.get_job_logs`` can give (NVFlare keeps
    client logs on the server only when the system streams them)."""
    for site in run.info.sites:
        target = job_dir / site
        if system.sites_dir is not None:
            _copy_logs(system.sites_dir / site / run.job_id, target)
            continue
        for name in ("log.json", "log.txt"):
            with contextlib.suppress(Exception), contextlib.redirect_stdout(io.StringIO()):
                text = session.get_job_logs(run.job_id, target=site, log_file_name=name).get("logs", {}).get(site)
                if isinstance(text, str) and text:
                    target.mkdir(exist_ok=True)
                    (target / name).write_text(text, encoding="utf-8")


def _keep_logs(system: System, run: _Run, downloads: Path) -> Path | None:
    """Copy an interrupted job's run logs, as they are, from the local POC workspace into
    ``<downloads>/<job>/`` (``server/`` and each site's folder, as a download lays them out), so that
    they outlive the workspace, which the next ``poc`` clears (a trial found its interrupted jobs'
    logs gone); the copied server ``log.txt``, or None when the server had not deployed the job."""
    server_dir = run.tracker.log_path.parent
    if not (server_dir / "log.txt").is_file():
        return None
    job_dir = downloads / run.name
    with contextlib.suppress(OSError):
        _copy_logs(server_dir, job_dir / SERVER_SITE)
    with contextlib.suppress(OSError):
        _copy_site_logs(system, None, run, job_dir)
    return job_dir / SERVER_SITE / "log.txt"


def _judge(system: System, run: _Run, job_dir: Path) -> None:
    """Judge a downloaded run as ``simulate`` judges a simulated one (``judge_run``, ``judge_cross_site``,
    ``judge_metrics``)."""
    result, info = run.result, run.info
    tracker = RoundTracker.for_job(job_dir, info, server=system.server_identity)
    # Every file in the download is this job's: no model or metric point predates the run.
    judge_run(result, job_dir, tracker, None, 0.0, info)
    if run.status and run.status != COMPLETED:  # empty: contact was lost, recorded when it was
        result.problems.append(job_problem(run.name, f"NVFlare ended job {run.job_id} with status {run.status}"))
    if info.cross_site_eval:
        judge_cross_site(result, info, job_dir)
    if result.receiver:  # the plot goes beside the download, <downloads>/<job>/<job>.png, as simulate's
        judge_metrics(result, info, job_dir, since_ms=0, reports=job_dir)
    if result.problems:
        result.problems[:0] = [job_problem(run.name, m) for m in client_exceptions(job_dir)]


def _fetch(system: System, session, run: _Run, downloads: Path) -> None:
    """Download a job that ended (or was aborted) into ``downloads/<job>`` laid out as a simulator
    workspace, with each client's run logs (once); ``run.fetched``: whether the server gave its
    result (if not, why is in the job's problems)."""
    if run.fetched is not None:
        return
    result = run.result
    result.wall_seconds = round(time.monotonic() - run.started, 2)
    job_dir = downloads / run.name
    result.workspace = str(job_dir)
    result.log = str(job_dir / SERVER_SITE / "log.txt")
    with tempfile.TemporaryDirectory(prefix=".download-", dir=downloads) as tmp:
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                location = download_result(session, run.job_id, tmp)
        except Exception as e:
            result.problems.append(job_problem(run.name, f"cannot download the result of job {run.job_id}: {e}"))
            location = None
        if location:
            arrange_download(Path(location), job_dir)
    _copy_site_logs(system, session, run, job_dir)
    run.fetched = bool(location)


def _missed_rounds(run: _Run, job_dir: Path, server: str) -> list[int]:
    """The rounds a job on a remote system (``submit``) started that its progress never told, from
    its downloaded server log (``job_dir``, laid out as a simulator workspace; ``server``: the
    server's identity): :class:`_RemoteTracker` reads the server's run log every few seconds, and
    NVFlare archives that log before the job's status says FINISHED, so a last round that started
    after the last read was not told (a trial's 2-round job printed round 1 only)."""
    if not isinstance(run.tracker, _RemoteTracker) or not run.fetched:
        return []
    told = run.tracker.rounds_started
    downloaded = RoundTracker.for_job(job_dir, run.info, server=server)
    return [number for number in downloaded.poll() if number > told]


def server_reasons(system: System, session, job_id: str, limit: int = 3) -> list[str]:
    """What the server's own log (``log.json`` of its workspace, not a job's run log) says at ERROR
    about ``job_id``: read as a file on a local POC system, else through the admin API's ``grep``
    (``Session.grep_target``; nothing when refused). At most ``limit`` distinct messages, first lines.

    Seen: a job NVFlare could not start (``FINISHED:FAILED_TO_RUN``) has no run log at all; only
    the server's log says why, e.g. ``JobRunner``'s "Failed to run the Job (<id>): FileNotFoundError:
    [Errno 2] No such file or directory: '/work/my'" for a system started from a Python environment
    whose path has a space (NVFlare's job launcher splits its command at spaces)."""
    text = ""
    if system.sites_dir is not None:
        with contextlib.suppress(OSError):
            text = (system.sites_dir / SERVER_SITE / "log.json").read_text(encoding="utf-8", errors="replace")
    else:
        with contextlib.suppress(Exception), contextlib.redirect_stdout(io.StringIO()):
            text = str(session.grep_target(SERVER_SITE, pattern=job_id, file="log.json") or "")
    reasons: list[str] = []
    for line in text.splitlines():
        if job_id not in line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or record.get("levelname") not in ("ERROR", "CRITICAL"):
            continue
        message = str(record.get("message", "")).strip().split("\n", 1)[0]
        if message and message not in reasons:
            reasons.append(message)
    return reasons[:limit]


def _never_ran(system: System, session, run: _Run, job_dir: Path) -> bool:
    """Record in ``run.result`` a job NVFlare ended before it ran (a ``FINISHED`` status other than
    COMPLETED and no server run log in its download), with the server's reason; True if it is one.
    Its other checks (rounds, model, metric points) would only repeat that nothing ran."""
    if (
        not run.status.startswith("FINISHED")
        or run.status == COMPLETED
        or (job_dir / SERVER_SITE / "log.json").exists()
    ):
        return False
    result = run.result
    reasons = server_reasons(system, session, run.job_id)
    said = "; ".join(reasons) if reasons else "nothing at ERROR about it"
    if system.sites_dir is not None:
        result.log = str(system.sites_dir / SERVER_SITE / "log.txt")
        where = result.log
    else:
        result.log = None  # nothing of it was downloaded: see the problem
        where = "log.txt in the server's workspace"
    result.problems.append(
        job_problem(
            run.name,
            f"NVFlare ended job {run.job_id} with status {run.status} before it ran (no run log was made); "
            f"the server's log ({where}) says: {said}",
        )
    )
    return True


def _settle(system: System, session, run: _Run, downloads: Path) -> bool:
    """The part of concluding an ended job that talks to the server (so it stays on the thread that
    owns ``session``): download it (:func:`_fetch`, if not done yet) and tell whether it ran and is
    to be judged (not when it timed out, was not downloaded, or NVFlare ended it before it ran:
    :func:`_never_ran`)."""
    _fetch(system, session, run, downloads)
    if run.result.status == TIMEOUT or not run.fetched:
        return False
    return not _never_ran(system, session, run, downloads / run.name)


def _verdict(system: System, run: _Run, downloads: Path, ran: bool) -> JobResult:
    """Judge a job :func:`_settle` concluded (``ran``: whether it is to be judged), from its download
    only: safe on a worker thread while the job loop goes on (reading a metrics store and plotting
    hold :data:`generator.simulate._READERS_LOCK`, as ``simulate --parallel``'s threads do)."""
    result, job_dir = run.result, downloads / run.name
    if result.status == TIMEOUT:
        tracker = RoundTracker.for_job(job_dir, run.info, server=system.server_identity)
        tracker.poll()
        result.rounds_started, result.stopped_round = tracker.rounds_started, tracker.stopped_round
        raised = [m for m in client_exceptions(job_dir) if not ABORTED_IN_SCRIPT.search(m)]
        result.problems[:0] = [job_problem(run.name, m) for m in raised]
        result.problems += run.problems
        return result
    if ran:
        _judge(system, run, job_dir)
    result.ok = not result.problems
    result.status = OK if result.ok else FAILED
    return result


def _finish(system: System, session, run: _Run, downloads: Path) -> JobResult:
    """Fetch (if not done yet) and judge a job that ended, on this thread (:func:`_settle`, :func:`_verdict`)."""
    return _verdict(system, run, downloads, _settle(system, session, run, downloads))


def _refused(name: str, info: ManifestEntry) -> JobResult | None:
    """A FAILED result when the job was written for another NVFlare line than this environment's
    (whose admin API, and POC system, it would be submitted through); else None. (Its clients are
    checked against the system's once it runs: :func:`missing_clients`.)"""
    line = info.nvflare_version
    if line and line != installed_line():
        result = JobResult(name=name, rounds=info.num_rounds, receiver=info.receiver)
        result.problems.append(
            job_problem(
                name,
                f"written for NVFlare {line} (nvflare_version) but this environment's nvflare is the "
                f"{installed_line()} line: it is not submitted to a system of another line; generate it for "
                f"{installed_line()}",
            )
        )
        return result
    return None


def pin_sites(job_dir: Path, info: ManifestEntry) -> bool:
    """Replace ``@ALL`` in the ``deploy_map`` of ``job_dir/meta.json`` (a copy about to be submitted)
    with the server and the clients the job was written for (``ManifestEntry.sites``: the sites
    ``simulate`` runs it on); True when changed.

    In NVFlare ``@ALL`` means every site of the system the job is deployed to. In the simulator those
    are exactly the job's clients; a POC system made for several jobs has as many clients as the
    largest of them, and a production system has its own: there ``@ALL`` deploys the job to every
    client (seen: a job of ``num_clients`` 1 started a job process on both clients of a POC system),
    and the workflow picks which of them train. Pinned, the job runs where ``simulate`` ran it; a
    deploy_map that names sites is left as it is.
    """
    meta_path = job_dir / "meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    deploy_map = meta.get("deploy_map")
    if not isinstance(deploy_map, dict) or not any("@ALL" in (sites or []) for sites in deploy_map.values()):
        return False
    pinned = [SERVER_SITE, *info.sites]
    meta["deploy_map"] = {app: (pinned if "@ALL" in (sites or []) else sites) for app, sites in deploy_map.items()}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return True


def missing_clients(name: str, info: ManifestEntry, connected: list[str] | None) -> JobResult | None:
    """A FAILED result, not submitted, when a client the job was written for (``ManifestEntry.sites``) is
    not connected to the system (``connected``: the clients ``get_system_info`` lists; None: not
    known, nothing is refused); else None. NVFlare would keep such a job waiting for that client
    until its timeout, and the job would be judged on sites it never ran on."""
    if connected is None:
        return None
    sites = info.sites
    missing = [site for site in sites if site not in connected]
    if not missing:
        return None
    listed = ", ".join(connected) or "none"
    if len(missing) == len(sites) and not info.clients:
        why = (
            f"is written for {', '.join(missing)} (site-1 .. site-N: the job sets no `clients`) but the "
            f"system's connected clients are {listed}: it is not submitted; name the clients to run it on "
            f"in the job's `clients` ({' or '.join((info.made_from or {}).get('jobs') or ['jobs.yaml'])})"
        )
    else:
        why = (
            f"needs {', '.join(missing)}, not connected to the system (connected clients: {listed}): it is "
            f"not submitted (the server would keep it waiting until its timeout); start "
            f"{'that client' if len(missing) == 1 else 'those clients'}, or run the job on the clients there are"
        )
    result = JobResult(name=name, rounds=info.num_rounds, receiver=info.receiver, matrix=info.matrix)
    result.problems.append(job_problem(name, why))
    return result


def _submit(
    session, out: Path, name: str, info: ManifestEntry, timeout, events, system: System, staging: Path
) -> _Run | JobResult:
    """Submit a copy of one job folder (made in ``staging``); a :class:`_Run`, or a FAILED result when
    the server refused it."""
    result = JobResult(name=name, rounds=info.num_rounds, receiver=info.receiver, matrix=info.matrix)
    result.timeout = job_timeout(info, timeout)
    started = time.monotonic()
    # NVFlare's upload signs the folder in place (file_transfer.push_folder: sign_folders writes
    # .__nvfl_sig.json and .__nvfl_submitter.crt into every folder): a copy is submitted, so the
    # generated folder stays as generate wrote it.
    with tempfile.TemporaryDirectory(prefix=".submit-", dir=staging) as tmp:
        copy = Path(tmp) / name
        shutil.copytree(out / name, copy, symlinks=True)
        pin_sites(copy, info)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                job_id = session.submit_job(str(copy.resolve()))
        except Exception as e:  # NVFlare's reason names the copy: the user knows the generated folder
            why = str(e).replace(str(copy.resolve()), str(out / name))
            result.problems.append(job_problem(name, f"the server refused the job folder {out / name}: {why}"))
            events.job_finished(result)
            return result
    result.job_id = job_id
    run = _Run(name, info, result, job_id, started, started + result.timeout)
    if system.sites_dir is not None:
        run.tracker = _LiveTracker(system.sites_dir / SERVER_SITE / job_id / "log.json", info, system.server_identity)
    else:
        run.tracker = _RemoteTracker(session, job_id, info, system.server_identity)
    events.job_submitted(name, info, result.timeout, job_id)
    return run


#: What NVFlare's Client API raises in a training script once the job is aborted (``RuntimeError:
#: request to abort the job for reason '<task>' is aborted, abort_signal_triggered``:
#: ``nvflare/client/in_process/api.py``, the reason from ``client_api/*_backend.py``). For a job
#: aborted at its timeout that is the abort's effect, not an error of the script: a trial read it
#: as its script having raised.
ABORTED_IN_SCRIPT = re.compile(r"request to abort the job for reason .*abort_signal_triggered")

#: The last line NVFlare's job process logs in its run log (``<site>/<job id>/log.txt``) as it exits
#: (``nvflare/private/fed/app/utils.py`` via ``mpm``: "MPM: Good Bye!").
JOB_PROCESS_EXIT = "MPM: Good Bye!"
#: Seconds a job may keep running on the server after every client's job process exited before it is
#: aborted and reported FAILED. NVFlare's server learns that a client's job died from the client's
#: next report of its jobs, and only counts a job missing there once a report has listed it
#: (``sync_client_jobs_require_previous_report``, default true, ``nvflare/private/fed/server/
#: fed_server.py``): a client job that dies in its first seconds (a sub-process script whose
#: import fails) was seen to leave the server waiting until the job's timeout.
CLIENTS_GONE_GRACE = 20
#: Seconds a job may keep running on the server once every one of its job processes exited, the
#: server's too (its run log ends with :data:`JOB_PROCESS_EXIT`: its run ended), before it is aborted
#: and reported FAILED. The server's parent then only has to notice the exit, collect each client's
#: outcome and archive the result, which takes about 1 s; seen once in CI under heavy load (a test
#: run and a fresh-clone trial at once), it took the parent about 15 s to notice two jobs' server
#: processes had ended, and :data:`CLIENTS_GONE_GRACE` aborted a metrics job that had run well.
ENDED_RUN_GRACE = 120


def clients_exited(sites_dir: Path | None, job_id: str, sites: list[str]) -> bool:
    """Whether every site's job process of ``job_id`` has exited, from the end of its run log on a
    local system (``<sites_dir>/<site>/<job id>/log.txt`` ends with :data:`JOB_PROCESS_EXIT`); False
    when it cannot be told (no local system, a log missing)."""
    if sites_dir is None or not sites:
        return False
    for site in sites:
        try:
            with open(sites_dir / site / job_id / "log.txt", "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 4096))
                if JOB_PROCESS_EXIT.encode() not in f.read():
                    return False
        except OSError:
            return False
    return True


def _abort(session, run: _Run, now: float) -> None:
    run.aborted_at = now
    with contextlib.suppress(Exception), contextlib.redirect_stdout(io.StringIO()):
        session.abort_job(run.job_id)


def _job_status(session, job_id: str) -> str:
    """NVFlare's status of ``job_id`` (``Session.get_job_meta``; e.g. ``RUNNING``, ``FINISHED:COMPLETED``;
    empty when the meta has none). Raises whatever NVFlare raises when the server cannot say."""
    with contextlib.redirect_stdout(io.StringIO()):
        return str((session.get_job_meta(job_id) or {}).get("status", ""))


def _poll(session, run: _Run, events, sites_dir: Path | None = None) -> bool:
    """Look at a running job once; True when it ended (or its abort has had its grace period).

    A job still running :data:`CLIENTS_GONE_GRACE` seconds after every client's job process exited
    (:func:`clients_exited`, local systems only), or :data:`ENDED_RUN_GRACE` seconds when the
    server's job process has exited too, is aborted and reported FAILED; one still running at its
    deadline is aborted and reported TIMEOUT."""
    try:
        run.status = _job_status(session, run.job_id)
    except Exception as e:  # the server went away or refuses: the job is judged from what can be fetched
        run.result.problems.append(
            job_problem(run.name, f"lost contact with the server while job {run.job_id} ran: {type(e).__name__}: {e}")
        )
        return True
    finished = run.status.startswith("FINISHED")
    if run.tracker is not None:
        for number in run.tracker.poll(final=finished):
            events.round_started(run.name, number, run.info.num_rounds, time.monotonic() - run.started)
    now = time.monotonic()
    if finished:
        return True
    if run.aborted_at is None and clients_exited(sites_dir, run.job_id, run.info.sites):
        run.clients_ended_at = run.clients_ended_at or now
        if clients_exited(sites_dir, run.job_id, [SERVER_SITE]):  # its run ended: NVFlare is finishing it
            grace, why = ENDED_RUN_GRACE, "every job process of it (the server's too) had exited"
        else:
            grace, why = CLIENTS_GONE_GRACE, "every client's job process had exited"
        if now - run.clients_ended_at > grace:
            _abort(session, run, now)
            run.result.problems.append(
                job_problem(
                    run.name,
                    f"{why} for {grace} s while the server still ran the job: NVFlare aborted job "
                    f"{run.job_id} (abort_job)",
                )
            )
    if run.aborted_at is None and now >= run.deadline:
        _abort(session, run, now)
        run.result.status = TIMEOUT
        run.problems.append(
            job_problem(
                run.name,
                f"timed out after {run.result.timeout:g} s: NVFlare aborted job {run.job_id} (abort_job)"
                + _where_stopped(run),
            )
        )
    return run.aborted_at is not None and now - run.aborted_at > ABORT_GRACE


def _where_stopped(run: _Run) -> str:
    """``; it was in round 2 of 5, waiting for site-1 (...)`` from a local system's server log
    (:meth:`generator.judge.RoundTracker.where_stopped`); ``""`` where only round starts are read
    (``submit``: :class:`_RemoteTracker`) or there is no tracker."""
    if not isinstance(run.tracker, _LiveTracker):  # polled at the start of this poll (_poll)
        return ""
    return f"; it was {run.tracker.where_stopped()}"


def _ended_meanwhile(session, run: _Run) -> bool:
    """Whether the server has ``run``'s job as ended (its status ``FINISHED...``, then kept in
    ``run.status``) although the last poll had it running; False when it cannot say. A trial's
    Ctrl-C came 0.3 s after one job was downloaded, while another had ended and waited for the next
    poll: that one was recorded INTERRUPTED and its result was left behind."""
    try:
        status = _job_status(session, run.job_id)
    except Exception:
        return False
    if status.startswith("FINISHED"):
        run.status = status
        return True
    return False


def run_jobs(
    system: System,
    out: Path,
    manifest: dict,
    selected: list[str],
    downloads: Path,
    timeout: float | None,
    events,
    parallel: int = 1,
    when_done: Callable[[object], None] | None = None,
    session=None,
    abort: bool = True,
    order: list[str] | None = None,
) -> list[JobResult]:
    """Submit, wait for, download and judge each job on ``system``, up to ``parallel`` at once,
    submitted in ``order`` (the names of ``selected``; None: as ``selected``, see
    :func:`generator.order.start_order`).

    ``when_done`` (None: nothing) is called with the admin session once the last job's result is
    downloaded, before it is judged (``poc`` stops its system there, so that it is down by the time
    the last jobs are judged). ``session``: a logged-in admin session to use (None: one is opened);
    it is closed at the end either way.

    Each ended job is downloaded on this thread (the session's) and judged on a worker thread
    (:func:`_verdict`), so that polling and submitting go on while a metrics store is read and
    plotted (measured here: 2.2 s for the first metrics job, whose MLflow import comes with it;
    waited for in line, it held up noticing that the last job had ended by as much).

    A stop signal that the caller's :func:`generator.runner.interrupt_on_signals` recorded is
    looked for (:func:`generator.runner.check_interrupted`) before each submission and after each
    poll: it aborts every running job (each recorded ``INTERRUPTED``; one the server has as ended
    by then is downloaded and judged), the jobs being judged are waited for, and no more are
    submitted; the results so far are returned. ``abort`` False: the running jobs are
    recorded but not aborted one by one (``poc`` then stops its whole system at once).

    Returns:
        list[JobResult]: in the order of ``selected``.
    """
    results: dict[str, JobResult] = {}

    def refuse(name: str, refused: JobResult) -> None:
        results[name] = refused
        events.job_finished(refused)

    for name in selected:
        refused = _refused(name, manifest[name])
        if refused:
            refuse(name, refused)
    pending, running, ended = [n for n in order or selected if n not in results], [], []
    for name in selected:  # an earlier run's result of a job run now would pass for this run's
        if (downloads / name).is_dir() and not (downloads / name).is_symlink():
            shutil.rmtree(downloads / name)
    if pending:
        session = session or login(system)
        connected = connected_clients(session)
        for name in list(pending):
            refused = missing_clients(name, manifest[name], connected)
            if refused:
                pending.remove(name)
                refuse(name, refused)
    if not pending:
        close_session(session)
        return [results[n] for n in selected]

    def fill() -> None:
        """Submit pending jobs until ``parallel`` run (a job the server accepted is in ``running``
        before a stop signal is looked for again, so it is aborted)."""
        while pending and len(running) < parallel:
            check_interrupted()
            name = pending.pop(0)
            submitted = _submit(session, out, name, manifest[name], timeout, events, system, downloads)
            if isinstance(submitted, JobResult):
                results[name] = submitted
            else:
                running.append(submitted)

    judging: list[tuple[_Run, Future]] = []  # downloaded, judged on the pool's threads

    def report_judged(every: bool = False) -> None:
        """Record and tell the jobs whose judging ended (``every``: wait for each)."""
        for run, verdict in list(judging):
            if every or verdict.done():
                judging.remove((run, verdict))
                results[run.name] = verdict.result()
                events.job_finished(results[run.name])

    pool = ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="poc-judge")
    try:
        try:
            while pending or running or judging:
                fill()
                ended[:] = [run for run in running if _poll(session, run, events, system.sites_dir)]
                running[:] = [run for run in running if run not in ended]
                fill()  # the next jobs start before the ended ones are downloaded and judged
                if ended and not pending and not running:  # the last ones
                    for run in ended:
                        _fetch(system, session, run, downloads)
                    if when_done:
                        when_done(session)
                # Downloaded here (the session is this thread's), judged on the pool: reading a metrics
                # job's store and plotting it take seconds, and the other jobs' polls go on meanwhile.
                while ended:
                    ran = _settle(system, session, ended[0], downloads)
                    run = ended.pop(0)
                    for number in _missed_rounds(run, downloads / run.name, system.server_identity):
                        events.round_started(run.name, number, run.info.num_rounds, time.monotonic() - run.started)
                    judging.append((run, pool.submit(_verdict, system, run, downloads, ran)))
                report_judged()
                check_interrupted()
                if running:
                    time.sleep(POLL_SECONDS)
                elif judging:
                    wait([verdict for _, verdict in judging], timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
                check_interrupted()
        except Interrupted as e:  # recorded by the caller's interrupt_on_signals (later ones are only recorded)
            report_judged(every=True)
            ended += [run for run in running if _ended_meanwhile(session, run)]  # before the signal was seen
            running[:] = [run for run in running if run not in ended]
            for run in ended:  # they ended on the server: their results are fetched as usual
                results[run.name] = _finish(system, session, run, downloads)
                events.job_finished(results[run.name])
            for run in running:
                if abort:
                    with contextlib.suppress(Exception), contextlib.redirect_stdout(io.StringIO()):
                        session.abort_job(run.job_id)
                local = isinstance(run.tracker, _LiveTracker)
                if run.tracker is not None:  # the rounds it ran (on a remote system: as last read)
                    run.tracker.poll()
                    run.result.rounds_started = run.tracker.rounds_started
                if local:  # its run logs are here: kept in the downloads (the next poc clears the workspace)
                    kept = _keep_logs(system, run, downloads)
                    if kept:  # else the server had not deployed it yet
                        run.result.log = str(kept)
                run.result.status = INTERRUPTED
                run.result.wall_seconds = round(time.monotonic() - run.started, 2)
                # abort_job returns once the server has the request; the job ends there seconds later
                ended_by = (
                    f"asked NVFlare to abort job {run.job_id}" if abort else f"job {run.job_id} stopped with the system"
                )
                if not local:  # a remote system: its result stays there, not downloaded
                    hint = nvflare_hint(system, f"job download {run.job_id}")
                    ended_by += f"; once it has ended, its result is kept on the server ({hint})"
                run.result.problems.append(job_problem(run.name, f"interrupted by {e.name}: {ended_by}"))
                results[run.name] = run.result
                events.job_finished(run.result)
    finally:
        pool.shutdown(wait=True)
        close_session(session)
    return [results[n] for n in selected if n in results]


# --- the commands ---------------------------------------------------------------------------------------


def _prepare_outputs(downloads: Path, results_path: Path | None, managed: dict, plots: list[str] = ()) -> None:
    """Refuse, before anything runs, a downloads folder, results file or sweep plot we may not write.

    ``managed`` names the folders (``{what: path}``) the downloads folder must not overlap; the
    results file must not be inside any of them. ``plots``: the sweep plots (file stems,
    :func:`generator.sweep.plot_names`) the run may write into the downloads folder.
    """
    problems = check_downloads(downloads) + (check_results(results_path, managed) if results_path else [])
    if plots:  # where the downloads folder may be is checked below
        problems += check_reports(downloads, list(plots), None, "--downloads")
    here = Path(os.path.abspath(downloads))
    for what, folder in managed.items():
        there = Path(os.path.abspath(folder))
        if what != DOWNLOADS and (here == there or there in here.parents or here in there.parents):
            problems.append(
                Problem(str(downloads), 0, 0, "", f"--downloads: overlaps {what} {folder}: choose a folder beside it")
            )
    if problems:
        raise OutputError(problems)


@contextlib.contextmanager
def _held(folders: dict[str, Path], command: str, events, jobs: Path, results: Path | None = None) -> Iterator[None]:
    """Make and lock ``folders`` (``{option: folder}``) and the generated jobs folder ``jobs`` for this
    run (:func:`generator.outputs.one_run_in`: a second run on one of them, or a ``generate`` of
    ``jobs``, is refused; so is a second run on the existing ``results`` file), mark the downloads
    folder as ours, and stop what an earlier run in the POC workspace (``--workspace``) left
    running (told to ``events``). matplotlib (the metrics
    plots) keeps its config and font cache in ``<downloads>/_mpl`` for the block, not in ``HOME``
    (:func:`generator.plot.matplotlib_dir`; a job folder's name starts with a letter or digit).

    Raises:
        OutputError: another run holds a folder (nothing is changed).
    """
    with one_run_in(folders, command, jobs, results), matplotlib_dir(folders["--downloads"] / MPL_DIR):
        (folders["--downloads"] / POC_RESULTS_MARKER).write_text("job results downloaded by nvflare-jobgen\n")
        if "--workspace" in folders:
            stopped = stop_earlier_run(folders["--workspace"])
            if stopped:
                events.earlier_run_stopped(str(folders["--workspace"]), stopped)
            remove_stale_links(folders["--workspace"])  # what a killed run left in /tmp
        yield


def _conclude(
    results: list[JobResult], results_path, events, received: list[int], command: str, manifest: dict, downloads: Path
) -> list[JobResult]:
    events.all_finished(results)  # inside the caller's interrupt_on_signals: a signal now is only recorded
    events.sweeps_compared(compare_sweeps(results, manifest, downloads))  # as simulate: table, <job>-sweep.png
    if results_path and results:  # none: stopped before the first job, an earlier run's file is kept
        write_results(Path(results_path), [result_record(r) for r in results], command)
    if received:
        raise RunInterrupted(signal.Signals(received[0]).name, results_path, len(results), command)
    return results


def poc_all(
    out: str | Path,
    workspace: str | Path,
    names: list[str] | None = None,
    results_path: str | Path | None = None,
    downloads: str | Path = "build/poc",
    timeout: float | None = None,
    events=None,
    parallel: int = 1,
    relay: bool = False,
) -> list[JobResult]:
    """Run every generated job (or those in ``names``) on a POC system started for them, then stop it.

    Args:
        out: the generated jobs folder. workspace: the POC workspace folder (``HOME``, the POC
            system, the console log ``poc.log`` of the ``nvflare poc`` commands); cleared first.
        names: only these jobs. results_path: ``poc-results.json`` (None: not written).
        downloads: where each job's result goes, ``<downloads>/<job>/``.
        timeout: seconds per job, overriding each job's (:func:`generator.simulate.job_timeout`).
        events (PocEvents | None): told of the system's steps and each job's progress.
        parallel (int): jobs submitted at once (>= 1); above 1 the longest first by their times in
            the earlier ``results_path`` (:mod:`generator.order`).
        relay (bool): the system's job processes talk through the server's parent process, as on
            NVFlare's own POC, instead of directly (:data:`generator.pocsystem.DIRECT_COMM_CONFIG`).

    Returns:
        list[JobResult]: one per job run, in file order.

    Raises:
        OptionError, OutputError: bad ``--out``/``--job``, a folder or file we may not write, or
            a folder another run is using (:func:`generator.outputs.one_run_in`); before anything starts.
        SimulationError: the POC system could not be prepared or started (it is stopped).
        RunInterrupted: a stop signal arrived (running jobs aborted, the system stopped).
    """
    events = events or PocEvents()
    out, root, downloads = Path(out), Path(workspace), Path(downloads)
    manifest, selected = selected_jobs(out, names)
    problems = check_poc_workspace(root)
    if any(_refused(n, manifest[n]) is None for n in selected):  # a system is to be started
        problems += check_poc_paths(root)
    if problems:
        raise OutputError(problems)
    managed = {"the generated jobs folder": out, "the POC workspace": root, DOWNLOADS: downloads}
    results = Path(results_path) if results_path else None
    _prepare_outputs(downloads, results, managed, plot_names(selected, manifest))
    with _held({"--workspace": root, "--downloads": downloads}, "poc", events, out, results):
        report_edits(out, selected, events)
        return _poc_run(
            out, root.resolve(), manifest, selected, downloads, results_path, timeout, events, parallel, relay
        )


def _poc_run(
    out, root, manifest, selected, downloads, results_path, timeout, events, parallel, relay
) -> list[JobResult]:
    """:func:`poc_all` once its folders are checked and held: the jobs submitted in the order
    :func:`generator.order.chosen_order` gives, the results in file order."""
    order = chosen_order(selected, results_path, parallel, events)
    runnable = [n for n in selected if _refused(n, manifest[n]) is None]
    if not runnable:  # nothing to start a system for
        with interrupt_on_signals() as received:
            return _conclude(
                run_jobs(None, out, manifest, selected, downloads, timeout, events),
                results_path,
                events,
                received,
                "poc",
                manifest,
                downloads,
            )
    sites = sites_for([manifest[n] for n in runnable])
    results: list[JobResult] = []
    prepared, stopped = False, []

    def stop_now(session) -> None:  # every job's result is downloaded: the system ends before the last is judged
        close_session(session)
        stopped.append(stop_poc(root, log, at_once="every job ended and was downloaded", python=paths.python))

    # NVFlare's POC start scripts and job launchers split their command lines at spaces: the system
    # runs this Python through a link in a safe folder when its path needs it (generator.safepaths,
    # as simulate does; the link goes when the block ends). The workspace's own path must be safe
    # (check_poc_workspace): NVFlare resolves it (Workspace._join_under_root: os.path.realpath).
    with (
        run_paths(root) as paths,
        interrupt_on_signals() as received,
        open(root / POC_LOG, "w", encoding="utf-8") as log,
    ):
        if paths.links:
            log.write(f"NVFlare runs this Python as {paths.python} (a link: its path has a space or the like)\n")
        try:
            system, port, reused = prepare_poc(root, sites, log, max(parallel, POC_MAX_JOBS), paths.python, relay)
            prepared = True
            again = " (reusing the one an earlier run provisioned)" if reused else ""
            events.system_step(
                f"prepared a POC system of {counted_sites(sites)} in {root / 'poc'}{again}; "
                f"job processes connect {route(relay)}"
            )
            seconds, session = start_poc(root, system, port, sites, log, paths.bin_dir)
            try:
                events.system_step(f"started server (127.0.0.1:{port}) and {counted_sites(sites)} in {seconds:.1f} s")
            except BaseException:  # the session is run_jobs' to close only once it has it
                close_session(session)
                raise
            results = run_jobs(
                system,
                out,
                manifest,
                selected,
                downloads,
                timeout,
                events,
                parallel,
                stop_now,
                session,
                abort=False,
                order=order,
            )
        except Interrupted:  # preparing or starting the system: no job ran
            pass
        finally:
            if prepared:  # after a stop signal nothing of the system is left to keep
                why = f"stopped by {signal.Signals(received[0]).name}" if received else None
                outcome = stopped[0] if stopped else stop_poc(root, log, why, paths.python)
                _stop(root, events, outcome)
        return _conclude(results, results_path, events, received, "poc", manifest, downloads)


def _stop(root: Path, events, outcome: tuple[int, int]) -> None:
    """Tell ``events`` how the POC system in ``root`` stopped: ``outcome`` is :func:`stop_poc`'s."""
    code, left = outcome
    if code == 0:  # its processes' last seconds of wind-down are cut short by design (SHUTDOWN_GRACE)
        step, extra = "stopped the POC system", ""
    else:
        step = f"the POC system did not shut down when asked (`nvflare poc stop`: code {code})"
        extra = f"; stopped {left} process(es) it left running" if left else ""
    events.system_step(f"{step}{extra}; log: {root / POC_LOG}")


def submit_all(
    out: str | Path,
    startup_kit: str | Path,
    username: str | None = None,
    names: list[str] | None = None,
    results_path: str | Path | None = None,
    downloads: str | Path = "build/submit",
    timeout: float | None = None,
    events=None,
    parallel: int = 1,
) -> list[JobResult]:
    """Run every generated job (or those in ``names``) on a running system reached through an admin
    startup kit; nothing is started or stopped. Arguments, returns and errors as :func:`poc_all`
    (``startup_kit``, ``username``: see :func:`admin_kit`)."""
    events = events or PocEvents()
    out, downloads = Path(out), Path(downloads)
    manifest, selected = selected_jobs(out, names)
    system = admin_kit(startup_kit, username)
    why = unreachable(system)
    if why:  # before any folder is made
        raise SimulationError(
            f"cannot reach the NVFlare server of {system.startup_kit}: {why}; is it running? "
            f"(`{nvflare_hint(system, 'system status')}` asks it)"
        )
    managed = {
        "the generated jobs folder": out,
        "the startup kit": system.startup_kit,
        DOWNLOADS: downloads,
    }
    results_file = Path(results_path) if results_path else None
    _prepare_outputs(downloads, results_file, managed, plot_names(selected, manifest))
    results: list[JobResult] = []
    with _held({"--downloads": downloads}, "submit", events, out, results_file), interrupt_on_signals() as received:
        report_edits(out, selected, events)
        order = chosen_order(selected, results_path, parallel, events)
        with contextlib.suppress(Interrupted):  # between two polls: the results so far are returned
            results = run_jobs(system, out, manifest, selected, downloads, timeout, events, parallel, order=order)
        return _conclude(results, results_path, events, received, "submit", manifest, downloads)
