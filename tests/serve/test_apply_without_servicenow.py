"""Without ServiceNow, ``dlpfwd serve`` applies what it accepts to Defender XDR (tenant emulator,
over TLS): a signed request resolves the incident within one pass, a repeat writes nothing; the
applying source is ``[serve] source`` or the only graph_security source; the worker wakes on an
accepted change; the ``dlpfwd serve`` process does it end to end."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from forwarder.config import load_config
from forwarder.errors import ConfigError
from forwarder.plugins import PluginHost
from forwarder.serve import build_server
from forwarder.serve.inbox import sync_enqueue
from forwarder.serve.worker import ServeWorker
from forwarder.state import open_store
from forwarder.sync import inbox
from forwarder.sync.defender import DefenderIncidents
from forwarder.sync.inbound import InboundApplier, applies_inbound, serve_source
from tests.itsm.test_sync_end_to_end import Tenant, served_tenant
from tests.sources.emulated import auth_toml

from .conftest import HMAC_KEY, change, post_signed, trust
from .test_command import exit_code, serving


@pytest.fixture
def tenant(tmp_path: Path) -> Iterator[Tenant]:
    with served_tenant(tmp_path) as t:
        yield t


def graph_source(tenant: Tenant, name: str = "graph") -> str:
    return (
        f'[[sources]]\nname = "{name}"\ntype = "graph_security"\ngraph_url = "{tenant.server.url}"\n'
        f"{auth_toml(tenant.emu, tenant.server)}"
    )


def config_text(tmp_path: Path, tenant: Tenant, certs: Any, serve_extra: str = "", sources: int = 1) -> str:
    text = f'[forwarder]\nstate_dir = "{tmp_path / "state"}"\n\n'
    text += f'[serve]\ntls_cert = "{certs.cert}"\ntls_key = "{certs.key}"\nhmac_secret = "{HMAC_KEY}"\n{serve_extra}\n'
    for i in range(sources):
        text += graph_source(tenant, "graph" if i == 0 else f"graph{i}") + "\n"
    return text


def incident(tenant: Tenant, source: Any, ident: str) -> dict[str, Any]:
    graph = DefenderIncidents(source.settings, logging.getLogger("test.defender"))
    try:
        return graph.get(ident)
    finally:
        graph.close()


def _stop(endpoint: Any, worker: ServeWorker, store: Any) -> None:
    """Stop the endpoint and the worker, close the worker's applier and the store."""
    endpoint.stop()
    worker.stop()
    assert worker.applier is not None
    worker.applier.close()
    store.close()


def resolve_body(ident: str) -> dict[str, Any]:
    return change(incidentId=ident, status="resolved", classification="falsePositive", determination="notMalicious",
                  comment="Closed by a Splunk alert action", source="splunk:dlp")  # fmt: skip


def test_a_signed_change_resolves_the_incident_in_one_pass_and_a_repeat_writes_nothing(tmp_path, tenant, certs):
    config = load_config(config_text(tmp_path, tenant, certs), PluginHost().load())
    assert applies_inbound(config)
    ident = sorted(tenant.emu.expected_incident_ids())[0]
    store = open_store(config.forwarder.state_dir)
    applier = InboundApplier.build(config, store)
    endpoint = build_server(config.serve, store).start()
    try:
        body = resolve_body(ident)
        with httpx.Client(base_url=endpoint.url, verify=trust(certs)) as client:
            assert post_signed(client, body).status_code == 202
            result = applier.run_once()  # one pass
            assert (result.applied, result.defender_writes) == (1, 2), result  # comment, then PATCH
            live = incident(tenant, config.source("graph"), ident)
            assert (live["status"], live["classification"], live["determination"]) == (
                "resolved",
                "falsePositive",
                "notMalicious",
            )
            assert any("Closed by a Splunk alert action" in (c.get("comment") or "") for c in live["comments"])
            writes = list(tenant.writes)
            assert writes.count(("PATCH", f"/v1.0/security/incidents/{ident}")) == 1
            # the same request again: a duplicate, and nothing more is written
            assert post_signed(client, body).json()["duplicate"] is True
            again = applier.run_once()
            assert again.counts() == {}
            assert tenant.writes == writes
            # another request asking for what Defender already holds (no comment): no write
            same = change(incidentId=ident, status="resolved", classification=..., determination=..., comment=...)
            assert post_signed(client, same).status_code == 202
            assert applier.run_once().skipped_unchanged == 1
            assert tenant.writes == writes
            stats = inbox.stats(store)
            assert (stats["pending"], stats["applied"], stats["dead"]) == (0, 1, 0)
    finally:
        endpoint.stop()
        applier.close()
        store.close()


