"""Validate stage: check a loaded ``jobs.yaml`` against the JSON Schema, then across fields.

Two halves, with the spec stage between them (:mod:`generator.pipeline` calls all three):
:func:`check_document` takes a :class:`~generator.load.Document` and checks it against the
schema; :func:`generator.spec.effective_jobs` builds the jobs that fit; :func:`check_jobs` checks
those across fields and gives them back, or raises :class:`~generator.errors.SpecError` with
*every* problem of both halves, each located at the YAML key or value it is about.
:func:`validate` runs the three in a row. Schema checks (draft 2020-12, the schema itself checked
first; ``5.0`` is not an integer) run in ``jsonschema-rs``; a file it finds invalid is checked again
by python-jsonschema, whose errors the located messages are made from. The cross-field checks
cover what a schema cannot say: duplicate job names, scripts that do not exist under
``client_scripts/`` or resolve outside it (through ``..`` or a symlink), receiver paths
(``artifact_location``, a ``sqlite:///`` file) that are absolute or climb out with ``..``, a
``command`` or ``script_args`` that does not split like a shell command line or holds NUL, strings
NVFlare would rewrite on their way to the script or the receiver (``{name}`` variables, the
in-process whitespace split: :mod:`generator.rewrites`), ``min_clients`` above ``num_clients``, a
``deploy_map`` naming an unknown app or site, and metrics that a script streams with no receiver
to store them.
Problems the load stage found (``Document.problems``) are reported with these, minus the schema
problems that merely echo them. Warnings (not errors): a receiver whose script streams nothing, and
a script whose writer is made for another receiver type (:data:`CROSS_WRITER`).
What each job ships in ``app/custom/`` besides its script (its local modules, ``custom_files``) is
worked out here too, by :mod:`generator.ship`, and kept in ``Job.shipment`` for the render stage.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import difflib
import json
import math
import os
import re
from functools import cache, lru_cache
from pathlib import Path

import jsonschema_rs

from . import extras
from .components import (
    EXTRA_ARGS_KEYS,
    NP_PERSISTOR,
    extra_arg_problem,
    extra_args_row,
    receivers_of,
    reserved_custom_files,
    writer_types,
)
from .errors import Problem, SpecError
from .layout import APP_NAME, MLFLOW_DB, SCRIPTS_DIR, SERVER_SITE
from .load import NUMBER_LIKE, YAML11_BOOL_WORDS, Document
from .ptmodel import framework_problems
from .rewrites import rewrite_problems
from .ship import Shipper
from .spec import Job, client_names, effective_jobs, shell_words

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = PROJECT_ROOT / "schema" / "jobs.schema.json"

#: Client API tracking writers (``nvflare.client.tracking``) -> the receiver ``type`` that stores
#: their events. Source: NVFlare's Client API docs, "Experiment tracking".
WRITERS = writer_types()


@lru_cache(maxsize=4)
def load_schema(path: Path = SCHEMA_PATH) -> dict:
    """Read the jobs JSON Schema and check that it is itself a valid draft 2020-12 schema.

    Args:
        path (Path): the schema file; default :data:`SCHEMA_PATH` (``schema/jobs.schema.json`` of
            this project). Read once per path and process.

    Returns:
        dict: the schema.

    Raises:
        SpecError: the schema file is missing, not JSON, or not a valid schema (located in it).
    """
    try:
        schema = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise SpecError([Problem(str(path), 0, 0, "", f"cannot read the schema: {e}")]) from None
    except json.JSONDecodeError as e:
        raise SpecError([Problem(str(path), e.lineno, e.colno, "", f"schema is not JSON: {e.msg}")]) from None
    if not (jsonschema_rs.meta.is_valid(schema) and _fast_validator_of(schema) is not None):
        import jsonschema  # the located message of a broken schema comes from python-jsonschema

        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as e:
            where = ".".join(str(p) for p in e.absolute_path)
            raise SpecError([Problem(str(path), 0, 0, where, f"invalid JSON Schema: {e.message}")]) from None
    return schema


def _known_keys(schema: dict, error) -> list[str]:
    """Property names an object at ``error`` may have (its own and those of ``allOf`` parts)."""
    return list(_properties(schema, error.schema))


def _resolve(schema: dict, ref: str) -> dict:
    node = schema
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def _suggest(word: str, choices) -> str:
    choices = [str(c) for c in choices]
    same = [c for c in choices if c.lower() == str(word).lower()]
    close = same or difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _names(count: int) -> str:
    """``"1 name"``, ``"3 names"``."""
    return f"{count} name" if count == 1 else f"{count} names"


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


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _yaml_hint(doc: Document, path: tuple, expected, instance) -> str:
    """Explain YAML surprises: ``no``/``on`` read as booleans, ``1e-3`` read as a string, and a value
    in quotes (``"true"``, ``"5"``) read as text where a boolean or a number belongs."""
    expected = expected if isinstance(expected, list) else [expected]
    text = doc.plain_scalars.get(path)
    if "boolean" in expected and isinstance(instance, str) and YAML11_BOOL_WORDS.match(instance):
        # a jobs file reads a bare `on` as true (YAML 1.1, as PyYAML does); a --set value is read
        # as YAML 1.2's core schema, whose booleans are only true and false (a trial's
        # `--set ...launch_external_process=on` was refused where the same word in its file passed)
        word = "true" if instance.lower() in ("y", "yes", "on") else "false"
        if _from_set(doc, path):
            return f" (write {word}: a --set value is read as YAML 1.2, whose only booleans are true and false)"
        return f" (in quotes it is text: write {word})"
    if text is None:  # not a plain scalar: in quotes (or not in the document at all)
        word = instance.strip() if isinstance(instance, str) else ""
        if (
            ("boolean" in expected and word in ("true", "false"))
            or ("integer" in expected and re.fullmatch(r"[-+]?\d+", word))
            or ("number" in expected and _is_number(word))
        ):
            return f" (in quotes it is text: write {word} without quotes)"
        return ""
    if YAML11_BOOL_WORDS.match(text) and "string" in expected:
        return f' (YAML reads a bare {text} as a boolean: write "{text}" in quotes)'
    if NUMBER_LIKE.match(text) and isinstance(instance, str) and ("number" in expected or "integer" in expected):
        return f" (YAML reads {text} as text: {_number_spelling(text, whole='number' not in expected)})"
    if "string" in expected and _is_number(text):
        return f' (YAML reads a bare {text} as a number: write "{text}" in quotes)'
    return ""


def _whole_hint(error) -> str:
    """`` (write 5)`` for a float with nothing after the point (``5.0``, ``1e3`` read as 1000.0 by a
    ``--set``) where only a whole number fits (NVFlare's ``range(num_rounds)`` fails on a float)."""
    expected = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
    value = error.instance
    if "integer" in expected and "number" not in expected and isinstance(value, float) and value.is_integer():
        return f" (write {int(value)})"
    return ""


def _number_spelling(text: str, whole: bool) -> str:
    """How to write ``text`` (a number YAML 1.1 reads as text, :data:`generator.load.NUMBER_LIKE`) so it is
    one: for a whole-number key its digits (``1e3``: 1000; a trial was told ``e.g. 1.0e-3`` for
    ``num_rounds``), else with a dot and a signed exponent (``1e-3``: 1.0e-3; ``.5``: 0.5)."""
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        return "write it with a dot and a signed exponent, e.g. 1.0e-3"
    if whole:
        return f"write {int(value)}" if value.is_integer() else f"it is not a whole number ({value:g})"
    mantissa, e, exponent = text.lower().partition("e")
    if not e:  # .5
        return f"write {value!r}"
    sign = mantissa[:1] if mantissa[:1] in "+-" else ""
    digits = mantissa.lstrip("+-") or "0"
    digits = digits if "." in digits else digits + ".0"
    digits = "0" + digits if digits.startswith(".") else digits
    exponent = exponent if exponent[:1] in "+-" else "+" + exponent
    return f"write it with a dot and a signed exponent: {sign}{digits}e{exponent}"


@cache
def _python_validator():
    """python-jsonschema's Draft 2020-12 validator class with one change: ``5.0`` is not an integer
    (the spec says it is, but it would be written into the configs as ``5.0`` and NVFlare's
    ``range(num_rounds)`` fails on a float). Imported and built on first use: only a file that
    does not fit the schema needs it (its errors are explained from this validator's)."""
    import jsonschema

    return jsonschema.validators.extend(
        jsonschema.Draft202012Validator,
        type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
            "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)
        ),
    )


