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
    SEVERITIES,
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
    iso_utc,
    severity_rank,
)
from forwarder.source import NormalizeContext
from sources.normalize._fields import as_object, boolean, get, integer, items, obj, odd_spellings, strings, text

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
    """One Management Activity record -> one event. Raises MalformedRecord without ``Id``.

    Records in the documented shape (no other spellings of the keys read, the expected
    types) take :func:`_normalize_fast`; any other record, or one the fast path gives up on,
    the reference :func:`_normalize_general`. Both give the same event (tests check it)."""
    if type(data) is dict:
        try:
            return [_normalize_fast(data, ctx)]
        except _Irregular:
            pass
    return _normalize_general(data, ctx)


def _normalize_general(data: dict[str, Any], ctx: NormalizeContext) -> list[DlpEvent]:
    """The reference normalization: reads every field through the defensive readers."""
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
    return user.lower().startswith(_SYSTEM_USERS)


# --------------------------------------------------------------------------- fast path
#
# The same normalization as ``_normalize_general`` for records in the documented shape,
# without the defensive readers' per-field cost: each object is checked once for other
# spellings of the keys read (``_ODD``); then an absent key is simply absent, and a value of
# the expected type is used as it is. A value of another type goes through the defensive
# reader of that one field (exact: its first spelling is present, so the reader uses it).
# An object with another spelling, or a record without a usable Id or CreationTime, raises
# ``_Irregular`` and the whole record takes the general path.

#: Every lookup the general path makes, as the tuple of names of one reader call.
_LOOKUPS: tuple[tuple[str, ...], ...] = (
    ("Id", "id"),
    ("CreationTime", "createdDateTime"),
    ("Operation",),
    ("RecordType",),
    ("Workload",),
    ("OrganizationId",),
    ("ResultStatus",),
    ("ClientIP", "ClientIPAddress", "ActorIpAddress"),
    ("IncidentId",),
    ("ExchangeMetaData",),
    ("SharePointMetaData",),
    ("PolicyDetails",),
    ("Rules",),
    ("RuleId",),
    ("RuleName",),
    ("Severity",),
    ("RuleMode",),
    ("Actions",),
    ("OverriddenActions",),
    ("ConditionsMatched",),
    ("SensitiveInformation",),
    ("OtherConditions",),
    ("Name",),
    ("Value",),
    ("PolicyId",),
    ("PolicyName",),
    ("PolicyMatchInfo",),
    ("SensitiveInfoTypeData", "SensitiveInformation"),
    ("SensitiveType", "SensitiveInfoTypeId", "SensitiveTypeId", "Id"),
    ("SensitiveInformationTypeName", "SensitiveInfoTypeName", "Name"),
    ("Location",),
    ("SensitiveInformationDetections", "SensitiveInformationDetectionsInfo"),
    ("DetectedValues",),
    ("Count", "SensitiveInfoTypeCount"),
    ("UniqueCount",),
    ("Confidence", "ConfidenceLevel"),
    ("ExceptionInfo",),
    ("Justification",),
    ("FalsePositive",),
    ("Reason",),
    ("SensitivityLabelIds", "SensitivityLabelId"),
    ("SensitivityLabelEventData",),
    ("SensitivityLabelId",),
    ("SensitivityLabelName", "LabelName"),
    ("From",),
    ("To",),
    ("CC",),
    ("BCC",),
    ("Subject",),
    ("MessageID", "MessageId", "InternetMessageId"),
    ("FileSize", "Size"),
    ("From", "DocumentLastModifier", "SharedBy"),
    ("FilePathUrl",),
    ("ObjectId",),
    ("FileName",),
    ("FileSize",),
    ("SiteCollectionUrl",),
    ("FileOwner",),
    ("IsViewableByExternalUsers",),
    ("ObjectId", "TargetFilePath"),
    ("RemovableMediaDeviceAttributes",),
    ("TargetDomain",),
    ("TargetPrinterName",),
    ("TargetFilePath",),
    ("Manufacturer",),
    ("Model",),
    ("SerialNumber",),
    ("DestinationLocationType",),
    ("DeviceName",),
    ("MDATPDeviceId", "DeviceId"),
    ("Platform",),
    ("Application",),
    ("Sha1", "SHA1"),
    ("Sha256", "SHA256"),
    ("EnforcementMode",),
    ("OriginatingDomain",),
    ("UserId",),
)
_ODD = odd_spellings(_LOOKUPS)


