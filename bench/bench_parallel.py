"""``make bench`` part (d): the shipped jobs simulated at ``--parallel 1`` and at the default, side by side.

Not a test. Generates the shipped ``jobs.yaml`` once into a scratch project, then runs
``python -m generator simulate --parallel N`` in a fresh process for each level, ``--repeat``
times, alternating the order of the levels from one repeat to the next (so a change in the
machine's load does not fall on one level only). Per run it records the wall time of the
``simulate`` process, its exit code, every job's status and whether every metric point was
stored: ``simulate`` itself fails a job whose receiver's store lacks a point
(``expect.metric_points_per_site``), so "all stored" is "every job with a receiver is ok and
its store holds points from every site". The load average before and after each run is
recorded: other work on the machine slows the runs and makes losses likelier. Each run but the
first starts with the results file of the run before it (as ``make simulate`` run again finds the
``build/results.json`` it left), so above 1 at once its jobs start longest first
(``generator.order``); the first run takes them in ``jobs.yaml`` order.

Usage: ``python bench/bench_parallel.py [--levels 1,2,3] [--repeat 5] [--out build/bench]``; ``make
bench`` runs levels 1, the default and 2 once each.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: The speed-up the issue asks of the default parallelism: wall time <= 0.6 x that of --parallel 1.
TARGET_PARALLEL_RATIO = 0.6


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def prepare(work: Path) -> Path:
    """A scratch project with the shipped jobs.yaml and scripts, generated into ``out/``."""
    project = work / "parallel"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    shutil.copytree(ROOT / "client_scripts", project / "client_scripts")
    shutil.copy(ROOT / "jobs.yaml", project / "jobs.yaml")
    cmd = [sys.executable, "-m", "generator", "generate", "--jobs", "jobs.yaml", "--out", "out"]
    subprocess.run(cmd, cwd=project, env=_env(), check=True, capture_output=True)
    return project


def simulate_once(project: Path, level: int, tag: str, earlier: Path | None = None) -> dict:
    """One ``simulate --parallel level`` run of every shipped job: wall s, statuses, points stored.
    ``earlier``: a results file copied to this run's first, as the ``build/results.json`` an earlier
    ``make simulate`` left (above 1 at once, the jobs start longest first by it: ``generator.order``)."""
    results = project / f"results-{tag}.json"
    if earlier is not None and earlier.is_file():
        shutil.copy(earlier, results)
    cmd = [sys.executable, "-m", "generator", "simulate", "--out", "out", "--workspace", f"ws-{tag}"]
    cmd += ["--results", str(results.name), "--reports", f"reports-{tag}", "--parallel", str(level)]
    load_before = _load()
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=project, env=_env(), capture_output=True, text=True)
    wall = time.perf_counter() - started
    jobs = json.loads(results.read_text()) if results.is_file() else []
    receivers = [j for j in jobs if j["receiver"]]
    return {
        "parallel": level,
        "wall_s": round(wall, 1),
        "code": proc.returncode,
        "all_ok": bool(jobs) and all(j["ok"] for j in jobs),
        "all_points_stored": bool(receivers) and all(j["ok"] and j["metric_points"] for j in receivers),
        "failed": {j["name"]: j["problems"] for j in jobs if not j["ok"]},
        "load_before": load_before,
        "load_after": _load(),
    }


def bench_parallel(work: Path, levels: list[int], repeat: int, log=print) -> list[dict]:
    """Run every level ``repeat`` times (order alternating per repeat); one row per run."""
    project = prepare(work)
    rows, earlier = [], None
    for i in range(repeat):
        for level in levels if i % 2 == 0 else levels[::-1]:
            row = simulate_once(project, level, f"p{level}-r{i + 1}", earlier)
            earlier = project / f"results-p{level}-r{i + 1}.json"  # the next run starts from these times
            row["repeat"] = i + 1
            rows.append(row)
            log(
                f"  --parallel {level} (repeat {i + 1}): {row['wall_s']:.1f} s, exit {row['code']}, all ok: "
                f"{row['all_ok']}, every metric point stored: {row['all_points_stored']}, "
                f"load {row['load_before']} -> {row['load_after']}"
            )
            for name, problems in row["failed"].items():
                log(f"    {name}: {'; '.join(problems)}")
    return rows


def summary(rows: list[dict]) -> list[dict]:
    """Per level: runs, median and range of wall time, runs with every job ok and every point stored."""
    out = []
    for level in sorted({r["parallel"] for r in rows}):
        mine = [r for r in rows if r["parallel"] == level]
        walls = [r["wall_s"] for r in mine]
        out.append(
            {
                "parallel": level,
                "runs": len(mine),
                "median_wall_s": statistics.median(walls),
                "min_wall_s": min(walls),
                "max_wall_s": max(walls),
                "runs_all_ok": sum(r["all_ok"] for r in mine),
                "runs_all_points_stored": sum(r["all_points_stored"] for r in mine),
            }
        )
    return out


def summary_table(rows: list[dict]) -> str:
    """:func:`summary` as text, one line per level."""
    lines = ["parallel  runs  median s  min-max s      all ok  every point stored"]
    for s in summary(rows):
        lines.append(
            f"{s['parallel']:<8}  {s['runs']:<4}  {s['median_wall_s']:<8.1f}  "
            f"{s['min_wall_s']:.1f}-{s['max_wall_s']:<8.1f}  {s['runs_all_ok']:<6}  {s['runs_all_points_stored']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from generator.cli import DEFAULT_PARALLEL

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default=f"1,{DEFAULT_PARALLEL}", help="--parallel values (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per level (default: %(default)s)")
    parser.add_argument("--out", default=str(ROOT / "build" / "bench"), help="work folder (default: %(default)s)")
    args = parser.parse_args(argv)
    work = Path(args.out)
    levels = list(dict.fromkeys(int(x) for x in args.levels.split(",")))
    rows = bench_parallel(work, levels, args.repeat, log=lambda line: print(line, flush=True))
    print(summary_table(rows))
    (work / "parallel.json").write_text(json.dumps({"runs": rows, "summary": summary(rows)}, indent=2) + "\n")
    print(f"results: {work / 'parallel.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