def __getattr__(name: str):
    """``_Validator``: :func:`_python_validator`'s class, made when first asked for."""
    if name == "_Validator":
        return _python_validator()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: The keyword added to the jsonschema-rs copy of the schema where a number is checked (a
#: ``type`` with ``integer`` or ``number``, or a numeric limit); see :class:`_PythonNumber`.
PYTHON_NUMBER = "x-jobgen-python-number"

#: Schema keywords whose values are data, not subschemas: :func:`_rs_schema` leaves them as they are.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})
_NUMBER_LIMITS = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"})


class _PythonNumber:
    """jsonschema-rs keyword: refuses the floats jsonschema-rs would accept and python-jsonschema
    (through :func:`_python_validator`) would not, so that "valid" means the same for both.

    jsonschema-rs counts an integral float (``5.0``) as an integer, as draft 2020-12 does, and lets
    ``inf`` pass a ``maximum``. This keyword refuses any float where only an integer fits, and
    ``nan``/``inf`` wherever a number is checked. Args as jsonschema-rs passes them:
    ``(parent_schema, value, schema_path)``, ``value`` being ``"integer"`` or ``"number"``.
    """

    def __init__(self, parent_schema: dict, value: str, schema_path):
        self.integer_only = value == "integer"

    def validate(self, instance) -> None:
        """Raises ValueError: ``instance`` is a float where only an integer fits, or not finite."""
        if isinstance(instance, float) and (self.integer_only or not math.isfinite(instance)):
            raise ValueError(f"{instance!r} is not allowed here")


def _rs_schema(node):
    """A copy of ``node`` (a schema or a part of one) with :data:`PYTHON_NUMBER` on every subschema
    that checks a number."""
    if isinstance(node, list):
        return [_rs_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: value if key in _DATA_KEYWORDS else _rs_schema(value) for key, value in node.items()}
    kind = node.get("type")
    types = kind if isinstance(kind, list) else [kind] if isinstance(kind, str) else []
    if "integer" in types and "number" not in types:
        out[PYTHON_NUMBER] = "integer"
    elif "number" in types or "integer" in types or _NUMBER_LIMITS & node.keys():
        out[PYTHON_NUMBER] = "number"
    return out


#: Compiled jsonschema-rs validators: id(schema) -> (schema, validator or None).
_FAST_VALIDATORS: dict[int, tuple[dict, object]] = {}


def _fast_validator_of(schema: dict):
    """The jsonschema-rs (Rust) Draft 2020-12 validator of ``schema``, compiled once per schema object.

    Returns:
        jsonschema_rs.Draft202012Validator | None: None when jsonschema-rs cannot compile the schema
        (python-jsonschema then checks everything).
    """
    hit = _FAST_VALIDATORS.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    try:
        validator = jsonschema_rs.Draft202012Validator(_rs_schema(schema), keywords={PYTHON_NUMBER: _PythonNumber})
    except Exception:  # a schema jsonschema-rs refuses: python-jsonschema decides and explains
        validator = None
    if len(_FAST_VALIDATORS) >= 8:
        _FAST_VALIDATORS.clear()
    _FAST_VALIDATORS[id(schema)] = (schema, validator)
    return validator


def _fits(schema: dict, data) -> bool:
    """True when jsonschema-rs finds ``data`` valid against ``schema``; False when it does not, or
    cannot tell (a value JSON has no type for, a schema it cannot compile)."""
    validator = _fast_validator_of(schema)
    if validator is None:
        return False
    try:
        return validator.is_valid(data)
    except Exception:  # e.g. a non-string mapping key or a date: python-jsonschema explains
        return False


def _schema_problems(doc: Document, schema: dict) -> list[Problem]:
    """Every place ``doc.data`` does not fit ``schema``, one located problem each, in plain words.

    jsonschema-rs decides first (compiled once, see :func:`_fast_validator_of`); only a document it
    does not find valid goes through python-jsonschema, whose errors the messages are made from.
    For ``oneOf``/``anyOf`` the best-matching branch speaks (``jsonschema``'s ``best_match``); a
    value of the wrong type is reported once, as a type problem.
    """
    if _fits(schema, doc.data):
        return []
    import jsonschema
    from jsonschema.exceptions import best_match

    validator = _python_validator()(schema, format_checker=jsonschema.FormatChecker())
    problems = []
    errors = [
        best_match(e.context) if e.validator in ("oneOf", "anyOf") and e.context else e
        for e in validator.iter_errors(doc.data)
    ]
    # A value of the wrong type also fails its enum/pattern/...: report only the type.
    mistyped = {tuple(e.absolute_path) for e in errors if e.validator == "type"}
    error_paths = {tuple(e.absolute_path) for e in errors} | {_path_of(p.path) for p in doc.problems}
    typed: dict[tuple, int] = {}  # path -> index in problems of its type problem
    for error in errors:
        path = tuple(error.absolute_path)
        if path in mistyped and error.validator != "type":
            continue
        if error.validator in ("additionalProperties", "unevaluatedProperties"):
            problems.extend(_unknown_key_problems(doc, schema, error))
            continue
        message = _schema_message(doc, error, error_paths)
        if message is None:
            continue
        if error.validator == "type" and path in typed:
            # one type problem per value: a receiver's schema and each of its per-type branches
            # say it; only the receiver's own knows its `type` words (the hint), so the longest wins
            at = typed[path]
            if len(message) > len(problems[at].message):
                problems[at] = doc.problem(path, message)
            continue
        if error.validator == "type":
            typed[path] = len(problems)
        problems.append(doc.problem(path, message))
    return problems


def _unknown_key_problems(doc: Document, schema: dict, error) -> list[Problem]:
    """One problem per key the schema does not know, located at the key, with a did-you-mean."""
    path = tuple(error.absolute_path)
    known = _known_keys(schema, error)
    hint = error.schema.get("x-unknown-hint") or error.schema.get("x-hint")  # the first: for unknown keys only
    problems = []
    job_keys = schema["$defs"]["job_settings"]["properties"] if error.schema.get("x-per-site") else {}
    patterns = [re.compile(p) for p in error.schema.get("patternProperties", {})]  # x- extension fields
    for key in sorted(set(error.instance) - set(known)):
        if any(p.search(key) for p in patterns):
            continue
        glued = re.fullmatch(r"([^:\s]+):(\S.*)", key)  # {a:1}: YAML reads one key 'a:1' (no space after ':')
        if glued and glued.group(1) in known:
            message = (
                f"unknown key {key!r}: YAML needs a space after the colon, or it reads one key: "
                f"write {glued.group(1)}: {glued.group(2)}"
            )
            problems.append(doc.problem(path + (key,), message, at_key=True))
            continue
        message = f"unknown key {key!r}" + (_suggest(key, known) or (f" ({hint})" if hint else ""))
        if key == "name" and "script" in known and "name" not in known:  # defaults.name
            message = "unknown key 'name' in defaults: a job's name is written in its own jobs entry"
        if key in RECIPE_KEYS and "script" in known:  # a job's or defaults' own keys
            message = f"unknown key {key!r}: {RECIPE_KEYS[key]}"
        home = _nested_home(schema, error.schema, key)
        if home:  # a trial's task_request_interval at job level, meant under server:
            message = f"unknown key {key!r} here: it is a key of {home} (indent it under {home}:)"
        if key in job_keys:
            message = (
                f"{key} cannot differ per site: a site sets only {error.schema['x-per-site']} "
                f"(its client app); set {key} for the whole job"
            )
        problems.append(doc.problem(path + (key,), message, at_key=True))
    return problems


#: Arguments of NVFlare 2.9's job recipes (``FedAvgRecipe``, ``NumpyFedAvgRecipe``) a user moving a
#: recipe here writes as keys (trial 46: ``initial_model`` was told "did you mean 'initial_ckpt'?",
#: which numpy jobs refuse): what this file says instead.
RECIPE_KEYS = {
    "initial_model": "a PyTorch job names its model class in model: {path: module.Class, args: {...}}; a numpy job "
    "starts from an array through a persistor entry of its own (server.components: {id: persistor, replaces: "
    "persistor, path: nvflare.app_common.np.np_model_persistor.NPModelPersistor, args: {model: [[...]]}})",
    "tracking_type": "a job's tracker is receiver: {type: mlflow} (or tensorboard, wandb)",
    "train_script": "the client script is script: (a path below client_scripts/)",
    "train_args": "the script's arguments are script_args:",
    "min_clients_per_round": "write min_clients:",
    "key_metric": "IntimeModelSelector's argument: add it as a server.components entry "
    "(path: nvflare.app_common.widgets.intime_model_selector.IntimeModelSelector, args: {key_metric: ...})",
    "stop_cond": "FedAvg's early stopping is an argument of the generated workflow: write workflow_args: "
    "{stop_cond: ..., patience: ...}",
    "patience": "FedAvg's early stopping is an argument of the generated workflow: write workflow_args: "
    "{stop_cond: ..., patience: ...}",
    "memory_gc_rounds": "an argument of the generated executor: write executor_args: {memory_gc_rounds: ...}",
}


def _properties(schema: dict, node) -> dict:
    """The properties of the mapping schema ``node``: its own and those of its ``allOf`` parts,
    ``$ref`` followed."""
    found, stack = {}, [node]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        if "$ref" in node:
            node = _resolve(schema, node["$ref"])
        found.update(node.get("properties", {}))
        stack.extend(node.get("allOf", []))
    return found


def _nested_home(schema: dict, node: dict, key: str) -> str | None:
    """The property of the mapping schema ``node`` whose own mapping schema has the property ``key``
    (``server`` for ``task_request_interval``), or None."""
    for name, sub in _properties(schema, node).items():
        if key in _properties(schema, sub):
            return name
    return None


def _array_model_hint(path: tuple, value) -> str:
    """For ``model: [[...]]`` (the numpy recipe's ``initial_model`` form, a trial's first try): where
    a numpy job's starting array goes; else empty."""
    if not (path and path[-1] == "model" and isinstance(value, list)):
        return ""
    return (
        " (model is a PyTorch job's torch.nn.Module, {path: module.Class, args: {...}}; a numpy job starts "
        "from an array through a persistor entry of its own: server: {components: [{id: persistor, replaces: "
        "persistor, path: nvflare.app_common.np.np_model_persistor.NPModelPersistor, args: {model: [[...]]}}]}, "
        "see the README's 'Your own starting model')"
    )


def _type_key_hint(doc: Document, error, path: tuple) -> str:
    """`` (write receiver: {type: mlflow})`` for a word where a mapping is expected whose ``type``
    key takes that word (a trial wrote ``receiver: mlflow``; from a ``--set``: ``receiver.type=mlflow``
    in the PATH); else empty."""
    schema = error.schema if isinstance(error.schema, dict) else {}
    choices = ((schema.get("properties") or {}).get("type") or {}).get("enum") or []
    if not (isinstance(error.instance, str) and error.instance in choices and path and isinstance(path[-1], str)):
        return ""
    if _from_set(doc, path):
        return f" (set {path[-1]}.type={error.instance}, or {path[-1]}={{type: {error.instance}}})"
    return f" (write {path[-1]}: {{type: {error.instance}}})"


def _schema_message(doc: Document, error, error_paths: set[tuple]) -> str | None:
    """The message for one schema error (not an unknown key), or None when another error says it.

    ``error_paths`` holds the paths of every schema and load problem: a ``uniqueItems`` error over
    a list with a mistyped item is left to that item's own message.
    """
    path = tuple(error.absolute_path)
    kind = error.validator
    if kind == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        message = f"missing required key {missing[0]!r}" if missing else error.message
    elif kind == "type":
        message = f"expected {_expected(error.validator_value)}, got {_describe(error.instance)}"
        message += (
            _yaml_hint(doc, path, error.validator_value, error.instance)
            or _whole_hint(error)
            or _type_key_hint(doc, error, path)
            or _array_model_hint(path, error.instance)
        )
    elif kind == "enum":
        choices = ", ".join(map(str, error.validator_value))
        message = f"must be one of: {choices} (got {_describe(error.instance)})"
        message += _suggest(error.instance, error.validator_value) if isinstance(error.instance, str) else ""
    elif kind == "pattern":
        message = f"{_describe(error.instance)} is not allowed here: must match {error.validator_value}"
    elif kind == "uniqueItems":
        if any(len(p) > len(path) and p[: len(path)] == path for p in error_paths):
            return None  # an item of the wrong type: its own message says it (yes/no/on read as booleans)
        message = _duplicate_items(error.instance)
    else:
        message = _plain_message(error)
    hint = error.schema.get("x-hint") if isinstance(error.schema, dict) else None
    if hint and kind in ("pattern", "enum", "minItems", "required"):
        message += f" ({hint})"
    return message


def _path_of(formatted: str) -> tuple:
    """A key path back from its formatted form, far enough to compare list items: ``jobs[0].tags[1]``."""
    out = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", formatted):
        out.append(int(index) if index else name)
    return tuple(out)


def _json_text(value) -> str:
    """``value`` as JSON (``true``, ``null``, ``["a"]``), never as a Python repr (``True``, ``None``)."""
    return json.dumps(value, ensure_ascii=False)


def _duplicate_items(items: list) -> str:
    """The ``uniqueItems`` message: which items repeat, by index."""
    seen = {}
    for i, item in enumerate(items):
        key = _json_text(item) if not isinstance(item, (dict, list)) else json.dumps(item, sort_keys=True)
        if key in seen:
            return f"items [{seen[key]}] and [{i}] are the same ({_json_text(item)}): each may appear only once"
        seen[key] = i
    return "holds the same item more than once"


#: Messages for schema keywords whose jsonschema text would show the value as a Python repr
#: (``[True] is too short``): keyword -> (message when the limit is 1, message with the limit).
_SIZE_MESSAGES = {
    "minItems": ("must not be empty", "must have at least {n} items"),
    "maxItems": ("must have at most one item", "must have at most {n} items"),
    "minLength": ("must not be empty", "must be at least {n} characters long"),
    "maxLength": ("must be at most one character long", "must be at most {n} characters long"),
    "minProperties": ("must not be empty", "must have at least {n} keys"),
    "maxProperties": ("must have at most one key", "must have at most {n} keys"),
}

#: Keywords whose jsonschema message shows only numbers (``0 is less than the minimum of 1``).
_NUMBER_KEYWORDS = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}
#: How a number limit reads (``must be at least 1, got 0``; jsonschema's own words for an exclusive
#: minimum, ``-5 is less than or equal to the minimum of 0``, puzzled a trial).
_NUMBER_WORDS = {
    "minimum": "at least",
    "exclusiveMinimum": "more than",
    "maximum": "at most",
    "exclusiveMaximum": "less than",
    "multipleOf": "a multiple of",
}


