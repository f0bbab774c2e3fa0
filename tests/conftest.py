"""Shared fixtures: a throw-away project folder, the CLI run as a user runs it, tree snapshots."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "tests" / "cases"
GOLDEN = ROOT / "tests" / "golden"
INITIAL_MODEL = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]  # NPModelPersistor's fallback model


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", help="rewrite tests/golden/ from jobs.yaml")


@pytest.fixture
def update_golden(request) -> bool:
    return request.config.getoption("--update-golden")


@pytest.fixture
def project(tmp_path) -> Path:
    """A copy of the project's user-facing files (jobs.yaml, client_scripts/) in a temp folder."""
    shutil.copy(ROOT / "jobs.yaml", tmp_path / "jobs.yaml")
    shutil.copytree(ROOT / "client_scripts", tmp_path / "client_scripts")
    return tmp_path


@pytest.fixture
def cli(project, monkeypatch, capsys):
    """Run the CLI in-process in ``project``; gives (exit code, stdout lines, stderr lines), never a traceback."""
    from generator.cli import main

    monkeypatch.chdir(project)

    def run(*args: str) -> tuple[int, list[str], list[str]]:
        code = main(list(args))
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out.splitlines(), err.splitlines()

    return run


def run_cli(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python -m generator ARGS`` in ``cwd`` as a user would; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "generator", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file (folder: 'dir'; symlink: '-> target', not followed)."""
    out = {}
    if not folder.exists():
        return out
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        else:
            out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def shipped_jobs() -> list[dict]:
    """The job entries of the shipped jobs.yaml, as written (no defaults merged)."""
    import yaml

    return yaml.safe_load((ROOT / "jobs.yaml").read_text(encoding="utf-8"))["jobs"]


def shipped_job_names() -> list[str]:
    """Names of the shipped jobs, in file order."""
    return [job["name"] for job in shipped_jobs()]


def example_jobs_yaml(nvflare_version: str | None = None) -> str:
    """The shipped jobs.yaml cut to NVFlare's example (jobs with no receiver or an MLflow one).

    Those are the jobs both NVFlare lines can run and FedJob's own API can build with the same
    classes; ``nvflare_version`` is added to ``defaults`` when given.
    """
    import yaml

    data = yaml.safe_load((ROOT / "jobs.yaml").read_text(encoding="utf-8"))
    data["jobs"] = [j for j in data["jobs"] if (j.get("receiver") or {"type": "mlflow"})["type"] == "mlflow"]
    if nvflare_version:
        data.setdefault("defaults", {})["nvflare_version"] = nvflare_version
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
