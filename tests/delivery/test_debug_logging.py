"""``--log-level debug run --once`` says what each poll and each delivered batch did (counts
only: no event contents)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from forwarder.delivery import Drainer
from forwarder.metrics import Metrics
from forwarder.options import SinkOptions
from forwarder.sink import SinkContext
from forwarder.state.sqlite import SqliteStateStore
from tests.delivery import helpers as h

MARK = "title-that-must-not-be-logged-5e2a"


def test_debug_output_names_a_poll_and_a_delivered_batch(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    lines = [json.dumps({"kind": "sample", "data": {"id": f"e{i}", "title": MARK}}) for i in range(4)]
    events.write_text("\n".join(lines) + "\n")
    config = h.sample_to_file_config(tmp_path, events)
    code = "from forwarder.cli import main; raise SystemExit(main())"
    proc = subprocess.run(
        [sys.executable, "-c", code, "--log-level", "debug", "--config", str(config), "run", "--once"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    assert "source demo: poll done" in err and "4 record(s) read, 4 spooled" in err and "cursor advanced" in err
    assert "sink archive: batch of 4 event(s)" in err and "delivered 4" in err
    assert "sink archive: connected" in err and "source demo: connected" in err
    assert MARK not in err


def test_breaker_transitions_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = [1000.0]
    store = SqliteStateStore(str(tmp_path))
    store.register_sink("s")
    options = SinkOptions()
    options.retry.breaker_failures = 2
    options.retry.breaker_cooldown = 30.0
    sink = h.RecordingSink("s", h.RecordingSettings(str(tmp_path / "o")), SinkContext("s", logging.getLogger("t")))
    drainer = Drainer("s", sink, options, store, Metrics(), clock=lambda: clock[0])
    caplog.set_level(logging.INFO, logger="dlpfwd.sink.s")
    drainer.gate.failed("HTTP 503")
    drainer._note_breaker()
    assert "circuit breaker" not in caplog.text  # one failure: still closed
    drainer.gate.failed("HTTP 503")
    drainer._note_breaker()
    assert "sink s: circuit breaker closed -> open after 2 failed batch(es); next probe in 30.0 s" in caplog.text
    clock[0] += 31
    assert drainer.gate.wait_time() == 0  # cooldown over: half-open probe
    drainer._note_breaker()
    assert "circuit breaker open -> half_open" in caplog.text
    drainer.gate.succeeded()
    drainer._note_breaker()
    assert "circuit breaker half_open -> closed" in caplog.text
    store.close()