def _plain_message(error) -> str:
    """A schema error in plain words, with values written as YAML/JSON would (never ``True``/``None``)."""
    kind, limit = error.validator, error.validator_value
    if kind in _SIZE_MESSAGES:
        one, many = _SIZE_MESSAGES[kind]
        message = one if limit == 1 else many.format(n=limit)
        return message if message == "must not be empty" else f"{message} (has {len(error.instance)})"
    if kind == "const":
        return f"must be {_json_text(limit)} (got {_describe(error.instance)})"
    if kind in _NUMBER_WORDS and isinstance(error.instance, (int, float)):
        return f"must be {_NUMBER_WORDS[kind]} {_json_text(limit)}, got {_json_text(error.instance)}"
    if kind in _NUMBER_KEYWORDS or kind == "required":
        return error.message
    return f"does not fit the schema here ({kind})"


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
def _tree_of(script: str, mtime_ns: int, size: int) -> ast.Module | None:
    """A Python file's syntax tree, parsed once per version of the file (None when it cannot be parsed)."""
    try:
        return ast.parse(Path(script).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None


@lru_cache(maxsize=256)
def _writers_of(script: str, mtime_ns: int, size: int) -> frozenset[str]:
    tree = _tree_of(script, mtime_ns, size)
    if tree is None:
        return frozenset()
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nvflare.client.tracking"):
            found.update(a.name for a in node.names if a.name in WRITERS)
    return frozenset(found)


def _job_writers(doc: Document, job: Job) -> set[str]:
    """Tracking writers imported by the job's script or any Python file it ships with it."""
    root = doc.root / SCRIPTS_DIR
    writers = _script_writers(script_path(doc, job).resolve())
    for source in job.shipment.files.values() if job.shipment else ():
        if source.endswith(".py"):
            writers |= _script_writers(root / source)
    return writers


def script_path(doc: Document, job: Job) -> Path:
    """Where ``job``'s script lives: ``<folder of jobs.yaml>/client_scripts/<script>``.

    Args:
        doc (Document): the loaded ``jobs.yaml`` (its ``root`` is the folder holding it, resolved).
        job (Job): a job whose settings hold ``script``.

    Returns:
        Path: the path, symlinks not followed (it may not exist: :func:`check_jobs` says so).
    """
    return doc.root / SCRIPTS_DIR / job.settings["script"]


def _script_problem(doc: Document, job: Job) -> Problem | None:
    """The script must be a file below ``client_scripts/`` after every symlink is followed."""
    s = job.settings
    folder = _scripts_folder_problem(doc)
    if folder:
        return doc.problem(job.path_of("script"), folder)
    scripts_root = doc.root / SCRIPTS_DIR  # doc.root is resolved; client_scripts/ itself is not
    script = script_path(doc, job)
    resolved = script.resolve()
    if not resolved.is_relative_to(scripts_root):
        how = "resolves outside"
        if any(p.is_symlink() for p in [scripts_root, *list(script.parents)[: len(Path(s["script"]).parts)], script]):
            how = f"is a symlink to {resolved}, outside"
        return doc.problem(job.path_of("script"), f"script {s['script']!r} {how} {SCRIPTS_DIR}/")
    if ".." in Path(s["script"]).parts:
        plain = resolved.relative_to(scripts_root).as_posix()
        return doc.problem(job.path_of("script"), f"script {s['script']!r} must not contain '..': write {plain!r}")
    if not resolved.is_file():
        elsewhere = _found_elsewhere(scripts_root, s["script"], _writer_folder(doc, job.path_of("script")))
        available = sorted(p.relative_to(scripts_root).as_posix() for p in scripts_root.rglob("*.py"))
        hint = elsewhere or _suggest(s["script"], available)  # found elsewhere: no other name to suggest
        return doc.problem(
            job.path_of("script"), f"script {s['script']!r} not found in {_shown_folder(scripts_root)}{hint}"
        )
    return None


def _shown_folder(folder: Path) -> str:
    """``folder`` as a message names it: relative to the current folder when below it (``client_scripts/``,
    ``exp/client_scripts/``), else in full; with a trailing ``/``."""
    with contextlib.suppress(ValueError, OSError):
        folder = folder.relative_to(Path.cwd().resolve())
    return f"{folder.as_posix()}/"


def _found_elsewhere(scripts_root: Path, script: str, writer: Path | None = None) -> str:
    """When another ``client_scripts/`` than ``scripts_root`` holds ``script``, the one beside the jobs
    file ``writer`` that named it (a later ``--jobs`` file) or the current folder's: a note that scripts
    are looked up beside the first jobs file (a trial layered ``--jobs exp/exp.yaml --jobs mine.yaml``
    and was told its script, in ./client_scripts/, was not found)."""
    with contextlib.suppress(OSError):
        folders = [writer / SCRIPTS_DIR] if writer is not None else []
        for folder in [*folders, Path.cwd().resolve() / SCRIPTS_DIR]:
            if folder.resolve() != scripts_root and (folder / script).is_file():
                return (
                    f" ({_shown_folder(folder.resolve())}{script} exists, but scripts are looked up in the "
                    "client_scripts/ beside the first --jobs file)"
                )
    return ""


def _writer_folder(doc: Document, path: tuple) -> Path | None:
    """The folder of the jobs file that wrote ``path`` (a layered document's later file), else None."""
    origin = getattr(doc, "origin", None)
    if origin is None:
        return None
    written_by = origin(path)[0]
    return None if written_by is doc else Path(written_by.root)


def _relative_path_problem(value: str) -> str | None:
    """Why ``value`` is not a relative path that stays inside the folder it is joined to."""
    parts = value.replace("\\", "/").split("/")
    if value.startswith(("/", "\\", "~")) or (len(value) > 1 and value[1] == ":"):
        return "must be a relative path (no leading /, ~ or drive)"
    if ".." in parts:
        return "must not contain '..'"
    return None


def _named_file_problems(doc: Document, job: Job) -> list[Problem]:
    """Files the receiver writes must stay inside the run's folder: relative, no ``..``.

    ``artifact_location`` is joined to the job's run folder by NVFlare's ``MLflowReceiver``
    (``os.path.join(run_dir, artifact_location)``: an absolute path or ``..`` escapes it); a
    ``sqlite:///PATH`` tracking URI names the store file, relative to the server's working folder.
    """
    receiver = job.settings.get("receiver") or {}
    rpath = job.path_of("receiver")
    problems = []
    location = receiver.get("artifact_location")
    if isinstance(location, str) and "://" not in location:
        why = _relative_path_problem(location)
        if why:
            problems.append(
                doc.problem(
                    rpath + ("artifact_location",), f"{location!r} {why}: it names a folder inside the job's run folder"
                )
            )
    uri = receiver.get("tracking_uri")
    if isinstance(uri, str) and uri.startswith("sqlite:///"):
        why = _relative_path_problem(uri.removeprefix("sqlite:///").split("?")[0])
        if why:
            problems.append(
                doc.problem(
                    rpath + ("tracking_uri",),
                    f"the SQLite file of {uri!r} {why}: "
                    f"leave tracking_uri out to store {MLFLOW_DB} in the job's result folder",
                )
            )
    return problems


def _shipper(doc: Document) -> Shipper:
    """A :class:`~generator.ship.Shipper` for the project of ``doc`` (one per validation run)."""
    return Shipper(doc.root / SCRIPTS_DIR, Path(doc.file).parent / SCRIPTS_DIR, reserved_custom_files())


def _ship_problems(doc: Document, job: Job, shipper: Shipper, script_ok: bool) -> list[Problem]:
    """Plan what ``job`` ships in ``app/custom/`` (stored in ``job.shipment``); its errors, located."""
    s = job.settings
    shipment = shipper.plan(s["script"] if script_ok else None, tuple(s["custom_files"]))
    job.shipment = shipment
    return [doc.problem(job.path_of(who[0]) + who[1:], message) for who, message in shipment.errors]


def _duplicate_names(doc: Document) -> list[Problem]:
    """A job name used twice, over every entry with a string name (whether or not the rest fits).

    One problem per place a name was written (a hand-written ``name``, or a matrix job's ``name``,
    which stands for all its combinations), naming the duplicate names made there and the other
    uses of each: the first place says where each name is used again, every other place where it
    was first used (expanded matrix jobs by their combination).
    """
    seen: dict = {}
    for index, entry in enumerate(doc.data["jobs"]):
        name = entry.get("name") if isinstance(entry, dict) else None
        if isinstance(name, str):
            seen.setdefault(name, []).append(index)
    places: dict = {}  # (file, line, column) -> duplicate name -> indexes of its jobs written there
    for name, indexes in seen.items():
        if len(indexes) > 1:
            for index in indexes:
                places.setdefault(_written_at(doc, ("jobs", index, "name")), {}).setdefault(name, []).append(index)
    problems = []
    for names in places.values():
        phrases = []
        for name, here in names.items():
            uses = seen[name]
            if here[0] == uses[0]:
                again = "; ".join(doc.describe_job(i) for i in uses[1:])
                label = _combination_label(doc, uses[0])
                phrases.append(f"{name!r} ({f'with {label}; ' if label else ''}used again by {again})")
            else:
                phrases.append(f"{name!r} (first used by {doc.describe_job(uses[0])})")
        listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
        message = f"duplicate job name{'s' if len(phrases) > 1 else ''} {listed}"
        problems.append(doc.problem(("jobs", min(i for here in names.values() for i in here), "name"), message))
    return problems


def _matrix_name_clashes(doc: Document) -> list[Problem]:
    """A hand-written job named as a matrix job is written (``s`` beside a matrix job ``s``, whose
    jobs are ``s-1``, ``s-3``): ``--job``, ``--set jobs.s...`` and a later file's ``name: s`` each
    name one of them, not the same one (a trial's), so the name is refused at the hand-written job."""
    combinations = getattr(doc, "combinations", {})
    matrix_first: dict[str, int] = {}
    plain: list[tuple[str, int]] = []
    for index, entry in enumerate(doc.data["jobs"]):
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str):
            continue
        if name in combinations:
            matrix_first.setdefault(combinations[name][0], index)
        else:
            plain.append((name, index))
    return [
        doc.problem(
            ("jobs", index, "name"),
            f"job name {name!r} is also the name of a matrix job ({_shown_at(doc, matrix_first[name])}): --job "
            f"{name}, --set jobs.{name}... and a later file's `name: {name}` could not tell them apart; "
            "rename one of them",
        )
        for name, index in plain
        if name in matrix_first
    ]


