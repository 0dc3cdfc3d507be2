"""Ticket field mapping: templates over a flat *view* of a DLP event.

A template is text with ``{name}`` placeholders (``{{`` and ``}}`` for literal braces). ``name``
is either a computed view name (:data:`VIEW_NAMES`, e.g. ``{policies}``, ``{details}``,
``{incident_link}``) or a dotted path into the event (``{user.upn}``, ``{object.name}``,
``{enrichment.department}``). Paths into ``raw`` and ``detected_values`` are refused when the
configuration is checked: matched sensitive values never reach a ticket, only SIT names and
counts do.

:func:`default_fields` is the mapping an analyst needs to triage without leaving the ticket;
``[sinks.fields]`` overrides or removes (``""``) single fields and adds new ones.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

from forwarder.schema import KIND_INCIDENT, DlpEvent

#: Computed names a template may use, with what they render. Documented in ``docs/itsm.md``.
VIEW_NAMES: dict[str, str] = {
    "title": "the alert or incident title (falls back to the operation and workload)",
    "severity": "Defender severity: high, medium, low, informational, unknown",
    "impact": "ServiceNow impact (1-3) from the severity through the `impact` setting",
    "urgency": "ServiceNow urgency (1-3) from the severity through the `urgency` setting",
    "status": "Defender status of the alert or incident",
    "kind": "incident, alert or audit",
    "workload": "Exchange, SharePoint, OneDrive, MicrosoftTeams, Endpoint...",
    "operation": "DlpRuleMatch, DlpAlert, Incident...",
    "event_time": "when it happened (ISO 8601 UTC)",
    "updated_time": "last update in Defender (ISO 8601 UTC)",
    "incident_id": "the Defender XDR incident id ('' for an alert without an incident)",
    "alert_ids": "ids of the alerts involved, comma-separated",
    "user": "the user as 'Display Name <upn>'",
    "policies": "DLP policies with their rules and actions",
    "rules": "DLP rule names, comma-separated",
    "actions": "actions taken, comma-separated",
    "sensitive_types": "sensitive information types with counts and confidence (names, never values)",
    "object": "the file (name, path or URL), email (subject, message id) or message",
    "recipients": "email recipients, comma-separated",
    "labels": "sensitivity labels, comma-separated",
    "device": "device name, platform, application and target (endpoint DLP)",
    "override": "the user's override justification, if any",
    "enrichment": "enrichment key: value pairs, one a line",
    "incident_link": "link to the Defender XDR incident",
    "alert_link": "link to the Defender XDR alert",
    "purview_link": "link to the Purview portal",
    "link": "incident link, else alert link, else Purview link",
    "details": "a multi-line triage summary of all of the above",
}

FORBIDDEN = ("raw", "detected_values")
ROW_LIMIT = 600  # characters of one line of the details block, so the links and footer fit in 4000

#: ServiceNow column lengths the sink truncates to (characters).
MAX_LENGTHS = {"short_description": 160, "correlation_id": 100, "correlation_display": 100, "description": 4000}


def default_fields(table: str) -> dict[str, str]:
    """The default mapping for ``table`` (``incident``, ``sn_si_incident`` or any task table)."""
    fields = {
        "short_description": "Purview DLP: {title}",
        "description": "{details}",
        "impact": "{impact}",
        "urgency": "{urgency}",
        "correlation_display": "dlpfwd",
    }
    return fields


class Template:
    """One compiled template; :meth:`render` fills it from a view."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.parts: list[tuple[str, str | None]] = [
            (literal, name) for literal, name, _spec, _conv in string.Formatter().parse(text)
        ]

    @property
    def names(self) -> list[str]:
        return [name for _, name in self.parts if name is not None]

    def problems(self) -> list[str]:
        """Why this template cannot be used ('' names, forbidden or unknown paths); empty if fine."""
        found: list[str] = []
        for name in self.names:
            root = name.split(".")[0].split("[")[0]
            if not name:
                found.append("an empty {} placeholder")
            elif any(part in FORBIDDEN for part in name.replace("[", ".").split(".")):
                found.append(f"{{{name}}} is not allowed: raw records and matched values never go to a ticket")
            elif root not in VIEW_NAMES and root not in _EVENT_ROOTS:
                found.append(f"{{{name}}} is neither a view name nor an event field")
        return found

    def render(self, view: EventView) -> str:
        out: list[str] = []
        for literal, name in self.parts:
            out.append(literal)
            if name is not None:
                out.append(view.get(name))
        return "".join(out)


