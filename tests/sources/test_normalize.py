"""Normalizers on realistic records of every DLP kind."""

from __future__ import annotations

import copy

import pytest

from forwarder.errors import MalformedRecord
from forwarder.schema import from_json, to_json
from forwarder.source import NormalizeContext
from sources.normalize.graph import normalize_alert, normalize_incident
from sources.normalize.management_activity import normalize_audit_record, normalize_graph_audit_record
from tests.sources import records as R

CTX = NormalizeContext(
    source="contoso",
    source_type="management_activity",
    tenant_id=R.TENANT,
    sit_names={R.SSN: "U.S. Social Security Number (SSN)"},
    ingest_time="2026-11-21T00:00:00Z",
)


def one(data, fn=normalize_audit_record, ctx=CTX):
    events = fn(copy.deepcopy(data), ctx)
    assert len(events) == 1
    event = events[0]
    assert from_json(to_json(event)) == event  # every event round-trips
    return event


def test_exchange_rule_match():
    e = one(R.EXCHANGE_MATCH)
    assert e.id == "audit:6e0b7a54-4c5e-4b1a-8d5b-2f0c0c1a0001"
    assert e.idempotency_key == "audit:6e0b7a54-4c5e-4b1a-8d5b-2f0c0c1a0001@2026-11-20T10:11:15Z#dlprulematch"
    assert e.kind == "audit" and e.operation == "DlpRuleMatch"
    assert e.event_time == e.updated_time == "2026-11-20T10:11:15Z"
    assert e.record_type == 13 and e.workload == "Exchange"
    assert e.severity == "medium"
    assert e.tenant_id == R.TENANT and e.source == "contoso" and e.ingest_time == "2026-11-21T00:00:00Z"
    assert e.user.upn == "alice@contoso.com" and e.sender == "alice@contoso.com"
    assert e.recipients == ["bob@fabrikam.com", "carol@fabrikam.com"]
    assert e.object.type == "email" and e.object.subject == "Q3 card list" and e.object.size == 24576
    assert e.object.message_id.startswith("<BN6PR")
    [policy] = e.policies
    assert policy.name == "U.S. Financial Data" and policy.rules[0].actions == ["NotifyUser"]
    assert policy.rules[0].severity == "medium" and policy.rules[0].mode == "Enable"
    [sit] = e.sensitive_types
    assert sit.id == R.CCN and sit.name == "Credit Card Number" and sit.count == 1 and sit.confidence == 85
    assert sit.location == "Message Body"
    assert sit.detected_values[0].value == "4111 1111 1111 1111"  # the policy stage drops/masks it later
    # ExceptionInfo as a JSON string
    assert e.override.justification == "Customer asked for it" and e.override.false_positive is False
    assert e.override.rule_ids == ["r-1"]
    assert [label.id for label in e.labels] == [R.LABEL]
    assert e.links.purview.startswith("https://purview.microsoft.com/") and R.TENANT in e.links.purview
    assert e.enrichment["dlp_incident_id"] == "2b5f1c3a-0e3f-4a55-8c0a-7c9e2c3a0001"
    assert "U.S. Financial Data" in e.title and e.raw == R.EXCHANGE_MATCH


def test_sharepoint_casing_string_record_type_and_sit_name_resolution():
    e = one(R.SHAREPOINT_MATCH)
    assert e.operation == "DLPRuleMatch" and e.record_type == 11  # "11" as a string
    assert e.severity == "high"
    assert e.user.upn == "dave@contoso.com"  # the actor from SharePointMetaData.From, not the DLP agent
    assert e.object.type == "file" and e.object.name == "payroll.xlsx"
    assert e.object.url.endswith("payroll.xlsx") and e.object.site == "https://contoso.sharepoint.com/sites/Finance"
    assert e.object.size == 88211
    assert e.sensitive_types[0].name == "U.S. Social Security Number (SSN)"  # resolved by id
    assert e.policies[0].rules[0].actions == ["BlockAccess", "GenerateAlert"]
    assert e.enrichment["viewable_by_external_users"] is True
    assert [label.id for label in e.labels] == [R.LABEL]  # from metadata and conditions, once


def test_onedrive_lower_case_metadata_keys_and_7_digit_fraction():
    e = one(R.ONEDRIVE_MATCH)
    assert e.event_time == "2026-11-20T12:00:00.123456Z"
    assert e.workload == "OneDrive" and e.severity == "low"
    assert e.user.upn == "erin@contoso.com"  # "from" in lower case
    assert e.object.name == "ids.docx"
    assert e.policies[0].rules[0].actions == []


