"""Render stage: effective jobs -> the files of one NVFlare job folder each, in memory.

Takes :class:`~generator.spec.Job` objects; gives ``{relative path: bytes}`` per job. Configs come
from the Jinja2 templates in ``templates/nvflare-<line>/`` (one environment, ``StrictUndefined``,
every value written through the ``json`` filter); each rendered config is parsed with
``json.loads`` and re-serialised, so a template bug can never produce invalid JSON on disk.
Client scripts, and the server components a receiver needs (``RECEIVER_FILES``), are copied byte
for byte into ``app/custom/``. Nothing here imports nvflare.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import jinja2

from .errors import Problem, TemplateError
from .spec import Job

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"

#: The NVFlare release line the templates target (NVFlare 2.9: ClientAPIExecutor).
DEFAULT_LINE = "2.9"

#: Server components the templates ship as Python files, per receiver ``type``: copied from
#: ``templates/nvflare-<line>/custom/`` into the job's ``app/custom/`` (the server app imports them).
RECEIVER_FILES = {"wandb": ["jobgen_wandb_receiver.py"]}

#: Output file -> template, inside one job folder.
CONFIG_TEMPLATES = {
    "meta.json": "meta.json.j2",
    "app/config/config_fed_server.json": "config_fed_server.json.j2",
    "app/config/config_fed_client.json": "config_fed_client.json.j2",
}


def to_json(value) -> str:
    """The ``json`` filter: any value as a JSON literal (strings quoted and escaped, never raw)."""
    return json.dumps(value, ensure_ascii=False)


def _refuse_constant(name: str):
    """``json.loads`` hook: ``NaN`` and ``Infinity`` are not JSON (Python's json writes them anyway)."""
    raise ValueError(f"{name} is not valid JSON")


def make_env(line: str = DEFAULT_LINE) -> jinja2.Environment:
    """The one Jinja2 environment: strict undefined, no autoescape, keep trailing newline.

    Args:
        line (str): NVFlare release line; templates are read from ``templates/nvflare-<line>/``.
    """
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR / f"nvflare-{line}"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )
    env.filters["json"] = to_json
    return env


def template_context(job: Job) -> dict:
    """Values the templates see: the job, its settings ``s`` and a few derived facts.

    ``command_argv`` follows ScriptRunner: ``command`` split like a shell, then
    ``custom/<script>``, then ``script_args``. ``convert_events`` lists the local event names
    (``fed.`` prefix removed) that an in-process client must turn into federated events for the
    server's receiver to see them (NVFlare 2.9 in-process metrics are lost without it; sub-process
    metrics arrive as federated events already).
    """
    s = job.settings
    receiver = s.get("receiver")
    convert = []
    if receiver and job.execution_mode == "in_process":
        convert = [e.removeprefix("fed.") for e in receiver["events"] if e.startswith("fed.")]
    return {
        "job": job,
        "s": s,
        "command_argv": shlex.split(s["command"]) + [f"custom/{s['script']}"] + shlex.split(s["script_args"]),
        "convert_events": convert,
    }


def render_job(job: Job, scripts_dir: Path, env: jinja2.Environment | None = None) -> dict[str, bytes]:
    """Render one job folder.

    Args:
        job (Job): a validated effective job.
        scripts_dir (Path): the ``client_scripts/`` folder the job's script is read from.
        env (jinja2.Environment | None): from :func:`make_env`; made on demand.

    Returns:
        dict[str, bytes]: relative path inside the job folder -> file content.

    Raises:
        TemplateError: a template is missing, fails to render, or renders invalid JSON; the
            message names the template and line.
    """
    env = env or make_env()
    context = template_context(job)
    files = {}
    for out_name, template_name in CONFIG_TEMPLATES.items():
        text = _render(env, template_name, context)
        try:
            data = json.loads(text, parse_constant=_refuse_constant)
        except (json.JSONDecodeError, ValueError) as e:
            raise TemplateError(
                [
                    Problem(
                        f"templates/{template_name}",
                        0,
                        0,
                        "",
                        f"rendered invalid JSON for job {job.name!r}: "
                        + (f"(rendered line {e.lineno}, column {e.colno}): {e.msg}" if hasattr(e, "msg") else str(e)),
                    )
                ]
            ) from None
        files[out_name] = (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    files[f"app/custom/{job.settings['script']}"] = (scripts_dir / job.settings["script"]).read_bytes()
    receiver = job.settings.get("receiver")
    for name in RECEIVER_FILES.get(receiver["type"], []) if receiver else []:
        path = Path(env.loader.searchpath[0]) / "custom" / name
        try:
            files[f"app/custom/{name}"] = path.read_bytes()
        except OSError as e:
            raise TemplateError([Problem(str(path), 0, 0, "", f"cannot read a server component: {e}")]) from None
    return files


def _render(env: jinja2.Environment, name: str, context: dict) -> str:
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(
            [Problem(f"templates/{e.name or name}", e.lineno or 0, 1, "", e.message or str(e))]
        ) from None
    except jinja2.TemplateNotFound as e:
        raise TemplateError([Problem(f"templates/{name}", 0, 0, "", f"template not found: {e.name}")]) from None
    except jinja2.UndefinedError as e:
        import traceback

        line = next(
            (f.lineno for f in reversed(traceback.extract_tb(e.__traceback__)) if f.filename.endswith(".j2")), 0
        )
        raise TemplateError([Problem(f"templates/{name}", line, 1, "", f"undefined value: {e.message}")]) from None
