"""Normalize Management Activity API (unified audit log) DLP records into :class:`DlpEvent`.

Covers RecordType 11/13/33/99/100/107 (``DlpRuleMatch``, ``DlpRuleUndo``, ``DlpInfo`` for
Exchange, SharePoint, OneDrive and Teams), RecordType 63 (Endpoint DLP activities) and any
other audit record (passed through with the common fields). Reads defensively:
case-insensitive keys and operation names, ``ExceptionInfo`` as an object or a JSON string,
``RecordType`` as a number or a string, unknown record types kept as integers.

Identity: ``id`` is ``audit:<Id>``; the idempotency key adds ``CreationTime`` and the
operation (Exchange records have been seen re-using one ``Id`` for a match and its undo).
"""

from __future__ import annotations

import posixpath
from typing import Any

from forwarder.errors import MalformedRecord
from forwarder.schema import (
    KIND_AUDIT,
    DetectedValue,
    Device,
    DlpEvent,
    Identity,
    Label,
    Links,
    ObjectRef,
    Override,
    PolicyMatch,
    RuleMatch,
    SensitiveType,
    iso_utc,
    severity_rank,
)
from forwarder.source import NormalizeContext
from sources.normalize._fields import as_object, boolean, get, integer, items, obj, strings, text

#: Where audit records can be looked up (Purview audit search of the tenant).
PURVIEW_AUDIT = "https://purview.microsoft.com/audit/auditsearch"

#: Identities the DLP service writes into UserId instead of a person.
_SYSTEM_USERS = ("dlpagent", "dlppolicyeventbasedassistant", "nt authority", "app@sharepoint", "system")

_ZERO_GUID = "00000000-0000-0000-0000-000000000000"

_WORKLOAD_BY_RECORD_TYPE = {
    11: "SharePoint",
    13: "Exchange",
    33: "SharePoint",
    63: "Endpoint",
    99: "OnPremisesFileShareScanner",
    100: "OnPremisesSharePointScanner",
    107: "Exchange",
}


def normalize_audit_record(data: dict[str, Any], ctx: NormalizeContext) -> list[DlpEvent]:
    """One Management Activity record -> one event. Raises MalformedRecord without ``Id``."""
    if not isinstance(data, dict):
        raise MalformedRecord("audit record is not a JSON object")
    record_id = text(data, "Id", "id")
    if not record_id:
        raise MalformedRecord("audit record has no Id")
    created = iso_utc(text(data, "CreationTime", "createdDateTime"))
    if not created:
        raise MalformedRecord(f"audit record {record_id} has no readable CreationTime")
    operation = text(data, "Operation")
    record_type = integer(data, "RecordType")
    workload = text(data, "Workload") or _WORKLOAD_BY_RECORD_TYPE.get(record_type or -1, "")
    tenant = text(data, "OrganizationId") or ctx.tenant_id

    event = DlpEvent(
        id=f"audit:{record_id}",
        idempotency_key=f"audit:{record_id}@{created}#{operation.lower()}",
        kind=KIND_AUDIT,
        operation=operation,
        event_time=created,
        updated_time=created,
        ingest_time=ctx.ingest_time,
        tenant_id=tenant,
        source=ctx.source,
        source_type=ctx.source_type,
        record_type=record_type,
        workload=workload,
        status=text(data, "ResultStatus"),
        client_ip=_client_ip(text(data, "ClientIP", "ClientIPAddress", "ActorIpAddress")),
        raw=data,
    )
    event.links = Links(purview=f"{PURVIEW_AUDIT}?tid={tenant}" if tenant else PURVIEW_AUDIT)
    incident_id = text(data, "IncidentId")
    if incident_id:
        event.enrichment["dlp_incident_id"] = incident_id

    exchange = obj(data, "ExchangeMetaData")
    sharepoint = obj(data, "SharePointMetaData")
    found_sits: dict[tuple[str, str], SensitiveType] = {}
    condition_labels: list[str] = []
    event.policies = _policies(data, ctx, found_sits, condition_labels)
    event.sensitive_types = _sensitive_types(data, ctx, found_sits)
    event.override = _override(data, operation)
    event.labels = _labels(data, sharepoint, condition_labels)

    if exchange:
        _exchange(event, exchange, workload)
    elif sharepoint:
        _sharepoint(event, sharepoint, data)
    elif workload.lower() == "endpoint" or record_type == 63:
        _endpoint(event, data)
    else:
        object_id = text(data, "ObjectId")
        if object_id:
            event.object = ObjectRef(type="file" if "/" in object_id or "\\" in object_id else "", path=object_id)
            event.object.name = _basename(object_id)
    if not event.user.upn:
        user_id = text(data, "UserId")
        if user_id and not _is_system(user_id):
            event.user = Identity(upn=user_id)
    event.severity = _severity(event)
    event.title = _title(event)
    return [event]


