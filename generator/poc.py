"""POC and submit stages: run generated job folders on a real NVFlare system and judge them as ``simulate`` does.

Takes the output folder of ``generate`` and gives one :class:`generator.simulate.JobResult` per job,
judged from NVFlare's own records exactly as a simulated run is (:func:`generator.simulate.judge_run`,
:func:`generator.simulate.judge_metrics`).

- ``poc`` (:func:`poc_all`) prepares NVFlare's POC system on this machine (``nvflare poc prepare``
  from a ``project.yml`` written here: server ``server``, the clients the selected jobs run on
  (:func:`sites_for`: ``site-1`` .. ``site-N`` with N the largest ``num_clients`` of the jobs that
  do not name their ``clients``, and every name they do), one free loopback port), with ``HOME`` and
  ``NVFLARE_POC_WORKSPACE`` inside the ``--workspace`` folder so nothing is written to the user's
  home; starts the server and the clients with their startup kits' own ``sub_start.sh --once``
  (what ``nvflare poc start`` runs, without its 5 s supervision loop; no admin console), waits until
  every client is connected (``Session.get_system_info``, on the session that then runs the jobs),
  runs the jobs, and always stops the system and every process left under its workspace: after
  success, a failed job, a timeout, a stop signal or an error. Once every job ended and was
  downloaded, its processes are sent SIGTERM (NVFlare's own shutdown takes about 5.6 s more and
  leaves nothing to save); otherwise ``shutdown all`` goes through the admin API first, as
  ``nvflare poc stop`` does (that command if the API cannot), so running jobs are aborted.
- ``submit`` (:func:`submit_all`) does the same against a system that already runs, through an
  admin startup kit (production, or someone's POC); it never starts or stops anything.

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
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from .errors import OptionError, OutputError, Problem, SimulationError
from .judge import RoundTracker, client_exceptions
from .layout import (
    DOWNLOAD_LOGS,
    DOWNLOAD_MAP,
    MPL_DIR,
    POC_ADMIN,
    POC_PROJECT,
    POC_RESULTS_MARKER,
    POC_WORKSPACE_MARKER,
    SERVER_SITE,
    ManifestEntry,
    site_names,
)
from .lines import installed_line
from .order import chosen_order
from .outputs import check_reports, check_results, folder_problems, one_run_in, write_results
from .plot import matplotlib_dir
from .runner import (
    Interrupted,
    check_interrupted,
    interrupt_on_signals,
    mark_run,
    processes_of,
    stop_earlier_run,
    stop_processes,
)
from .safepaths import check_paths, path_problem, remove_stale_links, run_paths
from .simulate import (
    FAILED,
    INTERRUPTED,
    OK,
    TIMEOUT,
    JobResult,
    RunInterrupted,
    _selected_jobs,
    compare_sweeps,
    job_problem,
    job_timeout,
    judge_cross_site,
    judge_metrics,
    judge_run,
    nvflare_command,
    result_record,
)
from .sweep import plot_names

#: NVFlare's job status once the job ended normally (``nvflare/apis/job_def.py``, ``RunStatus.FINISHED_COMPLETED``).
COMPLETED = "FINISHED:COMPLETED"
#: Seconds between two polls of a running job's status (and of the POC server's log for progress).
POLL_SECONDS = 0.5
#: Seconds to wait for the system to have every client connected after it was started.
READY_SECONDS = 180
#: Seconds a shutdown (admin API, else ``nvflare poc stop``) may take.
STOP_SECONDS = 90
#: Seconds an aborted job may take to end before its result is fetched anyway.
ABORT_GRACE = 30
#: Seconds the processes of a stopped POC system get to exit by themselves before they are sent
#: SIGTERM, then SIGKILL (they exit within about 2 s of ``shutdown all`` here).
LEFTOVER_GRACE = 10
#: The same once ``shutdown all`` was accepted: NVFlare's server and clients then take about 5 s more
#: to exit by themselves (measured here), with every job already ended and its result downloaded,
#: so what is left of their wind-down is cut short.
SHUTDOWN_GRACE = 2
#: How messages name the ``--downloads`` folder.
DOWNLOADS = "the downloads folder"
#: The console log of the ``nvflare poc`` commands, in the POC workspace folder.
POC_LOG = "poc.log"


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

    def job_finished(self, result: JobResult) -> None:
        """A job ended (any status), judged."""

    def all_finished(self, results: list[JobResult]) -> None:
        """Every job ended (or the run was stopped): ``results`` in file order."""

    def sweeps_compared(self, sweeps: list) -> None:
        """After ``all_finished``: the :class:`generator.sweep.Sweep` of each matrix job (may be empty)."""


@dataclass(frozen=True)
class System:
    """A running NVFlare system, reached through an admin startup kit.

    Attributes:
        startup_kit (Path): the admin's folder that holds ``startup/fed_admin.json``.
        username (str): the admin user (the certificate's name, e.g. ``admin@nvidia.com``).
        server_identity (str): the server's name in its records' ``fl_ctx`` (``identity=...``): the
            project name (``fed_admin.json`` ``admin.project_name``; NVFlare's provisioner names the
            server's root cell after the project).
        sites_dir (Path | None): on a local POC system, the folder holding each client's folder
            (``<poc>/<project>/prod_00``), from which the clients' run logs are copied; else None.
        address (tuple[str, int] | None): the server's admin host and port (``fed_admin.json``
            ``admin.host``, ``admin.port``); None when the kit does not say.
    """

    startup_kit: Path
    username: str
    server_identity: str
    sites_dir: Path | None = None
    address: tuple[str, int] | None = None


def admin_kit(path: str | Path, username: str | None = None) -> System:
    """The :class:`System` an admin startup kit reaches (``submit --startup-kit``).

    Args:
        path (str | Path): the admin's kit folder (holding ``startup/``), or its ``startup/`` folder.
        username (str | None): the admin user; default: the kit folder's name (NVFlare's
            provisioner names each admin's folder after the user).

    Raises:
        OptionError: no ``startup/fed_admin.json`` there, or it cannot be read as JSON (exit code 2).
    """
    kit = Path(path)
    if kit.name == "startup" and (kit / "fed_admin.json").is_file():
        kit = kit.parent
    config = kit / "startup" / "fed_admin.json"
    if not config.is_file():
        what = "no startup/fed_admin.json here" if kit.exists() else "does not exist"
        raise OptionError([Problem(str(path), 0, 0, "", f"--startup-kit: {what}: give an admin's startup kit")])
    try:
        admin = json.loads(config.read_text(encoding="utf-8")).get("admin", {})
    except (OSError, ValueError, AttributeError) as e:
        raise OptionError([Problem(str(config), 0, 0, "", f"--startup-kit: cannot read it: {e}")]) from None
    host, port = admin.get("host"), admin.get("port")
    address = (host, port) if isinstance(host, str) and host and isinstance(port, int) else None
    return System(kit.resolve(), username or kit.resolve().name, str(admin.get("project_name", "")), address=address)


def nvflare_hint(system: System, command: str) -> str:
    """``nvflare <command> --startup-kit <kit>`` as a printed hint to run against ``system``, ready
    for a shell: this environment's ``nvflare`` console script when there is one (a trial ran a
    printed ``nvflare job download ...`` where ``nvflare`` was only in ``.venv/bin``: "command not
    found"; else plain ``nvflare``), the kit's path quoted."""
    script = Path(sys.executable).parent / "nvflare"
    cli = shlex.quote(str(script)) if script.is_file() else "nvflare"
    return f"{cli} {command} --startup-kit {shlex.quote(str(system.startup_kit))}"


#: Seconds :func:`unreachable` waits for the server's port to accept a connection.
PROBE_SECONDS = 5.0


def unreachable(system: System) -> str | None:
    """Why the server of ``system`` cannot be reached (its ``address`` refuses connections, or its
    host is not found), else None; a port that does not answer within :data:`PROBE_SECONDS` is left
    to the login to judge. NVFlare's own login would retry a refused connection for its whole
    timeout (30 s), logging each try, before saying "cannot connect to server" (seen in a trial)."""
    if system.address is None:
        return None
    host, port = system.address
    try:
        with socket.create_connection((host, port), timeout=PROBE_SECONDS):
            return None
    except TimeoutError:
        return None
    except socket.gaierror as e:
        return f"its host {host!r} is not found: {e.strerror or e}"
    except OSError as e:
        return f"{host}:{port} {(e.strerror or str(e)).lower()}"


# --- the POC system ----------------------------------------------------------------------------------


#: Linux's ephemeral port range file: the ports the kernel gives to outgoing connections and to bind(0).
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ports_below_ephemeral() -> range:
    """Ports from 10000 up to the first ephemeral port (32768 by default on Linux), or empty if unknown."""
    try:
        low = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return range(0)
    return range(10000, low)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, below the kernel's ephemeral range when it can be read.

    A port from the ephemeral range (what ``bind(0)`` gives) can be handed to an outgoing connection
    or to another process's ``bind(0)`` (``nvflare simulator`` picks its ports that way:
    ``nvflare/fuel/utils/network_utils.py get_open_ports``) before the POC server listens on it:
    seen as "Address already in use" with simulations running beside a POC system. A port below
    the range is never chosen by the kernel, so only a program asking for that very port can take it.
    """
    ports = _ports_below_ephemeral()
    for port in random.sample(ports, min(len(ports), 50)):
        if _port_free(port, reuse=False):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: The clients of a POC system: a number N (``site-1`` .. ``site-N``) or their names.
Clients = int | Sequence[str]


def poc_sites(clients: Clients) -> list[str]:
    """The client names of ``clients`` (:data:`Clients`)."""
    return site_names(clients) if isinstance(clients, int) else list(clients)


def sites_for(infos: list[ManifestEntry]) -> list[str]:
    """The clients a POC system needs to run every job of ``infos`` on its own sites (see
    :func:`pin_sites`): ``site-1`` .. ``site-N`` for N the largest ``num_clients`` of the jobs that
    do not name their clients, then every name of the jobs' ``clients``, in order, each once."""
    unnamed = [info.num_clients for info in infos if not info.clients]
    names = site_names(max(unnamed)) if unnamed else []
    for info in infos:
        names += [site for site in info.clients or [] if site not in names]
    return names


