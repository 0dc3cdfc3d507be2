"""The dlpfwd event as an OCSF Data Security Finding (class 2006, OCSF 1.3.0).

:func:`to_ocsf` works on the plain JSON form of an event (``Entry.data``) so sinks need not
decode it twice. :data:`MAPPING` (OCSF attribute -> dlpfwd field(s)) and :data:`CONSTANTS`
are what ``docs/schema.md`` documents under "OCSF Data Security Finding"; a test compares the
two. dlpfwd fields without a natural OCSF home go to ``unmapped`` (OCSF's place for them).
"""

from __future__ import annotations

from typing import Any

import orjson

from forwarder import __version__
from forwarder.schema import epoch_seconds

OCSF_VERSION = "1.3.0"
CLASS_UID = 2006
CATEGORY_UID = 2

#: OCSF attribute -> dlpfwd schema field (or fields, when several feed one attribute).
MAPPING: dict[str, str | tuple[str, ...]] = {
    "finding_info.uid": "id",
    "metadata.uid": "idempotency_key",
    "finding_info.types": "kind",
    "metadata.event_code": "operation",
    "time": "event_time",
    "finding_info.created_time": "event_time",
    "finding_info.modified_time": "updated_time",
    "metadata.processed_time": "ingest_time",
    "metadata.tenant_uid": "tenant_id",
    "metadata.log_name": "source",
    "metadata.log_provider": "source_type",
    "unmapped.record_type": "record_type",
    "metadata.product.feature.name": "workload",
    "severity_id": "severity",
    "severity": "severity",
    "status_id": "status",
    "status": "status",
    "activity_id": ("status", "event_time", "updated_time"),
    "unmapped.classification": "classification",
    "unmapped.determination": "determination",
    "finding_info.title": "title",
    "finding_info.desc": "description",
    "data_security.policy.uid": "policies[].id",
    "data_security.policy.name": "policies[].name",
    "unmapped.policies": ("policies[].id", "policies[].name"),
    "unmapped.rules[].uid": "policies[].rules[].id",
    "data_security.detection_pattern": "policies[].rules[].name",
    "unmapped.rules[].severity": "policies[].rules[].severity",
    "unmapped.rules[].mode": "policies[].rules[].mode",
    "unmapped.rules[].actions": "policies[].rules[].actions",
    "action_id": "policies[].rules[].actions",
    "disposition_id": "policies[].rules[].actions",
    "unmapped.rules[].overridden_actions": "policies[].rules[].overridden_actions",
    "comment": "override.justification",
    "unmapped.override.false_positive": "override.false_positive",
    "unmapped.override.reason": "override.reason",
    "unmapped.override.rule_ids": "override.rule_ids",
    "actor.user.email_addr": "user.upn",
    "actor.user.name": ("user.display_name", "user.upn"),
    "actor.user.uid": "user.object_id",
    "unmapped.sender": "sender",
    "unmapped.recipients": "recipients",
    "file.type": "object.type",
    "file.name": "object.name",
    "file.path": "object.path",
    "file.url": "object.url",
    "data_security.src_url": "object.url",
    "file.size": "object.size",
    "file.hashes": ("object.sha1", "object.sha256"),
    "resources[].name": "object.site",
    "file.uid": "object.message_id",
    "unmapped.subject": "object.subject",
    "data_security.data_type_ids": "sensitive_types[].id",
    "data_security.pattern_match": "sensitive_types[].name",
    "unmapped.sensitive_types[].id": "sensitive_types[].id",
    "unmapped.sensitive_types[].name": "sensitive_types[].name",
    "unmapped.sensitive_types[].count": "sensitive_types[].count",
    "unmapped.sensitive_types[].unique_count": "sensitive_types[].unique_count",
    "unmapped.sensitive_types[].confidence": "sensitive_types[].confidence",
    "unmapped.sensitive_types[].location": "sensitive_types[].location",
    "unmapped.sensitive_types[].detected_values[].name": "sensitive_types[].detected_values[].name",
    "unmapped.sensitive_types[].detected_values[].value": "sensitive_types[].detected_values[].value",
    "count": "sensitive_types[].count",
    "unmapped.labels[].uid": "labels[].id",
    "unmapped.labels[].name": "labels[].name",
    "device.name": "device.name",
    "device.uid": "device.id",
    "device.os.name": "device.platform",
    "unmapped.device.application": "device.application",
    "unmapped.device.target": "device.target",
    "src_endpoint.ip": "client_ip",
    "finding_info.src_url": ("links.alert", "links.incident", "links.purview"),
    "unmapped.links": ("links.alert", "links.incident", "links.purview"),
    "finding_info.related_events_uids": ("related.alert_ids", "related.incident_ids"),
    "unmapped.related": ("related.alert_ids", "related.incident_ids"),
    "enrichments": "enrichment",
    "raw_data": "raw",
    "unmapped.schema_version": "schema_version",
}