def _shown_at(doc: Document, index: int) -> str:
    """``jobs.yaml:2:11``: where job ``index``'s ``name`` was written."""
    file, line, column = _written_at(doc, ("jobs", index, "name"))
    return f"{file}:{line}:{column}" if line else file


def _combination_label(doc: Document, index: int) -> str:
    """``num_rounds=1, params_transfer_type=FULL``: the combination job ``index`` was expanded from, or ``""``."""
    expanded = getattr(doc, "expanded", ())
    combo = expanded[index][1] if index < len(expanded) else None
    return combo.label if combo is not None else ""


def _job_problems(doc: Document, jobs: list[Job]) -> list[Problem]:
    """The cross-field problems of every job; those located in ``defaults`` name the jobs they are about."""
    problems = []
    owners: list[str] = []  # the name of the job each problem is about, in step with `problems`
    shipper = _shipper(doc)
    for job in jobs:
        found = _one_job_problems(doc, job, shipper)
        problems += found
        owners += [job.name] * len(found)
    return _once_per_folder(_naming_jobs(problems, owners), _scripts_folder_problem(doc))


def _scripts_folder_problem(doc: Document) -> str | None:
    """Why no script can be found at all: ``client_scripts/`` beside the jobs file is missing, not a
    folder, or a symlink out of the project (scripts are shipped only from the project's own folder).

    Args:
        doc (Document): the loaded jobs file(s); ``doc.root`` is the folder of the (first) file.

    Returns:
        str | None: the message each job's ``script`` problem then carries (the same for every job).
    """
    folder = doc.root / SCRIPTS_DIR
    if not os.path.lexists(folder):
        return f"no {SCRIPTS_DIR}/ folder in {doc.root}, beside the jobs file: every job's script is looked for there"
    resolved = folder.resolve()
    if not resolved.is_relative_to(doc.root):
        return (
            f"{SCRIPTS_DIR}/ is a symlink to {resolved}, outside {doc.root}: scripts are shipped only from "
            f"the project's own {SCRIPTS_DIR}/ folder (copy it in)"
        )
    if not resolved.is_dir():
        return f"{SCRIPTS_DIR} in {doc.root} is not a folder: every job's script is looked for in it"
    return None


