"""Normalize Graph Security ``alerts_v2`` alerts (with their evidence) and incidents.

Enums are read case-insensitively; ``unknownFutureValue`` becomes ``unknown``; the two
spellings of alertDetermination are mapped to the property-list spelling. Unknown evidence
types and unknown properties are tolerated (the whole record stays in ``raw``).

Identity: ``alert:<id>`` / ``incident:<id>``, stable across updates; the idempotency key adds
``lastUpdateDateTime``, so every status, assignment or classification change is one new event
and a re-read of the same version is a duplicate.
"""

from __future__ import annotations

import re
from typing import Any

from forwarder.errors import MalformedRecord
from forwarder.schema import (
    KIND_ALERT,
    KIND_INCIDENT,
    SEVERITIES,
    Device,
    DlpEvent,
    Identity,
    Label,
    Links,
    ObjectRef,
    PolicyMatch,
    Related,
    RuleMatch,
    SensitiveType,
    iso_utc,
)
from forwarder.source import NormalizeContext
from sources.normalize._fields import get, integer, items, obj, strings, text

DEFAULT_PORTAL = "https://security.microsoft.com"

#: The update pages' older alertDetermination spellings -> the v1.0 CSDL spelling, which the
#: service returns and the PATCH of dlpfwd incidents / the status sync sends.
_DETERMINATION = {
    "compromiseduser": "compromisedAccount",
    "clean": "notMalicious",
    "insufficientdata": "notEnoughDataToValidate",
    "confirmeduseractivity": "confirmedActivity",
}

_CLASSIFICATION = {
    "benignpositive": "informationalExpectedActivity",
}

_POLICY_IN_TEXT = re.compile(r"\bpolicy '([^']{1,256})'(?:,? rule '([^']{1,256})')?", re.IGNORECASE)

DLP_SERVICE_SOURCES = ("datalossprevention", "microsoftdatalossprevention")


def is_dlp_alert(data: dict[str, Any]) -> bool:
    """True for an alert produced by Purview DLP (serviceSource or detectionSource says so)."""
    service = text(data, "serviceSource").lower()
    detection = text(data, "detectionSource").lower()
    return service in DLP_SERVICE_SOURCES or detection in DLP_SERVICE_SOURCES


def _graph_event(data: Any, ctx: NormalizeContext, what: str) -> DlpEvent:
    """The fields an alert (``what="alert"``) and an incident share: id, times, tenant, status,
    classification, determination, title. Raises MalformedRecord for a non-object or no ``id``."""
    if not isinstance(data, dict):
        raise MalformedRecord(f"{what} is not a JSON object")
    graph_id = text(data, "id")
    if not graph_id:
        raise MalformedRecord(f"{what} has no id")
    created = iso_utc(text(data, "createdDateTime"))
    updated = iso_utc(text(data, "lastUpdateDateTime")) or created
    alert = what == "alert"
    return DlpEvent(
        id=f"{what}:{graph_id}",
        idempotency_key=f"{what}:{graph_id}@{updated}",
        kind=KIND_ALERT if alert else KIND_INCIDENT,
        operation=("DlpAlert" if is_dlp_alert(data) else "Alert") if alert else "Incident",
        event_time=(iso_utc(text(data, "firstActivityDateTime")) or created) if alert else created,
        updated_time=updated,
        ingest_time=ctx.ingest_time,
        tenant_id=text(data, "tenantId") or ctx.tenant_id,
        source=ctx.source,
        source_type=ctx.source_type,
        severity=severity(text(data, "severity")),
        status=enum(text(data, "status")),
        classification=classification(text(data, "classification")),
        determination=determination(text(data, "determination")),
        title=text(data, "title" if alert else "displayName"),
        description=text(data, "description"),
        raw=data,
    )


def normalize_alert(data: dict[str, Any], ctx: NormalizeContext) -> list[DlpEvent]:
    """One alerts_v2 alert -> one event. Raises MalformedRecord without ``id``."""
    event = _graph_event(data, ctx, "alert")
    alert_id, tenant = text(data, "id"), event.tenant_id
    incident_id = text(data, "incidentId")
    event.links = Links(
        alert=text(data, "alertWebUrl") or _portal_link("alerts", alert_id, tenant),
        incident=text(data, "incidentWebUrl")
        or (_portal_link("incidents", incident_id, tenant) if incident_id else ""),
    )
    event.related = Related(alert_ids=[alert_id], incident_ids=[incident_id] if incident_id else [])
    assigned = text(data, "assignedTo")
    if assigned:
        event.enrichment["assigned_to"] = assigned
    category = text(data, "category")
    if category:
        event.enrichment["category"] = category
    _policy_from_alert(event, data)
    _evidence(event, items(data, "evidence"))
    if not event.workload:
        event.workload = _workload_from(event)
    return [event]


