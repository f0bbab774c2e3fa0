"""Folder-driven spec tests: every file in cases/valid passes, every file in cases/invalid fails.

Each ``cases/invalid/NAME.yaml`` has ``NAME.expected``: the exact stderr lines the CLI must print
(the file is copied to ``jobs.yaml`` in a fresh project, so messages start with ``jobs.yaml:``).
A failing case must exit 2, print no traceback, and leave an earlier ``build/`` byte-identical.
"""

from __future__ import annotations

import shutil

import pytest
from conftest import CASES, run_cli, snapshot

VALID = sorted((CASES / "valid").glob("*.yaml"))
INVALID = sorted((CASES / "invalid").glob("*.yaml"))


@pytest.mark.parametrize("case", VALID, ids=lambda p: p.stem)
def test_valid_case_generates(project, case):
    shutil.copy(case, project / "jobs.yaml")
    result = run_cli(project, "generate")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("case", INVALID, ids=lambda p: p.stem)
def test_invalid_case_is_located_and_changes_nothing(project, case):
    assert run_cli(project, "generate").returncode == 0  # an earlier, good build/
    before = snapshot(project / "build")
    shutil.copy(case, project / "jobs.yaml")

    result = run_cli(project, "generate")

    expected = case.with_suffix(".expected").read_text(encoding="utf-8").splitlines()
    assert result.stderr.splitlines() == expected
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    assert snapshot(project / "build") == before


def test_every_invalid_case_has_its_expected_message():
    missing = [p.name for p in INVALID if not p.with_suffix(".expected").is_file()]
    assert not missing
    assert len(INVALID) >= 10