def _once_per_folder(problems: list[Problem], folder: str | None) -> list[Problem]:
    """Keep the first of the problems that all say ``folder`` (:func:`_scripts_folder_problem`),
    counting the jobs it stands for: one cause, one line, not one per job."""
    if folder is None:
        return problems
    same = [p for p in problems if p.message.startswith(folder)]
    if len(same) < 2:
        return problems
    first = dataclasses.replace(same[0], message=f"{folder} (said once for {len(same)} jobs)")
    return [first if p is same[0] else p for p in problems if p is same[0] or not p.message.startswith(folder)]


def _one_job_problems(doc: Document, job: Job, shipper: Shipper) -> list[Problem]:
    """What a schema cannot check about one effective job, each check a function of its own."""
    return [
        *_script_problems(doc, job, shipper),
        *_clients_problems(doc, job),
        *_sites_problems(doc, job, shipper),
        *_named_file_problems(doc, job),
        *_client_count_problems(doc, job),
        *_command_line_problems(doc, job),
        *_expect_problems(doc, job),
        *_compare_problems(doc, job),
        *rewrite_problems(doc, job),
        *_deploy_map_problems(doc, job),
        *_line_problems(doc, job),
        *extras.problems(doc, job),
        *_starting_model_problems(doc, job),
        *_extra_args_problems(doc, job),
    ]


def _extra_args_problems(doc: Document, job: Job) -> list[Problem]:
    """``workflow_args`` and ``executor_args`` name no argument the generator writes itself
    (:func:`generator.components.extra_arg_problem`), located at the argument's key."""
    out = []
    for key in EXTRA_ARGS_KEYS:
        extra = job.settings.get(key)
        if not isinstance(extra, dict):
            continue  # the schema says so
        row = extra_args_row(job.settings, job.line, job.execution_mode, key)
        for name in extra:
            problem = extra_arg_problem(row, str(name))
            if problem:
                out.append(doc.problem(job.path_of(key, name), problem, at_key=True))
    return out


def _clients_problems(doc: Document, job: Job) -> list[Problem]:
    """``clients`` names each client once, and a written ``num_clients`` equals their number."""
    s = job.settings
    clients = s.get("clients")
    if not clients:
        return []
    problems = []
    where = job.path_of("clients")
    first: dict[str, int] = {}
    for i, name in enumerate(clients):
        if name in first:
            problems.append(
                doc.problem(
                    (*where, i),
                    f"duplicate client name {name!r} (also {where[-1]}[{first[name]}]): each client needs its own name",
                )
            )
        first.setdefault(name, i)
    at = job.path_of("num_clients")
    if at[-1] == "num_clients" and s["num_clients"] != len(clients):
        elsewhere = _elsewhere(doc, where, at)
        # a later file or --set can change a key but not remove it (a trial's production layer
        # that named its clients was told to leave out a num_clients its base file set)
        keep = (
            f", or set num_clients: {len(clients)} where clients is set (a later file or --set changes a key, "
            "it cannot remove one)"
            if elsewhere
            else ""
        )
        problems.append(
            doc.problem(
                at,
                f"num_clients ({s['num_clients']}) differs from the {_names(len(clients))} in clients"
                f"{elsewhere}: leave num_clients out (it is their number){keep}",
            )
        )
    return problems


def _sites_problems(doc: Document, job: Job, shipper: Shipper) -> list[Problem]:
    """Every ``sites`` name is a client; a multi-app job sets no ``deploy_map``; each client app's
    own settings pass the checks the job's pass (script, shipment, command line, NVFlare rewrites)."""
    s = job.settings
    sites = s.get("sites") or {}
    clients = client_names(s)
    problems = []
    for name in sites:
        if name not in clients:
            layer = ("jobs", job.index) if name in (job.entry.get("sites") or {}) else ("defaults",)
            elsewhere = ""
            named_by = job.path_of("clients") if s.get("clients") else job.path_of("num_clients")
            if (
                named_by[-1] in ("clients", "num_clients")
                and _written_at(doc, (*layer, "sites", name))[0] != _written_at(doc, named_by)[0]
            ):
                # files merge `sites` key by key: a later file that renames the clients keeps an
                # earlier file's site (a trial's production layer); a --set of the whole mapping replaces it
                owner = f"jobs.{job.entry.get('name', job.name)}" if layer[0] == "jobs" else "defaults"
                what = "the clients are" if named_by[-1] == "clients" else "num_clients is"
                elsewhere = (
                    f"; {what} set {_set_where(doc, named_by)}, and later "
                    f"files merge sites key by key: replace the whole mapping with --set '{owner}.sites={{...}}', "
                    f"or drop {name} from this file"
                )
            numbered = re.fullmatch(r"site-([1-9][0-9]*)", name)
            if numbered and not s.get("clients") and int(numbered.group(1)) > s["num_clients"]:
                # site-4 of a 3-client job: more likely num_clients than site-3 was meant (a trial)
                wanted = numbered.group(1)
                near = f" (num_clients is {s['num_clients']}: site-{wanted} needs num_clients: {wanted})"
            else:
                near = _suggest(name, clients)
            problems.append(
                doc.problem(
                    (*layer, "sites", name),
                    f"{name!r} is not a client of this job (its clients: {', '.join(clients)}){near}{elsewhere}",
                    at_key=True,
                )
            )
    if job.apps and job.path_of("deploy_map")[-1] == "deploy_map":
        problems.append(
            doc.problem(
                job.path_of("deploy_map"),
                "this job's sites run different client apps, and its deploy_map is made from them "
                "(app_server to the server, each app_<site> to its sites): leave deploy_map out",
            )
        )
    seen = set()
    for app in job.apps:
        if app.job.site is None:
            app.job.shipment = job.shipment  # the job's own settings: checked, and its shipment planned, above
            continue
        for problem in (
            *_script_problems(doc, app.job, shipper),
            *_command_line_problems(doc, app.job),
            *rewrite_problems(doc, app.job),
        ):
            if problem not in seen and ".sites." in problem.path:  # job-wide ones: reported by the job's checks
                seen.add(problem)
                problems.append(problem)
    return problems


def _script_problems(doc: Document, job: Job, shipper: Shipper) -> list[Problem]:
    """The script is set and lies below ``client_scripts/``; what it ships; metrics it streams have a receiver.

    Plans ``job.shipment`` (see :func:`_ship_problems`) whenever the job has a ``script``.
    """
    if "script" not in job.settings:
        return [doc.problem(("jobs", job.index), "missing required key 'script' (set it here or in `defaults`)")]
    problem = _script_problem(doc, job)
    problems = [problem] if problem else []
    problems.extend(_ship_problems(doc, job, shipper, script_ok=problem is None))
    if not problem:
        problems.extend(_metrics_problems(doc, job, _job_writers(doc, job)))
    # framework and model are the job's: checked once, not per client app; with no client_scripts/ at
    # all, the script's problem says so, and the model's module, looked for there, is not reported
    # too (trial 46: it named a client_scripts/mine/ of the project, not the missing bad/client_scripts/)
    if job.site is None and _scripts_folder_problem(doc) is None:
        problems.extend(framework_problems(doc, job, doc.root / SCRIPTS_DIR, shipper, script_ok=problem is None))
    return problems


def _written_at(doc: Document, path: tuple) -> tuple[str, int, int]:
    """(file, line, column) where the value at key path ``path`` of ``doc.data`` was written.

    For a merged document (:class:`generator.overrides.Layered`) that is the file, ``--set`` (line 0)
    or matrix value that wrote it; for one file, ``doc.file`` itself.
    """
    origin = getattr(doc, "origin", None)
    source, where = (doc, path) if origin is None else origin(path)[:2]
    located = source.problem(where, "")  # a Document of one file or ``--set``: no side effects
    return located.file, located.line, located.column


def _elsewhere(doc: Document, path: tuple, than: tuple) -> str:
    """``, set in lab.yaml:3:18`` when the value at ``path`` was written in another file (or ``--set``)
    than the value at ``than``, where a problem about both is located; else ``""``."""
    if _written_at(doc, path)[0] == _written_at(doc, than)[0]:
        return ""
    return f", set {_set_where(doc, path)}"


def _set_where(doc: Document, path: tuple) -> str:
    """``in lab.yaml:3:18``, or ``by --set #1`` (no line): where the value at ``path`` was written."""
    file, line, column = _written_at(doc, path)
    return f"in {file}:{line}:{column}" if line else f"by {file}"


def _from_set(doc: Document, path: tuple) -> bool:
    """Whether a ``--set`` wrote the value at ``path`` (it is read as YAML 1.2, and is fixed in a PATH)."""
    return _written_at(doc, path)[0].startswith("--set #")


