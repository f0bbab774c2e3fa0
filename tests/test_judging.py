"""Judging a run from NVFlare's own records, the first client exception, tracking servers, output safety.

Fast tests read the files in ``tests/judging/``: records NVFlare 2.9 (and 2.7) wrote in real
simulator runs, trimmed (paths shortened to ``/ws/<job>/...``):

- ``server-2-rounds.log.json`` / ``server-2-rounds-2.7.log.json``: a 2-round FedAvg job's server
  records (FedAvg, NPModelPersistor, ServerRunner); the client script printed ``Round 1 started``,
  ``Round 7 started``, an NVFlare-looking ``FedAvg - INFO - [identity=simulator_server, ...]: Round 9
  started.`` line, ``ERROR something scary`` and a fake traceback, and logged ``Round 8 started.``
  with a logger named ``FedAvg``: ``site-noisy-{in,sub}-process.log.json`` are its site-1 records.
- ``server-aborted.log.json``: a 2-round job whose clients raised in round 1 (RuntimeError).
- ``site-boom-in-process.log.json``: that client's records (in-process, ``custom/train_boom.py:5``).
- ``site-import-sub-process.log.json``: a sub-process script failing ``from mock_helper import``.
- ``site-boom-sub-process-2.7.log.json``: NVFlare 2.7, the round-1 RuntimeError in a sub-process.
- ``site-points-sent.log.json``: a sub-process metrics job's site-1 records of ``MetricsDeliveryClient``
  (counts edited to 749) and a script's print of the same words relayed by NVFlare.
- ``console-import-in-process-2.{9,7}.log``: the simulator console of the same import failure
  in-process, where the traceback exists only on the console, interleaved with other lines (2.7
  colours every line).

Simulator tests (``@pytest.mark.simulator``) run such scripts for real, 1-2 rounds each.
"""

from __future__ import annotations

import http.server
import json
import re
import shutil
import socket
import threading
from pathlib import Path

import pytest
from conftest import progress_lines, run_cli, run_main

from generator.judge import (
    FEDAVG_LOGGER,
    LogJsonTail,
    RoundTracker,
    client_exceptions,
    nvflare_errors,
    read_records,
)
from generator.layout import ManifestEntry
from generator.outputs import (
    REPORTS_MANIFEST,
    check_reports,
    check_results,
    is_our_results,
    record_report,
    write_results,
)

FIXTURES = Path(__file__).parent / "judging"


def workspace(tmp_path: Path, **files: str) -> Path:
    """A simulator workspace with fixture files: ``server="server-2-rounds.log.json"`` -> server/log.json."""
    ws = tmp_path / "ws"
    for folder, fixtures in files.items():
        target = ws / folder.replace("_", "-")
        target.mkdir(parents=True, exist_ok=True)
        for name in fixtures.split("+"):
            with open(target / "log.json", "a", encoding="utf-8") as f:
                f.write((FIXTURES / name).read_text(encoding="utf-8"))
    return ws


# --- rounds, completion and model saves: the server's FedAvg records --------------------------


@pytest.mark.parametrize("fixture", ["server-2-rounds.log.json", "server-2-rounds-2.7.log.json"])
def test_a_complete_two_round_run(tmp_path, fixture):
    tracker = RoundTracker(workspace(tmp_path, server=fixture), num_rounds=2)
    assert tracker.poll() == [1, 2]
    assert (tracker.rounds_started, tracker.saved_round, tracker.finished) == (2, 2, True)
    assert tracker.model_is_final
    assert tracker.problems() == []


def test_what_a_script_prints_or_logs_never_counts_as_a_round(tmp_path):
    """The site records of the noisy script, even if they were in the server's log, start no round."""
    ws = workspace(tmp_path, server="site-noisy-in-process.log.json+site-noisy-sub-process.log.json")
    text = (ws / "server/log.json").read_text()
    assert "Round 7 started" in text and "Round 9 started" in text and '"name": "FedAvg"' in text
    tracker = RoundTracker(ws, num_rounds=2)
    assert tracker.poll() == []
    assert tracker.rounds_started == 0 and tracker.records == 0
    assert tracker.problems() == [
        f"the FedAvg workflow never ran on the server (no record of it in {ws}/server/log.json)"
    ]


def test_script_records_mixed_into_the_server_log_change_nothing(tmp_path):
    ws = workspace(
        tmp_path, server="site-noisy-in-process.log.json+server-2-rounds.log.json+site-noisy-sub-process.log.json"
    )
    tracker = RoundTracker(ws, num_rounds=2)
    assert tracker.poll() == [1, 2]
    assert tracker.problems() == [] and tracker.model_is_final


def test_a_record_must_come_from_the_controller_on_the_server(tmp_path):
    round_5 = "\n" + "-" * 80 + "\n" + "Round 5 started.".center(80) + "\n" + "-" * 80 + "\n"
    records = [
        {"fullName": FEDAVG_LOGGER, "fl_ctx": "[identity=site-1, run=simulate_job]", "message": round_5},
        {"fullName": "FedAvg", "fl_ctx": "[identity=simulator_server, run=simulate_job]", "message": round_5},
        {"fullName": FEDAVG_LOGGER, "fl_ctx": "", "message": round_5},
    ]
    tracker = RoundTracker(tmp_path, num_rounds=6)
    assert [tracker.feed(r) for r in records] == [None, None, None]
    server = {"fullName": FEDAVG_LOGGER, "fl_ctx": "[identity=simulator_server, run=simulate_job, wf=controller]"}
    assert tracker.feed({**server, "message": round_5}) == 6


