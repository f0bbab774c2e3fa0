"""The project MLflow store (``generator/tracking.py``): copy, replace on rerun, ownership, and one simulated run."""

from __future__ import annotations

import json
import sqlite3
import threading

import pytest

from generator.errors import OutputError
from generator.layout import ManifestEntry
from generator.tracking import (
    EXPERIMENT,
    EXPERIMENT_TAG,
    JOB_TAG,
    MATRIX_PREFIX,
    SITE_TAG,
    ProjectStoreFiller,
    check_store,
    copy_job,
    count_points,
    project_store,
    store_uri,
)

#: The experiment :func:`fabricate` makes, as the shipped jobs' receivers name theirs.
FABRICATED_EXPERIMENT = "nvflare-fedavg-np-experiment"


def fabricate(path, sites=("site-1", "site-2"), keys=("loss", "acc"), steps=5, tag="x"):
    """A job's own MLflow store as NVFlare's MLflowReceiver leaves it: one run per site."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store_uri(path))
    experiment = client.create_experiment(FABRICATED_EXPERIMENT)
    for i, site in enumerate(sites):
        run = client.create_run(experiment, run_name=f"{site}-nvflare-fedavg-np", tags={"mine": tag})
        client.log_param(run.info.run_id, "lr", str(0.1 * (i + 1)))
        points = [Metric(k, float(s * (i + 1)), 1_700_000_000_000 + s, s) for k in keys for s in range(steps)]
        client.log_batch(run.info.run_id, metrics=points, synchronous=True)
        client.set_terminated(run.info.run_id)
    return store_uri(path)


def history(store, run_name):
    """``{key: [(step, timestamp, value)]}`` of one run in a store, read with sqlite3."""
    with sqlite3.connect(store) as db:
        rows = db.execute(
            "SELECT m.key, m.step, m.timestamp, m.value FROM metrics m JOIN runs r ON r.run_uuid = m.run_uuid "
            "WHERE r.name = ? ORDER BY m.key, m.step",
            (run_name,),
        ).fetchall()
    out = {}
    for key, step, ts, value in rows:
        out.setdefault(key, []).append((step, ts, value))
    return out


def run_tags(store, run_name):
    with sqlite3.connect(store) as db:
        return dict(
            db.execute(
                "SELECT t.key, t.value FROM tags t JOIN runs r ON r.run_uuid = t.run_uuid WHERE r.name = ?", (run_name,)
            ).fetchall()
        )


@pytest.mark.slow  # builds several MLflow SQLite stores (each runs MLflow's schema migrations)
def test_a_job_is_copied_run_by_run_with_every_point(tmp_path):
    source = fabricate(tmp_path / "job.db")
    project = tmp_path / "build" / "mlflow.db"
    matrix = {"job": "sweep-{num_rounds}", "values": {"num_rounds": 2, "receiver.type": "mlflow"}}
    copied = copy_job(project, "sweep-2", source, matrix)
    assert copied == {"sweep-2/site-1-nvflare-fedavg-np": 10, "sweep-2/site-2-nvflare-fedavg-np": 10}
    assert count_points(project) == {"sweep-2": copied}
    for site in ("site-1", "site-2"):
        name = f"{site}-nvflare-fedavg-np"
        assert history(project, f"sweep-2/{name}") == history(tmp_path / "job.db", name)
        tags = run_tags(project, f"sweep-2/{name}")
        assert tags[JOB_TAG] == "sweep-2" and tags[SITE_TAG] == site and tags["mine"] == "x"
        assert tags[EXPERIMENT_TAG] == FABRICATED_EXPERIMENT  # the job's own experiment, by name
        assert tags[MATRIX_PREFIX + "num_rounds"] == "2" and tags[MATRIX_PREFIX + "receiver.type"] == "mlflow"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store_uri(project))
    (run,) = client.search_runs(
        [client.get_experiment_by_name(EXPERIMENT).experiment_id], filter_string="tags.`jobgen.site` = 'site-2'"
    )
    assert run.data.params == {"lr": "0.2", "jobgen.matrix.num_rounds": "2", "jobgen.matrix.receiver.type": "mlflow"}
    assert run.info.status == "FINISHED"


@pytest.mark.slow  # builds several MLflow SQLite stores (each runs MLflow's schema migrations)
def test_a_job_simulated_again_replaces_its_runs_and_keeps_the_others(tmp_path):
    project = tmp_path / "mlflow.db"
    copy_job(project, "a", fabricate(tmp_path / "a1.db", steps=5))
    copy_job(project, "b", fabricate(tmp_path / "b.db", sites=("site-1",), steps=3))
    copy_job(project, "a", fabricate(tmp_path / "a2.db", sites=("site-1",), steps=4, tag="second"))
    assert count_points(project) == {
        "a": {"a/site-1-nvflare-fedavg-np": 8},
        "b": {"b/site-1-nvflare-fedavg-np": 6},
    }
    with sqlite3.connect(project) as db:  # deleted for good, not only marked deleted
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone() == (2,)
        assert db.execute("SELECT COUNT(*) FROM metrics").fetchone() == (14,)
    assert run_tags(project, "a/site-1-nvflare-fedavg-np")["mine"] == "second"


@pytest.mark.slow  # builds several MLflow SQLite stores (each runs MLflow's schema migrations)
def test_runs_older_than_the_job_are_not_copied(tmp_path):
    source = fabricate(tmp_path / "job.db")
    assert copy_job(tmp_path / "mlflow.db", "a", source, since_ms=2**62) == {}
    assert count_points(tmp_path / "mlflow.db") == {}


@pytest.mark.slow  # builds MLflow SQLite stores (each runs MLflow's schema migrations)
@pytest.mark.parametrize("kind", ["user-db", "text", "folder", "symlink"])
def test_a_store_nvflare_jobgen_did_not_make_is_never_written(tmp_path, kind):
    source = fabricate(tmp_path / "job.db")
    project = tmp_path / "mlflow.db"
    if kind == "user-db":
        fabricate(project)  # a user's own MLflow store
    elif kind == "text":
        project.write_text("notes\n")
    elif kind == "folder":
        project.mkdir()
    else:
        project.symlink_to(tmp_path / "job.db")
    before = project.read_bytes() if project.is_file() else None
    problems = check_store(project)
    assert len(problems) == 1 and problems[0].file == str(project)
    expected = {
        "user-db": "holds something nvflare-jobgen did not write",
        "text": "holds something nvflare-jobgen did not write",
        "folder": "is a folder, not a file",
        "symlink": "is a symbolic link",
    }[kind]
    assert expected in problems[0].message
    with pytest.raises(OutputError, match=expected):
        copy_job(project, "a", source)
    if before is not None:
        assert project.read_bytes() == before
    assert project.is_symlink() == (kind == "symlink")


@pytest.mark.slow  # builds MLflow SQLite stores (each runs MLflow's schema migrations)
def test_our_store_passes_the_check(tmp_path):
    project = tmp_path / "mlflow.db"
    copy_job(project, "a", fabricate(tmp_path / "job.db"))
    assert check_store(project) == []


@pytest.mark.slow  # builds several MLflow SQLite stores (each runs MLflow's schema migrations)
def test_parallel_copies_lose_nothing(tmp_path):
    project = tmp_path / "mlflow.db"
    sources = {f"job-{i}": fabricate(tmp_path / f"job-{i}.db", steps=20 + i) for i in range(4)}
    copy_job(project, "warm", sources["job-0"])  # MLflow imported before the threads start
    threads = [threading.Thread(target=copy_job, args=(project, name, uri)) for name, uri in sources.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = count_points(project)
    for name in sources:
        expected = {f"{name}/{r}": n for r, n in count_points(tmp_path / f"{name}.db")[""].items()}
        assert counts[name] == expected


def test_only_sqlite_mlflow_jobs_fill_a_project_store(tmp_path):
    def entry(receiver, uri=None):
        return ManifestEntry("2.9", 2, 1, "in_process", "t.py", receiver=receiver, tracking_uri=uri)

    results = tmp_path / "build" / "results.json"
    assert project_store(results, [entry("mlflow")]) == tmp_path / "build" / "mlflow.db"
    assert project_store(results, [entry("mlflow", "sqlite:///x.db")]) == tmp_path / "build" / "mlflow.db"
    assert project_store(results, [entry("mlflow", "http://127.0.0.1:5000"), entry("tensorboard")]) is None
    assert project_store(None, [entry("mlflow")]) is None


class Recorder:
    def __init__(self):
        self.seen = []

    def job_started(self, name, info, timeout):
        self.seen.append(("started", name))

    def job_finished(self, result):
        self.seen.append(("finished", result.name, list(result.problems)))

    def all_finished(self, results):
        self.seen.append(("all", len(results)))


@pytest.mark.slow  # builds several MLflow SQLite stores (each runs MLflow's schema migrations)
def test_the_filler_copies_a_finished_job_then_tells_the_reporter(tmp_path):
    from generator.simulate import JobResult

    source = fabricate(tmp_path / "job.db")
    info = ManifestEntry("2.9", 2, 1, "in_process", "t.py", receiver="mlflow", matrix={"job": "m", "values": {"k": 1}})
    recorder = Recorder()
    filler = ProjectStoreFiller(recorder, tmp_path / "mlflow.db", {"a": info})
    filler.job_started("a", info, 60)
    # the fabricated points are older than the job's start, but the runs are not: they start now
    filler.job_finished(JobResult(name="a", ok=True, status="ok", receiver="mlflow", store=source))
    filler.all_finished([])
    assert recorder.seen == [("started", "a"), ("finished", "a", []), ("all", 0)]
    assert sum(count_points(tmp_path / "mlflow.db")["a"].values()) == 20
    assert (
        json.loads(json.dumps(run_tags(tmp_path / "mlflow.db", "a/site-1-nvflare-fedavg-np")))["jobgen.matrix.k"] == "1"
    )


@pytest.mark.slow  # builds MLflow SQLite stores (each runs MLflow's schema migrations)
def test_runs_of_named_clients_are_read_and_tagged_by_client(tmp_path):
    """A job on ``clients: [hospital-a, hospital-a-2]``: MLflow names each site's run after it; the
    read-back keys its points by the client (the longest matching name) and the project store tags it."""
    from generator.metrics import read_store
    from generator.simulate import JobResult

    sites = ["hospital-a", "hospital-a-2"]
    source = fabricate(tmp_path / "job.db", sites=sites, keys=("loss",), steps=3)
    series = read_store("mlflow", source, sites=sites)
    assert {site: {k: len(v) for k, v in keys.items()} for site, keys in series.items()} == {
        "hospital-a": {"loss": 3},
        "hospital-a-2": {"loss": 3},
    }
    info = ManifestEntry("2.9", 2, 2, "in_process", "t.py", receiver="mlflow", clients=sites)
    filler = ProjectStoreFiller(Recorder(), tmp_path / "mlflow.db", {"a": info})
    filler.job_started("a", info, 60)
    filler.job_finished(JobResult(name="a", ok=True, status="ok", receiver="mlflow", store=source))
    for site in sites:
        assert run_tags(tmp_path / "mlflow.db", f"a/{site}-nvflare-fedavg-np")[SITE_TAG] == site


# --- view: what `make mlflow-ui` / `make tensorboard` open without JOB ---------------------------------


def write_results(tmp_path, entries):
    path = tmp_path / "build" / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries))
    return path


ENTRIES = [
    {"name": "ml-a", "receiver": "mlflow", "store": "sqlite:////ws/ml-a/server/simulate_job/mlflow.db"},
    {"name": "tb-a", "receiver": "tensorboard", "store": "/ws/tb-a/server/simulate_job/tb_events"},
    {"name": "full", "receiver": None, "store": None},
    {"name": "tb-b.2", "receiver": "tensorboard", "store": "/ws/tb-b.2/server/simulate_job/tb_events"},
]


@pytest.mark.slow  # builds MLflow SQLite stores (each runs MLflow's schema migrations)
def test_mlflow_without_a_job_opens_the_project_store_once_it_is_ours(tmp_path):
    from generator.viewers import pick_view, viewer_command

    results = write_results(tmp_path, ENTRIES)
    assert pick_view(results, "mlflow") == ("ml-a", ENTRIES[0]["store"])  # no project store yet
    (tmp_path / "build" / "mlflow.db").write_text("a user's file\n")
    assert pick_view(results, "mlflow") == ("ml-a", ENTRIES[0]["store"])
    (tmp_path / "build" / "mlflow.db").unlink()
    copy_job(tmp_path / "build" / "mlflow.db", "ml-a", fabricate(tmp_path / "job.db"))
    label, store = pick_view(results, "mlflow")
    assert label.startswith("every MLflow job simulated with its results in ")
    assert store == store_uri(tmp_path / "build" / "mlflow.db")
    assert viewer_command("mlflow", store)[1:4] == ["ui", "--backend-store-uri", store]
    assert pick_view(results, "mlflow", "ml-a") == ("ml-a", ENTRIES[0]["store"])


def test_tensorboard_without_a_job_opens_every_job_with_logdir_spec(tmp_path):
    from generator.viewers import pick_view, viewer_command

    results = write_results(tmp_path, ENTRIES)
    label, dirs = pick_view(results, "tensorboard")
    assert label == "2 TensorBoard job(s)"
    argv = viewer_command("tensorboard", dirs, port=7000)
    spec = f"tb-a:{ENTRIES[1]['store']},tb-b.2:{ENTRIES[3]['store']}"
    assert argv[1:] == ["--logdir_spec", spec, "--host", "127.0.0.1", "--port", "7000"]
    assert pick_view(results, "tensorboard", "tb-b.2") == ("tb-b.2", ENTRIES[3]["store"])
    assert viewer_command("tensorboard", ENTRIES[3]["store"])[1:3] == ["--logdir", ENTRIES[3]["store"]]


def test_tensorboard_logdir_spec_agrees_with_tensorboards_own_parser():
    from tensorboard.backend.event_processing.data_ingester import _parse_event_files_spec

    from generator.viewers import logdir_spec

    dirs = {"np-tb.1_a": "/ws/np-tb.1_a/tb", "x": "/ws/x:colon/tb"}
    assert _parse_event_files_spec(logdir_spec(dirs)) == {folder: name for name, folder in dirs.items()}


@pytest.mark.parametrize(
    ("dirs", "named"),
    [
        ({"a:b": "/ws/a"}, "job name 'a:b'"),
        ({"a,b": "/ws/a"}, "job name 'a,b'"),
        ({"/a": "/ws/a"}, "job name '/a'"),
        ({"a": "/ws/a,b/tb"}, "folder '/ws/a,b/tb'"),
    ],
)
def test_logdir_spec_refuses_what_tensorboard_would_split(dirs, named):
    from generator.errors import SimulationError
    from generator.viewers import logdir_spec

    with pytest.raises(SimulationError) as raised:
        logdir_spec(dirs)
    assert raised.value.problems[0].message == (
        f"TensorBoard's --logdir_spec cannot hold {named} (a comma, or a colon in a name): "
        "open one job with JOB=name (view tensorboard --job NAME)"
    )


# --- simulator ----------------------------------------------------------------------------------------

TWO_MLFLOW_JOBS = """\
defaults:
  task_check_period: 0.05
  server: {task_request_interval: 0.1}
