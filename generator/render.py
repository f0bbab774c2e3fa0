"""Render stage: effective jobs -> the files of one NVFlare job folder each, in memory.

Takes :class:`~generator.spec.Job` objects; gives ``{relative path: bytes}`` per job. Configs come
from the Jinja2 templates of the job's NVFlare line, ``templates/nvflare-<line>/``, with
``templates/shared/`` searched second (partials and templates both lines agree on). One environment
per line, made once: ``StrictUndefined``, templates compiled once and never re-checked on disk,
every value written through the ``json`` filter. What each component renders to and which
settings feed its ``args`` is :mod:`generator.components`' table: render builds every ``args``
dict from it (optional arguments decided here, not in template expressions) and the templates
only place them. Each rendered config is parsed and re-serialised (:func:`generator.jsonio.reformat`:
orjson, written byte for byte as ``json.dumps(indent=2)`` would), so a template bug can never produce
invalid JSON on disk. Client scripts, the files each job ships with
its script (``Job.shipment``: its local modules and ``custom_files``, see :mod:`generator.ship`)
and the server components a receiver's row lists (``custom_files``) are copied byte for byte into
``app/custom/`` (each file read once per :class:`Renderer`). File names come from
:mod:`generator.layout`. Nothing here imports nvflare.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jinja2
import orjson

from . import extras
from .components import (
    CROSS_SITE_EVAL_ID,
    FRAMEWORKS,
    LINES,
    MODEL_LOCATOR_ID,
    RECEIVER_CLIENT_VARS,
    RECEIVER_SERVER_VARS,
    Component,
    Derived,
    Key,
    executor_row,
    workflow_row,
)
from .errors import Problem, TemplateError
from .jsonio import pretty, reformat
from .layout import (
    CLIENT_CONFIG,
    CONFIG,
    CONFIG_FILES,
    CUSTOM,
    CUSTOM_PREFIX,
    DEFAULT_TRACKING_URI,
    FED_CLIENT_JSON,
    FED_SERVER_JSON,
    META_JSON,
    SERVER_APP,
    SERVER_CONFIG,
    SERVER_SITE,
    app_custom_file,
    app_file,
    custom_file,
    template_of,
)
from .lines import FALLBACK_LINE
from .ptmodel import model_files
from .spec import Job, shell_words

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"

#: The NVFlare release line used when none is given (see :mod:`generator.lines`).
DEFAULT_LINE = FALLBACK_LINE

#: Output file -> template, inside one job folder (each file's name plus ``.j2``).
CONFIG_TEMPLATES = {name: template_of(name) for name in CONFIG_FILES}


def _refuse_constant(name: str):
    """``json.loads`` hook: ``NaN`` and ``Infinity`` are not JSON (Python's json writes them anyway)."""
    raise ValueError(f"{name} is not valid JSON")


def _no_undefined(value):
    """``JSONEncoder`` hook for what JSON cannot hold: an undefined template value raises UndefinedError
    (StrictUndefined raises only when printed, and a macro argument is not printed)."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


#: One encoder for every value the templates write (``json.dumps`` with options makes a new one
#: per call): compact, non-ASCII kept as is.
_VALUE_ENCODER = json.JSONEncoder(ensure_ascii=False, default=_no_undefined)


def to_json(value) -> str:
    """The ``json`` filter: any value as a JSON literal (strings quoted and escaped, never raw)."""
    return _VALUE_ENCODER.encode(value)


class RaisedError(Exception):
    """Raised by the templates' ``raise_error(message)``: a case the templates do not render."""


def raise_error(message: str):
    """The templates' explicit failure (a Jinja global): ``{{ raise_error("...") }}``.

    Raises:
        RaisedError: always; render turns it into a TemplateError naming the template and line.
    """
    raise RaisedError(message)


#: Where compiled templates are kept: beside the templates, as Python keeps ``__pycache__`` beside
#: modules (never in ``$TMPDIR`` or ``$HOME``: a run leaves nothing there).
BYTECODE_DIR = TEMPLATES_DIR / "__jinja2cache__"


class _BytecodeCache(jinja2.FileSystemBytecodeCache):
    """Jinja2's file-system bytecode cache in :data:`BYTECODE_DIR`. Each template's compiled code
    is kept under a key of its name and file and used only while the template's source has the
    checksum it was compiled from (``jinja2.bccache.Bucket``), and only by the same Python version;
    Jinja2 writes each file to a temporary name and renames it (two processes may share the folder).
    Compiling every template of both lines takes about 90 ms; loading them from this cache about
    10 ms (measured, see README "Speed"). A cache that cannot be written (a read-only install) is
    skipped: it never fails a run.
    """

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        with contextlib.suppress(OSError):
            super().dump_bytecode(bucket)


@cache
def _bytecode_cache() -> jinja2.BytecodeCache | None:
    """The one :class:`_BytecodeCache` of this process, or None when its folder cannot be made."""
    try:
        BYTECODE_DIR.mkdir(exist_ok=True)
    except OSError:
        return None
    return _BytecodeCache(str(BYTECODE_DIR))


@cache
def make_env(line: str = DEFAULT_LINE) -> jinja2.Environment:
    """The Jinja2 environment of one NVFlare line (made once per line and process).

    Strict undefined, no autoescape, keep trailing newline; templates are looked up in
    ``templates/nvflare-<line>/`` then ``templates/shared/``, compiled on first use (or loaded
    from :class:`_BytecodeCache`) and never re-checked on disk (``auto_reload=False``); every
    template stays in the environment's cache (``cache_size`` 400, more than there are templates).
    Filters: ``json``; globals: ``raise_error``.

    Args:
        line (str): NVFlare release line, e.g. ``"2.9"``.
    """
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([TEMPLATES_DIR / f"nvflare-{line}", TEMPLATES_DIR / "shared"]),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        auto_reload=False,
        bytecode_cache=_bytecode_cache(),
    )
    env.filters["json"] = to_json
    env.globals["raise_error"] = raise_error
    return env


