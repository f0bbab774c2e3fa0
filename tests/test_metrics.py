"""Reading the stores back and plotting them, without the simulator.

TensorBoard: event files written by NVFlare's own ``TensorBoardEventWriter`` (what
``TBAnalyticsReceiver`` uses). W&B: offline runs written by ``wandb`` itself, read by our
``.wandb`` reader and, as an independent check, by wandb's own reader (``wandb leet inspect
--json``). The plot: the PNG is a valid image and the lines drawn are the points given.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from generator.errors import SimulationError
from generator.metrics import by_site, count_points, read_tensorboard, read_wandb, read_wandb_run
from generator.plot import matplotlib_dir, plot_metrics

WANDB = str(Path(sys.executable).parent / "wandb")


def write_wandb_run(folder: Path, name: str, rows: list[tuple[int, dict]]) -> Path:
    """Write an offline W&B run with ``wandb`` itself (in a child process); return its .wandb file."""
    (folder / f"{name}.json").write_text(json.dumps(rows))
    script = (
        "import json, sys, wandb\n"
        "rows = json.load(open(sys.argv[2]))\n"
        "run = wandb.init(project='p', name=sys.argv[1], mode='offline', dir='.')\n"
        "for step, row in rows:\n"
        "    wandb.log(row, step=step)\n"
        "run.finish()\n"
    )
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    before = set(folder.glob("wandb/offline-run-*/*.wandb"))
    subprocess.run([sys.executable, "-c", script, name, f"{name}.json"], cwd=folder, env=env, check=True, timeout=120)
    (log,) = set(folder.glob("wandb/offline-run-*/*.wandb")) - before
    return log


@pytest.fixture(scope="module")
def wandb_runs(tmp_path_factory):
    """Two sites' offline runs: site-1 with 5,000 rows (several 32 KiB blocks), site-2 with 3."""
    folder = tmp_path_factory.mktemp("wandb")
    big = [(s, {"global_step": s, **({"model_mean": s / 2} if s % 125 == 124 else {})}) for s in range(5000)]
    log1 = write_wandb_run(folder, "site-1-1795980188-run", big)
    log2 = write_wandb_run(folder, "site-2-1795980188-run", [(0, {"a": 1.5}), (1, {"a": 2}), (7, {"a": -1})])
    return folder / "wandb", log1, log2, big


@pytest.mark.slow  # wandb_runs starts W&B's own service to write real offline runs
def test_wandb_reader_gets_every_point_of_every_site(wandb_runs):
    folder, _, _, big = wandb_runs
    series = read_wandb(folder)
    assert sorted(series) == ["site-1", "site-2"]
    assert series["site-1"]["global_step"] == [(s, float(s)) for s in range(5000)]
    assert series["site-1"]["model_mean"] == [(s, s / 2) for s, row in big if "model_mean" in row]
    assert series["site-2"] == {"a": [(0, 1.5), (1, 2.0), (7, -1.0)]}
    assert count_points(series) == {"site-1": {"global_step": 5000, "model_mean": 40}, "site-2": {"a": 3}}