def test_an_aborted_run_did_not_finish_and_its_model_is_not_final(tmp_path):
    tracker = RoundTracker(workspace(tmp_path, server="server-aborted.log.json"), num_rounds=2)
    assert tracker.poll() == [1, 2]
    assert (tracker.rounds_started, tracker.saved_round, tracker.finished) == (2, 1, False)
    assert not tracker.model_is_final
    assert tracker.problems() == [
        f"FedAvg did not finish round 2 (no 'Finished FedAvg.' in {tmp_path}/ws/server/log.json)"
    ]


def test_too_few_rounds_and_a_server_that_never_logged(tmp_path):
    tracker = RoundTracker(workspace(tmp_path, server="server-2-rounds.log.json"), num_rounds=3)
    tracker.poll()
    assert tracker.problems() == ["2 of 3 rounds started"]
    empty = RoundTracker(tmp_path / "nothing", num_rounds=2)
    assert empty.poll() == []
    assert empty.problems() == [
        f"NVFlare's server log {tmp_path}/nothing/server/log.json was not written: the server did not start"
    ]


def test_the_log_is_read_as_it_grows_even_across_a_rotation(tmp_path):
    """Progress comes from polling: half-written lines wait, and NVFlare's 20 MB rotation loses nothing."""
    data = (FIXTURES / "server-2-rounds.log.json").read_bytes()
    cut = data.index(b"Round 1 started") - 40  # inside the record that starts round 2
    log = tmp_path / "ws/server/log.json"
    log.parent.mkdir(parents=True)
    tracker = RoundTracker(tmp_path / "ws", num_rounds=2)
    assert tracker.poll() == []  # no file yet
    log.write_bytes(data[:cut])
    assert tracker.poll() == [1]
    log.rename(log.with_name("log.json.1"))  # RotatingFileHandler: log.json -> log.json.1, a new log.json
    with open(log.with_name("log.json.1"), "ab") as f:
        f.write(data[cut : cut + 100])  # the handler finished its line in the old file first
    log.write_bytes(data[cut + 100 :])
    assert tracker.poll() == [2]
    assert tracker.problems() == []


def test_a_torn_last_line_is_read_once_the_writer_stopped(tmp_path):
    path = tmp_path / "log.json"
    path.write_text('{"message": "a"}\n{"message": "b"}')
    tail = LogJsonTail(path)
    assert [r["message"] for r in tail.read()] == ["a"]
    assert [r["message"] for r in tail.read(final=True)] == ["b"]
    assert [r["message"] for r in read_records(path)] == ["a", "b"]


# --- errors: NVFlare's own loggers only --------------------------------------------------------


def test_printed_errors_and_a_scripts_own_error_records_are_not_errors(tmp_path):
    ws = workspace(
        tmp_path,
        server="server-2-rounds.log.json",
        site_1="site-noisy-in-process.log.json",
        site_2="site-noisy-sub-process.log.json",
    )
    user_error = {"fullName": "__main__", "levelname": "ERROR", "message": "my own error", "fl_ctx": ""}
    with open(ws / "site-1/log.json", "a") as f:
        f.write(json.dumps(user_error) + "\n")
    assert "ERROR something scary" in (ws / "site-1/log.json").read_text()
    assert nvflare_errors(ws) == []
    assert client_exceptions(ws) == []  # the printed "Traceback ... ValueError: fake" has no frame in custom/


def test_nvflare_errors_name_the_site_and_the_first_error(tmp_path):
    ws = workspace(tmp_path, server="server-aborted.log.json", site_1="site-boom-in-process.log.json")
    server, site = nvflare_errors(ws)
    assert server.startswith(f"server: NVFlare logged 1 error (see {ws}/server/log.txt): Aborting current RUN")
    assert site == f"site-1: NVFlare logged 4 errors (see {ws}/site-1/log.txt): RuntimeError: boom in round 1"


IN_USE = "[Errno 98] Address already in use"


def _record(name: str, level: str, message: str) -> str:
    return json.dumps({"fullName": f"nvflare.fuel.f3.{name}", "levelname": level, "fl_ctx": "", "message": message})


def test_a_listener_nvflare_started_twice_is_no_error_but_any_other_bind_failure_is(tmp_path):
    """NVFlare 2.9 may start one listener twice (ConnManager.start_connector races its own thread);
    the second cannot bind, the first serves the job: only that address is excused."""
    site = tmp_path / "site-1"
    site.mkdir()
    starting = "Connector [CH00002 PASSIVE tcp://127.0.0.1:5001?x=1] is starting"
    lines = [
        _record("sfm.conn_manager", "INFO", starting),
        _record("sfm.conn_manager", "INFO", starting),
        _record("drivers.tcp_driver", "ERROR", "77: Error binding to  127.0.0.1:5001: " + IN_USE),
        _record(
            "sfm.conn_manager",
            "ERROR",
            "Connector [CH00002 PASSIVE tcp://127.0.0.1:5001?x=1] failed with exception OSError: "
            "[Errno 98] Address already in use",
        ),
    ]
    (site / "log.json").write_text("\n".join(lines) + "\n")
    assert nvflare_errors(tmp_path) == []
    # a port started once, or another port, that cannot be bound is an error
    other = "Error binding to  127.0.0.1:5002: [Errno 98] Address already in use"
    (site / "log.json").write_text("\n".join(lines[1:] + [_record("drivers.tcp_driver", "ERROR", other)]) + "\n")
    assert nvflare_errors(tmp_path) == [
        f"site-1: NVFlare logged 3 errors (see {site}/log.txt): 77: Error binding to  127.0.0.1:5001: "
        "[Errno 98] Address already in use"
    ]


CANCELLED = "streamed response from server.job-1 failed asynchronously: StreamError: streaming shutdown"


def _timed(name: str, level: str, message: str, at: str) -> str:
    return json.dumps(
        {"asctime": at, "fullName": f"nvflare.{name}", "levelname": level, "fl_ctx": "", "message": message}
    )


