"""The ``workflow`` key: FedAvg or NVFlare's cyclic weight transfer, rendered, recorded and judged.

``workflow: cyclic`` renders NVFlare's CyclicController with a FullModelShareableGenerator over the
NPModelPersistor (as NVFlare's CyclicRecipe exports it; the component-by-component comparison with
NVFlare's own export is in ``test_equivalence.py``). The fast tests check the rendered configs, the
manifest entry and how the judge reads the controller's records; the simulator tests run cyclic
jobs and check the final model: each site adds 1 in turn, so after R rounds with N sites the
model is the initial one + R*N, with FULL and DIFF results alike.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import INITIAL_MODEL, ROOT, run_cli, shipped_defaults

from generator.judge import RoundTracker
from generator.layout import ManifestEntry
from generator.load import load
from generator.pipeline import job_info
from generator.render import Renderer
from generator.validate import validate

CYCLIC = "nvflare.app_common.workflows.cyclic_ctl.CyclicController"
GENERATOR = "nvflare.app_common.shareablegenerators.full_model_shareable_generator.FullModelShareableGenerator"
PERSISTOR = "nvflare.app_common.np.np_model_persistor.NPModelPersistor"
FEDAVG = "nvflare.app_common.workflows.fedavg.FedAvg"
SERVER_CTX = "[identity=simulator_server, run=simulate_job, wf=controller]"


def _jobs(tmp_path, text: str):
    (tmp_path / "jobs.yaml").write_text(text, encoding="utf-8")
    shutil.copytree(ROOT / "client_scripts", tmp_path / "client_scripts", dirs_exist_ok=True)
    return validate(load(tmp_path / "jobs.yaml"))


def _server_config(tmp_path, job) -> dict:
    files = Renderer(tmp_path / "client_scripts").render(job)
    return json.loads(files["app/config/config_fed_server.json"])


@pytest.mark.parametrize("line", ["2.9", "2.7"])
def test_cyclic_renders_the_controller_and_its_shareable_generator(tmp_path, line):
    text = (
        f'defaults: {{nvflare_version: "{line}"}}\n'
        "jobs:\n  - {name: c, script: train_diff.py, params_transfer_type: DIFF, workflow: cyclic,"
        " num_rounds: 4, num_clients: 3, task_check_period: 0.05, task_assignment_timeout: 60}\n"
    )
    (job,) = _jobs(tmp_path, text)
    server = _server_config(tmp_path, job)
    assert server["workflows"] == [
        {
            "id": "controller",
            "path": CYCLIC,
            "args": {
                "num_rounds": 4,
                "persistor_id": "persistor",
                "shareable_generator_id": "shareable_generator",
                "task_check_period": 0.05,
                "task_assignment_timeout": 60,
            },
        }
    ]
    assert server["components"] == [
        {"id": "persistor", "path": PERSISTOR, "args": {}},
        {"id": "shareable_generator", "path": GENERATOR, "args": {}},
    ]


def test_the_shipped_cyclic_job_takes_the_shared_defaults_and_a_patient_relay():
    (job,) = [j for j in validate(load(ROOT / "jobs.yaml")) if j.name == "np-cyclic"]
    server = json.loads(Renderer(ROOT / "client_scripts").render(job)["app/config/config_fed_server.json"])
    defaults = shipped_defaults()
    assert server["workflows"][0]["path"] == CYCLIC
    assert server["workflows"][0]["args"] == {
        "num_rounds": defaults["num_rounds"],
        "persistor_id": "persistor",
        "shareable_generator_id": "shareable_generator",
        "task_check_period": defaults["task_check_period"],
        "task_assignment_timeout": 60,
    }
    assert [c["path"] for c in server["components"]] == [PERSISTOR, GENERATOR]
    assert (job.settings["num_clients"], job.settings["params_transfer_type"]) == (2, "FULL")


def test_fedavg_is_the_default_and_has_no_shareable_generator(tmp_path):
    (default, explicit) = _jobs(
        tmp_path,
        "jobs:\n  - {name: a, script: train_full.py}\n  - {name: b, script: train_full.py, workflow: fedavg}\n",
    )
    for job in (default, explicit):
        server = _server_config(tmp_path, job)
        assert [w["path"] for w in server["workflows"]] == [FEDAVG]
        assert [c["path"] for c in server["components"]] == [PERSISTOR]


def test_the_manifest_names_the_workflow_only_when_it_is_not_fedavg(tmp_path):
    (fedavg, cyclic) = _jobs(
        tmp_path,
        "jobs:\n  - {name: a, script: train_full.py}\n  - {name: b, script: train_full.py, workflow: cyclic}\n",
    )
    assert "workflow" not in job_info(fedavg).to_json()
    entry = job_info(cyclic).to_json()
    assert entry["workflow"] == "cyclic"
    assert ManifestEntry.from_json(entry).workflow == "cyclic"
    assert ManifestEntry.from_json(job_info(fedavg).to_json()).workflow == "fedavg"


def _record(logger: str, message: str, fl_ctx: str = SERVER_CTX) -> dict:
    return {"fullName": logger, "levelname": "INFO", "fl_ctx": fl_ctx, "message": message}


SCHEDULER = "nvflare.apis.impl.wf_comm_server.WFCommServer"
RUNNER = "nvflare.private.fed.server.server_runner.ServerRunner"


def _cyclic_round() -> list[dict]:
    """The INFO records a CyclicController round leaves in the server's log.json (NVFlare 2.9 and 2.7)."""
    return [
        _record(SCHEDULER, "scheduled task train"),
        _record(SCHEDULER, "task train exit with status TaskCompletionStatus.OK"),
        _record(CYCLIC, "Start persist model on server."),
        _record(CYCLIC, "End persist model on server."),
    ]


