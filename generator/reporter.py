"""Reporter: the one place that turns results, progress and problems into text.

The stages return results (``pipeline.generate``'s, ``lint``'s problems, ``simulate``'s
:class:`generator.simulate.JobResult` list) or, for a long run, tell their caller what happens
(:class:`generator.simulate.SimulateEvents`). The CLI owns one :class:`Reporter` and hands it to
them; the Reporter writes one line per fact to its stdout and one line per problem to its
stderr. Each write of a line or of a block of lines holds one lock, so jobs simulated in parallel
threads never interleave mid-line or split a job's closing block, and every progress line starts
with its job's name. A second runner (a POC run, say) that emits the same events prints the same
way.

This module imports nothing from the simulate stage, so ``validate`` and ``generate`` load no
simulator code through it.
"""

from __future__ import annotations

import os
import shlex
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from .layout import DEFAULT_JOBS_FILE, DEFAULT_OUT, MANIFEST, ManifestEntry, made_from_text, site_number
from .selection import listed


class Reporter:
    """Prints what the generator's commands produce.

    Args:
        stdout (TextIO | None): where facts, progress and tables go (None: ``sys.stdout`` at the
            time of each write, so a redirected or captured stdout is followed).
        stderr (TextIO | None): where problems and warnings go (None: ``sys.stderr`` likewise).
    """

    def __init__(self, stdout: TextIO | None = None, stderr: TextIO | None = None):
        self._stdout, self._stderr = stdout, stderr
        self._lock = threading.Lock()

    # -- plain output ---------------------------------------------------------------------------

    def lines(self, lines: Iterable[str], err: bool = False) -> None:
        """Write ``lines`` (each without its newline) as one block, to stderr when ``err``; flushed.

        A stream whose reader went away (``... | head -1``: ``BrokenPipeError``) is pointed at
        ``os.devnull`` and the command goes on: a run is not cut short half-way (with a POC system
        up, an admin session open) by its console, and ends as it would have, results written.
        """
        stream = (self._stderr or sys.stderr) if err else (self._stdout or sys.stdout)
        text = "".join(f"{line}\n" for line in lines)
        with self._lock:
            try:
                stream.write(text)
                stream.flush()
            except BrokenPipeError:
                _to_devnull(stream)

    def line(self, text: str = "", err: bool = False) -> None:
        """Write one line (to stderr when ``err``)."""
        self.lines([text], err)

    def flush(self) -> None:
        """Flush stdout and stderr, whoever wrote to them last (before an exit that skips Python's own)."""
        with self._lock:
            for stream in (self._stdout or sys.stdout, self._stderr or sys.stderr):
                try:
                    stream.flush()
                except BrokenPipeError:
                    _to_devnull(stream)

    def problems(self, problems: Iterable) -> None:
        """One line per problem (a :class:`generator.errors.Problem`, printed by its ``str``) to stderr,
        a matrix value's once for all its combinations (:func:`generator.errors.one_per_value`)."""
        from .errors import one_per_value

        self.lines([str(p) for p in one_per_value(problems)], err=True)

    # -- validate, generate, lint, view ---------------------------------------------------------

    def validated(self, jobs_file: str, names: list[str], comment: bool = False) -> None:
        """``validate`` found ``jobs_file`` valid, holding the jobs ``names``; ``comment``: as a YAML
        comment (``# ...``), before the settings of ``validate --show``, so that stdout is YAML."""
        self.line(f"{'# ' if comment else ''}{jobs_file}: {len(names)} job(s) valid: {listed(names)}")

    def settings(self, jobs: dict[str, dict]) -> None:
        """``validate --show``: each job's effective settings, ``{name: settings}``, as one YAML mapping
        in the order given (keys as the settings hold them), ready to paste into a jobs file."""
        import yaml

        self.line(yaml.safe_dump(jobs, sort_keys=False, allow_unicode=True, width=100).rstrip("\n"))

    def generated(
        self,
        out,
        names: list[str],
        removed: list[str],
        jobs_file: str,
        unchanged: list[str] = (),
        removed_from: dict | None = None,
        origin: dict | None = None,
        replaced_from: dict | None = None,
        rejudged: dict | None = None,
    ) -> None:
        """``generate`` wrote ``out/<name>`` for each of ``names`` not in ``unchanged`` (those folders
        already held what ``jobs_file`` renders and were left as they were: one line for all of them)
        and removed the folders ``removed``; ``removed_from``: name -> what a removed job was made
        from (:attr:`generator.layout.ManifestEntry.made_from`), said when not ``origin``, this run's;
        ``replaced_from``: name -> what the folder a written job replaced was made from (said always:
        only jobs made from something else are in it); ``rejudged``: name -> the fields only the
        manifest holds that changed (``expect``, ``timeout``), said for a folder left as it was (a
        trial's changed ``expect`` was "up to date", and simulate judged by the old one)."""
        kept = set(unchanged)
        written = [name for name in names if name not in kept]
        replaced = replaced_from or {}
        lines = [
            f"generated {out / name}"
            + (f" (replaces the one generated from {made_from_text(replaced[name])})" if name in replaced else "")
            for name in written
        ]
        # with --set, what this run made: a trial's --set jobs.np-cyclic.name=np-cyc2 removed np-cyclic
        # "(generated from jobs.yaml alone; not in jobs.yaml)", which holds it
        now = made_from_text(origin) if origin and origin.get("set") else jobs_file
        for name in removed:
            theirs = (removed_from or {}).get(name)
            why = f"no longer in {now}"
            if theirs != origin:  # a trial's exp.yaml jobs were said to be "no longer in jobs.yaml"
                why = f"generated from {made_from_text(theirs)}; not in {now}"
            lines.append(f"removed {out / name} ({why})")
        for name in names:
            if name in kept and name in (rejudged or {}):
                lines.append(
                    f"updated the {' and '.join(rejudged[name])} of {out / name} in {out / MANIFEST}, which simulate "
                    "judges the run by (its folder was already what it renders)"
                )
        if kept:
            count = len(kept)
            folders = "job folder" if count == 1 else "job folders"
            kept_as = "as it was" if count == 1 else "as they were"
            if written or removed:
                lines.append(f"left {count} other {folders} in {out} {kept_as} (already what {jobs_file} renders)")
            elif set(rejudged or ()) & kept:  # not "up to date" after an update (trial 49)
                lines.append(f"left {count} {folders} in {out} {kept_as} (already what {jobs_file} renders)")
            else:
                lines.append(f"{out} is up to date with {jobs_file}: left {count} {folders} {kept_as}")
        self.lines(lines)

    def out_of_date(
        self,
        out: str,
        jobs_file: str,
        differences: list[str],
        fix: str,
        made_elsewhere: list | None = None,
        whole: int = 0,
        checked: str | None = None,
    ) -> None:
        """``generate --check`` found ``differences`` (one line each); ``fix`` is the command that updates ``out``.

        ``made_elsewhere`` (:attr:`generator.pipeline.Generated.made_elsewhere`): the jobs an earlier
        ``generate`` made from other files or ``--set`` items; then ``fix`` would replace them, and
        the line says so and what they were made from, with the check of each, instead of advising
        it alone. ``whole``: how many jobs ``out`` holds (a check of fewer names its jobs).
        ``checked``: what this check renders, as :func:`generator.layout.made_from_text` words it
        (with its ``--set`` items, which a trial's "other files or --set than this check's" hid).
        """
        self.lines(differences)
        by_hand = any(line.startswith(("edited:", "unexpected:")) for line in differences)
        hand = " (move a file you edited by hand away first: generate never overwrites it)" if by_hand else ""
        if made_elsewhere:
            count = sum(len(names) for _, names in made_elsewhere)
            sources = "; ".join(
                f"{_counted(len(names), 'job')} from {made_from_text(o)}" for o, names in made_elsewhere
            )
            checks = " or ".join(f"`{_check_of(o, names, out, whole)}`" for o, names in made_elsewhere)
            this = f"; this check: {checked}" if checked else ""
            self.line(
                f"{out} is out of date with {jobs_file}, but {_counted(count, 'job')} in it "
                f"{'was' if count == 1 else 'were'} generated from other files or --set than this check's "
                f"({sources}{this}): to check {'it' if count == 1 else 'them'}, run {checks}; `{fix}` would "
                f"replace {'it' if count == 1 else 'them'} with what {jobs_file} renders{hand}",
                err=True,
            )
            return
        self.line(f"{out} is out of date with {jobs_file}: run `{fix}`{hand}", err=True)

    def up_to_date(self, out: str, jobs_file: str, selected: int | None = None) -> None:
        """``generate --check`` found ``out`` to be what ``jobs_file`` renders (``selected``: only that
        many jobs, ``--job``, were compared; a trial read "up to date" as the whole file's)."""
        if selected is None:
            self.line(f"{out} is up to date with {jobs_file}")
        else:
            which = "the selected job is" if selected == 1 else f"the {selected} selected jobs are"
            self.line(f"{out}: {which} up to date with {jobs_file}")

    def linted(self, out: str, selected: bool = False) -> None:
        """``lint`` found no problem in ``out`` (``selected``: in the folders of the jobs ``--job`` selects)."""
        which = " (the jobs --job selects)" if selected else ""
        self.line(f"{out}{which}: every component imports and its args fit the installed nvflare")

    def viewer_started(self, job: str, tracker: str, store: str, where: str, argv: list[str]) -> None:
        """``view`` starts ``argv``: ``tracker``'s viewer on job ``job``'s ``store``, reachable at ``where``."""
        self.lines([f"{job}: {tracker} viewer on {store} at {where} (Ctrl-C stops it)", shlex.join(argv)])

    # -- simulate (the events of generator.simulate.SimulateEvents) ------------------------------

    def job_started(self, name: str, info: ManifestEntry, timeout: float) -> None:
        """``<job>: simulating N clients, R rounds (timeout T s)``."""
        sizes = f"{_counted(info.num_clients, 'client')}, {_counted(info.num_rounds, 'round')}"
        self.line(f"{name}: simulating {sizes} (timeout {timeout:g} s)")

    def round_started(self, name: str, number: int, rounds: int, seconds: float) -> None:
        """``  <job>: round N of R (S s)``; ``seconds`` since the simulator started."""
        self.line(f"  {name}: round {number} of {rounds} ({seconds:.1f} s)")

    def leftovers_stopped(self, name: str, count: int) -> None:
        """``  <job>: stopped N process(es) the simulator left running``."""
        self.line(f"  {name}: stopped {count} process(es) the simulator left running")

    def folders_edited(self, files: list[tuple[Path, str]]) -> None:
        """One warning per file of a job to run that is not what ``generate`` wrote, then what it means, on stderr."""
        for path, kind in files:
            what = "was edited since generate wrote it" if kind == "edited" else "was not written by generate"
            self.line(f"warning: {path}: {what}", err=True)
        self.line(
            "warning: the jobs of these files run as their folders are now, and are judged by what the jobs file said "
            "(num_rounds, clients, expect); to keep a change, make it in the jobs file or client_scripts/, then move "
            "the edited file away and generate again (generate never overwrites it)",
            err=True,
        )

    def earlier_run_stopped(self, folder: str, pids: list[int]) -> None:
        """``<folder>: stopped N process(es) an earlier run left running (PID ...)``, on stderr."""
        listed, what = ", ".join(map(str, pids)), "process" if len(pids) == 1 else "processes"
        self.line(
            f"{folder}: stopped {len(pids)} {what} that an earlier run left running there "
            f"(PID {listed}): it ended before it could stop them",
            err=True,
        )

    def job_retried(self, name: str, reason: str) -> None:
        """``  <job>: <reason>`` (the first run was stopped and the job runs again)."""
        self.line(f"  {name}: {reason}")

    def order_chosen(self, order: list[str], source: str) -> None:
        """``order: longest first by the wall times in <source> (untimed jobs before them): a, b, ...``
        (:mod:`generator.order`)."""
        self.line(f"order: longest first by the wall times in {source} (untimed jobs before them): {', '.join(order)}")

    def job_finished(self, result) -> None:
        """A job's closing block: status, wall time and log; then its problems (stderr); its store and plot.

        Args:
            result (generator.simulate.JobResult): the job's result.
        """
        name = result.name
        with self._lock:  # one block: a parallel job's lines cannot come between these
            out, err = self._stdout or sys.stdout, self._stderr or sys.stderr
            if not _started(result):
                out.write(f"{name}: {result.status}, not started; log: {_log_text(result)}\n")
            else:
                out.write(f"{name}: {result.status} in {result.wall_seconds:.1f} s; log: {_log_text(result)}\n")
            out.flush()
            for problem in result.problems:
                err.write(f"{problem}\n")  # a Problem of the job: "<job>: <message>"
            err.flush()
            if result.store:
                out.write(f"{name}: metrics store ({result.receiver}): {result.store}\n")
            if result.report:
                out.write(f"{name}: metrics plot: {result.report}\n")
            out.flush()

    # -- poc, submit (the events of generator.poc.PocEvents) -------------------------------------

    def system_step(self, text: str) -> None:
        """``poc: <text>``: a step of the POC system's life (prepared, started, stopped)."""
        self.line(f"poc: {text}")

    def job_submitted(self, name: str, info: ManifestEntry, timeout: float, job_id: str) -> None:
        """``<job>: submitted as job <id>: N clients, R rounds (timeout T s)``."""
        self.line(
            f"{name}: submitted as job {job_id}: {_counted(info.num_clients, 'client')}, "
            f"{_counted(info.num_rounds, 'round')} (timeout {timeout:g} s)"
        )

    def all_finished(self, results: list) -> None:
        """An empty line, then :func:`table` of ``results`` (file order), then each cross-site
        evaluation matrix (:func:`cross_site_table`), then, of several jobs, :func:`failures`;
        nothing when no job ran (stopped before the first)."""
        if not results:
            return
        self.lines(["", *table(results)])
        for result in results:
            if getattr(result, "cross_site", None) is not None:
                self.lines(["", *cross_site_table(result.name, result.cross_site)])
        if len(results) > 1:
            summary = failures(results)
            if summary:
                self.lines(["", *summary])

    def sweeps_compared(self, sweeps: list) -> None:
        """After the main table: per :class:`generator.sweep.Sweep` an empty line and its table
        (:func:`generator.sweep.table`: matrix values, status, wall time, model mean, last metrics),
        then on stderr the warning of :func:`generator.sweep.missing_warning` (combinations that stored no
        point of the compared metric, so not in the plot)."""
        from .sweep import missing_warning
        from .sweep import table as sweep_table

        for sweep in sweeps:
            self.lines(["", *sweep_table(sweep)])
            warned = missing_warning(sweep)
            if warned:
                self.lines(warned, err=True)


