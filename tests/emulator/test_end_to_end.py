"""The forwarder (runtime + sources + file sink) against the emulator with faults on: every
expected record arrives exactly once, malformed ones are quarantined, late blobs are caught up."""

from __future__ import annotations

import orjson

from emulators.tenant import EmulatorConfig, FaultConfig, TenantEmulator


def _config(emu, server, d) -> str:
    (d / "secret").write_text(emu.client_secret)
    auth = f"""[sources.auth]
tenant_id = "{emu.tenant_id}"
client_id = "{emu.client_id}"
client_secret = "file:{d}/secret"
authority = "{server.url}"
[sources.http]
ca_bundle = "{server.ca_file}"
"""
    return f"""[forwarder]
state_dir = "{d}/state"
[[sources]]
name = "audit"
type = "management_activity"
start_hours = 60
management_url = "{server.url}"
publisher_id = "{emu.publisher_id}"
max_retry_wait = 60
{auth}
[[sources]]
name = "alerts"
type = "graph_security"
start_days = 3
all_alerts = true
graph_url = "{server.url}"
max_retry_wait = 4
{auth}
[[sinks]]
name = "out"
type = "file"
path = "{d}/out/events.jsonl"
fsync = false
"""


def _ids(d, source):
    out = []
    for path in (d / "out").glob("*.jsonl"):
        for line in path.open("rb"):
            event = orjson.loads(line)
            if event["source"] == source:
                out.append((event["kind"], event["id"].split(":", 1)[1]))
    return out


def test_forwarder_gets_exactly_the_ground_truth_through_faults(tmp_path):
    from forwarder.cli import build_host
    from forwarder.config import load_config
    from forwarder.runtime import Forwarder

    faults = FaultConfig(
        duplicate_rate=0.3,
        malformed_rate=0.01,
        late_rate=0.5,
        late_delay=3 * 3600,
        out_of_order_rate=0.05,
        throttle_rate=0.05,
        error_rate=0.03,
        retry_after=1,
        expand_failure_rate=1.0,  # the source must fall back to reading incidents without $expand
    )
    emu = TenantEmulator(EmulatorConfig(seed=11, audit_records=1500, days=2, faults=faults), state_dir=tmp_path / "emu")
    with emu.serve() as server:
        (tmp_path / "dlpfwd.toml").write_text(_config(emu, server, tmp_path))
        host = build_host(None)
        forwarder = Forwarder(load_config(tmp_path / "dlpfwd.toml", host), host)
        try:
            hidden = [b for b in emu.expected_late_blobs() if b.visible_at > emu.clock.time()]
            assert hidden, "the scenario needs late blobs that are not listable yet"
            before = emu.expected_audit_ids()
            first = forwarder.run_once()
            audit = _ids(tmp_path, "audit")
            assert len(audit) == len(set(audit))  # duplicates across blobs were removed
            assert {i for _, i in audit} == before
            assert first.sources["audit"]["quarantined"] == len(emu.expected_malformed_ids())
            alerts = _ids(tmp_path, "alerts")
            assert {i for k, i in alerts if k == "alert"} == emu.expected_alert_ids()
            assert {i for k, i in alerts if k == "incident"} == emu.expected_incident_ids()
            # the late blobs become listable; the next poll re-lists their window and gets them
            emu.clock.advance(hours=4)
            forwarder.run_once()
            audit = _ids(tmp_path, "audit")
            assert len(audit) == len(set(audit))
            after = emu.expected_audit_ids()
            assert after > before  # the late records exist and were missing before
            assert {i for _, i in audit} == after
        finally:
            forwarder.close()
