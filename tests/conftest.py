"""Shared fixtures: a throw-away project folder, the CLI run in-process or as a user runs it, tree snapshots.

Test tiers (markers registered in pyproject.toml): ``simulator`` tests run the real ``nvflare
simulator``; ``slow`` tests start processes or wait on the clock by design (process trees, stop
signals, timeouts, W&B's service, the CLI as a separate interpreter). ``make test-fast`` runs
``-m "not simulator and not slow"`` with the ``fast`` hypothesis profile; ``make test`` runs
everything with the ``full`` profile (the example counts each property test names).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

try:
    from hypothesis import settings
except ImportError:  # .venv-nvflare27 runs only the equivalence harness and has no hypothesis
    settings = None

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "tests" / "cases"
GOLDEN = ROOT / "tests" / "golden"
INITIAL_MODEL = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]  # NPModelPersistor's fallback model

#: matplotlib keeps its config and font cache under ``$HOME`` unless ``MPLCONFIGDIR`` says where, and
#: reads it once per process, at its first import. The tool's own runs point it into their workspace
#: (``generator.plot.matplotlib_dir``); a test process that plots in-process gets a temp folder of its
#: own (removed at exit), so the suite writes nothing to ``$HOME``. :func:`run_cli` leaves it out, so a
#: command a test runs does what it does for a user.
_TEST_MPLCONFIGDIR = None
if "MPLCONFIGDIR" not in os.environ:
    _TEST_MPLCONFIGDIR = os.environ["MPLCONFIGDIR"] = tempfile.mkdtemp(prefix="jobgen-tests-mpl-")
    atexit.register(shutil.rmtree, _TEST_MPLCONFIGDIR, True)


#: Hypothesis profiles, chosen with ``--hypothesis-profile``: ``full`` (the default, ``make test``) runs each
#: property test's own example count; ``fast`` (``make test-fast``) caps every count at its ``max_examples``.
if settings is not None:
    settings.register_profile("full")
    settings.register_profile("fast", max_examples=20)
    settings.load_profile("full")


def examples(count: int) -> int:
    """``count`` hypothesis examples, or the ``fast`` profile's ``max_examples`` if that profile is loaded and smaller.

    Read when a test module is imported, after hypothesis' pytest plugin loaded ``--hypothesis-profile``.
    """
    fast = settings.get_profile("fast")
    return min(count, fast.max_examples) if settings.default is fast else count


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", help="rewrite tests/golden/ from jobs.yaml")


#: ``make test`` runs pytest-xdist with ``--dist loadscope``: every test of one module (or of one
#: test class) runs on one worker, so each module- or class-scoped fixture that runs simulations or a
#: POC system (minutes each) is built once, and only one POC system runs at a time (all POC tests are
#: in ``test_poc``). Work that should spread over the workers is split into test classes with
#: class-scoped fixtures (the equivalence harness's simulated pairs: one class per pair). Not
#: ``--dist loadgroup`` with ``xdist_group`` marks: pytest-xdist 3.8 adds the group by setting
#: ``item._nodeid``, which pytest 9.2's ``Item.nodeid`` no longer reads (it reads ``_id``), so a
#: marked test's ``nodeid`` keeps no ``@group``, grouped tests were spread over both workers and
#: each shared simulation and the POC system ran on both at once.


def _poc_cannot_start() -> str | None:
    """Why NVFlare's POC system cannot start with this Python environment, not even through links
    (``generator.pocsystem.check_poc_paths``, which ``poc`` refuses with), else None."""
    import tempfile

    from generator.pocsystem import check_poc_paths

    problems = check_poc_paths(Path(tempfile.gettempdir()))
    return f"{problems[0].file}: {problems[0].message}" if problems else None


def pytest_collection_modifyitems(config, items):
    """Skip the tests that start a POC system when this Python environment cannot start one (say why)."""
    poc_blocked = None
    for item in items:
        if item.module.__name__ == "test_poc" and item.get_closest_marker("simulator"):
            poc_blocked = poc_blocked if poc_blocked is not None else (_poc_cannot_start() or "")
            if poc_blocked:
                item.add_marker(pytest.mark.skip(reason=f"POC cannot start here: {poc_blocked}"))


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


def make_recipe(target: str, *assignments: str) -> str:
    """The ``python -m generator TARGET ...`` line ``make -n TARGET ASSIGNMENTS`` would run in the
    repository (asserting make succeeded and printed exactly one such line)."""
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", target, *assignments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    (command,) = [line for line in result.stdout.splitlines() if f"-m generator {target} " in line]
    return command


def run_main(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """Run ``generator.cli.main(ARGS)`` in this process with ``cwd`` as working folder.

    What ``python -m generator ARGS`` does (``generator/__main__.py``: ``sys.exit(main())``) without
    starting an interpreter: the exit code is ``main``'s return value or, for a usage error, argparse's
    ``SystemExit`` code; stdout and stderr are captured as text. The result has the shape of
    :func:`run_cli`'s. An exception ``main`` lets through is not caught: it fails the test, as a
    traceback would fail a user's run.
    """
    out, err = io.StringIO(), io.StringIO()
    before = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main_module().main(list(args))
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        os.chdir(before)
    return subprocess.CompletedProcess(["generator", *args], code, out.getvalue(), err.getvalue())


def run_main_while_held(
    cwd: Path, folder: Path, *args: str, shared: bool = False
) -> tuple[subprocess.CompletedProcess, dict[str, str]]:
    """:func:`run_main` while another run holds ``folder`` (``generator.outputs.lock_folder``, what
    a running ``simulate``/``poc``/``submit`` holds on its workspace, or ``shared``: on the
    generated jobs it runs); the result and the :func:`snapshot` of ``cwd`` taken just before it."""
    from generator.outputs import lock_folder

    fd = lock_folder(folder, shared=shared)
    try:
        before = snapshot(cwd)
        return run_main(cwd, *args), before
    finally:
        os.close(fd)


def main_module():
    """``generator.cli``, imported on first use (collecting the tests imports no generator module)."""
    from generator import cli

    return cli


def run_cli(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python -m generator ARGS`` in ``cwd`` as a user would; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "generator", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**user_environ(), "PYTHONPATH": str(ROOT)},
    )


def user_environ() -> dict[str, str]:
    """This process's environment without what the test session added (``_TEST_MPLCONFIGDIR``)."""
    return {k: v for k, v in os.environ.items() if not (k == "MPLCONFIGDIR" and v == _TEST_MPLCONFIGDIR)}


