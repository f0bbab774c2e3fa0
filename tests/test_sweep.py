"""Sweep comparison: the jobs expanded from one matrix job compared after ``simulate``.

Fast tests build :class:`generator.simulate.JobResult` lists and manifest entries by hand and check
the grouping, the rows, the plot data, the PNG's text chunks, the printed table and the results
record. The simulator test runs a 2x1 sweep (1 and 2 rounds, TensorBoard receiver) and checks the
printed comparison, ``results.json`` and the sweep plot.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT, run_main

from generator.layout import ManifestEntry
from generator.outputs import REPORTS_MANIFEST, check_reports
from generator.simulate import JobResult, compare_sweeps, result_record
from generator.sweep import (
    compare,
    groups,
    last_values,
    missing_warning,
    model_mean,
    plot_names,
    site_average,
    table,
)

MATRIX = "np-{num_rounds}"


def entry(name: str, matrix: dict | None, receiver: str | None = "tensorboard") -> ManifestEntry:
    return ManifestEntry(
        nvflare_version="2.9",
        num_clients=2,
        num_rounds=1,
        execution_mode="in_process",
        script="train_full.py",
        receiver=receiver,
        matrix=matrix,
    )


def result(name: str, series: dict, final: list | None, status: str = "ok", wall: float = 1.5) -> JobResult:
    r = JobResult(name=name, status=status, wall_seconds=wall, final_model=final, ok=status == "ok")
    r.series, r.metric_last, r.model_mean = series, last_values(series), model_mean(final)
    return r


SERIES_1 = {
    "site-1": {"loss": [(0, 4.0), (1, 2.0)], "acc": [(1, 0.5)]},
    "site-2": {"loss": [(0, 6.0), (1, 4.0)], "acc": [(1, 0.7)]},
}
SERIES_2 = {"site-1": {"loss": [(0, 5.0), (2, 1.0), (1, 3.0)]}, "site-2": {"loss": [(0, 5.0), (1, 1.0)]}}


def fabricated() -> tuple[list[JobResult], dict]:
    manifest = {
        "np-1": entry("np-1", {"job": MATRIX, "values": {"num_rounds": 1}}),
        "solo": entry("solo", None),
        "np-2": entry("np-2", {"job": MATRIX, "values": {"num_rounds": 2}}),
        "lone-a": entry("lone-a", {"job": "lone-{x}", "values": {"x": "a"}}),
    }
    results = [
        result("np-1", SERIES_1, [[1.0, 2.0], [3.0, 4.0]]),
        result("solo", {}, [[0.0]]),
        result("np-2", SERIES_2, None, status="FAILED", wall=2.25),
        result("lone-a", {}, [[1.0]]),
    ]
    return results, manifest


def test_groups_keep_file_order_and_only_matrices_with_two_jobs():
    _, manifest = fabricated()
    assert groups(list(manifest), manifest) == {MATRIX: ["np-1", "np-2"]}
    assert groups(["np-1", "solo"], manifest) == {}
    assert plot_names(list(manifest), manifest) == [f"{MATRIX}-sweep"]
    no_receiver = {n: entry(n, e.matrix, receiver=None) for n, e in manifest.items()}
    assert plot_names(list(manifest), no_receiver) == []


def test_last_values_take_the_highest_step_and_average_over_sites():
    assert last_values(SERIES_1) == {"acc": pytest.approx(0.6), "loss": 3.0}
    assert last_values(SERIES_2) == {"loss": 1.0}  # site-1's step 2 (listed before step 1), site-2's step 1
    assert last_values({}) == {}


def test_site_average_per_step_over_the_sites_that_have_it():
    assert site_average(SERIES_2, "loss") == ([0, 1, 2], [5.0, 2.0, 1.0])
    assert site_average(SERIES_2, "acc") == ([], [])


def test_model_mean():
    assert model_mean([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]) == 5.0
    assert model_mean(None) is None
    assert model_mean([]) is None


def test_compare_rows_metric_and_curves():
    results, manifest = fabricated()
    [sweep] = compare(results, manifest)
    assert sweep.name == MATRIX and sweep.plot_name == "np-{num_rounds}-sweep"
    assert sweep.keys == ["num_rounds"] and sweep.metric_keys == ["acc", "loss"]
    assert sweep.compare == "acc"  # the first key stored, sorted
    assert [(r.job, r.values, r.status, r.wall_seconds, r.model_mean) for r in sweep.rows] == [
        ("np-1", {"num_rounds": 1}, "ok", 1.5, 2.5),
        ("np-2", {"num_rounds": 2}, "FAILED", 2.25, None),
    ]
    assert sweep.rows[1].metrics == {"loss": 1.0}
    assert sweep.curves == {"np-1": ([1], [pytest.approx(0.6)])}  # np-2 stored no "acc"


def test_compare_key_of_the_matrix_job_wins():
    results, manifest = fabricated()
    for name in ("np-1", "np-2"):
        manifest[name].matrix["compare"] = "loss"
    [sweep] = compare(results, manifest)
    assert sweep.compare == "loss"
    assert sweep.curves == {"np-1": ([0, 1], [5.0, 3.0]), "np-2": ([0, 1, 2], [5.0, 2.0, 1.0])}


def test_without_metrics_the_rows_stay_and_there_is_no_metric_nor_plot(tmp_path):
    results, manifest = fabricated()
    for r in results:
        r.series, r.metric_last = {}, {}
    [sweep] = compare_sweeps(results, manifest, tmp_path / "reports")
    assert sweep.compare is None and sweep.metric_keys == [] and sweep.report is None
    assert len(sweep.rows) == 2
    assert not (tmp_path / "reports").exists()
    assert table(sweep) == [
        "sweep np-{num_rounds}: 2 combinations",
        "num_rounds  job   status  wall s  model mean",
        "1           np-1  ok      1.5     2.5",
        "2           np-2  FAILED  2.2     -",
    ]


def test_table_has_a_column_per_matrix_key_and_per_metric(tmp_path):
    results, manifest = fabricated()
    [sweep] = compare(results, manifest)
    sweep.report = "build/reports/np-{num_rounds}-sweep.png"
    assert table(sweep) == [
        "sweep np-{num_rounds}: 2 combinations; acc of 1 compared in build/reports/np-{num_rounds}-sweep.png "
        "(1 stored no acc)",
        "num_rounds  job   status  wall s  model mean  last acc  last loss",
        "1           np-1  ok      1.5     2.5         0.6       3",
        "2           np-2  FAILED  2.2     -           -         1",
    ]


TRIAL = "tr-{receiver.type}-r{num_rounds}"


def trial_sweep() -> tuple[list[JobResult], dict]:
    """A trial's sweep: ``train_metrics_wandb.py`` into W&B and TensorBoard receivers, 1 and 2 rounds,
    ``compare: model_mean``; the TensorBoard jobs stored the WandBWriter's ``model_mean`` as
    ``metrics_model_mean`` (NVFlare's TensorBoard receiver prefixes it)."""
    manifest, results = {}, []
    for receiver in ("wandb", "tensorboard"):
        for rounds in (1, 2):
            name = f"tr-{receiver}-r{rounds}"
            values = {"receiver.type": receiver, "num_rounds": rounds}
            manifest[name] = entry(name, {"job": TRIAL, "values": values, "compare": "model_mean"}, receiver)
            key = "model_mean" if receiver == "wandb" else "metrics_model_mean"
            points = {key: [(i, 5.0 + i) for i in range(3 * rounds)], "global_step": [(0, 0.0)]}
            results.append(result(name, {"site-1": points, "site-2": points}, [[5.0 + 3 * rounds]]))
    return results, manifest


def test_combinations_that_stored_no_compare_metric_are_named_with_the_key_they_stored(tmp_path):
    """A trial's sweep line said "4 combinations; model_mean compared in ..." over a plot of the 2
    W&B jobs: the TensorBoard jobs stored ``metrics_model_mean``. The line, a warning on stderr and
    the plot say which combinations are left out and which key they stored."""
    import io

    from PIL import Image

    from generator.reporter import Reporter

    results, manifest = trial_sweep()
    reports = tmp_path / "reports"
    [sweep] = compare_sweeps(results, manifest, reports)
    assert list(sweep.curves) == ["tr-wandb-r1", "tr-wandb-r2"]
    assert sweep.missing == {"tr-tensorboard-r1": ["metrics_model_mean"], "tr-tensorboard-r2": ["metrics_model_mean"]}
    png = reports / f"{TRIAL}-sweep.png"
    assert (
        table(sweep)[0] == f"sweep {TRIAL}: 4 combinations; model_mean of 2 compared in {png} (2 stored no model_mean)"
    )
    assert missing_warning(sweep) == [
        f"warning: sweep {TRIAL}: 2 of 4 combinations stored no model_mean and are not in the plot: "
        "tr-tensorboard-r1, tr-tensorboard-r2 (tr-tensorboard-r1 stored metrics_model_mean; "
        "tr-tensorboard-r2 stored metrics_model_mean); NVFlare's TensorBoard receiver stores a WandBWriter's "
        "or MLflowWriter's key k as metrics_k"
    ]
    with Image.open(png) as image:
        text = dict(image.text)
    assert json.loads(text["Series"]) == {"model_mean": {"tr-wandb-r1": 3, "tr-wandb-r2": 6}}
    assert json.loads(text["Missing"]) == ["tr-tensorboard-r1", "tr-tensorboard-r2"]

    out, err = io.StringIO(), io.StringIO()
    Reporter(out, err).sweeps_compared([sweep])
    assert out.getvalue().splitlines()[:2] == ["", table(sweep)[0]]
    assert "warning" not in out.getvalue()
    assert err.getvalue() == missing_warning(sweep)[0] + "\n"


def test_when_no_combination_stored_the_compare_metric_there_is_no_plot_and_it_says_so(tmp_path):
    results, manifest = trial_sweep()
    results, manifest = results[2:], {n: manifest[n] for n in ("tr-tensorboard-r1", "tr-tensorboard-r2")}
    reports = tmp_path / "reports"
    [sweep] = compare_sweeps(results, manifest, reports)
    assert sweep.curves == {} and sweep.report is None and not reports.exists()
    assert table(sweep)[0] == f"sweep {TRIAL}: 2 combinations; none stored model_mean: no plot"
    assert missing_warning(sweep) == [
        f"warning: sweep {TRIAL}: none of the 2 combinations stored model_mean, so there is no plot "
        "(tr-tensorboard-r1 stored metrics_model_mean; tr-tensorboard-r2 stored metrics_model_mean); "
        "the combinations stored: global_step, metrics_model_mean; NVFlare's TensorBoard receiver stores "
        "a WandBWriter's or MLflowWriter's key k as metrics_k"
    ]


def test_a_combination_without_a_similar_key_is_named_alone_and_other_receivers_get_no_tensorboard_note():
    results, manifest = fabricated()  # np-2 (FAILED) stored loss only; acc is compared by default
    [sweep] = compare(results, manifest)
    assert sweep.missing == {"np-2": []}
    assert missing_warning(sweep) == [
        "warning: sweep np-{num_rounds}: 1 of 2 combinations stored no acc and have no curve: np-2"
    ]
    for r in results:
        r.series = {}
    [sweep] = compare(results, manifest)
    assert sweep.compare is None and sweep.missing == {} and missing_warning(sweep) == []


def test_sweep_plot_text_chunks_and_reports_manifest(tmp_path):
    from PIL import Image

    results, manifest = fabricated()
    for name in ("np-1", "np-2"):
        manifest[name].matrix["compare"] = "loss"
    reports = tmp_path / "reports"
    [sweep] = compare_sweeps(results, manifest, reports)
    png = reports / "np-{num_rounds}-sweep.png"
    assert sweep.report == str(png)
    with Image.open(png) as image:
        text = dict(image.text)
    assert text["Title"] == "np-{num_rounds}-sweep" and text["Metric"] == "loss"
    assert json.loads(text["Series"]) == {"loss": {"np-1": 2, "np-2": 3}}
    assert "Missing" not in text  # every combination stored loss
    listed = json.loads((reports / REPORTS_MANIFEST).read_text())["files"]
    assert list(listed) == [png.name]
    assert check_reports(reports, [sweep.plot_name]) == []  # our plot: a later run may replace it
    png.write_bytes(b"user's picture")
    [problem] = check_reports(reports, [sweep.plot_name])
    assert "changed since nvflare-jobgen wrote it" in problem.message


def test_poc_and_submit_compare_sweeps_as_simulate_does_into_their_downloads(tmp_path):
    """A trial's sweep through ``submit`` printed no comparison: ``poc`` and ``submit`` end with the
    same table and plot as ``simulate``, the plot in their ``--downloads``, refused over a user's file."""
    from generator import poc
    from generator.errors import OutputError
    from generator.layout import POC_RESULTS_MARKER

    results, manifest = fabricated()
    seen = []

    class Events(poc.PocEvents):
        def sweeps_compared(self, sweeps):
            seen.append(sweeps)

    downloads = tmp_path / "dl"
    downloads.mkdir()
    (downloads / POC_RESULTS_MARKER).touch()
    poc._conclude(results, tmp_path / "submit-results.json", Events(), [], "submit", manifest, downloads)
    [[sweep]] = seen
    assert [row.job for row in sweep.rows] == ["np-1", "np-2"]
    assert sweep.report == str(downloads / "np-{num_rounds}-sweep.png") and Path(sweep.report).is_file()
    poc._prepare_outputs(downloads, None, {}, [sweep.plot_name])  # our plot: the next run may replace it
    Path(sweep.report).write_bytes(b"user's picture")
    with pytest.raises(OutputError) as e:
        poc._prepare_outputs(downloads, None, {}, [sweep.plot_name])
    assert "choose another --downloads" in e.value.problems[0].message


def test_results_record_carries_the_comparison_but_not_the_series():
    results, manifest = fabricated()
    results[0].matrix = manifest["np-1"].matrix
    record = result_record(results[0])
    assert "series" not in record
    assert record["matrix"] == {"job": MATRIX, "values": {"num_rounds": 1}}
    assert record["model_mean"] == 2.5 and record["metric_last"] == {"acc": pytest.approx(0.6), "loss": 3.0}


SWEEP_YAML = """\
defaults:
  task_check_period: 0.05
  server: {task_request_interval: 0.1}
jobs:
  - name: tb-r{num_rounds}
    script: train_metrics_tensorboard.py
    script_args: --epoch_seconds 0.01
    receiver: {type: tensorboard}
    compare: model_mean
    matrix:
      num_rounds: [1, 2]
"""


@pytest.mark.simulator
def test_simulated_sweep_prints_and_stores_the_comparison(project):
    from PIL import Image

    (project / "jobs.yaml").write_text(SWEEP_YAML)
    generated = run_main(project, "generate")
    assert generated.returncode == 0, generated.stderr
    run = run_main(project, "simulate")
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout.splitlines()
    start = out.index(
        "sweep tb-r{num_rounds}: 2 combinations; model_mean compared in build/reports/tb-r{num_rounds}-sweep.png"
    )
    header, row1, row2 = out[start + 1 : start + 4]
    assert header.split() == ["num_rounds", "job", "status", "wall", "s", "model", "mean"] + [
        "last", "global_step", "last", "model_max", "last", "model_mean"
    ]  # fmt: skip
    # 3 epochs add 1 each per round to [[1..9]] (mean 5); global_step ends at 375 * rounds - 1
    assert row1.split()[:3] == ["1", "tb-r1", "ok"] and row1.split()[4:] == ["8", "374", "12", "8"]
    assert row2.split()[:3] == ["2", "tb-r2", "ok"] and row2.split()[4:] == ["11", "749", "15", "11"]
    records = json.loads((project / "build/results.json").read_text())
    assert [(r["matrix"]["values"], r["model_mean"], r["metric_last"]["model_mean"]) for r in records] == [
        ({"num_rounds": 1}, 8.0, 8.0),
        ({"num_rounds": 2}, 11.0, 11.0),
    ]
    with Image.open(project / "build/reports/tb-r{num_rounds}-sweep.png") as image:
        text = dict(image.text)
    assert text["Title"] == "tb-r{num_rounds}-sweep" and text["Metric"] == "model_mean"
    assert json.loads(text["Series"]) == {"model_mean": {"tb-r1": 3, "tb-r2": 6}}  # one point per epoch
    listed = json.loads((project / "build/reports" / REPORTS_MANIFEST).read_text())["files"]
    assert sorted(listed) == ["tb-r1.png", "tb-r2.png", "tb-r{num_rounds}-sweep.png"]
    assert Path(project / "build/reports/tb-r1.png").is_file()


def test_values_holding_a_mapping_or_list_get_no_column():
    results, manifest = fabricated()
    manifest["np-1"].matrix["values"]["expect"] = {"metric_points_per_site": {"loss": 2}}
    manifest["np-2"].matrix["values"]["tags"] = ["a"]
    [sweep] = compare(results, manifest)
    assert sweep.keys == ["num_rounds"]
    assert sweep.rows[0].values["expect"] == {"metric_points_per_site": {"loss": 2}}


GRID = "np-{params_transfer_type}-external-{launch_external_process}-r{num_rounds}"
METRICS = "np-metrics-{receiver.type}-r{num_rounds}"


def test_the_example_sweep_generates_two_sweeps_of_8_and_4_jobs(project):
    from generator.write import read_entries

    (project / "sweep.yaml").write_text((ROOT / "examples/sweep.yaml").read_text())
    generated = run_main(project, "generate", "--jobs", "sweep.yaml", "--out", "build/sweep/jobs")
    assert generated.returncode == 0, generated.stderr
    manifest = read_entries(project / "build/sweep/jobs")
    found = groups(list(manifest), manifest)
    assert {job: len(members) for job, members in found.items()} == {GRID: 8, METRICS: 4}
    assert {n: manifest[n].script for n in found[GRID] if "DIFF" in n} == dict.fromkeys(
        found[GRID][4:], "train_diff.py"
    )
    assert plot_names(list(manifest), manifest) == [f"{METRICS}-sweep"]
    assert {manifest[n].matrix.get("compare") for n in found[METRICS]} == {"model_mean"}
