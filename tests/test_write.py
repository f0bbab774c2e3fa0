"""Output safety: never touch what the generator did not write; atomic swaps; ``generate --check``.

Most runs are in-process (``generator.cli.main``); the kill tests run ``generate`` in a
subprocess that SIGKILLs itself at a chosen point of the write and then check what the next run
finds and leaves.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import ROOT, snapshot

from generator import write
from generator.errors import OutputError
from generator.layout import META_JSON, ManifestEntry, custom_file


@pytest.fixture
def built(project, cli):
    """``project`` with the shipped jobs generated into build/jobs."""
    assert cli("generate")[0] == 0
    return project / "build" / "jobs"


def refused(cli, project, *args: str) -> list[str]:
    """Run a generate that must be refused: exit 2, and not one byte changed anywhere in the project."""
    before = snapshot(project)
    code, _, err = cli("generate", *args)
    assert code == 2, err
    assert snapshot(project) == before
    return err


# --- never touch what is not ours ---------------------------------------------------------------


def test_foreign_file_in_the_output_folder(project, built, cli):
    (built / "notes.txt").write_text("mine")
    assert refused(cli, project) == [
        "build/jobs: holds notes.txt, which the generator did not write; refusing to touch the folder: "
        "move those away first"
    ]


def test_foreign_file_inside_a_job_folder(project, built, cli):
    (built / "np-full-in-process" / "app" / "notes.txt").write_text("mine")
    (built / "np-diff-in-process" / "scratch").mkdir()
    assert refused(cli, project) == [
        "build/jobs/np-diff-in-process/scratch: was not written by the generator; refusing to delete it (move it away)",
        "build/jobs/np-full-in-process/app/notes.txt: was not written by the generator; refusing to delete it "
        "(move it away)",
    ]


def test_generated_file_edited_by_hand_is_not_overwritten(project, built, cli):
    meta = built / "np-full-in-process" / "meta.json"
    meta.write_text(meta.read_text().replace('"min_clients": 2', '"min_clients": 1'))
    assert refused(cli, project) == [
        "build/jobs/np-full-in-process/meta.json: was changed since it was generated; refusing to overwrite it "
        "(move it away to keep the change, or delete it)"
    ]
    meta.unlink()  # the user gives the change up: the next run writes the file again
    assert cli("generate")[0] == 0
    assert json.loads(meta.read_text())["min_clients"] == 2


def test_output_folder_that_is_a_symlink(project, cli, tmp_path_factory):
    target = tmp_path_factory.mktemp("target")
    (target / "precious.txt").write_text("keep me")
    (project / "build").mkdir()
    (project / "build" / "jobs").symlink_to(target)
    message = (
        "build/jobs: is a symlink, not a folder the generator made; refusing to write through it (choose another --out)"
    )
    assert refused(cli, project) == [message]
    assert snapshot(target) == {"precious.txt": snapshot(target)["precious.txt"]}
    (project / "build" / "jobs").unlink()
    (project / "build" / "jobs").symlink_to(project / "nowhere")  # dangling
    assert refused(cli, project) == [message]


def test_output_folder_that_is_a_file(project, cli):
    (project / "build").mkdir()
    (project / "build" / "jobs").write_text("not a folder")
    assert refused(cli, project) == [
        "build/jobs: is a file, not a folder the generator made; refusing to replace it (choose another --out)"
    ]


def test_output_pointed_at_a_home_like_folder(project, cli):
    home = project / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("secret")
    (home / "thesis.tex").write_text("years of work")
    assert refused(cli, project, "--out", "home") == [
        "home: holds files the generator did not write (no .jobgen.json); refusing to touch it: "
        "move it away or choose another --out"
    ]
    assert refused(cli, project, "--out", ".") == [
        f"{project}: holds files the generator did not write (no .jobgen.json); refusing to touch it: "
        "move it away or choose another --out"
    ]


def test_an_output_inside_generated_jobs_or_client_scripts_or_below_a_file_is_refused(project, built, cli):
    # trial 47: --out build/jobs/zzz was written, and the next generate refused build/jobs for holding
    # a folder it "did not write"; --out .../app/custom/x wrote jobs into what NVFlare sends every site
    inside = "a folder of generated jobs (it holds .jobgen.json), which generate replaces as a whole"
    assert refused(cli, project, "--out", "build/jobs/zzz", "--job", "np-cyclic") == [
        f"build/jobs/zzz: is inside build/jobs, {inside}: choose an --out outside it, such as build/zzz"
    ]
    assert refused(cli, project, "--out", "build/jobs/np-cyclic/app/custom/x") == [
        f"build/jobs/np-cyclic/app/custom/x: is inside build/jobs, {inside}: choose an --out outside it, such as "
        "build/x"
    ]
    scripts = "the folder the jobs ship their scripts and custom_files from: choose an --out outside it"
    assert refused(cli, project, "--out", "client_scripts/gen") == [
        f"client_scripts/gen: is inside client_scripts, {scripts} (such as build/jobs)"
    ]
    assert refused(cli, project, "--out", "jobs.yaml/sub") == [
        "jobs.yaml: is a file, not a folder: jobs.yaml/sub cannot be below it (choose another --out)"
    ]
    assert cli("generate", "--out", "build/other", "--job", "np-cyclic")[0] == 0  # beside it: fine


def test_generate_job_says_why_an_edit_in_another_jobs_folder_stops_it(project, built, cli):
    # trial 46: --job hello-pt was refused for an edit in hello-numpy's folder, without a word on why
    (built / "np-cyclic/meta.json").write_text("{}\n")
    err = refused(cli, project, "--job", "np-full-in-process")
    assert err == [
        "build/jobs/np-cyclic/meta.json: was changed since it was generated; refusing to overwrite it (move it "
        "away to keep the change, or delete it) (job 'np-cyclic' is not selected, but generate --job carries "
        "every other job folder over and checks it too)"
    ]


def test_read_only_commands_do_not_speak_of_replacing_the_folder(project, cli):
    # trial 47: lint --out afile and generate --check --out afile said "refusing to replace it"
    (project / "afile").write_text("x")
    (project / "mine").mkdir()
    (project / "mine" / "notes.txt").write_text("mine")
    for command in (["lint"], ["generate", "--check"]):
        assert cli(*command, "--out", "afile")[2] == [
            "afile: is a file, not a folder the generator made (choose another --out)"
        ]
        assert cli(*command, "--out", "mine")[2] == [
            "mine: holds files the generator did not write (no .jobgen.json): choose the --out generate wrote"
        ]


def test_a_job_folder_given_as_out_is_told_the_out_and_job_to_give(project, built, cli):
    # trial 48: simulate --out build/exp/exp-full was told "holds files the generator did not write"
    told = "build/jobs/np-cyclic: is the folder of job 'np-cyclic' in build/jobs, which generate wrote: give --out "
    told += "build/jobs --job np-cyclic"
    for command in (["simulate"], ["lint"], ["generate", "--check"]):
        code, _, err = cli(*command, "--out", "build/jobs/np-cyclic")
        assert (code, err) == (2, [told]), command


def test_a_forged_manifest_does_not_make_a_folder_ours(project, built, cli):
    (built / ".jobgen.json").write_text(json.dumps({"generator": "someone-else", "jobs": {}}))
    assert refused(cli, project)[0].startswith("build/jobs: holds files the generator did not write")


def test_another_run_holding_the_lock_is_waited_for_not_raced(project, built, cli):
    with write._locked(built.parent, built):
        assert refused(cli, project) == ["build: another generate run is writing here; try again when it has finished"]


# --- atomic output and recovery -------------------------------------------------------------------

KILLER = textwrap.dedent(
    """
    import os, pathlib, signal, sys
    what, nth, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    calls = 0
    import generator.write
    if mode == "whole-tree":  # as on a system without renameat2(RENAME_EXCHANGE)
        generator.write._libc_renameat2 = lambda: None

    def killing(real):
        def wrapper(*args, **kwargs):
            global calls
            result = real(*args, **kwargs)
            calls += 1
            if calls == nth:  # right after the nth call has done its work
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        return wrapper

    if what == "write_bytes":
        pathlib.Path.write_bytes = killing(pathlib.Path.write_bytes)
    elif what.startswith("write."):
        name = what.split(".", 1)[1]
        setattr(generator.write, name, killing(getattr(generator.write, name)))
    else:
        setattr(os, what, killing(getattr(os, what)))
    from generator.cli import main
    sys.exit(main(["generate"]))
    """
)


def leftovers(build) -> list[str]:
    return sorted(p.name for p in build.iterdir() if p.name != "jobs")


@pytest.mark.parametrize(
    ("what", "nth", "on_disk"),
    [
        ("write", 7, "old"),  # killed while writing the new tree into .jobs.tmp-* (os.write per file)
        ("rename", 1, "none"),  # killed after moving the old output aside, before the new one is in
        ("rename", 2, "new"),  # killed after the swap, before the old copy is renamed for deletion
        ("unlink", 9, "new"),  # killed while deleting the old copy
    ],
    ids=["while-writing", "between-renames", "after-swap", "while-deleting-old"],
)
def test_a_kill_at_any_point_leaves_old_or_new_output_and_the_next_run_cleans_up(
    project, built, cli, what, nth, on_disk, tmp_path
):
    """The whole-tree swap, as on a system without ``renameat2(RENAME_EXCHANGE)``."""
    _kill_and_recover(project, built, cli, what, nth, on_disk, tmp_path, "whole-tree")


@pytest.mark.parametrize(
    ("what", "nth", "on_disk"),
    [
        ("write", 7, "old"),  # killed while writing changed jobs into .jobs.tmp-* (os.write per file)
        ("replace", 2, "old"),  # after the plan is in .jobs.tmp-*, before jobs/.jobgen.json names it
        ("replace", 3, "mixed"),  # after jobs/.jobgen.json names the run, before the first exchange
        ("write._exchange", 3, "mixed"),  # after three job folders were exchanged
        ("replace", 4, "new"),  # after the final manifest, before the old job folders are deleted
        ("unlink", 9, "new"),  # while deleting the old job folders
    ],
    ids=["while-writing", "plan-written", "manifest-names-run", "between-exchanges", "after-manifest", "deleting"],
)
def test_a_kill_at_any_point_of_the_per_job_exchange_leaves_every_job_old_or_new(
    project, built, cli, what, nth, on_disk, tmp_path
):
    """Changed job folders exchanged one by one: each job folder is present at every moment, old or new."""
    _kill_and_recover(project, built, cli, what, nth, on_disk, tmp_path, "exchange")


def _per_job(tree: dict[str, str]) -> dict[str, dict[str, str]]:
    """A :func:`snapshot` split by job folder (the manifest aside): job -> {path: digest}."""
    jobs: dict[str, dict[str, str]] = {}
    for rel, digest in tree.items():
        if rel != ".jobgen.json":
            jobs.setdefault(rel.split("/")[0], {})[rel] = digest
    return jobs


def _kill_and_recover(project, built, cli, what, nth, on_disk, tmp_path, mode):
    """Kill a regenerate (``mode``: ``whole-tree`` or ``exchange``) right after the ``nth`` call of
    ``what``; the output must then be ``on_disk`` (old, new, none, or ``mixed``: every job folder
    old or new, the manifest naming the run), and recovery must give the new output (or the old)."""
    old = snapshot(built)
    text = (project / "jobs.yaml").read_text()
    (project / "jobs.yaml").write_text(text.replace("num_rounds: 5 ", "num_rounds: 3 "))
    assert cli("generate", "--out", str(tmp_path / "expected"))[0] == 0
    new = snapshot(tmp_path / "expected")
    assert new != old
    (project / "build" / "mine.tmp-keep").mkdir()  # a user's folder: never cleaned
    (project / "build" / ".jobs.tmp-mine").mkdir()  # looks like ours, holds the user's file: kept
    (project / "build" / ".jobs.tmp-mine" / "data.txt").write_text("mine")

    result = subprocess.run(
        [sys.executable, "-c", KILLER, what, str(nth), mode],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    states = {"old": old, "new": new, "none": {}}
    killed = snapshot(project / "build" / "jobs")
    if on_disk == "mixed":
        old_jobs, new_jobs, jobs = _per_job(old), _per_job(new), _per_job(killed)
        assert set(jobs) == set(old_jobs) | set(new_jobs)  # no job folder missing
        assert all(jobs[name] in (old_jobs.get(name), new_jobs.get(name)) for name in jobs)
        manifest = json.loads((project / "build" / "jobs" / ".jobgen.json").read_text())
        assert (
            manifest["token"].startswith(".jobs.tmp-")
            and manifest["jobs"] == json.loads((tmp_path / "expected" / ".jobgen.json").read_text())["jobs"]
        )
        write.read_entries(project / "build" / "jobs")  # readable as it is: simulate finds every job
    else:
        assert killed == states[on_disk]
    litter = [n for n in leftovers(project / "build") if n not in (".jobs.tmp-mine", "mine.tmp-keep")]
    assert litter and all(n.startswith((".jobs.tmp-", ".jobs.old-", ".jobs.del-")) for n in litter), litter

    write.recover(project / "build" / "jobs")  # what the next run does first
    assert snapshot(project / "build" / "jobs") == (new if on_disk in ("new", "mixed") else old)
    assert leftovers(project / "build") == [".jobs.tmp-mine", "mine.tmp-keep"]

    assert cli("generate")[0] == 0  # the next run, all of it
    assert snapshot(project / "build" / "jobs") == new
    assert leftovers(project / "build") == [".jobs.tmp-mine", "mine.tmp-keep"]
    assert (project / "build" / ".jobs.tmp-mine" / "data.txt").read_text() == "mine"


@pytest.mark.parametrize("mode", ["exchange", "whole-tree"])
def test_an_error_midway_leaves_the_previous_output_exactly(project, built, cli, monkeypatch, mode):
    if mode == "whole-tree":  # as on a system without renameat2(RENAME_EXCHANGE)
        monkeypatch.setattr(write, "_libc_renameat2", lambda: None)
    text = (project / "jobs.yaml").read_text()  # every job changed: each is rendered and checked
    (project / "jobs.yaml").write_text(text.replace("num_rounds: 5 ", "num_rounds: 3 "))
    before = snapshot(project)

    calls = []

    def broken_check(where, files, entry, rendered):  # the check of the third job fails: two are written already
        calls.append(where)
        if len(calls) == 3:
            raise write._fail(where, "simulated failure of the final check")

    monkeypatch.setattr(write, "_check_job", broken_check)
    code, _, err = cli("generate")
    assert (
        code == 2 and err[0].startswith("build/.jobs.tmp-") and err[0].endswith("simulated failure of the final check")
    )
    assert snapshot(project) == before


def test_a_killed_first_run_leaves_nothing_the_next_run_does_not_clean(project, cli):
    build = project / "build"
    build.mkdir()
    (build / ".jobs.tmp-abc123").mkdir()  # killed right after mkdtemp: empty
    (build / ".jobs.tmp-def456").mkdir()  # killed while writing its manifest
    (build / ".jobs.tmp-def456" / ".jobgen.json.part").write_text("{")
    assert cli("generate")[0] == 0
    assert leftovers(build) == []


# --- generate --check ---------------------------------------------------------------------------


def test_check_after_a_fresh_generate_is_clean(project, built, cli):
    before = snapshot(project)
    assert cli("generate", "--check") == (0, ["build/jobs is up to date with jobs.yaml"], [])
    assert snapshot(project) == before


def test_check_lists_an_edited_file_and_writes_nothing(project, built, cli):
    client = built / "np-diff-in-process" / "app" / "config" / "config_fed_client.json"
    client.write_text(client.read_text().replace('"DIFF"', '"FULL"'))
    before = snapshot(project)
    assert cli("generate", "--check") == (
        1,
        ["edited: build/jobs/np-diff-in-process/app/config/config_fed_client.json"],
        [
            "build/jobs is out of date with jobs.yaml: run `make generate` "
            "(move a file you edited by hand away first: generate never overwrites it)"
        ],
    )
    assert snapshot(project) == before


def test_check_tells_a_file_generate_will_update_from_one_edited_by_hand(project, built, cli):
    """A trial changed a script in client_scripts/ and was told to move "a file you edited by hand"
    away: ``changed`` (generate updates it) is now told from ``edited`` (generate refuses it)."""
    script = project / "client_scripts/train_diff.py"
    script.write_text(script.read_text() + "\n# a new comment\n")
    code, out, err = cli("generate", "--check")
    assert code == 1
    assert "changed: build/jobs/np-diff-in-process/app/custom/train_diff.py" in out
    assert not any(line.startswith("edited:") for line in out)
    assert err == ["build/jobs is out of date with jobs.yaml: run `make generate`"]
    shipped = built / "np-diff-in-process/app/custom/train_diff.py"
    shipped.write_text("# by hand\n")
    code, out, err = cli("generate", "--check")
    assert "edited: build/jobs/np-diff-in-process/app/custom/train_diff.py" in out
    assert err[0].endswith("(move a file you edited by hand away first: generate never overwrites it)")


def test_check_lists_a_job_removed_from_jobs_yaml_and_an_extra_file(project, built, cli):
    text = (project / "jobs.yaml").read_text()
    start = text.index("  # Same FULL client")
    end = text.index("  # Metrics client in a sub-process.")
    (project / "jobs.yaml").write_text(text[:start] + text[end:])
    (built / "np-full-in-process" / "app" / "custom" / "extra.py").write_text("")
    before = snapshot(project)
    code, out, err = cli("generate", "--check")
    assert code == 1
    assert out == [
        "unexpected job folder: build/jobs/np-full-sub-process",
        "unexpected: build/jobs/np-full-in-process/app/custom/extra.py",
    ]
    assert snapshot(project) == before


def test_check_without_any_output_lists_everything_missing_and_creates_nothing(project, cli, tmp_path):
    assert cli("generate", "--out", str(tmp_path / "reference"))[0] == 0
    generated = sorted(p for p in (tmp_path / "reference").rglob("*") if p.is_file() and p.name != ".jobgen.json")
    before = snapshot(project)
    code, out, _ = cli("generate", "--check")
    assert code == 1
    assert len(out) == len(generated) and all(line.startswith("missing: build/jobs/") for line in out)
    assert snapshot(project) == before


def test_check_refuses_a_folder_that_is_not_ours(project, cli):
    (project / "build" / "jobs").mkdir(parents=True)
    (project / "build" / "jobs" / "x").write_text("")
    assert cli("generate", "--check")[0] == 2


def test_check_of_another_jobs_file_advises_the_command_for_that_file(project, cli):
    (project / "lab jobs.yaml").write_text((project / "jobs.yaml").read_text())
    assert cli("generate", "--jobs", "lab jobs.yaml", "--out", "build/lab")[0] == 0
    (project / "build/lab/np-full-in-process/meta.json").write_text("{}\n")
    code, _, err = cli("generate", "--check", "--jobs", "lab jobs.yaml", "--out", "build/lab")
    assert code == 1
    assert err == [
        "build/lab is out of date with lab jobs.yaml: run `python -m generator generate --jobs 'lab jobs.yaml' "
        "--out build/lab` (move a file you edited by hand away first: generate never overwrites it)"
    ]


def test_check_of_selected_jobs_says_only_those_are_up_to_date(project, cli):
    assert cli("generate")[0] == 0
    assert cli("generate", "--check", "--job", "np-cyclic") == (
        0,
        ["build/jobs: the selected job is up to date with jobs.yaml"],
        [],
    )
    code, out, _ = cli("generate", "--check", "--job", "np-*")
    assert (code, out) == (0, ["build/jobs: the 12 selected jobs are up to date with jobs.yaml"])


def test_an_option_of_another_command_is_refused_and_validate_job_names_show(project, cli, capsys):
    # argparse's prefix matching read a trial's `validate --job np-cyclic` as --jobs: "file not found"
    for argv, hint in (
        (["validate", "--job", "np-cyclic"], "--show NAME prints one job's effective settings"),
        (["lint", "--jobs-only"], None),
        (["simulate", "--jo", "np-cyclic"], None),
    ):
        with pytest.raises(SystemExit) as stopped:
            cli(*argv)
        err = capsys.readouterr().err
        assert stopped.value.code == 2 and f"unrecognized arguments: {' '.join(argv[1:])}" in err
        assert hint is None or hint in err


def test_check_of_some_jobs_advises_the_command_for_those_jobs(project, cli):
    assert cli("generate")[0] == 0
    (project / "build/jobs/np-full-in-process/meta.json").write_text("{}\n")
    code, _, err = cli("generate", "--check", "--job", "np-full-in-process")
    assert code == 1
    assert err == [
        "build/jobs is out of date with jobs.yaml: run `python -m generator generate --jobs jobs.yaml "
        "--job np-full-in-process --out build/jobs` (move a file you edited by hand away first: generate never "
        "overwrites it)"
    ]


# --- the checks before a job is written ----------------------------------------------------------


def _entry(script: str) -> ManifestEntry:
    return ManifestEntry(nvflare_version="2.9", num_clients=1, num_rounds=1, execution_mode="in_process", script=script)


def test_a_job_without_the_script_its_entry_names_is_refused(tmp_path):
    files = {META_JSON: b"{}\n", custom_file("other.py"): b""}
    with pytest.raises(OutputError) as raised:
        write.write_jobs(tmp_path / "out", {"a": files}, {"a": _entry("train.py")})
    (problem,) = raised.value.problems
    assert problem.message == "executor names script 'train.py' but app/custom/ does not hold it"
    assert not (tmp_path / "out").exists()


def test_rendered_configs_are_not_parsed_again_but_a_shipped_json_file_is(tmp_path):
    script = custom_file("train.py")
    # render parsed every config it made: write trusts them (this one is not JSON, to prove it)
    write.write_jobs(tmp_path / "out", {"a": {META_JSON: b"not json", script: b""}}, {"a": _entry("train.py")})
    assert (tmp_path / "out" / "a" / META_JSON).read_bytes() == b"not json"
    shipped = {META_JSON: b"{}", script: b"", custom_file("settings.json"): b"{broken"}
    with pytest.raises(OutputError) as raised:
        write.write_jobs(tmp_path / "out", {"a": shipped}, {"a": _entry("train.py")})
    (problem,) = raised.value.problems
    assert problem.file.endswith("a/app/custom/settings.json")
    assert problem.message.startswith("generated invalid JSON: ")
    assert (tmp_path / "out" / "a" / META_JSON).read_bytes() == b"not json"  # the previous output stays


def test_a_manifest_entry_without_a_field_simulate_needs_is_refused_not_a_traceback(project, built, cli):
    manifest = json.loads((built / ".jobgen.json").read_text(encoding="utf-8"))
    del manifest["jobs"]["np-diff-in-process"]["script"]
    (built / ".jobgen.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    err = refused(cli, project, "--job", "np-full-in-process")
    assert err == [
        "build/jobs/.jobgen.json: the entry of job 'np-diff-in-process' lacks 'script': run `make generate` again"
    ]
    with pytest.raises(OutputError) as raised:
        write.read_entries(built)
    assert [p.message for p in raised.value.problems] == [err[0].split(": ", 1)[1]]


# --- incremental regeneration ---------------------------------------------------------------------

FIVE_JOBS = "jobs:\n" + "".join(
    f"  - {{name: job-{i}, script: train_full.py, num_rounds: {i + 1}}}\n" for i in range(5)
)


def files_of(jobs_dir) -> dict[str, tuple[int, int, bytes]]:
    """Every file of every job folder (the manifest aside): path -> (inode, mtime in ns, bytes)."""
    found = {}
    for path in sorted(jobs_dir.rglob("*")):
        if path.is_file() and path.name != ".jobgen.json":
            st = path.stat()
            found[path.relative_to(jobs_dir).as_posix()] = (st.st_ino, st.st_mtime_ns, path.read_bytes())
    return found


def rewritten(before: dict, after: dict) -> set[str]:
    """Job folders holding a file that is new, gone, or not the same file (inode, mtime or bytes)."""
    return {rel.split("/")[0] for rel in set(before) | set(after) if before.get(rel) != after.get(rel)}


@pytest.fixture
def five(project, cli):
    """``project`` with five small jobs generated into build/jobs: their files as :func:`files_of` gives them."""
    (project / "jobs.yaml").write_text(FIVE_JOBS)
    assert cli("generate")[0] == 0
    return files_of(project / "build" / "jobs")


def test_regenerating_unchanged_jobs_rewrites_no_file(project, cli, five):
    manifest = (project / "build" / "jobs" / ".jobgen.json").read_bytes()
    assert cli("generate")[0] == 0
    assert files_of(project / "build" / "jobs") == five  # same inode, mtime and bytes: not written again
    assert (project / "build" / "jobs" / ".jobgen.json").read_bytes() == manifest
    assert cli("generate", "--check")[0] == 0


def test_editing_one_job_rewrites_that_job_only(project, cli, five):
    (project / "jobs.yaml").write_text(
        FIVE_JOBS.replace("job-2, script: train_full.py, num_rounds: 3", "job-2, script: train_full.py, num_rounds: 9")
    )
    assert cli("generate")[0] == 0
    after = files_of(project / "build" / "jobs")
    assert rewritten(five, after) == {"job-2"}
    assert json.loads(after["job-2/app/config/config_fed_server.json"][2])["workflows"][0]["args"]["num_rounds"] == 9
    assert cli("generate", "--check")[0] == 0


def test_a_removed_job_is_removed_and_the_others_are_not_rewritten(project, cli, five):
    (project / "jobs.yaml").write_text(
        FIVE_JOBS.replace("  - {name: job-4, script: train_full.py, num_rounds: 5}\n", "")
    )
    assert cli("generate")[0] == 0
    after = files_of(project / "build" / "jobs")
    assert not (project / "build" / "jobs" / "job-4").exists()
    assert after == {rel: v for rel, v in five.items() if not rel.startswith("job-4/")}


def test_a_file_deleted_by_hand_from_an_unchanged_job_is_written_again(project, cli, five):
    (project / "build" / "jobs" / "job-1" / "meta.json").unlink()
    assert cli("generate")[0] == 0
    after = files_of(project / "build" / "jobs")
    assert rewritten(five, after) == {"job-1"}
    assert after["job-1/meta.json"][2] == five["job-1/meta.json"][2]


def test_a_file_edited_by_hand_in_an_unchanged_job_is_still_refused(project, cli, five):
    meta = project / "build" / "jobs" / "job-3" / "meta.json"
    meta.write_bytes(meta.read_bytes() + b" ")
    assert refused(cli, project) == [
        "build/jobs/job-3/meta.json: was changed since it was generated; refusing to overwrite it "
        "(move it away to keep the change, or delete it)"
    ]


def test_generating_one_job_leaves_the_others_files_as_they_are(project, cli, five):
    (project / "jobs.yaml").write_text(FIVE_JOBS.replace("num_rounds: 1}", "num_rounds: 7}"))
    assert cli("generate", "--job", "job-0")[0] == 0
    assert rewritten(five, files_of(project / "build" / "jobs")) == {"job-0"}


def test_a_kill_while_linking_unchanged_jobs_leaves_the_old_output(project, cli, five, monkeypatch):
    """Without renameat2(RENAME_EXCHANGE) the new tree is built beside the output and swapped in:
    an error while linking leaves it as it was."""
    monkeypatch.setattr(write, "_libc_renameat2", lambda: None)
    real, calls = os.link, []

    def failing(*args, **kwargs):
        calls.append(args)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(os, "link", failing)
    (project / "jobs.yaml").write_text(FIVE_JOBS.replace("num_rounds: 5}", "num_rounds: 6}"))
    assert cli("generate")[0] == 130  # stopped (Ctrl-C) while linking the unchanged jobs
    assert len(calls) == 6
    assert files_of(project / "build" / "jobs") == five
    assert leftovers(project / "build") == []


# --- per-job exchange, stat check, render skip ----------------------------------------------------


def folders_of(jobs_dir) -> dict[str, tuple[int, int]]:
    """Every folder below the output (job folders and theirs): path -> (inode, mtime in ns)."""
    return {
        p.relative_to(jobs_dir).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in sorted(jobs_dir.rglob("*"))
        if p.is_dir()
    }


def test_editing_one_job_leaves_the_other_job_folders_in_place(project, cli, five):
    jobs = project / "build" / "jobs"
    before = folders_of(jobs)
    (project / "jobs.yaml").write_text(FIVE_JOBS.replace("num_rounds: 3}", "num_rounds: 9}"))
    assert cli("generate")[0] == 0
    after = folders_of(jobs)
    moved = {rel.split("/")[0] for rel in set(before) | set(after) if before.get(rel) != after.get(rel)}
    assert moved == {"job-2"}  # the other four folders: same inode, same mtime (never moved or rebuilt)
    assert rewritten(five, files_of(jobs)) == {"job-2"}
    assert leftovers(project / "build") == []


def test_unchanged_jobs_are_not_rendered_again(project, cli, five, monkeypatch):
    from generator.render import Renderer

    real, rendered = Renderer.render, []

    def counting(self, job):
        rendered.append(job.name)
        return real(self, job)

    monkeypatch.setattr(Renderer, "render", counting)
    (project / "jobs.yaml").write_text(FIVE_JOBS.replace("num_rounds: 3}", "num_rounds: 9}"))
    assert cli("generate")[0] == 0
    assert rendered == ["job-2"]


def test_a_changed_client_script_rewrites_the_jobs_that_ship_it(project, cli, five):
    script = project / "client_scripts" / "train_full.py"
    script.write_bytes(script.read_bytes() + b"# changed\n")
    assert cli("generate")[0] == 0
    after = files_of(project / "build" / "jobs")
    assert rewritten(five, after) == {f"job-{i}" for i in range(5)}
    assert after["job-0/app/custom/train_full.py"][2].endswith(b"# changed\n")
    assert cli("generate", "--check")[0] == 0


def test_code_or_templates_newer_than_the_output_render_every_job_again(project, cli, five, monkeypatch, tmp_path):
    from generator.render import Renderer

    code = tmp_path / "code"
    code.mkdir()
    monkeypatch.setattr(write, "_CODE_ROOTS", (code,))
    real, rendered = Renderer.render, []
    monkeypatch.setattr(Renderer, "render", lambda self, job: rendered.append(job.name) or real(self, job))
    (project / "jobs.yaml").write_text(FIVE_JOBS.replace("num_rounds: 1}", "num_rounds: 7}"))
    assert cli("generate")[0] == 0  # the code is newer than the manifest: every job rendered, one written
    assert rendered == [f"job-{i}" for i in range(5)]
    rendered.clear()
    assert cli("generate")[0] == 0
    assert rendered == []  # code older than the manifest: nothing rendered
    five = files_of(project / "build" / "jobs")
    (code / "template.j2").write_text("changed")  # as an upgrade of the generator would
    assert cli("generate")[0] == 0
    assert rendered == [f"job-{i}" for i in range(5)]
    assert files_of(project / "build" / "jobs") == five  # rendered the same: still not rewritten


def test_a_same_size_edit_with_its_mtime_put_back_is_still_refused(project, cli, five):
    """``touch -r``: the size and the mtime are as generated; the ctime, which no one can set back, is not."""
    meta = project / "build" / "jobs" / "job-3" / "meta.json"
    st = meta.stat()
    data = meta.read_bytes()
    meta.write_bytes(data.replace(b'"job-3"', b'"job-X"'))
    os.utime(meta, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert meta.stat().st_size == st.st_size and meta.stat().st_mtime_ns == st.st_mtime_ns
    assert refused(cli, project) == [
        "build/jobs/job-3/meta.json: was changed since it was generated; refusing to overwrite it "
        "(move it away to keep the change, or delete it)"
    ]


def test_a_hand_edit_is_still_refused_after_the_output_was_copied(project, cli, five, tmp_path):
    """A copy (``cp -a``) gives every file a new ctime, the manifest included: nothing is taken
    on trust, every file is hashed."""
    import shutil

    meta = project / "build" / "jobs" / "job-1" / "meta.json"
    meta.write_bytes(meta.read_bytes().replace(b'"job-1"', b'"job-Y"'))
    time.sleep(0.2)  # a copy made at once could not be told from the original
    shutil.copytree(project / "build" / "jobs", tmp_path / "copy", copy_function=shutil.copy2)
    shutil.rmtree(project / "build" / "jobs")
    shutil.copytree(tmp_path / "copy", project / "build" / "jobs", copy_function=shutil.copy2)  # manifest last or not
    assert write._stamp(project / "build" / "jobs") is None  # its ctime is not its mtime any more
    assert refused(cli, project) == [
        "build/jobs/job-1/meta.json: was changed since it was generated; refusing to overwrite it "
        "(move it away to keep the change, or delete it)"
    ]


def test_a_hand_edit_that_restores_the_bytes_is_not_a_change(project, cli, five):
    meta = project / "build" / "jobs" / "job-4" / "meta.json"
    data = meta.read_bytes()
    meta.write_bytes(data + b" ")
    meta.write_bytes(data)
    (project / "jobs.yaml").write_text(FIVE_JOBS.replace("num_rounds: 5}", "num_rounds: 6}"))
    assert cli("generate")[0] == 0
    assert rewritten(five, files_of(project / "build" / "jobs")) == {"job-4"}


def test_an_interrupted_exchange_leaves_every_job_and_a_manifest_that_lists_them_and_the_next_run_finishes(
    project, cli, five, monkeypatch, tmp_path
):
    jobs = project / "build" / "jobs"
    changed = FIVE_JOBS.replace("num_rounds: ", "num_rounds: 1")  # every job changed: 11, 12, ...
    (tmp_path / "jobs.yaml").write_text(changed)
    (project / "jobs.yaml").write_text(changed)
    assert cli("generate", "--out", str(tmp_path / "expected"))[0] == 0
    real, calls = write._exchange, []

    def failing(*args):
        calls.append(args)
        if len(calls) == 4:  # the first call tries the file system (two empty folders)
            raise KeyboardInterrupt  # two job folders exchanged, three not yet
        return real(*args)

    monkeypatch.setattr(write, "_exchange", failing)
    assert cli("generate")[0] == 130
    new = files_of(tmp_path / "expected")
    now = files_of(jobs)
    for i in range(5):  # every job folder there, old or new as a whole
        mine = {rel: v[2] for rel, v in now.items() if rel.startswith(f"job-{i}/")}
        assert mine in (
            {rel: v[2] for rel, v in five.items() if rel.startswith(f"job-{i}/")},
            {rel: v[2] for rel, v in new.items() if rel.startswith(f"job-{i}/")},
        )
    server = "app/config/config_fed_server.json"
    assert sum(now[f"job-{i}/{server}"] == five[f"job-{i}/{server}"] for i in range(5)) == 3
    manifest = json.loads((jobs / ".jobgen.json").read_text())
    assert manifest["token"] in leftovers(project / "build")  # the run in progress, named
    assert list(write.read_entries(jobs)) == [f"job-{i}" for i in range(5)]

    monkeypatch.setattr(write, "_exchange", real)
    assert cli("generate")[0] == 0  # recovers (finishes the exchange), then nothing left to do
    assert snapshot(jobs) == snapshot(tmp_path / "expected")
    assert leftovers(project / "build") == []


def test_a_removed_job_folder_goes_aside_then_away_and_the_manifest_forgets_it(project, cli, five):
    first = "  - {name: job-0, script: train_full.py, num_rounds: 1}\n"
    (project / "jobs.yaml").write_text(FIVE_JOBS.replace(first, ""))
    assert cli("generate")[0] == 0
    assert sorted(p.name for p in (project / "build" / "jobs").iterdir()) == [".jobgen.json"] + [
        f"job-{i}" for i in range(1, 5)
    ]
    manifest = json.loads((project / "build" / "jobs" / ".jobgen.json").read_text())
    assert "job-0" not in manifest["jobs"] and "job-0" not in manifest["files"] and "job-0" not in manifest["inputs"]
    assert "token" not in manifest and leftovers(project / "build") == []


def test_an_interrupted_exchange_whose_temporary_folder_was_deleted_is_refused_not_guessed(
    project, cli, five, monkeypatch
):
    import shutil

    real, calls = write._exchange, []

    def failing(*args):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(write, "_exchange", failing)
    (project / "jobs.yaml").write_text(FIVE_JOBS.replace("num_rounds: ", "num_rounds: 1"))
    assert cli("generate")[0] == 130
    monkeypatch.setattr(write, "_exchange", real)
    (token,) = [n for n in leftovers(project / "build") if n.startswith(".jobs.tmp-")]
    shutil.rmtree(project / "build" / token)  # the user cleans up by hand
    err = refused(cli, project)
    assert len(err) == 1 and err[0].startswith("build/jobs/.jobgen.json: names a run that was interrupted")
    assert err[0].endswith("move the output folder away and generate again")


def test_simulate_poc_and_submit_warn_of_job_folders_edited_since_generate(project, built, capsys):
    """A trial edited a generated config from 4 rounds to 6 and ran ``simulate`` directly: "6 of 4
    rounds started", and nothing said why. The files of the jobs to run that are not what generate
    wrote are listed first (only those jobs'), with what it means."""
    from generator.reporter import Reporter
    from generator.simulate import report_edits
    from generator.write import edited_files

    names = ["np-full-in-process", "np-diff-in-process"]
    assert edited_files(built, names) == []
    server = built / "np-full-in-process/app/config/config_fed_server.json"
    server.write_text(server.read_text().replace('"num_rounds": 5', '"num_rounds": 6'))
    (built / "np-full-in-process/app/custom/data.txt").write_text("x")
    other = built / "np-cyclic/meta.json"
    other.write_text(other.read_text() + " ")  # not among the jobs to run: not reported
    assert edited_files(built, names) == [
        (built / "np-full-in-process/app/config/config_fed_server.json", "edited"),
        (built / "np-full-in-process/app/custom/data.txt", "added"),
    ]
    assert edited_files(project / "nowhere", names) == []

    class Seen:
        files = None

        def folders_edited(self, files):
            self.files = files

    seen = Seen()
    report_edits(built, ["np-diff-in-process"], seen)
    assert seen.files is None  # nothing to say: not called
    report_edits(built, names, seen)
    capsys.readouterr()
    Reporter().folders_edited(seen.files)
    assert capsys.readouterr().err.splitlines() == [
        f"warning: {server}: was edited since generate wrote it",
        f"warning: {built / 'np-full-in-process/app/custom/data.txt'}: was not written by generate",
        "warning: the jobs of these files run as their folders are now, and are judged by what the jobs file "
        "said (num_rounds, clients, expect); to keep a change, make it in the jobs file or client_scripts/, then "
        "move the edited file away and generate again (generate never overwrites it)",
    ]


def test_the_simulate_command_says_it_before_any_job_runs(project, built, cli, monkeypatch):
    import generator.simulate

    ran = []
    monkeypatch.setattr(
        generator.simulate, "_run_serial", lambda out, ws, manifest, order, *rest: ran.append(order) or []
    )
    server = built / "np-full-in-process/app/config/config_fed_server.json"
    server.write_text(server.read_text().replace('"num_rounds": 5', '"num_rounds": 6'))
    code, _, err = cli("simulate", "--job", "np-full-in-process", "--job", "np-diff-in-process", "--parallel", "1")
    edited = "build/jobs/np-full-in-process/app/config/config_fed_server.json"
    assert err[0] == f"warning: {edited}: was edited since generate wrote it"
    assert err[1].startswith("warning: the jobs of these files run as their folders are now")
    assert ran and sorted(ran[0]) == ["np-diff-in-process", "np-full-in-process"]  # then they run, as they are