def test_a_reply_cancelled_by_the_shutdown_after_the_run_ended_is_no_error_but_one_during_the_run_is(tmp_path):
    """NVFlare 2.9 cancels a job process's outgoing streams at shutdown, at times a reply already
    delivered, and logs it as an ERROR: excused only after that log's "END_RUN fired"."""
    server = tmp_path / "server"
    server.mkdir()
    runner, adapter = "private.fed.server.server_runner.ServerRunner", "fuel.f3.cellnet.cell.Adapter"
    ended = [
        _timed(runner, "INFO", "END_RUN fired", "2026-12-01 18:05:48,488"),
        _timed("private.fed.server.fed_server.FederatedServer", "INFO", "Server app stopped.\n\n", "18:05:48,503"),
        _timed(adapter, "ERROR", CANCELLED, "2026-12-01 18:05:48,518"),
    ]
    (server / "log.json").write_text("\n".join(ended) + "\n")
    assert nvflare_errors(tmp_path) == []

    during = [_timed(adapter, "ERROR", CANCELLED, "2026-12-01 18:05:40,001")] + ended
    (server / "log.json").write_text("\n".join(during) + "\n")
    assert nvflare_errors(tmp_path) == [f"server: NVFlare logged 1 error (see {server}/log.txt): {CANCELLED}"]

    # the same shutdown stopping a stream once the messenger is down (a W&B job's client on POC)
    streamer = "fuel.f3.streaming.byte_streamer"
    unsent = (
        "Tx[SID:1796260939397032 to server for aux_communication/ObjectStreamer.Abort] failed to notify stream "
        "error to target server: Messenger is not running"
    )
    (server / "log.json").write_text("\n".join(ended + [_timed(streamer, "ERROR", unsent, "18:05:49,000")]) + "\n")
    assert nvflare_errors(tmp_path) == []
    early = [_timed(streamer, "ERROR", unsent, "2026-12-01 18:05:40,001")] + ended
    (server / "log.json").write_text("\n".join(early) + "\n")
    assert nvflare_errors(tmp_path) == [f"server: NVFlare logged 1 error (see {server}/log.txt): {unsent}"]

    other = "streamed response from server.job-1 failed asynchronously: StreamError: timeout"
    (server / "log.json").write_text("\n".join(ended + [_timed(adapter, "ERROR", other, "18:05:49,000")]) + "\n")
    assert nvflare_errors(tmp_path) == [f"server: NVFlare logged 1 error (see {server}/log.txt): {other}"]


# --- the exception that ended a client's script -------------------------------------------------------


def test_the_exception_of_an_in_process_script_with_its_file_and_line(tmp_path):
    ws = workspace(tmp_path, site_1="site-boom-in-process.log.json")
    assert client_exceptions(ws) == ["site-1: RuntimeError: boom in round 1 (custom/train_boom.py:5)"]


def test_the_exception_a_sub_process_script_printed_line_by_line(tmp_path):
    ws = workspace(tmp_path, site_1="site-import-sub-process.log.json", site_2="site-import-sub-process.log.json")
    assert client_exceptions(ws) == [
        "site-1, site-2: ModuleNotFoundError: No module named 'mock_helper' (custom/train_import.py:3)"
    ]


def test_the_exception_a_sub_process_script_printed_on_nvflare_2_7(tmp_path):
    """NVFlare 2.7's SubprocessLauncher relays the script's output as its own INFO records."""
    ws = workspace(tmp_path, site_1="site-boom-sub-process-2.7.log.json")
    assert client_exceptions(ws) == ["site-1: RuntimeError: boom in round 1 (custom/train_boom.py:5)"]


def test_a_traceback_the_script_printed_before_it_failed_is_not_the_reason(tmp_path):
    """A script that printed a handled error's traceback (custom/ frames too), then raised: the raise is the reason."""
    ws = workspace(tmp_path, site_1="site-boom-in-process.log.json")
    relayed = "nvflare.app_common.executors.client_api.external_process_backend.ExternalProcessBackend"
    printed = [
        "Traceback (most recent call last):",
        '  File "/fake/site-1/simulate_job/app_site-1/custom/t/not_me.py", line 99, in f',
        "FakeError: this traceback was only printed",
    ]
    log = ws / "site-1/log.json"
    records = [{"fullName": relayed, "levelname": "INFO", "fl_ctx": "", "message": m} for m in printed]
    log.write_text("".join(json.dumps(r) + "\n" for r in records) + log.read_text())
    assert client_exceptions(ws) == ["site-1: RuntimeError: boom in round 1 (custom/train_boom.py:5)"]


@pytest.mark.parametrize("line", ["2.9", "2.7"])
def test_an_import_failure_in_process_is_found_on_the_console(tmp_path, line):
    """The trainer thread dies at import; its traceback is only on the console, between other lines."""
    ws = tmp_path / "ws"
    for site in ("site-1", "site-2"):
        (ws / site).mkdir(parents=True)
    console = FIXTURES / f"console-import-in-process-{line}.log"
    assert client_exceptions(ws, console) == [
        "site-1, site-2: ModuleNotFoundError: No module named 'mock_helper' (custom/train_import.py:3)"
    ]


ARGPARSE = (
    "site-1, site-2: strict.py: error: unrecognized arguments: --update-type diff (argparse exited the script: its "
    "parse_args() refused the job's script_args; parse_known_args() ignores what it does not know)"
)


