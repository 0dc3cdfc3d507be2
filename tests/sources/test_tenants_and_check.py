"""Many tenants in one configuration, and ``health()`` (what ``dlpfwd check`` prints) naming
missing permissions -- against real tenant emulators."""

from __future__ import annotations

import pytest

from emulators.tenant import EmulatorConfig, TenantEmulator
from forwarder.runtime import Forwarder
from forwarder.source import SourceContext
from tests.sources.emulated import config_text, delivered, load, management_activity_source, serve


def test_two_tenants_each_with_its_own_cursor(tmp_path):
    a = TenantEmulator(EmulatorConfig(seed=31, audit_records=120, days=1), state_dir=tmp_path / "a")
    b = TenantEmulator(EmulatorConfig(seed=32, audit_records=80, days=1), state_dir=tmp_path / "b")
    assert a.tenant_id != b.tenant_id
    with serve(a) as sa, serve(b) as sb:
        text_a = config_text(a, sa, tmp_path, [management_activity_source(a, sa, "contoso", start_hours=48)])
        text_b = config_text(b, sb, tmp_path, [management_activity_source(b, sb, "fabrikam", start_hours=48)])
        # One configuration: the first tenant's block, then the second's [[sources]] block.
        sources_b = text_b.split("[[sources]]", 1)[1].split("[[sinks]]", 1)[0]
        text = text_a.replace("[[sinks]]", "[[sources]]" + sources_b + "\n[[sinks]]", 1)
        config, host = load(text)
        with Forwarder(config, host) as fw:
            result = fw.run_once()
            cursors = {n: fw.store.get_cursor(f"source:{n}") for n in ("contoso", "fabrikam")}
            budgets = {id(s.client.budget) for s in fw.sources.values()}  # type: ignore[attr-defined]
    assert result.ok, result.errors
    events = delivered(tmp_path)
    by_tenant = {e["tenant_id"] for e in events}
    assert by_tenant == {a.tenant_id, b.tenant_id}
    assert {e["id"][6:] for e in events if e["source"] == "contoso"} == a.expected_audit_ids()
    assert {e["id"][6:] for e in events if e["source"] == "fabrikam"} == b.expected_audit_ids()
    assert cursors["contoso"] and cursors["fabrikam"] and cursors["contoso"] is not cursors["fabrikam"]
    assert len(budgets) == 2


@pytest.fixture()
def tenant(tmp_path):
    emu = TenantEmulator(EmulatorConfig(seed=33, audit_records=30, days=1), state_dir=tmp_path / "emu")
    with serve(emu) as server:
        yield emu, server


def _source(kind: str, emu, server):
    from forwarder.auth import AuthSettings
    from forwarder.settings import HttpSettings, Secret

    auth = AuthSettings(
        tenant_id=emu.tenant_id, client_id=emu.client_id, client_secret=Secret(emu.client_secret), authority=server.url
    )
    http = HttpSettings(ca_bundle=server.ca_file)
    ctx = SourceContext("t", __import__("logging").getLogger("t"))
    if kind == "graph_security":
        from sources.graph_security import GraphSecuritySettings, GraphSecuritySource

        return GraphSecuritySource("t", GraphSecuritySettings(auth=auth, http=http, graph_url=server.url), ctx)
    if kind == "audit_search":
        from sources.audit_search import AuditSearchSettings, AuditSearchSource

        return AuditSearchSource("t", AuditSearchSettings(auth=auth, http=http, graph_url=server.url), ctx)
    from sources.management_activity import ManagementActivitySettings, ManagementActivitySource

    return ManagementActivitySource(
        "t",
        ManagementActivitySettings(auth=auth, http=http, management_url=server.url, publisher_id=emu.publisher_id),
        ctx,
    )


def test_check_passes_with_every_permission(tenant):
    emu, server = tenant
    for kind in ("graph_security", "management_activity", "audit_search"):
        health = _source(kind, emu, server).health()
        assert health.ok, (kind, health.checks)


def test_check_names_missing_graph_permissions(tenant):
    emu, server = tenant
    emu.set_roles("https://graph.microsoft.com", ["SecurityAlert.Read.All"])
    checks = {c.name: c for c in _source("graph_security", emu, server).health().checks}
    assert checks["alerts_v2"].ok
    assert not checks["incidents"].ok and "SecurityIncident.Read.All" in checks["incidents"].detail
    checks = {c.name: c for c in _source("audit_search", emu, server).health().checks}
    assert "AuditLogsQuery.Read.All" in checks["auditLog/queries"].detail


def test_check_names_missing_activity_feed_permissions(tenant):
    emu, server = tenant
    emu.set_roles("https://manage.office.com", ["ActivityFeed.Read"])
    checks = {c.name: c for c in _source("management_activity", emu, server).health().checks}
    assert not checks["permission_dlp"].ok and "ActivityFeed.ReadDlp" in checks["permission_dlp"].detail
    emu.set_roles("https://manage.office.com", [])
    health = _source("management_activity", emu, server).health()
    names = " ".join(c.detail for c in health.checks if not c.ok)
    assert "ActivityFeed.Read" in names


def test_dlp_all_and_audit_general_together_deliver_endpoint_records_once(tmp_path):
    emu = TenantEmulator(EmulatorConfig(seed=34, audit_records=200, days=1), state_dir=tmp_path / "emu")
    with serve(emu) as server:
        body = (
            management_activity_source(emu, server, "o365", start_hours=48)
            + 'content_types = ["DLP.All", "Audit.General"]\n'
        )
        config, host = load(config_text(emu, server, tmp_path, [body]))
        with Forwarder(config, host) as fw:
            result = fw.run_once()
    assert result.ok, result.errors
    ids = [e["id"][6:] for e in delivered(tmp_path)]
    assert set(ids) == emu.expected_audit_ids(("DLP.All",)) and len(ids) == len(set(ids))
    general = emu.expected_audit_ids(("Audit.General",))
    endpoint = {e["id"][6:] for e in delivered(tmp_path) if e["workload"] == "Endpoint"}
    assert endpoint and endpoint <= general  # Teams and Endpoint records came from both feeds...
    assert result.duplicates >= len(endpoint)  # ...and the second copy of each was dropped, counted