#: OCSF attributes with fixed values (documented as constants).
CONSTANTS: dict[str, Any] = {
    "class_uid": CLASS_UID,
    "class_name": "Data Security Finding",
    "category_uid": CATEGORY_UID,
    "category_name": "Findings",
    "type_uid": "2006 x 100 + activity_id",
    "metadata.version": OCSF_VERSION,
    "metadata.product.name": "Microsoft Purview DLP (via dlpfwd)",
    "metadata.product.vendor_name": "Microsoft",
    "metadata.product.version": "dlpfwd version",
}

_SEVERITY_ID = {"unknown": 0, "informational": 1, "low": 2, "medium": 3, "high": 4}
_STATUS_ID = {"new": 1, "active": 1, "inprogress": 2, "in_progress": 2, "resolved": 4, "closed": 4, "redirected": 99}
_ACTIVITY = {1: "Create", 2: "Update", 3: "Close"}
_FILE_TYPE_ID = {"file": 1, "email": 99, "message": 99}


def _ms(text: Any) -> int | None:
    seconds = epoch_seconds(text) if isinstance(text, str) else None
    return int(seconds * 1000) if seconds is not None else None


def _clean(value: Any) -> Any:
    """Drop empty strings, empty lists/dicts and None, recursively (OCSF omits unknown attributes)."""
    if isinstance(value, dict):
        cleaned = {k: _clean(v) for k, v in value.items()}
        return {k: v for k, v in cleaned.items() if v not in ("", None, [], {})}
    if isinstance(value, list):
        items = [_clean(v) for v in value]
        return [v for v in items if v not in ("", None, [], {})]
    return value


def _get(data: dict[str, Any], key: str, kind: type = dict) -> Any:
    value = data.get(key)
    return value if isinstance(value, kind) else kind()