def test_an_argparse_refusal_of_script_args_is_the_reason(tmp_path):
    """Trial 46: a strict parse_args() exits 2 with no traceback; simulate named six follow-on errors.
    Sub-process: NVFlare 2.9 relays the script's stderr as ExternalProcessBackend INFO records (as
    seen in a run); in-process: the console alone holds it, with no site named."""
    ws = tmp_path / "ws"
    relayed = "nvflare.app_common.executors.client_api.external_process_backend.ExternalProcessBackend"
    usage = "usage: strict.py [-h] [--lr LR]"
    error = "strict.py: error: unrecognized arguments: --update-type diff"
    for site in ("site-1", "site-2"):
        (ws / site).mkdir(parents=True)
        records = [{"fullName": relayed, "levelname": "INFO", "fl_ctx": "", "message": m} for m in (usage, error)]
        (ws / site / "log.json").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert client_exceptions(ws) == [ARGPARSE]

    for site in ("site-1", "site-2"):
        (ws / site / "log.json").write_text("")
    console = tmp_path / "console.log"
    console.write_text(f"2026-12-03 13:03:58,100 - INFO - something else\n{usage}\n{error}\n{usage}\n{error}\n")
    assert client_exceptions(ws, console) == [ARGPARSE]
    assert client_exceptions(ws) == []  # without the console: nothing to go on


# --- missing metric points: which leg lost them ---------------------------------------------------


def test_the_points_a_client_job_sent_come_from_its_delivery_component_only(tmp_path):
    """The last count MetricsDeliveryClient logged; a script's print of the same words is not it."""
    from generator.judge import PointsSent, points_sent

    ws = workspace(tmp_path, site_1="site-points-sent.log.json")
    assert points_sent(ws / "site-1") == PointsSent(sent=749, server_had=749)
    assert points_sent(ws / "site-2") is None  # no log: nothing to say


def test_missing_points_say_where_they_were_lost(tmp_path):
    from generator.judge import PointsSent, points_sent
    from generator.simulate import _metric_problems

    ws = workspace(tmp_path, site_1="site-points-sent.log.json")
    info = ManifestEntry("2.9", 1, 2, "external_process", "t.py", expect={"metric_points_per_site": {"x": 750}})
    # the server stored all the client job sent: lost between the script and the client job
    (before,) = _metric_problems(info, {"site-1": {"x": 749}}, ws)
    assert before.startswith("site-1 stored 749 'x' points, expected 750 (site-1's client job sent the server")
    assert "749 in all (site-1/log.json): the rest never reached it from the training script" in before
    # the server had every point the client job sent, but fewer values were stored: lost in the receiver
    (after,) = _metric_problems(info, {"site-1": {"x": 700}}, ws)
    assert after == (
        "site-1 stored 700 'x' points, expected 750 (the server had all 749 points site-1's client job sent "
        "(site-1/log.json); its receiver stored 700 values: the rest were lost in the server's receiver or its "
        "store; see server/log.txt)"
    )
    # more values than events (W&B's log({a, b}) is one event, two values): the legs cannot be told apart
    (both,) = _metric_problems(info, {"site-1": {"x": 749, "y": 10}}, ws)
    assert (
        "749 in all (site-1/log.json): the rest never reached it from the training script (or, as some of its "
        "points carry several values, in the server's receiver or its store; see server/log.txt)" in both
    )
    assert "(or, as some" not in before  # one value per event: the script's leg, or the script logged fewer
    assert before.endswith(
        ", or the script logged fewer than expect.metric_points_per_site says; in a sub-process "
        "job NVFlare's Client API sends each point from the script's process fire-and-forget)"
    )
    # in-process there is no leg from the script's process: the receiver lost them, however many values
    inproc = ManifestEntry("2.9", 1, 2, "in_process", "t.py", expect={"metric_points_per_site": {"x": 750}})
    (receiver,) = _metric_problems(inproc, {"site-1": {"x": 749, "y": 10}}, ws)
    assert receiver == (
        "site-1 stored 749 'x' points, expected 750 (the server had all 749 points site-1's client job sent "
        "(site-1/log.json); its receiver stored 759 values: the rest were lost in the server's receiver or its "
        "store; see server/log.txt)"
    )
    # in-process, every point sent stored as one value: nothing was lost, the expectation is off (trial 40)
    (off,) = _metric_problems(inproc, {"site-1": {"x": 749}}, ws)
    assert off == (
        "site-1 stored 749 'x' points, expected 750 (nothing was lost on the way: site-1's client job sent 749 "
        "points in all (site-1/log.json), the server had them and its receiver stored 749 values: the script "
        "logged fewer than expect.metric_points_per_site says)"
    )
    # the client job gave up waiting with points the server never had: lost between the client job and the server
    log = ws / "site-1/log.json"
    gave_up = {
        "fullName": "jobgen_metrics_delivery.MetricsDeliveryClient",
        "levelname": "WARNING",
        "message": "the server has 740 of 749 metric points of this site and got none for 30.0 s: ending the run "
        "without the rest",
    }
    log.write_text(log.read_text() + json.dumps(gave_up) + "\n")
    assert points_sent(ws / "site-1") == PointsSent(sent=749, server_had=740)
    (lost,) = _metric_problems(info, {"site-1": {"x": 740}}, ws)
    assert lost == (
        "site-1 stored 740 'x' points, expected 750 (site-1's client job sent 749 points in all (site-1/log.json); "
        "the server had 740 of them when the run ended: the rest were lost between the client job and the server)"
    )


# --- the table row of a failed job --------------------------------------------------------------


