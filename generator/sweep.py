"""Sweep stage: compare the jobs expanded from one ``matrix:`` job after ``simulate``.

Takes the simulated jobs' :class:`generator.simulate.JobResult` list and the generated folder's
manifest (each expanded job's :class:`generator.layout.ManifestEntry` carries ``matrix``: the matrix
job's name as written, the combination's values and the job's ``compare`` key if set); gives one
:class:`Sweep` per matrix job with at least two simulated jobs, in file order: one :class:`SweepRow`
per combination (its matrix values, status, wall time, the final model's mean, the last value of
each stored metric averaged over sites) and, when the jobs stored metrics, the plot data of one
metric (``compare``; default: the first key stored, sorted) averaged over sites per step, drawn by
:func:`plot_sweep` into ``<reports>/<matrix job>-sweep.png`` like :mod:`generator.plot` (object
API, Agg canvas, text chunks saying what was drawn). A combination that stored no point of that
metric has no line; :func:`table`'s title counts the lines drawn and :func:`missing_warning` names
the combinations left out (and any key of theirs ending with the metric's name).

The comparison is not a file of its own: every entry of ``results.json`` carries ``matrix``,
``model_mean`` and ``metric_last`` (see :func:`generator.simulate.result_record`), so a reader
groups the entries by ``matrix.job`` to get the same rows.

This module imports no NVFlare; matplotlib only inside :func:`plot_sweep`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

#: Suffix of a sweep plot's name: ``<matrix job>-sweep.png``.
PLOT_SUFFIX = "-sweep"


@dataclass
class SweepRow:
    """One combination of a sweep.

    Attributes:
        job (str): the expanded job's name. values (dict): matrix key -> value of this combination.
        status (str): the job's status (``ok``, ``FAILED``, ``TIMEOUT``, ``INTERRUPTED``).
        wall_seconds (float): the simulator run's wall time, in seconds.
        model_mean (float | None): mean of every entry of the final model (None: no final model).
        metrics (dict[str, float]): metric key -> last value (highest step) averaged over the sites
            that stored the key.
    """

    job: str
    values: dict
    status: str
    wall_seconds: float
    model_mean: float | None
    metrics: dict = field(default_factory=dict)


@dataclass
class Sweep:
    """The comparison of the jobs expanded from one matrix job.

    Attributes:
        name (str): the matrix job's ``name`` as written (may hold ``{key}`` placeholders).
        keys (list[str]): the table's matrix-value columns: every key of the rows' ``values`` (first
            row's order, then any others) except those holding a mapping or a list (an ``include``
            entry's ``expect``, say), which stay in each row's ``values`` and in ``results.json``.
        rows (list[SweepRow]): one per simulated combination, in file order.
        metric_keys (list[str]): every metric key any row stored, sorted.
        compare (str | None): the metric plotted across combinations (the job's ``compare`` key,
            else the first of ``metric_keys``; None: no metric stored, no plot).
        curves (dict[str, tuple[list, list]]): job -> (steps, values of ``compare`` averaged over sites).
        missing (dict[str, list[str]]): job -> the keys it stored that end with ``compare``'s name
            (``metrics_model_mean``: NVFlare's TensorBoard receiver stores a WandBWriter's or
            MLflowWriter's key ``k`` as ``metrics_k``, :data:`generator.validate.CROSS_WRITER`), for
            each combination that stored no point of ``compare`` and so has no curve (empty list:
            no such key), in row order.
        receivers (dict[str, str | None]): job -> its receiver type (the manifest's ``receiver``).
        report (str | None): the plot written (set by the caller), if any.
    """

    name: str
    keys: list
    rows: list
    metric_keys: list
    compare: str | None = None
    curves: dict = field(default_factory=dict)
    missing: dict = field(default_factory=dict)
    receivers: dict = field(default_factory=dict)
    report: str | None = None

    @property
    def plot_name(self) -> str:
        """The plot's file stem and PNG ``Title``: ``<matrix job>-sweep``."""
        return f"{self.name}{PLOT_SUFFIX}"


def model_mean(model) -> float | None:
    """Mean of every number in ``model`` (nested lists, e.g. a numpy model's ``tolist()``, or a PyTorch
    model's ``{parameter: nested lists}``); None if None or empty."""
    if model is None:
        return None
    flat: list[float] = []

    def walk(value) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v)
        else:
            flat.append(float(value))

    walk(model)
    return sum(flat) / len(flat) if flat else None


def last_values(series: dict) -> dict[str, float]:
    """Each metric's last value (the point of the highest step) averaged over the sites that stored it.

    Args:
        series (dict): ``{site: {key: [(step, value), ...]}}`` (:data:`generator.metrics.Series`).

    Returns:
        dict[str, float]: key -> mean over sites, keys sorted.
    """
    lasts: dict[str, list[float]] = {}
    for per_key in series.values():
        for key, points in per_key.items():
            if points:
                lasts.setdefault(key, []).append(float(max(points, key=lambda p: p[0])[1]))
    return {key: sum(v) / len(v) for key, v in sorted(lasts.items())}


def site_average(series: dict, key: str) -> tuple[list[int], list[float]]:
    """Metric ``key`` averaged over sites at each step (over the sites that have a point at that step).

    Args:
        series (dict): ``{site: {key: [(step, value), ...]}}``. key (str): the metric.

    Returns:
        tuple[list[int], list[float]]: the steps, ascending, and the mean values at them.
    """
    at: dict[int, list[float]] = {}
    for per_key in series.values():
        for step, value in per_key.get(key, []):
            at.setdefault(int(step), []).append(float(value))
    steps = sorted(at)
    return steps, [sum(at[s]) / len(at[s]) for s in steps]


def groups(names: list[str], manifest: dict) -> dict[str, list[str]]:
    """The jobs of ``names`` grouped by the matrix job they were expanded from, groups of two or more only.

    Args:
        names (list[str]): job names in file order. manifest (dict): name -> ManifestEntry.

    Returns:
        dict[str, list[str]]: matrix job name (as written) -> its jobs, both in file order.
    """
    found: dict[str, list[str]] = {}
    for name in names:
        matrix = getattr(manifest.get(name), "matrix", None)
        if matrix:
            found.setdefault(matrix["job"], []).append(name)
    return {job: members for job, members in found.items() if len(members) >= 2}


def plot_names(names: list[str], manifest: dict) -> list[str]:
    """The sweep plots (file stems) simulating ``names`` may write: one per group with a receiver."""
    return [
        f"{job}{PLOT_SUFFIX}"
        for job, members in groups(names, manifest).items()
        if any(manifest[n].receiver for n in members)
    ]


def compare(results: list, manifest: dict) -> list[Sweep]:
    """The sweeps among ``results``: one :class:`Sweep` per matrix job with two or more results.

    Args:
        results (list[generator.simulate.JobResult]): in file order; ``series`` holds each metrics
            job's stored points, ``final_model`` its final model.
        manifest (dict): name -> :class:`generator.layout.ManifestEntry` (``matrix`` read).

    Returns:
        list[Sweep]: in the order of each matrix job's first result; a combination without a point
        of ``compare`` is in its ``missing``, not in its ``curves``.
    """
    by_name = {r.name: r for r in results}
    sweeps = []
    for job, members in groups([r.name for r in results], manifest).items():
        rows, keys, metric_keys = [], [], set()
        chosen = None
        for name in members:
            r, matrix = by_name[name], manifest[name].matrix
            chosen = chosen or matrix.get("compare")
            metrics = last_values(r.series)
            metric_keys |= set(metrics)
            keys += [k for k in matrix["values"] if k not in keys]
            rows.append(
                SweepRow(name, dict(matrix["values"]), r.status, r.wall_seconds, model_mean(r.final_model), metrics)
            )
        keys = [k for k in keys if not any(isinstance(r.values.get(k), dict | list) for r in rows)]
        ordered = sorted(metric_keys)
        sweep = Sweep(job, keys, rows, ordered, chosen or (ordered[0] if ordered else None))
        sweep.receivers = {name: manifest[name].receiver for name in members}
        if sweep.compare:
            for name, row in zip(members, rows, strict=True):
                steps, values = site_average(by_name[name].series, sweep.compare)
                if steps:
                    sweep.curves[name] = (steps, values)
                else:
                    sweep.missing[name] = [k for k in row.metrics if k != sweep.compare and k.endswith(sweep.compare)]
        sweeps.append(sweep)
    return sweeps


#: Figure size in inches and dots per inch (as :mod:`generator.plot`).
WIDTH, HEIGHT, DPI = 8.0, 4.6, 100
LINE_STYLES = ["-", "--", ":", "-."]


def plot_sweep(sweep: Sweep, path: Path) -> dict[str, tuple[list, list]]:
    """Overlay ``sweep.compare`` across the combinations: x = step, one line per job, averaged over sites.

    The PNG's text chunks: ``Title`` = ``<matrix job>-sweep``, ``Metric`` = the metric, ``Series`` =
    ``{metric: {job: points drawn}}`` (JSON), read back from the plotted lines, and, when some
    combinations stored no point of the metric (``sweep.missing``), ``Missing`` = their jobs (JSON
    list); the figure's title then says how many of the combinations it shows.

    Args:
        sweep (Sweep): with ``compare`` and ``curves`` (see :func:`compare`). path (Path): the PNG;
            its folder is created.

    Returns:
        dict: job -> ([steps], [values]) as drawn.

    Raises:
        ValueError: the sweep has no curve to draw.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not sweep.curves:
        raise ValueError(f"{sweep.name}: no {sweep.compare!r} point to plot")
    fig = Figure(figsize=(WIDTH, HEIGHT), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for i, (job, (steps, values)) in enumerate(sweep.curves.items()):
        marker = "o" if len(steps) <= 50 else None
        ax.plot(steps, values, label=job, marker=marker, markersize=3, linewidth=1.2, linestyle=LINE_STYLES[i % 4])
    drawn = {
        line.get_label(): ([int(x) for x in line.get_xdata()], [float(y) for y in line.get_ydata()])
        for line in ax.get_lines()
    }
    ax.set_xlabel("step")
    ax.set_ylabel(f"{sweep.compare} (mean over sites)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=7)
    shown = f" ({len(drawn)} of {len(sweep.rows)}: the others stored no {sweep.compare})" if sweep.missing else ""
    fig.suptitle(f"{sweep.name}: {sweep.compare} per combination{shown}")
    counts = {sweep.compare: {job: len(xy[0]) for job, xy in drawn.items()}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"Title": sweep.plot_name, "Metric": sweep.compare, "Series": json.dumps(counts, sort_keys=True)}
    if sweep.missing:
        metadata["Missing"] = json.dumps(list(sweep.missing))
    fig.savefig(path, format="png", metadata=metadata)
    return drawn


def _value(values: dict, key: str) -> str:
    if key not in values:
        return "-"
    value = values[key]
    return value if isinstance(value, str) else json.dumps(value)


def _number(value) -> str:
    return "-" if value is None else f"{value:g}"


def table(sweep: Sweep) -> list[str]:
    """The sweep's table: a title line, then a header and one line per combination, columns padded.

    Columns: each matrix key, job, status, wall s, model mean, then ``last <key>`` per stored metric.
    """
    header = [*sweep.keys, "job", "status", "wall s", "model mean", *[f"last {k}" for k in sweep.metric_keys]]
    rows = [header]
    for r in sweep.rows:
        rows.append(
            [
                *[_value(r.values, k) for k in sweep.keys],
                r.job,
                r.status,
                f"{r.wall_seconds:.1f}",
                _number(r.model_mean),
                *[_number(r.metrics.get(k)) for k in sweep.metric_keys],
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    title = f"sweep {sweep.name}: {len(sweep.rows)} combinations{_compared(sweep)}"
    return [title, *["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]]


def _compared(sweep: Sweep) -> str:
    """The title's end: where ``compare`` was plotted and, when some combinations are not in the
    plot, how many are; when none stored it, that there is no plot."""
    if not sweep.compare or not sweep.missing and not sweep.report:
        return ""
    if not sweep.curves:
        return f"; none stored {sweep.compare}: no plot"
    if not sweep.missing:
        return f"; {sweep.compare} compared in {sweep.report}"
    left_out = f"{len(sweep.missing)} stored no {sweep.compare}"
    if not sweep.report:
        return f"; {left_out}"
    return f"; {sweep.compare} of {len(sweep.curves)} compared in {sweep.report} ({left_out})"


#: The key NVFlare's TensorBoard receiver stores another writer's metric ``k`` under
#: (:data:`generator.validate.CROSS_WRITER`: ``WandBWriter.log({k: v})`` is stored as ``metrics_k``).
TENSORBOARD_PREFIX = "metrics_"


def missing_warning(sweep: Sweep) -> list[str]:
    """The warning line (``warning: sweep <name>: ...``) about the combinations of ``sweep`` that stored no
    point of ``compare`` and so are not in its plot (``sweep.missing``); empty when every one did.

    Each such job is named, with the keys it stored that end with the metric's name (a trial's
    TensorBoard jobs stored ``model_mean`` as ``metrics_model_mean`` and the plot silently showed only
    the W&B half of the sweep); when no combination stored the metric, the line says there is no
    plot and lists the keys that were stored, for ``compare``.

    Args:
        sweep (Sweep): from :func:`compare`, ``report`` set if a plot was written.

    Returns:
        list[str]: one line without its newline, or none.
    """
    if not sweep.missing:
        return []
    metric, total = sweep.compare, len(sweep.rows)
    named = [f"{job} stored {', '.join(keys)}" for job, keys in sweep.missing.items() if keys]
    if not sweep.curves:
        head = f"none of the {total} combinations stored {metric}, so there is no plot"
        if named:
            head += f" ({'; '.join(named)})"
        if sweep.metric_keys:
            head += f"; the combinations stored: {', '.join(sweep.metric_keys)}"
    else:
        where = "are not in the plot" if sweep.report else "have no curve"
        left_out = ", ".join(sweep.missing)
        head = f"{len(sweep.missing)} of {total} combinations stored no {metric} and {where}: {left_out}"
        if named:
            head += f" ({'; '.join(named)})"
    if any(
        f"{TENSORBOARD_PREFIX}{metric}" in keys and sweep.receivers.get(job) == "tensorboard"
        for job, keys in sweep.missing.items()
    ):
        head += "; NVFlare's TensorBoard receiver stores a WandBWriter's or MLflowWriter's key k as "
        head += f"{TENSORBOARD_PREFIX}k"
    return [f"warning: sweep {sweep.name}: {head}"]