def to_ocsf(data: dict[str, Any]) -> dict[str, Any]:
    """One dlpfwd event (plain JSON form) as an OCSF Data Security Finding object."""
    severity = str(data.get("severity") or "unknown").lower()
    status = str(data.get("status") or "")
    status_id = _STATUS_ID.get(status.lower().replace(" ", ""), 99 if status else 0)
    event_time, updated_time = data.get("event_time") or "", data.get("updated_time") or ""
    if status_id == 4:
        activity_id = 3
    elif updated_time and event_time and updated_time != event_time:
        activity_id = 2
    else:
        activity_id = 1
    policies = [p for p in _get(data, "policies", list) if isinstance(p, dict)]
    rules = [r for p in policies for r in (p.get("rules") or []) if isinstance(r, dict)]
    actions = [str(a) for r in rules for a in (r.get("actions") or [])]
    blocked = any("block" in a.lower() for a in actions)
    obj, user, device = _get(data, "object"), _get(data, "user"), _get(data, "device")
    override, links, related = _get(data, "override"), _get(data, "links"), _get(data, "related")
    sits = [s for s in _get(data, "sensitive_types", list) if isinstance(s, dict)]
    hashes = []
    if obj.get("sha1"):
        hashes.append({"algorithm_id": 2, "algorithm": "SHA-1", "value": obj["sha1"]})
    if obj.get("sha256"):
        hashes.append({"algorithm_id": 3, "algorithm": "SHA-256", "value": obj["sha256"]})
    first_policy = policies[0] if policies else {}
    raw = data.get("raw")
    finding: dict[str, Any] = {
        "class_uid": CLASS_UID,
        "class_name": "Data Security Finding",
        "category_uid": CATEGORY_UID,
        "category_name": "Findings",
        "activity_id": activity_id,
        "activity_name": _ACTIVITY[activity_id],
        "type_uid": CLASS_UID * 100 + activity_id,
        "time": _ms(event_time) or _ms(data.get("ingest_time")) or 0,
        "severity_id": _SEVERITY_ID.get(severity, 0),
        "severity": severity.capitalize(),
        "status_id": status_id,
        "status": status,
        "action_id": 2 if blocked else (1 if actions else 0),
        "action": "Denied" if blocked else ("Allowed" if actions else "Unknown"),
        "disposition_id": 2 if blocked else (15 if actions else 0),
        "disposition": "Blocked" if blocked else ("Detected" if actions else "Unknown"),
        "comment": override.get("justification", ""),
        "count": sum(int(s.get("count") or 0) for s in sits) or None,
        "metadata": {
            "version": OCSF_VERSION,
            "uid": data.get("idempotency_key", ""),
            "event_code": data.get("operation", ""),
            "processed_time": _ms(data.get("ingest_time")),
            "tenant_uid": data.get("tenant_id", ""),
            "log_name": data.get("source", ""),
            "log_provider": data.get("source_type", ""),
            "product": {
                "name": "Microsoft Purview DLP (via dlpfwd)",
                "vendor_name": "Microsoft",
                "version": __version__,
                "feature": {"name": data.get("workload", "")},
            },
        },
        "finding_info": {
            "uid": data.get("id", ""),
            "title": data.get("title", "") or data.get("operation", "") or "DLP event",
            "desc": data.get("description", ""),
            "types": [data.get("kind", "")],
            "created_time": _ms(event_time),
            "modified_time": _ms(updated_time),
            "src_url": links.get("alert") or links.get("incident") or links.get("purview") or "",
            "related_events_uids": list(related.get("alert_ids") or []) + list(related.get("incident_ids") or []),
        },
        "data_security": {
            "category_id": 0,
            "detection_system_id": 1 if data.get("workload") == "Endpoint" else 99,
            "detection_system": "Endpoint" if data.get("workload") == "Endpoint" else "Microsoft Purview DLP",
            "detection_pattern": ", ".join(str(r.get("name", "")) for r in rules if r.get("name")),
            "pattern_match": ", ".join(str(s.get("name") or s.get("id") or "") for s in sits),
            "data_type_ids": [s.get("id", "") for s in sits],
            "policy": {"uid": first_policy.get("id", ""), "name": first_policy.get("name", "")},
            "src_url": obj.get("url", ""),
        },
        "actor": {
            "user": {
                "name": user.get("display_name") or user.get("upn", ""),
                "email_addr": user.get("upn", "") if "@" in str(user.get("upn", "")) else "",
                "uid": user.get("object_id", ""),
            }
        },
        "file": {
            "name": obj.get("name", "") or obj.get("subject", ""),
            "type_id": _FILE_TYPE_ID.get(str(obj.get("type", "")), 0),
            "type": obj.get("type", ""),
            "path": obj.get("path", ""),
            "url": obj.get("url", ""),
            "size": obj.get("size"),
            "hashes": hashes,
            "uid": obj.get("message_id", ""),
        }
        if obj.get("name") or obj.get("path") or obj.get("url") or obj.get("message_id")
        else {},
        "resources": [{"name": obj["site"], "type": "site"}] if obj.get("site") else [],
        "device": {
            "name": device.get("name", ""),
            "uid": device.get("id", ""),
            "os": {"name": device.get("platform", "")} if device.get("platform") else {},
            "type_id": 0,
        }
        if device.get("name") or device.get("id")
        else {},
        "src_endpoint": {"ip": data.get("client_ip", "")},
        "enrichments": [
            {"name": str(k), "value": v if isinstance(v, str) else orjson.dumps(v).decode(), "data": v}
            for k, v in _get(data, "enrichment").items()
        ],
        "raw_data": orjson.dumps(raw).decode() if raw is not None else "",
        "unmapped": {
            "record_type": data.get("record_type"),
            "classification": data.get("classification", ""),
            "determination": data.get("determination", ""),
            "policies": [{"uid": p.get("id", ""), "name": p.get("name", "")} for p in policies],
            "rules": [
                {
                    "uid": r.get("id", ""),
                    "name": r.get("name", ""),
                    "severity": r.get("severity", ""),
                    "mode": r.get("mode", ""),
                    "actions": r.get("actions") or [],
                    "overridden_actions": r.get("overridden_actions") or [],
                }
                for r in rules
            ],
            "override": {
                "false_positive": bool(override.get("false_positive")) or None,
                "reason": override.get("reason", ""),
                "rule_ids": override.get("rule_ids") or [],
            },
            "sender": data.get("sender", ""),
            "recipients": data.get("recipients") or [],
            "subject": obj.get("subject", ""),
            "sensitive_types": sits,
            "labels": [
                {"uid": lb.get("id", ""), "name": lb.get("name", "")}
                for lb in _get(data, "labels", list)
                if isinstance(lb, dict)
            ],
            "device": {"application": device.get("application", ""), "target": device.get("target", "")},
            "links": links,
            "related": related,
            "schema_version": data.get("schema_version", ""),
        },
    }
    result: dict[str, Any] = _clean(finding)
    # Required / meaningful zeros survive cleaning.
    for key in ("activity_id", "severity_id", "status_id", "action_id", "disposition_id", "time"):
        result[key] = finding[key]
    result.setdefault("data_security", {})["category_id"] = 0
    return result