def _counted_sites(sites: list[str]) -> str:
    """``2 client(s)``, or with names that are not ``site-1`` .. ``site-N``: ``3 client(s) (site-1, alpha, beta)``."""
    named = "" if sites == site_names(len(sites)) else f" ({', '.join(sites)})"
    return f"{len(sites)} client(s){named}"


def project_yaml(clients: Clients, port: int) -> str:
    """The ``project.yml`` of the POC system: NVFlare's ``dummy_project.yml`` with ``clients``
    (:data:`Clients`), the project admin only, and ``port`` (FL and admin service).

    Args:
        clients (Clients): the clients. port (int): the server's port (``fed_learn_port``; NVFlare 2.9
            serves the admin API on the same port).
    """
    entries = "".join(f"- name: {site}\n  org: nvidia\n  type: client\n" for site in poc_sites(clients))
    return (
        "api_version: 3\n"
        f"name: {POC_PROJECT}\n"
        "description: POC system of nvflare-jobgen\n"
        "participants:\n"
        f"- name: {SERVER_SITE}\n  org: nvidia\n  type: server\n  default_host: localhost\n  fed_learn_port: {port}\n"
        f"- name: {POC_ADMIN}\n  org: nvidia\n  role: project_admin\n  type: admin\n"
        f"{entries}"
        "builders:\n"
        "- path: nvflare.lighter.impl.workspace.WorkspaceBuilder\n"
        "  args:\n    template_file: [master_template.yml, aws_template.yml, azure_template.yml]\n"
        "- path: nvflare.lighter.impl.static_file.StaticFileBuilder\n  args:\n    config_folder: config\n"
        "- path: nvflare.lighter.impl.cert.CertBuilder\n"
        "- path: nvflare.lighter.impl.signature.SignatureBuilder\n"
    )


