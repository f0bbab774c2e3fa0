"""The escape hatch: NVFlare components, executors and filters written in ``jobs.yaml`` as NVFlare's configs hold them.

``server: {components, task_data_filters, task_result_filters}`` and ``client: {components,
executors, task_data_filters, task_result_filters}`` (a job's, ``defaults``', and under
``sites.<site>.client`` one site's) are added to the rendered ``config_fed_server.json`` /
``config_fed_client.json`` where NVFlare's own configs have them (the lists of the same names;
``nvflare/private/fed_json_config.py``, ``nvflare/private/fed/client/client_json_config.py``) and
where NVFlare's FedJob export writes ``job.to(obj, target)`` / ``job.to(filter, target,
filter_type=FilterType.TASK_RESULT, tasks=[...])`` (``nvflare/job_config/fed_job_config.py``,
``_get_base_app``, ``_process_filters``):

- ``components``: after the generated components; an entry with ``replaces: <id>`` takes the
  place of the generated component of that id instead (same id, same position).
- ``executors``: before the generated ClientAPIExecutor, so that NVFlare's task router
  (``TaskRouter.route``, ``nvflare/private/fed/client/client_runner.py``: exact task names first,
  then patterns in config order) sends the named tasks to them and every other task to the script.
- ``task_data_filters`` / ``task_result_filters``: the generator writes none, so the lists are the
  job's own.

:func:`problems` is the validate stage's part: ids and tasks NVFlare would refuse when it loads the
app (a duplicate component id, a generated id taken without ``replaces``, a task routed or filtered
twice, a filter task NVFlare never matches), located in ``jobs.yaml``. It renders the job's configs
without the extras to learn the generated ids (only for jobs that have extras). :func:`apply` is
render's part. :func:`locate` tells lint which ``jobs.yaml`` entry a config entry came from.
Nothing here imports nvflare.
"""

from __future__ import annotations

import ast
import difflib
import json
from functools import lru_cache
from importlib.machinery import PathFinder
from pathlib import Path

from .errors import Problem
from .load import Document
from .spec import Job

#: Config template -> the side (``jobs.yaml`` key) whose extras it receives.
SIDES = {"config_fed_server.json.j2": "server", "config_fed_client.json.j2": "client"}

#: Per side, the config lists the escape hatch adds to, in the order checks and messages take them.
LISTS = {
    "server": ("components", "task_data_filters", "task_result_filters"),
    "client": ("executors", "components", "task_data_filters", "task_result_filters"),
}

#: The config file each side's extras land in (for messages).
CONFIG_FILE = {"server": "config_fed_server.json", "client": "config_fed_client.json"}

#: Generated component id -> the NVFlare base class of its kind: an escape-hatch component of that
#: kind beside the generated one is refused by lint unless it replaces it (a second persistor would
#: never be used: the workflow finds its persistor by ``persistor_id``).
ROLES = {
    "persistor": "nvflare.app_common.abstract.model_persistor.ModelPersistor",
    "model_locator": "nvflare.app_common.abstract.model_locator.ModelLocator",
}

#: Task names NVFlare's workflows of the generated jobs send (FedAvg and CyclicController:
#: ``train``; CrossSiteModelEval: ``submit_model``, ``validate``), for messages.
KNOWN_TASKS = "train, validate, submit_model"


def extras_of(job: Job, side: str) -> dict:
    """The job's escape-hatch lists for ``side`` (``"server"`` or ``"client"``), only those set and non-empty."""
    section = job.settings.get(side) or {}
    return {name: section[name] for name in LISTS[side] if section.get(name)}


def _entry(item: dict) -> dict:
    """A ``{path, args}`` item as NVFlare's config writes it (``args`` always present, as FedJob does)."""
    return {"path": item["path"], "args": item.get("args", {})}


