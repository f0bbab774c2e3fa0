"""Rendering: the shipped jobs.yaml renders the expected NVFlare components, deterministically.

Golden job folders live in tests/golden/; refresh them with ``pytest --update-golden`` after an
intended change to templates or jobs.yaml, and review the diff.
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest
from conftest import GOLDEN, ROOT, run_cli, run_main, shipped_defaults, snapshot

from generator import components, render
from generator.components import Derived, Key
from generator.errors import TemplateError
from generator.layout import ManifestEntry
from generator.load import load
from generator.render import Renderer
from generator.validate import validate
from generator.write import read_entries

EXECUTOR = "nvflare.app_common.executors.client_api_executor.ClientAPIExecutor"
FEDAVG = "nvflare.app_common.workflows.fedavg.FedAvg"
PERSISTOR = "nvflare.app_common.np.np_model_persistor.NPModelPersistor"
MLFLOW = "nvflare.app_opt.tracking.mlflow.mlflow_receiver.MLflowReceiver"
CONVERT = "nvflare.app_common.widgets.convert_to_fed_event.ConvertToFedEvent"
TB = "nvflare.app_opt.tracking.tb.tb_receiver.TBAnalyticsReceiver"
WANDB = "jobgen_wandb_receiver.OrderedWandBReceiver"  # NVFlare's WandBReceiver, keeping out-of-order points
DELIVERY = "metrics_delivery"  # the id of the metrics delivery component, server and client
DELIVERY_FILE = "jobgen_metrics_delivery.py"

EXAMPLE_JOBS = [
    "np-full-in-process",
    "np-diff-in-process",
    "np-metrics-in-process",
    "np-full-sub-process",
    "np-metrics-sub-process",
]
WRITER_JOBS = [
    "np-tensorboard-in-process",
    "np-tensorboard-sub-process",
    "np-wandb-in-process",
    "np-wandb-sub-process",
]
METRICS_JOBS = ["np-metrics-in-process", "np-metrics-sub-process"] + WRITER_JOBS
WORKFLOW_JOBS = ["np-cyclic", "np-cross-site"]  # other workflows, cross-site evaluation (tests/test_workflows.py)
SITES_JOBS = ["np-per-site"]  # per-site settings, a multi-app job (tests/test_sites.py)
PT_JOBS = ["pt-full-in-process", "pt-diff-sub-process"]  # framework: pytorch (tests/test_pytorch.py)


def render_text(yaml_text: str, tmp_path: Path) -> dict[str, dict[str, bytes]]:
    (tmp_path / "jobs.yaml").write_text(yaml_text, encoding="utf-8")
    if not (tmp_path / "client_scripts").exists():
        shutil.copytree(ROOT / "client_scripts", tmp_path / "client_scripts")
    doc = load(tmp_path / "jobs.yaml")
    return {job.name: Renderer(tmp_path / "client_scripts").render(job) for job in validate(doc)}


@pytest.fixture(scope="module")
def shipped() -> dict[str, dict[str, dict]]:
    doc = load(ROOT / "jobs.yaml")
    out = {}
    for job in validate(doc):
        files = Renderer(ROOT / "client_scripts").render(job)
        out[job.name] = {k: json.loads(v) for k, v in files.items() if k.endswith(".json")}
        out[job.name]["scripts"] = sorted(k for k in files if k.startswith("app/custom/"))
    return out


def test_shipped_jobs_are_the_examples_five_runs_then_the_other_writers(shipped):
    assert list(shipped) == EXAMPLE_JOBS + WRITER_JOBS + ["np-cyclic", "np-per-site", "np-cross-site"] + PT_JOBS
    assert sorted(WORKFLOW_JOBS + SITES_JOBS + PT_JOBS) == sorted(list(shipped)[len(EXAMPLE_JOBS + WRITER_JOBS) :])


@pytest.mark.parametrize("name", EXAMPLE_JOBS + WRITER_JOBS)
def test_server_runs_fedavg_over_the_numpy_persistor(shipped, name):
    server = shipped[name]["app/config/config_fed_server.json"]
    defaults = shipped_defaults()  # every shipped job takes these from jobs.yaml's defaults
    (workflow,) = server["workflows"]
    assert workflow["path"] == FEDAVG
    assert workflow["args"] == {
        "num_clients": defaults["num_clients"],
        "num_rounds": defaults["num_rounds"],
        "persistor_id": "persistor",
        "task_check_period": defaults["task_check_period"],
    }
    persistor = next(c for c in server["components"] if c["id"] == "persistor")
    assert persistor["path"] == PERSISTOR
    assert server["server"]["task_request_interval"] == defaults["server"]["task_request_interval"]
    meta = shipped[name]["meta.json"]
    assert meta == {
        "name": name,
        "resource_spec": {},
        "min_clients": defaults["min_clients"],
        "deploy_map": {"app": ["@ALL"]},
    }


def executor_args(job):
    (entry,) = job["app/config/config_fed_client.json"]["executors"]
    assert entry["tasks"] == ["*"]
    assert entry["executor"]["path"] == EXECUTOR
    return entry["executor"]["args"]


def test_in_process_executor(shipped):
    args = executor_args(shipped["np-full-in-process"])
    assert args["execution_mode"] == "in_process"
    assert args["task_script_path"] == "train_full.py"
    assert "command" not in args
    assert args["params_exchange_format"] == "numpy"
    assert args["params_transfer_type"] == "FULL"
    assert shipped["np-full-in-process"]["scripts"] == ["app/custom/train_full.py"]


def test_diff_job_transfers_diff(shipped):
    assert executor_args(shipped["np-diff-in-process"])["params_transfer_type"] == "DIFF"
    assert shipped["np-diff-in-process"]["scripts"] == ["app/custom/train_diff.py"]


def test_sub_process_executor_launches_the_script_from_custom(shipped):
    args = executor_args(shipped["np-full-sub-process"])
    assert args["execution_mode"] == "external_process"
    assert args["command"] == ["python3", "-u", "custom/train_full.py"]
    assert args["launch_once"] is True
    assert "task_script_path" not in args


def test_metrics_jobs_have_an_mlflow_receiver_without_tracking_uri(shipped):
    for name in ("np-metrics-in-process", "np-metrics-sub-process"):
        server = shipped[name]["app/config/config_fed_server.json"]
        (receiver,) = [c for c in server["components"] if c["path"] == MLFLOW]
        assert "tracking_uri" not in receiver["args"]  # MLflow 3 refuses file://; NVFlare 2.9 then uses SQLite
        assert receiver["args"]["events"] == ["fed.analytix_log_stats"]
        assert receiver["args"]["kw_args"]["experiment_name"] == "nvflare-fedavg-np-experiment"


@pytest.mark.parametrize("name", METRICS_JOBS)
def test_only_in_process_metrics_convert_local_events(shipped, name):
    """In-process metrics need ConvertToFedEvent on 2.9 (else none arrives); sub-process ones must not get it."""
    components = [c for c in shipped[name]["app/config/config_fed_client.json"]["components"] if c["id"] != DELIVERY]
    if name.endswith("in-process"):
        assert components == [
            {
                "id": "event_to_fed",
                "path": CONVERT,
                "args": {"events_to_convert": ["analytix_log_stats"], "fed_event_prefix": "fed."},
            }
        ]
    else:
        assert components == []
    assert shipped["np-full-in-process"]["app/config/config_fed_client.json"]["components"] == []


def delivery_jobs(line: str, tmp_path: Path) -> dict[str, dict[str, bytes]]:
    text = (
        f'defaults: {{nvflare_version: "{line}"}}\njobs:\n'
        "  - name: plain\n    script: train_full.py\n"
        "  - name: in\n    script: train_metrics.py\n    receiver: {type: mlflow, events: [fed.custom_stats]}\n"
        "  - name: sub\n    script: train_metrics.py\n    launch_external_process: true\n"
        "    receiver: {type: mlflow}\n"
    )
    return render_text(text, tmp_path)


def assert_no_delivery(files: dict[str, bytes]) -> None:
    configs = [json.loads(v) for k, v in files.items() if k.startswith("app/config/")]
    assert not any(c["id"] == DELIVERY for config in configs for c in config["components"])
    assert not any("end_run_readiness_timeout" in config for config in configs)
    assert f"app/custom/{DELIVERY_FILE}" not in files


def test_every_29_receiver_job_holds_its_end_of_run_until_its_metrics_arrive(tmp_path):
    """Both sides of the metrics delivery handshake, the same events as the receiver, NVFlare's app config
    variables at the top of each config, the module shipped byte for byte; nothing without a receiver."""
    from generator.render import TEMPLATES_DIR

    files = delivery_jobs("2.9", tmp_path)
    source = (TEMPLATES_DIR / "shared/custom" / DELIVERY_FILE).read_bytes()
    for name, events in (("in", ["fed.custom_stats"]), ("sub", ["fed.analytix_log_stats"])):
        server = json.loads(files[name]["app/config/config_fed_server.json"])
        client = json.loads(files[name]["app/config/config_fed_client.json"])
        for config, cls in ((server, "MetricsDeliveryServer"), (client, "MetricsDeliveryClient")):
            (delivery,) = [c for c in config["components"] if c["id"] == DELIVERY]
            assert delivery == {"id": DELIVERY, "path": f"jobgen_metrics_delivery.{cls}", "args": {"events": events}}
        assert list(server)[:2] == ["format_version", "end_run_readiness_timeout"]
        assert server["end_run_readiness_timeout"] == components.RECEIVER_SERVER_VARS["end_run_readiness_timeout"]
        assert {k: client[k] for k in components.RECEIVER_CLIENT_VARS} == components.RECEIVER_CLIENT_VARS
        assert files[name][f"app/custom/{DELIVERY_FILE}"] == source
    assert_no_delivery(files["plain"])


def test_27_jobs_have_no_delivery_handshake(tmp_path):
    """NVFlare 2.7's server drops late events uncounted (FedEventRunner._receive): no count could be met."""
    for job in delivery_jobs("2.7", tmp_path).values():
        assert_no_delivery(job)


