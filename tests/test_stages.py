"""The validate and spec stages called one by one, as ``generator.pipeline`` calls them.

``check_document`` (the schema half of validate) -> ``effective_jobs`` (spec) -> ``check_jobs``
(the cross-field half): a problem inside one job entry waits for the other jobs' cross-field
problems; a problem outside every job entry stops at the schema half.
"""

from __future__ import annotations

import pytest

from generator.errors import SpecError
from generator.load import load
from generator.spec import effective_jobs
from generator.validate import check_document, check_jobs, validate


def _doc(project, text: str):
    (project / "jobs.yaml").write_text(text, encoding="utf-8")
    return load(project / "jobs.yaml")


def test_a_job_entry_problem_is_reported_with_another_jobs_cross_field_problem(project):
    jobs_yaml = """\
jobs:
  - name: a
    script: train_full.py
    num_rounds: zero
  - name: b
    script: missing.py
"""
    doc = _doc(project, jobs_yaml)
    checked = check_document(doc)
    assert checked.fitting == {1}
    assert [p.path for p in checked.problems] == ["jobs[0].num_rounds"]
    jobs = effective_jobs(doc.data, checked.schema, only=checked.fitting)
    assert [(job.name, job.index) for job in jobs] == [("b", 1)]
    with pytest.raises(SpecError) as raised:
        check_jobs(checked, jobs)
    file = str(project / "jobs.yaml")
    assert [str(p) for p in raised.value.problems] == [
        f"{file}:4:17: jobs[0] (a).num_rounds: expected a whole number, got 'zero'",
        # run from another folder: the scripts folder in full
        f"{file}:6:13: jobs[1] (b).script: script 'missing.py' not found in {project}/client_scripts/",
    ]


def test_a_problem_outside_every_job_entry_stops_at_the_schema_half(project):
    doc = _doc(project, "defaults:\n  num_rounds: zero\njobs:\n  - name: a\n    script: missing.py\n")
    with pytest.raises(SpecError) as raised:
        check_document(doc)
    assert [str(p) for p in raised.value.problems] == [
        f"{project / 'jobs.yaml'}:2:15: defaults.num_rounds: expected a whole number, got 'zero'"
    ]


def test_a_top_level_list_loads_and_the_schema_half_refuses_it(project):
    doc = _doc(project, "- a\n- b\n")
    assert doc.data == ["a", "b"] and doc.problems == []
    with pytest.raises(SpecError) as raised:
        check_document(doc)
    assert [str(p) for p in raised.value.problems] == [f"{project / 'jobs.yaml'}:1:1: expected a mapping, got a list"]


def test_the_three_calls_give_what_validate_gives(project):
    doc = load(project / "jobs.yaml")
    checked = check_document(doc)
    jobs = check_jobs(checked, effective_jobs(doc.data, checked.schema, only=checked.fitting))
    expected = validate(load(project / "jobs.yaml"))
    assert [(j.name, j.settings) for j in jobs] == [(j.name, j.settings) for j in expected]
    assert all(job.shipment is not None for job in jobs)
