"""What each component of a job folder renders to, per NVFlare line, and which ``jobs.yaml`` keys feed it.

One row (:class:`Component`) per workflow, persistor, receiver ``type``, executor mode and widget:
the template partial that writes it, the NVFlare class path, the files it ships into
``app/custom/`` and its ``args``, each argument given by where its value comes from:

- :class:`Key`: a ``jobs.yaml`` setting of the job (a key path into its effective settings);
  ``optional`` ones are left out of ``args`` when the job does not set them;
- :class:`Derived`: a value :mod:`generator.render` computes from the job (``command_argv``,
  ``tracking_uri``, ...), naming the ``jobs.yaml`` key it comes from; None leaves it out;
- a nested ``dict``: an argument that is itself a mapping of such sources;
- anything else: a constant, written as it is.

Render builds each component's ``args`` from its row (the templates only place them), validate
reads which receivers a line has and which ``app/custom/`` names are taken, write which script the
job must ship, and lint maps a component's arguments back to the ``jobs.yaml`` keys behind them.
Class paths and defaults: NVFlare 2.9 and 2.7 FedJob API exports (``ScriptRunner``, ``FedAvgJob``)
and the classes' own files (``nvflare/app_common/...``, ``nvflare/app_opt/tracking/...``).
Nothing here imports nvflare.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .layout import FINAL_MODEL, PT_FINAL_MODEL
from .lines import SUPPORTED_LINES


@dataclass(frozen=True)
class Key:
    """An argument whose value is the job's ``jobs.yaml`` setting at ``path`` (e.g. ``("receiver", "events")``).

    ``optional``: left out of ``args`` when the job does not set it (the class's own default applies).
    """

    path: tuple[str, ...]
    optional: bool = False


@dataclass(frozen=True)
class Derived:
    """An argument computed by render (a name of :func:`generator.render.derived_values`) from ``key``.

    A value of None leaves the argument out of ``args`` (the class's own default applies).
    """

    name: str
    key: tuple[str, ...]


@dataclass(frozen=True)
class Component:
    """One component of a job folder's configs.

    Attributes:
        partial (str): the template (below ``templates/nvflare-<line>/`` or ``templates/shared/``)
            that writes it; partials start with ``_`` and are never written out.
        path (str): the class path written into the config (an NVFlare class, or a module the
            generator ships in ``custom_files``).
        args (dict): argument name -> source (:class:`Key`, :class:`Derived`, nested dict, constant).
        key (tuple[str, ...]): the ``jobs.yaml`` setting that puts the component in the job
            (empty: every job has it).
        custom_files (tuple[str, ...]): files copied from ``templates/nvflare-<line>/custom/`` into
            the job's ``app/custom/`` (the server app imports them).
        classes (tuple[str, ...]): further NVFlare classes the partial writes with constant args.
        writers (tuple[str, ...]): for a receiver: the Client API writer classes
            (``nvflare.client.tracking``) whose points it stores; validate warns when a script
            imports one and the job has no receiver of this type.
        components (dict): for a workflow: the further server components it finds by id
            (id -> :class:`Component`), written after the persistor in ``config_fed_server.json``.
    """

    partial: str
    path: str
    args: dict = field(default_factory=dict)
    key: tuple[str, ...] = ()
    custom_files: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    writers: tuple[str, ...] = ()
    components: dict = field(default_factory=dict)


@dataclass(frozen=True)
class LineComponents:
    """The components one NVFlare line renders: a row per workflow, receiver ``type`` and executor mode.

    ``cross_site_eval``: the workflow a job with ``cross_site_eval: true`` runs after its training
    workflow, with the server components it finds by id (None: the line has none).
    """

    workflows: dict
    persistor: Component
    receivers: dict
    executors: dict
    event_to_fed: Component
    delivery_server: Component | None
    delivery_client: Component | None
    cross_site_eval: Component | None = None


FEDAVG = Component(
    partial="_fedavg.j2",
    path="nvflare.app_common.workflows.fedavg.FedAvg",
    args={
        "num_clients": Key(("num_clients",)),
        "num_rounds": Key(("num_rounds",)),
        "persistor_id": "persistor",
        "task_check_period": Key(("task_check_period",), optional=True),
    },
)

#: The id the cyclic controller finds its shareable generator by (CyclicController's default
#: ``shareable_generator_id``, and the id NVFlare's CyclicRecipe gives it).
SHAREABLE_GENERATOR_ID = "shareable_generator"

#: Cyclic weight transfer as NVFlare's CyclicRecipe exports it on 2.7 and 2.9
#: (``nvflare/recipe/cyclic.py``): a CyclicController over the persistor, relaying the ``train``
#: task through every client in a fixed order (``order`` FIXED: site-1, site-2, ...) each round
#: and saving the model after each round (``persist_every_n_rounds`` 1), with a
#: FullModelShareableGenerator that turns each site's result into the model the next site gets
#: (a DIFF is added to the current model). The recipe's other arguments are the class defaults
#: (``task_assignment_timeout`` 10 unless the job sets it, ``task_name`` "train", ``memory_gc_rounds`` 1;
#: ``nvflare/app_common/workflows/cyclic_ctl.py``). The controller needs 2 or more clients.
CYCLIC = Component(
    partial="_cyclic.j2",
    path="nvflare.app_common.workflows.cyclic_ctl.CyclicController",
    args={
        "num_rounds": Key(("num_rounds",)),
        "persistor_id": "persistor",
        "shareable_generator_id": SHAREABLE_GENERATOR_ID,
        "task_check_period": Key(("task_check_period",), optional=True),
        "task_assignment_timeout": Key(("task_assignment_timeout",), optional=True),
    },
    key=("workflow",),
    components={
        SHAREABLE_GENERATOR_ID: Component(
            partial="_cyclic.j2",
            path="nvflare.app_common.shareablegenerators.full_model_shareable_generator.FullModelShareableGenerator",
            key=("workflow",),
        )
    },
)

#: The ids NVFlare's cross-site evaluation finds its parts by (the ids of NVFlare's
#: ``hello-numpy-cross-val`` job; FedJob numbers its own, ``controller1``, ``component``, ...).
CROSS_SITE_EVAL_ID = "cross_site_validate"
MODEL_LOCATOR_ID = "model_locator"
JSON_GENERATOR_ID = "json_generator"

#: Cross-site model evaluation after the training workflow, as NVFlare's
#: ``nvflare.recipe.utils.add_cross_site_evaluation`` adds it to a numpy recipe on 2.9 (the same
#: classes and defaults on 2.7): a CrossSiteModelEval workflow
#: (``nvflare/app_common/workflows/cross_site_model_eval.py``) that asks every client for its
#: local model (``submit_model`` task, ``submit_model_timeout`` 600 s), then sends each client
#: model and each server model its NPModelLocator finds (``nvflare/app_common/np/np_model_locator.py``:
#: ``SRV_server``, the persistor's ``<run dir>/models/server.npy``) to every client to evaluate
#: (``validate`` task, ``validation_timeout`` 6000 s); a ValidationJsonGenerator widget
#: (``nvflare/app_common/widgets/validation_json_generator.py``) writes every result at the end of
#: the run to ``<run dir>/cross_site_val/cross_val_results.json``. The client script answers both
#: tasks through the Client API (``flare.is_submit_model()``, ``flare.is_evaluate()``). The
#: locator's ``model_name`` is written as NVFlare's FedJob exports it (the class turns its default
#: ``"server.npy"`` into this mapping).
CROSS_SITE_EVAL = Component(
    partial="_cross_site_eval.j2",
    path="nvflare.app_common.workflows.cross_site_model_eval.CrossSiteModelEval",
    args={"model_locator_id": MODEL_LOCATOR_ID, "submit_model_timeout": 600, "validation_timeout": 6000},
    key=("cross_site_eval",),
    components={
        MODEL_LOCATOR_ID: Component(
            partial="_cross_site_eval.j2",
            path="nvflare.app_common.np.np_model_locator.NPModelLocator",
            args={"model_dir": "models", "model_name": {"server": "server.npy"}},
            key=("cross_site_eval",),
        ),
        JSON_GENERATOR_ID: Component(
            partial="_cross_site_eval.j2",
            path="nvflare.app_common.widgets.validation_json_generator.ValidationJsonGenerator",
            key=("cross_site_eval",),
        ),
    },
)

NP_PERSISTOR = Component(partial="_np_persistor.j2", path="nvflare.app_common.np.np_model_persistor.NPModelPersistor")

MLFLOW_RECEIVER = Component(
    partial="_receiver_mlflow.j2",
    path="nvflare.app_opt.tracking.mlflow.mlflow_receiver.MLflowReceiver",
    args={
        "tracking_uri": Derived("tracking_uri", ("receiver", "tracking_uri")),
        "kw_args": {
            "experiment_name": Key(("receiver", "experiment_name")),
            "run_name": Key(("receiver", "run_name")),
            "experiment_tags": Key(("receiver", "experiment_tags")),
            "run_tags": Key(("receiver", "run_tags")),
        },
        "artifact_location": Key(("receiver", "artifact_location")),
        "events": Key(("receiver", "events")),
        "buffer_flush_time": Key(("receiver", "buffer_flush_time"), optional=True),
    },
    key=("receiver",),
    writers=("MLflowWriter",),
)

TB_RECEIVER = Component(
    partial="_receiver_tensorboard.j2",
    path="nvflare.app_opt.tracking.tb.tb_receiver.TBAnalyticsReceiver",
    args={"tb_folder": Key(("receiver", "tb_folder")), "events": Key(("receiver", "events"))},
    key=("receiver",),
    writers=("SummaryWriter",),
)

#: NVFlare's WandBReceiver drops every point that arrives after a higher step, and on 2.9 points
#: arrive out of order: ``jobgen_wandb_receiver.py`` (shipped into app/custom/) keeps them all.
WANDB_RECEIVER = Component(
    partial="_receiver_wandb.j2",
    path="jobgen_wandb_receiver.OrderedWandBReceiver",
    args={
        "wandb_args": {
            "project": Key(("receiver", "project")),
            "name": Key(("receiver", "run_name")),
            "job_type": Key(("receiver", "job_type")),
            "tags": Key(("receiver", "tags")),
            "notes": Key(("receiver", "notes")),
            "config": Key(("receiver", "config")),
        },
        "mode": Key(("receiver", "mode")),
        "events": Key(("receiver", "events")),
        "process_timeout": Key(("receiver", "process_timeout")),
    },
    key=("receiver",),
    writers=("WandBWriter",),
    custom_files=("jobgen_wandb_receiver.py",),
)

#: In-process clients fire metrics as local events; the server's receiver sees only federated ones.
CONVERT_TO_FED_EVENT = Component(
    partial="_convert_to_fed_event.j2",
    path="nvflare.app_common.widgets.convert_to_fed_event.ConvertToFedEvent",
    args={"events_to_convert": Derived("convert_events", ("receiver", "events")), "fed_event_prefix": "fed."},
    key=("receiver",),
)

#: NVFlare sends each metric point as an unacknowledged federated event, and under CPU load the run
#: ends before late points arrive (they are lost without a log line). ``jobgen_metrics_delivery.py``
#: (shipped into app/custom/) holds each side's end of run until the server has every point its
#: clients sent, through NVFlare's CHECK_END_RUN_READINESS handshake. NVFlare 2.9, every receiver.
#: Not on 2.7: its server drops, uncounted, every federated event older than the last one kept
#: from its site (``FedEventRunner._receive``), so a 2.7 site's count could never be met.
METRICS_DELIVERY_FILE = "jobgen_metrics_delivery.py"
DELIVERY_SERVER = Component(
    partial="_metrics_delivery.j2",
    path="jobgen_metrics_delivery.MetricsDeliveryServer",
    args={"events": Key(("receiver", "events"))},
    key=("receiver",),
    custom_files=(METRICS_DELIVERY_FILE,),
)
DELIVERY_CLIENT = Component(
    partial="_metrics_delivery.j2",
    path="jobgen_metrics_delivery.MetricsDeliveryClient",
    args={"events": Key(("receiver", "events"))},
    key=("receiver",),
    custom_files=(METRICS_DELIVERY_FILE,),
)

#: NVFlare application config variables (top-level keys of config_fed_server.json /
#: config_fed_client.json, read through ``ConfigService``) a job with a receiver sets, in seconds.
#: ``end_run_readiness_timeout`` (NVFlare default 5): the longest a site waits for its components
#: (the metrics delivery above) before ending its run. ``task_check_timeout`` (client, NVFlare
#: default 5): how long a client waits for the server to confirm a task before sending its result;
#: behind thousands of metric events the answer can take longer, and NVFlare logs an ERROR
#: ("programming error: received TIMEOUT from server") although the result is then sent.
RECEIVER_SERVER_VARS = {"end_run_readiness_timeout": 300.0}
RECEIVER_CLIENT_VARS = {"end_run_readiness_timeout": 300.0, "task_check_timeout": 60.0}

#: Arguments every Client API executor of both lines ends with.
_EXCHANGE = {
    "params_exchange_format": Key(("framework",)),
    "server_expected_format": "numpy",
    "params_transfer_type": Key(("params_transfer_type",)),
}
_IN_PROCESS_SCRIPT = {"task_script_path": Key(("script",)), "task_script_args": Key(("script_args",))}
_MODE = {"execution_mode": Derived("execution_mode", ("launch_external_process",))}

#: NVFlare 2.9: one ClientAPIExecutor, the script in-process or as a sub-process it launches.
EXECUTORS_29 = {
    "in_process": Component(
        partial="config_fed_client.json.j2",
        path="nvflare.app_common.executors.client_api_executor.ClientAPIExecutor",
        args={**_MODE, **_IN_PROCESS_SCRIPT, **_EXCHANGE},
    ),
    "external_process": Component(
        partial="config_fed_client.json.j2",
        path="nvflare.app_common.executors.client_api_executor.ClientAPIExecutor",
        args={
            **_MODE,
            "command": Derived("command_argv", ("command",)),
            "launch_once": True,
            "launch_timeout": 300.0,
            "shutdown_timeout": 0.0,
            **_EXCHANGE,
        },
    ),
}

#: NVFlare 2.7, as its FedJob API exports a ScriptRunner: an InProcessClientAPIExecutor, or a
#: ClientAPILauncherExecutor whose SubprocessLauncher starts the script (``script`` is
#: ``command_line``) and whose metrics pipe a MetricRelay fires as federated events.
EXECUTORS_27 = {
    "in_process": Component(
        partial="config_fed_client.json.j2",
        path="nvflare.app_common.executors.in_process_client_api_executor.InProcessClientAPIExecutor",
        args={**_IN_PROCESS_SCRIPT, **_EXCHANGE},
    ),
    "external_process": Component(
        partial="config_fed_client.json.j2",
        path="nvflare.app_common.executors.client_api_launcher_executor.ClientAPILauncherExecutor",
        args={"pipe_id": "pipe", "launcher_id": "launcher", **_EXCHANGE},
        classes=(
            "nvflare.fuel.utils.pipe.cell_pipe.CellPipe",
            "nvflare.app_common.launchers.subprocess_launcher.SubprocessLauncher",
            "nvflare.app_common.widgets.metric_relay.MetricRelay",
            "nvflare.app_common.widgets.external_configurator.ExternalConfigurator",
        ),
    ),
}

#: The id NVFlare's PTModel gives the PyTorch model locator it adds beside the persistor.
PT_LOCATOR_ID = "locator"


@dataclass(frozen=True)
class Framework:
    """What a ``framework`` changes in a job folder besides the executor's ``params_exchange_format``.

    Attributes:
        persistor (Component): the server's model persistor (id ``persistor``).
        components (dict): further server components (id -> :class:`Component`), written after the persistor.
        model_locator (Component): the model locator cross-site evaluation finds the server's model by
            (id :data:`MODEL_LOCATOR_ID`).
        executors (dict): NVFlare line -> executor mode -> the :class:`Component` that replaces the
            line's executor row for this framework (a line not listed keeps its rows).
        model_file (str): the persistor's final model file in a job's workspace (:mod:`generator.layout`).
        server_models (tuple[str, ...]): the names cross-site evaluation gives the server's models
            (``"SRV_" +`` each name ``model_locator`` lists); empty: NPModelLocator's (:mod:`generator.judge`).
    """

    persistor: Component
    components: dict = field(default_factory=dict)
    model_locator: Component | None = None
    executors: dict = field(default_factory=dict)
    model_file: str = ""
    server_models: tuple = ()


#: PyTorch, as NVFlare's PyTorch FedAvg recipe (``nvflare/app_opt/pt/recipes/fedavg.py``) adds the model
#: through PTModel (``nvflare/app_opt/pt/job_config/model.py``, 2.7 and 2.9): a PTFileModelPersistor
#: given the model as ``{"path": "module.Class", "args": {...}}`` (instantiated when the server app
#: starts), ``source_ckpt_file_full_name`` from ``initial_ckpt`` when set, and a PTFileModelLocator
#: (id ``locator``) naming it. Cross-site evaluation adds its own PTFileModelLocator, as
#: ``nvflare.recipe.utils.add_cross_site_evaluation`` does (``MODEL_LOCATOR_REGISTRY["pytorch"]``).
#: On 2.7, ScriptRunner picks the PyTorch executor classes (``_get_in_process_executor_cls``,
#: ``_get_ex_process_executor_cls`` in ``nvflare/job_config/script_runner.py``); 2.9 keeps
#: ClientAPIExecutor with ``params_exchange_format: pytorch``.
_PT_LOCATOR = Component(
    partial="_pt_persistor.j2",
    path="nvflare.app_opt.pt.file_model_locator.PTFileModelLocator",
    args={"pt_persistor_id": "persistor"},
    key=("framework",),
)
PYTORCH = Framework(
    persistor=Component(
        partial="_pt_persistor.j2",
        path="nvflare.app_opt.pt.file_model_persistor.PTFileModelPersistor",
        args={
            "model": {"path": Key(("model", "path")), "args": Key(("model", "args"))},
            "allow_numpy_conversion": True,
            "source_ckpt_file_full_name": Key(("initial_ckpt",), optional=True),
        },
        key=("framework",),
    ),
    components={PT_LOCATOR_ID: _PT_LOCATOR},
    model_locator=_PT_LOCATOR,
    executors={
        "2.7": {
            "in_process": replace(
                EXECUTORS_27["in_process"],
                path="nvflare.app_opt.pt.in_process_client_api_executor.PTInProcessClientAPIExecutor",
            ),
            "external_process": replace(
                EXECUTORS_27["external_process"],
                path="nvflare.app_opt.pt.client_api_launcher_executor.PTClientAPILauncherExecutor",
            ),
        }
    },
    model_file=PT_FINAL_MODEL,
    # PTFileModelLocator lists the persistor's inventory (PTFileModelPersistor.get_model_inventory): the
    # global model's file name, and the best model's only once one was saved (FedAvg here saves none)
    server_models=("SRV_FL_global_model.pt",),
)
#: ``framework`` -> what it renders to (numpy: NVFlare's numpy example, the rows of :data:`LINES`).
FRAMEWORKS = {
    "numpy": Framework(persistor=NP_PERSISTOR, model_file=FINAL_MODEL),
    "pytorch": PYTORCH,
}

#: Per NVFlare line: what each workflow, receiver ``type`` and executor mode renders to.
LINES = {
    "2.7": LineComponents(
        workflows={"fedavg": FEDAVG, "cyclic": CYCLIC},
        persistor=NP_PERSISTOR,
        receivers={"mlflow": MLFLOW_RECEIVER},
        executors=EXECUTORS_27,
        event_to_fed=CONVERT_TO_FED_EVENT,
        delivery_server=None,
        delivery_client=None,
        cross_site_eval=CROSS_SITE_EVAL,
    ),
    "2.9": LineComponents(
        workflows={"fedavg": FEDAVG, "cyclic": CYCLIC},
        persistor=NP_PERSISTOR,
        receivers={"mlflow": MLFLOW_RECEIVER, "tensorboard": TB_RECEIVER, "wandb": WANDB_RECEIVER},
        executors=EXECUTORS_29,
        event_to_fed=CONVERT_TO_FED_EVENT,
        delivery_server=DELIVERY_SERVER,
        delivery_client=DELIVERY_CLIENT,
        cross_site_eval=CROSS_SITE_EVAL,
    ),
}
assert set(LINES) == set(SUPPORTED_LINES), "every supported NVFlare line needs a row in LINES"

#: The workflow of a job that does not set ``workflow`` (the schema's default).
DEFAULT_WORKFLOW = "fedavg"


def receivers_of(line: str) -> tuple[str, ...]:
    """The receiver ``type``s NVFlare ``line`` has a row for, in table order."""
    return tuple(LINES[line].receivers)


def writer_types() -> dict[str, str]:
    """Every Client API writer class a receiver row stores -> that receiver's ``type``, over all lines
    (``{"MLflowWriter": "mlflow", "SummaryWriter": "tensorboard", "WandBWriter": "wandb"}``)."""
    return {writer: kind for line in LINES.values() for kind, row in line.receivers.items() for writer in row.writers}


def custom_files_of(receiver_type: str) -> dict[str, str]:
    """Files a receiver ``type`` ships into ``app/custom/`` on any line -> what writes them (for messages)."""
    return {
        name: f"the {receiver_type} receiver"
        for line in LINES.values()
        for kind, row in line.receivers.items()
        if kind == receiver_type
        for name in row.custom_files
    }


def reserved_custom_files() -> dict[str, str]:
    """Every ``app/custom/`` name the generator ships on some line -> what writes it
    (``"the <type> receiver"``, ``"the metrics delivery components"``)."""
    reserved = {}
    for line in LINES.values():
        for kind in line.receivers:
            reserved.update(custom_files_of(kind))
        for row in (line.delivery_server, line.delivery_client) if line.delivery_server else ():
            reserved.update({name: "the metrics delivery components" for name in row.custom_files})
    return reserved


def all_components() -> list[Component]:
    """Every row of every line (a row shared by lines appears once)."""
    rows: list[Component] = []
    for line in LINES.values():
        for row in [
            *line.workflows.values(),
            *(part for workflow in line.workflows.values() for part in workflow.components.values()),
            line.persistor,
            *line.receivers.values(),
            *line.executors.values(),
            line.event_to_fed,
            line.delivery_server,
            line.delivery_client,
            line.cross_site_eval,
            *(line.cross_site_eval.components.values() if line.cross_site_eval else ()),
            *(row for fw in FRAMEWORKS.values() for row in (fw.persistor, *fw.components.values())),
            *(row for fw in FRAMEWORKS.values() for modes in fw.executors.values() for row in modes.values()),
        ]:
            if row is not None and row not in rows:
                rows.append(row)
    return rows


def arg_keys(args: dict) -> dict[str, tuple[str, ...] | None]:
    """Argument name -> the ``jobs.yaml`` key path its value comes from (None: a constant).

    A nested mapping maps to the longest key path all its sources share (``kw_args`` ->
    ``("receiver",)``).
    """
    keys = {}
    for name, source in args.items():
        if isinstance(source, Key):
            keys[name] = source.path
        elif isinstance(source, Derived):
            keys[name] = source.key
        elif isinstance(source, dict):
            paths = [p for p in arg_keys(source).values() if p]
            keys[name] = _common_prefix(paths) if paths else None
        else:
            keys[name] = None
    return keys


def _common_prefix(paths: list[tuple[str, ...]]) -> tuple[str, ...]:
    prefix = paths[0]
    for path in paths[1:]:
        n = 0
        while n < min(len(prefix), len(path)) and prefix[n] == path[n]:
            n += 1
        prefix = prefix[:n]
    return prefix


def keys_by_class() -> dict[str, tuple[tuple[str, ...], dict]]:
    """Class path -> (the ``jobs.yaml`` key that puts it in a job, its argument -> key map), for lint."""
    found: dict[str, tuple[tuple[str, ...], dict]] = {}
    for row in all_components():
        key, args = found.get(row.path, (row.key, {}))
        found[row.path] = (key, {**args, **{k: v for k, v in arg_keys(row.args).items() if v}})
    return found


def shipped_modules() -> dict[str, str]:
    """Module name -> file name of every component the generator ships into ``app/custom/``."""
    return {name.removesuffix(".py"): name for row in all_components() for name in row.custom_files}


#: The job keys whose mapping adds keyword arguments to a generated component (``workflow_args``:
#: the workflow's controller; ``executor_args``: the Client API executor), for what no other key
#: writes (trial 46: FedAvg's ``stop_cond`` and the executor's ``memory_gc_rounds`` had no way).
EXTRA_ARGS_KEYS = ("workflow_args", "executor_args")


def workflow_row(settings: dict, line: str) -> Component:
    """The workflow row of a job with these ``settings`` (its ``workflow``) on NVFlare ``line``."""
    return LINES[line].workflows[settings.get("workflow", DEFAULT_WORKFLOW)]


def executor_row(settings: dict, line: str, execution_mode: str) -> Component:
    """The Client API executor row of a job with these ``settings`` (its ``framework``'s for
    ``line``, else the line's) in ``execution_mode`` (``in_process``, ``external_process``)."""
    framework = FRAMEWORKS[settings.get("framework", "numpy")]
    return framework.executors.get(line, LINES[line].executors)[execution_mode]


def extra_args_row(settings: dict, line: str, execution_mode: str, key: str) -> Component:
    """The row whose ``args`` the mapping ``key`` (one of :data:`EXTRA_ARGS_KEYS`) of a job with
    these ``settings`` adds to, on NVFlare ``line`` in ``execution_mode``."""
    if key == "workflow_args":
        return workflow_row(settings, line)
    return executor_row(settings, line, execution_mode)


#: Constant arguments of a generated row that ``executor_args`` may change: the sub-process
#: executor's launch settings (the values NVFlare 2.9's ScriptRunner exports are the defaults here).
OVERRIDABLE_CONSTANTS = frozenset({"launch_once", "launch_timeout", "shutdown_timeout"})


#: Extra arguments the generated job cannot run or be judged with (trial 49): FedAvg's rounds are
#: counted from 0 and its ``train`` task is what the executor answers and the judge reads.
NOT_EXTRA = {
    "start_round": "simulate and poc count the rounds from 0 (a job of more rounds: raise num_rounds)",
    "task_name": "the generated executor answers the task 'train', and the judge reads its records",
    "train_task_name": "the generated workflow sends the task 'train'",
}


def extra_arg_problem(row: Component, name: str) -> str | None:
    """Why ``name`` may not be an extra argument of ``row``: the generator writes it from a key
    (set that key), or as a constant the job needs (an id that connects ``row`` to another
    component, the format the server expects); None: it may be (not written, or one of
    :data:`OVERRIDABLE_CONSTANTS`)."""
    if name in NOT_EXTRA:
        return f"{name} cannot be changed here: {NOT_EXTRA[name]}"
    if name not in row.args or name in OVERRIDABLE_CONSTANTS:
        return None
    source = row.args[name]
    if isinstance(source, Key | Derived):
        key = ".".join(source.path if isinstance(source, Key) else source.key)
        return f"{name} is written by the generator from the job's {key}: set {key} (a key of the job) instead"
    return f"{name} is written by the generator ({source!r}), which the job needs as generated: leave it out"
