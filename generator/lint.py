"""Lint stage: check generated job folders against the installed NVFlare.

Takes ``jobs.yaml`` and the output folder of ``generate``; gives a list of located problems
(empty: all good). For every job folder it parses ``meta.json``, ``config_fed_server.json``
(``workflows``, ``components``, filters) and ``config_fed_client.json`` (``executors``,
``components``, filters); for every component (a mapping with a class ``path``, nested ones in
``args`` included, as NVFlare's ``ComponentBuilder`` builds them) it imports the class and binds
its ``args`` to the class's ``__init__`` signature (``inspect.signature(cls).bind(**args)``, so
``**kwargs`` accepts anything). It also says when the folder is stale: missing, or not what
``jobs.yaml`` renders now (suggesting ``make generate``).

A problem in a file that is exactly what ``jobs.yaml`` renders now is reported at the
``jobs.yaml`` key that produced it (e.g. ``jobs[2].receiver``), naming the generated file; a
problem in a file that differs (edited by hand, stale) is reported at the generated file, at the
line and column of the component. Only classes of the ``nvflare`` package are imported, and the
class of an escape-hatch entry (:mod:`generator.extras`, located at its own ``jobs.yaml`` entry)
whose module the job ships in the app's ``custom/`` folder (imported from there, then removed
from ``sys.modules``): a config naming anything else is reported, never imported (importing runs
a module's code). An escape-hatch component that is a second model persistor or locator beside
the generated one (:data:`generator.extras.ROLES`) is reported too.

Which ``jobs.yaml`` key feeds which component argument is read from the component table
(:mod:`generator.components`), the same rows render builds the ``args`` from. This is the only
module of the generator that imports nvflare: ``simulate`` runs NVFlare in a child process
(``python -m nvflare.cli simulator``) and imports none of it.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import inspect
import json
import json.scanner
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

from . import extras
from .components import EXTRA_ARGS_KEYS, PYTORCH, extra_args_row, keys_by_class, shipped_modules
from .errors import Problem
from .layout import (
    CLIENT_CONFIG,
    CONFIG,
    DEFAULT_JOBS_FILE,
    FED_CLIENT_JSON,
    FED_SERVER_JSON,
    META_JSON,
    SERVER_CONFIG,
    made_from_text,
)
from .lines import installed_line
from .load import Document
from .overrides import load_all
from .render import DEFAULT_LINE, Renderer, shipped_file
from .reporter import command_line
from .selection import listed
from .spec import Job
from .validate import SCRIPTS_DIR, validate
from .write import differences, made_from_of, read_manifest

#: The one package whose classes lint imports.
NVFLARE_PREFIX = "nvflare."

#: Config file -> top-level lists that hold components.
COMPONENT_LISTS = {
    META_JSON: (),
    SERVER_CONFIG: ("workflows", "components", "task_data_filters", "task_result_filters"),
    CLIENT_CONFIG: ("executors", "components", "task_data_filters", "task_result_filters"),
}


def config_files(job_dir: Path) -> dict[str, tuple[str, ...]]:
    """The config files of a job folder (relative path -> the lists holding components): ``meta.json``
    and every app's ``<app>/config/config_fed_server.json`` / ``config_fed_client.json`` (one app,
    ``app``, or a multi-app job's ``app_server`` and ``app_<site>`` folders)."""
    kinds = {FED_SERVER_JSON: COMPONENT_LISTS[SERVER_CONFIG], FED_CLIENT_JSON: COMPONENT_LISTS[CLIENT_CONFIG]}
    found = {META_JSON: COMPONENT_LISTS[META_JSON]}
    for path in sorted(job_dir.glob(f"*/{CONFIG}/*.json")):
        if path.name in kinds:
            found[path.relative_to(job_dir).as_posix()] = kinds[path.name]
    return found


