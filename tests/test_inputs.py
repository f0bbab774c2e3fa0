"""Bad inputs that a case file cannot hold: the jobs file itself, symlinks, command-line names.

Each must end in a clear message, exit code 2, no traceback and nothing changed on disk. The CLI
runs in-process (``generator.cli.main``) for speed.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from conftest import shipped_job_names, snapshot

from generator.load import MAX_BYTES

LOCATED = re.compile(r"^jobs\.yaml:[1-9]\d*:[1-9]\d*: \S")


def test_jobs_file_that_is_a_folder(project, cli):
    (project / "jobs.yaml").unlink()
    (project / "jobs.yaml").mkdir()
    assert cli("generate") == (2, [], ["jobs.yaml: is a folder, not a file: give the path of a jobs YAML file"])
    assert not (project / "build").exists()


def test_jobs_file_missing(project, cli):
    assert cli("validate", "--jobs", "nope.yaml") == (2, [], ["nope.yaml: file not found"])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_jobs_file_that_is_a_pipe_is_not_read(project, cli):
    os.mkfifo(project / "fifo.yaml")  # reading it would block forever
    code, _, err = cli("validate", "--jobs", "fifo.yaml")
    assert (code, err) == (
        2,
        ["fifo.yaml: is not a regular file (a device, a pipe, ...): give the path of a jobs YAML file"],
    )


def test_huge_jobs_file_is_refused_without_parsing(project, cli):
    with open(project / "jobs.yaml", "a", encoding="utf-8") as f:
        f.write("#" * MAX_BYTES + "\n")
    assert cli("generate") == (2, [], ["jobs.yaml:1:1: is larger than 2,000,000 bytes, the most a jobs file may have"])
    assert not (project / "build").exists()


def test_script_symlink_pointing_outside_is_refused(project, cli):
    (project / "client_scripts" / "evil.py").symlink_to("/etc/passwd")
    (project / "jobs.yaml").write_text("jobs:\n  - name: a\n    script: evil.py\n", encoding="utf-8")
    assert cli("generate") == (
        2,
        [],
        ["jobs.yaml:3:13: jobs[0] (a).script: script 'evil.py' is a symlink to /etc/passwd, outside client_scripts/"],
    )
    assert not (project / "build").exists()


def test_script_in_a_symlinked_folder_pointing_outside_is_refused(project, cli, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (outside / "x.py").write_text("print('not yours')\n")
    (project / "client_scripts" / "shared").symlink_to(outside)
    (project / "jobs.yaml").write_text("jobs:\n  - name: a\n    script: shared/x.py\n", encoding="utf-8")
    code, _, err = cli("generate")
    assert code == 2
    assert err == [
        f"jobs.yaml:3:13: jobs[0] (a).script: script 'shared/x.py' is a symlink to {outside.resolve() / 'x.py'}, "
        "outside client_scripts/"
    ]


def test_client_scripts_folder_that_is_a_symlink_out_of_the_project_is_refused(project, cli, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere")
    (project / "client_scripts").rename(outside / "client_scripts")
    (project / "client_scripts").symlink_to(outside / "client_scripts")
    code, _, err = cli("validate")
    assert code == 2
    # one line for the one cause, at the first job's script, not one per job
    (line,) = err
    assert LOCATED.match(line) and line.startswith("jobs.yaml:"), line
    assert ".script: client_scripts/ is a symlink to " in line, line
    assert f"(said once for {len(shipped_job_names())} jobs)" in line, line


def test_a_jobs_file_with_no_client_scripts_folder_beside_it_says_so_once(tmp_path):
    from generator.errors import JobgenError
    from generator.pipeline import check_only

    (tmp_path / "jobs.yaml").write_text(
        "jobs:\n  - name: a\n    script: train_full.py\n  - name: b\n    script: train_full.py\n"
        "    num_round: 2\n  - name: c\n    script: train_diff.py\n"
        # trial 46: the model's module was looked for in the missing folder, and named another one
        "  - {name: d, script: mine/t.py, framework: pytorch, model: {path: model.Net}}\n",
        encoding="utf-8",
    )
    with pytest.raises(JobgenError) as caught:
        check_only([str(tmp_path / "jobs.yaml")], [])
    shown = [str(p) for p in caught.value.problems]
    assert shown == [
        f"{tmp_path}/jobs.yaml:3:13: jobs[0] (a).script: no client_scripts/ folder in {tmp_path}, beside the jobs "
        "file: every job's script is looked for there (said once for 3 jobs)",
        f"{tmp_path}/jobs.yaml:6:5: jobs[1] (b).num_round: unknown key 'num_round'; did you mean 'num_rounds'?",
    ]


def test_a_jobs_file_given_twice_a_near_miss_name_and_utf16_are_told_so(project, cli):
    # trial 47: --jobs jobs.yaml --jobs ./jobs.yaml merged the file into itself and said "up to date";
    # a UTF-16 file was told "byte 0xff cannot be decoded"; trial 46: mine.yml had no did-you-mean
    assert cli("validate", "--jobs", "jobs.yaml", "--jobs", "./jobs.yaml")[1:] == (
        [],
        ["./jobs.yaml: given twice (--jobs #1 and #2): give each jobs file once"],
    )
    assert cli("validate", "--jobs", "jobz.yml")[2] == ["jobz.yml: file not found; did you mean 'jobs.yaml'?"]
    (project / "u16.yaml").write_bytes("jobs: []\n".encode("utf-16"))
    assert cli("validate", "--jobs", "u16.yaml")[2] == [
        "u16.yaml:1:1: is UTF-16 text (it starts with a UTF-16 byte-order mark): save the file as UTF-8"
    ]


def test_symlink_inside_client_scripts_is_fine(project, cli):
    (project / "client_scripts" / "alias.py").symlink_to("train_full.py")
    (project / "jobs.yaml").write_text("jobs:\n  - name: a\n    script: alias.py\n", encoding="utf-8")
    assert cli("generate")[0] == 0
    copied = project / "build/jobs/a/app/custom/alias.py"
    assert not copied.is_symlink() and copied.read_bytes() == (project / "client_scripts/train_full.py").read_bytes()


def test_unknown_job_name_on_the_command_line(project, cli):
    before = snapshot(project)
    assert cli("generate", "--job", "np-ful-in-process", "--job", "zzz") == (
        2,
        [],
        [
            "jobs.yaml: --job 'np-ful-in-process': no job of that name in this file; "
            "did you mean 'np-full-in-process'?",
            "jobs.yaml: --job 'zzz': no job of that name in this file; jobs are: " + ", ".join(shipped_job_names()),
        ],
    )
    assert snapshot(project) == before


def test_unknown_job_name_names_every_jobs_file_but_no_set(project, cli):
    (project / "lab.yaml").write_text("jobs:\n  - name: extra\n    script: train_full.py\n", encoding="utf-8")
    code, out, err = cli(
        "validate", "--jobs", "jobs.yaml", "--jobs", "lab.yaml", "--set", "defaults.num_rounds=3", "--show", "extr"
    )
    assert (code, out) == (2, [])
    assert err == ["jobs.yaml: --show 'extr': no job of that name in jobs.yaml or lab.yaml; did you mean 'extra'?"]


def test_ctrl_c_while_generate_lists_its_folders_says_they_were_written(project, cli, monkeypatch):
    from generator.cli import REPORTER

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(REPORTER, "generated", interrupted)
    code, out, err = cli("generate", "--job", "np-full-in-process")
    assert (code, out) == (130, [])
    assert err == ["interrupted while listing: every job folder was written (1 in build/jobs)"]
    assert (project / "build/jobs/np-full-in-process/meta.json").is_file()


def test_a_script_missing_from_the_first_files_scripts_folder_names_that_folder(project, cli):
    (project / "exp/client_scripts").mkdir(parents=True)
    (project / "exp/client_scripts/train_full.py").write_text("", encoding="utf-8")
    (project / "exp/exp.yaml").write_text("jobs:\n  - name: a\n    script: train_full.py\n", encoding="utf-8")
    (project / "mine.yaml").write_text("jobs:\n  - name: b\n    script: train_diff.py\n", encoding="utf-8")
    code, out, err = cli("validate", "--jobs", "exp/exp.yaml", "--jobs", "mine.yaml")
    assert (code, out) == (2, [])
    assert err == [
        "mine.yaml:3:13: jobs[0] (b).script: script 'train_diff.py' not found in exp/client_scripts/ "
        "(client_scripts/train_diff.py exists, but scripts are looked up in the client_scripts/ beside the first "
        "--jobs file)"
    ]
    # beside the later file that named it
    (project / "other/client_scripts").mkdir(parents=True)
    (project / "other/client_scripts/mine.py").write_text("", encoding="utf-8")
    (project / "other/extra.yaml").write_text("jobs:\n  - name: c\n    script: mine.py\n", encoding="utf-8")
    code, out, err = cli("validate", "--jobs", "jobs.yaml", "--jobs", "other/extra.yaml")
    assert err == [
        "other/extra.yaml:3:13: jobs[0] (c).script: script 'mine.py' not found in client_scripts/ "
        "(other/client_scripts/mine.py exists, but scripts are looked up in the client_scripts/ beside the first "
        "--jobs file)"
    ]


def test_receiver_without_writer_is_a_located_warning_with_exit_0(project, cli):
    (project / "jobs.yaml").write_text(
        "jobs:\n  - name: a\n    script: train_full.py\n    receiver: {type: mlflow}\n", encoding="utf-8"
    )
    warning = (
        "jobs.yaml:4:15: jobs[0] (a).receiver: warning: a receiver is configured but the script imports no "
        "nvflare.client.tracking writer"
    )
    code, out, err = cli("validate")
    assert (code, err) == (0, [warning])
    code, out, err = cli("generate")
    assert (code, err, out) == (0, [warning], ["generated build/jobs/a"])


def test_nothing_in_jobs_yaml_runs(project, cli):
    (project / "jobs.yaml").write_text(
        "jobs:\n  - name: a\n    script: train_full.py\n"
        "    script_args: !!python/object/apply:os.system ['touch pwned']\n"
        "    command: !!python/object/new:subprocess.Popen [['touch', 'pwned2']]\n",
        encoding="utf-8",
    )
    code, _, err = cli("generate")
    assert code == 2
    assert err == [
        "jobs.yaml:4:18: jobs[0] (a).script_args: tag '!!python/object/apply:os.system' is not allowed: "
        "jobs.yaml holds plain data only",
        "jobs.yaml:5:14: jobs[0] (a).command: tag '!!python/object/new:subprocess.Popen' is not allowed: "
        "jobs.yaml holds plain data only",
    ]
    assert not list(Path(project).glob("pwned*"))


def test_generate_says_which_job_folders_it_removed(project, cli):
    assert cli("generate")[0] == 0
    text = (project / "jobs.yaml").read_text(encoding="utf-8")
    (project / "jobs.yaml").write_text(text[: text.index("  - name: np-diff-in-process")], encoding="utf-8")
    code, out, err = cli("generate")
    assert (code, err) == (0, [])
    assert out == [f"removed build/jobs/{name} (no longer in jobs.yaml)" for name in shipped_job_names()[1:]] + [
        "left 1 other job folder in build/jobs as it was (already what jobs.yaml renders)"
    ]
    assert sorted(p.name for p in (project / "build/jobs").iterdir()) == [".jobgen.json", "np-full-in-process"]


def test_generate_records_what_it_was_made_from_and_says_so_when_others_replace_it(project, cli):
    (project / "exp.yaml").write_text("jobs:\n  - name: mine\n    script: train_full.py\n", encoding="utf-8")
    assert cli("generate", "--jobs", "./exp.yaml", "--set", "defaults.num_rounds=2")[0] == 0
    manifest = json.loads((project / "build/jobs/.jobgen.json").read_text())
    assert manifest["jobs"]["mine"]["made_from"] == {"jobs": ["exp.yaml"], "set": ["defaults.num_rounds=2"]}
    assert cli("generate", "--check", "--jobs", "exp.yaml", "--set", "defaults.num_rounds=2")[0] == 0

    code, _, err = cli("generate", "--check")  # a trial followed this advice and lost exp.yaml's jobs
    assert code == 1
    assert err[-1] == (
        "build/jobs is out of date with jobs.yaml, but 1 job in it was generated from other files or --set than "
        "this check's (1 job from exp.yaml with --set defaults.num_rounds=2): to check it, run `python -m generator "
        "generate --check --jobs exp.yaml --out build/jobs --set defaults.num_rounds=2`; `make generate` would "
        "replace it with what jobs.yaml renders"
    )
    code, out, err = cli("generate")
    assert (code, err) == (0, [])
    assert (
        out[-1]
        == "removed build/jobs/mine (generated from exp.yaml with --set defaults.num_rounds=2; not in jobs.yaml)"
    )
    manifest = json.loads((project / "build/jobs/.jobgen.json").read_text())
    assert not any("made_from" in entry for entry in manifest["jobs"].values())  # the default: not written


def test_a_job_written_over_one_made_from_other_files_says_so(project, cli):
    # a trial's job made from exp.yaml was regenerated from jobs.yaml without a word; only removed
    # jobs said where they had come from
    (project / "exp.yaml").write_text("jobs:\n  - name: np-cyclic\n    script: train_full.py\n", encoding="utf-8")
    assert cli("generate", "--jobs", "exp.yaml")[0] == 0
    assert cli("generate", "--job", "np-cyclic", "--set", "jobs.np-cyclic.num_rounds=2") == (
        0,
        ["generated build/jobs/np-cyclic (replaces the one generated from exp.yaml)"],
        [],
    )
    code, out, _ = cli("generate", "--job", "np-cyclic")
    assert (code, out) == (
        0,
        [
            "generated build/jobs/np-cyclic (replaces the one generated from jobs.yaml with "
            "--set jobs.np-cyclic.num_rounds=2)"
        ],
    )
    assert cli("generate", "--job", "np-cyclic") == (  # the same origin: nothing to say
        0,
        ["build/jobs is up to date with jobs.yaml: left 1 job folder as it was"],
        [],
    )
    code, out, _ = cli("generate")
    assert code == 0 and not any("replaces" in line for line in out)
    # trial 47: a rename by --set removed the job "(generated from jobs.yaml alone; not in jobs.yaml)"
    code, out, _ = cli("generate", "--set", "jobs.np-cyclic.name=np-cyc2")
    assert code == 0 and out[-2:] == [
        "removed build/jobs/np-cyclic (generated from jobs.yaml alone; not in jobs.yaml with "
        "--set jobs.np-cyclic.name=np-cyc2)",
        "left 13 other job folders in build/jobs as they were (already what jobs.yaml renders)",
    ]


def test_a_changed_expect_or_timeout_is_a_difference_and_generate_says_it_updated_it(project, cli):
    # trial 48: expect.model_mean 6 -> 42 was "up to date", and simulate judged the run by 6
    text = "jobs:\n  - name: r\n    script: train_full.py\n    num_rounds: 1\n    expect: {model_mean: 6}\n"
    (project / "r.yaml").write_text(text)
    assert cli("generate", "--jobs", "r.yaml", "--out", "build/r")[0] == 0
    (project / "r.yaml").write_text(text.replace("model_mean: 6}", "model_mean: 42}\n    timeout: 120"))
    code, out, err = cli("generate", "--check", "--jobs", "r.yaml", "--out", "build/r")
    assert code == 1
    assert out == [
        "changed: build/r/.jobgen.json (the expect and timeout of job 'r', which simulate judges the run by)"
    ]
    assert cli("generate", "--jobs", "r.yaml", "--out", "build/r") == (
        0,
        [
            "updated the expect and timeout of build/r/r in build/r/.jobgen.json, which simulate judges the run "
            "by (its folder was already what it renders)",
            "left 1 job folder in build/r as it was (already what r.yaml renders)",
        ],
        [],
    )
    entry = json.loads((project / "build/r/.jobgen.json").read_text())["jobs"]["r"]
    assert (entry["expect"], entry["timeout"]) == ({"model_mean": 42}, 120)
    assert cli("generate", "--check", "--jobs", "r.yaml", "--out", "build/r")[0] == 0


def test_a_set_of_one_job_is_recorded_on_that_job_only_and_a_check_names_it(project, cli):
    # a trial's --set jobs.np-cyclic... was recorded on all 14 jobs, and a check blamed all 14
    assert cli("generate", "--set", "jobs.np-cyclic.num_rounds=3")[0] == 0
    jobs = json.loads((project / "build/jobs/.jobgen.json").read_text())["jobs"]
    assert {n: e["made_from"] for n, e in jobs.items() if "made_from" in e} == {
        "np-cyclic": {"jobs": ["jobs.yaml"], "set": ["jobs.np-cyclic.num_rounds=3"]}
    }
    code, _, err = cli("generate", "--check")
    assert code == 1
    assert err[-1] == (
        "build/jobs is out of date with jobs.yaml, but 1 job in it was generated from other files or --set than "
        "this check's (1 job from jobs.yaml with --set jobs.np-cyclic.num_rounds=3): to check it, run `python -m "
        "generator generate --check --jobs jobs.yaml --job np-cyclic --out build/jobs --set "
        "jobs.np-cyclic.num_rounds=3`; `make generate` would replace it with what jobs.yaml renders"
    )
    assert cli("generate", "--check", "--set", "jobs.np-cyclic.num_rounds=3")[0] == 0
    code, _, err = cli("generate", "--check", "--job", "np-cy*")  # a pattern selects it too
    assert code == 1 and "1 job in it was generated from other files or --set than this check's" in err[-1]


def test_a_check_calls_a_file_generate_wrote_and_no_longer_renders_no_longer_generated(project, cli):
    assert cli("generate")[0] == 0
    code, out, err = cli("generate", "--check", "--set", "jobs.np-per-site.sites={}")
    assert code == 1
    gone = [line for line in out if line.startswith("no longer generated: build/jobs/np-per-site/app_site-")]
    assert gone and not any(line.startswith("unexpected:") for line in out)
    assert "move a file you edited by hand away first" not in err[-1]
    # trial 48: "other files or --set than this check's (1 job from jobs.yaml alone)" hid the check's own --set
    assert "(1 job from jobs.yaml alone; this check: jobs.yaml with --set 'jobs.np-per-site.sites={}')" in err[-1]
    (project / "build/jobs/np-per-site/app_site-1/custom/notes.txt").write_text("mine")
    out = cli("generate", "--check", "--set", "jobs.np-per-site.sites={}")[1]
    assert "unexpected: build/jobs/np-per-site/app_site-1/custom/notes.txt" in out


@pytest.mark.parametrize("mode", ["exchange", "whole-tree"])
def test_generate_says_generated_only_for_the_folders_it_wrote(project, cli, monkeypatch, mode):
    import generator.write

    if mode == "whole-tree":  # as on a system without renameat2(RENAME_EXCHANGE)
        monkeypatch.setattr(generator.write, "_libc_renameat2", lambda: None)
    names = shipped_job_names()
    code, out, err = cli("generate")
    assert (code, err, out) == (0, [], [f"generated build/jobs/{name}" for name in names])
    assert cli("generate") == (
        0,
        [f"build/jobs is up to date with jobs.yaml: left {len(names)} job folders as they were"],
        [],
    )
    inode = os.stat(project / "build/jobs" / names[0] / "meta.json").st_ino
    code, out, err = cli("generate", "--set", f"jobs.{names[1]}.num_rounds=7")
    assert (code, err) == (0, [])
    assert out == [
        f"generated build/jobs/{names[1]}",
        f"left {len(names) - 1} other job folders in build/jobs as they were (already what jobs.yaml renders)",
    ]
    assert os.stat(project / "build/jobs" / names[0] / "meta.json").st_ino == inode  # left as it was, as said
    assert '"num_rounds": 7' in (project / "build/jobs" / names[1] / "app/config/config_fed_server.json").read_text()
    assert cli("generate", "--job", names[0]) == (
        0,
        ["build/jobs is up to date with jobs.yaml: left 1 job folder as it was"],
        [],
    )


#: Values of the wrong shape for every kind of schema rule the jobs schema uses (type, enum, const,
#: pattern, sizes, uniqueItems, ranges), written with YAML booleans, nulls, lists and mappings.
WRONG_SHAPES = """\
defaults:
  deploy_map: {app: [yes, yes, ~]}
  server: {task_request_interval: [true]}
jobs:
  - name: [no]
    script: {a: ~}
    num_rounds: 0
    params_transfer_type: on
    expect: {metric_points_per_site: {k: false}}
    receiver:
      type: wandb
      tags: [yes, no, on, yes, ~, {a: 1}, [1]]
      project: ""
      job_type: ""
      config: {a: [1], b: {c: ~}}
      events: []
      process_timeout: 0
      mode: null
  - name: b
    script: train_metrics.py
    receiver: {type: mlflow, events: [yes, yes], experiment_name: "", run_tags: {a: ~}}
  - name: c
    script: train_full.py
    deploy_map: {}
    receiver: {}
"""


def test_schema_messages_never_show_a_python_repr(project, cli):
    """True/False/None, dict or list syntax would be Python's words, not the YAML the user wrote."""
    (project / "jobs.yaml").write_text(WRONG_SHAPES, encoding="utf-8")
    code, _, err = cli("validate")
    assert code == 2 and len(err) > 15, err
    assert all(LOCATED.match(line) for line in err), err
    shown = "\n".join(line.split(": ", 1)[1] for line in err)
    assert not re.search(r"\b(True|False|None)\b|\{'|\['|\[\[|non-unique", shown), shown
