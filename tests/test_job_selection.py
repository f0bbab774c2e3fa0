"""``--job NAME`` (``generate``, ``simulate``, ``poc``, ``submit``) and ``validate --show NAME``: a
job's name, a matrix job's name as written (every job it expanded to) or a shell-style pattern
(:mod:`generator.selection`). A trial's ``simulate --job 'tr-{receiver.type}-r{num_rounds}'`` and
``--job 'tr-*'`` were both refused as no job of that name. No NVFlare runs here."""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest
from conftest import ROOT, make_recipe, snapshot

from generator import simulate
from generator.selection import is_pattern, matrix_jobs, select_names

JOBS = """defaults: {num_rounds: 1}
jobs:
  - name: np-full
    script: train_full.py
  - name: tr-{receiver.type}-r{num_rounds}
    script: train_metrics_wandb.py
    matrix:
      receiver.type: [wandb, tensorboard]
      num_rounds: [1, 2]
  - name: tail
    script: train_full.py
"""
MATRIX = "tr-{receiver.type}-r{num_rounds}"
SWEEP = ["tr-wandb-r1", "tr-wandb-r2", "tr-tensorboard-r1", "tr-tensorboard-r2"]
ALL = ["np-full", *SWEEP, "tail"]
HAVE = f"have: {', '.join(ALL)}; matrix jobs: {MATRIX}"


@pytest.fixture
def sweep(project, cli):
    """The project with JOBS generated into build/jobs."""
    (project / "jobs.yaml").write_text(JOBS, encoding="utf-8")
    code, _, err = cli("generate")
    assert code == 0, err
    return project


# --- generator.selection ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "selected"),
    [
        ([MATRIX], SWEEP),
        (["tr-*"], SWEEP),
        (["tail", "tr-*", "np-full"], ALL),  # file order, whatever the order given
        (["*-r1", "tr-wandb-r1", "*-r1"], ["tr-wandb-r1", "tr-tensorboard-r1"]),  # each once
        (["tr-wandb-r[12]", "?ail"], ["tr-wandb-r1", "tr-wandb-r2", "tail"]),
        (["*"], ALL),
        ([MATRIX, "tr-wandb-r2"], SWEEP),
    ],
)
def test_names_select_jobs_matrix_jobs_and_patterns_in_file_order(names, selected):
    chosen = select_names(names, ALL, {MATRIX: SWEEP})
    assert (chosen.jobs, chosen.unknown) == (selected, [])


def test_names_that_select_nothing_are_unknown_each_once_in_the_order_given():
    chosen = select_names(["zz*", "np-full", "TR-*", "nope", "zz*", "tr-{receiver.type}"], ALL, {MATRIX: SWEEP})
    assert chosen.jobs == ["np-full"]
    assert chosen.unknown == ["zz*", "TR-*", "nope", "tr-{receiver.type}"]  # case counts (fnmatchcase)


def test_a_job_named_as_a_matrix_job_is_that_job():
    """A matrix without placeholders (``s`` -> ``s-1``, ``s-2``) beside a job written as ``s``: ``s`` is that job."""
    assert select_names(["s"], ["s", "s-1", "s-2"], {"s": ["s-1", "s-2"]}).jobs == ["s"]


def test_only_glob_characters_make_a_pattern_and_matrix_jobs_keep_file_order():
    assert [is_pattern(n) for n in ("a*", "a?", "a[12]", MATRIX, "np-full.v2")] == [True, True, True, False, False]
    pairs = [("a", None), ("m-1", "m-{x}"), ("n-1", "n"), ("m-2", "m-{x}")]
    assert matrix_jobs(pairs) == {"m-{x}": ["m-1", "m-2"], "n": ["n-1"]}


# --- simulate, poc, submit: selected_jobs reads the manifest's matrix names ---------------------------


def test_selected_jobs_takes_a_matrix_name_and_patterns(sweep):
    out = sweep / "build/jobs"
    assert simulate.selected_jobs(out, [MATRIX])[1] == SWEEP
    assert simulate.selected_jobs(out, ["tail", "tr-*", MATRIX])[1] == [*SWEEP, "tail"]
    assert simulate.selected_jobs(out, ["*-r2"])[1] == ["tr-wandb-r2", "tr-tensorboard-r2"]
    assert simulate.selected_jobs(out, None)[1] == ALL


def test_simulate_runs_the_jobs_of_a_matrix_name_in_file_order(sweep, cli, monkeypatch):
    ran = []

    def one(out, workspace, name, info, reports, timeout, events):
        ran.append(name)
        return simulate.JobResult(name=name, rounds=1, status="ok", ok=True, wall_seconds=1.0)

    monkeypatch.setattr(simulate, "_simulate_one", one)
    code, out, err = cli("simulate", "--parallel", "1", "--job", "tail", "--job", MATRIX)
    assert (code, err) == (0, []), out
    assert ran == [*SWEEP, "tail"]
    assert [r["name"] for r in json.loads((sweep / "build/results.json").read_text())] == [*SWEEP, "tail"]