jobs:
  - name: ml-r{num_rounds}
    script: train_metrics.py
    script_args: --epoch_seconds 0.05
    receiver: {type: mlflow}
    matrix:
      num_rounds: [1, 2]
"""


@pytest.mark.simulator
def test_two_mlflow_jobs_simulated_in_parallel_all_land_in_the_project_store(project):
    from conftest import run_cli

    from generator.viewers import pick_view

    (project / "jobs.yaml").write_text(TWO_MLFLOW_JOBS)
    assert run_cli(project, "generate").returncode == 0
    result = run_cli(project, "simulate", "--parallel", "2", timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr

    results = json.loads((project / "build/results.json").read_text())
    assert [r["name"] for r in results] == ["ml-r1", "ml-r2"]
    counts = count_points(project / "build/mlflow.db")
    assert sorted(counts) == ["ml-r1", "ml-r2"]
    for entry, rounds in zip(results, (1, 2), strict=True):
        own = count_points(entry["store"].removeprefix("sqlite:///"))[""]
        assert len(own) == 2  # one run per site
        assert counts[entry["name"]] == {f"{entry['name']}/{run}": n for run, n in own.items()}
        assert sum(own.values()) == 2 * rounds * 375  # every point of both sites
        for run in own:
            tags = run_tags(project / "build/mlflow.db", f"{entry['name']}/{run}")
            assert tags[JOB_TAG] == entry["name"] and tags[MATRIX_PREFIX + "num_rounds"] == str(rounds)
            assert tags[SITE_TAG] in ("site-1", "site-2")
    assert pick_view(project / "build/results.json", "mlflow")[0].startswith(
        f"every MLflow job simulated with its results in {project / 'build'}/ (this run's and earlier runs'"
    )


def test_simulate_refuses_a_users_mlflow_db_beside_the_results_before_any_job(project):
    from conftest import run_main, snapshot

    (project / "jobs.yaml").write_text(TWO_MLFLOW_JOBS)
    assert run_main(project, "generate").returncode == 0
    (project / "build/mlflow.db").write_text("my own notes\n")
    before = snapshot(project)
    result = run_main(project, "simulate")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "build/mlflow.db: holds something nvflare-jobgen did not write (no MLflow experiment tagged "
        "jobgen.generator=nvflare-jobgen); refusing to overwrite it: move it away or choose another --results"
    ]
    assert snapshot(project) == before


@pytest.mark.slow  # builds several MLflow SQLite stores (each runs MLflow's schema migrations)
def test_a_results_folder_with_url_characters_holds_the_store(tmp_path):
    odd = tmp_path / "a?b%20c#d"
    odd.mkdir()
    source = fabricate(odd / "job.db", steps=2)
    copy_job(odd / "mlflow.db", "a", source)
    assert sum(count_points(odd / "mlflow.db")["a"].values()) == 8
    assert sorted(p.name for p in odd.iterdir()) == ["job.db", "mlflow.db"]
    copy_job(odd / "mlflow.db", "b", source)  # the marker is read back through the odd path
    assert check_store(odd / "mlflow.db") == []