def _client_count_problems(doc: Document, job: Job) -> list[Problem]:
    """``min_clients`` must not exceed ``num_clients`` (the server would wait for clients forever);
    ``workflow: cyclic`` needs 2 clients (NVFlare's CyclicController ``start_controller`` stops the
    run with "Not enough client sites." otherwise; its CyclicRecipe asks ``min_clients >= 2``).

    The ``min_clients`` problem is located at ``min_clients``; when ``num_clients`` was written in
    another file (a later ``--jobs`` file or a ``--set``), the message says where.
    """
    s = job.settings
    problems = []
    if s.get("clients") and s["min_clients"] > len(s["clients"]):
        at, other = job.path_of("min_clients"), job.path_of("clients")
        problems.append(
            doc.problem(
                at,
                f"min_clients ({s['min_clients']}) is larger than the {_names(len(s['clients']))} in clients"
                f"{_elsewhere(doc, other, at)}: the job could never start; lower min_clients or name more clients",
            )
        )
    elif s["min_clients"] > s["num_clients"]:
        at, other = job.path_of("min_clients"), job.path_of("num_clients")
        written = _elsewhere(doc, other, at) if other[-1] == "num_clients" else ""
        problems.append(
            doc.problem(
                at,
                f"min_clients ({s['min_clients']}) is larger than num_clients ({s['num_clients']}{written}): "
                "the job could never start; lower min_clients or raise num_clients",
            )
        )
    if "task_assignment_timeout" in s and s.get("workflow") != "cyclic":
        at = job.path_of("task_assignment_timeout")
        # a later file's workflow: fedavg was not named (trial 47): the error pointed at jobs.yaml only
        where = job.path_of("workflow")
        # only a written workflow (a schema default's path is the job entry): a trial's --set of
        # defaults.task_assignment_timeout named each fedavg job's first line as where it was "set"
        written = _elsewhere(doc, where, at) if where[-1] == "workflow" else ""
        problems.append(
            doc.problem(
                at,
                "task_assignment_timeout is an argument of NVFlare's CyclicController (workflow: cyclic); "
                f"this job's workflow is {s.get('workflow', 'fedavg')}{written}, which has none: leave it out",
            )
        )
    if s.get("workflow") == "cyclic" and s["num_clients"] < 2:
        problems.append(
            doc.problem(
                job.path_of("workflow"),
                f"workflow cyclic relays the model from client to client and needs num_clients of 2 or more "
                f"(got {s['num_clients']}): NVFlare's CyclicController stops with 'Not enough client sites.'",
            )
        )
    return problems


def _command_line_problems(doc: Document, job: Job) -> list[Problem]:
    """``command`` and ``script_args`` split like a POSIX shell command line and hold no NUL."""
    s = job.settings
    problems = []
    for key in ("command", "script_args"):
        if "\0" in s[key]:
            problems.append(
                doc.problem(job.path_of(key), "holds a NUL character (\\0), which no command line can carry")
            )
            continue
        try:
            shell_words(s[key])
        except ValueError as e:
            problems.append(doc.problem(job.path_of(key), f"cannot split {s[key]!r} like a shell command line: {e}"))
    return problems


def _expect_problems(doc: Document, job: Job) -> list[Problem]:
    """``expect.metric_points_per_site`` needs a receiver: points are counted in the receiver's store.
    ``expect.tolerance`` needs ``model_mean`` or ``final_model`` to apply to. ``expect.final_model``
    has the shape of the framework's model: one array (numpy's ``server.npy``) or a
    ``{parameter: array}`` state_dict (PyTorch)."""
    s = job.settings
    problems = []

    def where(key: str) -> tuple:
        path = job.path_of("expect")
        return path + (key,) if path[-1] == "expect" else path

    if s["expect"].get("metric_points_per_site") and not s.get("receiver"):
        problems.append(
            doc.problem(
                where("metric_points_per_site"),
                "metric points can only be counted in a receiver's store, and this job's receiver is "
                "{type: none}: give it the receiver its script's writer is made for (mlflow, tensorboard or "
                "wandb) or leave expect.metric_points_per_site out"
                if job.no_receiver
                else "metric points can only be counted in a receiver's store, and this job has no `receiver`: "
                "add one (e.g. receiver: {type: mlflow}) or leave expect.metric_points_per_site out",
            )
        )
    if "tolerance" in s["expect"] and not ({"model_mean", "final_model"} & set(s["expect"])):
        problems.append(
            doc.problem(
                where("tolerance"),
                "expect.tolerance applies to expect.model_mean and expect.final_model, and this job expects "
                "neither: add one, or leave tolerance out",
            )
        )
    final = s["expect"].get("final_model")
    pytorch = s.get("framework") == "pytorch"
    if final is not None and isinstance(final, dict) != pytorch:
        problems.append(
            doc.problem(
                where("final_model"),
                "a PyTorch job's final model is a state_dict (FL_global_model.pt): give {parameter: nested lists}"
                if pytorch
                else "a numpy job's final model is one array (NPModelPersistor's server.npy): give it as nested lists",
            )
        )
    elif final is not None:
        arrays = final.items() if pytorch else [(None, final)]
        for name, value in arrays:
            why = _array_problem(value)
            if why:
                base = where("final_model")
                path = base + (name,) if name is not None and base[-1] == "final_model" else base
                what = f"parameter {name!r}" if name is not None else "the final model"
                problems.append(doc.problem(path, f"{what} {why}: no saved model can equal it"))
    return problems


def _array_problem(value) -> str | None:
    """Why ``value`` (``expect.final_model``, or one parameter of it) is not an array as ``tolist()``
    gives one: a number (a 0-d tensor), or non-empty lists, equally long at each depth, of numbers at
    the same depth. None: it is one."""
    found = _array_shape(value)
    return found if isinstance(found, str) else None


#: The largest float32 (``np.finfo(np.float32).max``): NPModelPersistor's dtype.
_FLOAT32_MAX = 3.4028234663852886e38


def _float32_problem(value) -> str | None:
    """Why the numbers of ``value`` (nested lists of numbers) do not fit a float32, or None."""
    numbers = [value]
    while numbers:
        x = numbers.pop()
        if isinstance(x, list):
            numbers.extend(x)
        elif isinstance(x, int | float) and not isinstance(x, bool) and abs(x) > _FLOAT32_MAX:
            return f"holds {x:g}, beyond float32 (at most {_FLOAT32_MAX:g})"
    return None


def _array_shape(value) -> tuple | str:
    """The shape of ``value`` as :func:`_array_problem` reads it (``()`` for a number), or why it has none."""
    if isinstance(value, bool) or not isinstance(value, int | float | list):
        return f"holds {_describe(value)}, not a number"
    if not isinstance(value, list):
        return ()
    if not value:
        return "has an empty list"
    shapes = [_array_shape(x) for x in value]
    for found in shapes:
        if isinstance(found, str):
            return found
    if len(set(shapes)) > 1:
        return "is ragged: its lists at one depth differ in length or nesting (an array's rows are all alike)"
    return (len(value), *shapes[0])


def _starting_model_problems(doc: Document, job: Job) -> list[Problem]:
    """A ``server.components`` NPModelPersistor's ``model`` is an array NVFlare can build.

    NPModelPersistor turns its ``model`` argument into ``np.array(model, dtype=np.float32)`` when the
    server app starts (``nvflare/app_common/np/np_model_persistor.py``); a ragged list, or one holding
    text, fails there, after the job was deployed; an integer past float32 raises OverflowError, a
    float past it becomes ``inf``. An empty list builds an array of no numbers, which no round can
    train: refused as ``expect.final_model`` refuses it.
    """
    items = extras.extras_of(job, "server").get("components", [])
    where = extras.list_path(job, "server", "components")
    out = []
    for i, item in enumerate(items):
        model = (item.get("args") or {}).get("model") if isinstance(item.get("args"), dict) else None
        if item.get("path") != NP_PERSISTOR.path or model is None:
            continue
        why = _array_problem(model) or _float32_problem(model)
        if why:
            out.append(
                doc.problem(
                    (*where, i, "args", "model"),
                    f"the starting model {why}: NPModelPersistor needs an array of numbers "
                    "(it builds np.array(model, dtype=float32) when the server app starts)",
                )
            )
    return out


def _compare_problems(doc: Document, job: Job) -> list[Problem]:
    """``compare`` names the metric a sweep plot overlays across a matrix's jobs: only a job with ``matrix``."""
    if "compare" not in job.entry or job.name in getattr(doc, "combinations", {}):
        return []
    return [
        doc.problem(
            ("jobs", job.index, "compare"),
            "`compare` picks the metric plotted across the jobs of a `matrix`, and this job has no `matrix`: "
            "add one or leave `compare` out",
        )
    ]


def _naming_jobs(problems: list[Problem], owners: list) -> list[Problem]:
    """Say which jobs a problem located in ``defaults`` is about: one line per distinct problem.

    A setting in ``defaults`` is checked once per job (``min_clients: 3`` against each job's
    ``num_clients``); without the job names, such a line would not say where to look.
    """
    out = []
    grouped: dict[Problem, list[str]] = {}
    for problem, owner in zip(problems, owners, strict=True):
        if problem.path == "defaults" or problem.path.startswith(("defaults.", "defaults[")):
            grouped.setdefault(problem, []).append(owner)
        else:
            out.append(problem)
    for problem, names in grouped.items():
        names = list(dict.fromkeys(names))
        shown = ", ".join(repr(n) for n in names[:5])
        if len(names) > 5:
            shown += f" and {len(names) - 5:,} more"
        which = f"job {shown}" if len(names) == 1 else f"jobs {shown}"
        out.append(dataclasses.replace(problem, message=f"{problem.message} (for {which})"))
    return out


