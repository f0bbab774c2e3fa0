"""NVFlare release lines: ``nvflare_version`` picks the template set; the default is the installed line.

These tests need no nvflare: they check what the templates write. That NVFlare itself builds the
same components from these folders as from its own FedJob export is ``test_equivalence.py``'s job.
"""

from __future__ import annotations

import json
import shutil
from importlib import metadata

import pytest
from conftest import ROOT, example_jobs_yaml

from generator import lines
from generator.load import load
from generator.render import Renderer
from generator.validate import _line_problems, validate

IN_PROCESS_27 = "nvflare.app_common.executors.in_process_client_api_executor.InProcessClientAPIExecutor"
LAUNCHER_27 = "nvflare.app_common.executors.client_api_launcher_executor.ClientAPILauncherExecutor"
CLIENT_API_29 = "nvflare.app_common.executors.client_api_executor.ClientAPIExecutor"
MLFLOW = "nvflare.app_opt.tracking.mlflow.mlflow_receiver.MLflowReceiver"


def render_shipped(tmp_path, line: str) -> dict[str, dict[str, dict]]:
    """The example's jobs of the shipped jobs.yaml with ``defaults.nvflare_version: line``, rendered and parsed."""
    text = example_jobs_yaml(nvflare_version=line)
    shutil.copytree(ROOT / "client_scripts", tmp_path / "client_scripts")
    (tmp_path / "jobs.yaml").write_text(text, encoding="utf-8")
    renderer = Renderer(tmp_path / "client_scripts")
    out = {}
    for job in validate(load(tmp_path / "jobs.yaml")):
        assert job.line == line
        files = renderer.render(job)
        out[job.name] = {k: json.loads(v) for k, v in files.items() if k.endswith(".json")}
    return out


def executor(job: dict) -> dict:
    (entry,) = job["app/config/config_fed_client.json"]["executors"]
    assert entry["tasks"] == ["*"]
    return entry["executor"]


def components(job: dict, side: str = "client") -> dict[str, dict]:
    return {c["id"]: c for c in job[f"app/config/config_fed_{side}.json"]["components"]}


def test_installed_line_is_read_from_metadata(monkeypatch):
    lines.installed_line.cache_clear()
    monkeypatch.setattr(lines.metadata, "version", lambda name: "2.7.3")
    assert lines.installed_line() == "2.7"
    lines.installed_line.cache_clear()
    monkeypatch.setattr(lines.metadata, "version", lambda name: "2.8.1")
    assert lines.installed_line() == lines.FALLBACK_LINE == "2.9"

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    lines.installed_line.cache_clear()
    monkeypatch.setattr(lines.metadata, "version", missing)
    assert lines.installed_line() == "2.9"
    lines.installed_line.cache_clear()


def test_default_line_is_the_installed_one(tmp_path):
    shutil.copytree(ROOT / "client_scripts", tmp_path / "client_scripts")
    (tmp_path / "jobs.yaml").write_text("jobs:\n  - {name: a, script: train_full.py}\n", encoding="utf-8")
    (job,) = validate(load(tmp_path / "jobs.yaml"))
    assert job.line == lines.installed_line()


def test_27_in_process_uses_the_in_process_executor(tmp_path):
    jobs = render_shipped(tmp_path, "2.7")
    ex = executor(jobs["np-diff-in-process"])
    assert ex == {
        "path": IN_PROCESS_27,
        "args": {
            "task_script_path": "train_diff.py",
            "task_script_args": "",
            "params_exchange_format": "numpy",
            "server_expected_format": "numpy",
            "params_transfer_type": "DIFF",
        },
    }
    assert components(jobs["np-diff-in-process"]) == {}
    assert list(components(jobs["np-metrics-in-process"])) == ["event_to_fed"]


def test_27_sub_process_launches_the_script_over_cell_pipes(tmp_path):
    job = render_shipped(tmp_path, "2.7")["np-full-sub-process"]
    ex = executor(job)
    assert ex["path"] == LAUNCHER_27
    assert (ex["args"]["pipe_id"], ex["args"]["launcher_id"]) == ("pipe", "launcher")
    comps = components(job)
    assert list(comps) == ["pipe", "launcher", "metrics_pipe", "metric_relay", "config_preparer"]
    assert comps["launcher"]["args"] == {
        "script": "python3 -u custom/train_full.py",
        "launch_once": True,
        "shutdown_timeout": 0.0,
    }
    assert comps["pipe"]["args"] == comps["metrics_pipe"]["args"]
    assert comps["pipe"]["args"]["site_name"] == "{SITE_NAME}"
    assert comps["metric_relay"]["args"]["pipe_id"] == "metrics_pipe"
    assert comps["config_preparer"]["args"] == {"component_ids": ["metric_relay"]}