def test_teams_message():
    e = one(R.TEAMS_MATCH)
    assert e.workload == "MicrosoftTeams" and e.object.type == "message"
    assert e.user.upn == "frank@contoso.com" and e.recipients == ["grace@contoso.com"]


def test_endpoint_activity():
    e = one(R.ENDPOINT)
    assert e.record_type == 63 and e.workload == "Endpoint" and e.operation == "FileCopiedToRemovableMedia"
    assert e.device.name == "LAPTOP-7.contoso.com" and e.device.id.startswith("b3f1")
    assert e.device.platform == "Windows" and e.device.application == "explorer.exe"
    assert e.device.target == "SanDisk Ultra 4C530001"
    assert e.object.name == "customers.csv" and e.object.path.startswith("C:\\Users")
    assert e.object.sha256.startswith("e3b0") and e.object.size == 4096
    assert e.user.upn == "hank@contoso.com" and e.client_ip == "10.1.2.3"
    assert e.policies[0].name == "Endpoint PCI" and e.policies[0].rules[0].name == "Block USB"
    assert e.sensitive_types[0].name == "Credit Card Number" and e.sensitive_types[0].count == 7
    assert e.labels[0].id == R.LABEL
    assert e.enrichment["enforcement_mode"] == "3"


def test_undo_with_override_justification():
    e = one(R.UNDO_OVERRIDE)
    assert e.operation == "DlpRuleUndo"
    assert e.override.reason == "Override" and e.override.justification == "Business need"
    assert e.override.rule_ids == ["r-2"]
    assert e.policies[0].rules[0].overridden_actions == ["BlockAccess"]
    assert e.user.upn == "dave@contoso.com"


def test_false_positive_report():
    e = one(R.FALSE_POSITIVE)
    assert e.operation == "DlpInfo" and e.override.false_positive is True
    assert e.override.justification == "Test data"


def test_same_id_match_and_undo_have_distinct_keys():
    undo = copy.deepcopy(R.EXCHANGE_MATCH)
    undo["Operation"] = "DlpRuleUndo"
    a, b = one(R.EXCHANGE_MATCH), one(undo)
    assert a.id == b.id and a.idempotency_key != b.idempotency_key


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda r: r.pop("Id"), "no Id"),
        (lambda r: r.update(CreationTime="yesterday"), "CreationTime"),
    ],
)
def test_malformed_records_raise(mutate, reason):
    rec = copy.deepcopy(R.EXCHANGE_MATCH)
    mutate(rec)
    with pytest.raises(MalformedRecord, match=reason):
        normalize_audit_record(rec, CTX)


def test_wrong_shapes_inside_are_tolerated():
    rec = copy.deepcopy(R.SHAREPOINT_MATCH)
    rec["PolicyDetails"] = "not a list"
    rec["ExceptionInfo"] = "{broken json"
    rec["SharePointMetaData"]["SensitivityLabelIds"] = "a;b"
    rec["RecordType"] = 231  # a type we do not know is kept
    e = one(rec)
    assert e.policies == [] and e.override.justification == "" and e.record_type == 231
    assert [label.id for label in e.labels] == ["a", "b"]


def test_graph_audit_record_equals_management_record():
    ctx = NormalizeContext(source="bf", source_type="audit_search", tenant_id=R.TENANT)
    a = one(R.GRAPH_AUDIT_RECORD, normalize_graph_audit_record, ctx)
    b = one(R.EXCHANGE_MATCH, normalize_audit_record, ctx)
    assert a.idempotency_key == b.idempotency_key and a.id == b.id
    assert a.policies == b.policies and a.recipients == b.recipients
    assert a.raw == R.GRAPH_AUDIT_RECORD


def test_graph_audit_record_without_audit_data_uses_wrapper_fields():
    rec = {k: v for k, v in R.GRAPH_AUDIT_RECORD.items() if k != "auditData"}
    e = one(rec, normalize_graph_audit_record)
    assert e.id == f"audit:{R.EXCHANGE_MATCH['Id']}" and e.operation == "DlpRuleMatch"
    assert e.user.upn == "alice@contoso.com" and e.workload == "Exchange"


GCTX = NormalizeContext(source="graph", source_type="graph_security", tenant_id=R.TENANT)


