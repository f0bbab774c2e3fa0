"""The escape hatch: ``server`` / ``client`` components, executors and filters written as NVFlare's configs hold them.

The bad inputs validate finds are case files (``tests/cases/invalid/extras_*.yaml``). Here: where
render puts each entry (exact configs, per site too), that jobs without extras render as before
(the golden folders of ``test_render.py``), what ``lint`` says about an entry (located at its
``jobs.yaml`` entry: a class that does not import, args it does not take, a second persistor, a
class in the job's own ``custom/`` code), and, in the simulator, a job with NVFlare's own
``PercentilePrivacy`` task-result filter, one with it on one site only, and one with a filter of
the job's own code: each final model shows exactly what the filter did.
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
from conftest import INITIAL_MODEL, ROOT, simulate_project

from generator.load import load
from generator.render import Renderer
from generator.validate import validate

PERSISTOR = "nvflare.app_common.np.np_model_persistor.NPModelPersistor"
SELECTOR = "nvflare.app_common.widgets.intime_model_selector.IntimeModelSelector"
PRIVACY = "nvflare.app_common.filters.percentile_privacy.PercentilePrivacy"
EXCLUDE = "nvflare.app_common.filters.exclude_vars.ExcludeVars"
VALIDATOR = "nvflare.app_common.np.np_validator.NPValidator"
CLIENT_API = "nvflare.app_common.executors.client_api_executor.ClientAPIExecutor"
SERVER = "app/config/config_fed_server.json"
CLIENT = "app/config/config_fed_client.json"

#: PercentilePrivacy on each site's DIFF: every weight changes by 1 a round, the 10th percentile of
#: |diff| is 1, nothing is below it, and each diff is clipped to gamma (0.5).
PRIVACY_FILTER = {"tasks": ["train"], "filters": [{"path": PRIVACY, "args": {"percentile": 10, "gamma": 0.5}}]}


def _jobs(project, text: str):
    (project / "jobs.yaml").write_text(text, encoding="utf-8")
    return {job.name: job for job in validate(load(project / "jobs.yaml"))}


def _render(project, job) -> dict:
    files = Renderer(project / "client_scripts").render(job)
    return {name: json.loads(data) for name, data in files.items() if name.endswith(".json")}


def test_render_places_each_entry_where_nvflare_has_it(project):
    shutil.copy(ROOT / "tests/cases/valid/extras.yaml", project / "jobs.yaml")
    jobs = {job.name: job for job in validate(load(project / "jobs.yaml"))}

    filtered = _render(project, jobs["filtered"])
    assert filtered[CLIENT]["task_result_filters"] == [
        {"tasks": ["train"], "filters": [{"path": PRIVACY, "args": {"percentile": 10, "gamma": 0.5}}]}
    ]
    assert filtered[CLIENT]["task_data_filters"] == [] and filtered[CLIENT]["components"] == []
    # defaults' server component comes after the generated ones
    assert filtered[SERVER]["components"] == [
        {"id": "persistor", "path": PERSISTOR, "args": {}},
        {"id": "model_selector", "path": SELECTOR, "args": {"key_metric": "accuracy"}},
    ]

    own = _render(project, jobs["own-persistor"])
    # the replacing persistor keeps the generated one's id and place; cross-site evaluation's after it
    assert [(c["id"], c["path"]) for c in own[SERVER]["components"]] == [
        ("persistor", PERSISTOR),
        ("model_locator", "nvflare.app_common.np.np_model_locator.NPModelLocator"),
        ("json_generator", "nvflare.app_common.widgets.validation_json_generator.ValidationJsonGenerator"),
    ]  # its own server.components replaces the list in defaults (lists are never merged)
    assert own[SERVER]["components"][0]["args"] == {"model_dir": "my_models"}
    assert own[SERVER]["task_result_filters"] == [
        {"tasks": ["train"], "filters": [{"path": EXCLUDE, "args": {"exclude_vars": ["unused"]}}]}
    ]
    # an executor of its own comes before the generated one, which keeps every other task
    executors = own[CLIENT]["executors"]
    assert executors[0] == {"tasks": ["validate"], "executor": {"path": VALIDATOR, "args": {}}}
    assert [e["tasks"] for e in executors] == [["validate"], ["*"]] and executors[1]["executor"]["path"] == CLIENT_API

    on_27 = _render(project, jobs["filtered-27"])
    assert on_27[CLIENT]["task_result_filters"] == [
        {"tasks": ["train"], "filters": [{"path": EXCLUDE, "args": {"exclude_vars": ["unused"]}}]}
    ]
    assert on_27[CLIENT]["executors"][0]["executor"]["path"] == (
        "nvflare.app_common.executors.in_process_client_api_executor.InProcessClientAPIExecutor"
    )


def test_a_site_with_its_own_client_entries_gets_its_own_app(project):
    shutil.copy(ROOT / "tests/cases/valid/extras.yaml", project / "jobs.yaml")
    jobs = {job.name: job for job in validate(load(project / "jobs.yaml"))}
    files = _render(project, jobs["per-site-filter"])
    assert files["meta.json"]["deploy_map"] == {
        "app_server": ["server"],
        "app_site-1": ["site-1"],
        "app_site-2": ["site-2"],
    }
    assert files["app_site-1/config/config_fed_client.json"]["task_data_filters"] == []
    assert files["app_site-2/config/config_fed_client.json"]["task_data_filters"] == [
        {"tasks": ["train"], "filters": [{"path": EXCLUDE, "args": {}}]}
    ]
    # the server's entries (from defaults) are in the server app
    assert files["app_server/config/config_fed_server.json"]["components"][-1]["id"] == "model_selector"


def test_a_site_entry_replaces_the_jobs_list(project):
    (project / "client_scripts/my_filters.py").write_text(MY_FILTERS, encoding="utf-8")
    text = (
        "jobs:\n  - name: a\n    script: train_diff.py\n    params_transfer_type: DIFF\n"
        "    custom_files: [my_filters.py]\n"
        f"    client: {{task_result_filters: [{json.dumps(PRIVACY_FILTER)}]}}\n"
        "    sites:\n      site-2:\n        client:\n          task_result_filters:\n"
        f"            - {{tasks: [train], filters: [{{path: {EXCLUDE}}}]}}\n"
    )
    job = _jobs(project, text)["a"]
    shipped = Renderer(project / "client_scripts").render(job)
    # every client app ships the job's custom_files, the one of a site without settings of its own too
    assert {"app_site-1/custom/my_filters.py", "app_site-2/custom/my_filters.py"} <= set(shipped)
    files = _render(project, job)
    assert files["app_site-1/config/config_fed_client.json"]["task_result_filters"] == [PRIVACY_FILTER]
    assert files["app_site-2/config/config_fed_client.json"]["task_result_filters"] == [
        {"tasks": ["train"], "filters": [{"path": EXCLUDE, "args": {}}]}
    ]


# -- lint: each entry's class imported and its args bound, located at the jobs.yaml entry -----------------

LINT_JOBS = f"""\
jobs:
  - name: a
    script: train_diff.py
    params_transfer_type: DIFF
    custom_files: [my_filters.py]
    client:
      task_result_filters:
        - tasks: [train]
          filters:
            - path: {PRIVACY}
              args: {{percentil: 10}}
            - path: my_filters.Scale
              args: {{factor: 2}}
            - path: my_filters.Nope
            - path: other_module.Scale
            - path: nvflare.app_common.filters.no_such_module.Filter
    server:
      components:
        - {{id: second, path: {PERSISTOR}}}
        - {{id: selector, path: {SELECTOR}}}
