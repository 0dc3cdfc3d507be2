"""The column mapping of the common DLP schema to the Sentinel custom table ``PurviewDLP_CL``.

:data:`COLUMNS` is the single source of truth: the sink builds rows from it, the ARM template
test checks the table and the DCR stream declaration against it, and the docs test checks the
table in ``docs/schema.md`` against it. Each entry is ``(column, type, rule)``:

* ``column`` -- the Log Analytics column name (letters, digits, ``_``; none of the reserved
  names ``id``, ``TenantId``, ``Type``, ``Title``, ``UniqueId``, ``_ResourceId``...);
* ``type`` -- the type as a DCR stream declaration spells it (``string``, ``int``, ``long``,
  ``real``, ``boolean``, ``datetime``, ``dynamic``); :data:`TABLE_TYPES` gives the spelling of
  the tables API (``dateTime``);
* ``rule`` -- where the value comes from: a dotted schema field (``user.upn``), every value of
  a field in a list (``policies[].name``), or a named derivation (``severity_rank(severity)``).

Rows omit empty values (``""``, ``None``, ``[]``, ``{}``): Log Analytics stores a missing
column as empty, and smaller rows mean fewer requests. ``TimeGenerated`` is the event time
(``event_time``, else ``updated_time``, else ``ingest_time``), so queries over a time range find
events by when they happened, not when they were forwarded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from forwarder.schema import SEVERITIES

TABLE = "PurviewDLP_CL"
STREAM = "Custom-PurviewDLP_CL"


class Column(NamedTuple):
    """One column of ``PurviewDLP_CL``: name, DCR stream type, and the rule that fills it."""

    name: str
    type: str
    rule: str


#: Every column of the table, in table order.
COLUMNS: list[Column] = [
    Column("TimeGenerated", "datetime", "event_time or updated_time or ingest_time"),
    Column("EventId", "string", "id"),
    Column("IdempotencyKey", "string", "idempotency_key"),
    Column("Kind", "string", "kind"),
    Column("Operation", "string", "operation"),
    Column("EventTime", "datetime", "event_time"),
    Column("UpdatedTime", "datetime", "updated_time"),
    Column("IngestTime", "datetime", "ingest_time"),
    Column("SourceTenantId", "string", "tenant_id"),
    Column("SourceName", "string", "source"),
    Column("SourceType", "string", "source_type"),
    Column("RecordType", "int", "record_type"),
    Column("Workload", "string", "workload"),
    Column("Severity", "string", "severity"),
    Column("SeverityRank", "int", "severity_rank(severity)"),
    Column("Status", "string", "status"),
    Column("Classification", "string", "classification"),
    Column("Determination", "string", "determination"),
    Column("AlertTitle", "string", "title"),
    Column("Description", "string", "description"),
    Column("PolicyIds", "dynamic", "policies[].id"),
    Column("PolicyNames", "dynamic", "policies[].name"),
    Column("RuleIds", "dynamic", "policies[].rules[].id"),
    Column("RuleNames", "dynamic", "policies[].rules[].name"),
    Column("Actions", "dynamic", "unique(policies[].rules[].actions[])"),
    Column("OverriddenActions", "dynamic", "unique(policies[].rules[].overridden_actions[])"),
    Column("Policies", "dynamic", "policies"),
    Column("OverrideJustification", "string", "override.justification"),
    Column("OverrideFalsePositive", "boolean", "override.false_positive"),
    Column("OverrideReason", "string", "override.reason"),
    Column("OverrideRuleIds", "dynamic", "override.rule_ids"),
    Column("UserUpn", "string", "user.upn"),
    Column("UserObjectId", "string", "user.object_id"),
    Column("UserDisplayName", "string", "user.display_name"),
    Column("Sender", "string", "sender"),
    Column("Recipients", "dynamic", "recipients"),
    Column("ObjectType", "string", "object.type"),
    Column("ObjectName", "string", "object.name"),
    Column("ObjectPath", "string", "object.path"),
    Column("ObjectUrl", "string", "object.url"),
    Column("ObjectSize", "long", "object.size"),
    Column("ObjectSha1", "string", "object.sha1"),
    Column("ObjectSha256", "string", "object.sha256"),
    Column("ObjectSite", "string", "object.site"),
    Column("MessageId", "string", "object.message_id"),
    Column("Subject", "string", "object.subject"),
    Column("SensitiveTypeIds", "dynamic", "sensitive_types[].id"),
    Column("SensitiveTypeNames", "dynamic", "sensitive_types[].name"),
    Column("SensitiveMatchCount", "long", "sum(sensitive_types[].count)"),
    Column("SensitiveTypes", "dynamic", "sensitive_types"),
    Column("LabelIds", "dynamic", "labels[].id"),
    Column("LabelNames", "dynamic", "labels[].name"),
    Column("DeviceName", "string", "device.name"),
    Column("DeviceId", "string", "device.id"),
    Column("DevicePlatform", "string", "device.platform"),
    Column("DeviceApplication", "string", "device.application"),
    Column("DeviceTarget", "string", "device.target"),
    Column("ClientIp", "string", "client_ip"),
    Column("AlertLink", "string", "links.alert"),
    Column("IncidentLink", "string", "links.incident"),
    Column("PurviewLink", "string", "links.purview"),
    Column("RelatedAlertIds", "dynamic", "related.alert_ids"),
    Column("RelatedIncidentIds", "dynamic", "related.incident_ids"),
    Column("Enrichment", "dynamic", "enrichment"),
    Column("SchemaVersion", "string", "schema_version"),
    Column("RawRecord", "dynamic", "raw (only when the sink carries the original record)"),
    Column("TrimmedFields", "dynamic", "what the size rule removed to fit the 1 MB call limit (see docs/sentinel.md)"),
]

#: DCR stream type -> tables API column type.
TABLE_TYPES = {
    "string": "string",
    "int": "int",
    "long": "long",
    "real": "real",
    "boolean": "boolean",
    "datetime": "dateTime",
    "dynamic": "dynamic",
    "guid": "guid",
}

#: Column names Log Analytics reserves for itself; none may appear in :data:`COLUMNS`.
RESERVED = frozenset({"id", "_ResourceId", "_SubscriptionId", "TenantId", "Type", "UniqueId", "Title"})


#: Columns not fed by a schema field (documented as ``(constant)`` rows in docs/schema.md).
COMPUTED = ("TrimmedFields",)


def _schema_fields_of(column: Column) -> tuple[str, ...]:
    from forwarder.schema import schema_fields

    special = {
        "TimeGenerated": ("event_time", "updated_time", "ingest_time"),
        "SeverityRank": ("severity",),
        "SensitiveMatchCount": ("sensitive_types[].count",),
        "Actions": ("policies[].rules[].actions",),
        "OverriddenActions": ("policies[].rules[].overridden_actions",),
        "RawRecord": ("raw",),
    }
    if column.name in special:
        return special[column.name]
    if column.type == "dynamic" and "." not in column.rule and "[]" not in column.rule:
        nested = tuple(f for f in schema_fields() if f.startswith(column.rule + "[]."))
        if nested:
            return nested
    return (column.rule,)


#: Column -> the schema field(s) feeding it; ``docs/schema.md`` documents exactly this.
MAPPING: dict[str, tuple[str, ...]] = {c.name: _schema_fields_of(c) for c in COLUMNS if c.name not in COMPUTED}


# --------------------------------------------------------------------------- row building


def _get(data: dict[str, Any], dotted: str) -> Any:
    value: Any = data
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _pluck(items: Any, key: str) -> list[Any]:
    if not isinstance(items, list):
        return []
    return [i[key] for i in items if isinstance(i, dict) and i.get(key) not in (None, "")]


def _rules(data: dict[str, Any]) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for policy in data.get("policies") or ():
        if isinstance(policy, dict):
            rules.extend(r for r in policy.get("rules") or () if isinstance(r, dict))
    return rules


def _unique_actions(key: str) -> Callable[[dict[str, Any]], Any]:
    def extract(data: dict[str, Any]) -> Any:
        seen: dict[str, None] = {}
        for rule in _rules(data):
            for action in rule.get(key) or ():
                seen[action] = None
        return list(seen)

    return extract


def _time_generated(data: dict[str, Any]) -> Any:
    return data.get("event_time") or data.get("updated_time") or data.get("ingest_time") or None


def _severity_rank(data: dict[str, Any]) -> Any:
    severity = data.get("severity")
    if not isinstance(severity, str):
        return 0
    try:
        return SEVERITIES.index(severity.lower())
    except ValueError:
        return 0


def _match_count(data: dict[str, Any]) -> Any:
    total = 0
    for sit in data.get("sensitive_types") or ():
        if isinstance(sit, dict) and isinstance(sit.get("count"), int):
            total += sit["count"]
    return total if data.get("sensitive_types") else None


def _extractor(column: Column) -> Callable[[dict[str, Any]], Any]:
    """Compile a column's rule into a function of the event's JSON dict."""
    rule = column.rule
    special: dict[str, Callable[[dict[str, Any]], Any]] = {
        "TimeGenerated": _time_generated,
        "SeverityRank": _severity_rank,
        "SensitiveMatchCount": _match_count,
        "Actions": _unique_actions("actions"),
        "OverriddenActions": _unique_actions("overridden_actions"),
        "RuleIds": lambda d: [r["id"] for r in _rules(d) if r.get("id")],
        "RuleNames": lambda d: [r["name"] for r in _rules(d) if r.get("name")],
        "RawRecord": lambda d: d.get("raw"),
        "TrimmedFields": lambda d: None,
    }
    if column.name in special:
        return special[column.name]
    if "[]." in rule:
        head, _, key = rule.partition("[].")
        return lambda d: _pluck(_get(d, head), key)
    if "." in rule:
        first, _, second = rule.partition(".")

        def nested(d: dict[str, Any]) -> Any:
            inner = d.get(first)
            return inner.get(second) if isinstance(inner, dict) else None

        return nested
    return lambda d: d.get(rule)


_EXTRACTORS: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [(c.name, _extractor(c)) for c in COLUMNS]


def to_row_by_rules(data: dict[str, Any]) -> dict[str, Any]:
    """The row built by interpreting every column's rule: the reference :func:`to_row` must equal,
    and the fallback for payloads of unexpected shape."""
    row: dict[str, Any] = {}
    for name, extract in _EXTRACTORS:
        value = extract(data)
        if value is None or value == "" or value == [] or value == {}:
            continue
        row[name] = value
    return row


_TOP = (
    ("EventId", "id"),
    ("IdempotencyKey", "idempotency_key"),
    ("Kind", "kind"),
    ("Operation", "operation"),
    ("EventTime", "event_time"),
    ("UpdatedTime", "updated_time"),
    ("IngestTime", "ingest_time"),
    ("SourceTenantId", "tenant_id"),
    ("SourceName", "source"),
    ("SourceType", "source_type"),
    ("RecordType", "record_type"),
    ("Workload", "workload"),
    ("Severity", "severity"),
    ("Status", "status"),
    ("Classification", "classification"),
    ("Determination", "determination"),
    ("AlertTitle", "title"),
    ("Description", "description"),
    ("Sender", "sender"),
    ("Recipients", "recipients"),
    ("ClientIp", "client_ip"),
    ("Enrichment", "enrichment"),
    ("SchemaVersion", "schema_version"),
    ("RawRecord", "raw"),
)
_NESTED: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = tuple(
    (
        group,
        tuple(
            (c.name, c.rule.partition(".")[2]) for c in COLUMNS if c.rule.startswith(group + ".") and "[" not in c.rule
        ),
    )
    for group in ("override", "user", "object", "device", "links", "related")
)
_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}


def to_row(data: dict[str, Any]) -> dict[str, Any]:
    """The ``PurviewDLP_CL`` row of one event (the event as plain JSON types), empty values left out.

    A hand-written equivalent of :func:`to_row_by_rules` (tests hold them equal), several times
    faster; payloads of an unexpected shape fall back to the rule interpreter.
    """
    try:
        return _fast_row(data)
    except (AttributeError, TypeError, KeyError):
        return to_row_by_rules(data)


def _fast_row(d: dict[str, Any]) -> dict[str, Any]:
    get = d.get
    row: dict[str, Any] = {}
    when = get("event_time") or get("updated_time") or get("ingest_time")
    if when:
        row["TimeGenerated"] = when
    for column, key in _TOP:
        value = get(key)
        if value or value == 0:
            row[column] = value
    severity = get("severity")
    row["SeverityRank"] = _RANK.get(severity.lower(), 0) if isinstance(severity, str) else 0
    for group, pairs in _NESTED:
        inner = get(group)
        if inner:
            for column, key in pairs:
                value = inner.get(key)
                if value or value == 0:
                    row[column] = value
    policies = get("policies")
    if policies:
        row["Policies"] = policies
        _put(row, "PolicyIds", [p["id"] for p in policies if p.get("id")])
        _put(row, "PolicyNames", [p["name"] for p in policies if p.get("name")])
        rules = [r for p in policies for r in (p.get("rules") or ())]
        if rules:
            _put(row, "RuleIds", [r["id"] for r in rules if r.get("id")])
            _put(row, "RuleNames", [r["name"] for r in rules if r.get("name")])
            _put(row, "Actions", list(dict.fromkeys(a for r in rules for a in r.get("actions") or ())))
            _put(
                row,
                "OverriddenActions",
                list(dict.fromkeys(a for r in rules for a in r.get("overridden_actions") or ())),
            )
    sits = get("sensitive_types")
    if sits:
        row["SensitiveTypes"] = sits
        _put(row, "SensitiveTypeIds", [t["id"] for t in sits if t.get("id")])
        _put(row, "SensitiveTypeNames", [t["name"] for t in sits if t.get("name")])
        row["SensitiveMatchCount"] = sum(t["count"] for t in sits if isinstance(t.get("count"), int))
    labels = get("labels")
    if labels:
        _put(row, "LabelIds", [x["id"] for x in labels if x.get("id")])
        _put(row, "LabelNames", [x["name"] for x in labels if x.get("name")])
    return row


def _put(row: dict[str, Any], column: str, value: list[Any]) -> None:
    if value:
        row[column] = value


def column_names() -> list[str]:
    return [c.name for c in COLUMNS]
