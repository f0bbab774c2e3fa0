"""Load stage: read ``jobs.yaml`` into plain data plus the position of every key and value.

Takes a path; gives a :class:`Document` (data made only of dict, list, str, int, float, bool and
None, and a map from key path to YAML line/column, worked out when a message first needs it).
PyYAML's composer builds the nodes (over libyaml's parser when PyYAML has it, nesting depth
bounded), and each item of ``jobs`` is turned into data as soon as it is composed, so a file of
10,000 jobs never holds more than one job's nodes. We build the data from the nodes ourselves so
that YAML traps are refused with their position instead of being silently accepted or executed:
duplicate keys (PyYAML keeps the last), non-core tags (``!!python/...`` is never run), YAML 1.1
numbers such as ``010`` (octal 8) or ``1:30`` (base 60, 90), ``.nan``/``.inf``, strings
that cannot be written as UTF-8, and aliases that expand without bound ("billion laughs").

Problems that stop parsing (not UTF-8, YAML syntax, too deep, alias bomb) raise at once; the
others are collected in :attr:`Document.problems` and reported by the validate stage together
with the schema problems, so a user sees every mistake of a file in one run. A plain value
followed by a comment one space after it (``script_args: --tag exp #3``: YAML keeps ``--tag exp``)
is valid YAML and a likely slip: it is collected in :attr:`Document.warnings`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
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

#: How an integer or a float must be written to mean what it says: plain decimal. YAML 1.1 also
#: reads ``0x1F``, ``0b101``, ``017`` (octal 15), ``1_000`` and ``1:30`` (base 60: 90).
DECIMAL_INT = re.compile(r"^[-+]?(0|[1-9][0-9]*)$")
DECIMAL_FLOAT = re.compile(r"^[-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$")

#: Lone UTF-16 surrogates (``"\ud800"`` in a double-quoted YAML string): not encodable as UTF-8.
SURROGATE = re.compile("[\ud800-\udfff]")

#: What follows a plain value when a comment starts one space after it: YAML ends the value there
#: (``script_args: --tag exp #3`` is ``--tag exp``). yamllint's ``comments`` rule wants two spaces.
CUT_BY_COMMENT = (" #", "\t#")

#: Largest ``jobs.yaml`` read, in bytes (a thousand jobs take about 100 kB).
MAX_BYTES = 2_000_000
#: Deepest nesting of lists and mappings (``jobs.yaml`` needs 5).
MAX_DEPTH = 64
#: Most values aliases (``*name``) may add beyond those written out in the file.
MAX_ALIAS_VALUES = 10_000

#: Read with libyaml's scanner and parser when PyYAML has them; the pure-Python reader is used
#: when not, and always to report a problem in the YAML itself (its messages are the reference).
LIBYAML = bool(getattr(yaml, "__with_libyaml__", False))


@dataclass(frozen=True)
class Position:
    """1-based line and column of a node in the file."""

    line: int
    column: int


class Document:
    """A loaded ``jobs.yaml``.

    Positions are not kept while loading (for 10,000 jobs they would take more memory than the
    data): :attr:`values`, :attr:`keys` and :attr:`plain_scalars` are worked out from
    :attr:`text` the first time a message needs one, by reading the file again with positions on.

    Attributes:
        file (str): the path as given by the user, used in messages.
        root (Path): the folder holding the file; scripts are looked up in ``root/client_scripts``.
        data (object): the plain data (a refused value is left out or None).
        text (str): the file's text.
        problems (list[Problem]): YAML traps found while loading; :func:`generator.validate.validate`
            reports them with the schema problems. A document with problems must not be used.
        warnings (list[Problem]): findings that do not stop generation, each message starting with
            ``warning:``: a plain value cut short by a comment one space after it (:data:`CUT_BY_COMMENT`).
        incomplete (set[str]): key paths of mappings that lost a refused key (a merge key, a
            key YAML reads as a boolean, ...): a "missing key" there may be an echo of it.
        owners (dict[Problem, set[int]]): problem -> indexes of the ``jobs`` entries it is about, for
            documents whose messages do not name the entry by its index here (merged files, expanded
            matrices: :class:`generator.overrides.Layered`); empty for a file read as it is.
    """

    def __init__(self, file: str, root: Path, data: object = None, text: str = ""):
        self.file = file
        self.root = root
        self.data = data
        self.text = text
        self.problems: list = []
        self.warnings: list = []
        self.incomplete: set = set()
        self.owners: dict = {}
        self._positions: tuple[dict, dict, dict] | None = None

    def _index(self) -> tuple[dict, dict, dict]:
        if self._positions is None:
            indexed = Document(self.file, self.root, text=self.text)
            indexed._positions = ({}, {}, {})
            _build_document(indexed, positions=True)
            self._positions = indexed._positions
        return self._positions

    @property
    def values(self) -> dict:
        """dict[tuple, Position]: key path -> position of the value."""
        return self._index()[0]

    @property
    def keys(self) -> dict:
        """dict[tuple, Position]: key path -> position of the mapping key (for mapping members)."""
        return self._index()[1]

    @property
    def plain_scalars(self) -> dict:
        """dict[tuple, str]: key path -> source text of each unquoted scalar."""
        return self._index()[2]

    def where(self, path: tuple, at_key: bool = False) -> Position:
        """Position of ``path``: its key (``at_key``) or value, else that of the nearest parent."""
        path = tuple(path)
        values, keys, _ = self._index()
        while True:
            if at_key and path in keys:
                return keys[path]
            if path in values:
                return values[path]
            if not path:
                return Position(1, 1)
            path = path[:-1]

    def problem(self, path: tuple, message: str, at_key: bool = False) -> Problem:
        """A :class:`Problem` located at ``path`` in this document.

        Args:
            path (tuple): key path, mapping keys (str) and list indexes (int), e.g. ``("jobs", 0, "script")``.
            message (str): what is wrong.
            at_key (bool): locate the mapping key rather than its value (an unknown key).

        Returns:
            Problem: at the position :meth:`where` gives, with ``path`` formatted by :func:`format_path`,
            and shown with the name of the ``jobs`` entry it lies in (:meth:`shown_path`).
        """
        pos = self.where(path, at_key)
        return Problem(self.file, pos.line, pos.column, format_path(path), message, self.shown_path(path))

    def shown_path(self, path: tuple) -> str:
        """Key path ``path`` as messages print it: a ``jobs`` entry named after its index when it has a name.

        Args:
            path (tuple): key path in :attr:`data`, e.g. ``("jobs", 1, "num_round")``.

        Returns:
            str: :func:`format_path` of ``path``, given the name of the entry it lies in
            (:func:`_entry_name`): ``jobs[1] (b).num_round``; ``jobs[1].num_round`` for an entry
            without a usable name.
        """
        return format_path(path, _entry_name(self.data, path))

    def describe_job(self, index: int) -> str:
        """How messages name the ``jobs`` entry at ``index``: ``jobs[3] (np-full)``, or ``jobs[3]``
        when it has no usable name (:meth:`shown_path`)."""
        return self.shown_path(("jobs", index))


#: Keys written bare in a key path; any other key is quoted: ``run_tags["mlflow.note.content"]``.
_BARE_KEY = re.compile(r"^[^\s.\[\]\"'\\]+$")


def quote(text: str) -> str:
    """``text`` (str) in double quotes, with quotes, backslashes and every unprintable character escaped.

    Escapes as Python writes them (``\\x07``, ``\\u2028``, ``\\U0001f600``), so a message stays one line.
    """

    def escape(ch: str) -> str:
        if ch in '"\\':
            return "\\" + ch
        if ch.isprintable():
            return ch
        code = ord(ch)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"

    return '"' + "".join(escape(ch) for ch in text) + '"'


def _usable_name(name: object) -> str | None:
    """``name`` (the value of a ``jobs`` entry's ``name`` key) if messages can name the entry by it:
    any string with more than blanks, valid or not (it may be what the message is about); else None."""
    return name if isinstance(name, str) and name.strip() else None


def _entry_name(data: object, path: tuple) -> str | None:
    """The usable name (:func:`_usable_name`) of the ``jobs`` entry that key path ``path`` lies in.

    Args:
        data (object): a document's data (:attr:`Document.data`), of any shape.
        path (tuple): key path in ``data``; only one starting ``("jobs", index)`` lies in an entry.

    Returns:
        str | None: the entry's ``name``; None when ``path`` is not in an entry, or the entry is
        not a mapping or has no string ``name``.
    """
    if len(path) < 2 or path[0] != "jobs" or not isinstance(path[1], int) or not isinstance(data, dict):
        return None
    jobs = data.get("jobs")
    if not isinstance(jobs, list) or not 0 <= path[1] < len(jobs) or not isinstance(jobs[path[1]], dict):
        return None
    return _usable_name(jobs[path[1]].get("name"))


#: Longest job name written into a key path; a longer (invalid) one is cut, ending in "...".
MAX_SHOWN_NAME = 64


def format_path(path: tuple, name: str | None = None) -> str:
    """Format a key path like ``jobs[0].receiver.events[1]`` or ``run_tags["a.b"]`` (always one line).

    The one place key paths become text. Without ``name`` the result is the form code compares
    (:attr:`generator.errors.Problem.path`); with it, the form messages print
    (:meth:`Document.shown_path`).

    Args:
        path (tuple): mapping keys (written bare when :data:`_BARE_KEY` matches, else quoted with
            :func:`quote`) and list indexes (int, written ``[i]``).
        name (str | None): the name of the ``jobs`` entry ``path`` starts in (``("jobs", 1, ...)``),
            written after its index: ``jobs[1] (b).num_round``; as it is when printable, else (or
            with blanks around it) quoted; cut after :data:`MAX_SHOWN_NAME` characters. Ignored for
            a path not in a ``jobs`` entry.
    """
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _BARE_KEY.match(str(part)) and str(part).isprintable():
            out += ("." if out else "") + str(part)
        else:
            out += f"[{quote(str(part))}]"
    if name is None or len(path) < 2 or path[0] != "jobs" or not isinstance(path[1], int):
        return out
    if len(name) > MAX_SHOWN_NAME:
        name = name[: MAX_SHOWN_NAME - 3] + "..."
    shown = name if name.isprintable() and name == name.strip() else quote(name)
    head = f"jobs[{path[1]}]"
    return f"{head} ({shown}){out[len(head) :]}"


def _pos(mark) -> Position:
    return Position(mark.line + 1, mark.column + 1)


def _text_position(text: str, index: int) -> Position:
    """1-based line and column of character ``index`` of ``text``."""
    line_start = text.rfind("\n", 0, index) + 1
    return Position(text.count("\n", 0, index) + 1, index - line_start + 1)


class _Composer(yaml.composer.Composer):
    """PyYAML's composer with a bound on nesting and a hook on the items of the ``jobs`` list.

    PyYAML's composer recurses once per level: :data:`MAX_DEPTH` bounds it. While ``on_job`` is
    set, each item of the top-level ``jobs`` list is handed to ``on_job(node, index)`` as soon as
    it is composed, and what that returns takes the node's place in the tree: the loader builds
    the item's data there and keeps only that, so at most one job's nodes exist at a time
    (10,000 jobs' nodes at once take about 45 MB). Mixed into ``yaml.SafeLoader`` (pure Python)
    or ``yaml.CSafeLoader`` (libyaml's scanner and parser; the composer is still this one).

    Attributes:
        value_nodes (int): nodes composed so far that are not mapping keys (an alias composes none):
            the bound for aliases ("billion laughs") is counted against it.
    """

    def _start(self):
        yaml.composer.Composer.__init__(self)
        self.on_job = None
        self.value_nodes = 0
        self._depth = 0
        self._in_jobs = False

    def compose_node(self, parent, index):
        self._depth += 1
        in_jobs = self._in_jobs
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"lists and mappings nest deeper than {MAX_DEPTH} levels", mark
                )
            if (parent is None or index is not None) and not self.check_event(yaml.AliasEvent):
                self.value_nodes += 1
            if self._depth == 2 and isinstance(index, yaml.ScalarNode) and index.value == "jobs":
                self._in_jobs = True
            node = super().compose_node(parent, index)
            if in_jobs and self._depth == 3 and isinstance(index, int) and self.on_job is not None:
                return self.on_job(node, index)
            return node
        finally:
            self._depth -= 1
            self._in_jobs = in_jobs


class _PureLoader(_Composer, yaml.SafeLoader):
    """PyYAML's pure-Python safe loader, composing through :class:`_Composer`."""

    def __init__(self, stream):
        yaml.SafeLoader.__init__(self, stream)
        self._start()


_LIBYAML_LOADER = yaml.CSafeLoader if LIBYAML else yaml.SafeLoader


class _FastLoader(_Composer, _LIBYAML_LOADER):
    """libyaml's scanner and parser (``yaml.CSafeLoader``) under :class:`_Composer`: about six
    times faster than the pure-Python loader, with the same nodes (a plain scalar's ``style`` is
    ``""`` instead of None)."""

    def __init__(self, stream):
        _LIBYAML_LOADER.__init__(self, stream)
        self._start()


class _Built(yaml.Node):
    """Placeholder for a ``jobs`` item already built into plain data (``value``)."""

    def __init__(self, value):
        super().__init__(None, value, None, None)


def _node_name(node) -> str | None:
    """The usable name (:func:`_usable_name`) a composed ``jobs`` item will have once built: the
    string value of its first ``name`` key (a later one is refused as a duplicate), None for a
    value the builder refuses (a tag, a lone surrogate) or reads as another type."""
    if not isinstance(node, yaml.MappingNode):
        return None
    str_tag = "tag:yaml.org,2002:str"
    for key, value in node.value:
        if isinstance(key, yaml.ScalarNode) and key.tag == str_tag and key.value == "name":
            if isinstance(value, yaml.ScalarNode) and value.tag == str_tag and not SURROGATE.search(value.value):
                return _usable_name(value.value)
            return None
    return None


class _AliasBomb(Exception):
    def __init__(self, problem: Problem):
        self.problem = problem


def _tag_name(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!")


def _number_trap(node, value) -> str | None:
    """Why a scalar that YAML 1.1 reads as a number must be refused, or None if it is fine."""
    text = node.value.strip()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and value != value or value in (float("inf"), float("-inf")):
        return f"{text} (not-a-number or infinity) is not allowed: write a finite number"
    if DECIMAL_INT.match(text) if isinstance(value, int) else DECIMAL_FLOAT.match(text):
        return None
    if ":" in text:
        how = "a base-60 number"
    elif "_" in text:
        how = "a number with '_' separators"
    elif re.match(r"^[-+]?0[xX]", text):
        how = "a hexadecimal number"
    elif re.match(r"^[-+]?0[bB]", text):
        how = "a binary number"
    elif re.match(r"^[-+]?0[0-9oO]", text):
        how = "an octal number"
    else:
        how = "a number"
    quote = "" if node.style else " (or quote it if you mean text)"
    return f"YAML 1.1 reads {text} as {how}, {value!r}: write it as plain decimal digits{quote}"


class _Builder:
    """Builds plain data from composed nodes, collecting every problem on the way.

    Args:
        doc (Document): receives ``incomplete``; with ``positions``, also every position.
        composer (_Composer): whose ``value_nodes`` bounds the values aliases may add.
        positions (bool): record where every key and value is (``doc._positions``).
    """

    def __init__(self, doc: Document, composer: _Composer, positions: bool):
        self.doc = doc
        self.composer = composer
        self.positions = doc._positions if positions else None
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.top_keys: dict[str, Position] = {}  # top-level key -> its position, for the alias bound
        self.current_job = None  # (("jobs", index), start mark, usable name) of the last jobs item begun
        self._scalar = yaml.SafeLoader("")  # only its scalar constructors are used
        self._built = 0

    def fail(self, node, path, message):
        self.problems.append(self._problem(_pos(node.start_mark), path, message))

    def _problem(self, pos: Position, path: tuple, message: str) -> Problem:
        """A problem at ``pos``, its path shown with the name of the ``jobs`` item being built
        (:meth:`Document.shown_path`; the item's data is not built yet: the name is read from its node)."""
        name = self.current_job[2] if self.current_job and path[:2] == self.current_job[0] else None
        return Problem(self.doc.file, pos.line, pos.column, format_path(path), message, format_path(path, name))

    def build(self, node, path: tuple):
        if isinstance(node, _Built):
            return node.value
        if len(path) == 2 and path[0] == "jobs" and isinstance(path[1], int):
            self.current_job = (path, node.start_mark, _node_name(node))
        self._built += 1
        if self._built > self.composer.value_nodes + MAX_ALIAS_VALUES:
            raise _AliasBomb(self._bomb(node, path))
        if self.positions is not None:
            self.positions[0].setdefault(path, _pos(node.start_mark))
        if node.tag not in SAFE_TAGS:
            self.fail(node, path, f"tag {_tag_name(node.tag)!r} is not allowed: jobs.yaml holds plain data only")
            return None
        if isinstance(node, yaml.MappingNode) != (node.tag == "tag:yaml.org,2002:map") or isinstance(
            node, yaml.SequenceNode
        ) != (node.tag == "tag:yaml.org,2002:seq"):
            kind = {yaml.MappingNode: "a mapping", yaml.SequenceNode: "a list"}.get(type(node), "a single value")
            self.fail(node, path, f"tag {_tag_name(node.tag)!r} does not fit {kind}")
            return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,)) for i, item in enumerate(node.value)]
        return self._scalar_value(node, path)

    def _bomb(self, node, path: tuple) -> Problem:
        """Where aliases run away: the ``jobs`` item being built, else the top-level key."""
        top = path[:1]
        if self.current_job and path[:2] == self.current_job[0]:
            top, pos = self.current_job[0], _pos(self.current_job[1])
        elif top and top[0] in self.top_keys:
            pos = self.top_keys[top[0]]
        else:
            pos = _pos(node.start_mark)
        advice = "write the values out" + ("" if top[:1] == ("defaults",) else " or share them through `defaults:`")
        message = f"aliases (*name) here expand to more than {MAX_ALIAS_VALUES:,} values: {advice}"
        return self._problem(pos, top, message)

    def _scalar_value(self, node, path):
        if not node.style and self.positions is not None:  # plain, unquoted (style None, or '' from libyaml)
            self.positions[2][path] = node.value
        if not node.style and node.value and self.doc.text.startswith(CUT_BY_COMMENT, node.end_mark.index):
            self._cut_by_comment(node, path)
        try:
            value = self._scalar.construct_object(node)
            self._scalar.constructed_objects.pop(node)  # its cache would keep every node alive
        except Exception as e:  # PyYAML's constructors raise ValueError, KeyError, ... on bad input
            detail = str(e).splitlines()[0] if str(e) else type(e).__name__
            self.fail(node, path, f"cannot read {node.value!r} as {_tag_name(node.tag)}: {detail}")
            return None
        trap = _number_trap(node, value)
        if trap:
            self.fail(node, path, trap)
            return None
        if isinstance(value, str) and SURROGATE.search(value):
            bad = SURROGATE.search(value).group()
            self.fail(
                node,
                path,
                f"holds {bad.encode('unicode_escape').decode()}, half of a UTF-16 surrogate pair, which cannot be "
                "written as UTF-8: write the character itself or its \\U0001XXXX escape",
            )
            return None
        return value

    def _cut_by_comment(self, node, path) -> None:
        """Warn that a plain value ends where a comment starts one space after it (yamllint's
        ``comments: min-spaces-from-content: 2`` convention): often the ``#...`` was meant as part of it."""
        gap = self.doc.text[node.end_mark.index]
        start = node.end_mark.index + 1
        end = self.doc.text.find("\n", start)
        comment = self.doc.text[start : len(self.doc.text) if end < 0 else end].rstrip()
        if len(comment) > 40:
            comment = comment[:37] + "..."
        pos = _pos(node.start_mark)
        after = "one space" if gap == " " else "one tab"
        if node.tag == "tag:yaml.org,2002:str":
            message = (
                f'warning: a "#" {after} after this value starts a comment, so YAML reads the value as '
                f"{quote(node.value)}; if {quote(comment)} belongs to it, write the whole value in quotes; "
                'if it is a comment, put two spaces before "#"'
            )
        else:
            message = (
                f'warning: a "#" {after} after this value starts a comment, where a value cut short is easy to '
                'miss: put two spaces before "#" (yamllint\'s convention)'
            )
        self.warnings.append(self._problem(pos, path, message))

    def _key_problem(self, key_node) -> str | None:
        if key_node.tag == "tag:yaml.org,2002:str":
            if SURROGATE.search(key_node.value):
                return "key holds half of a UTF-16 surrogate pair, which cannot be written as UTF-8"
            return None
        if not isinstance(key_node, yaml.ScalarNode):
            kind = "a mapping" if isinstance(key_node, yaml.MappingNode) else "a list"
            return f"a key must be a word, not {kind}"
        text = key_node.value
        if key_node.tag == "tag:yaml.org,2002:bool" and not key_node.style:
            return f'key {text} is read by YAML as a boolean, not a word: write "{text}" in quotes'
        if key_node.tag == "tag:yaml.org,2002:null" and not key_node.style:
            return f"key {text or '(empty)'} is read by YAML as nothing (null): write the key in quotes"
        return f"key {text!r} must be a string, but YAML reads it as {_tag_name(key_node.tag)}: write it in quotes"

    def _mapping(self, node, path):
        out = {}
        first = {}  # key -> mark of its first occurrence
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.fail(
                    key_node,
                    path + ("<<",),
                    "merge keys (<<) are not supported: put shared settings under `defaults:` (merged under every "
                    "job), or reuse a whole value through an alias (receiver: *name)",
                )
                self.doc.incomplete.add(format_path(path))
                continue
            problem = self._key_problem(key_node)
            if problem:
                shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
                self.fail(key_node, path + (shown,), problem)
                self.doc.incomplete.add(format_path(path))
                continue
            key = key_node.value
            if key in first:
                self.fail(
                    key_node,
                    path + (key,),
                    f"duplicate key {key!r} (first at line {first[key].line + 1}); "
                    "YAML would silently keep only the last",
                )
                continue
            first[key] = key_node.start_mark
            if self.positions is not None:
                self.positions[1][path + (key,)] = _pos(key_node.start_mark)
            if not path:
                self.top_keys[key] = _pos(key_node.start_mark)
            out[key] = self.build(value_node, path + (key,))
        return out


def _nearby(path: Path) -> str:
    """``; did you mean 'mine.yaml'?`` for the YAML file beside ``path`` whose name is nearest (a
    trial's ``--jobs mine.yml``), else ``""``."""
    import difflib

    try:
        names = [p.name for p in path.parent.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()]
    except OSError:
        return ""
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.8)
    return f"; did you mean {str(path.parent / close[0]) if str(path.parent) != '.' else close[0]!r}?" if close else ""