def test_27_receiver_always_names_an_sqlite_store(tmp_path):
    jobs = render_shipped(tmp_path, "2.7")
    for name in ("np-metrics-in-process", "np-metrics-sub-process"):
        receiver = components(jobs[name], "server")["receiver"]
        assert receiver["path"] == MLFLOW
        assert receiver["args"]["tracking_uri"] == "sqlite:///{WORKSPACE}/{JOB_ID}/mlflow.db"


def test_29_and_27_share_meta_and_server_workflow(tmp_path):
    j29 = render_shipped(tmp_path / "a", "2.9")
    j27 = render_shipped(tmp_path / "b", "2.7")
    for name in j29:
        assert j29[name]["meta.json"] == j27[name]["meta.json"]
        server = next(p for p in j29[name] if p.endswith("config/config_fed_server.json"))  # app/ or app_server/
        assert j29[name][server]["workflows"] == j27[name][server]["workflows"]
        clients = [p for p in j29[name] if p.endswith("config/config_fed_client.json")]
        assert clients and all(
            [e["executor"]["path"] for e in j29[name][p]["executors"]] == [CLIENT_API_29] for p in clients
        )


@pytest.mark.parametrize("receiver_type", ["tensorboard", "wandb"])
def test_27_refuses_a_receiver_it_has_no_template_for(tmp_path, receiver_type):
    """Only MLflow receivers exist for 2.7; another type is a located error, not a broken folder."""
    shutil.copytree(ROOT / "client_scripts", tmp_path / "client_scripts")
    (tmp_path / "jobs.yaml").write_text(
        'jobs:\n  - name: a\n    script: train_metrics.py\n    nvflare_version: "2.7"\n'
        "    receiver:\n      type: mlflow\n",
        encoding="utf-8",
    )
    doc = load(tmp_path / "jobs.yaml")
    (job,) = validate(doc)
    assert _line_problems(doc, job) == []
    job.settings["receiver"]["type"] = receiver_type  # as if the schema allowed it
    (problem,) = _line_problems(doc, job)
    assert (problem.line, problem.column, problem.path) == (6, 13, "jobs[0].receiver.type")
    assert f"receiver type {receiver_type!r} is not available for nvflare_version 2.7" in problem.message


def test_simulate_refuses_a_folder_written_for_another_line(tmp_path):
    """A 2.7 folder does not load on 2.9 (and back): say so instead of running a doomed simulation."""
    from generator.layout import ManifestEntry
    from generator.simulate import simulate_job

    other = "2.7" if lines.installed_line() == "2.9" else "2.9"
    info = ManifestEntry(nvflare_version=other, num_clients=1, num_rounds=1, execution_mode="in_process", script="x.py")
    result = simulate_job(tmp_path / "out", tmp_path / "ws", "a", info)
    assert not result.ok
    assert [p.message for p in result.problems] == [
        f"written for NVFlare {other} (nvflare_version) but this environment's nvflare is the "
        f"{lines.installed_line()} line: simulate it with NVFlare {other}, or generate it for {lines.installed_line()}"
    ]
    assert not (tmp_path / "ws").exists()


def test_simulate_never_says_it_is_simulating_a_job_of_another_line(project, cli):
    other = "2.7" if lines.installed_line() == "2.9" else "2.9"
    (project / "jobs.yaml").write_text(
        f"jobs:\n  - name: old\n    script: train_full.py\n    nvflare_version: '{other}'\n", encoding="utf-8"
    )
    assert cli("generate")[0] == 0
    code, out, err = cli("simulate")
    assert code == 1
    assert out[0] == "old: FAILED, not started; log: none"  # no "old: simulating ..." before it (trial 40)
    assert err[0].startswith(f"old: written for NVFlare {other} (nvflare_version)")
    assert not (project / "build/workspaces/old").exists()
