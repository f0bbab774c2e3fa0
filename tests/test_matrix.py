"""Matrix sweeps, layered ``--jobs`` files and ``--set`` overrides.

Bad command lines are case folders, ``cases/options/NAME/``: the ``*.yaml`` files of a project
(``jobs.yaml`` and any later ``--jobs`` file), ``args`` (the options, split like a shell) and
``expected`` (the exact stderr lines). Each must exit 2 from ``validate``, ``generate`` and ``lint``
alike, print exactly those lines, and leave an earlier ``build/`` and the project untouched. The
``jobs.yaml`` mistakes of a matrix are ordinary ``cases/invalid`` files (see ``test_cases.py``).
"""

from __future__ import annotations

import itertools
import json
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import CASES, INITIAL_MODEL, make_recipe, run_cli, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generator.errors import SpecError
from generator.matrix import combinations, expand
from generator.pipeline import check_only, generate
from generator.validate import load_schema

OPTION_CASES = sorted(p for p in (CASES / "options").iterdir() if p.is_dir())


@pytest.mark.parametrize("case", OPTION_CASES, ids=lambda p: p.name)
def test_option_case_is_reported_the_same_by_every_command_and_changes_nothing(case, project, cli):
    for f in case.glob("*.yaml"):
        shutil.copy(f, project / f.name)
    assert cli("generate")[0] == 0  # the first file alone is fine: an earlier, good build/
    before = snapshot(project)
    expected = (case / "expected").read_text(encoding="utf-8").splitlines()
    args = shlex.split((case / "args").read_text(encoding="utf-8"))
    for command in ("validate", "generate", "lint"):
        code, out, err = cli(command, *args)
        assert (code, err) == (2, expected), command
        assert snapshot(project) == before


def test_every_option_case_has_its_args_and_expected_lines():
    assert len(OPTION_CASES) >= 10
    assert all((c / "args").is_file() and (c / "expected").read_text().strip() for c in OPTION_CASES)


def test_github_actions_include_example_gives_githubs_combinations():
    # The include example of "Running variations of jobs in a workflow" (docs.github.com), with
    # the combinations that page lists for it, in that order.
    matrix = {
        "fruit": ["apple", "pear"],
        "animal": ["cat", "dog"],
        "include": [
            {"color": "green"},
            {"color": "pink", "animal": "cat"},
            {"fruit": "apple", "shape": "circle"},
            {"fruit": "banana"},
            {"fruit": "banana", "animal": "cat"},
        ],
    }
    got = [values for values, _ in combinations(matrix, {"fruit": ["apple", "pear"], "animal": ["cat", "dog"]})]
    assert got == [
        {"fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"},
        {"fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"},
        {"fruit": "pear", "animal": "cat", "color": "pink"},
        {"fruit": "pear", "animal": "dog", "color": "green"},
        {"fruit": "banana"},
        {"fruit": "banana", "animal": "cat"},
    ]


def test_github_actions_exclude_example_drops_partial_matches_and_include_adds_back():
    axes = {"os": ["macos", "windows"], "version": [12, 14, 16], "environment": ["staging", "production"]}
    exclude = [{"os": "macos", "version": 12, "environment": "production"}, {"os": "windows", "version": 16}]
    matrix = dict(axes, exclude=exclude)
    got = [v for v, _ in combinations(matrix, axes)]
    assert len(got) == 12 - 1 - 2
    assert {"os": "windows", "version": 16, "environment": "staging"} not in got
    matrix["include"] = [{"os": "windows", "version": 16}]  # matches nothing left: a combination of its own
    assert [v for v, _ in combinations(matrix, axes)][-1] == {"os": "windows", "version": 16}


AXIS_KEYS = ["num_rounds", "num_clients", "min_clients", "task_check_period", "server.task_request_interval"]


@st.composite
def matrices(draw):
    """A random matrix over numeric settings, with excludes and includes of both kinds, and the
    number of jobs it must give, counted here the slow way (every product combination tested)."""
    keys = draw(st.lists(st.sampled_from(AXIS_KEYS), min_size=1, max_size=4, unique=True))
    axes = {k: draw(st.lists(st.integers(1, 9), min_size=1, max_size=4, unique=True)) for k in keys}
    product = [dict(zip(keys, vs, strict=True)) for vs in itertools.product(*(axes[k] for k in keys))]
    exclude = draw(
        st.lists(
            st.lists(st.sampled_from(keys), min_size=1, unique=True).flatmap(
                lambda ks: st.fixed_dictionaries({k: st.sampled_from(axes[k]) for k in ks})
            ),
            max_size=3,
        )
    )
    kept = [c for c in product if not any(all(c[k] == v for k, v in e.items()) for e in exclude)]
    others = [k for k in AXIS_KEYS if k not in keys]
    # New: a product combination with one value no axis has (10 + its index): it fits no combination.
    new = []
    for i, key in enumerate(draw(st.lists(st.sampled_from(keys), max_size=2, unique=True))):
        new.append(dict(draw(st.sampled_from(product)), **{key: 10 + i}))
    include = list(new)
    if others and kept:  # extension: an axis value of a kept combination plus a key no axis has
        base = draw(st.sampled_from(kept))
        include.insert(draw(st.integers(0, len(include))), {keys[0]: base[keys[0]], others[0]: 5})
    matrix = dict(axes)
    if exclude:
        matrix["exclude"] = exclude
    if include:
        matrix["include"] = include
    return matrix, len(kept) + len(new)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(matrices(), st.booleans())
