"""The ``workflow`` key (FedAvg or cyclic weight transfer) and ``cross_site_eval``: rendered, recorded and judged.

``workflow: cyclic`` renders NVFlare's CyclicController with a FullModelShareableGenerator over the
NPModelPersistor (as NVFlare's CyclicRecipe exports it; the component-by-component comparison with
NVFlare's own export is in ``test_equivalence.py``). The fast tests check the rendered configs, the
manifest entry and how the judge reads the controller's records; the simulator tests run cyclic
jobs and check the final model: each site adds 1 in turn, so after R rounds with N sites the
model is the initial one + R*N, with FULL and DIFF results alike.

``cross_site_eval: true`` adds NVFlare's CrossSiteModelEval after either workflow, with an
NPModelLocator and a ValidationJsonGenerator. The fast tests check the rendered configs, the
manifest entry, the generate-time warning and the matrix reader; the simulator tests run
``train_eval.py`` (which answers the evaluate and submit_model tasks with the mean of the model)
after FedAvg and after the cyclic workflow and check every cell of the matrix, and
``train_full.py`` (which cannot answer them) and check the run FAILED naming the missing cells.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import INITIAL_MODEL, ROOT, progress_lines, shipped_defaults, simulate_project

from generator.judge import RoundTracker, cross_site_problems
from generator.layout import CROSS_VAL_RESULTS, ManifestEntry
from generator.load import load
from generator.pipeline import job_info
from generator.render import Renderer
from generator.reporter import cross_site_table
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
    _, result, results = simulate_project(project, text, timeout=600)
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
        progress = progress_lines(result.stdout, name)
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


#: An MLflow metrics job on named clients: 375 ``global_step`` points per site and round.
NAMED_METRICS = {
    "name": "sites-named-metrics",
    "script": "train_metrics.py",
    "script_args": "--epoch_seconds 0",
    "clients": ["alpha", "beta"],
    "receiver": {"type": "mlflow"},
    "expect": {"metric_points_per_site": {"global_step": 750}},
}


@pytest.fixture(scope="module")
def per_site_run(tmp_path_factory):
    """Generate and simulate the per-site jobs (2 rounds, 2 sites), as a user does."""
    project = tmp_path_factory.mktemp("sites")
    text = "defaults:\n  num_rounds: 2\n  server: {task_request_interval: 0.1}\n  task_check_period: 0.05\njobs:\n"
    text += "".join(f"  - {json.dumps(_per_site_entry(n, s))}\n" for n, (s, _) in PER_SITE.items())
    text += f"  - {json.dumps(NAMED_METRICS)}\n"
    _, result, results = simulate_project(project, text)
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


@pytest.mark.simulator
def test_metric_points_of_named_clients_are_reported_per_client(per_site_run):
    """MLflow names a site's run ``<site>-<job id>-...``: the table, ``metric_points`` and the plot
    name the client (``alpha``), not the run (a trial saw ``hospital-a-c500bc-...-run`` there)."""
    project, result, results = per_site_run
    named = results[NAMED_METRICS["name"]]
    assert named["ok"], (named, result.stdout + result.stderr)
    assert named["metric_points"] == {"alpha": {"global_step": 750}, "beta": {"global_step": 750}}
    row = next(line for line in result.stdout.splitlines() if line.startswith(NAMED_METRICS["name"] + " "))
    assert "alpha: global_step=750; beta: global_step=750" in row, result.stdout


# -- cross-site evaluation ----------------------------------------------------------------------------

CSE = "nvflare.app_common.workflows.cross_site_model_eval.CrossSiteModelEval"
LOCATOR = "nvflare.app_common.np.np_model_locator.NPModelLocator"
JSON_GENERATOR = "nvflare.app_common.widgets.validation_json_generator.ValidationJsonGenerator"
CSE_WORKFLOW = {
    "id": "cross_site_validate",
    "path": CSE,
    "args": {"model_locator_id": "model_locator", "submit_model_timeout": 600, "validation_timeout": 6000},
}
CSE_COMPONENTS = [
    {"id": "model_locator", "path": LOCATOR, "args": {"model_dir": "models", "model_name": {"server": "server.npy"}}},
    {"id": "json_generator", "path": JSON_GENERATOR, "args": {}},
]


@pytest.mark.parametrize("line", ["2.9", "2.7"])
@pytest.mark.parametrize("workflow", ["fedavg", "cyclic"])
def test_cross_site_eval_runs_after_the_training_workflow(tmp_path, line, workflow):
    text = (
        f'defaults: {{nvflare_version: "{line}", workflow: {workflow}}}\n'
        "jobs:\n  - {name: x, script: train_eval.py, cross_site_eval: true}\n"
    )
    (job,) = _jobs(tmp_path, text)
    server = _server_config(tmp_path, job)
    assert [w["path"] for w in server["workflows"]] == [FEDAVG if workflow == "fedavg" else CYCLIC, CSE]
    assert server["workflows"][1] == CSE_WORKFLOW
    own = [c for c in server["components"] if c["id"] in ("model_locator", "json_generator")]
    assert own == CSE_COMPONENTS
    assert server["components"][0]["path"] == PERSISTOR


def test_cross_site_eval_is_off_by_default(tmp_path):
    (default, off) = _jobs(
        tmp_path,
        "jobs:\n  - {name: a, script: train_eval.py}\n  - {name: b, script: train_eval.py, cross_site_eval: false}\n",
    )
    for job in (default, off):
        server = _server_config(tmp_path, job)
        assert [w["path"] for w in server["workflows"]] == [FEDAVG]
        assert [c["path"] for c in server["components"]] == [PERSISTOR]
        assert "cross_site_eval" not in job_info(job).to_json()


def test_the_manifest_says_when_a_job_evaluates_across_sites(tmp_path):
    (job,) = _jobs(tmp_path, "jobs:\n  - {name: a, script: train_eval.py, cross_site_eval: true}\n")
    entry = job_info(job).to_json()
    assert entry["cross_site_eval"] is True
    assert ManifestEntry.from_json(entry).cross_site_eval is True
    assert ManifestEntry.from_json({**entry, "cross_site_eval": False}).cross_site_eval is False


def test_the_shipped_cross_site_job_is_fedavg_then_cross_site_eval():
    (job,) = [j for j in validate(load(ROOT / "jobs.yaml")) if j.name == "np-cross-site"]
    server = json.loads(Renderer(ROOT / "client_scripts").render(job)["app/config/config_fed_server.json"])
    assert [w["path"] for w in server["workflows"]] == [FEDAVG, CSE]
    assert (job.settings["script"], job.settings["num_clients"], job.settings["num_rounds"]) == ("train_eval.py", 2, 5)
    assert not job.settings["launch_external_process"]


def _matrix(tmp_path, data) -> None:
    path = tmp_path / CROSS_VAL_RESULTS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")


def test_a_full_matrix_has_no_problem_and_is_ordered(tmp_path):
    cell = {"mean": 7.0}
    _matrix(
        tmp_path,
        {
            "site-2": {"site-2": cell, "SRV_server": cell, "site-1": cell},
            "site-1": {"site-1": cell, "site-2": cell, "SRV_server": cell},
        },
    )
    matrix, problems = cross_site_problems(tmp_path, ["site-1", "site-2"])
    assert problems == []
    assert list(matrix) == ["site-1", "site-2"]
    assert [list(row) for row in matrix.values()] == [["SRV_server", "site-1", "site-2"]] * 2


def test_missing_cells_are_named_per_evaluating_site_with_its_log(tmp_path):
    cell = {"mean": 7.0}
    _matrix(tmp_path, {"site-1": {"SRV_server": cell, "site-1": {}, "site-2": cell}})
    matrix, problems = cross_site_problems(tmp_path, ["site-1", "site-2"])
    results = tmp_path / CROSS_VAL_RESULTS
    assert problems == [
        f"cross-site evaluation: site-1 has no result for site-1 (1 of 3 models missing in {results}; "
        f"see {tmp_path}/site-1/log.txt)",
        f"cross-site evaluation: site-2 has no result for SRV_server, site-1, site-2 (3 of 3 models missing in "
        f"{results}; see {tmp_path}/site-2/log.txt)",
    ]
    assert matrix == {"site-1": {"SRV_server": cell, "site-1": {}, "site-2": cell}, "site-2": {}}


def test_no_results_file_or_a_broken_one_is_a_problem(tmp_path):
    results = tmp_path / CROSS_VAL_RESULTS
    assert cross_site_problems(tmp_path, ["site-1"]) == (
        None,
        [
            f"cross-site evaluation wrote no results: {results} is missing "
            "(NVFlare's ValidationJsonGenerator writes it when the run ends)"
        ],
    )
    _matrix(tmp_path, "[1, 2]")
    assert cross_site_problems(tmp_path, ["site-1"]) == (
        None,
        [
            f"cross-site evaluation results {results} cannot be read: "
            "not a mapping of evaluating site -> {model: metrics}"
        ],
    )
    _matrix(tmp_path, "{")
    matrix, (problem,) = cross_site_problems(tmp_path, ["site-1"])
    assert matrix is None and problem.startswith(f"cross-site evaluation results {results} cannot be read: Expecting")


def test_simulate_and_poc_judge_the_matrix_into_the_result(tmp_path):
    """``judge_cross_site`` (called by simulate and poc for a job whose manifest entry has
    ``cross_site_eval``) fills ``cross_site`` and adds one job problem per site missing a cell."""
    from generator.simulate import JobResult, judge_cross_site, result_record

    cell = {"mean": 10.0}
    _matrix(tmp_path, {"site-1": {"SRV_server": cell, "site-1": cell, "site-2": cell}})
    info = ManifestEntry("2.9", 2, 5, "in_process", "train_eval.py", cross_site_eval=True)
    result = JobResult(name="j")
    judge_cross_site(result, info, tmp_path)
    assert [(p.file, p.message) for p in result.problems] == [
        (
            "j",
            f"cross-site evaluation: site-2 has no result for SRV_server, site-1, site-2 (3 of 3 models missing in "
            f"{tmp_path / CROSS_VAL_RESULTS}; see {tmp_path}/site-2/log.txt)",
        )
    ]
    assert result_record(result)["cross_site"] == {
        "site-1": {"SRV_server": cell, "site-1": cell, "site-2": cell},
        "site-2": {},
    }


def test_the_matrix_table_has_a_row_per_site_and_a_column_per_model():
    matrix = {"site-1": {"SRV_server": {"mean": 9.0}, "site-1": {"mean": 8.0}}, "site-2": {"site-2": {"mean": 9.5}}}
    assert cross_site_table("j", matrix) == [
        "j: cross-site evaluation (each site's metrics of each model)",
        "site \\ model  SRV_server  site-1   site-2",
        "site-1        mean=9      mean=8   missing",
        "site-2        missing     missing  mean=9.5",
    ]


# -- cross-site evaluation in the simulator ------------------------------------------------------------

#: name -> (jobs.yaml options, expected final model delta, each evaluating site's row: model -> mean).
#: 2 rounds, 2 sites. FedAvg: each site's local model is the global model before the last round + 1,
#: the same as the final model (initial + 2, mean 5 + 2). Cyclic: site-1 trains first in the last
#: round (initial + 3, mean 8), site-2 last (initial + 4, the final model, mean 9).
CROSS_SITE = {
    "xs-fedavg": ({"script": "train_eval.py"}, 2, {"SRV_server": 7.0, "site-1": 7.0, "site-2": 7.0}),
    "xs-cyclic": (
        {"script": "train_eval.py", "workflow": "cyclic", "task_assignment_timeout": 60},
        4,
        {"SRV_server": 9.0, "site-1": 8.0, "site-2": 9.0},
    ),
    "xs-cannot-evaluate": ({"script": "train_full.py"}, 2, None),
}
#: The matrix lines simulate prints under its table, per job.
CROSS_SITE_LINES = {
    "xs-fedavg": [
        "site \\ model  SRV_server  site-1  site-2",
        "site-1        mean=7      mean=7  mean=7",
        "site-2        mean=7      mean=7  mean=7",
    ],
    "xs-cyclic": [
        "site \\ model  SRV_server  site-1  site-2",
        "site-1        mean=9      mean=8  mean=9",
        "site-2        mean=9      mean=8  mean=9",
    ],
    "xs-cannot-evaluate": [
        "site \\ model  SRV_server  site-1   site-2",
        "site-1        missing     missing  missing",
        "site-2        missing     missing  missing",
    ],
}


@pytest.fixture(scope="module")
def cross_site_run(tmp_path_factory):
    """Generate and simulate the :data:`CROSS_SITE` jobs (2 rounds, 2 sites, cross_site_eval), as a user does."""
    project = tmp_path_factory.mktemp("cross-site")
    text = "defaults:\n  cross_site_eval: true\n  num_rounds: 2\n  num_clients: 2\n"
    text += "  server: {task_request_interval: 0.1}\n  task_check_period: 0.05\n"
    text += "jobs:\n" + "".join(f"  - {json.dumps({'name': n, **o})}\n" for n, (o, _, _) in CROSS_SITE.items())
    generated, result, results = simulate_project(project, text)
    return project, generated, result, results


def _printed_matrix(stdout: str, name: str) -> list[str]:
    lines = stdout.splitlines()
    start = lines.index(f"{name}: cross-site evaluation (each site's metrics of each model)")
    return lines[start + 1 : start + 4]


@pytest.mark.simulator
@pytest.mark.parametrize("name", [n for n, (_, _, row) in CROSS_SITE.items() if row])
def test_cross_site_matrix_holds_every_cell(cross_site_run, name):
    project, _, result, results = cross_site_run
    _, delta, row = CROSS_SITE[name]
    model = np.load(project / "build/workspaces" / name / "server/simulate_job/models/server.npy")
    expected = np.array(INITIAL_MODEL, dtype=np.float32) + delta
    np.testing.assert_array_equal(model, expected)
    assert results[name]["ok"], results[name]
    assert results[name]["final_model"] == expected.tolist()
    cells = {model: {"mean": mean} for model, mean in row.items()}
    assert results[name]["cross_site"] == {"site-1": cells, "site-2": cells}
    assert _printed_matrix(result.stdout, name) == CROSS_SITE_LINES[name], result.stdout


@pytest.mark.simulator
def test_a_script_that_cannot_evaluate_fails_naming_the_missing_cells(cross_site_run):
    _, generated, result, results = cross_site_run
    name = "xs-cannot-evaluate"
    assert result.returncode == 1
    record = results[name]
    assert record["status"] == "FAILED"
    assert record["final_model"] == (np.array(INITIAL_MODEL) + 2).tolist()  # training itself went fine
    assert record["cross_site"] == {"site-1": {}, "site-2": {}}
    ws = f"build/workspaces/{name}"
    missing = f"SRV_server, site-1, site-2 (3 of 3 models missing in {ws}/{CROSS_VAL_RESULTS}; see {ws}"
    for site in ("site-1", "site-2"):
        line = f"{name}: cross-site evaluation: {site} has no result for {missing}/{site}/log.txt)"
        assert line in result.stderr.splitlines(), result.stderr
        assert line.removeprefix(f"{name}: ") in record["problems"]
    assert _printed_matrix(result.stdout, name) == CROSS_SITE_LINES[name], result.stdout
    # the reason comes first: the script fails on the submit_model task, which brings no params
    script = (ROOT / "client_scripts/train_full.py").read_text().splitlines()
    line = next(n for n, text in enumerate(script, 1) if 'received.params["numpy_key"]' in text)
    assert (
        record["problems"][0]
        == f"site-1, site-2: TypeError: 'NoneType' object is not subscriptable (custom/train_full.py:{line})"
    )
    # generate said so first, located at the key that asked for it
    assert (
        "jobs.yaml:2:20: defaults.cross_site_eval: warning: cross_site_eval is on but the script never calls "
        "flare.is_evaluate() or flare.is_submit_model(): it cannot answer NVFlare's cross-site evaluation tasks, "
        "and simulate will fail the job (train_eval.py answers them) (for job 'xs-cannot-evaluate')"
    ) in generated.stderr.splitlines(), generated.stderr
