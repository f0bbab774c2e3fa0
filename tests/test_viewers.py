"""``python -m generator view``: which job's store each tracker's viewer opens, bound to 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
from pathlib import Path

import pytest
from conftest import run_main

from generator.errors import SimulationError
from generator.tracking import GENERATOR_ID, MARK_TAG
from generator.viewers import DEFAULT_PORTS, HOST, mlflow_ui_line, pick_job, pick_view, viewer_command

RESULTS = [
    {"name": "full", "receiver": None, "store": None},
    {"name": "ml-a", "receiver": "mlflow", "store": "sqlite:////ws/ml-a/server/simulate_job/mlflow.db"},
    {"name": "ml-b", "receiver": "mlflow", "store": "sqlite:////ws/ml-b/server/simulate_job/mlflow.db"},
    {"name": "tb", "receiver": "tensorboard", "store": "/ws/tb/server/simulate_job/tb_events"},
    {"name": "wb", "receiver": "wandb", "store": "/ws/wb/server/wandb"},
]


@pytest.fixture
def results(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(RESULTS))
    return path


def test_the_first_job_of_a_tracker_is_picked_unless_one_is_named(results):
    assert pick_job(results, "mlflow")["name"] == "ml-a"
    assert pick_job(results, "mlflow", "ml-b")["name"] == "ml-b"
    assert pick_job(results, "tensorboard")["name"] == "tb"
    assert pick_job(results, "wandb")["name"] == "wb"


@pytest.mark.parametrize(
    ("tracker", "job", "message"),
    [
        ("mlflow", "nope", "no job 'nope' in the results"),
        ("mlflow", "tb", "job 'tb' stored its metrics with tensorboard, not mlflow"),
        ("tensorboard", "full", "job 'full' stored its metrics with no receiver, not tensorboard"),
    ],
)
def test_a_wrong_job_is_refused(results, tracker, job, message):
    with pytest.raises(SimulationError, match=message):
        pick_job(results, tracker, job)


def test_a_job_a_later_run_left_out_of_the_results_is_found_in_its_workspace(results):
    """A trial's JOB= failed once a later ``simulate --job`` rewrote the results, its store still on disk."""
    kept = results.parent / "workspaces/gone/server/simulate_job/mlflow.db"
    with pytest.raises(SimulationError) as caught:
        pick_job(results, "mlflow", "gone")
    assert "still at" not in str(caught.value.problems[0])
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"")
    with pytest.raises(SimulationError) as caught:
        pick_job(results, "mlflow", "gone")
    assert str(caught.value.problems[0]).endswith(
        f"; a later run rewrote the results, but its store is still at {kept}: "
        f"{MLFLOW} ui --backend-store-uri sqlite:///{kept} --host 127.0.0.1 --port 5000"
    )


#: ``mlflow`` of the running environment: the hints name it by its path (it need not be on PATH).
MLFLOW = str(Path(sys.executable).parent / "mlflow")


def project_store(path: Path) -> None:
    """A SQLite file :func:`generator.tracking.is_our_store` takes for the project store (its one
    table and tag, as ``simulate``'s copy into it leaves them), made without MLflow."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE experiment_tags (key TEXT, value TEXT, experiment_id INTEGER)")
        db.execute("INSERT INTO experiment_tags VALUES (?, ?, 1)", (MARK_TAG, GENERATOR_ID))
        db.commit()


def test_the_hints_to_open_a_kept_store_can_be_pasted_into_a_shell(tmp_path):
    """A trial's hint printed ``mlflow ui --backend-store-uri sqlite:////work/trial 42/...``: the space
    not quoted, and ``mlflow`` not on PATH. It names this environment's mlflow, every word quoted."""
    import shlex

    folder = tmp_path / "trial 42" / "build"
    kept = folder / "workspaces/metrics/server/simulate_job/mlflow.db"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"")
    results = folder / "results.json"
    results.write_text(json.dumps([RESULTS[3]]))  # a later run: only the TensorBoard job
    with pytest.raises(SimulationError) as caught:
        pick_job(results, "mlflow", "metrics")
    line = str(caught.value.problems[0]).split(f"still at {kept}: ")[1]
    assert shlex.split(line) == [
        MLFLOW,
        "ui",
        "--backend-store-uri",
        f"sqlite:///{kept}",
        "--host",
        HOST,
        "--port",
        "5000",
    ]
    assert line == mlflow_ui_line(kept)