def normalize_incident(data: dict[str, Any], ctx: NormalizeContext) -> list[DlpEvent]:
    """One incident -> one event; alerts expanded with ``$expand=alerts`` are summarized."""
    event = _graph_event(data, ctx, "incident")
    incident_id, tenant = text(data, "id"), event.tenant_id
    event.links = Links(incident=text(data, "incidentWebUrl") or _portal_link("incidents", incident_id, tenant))
    alerts = [a for a in items(data, "alerts") if isinstance(a, dict)]
    event.related = Related(
        alert_ids=[text(a, "id") for a in alerts if text(a, "id")],
        incident_ids=[incident_id] + ([text(data, "redirectIncidentId")] if text(data, "redirectIncidentId") else []),
    )
    assigned = text(data, "assignedTo")
    if assigned:
        event.enrichment["assigned_to"] = assigned
    tags = strings(data, "customTags", "tags")
    if tags:
        event.enrichment["tags"] = tags
    for alert in alerts:
        alert_event = normalize_alert(alert, ctx)[0]
        if not event.user.upn and alert_event.user.upn:
            event.user = alert_event.user
        for p in alert_event.policies:
            if all(p.name != q.name or p.id != q.id for q in event.policies):
                event.policies.append(p)
        if not event.workload:
            event.workload = alert_event.workload
    return [event]


# --------------------------------------------------------------------------- enums


def enum(value: str) -> str:
    """An enum value in Graph's camelCase (docs show ``Active`` and ``active``); unknownFutureValue -> unknown."""
    if not value:
        return ""
    v = value[0].lower() + value[1:]
    return "unknown" if v == "unknownFutureValue" else v


def severity(value: str) -> str:
    v = value.lower()
    return v if v in SEVERITIES else "unknown"


def classification(value: str) -> str:
    v = enum(value)
    return _CLASSIFICATION.get(v.lower(), v)


def determination(value: str) -> str:
    v = enum(value)
    return _DETERMINATION.get(v.lower(), v)


# --------------------------------------------------------------------------- parts


def _portal_link(kind: str, ident: str, tenant: str) -> str:
    link = f"{DEFAULT_PORTAL}/{kind}/{ident}"
    return f"{link}?tid={tenant}" if tenant else link


def _policy_from_alert(event: DlpEvent, data: dict[str, Any]) -> None:
    """DLP alerts name their policy in ``additionalData``/``alertPolicy`` (beta) when at all;
    ``detectorId`` is the policy id otherwise."""
    extra = obj(data, "additionalData")
    policy_name = text(extra, "PolicyName", "policyName", "DlpPolicyName") or text(data, "policyName")
    policy_id = text(extra, "PolicyId", "policyId") or text(data, "alertPolicyId")
    rule_name = text(extra, "RuleName", "ruleName", "DlpRuleName")
    rule_id = text(extra, "RuleId", "ruleId")
    if not policy_id and is_dlp_alert(data):
        policy_id = text(data, "detectorId")
    if not policy_name and is_dlp_alert(data):
        # Purview writes the policy and rule into the alert text: "Policy 'X', rule 'Y' matched ..."
        m = _POLICY_IN_TEXT.search(text(data, "description")) or _POLICY_IN_TEXT.search(text(data, "title"))
        if m:
            policy_name = m.group(1)
            rule_name = rule_name or (m.group(2) or "")
    if policy_name or policy_id or rule_name:
        rules = [RuleMatch(id=rule_id, name=rule_name, severity=event.severity)] if (rule_name or rule_id) else []
        event.policies = [PolicyMatch(id=policy_id, name=policy_name, rules=rules)]
    workload = text(extra, "Workload", "workload")
    if workload:
        event.workload = workload
    for sit in items(extra, "SensitiveInformationTypes", "sensitiveInformationTypes"):
        if isinstance(sit, dict):
            event.sensitive_types.append(
                SensitiveType(
                    id=text(sit, "id", "Id"), name=text(sit, "name", "Name"), count=integer(sit, "count", "Count") or 0
                )
            )
        elif isinstance(sit, str):
            event.sensitive_types.append(SensitiveType(name=sit))


