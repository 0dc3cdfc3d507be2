"""Two-way status sync end to end, over TLS: the tenant emulator (Graph incidents) -> the
graph_security source -> the servicenow sink -> the ServiceNow emulator, and the sync between
the ticket and the incident: resolve in ServiceNow, reassign in Defender, no ping-pong, and a
kill -9 of ``dlpfwd run`` in the middle of a sync."""

from __future__ import annotations

import logging
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulators.httpd import Request, Response
from emulators.servicenow.app import ServiceNowApp
from emulators.tenant import EmulatorConfig, TenantEmulator
from forwarder.config import load_config
from forwarder.plugins import PluginHost
from forwarder.runtime import Forwarder
from forwarder.sync import inbox
from forwarder.sync.defender import DefenderIncidents
from forwarder.sync.loop import SyncEngine
from tests.sources.emulated import auth_toml, serve

ANALYST = ("analyst", "an4lyst-pw")


class Tenant:
    """The tenant emulator over TLS, counting the writes it receives on incidents."""

    def __init__(self, emu: TenantEmulator, server: Any) -> None:
        self.emu = emu
        self.server = server
        self.writes: list[tuple[str, str]] = []
        self.hook: Callable[[Request], None] | None = None
        inner = emu.app.handle

        def handle(request: Request) -> Response:
            is_write = request.method in ("PATCH", "POST") and "/security/incidents/" in request.path
            response: Response = inner(request)
            if is_write and response.status < 300:
                self.writes.append((request.method, request.path))
                if self.hook is not None:
                    self.hook(request)
            return response

        emu.app.handle = handle  # type: ignore[method-assign]


@contextmanager
def served_tenant(tmp_path: Path) -> Iterator[Tenant]:
    """The tenant emulator (seed 5, incidents every 10 alerts) served over TLS, wrapped in a
    ``Tenant``; stopped on exit."""
    emu = TenantEmulator(EmulatorConfig(seed=5, audit_records=300, days=2, alert_every=10), state_dir=tmp_path / "emu")
    t = Tenant(emu, None)
    with serve(emu) as server:
        t.server = server
        yield t


@pytest.fixture
def tenant(tmp_path: Path) -> Iterator[Tenant]:
    with served_tenant(tmp_path) as t:
        yield t


@pytest.fixture
def sn_app() -> ServiceNowApp:
    app = ServiceNowApp(users={"dlpfwd": "pa55word", ANALYST[0]: ANALYST[1]})
    app.add_user("bob", "bob@contoso.com", "Bob Example")
    app.add_user("carol", "carol@contoso.com", "Carol Example")
    return app


def config_text(tmp: Path, tenant: Tenant, sn: Any, interval: float = 60.0) -> str:
    return f'''
[forwarder]
state_dir = "{tmp / "state"}"
shutdown_deadline = 5

[[sources]]
name = "graph"
type = "graph_security"
graph_url = "{tenant.server.url}"
alerts = false
start_days = 0.5
poll_interval = 1
{auth_toml(tenant.emu, tenant.server)}

[[sinks]]
name = "snow"
type = "servicenow"
instance_url = "{sn.url}"
username = "dlpfwd"
password = "pa55word"
[sinks.http]
ca_bundle = "{sn.ca_file}"
[sinks.filter]
kinds = ["incident"]
[sinks.retry]
initial = 0.05
maximum = 0.2
[sinks.sync]
enabled = true
interval = {interval}
'''


class Deployment:
    """One forwarder (in-process) with its sync engine."""

    def __init__(self, text: str) -> None:
        self.host = PluginHost().load()
        self.config = load_config(text, self.host)
        self.fw = Forwarder(self.config, self.host)
        engine = SyncEngine.build(self.config, self.fw.store, self.fw.sinks)
        assert engine is not None
        self.engine = engine

    def poll(self) -> None:
        result = self.fw.run_once()
        assert result.ok, result.summary()

    def poll_until(self, condition: Callable[[], bool], timeout: float = 30.0) -> None:
        """Poll until ``condition`` holds (the source's windows end at the server's whole-second
        clock, so a change made this second is read by a poll in the next one)."""
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            if condition():
                return
            assert time.monotonic() < deadline, "the source did not deliver the change in time"

    def observed(self, incident: str, field: str, value: str) -> Callable[[], bool]:
        """Whether the servicenow sink has recorded the incident's ``field`` as ``value``."""
        kv = self.fw.store.kv("sink:snow")

        def check() -> bool:
            seen = kv.get(f"observed:{incident}") or {}
            return bool(seen.get("values", {}).get(field) == value)

        return check

    def sync(self) -> Any:
        return self.engine.run_once()

    def defender(self) -> DefenderIncidents:
        return DefenderIncidents(self.config.source("graph").settings, logging.getLogger("test.defender"))

    def close(self) -> None:
        self.engine.close()
        self.fw.close()