def _write_log(tmp_path, records: list[dict]):
    (tmp_path / "server").mkdir(parents=True, exist_ok=True)
    (tmp_path / "server/log.json").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return tmp_path


def test_cyclic_rounds_saves_and_end_are_read_from_nvflare_records(tmp_path):
    finished = _record(RUNNER, "Workflow: controller finalizing ...")
    ws = _write_log(tmp_path, _cyclic_round() + _cyclic_round() + [finished])
    tracker = RoundTracker(ws, num_rounds=2, workflow="cyclic")
    assert tracker.poll() == [1, 2]
    assert (tracker.rounds_started, tracker.saved_round, tracker.finished) == (2, 2, True)
    assert tracker.model_is_final and tracker.problems() == []
    # the same records do not make a FedAvg run
    fedavg = RoundTracker(ws, num_rounds=2)
    assert fedavg.poll() == []
    assert fedavg.problems() == [
        f"the FedAvg workflow never ran on the server (no record of it in {ws}/server/log.json)"
    ]


def test_cyclic_records_of_other_sites_and_workflows_are_ignored(tmp_path):
    other_workflow = "[identity=simulator_server, run=simulate_job, wf=cross_site_validate]"
    records = [
        _record(SCHEDULER, "scheduled task train", other_workflow),
        _record(SCHEDULER, "scheduled task train", "[identity=site-1, run=simulate_job, wf=controller]"),
        _record(RUNNER, "Workflow: cross_site_validate finalizing ...", other_workflow),
        _record(RUNNER, "Server runner starting ..."),
        _record("custom.train_full", "scheduled task train"),
    ]
    tracker = RoundTracker(_write_log(tmp_path, records), num_rounds=1, workflow="cyclic")
    assert tracker.poll() == []
    assert (tracker.records, tracker.rounds_started, tracker.finished) == (0, 0, False)


def _result(site: str) -> dict:
    ctx = f"[identity=simulator_server, run=simulate_job, wf=controller, peer={site}, peer_run=simulate_job]"
    return _record(RUNNER, f"got result from client {site} for task: name=train, id=1f0c", ctx)


