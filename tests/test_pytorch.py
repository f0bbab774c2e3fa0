"""``framework: pytorch``: what a PyTorch job renders to, its checks, the judge of its model, and real runs.

Fast tests render jobs and check them (no torch needed, except where a test reads a checkpoint:
it is skipped without torch). The simulator tests (``simulator``) run PyTorch jobs in NVFlare's
simulator and check every final weight exactly: ``client_scripts/pt_net.py``'s SimpleNet starts
with every value of its k-th parameter at k, and ``train_pt.py`` adds ``--increment`` to every
parameter per round.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, simulate_project

from generator.components import PYTORCH
from generator.layout import PT_FINAL_MODEL, ManifestEntry
from generator.load import load
from generator.ptmodel import imported_modules, model_files
from generator.render import Renderer
from generator.validate import validate

PERSISTOR = "nvflare.app_opt.pt.file_model_persistor.PTFileModelPersistor"
LOCATOR = "nvflare.app_opt.pt.file_model_locator.PTFileModelLocator"
MODEL = {"path": "pt_net.SimpleNet", "args": {"in_features": 2, "hidden": 2}}


def _render(project: Path, text: str) -> dict[str, dict[str, bytes]]:
    (project / "jobs.yaml").write_text(text, encoding="utf-8")
    renderer = Renderer(project / "client_scripts")
    return {job.name: renderer.render(job) for job in validate(load(project / "jobs.yaml"))}


def _job(name: str, **options) -> str:
    return "  - " + json.dumps(
        {"name": name, "script": "train_pt.py", "framework": "pytorch", "model": MODEL, **options}
    )


def _json(files: dict, name: str) -> dict:
    return json.loads(files[name])


def test_server_has_the_pt_persistor_building_the_model_and_its_locator(project):
    files = _render(project, "jobs:\n" + _job("pt", initial_ckpt="/ckpt/start.pt") + "\n")["pt"]
    server = _json(files, "app/config/config_fed_server.json")
    assert server["components"] == [
        {
            "id": "persistor",
            "path": PERSISTOR,
            "args": {"model": MODEL, "allow_numpy_conversion": True, "source_ckpt_file_full_name": "/ckpt/start.pt"},
        },
        {"id": "locator", "path": LOCATOR, "args": {"pt_persistor_id": "persistor"}},
    ]
    assert server["workflows"][0]["args"]["persistor_id"] == "persistor"
    # the model's module is shipped beside the script, where the server's app imports it
    assert files["app/custom/pt_net.py"] == (ROOT / "client_scripts/pt_net.py").read_bytes()
    assert files["app/custom/train_pt.py"] == (ROOT / "client_scripts/train_pt.py").read_bytes()


@pytest.mark.parametrize("sub", [False, True])
def test_client_exchanges_pytorch_on_29(project, sub):
    files = _render(project, "jobs:\n" + _job("pt", launch_external_process=sub, nvflare_version="2.9") + "\n")["pt"]
    (executor,) = _json(files, "app/config/config_fed_client.json")["executors"]
    args = executor["executor"]["args"]
    assert executor["executor"]["path"] == "nvflare.app_common.executors.client_api_executor.ClientAPIExecutor"
    assert (args["params_exchange_format"], args["server_expected_format"]) == ("pytorch", "numpy")
    assert args["execution_mode"] == ("external_process" if sub else "in_process")


@pytest.mark.parametrize(
    ("sub", "path"),
    [
        (False, "nvflare.app_opt.pt.in_process_client_api_executor.PTInProcessClientAPIExecutor"),
        (True, "nvflare.app_opt.pt.client_api_launcher_executor.PTClientAPILauncherExecutor"),
    ],
)
def test_client_uses_the_pt_executors_on_27(project, sub, path):
    files = _render(project, "jobs:\n" + _job("pt", launch_external_process=sub, nvflare_version="2.7") + "\n")["pt"]
    (executor,) = _json(files, "app/config/config_fed_client.json")["executors"]
    assert executor["executor"]["path"] == path
    assert executor["executor"]["args"]["params_exchange_format"] == "pytorch"


def test_numpy_jobs_keep_the_np_persistor(project):
    files = _render(project, "jobs:\n  - {name: np, script: train_full.py}\n")["np"]
    server = _json(files, "app/config/config_fed_server.json")
    assert [c["path"] for c in server["components"]] == ["nvflare.app_common.np.np_model_persistor.NPModelPersistor"]
    assert _json(files, "app/config/config_fed_client.json")["executors"][0]["executor"]["args"][
        "params_exchange_format"
    ] == ("numpy")


def test_cross_site_eval_finds_the_model_through_a_pt_locator(project):
    files = _render(project, "jobs:\n" + _job("pt", cross_site_eval=True) + "\n")["pt"]
    server = _json(files, "app/config/config_fed_server.json")
    by_id = {c["id"]: c for c in server["components"]}
    assert by_id["model_locator"] == {"id": "model_locator", "path": LOCATOR, "args": {"pt_persistor_id": "persistor"}}
    assert server["workflows"][1]["args"]["model_locator_id"] == "model_locator"
    assert "nvflare.app_common.np.np_model_locator.NPModelLocator" not in json.dumps(server)


def test_a_multi_app_job_ships_the_model_into_the_server_app(project):
    sites = {"site-2": {"script_args": "--increment 3"}}  # site-1 keeps the job's own settings
    files = _render(project, "jobs:\n" + _job("pt", sites=sites) + "\n")["pt"]
    assert files["app_server/custom/pt_net.py"] == (ROOT / "client_scripts/pt_net.py").read_bytes()
    for site in ("site-1", "site-2"):  # the script imports it: shipped with it into each client app
        assert f"app_{site}/custom/pt_net.py" in files


def test_the_local_modules_a_model_imports_are_shipped_with_it(project):
    """The server builds the model from app/custom/ alone: what its module imports goes there too."""
    scripts = project / "client_scripts"
    (scripts / "nets").mkdir()
    (scripts / "nets/__init__.py").write_text("")
    (scripts / "nets/tiny.py").write_text(
        "import torch\nfrom net_defaults import START\n\n\nclass Tiny(torch.nn.Module):\n    pass\n"
    )
    (scripts / "net_defaults.py").write_text("from net_consts import ONE\nSTART = ONE\n")
    (scripts / "net_consts.py").write_text("ONE = 1.0\n")
    model = {"path": "nets.tiny.Tiny"}
    sites = {"site-2": {"script_args": "--increment 3"}}
    text = "jobs:\n" + _job("one", model=model) + "\n" + _job("apps", model=model, sites=sites) + "\n"
    rendered = _render(project, text)
    expected = ["nets/__init__.py", "nets/tiny.py", "net_defaults.py", "net_consts.py"]
    for name, app in (("one", "app"), ("apps", "app_server")):
        for module in expected:
            assert rendered[name][f"{app}/custom/{module}"] == (scripts / module).read_bytes(), (name, module)
    assert not any(f.startswith("app_site-1/custom/net") for f in rendered["apps"])  # the script does not import it


def test_model_files_follow_packages_and_namespace_folders(tmp_path):
    (tmp_path / "pkg/nets").mkdir(parents=True)
    (tmp_path / "pkg/__init__.py").write_text("")
    (tmp_path / "pkg/nets/tiny.py").write_text("class Net: pass\n")
    assert model_files(tmp_path, "pkg.nets.tiny.Net") == (
        [("pkg/__init__.py", "pkg/__init__.py"), ("pkg/nets/tiny.py", "pkg/nets/tiny.py")],
        None,
    )
    files, why = model_files(tmp_path, "pkg.nets.small.Net")
    assert files == [] and "no client_scripts/pkg/nets/small.py" in why


def test_the_shipped_scripts_are_what_the_numpy_rule_expects():
    """train_pt.py and pt_net.py import torch; train_eval.py imports numpy alone (refused for pytorch)."""
    scripts = ROOT / "client_scripts"
    assert "torch" in imported_modules([scripts / "train_pt.py"]) & imported_modules([scripts / "pt_net.py"])
    assert {"numpy"} <= imported_modules([scripts / "train_eval.py"])
    assert "torch" not in imported_modules([scripts / "train_eval.py"])


def test_model_paths_generate_cannot_follow_say_what_to_write(project, cli):
    """A package re-exporting the class, an alias, an installed class, and a relative checkpoint the
    server app will not hold: each refused at its key, saying what to write instead."""
    scripts = project / "client_scripts"
    (scripts / "nets").mkdir()
    (scripts / "nets/__init__.py").write_text("from .tiny import Tiny\nAlias = Tiny\n")
    (scripts / "nets/tiny.py").write_text("import torch\n\n\nclass Tiny(torch.nn.Module):\n    pass\n")
    (scripts / "start.pt").write_bytes(b"")
    jobs = [
        {"name": "reexport", "model": {"path": "nets.Tiny"}},
        {"name": "alias", "model": {"path": "nets.Alias"}},
        {"name": "installed", "model": {"path": "torch.nn.Linear"}},
        {"name": "ckpt", "model": {"path": "nets.tiny.Tiny"}, "initial_ckpt": "start.pt"},
        {"name": "ok", "model": {"path": "nets.tiny.Tiny"}, "initial_ckpt": "start.pt", "custom_files": ["start.pt"]},
    ]
    text = "defaults: {script: train_pt.py, framework: pytorch}\njobs:\n"
    text += "".join(f"  - {json.dumps(job)}\n" for job in jobs)
    (project / "jobs.yaml").write_text(text)
    code, _, err = cli("generate")
    assert code == 2
    assert [line.split(": ", 2)[1] for line in err] == [
        "jobs[0] (reexport).model.path",
        "jobs[1] (alias).model.path",
        "jobs[2] (installed).model.path",
        "jobs[3] (ckpt).initial_ckpt",
    ]
    assert err[0].endswith(
        "module 'nets' imports or assigns 'Tiny' but defines no class 'Tiny' (generate reads the module that "
        "defines the class, with a class statement at its top level): write model.path: nets.tiny.Tiny"
    )
    assert "imports or assigns 'Alias' but defines no class 'Alias'" in err[1]
    assert "an installed class such as torch.nn.Linear is not shipped" in err[2]
    assert err[3].endswith(
        "initial_ckpt 'start.pt' is relative, so NVFlare looks for it in the server app's custom/ folder, and the "
        "job ships no start.pt there: add it to custom_files (a file below client_scripts/), or give an absolute "
        "path on the server"
    )
    assert not (project / "build").exists()


def _generate_with(project, cli, folder: str, files: dict[str, str], model_path: str) -> tuple[int, list[str]]:
    """``generate`` of one pytorch job whose script is ``<folder>/train.py`` among ``files`` (written
    to ``client_scripts/<folder>/``) and whose model is ``model_path``: (exit code, stderr lines)."""
    (project / "client_scripts" / folder).mkdir()
    for name, text in files.items():
        (project / "client_scripts" / folder / name).write_text(text)
    (project / "jobs.yaml").write_text(
        f"jobs:\n  - {{name: pt, script: {folder}/train.py, framework: pytorch, model: {{path: {model_path}}}}}\n"
    )
    code, _, err = cli("generate")
    return code, err


def test_a_model_module_clashing_with_a_shipped_module_is_refused(project, cli):
    """The script imports its own sibling ``pt_net`` (shipped as app/custom/pt_net.py); the model's
    ``pt_net`` of client_scripts/ would land on the same file."""
    code, err = _generate_with(
        project,
        cli,
        "sub",
        {"train.py": "import torch\nimport pt_net\n", "pt_net.py": "class SimpleNet: pass\n"},
        "pt_net.SimpleNet",
    )
    assert code == 2
    assert err == [
        "jobs.yaml:2:72: jobs[0] (pt).model.path: the model's module file client_scripts/pt_net.py would land on "
        "app/custom/pt_net.py, where the job already ships client_scripts/sub/pt_net.py"
    ]
    assert not (project / "build").exists()


def test_a_model_module_beside_the_script_is_found_and_shipped_once(project, cli):
    """A trial's ``client_scripts/myexp/train.py`` imported its sibling ``reg_net`` (shipped as
    app/custom/reg_net.py); ``model.path: reg_net.RegNet`` was refused (looked for in client_scripts/
    only) and ``myexp.reg_net.RegNet`` shipped the file twice. The server imports ``reg_net`` from
    app/custom/ as the script does: found beside the script, shipped once, its own imports with it."""
    exp = project / "client_scripts/myexp"
    exp.mkdir()
    (exp / "train.py").write_text("import torch\nfrom reg_net import RegNet\n")
    (exp / "reg_net.py").write_text(
        "import torch\nfrom reg_layers import WIDTH\n\n\nclass RegNet(torch.nn.Module):\n    pass\n"
    )
    (exp / "reg_layers.py").write_text("WIDTH = 4\n")
    (project / "jobs.yaml").write_text(
        "jobs:\n  - {name: pt, script: myexp/train.py, framework: pytorch, model: {path: reg_net.RegNet}}\n"
        "  - {name: nope, script: myexp/train.py, framework: pytorch, model: {path: reg_nett.RegNet}}\n"
    )
    code, _, err = cli("generate")
    assert code == 2
    assert err == [
        "jobs.yaml:3:76: jobs[1] (nope).model.path: module 'reg_nett' of 'reg_nett.RegNet' not found: no "
        "client_scripts/reg_nett.py, nor beside the script in client_scripts/myexp/; did you mean 'reg_net.RegNet'? "
        "(the model's module is shipped "
        "from client_scripts/ into app/custom/, where the server imports it; an installed class such as "
        "torch.nn.Linear is not shipped: define your model in a module of your own)"
    ]
    (project / "jobs.yaml").write_text(
        "jobs:\n  - {name: pt, script: myexp/train.py, framework: pytorch, model: {path: reg_net.RegNet}}\n"
    )
    code, _, err = cli("generate")
    assert (code, err) == (0, [])
    custom = project / "build/jobs/pt/app/custom"
    assert sorted(p.relative_to(custom).as_posix() for p in custom.rglob("*.py")) == [
        "myexp/train.py",
        "reg_layers.py",
        "reg_net.py",
    ]
    assert (custom / "reg_net.py").read_bytes() == (exp / "reg_net.py").read_bytes()
    server = json.loads((project / "build/jobs/pt/app/config/config_fed_server.json").read_text())
    persistor = next(c for c in server["components"] if c["path"] == PERSISTOR)
    assert persistor["args"]["model"]["path"] == "reg_net.RegNet"


def test_a_model_module_that_does_not_parse_is_named_where_it_is_with_the_syntax_error(project, cli):
    # a trial's client_scripts/mynet/model.py was shown as client_scripts/model.py, with no line
    broken = "import torch\n\n\nclass Net(torch.nn.Module:\n    pass\n"
    code, err = _generate_with(
        project, cli, "mynet", {"train.py": "import torch\nfrom model import Net\n", "model.py": broken}, "model.Net"
    )
    assert code == 2
    assert err[-1].startswith(
        "jobs.yaml:2:74: jobs[0] (pt).model.path: 'model.Net': client_scripts/mynet/model.py does not parse: "
        "line 4, column "
    )
    assert "SyntaxError" in err[-1]


@pytest.mark.parametrize(
    ("model", "where"),
    [
        ("def build():\n    class Net(torch.nn.Module):\n        pass\n    return Net\n", "function 'build' (line 3)"),
        ("class Outer:\n    class Net(torch.nn.Module):\n        pass\n", "class 'Outer' (line 3)"),
    ],
)
def test_a_model_class_below_the_top_level_is_told_so(project, cli, model, where):
    # trial 44: a class defined in a function was told only "defines no class 'Net'"
    files = {"train.py": "import torch\n", "model.py": "import torch\n\n" + model}
    code, err = _generate_with(project, cli, "mynet", files, "model.Net")
    assert code == 2
    assert err[-1].endswith(
        f"model.path: module 'model' defines class 'Net' inside {where}, not at its top level: PTFileModelPersistor "
        "imports it by module and name, which reaches only a top-level class; move the class statement out"
    ), err


def test_model_args_are_checked_against_an_inherited_init_and_torch_modules(tmp_path):
    # a trial's NoInit(nn.Module) with args {hidden: 8}, and Child(Base) with {hiden: 8}, passed generate
    from generator.ptmodel import args_problems

    module = tmp_path / "fmodel.py"
    module.write_text(
        "import torch.nn as nn\nfrom elsewhere import Remote\n\n\n"
        "class Base(nn.Module):\n    def __init__(self, hidden: int = 8):\n        super().__init__()\n\n\n"
        "class Child(Base):\n    pass\n\n\nclass NoInit(nn.Module):\n    pass\n\n\n"
        "class PosOnly(nn.Module):\n    def __init__(self, hidden=2, /):\n        super().__init__()\n\n\n"
        "class FromElsewhere(Remote):\n    pass\n"
    )
    assert args_problems(module, "fmodel.Child", {"hiden": 3}) == [
        ("hiden", "fmodel.Child.__init__ takes no argument 'hiden'; did you mean 'hidden'?")
    ]
    assert args_problems(module, "fmodel.Child", {"hidden": 3}) == []
    assert args_problems(module, "fmodel.NoInit", {"hidden": 3}) == [
        ("hidden", "fmodel.NoInit takes no argument 'hidden': it runs torch.nn.Module's __init__")
    ]
    assert args_problems(module, "fmodel.PosOnly", {"hidden": 3}) == [
        (
            "hidden",
            "fmodel.PosOnly.__init__ takes 'hidden' positional-only, and PTFileModelPersistor passes "
            "model.args by name",
        )
    ]
    assert args_problems(module, "fmodel.FromElsewhere", {"anything": 1}) == []  # its __init__ is not read


def test_a_brace_in_model_args_is_warned_of_and_a_plain_class_is_no_module(project, cli):
    # NVFlare rewrites every config string: a trial's model.args name: "{run}" would become null
    (project / "client_scripts/nets.py").write_text(
        "import torch\n\n\nclass Net(torch.nn.Module):\n    def __init__(self, name='x'):\n        super().__init__()\n"
        "\n\nclass Plain:\n    pass\n"
    )
    (project / "jobs.yaml").write_text(
        "defaults: {framework: pytorch, script: train_pt.py}\njobs:\n"
        "  - {name: a, model: {path: nets.Net, args: {name: '{run}'}}}\n"
    )
    code, _, err = cli("generate")
    assert code == 0
    assert err == [
        'jobs.yaml:3:52: jobs[0] (a).model.args.name: warning: "{run}" is none of NVFlare\'s variables, which it '
        "fills in config strings when the app starts ({SITE_NAME}, {WORKSPACE}, {JOB_ID}, ...): the value becomes null"
    ]
    (project / "jobs.yaml").write_text(
        "defaults: {framework: pytorch, script: train_pt.py}\njobs:\n  - {name: a, model: {path: nets.Plain}}\n"
    )
    code, _, err = cli("generate")
    assert code == 2 and "'nets.Plain' is no torch.nn.Module" in err[0]


def test_a_number_parameter_is_told_the_number_to_write():
    from generator.ptmodel import _number_problem

    assert _number_problem("int", "8") == "'8' (text): write 8, without quotes"
    assert _number_problem("int", "8.0") == "'8.0' (text): write 8, without quotes"  # not 8.0: an int parameter
    assert _number_problem("float", "1e3") == "'1e3' (text): write 1000.0, without quotes"  # YAML 1.1: text
    assert _number_problem("int", 8.0) == "8.0: write 8"
    assert _number_problem("int", 8.5) == "8.5"
    assert _number_problem("float", 8) is None and _number_problem("int", True) is None
    assert _number_problem(None, "x") is None and _number_problem("int", "x") == "'x' (text)"


def test_lint_says_a_pytorch_job_needs_torch(project, cli, monkeypatch):
    """Without torch, lint names the job's framework key and how to install it (exit 2)."""
    assert cli("generate", "--job", "pt-full-in-process")[0] == 0
    for name in [m for m in sys.modules if m == "torch" or m.startswith(("torch.", "nvflare.app_opt.pt"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ModuleNotFoundError (name 'torch')
    code, _, err = cli("lint")
    assert code == 2
    ours = [line for line in err if "pt-full-in-process" in line]
    text = (project / "jobs.yaml").read_text().splitlines()
    line = next(i for i, t in enumerate(text, 1) if t.strip().startswith("framework: pytorch"))
    assert ours and all(
        entry.startswith(f"jobs.yaml:{line}:16: jobs[12] (pt-full-in-process).framework: ")
        and "needs PyTorch, which is not installed: install the project's pt extra" in entry
        for entry in ours
    ), ours


# -- the judge: PTFileModelPersistor's FL_global_model.pt ----------------------------------------------


def _saved_run(tmp_path: Path, delta: float) -> Path:
    """A fake finished run whose server saved a SimpleNet checkpoint as PTFileModelPersistor does."""
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(ROOT / "client_scripts"))
    try:
        from pt_net import SimpleNet
    finally:
        sys.path.remove(str(ROOT / "client_scripts"))
    state = {k: v + delta for k, v in SimpleNet().state_dict().items()}
    model = tmp_path / PT_FINAL_MODEL
    model.parent.mkdir(parents=True)
    torch.save({"model": state, "train_conf": {"train": {"model": "SimpleNet"}}}, model)
    return tmp_path


def _judge(ws: Path, expect: dict):
    from generator.judge import RoundTracker
    from generator.simulate import JobResult, judge_run

    class Final(RoundTracker):
        model_is_final = True
        saved_round = 2

        def poll(self):
            pass

        def problems(self):
            return []

    info = ManifestEntry("2.9", 2, 2, "in_process", "train_pt.py", expect=expect, framework="pytorch")
    result = JobResult(name="pt", rounds=2)
    judge_run(result, ws, Final(ws, 2), code=0, started_epoch=time.time() - 60, info=info)
    return result


def test_judge_reads_the_pt_model_and_checks_its_mean(tmp_path):
    result = _judge(_saved_run(tmp_path, 2.0), {"model_mean": 4})
    assert result.final_model == {
        "fc1.weight": [[3.0, 3.0], [3.0, 3.0]],
        "fc1.bias": [4.0, 4.0],
        "fc2.weight": [[5.0, 5.0]],
        "fc2.bias": [6.0],
    }
    assert result.model_mean == 4.0
    assert result.problems == []

    from generator.reporter import model_cell

    assert model_cell(result) == "4 tensors, 9 values, mean 4"


def test_judge_fails_a_model_whose_mean_is_not_expected(tmp_path):
    result = _judge(_saved_run(tmp_path, 1.0), {"model_mean": 4})
    assert [p.message for p in result.problems] == ["the final model's mean is 3, expected 4 (expect.model_mean)"]


def test_expect_tolerance_lets_a_trained_model_pass_near_the_numbers_written(tmp_path):
    """A trial's regression converged to weights 1.00037, -2.0002, ...: ``expect`` compared exactly and
    could not check a real training run. ``tolerance`` is absolute, for the mean and every value."""
    from generator.simulate import final_model_differences

    ws = _saved_run(tmp_path, 1.0)  # mean 3
    assert _judge(ws, {"model_mean": 3.0004, "tolerance": 0.001}).problems == []
    assert [p.message for p in _judge(ws, {"model_mean": 3.0004, "tolerance": 0.0001}).problems] == [
        "the final model's mean is 3, expected 3.0004 (expect.model_mean, tolerance 0.0001: off by 0.0004)"
    ]
    # numbers %g prints alike are shown in full (a trial: "-0.123827, expected -0.123827")
    assert [p.message for p in _judge(ws, {"model_mean": 3.000001, "tolerance": 1e-7}).problems] == [
        "the final model's mean is 3.0, expected 3.000001 (expect.model_mean, tolerance 1e-07: off by 1e-06)"
    ]
    near = {
        name: [[v + 0.0005 for v in row] if isinstance(row, list) else row + 0.0005 for row in value]
        for name, value in _expected(1.0).items()
    }
    assert _judge(ws, {"final_model": near, "tolerance": 0.001}).problems == []
    assert len(_judge(ws, {"final_model": near}).problems) == 4  # exact: every parameter differs
    trained = [[1.0003690719604492, -2.000200033187866]]
    assert final_model_differences(trained, [[1.0, -2.0]], 0.001) == []
    assert final_model_differences(trained, [[1.0, -2.0]], 0.0001) == [
        "the final model is [[1.0003690719604492, -2.000200033187866]], expected [[1.0, -2.0]] "
        "(expect.final_model, tolerance 0.0001: off by up to 0.000369)"
    ]


def test_judge_checks_every_final_weight_against_expect_final_model(tmp_path):
    ws = _saved_run(tmp_path, 2.0)
    assert _judge(ws, {"final_model": _expected(2.0)}).problems == []
    wrong = {**_expected(2.0), "fc2.bias": [7.0], "fc3.weight": [1.0]}
    del wrong["fc1.bias"]
    assert [p.message for p in _judge(ws, {"final_model": wrong}).problems] == [
        "the final model has no parameter 'fc3.weight' (expect.final_model)",
        "the final model has parameters that are not expected: fc1.bias (expect.final_model)",
        "the final model's fc2.bias is [6.0], expected [7.0] (expect.final_model)",
    ]


def test_final_model_differences_of_a_numpy_model():
    from generator.simulate import final_model_differences

    model = [[6.0, 7.0], [8.0, 9.0]]
    assert final_model_differences(model, [[6, 7], [8, 9]]) == []
    assert final_model_differences(model, [[6, 7, 8, 9]]) == [
        "the final model is [[6.0, 7.0], [8.0, 9.0]], expected [[6, 7, 8, 9]] (expect.final_model)"
    ]
    # float32 values (the example's dtype) equal the decimal written in jobs.yaml, and nothing near it
    assert final_model_differences([[0.10000000149011612, 2.5]], [[0.1, 2.5]]) == []
    assert final_model_differences([[0.10000000149011612, 2.5]], [[0.1000001, 2.5]]) != []
    assert final_model_differences([[1.0, 2.0]], [[1.0, 2.0, 3.0]]) != []
    assert final_model_differences([[1.0, 2.0]], [1.0, 2.0]) != []


def test_a_numpy_job_is_judged_by_server_npy(tmp_path):
    """No PyTorch model is read for a numpy job: its model file is NPModelPersistor's."""
    assert PYTORCH.model_file != "server/simulate_job/models/server.npy"
    (tmp_path / PT_FINAL_MODEL).parent.mkdir(parents=True)
    (tmp_path / PT_FINAL_MODEL).write_bytes(b"not read")
    from generator.judge import RoundTracker
    from generator.simulate import JobResult, judge_run

    result = JobResult(name="np", rounds=2)
    judge_run(result, tmp_path, RoundTracker(tmp_path, 2), code=0, started_epoch=time.time() - 60)
    assert any("no final model saved at" in p.message and p.message.endswith("server.npy") for p in result.problems)


# -- the simulator -------------------------------------------------------------------------------------


def _expected(delta: float) -> dict:
    """SimpleNet(2, 2)'s state_dict after ``delta`` was added to every value (parameter k starts at k)."""
    return {
        "fc1.weight": [[1 + delta] * 2] * 2,
        "fc1.bias": [2 + delta] * 2,
        "fc2.weight": [[3 + delta] * 2],
        "fc2.bias": [4 + delta],
    }


#: name -> (jobs.yaml options, what the final model adds to the starting one). 2 rounds each.
SIMULATED = {
    "pt-full-in": ({}, 2.0),
    "pt-diff-sub": (
        {"script_args": "--params-type DIFF", "params_transfer_type": "DIFF", "launch_external_process": True},
        2.0,
    ),
    # site-1 adds 1, site-2 adds 3 (FedAvg: +2 a round); multi-app, so the model ships into app_server;
    # then cross-site evaluation through the PyTorch locator
    "pt-sites-xsite": (
        {
            "cross_site_eval": True,
            "sites": {"site-1": {"script_args": "--increment 1"}, "site-2": {"script_args": "--increment 3"}},
        },
        4.0,
    ),
}


@pytest.fixture(scope="module")
def pt_run(tmp_path_factory):
    pytest.importorskip("torch")
    project = tmp_path_factory.mktemp("pytorch")
    text = "defaults:\n  num_rounds: 2\n  task_check_period: 0.05\n  server: {task_request_interval: 0.1}\njobs:\n"
    for name, (options, delta) in SIMULATED.items():
        text += _job(name, expect={"model_mean": 2 + delta, "final_model": _expected(delta)}, **options) + "\n"
    _, result, results = simulate_project(project, text)
    return project, result, results


@pytest.mark.simulator
@pytest.mark.parametrize("name", sorted(SIMULATED))
def test_final_pt_model_is_exact(pt_run, name):
    project, result, results = pt_run
    assert results[name]["ok"], (results[name], result.stdout + result.stderr)
    assert results[name]["final_model"] == _expected(SIMULATED[name][1])
    assert results[name]["model_mean"] == 2 + SIMULATED[name][1]
    assert (project / "build/workspaces" / name / PT_FINAL_MODEL).is_file()
    row = next(line for line in result.stdout.splitlines() if line.startswith(name + " "))
    assert f"4 tensors, 9 values, mean {2 + SIMULATED[name][1]:g}" in row


@pytest.mark.simulator
def test_cross_site_evaluates_pt_models(pt_run):
    """SRV_FL_global_model.pt (PTFileModelLocator names the persistor's file): the final model (mean
    2 + 4); each site's local model: what it trained in round 2 from the model after round 1 (mean 4):
    site-1 +1 (5), site-2 +3 (7)."""
    _, _, results = pt_run
    cells = {"SRV_FL_global_model.pt": {"mean": 6.0}, "site-1": {"mean": 5.0}, "site-2": {"mean": 7.0}}
    assert results["pt-sites-xsite"]["cross_site"] == {"site-1": cells, "site-2": cells}


def test_model_args_are_checked_against_the_init_the_class_defines(tmp_path):
    from generator.ptmodel import args_problems

    module = tmp_path / "nets.py"
    module.write_text(
        "import torch\n\n\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self, width, /, depth, scale=1.0, *, act, bias=True):\n"
        "        super().__init__()\n\n\n"
        "class Open(torch.nn.Module):\n"
        "    def __init__(self, **kwargs):\n"
        "        super().__init__()\n\n\n"
        "class Inherits(Net):\n"
        "    pass\n"
    )
    assert args_problems(module, "nets.Net", {"depth": 2, "act": "relu", "scale": 2}) == [
        (
            None,
            "nets.Net.__init__ needs 'width' positional-only, and PTFileModelPersistor passes model.args by "
            "name: give it a default or make it a named parameter",
        )
    ]
    assert args_problems(module, "nets.Net", {"width": 1, "dept": 2}) == [
        (
            "width",
            "nets.Net.__init__ takes 'width' positional-only, and PTFileModelPersistor passes model.args by name",
        ),
        ("dept", "nets.Net.__init__ takes no argument 'dept'; did you mean 'depth'?"),
        (None, "nets.Net.__init__ needs 'depth', 'act': give it in model.args"),
        (
            None,
            "nets.Net.__init__ needs 'width' positional-only, and PTFileModelPersistor passes model.args by "
            "name: give it a default or make it a named parameter",
        ),
    ]
    assert args_problems(module, "nets.Open", {"anything": 1}) == []  # **kwargs takes every name
    assert args_problems(module, "nets.Inherits", {"dept": 1, "depth": 2, "act": 0}) == [  # Net's, inherited
        ("dept", "nets.Inherits.__init__ takes no argument 'dept'; did you mean 'depth'?"),
        (
            None,
            "nets.Inherits.__init__ needs 'width' positional-only, and PTFileModelPersistor passes model.args "
            "by name: give it a default or make it a named parameter",
        ),
    ]
