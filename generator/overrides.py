"""Layers stage: merge several ``--jobs`` files and ``--set`` overrides, then expand matrices.

Takes the files (``--jobs``, in order) and the ``--set PATH=VALUE`` overrides; gives one
:class:`~generator.load.Document` that the validate stage checks as if it were one hand-written file.
Precedence, as in Helm (``-f`` values files, right-most wins, then ``--set``): first file < later
files < ``--set`` (in order) < the schema's defaults. ``defaults`` merge key by key (nested mappings
too, lists replaced, a ``receiver`` of another ``type`` replaced: :func:`generator.spec.merge`);
``jobs`` merge by ``name`` (same name: keys merged the same way; new name: appended); any other
top-level key (``max_jobs``) is replaced. Then each job with a ``matrix`` is expanded
(:mod:`generator.matrix`), in place, and the expanded total is capped (``max_jobs``).

Every problem stays located where its value was written: the merged document keeps, for each key
path a later file or a ``--set`` wrote, where it came from, and for each expanded job, which
matrix value set which setting. A problem in a ``--set`` value prints as ``--set #N: PATH: message``.
With one file, no ``--set`` and no ``matrix``, the loaded document is returned as it is.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import os
import re
from pathlib import Path

from .components import EXTRA_ARGS_KEYS
from .errors import Problem, SpecError
from .load import NUMBER_LIKE, YAML11_BOOL_WORDS, Document, format_path, load, load_text
from .matrix import DEFAULT_MAX_JOBS, combination_count, expand, is_matrix_job, setting_problem, unmatched_excludes
from .matrix import RESERVED as MATRIX_RESERVED  # include, exclude
from .selection import PATTERN_CHARS, listed
from .spec import TYPED_MAPPINGS, _copy


class SetValue(Document):
    """The value of one ``--set PATH=VALUE``, read as YAML; its problems print as ``--set #N: PATH...: message``.

    Args:
        number (int): N, counted from 1 in command-line order.
        path (str): PATH as given.
        text (str): VALUE as given.
    """

    def __init__(self, number: int, path: str, text: str, root: Path):
        super().__init__(f"--set #{number}", root, text=text)
        self.set_path = path

    @property
    def plain_scalars(self) -> dict:
        """Empty: a ``--set`` value is read with YAML 1.2's core types (:func:`_core_schema`), so the
        validate stage's hints about YAML 1.1 readings do not apply to it."""
        return {}

    def problem(self, path: tuple, message: str, at_key: bool = False) -> Problem:
        """A problem in this value: no line and column, the ``--set`` PATH followed by ``path``."""
        rest = format_path(tuple(path))
        shown = self.set_path + ("" if not rest else rest if rest.startswith("[") else "." + rest)
        return Problem(self.file, 0, 0, shown, message)


def _located(sources: dict, path: tuple) -> tuple[Document, tuple]:
    """The source document and key path of ``path``: the longest recorded prefix wins."""
    for n in range(len(path), -1, -1):
        found = sources.get(path[:n])
        if found is not None:
            return found[0], found[1] + path[n:]
    raise KeyError(path)  # () is always recorded