class _PositionDecoder(json.JSONDecoder):
    """``json`` decoder that records where each JSON object starts (pure-Python scanner)."""

    def __init__(self):
        super().__init__()
        self.starts: dict[int, int] = {}
        parse_object = self.parse_object

        def record(s_and_end, *args):
            obj, end = parse_object(s_and_end, *args)
            self.starts[id(obj)] = s_and_end[1] - 1  # index of "{"
            return obj, end

        self.parse_object = record
        self.scan_once = json.scanner.py_make_scanner(self)


def _line_col(text: str, index: int) -> tuple[int, int]:
    return text.count("\n", 0, index) + 1, index - (text.rfind("\n", 0, index) + 1) + 1


def _forwards_kwargs(init, kwargs_name: str) -> bool:
    """Whether ``init`` passes its ``**kwargs`` on to ``super().__init__(..., **kwargs)``."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(init)))
    except (OSError, TypeError, SyntaxError):
        return False
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "__init__"
            and isinstance(node.func.value, ast.Call)
            and isinstance(node.func.value.func, ast.Name)
            and node.func.value.func.id == "super"
        ):
            return any(
                k.arg is None and isinstance(k.value, ast.Name) and k.value.id == kwargs_name for k in node.keywords
            )
    return False


def check_args(cls: type, args: dict) -> tuple[str | None, list[str], list[str]]:
    """Do ``args`` fit ``cls(**args)``?

    Binds ``args`` to the signature of ``cls``. When ``__init__`` takes ``**kwargs`` and passes
    them on to ``super().__init__(**kwargs)`` (as NVFlare's ``FedAvg`` -> ``BaseFedAvg`` ->
    ``ModelController`` -> ``BaseModelController`` do), the arguments no parameter takes are
    checked against the next ``__init__`` up the MRO; ``**kwargs`` that are not passed on (or
    whose source cannot be read) accept anything.

    Returns:
        tuple: (the error, or None if the args fit; the args nothing accepts; the parameter
        names accepted along the way).
    """
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return None, [], []  # no signature to check (a builtin): nothing to say
    try:
        signature.bind(**args)
    except TypeError as e:
        named = [n for n, p in signature.parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        return str(e), [a for a in args if a not in named], named
    accepted: list[str] = []
    remaining = dict(args)
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        try:
            params = inspect.signature(init).parameters
        except (TypeError, ValueError):
            return None, [], accepted
        named = [n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n != "self"]
        accepted += [n for n in named if n not in accepted]
        remaining = {k: v for k, v in remaining.items() if k not in named}
        var_kw = next((n for n, p in params.items() if p.kind == p.VAR_KEYWORD), None)
        if not remaining or var_kw is None:
            break
        if not _forwards_kwargs(init, var_kw):
            return None, [], accepted  # **kwargs kept or used otherwise: anything goes
    if remaining:
        unknown = sorted(remaining)
        return f"got an unexpected keyword argument {unknown[0]!r}", unknown, accepted
    return None, [], accepted


#: (class path, argument) pairs holding the job's own model as ``{"path": "module.Class", "args": ...}``
#: (``framework: pytorch``): a class from the job's ``app/custom/``, which lint never imports;
#: generate has checked that its module defines it (:mod:`generator.ptmodel`).
JOB_MODEL_ARGS = {(PYTORCH.persistor.path, "model")}
#: How to get torch for a PyTorch job (the project's optional extra, a CPU build).
TORCH_HINT = "install the project's pt extra (pip install -e '.[pt]', torch==2.13.0)"


class _ConfigLinter:
    """Lints one config file; ``job`` set when the file is what ``jobs.yaml`` renders now.

    ``app_job``: the job of the file's app (a client app's job in a multi-app folder), whose
    escape-hatch entries (:mod:`generator.extras`) are located at their own ``jobs.yaml`` entry.
    """

    def __init__(self, path: Path, doc: Document | None, job: Job | None, app_job: Job | None = None):
        self.path, self.doc, self.job = path, doc, job
        self.app_job = app_job or job
        self.problems: list[Problem] = []
        self.text = ""
        self.starts: dict[int, int] = {}
        self.extras_at: dict[int, tuple] = {}  # id() of an escape-hatch entry -> its jobs.yaml path

    def report(self, obj, where: str, message: str, key: tuple | None = None, at: tuple | None = None) -> None:
        line, col = _line_col(self.text, self.starts.get(id(obj), 0))
        if self.job is not None and self.doc is not None:
            # the layer (or --set) that holds the inner key: a later file's or defaults' typo was
            # placed at the first file's line of that number, or at each job's own mapping (trial 49)
            path = self.job.path_of(key[0], *key[1:]) if key else ("jobs", self.job.index)
            path = at or path
            self.problems.append(self.doc.problem(path, f"{message} (in {self.path}:{line}:{col}, {where})"))
        else:
            self.problems.append(Problem(str(self.path), line, col, where, message))

    def run(self, lists: tuple[str, ...]) -> list[Problem]:
        try:
            self.text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            return [Problem(str(self.path), 0, 0, "", f"cannot read: {e}")]
        decoder = _PositionDecoder()
        try:
            data = decoder.decode(self.text)
        except json.JSONDecodeError as e:
            return [Problem(str(self.path), e.lineno, e.colno, "", f"not valid JSON: {e.msg}")]
        self.starts = decoder.starts
        if not isinstance(data, dict):
            return [Problem(str(self.path), 1, 1, "", "expected a JSON object")]
        side = extras.SIDES.get(self.path.name + ".j2")
        if self.job is not None and side:
            self.extras_at = extras.locate(data, self.app_job, side)
        for name in lists:
            entries = data.get(name, [])
            if not isinstance(entries, list):
                self.report(data, name, f"{name!r} must be a list")
                continue
            for i, entry in enumerate(entries):
                where = f"{name}[{i}]"
                if name == "executors" and isinstance(entry, dict) and "executor" in entry:
                    entry, where = entry["executor"], where + ".executor"
                elif name.endswith("_filters") and isinstance(entry, dict):
                    for j, flt in enumerate(entry.get("filters", [])):
                        self.component(flt, f"{where}.filters[{j}]")
                    continue
                self.component(entry, where)
        return self.problems

    def component(self, comp, where: str) -> None:
        if not isinstance(comp, dict):
            self.report(comp, where, "a component must be a JSON object with a class `path`")
            return
        class_path = comp.get("path", comp.get("class_path"))
        if not isinstance(class_path, str):
            self.report(comp, where, "component has no class `path`")
            return
        args = comp.get("args", {})
        if not isinstance(args, dict):
            self.report(comp, where, f"{class_path}: `args` must be a JSON object")
            return
        at = self.extras_at.get(id(comp))  # an escape-hatch entry: located at its own jobs.yaml entry
        for name, value in args.items():  # nested components are built first (ComponentBuilder)
            if (class_path, name) in JOB_MODEL_ARGS:
                continue  # the job's own model class: checked by generate (ast), never imported here
            if isinstance(value, dict) and "path" in value and value.get("config_type", "component") == "component":
                if at is not None:
                    self.extras_at[id(value)] = (*at, "args", name)
                self.component(value, f"{where}.args.{name}")
        key, arg_keys = keys_by_class().get(class_path, (None, {}))
        key = key or None  # a component every job has: reported at the job entry
        cls = self.import_class(comp, where, class_path, key, at)
        if cls is None:
            return
        if "class_attributes" in args:  # NVFlare passes these instead of args
            args = args["class_attributes"]
        error, unknown, accepted = check_args(cls, args)
        if error:
            close = difflib.get_close_matches(unknown[0], accepted, n=1) if unknown else []
            arg_key = (arg_keys.get(unknown[0]) or (arg_keys.get(close[0]) if close else None)) if unknown else None
            arg_key = (self.extra_key(class_path, unknown[0]) if unknown else None) or arg_key
            hint = f"; did you mean {close[0]!r}?" if close else f" (it accepts: {', '.join(accepted)})"
            arg_at = (*at, "args", unknown[0]) if at is not None and unknown else at
            self.report(comp, where, f"{class_path}: {error}{hint}", arg_key or key, arg_at)
        if at is not None and at[-2] == "components":
            self.role_problem(comp, where, cls, at)

    def extra_key(self, class_path: str, name: str) -> tuple | None:
        """``("executor_args", name)`` (or ``workflow_args``) when the job's mapping of that key gave
        the argument ``name`` of the generated component ``class_path``; else None."""
        job = self.app_job or self.job
        if job is None:
            return None
        for key in EXTRA_ARGS_KEYS:
            extra = job.settings.get(key)
            if not (isinstance(extra, dict) and name in extra):
                continue
            if extra_args_row(job.settings, job.line, job.execution_mode, key).path == class_path:
                return (key, name)
        return None

    def role_problem(self, comp, where: str, cls: type, at: tuple) -> None:
        """An escape-hatch component of a kind the generated config already holds one of (a second
        persistor, ...; :data:`generator.extras.ROLES`) that does not take the generated one's place."""
        for role, base_path in extras.ROLES.items():
            if comp.get("id") == role:
                continue  # it replaces the generated one (validate allows that id only with replaces)
            module_name, _, base_name = base_path.rpartition(".")
            base = getattr(importlib.import_module(module_name), base_name)
            if not issubclass(cls, base):
                continue
            side = extras.SIDES[self.path.name + ".j2"]
            generated = extras.generated_ids(self.app_job, side).get(role, "")
            if generated.startswith("component "):
                self.report(
                    comp,
                    where,
                    f"{comp.get('path')} is a {base_name}, and the generated config already has one "
                    f"({generated.removeprefix('component ')}, id {role!r}, which the workflows find by id): "
                    f"to use yours instead write id: {role} and replaces: {role}",
                    at=at,
                )

    def import_class(self, comp, where: str, class_path: str, key, at: tuple | None = None):
        """The class ``class_path`` names, imported (None: reported why not). An escape-hatch entry's
        problems are located at its ``path`` key, where ``generate``'s own class-path warnings are."""
        module_name, _, class_name = class_path.rpartition(".")
        if at is not None:
            at = (*at, "path")
        shipped = shipped_module_file(module_name)
        custom = self.custom_module_dir(module_name) if at is not None else None
        if not (class_path.startswith(NVFLARE_PREFIX) or shipped or custom) or not module_name:
            what = (
                "in the app's custom/ folder (ship its module with custom_files)" if at else "one the generator ships"
            )
            message = f"{class_path!r} is neither an nvflare class nor {what}: lint imports nothing else"
            elsewhere = self.custom_import_names(module_name) if at is not None and module_name else []
            if elsewhere:  # shipped below a folder: imported by its path there (a trial's mynet/my_widgets.py)
                message = (
                    f"{class_path!r} is neither an nvflare class nor in the app's custom/ folder, which holds "
                    f"{elsewhere[0].replace('.', '/')}.py: did you mean {elsewhere[0] + '.' + class_name!r}? "
                    "(NVFlare imports a custom/ module by its path below custom/)"
                )
            self.report(comp, where, message, key, at)
            return None
        try:
            if shipped:  # our own component (templates/<line or shared>/custom/), copied verbatim into app/custom/
                spec = importlib.util.spec_from_file_location(module_name, shipped)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
            elif custom is not None and not class_path.startswith(NVFLARE_PREFIX):
                module = _import_from(custom, module_name)
            else:
                module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name == "torch":
                self.report(comp, where, f"{class_path} needs PyTorch, which is not installed: {TORCH_HINT}", key, at)
            else:
                self.report(comp, where, f"cannot import {module_name}: {type(e).__name__}: {e}", key, at)
            return None
        except Exception as e:  # ImportError, or anything the module raises while importing
            self.report(comp, where, f"cannot import {module_name}: {type(e).__name__}: {e}", key, at)
            return None
        cls = getattr(module, class_name, None)
        if not inspect.isclass(cls):
            classes = [n for n, v in vars(module).items() if inspect.isclass(v) and not n.startswith("_")]
            close = difflib.get_close_matches(class_name, classes, n=1, cutoff=0.8)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.report(comp, where, f"{module_name} has no class {class_name!r}{hint}", key, at)
            return None
        return cls

    def custom_import_names(self, module_name: str) -> list[str]:
        """The import names of the ``.py`` files in the app's ``custom/`` folder whose file name is
        ``module_name``'s last part (``mynet.my_widgets`` for ``my_widgets``), sorted."""
        custom = self.path.parent.parent / "custom"
        last = module_name.rpartition(".")[2] + ".py"
        found = custom.rglob(last) if custom.is_dir() else []
        return sorted(".".join(p.relative_to(custom).with_suffix("").parts) for p in found)

    def custom_module_dir(self, module_name: str) -> Path | None:
        """The app's ``custom/`` folder when it holds ``module_name`` (a ``.py`` file or a package)."""
        custom = self.path.parent.parent / "custom"
        base = custom.joinpath(*module_name.split("."))
        return custom if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file() else None