def normalize_graph_audit_record(data: dict[str, Any], ctx: NormalizeContext) -> list[DlpEvent]:
    """A Graph ``auditLogRecord`` (security/auditLog/queries): normalize its ``auditData``,
    falling back on the wrapper's own fields where the inner record lacks them."""
    if not isinstance(data, dict):
        raise MalformedRecord("audit log record is not a JSON object")
    inner = dict(as_object(get(data, "auditData")))
    inner.pop("@odata.type", None)
    fallbacks = {
        "Id": text(data, "id"),
        "CreationTime": text(data, "createdDateTime"),
        "Operation": text(data, "operation"),
        "OrganizationId": text(data, "organizationId"),
        "UserId": text(data, "userPrincipalName", "userId"),
        "ObjectId": text(data, "objectId"),
        "ClientIP": text(data, "clientIp"),
        "Workload": text(data, "service"),
    }
    for key, value in fallbacks.items():
        if value and not get(inner, key):
            inner[key] = value
    if get(inner, "RecordType") is None and get(data, "auditLogRecordType") is not None:
        inner["RecordType"] = get(data, "auditLogRecordType")
    events = normalize_audit_record(inner, ctx)
    for event in events:
        event.raw = data
    return events


# --------------------------------------------------------------------------- parts


def _policies(
    data: dict[str, Any],
    ctx: NormalizeContext,
    found_sits: dict[tuple[str, str], SensitiveType],
    labels: list[str],
) -> list[PolicyMatch]:
    """Policies and rules; on the same pass, the SITs and labels their matched conditions name."""
    policies: list[PolicyMatch] = []
    for p in items(data, "PolicyDetails"):
        if not isinstance(p, dict):
            continue
        rules = []
        for r in items(p, "Rules"):
            if not isinstance(r, dict):
                continue
            rules.append(
                RuleMatch(
                    id=text(r, "RuleId"),
                    name=text(r, "RuleName"),
                    severity=text(r, "Severity").lower(),
                    mode=text(r, "RuleMode"),
                    actions=strings(r, "Actions"),
                    overridden_actions=strings(r, "OverriddenActions"),
                )
            )
            conditions = obj(r, "ConditionsMatched")
            if conditions:
                for sit in items(conditions, "SensitiveInformation"):
                    _add_sit(found_sits, as_object(sit), ctx)
                for c in items(conditions, "OtherConditions"):
                    if text(c, "Name").lower() in ("sensitivitylabels", "sensitivitylabel"):
                        labels.extend(strings(c, "Value"))
        policies.append(PolicyMatch(id=text(p, "PolicyId"), name=text(p, "PolicyName"), rules=rules))
    # Endpoint DLP: PolicyMatchInfo is a single object (or a list) with policy and rule fields.
    for m in items(data, "PolicyMatchInfo"):
        m = as_object(m)
        if not m:
            continue
        rule = RuleMatch(id=text(m, "RuleId"), name=text(m, "RuleName"), severity=text(m, "Severity").lower())
        policies.append(
            PolicyMatch(
                id=text(m, "PolicyId"),
                name=text(m, "PolicyName"),
                rules=[rule] if rule.id or rule.name else [],
            )
        )
    return policies


def _sensitive_types(
    data: dict[str, Any], ctx: NormalizeContext, found: dict[tuple[str, str], SensitiveType]
) -> list[SensitiveType]:
    for s in items(data, "SensitiveInfoTypeData", "SensitiveInformation"):
        _add_sit(found, as_object(s), ctx)
    return list(found.values())


def _add_sit(found: dict[tuple[str, str], SensitiveType], s: dict[str, Any], ctx: NormalizeContext) -> None:
    if not s:
        return
    sit_id = text(s, "SensitiveType", "SensitiveInfoTypeId", "SensitiveTypeId", "Id")
    name = ctx.sit_names.get(sit_id) or text(s, "SensitiveInformationTypeName", "SensitiveInfoTypeName", "Name")
    location = text(s, "Location")
    detections = obj(s, "SensitiveInformationDetections", "SensitiveInformationDetectionsInfo")
    values = [
        DetectedValue(name=text(v, "Name"), value=text(v, "Value"))
        for v in items(detections, "DetectedValues")
        if isinstance(v, dict)
    ]
    key = (sit_id or name, location)
    if key in found:
        known = found[key]
        if not known.detected_values and values:
            known.detected_values = values
        return
    found[key] = SensitiveType(
        id=sit_id,
        name=name,
        count=integer(s, "Count", "SensitiveInfoTypeCount") or 0,
        unique_count=integer(s, "UniqueCount") or 0,
        confidence=integer(s, "Confidence", "ConfidenceLevel") or 0,
        location=location,
        detected_values=values,
    )


def _override(data: dict[str, Any], operation: str) -> Override:
    info = obj(data, "ExceptionInfo")
    override = Override(
        justification=text(info, "Justification"),
        false_positive=boolean(info, "FalsePositive"),
        reason=text(info, "Reason"),
        rule_ids=strings(info, "Rules"),
    )
    if operation.lower() == "dlpinfo" and not info:
        override.reason = override.reason or "Info"
    return override


