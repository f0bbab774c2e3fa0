"""Strings NVFlare rewrites: what ``validate`` accepts reaches the script exactly, by NVFlare's own code.

No simulator run (see ``test_script_args_simulator.py`` for that): each accepted ``script_args`` is
rendered, its ``config_fed_client.json`` resolved the way the client app does it
(``resolve_var_refs`` over the config and the system variables, as ``JsonConfigurator._do_configure``
does), and the argv is built by NVFlare's own code: ``TaskScriptRunner.get_sys_argv`` in-process,
``prepare_subprocess_command`` for a sub-process. Both must equal the shell split of the value with
``{SITE_NAME}`` and ``{JOB_ID}`` filled in. Values the generator refuses are shown to be changed by
the same NVFlare code, so each refusal is needed.
"""

from __future__ import annotations

import copy
import json
import shlex

import pytest
from conftest import ROOT

from generator.errors import SpecError
from generator.load import load
from generator.render import Renderer
from generator.spec import effective_jobs
from generator.validate import load_schema, validate

pytest.importorskip("nvflare")

from nvflare.app_common.executors.task_script_runner import TaskScriptRunner  # noqa: E402
from nvflare.fuel.utils.json_scanner import JsonScanner  # noqa: E402
from nvflare.fuel.utils.wfconf import resolve_var_refs  # noqa: E402
from nvflare.utils.process_utils import prepare_subprocess_command  # noqa: E402

#: The client's system variables (``ClientJsonConfigurator``), with a workspace path holding a space.
CLIENT_VARS = {
    "JOB_ID": "simulate_job",
    "SITE_NAME": "site-1",
    "WORKSPACE": "/tmp/my project/ws",
    "ROOT_URL": "grpc://127.0.0.1:8002",
    "CP_URL": "grpc://127.0.0.1:8002",
    "RELAY_URL": "grpc://127.0.0.1:8002",
    "SECURE_MODE": False,
    "JOB_CUSTOM_DIR": "/tmp/my project/ws/custom",
    "JOB_CONFIG_DIR": "/tmp/my project/ws/config",
}

ACCEPTED = [
    "",
    "--lr 0.1 --epochs 3",
    "--site {SITE_NAME} --job={JOB_ID}",
    "{SITE_NAME}",
    "--out=runs/{SITE_NAME}/{JOB_ID}",
    "--tag exp#3 --eq=x=y --pct 50% --dollar $HOME --star * --semi a;b",
    "--word é 中文 --neg -1  --two-spaces\t--tab",
    "--note (a) --list [1,2] --colon a:b",
]

#: (script_args, in-process only?) the generator refuses, with what makes NVFlare change them.
REFUSED = [
    ("{lr}", False),
    ("--site {SITE_NAME} --lr {lr}", False),
    ("--lr {{lr}}", False),
    ("--out {WORKSPACE}/out", False),
    ("--name 'a b' --empty ''", True),
    ('--x "y z"', True),
    ("a\\ b", True),
    ("--tag a\u00a0b", True),
]


def _job(tmp_path, script_args: str, external: bool):
    (tmp_path / "client_scripts").mkdir(exist_ok=True)
    (tmp_path / "client_scripts" / "train_full.py").write_bytes((ROOT / "client_scripts/train_full.py").read_bytes())
    spec = {"jobs": [{"name": "j", "script": "train_full.py", "launch_external_process": external}]}
    spec["jobs"][0]["script_args"] = script_args
    (tmp_path / "jobs.yaml").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")  # JSON is YAML
    return load(tmp_path / "jobs.yaml")


def _nvflare_argv(tmp_path, doc, external: bool) -> list[str]:
    """The script's arguments (argv[1:]) as NVFlare builds them from the rendered client config."""
    (job,) = effective_jobs(doc.data, load_schema())
    files = Renderer(tmp_path / "client_scripts").render(job)
    config = json.loads(files["app/config/config_fed_client.json"])
    all_vars = copy.deepcopy(config)
    all_vars.update(CLIENT_VARS)
    resolve_var_refs(JsonScanner(config), all_vars)
    args = config["executors"][0]["executor"]["args"]
    if external:
        argv = prepare_subprocess_command(args["command"])
        return argv[argv.index("custom/train_full.py") + 1 :]
    custom = tmp_path / "custom"
    custom.mkdir(exist_ok=True)
    (custom / "train_full.py").write_text("")
    return TaskScriptRunner(str(custom), args["task_script_path"], args["task_script_args"]).get_sys_argv()[1:]


