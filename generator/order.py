"""Start order: when several jobs run at once, the ones that took longest last time start first.

Takes the selected job names (in ``jobs.yaml`` order), the ``--results`` file the run is about to
replace, and how many jobs run at once; gives the order in which ``simulate`` starts them (or
``poc``/``submit`` submit them). Results, the table and ``results.json`` stay in ``jobs.yaml``
order whatever the start order.

With ``--parallel N`` above 1, jobs started in file order can leave the longest one for last, to
run alone while the other slots stay empty: the example's five jobs through ``simulate --parallel
4`` took 52 s in file order (the 35 s MLflow sub-process job, fifth, started only when the first
job ended) and 40 s with the two metrics jobs first (measured here, 2026-12-02). Starting the
longest first is the classic rule for this (longest processing time first, LPT: R. L. Graham,
"Bounds on multiprocessing timing anomalies", SIAM J. Appl. Math. 17(2), 1969). A job's length is
its ``wall_seconds`` in the earlier results file at the same path, if that run judged it ``ok``;
a job with no such record is looked up in the other commands' results files beside it
(:data:`ENGINE_RESULTS`: ``make poc`` after ``make run`` takes the times ``simulate`` wrote; a
trial's ``poc`` of all jobs after a ``poc`` of three put the job known to be longest 13th of 14,
and it ended last, alone), and one with no record anywhere (new, renamed, failed or stopped last
time) is assumed long and starts first, in file order. One job at a time (``--parallel 1``) keeps
file order: the order then changes nothing but what runs when.
"""

from __future__ import annotations

import json
import math
from pathlib import Path


def earlier_seconds(results_path: str | Path | None) -> dict[str, float]:
    """Each job's wall time in the results file at ``results_path`` (seconds, > 0), for the jobs it
    records as ``ok``.

    Args:
        results_path: a ``results.json`` / ``poc-results.json`` written by an earlier run (a JSON
            list of objects with ``name``, ``status`` and ``wall_seconds``,
            :func:`generator.outputs.write_results`); None, missing or unreadable: nothing known.

    Returns:
        dict[str, float]: job name -> seconds; jobs not ``ok`` there, or without a positive finite
        ``wall_seconds``, are left out. Never raises for a bad file: the order is only a hint.
    """
    if not results_path:
        return {}
    try:
        entries = json.loads(Path(results_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    seconds: dict[str, float] = {}
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or entry.get("status", "ok" if entry.get("ok") else None) != "ok":
            continue
        name, wall = entry.get("name"), entry.get("wall_seconds")
        if isinstance(name, str) and isinstance(wall, (int, float)) and not isinstance(wall, bool):
            if math.isfinite(wall) and wall > 0:
                seconds[name] = float(wall)
    return seconds


def start_order(selected: list[str], known: dict[str, float], parallel: int) -> list[str]:
    """The order to start ``selected`` in: jobs without a known time first (file order), then the
    others by their known time, longest first (equal times: file order).

    Args:
        selected (list[str]): the job names to run, in ``jobs.yaml`` order.
        known (dict[str, float]): seconds per job (:func:`earlier_seconds`).
        parallel (int): jobs run at once; 1 (or less): ``selected`` unchanged.

    Returns:
        list[str]: the same names, each once.
    """
    if parallel <= 1:
        return list(selected)
    unknown = [name for name in selected if name not in known]
    timed = sorted((name for name in selected if name in known), key=lambda name: -known[name])
    return unknown + timed


#: The results files' names as the commands write them by default (``--results``: ``simulate``'s
#: ``build/results.json``, ``poc``'s and ``submit``'s ``build/<command>-results.json``, in
#: :mod:`generator.cli`), looked at beside a run's own for the jobs it does not time.
ENGINE_RESULTS = ("results.json", "poc-results.json", "submit-results.json")


def borrowed_seconds(selected: list[str], results_path: str | Path, known: dict[str, float]) -> tuple[dict, list]:
    """Times for the jobs of ``selected`` that ``known`` lacks, from the other results files beside
    ``results_path`` (:data:`ENGINE_RESULTS`, in that order; the first that times a job gives it).

    Returns:
        tuple[dict[str, float], list[Path]]: seconds per job found, and the files that gave any.
    """
    own = Path(results_path)
    found: dict[str, float] = {}
    sources: list[Path] = []
    for name in ENGINE_RESULTS:
        other = own.with_name(name)
        if other.name == own.name or not other.is_file():
            continue
        times = earlier_seconds(other)
        got = {job: times[job] for job in selected if job not in known and job not in found and job in times}
        if got:
            found.update(got)
            sources.append(other)
    return found, sources


def chosen_order(selected: list[str], results_path: str | Path | None, parallel: int, events) -> list[str]:
    """:func:`start_order` of ``selected`` from the earlier ``results_path`` (:func:`earlier_seconds`;
    jobs it does not time: :func:`borrowed_seconds`), told to ``events`` (``order_chosen(order,
    source)``) when it is not file order; what ``simulate``, ``poc`` and ``submit`` call before
    their first job."""
    own, sources = earlier_seconds(results_path), []
    known = dict(own)
    if parallel > 1 and results_path and any(job not in known for job in selected):
        found, sources = borrowed_seconds(selected, results_path, known)
        known.update(found)
    timed_here = any(job in own for job in selected)
    order = start_order(selected, known, parallel)
    if order != selected:
        borrowed = " and ".join(map(str, sources))
        if not sources:
            source = str(results_path)
        elif timed_here:
            source = f"{results_path} and, for the jobs it does not time, {borrowed}"
        else:  # e.g. a first `poc` after `make run`: simulate's times only
            source = borrowed
        events.order_chosen(order, source)
    return order
