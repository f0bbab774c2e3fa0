"""Matrix stage: expand a job's ``matrix:`` into one job entry per combination.

Takes one ``jobs`` entry (plain data, as loaded) and the jobs schema; gives the expanded entries,
each with the combination that made it and, for each setting the combination wrote, the key path of
the matrix value it came from (so that a schema problem in an expanded job is located at that value's
own line and column). Runs before the schema check: each expanded entry is then checked exactly as if
it had been written by hand.

``include`` and ``exclude`` follow GitHub Actions' ``strategy.matrix`` ("Running variations of jobs
in a workflow", docs.github.com): the product of the axes, minus every combination an ``exclude``
entry matches (all of its key/value pairs equal: a partial match is enough), then each ``include``
entry is added to every remaining product combination whose original axis values it does not
overwrite (values an earlier ``include`` added may be overwritten); an entry that fits no product
combination becomes a combination of its own. Include entries are matched against the product's
combinations only, never against combinations other include entries made.

A matrix key is a job setting (``num_rounds``) or a dotted path into a mapping setting
(``receiver.type``, ``server.task_request_interval``); the schema says which keys exist.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import re
from dataclasses import dataclass, field

#: Most jobs a file may expand to when ``max_jobs`` does not say otherwise.
DEFAULT_MAX_JOBS = 10_000

#: Keys of ``matrix`` that are not axes (GitHub Actions' names).
RESERVED = ("include", "exclude")

#: Job keys a matrix may not vary: ``name`` is made from the combination, ``matrix`` is this.
NOT_AXES = ("name", "matrix")

#: ``{key}`` in a job name: replaced by the combination's value of matrix key ``key``.
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")

#: Characters a job name may hold (the schema's ``name`` pattern); others become ``_`` in a suffix.
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")

#: A problem found in a job entry: (key path inside the entry, message, located at the key).
EntryProblem = tuple


@dataclass
class Combination:
    """One expanded job.

    Attributes:
        entry (dict): the job entry: the template's keys without ``matrix``, the combination's values
            written at their paths, ``name`` filled in.
        values (dict): matrix key -> value, in matrix order (axes first, then keys ``include`` added).
        sources (dict[tuple, tuple]): setting path inside ``entry`` (``("receiver", "type")``) -> key
            path inside the template entry of the value written there (``("matrix", "receiver.type", 1)``).
            A mapping the template does not have (``("receiver",)`` for ``receiver.type``) is sourced at
            the first matrix value written into it, so a finding about the whole mapping points there.
    """

    entry: dict
    values: dict
    sources: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``num_rounds=2, receiver.type=mlflow``: the combination, for messages."""
        return ", ".join(f"{k}={_text(v)}" for k, v in self.values.items())