def _read_text(path: Path, file: str) -> str:
    """The file as text; a whole-file problem (missing, a folder, too big, not UTF-8) raises."""

    def fail(message, line=0, column=0):
        return SpecError([Problem(file, line, column, "", message)])

    try:
        if not path.exists():
            raise fail("file not found" + _nearby(path))
        if path.is_dir():
            raise fail("is a folder, not a file: give the path of a jobs YAML file")
        if not path.is_file():
            raise fail("is not a regular file (a device, a pipe, ...): give the path of a jobs YAML file")
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            raise fail(f"is larger than {MAX_BYTES:,} bytes, the most a jobs file may have", 1, 1)
    except OSError as e:
        raise fail(f"cannot read: {e.strerror or e}") from None
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):  # a trial's UTF-16 file was told only "byte 0xff"
        raise fail("is UTF-16 text (it starts with a UTF-16 byte-order mark): save the file as UTF-8", 1, 1)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        good = raw[: e.start].decode("utf-8")
        pos = _text_position(good, len(good))
        raise fail(
            f"is not UTF-8 text: byte 0x{raw[e.start]:02x} cannot be decoded (save the file as UTF-8)",
            pos.line,
            pos.column,
        ) from None


def _yaml_error(e: yaml.YAMLError, text: str, file: str) -> Problem:
    """A located problem for a PyYAML reader, scanner, parser or composer error."""
    if isinstance(e, yaml.reader.ReaderError):
        pos = _text_position(text, e.position)
        char = f"#x{e.character:04x}" if isinstance(e.character, int) else repr(e.character)
        return Problem(
            file, pos.line, pos.column, "", f"invalid YAML: control character {char} is not allowed: remove it"
        )
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    pos = _pos(mark) if mark else Position(1, 1)
    if isinstance(e, yaml.MarkedYAMLError):
        message = " ".join(str(x) for x in (e.context, e.problem) if x)
    else:
        message = str(e).splitlines()[0]
    lines = text.splitlines()
    if 0 < pos.line <= len(lines) and "\t" in lines[pos.line - 1]:
        message += " (tab characters cannot indent YAML: use spaces)"
    elif (getattr(e, "problem", None) or "").startswith("expected <block end>") and getattr(e, "context_mark", None):
        start = _pos(e.context_mark)
        message += (
            f" (this line does not line up with the block it is in, which starts at line {start.line}, "
            f"column {start.column}: indent it like the keys or items it belongs with)"
        )
    elif getattr(e, "problem", None) == "mapping values are not allowed here":
        message += (
            " (a key indented deeper than the key above it, which YAML reads as part of that key's "
            "value, or a value holding ': ' that needs quotes)"
        )
    return Problem(file, pos.line, pos.column, "", f"invalid YAML: {message}")