class Layered(Document):
    """Several files, ``--set`` values and expanded matrices, read as one ``jobs.yaml``.

    Problems are located through :meth:`origin`; each one located inside a job also records the job's
    index in :attr:`owners`, so the validate stage knows which expanded job it is about.

    Attributes:
        sources (dict[tuple, tuple[Document, tuple]]): key path in the merged data (before matrix
            expansion) -> (document, key path there) of what wrote it; ``()`` is the first file.
        expanded (list[tuple[int, Combination | None]]): per job of :attr:`data`: its index in the
            merged ``jobs`` list and the combination that made it (None: not from a matrix).
        owners (dict[Problem, set[int]]): problem -> indexes of the jobs (in :attr:`data`) it was found in.
        combinations (dict[str, tuple[str, dict]]): expanded job name -> (the matrix job's ``name``
            as written, the combination's values): what a sweep comparison groups by.
    """

    def __init__(self, first: Document):
        super().__init__(first.file, first.root, data=first.data, text=first.text)
        self.sources: dict = {(): (first, ())}
        self.expanded: list = []
        self.owners: dict = {}
        self.combinations: dict = {}

    def origin(self, path: tuple) -> tuple[Document, tuple, str]:
        """(document, key path there, note for the message) of key path ``path`` of :attr:`data`."""
        path = tuple(path)
        note = ""
        if len(path) >= 2 and path[0] == "jobs" and isinstance(path[1], int) and path[1] < len(self.expanded):
            merged, combo = self.expanded[path[1]]
            rest = path[2:]
            if combo is not None:
                for n in range(len(rest), 0, -1):
                    if rest[:n] in combo.sources:
                        rest = combo.sources[rest[:n]] + rest[n:]
                        if rest[0] == "matrix":
                            note = f" (combination {combo.label})"
                        break
            path = ("jobs", merged) + rest
        doc, where = _located(self.sources, path)
        return doc, where, note

    def where(self, path: tuple, at_key: bool = False):
        doc, where, _ = self.origin(path)
        return doc.where(where, at_key)

    def problem(self, path: tuple, message: str, at_key: bool = False) -> Problem:
        """A :class:`Problem` located where the value at ``path`` was written (file, line, column)."""
        doc, where, note = self.origin(path)
        problem = doc.problem(where, message + note, at_key)
        if len(path) >= 2 and path[0] == "jobs" and isinstance(path[1], int):
            self.owners.setdefault(problem, set()).add(path[1])
        return problem

    @property
    def plain_scalars(self):
        """Key path -> source text of an unquoted scalar, looked up in the document that wrote it."""
        return _PlainScalars(self)

    def describe_job(self, index: int) -> str:
        """The entry that wrote job ``index``, named as it is written there (:meth:`Document.shown_path`):
        ``jobs[2] (a)`` (in the first file), ``lab.yaml jobs[0] (a)``, or ``jobs[0] (np-{r}) with r=1``."""
        doc, where, _ = self.origin(("jobs", index))
        combo = self.expanded[index][1] if index < len(self.expanded) else None
        text = doc.shown_path(where) if doc.file == self.file else f"{doc.file} {doc.shown_path(where)}"
        return text + (f" with {combo.label}" if combo else "")


class _PlainScalars:
    def __init__(self, doc: Layered):
        self.doc = doc

    def get(self, path, default=None):
        source, where, _ = self.doc.origin(path)
        return source.plain_scalars.get(where, default)


def _record(sources: dict, path: tuple, doc: Document, where: tuple) -> None:
    """Note that ``doc`` at ``where`` wrote ``path``; what it replaced below ``path`` is forgotten.

    ``sources`` also keeps, under the key ``None``, each recorded path's first two keys -> the
    recorded paths below them, so that forgetting costs one job's or one default's entries, not all.
    """
    heads = sources.setdefault(None, {})
    candidates = heads.get(path[:2], ()) if len(path) >= 2 else [k for k in sources if k is not None]
    for key in [k for k in candidates if len(k) > len(path) and k[: len(path)] == path]:
        sources.pop(key, None)
        heads.get(key[:2], set()).discard(key)
    sources[path] = (doc, where)
    heads.setdefault(path[:2], set()).add(path)


def _merge_into(base: dict, over: dict, path: tuple, doc: Document, where: tuple, sources: dict) -> None:
    """Merge ``over`` (from ``doc`` at ``where``) into ``base`` in place, as :func:`generator.spec.merge` does."""
    for key, value in over.items():
        mergeable = isinstance(value, dict) and isinstance(base.get(key), dict)
        if mergeable and key in TYPED_MAPPINGS:
            mergeable = value.get("type", base[key].get("type")) == base[key].get("type")
        if mergeable:
            base[key] = dict(base[key])
            _merge_into(base[key], value, path + (key,), doc, where + (key,), sources)
        else:
            base[key] = _copy(value)
            _record(sources, path + (key,), doc, where + (key,))


def _layer_problems(doc: Document, first: bool) -> list[Problem]:
    """A file that cannot be merged: not a mapping, ``defaults`` not a mapping, ``jobs`` not a list of
    mappings with a ``name`` (a later file's jobs merge by name)."""
    data = doc.data
    if not isinstance(data, dict):
        return [doc.problem((), "expected a mapping with `defaults:` and/or `jobs:` to merge")]
    problems = []
    if "defaults" in data and not isinstance(data["defaults"], dict):
        problems.append(doc.problem(("defaults",), "expected a mapping of job settings"))
    jobs = data.get("jobs", [])
    if not isinstance(jobs, list):
        return problems + [doc.problem(("jobs",), "expected a list of jobs")]
    seen: dict[str, int] = {}
    for i, entry in enumerate(jobs):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            problems.append(doc.problem(("jobs", i), "expected a mapping with a `name` (jobs merge by name)"))
        elif entry["name"] in seen and not first:  # the first file's are validate's duplicate job names
            # a trial's later file named an earlier file's job twice: both merged in, the last one won
            line = doc.where(("jobs", seen[entry["name"]], "name")).line
            problems.append(
                doc.problem(
                    ("jobs", i, "name"),
                    f"duplicate job name {entry['name']!r} (first at line {line} of this file): a later file's "
                    "jobs merge by name into the jobs before, so give each job's settings in one entry",
                )
            )
        else:
            seen[entry["name"]] = i
    return problems if not first or problems else []


