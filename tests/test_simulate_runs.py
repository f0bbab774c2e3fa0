"""How ``simulate`` runs jobs: odd paths, timeouts, stop signals, and where each job's files go.

The simulator tests (marked) run the real ``nvflare simulator`` on 1-round jobs: a project under a
path with a space, ``#``, ``:``, a quote and a non-ASCII letter, run by a Python environment at
such a path too; a job whose script hangs (stopped at its ``timeout``, the next job still runs);
``simulate`` stopped by SIGTERM, SIGHUP or SIGINT while a sub-process trainer hangs; jobs named
``a`` and ``a.log``. After each, no process of the run may be left: every trainer wrote its pid,
and no process may have the workspace in its command line or working folder. The others are fast.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil
import pytest
from conftest import INITIAL_MODEL, ROOT, run_cli, run_main, run_main_while_held, snapshot

from generator import simulate
from generator.layout import MPL_DIR, TMP_DIR, ManifestEntry
from generator.safepaths import check_paths, path_problem, run_paths
from generator.simulate import LOGS_DIR, WORKSPACE_MARKER, job_timeout, log_path, prepare_workspace, timeout_source

#: A path segment with every kind of character NVFlare's command lines and path lists mangle.
ODD = "my project #1:é'q"

HANG = """\
import argparse, os, time

import nvflare.client as flare

parser = argparse.ArgumentParser()
parser.add_argument("--pid_dir")
args = parser.parse_args()
flare.init()
while flare.is_running():
    received = flare.receive()
    open(os.path.join(args.pid_dir, str(os.getpid())), "w").close()
    time.sleep(3600)