def test_random_matrices_expand_to_product_minus_excludes_plus_includes_with_unique_names(case, placeholders):
    matrix, expected = case
    name = "sweep-{" + "}-{".join(k for k in matrix if k not in ("include", "exclude")) + "}" if placeholders else "s"
    entry = {"name": name, "script": "train_full.py", "matrix": matrix}
    combos, problems = expand(entry, load_schema())
    if expected == 0:  # exclude removed every combination and no include entry makes one: refused
        ((where, message, at_key),) = problems
        assert (where, at_key, combos) == (("matrix", "exclude"), True, [])
        assert message.startswith("excludes every combination of the matrix")
        return
    assert problems == []
    assert len(combos) == expected
    names = [c.entry["name"] for c in combos]
    assert len(set(names)) == len(names)
    assert names == [c.entry["name"] for c in expand(entry, load_schema())[0]]  # same file, same names
    for combo in combos:
        for key, value in combo.values.items():
            node = combo.entry
            for part in key.split("."):
                node = node[part]
            assert node == value
        assert "matrix" not in combo.entry


def _files(project: Path, **texts: str) -> None:
    for name, text in texts.items():
        (project / name).write_text(text, encoding="utf-8")


def test_a_matrix_renders_exactly_the_jobs_written_out_by_hand(project):
    _files(
        project,
        **{
            "sweep.yaml": """
defaults: {num_clients: 2}
jobs:
  - name: np-{params_transfer_type}-r{num_rounds}
    script: train_full.py
    matrix:
      params_transfer_type: [FULL, DIFF]
      num_rounds: [1, 2]
      server.task_request_interval: [0.1]
      exclude: [{params_transfer_type: DIFF, num_rounds: 2}]
      include:
        - {params_transfer_type: DIFF, script: train_diff.py}
        - {params_transfer_type: FULL, num_rounds: 7, launch_external_process: true}
""",
            "hand.yaml": """
defaults: {num_clients: 2}
jobs:
  - {name: np-FULL-r1, script: train_full.py, params_transfer_type: FULL, num_rounds: 1,
     server: {task_request_interval: 0.1}}
  - {name: np-FULL-r2, script: train_full.py, params_transfer_type: FULL, num_rounds: 2,
     server: {task_request_interval: 0.1}}
  - {name: np-DIFF-r1, script: train_diff.py, params_transfer_type: DIFF, num_rounds: 1,
     server: {task_request_interval: 0.1}}
  - {name: np-FULL-r7, script: train_full.py, params_transfer_type: FULL, num_rounds: 7, launch_external_process: true}
""",
        },
    )
    swept = generate(project / "sweep.yaml", project / "a")
    hand = generate(project / "hand.yaml", project / "b")
    assert [j.name for j in swept.jobs] == [j.name for j in hand.jobs]
    files = {k: v for k, v in snapshot(project / "a").items() if k != ".jobgen.json"}
    assert files == {k: v for k, v in snapshot(project / "b").items() if k != ".jobgen.json"}
    manifest = json.loads((project / "a/.jobgen.json").read_text())["jobs"]
    assert manifest["np-DIFF-r1"]["matrix"] == {
        "job": "np-{params_transfer_type}-r{num_rounds}",
        "values": {
            "params_transfer_type": "DIFF",
            "num_rounds": 1,
            "server.task_request_interval": 0.1,
            "script": "train_diff.py",
        },
    }
    assert "matrix" not in json.loads((project / "b/.jobgen.json").read_text())["jobs"]["np-FULL-r1"]


def test_names_without_placeholders_get_the_values_as_a_suffix(project):
    _files(
        project,
        **{
            "jobs.yaml": """
jobs:
  - name: s
    script: train_full.py
    matrix:
      num_rounds: [3, 1]
      receiver.type: [mlflow]
      include: [{num_rounds: 9, params_transfer_type: DIFF}]
"""
        },
    )
    assert [j.name for j in check_only(project / "jobs.yaml").jobs] == ["s-3-mlflow", "s-1-mlflow", "s-9-DIFF"]


LAYERS = {
    "jobs.yaml": """
defaults:
  num_rounds: 5
  server: {task_request_interval: 0.5}
  receiver: {type: mlflow, experiment_name: base}
jobs:
  - {name: a, script: train_full.py}
  - {name: b, script: train_metrics.py, num_clients: 3}
""",
    "lab.yaml": """
defaults:
  num_clients: 4
  server: {task_request_interval: 0.1}
  receiver: {run_name: lab}
jobs:
  - {name: b, min_clients: 2}
  - {name: c, script: train_diff.py, params_transfer_type: DIFF}
""",
}