def _merge_layer(merged: Layered, doc: Document) -> None:
    data = merged.data
    for key, value in doc.data.items():
        if key == "jobs":
            index = {e["name"]: i for i, e in enumerate(data.setdefault("jobs", []))}
            for n, entry in enumerate(value):
                i = index.get(entry["name"])
                if i is None:
                    close = difflib.get_close_matches(entry["name"], list(index), n=1, cutoff=0.85)
                    if close:  # a later file's job meant to merge into an earlier one, mistyped
                        merged.warnings.append(
                            doc.problem(
                                ("jobs", n, "name"),
                                f"warning: no earlier file has a job {entry['name']!r}, so this is a new job; "
                                f"did you mean {close[0]!r} (jobs merge by name)?",
                            )
                        )
                    data["jobs"].append(_copy(entry))
                    _record(merged.sources, ("jobs", len(data["jobs"]) - 1), doc, ("jobs", n))
                else:
                    data["jobs"][i] = dict(data["jobs"][i])
                    _merge_into(data["jobs"][i], entry, ("jobs", i), doc, ("jobs", n), merged.sources)
        elif key == "defaults" and isinstance(data.get("defaults"), dict):
            data["defaults"] = dict(data["defaults"])
            _merge_into(data["defaults"], value, ("defaults",), doc, ("defaults",), merged.sources)
        else:
            data[key] = _copy(value)
            _record(merged.sources, (key,), doc, (key,))


def _job_names(data: dict) -> list[str]:
    return [e["name"] for e in data.get("jobs") or [] if isinstance(e, dict) and isinstance(e.get("name"), str)]


def set_target(path: str, names) -> str | None:
    """The job a ``--set`` ``path`` (str, the part before ``=``) names: of ``names`` (the job names
    as written, an iterable of str), the longest that ``path`` continues after ``jobs.`` with a dot
    (a name may hold dots: ``jobs.exp-lr-0.1.num_rounds`` names ``exp-lr-0.1`` when that is a job).
    None: ``path`` names no such job, or does not start with ``jobs.``."""
    if not path.startswith("jobs."):
        return None
    rest = path[len("jobs.") :]
    return max((n for n in names if rest.startswith(n + ".")), key=len, default=None)


def set_pattern(path: str, names) -> tuple[str, list[str], str] | None:
    """A ``--set jobs.PATTERN.KEY...`` ``path`` (str) whose job part is a shell pattern (``*``, ``?``,
    ``[...]``: :func:`generator.selection.is_pattern`; a job's name holds none of them): ``(pattern,
    the names of ``names`` it matches in their order, the key path after it)``. The pattern ends at
    the first dot after its last pattern character (``jobs.exp-*.num_rounds``, ``jobs.*.server.x``).
    None: not such a path. A trial had to write one ``--set jobs.NAME.num_rounds=1`` per job."""
    if not path.startswith("jobs."):
        return None
    rest = path[len("jobs.") :]
    last = max((rest.rfind(c) for c in PATTERN_CHARS), default=-1)
    if last < 0:
        return None
    end = rest.find(".", last)
    if end < 0:
        return None
    pattern, tail = rest[:end], rest[end + 1 :]
    return pattern, [n for n in names if fnmatch.fnmatchcase(n, pattern)], tail