def test_mlflow_without_a_job_names_the_project_store_the_results_no_longer_show(tmp_path):
    """A trial's ``view mlflow`` said only "no simulated job stored metrics with mlflow" after a later
    run rewrote the results, with ``build/mlflow.db`` (every earlier MLflow job) still there."""
    folder = tmp_path / "trial 42" / "build"
    folder.mkdir(parents=True)
    results = folder / "results.json"
    results.write_text(json.dumps([RESULTS[0], RESULTS[3]]))
    with pytest.raises(SimulationError) as caught:
        pick_view(results, "mlflow")
    assert str(caught.value.problems[0]) == f"{results}: no simulated job stored metrics with mlflow"
    (folder / "mlflow.db").write_bytes(b"not ours")  # a user's file: not named
    with pytest.raises(SimulationError) as caught:
        pick_view(results, "mlflow")
    assert str(caught.value.problems[0]) == f"{results}: no simulated job stored metrics with mlflow"
    (folder / "mlflow.db").unlink()
    project_store(folder / "mlflow.db")
    with pytest.raises(SimulationError) as caught:
        pick_view(results, "mlflow")
    assert str(caught.value.problems[0]) == (
        f"{results}: no simulated job stored metrics with mlflow; the project store {folder / 'mlflow.db'} still "
        f"holds the MLflow jobs of earlier simulate runs: {mlflow_ui_line(folder / 'mlflow.db')}"
    )
    with pytest.raises(SimulationError) as caught:  # another tracker: no word of MLflow's store
        pick_view(results, "wandb")
    assert "project store" not in str(caught.value.problems[0])


def test_no_results_yet(tmp_path):
    with pytest.raises(SimulationError, match="run `make simulate` first"):
        pick_job(tmp_path / "results.json", "mlflow")


def test_viewers_bind_to_localhost():
    ml = viewer_command("mlflow", RESULTS[1]["store"])
    port = str(DEFAULT_PORTS["mlflow"])
    assert ml[1:] == ["ui", "--backend-store-uri", RESULTS[1]["store"], "--host", "127.0.0.1", "--port", port]
    tb = viewer_command("tensorboard", RESULTS[3]["store"], port=7000)
    assert tb[1:] == ["--logdir", RESULTS[3]["store"], "--host", "127.0.0.1", "--port", "7000"]
    assert viewer_command("wandb", RESULTS[4]["store"])[1:] == ["leet", RESULTS[4]["store"]]
    with pytest.raises(SimulationError, match="open it there"):
        viewer_command("mlflow", "http://mlflow.example:5000")


def test_cli_reports_a_missing_results_file(tmp_path):
    result = run_main(tmp_path, "view", "mlflow")
    assert result.returncode == 1
    assert result.stderr.strip() == "build/results.json: no simulation results here: run `make simulate` first"


@pytest.mark.parametrize("port", ["0", "65536", "99999", "-1", "http"])
def test_a_port_outside_1_to_65535_is_a_usage_error(results, port, capsys):
    with pytest.raises(SystemExit) as stop:
        from generator.cli import main

        main(["view", "tensorboard", "--results", str(results), "--port", port])
    assert stop.value.code == 2
    assert "expected a port number from 1 to 65535" in capsys.readouterr().err


def test_the_printed_viewer_command_can_be_pasted_into_a_shell():
    import shlex

    from generator.reporter import Reporter

    lines = []
    reporter = Reporter()
    reporter.lines = lambda text, err=False: lines.extend(text)
    argv = ["tensorboard", "--logdir", "/tmp/trial dir/ws/tb", "--port", "6006"]
    reporter.viewer_started("tb", "tensorboard", "/tmp/trial dir/ws/tb", "http://127.0.0.1:6006", argv)
    assert shlex.split(lines[1]) == argv


