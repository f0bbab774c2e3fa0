"""The loader reads through libyaml when it can and through PyYAML's pure-Python composer when it
must: both must give the same data, positions and problems for every file."""

from __future__ import annotations

import pytest
import yaml
from conftest import CASES, ROOT

from generator import load as load_module
from generator.errors import SpecError

FILES = [ROOT / "jobs.yaml", *sorted(CASES.glob("*/*.yaml"))]


def outcome(path):
    try:
        doc = load_module.load(path)
    except SpecError as e:
        return ("error", [str(p) for p in e.problems])
    return ("ok", doc.data, doc.values, doc.keys, doc.plain_scalars, [str(p) for p in doc.problems])


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML built without libyaml")
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_libyaml_and_pure_python_read_alike(path, monkeypatch):
    fast = outcome(path)
    monkeypatch.setattr(load_module, "_compose_with_libyaml", lambda text: None)
    assert outcome(path) == fast


def test_libyaml_reads_the_shipped_file():
    assert load_module._compose_with_libyaml((ROOT / "jobs.yaml").read_text(encoding="utf-8")) is not None


def test_deep_nesting_is_left_to_the_bounded_composer(tmp_path):
    text = "jobs: " + "[" * (load_module.MAX_DEPTH + 5) + "]" * (load_module.MAX_DEPTH + 5) + "\n"
    assert load_module._compose_with_libyaml(text) is None
    (tmp_path / "jobs.yaml").write_text(text)
    with pytest.raises(SpecError, match=f"nest deeper than {load_module.MAX_DEPTH} levels"):
        load_module.load(tmp_path / "jobs.yaml")
