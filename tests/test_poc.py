"""``poc`` and ``submit``: generated folders run on a real NVFlare system (POC over 127.0.0.1), judged as simulate.

The ``simulator`` tests start real POC systems: one ``poc`` run of five small jobs (a FULL job in a
sub-process, an in-process MLflow job whose tags have dotted keys, a sub-process W&B job, a client script that raises, a
sub-process script whose import fails),
and one POC system started here that ``submit`` reaches through its admin startup kit (a job that
passes, a job aborted at its timeout). Each checks, by PID, that no process of the system is left,
and that nothing was written to ``HOME`` (pointed at a temp folder). The other tests need no NVFlare run.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import INITIAL_MODEL, ROOT, run_main, run_main_while_held, shipped_job_names, snapshot, user_environ

from generator.layout import DOWNLOAD_MAP, POC_RESULTS_MARKER, POC_WORKSPACE_MARKER

CRASH_SCRIPT = (
    "import nvflare.client as flare\n\n"
    "flare.init()\n"
    "while flare.is_running():\n"
    "    received = flare.receive()\n"
    "    if received.current_round == 1:\n"
    "        raise RuntimeError('boom in round 1')\n"
    "    flare.send(flare.FLModel(params={'numpy_key': received.params['numpy_key'] + 1}, params_type='FULL'))\n"
)

SLOW_SCRIPT = (
    "import time\n\n"
    "import nvflare.client as flare\n\n"
    "flare.init()\n"
    "while flare.is_running():\n"
    "    received = flare.receive()\n"
    "    time.sleep(3)\n"
    "    flare.send(flare.FLModel(params={'numpy_key': received.params['numpy_key'] + 1}, params_type='FULL'))\n"
)

JOBS_YAML = """\
defaults:
  num_rounds: 2
  server: {task_request_interval: 0.1}
jobs:
  - name: full-sub
    script: train_full.py
    launch_external_process: true
  - name: metrics
    script: train_metrics.py
    script_args: --epoch_seconds 0
    receiver:
      type: mlflow
      experiment_name: poc-experiment
      experiment_tags: {mlflow.note.content: "## POC experiment"}
      run_tags: {mlflow.note.content: "run note"}
    expect: {metric_points_per_site: {global_step: 750}}
  - name: wandb-sub
    script: train_metrics_wandb.py
    script_args: --epoch_seconds 0
    launch_external_process: true
    receiver: {type: wandb}
    expect: {metric_points_per_site: {global_step: 750, model_mean: 6}}
  - name: crash
    script: train_crash.py
    num_rounds: 3
  - name: badimport
    script: train_badimport.py
    launch_external_process: true
  - name: slow
    script: train_slow.py
    num_rounds: 10
"""


def make_project(folder: Path) -> Path:
    """A project with :data:`JOBS_YAML`, the shipped client scripts, the crashing and the slow one, generated."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "client_scripts", folder / "client_scripts")
    (folder / "client_scripts/train_crash.py").write_text(CRASH_SCRIPT)
    (folder / "client_scripts/train_slow.py").write_text(SLOW_SCRIPT)
    (folder / "client_scripts/train_badimport.py").write_text("import not_a_module_anywhere\n")
    (folder / "jobs.yaml").write_text(JOBS_YAML)
    assert run_main(folder, "generate").returncode == 0
    return folder


