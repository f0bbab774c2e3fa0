"""The generate path's shortcuts give exactly what the plain way gives.

- The fast YAML reader (libyaml events -> data) agrees with the careful one, or leaves the file to it.
- The flattened schema accepts exactly the documents the schema as written accepts.
- ``pretty_json`` writes exactly what ``json.dumps(indent=2, ensure_ascii=False)`` writes.
"""

from __future__ import annotations

import json

import jsonschema
import yaml
from conftest import CASES, ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

from generator.jsontext import pretty_json
from generator.load import _DECLINED, _fast_data, _locate, load
from generator.validate import flattened, load_schema

FILES = [ROOT / "jobs.yaml", *sorted(CASES.glob("*/*.yaml"))]


def careful(text: str):
    return _locate("jobs.yaml", text).data


def test_every_case_file_reads_the_same_or_is_declined():
    declined = []
    for path in FILES:
        text = path.read_text(encoding="utf-8")
        fast = _fast_data(text)
        if fast is _DECLINED:
            declined.append(path.stem)
            continue
        assert fast == careful(text), path
        assert [type(v) for v in fast.values()] == [type(v) for v in careful(text).values()]
    # the YAML traps are left to the careful reader, which words their messages
    assert {"duplicate_key", "merge_key", "python_tag", "tab_indentation", "empty_file"} <= set(declined)
    assert "jobs" not in declined


def test_positions_are_worked_out_when_first_asked(tmp_path):
    (tmp_path / "jobs.yaml").write_text("jobs:\n  - name: a\n    num_rounds: 0\n", encoding="utf-8")
    doc = load(tmp_path / "jobs.yaml")
    assert doc._tables is None
    assert doc.where(("jobs", 0, "num_rounds")) == doc.values[("jobs", 0, "num_rounds")]
    assert (doc.where(("jobs", 0, "num_rounds")).line, doc.where(("jobs", 0, "num_rounds")).column) == (3, 17)
    assert doc.plain_scalars[("jobs", 0, "num_rounds")] == "0"


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(["no", "on", "1e-3", "0x1f", "1_000", "1:30", ".inf", "~", "<<", "!x", "- a", "a: b"]),
)
documents = st.dictionaries(
    st.text(max_size=10),
    st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=20,
    ),
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(documents, st.sampled_from([None, False, True]))
def test_fast_and_careful_readers_agree_on_any_document(data, flow):
    text = yaml.safe_dump(data, default_flow_style=flow, allow_unicode=True, sort_keys=False)
    fast = _fast_data(text)
    if fast is not _DECLINED:
        assert fast == careful(text)


def _agree(schema_validator, flat_validator, data) -> bool:
    return schema_validator.is_valid(data) == flat_validator.is_valid(data)


def _validators():
    schema = load_schema()
    return (
        jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()),
        jsonschema.Draft202012Validator(flattened(schema), format_checker=jsonschema.FormatChecker()),
    )


def test_flattened_schema_judges_every_case_file_alike():
    schema_validator, flat_validator = _validators()
    verdicts = set()
    for path in FILES:
        try:
            data = careful(path.read_text(encoding="utf-8"))
        except Exception:  # YAML traps never reach the schema
            continue
        assert _agree(schema_validator, flat_validator, data), path
        verdicts.add(schema_validator.is_valid(data))
    assert verdicts == {True, False}


def test_flattened_schema_has_no_unevaluated_properties_or_refs():
    text = json.dumps({k: v for k, v in flattened(load_schema()).items() if k != "$defs"})
    assert "unevaluatedProperties" not in text and "$ref" not in text


values = st.one_of(
    scalars,
    st.sampled_from(
        ["FULL", "DIFF", "numpy", "mlflow", "train_full.py", "2.7", "2.9", "a", "sqlite:///x", "file:///x"]
    ),
    st.lists(st.sampled_from(["@ALL", "server", "site-1", "fed.analytix_log_stats", 3]), max_size=3),
)
setting_keys = st.sampled_from(
    [
        "script", "script_args", "launch_external_process", "command", "params_transfer_type", "framework",
        "num_rounds", "num_clients", "min_clients", "deploy_map", "server", "receiver", "expect",
        "nvflare_version", "task_check_period", "name", "unknown",
    ]
)  # fmt: skip
nested = st.dictionaries(
    st.sampled_from(["type", "tracking_uri", "events", "task_request_interval", "app", "metric_points_per_site", "x"]),
    values,
    max_size=3,
)
plausible = st.fixed_dictionaries(
    {"name": st.sampled_from(["a", "b-1", "no"]), "script": st.sampled_from(["train_full.py", "x.txt"])},
    optional={
        "num_rounds": st.sampled_from([1, 5, 0, "5"]),
        "task_check_period": st.sampled_from([0.05, 0, 1]),
        "nvflare_version": st.sampled_from(["2.7", "2.9", 2.7]),
        "server": st.sampled_from([{}, {"task_request_interval": 0.1}, {"task_request_interval": 0}, {"x": 1}]),
        "receiver": st.sampled_from([{"type": "mlflow"}, {"type": "mlflow", "tracking_uri": "file:///x"}, {}]),
        "deploy_map": st.sampled_from([{"app": ["@ALL"]}, {"app": []}]),
        "unknown": st.just(1),
    },
)
job_entries = st.one_of(plausible, st.dictionaries(setting_keys, st.one_of(values, nested), max_size=6))


@settings(max_examples=400, deadline=None)
@given(st.lists(job_entries, max_size=3), st.one_of(st.none(), job_entries))
def test_flattened_schema_judges_any_document_alike(jobs, defaults):
    schema_validator, flat_validator = _validators()
    data = {"jobs": jobs} if defaults is None else {"defaults": defaults, "jobs": jobs}
    assert _agree(schema_validator, flat_validator, data)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text()),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=500, deadline=None)
@given(json_values)
def test_pretty_json_writes_what_json_dumps_writes(value):
    assert pretty_json(value) == json.dumps(value, indent=2, ensure_ascii=False)