def _import_from(folder: Path, module_name: str):
    """Import ``module_name`` from ``folder`` (an app's ``custom/``, as NVFlare puts it on ``sys.path``),
    leaving ``sys.path`` and ``sys.modules`` as they were (another job may ship a module of that name)."""
    sys.path.insert(0, str(folder))
    before = set(sys.modules)
    try:
        return importlib.import_module(module_name)
    finally:
        sys.path.remove(str(folder))
        for name in set(sys.modules) - before:
            del sys.modules[name]


def shipped_module_file(module_name: str) -> Path | None:
    """The file of a component the generator itself ships (a row's ``custom_files``), if any."""
    shipped = shipped_modules().get(module_name)
    return shipped_file(DEFAULT_LINE, shipped) if shipped else None


def _other_line(out: Path, manifest: dict, selected) -> dict[str, Problem]:
    """The jobs of ``out`` (of ``selected`` names, when given) generated for another NVFlare line
    than the installed one, each with its problem: NVFlare's classes differ between lines, and a
    trial's 2.7 folders under 2.9 got eight ModuleNotFoundError lines, its 2.9 folders under 2.7 a
    "run generate" that would have made them 2.7 folders."""
    installed = installed_line()
    found = {}
    for name, entry in manifest["jobs"].items():
        line = entry.get("nvflare_version") if isinstance(entry, dict) else None
        if line and line != installed and (selected is None or name in selected):
            found[name] = Problem(
                str(out / name),
                0,
                0,
                "",
                f"generated for NVFlare {line}, and the installed nvflare is of the {installed} line: lint it "
                f"where NVFlare {line} is installed"
                + (" (the project's .venv-nvflare27, made by make setup27)" if line == "2.7" else ""),
            )
    return found


