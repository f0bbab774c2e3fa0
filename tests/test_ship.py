"""What a job ships in ``app/custom/``: the script's own modules, ``custom_files``, and the warnings.

Fast tier (no NVFlare run): each test writes a few client scripts into a throw-away project, runs
the CLI as a user does and checks the generated files byte for byte, or the exact warning lines
(located at the import in the script, naming the jobs). The simulated runs of the shipped example
(``helper_pkg/``), in-process and in a sub-process, are the two ``simulator`` tests at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import INITIAL_MODEL, run_cli

from generator import ship

CUSTOM = "build/jobs/{job}/app/custom"


def write(project: Path, files: dict[str, str]) -> None:
    """Write ``{path below the project: text}`` (dedented)."""
    for rel, text in files.items():
        path = project / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")


def jobs_yaml(project: Path, jobs: list[dict], defaults: dict | None = None) -> None:
    """A jobs.yaml of ``jobs`` (flow style JSON is YAML), fast settings."""
    data = {"defaults": {"num_rounds": 1, **(defaults or {})}, "jobs": jobs}
    (project / "jobs.yaml").write_text(json.dumps(data, indent=2), encoding="utf-8")


def custom_files(project: Path, job: str) -> dict[str, bytes]:
    folder = project / CUSTOM.format(job=job)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def warnings(err: list[str]) -> list[str]:
    return [line for line in err if "warning:" in line]


# -- the shipped example ---------------------------------------------------------------------------


def test_sibling_module_is_shipped_where_its_import_finds_it(project, cli):
    jobs_yaml(
        project,
        [
            {"name": "in", "script": "helper_pkg/train_with_helper.py"},
            {"name": "sub", "script": "helper_pkg/train_with_helper.py", "launch_external_process": True},
        ],
    )
    code, _, err = cli("generate")
    assert code == 0, err
    assert warnings(err) == []
    scripts = project / "client_scripts"
    for job in ("in", "sub"):
        assert custom_files(project, job) == {
            "helper_pkg/train_with_helper.py": (scripts / "helper_pkg/train_with_helper.py").read_bytes(),
            "mock_helper.py": (scripts / "helper_pkg/mock_helper.py").read_bytes(),
        }
    manifest = json.loads((project / "build/jobs/.jobgen.json").read_text())
    digest = hashlib.sha256((scripts / "helper_pkg/mock_helper.py").read_bytes()).hexdigest()
    assert manifest["files"]["in"]["app/custom/mock_helper.py"] == digest


def test_check_and_generate_follow_a_changed_or_hand_edited_module(project, cli):
    jobs_yaml(project, [{"name": "in", "script": "helper_pkg/train_with_helper.py"}])
    assert cli("generate")[0] == 0
    assert cli("generate", "--check")[0] == 0
    helper = project / "client_scripts/helper_pkg/mock_helper.py"
    helper.write_text(helper.read_text() + "\nSTEP = 1\n")
    code, out, _ = cli("generate", "--check")
    assert code == 1
    assert out == ["changed: build/jobs/in/app/custom/mock_helper.py"]
    assert cli("generate")[0] == 0
    shipped = project / CUSTOM.format(job="in") / "mock_helper.py"
    assert shipped.read_bytes() == helper.read_bytes()
    shipped.write_text("# edited by hand\n")
    code, _, err = cli("generate")
    assert code == 2
    assert err == [
        f"{shipped.relative_to(project)}: was changed since it was generated; refusing to overwrite it "
        "(move it away to keep the change, or delete it)"
    ]
    assert shipped.read_text() == "# edited by hand\n"


# -- following imports -----------------------------------------------------------------------------


def test_imports_are_followed_through_packages_relative_imports_and_submodules(project, cli):
    write(
        project,
        {
            "client_scripts/app/train.py": """\
                import os
                import numpy as np
                import nvflare.client as flare
                import helper
                from pkg.sub import mod
                from pkg import extra, not_a_module
                """,
            "client_scripts/app/helper.py": "import common\n",
            "client_scripts/common.py": "X = 1\n",
            "client_scripts/pkg/__init__.py": "from . import sub\n",
            "client_scripts/pkg/sub/__init__.py": "",
            "client_scripts/pkg/sub/mod.py": "from ..other import q\n",
            "client_scripts/pkg/other.py": "q = 1\n",
            "client_scripts/pkg/extra.py": "",
            "client_scripts/pkg/unused.py": "",
            "client_scripts/app/unused.py": "",
        },
    )
    jobs_yaml(project, [{"name": "j", "script": "app/train.py"}])
    code, _, err = cli("generate")
    assert code == 0, err
    assert warnings(err) == []
    assert sorted(custom_files(project, "j")) == [
        "app/train.py",
        "common.py",
        "helper.py",
        "pkg/__init__.py",
        "pkg/extra.py",
        "pkg/other.py",
        "pkg/sub/__init__.py",
        "pkg/sub/mod.py",
    ]


def test_module_next_to_the_script_wins_over_one_in_client_scripts(project, cli):
    write(
        project,
        {
            "client_scripts/app/train.py": "import helper\n",
            "client_scripts/app/helper.py": "NEAR = 1\n",
            "client_scripts/helper.py": "FAR = 1\n",
        },
    )
    jobs_yaml(project, [{"name": "j", "script": "app/train.py"}])
    assert cli("generate")[0] == 0
    assert custom_files(project, "j")["helper.py"] == b"NEAR = 1\n"


def test_symlinked_script_finds_the_modules_next_to_its_target(project, cli):
    os.symlink("helper_pkg/train_with_helper.py", project / "client_scripts/train_link.py")
    jobs_yaml(project, [{"name": "a", "script": "train_link.py"}])
    code, _, err = cli("generate")
    assert (code, warnings(err)) == (0, [])
    assert sorted(custom_files(project, "a")) == ["mock_helper.py", "train_link.py"]


def test_unshipped_local_module_is_a_located_warning_naming_the_jobs(project, cli):
    write(
        project,
        {
            "client_scripts/app/train.py": """\
                import json
                import not_installed_anywhere
                from utils import f
                """,
            "client_scripts/lib/utils.py": "def f(): pass\n",
        },
    )
    jobs_yaml(project, [{"name": "a", "script": "app/train.py"}, {"name": "b", "script": "app/train.py"}])
    code, _, err = cli("generate")
    assert code == 0
    assert warnings(err) == [
        "client_scripts/app/train.py:3:6: warning: imports 'utils', which is not shipped: it is not installed, and "
        "client_scripts/lib/utils.py is not where app/custom/ (NVFlare's import folder) would hold it; move it "
        "next to the script or into client_scripts/ itself, or import it by its path below client_scripts/ "
        "(jobs a, b)"
    ]
    assert sorted(custom_files(project, "a")) == ["app/train.py"]


def test_relative_imports_that_fail_under_nvflare_are_warnings(project, cli):
    write(
        project,
        {
            "client_scripts/app/train.py": "from . import helper\nfrom .helper import g\n",
            "client_scripts/app/helper.py": "def g(): pass\n",
            "client_scripts/t2.py": "import flat\n",
            "client_scripts/flat.py": "from .other import x\n",
            "client_scripts/other.py": "x = 1\n",
        },
    )
    jobs_yaml(project, [{"name": "a", "script": "app/train.py"}, {"name": "b", "script": "t2.py"}])
    code, _, err = cli("validate")
    assert code == 0
    script_reason = (
        "NVFlare runs the script as a file (__main__, in-process with runpy.run_path, in a sub-process as "
        "`python custom/<script>`), where relative imports fail"
    )
    assert warnings(err) == [
        f"client_scripts/app/train.py:1:6: warning: relative import '.': {script_reason}; import it by name: "
        "`import helper` (job a)",
        f"client_scripts/app/train.py:2:6: warning: relative import '.helper': {script_reason}; import it by "
        "name: `from helper import ...` (job a)",
        "client_scripts/flat.py:1:6: warning: relative import '.other': app/custom/flat.py is not inside a "
        "package there, so the relative import fails; import it by name: `from other import ...` (job b)",
    ]


def test_local_module_shadowed_by_an_installed_one_is_a_warning(project, cli):
    write(project, {"client_scripts/train.py": "import json\n", "client_scripts/json.py": "X = 1\n"})
    jobs_yaml(project, [{"name": "a", "script": "train.py"}])
    code, _, err = cli("generate")
    assert code == 0
    assert warnings(err) == [
        "client_scripts/train.py:1:8: warning: 'json' is both client_scripts/json.py (shipped) and an installed "
        "module (the standard library): in-process, NVFlare appends app/custom/ to sys.path, so the installed "
        "one is imported; rename the local one (job a)"
    ]


def test_plain_folder_named_like_an_installed_package_is_not_local(project, cli):
    # `wandb offline` leaves ./wandb/ (no __init__.py) next to a script run by hand; numpy is installed
    write(project, {"client_scripts/train.py": "import numpy\n", "client_scripts/numpy/run.log": "x\n"})
    jobs_yaml(project, [{"name": "a", "script": "train.py"}])
    code, _, err = cli("generate")
    assert (code, warnings(err)) == (0, [])
    assert sorted(custom_files(project, "a")) == ["train.py"]


def test_namespace_folder_with_nothing_shipped_and_a_syntax_error_are_warnings(project, cli):
    write(
        project,
        {
            "client_scripts/train.py": "import mydata\nimport broken\n",
            "client_scripts/mydata/table.csv": "a,b\n",
            "client_scripts/broken.py": "def f(:\n",
        },
    )
    jobs_yaml(
        project,
        [{"name": "a", "script": "train.py"}, {"name": "b", "script": "train.py", "custom_files": ["mydata"]}],
    )
    code, _, err = cli("generate")
    assert code == 0
    assert warnings(err) == [
        "client_scripts/broken.py:1:7: warning: SyntaxError: invalid syntax: its imports are not followed, and "
        "NVFlare cannot run this shipped module (jobs a, b)",
        "client_scripts/train.py:1:8: warning: imports 'mydata', a folder without __init__.py, and nothing in it: "
        "not shipped, so the import fails under NVFlare; import its modules, add an __init__.py, or list it in "
        "`custom_files` (job a)",
    ]
    assert sorted(custom_files(project, "b")) == ["broken.py", "mydata/table.csv", "train.py"]


def test_namespace_folder_is_fine_once_a_module_of_it_is_shipped_later(project, cli):
    write(
        project,
        {
            "client_scripts/train.py": "import mydata\nimport later\n",
            "client_scripts/later.py": "from mydata import loader\n",
            "client_scripts/mydata/loader.py": "",
        },
    )
    jobs_yaml(project, [{"name": "a", "script": "train.py"}])
    code, _, err = cli("generate")
    assert (code, warnings(err)) == (0, [])
    assert sorted(custom_files(project, "a")) == ["later.py", "mydata/loader.py", "train.py"]


def test_writer_imported_by_a_shipped_module_needs_a_receiver(project, cli):
    write(
        project,
        {
            "client_scripts/train.py": "import tracking_helper\n",
            "client_scripts/tracking_helper.py": "from nvflare.client.tracking import MLflowWriter\n",
        },
    )
    jobs_yaml(project, [{"name": "a", "script": "train.py"}])
    code, _, err = cli("generate")
    assert code == 2
    assert err == [
        "jobs.yaml:8:17: jobs[0] (a).script: script streams metrics with MLflowWriter but the job has no `receiver`: "
        "every metric would be lost (add `receiver: {type: mlflow}`; or, if the script streams nothing in this job, "
        "say so with `receiver: {type: none}`)"
    ]


def test_receiver_none_runs_a_script_with_an_unused_writer_without_a_receiver(project, cli):
    """A trial's script imported its writer only behind an option: without a receiver the job was
    refused, with one ``simulate`` failed it for want of points. ``receiver: {type: none}`` says the
    job streams nothing; it also drops a ``defaults`` receiver, and ``--set`` can give it."""
    from generator.write import read_entries

    write(
        project,
        {
            "client_scripts/train.py": """\
                import sys

                if "--tb" in sys.argv:
                    from nvflare.client.tracking import SummaryWriter
            """,
        },
    )
    jobs = [
        {"name": "tb", "script": "train.py", "script_args": "--tb"},
        {"name": "quiet", "script": "train.py", "receiver": {"type": "none"}},
        {"name": "later", "script": "train.py"},
    ]
    jobs_yaml(project, jobs, defaults={"receiver": {"type": "tensorboard"}})
    code, out, err = cli("generate", "--set", "jobs.later.receiver.type=none")
    assert (code, err) == (0, [])
    entries = read_entries(project / "build/jobs")
    assert {name: entries[name].receiver for name in ("tb", "quiet", "later")} == {
        "tb": "tensorboard",
        "quiet": None,
        "later": None,
    }
    for name, receivers in (("tb", 1), ("quiet", 0), ("later", 0)):
        server = (project / f"build/jobs/{name}/app/config/config_fed_server.json").read_text(encoding="utf-8")
        assert server.count("TBAnalyticsReceiver") == receivers
    code, _, err = cli("generate", "--set", "jobs.later.receiver.type=nothing")
    assert code == 2 and "mlflow, tensorboard, wandb, none" in err[0], err


# -- custom_files ----------------------------------------------------------------------------------


def test_custom_files_keep_their_layout_and_skip_caches_and_hidden_entries(project, cli):
    write(
        project,
        {
            "client_scripts/train.py": "",
            "client_scripts/conf/model.json": "{}\n",
            "client_scripts/conf/deep/more.yaml": "a: 1\n",
            "client_scripts/conf/__pycache__/x.cpython-311.pyc": "",
            "client_scripts/conf/old.pyc": "",
            "client_scripts/conf/.hidden": "",
            "client_scripts/conf/.git/config": "",
            "client_scripts/notes.txt": "n\n",
        },
    )
    os.symlink("conf", project / "client_scripts/conf/deep/loop")  # a loop: walked once
    jobs_yaml(project, [{"name": "a", "script": "train.py", "custom_files": ["conf/", "notes.txt", "conf/model.json"]}])
    code, _, err = cli("generate")
    assert code == 0, err
    assert custom_files(project, "a") == {
        "conf/deep/more.yaml": b"a: 1\n",
        "conf/model.json": b"{}\n",
        "notes.txt": b"n\n",
        "train.py": b"",
    }


def test_symlink_out_of_client_scripts_is_refused(project, cli, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.txt").write_text("s")
    write(project, {"client_scripts/train.py": "", "client_scripts/conf/a.txt": ""})
    os.symlink(outside / "secret.txt", project / "client_scripts/conf/link.txt")
    os.symlink(outside, project / "client_scripts/outdir")
    jobs_yaml(project, [{"name": "a", "script": "train.py", "custom_files": ["conf", "outdir"]}])
    code, _, err = cli("generate")
    assert code == 2
    assert err == [
        f"jobs.yaml:10:9: jobs[0] (a).custom_files[0]: 'conf' holds 'conf/link.txt', a symlink to "
        f"{outside}/secret.txt, outside client_scripts/",
        f"jobs.yaml:11:9: jobs[0] (a).custom_files[1]: 'outdir' is a symlink to {outside}, outside client_scripts/",
    ]
    assert not (project / "build").exists()


def test_two_sources_for_one_destination_are_refused(project, cli):
    write(
        project,
        {
            "client_scripts/app/train.py": "import helper\n",
            "client_scripts/app/helper.py": "",
            "client_scripts/helper.py": "",
            "client_scripts/jobgen_wandb_receiver.py": "",
        },
    )
    jobs_yaml(
        project,
        [{"name": "a", "script": "app/train.py", "custom_files": ["helper.py", "jobgen_wandb_receiver.py"]}],
    )
    code, _, err = cli("generate")
    assert code == 2
    assert err == [
        "jobs.yaml:8:17: jobs[0] (a).script: client_scripts/app/helper.py (imported as 'helper') and "
        "client_scripts/helper.py would both be copied to app/custom/helper.py: rename one",
        "jobs.yaml:11:9: jobs[0] (a).custom_files[1]: client_scripts/jobgen_wandb_receiver.py (from custom_files "
        "'jobgen_wandb_receiver.py') would be copied to app/custom/jobgen_wandb_receiver.py, where the generator "
        "writes the wandb receiver: rename it",
    ]


def test_large_shipment_warns_and_a_huge_one_is_refused(project, cli, monkeypatch):
    write(project, {"client_scripts/train.py": ""})
    write(project, {f"client_scripts/data/{i}.txt": "x" for i in range(5)})
    jobs_yaml(project, [{"name": "a", "script": "train.py", "custom_files": ["data/"]}])
    monkeypatch.setattr(ship, "WARN_FILES", 4)
    code, _, err = cli("generate")
    assert code == 0
    assert err[0] == (
        "jobs.yaml:9:23: jobs[0] (a).custom_files: warning: the job ships 6 files, 0.0 MB into app/custom/: every job "
        "folder holds a copy and NVFlare sends it to every site"
    )
    monkeypatch.setattr(ship, "MAX_FILES", 3)
    code, _, err = cli("generate")
    assert code == 2
    assert err == [
        "jobs.yaml:10:9: jobs[0] (a).custom_files[0]: 'data/' holds more than 3 files or 200 MB "
        "(at least 4 files, 0 MB): every job folder would hold a copy and NVFlare sends it to every site; ship "
        "code, and read data from a path on each site"
    ]


# -- simulated: the shipped example in both modes ----------------------------------------------------


@pytest.mark.simulator
def test_script_with_a_sibling_module_runs_in_both_modes(project):
    """The example's +1 per round is in mock_helper.py only: the right final model proves it was shipped and ran."""
    jobs_yaml(
        project,
        [
            {"name": "helper-in-process", "script": "helper_pkg/train_with_helper.py"},
            {
                "name": "helper-sub-process",
                "script": "helper_pkg/train_with_helper.py",
                "launch_external_process": True,
            },
        ],
        defaults={"num_rounds": 2, "task_check_period": 0.05, "server": {"task_request_interval": 0.1}},
    )
    assert run_cli(project, "generate").returncode == 0
    result = run_cli(project, "simulate", timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    for job in ("helper-in-process", "helper-sub-process"):
        model = np.load(project / "build/workspaces" / job / "server/simulate_job/models/server.npy")
        np.testing.assert_array_equal(model, np.array(INITIAL_MODEL, dtype=np.float32) + 2)
