"""End to end: the sample source through the Forwarder runtime into the HEC emulator; the CLI's
``check --probe``; plugin registration."""

from __future__ import annotations

import orjson
import pytest

from emulators.hec.app import DEFAULT_TOKEN, HecApp, TokenConfig
from emulators.httpd import EmulatorServer
from forwarder.cli import main
from forwarder.config import load_config
from forwarder.plugins import PluginHost
from forwarder.runtime import Forwarder
from forwarder.schema import to_dict
from tests.splunk.conftest import make_event

KINDS = ["audit", "alert", "incident", "audit", "audit"]


@pytest.fixture
def host():
    return PluginHost().load(allow=["sample", "splunk_hec", "emulator_hec"])


@pytest.fixture
def emulator(tmp_path):
    app = HecApp({DEFAULT_TOKEN: TokenConfig(indexes=["dlp"], default_index="dlp", use_ack=True)}, ack_delay=0.05)
    with EmulatorServer(app, cert_dir=tmp_path / "certs") as server:
        yield app, server


def write_config(tmp_path, server, monkeypatch, n=10, index="dlp") -> str:
    monkeypatch.setenv("TEST_HEC_TOKEN", DEFAULT_TOKEN)
    records = tmp_path / "records.jsonl"
    with records.open("w") as f:
        for i in range(n):
            event = make_event(i, kind=KINDS[i % len(KINDS)])
            f.write(orjson.dumps({"kind": "sample", "data": to_dict(event)}).decode() + "\n")
    path = tmp_path / "dlpfwd.toml"
    path.write_text(
        f"""
[forwarder]
state_dir = "{tmp_path / "state"}"

[[sources]]
name = "lab"
type = "sample"
path = "{records}"

[[sinks]]
name = "splunk"
type = "splunk_hec"
url = "{server.url}"
token = "${{TEST_HEC_TOKEN}}"
index = "{index}"
ack = true
ack_poll_interval = 0.05

[sinks.http]
ca_bundle = "{server.ca_file}"

[sinks.retry]
initial = 0.05
maximum = 0.2
"""
    )
    return str(path)


def test_plugins_register(host):
    assert "splunk_hec" in host.sinks
    assert "hec-emulator" in host.commands
    assert not host.failures


def test_sample_source_to_hec_with_acks_exactly_once(tmp_path, monkeypatch, host, emulator):
    app, server = emulator
    path = write_config(tmp_path, server, monkeypatch)
    with Forwarder(load_config(path, host), host) as fw:
        result = fw.run_once()
    assert result.ok, result.summary()
    assert result.delivered == {"splunk": 10}
    indexed = app.indexed
    assert len(indexed) == 10
    assert {i["event"]["dlpfwd"]["id"] for i in indexed} == {f"rec-{i}" for i in range(10)}
    assert {i["sourcetype"] for i in indexed} == {
        "dlpfwd:purview:audit",
        "dlpfwd:purview:alert",
        "dlpfwd:purview:incident",
    }
    assert all(i["index"] == "dlp" and i["_channel"] for i in indexed)
    with Forwarder(load_config(path, host), host) as fw:
        again = fw.run_once()
    assert again.ok and again.delivered.get("splunk", 0) == 0
    assert len(app.indexed) == 10  # a restart sends nothing twice


def test_server_busy_keeps_events_until_hec_recovers(tmp_path, monkeypatch, host, emulator):
    app, server = emulator
    app.busy_next = 10_000
    path = write_config(tmp_path, server, monkeypatch, n=6)
    with Forwarder(load_config(path, host), host) as fw:
        first = fw.run_once()
    assert not first.ok and first.undelivered == {"splunk": 6}
    assert not app.indexed
    app.busy_next = 0
    with Forwarder(load_config(path, host), host) as fw:
        second = fw.run_once()
    assert second.ok, second.summary()
    assert len(app.indexed) == 6


def test_check_probe_reports_hec_health(tmp_path, monkeypatch, emulator, capsys):
    app, server = emulator
    path = write_config(tmp_path, server, monkeypatch)
    assert main(["check", "--probe", "--config", path]) == 0
    out = capsys.readouterr().out
    assert f"ok   sink splunk: {server.url} authentication: HEC token accepted" in out
    assert "indexer acknowledgement: enabled" in out
    bad = write_config(tmp_path, server, monkeypatch, index="secret")
    assert main(["check", "--probe", "--config", bad]) == 1
    out = capsys.readouterr().out
    assert f"FAIL sink splunk: {server.url} index secret" in out and "code 7" in out
    assert DEFAULT_TOKEN not in out


def test_an_event_splunk_refuses_goes_to_dead_letters_and_the_rest_is_indexed(tmp_path, monkeypatch, host, emulator):
    app, server = emulator
    app.refuse_containing = '"id":"rec-3"'
    path = write_config(tmp_path, server, monkeypatch, n=8)
    with Forwarder(load_config(path, host), host) as fw:
        result = fw.run_once()
        dead = fw.store.dead_letters("splunk")
    assert result.delivered == {"splunk": 7}
    assert result.dead_letters == {"splunk": 1}
    assert result.undelivered.get("splunk", 0) == 0
    ids = [i["event"]["dlpfwd"]["id"] for i in app.indexed]
    assert set(ids) == {f"rec-{i}" for i in range(8) if i != 3}
    # Splunk indexed the three objects before the refused one without an ackId: under indexer
    # acknowledgement they are sent again, so they appear twice (counted as possible duplicates)
    assert sorted(ids) == sorted([f"rec-{i}" for i in range(8) if i != 3] + ["rec-0", "rec-1", "rec-2"])
    assert len(dead) == 1 and "code 6" in dead[0].reason and b'"id":"rec-3"' in dead[0].payload


def test_the_token_never_reaches_the_logs(tmp_path, monkeypatch, host, emulator, caplog):
    app, server = emulator
    app.tokens[DEFAULT_TOKEN].disabled = True
    path = write_config(tmp_path, server, monkeypatch, n=2)
    with caplog.at_level("DEBUG"):
        with Forwarder(load_config(path, host), host) as fw:
            result = fw.run_once()
    assert not result.ok and any("code 1" in e for e in result.errors + [caplog.text])
    assert DEFAULT_TOKEN not in caplog.text
