"""In the real simulator, a script gets exactly the ``script_args`` of ``jobs.yaml`` in both modes.

A client script writes the arguments it received (``sys.argv[1:]``) to a file per site; the same
``script_args``, with the NVFlare variables the generator keeps (``{SITE_NAME}``, ``{JOB_ID}``),
must arrive identically in-process and in a sub-process, and quoted arguments exactly as a shell
splits them in a sub-process (in-process they are refused: ``tests/cases/invalid/script_args_*``).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil

import numpy as np
import pytest
from conftest import INITIAL_MODEL, ROOT, run_cli

pytestmark = pytest.mark.simulator

ECHO_ARGV = '''\
"""Writes the arguments it received to $JOBGEN_ARGV_DIR/<site>.json, then trains like train_full.py."""
import json
import os
import sys

import nvflare.client as flare

flare.init()
with open(os.path.join(os.environ["JOBGEN_ARGV_DIR"], flare.get_site_name() + ".json"), "w") as f:
    json.dump(sys.argv[1:], f)
while flare.is_running():
    model = flare.receive()
    params = {"numpy_key": model.params["numpy_key"] + 1}
    flare.send(flare.FLModel(params=params, params_type="FULL", current_round=model.current_round))
'''

ARGS = "--site {SITE_NAME} --job={JOB_ID} --tag exp#3 --eq=x=y --word é --neg -1  --pct 50%"
QUOTED = "--name 'a b' --x \"y z\" --empty '' --site {SITE_NAME}"

JOBS = {
    "args-in-process": (ARGS, False),
    "args-sub-process": (ARGS, True),
    "quoted-sub-process": (QUOTED, True),
}

#: A metrics job whose MLflow store is named with the variables kept in tracking_uri.
TRACKING_JOB = {
    "name": "tracking-uri-variables",
    "script": "train_metrics.py",
    "script_args": "--epoch_seconds 0.01",
    "receiver": {"type": "mlflow", "tracking_uri": "sqlite:///{WORKSPACE}/{JOB_ID}/{SITE_NAME}.db"},
    "expect": {"metric_points_per_site": {"global_step": 375}},
}


def _expected(args: str, site: str) -> list[str]:
    return [w.replace("{SITE_NAME}", site).replace("{JOB_ID}", "simulate_job") for w in shlex.split(args)]


@pytest.fixture(scope="module")
def received(tmp_path_factory):
    """Generate the three jobs, simulate each with its own JOBGEN_ARGV_DIR; give {job: {site: argv}}."""
    project = tmp_path_factory.mktemp("argv")
    shutil.copytree(ROOT / "client_scripts", project / "client_scripts")
    (project / "client_scripts" / "echo_argv.py").write_text(ECHO_ARGV, encoding="utf-8")
    jobs = [
        {"name": name, "script_args": args, "launch_external_process": external}
        for name, (args, external) in JOBS.items()
    ] + [TRACKING_JOB]
    spec = {
        "defaults": {
            "script": "echo_argv.py",
            "num_rounds": 1,
            "num_clients": 2,
            "task_check_period": 0.05,
            "server": {"task_request_interval": 0.1},
        },
        "jobs": jobs,
    }
    (project / "jobs.yaml").write_text(json.dumps(spec, ensure_ascii=False, indent=2), encoding="utf-8")
    generated = run_cli(project, "generate")
    assert generated.returncode == 0, generated.stderr
    out = {}
    for name in [*JOBS, TRACKING_JOB["name"]]:
        argv_dir = project / "argv" / name
        argv_dir.mkdir(parents=True)
        os.environ["JOBGEN_ARGV_DIR"] = str(argv_dir)
        try:
            result = run_cli(project, "simulate", "--job", name, timeout=600)
        finally:
            del os.environ["JOBGEN_ARGV_DIR"]
        assert result.returncode == 0, result.stdout + result.stderr
        model = np.load(next((project / "build/workspaces").glob(f"**/{name}/**/models/server.npy")))
        delta = 3 if name == TRACKING_JOB["name"] else 1  # train_metrics.py adds 1 per epoch, 3 epochs a round
        np.testing.assert_array_equal(model, np.array(INITIAL_MODEL, dtype=np.float32) + delta)
        out[name] = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(argv_dir.iterdir())}
    out["project"] = project
    return out


def test_tracking_uri_variables_name_the_store_nvflare_wrote(received):
    """{WORKSPACE}/{JOB_ID}/{SITE_NAME} is the server's workspace, the job id and "server"; simulate
    found every metric point there (the job passed with `expect`, checked in the fixture)."""
    name = TRACKING_JOB["name"]
    (store,) = (received["project"] / "build/workspaces").glob(f"**/{name}/**/simulate_job/server.db")
    assert store.parent.parent.name == "server" and store.stat().st_size > 0


@pytest.mark.parametrize("name", sorted(JOBS))
def test_script_receives_exactly_the_script_args(received, name):
    args, _ = JOBS[name]
    assert received[name] == {site: _expected(args, site) for site in ("site-1", "site-2")}


def test_both_modes_give_the_same_arguments(received):
    assert received["args-in-process"] == received["args-sub-process"]
    assert received["args-in-process"]["site-1"][:4] == ["--site", "site-1", "--job=simulate_job", "--tag"]