def test_a_shipped_file_cannot_take_the_metrics_delivery_modules_name(tmp_path):
    (tmp_path / "client_scripts").mkdir()
    (tmp_path / "client_scripts" / "train.py").write_text("")
    (tmp_path / "client_scripts" / DELIVERY_FILE).write_text("print('mine')\n")
    jobs = f"jobs:\n  - name: a\n    script: train.py\n    custom_files: [{DELIVERY_FILE}]\n"
    (tmp_path / "jobs.yaml").write_text(jobs)
    result = run_main(tmp_path, "generate")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"jobs.yaml:4:20: jobs[0] (a).custom_files[0]: client_scripts/{DELIVERY_FILE} (from custom_files "
        f"'{DELIVERY_FILE}') would be copied to app/custom/{DELIVERY_FILE}, where the generator writes the "
        "metrics delivery components: rename it"
    ]


def receiver_of(job) -> dict:
    (receiver,) = [c for c in job["app/config/config_fed_server.json"]["components"] if c["id"] == "receiver"]
    return receiver


@pytest.mark.parametrize("name", ["np-tensorboard-in-process", "np-tensorboard-sub-process"])
def test_tensorboard_jobs_have_a_tb_receiver(shipped, name):
    receiver = receiver_of(shipped[name])
    assert receiver == {
        "id": "receiver",
        "path": TB,
        "args": {"tb_folder": "tb_events", "events": ["fed.analytix_log_stats"]},
    }
    assert shipped[name]["scripts"] == [f"app/custom/{DELIVERY_FILE}", "app/custom/train_metrics_tensorboard.py"]


