"""``clients:`` names and ``sites:`` per-site settings: the effective jobs, the multi-app layout, the manifest.

A job whose sites run different client settings is rendered as NVFlare's FedJob exports a job
whose sites got different executors: ``app_server/`` for the server, one ``app_<site>/`` per
distinct client configuration (sites with equal settings share the app of the first of them), and
a ``deploy_map`` naming each app's sites. No NVFlare run here (the simulator tests are in
``test_workflows.py``; the comparison with FedJob's own export in ``test_equivalence.py``).
"""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import ROOT

from generator.errors import OutputError
from generator.layout import ManifestEntry
from generator.load import load
from generator.pipeline import job_info
from generator.render import Renderer
from generator.validate import validate
from generator.write import write_jobs

CLIENT_API = "nvflare.app_common.executors.client_api_executor.ClientAPIExecutor"


def _jobs(tmp_path, text: str):
    (tmp_path / "jobs.yaml").write_text(text, encoding="utf-8")
    shutil.copytree(ROOT / "client_scripts", tmp_path / "client_scripts", dirs_exist_ok=True)
    return validate(load(tmp_path / "jobs.yaml"))


def _render(tmp_path, job) -> dict[str, bytes]:
    return Renderer(tmp_path / "client_scripts").render(job)


def _executor(files: dict, app: str) -> dict:
    config = json.loads(files[f"{app}/config/config_fed_client.json"])
    (entry,) = config["executors"]
    assert entry["executor"]["path"] == CLIENT_API
    return entry["executor"]["args"]


PER_SITE = """\
jobs:
  - name: ps
    script: train_full.py
    num_rounds: 2
    clients: [alpha, beta, gamma, delta]
    sites:
      alpha: {script_args: --increment 1}
      beta: {script_args: --increment 3}
      gamma: {script_args: --increment 1}
      delta: {script: train_diff.py, launch_external_process: true}
"""


def test_sites_with_equal_settings_share_one_app_named_after_the_first(tmp_path):
    (job,) = _jobs(tmp_path, PER_SITE)
    files = _render(tmp_path, job)
    assert sorted(files) == [
        "app_alpha/config/config_fed_client.json",
        "app_alpha/custom/train_full.py",
        "app_beta/config/config_fed_client.json",
        "app_beta/custom/train_full.py",
        "app_delta/config/config_fed_client.json",
        "app_delta/custom/train_diff.py",
        "app_server/config/config_fed_server.json",
        "meta.json",
    ]
    assert json.loads(files["meta.json"]) == {
        "name": "ps",
        "resource_spec": {},
        "min_clients": 1,
        "deploy_map": {
            "app_server": ["server"],
            "app_alpha": ["alpha", "gamma"],
            "app_beta": ["beta"],
            "app_delta": ["delta"],
        },
    }
    assert _executor(files, "app_alpha")["task_script_args"] == "--increment 1"
    assert _executor(files, "app_beta")["task_script_args"] == "--increment 3"
    delta = _executor(files, "app_delta")
    assert delta["execution_mode"] == "external_process"
    assert delta["command"] == ["python3", "-u", "custom/train_diff.py"]
    assert files["app_delta/custom/train_diff.py"] == (ROOT / "client_scripts/train_diff.py").read_bytes()


def test_the_server_app_is_the_single_app_jobs_server_config(tmp_path):
    (multi, single) = _jobs(
        tmp_path,
        PER_SITE + "  - {name: one, script: train_full.py, num_rounds: 2, clients: [alpha, beta, gamma, delta]}\n",
    )
    server = json.loads(_render(tmp_path, multi)["app_server/config/config_fed_server.json"])
    assert server == json.loads(_render(tmp_path, single)["app/config/config_fed_server.json"])
    assert server["workflows"][0]["args"]["num_clients"] == 4


def test_clients_set_the_number_of_clients_and_the_manifest_names_them_and_the_apps(tmp_path):
    (job,) = _jobs(tmp_path, PER_SITE)
    assert job.settings["num_clients"] == 4
    entry = job_info(job)
    assert entry.sites == ["alpha", "beta", "gamma", "delta"]
    assert entry.apps == {
        "app_alpha": {"sites": ["alpha", "gamma"], "script": "train_full.py"},
        "app_beta": {"sites": ["beta"], "script": "train_full.py"},
        "app_delta": {"sites": ["delta"], "script": "train_diff.py"},
    }
    assert ManifestEntry.from_json(json.loads(json.dumps(entry.to_json()))) == entry
    assert entry.scripts() == {
        "app_alpha/custom/train_full.py": "train_full.py",
        "app_beta/custom/train_full.py": "train_full.py",
        "app_delta/custom/train_diff.py": "train_diff.py",
    }


def test_a_job_whose_sites_all_end_up_equal_keeps_its_single_app(tmp_path):
    text = (
        "defaults: {sites: {site-2: {script_args: --increment 3}}}\n"
        "jobs:\n  - name: same\n    script: train_full.py\n    sites: {site-2: {script_args: ''}}\n"
    )
    (job,) = _jobs(tmp_path, text)
    assert job.apps == []
    files = _render(tmp_path, job)
    assert sorted(files) == [
        "app/config/config_fed_client.json",
        "app/config/config_fed_server.json",
        "app/custom/train_full.py",
        "meta.json",
    ]
    assert json.loads(files["meta.json"])["deploy_map"] == {"app": ["@ALL"]}
    entry = job_info(job)
    assert (entry.clients, entry.apps) == (None, None)
    assert "clients" not in entry.to_json() and "apps" not in entry.to_json()


