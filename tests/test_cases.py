"""Folder-driven spec tests: every file in cases/valid passes, every file in cases/invalid fails.

Each ``cases/invalid/NAME.yaml`` has ``NAME.expected``: the exact stderr lines the CLI must print
(the file is copied to ``jobs.yaml`` in a fresh project, so messages start with ``jobs.yaml:``).
A failing case must exit 2, print no traceback, and leave an earlier ``build/`` byte-identical.
Each ``cases/warnings/NAME.yaml`` generates (exit 0) and prints exactly ``NAME.expected``: the warnings.

Cases run the CLI in-process (``run_main``: ``generator.cli.main`` with captured output). One valid
and one invalid case also run as ``python -m generator`` in its own interpreter (marked ``slow``):
the exit code, stderr and untouched ``build/`` a user sees from the real command.
"""

from __future__ import annotations

import re
import shutil

import pytest
import yaml
from conftest import CASES, ROOT, run_cli, run_main, snapshot

VALID = sorted((CASES / "valid").glob("*.yaml"))
INVALID = sorted((CASES / "invalid").glob("*.yaml"))
WARNINGS = sorted((CASES / "warnings").glob("*.yaml"))

#: Every line a bad jobs.yaml produces: FILE:LINE:COLUMN: then the key path (if any) and the message.
LOCATED = re.compile(r"^jobs\.yaml:[1-9]\d*:[1-9]\d*: \S")


@pytest.mark.parametrize("case", VALID, ids=lambda p: p.stem)
def test_valid_case_generates(project, case):
    shutil.copy(case, project / "jobs.yaml")
    result = run_main(project, "generate")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def good_build(tmp_path_factory):
    """A build/ generated once from the shipped jobs.yaml; each case starts from a copy of it."""
    project = tmp_path_factory.mktemp("good")
    shutil.copy(ROOT / "jobs.yaml", project / "jobs.yaml")
    shutil.copytree(ROOT / "client_scripts", project / "client_scripts")
    assert run_main(project, "generate").returncode == 0
    return project / "build"


def check_invalid_case(project, case, good_build, run) -> None:
    """``run(project, "generate")`` on ``case`` prints its expected lines, exits 2 and changes nothing."""
    shutil.copytree(good_build, project / "build", symlinks=True)  # an earlier, good build/
    before = snapshot(project / "build")
    shutil.copy(case, project / "jobs.yaml")

    result = run(project, "generate")

    expected = case.with_suffix(".expected").read_text(encoding="utf-8").splitlines()
    assert result.stderr.splitlines() == expected
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert all(LOCATED.match(line) for line in result.stderr.splitlines()), result.stderr
    assert snapshot(project / "build") == before
    assert sorted(p.name for p in project.iterdir()) == ["build", "client_scripts", "jobs.yaml"]


@pytest.mark.parametrize("case", INVALID, ids=lambda p: p.stem)
def test_invalid_case_is_located_and_changes_nothing(project, case, good_build):
    check_invalid_case(project, case, good_build, run_main)


@pytest.mark.slow
def test_a_valid_case_generates_as_a_command(project):
    shutil.copy(CASES / "valid" / "receivers.yaml", project / "jobs.yaml")
    result = run_cli(project, "generate")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    names = [job["name"] for job in yaml.safe_load((project / "jobs.yaml").read_text(encoding="utf-8"))["jobs"]]
    assert sorted(p.name for p in (project / "build" / "jobs").iterdir() if p.is_dir()) == sorted(names)


@pytest.mark.slow
def test_an_invalid_case_is_located_and_changes_nothing_as_a_command(project, good_build):
    check_invalid_case(project, CASES / "invalid" / "unknown_key_typo.yaml", good_build, run_cli)


def test_every_invalid_case_has_its_expected_message():
    missing = [p.name for p in INVALID if not p.with_suffix(".expected").is_file()]
    assert not missing
    assert len(INVALID) >= 25


@pytest.mark.parametrize("case", WARNINGS, ids=lambda p: p.stem)
def test_warning_case_generates_with_its_exact_warnings(project, case):
    shutil.copy(case, project / "jobs.yaml")
    result = run_main(project, "generate")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == case.with_suffix(".expected").read_text(encoding="utf-8").splitlines()
    assert all(LOCATED.match(line) and ": warning: " in line for line in result.stderr.splitlines())


def test_every_warning_case_has_its_expected_message():
    assert WARNINGS and all(p.with_suffix(".expected").is_file() for p in WARNINGS)