def check_poc_workspace(root: Path) -> list[Problem]:
    """Why ``root`` cannot be the POC workspace folder (empty: it can); checked before anything runs.

    It must be a folder (or not exist yet), not a symbolic link, hold our marker
    :data:`generator.layout.POC_WORKSPACE_MARKER` when it holds anything (it is cleared), and have
    a path that NVFlare's POC system keeps whole: its start scripts and job launchers split command
    lines at spaces (``sub_start.sh``, ``poc_commands.async_process``; see
    :func:`generator.safepaths.path_problem`), and a link does not help, as NVFlare resolves the
    workspace's real path for each job's folder (``Workspace._join_under_root``: ``os.path.realpath``).
    """
    root = Path(root)

    def problem(message: str, where: str = str(root)) -> list[Problem]:
        return [Problem(where, 0, 0, "", f"--workspace: {message}")]

    unusable = folder_problems(root, "--workspace")
    if unusable:
        return unusable
    if root.is_dir() and any(root.iterdir()) and not (root / POC_WORKSPACE_MARKER).is_file():
        return problem(
            f"holds files the generator did not write (no {POC_WORKSPACE_MARKER}); refusing to clear it: "
            "choose another --workspace"
        )
    absolute = os.path.abspath(root)
    why = path_problem(absolute)
    if why:
        why = why.replace("NVFlare's simulator", "NVFlare's POC system").replace(
            "when it starts a client worker (simulator_runner.py, do_one_task: shlex.split of a command joined "
            "with spaces)",
            "in the command lines that start its server, clients and job processes",
        )
        return problem(
            f"{why}: give a POC workspace whose path has none, e.g. `make poc POC_WS=/tmp/jobgen-poc-$(id -u)` or "
            "`python -m generator poc --workspace /tmp/jobgen-poc-$(id -u)` (the downloads and everything else "
            "may stay where they are)",
            absolute,
        )
    return []


def check_poc_paths(root: Path) -> list[Problem]:
    """Why NVFlare's POC system cannot be started in the POC workspace ``root`` with this Python, not
    even through a link (empty: it can; see :func:`generator.safepaths.check_paths`).

    NVFlare's POC start scripts and job launchers split their command lines at spaces, so a Python
    environment whose path holds a space (or a quote, ``#``, ``:``) is run through a link to it in
    a safe folder (:func:`_poc_run`), as ``simulate`` does: NVFlare keeps ``sys.executable`` as it
    was started. Only when no such folder can be made, or the Python lies outside its environment's
    prefix, is that a problem. The workspace's own path is :func:`check_poc_workspace`'s, so what
    :func:`generator.safepaths.check_paths` says of it is left out here.
    """
    root = os.path.abspath(root)
    return [p for p in check_paths(root) if p.file != root]


def check_downloads(root: Path, option: str = "--downloads") -> list[Problem]:
    """Why ``root`` cannot hold the downloaded results (``<root>/<job>/``, replaced per run): a file,
    a link, or a folder with files but without our marker :data:`generator.layout.POC_RESULTS_MARKER`."""
    root = Path(root)
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        return [Problem(str(root), 0, 0, "", f"{option}: is not a folder: choose another {option}")]
    if root.is_dir() and any(root.iterdir()) and not (root / POC_RESULTS_MARKER).is_file():
        return [
            Problem(str(root), 0, 0, "", f"{option}: holds files the generator did not write (no {POC_RESULTS_MARKER})")
        ]
    return []


def _poc_env(root: Path) -> dict[str, str]:
    """The environment of the ``nvflare poc`` commands: ``HOME`` and the POC workspace inside ``root``."""
    env = dict(os.environ)
    env["HOME"] = str(root / "home")
    env["NVFLARE_POC_WORKSPACE"] = str(root / "poc")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.pop("WANDB_DIR", None)
    env.setdefault("WANDB_CACHE_DIR", str(root / "wandb-cache"))
    return mark_run(env, root)  # every process of the system, its jobs' too: see processes_of


def _nvflare(args: list[str], root: Path, log, timeout: float, python: str | None = None) -> int:
    """Run ``nvflare <args>`` in ``root`` with :func:`_poc_env`, output appended to ``log``; its exit code.
    ``python``: the interpreter to run it with (default this one; a link to it, see :func:`_poc_run`).

    Raises:
        SimulationError: it did not end within ``timeout`` seconds (it is killed).
    """
    log.write(f"$ nvflare {' '.join(args)}\n")
    log.flush()
    try:
        return subprocess.run(
            nvflare_command(python) + args,
            cwd=root,
            env=_poc_env(root),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            start_new_session=True,
        ).returncode
    except subprocess.TimeoutExpired:
        raise SimulationError(f"`nvflare {' '.join(args)}` did not end within {timeout:g} s; log: {log.name}") from None


def _loopback_only(prod: Path, port: int) -> None:
    """Make the POC server listen on 127.0.0.1 only: its service target ``server:<port>`` makes it
    listen on every address; a loopback host makes it listen there (``fed_server.FederatedServer.deploy``)."""
    path = prod / SERVER_SITE / "startup" / "fed_server.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    for server in config.get("servers", []):
        server.setdefault("service", {})["target"] = f"127.0.0.1:{port}"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")


#: Jobs NVFlare's POC server runs at once as provisioned (``DefaultJobScheduler`` ``max_jobs`` in the
#: provisioning template, ``nvflare/lighter/templates/master_template.yml``); more wait on the server.
POC_MAX_JOBS = 4


def _allow_jobs(prod: Path, max_jobs: int) -> None:
    """Let the POC server run ``max_jobs`` jobs at once: the ``job_scheduler`` component's ``max_jobs``
    in the server's ``local/resources.json`` (what ``nvflare poc prepare`` wrote from the template)."""
    path = prod / SERVER_SITE / "local" / "resources.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    for component in config.get("components", []):
        if component.get("id") == "job_scheduler":
            component.setdefault("args", {})["max_jobs"] = max_jobs
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")


