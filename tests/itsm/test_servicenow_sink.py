"""The servicenow sink against the emulator: one ticket per incident, updated in place."""

from __future__ import annotations

import logging

import orjson
import pytest

from emulators.servicenow.app import ServiceNowApp
from forwarder.errors import ConfigError
from forwarder.sink import SinkContext
from sinks.servicenow.sink import ServiceNowSink

from .conftest import KV, SECRET_VALUE, TENANT, alert, entries, incident, make_sink, sn_settings


def tickets(app: ServiceNowApp, table: str = "incident") -> list[dict]:
    return app.table(table)


def test_incident_becomes_one_ticket_with_every_mapped_field(server, app):
    sink = make_sink(server)
    out = sink.write_batch(entries(incident()))
    assert out.delivered == [1] and not out.retry and not out.rejected
    (t,) = tickets(app)
    assert t["correlation_id"] == f"dlpfwd:{TENANT}:incident:42"
    assert t["short_description"].startswith("Purview DLP: DLP policy match for document 'budget.xlsx'")
    assert (t["impact"], t["urgency"], t["priority"]) == ("1", "2", "2")  # high -> 1/2 -> priority 2
    d = t["description"]
    for needle in [
        "Defender XDR incident 42",
        "Severity: high",
        "Status: active",
        "Workload: SharePoint",
        "Time: 2026-11-23T10:00:00Z (updated 2026-11-23T10:05:00Z)",
        "User: Alice Example <alice@contoso.com>",
        "Policies: Finance DLP (rules: Block external sharing [actions: BlockAccess])",
        "Sensitive info types: Credit Card Number (count 3, confidence 85)",
        "Object: file budget.xlsx at https://contoso.sharepoint.com/sites/fin/budget.xlsx",
        "Alerts: da1, da2",
        f"Defender XDR incident: https://security.microsoft.com/incidents/42?tid={TENANT}",
    ]:
        assert needle in d, needle
    assert SECRET_VALUE not in orjson.dumps(app.records).decode()
    assert sink.state.get(f"link:{t['correlation_id']}")["sys_id"] == t["sys_id"]


def test_updates_patch_only_changed_fields_and_never_make_a_second_ticket(server, app):
    sink = make_sink(server)
    sink.write_batch(entries(incident()))
    writes = app.writes
    # the same version again: nothing to write
    assert sink.write_batch(entries(incident(), start=2)).delivered == [2]
    assert app.writes == writes
    # severity goes down, status changes
    newer = incident(updated="2026-11-23T11:00:00Z", severity="low", status="inProgress")
    assert sink.write_batch(entries(newer, start=3)).delivered == [3]
    (t,) = tickets(app)
    assert (t["impact"], t["urgency"]) == ("3", "2")
    assert "Status: inProgress" in t["description"]
    notes = app.journal(t["sys_id"], "work_notes")
    assert len(notes) == 1 and "changed: description, impact" in notes[0]
    # an older version arriving late changes nothing
    writes = app.writes
    assert sink.write_batch(entries(incident(updated="2026-11-23T10:30:00Z"), start=4)).delivered == [4]
    assert app.writes == writes
    assert tickets(app)[0]["impact"] == "3"


def test_alerts_of_an_incident_share_its_ticket_and_add_work_notes(server, app):
    sink = make_sink(server)
    out = sink.write_batch(entries(incident(), alert("da1"), alert("da2"), alert("da1")))
    assert out.delivered == [1, 2, 3, 4]
    (t,) = tickets(app)
    assert t["short_description"].startswith("Purview DLP: DLP policy match")  # alerts did not overwrite it
    notes = app.journal(t["sys_id"], "work_notes")
    assert [n.split(":")[1].strip() for n in notes] == ["alert da1 linked", "alert da2 linked"]
    # a new version of da1 is noted once
    sink.write_batch(entries(alert("da1", updated="2026-11-23T12:00:00Z", status="resolved"), start=5))
    notes = app.journal(t["sys_id"], "work_notes")
    assert len(notes) == 3 and "alert da1 updated" in notes[-1] and "status resolved" in notes[-1]


def test_alert_first_then_incident_takes_over_the_same_ticket(server, app):
    sink = make_sink(server)
    sink.write_batch(entries(alert("da1")))
    sink.write_batch(entries(incident(), start=2))
    (t,) = tickets(app)
    assert t["short_description"].startswith("Purview DLP: DLP policy match")
    assert t["impact"] == "1"


def test_alert_without_incident_gets_its_own_ticket_and_group_by_event(server, app):
    sink = make_sink(server)
    sink.write_batch(entries(alert("lonely", incident_id=""), alert("other", incident_id="")))
    assert sorted(t["correlation_id"] for t in tickets(app)) == [
        f"dlpfwd:{TENANT}:alert:lonely",
        f"dlpfwd:{TENANT}:alert:other",
    ]
    per_event = make_sink(server, group_by="event", correlation_prefix="ev")
    per_event.write_batch(entries(incident("7"), alert("a7", incident_id="7")))
    ids = sorted(t["correlation_id"] for t in tickets(app) if t["correlation_id"].startswith("ev:"))
    assert ids == [f"ev:{TENANT}:alert:a7", f"ev:{TENANT}:incident:7"]


