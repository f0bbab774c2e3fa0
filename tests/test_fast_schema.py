"""jsonschema-rs decides whether a document fits the schema; python-jsonschema explains what does not.

"Valid" must mean the same for both: a document jsonschema-rs accepts is one python-jsonschema (with
the generator's integer rule) finds no error in. Checked on every case file and on generated values
at every job setting.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CASES, ROOT, examples
from hypothesis import given, settings
from hypothesis import strategies as st

from generator.errors import SpecError
from generator.load import load
from generator.validate import _fits, _python_validator, load_schema

CASE_FILES = sorted(p for kind in ("valid", "invalid", "warnings") for p in (CASES / kind).glob("*.yaml"))


def _python_fits(schema: dict, data) -> bool:
    return not any(_python_validator()(schema).iter_errors(data))


@pytest.mark.parametrize("case", CASE_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_both_validators_agree_on_every_case_file(case: Path):
    schema = load_schema()
    try:
        doc = load(case)
    except SpecError:
        pytest.skip("refused while loading: never reaches the schema check")
    assert _fits(schema, doc.data) == _python_fits(schema, doc.data)


def test_valid_cases_fit_with_jsonschema_rs():
    """A valid file never needs python-jsonschema (its import is left out of such a run)."""
    schema = load_schema()
    assert all(_fits(schema, load(case).data) for case in sorted((CASES / "valid").glob("*.yaml")))


@pytest.mark.parametrize(
    "value",
    [5.0, 1e3, True, "5", None, float("inf"), -math.inf, float("nan"), 2**70],
    ids=repr,
)
def test_what_python_jsonschema_refuses_jsonschema_rs_refuses_at_num_rounds(value):
    schema = load_schema()
    data = {"jobs": [{"name": "a", "script": "train_full.py", "num_rounds": value}]}
    assert _fits(schema, data) is False
    assert _python_fits(schema, data) is False


@pytest.mark.parametrize("value", [float("inf"), float("nan")], ids=repr)
def test_a_number_that_is_not_finite_never_fits(value):
    schema = load_schema()
    data = {"jobs": [{"name": "a", "script": "train_full.py", "task_check_period": value}]}
    assert _fits(schema, data) is False


def test_values_json_has_no_type_for_are_left_to_python_jsonschema():
    import datetime

    schema = load_schema()
    for data in ({"jobs": [{"name": datetime.date(2024, 1, 1)}]}, {1: "a"}, {"jobs": [{("a",): 1}]}):
        assert _fits(schema, data) is False


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["mlflow", "tensorboard", "DIFF", "FULL", "5", "@ALL", "site-1", "a\n", "train_full.py"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)


@settings(max_examples=examples(300), deadline=None)
@given(key=st.sampled_from(sorted(load_schema()["$defs"]["job_settings"]["properties"])), value=_VALUES)
def test_a_job_setting_jsonschema_rs_accepts_python_jsonschema_accepts(key, value):
    schema = load_schema()
    data = {"jobs": [{"name": "a", "script": "train_full.py", key: value}]}
    if _fits(schema, data):
        assert _python_fits(schema, data), (key, value)


IMPORTS = (
    "import sys\n"
    "from generator.cli import main\n"
    "codes = [main([c for c in command.split(' ') if c]) for command in sys.argv[1:]]\n"
    "unused = {'jsonschema', 'nvflare', 'torch', 'mlflow', 'numpy', 'generator.judge', 'generator.simulate'}\n"
    "print(codes, sorted(m for m in sys.modules if m in unused or m.split('.')[0] in unused))\n"
)


def _imports(project, *commands: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", IMPORTS, *commands],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return result.stdout.splitlines()[-1] if result.stdout else result.stderr


def test_validate_and_generate_of_a_valid_file_import_only_what_they_use(project):
    """No python-jsonschema (jsonschema-rs says the file fits), no judge, no nvflare or torch."""
    assert _imports(project, "validate", "generate", "generate --check") == "[0, 0, 0] []"


def test_an_invalid_file_is_explained_by_python_jsonschema(project):
    (project / "jobs.yaml").write_text("jobs:\n  - name: a\n    script: train_full.py\n    num_rounds: 5.0\n")
    line = _imports(project, "validate")
    assert line.startswith("[2] ['jsonschema'"), line
    assert "nvflare" not in line and "generator.judge" not in line
