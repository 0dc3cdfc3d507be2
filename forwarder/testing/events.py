"""Canonical DLP events for plugin tests: one per kind of record dlpfwd forwards, plus
hostile strings. Each call returns fresh objects (tests may mutate them)."""

from __future__ import annotations

from typing import Any

from forwarder.schema import (
    KIND_ALERT,
    KIND_AUDIT,
    KIND_INCIDENT,
    DetectedValue,
    Device,
    DlpEvent,
    Identity,
    Label,
    Links,
    ObjectRef,
    Override,
    PolicyMatch,
    Related,
    RuleMatch,
    SensitiveType,
)

TENANT = "8c6a1b2e-4f3d-4e2a-9b1c-0d2e3f4a5b6c"
CARD_SIT = "50842eb7-edc8-4019-85dd-5a5c1f2bb085"

#: Strings that break naive formatters: CEF/LEEF/syslog delimiters, JSON escapes, newlines,
#: Unicode line separators, bidi overrides, emoji, a NUL, non-BMP and combining characters.
HOSTILE_STRINGS = [
    "pipe | equals = backslash \\ caret ^ tab\t end",
    "line1\nline2\r\nline3",
    "ls\u2028ps\u2029nel\u0085",
    "bidi \u202egnp.exe\u202c",
    "emoji 🔥📁 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 and combining e\u0301",
    'quote " and ] and [sd@32473 x="y"] <134>1 - - -',
    "nul\x00byte and bell\x07",
    "CEF:0|Evil|Forged|1|100|forged|10|src=6.6.6.6",
    "x" * 5000,
]


def rule_match_exchange() -> DlpEvent:
    """A Management Activity DlpRuleMatch on an email, with a detected (raw) value."""
    record_id = "5f7a9c1e-0000-4000-8000-000000000001"
    raw: dict[str, Any] = {
        "Id": record_id,
        "RecordType": 13,
        "CreationTime": "2026-11-20T09:15:02",
        "Operation": "DlpRuleMatch",
        "OrganizationId": TENANT,
        "Workload": "Exchange",
        "UserId": "megan.bowen@contoso.com",
        "IncidentId": "a1b2c3d4-0000-4000-8000-00000000000a",
        "ExchangeMetaData": {
            "MessageID": "<MW2PR.1@contoso.com>",
            "From": "megan.bowen@contoso.com",
            "To": ["partner@fabrikam.example"],
            "Subject": "Q4 card list",
        },
        "PolicyDetails": [
            {
                "PolicyId": "11111111-2222-3333-4444-555555555555",
                "PolicyName": "PCI outbound",
                "Rules": [
                    {
                        "RuleId": "66666666-7777-8888-9999-000000000000",
                        "RuleName": "Cards to external",
                        "Severity": "High",
                        "Actions": ["BlockAccess", "NotifyUser", "GenerateAlert"],
                        "ConditionsMatched": {
                            "SensitiveInformation": [
                                {
                                    "SensitiveType": CARD_SIT,
                                    "Count": 2,
                                    "Confidence": 85,
                                    "Location": "Message Body",
                                    "SensitiveInformationDetections": {
                                        "DetectedValues": [
                                            {"Name": "Credit Card Number", "Value": "4111111111111111"},
                                            {"Name": "Credit Card Number", "Value": "5500000000000004"},
                                        ],
                                        "ResultsTruncated": False,
                                    },
                                }
                            ]
                        },
                    }
                ],
            }
        ],
        "SensitiveInfoDetectionIsIncluded": True,
    }
    return DlpEvent(
        id=record_id,
        idempotency_key=record_id,
        kind=KIND_AUDIT,
        operation="DlpRuleMatch",
        event_time="2026-11-20T09:15:02Z",
        updated_time="2026-11-20T09:15:02Z",
        ingest_time="2026-11-20T09:20:00Z",
        tenant_id=TENANT,
        source="contoso-audit",
        source_type="management_activity",
        record_type=13,
        workload="Exchange",
        severity="high",
        title="DLP rule 'Cards to external' matched an email",
        policies=[
            PolicyMatch(
                id="11111111-2222-3333-4444-555555555555",
                name="PCI outbound",
                rules=[
                    RuleMatch(
                        id="66666666-7777-8888-9999-000000000000",
                        name="Cards to external",
                        severity="High",
                        actions=["BlockAccess", "NotifyUser", "GenerateAlert"],
                    )
                ],
            )
        ],
        user=Identity(upn="megan.bowen@contoso.com"),
        sender="megan.bowen@contoso.com",
        recipients=["partner@fabrikam.example"],
        object=ObjectRef(type="email", name="Q4 card list", subject="Q4 card list", message_id="<MW2PR.1@contoso.com>"),
        sensitive_types=[
            SensitiveType(
                id=CARD_SIT,
                name="Credit Card Number",
                count=2,
                unique_count=2,
                confidence=85,
                location="Message Body",
                detected_values=[
                    DetectedValue("Credit Card Number", "4111111111111111"),
                    DetectedValue("Credit Card Number", "5500000000000004"),
                ],
            )
        ],
        related=Related(incident_ids=["a1b2c3d4-0000-4000-8000-00000000000a"]),
        links=Links(purview="https://purview.microsoft.com/datalossprevention/alerts"),
        raw=raw,
    )


