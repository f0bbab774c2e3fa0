"""Validate stage: check a loaded ``jobs.yaml`` against the JSON Schema, then across fields.

Takes a :class:`~generator.load.Document`; gives the effective jobs (:mod:`generator.spec`) or
raises :class:`~generator.errors.SpecError` with *every* problem found, each located at the YAML
key or value it is about. Schema checks use the ``jsonschema`` library (draft 2020-12, the schema
itself checked first); the checks below it cover what a schema cannot say: duplicate job names,
scripts that do not exist under ``client_scripts/`` or resolve outside it, a ``command`` or
``script_args`` that does not split like a shell command line, ``min_clients`` above
``num_clients``, a ``deploy_map`` naming an unknown app or site, and metrics that a script streams
with no receiver to store them.
"""

from __future__ import annotations

import ast
import difflib
import json
from functools import lru_cache
from pathlib import Path

import jsonschema
from jsonschema.exceptions import best_match

from .errors import Problem, SpecError
from .load import NUMBER_LIKE, YAML11_BOOL_WORDS, Document
from .spec import Job, effective_jobs, shell_words

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = PROJECT_ROOT / "schema" / "jobs.schema.json"
SCRIPTS_DIR = "client_scripts"

#: The single app the generator puts in a job folder (``app/``).
APP_NAME = "app"

#: Client API tracking writers (``nvflare.client.tracking``) -> the receiver ``type`` that stores
#: their events. Source: NVFlare's Client API docs, "Experiment tracking".
WRITERS = {"MLflowWriter": "mlflow", "SummaryWriter": "tensorboard", "WandBWriter": "wandb"}

#: Receiver ``type``s each NVFlare line has templates for (2.7: MLflow only, for now).
RECEIVERS_BY_LINE = {"2.7": ("mlflow",)}


@lru_cache(maxsize=4)
def load_schema(path: Path = SCHEMA_PATH) -> dict:
    """Read the jobs JSON Schema and check that it is itself a valid draft 2020-12 schema.

    Raises:
        SpecError: the schema file is missing, not JSON, or not a valid schema (located in it).
    """
    try:
        schema = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise SpecError([Problem(str(path), 0, 0, "", f"cannot read the schema: {e}")]) from None
    except json.JSONDecodeError as e:
        raise SpecError([Problem(str(path), e.lineno, e.colno, "", f"schema is not JSON: {e.msg}")]) from None
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as e:
        where = ".".join(str(p) for p in e.absolute_path)
        raise SpecError([Problem(str(path), 0, 0, where, f"invalid JSON Schema: {e.message}")]) from None
    return schema


#: Keywords a ``$ref`` target may have for :func:`flattened` to inline it (no other applicators).
_INLINABLE = {"type", "properties", "description", "title", "default", "examples"}


def flattened(schema: dict) -> dict:
    """An equivalent schema that jsonschema checks about three times faster.

    Two rewrites, each leaving the set of valid documents unchanged: a local ``{"$ref": X}`` is
    replaced by X itself (the jobs schema is not recursive), and
    ``{"allOf": [{"$ref": X}], "properties": P, "unevaluatedProperties": false}`` becomes
    ``{"type": "object", "properties": X.properties + P, "additionalProperties": false}`` when X
    holds only ``type: object`` and ``properties`` and P shares no key with them (jsonschema checks
    ``unevaluatedProperties`` by evaluating the object's subschemas a second time). Any other shape
    is left as it is. Used only to decide *whether* a file is valid; messages come from the schema
    as written.
    """

    def walk(node, expanding: tuple = ()):
        if isinstance(node, list):
            return [walk(n, expanding) for n in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if set(node) == {"$ref"} and isinstance(ref, str) and ref.startswith("#/") and ref not in expanding:
            return walk(_resolve(schema, ref), expanding + (ref,))
        parts = node.get("allOf", [])
        if node.get("unevaluatedProperties") is False and len(parts) == 1 and set(parts[0]) == {"$ref"}:
            target = _resolve(schema, parts[0]["$ref"])
            own = node.get("properties", {})
            inherited = target.get("properties", {})
            if set(target) <= _INLINABLE and target.get("type", "object") == "object" and not set(own) & set(inherited):
                node = {k: v for k, v in node.items() if k not in ("allOf", "unevaluatedProperties", "properties")}
                node.update(type="object", properties={**inherited, **own}, additionalProperties=False)
        return {k: walk(v, expanding) for k, v in node.items()}

    return walk(schema)


_validators: dict = {}


def _validators_for(schema: dict) -> tuple:
    """(validator of the schema as written, validator of :func:`flattened`), made once per schema."""
    entry = _validators.get(id(schema))
    if entry is None or entry[0] is not schema:
        entry = (
            schema,
            jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()),
            jsonschema.Draft202012Validator(flattened(schema), format_checker=jsonschema.FormatChecker()),
        )
        _validators[id(schema)] = entry
    return entry[1], entry[2]