def test_a_failed_jobs_model_is_shown_as_not_final(tmp_path):
    import time

    import numpy as np

    from generator.reporter import model_cell
    from generator.simulate import JobResult, judge_run

    ws = workspace(tmp_path, server="server-aborted.log.json")
    (ws / "server/simulate_job/models").mkdir(parents=True)
    np.save(ws / "server/simulate_job/models/server.npy", np.arange(9, dtype=np.float32).reshape(3, 3) + 1)
    result = JobResult(name="boom", rounds=2)
    judge_run(result, ws, RoundTracker(ws, 2), code=2, started_epoch=time.time() - 60)
    assert result.final_model is None
    assert result.last_model == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert model_cell(result) == "not final (after round 1 of 2): [[1 2 3], [4 5 6], [7 8 9]]"
    assert [p.message for p in result.problems[:3]] == [
        "nvflare simulator exited with code 2",
        f"FedAvg did not finish round 2 (no 'Finished FedAvg.' in {ws}/server/log.json)",
        f"the model saved at {ws}/server/simulate_job/models/server.npy is not final: it was saved after round 1 of 2",
    ]

    done = workspace(tmp_path / "ok", server="server-2-rounds.log.json")
    shutil.copytree(ws / "server/simulate_job", done / "server/simulate_job")
    ok = JobResult(name="ok", rounds=2)
    judge_run(ok, done, RoundTracker(done, 2), code=0, started_epoch=time.time() - 60)
    assert (ok.problems, ok.final_model, ok.model_round) == ([], [[1, 2, 3], [4, 5, 6], [7, 8, 9]], 2)
    assert model_cell(ok) == "[[1 2 3], [4 5 6], [7 8 9]]"


# --- tracking servers ----------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Answer(http.server.BaseHTTPRequestHandler):
    status, body, content_type = 200, b"<html>not mlflow</html>", "text/html"

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(self.status)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    """Start a loopback HTTP server answering every GET with (status, body, content type)."""
    servers = []

    def start(status: int, body: bytes, content_type: str) -> str:
        handler = type("Handler", (_Answer,), {"status": status, "body": body, "content_type": content_type})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _entry(**fields) -> ManifestEntry:
    """A manifest entry of a small in-process job, with ``fields`` set."""
    return ManifestEntry(
        nvflare_version="2.9", num_clients=2, num_rounds=1, execution_mode="in_process", script="x.py", **fields
    )


def test_a_tracking_server_that_is_not_there(tmp_path):
    from generator.metrics import probe_mlflow_server
    from generator.simulate import tracking_server_problem

    uri = f"http://127.0.0.1:{closed_port()}"
    assert probe_mlflow_server(uri) == "Connection refused"
    info = _entry(receiver="mlflow", tracking_uri=uri)
    assert tracking_server_problem(info, tmp_path) == (
        f"the MLflow tracking server {uri} (receiver.tracking_uri) cannot be used: Connection refused; "
        "the job was not started (start the server, or fix tracking_uri)"
    )
    assert probe_mlflow_server(uri.replace("http:", "https:")) == "Connection refused"


def test_a_server_that_accepts_but_never_answers():
    from generator.metrics import probe_mlflow_server

    with socket.socket() as listener:  # the kernel accepts the connection; nobody reads or answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        assert probe_mlflow_server(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=0.5) == (
            "no answer within 0.5 s"
        )


def test_name_resolution_that_hangs_is_abandoned(monkeypatch):
    """getaddrinfo has no timeout of its own: the probe gives up on its thread."""
    from generator.metrics import probe_mlflow_server

    release = threading.Event()
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: release.wait(30) and [])
    try:
        assert probe_mlflow_server("http://tracking.example:5000", timeout=0.5) == "no answer within 0.5 s"
    finally:
        release.set()


@pytest.mark.parametrize(
    ("status", "body", "content_type", "why"),
    [
        (200, b"<html>hello</html>", "text/html", "it answered HTTP 200 without MLflow's JSON"),
        (404, b"not found", "text/plain", "it answered HTTP 404 without MLflow's JSON"),
        (401, b"{}", "application/json", "it refused the request (HTTP 401): set MLflow's credentials"),
        (200, b'{"ok": true}', "application/json", "it answered JSON without MLflow's fields (got keys: ok)"),
        (200, b'{"experiments": [{"experiment_id": "0", "name": "Default"}]}', "application/json", None),
        (200, b"{}", "application/json", None),  # MLflow's protobuf JSON when no experiment exists
        (200, b'{"experiments": []}', "application/json", None),
    ],
)
def test_a_server_must_answer_as_mlflow_does(http_server, status, body, content_type, why):
    from generator.metrics import probe_mlflow_server

    found = probe_mlflow_server(http_server(status, body, content_type))
    assert (found or "").startswith(why or "") and (found is None) == (why is None)


def test_an_https_uri_to_a_plain_http_server(http_server):
    from generator.metrics import probe_mlflow_server

    uri = http_server(200, b"{}", "application/json").replace("http:", "https:")
    assert probe_mlflow_server(uri) == "TLS handshake failed"


def test_stores_without_a_server_are_not_probed(tmp_path):
    from generator.simulate import tracking_server_problem

    assert tracking_server_problem(_entry(receiver="mlflow", tracking_uri=None), tmp_path) is None
    assert tracking_server_problem(_entry(receiver="mlflow", tracking_uri="sqlite:///x/mlflow.db"), tmp_path) is None
    assert tracking_server_problem(_entry(receiver="tensorboard"), tmp_path) is None


def test_the_read_back_is_bounded_and_fails_cleanly(monkeypatch):
    import os

    from generator.errors import SimulationError
    from generator.metrics import bounded_mlflow_requests, read_mlflow

    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")
    with bounded_mlflow_requests():
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"  # the user's own value is kept
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    uri = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(SimulationError, match=f"cannot read the metrics back from the MLflow store {uri}: "):
        read_mlflow(uri)


# --- output safety: --results and --reports ------------------------------------------------------


