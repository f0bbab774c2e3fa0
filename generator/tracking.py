"""The project's MLflow store: every MLflow job of a ``simulate`` run in one store, for one MLflow UI.

Takes, after each MLflow job of a ``simulate`` run, that job's own store (the SQLite file the
receiver wrote, which the judge reads as before) and gives a copy of its runs in the project store
``mlflow.db`` beside the results file (default ``build/mlflow.db``), made with MLflow's client API
(``MlflowClient.create_run``, ``log_batch``, ``set_terminated``):

- one experiment, :data:`EXPERIMENT`, tagged :data:`MARK_TAG` = ``nvflare-jobgen`` (the marker that
  makes the store ours, as ``"generator"`` marks ``results.json``, see :mod:`generator.outputs`);
- one MLflow run per job and site (NVFlare's MLflowReceiver makes one run per site), named
  ``<job>/<source run name>``, with the source run's tags, params, status, start and end time, and
  every metric point with its step and timestamp; tagged :data:`JOB_TAG` = the job,
  :data:`SITE_TAG` = the site and :data:`EXPERIMENT_TAG` = the job's own experiment, and for a
  job expanded from a ``matrix:`` each matrix value as tag
  and param ``jobgen.matrix.<key>`` (MLflow's compare view and parallel-coordinates plot use them);
- a job simulated again replaces its runs (they are deleted for good first, as ``mlflow gc`` does).

A store path that is a symbolic link, a folder, or a file without our marker is never written
(:func:`check_store`). The store is made in a temporary file and renamed into place once it holds
the marked experiment, so a half-made store is never left under the name. Copies are serialized
by a lock (``simulate --parallel`` finishes jobs in several threads); two ``simulate`` processes
sharing one results folder at once are not supported.

Only local SQLite job stores are copied: a job that logs to an ``http(s)://`` tracking server has
its runs on that server's own UI already.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import unquote

from .errors import OutputError, Problem, SimulationError
from .layout import GENERATOR_ID, SITE_PATTERN, site_of_run
from .metrics import sqlite_path

#: The project store's file name, beside the results file (``build/mlflow.db`` by default).
STORE_NAME = "mlflow.db"
#: The one experiment of the project store.
EXPERIMENT = "nvflare-jobgen"
#: The experiment tag that marks the store as written by nvflare-jobgen (value :data:`GENERATOR_ID`).
MARK_TAG = "jobgen.generator"
#: Run tags: the job, the site, and (prefix) each matrix value of a job expanded from a ``matrix:``.
JOB_TAG = "jobgen.job"
SITE_TAG = "jobgen.site"
#: Run tag: the job's own experiment (the receiver's ``experiment_name``), which the project store's
#: one experiment would otherwise hide (a trial looked for its experiment name there).
EXPERIMENT_TAG = "jobgen.experiment"
MATRIX_PREFIX = "jobgen.matrix."
#: MLflow's ``log_batch`` limits per call (``mlflow/utils/validation.py``: ``MAX_METRICS_PER_BATCH``,
#: ``MAX_PARAMS_TAGS_PER_BATCH``).
_METRICS_PER_BATCH = 1000
_PARAMS_TAGS_PER_BATCH = 100

_LOCK = threading.Lock()


def store_path(results_path: str | Path) -> Path:
    """The project store of a results file: ``mlflow.db`` in the same folder (Path)."""
    return Path(results_path).parent / STORE_NAME


def store_uri(path: str | Path) -> str:
    """The ``sqlite:///`` tracking URI of a store file (absolute; ``%``, ``?``, ``#`` escaped as
    :func:`generator.metrics.sqlite_path` does)."""
    return "sqlite:///" + sqlite_path(os.path.abspath(path))


def _read_only(path: str | Path):
    """A read-only ``sqlite3`` connection to ``path`` (a ``file:`` URI, every special character
    percent-encoded by ``Path.as_uri``), closed on leaving the ``with`` block."""
    return contextlib.closing(sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True))


def is_our_store(path: str | Path) -> bool:
    """``path`` is a SQLite MLflow store whose experiment carries :data:`MARK_TAG` = ``nvflare-jobgen``.

    Read with Python's ``sqlite3`` in read-only mode (opening it with MLflow would migrate a
    user's store); False when it is not a file, not SQLite, or has no such tag.
    """
    path = Path(path)
    if path.is_symlink() or not path.is_file():
        return False
    try:
        with _read_only(path) as db:
            row = db.execute("SELECT value FROM experiment_tags WHERE key = ?", (MARK_TAG,)).fetchone()
    except sqlite3.Error:
        return False
    return row is not None and row[0] == GENERATOR_ID


def check_store(path: str | Path) -> list[Problem]:
    """Why the project store may not be written at ``path`` (empty: it may).

    Args:
        path (str | Path): the store file (:func:`store_path` of ``--results``).

    Returns:
        list[Problem]: one problem naming ``path``: a symbolic link, a folder, or a file
        nvflare-jobgen did not make (no :data:`MARK_TAG` experiment tag).
    """
    path = Path(path)

    def problem(message: str) -> list[Problem]:
        return [Problem(str(path), 0, 0, "", message)]

    if path.is_symlink():
        return problem(
            "the project MLflow store is a symbolic link: refusing to write through it; choose another --results"
        )
    if path.exists() and not path.is_file():
        return problem("the project MLflow store is a folder, not a file: choose another --results")
    if path.exists() and not is_our_store(path):
        return problem(
            f"holds something nvflare-jobgen did not write (no MLflow experiment tagged {MARK_TAG}={GENERATOR_ID}); "
            "refusing to overwrite it: move it away or choose another --results"
        )
    return []


def _quiet_mlflow():
    import logging

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    from mlflow.tracking import MlflowClient

    return MlflowClient


def _create(path: Path) -> None:
    """Make a marked, empty project store at ``path`` (built beside it, renamed into place)."""
    client_class = _quiet_mlflow()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # MLflow makes the SQLite file itself
    try:
        client = client_class(tracking_uri=store_uri(tmp))
        client.create_experiment(EXPERIMENT, tags={MARK_TAG: GENERATOR_ID})
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _site(run_name: str | None, sites: list[str] | None = None) -> str | None:
    """The site a run is of: the job's site its name names (:func:`generator.layout.site_of_run`),
    else the first ``site-<N>`` or ``server`` in it; None when none is."""
    import re

    site = site_of_run(run_name or "", sites or [])
    if site:
        return site
    found = re.search(SITE_PATTERN + r"|server", run_name or "")
    return found.group(0) if found else None


def sqlite_file(uri: str | None) -> Path | None:
    """The file of a ``sqlite:///`` tracking URI (query string dropped); None for any other URI."""
    if not uri or not uri.startswith("sqlite:///"):
        return None
    return Path(unquote(uri.removeprefix("sqlite:///").split("?")[0]))


