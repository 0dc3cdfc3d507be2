"""End to end: the tenant emulator (TLS, msal against its token endpoint) -> sources ->
Forwarder -> file sink, with faults on. Every generated event arrives exactly once (duplicates
the API itself sends are counted), malformed records are quarantined, an expired blob is in
the completeness report, an interrupted backfill delivers the rest when rerun."""

from __future__ import annotations

import collections
import datetime as dt
import ssl

import pytest

from emulators.httpd import Response
from emulators.tenant import EmulatorConfig, FaultConfig, TenantEmulator
from forwarder.report import build_report
from forwarder.runtime import Forwarder
from tests.sources.emulated import (
    config_text,
    delivered,
    graph_source,
    load,
    management_activity_source,
    serve,
    tolerate_advanced_clock,
)

pytestmark = pytest.mark.timeout(240)


def ids_of(events: list[dict], kind: str) -> list[str]:
    return [e["id"].split(":", 1)[1] for e in events if e["kind"] == kind]


def test_faults_every_event_exactly_once(tmp_path, monkeypatch):
    tolerate_advanced_clock(monkeypatch)
    faults = FaultConfig(
        throttle_rate=0.05,
        retry_after=1,
        error_rate=0.04,
        token_lifetime=3.0,
        duplicate_rate=0.1,
        malformed_rate=0.02,
        late_rate=0.1,
        late_delay=2 * 3600.0,
        out_of_order_rate=0.1,
        partial_rate=0.05,
    )
    emu = TenantEmulator(
        EmulatorConfig(seed=11, audit_records=1500, days=2, records_per_blob=20, alert_every=10, faults=faults),
        state_dir=tmp_path / "emu",
    )
    with serve(emu) as server:
        text = config_text(
            emu,
            server,
            tmp_path,
            [
                management_activity_source(emu, server, start_hours=96, max_retry_wait=30),
                graph_source(server, start_days=4, max_retry_wait=30),
            ],
            refresh_margin=0.0,  # use each 3-second token to the end: they expire mid-run
        )
        config, host = load(text)
        with Forwarder(config, host) as fw:
            first = fw.run_once()
            # Late blobs become listable, alerts created "in the future" come due.
            emu.clock.advance(hours=3)
            second = fw.run_once()
            malformed = {q.raw for q in fw.store.quarantined("o365", limit=10_000)}
            ledger = list(fw.store.ledger(0))
        stats = emu.stats()

    assert first.ok and second.ok, (first.errors, second.errors)
    events = delivered(tmp_path)
    audit = ids_of(events, "audit")
    expected = emu.expected_audit_ids(("DLP.All",))
    assert set(audit) == expected
    repeats = [i for i, n in collections.Counter(audit).items() if n > 1]
    assert repeats == [], f"{len(repeats)} audit records delivered more than once"
    # Duplicates the API sent (a blob repeating records of the previous one) were dropped and counted.
    bad = emu.expected_malformed_ids(("DLP.All",))
    dup_ids = emu.expected_duplicate_ids(("DLP.All",)) - bad
    assert dup_ids and first.duplicates + second.duplicates >= len(dup_ids)
    # Malformed records are in quarantine, with their raw bytes.
    assert bad and len(malformed) == len(bad)
    assert all(any(i.encode() in raw for raw in malformed) for i in bad)
    # Late blobs were read on the second run, once.
    late = emu.expected_late_blobs("DLP.All")
    assert late and all(
        any(row.unit.endswith(b.content_id) and row.status == "fetched" for row in ledger) for b in late
    )
    # Alerts and incidents: the DLP ones, each version once; non-DLP alerts never.
    alerts = ids_of(events, "alert")
    dlp_alerts = emu.expected_alert_ids("dataLossPrevention")
    assert set(alerts) == dlp_alerts and len(alerts) == len(dlp_alerts)
    incidents = ids_of(events, "incident")
    assert incidents and len(incidents) == len(set(incidents))
    assert set(incidents) <= emu.expected_incident_ids()
    # The faults really happened: throttling, 5xx, token expiry, and PublisherIdentifier on every call.
    assert stats["injected"], stats
    assert stats["tokens_issued"] >= 3
    assert list(stats["publishers"]) == [emu.publisher_id]
    assert sum(stats["publishers"].values()) == stats["requests"]["management"]


def test_blob_expiring_during_an_outage_is_in_the_completeness_report(tmp_path, monkeypatch):
    tolerate_advanced_clock(monkeypatch)
    emu = TenantEmulator(
        EmulatorConfig(seed=12, audit_records=200, days=1, records_per_blob=20), state_dir=tmp_path / "emu"
    )
    victim_blob = emu.expected_blobs("DLP.All")[-1]
    victim = victim_blob.content_id
    lost = {emu.data.record_id(i) for i in emu.data.blob_indices(victim_blob)}
    with serve(emu) as server:
        inner = emu.app.handle

        def flaky(request):
            # The victim's downloads fail (an outage for that blob) until it has expired.
            if request.path.endswith(victim):
                return Response.json({"error": {"code": "AF50000", "message": "An internal error occurred."}}, 503)
            return inner(request)

        emu.app.handle = flaky  # type: ignore[method-assign]
        text = config_text(
            emu,
            server,
            tmp_path,
            [management_activity_source(emu, server, start_hours=48, max_retry_wait=0.5)],
        )
        config, host = load(text)
        with Forwarder(config, host) as fw:
            first = fw.run_once()
            assert not first.ok  # the victim could not be read: said so, cursor held back
            emu.clock.advance(days=7, hours=1)
            emu.app.handle = inner  # type: ignore[method-assign]  # back online: the victim has expired meanwhile
            second = fw.run_once()
            rows = list(fw.store.ledger(0))
        report = build_report(rows, since=0)
    assert second.ok, second.errors
    expired = [n for n in report.sources["o365"].expired if n.unit.endswith(victim)]
    assert expired, report.sources["o365"].expired
    assert "expired" in expired[0].detail
    assert not report.complete
    delivered_ids = set(ids_of(delivered(tmp_path), "audit"))
    assert lost and lost.isdisjoint(delivered_ids)
    assert len(delivered_ids) == 200 - len(lost)