"""

ONE_ROUND = "defaults:\n  num_rounds: 1\n  task_check_period: 0.05\n  server: {task_request_interval: 0.1}\njobs:\n"


def one_round_model() -> list:
    return (np.array(INITIAL_MODEL, dtype=np.float32) + 1).tolist()


def run_processes(workspace: Path) -> list[str]:
    """Processes whose command line or working folder names ``workspace`` (as ``pgrep -f`` would)."""
    needle = str(workspace)
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd", "status"]):
        info = proc.info
        if info["status"] == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
            continue
        if needle in " ".join(info["cmdline"] or []) or needle in (info["cwd"] or ""):
            found.append(f"{proc.pid}: {' '.join(info['cmdline'] or [])}")
    return found


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def hang_project(project: Path) -> Path:
    """Add the hanging script; gives the folder its trainers write their pids to."""
    (project / "client_scripts/train_hang.py").write_text(HANG)
    pids = project / "pids"
    pids.mkdir()
    return pids


# --- fast -------------------------------------------------------------------------------------------


def test_jobs_named_with_job_run_in_file_order(tmp_path):
    from generator.pipeline import generate

    (tmp_path / "client_scripts").mkdir()
    shutil.copy(ROOT / "client_scripts/train_full.py", tmp_path / "client_scripts")
    jobs = "".join(f"  - name: {n}\n    script: train_full.py\n" for n in "abc")
    (tmp_path / "jobs.yaml").write_text(ONE_ROUND + jobs)
    generate(tmp_path / "jobs.yaml", tmp_path / "out")

    # the table, results.json and the order of the runs follow jobs.yaml, as the README says
    assert simulate.selected_jobs(tmp_path / "out", ["c", "a", "c"])[1] == ["a", "c"]
    assert simulate.selected_jobs(tmp_path / "out", None)[1] == ["a", "b", "c"]


@pytest.mark.parametrize("char", [" ", "\t", "'", '"', "\\", "#", ":", "?", "%", "\n"])
def test_characters_nvflare_mangles_are_found(char):
    assert path_problem(f"/home/u/my{char}project/build/ws") is not None


@pytest.mark.parametrize("path", ["/home/u/projects/nvflare-jobgen_2.9/build/ws", "/home/u/café/ws", "/a/$HOME/b;c"])
def test_paths_nvflare_passes_unchanged_need_no_link(path, tmp_path):
    assert path_problem(path) is None


def test_odd_paths_are_reached_through_links_that_are_removed_afterwards(tmp_path):
    root = tmp_path / ODD / "ws dir"
    ws = root / "job"
    ws.mkdir(parents=True)
    venv = tmp_path / "my venv"
    (venv / "bin").mkdir(parents=True)
    python = str(venv / "bin" / "python")

    with run_paths(ws, python=python, prefix=str(venv)) as paths:
        assert path_problem(paths.workspace) is None and path_problem(paths.python) is None
        assert path_problem(paths.bin_dir) is None and path_problem(os.path.realpath(paths.cwd)) is None
        assert os.path.samefile(paths.workspace, ws)  # the same folder, reached through a link
        assert os.path.realpath(paths.python) == os.path.realpath(python)
        assert not os.path.islink(paths.workspace)  # NVFlare rmtree()s it: it must not be the link itself
        links = paths.links
    assert not os.path.exists(links)
    assert ws.is_dir() and venv.is_dir()  # the links went, not what they pointed to


def test_safe_paths_are_used_as_they_are(tmp_path):
    ws = tmp_path / "ws" / "job"
    ws.mkdir(parents=True)
    prefix = tmp_path / "env"  # not sys.prefix: the project (and its .venv) may itself sit under an odd path
    python = prefix / "bin" / "python3"
    python.parent.mkdir(parents=True)
    python.symlink_to(sys.executable)
    with run_paths(ws, python=str(python), prefix=str(prefix)) as paths:
        assert (paths.workspace, paths.python, paths.links) == (str(ws), str(python), None)


def test_a_python_outside_its_prefix_at_an_odd_path_is_refused_before_any_job(tmp_path):
    python = str(tmp_path / "odd dir" / "python3")
    (problem,) = check_paths(tmp_path / "ws", python=python, prefix=str(tmp_path / "elsewhere"))
    assert problem.file == python
    assert "contains ' '" in problem.message and "not inside its environment's prefix" in problem.message


def test_default_timeout_follows_rounds_clients_mode_and_receiver():
    base = ManifestEntry(
        nvflare_version="2.9", num_rounds=5, num_clients=2, execution_mode="in_process", script="train_full.py"
    )
    assert job_timeout(base) == simulate.TIMEOUT_BASE + 5 * (
        simulate.TIMEOUT_PER_ROUND + simulate.TIMEOUT_PER_CLIENT_ROUND * 2
    )
    sub_process = job_timeout(replace(base, execution_mode="external_process"))
    assert sub_process == job_timeout(base) + simulate.TIMEOUT_SUB_PROCESS
    assert job_timeout(replace(base, receiver="mlflow")) == job_timeout(base) + simulate.TIMEOUT_RECEIVER
    assert job_timeout(replace(base, num_rounds=10)) > job_timeout(base)
    assert job_timeout(replace(base, num_clients=8)) > job_timeout(base)
    assert job_timeout(replace(base, timeout=7.5)) == 7.5  # the job's own key
    assert timeout_source(base).startswith("the default from the job's rounds")
    assert timeout_source(replace(base, timeout=7.5)) == "the job's `timeout` key"
    assert timeout_source(replace(base, timeout=7.5), override=3) == "simulate --timeout"
    assert job_timeout(replace(base, timeout=7.5), override=3) == 3  # simulate --timeout wins


def test_timeout_key_reaches_the_manifest_and_is_checked(project):
    (project / "jobs.yaml").write_text("jobs:\n  - name: t\n    script: train_full.py\n    timeout: 90\n")
    assert run_main(project, "generate").returncode == 0
    manifest = json.loads((project / "build/jobs/.jobgen.json").read_text())
    assert manifest["jobs"]["t"]["timeout"] == 90

    (project / "jobs.yaml").write_text("jobs:\n  - name: t\n    script: train_full.py\n    timeout: 0\n")
    result = run_main(project, "validate")
    assert result.returncode == 2
    assert re.match(r"jobs\.yaml:4:14: jobs\[0\] \(t\)\.timeout: ", result.stderr), result.stderr


@pytest.mark.parametrize("value", ["0", "-5", "soon", "inf", "nan"])
def test_a_bad_timeout_option_is_a_usage_error(project, value):
    result = run_main(project, "simulate", "--timeout", value)
    assert result.returncode == 2
    assert "--timeout" in result.stderr and "Traceback" not in result.stderr


def test_no_job_name_can_be_another_jobs_file_or_ours(tmp_path):
    schema = json.loads((ROOT / "schema/jobs.schema.json").read_text())
    pattern = re.compile(schema["$defs"]["job"]["else"]["properties"]["name"]["pattern"])
    assert not pattern.match(WORKSPACE_MARKER) and not pattern.match(LOGS_DIR) and not pattern.match(TMP_DIR)
    root = tmp_path / "ws"
    names = ["a", "a.log", "a.log.log", "logs", "jobgen-workspaces"]
    assert all(pattern.match(n) for n in names)
    files = [prepare_workspace(root, n) for n in names] + [log_path(root, n) for n in names]
    assert len({str(f) for f in files}) == len(files)
    for f in files:  # none inside another
        assert not any(g != f and g in f.parents for g in files)


def test_a_console_log_of_the_old_layout_does_not_block_a_job_of_that_name(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    (root / WORKSPACE_MARKER).write_text("")
    (root / "a.log").write_text("console log of job a, before logs had their own folder\n")
    assert prepare_workspace(root, "a.log").is_dir()


def test_an_mlflow_store_under_a_path_with_url_characters_is_read_back(tmp_path):
    from sqlalchemy.engine import make_url

    from generator.metrics import mlflow_store_uri

    result_dir = tmp_path / "a?b%20c#d" / "server" / "simulate_job"
    assert make_url(mlflow_store_uri(result_dir, None)).database == str(result_dir.resolve() / "mlflow.db")
    uri = mlflow_store_uri(result_dir, "sqlite:///{WORKSPACE}/x.db")
    assert make_url(uri).database == str(result_dir.resolve().parent / "x.db")


# --- simulator ----------------------------------------------------------------------------------------


@pytest.mark.simulator
def test_a_project_and_a_python_environment_under_odd_paths_run(tmp_path):
    """The project and the environment live under 'my project #1:é'q' (a space, #, :, ', é)."""
    import shutil

    project = tmp_path / ODD
    project.mkdir()
    shutil.copytree(ROOT / "client_scripts", project / "client_scripts")
    (project / "jobs.yaml").write_text(
        ONE_ROUND
        + "  - name: odd-in\n    script: train_full.py\n"
        + "  - name: odd-sub\n    script: train_full.py\n    launch_external_process: true\n"
    )
    venv = tmp_path / "my venv #2"  # what sys.executable is when the .venv sits in such a project
    venv.symlink_to(sys.prefix)
    python = venv / Path(sys.executable).relative_to(sys.prefix)
    links = tmp_path / "tmp"  # this run's own TMPDIR: other runs on the machine make links too
    links.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(links)}

    def cli(*args):
        return subprocess.run(
            [str(python), "-m", "generator", *args], cwd=project, env=env, capture_output=True, text=True, timeout=900
        )

    assert cli("generate").returncode == 0
    result = cli("simulate", "--workspace", "build/ws dir")

    assert result.returncode == 0, result.stdout + result.stderr
    results = {r["name"]: r for r in json.loads((project / "build/results.json").read_text())}
    for name in ("odd-in", "odd-sub"):
        assert results[name]["status"] == "ok"
        model = np.load(project / "build/ws dir" / name / "server/simulate_job/models/server.npy")
        assert model.tolist() == one_round_model() == results[name]["final_model"]
        assert Path(results[name]["log"]) == Path("build/ws dir/_logs") / f"{name}.log"
    log = (project / "build/ws dir/_logs/odd-sub.log").read_text()
    assert "Failed to create connection to the child process" not in log
    assert list(links.iterdir()) == []  # the links were made there (the venv's path is odd) and are gone
    assert run_processes(project) == []


@pytest.mark.simulator
def test_a_hanging_job_times_out_its_processes_are_stopped_and_the_next_job_runs(project):
    pids = hang_project(project)
    (project / "jobs.yaml").write_text(
        ONE_ROUND
        + "  - name: hangs\n    script: train_hang.py\n    launch_external_process: true\n"
        + f"    script_args: --pid_dir {pids}\n    timeout: 45\n"
        + "  - name: after\n    script: train_full.py\n"
    )
    assert run_cli(project, "generate").returncode == 0

    result = run_cli(project, "simulate", timeout=900)

    assert result.returncode == 1, result.stdout + result.stderr
    results = {r["name"]: r for r in json.loads((project / "build/results.json").read_text())}
    hung = results["hangs"]
    assert (hung["status"], hung["ok"], hung["timeout"]) == ("TIMEOUT", False, 45)
    assert hung["log"] == "build/workspaces/_logs/hangs.log"
    assert "timed out after 45 s (the job's `timeout` key)" in result.stderr
    # where it hung: both sites' scripts took the task and never answered
    assert "; it was in round 1 of 1, waiting for site-1, site-2 (the server had no result from them);" in result.stderr
    assert "log: build/workspaces/_logs/hangs.log" in result.stderr
    assert (project / hung["log"]).is_file()
    assert re.search(r"^hangs\s+TIMEOUT\s", result.stdout, re.M)
    assert len(list(pids.iterdir())) == 2  # both sites' trainers had started and hung
    assert all(gone(int(p.name)) for p in pids.iterdir())
    assert results["after"]["status"] == "ok" and results["after"]["final_model"] == one_round_model()
    assert run_processes(project / "build") == []


EXITS = """\
import os