def test_later_files_merge_defaults_key_by_key_and_jobs_by_name(project):
    _files(project, **LAYERS)
    jobs = {j.name: j.settings for j in check_only([project / "jobs.yaml", project / "lab.yaml"]).jobs}
    assert list(jobs) == ["a", "b", "c"]  # same name merged in place, a new name appended
    assert jobs["a"]["num_clients"] == 4 and jobs["a"]["num_rounds"] == 5
    assert jobs["a"]["server"] == {"task_request_interval": 0.1}
    assert jobs["a"]["receiver"]["experiment_name"] == "base" and jobs["a"]["receiver"]["run_name"] == "lab"
    assert (jobs["b"]["num_clients"], jobs["b"]["min_clients"], jobs["b"]["script"]) == (3, 2, "train_metrics.py")
    assert jobs["c"]["params_transfer_type"] == "DIFF"


def test_set_wins_over_every_file_and_reads_yaml_1_2_core_values(project):
    _files(project, **LAYERS)
    sets = [
        "defaults.num_clients=2",
        "jobs.b.num_clients=1",
        "defaults.receiver.experiment_name=no",  # YAML 1.2: a string, not false
        "defaults.task_check_period=1e-1",  # YAML 1.2: a number, not text
        "jobs.c.server={task_request_interval: 0.2}",
        "jobs.b.min_clients=1",
    ]
    jobs = {j.name: j.settings for j in check_only([project / "jobs.yaml", project / "lab.yaml"], sets).jobs}
    assert jobs["a"]["num_clients"] == 2 and jobs["b"]["num_clients"] == 1
    assert jobs["a"]["receiver"]["experiment_name"] == "no"
    assert jobs["c"]["task_check_period"] == 0.1
    assert jobs["c"]["server"] == {"task_request_interval": 0.2}


def test_set_reaches_a_matrix_and_a_later_file_may_replace_one_axis(project):
    _files(
        project,
        **{
            "jobs.yaml": "jobs:\n  - name: s-{num_rounds}-{num_clients}\n    script: train_full.py\n"
            "    matrix: {num_rounds: [1, 2], num_clients: [1, 2]}\n",
            "lab.yaml": "jobs:\n  - name: s-{num_rounds}-{num_clients}\n    matrix: {num_clients: [3]}\n",
        },
    )
    names = [j.name for j in check_only([project / "jobs.yaml", project / "lab.yaml"]).jobs]
    assert names == ["s-1-3", "s-2-3"]
    sets = ["jobs.s-{num_rounds}-{num_clients}.matrix.num_rounds=[4]"]
    assert [j.name for j in check_only([project / "jobs.yaml", project / "lab.yaml"], sets).jobs] == ["s-4-3"]


def test_a_problem_in_a_later_file_is_located_in_that_file(project):
    _files(project, **LAYERS)
    (project / "lab.yaml").write_text("jobs:\n  - name: a\n    num_rounds: 0\n", encoding="utf-8")
    with pytest.raises(SpecError) as e:
        check_only([project / "jobs.yaml", project / "lab.yaml"])
    assert [str(p) for p in e.value.problems] == [
        f"{project / 'lab.yaml'}:3:17: jobs[0] (a).num_rounds: must be at least 1, got 0"
    ]


def test_one_plain_file_is_read_as_before(project):
    from generator.load import load
    from generator.overrides import load_all

    doc = load_all(project / "jobs.yaml")
    assert type(doc) is type(load(project / "jobs.yaml"))


def test_make_generate_passes_each_file_of_jobs_and_each_set():
    words = shlex.split(make_recipe("generate", "JOBS=a.yaml lab.yaml", "SET=defaults.num_rounds=2 jobs.a.x=1"))
    assert words[4:] == [
        *("--jobs", "a.yaml", "--jobs", "lab.yaml", "--out", "build/jobs"),
        *("--set", "defaults.num_rounds=2", "--set", "jobs.a.x=1"),
    ]


@pytest.mark.parametrize("target", ["simulate", "poc"])
def test_make_simulate_and_poc_run_only_the_jobs_named_by_job(target):
    """`make simulate JOB=name` ran all 14 jobs in a trial (the recipe had no --job; poc's had)."""
    command = make_recipe(target, "JOB=np-full-in-process np-cyclic")
    assert shlex.split(command)[-4:] == ["--job", "np-full-in-process", "--job", "np-cyclic"]


@pytest.mark.parametrize("target", ["simulate", "poc", "submit"])
def test_make_gives_its_results_file_and_downloads_folder_to_each_run(target):
    """A trial's second `make poc` was told to give another --downloads (and now --results): make had
    no variable for either."""
    words = shlex.split(make_recipe(target, "KIT=kit", "RESULTS=build/my results.json", "DOWNLOADS=build/my poc"))
    assert words[words.index("--results") + 1] == "build/my results.json"
    assert ("--downloads" in words) == (target != "simulate")  # simulate downloads nothing
    if target != "simulate":
        assert words[words.index("--downloads") + 1] == "build/my poc"


def test_make_passes_folders_with_a_space_as_one_argument():
    """A trial's ``make submit KIT="/path/kit dir"`` reached argparse as two words."""
    command = make_recipe("submit", "KIT=/tmp/kit dir", "OUT=/tmp/my jobs")
    assert shlex.split(command)[-4:] == ["--out", "/tmp/my jobs", "--startup-kit", "/tmp/kit dir"]