def copy_job(
    path: str | Path,
    job: str,
    source_uri: str,
    matrix: dict | None = None,
    since_ms: int = 0,
    lock: threading.Lock | None = None,
    sites: list[str] | None = None,
) -> dict[str, int]:
    """Replace ``job``'s runs in the project store at ``path`` with a copy of its own store's runs.

    Args:
        path (str | Path): the project store file; made (marked) if missing.
        job (str): the job name (:data:`JOB_TAG`).
        source_uri (str): the job's own store, ``sqlite:///...`` (a missing file: no runs, the
            job's old runs are still removed).
        matrix (dict | None): the job's ``ManifestEntry.matrix`` (``{"job": ..., "values": {...}}``).
        since_ms (int): only source runs started at or after this time (ms since the epoch).
        lock (threading.Lock | None): held while copying (None: this module's own lock); give the
            lock other threads hold while they import or read MLflow (two threads importing MLflow
            at once fail).
        sites (list[str] | None): the job's sites (``ManifestEntry.sites``), so that a run of a
            client not named ``site-<N>`` gets its :data:`SITE_TAG` too.

    Returns:
        dict[str, int]: metric points copied per MLflow run name in the project store.

    Raises:
        OutputError: ``path`` is not ours (:func:`check_store`), checked again under the lock.
        SimulationError: a store cannot be read or written (MLflow's message).
    """
    path = Path(path)
    with lock or _LOCK:
        problems = check_store(path)
        if problems:
            raise OutputError(problems)
        client_class = _quiet_mlflow()
        from mlflow.entities import Metric, Param
        from mlflow.exceptions import MlflowException

        try:
            if not path.exists():
                _create(path)
            target = client_class(tracking_uri=store_uri(path))
            experiment = target.get_experiment_by_name(EXPERIMENT).experiment_id
            _remove_job(target, experiment, job)
            source_file = sqlite_file(source_uri)
            if source_file is None or not source_file.is_file():
                return {}
            source = client_class(tracking_uri=source_uri)
            names = {e.experiment_id: e.name for e in source.search_experiments()}
            experiments = list(names)
            copied: dict[str, int] = {}
            runs = source.search_runs(experiments, max_results=50000) if experiments else []
            for run in sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_name or "")):
                if (run.info.start_time or 0) < since_ms:
                    continue
                name = f"{job}/{run.info.run_name}"
                tags = {k: v for k, v in run.data.tags.items() if k != "mlflow.runName"}
                tags[JOB_TAG] = job
                tags[EXPERIMENT_TAG] = names.get(run.info.experiment_id, "")
                site = _site(run.info.run_name, sites)
                if site:
                    tags[SITE_TAG] = site
                params = dict(run.data.params)
                for key, value in ((matrix or {}).get("values") or {}).items():
                    tags[MATRIX_PREFIX + key] = _text(value)
                    params.setdefault(MATRIX_PREFIX + key, _text(value))
                new = target.create_run(experiment, start_time=run.info.start_time, tags=tags, run_name=name)
                new_id = new.info.run_id
                for batch in _chunks([Param(k, v) for k, v in params.items()], _PARAMS_TAGS_PER_BATCH):
                    target.log_batch(new_id, params=batch)
                points = [
                    Metric(key, m.value, m.timestamp, m.step)
                    for key in sorted(run.data.metrics)
                    for m in source.get_metric_history(run.info.run_id, key)
                ]
                for batch in _chunks(points, _METRICS_PER_BATCH):
                    target.log_batch(new_id, metrics=batch, synchronous=True)
                target.set_terminated(new_id, status=run.info.status, end_time=run.info.end_time)
                copied[name] = len(points)
            return copied
        except MlflowException as e:
            raise SimulationError(
                f"cannot copy job {job!r} into the project MLflow store {path}: {e.message}"
            ) from None