def config_entries(job: Job, side: str) -> dict[str, list]:
    """The job's extras for ``side`` as config entries: list name -> entries (NVFlare's config format)."""
    out = {}
    for name, items in extras_of(job, side).items():
        if name == "components":
            out[name] = [{"id": c["id"], **_entry(c)} for c in items]
        elif name == "executors":
            out[name] = [{"tasks": list(e["tasks"]), "executor": _entry(e["executor"])} for e in items]
        else:
            out[name] = [{"tasks": list(c["tasks"]), "filters": [_entry(f) for f in c["filters"]]} for c in items]
    return out


def apply(config: dict, template_name: str, job: Job) -> dict:
    """Add the job's escape-hatch entries to a rendered, parsed config (render's part).

    Args:
        config (dict): the parsed config the template rendered; modified in place.
        template_name (str): the template it came from; only the two app configs (:data:`SIDES`) get extras.
        job (Job): the job (for a client app of a multi-app job, that app's job: its site's ``client``).

    Returns:
        dict: ``config``. Components: after the generated ones, or in place of the one ``replaces``
        names (validate has checked that it exists); executors: before the generated one; filter
        chains: after any already there.
    """
    side = SIDES.get(template_name)
    if side is None:
        return config
    entries = config_entries(job, side)
    if not entries:
        return config
    replaces = {c["id"]: c for c in extras_of(job, side).get("components", []) if c.get("replaces")}
    for name, added in entries.items():
        present = config.setdefault(name, [])
        if name == "executors":
            config[name] = added + present
        elif name == "components":
            by_id = {c["id"]: c for c in added}
            for i, generated in enumerate(present):
                if generated.get("id") in replaces:
                    present[i] = by_id.pop(generated["id"])
            present.extend(by_id.values())
        else:
            present.extend(added)
    return config


def list_path(job: Job, side: str, name: str) -> tuple:
    """The ``jobs.yaml`` key path whose list the job's ``side.name`` is (lists are replaced, never merged).

    The first layer that sets it, in the order :func:`generator.spec.merge` lets them win: the
    site's entry (a client app's job), ``defaults.sites.<site>``, the job's entry, ``defaults``.
    """
    layers = []
    if job.site is not None:
        layers += [
            (("jobs", job.index, "sites", job.site), (job.entry.get("sites") or {}).get(job.site)),
            (("defaults", "sites", job.site), (job.defaults.get("sites") or {}).get(job.site)),
        ]
    layers += [(("jobs", job.index), job.entry), (("defaults",), job.defaults)]
    for where, layer in layers:
        if name in ((layer or {}).get(side) or {}):
            return (*where, side, name)
    return ("jobs", job.index, side, name)


def generated_config(job: Job, side: str) -> dict:
    """The config the job's templates render for ``side``, without extras (parsed JSON).

    Raises:
        TemplateError: a template fails (see :func:`generator.render._render`).
    """
    from . import render  # render applies the extras: imported here, when first needed

    env = render.make_env(job.line)
    template = next(t for t, s in SIDES.items() if s == side)
    return json.loads(render._render(env, template, render.template_context(job)))


def generated_ids(job: Job, side: str) -> dict[str, str]:
    """Every id the generated ``side`` config gives (components and, on the server, workflows, which
    share NVFlare's id namespace: ``server_json_config.py`` refuses a workflow id that a component has)
    -> its class path and kind (``"component"`` or ``"workflow"``) as ``"kind path"``."""
    config = generated_config(job, side)
    ids = {}
    for kind, name in (("workflow", "workflows"), ("component", "components")):
        for item in config.get(name, []):
            if isinstance(item, dict) and "id" in item:
                ids[item["id"]] = f"{kind} {item.get('path')}"
    return ids


def _app_jobs(job: Job, side: str) -> list[Job]:
    """The jobs whose ``side`` config is rendered: the job itself, or each client app's job."""
    return [app.job for app in job.apps] if side == "client" and job.apps else [job]