def cli(cwd: Path, home: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """``python -m generator ARGS`` in ``cwd`` with ``HOME`` at ``home``, in a user's environment
    (without the test session's ``MPLCONFIGDIR``: what lands in ``home`` is what a user would get)."""
    env = {**user_environ(), "PYTHONPATH": str(ROOT), "HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.run(
        [sys.executable, "-m", "generator", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def _python(code: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -c code args...`` in ``cwd`` with this project importable; output captured as text."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


class ProcessWatch:
    """Every process whose command line or working folder is in ``root``, seen while the block runs,
    remembered by PID and start time (a reused PID is not mistaken for it), and the addresses any of
    them was seen listening on (``listening``)."""

    def __init__(self, root: Path):
        self.root = str(root.resolve())
        self.seen: dict[tuple[int, float], str] = {}
        self.listening: set[str] = set()
        self._lock = threading.Lock()  # the watching thread adds to `seen` while a test reads it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _scan(self) -> None:
        import psutil

        for proc in psutil.process_iter(["pid", "cmdline", "cwd", "create_time"]):
            cmdline, cwd = proc.info.get("cmdline") or [], proc.info.get("cwd") or ""
            if proc.pid != os.getpid() and (cwd.startswith(self.root) or any(self.root in a for a in cmdline)):
                try:
                    listening = {c.laddr.ip for c in proc.net_connections("inet") if c.status == psutil.CONN_LISTEN}
                except psutil.Error:
                    listening = set()
                with self._lock:
                    self.seen[(proc.pid, proc.info["create_time"])] = " ".join(cmdline)
                    self.listening |= listening

    def _run(self) -> None:
        while not self._stop.is_set():
            self._scan()
            time.sleep(0.3)

    def __enter__(self) -> ProcessWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def processes(self) -> dict[tuple[int, float], str]:
        """A copy of what was seen so far: ``{(pid, start time): command line}``."""
        with self._lock:
            return dict(self.seen)

    def left(self) -> list[str]:
        """The remembered processes that still run (zombies aside)."""
        import psutil

        alive = []
        for (pid, started), cmdline in self.processes().items():
            try:
                proc = psutil.Process(pid)
                if proc.create_time() == started and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{pid} {cmdline}")
            except psutil.Error:
                pass
        return alive


# --- without NVFlare --------------------------------------------------------------------------------


def test_the_poc_port_is_free_and_outside_the_kernels_ephemeral_range():
    """Outgoing connections and bind(0) (how nvflare simulator picks its ports) never get it."""
    from generator.pocsystem import EPHEMERAL_RANGE, free_port

    if not EPHEMERAL_RANGE.is_file():
        pytest.skip(f"{EPHEMERAL_RANGE} is not on this system (not Linux)")
    low = int(EPHEMERAL_RANGE.read_text().split()[0])
    for _ in range(20):
        port = free_port()
        assert 10000 <= port < low
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", port))


def test_clients_exited_reads_the_end_of_each_sites_job_log(tmp_path):
    """A job is seen gone from every client only when each site's run log of it ends with NVFlare's exit line."""
    from generator.poc import JOB_PROCESS_EXIT, clients_exited

    sites = ["site-1", "site-2"]
    for site in sites:
        (tmp_path / site / "job-1").mkdir(parents=True)
        (tmp_path / site / "job-1/log.txt").write_text("x" * 10000 + "\nINFO - worker started\n")
    assert not clients_exited(tmp_path, "job-1", sites)
    with open(tmp_path / "site-1/job-1/log.txt", "a") as f:
        f.write(f"2026-12-01 08:46:11,567 - MPM - INFO - {JOB_PROCESS_EXIT}\n")
    assert not clients_exited(tmp_path, "job-1", sites)  # site-2's still runs
    with open(tmp_path / "site-2/job-1/log.txt", "a") as f:
        f.write(f"2026-12-01 08:46:11,567 - MPM - INFO - {JOB_PROCESS_EXIT}\n")
    assert clients_exited(tmp_path, "job-1", sites)
    assert not clients_exited(tmp_path, "job-2", sites)  # no log: cannot tell
    assert not clients_exited(None, "job-1", sites)  # not a local system


class _AbortingServer:
    """A POC server's admin session for ``poc._poll``: the job runs until it is aborted."""

    def __init__(self):
        self.aborted: list[str] = []

    def get_job_meta(self, job_id):
        return {"status": "FINISHED:ABORTED" if self.aborted else "RUNNING"}

    def abort_job(self, job_id):
        self.aborted.append(job_id)


class _NoEvents:
    def round_started(self, *args):
        pass


def test_a_job_whose_server_process_ended_too_gets_longer_before_it_is_aborted(tmp_path, monkeypatch):
    """Seen once in CI under heavy load: a metrics job ran well, its clients' and then its server's job
    process exited, and NVFlare's server parent listed it as running for 15 s more; the clients-gone
    grace aborted it as FAILED. With the server's job process ended too, NVFlare is only finishing the
    job: it gets ENDED_RUN_GRACE, and is aborted after that with a message that says so."""
    from generator import poc
    from generator.layout import ManifestEntry
    from generator.simulate import JobResult

    info = ManifestEntry("2.9", 2, 1, "in_process", "t.py")
    run = poc._Run("j", info, JobResult(name="j", rounds=1), "job-1", time.monotonic(), time.monotonic() + 600)
    session = _AbortingServer()
    for site in ("site-1", "site-2", "server"):
        (tmp_path / site / "job-1").mkdir(parents=True)
        (tmp_path / site / "job-1/log.txt").write_text(f"MPM - INFO - {poc.JOB_PROCESS_EXIT}\n")
    monkeypatch.setattr(poc, "CLIENTS_GONE_GRACE", -1)
    assert not poc._poll(session, run, _NoEvents(), tmp_path)
    assert session.aborted == [] and not run.result.problems  # NVFlare is finishing it
    monkeypatch.setattr(poc, "ENDED_RUN_GRACE", -1)
    assert not poc._poll(session, run, _NoEvents(), tmp_path)
    assert session.aborted == ["job-1"]
    assert [p.message for p in run.result.problems] == [
        "every job process of it (the server's too) had exited for -1 s while the server still ran the job: "
        "NVFlare aborted job job-1 (abort_job)"
    ]


def test_a_job_the_server_keeps_after_its_clients_exited_is_aborted_as_failed(tmp_path, monkeypatch):
    """NVFlare's server may never learn that a client job died in its first seconds; poc aborts the job
    once every client's job process has been gone for CLIENTS_GONE_GRACE, without waiting for its timeout."""
    from generator import poc
    from generator.layout import ManifestEntry
    from generator.simulate import JobResult

    info = ManifestEntry("2.9", 2, 1, "external_process", "t.py")
    run = poc._Run("j", info, JobResult(name="j", rounds=1), "job-1", time.monotonic(), time.monotonic() + 600)
    session = _AbortingServer()
    assert not poc._poll(session, run, _NoEvents(), tmp_path)  # no site logs: nothing known
    for site in ("site-1", "site-2"):
        (tmp_path / site / "job-1").mkdir(parents=True)
        (tmp_path / site / "job-1/log.txt").write_text(f"MPM - INFO - {poc.JOB_PROCESS_EXIT}\n")
    assert not poc._poll(session, run, _NoEvents(), tmp_path)  # exited: the grace starts
    assert session.aborted == [] and run.clients_ended_at is not None
    monkeypatch.setattr(poc, "CLIENTS_GONE_GRACE", -1)
    assert not poc._poll(session, run, _NoEvents(), tmp_path)
    assert session.aborted == ["job-1"] and run.result.status != poc.TIMEOUT
    assert [p.message for p in run.result.problems] == [
        "every client's job process had exited for -1 s while the server still ran the job: "
        "NVFlare aborted job job-1 (abort_job)"
    ]
    assert poc._poll(session, run, _NoEvents(), tmp_path)  # NVFlare ended it


def test_a_job_being_judged_does_not_hold_up_noticing_and_downloading_the_others(tmp_path, monkeypatch):
    """Reading a metrics job's store and plotting it took 2.2 s here; judged in line, the loop noticed
    the last job's end that much later. Here job "slow" ends first and its judging waits until job
    "quick" has been downloaded: in line, that would never happen (the wait gives up after 10 s)."""
    from generator import admin, poc
    from generator.layout import ManifestEntry
    from generator.simulate import JobResult

    monkeypatch.setattr(poc, "POLL_SECONDS", 0.01)
    info = ManifestEntry("2.9", 2, 1, "in_process", "t.py")
    manifest = {"slow": info, "quick": info}
    polls = {"slow": 0, "quick": 0}
    quick_downloaded = threading.Event()
    told: list[str] = []

    class Session:
        def get_system_info(self):
            raise OSError("cannot say")  # every job is submitted

        def get_job_meta(self, job_id):
            polls[job_id] += 1
            ends_after = 1 if job_id == "slow" else 3
            return {"status": poc.COMPLETED if polls[job_id] >= ends_after else "RUNNING"}

        def close(self):
            pass

    def submit(session, out, name, info, timeout, events, system, staging):
        result = JobResult(name=name, rounds=1)
        return poc._Run(name, info, result, name, time.monotonic(), time.monotonic() + 600)

    def fetch(system, session, run, downloads):
        run.fetched = True
        if run.name == "quick":
            quick_downloaded.set()

    def judge(system, run, job_dir):
        if run.name == "slow" and not quick_downloaded.wait(10):
            run.result.problems.append("judged before the other job was downloaded")

    class Events:
        def round_started(self, *args):
            pass

        def job_finished(self, result):
            told.append(result.name)

    monkeypatch.setattr(poc, "_submit", submit)
    monkeypatch.setattr(poc, "_fetch", fetch)
    monkeypatch.setattr(poc, "_judge", judge)
    system = admin.System(tmp_path / "kit", "admin", "proj", None)
    downloads = tmp_path / "downloads"
    names = ["slow", "quick"]
    results = poc.run_jobs(system, tmp_path, manifest, names, downloads, None, Events(), 2, session=Session())

    assert [(r.name, r.status, r.problems) for r in results] == [("slow", poc.OK, []), ("quick", poc.OK, [])]
    assert sorted(told) == ["quick", "slow"]


def test_a_stop_signal_after_a_job_ended_on_the_server_still_downloads_and_judges_it(tmp_path, monkeypatch):
    """A trial's Ctrl-C came just after one job had ended on the server and before the next poll saw
    it: it was recorded INTERRUPTED, "log: not downloaded". Now it is downloaded and judged; the job
    still running is recorded INTERRUPTED (and, on ``poc``, stopped with the system)."""
    import signal

    from generator import admin, poc
    from generator.layout import ManifestEntry
    from generator.runner import Interrupted
    from generator.simulate import JobResult

    info = ManifestEntry("2.9", 2, 1, "in_process", "t.py")
    asked: list[str] = []

    class Session:
        def get_system_info(self):
            raise OSError("cannot say")

        def get_job_meta(self, job_id):
            asked.append(job_id)
            ended = job_id == "done" and len(asked) > 2  # after the first poll of each
            return {"status": poc.COMPLETED if ended else "RUNNING"}

        def abort_job(self, job_id):
            raise AssertionError("poc stops its system instead")

        def close(self):
            pass

    def submit(session, out, name, info, timeout, events, system, staging):
        return poc._Run(name, info, JobResult(name=name, rounds=1), name, time.monotonic(), time.monotonic() + 600)

    def fetch(system, session, run, downloads):
        run.fetched = True

    checks = []

    def check_interrupted():
        checks.append(1)
        if len(asked) >= 2:  # the signal comes after the first poll
            raise Interrupted(signal.SIGINT)

    class Events:
        def round_started(self, *args):
            pass

        def job_finished(self, result):
            pass

    monkeypatch.setattr(poc, "_submit", submit)
    monkeypatch.setattr(poc, "_fetch", fetch)
    monkeypatch.setattr(poc, "_judge", lambda system, run, job_dir: None)
    monkeypatch.setattr(poc, "check_interrupted", check_interrupted)
    system = admin.System(tmp_path / "kit", "admin", "proj", None)
    names = ["done", "running"]
    results = poc.run_jobs(
        system,
        tmp_path,
        {n: info for n in names},
        names,
        tmp_path / "dl",
        None,
        Events(),
        2,
        session=Session(),
        abort=False,
    )

    assert [(r.name, r.status) for r in results] == [("done", poc.OK), ("running", poc.INTERRUPTED)]
    assert "interrupted by SIGINT" in results[1].problems[-1].message
    # a trial ran the printed command as it was and NVFlare asked for a startup kit
    kit = shlex.quote(str(tmp_path / "kit"))
    nvflare = shlex.quote(str(Path(sys.executable).parent / "nvflare"))  # this environment's, as installed
    hint = f"({nvflare} job download running --startup-kit {kit})"
    assert results[1].problems[-1].message.endswith(f"; once it has ended, its result is kept on the server {hint}")


def test_project_yaml_has_the_server_the_admin_and_sites_on_one_port():
    from generator.pocsystem import project_yaml

    project = yaml.safe_load(project_yaml(3, 40123))
    participants = {p["name"]: p for p in project["participants"]}
    assert list(participants) == ["server", "admin@nvidia.com", "site-1", "site-2", "site-3"]
    assert participants["server"]["fed_learn_port"] == 40123
    assert participants["admin@nvidia.com"]["role"] == "project_admin"
    assert [p["type"] for p in project["participants"]].count("client") == 3


def test_more_jobs_at_once_than_the_poc_server_runs_raise_its_max_jobs(tmp_path):
    from generator import pocsystem

    # the components of the server's local/resources.json as `nvflare poc prepare` writes them (2.9)
    local = tmp_path / "server" / "local"
    local.mkdir(parents=True)
    scheduler = "nvflare.app_common.job_schedulers.job_scheduler.DefaultJobScheduler"
    components = [
        {"id": "job_scheduler", "path": scheduler, "args": {"max_jobs": pocsystem.POC_MAX_JOBS}},
        {"id": "job_manager", "path": "nvflare.apis.impl.job_def_manager.SimpleJobDefManager", "args": {}},
    ]
    (local / "resources.json").write_text(json.dumps({"format_version": 2, "components": components}))

    pocsystem._allow_jobs(tmp_path, 6)

    config = json.loads((local / "resources.json").read_text())
    assert config["components"][0] == {"id": "job_scheduler", "path": scheduler, "args": {"max_jobs": 6}}
    assert config["components"][1] == components[1]


def _fake_provisioner(monkeypatch) -> list[list[str]]:
    """Replace ``nvflare poc prepare`` with one that writes the few files ``prepare_poc`` reads and a
    random certificate, recording each call."""
    from generator import pocsystem

    calls: list[list[str]] = []

    def nvflare(args, root, log, timeout, python=None):
        calls.append(args)
        prod = pocsystem._prod_dir(root)
        for folder in ("admin@nvidia.com/startup", "server/startup", "server/local", "site-1/startup"):
            (prod / folder).mkdir(parents=True, exist_ok=True)
        (prod / "server/startup/fed_server.json").write_text('{"servers": [{"service": {"target": "server:1"}}]}')
        (prod / "server/local/resources.json").write_text('{"components": [{"id": "job_scheduler"}]}')
        (prod / "server/startup/server.crt").write_bytes(os.urandom(16))
        for site in pocsystem.site_names(8):  # more clients than any test asks for
            (prod / site / "startup").mkdir(parents=True, exist_ok=True)
            (prod / site / "startup/fed_client.json").write_text(f'{{"client": {{"fqsn": "{site}"}}}}')
        (root / "home/.nvflare").mkdir()
        return 0

    monkeypatch.setattr(pocsystem, "_nvflare", nvflare)
    return calls


def test_a_poc_system_provisioned_before_is_reused_without_any_state_of_the_earlier_run(tmp_path, monkeypatch):
    from generator import pocsystem

    calls = _fake_provisioner(monkeypatch)
    root = tmp_path / "ws"
    root.mkdir()
    log = io.StringIO()
    system, port, reused = pocsystem.prepare_poc(root, 2, log)
    assert (len(calls), reused) == (1, False)
    first = snapshot(root / "poc")
    # what the run leaves: a job's folder, stored jobs, logs, a raised max_jobs
    (system.sites_dir / "site-1" / "job-1").mkdir()
    (root / "poc" / "jobs-storage").mkdir()
    (system.sites_dir / "server" / "log.txt").write_text("run 1")
    (root / "home" / ".nvflare" / "config.conf").write_text("written later")

    again, same_port, reused = pocsystem.prepare_poc(root, 2, log, max_jobs=6)

    assert (len(calls), reused, same_port, again) == (1, True, port, system)
    assert "`nvflare poc prepare` not run" in log.getvalue()
    resources = json.loads((system.sites_dir / "server/local/resources.json").read_text())
    assert resources["components"][0]["args"] == {"max_jobs": 6}
    (system.sites_dir / "server/local/resources.json").write_text('{"components": [{"id": "job_scheduler"}]}')
    assert snapshot(root / "poc") == first  # certificates the same; nothing of the run came back
    assert not (root / "home" / ".nvflare" / "config.conf").exists()
    served = json.loads((system.sites_dir / "server/startup/fed_server.json").read_text())
    assert served["servers"][0]["service"]["target"] == f"127.0.0.1:{port}"
    for site in ("site-1", "site-2"):  # a client retries its registration soon after the server is up
        client = json.loads((system.sites_dir / site / "startup/fed_client.json").read_text())["client"]
        assert client == {"fqsn": site, "client_register_interval": pocsystem.CLIENT_REGISTER_INTERVAL}


def test_the_poc_server_lets_job_processes_connect_directly_unless_relay(tmp_path, monkeypatch):
    from generator import pocsystem

    _fake_provisioner(monkeypatch)
    root = tmp_path / "ws"
    root.mkdir()
    log = io.StringIO()
    system, _, _ = pocsystem.prepare_poc(root, 2, log)
    server_config = system.sites_dir / "server/local/comm_config.json"
    assert json.loads(server_config.read_text()) == {
        "allow_adhoc_conns": True,
        "adhoc": {"scheme": "tcp", "resources": {"host": "127.0.0.1", "secure": False}},
    }
    assert not list(system.sites_dir.glob("site-*/local/comm_config.json"))  # a client's job process connects

    again, _, reused = pocsystem.prepare_poc(root, 2, log, relay=True)
    assert reused and not (again.sites_dir / "server/local/comm_config.json").exists()  # NVFlare's default
    assert "(--relay: NVFlare's default)" in log.getvalue()
    assert pocsystem.prepare_poc(root, 2, log)[2] and server_config.exists()


@pytest.mark.parametrize("extra, relay", [((), False), (("--relay",), True)])
def test_poc_relays_only_when_asked_and_submit_has_no_such_option(tmp_path, monkeypatch, extra, relay):
    from generator import poc

    calls = []
    monkeypatch.setattr(poc, "poc_all", lambda *args, **options: calls.append((args, options)) or [])
    result = run_main(tmp_path, "poc", "--job", "a", *extra)
    assert result.returncode == 1  # no job ran
    ((args, options),) = calls
    assert args[:3] == ("build/jobs", "build/poc-workspace", ["a"]) and options == {"relay": relay}
    refused = run_main(tmp_path, "submit", "--startup-kit", "kit", "--relay")
    assert refused.returncode == 2 and "unrecognized arguments: --relay" in refused.stderr


def _time_wait(port: int) -> None:
    """Leave a connection to ``port`` of 127.0.0.1 in TIME-WAIT there (its server side closes first)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen()
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()
        client.close()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as plain:
        with pytest.raises(OSError):
            plain.bind(("127.0.0.1", port))  # a bind without SO_REUSEADDR fails now


def test_a_kept_poc_system_is_provisioned_again_for_other_clients_a_taken_port_or_another_nvflare(
    tmp_path, monkeypatch
):
    from generator import pocsystem

    calls = _fake_provisioner(monkeypatch)
    root = tmp_path / "ws"
    root.mkdir()
    log = io.StringIO()
    _, port, _ = pocsystem.prepare_poc(root, 2, log)

    assert pocsystem.prepare_poc(root, 3, log)[2] is False  # three clients
    assert len(calls) == 2
    _, port, _ = pocsystem.prepare_poc(root, 3, log)
    assert len(calls) == 2
    _time_wait(port)  # what the previous run's connections leave for about 60 s: no reason to provision
    assert pocsystem.prepare_poc(root, 3, log)[1:] == (port, True)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:  # another server listens there now
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", port))
        taken.listen()
        _, other, reused = pocsystem.prepare_poc(root, 3, log)
    assert (len(calls), reused) == (3, False) and other != port
    key = root / pocsystem.PROVISIONED / pocsystem.PROVISIONED_KEY
    key.write_text(json.dumps({**json.loads(key.read_text()), "nvflare": "2.0.0"}))
    assert pocsystem.prepare_poc(root, 3, log)[2] is False
    key.write_text(json.dumps({**json.loads(key.read_text()), "created": time.time() - 31 * 86400}))
    assert pocsystem.prepare_poc(root, 3, log)[2] is False
    key.write_text("{not json")
    assert pocsystem.prepare_poc(root, 3, log)[2] is False
    # provisioned at another path (a moved folder, or the link of a run from a path with a space):
    # NVFlare wrote that path into the server's resources.json (job and snapshot stores)
    key.write_text(json.dumps({**json.loads(key.read_text()), "workspace": "/elsewhere/ws"}))
    assert pocsystem.prepare_poc(root, 3, log)[2] is False
    assert len(calls) == 7


def test_a_download_is_laid_out_as_a_simulator_workspace(tmp_path):
    from generator.poc import arrange_download

    download = tmp_path / "dl" / "1234"
    for rel in ("workspace/log.json", "workspace/log.txt", "workspace/models/server.npy", "job/x/meta.json"):
        (download / rel).parent.mkdir(parents=True, exist_ok=True)
        (download / rel).write_text(rel)
    (download / "meta.json").write_text("{}")
    job = tmp_path / "poc" / "x"
    (job / "stale").mkdir(parents=True)

    arrange_download(download, job)

    assert snapshot(job).keys() == {
        "meta.json",
        "server",
        "server/log.json",
        "server/log.txt",
        "server/simulate_job",
        "server/simulate_job/models",
        "server/simulate_job/models/server.npy",
        "submitted",
        "submitted/x",
        "submitted/x/meta.json",
    }
    assert (job / "server/log.json").read_text() == "workspace/log.json"
    assert ("workspace", "server/simulate_job") in DOWNLOAD_MAP


def test_poc_refuses_a_workspace_of_someone_elses_files_before_anything_starts(tmp_path):
    project = make_project(tmp_path / "p")
    (project / "mine").mkdir()
    (project / "mine/notes.txt").write_text("keep")

    result = run_main(project, "poc", "--workspace", "mine")

    assert result.returncode == 2
    assert result.stderr == (
        f"mine: --workspace: holds files the generator did not write (no {POC_WORKSPACE_MARKER}); refusing to "
        "clear it: choose another --workspace\n"
    )
    assert (project / "mine/notes.txt").read_text() == "keep"
    assert not (project / "build/poc").exists()


@pytest.mark.parametrize(
    ("option", "folder", "marker"),
    [("--workspace", "build/poc-workspace", POC_WORKSPACE_MARKER), ("--downloads", "build/poc", POC_RESULTS_MARKER)],
)
def test_poc_refuses_a_folder_another_run_is_using_and_changes_nothing(tmp_path, option, folder, marker):
    """`make poc` while another runs: the second would clear the first's running POC system (seen:
    the first run's job "FAILED ... no such job", the second's `nvflare poc prepare` killed)."""
    project = make_project(tmp_path / "p")
    (project / folder).mkdir(parents=True)
    (project / folder / marker).write_text("")
    (project / folder / "of-the-first-run").write_text("")
    result, before = run_main_while_held(project, project / folder, "poc")

    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == (
        f"{folder}: {option}: another run of the generator (simulate, poc or submit) is using this folder; "
        f"`poc` would clear what that run writes there: wait until it has finished, or give another {option} "
        "(and another --results, which that run will write too)\n"
    )
    assert result.stdout == ""
    assert snapshot(project) == before


def test_poc_refuses_a_workspace_path_with_a_space_naming_it_and_the_fix(tmp_path):
    """NVFlare's POC start scripts split their commands at spaces, and NVFlare resolves the
    workspace's real path for each job (a link does not help): refused before anything runs, with
    the make variable that gives another workspace; nothing is created."""
    project = make_project(tmp_path / "my project")

    result = run_main(project, "poc")

    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"{project / 'build/poc-workspace'}: --workspace: contains ' ', which NVFlare's POC system ")
    assert "`make poc POC_WS=/tmp/jobgen-poc-$(id -u)`" in line
    assert not (project / "build/poc-workspace").exists() and not (project / "build/poc").exists()


def test_poc_refuses_a_python_it_cannot_reach_through_a_link(monkeypatch, tmp_path):
    """A Python environment whose path has a space is reached through a link to its prefix; one
    outside its prefix cannot be, and is refused before anything starts."""
    from generator import safepaths
    from generator.pocsystem import check_poc_paths

    monkeypatch.setattr(safepaths.sys, "prefix", "/opt/my envs/jobgen")
    monkeypatch.setattr(safepaths.sys, "executable", "/opt/my envs/jobgen/bin/python")
    assert check_poc_paths(tmp_path) == []
    monkeypatch.setattr(safepaths.sys, "executable", "/usr/my bin/python")
    (problem,) = check_poc_paths(tmp_path)
    assert problem.file == "/usr/my bin/python"
    assert "not inside its environment's prefix /opt/my envs/jobgen" in problem.message


def test_poc_refuses_downloads_inside_the_generated_jobs(tmp_path):
    project = make_project(tmp_path / "p")
    generated = snapshot(project / "build/jobs")

    result = run_main(project, "poc", "--downloads", "build/jobs/results")

    assert result.returncode == 2
    assert result.stderr == (
        "build/jobs/results: --downloads: overlaps the generated jobs folder build/jobs: choose a folder beside it\n"
    )
    assert snapshot(project / "build/jobs") == generated


def test_submit_needs_an_admin_startup_kit(tmp_path):
    project = make_project(tmp_path / "p")

    result = run_main(project, "submit", "--startup-kit", "nowhere")

    assert result.returncode == 2
    assert result.stderr == "nowhere: --startup-kit: does not exist: give an admin's startup kit\n"
    (project / "kit").mkdir()
    result = run_main(project, "submit", "--startup-kit", "kit")
    assert result.returncode == 2
    assert result.stderr == "kit: --startup-kit: no startup/fed_admin.json here: give an admin's startup kit\n"


ABANDONED_LOGIN = """\
import time
from concurrent.futures import ThreadPoolExecutor

from generator import admin, poc, pocsystem
from generator.cli import finish


def login():  # as NVFlare's login to a server that is gone: its connector retries in an executor's thread
    ThreadPoolExecutor(1).submit(time.sleep, 60)
    time.sleep(60)


assert admin._within(0.2, login) is None
print("gave up", flush=True)
finish(130)
"""


def test_a_process_that_gave_up_on_a_login_exits_at_once_without_waiting_for_nvflares_threads(tmp_path):
    """Ctrl-C while the POC system starts abandons the readiness login; NVFlare's threads of that
    login kept Python from exiting for 14 s in a trial (``cli.finish`` ends the process at once)."""
    started = time.monotonic()
    done = _python(ABANDONED_LOGIN, cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (130, "gave up\n", "")
    assert time.monotonic() - started < 30  # a normal exit waits the 60 s of the thread


def test_a_login_that_succeeds_as_a_stop_signal_comes_is_closed_not_left_open():
    """A trial hung at exit: the readiness login returned in the last 0.1 s before the stop signal was
    looked at, so ``Interrupted`` left its session open and NVFlare's connector thread alive."""
    import signal

    from generator import admin
    from generator.runner import Interrupted, interrupt_on_signals

    disposed = []

    def login():
        time.sleep(0.25)  # _within waits in its 0.1 s joins by now
        os.kill(os.getpid(), signal.SIGINT)  # recorded by interrupt_on_signals, raised where looked for
        return "session"

    with interrupt_on_signals():
        with pytest.raises(Interrupted):
            admin._within(5, login, disposed.append)
        time.sleep(0.3)  # had the call still run when the signal was seen, its thread disposes of it
    assert disposed == ["session"]


OPEN_SESSION_AT_EXIT = """\
import time
from concurrent.futures import ThreadPoolExecutor

import generator.poc  # noqa: F401  (a command that used NVFlare's admin API)
from generator.cli import finish

ThreadPoolExecutor(1).submit(time.sleep, 60)  # as the connector of a session nobody closed
print("interrupted", flush=True)
finish(130)
"""


def test_an_interrupted_exit_does_not_wait_for_nvflares_threads_of_a_session_left_open(tmp_path):
    started = time.monotonic()
    done = _python(OPEN_SESSION_AT_EXIT, cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (130, "interrupted\n", "")
    assert time.monotonic() - started < 30


CRASH_WITH_A_SESSION_LEFT_OPEN = """\
import runpy
import time
from concurrent.futures import ThreadPoolExecutor

import generator.cli
import generator.poc  # noqa: F401  (a command that used NVFlare's admin API)


def main():
    ThreadPoolExecutor(1).submit(time.sleep, 60)  # as the connector of a session nobody closed
    raise RuntimeError("a bug of ours")


generator.cli.main = main
runpy.run_module("generator", run_name="__main__")
"""


def test_a_crash_prints_its_traceback_and_does_not_wait_for_nvflares_threads_of_a_session_left_open(tmp_path):
    """Seen: `poc ... | head -1` raised BrokenPipeError past the session it had just opened, and the
    process then waited at exit for NVFlare's connector threads of that session, for good."""
    started = time.monotonic()
    done = _python(CRASH_WITH_A_SESSION_LEFT_OPEN, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("Traceback") and done.stderr.endswith("RuntimeError: a bug of ours\n")
    assert time.monotonic() - started < 30


COMM_CONFIG_PROBE = """\
import sys
from collections.abc import Callable
from pathlib import Path

from nvflare.fuel.f3.comm_config import CommConfigurator

from generator.admin import _search_configs_in

if sys.argv[1] == "kit":
    _search_configs_in(Path(sys.argv[2]))
print(CommConfigurator().config)
"""


@pytest.mark.parametrize("search_in, expected", [("kit", "{'from': 'the kit'}"), ("cwd", "{'from': 'a download'}")])
def test_the_admin_client_reads_its_comm_config_from_the_kit_not_from_below_the_current_folder(
    tmp_path, search_in, expected
):
    """NVFlare's admin cell reads ``comm_config`` with ``os.walk`` over the current folder unless a search
    folder is set: a ``comm_config.json`` deep in the project's ``build/`` would be taken as the kit's
    (and walking a big ``build/`` took 2.4 s before the first login). ``cwd`` shows NVFlare's own
    behaviour, ``kit`` ours."""
    project, kit = tmp_path / "project", tmp_path / "kit"
    stray = project / "build" / "poc" / "some-job" / "server" / "local"
    stray.mkdir(parents=True)
    (stray / "comm_config.json").write_text('{"from": "a download"}')
    (kit / "local").mkdir(parents=True)
    (kit / "local" / "comm_config.json").write_text('{"from": "the kit"}')

    probe = _python(COMM_CONFIG_PROBE, search_in, str(kit), cwd=project)

    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip().splitlines()[-1] == expected


def test_the_admin_client_retries_its_first_challenge_promptly():
    """NVFlare's admin client sends its first challenge before its connection to the server is up and
    then waits its Authenticator's retry_interval (1.0 s) before the next: this process's admin logins
    retry after ADMIN_RETRY_SECONDS instead (the POC start went from 2.7-2.9 s to 1.8-2.1 s here).
    The patch point is NVFlare's: ``AdminAPI.connect`` makes its ``Authenticator`` from the module."""
    import inspect

    from nvflare.fuel.hci.client import api

    from generator import admin

    admin._prompt_admin_login()
    prompt = api.Authenticator
    admin._prompt_admin_login()  # once: not wrapped again
    assert api.Authenticator is prompt
    assert "Authenticator(" in inspect.getsource(api.AdminAPI.connect)
    names = ("cell", "project_name", "client_name", "client_type", "expected_sp_identity", "secure_mode")
    files = dict.fromkeys(("root_cert_file", "private_key_file", "cert_file"), "")
    made = prompt(**dict.fromkeys(names), **files, msg_timeout=5.0, retry_interval=1.0, timeout=10.0)
    assert (made.retry_interval, made.timeout, made.msg_timeout) == (admin.ADMIN_RETRY_SECONDS, 10.0, 5.0)
    assert prompt(**dict.fromkeys(names), **files, msg_timeout=5.0, retry_interval=0.05).retry_interval == 0.05


def test_submit_to_a_server_that_is_down_says_so_and_makes_nothing(tmp_path):
    """A trial's stopped server: NVFlare's login retried for 30 s, logging each try, and the
    downloads folder was made. The kit's address is probed first (a refused port, on 127.0.0.1)."""
    from generator import admin

    project = make_project(tmp_path / "p")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    kit = tmp_path / "kit"
    (kit / "startup").mkdir(parents=True)
    config = {"admin": {"project_name": "p", "host": "127.0.0.1", "port": port}}
    (kit / "startup/fed_admin.json").write_text(json.dumps(config))
    before = snapshot(project)

    result = run_main(project, "submit", "--startup-kit", str(kit))

    assert result.returncode == 1
    assert result.stderr == (
        f"jobgen: cannot reach the NVFlare server of {kit}: 127.0.0.1:{port} connection refused; is it running? "
        f"(`{shlex.quote(str(Path(sys.executable).parent / 'nvflare'))} system status --startup-kit {kit}` asks it)\n"
    )
    assert snapshot(project) == before
    assert admin.unreachable(admin.System(kit, "a", "p")) is None  # a kit without an address: the login judges
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert admin.unreachable(admin.System(kit, "a", "p", address=server.getsockname())) is None


def test_a_login_that_hangs_gives_way_to_a_stop_signal_and_a_failed_one_says_why(monkeypatch):
    """``submit``'s login runs beside the signal check (a trial's Ctrl-C waited out NVFlare's 30 s)."""
    import signal

    from generator import admin
    from generator.errors import SimulationError
    from generator.runner import Interrupted

    system = admin.System(Path("kit"), "admin", "p")
    monkeypatch.setattr(admin, "open_session", lambda system: time.sleep(3))
    checks = []

    def check_interrupted():
        checks.append(1)
        if len(checks) >= 3:
            raise Interrupted(signal.SIGINT)

    monkeypatch.setattr(admin, "check_interrupted", check_interrupted)
    with pytest.raises(Interrupted):
        admin.login(system)
    assert len(checks) == 3  # 0.1 s apart: it did not wait for the login

    def refused(system):
        raise SimulationError("cannot log in to the NVFlare server of kit as admin: NoConnection: ...")

    monkeypatch.setattr(admin, "open_session", refused)
    monkeypatch.setattr(admin, "check_interrupted", lambda: None)
    with pytest.raises(SimulationError, match="NoConnection"):
        admin.login(system)


def test_a_refused_submission_names_the_generated_folder_not_the_copy(tmp_path):
    """NVFlare's refusal names the folder it was given, a copy in the downloads folder (a trial's
    non-admin kit: ``... 'submit_job "<downloads>/.submit-8jen27xj/job"' ...``)."""
    from generator import admin, poc
    from generator.layout import ManifestEntry

    out = tmp_path / "jobs"
    (out / "job").mkdir(parents=True)
    (out / "job/meta.json").write_text('{"name": "job", "deploy_map": {"app": ["@ALL"]}}')

    class Session:
        def submit_job(self, folder):
            raise RuntimeError(f"user not authorized for the action 'submit_job \"{folder}\"'")

    finished = []

    class Events(poc.PocEvents):
        def job_finished(self, result):
            finished.append(result)

    info = ManifestEntry("2.9", 2, 1, "in_process", "t.py")
    system = admin.System(tmp_path / "kit", "member", "p")
    staging = tmp_path / "dl"
    staging.mkdir()
    result = poc._submit(Session(), out, "job", info, None, Events(), system, staging)
    assert result.problems[0].message == (
        f"the server refused the job folder {out / 'job'}: "
        f"user not authorized for the action 'submit_job \"{out / 'job'}\"'"
    )
    assert finished == [result] and list(staging.iterdir()) == []


def test_submit_refuses_a_job_that_is_not_generated(tmp_path):
    project = make_project(tmp_path / "p")
    kit = tmp_path / "kit"
    (kit / "startup").mkdir(parents=True)
    (kit / "startup/fed_admin.json").write_text('{"admin": {"project_name": "p"}}')

    result = run_main(project, "submit", "--startup-kit", str(kit), "--job", "ful-sub")

    assert result.returncode == 2
    assert result.stderr == "build/jobs: --job 'ful-sub': no generated job of that name; did you mean 'full-sub'?\n"


def test_a_job_for_another_nvflare_line_is_refused_and_no_system_is_started(tmp_path):
    """Refused up front; what a killed earlier run left in the workspace is stopped all the same."""
    project = tmp_path / "p"
    project.mkdir()
    shutil.copytree(ROOT / "client_scripts", project / "client_scripts")
    (project / "jobs.yaml").write_text(
        'defaults: {nvflare_version: "2.7"}\njobs:\n  - name: old\n    script: train_full.py\n'
    )
    assert run_main(project, "generate").returncode == 0
    # a POC process that a run killed by SIGKILL left behind (marked by that run, see _poc_env)
    from generator.runner import mark_run

    ws = project / "build/poc-workspace"
    ws.mkdir(parents=True)
    (ws / POC_WORKSPACE_MARKER).write_text("")
    env = mark_run(dict(os.environ), ws)
    left = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    try:
        result = run_main(project, "poc")
        left.wait(timeout=5)  # stopped before the workspace was touched
    finally:
        left.kill()
        left.wait()

    assert result.returncode == 1
    assert result.stderr == (
        f"build/poc-workspace: stopped 1 process that an earlier run left running there (PID {left.pid}): it "
        "ended before it could stop them\n"
        "old: written for NVFlare 2.7 (nvflare_version) but this environment's nvflare is the 2.9 line: it is "
        "not submitted to a system of another line; generate it for 2.9\n"
    )
    assert "poc:" not in result.stdout
    assert not (project / "build/poc-workspace/poc").exists()
    (record,) = json.loads((project / "build/poc-results.json").read_text())
    assert record["status"] == "FAILED"


# --- on a POC system ---------------------------------------------------------------------------------


#: ``poc_run``'s earlier ``poc-results.json``: crash failed and wandb-sub is not in it (both untimed).
EARLIER_POC_RESULTS = [
    {"generator": "nvflare-jobgen", "engine": "poc", "name": name, "status": status, "wall_seconds": seconds}
    for name, status, seconds in (
        ("full-sub", "ok", 5.0),
        ("metrics", "ok", 40.0),
        ("crash", "FAILED", 90.0),
        ("badimport", "ok", 50.0),
    )
]


@pytest.fixture(scope="module")
def poc_run(tmp_path_factory):
    """``poc`` of five jobs (``slow`` left out), two at a time, in one POC system, watched for its
    processes, after an earlier run whose results are :data:`EARLIER_POC_RESULTS`."""
    base = tmp_path_factory.mktemp("poc")
    project, home = make_project(base / "project"), base / "home"
    home.mkdir()
    generated = snapshot(project / "build/jobs")
    (project / "build/poc-results.json").write_text(json.dumps(EARLIER_POC_RESULTS))
    with ProcessWatch(project) as watch:
        jobs = ("--job", "full-sub", "--job", "metrics", "--job", "wandb-sub", "--job", "crash", "--job", "badimport")
        result = cli(project, home, "poc", *jobs, "--parallel", "2")
    results = {r["name"]: r for r in json.loads((project / "build/poc-results.json").read_text())}
    return project, home, result, results, watch, generated


pocs = pytest.mark.simulator


@pocs
def test_poc_runs_each_job_and_reports_the_failed_one(poc_run):
    _, _, result, results, _, _ = poc_run
    assert result.returncode == 1, result.stdout + result.stderr
    statuses = [(name, record["status"]) for name, record in results.items()]
    assert statuses == [
        ("full-sub", "ok"),
        ("metrics", "ok"),
        ("wandb-sub", "ok"),
        ("crash", "FAILED"),
        ("badimport", "FAILED"),
    ]
    assert "poc: stopped the POC system" in result.stdout
    assert "crash: site-1, site-2: RuntimeError: boom in round 1 (custom/train_crash.py:7)" in result.stderr
    assert "crash: NVFlare ended job " in result.stderr and "FINISHED:EXECUTION_EXCEPTION" in result.stderr
    assert "(see build/poc/crash/site-1/log.txt)" in result.stderr
    # a sub-process script whose import fails (the simulator exits 0 for that)
    assert (
        "badimport: site-1, site-2: ModuleNotFoundError: No module named 'not_a_module_anywhere' "
        "(custom/train_badimport.py:1)"
    ) in result.stderr
    assert "badimport: no final model saved at build/poc/badimport/server/simulate_job/models/server.npy" in (
        result.stderr
    )


@pocs
def test_poc_submits_untimed_jobs_then_the_longest_first_by_the_earlier_results(poc_run):
    _, _, result, results, _, _ = poc_run
    order = ["wandb-sub", "crash", "badimport", "metrics", "full-sub"]
    assert (
        "order: longest first by the wall times in build/poc-results.json (untimed jobs before them): "
        + ", ".join(order)
        in result.stdout.splitlines()
    )
    submitted = [line.split(":")[0] for line in result.stdout.splitlines() if ": submitted as job " in line]
    assert submitted == order
    assert list(results) == ["full-sub", "metrics", "wandb-sub", "crash", "badimport"]  # the new file: jobs.yaml order


@pocs
def test_poc_final_models_are_read_from_the_download(poc_run):
    project, _, _, results, _, _ = poc_run
    for name, delta in (("full-sub", 2), ("metrics", 6), ("wandb-sub", 6)):
        model = np.load(project / "build/poc" / name / "server/simulate_job/models/server.npy")
        expected = np.array(INITIAL_MODEL, dtype=np.float32) + delta
        np.testing.assert_array_equal(model, expected)
        assert results[name]["final_model"] == expected.tolist()
        assert results[name]["rounds_started"] == 2


@pocs
def test_poc_stores_every_metric_point_and_the_dotted_tags(poc_run):
    """Read straight from the downloaded mlflow.db: 750 points per site, tags with dotted keys kept."""
    from mlflow.tracking import MlflowClient

    project, _, _, results, _, _ = poc_run
    db = project / "build/poc/metrics/server/simulate_job/mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "poc-experiment"]
    assert experiment.tags["mlflow.note.content"] == "## POC experiment"
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name.split("-")[0] + "-" + r.info.run_name.split("-")[1] for r in runs) == [
        "site-1",
        "site-2",
    ]
    for run in runs:
        assert run.data.tags["mlflow.note.content"] == "run note"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "global_step")]
        assert sorted(steps) == list(range(750))
    assert results["metrics"]["metric_points"] == {"site-1": {"global_step": 750}, "site-2": {"global_step": 750}}
    plot = project / "build/poc/metrics/metrics.png"  # as simulate plots a metrics job, beside the download
    assert (project / results["metrics"]["report"]).resolve() == plot.resolve()
    assert plot.read_bytes().startswith(b"\x89PNG")


@pocs
def test_poc_keeps_wandb_runs_in_the_jobs_own_result(poc_run):
    """W&B's offline runs come back in the download (under the job's run folder), one per site, every
    point; nothing lands in the POC server's own folder (W&B's default ./wandb of the server process)."""
    project, _, _, results, _, _ = poc_run
    runs = sorted((project / "build/poc/wandb-sub/server/simulate_job/wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 2
    per_site = {"global_step": 750, "model_max": 6, "model_mean": 6}
    assert results["wandb-sub"]["metric_points"] == {"site-1": per_site, "site-2": per_site}
    assert not (project / "build/poc-workspace/poc/example_project/prod_00/server/wandb").exists()


@pocs
def test_poc_submission_keeps_every_config_key_and_the_generated_folders(poc_run):
    project, _, _, _, _, generated = poc_run
    for name in ("full-sub", "metrics", "crash"):
        for config in ("config_fed_server.json", "config_fed_client.json"):
            ours = json.loads((project / "build/jobs" / name / "app/config" / config).read_text())
            deployed = project / "build/poc" / name / "server/simulate_job/app_server/config" / config
            assert json.loads(deployed.read_text()) == ours, (name, config)
    assert snapshot(project / "build/jobs") == generated


@pocs
def test_poc_job_processes_connect_directly_over_loopback(poc_run):
    """poc's default (no --relay): each job's server process listens on 127.0.0.1 for its clients'
    job processes (NVFlare's ad-hoc connections), and each client's connects there."""
    project, _, result, _, _, _ = poc_run
    assert "; job processes connect directly, 127.0.0.1 only (--relay: through the server)\n" in result.stdout
    for name in ("full-sub", "metrics", "wandb-sub"):
        server_log = (project / "build/poc" / name / "server/log.txt").read_text()
        (url,) = re.findall(r"created adhoc external listener \S+ for (tcp://127\.0\.0\.1:\d+)", server_log)
        for site in ("site-1", "site-2"):
            site_log = (project / "build/poc" / name / site / "log.txt").read_text()
            assert re.search(rf"{site}\.\S+: created adhoc connector \S+ to {url} on server\.", site_log), name


@pocs
def test_poc_leaves_no_process_and_writes_nothing_to_home(poc_run):
    project, home, _, _, watch, _ = poc_run
    assert len(watch.processes()) >= 3  # the server, two clients (and their jobs)
    assert watch.listening == {"127.0.0.1"}  # the server, its job processes' direct listeners, the jobs' own
    assert watch.left() == []
    assert list(home.iterdir()) == []
    assert (project / "build/poc-workspace/home/.nvflare").is_dir()


@pytest.fixture(scope="module")
def running_poc(tmp_path_factory):
    """A POC system started here (as someone's running system), stopped after the module's tests;
    this Python reached through a link when its path has a space, as ``poc`` does. Its job processes
    talk through the server's parent process (``relay``), as on NVFlare's own POC and production."""
    from generator.pocsystem import prepare_poc, start_poc, stop_poc
    from generator.safepaths import run_paths

    base = tmp_path_factory.mktemp("submit")
    project, home, root = make_project(base / "project"), base / "home", base / "poc-ws"
    home.mkdir()
    root.mkdir()
    with ProcessWatch(root) as watch, open(base / "poc.log", "w") as log, run_paths(root) as paths:
        try:
            system, port, _ = prepare_poc(root, 2, log, python=paths.python, relay=True)
            _, session = start_poc(root, system, port, 2, log, paths.bin_dir)
            session.close()
            yield project, home, system, watch
        finally:
            stop_poc(root, log, python=paths.python)
    assert watch.left() == []


@pocs
def test_submit_runs_a_job_on_a_running_system_and_leaves_it_running(running_poc):
    from generator.admin import wait_for_clients

    project, home, system, watch = running_poc
    result = cli(project, home, "submit", "--startup-kit", str(system.startup_kit), "--job", "full-sub")

    assert result.returncode == 0, result.stdout + result.stderr
    (record,) = json.loads((project / "build/submit-results.json").read_text())
    assert record["final_model"] == (np.array(INITIAL_MODEL) + 2).tolist()
    assert "poc:" not in result.stdout  # nothing was started or stopped
    # each round, read from the server's run log through the admin API (no local files)
    assert "full-sub: round 1 of 2 (" in result.stdout and "full-sub: round 2 of 2 (" in result.stdout
    assert wait_for_clients(system, 2, 30) == ["site-1", "site-2"]
    assert watch.listening == {"127.0.0.1"}  # the system, and every job process seen while it ran
    assert list(home.iterdir()) == []
    # a relaying system: the job's server process offered its clients no direct connection
    server_log = (project / "build/submit/full-sub/server/log.txt").read_text()
    assert "Server app stopped" in server_log and "adhoc" not in server_log


@pocs
def test_submit_aborts_a_job_at_its_timeout(running_poc):
    project, home, system, _ = running_poc
    result = cli(
        project,
        home,
        "submit",
        "--startup-kit",
        str(system.startup_kit),
        "--job",
        "slow",
        "--timeout",
        "12",  # the job needs 30 s or more (10 rounds of 3 s); 12 s lets a loaded server start it
        "--downloads",
        "build/timeout",
        "--results",
        "build/timeout.json",
    )

    assert result.returncode == 1, result.stdout + result.stderr
    (record,) = json.loads((project / "build/timeout.json").read_text())
    assert record["status"] == "TIMEOUT"
    assert "slow: timed out after 12 s: NVFlare aborted job " in result.stderr
    assert "abort_signal_triggered" not in result.stderr  # the abort's effect in the script is not its error
    assert (project / "build/timeout/slow/server/log.txt").is_file()


def test_what_the_client_api_raises_in_an_aborted_script_is_told_from_a_scripts_own_error():
    from generator.poc import ABORTED_IN_SCRIPT

    seen = (  # a trial's poc --timeout 5: the abort's effect, reported as if the script had raised
        "site-1: RuntimeError: request to abort the job for reason 'train' is aborted, abort_signal_triggered "
        "(custom/train_full.py:27)"
    )
    assert ABORTED_IN_SCRIPT.search(seen)
    assert not ABORTED_IN_SCRIPT.search("site-1: RuntimeError: boom in round 1 (custom/train_crash.py:10)")


@pocs
def test_every_shipped_job_reaches_the_server_with_its_configs_unchanged(running_poc, tmp_path):
    """Each shipped job folder goes through the submission path poc and submit take (a copy,
    ``Session.submit_job``: NVFlare signs and zips it, the server stores it); the stored job, as
    downloaded, has the same configs: dotted keys (``mlflow.note.content``) stay flat."""
    from generator.admin import download_result, open_session
    from generator.lint import config_files  # every app's configs (app/, or app_server/ and app_<site>/)
    from generator.poc import pin_sites
    from generator.write import read_entries

    _, _, system, _ = running_poc
    project = tmp_path / "shipped"
    project.mkdir()
    shutil.copy(ROOT / "jobs.yaml", project / "jobs.yaml")
    shutil.copytree(ROOT / "client_scripts", project / "client_scripts")
    assert run_main(project, "generate").returncode == 0
    jobs = sorted(p.name for p in (project / "build/jobs").iterdir() if p.is_dir())
    manifest = read_entries(project / "build/jobs")
    session = open_session(system)
    try:
        for name in jobs:
            copy = tmp_path / "staging" / name
            shutil.copytree(project / "build/jobs" / name, copy)
            pinned = pin_sites(copy, manifest[name])  # as poc and submit do: @ALL -> the job's own sites
            submitted = json.loads((copy / "meta.json").read_text())
            job_id = session.submit_job(str(copy))
            session.abort_job(job_id)
            # the abort is asynchronous: a job already deployed takes a few seconds, and over a minute
            # on a machine running a CI and a user's simulations beside it (seen: still RUNNING at 60 s)
            deadline = time.monotonic() + 240
            while not str(session.get_job_meta(job_id).get("status", "")).startswith("FINISHED"):
                assert time.monotonic() < deadline, f"{name}: not ended 240 s after its abort"
                time.sleep(0.2)
            # as poc does: the server may call a job it just finished still running for a moment
            stored = Path(download_result(session, job_id, str(tmp_path / "downloads" / name))) / "job" / name
            for config in [c for c in config_files(project / "build/jobs" / name) if c != "meta.json"]:
                ours = json.loads((project / "build/jobs" / name / config).read_text())
                assert json.loads((stored / config).read_text()) == ours, (name, config)
            meta = json.loads((stored / "meta.json").read_text())
            ours = json.loads((project / "build/jobs" / name / "meta.json").read_text())
            assert {key: meta[key] for key in submitted} == submitted, name
            assert {k: v for k, v in submitted.items() if k != "deploy_map"} == {
                k: v for k, v in ours.items() if k != "deploy_map"
            }, name
            if pinned:
                assert set(map(tuple, submitted["deploy_map"].values())) == {("server", "site-1", "site-2")}
            else:
                assert submitted["deploy_map"] == ours["deploy_map"], name
    finally:
        session.close()
    assert jobs == sorted(shipped_job_names())  # every shipped job went through


@pocs
def test_a_stop_signal_aborts_the_job_and_stops_the_poc_system(tmp_path):

    from generator.layout import POC_RESULTS_MARKER

    project, home = make_project(tmp_path / "project"), tmp_path / "home"
    home.mkdir()
    stale = project / "build/poc/slow"  # an earlier run's download of the job
    stale.mkdir(parents=True)
    (project / "build/poc" / POC_RESULTS_MARKER).write_text("")
    (stale / "meta.json").write_text('{"status": "FINISHED:COMPLETED"}')
    second = []  # `make poc` in another terminal meanwhile: refused, the running one goes on
    meanwhile = lambda: second.append(cli(project, home, "poc", "--job", "slow", timeout=120))  # noqa: E731
    proc, stdout, err, left = _poc_interrupted_at(project, home, "  slow: round 2 of 10 ", meanwhile)

    assert second[0].returncode == 2, second[0].stdout + second[0].stderr
    assert second[0].stderr.startswith("build/poc-workspace: --workspace: another run of the generator ")
    assert second[0].stdout == ""
    assert proc.returncode == 130, stdout + err
    assert re.search(r"slow: interrupted by SIGINT: job \S+ stopped with the system", err), err
    assert "poc: stopped the POC system" in stdout
    (record,) = json.loads((project / "build/poc-results.json").read_text())
    assert record["status"] == "INTERRUPTED"
    assert record["rounds_started"] >= 2  # what the server's run log showed, not "never started"
    # its run logs as they were, kept beside the downloads: the next poc clears the POC workspace
    assert record["log"] == "build/poc/slow/server/log.txt", record["log"]
    assert "Round 1 started." in (project / record["log"]).read_text()
    assert (project / "build/poc/slow/site-1/log.txt").is_file()
    assert f"slow: INTERRUPTED in {record['wall_seconds']:.1f} s; log: {record['log']}" in stdout
    assert not (stale / "meta.json").exists()  # the earlier download is not left to pass for this run's result
    assert left == []
    assert list(home.iterdir()) == []


@pocs
def test_a_client_killed_mid_job_fails_the_job(running_poc):
    """site-1's job process (``worker_process``) is killed (SIGKILL, by PID) once the job has run for 6 s."""
    import psutil

    project, home, system, _ = running_poc
    root = str(system.startup_kit.parent)
    killed: list[int] = []

    started = time.time()  # a job process of an earlier test may still be ending: not that one

    def kill_site_1_worker() -> None:
        end = time.monotonic() + 120
        while time.monotonic() < end and not killed:
            for proc in psutil.process_iter(["pid", "cmdline", "create_time"]):
                cmdline = " ".join(proc.info.get("cmdline") or [])
                new = (proc.info.get("create_time") or 0) >= started
                if new and "worker_process" in cmdline and f"{root}/site-1" in cmdline:
                    time.sleep(6)
                    proc.kill()
                    killed.append(proc.pid)
                    return
            time.sleep(0.3)

    killer = threading.Thread(target=kill_site_1_worker, daemon=True)
    killer.start()
    result = cli(
        project,
        home,
        "submit",
        "--startup-kit",
        str(system.startup_kit),
        "--job",
        "slow",
        "--downloads",
        "build/killed",
        "--results",
        "build/killed.json",
    )
    killer.join()

    assert killed, "site-1's job process never started"
    assert result.returncode == 1, result.stdout + result.stderr
    (record,) = json.loads((project / "build/killed.json").read_text())
    assert record["status"] == "FAILED"
    # NVFlare's status for it: EXECUTION_EXCEPTION, or ABNORMAL (seen once, CI beside a trial, load ~20)
    assert re.search(
        r"^slow: NVFlare ended job \S+ with status FINISHED:(EXECUTION_EXCEPTION|ABNORMAL)$", result.stderr, re.M
    )
    assert "of 10 rounds started" in result.stderr
    assert record["final_model"] is None


@pocs
def test_a_stop_signal_while_the_poc_system_starts_stops_it_and_runs_no_job(tmp_path):
    project, home = make_project(tmp_path / "project"), tmp_path / "home"
    home.mkdir()
    # right after this line it is starting the server and clients
    proc, stdout, err, left = _poc_interrupted_at(project, home, "poc: prepared a POC system")

    assert proc.returncode == 130, stdout + err
    assert "poc: interrupted by SIGINT before any job ran; no results written" in err, err
    assert "Traceback" not in err
    assert "started server" not in stdout  # it stopped while waiting for the clients
    assert "poc: stopped the POC system" in stdout
    assert "job  status" not in stdout  # no table without a job
    assert not (project / "build/poc-results.json").exists()
    assert left == []
    assert list(home.iterdir()) == []


def _poc_interrupted_at(
    project: Path, home: Path, prefix: str, meanwhile: Callable[[], None] | None = None
) -> tuple[subprocess.Popen, str, str, list[str]]:
    """Run ``poc --job slow`` in ``project``, send SIGINT once a line starting with ``prefix`` is
    printed (after calling ``meanwhile``, if given); the ended process, its stdout and stderr, and
    the processes it left (:class:`ProcessWatch`)."""
    import signal

    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true"}
    with ProcessWatch(project) as watch:
        proc = subprocess.Popen(
            [sys.executable, "-m", "generator", "poc", "--job", "slow"],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            seen = []
            for line in proc.stdout:
                seen.append(line)
                if line.startswith(prefix):
                    break
            if meanwhile:
                meanwhile()
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=300)
        finally:  # a poc that does not end fails the test, and is not left running
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return proc, "".join(seen) + out, err, watch.left()


def _fedavg_record(message: str, identity: str = "proj") -> str:
    """One line of a POC server's run log (``<job id>/log.json``) as NVFlare 2.9 writes it."""
    return json.dumps(
        {
            "name": "FedAvg",
            "fullName": "nvflare.app_common.workflows.fedavg.FedAvg",
            "levelname": "INFO",
            "fl_ctx": f"[identity={identity}, run=job-1, wf=controller]",
            "message": f"\n{'-' * 80}\n{message:^80}\n{'-' * 80}\n",
        }
    )


def test_submit_reads_round_progress_from_the_remote_servers_run_log(monkeypatch):
    """``submit`` has no local files: each job's rounds come from the server's run log through the admin
    API's grep, at most every REMOTE_PROGRESS_SECONDS, at once when the job ended; a refusal ends it."""
    from generator import poc
    from generator.layout import ManifestEntry

    class Session:
        def __init__(self):
            self.lines: list[str] = []
            self.calls: list[tuple] = []
            self.refuse = False

        def grep_target(self, target, options=None, pattern=None, file=None):
            self.calls.append((target, pattern, file))
            if self.refuse:
                raise RuntimeError("not authorized")
            return "\n".join(self.lines)

    clock = [100.0]
    monkeypatch.setattr(poc.time, "monotonic", lambda: clock[0])
    session = Session()
    tracker = poc._RemoteTracker(session, "job-1", ManifestEntry("2.9", 2, 3, "in_process", "t.py"), "proj")
    assert tracker.poll() == []  # nothing deployed yet
    assert session.calls == [("server", "nvflare.app_common.workflows.fedavg.FedAvg", "job-1/log.json")]
    session.lines += [_fedavg_record("Round 0 started."), _fedavg_record("Round 0 started.", identity="other")]
    assert tracker.poll() == [] and len(session.calls) == 1  # not asked again within 3 s
    clock[0] += poc.REMOTE_PROGRESS_SECONDS
    assert tracker.poll() == [1]
    session.lines += ["not json", _fedavg_record("Round 1 started."), _fedavg_record("Round 2 started.")]
    assert tracker.poll(final=True) == [2, 3]  # the job ended: read at once
    clock[0] += poc.REMOTE_PROGRESS_SECONDS
    assert tracker.poll() == [] and tracker.rounds_started == 3
    session.lines = [_fedavg_record("Finished FedAvg.")]  # rotated: a shorter, newer file
    clock[0] += poc.REMOTE_PROGRESS_SECONDS
    assert tracker.poll() == [] and tracker.finished
    session.refuse = True
    clock[0] += poc.REMOTE_PROGRESS_SECONDS
    assert tracker.poll() == [] and tracker.off
    asked = len(session.calls)
    clock[0] += poc.REMOTE_PROGRESS_SECONDS
    assert tracker.poll(final=True) == [] and len(session.calls) == asked  # never asked again


def test_submit_tells_the_rounds_its_progress_missed_from_the_downloaded_log(tmp_path):
    """NVFlare archives a job's run log before its status says FINISHED: a last round that started
    after the last remote read is told from the downloaded server log, before the job's result
    (a trial's 2-round job printed round 1 only)."""
    from generator import poc
    from generator.layout import ManifestEntry
    from generator.simulate import JobResult

    class Session:
        def grep_target(self, target, options=None, pattern=None, file=None):
            return _fedavg_record("Round 0 started.")

    info = ManifestEntry("2.9", 2, 2, "in_process", "t.py")
    run = poc._Run("ring", info, JobResult(name="ring", rounds=2), "job-1", 0.0, 9.0)
    run.tracker = poc._RemoteTracker(Session(), "job-1", info, "proj")
    assert run.tracker.poll() == [1]
    log = tmp_path / "ring" / "server" / "log.json"
    log.parent.mkdir(parents=True)
    log.write_text(_fedavg_record("Round 0 started.") + "\n" + _fedavg_record("Round 1 started.") + "\n")
    assert poc._missed_rounds(run, tmp_path / "ring", "proj") == []  # not downloaded
    run.fetched = True
    assert poc._missed_rounds(run, tmp_path / "ring", "proj") == [2]
    run.tracker.poll(final=True)  # (nothing new remotely)
    local = poc._Run("ring", info, JobResult(name="ring", rounds=2), "job-1", 0.0, 9.0, fetched=True)
    assert poc._missed_rounds(local, tmp_path / "ring", "proj") == []  # a local system's progress is complete


def test_poc_progress_reads_the_records_of_the_jobs_own_workflow(tmp_path):
    """A cyclic job's rounds on a local POC server are its task scheduler's records, not FedAvg's
    (the live tracker once read every job as FedAvg and showed no round of a cyclic job)."""
    from generator import poc
    from generator.judge import WF_COMM_SERVER
    from generator.layout import ManifestEntry

    log = tmp_path / "server" / "job-1" / "log.json"
    log.parent.mkdir(parents=True)
    info = ManifestEntry("2.9", 2, 2, "in_process", "t.py", workflow="cyclic")
    tracker = poc._LiveTracker(log, info, "proj")
    record = {"fullName": WF_COMM_SERVER, "levelname": "INFO", "message": "scheduled task train"}
    lines = [dict(record, fl_ctx=f"[identity=proj, run=job-1, wf=controller, task={n}]") for n in (1, 2)]
    log.write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert tracker.poll() == [1, 2]


def test_a_submitted_copy_is_pinned_to_the_sites_the_job_was_written_for(tmp_path):
    from generator.layout import ManifestEntry
    from generator.poc import pin_sites

    job = tmp_path / "j"
    job.mkdir()
    meta = {"name": "j", "resource_spec": {}, "min_clients": 1, "deploy_map": {"app": ["@ALL"]}}
    (job / "meta.json").write_text(json.dumps(meta))
    assert pin_sites(job, ManifestEntry("2.9", 3, 1, "in_process", "t.py"))
    assert json.loads((job / "meta.json").read_text()) == {
        **meta,
        "deploy_map": {"app": ["server", "site-1", "site-2", "site-3"]},
    }
    (job / "meta.json").write_text(json.dumps(meta))
    named = ManifestEntry("2.9", 2, 1, "in_process", "t.py", clients=["hospital-a", "hospital-b"])
    assert pin_sites(job, named)
    assert json.loads((job / "meta.json").read_text())["deploy_map"] == {"app": ["server", "hospital-a", "hospital-b"]}
    per_site = {**meta, "deploy_map": {"app_server": ["server"], "app_site-1": ["site-1"]}}
    (job / "meta.json").write_text(json.dumps(per_site))
    assert not pin_sites(job, ManifestEntry("2.9", 1, 1, "in_process", "t.py"))
    assert json.loads((job / "meta.json").read_text()) == per_site  # names its sites: left as it is


def test_a_job_whose_clients_are_not_connected_is_not_submitted_and_says_which():
    from generator.layout import ManifestEntry
    from generator.poc import missing_clients

    two = ManifestEntry("2.9", 2, 1, "in_process", "t.py")
    assert missing_clients("j", two, ["site-1", "site-2", "site-3"]) is None
    assert missing_clients("j", two, None) is None  # the server could not say: submitted
    (problem,) = missing_clients("j", two, ["hospital-a", "hospital-b"]).problems
    assert problem.message == (
        "is written for site-1, site-2 (site-1 .. site-N: the job sets no `clients`) but the system's connected "
        "clients are hospital-a, hospital-b: it is not submitted; name the clients to run it on in the job's "
        "`clients` (jobs.yaml)"
    )
    made = ManifestEntry("2.9", 2, 1, "in_process", "t.py", made_from={"jobs": ["exp.yaml"], "set": []})
    (problem,) = missing_clients("j", made, ["hospital-a"]).problems
    assert problem.message.endswith("name the clients to run it on in the job's `clients` (exp.yaml)")
    (problem,) = missing_clients("j", two, ["site-1"]).problems
    assert problem.message.startswith("needs site-2, not connected to the system (connected clients: site-1): ")
    named = ManifestEntry("2.9", 2, 1, "in_process", "t.py", clients=["hospital-a", "hospital-b"])
    (problem,) = missing_clients("j", named, []).problems
    assert problem.message.startswith(
        "needs hospital-a, hospital-b, not connected to the system (connected clients: none)"
    )


#: A job whose clients have their own names, as on a production system.
NAMED_JOB = "  - {name: named, clients: [hospital-a, hospital-b]}"


def sites_project(folder: Path, *jobs: str) -> Path:
    """A generated project of ``jobs`` (``jobs.yaml`` lines), each training with ``train_full.py`` for 2 rounds."""
    folder.mkdir(parents=True)
    shutil.copytree(ROOT / "client_scripts", folder / "client_scripts")
    (folder / "jobs.yaml").write_text(
        "defaults: {num_rounds: 2, server: {task_request_interval: 0.1}, script: train_full.py}\njobs:\n"
        + "".join(f"{job}\n" for job in jobs)
    )
    assert run_main(folder, "generate").returncode == 0
    return folder


@pocs
def test_submit_runs_a_job_only_on_its_own_clients_and_refuses_one_whose_clients_are_not_there(running_poc, tmp_path):
    """On a system with more clients than a job's (``@ALL`` would deploy it to all of them) the job
    runs on its own sites only; a job naming clients the system does not have is not submitted."""
    _, home, system, _ = running_poc
    project = sites_project(tmp_path / "sites", "  - {name: one, num_clients: 1, min_clients: 1}", NAMED_JOB)
    result = cli(project, home, "submit", "--startup-kit", str(system.startup_kit))

    assert result.returncode == 1, result.stdout + result.stderr
    one, named = json.loads((project / "build/submit-results.json").read_text())
    assert one["status"] == "ok" and one["final_model"] == (np.array(INITIAL_MODEL) + 2).tolist()
    kit_sites = system.startup_kit.parent  # the POC's prod_00: server, site-1, site-2, admin
    assert (kit_sites / "site-1" / one["job_id"]).is_dir()
    assert not (kit_sites / "site-2" / one["job_id"]).exists()  # never deployed there
    assert named["status"] == "FAILED" and named.get("job_id") is None
    assert (
        "named: needs hospital-a, hospital-b, not connected to the system (connected clients: site-1, site-2): "
        "it is not submitted"
    ) in result.stderr


def _server_record(message: str, level: str = "ERROR") -> str:
    """One line of a POC server's own ``log.json`` (its workspace's, not a job's)."""
    fields = {"name": "JobRunner", "fullName": "nvflare.private.fed.server.job_runner.JobRunner"}
    return json.dumps({**fields, "levelname": level, "fl_ctx": "[identity=server, run=?]", "message": message})


@pytest.mark.parametrize("local", [True, False])
def test_a_job_nvflare_could_not_run_is_reported_with_the_servers_reason_only(tmp_path, local):
    """A trial's submit to a system started from a Python path with a space: FINISHED:FAILED_TO_RUN,
    nothing but meta.json downloaded. Reported: the status and the server's own log line, not six
    lines of what follows from it (no run log, no model, no metric points), nor a log that was not
    downloaded."""
    from generator import admin, poc
    from generator.layout import ManifestEntry
    from generator.simulate import JobResult

    failed = "Failed to run the Job (job-1): FileNotFoundError: [Errno 2] No such file or directory: '/work/my'"
    lines = [
        _server_record("Got the job: job-1 from the scheduler to run", "INFO"),
        _server_record("Failed to run the Job (job-2): OSError: another job's"),
        _server_record(failed + "\nTraceback (most recent call last): ..."),
        _server_record(failed),  # said twice: told once
    ]
    prod = tmp_path / "prod_00"
    (prod / "server").mkdir(parents=True)
    (prod / "server" / "log.json").write_text("\n".join(lines) + "\n")

    class Session:
        def grep_target(self, target, options=None, pattern=None, file=None):
            assert (target, file) == ("server", "log.json")
            return "\n".join(line for line in lines if pattern in line)

    system = admin.System(tmp_path / "kit", "admin", "proj", prod if local else None)
    info = ManifestEntry("2.9", 2, 5, "in_process", "t.py", receiver="mlflow")
    run = poc._Run("j", info, JobResult(name="j", rounds=5, receiver="mlflow"), "job-1", 0.0, 600.0)
    run.status, run.fetched = "FINISHED:FAILED_TO_RUN", True
    (tmp_path / "downloads" / "j").mkdir(parents=True)
    (tmp_path / "downloads" / "j" / "meta.json").write_text("{}")

    result = poc._finish(system, Session(), run, tmp_path / "downloads")

    assert result.status == poc.FAILED
    where = str(prod / "server" / "log.txt") if local else "log.txt in the server's workspace"
    assert [p.message for p in result.problems] == [
        f"NVFlare ended job job-1 with status FINISHED:FAILED_TO_RUN before it ran (no run log was made); the "
        f"server's log ({where}) says: {failed}"
    ]
    assert result.log == (str(prod / "server" / "log.txt") if local else None)


@pocs
def test_poc_runs_a_job_on_its_named_clients_and_another_on_its_own_site_only(tmp_path):
    """A job that names its clients (production-like names) and a 1-client job: one POC system has
    site-1, alpha and beta; each job runs on its own sites only, and nothing is left running."""
    home = tmp_path / "home"
    home.mkdir()
    project = sites_project(
        tmp_path / "project",
        "  - {name: named, clients: [alpha, beta]}",
        "  - {name: one, num_clients: 1, min_clients: 1}",
    )
    with ProcessWatch(project) as watch:
        result = cli(project, home, "poc", "--parallel", "2")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "poc: prepared a POC system of 3 client(s) (site-1, alpha, beta) in " in result.stdout
    named, one = json.loads((project / "build/poc-results.json").read_text())
    for record in (named, one):
        assert record["status"] == "ok" and record["final_model"] == (np.array(INITIAL_MODEL) + 2).tolist()
    assert (project / "build/poc/named/alpha/log.txt").is_file() and (
        project / "build/poc/named/beta/log.txt"
    ).is_file()
    prod = project / "build/poc-workspace/poc/example_project/prod_00"
    assert (prod / "alpha" / named["job_id"]).is_dir() and not (prod / "site-1" / named["job_id"]).exists()
    assert (prod / "site-1" / one["job_id"]).is_dir()
    assert not (prod / "alpha" / one["job_id"]).exists() and not (prod / "beta" / one["job_id"]).exists()
    assert watch.left() == []


def test_a_download_the_server_calls_still_running_is_asked_again(monkeypatch):
    """NVFlare publishes a finished job's status before it takes the job off its running jobs; a CI
    run under load saw ``download_job`` answer ``JobNotDone`` right after the status said FINISHED."""
    from generator import admin

    class JobNotDone(Exception):  # nvflare.fuel.flare_api.api_spec's, by name
        pass

    class Session:
        calls = 0

        def download_job_result(self, job_id, destination):
            Session.calls += 1
            if Session.calls < 3:
                raise JobNotDone(f"job {job_id} is still running")
            return f"{destination}/{job_id}"

    monkeypatch.setattr(admin.time, "sleep", lambda seconds: None)
    assert admin.download_result(Session(), "j1", "/tmp/d") == "/tmp/d/j1" and Session.calls == 3
    Session.calls = -1000
    with pytest.raises(JobNotDone):
        admin.download_result(Session(), "j1", "/tmp/d", settle=0.0)
    assert Session.calls == -999  # no time to ask again: the first answer stands