def _text(value) -> str:
    """A matrix value as it reads in a name or a message: strings bare, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _resolve(root: dict, node: dict) -> dict:
    while isinstance(node, dict) and "$ref" in node:
        target = root
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _children(root: dict, node: dict) -> tuple[dict, object, bool]:
    """(named properties, the schema of any other key or None, whether it is a mapping) of a schema node.

    Properties of ``allOf`` parts and of their if/then branches are included: a ``receiver`` has the
    keys of every ``type``. A mapping that names no property and does not forbid others takes any
    key, each of any value (``{}``).
    """
    node = _resolve(root, node)
    props: dict = {}
    mapping = node.get("type") == "object" or "properties" in node
    stack = [node]
    while stack:
        part = _resolve(root, stack.pop())
        props.update(part.get("properties", {}))
        mapping = mapping or part.get("type") == "object"
        for sub in part.get("allOf", []):
            stack.append(sub)
            if "then" in sub:
                stack.append(sub["then"])
    other = node.get("additionalProperties")
    if other in (None, True) and not props and mapping:
        other = {}  # a mapping of any keys (``model.args``: the class's own keyword arguments)
    return props, other if isinstance(other, dict) else None, mapping


#: JSON Schema types in the words of YAML (as in :mod:`generator.validate`).
_KIND = {"integer": "a whole number", "number": "a number", "string": "a string", "boolean": "true or false"}


def setting_problem(schema: dict, keys: list[str], node: dict | None = None) -> str | None:
    """Why ``keys`` (``["receiver", "type"]``) is not a path to a job setting, or None if it is.

    Args:
        schema (dict): the jobs JSON Schema (``schema/jobs.schema.json``).
        keys (list[str]): the path's keys, outermost first.
        node (dict | None): the schema of the mapping the path starts in; default ``$defs.job``.

    Returns:
        str | None: ``'num_round' is not a setting; did you mean 'num_rounds'?`` or
        ``num_rounds is a whole number, not a mapping: it has no key 'x'``; None for a setting.
    """
    node = schema["$defs"]["job"] if node is None else node
    for i, key in enumerate(keys):
        props, other, mapping = _children(schema, node)
        where = ".".join(keys[:i])
        if not mapping:
            types = _resolve(schema, node).get("type")
            kind = _KIND.get(types, "a single value") if isinstance(types, str) else "a single value"
            return f"{where} is {kind}, not a mapping: it has no key {key!r}"
        if key in props:
            node = props[key]
        elif other is not None:
            node = other
        else:
            close = difflib.get_close_matches(key, list(props), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            return f"{key!r} is not a setting" + (f" of {where}" if where else "") + hint
    return None


def is_matrix_job(entry) -> bool:
    """Whether a ``jobs`` entry has a ``matrix`` key (to expand)."""
    return isinstance(entry, dict) and "matrix" in entry


def combination_count(matrix) -> int:
    """How many jobs ``matrix`` may expand to at most: the product of its axes' lengths plus one
    per ``include`` entry (0 for a matrix that is not a mapping of lists). Costs no expansion."""
    if not isinstance(matrix, dict):
        return 0
    sizes = [len(v) for k, v in matrix.items() if k not in RESERVED and isinstance(v, list)]
    product = 1
    for size in sizes:
        product *= size
    include = matrix.get("include")
    includes = len(include) if isinstance(include, list) else 0
    return (product if sizes else 0 if includes else 1) + includes


def _set(entry: dict, keys: tuple, value) -> None:
    """Write ``value`` at ``keys`` inside ``entry``, copying each mapping on the way (the template's
    mappings are shared by every combination)."""
    node = entry
    for key in keys[:-1]:
        inner = node.get(key)
        node[key] = dict(inner) if isinstance(inner, dict) else {}
        node = node[key]
    node[keys[-1]] = value


def _get(entry: dict, keys: tuple):
    """The value at ``keys`` inside ``entry``, or None if a key on the way is missing."""
    node = entry
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _shape_problems(matrix, schema: dict) -> tuple[list[EntryProblem], dict]:
    """Problems of ``matrix``'s own shape, and its good axes (key -> list of values)."""
    problems: list[EntryProblem] = []
    if not isinstance(matrix, dict):
        return [(("matrix",), "expected a mapping from settings to lists of values", False)], {}
    if not matrix:
        return [(("matrix",), "has no keys: give at least one setting and its list of values", False)], {}
    axes = {}
    for key, values in matrix.items():
        if key in RESERVED:
            empty = next((n for n, e in enumerate(values) if e == {}), None) if isinstance(values, list) else None
            if empty is not None:  # a trial's `- {}` was told "expected a list of mappings"
                what = "would exclude every combination" if key == "exclude" else "adds nothing"
                problems.append(((*("matrix", key), empty), f"an empty {key} entry {what}: name a matrix key", False))
            elif not isinstance(values, list) or not all(isinstance(e, dict) and e for e in values):
                problems.append(
                    (("matrix", key), f"expected a list of mappings from settings to values ({key} entries)", False)
                )
            continue
        where = ("matrix", key)
        if key in NOT_AXES:
            why = "vary it with {placeholders} of matrix keys" if key == "name" else "a matrix cannot nest"
            problems.append((where, f"{key} cannot be a matrix key: {why}", True))
            continue
        problem = setting_problem(schema, key.split("."))
        if problem:
            problems.append((where, problem, True))
            continue
        if not isinstance(values, list):
            problems.append((where, f"expected a list of values, got {_describe(values)}", False))
        elif not values:
            problems.append((where, "must not be an empty list: give at least one value", False))
        elif repeat := _repeated(values):  # a trial's [1, 1] was told "duplicate job name 'a-1'" at the name
            n, first = repeat
            problems.append(
                (
                    (*where, n),
                    f"{_text(values[n])} is listed twice (first at [{first}]): each value makes one job per "
                    "combination; give it once",
                    False,
                )
            )
        else:
            axes[key] = values
    for key in list(axes):  # a trial's executor_args and executor_args.memory_gc_rounds: two jobs, one setting
        outer = next((k for k in axes if key.startswith(k + ".")), None)
        if outer:
            problems.append(
                (
                    ("matrix", key),
                    f"{key} is inside the matrix key {outer}, whose values set all of {outer}: each job would get two "
                    f"values for {key}, and its name one that it does not run with; keep one of the two keys",
                    True,
                )
            )
            axes.pop(key)
    return problems, axes