def tracking_uri(job: Job) -> str | None:
    """The MLflow store a job's receiver writes to: its own ``tracking_uri`` or its line's default.

    Returns:
        str | None: a URI that may hold NVFlare system variables (``{WORKSPACE}``, ``{JOB_ID}``);
        None when the job has no receiver or NVFlare's own default applies (2.9; see
        :data:`generator.layout.DEFAULT_TRACKING_URI`).
    """
    receiver = job.settings.get("receiver")
    if not receiver:
        return None
    return receiver.get("tracking_uri") or DEFAULT_TRACKING_URI[job.line]


def derived_values(job: Job) -> dict:
    """Values computed from a job for :class:`~generator.components.Derived` arguments and the templates.

    ``command_argv`` follows ScriptRunner: ``command`` split like a shell, then
    ``custom/<script>``, then ``script_args``; ``command_line`` is the same as one shell-quoted
    string (NVFlare 2.7's SubprocessLauncher ``script``). ``convert_events`` lists the local event
    names (``fed.`` prefix removed) that an in-process client must turn into federated events for
    the server's receiver to see them (NVFlare 2.7 and 2.9 in-process metrics are lost without it;
    sub-process metrics arrive as federated events already). ``tracking_uri``: see
    :func:`tracking_uri`. ``execution_mode``: :attr:`generator.spec.Job.execution_mode`.
    """
    s = job.settings
    receiver = s.get("receiver")
    convert = []
    if receiver and job.execution_mode == "in_process":
        convert = [e.removeprefix("fed.") for e in receiver["events"] if e.startswith("fed.")]
    argv = [*shell_words(s["command"]), f"{CUSTOM_PREFIX}{s['script']}", *shell_words(s["script_args"])]
    return {
        "command_argv": argv,
        "command_line": shlex.join(argv),
        "convert_events": convert,
        "tracking_uri": tracking_uri(job),
        "execution_mode": job.execution_mode,
    }


_MISSING = object()


