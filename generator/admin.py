"""The admin API: reach a running NVFlare system through an admin startup kit, and wait for its clients.

An NVFlare system (a POC system started by :mod:`generator.pocsystem`, or a production one) is
reached through an admin's startup kit (:class:`System`, :func:`admin_kit`). Logins go through
NVFlare's Python admin API (``nvflare.fuel.flare_api.flare_api.new_secure_session``), quietened
(:func:`_quiet_admin_client`), quicker to retry its first challenge (:func:`_prompt_admin_login`),
bounded in time and interruptible by a stop signal (:func:`_within`, :func:`login`);
:func:`ready_session` waits until every client the jobs need is connected. Used by ``poc`` and
``submit`` (:mod:`generator.poc`); prints nothing.

Imports nvflare (lazily); the generate path never imports this module.
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import OptionError, Problem, SimulationError
from .layout import site_names
from .runner import check_interrupted

#: Seconds to wait for the system to have every client connected after it was started.
READY_SECONDS = 180


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


#: The clients of a POC system: a number N (``site-1`` .. ``site-N``) or their names.
Clients = int | Sequence[str]


def poc_sites(clients: Clients) -> list[str]:
    """The client names of ``clients`` (:data:`Clients`)."""
    return site_names(clients) if isinstance(clients, int) else list(clients)


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
            (e.g. :func:`close_session` for a login: a session nobody closes keeps NVFlare's connector
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


#: Seconds :func:`download_result` asks again while the server says a finished job is still
#: running (see there).
DOWNLOAD_SETTLE = 30.0


def download_result(session, job_id: str, destination: str, settle: float = DOWNLOAD_SETTLE) -> str:
    """``Session.download_job_result(job_id, destination)``, asked again every 0.5 s for up to
    ``settle`` seconds while the server answers ``JobNotDone``.

    NVFlare 2.9's ``JobRunner`` publishes a finished job's status before it takes the job off its
    running jobs (``private/fed/server/job_runner.py``: ``set_status``, then ``del running_jobs``),
    and ``download_job`` refuses a job that is still among them: a CI run under load saw
    ``JobNotDone: job ... is still running`` right after the status said FINISHED.

    Returns:
        str: where NVFlare put the result (``<destination>/<job id>``).

    Raises:
        whatever the admin API raises; ``JobNotDone`` once ``settle`` seconds have passed.
    """
    deadline = time.monotonic() + settle
    while True:
        try:
            return session.download_job_result(job_id, destination)
        except Exception as e:  # JobNotDone: nvflare.fuel.flare_api.api_spec on 2.7 and 2.9
            if type(e).__name__ != "JobNotDone" or time.monotonic() >= deadline:
                raise
        time.sleep(0.5)


def login(system: System):
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

    session = _within(LOGIN_SECONDS, login, close_session)
    if session is None:
        if failures:
            raise failures[0]
        raise SimulationError(
            f"cannot log in to the NVFlare server of {system.startup_kit} as {system.username}: "
            f"no answer within {LOGIN_SECONDS} s"
        )
    return session


def close_session(session) -> None:
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
                session = _within(CHECK_SECONDS, lambda: open_session(system, timeout=10.0), close_session)
            if session is not None:
                listed = _within(CHECK_SECONDS, lambda s=session: {c.name for c in s.get_system_info().client_info})
                if listed is None:  # it stopped answering: log in again
                    close_session(session)
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
        close_session(session)


def wait_for_clients(system: System, clients: Clients, timeout: float) -> list[str]:
    """Wait until the server lists every client of ``clients`` (:data:`Clients`) as connected; their names.

    Raises:
        SimulationError: not all of them within ``timeout`` seconds (the ones seen are named).
    """
    session = ready_session(system, clients, timeout)
    try:
        return sorted(c.name for c in session.get_system_info().client_info)
    finally:
        close_session(session)


def connected_clients(session) -> list[str] | None:
    """The clients connected to the server (``Session.get_system_info``); None when it cannot say."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return sorted(c.name for c in session.get_system_info().client_info)
    except Exception:
        return None