def problems(doc: Document, job: Job) -> list[Problem]:
    """What NVFlare would refuse, or never apply, in the job's escape-hatch entries (validate's part).

    Per side and (for a multi-app job's client side) per client app:
    - components: an id given twice; an id a generated component or workflow has, without
      ``replaces``; ``replaces`` naming no generated component, or with another ``id``
      (NVFlare: ``duplicate component id``, ``nvflare/private/fed_json_config.py``);
    - executors: a task named by two executors, or ``*``, the generated ClientAPIExecutor's
      (NVFlare: ``multiple executors defined for task``, ``client_runner.py`` ``TaskRouter``);
    - filters: a task in two chains of one list (NVFlare: ``multiple data filter chains defined
      for task``), or a pattern (``*``, ``?``): NVFlare looks filters up by the exact task name
      (``nvflare/apis/utils/task_utils.py``, ``get_filters``), so it would filter nothing.

    Returns:
        list[Problem]: located at the ``jobs.yaml`` entry (its ``id``, ``replaces`` or task), once
        each however many client apps share it.
    """
    found: list[Problem] = []
    for side in LISTS:
        for app_job in _app_jobs(job, side):
            if not extras_of(app_job, side):
                continue
            for problem in _side_problems(doc, app_job, side):
                if problem not in found:
                    found.append(problem)
    return found


def _side_problems(doc: Document, job: Job, side: str) -> list[Problem]:
    extras = extras_of(job, side)
    out = []
    if "components" in extras:
        out += _component_problems(doc, job, side, extras["components"])
    if "executors" in extras:
        out += _task_problems(doc, job, side, "executors", [e["tasks"] for e in extras["executors"]])
    for name in ("task_data_filters", "task_result_filters"):
        if name in extras:
            out += _task_problems(doc, job, side, name, [c["tasks"] for c in extras[name]])
    return out


def _component_problems(doc: Document, job: Job, side: str, items: list) -> list[Problem]:
    where = list_path(job, side, "components")
    generated = generated_ids(job, side)
    config = CONFIG_FILE[side]
    out = []
    first: dict[str, int] = {}
    for i, item in enumerate(items):
        cid, replaces = item["id"], item.get("replaces")
        if cid in first:
            out.append(
                doc.problem(
                    (*where, i, "id"),
                    f"duplicate component id {cid!r} (also {doc.shown_path((*where, first[cid]))}): "
                    f"NVFlare refuses two components of one id in {config}",
                )
            )
            continue
        first[cid] = i
        if replaces is not None:
            kind, _, path = generated.get(replaces, " ").partition(" ")
            replaceable = sorted(k for k, v in generated.items() if v.startswith("component "))
            if kind != "component":
                what = f"is the generated {path}'s id, a workflow" if kind == "workflow" else "is no generated id"
                out.append(
                    doc.problem(
                        (*where, i, "replaces"),
                        f"{replaces!r} {what}: replaces names a generated component of {config} "
                        f"({', '.join(replaceable) or 'none'})",
                    )
                )
            elif replaces != cid:
                out.append(
                    doc.problem(
                        (*where, i, "id"),
                        f"id {cid!r} differs from replaces {replaces!r}: the entry takes the generated {path}'s "
                        f"place, and the generated components find it by id {replaces!r}: write id: {replaces}",
                    )
                )
        elif cid in generated:
            kind, _, path = generated[cid].partition(" ")
            fix = (
                f"to use yours in its place write `replaces: {cid}`; otherwise choose another id"
                if kind == "component"
                else "choose another id"
            )
            out.append(
                doc.problem(
                    (*where, i, "id"),
                    f"id {cid!r} is the generated {path}'s ({kind} of {config}): {fix}",
                )
            )
    return out