@pytest.mark.simulator
def test_a_simulated_2x2_sweep_ends_each_combination_with_its_own_model(project):
    _files(
        project,
        **{
            "jobs.yaml": """
defaults:
  num_clients: 2
  min_clients: 2
  task_check_period: 0.05
  server: {task_request_interval: 0.1}
jobs:
  - name: sweep-{script}-r{num_rounds}
    matrix:
      script: [train_full.py, train_diff.py]
      num_rounds: [1, 2]
      include:
        - {script: train_diff.py, params_transfer_type: DIFF}
"""
        },
    )
    assert run_cli(project, "generate").returncode == 0
    result = run_cli(project, "simulate", timeout=1200)
    assert result.returncode == 0, result.stdout + result.stderr
    results = {r["name"]: r for r in json.loads((project / "build/results.json").read_text())}
    expected = {
        "sweep-train_full.py-r1": 1,
        "sweep-train_full.py-r2": 2,
        "sweep-train_diff.py-r1": 1,
        "sweep-train_diff.py-r2": 2,
    }
    assert sorted(results) == sorted(expected)
    for name, rounds in expected.items():  # each client adds 1 per round; FedAvg averages
        model = np.load(project / "build/workspaces" / name / "server/simulate_job/models/server.npy")
        np.testing.assert_array_equal(model, np.array(INITIAL_MODEL, dtype=np.float32) + rounds)
        assert results[name]["ok"]


def test_the_schema_describes_the_new_keys_with_default_and_examples():
    schema = load_schema()
    matrix = schema["$defs"]["job"]["properties"]["matrix"]
    for prop in (
        schema["properties"]["max_jobs"],
        matrix,
        matrix["properties"]["include"],
        matrix["properties"]["exclude"],
    ):
        assert prop["description"] and prop["examples"]
        # A job without `matrix` is one job; `matrix: {}` is refused, so the matrix has no default to show.
        assert ("default" in prop) is (prop is not matrix)
    assert matrix["minProperties"] == 1


def test_a_problem_in_a_mapping_a_later_file_replaced_is_located_in_that_file(project):
    _files(
        project,
        **{
            "jobs.yaml": "defaults:\n  receiver: {type: mlflow, experiment_name: base}\n"
            "jobs:\n  - {name: a, script: train_metrics.py}\n",
            "lab.yaml": "defaults:\n  receiver: {run_name: lab}\n",  # merged into the mlflow receiver
            "lab2.yaml": "defaults:\n  receiver:\n    type: wandb\n    run_name: 5\n",  # replaces it
        },
    )
    with pytest.raises(SpecError) as e:
        check_only([project / "jobs.yaml", project / "lab.yaml", project / "lab2.yaml"])
    assert [str(p) for p in e.value.problems] == [
        f"{project / 'lab2.yaml'}:4:15: defaults.receiver.run_name: expected a string, got 5"
        ' (YAML reads a bare 5 as a number: write "5" in quotes)'
    ]


def test_a_matrix_job_without_a_string_name_is_reported_once(project):
    _files(
        project, **{"jobs.yaml": "jobs:\n  - name: 5\n    script: train_full.py\n    matrix: {num_rounds: [1, 2]}\n"}
    )
    with pytest.raises(SpecError) as e:
        check_only(project / "jobs.yaml")
    assert [str(p) for p in e.value.problems] == [
        f"{project / 'jobs.yaml'}:2:11: jobs[0].name: expected a string, got 5"
        ' (YAML reads a bare 5 as a number: write "5" in quotes)'
    ]


def test_a_later_files_job_whose_name_is_a_near_miss_is_added_with_a_located_warning(project, cli):
    (project / "jobs.yaml").write_text("jobs:\n  - name: np-full-in-process\n    script: train_full.py\n")
    (project / "lab.yaml").write_text(
        "jobs:\n"
        "  - name: np-ful-in-process\n"  # meant to merge into np-full-in-process
        "    script: train_full.py\n"
        "  - name: np-full-r10\n"  # a new job on purpose: not close enough to warn
        "    script: train_full.py\n"
    )
    code, out, err = cli("validate", "--jobs", "jobs.yaml", "--jobs", "lab.yaml")
    assert code == 0
    assert err == [
        "lab.yaml:2:11: jobs[0] (np-ful-in-process).name: warning: no earlier file has a job "
        "'np-ful-in-process', so this is a new job; did you mean 'np-full-in-process' (jobs merge by name)?"
    ]
    assert "np-full-in-process, np-ful-in-process, np-full-r10" in out[-1]