def _apply_set(merged: Layered, number: int, item: str, schema: dict) -> list[Problem]:
    """Apply one ``--set PATH=VALUE`` to ``merged.data``; its problems, or []."""
    path, eq, text = item.partition("=")

    def fail(message: str) -> list[Problem]:
        return [Problem(f"--set #{number}", 0, 0, path, message)]

    if not eq:
        split = (  # a trial's SET="jobs.a.expect={model_mean: 9.375}" reached the CLI as two --set
            f" (the rest of --set #{number - 1}, split at a space? make's SET= makes one --set of each word, "
            "and a shell splits an unquoted one: give such a value as python -m generator ... --set 'PATH=VALUE')"
            if number > 1
            else ""
        )
        return fail(f"expected PATH=VALUE, e.g. defaults.num_rounds=3 or jobs.NAME.num_rounds=3{split}")
    data = merged.data
    if not isinstance(data, dict) or not isinstance(data.get("jobs", []), list):
        return []  # the schema reports the file's shape; the override has nowhere to go
    if path == "max_jobs":  # the one top-level setting besides defaults and jobs
        keys, target = ["max_jobs"], ()
        node = schema
    elif path.startswith("defaults."):
        keys, target = path.split(".")[1:], ("defaults",)
        node = schema["$defs"]["job_settings"]
    elif path.startswith("jobs."):
        names = _job_names(data)
        rest = path[len("jobs.") :]
        found = set_target(path, names)
        pattern = set_pattern(path, names) if found is None else None
        if pattern:  # every job the pattern matches, each as its own --set of this number
            glob, matched, tail = pattern
            if not matched:
                return fail(f"{glob!r} matches no job (jobs: {listed(names)})")
            keys = tail.split(".")
            if all(keys) and keys[0] not in ("matrix", "name"):  # a key problem once, not once per job
                problem = setting_problem(schema, keys, None)
                if problem:
                    return fail(problem)
            problems = []
            for name in matched:
                problems += _apply_set(merged, number, f"jobs.{name}.{tail}={text}", schema)
            return problems
        if found is None:
            if "." not in rest:
                return fail("expected jobs.NAME.KEY")
            parts = rest.split(".")
            guesses = [".".join(parts[:k]) for k in range(1, len(parts))]  # a name may hold dots
            scored = [
                (difflib.SequenceMatcher(None, g, n).ratio(), g, n)
                for g in guesses
                for n in difflib.get_close_matches(g, names, n=1)
            ]
            matrix_jobs = [e["name"] for e in data["jobs"] if is_matrix_job(e) and isinstance(e.get("name"), str)]
            expanded = (
                f"; a job a matrix expands to is set through its matrix job, by the name as written "
                f"(matrix jobs: {', '.join(matrix_jobs)}), for all its jobs, or one of them with the matrix's include"
                if matrix_jobs
                else ""
            )
            if scored:
                ratio, guess, close = max(scored)
                # a near typo of a plain job's name is not about matrices (a trial's `rings`, for
                # the plain job `ring`, was told how to set a matrix's jobs)
                typo = ratio >= 0.85 and close not in matrix_jobs
                return fail(f"no job named {guess!r}; did you mean {close!r}?{'' if typo else expanded}")
            # a name may hold dots: each way to read PATH is named (a trial's exp-lr-0.1 was
            # reported as 'exp-lr-0')
            readings = " or ".join(repr(g) for g in guesses[:3]) + (" or ..." if len(guesses) > 3 else "")
            return fail(f"no job named {readings} (jobs: {listed(names)}){expanded}")
        keys, target = rest[len(found) + 1 :].split("."), ("jobs", names.index(found))
        node = None
    else:
        return fail("PATH must start with defaults. or jobs.NAME. (a job by its name), or be max_jobs")
    if not all(keys):
        return fail("empty key in PATH")
    if len(keys) > 2 and keys[0] == "matrix" and keys[1] not in MATRIX_RESERVED:
        # a matrix key is a dotted setting path itself: matrix.model.args.hidden=[2, 3] sets the
        # key "model.args.hidden" (a trial's was split at every dot: "expected a list, got a mapping")
        keys = ["matrix", ".".join(keys[1:])]
    if keys != ["matrix"] and keys[0] != "matrix" and keys != ["name"]:
        problem = setting_problem(schema, keys, node)
        if problem:
            return fail(problem)
        swept, how = _swept_by(data, target, keys)
        if swept:  # the matrix sets it again: the value would go nowhere, without a word
            dotted = ".".join(keys)
            message = (
                f"warning: the matrix of job {swept!r} sets {dotted} in every combination, over this value: "
                f"set that axis instead (jobs.{swept}.matrix.{dotted}=[...])"
                if how == "axis"
                else f"warning: include entries of the matrix of job {swept!r} set {dotted} in the combinations "
                "they make or extend, over this value: change it there (in the file, or replace "
                f"jobs.{swept}.matrix.include)"
            )
            merged.warnings.append(Problem(f"--set #{number}", 0, 0, path, message))
    value_doc = SetValue(number, path, text, merged.root)
    if text.strip():
        try:
            value_doc = load_text(value_doc)
        except SpecError as e:
            return [Problem(f"--set #{number}", 0, 0, path, p.message) for p in e.problems]
        if value_doc.problems:
            return [value_doc.problem(_path_back(p.path), p.message) for p in value_doc.problems]
        value = _core_schema(value_doc.data, Document.plain_scalars.fget(value_doc), ())
    else:
        value = None
    if target == ("defaults",):
        if "defaults" not in data:
            data["defaults"] = {}
        elif not isinstance(data["defaults"], dict):
            return []  # the schema reports the file's `defaults`
    node_data = data
    for key in target:
        node_data = node_data[key]
    at = target
    for key in keys[:-1]:
        inner = node_data.get(key)
        node_data[key] = dict(inner) if isinstance(inner, dict) else {}
        node_data, at = node_data[key], at + (key,)
        if not isinstance(inner, dict):  # made by this --set: a problem of the new mapping is its
            _record(merged.sources, at, value_doc, ())  # (a receiver without `type`), not the file's
    if keys[0] in EXTRA_ARGS_KEYS and len(keys) > 1:  # free-form: no schema type says how to read it
        said = None
        if value is None:
            said = "an empty value is null: the class gets None (write the value)"
        elif isinstance(value, str) and YAML11_BOOL_WORDS.match(value):
            said = f"{value!r} is text here (a --set value is read as YAML 1.2): write true or false for a boolean"
        if said:  # a trial's launch_once=no reached NVFlare as the text "no", which Python reads as true
            merged.warnings.append(Problem(f"--set #{number}", 0, 0, path, f"warning: {said}"))
    node_data[keys[-1]] = _copy(value)
    _record(merged.sources, at + (keys[-1],), value_doc, ())
    return []


