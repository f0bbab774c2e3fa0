"""Load stage: read ``jobs.yaml`` into plain data plus the position of every key and value.

Takes a path; gives a :class:`Document` (data made only of dict, list, str, int, float, bool and
None, and a map from key path to YAML line/column). PyYAML composes the node tree
(``yaml.compose`` with the safe loader); we build the data from the nodes ourselves so that
duplicate keys, non-standard tags and other YAML traps are refused with their position instead of
being silently accepted (PyYAML keeps the last of duplicate keys) or executed.

Positions are only needed to report a problem, so a file is first read the fast way: libyaml's
event stream (``yaml.CSafeLoader``) turned straight into data, with no node tree and no position
tables. That reader gives up on anything unusual (a YAML error, an anchor or alias, a tag other
than the core ones, a merge, duplicate or non-string key, not one mapping document); the file is
then read the careful way above, which produces every message. Positions of a fast-read file are
worked out the careful way the first time someone asks for one (:meth:`Document.where`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import Problem, SpecError

#: Tags a ``jobs.yaml`` may use: the YAML core types the safe loader resolves by itself.
SAFE_TAGS = {"tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "map", "seq")}

#: Plain scalars YAML 1.1 (PyYAML) reads as booleans although most people mean a word.
YAML11_BOOL_WORDS = re.compile(r"^(y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF)$")

#: Plain scalars that look like numbers but PyYAML reads as strings (YAML 1.1 needs a dot
#: before an exponent: ``1e-3`` is a string, ``1.0e-3`` a float).
NUMBER_LIKE = re.compile(r"^[-+]?(\d[\d_]*)?\.?\d*[eE][-+]?\d+$|^[-+]?\.\d+$")

Path_ = tuple  # a key path: a tuple of str (mapping keys) and int (sequence indexes)


@dataclass(frozen=True)
class Position:
    """1-based line and column of a node in the file."""

    line: int
    column: int


@dataclass
class Document:
    """A loaded ``jobs.yaml``.

    Attributes:
        file (str): the path as given by the user, used in messages.
        root (Path): the folder holding the file; scripts are looked up in ``root/client_scripts``.
        data (object): the plain data.
        text (str): the file's text (positions are worked out from it when first needed).
        values (dict[tuple, Position]): key path -> position of the value.
        keys (dict[tuple, Position]): key path -> position of the mapping key (for mapping members).
        plain_scalars (dict[tuple, str]): key path -> source text of each unquoted scalar.
    """

    file: str
    root: Path
    data: object
    text: str = field(default="", repr=False)
    _tables: tuple | None = field(default=None, repr=False)

    def _positions(self) -> tuple:
        if self._tables is None:
            self._tables = _locate(self.file, self.text).tables()
        return self._tables

    @property
    def values(self) -> dict:
        return self._positions()[0]

    @property
    def keys(self) -> dict:
        return self._positions()[1]

    @property
    def plain_scalars(self) -> dict:
        return self._positions()[2]

    def where(self, path: tuple, at_key: bool = False) -> Position:
        """Position of ``path``: its key (``at_key``) or value, else that of the nearest parent."""
        path = tuple(path)
        while True:
            if at_key and path in self.keys:
                return self.keys[path]
            if path in self.values:
                return self.values[path]
            if not path:
                return Position(1, 1)
            path = path[:-1]

    def problem(self, path: tuple, message: str, at_key: bool = False) -> Problem:
        """A :class:`Problem` located at ``path`` in this document."""
        pos = self.where(path, at_key)
        return Problem(self.file, pos.line, pos.column, format_path(path), message)


def format_path(path: tuple) -> str:
    """Format a key path like ``jobs[0].receiver.events[1]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _pos(mark) -> Position:
    return Position(mark.line + 1, mark.column + 1)


class _Builder:
    """Builds plain data from a composed node tree, collecting every problem on the way."""

    def __init__(self, file: str):
        self.file = file
        self.values: dict = {}
        self.keys: dict = {}
        self.plain_scalars: dict = {}
        self.problems: list[Problem] = []
        self._scalar = yaml.SafeLoader("")  # only its scalar constructors are used

    def tables(self) -> tuple:
        return self.values, self.keys, self.plain_scalars

    def fail(self, node, path, message):
        pos = _pos(node.start_mark)
        self.problems.append(Problem(self.file, pos.line, pos.column, format_path(path), message))

    def build(self, node, path: tuple):
        self.values[path] = _pos(node.start_mark)
        if node.tag not in SAFE_TAGS:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            self.fail(node, path, f"tag {tag!r} is not allowed: jobs.yaml holds plain data only")
            return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        if node.style is None:  # plain, unquoted
            self.plain_scalars[path] = node.value
        return self._scalar.construct_object(node)

    def _mapping(self, node, path):
        out = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.fail(key_node, path, "merge keys (<<) are not supported: use `defaults:` instead")
                continue
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
                shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else "a collection"
                self.fail(key_node, path, f"key {shown!r} must be a string (quote it)")
                continue
            key = key_node.value
            if key in out:
                first = self.keys[path + (key,)]
                self.fail(
                    key_node,
                    path + (key,),
                    f"duplicate key {key!r} (first at line {first.line}); YAML would silently keep only the last",
                )
                continue
            self.keys[path + (key,)] = _pos(key_node.start_mark)
            out[key] = self.build(value_node, path + (key,))
        return out