"""

#: A filter of the job's own code (shipped with custom_files): multiplies each DIFF by ``scale``.
MY_FILTERS = '''\
"""A task-result filter of the job's own: every weight difference times ``scale``."""

from nvflare.apis.dxo import DataKind
from nvflare.apis.dxo_filter import DXOFilter


class Scale(DXOFilter):
    def __init__(self, scale: float = 0.5):
        super().__init__(supported_data_kinds=[DataKind.WEIGHT_DIFF], data_kinds_to_filter=[DataKind.WEIGHT_DIFF])
        self.scale = scale

    def process_dxo(self, dxo, shareable, fl_ctx):
        dxo.data = {name: value * value.dtype.type(self.scale) for name, value in dxo.data.items()}
        return dxo
'''


def test_lint_locates_each_entry_problem_in_jobs_yaml(project, cli):
    (project / "jobs.yaml").write_text(LINT_JOBS, encoding="utf-8")
    (project / "client_scripts/my_filters.py").write_text(MY_FILTERS, encoding="utf-8")
    assert cli("generate")[0] == 0
    code, _, err = cli("lint")
    client = "build/jobs/a/app/config/config_fed_client.json"
    server = "build/jobs/a/app/config/config_fed_server.json"
    chain = "jobs[0] (a).client.task_result_filters[0].filters"
    assert code == 2
    assert err == [
        f"jobs.yaml:11:33: {chain}[0].args.percentil: {PRIVACY}: got an unexpected keyword argument 'percentil'; "
        f"did you mean 'percentile'? (in {client}:29:9, task_result_filters[0].filters[0])",
        f"jobs.yaml:13:30: {chain}[1].args.factor: my_filters.Scale: got an unexpected keyword argument 'factor' "
        f"(it accepts: scale) (in {client}:35:9, task_result_filters[0].filters[1])",
        f"jobs.yaml:14:21: {chain}[2].path: my_filters has no class 'Nope' "
        f"(in {client}:41:9, task_result_filters[0].filters[2])",
        f"jobs.yaml:15:21: {chain}[3].path: 'other_module.Scale' is neither an nvflare class nor in the app's custom/ "
        "folder (ship its module with custom_files): lint imports nothing else "
        f"(in {client}:45:9, task_result_filters[0].filters[3])",
        f"jobs.yaml:16:21: {chain}[4].path: cannot import nvflare.app_common.filters.no_such_module: "
        "ModuleNotFoundError: "
        "No module named 'nvflare.app_common.filters.no_such_module' "
        f"(in {client}:49:9, task_result_filters[0].filters[4])",
        f"jobs.yaml:19:11: jobs[0] (a).server.components[0]: {PERSISTOR} is a ModelPersistor, and the generated config "
        f"already has one ({PERSISTOR}, id 'persistor', which the workflows find by id): to use yours instead write "
        f"id: persistor and replaces: persistor (in {server}:23:5, components[1])",
    ]
    assert "my_filters" not in sys.modules  # imported from the job's custom/ folder, then forgotten


def test_lint_names_the_import_path_of_a_module_shipped_below_a_folder(project, cli):
    # a trial's custom_files: [mynet/my_widgets.py] with path: my_widgets.LossLogger was told to ship it
    (project / "client_scripts/mynet").mkdir()
    (project / "client_scripts/mynet/my_filters.py").write_text(MY_FILTERS, encoding="utf-8")
    (project / "jobs.yaml").write_text(
        "jobs:\n  - name: a\n    script: train_diff.py\n    params_transfer_type: DIFF\n"
        "    custom_files: [mynet/my_filters.py]\n    client:\n      task_result_filters:\n"
        "        - {tasks: [train], filters: [{path: my_filters.Scale}]}\n",
        encoding="utf-8",
    )
    assert cli("generate")[0] == 0
    code, _, err = cli("lint")
    assert code == 2
    assert [line.split(": ", 1)[1].split(" (in ")[0] for line in err] == [
        "jobs[0] (a).client.task_result_filters[0].filters[0].path: 'my_filters.Scale' is neither an nvflare class nor "
        "in the app's custom/ folder, which holds mynet/my_filters.py: did you mean 'mynet.my_filters.Scale'? "
        "(NVFlare imports a custom/ module by its path below custom/)"
    ]


def test_lint_passes_entries_that_fit(project, cli):
    shutil.copy(ROOT / "tests/cases/valid/extras.yaml", project / "jobs.yaml")
    text = (project / "jobs.yaml").read_text(encoding="utf-8")
    text = (
        text.split("  - name: filtered-27")[0]
        + "  - name: per-site-filter"
        + text.split("  - name: per-site-filter")[1]
    )
    text += "    custom_files: [my_filters.py]\n    client:\n      task_result_filters:\n"
    text += "        - {tasks: [train], filters: [{path: my_filters.Scale, args: {scale: 0.25}}]}\n"
    (project / "jobs.yaml").write_text(text, encoding="utf-8")
    (project / "client_scripts/my_filters.py").write_text(MY_FILTERS, encoding="utf-8")
    assert cli("generate")[0] == 0
    assert cli("lint")[0:3:2] == (0, [])


# -- the simulator: the filters' effect on the final model ---------------------------------------------

SIMULATED = f"""\
defaults:
  num_rounds: 2
  script: train_diff.py
  params_transfer_type: DIFF
  server: {{task_request_interval: 0.1}}
jobs:
  - name: privacy
    client:
      task_result_filters: [{json.dumps(PRIVACY_FILTER)}]
  - name: privacy-on-site-2
    launch_external_process: true
    sites:
      site-2:
        client:
          task_result_filters: [{json.dumps(PRIVACY_FILTER)}]
  - name: own-filter
    custom_files: [my_filters.py]
    client:
      task_result_filters:
        - tasks: [train]
          filters: [{{path: my_filters.Scale, args: {{scale: 0.25}}}}]
"""

#: What each site's DIFF (1 per weight and round) becomes, averaged by FedAvg, times 2 rounds.
EXPECTED_GAIN = {"privacy": 2 * 0.5, "privacy-on-site-2": 2 * (1 + 0.5) / 2, "own-filter": 2 * 0.25}


@pytest.fixture(scope="module")
def filtered_run(tmp_path_factory):
    """Generate and simulate the three filtered jobs (2 rounds, 2 sites), as a user does."""
    project = tmp_path_factory.mktemp("filtered")
    _, result, results = simulate_project(project, SIMULATED, files={"client_scripts/my_filters.py": MY_FILTERS})
    return project, result, results


@pytest.mark.simulator
@pytest.mark.parametrize("name", sorted(EXPECTED_GAIN))
def test_the_filter_shows_in_the_final_model(filtered_run, name):
    project, result, results = filtered_run
    assert result.returncode == 0, result.stdout + result.stderr
    model = np.load(project / "build/workspaces" / name / "server/simulate_job/models/server.npy")
    expected = np.array(INITIAL_MODEL, dtype=np.float32) + np.float32(EXPECTED_GAIN[name])
    np.testing.assert_array_equal(model, expected)  # unfiltered: initial + 2
    assert results[name]["ok"], results[name]
