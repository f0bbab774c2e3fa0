"""``workflow_args`` and ``executor_args``: more keyword arguments of the generated controller and
Client API executor, for what no key writes (trial 46: FedAvg's ``stop_cond`` and the executor's
``memory_gc_rounds`` had no way, and the job stayed with FedJob).

The fast tests check what is rendered, what is refused (the arguments the generator writes itself),
how lint locates a typo, and how the judge reads FedAvg's early stop from its records; the simulator
test runs FedAvg with a ``stop_cond`` that ``train_full.py``'s ``accuracy`` (100) meets after round 1,
and one it never meets, and checks the rounds and the best model each ended with.
"""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import ROOT, simulate_project

from generator.judge import FEDAVG_LOGGER, RoundTracker
from generator.load import load
from generator.render import Renderer
from generator.validate import validate

SERVER_CTX = "[identity=simulator_server, run=simulate_job, wf=controller]"


def _rendered(tmp_path, text: str) -> dict:
    (tmp_path / "jobs.yaml").write_text(text, encoding="utf-8")
    shutil.copytree(ROOT / "client_scripts", tmp_path / "client_scripts", dirs_exist_ok=True)
    (job,) = validate(load(tmp_path / "jobs.yaml"))
    files = Renderer(tmp_path / "client_scripts").render(job)
    return {name: json.loads(files[name]) for name in files if name.endswith(".json")}


@pytest.mark.parametrize("line", ["2.9", "2.7"])
@pytest.mark.parametrize("external", [False, True])
def test_extra_args_are_added_to_the_generated_controller_and_executor(tmp_path, line, external):
    text = (
        f'defaults: {{nvflare_version: "{line}"}}\n'
        f"jobs:\n  - {{name: a, script: train_full.py, launch_external_process: {str(external).lower()},"
        " workflow_args: {stop_cond: 'accuracy >= 80', patience: 2}, executor_args: {memory_gc_rounds: 1}}\n"
    )
    configs = _rendered(tmp_path, text)
    (workflow,) = configs["app/config/config_fed_server.json"]["workflows"]
    assert workflow["path"] == "nvflare.app_common.workflows.fedavg.FedAvg"
    assert list(workflow["args"])[-2:] == ["stop_cond", "patience"]  # after the generated ones
    assert (workflow["args"]["stop_cond"], workflow["args"]["patience"], workflow["args"]["num_rounds"]) == (
        "accuracy >= 80",
        2,
        5,
    )
    (executor,) = configs["app/config/config_fed_client.json"]["executors"]
    assert executor["executor"]["args"]["memory_gc_rounds"] == 1


def test_a_launch_constant_may_be_changed_in_place(tmp_path):
    text = (
        "jobs:\n  - {name: a, script: train_full.py, launch_external_process: true,"
        " executor_args: {launch_timeout: 60, launch_once: false}}\n"
    )
    args = _rendered(tmp_path, text)["app/config/config_fed_client.json"]["executors"][0]["executor"]["args"]
    assert (args["launch_timeout"], args["launch_once"]) == (60, False)
    assert list(args).index("launch_timeout") < list(args).index("params_transfer_type")  # where it was


def test_the_arguments_the_generator_writes_are_refused_with_the_key_to_set(project, cli):
    (project / "jobs.yaml").write_text(
        "jobs:\n  - name: a\n    script: train_full.py\n"
        "    workflow_args: {num_rounds: 3, persistor_id: mine}\n"
        "    executor_args: {task_script_args: --lr 1, server_expected_format: pytorch}\n"
        "  - name: c\n    script: train_full.py\n    workflow: cyclic\n    num_clients: 2\n"
        "    workflow_args: {task_assignment_timeout: 60, order: RANDOM}\n"
    )
    code, _, err = cli("generate")
    assert code == 2
    assert err == [
        "jobs.yaml:4:21: jobs[0] (a).workflow_args.num_rounds: num_rounds is written by the generator from the "
        "job's num_rounds: set num_rounds (a key of the job) instead",
        "jobs.yaml:4:36: jobs[0] (a).workflow_args.persistor_id: persistor_id is written by the generator "
        "('persistor'), which the job needs as generated: leave it out",
        "jobs.yaml:5:21: jobs[0] (a).executor_args.task_script_args: task_script_args is written by the generator "
        "from the job's script_args: set script_args (a key of the job) instead",
        "jobs.yaml:5:47: jobs[0] (a).executor_args.server_expected_format: server_expected_format is written by the "
        "generator ('numpy'), which the job needs as generated: leave it out",
        "jobs.yaml:10:21: jobs[1] (c).workflow_args.task_assignment_timeout: task_assignment_timeout is written by "
        "the generator from the job's task_assignment_timeout: set task_assignment_timeout (a key of the job) "
        "instead",
    ]
    assert not (project / "build").exists()