def _task_problems(doc: Document, job: Job, side: str, name: str, task_lists: list) -> list[Problem]:
    where = list_path(job, side, name)
    config = CONFIG_FILE[side]
    out = []
    first: dict[str, int] = {}
    for i, tasks in enumerate(task_lists):
        for j, task in enumerate(tasks):
            at = (*where, i, "tasks", j)
            if name == "executors" and task == "*":
                out.append(
                    doc.problem(
                        at,
                        "task '*' is the generated Client API executor's (it runs the script for every task no "
                        f"other executor names): name the tasks this executor runs ({KNOWN_TASKS}, ...)",
                    )
                )
                continue
            if name != "executors" and any(c in task for c in "*?"):
                out.append(
                    doc.problem(
                        at,
                        f"task {task!r}: NVFlare matches filters to the exact task name (no patterns), so this "
                        f"filters nothing: name the tasks ({KNOWN_TASKS}, ...)",
                    )
                )
                continue
            if task in first:
                what, fix = (
                    ("executors", "name each task in one executor")
                    if name == "executors"
                    else ("filter chains", "put the task's filters in one chain")
                )
                out.append(
                    doc.problem(
                        at,
                        f"task {task!r} is also in {doc.shown_path((*where, first[task]))}: NVFlare refuses two "
                        f"{what} for one task in {config}: {fix}",
                    )
                )
                continue
            first[task] = i
    return out


def locate(config: dict, job: Job, side: str) -> dict[int, tuple]:
    """Which ``jobs.yaml`` entry each escape-hatch entry of a parsed config came from (lint's part).

    Args:
        config (dict): a config file exactly as render writes it for ``job``, parsed.
        job (Job): the job of that config (a client app's job for its app).
        side (str): ``"server"`` or ``"client"``.

    Returns:
        dict[int, tuple]: ``id()`` of each config object that is an extras class entry (a
        component, an executor's ``executor``, a filter) -> its ``jobs.yaml`` key path (e.g.
        ``("jobs", 0, "client", "task_result_filters", 0, "filters", 1)``). Matched by content:
        a generated entry never equals an extra one (validate refuses a taken id).
    """
    at: dict[int, tuple] = {}
    for name, added in config_entries(job, side).items():
        where = list_path(job, side, name)
        present = config.get(name, [])
        for i, entry in enumerate(added):
            match = next((p for p in present if p == entry), None)
            if match is None:
                continue
            if name == "components":
                at[id(match)] = (*where, i)
            elif name == "executors":
                at[id(match["executor"])] = (*where, i, "executor")
            else:
                for j, flt in enumerate(match["filters"]):
                    at[id(flt)] = (*where, i, "filters", j)
    return at


def _add_once(out: list[Problem], owners: list[str], problem: Problem, job: str) -> None:
    """Record ``problem`` for ``job`` unless already recorded for it (client apps share entries);
    :func:`generator.validate._naming_jobs` then says once which jobs one in ``defaults`` is about."""
    if (problem, job) not in zip(out, owners, strict=True):
        out.append(problem)
        owners.append(job)


@lru_cache(maxsize=1)
def _nvflare_folder() -> Path | None:
    """The installed ``nvflare`` package's folder, found without importing it (None: not installed)."""
    spec = PathFinder.find_spec("nvflare")
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else None