@pytest.mark.parametrize("command", [["simulate"], ["poc"], ["submit", "--startup-kit", "kit"]])
def test_an_unknown_name_or_a_pattern_matching_nothing_is_a_bad_option(sweep, cli, command):
    before = snapshot(sweep)
    code, out, err = cli(*command, "--job", "zz*", "--job", "tr-{receiver.type}-r{num_round}", "--job", "qqq")
    assert (code, out) == (2, [])
    assert err == [
        f"build/jobs: --job 'qqq': no generated job of that name ({HAVE})",
        "build/jobs: --job 'tr-{receiver.type}-r{num_round}': no generated job of that name; "
        f"did you mean {MATRIX!r}?",
        f"build/jobs: --job 'zz*': no generated job matches that pattern ({HAVE})",
    ]
    assert snapshot(sweep) == before


# --- generate and validate: the same names, read from the jobs file ----------------------------------


def test_generate_job_takes_a_matrix_name_and_patterns(project, cli):
    (project / "jobs.yaml").write_text(JOBS, encoding="utf-8")
    assert cli("generate", "--job", MATRIX)[0] == 0
    jobs = project / "build/jobs"
    assert sorted(p.name for p in jobs.iterdir() if p.is_dir()) == sorted(SWEEP)
    assert cli("generate", "--job", "np-*", "--job", "t?il")[0] == 0  # the others are kept
    assert sorted(p.name for p in jobs.iterdir() if p.is_dir()) == sorted(ALL)
    assert sorted(json.loads((jobs / ".jobgen.json").read_text())["jobs"]) == sorted(ALL)
    assert cli("generate", "--check", "--job", "tr-*")[0] == 0


def test_generate_refuses_names_that_select_nothing_and_writes_nothing(project, cli):
    (project / "jobs.yaml").write_text(JOBS, encoding="utf-8")
    before = snapshot(project)
    code, out, err = cli("generate", "--job", "zz*", "--job", "tr-{receiver.type}", "--job", "tr-*")
    assert (code, out) == (2, [])
    have = f"jobs are: {', '.join(ALL)}; matrix jobs: {MATRIX}"
    assert [line for line in err if "--job" in line] == [
        f"jobs.yaml: --job 'tr-{{receiver.type}}': no job of that name in this file; did you mean {MATRIX!r}?",
        f"jobs.yaml: --job 'zz*': no job matches that pattern in this file; {have}",
    ]
    assert snapshot(project) == before


def test_validate_show_takes_a_matrix_name_and_patterns(project, cli):
    import yaml

    (project / "jobs.yaml").write_text(JOBS, encoding="utf-8")
    code, out, err = cli("validate", "--show", "*-r2", "--show", "np-full")
    assert (code, [e for e in err if "--show" in e]) == (0, [])
    assert list(yaml.safe_load("\n".join(out))) == ["np-full", "tr-wandb-r2", "tr-tensorboard-r2"]


# --- make JOB=... -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "variable", "option"),
    [
        *((target, "JOB", "--job") for target in ("generate", "simulate", "poc", "submit", "lint")),
        ("validate", "SHOW", "--show"),
    ],
)
def test_make_passes_each_pattern_word_as_it_is(tmp_path, target, variable, option):
    """Each word of ``JOB=`` (``SHOW=``) reaches the command unchanged, as the shell runs make's recipe
    in a folder holding a file the pattern matches (unquoted, ``sh`` would have given ``tr-x``)."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python").write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    (fake / "python").chmod(0o755)
    (tmp_path / "tr-x").write_text("")
    words = f"{variable}=tr-* {MATRIX} np-full"
    command = make_recipe(target, words, f"BIN={fake}", "KIT=kit")
    ran = subprocess.run(["sh", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    given = ran.stdout.splitlines()
    assert [given[i + 1] for i, w in enumerate(given) if w == option] == ["tr-*", MATRIX, "np-full"]
    assert shlex.split(command)[0] == str(fake / "python")


@pytest.mark.parametrize("target", ["validate", "generate", "lint"])
def test_make_gives_set_and_jobs_words_to_the_command_not_to_the_shell(tmp_path, target):
    """A trial's ``make validate SET='defaults.num_rounds=3;echo INJECTED'`` ran ``echo``; ``make check
    JOB=`` and ``make generate JOB=`` ignored ``JOB``."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python").write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    (fake / "python").chmod(0o755)
    assignments = ["SET=defaults.num_rounds=3;echo INJECTED", "JOBS=my `id`.yaml", "JOB=np-*", f"BIN={fake}"]
    command = make_recipe(target, *assignments)
    ran = subprocess.run(["sh", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    given = ran.stdout.splitlines()
    assert given.count("INJECTED") == 1 and given[given.index("INJECTED") - 1] == "--set"
    assert [given[i + 1] for i, w in enumerate(given) if w == "--jobs"] == ["my", "`id`.yaml"]
    assert target == "validate" or [given[i + 1] for i, w in enumerate(given) if w == "--job"] == ["np-*"]


def test_make_check_passes_job():
    words = shlex.split(
        subprocess.run(
            ["make", "-n", "--no-print-directory", "check", "JOB=np-cyclic"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.splitlines()[-1]
    )
    assert words[4] == "--check" and words[-2:] == ["--job", "np-cyclic"]


def test_a_list_of_names_in_a_message_stops_at_twenty():
    # a 2,500-job matrix's "no job of that name" listed every job on one 30 kB line
    from generator.selection import listed

    names = [f"j{i}" for i in range(2500)]
    assert listed(names) == ", ".join(names[:20]) + " and 2,480 more"
    assert listed(names[:20]) == ", ".join(names[:20])