def _labels(data: dict[str, Any], sharepoint: dict[str, Any], condition_labels: list[str]) -> list[Label]:
    ids: list[str] = []
    ids.extend(strings(sharepoint, "SensitivityLabelIds", "SensitivityLabelId"))
    ids.extend(condition_labels)
    label_data = obj(data, "SensitivityLabelEventData")
    names = {}
    label_id = text(label_data, "SensitivityLabelId")
    if label_id:
        ids.append(label_id)
        names[label_id] = text(label_data, "SensitivityLabelName", "LabelName")
    ids.extend(strings(data, "SensitivityLabelId"))
    seen: list[Label] = []
    for i in ids:
        if i and i != _ZERO_GUID and all(label.id != i for label in seen):
            seen.append(Label(id=i, name=names.get(i, "")))
    return seen


def _exchange(event: DlpEvent, meta: dict[str, Any], workload: str) -> None:
    sender = text(meta, "From")
    event.sender = sender
    if sender:
        event.user = Identity(upn=sender)
    recipients: list[str] = []
    for key in ("To", "CC", "BCC"):
        for r in strings(meta, key):
            if r not in recipients:
                recipients.append(r)
    event.recipients = recipients
    is_teams = workload.lower() in ("microsoftteams", "teams")
    event.object = ObjectRef(
        type="message" if is_teams else "email",
        name=text(meta, "Subject"),
        subject=text(meta, "Subject"),
        message_id=text(meta, "MessageID", "MessageId", "InternetMessageId"),
        size=integer(meta, "FileSize", "Size"),
    )


def _sharepoint(event: DlpEvent, meta: dict[str, Any], data: dict[str, Any]) -> None:
    actor = text(meta, "From", "DocumentLastModifier", "SharedBy")
    if actor and not _is_system(actor):
        event.user = Identity(upn=actor)
    url = text(meta, "FilePathUrl") or text(data, "ObjectId")
    name = text(meta, "FileName") or _basename(url)
    event.object = ObjectRef(
        type="file",
        name=name,
        path=url,
        url=url if url.startswith(("http://", "https://")) else "",
        size=integer(meta, "FileSize"),
        site=text(meta, "SiteCollectionUrl"),
    )
    owner = text(meta, "FileOwner")
    if owner:
        event.enrichment["file_owner"] = owner
    if boolean(meta, "IsViewableByExternalUsers"):
        event.enrichment["viewable_by_external_users"] = True


def _endpoint(event: DlpEvent, data: dict[str, Any]) -> None:
    path = text(data, "ObjectId", "TargetFilePath")
    media = obj(data, "RemovableMediaDeviceAttributes")
    target = (
        text(data, "TargetDomain")
        or text(data, "TargetPrinterName")
        or text(data, "TargetFilePath")
        or " ".join(p for p in (text(media, "Manufacturer"), text(media, "Model"), text(media, "SerialNumber")) if p)
        or text(data, "DestinationLocationType")
    )
    event.device = Device(
        name=text(data, "DeviceName"),
        id=text(data, "MDATPDeviceId", "DeviceId"),
        platform=text(data, "Platform"),
        application=text(data, "Application"),
        target=target,
    )
    event.object = ObjectRef(
        type="file",
        name=_basename(path),
        path=path,
        size=integer(data, "FileSize"),
        sha1=text(data, "Sha1", "SHA1"),
        sha256=text(data, "Sha256", "SHA256"),
    )
    enforcement = text(data, "EnforcementMode")
    if enforcement:
        event.enrichment["enforcement_mode"] = enforcement
    origin = text(data, "OriginatingDomain")
    if origin:
        event.enrichment["originating_domain"] = origin


def _severity(event: DlpEvent) -> str:
    best = "unknown"
    for p in event.policies:
        for r in p.rules:
            if severity_rank(r.severity) > severity_rank(best):
                best = r.severity
    return best


def _title(event: DlpEvent) -> str:
    names = ", ".join(p.name for p in event.policies if p.name)
    what = event.object.name or event.object.subject or event.object.path
    head = f"{event.operation or 'DLP'}"
    if names:
        head += f": {names}"
    if what:
        head += f" on {what}"
    return head


def _basename(path: str) -> str:
    if not path:
        return ""
    cleaned = path.replace("\\", "/").rstrip("/")
    return posixpath.basename(cleaned)


def _client_ip(value: str) -> str:
    """ClientIP may carry a port (``1.2.3.4:5678``, ``[::1]:443``); keep only the address."""
    v = value.strip()
    if v.startswith("[") and "]" in v:
        return v[1 : v.index("]")]
    if v.count(":") == 1 and "." in v:
        return v.split(":", 1)[0]
    return v


def _is_system(user: str) -> bool:
    u = user.lower()
    return any(u.startswith(s) for s in _SYSTEM_USERS)