import nvflare.client as flare

flare.init()
while flare.is_running():
    model = flare.receive()
    if flare.get_site_name() == "site-1":
        os._exit(3)  # the site's whole simulator worker process ends, as on an out-of-memory kill
    flare.send(flare.FLModel(params=model.params, params_type="FULL"))
"""


@pytest.mark.simulator
def test_a_client_whose_worker_dies_fails_the_job_at_once_not_at_its_timeout(project):
    # NVFlare's simulator logs the lost client and never runs it again: its server would wait until
    # the timeout (300 s). simulate finds the record, stops the run and names the client.
    (project / "client_scripts/train_exits.py").write_text(EXITS)
    (project / "jobs.yaml").write_text(
        ONE_ROUND
        + "  - name: exits\n    script: train_exits.py\n    timeout: 300\n"
        + "  - name: after\n    script: train_full.py\n"
    )
    assert run_cli(project, "generate").returncode == 0

    result = run_cli(project, "simulate", "--parallel", "1", timeout=900)

    assert result.returncode == 1, result.stdout + result.stderr
    results = {r["name"]: r for r in json.loads((project / "build/results.json").read_text())}
    exits = results["exits"]
    assert (exits["status"], exits["retried"]) == ("FAILED", None), exits  # its worker had started: no retry
    assert re.search(r"exits: NVFlare's simulator stopped running site-1 after [\d.]+ s \(\"", result.stderr)
    assert "the server would have waited for its results until the timeout (300 s)" in result.stderr
    assert "site-1's log: build/workspaces/exits/site-1/log.txt" in result.stderr
    assert results["after"]["status"] == "ok" and results["after"]["final_model"] == one_round_model()
    assert run_processes(project / "build") == []


@pytest.mark.simulator
# SIGHUP and SIGINT take the same path in simulate (interrupt_on_signals); tests/test_runner.py sends
# each of the three to a process tree without NVFlare, and the --parallel test below sends SIGINT.
@pytest.mark.parametrize("sig", [signal.SIGTERM], ids=lambda s: s.name)
def test_a_stop_signal_stops_every_process_and_records_the_job_interrupted(project, sig):
    pids = hang_project(project)
    (project / "jobs.yaml").write_text(
        ONE_ROUND
        + "  - name: first\n    script: train_full.py\n"
        + "  - name: stuck\n    script: train_hang.py\n    launch_external_process: true\n"
        + f"    script_args: --pid_dir {pids}\n"
        + "  - name: never\n    script: train_full.py\n"
    )
    assert run_cli(project, "generate").returncode == 0
    # one job at a time (the default runs 3 at once): 'never' must not have started
    proc, out, err = _simulate_and_signal(project, pids, 2, sig, "--parallel", "1")  # 'stuck' in round 1

    assert proc.returncode == 128 + sig, out + err
    results = json.loads((project / "build/results.json").read_text())
    assert [(r["name"], r["status"]) for r in results] == [("first", "ok"), ("stuck", "INTERRUPTED")]
    assert f"interrupted by {sig.name}" in results[1]["problems"][0]
    assert re.search(r"^stuck\s+INTERRUPTED\s", out, re.M)
    assert f"simulate: interrupted by {sig.name}; the results of 2 job(s) are in build/results.json" in err
    assert "Traceback" not in err
    assert all(gone(int(p.name)) for p in pids.iterdir())
    assert run_processes(project / "build") == []
    assert not (project / "build/workspaces/never").exists()


@pytest.mark.simulator
def test_jobs_named_a_and_a_log_both_run(project):
    (project / "jobs.yaml").write_text(
        ONE_ROUND + "  - name: a\n    script: train_full.py\n  - name: a.log\n    script: train_full.py\n"
    )
    assert run_cli(project, "generate").returncode == 0

    result = run_cli(project, "simulate", timeout=900)

    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads((project / "build/results.json").read_text())
    assert [(r["name"], r["status"], r["final_model"]) for r in results] == [
        ("a", "ok", one_round_model()),
        ("a.log", "ok", one_round_model()),
    ]
    ws = project / "build/workspaces"
    for name in ("a", "a.log"):
        assert (ws / name / "server/simulate_job/models/server.npy").is_file()
        assert "Round 0 started" in (ws / "_logs" / f"{name}.log").read_text()


@pytest.mark.parametrize(
    ("workspace", "why"),
    [
        ("jobs.yaml", "is a file, not a folder"),
        ("jobs.yaml/ws", "jobs.yaml is a file, not a folder"),
        ("mine", "holds files the generator did not write"),
        ("build/jobs", "overlaps the generated jobs folder"),
        ("build/jobs/np-full-in-process/ws", "overlaps the generated jobs folder"),
    ],
)
def test_a_workspace_that_cannot_be_used_is_refused_before_any_job(project, workspace, why):
    """A bad --workspace is one line naming it, exit 2, before any job starts; nothing changes on disk."""
    (project / "mine").mkdir()
    (project / "mine/notes.txt").write_text("my notes\n")
    assert run_main(project, "generate").returncode == 0
    before = snapshot(project)

    result = run_main(project, "simulate", "--workspace", workspace)

    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "simulating" not in result.stdout
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"{workspace}: --workspace: ") and why in line, line
    assert snapshot(project) == before


def test_a_results_file_another_run_is_writing_is_refused_and_left_as_it_is(project):
    """A trial: a second `poc` told to give another --downloads (and --workspace) ran beside the first
    and both wrote build/poc-results.json: the one that ended last kept only its own jobs. A run
    holds its existing results file as it holds its workspace; the second is refused."""
    assert run_main(project, "generate").returncode == 0
    results = project / "build/results.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    earlier = {"generator": "nvflare-jobgen", "name": "np-full-in-process", "ok": True, "status": "ok"}
    results.write_text(json.dumps([earlier]))  # an earlier run's
    result, before = run_main_while_held(project, results, "simulate", "--workspace", "build/other-workspaces")

    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == (
        "build/results.json: --results: another run of the generator is writing its results to this file; "
        "`simulate` would replace them with its own: wait until it has finished, or give another --results\n"
    )
    assert result.stdout == ""
    assert snapshot(project) == before


def test_a_workspace_another_run_is_using_is_refused_and_left_as_it_is(project):
    """Two `make simulate` at once: the second would clear the job folders the first is running in."""
    from generator.outputs import lock_folder

    assert run_main(project, "generate").returncode == 0
    ws = project / "build/workspaces"
    (ws / "np-full-in-process").mkdir(parents=True)
    (ws / WORKSPACE_MARKER).write_text("")
    (ws / "np-full-in-process/log.txt").write_text("the first run's")
    result, before = run_main_while_held(project, ws, "simulate")

    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == (
        "build/workspaces: --workspace: another run of the generator (simulate, poc or submit) is using this "
        "folder; `simulate` would clear what that run writes there: wait until it has finished, or give another "
        "--workspace (and another --results, which that run will write too)\n"
    )
    assert result.stdout == ""
    assert snapshot(project) == before
    fd = lock_folder(ws)  # the refused run holds nothing: the next run may go
    assert fd is not None
    os.close(fd)


def test_generate_does_not_change_the_job_folders_a_run_is_running_nor_a_run_start_on_half_written_ones(project):
    """`make run` while `make simulate` runs: its generate would swap job folders under the running
    simulate (seen: 10 jobs of the first run FAILED, "not final (after round 3 of 5)")."""
    assert run_main(project, "generate").returncode == 0
    (project / "jobs.yaml").write_text((project / "jobs.yaml").read_text().replace("num_rounds: 5 ", "num_rounds: 3 "))
    jobs = project / "build/jobs"

    result, before = run_main_while_held(project, jobs, "generate", shared=True)  # what a run holds

    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == (
        "build/jobs: a simulate, poc or submit run is running the job folders here; generating now would change "
        "them under it: try again when it has finished, or generate into another --out\n"
    )
    assert snapshot(project) == before
    from generator.outputs import lock_folder

    first, second = lock_folder(jobs, shared=True), lock_folder(jobs, shared=True)  # runs share it
    assert first is not None and second is not None
    os.close(first)
    os.close(second)

    result, before = run_main_while_held(project, jobs, "simulate")  # what generate holds while it writes

    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == (
        "build/jobs: --out: `generate` is writing the job folders here now; `simulate` would run them "
        "half-written: try again when it has finished\n"
    )
    assert snapshot(project) == before


def test_simulate_stops_what_a_killed_run_left_running_in_its_workspace(project, monkeypatch):
    """A run killed by SIGKILL cannot stop its simulator; the next run in that workspace does,
    before it clears the folders, and says so; a process only working in the folder is left alone.
    The killed run's TMPDIR link folders go too (also one made through a link to the workspace);
    another run's stay, also a live one's whose workspaces folder is inside this one (seen: removed,
    that run then crashed at its clean-up)."""
    from generator.runner import mark_run

    assert run_main(project, "generate").returncode == 0
    ws = project / "build/workspaces"
    (ws / "np-full-in-process").mkdir(parents=True)
    (ws / WORKSPACE_MARKER).write_text("")
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    left = subprocess.Popen(sleep, env=mark_run(dict(os.environ), ws), cwd=ws / "np-full-in-process")
    shell = subprocess.Popen(sleep, cwd=ws / "np-full-in-process")  # a user's, looking at the logs
    for run in ("_run_serial", "_run_parallel"):  # no job needs to run for this
        monkeypatch.setattr(simulate, run, lambda *args: [])
    # and the short TMPDIR link of its run (run_tmp), beside another run's
    monkeypatch.setattr(tempfile, "tempdir", str(project / "tmp"))
    (project / "tmp/jobgen-run-killed").mkdir(parents=True)
    (project / "tmp/jobgen-run-killed/t").symlink_to(ws.absolute() / "_tmp/np-full-in-process")
    (project / "tmp/jobgen-run-other").mkdir()
    (project / "tmp/jobgen-run-other/t").symlink_to(project / "elsewhere/_tmp/x")
    (project / "wslink").symlink_to(ws.absolute())  # a run that named its workspace through a link
    (project / "tmp/jobgen-run-via-link").mkdir()
    (project / "tmp/jobgen-run-via-link/t").symlink_to(project / "wslink/_tmp/np-diff-in-process")
    (project / "tmp/jobgen-run-nested").mkdir()  # a live run's, its workspaces folder inside this one
    (project / "tmp/jobgen-run-nested/t").symlink_to(ws.absolute() / "extra/_tmp/np-full-in-process")
    # the link to its Python that a `poc` run killed with SIGKILL left (named by its PID, ended), and
    # one of a run whose process still runs (this one's)
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (project / f"tmp/jobgen-run-{ended.stdout.strip()}-abc").mkdir()
    (project / f"tmp/jobgen-run-{ended.stdout.strip()}-abc/py").symlink_to(Path(sys.prefix))
    (project / f"tmp/jobgen-run-{os.getpid()}-def").mkdir()
    (project / f"tmp/jobgen-run-{os.getpid()}-def/py").symlink_to(Path(sys.prefix))
    try:
        result = run_main(project, "simulate")
        assert result.returncode == 0, result.stderr
        assert result.stderr.splitlines()[0] == (
            f"build/workspaces: stopped 1 process that an earlier run left running there (PID {left.pid}): "
            "it ended before it could stop them"
        )
        left.wait(timeout=5)
        assert shell.poll() is None
        assert sorted(p.name for p in (project / "tmp").iterdir()) == [
            f"jobgen-run-{os.getpid()}-def",
            "jobgen-run-nested",
            "jobgen-run-other",
        ]
    finally:
        for proc in (left, shell):
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("option", ["--out", "--workspace", "--results", "--reports"])
def test_an_empty_path_option_is_a_usage_error_not_the_default(project, option):
    assert run_main(project, "generate").returncode == 0
    before = snapshot(project)
    result = run_main(project, "simulate", option, "")
    assert result.returncode == 2
    assert f"argument {option}: expected a path, got an empty value" in result.stderr
    assert "Traceback" not in result.stderr and snapshot(project) == before


@pytest.mark.simulator
def test_parallel_2_runs_two_jobs_at_once_the_longest_last_time_first_and_keeps_the_file_order(project):
    (project / "jobs.yaml").write_text(
        ONE_ROUND.replace("num_rounds: 1", "num_rounds: 2")
        + "  - name: slow\n    script: train_full.py\n    launch_external_process: true\n"
        + "  - name: fast\n    script: train_diff.py\n"
    )
    assert run_cli(project, "generate").returncode == 0
    earlier = [
        {"generator": "nvflare-jobgen", "name": n, "status": "ok", "wall_seconds": s}
        for n, s in (("slow", 9.5), ("fast", 20.0))
    ]
    (project / "build/results.json").write_text(json.dumps(earlier))  # an earlier run: fast took longer

    result = run_cli(project, "simulate", "--parallel", "2", timeout=900)

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert (
        lines[0]
        == "order: longest first by the wall times in build/results.json (untimed jobs before them): fast, slow"
    )
    starts = [
        i for i, line in enumerate(lines) if re.fullmatch(r"(slow|fast): simulating 2 clients, 2 rounds .*", line)
    ]
    assert [lines[i].split(":")[0] for i in starts] == ["fast", "slow"]
    # both started before either finished: they ran at once
    assert starts[-1] < min(i for i, line in enumerate(lines) if re.match(r"(slow|fast): ok in ", line))
    for name in ("slow", "fast"):  # every progress line names its job, whole
        assert [line for line in lines if line.startswith(f"  {name}: round ")] == [
            line for line in lines if re.fullmatch(rf"  {name}: round [12] of 2 \(\d+\.\d s\)", line)
        ]
    table = lines[lines.index("") + 1 :]
    rows = [row.split()[:3] for row in table[1:] if not row.startswith("results: ")]
    assert rows == [["slow", "ok", "2/2"], ["fast", "ok", "2/2"]]
    assert table[-1] == "results: build/results.json"
    results = json.loads((project / "build/results.json").read_text())
    two_rounds = (np.array(INITIAL_MODEL, dtype=np.float32) + 2).tolist()
    assert [(r["name"], r["status"], r["final_model"]) for r in results] == [
        ("slow", "ok", two_rounds),
        ("fast", "ok", two_rounds),
    ]
    for name in ("slow", "fast"):
        assert results[name == "fast"]["log"] == f"build/workspaces/_logs/{name}.log"
        model = np.load(project / "build/workspaces" / name / "server/simulate_job/models/server.npy")
        assert model.tolist() == two_rounds
    assert run_processes(project / "build") == []


@pytest.mark.simulator
def test_ctrl_c_with_parallel_2_stops_both_running_jobs_and_starts_no_other(project):
    pids = hang_project(project)
    hang = f"    script: train_hang.py\n    launch_external_process: true\n    script_args: --pid_dir {pids}\n"
    (project / "jobs.yaml").write_text(
        ONE_ROUND
        + f"  - name: stuck-a\n{hang}  - name: stuck-b\n{hang}"
        + "  - name: never\n    script: train_full.py\n"
    )
    assert run_cli(project, "generate").returncode == 0
    proc, out, err = _simulate_and_signal(project, pids, 4, signal.SIGINT, "--parallel", "2")  # both jobs' sites

    assert proc.returncode == 130, out + err
    results = json.loads((project / "build/results.json").read_text())
    assert [(r["name"], r["status"]) for r in results] == [("stuck-a", "INTERRUPTED"), ("stuck-b", "INTERRUPTED")]
    assert all(r["problems"][0].startswith("interrupted by SIGINT after ") for r in results)
    assert [row.split()[:2] for row in out.splitlines()[-2:]] == [
        ["stuck-a", "INTERRUPTED"],
        ["stuck-b", "INTERRUPTED"],
    ]
    assert "simulate: interrupted by SIGINT; the results of 2 job(s) are in build/results.json" in err
    assert "Traceback" not in err
    assert all(gone(int(p.name)) for p in pids.iterdir())
    assert run_processes(project / "build") == []
    assert not (project / "build/workspaces/never").exists()


def _simulate_and_signal(project: Path, pids: Path, trainers: int, sig: int, *args: str):
    """Run ``simulate ARGS`` in ``project`` as a user would, send ``sig`` once ``trainers`` client
    scripts wrote their pid file into ``pids`` (each waits there in round 1); gives (process, stdout,
    stderr) after it ended (killed in any case)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "generator", "simulate", *args],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        deadline = time.monotonic() + 600
        while len(list(pids.iterdir())) < trainers and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(list(pids.iterdir())) == trainers
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    return proc, out, err