def load(path: str | Path) -> Document:
    """Read and parse ``jobs.yaml``.

    Args:
        path (str | Path): the file, as the user named it (used verbatim in messages).

    Returns:
        Document: the data and the positions of its keys and values.

    Raises:
        SpecError: the file cannot be read, is empty, is not valid YAML (tabs, bad indentation,
            several documents, ...), has duplicate keys, non-string keys, merge keys or any tag
            other than the core YAML types (e.g. ``!!python/object`` is refused, never run).
    """
    file = str(path)
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([Problem(file, 0, 0, "", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError([Problem(file, 0, 0, "", f"cannot read: {e}")]) from None
    root = p.resolve().parent
    data = _fast_data(text)
    if data is not _DECLINED:
        return Document(file=file, root=root, data=data, text=text)
    builder = _locate(file, text)
    return Document(file=file, root=root, data=builder.data, text=text, _tables=builder.tables())


def _locate(file: str, text: str) -> _Builder:
    """Read ``text`` the careful way: data plus the position of every key and value.

    Raises:
        SpecError: every YAML trap, located (see :func:`load`).
    """
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        message = " ".join(str(x) for x in (e.context, e.problem) if x)
        lines = text.splitlines()
        if 0 < line <= len(lines) and "\t" in lines[line - 1]:
            message += " (tab characters cannot indent YAML: use spaces)"
        raise SpecError([Problem(file, line, col, "", f"invalid YAML: {message}")]) from None
    except yaml.YAMLError as e:
        raise SpecError([Problem(file, 0, 0, "", f"invalid YAML: {e}")]) from None
    if not nodes or nodes[0] is None:
        raise SpecError([Problem(file, 1, 1, "", "file is empty: expected a mapping with a `jobs:` list")])
    if len(nodes) > 1:
        pos = _pos(nodes[1].start_mark)
        raise SpecError([Problem(file, pos.line, pos.column, "", "only one YAML document is allowed (found `---`)")])
    builder = _Builder(file)
    builder.data = builder.build(nodes[0], ())
    if builder.problems:
        raise SpecError(builder.problems)
    return builder


_DECLINED = object()
_STR = "tag:yaml.org,2002:str"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"


class _Decline(Exception):
    """The fast reader met something it leaves to the careful one."""


def _fast_data(text: str):
    """Plain data of ``text`` from libyaml's event stream, or ``_DECLINED``.

    Builds dicts, lists and scalars as the careful reader would (the same resolver and scalar
    constructors), without a node tree or positions. Declines, rather than judges, anything the
    careful reader might refuse or word an error about.
    """
    loader_class = getattr(yaml, "CSafeLoader", None)
    if loader_class is None:  # PyYAML built without libyaml
        return _DECLINED
    loader = loader_class(text)
    try:
        return _build_from_events(loader)
    except (_Decline, yaml.YAMLError):
        return _DECLINED
    finally:
        loader.dispose()


def _build_from_events(loader):
    constructors = loader.yaml_constructors
    resolve = loader.resolve
    get = loader.get_event
    documents = 0
    root = _DECLINED
    stack: list = []  # frames: [container, key] (key: _DECLINED while a mapping awaits its next key)
    strings: dict = {}

    def attach(value, is_str_key: bool = False):
        nonlocal root
        if not stack:
            root = value
            return
        frame = stack[-1]
        container = frame[0]
        if isinstance(container, list):
            container.append(value)
        elif frame[1] is _DECLINED:
            if not is_str_key or value in container:
                raise _Decline  # non-string or duplicate key
            frame[1] = value
        else:
            container[frame[1]] = value
            frame[1] = _DECLINED

    while loader.check_event():
        event = get()
        kind = type(event)
        if kind is yaml.ScalarEvent:
            if event.anchor is not None:
                raise _Decline
            tag = event.tag
            if tag is None or tag == "!":
                tag = resolve(yaml.ScalarNode, event.value, event.implicit)
            if tag == _STR:
                attach(strings.setdefault(event.value, event.value), True)  # one copy of each repeated string
                continue
            if tag not in SAFE_TAGS:
                raise _Decline
            attach(constructors[tag](loader, yaml.ScalarNode(tag, event.value)))
        elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
            if event.anchor is not None or event.tag not in (
                None,
                "!",
                _MAP if kind is yaml.MappingStartEvent else _SEQ,
            ):
                raise _Decline
            if stack and isinstance(stack[-1][0], dict) and stack[-1][1] is _DECLINED:
                raise _Decline  # a collection as a key
            stack.append([{} if kind is yaml.MappingStartEvent else [], _DECLINED])
        elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            attach(stack.pop()[0])
        elif kind is yaml.DocumentStartEvent:
            documents += 1
            if documents > 1:
                raise _Decline
        elif kind is yaml.AliasEvent:
            raise _Decline
    if not isinstance(root, dict):
        raise _Decline
    return root