def test_lint_locates_an_extra_argument_the_class_does_not_take(project, cli):
    (project / "jobs.yaml").write_text(
        "jobs:\n  - name: a\n    script: train_full.py\n    workflow_args: {stop_cnd: accuracy >= 80}\n"
        "    executor_args: {memory_gc_roundz: 1}\n"
    )
    assert cli("generate")[0] == 0
    code, _, err = cli("lint")
    assert code == 2
    assert [line.split(" (in ")[0] for line in err] == [
        "jobs.yaml:4:31: jobs[0] (a).workflow_args.stop_cnd: nvflare.app_common.workflows.fedavg.FedAvg: got an "
        "unexpected keyword argument 'stop_cnd'; did you mean 'stop_cond'?",
        "jobs.yaml:5:39: jobs[0] (a).executor_args.memory_gc_roundz: "
        "nvflare.app_common.executors.client_api_executor.ClientAPIExecutor: got an unexpected keyword argument "
        "'memory_gc_roundz'; did you mean 'memory_gc_rounds'?",
    ]


def _record(message: str) -> dict:
    return {"fullName": FEDAVG_LOGGER, "levelname": "INFO", "fl_ctx": SERVER_CTX, "message": message}


def _saved() -> dict:
    return {
        "fullName": FEDAVG_LOGGER,
        "levelname": "INFO",
        "fl_ctx": SERVER_CTX,
        "message": "End persist model on server.",
    }


def _tracker(tmp_path, records: list[dict], num_rounds: int) -> RoundTracker:
    (tmp_path / "server").mkdir(parents=True, exist_ok=True)
    (tmp_path / "server/log.json").write_text("".join(json.dumps(r) + "\n" for r in records))
    tracker = RoundTracker(tmp_path, num_rounds=num_rounds)
    tracker.poll()
    return tracker


def test_the_judge_takes_an_early_stop_and_the_best_model(tmp_path):
    """FedAvg with stop_cond logs each round's global metrics and saves only a better model; at the
    stop it logs where (the records as NVFlare 2.9's ``fedavg.py`` writes them)."""
    round_0 = [_record("Round 0 started."), _record("Round 0 global metrics: {'accuracy': 100}")]
    stopped = [_record("New best model found."), _saved(), _record("Early stop condition satisfied: accuracy >= 50")]
    stopped += [_record("Stopping at round=0 out of total_rounds=4."), _record("Finished FedAvg.")]
    tracker = _tracker(tmp_path / "a", round_0 + stopped, num_rounds=4)
    assert (tracker.rounds_started, tracker.stopped_round, tracker.saved_round, tracker.best_model) == (1, 1, 1, True)
    assert tracker.model_is_final and tracker.problems() == []

    # never met: every round runs, and the best model (round 1's) is the final one
    records = round_0 + [_record("New best model found."), _saved()]
    records += [_record("Round 1 started."), _record("Round 1 global metrics: {'accuracy': 100}")]
    records += [_record("Finished FedAvg.")]
    tracker = _tracker(tmp_path / "b", records, num_rounds=2)
    assert (tracker.rounds_started, tracker.stopped_round, tracker.saved_round) == (2, 0, 1)
    assert tracker.model_is_final and tracker.problems() == []

    # without early stopping a model saved before the last round is not final, as before
    plain = [_record("Round 0 started."), _saved(), _record("Round 1 started."), _record("Finished FedAvg.")]
    tracker = _tracker(tmp_path / "c", plain, num_rounds=2)
    assert not tracker.model_is_final