def test_a_cyclic_round_a_site_skipped_fails_the_run(tmp_path):
    """The relay offers the task to the next site when one asks late: that round misses its update."""
    first, second = _cyclic_round(), _cyclic_round()
    records = [first[0], _result("site-1"), _result("site-2"), *first[1:]]
    records += [second[0], _result("site-2"), *second[1:], _record(RUNNER, "Workflow: controller finalizing ...")]
    tracker = RoundTracker(_write_log(tmp_path, records), num_rounds=2, workflow="cyclic", num_clients=2)
    tracker.poll()
    assert tracker.trained == {1: ["site-1", "site-2"], 2: ["site-2"]}
    assert tracker.problems() == [
        "round 2: site-1 did not train (the server got no result from it; CyclicController offers the task "
        "to the next site when one does not ask for it within task_assignment_timeout)"
    ]
    unchecked = RoundTracker(tmp_path, num_rounds=2, workflow="cyclic")  # num_clients unknown: not checked
    unchecked.poll()
    assert unchecked.problems() == []


def test_a_cyclic_run_that_ended_early_is_not_final(tmp_path):
    finished = _record(RUNNER, "Workflow: controller finalizing ...")
    ws = _write_log(tmp_path, _cyclic_round() + [finished])
    tracker = RoundTracker(ws, num_rounds=3, workflow="cyclic")
    tracker.poll()
    assert not tracker.model_is_final
    assert tracker.problems() == ["1 of 3 rounds started"]
    unfinished = RoundTracker(_write_log(tmp_path / "b", _cyclic_round()), num_rounds=1, workflow="cyclic")
    unfinished.poll()
    assert unfinished.problems() == [
        f"CyclicController did not finish round 1 (its workflow never ended in {tmp_path}/b/server/log.json)"
    ]


# -- the simulator: each site adds 1 in turn -------------------------------------------------------

SIMULATED = {
    "cyclic-full": {"script": "train_full.py", "params_transfer_type": "FULL"},
    "cyclic-diff": {"script": "train_diff.py", "params_transfer_type": "DIFF"},
}
#: A site slow to ask for its first task on a loaded machine is not skipped (NVFlare's default is 10 s).
PATIENT = "  task_assignment_timeout: 60\n"


@pytest.fixture(scope="module")
def cyclic_run(tmp_path_factory):
    """Generate and simulate two cyclic jobs (2 rounds, 2 sites), as a user does."""
    project = tmp_path_factory.mktemp("cyclic")
    text = "defaults:\n  workflow: cyclic\n  num_rounds: 2\n  num_clients: 2\n  server: {task_request_interval: 0.1}\n"
    text += PATIENT
    text += "jobs:\n" + "".join(f"  - {json.dumps({'name': n, **o})}\n" for n, o in SIMULATED.items())
    (project / "jobs.yaml").write_text(text, encoding="utf-8")
    shutil.copytree(ROOT / "client_scripts", project / "client_scripts")
    assert run_cli(project, "generate").returncode == 0
    result = run_cli(project, "simulate", timeout=600)
    results = {r["name"]: r for r in json.loads((project / "build/results.json").read_text())}
    return project, result, results


@pytest.mark.simulator
@pytest.mark.parametrize("name", sorted(SIMULATED))
def test_cyclic_final_model_is_initial_plus_rounds_times_sites(cyclic_run, name):
    project, result, results = cyclic_run
    assert result.returncode == 0, result.stdout + result.stderr
    model = np.load(project / "build/workspaces" / name / "server/simulate_job/models/server.npy")
    expected = np.array(INITIAL_MODEL, dtype=np.float32) + 2 * 2
    np.testing.assert_array_equal(model, expected)
    assert results[name]["ok"], results[name]
    assert results[name]["final_model"] == expected.tolist()
    assert results[name]["rounds_started"] == 2


@pytest.mark.simulator
def test_cyclic_progress_lines_count_rounds(cyclic_run):
    _, result, _ = cyclic_run
    for name in SIMULATED:
        progress = [line.split(" (")[0] for line in result.stdout.splitlines() if line.startswith(f"  {name}: round")]
        assert progress == [f"  {name}: round 1 of 2", f"  {name}: round 2 of 2"], result.stdout


# -- the simulator: per-site settings (sites:) and named clients (clients:) ------------------------