def _known_keys(schema: dict, error) -> list[str]:
    """Property names an object at ``error`` may have (its own and those of ``allOf`` parts)."""
    keys = []
    stack = [error.schema]
    while stack:
        node = stack.pop()
        if "$ref" in node:
            node = _resolve(schema, node["$ref"])
        keys.extend(node.get("properties", {}))
        stack.extend(node.get("allOf", []))
    return keys


def _resolve(schema: dict, ref: str) -> dict:
    node = schema
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


#: JSON Schema type names in the words of YAML.
YAML_TYPES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "null": "nothing",
}


def _expected(types) -> str:
    types = types if isinstance(types, list) else [types]
    return " or ".join(YAML_TYPES.get(t, t) for t in types)


def _describe(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null (an empty value)"
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    return repr(value)


def _yaml_hint(doc: Document, path: tuple, expected) -> str:
    """Explain YAML 1.1 surprises: ``no``/``on`` read as booleans, ``1e-3`` read as a string."""
    text = doc.plain_scalars.get(path)
    if text is None:
        return ""
    expected = expected if isinstance(expected, list) else [expected]
    if YAML11_BOOL_WORDS.match(text) and "string" in expected:
        return f' (YAML reads a bare {text} as a boolean: write "{text}" in quotes)'
    if NUMBER_LIKE.match(text) and ("number" in expected or "integer" in expected):
        return f" (YAML reads {text} as text: write it with a dot and a signed exponent, e.g. 1.0e-3)"
    if "string" in expected and _is_number(text):
        return f' (YAML reads a bare {text} as a number: write "{text}" in quotes)'
    return ""


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _schema_problems(doc: Document, schema: dict) -> list[Problem]:
    validator, quick = _validators_for(schema)
    if quick.is_valid(doc.data):
        return []
    problems = []
    errors = [
        best_match(e.context) if e.validator in ("oneOf", "anyOf") and e.context else e
        for e in validator.iter_errors(doc.data)
    ]
    # A value of the wrong type also fails its enum/pattern/...: report only the type.
    mistyped = {tuple(e.absolute_path) for e in errors if e.validator == "type"}
    for error in errors:
        path = tuple(error.absolute_path)
        kind = error.validator
        if path in mistyped and kind != "type":
            continue
        if kind in ("additionalProperties", "unevaluatedProperties"):
            known = _known_keys(schema, error)
            for key in sorted(set(error.instance) - set(known)):
                problems.append(doc.problem(path + (key,), f"unknown key {key!r}{_suggest(key, known)}", at_key=True))
            continue
        if kind == "required":
            missing = [k for k in error.validator_value if k not in error.instance]
            message = f"missing required key {missing[0]!r}" if missing else error.message
        elif kind == "type":
            message = f"expected {_expected(error.validator_value)}, got {_describe(error.instance)}"
            message += _yaml_hint(doc, path, error.validator_value)
        elif kind == "enum":
            choices = ", ".join(map(str, error.validator_value))
            message = f"must be one of: {choices} (got {_describe(error.instance)})"
            message += _suggest(error.instance, error.validator_value) if isinstance(error.instance, str) else ""
        elif kind == "minItems" and error.validator_value == 1:
            message = "must not be empty"
        elif kind == "pattern":
            message = f"{_describe(error.instance)} is not allowed here: must match {error.validator_value}"
        else:
            message = error.message
        hint = error.schema.get("x-hint") if isinstance(error.schema, dict) else None
        if hint and kind in ("pattern", "enum", "minItems"):
            message += f" ({hint})"
        problems.append(doc.problem(path, message))
    return problems


def _script_writers(script: Path) -> set[str]:
    """Names of Client API tracking writers a script imports from ``nvflare.client.tracking``.

    Parsed once per file version (path, modification time, size) and process.
    """
    try:
        st = script.stat()
    except OSError:
        return set()
    return set(_writers_of(str(script), st.st_mtime_ns, st.st_size))


@lru_cache(maxsize=256)
def _writers_of(script: str, mtime_ns: int, size: int) -> frozenset[str]:
    try:
        tree = ast.parse(Path(script).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return frozenset()
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nvflare.client.tracking"):
            found.update(a.name for a in node.names if a.name in WRITERS)
    return frozenset(found)


def script_path(doc: Document, job: Job) -> Path:
    """Where ``job``'s script lives: ``<folder of jobs.yaml>/client_scripts/<script>``."""
    return doc.root / SCRIPTS_DIR / job.settings["script"]


def _job_problems(doc: Document, jobs: list[Job]) -> list[Problem]:
    problems = []
    seen = {}
    scripts_root = (doc.root / SCRIPTS_DIR).resolve()
    checked: dict = {}  # script -> (resolved inside client_scripts/, is a file, writers): once per script
    for job in jobs:
        s = job.settings
        name_path = ("jobs", job.index, "name")
        if job.name in seen:
            problems.append(
                doc.problem(name_path, f"duplicate job name {job.name!r} (first used by jobs[{seen[job.name]}])")
            )
        seen.setdefault(job.name, job.index)

        if "script" not in s:
            problems.append(
                doc.problem(("jobs", job.index), "missing required key 'script' (set it here or in `defaults`)")
            )
        else:
            spath = job.path_of("script")
            facts = checked.get(s["script"])
            if facts is None:
                resolved = script_path(doc, job).resolve()
                inside = resolved.is_relative_to(scripts_root)
                is_file = inside and resolved.is_file()
                facts = checked[s["script"]] = (inside, is_file, _script_writers(resolved) if is_file else set())
            inside, is_file, writers = facts
            if not inside:
                problems.append(doc.problem(spath, f"script {s['script']!r} resolves outside {SCRIPTS_DIR}/"))
            elif not is_file:
                available = sorted(p.relative_to(scripts_root).as_posix() for p in scripts_root.rglob("*.py"))
                problems.append(
                    doc.problem(
                        spath, f"script {s['script']!r} not found in {SCRIPTS_DIR}/{_suggest(s['script'], available)}"
                    )
                )
            else:
                problems.extend(_metrics_problems(doc, job, writers))

        if s["min_clients"] > s["num_clients"]:
            problems.append(
                doc.problem(
                    job.path_of("min_clients"),
                    f"min_clients ({s['min_clients']}) is larger than num_clients ({s['num_clients']}): "
                    "the job could never start",
                )
            )
        for key in ("command", "script_args"):
            try:
                shell_words(s[key])
            except ValueError as e:
                problems.append(
                    doc.problem(job.path_of(key), f"cannot split {s[key]!r} like a shell command line: {e}")
                )
        problems.extend(_deploy_map_problems(doc, job))
        problems.extend(_line_problems(doc, job))
    return problems


def _line_problems(doc: Document, job: Job) -> list[Problem]:
    """Settings the job's NVFlare line has no template for (a receiver type missing on 2.7)."""
    receiver = job.settings.get("receiver")
    supported = RECEIVERS_BY_LINE.get(job.line)
    if not receiver or supported is None or receiver["type"] in supported:
        return []
    return [
        doc.problem(
            job.path_of("receiver") + ("type",),
            f"receiver type {receiver['type']!r} is not available for nvflare_version {job.line} "
            f'(only {", ".join(supported)}): use nvflare_version "2.9" or another receiver type',
        )
    ]


def _deploy_map_problems(doc: Document, job: Job) -> list[Problem]:
    s = job.settings
    dpath = job.path_of("deploy_map")
    problems = []
    sites = {"server"} | {f"site-{i}" for i in range(1, s["num_clients"] + 1)}
    covered = set()
    for app, targets in s["deploy_map"].items():
        if app != APP_NAME:
            problems.append(
                doc.problem(
                    dpath + (app,), f"unknown app {app!r}: the generated job has one app, {APP_NAME!r}", at_key=True
                )
            )
            continue
        for i, site in enumerate(targets):
            if site == "@ALL":
                covered |= sites
            elif site not in sites:
                problems.append(
                    doc.problem(
                        dpath + (app, i),
                        f"unknown site {site!r}: this job has server and site-1 .. site-{s['num_clients']}",
                    )
                )
            covered.add(site)
    missing = sorted(sites - covered)
    if not problems and missing:
        problems.append(
            doc.problem(
                dpath,
                f"app {APP_NAME!r} is not deployed to {', '.join(missing)}: every site of a simulated job needs it",
            )
        )
    return problems


def _metrics_problems(doc: Document, job: Job, writers: set[str]) -> list[Problem]:
    receiver = job.settings.get("receiver")
    if writers and not receiver:
        names = ", ".join(sorted(writers))
        return [
            doc.problem(
                job.path_of("script"),
                f"script streams metrics with {names} but the job has no `receiver`: every metric would be lost "
                f"(add `receiver: {{type: {WRITERS[sorted(writers)[0]]}}}`)",
            )
        ]
    return []


def receiver_warnings(doc: Document, jobs: list[Job]) -> list[Problem]:
    """Non-fatal findings: a job with a ``receiver`` whose script imports no tracking writer."""
    out = []
    silent: dict = {}  # script -> exists and imports no writer (checked once per script)
    for job in jobs:
        if job.settings.get("receiver") and "script" in job.settings:
            script = job.settings["script"]
            if script not in silent:
                path = script_path(doc, job)
                silent[script] = path.is_file() and not _script_writers(path)
            if silent[script]:
                out.append(
                    doc.problem(
                        job.path_of("receiver"),
                        "warning: a receiver is configured but the script imports no nvflare.client.tracking writer",
                    )
                )
    return out


def validate(doc: Document, schema: dict | None = None) -> list[Job]:
    """Validate a loaded ``jobs.yaml`` and return its effective jobs.

    Args:
        doc (Document): from :func:`generator.load.load`.
        schema (dict | None): the jobs schema; default: ``schema/jobs.schema.json``.

    Returns:
        list[Job]: the effective jobs, in file order.

    Raises:
        SpecError: with every schema and cross-field problem, sorted by position.
    """
    schema = schema or load_schema()
    problems = _schema_problems(doc, schema)
    if problems:
        raise SpecError(problems)
    jobs = effective_jobs(doc.data, schema)
    problems = _job_problems(doc, jobs)
    if problems:
        raise SpecError(problems)
    return jobs
