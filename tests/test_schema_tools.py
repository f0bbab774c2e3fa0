"""The jobs schema as other tools use it.

- Editors: every property of ``schema/jobs.schema.json`` has a description, and every ``default``
  and ``examples`` value fits its own property; the defaults are the ones ``generate`` applies.
  Every valid jobs file starts with the yaml-language-server modeline, pointing at the schema.
- check-jsonschema (``check-jsonschema --schemafile schema/jobs.schema.json FILE``) accepts every
  valid jobs file and, over ``tests/cases/invalid``, rejects every case our own validate stage
  finds a schema problem in and accepts every case whose problems are all checks across fields.
  Where it judges a case differently (it reads YAML 1.2 with ruamel; ``generate`` reads with
  PyYAML under strict rules), the case is listed below with the reason.
- pre-commit: the hook ``jobgen-validate`` (``.pre-commit-hooks.yaml``) validates each
  ``jobs*.yaml`` on its own, proven with ``pre-commit try-repo`` on a temporary git repo.

Which problems are schema-level is decided by the code that reports them
(:func:`classify`): a problem the load stage finds (``Document.problems``, or ``load`` refusing the
file) is a YAML problem; one :func:`generator.validate._schema_problems` finds is a schema problem;
anything else ``generate`` reports is a check across fields.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from conftest import CASES, ROOT

from generator.errors import SpecError
from generator.hook import main as hook_main
from generator.load import load
from generator.spec import effective_jobs
from generator.validate import _schema_problems, _Validator, _without_echoes, load_schema

SCHEMA_FILE = ROOT / "schema" / "jobs.schema.json"
MODELINE = "# yaml-language-server: $schema="

#: Every jobs file meant to be valid: the shipped one, the valid and warning cases, the examples.
VALID_FILES = [
    ROOT / "jobs.yaml",
    *sorted((CASES / "valid").glob("*.yaml")),
    *sorted((CASES / "warnings").glob("*.yaml")),
    *sorted((ROOT / "examples").glob("*.yaml")),
]
#: The files that carry the modeline (warning cases do not: a new first line would move the
#: positions their expected messages pin).
MODELINE_FILES = [f for f in VALID_FILES if f.parent != CASES / "warnings"]
INVALID = sorted((CASES / "invalid").glob("*.yaml"))

#: Invalid cases check-jsonschema accepts although ``generate`` refuses them, and why.
ACCEPTED_BY_CHECK_JSONSCHEMA = {
    # YAML problems: ruamel (YAML 1.2) reads these as plain data our loader refuses.
    "date_as_name": "YAML 1.1 reads 2024-01-31 as a date, generate refuses it; check-jsonschema reads a date as text",
    "lone_surrogate": "ruamel keeps a lone UTF-16 surrogate in a string, which cannot be written as UTF-8",
    "not_a_number": "JSON Schema counts .nan as a number; generate refuses a number that is not finite",
    "null_key": "check-jsonschema turns the null key ~ into the string 'None'",
    "octal_number": "YAML 1.2 reads 010 as ten; YAML 1.1 (PyYAML) as octal 8, which generate refuses",
    # Schema problems that exist only in the YAML 1.1 reading generate uses.
    "number_read_as_string": "YAML 1.2 reads 1e-3 as a number; YAML 1.1 as a string",
    "yaml11_boolean_name": "YAML 1.2 reads a bare no as a string; YAML 1.1 as false",
    "yaml11_boolean_tag_value": "YAML 1.2 reads a bare yes as a string; YAML 1.1 as true",
    "yaml11_booleans_in_list": "YAML 1.2 reads bare yes/no/on/off as strings; YAML 1.1 as booleans",
    # The one schema rule JSON Schema cannot say.
    "float_rounds": "JSON Schema counts 5.0 as an integer; generate does not (range(num_rounds) fails on 5.0)",
}
#: Invalid cases that make check-jsonschema crash (a traceback, exit code 1) instead of reporting.
CRASHES_CHECK_JSONSCHEMA = {
    "core_tag_bad_value": 'ruamel raises ValueError on !!int "five"',
    "escape_out_of_range": "ruamel raises ValueError on the escape \\U00110000",
}
#: Invalid cases not given to check-jsonschema at all.
NOT_RUN = {
    "alias_bomb": "check-jsonschema expands a billion-laughs file without limit (still running after 60 s); "
    "generate refuses it at once",
}

#: One Python process that runs check-jsonschema's command (its click ``main``, what
#: ``check-jsonschema`` and ``python -m check_jsonschema`` call) once per file: argv = schema, files.
#: Prints {file: exit code, or "crash: ..." when an exception escapes the command}.
_CHECK_EACH = """
import contextlib, io, json, sys
from check_jsonschema.cli.main_command import main
verdicts = {}
for file in sys.argv[2:]:
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            verdicts[file] = main(["--schemafile", sys.argv[1], file], standalone_mode=False)
    except Exception as e:
        verdicts[file] = f"crash: {type(e).__name__}"
