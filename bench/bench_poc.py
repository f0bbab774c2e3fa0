"""``make bench`` part (f): the example's five jobs through ``poc`` and through ``simulate``, side by side.

Not a test. Generates the shipped ``jobs.yaml`` once into a scratch project, then runs, in turns,
``python -m generator simulate --job ...`` (its default ``--parallel``) and ``python -m generator
poc --job ...`` (its default ``--parallel``: one POC system prepared and started, the five jobs
submitted, the system stopped) for the example's five jobs (the first five of ``jobs.yaml``),
each in a fresh process, ``--repeat`` times, the order of the two commands alternating from one
repeat to the next (so a change in the machine's load does not fall on one command only). Each
run has its own ``--workspace`` (for ``poc``: ``--downloads``; its POC workspace is one for all
``poc`` runs, as for ``make poc`` run again: the first provisions, the others reuse that) in the project;
``HOME`` points into the project, so nothing lands in the user's home. From the second turn on,
each run starts with the results file of the same command's run in the turn before (as ``make
simulate`` or ``make poc`` run again finds its own ``build/results.json`` or
``build/poc-results.json``), so its jobs start longest first by those times (``generator.order``);
the first turn runs them in ``jobs.yaml`` order.

Per run it records the wall time of the whole command (for ``poc``: preparing, starting and
stopping the POC system included: what a user waits for), its exit code, each job's status and
wall seconds, and the load average before and after. Then each ``poc`` run is compared with the
``simulate`` run of the same repeat, job by job: the final models (``server.npy``, found through
each results file's ``workspace``: the simulator workspace, or the downloaded result laid out as
one) bit for bit (dtype, shape and bytes), and the metric points per site and key
(``metric_points`` of ``results.json`` and ``poc-results.json``) equal.

Each command runs at its default ``--parallel`` (4 for both: for ``poc`` the jobs its POC server
runs at once); each turn also runs ``poc --parallel N`` (``--poc-parallel``, default 1; 0: not
run), compared the same way: with 1 it tells the POC system's own cost from the cost of running the
jobs one at a time.

Usage: ``python bench/bench_poc.py [--repeat 2] [--poc-parallel 1] [--relay] [--out build/bench]``
(``--relay``: each turn also runs ``poc --relay``, its job messages through the POC server as NVFlare's
default; not a target); ``make bench`` runs it as part (f) with the same defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: The issue's target: the five jobs through ``poc`` take no more wall time than through ``simulate``.
TARGET_POC_RATIO = 1.0
#: How many of the shipped jobs are the example's (the first ones of ``jobs.yaml``; its header says so).
EXAMPLE_JOB_COUNT = 5
#: The reference command, and the run compared with the target.
SIMULATE, POC = "simulate", "poc"
#: Console lines (:class:`generator.reporter.Reporter`) that mark where a run's time goes: the POC
#: system prepared and started, the first job started (simulated or submitted), the last job
#: judged, the POC system stopped. A run's ``marks`` give the seconds from its start to each.
MARKS = {
    "prepared": re.compile(r"^poc: prepared "),
    "started": re.compile(r"^poc: started "),
    "first_job": re.compile(r"^\S+: (simulating|submitted as job) "),
    "last_job_done": re.compile(r"^\S+: (ok|FAILED|TIMEOUT|INTERRUPTED) in [0-9.]+ s; log: "),
    "stopped": re.compile(r"^poc: (stopped the POC system|`nvflare poc stop` exited)"),
}


def variants(poc_parallel: int | None, relay: bool = False) -> list[tuple[str, str, list[str]]]:
    """The commands of one turn, in the order of the first turn: ``(label, command, extra options)``;
    ``simulate`` and ``poc`` at their defaults, then ``poc --parallel N`` (label ``poc-pN``) unless
    ``poc_parallel`` is 0 or None, then ``poc --relay`` (label ``poc-relay``: job messages through the
    POC server, NVFlare's default) if ``relay``."""
    out = [(SIMULATE, SIMULATE, []), (POC, POC, [])]
    if poc_parallel:
        out.append((f"poc-p{poc_parallel}", POC, ["--parallel", str(poc_parallel)]))
    if relay:
        out.append(("poc-relay", POC, ["--relay"]))
    return out


def _env(project: Path) -> dict:
    """This environment with the generator importable from the work tree, this Python's bin first,
    and ``HOME`` inside ``project``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["HOME"] = str(project / "home")
    return env


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def example_jobs(jobs_yaml: Path = ROOT / "jobs.yaml") -> list[str]:
    """The names of the example's jobs: the first :data:`EXAMPLE_JOB_COUNT` entries of ``jobs_yaml``."""
    import yaml

    jobs = yaml.safe_load(jobs_yaml.read_text(encoding="utf-8"))["jobs"]
    return [job["name"] for job in jobs[:EXAMPLE_JOB_COUNT]]


def prepare(work: Path) -> Path:
    """A scratch project ``<work>/poc`` with the shipped jobs.yaml and scripts, generated into ``out/``."""
    project = work / "poc"
    shutil.rmtree(project, ignore_errors=True)
    (project / "home").mkdir(parents=True)
    shutil.copytree(ROOT / "client_scripts", project / "client_scripts")
    shutil.copy(ROOT / "jobs.yaml", project / "jobs.yaml")
    cmd = [sys.executable, "-m", "generator", "generate", "--jobs", "jobs.yaml", "--out", "out"]
    subprocess.run(cmd, cwd=project, env=_env(project), check=True, capture_output=True)
    return project


#: The one ``--workspace`` of every ``poc`` run, as ``make poc`` run again uses one: the first run
#: provisions the POC system, later ones reuse it (``generator.pocsystem.prepare_poc``); each is cleared.
POC_WORKSPACE = "poc-workspace"


def command(engine: str, names: list[str], tag: str, extra: list[str] = ()) -> list[str]:
    """The ``simulate`` or ``poc`` command line of one run; every folder and file it writes is in the
    project's folder ``tag`` (the results file too: ``simulate`` fills an MLflow project store beside
    it), but for the POC workspace, which every ``poc`` run shares (:data:`POC_WORKSPACE`)."""
    cmd = [sys.executable, "-m", "generator", engine, "--out", "out", *extra]
    for name in names:
        cmd += ["--job", name]
    cmd += ["--results", f"{tag}/results.json"]
    if engine == "simulate":
        return cmd + ["--workspace", f"{tag}/workspace", "--reports", f"{tag}/reports"]
    return cmd + ["--workspace", POC_WORKSPACE, "--downloads", f"{tag}/downloads"]


def run_once(
    project: Path, engine: str, names: list[str], tag: str, extra: list[str] = (), earlier: Path | None = None
) -> dict:
    """One run of ``engine`` over ``names`` in a fresh process: wall s of the whole command, exit
    code, each job's results record (``<tag>/results.json``), for ``poc`` the seconds it took to
    start the system (None if not printed), the seconds from the start to each of :data:`MARKS`
    (last occurrence), the start order it printed (``order``: None when ``jobs.yaml``'s), load before
    and after. ``earlier``: a results file copied to ``<tag>/results.json`` first, as the file an
    earlier run of the same command left (its start order comes from it: ``generator.order``).
    Its console output, each line with its second, goes to ``<tag>/console.log``."""
    cmd = command(engine, names, tag, extra)
    (project / tag).mkdir()
    if earlier is not None and earlier.is_file():
        shutil.copy(earlier, project / tag / "results.json")
    env = {**_env(project), "PYTHONUNBUFFERED": "1"}  # each line when it is printed
    load_before = _load()
    started = time.perf_counter()
    lines = []
    with subprocess.Popen(
        cmd, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        for line in proc.stdout:
            lines.append((time.perf_counter() - started, line.rstrip("\n")))
    wall = time.perf_counter() - started
    results = project / tag / "results.json"
    jobs = {j["name"]: j for j in json.loads(results.read_text())} if results.is_file() else {}
    (project / tag / "console.log").write_text("".join(f"{t:7.2f}  {line}\n" for t, line in lines), encoding="utf-8")
    marks = _marks(lines)
    started_in = next(
        (re.search(r" in ([0-9.]+) s$", line) for _, line in lines if MARKS["started"].search(line)), None
    )
    return {
        "engine": engine,
        "command": " ".join(cmd[2:]),
        "tag": tag,
        "wall_s": round(wall, 1),
        "jobs_s": round(sum(jobs[n]["wall_seconds"] for n in names if n in jobs), 1),
        "system_start_s": float(started_in.group(1)) if started_in else None,
        "marks": marks,
        "phases": phases(marks, wall),
        "order": next((line.rsplit(": ", 1)[1].split(", ") for _, line in lines if line.startswith("order: ")), None),
        "code": proc.returncode,
        "all_ok": len(jobs) == len(names) and all(j["ok"] for j in jobs.values()),
        "jobs": {
            n: {
                "status": jobs[n]["status"] if n in jobs else "missing",
                "wall_s": jobs[n]["wall_seconds"] if n in jobs else None,
                "metric_points": jobs[n]["metric_points"] if n in jobs else None,
                "workspace": jobs[n]["workspace"] if n in jobs else None,
                "problems": jobs[n]["problems"]
                if n in jobs
                else [f"not in {tag}/results.json (exit {proc.returncode})"],
            }
            for n in names
        },
        "load_before": load_before,
        "load_after": _load(),
    }


def _marks(lines: list[tuple[float, str]]) -> dict[str, float]:
    """Seconds from the start to each of :data:`MARKS` found in ``lines`` (``(second, line)``): the
    first ``first_job`` line, the last of every other mark."""
    marks = {}
    for t, line in lines:
        for name, pattern in MARKS.items():
            if pattern.search(line) and not (name == "first_job" and name in marks):
                marks[name] = round(t, 1)
    return marks


def phases(marks: dict[str, float], wall: float) -> dict[str, float]:
    """Where a run's ``wall`` seconds went: from the start (or the previous mark) to each mark, in
    order of time, then ``exit`` (from the last mark to the end of the process: the table, the
    results file, the interpreter's exit)."""
    out, previous = {}, 0.0
    for name, t in sorted(marks.items(), key=lambda item: item[1]):
        out[name] = round(t - previous, 1)
        previous = t
    out["exit"] = round(wall - previous, 1)
    return out


def _final_model(project: Path, job: dict):
    """The final model of one job's run (``<workspace>/server/simulate_job/models/server.npy``), or None."""
    import numpy as np

    from generator.layout import FINAL_MODEL

    if not job["workspace"]:
        return None
    path = project / job["workspace"] / FINAL_MODEL  # a relative workspace is relative to the project
    return np.load(path) if path.is_file() else None


def compare(project: Path, sim: dict, poc: dict) -> list[dict]:
    """Job by job, the ``poc`` run against the ``simulate`` run: models bit for bit, metric points equal.

    Returns:
        list[dict]: one row per job: ``models_identical`` (both saved a final model with the same
        dtype, shape and bytes), ``points_identical`` (the same ``{site: {key: points}}``), the
        points of each, and the final model (nested lists) of the simulator run.
    """
    rows = []
    for name, s in sim["jobs"].items():
        p = poc["jobs"][name]
        a, b = _final_model(project, s), _final_model(project, p)
        same_model = (
            a is not None and b is not None and a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
        )
        rows.append(
            {
                "job": name,
                "simulate_status": s["status"],
                "poc_status": p["status"],
                "models_identical": bool(same_model),
                "final_model": None if a is None else a.tolist(),
                "points_identical": s["metric_points"] is not None and s["metric_points"] == p["metric_points"],
                "simulate_points": s["metric_points"],
                "poc_points": p["metric_points"],
            }
        )
    return rows


def bench_poc(work: Path, repeat: int, poc_parallel: int | None = None, log=print, relay: bool = False) -> dict:
    """Part (f): ``simulate`` and ``poc`` of the example's jobs in turns, ``repeat`` times; then compared.

    Args:
        work (Path): the bench folder; the project is ``<work>/poc`` (replaced).
        repeat (int): turns (>= 1); the order of the commands is reversed every other turn.
        poc_parallel (int | None): also run ``poc --parallel poc_parallel`` each turn (0, None: not).
        log: called with one line of progress at a time.
        relay (bool): also run ``poc --relay`` each turn.

    Returns:
        dict: ``jobs`` (names), ``runs`` (one per command run, see :func:`run_once`, with its
        ``label`` and ``repeat``), ``comparisons`` (per repeat and ``poc`` label: the rows of
        :func:`compare`) and, per ``poc`` label, ``summary[label]``: median wall s of it and of
        ``simulate``, ``ratio`` (of the medians), ``ratios`` (per repeat), ``all_ok`` (every job of
        both ok in every turn), ``models_identical``/``points_identical`` (jobs) of ``compared``.
    """
    names = example_jobs()
    project = prepare(work)
    order = variants(poc_parallel, relay)
    runs, comparisons = [], []
    for i in range(max(1, repeat)):
        mine = {}
        for label, engine, extra in order if i % 2 == 0 else order[::-1]:
            earlier = project / f"{label}-r{i}" / "results.json" if i else None  # as `make poc` run again
            row = run_once(project, engine, names, f"{label}-r{i + 1}", extra, earlier)
            row.update(label=label, repeat=i + 1, options=extra)
            runs.append(row)
            mine[label] = row
            log(
                f"  {row['command'].split(' --out')[0]}{' ' + ' '.join(extra) if extra else ''} (repeat {i + 1}): "
                f"{row['wall_s']:.1f} s (jobs' own {row['jobs_s']:.1f} s; s to each mark: "
                f"{_phases_text(row['phases'])}), exit {row['code']}, all ok: {row['all_ok']}, "
                f"load {row['load_before']} -> {row['load_after']}; started "
                + (f"longest first: {', '.join(row['order'])}" if row["order"] else "in jobs.yaml order")
            )
            for name, job in row["jobs"].items():
                if job["status"] != "ok":
                    log(f"    {name}: {job['status']}: {'; '.join(job['problems'])}")
        for label, engine, _ in order:
            if engine != POC:
                continue
            rows = compare(project, mine[SIMULATE], mine[label])
            comparisons.append({"repeat": i + 1, "label": label, "jobs": rows})
            for r in rows:
                log(
                    f"    {label} vs simulate, {r['job']}: models identical {r['models_identical']}, metric points "
                    f"identical {r['points_identical']} ({_points_text(r['simulate_points'])} / "
                    f"{_points_text(r['poc_points'])})"
                )
    summary = {label: _summary(runs, comparisons, label) for label, engine, _ in order if engine == POC}
    return {
        "jobs": names,
        "project": str(project),
        "target_ratio": TARGET_POC_RATIO,
        "runs": runs,
        "comparisons": comparisons,
        "summary": summary,
    }


def _summary(runs: list[dict], comparisons: list[dict], label: str) -> dict:
    """The ``poc`` runs of ``label`` against the ``simulate`` runs (see :func:`bench_poc`)."""
    sim = {r["repeat"]: r for r in runs if r["label"] == SIMULATE}
    poc = {r["repeat"]: r for r in runs if r["label"] == label}
    jobs = [j for c in comparisons if c["label"] == label for j in c["jobs"]]
    sim_s = statistics.median(r["wall_s"] for r in sim.values())
    poc_s = statistics.median(r["wall_s"] for r in poc.values())
    return {
        "command": next(iter(poc.values()))["command"],
        "options": next(iter(poc.values())).get("options", []),
        "simulate_median_s": sim_s,
        "poc_median_s": poc_s,
        "ratio": poc_s / sim_s,
        "ratios": [round(poc[k]["wall_s"] / sim[k]["wall_s"], 2) for k in sorted(poc)],
        "all_ok": all(r["all_ok"] for r in [*sim.values(), *poc.values()]),
        "models_identical": sum(j["models_identical"] for j in jobs),
        "points_identical": sum(j["points_identical"] for j in jobs),
        "compared": len(jobs),
    }


def _points_text(points: dict | None) -> str:
    """``{site: {key: n}}`` as ``site-1 1875, site-2 1875`` (all keys summed per site); ``-`` if none."""
    if not points:
        return "-"
    return ", ".join(f"{site} {sum(keys.values())}" for site, keys in sorted(points.items()))


def summary_table(result: dict) -> str:
    """One line per run (label, repeat, wall s, the sum of its jobs' own s, exit code, every job ok,
    load, :func:`phases`), then each ``poc`` run's ratio to ``simulate``."""
    lines = ["run         repeat  wall s  jobs' s  exit  all ok  load before -> after     s to each mark"]
    for r in result["runs"]:
        load = f"{r['load_before']} -> {r['load_after']}"
        lines.append(
            f"{r['label']:<10}  {r['repeat']:<6}  {r['wall_s']:<6.1f}  {r['jobs_s']:<7.1f}  {r['code']:<4}  "
            f"{r['all_ok']!s:<6}  {load:<24}  {_phases_text(r['phases'])}"
        )
    for label, s in result["summary"].items():
        lines.append(
            f"{label} / simulate (medians {s['poc_median_s']:.1f} s / {s['simulate_median_s']:.1f} s): "
            f"{s['ratio']:.2f} (per repeat {', '.join(f'{x:.2f}' for x in s['ratios'])})"
        )
    return "\n".join(lines)


def _phases_text(phases: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.1f}" for name, seconds in phases.items())


def targets(result: dict | None) -> list[list[str]]:
    """Part (f)'s target rows ``[what, measured, goal, PASS/FAIL]`` (none when it did not run): ``poc``
    at its default ``--parallel`` against ``simulate`` (wall time; models and points), then the same
    wall-time row for each other ``--parallel`` measured."""
    if not result:
        return []
    n, goal = len(result["jobs"]), result["target_ratio"]
    rows = []
    for s in result["summary"].values():
        what = " ".join([POC, *s.get("options", [])])
        rows.append(
            [
                f"{n} example jobs: {what} / simulate wall time",
                f"{s['ratio']:.2f}x ({s['poc_median_s']:.1f} s vs {s['simulate_median_s']:.1f} s, median of "
                f"{len(s['ratios'])}; every job ok: {s['all_ok']})",
                f"<= {goal:g}x, every job ok",
                "PASS" if s["all_ok"] and s["ratio"] <= goal else "FAIL",
            ]
        )
    models = sum(s["models_identical"] for s in result["summary"].values())
    points = sum(s["points_identical"] for s in result["summary"].values())
    compared = sum(s["compared"] for s in result["summary"].values())
    rows.insert(
        1,
        [
            "final models and metric points identical (every poc run vs simulate)",
            f"models {models}/{compared}, point counts {points}/{compared}",
            "all",
            "PASS" if models == points == compared else "FAIL",
        ],
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run part (f) alone: print each run, the summary and the targets; write ``<out>/poc.json``."""

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=2, help="turns of the commands (default: %(default)s)")
    parser.add_argument(
        "--poc-parallel",
        type=int,
        default=1,
        help="also run poc --parallel N each turn; 0: not (default: %(default)s)",
    )
    parser.add_argument("--relay", action="store_true", help="also run poc --relay each turn")
    parser.add_argument("--out", default=str(ROOT / "build" / "bench"), help="work folder (default: %(default)s)")
    args = parser.parse_args(argv)
    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    result = bench_poc(work, args.repeat, args.poc_parallel, lambda line: print(line, flush=True), args.relay)
    print(summary_table(result))
    for row in targets(result):
        print("  ".join(row))
    (work / "poc.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"results: {work / 'poc.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
