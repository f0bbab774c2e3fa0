"""Open a tracker's own viewer on the metrics a simulated job stored (``python -m generator view``).

Takes ``build/results.json`` (written by ``simulate``), a tracker and optionally a job; gives the
command line of that tracker's viewer on the job's store, bound to 127.0.0.1:

- ``mlflow``: ``mlflow ui --backend-store-uri sqlite:///<store> --host 127.0.0.1 --port 5000``
- ``tensorboard``: ``tensorboard --logdir <tb folder> --host 127.0.0.1 --port 6006``
- ``wandb``: ``wandb leet <wandb folder>`` (W&B's terminal viewer for local runs; no server)

Without a job (:func:`pick_view`): MLflow opens the project store beside the results file, which
``simulate`` fills with every MLflow job (:mod:`generator.tracking`; without it, or for the results
of ``poc`` and ``submit``, whose jobs' stores are not copied there, the first MLflow job);
TensorBoard opens every TensorBoard job of the results at once, ``--logdir_spec
job1:dir1,job2:dir2`` (:func:`logdir_spec`); W&B takes the first W&B job.

The viewer runs with its temporary files inside the project (:func:`viewer_tmp`): a fresh
``<results folder>/_tmp/view-<tracker>-*`` (``build/_tmp/...``) as its ``TMPDIR``, removed when it
ends. TensorBoard otherwise leaves ``.tensorboard-info/`` in ``/tmp`` (its ``manager._get_info_dir``:
``tempfile.gettempdir()``, a ``pid-<n>.info`` file per server, the folder kept), and ``wandb leet``
its ``debug-cli.<user>.log`` (``wandb/cli/cli.py``: in ``./wandb/`` or ``$WANDB_DIR/wandb/`` when
that folder exists, else ``tempfile.gettempdir()``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import Problem, SimulationError
from .layout import MLFLOW_DB, SERVER_RESULT, TMP_DIR
from .tracking import is_our_store, store_path, store_uri

DEFAULT_PORTS = {"mlflow": 5000, "tensorboard": 6006}
HOST = "127.0.0.1"


def _tool(name: str) -> str:
    """A console script of the running Python environment (beside ``sys.executable``), else ``name``."""
    local = Path(sys.executable).parent / name
    return str(local) if local.is_file() else name


def mlflow_ui_line(store: str | Path) -> str:
    """The shell line that opens the MLflow UI on the SQLite store file ``store``, to paste: ``mlflow``
    as this environment's console script (:func:`_tool`: it need not be on ``PATH``), every word
    quoted for a POSIX shell (``shlex.join``: a path may hold spaces), bound to 127.0.0.1 on
    MLflow's default port (:func:`viewer_command`)."""
    return shlex.join(viewer_command("mlflow", store_uri(store)))


