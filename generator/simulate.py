"""Simulate stage: run generated job folders with ``nvflare simulator`` and judge the outcome.

Takes the output folder of ``generate`` (its manifest says each job's clients, rounds and
receiver); runs ``nvflare simulator -w <workspace>/<job> -n N -t N <out>/<job>`` per job, prints
one progress line per round, and decides success from NVFlare's own records, never from console
text (a client script can print anything): the FedAvg controller's records in the server's
``log.json`` must show every round started, the model saved after the last one and the workflow
finished (:mod:`generator.judge`); the simulator must exit 0; NVFlare's loggers must have logged
no error at any site; the server's model file must be saved during this run; and a job with a
receiver must have stored metrics from every site (and exactly the counts of
``expect.metric_points_per_site``), read back from the receiver's own store
(:mod:`generator.metrics`). A failed job's reason starts with the first exception each client
raised in its own code. A job that streams to an MLflow tracking server is not started when the
server does not answer (:func:`generator.metrics.probe_mlflow_server`). Each metrics job also gets
a plot of what was stored, ``<reports>/<job>.png`` (:mod:`generator.report`); the results file and
the plots never overwrite a file the generator did not write (:mod:`generator.outputs`).
"""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import OptionError, OutputError, Problem, SimulationError
from .judge import RoundTracker, client_exceptions, nvflare_errors
from .lines import installed_line
from .metrics import PROBE_SECONDS, count_points, probe_mlflow_server, read_store, store_location
from .outputs import check_reports, check_results, record_report, write_results
from .write import read_manifest

WORKSPACE_MARKER = ".jobgen-workspaces"
#: Seconds between two reads of the server's records while a job runs (progress lines).
TICK_SECONDS = 0.5

#: Where the simulator puts the server's result (NVFlare simulator layout).
SERVER_RESULT = Path("server") / "simulate_job"
#: NPModelPersistor defaults: ``model_dir="models"``, ``model_name="server.npy"``.
FINAL_MODEL = SERVER_RESULT / "models" / "server.npy"


@dataclass
class JobResult:
    """The outcome of simulating one job.

    Attributes:
        name (str): job name.
        ok (bool): every check passed.
        rounds (int): ``num_rounds`` of the job; ``rounds_started``: rounds the server started.
        wall_seconds (float): wall time of the simulator process, in seconds.
        final_model (list | None): the server's final model (``server.npy``) as nested lists: saved
            by this run after the last round of a FedAvg run that finished; else None.
        last_model (list | None), model_round (int): the model this run saved when it is not
            final, and the round (1-based) after which it was saved (0: none saved).
        receiver (str | None): the receiver ``type`` (mlflow, tensorboard, wandb) if any.
        metric_points (dict): ``{site: {key: points}}`` found in the receiver's store.
        store (str | None): the receiver's store (MLflow tracking URI, or folder) if any.
        report (str | None): the PNG plotting the stored metrics, if any point was stored.
        workspace (str), log (str): the simulator workspace and the console log.
        problems (list[str]): why the job failed (empty when ``ok``).
    """

    name: str
    ok: bool = False
    rounds: int = 0
    rounds_started: int = 0
    wall_seconds: float = 0.0
    final_model: list | None = None
    last_model: list | None = None
    model_round: int = 0
    receiver: str | None = None
    metric_points: dict = field(default_factory=dict)
    store: str | None = None
    report: str | None = None
    workspace: str = ""
    log: str = ""
    problems: list = field(default_factory=list)


def nvflare_command() -> list[str]:
    """The ``nvflare`` CLI of the running Python environment (beside ``sys.executable``)."""
    local = Path(sys.executable).parent / "nvflare"
    if local.is_file():
        return [str(local)]
    found = shutil.which("nvflare")
    if not found:
        raise SimulationError("nvflare is not installed in this Python environment: run `make setup`")
    return [found]


