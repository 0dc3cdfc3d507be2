"""A source or sink stopped by a fatal error is persisted, shown by ``state`` and ``health``,
exported as a metric, and cleared when it works again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from forwarder.cli import main
from forwarder.config import SinkConfig, SourceConfig
from forwarder.errors import FatalError
from forwarder.hookspecs import hookimpl
from forwarder.logs import register_secret
from forwarder.options import SinkOptions, SourceOptions
from forwarder.runtime import Forwarder
from forwarder.source import SourceBatch
from forwarder.state.sqlite import SqliteStateStore
from tests.delivery import helpers as h

SECRET = "hec-token-9f8e7d6c5b4a"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["--config", "/nonexistent/dlpfwd.toml", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def acking(path: Path, fatal: str) -> SinkConfig:
    opts = SinkOptions()
    opts.batch.max_wait = 0.0
    return SinkConfig("splunk", "acking", h.AckSettings(str(path), ack_after_polls=1, fatal=fatal), opts)


def test_a_fatally_stopped_sink_is_unhealthy_until_it_delivers_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    register_secret(SECRET)
    state = str(tmp_path / "state")
    out = tmp_path / "acked.jsonl"
    reason = f"HTTP 400 code 7 Incorrect index (token {SECRET[:4]}... sent as Splunk {SECRET})"
    cfg = h.config(state, [h.listed(count=5)], [acking(out, reason)])
    with Forwarder(cfg, h.make_host()) as fw:
        result = fw.run_once()
        assert not result.ok
        assert fw.metrics.value("dlpfwd_stopped", role="sink", instance="splunk") == 1

    code, _, err = run_cli(capsys, "health", "--state-dir", state)
    assert code == 1
    assert "sink splunk: stopped since" in err and "Incorrect index" in err
    assert SECRET not in err
    code, stdout, _ = run_cli(capsys, "state", "--state-dir", state)
    assert code == 0 and "STOPPED since" in stdout and "Incorrect index" in stdout and SECRET not in stdout
    code, stdout, _ = run_cli(capsys, "state", "--state-dir", state, "--json")
    assert "Incorrect index" in json.loads(stdout)["sinks"]["splunk"]["stopped"]["reason"]
    store = SqliteStateStore(state)
    assert SECRET not in json.dumps(store.stopped())
    store.close()

    # The operator fixes the configuration and restarts: the backlog is delivered, the alarm clears.
    fixed = h.config(state, [h.listed(count=5)], [acking(out, "")])
    fixed.sources[0].options.poll_interval = 60  # health must not flag the source as silent meanwhile
    with Forwarder(fixed, h.make_host()) as fw:
        assert fw.metrics.value("dlpfwd_stopped", role="sink", instance="splunk") == 1  # still, until it delivers
        assert fw.run_once().ok
        assert fw.metrics.value("dlpfwd_stopped", role="sink", instance="splunk") == 0
    code, stdout, err = run_cli(capsys, "health", "--state-dir", state)
    assert code == 0 and "healthy" in stdout, err
    assert len(h.read_ids(str(out))) == 5


class FailingSource(h.ListedSource):
    """Raises FatalError (bad credentials) while ``fail`` is set in its settings' ``control`` file."""

    fail = True

    def connect(self) -> None:
        if FailingSource.fail:
            raise FatalError("login failed: AADSTS7000215 Invalid client secret provided")

    def poll(self, cursor: dict[str, Any] | None) -> Iterator[SourceBatch]:
        yield from super().poll(cursor)


class _Plugin:
    @hookimpl
    def dlpfwd_register_sources(self, register: Any) -> None:
        register("failing", FailingSource)


def test_a_fatally_stopped_source_is_unhealthy_until_it_polls_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    host = h.make_host()
    host.register_object("failing_source", _Plugin())
    host.collect(strict=True)
    state = str(tmp_path / "state")
    src = SourceConfig("audit", "failing", h.ListedSettings(count=3), SourceOptions(poll_interval=60))
    cfg = h.config(state, [src], [h.recording("s", str(tmp_path / "o"))])
    FailingSource.fail = True
    with Forwarder(cfg, host) as fw:
        assert not fw.run_once().ok
        assert fw.metrics.value("dlpfwd_stopped", role="source", instance="audit") == 1
    code, _, err = run_cli(capsys, "health", "--state-dir", state)
    assert code == 1 and "source audit: stopped since" in err and "Invalid client secret" in err
    code, stdout, _ = run_cli(capsys, "state", "--state-dir", state)
    assert "source audit" in stdout and "STOPPED" in stdout

    FailingSource.fail = False
    with Forwarder(cfg, host) as fw:
        assert fw.run_once().ok
        assert fw.metrics.value("dlpfwd_stopped", role="source", instance="audit") == 0
    code, stdout, _ = run_cli(capsys, "health", "--state-dir", state)
    assert code == 0, stdout
