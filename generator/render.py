"""Render stage: effective jobs -> the files of one NVFlare job folder each, in memory.

Takes :class:`~generator.spec.Job` objects; gives ``{relative path: bytes}`` per job. Configs come
from the Jinja2 templates of the job's NVFlare line, ``templates/nvflare-<line>/``, with
``templates/shared/`` searched second (partials and templates both lines agree on). One environment
per line, made once: ``StrictUndefined``, templates compiled once and never re-checked on disk,
every value written through the ``json`` filter. Each rendered config is parsed with
``json.loads`` and re-serialised, so a template bug can never produce invalid JSON on disk.
Client scripts, the files each job ships with its script (``Job.shipment``: its local modules and
``custom_files``, see :mod:`generator.ship`) and the server components a receiver needs
(``RECEIVER_FILES``) are copied byte for byte into ``app/custom/`` (each file read once per
:class:`Renderer`). Nothing here imports nvflare.
"""

from __future__ import annotations

import json
import shlex
from functools import cache
from pathlib import Path

import jinja2

from .errors import Problem, TemplateError
from .lines import FALLBACK_LINE
from .spec import Job, shell_words

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
SHARED_DIR = TEMPLATES_DIR / "shared"

#: The NVFlare release line used when none is given (see :mod:`generator.lines`).
DEFAULT_LINE = FALLBACK_LINE

#: Server components the templates ship as Python files, per receiver ``type``: copied from
#: ``templates/nvflare-<line>/custom/`` into the job's ``app/custom/`` (the server app imports them).
RECEIVER_FILES = {"wandb": ["jobgen_wandb_receiver.py"]}

#: Output file -> template, inside one job folder.
CONFIG_TEMPLATES = {
    "meta.json": "meta.json.j2",
    "app/config/config_fed_server.json": "config_fed_server.json.j2",
    "app/config/config_fed_client.json": "config_fed_client.json.j2",
}

#: MLflowReceiver ``tracking_uri`` when the job gives none, per line. NVFlare 2.9 itself falls
#: back to SQLite ``mlflow.db`` in the job's result folder (None: write no tracking_uri). NVFlare
#: 2.7 falls back to a ``file://`` store, which MLflow 3 refuses, so 2.7 jobs name the same SQLite
#: file explicitly; ``{WORKSPACE}`` and ``{JOB_ID}`` are NVFlare system variables it fills in.
DEFAULT_TRACKING_URI = {"2.7": "sqlite:///{WORKSPACE}/{JOB_ID}/mlflow.db", "2.9": None}


def _refuse_constant(name: str):
    """``json.loads`` hook: ``NaN`` and ``Infinity`` are not JSON (Python's json writes them anyway)."""
    raise ValueError(f"{name} is not valid JSON")


#: One encoder for every value the templates write (``json.dumps`` with options makes a new one
#: per call): compact, non-ASCII kept as is.
_VALUE_ENCODER = json.JSONEncoder(ensure_ascii=False)

#: How every config file is written: indented by 2, non-ASCII kept as is, a newline at the end.
_FILE_ENCODER = json.JSONEncoder(ensure_ascii=False, indent=2)


def to_json(value) -> str:
    """The ``json`` filter: any value as a JSON literal (strings quoted and escaped, never raw)."""
    return _VALUE_ENCODER.encode(value)


@cache
def make_env(line: str = DEFAULT_LINE) -> jinja2.Environment:
    """The Jinja2 environment of one NVFlare line (made once per line and process).

    Strict undefined, no autoescape, keep trailing newline; templates are looked up in
    ``templates/nvflare-<line>/`` then ``templates/shared/``, compiled on first use and never
    re-checked on disk (``auto_reload=False``).

    Args:
        line (str): NVFlare release line, e.g. ``"2.9"``.
    """
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([TEMPLATES_DIR / f"nvflare-{line}", SHARED_DIR]),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    env.filters["json"] = to_json
    return env


def tracking_uri(job: Job) -> str | None:
    """The MLflow store a job's receiver writes to: its own ``tracking_uri`` or its line's default.

    Returns:
        str | None: a URI that may hold NVFlare system variables (``{WORKSPACE}``, ``{JOB_ID}``);
        None when the job has no receiver or NVFlare's own default applies (2.9).
    """
    receiver = job.settings.get("receiver")
    if not receiver:
        return None
    return receiver.get("tracking_uri") or DEFAULT_TRACKING_URI[job.line]


