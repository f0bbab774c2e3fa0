"""Judge a simulated run from NVFlare's own records, never from text a client script can print.

Takes a simulator workspace (``nvflare simulator -w WS``); gives what NVFlare itself recorded:

- rounds, completion and model saves: the records of the job's workflow in the server's
  structured log, ``WS/server/log.json`` (one JSON object per line, written by NVFlare's
  ``JsonFormatter``, handler ``jsonFileHandler`` of ``nvflare/fuel/utils/log_config.json``, on
  NVFlare 2.9 and 2.7 alike), as :data:`WORKFLOW_RECORDS` lists them per ``workflow``. A record
  counts only if its logger is one of NVFlare's classes named there (``fullName``, e.g. the
  ``controller`` path of the generated ``config_fed_server.json``) and its ``fl_ctx`` names the
  server (``identity=simulator_server``, ``nvflare/private/fed/app/deployer/simulator_deployer.py``). A client
  script runs in a site's process (in-process: the site's worker; sub-process: a child of it), and
  its prints and log records go to the console and to ``WS/site-N/log.*``; nothing it prints
  reaches the server's log file. :class:`RoundTracker` reads the file as it grows, for progress
  lines and for the verdict.
- errors: ERROR/CRITICAL records of NVFlare's own loggers (``fullName`` ``nvflare.*``) in every
  ``WS/*/log.json`` (:func:`nvflare_errors`). A script's print (relayed at INFO) or its own
  logger's records (not ``nvflare.*``) never count.
- cross-site evaluation: the site x model matrix NVFlare's ValidationJsonGenerator wrote at the end
  of the run (``WS/server/simulate_job/cross_site_val/cross_val_results.json``), checked for a
  cell per evaluating client and model (:func:`cross_site_problems`).
- the reason of a failure: the exception that ended a client's script (the last one with a
  frame in ``custom/``; a traceback printed for a handled error comes before it), with the user script's
  ``file:line`` (:func:`client_exceptions`), from the site's ``log.json`` (a sub-process trainer's
  output is relayed there line by line; an in-process script's traceback is logged by NVFlare's
  ``TaskScriptRunner``) and, for an in-process script that fails while importing (its thread dies
  with the traceback on the worker's stderr only), the console log.

Never imports nvflare: it reads files.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .components import CROSS_SITE_EVAL, CYCLIC, DEFAULT_WORKFLOW, FEDAVG, MODEL_LOCATOR_ID
from .layout import CROSS_VAL_RESULTS, CUSTOM, SERVER_SITE, SITE_GLOB, ManifestEntry, site_names, site_number

#: The logger of the generated workflow: its class path (NVFlare names a component's logger so).
FEDAVG_LOGGER = FEDAVG.path
#: The simulator's server identity (``simulator_deployer.py``: ``"name": "simulator_server"``).
SIMULATOR_SERVER = "simulator_server"
#: NVFlare's structured log of a site, relative to the workspace (``log_config.json``).
LOG_JSON = "log.json"
SERVER_LOG = Path(SERVER_SITE) / LOG_JSON

#: FedAvg's messages (``nvflare/app_common/workflows/fedavg.py``, ``run``; the same on 2.7):
#: ``center_message(f"Round {n} started.")`` (a bordered, centred line), ``"Finished FedAvg."``,
#: and ``base_model_controller.py``'s ``"End persist model on server."`` after each round's save.
ROUND_STARTED = re.compile(r"^\s*Round (\d+) started\.\s*$", re.MULTILINE)
FINISHED = re.compile(r"^\s*Finished FedAvg\.\s*$", re.MULTILINE)
MODEL_SAVED = "End persist model on server."
#: FedAvg with ``stop_cond`` (``workflow_args``): each round's ``"Round N global metrics: {...}"``
#: (logged only then: the model is saved only when better, the best model), and at an early stop
#: ``"Stopping at round=N out of total_rounds=T."`` (N from 0; the same on 2.7 and 2.9).
GLOBAL_METRICS = re.compile(r"^Round \d+ global metrics: ")
EARLY_STOP = re.compile(r"^Stopping at round=(\d+) out of total_rounds=(\d+)\.$")
_IDENTITY = re.compile(r"\bidentity=([^,\]]+)")
_PEER = re.compile(r"\bpeer=([^,\]]+)")
_WORKFLOW_ID = re.compile(r"\bwf=([^,\]]+)")

#: The id of the generated workflow (``config_fed_server.json`` ``workflows[0].id``); NVFlare puts
#: it in the ``fl_ctx`` of the records logged while the workflow runs (``wf=controller``).
WORKFLOW_ID = "controller"
#: NVFlare's server-side task scheduler (``nvflare/apis/impl/wf_comm_server.py``): logs
#: ``"scheduled task <name>"`` when a workflow schedules a task (2.7 and 2.9).
WF_COMM_SERVER = "nvflare.apis.impl.wf_comm_server.WFCommServer"
#: NVFlare's server runner (``nvflare/private/fed/server/server_runner.py``): logs
#: ``"Workflow: <id> finalizing ..."`` when a workflow's control flow has returned (2.7 and 2.9).
SERVER_RUNNER = "nvflare.private.fed.server.server_runner.ServerRunner"


@dataclass(frozen=True)
class WorkflowRecords:
    """Which server records of one workflow say a round started, the model was saved, the workflow ended.

    Each is ``(logger fullName, compiled pattern)``; a ``round_started`` pattern with a group
    gives the round (from 0), one without counts rounds in order. Records of ``WF_COMM_SERVER``
    and ``SERVER_RUNNER`` count only when logged for the generated workflow (``wf=controller``).

    Attributes:
        name (str): the workflow's name in messages (``FedAvg``, ``CyclicController``).
        controller (str): the workflow's class path (its logger's ``fullName``).
        round_started, model_saved, finished (tuple[str, re.Pattern]): the records of each event.
        site_trained (tuple[str, re.Pattern] | None): for a workflow that must hear from every
            client each round, the record of one client's result (group 1: the site); None: not checked.
        result_received (tuple[str, re.Pattern] | None): the record of one client's result whose
            site is the ``peer`` of its ``fl_ctx``, only to say where a stopped run was
            (:meth:`RoundTracker.where_stopped`); None: ``site_trained`` says it, or nothing does.
    """

    name: str
    controller: str
    round_started: tuple
    model_saved: tuple
    finished: tuple
    site_trained: tuple | None = None
    result_received: tuple | None = None

    @property
    def loggers(self) -> tuple[str, ...]:
        """Every logger whose records are read."""
        found = [self.controller, *(r[0] for r in self.events)]
        found += [r[0] for r in (self.site_trained, self.result_received) if r]
        return tuple(dict.fromkeys(found))

    @property
    def events(self) -> tuple:
        """``(round_started, model_saved, finished)``."""
        return (self.round_started, self.model_saved, self.finished)


_SAVED = re.compile(r"^\s*" + re.escape(MODEL_SAVED) + r"\s*$")

#: Per ``workflow``: NVFlare's own records of its rounds, model saves and end (INFO; the root
#: logger's level in ``log_config.json``, so DEBUG records never reach ``log.json``).
#: FedAvg logs all three itself. CyclicController (``nvflare/app_common/workflows/cyclic_ctl.py``,
#: the same on 2.7) logs its rounds and its end at DEBUG only; at INFO it logs ``"Start/End persist
#: model on server."`` after each round (``persist_every_n_rounds`` 1). Its round starts when the
#: task scheduler logs ``"scheduled task train"`` (one relay task per round, ``control_flow``), and
#: it has ended when the server runner logs ``"Workflow: controller finalizing ..."``. Its relay
#: gives each site ``task_assignment_timeout`` seconds (10) to ask for the task and then offers it
#: to the next site too (``nvflare/apis/impl/seq_relay_manager.py``, logged at DEBUG only), so a
#: site that asked late is skipped for that round; the server runner's ``"got result from client
#: site-N for task: name=train"`` says which sites trained in each round.
WORKFLOW_RECORDS = {
    "fedavg": WorkflowRecords(
        name="FedAvg",
        controller=FEDAVG.path,
        round_started=(FEDAVG.path, ROUND_STARTED),
        model_saved=(FEDAVG.path, _SAVED),
        finished=(FEDAVG.path, FINISHED),
        result_received=(SERVER_RUNNER, re.compile(r"^finished processing client result by controller")),
    ),
    "cyclic": WorkflowRecords(
        name="CyclicController",
        controller=CYCLIC.path,
        round_started=(WF_COMM_SERVER, re.compile(r"^scheduled task train$")),
        model_saved=(CYCLIC.path, _SAVED),
        finished=(SERVER_RUNNER, re.compile(rf"^Workflow: {WORKFLOW_ID} finalizing \.\.\.$")),
        site_trained=(SERVER_RUNNER, re.compile(r"^got result from client (\S+) for task: name=train\b")),
    ),
}

#: Error levels of Python's logging that count as an error of the run.
ERROR_LEVELS = ("ERROR", "CRITICAL")


class LogJsonTail:
    """Read the records of an NVFlare ``log.json`` as it grows.

    Keeps the byte offset of the last whole line read; a line still being written is kept for the
    next read. NVFlare rotates the file at 20 MB (``RotatingFileHandler``, ``maxBytes`` 20971520):
    when ``log.json`` is a new file, the rest of the old one (now ``log.json.1``) is read first.

    Args:
        path (Path): the ``log.json`` file; it may not exist yet.
        needles (tuple[bytes, ...]): when given, only lines holding one of them are parsed (a
            cheap filter before JSON: a site's log may hold many thousands of records).
    """

    def __init__(self, path: Path, needles: tuple[bytes, ...] = ()):
        self.path = Path(path)
        self.needles = needles
        self._inode: int | None = None
        self._offset = 0
        self._partial = b""

    def _read_from(self, path: Path, offset: int) -> tuple[bytes, int]:
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except OSError:
            return b"", offset
        return data, offset + len(data)

    def read(self, final: bool = False) -> list[dict]:
        """The records written since the last call (oldest first); lines that are not JSON are skipped.

        Args:
            final (bool): the writer has stopped: a last line without its newline is read too.
        """
        try:
            st = os.stat(self.path)
        except OSError:
            return []
        data = b""
        if self._inode is not None and st.st_ino != self._inode:
            rotated = self.path.with_name(self.path.name + ".1")
            try:
                if os.stat(rotated).st_ino == self._inode:
                    data, _ = self._read_from(rotated, self._offset)
            except OSError:
                pass
            self._offset = 0
        self._inode = st.st_ino
        more, self._offset = self._read_from(self.path, self._offset)
        lines = (self._partial + data + more).split(b"\n")
        self._partial = b"" if final else lines.pop()  # b"" after a complete last line
        if self.needles:
            lines = [line for line in lines if any(needle in line for needle in self.needles)]
        return [record for record in map(_json_or_none, lines) if isinstance(record, dict)]


def _json_or_none(line: bytes):
    try:
        return json.loads(line)
    except ValueError:
        return None


def read_records(path: Path, needles: tuple[bytes, ...] = ()) -> list[dict]:
    """Every record of an NVFlare ``log.json`` (``[]`` if it does not exist); see :class:`LogJsonTail`.

    Args:
        path (Path): the ``log.json`` file.
        needles (tuple[bytes, ...]): when given, only lines holding one of these bytes are parsed.
    """
    return LogJsonTail(path, needles).read(final=True)


def _identity(record: dict) -> str:
    match = _IDENTITY.search(str(record.get("fl_ctx") or ""))
    return match.group(1) if match else ""


@dataclass
class RoundTracker:
    """Rounds, completion and model saves of a run, from the server's ``log.json``.

    Call :meth:`poll` as often as wanted (e.g. on each tick of the process runner, about every
    0.5 s); it reads only what was appended since the last call.

    Attributes:
        workspace (Path): the simulator workspace (``-w``); the log is ``server/log.json`` in it.
        num_rounds (int): ``num_rounds`` of the job.
        workflow (str): the job's ``workflow`` (a key of :data:`WORKFLOW_RECORDS`).
        num_clients (int): the job's clients; for a workflow that must hear from every client each
            round (``site_trained``), a round with fewer is a problem (0: not checked).
        sites (list[str] | None): the clients' names when the job names them (``clients``); None:
            ``site-1`` .. ``site-<num_clients>``.
        server (str): the server's identity in ``fl_ctx``.
        rounds_started (int): rounds the workflow started (FedAvg's ``Round N started.``, N from 0).
        saved_round (int): the round (1-based) after which the server last persisted the model;
            0 when no round's model was saved.
        finished (bool): the workflow logged its end (FedAvg's ``Finished FedAvg.``).
        best_model (bool): FedAvg ran with early stopping (``workflow_args.stop_cond``), so it saved
            a round's model only when it was better: the final model is the best one saved.
        stopped_round (int): the round (1-based) after which FedAvg stopped early (0: it did not).
        records (int): records of the workflow seen (0: the server never ran it).
        trained (dict): round (1-based) -> the sites whose result the server got in it, in order
            (for a workflow with ``site_trained`` or ``result_received`` records).
    """

    workspace: Path
    num_rounds: int
    workflow: str = DEFAULT_WORKFLOW
    num_clients: int = 0
    sites: list | None = None
    server: str = SIMULATOR_SERVER
    rounds_started: int = 0
    saved_round: int = 0
    finished: bool = False
    best_model: bool = False
    stopped_round: int = 0
    records: int = 0
    trained: dict = field(default_factory=dict)
    _tail: LogJsonTail | None = field(default=None, repr=False)

    @classmethod
    def for_job(cls, workspace: Path, info: ManifestEntry, server: str = SIMULATOR_SERVER) -> RoundTracker:
        """A tracker of ``info``'s job (its rounds, workflow, clients) run in ``workspace``.

        Args:
            workspace (Path): the simulator workspace, or a downloaded run laid out as one.
            info (ManifestEntry): the job's manifest entry.
            server (str): the server's identity in ``fl_ctx`` (a POC system's project name).
        """
        return cls(workspace, info.num_rounds, info.workflow, info.num_clients, sites=info.clients, server=server)

    @property
    def log_path(self) -> Path:
        """The server's ``log.json``."""
        return Path(self.workspace) / SERVER_LOG

    @property
    def spec(self) -> WorkflowRecords:
        """The records of :attr:`workflow` (:data:`WORKFLOW_RECORDS`)."""
        return WORKFLOW_RECORDS[self.workflow]

    def feed(self, record: dict) -> int | None:
        """Take one record (dict, a ``log.json`` line); returns the round (1-based) it started, else None.

        Records of another logger than the workflow's (:attr:`spec`), another identity than
        :attr:`server`, or (for NVFlare's task scheduler and server runner) another workflow are
        ignored.
        """
        spec, logger = self.spec, record.get("fullName")
        if logger not in spec.loggers or _identity(record) != self.server:
            return None
        if logger != spec.controller and _workflow_id(record) != WORKFLOW_ID:
            return None
        message = str(record.get("message", ""))
        if spec.result_received and logger == spec.result_received[0] and spec.result_received[1].search(message):
            peer = _PEER.search(str(record.get("fl_ctx", "")))
            if peer:
                self.trained.setdefault(self.rounds_started, []).append(peer.group(1))
            return None
        if spec.site_trained and logger == spec.site_trained[0]:
            site = spec.site_trained[1].search(message)
            if site:
                self.records += 1
                self.trained.setdefault(self.rounds_started, []).append(site.group(1))
                return None
        if logger == FEDAVG_LOGGER and self.workflow == DEFAULT_WORKFLOW:
            if GLOBAL_METRICS.search(message):
                self.best_model = True
            stop = EARLY_STOP.search(message.strip())
            if stop:
                self.stopped_round = int(stop.group(1)) + 1
        matched = [(l_, p.search(message)) for l_, p in spec.events]
        if logger != spec.controller and not any(m for l_, m in matched if l_ == logger):
            return None
        self.records += 1
        (started_by, started), (saved_by, saved), (finished_by, finished) = matched
        if started and started_by == logger:
            number = int(started.group(1)) + 1 if started.groups() else self.rounds_started + 1
            self.rounds_started = max(self.rounds_started, number)
            return number
        if saved and saved_by == logger:
            self.saved_round = self.rounds_started
        elif finished and finished_by == logger:
            self.finished = True
        return None

    def poll(self) -> list[int]:
        """Read the new records; returns the rounds (1-based) started since the last poll."""
        if self._tail is None:
            self._tail = LogJsonTail(self.log_path, tuple(json.dumps(name).encode() for name in self.spec.loggers))
        started = [self.feed(record) for record in self._tail.read()]
        return [n for n in started if n is not None]

    @property
    def rounds_expected(self) -> int:
        """The rounds the run should start: ``num_rounds``, or up to FedAvg's early stop."""
        return self.stopped_round or self.num_rounds

    @property
    def model_is_final(self) -> bool:
        """The workflow finished every round and saved the model after the last one; with early
        stopping (:attr:`best_model`), finished its rounds (up to the stop) and saved a best model."""
        if self.best_model:
            return self.finished and self.saved_round >= 1 and self.rounds_started == self.rounds_expected
        return self.finished and self.saved_round == self.num_rounds == self.rounds_started

    def problems(self) -> list[str]:
        """Why the records say the run did not complete (empty when it did)."""
        name = self.spec.name
        if not self.log_path.is_file():
            return [f"NVFlare's server log {self.log_path} was not written: the server did not start"]
        if not self.records:
            return [f"the {name} workflow never ran on the server (no record of it in {self.log_path})"]
        if self.rounds_started != self.rounds_expected:
            stop = f" (FedAvg stopped early after round {self.stopped_round})" if self.stopped_round else ""
            return [f"{self.rounds_started} of {self.num_rounds} rounds started{stop}"]
        skipped = self.skipped_sites()
        if skipped:
            return [
                f"round {n}: {', '.join(sites)} did not train (the server got no result from "
                f"{'it' if len(sites) == 1 else 'them'}; {name} offers the task to the next site when one "
                f"does not ask for it within task_assignment_timeout)"
                for n, sites in skipped.items()
            ]
        if not self.finished:
            if self.workflow == DEFAULT_WORKFLOW:
                return [f"FedAvg did not finish round {self.num_rounds} (no 'Finished FedAvg.' in {self.log_path})"]
            return [f"{name} did not finish round {self.num_rounds} (its workflow never ended in {self.log_path})"]
        return []

    def where_stopped(self) -> str:
        """Where the run was, by its records, when it was stopped (for a timeout's message): ``in round
        2 of 5, waiting for site-1 (the server had no result from it)``; the sites for a workflow whose
        records name them (a trial's hung script timed out with nothing to say where)."""
        if not self.records:
            return f"the {self.spec.name} workflow had not started"
        if self.finished:
            return f"the {self.spec.name} workflow had finished; the run had not ended"
        if not self.rounds_started:
            return "no round had started"
        where = f"in round {self.rounds_started} of {self.num_rounds}"
        if (self.spec.site_trained or self.spec.result_received) and self.num_clients:
            got = self.trained.get(self.rounds_started, [])
            waiting = [s for s in self.sites or site_names(self.num_clients) if s not in got]
            if waiting:
                them = "it" if len(waiting) == 1 else "them"
                where += f", waiting for {', '.join(waiting)} (the server had no result from {them})"
        return where

    def skipped_sites(self) -> dict[int, list[str]]:
        """Round (1-based) -> the sites ``site-1..site-<num_clients>`` the server got no result from in
        it, for a workflow with ``site_trained`` and a known :attr:`num_clients` (else ``{}``)."""
        if not self.spec.site_trained or not self.num_clients:
            return {}
        sites = self.sites or site_names(self.num_clients)
        skipped = {}
        for n in range(1, self.rounds_started + 1):
            missing = [s for s in sites if s not in self.trained.get(n, [])]
            if missing:
                skipped[n] = missing
        return skipped


#: The logger of NVFlare's simulator in the process that runs every client's worker
#: (``nvflare/private/fed/app/simulator/simulator_runner.py``, 2.7 and 2.9), as ``fullName``.
SIMULATOR_CLIENT_RUNNER = "nvflare.private.fed.app.simulator.simulator_runner.SimulatorClientRunner"
#: What that logger says at ERROR when it stops running a client (``SimulatorClientRunner.do_one_task``,
#: ``run_client_thread``): the client's worker process died, the link to it broke, or it could not be
#: reached. No thread runs that client afterwards: the server waits for its results until the job's
#: timeout. Group ``site`` or ``dead``: the client, when the message names it.
LOST_CLIENT = re.compile(
    r"^(?:Communication error with client (?P<site>[^\s:]+)"
    r"|Subprocess died for client (?P<dead>[^\s,]+)"
    r"|run_client_thread error\b)"
)
#: The first record of a simulator worker that reached its parent: ``ClientTaskWorker.run`` (the
#: worker's ``__main__``) logs it right after the parent's connection is accepted, before any job code.
WORKER_STARTED = ("ClientTaskWorker", "ClientTaskWorker started to run")
#: What NVFlare's process monitor logs at ERROR when a process's main function raised (``MPM.run``,
#: ``nvflare/fuel/f3/mpm.py``, 2.7 and 2.9), as (``fullName``, start of the message). In a simulator
#: worker before :data:`WORKER_STARTED` it means the worker ended before it reached the simulator,
#: e.g. it could not listen on the port the simulator chose for it (``simulator_worker.py``
#: ``_create_connection``: "Execute exception: OSError: [Errno 98] Address already in use"). The
#: simulator does not notice: it tries to connect until its 60 s timeout ("run_client_thread error").
WORKER_FAILED = ("nvflare.fuel.f3.mpm.MPM", "Execute exception: ")
#: What a simulator worker logs right after :data:`WORKER_STARTED`, once it was told which client it
#: runs: its cell ``<client>.simulate_job`` (``CoreCell``, "site-1.simulate_job: created backbone
#: external connector to tcp://localhost:PORT"; ``simulate_job`` is ``SimulatorConstants.JOB_NAME``),
#: as (``fullName``, pattern with group ``client``). NVFlare's simulator (2.7, 2.9) can name the wrong client:
#: ``SimulatorClientRunner.do_one_task`` writes the client's name into ``self.build_ctx``, which
#: every client thread shares, then sends it to that client's worker; when two threads do it at
#: once (their workers started together, as every job's do), one worker gets the other client's name
#: (seen once, 2026-12-02, with four simulators at once: ``site-2``'s worker ran as ``site-1`` in
#: ``site-2``'s workspace and its executor failed; ``site-2`` never ran, and the server would have
#: waited for it until the job's timeout).
WORKER_CELL = ("nvflare.fuel.f3.cellnet.core_cell.CoreCell", re.compile(r"^(?P<client>\S+)\.simulate_job: created "))


def _worker_started(record: dict) -> bool:
    """Whether ``record`` (of a simulator worker's ``log.json``) is :data:`WORKER_STARTED`."""
    return record.get("name") == WORKER_STARTED[0] and record.get("message") == WORKER_STARTED[1]


@dataclass(frozen=True)
class LostClient:
    """A client NVFlare's simulator stopped running before the run ended.

    Attributes:
        site (str | None): the client (None: the message does not say, ``run_client_thread error``).
        message (str): NVFlare's message (first line), e.g. ``Communication error with client
            site-1: [Errno 104] Connection reset by peer``.
    """

    site: str | None
    message: str
    before_job: bool = False  #: known to have run no code of the job (besides :func:`worker_connected`)


def lost_client(message: str) -> LostClient | None:
    """The lost client ``message`` (one line of :data:`SIMULATOR_CLIENT_RUNNER` at ERROR) tells of
    (:data:`LOST_CLIENT`), else None."""
    match = LOST_CLIENT.match(message)
    return LostClient(match.group("site") or match.group("dead"), message) if match else None


class LostClientWatch:
    """The clients NVFlare's simulator stopped running, from the server's ``log.json`` as it grows,
    and, from each worker's ``log.json``, the clients whose worker ended before it reached the
    simulator (:data:`WORKER_FAILED`; the simulator itself notices those only after 60 s) or was
    given another client's name (:data:`WORKER_CELL`; the simulator never notices: that client
    never runs).

    Call :meth:`poll` as often as wanted; it reads only what was appended since the last call, and
    only the lines of :data:`SIMULATOR_CLIENT_RUNNER`, :data:`WORKER_STARTED`, :data:`WORKER_FAILED`
    and :data:`WORKER_CELL`. A worker's log is read until it names the worker's cell.

    Args:
        workspace (Path): the simulator workspace (``-w``).
        sites (list[str]): the clients whose workers to watch (``WS/<site>/log.json``); none: only
            the server's log is read.
    """

    def __init__(self, workspace: Path, sites: list[str] | tuple = ()):
        workspace = Path(workspace)
        self._tail = LogJsonTail(workspace / SERVER_LOG, (json.dumps(SIMULATOR_CLIENT_RUNNER).encode(),))
        needles = (
            json.dumps(WORKER_STARTED[1]).encode(),
            json.dumps(WORKER_FAILED[0]).encode(),
            b".simulate_job: created ",
        )
        self._workers = {site: LogJsonTail(workspace / site / LOG_JSON, needles) for site in sites}
        self._started: set[str] = set()

    def poll(self) -> list[LostClient]:
        """The clients lost since the last poll (usually none)."""
        lost = []
        for record in self._tail.read():
            if record.get("fullName") != SIMULATOR_CLIENT_RUNNER or record.get("levelname") not in ERROR_LEVELS:
                continue
            client = lost_client(_first_line(str(record.get("message", ""))))
            if client:
                lost.append(client)
        for site, tail in list(self._workers.items()):
            for record in tail.read():
                message = str(record.get("message", ""))
                if _worker_started(record):
                    self._started.add(site)  # it reached the simulator: the server's log tells the rest
                    continue
                cell = WORKER_CELL[1].match(message) if record.get("fullName") == WORKER_CELL[0] else None
                if cell and site in self._started:
                    del self._workers[site]
                    if cell.group("client") != site:
                        lost.append(
                            LostClient(
                                site,
                                f"NVFlare's simulator gave {site}'s worker the name of client "
                                f"{cell.group('client')} (its shared build_ctx), so {site} would never run",
                                before_job=True,
                            )
                        )
                    break
                if site in self._started:
                    continue
                if (
                    record.get("fullName") == WORKER_FAILED[0]
                    and record.get("levelname") in ERROR_LEVELS
                    and message.startswith(WORKER_FAILED[1])
                ):
                    del self._workers[site]
                    lost.append(
                        LostClient(
                            site,
                            f"{site}'s simulator worker ended before it reached the simulator: {_first_line(message)}",
                        )
                    )
                    break
        return lost


def worker_connected(workspace: Path, site: str) -> bool:
    """Whether ``site``'s simulator worker ever reached the simulator (:data:`WORKER_STARTED` in
    ``WS/<site>/log.json``). False: the worker never got its job, so no code of the job ran there."""
    records = read_records(Path(workspace) / site / LOG_JSON, (json.dumps(WORKER_STARTED[1]).encode(),))
    return any(_worker_started(record) for record in records)


def _workflow_id(record: dict) -> str:
    match = _WORKFLOW_ID.search(str(record.get("fl_ctx") or ""))
    return match.group(1) if match else ""


def _first_line(message: str) -> str:
    """The line that says what an error record is about: a traceback's exception, else its first line."""
    lines = [line for line in message.splitlines() if line.strip()]
    if not lines:
        return ""
    if lines[0].rstrip().endswith("Traceback (most recent call last):"):
        found = _tracebacks([(line, False) for line in lines])
        if found:
            return found[0].exception
    return lines[0].strip()


#: NVFlare's TCP driver failing to listen (``nvflare/fuel/f3/drivers/tcp_driver.py``), and the
#: connection manager's report of a connector that failed (``nvflare/fuel/f3/sfm/conn_manager.py``).
_BIND_IN_USE = re.compile(r"Error binding to\s+(?P<addr>\S+:\d+): .*Address already in use")
_PASSIVE = r"Connector \[\S+ PASSIVE \S+://(?P<addr>[^\s/?\]]+)[^\]]*\] "  # ConnectorInfo.__str__
_CONNECTOR_IN_USE = re.compile(_PASSIVE + r"failed .*Address already in use")
_CONNECTOR_STARTING = re.compile(_PASSIVE + r"is starting")


def _without_double_start(path: Path, errors: list[dict]) -> list[dict]:
    """``errors`` without those of a listener NVFlare started twice in one process.

    NVFlare 2.9's ``ConnManager.start_connector`` checks ``connector.started``, which is set only
    once the start task runs in its thread; ``Communicator.add_connector(start=True)`` calls it right
    after ``ConnManager.add_connector`` did, so on a busy machine one listener is started twice and
    the second cannot bind its port ("Address already in use", logged as an ERROR at each retry)
    while the first serves the job. Only an address whose connector was logged as starting more
    than once in this log is excused; any other bind failure stays an error.
    """

    def address(record: dict) -> str | None:
        message = str(record.get("message", ""))
        match = _BIND_IN_USE.search(message) or _CONNECTOR_IN_USE.search(message)
        return match.group("addr") if match else None

    if not any(address(r) for r in errors):
        return errors
    starts: dict[str, int] = {}
    for record in read_records(path, (b"is starting",)):
        match = _CONNECTOR_STARTING.search(str(record.get("message", "")))
        if match:
            starts[match.group("addr")] = starts.get(match.group("addr"), 0) + 1
    return [r for r in errors if starts.get(address(r) or "", 0) < 2]


#: A cell reporting a streamed reply that its own process's shutdown cancelled: ``ByteStreamer.shutdown``
#: stops every outgoing stream with ``StreamError("streaming shutdown")`` and ``Cell._handle_reply_stream_done``
#: logs each at ERROR (``nvflare/fuel/f3/streaming/byte_streamer.py``, ``nvflare/fuel/f3/cellnet/cell.py``).
#: The same shutdown at times stops a stream whose process's messenger is already down, and
#: ``TxTask.stop`` logs that it could not tell the target (seen on POC under load, a W&B job's
#: client: "Tx[SID:... to server for aux_communication/ObjectStreamer.Abort] failed to notify
#: stream error to target server: Messenger is not running", its run complete, every point delivered).
_SHUTDOWN_CANCEL = re.compile(
    r"^(?:streamed response from \S+ failed asynchronously: StreamError: streaming shutdown"
    r"|Tx\[SID:\d+ to \S+ for \S+\] failed to notify stream error to target \S+: Messenger is not running)$"
)
#: What NVFlare's ``ServerRunner`` and ``ClientRunner`` log once a run ended (``END_RUN`` handled).
_RUN_ENDED = "END_RUN fired"


def _without_shutdown_cancels(path: Path, errors: list[dict]) -> list[dict]:
    """``errors`` without the streamed replies NVFlare's own shutdown cancelled after the run ended.

    NVFlare 2.9 cancels a job process's outgoing streams as it shuts down, one of them at times a
    reply already delivered (seen on POC under load: the server's ``__end_run__`` reply to a client's
    last task request, which the client's log shows it received, reported as "streamed response from
    server.<job> failed asynchronously: StreamError: streaming shutdown" after "Server app stopped").
    Only that error, logged after this log's "END_RUN fired", is excused: during the run a failed
    reply stays an error.
    """

    def key(record: dict) -> tuple:
        return record.get("asctime"), record.get("message")

    if not any(_SHUTDOWN_CANCEL.match(str(r.get("message", ""))) for r in errors):
        return errors
    ended, excused = False, set()
    for record in read_records(path, (_RUN_ENDED.encode(), b"streaming shutdown", b"Messenger is not running")):
        message = str(record.get("message", ""))
        if message.strip() == _RUN_ENDED:
            ended = True
        elif ended and _SHUTDOWN_CANCEL.match(message):
            excused.add(key(record))
    return [r for r in errors if key(r) not in excused]


#: Errors NVFlare logs for a known mistake in a script -> what to tell (appended to the error's line).
ERROR_HINTS = {
    "KeyError: 'numpy_key'": (
        "the numpy workflow's model is NPModelPersistor's {'numpy_key': array}: the script must send "
        "FLModel(params={'numpy_key': ...}) (README: Writing a client script)"
    ),
}


def nvflare_errors(workspace: Path) -> list[str]:
    """One line per site whose NVFlare loggers recorded an error: how many, and the first.

    Reads every ``<workspace>/*/log.json`` (server and sites). Records of other loggers (a
    script's own, ``__main__``, the root logger) and every print (relayed at INFO) are ignored,
    and so are two NVFlare races that harm no job: a listener started twice
    (:func:`_without_double_start`) and a reply cancelled by the shutdown after the run ended
    (:func:`_without_shutdown_cancels`).

    Args:
        workspace (Path): the simulator workspace (``nvflare simulator -w``).

    Returns:
        list[str]: ``"site-1: NVFlare logged 2 errors (see WS/site-1/log.txt): <first>"``, per site.
    """
    problems = []
    for path in sorted(Path(workspace).glob(f"*/{LOG_JSON}")):
        errors = [
            r
            for r in read_records(path, tuple(json.dumps(level).encode() for level in ERROR_LEVELS))
            if r.get("levelname") in ERROR_LEVELS and str(r.get("fullName", "")).startswith("nvflare.")
        ]
        errors = _without_shutdown_cancels(path, _without_double_start(path, errors))
        if errors:
            first = _first_line(str(errors[0].get("message", "")))[:300]
            hints = [
                hint for needle, hint in ERROR_HINTS.items() if any(needle in str(r.get("message")) for r in errors)
            ]
            first += "".join(f"; {hint}" for hint in hints)
            count = f"{len(errors)} error" + ("s" if len(errors) > 1 else "")
            problems.append(f"{path.parent.name}: NVFlare logged {count} (see {path.with_name('log.txt')}): {first}")
    return problems


# --- the exception that ended a client's script ------------------------------------------------------

#: A console or log.txt line's prefix (NVFlare's BaseFormatter; the simulator's console drops the name).
_LINE_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ - (?:\S+ - )?[A-Z]+ - ")
#: Terminal colours (NVFlare 2.7's ``ColorFormatter`` colours console lines even into a pipe).
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_FRAME = re.compile(r'^\s+File "(?P<file>[^"]+)", line (?P<line>\d+)')
_EXCEPTION = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?::\s?(?P<message>.*))?$")
#: Where a site's job app puts the client's files: ``<site>/<run folder>/app_<site>/custom/...``, the
#: run folder being ``simulate_job`` in the simulator's workspace and the job id on a real system.
_APP_CUSTOM = re.compile(r"[/\\](?P<site>[^/\\]+)[/\\][^/\\]+[/\\]app_[^/\\]+[/\\]" + rf"(?P<rel>{CUSTOM}[/\\].+)$")


@dataclass(frozen=True)
class ClientException:
    """One exception in a traceback.

    Attributes:
        exception (str): ``Type: message`` (the exception line).
        where (str): the innermost frame in the app's ``custom/`` folder, ``custom/x.py:5``; ``""``
            when no frame is in a user file.
        site (str): the site whose workspace folder holds that file, ``""`` if unknown.
    """

    exception: str
    where: str = ""
    site: str = ""

    def __str__(self) -> str:
        return self.exception + (f" ({self.where})" if self.where else "")


#: Lines another writer may slip into a traceback on a shared console before it ends.
MAX_INTERLEAVED = 20


def _tracebacks(lines: list[tuple[str, bool]]) -> list[ClientException]:
    """Every traceback in ``lines``, in order.

    Args:
        lines: ``(text, headed)`` pairs: the text without its log prefix, and whether the line
            began a log record (had a prefix). Inside a traceback, a headed line that is neither
            indented nor an exception line was written by another thread or process in between
            (the simulator's console is shared) and is skipped.
    """
    found, i = [], 0
    while i < len(lines):
        if not lines[i][0].rstrip().endswith("Traceback (most recent call last):"):
            i += 1
            continue
        i += 1
        where = site = ""
        skipped = 0
        while i < len(lines):
            text, headed = lines[i]
            if text[:1] in (" ", "\t") or not text.strip():
                frame = _FRAME.match(text)
                custom = _APP_CUSTOM.search(frame.group("file")) if frame else None
                if custom:
                    where = f"{custom.group('rel').replace(os.sep, '/')}:{frame.group('line')}"
                    site = custom.group("site")
            elif headed and not _EXCEPTION.match(text.strip()) and skipped < MAX_INTERLEAVED:
                skipped += 1
            else:
                break
            i += 1
        if i < len(lines) and _EXCEPTION.match(lines[i][0].strip()):
            found.append(ClientException(lines[i][0].strip()[:300], where, site))
    return found


def _unprefixed(text: str) -> list[tuple[str, bool]]:
    """Console lines as ``(text without the log prefix, had a prefix)``."""
    out = []
    for line in _ANSI.sub("", text).splitlines():
        bare = _LINE_PREFIX.sub("", line)
        out.append((bare, bare != line))
    return out


def _record_lines(records: list[dict]) -> list[tuple[str, bool]]:
    """The messages of log records as lines; the first line of each record is headed."""
    out = []
    for record in records:
        lines = str(record.get("message", "")).splitlines() or [""]
        out += [(line, n == 0) for n, line in enumerate(lines)]
    return out


#: What ``argparse`` prints before it exits 2 (``ArgumentParser.error``: ``PROG: error: MESSAGE``, PROG a
#: script's file name): a strict ``parse_args()`` refusing ``script_args`` ends the script with no
#: traceback (a trial's ``--update-type diff`` showed only NVFlare's six follow-on errors).
_ARGPARSE_ERROR = re.compile(r"(?:^|\s-\s)(?P<line>(?P<prog>[\w.-]+\.py): error: .+)$")


def _argparse_error(lines) -> ClientException | None:
    """The last ``argparse`` error among ``lines`` (str), as the exception that ended the script."""
    found = None
    for line in lines:
        match = _ARGPARSE_ERROR.search(line.rstrip())
        if match:
            found = match
    if found is None:
        return None
    return ClientException(
        f"{found.group('line')[:300]} (argparse exited the script: its parse_args() refused the job's "
        "script_args; parse_known_args() ignores what it does not know)",
        "",
    )


def site_exception(site_dir: Path) -> ClientException | None:
    """The last exception of a site's ``log.json`` that has a frame in the app's ``custom/``.

    The messages of all records are read as one text, so a traceback a sub-process trainer's
    output relays one line per record is found like one logged in a single record. The last one
    is the exception that ended the script: a traceback the script printed or logged for an error
    it handled comes before it.

    Args:
        site_dir (Path): the site's folder in the simulator workspace (``<workspace>/site-1``).

    Returns:
        ClientException | None: the exception, or None when no traceback has a frame in ``custom/``.
    """
    lines = _record_lines(read_records(Path(site_dir) / LOG_JSON))
    found = next((e for e in reversed(_tracebacks(lines)) if e.where), None)
    return found or _argparse_error(text for text, _ in lines)


def client_exceptions(workspace: Path, console_log: Path | None = None, sites: list | None = None) -> list[str]:
    """The exception that ended each client's script (a user file in its frames), one line per distinct one.

    Args:
        workspace (Path): the simulator workspace; sites are its ``site-*`` folders, or those named
            in ``sites`` (a job's ``clients``).
        console_log (Path | None): the simulator's console log, read for sites whose log.json holds
            no such exception (an in-process script that fails at import: the trainer thread dies
            and Python prints its traceback to the worker's stderr only).

    Returns:
        list[str]: e.g. ``["site-1, site-2: ModuleNotFoundError: No module named 'mock_helper'
        (custom/train_x.py:5)"]``; empty when no client raised in its own code.
    """
    by_site: dict[str, ClientException] = {}
    found = (Path(workspace) / s for s in sites) if sites else Path(workspace).glob(SITE_GLOB)
    sites = sorted((p for p in found if p.is_dir()), key=lambda p: _site_key(p.name))
    for site_dir in sites:
        found = site_exception(site_dir)
        if found:
            by_site[site_dir.name] = found
    if console_log and Path(console_log).is_file() and len(by_site) < len(sites):
        text = Path(console_log).read_text(encoding="utf-8", errors="replace")
        from_console: dict[str, ClientException] = {}
        for exc in _tracebacks(_unprefixed(text)):
            if exc.where and exc.site and exc.site not in by_site:
                from_console[exc.site] = exc  # the last one: see site_exception
        by_site.update(from_console)
        # an in-process script's argparse error reaches the console only, with no site named: every
        # client runs the same script with the same script_args, so it is each silent site's
        refused = _argparse_error(text.splitlines()) if len(by_site) < len(sites) else None
        if refused:
            by_site.update({s.name: refused for s in sites if s.name not in by_site})
    lines: dict[str, list[str]] = {}
    for site in sorted(by_site, key=_site_key):
        lines.setdefault(str(by_site[site]), []).append(site)
    return [f"{', '.join(names)}: {text}" for text, names in lines.items()]


def _site_key(name: str) -> tuple:
    number = site_number(name)
    return (0, number, "") if number is not None else (1, 0, name)


# --- cross-site evaluation ------------------------------------------------------------------------------

#: The server models CrossSiteModelEval has every client evaluate: ``"SRV_" +`` each name its
#: NPModelLocator's ``model_name`` maps (``_locate_server_models``; the generated locator names one,
#: ``server``).
SERVER_MODELS = tuple(f"SRV_{name}" for name in CROSS_SITE_EVAL.components[MODEL_LOCATOR_ID].args["model_name"])


def cross_site_models(sites: list[str], server_models: tuple[str, ...] = SERVER_MODELS) -> list[str]:
    """The models every client evaluates in NVFlare's CrossSiteModelEval, in the matrix's column order:
    the server's (``server_models``: :data:`SERVER_MODELS`, or a framework's, see
    :data:`generator.components.FRAMEWORKS`), then each participating client's local model, named by the
    client that submitted it (``_accept_local_model``: a plain DXO is one leaf named after its site)."""
    return [*server_models, *sites]


def read_cross_site(workspace: Path) -> dict | None:
    """The cross-site evaluation results of a run, ``{evaluating site: {model: {metric: value}}}``.

    Args:
        workspace (Path): the simulator workspace (or a downloaded run laid out as one).

    Returns:
        dict | None: the file's mapping as NVFlare's ValidationJsonGenerator wrote it; None when the
        file does not exist.

    Raises:
        ValueError: the file is not JSON, or not a mapping of mappings.
    """
    path = Path(workspace) / CROSS_VAL_RESULTS
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    data = json.loads(text)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError("not a mapping of evaluating site -> {model: metrics}")
    return data


def _ordered(matrix: dict, sites: list[str], models: list[str]) -> dict:
    """``matrix`` with a row per site of ``sites`` in that order (empty for a site that sent no
    result) and each row's cells in ``models`` order; any other row or cell after them, as written."""

    def by(order: list[str], mapping: dict) -> dict:
        return {k: mapping[k] for k in [*(k for k in order if k in mapping), *(k for k in mapping if k not in order)]}

    return {site: by(models, row) for site, row in by(sites, {**dict.fromkeys(sites, {}), **matrix}).items()}


def _has_metrics(cell) -> bool:
    return isinstance(cell, dict) and bool(cell)


def cross_site_problems(
    workspace: Path, sites: list[str], server_models: tuple[str, ...] = SERVER_MODELS
) -> tuple[dict | None, list[str]]:
    """Read and check a run's cross-site evaluation matrix.

    Every client in ``sites`` evaluates every model of :func:`cross_site_models` (CrossSiteModelEval
    broadcasts each model's ``validate`` task to every participating client); a cell counts when it
    holds at least one metric. A script that cannot answer the ``submit_model`` or ``validate``
    task leaves cells out (NVFlare's ValidationJsonGenerator stores only METRICS results).

    Args:
        workspace (Path): the simulator workspace; each site's log is ``<workspace>/<site>/log.txt``.
        sites (list[str]): the job's clients (``site-1`` ..).
        server_models (tuple[str, ...]): the server's model names (:func:`cross_site_models`).

    Returns:
        tuple: the matrix read, a row per site in ``sites`` order (empty: the site sent no result)
        and cells in :func:`cross_site_models` order (None when there is no results file), and one
        message per problem: no results file, an unreadable one, or per evaluating site the models
        it has no result for, with its log.
    """
    path = Path(workspace) / CROSS_VAL_RESULTS
    try:
        matrix = read_cross_site(workspace)
    except (OSError, ValueError) as e:
        return None, [f"cross-site evaluation results {path} cannot be read: {e}"]
    if matrix is None:
        return None, [
            f"cross-site evaluation wrote no results: {path} is missing "
            "(NVFlare's ValidationJsonGenerator writes it when the run ends)"
        ]
    models = cross_site_models(sites, server_models)
    matrix = _ordered(matrix, sites, models)
    problems = []
    for site in sites:
        missing = [m for m in models if not _has_metrics(matrix.get(site, {}).get(m))]
        if missing:
            log = Path(workspace) / site / "log.txt"
            problems.append(
                f"cross-site evaluation: {site} has no result for {', '.join(missing)} "
                f"({len(missing)} of {len(models)} models missing in {path}; see {log})"
            )
    return matrix, problems


#: The logger of the generated ``MetricsDeliveryClient`` (``app/custom/jobgen_metrics_delivery.py``).
DELIVERY_CLIENT_LOGGER = "jobgen_metrics_delivery.MetricsDeliveryClient"
#: What ``MetricsDeliveryClient`` (``templates/shared/custom/jobgen_metrics_delivery.py``) logs at the
#: end of a run: how many of the federated metric events its site's client job fired (``sent``) the
#: server said it had posted to its receivers (``had``).
_POINTS_SENT = re.compile(
    r"the server has all (?P<all>\d+) metric points of this site"
    r"|the server has (?P<had>\d+) of (?P<of>\d+) metric points of this site"
    r"|waiting for the server to have this site's metric points: (?P<had_w>\d+) of (?P<waiting>\d+)"
)


@dataclass(frozen=True)
class PointsSent:
    """A site's metric points as its client job last reported them (:func:`points_sent`).

    Attributes:
        sent (int): federated metric events the client job fired (one per ``log`` call of the
            script; an event may carry several metric keys).
        server_had (int): how many of them the server said it had posted to its receivers.
    """

    sent: int
    server_had: int


def points_sent(site_dir: Path) -> PointsSent | None:
    """How many metric points a site's client job sent to the server, and how many the server had, as
    that job last reported it.

    A metric point travels script -> client job (in a sub-process job, NVFlare's Client API sends each
    one fire-and-forget from the script's process to the client job's cell, dropping it silently if that
    link is not there at that moment) -> server (checked by the delivery handshake) -> the server's
    receiver and its store. The counts that ``MetricsDeliveryClient`` logs at the end of the run tell
    the legs apart.

    Args:
        site_dir (Path): the site's workspace folder (``WS/site-1``); its ``log.json`` is read.

    Returns:
        PointsSent | None: the last counts the site logged; None when it logged none (no receiver,
        the job ended before its end-of-run handshake, or no log).
    """
    counts = None
    for record in read_records(site_dir / LOG_JSON, (b"metric points",)):
        if record.get("fullName") != DELIVERY_CLIENT_LOGGER:  # a script's print is relayed under another
            continue
        match = _POINTS_SENT.search(str(record.get("message", "")))
        if match:
            sent = match["all"] or match["of"] or match["waiting"]
            counts = PointsSent(int(sent), int(match["all"] or match["had"] or match["had_w"]))
    return counts