def _line_problems(doc: Document, job: Job) -> list[Problem]:
    """Settings the job's NVFlare line has no row for in :data:`generator.components.LINES` (a receiver type)."""
    receiver = job.settings.get("receiver")
    supported = receivers_of(job.line)
    if not receiver or receiver["type"] in supported:
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
    if job.apps:
        return []  # made from the apps: see _sites_problems
    dpath = job.path_of("deploy_map")
    problems = []
    clients = client_names(s)
    sites = {SERVER_SITE, *clients}
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
                        f"unknown site {site!r}: this job has {SERVER_SITE} and "
                        + (f"{clients[0]} .. {clients[-1]}" if "clients" not in s else ", ".join(clients)),
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
    if writers and not receiver and not job.no_receiver:
        names = ", ".join(sorted(writers))
        return [
            doc.problem(
                job.path_of("script"),
                f"script streams metrics with {names} but the job has no `receiver`: every metric would be lost "
                f"(add `receiver: {{type: {WRITERS[sorted(writers)[0]]}}}`; or, if the script streams nothing in "
                "this job, say so with `receiver: {type: none}`)",
            )
        ]
    return []


#: What NVFlare 2.9 does with another writer's points (``AnalyticsData.from_dxo(dxo, receiver=...)``
#: converts METRIC <-> SCALAR and METRICS <-> SCALARS): every metric point arrives, some under
#: another key. Measured here for each pair with the shipped scripts; tags/text from reading the receivers.
CROSS_WRITER = {
    ("SummaryWriter", "mlflow"): "add_scalars(main, {k: v}) is stored as k",
    ("SummaryWriter", "wandb"): "add_scalars(main, {k: v}) is stored as k",
    ("WandBWriter", "tensorboard"): "log({k: v}) is stored as metrics_k",
    ("WandBWriter", "mlflow"): "keys are kept",
    ("MLflowWriter", "tensorboard"): "log_metrics({k: v}) is stored as metrics_k; tags are not stored",
    ("MLflowWriter", "wandb"): "keys are kept; tags and text are not stored",
}


def receiver_warnings(doc: Document, jobs: list[Job]) -> list[Problem]:
    """Non-fatal findings about a job's ``receiver`` and the writers its script imports.

    A receiver whose script imports no tracking writer; a writer made for another receiver type
    (NVFlare converts its points, none is lost, but some keys change: :data:`CROSS_WRITER`).

    Args:
        doc (Document): the loaded ``jobs.yaml``.
        jobs (list[Job]): validated jobs (their ``shipment`` set by :func:`check_jobs`: the
            Python files a job ships are read for writers too).

    Returns:
        list[Problem]: the warnings, each message starting with ``warning:``; one located in
        ``defaults`` names the jobs it is about.
    """
    out = []
    owners: list[str] = []  # the name of the job each warning is about, in step with `out`
    for job in jobs:
        receiver = job.settings.get("receiver")
        if receiver and "script" in job.settings:
            script = script_path(doc, job)
            writers = _job_writers(doc, job) if script.is_file() else set()
            if script.is_file() and not writers:
                out.append(
                    doc.problem(
                        job.path_of("receiver"),
                        "warning: a receiver is configured but the script imports no nvflare.client.tracking writer",
                    )
                )
            for writer in sorted(w for w in writers if WRITERS[w] != receiver["type"]):
                out.append(
                    doc.problem(
                        job.path_of("receiver") + ("type",),
                        f"warning: the script streams with {writer} (made for `type: {WRITERS[writer]}`) into a "
                        f"{receiver['type']} receiver: NVFlare converts every metric point "
                        f"({CROSS_WRITER[(writer, receiver['type'])]})",
                    )
                )
        owners += [job.name] * (len(out) - len(owners))
    return _naming_jobs(out, owners)


#: The Client API calls a script needs to answer NVFlare's cross-site evaluation tasks
#: (``nvflare/client/api.py``): the ``validate`` task and the ``submit_model`` task.
CROSS_SITE_CALLS = ("is_evaluate", "is_submit_model")


@lru_cache(maxsize=256)
def _names_of(script: str, mtime_ns: int, size: int) -> frozenset[str]:
    """Every name, attribute and imported name a Python file spells (empty when it cannot be parsed)."""
    tree = _tree_of(script, mtime_ns, size)
    if tree is None:
        return frozenset()
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.ImportFrom):
            found.update(a.name for a in node.names)
    return frozenset(found)


def _job_names(doc: Document, job: Job) -> set[str] | None:
    """The names the job's script and the Python files it ships spell; None when the script cannot be read."""
    root = doc.root / SCRIPTS_DIR
    found: set[str] = set()
    for path in [script_path(doc, job).resolve()] + [
        root / s for s in (job.shipment.files.values() if job.shipment else ()) if s.endswith(".py")
    ]:
        try:
            st = path.stat()
        except OSError:
            if path == script_path(doc, job).resolve():
                return None
            continue
        found |= _names_of(str(path), st.st_mtime_ns, st.st_size)
    return found


def case_clash_warnings(doc: Document, jobs: list[Job]) -> list[Problem]:
    """Jobs whose names differ only in case (``A`` and ``a``): their folders are one folder on a
    case-insensitive file system (macOS, Windows), where one job's files would land in the other's
    (trial 47). A warning at the later job's name."""
    first: dict[str, Job] = {}
    out = []
    for job in jobs:
        other = first.setdefault(job.name.casefold(), job)
        if other is not job:
            out.append(
                doc.problem(
                    job.path_of("name") if job.site is None else ("jobs", job.index),
                    f"warning: {job.name!r} differs from job {other.name!r} only in case: on a case-insensitive "
                    "file system (macOS, Windows) their job folders are one; rename one",
                )
            )
    return out


def model_sweep_warnings(doc: Document, jobs: list[Job]) -> list[Problem]:
    """A matrix over ``model.args.*`` whose combinations all give the script the same ``script_args``:
    ``model`` builds the server's model only, and the clients build theirs in the script, so a
    changed shape fails round 1 with a state_dict size mismatch (the README's PyTorch section; a
    trial's sweep of ``hidden`` passed generate without a word). A warning at each such matrix key.
    """
    combinations = getattr(doc, "combinations", {})
    by_matrix: dict[tuple, list[Job]] = {}
    for job in jobs:
        found = combinations.get(job.name)
        if found and job.settings.get("framework") == "pytorch":
            by_matrix.setdefault(found[0], []).append(job)
    out = []
    for group in by_matrix.values():
        values = combinations[group[0].name][1]
        swept = [key for key in values if key.startswith("model.args.")]
        distinct = {combinations[job.name][1].get(key) for job in group for key in swept}
        if not swept or len(group) < 2 or len(distinct) < 2:
            continue
        if len({job.settings.get("script_args", "") for job in group}) > 1:
            continue  # the script is told something per combination
        for key in swept:
            out.append(
                doc.problem(
                    ("jobs", group[0].index, "matrix", key),
                    f"warning: the matrix varies {key}, but every combination runs the script with the same "
                    "script_args: model builds only the server's model, the clients build theirs in the script, "
                    "so a changed shape fails round 1 (state_dict size mismatch); give each value its own "
                    f"script_args with include, e.g. include: [{{{key}: VALUE, script_args: --{key.rsplit('.', 1)[-1]} "
                    "VALUE}]",
                    at_key=True,
                )
            )
    return out


def replaced_persistor_warnings(doc: Document, jobs: list[Job]) -> list[Problem]:
    """A PyTorch job whose ``server.components`` entry replaces the generated persistor: the job's
    ``model`` then only ships its module (the entry's own ``args`` build the server's model), so its
    ``model.args`` reach nothing; and when the entry's ``args.model.path`` is not ``model.path``,
    generate checked and shipped another class than the one the server builds (a trial's replacing
    persistor named ``model.MyNett`` with ``hiden: 3``, which passed without a word). Warnings at the
    entry's ``replaces``; the entry's ``model.args`` are checked against the class when the paths agree."""
    from .ptmodel import args_problems, model_files

    out = []
    for job in jobs:
        s = job.settings
        if s.get("framework") != "pytorch" or not isinstance(s.get("model"), dict) or "path" not in s["model"]:
            continue
        items = extras.extras_of(job, "server").get("components", [])
        for i, item in enumerate(items):
            if item.get("replaces") != "persistor":
                continue
            where = (*extras.list_path(job, "server", "components"), i)
            theirs = (item.get("args") or {}).get("model") if isinstance(item.get("args"), dict) else None
            theirs_path = theirs.get("path") if isinstance(theirs, dict) else None
            unused = " (and the job's model.args reach nothing)" if s["model"].get("args") else ""
            if theirs_path is not None and theirs_path != s["model"]["path"]:
                message = (
                    f"warning: this persistor builds the server's model from its own args.model ({theirs_path!r}), "
                    f"not the job's model.path ({s['model']['path']!r}), which generate checked and ships: make "
                    f"them the same class{unused}"
                )
            elif unused:
                message = (
                    "warning: this persistor replaces the generated PTFileModelPersistor, so the job's model.args "
                    "reach nothing: the persistor's own args build the server's model (model.path still ships "
                    "the model's module)"
                )
            else:
                message = ""
            if message:
                out.append(doc.problem((*where, "replaces"), message))
            if theirs_path == s["model"]["path"] and isinstance(theirs.get("args"), dict):
                files, why = model_files(doc.root / SCRIPTS_DIR, theirs_path, s.get("script"))
                if why is None:
                    for arg, text in args_problems(doc.root / SCRIPTS_DIR / files[-1][1], theirs_path, theirs["args"]):
                        at = (*where, "args", "model", "args", *((arg,) if arg else ()))
                        out.append(doc.problem(at, f"warning: {text}"))
    return out