def test_results_are_written_over_our_own_results_only(tmp_path):
    path = tmp_path / "build/results.json"
    assert check_results(path) == []
    write_results(path, [{"name": "a", "ok": True}], "simulate")
    assert json.loads(path.read_text()) == [
        {"generator": "nvflare-jobgen", "engine": "simulate", "name": "a", "ok": True}
    ]
    assert is_our_results(path) and check_results(path) == []
    plain = tmp_path / "plain"
    plain.write_text("x")
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # as open() makes files, not 0600
    legacy = tmp_path / "legacy.json"  # unmarked entries that have every key of RESULT_KEYS
    entry = dict.fromkeys(["name", "ok", "rounds", "rounds_started", "wall_seconds", "final_model", "workspace"])
    legacy.write_text(json.dumps([{**entry, "log": "", "problems": []}]))
    assert check_results(legacy) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("jobs:\n  - name: a\n", "holds something nvflare-jobgen did not write"),
        ('[{"name": "mine"}]', "holds something nvflare-jobgen did not write"),
        ("[]", "holds something nvflare-jobgen did not write"),
    ],
)
def test_results_never_overwrite_a_users_file(tmp_path, content, message):
    path = tmp_path / "jobs.yaml"
    path.write_text(content)
    (problem,) = check_results(path)
    assert str(problem).startswith(f"{path}: {message}")


def test_results_path_kinds_that_are_refused(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "target.json").write_text("[]")
    (tmp_path / "link.json").symlink_to(tmp_path / "target.json")
    (tmp_path / "file").write_text("x")
    managed = {"the workspaces folder": tmp_path / "build/workspaces"}
    cases = {
        "folder": "--results is a folder, not a file",
        "link.json": "--results is a symbolic link",
        "file/results.json": f"--results: {tmp_path}/file is a file, not a folder",
        "build/workspaces/a/results.json": f"--results is inside the workspaces folder {tmp_path}/build/workspaces",
    }
    for rel, message in cases.items():
        (problem,) = check_results(tmp_path / rel, managed)
        assert problem.message.startswith(message), problem


def plot(path: Path, job: str) -> None:
    from generator.plot import plot_metrics

    plot_metrics(job, {"site-1": {"loss": [(0, 1.0), (1, 0.5)]}}, path)


def test_reports_never_overwrite_a_png_we_did_not_write(tmp_path):
    reports = tmp_path / "reports"
    assert check_reports(reports, ["a"]) == []
    reports.mkdir()
    (reports / "a.png").write_bytes(b"\x89PNG my holiday photo")
    (reports / "notes.txt").write_text("mine")
    (problem,) = check_reports(reports, ["a", "b"])
    assert str(problem) == (
        f"{reports}/a.png: was not written by nvflare-jobgen; refusing to overwrite it: "
        "move it away or choose another --reports"
    )
    assert check_reports(reports, []) == []  # no metrics job: nothing would be written


def test_reports_we_wrote_are_replaced_unless_edited(tmp_path):
    reports = tmp_path / "reports"
    plot(reports / "a.png", "a")
    record_report(reports, reports / "a.png")
    assert json.loads((reports / REPORTS_MANIFEST).read_text())["files"].keys() == {"a.png"}
    assert check_reports(reports, ["a"]) == []
    with open(reports / "a.png", "ab") as f:
        f.write(b"edited")
    (problem,) = check_reports(reports, ["a"])
    assert problem.message.startswith("changed since nvflare-jobgen wrote it; refusing to overwrite it")


def test_plots_from_before_the_manifest_are_recognised_by_their_text_chunks(tmp_path):
    reports = tmp_path / "reports"
    plot(reports / "a.png", "a")
    plot(reports / "b.png", "other-job")
    assert check_reports(reports, ["a"]) == []
    (problem,) = check_reports(reports, ["b"])
    assert problem.message.startswith("was not written by nvflare-jobgen")


def test_a_foreign_manifest_or_a_file_for_a_folder_is_refused(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / REPORTS_MANIFEST).write_text('{"mine": true}')
    (problem,) = check_reports(reports, ["a"])
    assert problem.message.startswith("is not a reports manifest nvflare-jobgen wrote")
    (tmp_path / "plain").write_text("x")
    (problem,) = check_reports(tmp_path / "plain", ["a"])
    assert problem.message == f"--reports: {tmp_path}/plain is a file, not a folder"


def test_view_reads_the_marked_results(tmp_path):
    from generator.viewers import pick_job

    path = tmp_path / "results.json"
    write_results(path, [{"name": "ml", "receiver": "mlflow", "store": "sqlite:////ws/mlflow.db"}], "simulate")
    assert pick_job(path, "mlflow")["name"] == "ml"


# --- the CLI: bad options and unsafe outputs exit 2 before any job runs -----------------------------


@pytest.fixture
def generated(project):
    (project / "jobs.yaml").write_text(
        "jobs:\n"
        "  - name: np-full\n    script: train_full.py\n"
        "  - name: np-metrics\n    script: train_metrics.py\n    receiver: {type: mlflow}\n"
    )
    assert run_main(project, "generate").returncode == 0
    return project


def test_results_over_jobs_yaml_is_refused_before_any_job_runs(generated, cli):
    before = (generated / "jobs.yaml").read_bytes()
    code, out, err = cli("simulate", "--results", "jobs.yaml")
    assert (code, out) == (2, [])
    assert err == [
        "jobs.yaml: holds something nvflare-jobgen did not write (not a results list marked "
        '"generator": "nvflare-jobgen"); refusing to overwrite it: move it away or choose another --results'
    ]
    assert (generated / "jobs.yaml").read_bytes() == before
    assert not (generated / "build/workspaces").exists()