def _to_devnull(stream: TextIO) -> None:
    """Point ``stream``'s file descriptor at ``os.devnull`` (its reader is gone): what is still
    buffered, and every later write, Python's flush at exit included, goes nowhere instead of
    raising ``BrokenPipeError`` again (the way the Python docs' "Note on SIGPIPE" recommends)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (a test's StringIO never breaks)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _model_text(model) -> str:
    if model is None:
        return "-"
    if isinstance(model, dict):  # a PyTorch state_dict: too many values for a cell; its size and mean
        from .sweep import model_mean

        count = sum(_count(v) for v in model.values())
        return f"{len(model)} tensors, {count} values, mean {model_mean(model):g}"
    return "[" + ", ".join("[" + " ".join(f"{v:g}" for v in row) + "]" for row in model) + "]"


def generate_command(
    files: list[str], out: str, sets: list[str], names: list[str] | None = None, check: bool = False
) -> str:
    """The command that (re)generates ``out`` from the ``--jobs`` ``files``, the ``--set`` items
    ``sets`` and the ``--job`` ``names`` (``check``: compares instead): ``make generate`` (``make
    check``) for the defaults, else the ``python -m generator generate`` line with every option
    given, shell-quoted (a trial's ``--check --job a`` was told a command that wrote job b too; make's
    ``SET=`` would split a value with a space).

    Args:
        files (list[str]): the jobs files. out (str): the output folder. sets (list[str]): the
            overrides. names (list[str] | None): the jobs. check (bool): the ``--check`` command.
    """
    if (list(files), os.path.normpath(str(out)), list(sets), names or []) == (
        [DEFAULT_JOBS_FILE],
        DEFAULT_OUT,
        [],
        [],
    ):
        return "make check" if check else "make generate"
    return command_line("generate --check" if check else "generate", files, out, sets, names)


def command_line(command: str, files: list[str], out, sets: list[str], names: list[str] | None = None) -> str:
    """``python -m generator COMMAND --jobs F ... --job N ... --out OUT --set S ...``, each value
    shell-quoted: the command a message suggests (``generate``, ``generate --check``, ``lint``)."""
    options = [("--jobs", f) for f in files] + [("--job", n) for n in names or []]
    options += [("--out", str(out))] + [("--set", s) for s in sets]
    return f"python -m generator {command} " + " ".join(f"{o} {shlex.quote(str(v))}" for o, v in options)


#: Most ``--job`` names a suggested command lists; beyond, it says how many jobs to add (a trial's
#: 6 jobs got a command with a literal ``--job ...``, which cannot be run: lint spells them out).
_NAMED_JOBS = 20


def _check_of(origin: dict | None, names: list[str], out, whole: int) -> str:
    """The ``generate --check`` of the jobs ``names`` of ``out`` with what they were made from
    (``origin``, :attr:`generator.layout.ManifestEntry.made_from`): with their ``--job`` names when
    they are not all ``whole`` jobs of ``out`` (a folder of two files' jobs: each file checks its own)."""
    origin = origin or {}
    files, sets = origin.get("jobs") or [DEFAULT_JOBS_FILE], origin.get("set") or []
    if len(names) >= whole:
        return generate_command(files, str(out), sets, check=True)
    if len(names) <= _NAMED_JOBS:
        return generate_command(files, str(out), sets, names, check=True)
    return generate_command(files, str(out), sets, check=True) + f" --job ... (its {len(names)} jobs)"


def _counted(number: int, noun: str) -> str:
    """``1 round``, ``5 rounds``."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _count(value) -> int:
    return sum(_count(v) for v in value) if isinstance(value, list | tuple) else 1


def _started(result) -> bool:
    """Whether the job of ``result`` was started at all (a simulator run, or a submission): a job
    refused before (another NVFlare line, a client not connected) or never reached after a stop
    signal has no wall time, log or NVFlare job ID."""
    return bool(result.wall_seconds or result.log or result.job_id)


def _log_text(result) -> str:
    """Where a :class:`generator.simulate.JobResult`'s log is, as its lines name it: the path, or why
    there is none (not started; a job of a remote system whose result was not downloaded)."""
    if not _started(result):
        return "none"
    return result.log or (f"not downloaded (NVFlare job {result.job_id})" if result.job_id else "none (not started)")


def model_cell(result) -> str:
    """The table's "final model" cell of a :class:`generator.simulate.JobResult`: the final model,
    or a saved model marked as not final, or ``-``."""
    if result.final_model is not None:
        # FedAvg with stop_cond keeps the best model, which may be an earlier round's
        best = 0 < result.model_round < result.rounds_started
        return (f"best (round {result.model_round}): " if best else "") + _model_text(result.final_model)
    if result.last_model is not None:
        after = f"after round {result.model_round} of {result.rounds}" if result.model_round else "no round saved"
        return f"not final ({after}): {_model_text(result.last_model)}"
    return "-"


def _points_text(points: dict) -> str:
    if not points:
        return "-"
    return "; ".join(
        f"{site}: " + (", ".join(f"{k}={v}" for k, v in sorted(keys.items())) or "no points")
        for site, keys in sorted(points.items())
    )


def failures(results: list) -> list[str]:
    """Why each job of ``results`` that is not ``ok`` failed, grouped under the table: its problems
    were printed when it ended, between other jobs' lines in a parallel run (a trial had to scroll
    back through 14 jobs' progress for them). Per job ``<status> <job>; log: <log>``, then each of
    its problems indented; empty when every job is ok or was interrupted (stopped by the user).

    Args:
        results (list[generator.simulate.JobResult]): the jobs' results, in table order.
    """
    lines = []
    for r in results:
        if r.status in ("ok", "INTERRUPTED"):  # interrupted: the user stopped it, and the run says so last
            continue
        lines.append(f"{r.status} {r.name}; log: {_log_text(r)}" + ("" if _started(r) else " (not started)"))
        for problem in r.problems:
            text = str(problem)
            lines.append("  " + text.removeprefix(f"{r.name}: "))
    return lines


def table(results: list) -> list[str]:
    """The results table, one row per job in the order given: job, status (ok, FAILED, TIMEOUT,
    INTERRUPTED), rounds started/rounds, wall time (s), final model, metric points per site.

    Args:
        results (list[generator.simulate.JobResult]): the jobs' results.

    Returns:
        list[str]: the header and one line per job, columns padded to their widest cell.
    """
    rows = [("job", "status", "rounds", "wall s", "final model", "metric points per site")]
    for r in results:
        rows.append(
            (
                r.name,
                r.status,
                # patience running out in the last round is a stop, but not an early one (trial 49)
                f"{r.rounds_started}/{r.rounds}"
                + (" (stopped early)" if 0 < getattr(r, "stopped_round", 0) < r.rounds else ""),
                f"{r.wall_seconds:.1f}" if _started(r) else "-",
                model_cell(r),
                _points_text(r.metric_points),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def _metrics_text(cell) -> str:
    if not isinstance(cell, dict) or not cell:
        return "missing"
    return ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in cell.items())


def cross_site_table(name: str, matrix: dict) -> list[str]:
    """A job's cross-site evaluation matrix: a row per evaluating site, a column per model
    (``SRV_server``, then each site's local model); a cell holds the metrics the site sent
    (``mean=7``) or ``missing``.

    Args:
        name (str): the job. matrix (dict): ``{evaluating site: {model: {metric: value}}}``
            (:attr:`generator.simulate.JobResult.cross_site`).

    Returns:
        list[str]: a title line, the header and one line per site, columns padded to their widest cell.
    """
    from .judge import cross_site_models  # simulate's: generate and validate never load the judge

    sites = sorted(matrix, key=lambda s: (site_number(s) is None, site_number(s) or 0, s))
    models = cross_site_models(sites)
    models += sorted({m for row in matrix.values() for m in row} - set(models))
    rows = [("site \\ model", *models)]
    rows += [(site, *(_metrics_text(matrix[site].get(m)) for m in models)) for site in sites]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return [f"{name}: cross-site evaluation (each site's metrics of each model)", *lines]
