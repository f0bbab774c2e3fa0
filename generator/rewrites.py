"""Strings NVFlare rewrites on their way from a job's configs to the script or the receiver.

Part of the validate stage (:func:`generator.validate.validate` calls :func:`rewrite_problems` for
each job). Takes an effective job; gives the located problems of the string values that would not
arrive as ``jobs.yaml`` writes them. Two rewrites exist, on NVFlare 2.9 and 2.7 alike (read in both
lines' source):

1. Config variables. When an app starts, NVFlare runs every string value of
   ``config_fed_client.json`` and ``config_fed_server.json`` (not the keys of a mapping) through
   ``_EnvUpdater.substitute`` (``nvflare/fuel/utils/wfconf.py``: 2.9 line 98, 2.7 line 74), with
   the config's own top-level keys, ``$``-prefixed environment variables and the system variables
   of ``SystemVarName`` (``nvflare/apis/fl_constant.py``; values set in
   ``private/fed/client/client_json_config.py:82`` and ``private/fed/server/server_json_config.py:71``):
   a value that is only ``{name}`` becomes that variable's value, or null when it has none
   (``"{lr}"``: an in-process script gets no argument at all, a sub-process fails with "command
   argv must contain only strings"); any other value goes through ``str.format``, which fills in
   every ``{name}`` and turns ``{{`` into ``{``, or, when one name is unknown, leaves the whole value
   as is (so ``"--site {SITE_NAME} --lr {lr}"`` keeps ``{SITE_NAME}`` in-process, but a sub-process,
   whose argv items are rewritten one by one, gets ``site-1``). The result is scanned again, up to 20
   times: ``{{SITE_NAME}}`` ends as ``site-1``. No brace survives this reliably, so a brace is refused
   everywhere except in the variables kept below.
2. Splitting. In-process (2.9 ``ClientAPIExecutor`` ``execution_mode: in_process``, 2.7
   ``InProcessClientAPIExecutor``), ``TaskScriptRunner.get_sys_argv`` splits ``task_script_args`` at
   whitespace only (``str.split()``; 2.9 ``app_common/executors/task_script_runner.py:142``, 2.7
   line 76): quotes and backslashes reach the script literally. A sub-process gets ``command`` and
   ``script_args`` split like a shell (we write the argv list on 2.9; 2.7's ``SubprocessLauncher``
   runs ``shlex.split`` on the ``shlex.join`` we write, ``app_common/launchers/subprocess_launcher.py:171``).
   So an in-process ``script_args`` must split the same both ways, or it is refused.

NVFlare 2.9 also resolves ``${secret:NAME}`` in ``task_script_args`` and in a sub-process ``command``
(``nvflare/fuel/utils/secret_utils.py``); 2.7 does not. It holds braces, so it is refused too.
Nothing here imports nvflare.
"""

from __future__ import annotations

import json
import re

from .errors import Problem
from .load import Document
from .spec import Job, shell_words

#: NVFlare system variables a script's ``script_args`` and ``command`` may use: filled in by the client
#: app on both lines, with values that hold no whitespace (so an in-process split keeps them whole).
#: ``{SITE_NAME}``: the site's name (``site-1`` ... in the simulator); ``{JOB_ID}``: the job's id
#: (``simulate_job`` in the simulator, a UUID in a real deployment).
ARGS_VARIABLES = ("SITE_NAME", "JOB_ID")

#: System variables an MLflow ``tracking_uri`` may use (server side): ``{WORKSPACE}`` (the server's
#: workspace folder), ``{JOB_ID}``, ``{SITE_NAME}`` (``server``). The generator itself writes
#: ``sqlite:///{WORKSPACE}/{JOB_ID}/mlflow.db`` for 2.7 jobs; ``simulate`` fills them in the same way.
TRACKING_URI_VARIABLES = ("WORKSPACE", "JOB_ID", "SITE_NAME")

#: Receiver keys whose string values (or list items, or mapping values) are written into
#: ``config_fed_server.json``: every one is rewritten as above. ``tb_folder`` and ``events`` are
#: kept brace-free by their schema patterns; mapping keys are never rewritten.
RECEIVER_STRINGS = (
    "experiment_name",
    "run_name",
    "experiment_tags",
    "run_tags",
    "artifact_location",
    "project",
    "job_type",
    "tags",
    "notes",
    "config",
    "tb_folder",
    "events",
)


def _as_json(value) -> str:
    return json.dumps(value, ensure_ascii=False)


#: A run of braces around text without braces (``{lr}``, ``{{lr}}``), or a lone brace.
_BRACES = re.compile(r"\{+[^{}]*\}+|[{}]")


def brace_left(value: str, kept: tuple[str, ...] = ()) -> str | None:
    """The first ``{...}`` (or lone brace) of ``value`` NVFlare would rewrite, None if there is none.

    Args:
        value (str): a string that lands in a config.
        kept (tuple[str, ...]): system variable names allowed as ``{NAME}``.
    """
    allowed = {"{" + name + "}" for name in kept}
    return next((m.group() for m in _BRACES.finditer(value) if m.group() not in allowed), None)


def _kept_text(kept: tuple[str, ...]) -> str:
    if not kept:
        return "braces cannot be passed through"
    names = ["{" + k + "}" for k in kept]
    return "only " + (", ".join(names[:-1]) + " and " if len(names) > 1 else "") + names[-1] + " may be used here"


def in_process_split(value: str) -> list[str]:
    """How an in-process executor splits ``task_script_args``: at whitespace, quotes kept (``str.split()``).

    Source: 2.9 ``nvflare/app_common/executors/task_script_runner.py`` (see the module docstring).

    Args:
        value (str): the ``script_args`` as written into the config.

    Returns:
        list[str]: the words the script sees in ``sys.argv[1:]``.
    """
    return value.split()