def cross_site_warnings(doc: Document, jobs: list[Job]) -> list[Problem]:
    """A job with ``cross_site_eval: true`` whose script (and the files it ships) never spells
    ``is_evaluate`` or ``is_submit_model`` (:data:`CROSS_SITE_CALLS`): it cannot answer NVFlare's
    CrossSiteModelEval tasks, and ``simulate`` will fail the job for the missing matrix cells.

    Args:
        doc (Document): the loaded ``jobs.yaml``. jobs (list[Job]): validated jobs.

    Returns:
        list[Problem]: the warnings (message starting with ``warning:``), located at ``cross_site_eval``;
        one located in ``defaults`` names the jobs it is about.
    """
    out, owners = [], []
    for job in jobs:
        if not job.settings.get("cross_site_eval") or "script" not in job.settings:
            continue
        names = _job_names(doc, job)
        missing = [call for call in CROSS_SITE_CALLS if names is not None and call not in names]
        if missing:
            calls = " or ".join(f"flare.{call}()" for call in missing)
            example = "train_pt.py" if job.settings.get("framework") == "pytorch" else "train_eval.py"
            out.append(
                doc.problem(
                    job.path_of("cross_site_eval"),
                    f"warning: cross_site_eval is on but the script never calls {calls}: it cannot answer "
                    "NVFlare's cross-site evaluation tasks, and simulate will fail the job "
                    f"({example} answers them)",
                )
            )
            owners.append(job.name)
    return _naming_jobs(out, owners)


def shipping_warnings(doc: Document, jobs: list[Job]) -> list[Problem]:
    """Non-fatal findings about what ``jobs`` ship in ``app/custom/`` (see :mod:`generator.ship`).

    A size warning is located at the job's ``custom_files`` (or ``script``) in ``jobs.yaml``; a
    finding about an import at the import's module name in the ``.py`` file, once, naming the jobs
    that ship that file (e.g. a local module that is not shipped, a relative import in a script).

    Args:
        doc (Document): the loaded ``jobs.yaml``.
        jobs (list[Job]): validated jobs (their ``shipment`` is set by :func:`validate`).

    Returns:
        list[Problem]: the warnings, each message starting with ``warning:``.
    """
    located: dict[Problem, None] = {}
    by_finding: dict = {}
    for job in jobs:
        if job.shipment is not None:
            for who, message in job.shipment.warnings:
                located[doc.problem(job.path_of(who[0]) + who[1:], message)] = None
        for shipment in (job.shipment, job.model_shipment):
            for finding in shipment.findings if shipment is not None else ():
                if job.name not in by_finding.setdefault(finding, []):
                    by_finding[finding].append(job.name)
    out = list(located)
    for finding, names in sorted(
        by_finding.items(), key=lambda item: (str(item[0].file), item[0].line, item[0].column)
    ):
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        label = "job" if len(names) == 1 else "jobs"
        out.append(Problem(str(finding.file), finding.line, finding.column, "", f"{finding.message} ({label} {shown})"))
    return out


@dataclasses.dataclass
class Checked:
    """A document checked against the schema: what the spec stage and :func:`check_jobs` need.

    Attributes:
        doc (Document): the loaded ``jobs.yaml``.
        schema (dict): the jobs JSON Schema it was checked against.
        problems (list[Problem]): the load stage's problems and the schema problems (minus those
            that echo a load problem): :func:`check_jobs` reports them with the cross-field ones.
        fitting (set[int]): indexes of the ``jobs`` entries that fit the schema; the spec stage
            builds only these (``effective_jobs(..., only=fitting)``).
    """

    doc: Document
    schema: dict
    problems: list
    fitting: set


def check_document(doc: Document, schema: dict | None = None) -> Checked:
    """Check a loaded ``jobs.yaml`` against the JSON Schema (first half of the validate stage).

    Args:
        doc (Document): from :func:`generator.load.load`.
        schema (dict | None): the jobs schema; default: ``schema/jobs.schema.json`` (:func:`load_schema`).

    Returns:
        Checked: the problems found so far and the job entries that fit; raises nothing for a
        problem inside a job entry, so that :func:`check_jobs` reports it with every other job's.

    Raises:
        SpecError: a problem outside every job entry (``defaults``, a top-level key, the ``jobs``
            list itself): every job depends on it, so no cross-field check can be trusted. Holds
            every problem found so far, sorted by position.
    """
    schema = schema or load_schema()
    schema_problems = _schema_problems(doc, schema)
    problems = doc.problems + _without_echoes(doc, schema_problems)
    fitting = _fitting_jobs(doc, doc.problems + schema_problems)
    if fitting is None:
        raise SpecError(problems)
    return Checked(doc=doc, schema=schema, problems=problems, fitting=fitting)


def check_jobs(checked: Checked, jobs: list[Job]) -> list[Job]:
    """Check the effective jobs across fields (second half of the validate stage).

    Duplicate job names, scripts, receiver paths, command lines, ``min_clients``, ``deploy_map``,
    NVFlare rewrites and the job's NVFlare line (see the module docstring). Plans each job's
    ``shipment`` on the way.

    Args:
        checked (Checked): from :func:`check_document`.
        jobs (list[Job]): the effective jobs of ``checked.fitting``
            (:func:`generator.spec.effective_jobs`).

    Returns:
        list[Job]: ``jobs``, each with its ``shipment`` set, when neither ``checked`` nor these
        checks found a problem.

    Raises:
        SpecError: with ``checked.problems`` and every cross-field problem, sorted by position.
    """
    doc = checked.doc
    problems = checked.problems + _without_echoes(
        doc, _duplicate_names(doc) + _matrix_name_clashes(doc) + _job_problems(doc, jobs)
    )
    if problems:
        raise SpecError(problems)
    return jobs


def validate(doc: Document, schema: dict | None = None) -> list[Job]:
    """Validate a loaded ``jobs.yaml`` and return its effective jobs.

    The schema check, the spec stage and the cross-field checks in a row, as the pipeline runs
    them: :func:`check_document`, :func:`generator.spec.effective_jobs`, :func:`check_jobs`.

    Args:
        doc (Document): from :func:`generator.load.load`.
        schema (dict | None): the jobs schema; default: ``schema/jobs.schema.json``.

    Returns:
        list[Job]: the effective jobs, in file order.

    Raises:
        SpecError: with every problem found while loading (``doc.problems``), against the schema
            and across fields, sorted by position.
    """
    checked = check_document(doc, schema)
    return check_jobs(checked, effective_jobs(doc.data, checked.schema, only=checked.fitting))


#: ``jobs[3]`` at the start of a formatted key path: the problem is in that job's own entry.
_JOB_PATH = re.compile(r"^jobs\[(\d+)\](?=$|[.\[])")


def _fitting_jobs(doc: Document, problems: list[Problem]) -> set[int] | None:
    """Indexes of the ``jobs`` entries that fit the schema, so that their cross-field checks can run.

    A typo in one job must not hide another job's missing script. Returns None when a problem lies
    outside every job entry (``defaults``, a top-level key, the ``jobs`` list itself): every job
    depends on those, so no cross-field check can be trusted.
    """
    bad = set()
    for problem in problems:
        if problem in doc.owners:  # located where another file or a matrix value wrote it
            bad |= doc.owners[problem]
            continue
        match = _JOB_PATH.match(problem.path)
        if not match:
            return None
        bad.add(int(match.group(1)))
    for path in doc.incomplete:
        match = _JOB_PATH.match(path)
        if not match:
            return None
        bad.add(int(match.group(1)))
    jobs = doc.data.get("jobs") if isinstance(doc.data, dict) else None
    if not isinstance(jobs, list):
        return None
    return {i for i in range(len(jobs)) if i not in bad}


def _without_echoes(doc: Document, problems: list[Problem]) -> list[Problem]:
    """Drop problems that only echo one the load stage found.

    A refused value (a ``!!python`` tag, ``010``, ...) is left out of the data, so the schema
    would also call it missing or of the wrong type; a mapping that lost a refused key may miss
    a required key. The load stage's own message says more.
    """
    refused = [p.path for p in doc.problems]

    def echoes(problem: Problem) -> bool:
        if problem.path in doc.incomplete:
            return True
        return any(problem.path == r or problem.path.startswith((r + ".", r + "[")) for r in refused if r)

    return [p for p in problems if not echoes(p)]