print(json.dumps(verdicts))
"""


def _need(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"{module} is not installed: it is in pyproject's test extra (make setup installs it)")


def _properties(node, path=()):
    """(path, schema) of every property the schema defines, outside ``if`` conditions."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "if":
                continue
            if key == "properties":
                for name, prop in value.items():
                    yield path + (name,), prop
                    yield from _properties(prop, path + (name,))
            else:
                yield from _properties(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _properties(value, path + (i,))


def classify(case) -> str:
    """``yaml``, ``schema`` or ``cross-field``: the first stage of ours that reports a problem in ``case``."""
    try:
        doc = load(case)
    except SpecError:
        return "yaml"
    if doc.problems:
        return "yaml"
    if _without_echoes(doc, _schema_problems(doc, load_schema())):
        return "schema"
    return "cross-field"


# --- the schema's own text -------------------------------------------------------------------


def test_every_property_has_a_description():
    props = list(_properties(load_schema()))
    assert len(props) > 40
    missing = [".".join(map(str, path)) for path, prop in props if not prop.get("description")]
    assert missing == []


def test_every_default_and_example_fits_its_own_property():
    schema = load_schema()
    checked, wrong = 0, []
    for path, prop in _properties(schema):
        values = ([prop["default"]] if "default" in prop else []) + prop.get("examples", [])
        validator = _Validator({**prop, "$defs": schema["$defs"]})
        for value in values:
            checked += 1
            wrong += [(".".join(map(str, path)), value, e.message) for e in validator.iter_errors(value)]
    assert checked > 50
    assert wrong == []


def _assert_defaults_applied(node: dict, value: dict, where: str) -> None:
    for key, prop in node.get("properties", {}).items():
        if "default" in prop:
            default = prop["default"]
            if isinstance(default, dict):  # its own properties' defaults are filled in too
                assert default.items() <= value[key].items(), f"{where}.{key}"
            else:
                assert value[key] == default, f"{where}.{key}"
        if isinstance(value.get(key), dict):
            _assert_defaults_applied(prop, value[key], f"{where}.{key}")


def test_the_schema_defaults_are_what_generate_applies():
    schema = load_schema()
    data = {"jobs": [{"name": t, "script": "train_full.py", "receiver": {"type": t}} for t in ("mlflow", "wandb")]}
    jobs = effective_jobs(data, schema)
    for job in jobs:
        _assert_defaults_applied(schema["$defs"]["job_settings"], job.settings, job.name)
        receiver = schema["$defs"]["receiver_" + job.name]
        _assert_defaults_applied(receiver, job.settings["receiver"], f"{job.name}.receiver")
    assert jobs[0].settings["server"] == {"task_request_interval": 2}
    assert jobs[1].settings["receiver"]["mode"] == "offline"


# --- editors: the modeline -------------------------------------------------------------------


def test_every_valid_jobs_file_starts_with_the_modeline_to_the_schema():
    assert ROOT / "jobs.yaml" in MODELINE_FILES and len(MODELINE_FILES) >= 6
    for file in MODELINE_FILES:
        first = file.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith(MODELINE), file
        assert (file.parent / first[len(MODELINE) :]).resolve() == SCHEMA_FILE, file


# --- check-jsonschema ------------------------------------------------------------------------


def test_check_jsonschema_accepts_every_valid_jobs_file():
    _need("check_jsonschema")
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--schemafile", str(SCHEMA_FILE), *map(str, VALID_FILES)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (result.returncode, result.stdout.strip()) == (0, "ok -- validation done"), result.stdout + result.stderr


def test_check_jsonschema_rejects_every_schema_level_case_and_accepts_every_cross_field_one():
    _need("check_jsonschema")
    cases = [c for c in INVALID if c.stem not in NOT_RUN]
    result = subprocess.run(
        [sys.executable, "-c", _CHECK_EACH, str(SCHEMA_FILE), *map(str, cases)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    verdicts = {}
    for file, code in json.loads(result.stdout).items():
        verdict = "crash" if str(code).startswith("crash") else {0: "accept", 1: "reject"}.get(code, code)
        verdicts[file.rsplit("/", 1)[-1].removesuffix(".yaml")] = verdict

    kinds = {case.stem: classify(case) for case in cases}
    expected = {}
    for name, kind in kinds.items():
        expected[name] = "accept" if kind == "cross-field" else "reject"
        if name in ACCEPTED_BY_CHECK_JSONSCHEMA:
            expected[name] = "accept"
        if name in CRASHES_CHECK_JSONSCHEMA:
            expected[name] = "crash"
    assert verdicts == expected
    counts = {k: list(kinds.values()).count(k) for k in ("yaml", "schema", "cross-field")}
    assert counts["schema"] >= 25 and counts["cross-field"] >= 20 and counts["yaml"] >= 20, counts
    # The listed differences are about YAML reading and 5.0, never about a schema rule a user writes.
    assert {kinds[n] for n in ACCEPTED_BY_CHECK_JSONSCHEMA} == {"yaml", "schema"}
    assert all(kinds[n] == "yaml" for n in {**CRASHES_CHECK_JSONSCHEMA, **NOT_RUN} if n in kinds)
    assert set(NOT_RUN) <= {c.stem for c in INVALID}


# --- pre-commit ------------------------------------------------------------------------------


def _write_jobs(folder, text: str, name: str = "jobs.yaml"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    shutil.copytree(ROOT / "client_scripts", folder / "client_scripts", dirs_exist_ok=True)


VALID_A = "jobs:\n  - name: a\n    script: train_full.py\n"
TYPO = "jobs:\n  - name: a\n    script: train_full.py\n    num_round: 3\n"


def test_hook_validates_each_file_on_its_own(tmp_path, monkeypatch, capsys):
    _write_jobs(tmp_path, VALID_A)
    _write_jobs(tmp_path / "lab", VALID_A, "jobs-lab.yaml")  # the same job name: fine, files are not merged
    _write_jobs(tmp_path, TYPO, "jobs-typo.yaml")
    monkeypatch.chdir(tmp_path)

    code = hook_main(["jobs.yaml", "lab/jobs-lab.yaml", "jobs-typo.yaml"])

    out, err = capsys.readouterr()
    assert code == 2
    assert out.splitlines() == ["jobs.yaml: 1 job(s) valid: a", "lab/jobs-lab.yaml: 1 job(s) valid: a"]
    assert err.splitlines() == [
        "jobs-typo.yaml:4:5: jobs[0] (a).num_round: unknown key 'num_round'; did you mean 'num_rounds'?"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["client_scripts", "jobs-typo.yaml", "jobs.yaml", "lab"]


def test_hook_passes_valid_files_and_no_files(tmp_path, monkeypatch, capsys):
    _write_jobs(tmp_path, VALID_A)
    monkeypatch.chdir(tmp_path)
    assert hook_main([]) == 0
    assert hook_main(["jobs.yaml"]) == 0
    assert capsys.readouterr().err == ""


def test_hook_script_names_a_module_its_python_lacks(tmp_path):
    """Without site-packages (-S) the validate path's modules are missing: one clear line, exit code 2."""
    _write_jobs(tmp_path, VALID_A)
    result = subprocess.run(
        [sys.executable, "-S", "-E", str(ROOT / "bin" / "jobgen-validate"), "jobs.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"jobgen-validate: {sys.executable} cannot import 'yaml': ")
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


def test_the_console_script_is_the_hook():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["scripts"]["nvflare-jobgen-validate"] == "generator.hook:main"
    assert {d.split(">")[0] for d in project["optional-dependencies"]["test"]} >= {"check-jsonschema", "pre-commit"}


@pytest.mark.slow
def test_pre_commit_try_repo_runs_jobgen_validate_on_jobs_files(tmp_path):
    """``pre-commit try-repo`` checks out this repository's hook and runs it in a temporary git repo.

    Only ``jobs*.yaml`` files are given to it, each validated on its own; a broken YAML file of
    another name is left alone. Runs on the committed and staged files of this checkout (pre-commit
    copies uncommitted changes of tracked files into its shadow repo; untracked files are not seen).
    """
    _need("pre_commit")
    if not (ROOT / ".git").exists():
        pytest.skip("this checkout is not a git repository: pre-commit try-repo needs one")
    tracked = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", ".pre-commit-hooks.yaml", "bin/jobgen-validate"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert tracked == [".pre-commit-hooks.yaml", "bin/jobgen-validate"], "add the hook's files to git"
    repo = tmp_path / "user"
    _write_jobs(repo, VALID_A)
    _write_jobs(repo / "lab", VALID_A, "jobs-lab.yaml")
    _write_jobs(repo, TYPO, "jobs-typo.yaml")
    (repo / "notes.yaml").write_text("not: [valid\n", encoding="utf-8")
    env = {
        **os.environ,
        "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}",  # python3 with our deps
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),  # never ~/.cache
        "GIT_AUTHOR_NAME": "jobgen test",
        "GIT_AUTHOR_EMAIL": "jobgen@example.invalid",
        "GIT_COMMITTER_NAME": "jobgen test",
        "GIT_COMMITTER_EMAIL": "jobgen@example.invalid",
    }
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True, env=env)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True, env=env)

    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pre_commit", "try-repo", str(ROOT), "jobgen-validate", "--all-files", "--color=never"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    print(f"pre-commit try-repo took {time.monotonic() - started:.1f} s")

    assert result.returncode == 1, result.stdout + result.stderr
    output = result.stdout.splitlines()
    assert any(line.startswith("nvflare-jobgen validate.") and line.endswith("Failed") for line in output), output
    assert "- hook id: jobgen-validate" in output and "- exit code: 2" in output
    reported = output[output.index("- exit code: 2") + 1 :]
    assert sorted(line for line in reported if line) == [  # stdout and stderr interleave: compare sorted
        "jobs-typo.yaml:4:5: jobs[0] (a).num_round: unknown key 'num_round'; did you mean 'num_rounds'?",
        "jobs.yaml: 1 job(s) valid: a",
        "lab/jobs-lab.yaml: 1 job(s) valid: a",
    ]
    assert "notes.yaml" not in result.stdout + result.stderr