def compile_fields(fields: Mapping[str, str], path: str, problems: list[str]) -> dict[str, Template]:
    """Compile templates, appending ``"<path>.<field>: <problem>"`` for each bad one."""
    compiled: dict[str, Template] = {}
    for name, text in fields.items():
        try:
            template = Template(text)
        except ValueError as exc:
            problems.append(f"{path}.{name}: invalid template ({exc})")
            continue
        for problem in template.problems():
            problems.append(f"{path}.{name}: {problem}")
        compiled[name] = template
    return compiled


_EVENT_ROOTS = {
    "id",
    "idempotency_key",
    "kind",
    "operation",
    "event_time",
    "updated_time",
    "ingest_time",
    "tenant_id",
    "source",
    "source_type",
    "record_type",
    "workload",
    "severity",
    "status",
    "classification",
    "determination",
    "title",
    "description",
    "policies",
    "override",
    "user",
    "sender",
    "recipients",
    "object",
    "sensitive_types",
    "labels",
    "device",
    "client_ip",
    "links",
    "related",
    "enrichment",
    "schema_version",
}


class EventView:
    """The computed names of :data:`VIEW_NAMES` for one event, plus dotted access to its fields."""

    def __init__(self, event: DlpEvent, data: dict[str, Any], impact: str, urgency: str) -> None:
        self.event = event
        self.data = data
        self._computed: dict[str, str] = {"impact": impact, "urgency": urgency}

    def get(self, name: str) -> str:
        if name in self._computed:
            return self._computed[name]
        producer = getattr(self, "_v_" + name, None)
        if producer is not None and name in VIEW_NAMES:
            value: str = producer()
            self._computed[name] = value
            return value
        return _text(_walk(self.data, name.split(".")))

    # computed names ------------------------------------------------------------

    def _v_title(self) -> str:
        e = self.event
        return e.title or " ".join(p for p in (e.operation, e.workload) if p) or e.id

    def _v_severity(self) -> str:
        return self.event.severity

    def _v_status(self) -> str:
        return self.event.status

    def _v_kind(self) -> str:
        return self.event.kind

    def _v_workload(self) -> str:
        return self.event.workload

    def _v_operation(self) -> str:
        return self.event.operation

    def _v_event_time(self) -> str:
        return self.event.event_time

    def _v_updated_time(self) -> str:
        return self.event.updated_time

    def _v_incident_id(self) -> str:
        return incident_id(self.event)

    def _v_alert_ids(self) -> str:
        return ", ".join(self.event.related.alert_ids)

    def _v_user(self) -> str:
        u = self.event.user
        if u.display_name and u.upn:
            return f"{u.display_name} <{u.upn}>"
        return u.upn or u.display_name or u.object_id

    def _v_policies(self) -> str:
        parts = []
        for p in self.event.policies:
            rules = []
            for r in p.rules:
                text = r.name or r.id
                if r.actions:
                    text += f" [actions: {', '.join(r.actions)}]"
                if r.overridden_actions:
                    text += f" [overridden: {', '.join(r.overridden_actions)}]"
                rules.append(text)
            name = p.name or p.id
            parts.append(f"{name} (rules: {'; '.join(rules)})" if rules else name)
        return "; ".join(parts)

    def _v_rules(self) -> str:
        return ", ".join(r.name or r.id for p in self.event.policies for r in p.rules)

    def _v_actions(self) -> str:
        seen: dict[str, None] = {}
        for p in self.event.policies:
            for r in p.rules:
                seen.update(dict.fromkeys(r.actions))
        return ", ".join(seen)

    def _v_sensitive_types(self) -> str:
        parts = []
        for s in self.event.sensitive_types:
            details = []
            if s.count:
                details.append(f"count {s.count}")
            if s.confidence:
                details.append(f"confidence {s.confidence}")
            if s.location:
                details.append(f"in {s.location}")
            name = s.name or s.id
            parts.append(f"{name} ({', '.join(details)})" if details else name)
        return "; ".join(parts)

    def _v_object(self) -> str:
        o = self.event.object
        if o.type == "email" or o.subject or o.message_id:
            text = f'email "{o.subject}"' if o.subject else "email"
            if o.message_id:
                text += f" (message id {o.message_id})"
            return text
        where = o.url or o.path
        if o.name and where:
            return f"{o.type or 'file'} {o.name} at {where}"
        if o.name or where:
            return f"{o.type or 'file'} {where or o.name}"
        return ""

    def _v_recipients(self) -> str:
        return ", ".join(self.event.recipients)

    def _v_labels(self) -> str:
        return ", ".join(label.name or label.id for label in self.event.labels)

    def _v_device(self) -> str:
        d = self.event.device
        text = " ".join(p for p in (d.name, f"({d.platform})" if d.platform else "") if p)
        if d.application:
            text += f" application {d.application}"
        if d.target:
            text += f" target {d.target}"
        return text.strip()

    def _v_override(self) -> str:
        o = self.event.override
        parts = [o.justification]
        if o.false_positive:
            parts.append("reported as false positive")
        if o.reason:
            parts.append(o.reason)
        return "; ".join(p for p in parts if p)

    def _v_enrichment(self) -> str:
        return "\n".join(f"{k}: {_text(v)}" for k, v in sorted(self.event.enrichment.items()))

    def _v_incident_link(self) -> str:
        return self.event.links.incident

    def _v_alert_link(self) -> str:
        return self.event.links.alert

    def _v_purview_link(self) -> str:
        return self.event.links.purview

    def _v_link(self) -> str:
        links = self.event.links
        return links.incident or links.alert or links.purview

    def _v_details(self) -> str:
        e = self.event
        what = {"incident": "Defender XDR incident", "alert": "Defender XDR alert"}.get(e.kind, "Purview DLP event")
        ident = incident_id(e) if e.kind == KIND_INCIDENT else e.id.partition(":")[2] or e.id
        time = e.event_time + (
            f" (updated {e.updated_time})" if e.updated_time and e.updated_time != e.event_time else ""
        )
        rows = [
            ("Severity", e.severity),
            ("Status", e.status),
            ("Classification", _classification(e.classification, e.determination)),
            ("Workload", e.workload),
            ("Operation", e.operation),
            ("Time", time),
            ("User", self.get("user")),
            ("Sender", e.sender),
            ("Recipients", self.get("recipients")),
            ("Policies", self.get("policies")),
            ("Sensitive info types", self.get("sensitive_types")),
            ("Labels", self.get("labels")),
            ("Object", self.get("object")),
            ("Device", self.get("device")),
            ("Client IP", e.client_ip),
            ("Override", self.get("override")),
            ("Alerts", self.get("alert_ids")),
            ("Description", e.description),
        ]
        head = [f"{what} {ident}: {_cap(self.get('title'), 300)}"]
        links = [
            ("Defender XDR incident", e.links.incident),
            ("Defender XDR alert", e.links.alert),
            ("Purview", e.links.purview),
        ]
        head += [f"{label}: {_cap(url, 500)}" for label, url in links if url]
        tail = f"Forwarded by dlpfwd from source {_cap(e.source, 100) or '?'} (event {_cap(e.id, 200)})"
        body = [f"{label}: {_cap(value, ROW_LIMIT)}" for label, value in rows if value]
        enrichment = self.get("enrichment")
        if enrichment:
            body += ["", "Enrichment:", _cap(enrichment, ROW_LIMIT)]
        # The whole block fits the description column: the links and the footer always survive.
        budget = MAX_LENGTHS["description"] - sum(len(x) + 1 for x in head) - len(tail) - 4
        kept: list[str] = []
        for line in body:
            if len(line) + 1 > budget:
                if budget > 20:
                    kept.append(_cap(line, budget - 1))
                break
            kept.append(line)
            budget -= len(line) + 1
        return "\n".join([*head, "", *kept, "", tail])


def incident_id(event: DlpEvent) -> str:
    """The Defender incident id the event belongs to, or ''."""
    if event.kind == KIND_INCIDENT:
        if event.related.incident_ids:
            return event.related.incident_ids[0]
        return event.id.partition(":")[2] if event.id.startswith("incident:") else event.id
    return event.related.incident_ids[0] if event.related.incident_ids else ""


def _classification(classification: str, determination: str) -> str:
    """'truePositive (maliciousUserActivity)'; '' while Defender has none."""
    if not classification or classification == "unknown":
        return ""
    return f"{classification} ({determination})" if determination and determination != "unknown" else classification


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _walk(data: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(data, dict):
            data = data.get(part, "")
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return ""
    return data


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value if not isinstance(v, dict | list))
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_text(v)}" for k, v in value.items() if not isinstance(v, dict | list))
    return str(value)