def _made_elsewhere_problems(out: Path, groups: list, jobs_file: str, whole: int, ours: set, fix: str) -> list[Problem]:
    """One problem per origin for the jobs of ``out`` generated from other files or ``--set`` items
    than this lint's (``groups``: ``(made_from, names)`` per origin, from
    :func:`generator.pipeline.made_elsewhere`; ``whole``: how many jobs ``out`` holds): the lint
    command of that origin (with ``--job`` unless it made every job of ``out``), and ``fix``, this
    lint's generate command, only for jobs this lint's files have too (``ours``): a trial was told
    ``generate --jobs jobs.yaml --out build/two``, which removes the other file's job, and another a
    generate without the ``--set`` its folder was made with."""
    problems = []
    for theirs, names in groups:
        origin, text = theirs or {}, made_from_text(theirs)
        files, sets = origin.get("jobs") or [DEFAULT_JOBS_FILE], origin.get("set") or []
        command = command_line("lint", files, out, sets, names if len(names) < whole else None)
        which = f"job {names[0]!r} was" if len(names) == 1 else f"{len(names)} jobs ({listed(names)}) were"
        message = f"{which} generated from {text}, not {jobs_file}: lint with `{command}`"
        if all(name in ours for name in names):
            message += f", or run `{fix}` to make {'it' if len(names) == 1 else 'them'} from {jobs_file}"
        problems.append(Problem(str(out / names[0]) if len(names) == 1 else str(out), 0, 0, "", message))
    return problems