@pytest.mark.parametrize("name", ["np-wandb-in-process", "np-wandb-sub-process"])
def test_wandb_jobs_have_an_offline_wandb_receiver_shipped_in_custom(shipped, name):
    args = receiver_of(shipped[name])["args"]
    assert receiver_of(shipped[name])["path"] == WANDB
    assert args["mode"] == "offline"
    assert args["events"] == ["fed.analytix_log_stats"]
    assert args["process_timeout"] == 60
    assert args["wandb_args"]["project"] == "nvflare-fedavg-np-experiment"
    assert args["wandb_args"]["job_type"] == "train"  # NVFlare's WandBReceiver requires project, group, job_type
    assert shipped[name]["scripts"] == [
        f"app/custom/{DELIVERY_FILE}",
        "app/custom/jobgen_wandb_receiver.py",
        "app/custom/train_metrics_wandb.py",
    ]


def test_the_shipped_wandb_receiver_is_the_template_file_and_subclasses_nvflares(tmp_path):
    from generator.render import TEMPLATES_DIR

    files = render_text(
        "jobs:\n  - name: w\n    script: train_metrics_wandb.py\n    receiver: {type: wandb}\n", tmp_path
    )
    source = (TEMPLATES_DIR / "nvflare-2.9/custom/jobgen_wandb_receiver.py").read_bytes()
    assert files["w"]["app/custom/jobgen_wandb_receiver.py"] == source
    text = source.decode()
    assert "class OrderedWandBReceiver(WandBReceiver):" in text
    assert "from nvflare.app_opt.tracking.wandb.wandb_receiver import WandBReceiver" in text


