"""Simulate stage: run generated job folders with ``nvflare simulator`` and judge the outcome.

Takes the output folder of ``generate`` (its manifest says each job's clients, rounds and
receiver); runs ``nvflare simulator -w <workspace>/<job> -n N -t N <out>/<job>`` per job, prints
one progress line per round, and decides success from the run's outputs, because the simulator
can exit 0 after a failed run: the server's final model must be saved during this run, every
``error_log.txt`` must be empty, and a job with a receiver must have stored metrics from every
site (and exactly the counts of ``expect.metric_points_per_site``), read back from the receiver's
own store (:mod:`generator.metrics`). Each metrics job also gets a plot of what was stored,
``<reports>/<job>.png`` (:mod:`generator.report`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import OutputError, Problem, SimulationError
from .lines import installed_line
from .metrics import count_points, read_store, store_location
from .write import read_manifest

WORKSPACE_MARKER = ".jobgen-workspaces"
ROUND_STARTED = re.compile(r"Round (\d+) started")

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
        final_model (list | None): the server's final model (``server.npy``) as nested lists.
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


def _run(cmd: list[str], log: Path, result: JobResult, progress, started: float) -> int:
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
        for line in proc.stdout:
            sink.write(line)
            m = ROUND_STARTED.search(line)
            if m:
                result.rounds_started = int(m.group(1)) + 1
                progress(
                    f"  {result.name}: round {result.rounds_started} of {result.rounds} "
                    f"({time.monotonic() - started:.1f} s)"
                )
        return proc.wait()


def _error_logs(ws: Path) -> list[str]:
    """One line per non-empty error log: its first error, or the exception of a traceback.

    NVFlare 2.9 names each site's error log ``error_log.txt``, NVFlare 2.7 ``log_error.txt``.
    """
    problems = []
    for path in sorted([*ws.glob("*/error_log.txt"), *ws.glob("*/log_error.txt")]):
        lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        if not lines:
            continue
        first = lines[0]
        if first.rstrip().endswith("Traceback (most recent call last):"):
            first = next((line for line in lines[1:] if not line.startswith((" ", "\t"))), first)
        problems.append(f"errors logged in {path}: {first.strip()[:300]}")
    return problems


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


def simulate_job(
    out: Path, workspace_root: Path, name: str, info: dict, progress=print, reports: Path | None = None
) -> JobResult:
    """Run one generated job in the simulator and check what it produced.

    Args:
        out (Path): the generated jobs folder. workspace_root (Path): where workspaces go.
        name (str): the job. info (dict): its manifest entry (see ``pipeline.job_info``).
        progress (callable): called with one line per started round.
        reports (Path | None): where to write ``<job>.png`` for a metrics job (None: no plot).

    Returns:
        JobResult: ``ok`` False with ``problems`` when any check failed.
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
    result.workspace, result.log = str(ws), str(log)
    n = str(info["num_clients"])
    cmd = nvflare_command() + ["simulator", "-w", str(ws), "-n", n, "-t", n, str(Path(out) / name)]
    started, started_epoch = time.monotonic(), time.time()
    code = _run(cmd, log, result, progress, started)
    result.wall_seconds = round(time.monotonic() - started, 2)

    if code != 0:
        result.problems.append(f"nvflare simulator exited with code {code}")
    model = ws / FINAL_MODEL
    if model.is_file() and model.stat().st_mtime >= started_epoch - 1:
        import numpy as np

        result.final_model = np.load(model).tolist()
    else:
        result.problems.append(f"no final model saved at {model}")
    if result.rounds_started != result.rounds:
        result.problems.append(f"{result.rounds_started} of {result.rounds} rounds started")
    result.problems += _error_logs(ws)
    if result.receiver:
        _check_metrics(result, info, ws, since_ms=int(started_epoch * 1000) - 1000, reports=reports)
    result.ok = not result.problems
    return result


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
        result.report = str(path)


def _model_text(model) -> str:
    if model is None:
        return "-"
    return "[" + ", ".join("[" + " ".join(f"{v:g}" for v in row) + "]" for row in model) + "]"


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
                _model_text(r.final_model),
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
        OutputError: ``out`` is not a generated folder, or the workspace is not ours.
        SimulationError: ``out`` holds no jobs, or a requested job is not there.
    """
    out = Path(out)
    if not out.exists():
        raise SimulationError([Problem(str(out), 0, 0, "", "no generated jobs here: run `make generate` first")])
    manifest = read_manifest(out)["jobs"]
    if not manifest:
        raise SimulationError([Problem(str(out), 0, 0, "", "no generated jobs here: run `make generate` first")])
    unknown = [n for n in names or [] if n not in manifest]
    if unknown:
        raise SimulationError(
            [Problem(str(out), 0, 0, "", f"no generated job {n!r} (have: {', '.join(manifest)})") for n in unknown]
        )
    results = []
    for name in names or list(manifest):
        print(
            f"{name}: simulating {manifest[name]['num_clients']} clients, {manifest[name]['num_rounds']} rounds",
            flush=True,
        )
        result = simulate_job(
            out, Path(workspace), name, manifest[name], progress=lambda line: print(line, flush=True), reports=reports
        )
        status = "ok" if result.ok else "FAILED"
        print(f"{name}: {status} in {result.wall_seconds:.1f} s; log: {result.log}", flush=True)
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
        Path(results_path).parent.mkdir(parents=True, exist_ok=True)
        Path(results_path).write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n", encoding="utf-8")
    return all(r.ok for r in results)
