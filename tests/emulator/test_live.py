"""Live mode: activity goes on after the anchor and appears as the emulated clock passes it."""

from __future__ import annotations

import datetime as dt

from emulators.tenant import EmulatorConfig, TenantEmulator
from emulators.tenant.tokens import GRAPH, MANAGEMENT

from .conftest import Tenant


def test_live_data_appears_as_time_passes(tmp_path):
    emu = TenantEmulator(EmulatorConfig(seed=4, audit_records=480, days=2, live=True), state_dir=tmp_path)
    with emu.serve() as server:
        tenant = Tenant(emu, server)
        audit_before = emu.expected_audit_ids()
        alerts_before = emu.expected_alert_ids()
        assert len(audit_before) <= 480
        # nothing from the future is served
        listed = tenant.graph("alerts_v2?$top=1000", tenant.token(GRAPH)).json()["value"]
        assert {a["id"] for a in listed} == alerts_before
        emu.clock.advance(hours=6)
        audit_after = emu.expected_audit_ids()
        alerts_after = emu.expected_alert_ids()
        # 480 records per 2 days = 10 per hour
        assert 50 <= len(audit_after - audit_before) <= 70
        assert audit_before < audit_after and alerts_before < alerts_after
        token = tenant.token(MANAGEMENT)
        tenant.mgmt("POST", "subscriptions/start", token, params={"contentType": "DLP.All"})
        now = emu.clock.time()
        fmt = "%Y-%m-%dT%H:%M:%S"
        params = {
            "contentType": "DLP.All",
            "startTime": dt.datetime.fromtimestamp(now - 8 * 3600, dt.UTC).strftime(fmt),
            "endTime": dt.datetime.fromtimestamp(now + 3600, dt.UTC).strftime(fmt),
        }
        blobs = tenant.mgmt("GET", "subscriptions/content", token, params=params).json()
        ids: set[str] = set()
        for b in blobs:
            ids.update(r["Id"] for r in tenant.mgmt("GET", b["contentUri"], token).json())
        assert audit_after - audit_before <= ids
        created = [dt.datetime.fromisoformat(b["contentCreated"].replace("Z", "+00:00")).timestamp() for b in blobs]
        assert blobs and max(created) <= now
        listed = tenant.graph("alerts_v2?$top=1000", tenant.token(GRAPH)).json()["value"]
        assert {a["id"] for a in listed} == alerts_after
        tenant.http.close()