@lru_cache(maxsize=1024)
def _top_level_names(file: str) -> tuple[list[str], list[str]]:
    """(every name a module defines or imports at its top level, its classes) by its syntax tree."""
    try:
        tree = ast.parse(Path(file).read_bytes())
    except (OSError, SyntaxError, ValueError):
        return [], []
    names, classes = [], []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            classes.append(node.name)
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.append(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names += [(a.asname or a.name).split(".")[0] for a in node.names]
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names, classes


@lru_cache(maxsize=1024)
def nvflare_class_problem(path: str) -> str | None:
    """Why the class path ``nvflare.<module>.<Class>`` names nothing in the installed nvflare, read
    from its files without importing it (the generate path must not import nvflare); None when it is
    there, or nvflare is not installed. A misspelled class of an escape-hatch entry otherwise passed
    generate and failed only in the simulator (a trial): ``lint`` checks it by importing."""
    root = _nvflare_folder()
    parts = path.split(".")
    if root is None or parts[0] != "nvflare" or len(parts) < 2:
        return None
    module, name = parts[:-1], parts[-1]
    folder, file = root, root / "__init__.py"
    for i, part in enumerate(module[1:], 1):
        if (folder / part / "__init__.py").is_file():
            folder = folder / part
            file = folder / "__init__.py"
        elif i == len(module) - 1 and (folder / f"{part}.py").is_file():
            file = folder / f"{part}.py"
        else:
            have = [p.stem for p in folder.glob("*.py") if p.stem != "__init__"]
            have += [p.parent.name for p in folder.glob("*/__init__.py")]
            close = difflib.get_close_matches(part, have, n=1)
            hint = f"; did you mean {'.'.join([*module[:i], close[0]])!r}?" if close else ""
            return f"the installed nvflare has no module {'.'.join(module[: i + 1])!r}{hint}"
    names, classes = _top_level_names(str(file))
    if names and name not in names:
        close = difflib.get_close_matches(name, classes or names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"the installed nvflare's {'.'.join(module)} has no {name!r}{hint}"
    return None


def _class_entries(value, where: tuple) -> list[tuple[tuple, dict]]:
    """Every ``{path, args}`` entry below ``value`` (a component, executor or filter list, or one of
    its items: an executor's ``executor``, a filter chain's ``filters``), with its key path; a
    class's ``args`` are its own, and not looked into."""
    found = []
    if isinstance(value, dict):
        if isinstance(value.get("path"), str):
            found.append((where, value))
        for key, item in value.items():
            if key not in ("path", "args"):
                found += _class_entries(item, (*where, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _class_entries(item, (*where, i))
    return found


def class_warnings(doc: Document, jobs: list[Job]) -> list[Problem]:
    """Escape-hatch entries whose ``nvflare.`` class path names nothing in the installed nvflare
    (:func:`nvflare_class_problem`), for jobs written for the installed line: warnings located at
    the ``path``, once each (one in ``defaults`` names its jobs)."""
    from .lines import installed_line
    from .validate import _naming_jobs

    line = installed_line()
    out, owners = [], []
    for job in jobs:
        if job.line != line:
            continue
        for side in LISTS:
            for app_job in _app_jobs(job, side):
                for name, items in extras_of(app_job, side).items():
                    where = list_path(app_job, side, name)
                    for at, entry in _class_entries(items, where):
                        value = entry["path"]
                        why = nvflare_class_problem(value) if value.startswith("nvflare.") else None
                        if why:
                            problem = doc.problem(
                                (*at, "path"), f"warning: {why} (NVFlare would fail to load {value!r})"
                            )
                            _add_once(out, owners, problem, job.name)
    return _naming_jobs(out, owners)


#: NVFlare's system variables (``SystemVarName``, ``nvflare/apis/fl_constant.py``, 2.7 and 2.9), which
#: it fills in ``{NAME}`` in a config string with when the app starts: an escape-hatch argument may use
#: them as NVFlare's own configs do.
SYSTEM_VARIABLES = (
    "SITE_NAME",
    "WORKSPACE",
    "JOB_ID",
    "ROOT_URL",
    "CP_URL",
    "RELAY_URL",
    "SECURE_MODE",
    "JOB_CUSTOM_DIR",
    "JOB_CONFIG_DIR",
    "PYTHONPATH",
)


def _arg_strings(value, where: tuple) -> list[tuple[tuple, str]]:
    """Every string value below ``value`` (an entry's ``args``, a model's ``args``), with its key path
    (mapping keys are not rewritten by NVFlare, and are left out)."""
    if isinstance(value, str):
        return [(where, value)]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return [found for key, item in items for found in _arg_strings(item, (*where, key))]


def brace_warnings(doc: Document, jobs: list[Job]) -> list[Problem]:
    """Strings of escape-hatch ``args``, of a PyTorch ``model.args`` and of ``workflow_args`` and
    ``executor_args`` with a ``{...}`` NVFlare would
    rewrite when the app starts (:mod:`generator.rewrites`: a value that is only ``{name}`` of an
    unknown name becomes null, another is left as is or filled in), other than
    :data:`SYSTEM_VARIABLES` and ``{$ENV}``: warnings, since NVFlare's configs may use its variables
    (a trial's ``key_metric: "{metric}"`` and ``model.args.name: "{run}"`` passed without a word
    where the same brace in ``script_args`` is refused)."""
    from .rewrites import brace_left
    from .validate import _naming_jobs

    out, owners = [], []

    def check(job: Job, where: tuple, value) -> None:
        for path, text in _arg_strings(value, where):
            brace = brace_left(text, SYSTEM_VARIABLES)
            if brace is None or brace.startswith("{$"):
                continue
            what = (
                "the value becomes null"
                if text.strip() == brace
                else "the value is left as written, and none of its other {NAME} is filled in"
            )
            message = (
                f"warning: {json.dumps(brace)} is none of NVFlare's variables, which it fills in config strings when "
                f"the app starts ({{SITE_NAME}}, {{WORKSPACE}}, {{JOB_ID}}, ...): {what}"
            )
            _add_once(out, owners, doc.problem(path, message), job.name)

    for job in jobs:
        model = job.settings.get("model")
        if isinstance(model, dict) and "args" in model:
            check(job, job.path_of("model") + ("args",), model["args"])
        for key in ("workflow_args", "executor_args"):  # components.EXTRA_ARGS_KEYS
            if isinstance(job.settings.get(key), dict):
                check(job, job.path_of(key), job.settings[key])
        for side in LISTS:
            for app_job in _app_jobs(job, side):
                for name, items in extras_of(app_job, side).items():
                    for at, entry in _class_entries(items, list_path(app_job, side, name)):
                        if "args" in entry:
                            check(job, (*at, "args"), entry["args"])
    return _naming_jobs(out, owners)


def warnings(doc: Document, jobs: list[Job]) -> list[Problem]:
    """Escape-hatch entries NVFlare accepts but that fail at run time on the job's line.

    NVFlare 2.7 hands a sub-process script's result to the client's ``task_result_filters`` with
    its arrays still as lazy download references (``LazyDownloadRef``); a filter that computes on
    the weights then fails the run (measured: ``PercentilePrivacy`` logged ``TypeError: unsupported
    operand type(s) for /: 'LazyDownloadRef' and 'int'`` and the server aborted on
    ``TASK_RESULT_FILTER_ERROR``). NVFlare 2.9 fetches them first (``apply_filters``,
    ``nvflare/apis/utils/task_utils.py``), and in-process results are arrays on both lines.

    Args:
        doc (Document): the loaded ``jobs.yaml``. jobs (list[Job]): validated jobs.

    Returns:
        list[Problem]: warnings (``warning: ...``) at the ``client.task_result_filters`` list, once
        each; one located in ``defaults`` names the jobs it is about.
    """
    from .validate import _naming_jobs

    out, owners = [], []
    for job in jobs:
        if job.line != "2.7":
            continue
        for app_job in _app_jobs(job, "client"):
            if app_job.execution_mode != "external_process" or "task_result_filters" not in extras_of(
                app_job, "client"
            ):
                continue
            problem = doc.problem(
                list_path(app_job, "client", "task_result_filters"),
                "warning: NVFlare 2.7 gives a sub-process script's result to these filters with its arrays not yet "
                "fetched (LazyDownloadRef), so a filter that computes on the weights (PercentilePrivacy, ...) fails "
                'the run with TASK_RESULT_FILTER_ERROR; run the script in-process or use nvflare_version "2.9", '
                "which fetches them first",
            )
            _add_once(out, owners, problem, job.name)
    return _naming_jobs(out, owners) + class_warnings(doc, jobs) + brace_warnings(doc, jobs)
