"""End to end: generated folders run in the real ``nvflare simulator`` and give the right results.

The five shipped jobs (2 clients, 5 rounds) must end with the server's model equal to the
initial ``[[1,2,3],[4,5,6],[7,8,9]]`` + 5 (FULL, DIFF: +1 per round) or + 15 (metrics: +1 per
epoch, 3 epochs), and both metrics jobs must have stored 1,875 ``global_step`` points per site at
steps 0..1874 (read straight from the MLflow store here, not through the generator's counter).
Failures must be reported as failures even when the simulator exits 0.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import INITIAL_MODEL, run_cli

pytestmark = pytest.mark.simulator

EXPECTED_DELTA = {
    "np-full-in-process": 5,
    "np-diff-in-process": 5,
    "np-metrics-in-process": 15,
    "np-full-sub-process": 5,
    "np-metrics-sub-process": 15,
}


@pytest.fixture(scope="module")
def shipped_run(tmp_path_factory):
    """Generate and simulate the shipped jobs.yaml once, as `make run` does."""
    import shutil

    from conftest import ROOT

    project = tmp_path_factory.mktemp("shipped")
    shutil.copy(ROOT / "jobs.yaml", project / "jobs.yaml")
    shutil.copytree(ROOT / "client_scripts", project / "client_scripts")
    assert run_cli(project, "generate").returncode == 0
    result = run_cli(project, "simulate", timeout=1200)
    results = {r["name"]: r for r in json.loads((project / "build/results.json").read_text())}
    return project, result, results


def test_all_five_jobs_pass(shipped_run):
    _, result, results = shipped_run
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(results) == sorted(EXPECTED_DELTA)
    assert all(r["ok"] for r in results.values())


@pytest.mark.parametrize("name", sorted(EXPECTED_DELTA))
def test_final_model_on_disk(shipped_run, name):
    project, _, results = shipped_run
    model = np.load(project / "build/workspaces" / name / "server/simulate_job/models/server.npy")
    expected = np.array(INITIAL_MODEL, dtype=np.float32) + EXPECTED_DELTA[name]
    np.testing.assert_array_equal(model, expected)
    assert results[name]["final_model"] == expected.tolist()
    assert results[name]["rounds_started"] == 5


@pytest.mark.parametrize("name", ["np-metrics-in-process", "np-metrics-sub-process"])
def test_every_metric_point_is_in_mlflow(shipped_run, name):
    from mlflow.tracking import MlflowClient

    project, _, results = shipped_run
    db = project / "build/workspaces" / name / "server/simulate_job/mlflow.db"
    assert db.is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("nvflare-fedavg-np-experiment")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    by_site = {"-".join(r.info.run_name.split("-")[:2]): r for r in runs}
    assert sorted(by_site) == ["site-1", "site-2"]
    for run in by_site.values():
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "global_step"))
        assert steps == list(range(1875))
    assert results[name]["metric_points"] == {"site-1": {"global_step": 1875}, "site-2": {"global_step": 1875}}


def test_simulate_prints_a_table_and_round_progress(shipped_run):
    _, result, _ = shipped_run
    assert "np-diff-in-process: round 5 of 5" in result.stdout
    table = result.stdout[result.stdout.index("job  ") :]
    assert "np-metrics-sub-process  ok" in table
    assert "[[16 17 18], [19 20 21], [22 23 24]]" in table


def test_lost_metrics_fail_the_job(project):
    """NVFlare 2.9's own FedJob export has no ConvertToFedEvent: in-process metrics never arrive."""
    assert run_cli(project, "generate", "--job", "np-metrics-in-process").returncode == 0
    config = project / "build/jobs/np-metrics-in-process/app/config/config_fed_client.json"
    data = json.loads(config.read_text())
    data["components"] = []
    config.write_text(json.dumps(data))

    result = run_cli(project, "simulate", timeout=600)

    assert result.returncode == 1
    assert "no metric from site-1 arrived" in result.stderr
    assert "site-2 stored 0 'global_step' points, expected 1875" in result.stderr


def test_a_crashing_client_fails_the_job(project):
    (project / "client_scripts/train_crash.py").write_text(
        "import nvflare.client as flare\n\n"
        "flare.init()\n"
        "while flare.is_running():\n"
        "    received = flare.receive()\n"
        "    if received.current_round == 1:\n"
        "        raise RuntimeError('boom in round 1')\n"
        "    flare.send(flare.FLModel(params={'numpy_key': received.params['numpy_key'] + 1}, params_type='FULL'))\n"
    )
    (project / "jobs.yaml").write_text(
        "jobs:\n  - name: crash\n    script: train_crash.py\n    server: {task_request_interval: 0.1}\n"
    )
    assert run_cli(project, "generate").returncode == 0

    result = run_cli(project, "simulate", timeout=600)

    assert result.returncode == 1
    assert "crash  FAILED  2/5" in result.stdout
    assert "RuntimeError: boom in round 1" in result.stderr
