"""Spec stage: turn validated ``jobs.yaml`` data into effective jobs.

Takes the loaded data; gives one :class:`Job` per ``jobs`` entry with every setting filled in:
the job's own keys, over the ``defaults:`` section, over the ``default`` values written in the JSON
Schema (the schema is the only place a default is defined). Mappings are merged key by key.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field


@dataclass
class Job:
    """One job with all its settings.

    Attributes:
        name (str): the job name (folder name and meta.json ``name``).
        index (int): position in the ``jobs`` list.
        settings (dict): every job setting, defaults filled in (keys as in the schema).
        origin (dict[str, tuple]): top-level setting -> key path it came from in ``jobs.yaml``
            (``("jobs", i, key)`` or ``("defaults", key)``); absent for schema defaults.
    """

    name: str
    index: int
    settings: dict
    origin: dict = field(default_factory=dict)

    def path_of(self, key: str) -> tuple:
        """Key path in ``jobs.yaml`` that set ``key`` (the job entry itself if nothing did)."""
        return self.origin.get(key, ("jobs", self.index))

    @property
    def execution_mode(self) -> str:
        """ClientAPIExecutor ``execution_mode``: ``in_process`` or ``external_process``."""
        return "external_process" if self.settings["launch_external_process"] else "in_process"


#: Settings whose keys depend on their ``type``: merged only into a mapping of the same type.
TYPED_MAPPINGS = {"receiver"}


def merge(base: dict, over: dict) -> dict:
    """Deep-merge two mappings: keys of ``over`` win; nested mappings are merged, lists replaced.

    A ``receiver`` whose ``type`` differs from the one it would merge into (a job's
    ``receiver: {type: tensorboard}`` over a default ``{type: mlflow, ...}``) replaces it: the keys
    of one type mean nothing to another.
    """
    out = copy.deepcopy(base)
    for key, value in over.items():
        mergeable = isinstance(value, dict) and isinstance(out.get(key), dict)
        if mergeable and key in TYPED_MAPPINGS:
            mergeable = value.get("type", out[key].get("type")) == out[key].get("type")
        out[key] = merge(out[key], value) if mergeable else copy.deepcopy(value)
    return out


def _conditional_parts(schema: dict, value: dict, root: dict) -> list[dict]:
    """The ``then`` schemas of ``schema``'s ``allOf`` if/then parts whose ``if`` consts ``value`` meets.

    Only the form the jobs schema uses is understood: ``{"if": {"properties": {key: {"const": c}}},
    "then": {"$ref": "#/$defs/..."}}`` (e.g. the keys of each receiver ``type``).
    """
    parts = []
    for part in schema.get("allOf", []):
        cond, then = part.get("if"), part.get("then")
        if not cond or not then:
            continue
        consts = {k: p["const"] for k, p in cond.get("properties", {}).items() if "const" in p}
        if consts and all(value.get(k) == c for k, c in consts.items()):
            if "$ref" in then:
                ref, then = then["$ref"], root
                for name in ref.removeprefix("#/").split("/"):
                    then = then[name]
            parts.append(then)
    return parts


def fill_defaults(schema: dict, value: dict, root: dict | None = None) -> dict:
    """Fill missing keys of ``value`` from the ``default`` of each property in ``schema``.

    Recurses into nested object properties that are present (after filling), and into the
    if/then parts that apply to ``value`` (see :func:`_conditional_parts`; ``$ref`` resolved
    against ``root``, the whole schema). ``value`` is not modified; a filled copy is returned.
    """
    root = root or schema
    out = dict(value)
    for key, prop in schema.get("properties", {}).items():
        if key not in out and "default" in prop:
            out[key] = copy.deepcopy(prop["default"])
        if isinstance(out.get(key), dict) and ("properties" in prop or "allOf" in prop):
            out[key] = fill_defaults(prop, out[key], root)
    for part in _conditional_parts(schema, out, root):
        out = fill_defaults(part, out, root)
    return out


def effective_jobs(data: dict, schema: dict) -> list[Job]:
    """Build the effective jobs of schema-valid ``jobs.yaml`` data.

    Args:
        data (dict): the loaded document; must already have passed the schema.
        schema (dict): the jobs JSON Schema (its ``$defs.job_settings`` holds the defaults).

    Returns:
        list[Job]: in file order.
    """
    settings_schema = schema["$defs"]["job_settings"]
    defaults = data.get("defaults") or {}
    jobs = []
    for i, entry in enumerate(data["jobs"]):
        origin = {key: ("defaults", key) for key in defaults}
        origin.update({key: ("jobs", i, key) for key in entry})
        settings = fill_defaults(settings_schema, merge(defaults, entry), schema)
        jobs.append(Job(name=entry["name"], index=i, settings=settings, origin=origin))
    return jobs