def test_a_users_png_in_the_reports_folder_is_refused_before_any_job_runs(generated, cli):
    (generated / "build/reports").mkdir(parents=True)
    (generated / "build/reports/np-metrics.png").write_bytes(b"mine")
    code, _, err = cli("simulate")
    assert code == 2
    assert err == [
        "build/reports/np-metrics.png: was not written by nvflare-jobgen; refusing to overwrite it: "
        "move it away or choose another --reports"
    ]
    assert not (generated / "build/workspaces").exists()


def test_the_default_out_folder_missing_is_told_make_generate(project, cli):
    assert cli("simulate", "--out", "./build/jobs/") == (
        2,
        [],
        ["build/jobs: --out: no such folder: run `make generate` first"],
    )


def test_a_missing_out_folder_and_an_unknown_job_are_bad_options(generated, cli):
    assert cli("simulate", "--out", "missing-folder") == (
        2,
        [],
        ["missing-folder: --out: no such folder: run `make generate OUT=missing-folder` first"],
    )
    assert cli("simulate", "--out", "jobs.yaml") == (
        2,
        [],
        ["jobs.yaml: --out: is a file, not a folder of generated jobs: run `make generate OUT=jobs.yaml` first"],
    )

    assert cli("simulate", "--job", "np-ful") == (
        2,
        [],
        ["build/jobs: --job 'np-ful': no generated job of that name; did you mean 'np-full'?"],
    )
    assert cli("simulate", "--job", "zzz") == (
        2,
        [],
        ["build/jobs: --job 'zzz': no generated job of that name (have: np-full, np-metrics)"],
    )


# --- real runs ------------------------------------------------------------------------------------

NOISY = """import logging
import sys

import nvflare.client as flare

print("Round 1 started")
print("Round 7 started")
print("2026-01-01 00:00:00,000 - FedAvg - INFO - [identity=simulator_server, run=simulate_job, wf=controller]: "
      "Round 9 started.")
print("ERROR something scary")
print('Traceback (most recent call last):\\n  File "x.py", line 1\\nValueError: fake')
sys.stderr.write("Round 5 started\\n")
logging.getLogger("nvflare.app_common.workflows.fedavg.FedAvg").info("Round 8 started.")
logging.getLogger("train").error("ERROR: the script's own error record")
flare.init()
while flare.is_running():
    received = flare.receive()
    print(f"Round {received.current_round + 3} started")
    flare.send(flare.FLModel(params={"numpy_key": received.params["numpy_key"] + 1}, params_type="FULL"))
"""

FAST = "    num_rounds: 2\n    task_check_period: 0.05\n    server: {task_request_interval: 0.1}\n"


@pytest.mark.simulator
def test_a_script_printing_rounds_and_errors_does_not_change_the_verdict(project):
    """2 rounds, both modes: ok with 2/2 although the script prints rounds 1-10, ERROR and a traceback."""
    (project / "client_scripts/train_noisy.py").write_text(NOISY)
    (project / "jobs.yaml").write_text(
        "jobs:\n"
        f"  - name: noisy-in\n    script: train_noisy.py\n{FAST}"
        f"  - name: noisy-sub\n    script: train_noisy.py\n    launch_external_process: true\n{FAST}"
    )
    assert run_cli(project, "generate").returncode == 0

    result = run_cli(project, "simulate", timeout=600)

    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("noisy-in", "noisy-sub"):
        assert "Round 7 started" in (project / f"build/workspaces/{name}/site-1/log.txt").read_text()
        progress = progress_lines(result.stdout, name)
        assert progress == [f"  {name}: round 1 of 2", f"  {name}: round 2 of 2"]
    results = {r["name"]: r for r in json.loads((project / "build/results.json").read_text())}
    for r in results.values():
        assert (r["ok"], r["rounds_started"], r["problems"]) == (True, 2, [])
        assert r["final_model"] == [[3, 4, 5], [6, 7, 8], [9, 10, 11]]
    assert "noisy-sub  ok      2/2" in result.stdout


@pytest.mark.simulator
def test_a_failing_client_shows_its_exception_and_no_final_model(project):
    """Import failure in both modes (sub-process: before HELLO), and a raise in round 1 in-process."""
    (project / "client_scripts/train_import.py").write_text(
        "import nvflare.client as flare\n\nfrom jobgen_missing_helper import helper  # noqa\n\nflare.init()\n"
    )
    (project / "client_scripts/train_boom.py").write_text(
        "import nvflare.client as flare\n\n\n"
        "def train(x):\n    raise RuntimeError('boom in round 1')\n\n\n"
        "flare.init()\n"
        "while flare.is_running():\n"
        "    received = flare.receive()\n"
        "    if received.current_round == 1:\n"
        "        train(received.params)\n"
        "    flare.send(flare.FLModel(params={'numpy_key': received.params['numpy_key'] + 1}, params_type='FULL'))\n"
    )
    (project / "jobs.yaml").write_text(
        "jobs:\n"
        f"  - name: import-in\n    script: train_import.py\n{FAST}"
        f"  - name: import-sub\n    script: train_import.py\n    launch_external_process: true\n{FAST}"
        f"  - name: boom-in\n    script: train_boom.py\n{FAST}"
    )
    assert run_cli(project, "generate").returncode == 0

    result = run_cli(project, "simulate", timeout=900)

    assert result.returncode == 1
    missing = "ModuleNotFoundError: No module named 'jobgen_missing_helper' (custom/train_import.py:3)"
    # Both sites fail alike; on a busy machine the run may end before the second site has run its script.
    for job in ("import-in", "import-sub"):
        sites = r"(site-1, site-2|site-1|site-2)"
        assert re.search(rf"^{job}: {sites}: {re.escape(missing)}$", result.stderr, re.M), result.stderr
    boom = "boom-in: site-1, site-2: RuntimeError: boom in round 1 (custom/train_boom.py:5)"
    assert boom in result.stderr.splitlines()
    results = {r["name"]: r for r in json.loads((project / "build/results.json").read_text())}
    assert results["boom-in"]["problems"][0] == boom.removeprefix("boom-in: ")
    assert results["boom-in"]["final_model"] is None
    assert results["boom-in"]["last_model"] == [[2, 3, 4], [5, 6, 7], [8, 9, 10]]
    row = next(line for line in result.stdout.splitlines() if line.startswith("boom-in "))
    assert "FAILED  2/2" in row and "not final (after round 1 of 2): [[2 3 4], [5 6 7], [8 9 10]]" in row