def _defaults_jobs_keep(merged: Layered, files: list[str]) -> list[Problem]:
    """Warnings for each ``defaults`` value a later file or a ``--set`` gave that a job keeps its own
    value over, a value an earlier file gave it (a job's key wins over ``defaults``; a matrix or
    ``include`` key of the job too), at that ``defaults`` value. A trial's ``--set
    defaults.num_rounds=1`` reached none of its jobs, each of which set its own ``num_rounds``, and
    generate said "up to date"; the README's ``lab.yaml`` ("everything ... for 2 rounds") left the
    PyTorch jobs at their own 3. ``files``: the ``--jobs`` files in order (the first one's defaults
    are meant to be overridden by its jobs; a job's value from the same or a later layer is meant)."""
    data = merged.data
    defaults, jobs = data.get("defaults"), data.get("jobs")
    if not isinstance(defaults, dict) or not isinstance(jobs, list):
        return []

    def rank(problem: Problem) -> int:  # the files in order, then --set #1, #2, ...
        if problem.file in files:
            return files.index(problem.file)
        number = problem.file.removeprefix("--set #")
        return len(files) + int(number) if number.isdigit() else len(files)

    found = []
    named = [(i, e) for i, e in enumerate(jobs) if isinstance(e, dict) and isinstance(e.get("name"), str)]
    for keys in _leaf_paths(defaults):
        at = _merged_problem(merged, ("defaults", *keys), "")
        if rank(at) == 0:
            continue
        value = _value_at(defaults, keys)
        keeping = [
            e["name"]
            for i, e in named
            if (where := _sets_itself(e, keys))
            and not (where == keys and _value_at(e, keys) == value)  # the same value: nothing lost
            and rank(_merged_problem(merged, ("jobs", i, *where), "")) < rank(at)
        ]
        if not keeping:
            continue
        dotted = ".".join(keys)
        if len(keeping) == len(named):  # each job's value was written before this default
            message = (
                f"warning: reaches no job: every job sets its own {dotted} ({listed(keeping)}), which wins over "
                f"defaults; set it per job (--set 'jobs.*.{dotted}=...' sets every job's) or take it out of the jobs"
            )
        else:
            sets = "sets its" if len(keeping) == 1 else "set their"
            message = (
                f"warning: does not reach {listed(keeping)}, which {sets} own {dotted} (a job's own value "
                f"wins over defaults): set it there too (jobs.NAME.{dotted})"
            )
        found.append(dataclasses.replace(at, message=message))
    return found


