"""How messages name a ``jobs`` entry: ``jobs[1] (b).num_round``, the index and the entry's ``name``.

The name is shown whenever the entry's ``name`` is a string, even an invalid one (a message about
the ``name`` key itself names it too: ``jobs[0] (Bad Name).name``); an entry without a name, or
whose name is not a string, keeps its index alone. Only the ``jobs[N]`` segment changes; the
``Problem.path`` that code compares keeps the index-only form. Matrix jobs, later ``--jobs`` files
and lint are covered by the case files (``tests/cases``) and their own tests.
"""

from __future__ import annotations

import pytest

from generator.errors import Problem
from generator.load import MAX_SHOWN_NAME, format_path, load
from generator.validate import check_document


def test_a_named_job_is_shown_with_its_name(project, cli):
    (project / "jobs.yaml").write_text(
        "jobs:\n  - name: a\n    script: train_full.py\n  - name: b\n    script: train_full.py\n    num_round: 2\n"
    )
    assert cli("validate") == (
        2,
        [],
        ["jobs.yaml:6:5: jobs[1] (b).num_round: unknown key 'num_round'; did you mean 'num_rounds'?"],
    )
    # the path code compares and parses keeps the index alone
    assert [p.path for p in check_document(load(project / "jobs.yaml")).problems] == ["jobs[1].num_round"]


def test_a_job_without_a_name_keeps_its_index(project, cli):
    (project / "jobs.yaml").write_text("jobs:\n  - script: 5\n")
    assert cli("validate")[2] == [
        "jobs.yaml:2:5: jobs[0]: missing required key 'name'",
        "jobs.yaml:2:13: jobs[0].script: expected a string, got 5 "
        '(YAML reads a bare 5 as a number: write "5" in quotes)',
    ]


def test_a_quoted_boolean_or_number_says_the_quotes_made_it_text(project, cli):
    (project / "jobs.yaml").write_text(
        'jobs:\n  - name: a\n    script: train_full.py\n    launch_external_process: "true"\n'
        '    num_rounds: \'5\'\n    task_check_period: "0.5"\n    command: "python3 -u"\n'
    )
    assert cli("validate")[2] == [
        "jobs.yaml:4:30: jobs[0] (a).launch_external_process: expected true or false, got 'true' "
        "(in quotes it is text: write true without quotes)",
        "jobs.yaml:5:17: jobs[0] (a).num_rounds: expected a whole number, got '5' "
        "(in quotes it is text: write 5 without quotes)",
        "jobs.yaml:6:24: jobs[0] (a).task_check_period: expected a number, got '0.5' "
        "(in quotes it is text: write 0.5 without quotes)",
    ]  # a quoted string where a string belongs (command) is fine


@pytest.mark.parametrize(
    ("name", "got"),
    [
        ("3", '3 (YAML reads a bare 3 as a number: write "3" in quotes)'),
        ("[a, b]", "a list"),
        ("no", 'false (YAML reads a bare no as a boolean: write "no" in quotes)'),
        ('""', None),  # a string, but nothing to show
    ],
)
def test_a_job_whose_name_is_not_a_usable_string_keeps_its_index(project, cli, name, got):
    (project / "jobs.yaml").write_text(f"jobs:\n  - name: {name}\n    script: 5\n")
    code, _, err = cli("validate")
    assert code == 2
    if got is not None:
        assert err[0] == f"jobs.yaml:2:11: jobs[0].name: expected a string, got {got}"
    assert err[-1].startswith("jobs.yaml:3:13: jobs[0].script: expected a string, got 5")


def test_a_message_about_the_name_itself_shows_that_name(project, cli):
    (project / "jobs.yaml").write_text("jobs:\n  - name: Bad Name\n    script: train_full.py\n")
    code, _, err = cli("validate")
    assert code == 2
    assert err == [
        "jobs.yaml:2:11: jobs[0] (Bad Name).name: 'Bad Name' is not allowed here: must match "
        "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$ (letters, digits, '_', '-' and '.', starting with a letter or digit, "
        "at most 64 characters)"
    ]


def test_a_load_problem_before_the_name_key_shows_the_name(project, cli):
    """The loader reports a duplicate key while building the entry, before its data (and ``name``) exists."""
    (project / "jobs.yaml").write_text("jobs:\n  - script: train_full.py\n    script: train_full.py\n    name: late\n")
    assert cli("validate")[2] == [
        "jobs.yaml:3:5: jobs[0] (late).script: duplicate key 'script' (first at line 2); "
        "YAML would silently keep only the last"
    ]


def test_defaults_and_other_paths_are_unchanged(project, cli):
    (project / "jobs.yaml").write_text("defaults:\n  num_round: 2\njobs:\n  - name: a\n    script: train_full.py\n")
    assert cli("validate")[2] == [
        "jobs.yaml:2:3: defaults.num_round: unknown key 'num_round'; did you mean 'num_rounds'?"
    ]


def test_format_path_names_only_the_jobs_segment():
    assert format_path(("jobs", 1, "num_round")) == "jobs[1].num_round"
    assert format_path(("jobs", 1, "num_round"), "b") == "jobs[1] (b).num_round"
    assert format_path(("jobs", 0), "b") == "jobs[0] (b)"
    assert format_path(("jobs", 0, "tags", 2), "b") == "jobs[0] (b).tags[2]"
    assert format_path(("jobs", 0, "run_tags", "a.b"), "b") == 'jobs[0] (b).run_tags["a.b"]'
    assert format_path(("defaults", "num_round"), "b") == "defaults.num_round"
    assert format_path(("jobs",), "b") == "jobs"


def test_format_path_keeps_an_odd_name_on_one_line():
    assert format_path(("jobs", 0, "name"), "a\nb") == 'jobs[0] ("a\\x0ab").name'
    assert format_path(("jobs", 0, "name"), " b ") == 'jobs[0] (" b ").name'
    long = "x" * (MAX_SHOWN_NAME + 10)
    assert format_path(("jobs", 0), long) == f"jobs[0] ({'x' * (MAX_SHOWN_NAME - 3)}...)"


def test_a_problem_prints_its_shown_path_and_compares_by_its_path():
    named = Problem("jobs.yaml", 6, 5, "jobs[1].num_round", "unknown key", "jobs[1] (b).num_round")
    assert str(named) == "jobs.yaml:6:5: jobs[1] (b).num_round: unknown key"
    assert (
        str(Problem("jobs.yaml", 6, 5, "jobs[1].num_round", "unknown key"))
        == "jobs.yaml:6:5: jobs[1].num_round: unknown key"
    )
    assert named == Problem("jobs.yaml", 6, 5, "jobs[1].num_round", "unknown key")
