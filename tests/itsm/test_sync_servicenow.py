"""The ServiceNow side of the sync against the emulator over TLS: reading changed tickets
(paging, ownership, look-back), work notes (ours skipped), writing a resolve, assignees by
e-mail, and the emulator's reference fields and dot-walking."""

from __future__ import annotations

import logging
from typing import Any

from emulators.servicenow.app import ServiceNowApp
from sinks.servicenow.ticketsync import ServiceNowPeer

from .conftest import KV, sn_settings

PREFIX = "dlpfwd:t1:incident:"


def make_peer(server: Any, state: Any = None, **sync: Any) -> ServiceNowPeer:
    settings = sn_settings(server, sync={"enabled": True, **sync})
    return ServiceNowPeer("sn", settings, state if state is not None else KV(), logging.getLogger("test.peer"))


def create(app: ServiceNowApp, correlation_id: str, **fields: str) -> str:
    from emulators.servicenow.app import now_text

    with app._lock:  # as a POST would, without the HTTP round trip (many rows)
        app._numbers["incident"] = app._numbers.get("incident", 10000) + 1
        sys_id = f"{app._numbers['incident']:032x}"
        stamp = now_text()
        app.records.setdefault("incident", {})[sys_id] = {
            "sys_id": sys_id,
            "number": f"INC{app._numbers['incident']:07d}",
            "state": "1",
            "active": "true",
            "correlation_id": correlation_id,
            "sys_mod_count": "0",
            "sys_updated_on": stamp,
            "sys_created_on": stamp,
            "sys_updated_by": "dlpfwd",
            **fields,
        }
    return sys_id


def test_changed_tickets_are_paged_owned_only_and_notes_filtered(server, app: ServiceNowApp) -> None:
    ids = [create(app, f"{PREFIX}{4000 + i}") for i in range(130)]
    create(app, "someone-else:t1:incident:9")
    create(app, "dlpfwd:t1:alert:da1")  # an alert ticket: no incident to sync
    app._journal(ids[0], "incident", [("work_notes", "user confirmed the upload")], "analyst", "2099-01-01 00:00:00")
    app._journal(ids[0], "incident", [("work_notes", "dlpfwd: alert linked")], "dlpfwd", "2099-01-01 00:00:00")
    peer = make_peer(server)
    try:
        views, cursor = peer.changes(None)
        assert len(views) == 130 and {v.incident_id for v in views} == {str(4000 + i) for i in range(130)}
        first = next(v for v in views if v.key == ids[0])
        assert [n["text"] for n in first.notes] == ["user confirmed the upload"]
        assert first.notes[0]["author"] == "analyst"
        assert first.raw == {"status": "1", "classification": "", "assignedTo": ""}
        pages = [q for m, p, q in app.requests if p.endswith("/table/incident") and "sysparm_offset" in q]
        assert len(pages) == 2  # 100 + 30, by X-Total-Count
        assert cursor["updated_on"] and "STARTSWITHdlpfwd%3A" in pages[0]
        again, _ = peer.changes(cursor)  # within the look-back: read again (the inbox drops repeats)
        assert len(again) == 130
    finally:
        peer.close()


def test_write_resolves_with_close_code_and_assigns_by_email(server, app: ServiceNowApp) -> None:
    bob = app.add_user("bob", "bob@contoso.com")
    sys_id = create(app, f"{PREFIX}42")
    peer = make_peer(server)
    try:
        view = peer.ticket("42")  # no link in the sink's state: found by correlation_id
        assert view is not None and view.key == sys_id
        defender = {"status": "resolved", "classification": "falsePositive/notMalicious", "assignedTo": ""}
        version, written = peer.write(
            view, {"status": "6", "assignedTo": "Bob@Contoso.com"}, defender, "dlpfwd: resolved in Defender"
        )
        record = app.table("incident")[0]
        assert record["state"] == record["incident_state"] == "6"
        assert record["close_code"] == "No resolution provided"
        assert "falsePositive/notMalicious" in record["close_notes"]
        assert record["assigned_to"] == bob and version == record["sys_mod_count"] == "1"
        assert written == {"status": "6", "classification": "No resolution provided", "assignedTo": "Bob@Contoso.com"}
        live = peer.ticket("42")
        assert live is not None and live.raw["assignedTo"].casefold() == "bob@contoso.com"  # dot-walked e-mail
        # an assignee ServiceNow does not know is not written; a work note says so
        assert live is not None
        _, written = peer.write(live, {"assignedTo": "nobody@contoso.com"}, defender, "")
        assert "assignedTo" not in written and app.table("incident")[0]["assigned_to"] == bob
        assert any("no ServiceNow user" in n for n in app.journal(sys_id, "work_notes"))
    finally:
        peer.close()


def test_reference_fields_render_with_links_and_dot_walk(server, app: ServiceNowApp) -> None:
    import ssl

    import httpx

    carol = app.add_user("carol", "carol@contoso.com")
    sys_id = create(app, f"{PREFIX}7", assigned_to=carol)
    tls = ssl.create_default_context(cafile=server.ca_file)
    with httpx.Client(base_url=server.url, verify=tls, auth=("dlpfwd", "pa55word")) as c:
        row = c.get(f"/api/now/table/incident/{sys_id}", params={"sysparm_fields": "assigned_to,assigned_to.email"})
        result = row.json()["result"]
        assert result["assigned_to"] == {"link": f"{server.url}/api/now/table/sys_user/{carol}", "value": carol}
        assert result["assigned_to.email"] == "carol@contoso.com"
        plain = c.get(
            f"/api/now/table/incident/{sys_id}",
            params={"sysparm_fields": "assigned_to", "sysparm_exclude_reference_link": "true"},
        )
        assert plain.json()["result"] == {"assigned_to": carol}


def test_run_records_a_sync_that_cannot_start(tmp_path, server, app: ServiceNowApp) -> None:
    import threading

    from forwarder.cli.state_commands import health_problems
    from forwarder.config import load_config
    from forwarder.plugins import PluginHost
    from forwarder.runtime import Forwarder

    records = tmp_path / "records.jsonl"
    records.touch()
    text = f'''
[forwarder]
state_dir = "{tmp_path / "state"}"
[[sources]]
name = "drill"
type = "sample"
path = "{records}"
[[sinks]]
name = "snow"
type = "servicenow"
instance_url = "{server.url}"
username = "dlpfwd"
password = "pa55word"
[sinks.http]
ca_bundle = "{server.ca_file}"
[sinks.sync]
enabled = true
'''
    host = PluginHost().load()
    fw = Forwarder(load_config(text, host), host)
    try:
        stop = threading.Event()
        stop.set()  # start everything, then shut down at once
        fw.run(stop)
        stopped = fw.store.stopped()
        assert "sync:snow" in stopped and "sinks.snow.sync.source" in stopped["sync:snow"]["reason"]
        store: Any = fw.store
        assert any(p.startswith("sync sync:snow: stopped") for p in health_problems(store))
    finally:
        fw.close()