def rule_undo_sharepoint() -> DlpEvent:
    """A DlpRuleUndo on a SharePoint file after a user override with justification."""
    return DlpEvent(
        id="5f7a9c1e-0000-4000-8000-000000000002",
        idempotency_key="5f7a9c1e-0000-4000-8000-000000000002",
        kind=KIND_AUDIT,
        operation="DlpRuleUndo",
        event_time="2026-11-20T10:01:00Z",
        updated_time="2026-11-20T10:01:00Z",
        ingest_time="2026-11-20T10:05:00Z",
        tenant_id=TENANT,
        source="contoso-audit",
        source_type="management_activity",
        record_type=11,
        workload="SharePoint",
        severity="medium",
        title="DLP action undone on a file",
        policies=[
            PolicyMatch(
                id="22222222-2222-3333-4444-555555555555",
                name="HR data",
                rules=[RuleMatch(id="r-hr-1", name="Salaries shared externally", overridden_actions=["BlockAccess"])],
            )
        ],
        override=Override(justification="Business need: payroll audit", reason="Override", rule_ids=["r-hr-1"]),
        user=Identity(upn="alex.wilber@contoso.com", object_id="0b1c2d3e-0000-4000-8000-0000000000aa"),
        object=ObjectRef(
            type="file",
            name="salaries-2026.xlsx",
            url="https://contoso.sharepoint.com/sites/HR/Shared Documents/salaries-2026.xlsx",
            size=48213,
            site="https://contoso.sharepoint.com/sites/HR",
        ),
        labels=[Label(id="d9f23ae3-0000-4000-8000-000000000001", name="Confidential")],
        raw={"Id": "5f7a9c1e-0000-4000-8000-000000000002", "Operation": "DlpRuleUndo", "RecordType": 11},
    )