def test_dlp_alert_with_evidence():
    e = one(R.DLP_ALERT, normalize_alert, GCTX)
    assert e.id == "alert:dl8e4b3c2a1f0e9d8c7b6a5f4e3d2c1b0a_1" and e.kind == "alert"
    assert e.idempotency_key == "alert:dl8e4b3c2a1f0e9d8c7b6a5f4e3d2c1b0a_1@2026-11-20T12:30:00.765432Z"
    assert e.operation == "DlpAlert"
    assert e.event_time == "2026-11-20T11:00:00Z" and e.updated_time == "2026-11-20T12:30:00.765432Z"
    assert e.severity == "high" and e.status == "inProgress"
    assert e.classification == "unknown" and e.determination == "notMalicious"  # the v1.0 CSDL spelling, kept
    assert e.user.upn == "dave@contoso.com" and e.user.display_name == "Dave Example"  # the policy violator
    assert e.object.name == "payroll.xlsx" and e.object.sha256 == "abc123" and e.object.sha1 == ""
    assert e.workload == "SharePoint"
    assert e.client_ip == "203.0.113.7"
    assert e.labels[0].id == R.LABEL
    assert e.links.alert == R.DLP_ALERT["alertWebUrl"] and e.links.incident.endswith(f"2972395?tid={R.TENANT}")
    assert e.related.incident_ids == ["2972395"]
    assert e.policies[0].id == R.DLP_ALERT["detectorId"]
    assert e.enrichment["assigned_to"] == "soc@contoso.com"


@pytest.mark.parametrize(
    ("sent", "normalized"),
    [
        ("clean", "notMalicious"),
        ("CompromisedUser", "compromisedAccount"),
        ("insufficientData", "notEnoughDataToValidate"),
        ("confirmedUserActivity", "confirmedActivity"),
        ("MultiStagedAttack", "multiStagedAttack"),
        ("unknownFutureValue", "unknown"),
    ],
)
def test_alert_determination_comes_out_in_the_csdl_spelling(sent: str, normalized: str) -> None:
    """The update pages' older spellings (and PascalCase) become the spelling Graph returns and
    the status sync sends, so a sink or a sync comparing values sees one vocabulary."""
    rec = copy.deepcopy(R.DLP_ALERT)
    rec["determination"] = sent
    assert one(rec, normalize_alert, GCTX).determination == normalized


def test_alert_update_changes_key_not_id():
    a = one(R.DLP_ALERT, normalize_alert, GCTX)
    changed = copy.deepcopy(R.DLP_ALERT)
    changed.update(status="resolved", lastUpdateDateTime="2026-11-21T09:00:00Z")
    b = one(changed, normalize_alert, GCTX)
    assert a.id == b.id and a.idempotency_key != b.idempotency_key and b.status == "resolved"


def test_alert_without_links_gets_portal_links():
    rec = copy.deepcopy(R.DLP_ALERT)
    del rec["alertWebUrl"], rec["incidentWebUrl"]
    e = one(rec, normalize_alert, GCTX)
    assert e.links.alert == f"https://security.microsoft.com/alerts/{rec['id']}?tid={R.TENANT}"
    assert e.links.incident.startswith("https://security.microsoft.com/incidents/2972395")


def test_incident_with_expanded_alerts_and_casing():
    e = one(R.INCIDENT, normalize_incident, GCTX)
    assert e.id == "incident:2972395" and e.kind == "incident"
    assert e.idempotency_key == "incident:2972395@2026-11-20T12:31:00Z"
    assert e.status == "active" and e.classification == "truePositive"
    assert e.determination == "compromisedAccount"
    assert e.title == "DLP incident involving one user" and e.severity == "high"
    assert e.related.alert_ids == [R.DLP_ALERT["id"]]
    assert e.user.upn == "dave@contoso.com"
    assert e.enrichment["tags"] == ["PII"]
    assert e.links.incident == R.INCIDENT["incidentWebUrl"]


def test_graph_malformed():
    with pytest.raises(MalformedRecord):
        normalize_alert({"title": "no id"}, GCTX)
    with pytest.raises(MalformedRecord):
        normalize_incident({"displayName": "no id"}, GCTX)


def test_dlp_alert_policy_and_rule_from_its_text():
    rec = copy.deepcopy(R.DLP_ALERT)
    rec["description"] = "Policy 'EU Financial Data', rule 'Content contains EU financial data' matched IBAN in mail."
    e = one(rec, normalize_alert, GCTX)
    assert e.policies[0].name == "EU Financial Data" and e.policies[0].id == rec["detectorId"]
    assert e.policies[0].rules[0].name == "Content contains EU financial data"
    rec["serviceSource"], rec["detectionSource"] = "microsoftDefenderForEndpoint", "antivirus"
    assert one(rec, normalize_alert, GCTX).policies == []  # only DLP alerts are read this way