def test_a_runs_tmpdir_is_a_short_link_into_the_workspace_and_is_removed_after_it(tmp_path, monkeypatch):
    root = tmp_path / ("deep-" * 12) / "workspaces"
    root.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / ("deep-" * 12)))  # a long $TMPDIR: /tmp is taken
    with simulate.run_tmp(root, "job") as tmp:
        assert os.path.realpath(tmp) == str((root / TMP_DIR / "job").resolve())
        assert len(tmp) < 40  # room for multiprocessing's pymp-*/listener-* sockets (107 bytes at most)
        (Path(tmp) / "tmpx1wandb-media").mkdir()  # what W&B leaves behind
        (Path(tmp) / "tmpx1wandb-media" / "f").write_text("x")
        env = simulate._run_env("/venv/bin", root / "job", tmp)
        assert env["TMPDIR"] == env["TEMP"] == env["TMP"] == tmp
    assert not os.path.lexists(tmp) and not os.path.exists(os.path.dirname(tmp))
    assert sorted(p.name for p in root.iterdir()) == []


@pytest.mark.simulator
def test_a_wandb_run_and_its_plot_leave_nothing_in_tmpdir_or_home(project, monkeypatch):
    tmp, home = project / "tmp", project / "home"
    tmp.mkdir()
    home.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))  # generate and simulate (and whatever they start) inherit these
    monkeypatch.setenv("HOME", str(home))
    for name in ("MPLCONFIGDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    (project / "jobs.yaml").write_text(
        ONE_ROUND
        + "  - name: w\n    script: train_metrics_wandb.py\n    script_args: --epoch_seconds 0.05\n"
        + "    receiver: {type: wandb}\n    expect: {metric_points_per_site: {global_step: 375}}\n"
    )
    assert run_cli(project, "generate").returncode == 0

    result = run_cli(project, "simulate", timeout=900)

    assert result.returncode == 0, result.stdout + result.stderr
    assert [r["status"] for r in json.loads((project / "build/results.json").read_text())] == ["ok"]
    assert list(tmp.iterdir()) == []  # W&B's wandb-media folders went with the run's own TMPDIR
    assert not (project / "build/workspaces" / TMP_DIR).exists()
    assert (project / "build/reports/w.png").is_file()
    assert list(home.iterdir()) == []  # matplotlib's font list is in the workspaces folder instead
    assert any((project / "build/workspaces" / MPL_DIR).glob("fontlist*.json"))