def prepare_workspace(root: Path, name: str) -> Path:
    """Make ``root/name`` a fresh, empty simulator workspace.

    Raises:
        OutputError: ``root`` exists, is not empty and was not made by us (no marker file).
    """
    root = Path(root)
    if root.exists() and any(root.iterdir()) and not (root / WORKSPACE_MARKER).is_file():
        raise OutputError(
            [
                Problem(
                    str(root),
                    0,
                    0,
                    "",
                    f"holds files the generator did not write (no {WORKSPACE_MARKER}); "
                    "refusing to clear it: choose another --workspace",
                )
            ]
        )
    root.mkdir(parents=True, exist_ok=True)
    (root / WORKSPACE_MARKER).write_text("simulator workspaces made by nvflare-jobgen\n")
    ws = root / name
    if ws.exists():
        shutil.rmtree(ws)
    return ws


def _run(cmd: list[str], log: Path, on_tick) -> int:
    env = dict(os.environ)
    # A sub-process client is started as `python3 ...`: make that this environment's Python.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    # W&B runs must land in the server's folder of this workspace, where the check reads them.
    env.pop("WANDB_DIR", None)
    with open(log, "w", encoding="utf-8") as sink:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, errors="replace"
        )
        polled = 0.0
        for line in proc.stdout:
            sink.write(line)
            if time.monotonic() - polled >= TICK_SECONDS:  # the console only paces the polling: never read
                polled = time.monotonic()
                on_tick()
        code = proc.wait()
    on_tick()
    return code


def _metric_problems(info: dict, counts: dict) -> list[str]:
    problems = []
    sites = [f"site-{i}" for i in range(1, info["num_clients"] + 1)]
    for site in sites:
        if not counts.get(site):
            problems.append(f"no metric from {site} arrived in the receiver's store")
    for key, expected in info["expect"].get("metric_points_per_site", {}).items():
        for site in sites:
            got = counts.get(site, {}).get(key, 0)
            if got != expected:
                problems.append(f"{site} stored {got} {key!r} points, expected {expected}")
    return problems


def tracking_server_problem(info: dict, server_dir: Path, timeout: float = PROBE_SECONDS) -> str | None:
    """Why a job's MLflow tracking server cannot be used, checked before the job starts.

    Only an ``http(s)://`` ``tracking_uri`` of an ``mlflow`` receiver is checked (a SQLite store
    needs no server). MLflow's client inside NVFlare's ``MLflowReceiver`` retries a dead server for
    minutes, silently; this answers within ``timeout`` + 1 seconds.

    Args:
        info (dict): the job's manifest entry. server_dir (Path): ``<workspace>/server``.
        timeout (float): seconds per connect and answer.

    Returns:
        str | None: the reason, naming the URI; None when the server answered as MLflow does.
    """
    if info.get("receiver") != "mlflow" or not info.get("tracking_uri"):
        return None
    uri = store_location(info, server_dir)
    why = probe_mlflow_server(uri, timeout)
    if why is None:
        return None
    return (
        f"the MLflow tracking server {uri} (receiver.tracking_uri) cannot be used: {why}; "
        "the job was not started (start the server, or fix tracking_uri)"
    )