#: Jobs whose sites differ; with 2 rounds each final model is checked exactly. FedAvg weighs each
#: result by its NUM_STEPS_CURRENT_ROUND meta, 1 when absent as here (``_get_num_steps_weight``,
#: nvflare/app_common/workflows/base_fedavg.py): +1 and +3 average to +2 a round. Cyclic relays the
#: model through both sites each round: +1 then +3, +4 a round.
PER_SITE = {
    "sites-full": ({"script": "train_full.py"}, 2 * 2),
    "sites-diff-mixed-modes": (
        {
            "script": "train_diff.py",
            "params_transfer_type": "DIFF",
            "sites": {"site-2": {"script_args": "--increment 3", "launch_external_process": True}},
        },
        2 * 2,
    ),
    "sites-named": ({"script": "train_full.py", "clients": ["alpha", "beta"]}, 2 * 2),
    "sites-named-cyclic": (
        {"script": "train_full.py", "clients": ["alpha", "beta"], "workflow": "cyclic", "task_assignment_timeout": 60},
        2 * (1 + 3),
    ),
}
_INCREMENTS = {"site-1": "--increment 1", "site-2": "--increment 3", "alpha": "--increment 1", "beta": "--increment 3"}


def _per_site_entry(name: str, settings: dict) -> dict:
    sites = {site: {"script_args": _INCREMENTS[site]} for site in settings.get("clients", ["site-1", "site-2"])}
    for site, own in settings.get("sites", {}).items():
        sites[site] = {**sites[site], **own}
    return {"name": name, **settings, "sites": sites}


@pytest.fixture(scope="module")
def per_site_run(tmp_path_factory):
    """Generate and simulate the per-site jobs (2 rounds, 2 sites), as a user does."""
    project = tmp_path_factory.mktemp("sites")
    text = "defaults:\n  num_rounds: 2\n  server: {task_request_interval: 0.1}\n  task_check_period: 0.05\njobs:\n"
    text += "".join(f"  - {json.dumps(_per_site_entry(n, s))}\n" for n, (s, _) in PER_SITE.items())
    (project / "jobs.yaml").write_text(text, encoding="utf-8")
    shutil.copytree(ROOT / "client_scripts", project / "client_scripts")
    generated = run_cli(project, "generate")
    assert generated.returncode == 0, generated.stderr
    result = run_cli(project, "simulate", timeout=900)
    results = {r["name"]: r for r in json.loads((project / "build/results.json").read_text())}
    return project, result, results


@pytest.mark.simulator
@pytest.mark.parametrize("name", sorted(PER_SITE))
def test_per_site_increments_move_the_final_model_exactly(per_site_run, name):
    project, result, results = per_site_run
    assert results[name]["ok"], (results[name], result.stdout + result.stderr)
    model = np.load(project / "build/workspaces" / name / "server/simulate_job/models/server.npy")
    expected = np.array(INITIAL_MODEL, dtype=np.float32) + PER_SITE[name][1]
    np.testing.assert_array_equal(model, expected)
    assert results[name]["final_model"] == expected.tolist()
    assert results[name]["rounds_started"] == 2


@pytest.mark.simulator
@pytest.mark.parametrize("name", ["sites-named", "sites-named-cyclic"])
def test_named_clients_are_the_simulated_sites_each_running_its_own_app(per_site_run, name):
    project, _, _ = per_site_run
    workspace = project / "build/workspaces" / name
    meta = json.loads((project / "build/jobs" / name / "meta.json").read_text())
    assert meta["deploy_map"] == {"app_server": ["server"], "app_alpha": ["alpha"], "app_beta": ["beta"]}
    assert not list(workspace.glob("site-*"))
    for site, args in (("alpha", "--increment 1"), ("beta", "--increment 3")):
        deployed = workspace / site / "simulate_job"
        assert [p.name for p in deployed.glob("app_*")] == [f"app_{site}"]
        config = json.loads((deployed / f"app_{site}/config/config_fed_client.json").read_text())
        assert config["executors"][0]["executor"]["args"]["task_script_args"] == args
