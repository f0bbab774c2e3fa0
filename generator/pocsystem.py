"""The POC system: NVFlare's real multi-process system on this machine, prepared, started and stopped for ``poc``.

:func:`prepare_poc` provisions it (``nvflare poc prepare`` from a ``project.yml`` written here:
server ``server``, the clients the selected jobs run on (:func:`sites_for`), one free loopback
port; ``HOME`` and ``NVFLARE_POC_WORKSPACE`` inside the ``--workspace`` folder, so nothing is
written to the user's home), or reuses the one a previous run provisioned there. :func:`start_poc`
starts the server and the clients with their startup kits' own ``sub_start.sh --once`` (what
``nvflare poc start`` runs, without its 5 s supervision loop; no admin console) and waits until
every client is connected (:func:`generator.admin.ready_session`). :func:`stop_poc` stops the
system (``shutdown all`` through the admin API, as ``nvflare poc stop`` does, or SIGTERM at once
when nothing of it is left to keep) and every process left under its workspace. Prints nothing.

Imports nvflare (lazily); the generate path never imports this module.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from .admin import READY_SECONDS, Clients, System, close_session, open_session, poc_sites, ready_session
from .errors import Problem, SimulationError
from .layout import (
    POC_ADMIN,
    POC_PROJECT,
    POC_RESULTS_MARKER,
    POC_WORKSPACE_MARKER,
    SERVER_SITE,
    ManifestEntry,
    site_names,
)
from .outputs import folder_problems
from .runner import mark_run, processes_of, stop_processes
from .safepaths import check_paths, path_problem
from .simulate import nvflare_command

#: Seconds a shutdown (admin API, else ``nvflare poc stop``) may take.
STOP_SECONDS = 90
#: SIGTERM, then SIGKILL (they exit within about 2 s of ``shutdown all`` here).
LEFTOVER_GRACE = 10
#: so what is left of their wind-down is cut short.
SHUTDOWN_GRACE = 2
#: The console log of the ``nvflare poc`` commands, in the POC workspace folder.
POC_LOG = "poc.log"


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


def sites_for(infos: list[ManifestEntry]) -> list[str]:
    """The clients a POC system needs to run every job of ``infos`` on its own sites (see
    :func:`generator.poc.pin_sites`): ``site-1`` .. ``site-N`` for N the largest ``num_clients`` of the jobs that
    do not name their clients, then every name of the jobs' ``clients``, in order, each once."""
    unnamed = [info.num_clients for info in infos if not info.clients]
    names = site_names(max(unnamed)) if unnamed else []
    for info in infos:
        names += [site for site in info.clients or [] if site not in names]
    return names


def counted_sites(sites: list[str]) -> str:
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
    a safe folder (:func:`generator.poc._poc_run`), as ``simulate`` does: NVFlare keeps ``sys.executable`` as it
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
    ``python``: the interpreter to run it with (default this one; a link to it, see :func:`generator.poc._poc_run`).

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


def route(relay: bool) -> str:
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
    its folder as reached through a link, see :func:`generator.poc._poc_run`). The clients start
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
        client connected (the caller closes it; :func:`generator.poc.run_jobs` takes it over).

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
        close_session(session)


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