def _filled(value: str) -> list[str]:
    return [w.replace("{SITE_NAME}", "site-1").replace("{JOB_ID}", "simulate_job") for w in shlex.split(value)]


@pytest.mark.parametrize("external", [False, True], ids=["in-process", "sub-process"])
@pytest.mark.parametrize("script_args", ACCEPTED)
def test_accepted_script_args_reach_the_script_exactly(tmp_path, script_args, external):
    doc = _job(tmp_path, script_args, external)
    validate(doc)
    assert _nvflare_argv(tmp_path, doc, external) == _filled(script_args)


@pytest.mark.parametrize("script_args,in_process_only", REFUSED)
def test_refused_script_args_are_changed_by_nvflare(tmp_path, script_args, in_process_only):
    changed = []
    for external in (False, True):
        doc = _job(tmp_path, script_args, external)
        if external and in_process_only:
            validate(doc)  # a sub-process gets the shell split: quotes are fine there
        else:
            with pytest.raises(SpecError, match="script_args"):
                validate(doc)
        try:
            changed.append(_nvflare_argv(tmp_path, doc, external) != _filled(script_args))
        except ValueError:  # NVFlare refuses the value at run time ("command argv must contain only strings")
            changed.append(True)
    assert changed == [True, not in_process_only]


def test_quoted_arguments_reach_a_sub_process_exactly(tmp_path):
    value = "--name 'a b' --x \"y z\" --empty ''"
    doc = _job(tmp_path, value, True)
    validate(doc)
    assert _nvflare_argv(tmp_path, doc, True) == ["--name", "a b", "--x", "y z", "--empty", ""]


def test_receiver_strings_reach_the_receiver_exactly(tmp_path):
    """Every accepted receiver string is left alone by NVFlare; tracking_uri's variables are filled in."""
    (tmp_path / "client_scripts").mkdir()
    (tmp_path / "client_scripts" / "m.py").write_text("from nvflare.client.tracking import MLflowWriter\n")
    receiver = {
        "type": "mlflow",
        "tracking_uri": "sqlite:///{WORKSPACE}/{JOB_ID}/store.db",
        "experiment_name": "exp (lr=0.1) 50% $HOME",
        "run_name": "run #3",
        "run_tags": {"{key}": "value: a, b", "mlflow.note.content": "# note\nline 2"},
    }
    spec = {"jobs": [{"name": "j", "script": "m.py", "receiver": receiver}]}
    (tmp_path / "jobs.yaml").write_text(json.dumps(spec), encoding="utf-8")
    (job,) = validate(load(tmp_path / "jobs.yaml"))
    config = json.loads(Renderer(tmp_path / "client_scripts").render(job)["app/config/config_fed_server.json"])
    all_vars = copy.deepcopy(config)
    all_vars.update({"JOB_ID": "simulate_job", "SITE_NAME": "server", "WORKSPACE": "/ws dir"})
    resolve_var_refs(JsonScanner(config), all_vars)
    (args,) = [c["args"] for c in config["components"] if c["id"] == "receiver"]
    assert args["tracking_uri"] == "sqlite:////ws dir/simulate_job/store.db"
    assert args["kw_args"]["experiment_name"] == receiver["experiment_name"]
    assert args["kw_args"]["run_name"] == receiver["run_name"]
    assert args["kw_args"]["run_tags"] == receiver["run_tags"]


def test_kept_variables_in_command_are_filled_in(tmp_path):
    doc = _job(tmp_path, "--lr 0.1", True)
    doc.data["jobs"][0]["command"] = "python3 -u -X pycache_prefix=/tmp/pyc-{SITE_NAME}-{JOB_ID}"
    (job,) = validate(doc)
    config = json.loads(Renderer(tmp_path / "client_scripts").render(job)["app/config/config_fed_client.json"])
    all_vars = copy.deepcopy(config)
    all_vars.update(CLIENT_VARS)
    resolve_var_refs(JsonScanner(config), all_vars)
    argv = prepare_subprocess_command(config["executors"][0]["executor"]["args"]["command"])
    assert argv == [
        "python3",
        "-u",
        "-X",
        "pycache_prefix=/tmp/pyc-site-1-simulate_job",
        "custom/train_full.py",
        "--lr",
        "0.1",
    ]