def test_backfill_interrupted_halfway_then_rerun_delivers_the_rest(tmp_path):
    emu = TenantEmulator(
        EmulatorConfig(seed=13, audit_records=600, days=12, records_per_blob=25, audit_query_seconds=0.2),
        state_dir=tmp_path / "emu",
    )
    with serve(emu) as server:
        text = config_text(
            emu,
            server,
            tmp_path,
            [graph_source(server, "history", kind="audit_search", status_interval=0.1, window_hours=48)],
        )
        config, host = load(text)
        until = dt.datetime.fromtimestamp(emu.clock.time(), dt.UTC)
        since = until - dt.timedelta(days=13)
        seen: list[dict] = []

        class Interrupted(Exception):
            pass

        def stop_halfway(progress: dict) -> None:
            seen.append(progress)
            if progress.get("done", 0) >= 3:
                raise Interrupted

        with Forwarder(config, host) as fw, pytest.raises(Interrupted):
            fw.backfill("history", since, until, progress=stop_halfway)
        partial = ids_of(delivered(tmp_path), "audit")
        assert 0 < len(partial) < 600
        assert seen[-1]["total"] == 7
        config, host = load(text)
        with Forwarder(config, host) as fw:
            result = fw.backfill("history", since, until)
            live_cursor = fw.store.get_cursor("source:history")
    assert result.ok, result.errors
    audit = ids_of(delivered(tmp_path), "audit")
    expected = {emu.data.record_id(i) for i in range(600)}
    assert set(audit) == expected and len(audit) == len(expected)
    assert live_cursor is None  # the backfill never touched the live cursor


def test_alert_updates_flow_as_new_versions_and_nothing_repeats(tmp_path, monkeypatch):
    tolerate_advanced_clock(monkeypatch)
    emu = TenantEmulator(EmulatorConfig(seed=14, audit_records=200, days=1, alert_every=10), state_dir=tmp_path / "emu")
    with serve(emu) as server:
        text = config_text(
            emu,
            server,
            tmp_path,
            [graph_source(server, start_days=2, overlap=600)],
        )
        config, host = load(text)
        with Forwarder(config, host) as fw:
            assert fw.run_once().ok
            emu.clock.advance(hours=2)  # alerts generated "in the future" come due
            assert fw.run_once().ok
            first = delivered(tmp_path)
            alert_id = next(e["id"].split(":", 1)[1] for e in first if e["kind"] == "alert")
            # An analyst resolves and assigns the alert in the portal.
            import httpx

            token = fw.sources["graph"].client.tokens.token("https://graph.microsoft.com/.default")  # type: ignore[attr-defined]
            emu.clock.advance(minutes=1)
            r = httpx.patch(
                f"{server.url}/v1.0/security/alerts_v2/{alert_id}",
                json={"status": "resolved", "classification": "truePositive", "assignedTo": "soc@contoso.com"},
                headers={"Authorization": f"Bearer {token}"},
                verify=ssl.create_default_context(cafile=server.ca_file),
            )
            assert r.status_code == 200, r.text
            emu.clock.advance(minutes=1)
            assert fw.run_once().ok
            for _ in range(3):  # polling again and again brings nothing new (no 287 copies)
                emu.clock.advance(minutes=1)
                assert fw.run_once().ok
            rows = [r for r in fw.store.ledger(0) if r.source == "graph"]
    events = delivered(tmp_path)
    # Each page window is one ledger unit carrying its records: what its pages listed, what
    # was fetched and parsed, and what was spooled, on the same row.
    report = build_report(rows, since=0).sources["graph"]
    assert report.parsed == report.fetched == report.spooled + report.duplicates == len(events)
    assert report.listed >= report.fetched > 0
    assert all(r.kind.startswith("graph_") and r.status == "fetched" for r in rows)
    versions = [e for e in events if e["id"] == f"alert:{alert_id}"]
    assert len(versions) == 2
    assert versions[-1]["status"] == "resolved" and versions[-1]["classification"] == "truePositive"
    assert versions[-1]["enrichment"]["assigned_to"] == "soc@contoso.com"
    assert versions[0]["idempotency_key"] != versions[1]["idempotency_key"]
    keys = [e["idempotency_key"] for e in events]
    assert len(keys) == len(set(keys))
    # The incident holding the alert was touched too: its new version arrived, once.
    incident_versions = [e for e in events if e["kind"] == "incident" and alert_id in e["related"]["alert_ids"]]
    assert len(incident_versions) == 2
    assert incident_versions[0]["updated_time"] < incident_versions[1]["updated_time"]