def simulate_job(
    out: Path, workspace_root: Path, name: str, info: dict, progress=print, reports: Path | None = None
) -> JobResult:
    """Run one generated job in the simulator and check what it produced.

    Args:
        out (Path): the generated jobs folder. workspace_root (Path): where workspaces go.
        name (str): the job. info (dict): its manifest entry (see ``pipeline.job_info``).
        progress (callable): called with one line per started round (from the server's records).
        reports (Path | None): where to write ``<job>.png`` for a metrics job (None: no plot).

    Returns:
        JobResult: ``ok`` False with ``problems`` when any check failed; the first problems are
        the exceptions the clients raised in their own code, when there are any.
    """
    result = JobResult(name=name, rounds=info["num_rounds"], receiver=info.get("receiver"))
    line = info.get("nvflare_version")
    if line and line != installed_line():
        result.problems.append(
            f"written for NVFlare {line} (nvflare_version) but this environment's nvflare is the "
            f"{installed_line()} line: simulate it with NVFlare {line}, or generate it for {installed_line()}"
        )
        return result
    ws = prepare_workspace(workspace_root, name)
    log = Path(workspace_root) / f"{name}.log"
    result.workspace = str(ws)
    unreachable = tracking_server_problem(info, ws / "server")
    if unreachable:
        result.problems.append(unreachable)
        return result
    result.log = str(log)
    n = str(info["num_clients"])
    cmd = nvflare_command() + ["simulator", "-w", str(ws), "-n", n, "-t", n, str(Path(out) / name)]
    started, started_epoch = time.monotonic(), time.time()
    tracker = RoundTracker(ws, result.rounds)

    def on_tick() -> None:
        for number in tracker.poll():
            progress(f"  {name}: round {number} of {result.rounds} ({time.monotonic() - started:.1f} s)")

    code = _run(cmd, log, on_tick)
    result.wall_seconds = round(time.monotonic() - started, 2)
    judge_run(result, ws, tracker, code, started_epoch)
    if result.receiver:
        _check_metrics(result, info, ws, since_ms=int(started_epoch * 1000) - 1000, reports=reports)
    if result.problems:
        result.problems[:0] = client_exceptions(ws, log)
    result.ok = not result.problems
    return result


def judge_run(result: JobResult, ws: Path, tracker: RoundTracker, code: int | None, started_epoch: float) -> None:
    """Fill ``result`` from NVFlare's records of a finished simulator run (metrics aside).

    Args:
        result (JobResult): the job's result; ``rounds_started``, the models and ``problems`` are set.
        ws (Path): the job's simulator workspace. tracker (RoundTracker): fed during the run; it
            reads what is left of the server's log here.
        code (int | None): the simulator's exit code (None: it did not exit by itself).
        started_epoch (float): when the run started, seconds since the epoch: an older model file
            is not this run's.
    """
    tracker.poll()
    result.rounds_started = tracker.rounds_started
    if code not in (0, None):
        result.problems.append(f"nvflare simulator exited with code {code}")
    result.problems += tracker.problems()
    model = ws / FINAL_MODEL
    if model.is_file() and model.stat().st_mtime >= started_epoch - 1:
        import numpy as np

        params = np.load(model).tolist()
        if tracker.model_is_final:
            result.final_model, result.model_round = params, tracker.saved_round
        else:
            result.last_model, result.model_round = params, tracker.saved_round
    if result.last_model is not None:
        saved = (
            f"after round {result.model_round} of {result.rounds}" if result.model_round else "before any round ended"
        )
        result.problems.append(f"the model saved at {model} is not final: it was saved {saved}")
    elif result.final_model is None:
        result.problems.append(f"no final model saved at {model}")
    result.problems += nvflare_errors(ws)


def _check_metrics(result: JobResult, info: dict, ws: Path, since_ms: int, reports: Path | None) -> None:
    """Read the receiver's store, compare with the expectations, plot what arrived."""
    result.store = store_location(info, ws / "server")
    try:
        series = read_store(result.receiver, result.store, since_ms=since_ms)
    except SimulationError as e:
        result.problems += [p.message for p in e.problems]
        return
    result.metric_points = count_points(series)
    result.problems += _metric_problems(info, result.metric_points)
    if reports and any(any(keys.values()) for keys in series.values()):
        from .report import plot_metrics

        path = Path(reports) / f"{result.name}.png"
        plot_metrics(result.name, series, path)
        record_report(Path(reports), path)
        result.report = str(path)


def _model_text(model) -> str:
    if model is None:
        return "-"
    return "[" + ", ".join("[" + " ".join(f"{v:g}" for v in row) + "]" for row in model) + "]"


