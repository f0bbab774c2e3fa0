"""Spec stage: turn validated ``jobs.yaml`` data into effective jobs.

Takes the loaded data; gives one :class:`Job` per ``jobs`` entry with every setting filled in:
the job's own keys, over the ``defaults:`` section, over the ``default`` values written in the JSON
Schema (the schema is the only place a fixed default is defined). Mappings are merged key by key.
One default depends on the machine and so is not in the schema: ``nvflare_version`` falls back to
the installed nvflare's release line (:func:`generator.lines.installed_line`).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from functools import lru_cache

from .layout import client_app_name, site_names
from .lines import installed_line

#: The settings a ``sites:`` entry may set for one site: those of its client app alone
#: (``config_fed_client.json``'s executor, ClientAPIExecutor / ScriptRunner arguments, the app's
#: ``custom/`` folder, and the ``client`` escape hatch's entries, :mod:`generator.extras`). Every
#: other setting is the job's, for the server or every site.
SITE_KEYS = ("script", "script_args", "launch_external_process", "command", "custom_files", "client")


#: A key :meth:`Job.path_of` did not find (``None`` is a value a key may hold).
_ABSENT = object()


@dataclass
class Job:
    """One job with all its settings.

    Attributes:
        name (str): the job name (folder name and meta.json ``name``).
        index (int): position in the ``jobs`` list.
        settings (dict): every job setting, defaults filled in (keys as in the schema).
        entry (dict): the job's own keys, as written in ``jobs.yaml``.
        defaults (dict): the ``defaults:`` section (one dict shared by every job).
        shipment (generator.ship.Shipment | None): what the job copies into ``app/custom/`` besides
            its script (its local modules and ``custom_files``) and the findings about its imports;
            set by the validate stage. None: the script alone.
        model_shipment (generator.ship.Shipment | None): for ``framework: pytorch``, the local modules
            the model's module imports (:meth:`generator.ship.Shipper.plan_model`), shipped beside it;
            set by the validate stage.
        site (str | None): for the job of one client app (:class:`ClientApp`): the site whose
            ``sites`` entry its settings include (:meth:`path_of` then locates those keys there).
        apps (list[ClientApp]): a multi-app job's client apps (see :func:`client_apps`); empty
            when every site runs the same client app (one app, ``app``, as without ``sites``).
        no_receiver (bool): the job's ``receiver`` is ``{type: none}`` (its own, or from ``defaults``
            or an override): ``settings`` then holds no ``receiver``, and a tracking writer its script
            imports is not refused for want of one.
    """

    name: str
    index: int
    settings: dict
    entry: dict = field(default_factory=dict, repr=False)
    defaults: dict = field(default_factory=dict, repr=False)
    shipment: object = field(default=None, repr=False)
    model_shipment: object = field(default=None, repr=False)
    site: str | None = None
    apps: list = field(default_factory=list, repr=False)
    no_receiver: bool = False

    def path_of(self, key: str, *inner: str) -> tuple:
        """Key path in ``jobs.yaml`` that set ``key`` (the job entry itself if nothing did).

        Args:
            key (str): a top-level job setting, e.g. ``"min_clients"``.
            inner (str): keys inside it (``path_of("model", "args", "hidden")``): the layer whose
                mapping holds that key is the one that set it (a job's ``model`` may hold only
                ``path`` while ``defaults`` gives ``args``); where none holds it, ``key``'s own path.

        Returns:
            tuple: ``("jobs", index, key)``, ``("defaults", key)`` or, for a schema default,
            ``("jobs", index)``; for a client app's job, ``("jobs", index, "sites", site, key)`` (or
            under ``defaults``) when its site's entry sets ``key``; with ``inner``, those keys appended.
        """
        layers = []
        if self.site is not None:
            for where, layer in ((("jobs", self.index), self.entry), (("defaults",), self.defaults)):
                layers.append(((*where, "sites", self.site), (layer.get("sites") or {}).get(self.site) or {}))
        layers += [(("jobs", self.index), self.entry), (("defaults",), self.defaults)]
        if inner:
            for where, layer in layers:
                node = layer.get(key)
                for part in inner:
                    node = node.get(part, _ABSENT) if isinstance(node, dict) else _ABSENT
                if node is not _ABSENT:
                    return (*where, key, *inner)
        for where, layer in layers:
            if key in layer:
                return (*where, key)
        return ("jobs", self.index)

    @property
    def line(self) -> str:
        """The NVFlare release line the job is written for (``nvflare_version``): ``"2.7"`` or ``"2.9"``."""
        return self.settings["nvflare_version"]

    @property
    def execution_mode(self) -> str:
        """ClientAPIExecutor ``execution_mode``: ``in_process`` or ``external_process``."""
        return "external_process" if self.settings["launch_external_process"] else "in_process"


@dataclass
class ClientApp:
    """One client app of a multi-app job: an app folder and the sites it is deployed to.

    Attributes:
        name (str): the app folder, ``app_<first site>`` (:func:`generator.layout.client_app_name`).
        sites (list[str]): the sites that run it, in ``clients`` order; sites whose settings are
            the same share one app.
        job (Job): the job with this app's settings (the job's, with its first site's ``sites``
            entry merged over them; ``job.site`` names that site).
    """

    name: str
    sites: list
    job: Job


def client_names(settings: dict) -> list[str]:
    """A job's client names: its ``clients``, else ``site-1`` .. ``site-<num_clients>`` (the simulator's ``-n``)."""
    return list(settings.get("clients") or site_names(settings["num_clients"]))


def client_apps(job: Job) -> list[ClientApp]:
    """The client apps of ``job``: one per distinct client configuration (:data:`SITE_KEYS`).

    Each client's settings are the job's with its ``sites`` entry merged over them; clients with
    equal values of every :data:`SITE_KEYS` key share an app, named after the first of them.

    Returns:
        list[ClientApp]: in ``clients`` order of each app's first site; empty when every client
        has the same configuration (the job keeps its single app, ``app``).
    """
    sites = job.settings.get("sites") or {}
    if not sites:
        return []
    groups: dict[str, ClientApp] = {}
    for name in client_names(job.settings):
        own = sites.get(name) or {}
        settings = merge(job.settings, {k: v for k, v in own.items() if k in SITE_KEYS})
        key = repr([settings.get(k) for k in SITE_KEYS])
        if key in groups:
            groups[key].sites.append(name)
            continue
        app_job = Job(
            job.name,
            job.index,
            settings,
            job.entry,
            job.defaults,
            site=name if own else None,
            no_receiver=job.no_receiver,
        )
        groups[key] = ClientApp(client_app_name(name), [name], app_job)
    return list(groups.values()) if len(groups) > 1 else []


#: Settings whose keys depend on their ``type``: merged only into a mapping of the same type.
TYPED_MAPPINGS = {"receiver"}


@lru_cache(maxsize=1024)
def shell_words(text: str) -> tuple[str, ...]:
    """``text`` split like a POSIX shell command line (``shlex.split``), cached.

    Raises:
        ValueError: unbalanced quotes or a trailing escape.
    """
    return tuple(shlex.split(text))


def _copy(value):
    """A copy of plain YAML/JSON data (dict, list and immutable scalars); cheaper than deepcopy."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def merge(base: dict, over: dict) -> dict:
    """Deep-merge two mappings: keys of ``over`` win; nested mappings are merged, lists replaced.

    A ``receiver`` whose ``type`` differs from the one it would merge into (a job's
    ``receiver: {type: tensorboard}`` over a default ``{type: mlflow, ...}``) replaces it: the keys
    of one type mean nothing to another. Neither argument is modified; the result shares no mutable
    object with them.

    Args:
        base (dict): the lower layer (e.g. the ``defaults:`` section).
        over (dict): the upper layer (e.g. a job entry).

    Returns:
        dict: the merged mapping.
    """
    out = _copy(base)
    for key, value in over.items():
        mergeable = isinstance(value, dict) and isinstance(out.get(key), dict)
        if mergeable and key in TYPED_MAPPINGS:
            mergeable = value.get("type", out[key].get("type")) == out[key].get("type")
        out[key] = merge(out[key], value) if mergeable else _copy(value)
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
            out[key] = _copy(prop["default"])
        if isinstance(out.get(key), dict) and ("properties" in prop or "allOf" in prop):
            out[key] = fill_defaults(prop, out[key], root)
    for part in _conditional_parts(schema, out, root):
        out = fill_defaults(part, out, root)
    return out