@pytest.mark.simulator
def test_a_dead_tracking_server_fails_its_job_quickly_and_the_next_job_runs(project):
    uri = f"http://127.0.0.1:{closed_port()}"
    (project / "jobs.yaml").write_text(
        "jobs:\n"
        f"  - name: dead-mlflow\n    script: train_metrics.py\n    receiver: {{type: mlflow, tracking_uri: '{uri}'}}\n"
        f"{FAST}"
        f"  - name: after\n    script: train_full.py\n{FAST}"
    )
    assert run_cli(project, "generate").returncode == 0

    result = run_cli(project, "simulate", timeout=600)

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"dead-mlflow: the MLflow tracking server {uri} (receiver.tracking_uri) cannot be used: Connection refused; "
        "the job was not started (start the server, or fix tracking_uri)"
    ]
    (status,) = [line for line in result.stdout.splitlines() if line.startswith("dead-mlflow: FAILED")]
    assert status.endswith("; log: none (not started)")
    results = {r["name"]: r for r in json.loads((project / "build/results.json").read_text())}
    assert results["dead-mlflow"]["ok"] is False and results["dead-mlflow"]["log"] == ""
    assert not (project / "build/workspaces/_logs/dead-mlflow.log").exists()
    assert not (project / "build/workspaces/dead-mlflow").exists()  # no workspace for a job never started
    assert results["after"]["ok"] is True and results["after"]["final_model"] == [[3, 4, 5], [6, 7, 8], [9, 10, 11]]


def test_a_tracking_server_problem_never_shows_its_password():
    from generator.simulate import tracking_server_problem

    info = _entry(receiver="mlflow", tracking_uri=f"http://me:s3cret@127.0.0.1:{closed_port()}/mlflow")
    why = tracking_server_problem(info, Path("unused"), timeout=1)
    assert why.startswith("the MLflow tracking server http://me:***@127.0.0.1:") and "s3cret" not in why


def test_an_expected_key_the_script_does_not_log_is_named_as_such_not_as_lost_points(tmp_path):
    """A trial's ``expect.metric_points_per_site: {loss: 80}`` for a script logging ``train_loss`` was
    blamed on the server's receiver ("the rest were lost ..."), though every point was stored."""
    from generator.simulate import _metric_problems

    ws = workspace(tmp_path, site_1="site-points-sent.log.json")
    info = ManifestEntry("2.9", 1, 2, "in_process", "t.py", expect={"metric_points_per_site": {"loss": 80}})
    (problem,) = _metric_problems(info, {"site-1": {"train_loss": 80, "lr": 4}}, ws)
    assert problem == (
        "site-1 stored no 'loss' point, expected 80 (expect.metric_points_per_site): the keys it stored are "
        "lr=4, train_loss=80; did you mean 'train_loss'?"
    )
    (unlike,) = _metric_problems(info, {"site-1": {"accuracy": 80}}, ws)
    assert unlike.endswith("the keys it stored are accuracy=80")  # nothing close: no guess
    nothing = _metric_problems(info, {"site-1": {}}, ws)
    assert nothing[0] == "no metric from site-1 arrived in the receiver's store"  # no key at all: as before
    assert nothing[1].startswith("site-1 stored 0 'loss' points, expected 80")


def test_a_stopped_run_says_where_it_was_by_its_records(tmp_path):
    tracker = RoundTracker(tmp_path, num_rounds=5, num_clients=2)
    assert tracker.where_stopped() == "the FedAvg workflow had not started"
    tracker.records, tracker.rounds_started = 3, 2
    tracker.trained = {1: ["site-1", "site-2"], 2: ["site-2"]}
    assert tracker.where_stopped() == "in round 2 of 5, waiting for site-1 (the server had no result from it)"
    tracker.trained[2].append("site-1")
    assert tracker.where_stopped() == "in round 2 of 5"  # every result in: the workflow itself hung
    named = RoundTracker(tmp_path, num_rounds=1, num_clients=2, sites=["a", "b"], records=1, rounds_started=1)
    assert named.where_stopped() == "in round 1 of 1, waiting for a, b (the server had no result from them)"
    tracker.finished = True
    assert tracker.where_stopped() == "the FedAvg workflow had finished; the run had not ended"
    # from a real run's records: FedAvg's results name their site in fl_ctx (peer=...)
    ran = RoundTracker(tmp_path / "ran", num_rounds=1, num_clients=2)
    (tmp_path / "ran/server").mkdir(parents=True)
    ctx = "[identity=simulator_server, run=simulate_job, wf=controller, peer=site-2, task_name=train]"
    records = [
        {
            "fullName": FEDAVG_LOGGER,
            "fl_ctx": "[identity=simulator_server, wf=controller]",
            "message": "Round 0 started.",
        },
        {
            "fullName": "nvflare.private.fed.server.server_runner.ServerRunner",
            "fl_ctx": ctx,
            "message": "finished processing client result by controller",
        },
    ]
    (tmp_path / "ran/server/log.json").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert ran.poll() == [1]
    assert ran.where_stopped() == "in round 1 of 1, waiting for site-1 (the server had no result from it)"