@pytest.fixture
def deployment(tmp_path: Path, tenant: Tenant, sn_app: ServiceNowApp, mount: Any) -> Iterator[Deployment]:
    sn = mount(sn_app)
    d = Deployment(config_text(tmp_path, tenant, sn))
    try:
        yield d
    finally:
        d.close()


def analyst(server: Any) -> httpx.Client:
    tls = ssl.create_default_context(cafile=server.ca_file)
    return httpx.Client(base_url=server.url, verify=tls, auth=ANALYST, headers={"Accept": "application/json"})


def ticket_of(app: ServiceNowApp, incident: str) -> dict[str, Any]:
    (ticket,) = [t for t in app.table("incident") if t["correlation_id"].endswith(f":incident:{incident}")]
    return ticket


def first_incident(app: ServiceNowApp) -> str:
    return str(app.table("incident")[0]["correlation_id"].rpartition(":")[2])


def ticket_after_one_pass(text: str, app: ServiceNowApp) -> tuple[str, dict[str, Any]]:
    """One poll and one sync of a ``Deployment`` of ``text`` (closed after), then the first
    incident's id and its ticket in ``app``."""
    d = Deployment(text)
    try:
        d.poll()
        d.sync()
    finally:
        d.close()
    ident = first_incident(app)
    return ident, ticket_of(app, ident)


def settle(d: Deployment, app: ServiceNowApp, tenant: Tenant, quiet: float = 1.5, timeout: float = 60.0) -> None:
    """Poll and sync until neither emulator has received a write for ``quiet`` seconds of
    continuous polling (the source's windows end at whole seconds of the server's clock, so a
    write is seen by a poll up to a second later)."""
    deadline = time.monotonic() + timeout
    last = (app.writes, len(tenant.writes))
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < quiet:
        assert time.monotonic() < deadline, "the two sides did not settle"
        d.poll()
        d.sync()
        now = (app.writes, len(tenant.writes))
        if now != last:
            last, quiet_since = now, time.monotonic()


def test_a_defender_incident_becomes_one_ticket_with_every_mapped_field(deployment, sn_app, tenant) -> None:
    deployment.poll()
    deployment.poll()  # again: updated in place, never a second ticket
    tickets = sn_app.table("incident")
    incidents = {t["correlation_id"].rpartition(":")[2] for t in tickets}
    assert len(tickets) == len(incidents) >= 2
    ident = first_incident(sn_app)
    with _closing(deployment.defender()) as graph:
        incident = graph.get(ident)
    ticket = ticket_of(sn_app, ident)
    assert ticket["short_description"] == f"Purview DLP: {incident['displayName']}"[:160]
    assert f"Defender XDR incident {ident}:" in ticket["description"]
    assert f"/incidents/{ident}" in ticket["description"] and "Severity: " in ticket["description"]
    assert ticket["impact"] == {"high": "1", "medium": "2"}.get(incident["severity"], "3")
    assert ticket["urgency"] in ("2", "3") and ticket["correlation_display"] == "dlpfwd"
    assert ticket["correlation_id"] == f"dlpfwd:{tenant.emu.tenant_id}:incident:{ident}"
    assert [r for r in sn_app.requests if r[0] == "POST"].__len__() == len(tickets)