#: NVFlare system variables whose value is a folder: it may hold spaces, which an in-process split cuts.
PATH_VARIABLES = ("WORKSPACE", "JOB_CUSTOM_DIR", "JOB_CONFIG_DIR")


def _args_brace_message(value: str, brace: str, matrix_keys=()) -> str:
    """Why a brace in ``script_args`` or ``command`` is refused, naming the NVFlare feature behind it
    (``matrix_keys``: the keys of the matrix the job was expanded from, whose placeholders work
    only in ``name``: a trial's ``script_args: --hidden {model.args.hidden}``)."""
    secret = re.search(r"\$\{secret:[^}]*\}?", value)
    if secret:
        return (
            f"{_as_json(secret.group())} would not reach the script the same way on every NVFlare line: 2.9 "
            "fills it in from the site's environment, 2.7 passes it on literally; read the environment "
            f"variable in the script instead ({_kept_text(ARGS_VARIABLES)})"
        )
    why = ""
    key = brace.strip("{}")
    if key in PATH_VARIABLES:
        why = f" ({brace} is a folder path, which may hold spaces: an in-process split would cut it)"
    elif key in matrix_keys:
        why = (
            f"; {brace} is a matrix key, and a matrix fills in placeholders only in name: give each value "
            f"its own script_args with include, e.g. include: [{{{key}: VALUE, script_args: ...}}]"
        )
    return (
        f"{_as_json(brace)} would not reach the script as written: NVFlare fills in {{NAME}} in config strings "
        "when the job starts (an unknown name turns the value into null or stops every other replacement in it); "
        f"{_kept_text(ARGS_VARIABLES)}{why}"
    )


def _receiver_path(job: Job, key: str) -> tuple:
    """Key path of ``receiver.<key>``: in the job's own receiver if it sets ``key``, else in ``defaults``."""
    for path, where in ((("jobs", job.index), job.entry), (("defaults",), job.defaults)):
        if key in (where.get("receiver") or {}):
            return path + ("receiver", key)
    return job.path_of("receiver")


def rewrite_problems(doc: Document, job: Job) -> list[Problem]:
    """Problems of ``job``'s config strings that NVFlare would not pass on as written.

    Checks ``script_args`` (and ``command`` for a sub-process) for braces other than
    :data:`ARGS_VARIABLES`, an in-process ``script_args`` for anything a whitespace split reads
    differently from a shell (quotes, backslashes, non-ASCII spaces), a sub-process ``command``
    for an empty first word, and every receiver string for braces (``tracking_uri``: other than
    :data:`TRACKING_URI_VARIABLES`).

    Args:
        doc (Document): the loaded file, to locate each problem.
        job (Job): an effective job whose settings fit the schema.

    Returns:
        list[Problem]: located at the key that set the value (the job's or ``defaults``).
    """
    return _command_line_problems(doc, job) + _receiver_problems(doc, job)


def _command_line_problems(doc: Document, job: Job) -> list[Problem]:
    """``script_args`` (and a sub-process ``command``): braces, the in-process split, an empty program."""
    s = job.settings
    problems = []
    external = job.execution_mode == "external_process"
    for key in ("script_args", "command") if external else ("script_args",):
        value = s[key]
        try:
            words = list(shell_words(value))
        except ValueError:
            continue  # reported by the validate stage: does not split like a shell command line
        brace = brace_left(value, ARGS_VARIABLES)
        if brace is not None:
            matrix_keys = (getattr(doc, "combinations", {}).get(job.name) or (None, {}))[1]
            problems.append(doc.problem(job.path_of(key), _args_brace_message(value, brace, matrix_keys)))
            continue
        if key == "command" and (not words or not words[0].strip()):
            problems.append(doc.problem(job.path_of(key), "must start with a program to run, e.g. python3 -u"))
        if key == "script_args" and not external and in_process_split(value) != words:
            problems.append(
                doc.problem(
                    job.path_of(key),
                    "in-process (launch_external_process: false) NVFlare splits script_args at whitespace and "
                    f"keeps quotes and backslashes: the script would get {_as_json(in_process_split(value))}, "
                    f"not {_as_json(words)}; write each argument without quotes, backslashes or spaces, "
                    "or run the script as a sub-process (launch_external_process: true)",
                )
            )
    return problems


def _receiver_problems(doc: Document, job: Job) -> list[Problem]:
    """Braces in the receiver's strings: ``tracking_uri`` (some variables kept) and :data:`RECEIVER_STRINGS`."""
    receiver = job.settings.get("receiver") or {}
    problems = []
    uri = receiver.get("tracking_uri")
    if isinstance(uri, str):
        brace = brace_left(uri, TRACKING_URI_VARIABLES)
        if brace is not None:
            problems.append(
                doc.problem(
                    _receiver_path(job, "tracking_uri"),
                    f"{_as_json(brace)} would not reach MLflow as written: NVFlare fills in {{NAME}} in config "
                    f"strings when the job starts; {_kept_text(TRACKING_URI_VARIABLES)}",
                )
            )
    for key in RECEIVER_STRINGS:
        value = receiver.get(key)
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else None
        for sub, item in items if items is not None else [((), value)]:
            if not isinstance(item, str) or brace_left(item) is None:
                continue
            where = _receiver_path(job, key) + (() if sub == () else (sub,))
            problems.append(
                doc.problem(
                    where,
                    f"{_as_json(brace_left(item))} would not reach the receiver as written: NVFlare fills in "
                    "{NAME} in config strings when the job starts (an unknown name makes the value null or is "
                    "left as is); braces cannot be passed through: write the value without them",
                )
            )
    return problems