class _Irregular(Exception):
    """The record is not in the shape the fast path reads; use the general path."""


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    if not d.keys().isdisjoint(_ODD):
        raise _Irregular
    return d


def _s(d: dict[str, Any], name: str) -> str:
    """``text(d, name)`` for a plain ``d``."""
    v = d.get(name)
    if type(v) is str:
        return v
    return "" if v is None else text(d, name)


def _sn(d: dict[str, Any], *names: str) -> str:
    """``text(d, *names)`` for a plain ``d``."""
    v = None
    for name in names:
        v = d.get(name)
        if v is not None:
            break
    if type(v) is str:
        return v
    return "" if v is None else text(d, *names)


def _int(d: dict[str, Any], *names: str) -> int | None:
    """``integer(d, *names)`` for a plain ``d``."""
    v = None
    for name in names:
        v = d.get(name)
        if v is not None:
            break
    if type(v) is int or v is None:
        return v
    return integer(d, *names)


def _list(d: dict[str, Any], *names: str) -> list[Any]:
    """``items(d, *names)`` for a plain ``d``."""
    v = None
    for name in names:
        v = d.get(name)
        if v is not None:
            break
    if type(v) is list:
        return v
    return [] if v is None else items(d, *names)


def _bool(d: dict[str, Any], name: str) -> bool:
    """``boolean(d, name)`` for a plain ``d``."""
    v = d.get(name)
    if type(v) is bool:
        return v
    return False if v is None else boolean(d, name)


def _strs(d: dict[str, Any], *names: str) -> list[str]:
    """``strings(d, *names)`` for a plain ``d``."""
    v = None
    for name in names:
        v = d.get(name)
        if v is not None:
            break
    if v is None:
        return []
    if type(v) is list:
        out = []
        for x in v:
            if type(x) is not str:
                return strings(d, *names)
            if x:
                out.append(x)
        return out
    return strings(d, *names)


def _obj(d: dict[str, Any], *names: str) -> dict[str, Any]:
    """``obj(d, *names)`` for a plain ``d``; the object returned is plain too (else _Irregular)."""
    v = d.get(names[0])
    if v is None and len(names) > 1:
        for name in names[1:]:
            v = d.get(name)
            if v is not None:
                break
    if v is None:
        return {}
    if type(v) is not dict:
        v = as_object(v)
    if v and not v.keys().isdisjoint(_ODD):
        raise _Irregular
    return v