def test_resolving_the_ticket_resolves_the_incident_within_one_pass(deployment, sn_app, tenant, mount) -> None:
    deployment.poll()
    deployment.sync()  # first pass: the sides agree, nothing written
    assert tenant.writes == []
    ident = first_incident(sn_app)
    ticket = ticket_of(sn_app, ident)
    with analyst(mount(sn_app)) as c:
        r = c.patch(
            f"/api/now/table/incident/{ticket['sys_id']}",
            json={"state": "6", "close_code": "False positive", "close_notes": "test mailbox", "work_notes": "benign"},
        )
        assert r.status_code == 200
    result = deployment.sync()
    assert result.applied >= 1
    with _closing(deployment.defender()) as graph:
        incident = graph.get(ident)
    assert incident["status"] == "resolved"
    assert (incident["classification"], incident["determination"]) == ("falsePositive", "notMalicious")
    comments = [c["comment"] for c in incident.get("comments", [])]
    assert len(comments) == 1 and "benign" in comments[0] and comments[0].startswith("dlpfwd:")
    assert f"ServiceNow ticket {ticket['number']}" in comments[0] and "by analyst" in comments[0]
    # the sink's own refresh of the ticket shows the new Defender status and classification
    shown = "Classification: falsePositive ("  # the event schema spells the determination as the docs do
    deployment.poll_until(lambda: shown in ticket_of(sn_app, ident)["description"])
    assert "Status: resolved" in ticket_of(sn_app, ident)["description"]


def test_reassigning_in_defender_updates_the_ticket_and_writes_stop(deployment, sn_app, tenant) -> None:
    deployment.poll()
    deployment.sync()
    ident = first_incident(sn_app)
    with _closing(deployment.defender()) as graph:
        graph.update(ident, {"assignedTo": "carol@contoso.com"})  # an analyst in the Defender portal
    tenant.writes.clear()
    deployment.poll_until(deployment.observed(ident, "assignedTo", "carol@contoso.com"))  # the source sees it
    deployment.sync()
    ticket = ticket_of(sn_app, ident)
    carol = [u for u in sn_app.table("sys_user") if u["user_name"] == "carol"][0]
    assert ticket["assigned_to"] == carol["sys_id"]
    assert any("carol@contoso.com" in n for n in sn_app.journal(ticket["sys_id"], "work_notes"))
    assert tenant.writes == []  # nothing went back to Defender
    # no ping-pong: once both sides agree, further polls and passes write nothing anywhere
    settle(deployment, sn_app, tenant)
    sn_writes, defender_writes = sn_app.writes, len(tenant.writes)
    for _ in range(3):
        deployment.poll()
        result = deployment.sync()
        assert not result.defender_writes and not result.ticket_writes
    assert (sn_app.writes, len(tenant.writes)) == (sn_writes, defender_writes)
    stats = inbox.stats(deployment.fw.store)
    assert stats["pending"] == 0 and stats.get("total_skipped_echo", 0) + stats.get("total_skipped_unchanged", 0) > 0


def test_both_directions_then_silence(deployment, sn_app, tenant, mount) -> None:
    """Resolve in ServiceNow, reassign in Defender, then many polls: the write counters of both
    emulators stop growing as soon as the sides agree."""
    deployment.poll()
    deployment.sync()
    ident = first_incident(sn_app)
    ticket = ticket_of(sn_app, ident)
    with analyst(mount(sn_app)) as c:
        c.patch(f"/api/now/table/incident/{ticket['sys_id']}", json={"state": "2"}).raise_for_status()
    with _closing(deployment.defender()) as graph:
        graph.update(ident, {"assignedTo": "bob@contoso.com"})
    deployment.poll_until(deployment.observed(ident, "assignedTo", "bob@contoso.com"))
    settle(deployment, sn_app, tenant)
    sn_writes, defender_writes = sn_app.writes, len(tenant.writes)
    for _ in range(3):
        deployment.poll()
        deployment.sync()
    assert (sn_app.writes, len(tenant.writes)) == (sn_writes, defender_writes)
    with _closing(deployment.defender()) as graph:
        incident = graph.get(ident)
    ticket = ticket_of(sn_app, ident)
    bob = [u for u in sn_app.table("sys_user") if u["user_name"] == "bob"][0]
    assert incident["status"] == "inProgress" and incident["assignedTo"] == "bob@contoso.com"
    assert ticket["state"] == "2" and ticket["assigned_to"] == bob["sys_id"]