def _remove_job(client, experiment: str, job: str) -> None:
    """Delete every run of ``job`` from the project store for good (tag :data:`JOB_TAG`)."""
    from mlflow.entities import ViewType

    runs = client.search_runs(
        [experiment], filter_string=f"tags.`{JOB_TAG}` = '{job}'", run_view_type=ViewType.ALL, max_results=50000
    )
    store = client._tracking_client.store
    for run in runs:
        store._hard_delete_run(run.info.run_id)  # what `mlflow gc` calls: a soft delete keeps the points


def project_store(results_path: str | Path | None, jobs: list) -> Path | None:
    """The project store ``simulate`` fills for these jobs: :func:`store_path` of ``results_path`` when
    one of ``jobs`` (ManifestEntry) is an MLflow job with a SQLite store (its default or a ``sqlite:///``
    ``tracking_uri``); else None (no results file, or no such job)."""
    local = any(j.receiver == "mlflow" and (j.tracking_uri or "sqlite:///").startswith("sqlite:///") for j in jobs)
    return store_path(results_path) if results_path and local else None


def count_points(path: str | Path) -> dict[str, dict[str, int]]:
    """Metric points per job and run name in a store, read with ``sqlite3`` (for checks and tests).

    Args:
        path (str | Path): a SQLite MLflow store.

    Returns:
        dict[str, dict[str, int]]: ``{job tag: {run name: points}}``; runs without :data:`JOB_TAG`
        are under ``""``. Only active runs count.
    """
    query = (
        "SELECT COALESCE(t.value, ''), r.name, COUNT(m.key) FROM runs r "
        "LEFT JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = ? "
        "LEFT JOIN metrics m ON m.run_uuid = r.run_uuid "
        "WHERE r.lifecycle_stage = 'active' GROUP BY r.run_uuid"
    )
    counts: dict[str, dict[str, int]] = {}
    with _read_only(path) as db:
        for job, run, points in db.execute(query, (JOB_TAG,)):
            counts.setdefault(job, {})[run] = points
    return counts


class ProjectStoreFiller:
    """Simulate events that copy each finished MLflow job into the project store, then pass the event on.

    Wraps the ``events`` of :func:`generator.simulate.simulate_all` (any
    :class:`generator.simulate.SimulateEvents`); ``job_started`` notes the time (runs older than it,
    less 1 s, are not copied, the judge's rule), ``job_finished`` copies the job (:func:`copy_job`)
    before telling ``events``; a copy that fails becomes a problem of the job. Other events pass through.

    Args:
        events: the wrapped events. path (Path): the project store. manifest (dict[str, ManifestEntry]):
            the jobs' manifest entries (for ``matrix``). lock (threading.Lock | None): see :func:`copy_job`.
    """

    def __init__(self, events, path: Path, manifest: dict, lock: threading.Lock | None = None):
        self._events, self._path, self._manifest, self._lock = events, Path(path), manifest, lock
        self._started: dict[str, float] = {}

    def __getattr__(self, name: str):
        return getattr(self._events, name)

    def job_started(self, name: str, info, timeout: float) -> None:
        """Note the start time of job ``name``, then pass the event on."""
        self._started[name] = time.time()
        self._events.job_started(name, info, timeout)

    def job_finished(self, result) -> None:
        """Copy ``result``'s runs if it is an MLflow job with a SQLite store, then pass the event on."""
        if result.receiver == "mlflow" and sqlite_file(result.store) is not None:
            since = int(self._started.get(result.name, 0) * 1000) - 1000
            info = self._manifest.get(result.name)
            try:
                matrix, sites = (info.matrix, info.sites) if info else (None, None)
                copy_job(self._path, result.name, result.store, matrix, max(since, 0), self._lock, sites)
            except (OutputError, SimulationError) as e:
                result.problems += [Problem(result.name, 0, 0, "", p.message) for p in e.problems]
                result.ok, result.status = False, "FAILED"
        self._events.job_finished(result)
