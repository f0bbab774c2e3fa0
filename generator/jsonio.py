"""JSON text of the files the generator writes: parsed and pretty-printed with ``orjson``, byte for
byte as Python's ``json`` module writes them (``indent=2``, non-ASCII kept as is, a newline at the end).

``orjson`` (Rust) writes the same bytes as ``json.JSONEncoder(ensure_ascii=False, indent=2)`` for
every value but two kinds of number, where this module uses ``json`` instead:
- a float between -1e-4 and 1e-4 (not 0): Python writes ``1e-05``, orjson ``0.00001`` or ``1e-7``;
- an integer of 20 digits or more (beyond 64 bits): orjson cannot write one, and reads one as a float.
Whatever orjson refuses (``NaN``, a lone surrogate, a number too large for a float) goes to ``json``
too, so every error message stays Python's.
"""

from __future__ import annotations

import json
import re

import orjson

#: Pretty-printing as the files are written: 2 spaces, a newline at the end.
_OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE

#: Number text that orjson may read or write differently from ``json`` (see the module docstring):
#: an exponent, 19 digits in a row, a decimal below 1e-4. Matching other text only costs speed.
_RISKY_TEXT = re.compile(r"[0-9][eE]|[0-9]{19}|0\.0000")

#: A number of 19 digits or more in JSON bytes (after ``:``, ``[``, ``,`` or a space; a hex digest
#: in a string is not one): it may be beyond 64 bits, which orjson reads as a float.
_LONG_NUMBER = re.compile(rb"(?:^|[:\[,\s])-?[0-9]{19}")

#: In orjson's output: how it writes a float between -1e-4 and 1e-4 (``1e-7``, ``0.00001``).
_RISKY_OUTPUT = re.compile(rb"[0-9]e-|0\.0000")

#: Python's own pretty-printer, for what orjson does not write as it does.
_ENCODER = json.JSONEncoder(ensure_ascii=False, indent=2)
_ASCII_ENCODER = json.JSONEncoder(indent=2)


def pretty(value, ensure_ascii: bool = False) -> bytes:
    """``value`` as the JSON text of a file: ``json.dumps(value, ensure_ascii=ensure_ascii, indent=2)``
    plus a newline, UTF-8. Key order kept; with ``ensure_ascii`` json writes DEL (0x7f) and every
    non-ASCII character as ``\\uXXXX``, so output holding one is left to json. Raises TypeError/ValueError
    as ``json`` does."""
    try:
        out = orjson.dumps(value, option=_OPTIONS)
    except orjson.JSONEncodeError:
        out = None
    if out is None or _RISKY_OUTPUT.search(out) or (ensure_ascii and (not out.isascii() or b"\x7f" in out)):
        encoder = _ASCII_ENCODER if ensure_ascii else _ENCODER
        return (encoder.encode(value) + "\n").encode("utf-8")
    return out


def write_pretty(file, value, ensure_ascii: bool = False, depth: int = 2) -> None:
    """Write :func:`pretty`'s bytes of ``value`` to the binary ``file`` piece by piece: the mappings
    of the first ``depth`` levels key by key, each deeper value whole. A large manifest (10,000 jobs:
    about 10 MB of JSON) is never held as one string."""
    _write_level(file, value, ensure_ascii, depth, 0)
    file.write(b"\n")


def _write_level(file, value, ensure_ascii: bool, depth: int, level: int) -> None:
    if depth == 0 or not isinstance(value, dict) or not value:
        text = pretty(value, ensure_ascii)[:-1]  # without its newline
        file.write(text.replace(b"\n", b"\n" + b"  " * level) if level else text)
        return
    inner = b"\n" + b"  " * (level + 1)
    file.write(b"{")
    for i, (key, item) in enumerate(value.items()):
        file.write((b"," if i else b"") + inner + pretty(key, ensure_ascii)[:-1] + b": ")
        _write_level(file, item, ensure_ascii, depth - 1, level + 1)
    file.write(b"\n" + b"  " * level + b"}")


def reformat(text: str, parse_constant) -> bytes:
    """JSON ``text`` parsed and written again as :func:`pretty` writes it.

    Args:
        text (str): JSON text, e.g. a rendered config.
        parse_constant: ``json.loads``' hook for ``NaN``, ``Infinity`` and ``-Infinity``.

    Raises:
        ValueError: ``text`` is not JSON (a ``json.JSONDecodeError``, with ``json``'s message,
            line and column), or ``parse_constant`` refused a constant.
    """
    if not _RISKY_TEXT.search(text):
        try:
            return orjson.dumps(orjson.loads(text), option=_OPTIONS)
        except orjson.JSONDecodeError:  # json says why, in its own words
            pass
    return (_ENCODER.encode(json.loads(text, parse_constant=parse_constant)) + "\n").encode("utf-8")


def loads(data: bytes):
    """Parse JSON bytes (a manifest) as ``json.loads`` does, with orjson unless a number may be
    beyond 64 bits. Raises ValueError: ``data`` is not JSON (or not UTF-8)."""
    if not _LONG_NUMBER.search(data):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:  # json decides (it reads NaN) and says why
            pass
    return json.loads(data)