def test_the_worker_applies_an_accepted_change_at_once_and_dead_letters_an_unknown_incident(tmp_path, tenant, certs):
    config = load_config(config_text(tmp_path, tenant, certs, "apply_interval = 3600"), PluginHost().load())
    ident = sorted(tenant.emu.expected_incident_ids())[-1]
    store = open_store(config.forwarder.state_dir)
    worker = ServeWorker(store, config.serve, InboundApplier.build(config, store))

    def enqueue(store: Any, request: Any) -> Any:
        added = sync_enqueue(store, request)
        worker.wake()
        return added

    endpoint = build_server(config.serve, store, enqueue=enqueue).start()
    worker.start()
    try:
        with httpx.Client(base_url=endpoint.url, verify=trust(certs)) as client:
            assert post_signed(client, resolve_body(ident)).status_code == 202
            assert post_signed(client, change(incidentId="999999", status="resolved")).status_code == 202
            deadline = time.monotonic() + 30  # the interval is an hour: only the wake-up applies it
            while inbox.stats(store)["pending"]:
                assert time.monotonic() < deadline, inbox.stats(store)
                time.sleep(0.05)
        assert incident(tenant, config.source("graph"), ident)["status"] == "resolved"
        (dead,) = inbox.dead(store)
        assert dead[1].incident_id == "999999" and "404" in dead[2]
    finally:
        _stop(endpoint, worker, store)


def test_the_applying_source_is_serve_source_or_the_only_graph_security_source(tmp_path, tenant, certs):
    host = PluginHost().load()
    two = load_config(config_text(tmp_path, tenant, certs, sources=2), host)
    with pytest.raises(ConfigError) as caught:
        serve_source(two)
    assert "serve.source: " in caught.value.problems[0] and "graph, graph1" in caught.value.problems[0]
    named = load_config(config_text(tmp_path, tenant, certs, 'source = "graph1"', sources=2), host)
    assert serve_source(named).name == "graph1"
    wrong = load_config(config_text(tmp_path, tenant, certs, 'source = "nope"', sources=2), host)
    with pytest.raises(ConfigError, match="serve.source: no graph_security source named 'nope'"):
        serve_source(wrong)
    none = load_config(config_text(tmp_path, tenant, certs, sources=0), host)
    with pytest.raises(ConfigError, match="serve.source: .*none is configured"):
        serve_source(none)


def test_serve_process_resolves_the_incident_without_servicenow(tmp_path, tenant, certs):
    path = tmp_path / "dlpfwd.toml"
    path.write_text(config_text(tmp_path, tenant, certs), encoding="utf-8")
    ident = sorted(tenant.emu.expected_incident_ids())[0]
    host = PluginHost().load()
    source = load_config(path.read_text(encoding="utf-8"), host).source("graph")
    with serving(path) as (proc, url):
        with httpx.Client(base_url=url, verify=trust(certs)) as client:
            assert post_signed(client, resolve_body(ident)).status_code == 202
        deadline = time.monotonic() + 60
        while incident(tenant, source, ident)["status"] != "resolved":
            assert time.monotonic() < deadline, "dlpfwd serve did not apply the change"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert exit_code(proc) == 0
    assert tenant.writes.count(("PATCH", f"/v1.0/security/incidents/{ident}")) == 1


def test_serve_refuses_to_start_when_the_applying_source_is_ambiguous(tmp_path, tenant, certs):
    import subprocess

    from .test_command import DLPFWD, env

    path = tmp_path / "dlpfwd.toml"
    path.write_text(config_text(tmp_path, tenant, certs, sources=2), encoding="utf-8")
    result = subprocess.run(
        [*DLPFWD, "--config", str(path), "serve", "--port", "0"], env=env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "serve.source: " in result.stderr and "name one of graph, graph1" in result.stderr


def test_without_the_write_permission_applying_stops_and_health_says_so(tmp_path, tenant, certs):
    from forwarder.cli.state_commands import health_problems
    from forwarder.sync.inbound import STOPPED_KEY

    tenant.emu.set_roles("https://graph.microsoft.com", ["SecurityIncident.Read.All", "SecurityAlert.Read.All"])
    config = load_config(config_text(tmp_path, tenant, certs), PluginHost().load())
    ident = sorted(tenant.emu.expected_incident_ids())[0]
    store = open_store(config.forwarder.state_dir)
    worker = ServeWorker(store, config.serve, InboundApplier.build(config, store))
    endpoint = build_server(config.serve, store).start()
    try:
        with httpx.Client(base_url=endpoint.url, verify=trust(certs)) as client:
            assert post_signed(client, resolve_body(ident)).status_code == 202
            worker.start()
            deadline = time.monotonic() + 30
            while STOPPED_KEY not in store.stopped():
                assert time.monotonic() < deadline, "the applying did not stop"
                time.sleep(0.05)
            assert "SecurityIncident.ReadWrite.All" in store.stopped()[STOPPED_KEY]["reason"]
            assert any(p.startswith(f"sync {STOPPED_KEY}: stopped") for p in health_problems(store))
            # the endpoint goes on accepting; the changes wait in the inbox
            assert post_signed(client, change(incidentId=ident, status="active")).status_code == 202
            assert inbox.stats(store)["pending"] >= 1
        assert tenant.writes == []
    finally:
        _stop(endpoint, worker, store)