@pytest.mark.simulator
def test_fedavg_stops_early_when_stop_cond_is_met_and_keeps_the_best_model(tmp_path):
    text = (
        "defaults:\n  server: {task_request_interval: 0.1}\n  task_check_period: 0.05\n"
        "jobs:\n"
        "  - {name: met, script: train_full.py, num_rounds: 4, workflow_args: {stop_cond: 'accuracy >= 50'}}\n"
        "  - {name: never, script: train_full.py, num_rounds: 3,"
        " workflow_args: {stop_cond: 'accuracy >= 200', patience: 5}, executor_args: {memory_gc_rounds: 1}}\n"
    )
    _, result, results = simulate_project(tmp_path, text, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    met, never = results["met"], results["never"]
    after_one = [[2, 3, 4], [5, 6, 7], [8, 9, 10]]  # the initial model + 1: train_full.py's round
    assert (met["ok"], met["rounds_started"], met["stopped_round"], met["final_model"]) == (True, 1, 1, after_one)
    # accuracy stays 100, so no later round is better: round 1's model is the best, and the final one
    assert (never["ok"], never["rounds_started"], never["stopped_round"]) == (True, 3, 0)
    assert (never["final_model"], never["model_round"]) == (after_one, 1)
    assert "1/4 (stopped early)" in result.stdout
    assert "best (round 1): [[2 3 4], [5 6 7], [8 9 10]]" in result.stdout


def test_what_the_run_or_its_judging_needs_is_refused_and_set_words_are_warned_of(project, cli):
    # trial 49: start_round, task_name and train_task_name were taken; launch_once=no became the text "no"
    (project / "jobs.yaml").write_text(
        "jobs:\n  - name: a\n    script: train_full.py\n    workflow_args: {start_round: 2, task_name: bar}\n"
        "    executor_args: {train_task_name: foo}\n"
    )
    code, _, err = cli("validate")
    assert code == 2 and [line.split(": ", 2)[1] for line in err] == [
        "jobs[0] (a).workflow_args.start_round",
        "jobs[0] (a).workflow_args.task_name",
        "jobs[0] (a).executor_args.train_task_name",
    ]
    assert "start_round cannot be changed here: simulate and poc count the rounds from 0" in err[0]
    (project / "jobs.yaml").write_text("jobs:\n  - {name: a, script: train_full.py, launch_external_process: true}\n")
    code, _, err = cli("validate", "--set", "jobs.a.executor_args.launch_once=no", "--set", "jobs.a.workflow_args.x=")
    assert (code, err) == (
        0,
        [
            "--set #1: jobs.a.executor_args.launch_once: warning: 'no' is text here (a --set value is read as YAML "
            "1.2): write true or false for a boolean",
            "--set #2: jobs.a.workflow_args.x: warning: an empty value is null: the class gets None (write the value)",
        ],
    )


def test_a_matrix_may_not_vary_the_mapping_beside_one_of_its_keys(project, cli):
    # trial 49: both axes made two jobs named after values neither ran with
    (project / "jobs.yaml").write_text(
        "jobs:\n  - name: e\n    script: train_full.py\n    matrix:\n"
        "      executor_args: [{memory_gc_rounds: 1}, {memory_gc_rounds: 2}]\n"
        "      executor_args.memory_gc_rounds: [3]\n"
    )
    code, _, err = cli("validate")
    assert code == 2 and err == [
        'jobs.yaml:6:7: jobs[0] (e).matrix["executor_args.memory_gc_rounds"]: executor_args.memory_gc_rounds is '
        "inside the matrix key executor_args, whose values set all of executor_args: each job would get two values "
        "for executor_args.memory_gc_rounds, and its name one that it does not run with; keep one of the two keys"
    ]


def test_lint_places_a_later_files_or_a_sets_extra_argument_where_it_was_written_once(project, cli):
    # trial 49: a later file's typo was placed at the first file's line of that number, once per job
    (project / "base.yaml").write_text(
        "jobs:\n  - {name: a, script: train_full.py}\n"
        "  - {name: b, script: train_full.py, workflow_args: {patience: 2}}\n"
    )
    (project / "lab.yaml").write_text("defaults: {workflow_args: {patince: 1}}\n")
    files = ["--jobs", "base.yaml", "--jobs", "lab.yaml", "--out", "build/l"]
    assert cli("generate", *files)[0] == 0
    code, _, err = cli("lint", *files)
    assert code == 2 and len(err) == 1
    assert err[0].startswith("lab.yaml:1:37: defaults.workflow_args.patince: nvflare.app_common.workflows.fedavg.")
    assert err[0].endswith("(and 1 more config)")
    assert cli("generate", "--jobs", "base.yaml", "--out", "build/s", "--set", "jobs.a.workflow_args.patince=1")[0] == 0
    err = cli("lint", "--jobs", "base.yaml", "--out", "build/s", "--set", "jobs.a.workflow_args.patince=1")[2]
    assert len(err) == 1 and err[0].startswith("--set #1: jobs.a.workflow_args.patince: ")


def test_a_stop_in_the_last_round_is_not_an_early_one_in_the_table():
    from generator.reporter import table
    from generator.simulate import JobResult

    rows = table(
        [
            JobResult("early", ok=True, status="ok", rounds=5, rounds_started=1, stopped_round=1),
            JobResult("last", ok=True, status="ok", rounds=3, rounds_started=3, stopped_round=3),
        ]
    )
    assert "1/5 (stopped early)" in rows[1] and "3/3 " in rows[2] + " " and "stopped" not in rows[2]
