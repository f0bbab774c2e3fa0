"""The shipped W&B receiver's end of job (templates/nvflare-2.9/custom/jobgen_wandb_receiver.py).

Run in this process against a stand-in ``wandb`` module whose service is slow or hangs, so the
test takes seconds: the real W&B service was seen taking over 60 s to write 1,875 points on a
loaded machine, and NVFlare's ``WandBReceiver.finalize`` then killed the writer mid-way.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
import types
from pathlib import Path
from unittest import mock

import pytest
from conftest import ROOT

pytest.importorskip("nvflare")

RECEIVER = ROOT / "templates/nvflare-2.9/custom/jobgen_wandb_receiver.py"
ROWS = 40


class FakeRun:
    """A W&B run whose service writes the logged rows to ``sync_file`` only in ``finish()``."""

    def __init__(self, path: Path, mode: str):
        self.settings = types.SimpleNamespace(sync_file=str(path))
        self.path, self.mode, self.rows = path, mode, []
        path.write_text("")

    def finish(self):
        if self.mode == "hang":
            time.sleep(120)
        for row in self.rows:  # 0.05 s per row: 2 s for 40 rows, every row visible as it is written
            time.sleep(0.05)
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")


def fake_wandb(folder: Path, mode: str) -> types.ModuleType:
    module = types.ModuleType("wandb")
    state = {}

    def init(**kwargs):
        assert kwargs["dir"] == str(folder)  # the job's run folder, never the server's working folder
        state["run"] = FakeRun(folder / f"{kwargs['name'].split('-')[0]}-{kwargs['name'].split('-')[1]}.wandb", mode)
        return state["run"]

    def log(row, step):
        if step == 10 and mode == "fail":
            raise RuntimeError("the W&B service went away")
        if step == 10 and mode == "crash":
            os._exit(9)
        state["run"].rows.append({"step": step, **row})

    def teardown():  # W&B's service has ended: marked beside the run's file
        if "run" in state:
            state["run"].path.with_suffix(".teardown").write_text("")

    module.init, module.log, module.teardown = init, log, teardown
    return module


def make_receiver(tmp_path, mode, process_timeout, errors_to: Path | None = None):
    """The shipped receiver, loaded with the stand-in wandb, initialized for site-1 and site-2;
    ``errors_to``: its errors, from this process and the forked writers alike, appended to this file
    (a mock here sees nothing a writer logs)."""
    from nvflare.apis.fl_constant import ProcessType

    spec = importlib.util.spec_from_file_location(f"jobgen_wandb_receiver_{mode}", RECEIVER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.wandb = fake_wandb(tmp_path, mode)  # the writer processes (forked) call this one
    receiver = module.OrderedWandBReceiver(
        wandb_args={"project": "p", "group": "g", "job_type": "t", "name": "run"}, process_timeout=process_timeout
    )
    receiver.log_error = mock.Mock() if errors_to is None else _append_to(errors_to)
    receiver.log_info = mock.Mock()
    fl_ctx = mock.Mock()
    fl_ctx.get_process_type.return_value = ProcessType.SERVER_JOB
    fl_ctx.get_engine.return_value.get_clients.return_value = [
        types.SimpleNamespace(name="site-1"),
        types.SimpleNamespace(name="site-2"),
    ]
    fl_ctx.get_job_id.return_value = "job"
    fl_ctx.get_workspace.return_value.get_run_dir.return_value = str(tmp_path)
    receiver.initialize(fl_ctx)
    for site in ("site-1", "site-2"):
        for step in reversed(range(ROWS)):  # out of order: the receiver writes them in step order
            receiver.get_task_queue(site).put(module.WandBTask(site, "log", {"x": step}, step))
    return receiver, fl_ctx


def _append_to(path: Path):
    def log_error(fl_ctx, message, *args, **kwargs):
        with path.open("a") as f:
            f.write(message + "\n")

    return log_error


def errors_in(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def written(tmp_path, site):
    return [json.loads(line) for line in (tmp_path / f"{site}.wandb").read_text().splitlines()]


def test_a_slow_wandb_service_keeps_every_point(tmp_path):
    receiver, fl_ctx = make_receiver(tmp_path, "slow", process_timeout=1.0)
    started = time.monotonic()
    receiver.finalize(fl_ctx)
    assert time.monotonic() - started > 1.5  # longer than process_timeout, as long as rows kept coming
    for site in ("site-1", "site-2"):
        assert written(tmp_path, site) == [{"step": s, "x": s} for s in range(ROWS)]
        assert (tmp_path / f"{site}.teardown").exists()  # the writer waited for W&B's service to end
    receiver.log_error.assert_not_called()
    assert not any(p.is_alive() for p in receiver.processes.values())


def test_nvflares_own_finalize_loses_the_points_of_a_slow_wandb_service(tmp_path):
    """The cause, shown: WandBReceiver.finalize stops a writer after process_timeout in all."""
    from nvflare.app_opt.tracking.wandb.wandb_receiver import WandBReceiver

    receiver, fl_ctx = make_receiver(tmp_path, "slow", process_timeout=1.0)
    WandBReceiver.finalize(receiver, fl_ctx)
    assert len(written(tmp_path, "site-1")) < ROWS


def test_a_hung_wandb_service_is_stopped_after_process_timeout_and_named(tmp_path):
    receiver, fl_ctx = make_receiver(tmp_path, "hang", process_timeout=1.0)
    started = time.monotonic()
    receiver.finalize(fl_ctx)
    assert time.monotonic() - started < 30
    assert not any(p.is_alive() for p in receiver.processes.values())
    messages = [call.args[1] for call in receiver.log_error.call_args_list]
    assert [m.split(" made")[0] for m in messages] == ["the W&B writer of site-1", "the W&B writer of site-2"]
    assert all("made no progress for 1.0 s" in m for m in messages)


def test_a_writer_that_fails_logs_an_error_naming_its_site_and_keeps_what_it_wrote(tmp_path):
    """Its traceback would only reach the server's console; the judge reads the error log."""
    receiver, fl_ctx = make_receiver(tmp_path, "fail", process_timeout=5.0, errors_to=tmp_path / "errors.txt")
    receiver.finalize(fl_ctx)
    assert sorted(errors_in(tmp_path / "errors.txt")) == [
        f"the W&B writer of {site} failed after writing 10 of {ROWS} steps: RuntimeError: the W&B service went away"
        for site in ("site-1", "site-2")
    ]  # said once each: finalize does not add "ended with exit code" for a writer that said why
    for site in ("site-1", "site-2"):
        assert written(tmp_path, site) == [{"step": s, "x": s} for s in range(10)]  # run.finish() still ran
    writer_failed = type(receiver).finalize.__globals__["WRITER_FAILED"]  # the loaded module's constant
    assert all(p.exitcode == writer_failed for p in receiver.processes.values())


def test_a_writer_that_dies_is_named_with_its_exit_code(tmp_path):
    receiver, fl_ctx = make_receiver(tmp_path, "crash", process_timeout=5.0, errors_to=tmp_path / "errors.txt")
    receiver.finalize(fl_ctx)
    assert errors_in(tmp_path / "errors.txt") == [
        f"the W&B writer of {site} ended with exit code 9; its run may lack points" for site in ("site-1", "site-2")
    ]
