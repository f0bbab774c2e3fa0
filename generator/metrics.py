"""Count what a metrics receiver stored, per site and metric key, after a simulation.

MLflow: the receiver (NVFlare ``MLflowReceiver``) creates one run per site whose name starts with
the site name (``site-1-<job id>-<job>-<run name>``); we read every run of the store started
after the simulation began and count each metric's history with ``MlflowClient``. Imports mlflow
lazily (it is slow to import).
"""

from __future__ import annotations

import re
from pathlib import Path

SITE_PREFIX = re.compile(r"^(site-\d+)-")


def mlflow_store_uri(result_dir: Path, tracking_uri: str | None) -> str:
    """The tracking URI a simulated job's receiver used, as a URI readable from here.

    ``tracking_uri`` None: NVFlare 2.9's default, SQLite ``mlflow.db`` in the job's result folder
    (``<workspace>/server/simulate_job`` in the simulator). NVFlare system variables in a given
    URI are filled in as the simulator's server fills them: ``{WORKSPACE}`` = the server's
    workspace (``result_dir``'s parent), ``{JOB_ID}`` = the job id (``result_dir``'s name),
    ``{SITE_NAME}`` = ``server``.
    """
    result_dir = Path(result_dir).resolve()
    if not tracking_uri:
        return f"sqlite:///{result_dir / 'mlflow.db'}"
    for var, value in (("{WORKSPACE}", result_dir.parent), ("{JOB_ID}", result_dir.name), ("{SITE_NAME}", "server")):
        tracking_uri = tracking_uri.replace(var, str(value))
    return tracking_uri


def count_mlflow(uri: str, since_ms: int = 0) -> dict[str, dict[str, int]]:
    """Points stored per site and metric key in an MLflow store.

    Args:
        uri (str): tracking URI (``sqlite:///...`` or ``http(s)://...``).
        since_ms (int): only runs started at or after this time (milliseconds since the epoch).

    Returns:
        dict: ``{site: {metric key: number of points}}``; ``{}`` if the store holds nothing.
    """
    import logging

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return {}
    client = MlflowClient(tracking_uri=uri)
    counts: dict[str, dict[str, int]] = {}
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return {}
    for run in client.search_runs(experiments, max_results=10000):
        if run.info.start_time < since_ms:
            continue
        match = SITE_PREFIX.match(run.info.run_name or "")
        site = match.group(1) if match else run.info.run_name
        per_key = counts.setdefault(site, {})
        for key in run.data.metrics:
            per_key[key] = per_key.get(key, 0) + len(client.get_metric_history(run.info.run_id, key))
    return counts