def pick_job(results_path: Path, tracker: str, job: str | None = None) -> dict:
    """The results entry of ``job``, or of the first job whose receiver is ``tracker``.

    When the results lack what was asked for and an MLflow store that would show it is still on
    disk, the error says where and gives the line that opens it (:func:`mlflow_ui_line`): a job
    left out of the results by a later run (``simulate --job other`` rewrites them) still has its own
    store in simulate's default workspace beside the results file
    (``workspaces/<job>/server/simulate_job/mlflow.db``), and the project store
    (:func:`generator.tracking.store_path`, filled by every simulated MLflow job) still holds the
    earlier runs' jobs when the results hold no MLflow job.

    Args:
        results_path (Path): the results file (``simulate``'s, ``poc``'s or ``submit``'s).
        tracker (str): ``mlflow``, ``tensorboard`` or ``wandb``. job (str | None): the job's name.

    Raises:
        SimulationError: no results file, no such job, the job used another tracker or stored nothing.
    """
    results_path = Path(results_path)

    def fail(message: str) -> SimulationError:
        return SimulationError([Problem(str(results_path), 0, 0, "", message)])

    try:
        results = json.loads(results_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise fail("no simulation results here: run `make simulate` first") from None
    candidates = [r for r in results if r.get("receiver") == tracker and r.get("store")]
    if job:
        entry = next((r for r in results if r["name"] == job), None)
        if entry is None:
            # where simulate's default workspace (beside the results file) keeps the job's own store
            kept = results_path.parent / "workspaces" / job / SERVER_RESULT / MLFLOW_DB
            note = (
                f"; a later run rewrote the results, but its store is still at {kept}: {mlflow_ui_line(kept)}"
                if tracker == "mlflow" and kept.is_file()
                else ""
            )
            raise fail(f"no job {job!r} in the results (have: {', '.join(r['name'] for r in results)}){note}")
        if entry.get("receiver") != tracker:
            raise fail(f"job {job!r} stored its metrics with {entry.get('receiver') or 'no receiver'}, not {tracker}")
        return entry
    if not candidates:
        project = store_path(results_path)
        note = (
            f"; the project store {project} still holds the MLflow jobs of earlier simulate runs: "
            f"{mlflow_ui_line(project)}"
            if tracker == "mlflow" and is_our_store(project)
            else ""
        )
        raise fail(f"no simulated job stored metrics with {tracker}{note}")
    return candidates[0]


def pick_view(results_path: Path, tracker: str, job: str | None = None) -> tuple[str, str | dict[str, str]]:
    """What ``view`` opens: a label for the report and the store (or, TensorBoard without a job, the
    folders by job name, for :func:`logdir_spec`).

    With ``job``: that job's store (:func:`pick_job`). Without: for ``mlflow`` the project store
    (:func:`generator.tracking.store_path` of ``results_path``) when it exists and is ours and the
    results are ``simulate``'s (their ``engine``; ``poc`` and ``submit`` do not fill that store: the
    trial's ``view mlflow --results build/poc-results.json`` opened the simulated runs), else the
    first MLflow job (its label names another, if any); for ``tensorboard`` every TensorBoard job
    with a store, in results order; for ``wandb`` the first W&B job.

    Raises:
        SimulationError: see :func:`pick_job`.
    """
    if job or tracker == "wandb":
        entry = pick_job(results_path, tracker, job)
        return entry["name"], entry["store"]
    first = pick_job(results_path, tracker)  # the results exist and hold a job of this tracker
    results = json.loads(Path(results_path).read_text(encoding="utf-8"))
    stored = [r for r in results if r.get("receiver") == tracker and r.get("store")]  # first is stored[0]
    if tracker == "mlflow":
        project = store_path(results_path)
        simulated = all(r.get("engine", "simulate") == "simulate" for r in results)
        if simulated and is_our_store(project):
            return (
                f"every MLflow job simulated with its results in {Path(results_path).parent}/ (this run's and "
                f"earlier runs'; a job simulated again replaces its runs)"
            ), store_uri(project)
        if len(stored) > 1:
            return f"{first['name']} (--job {stored[1]['name']} opens another of the run's MLflow jobs)", first["store"]
        return first["name"], first["store"]
    return f"{len(stored)} TensorBoard job(s)", {r["name"]: r["store"] for r in stored}


def logdir_spec(dirs: dict[str, str]) -> str:
    """TensorBoard's ``--logdir_spec`` value ``name1:dir1,name2:dir2`` for event folders by run name.

    TensorBoard splits the value at every comma, then each part at its first colon, and reads a
    part that starts with ``/`` (or looks like ``scheme://``) as a bare path
    (``tensorboard/backend/event_processing/data_ingester.py``, ``_parse_event_files_spec``). So a
    name may not hold ``,`` or ``:`` nor start with ``/``, and a folder may not hold ``,``: those
    are refused (job names of ``jobs.yaml`` never hold them; a workspace path may).

    Raises:
        SimulationError: a name or folder TensorBoard would split wrongly, naming it.
    """
    bad = [f"job name {n!r}" for n in dirs if not n or "," in n or ":" in n or n.startswith("/")]
    bad += [f"folder {d!r}" for d in dirs.values() if "," in d]
    if bad:
        raise SimulationError(
            f"TensorBoard's --logdir_spec cannot hold {', '.join(bad)} (a comma, or a colon in a name): "
            "open one job with JOB=name (view tensorboard --job NAME)"
        )
    return ",".join(f"{name}:{folder}" for name, folder in dirs.items())


def viewer_command(tracker: str, store: str | dict[str, str], port: int | None = None) -> list[str]:
    """The command line that opens ``tracker``'s viewer on ``store``, bound to 127.0.0.1.

    Args:
        tracker (str): ``mlflow``, ``tensorboard`` or ``wandb``.
        store (str | dict[str, str]): the store; for ``tensorboard`` also event folders by job name,
            opened together with ``--logdir_spec`` (:func:`logdir_spec`).
        port (int | None): the viewer's port (None: :data:`DEFAULT_PORTS`).

    Raises:
        SimulationError: an MLflow store that is not a local SQLite file (open its own server
            instead), or folders :func:`logdir_spec` refuses.
    """
    if tracker == "mlflow":
        if not store.startswith("sqlite:///"):
            raise SimulationError(f"the metrics are on the MLflow server {store}: open it there")
        port = port or DEFAULT_PORTS["mlflow"]
        return [_tool("mlflow"), "ui", "--backend-store-uri", store, "--host", HOST, "--port", str(port)]
    if tracker == "tensorboard":
        port = port or DEFAULT_PORTS["tensorboard"]
        where = ["--logdir_spec", logdir_spec(store)] if isinstance(store, dict) else ["--logdir", store]
        return [_tool("tensorboard"), *where, "--host", HOST, "--port", str(port)]
    if tracker == "wandb":
        return [_tool("wandb"), "leet", store]
    raise SimulationError(f"unknown tracker {tracker!r}")


@contextlib.contextmanager
def viewer_tmp(results_path: str | Path, tracker: str) -> Iterator[str]:
    """The ``TMPDIR`` of one viewer: a fresh ``<results folder>/_tmp/view-<tracker>-*``
    (:data:`generator.layout.TMP_DIR`; the results folder is the project's ``build/`` by default),
    removed with everything in it when the block ends, and ``_tmp`` too if this made it and it is
    empty (another viewer's folder may be in it: each gets its own, ``tempfile.mkdtemp``).

    Args:
        results_path (str | Path): the results file the viewer's store was picked from.
        tracker (str): ``mlflow``, ``tensorboard`` or ``wandb`` (in the folder's name).

    Yields:
        str: the folder's absolute path, for :func:`viewer_env`.

    Raises:
        OSError: the folder cannot be made.
    """
    parent = Path(results_path).absolute().parent / TMP_DIR
    made = not parent.exists()
    parent.mkdir(parents=True, exist_ok=True)
    folder = tempfile.mkdtemp(prefix=f"view-{tracker}-", dir=parent)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if made:
            with contextlib.suppress(OSError):  # another viewer still uses it
                parent.rmdir()


def viewer_env(tmp: str) -> dict[str, str]:
    """This process's environment with ``TMPDIR``, ``TEMP`` and ``TMP`` set to ``tmp`` (Python's
    ``tempfile.gettempdir`` reads them in that order), for the viewer's process and its children."""
    return {**os.environ, "TMPDIR": tmp, "TEMP": tmp, "TMP": tmp}