def test_the_simulator_env_keeps_wandb_cache_in_the_workspace_unless_set(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_CACHE_DIR", raising=False)
    monkeypatch.setenv("WANDB_DIR", "/elsewhere")
    env = simulate._run_env("/venv/bin", tmp_path / "ws")
    assert env["WANDB_CACHE_DIR"] == str(tmp_path / "ws" / "_wandb_cache")  # not ~/.cache/wandb
    assert "WANDB_DIR" not in env  # runs land in the job's run folder (the receiver's dir=)
    assert env["PATH"].split(os.pathsep)[0] == "/venv/bin"
    monkeypatch.setenv("WANDB_CACHE_DIR", "/mine")
    assert simulate._run_env("/venv/bin", tmp_path / "ws")["WANDB_CACHE_DIR"] == "/mine"


def test_mlflow_telemetry_is_off_for_every_run_unless_the_user_chose(monkeypatch, tmp_path):
    """MLflow 3 sends usage telemetry (and writes ~/.config/mlflow/telemetry.json) from every process."""
    from generator.cli import main

    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
    assert simulate._run_env("/venv/bin", tmp_path / "ws")["MLFLOW_DISABLE_TELEMETRY"] == "true"
    monkeypatch.chdir(tmp_path)
    main(["validate", "--jobs", "missing.yaml"])  # any command: the CLI sets it for itself and its children
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "false")
    main(["validate", "--jobs", "missing.yaml"])
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "false"
    assert simulate._run_env("/venv/bin", tmp_path / "ws")["MLFLOW_DISABLE_TELEMETRY"] == "false"