#: Seconds a POC client waits before it asks the server again to register (the ``client`` section's
#: ``client_register_interval`` in its ``startup/fed_client.json``, read by NVFlare's
#: ``FederatedClientBase``; default 2.0). A client boots faster than the server, so its first
#: challenge often comes before the server listens, and it then waits the whole interval: measured
#: here, one client registered 2.1 s after the other. 0.5 s retries soon after the server is up.
CLIENT_REGISTER_INTERVAL = 0.5


def _register_sooner(prod: Path, clients: Clients) -> None:
    """Set :data:`CLIENT_REGISTER_INTERVAL` in each client's ``startup/fed_client.json``."""
    for site in poc_sites(clients):
        path = prod / site / "startup" / "fed_client.json"
        config = json.loads(path.read_text(encoding="utf-8"))
        config.setdefault("client", {})["client_register_interval"] = CLIENT_REGISTER_INTERVAL
        path.write_text(json.dumps(config, indent=2), encoding="utf-8")


#: The POC server's ``local/comm_config.json`` (NVFlare's communication configuration, read by every
#: process of that site, ``nvflare.fuel.f3.comm_config.CommConfigurator``) unless ``poc --relay``:
#: NVFlare's ad-hoc connections allowed, listening on 127.0.0.1 only, clear TCP (the scheme and the
#: security of NVFlare's internal connections between a site's own processes). A job's server process
#: then offers its clients' job processes a listener of its own and they connect to it directly
#: (``CoreCell._add_adhoc_connector``); without it, every message of a job, each metric point among
#: them, is relayed by the server's parent process (``CoreCell._forward``) and checked there. Measured
#: here: a metrics job of 3,750 points took the server's parent 4.6 CPU-s relayed, 1.0 direct, and 42.7
#: to 43.0 s instead of 39.5 to 39.9. NVFlare's default (``allow_adhoc_conns`` false) relays; its docs
#: ("Communication Configuration", "Ad-hoc Connections") describe the setting for sites whose network
#: allows it. Only the server needs it: its job process offers the listener, a client's connects.
DIRECT_COMM_CONFIG = {
    "allow_adhoc_conns": True,
    "adhoc": {"scheme": "tcp", "resources": {"host": "127.0.0.1", "secure": False}},
}


def _route(relay: bool) -> str:
    """How the job processes of a POC system made with ``relay`` reach each other, for the console."""
    return "through the server (--relay)" if relay else "directly, 127.0.0.1 only (--relay: through the server)"


def _connect_directly(prod: Path) -> None:
    """Write :data:`DIRECT_COMM_CONFIG` as the POC server's ``local/comm_config.json``."""
    path = prod / SERVER_SITE / "local" / "comm_config.json"
    path.write_text(json.dumps(DIRECT_COMM_CONFIG, indent=2), encoding="utf-8")


def _prod_dir(root: Path) -> Path:
    """The provisioned POC project in the POC workspace ``root``: one folder per server, client and admin."""
    return root / "poc" / POC_PROJECT / "prod_00"


#: The folder in the POC workspace that keeps the last provisioned system as ``nvflare poc prepare``
#: (and :func:`_loopback_only`) left it, with :data:`PROVISIONED_KEY`, for the next run to reuse.
PROVISIONED = ".provisioned"
#: What the kept system was provisioned for: project.yml, port, NVFlare version, Python, when.
PROVISIONED_KEY = "provisioned.json"
#: Days a kept system is reused. NVFlare's provisioner makes its certificates valid for a year
#: (``nvflare/lighter/impl/cert.py``); a month keeps far from that.
PROVISIONED_DAYS = 30


def _provisioning(root: Path, clients: Clients, port: int) -> dict:
    """What a provisioned POC system depends on: the project (clients, port), NVFlare, this Python,
    and the path the system was provisioned at (``nvflare poc prepare`` writes it into the server's
    ``local/resources.json``, the job and snapshot stores, and into ``home/.nvflare/config.conf``)."""
    from importlib import metadata

    return {
        "project_yml": project_yaml(clients, port),
        "nvflare": metadata.version("nvflare"),
        "python": sys.executable,
        "workspace": str(root),
    }