def _normalize_fast(data: dict[str, Any], ctx: NormalizeContext) -> DlpEvent:
    if not data.keys().isdisjoint(_ODD):
        raise _Irregular
    record_id = data.get("Id")
    created = data.get("CreationTime")
    if type(record_id) is not str or not record_id or type(created) is not str:
        raise _Irregular
    created = iso_utc(created)
    if not created:
        raise _Irregular
    operation = _s(data, "Operation")
    record_type = data.get("RecordType")
    if type(record_type) is not int and record_type is not None:
        record_type = integer(data, "RecordType")
    workload = _s(data, "Workload") or _WORKLOAD_BY_RECORD_TYPE.get(record_type or -1, "")
    tenant = _s(data, "OrganizationId") or ctx.tenant_id
    incident_id = _s(data, "IncidentId")
    enrichment: dict[str, Any] = {"dlp_incident_id": incident_id} if incident_id else {}

    exchange = _obj(data, "ExchangeMetaData")
    sharepoint = _obj(data, "SharePointMetaData")
    found: dict[tuple[str, str], SensitiveType] = {}
    condition_labels: list[str] = []
    sit_names = ctx.sit_names
    policies = _fast_policies(data, sit_names, found, condition_labels)
    for s in _list(data, "SensitiveInfoTypeData", "SensitiveInformation"):
        _fast_sit(found, s, sit_names)
    override = _fast_override(data, operation)
    labels = _fast_labels(data, sharepoint, condition_labels)

    user = None
    sender = ""
    recipients: list[str] = []
    device = None
    if exchange:
        sender = _s(exchange, "From")
        if sender:
            user = Identity(upn=sender)
        for key in ("To", "CC", "BCC"):
            for r in _strs(exchange, key):
                if r not in recipients:
                    recipients.append(r)
        subject = _s(exchange, "Subject")
        target = ObjectRef(
            type="message" if workload.lower() in ("microsoftteams", "teams") else "email",
            name=subject,
            subject=subject,
            message_id=_sn(exchange, "MessageID", "MessageId", "InternetMessageId"),
            size=_int(exchange, "FileSize", "Size"),
        )
    elif sharepoint:
        actor = _sn(sharepoint, "From", "DocumentLastModifier", "SharedBy")
        if actor and not _is_system(actor):
            user = Identity(upn=actor)
        url = _s(sharepoint, "FilePathUrl") or _s(data, "ObjectId")
        target = ObjectRef(
            type="file",
            name=_s(sharepoint, "FileName") or _basename(url),
            path=url,
            url=url if url.startswith(("http://", "https://")) else "",
            size=_int(sharepoint, "FileSize"),
            site=_s(sharepoint, "SiteCollectionUrl"),
        )
        owner = _s(sharepoint, "FileOwner")
        if owner:
            enrichment["file_owner"] = owner
        if _bool(sharepoint, "IsViewableByExternalUsers"):
            enrichment["viewable_by_external_users"] = True
    elif workload.lower() == "endpoint" or record_type == 63:
        device, target = _fast_endpoint(data, enrichment)
    else:
        object_id = _s(data, "ObjectId")
        if object_id:
            target = ObjectRef(
                type="file" if "/" in object_id or "\\" in object_id else "",
                path=object_id,
                name=_basename(object_id),
            )
        else:
            target = ObjectRef()
    if user is None:
        user_id = _s(data, "UserId")
        user = Identity(upn=user_id) if user_id and not _is_system(user_id) else Identity()

    best, rank = "unknown", 0
    for p in policies:
        for rule in p.rules:
            rule_rank = _RANKS.get(rule.severity, 0)
            if rule_rank > rank:
                best, rank = rule.severity, rule_rank
    names = ", ".join(p.name for p in policies if p.name)
    title = operation or "DLP"
    if names:
        title += f": {names}"
    what = target.name or target.subject or target.path
    if what:
        title += f" on {what}"
    return DlpEvent(
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
        severity=best,
        status=_s(data, "ResultStatus"),
        title=title,
        policies=policies,
        override=override,
        user=user,
        sender=sender,
        recipients=recipients,
        object=target,
        sensitive_types=list(found.values()),
        labels=labels,
        device=device if device is not None else Device(),
        client_ip=_client_ip(_sn(data, "ClientIP", "ClientIPAddress", "ActorIpAddress")),
        links=Links(purview=f"{PURVIEW_AUDIT}?tid={tenant}" if tenant else PURVIEW_AUDIT),
        related=Related(),
        enrichment=enrichment,
        raw=data,
    )


#: severity_rank of the lower-case severities a rule can carry (others rank 0).
_RANKS = {s: i for i, s in enumerate(SEVERITIES)}


def _fast_policies(
    data: dict[str, Any],
    sit_names: dict[str, str],
    found: dict[tuple[str, str], SensitiveType],
    labels: list[str],
) -> list[PolicyMatch]:
    policies: list[PolicyMatch] = []
    for p in _list(data, "PolicyDetails"):
        if type(p) is not dict:
            if isinstance(p, dict):
                raise _Irregular
            continue
        _plain(p)
        rules = []
        for r in _list(p, "Rules"):
            if type(r) is not dict:
                if isinstance(r, dict):
                    raise _Irregular
                continue
            _plain(r)
            rules.append(
                RuleMatch(
                    id=_s(r, "RuleId"),
                    name=_s(r, "RuleName"),
                    severity=_s(r, "Severity").lower(),
                    mode=_s(r, "RuleMode"),
                    actions=_strs(r, "Actions"),
                    overridden_actions=_strs(r, "OverriddenActions"),
                )
            )
            conditions = _obj(r, "ConditionsMatched")
            if conditions:
                for sit in _list(conditions, "SensitiveInformation"):
                    _fast_sit(found, sit, sit_names)
                for c in _list(conditions, "OtherConditions"):
                    if type(c) is dict and _s(_plain(c), "Name").lower() in ("sensitivitylabels", "sensitivitylabel"):
                        labels.extend(_strs(c, "Value"))
        policies.append(PolicyMatch(id=_s(p, "PolicyId"), name=_s(p, "PolicyName"), rules=rules))
    for m in _list(data, "PolicyMatchInfo"):
        m = as_object(m)
        if not m:
            continue
        _plain(m)
        rule = RuleMatch(id=_s(m, "RuleId"), name=_s(m, "RuleName"), severity=_s(m, "Severity").lower())
        policies.append(
            PolicyMatch(id=_s(m, "PolicyId"), name=_s(m, "PolicyName"), rules=[rule] if rule.id or rule.name else [])
        )
    return policies


