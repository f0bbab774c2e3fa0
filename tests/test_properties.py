"""Property-based tests (hypothesis): random valid and invalid ``jobs.yaml`` files.

Valid specs (random names, rounds, clients, FULL/DIFF, in/sub-process, scripts, receivers on
metrics scripts, any unicode in every free-text field) must generate job folders whose every
JSON file parses strictly and holds each string literally, and (on fewer examples, lint imports
nvflare) pass ``lint``. Invalid specs (wrong types, unknown keys, bad enums, out-of-range
numbers, bad names, garbage bytes, ...) must exit 2 with every stderr line located
(``FILE:LINE:COL: ``), never a traceback, and change nothing on disk. No run may write outside
its output folder. Runs are in-process (``generator.cli.main``) for speed. Each test's example
count is its own under hypothesis' ``full`` profile (``make test``), capped under ``fast`` (``make
test-fast``): see ``conftest.examples``.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import shutil
import tempfile
from pathlib import Path

import yaml
from conftest import ROOT, examples, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generator.cli import main

SCRIPTS = {"train_full.py": "FULL", "train_diff.py": "DIFF", "train_metrics.py": "FULL"}
NAME = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)
#: Any text a user may type: every unicode character but lone surrogates and NUL.
TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=30)
NONEMPTY = TEXT.filter(bool)
#: The surprises, more often than random text would give them.
NASTY = st.sampled_from(
    ['"', "'", "\\", "\n", "{{ 7*7 }}", "{% if %}", "{# x #}", "True", "None", "null", "no", "on", "1e-3", "010",
     "<<", "&a", "*a", "!!python/object:os.system", "\t", "\r\n", "\u2028", "\x85", "é中文😀", "</script>", "$(x)"]
)  # fmt: skip
FREE_TEXT = st.one_of(TEXT, NASTY, st.lists(st.one_of(TEXT, NASTY), max_size=4).map("".join))
#: Text for values NVFlare reads its {NAME} variables in (every string value of a config): no braces,
#: which the generator refuses there (mapping keys are not rewritten and keep FREE_TEXT).
CONFIG_TEXT = FREE_TEXT.map(lambda t: t.replace("{", "(").replace("}", ")"))
#: One in-process script argument: no whitespace, quote or backslash (NVFlare splits at whitespace only).
IN_PROCESS_WORD = CONFIG_TEXT.map(lambda t: "".join(c for c in t if not c.isspace() and c not in "'\"\\")).filter(bool)
LOCATED = re.compile(r"^[^:]+:\d+:\d+: ")
FAST = settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _relative_path():
    part = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}", fullmatch=True).filter(lambda p: p not in (".", ".."))
    return st.lists(part, min_size=1, max_size=3).map("/".join)


@st.composite
def receiver(draw) -> dict:
    r = {"type": "mlflow"}
    optional = {
        "tracking_uri": st.one_of(
            _relative_path().map(lambda p: f"sqlite:///{p}.db"), st.just("http://127.0.0.1:5000")
        ),
        "experiment_name": CONFIG_TEXT.filter(bool),
        "run_name": CONFIG_TEXT.filter(bool),
        "experiment_tags": st.dictionaries(FREE_TEXT, CONFIG_TEXT, max_size=3),
        "run_tags": st.dictionaries(FREE_TEXT, CONFIG_TEXT, max_size=3),
        "artifact_location": _relative_path(),
        "events": st.lists(st.from_regex(r"[A-Za-z0-9_.]{1,20}", fullmatch=True), min_size=1, max_size=3, unique=True),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            r[key] = draw(strategy)
    return r


@st.composite
def job_settings(draw, script: str) -> dict:
    """Settings of one valid job running ``script`` (every key optional but the script's)."""
    s = {"script": script}
    num_clients = draw(st.integers(1, 6))
    choices = {
        "num_rounds": st.integers(1, 100000),
        "num_clients": st.just(num_clients),
        "min_clients": st.integers(1, num_clients),
        "params_transfer_type": st.just(SCRIPTS[script]),
        "launch_external_process": st.booleans(),
        "framework": st.just("numpy"),
        "script_args": CONFIG_TEXT.map(lambda t: shlex.join(t.split(" "))),
        "command": st.lists(CONFIG_TEXT.filter(bool), min_size=1, max_size=3).map(
            lambda a: shlex.join(["python3", *a])
        ),
        "server": st.fixed_dictionaries({}, optional={"task_request_interval": st.floats(0.001, 3600)}),
        "deploy_map": st.sampled_from(
            [{"app": ["@ALL"]}, {"app": ["server", *(f"site-{i}" for i in range(1, num_clients + 1))]}]
        ),
        "expect": st.fixed_dictionaries(
            {}, optional={"metric_points_per_site": st.dictionaries(FREE_TEXT, st.integers(0, 10**6), max_size=2)}
        ),
    }
    for key, strategy in choices.items():
        if key == "num_clients" or draw(st.booleans()):
            s[key] = draw(strategy)
    if "script_args" in s and not s.get("launch_external_process"):  # in-process: words split at whitespace
        s["script_args"] = " ".join(draw(st.lists(IN_PROCESS_WORD, max_size=4)))
    if script == "train_metrics.py" or draw(st.integers(0, 4)) == 0:  # elsewhere: a warning, still valid
        s["receiver"] = draw(receiver())
    if "receiver" not in s and s.get("expect", {}).get("metric_points_per_site"):
        del s["expect"]["metric_points_per_site"]  # counts need a receiver's store (an error otherwise)
    return s


@st.composite
def valid_spec(draw) -> dict:
    names = draw(st.lists(NAME, min_size=1, max_size=4, unique_by=str.lower))
    jobs = []
    for name in names:
        settings_ = draw(job_settings(draw(st.sampled_from(sorted(SCRIPTS)))))
        jobs.append({"name": name, **settings_})
    spec = {"jobs": jobs}
    # move settings every job shares into `defaults:`, as a user would
    shared = [k for k in ("num_rounds", "framework", "server") if all(k in j for j in jobs)]
    if shared and draw(st.booleans()):
        key = draw(st.sampled_from(shared))
        spec = {"defaults": {key: jobs[0][key]}, "jobs": jobs}
        if all(j[key] == jobs[0][key] for j in jobs):
            for j in jobs:
                del j[key]
    return spec


class _Dumper(yaml.SafeDumper):
    """PyYAML writes NEL/LS/PS raw in single quotes, where its own loader folds them into a space."""


_Dumper.add_representer(
    str,
    lambda dumper, value: dumper.represent_scalar(
        "tag:yaml.org,2002:str", value, style='"' if set(value) & {"\x85", "\u2028", "\u2029"} else None
    ),
)


def dump(spec) -> str:
    return yaml.dump(spec, Dumper=_Dumper, allow_unicode=True, sort_keys=False, width=10**6)


@contextlib.contextmanager
def project():
    """A throw-away project folder (jobs.yaml is written by the test)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(ROOT / "client_scripts", root / "client_scripts")
        yield root


def run(root: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*args, "--jobs", str(root / "jobs.yaml"), "--out", str(root / "build" / "jobs")])
    return code, out.getvalue(), err.getvalue()


def strings(value):
    """Every string in a nested value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings(k)
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def strict_json(data: bytes):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(data.decode("utf-8"), parse_constant=refuse)


def check_generated(root: Path, spec: dict, before: dict) -> None:
    """Every rendered file is strict JSON holding the spec's strings literally; nothing else was written."""
    after = snapshot(root)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert all(k == "build" or k.startswith("build/jobs") for k in changed), sorted(changed)[:5]
    rendered_strings = set()
    for job in spec["jobs"]:
        folder = root / "build" / "jobs" / job["name"]
        for path in sorted(folder.rglob("*.json")):
            rendered_strings.update(strings(strict_json(path.read_bytes())))
        expected = []
        r = job.get("receiver")
        if r:
            expected += [r.get("experiment_name"), r.get("run_name"), r.get("artifact_location"), r.get("tracking_uri")]
            expected += [*strings(r.get("run_tags", {})), *strings(r.get("experiment_tags", {})), *r.get("events", [])]
        if job.get("launch_external_process"):
            expected += shlex.split(job.get("command", "python3 -u")) + shlex.split(job.get("script_args", ""))
        else:
            expected.append(job.get("script_args"))
        missing = {s for s in expected if s is not None} - rendered_strings
        assert not missing, missing


@FAST
@given(spec=valid_spec())
def test_valid_specs_render_strict_json_holding_every_string_literally(spec):
    with project() as root:
        (root / "jobs.yaml").write_text(dump(spec), encoding="utf-8")
        before = snapshot(root)
        code, out, err = run(root, "generate")
        assert code == 0, err
        assert all(LOCATED.match(line) and ": warning: " in line for line in err.splitlines()), err
        check_generated(root, spec, before)
        assert run(root, "generate", "--check")[0] == 0  # deterministic: the same input renders the same bytes


@settings(max_examples=examples(8), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=valid_spec())
def test_valid_specs_pass_lint(spec):
    with project() as root:
        (root / "jobs.yaml").write_text(dump(spec), encoding="utf-8")
        assert run(root, "generate")[0] == 0
        code, out, err = run(root, "lint")
        assert (code, err) == (0, ""), err


# --- invalid specs ----------------------------------------------------------------------------------

WRONG_TYPE = st.sampled_from(["five", 1.5, -3, [1], {"a": 1}, None, True, ""])
SETTING_TYPES = {
    "num_rounds": int, "num_clients": int, "min_clients": int, "launch_external_process": bool,
    "script_args": str, "command": str, "server": dict, "deploy_map": dict, "expect": dict, "receiver": dict,
}  # fmt: skip
KNOWN_KEYS = {
    "name", "script", "script_args", "launch_external_process", "command", "params_transfer_type", "framework",
    "num_rounds", "num_clients", "min_clients", "deploy_map", "server", "receiver", "expect", "timeout", "jobs",
    "defaults",
}  # fmt: skip


def _fits(value, kind) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


@st.composite
def invalid_spec(draw) -> tuple[str, dict]:
    """A valid spec with one mutation that makes it invalid; gives (kind, spec)."""
    spec = draw(valid_spec())
    job = draw(st.sampled_from(spec["jobs"]))
    kind = draw(
        st.sampled_from(
            ["wrong type", "unknown key", "bad enum", "out of range", "bad name", "duplicate name", "no script",
             "missing script", "bad receiver", "top level"]
        )
    )  # fmt: skip
    if kind == "wrong type":
        key = draw(st.sampled_from(sorted(SETTING_TYPES)))
        value = draw(WRONG_TYPE.filter(lambda v: not _fits(v, SETTING_TYPES[key])))
        job[key] = value
    elif kind == "unknown key":
        key = draw(TEXT.filter(lambda k: k not in KNOWN_KEYS and k not in ("<<",)))
        where = draw(st.sampled_from(["job", "top", "server", "receiver"]))
        target = {"job": job, "top": spec, "server": job.setdefault("server", {}), "receiver": job.get("receiver", job)}
        target[where][key] = draw(st.one_of(st.integers(), TEXT))
    elif kind == "bad enum":
        key = draw(st.sampled_from(["params_transfer_type", "framework"]))
        job[key] = draw(TEXT.filter(lambda v: v not in ("FULL", "DIFF", "numpy")))
    elif kind == "out of range":
        key, value = draw(
            st.sampled_from(
                [("num_rounds", 0), ("num_rounds", -1), ("num_rounds", 100001), ("num_clients", 0),
                 ("num_clients", 65), ("min_clients", 0), ("min_clients", 65)]
            )
        )  # fmt: skip
        job[key] = value
        if key == "num_clients" and value > 64:
            job.pop("deploy_map", None)
    elif kind == "bad name":
        job["name"] = draw(
            st.one_of(
                st.just(""), st.just("../evil"), st.just("a/b"), st.just(".hidden"), st.just("x" * 65),
                TEXT.filter(lambda n: not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", n)),
            )
        )  # fmt: skip
    elif kind == "duplicate name":
        spec["jobs"].append(dict(job))
    elif kind == "no script":
        del job["script"]
    elif kind == "missing script":
        job["script"] = draw(st.from_regex(r"[a-z_]{1,10}\.py", fullmatch=True).filter(lambda s: s not in SCRIPTS))
    elif kind == "bad receiver":
        job["receiver"] = {"type": draw(TEXT.filter(lambda t: t not in ("mlflow", "tensorboard", "wandb")))}
    else:
        spec = draw(st.sampled_from([[spec], "jobs", 42, None, {"jobs": {}}, {"jobs": []}, {"defaults": {}}]))
    return kind, spec


def check_refused(root: Path, text: bytes, must_fail: bool = True) -> None:
    (root / "jobs.yaml").write_bytes(text)
    before = snapshot(root)
    code, out, err = run(root, "generate")
    assert "Traceback" not in out + err
    if code == 0 and not must_fail:
        return
    assert code == 2, (code, err)
    lines = err.splitlines()
    assert lines and all(LOCATED.match(line) for line in lines), err
    assert snapshot(root) == before


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=invalid_spec())
def test_invalid_specs_exit_2_located_and_change_nothing(case):
    kind, spec = case
    with project() as root:
        check_refused(root, dump(spec).encode("utf-8"))


@settings(max_examples=examples(100), deadline=None)
@given(data=st.binary(max_size=300))
def test_garbage_bytes_exit_2_located(data):
    with project() as root:
        check_refused(root, data)


@st.composite
def damaged_file(draw) -> bytes:
    """A valid file, damaged as an editor or a user might: cut short, a tab, a stray character."""
    text = dump(draw(valid_spec()))
    how = draw(st.sampled_from(["cut", "tab", "insert", "delete"]))
    at = draw(st.integers(0, len(text)))
    if how == "cut":
        text = text[:at]
    elif how == "tab":
        text = text[:at] + "\t" + text[at:]
    elif how == "insert":
        text = text[:at] + draw(st.sampled_from(list(":-[]{}&*!|>'\"%@`#,?\x07\ufeff"))) + text[at:]
    else:
        text = text[:at] + text[at + 1 :]
    return text.encode("utf-8")


@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=damaged_file())
def test_damaged_files_are_refused_located_or_still_valid(data):
    with project() as root:
        check_refused(root, data, must_fail=False)


def test_no_run_writes_outside_its_output_folder():
    """The valid-spec test checks this per example; here once more for --check and validate."""
    with project() as root:
        shutil.copy(ROOT / "jobs.yaml", root / "jobs.yaml")
        before = snapshot(root)
        assert run(root, "generate", "--check")[0] == 1
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            assert main(["validate", "--jobs", str(root / "jobs.yaml")]) == 0
        assert snapshot(root) == before
