"""A whole dlpfwd run (configuration file -> sample source -> normalizer -> spool -> syslog
sink) into a real rsyslogd over TLS, every message parsed back; then rsyslog is stopped,
the run reports the events undelivered and a later run delivers them."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from forwarder.config import load_config
from forwarder.plugins import PluginHost
from forwarder.runtime import Forwarder
from forwarder.schema import to_dict
from tests.syslog.certs import Pki
from tests.syslog.expected import leef_expected
from tests.syslog.helpers import sample_event
from tests.syslog.parsers import parse_leef, parse_syslog
from tests.syslog.rsyslog import Rsyslog, wait_for

pytestmark = pytest.mark.rsyslog


def write_config(tmp_path: Path, rsyslog: Rsyslog, pki: Pki, sample: Path) -> Path:
    config = tmp_path / "dlpfwd.toml"
    config.write_text(
        f"""
[forwarder]
state_dir = "{tmp_path / "state"}"

[[sources]]
name = "replay"
type = "sample"
path = "{sample}"

[[sinks]]
name = "qradar"
type = "syslog"
host = "127.0.0.1"
port = {rsyslog.tls_port}
transport = "tls"
format = "leef"
hostname = "dlpfwd-e2e"
confirm_seconds = 0.05
reconnect_initial = 0.05
[sinks.tls]
ca_bundle = "{pki.ca}"
[sinks.retry]
initial = 0.05
maximum = 0.2
"""
    )
    return config


def test_forwarder_run_into_rsyslog_over_tls(tmp_path: Path, rsyslog: Rsyslog, pki: Pki) -> None:
    run = "e2e"
    events = [sample_event(i, run=run, description=f"line one\nline^two {i}") for i in range(40)]
    sample = tmp_path / "sample.jsonl"
    sample.write_bytes(b"".join(orjson.dumps({"kind": "sample", "data": to_dict(e)}) + b"\n" for e in events))
    host = PluginHost()
    host.load()
    config = load_config(write_config(tmp_path, rsyslog, pki, sample), host)
    with Forwarder(config, host) as fw:
        result = fw.run_once()
    assert result.ok, result
    assert result.delivered.get("qradar") == 40
    wait_for(lambda: len([x for x in rsyslog.lines("tls") if f"audit:{run}-" in x]) >= 40, what="40 messages")
    lines = [x for x in rsyslog.lines("tls") if f"audit:{run}-" in x]
    by_id = {e.id: e for e in events}
    seen = set()
    for line in lines:
        fields = parse_syslog(line)
        assert fields["host"] == "dlpfwd-e2e"
        header, attrs = parse_leef(fields["msg"])
        event = by_id[attrs["eventId"]]
        expected_header, expected = leef_expected(event)
        # the source stamps its own instance and ingest time; the mapped fields are unchanged
        assert header == expected_header
        assert {k: v for k, v in attrs.items()} == expected
        seen.add(event.id)
    assert seen == set(by_id)


def test_receiver_down_keeps_events_for_the_next_run(tmp_path: Path, rsyslog: Rsyslog, pki: Pki) -> None:
    run = "down"
    events = [sample_event(i, run=run) for i in range(15)]
    sample = tmp_path / "sample.jsonl"
    sample.write_bytes(b"".join(orjson.dumps({"kind": "sample", "data": to_dict(e)}) + b"\n" for e in events))
    host = PluginHost()
    host.load()
    config = load_config(write_config(tmp_path, rsyslog, pki, sample), host)
    rsyslog.stop()
    try:
        with Forwarder(config, host) as fw:
            result = fw.run_once()
        assert not result.ok
        assert result.undelivered.get("qradar") == 15
    finally:
        rsyslog.start()
    with Forwarder(config, host) as fw:
        result = fw.run_once()
    assert result.ok, result
    assert result.delivered.get("qradar") == 15
    wait_for(lambda: len([x for x in rsyslog.lines("tls") if f"audit:{run}-" in x]) >= 15, what="15 messages")
    ids = [parse_leef(parse_syslog(x)["msg"])[1]["eventId"] for x in rsyslog.lines("tls") if f"audit:{run}-" in x]
    assert sorted(ids) == sorted(e.id for e in events)