def _setting(settings: dict, path: tuple[str, ...]):
    value = settings
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def build_args(args: dict, settings: dict, derived: dict) -> dict:
    """A component's ``args``, built from its row's sources (see :mod:`generator.components`).

    Args:
        args (dict): argument name -> source (``Key``, ``Derived``, nested dict, constant).
        settings (dict): the job's effective settings. derived (dict): :func:`derived_values`.

    Returns:
        dict: in the row's order; an optional key the job does not set, and a derived None, left out.

    Raises:
        KeyError: a required key is missing from ``settings`` (validate fills every default).
    """
    built = {}
    for name, source in args.items():
        if isinstance(source, Key):
            value = _setting(settings, source.path)
            if value is _MISSING:
                if source.optional:
                    continue
                raise KeyError(".".join(source.path))
        elif isinstance(source, Derived):
            value = derived[source.name]
            if value is None:
                continue
        elif isinstance(source, dict):
            value = build_args(source, settings, derived)
        else:
            value = source
        built[name] = value
    return built


@dataclass(frozen=True)
class Built:
    """One component as the templates place it: its partial, class path and built ``args``."""

    partial: str
    path: str
    args: dict


def _built(row: Component, settings: dict, derived: dict) -> Built:
    return Built(row.partial, row.path, build_args(row.args, settings, derived))


def _with_extra(built: Built, extra: dict | None) -> Built:
    """``built`` with the job's ``workflow_args`` / ``executor_args`` (``extra``) added to its args,
    after the generated ones (validate refused the names the generator writes, but for the
    constants :data:`generator.components.OVERRIDABLE_CONSTANTS`, which ``extra`` changes)."""
    if not extra:
        return built
    return Built(built.partial, built.path, {**built.args, **extra})


def template_context(job: Job) -> dict:
    """Values the templates see: the job, its settings ``s``, the derived values and each component.

    Components (:class:`Built`, from the job's line in :data:`generator.components.LINES`):
    ``workflow`` (the job's ``workflow`` row), ``workflow_components`` (``(id, Built)`` pairs: the
    further server components that workflow finds by id), ``cross_site_eval`` (the workflow run after
    it when the job sets ``cross_site_eval: true``, else None; its id ``cross_site_eval_id``) and
    ``cross_site_components`` (its ``(id, Built)`` pairs; the model locator is the ``framework``'s),
    ``persistor`` and ``persistor_components`` (the job's ``framework`` row,
    :data:`generator.components.FRAMEWORKS`: the PyTorch locator), ``executor`` (the line's row, or
    the framework's for that line); ``receiver``
    (None when the job has none, or when the line has no row for its type: the server template
    then calls ``raise_error``);
    ``event_to_fed`` (None unless in-process events need converting); ``delivery_server`` and
    ``delivery_client`` (None without a receiver, and on a line without them). ``server_vars`` /
    ``client_vars``: the NVFlare application config variables each config sets at its top level
    (empty without them). ``deploy_map``: meta.json's (the job's ``deploy_map``; :func:`deploy_map`
    for a multi-app job).
    """
    s = job.settings
    table = LINES[job.line]
    derived = derived_values(job)
    workflow = workflow_row(s, job.line)
    receiver = s.get("receiver")
    receiver_row = table.receivers.get(receiver["type"]) if receiver else None
    delivery = bool(receiver) and table.delivery_server is not None
    cross_site = table.cross_site_eval if s.get("cross_site_eval") else None
    framework = FRAMEWORKS[s["framework"]]
    cross_site_rows = {
        id_: framework.model_locator if id_ == MODEL_LOCATOR_ID and framework.model_locator else row
        for id_, row in (cross_site.components.items() if cross_site else ())
    }
    executor = executor_row(s, job.line, job.execution_mode)
    return {
        "job": job,
        "s": s,
        **derived,
        "workflow": _with_extra(_built(workflow, s, derived), s.get("workflow_args")),
        "workflow_components": [(id_, _built(row, s, derived)) for id_, row in workflow.components.items()],
        "cross_site_eval": _built(cross_site, s, derived) if cross_site else None,
        "cross_site_eval_id": CROSS_SITE_EVAL_ID,
        "cross_site_components": [(id_, _built(row, s, derived)) for id_, row in cross_site_rows.items()],
        "persistor": _built(framework.persistor, s, derived),
        "persistor_components": [(id_, _built(row, s, derived)) for id_, row in framework.components.items()],
        "receiver": _built(receiver_row, s, derived) if receiver_row else None,
        "executor": _with_extra(_built(executor, s, derived), s.get("executor_args")),
        "event_to_fed": _built(table.event_to_fed, s, derived) if derived["convert_events"] else None,
        "delivery_server": _built(table.delivery_server, s, derived) if delivery else None,
        "delivery_client": _built(table.delivery_client, s, derived) if delivery else None,
        "server_vars": RECEIVER_SERVER_VARS if delivery else {},
        "client_vars": RECEIVER_CLIENT_VARS if delivery else {},
        "deploy_map": deploy_map(job),
    }