def test_a_job_receiver_of_another_type_replaces_the_default_one(tmp_path):
    rendered = render_text(
        "defaults:\n  receiver: {type: mlflow, experiment_name: x}\n"
        "jobs:\n  - name: a\n    script: train_metrics.py\n"
        "  - name: b\n    script: train_metrics_tensorboard.py\n    receiver: {type: tensorboard}\n"
        "  - name: c\n    script: train_metrics.py\n    receiver: {type: mlflow, run_name: r}\n",
        tmp_path,
    )
    a, b, c = (receiver_of({k: json.loads(v) for k, v in rendered[n].items() if k.endswith(".json")}) for n in "abc")
    assert a["args"]["kw_args"]["experiment_name"] == "x"
    assert b["args"] == {"tb_folder": "tb_events", "events": ["fed.analytix_log_stats"]}
    assert c["args"]["kw_args"]["experiment_name"] == "x"  # same type: merged key by key
    assert c["args"]["kw_args"]["run_name"] == "r"


def test_jobs_without_receiver_have_none(shipped):
    for name in ("np-full-in-process", "np-diff-in-process", "np-full-sub-process"):
        paths = [c["path"] for c in shipped[name]["app/config/config_fed_server.json"]["components"]]
        assert paths == [PERSISTOR]


def test_defaults_merge_and_job_keys_win(tmp_path):
    rendered = render_text(
        "defaults:\n  num_rounds: 7\n  server: {task_request_interval: 0.5}\n"
        "jobs:\n  - name: a\n    script: train_full.py\n  - name: b\n    script: train_full.py\n    num_rounds: 3\n",
        tmp_path,
    )
    a = json.loads(rendered["a"]["app/config/config_fed_server.json"])
    b = json.loads(rendered["b"]["app/config/config_fed_server.json"])
    assert a["workflows"][0]["args"]["num_rounds"] == 7
    assert b["workflows"][0]["args"]["num_rounds"] == 3
    assert a["server"]["task_request_interval"] == b["server"]["task_request_interval"] == 0.5
    # schema defaults fill the rest: 2 clients, min_clients 1 (FedJob's), deploy to @ALL
    assert json.loads(rendered["a"]["meta.json"])["min_clients"] == 1
    assert a["workflows"][0]["args"]["num_clients"] == 2


def test_any_string_renders_literally_into_valid_json(tmp_path):
    """Jinja syntax, quotes, newlines, non-ASCII: written literally. Braces only in a key: NVFlare reads
    ``{name}`` in config values, so the generator refuses them there (see test_rewrites.py)."""
    nasty = 'q"uote \\ back\nslash {{ 7*7 }} {% raw %} é 中文 </script> True None'
    calm = nasty.replace("{", "(").replace("}", ")")
    yaml_text = (
        "jobs:\n  - name: a\n    script: train_metrics.py\n    launch_external_process: true\n"
        "    script_args: " + json.dumps(shlex.quote(calm)) + "\n"
        "    receiver:\n      type: mlflow\n      experiment_name: " + json.dumps(calm) + "\n"
        "      run_tags: {" + json.dumps(nasty) + ": " + json.dumps(calm) + "}\n"
    )
    files = render_text(yaml_text, tmp_path)["a"]
    server = json.loads(files["app/config/config_fed_server.json"])
    client = json.loads(files["app/config/config_fed_client.json"])
    kw = server["components"][1]["args"]["kw_args"]
    assert kw["experiment_name"] == calm
    assert kw["run_tags"] == {nasty: calm}
    assert client["executors"][0]["executor"]["args"]["command"][-1] == calm


