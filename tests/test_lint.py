"""``python -m generator lint``: generated configs checked against the installed nvflare.

The CLI runs in-process here (``generator.cli.main``; nvflare is imported once per test session);
a subprocess checks that ``generate`` itself never imports nvflare.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, shipped_jobs, snapshot

from generator import components, render
from generator.cli import main
from generator.lint import check_args

SERVER = "app/config/config_fed_server.json"
CLIENT = "app/config/config_fed_client.json"
LOCATED = re.compile(r"^[^:]+:\d+:\d+: ")


@pytest.fixture
def generated(project, monkeypatch, capsys):
    """The shipped jobs generated into ``project/build/jobs``; the working folder is ``project``."""
    monkeypatch.chdir(project)
    assert main(["generate"]) == 0
    capsys.readouterr()
    return project / "build" / "jobs"


def lint(capsys) -> tuple[int, list[str], str]:
    code = main(["lint"])
    out, err = capsys.readouterr()
    return code, err.splitlines(), out


def edit_json(path, change) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def test_shipped_jobs_pass_lint(generated, capsys):
    before = snapshot(generated.parent)
    code, err, out = lint(capsys)
    assert (code, err) == (0, [])
    assert "every component imports and its args fit the installed nvflare" in out
    assert snapshot(generated.parent) == before  # lint writes nothing


def test_wrong_class_path_is_reported_at_the_generated_file(generated, capsys):
    server = generated / "np-full-in-process" / SERVER

    def corrupt(data):
        data["workflows"][0]["path"] = "nvflare.app_common.workflows.fedavg.FedAvgg"

    edit_json(server, corrupt)
    code, err, _ = lint(capsys)
    assert code == 2
    assert (
        f"{server.relative_to(generated.parent.parent)}: edited: not what jobs.yaml generates now, and not the "
        "file generate wrote: move it away, then run `make generate`" in err
    )
    assert (
        "build/jobs/np-full-in-process/app/config/config_fed_server.json:7:5: workflows[0]: "
        "nvflare.app_common.workflows.fedavg has no class 'FedAvgg'; did you mean 'FedAvg'?"
    ) in err
    assert all(LOCATED.match(line) or ": edited: " in line for line in err)


def test_unknown_arg_is_reported_even_when_passed_on_through_kwargs(generated, capsys):
    # FedAvg(**kwargs) -> BaseFedAvg(**kwargs) -> ModelController(**kwargs) -> BaseModelController: no 'bogus'
    edit_json(generated / "np-diff-in-process" / SERVER, lambda d: d["workflows"][0]["args"].update(bogus=1))
    edit_json(
        generated / "np-diff-in-process" / CLIENT, lambda d: d["executors"][0]["executor"]["args"].update(task_scrpt=1)
    )
    code, err, _ = lint(capsys)
    assert code == 2
    located = [line for line in err if ": edited: " not in line]
    assert located == [
        "build/jobs/np-diff-in-process/app/config/config_fed_client.json:8:19: executors[0].executor: "
        "nvflare.app_common.executors.client_api_executor.ClientAPIExecutor: got an unexpected keyword argument "
        "'task_scrpt'; did you mean 'task_script_path'?",
        "build/jobs/np-diff-in-process/app/config/config_fed_server.json:7:5: workflows[0]: "
        "nvflare.app_common.workflows.fedavg.FedAvg: got an unexpected keyword argument 'bogus' (it accepts: "
        "model, save_filename, aggregator, stop_cond, patience, task_name, exclude_vars, aggregation_weights, "
        "enable_tensor_disk_offload, fedprox_mu, num_clients, num_rounds, start_round, memory_gc_rounds, "
        "persistor_id, ignore_result_error, allow_empty_global_weights, task_check_period)",
    ]


def test_missing_required_arg_and_broken_json_are_reported(generated, capsys):
    edit_json(
        generated / "np-metrics-in-process" / CLIENT,
        lambda d: d["components"][0]["args"].pop("events_to_convert"),
    )
    (generated / "np-full-sub-process" / "meta.json").write_text('{"name": "x",\n  "min_clients": }\n')
    code, err, _ = lint(capsys)
    assert code == 2
    assert (
        "build/jobs/np-full-sub-process/meta.json:2:18: not valid JSON: Expecting value" in err
        and "build/jobs/np-metrics-in-process/app/config/config_fed_client.json:24:5: components[0]: "
        "nvflare.app_common.widgets.convert_to_fed_event.ConvertToFedEvent: missing a required argument: "
        "'events_to_convert' (it accepts: events_to_convert, fed_event_prefix)"
        in err
    ), err


def test_a_class_outside_nvflare_is_never_imported(generated, capsys):
    (generated.parent.parent / "evil.py").write_text("open('pwned', 'w').close()\nclass X: pass\n")
    edit_json(generated / "np-full-in-process" / SERVER, lambda d: d["components"][0].update(path="evil.X"))
    code, err, _ = lint(capsys)
    assert code == 2
    assert (
        "build/jobs/np-full-in-process/app/config/config_fed_server.json:19:5: components[0]: "
        "'evil.X' is neither an nvflare class nor one the generator ships: lint imports nothing else"
    ) in err
    assert not (generated.parent.parent / "pwned").exists()
    assert "evil" not in sys.modules


def test_missing_or_stale_output_says_make_generate(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    code, err, _ = lint(capsys)
    assert (code, err) == (2, ["build/jobs: no generated jobs here: run `make generate` first"])

    assert main(["generate"]) == 0
    text = (project / "jobs.yaml").read_text()
    (project / "jobs.yaml").write_text(
        text.replace("num_rounds: 5 ", "num_rounds: 4 ").replace("np-diff-in", "np-dif-in")
    )
    capsys.readouterr()
    code, err, _ = lint(capsys)
    assert code == 2
    assert "build/jobs/np-dif-in-process: job 'np-dif-in-process' is not generated yet: run `make generate`" in err
    assert "build/jobs/np-diff-in-process: job 'np-diff-in-process' is not in jobs.yaml: run `make generate`" in err
    assert (
        "build/jobs/np-full-in-process/app/config/config_fed_server.json: changed: "
        "not what jobs.yaml generates now: run `make generate`"
    ) in err


def test_an_invalid_jobs_file_is_reported_like_generate_does(generated, capsys):
    (generated.parent.parent / "jobs.yaml").write_text(
        "jobs:\n  - name: a\n    script: train_full.py\n    num_round: 3\n"
    )
    code, err, _ = lint(capsys)
    assert (code, err) == (
        2,
        ["jobs.yaml:4:5: jobs[0] (a).num_round: unknown key 'num_round'; did you mean 'num_rounds'?"],
    )


def test_a_template_bug_is_reported_at_the_jobs_yaml_key(project, monkeypatch, capsys):
    """When the files on disk are what jobs.yaml renders, a problem points at the key behind it.

    The bug is a wrong argument name in two rows of the component table (what render builds each
    component's ``args`` from): the FedAvg workflow's and the MLflow receiver's.
    """

    def renamed(row, old, new):
        return dataclasses.replace(row, args={new if k == old else k: v for k, v in row.args.items()})

    table = components.LINES["2.9"]
    monkeypatch.setitem(table.workflows, "fedavg", renamed(table.workflows["fedavg"], "num_rounds", "num_round"))
    monkeypatch.setitem(table.receivers, "mlflow", renamed(table.receivers["mlflow"], "kw_args", "kwargs"))
    monkeypatch.chdir(project)
    assert main(["generate"]) == 0
    capsys.readouterr()
    code, err, _ = lint(capsys)
    assert code == 2
    mlflow_jobs = [j for j in shipped_jobs() if (j.get("receiver") or {}).get("type") == "mlflow"]
    fedavg_jobs = [j for j in shipped_jobs() if j.get("workflow", "fedavg") == "fedavg"]

    def configs(line: str) -> int:  # a problem at one place of jobs.yaml is given once, counting the configs
        more = re.search(r"\(and (\d+) more configs?\)$", line)
        return 1 + (int(more.group(1)) if more else 0)

    assert sum(map(configs, err)) == len(fedavg_jobs) + len(mlflow_jobs)  # every job's FedAvg, every MLflowReceiver
    (defaults,) = [line for line in err if line.startswith("jobs.yaml:11:15: defaults.num_rounds: ")]
    assert "FedAvg: got an unexpected keyword argument 'num_round'; did you mean 'num_rounds'? (in " in defaults
    assert [line for line in err if "np-metrics-in-process" in line] == [
        "jobs.yaml:38:7: jobs[2] (np-metrics-in-process).receiver: "
        "nvflare.app_opt.tracking.mlflow.mlflow_receiver.MLflowReceiver: "
        "got an unexpected keyword argument 'kwargs'; did you mean 'kw_args'? "
        "(in build/jobs/np-metrics-in-process/app/config/config_fed_server.json:25:5, components[1])",
    ]


class _Base:
    def __init__(self, a, b=1):
        pass


class _Forwards(_Base):
    def __init__(self, *args, c=2, **kwargs):
        super().__init__(*args, **kwargs)


class _Keeps(_Base):
    def __init__(self, c=2, **kwargs):
        self.extra = kwargs
        super().__init__(1)


def test_check_args_follows_kwargs_only_when_they_are_passed_on():
    assert check_args(_Base, {"a": 1})[0] is None
    assert check_args(_Base, {"b": 1})[0] == "missing a required argument: 'a'"
    assert check_args(_Forwards, {"a": 1, "c": 3})[0] is None
    error, unknown, accepted = check_args(_Forwards, {"a": 1, "z": 3})
    assert (error, unknown, accepted) == ("got an unexpected keyword argument 'z'", ["z"], ["c", "a", "b"])
    assert check_args(_Keeps, {"anything": 1})[0] is None


def test_generate_validate_and_check_never_import_nvflare(project):
    """Only lint and simulate may import nvflare (or mlflow, numpy): generating must stay fast."""
    code = (
        "import sys\n"
        "from generator.cli import main\n"
        "codes = [main(['validate']), main(['generate']), main(['generate', '--check'])]\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'nvflare', 'mlflow', 'numpy', 'torch'})\n"
        "print(codes, heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.stdout.splitlines()[-1] == "[0, 0, 0] []", result.stdout + result.stderr


def test_a_job_for_the_other_nvflare_line_is_told_where_to_lint_it(project, monkeypatch, capsys):
    """A ``nvflare_version: "2.7"`` job under NVFlare 2.9 (or the reverse): NVFlare's classes differ
    between lines, so lint names the line to lint it with, not each class the installed nvflare
    lacks (trial 49: eight ModuleNotFoundError lines, and no word of the line)."""
    other = "2.7" if render.DEFAULT_LINE == "2.9" else "2.9"
    (project / "jobs.yaml").write_text(
        f'jobs:\n  - name: a\n    script: train_full.py\n    nvflare_version: "{other}"\n'
    )
    monkeypatch.chdir(project)
    assert main(["generate"]) == 0
    capsys.readouterr()
    code, err, _ = lint(capsys)
    where = " (the project's .venv-nvflare27, made by make setup27)" if other == "2.7" else ""
    assert (code, err) == (
        2,
        [
            f"build/jobs/a: generated for NVFlare {other}, and the installed nvflare is of the "
            f"{render.DEFAULT_LINE} line: lint it where NVFlare {other} is installed{where}"
        ],
    )


def test_lint_reads_which_key_feeds_an_argument_from_the_component_table():
    keys = components.keys_by_class()
    mlflow_key, mlflow_args = keys["nvflare.app_opt.tracking.mlflow.mlflow_receiver.MLflowReceiver"]
    assert mlflow_key == ("receiver",)
    assert mlflow_args == {
        "tracking_uri": ("receiver", "tracking_uri"),
        "kw_args": ("receiver",),  # a mapping of receiver keys: their common prefix
        "artifact_location": ("receiver", "artifact_location"),
        "events": ("receiver", "events"),
        "buffer_flush_time": ("receiver", "buffer_flush_time"),
    }
    executor_key, executor_args = keys["nvflare.app_common.executors.client_api_executor.ClientAPIExecutor"]
    assert executor_key == ()  # every job has one: reported at the job entry
    assert executor_args["execution_mode"] == ("launch_external_process",)
    assert executor_args["command"] == ("command",)
    assert executor_args["task_script_path"] == ("script",)
    assert "server_expected_format" not in executor_args  # a constant: no key behind it


def test_for_other_files_lint_names_the_generate_command_of_those_files(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    (project / "lab.yaml").write_text("jobs:\n  - name: np-full-in-process\n    num_rounds: 2\n")
    args = ["--jobs", "jobs.yaml", "--jobs", "lab.yaml", "--out", "build/lab", "--set", "defaults.num_clients=3"]
    assert main(["generate", "--jobs", "jobs.yaml", "--out", "build/lab"]) == 0
    capsys.readouterr()
    assert main(["lint", *args]) == 2
    err = capsys.readouterr().err.splitlines()
    fix = "python -m generator generate --jobs jobs.yaml --jobs lab.yaml --out build/lab --set defaults.num_clients=3"
    assert err and all(f"run `{fix}`" in line for line in err), err


def test_lint_job_checks_only_the_selected_jobs_folders(project, monkeypatch, capsys):
    """``lint --job`` (names, matrix names as written, patterns, as ``generate --job``): a folder of
    ``--out`` made from another jobs file, or broken, is left alone unless selected (trial 44: lint
    had no ``--job``, so a folder mixing two files' jobs could not be linted against either)."""
    monkeypatch.chdir(project)
    (project / "mine.yaml").write_text("jobs:\n  - name: mine\n    script: train_full.py\n")
    assert main(["generate", "--job", "np-full-*"]) == 0
    assert main(["generate", "--jobs", "mine.yaml", "--job", "mine"]) == 0
    out = project / "build/jobs"
    edit_json(out / "mine" / SERVER, lambda data: data["workflows"][0].update(path="nvflare.NoSuchController"))
    capsys.readouterr()

    assert main(["lint", "--job", "np-full-*"]) == 0
    stdout, err = capsys.readouterr()
    assert err == "" and "build/jobs (the jobs --job selects): every component imports" in stdout

    assert main(["lint"]) == 2  # unselected: mine's folder is not in jobs.yaml, the other jobs not generated
    err = capsys.readouterr().err.splitlines()
    # trials 46, 47: the advice was a generate of jobs.yaml into the folder, which removes mine
    assert (
        "build/jobs/mine: job 'mine' was generated from mine.yaml, not jobs.yaml: lint with `python -m generator "
        "lint --jobs mine.yaml --job mine --out build/jobs`" in err
    )
    assert (
        "build/jobs/np-diff-in-process: job 'np-diff-in-process' is not generated yet: run `make generate` with --job "
        "for the jobs you mean (without --job, generate removes mine, generated from other files)" in err
    )
    assert not any("NoSuchController" in line for line in err)  # mine's configs: for its own lint

    assert main(["lint", "--jobs", "mine.yaml", "--job", "mine"]) == 2
    edited, bad_class = capsys.readouterr().err.splitlines()  # only mine's folder
    assert edited.startswith("build/jobs/mine/app/config/config_fed_server.json: edited: not what mine.yaml")
    assert edited.endswith("run `python -m generator generate --jobs mine.yaml --job mine --out build/jobs`")
    assert bad_class.startswith("build/jobs/mine/app/config/config_fed_server.json:")
    assert "NoSuchController" in bad_class

    assert main(["lint", "--job", "np-diff-in-process"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "job 'np-diff-in-process' is not generated yet: run `python -m generator generate" in line
    assert "--job np-diff-in-process" in line

    assert main(["lint", "--job", "np-fulll-in-process"]) == 2
    err = capsys.readouterr().err
    assert "--job 'np-fulll-in-process'" in err and "did you mean 'np-full-in-process'" in err


def test_lint_tells_to_move_a_stray_file_away_not_to_generate(project, monkeypatch, capsys):
    # trial 48: lint said "run generate" for a file generate then refused the folder for
    monkeypatch.chdir(project)
    assert main(["generate", "--job", "np-cyclic"]) == 0
    (project / "build/jobs/np-cyclic/NOTES.txt").write_text("mine")
    capsys.readouterr()
    assert main(["lint", "--job", "np-cyclic"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "build/jobs/np-cyclic/NOTES.txt: unexpected: not a file generate wrote, and generate refuses a job folder "
        "that holds it: move it away"
    ]


def test_lint_of_jobs_generated_with_a_set_names_the_lint_with_that_set(project, monkeypatch, capsys):
    # trial 46: lint without the --set the folder was generated with advised a generate that drops it
    monkeypatch.chdir(project)
    assert main(["generate", "--job", "np-full-*", "--set", "defaults.num_clients=3"]) == 0
    capsys.readouterr()
    assert main(["lint", "--job", "np-full-*"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "build/jobs: 2 jobs (np-full-in-process, np-full-sub-process) were generated from jobs.yaml with --set "
        "defaults.num_clients=3, not jobs.yaml: lint with `python -m generator lint --jobs jobs.yaml --out "
        "build/jobs --set defaults.num_clients=3`, or run `python -m generator generate --jobs jobs.yaml --job "
        "'np-full-*' --out build/jobs` to make them from jobs.yaml"
    ]
    assert main(["lint", "--set", "defaults.num_clients=3", "--job", "np-full-*"]) == 0


def test_make_simulate_poc_and_submit_warn_when_the_folders_are_not_what_the_jobs_file_generates(project):
    """The first line of their recipes (the Makefile's STALE_NOTE), run as make runs it: silent when
    the folders are up to date, a warning when they are stale or the jobs file does not generate."""
    jobs, out = project / "jobs.yaml", project / "build/jobs"
    (project / "now.yaml").write_text(jobs.read_text())
    assert main(["generate", "--jobs", str(project / "now.yaml"), "--out", str(out)]) == 0
    bin_dir = str(Path(sys.executable).parent)
    warnings = {}
    for target in ("simulate", "poc", "submit"):
        for case, name, text in (
            ("up to date", "now.yaml", jobs.read_text()),
            ("stale", "now.yaml", jobs.read_text().replace("num_rounds: 5 ", "num_rounds: 4 ")),
            ("broken", "now.yaml", "jobs:\n  - name: x\n"),
            ("other file", "other.yaml", "jobs:\n  - {name: x, script: train_full.py}\n"),
        ):
            (project / name).write_text(text)
            dry = subprocess.run(
                [
                    "make",
                    "-n",
                    "--no-print-directory",
                    target,
                    f"JOBS={project / name}",
                    f"OUT={out}",
                    f"BIN={bin_dir}",
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
            note = next(line for line in dry.stdout.splitlines() if "generate --check" in line)
            ran = subprocess.run(["sh", "-c", note], cwd=ROOT, capture_output=True, text=True, timeout=120)
            assert ran.returncode == 0 and ran.stdout == "", ran.stdout + ran.stderr
            warnings[target, case] = ran.stderr
    given = f"JOBS='{project / 'now.yaml'}' OUT='{out}'"  # the commands it names act on these files
    for target in ("simulate", "poc", "submit"):
        assert warnings[target, "up to date"] == ""
        assert warnings[target, "stale"] == (
            f"warning: {out} is not what {project / 'now.yaml'} generates now (see make check {given}): running "
            f"the folders as they are; make generate {given} first to run what {project / 'now.yaml'} says\n"
        )
        assert warnings[target, "broken"] == (
            f"warning: {project / 'now.yaml'} does not generate (make check {given} says where): running the "
            f"folders in {out} as they are\n"
        )
        # trial 46: a folder made from other files was told to generate now.yaml into it, removing them
        assert warnings[target, "other file"].startswith(
            f"warning: running the folders in {out} as they are: {out} is out of date with {project / 'other.yaml'}, "
            "but 14 jobs in it were generated from other files or --set than this check's (14 jobs from "
            f"{project / 'now.yaml'}): to check them, run `python -m generator generate --check --jobs "
            f"{project / 'now.yaml'} --out {out}`"
        ), warnings[target, "other file"]