def _port_free(port: int, reuse: bool = True) -> bool:
    """Whether ``port`` of 127.0.0.1 can be bound now.

    ``reuse``: bound with ``SO_REUSEADDR``, as NVFlare's server binds (aiohttp's ``TCPSite`` through
    asyncio's ``create_server``, whose ``reuse_address`` is on for Unix): the connections of the
    previous run leave the port in TIME-WAIT for about 60 s, which fails a plain ``bind`` but not
    the server's. A port another program listens on fails either way.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        if reuse:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _kept_port(root: Path, clients: Clients) -> int | None:
    """The port of the system kept in ``root/.provisioned`` if it was made for ``clients``
    now (same project, NVFlare and Python; younger than :data:`PROVISIONED_DAYS`; its port free)."""
    try:
        key = json.loads((root / PROVISIONED / PROVISIONED_KEY).read_text(encoding="utf-8"))
        port = int(key["port"])
        fresh = time.time() - float(key["created"]) < PROVISIONED_DAYS * 86400
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if fresh and {k: key.get(k) for k in ("project_yml", "nvflare", "python", "workspace")} == _provisioning(
        root, clients, port
    ):
        if (root / PROVISIONED / "poc").is_dir() and _port_free(port):
            return port
    return None


def _copy_children(source: Path, target: Path, skip: tuple[str, ...] = ()) -> None:
    for child in source.iterdir():
        if child.name in skip:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.copytree(child, target / child.name, symlinks=True)
        else:
            shutil.copy2(child, target / child.name, follow_symlinks=False)


def prepare_poc(
    root: Path,
    clients: Clients,
    log,
    max_jobs: int = POC_MAX_JOBS,
    python: str | None = None,
    relay: bool = False,
) -> tuple[System, int, bool]:
    """Provision a POC system of ``clients`` (:data:`Clients`) in ``root/poc`` (``root`` cleared first)
    whose server runs up to ``max_jobs`` jobs at once (:data:`POC_MAX_JOBS` as provisioned) and whose
    job processes connect to each other directly (:data:`DIRECT_COMM_CONFIG`), or, with ``relay``,
    through the server's parent process as NVFlare's own POC does.

    The system a previous run provisioned in ``root`` is kept in ``root/.provisioned`` and copied
    back instead of running ``nvflare poc prepare`` again (1.0-1.4 s here, certificates and all)
    when it was made for the same clients, NVFlare and Python less than :data:`PROVISIONED_DAYS`
    ago and its port is free; only what the provisioner wrote is kept, so no job, log or stored
    state of an earlier run comes back. Deleting ``root/.provisioned`` forces a fresh one.

    Returns:
        tuple[System, int, bool]: the system (its project admin's kit), the server's port, and
        whether the kept system was reused.

    Raises:
        SimulationError: ``nvflare poc prepare`` failed (its log named).
    """
    kept = root / PROVISIONED
    for child in root.iterdir():
        if child.name in (POC_LOG, PROVISIONED):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    (root / POC_WORKSPACE_MARKER).write_text("POC workspace made by nvflare-jobgen\n")
    prod = _prod_dir(root)
    port = _kept_port(root, clients)
    reused = port is not None
    if reused:
        _copy_children(kept, root, skip=(PROVISIONED_KEY,))
        log.write(f"reused the POC system provisioned in {kept} (port {port}): `nvflare poc prepare` not run\n")
        log.flush()
    else:
        shutil.rmtree(kept, ignore_errors=True)
        (root / "home").mkdir()
        port = free_port()
        (root / "project.yml").write_text(project_yaml(clients, port), encoding="utf-8")
        code = _nvflare(["poc", "prepare", "-i", str(root / "project.yml"), "--force"], root, log, 120, python)
        if code != 0 or not (prod / POC_ADMIN / "startup").is_dir():
            raise SimulationError(f"`nvflare poc prepare` failed (exit code {code}); log: {log.name}")
        _loopback_only(prod, port)
        kept.mkdir()
        _copy_children(root, kept, skip=(POC_LOG, PROVISIONED, POC_WORKSPACE_MARKER))
        key = {**_provisioning(root, clients, port), "port": port, "created": time.time()}
        (kept / PROVISIONED_KEY).write_text(json.dumps(key, indent=2), encoding="utf-8")
    _register_sooner(prod, clients)
    if max_jobs != POC_MAX_JOBS:
        _allow_jobs(prod, max_jobs)
    if relay:
        log.write("job processes talk through the server's parent process (--relay: NVFlare's default)\n")
    else:
        _connect_directly(prod)
        log.write("job processes connect directly, 127.0.0.1 only (server local/comm_config.json)\n")
    log.flush()
    return System(prod / POC_ADMIN, POC_ADMIN, POC_PROJECT, prod), port, reused


def _port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


#: The console log NVFlare's ``nvflare poc start`` gives each service, in its folder
#: (``nvflare/tool/poc/poc_commands.py``: ``POC_SERVICE_CONSOLE_LOG``); ours goes to the same file.
SERVICE_CONSOLE_LOG = "poc_console.log"
#: The services started by :func:`start_poc`, per POC workspace, so that :func:`stop_poc` reaps them.
_STARTED: dict[Path, list[subprocess.Popen]] = {}


def _service_dirs(root: Path, clients: Clients) -> list[Path]:
    """The server's folder, then each client's (:data:`Clients`), in the POC project in ``root``."""
    prod = _prod_dir(root)
    return [prod / SERVER_SITE, *(prod / site for site in poc_sites(clients))]


#: Seconds between starting the POC server and starting its clients. A client's first connection
#: attempt comes about 1 s after its start, the server listens about 1.5 s after its own; a client
#: that finds nothing listening tries again only after NVFlare's connector backoff
#: (``nvflare.fuel.f3.sfm.conn_manager.INIT_WAIT``, 1 s). Measured here, started together the
#: system was ready (every client registered and the admin logged in) in 2.0-2.1 s or, about half
#: the time, 2.7-2.9 s; with the clients 0.3 s later, 2.18-2.23 s in 5 of 5 (0.4 s: the same, 0.7 s: 2.3-2.6 s).
CLIENTS_AFTER_SECONDS = 0.3


def _launch_services(root: Path, clients: Clients, log, bin_dir: str | None = None) -> None:
    """Start the server and each client with their startup kit's own ``startup/sub_start.sh --once``.

    This is what ``nvflare poc start`` runs, minus its wrapper: ``start.sh`` puts ``sub_start.sh`` in
    the background, whose supervision loop starts NVFlare only after a first ``sleep 5`` and, once
    the system is shut down, notices only on its next 5 s tick; ``--once`` (the script's own option,
    "Start NVFlare directly") execs the same ``python3 -m nvflare.private.fed.app...`` at once. Each
    service runs in its own session, its output in its folder's :data:`SERVICE_CONSOLE_LOG`, with
    the interpreter of this environment first on ``PATH`` (as ``nvflare poc start`` does; ``bin_dir``:
    its folder as reached through a link, see :func:`_poc_run`). The clients start
    :data:`CLIENTS_AFTER_SECONDS` after the server.
    """
    env = _poc_env(root)
    bin_dir = bin_dir or os.path.dirname(sys.executable)
    env["PATH"] = os.pathsep.join(filter(None, [bin_dir, env.get("PATH", "")]))
    started = _STARTED.setdefault(root, [])
    for number, service in enumerate(_service_dirs(root, clients)):
        if number == 1:
            time.sleep(CLIENTS_AFTER_SECONDS)
        log.write(f"$ {service / 'startup/sub_start.sh'} --once\n")
        log.flush()
        with open(service / SERVICE_CONSOLE_LOG, "a", encoding="utf-8") as console:
            started.append(
                subprocess.Popen(
                    ["bash", str(service / "startup" / "sub_start.sh"), "--once"],
                    cwd=service,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )


def start_poc(
    root: Path, system: System, port: int, clients: Clients, log, bin_dir: str | None = None
) -> tuple[float, object]:
    """Start the POC server and clients of the POC workspace ``root`` and wait until every client is
    connected (``bin_dir``: see :func:`_launch_services`).

    Returns:
        tuple[float, Session]: the seconds it took, and the project admin's session that saw every
        client connected (the caller closes it; :func:`run_jobs` takes it over).

    Raises:
        SimulationError: the port is taken, a service could not be started, or the clients did not
            all connect within :data:`READY_SECONDS` (the log named).
    """
    started = time.monotonic()
    if _port_taken(port):
        raise SimulationError(f"port {port} on 127.0.0.1 is already in use: the POC server cannot listen there")
    try:
        _launch_services(root, clients, log, bin_dir)
    except OSError as e:
        raise SimulationError(f"cannot start the POC system: {e}; log: {log.name}") from None
    session = ready_session(system, clients, READY_SECONDS)
    return time.monotonic() - started, session


def _shutdown(root: Path, log) -> int:
    """Shut the POC system in ``root`` down through its project admin's session, as ``nvflare poc stop``
    does (``nvflare.tool.api_utils.shutdown_system_by_session``: abort running jobs, ``shutdown all``),
    without starting a second Python for the CLI; 0, or -1 on failure (the reason in ``log``)."""
    from nvflare.tool.api_utils import shutdown_system_by_session

    kit = _prod_dir(root) / POC_ADMIN
    log.write("$ shutdown all (admin API)\n")
    log.flush()
    session = None
    try:
        session = open_session(System(kit, POC_ADMIN, POC_PROJECT), timeout=10.0)
        with contextlib.redirect_stdout(io.StringIO()):
            # wait=False: its wait for the server to be down polls a closed session for up to
            # ``timeout_in_sec`` (30 s seen here); the caller waits for the processes instead
            shutdown_system_by_session(session, timeout_in_sec=STOP_SECONDS, wait=False, verbose=False)
        return 0
    except Exception as e:  # the server already gone, or NVFlare's own error types
        log.write(f"shutdown through the admin API failed: {type(e).__name__}: {e}\n")
        return -1
    finally:
        _close(session)


def stop_poc(root: Path, log, at_once: str | None = None, python: str | None = None) -> tuple[int, int]:
    """Stop the POC system (``shutdown all`` through the admin API, see :func:`_shutdown`; else
    ``nvflare poc stop``), then every process of it still running (:func:`generator.runner.processes_of`:
    each is marked with ``root``, see :func:`_poc_env`).

    Args:
        root (Path): the POC workspace. log: the open ``poc.log``.
        at_once (str | None): why nothing of the system is left to keep (written to the log):
            every result was downloaded, or a stop signal came (while it started, or while jobs
            ran: they are recorded ``INTERRUPTED`` and their run logs stay where the table points;
            NVFlare's abort would archive and remove them, and took about 3 s per job here). The
            processes are then sent SIGTERM at once: NVFlare's server and clients take about 5.6 s
            to exit after ``shutdown all`` here (0.9 s for the command, 4.7 s to exit) and have no
            SIGTERM handler of their own (the signal ends them at once). None: ``shutdown all``.
        python (str | None): the interpreter for ``nvflare poc stop`` (see :func:`_nvflare`).

    Returns:
        tuple[int, int]: 0 if the system accepted ``shutdown all`` or was stopped at once (else the
        exit code of ``nvflare poc stop``, -1: it did not end in time) and how many processes were
        still running :data:`SHUTDOWN_GRACE` seconds after it (:data:`LEFTOVER_GRACE` after
        ``nvflare poc stop``, none when stopped at once) and were stopped here (SIGTERM, then
        SIGKILL after 3 s).
    """
    if at_once:
        log.write(f"{at_once}: SIGTERM to the POC system's processes\n")
        log.flush()
        code, grace = 0, 0.0
    else:
        code, grace = _shutdown(root, log), SHUTDOWN_GRACE
    if code != 0:
        grace = LEFTOVER_GRACE
        try:
            code = _nvflare(["poc", "stop"], root, log, STOP_SECONDS, python)
        except SimulationError:
            code = -1
    end = time.monotonic() + grace
    while grace and processes_of(root) and time.monotonic() < end:
        time.sleep(0.2)
    left = processes_of(root)
    stop_processes(left)
    for service in _STARTED.pop(root, []):  # reap them (no zombie left behind)
        with contextlib.suppress(subprocess.TimeoutExpired):
            service.wait(timeout=3)
    return code, len(left)


# --- the admin API ----------------------------------------------------------------------------------


def _quiet_admin_client() -> None:
    """Drop the console lines of NVFlare's admin client ("Connecting to FLARE ...",
    ``nvflare/fuel/hci/client/api.py``: ``AdminAPI._print_hci`` -> ``_print_hci_message``) in this
    process: only the CLI prints, and the readiness check runs in a thread, where redirecting
    ``sys.stdout`` would hide the CLI's own lines."""
    from nvflare.fuel.hci.client import api

    api._print_hci_message = lambda message: None


#: Seconds between two tries of the admin client's challenge to the server when a login starts
#: (NVFlare's ``AdminAPI.connect`` gives its ``Authenticator`` a ``retry_interval`` of 1.0). The
#: challenge goes out right after the client's cell is started, before its connection to the server
#: is up, so the first one always finds the server unreachable and the login waits the whole
#: interval: measured here, a login to a POC server listening for 1 s took 1.3-1.4 s, and 0.25-0.4 s
#: with 0.1 (the POC start from 2.7-2.9 s to 1.8-1.9 s).
ADMIN_RETRY_SECONDS = 0.1


def _prompt_admin_login() -> None:
    """Make this process's admin client retry its challenge every :data:`ADMIN_RETRY_SECONDS`:
    ``nvflare.fuel.hci.client.api`` (the admin client only, not NVFlare's server or clients, which
    run in their own processes) gets an ``Authenticator`` whose ``retry_interval`` is capped. Nothing
    else of the login changes (its tries until ``timeout``, the challenge, the registration). Done
    once; an NVFlare whose admin client has no ``Authenticator`` is left as it is."""
    from nvflare.fuel.hci.client import api

    base = getattr(api, "Authenticator", None)
    if base is None or getattr(base, "_jobgen_prompt", False):
        return

    class PromptAuthenticator(base):
        _jobgen_prompt = True

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.retry_interval = min(self.retry_interval, ADMIN_RETRY_SECONDS)

    api.Authenticator = PromptAuthenticator


def _search_configs_in(kit: Path) -> None:
    """Make NVFlare look for its optional configs (``comm_config.json``, ...) in the admin kit ``kit``,
    not in the current folder.

    The admin client's first cell reads ``comm_config`` through ``ConfigService.load_configuration``;
    with no search folder set (only NVFlare's own server and client processes set one, to their
    workspace) ``ConfigFactory.search_config_format`` runs ``os.walk`` over the current folder, once
    per config extension. NVFlare's admin console runs from its kit; we run from the user's project,
    whose ``build/`` holds every downloaded result: 2.4 s of walking for 6,500 files here, on the
    way to the first login, and a ``comm_config.json`` anywhere below would be taken as the kit's.
    ``ConfigService.initialize`` adds ``kit`` to the search folders (a folder already there is kept
    once; NVFlare reads ``comm_config`` once per process).
    """
    from nvflare.fuel.utils.config_service import ConfigService

    if Path(kit).is_dir():
        ConfigService.initialize(section_files={}, config_path=[str(kit)])


def open_session(system: System, timeout: float = 30.0):
    """A logged-in admin session (``flare_api.new_secure_session``); NVFlare's console chatter is dropped.

    Raises:
        SimulationError: the server cannot be reached or refuses the login (NVFlare's reason named).
    """
    from nvflare.fuel.flare_api.flare_api import new_secure_session

    _quiet_admin_client()
    _prompt_admin_login()
    _search_configs_in(system.startup_kit)
    try:
        return new_secure_session(system.username, str(system.startup_kit), timeout=timeout)
    except Exception as e:  # NVFlare raises its own types (NoConnection, AuthenticationError, ...) and plain ones
        raise SimulationError(
            f"cannot log in to the NVFlare server of {system.startup_kit} as {system.username}: {type(e).__name__}: {e}"
        ) from None


#: Seconds one readiness step (a login, or asking for the system's clients) may take before it is abandoned.
CHECK_SECONDS = 20
#: Seconds between two readiness checks: asking a logged-in session for the clients takes
#: milliseconds, a login about 1.2 s here (so a session is kept from the first login on).
READY_POLL_SECONDS = 0.2


#: The threads of the calls :func:`_within` gave up on (see :func:`abandoned_calls`).
_ABANDONED: list[threading.Thread] = []


def abandoned_calls() -> list[threading.Thread]:
    """The threads of calls :func:`_within` gave up on that still run (e.g. a login to a server
    stopped meanwhile: NVFlare's connector threads retry it until the login's timeout, and Python
    waits for those at exit; :func:`generator.cli.finish` then ends the process at once)."""
    return [thread for thread in _ABANDONED if thread.is_alive()]


def _within(seconds: float, call: Callable[[], object], dispose: Callable[[object], None] | None = None) -> object:
    """``call()``'s value, or None when it raised or did not return within ``seconds``.

    It runs in a daemon thread that is abandoned if it does not end in time: under heavy load a
    login to a server that is still starting was seen to hang for minutes (``nvflare poc start``'s
    own readiness wait hung so, with both clients registered). A stop signal is looked for every
    0.1 s meanwhile (:func:`generator.runner.check_interrupted`) and abandons it too.

    Args:
        dispose (callable | None): given the value of a call that returns after it was abandoned
            (e.g. :func:`_close` for a login: a session nobody closes keeps NVFlare's connector
            threads retrying, and Python waits for them at exit).

    Raises:
        Interrupted: a stop signal was recorded while waiting.
    """
    box: list = []
    lock = threading.Lock()
    abandoned = False

    def run() -> None:
        with contextlib.suppress(Exception):  # the server is still starting, or NVFlare's own errors
            value = call()
            with lock:
                if not abandoned:
                    box.append(value)
                    return
            if dispose:
                dispose(value)

    thread = threading.Thread(target=run, name="poc-readiness", daemon=True)
    thread.start()
    end = time.monotonic() + seconds
    interrupted = True
    try:
        while thread.is_alive() and time.monotonic() < end:
            thread.join(min(0.1, seconds))
            check_interrupted()
        interrupted = False
    finally:
        with lock:  # after a stop signal, whatever the call returns now, or returned just before, is not used
            abandoned = interrupted or not box
            late = box if interrupted else []
        if late and dispose:  # a login that succeeded in the last 0.1 s (a trial hung at exit on its session)
            dispose(late[0])
        if abandoned and thread.is_alive():
            _ABANDONED.append(thread)
    return box[0] if box else None


#: Seconds a login of ``submit`` may take before it is given up (NVFlare's own login gives up after 30 s).
LOGIN_SECONDS = 40


def _login(system: System):
    """:func:`open_session` in a thread, so that a stop signal is seen within 0.1 s meanwhile (a
    trial's Ctrl-C waited out NVFlare's 30 s login to a server that was down).

    Raises:
        SimulationError: the login failed (NVFlare's reason) or did not end within :data:`LOGIN_SECONDS`.
        Interrupted: a stop signal was recorded meanwhile.
    """
    failures: list[SimulationError] = []

    def login():
        try:
            return open_session(system)
        except SimulationError as e:
            failures.append(e)
            raise

    session = _within(LOGIN_SECONDS, login, _close)
    if session is None:
        if failures:
            raise failures[0]
        raise SimulationError(
            f"cannot log in to the NVFlare server of {system.startup_kit} as {system.username}: "
            f"no answer within {LOGIN_SECONDS} s"
        )
    return session


def _close(session) -> None:
    """Log ``session`` out (None: nothing), whatever NVFlare raises (the server may be gone)."""
    if session is not None:
        with contextlib.suppress(Exception):
            session.close()


def ready_session(system: System, clients: Clients, timeout: float):
    """A logged-in admin session once the server lists every client of ``clients`` (:data:`Clients`)
    as connected.

    One login (retried until it works), then the server is asked every :data:`READY_POLL_SECONDS`
    on that session; each step is abandoned after :data:`CHECK_SECONDS` (see :func:`_within`), and
    a session that stops answering is replaced.

    Raises:
        SimulationError: not all of them within ``timeout`` seconds (the ones seen are named).
    """
    end = time.monotonic() + timeout
    wanted = set(poc_sites(clients))
    session, seen = None, set()
    try:
        while True:
            if session is None:
                session = _within(CHECK_SECONDS, lambda: open_session(system, timeout=10.0), _close)
            if session is not None:
                listed = _within(CHECK_SECONDS, lambda s=session: {c.name for c in s.get_system_info().client_info})
                if listed is None:  # it stopped answering: log in again
                    _close(session)
                    session = None
                else:
                    seen = listed
                    if wanted <= seen:
                        ready, session = session, None
                        return ready
            if time.monotonic() > end:
                have = ", ".join(sorted(seen)) or "none"
                raise SimulationError(
                    f"the NVFlare system of {system.startup_kit} did not have {', '.join(sorted(wanted))} "
                    f"connected within {timeout:g} s (connected: {have})"
                )
            time.sleep(READY_POLL_SECONDS)
            check_interrupted()
    finally:
        _close(session)


def wait_for_clients(system: System, clients: Clients, timeout: float) -> list[str]:
    """Wait until the server lists every client of ``clients`` (:data:`Clients`) as connected; their names.

    Raises:
        SimulationError: not all of them within ``timeout`` seconds (the ones seen are named).
    """
    session = ready_session(system, clients, timeout)
    try:
        return sorted(c.name for c in session.get_system_info().client_info)
    finally:
        _close(session)


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


def _copy_site_logs(system: System, session, run: _Run, job_dir: Path) -> None:
    """Put each client's run logs in ``job_dir/<site>/``: from the local POC workspace
    (``<sites_dir>/<site>/<job id>/``), else what ``Session.get_job_logs`` can give (NVFlare keeps
    client logs on the server only when the system streams them)."""
    for site in run.info.sites:
        target = job_dir / site
        if system.sites_dir is not None:
            source = system.sites_dir / site / run.job_id
            for name in DOWNLOAD_LOGS:
                if (source / name).is_file():
                    target.mkdir(exist_ok=True)
                    shutil.copy2(source / name, target / name)
            continue
        for name in ("log.json", "log.txt"):
            with contextlib.suppress(Exception), contextlib.redirect_stdout(io.StringIO()):
                text = session.get_job_logs(run.job_id, target=site, log_file_name=name).get("logs", {}).get(site)
                if isinstance(text, str) and text:
                    target.mkdir(exist_ok=True)
                    (target / name).write_text(text, encoding="utf-8")


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
                location = session.download_job_result(run.job_id, destination=tmp)
        except Exception as e:
            result.problems.append(job_problem(run.name, f"cannot download the result of job {run.job_id}: {e}"))
            location = None
        if location:
            arrange_download(Path(location), job_dir)
    _copy_site_logs(system, session, run, job_dir)
    run.fetched = bool(location)


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
        result.rounds_started = tracker.rounds_started
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
            f"in the job's `clients` (jobs.yaml)"
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


def _connected_clients(session) -> list[str] | None:
    """The clients connected to the server (``Session.get_system_info``); None when it cannot say."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return sorted(c.name for c in session.get_system_info().client_info)
    except Exception:
        return None


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
                f"timed out after {run.result.timeout:g} s: NVFlare aborted job {run.job_id} (abort_job)",
            )
        )
    return run.aborted_at is not None and now - run.aborted_at > ABORT_GRACE


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
        session = session or _login(system)
        connected = _connected_clients(session)
        for name in list(pending):
            refused = missing_clients(name, manifest[name], connected)
            if refused:
                pending.remove(name)
                refuse(name, refused)
    if not pending:
        _close(session)
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
                if local:  # its run log is here
                    server_log = run.tracker.log_path.with_name("log.txt")
                    if server_log.is_file():  # else the server had not deployed it yet
                        run.result.log = str(server_log)
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
        _close(session)
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
            NVFlare's own POC, instead of directly (:data:`DIRECT_COMM_CONFIG`).

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
    manifest, selected = _selected_jobs(out, names)
    problems = check_poc_workspace(root)
    if any(_refused(n, manifest[n]) is None for n in selected):  # a system is to be started
        problems += check_poc_paths(root)
    if problems:
        raise OutputError(problems)
    managed = {"the generated jobs folder": out, "the POC workspace": root, DOWNLOADS: downloads}
    results = Path(results_path) if results_path else None
    _prepare_outputs(downloads, results, managed, plot_names(selected, manifest))
    with _held({"--workspace": root, "--downloads": downloads}, "poc", events, out, results):
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
        _close(session)
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
                f"prepared a POC system of {_counted_sites(sites)} in {root / 'poc'}{again}; "
                f"job processes connect {_route(relay)}"
            )
            seconds, session = start_poc(root, system, port, sites, log, paths.bin_dir)
            try:
                events.system_step(f"started server (127.0.0.1:{port}) and {_counted_sites(sites)} in {seconds:.1f} s")
            except BaseException:  # the session is run_jobs' to close only once it has it
                _close(session)
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
    manifest, selected = _selected_jobs(out, names)
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
        order = chosen_order(selected, results_path, parallel, events)
        with contextlib.suppress(Interrupted):  # between two polls: the results so far are returned
            results = run_jobs(system, out, manifest, selected, downloads, timeout, events, parallel, order=order)
        return _conclude(results, results_path, events, received, "submit", manifest, downloads)