def test_kill_9_during_a_sync_loses_and_duplicates_nothing(tmp_path, tenant, sn_app, mount) -> None:
    sn = mount(sn_app)
    text = config_text(tmp_path, tenant, sn, interval=1.0)
    ident, ticket = ticket_after_one_pass(text, sn_app)
    with analyst(sn) as c:
        c.patch(
            f"/api/now/table/incident/{ticket['sys_id']}",
            json={"state": "6", "close_code": "Solution provided", "close_notes": "done", "work_notes": "exfil seen"},
        ).raise_for_status()
    patched, release = threading.Event(), threading.Event()

    def hold(request: Request) -> None:
        if request.method == "PATCH" and request.path.endswith(f"/incidents/{ident}"):
            patched.set()  # committed; the answer waits until the forwarder is dead
            release.wait(30)

    tenant.hook = hold
    config = tmp_path / "dlpfwd.toml"
    config.write_text(text)
    code = "import sys; from forwarder.cli import main; sys.exit(main())"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--config", str(config), "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ},
    )
    try:
        deadline = time.monotonic() + 90
        while not patched.is_set() and proc.poll() is None and time.monotonic() < deadline:
            patched.wait(0.1)
        assert patched.is_set(), _stderr(proc) if proc.poll() is not None else "no PATCH in 90 s"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        tenant.hook = None
        release.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    writes_before = list(tenant.writes)
    assert writes_before.count(("PATCH", f"/v1.0/security/incidents/{ident}")) == 1
    d = Deployment(text)  # the restart
    try:
        assert inbox.stats(d.fw.store)["pending"] >= 1  # the change survived the kill, unsettled
        for _ in range(3):
            d.poll()
            d.sync()
        with _closing(d.defender()) as graph:
            incident = graph.get(ident)
        assert incident["status"] == "resolved" and incident["classification"] == "truePositive"
        comments = [c["comment"] for c in incident.get("comments", []) if "exfil seen" in c["comment"]]
        assert len(comments) == 1  # posted once, found again after the restart (marker)
        assert tenant.writes.count(("PATCH", f"/v1.0/security/incidents/{ident}")) == 1  # not repeated
        assert inbox.stats(d.fw.store)["pending"] == 0
    finally:
        d.close()


def _stderr(proc: subprocess.Popen[bytes]) -> str:
    return proc.stderr.read().decode() if proc.stderr is not None else ""


class _closing:
    def __init__(self, graph: DefenderIncidents) -> None:
        self.graph = graph

    def __enter__(self) -> DefenderIncidents:
        return self.graph

    def __exit__(self, *exc: object) -> None:
        self.graph.close()