def _stale_problems(
    out: Path,
    rendered: dict,
    jobs_file: str,
    fix: str,
    only_selected: bool = False,
    skip: set = frozenset(),
    note: str = "",
) -> list[Problem]:
    """What in ``out`` is not what ``rendered`` (job name -> file -> bytes) says (``fix`` the command
    to run, ``note`` said after it); ``only_selected``:
    ``rendered`` holds the ``--job`` selection, and the other job folders are not reported; ``skip``:
    job folders reported otherwise (made from other files)."""
    hint = f"not what {jobs_file} generates now: run `{fix}`{note}"
    by_hand = (
        f"not what {jobs_file} generates now, and not the file generate wrote: move it away, then run `{fix}`{note}"
    )
    problems = []
    missing_jobs = set()
    for kind, path in differences(out, rendered):
        job = path.relative_to(out).parts[0]
        if job in skip:
            continue
        if kind == "unexpected job folder":
            if only_selected:
                continue
            problems.append(Problem(str(path), 0, 0, "", f"job {job!r} is not in {jobs_file}: run `{fix}`{note}"))
        elif kind == "missing" and not (out / job).is_dir():
            if job not in missing_jobs:
                missing_jobs.add(job)
                problems.append(
                    Problem(str(out / job), 0, 0, "", f"job {job!r} is not generated yet: run `{fix}`{note}")
                )
        elif kind == "edited":
            problems.append(Problem(str(path), 0, 0, "", f"edited: {by_hand}"))
        elif kind == "unexpected":  # a trial was told to generate, which refused the folder for it
            message = (
                "unexpected: not a file generate wrote, and generate refuses a job folder that holds it: move it away"
            )
            problems.append(Problem(str(path), 0, 0, "", message))
        else:
            problems.append(Problem(str(path), 0, 0, "", f"{kind}: {hint}"))
    return problems