def _repeated(values: list) -> tuple[int, int] | None:
    """``(index, index of its first)`` of the first value ``values`` repeats (the same JSON text:
    ``1`` and ``"1"`` are two values, as they make two names), else None."""
    seen: dict[str, int] = {}
    for n, value in enumerate(values):
        key = json.dumps(value, sort_keys=True, default=str)
        if key in seen:
            return n, seen[key]
        seen[key] = n
    return None


def _describe(value) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value) + (" (an empty value)" if value is None else "")
    if isinstance(value, dict):
        return "a mapping"
    return repr(value)


def _entry_problems(matrix: dict, axes: dict, schema: dict) -> list[EntryProblem]:
    """Unknown keys in ``include`` (not a setting) and ``exclude`` (not a key written in the matrix:
    a key whose values are wrong has its own problem, and is not reported again here)."""
    problems: list[EntryProblem] = []
    written = [key for key in matrix if key not in RESERVED and key not in NOT_AXES]
    for kind in RESERVED:
        entries = matrix.get(kind)
        if not isinstance(entries, list):
            continue
        for n, item in enumerate(entries):
            if not isinstance(item, dict):
                continue
            for key in item:
                where = ("matrix", kind, n, key)
                if kind == "exclude" and key not in written:
                    close = difflib.get_close_matches(key, written, n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else f" (its keys: {', '.join(written)})"
                    problems.append((where, f"{key!r} is not a key of this matrix{hint}", True))
                elif kind == "include" and key not in axes:
                    if key in NOT_AXES:
                        problems.append((where, f"{key} cannot be a matrix key", True))
                        continue
                    problem = setting_problem(schema, key.split(".")) or _nested_axis_problem(key, item[key], axes)
                    if problem:
                        problems.append((where, problem, True))
    return problems


def _nested_axis_problem(key: str, value, axes: dict) -> str | None:
    """Why an ``include`` entry's ``key`` (a setting that is not a matrix key) may not hold ``value``:
    it reaches a matrix key nested (``model: {args: {hidden: 4}}`` beside the axis
    ``model.args.hidden``). GitHub Actions' ``include`` matches an entry to a combination by the
    matrix keys it names; nested, the value names none, so it was added to every combination and
    set the axis's setting there too (a trial's ``sw-h16`` was generated with ``hidden: 4``)."""
    for axis in axes:
        if not axis.startswith(key + "."):
            continue
        found = value
        for part in axis[len(key) + 1 :].split("."):
            if not isinstance(found, dict) or part not in found:
                break
            found = found[part]
        else:
            return (
                f"{key!r} sets the matrix key {axis} inside it: an include entry matches combinations by the "
                f"matrix keys it names, so write {axis}: {_text(found)} as a key of its own "
                f"(nested, it would set {axis} in every combination)"
            )
    return None


def combinations(matrix: dict, axes: dict) -> list[tuple[dict, dict]]:
    """The combinations of a well-formed matrix, with GitHub Actions' ``include``/``exclude`` semantics.

    Args:
        matrix (dict): the ``matrix`` mapping (axes plus optional ``include``/``exclude`` lists).
        axes (dict): matrix key -> non-empty list of values (the axes, in matrix order).

    Returns:
        list[tuple[dict, dict]]: (key -> value, key -> key path of the value inside ``matrix``) per
        combination (an empty matrix: one, with no values), product combinations first (in product
        order, last axis fastest), then the ``include`` entries that fit none, in their order.
    """
    exclude = [e for e in matrix.get("exclude") or [] if isinstance(e, dict)]
    include = [e for e in matrix.get("include") or [] if isinstance(e, dict)]
    keys = list(axes)
    base = [] if include else [({}, {})]  # no axes: the include entries, or else the job as written
    if keys:
        base = []
        for picks in itertools.product(*(range(len(axes[k])) for k in keys)):
            values = {k: axes[k][i] for k, i in zip(keys, picks, strict=True)}
            if any(all(k in values and values[k] == v for k, v in e.items()) for e in exclude):
                continue
            base.append((values, {k: (k, i) for k, i in zip(keys, picks, strict=True)}))
    extra = []
    for n, item in enumerate(include):
        matched = False
        for values, sources in base:
            if all(values[k] == v for k, v in item.items() if k in axes):
                matched = True
                for k, v in item.items():
                    if k not in axes:
                        values[k] = v
                        sources[k] = ("include", n, k)
        if not matched:
            extra.append((dict(item), {k: ("include", n, k) for k in item}))
    return base + extra


def unmatched_excludes(matrix) -> list[tuple[tuple, str]]:
    """Warnings for the ``exclude`` entries of ``matrix`` (a job's ``matrix`` mapping, with no
    problem of its own) that remove no combination: each names a value that is not one of its key's
    values (a trial's ``{num_rounds: "1"}``, text, beside the axis ``[1, 2]`` removed nothing,
    silently; GitHub Actions ignores such entries as well); and one when they remove every
    combination of the axes, so that only ``include`` entries make jobs. Returns ``(key path inside
    the matrix, message)`` pairs."""
    if not isinstance(matrix, dict) or not isinstance(matrix.get("exclude"), list):
        return []
    axes = {k: v for k, v in matrix.items() if k not in RESERVED and isinstance(v, list)}
    found = []
    for n, item in enumerate(matrix["exclude"]):
        if not isinstance(item, dict):
            continue
        for key, value in item.items():
            values = axes.get(key)
            if values is None or value in values:  # equality as combinations() excludes by
                continue
            shown = ", ".join(_text(v) for v in values)
            typed = next((v for v in values if _text(v) == _text(value)), None)
            if typed is not None:  # "1" beside 1, 1 beside "1"
                typed = json.dumps(typed)
                message = f"{json.dumps(value)} is not the value {typed} of {key} ({shown}): write {typed}"
            else:
                message = f"{key}={_text(value)} is not one of the matrix's values for it ({shown})"
            found.append((("exclude", n, key), f"warning: {message}, so this entry excludes nothing"))
            break
    if axes and matrix.get("include") and not combinations({**matrix, "include": []}, axes):
        count = math.prod(len(v) for v in axes.values())  # a trial's include-made job alone was left, silently
        found.append(
            (
                ("exclude",),
                f"warning: excludes every combination of the matrix's axes ({count} of {count}): only its include "
                "entries make jobs",
            )
        )
    return found


def _name(template: str, values: dict, placeholders: list[str]) -> str:
    if placeholders:
        return PLACEHOLDER.sub(lambda m: _NAME_CHARS.sub("_", _text(values[m.group(1)])), template)
    return "-".join([template] + [_NAME_CHARS.sub("_", _text(v)) for v in values.values()])


def expand(entry: dict, schema: dict) -> tuple[list[Combination], list[EntryProblem]]:
    """Expand one ``jobs`` entry that has a ``matrix``.

    Args:
        entry (dict): the job entry as loaded (not modified).
        schema (dict): the jobs JSON Schema, which says which keys are settings.

    Returns:
        tuple[list[Combination], list[EntryProblem]]: the expanded jobs (none when there are
        problems) and the problems of the matrix, each as (key path inside ``entry``, message,
        located at the key): a matrix that is not a mapping, a key that is not a setting or goes
        into a value that is not a mapping, ``name`` or ``matrix`` as a key, a value that is not a
        non-empty list, ``include``/``exclude`` entries with unknown keys, a ``{placeholder}`` in
        ``name`` that is not a matrix key or that a combination has no value for.

    Names: ``name`` with each ``{key}`` replaced by the combination's value (characters a job
    name may not hold become ``_``); without placeholders, ``name`` plus ``-value`` per matrix key,
    in matrix order (product combinations: axes only; include-only combinations: their own keys).
    """
    matrix = entry.get("matrix")
    problems, axes = _shape_problems(matrix, schema)
    if isinstance(matrix, dict):
        problems += _entry_problems(matrix, axes, schema)
    name = entry.get("name")
    placeholders = PLACEHOLDER.findall(name) if isinstance(name, str) else []
    # Every key written in the matrix counts, even one whose values are wrong: its own problem says so.
    known = {k for k in matrix if k not in RESERVED} if isinstance(matrix, dict) else set()
    for item in matrix.get("include") or [] if isinstance(matrix, dict) else []:
        known.update(item if isinstance(item, dict) else ())
    stray = PLACEHOLDER.sub("", name) if isinstance(name, str) else ""
    if "{" in stray or "}" in stray:  # a trial's 'a-{num_rounds' gave one "not allowed" line per value
        why = "an unclosed '{'" if "{" in stray else "a '}' that no '{' opens"
        problems.append(
            (("name",), f"{why}: a placeholder is {{key}}, a matrix key in braces (a-{{num_rounds}})", False)
        )
    for key in dict.fromkeys(placeholders):
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {{{close[0]}}}?" if close else f" (matrix keys: {', '.join(sorted(known))})"
            problems.append((("name",), f"placeholder {{{key}}} is not a matrix key{hint}", False))
    if problems:
        return [], problems
    template = {k: v for k, v in entry.items() if k != "matrix"}
    out = []
    found = combinations(matrix, axes)
    if not found:  # a trial's job vanished without a word when another job was left in the file
        count = math.prod(len(v) for v in axes.values())
        return [], [
            (
                ("matrix", "exclude"),
                f"excludes every combination of the matrix ({count} of {count}), so it makes no job: "
                "remove the job, or the exclude entries that remove what you mean to run",
                True,
            )
        ]
    for values, sources in found:
        missing = [k for k in placeholders if k not in values]
        if missing:
            n = next(s[1] for s in sources.values())
            problems.append(
                (
                    ("matrix", "include", n),
                    f"makes a combination without {missing[0]}, which the name's {{{missing[0]}}} needs",
                    False,
                )
            )
            continue
        job = dict(template)
        written = {}
        for key, value in values.items():
            keys = tuple(key.split("."))
            _set(job, keys, value)
            written[keys] = ("matrix",) + sources[key]
            for n in range(1, len(keys)):  # a mapping the template lacks: made by (the first of) its values
                if not isinstance(_get(template, keys[:n]), dict):
                    written.setdefault(keys[:n], written[keys])
        if isinstance(name, str):  # else the schema reports the missing or mistyped name, once
            job["name"] = _name(name, values, placeholders)
        out.append(Combination(job, values, written | {("name",): ("name",)}))
    return ([], problems) if problems else (out, [])