def test_cli_sync_dry_run_once_and_state(tmp_path, tenant, sn_app, mount, capsys) -> None:
    from forwarder.cli import main

    sn = mount(sn_app)
    text = config_text(tmp_path, tenant, sn)
    config = tmp_path / "dlpfwd.toml"
    config.write_text(text)
    ident, ticket = ticket_after_one_pass(text, sn_app)
    with analyst(sn) as c:
        c.patch(
            f"/api/now/table/incident/{ticket['sys_id']}", json={"state": "6", "close_code": "Resolved by caller"}
        ).raise_for_status()
    capsys.readouterr()
    writes = len(tenant.writes)
    assert main(["sync", "--config", str(config), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"dry run: incident {ident} (servicenow {ticket['sys_id']}@" in out
    assert "'status': 'resolved'" in out and "informationalExpectedActivity/confirmedActivity" in out
    assert len(tenant.writes) == writes  # nothing written
    assert main(["sync", "--config", str(config), "--once"]) == 0
    assert "applied 1" in capsys.readouterr().out
    assert len(tenant.writes) == writes + 1
    assert main(["state", "--config", str(config)]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("status sync:")]
    assert line and "1 applied" in line[0] and "0 pending" in line[0]


def test_a_refused_value_is_dead_lettered_and_throttling_is_retried(deployment, sn_app, tenant, mount) -> None:
    deployment.poll()
    deployment.sync()
    ident = first_incident(sn_app)
    store = deployment.fw.store
    from forwarder.sync.change import StatusChange

    # an inbound change naming an incident Defender does not have: 404 -> dead letter, not retried
    assert inbox.enqueue(store, StatusChange("999999", "inbound", "req-9", "1", status="resolved"))
    # ServiceNow throttles the next requests: the change waits (Retry-After) instead of failing
    assert inbox.enqueue(store, StatusChange(ident, "inbound", "req-10", "1", assigned_to="bob@contoso.com"))
    sn_app.throttle(1, retry_after=1)
    result = deployment.engine.applier.run()
    assert result.dead_lettered == 1 and result.deferred == 1
    ((_, dead, reason),) = inbox.dead(store)
    assert dead.incident_id == "999999" and "404" in reason
    items = inbox.due(store, now=time.time() + 3600)
    assert [i.change.reference for i in items] == ["req-10"]
    # once the retry time has come it is applied: Defender and the ticket both get bob
    with inbox.transaction(store) as tx:
        tx.execute("UPDATE sync_inbox SET next_at = 0 WHERE reference = 'req-10'")
    result = deployment.engine.applier.run()
    assert result.applied == 1
    with _closing(deployment.defender()) as graph:
        assert graph.get(ident)["assignedTo"] == "bob@contoso.com"
    bob = [u for u in sn_app.table("sys_user") if u["user_name"] == "bob"][0]
    assert ticket_of(sn_app, ident)["assigned_to"] == bob["sys_id"]


def test_conflict_ticket_wins_status_defender_wins_assignee(deployment, sn_app, tenant, mount, caplog) -> None:
    deployment.poll()
    deployment.sync()
    ident = first_incident(sn_app)
    ticket = ticket_of(sn_app, ident)
    bob = [u for u in sn_app.table("sys_user") if u["user_name"] == "bob"][0]
    carol = [u for u in sn_app.table("sys_user") if u["user_name"] == "carol"][0]
    # between two passes, both sides change the same fields differently
    with analyst(mount(sn_app)) as c:
        body = {"state": "6", "close_code": "Solution provided", "close_notes": "x", "assigned_to": bob["sys_id"]}
        c.patch(f"/api/now/table/incident/{ticket['sys_id']}", json=body).raise_for_status()
    with _closing(deployment.defender()) as graph:
        graph.update(ident, {"status": "inProgress", "assignedTo": "carol@contoso.com"})
    deployment.poll_until(deployment.observed(ident, "status", "inProgress"))
    with caplog.at_level(logging.WARNING, logger="dlpfwd.sync"):
        result = deployment.sync()
    assert result.conflicts == 2
    assert any("conflict on incident" in r.message and "(status)" in r.message for r in caplog.records)
    with _closing(deployment.defender()) as graph:
        incident = graph.get(ident)
    assert (incident["status"], incident["classification"]) == ("resolved", "truePositive")  # the ticket won
    assert incident["assignedTo"] == "carol@contoso.com"  # Defender won
    assert ticket_of(sn_app, ident)["assigned_to"] == carol["sys_id"] and ticket_of(sn_app, ident)["state"] == "6"
    settle(deployment, sn_app, tenant)
    writes = (sn_app.writes, len(tenant.writes))
    for _ in range(3):
        deployment.poll()
        deployment.sync()
    assert (sn_app.writes, len(tenant.writes)) == writes


def test_unassign_and_a_closed_read_only_ticket(deployment, sn_app, tenant, mount) -> None:
    deployment.poll()
    deployment.sync()
    first, second = sorted({t["correlation_id"].rpartition(":")[2] for t in sn_app.table("incident")})[:2]
    bob = [u for u in sn_app.table("sys_user") if u["user_name"] == "bob"][0]
    with analyst(mount(sn_app)) as c:  # assigned in ServiceNow, then synced to Defender
        c.patch(f"/api/now/table/incident/{ticket_of(sn_app, first)['sys_id']}", json={"assigned_to": bob["sys_id"]})
        c.patch(f"/api/now/table/incident/{ticket_of(sn_app, second)['sys_id']}", json={"state": "7"})
    deployment.sync()
    with _closing(deployment.defender()) as graph:
        assert graph.get(first)["assignedTo"] == "bob@contoso.com"
        assert graph.get(second)["status"] == "resolved"  # Closed maps to resolved
        graph.update(first, {"assignedTo": ""})  # unassigned in Defender
        graph.update(second, {"assignedTo": "carol@contoso.com"})  # the ticket is closed by now
    sn_app.lock_inactive = True  # the instance keeps closed tickets read-only
    deployment.poll_until(deployment.observed(second, "assignedTo", "carol@contoso.com"))
    result = deployment.sync()
    assert ticket_of(sn_app, first).get("assigned_to", "") == ""
    assert result.dead_lettered == 1  # the closed ticket refused the write: that change only
    ((_, dead, reason),) = inbox.dead(deployment.fw.store)
    assert dead.incident_id == second and "closed and read-only" in reason
    assert inbox.stats(deployment.fw.store)["pending"] == 0