def test_a_pytorch_model_argument_can_be_swept_and_set_alone(project):
    """A trial's ``--set defaults.model.args.hidden=3`` was refused ("'hidden' is not a setting of
    model.args": its keys are the class's own), and a job or matrix that set only ``model.args``
    was refused for want of ``path``, which ``defaults`` gave: a model's hyperparameter could not
    be swept. ``model.args`` takes any key (checked against the class's ``__init__``); ``path`` is
    required of the merged job."""
    _files(
        project,
        **{
            "jobs.yaml": "defaults:\n  framework: pytorch\n"
            "  model: {path: pt_net.SimpleNet, args: {in_features: 2, hidden: 4}}\n"
            "jobs:\n  - name: h{model.args.hidden}\n    script: train_pt.py\n"
            "    matrix: {model.args.hidden: [4, 8]}\n"
            "  - name: own\n    script: train_pt.py\n    model: {args: {hidden: 3}}\n",
        },
    )
    jobs = {j.name: j.settings["model"] for j in check_only(project / "jobs.yaml").jobs}
    assert jobs == {
        "h4": {"path": "pt_net.SimpleNet", "args": {"in_features": 2, "hidden": 4}},
        "h8": {"path": "pt_net.SimpleNet", "args": {"in_features": 2, "hidden": 8}},
        "own": {"path": "pt_net.SimpleNet", "args": {"in_features": 2, "hidden": 3}},
    }
    jobs = {
        j.name: j.settings["model"]["args"]
        for j in check_only(
            project / "jobs.yaml", ["jobs.own.model.args.hidden=5", "defaults.model.args.in_features=3"]
        ).jobs
    }
    assert jobs == {
        "h4": {"in_features": 3, "hidden": 4},
        "h8": {"in_features": 3, "hidden": 8},
        "own": {"in_features": 3, "hidden": 5},
    }
    with pytest.raises(SpecError) as e:  # a typo is still caught, by the class's own __init__
        check_only(project / "jobs.yaml", ["defaults.model.args.hiden=3"])
    shown = [str(p) for p in e.value.problems]
    typo = "--set #1: defaults.model.args.hiden: pt_net.SimpleNet.__init__ takes no argument 'hiden'; did you mean"
    assert any(line.startswith(typo) for line in shown), shown
    (project / "jobs.yaml").write_text(
        "defaults: {framework: pytorch}\njobs:\n  - {name: a, script: train_pt.py, model: {args: {hidden: 3}}}\n"
    )
    with pytest.raises(SpecError) as e:
        check_only(project / "jobs.yaml")
    assert [str(p) for p in e.value.problems] == [
        f"{project / 'jobs.yaml'}:3:43: jobs[0] (a).model: missing required key 'path' (set it here or in "
        "`defaults`: model.path is module.Class, the torch.nn.Module the server's PTFileModelPersistor builds)"
    ]


def test_a_mapping_a_set_makes_is_located_at_that_set(project):
    """A trial's ``--set defaults.receiver.tb_folder=tbx`` (no receiver in ``defaults``) was reported at
    the file's ``defaults:`` line: the receiver it made, without ``type``, is the ``--set``'s."""
    _files(project, **{"jobs.yaml": "defaults:\n  num_rounds: 3\njobs:\n  - name: c\n    script: train_full.py\n"})
    with pytest.raises(SpecError) as e:
        check_only(project / "jobs.yaml", ["defaults.receiver.tb_folder=tbx"])
    assert [str(p) for p in e.value.problems] == [
        "--set #1: defaults.receiver.tb_folder: missing required key 'type' (every receiver names its type: mlflow, "
        "tensorboard, wandb or none, also when `defaults` sets one)"
    ]


def test_set_replaces_one_dotted_axis_of_a_matrix(project):
    """A trial's ``--set 'jobs.NAME.matrix.model.args.hidden=[2, 3]'`` was split at every dot ("expected
    a list of values, got a mapping"), and replacing the whole matrix dropped its ``include``. A matrix
    key is a dotted setting path itself: the rest of the PATH after ``matrix.`` is that one key."""
    _files(
        project,
        **{
            "jobs.yaml": "defaults:\n  framework: pytorch\n"
            "  model: {path: pt_net.SimpleNet, args: {in_features: 2, hidden: 4}}\n"
            "jobs:\n  - name: h{model.args.hidden}-{params_transfer_type}\n    script: train_pt.py\n"
            "    matrix:\n      model.args.hidden: [4, 8]\n      params_transfer_type: [FULL]\n"
            "      include: [{params_transfer_type: DIFF, model.args.hidden: 1}]\n",
        },
    )
    job = "jobs.h{model.args.hidden}-{params_transfer_type}"
    names = [j.name for j in check_only(project / "jobs.yaml", [f"{job}.matrix.model.args.hidden=[2, 3]"]).jobs]
    assert names == ["h2-FULL", "h3-FULL", "h1-DIFF"]  # the include is kept
    names = [j.name for j in check_only(project / "jobs.yaml", [f"{job}.matrix.include=[]"]).jobs]
    assert names == ["h4-FULL", "h8-FULL"]  # include and exclude are the matrix's own keys


def test_a_mistyped_job_name_in_a_later_file_is_hinted_beside_its_error(project):
    """A trial's layer ``jobs: [{name: np-diff-in-proces, num_rounds: 2}]`` got only "missing required
    key 'script'": the did-you-mean warning came only when the new job was otherwise valid."""
    _files(project, **{"near.yaml": "jobs:\n  - name: np-diff-in-proces\n    num_rounds: 2\n"})
    with pytest.raises(SpecError) as e:
        check_only([project / "jobs.yaml", project / "near.yaml"])
    near = project / "near.yaml"
    assert [str(p) for p in e.value.problems] == [
        f"{near}:2:5: jobs[0] (np-diff-in-proces): missing required key 'script' (set it here or in `defaults`)",
        f"{near}:2:11: jobs[0] (np-diff-in-proces).name: warning: no earlier file has a job 'np-diff-in-proces', "
        "so this is a new job; did you mean 'np-diff-in-process' (jobs merge by name)?",
    ]