def test_sub_process_command_splits_like_a_shell(tmp_path):
    files = render_text(
        "jobs:\n  - name: a\n    script: train_full.py\n    launch_external_process: true\n"
        "    command: python3 -X utf8\n    script_args: \"--lr 0.1 --note 'two words'\"\n",
        tmp_path,
    )["a"]
    args = json.loads(files["app/config/config_fed_client.json"])["executors"][0]["executor"]["args"]
    assert args["command"] == ["python3", "-X", "utf8", "custom/train_full.py", "--lr", "0.1", "--note", "two words"]


def test_generation_is_deterministic_and_matches_golden(project, update_golden):
    assert run_cli(project, "generate", "--out", "one").returncode == 0
    assert run_cli(project, "generate", "--out", "two").returncode == 0
    assert snapshot(project / "one") == snapshot(project / "two")
    if update_golden:
        shutil.rmtree(GOLDEN, ignore_errors=True)
        shutil.copytree(project / "one", GOLDEN)
    assert snapshot(project / "one") == snapshot(GOLDEN), "run `pytest --update-golden` and review the diff"


def test_a_writer_made_for_another_receiver_is_a_warning_not_an_error(project):
    """NVFlare 2.9 converts another writer's points (none lost, measured), so generate warns and goes on."""
    (project / "jobs.yaml").write_text(
        "jobs:\n  - name: a\n    script: train_metrics_tensorboard.py\n    receiver:\n      type: mlflow\n"
    )
    result = run_main(project, "generate")
    assert result.returncode == 0
    assert result.stderr.splitlines() == [
        "jobs.yaml:5:13: jobs[0] (a).receiver.type: warning: the script streams with SummaryWriter "
        "(made for `type: tensorboard`) into a mlflow receiver: NVFlare converts every metric point "
        "(add_scalars(main, {k: v}) is stored as k)"
    ]


def test_a_receiver_the_line_has_no_row_for_fails_through_raise_error(tmp_path):
    """Validate refuses it first; should a job reach render anyway, the template stops with a located error."""
    (tmp_path / "jobs.yaml").write_text('jobs:\n  - name: a\n    script: train_full.py\n    nvflare_version: "2.7"\n')
    shutil.copytree(ROOT / "client_scripts", tmp_path / "client_scripts")
    (job,) = validate(load(tmp_path / "jobs.yaml"))
    job.settings["receiver"] = {"type": "tensorboard", "tb_folder": "tb", "events": ["fed.analytix_log_stats"]}
    with pytest.raises(TemplateError) as raised:
        Renderer(tmp_path / "client_scripts").render(job)
    (problem,) = raised.value.problems
    assert (problem.file, problem.line) == ("templates/shared/config_fed_server.json.j2", 17)
    assert problem.message == "receiver type tensorboard has no row for NVFlare 2.7 in generator/components.py"


def test_an_error_inside_a_partial_names_the_partial(tmp_path, monkeypatch, request):
    templates = tmp_path / "templates"
    shutil.copytree(render.TEMPLATES_DIR, templates)
    partial = templates / "nvflare-2.9" / "_receiver_tensorboard.j2"
    partial.write_text(partial.read_text().replace("receiver.args", "receiver.no_such_value.args"))
    monkeypatch.setattr(render, "TEMPLATES_DIR", templates)
    render.make_env.cache_clear()  # environments are made once per line and process
    request.addfinalizer(render.make_env.cache_clear)
    with pytest.raises(TemplateError) as raised:
        render_text(
            "jobs:\n  - name: b\n    script: train_metrics_tensorboard.py\n    receiver: {type: tensorboard}\n",
            tmp_path,
        )
    (problem,) = raised.value.problems
    assert (problem.file, problem.line) == ("templates/nvflare-2.9/_receiver_tensorboard.j2", 3)
    assert problem.message == "undefined value: 'generator.render.Built object' has no attribute 'no_such_value'"