def _evidence(event: DlpEvent, evidence: list[Any]) -> None:
    users: list[tuple[bool, Identity]] = []
    for ev in evidence:
        if not isinstance(ev, dict):
            continue
        kind = text(ev, "@odata.type").rsplit(".", 1)[-1].lower()
        violator = "policyviolator" in [r.lower() for r in strings(ev, "roles")]
        if kind in ("userevidence",) or (kind == "processevidence" and get(ev, "userAccount")):
            account = obj(ev, "userAccount")
            ident = Identity(
                upn=text(account, "userPrincipalName") or _account_upn(account),
                object_id=text(account, "azureAdUserId"),
                display_name=text(account, "displayName"),
            )
            if ident.upn or ident.object_id:
                users.append((violator, ident))
        elif kind == "mailboxevidence":
            account = obj(ev, "userAccount")
            ident = Identity(
                upn=text(ev, "primaryAddress") or text(account, "userPrincipalName"),
                object_id=text(account, "azureAdUserId"),
                display_name=text(ev, "displayName") or text(account, "displayName"),
            )
            if ident.upn:
                users.append((violator, ident))
        elif kind == "fileevidence":
            details = obj(ev, "fileDetails")
            if not event.object.type or violator:
                event.object = ObjectRef(
                    type="file",
                    name=text(details, "fileName"),
                    path=text(details, "filePath"),
                    url=_url(text(details, "filePath")),
                    size=integer(details, "fileSize"),
                    sha1=text(details, "sha1"),
                    sha256=text(details, "sha256"),
                )
            device_id = text(ev, "mdeDeviceId")
            if device_id and not event.device.id:
                event.device.id = device_id
        elif kind == "analyzedmessageevidence":
            if not event.object.type or violator:
                event.object = ObjectRef(
                    type="email",
                    name=text(ev, "subject"),
                    subject=text(ev, "subject"),
                    message_id=text(ev, "internetMessageId"),
                )
            sender = text(ev, "p1Sender", "senderAddress") or text(obj(ev, "p1Sender"), "emailAddress")
            if sender:
                event.sender = sender
            for r in strings(ev, "recipientEmailAddress"):
                if r not in event.recipients:
                    event.recipients.append(r)
            ip = text(ev, "senderIp")
            if ip and not event.client_ip:
                event.client_ip = ip
        elif kind == "deviceevidence":
            event.device = Device(
                name=text(ev, "deviceDnsName", "hostName"),
                id=text(ev, "mdeDeviceId") or text(ev, "azureAdDeviceId"),
                platform=text(ev, "osPlatform"),
                application=event.device.application,
                target=event.device.target,
            )
        elif kind == "ipevidence":
            if not event.client_ip:
                event.client_ip = text(ev, "ipAddress")
        elif kind == "urlevidence":
            if not event.object.type:
                url = text(ev, "url")
                event.object = ObjectRef(type="file" if url else "", url=url, path=url)
        elif kind == "cloudapplicationevidence":
            if not event.device.application:
                event.device.application = text(ev, "displayName", "appName")
        labels = strings(ev, "sensitivityLabels")
        for label in labels:
            if all(x.id != label for x in event.labels):
                event.labels.append(Label(id=label))
    if users:
        users.sort(key=lambda u: not u[0])  # the policy violator first
        event.user = users[0][1]


def _account_upn(account: dict[str, Any]) -> str:
    name, domain = text(account, "accountName"), text(account, "domainName")
    if name and domain and "." in domain:
        return f"{name}@{domain}"
    return ""


def _url(path: str) -> str:
    return path if path.startswith(("http://", "https://")) else ""


def _workload_from(event: DlpEvent) -> str:
    if event.object.type == "email":
        return "Exchange"
    if event.device.name or event.device.id:
        return "Endpoint"
    url = event.object.url or event.object.path
    if "-my.sharepoint" in url:
        return "OneDrive"
    if ".sharepoint." in url:
        return "SharePoint"
    return ""