def test_too_many_jobs_counts_right_says_where_max_jobs_is_and_set_can_raise_it(project):
    """A trial's "up to 10 jobs (2 x 2 x 6)" was 2 x 2 plus 6 include entries, "the file's jobs"
    came from three files, and `--set max_jobs=500`, which the advice called for, was refused."""
    _files(
        project,
        **{
            "big.yaml": "max_jobs: 20\njobs:\n  - name: s-{num_rounds}-{num_clients}\n    script: train_full.py\n"
            "    matrix:\n      num_rounds: [1, 2, 3, 4, 5]\n      num_clients: [2, 3, 4, 5]\n"
            "      include: [{num_rounds: 9, num_clients: 2}, {num_rounds: 8, num_clients: 2}]\n",
        },
    )
    files = [project / "jobs.yaml", project / "big.yaml"]
    with pytest.raises(SpecError) as e:
        check_only(files)
    big = project / "big.yaml"
    assert [str(p) for p in e.value.problems] == [
        f"{big}:5:5: jobs[0] (s-{{num_rounds}}-{{num_clients}}).matrix: expands to up to 22 jobs (5 x 4 + 2 include); "
        f"with the other jobs, 36 in all, more than max_jobs (20, set at {big}:1): shorten the lists, or raise "
        "max_jobs (a top-level key of a jobs file, or --set max_jobs=N) if you mean it"
    ]
    assert len(check_only(files, ["max_jobs=36"]).jobs) == 36
    with pytest.raises(SpecError) as e:
        check_only(files, ["max_jobs=35"])
    assert "more than max_jobs (35, set at --set #1)" in str(e.value.problems[0])


def test_validate_show_prints_a_jobs_effective_settings_as_yaml(project, cli):
    """A trial layering a lab file and --set over jobs.yaml had no way to see what a job came to
    (``validate`` named the jobs only). ``--show NAME`` prints its settings after every layer, as
    YAML on stdout (the summary a comment), an expanded matrix job by its own name."""
    _files(
        project,
        **{
            "lab.yaml": "defaults: {num_rounds: 3}\njobs:\n  - name: np-diff-in-process\n    num_clients: 3\n"
            "  - name: s-r{num_rounds}\n    script: train_full.py\n    matrix: {num_rounds: [1, 2]}\n",
        },
    )
    code, out, err = cli(
        "validate",
        "--jobs",
        "jobs.yaml",
        "--jobs",
        "lab.yaml",
        "--set",
        "jobs.np-diff-in-process.min_clients=3",
        "--show",
        "np-diff-in-process",
        "--show",
        "s-r2",
    )
    assert (code, err) == (0, [])
    assert out[0].startswith("# jobs.yaml lab.yaml: 16 job(s) valid: ")
    shown = yaml.safe_load("\n".join(out))
    assert list(shown) == ["np-diff-in-process", "s-r2"]
    diff = shown["np-diff-in-process"]
    assert (diff["num_rounds"], diff["num_clients"], diff["min_clients"]) == (3, 3, 3)
    assert diff["params_transfer_type"] == "DIFF" and diff["script"] == "train_diff.py"
    assert shown["s-r2"]["num_rounds"] == 2 and "matrix" not in shown["s-r2"]
    # a matrix job as written shows every job it expanded to
    code, out, err = cli("validate", "--jobs", "jobs.yaml", "--jobs", "lab.yaml", "--show", "s-r{num_rounds}")
    assert (code, err) == (0, [])
    assert list(yaml.safe_load("\n".join(out))) == ["s-r1", "s-r2"]
    code, _, err = cli("validate", "--jobs", "jobs.yaml", "--jobs", "lab.yaml", "--show", "s-r{num_round}")
    assert (code, err) == (
        2,
        [
            "jobs.yaml: --show 's-r{num_round}': no job of that name in jobs.yaml or lab.yaml; "
            "did you mean 's-r{num_rounds}'?"
        ],
    )
    code, _, err = cli("validate", "--show", "np-dif-in-process")
    assert (code, err) == (
        2,
        ["jobs.yaml: --show 'np-dif-in-process': no job of that name in this file; did you mean 'np-diff-in-process'?"],
    )


def test_an_include_that_a_set_axis_no_longer_matches_names_that_set(project):
    """A trial's ``--set ...matrix.params_transfer_type=[FULL]`` left the file's ``include`` entry for
    DIFF without a combination to extend; the error named only the file's include entry."""
    _files(
        project,
        **{
            "jobs.yaml": "jobs:\n  - name: np-{params_transfer_type}-r{num_rounds}\n    script: train_full.py\n"
            "    matrix:\n      params_transfer_type: [FULL, DIFF]\n      num_rounds: [1, 2]\n"
            "      include:\n        - {params_transfer_type: DIFF, script: train_diff.py}\n",
        },
    )
    assert len(check_only(project / "jobs.yaml").jobs) == 4
    with pytest.raises(SpecError) as e:
        check_only(
            project / "jobs.yaml", ["jobs.np-{params_transfer_type}-r{num_rounds}.matrix.params_transfer_type=[FULL]"]
        )
    (problem,) = e.value.problems
    assert str(problem).endswith(
        "matrix.include[0]: makes a combination without num_rounds, which the name's {num_rounds} needs "
        "(the matrix's axes as merged: params_transfer_type from --set #1)"
    )
    assert problem.file == str(project / "jobs.yaml") and problem.line == 8


