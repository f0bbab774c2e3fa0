"""Plot stage: one PNG per metrics job, each streamed metric per site against its step.

Takes the points a receiver stored (:data:`generator.metrics.Series`); gives
``<reports>/<job>.png``: one panel per metric key, one line per site, x = step, y = value. Drawn
with matplotlib's object API on an Agg canvas (no pyplot, no display, no global backend change).
The PNG's text chunks carry the job name and, under ``Series``, the number of points drawn per
key and site (JSON), so a reader can check the picture without looking at it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

#: Inches per panel (height) and of the figure (width); dots per inch.
PANEL_HEIGHT, WIDTH, DPI = 2.6, 8.0, 100
LINE_STYLES = ["-", "--", ":", "-."]


@contextlib.contextmanager
def matplotlib_dir(folder: Path) -> Iterator[None]:
    """``MPLCONFIGDIR`` set to ``folder`` for the block (and the processes started in it), unless set already.

    matplotlib reads ``MPLCONFIGDIR`` once per process, when it is first imported, for its config
    folder and the cache of its font list (``matplotlib.get_configdir``/``get_cachedir``; without
    it ``~/.config/matplotlib`` and ``~/.cache/matplotlib``, made on first use); the folder is
    created by matplotlib when it is needed. Wrap everything that may import matplotlib first.

    Args:
        folder (Path): the folder to use (made absolute).
    """
    if "MPLCONFIGDIR" in os.environ:
        yield
        return
    os.environ["MPLCONFIGDIR"] = str(Path(folder).absolute())
    try:
        yield
    finally:
        os.environ.pop("MPLCONFIGDIR", None)


def plot_metrics(job: str, series: dict, path: Path) -> dict[str, dict[str, tuple[list, list]]]:
    """Draw every metric of ``series`` per site against its step and save it as a PNG.

    Args:
        job (str): the job name (figure title).
        series (dict): ``{site: {key: [(step, value), ...]}}`` (see :mod:`generator.metrics`).
        path (Path): the PNG to write; its folder is created.

    Returns:
        dict: what was drawn, read back from the plotted lines:
        ``{key: {site: ([steps], [values])}}``.

    Raises:
        ValueError: ``series`` holds no point.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = sorted({key for per_key in series.values() for key, points in per_key.items() if points})
    if not keys:
        raise ValueError(f"{job}: no metric point to plot")
    fig = Figure(figsize=(WIDTH, PANEL_HEIGHT * len(keys) + 0.6), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(keys), 1, squeeze=False)[:, 0]
    drawn: dict[str, dict[str, tuple[list, list]]] = {}
    for ax, key in zip(axes, keys, strict=True):
        for i, site in enumerate(sorted(series)):
            points = series[site].get(key, [])
            if not points:
                continue
            steps, values = zip(*points, strict=True)
            marker = "o" if len(points) <= 50 else None
            style = LINE_STYLES[i % len(LINE_STYLES)]  # sites with equal values stay visible
            ax.plot(steps, values, label=site, marker=marker, markersize=3, linewidth=1.2, linestyle=style)
        for line in ax.get_lines():
            drawn.setdefault(key, {})[line.get_label()] = (
                [int(x) for x in line.get_xdata()],
                [float(y) for y in line.get_ydata()],
            )
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(f"{job}: streamed metrics per site")
    counts = {key: {site: len(xy[0]) for site, xy in sites.items()} for key, sites in drawn.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Title": job, "Series": json.dumps(counts, sort_keys=True)})
    return drawn