def deploy_map(job: Job) -> dict:
    """meta.json's ``deploy_map``: the job's own, or for a multi-app job (``job.apps``) ``app_server``
    to the server and each client app to its sites, as NVFlare's FedJob writes it for apps sent to
    single sites (``FedJob.to(obj, target)``, ``nvflare/job_config/api.py``)."""
    if not job.apps:
        return job.settings["deploy_map"]
    return {SERVER_APP: [SERVER_SITE], **{app.name: list(app.sites) for app in job.apps}}


def shipped_file(line: str, name: str) -> Path:
    """A component the generator ships for NVFlare ``line``: ``templates/nvflare-<line>/custom/<name>``,
    else ``templates/shared/custom/<name>`` (searched in the templates' order)."""
    own = TEMPLATES_DIR / f"nvflare-{line}" / CUSTOM / name
    return own if own.is_file() else TEMPLATES_DIR / "shared" / CUSTOM / name


class Renderer:
    """Renders job folders; keeps each client script's bytes so it is read once per run.

    Args:
        scripts_dir (Path): the ``client_scripts/`` folder scripts are read from.
    """

    def __init__(self, scripts_dir: Path):
        self.scripts_dir = Path(scripts_dir)
        self._scripts: dict[str, bytes] = {}
        self._source_digests: dict[str, bytes] = {}
        self._defaults_key: int | None = None
        self._defaults_hash = b""

    def script(self, name: str) -> bytes:
        """The bytes of ``client_scripts/<name>``, a script or a shipped file (read on first use). Raises OSError."""
        data = self._scripts.get(name)
        if data is None:
            data = self._scripts[name] = (self.scripts_dir / name).read_bytes()
        return data

    def sources(self, job: Job) -> list[str]:
        """The files below ``client_scripts/`` that :meth:`render` copies into ``job``'s folder, in
        the order it reads them (a name read twice listed once): the script and what it ships (of
        each client app, for a multi-app job), and a PyTorch job's model module and its imports."""
        model = []
        if job.settings["framework"] == "pytorch":
            found, _ = model_files(self.scripts_dir, job.settings["model"]["path"], job.settings.get("script"))
            model += [source for _, source in found]
            model += job.model_shipment.files.values() if job.model_shipment else ()
        scripts = []
        for one in [app.job for app in job.apps] or [job]:
            scripts.append(one.settings["script"])
            scripts += one.shipment.files.values() if one.shipment else ()
        return list(dict.fromkeys(model + scripts if job.apps else scripts + model))

    def inputs(self, job: Job) -> str:
        """A digest (hex SHA-256) of everything :meth:`render` makes ``job``'s folder from but the
        generator's own code and templates: the validated job (its name, line, settings, its entry
        and the ``defaults:`` as written, what it ships, its client apps) and the bytes of each of
        its :meth:`sources`. Equal digests, same code and templates: the same files.

        Raises:
            OSError: a source cannot be read (render would fail too).
        """
        spec = {
            "name": job.name,
            "line": job.line,
            "mode": job.execution_mode,
            "settings": job.settings,
            "entry": job.entry,
            "site": job.site,
            "shipment": job.shipment.files if job.shipment else None,
            "model_shipment": job.model_shipment.files if job.model_shipment else None,
            "apps": [
                [app.name, list(app.sites), app.job.settings, app.job.shipment.files if app.job.shipment else None]
                for app in job.apps
            ],
        }
        digest = hashlib.sha256(_canonical(spec))
        digest.update(self._defaults_digest(job.defaults))
        for name in self.sources(job):
            digest.update(f"\0{name}\0".encode() + self._source_digest(name))
        return digest.hexdigest()

    def _defaults_digest(self, defaults: dict) -> bytes:
        """SHA-256 of the ``defaults:`` mapping (one object shared by every job: computed once)."""
        key = id(defaults)
        if self._defaults_key != key:
            self._defaults_key, self._defaults_hash = key, hashlib.sha256(_canonical(defaults)).digest()
        return self._defaults_hash

    def _source_digest(self, name: str) -> bytes:
        """SHA-256 of ``client_scripts/<name>`` (read and hashed once per run). Raises OSError."""
        digest = self._source_digests.get(name)
        if digest is None:
            digest = self._source_digests[name] = hashlib.sha256(self.script(name)).digest()
        return digest

    def render(self, job: Job) -> dict[str, bytes]:
        """Render one job folder with the templates of its NVFlare line (``make_env(job.line)``).

        Args:
            job (Job): a validated effective job.

        Returns:
            dict[str, bytes]: relative path inside the job folder -> file content; every config
            file is parsed JSON, re-serialised (so no later stage needs to parse it again).

        Raises:
            TemplateError: a template is missing, fails to render (an undefined value, a
                ``raise_error``), or renders invalid JSON; the message names the template (the
                partial, when the error is raised in one) and line. A shipped server component
                that cannot be read.
            OSError: a client script or shipped file cannot be read.
        """
        env = make_env(job.line)
        if job.apps:
            return self._render_apps(env, job)
        context = template_context(job)
        files = {}
        for out_name, template_name in CONFIG_TEMPLATES.items():
            files[out_name] = _config(env, template_name, context, job)
        self._add_scripts(files, job, custom_file)
        self._add_model(files, job, custom_file)
        receiver = job.settings.get("receiver")
        table = LINES[job.line]
        row = table.receivers.get(receiver["type"]) if receiver else None
        delivery = table.delivery_server.custom_files if table.delivery_server else ()
        shipped = [*row.custom_files, *delivery] if row else []
        self._add_shipped(files, job.line, shipped, custom_file)
        return files

    def _add_scripts(self, files: dict, job: Job, place) -> None:
        """The job's script and what it ships with it (local modules, custom_files), each at ``place(name)``."""
        files[place(job.settings["script"])] = self.script(job.settings["script"])
        for dest, source in job.shipment.files.items() if job.shipment else ():
            files[place(dest)] = self.script(source)

    def _add_model(self, files: dict, job: Job, place) -> None:
        """A PyTorch job's model module (:func:`generator.ptmodel.model_files`), each file at ``place(name)``,
        where the server's PTFileModelPersistor imports it (validate has checked it is there)."""
        if job.settings["framework"] != "pytorch":
            return
        found, _ = model_files(self.scripts_dir, job.settings["model"]["path"], job.settings.get("script"))
        for dest, source in found:
            files[place(dest)] = self.script(source)
        for dest, source in job.model_shipment.files.items() if job.model_shipment else ():
            files[place(dest)] = self.script(source)

    @staticmethod
    def _add_shipped(files: dict, line: str, names, place) -> None:
        """Components the generator ships (:func:`shipped_file`), each at ``place(name)``. Raises TemplateError."""
        for name in dict.fromkeys(names):
            path = shipped_file(line, name)
            try:
                files[place(name)] = path.read_bytes()
            except OSError as e:
                raise TemplateError([Problem(str(path), 0, 0, "", f"cannot read a server component: {e}")]) from None

    def _render_apps(self, env: jinja2.Environment, job: Job) -> dict[str, bytes]:
        """A multi-app job folder, laid out as NVFlare's FedJob exports one: ``meta.json``,
        ``app_server/`` (the server config and the server components the receiver ships) and one
        ``app_<site>/`` per client app (its client config, script, shipped files and the client
        components the receiver ships)."""
        context = template_context(job)
        files = {META_JSON: _config(env, CONFIG_TEMPLATES[META_JSON], context, job)}
        files[app_file(SERVER_APP, f"{CONFIG}/{FED_SERVER_JSON}")] = _config(
            env, CONFIG_TEMPLATES[SERVER_CONFIG], context, job
        )
        receiver = job.settings.get("receiver")
        table = LINES[job.line]
        row = table.receivers.get(receiver["type"]) if receiver else None
        server_files = [*row.custom_files, *table.delivery_server.custom_files] if row and table.delivery_server else []
        server_files = server_files or (list(row.custom_files) if row else [])
        client_files = table.delivery_client.custom_files if row and table.delivery_client else ()
        self._add_shipped(files, job.line, server_files, lambda name: app_custom_file(SERVER_APP, name))
        self._add_model(files, job, lambda name: app_custom_file(SERVER_APP, name))
        for app in job.apps:
            context = template_context(app.job)
            files[app_file(app.name, f"{CONFIG}/{FED_CLIENT_JSON}")] = _config(
                env, CONFIG_TEMPLATES[CLIENT_CONFIG], context, app.job
            )
            place = lambda name, app=app.name: app_custom_file(app, name)  # noqa: E731
            self._add_scripts(files, app.job, place)
            self._add_shipped(files, job.line, client_files, place)
        return files