def template_context(job: Job) -> dict:
    """Values the templates see: the job, its settings ``s`` and a few derived facts.

    ``command_argv`` follows ScriptRunner: ``command`` split like a shell, then
    ``custom/<script>``, then ``script_args``; ``command_line`` is the same as one shell-quoted
    string (NVFlare 2.7's SubprocessLauncher ``script``). ``convert_events`` lists the local event
    names (``fed.`` prefix removed) that an in-process client must turn into federated events for
    the server's receiver to see them (NVFlare 2.7 and 2.9 in-process metrics are lost without it;
    sub-process metrics arrive as federated events already). ``tracking_uri``: see
    :func:`tracking_uri`.
    """
    s = job.settings
    receiver = s.get("receiver")
    convert = []
    if receiver and job.execution_mode == "in_process":
        convert = [e.removeprefix("fed.") for e in receiver["events"] if e.startswith("fed.")]
    argv = [*shell_words(s["command"]), f"custom/{s['script']}", *shell_words(s["script_args"])]
    return {
        "job": job,
        "s": s,
        "command_argv": argv,
        "command_line": shlex.join(argv),
        "convert_events": convert,
        "tracking_uri": tracking_uri(job),
    }


def shipped_file(line: str, name: str) -> Path:
    """A server component the generator ships for NVFlare ``line``: ``templates/nvflare-<line>/custom/<name>``."""
    return TEMPLATES_DIR / f"nvflare-{line}" / "custom" / name


class Renderer:
    """Renders job folders; keeps each client script's bytes so it is read once per run.

    Args:
        scripts_dir (Path): the ``client_scripts/`` folder scripts are read from.
    """

    def __init__(self, scripts_dir: Path):
        self.scripts_dir = Path(scripts_dir)
        self._scripts: dict[str, bytes] = {}

    def script(self, name: str) -> bytes:
        """The bytes of ``client_scripts/<name>``, a script or a shipped file (read on first use). Raises OSError."""
        data = self._scripts.get(name)
        if data is None:
            data = self._scripts[name] = (self.scripts_dir / name).read_bytes()
        return data

    def render(self, job: Job) -> dict[str, bytes]:
        """Render one job folder; see :func:`render_job`."""
        env = make_env(job.line)
        context = template_context(job)
        files = {}
        for out_name, template_name in CONFIG_TEMPLATES.items():
            text = _render(env, template_name, context)
            try:
                data = json.loads(text, parse_constant=_refuse_constant)
            except ValueError as e:  # json.JSONDecodeError is a ValueError
                where = f"(rendered line {e.lineno}, column {e.colno}): {e.msg}" if hasattr(e, "msg") else str(e)
                raise TemplateError(
                    [
                        Problem(
                            _template_file(env, template_name),
                            0,
                            0,
                            "",
                            f"rendered invalid JSON for job {job.name!r} {where}",
                        )
                    ]
                ) from None
            files[out_name] = (_FILE_ENCODER.encode(data) + "\n").encode("utf-8")
        files[f"app/custom/{job.settings['script']}"] = self.script(job.settings["script"])
        for dest, source in job.shipment.files.items() if job.shipment else ():  # local modules, custom_files
            files[f"app/custom/{dest}"] = self.script(source)
        receiver = job.settings.get("receiver")
        for name in RECEIVER_FILES.get(receiver["type"], []) if receiver else []:
            path = shipped_file(job.line, name)
            try:
                files[f"app/custom/{name}"] = path.read_bytes()
            except OSError as e:
                raise TemplateError([Problem(str(path), 0, 0, "", f"cannot read a server component: {e}")]) from None
        return files


def render_job(job: Job, scripts_dir: Path) -> dict[str, bytes]:
    """Render one job folder with the templates of its NVFlare line (``make_env(job.line)``).

    Args:
        job (Job): a validated effective job.
        scripts_dir (Path): the ``client_scripts/`` folder the job's script is read from.

    Returns:
        dict[str, bytes]: relative path inside the job folder -> file content.

    Raises:
        TemplateError: a template is missing, fails to render, or renders invalid JSON; the
            message names the template and line.
    """
    return Renderer(scripts_dir).render(job)


def _template_file(env: jinja2.Environment, name: str) -> str:
    """``templates/<folder>/<name>``: where the loader found a template (for messages)."""
    for folder in env.loader.searchpath:
        if (Path(folder) / name).is_file():
            return (Path(folder) / name).relative_to(TEMPLATES_DIR.parent).as_posix()
    return f"templates/{name}"


def _render(env: jinja2.Environment, name: str, context: dict) -> str:
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(
            [Problem(_template_file(env, e.name or name), e.lineno or 0, 1, "", e.message or str(e))]
        ) from None
    except jinja2.TemplateNotFound as e:
        raise TemplateError([Problem(_template_file(env, name), 0, 0, "", f"template not found: {e.name}")]) from None
    except jinja2.UndefinedError as e:
        import traceback

        line = next(
            (f.lineno for f in reversed(traceback.extract_tb(e.__traceback__)) if f.filename.endswith(".j2")), 0
        )
        raise TemplateError(
            [Problem(_template_file(env, name), line, 1, "", f"undefined value: {e.message}")]
        ) from None