def _value_at(node: dict, keys: tuple):
    """The value at key path ``keys`` of ``node`` (every key present)."""
    for key in keys:
        node = node[key]
    return node


def _leaf_paths(node: dict, path: tuple = ()) -> list[tuple]:
    """The key paths of ``node``'s values that are not mappings (a mapping's keys, recursively)."""
    out = []
    for key, value in node.items():
        if isinstance(value, dict) and value:
            out += _leaf_paths(value, (*path, key))
        else:
            out.append((*path, key))
    return out


def _sets_itself(entry: dict, keys: tuple) -> tuple | None:
    """Where job ``entry`` gives the setting ``keys`` itself (a key path in the entry: ``keys``, or
    ``("matrix",)`` for a key of its matrix or of one of its matrix's ``include`` entries, a dotted
    matrix key or a mapping above it); None: it does not."""
    node = entry
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            break
        node = node[key]
    else:
        return keys
    return ("matrix",) if _matrix_sets(entry.get("matrix"), keys) else None


def _swept_by(data: dict, target: tuple, keys: list[str]) -> tuple[str | None, str]:
    """``(name, how)`` of the matrix job whose matrix sets the setting ``keys`` that a ``--set`` of
    ``target`` (``("jobs", i)``) writes: ``how`` is ``"axis"`` (every combination sets it) or
    ``"include"`` (an include entry does); ``(None, "")`` for another target or no such key."""
    if len(target) != 2 or target[0] != "jobs":
        return None, ""
    entry = data["jobs"][target[1]]
    how = _matrix_sets(entry.get("matrix") if isinstance(entry, dict) else None, keys)
    return (entry.get("name"), how) if how else (None, "")


def _matrix_sets(matrix, keys) -> str:
    """How a job's ``matrix`` sets the setting ``keys`` (a key path): ``"axis"`` (a matrix key is
    it, or a mapping above it), ``"include"`` (a key of an include entry is), or ``""`` (neither,
    or no matrix)."""
    if not isinstance(matrix, dict):
        return ""
    dotted = ".".join(keys)

    def sets(written) -> bool:
        return any(k == dotted or dotted.startswith(k + ".") for k in written if isinstance(k, str))

    if sets(k for k in matrix if k not in MATRIX_RESERVED):
        return "axis"
    include = matrix.get("include")
    if isinstance(include, list) and any(isinstance(item, dict) and sets(item) for item in include):
        return "include"
    return ""


def _core_schema(value, plain: dict, path: tuple):
    """``value`` with its plain scalars read as YAML 1.2's core schema does where YAML 1.1 (PyYAML)
    differs: ``yes``/``no``/``on``/``off``/``y``/``n`` are strings, ``1e-3`` is a number."""
    if isinstance(value, dict):
        return {k: _core_schema(v, plain, path + (k,)) for k, v in value.items()}
    if isinstance(value, list):
        return [_core_schema(v, plain, path + (i,)) for i, v in enumerate(value)]
    text = plain.get(path)
    if text is None:
        return value
    if YAML11_BOOL_WORDS.match(text):
        return text
    if NUMBER_LIKE.match(text) and "_" not in text:
        return float(text)
    return value


def _path_back(formatted: str) -> tuple:
    """Key path of a problem of a ``--set`` value (``a.b[0]``), for its message."""
    return tuple(int(i) if i else k for k, i in re.findall(r"([^.\[\]]+)|\[(\d+)\]", formatted))


def _merged_problem(merged: Layered, path: tuple, message: str, at_key: bool = False) -> Problem:
    """A problem at key path ``path`` of the merged data before expansion (``jobs`` indexes as merged)."""
    doc, where = _located(merged.sources, path)
    return doc.problem(where, message, at_key)


def _place(problem: Problem) -> str:
    """Where ``problem`` is, for a message: ``FILE:LINE``, or ``FILE`` alone (``--set #N``)."""
    return f"{problem.file}:{problem.line}" if problem.line else problem.file