def _compose_and_build(doc: Document, loader_class: type, positions: bool) -> None:
    """Compose ``doc.text`` with ``loader_class`` and build ``doc.data`` and ``doc.problems``.

    Without ``positions``, each ``jobs`` item is built as soon as it is composed (see
    :class:`_Composer`). Raises yaml.YAMLError (and the odd ValueError of PyYAML), SpecError
    (empty file, several documents, a PyYAML bug such as ``chr()`` of ``"\\U00110000"``) and
    _AliasBomb.
    """
    loader = loader_class(doc.text)
    builder = _Builder(doc, loader, positions)
    if not positions:

        def on_job(node, index):
            return _Built(builder.build(node, ("jobs", index)))

        loader.on_job = on_job
    try:
        root = loader.get_node() if loader.check_node() else None
        if root is None:
            raise SpecError([Problem(doc.file, 1, 1, "", "file is empty: expected a mapping with a `jobs:` list")])
        if loader.check_node():
            loader.on_job = None
            pos = _pos(loader.get_node().start_mark)
            raise SpecError(
                [Problem(doc.file, pos.line, pos.column, "", "only one YAML document is allowed (found `---`)")]
            )
    except (ValueError, OverflowError, RecursionError) as e:  # PyYAML bugs, e.g. chr() of "\U00110000"
        mark = loader.get_mark() if hasattr(loader, "get_mark") else None
        pos = _pos(mark) if mark else Position(1, 1)
        raise SpecError([Problem(doc.file, pos.line, pos.column, "", f"invalid YAML near here: {e}")]) from None
    finally:
        loader.on_job = None  # the hook refers to the builder, which refers to the loader
        loader.dispose()
    doc.data = builder.build(root, ())
    doc.problems = builder.problems
    doc.warnings = sorted(builder.warnings)  # jobs items are built before the keys after `jobs:`