def model_cell(result: JobResult) -> str:
    """The table's "final model" cell: the final model, or a saved model marked as not final."""
    if result.final_model is not None:
        return _model_text(result.final_model)
    if result.last_model is not None:
        after = f"after round {result.model_round} of {result.rounds}" if result.model_round else "no round saved"
        return f"not final ({after}): {_model_text(result.last_model)}"
    return "-"


def _points_text(points: dict) -> str:
    if not points:
        return "-"
    return "; ".join(
        f"{site}: " + (", ".join(f"{k}={v}" for k, v in sorted(keys.items())) or "no points")
        for site, keys in sorted(points.items())
    )


def print_table(results: list[JobResult], stream=sys.stdout) -> None:
    """One row per job: status, rounds, wall time (s), final model, metric points per site."""
    rows = [("job", "status", "rounds", "wall s", "final model", "metric points per site")]
    for r in results:
        rows.append(
            (
                r.name,
                "ok" if r.ok else "FAILED",
                f"{r.rounds_started}/{r.rounds}",
                f"{r.wall_seconds:.1f}",
                model_cell(r),
                _points_text(r.metric_points),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=stream)


def simulate_all(
    out: str | Path,
    workspace: str | Path,
    names: list[str] | None = None,
    results_path: str | Path | None = None,
    reports: str | Path | None = None,
) -> bool:
    """Simulate every generated job (or those in ``names``), print a table and write results.

    Args:
        out: the generated jobs folder. workspace: the workspaces folder.
        names: only these jobs. results_path: where to write ``results.json`` (None: nowhere).
        reports: where to write one PNG per metrics job (None: no plots).

    Returns:
        bool: True when every job passed its checks.

    Raises:
        OptionError: ``out`` is not a folder or holds no jobs, or a requested job is not there.
        OutputError: ``out`` is not a generated folder, the workspace is not ours, or the results
            file or a plot would overwrite a file the generator did not write (checked before any
            job runs).
    """
    out = Path(out)
    if not out.is_dir():
        why = "is a file, not a folder of generated jobs" if out.exists() else "no such folder"
        raise OptionError([Problem(str(out), 0, 0, "", f"--out: {why}: run `make generate` first")])
    manifest = read_manifest(out)["jobs"]
    if not manifest:
        raise OptionError([Problem(str(out), 0, 0, "", "--out: no generated jobs here: run `make generate` first")])
    unknown = [n for n in names or [] if n not in manifest]
    if unknown:
        raise OptionError([Problem(str(out), 0, 0, "", f"--job {n!r}: {_no_such_job(n, manifest)}") for n in unknown])
    selected = list(dict.fromkeys(names or manifest))
    managed = {"the generated jobs folder": out, "the workspaces folder": Path(workspace)}
    problems = check_results(Path(results_path), managed) if results_path else []
    if reports:
        problems += check_reports(Path(reports), [n for n in selected if manifest[n].get("receiver")], managed)
    if problems:
        raise OutputError(problems)
    results = []
    for name in selected:
        print(
            f"{name}: simulating {manifest[name]['num_clients']} clients, {manifest[name]['num_rounds']} rounds",
            flush=True,
        )
        result = simulate_job(
            out, Path(workspace), name, manifest[name], progress=lambda line: print(line, flush=True), reports=reports
        )
        status = "ok" if result.ok else "FAILED"
        print(f"{name}: {status} in {result.wall_seconds:.1f} s; log: {result.log or 'none (not started)'}", flush=True)
        for problem in result.problems:
            print(f"{name}: {problem}", file=sys.stderr, flush=True)
        if result.store:
            print(f"{name}: metrics store ({result.receiver}): {result.store}", flush=True)
        if result.report:
            print(f"{name}: metrics plot: {result.report}", flush=True)
        results.append(result)
    print()
    print_table(results)
    if results_path:
        write_results(Path(results_path), [asdict(r) for r in results])
    return all(r.ok for r in results)


def _no_such_job(name: str, manifest: dict) -> str:
    close = difflib.get_close_matches(name, list(manifest), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f" (have: {', '.join(manifest)})"
    return f"no generated job of that name{hint}"
