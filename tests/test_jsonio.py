"""generator.jsonio writes, byte for byte, what ``json.dumps(indent=2)`` wrote, and reads what ``json.loads`` read."""

from __future__ import annotations

import io
import json

import pytest
from conftest import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from generator.jsonio import loads, pretty, reformat, write_pretty


def _refuse(name):
    raise ValueError(f"{name} is not valid JSON")


def _json(value, ensure_ascii=False) -> bytes:
    return (json.dumps(value, ensure_ascii=ensure_ascii, indent=2) + "\n").encode("utf-8")


_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=10)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e-3, max_value=1e-3),
    _TEXT,
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_TEXT, inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=examples(500), deadline=None)
@given(value=_VALUES, ensure_ascii=st.booleans())
def test_pretty_writes_what_json_writes(value, ensure_ascii):
    assert pretty(value, ensure_ascii=ensure_ascii) == _json(value, ensure_ascii)


@settings(max_examples=examples(500), deadline=None)
@given(value=_VALUES, indent=st.sampled_from([None, 1, 4]))
def test_reformat_writes_what_json_wrote_from_any_layout(value, indent):
    text = json.dumps(value, ensure_ascii=False, indent=indent)
    assert reformat(text, _refuse) == _json(json.loads(text))
    assert loads(json.dumps(value).encode("utf-8")) == json.loads(json.dumps(value))


@pytest.mark.parametrize(
    "value",
    [1e-05, -2.5e-07, 0.00001234, 1e16, 1.5e300, 2**64, -(2**63) - 1, 10**30, "é ü \u2028 \x7f \x1f", {"": []}],
    ids=repr,
)
def test_numbers_and_strings_orjson_writes_otherwise_are_written_as_json_writes_them(value):
    assert pretty({"v": value}) == _json({"v": value})
    assert reformat(json.dumps({"v": value}), _refuse) == _json({"v": value})


def _outcome(make):
    try:
        return make()
    except ValueError as e:
        return f"{type(e).__name__}: {e}"


@pytest.mark.parametrize("text", ["{", "[1,]", '{"a": NaN}', "1E400", '"\\ud800"', '{"a": 1, "a": 2}'], ids=repr)
def test_text_orjson_refuses_or_reads_otherwise_comes_out_as_with_json(text):
    ours = _outcome(lambda: reformat(text, _refuse))
    assert ours == _outcome(lambda: _json(json.loads(text, parse_constant=_refuse)))


@settings(max_examples=examples(300), deadline=None)
@given(value=_VALUES, ensure_ascii=st.booleans(), depth=st.integers(min_value=0, max_value=3))
def test_write_pretty_writes_what_json_dumps_writes(value, ensure_ascii, depth):
    file = io.BytesIO()
    write_pretty(file, {"a": value, "b": {"c": value, "d": {}}, "e": []}, ensure_ascii, depth)
    assert file.getvalue() == _json({"a": value, "b": {"c": value, "d": {}}, "e": []}, ensure_ascii)