@pytest.mark.slow  # wandb_runs starts W&B's own service to write real offline runs
def test_wandb_reader_agrees_with_wandbs_own_reader(wandb_runs):
    _, log1, _, _ = wandb_runs
    proc = subprocess.run([WANDB, "leet", "inspect", "--json", str(log1)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    theirs = {}
    for line in proc.stdout.splitlines():
        record = json.loads(line)
        if record["type"] == "history":
            item = record["history"]["item"]
            for key, value in item.items():
                if not key.startswith("_"):
                    theirs.setdefault(key, []).append((int(item["_step"]), float(value)))
    site, ours = read_wandb_run(log1)
    assert site == "site-1"
    assert ours == theirs


@pytest.mark.slow  # wandb_runs starts W&B's own service to write real offline runs
def test_a_corrupt_wandb_log_is_an_error_and_a_cut_one_loses_only_its_tail(wandb_runs, tmp_path):
    _, log1, _, _ = wandb_runs
    data = bytearray(log1.read_bytes())
    cut = tmp_path / "cut.wandb"
    cut.write_bytes(bytes(data[: len(data) // 2]))
    _, points = read_wandb_run(cut)
    assert 0 < len(points["global_step"]) < 5000
    assert points["global_step"] == [(s, float(s)) for s in range(len(points["global_step"]))]
    data[len(data) // 3] ^= 0xFF
    bad = tmp_path / "bad.wandb"
    bad.write_bytes(bytes(data))
    with pytest.raises(SimulationError, match="fails its checksum"):
        read_wandb_run(bad)
    (tmp_path / "not.wandb").write_bytes(b"hello world")
    with pytest.raises(SimulationError, match="not a W&B transaction log"):
        read_wandb_run(tmp_path / "not.wandb")


def test_runs_named_after_a_client_are_that_clients_points():
    """MLflow and W&B name a site's run ``<site>-<job id>-<job>-<run name>``; ``site-<N>`` is
    recognised by the readers, any other client name by the job's sites (the longest first)."""
    series = {
        "hospital-a-2-f00-job-run": {"x": [(1, 2.0)]},
        "hospital-a-f00-job-run": {"x": [(2, 1.0)], "y": [(0, 0.5)]},
        "hospital-a": {"x": [(0, 3.0)]},
        "site-1": {"x": [(0, 1.0)]},
        "stranger-run": {"x": [(0, 1.0)]},
    }
    assert by_site(series, ["hospital-a", "hospital-a-2"]) == {
        "hospital-a": {"x": [(0, 3.0), (2, 1.0)], "y": [(0, 0.5)]},
        "hospital-a-2": {"x": [(1, 2.0)]},
        "site-1": {"x": [(0, 1.0)]},
        "stranger-run": {"x": [(0, 1.0)]},
    }


def test_tensorboard_reader_gets_add_scalar_and_add_scalars_series(tmp_path):
    from nvflare.app_opt.tracking.tb.tb_event_writer import TensorBoardEventWriter

    for site in ("site-1", "site-2"):
        writer = TensorBoardEventWriter(log_dir=str(tmp_path / site))
        for step in [3, 0, 2, 1]:  # out of order, as the receiver gets them
            writer.add_scalar("global_step", step, step)
        writer.add_scalars("model", {"mean": 6.0, "max": 10.0}, 3)
        writer.flush()
        writer.close()
    series = read_tensorboard(tmp_path)
    assert series["site-1"] == {
        "global_step": [(0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0)],
        "model_max": [(3, 10.0)],
        "model_mean": [(3, 6.0)],
    }
    assert series["site-2"] == series["site-1"]
    assert read_tensorboard(tmp_path / "missing") == {}


def test_plot_draws_every_point_per_site_and_key_into_a_valid_png(tmp_path):
    from PIL import Image

    series = {
        "site-1": {"global_step": [(s, float(s)) for s in range(1875)], "model_mean": [(124, 6.0), (249, 7.0)]},
        "site-2": {"global_step": [(s, float(s)) for s in range(1875)]},
    }
    path = tmp_path / "reports" / "job.png"
    drawn = plot_metrics("job", series, path)

    assert drawn == {
        "global_step": {
            "site-1": (list(range(1875)), [float(s) for s in range(1875)]),
            "site-2": (list(range(1875)), [float(s) for s in range(1875)]),
        },
        "model_mean": {"site-1": ([124, 249], [6.0, 7.0])},
    }
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.verify()
    with Image.open(path) as image:
        assert image.size[0] == 800 and image.size[1] > 400
        assert image.text["Title"] == "job"
        assert json.loads(image.text["Series"]) == {
            "global_step": {"site-1": 1875, "site-2": 1875},
            "model_mean": {"site-1": 2},
        }
        assert len(image.convert("L").getcolors(maxcolors=100000)) > 2  # not a blank picture


def test_plot_refuses_an_empty_series(tmp_path):
    with pytest.raises(ValueError, match="no metric point"):
        plot_metrics("job", {"site-1": {}}, tmp_path / "x.png")


def test_matplotlib_dir_sets_mplconfigdir_for_the_block_only_unless_the_user_set_it(tmp_path, monkeypatch):
    monkeypatch.delenv("MPLCONFIGDIR", raising=False)
    with matplotlib_dir(tmp_path / "ws" / "_mpl"):
        assert os.environ["MPLCONFIGDIR"] == str(tmp_path / "ws" / "_mpl")
    assert "MPLCONFIGDIR" not in os.environ
    monkeypatch.setenv("MPLCONFIGDIR", "/mine")
    with matplotlib_dir(tmp_path / "ws" / "_mpl"):
        assert os.environ["MPLCONFIGDIR"] == "/mine"
    assert os.environ["MPLCONFIGDIR"] == "/mine"


@pytest.mark.slow  # a fresh interpreter: matplotlib reads MPLCONFIGDIR once, at its first import
def test_a_plot_writes_nothing_to_home(tmp_path):
    home, ws = tmp_path / "home", tmp_path / "ws"
    home.mkdir()
    code = (
        "import sys; from pathlib import Path\n"
        "from generator.plot import matplotlib_dir, plot_metrics\n"
        "with matplotlib_dir(Path(sys.argv[1]) / '_mpl'):\n"
        "    plot_metrics('job', {'site-1': {'loss': [(0, 1.0), (1, 0.5)]}}, Path(sys.argv[1]) / 'job.png')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MPLCONFIGDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")}
    env |= {"HOME": str(home), "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code, str(ws)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (ws / "job.png").is_file()
    assert list(home.iterdir()) == []  # no ~/.config/matplotlib, no ~/.cache/matplotlib
    assert [p.name for p in (ws / "_mpl").iterdir() if p.name.startswith("fontlist")]  # the font list is here


def test_generate_imports_no_tracker_and_no_nvflare(tmp_path):
    """The generate path stays fast: nvflare, mlflow, tensorboard, wandb, matplotlib and torch are never imported."""
    code = (
        "import sys\n"
        "from generator.cli import main\n"
        f"assert main(['generate', '--jobs', {str(ROOT / 'jobs.yaml')!r}, '--out', {str(tmp_path / 'out')!r}]) == 0\n"
        "heavy = ('nvflare', 'mlflow', 'tensorboard', 'wandb', 'matplotlib', 'torch')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
