"""The generate pipeline, one call per stage:

1. load (:func:`generator.overrides.load_all`): one or more ``jobs.yaml`` files (:func:`generator.load.load`
   each), merged in order, ``--set`` overrides applied, ``matrix:`` jobs expanded
   (:mod:`generator.matrix`) -> one :class:`~generator.load.Document`;
2. validate, schema half (:func:`generator.validate.check_document`): the document against the
   JSON Schema -> the problems so far and the job entries that fit;
3. spec (:func:`generator.spec.effective_jobs`): those entries -> effective jobs
   (:class:`~generator.spec.Job`), each setting filled in from ``defaults:`` and the schema;
4. validate, cross-field half (:func:`generator.validate.check_jobs`): the effective jobs (a
   ``min_clients`` in ``defaults`` against a job's ``num_clients``) -> the jobs, or a
   :class:`~generator.errors.SpecError` with every problem of 1, 2 and 4;
5. render (:class:`generator.render.Renderer`): one job -> its files in memory;
6. write (:func:`generator.write.write_jobs`), or compare (:func:`generator.write.diff_jobs`).

Nothing here imports nvflare: generating 1,000 jobs must not pay NVFlare's import time. Jobs are
rendered one at a time as they are written, so memory does not grow with the rendered files.
Python's cyclic garbage collector is paused while the jobs are loaded and checked (see
:func:`no_cyclic_gc`) and runs over new objects only while they are rendered and written (see
:func:`collect_only_new`). Measured with 10,000 jobs: peak RSS 66 MB, because the loader builds
each job as soon as it is composed and keeps positions only for messages (holding the whole file's
nodes and positions takes 239 MB).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from . import extras
from .errors import OutputError, Problem, SpecError
from .layout import DEFAULT_JOBS_FILE, MANIFEST, ManifestEntry, judged_changes, made_from, made_from_text
from .overrides import SetValue, load_all, set_pattern, set_target
from .render import Renderer, tracking_uri
from .selection import listed, matrix_jobs, nearest, not_found, select_names
from .spec import Job, effective_jobs
from .validate import (
    SCRIPTS_DIR,
    case_clash_warnings,
    check_document,
    check_jobs,
    cross_site_warnings,
    model_sweep_warnings,
    receiver_warnings,
    replaced_persistor_warnings,
    shipping_warnings,
)
from .write import diff_jobs, made_from_of, read_entries, write_jobs


@dataclass
class Generated:
    """What a generate run did.

    Attributes:
        jobs (list[Job]): the jobs rendered.
        out (Path): the output folder.
        warnings (list[Problem]): non-fatal findings, located in ``jobs.yaml``.
        differences (list[str]): with ``check``: how disk differs from the rendering (empty: none).
        removed (list[str]): job folders of an earlier run that this run deleted (no longer in
            ``jobs.yaml``), so the CLI can say so.
        unchanged (list[str]): jobs whose folders this run left as they were (already what
            ``jobs.yaml`` renders), so the CLI does not say it generated them.
        shown (list[Job]): with ``validate --show``: the jobs whose effective settings to print.
        removed_from (dict[str, dict | None]): each removed job's
            :attr:`generator.layout.ManifestEntry.made_from`, to say what it was generated from.
        rejudged (dict[str, list[str]]): each job whose ``expect`` or ``timeout`` this run changed in
            the manifest (:attr:`generator.write.Written.rejudged`).
        replaced_from (dict[str, dict | None]): each job this run wrote over a folder an earlier
            ``generate`` made from other files or ``--set`` items: what that one was made from.
        made_elsewhere (list[tuple[dict | None, list[str]]]): with ``check``: the jobs of ``out``
            that an earlier ``generate`` made from other files or ``--set`` items than this run's,
            as ``(made_from, names)`` per origin (:attr:`generator.layout.ManifestEntry.made_from`;
            empty: none). whole (int): with them, how many jobs ``out`` holds.
    """

    jobs: list
    out: Path
    warnings: list = field(default_factory=list)
    differences: list = field(default_factory=list)
    removed: list = field(default_factory=list)
    unchanged: list = field(default_factory=list)
    shown: list = field(default_factory=list)
    removed_from: dict = field(default_factory=dict)
    replaced_from: dict = field(default_factory=dict)
    rejudged: dict = field(default_factory=dict)
    made_elsewhere: list = field(default_factory=list)
    whole: int = 0


class RenderedJobs(Mapping):
    """Job name -> the job's rendered files, rendered each time it is looked up (``generate
    --check`` compares 10,000 jobs with one job's files in memory at a time).

    Args:
        renderer (Renderer): renders each job.
        jobs (list[Job]): the jobs, by name.
    """

    def __init__(self, renderer: Renderer, jobs: list[Job]):
        self._renderer = renderer
        self._jobs = {job.name: job for job in jobs}

    def __getitem__(self, name: str) -> dict[str, bytes]:
        return self._renderer.render(self._jobs[name])

    def __iter__(self):
        return iter(self._jobs)

    def __len__(self) -> int:
        return len(self._jobs)


class InputDigests(Mapping):
    """Job name -> :meth:`generator.render.Renderer.inputs` of the job, computed when looked up.

    Args:
        renderer (Renderer): the renderer (it reads and hashes each client script once).
        jobs (list[Job]): the jobs, by name.
    """

    def __init__(self, renderer: Renderer, jobs: list[Job]):
        self._renderer = renderer
        self._jobs = {job.name: job for job in jobs}

    def __getitem__(self, name: str) -> str:
        return self._renderer.inputs(self._jobs[name])

    def __iter__(self):
        return iter(self._jobs)

    def __len__(self) -> int:
        return len(self._jobs)


def job_info(job: Job) -> ManifestEntry:
    """Facts about a generated job that ``simulate`` needs, stored in the output manifest.

    Returns:
        ManifestEntry: ``timeout`` None when the job sets none (then absent from the JSON).
    """
    s = job.settings
    receiver = s.get("receiver")
    return ManifestEntry(
        nvflare_version=job.line,
        num_clients=s["num_clients"],
        num_rounds=s["num_rounds"],
        execution_mode=job.execution_mode,
        script=s["script"],
        receiver=receiver["type"] if receiver else None,
        tracking_uri=tracking_uri(job),
        tb_folder=receiver.get("tb_folder") if receiver else None,
        expect=s["expect"],
        timeout=s.get("timeout"),
        workflow=s.get("workflow", "fedavg"),
        clients=list(s["clients"]) if s.get("clients") else None,
        apps={app.name: {"sites": list(app.sites), "script": app.job.settings["script"]} for app in job.apps} or None,
        cross_site_eval=bool(s.get("cross_site_eval")),
        framework=s["framework"],
    )


def _with_matrix(doc, job: Job) -> ManifestEntry:
    """:func:`job_info`, plus for a job expanded from a matrix ``matrix``: the matrix job's ``name``
    as written (``job``), the combination's ``values`` (matrix key -> value) and, when the job sets
    it, ``compare`` (the metric :mod:`generator.sweep` plots across the combinations)."""
    combination = getattr(doc, "combinations", {}).get(job.name)
    if not combination:
        return job_info(job)
    matrix = {"job": combination[0], "values": combination[1]}
    if job.entry.get("compare"):
        matrix["compare"] = job.entry["compare"]
    return replace(job_info(job), matrix=matrix)


def _once(problems: list) -> list:
    """``problems`` without repeats (the jobs of one matrix share their template's lines), in order."""
    return list(dict.fromkeys(problems))


def _files_of(doc) -> list[str]:
    """The files ``doc`` was read from, in the order given: one, or each ``--jobs`` file of a
    :class:`generator.overrides.Layered` that wrote some of it (a ``--set`` is not a file)."""
    sources = getattr(doc, "sources", None)
    if not sources:
        return [doc.file]
    found = [doc.file] + [s[0].file for k, s in sources.items() if k is not None and not isinstance(s[0], SetValue)]
    return list(dict.fromkeys(found))


def select(doc, jobs: list[Job], names: list[str] | None, option: str = "--job") -> list[Job]:
    """Keep the jobs named by ``--job`` (or another ``option``: ``validate --show``).

    Args:
        doc (Document): the loaded ``jobs.yaml`` (its ``file`` names it in messages; its
            ``combinations``, when loaded by :func:`generator.overrides.load_all`, give the matrix
            job each job was expanded from).
        jobs (list[Job]): the validated jobs.
        names (list[str] | None): the ``--job`` values: a job's name, a matrix job's name as
            written (every job it expanded to) or a pattern (:mod:`generator.selection`); None or
            empty: keep every job.
        option (str): the option the names were given with, for messages.

    Returns:
        list[Job]: the jobs selected, in file order, each once.

    Raises:
        SpecError: a name selects no job of ``doc``; printed as ``jobs.yaml: --job 'x': ...`` (no
            line: the mistake is on the command line), with the nearest job or matrix job name as a
            suggestion, else every name.
    """
    if not names:
        return jobs
    known = [j.name for j in jobs]
    combinations = getattr(doc, "combinations", {})
    matrices = matrix_jobs((name, combinations[name][0] if name in combinations else None) for name in known)
    chosen = select_names(names, known, matrices)
    if chosen.unknown:
        files = _files_of(doc)
        where = "in this file" if len(files) < 2 else f"in {' or '.join(files)}"
        have = listed(list(known)) + (f"; matrix jobs: {listed(list(matrices))}" if matrices else "")
        problems = []
        for name in chosen.unknown:
            close = nearest(name, known, matrices)
            hint = f"; did you mean {close!r}?" if close else f"; jobs are: {have}"
            problems.append(Problem(doc.file, 0, 0, "", f"{option} {name!r}: {not_found(name, 'job')} {where}{hint}"))
        raise SpecError(problems)
    wanted = set(chosen.jobs)
    return [j for j in jobs if j.name in wanted]


@contextmanager
def no_cyclic_gc() -> Iterator[None]:
    """Pause CPython's cyclic garbage collector for the block (reference counting still frees).

    Each time enough objects have been made, the collector walks every live object of a
    generation; building 10,000 jobs' worth of plain dicts, lists and strings (none of which form
    reference cycles) then costs time that grows with the square of the job count. Measured: 10,000
    jobs' YAML composed in 0.56 s with the collector, 0.15 s without.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextmanager
def collect_only_new() -> Iterator[None]:
    """Run the cyclic garbage collector for the block, over objects made in it only.

    Rendering makes reference cycles (``json.dumps(indent=2)`` builds its encoder from closures
    that refer to each other): about 100 objects per job that only the collector frees; 10,000
    jobs left 80 MB behind with it paused. Everything alive before the block (the loaded jobs) is
    frozen (``gc.freeze``) so the collector's passes stay as short as the garbage they find.
    """
    enabled = gc.isenabled()
    gc.freeze()
    gc.enable()
    try:
        yield
    finally:
        gc.unfreeze()
        if not enabled:
            gc.disable()


def generate(
    jobs_file: str | Path | list,
    out: str | Path,
    names: list[str] | None = None,
    check: bool = False,
    sets: list[str] | None = None,
) -> Generated:
    """Load, validate and build the jobs of ``jobs_file``; render them into ``out`` (or compare, ``check``).

    Args:
        jobs_file (str | Path | list): the ``jobs.yaml`` to read, or several, merged in order
            (:func:`generator.overrides.load_all`).
        out (str | Path): output folder; one job folder per job below it.
        names (list[str] | None): only these jobs (others already in ``out`` are kept).
        check (bool): write nothing; report in ``differences`` how ``out`` differs.
        sets (list[str] | None): ``--set PATH=VALUE`` overrides, applied after the files.

    Returns:
        Generated: the jobs, the output folder, warnings and (with ``check``) differences.

    Raises:
        SpecError: ``jobs_file`` cannot be read, does not fit the schema or fails a cross-field
            check (:func:`check_only` says where each is raised), or ``names`` holds an unknown job.
        TemplateError: a template failed (:mod:`generator.render`).
        OutputError: ``out`` cannot be written safely (:mod:`generator.write`).
        Nothing on disk changed when any of these is raised.
    """
    with no_cyclic_gc():
        doc = load_all(jobs_file, sets)
        with _warned_on_failure(doc):
            checked = check_document(doc)
            jobs = effective_jobs(doc.data, checked.schema, only=checked.fitting)
            written = {written_name(doc, job.name) for job in jobs}
            jobs = select(doc, check_jobs(checked, jobs), names)
        renderer = Renderer(doc.root / SCRIPTS_DIR)
        if not check:
            _out_outside_scripts(Path(out), doc.root / SCRIPTS_DIR)
        result = Generated(jobs=jobs, out=Path(out), warnings=_warnings(doc, jobs))
    files = [str(f) for f in (jobs_file if isinstance(jobs_file, list) else [jobs_file])]
    origins = Origins(files, sets or [], written)
    with collect_only_new():
        if check:
            differences = diff_jobs(Path(out), RenderedJobs(renderer, jobs))
            if names:  # the other job folders in ``out`` are kept, not unexpected
                differences = [d for d in differences if not d.startswith("unexpected job folder")]
            recorded = read_entries(Path(out))  # once, for both checks below (diff_jobs read it as ours)
            for job in jobs:  # what only the manifest holds: how simulate judges the run
                changed = judged_changes(recorded.get(job.name), _with_matrix(doc, job))
                if changed:
                    what = " and ".join(changed)
                    differences.append(
                        f"changed: {Path(out) / MANIFEST} (the {what} of job {job.name!r}, which simulate judges "
                        "the run by)"
                    )
            result.differences = differences
            if differences:
                # the jobs selected, not the --job values (a matrix name or a pattern names none itself)
                selected = [job.name for job in jobs] if names else None
                recorded_from = made_from_of(Path(out), recorded)
                result.made_elsewhere, result.whole = made_elsewhere(recorded_from, origins, selected)
        else:
            info = {job.name: _with_matrix(doc, job) for job in jobs}
            if files != [DEFAULT_JOBS_FILE] or sets:
                info = {
                    name: replace(entry, made_from=origins.of(written_name(doc, name))) for name, entry in info.items()
                }
            written = write_jobs(
                Path(out),
                RenderedJobs(renderer, jobs),
                info,
                keep_others=bool(names),
                inputs=InputDigests(renderer, jobs),
            )
            result.removed, result.unchanged = written.removed, written.unchanged
            result.removed_from, result.replaced_from = written.removed_from, written.replaced_from
            result.rejudged = written.rejudged
    return result


def _out_outside_scripts(out: Path, scripts: Path) -> None:
    """Refuse an ``out`` in the jobs file's ``client_scripts/`` (a trial's ``--out client_scripts/gen``
    was written: every later job would ship the generated folders as the scripts' neighbours).
    Raises OutputError."""
    where, root = Path(os.path.abspath(out)), Path(os.path.abspath(scripts))
    if where.is_relative_to(root):
        shown = os.path.relpath(root) if root.is_relative_to(Path.cwd()) else str(root)
        place = "is" if where == root else "is inside"
        message = (
            f"{place} {shown}, the folder the jobs ship their scripts and custom_files from: "
            "choose an --out outside it (such as build/jobs)"
        )
        raise OutputError([Problem(str(out), 0, 0, "", message)])


def written_name(doc, name: str) -> str:
    """The name job ``name`` is written under: its matrix job's as written, else its own."""
    combination = getattr(doc, "combinations", {}).get(name)
    return combination[0] if combination else name


class Origins:
    """:attr:`generator.layout.ManifestEntry.made_from` of each job of a run from the ``--jobs``
    ``files`` and the ``--set`` items ``sets``: a ``--set jobs.NAME...`` counts only for the job
    written as NAME (the longest of ``written``, the names as written, that the path starts with,
    as :mod:`generator.overrides` reads it): a trial's ``--set jobs.np-cyclic.num_rounds=3`` was
    recorded on all 14 jobs, and a check then said all 14 were made from it."""

    def __init__(self, files: list[str], sets: list[str], written: set[str]):
        self.files, self.sets = files, sets
        # the jobs each --set counts for; None: a --set of defaults or max_jobs, which counts for every job
        self._targets: list[set[str] | None] = []
        for item in sets:
            path = item.partition("=")[0]
            target, pattern = set_target(path, written), set_pattern(path, sorted(written))
            self._targets.append({target} if target else set(pattern[1]) if pattern else None)

    def of(self, written: str) -> dict | None:
        """What the job written as ``written`` (str) is made from (None: ``jobs.yaml`` alone)."""
        chosen = [s for s, t in zip(self.sets, self._targets, strict=True) if t is None or written in t]
        return made_from(self.files, chosen)


def made_elsewhere(
    recorded: dict[str, tuple[dict | None, str | None]], origins: Origins, names: list[str] | None
) -> tuple[list, int]:
    """The jobs of an output folder (``recorded``: :func:`generator.write.made_from_of`; only
    ``names`` when given) made from other files or ``--set`` items than ``origins`` gives them,
    grouped by what they were made from (:attr:`Generated.made_elsewhere`; ``generate --check`` and
    ``lint`` name each group's own command), and how many jobs the folder holds."""
    groups: dict[str, tuple[dict | None, list[str]]] = {}
    wanted = recorded if names is None else {n: recorded[n] for n in names if n in recorded}
    for name, (theirs, matrix) in wanted.items():
        if theirs != origins.of(matrix or name):
            groups.setdefault(made_from_text(theirs), (theirs, []))[1].append(name)
    return list(groups.values()), len(recorded)


def check_only(jobs_file: str | Path | list, sets: list[str] | None = None, show: list[str] | None = None) -> Generated:
    """Load, validate and build the jobs of ``jobs_file`` (``validate`` command); write nothing.

    Args:
        jobs_file (str | Path | list): the ``jobs.yaml`` to read, or several, merged in order.
        sets (list[str] | None): ``--set PATH=VALUE`` overrides, applied after the files.
        show (list[str] | None): ``validate --show`` names: :attr:`Generated.shown` gets those jobs.

    Returns:
        Generated: the jobs and the warnings (``out`` is unused).

    Raises:
        SpecError: see :func:`generator.load.load`, :func:`generator.validate.check_document` and
            :func:`generator.validate.check_jobs`; a ``show`` name that is no job.
    """
    doc = load_all(jobs_file, sets)
    with _warned_on_failure(doc):
        checked = check_document(doc)
        jobs = effective_jobs(doc.data, checked.schema, only=checked.fitting)
        jobs = check_jobs(checked, jobs)
        shown = select(doc, jobs, show, option="--show") if show else []
    return Generated(jobs=jobs, out=Path(), warnings=_warnings(doc, jobs), shown=shown)


@contextmanager
def _warned_on_failure(doc) -> Iterator[None]:
    """Re-raise a :class:`SpecError` of the block with the warnings of loading ``doc`` among its
    problems, in file order: a later file's job whose name is close to an earlier one's (``did you
    mean 'np-diff-in-process' (jobs merge by name)?``) is a new job, and its error (``missing
    required key 'script'``) alone sent a trial to add a script instead of fixing the name."""
    try:
        yield
    except SpecError as e:
        if doc.warnings:
            raise SpecError([*e.problems, *doc.warnings]) from None
        raise


def _warnings(doc, jobs: list[Job]) -> list[Problem]:
    """Every non-fatal finding, each once: the load stage's, the receivers', cross-site evaluation's,
    the escape hatch's, then what the jobs ship."""
    found = doc.warnings + receiver_warnings(doc, jobs) + cross_site_warnings(doc, jobs) + extras.warnings(doc, jobs)
    found += model_sweep_warnings(doc, jobs) + replaced_persistor_warnings(doc, jobs) + case_clash_warnings(doc, jobs)
    return _once(sorted(found) + shipping_warnings(doc, jobs))
