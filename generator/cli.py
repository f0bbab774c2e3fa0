"""Command line: ``python -m generator {validate,generate,simulate,poc,submit,lint,view}``.

Parses options, calls one pipeline function, prints its result through the one
:class:`generator.reporter.Reporter` it owns, returns the exit code. Nothing else prints: stages
return results (``simulate`` tells the reporter of its progress as it runs). Problems print one
line each, ``FILE:LINE:COL: KEY.PATH: message``, to
stderr, no traceback. Exit codes: 0 ok, 1 a simulated job failed or ``--check`` found
differences, 2 bad input (``jobs.yaml``, options, output folder), 128 + N when ``simulate``,
``poc`` or ``submit`` was stopped by signal N (130 SIGINT, 143 SIGTERM, 129 SIGHUP).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from typing import NoReturn

from .errors import JobgenError
from .layout import DEFAULT_JOBS_FILE as DEFAULT_JOBS
from .layout import DEFAULT_OUT, made_from, made_from_text
from .reporter import Reporter, generate_command

DEFAULT_WORKSPACE = "build/workspaces"
DEFAULT_POC_WORKSPACE = "build/poc-workspace"
#: ``simulate --parallel``'s default: see the README's "Parallel simulation" for the measurements
#: (4 with the longest jobs started first, ``generator.order``: the 14 shipped jobs 92-98 s against
#: 115-119 s at 3; it was 3 while jobs started in file order).
DEFAULT_PARALLEL = 4
#: ``poc --parallel``'s default: the jobs NVFlare's POC server runs at once (the provisioning
#: template's ``DefaultJobScheduler`` ``max_jobs``, ``nvflare/lighter/templates/master_template.yml``);
#: a fifth would wait on the server (``poc --parallel N`` above 4 raises its ``max_jobs`` to N).
#: The same as ``simulate``'s default: bench part (f) compares the two at equal parallelism.
DEFAULT_POC_PARALLEL = 4
#: The reporter every command prints through.
REPORTER = Reporter()
#: ``--job``'s help: what a NAME selects (:mod:`generator.selection`).
JOB_HELP = (
    "only this job; a matrix job's name as written ('tr-{receiver.type}-r{num_rounds}'): every job it "
    "expands to; a pattern with * ? [ ] ('tr-*', quoted): every job it matches (repeatable)"
)


def _seconds(text: str) -> float:
    """A number of seconds > 0 (argparse type: a bad value is a usage error, exit code 2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def _path(text: str) -> str:
    """A non-empty path (argparse type): ``--results ""`` is a usage error (exit code 2), not the default."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty value")
    return text


def _add_jobs_options(p: argparse.ArgumentParser) -> None:
    """``--jobs FILE`` (repeatable: later files merge over earlier ones) and ``--set PATH=VALUE`` (repeatable)."""
    p.add_argument(
        "--jobs",
        type=_path,
        action="append",
        metavar="FILE",
        help=f"the jobs file; repeat to merge later files over earlier ones (default: {DEFAULT_JOBS})",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override one setting after the files: defaults.KEY=VALUE, jobs.NAME.KEY=VALUE or max_jobs=N, "
        "VALUE read as YAML (repeatable)",
    )


def _whole_number(low: int, high: int | None, expected: str):
    """An argparse type: a whole number from ``low`` to ``high`` (None: no upper bound); anything
    else is a usage error (exit code 2) saying ``expected <expected>, got '<text>'``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


#: A TCP port, 1 to 65535.
_port = _whole_number(1, 65535, "a port number from 1 to 65535")
#: A count of jobs run at once, >= 1.
_count = _whole_number(1, None, "a whole number >= 1")


def _files(args) -> list[str]:
    """The ``--jobs`` files, in order."""
    return args.jobs or [DEFAULT_JOBS]


#: What ``poc`` and ``submit --help`` say they do (the README's "Run on a real NVFlare system" has more).
_RUN_DESCRIPTIONS = {
    "poc": "Prepare and start NVFlare's POC system on this machine (server and the jobs' clients: site-1..site-N "
    "and the names jobs give in `clients`; 127.0.0.1 only; its files and HOME under --workspace), submit each "
    "generated job (run `generate` first) through the "
    "admin API, download each result into --downloads/<job>/ and judge it as `simulate` does, then stop the "
    "system, whatever happened. Prints a table; exit 1 if a job failed.",
    "submit": "Submit each generated job to an NVFlare system that is already running (production, or someone's "
    "POC) through an admin's startup kit, wait, download each result into --downloads/<job>/ and judge it as "
    "`simulate` does. Never starts or stops anything.",
}


class _Parser(argparse.ArgumentParser):
    """An ``argparse`` parser that takes no abbreviated option: a trial's ``validate --job NAME`` was
    read as ``--jobs NAME`` (argparse's prefix matching) and answered "NAME: file not found"."""

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


#: What an option another command takes means to a command without it (``unrecognized arguments``).
_NOT_HERE = {
    ("validate", "--job"): "validate checks every job; --show NAME prints one job's effective settings",
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """``argv`` parsed; an option the command does not take exits 2 with argparse's usage error of
    that command, and for ``--job`` on ``validate`` or ``lint`` what to give instead."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        command = parser.command_parsers[args.command]
        hints = [_NOT_HERE[(args.command, word)] for word in extra if (args.command, word) in _NOT_HERE]
        command.error(f"unrecognized arguments: {' '.join(extra)}" + (f" ({hints[0]})" if hints else ""))
    return args


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m generator",
        description="Generate NVFlare job folders from jobs.yaml.",
        epilog="Usual flow: generate (writes build/jobs/<job>/), then simulate (nvflare simulator) or poc (a POC "
        "system on 127.0.0.1); `make run` does generate + simulate. See README.md.",
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p.command_parsers = sub.choices  # command -> its parser (for _parse's errors)

    v = sub.add_parser(
        "validate",
        help="check jobs.yaml against the schema and across fields",
        description="Check jobs.yaml (and any --jobs/--set) against schema/jobs.schema.json and across fields; "
        "write nothing. Errors name file:line:column and the key; exit 2.",
    )
    _add_jobs_options(v)
    v.add_argument(
        "--show",
        action="append",
        metavar="NAME",
        help="print the effective settings of job NAME (after every file, --set, defaults and the schema's "
        "defaults) as YAML; NAME as --job takes it (repeatable)",
    )

    g = sub.add_parser(
        "generate",
        help="render one NVFlare job folder per job",
        description="Validate, then write one NVFlare job folder per job (meta.json, app/config/*.json, "
        "app/custom/) into --out, replacing only the folders it wrote before; a hand-edited file is never "
        "overwritten. Unchanged jobs are left as they are.",
    )
    _add_jobs_options(g)
    g.add_argument("--out", type=_path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    g.add_argument("--job", action="append", metavar="NAME", help=JOB_HELP)
    g.add_argument("--check", action="store_true", help="write nothing; exit 1 if the folders on disk differ")

    s = sub.add_parser(
        "simulate",
        help="run generated job folders with nvflare simulator",
        description="Run each generated job with `nvflare simulator` (run `generate` first) and judge it from "
        "NVFlare's own records: every round, the final model, no errors, the metric points stored, `expect`. "
        "Prints a table; writes --results and one plot per metrics job; exit 1 if a job failed.",
    )
    s.add_argument("--out", type=_path, default=DEFAULT_OUT, help="folder of generated jobs (default: %(default)s)")
    s.add_argument(
        "--workspace", type=_path, default=DEFAULT_WORKSPACE, help="simulator workspaces (default: %(default)s)"
    )
    s.add_argument("--job", action="append", metavar="NAME", help=JOB_HELP)
    s.add_argument(
        "--results", type=_path, default="build/results.json", help="where to write the results (default: %(default)s)"
    )
    s.add_argument(
        "--reports", type=_path, default="build/reports", help="where to write metrics plots (default: %(default)s)"
    )
    s.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="stop a job's run after this long and report it TIMEOUT (default: the job's `timeout`, "
        "else derived from its rounds and clients)",
    )
    s.add_argument(
        "--parallel",
        type=_count,
        metavar="N",
        default=DEFAULT_PARALLEL,
        help="run up to N jobs at once, each in its own workspace and log, those that took longest in the "
        "results file first (default: %(default)s, chosen by measurement: see the README's Speed section)",
    )

    for name, help_text in (
        ("poc", "run generated job folders on a POC system started for them (127.0.0.1), then stop it"),
        ("submit", "run generated job folders on a running NVFlare system through an admin startup kit"),
    ):
        r = sub.add_parser(name, help=help_text, description=_RUN_DESCRIPTIONS[name])
        r.add_argument("--out", type=_path, default=DEFAULT_OUT, help="folder of generated jobs (default: %(default)s)")
        r.add_argument("--job", action="append", metavar="NAME", help=JOB_HELP)
        if name == "poc":
            r.add_argument(
                "--workspace",
                type=_path,
                default=DEFAULT_POC_WORKSPACE,
                help="the POC system's folder, HOME of its commands, cleared first (default: %(default)s)",
            )
        else:
            r.add_argument("--startup-kit", type=_path, required=True, metavar="DIR", help="an admin's startup kit")
            r.add_argument("--username", help="the admin user (default: the startup kit folder's name)")
        r.add_argument(
            "--downloads",
            type=_path,
            default=f"build/{name}",
            help="where each job's result is downloaded, DIR/<job>/ (default: %(default)s)",
        )
        r.add_argument(
            "--results",
            type=_path,
            default=f"build/{name}-results.json",
            help="where to write the results (default: %(default)s)",
        )
        r.add_argument(
            "--timeout",
            type=_seconds,
            metavar="SECONDS",
            help="abort a job after this long and report it TIMEOUT (default: the job's `timeout`, else derived "
            "from its rounds and clients, as simulate)",
        )
        # poc: its own system, as many jobs at once as its server runs (DEFAULT_POC_PARALLEL).
        # submit: someone's running system, one job at a time unless asked.
        r.add_argument(
            "--parallel",
            type=_count,
            metavar="N",
            default=DEFAULT_POC_PARALLEL if name == "poc" else 1,
            help="submit up to N jobs at once, those that took longest in the results file first (default: %(default)s"
            + ("; the POC server's max_jobs is raised to N above 4)" if name == "poc" else ")"),
        )
        if name == "poc":
            r.add_argument(
                "--relay",
                action="store_true",
                help="route every message between a job's client and server processes through the POC "
                "server's parent process, as NVFlare's own POC and production systems do by default "
                "(default: they connect directly over 127.0.0.1, NVFlare's ad-hoc connections; faster)",
            )

    w = sub.add_parser("view", help="open a tracker's own viewer on a simulated job's metrics (127.0.0.1)")
    w.add_argument("tracker", choices=["mlflow", "tensorboard", "wandb"], help="whose viewer")
    w.add_argument(
        "--job",
        metavar="NAME",
        help="one job (default: mlflow: the project store of every MLflow job; tensorboard: every "
        "TensorBoard job; wandb: the first W&B job)",
    )
    w.add_argument(
        "--results", type=_path, default="build/results.json", help="simulation results (default: %(default)s)"
    )
    w.add_argument("--port", type=_port, help="port (default: 5000 for mlflow, 6006 for tensorboard)")

    li = sub.add_parser(
        "lint",
        help="check generated folders against the installed nvflare",
        description="Import every component class of the generated configs from the installed nvflare (or the "
        "job's custom/ folder) and bind its args to the class's __init__; problems are located in jobs.yaml and "
        "the config. Exit 2 if any.",
    )
    _add_jobs_options(li)
    li.add_argument("--out", type=_path, default=DEFAULT_OUT, help="folder of generated jobs (default: %(default)s)")
    li.add_argument("--job", action="append", metavar="NAME", help=JOB_HELP)
    return p


def _validate(args) -> int:
    from .pipeline import check_only

    files = _files(args)
    result = check_only(files, args.set, args.show)
    REPORTER.problems(result.warnings)
    REPORTER.validated(" ".join(files), [j.name for j in result.jobs], comment=bool(result.shown))
    if result.shown:
        REPORTER.settings({job.name: job.settings for job in result.shown})
    return 0


def _generate(args) -> int:
    from .pipeline import generate

    files = _files(args)
    result = generate(files, args.out, names=args.job, check=args.check, sets=args.set)
    shown = " ".join(files)
    REPORTER.problems(result.warnings)
    if args.check:
        if result.differences:
            fix = generate_command(files, args.out, args.set, args.job)
            checked = made_from_text(made_from(files, args.set)) if args.set else None  # the files are said
            REPORTER.out_of_date(args.out, shown, result.differences, fix, result.made_elsewhere, result.whole, checked)
            return 1
        REPORTER.up_to_date(args.out, shown, len(result.jobs) if args.job else None)
        return 0
    try:
        REPORTER.generated(
            result.out,
            [job.name for job in result.jobs],
            result.removed,
            shown,
            result.unchanged,
            result.removed_from,
            made_from(files, args.set or []),
            result.replaced_from,
            result.rejudged,
        )
    except KeyboardInterrupt:  # the folders are written by now: only the listing was cut short (a trial's
        # Ctrl-C during the lines of a large generate read as if the generate had not finished)
        REPORTER.line(
            f"interrupted while listing: every job folder was written ({len(result.jobs)} in {result.out})", err=True
        )
        return 130
    return 0


def _simulate(args) -> int:
    from .simulate import simulate_all

    results = simulate_all(
        args.out, args.workspace, args.job, args.results, args.reports, args.timeout, REPORTER, args.parallel
    )
    REPORTER.line(f"results: {args.results}")
    return 0 if all(r.ok for r in results) else 1


def _poc(args) -> int:
    from .poc import poc_all

    return _run_on_a_system(args, poc_all, args.workspace, relay=args.relay)


def _submit(args) -> int:
    from .poc import submit_all

    return _run_on_a_system(args, submit_all, args.startup_kit, args.username)


def _run_on_a_system(args, run, *system, **options) -> int:
    """``poc``/``submit``: ``run(out, *system, names, results, downloads, timeout, events, parallel,
    **options)`` (:func:`generator.poc.poc_all`, :func:`generator.poc.submit_all`), then where the
    results went; exit code 0 only if it ran jobs and every one is ok."""
    results = run(
        args.out, *system, args.job, args.results, args.downloads, args.timeout, REPORTER, args.parallel, **options
    )
    REPORTER.line(f"results: {args.results}; each job's downloaded result: {args.downloads}/<job>/")
    return 0 if results and all(r.ok for r in results) else 1


def _view(args) -> int:
    from .runner import run_attached
    from .viewers import logdir_spec, pick_view, viewer_command, viewer_env, viewer_tmp

    label, store = pick_view(args.results, args.tracker, args.job)
    argv = viewer_command(args.tracker, store, args.port)
    where = f"http://127.0.0.1:{argv[argv.index('--port') + 1]}" if "--port" in argv else "this terminal"
    shown = logdir_spec(store) if isinstance(store, dict) else store
    REPORTER.viewer_started(label, args.tracker, shown, where, argv)
    with contextlib.ExitStack() as stack:
        try:  # the viewer's temporary files stay in the project (TensorBoard's .tensorboard-info/)
            tmp = stack.enter_context(viewer_tmp(args.results, args.tracker))
        except OSError as e:
            REPORTER.line(f"cannot make the viewer's temporary folder: {e}", err=True)
            return 2
        try:
            code, stopped_by = run_attached(argv, env=viewer_env(tmp))
        except OSError as e:
            REPORTER.line(f"cannot start {argv[0]}: {e}", err=True)
            return 2
    if stopped_by:
        REPORTER.line(f"interrupted by {stopped_by}: stopped the {args.tracker} viewer", err=True)
        return 128 + signal.Signals[stopped_by].value
    return code


def _lint(args) -> int:
    from .lint import lint

    fix = generate_command(_files(args), args.out, args.set, args.job)
    problems = lint(_files(args), args.out, args.set, fix=fix, names=args.job)
    REPORTER.problems(problems)
    if problems:
        return 2
    REPORTER.linted(args.out, selected=bool(args.job))
    return 0


COMMANDS = {
    "validate": _validate,
    "generate": _generate,
    "simulate": _simulate,
    "poc": _poc,
    "submit": _submit,
    "lint": _lint,
    "view": _view,
}


def finish(code: int, crashed: bool = False) -> NoReturn:
    """Exit with ``code`` (``python -m generator`` calls it with :func:`main`'s; ``crashed``: main
    raised an unexpected error, whose traceback was printed).

    When a call to NVFlare was given up on (:func:`generator.admin.abandoned_calls`: a login to a POC
    server stopped meanwhile, by Ctrl-C while the system started), NVFlare's connector threads retry
    it until the login's timeout and Python waits for them at exit: 14 s in a trial, then a stray
    NVFlare error ("cannot schedule new futures after shutdown"). The same after any stop signal
    (exit code above 128) while some thread but the main one still runs in a process that used
    NVFlare's admin API: a trial hung for good on the connector of a session nobody closed.
    Everything of ours is done by then (system stopped, results written), so the process ends at
    once (``os._exit``, output flushed). The same after a crash (an error of ours: whatever it
    left open must not keep the process alive for good). Otherwise a normal ``sys.exit``.
    """
    admin = sys.modules.get("generator.admin")  # only a command that used the admin API imported it
    waited_for = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if admin is not None and (admin.abandoned_calls() or ((code > 128 or crashed) and waited_for)):
        REPORTER.flush()
        os._exit(code)
    sys.exit(code)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (see the module docstring).

    MLflow 3 sends usage telemetry from every process that uses it (``mlflow.telemetry``; it also
    writes ``~/.config/mlflow/telemetry.json``): off for this process and everything it starts
    (simulator, POC, ``mlflow ui``), unless the user set ``MLFLOW_DISABLE_TELEMETRY`` themselves.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    args = _parse(argv)
    try:
        return COMMANDS[args.command](args)
    except JobgenError as e:
        REPORTER.problems(e.problems)
        return e.exit_code
    except KeyboardInterrupt:
        REPORTER.line("interrupted", err=True)
        return 130
