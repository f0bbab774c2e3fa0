"""Open a tracker's own viewer on the metrics a simulated job stored (``python -m generator view``).

Takes ``build/results.json`` (written by ``simulate``), a tracker and optionally a job; gives the
command line of that tracker's viewer on the job's store, bound to 127.0.0.1:

- ``mlflow``: ``mlflow ui --backend-store-uri sqlite:///<store> --host 127.0.0.1 --port 5000``
- ``tensorboard``: ``tensorboard --logdir <tb folder> --host 127.0.0.1 --port 6006``
- ``wandb``: ``wandb leet <wandb folder>`` (W&B's terminal viewer for local runs; no server)

Without a job, the first job of the results that used that tracker is taken.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .errors import Problem, SimulationError

DEFAULT_PORTS = {"mlflow": 5000, "tensorboard": 6006}
HOST = "127.0.0.1"


def _tool(name: str) -> str:
    """A console script of the running Python environment (beside ``sys.executable``), else ``name``."""
    local = Path(sys.executable).parent / name
    return str(local) if local.is_file() else name


def pick_job(results_path: Path, tracker: str, job: str | None = None) -> dict:
    """The results entry of ``job``, or of the first job whose receiver is ``tracker``.

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
            raise fail(f"no job {job!r} in the results (have: {', '.join(r['name'] for r in results)})")
        if entry.get("receiver") != tracker:
            raise fail(f"job {job!r} stored its metrics with {entry.get('receiver') or 'no receiver'}, not {tracker}")
        return entry
    if not candidates:
        raise fail(f"no simulated job stored metrics with {tracker}")
    return candidates[0]


def viewer_command(tracker: str, store: str, port: int | None = None) -> list[str]:
    """The command line that opens ``tracker``'s viewer on ``store``, bound to 127.0.0.1.

    Raises:
        SimulationError: an MLflow store that is not a local SQLite file (open its own server instead).
    """
    if tracker == "mlflow":
        if not store.startswith("sqlite:///"):
            raise SimulationError(f"the metrics are on the MLflow server {store}: open it there")
        port = port or DEFAULT_PORTS["mlflow"]
        return [_tool("mlflow"), "ui", "--backend-store-uri", store, "--host", HOST, "--port", str(port)]
    if tracker == "tensorboard":
        port = port or DEFAULT_PORTS["tensorboard"]
        return [_tool("tensorboard"), "--logdir", store, "--host", HOST, "--port", str(port)]
    if tracker == "wandb":
        return [_tool("wandb"), "leet", store]
    raise SimulationError(f"unknown tracker {tracker!r}")