def _fast_sit(found: dict[tuple[str, str], SensitiveType], sit: Any, sit_names: dict[str, str]) -> None:
    s = sit if type(sit) is dict else as_object(sit)
    if not s:
        return
    _plain(s)
    sit_id = _sn(s, "SensitiveType", "SensitiveInfoTypeId", "SensitiveTypeId", "Id")
    name = sit_names.get(sit_id) or _sn(s, "SensitiveInformationTypeName", "SensitiveInfoTypeName", "Name")
    location = _s(s, "Location")
    detections = _obj(s, "SensitiveInformationDetections", "SensitiveInformationDetectionsInfo")
    values = []
    for v in _list(detections, "DetectedValues") if detections else ():
        if type(v) is dict:
            dv_name, dv_value = v.get("Name"), v.get("Value")
            if len(v) == 2 and type(dv_name) is str and type(dv_value) is str:  # {"Name", "Value"}: plain
                values.append(DetectedValue(dv_name, dv_value))
            else:
                _plain(v)
                values.append(DetectedValue(name=_s(v, "Name"), value=_s(v, "Value")))
        elif isinstance(v, dict):
            raise _Irregular
    key = (sit_id or name, location)
    known = found.get(key)
    if known is not None:
        if not known.detected_values and values:
            known.detected_values = values
        return
    found[key] = SensitiveType(
        id=sit_id,
        name=name,
        count=_int(s, "Count", "SensitiveInfoTypeCount") or 0,
        unique_count=_int(s, "UniqueCount") or 0,
        confidence=_int(s, "Confidence", "ConfidenceLevel") or 0,
        location=location,
        detected_values=values,
    )


def _fast_override(data: dict[str, Any], operation: str) -> Override:
    info = _obj(data, "ExceptionInfo")
    if not info:
        return Override(reason="Info") if operation.lower() == "dlpinfo" else Override()
    return Override(
        justification=_s(info, "Justification"),
        false_positive=_bool(info, "FalsePositive"),
        reason=_s(info, "Reason"),
        rule_ids=_strs(info, "Rules"),
    )


def _fast_labels(data: dict[str, Any], sharepoint: dict[str, Any], condition_labels: list[str]) -> list[Label]:
    ids = _strs(sharepoint, "SensitivityLabelIds", "SensitivityLabelId") if sharepoint else []
    ids.extend(condition_labels)
    label_data = _obj(data, "SensitivityLabelEventData")
    names = {}
    if label_data:
        label_id = _s(label_data, "SensitivityLabelId")
        if label_id:
            ids.append(label_id)
            names[label_id] = _sn(label_data, "SensitivityLabelName", "LabelName")
    ids.extend(_strs(data, "SensitivityLabelId"))
    if not ids:
        return []
    out: list[Label] = []
    seen: set[str] = set()
    for i in ids:
        if i and i != _ZERO_GUID and i not in seen:
            seen.add(i)
            out.append(Label(id=i, name=names.get(i, "")))
    return out


def _fast_endpoint(data: dict[str, Any], enrichment: dict[str, Any]) -> tuple[Device, ObjectRef]:
    path = _sn(data, "ObjectId", "TargetFilePath")
    target = _s(data, "TargetDomain") or _s(data, "TargetPrinterName") or _s(data, "TargetFilePath")
    if not target:
        media = _obj(data, "RemovableMediaDeviceAttributes")
        if media:
            target = " ".join(
                p for p in (_s(media, "Manufacturer"), _s(media, "Model"), _s(media, "SerialNumber")) if p
            )
        target = target or _s(data, "DestinationLocationType")
    device = Device(
        name=_s(data, "DeviceName"),
        id=_sn(data, "MDATPDeviceId", "DeviceId"),
        platform=_s(data, "Platform"),
        application=_s(data, "Application"),
        target=target,
    )
    target_object = ObjectRef(
        type="file",
        name=_basename(path),
        path=path,
        size=_int(data, "FileSize"),
        sha1=_sn(data, "Sha1", "SHA1"),
        sha256=_sn(data, "Sha256", "SHA256"),
    )
    enforcement = _s(data, "EnforcementMode")
    if enforcement:
        enrichment["enforcement_mode"] = enforcement
    origin = _s(data, "OriginatingDomain")
    if origin:
        enrichment["originating_domain"] = origin
    return device, target_object
