"""What ``simulate`` writes besides workspaces: the results file and the plots, never over a user's file.

Takes the ``--results`` path and the ``--reports`` folder; checks both before any job runs and
writes them so that a file the generator did not write is never overwritten (the rule
:mod:`generator.write` follows for job folders):

- ``--results`` (default ``build/results.json``): a JSON list, one object per job, each carrying
  ``"generator": "nvflare-jobgen"``. An existing file is replaced only if it is such a list (or an
  unmarked results list: objects that each have every key of :data:`RESULT_KEYS`);
  anything else (``jobs.yaml``, a folder, a symlink, a user's JSON) is refused. Written to a
  temporary file beside it and renamed into place, so a reader never sees half a file.
- ``--reports`` (default ``build/reports``): ``<job>.png`` per metrics job, ``<matrix job>-sweep.png``
  per sweep that stored metrics (:mod:`generator.sweep`; checked as a plot named ``<matrix job>-sweep``) and a manifest
  ``.jobgen-reports.json`` with the SHA-256 of each PNG written. An existing ``<job>.png`` is
  replaced only if the manifest lists it with that content, or (a plot the manifest does not
  list, e.g. when a run was stopped before it updated the manifest) it is a PNG whose text chunks
  say it is our plot of that job (``Title`` = the job, ``Series``: see :mod:`generator.plot`).
  Other files in the folder are left alone; nothing is deleted.
- neither may be inside the generated jobs folder or the workspaces folder: those hold only what
  their own manifest or marker lists, and a workspace is cleared before its job runs.

Problems are :class:`generator.errors.OutputError` (exit code 2), each naming the path.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputError, Problem
from .layout import GENERATOR_ID

#: The key every results entry carries, with the value :data:`generator.layout.GENERATOR_ID`.
RESULTS_MARK = "generator"
#: Keys that make a results entry without :data:`RESULTS_MARK` ours: the fields every results entry
#: of nvflare-jobgen has.
RESULT_KEYS = frozenset(
    {"name", "ok", "rounds", "rounds_started", "wall_seconds", "final_model", "workspace", "log", "problems"}
)
#: The reports folder's manifest: ``{"generator": "nvflare-jobgen", "files": {"<job>.png": sha256}}``.
REPORTS_MANIFEST = ".jobgen-reports.json"


def _problem(path: Path, message: str) -> Problem:
    return Problem(str(path), 0, 0, "", message)


def _inside(path: Path, folder: Path) -> bool:
    path, folder = Path(os.path.abspath(path)), Path(os.path.abspath(folder))
    return path == folder or folder in path.parents


def file_above(path: Path) -> Path | None:
    """The nearest existing parent of ``path`` if it is not a folder (so ``path`` cannot be made), else None.

    Args:
        path (Path): a file or folder to be made; relative to the working directory if not absolute.
    """
    for parent in Path(os.path.abspath(path)).parents:
        if parent.exists() or parent.is_symlink():
            return None if parent.is_dir() else parent
    return None


def folder_problems(root: Path, option: str) -> list[Problem]:
    """Why ``root`` (the folder of ``option``, e.g. ``--workspace``) cannot be used as a folder: a
    symbolic link, a file, or a path below a file; empty when it is a folder or can be made one.

    Returns:
        list[Problem]: at most one, naming ``root`` (printed by the CLI, exit code 2).
    """
    root = Path(root)

    def problem(message: str) -> list[Problem]:
        return [Problem(str(root), 0, 0, "", f"{option}: {message}")]

    if root.is_symlink():
        return problem("is a symbolic link: give the folder itself")
    if root.exists() and not root.is_dir():
        return problem(f"is a file, not a folder: choose another {option}")
    blocker = file_above(root)
    if blocker:
        return problem(f"{blocker} is a file, not a folder")
    return []


def lock_folder(folder: Path, shared: bool = False) -> int | None:
    """Take an exclusive advisory lock (``flock``, ``man 2 flock``; ``shared``: a shared one, which
    only an exclusive one excludes) on the folder ``folder`` itself (no lock file is made): the
    open descriptor that holds it (close it to release the lock; the kernel releases it when the
    process ends, however it ends), or None when another open description holds a lock that
    excludes it (another run; in this process too). Not on POSIX: -1, no lock.

    Raises:
        OSError: ``folder`` cannot be opened (it must exist).
    """
    try:
        import fcntl
    except ImportError:  # not on POSIX: no lock
        return -1
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def holding(folder: Path, refusal: str, shared: bool = False) -> Iterator[None]:
    """Hold :func:`lock_folder` on ``folder`` (``shared`` or exclusive) until the block ends.

    Raises:
        OutputError: another open description holds a lock that excludes it: ``refusal``, naming
            ``folder`` (exit code 2).
    """
    fd = lock_folder(folder, shared)
    if fd is None:
        raise OutputError([_problem(folder, refusal)])
    try:
        yield
    finally:
        if fd >= 0:
            os.close(fd)


@contextlib.contextmanager
def one_run_in(
    folders: dict[str, Path], command: str, jobs: Path | None = None, results: Path | None = None
) -> Iterator[None]:
    """Make each folder of ``folders`` (``{option: folder}``, e.g. ``{"--workspace": ...}``) and hold
    :func:`lock_folder` on it until the block ends, so that a second run of ``simulate``, ``poc``
    or ``submit`` on one of them is refused before it changes anything there (it would clear a
    workspace, or a download, that this run is using). The generated jobs folder ``jobs``
    (``--out``), which several runs may read at once, is held with a shared lock: ``generate``
    takes an exclusive one (:func:`generator.write.write_jobs`), so it does not change the folders
    under a run, nor a run start while it writes.

    Args:
        folders (dict[str, Path]): the folders, checked beforehand (:func:`folder_problems`), by the
            option that names them. command (str): this run's command, for the message.
        jobs (Path | None): the generated jobs folder the run reads (None: none held).
        results (Path | None): the results file the run will replace (``--results``), held like a
            folder when it exists (a run's first results file does not, and is not made here: two
            first runs on one results file at once are not told apart; the last to end writes it).

    Raises:
        OutputError: another run holds a folder's lock or the results file's, or ``generate`` is
            writing ``jobs`` (exit code 2); the ones taken so far are released, and the refused
            one is left as it was.
    """
    with contextlib.ExitStack() as held:
        if jobs is not None and jobs.is_dir():
            refusal = (
                f"--out: `generate` is writing the job folders here now; `{command}` would run them "
                "half-written: try again when it has finished"
            )
            held.enter_context(holding(jobs, refusal, shared=True))
        if results is not None and results.is_file():
            refusal = (
                f"--results: another run of the generator is writing its results to this file; `{command}` "
                "would replace them with its own: wait until it has finished, or give another --results"
            )
            held.enter_context(holding(results, refusal))
        # the folders there already first (only those can be another run's), then the new ones:
        # a refusal has made nothing
        for option, folder in sorted(folders.items(), key=lambda item: not item[1].is_dir()):
            folder.mkdir(parents=True, exist_ok=True)
            refusal = (
                f"{option}: another run of the generator (simulate, poc or submit) is using this folder; "
                f"`{command}` would clear what that run writes there: wait until it has finished, or give "
                f"another {option} (and another --results, which that run will write too)"
            )
            held.enter_context(holding(folder, refusal))
        yield


def _placement(path: Path, option: str, managed: dict[str, Path]) -> list[Problem]:
    """``path`` must not be inside a folder simulate manages, nor under a file."""
    for what, folder in managed.items():
        if folder is not None and _inside(path, folder):
            return [_problem(path, f"{option} is inside {what} {folder}: choose a path outside it")]
    blocker = file_above(path)
    return [_problem(path, f"{option}: {blocker} is a file, not a folder")] if blocker else []


def is_our_results(path: Path) -> bool:
    """``path`` (Path) is a results file that ``simulate`` wrote (see the module docstring).

    A non-empty JSON list whose entries each carry :data:`RESULTS_MARK` or every key of
    :data:`RESULT_KEYS`; False when it cannot be read or is not JSON.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(data, list)
        and bool(data)
        and all(isinstance(e, dict) and (e.get(RESULTS_MARK) == GENERATOR_ID or RESULT_KEYS <= e.keys()) for e in data)
    )


