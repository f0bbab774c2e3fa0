"""Paths that survive NVFlare's simulator command lines: links from a safe folder when needed.

NVFlare 2.9's simulator starts each client worker with a command built by joining strings with
spaces and splitting them again with ``shlex.split(command, True)`` (comments on;
``nvflare/private/fed/app/simulator/simulator_runner.py:732-767``, ``do_one_task``). The command
holds ``sys.executable`` and the workspace (``-o <workspace>/site-1``, ``--simulator_root``, the
logging config in ``<workspace>/local/``). A path with whitespace is cut into several words, a
quote or a backslash is eaten, and a ``#`` starts a comment that drops the rest of the line, so
the worker never starts and the simulator gives up after 60 s ("Failed to create connection to
the child process"). The workspace also reaches ``PYTHONPATH`` (the app's ``custom/`` folder,
``nvflare/utils/job_launcher_utils.py:486``, ``add_custom_dir_to_path``) and the Python
environment's ``bin/`` reaches ``PATH`` (how a sub-process job's ``python3`` is found): both are
lists split at ``os.pathsep`` (``:``), so a ``:`` breaks those. And an MLflow job's default store
is ``sqlite:///<workspace>/server/simulate_job/mlflow.db``, a URI in which ``?`` starts a query
and ``%`` an escape.

NVFlare makes the workspace absolute from ``os.getcwd()`` (``simulator_runner.py:123-129``), which
is the real path, so running from a relative working directory cannot hide a bad path. What
works: symbolic links in a fresh temporary folder whose own path is safe, and every path handed
to NVFlare through them, unresolved (NVFlare never resolves the workspace path). A Python
environment is reached through a link to its prefix: Python finds a virtual environment from the
path it was started by (``pyvenv.cfg`` next to or above the executable, PEP 405), so
``<links>/py/bin/python`` runs the same environment and reports that path as ``sys.executable``.

Links are made only when a path needs them; a run under a safe path is started exactly as
before. :func:`check_paths` says, before any job runs, when no safe form exists.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import JobgenError, Problem
from .layout import TMP_DIR
from .runner import deferred_signals

#: Where the link folder may go, first safe and writable one wins.
LINK_PARENTS = (None, "/tmp", "/var/tmp", "/dev/shm")  # None: tempfile.gettempdir() (TMPDIR, ...)
LINK_PREFIX = "jobgen-run-"
#: Characters a ``sqlite:///<path>`` URI does not keep as they are (SQLAlchemy's ``make_url``).
URL_SPECIAL = "?%"


def _one_word(text: str) -> bool:
    try:
        return shlex.split(text, comments=True) == [text]
    except ValueError:  # an unbalanced quote, a trailing backslash
        return False


def path_problem(path: str | Path) -> str | None:
    """Why NVFlare's simulator would mangle ``path`` in a command line or a path list, or None.

    Args:
        path (str | Path): an absolute path.

    Returns:
        str | None: e.g. ``"contains ' ', where NVFlare's simulator splits ..."``; None when
        ``shlex.split(path, comments=True) == [path]`` and the path holds no ``os.pathsep``.
    """
    text = str(path)
    if os.pathsep in text:
        return (
            f"contains {os.pathsep!r}, which separates the entries of PYTHONPATH and PATH that NVFlare "
            "builds from it (nvflare/utils/job_launcher_utils.py, add_custom_dir_to_path)"
        )
    url_char = next((c for c in URL_SPECIAL if c in text), None)
    if url_char:
        return (
            f"contains {url_char!r}, which MLflowReceiver's default store URI sqlite:///<workspace>/... reads as "
            "the start of a query or an escape (nvflare/app_opt/tracking/mlflow/mlflow_receiver.py, _get_tracking_uri)"
        )
    if _one_word(text):
        return None
    bad = next((c for c in text if not _one_word(f"a{c}a")), None)
    return (
        f"contains {bad!r}, which NVFlare's simulator splits or drops when it starts a client worker "
        "(simulator_runner.py, do_one_task: shlex.split of a command joined with spaces)"
    )


@dataclass
class RunPaths:
    """The paths to start one simulator run with.

    Attributes:
        workspace (str): the ``-w`` argument (the job's workspace, or the same through a link).
        python (str): the interpreter that starts ``nvflare simulator`` (its ``sys.executable``).
        bin_dir (str): put first on ``PATH``: where a sub-process job's ``python3`` is found.
        cwd (str | None): the working directory (the link folder; None: unchanged).
        links (str | None): the link folder, removed when the run is over (None: no link).
    """

    workspace: str
    python: str
    bin_dir: str
    cwd: str | None = None
    links: str | None = None


def _python_parts(python: str, prefix: str) -> tuple[str, str] | None:
    """``(prefix, executable relative to it)`` when the executable lies inside its prefix, else None."""
    exe, root = Path(python), Path(prefix)
    if not exe.is_relative_to(root):
        return None
    return str(root), str(exe.relative_to(root))


def link_parent(shortest: bool = False) -> str | None:
    """A folder of :data:`LINK_PARENTS` whose path (and real path) is safe and writable, or None.

    Args:
        shortest (bool): the one with the shortest path (for a link that ends up in a Unix socket's
            path, which may hold at most 107 bytes); default: the first in :data:`LINK_PARENTS` order.

    Returns:
        str | None: where a folder of links may be made (``tempfile.mkdtemp(prefix=LINK_PREFIX, dir=...)``).
    """
    usable = []
    for candidate in LINK_PARENTS:
        folder = candidate or tempfile.gettempdir()
        if (
            os.path.isdir(folder)
            and os.access(folder, os.W_OK | os.X_OK)
            and path_problem(folder) is None
            and path_problem(os.path.realpath(folder)) is None
        ):
            if not shortest:
                return folder
            usable.append(folder)
    return min(usable, key=len, default=None)


def check_paths(workspace_root: str | Path, python: str | None = None, prefix: str | None = None) -> list[Problem]:
    """Problems that no link can solve, for running simulations under ``workspace_root``.

    Args:
        workspace_root (str | Path): the folder of the jobs' workspaces (made absolute here).
        python (str | None): the interpreter (default ``sys.executable``).
        prefix (str | None): its environment's prefix (default ``sys.prefix``).

    Returns:
        list[Problem]: empty when every run can start (directly or through links); else one
        problem per path, naming the path and why, for the CLI to print (exit code 2).
    """
    python, prefix = python or sys.executable, prefix or sys.prefix
    root = os.path.abspath(workspace_root)
    problems = []
    needs_links = path_problem(root) is not None or path_problem(python) is not None
    if needs_links and link_parent() is None:
        why = path_problem(root) or path_problem(python)
        candidates = ", ".join(c or "$TMPDIR" for c in LINK_PARENTS)
        problems.append(
            Problem(
                root if path_problem(root) else python,
                0,
                0,
                "",
                f"{why}; no folder to link it from ({candidates}) is writable with a safe path: "
                "use a --workspace and a Python environment without such characters",
            )
        )
    if path_problem(python):
        parts = _python_parts(python, prefix)
        if parts is None or path_problem(parts[1]):
            problems.append(
                Problem(
                    python,
                    0,
                    0,
                    "",
                    f"this Python {path_problem(python)}, and it is not inside its environment's prefix "
                    f"{prefix} (so it cannot be reached through a link to it): "
                    "run the generator from a Python environment at a path without such characters",
                )
            )
    return problems


def remove_links(folder: str) -> None:
    """Remove a folder of links: its links (never what they point to), then the folder.

    Args:
        folder (str): a folder holding only symbolic links.

    Raises:
        OSError: the folder holds something that is not a link, or cannot be removed (one that is
            gone already, with its links, is not an error).
    """
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(folder)


def new_link_folder(parent: str | None) -> str:
    """Make an empty folder for links in ``parent`` (see :func:`link_parent`), named
    ``jobgen-run-<this process's PID>-<random>`` so that :func:`remove_stale_links` can tell one
    whose run was killed before its clean-up."""
    return tempfile.mkdtemp(prefix=f"{LINK_PREFIX}{os.getpid()}-", dir=parent)


def _maker_gone(name: str) -> bool:
    """Whether the process that made the link folder ``name`` (:func:`new_link_folder`) has ended;
    False when the name does not say which it was, or it runs (or it is another user's)."""
    pid = name[len(LINK_PREFIX) :].split("-", 1)[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # another user's process
        return False
    return False


def remove_stale_links(workspace: str | Path) -> list[str]:
    """Remove the link folders (``jobgen-run-*`` in :data:`LINK_PARENTS`) that a run in ``workspace``
    left behind because it was killed (SIGKILL) before its clean-up: those holding only links, one
    of which is a link of a run in ``workspace`` (compared as real paths: to the workspaces folder,
    :func:`run_paths`' ``w``, or to a run's TMPDIR ``<workspace>/_tmp/<job>``, :func:`generator.
    simulate.run_tmp`'s ``t``; never a link into a workspaces folder nested deeper, which another
    run may hold). The caller holds the
    workspace's lock (:func:`generator.outputs.one_run_in`), so no run in progress uses them; only
    the links and their folder are removed, never what they point to. A folder of links whose maker
    has ended (:func:`_maker_gone`) goes too, whatever it points to: e.g. the link to this Python
    that a ``poc`` run killed with SIGKILL left (a trial found one; ``poc`` links no workspace).

    Returns:
        list[str]: the folders removed.
    """
    root = os.path.realpath(workspace)
    tmp = os.path.join(root, TMP_DIR)

    def of_a_run_here(target: str) -> bool:
        real = os.path.realpath(target)
        return real == root or os.path.dirname(real) == tmp

    removed = []
    for parent in dict.fromkeys(candidate or tempfile.gettempdir() for candidate in LINK_PARENTS):
        try:
            folders = [e.path for e in os.scandir(parent) if e.name.startswith(LINK_PREFIX)]
        except OSError:
            continue
        for folder in folders:
            try:
                links = [entry.path for entry in os.scandir(folder)]
                targets = [os.readlink(link) for link in links]  # OSError: not a link
                if _maker_gone(os.path.basename(folder)) or any(
                    of_a_run_here(os.path.join(folder, t)) for t in targets
                ):
                    remove_links(folder)
                    removed.append(folder)
            except OSError:  # not ours to judge (not a folder of links, another user's)
                continue
    return removed


@contextlib.contextmanager
def run_paths(workspace: str | Path, python: str | None = None, prefix: str | None = None) -> Iterator[RunPaths]:
    """The paths to start one simulator run with, through links when a path needs them.

    ``workspace`` (the job's workspace; its folder must exist) is reached as
    ``<links>/w/<name>`` with ``w`` a link to its parent: NVFlare deletes and re-creates the
    workspace itself at start (``shutil.rmtree``, which refuses a symbolic link), so the link
    must be above it. The Python environment is reached as ``<links>/py/<executable>`` with
    ``py`` a link to ``prefix``. The link folder is removed when the block ends (links only).

    Args:
        workspace (str | Path): the job's simulator workspace.
        python (str | None): the interpreter (default ``sys.executable``).
        prefix (str | None): its environment's prefix (default ``sys.prefix``).

    Yields:
        RunPaths: what to start the run with.

    Raises:
        JobgenError: a path needs a link and none can be made (see :func:`check_paths`).
    """
    python, prefix = python or sys.executable, prefix or sys.prefix
    workspace = os.path.abspath(workspace)
    problems = check_paths(os.path.dirname(workspace), python, prefix)
    if problems:
        raise JobgenError(problems)
    bad_ws, bad_py = path_problem(workspace), path_problem(python)
    if not bad_ws and not bad_py:
        yield RunPaths(workspace=workspace, python=python, bin_dir=os.path.dirname(python))
        return
    links = new_link_folder(link_parent())
    try:
        paths = RunPaths(workspace=workspace, python=python, bin_dir=os.path.dirname(python), cwd=links, links=links)
        if bad_ws:
            os.symlink(os.path.dirname(workspace), os.path.join(links, "w"))
            paths.workspace = os.path.join(links, "w", os.path.basename(workspace))
        if bad_py:
            env_prefix, relative = _python_parts(python, prefix)
            os.symlink(env_prefix, os.path.join(links, "py"))
            paths.python = os.path.join(links, "py", relative)
            paths.bin_dir = os.path.dirname(paths.python)
        yield paths
    finally:
        with deferred_signals():  # a stop signal now must not leave the links behind
            remove_links(links)