def simulate_project(project: Path, text: str, timeout: float = 900, files: dict[str, str] | None = None):
    """Write ``text`` as the project's jobs.yaml beside the shipped client scripts (and ``files``:
    path in the project -> text), generate and simulate as a user does.

    Returns:
        tuple: generate's and simulate's ``CompletedProcess`` and ``build/results.json`` by job name.
    """
    (project / "jobs.yaml").write_text(text, encoding="utf-8")
    shutil.copytree(ROOT / "client_scripts", project / "client_scripts")
    for name, content in (files or {}).items():
        (project / name).write_text(content, encoding="utf-8")
    generated = run_cli(project, "generate")
    assert generated.returncode == 0, generated.stderr
    result = run_cli(project, "simulate", timeout=timeout)
    results = {r["name"]: r for r in json.loads((project / "build/results.json").read_text())}
    return generated, result, results


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


def shipped_defaults() -> dict:
    """The ``defaults`` of the shipped jobs.yaml, as written."""
    import yaml

    return yaml.safe_load((ROOT / "jobs.yaml").read_text(encoding="utf-8"))["defaults"]


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


def progress_lines(stdout: str, name: str) -> list[str]:
    """``  <name>: round N of R`` lines (without the time) of the job's last run in ``stdout``: a
    job run again after NVFlare's simulator lost a client before its worker started (its line ends
    "running the job again") starts its rounds over, and only the second run's count."""
    lines = stdout.splitlines()
    again = [i for i, line in enumerate(lines) if line.startswith(f"  {name}: ") and line.endswith("job again")]
    last = lines[again[-1] + 1 :] if again else lines
    return [line.split(" (")[0] for line in last if line.startswith(f"  {name}: round")]