def _expand_all(merged: Layered, schema: dict) -> list[Problem]:
    """Expand every job with a ``matrix`` in ``merged.data``, in place; the matrices' problems (a job
    whose matrix has one expands to no job, so that the others are still checked).

    Raises:
        SpecError: the matrices would make more jobs than ``max_jobs``: nothing is expanded.
    """
    data = merged.data
    jobs = data.get("jobs") if isinstance(data, dict) else None
    if not isinstance(jobs, list):
        return []
    cap = data.get("max_jobs", DEFAULT_MAX_JOBS)
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        cap = DEFAULT_MAX_JOBS  # the schema reports the bad max_jobs
    counts = [combination_count(e["matrix"]) if is_matrix_job(e) else 1 for e in jobs]
    total = sum(counts)
    if total > cap and any(is_matrix_job(e) for e in jobs):  # max_jobs caps what matrices expand to
        if "max_jobs" in data:
            limit = f"max_jobs ({cap:,}, set at {_place(_merged_problem(merged, ('max_jobs',), ''))})"
        else:
            limit = f"max_jobs ({cap:,}, the default)"
        problems = []
        for i, entry in enumerate(jobs):
            if is_matrix_job(entry) and counts[i] > 1:
                matrix = entry["matrix"]
                axes = [v for k, v in matrix.items() if k not in MATRIX_RESERVED and isinstance(v, list)]
                sizes = " x ".join(str(len(v)) for v in axes) or "no axis"
                include = matrix.get("include")
                if isinstance(include, list) and include:
                    sizes += f" + {len(include)} include"
                whole = "" if counts[i] == total else f"; with the other jobs, {total:,} in all"
                problems.append(
                    _merged_problem(
                        merged,
                        ("jobs", i, "matrix"),
                        f"expands to up to {counts[i]:,} jobs ({sizes}){whole}, more than {limit}: shorten the "
                        "lists, or raise max_jobs (a top-level key of a jobs file, or --set max_jobs=N) if you mean it",
                        at_key=True,
                    )
                )
        if not problems:  # matrices of one combination each: the plain jobs make the total
            problems.append(
                _merged_problem(
                    merged,
                    ("max_jobs",) if "max_jobs" in data else ("jobs",),
                    f"the jobs, their matrices expanded, come to {total:,}, more than {limit}: raise max_jobs "
                    "(a top-level key of a jobs file, or --set max_jobs=N) or leave it out",
                )
            )
        raise SpecError(problems)
    out, problems = [], []
    for i, entry in enumerate(jobs):
        if not is_matrix_job(entry):
            out.append(entry)
            merged.expanded.append((i, None))
            continue
        combos, found = expand(entry, schema)
        for where, message in [] if found else unmatched_excludes(entry["matrix"]):
            merged.warnings.append(_merged_problem(merged, ("jobs", i, "matrix") + where, message, at_key=False))
        for where, message, at_key in found:
            problem = _merged_problem(merged, ("jobs", i) + where, message, at_key=at_key)
            if where[:2] == ("matrix", "include"):
                problem = _with_axes_elsewhere(merged, i, entry["matrix"], problem)
            problems.append(problem)
        for combo in combos:
            out.append(combo.entry)
            merged.expanded.append((i, combo))
            merged.combinations[combo.entry["name"]] = (entry.get("name"), combo.values)
            lone = _lone_include(merged, i, entry["matrix"], combo)
            if lone:
                merged.warnings.append(lone)
    data["jobs"] = out
    return problems


def _lone_include(merged: Layered, i: int, matrix: dict, combo) -> Problem | None:
    """A warning when ``combo`` of job ``i`` comes from one ``include`` entry alone (it extends no
    combination of the axes) and those axes were given by another file or a ``--set``: the entry
    meant to extend a combination that the axes as merged no longer have (a trial's ``--set
    ...matrix.model.args.hidden=[2, 3]`` left ``{model.args.hidden: 4, script_args: --hidden 4}``
    a job of its own, and the new 3 without its ``--hidden``). None otherwise: an entry that fits
    no combination of the axes as written makes a job of its own on purpose (GitHub's semantics)."""
    sources = [s for path, s in combo.sources.items() if path != ("name",)]
    if not sources or not all(s[:2] == ("matrix", "include") for s in sources):
        return None
    at = _merged_problem(merged, ("jobs", i, "matrix", "include", sources[0][2]), "")
    elsewhere = _axes_elsewhere(merged, i, matrix, at.file)
    if not elsewhere:
        return None
    message = (
        f"warning: extends no combination of the matrix's axes as merged ({', '.join(elsewhere)}), so it makes "
        f"a job of its own, {combo.entry['name']!r}: give the axes that value too, or change the entry"
    )
    return dataclasses.replace(at, message=message)


