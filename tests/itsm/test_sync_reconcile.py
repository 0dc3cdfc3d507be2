"""The per-field decision of the sync (pure): agreement, one side changed, conflicts and the
rule, lossy mappings, no shadow yet, inbound requests."""

from __future__ import annotations

from typing import Any

from forwarder.settings import build
from forwarder.sync.change import StatusChange
from forwarder.sync.reconcile import DEFENDER, TICKET, next_shadow, plan
from sinks.servicenow.settings import ServiceNowSettings
from sinks.servicenow.ticketsync import ServiceNowPeer, incident_of, mapping_problems


class _KV:
    def get(self, key: str, default: Any = None) -> Any:
        return default


def peer(**sync: Any) -> ServiceNowPeer:
    problems: list[str] = []
    settings = build(ServiceNowSettings, {"instance_url": "https://sn.example", "sync": sync}, "sinks.sn", problems)
    assert not problems and settings is not None
    import logging

    return ServiceNowPeer("sn", settings, _KV(), logging.getLogger("t"))


P = peer()
WINS = {"status", "classification"}


def D(status: str = "active", cls: str = "unknown/unknown", who: str = "") -> dict[str, str]:
    return {"status": status, "classification": cls, "assignedTo": who}


def T(state: str = "1", code: str = "", who: str = "") -> dict[str, str]:
    return {"status": state, "classification": code, "assignedTo": who}


def sn(version: str = "3") -> StatusChange:
    return StatusChange("42", "servicenow", "sys1", version, status="resolved")


def df(version: str = "2026-11-23T10:00:00Z") -> StatusChange:
    return StatusChange("42", "defender", "42", version, status="active")


def shadow(d: dict[str, str], t: dict[str, str]) -> dict[str, dict[str, str]]:
    return {"defender": d, "ticket": t}


def decide(change: StatusChange, d: dict[str, str], t: dict[str, str] | None, sh: dict[str, Any]) -> Any:
    return plan(change, d, t, sh, P.to_defender, P.to_ticket, WINS)


def test_resolving_the_ticket_resolves_the_incident_with_the_mapped_classification() -> None:
    result = decide(sn(), D(), T("6", "Solution provided"), shadow(D(), T()))
    assert result.defender == {"status": "resolved", "classification": "truePositive/other"}
    assert result.ticket == {} and result.conflicts == []


def test_agreeing_sides_get_no_write_even_when_both_changed() -> None:
    result = decide(sn(), D("resolved", "truePositive/other"), T("6", "Solution provided"), shadow(D(), T()))
    assert result.empty and result.conflicts == []


def test_defender_change_goes_to_the_ticket_with_a_close_code_on_resolve() -> None:
    result = decide(df(), D("resolved", "falsePositive/notMalicious", "bob@contoso.com"), T(), shadow(D(), T()))
    assert result.ticket == {"status": "6", "classification": "No resolution provided", "assignedTo": "bob@contoso.com"}
    assert result.defender == {}


def test_lossy_mapping_is_not_a_change() -> None:
    # On Hold (3) and In Progress (2) both mean inProgress; the ticket moved 2 -> 3 (still inProgress)
    # while Defender says active since the last sync: only Defender changed, the ticket follows.
    result = decide(df(), D("active"), T("3"), shadow(D("inProgress"), T("2")))
    assert result.ticket == {"status": "1"} and result.conflicts == []
    # and a ticket change between two states meaning the same leaves Defender alone
    assert decide(sn(), D("inProgress"), T("3"), shadow(D("inProgress"), T("2"))).empty


def test_conflict_ticket_wins_status_defender_wins_assignee() -> None:
    result = decide(
        sn(),
        D("inProgress", who="alice@contoso.com"),
        T("6", "Solution provided", who="carol@contoso.com"),
        shadow(D(), T()),
    )
    winners = {c.group: c.winner for c in result.conflicts}
    assert winners == {"status": TICKET, "assignedTo": DEFENDER}
    assert result.defender == {"status": "resolved", "classification": "truePositive/other"}
    assert result.ticket == {"assignedTo": "alice@contoso.com"}


def test_the_rule_is_configurable() -> None:
    result = plan(
        sn(), D("inProgress"), T("6", "Solution provided"), shadow(D(), T()), P.to_defender, P.to_ticket, set()
    )
    assert [c.winner for c in result.conflicts] == [DEFENDER]
    assert result.ticket == {"status": "2"} and "status" not in result.defender


def test_assignees_compare_case_insensitively_and_unknown_users_mean_nothing() -> None:
    assert decide(df(), D(who="Bob@Contoso.com"), T(who="bob@contoso.com"), shadow(D(), T())).empty
    # an assigned_to without an e-mail ('#<sys_id>') has no Defender meaning: Defender's value stays
    result = decide(sn(), D(who="bob@contoso.com"), T(who="#abc"), shadow(D(who="bob@contoso.com"), T()))
    assert "assignedTo" not in result.defender


def test_inbound_request_is_written_and_the_ticket_follows() -> None:
    change = StatusChange("42", "inbound", "req-1", "1", status="resolved", classification="falsePositive")
    result = decide(change.normalized(), D(), T(), shadow(D(), T()))
    assert result.defender == {"status": "resolved", "classification": "falsePositive/unknown"}
    assert result.ticket == {"status": "6", "classification": "No resolution provided"}


def test_next_shadow_records_what_both_sides_hold() -> None:
    result = decide(sn(), D(), T("6", "Solution provided"), shadow(D(), T()))
    new = next_shadow({"notes": []}, D(), T("6", "Solution provided"), result, {})
    assert new["defender"] == D("resolved", "truePositive/other")
    assert new["ticket"] == T("6", "Solution provided")


def test_mapping_problems_and_correlation_ids() -> None:
    problems: list[str] = []
    settings = build(
        ServiceNowSettings,
        {
            "instance_url": "https://sn.example",
            "sync": {"states": {"9": "closed"}, "statuses": {"inProgress": "3"}, "close_codes": {"X": "benign/other"}},
        },
        "sinks.sn",
        problems,
    )
    assert settings is not None
    found = "\n".join(mapping_problems(settings, "sinks.sn"))
    assert "sinks.sn.sync.states.9: expected one of" in found
    assert "sinks.sn.sync.close_codes.X:" in found
    assert incident_of("dlpfwd:t1:incident:42") == "42" and incident_of("dlpfwd:t1:alert:a1") == ""
    assert mapping_problems(P.settings, "sinks.sn") == []


def test_dlpfwd_permissions_lists_what_the_sync_needs() -> None:
    from types import SimpleNamespace as NS

    from forwarder.correlation.permissions import needs

    source = NS(name="g", type="graph_security", options=NS(enabled=True), settings=NS(alerts=True, incidents=True))
    sink = NS(name="snow", settings=NS(sync=NS(enabled=True, source="")))
    wanted = needs(NS(sources=[source], sinks=[sink], correlation=None))
    sync = [n for n in wanted if "status sync of sink snow" in n.feature]
    assert [(n.permission, n.source) for n in sync] == [("SecurityIncident.ReadWrite.All", "g")]
