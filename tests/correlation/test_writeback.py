"""Write-back against the tenant emulator: one comment per correlated Defender alert whatever
the number of runs, a restart, a crash between the POST and its record, or a 429 storm; the
incident tagged with its tags kept; --dry-run writes nothing; a read-only token is refused
with the permission named."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emulators.tenant import EmulatorConfig, TenantEmulator
from forwarder.cli import main
from forwarder.config import Config, load_config
from forwarder.correlation.index import DB_NAME
from forwarder.correlation.writeback import MARKER, GraphWriter, WriteBack
from forwarder.plugins import PluginHost
from forwarder.runtime import Forwarder
from tests.sources.emulated import config_text, serve

TAG = "dlpfwd:dlp-correlated"


class Tenant:
    def __init__(self, tmp: Path, emu: Any, server: Any) -> None:
        self.emu = emu
        source = (
            f'name = "graph"\ntype = "graph_security"\ngraph_url = "{server.url}"\n'
            "all_alerts = true\nstart_days = 4\nrequests_per_minute = 0"
        )
        text = config_text(emu, server, tmp, [source])
        text = '[correlation]\nenabled = true\nwriteback_sources = ["graph"]\n' + text
        self.path = tmp / "dlpfwd.toml"
        self.path.write_text(text)
        self.host = PluginHost().load()
        self.config: Config = load_config(str(self.path), self.host)
        self.state = self.config.forwarder.state_dir

    def forward(self) -> None:
        with Forwarder(self.config, self.host) as fw:
            result = fw.run_once()
        assert result.ok, result.summary()

    def writer(self) -> GraphWriter:
        return GraphWriter(self.config.source("graph").settings, logging.getLogger("test"))

    def drain(self, **kw: Any) -> Any:
        queue = WriteBack(self.state, ["graph"], TAG)
        writer = self.writer()
        try:
            return queue.drain(writer, **kw)
        finally:
            writer.close()
            queue.close()

    def linked_alerts(self) -> list[str]:
        db = sqlite3.connect(str(Path(self.state) / DB_NAME))
        try:
            return sorted({a.split(":", 1)[1] for (a,) in db.execute("SELECT alert FROM links")})
        finally:
            db.close()

    def comments(self, alert: str) -> list[str]:
        writer = self.writer()
        try:
            return [c["comment"] for c in writer.alert_comments(alert)]
        finally:
            writer.close()


def running_tenant(tmp_path: Path, audit_records: int, days: float) -> Iterator[Tenant]:
    """A served tenant emulator (seed 3, an alert per 10 records, 2 alerts per incident) and the
    write-back configuration against it; the body of a ``tenant`` fixture."""
    emu = TenantEmulator(
        EmulatorConfig(seed=3, audit_records=audit_records, days=days, alert_every=10, alerts_per_incident=2),
        state_dir=tmp_path / "emu",
    )
    with serve(emu) as server:
        yield Tenant(tmp_path, emu, server)


@pytest.fixture
def tenant(tmp_path: Path) -> Iterator[Tenant]:
    yield from running_tenant(tmp_path, audit_records=700, days=2)


def test_one_comment_per_alert_across_runs_crash_and_throttling(tenant: Tenant, capsys: Any) -> None:
    tenant.forward()
    alerts = tenant.linked_alerts()
    assert alerts, "the emulator's Defender alerts share incidents with DLP alerts"

    # --dry-run shows the comments and writes nothing
    assert main(["writeback", "--config", str(tenant.path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("would comment") == len(alerts) and MARKER in out
    assert all(tenant.comments(a) == [] for a in alerts)

    # a 429 storm on every Graph call: honoured (Retry-After), nothing lost
    tenant.emu.config.faults.throttle_rate = 0.3
    tenant.emu.config.faults.retry_after = 0
    first = tenant.drain()
    for _ in range(5):  # anything deferred by the storm is retried at a later drain
        if not first.deferred:
            break
        first = tenant.drain(now=1e12)
    tenant.emu.config.faults.throttle_rate = 0.0
    assert writer_throttled(tenant) > 0
    for alert in alerts:
        (comment,) = tenant.comments(alert)
        assert comment.startswith("[dlpfwd] Purview DLP context:") and MARKER in comment
        assert "Sensitive information types:" in comment

    # more runs, a restart of the forwarder (the comments updated the alerts: they are read again)
    tenant.forward()
    again = tenant.drain()
    assert again.commented == [] and again.recovered == []

    # kill -9 between a POST and its record: the marker is found, nothing posted twice
    db = sqlite3.connect(str(Path(tenant.state) / DB_NAME))
    db.execute("UPDATE writeback SET written = ''")
    # what a crash before the record leaves: no digest, no covered events, the alerts still pending
    db.execute("DELETE FROM writeback_seen")
    db.execute("INSERT OR IGNORE INTO writeback_pending (source, alert) SELECT 'graph', alert FROM writeback")
    db.commit()
    db.close()
    recovered = tenant.drain()
    assert sorted(recovered.recovered) == alerts and recovered.commented == []
    assert all(len(tenant.comments(a)) == 1 for a in alerts)

    # the incidents carry the tag
    writer = tenant.writer()
    try:
        incident = writer.incidents.get(_incident_of(writer, alerts[0]))
    finally:
        writer.close()
    assert TAG in incident["customTags"]


def writer_throttled(tenant: Tenant) -> int:
    return int(tenant.emu.stats()["injected"].get("graph_429", 0))


def _incident_of(writer: GraphWriter, alert: str) -> str:
    data = writer._call("GET", f"security/alerts_v2/{alert}", "get alert", "SecurityAlert.Read.All")
    return str(data["incidentId"])


def test_read_only_token_is_refused_naming_the_permission(tmp_path: Path, capsys: Any) -> None:
    cfg = EmulatorConfig(seed=3, audit_records=700, days=2, alert_every=10)
    cfg.roles["https://graph.microsoft.com"] = ["SecurityAlert.Read.All", "SecurityIncident.Read.All"]
    emu = TenantEmulator(cfg, state_dir=tmp_path / "emu")
    with serve(emu) as server:
        tenant = Tenant(tmp_path, emu, server)
        tenant.forward()
        assert tenant.linked_alerts()
        capsys.readouterr()
        assert main(["writeback", "--config", str(tenant.path)]) == 1
        err = capsys.readouterr().err
        assert "SecurityAlert.ReadWrite.All" in err and "403" in err