def test_lost_reply_after_create_never_duplicates(server, app):
    """The emulator commits the POST then answers 500 (as a kill -9 before the state write would
    look): the retry finds the ticket by correlation_id and updates it."""
    state = KV()
    sink = make_sink(server, state=state)
    app.fail_after_write(1)
    out = sink.write_batch(entries(incident()))
    assert out.retry == [1] and not out.delivered and state.data == {}
    assert len(tickets(app)) == 1
    out = sink.write_batch(entries(incident()))
    assert out.delivered == [1]
    assert len(tickets(app)) == 1
    assert state.get(f"link:dlpfwd:{TENANT}:incident:42")["sys_id"] == tickets(app)[0]["sys_id"]


def test_restart_with_empty_state_adopts_the_existing_ticket(server, app):
    make_sink(server).write_batch(entries(incident()))
    fresh = make_sink(server, state=KV())  # e.g. state lost, or the kill -9 case
    fresh.write_batch(entries(incident(updated="2026-11-23T12:00:00Z", severity="medium"), start=2))
    (t,) = tickets(app)
    assert t["impact"] == "2"


def test_deleted_ticket_is_created_again(server, app):
    sink = make_sink(server)
    sink.write_batch(entries(incident()))
    app.records["incident"].clear()
    sink.write_batch(entries(incident(updated="2026-11-23T12:00:00Z", severity="low"), start=2))
    assert len(tickets(app)) == 1


def test_throttling_and_5xx_retry_with_retry_after(server, app):
    sink = make_sink(server)
    sink.write_batch(entries(incident("1")))
    app.throttle(1, retry_after=9)
    out = sink.write_batch(entries(incident("2"), incident("3"), start=2))
    assert out.retry == [2, 3] and out.retry_after == 9.0 and "429" in out.retry_reason
    app.fail(1, 503)
    out = sink.write_batch(entries(incident("2"), incident("3"), start=2))
    assert out.retry == [2, 3] and "503" in out.retry_reason
    out = sink.write_batch(entries(incident("2"), incident("3"), start=2))
    assert out.delivered == [2, 3]
    assert len(tickets(app)) == 3


def test_bad_credentials_stop_the_sink_naming_the_setting(server, app):
    sink = make_sink(server, password="wrong")
    out = sink.write_batch(entries(incident()))
    assert out.fatal and "sinks.sn.username/password" in out.fatal and "wrong" not in out.fatal
    assert out.retry == [1] and not tickets(app)


def test_acl_refusal_is_fatal_and_invalid_table_names_the_setting(server, app):
    app.read_only.add("dlpfwd")
    out = make_sink(server).write_batch(entries(incident()))
    assert out.fatal and "403" in out.fatal and "roles" in out.fatal
    app.read_only.clear()
    app.tables = {"incident"}
    out = make_sink(server, table="sn_si_incidnet").write_batch(entries(incident()))
    assert out.fatal and "sinks.sn.table" in out.fatal


def test_400_rejects_only_that_event(server, app):
    sink = make_sink(server)
    original = app.create

    def picky(request):
        if b"reject-me" in request.body:
            from emulators.servicenow.app import error

            return error(400, "Invalid value", "field short_description rejected by a data policy")
        return original(request)

    app.routes = [(m, p, picky if h == original else h) for m, p, h in app.routes]
    out = sink.write_batch(entries(incident("1"), incident("2", title="reject-me"), incident("3")))
    assert out.delivered == [1, 3]
    assert list(out.rejected) == [2] and "data policy" in out.rejected[2]


def test_hibernating_instance_is_retried(server, app):
    app.hibernating = True
    out = make_sink(server).write_batch(entries(incident()))
    assert out.retry == [1] and "hibernating" in out.retry_reason


def test_oauth_client_credentials(server, app):
    sink = make_sink(
        server, auth="oauth", client_id="dlpfwd-client", client_secret="cl1ent-secret", username="", password=None
    )
    assert sink.write_batch(entries(incident())).delivered == [1]
    assert tickets(app)[0]["sys_created_by"] == "dlpfwd.oauth"
    app.expire_tokens()  # a revoked token: fetched again once, transparently
    assert sink.write_batch(entries(incident("2"), start=2)).delivered == [2]
    assert app.tokens_issued == 2
    bad = make_sink(server, auth="oauth", client_id="dlpfwd-client", client_secret="nope", username="", password=None)
    out = bad.write_batch(entries(incident("3")))
    assert out.fatal and "client_secret" in out.fatal and "nope" not in out.fatal