#: The ``receiver`` ``type`` that means no receiver, on purpose (``schema/jobs.schema.json``, ``receiver_none``).
NO_RECEIVER = "none"


def effective_jobs(data: dict, schema: dict, only: set[int] | None = None) -> list[Job]:
    """Build the effective jobs of schema-valid ``jobs.yaml`` data.

    Args:
        data (dict): the loaded document; must already have passed the schema (``defaults`` and
            every job entry built, or those listed in ``only``).
        schema (dict): the jobs JSON Schema (its ``$defs.job_settings`` holds the defaults).
        only (set[int] | None): build only the entries at these indexes of ``jobs`` (the ones that
            fit the schema); None: all.

    Returns:
        list[Job]: in file order; each keeps its index in ``jobs``. A job that sets no
        ``nvflare_version`` (here or in ``defaults``) gets the installed nvflare's release line
        (:func:`generator.lines.installed_line`; 2.9 when none or an unsupported one is installed),
        the one default the schema cannot hold. A job with ``clients`` and no ``num_clients``
        written gets ``num_clients`` = the number of its clients. ``Job.apps``: :func:`client_apps`.
        A ``receiver`` of type :data:`NO_RECEIVER` is removed from the settings (``Job.no_receiver``).
    """
    settings_schema = schema["$defs"]["job_settings"]
    defaults = data.get("defaults") or {}
    line = installed_line()
    jobs = []
    for i, entry in enumerate(data["jobs"]):
        if only is not None and i not in only:
            continue
        settings = fill_defaults(settings_schema, merge(defaults, entry), schema)
        settings.setdefault("nvflare_version", line)
        if settings.get("clients") and "num_clients" not in entry and "num_clients" not in defaults:
            settings["num_clients"] = len(settings["clients"])
        no_receiver = (settings.get("receiver") or {}).get("type") == NO_RECEIVER
        if no_receiver:
            del settings["receiver"]
        job = Job(
            name=entry["name"], index=i, settings=settings, entry=entry, defaults=defaults, no_receiver=no_receiver
        )
        job.apps = client_apps(job)
        jobs.append(job)
    return jobs