def test_per_site_settings_come_from_defaults_under_the_jobs_own(tmp_path):
    text = (
        "defaults:\n  sites:\n    site-1: {script_args: --increment 5}\n    site-2: {script_args: --increment 7}\n"
        "jobs:\n  - name: j\n    script: train_full.py\n    sites: {site-2: {script_args: --increment 3}}\n"
    )
    (job,) = _jobs(tmp_path, text)
    files = _render(tmp_path, job)
    assert _executor(files, "app_site-1")["task_script_args"] == "--increment 5"
    assert _executor(files, "app_site-2")["task_script_args"] == "--increment 3"


def test_a_receiver_ships_its_server_components_to_the_server_app_and_its_client_part_to_each_client_app(tmp_path):
    text = (
        "jobs:\n  - name: m\n    script: train_metrics.py\n    receiver: {type: wandb}\n"
        "    sites: {site-2: {launch_external_process: true}}\n"
    )
    (job,) = _jobs(tmp_path, text)
    files = _render(tmp_path, job)
    assert sorted(p for p in files if "/custom/" in p) == [
        "app_server/custom/jobgen_metrics_delivery.py",
        "app_server/custom/jobgen_wandb_receiver.py",
        "app_site-1/custom/jobgen_metrics_delivery.py",
        "app_site-1/custom/train_metrics.py",
        "app_site-2/custom/jobgen_metrics_delivery.py",
        "app_site-2/custom/train_metrics.py",
    ]
    in_process = json.loads(files["app_site-1/config/config_fed_client.json"])["components"]
    sub_process = json.loads(files["app_site-2/config/config_fed_client.json"])["components"]
    assert [c["id"] for c in in_process] == ["event_to_fed", "metrics_delivery"]  # in-process events converted
    assert [c["id"] for c in sub_process] == ["metrics_delivery"]


@pytest.mark.parametrize("line", ["2.9", "2.7"])
def test_both_lines_render_a_multi_app_job(tmp_path, line):
    (job,) = _jobs(tmp_path, f'defaults: {{nvflare_version: "{line}"}}\n' + PER_SITE)
    files = _render(tmp_path, job)
    assert json.loads(files["meta.json"])["deploy_map"]["app_beta"] == ["beta"]
    assert "app_delta/config/config_fed_client.json" in files


def test_write_refuses_a_multi_app_job_without_an_apps_script(tmp_path):
    (job,) = _jobs(tmp_path, PER_SITE)
    files = _render(tmp_path, job)
    del files["app_beta/custom/train_full.py"]
    with pytest.raises(OutputError) as caught:
        write_jobs(tmp_path / "out", {"ps": files}, {"ps": job_info(job)})
    (problem,) = caught.value.problems
    assert problem.message == "executor names script 'train_full.py' but app_beta/custom/ does not hold it"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_lint_checks_every_app_of_a_multi_app_job(tmp_path):
    from generator.lint import config_files, lint
    from generator.pipeline import generate

    _jobs(tmp_path, PER_SITE)
    generate([tmp_path / "jobs.yaml"], tmp_path / "out")
    assert list(config_files(tmp_path / "out/ps")) == [
        "meta.json",
        "app_alpha/config/config_fed_client.json",
        "app_beta/config/config_fed_client.json",
        "app_delta/config/config_fed_client.json",
        "app_server/config/config_fed_server.json",
    ]
    assert lint(tmp_path / "jobs.yaml", tmp_path / "out") == []
    config = tmp_path / "out/ps/app_beta/config/config_fed_client.json"
    data = json.loads(config.read_text())
    data["executors"][0]["executor"]["args"]["task_script_arg"] = "x"
    config.write_text(json.dumps(data, indent=2))
    messages = [p.message for p in lint(tmp_path / "jobs.yaml", tmp_path / "out")]
    assert any("unexpected keyword argument 'task_script_arg'" in m for m in messages), messages


def test_a_poc_system_has_the_clients_of_every_job_it_runs():
    """``poc`` provisions ``site-1`` .. ``site-N`` for the jobs that do not name their clients (N the
    largest ``num_clients``) and every name the others give; each job then runs on its own sites only
    (``pin_sites``)."""
    from generator.admin import poc_sites
    from generator.poc import _refused
    from generator.pocsystem import counted_sites, project_yaml, sites_for

    named = ManifestEntry("2.9", 2, 1, "in_process", "train_full.py", clients=["alpha", "beta"])
    assert _refused("named", named) is None  # once refused: the POC system had site-1 .. site-N only
    three = ManifestEntry("2.9", 3, 1, "in_process", "train_full.py")
    one = ManifestEntry("2.9", 1, 1, "in_process", "train_full.py")
    other = ManifestEntry("2.9", 2, 1, "in_process", "train_full.py", clients=["beta", "site-2"])
    assert sites_for([one, named, three, other]) == ["site-1", "site-2", "site-3", "alpha", "beta"]
    assert sites_for([named]) == ["alpha", "beta"] and sites_for([one]) == ["site-1"]
    assert poc_sites(2) == ["site-1", "site-2"] and poc_sites(["alpha"]) == ["alpha"]
    assert "- name: alpha\n  org: nvidia\n  type: client\n" in project_yaml(["site-1", "alpha"], 40123)
    assert project_yaml(2, 40123) == project_yaml(["site-1", "site-2"], 40123)
    assert counted_sites(["site-1", "site-2"]) == "2 client(s)"
    assert counted_sites(["site-1", "alpha"]) == "2 client(s) (site-1, alpha)"