def _build_document(doc: Document, positions: bool = False) -> None:
    """Read ``doc.text`` into ``doc``: through libyaml when it is there and the file reads without
    error, else (and to report any error) through PyYAML's pure-Python reader.

    Raises:
        SpecError: see :func:`load`.
    """
    if LIBYAML:
        try:
            _compose_and_build(doc, _FastLoader, positions)
            return
        except Exception:  # any failure: the pure-Python reader reads the file again and says why
            doc.incomplete = set()
            if positions:
                doc._positions = ({}, {}, {})
    try:
        _compose_and_build(doc, _PureLoader, positions)
    except yaml.YAMLError as e:
        raise SpecError([_yaml_error(e, doc.text, doc.file)]) from None
    except _AliasBomb as bomb:
        raise SpecError([bomb.problem]) from None


def load(path: str | Path) -> Document:
    """Read and parse ``jobs.yaml``.

    Args:
        path (str | Path): the file, as the user named it (used verbatim in messages).

    Returns:
        Document: the data, plus the problems found while building it
        (:attr:`Document.problems`: duplicate keys, non-string keys, merge keys, non-core tags,
        YAML 1.1 numbers, ``.nan``, lone surrogates), which :func:`generator.validate.validate`
        reports with the schema problems, and the warnings (:attr:`Document.warnings`: a plain
        value a comment one space after it cuts short), which ``generate`` prints and goes on.
        Positions are worked out when a message needs one.

    Raises:
        SpecError: the file cannot be read (missing, a folder, larger than ``MAX_BYTES``, not
            UTF-8), is empty, is not valid YAML (tabs, bad indentation, a control character,
            several documents, nesting deeper than ``MAX_DEPTH``), or its aliases expand to more
            than ``MAX_ALIAS_VALUES`` values. Nothing in the file is ever executed: only the YAML
            core tags are constructed. A file that is not a mapping (a top-level list) loads: the
            validate stage reports it against the schema.
    """
    file = str(path)
    p = Path(path)
    text = _read_text(p, file)
    try:
        yaml.reader.Reader(text)  # refuses control characters, which libyaml may let through
    except yaml.YAMLError as e:
        raise SpecError([_yaml_error(e, text, file)]) from None
    doc = Document(file=file, root=p.resolve().parent, text=text)
    _build_document(doc)
    return doc


def load_text(doc: Document) -> Document:
    """Read ``doc.text`` (a YAML value given other than in a file, e.g. ``--set PATH=VALUE``) into
    ``doc`` with the rules of :func:`load`; the value may be any YAML node, not only a mapping.

    Raises:
        SpecError: as :func:`load`, located in ``doc.file``.
    """
    try:
        yaml.reader.Reader(doc.text)
    except yaml.YAMLError as e:
        raise SpecError([_yaml_error(e, doc.text, doc.file)]) from None
    _build_document(doc)
    return doc