def test_a_set_of_a_setting_the_matrix_sweeps_is_warned_of(project):
    """A trial's ``--set ...model.args.hidden=8`` on a job whose matrix sweeps ``model.args.hidden``
    was accepted without a word, and every combination set its own value over it."""
    _files(
        project,
        **{
            "jobs.yaml": "jobs:\n  - name: s-r{num_rounds}\n    script: train_full.py\n"
            "    matrix: {num_rounds: [1, 2]}\n  - name: plain\n    script: train_full.py\n",
        },
    )
    result = check_only(project / "jobs.yaml", ["jobs.s-r{num_rounds}.num_rounds=7", "jobs.plain.num_rounds=7"])
    assert [str(w) for w in result.warnings] == [
        "--set #1: jobs.s-r{num_rounds}.num_rounds: warning: the matrix of job 's-r{num_rounds}' sets num_rounds in "
        "every combination, over this value: set that axis instead (jobs.s-r{num_rounds}.matrix.num_rounds=[...])"
    ]
    assert [j.settings["num_rounds"] for j in result.jobs] == [1, 2, 7]


def test_max_jobs_below_the_plain_jobs_is_no_silent_failure(project, cli):
    """A trial's ``validate --set max_jobs=5`` on 14 plain jobs exited 2 with nothing printed: the cap
    counted them but only matrix jobs got a message. It caps what matrices expand to: a file without
    a matrix is not capped, and one whose matrices are single combinations is told at max_jobs."""
    assert cli("validate", "--set", "max_jobs=5")[0] == 0
    _files(
        project,
        **{
            "m.yaml": "max_jobs: 2\njobs:\n  - {name: a, script: train_full.py}\n  - {name: b, script: train_full.py}\n"
            "  - name: c-{num_rounds}\n    script: train_full.py\n    matrix: {num_rounds: [1]}\n",
        },
    )
    assert cli("validate", "--jobs", "m.yaml") == (
        2,
        [],
        [
            "m.yaml:1:11: max_jobs: the jobs, their matrices expanded, come to 3, more than max_jobs (2, set at "
            "m.yaml:1): raise max_jobs (a top-level key of a jobs file, or --set max_jobs=N) or leave it out"
        ],
    )


def test_include_entries_a_set_leaves_alone_or_overrides_are_warned_of(project):
    """A trial swept ``model.args.hidden: [2, 4]`` with include entries adding ``--hidden N``; a
    ``--set`` of the axis to [2, 3] left the 4 entry a job of its own and 3 without its option, and
    a ``--set`` of ``script_args`` went nowhere (the include entries set it): both without a word."""
    _files(
        project,
        **{
            "jobs.yaml": "defaults:\n  framework: pytorch\n  model: {path: pt_net.SimpleNet, args: {in_features: 2}}\n"
            "jobs:\n  - name: h{model.args.hidden}\n    script: train_pt.py\n    matrix:\n"
            "      model.args.hidden: [2, 4]\n      include:\n"
            "        - {model.args.hidden: 2, script_args: --hidden 2}\n"
            "        - {model.args.hidden: 4, script_args: --hidden 4}\n",
        },
    )
    plain = check_only(project / "jobs.yaml")
    assert [j.name for j in plain.jobs] == ["h2", "h4"] and plain.warnings == []
    result = check_only(project / "jobs.yaml", ["jobs.h{model.args.hidden}.matrix.model.args.hidden=[2, 3]"])
    assert [j.name for j in result.jobs] == ["h2", "h3", "h4"]
    assert [str(w) for w in result.warnings] == [
        f"{project / 'jobs.yaml'}:11:11: jobs[0] (h{{model.args.hidden}}).matrix.include[1]: warning: extends no "
        "combination of the matrix's axes as merged (model.args.hidden from --set #1), so it makes a job of its "
        "own, 'h4': give the axes that value too, or change the entry"
    ]
    result = check_only(project / "jobs.yaml", ["jobs.h{model.args.hidden}.script_args=--hidden 8"])
    assert [str(w) for w in result.warnings] == [
        "--set #1: jobs.h{model.args.hidden}.script_args: warning: include entries of the matrix of job "
        "'h{model.args.hidden}' set script_args in the combinations they make or extend, over this value: change "
        "it there (in the file, or replace jobs.h{model.args.hidden}.matrix.include)"
    ]
    assert [j.settings["script_args"] for j in result.jobs] == ["--hidden 2", "--hidden 4"]


def test_a_set_of_an_expanded_job_name_says_how_to_reach_it(project):
    """A trial's ``--set jobs.pt-sweep-h2.num_rounds=3`` said only "no job named": the jobs a matrix
    expands to exist after the ``--set``s, reached through the matrix job as written."""
    _files(
        project,
        **{
            "jobs.yaml": "jobs:\n  - name: s-r{num_rounds}\n    script: train_full.py\n"
            "    matrix: {num_rounds: [1, 2]}\n"
        },
    )
    with pytest.raises(SpecError) as e:
        check_only(project / "jobs.yaml", ["jobs.s-r2.script=train_diff.py"])
    assert [str(p) for p in e.value.problems] == [
        "--set #1: jobs.s-r2.script: no job named 's-r2' (jobs: s-r{num_rounds}); a job a matrix expands to is set "
        "through its matrix job, by the name as written (matrix jobs: s-r{num_rounds}), for all its jobs, or one of "
        "them with the matrix's include"
    ]


