"""End to end with real msal: the tenant emulator issues the tokens (secret and certificate
credentials), the Logs Ingestion emulator checks them; and a whole forwarder run from the
emulated Management Activity API into PurviewDLP_CL."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from emulators.httpd import EmulatorServer
from emulators.logs_ingestion.app import Dcr, Fault, LogsIngestionApp
from emulators.tenant import EmulatorConfig, TenantEmulator
from emulators.tenant.identity import make_certificate
from forwarder.auth import AuthSettings
from forwarder.config import load_config
from forwarder.plugins import PluginHost
from forwarder.runtime import Forwarder
from forwarder.settings import HttpSettings, Secret
from forwarder.sink import SinkContext
from sinks.sentinel.columns import COLUMNS, STREAM
from sinks.sentinel.sink import SentinelSettings, SentinelSink
from tests.sentinel.helpers import DCR, entries, event

pytestmark = pytest.mark.timeout(180)


def self_signed(tmp: Path) -> tuple[Path, Path, str]:
    """A certificate and its key for certificate auth, written as the sink's settings name them."""
    cert_pem, key_pem = make_certificate("dlpfwd-sentinel-test")
    (tmp / "app.crt").write_text(cert_pem)
    (tmp / "app.key").write_text(key_pem)
    return tmp / "app.crt", tmp / "app.key", cert_pem


@pytest.fixture
def tenant(tmp_path):
    emu = TenantEmulator(EmulatorConfig(seed=5, audit_records=300, days=1, records_per_blob=25), tmp_path / "tenant")
    with emu.serve(tls=True) as server:
        yield emu, server


def ingestion(emu: TenantEmulator, tls_dir: Path, allowed: set[str]) -> EmulatorServer:
    streams = {STREAM: {c.name: c.type for c in COLUMNS}}
    app = LogsIngestionApp(emu.verifier, [Dcr(DCR, streams, allowed)])
    return EmulatorServer(app, cert_dir=tls_dir)  # same directory: same CA as the tenant


def test_secret_and_certificate_credentials_through_msal(tenant, tmp_path):
    emu, server = tenant
    cert, key, cert_pem = self_signed(tmp_path)
    cert_app = emu.register_certificate_app(cert_pem)
    with ingestion(emu, emu.state_dir / "tls", {emu.client_id, cert_app}) as li:
        http = HttpSettings(ca_bundle=li.ca_file)
        auths = [
            AuthSettings(emu.tenant_id, emu.client_id, client_secret=Secret(emu.client_secret), authority=server.url),
            AuthSettings(emu.tenant_id, cert_app, certificate=str(cert), private_key=str(key), authority=server.url),
        ]
        for n, auth in enumerate(auths):
            settings = SentinelSettings(endpoint=li.url, dcr_immutable_id=DCR, auth=auth, http=http)
            sink = SentinelSink("sentinel", settings, SinkContext("sentinel", logging.getLogger("test")))
            sink.connect()
            outcome = sink.write_batch(entries([event(n * 10 + i) for i in range(5)]))
            assert len(outcome.delivered) == 5, (outcome.fatal, outcome.retry_reason)
            assert sink.health().ok
            sink.close()
        assert len(li.app.all_rows(STREAM)) == 10
        assert li.app.stats.statuses == {204: 2}


def test_app_without_the_role_stops_with_a_clear_message(tenant):
    emu, server = tenant
    with ingestion(emu, emu.state_dir / "tls", {"someone-else"}) as li:
        auth = AuthSettings(emu.tenant_id, emu.client_id, client_secret=Secret(emu.client_secret), authority=server.url)
        settings = SentinelSettings(
            endpoint=li.url, dcr_immutable_id=DCR, auth=auth, http=HttpSettings(ca_bundle=li.ca_file)
        )
        sink = SentinelSink("sentinel", settings, SinkContext("sentinel", logging.getLogger("test")))
        outcome = sink.write_batch(entries([event(1)]))
        assert outcome.fatal and "Monitoring Metrics Publisher" in outcome.fatal
        assert emu.client_secret not in outcome.fatal
        sink.close()


def test_forwarder_run_delivers_every_audit_record_once(tenant, tmp_path):
    emu, server = tenant
    with ingestion(emu, emu.state_dir / "tls", {emu.client_id}) as li:
        li.app.inject(Fault(429, retry_after=0), Fault(503, retry_after=0))
        auth = f"""
tenant_id = "{emu.tenant_id}"
client_id = "{emu.client_id}"
client_secret = "{emu.client_secret}"
authority = "{server.url}"
"""
        text = f"""
[forwarder]
state_dir = "{tmp_path / "state"}"

[[sources]]
name = "o365"
type = "management_activity"
management_url = "{server.url}"
publisher_id = "{emu.publisher_id}"
start_hours = 48
[sources.auth]
{auth}
[sources.http]
ca_bundle = "{server.ca_file}"

[[sinks]]
name = "sentinel"
type = "sentinel"
endpoint = "{li.url}"
dcr_immutable_id = "{DCR}"
[sinks.auth]
{auth}
[sinks.http]
ca_bundle = "{li.ca_file}"
[sinks.batch]
max_events = 100
[sinks.retry]
initial = 0.05
maximum = 0.2
"""
        host = PluginHost().load()
        config = load_config(text, host)
        with Forwarder(config, host) as fw:
            result = fw.run_once()
            if not result.ok:  # the injected 429/503 may leave a batch for a second pass
                result = fw.run_once()
        assert result.ok, result.errors
        rows = li.app.all_rows(STREAM)
        ids = [r["EventId"].split(":", 1)[1] for r in rows if r.get("Kind") == "audit"]
        assert set(ids) == emu.expected_audit_ids(("DLP.All",))
        assert len(ids) == len(set(ids))
        assert li.app.stats.statuses.get(429) == 1 and li.app.stats.statuses.get(503) == 1
        assert all(r["TimeGenerated"] and r["SourceName"] == "o365" for r in rows)
