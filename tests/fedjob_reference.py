"""The reference side of the equivalence harness: a job spec built with NVFlare's own job API.

:func:`build_fedjob` turns a job's effective settings into what a user of NVFlare's FedJob API
writes (FedJob + NPModelPersistor + FedAvg + optional MLflowReceiver + ScriptRunner, the pieces of
NVFlare's "Client API with numpy" example; for ``framework: pytorch`` the PTModel NVFlare's PyTorch
FedAvg recipe adds, and ScriptRunner's PyTorch framework; for ``workflow: cyclic`` the CyclicController and
FullModelShareableGenerator NVFlare's CyclicRecipe puts in place of FedAvg; for ``cross_site_eval``
the server components NVFlare's ``add_cross_site_evaluation`` adds); :func:`canonical_job`
reads any job folder into a form where two folders compare equal exactly when NVFlare would build
the same components from them.
Works with NVFlare 2.7 and 2.9 (whichever is installed); imports nvflare, so only tests and the
benchmark use it, never the generator.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import json
import shlex
from functools import cache
from pathlib import Path


def build_fedjob(name: str, settings: dict, sites: dict | None = None):
    """A FedJob for ``settings`` (an effective job of ``jobs.yaml``), built as NVFlare's example does.

    Everything the FedJob API can express is passed on: ``min_clients``; FedAvg ``num_clients``,
    ``num_rounds``, ``persistor_id`` and ``task_check_period`` (``workflow: cyclic``: the
    CyclicController and shareable generator with the arguments NVFlare's CyclicRecipe gives them,
    ``nvflare/recipe/cyclic.py``, on 2.7 and 2.9 alike, ``task_check_period`` from the job when it
    sets one); for ``cross_site_eval``, after the training workflow, what
    ``nvflare.recipe.utils.add_cross_site_evaluation`` adds to a numpy recipe's server (2.9; 2.7 has
    the same classes); the MLflowReceiver's arguments
    (``tracking_uri`` only when the job gives one); ScriptRunner's ``script``, ``script_args``,
    ``launch_external_process``, ``command``, ``framework`` and ``params_transfer_type``. The
    script path is relative to the current folder (run it from ``client_scripts/``), as in the
    example. The ``server:`` / ``client:`` entries (the escape hatch) are added with ``job.to``
    (:func:`_add_extras`); a ``replaces: persistor`` entry is built in NPModelPersistor's place.
    Things FedJob cannot express (``server.task_request_interval``) are left out.
    With ``sites`` (site name -> that site's effective settings, for a job whose sites differ),
    each site gets its own ScriptRunner (``FedJob.to(runner, site)``: an ``app_<site>`` each), as a
    FedJob user gives sites different scripts or arguments; otherwise one goes to every client
    (``to_clients``).

    Returns:
        nvflare.FedJob: ready for ``export_job(folder)`` or ``simulator_run(workspace)``.
    """
    from nvflare import FedJob
    from nvflare.app_common.np.np_model_persistor import NPModelPersistor
    from nvflare.app_common.workflows.fedavg import FedAvg
    from nvflare.job_config.script_runner import FrameworkType, ScriptRunner

    s = settings
    job = FedJob(name=name, min_clients=s["min_clients"])
    own = {c["id"]: c for c in (s.get("server") or {}).get("components", []) if c.get("replaces")}
    pytorch = s["framework"] == "pytorch"
    if "persistor" in own:
        persistor_id = job.to_server(_instance(own["persistor"]), "persistor")
    elif pytorch:
        persistor_id = _add_pt_model(job, s)
    else:
        persistor_id = job.to_server(NPModelPersistor(), "persistor")
    if s.get("workflow") == "cyclic":
        _add_cyclic(job, s, persistor_id)
    else:
        fedavg = {"num_clients": s["num_clients"], "num_rounds": s["num_rounds"], "persistor_id": persistor_id}
        if "task_check_period" in s:
            fedavg["task_check_period"] = s["task_check_period"]
        job.to_server(FedAvg(**fedavg))
    if s.get("cross_site_eval"):
        _add_cross_site_eval(job, persistor_id if pytorch else None)
    receiver = s.get("receiver")
    if receiver and receiver["type"] == "tensorboard":
        from nvflare.app_opt.tracking.tb.tb_receiver import TBAnalyticsReceiver

        job.to_server(TBAnalyticsReceiver(tb_folder=receiver["tb_folder"], events=receiver["events"]))
    elif receiver and receiver["type"] == "wandb":
        from nvflare.app_opt.tracking.wandb.wandb_receiver import WandBReceiver

        wandb_args = {
            "project": receiver["project"],
            "name": receiver["run_name"],
            "job_type": receiver["job_type"],
            "tags": receiver["tags"],
            "notes": receiver["notes"],
            "config": receiver["config"],
        }
        job.to_server(
            WandBReceiver(
                wandb_args=wandb_args,
                mode=receiver["mode"],
                events=receiver["events"],
                process_timeout=receiver["process_timeout"],
            )
        )
    elif receiver:
        from nvflare.app_opt.tracking.mlflow.mlflow_receiver import MLflowReceiver

        extra = {"tracking_uri": receiver["tracking_uri"]} if "tracking_uri" in receiver else {}
        if "buffer_flush_time" in receiver:  # passed as the example would; NVFlare's export drops it
            extra["buffer_flush_time"] = receiver["buffer_flush_time"]
        job.to_server(
            MLflowReceiver(
                **extra,
                kw_args={
                    "experiment_name": receiver["experiment_name"],
                    "run_name": receiver["run_name"],
                    "experiment_tags": receiver["experiment_tags"],
                    "run_tags": receiver["run_tags"],
                },
                artifact_location=receiver["artifact_location"],
                events=receiver["events"],
            )
        )

    def runner(own: dict):
        return ScriptRunner(
            script=own["script"],
            script_args=own["script_args"],
            launch_external_process=own["launch_external_process"],
            command=own["command"],
            framework=FrameworkType.PYTORCH if pytorch else FrameworkType.NUMPY,
            params_transfer_type=own["params_transfer_type"],
        )

    if sites:
        for site, own in sites.items():
            job.to(runner(own), site)
            _add_extras(job, own.get("client") or {}, site)
    else:
        job.to_clients(runner(s))
        _add_extras(job, s.get("client") or {}, None)
    _add_extras(job, {k: v for k, v in (s.get("server") or {}).items() if k != "components"}, "server")
    for entry in (s.get("server") or {}).get("components", []):
        if not entry.get("replaces"):
            job.to_server(_instance(entry), entry["id"])
    return job


def _instance(entry: dict):
    """The object a ``{path, args}`` entry of ``jobs.yaml``'s ``server:`` / ``client:`` names, as a user makes it."""
    module, name = entry["path"].rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(**entry.get("args", {}))


def _add_extras(job, section: dict, target: str | None) -> None:
    """A ``server:`` / ``client:`` section's executors, filters and components, added as a FedJob user
    adds them: ``job.to(obj, target, tasks=...)`` for an executor, ``job.to(filter, target,
    filter_type=FilterType.TASK_DATA or TASK_RESULT, tasks=...)`` for a filter, ``job.to(obj, target,
    id)`` for a component; ``target`` None: every client (``to_clients``)."""
    from nvflare.job_config.defs import FilterType

    def to(obj, **kwargs):
        return job.to_clients(obj, **kwargs) if target is None else job.to(obj, target, **kwargs)

    for entry in section.get("executors", []):
        to(_instance(entry["executor"]), tasks=list(entry["tasks"]))
    for name, kind in (("task_data_filters", FilterType.TASK_DATA), ("task_result_filters", FilterType.TASK_RESULT)):
        for chain in section.get(name, []):
            for flt in chain["filters"]:
                to(_instance(flt), filter_type=kind, tasks=list(chain["tasks"]))
    for entry in section.get("components", []):
        to(_instance(entry), id=entry["id"])


def _add_cyclic(job, s: dict, persistor_id: str) -> None:
    """The server side of NVFlare's CyclicRecipe (``nvflare/recipe/cyclic.py``, 2.7 and 2.9): a
    CyclicController and the FullModelShareableGenerator it names, over ``persistor_id``."""
    from nvflare.app_common.shareablegenerators import FullModelShareableGenerator
    from nvflare.app_common.workflows.cyclic_ctl import CyclicController

    job.to_server(
        CyclicController(
            num_rounds=s["num_rounds"],
            task_assignment_timeout=s.get("task_assignment_timeout", 10),
            persistor_id=persistor_id,
            shareable_generator_id="shareable_generator",
            task_name="train",
            task_check_period=s.get("task_check_period", 0.5),
            memory_gc_rounds=1,
        )
    )
    job.to_server(FullModelShareableGenerator(), id="shareable_generator")


def _add_pt_model(job, s: dict) -> str:
    """The server side of NVFlare's PyTorch FedAvg recipe for a model given as ``{path, args}``
    (``nvflare/app_opt/pt/recipes/fedavg.py`` ``_setup_model_and_persistor``, 2.7 and 2.9): a
    ``PTModel`` (``nvflare/app_opt/pt/job_config/model.py``), which adds a PTFileModelPersistor
    building the model (``source_ckpt_file_full_name`` from ``initial_ckpt``) and a PTFileModelLocator
    naming it; the persistor's id."""
    from nvflare.app_opt.pt.job_config.model import PTModel

    extra = {"initial_ckpt": s["initial_ckpt"]} if "initial_ckpt" in s else {}
    ids = job.to_server(PTModel(model=dict(s["model"]), **extra), id="persistor")
    return ids["persistor_id"]


def _add_cross_site_eval(job, pt_persistor_id: str | None = None) -> None:
    """The server side of ``nvflare.recipe.utils.add_cross_site_evaluation`` for a numpy recipe
    (``MODEL_LOCATOR_REGISTRY["numpy"]``: an NPModelLocator with its defaults) or, given the PyTorch
    persistor's id, a PyTorch one (``MODEL_LOCATOR_REGISTRY["pytorch"]``: a PTFileModelLocator naming
    it), with its default timeouts and every connected client participating. Its client side, an
    NPValidator, is added only for ``NumpyFedAvgRecipe``; a Client API script answers the evaluate
    task itself (the unified recipes' pattern), so none is added here."""
    from nvflare.app_common.np.np_model_locator import NPModelLocator
    from nvflare.app_common.widgets.validation_json_generator import ValidationJsonGenerator
    from nvflare.app_common.workflows.cross_site_model_eval import CrossSiteModelEval

    if pt_persistor_id:
        from nvflare.app_opt.pt.file_model_locator import PTFileModelLocator

        locator_id = job.to_server(PTFileModelLocator(pt_persistor_id=pt_persistor_id))
    else:
        locator_id = job.to_server(NPModelLocator())
    job.to_server(ValidationJsonGenerator())
    job.to_server(
        CrossSiteModelEval(
            model_locator_id=locator_id, submit_model_timeout=600, validation_timeout=6000, participating_clients=None
        )
    )


@cache
def init_parameters(class_path: str) -> dict:
    """Constructor parameters of an NVFlare class: name -> default (``inspect.Parameter.empty`` if required).

    Follows ``*args, **kwargs`` up the class hierarchy, as NVFlare's own config loader and FedJob
    exporter do (``FedAvg(**kwargs)`` passes ``num_rounds`` on to ``BaseFedAvg``). A subclass's
    default wins over its base's.

    Raises:
        ImportError, AttributeError: the class does not exist in the installed nvflare.
    """
    module, name = class_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    params: dict = {}
    for klass in cls.__mro__:
        if klass is object:
            break
        signature = inspect.signature(klass.__init__).parameters
        for pname, p in signature.items():
            if pname != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                params.setdefault(pname, p.default)
        if not any(p.kind == p.VAR_KEYWORD for p in signature.values()):
            break
    return params


def _plain(value):
    """Defaults as they would read back from JSON: enums as their value, tuples as lists."""
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


#: Argument normalisations that change nothing NVFlare does, per class: each maps the value as
#: written to the value the class acts on. Sources: nvflare/app_common/workflows/fedavg.py, the filters' files
#: and nvflare/app_common/widgets/intime_model_selector.py (``self.aggregation_weights =
#: aggregation_weights or {}``); SubprocessLauncher runs
#: ``shlex.split(script)`` (nvflare/app_common/launchers/subprocess_launcher.py).
NORMALISE = {
    "nvflare.app_common.workflows.fedavg.FedAvg": {"aggregation_weights": lambda v: v or {}},
    "nvflare.app_common.widgets.intime_model_selector.IntimeModelSelector": {"aggregation_weights": lambda v: v or {}},
    # both filters: ``if not data_kinds: data_kinds = [DataKind.WEIGHT_DIFF, DataKind.WEIGHTS]``, which
    # FedJob's export then writes back (nvflare/app_common/filters/exclude_vars.py, percentile_privacy.py)
    "nvflare.app_common.filters.exclude_vars.ExcludeVars": {"data_kinds": lambda v: v or ["WEIGHT_DIFF", "WEIGHTS"]},
    "nvflare.app_common.filters.percentile_privacy.PercentilePrivacy": {
        "data_kinds": lambda v: v or ["WEIGHT_DIFF", "WEIGHTS"]
    },
    "nvflare.app_common.launchers.subprocess_launcher.SubprocessLauncher": {"script": shlex.split},
}


def effective_args(class_path: str, args: dict) -> dict:
    """Every constructor argument of ``class_path`` as NVFlare would call it with ``args``.

    Args missing from ``args`` get the class's ``__init__`` default; values are normalised by
    :data:`NORMALISE`.

    Raises:
        AssertionError: ``args`` names a parameter the class does not have, or a required one is
            missing (NVFlare would fail to build the component).
    """
    params = init_parameters(class_path)
    unknown = set(args) - set(params)
    assert not unknown, f"{class_path} has no parameter(s) {sorted(unknown)}"
    out = {}
    for name, default in params.items():
        if name in args:
            out[name] = args[name]
        else:
            assert default is not inspect.Parameter.empty, f"{class_path}: required {name!r} missing"
            out[name] = _plain(default)
    for name, fn in NORMALISE.get(class_path, {}).items():
        out[name] = fn(out[name])
    return out


def _is_reference(arg: str) -> bool:
    return arg.endswith("_id") or arg.endswith("_ids")


def _canonical_components(entries: list[dict], extra_ids: dict) -> dict:
    """id -> canonical component, with references to other ids replaced by their target's form."""
    by_id = {e["id"]: e for e in entries if "id" in e}
    by_id.update(extra_ids)
    done: dict = {}

    def canon(entry: dict, seen: tuple = ()) -> dict:
        args = effective_args(entry["path"], entry.get("args", {}))
        for key, value in args.items():
            if not _is_reference(key):
                continue
            if isinstance(value, str) and value in by_id and value not in seen:
                args[key] = {"ref": canon(by_id[value], seen + (value,))}
            elif isinstance(value, list) and all(isinstance(v, str) and v in by_id for v in value):
                args[key] = [{"ref": canon(by_id[v], seen + (v,))} for v in value]
        return {"path": entry["path"], "args": args}

    for key, entry in by_id.items():
        done[key] = canon(entry, (key,))
    return done


def _sorted(items: list) -> list:
    return sorted(items, key=lambda x: json.dumps(x, sort_keys=True))


#: The filter lists of an app config: each chain's tasks and filters compared with every argument filled in.
FILTER_LISTS = ("task_data_filters", "task_result_filters")


def canonical_config(config: dict) -> dict:
    """A ``config_fed_server.json`` / ``config_fed_client.json`` in a form free of ids and order.

    Components, workflows and executors become ``{"path", "args"}`` with every constructor
    argument filled in (:func:`effective_args`) and each reference to another component's id
    replaced by that component's own canonical form; lists of them are sorted. Other top-level
    keys are kept as they are, but for the filter chains (:data:`FILTER_LISTS`): their tasks sorted,
    their filters (in order) with every argument filled in, the chains sorted.
    """
    components = config.get("components", [])
    workflows = config.get("workflows", [])
    executors = config.get("executors", [])
    canon = _canonical_components(components + workflows, {})
    out = {k: v for k, v in config.items() if k not in ("components", "workflows", "executors", *FILTER_LISTS)}
    for name in FILTER_LISTS:
        if name in config:
            out[name] = _sorted(
                [
                    {
                        "tasks": sorted(chain["tasks"]),
                        "filters": [
                            {"path": f["path"], "args": effective_args(f["path"], f.get("args", {}))}
                            for f in chain["filters"]
                        ],
                    }
                    for chain in config[name]
                ]
            )
    out["components"] = _sorted([canon[c["id"]] for c in components])
    if "workflows" in config:
        out["workflows"] = _sorted([canon[w["id"]] for w in workflows])
    if "executors" in config:
        by_id = {c["id"]: c for c in components}
        out["executors"] = _sorted(
            [
                {
                    "tasks": sorted(e["tasks"]),
                    "executor": _canonical_components([{"id": "__executor__", **e["executor"]}], by_id)["__executor__"],
                }
                for e in executors
            ]
        )
    return out


def _mapped(config: dict, class_map: dict) -> dict:
    for entry in config.get("components", []) + config.get("workflows", []):
        entry["path"] = class_map.get(entry["path"], entry["path"])
    return config


def canonical_sites(folder: Path, class_map: dict | None = None) -> dict:
    """A multi-app job folder read per site, for comparison: whatever each site runs, however apps are shared.

    Returns:
        dict: ``{"meta": meta.json without deploy_map, "server": the canonical server config,
        "clients": {site: its canonical client config}, "custom": {site: {relative path: bytes}},
        "apps": {site: its app folder}}``; the server app is the one ``deploy_map`` sends to ``server``.
    """
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    deploy_map = meta.pop("deploy_map")
    apps = {site: app for app, targets in deploy_map.items() for site in targets}
    assert sum(len(targets) for targets in deploy_map.values()) == len(apps), f"a site twice in {deploy_map}"
    server = folder / apps.pop("server")
    out = {
        "meta": meta,
        "server": canonical_config(
            _mapped(json.loads((server / "config/config_fed_server.json").read_text(encoding="utf-8")), class_map or {})
        ),
        "clients": {},
        "custom": {},
        "apps": apps,
    }
    for site, app in sorted(apps.items()):
        config = json.loads((folder / app / "config/config_fed_client.json").read_text(encoding="utf-8"))
        out["clients"][site] = canonical_config(config)
        custom = folder / app / "custom"
        out["custom"][site] = {p.relative_to(custom).as_posix(): p.read_bytes() for p in custom.rglob("*.py")}
    return out


def canonical_job(folder: Path, class_map: dict | None = None) -> dict:
    """A job folder read for comparison: meta.json, both canonical configs, the custom files.

    ``class_map`` renames component classes before they are read (our class -> the NVFlare class
    whose constructor it keeps, for a deliberate subclass).

    Returns:
        dict: ``{"meta": ..., "server": ..., "client": ..., "custom": {relative path: bytes},
        "files": sorted relative paths of every file}``.
    """
    folder = Path(folder)
    app = folder / "app"
    return {
        "meta": json.loads((folder / "meta.json").read_text(encoding="utf-8")),
        "server": canonical_config(
            _mapped(json.loads((app / "config/config_fed_server.json").read_text(encoding="utf-8")), class_map or {})
        ),
        "client": canonical_config(json.loads((app / "config/config_fed_client.json").read_text(encoding="utf-8"))),
        "custom": {p.relative_to(app / "custom").as_posix(): p.read_bytes() for p in (app / "custom").rglob("*.py")},
        "files": sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()),
    }