def check_results(path: Path, managed: dict[str, Path] | None = None) -> list[Problem]:
    """Why ``simulate`` may not write its results to ``path`` (empty: it may).

    Args:
        path (Path): the ``--results`` file.
        managed (dict[str, Path] | None): folders it must not be inside, by description; None: none.

    Returns:
        list[Problem]: one problem naming ``path`` (exit code 2 when raised as an ``OutputError``).
    """
    path = Path(path)
    problems = _placement(path, "--results", managed or {})
    if problems:
        return problems
    if path.is_symlink():
        return [_problem(path, "--results is a symbolic link: refusing to write through it; choose another path")]
    if path.exists() and not path.is_file():
        return [_problem(path, "--results is a folder, not a file: choose a file path")]
    if path.exists() and not is_our_results(path):
        return [
            _problem(
                path,
                "holds something nvflare-jobgen did not write (not a results list marked "
                f'"{RESULTS_MARK}": "{GENERATOR_ID}"); refusing to overwrite it: move it away or choose '
                "another --results",
            )
        ]
    return []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place, with the mode a
    plain ``open(path, "w")`` would give (``mkstemp`` makes its files 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_results(path: Path, entries: list[dict], engine: str) -> None:
    """Write the results list to ``path``, each entry marked as ours, atomically.

    Args:
        path (Path): the ``--results`` file (default ``build/results.json``, set by the CLI).
        entries (list[dict]): one JSON-ready mapping per job; :data:`RESULTS_MARK` is added first,
            then ``"engine"``.
        engine (str): what ran the jobs: ``simulate``, ``poc`` or ``submit`` (``view`` opens the
            project MLflow store, which only ``simulate`` fills, for ``simulate`` results only).

    Raises:
        OutputError: ``path`` holds something we did not write (checked again: it may have
            appeared while the jobs ran).
    """
    path = Path(path)
    problems = check_results(path)
    if problems:
        raise OutputError(problems)
    marked = [{RESULTS_MARK: GENERATOR_ID, "engine": engine, **entry} for entry in entries]
    _atomic_write(path, (json.dumps(marked, indent=2) + "\n").encode("utf-8"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _reports_manifest(folder: Path) -> dict | None:
    try:
        data = json.loads((Path(folder) / REPORTS_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and data.get("generator") == GENERATOR_ID and isinstance(data.get("files"), dict):
        return data
    return None


def _our_plot(path: Path, job: str) -> bool:
    """A PNG whose text chunks say it is our plot of ``job`` (``Title`` and ``Series``)."""
    try:
        from PIL import Image

        with Image.open(path) as image:
            text = dict(getattr(image, "text", {}) or {})
    except Exception:  # noqa: BLE001 - not an image PIL can read: not ours
        return False
    if text.get("Title") != job:
        return False
    try:
        return isinstance(json.loads(text.get("Series", "")), dict)
    except ValueError:
        return False


def check_reports(
    folder: Path, jobs: list[str], managed: dict[str, Path] | None = None, option: str = "--reports"
) -> list[Problem]:
    """Why ``simulate`` may not write ``<job>.png`` for these jobs into ``folder`` (empty: it may).

    Args:
        folder (Path): the ``--reports`` folder.
        jobs (list[str]): the jobs that may get a plot (those with a receiver).
        managed (dict[str, Path] | None): folders it must not be inside, by description; None: none.
        option (str): how messages name ``folder`` (``poc`` and ``submit`` put sweep plots into
            their ``--downloads``).

    Returns:
        list[Problem]: one per path that may not be written (the folder, the manifest, a plot).
    """
    folder = Path(folder)
    problems = _placement(folder / "x", option, managed or {})
    if problems or not jobs:
        return [_problem(folder, p.message) for p in problems]
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        return [_problem(folder, f"{option} is not a folder: choose a folder path")]
    if not folder.exists():
        return []
    manifest = _reports_manifest(folder)
    listed = (manifest or {}).get("files", {})
    marker = folder / REPORTS_MANIFEST
    if (marker.exists() or marker.is_symlink()) and (manifest is None or marker.is_symlink()):
        problems.append(_problem(marker, "is not a reports manifest nvflare-jobgen wrote; refusing to overwrite it"))
    for job in jobs:
        png = folder / f"{job}.png"
        if png.is_symlink() or (png.exists() and not png.is_file()):
            problems.append(_problem(png, "is not a plain file: refusing to write the plot over it"))
        elif png.exists():
            if listed.get(png.name) == _sha256(png):
                continue
            if png.name not in listed and _our_plot(png, job):
                continue
            why = "changed since nvflare-jobgen wrote it" if png.name in listed else "was not written by nvflare-jobgen"
            problems.append(_problem(png, f"{why}; refusing to overwrite it: move it away or choose another {option}"))
    return problems


def record_report(folder: Path, png: Path) -> None:
    """Add (or update) ``png``'s SHA-256 in the reports manifest of ``folder`` (written atomically).

    Args:
        folder (Path): the ``--reports`` folder (checked by :func:`check_reports`).
        png (Path): the plot just written into it.

    Raises:
        OSError: the plot or the manifest cannot be read or written.
    """
    folder = Path(folder)
    manifest = _reports_manifest(folder) or {"generator": GENERATOR_ID, "files": {}}
    manifest["files"][Path(png).name] = _sha256(png)
    manifest["files"] = dict(sorted(manifest["files"].items()))
    _atomic_write(folder / REPORTS_MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
