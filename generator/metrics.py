"""Read back what a metrics receiver stored, per site and metric key, after a simulation.

Gives :data:`Series`: ``{site: {metric key: [(step, value), ...] sorted by step}}``, from the
store of each receiver type; :func:`count_points` turns it into ``{site: {key: points}}``.

- MLflow (``MLflowReceiver``): one run per site whose name starts with the site name
  (``site-1-<job id>-<job>-<run name>``); every run started after the simulation began, each
  metric's history read with ``MlflowClient``.
- TensorBoard (``TBAnalyticsReceiver``): ``<tb_folder>/<site>/`` holds the site's event files;
  ``add_scalars(main, {k: v})`` goes to a sub-folder ``<main>_<k>`` (TensorBoard's run name), which
  is the key we report. Read with tensorboard's ``EventAccumulator``, keeping every scalar.
- W&B (``WandBReceiver``, offline): one ``offline-run-*/run-*.wandb`` transaction log per site in
  the server's ``wandb/`` folder. wandb 0.31 has no Python reader for it any more (its reader is
  the Go ``wandb leet inspect``), so :func:`read_wandb_run` reads the documented LevelDB-log
  framing itself and parses each record with wandb's own protobuf classes; the site comes from the
  run's name (``site-1-<job id>-<run name>``), each ``history`` record is one row.

Imports mlflow, tensorboard and wandb lazily (they are slow to import); the generate path never
imports this module.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from pathlib import Path
from urllib.parse import unquote

from .errors import SimulationError
from .layout import (
    MLFLOW_DB,
    SERVER_SITE,
    SIMULATE_JOB,
    SITE_PATTERN,
    TB_FOLDER_DEFAULT,
    WANDB_DIR,
    ManifestEntry,
    site_of_run,
)

#: A run name that starts with a client site's name (``site-1-<job id>-...``); group 1: the site.
SITE_PREFIX = re.compile(rf"^({SITE_PATTERN})-")

#: ``{site: {metric key: [(step, value), ...]}}``, each list sorted by step.
Series = dict[str, dict[str, list[tuple[int, float]]]]


def _site(run_name: str | None) -> str:
    match = SITE_PREFIX.match(run_name or "")
    return match.group(1) if match else (run_name or "?")


def _sorted(series: Series) -> Series:
    return {
        site: {key: sorted(points, key=lambda p: p[0]) for key, points in sorted(keys.items())}
        for site, keys in sorted(series.items())
    }


def count_points(series: Series) -> dict[str, dict[str, int]]:
    """Points per site and metric key: ``{site: {key: number of points}}``."""
    return {site: {key: len(points) for key, points in keys.items()} for site, keys in series.items()}


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
        return f"sqlite:///{sqlite_path(result_dir / MLFLOW_DB)}"
    escape = sqlite_path if tracking_uri.startswith("sqlite:///") else str
    for var, value in (("{WORKSPACE}", result_dir.parent), ("{JOB_ID}", result_dir.name), ("{SITE_NAME}", SERVER_SITE)):
        tracking_uri = tracking_uri.replace(var, escape(value))
    return tracking_uri


def sqlite_path(path: Path | str) -> str:
    """``path`` for a ``sqlite:///`` URI: ``%``, ``?`` and ``#`` escaped (SQLAlchemy's ``make_url``
    reads ``?`` as the start of a query and decodes ``%XX``); every other character as it is."""
    return str(path).replace("%", "%25").replace("?", "%3F").replace("#", "%23")


def read_mlflow(uri: str, since_ms: int = 0) -> Series:
    """Every metric point in an MLflow store, per site.

    Args:
        uri (str): tracking URI (``sqlite:///...`` or ``http(s)://...``).
        since_ms (int): only runs started at or after this time (milliseconds since the epoch).

    Returns:
        Series: ``{}`` if the store holds nothing (or the SQLite file does not exist).
    """
    import logging

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///") and not Path(unquote(uri.removeprefix("sqlite:///").split("?")[0])).is_file():
        return {}
    series: Series = {}
    try:
        with bounded_mlflow_requests():
            client = MlflowClient(tracking_uri=uri)
            experiments = [e.experiment_id for e in client.search_experiments()]
            if not experiments:
                return {}
            for run in client.search_runs(experiments, max_results=10000):
                if run.info.start_time < since_ms:
                    continue
                per_key = series.setdefault(_site(run.info.run_name), {})
                for key in run.data.metrics:
                    history = client.get_metric_history(run.info.run_id, key)
                    per_key.setdefault(key, []).extend((m.step, m.value) for m in history)
    except (MlflowException, OSError) as e:
        raise SimulationError(f"cannot read the metrics back from the MLflow store {uri}: {_short_cause(e)}") from None
    return _sorted(series)


#: Seconds to wait for an MLflow tracking server before a job starts (connect and answer).
PROBE_SECONDS = 3.0
#: MLflow's own client settings for the read-back after a run (``mlflow/environment_variables.py``):
#: its defaults (7 retries with exponential back-off, 120 s per request) wait minutes on a server
#: that went away. A value the user set in the environment is kept.
READ_BACK_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


@contextlib.contextmanager
def bounded_mlflow_requests():
    """Bound MLflow's HTTP retries and timeout (:data:`READ_BACK_ENV`) for the ``with`` block.

    MLflow reads these environment variables at each request; they are restored afterwards.
    """
    saved = {key: os.environ.get(key) for key in READ_BACK_ENV}
    for key, value in READ_BACK_ENV.items():
        os.environ.setdefault(key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _short_cause(error: BaseException) -> str:
    """What went wrong, in a few words: the OS error of a failed connection, else the message."""
    text = " ".join(str(e) for e in _chain(error))
    errno = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if errno:
        return errno.group(1).strip()
    for needle, words in (("timed out", "no answer (timed out)"), ("SSL", "TLS handshake failed")):
        if needle in text:
            return words
    return str(error).splitlines()[0][:200] if str(error) else type(error).__name__


def _chain(error: BaseException | None):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


#: The fields of MLflow's ``SearchExperiments`` response (``mlflow/protos/service.proto``).
SEARCH_EXPERIMENTS_KEYS = frozenset({"experiments", "next_page_token"})


def probe_mlflow_server(uri: str, timeout: float = PROBE_SECONDS) -> str | None:
    """Check that an MLflow tracking server answers at ``uri`` before a job streams to it.

    Asks MLflow's REST API for one experiment (``GET /api/2.0/mlflow/experiments/search``) with
    MLflow's own client (``mlflow.utils.rest_utils.http_request``, the credentials and TLS settings
    MLflow reads from the environment: ``mlflow.utils.credentials.get_default_host_creds``), no
    retry, ``timeout`` seconds per connect and read. Name resolution has no timeout of its own, so
    the request runs in a daemon thread that is abandoned after ``timeout`` + 1 s.

    Args:
        uri (str): the tracking URI; only ``http://`` and ``https://`` are probed.
        timeout (float): seconds.

    Returns:
        str | None: None when the server answered as MLflow does (or the URI is not HTTP); else
        why not: ``"connection refused"``, ``"no answer within 3 s"``, ``"it answered HTTP 404:
        not an MLflow tracking server"``, ...
    """
    if not uri.startswith(("http://", "https://")):
        return None
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    outcome: dict = {}

    def ask() -> None:
        try:
            outcome["response"] = http_request(
                get_default_host_creds(uri),
                "/api/2.0/mlflow/experiments/search",
                "GET",
                max_retries=0,
                backoff_factor=0,
                timeout=timeout,
                raise_on_status=False,
                params={"max_results": 1},
            )
        except Exception as e:  # noqa: BLE001 - any failure of the request is the answer
            outcome["error"] = e

    thread = threading.Thread(target=ask, name="jobgen-mlflow-probe", daemon=True)
    thread.start()
    thread.join(timeout + 1)
    if "error" in outcome:
        cause = _short_cause(outcome["error"])
        return f"no answer within {timeout:g} s" if "timed out" in cause else cause
    response = outcome.get("response")
    if response is None:
        return f"no answer within {timeout:g} s"
    if response.status_code in (401, 403):
        return (
            f"it refused the request (HTTP {response.status_code}): set MLflow's credentials "
            "(MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN)"
        )
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict):
        return f"it answered HTTP {response.status_code} without MLflow's JSON: not an MLflow tracking server"
    if not set(body) <= SEARCH_EXPERIMENTS_KEYS:  # protobuf JSON: {} when no experiment exists
        keys = ", ".join(sorted(map(str, body))[:3])
        return f"it answered JSON without MLflow's fields (got keys: {keys}): not an MLflow tracking server"
    return None


def read_tensorboard(logdir: Path) -> Series:
    """Every scalar point in a ``TBAnalyticsReceiver`` folder (``<logdir>/<site>/...``), per site.

    Args:
        logdir (Path): the receiver's ``tb_folder`` in the job's run folder.

    Returns:
        Series: keys are the scalar tags of the site folder, and the sub-folder names
        (``<main tag>_<key>``) of ``add_scalars``; ``{}`` if ``logdir`` does not exist.
    """
    logdir = Path(logdir)
    if not logdir.is_dir():
        return {}
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    series: Series = {}
    for site_dir in sorted(p for p in logdir.iterdir() if p.is_dir()):
        per_key = series.setdefault(site_dir.name, {})
        for folder in sorted({p.parent for p in site_dir.rglob("events.out.tfevents.*")}):
            accumulator = EventAccumulator(str(folder), size_guidance={SCALARS: 0})  # 0: keep every point
            accumulator.Reload()
            tags = accumulator.Tags()["scalars"]
            rel = folder.relative_to(site_dir).as_posix()
            for tag in tags:
                key = tag if rel == "." else rel if len(tags) == 1 else f"{rel}/{tag}"
                per_key.setdefault(key, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return _sorted(series)


#: A ``.wandb`` transaction log: a 7-byte header (``:W&B``, magic 0xBEE1 little-endian, version),
#: then LevelDB log blocks of 32 KiB holding records of ``crc32 (4) | length (2) | type (1) | data``,
#: type 1 = a whole record, 2/3/4 = first/middle/last piece; each record is a protobuf
#: ``wandb.proto.wandb_internal_pb2.Record``. The checksum is zlib's CRC-32 of the data, seeded
#: with the CRC-32 of the type byte (what wandb's writer does).
WANDB_IDENT, WANDB_MAGIC, BLOCK, RECORD_HEADER = b":W&B", 0xBEE1, 32768, 7


def _wandb_records(path: Path):
    """Yield the raw protobuf bytes of every record of a ``.wandb`` file.

    A record cut short at the end of the file (a writer stopped mid-write) ends the reading.

    Raises:
        SimulationError: not a ``.wandb`` file, or a record fails its checksum.
    """
    import struct
    import zlib

    data = Path(path).read_bytes()
    if data[:4] != WANDB_IDENT or struct.unpack("<H", data[4:6])[0] != WANDB_MAGIC:
        raise SimulationError(f"{path} is not a W&B transaction log (.wandb)")
    pos, pieces = 7, b""
    while pos + RECORD_HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < RECORD_HEADER:  # block trailer: zeros
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + RECORD_HEADER])
        if crc == length == kind == 0:  # zero padding to the end of the block
            pos += left
            continue
        body = data[pos + RECORD_HEADER : pos + RECORD_HEADER + length]
        if len(body) < length:
            return
        if zlib.crc32(body, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            raise SimulationError(f"{path}: record at byte {pos} fails its checksum")
        pos += RECORD_HEADER + length
        if kind == 1:
            yield body
        elif kind == 2:
            pieces = body
        elif kind == 3:
            pieces += body
        elif kind == 4:
            yield pieces + body


def read_wandb_run(path: Path) -> tuple[str, dict[str, list[tuple[int, float]]]]:
    """The site and the metric points of one W&B run's ``.wandb`` transaction log.

    Each ``history`` record is one row; each numeric item whose key does not start with ``_`` is a
    point at the row's ``_step``. The site comes from the ``run`` record's display name
    (NVFlare's ``<site>-<job id>-<run name>``).

    Returns:
        tuple: ``(site, {key: [(step, value), ...]})``.

    Raises:
        SimulationError: the file is not a readable ``.wandb`` log.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    site, points = None, {}
    for raw in _wandb_records(path):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            site = _site(record.run.display_name)
        elif kind == "history":
            row = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            step = int(row.get("_step", record.history.step.num))
            for key, value in row.items():
                if not key.startswith("_") and isinstance(value, (int, float)) and not isinstance(value, bool):
                    points.setdefault(key, []).append((step, float(value)))
    return site or Path(path).parent.name, points


def read_wandb(wandb_dir: Path) -> Series:
    """Every metric point of the W&B runs in ``wandb_dir`` (``<dir>/offline-run-*/``), per site.

    Returns:
        Series: ``{}`` if ``wandb_dir`` holds no run.

    Raises:
        SimulationError: a run cannot be read (see :func:`read_wandb_run`).
    """
    series: Series = {}
    for log in sorted(Path(wandb_dir).glob("*run-*/*.wandb")):
        site, points = read_wandb_run(log)
        per_key = series.setdefault(site, {})
        for key, values in points.items():
            per_key.setdefault(key, []).extend(values)
    return _sorted(series)


def store_location(info: ManifestEntry, server_dir: Path) -> str | None:
    """Where a simulated job's receiver stored its points.

    Args:
        info (ManifestEntry): the job's manifest entry (``receiver``, ``tracking_uri``, ``tb_folder``).
        server_dir (Path): the simulator's server folder, ``<workspace>/server``.

    Returns:
        str | None: an MLflow tracking URI, or a folder path; None for a job without receiver.
    """
    receiver = info.receiver
    result_dir = Path(server_dir) / SIMULATE_JOB
    if receiver == "mlflow":
        return mlflow_store_uri(result_dir, info.tracking_uri)
    if receiver == "tensorboard":
        return str((result_dir / (info.tb_folder or TB_FOLDER_DEFAULT)).resolve())
    if receiver == "wandb":
        return str((result_dir / WANDB_DIR).resolve())  # OrderedWandBReceiver: <run dir>/wandb
    return None


def by_site(series: Series, sites: list[str]) -> Series:
    """``series`` keyed by the job's ``sites``: a run name that starts with ``<site>-`` (MLflow's and
    W&B's run name for a site, ``<site>-<job id>-<job>-<run name>``) is that site's, the longest
    matching site name first (``hospital-a`` and ``hospital-a-2``); a key that is a site, or matches
    none, stays as it is. Points of two runs of one site are put together."""
    out: Series = {}
    for key, keys in series.items():
        merged = out.setdefault(site_of_run(key, sites) or key, {})
        for metric, points in keys.items():
            merged.setdefault(metric, []).extend(points)
    return _sorted(out)


def read_store(receiver: str, store: str, since_ms: int = 0, sites: list[str] | None = None) -> Series:
    """Every metric point in a receiver's store (see :func:`store_location`), per site.

    Args:
        sites (list[str] | None): the job's sites (``ManifestEntry.sites``); runs named after a site
            that is not ``site-<N>`` (``clients: [hospital-a, ...]``) are keyed by it (:func:`by_site`).
            None: only ``site-<N>`` names are recognised.

    Raises:
        SimulationError: the store exists but cannot be read.
    """
    if receiver == "mlflow":
        series = read_mlflow(store, since_ms)
    elif receiver == "tensorboard":
        series = read_tensorboard(Path(store))
    elif receiver == "wandb":
        series = read_wandb(Path(store))
    else:
        raise SimulationError(f"cannot read the store of receiver type {receiver!r}")
    return by_site(series, sites) if sites else series