def test_set_target_is_the_longest_job_name_the_path_continues():
    """A job name may hold dots: ``--set`` and the manifest's ``made_from`` read a path the same way."""
    from generator.overrides import set_target

    names = ["exp-lr-0", "exp-lr-0.1", "ring"]
    assert set_target("jobs.exp-lr-0.1.num_rounds", names) == "exp-lr-0.1"
    assert set_target("jobs.exp-lr-0.num_rounds", names) == "exp-lr-0"
    assert set_target("jobs.ring.matrix.num_rounds", names) == "ring"
    assert set_target("jobs.rings.num_rounds", names) is None
    assert set_target("jobs.ring", names) is None  # no key after the name
    assert set_target("defaults.num_rounds", names) is None


def test_a_later_default_that_jobs_keep_their_own_value_over_is_warned_of(project, cli):
    """Trial 46: ``--set defaults.num_rounds=1`` reached none of the jobs, which each set their own,
    and generate said "up to date"; the README's lab.yaml left the PyTorch jobs at their own 3 rounds.
    A job's value from the same or a later layer, a value equal to the default and the first file's
    own defaults are meant, and not warned of."""
    _files(
        project,
        **{
            "mine.yaml": "defaults: {num_rounds: 4}\njobs:\n  - {name: a, script: train_full.py, num_rounds: 3}\n"
            "  - {name: b, script: train_full.py, num_rounds: 2}\n"
            "  - {name: s, script: train_full.py, matrix: {num_clients: [2, 3]}}\n",
            "lab.yaml": "defaults: {num_rounds: 2, num_clients: 3}\njobs:\n  - {name: a, num_rounds: 5}\n",
        },
    )
    code, _, err = cli("validate", "--jobs", "mine.yaml", "--jobs", "lab.yaml")
    assert (code, err) == (
        0,
        [
            "lab.yaml:1:40: defaults.num_clients: warning: does not reach s, which sets its own num_clients (a job's "
            "own value wins over defaults): set it there too (jobs.NAME.num_clients)"
        ],
    )
    code, _, err = cli("validate", "--jobs", "mine.yaml", "--set", "defaults.num_rounds=1")
    assert (code, err) == (
        0,
        [
            "--set #1: defaults.num_rounds: warning: does not reach a, b, which set their own num_rounds (a job's "
            "own value wins over defaults): set it there too (jobs.NAME.num_rounds)"
        ],
    )
    _files(project, **{"only.yaml": "jobs:\n  - {name: a, script: train_full.py, num_rounds: 3}\n"})
    code, _, err = cli("validate", "--jobs", "only.yaml", "--set", "defaults.num_rounds=1")
    assert err == [
        "--set #1: defaults.num_rounds: warning: reaches no job: every job sets its own num_rounds (a), which wins "
        "over defaults; set it per job (--set 'jobs.*.num_rounds=...' sets every job's) or take it out of the jobs"
    ]


def test_a_set_of_a_job_pattern_sets_every_job_it_matches(project, cli):
    """``--set 'jobs.np-full-*.num_rounds=1'``: the defaults warning's advice for jobs that set their
    own value (trial 46 had to write one --set per job); matrix jobs match by their name as written."""
    code, out, err = cli(
        "validate",
        "--set",
        "jobs.np-full-*.num_rounds=1",
        "--set",
        "jobs.pt-*.model.args.hidden=8",
        "--show",
        "np-full-in-process",
        "--show",
        "np-full-sub-process",
        "--show",
        "np-diff-in-process",
        "--show",
        "pt-full-in-process",
    )
    assert (code, err) == (0, [])
    shown = yaml.safe_load("\n".join(out))
    assert [shown[n]["num_rounds"] for n in shown] == [1, 5, 1, 3]  # file order: full-in, diff-in, full-sub, pt
    assert shown["pt-full-in-process"]["model"]["args"]["hidden"] == 8
    assert cli("validate", "--set", "jobs.zz*.num_rounds=1")[2][0].startswith(
        "--set #1: jobs.zz*.num_rounds: 'zz*' matches no job (jobs: np-full-in-process, "
    )
    assert cli("validate", "--set", "jobs.np-*.num_roundz=1")[2] == [  # the key's problem once, not per job
        "--set #1: jobs.np-*.num_roundz: 'num_roundz' is not a setting; did you mean 'num_rounds'?"
    ]
    assert cli("generate", "--set", "jobs.np-full-*.num_rounds=1")[0] == 0
    manifest = json.loads((project / "build/jobs/.jobgen.json").read_text())
    made = {name: entry["made_from"] for name, entry in manifest["jobs"].items() if "made_from" in entry}
    assert made == {
        name: {"jobs": ["jobs.yaml"], "set": ["jobs.np-full-*.num_rounds=1"]}
        for name in ("np-full-in-process", "np-full-sub-process")
    }
