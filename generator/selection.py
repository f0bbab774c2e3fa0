"""Which jobs the names of ``--job NAME`` (``generate``, ``simulate``, ``poc``, ``submit``) and
``validate --show NAME`` select.

A NAME is, tried in this order:

1. a job's name (written by hand, or one a matrix expanded to): that job;
2. a matrix job's ``name`` as written in the jobs file (``tr-{receiver.type}-r{num_rounds}``, the
   name ``--set jobs.NAME...``, the manifest's ``matrix.job`` and the sweep table use): every job
   it expanded to;
3. a shell-style pattern (:func:`fnmatch.fnmatchcase`, ``*``, ``?``, ``[...]``), only when NAME
   holds ``*``, ``?`` or ``[``: every job whose name matches. A job's name holds letters, digits,
   ``_``, ``-`` and ``.`` only, a matrix job's also ``{`` and ``}`` (the ``name`` patterns of
   ``schema/jobs.schema.json``), so a pattern is never a name.

The jobs are given in file order and selected in that order, each once, whatever the order and
repeats of the names. The callers say where the matrix jobs come from: ``generate`` and ``validate``
from the loaded files (:attr:`generator.overrides.Layered.combinations`), ``simulate``, ``poc`` and
``submit`` from the output manifest (:attr:`generator.layout.ManifestEntry.matrix`).

Nothing here imports nvflare.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

#: The characters that make a NAME a pattern (:mod:`fnmatch`'s); none can be in a job's name.
PATTERN_CHARS = "*?["


#: Most names a message lists; beyond, it says how many more (a 2,500-job matrix made one 30 kB line).
LISTED_NAMES = 20


def listed(names: Sequence[str]) -> str:
    """``a, b, c`` for the first :data:`LISTED_NAMES` of ``names``, then ``and N more``."""
    shown = ", ".join(names[:LISTED_NAMES])
    return shown + (f" and {len(names) - LISTED_NAMES:,} more" if len(names) > LISTED_NAMES else "")


def is_pattern(name: str) -> bool:
    """Whether ``name`` (str) is a shell-style pattern: it holds ``*``, ``?`` or ``[``."""
    return any(c in name for c in PATTERN_CHARS)


@dataclass
class Selection:
    """What a list of names selects.

    Attributes:
        jobs (list[str]): the job names selected, in file order, each once.
        unknown (list[str]): the names that select nothing (no job, no matrix job, a pattern that
            matches no job), in the order given, each once.
    """

    jobs: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


def matrix_jobs(expanded_from: Iterable[tuple[str, str | None]]) -> dict[str, list[str]]:
    """Matrix job name as written -> the jobs it expanded to.

    Args:
        expanded_from (Iterable[tuple[str, str | None]]): (job name, the name of the matrix job it
            was expanded from, or None for a job written by hand), in file order.

    Returns:
        dict[str, list[str]]: in file order of each matrix job's first job; its jobs in file order.
    """
    found: dict[str, list[str]] = {}
    for job, matrix in expanded_from:
        if matrix is not None:
            found.setdefault(matrix, []).append(job)
    return found


def select_names(names: Iterable[str], jobs: Sequence[str], matrices: Mapping[str, Sequence[str]]) -> Selection:
    """The jobs ``names`` select (see the module's docstring for what a name may be).

    Args:
        names (Iterable[str]): the names given (``--job``, ``--show``), any order, repeats allowed.
        jobs (Sequence[str]): every job's name, in file order.
        matrices (Mapping[str, Sequence[str]]): matrix job name as written -> the jobs it expanded
            to (:func:`matrix_jobs`); a job not in ``jobs`` is ignored.

    Returns:
        Selection: the jobs selected (in the order of ``jobs``) and the names that select nothing.
        Raises nothing: the caller words the error for its option.
    """
    known = set(jobs)
    wanted: set[str] = set()
    unknown: list[str] = []
    for name in names:
        if name in known:
            found = {name}
        elif name in matrices:
            found = set(matrices[name]) & known
        elif is_pattern(name):
            found = {job for job in jobs if fnmatch.fnmatchcase(job, name)}
        else:
            found = set()
        if not found and name not in unknown:
            unknown.append(name)
        wanted |= found
    return Selection([job for job in jobs if job in wanted], unknown)


def nearest(name: str, jobs: Sequence[str], matrices: Mapping[str, Sequence[str]]) -> str | None:
    """The job or matrix job name closest to ``name`` (str) for a did-you-mean (difflib's default
    cutoff), or None: none is close, or ``name`` is a pattern (it selected nothing; no name is meant)."""
    if is_pattern(name):
        return None
    close = difflib.get_close_matches(name, [*jobs, *matrices], n=1)
    return close[0] if close else None


def not_found(name: str, what: str) -> str:
    """The start of the message for a ``name`` (str) that selects nothing: ``no {what} of that
    name``, or for a pattern ``no {what} matches that pattern``; ``what`` (str): ``job``,
    ``generated job``."""
    return f"no {what} matches that pattern" if is_pattern(name) else f"no {what} of that name"
