"""What a received CEF / LEEF message must contain for a given event, stated field by field
from the documented mapping (docs/schema.md), independently of the sink's code."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re

from forwarder.schema import DlpEvent, parse_time

CEF_SEV = {"unknown": 5, "informational": 1, "low": 3, "medium": 6, "high": 8}
SYSLOG_SEV = {"high": 2, "medium": 4, "low": 5, "informational": 6, "unknown": 5}
MARKER = "...[truncated]"

_CEF_ODD = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f]")
_ALL_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")


def cef_clean(value: str) -> str:
    """Extension values keep CR/LF (escaped on the wire); other controls become spaces."""
    return _CEF_ODD.sub(" ", value)


def header_clean(value: str) -> str:
    return _ALL_CONTROLS.sub(" ", value)


def leef_clean(value: str, delimiter: str = "^") -> str:
    return _ALL_CONTROLS.sub(" ", value.replace(delimiter, "\ufffd"))


def ms(iso: str) -> str:
    parsed = parse_time(iso)
    assert parsed is not None
    return str((parsed - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1))


def _ipv(value: str) -> int:
    try:
        return ipaddress.ip_address(value).version
    except ValueError:
        return 0


def _actions(e: DlpEvent) -> str:
    out: list[str] = []
    for p in e.policies:
        for r in p.rules:
            for a in r.actions:
                if a and a not in out:
                    out.append(a)
    return ",".join(out)


def _types(e: DlpEvent) -> str:
    named = [s for s in e.sensitive_types if s.name or s.id]
    return ";".join(f"{s.name or s.id}({s.count})" if s.count else (s.name or s.id) for s in named)


def cef_expected(e: DlpEvent) -> tuple[list[str], dict[str, str]]:
    """(header fields, extension) the CEF of ``e`` must carry (before any size cut)."""
    operation = e.operation or e.kind or "DlpEvent"
    policies = ";".join(p.name for p in e.policies if p.name)
    name = e.title or (f"{operation}: {policies}" if policies else operation)
    header = ["0", "Microsoft", "Purview DLP", e.schema_version, operation, name, str(CEF_SEV[e.severity])]
    header = [header_clean(h) for h in header]
    ext: dict[str, str] = {
        "rt": ms(e.event_time) if e.event_time else "",
        "externalId": e.id.partition(":")[2] or e.id,
        "cat": e.kind,
        "deviceFacility": e.workload,
        "act": _actions(e),
        "suser": e.user.upn or e.sender,
        "suid": e.user.object_id,
        "duser": ";".join(r for r in e.recipients if r),
        "fname": e.object.name,
        "filePath": e.object.path,
        "fsize": "" if e.object.size is None else str(e.object.size),
        "fileHash": e.object.sha256 or e.object.sha1,
        "request": e.object.url,
        "src": e.client_ip if _ipv(e.client_ip) == 4 else "",
        "c6a2": e.client_ip if _ipv(e.client_ip) == 6 else "",
        "shost": e.device.name,
        "deviceExternalId": e.device.id,
        "deviceProcessName": e.device.application,
        "dhost": e.device.target,
        "msg": e.description,
        "reason": e.override.justification,
        "cs1": ";".join(p.name for p in e.policies if p.name),
        "cs2": ";".join(r.name for p in e.policies for r in p.rules if r.name),
        "cs3": _types(e),
        "cs4": ";".join(lb.name or lb.id for lb in e.labels if lb.name or lb.id),
        "cs5": e.links.alert or e.links.incident or e.links.purview,
        "cs6": e.id,
        "cn1": "" if e.record_type is None else str(e.record_type),
        "flexString1": e.tenant_id,
        "flexString2": e.status,
        "deviceCustomDate1": ms(e.updated_time) if e.updated_time else "",
    }
    labels = {
        "cs1": "DLP Policies",
        "cs2": "DLP Rules",
        "cs3": "Sensitive Info Types",
        "cs4": "Sensitivity Labels",
        "cs5": "Portal Link",
        "cs6": "dlpfwd Event Id",
        "cn1": "Record Type",
        "c6a2": "Source IPv6 Address",
        "flexString1": "Tenant Id",
        "flexString2": "Status",
        "deviceCustomDate1": "Updated Time",
    }
    out = {k: cef_clean(v) for k, v in ext.items() if v}
    for k in list(out):
        if k in labels:
            out[k + "Label"] = labels[k]
    return header, out


def leef_time(iso: str) -> str:
    parsed = parse_time(iso)
    assert parsed is not None
    return parsed.strftime("%Y-%m-%dT%H:%M:%S.") + f"{parsed.microsecond // 1000:03d}+0000"


def leef_expected(e: DlpEvent, delimiter: str = "^") -> tuple[list[str], dict[str, str]]:
    operation = e.operation or e.kind or "DlpEvent"
    d = delimiter if 0x21 <= ord(delimiter) <= 0x7E else f"0x{ord(delimiter):02x}"
    header = ["2.0", "Microsoft", "Purview DLP", e.schema_version, header_clean(operation).replace("|", "\ufffd"), d]
    attrs = {
        "devTime": leef_time(e.event_time) if e.event_time else "",
        "devTimeFormat": "yyyy-MM-dd'T'HH:mm:ss.SSSZ" if e.event_time else "",
        "sev": str(CEF_SEV[e.severity]),
        "cat": e.kind,
        "usrName": e.user.upn or e.sender,
        "src": e.client_ip if _ipv(e.client_ip) else "",
        "externalId": e.id.partition(":")[2] or e.id,
        "eventId": e.id,
        "workload": e.workload,
        "title": e.title,
        "msg": e.description,
        "status": e.status,
        "userId": e.user.object_id,
        "sender": e.sender,
        "recipients": ";".join(r for r in e.recipients if r),
        "fileName": e.object.name,
        "filePath": e.object.path,
        "fileSize": "" if e.object.size is None else str(e.object.size),
        "fileHash": e.object.sha256 or e.object.sha1,
        "url": e.object.url,
        "subject": e.object.subject,
        "policies": ";".join(p.name for p in e.policies if p.name),
        "rules": ";".join(r.name for p in e.policies for r in p.rules if r.name),
        "actions": _actions(e),
        "sensitiveTypes": _types(e),
        "labels": ";".join(lb.name or lb.id for lb in e.labels if lb.name or lb.id),
        "deviceName": e.device.name,
        "deviceId": e.device.id,
        "application": e.device.application,
        "destination": e.device.target,
        "justification": e.override.justification,
        "tenantId": e.tenant_id,
        "recordType": "" if e.record_type is None else str(e.record_type),
        "link": e.links.alert or e.links.incident or e.links.purview,
        "updatedTime": leef_time(e.updated_time) if e.updated_time else "",
    }
    return header, {k: leef_clean(v, delimiter) for k, v in attrs.items() if v}