def test_field_overrides_templates_and_create_only(server, app):
    sink = make_sink(
        server,
        table="sn_si_incident",
        fields={
            "short_description": "[{severity}] {user.upn}: {title}",
            "description": "",
            "assignment_group": "Security Operations",
            "u_defender_link": "{incident_link}",
        },
    )
    sink.write_batch(entries(incident()))
    (t,) = tickets(app, "sn_si_incident")
    assert t["short_description"].startswith("[high] alice@contoso.com: DLP policy match")
    assert "description" not in t
    assert t["assignment_group"] == "Security Operations"
    assert t["u_defender_link"].startswith("https://security.microsoft.com/incidents/42")
    assert t["number"].startswith("SIR")


def test_bad_templates_and_missing_credentials_are_config_errors(server):
    with pytest.raises(ConfigError) as info:
        make_sink(
            server,
            password=None,
            fields={"description": "{sensitive_types.0.detected_values}", "x": "{nosuch}", "correlation_id": "x"},
            impact={"high": "0"},
        )
    text = str(info.value)
    for needle in [
        "sinks.sn.password: required",
        "sinks.sn.fields.description: {sensitive_types.0.detected_values} is not allowed",
        "sinks.sn.fields.x: {nosuch} is neither",
        "sinks.sn.fields.correlation_id: set by the sink itself",
        "sinks.sn.impact.high: expected",
    ]:
        assert needle in text, needle


def test_health(server, app):
    assert make_sink(server).health().ok
    assert not make_sink(server, password="wrong").health().ok


def test_without_host_state_the_lookup_still_prevents_duplicates(server, app):
    ctx = SinkContext("sn", logging.getLogger("t"), state=None)
    for _ in range(2):
        ServiceNowSink("sn", sn_settings(server), ctx).write_batch(entries(incident()))
    assert len(tickets(app)) == 1


def test_docs_cover_every_setting_and_view_name():
    from pathlib import Path

    from forwarder.settings import describe
    from sinks.servicenow.mapping import VIEW_NAMES
    from sinks.servicenow.settings import ServiceNowSettings
    from sinks.webhook.settings import WebhookSettings

    docs = (Path(__file__).parents[2] / "docs" / "itsm.md").read_text()
    for cls in (ServiceNowSettings, WebhookSettings):
        for key, *_ in describe(cls):
            if not key.startswith("http."):
                assert f"`{key}`" in docs, f"docs/itsm.md does not document {cls.__name__}.{key}"
    for name in VIEW_NAMES:
        assert f"| `{name}` |" in docs, f"docs/itsm.md does not document the view name {name}"


def test_a_table_without_correlation_id_never_adopts_someone_elses_ticket(server, app):
    """ServiceNow ignores a query condition on an unknown column and returns every row; the
    sink must not take such a row for its own ticket."""
    app.columns["u_dlp_case"] = {"short_description", "description", "impact", "urgency", "correlation_display"}
    make_sink(server, table="u_dlp_case").write_batch(entries(incident("1")))
    (first,) = app.table("u_dlp_case")
    assert "correlation_id" not in first  # the column does not exist: the value was dropped
    make_sink(server, table="u_dlp_case", state=KV()).write_batch(entries(incident("2", title="second")))
    rows = app.table("u_dlp_case")
    assert len(rows) == 2
    assert rows[0]["short_description"] == first["short_description"]  # untouched


def test_a_closed_read_only_ticket_is_left_alone_not_a_fatal_error(server, app):
    sink = make_sink(server)
    sink.write_batch(entries(incident()))
    (t,) = app.table("incident")
    app.records["incident"][t["sys_id"]].update(state="7", active="false")
    app.lock_inactive = True
    out = sink.write_batch(entries(incident(updated="2026-11-23T12:00:00Z", severity="low"), start=2))
    assert out.delivered == [2] and not out.fatal
    assert len(app.table("incident")) == 1 and app.table("incident")[0]["impact"] == "1"
    # an open ticket refused with 403 still stops the sink (a missing role)
    app.read_only.add("dlpfwd")
    out = sink.write_batch(entries(incident("9"), start=3))
    assert out.fatal


def test_audit_records_get_kind_prefixed_correlation_ids_and_id_less_events_are_rejected(server, app):
    from forwarder.schema import DlpEvent

    sink = make_sink(server)
    audit = DlpEvent(id="5f7a9c1e-0000-4000-8000-000000000001", kind="audit", tenant_id=TENANT, title="rule match")
    out = sink.write_batch(entries(audit, DlpEvent(kind="audit", title="no id")))
    assert out.delivered == [1] and list(out.rejected) == [2]
    assert app.table("incident")[0]["correlation_id"] == f"dlpfwd:{TENANT}:audit:5f7a9c1e-0000-4000-8000-000000000001"


def test_stale_check_compares_times_not_strings(server, app):
    sink = make_sink(server)
    sink.write_batch(entries(incident(updated="2026-11-23T10:05:00.500000Z")))
    # "…:00Z" sorts after "…:00.500000Z" as text, but it is older
    sink.write_batch(entries(incident(updated="2026-11-23T10:05:00Z", severity="low"), start=2))
    assert app.table("incident")[0]["impact"] == "1"
    sink.write_batch(entries(incident(updated="2026-11-23T10:05:01Z", severity="low"), start=3))
    assert app.table("incident")[0]["impact"] == "3"
