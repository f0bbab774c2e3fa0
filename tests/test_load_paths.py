"""The loader reads through libyaml when it can and through PyYAML's pure-Python reader when it
must: both must give the same data, positions and problems for every file; and building each job
as soon as it is composed (no positions) must give what building the whole tree does."""

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
    problems = [str(p) for p in doc.problems + doc.warnings]
    # load() builds each job as soon as it is composed and keeps no positions; reading the file
    # again with positions on (what a message does) must give the same data and problems
    full = load_module.Document(doc.file, doc.root, text=doc.text)
    full._positions = ({}, {}, {})
    load_module._build_document(full, positions=True)
    assert (full.data, [str(p) for p in full.problems + full.warnings]) == (doc.data, problems)
    return ("ok", doc.data, doc.values, doc.keys, doc.plain_scalars, problems)


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML built without libyaml")
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_libyaml_and_pure_python_read_alike(path, monkeypatch):
    fast = outcome(path)
    monkeypatch.setattr(load_module, "LIBYAML", False)
    assert outcome(path) == fast


def test_libyaml_reads_the_shipped_file(monkeypatch):
    def refuse(*args):
        raise AssertionError("the pure-Python reader was used")

    monkeypatch.setattr(load_module._PureLoader, "__init__", refuse)
    assert load_module.load(ROOT / "jobs.yaml").data["jobs"]


def test_deep_nesting_is_bounded(tmp_path):
    text = "jobs: " + "[" * (load_module.MAX_DEPTH + 5) + "]" * (load_module.MAX_DEPTH + 5) + "\n"
    (tmp_path / "jobs.yaml").write_text(text)
    with pytest.raises(SpecError, match=f"nest deeper than {load_module.MAX_DEPTH} levels"):
        load_module.load(tmp_path / "jobs.yaml")