def _canonical(value) -> bytes:
    """``value`` (parsed YAML: mappings, lists, scalars) as bytes that are equal exactly when the
    values are (mapping keys sorted); for :meth:`Renderer.inputs`."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except (orjson.JSONEncodeError, TypeError):  # e.g. an integer beyond 64 bits
        try:
            return json.dumps(value, sort_keys=True, default=repr).encode("utf-8", "surrogatepass")
        except (TypeError, ValueError):  # keys of mixed types
            return repr(value).encode("utf-8", "surrogatepass")


def _config(env: jinja2.Environment, template_name: str, context: dict, job: Job) -> bytes:
    """One config file rendered, parsed and re-serialised (:func:`generator.jsonio.reformat`: indent 2, newline at end).

    Raises:
        TemplateError: the template fails, or renders invalid JSON (naming the template and job).
    """
    text = _render(env, template_name, context)
    side = extras.SIDES.get(template_name)
    try:
        if side and extras.extras_of(job, side):  # the escape hatch: parsed, added to (apply), written
            return pretty(extras.apply(json.loads(text, parse_constant=_refuse_constant), template_name, job))
        return reformat(text, _refuse_constant)
    except ValueError as e:  # json.JSONDecodeError is a ValueError
        where = f"(rendered line {e.lineno}, column {e.colno}): {e.msg}" if hasattr(e, "msg") else str(e)
        raise TemplateError(
            [
                Problem(
                    _template_file(env, template_name), 0, 0, "", f"rendered invalid JSON for job {job.name!r} {where}"
                )
            ]
        ) from None


def _template_file(env: jinja2.Environment, name: str) -> str:
    """``templates/<folder>/<name>``: where the loader found a template (for messages)."""
    for folder in env.loader.searchpath:
        if (Path(folder) / name).is_file():
            return _relative(Path(folder) / name)
    return f"templates/{name}"


def _relative(path: Path) -> str:
    """A template file as messages name it: relative to the project (``templates/...``) when inside it."""
    try:
        return path.relative_to(TEMPLATES_DIR.parent).as_posix()
    except ValueError:
        return path.as_posix()


def _raised_at(error: BaseException) -> tuple[str, int] | None:
    """The template file (as messages name it) and line where ``error`` was raised: the innermost
    template frame of its traceback, so an error inside a partial names the partial."""
    import traceback

    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename.endswith(".j2")]
    if not frames:
        return None
    return _relative(Path(frames[-1].filename)), frames[-1].lineno or 0


def _render(env: jinja2.Environment, name: str, context: dict) -> str:
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateSyntaxError as e:
        where = _relative(Path(e.filename)) if e.filename else _template_file(env, e.name or name)
        raise TemplateError([Problem(where, e.lineno or 0, 1, "", e.message or str(e))]) from None
    except jinja2.TemplateNotFound as e:
        raise TemplateError([Problem(_template_file(env, name), 0, 0, "", f"template not found: {e.name}")]) from None
    except (jinja2.UndefinedError, RaisedError) as e:
        where, line = _raised_at(e) or (_template_file(env, name), 0)
        message = f"undefined value: {e.message}" if isinstance(e, jinja2.UndefinedError) else str(e)
        raise TemplateError([Problem(where, line, 1, "", message)]) from None