def test_every_row_of_the_component_table_renders_from_keys_the_schema_has():
    schema = json.loads((ROOT / "schema" / "jobs.schema.json").read_text(encoding="utf-8"))["$defs"]
    settings = set(schema["job_settings"]["properties"]) | set(schema["job"]["properties"])
    receiver_keys = {k for name, d in schema.items() if name.startswith("receiver_") for k in d["properties"]}

    def key_paths(args):
        for source in args.values():
            if isinstance(source, dict):
                yield from key_paths(source)
            elif isinstance(source, (Key, Derived)):
                yield source.path if isinstance(source, Key) else source.key

    for line, table in components.LINES.items():
        env = render.make_env(line)
        rows = [*table.workflows.values(), table.persistor, *table.receivers.values(), *table.executors.values()]
        for row in [*rows, table.event_to_fed]:
            env.get_template(row.partial)  # raises TemplateNotFound when the partial is missing
            for name in row.custom_files:
                assert render.shipped_file(line, name).is_file(), (line, name)
            for path in key_paths(row.args):
                assert path[0] in settings, (line, row.path, path)
                if path[0] == "receiver" and len(path) > 1:
                    assert path[1] in receiver_keys, (line, row.path, path)


def test_the_manifest_entry_keeps_the_manifest_format(tmp_path):
    rendered_yaml = (
        "jobs:\n  - name: a\n    script: train_metrics_tensorboard.py\n    receiver: {type: tensorboard}\n"
        "  - name: b\n    script: train_full.py\n    timeout: 90\n"
    )
    (tmp_path / "jobs.yaml").write_text(rendered_yaml, encoding="utf-8")
    shutil.copytree(ROOT / "client_scripts", tmp_path / "client_scripts")
    assert run_cli(tmp_path, "generate").returncode == 0
    on_disk = json.loads((tmp_path / "build" / "jobs" / ".jobgen.json").read_text(encoding="utf-8"))["jobs"]
    fields = ["nvflare_version", "num_clients", "num_rounds", "execution_mode", "script", "receiver"]
    fields += ["tracking_uri", "tb_folder", "expect"]
    assert list(on_disk["a"]) == fields  # no timeout key when the job sets none
    assert list(on_disk["b"]) == [*fields, "timeout"]
    assert (on_disk["a"]["receiver"], on_disk["a"]["tb_folder"], on_disk["b"]["timeout"]) == (
        "tensorboard",
        "tb_events",
        90,
    )
    entries = read_entries(tmp_path / "build" / "jobs")
    assert entries["b"].timeout == 90 and entries["a"].timeout is None
    assert {name: entry.to_json() for name, entry in entries.items()} == on_disk
    assert ManifestEntry.from_json(entries["a"].to_json()) == entries["a"]


@pytest.mark.parametrize(
    "jobs_file",
    [ROOT / "jobs.yaml", *sorted((ROOT / "tests" / "cases" / "valid").glob("*.yaml"))],
    ids=lambda p: p.name if p.parent.name == "valid" else "shipped",
)
def test_the_sources_an_inputs_digest_covers_are_exactly_the_scripts_render_reads(jobs_file, tmp_path):
    """A job is not rendered again when its inputs digest is unchanged (generator.write): the
    digest must cover every client_scripts/ file render copies, or an edited one would be missed."""
    shutil.copy(jobs_file, tmp_path / "jobs.yaml")
    shutil.copytree(ROOT / "client_scripts", tmp_path / "client_scripts")
    from generator.overrides import load_all  # matrix jobs expanded

    for job in validate(load_all(tmp_path / "jobs.yaml")):
        renderer = Renderer(tmp_path / "client_scripts")
        read = []
        real = renderer.script
        renderer.script = lambda name, read=read, real=real: read.append(name) or real(name)
        renderer.render(job)
        assert renderer.sources(job) == list(dict.fromkeys(read)), job.name
        digest = Renderer(tmp_path / "client_scripts").inputs(job)
        assert digest == Renderer(tmp_path / "client_scripts").inputs(job)  # the same every time
        for name in renderer.sources(job):  # and it changes with each source
            path = tmp_path / "client_scripts" / name
            data = path.read_bytes()
            path.write_bytes(data + b"\n")
            assert Renderer(tmp_path / "client_scripts").inputs(job) != digest, (job.name, name)
            path.write_bytes(data)