def endpoint_usb_copy() -> DlpEvent:
    """An endpoint DLP record: a file copied to removable media."""
    return DlpEvent(
        id="5f7a9c1e-0000-4000-8000-000000000003",
        idempotency_key="5f7a9c1e-0000-4000-8000-000000000003",
        kind=KIND_AUDIT,
        operation="FileCopiedToRemovableMedia",
        event_time="2026-11-20T11:30:00Z",
        updated_time="2026-11-20T11:30:00Z",
        ingest_time="2026-11-20T11:40:00Z",
        tenant_id=TENANT,
        source="contoso-audit",
        source_type="management_activity",
        record_type=63,
        workload="Endpoint",
        severity="high",
        title="File copied to USB",
        user=Identity(upn="diego.siciliani@contoso.com"),
        object=ObjectRef(
            type="file",
            name="patients.csv",
            path="C:\\Users\\diego\\Documents\\patients.csv",
            size=1_204_112,
            sha1="a9993e364706816aba3e25717850c26c9cd0d89d",
            sha256="ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        ),
        device=Device(
            name="DESKTOP-7Q2", id="f0e1d2c3b4a5", platform="Windows", application="explorer.exe", target="E:\\"
        ),
        client_ip="10.1.2.3",
        sensitive_types=[SensitiveType(id="sit-us-ssn", name="U.S. Social Security Number (SSN)", count=40)],
    )


def graph_alert() -> DlpEvent:
    """A Graph alerts_v2 DLP alert, updated after creation."""
    return DlpEvent(
        id="da637f9a1b2c3d4e5f",
        idempotency_key="da637f9a1b2c3d4e5f@2026-11-20T12:10:00.1234567Z",
        kind=KIND_ALERT,
        operation="DataLossPrevention",
        event_time="2026-11-20T12:00:00.123456Z",
        updated_time="2026-11-20T12:10:00.123456Z",
        ingest_time="2026-11-20T12:15:00Z",
        tenant_id=TENANT,
        source="contoso-graph",
        source_type="graph_security",
        workload="Exchange",
        severity="high",
        status="inProgress",
        classification="truePositive",
        determination="other",
        title="DLP policy match for email 'Q4 card list'",
        description="Cards sent to an external recipient.",
        policies=[PolicyMatch(id="11111111-2222-3333-4444-555555555555", name="PCI outbound")],
        user=Identity(upn="megan.bowen@contoso.com", object_id="0b1c2d3e-0000-4000-8000-0000000000bb"),
        links=Links(alert="https://security.microsoft.com/alerts/da637f9a1b2c3d4e5f"),
        related=Related(incident_ids=["42"]),
        raw={"id": "da637f9a1b2c3d4e5f", "serviceSource": "dataLossPrevention"},
    )


def graph_incident() -> DlpEvent:
    """A Graph incident grouping DLP alerts, resolved."""
    return DlpEvent(
        id="42",
        idempotency_key="42@2026-11-21T08:00:00Z",
        kind=KIND_INCIDENT,
        operation="incident",
        event_time="2026-11-20T12:00:05Z",
        updated_time="2026-11-21T08:00:00Z",
        ingest_time="2026-11-21T08:05:00Z",
        tenant_id=TENANT,
        source="contoso-graph",
        source_type="graph_security",
        severity="medium",
        status="resolved",
        classification="falsePositive",
        title="DLP incident involving one user",
        links=Links(incident="https://security.microsoft.com/incidents/42"),
        related=Related(alert_ids=["da637f9a1b2c3d4e5f"]),
    )


def empty_event() -> DlpEvent:
    """An event with nothing but an id: every other field is at its empty default."""
    return DlpEvent(id="empty-1", idempotency_key="empty-1")


def hostile_event(index: int = 0) -> DlpEvent:
    """An event whose free-text fields carry one of :data:`HOSTILE_STRINGS`."""
    text = HOSTILE_STRINGS[index % len(HOSTILE_STRINGS)]
    event = rule_undo_sharepoint()
    event.id = event.idempotency_key = f"hostile-{index}"
    event.raw = {"Id": event.id, "Note": text}
    event.title = event.description = text
    event.user.upn = event.sender = text
    event.object.name = event.object.path = text
    event.override.justification = text
    event.policies[0].name = text
    event.recipients = [text, "ok@example.com"]
    return event


def sample_events() -> list[DlpEvent]:
    """Realistic events of each kind, an empty one, and one per hostile string."""
    events = [rule_match_exchange(), rule_undo_sharepoint(), endpoint_usb_copy(), graph_alert(), graph_incident()]
    events.append(empty_event())
    events.extend(hostile_event(i) for i in range(len(HOSTILE_STRINGS)))
    return events