@pytest.mark.parametrize("engine", ["poc", "submit"])
def test_mlflow_without_a_job_never_opens_the_simulated_project_store_for_poc_results(tmp_path, monkeypatch, engine):
    """``poc`` and ``submit`` keep one store per job in their downloads and do not fill the project
    store beside their results file, which holds ``simulate``'s runs: those must not be shown as
    the run's (a trial's ``view mlflow --results build/poc-results.json`` did)."""
    from generator import viewers

    monkeypatch.setattr(viewers, "is_our_store", lambda path: True)  # a project store filled by simulate
    path = tmp_path / "poc-results.json"
    path.write_text(json.dumps([{**r, "engine": engine} for r in RESULTS]))
    assert viewers.pick_view(path, "mlflow") == (
        "ml-a (--job ml-b opens another of the run's MLflow jobs)",
        RESULTS[1]["store"],
    )
    path.write_text(json.dumps([{**r, "engine": "simulate"} for r in RESULTS]))
    label, store = viewers.pick_view(path, "mlflow")
    assert label == (
        f"every MLflow job simulated with its results in {tmp_path}/ (this run's and earlier runs'; "
        "a job simulated again replaces its runs)"
    )
    assert store == viewers.store_uri(tmp_path / "mlflow.db")


def test_poc_and_simulate_results_say_which_engine_ran_them(tmp_path):
    from generator.outputs import write_results

    write_results(tmp_path / "r.json", [{"name": "a"}], "poc")
    assert json.loads((tmp_path / "r.json").read_text()) == [
        {"generator": "nvflare-jobgen", "engine": "poc", "name": "a"}
    ]


def test_a_viewer_gets_a_tmpdir_in_the_project_removed_when_it_ends(tmp_path):
    """A trial's ``view tensorboard`` left ``/tmp/.tensorboard-info/`` (TensorBoard's
    ``manager._get_info_dir``: ``tempfile.gettempdir()``). Each viewer gets its own folder in
    ``<results folder>/_tmp``, removed with ``_tmp`` when it ends; a ``_tmp`` that was there stays."""
    from generator.viewers import viewer_env, viewer_tmp

    results = tmp_path / "build" / "results.json"
    results.parent.mkdir()
    with viewer_tmp(results, "tensorboard") as one, viewer_tmp(results, "tensorboard") as two:
        assert one != two and Path(one).is_dir() and Path(two).is_dir()
        assert Path(one).parent == results.parent / "_tmp" and Path(one).name.startswith("view-tensorboard-")
        (Path(one) / ".tensorboard-info").mkdir()
        env = viewer_env(one)
        assert env["TMPDIR"] == env["TEMP"] == env["TMP"] == one and env["PATH"] == os.environ["PATH"]
    assert not (results.parent / "_tmp").exists()
    (results.parent / "_tmp").mkdir()
    with viewer_tmp(results, "wandb") as three:
        assert Path(three).is_dir()
    assert list((results.parent / "_tmp").iterdir()) == []


@pytest.mark.parametrize("tracker", ["tensorboard", "wandb"])
def test_view_starts_the_viewer_with_that_tmpdir(tmp_path, monkeypatch, tracker):
    """The command ``view`` starts sees the folder as its temporary folder: a stand-in viewer (this
    Python) records ``tempfile.gettempdir()`` and makes ``.tensorboard-info`` there as TensorBoard
    does; the folder is in the project and gone once the viewer ended."""
    from generator import viewers

    project = tmp_path / "trial 42"
    (project / "build").mkdir(parents=True)
    (project / "build/results.json").write_text(json.dumps(RESULTS))
    seen = tmp_path / "seen.txt"
    code = (
        "import os, sys, tempfile; d = os.path.join(tempfile.gettempdir(), '.tensorboard-info'); os.makedirs(d); "
        "open(sys.argv[1], 'w').write(tempfile.gettempdir())"
    )
    monkeypatch.setattr(viewers, "viewer_command", lambda *a, **k: [sys.executable, "-c", code, str(seen)])
    result = run_main(project, "view", tracker)
    assert result.returncode == 0, result.stderr
    used = Path(seen.read_text())
    assert used.parent == project / "build" / "_tmp" and used.name.startswith(f"view-{tracker}-")
    assert not (project / "build" / "_tmp").exists()
