"""Reading the values formatters need from an event's plain-JSON form (``Entry.data``).

Formatters work on the dict orjson decoded, not on :class:`~forwarder.schema.DlpEvent`: it is
several times faster and every field has a documented default, so ``get`` with a default is
exact. Lists are joined into one string with the separators named here.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
from typing import Any

from forwarder.schema import SEVERITIES, parse_time

LIST_SEPARATOR = ";"  # between list items in one value (policies, recipients...)
ACTION_SEPARATOR = ","  # between actions

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS = dt.timedelta(milliseconds=1)
_ZERO = dt.timedelta(0)


def text(value: Any) -> str:
    """A JSON scalar as text ("" for None)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def sub(data: dict[str, Any], key: str) -> dict[str, Any]:
    """A nested object, ``{}`` when absent."""
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def items(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    return value if isinstance(value, list) else []


def when(iso: str) -> dt.datetime | None:
    """An ISO time as an aware UTC datetime; fast for the schema's own ``...Z`` form."""
    if not iso:
        return None
    try:
        parsed = dt.datetime.fromisoformat(iso)  # Python 3.11 reads "Z" and up to 6 digits
    except ValueError:
        return parse_time(iso)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=dt.UTC)
    return parsed if parsed.utcoffset() == _ZERO else parsed.astimezone(dt.UTC)


def epoch_ms(iso: str) -> str:
    """Epoch milliseconds of an ISO time, as text; "" when unreadable."""
    parsed = when(iso)
    if parsed is None:
        return ""
    return str((parsed - _EPOCH) // _MS)


def ip_version(value: str) -> int:
    """4 or 6 for an IP address, 0 otherwise (client addresses repeat: cached)."""
    if not value or value.__class__ is not str:
        return 0
    return _ip_version(value)


@functools.lru_cache(maxsize=4096)
def _ip_version(value: str) -> int:
    try:
        return ipaddress.ip_address(value).version
    except ValueError:
        return 0


def policy_fields(data: dict[str, Any]) -> tuple[str, str, str]:
    """(policy names, rule names, distinct actions) in one pass over ``policies``."""
    policies = data.get("policies")
    if not policies:
        return "", "", ""
    names: list[str] = []
    rules: list[str] = []
    seen: dict[str, None] = {}
    for p in policies:
        name = p.get("name")
        if name:
            names.append(name)
        for r in p.get("rules") or ():
            rule = r.get("name")
            if rule:
                rules.append(rule)
            for a in r.get("actions") or ():
                if a:
                    seen.setdefault(a, None)
    return LIST_SEPARATOR.join(names), LIST_SEPARATOR.join(rules), ACTION_SEPARATOR.join(seen)


def policy_names(data: dict[str, Any]) -> str:
    return LIST_SEPARATOR.join(text(p.get("name")) for p in items(data, "policies") if p.get("name"))


def rule_names(data: dict[str, Any]) -> str:
    return LIST_SEPARATOR.join(
        text(r.get("name")) for p in items(data, "policies") for r in items(p, "rules") if r.get("name")
    )


def actions(data: dict[str, Any]) -> str:
    """Distinct actions of every matched rule, in first-seen order."""
    seen: dict[str, None] = {}
    for p in items(data, "policies"):
        for r in items(p, "rules"):
            for a in items(r, "actions"):
                if a:
                    seen.setdefault(text(a), None)
    return ACTION_SEPARATOR.join(seen)


def sensitive_types(data: dict[str, Any]) -> str:
    """``name(count)`` for each sensitive information type (the id when the name is unknown)."""
    out = []
    for s in items(data, "sensitive_types"):
        name = text(s.get("name")) or text(s.get("id"))
        if name:
            count = s.get("count") or 0
            out.append(f"{name}({count})" if count else name)
    return LIST_SEPARATOR.join(out)


def label_names(data: dict[str, Any]) -> str:
    out = []
    for lb in data.get("labels") or ():
        name = lb.get("name") or lb.get("id")
        if name:
            out.append(text(name))
    return LIST_SEPARATOR.join(out)


def recipients(data: dict[str, Any]) -> str:
    return LIST_SEPARATOR.join(text(r) for r in items(data, "recipients") if r)


def portal_link(data: dict[str, Any]) -> str:
    links = data.get("links")
    if not links:
        return ""
    return text(links.get("alert") or links.get("incident") or links.get("purview"))


def file_hash(obj: dict[str, Any]) -> str:
    return text(obj.get("sha256")) or text(obj.get("sha1"))


def source_id(event_id: str) -> str:
    """The source's own id: ``audit:<guid>`` -> ``<guid>``."""
    return event_id.partition(":")[2] or event_id


_NO_ENRICHMENT = ("", "", "", "", "", "")
_SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}


def enrichment_fields(data: dict[str, Any]) -> tuple[str, str, str, str, str, str]:
    """The correlation enrichment CEF and LEEF carry, as text (all "" without enrichment):

    (related alert ids ``;``-joined, related alert count, highest severity of the listed
    related alerts, incident ids ``;``-joined, prior-incident count, enrichment flag). The flag
    is ``failed:<enricher>;...`` when an enricher failed on the event, else ``ok``; counts are
    "" when the event has no correlation enrichment (0 is a real count). Defensive: the
    ``enrichment`` object is free-form."""
    enr = data.get("enrichment")
    if not enr or not isinstance(enr, dict):
        return _NO_ENRICHMENT
    errors = enr.get("errors")
    flag = "failed:" + LIST_SEPARATOR.join(sorted(map(str, errors))) if isinstance(errors, dict) and errors else "ok"
    corr = enr.get("correlation")
    if not isinstance(corr, dict):
        return "", "", "", "", "", flag
    ids: list[str] = []
    top = -1
    top_name = ""
    for alert in corr.get("related_alerts") or ():
        if not isinstance(alert, dict):
            continue
        if alert.get("id"):
            ids.append(text(alert["id"]))
        severity = text(alert.get("severity")).lower()
        rank = _SEVERITY_RANK.get(severity, 0)
        if severity and rank > top:
            top, top_name = rank, severity
    count = corr.get("related_count")
    prior = corr.get("prior_incidents")
    prior_count = prior.get("count") if isinstance(prior, dict) else None
    incidents = corr.get("incidents")
    return (
        LIST_SEPARATOR.join(ids),
        str(count) if isinstance(count, int) and not isinstance(count, bool) else "",
        top_name,
        LIST_SEPARATOR.join(text(i) for i in incidents if i) if isinstance(incidents, list) else "",
        str(prior_count) if isinstance(prior_count, int) and not isinstance(prior_count, bool) else "",
        flag,
    )
