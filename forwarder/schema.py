"""The common DLP event schema, version ``SCHEMA_VERSION``.

Every record a source reads (a Management Activity DLP audit record, a Graph DLP alert,
an incident, an endpoint DLP record) is normalized into one :class:`DlpEvent`. Sinks format
these events; they never see source-specific shapes except in :attr:`DlpEvent.raw`.

Contract:

* Every field has an empty default (``""``, ``None``, ``[]``, an empty nested object), so a
  missing or unknown source field becomes an empty value, never a crash.
* Times are strings in ISO 8601 UTC with a ``Z`` suffix (see :func:`iso_utc`).
* :func:`to_json` / :func:`from_json` round-trip every event exactly (orjson).
* Adding a field is a minor version bump; renaming or removing one is a major bump.

The field table and the mappings to Splunk CIM, CEF, LEEF, Sentinel and OCSF live in
``docs/schema.md``; tests check that table against this module.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

SCHEMA_VERSION = "1.0"

#: ``DlpEvent.kind`` values.
KIND_AUDIT = "audit"  # a Management Activity / audit-log DLP record (rule match, undo, info, endpoint)
KIND_ALERT = "alert"  # a Graph alerts_v2 alert (DLP, or another Defender service when asked)
KIND_INCIDENT = "incident"  # a Graph incident
KIND_CORRELATION = "correlation"  # a link found between events after both were delivered
KINDS = (KIND_AUDIT, KIND_ALERT, KIND_INCIDENT, KIND_CORRELATION)

#: ``DlpEvent.severity`` values, lowest first (Graph's alertSeverity, lower-cased).
SEVERITIES = ("unknown", "informational", "low", "medium", "high")


# No slots on the schema dataclasses: orjson serializes ``__dict__`` dataclasses about 4x
# faster (1.6 us against 7.1 us for a 3 KB event), and serialization is on the hot path.


@dataclass
class Identity:
    """A user or mailbox: UPN (as the source spelled it), Entra object id, display name."""

    upn: str = ""
    object_id: str = ""
    display_name: str = ""


@dataclass
class RuleMatch:
    """One DLP rule that matched: the actions it took and the ones a user or admin overrode."""

    id: str = ""
    name: str = ""
    severity: str = ""
    mode: str = ""
    actions: list[str] = field(default_factory=list)
    overridden_actions: list[str] = field(default_factory=list)


@dataclass
class PolicyMatch:
    """One DLP policy that matched, with its rules."""

    id: str = ""
    name: str = ""
    rules: list[RuleMatch] = field(default_factory=list)


@dataclass
class Override:
    """Why an action was overridden or undone: justification, false-positive flag, reason."""

    justification: str = ""
    false_positive: bool = False
    reason: str = ""
    rule_ids: list[str] = field(default_factory=list)


@dataclass
class DetectedValue:
    """A matched sensitive value. The sensitive-value policy drops, masks or hashes ``value``
    before any sink sees the event; by default raw values are never forwarded."""

    name: str = ""
    value: str = ""


@dataclass
class SensitiveType:
    """A sensitive information type found in the object (id resolved to a name where known)."""

    id: str = ""
    name: str = ""
    count: int = 0
    unique_count: int = 0
    confidence: int = 0
    location: str = ""
    detected_values: list[DetectedValue] = field(default_factory=list)


@dataclass
class Label:
    """A sensitivity label (id, and name where known)."""

    id: str = ""
    name: str = ""


@dataclass
class ObjectRef:
    """What the DLP event is about: a file, an email or a chat message."""

    type: str = ""  # "file" | "email" | "message" | ""
    name: str = ""
    path: str = ""
    url: str = ""
    size: int | None = None
    sha1: str = ""
    sha256: str = ""
    site: str = ""
    message_id: str = ""
    subject: str = ""


@dataclass
class Device:
    """The device of an endpoint DLP event, or the device evidence of an alert."""

    name: str = ""
    id: str = ""  # Defender for Endpoint device id
    platform: str = ""
    application: str = ""
    target: str = ""  # destination: removable media, printer, domain, share, path


@dataclass
class Links:
    """Links back to the portals, for an analyst to pivot in one click."""

    alert: str = ""
    incident: str = ""
    purview: str = ""


@dataclass
class Related:
    """Ids of related alerts and incidents known from the source record itself."""

    alert_ids: list[str] = field(default_factory=list)
    incident_ids: list[str] = field(default_factory=list)


@dataclass
class DlpEvent:
    """One normalized DLP event; see the module docstring for the contract."""

    id: str = ""  # stable across updates of the same alert/incident/record
    idempotency_key: str = ""  # id + last update time; what deduplication keys on
    kind: str = ""  # one of KINDS
    operation: str = ""  # DlpRuleMatch, DlpRuleUndo, DlpInfo, FileCopiedToRemovableMedia, ...
    event_time: str = ""  # when it happened (record CreationTime, alert createdDateTime)
    updated_time: str = ""  # last update (alerts and incidents); event_time otherwise
    ingest_time: str = ""  # when dlpfwd normalized it
    tenant_id: str = ""
    source: str = ""  # the source instance name from the configuration
    source_type: str = ""  # the source plugin: management_activity, graph_security, audit_search
    record_type: int | None = None  # Management Activity RecordType, when there is one
    workload: str = ""  # Exchange, SharePoint, OneDrive, MicrosoftTeams, Endpoint, ...
    severity: str = "unknown"  # one of SEVERITIES
    status: str = ""
    classification: str = ""
    determination: str = ""
    title: str = ""
    description: str = ""
    policies: list[PolicyMatch] = field(default_factory=list)
    override: Override = field(default_factory=Override)
    user: Identity = field(default_factory=Identity)
    sender: str = ""
    recipients: list[str] = field(default_factory=list)
    object: ObjectRef = field(default_factory=ObjectRef)
    sensitive_types: list[SensitiveType] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    device: Device = field(default_factory=Device)
    client_ip: str = ""
    links: Links = field(default_factory=Links)
    related: Related = field(default_factory=Related)
    enrichment: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] | None = None  # the original record; each sink decides whether to carry it
    schema_version: str = SCHEMA_VERSION


# --------------------------------------------------------------------------- helpers


def iso_utc(value: dt.datetime | str | None) -> str:
    """Return ``value`` as ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z`` in UTC, or ``""`` if it cannot be read.

    Accepts datetimes (naive ones are taken as UTC, as Management Activity records are) and
    ISO strings with or without zone, with up to 7 fractional digits (Graph sends 7).
    """
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        if len(value) == 19 or (len(value) == 20 and value[19] == "Z"):
            fast = _iso_utc_plain(value[:19])  # the common form: whole seconds, naive or Z
            if fast:
                return fast
        parsed = parse_time(value)
        if parsed is None:
            return ""
        value = parsed
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    value = value.astimezone(dt.UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}"
    return text + "Z"


def _iso_utc_plain(text: str) -> str:
    """``text + "Z"`` when ``text`` is exactly ``YYYY-MM-DDTHH:MM:SS`` (year 1000 or later) and a
    valid time, which is what the general path of :func:`iso_utc` returns for it; else ``""``."""
    if text[10:11] != "T" or text[:1] in ("0", "-", "+"):
        return ""
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return ""
    return text + "Z" if parsed.isoformat() == text else ""


def parse_time(text: str) -> dt.datetime | None:
    """Parse an ISO 8601 time as sources send it; naive means UTC. ``None`` if unreadable."""
    s = text.strip()
    if not s:
        return None
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    # Python accepts at most 6 fractional digits; Graph sends up to 7.
    if "." in s:
        head, _, tail = s.partition(".")
        digits = ""
        rest = ""
        for i, ch in enumerate(tail):
            if not ch.isdigit():
                rest = tail[i:]
                break
            digits += ch
        s = f"{head}.{digits[:6].ljust(6, '0')}{rest}" if digits else head + rest
    try:
        parsed = dt.datetime.fromisoformat(s)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def epoch_seconds(text: str) -> float | None:
    """Epoch seconds (with sub-second fraction) of an ISO time string, ``None`` if unreadable."""
    parsed = parse_time(text) if text else None
    return parsed.timestamp() if parsed else None


def severity_rank(severity: str) -> int:
    """0 for unknown ... 4 for high; unknown strings rank 0."""
    try:
        return SEVERITIES.index(severity.lower())
    except ValueError:
        return 0


# --------------------------------------------------------------------------- (de)serialization


_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what orjson can write


def to_json(event: DlpEvent) -> bytes:
    """Serialize an event with orjson (compact, UTF-8).

    Free-form content (``raw``, ``enrichment``) that orjson cannot write as is -- integers
    beyond 64 bits, non-string keys -- is written as strings rather than failing."""
    try:
        return orjson.dumps(event)
    except TypeError:
        return orjson.dumps(_json_safe(dataclasses.asdict(event)), option=orjson.OPT_NON_STR_KEYS)


def to_dict(event: DlpEvent) -> dict[str, Any]:
    """The event as plain JSON types (what ``to_json`` writes)."""
    result: dict[str, Any] = orjson.loads(to_json(event))
    return result


def _json_safe(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if _INT_MIN <= value <= _INT_MAX else str(value)
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def from_json(data: bytes | str) -> DlpEvent:
    """Inverse of :func:`to_json`. Unknown keys are ignored, missing ones take their defaults."""
    return from_dict(orjson.loads(data))


def from_dict(data: dict[str, Any]) -> DlpEvent:
    """Build an event from plain JSON types; tolerant of missing, extra and ``null`` keys."""
    return _build(DlpEvent, data)


_HINTS: dict[type, list[tuple[str, Any]]] = {}


def _fields_of(cls: type) -> list[tuple[str, Any]]:
    cached = _HINTS.get(cls)
    if cached is None:
        hints = typing.get_type_hints(cls)
        cached = [(f.name, hints[f.name]) for f in dataclasses.fields(cls)]
        _HINTS[cls] = cached
    return cached


def _build(cls: type, data: Any) -> Any:
    if not isinstance(data, dict):
        return cls()
    kwargs = {}
    for name, convert in _converters_of(cls):
        value = data.get(name)
        if value is not None:
            kwargs[name] = convert(value)
    return cls(**kwargs)


# Converters are compiled once per type hint: from_dict runs for every event a sink decodes.
_CONVERTERS: dict[Any, Callable[[Any], Any]] = {}
_CLASS_CONVERTERS: dict[type, list[tuple[str, Callable[[Any], Any]]]] = {}


def _converters_of(cls: type) -> list[tuple[str, Callable[[Any], Any]]]:
    cached = _CLASS_CONVERTERS.get(cls)
    if cached is None:
        cached = [(name, _converter(hint)) for name, hint in _fields_of(cls)]
        _CLASS_CONVERTERS[cls] = cached
    return cached


def _converter(hint: Any) -> Callable[[Any], Any]:
    convert = _CONVERTERS.get(hint)
    if convert is None:
        convert = _make_converter(hint)
        _CONVERTERS[hint] = convert
    return convert


def _convert(hint: Any, value: Any) -> Any:
    """``value`` (plain JSON types) as the type ``hint`` says, never raising."""
    return _converter(hint)(value)


def _to_str(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _to_int(value: Any) -> int:
    if type(value) is int:
        return value if _INT_MIN <= value <= _INT_MAX else 0
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return 0
    return number if _INT_MIN <= number <= _INT_MAX else 0


def _to_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def _to_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _identity(value: Any) -> Any:
    return value


def _make_converter(hint: Any) -> Callable[[Any], Any]:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        cls = hint
        return lambda value: _build(cls, value)
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        item_convert = _converter(item)
        return lambda value: [item_convert(v) for v in value] if isinstance(value, list) else []
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            return _identity
        if typing.get_origin(args[0]) is dict:
            return lambda value: value if isinstance(value, dict) else None  # e.g. ``raw`` that is not an object
        return _converter(args[0])
    if origin is dict:
        return _to_dict
    return {str: _to_str, int: _to_int, bool: _to_bool}.get(hint, _identity)


def schema_fields(cls: type = DlpEvent, prefix: str = "") -> list[str]:
    """Dotted names of every leaf field (lists of objects as ``name[].field``); used by docs tests."""
    names: list[str] = []
    for name, hint in _fields_of(cls):
        origin = typing.get_origin(hint)
        path = f"{prefix}{name}"
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            names.extend(schema_fields(hint, path + "."))
        elif origin is list and dataclasses.is_dataclass(typing.get_args(hint)[0]):
            names.extend(schema_fields(typing.get_args(hint)[0], path + "[]."))
        else:
            names.append(path)
    return names