def _once_per_place(problems: list[Problem]) -> list[Problem]:
    """``problems`` with those at the same place of a jobs file saying the same (a ``defaults`` value
    every job's config holds) given once, counting the other configs: a trial's typo in a later
    file's ``defaults.workflow_args`` was reported once per job."""
    found: dict[tuple, list] = {}
    for p in problems:
        key = (p.file, p.line, p.column, p.path, p.message.split(" (in ", 1)[0])
        if key in found:
            found[key][1] += 1
        else:
            found[key] = [p, 0]
    return [
        replace(p, message=p.message + (f" (and {n} more {'config' if n == 1 else 'configs'})" if n else ""))
        for p, n in found.values()
    ]


def _app_job(job: Job, rel: str) -> Job:
    """The job of the app a config file ``rel`` belongs to: a client app's own job, else ``job``."""
    app = rel.split("/", 1)[0]
    return next((a.job for a in job.apps if a.name == app), job)


def lint(
    jobs_file: str | Path | list,
    out: str | Path,
    sets: list[str] | None = None,
    fix: str = "make generate",
    names: list[str] | None = None,
) -> list[Problem]:
    """Check the generated job folders in ``out`` against ``jobs_file`` and the installed NVFlare.

    Args:
        jobs_file (str | Path | list): the ``jobs.yaml`` (or files) the folders were generated from.
        out (str | Path): the output folder of ``generate`` (e.g. ``build/jobs``).
        sets (list[str] | None): ``--set PATH=VALUE`` overrides (files and overrides merged as in
            :func:`generator.overrides.load_all`).
        fix (str): the command that regenerates ``out`` from these files, named in the problems
            about stale or missing folders (the CLI passes the ``generate`` command of its options).
        names (list[str] | None): ``--job`` values (a job's name, a matrix job's name as written, a
            shell pattern: :func:`generator.pipeline.select`): only those jobs' folders are checked,
            and the other folders of ``out`` are left alone; None or empty: every job.

    Returns:
        list[Problem]: stale or missing generated files, configs that do not parse, component
        classes that do not import (or are not nvflare classes), and ``args`` that do not fit the
        class's ``__init__``; empty when everything checks out.

    Raises:
        SpecError: ``jobs_file`` itself is invalid (see :func:`generator.validate.validate`), or a
            ``names`` value selects no job.
        OutputError: ``out`` is not a folder the generator made.
        TemplateError: rendering ``jobs_file`` failed.

    Sources: NVFlare 2.9 ``nvflare.fuel.utils.component_builder.ComponentBuilder.build_component``
    (nested components in ``args``, ``class_attributes``) and ``class_utils.instantiate_class``.
    """
    from .pipeline import Origins, made_elsewhere, select, written_name  # as generate and --check read them

    doc = load_all(jobs_file, sets)
    every = validate(doc)
    jobs = select(doc, every, names)
    out = Path(out)
    manifest = read_manifest(out, reading=True)  # raises if out is a symlink, a file or a folder not ours
    if not manifest["jobs"]:
        return [Problem(str(out), 0, 0, "", f"no generated jobs here: run `{fix}` first")]
    renderer = Renderer(doc.root / SCRIPTS_DIR)  # each job with its own line's templates
    by_name = {job.name: job for job in jobs}
    files = [str(f) for f in (jobs_file if isinstance(jobs_file, list) else [jobs_file])]
    origins = Origins(files, sets or [], {written_name(doc, job.name) for job in every})
    recorded = made_from_of(out)  # the selected jobs in the manifest's order, as lint lists them
    groups, whole = made_elsewhere(recorded, origins, [n for n in recorded if n in by_name] if names else None)
    elsewhere = [name for _, group in groups for name in group]
    other_line = _other_line(out, manifest, by_name if names else None)
    left_alone = [*other_line, *(name for name in elsewhere if name not in other_line)]  # neither is linted here
    rendered = {job.name: renderer.render(job) for job in jobs if job.name not in left_alone}
    shown = " ".join(files)
    problems = _made_elsewhere_problems(out, groups, shown, whole, {job.name for job in every}, fix)
    problems += [p for name, p in other_line.items() if name not in elsewhere]
    note = (
        f" with --job for the jobs you mean (without --job, generate removes {listed(left_alone)}, "
        "generated from other files)"
        if left_alone and not names
        else ""
    )
    problems += _stale_problems(out, rendered, shown, fix, bool(names), set(left_alone), note)
    for name in sorted(manifest["jobs"]):
        if (names and name not in by_name) or name in left_alone:
            continue  # not selected, or made from other files: left alone, as generate --job leaves it
        for rel, lists in config_files(out / name).items():
            path = out / name / rel
            if not path.is_file():
                continue  # reported as missing above
            fresh = name in rendered and rendered[name].get(rel) == path.read_bytes()
            job = by_name[name] if fresh else None
            linter = _ConfigLinter(path, doc, job, _app_job(job, rel) if job else None)
            problems.extend(linter.run(lists))
    return sorted(_once_per_place(problems))