def _with_axes_elsewhere(merged: Layered, i: int, matrix: dict, problem: Problem) -> Problem:
    """``problem`` of an ``include`` entry of job ``i``'s ``matrix``, naming the axes a later file or
    a ``--set`` gave that matrix: an entry that matched the axes as written may not match them as
    merged (a trial's ``--set ...matrix.params_transfer_type=[FULL]`` made the file's include entry a
    combination of its own, and the error named only the file)."""
    elsewhere = _axes_elsewhere(merged, i, matrix, problem.file)
    if not elsewhere:
        return problem
    merged_axes = f" (the matrix's axes as merged: {', '.join(elsewhere)})"
    return dataclasses.replace(problem, message=problem.message + merged_axes)


def _axes_elsewhere(merged: Layered, i: int, matrix: dict, file: str) -> list[str]:
    """``key from FILE[:LINE]`` for each axis of job ``i``'s ``matrix`` that a document other than
    ``file`` wrote (a later jobs file, or ``--set #N``)."""
    elsewhere = []
    for key in matrix:
        if key in MATRIX_RESERVED:
            continue
        source = _merged_problem(merged, ("jobs", i, "matrix", key), "")
        if source.file != file:
            elsewhere.append(f"{key} from {_place(source)}")
    return elsewhere


def _without_matrix(data) -> bool:
    jobs = data.get("jobs") if isinstance(data, dict) else None
    return not isinstance(jobs, list) or not any(is_matrix_job(e) for e in jobs)


def load_all(files: str | Path | list, sets: list[str] | None = None, schema: dict | None = None) -> Document:
    """Load every ``--jobs`` file, merge them, apply ``--set`` and expand matrices.

    Args:
        files (str | Path | list): the jobs files, first to last (a later one merges over earlier ones).
        sets (list[str] | None): ``PATH=VALUE`` overrides, applied in order after the files.
        schema (dict | None): the jobs JSON Schema (which keys are settings); default: the project's.

    Returns:
        Document: the first file's document when there is one file, no ``--set`` and no matrix;
        else a :class:`Layered` document.

    Raises:
        SpecError: a file cannot be read or parsed (named by its own path); YAML traps in any file
            (duplicate keys, ``!!python`` tags, ...: reported before anything is merged); a later
            file that cannot be merged (see :func:`_layer_problems`); a bad ``--set``; matrices that
            make more than ``max_jobs`` jobs. A matrix's own problems are kept in ``problems`` of the
            returned document, for the validate stage to report with the rest.
    """
    from .validate import load_schema

    files = [files] if isinstance(files, (str, Path)) else list(files)
    seen: dict[str, int] = {}
    for n, f in enumerate(files, 1):  # a trial's --jobs jobs.yaml --jobs ./jobs.yaml merged a file into itself
        key = os.path.realpath(f)
        if key in seen:
            raise SpecError(
                [Problem(str(f), 0, 0, "", f"given twice (--jobs #{seen[key]} and #{n}): give each jobs file once")]
            )
        seen[key] = n
    docs = [load(f) for f in files]
    sets = list(sets or [])
    if len(docs) == 1 and not sets and _without_matrix(docs[0].data):
        return docs[0]
    problems = [p for d in docs for p in d.problems]
    if problems:
        raise SpecError(problems)
    if len(docs) > 1:
        problems = [p for i, d in enumerate(docs) for p in _layer_problems(d, i == 0)]
        if problems:
            raise SpecError(problems)
    schema = schema or load_schema()
    merged = Layered(docs[0])
    merged.data = _copy(docs[0].data)
    merged.warnings = [w for d in docs for w in d.warnings]
    for doc in docs[1:]:
        _merge_layer(merged, doc)
    for number, item in enumerate(sets, 1):
        problems += _apply_set(merged, number, item, schema)
    if problems:
        raise SpecError(problems)
    merged.warnings += _defaults_jobs_keep(merged, [d.file for d in docs])
    # A broken matrix does not stop the check: its problems are reported with every other job's
    # (the validate stage, as load-stage problems; a trial's bad matrix hid four other mistakes).
    merged.problems = _expand_all(merged, schema)
    for problem in merged.problems:
        merged.owners[problem] = set()  # its job expanded to none: no job of the data is affected
    if merged.problems and merged.data["jobs"] == []:  # "jobs: must not be empty" would only echo them
        merged.incomplete.add("jobs")
    if not merged.expanded and isinstance(merged.data, dict) and isinstance(merged.data.get("jobs"), list):
        merged.expanded = [(i, None) for i in range(len(merged.data["jobs"]))]
    return merged
