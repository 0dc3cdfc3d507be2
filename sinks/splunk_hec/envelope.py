"""Turn one spooled event into one HEC ``/services/collector/event`` envelope.

Envelope layout (one JSON object per event, newline separated in a request)::

    {"time": 1717171717.123456, "host": ..., "source": ..., "sourcetype": ..., "index": ...,
     "fields": {...indexed fields, optional...},
     "event": {<CIM Data Loss Prevention fields>, "dlpfwd": <the dlpfwd event, schema as-is>}}

* ``time`` is the event's own time (``event_time``, else ``updated_time``, else
  ``ingest_time``) as epoch seconds with the sub-second fraction; absent when none is readable
  (Splunk then uses the receipt time).
* The CIM fields (:data:`CIM_MAPPING`) sit at the top of ``event`` so the add-on's event types
  put the events into the CIM ``DLP`` data model with no search-time work; the full event in
  our schema sits under ``dlpfwd`` (CIM's ``object``/``user`` are strings while ours are
  objects, so they cannot share one level). It includes ``idempotency_key``, which identifies
  re-sent duplicates.
* The ``dlpfwd`` object is the spooled payload spliced in byte for byte: no re-serialization.
"""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import orjson

from forwarder.schema import KIND_ALERT, KIND_AUDIT, KIND_CORRELATION, KIND_INCIDENT, SEVERITIES, epoch_seconds

VENDOR_PRODUCT = "Microsoft Purview DLP"

#: Default sourcetype per event kind; the add-on (packaging/splunk) configures exactly these.
DEFAULT_SOURCETYPES: dict[str, str] = {
    KIND_AUDIT: "dlpfwd:purview:audit",
    KIND_ALERT: "dlpfwd:purview:alert",
    KIND_INCIDENT: "dlpfwd:purview:incident",
    KIND_CORRELATION: "dlpfwd:purview:correlation",
}
FALLBACK_SOURCETYPE = "dlpfwd:purview"

_DLP_TYPES = {
    "exchange": "email",
    "microsoftteams": "im",
    "teams": "im",
    "endpoint": "endpoint",
    "sharepoint": "file",
    "onedrive": "file",
    "onedriveforbusiness": "file",
}

#: CIM ``DLP`` data model field -> the schema fields that feed it (first non-empty wins, unless
#: :data:`CIM_RULES` says otherwise). ``docs/schema.md`` documents exactly this table (checked by
#: ``forwarder.testing.check_mapping_table``); :func:`cim_fields` implements it.
CIM_MAPPING: dict[str, tuple[str, ...]] = {
    "action": ("policies[].rules[].actions", "policies[].rules[].overridden_actions"),
    "app": ("device.application", "workload"),
    "category": ("sensitive_types[].name", "sensitive_types[].id", "classification"),
    "dest": ("recipients", "device.target", "object.site", "object.url"),
    "dlp_type": ("workload", "kind"),
    "dvc": ("device.name", "tenant_id"),
    "object": ("object.name", "object.subject", "title"),
    "object_category": ("object.type", "kind"),
    "object_path": ("object.path", "object.url"),
    "severity": ("severity",),
    "severity_id": ("severity",),
    "signature": ("title", "policies[].name", "operation"),
    "signature_id": ("policies[].rules[].id", "id"),
    "src": ("client_ip", "device.name"),
    "src_user": ("user.upn", "sender"),
    "user": ("recipients", "user.upn"),
}

#: CIM fields with a fixed value.
CIM_CONSTANTS: dict[str, str] = {"vendor_product": VENDOR_PRODUCT}

#: How each CIM field is derived, in words (the third column of the docs table).
CIM_RULES: dict[str, str] = {
    "action": "'blocked' if a rule took a block action that was not overridden; 'allowed' if rules acted "
    "(or a block was overridden); else 'unknown'",
    "app": "the endpoint application for Endpoint events, else the workload",
    "category": "sensitive information type names (multivalue); the classification when there are none",
    "dest": "recipients (multivalue), else the endpoint target, else the site, else the URL",
    "dlp_type": "Exchange: email, MicrosoftTeams: im, Endpoint: endpoint, SharePoint/OneDrive: file; else the kind",
    "dvc": "the device name for endpoint events, else 'purview:' and the tenant id ('purview' without one)",
    "object": "file name, else email subject, else title",
    "object_category": "file, email or message; else the kind (alert, incident)",
    "object_path": "file path, else URL",
    "severity": "as is (unknown, informational, low, medium, high)",
    "severity_id": "rank 0 (unknown) .. 4 (high)",
    "signature": "alert/incident title, else the first policy name, else the operation",
    "signature_id": "first rule id, else the event id",
    "src": "client IP, else device name",
    "src_user": "the acting user's UPN, else the sender",
    "user": "recipients when dlp_type is email or im (CIM: target user), else the acting user's UPN",
    "vendor_product": f"'{VENDOR_PRODUCT}'",
}


_SEVERITY_IDS = {name: i for i, name in enumerate(SEVERITIES)}
_EMPTY: dict[str, Any] = {}


def cim_fields(ev: Mapping[str, Any]) -> dict[str, Any]:
    """The CIM DLP fields of one event given as plain JSON types (schema field names).

    Written for speed (it runs once per event on the hot path): ``or`` chains instead of
    helpers, one pass over the rules."""
    get = ev.get
    obj = get("object") or _EMPTY
    device = get("device") or _EMPTY
    policies = get("policies") or ()
    workload = get("workload") or ""
    kind = get("kind") or ""
    recipients = [r for r in get("recipients") or () if r]
    dlp_type = _DLP_TYPES.get(workload.lower().replace(" ", ""), kind or "unknown")

    blocked = acted = False
    first_rule_id = ""
    for policy in policies:
        for rule in policy.get("rules") or ():
            if not first_rule_id:
                first_rule_id = rule.get("id") or ""
            actions = rule.get("actions")
            if not actions:
                continue
            acted = True
            over = rule.get("overridden_actions")
            overridden = {a.lower() for a in over} if over else ()
            for action in actions:
                low = action.lower()
                if "block" in low and low not in overridden:
                    blocked = True
    categories = [s.get("name") or s.get("id") for s in get("sensitive_types") or ()]
    categories = [c for c in categories if c]
    severity = get("severity") or "unknown"
    upn = (get("user") or _EMPTY).get("upn") or ""
    endpoint = dlp_type == "endpoint"
    return {
        "action": "blocked" if blocked else "allowed" if acted else "unknown",
        "app": (endpoint and device.get("application")) or workload or "unknown",
        "category": categories or get("classification") or "unknown",
        "dest": recipients or device.get("target") or obj.get("site") or obj.get("url") or "unknown",
        "dlp_type": dlp_type,
        "dvc": (endpoint and device.get("name"))
        or (f"purview:{tenant}" if (tenant := get("tenant_id")) else "purview"),
        "object": obj.get("name") or obj.get("subject") or get("title") or "unknown",
        "object_category": obj.get("type") or kind or "unknown",
        "object_path": obj.get("path") or obj.get("url") or "unknown",
        "severity": severity,
        "severity_id": _SEVERITY_IDS.get(severity.lower(), 0) if isinstance(severity, str) else 0,
        "signature": get("title") or (policies and policies[0].get("name")) or get("operation") or "DLP",
        "signature_id": first_rule_id or get("id") or "unknown",
        "src": get("client_ip") or device.get("name") or "unknown",
        "src_user": upn or get("sender") or "unknown",
        "user": recipients if recipients and dlp_type in ("email", "im") else upn or "unknown",
        "vendor_product": VENDOR_PRODUCT,
    }


# --------------------------------------------------------------------------- fast path
# The spooled payload is decoded once, by msgspec, into these structs: only the fields the CIM
# fields and the envelope metadata read are built (the rest is validated and skipped), about
# half the CPU of a full ``orjson.loads``. A payload of an unexpected shape (a null where the
# schema has a string...) fails this typed decode and takes the dict path (:func:`cim_fields`).


class _Rule(msgspec.Struct, gc=False):
    id: str = ""
    actions: list[str] = []
    overridden_actions: list[str] = []


class _Policy(msgspec.Struct, gc=False):
    name: str = ""
    rules: list[_Rule] = []


class _Object(msgspec.Struct, gc=False, frozen=True):
    type: str = ""
    name: str = ""
    path: str = ""
    url: str = ""
    site: str = ""
    subject: str = ""


class _Device(msgspec.Struct, gc=False, frozen=True):
    name: str = ""
    application: str = ""
    target: str = ""


class _SensitiveType(msgspec.Struct, gc=False):
    id: str = ""
    name: str = ""


class _User(msgspec.Struct, gc=False, frozen=True):
    upn: str = ""


class _Event(msgspec.Struct, gc=False):
    """The fields of a spooled event that the envelope reads (schema names and types)."""

    id: str = ""
    kind: str = ""
    operation: str = ""
    event_time: str = ""
    updated_time: str = ""
    ingest_time: str = ""
    tenant_id: str = ""
    source: str = ""
    workload: str = ""
    severity: str = "unknown"
    classification: str = ""
    title: str = ""
    policies: list[_Policy] = []
    user: _User = _User()
    sender: str = ""
    recipients: list[str] = []
    object: _Object = _Object()
    sensitive_types: list[_SensitiveType] = []
    device: _Device = _Device()
    client_ip: str = ""


_DECODE_EVENT = msgspec.json.Decoder(_Event)


def cim_fields_of(ev: _Event) -> dict[str, Any]:
    """:func:`cim_fields` for an event decoded into :class:`_Event` (tests hold the two equal)."""
    obj = ev.object
    device = ev.device
    policies = ev.policies
    workload = ev.workload
    kind = ev.kind
    recipients = [r for r in ev.recipients if r]
    dlp_type = _DLP_TYPES.get(workload.lower().replace(" ", ""), kind or "unknown")

    blocked = acted = False
    first_rule_id = ""
    for policy in policies:
        for rule in policy.rules:
            if not first_rule_id:
                first_rule_id = rule.id
            actions = rule.actions
            if not actions:
                continue
            acted = True
            over = rule.overridden_actions
            overridden = {a.lower() for a in over} if over else ()
            for action in actions:
                low = action.lower()
                if "block" in low and low not in overridden:
                    blocked = True
    categories = [c for s in ev.sensitive_types if (c := s.name or s.id)]
    severity = ev.severity or "unknown"
    upn = ev.user.upn
    endpoint = dlp_type == "endpoint"
    tenant = ev.tenant_id
    return {
        "action": "blocked" if blocked else "allowed" if acted else "unknown",
        "app": (endpoint and device.application) or workload or "unknown",
        "category": categories or ev.classification or "unknown",
        "dest": recipients or device.target or obj.site or obj.url or "unknown",
        "dlp_type": dlp_type,
        "dvc": (endpoint and device.name) or (f"purview:{tenant}" if tenant else "purview"),
        "object": obj.name or obj.subject or ev.title or "unknown",
        "object_category": obj.type or kind or "unknown",
        "object_path": obj.path or obj.url or "unknown",
        "severity": severity,
        "severity_id": _SEVERITY_IDS.get(severity.lower(), 0),
        "signature": ev.title or (policies and policies[0].name) or ev.operation or "DLP",
        "signature_id": first_rule_id or ev.id or "unknown",
        "src": ev.client_ip or device.name or "unknown",
        "src_user": upn or ev.sender or "unknown",
        "user": recipients if recipients and dlp_type in ("email", "im") else upn or "unknown",
        "vendor_product": VENDOR_PRODUCT,
    }


def _epoch(text: str) -> float | None:
    """Epoch seconds of an ISO time, to the microsecond; fast path for the schema's own ``...Z`` form.

    ``datetime.timestamp()`` divides whole microseconds by 10**6 with correct rounding, so the
    float is already the one nearest to the 6-digit decimal (``round(x, 6)`` would return it
    unchanged, at about 2 us a call); only the fallback parser's result is rounded."""
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        when = epoch_seconds(text)
        return None if when is None else round(when, 6)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


_WHITESPACE = frozenset(b" \t\r\n")


def _stripped(payload: bytes | memoryview) -> bytes | memoryview:
    """``payload`` without surrounding whitespace; a view is copied only when it has some."""
    if isinstance(payload, memoryview):
        if payload and payload[0] not in _WHITESPACE and payload[-1] not in _WHITESPACE:
            return payload
        return bytes(payload).strip()
    return payload.strip()


def _lookup(ev: Mapping[str, Any], dotted: str) -> Any:
    value: Any = ev
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def indexed_fields(ev: Mapping[str, Any], names: list[str]) -> dict[str, Any]:
    """HEC ``fields`` (indexed fields) for the dotted schema paths in ``names``: flat values only
    (strings, numbers, lists of those); empty and nested values are left out (code 15 otherwise)."""
    result: dict[str, Any] = {}
    for name in names:
        value = _lookup(ev, name)
        if isinstance(value, bool):
            value = str(value).lower()
        if isinstance(value, str | int | float) and value != "":
            result[name] = value
        elif isinstance(value, list):
            flat = [v for v in value if isinstance(v, str | int | float) and not isinstance(v, bool)]
            if flat:
                result[name] = flat
    return result


class EnvelopeBuilder:
    """Builds HEC envelopes for one sink instance from its metadata settings.

    ``index`` is the default index ("" = the token's default); ``source`` "" means
    ``dlpfwd:<source instance>``; ``host`` "" means this machine's name; ``indexes``,
    ``sourcetypes``, ``sources`` and ``hosts`` map an event kind to its own value; ``fields``
    lists schema paths sent as indexed fields.
    """

    def __init__(
        self,
        *,
        index: str = "",
        indexes: Mapping[str, str] | None = None,
        sourcetypes: Mapping[str, str] | None = None,
        source: str = "",
        sources: Mapping[str, str] | None = None,
        host: str = "",
        hosts: Mapping[str, str] | None = None,
        fields: list[str] | None = None,
    ) -> None:
        self.index = index
        self.indexes = dict(indexes or {})
        self.sourcetypes = {**DEFAULT_SOURCETYPES, **(sourcetypes or {})}
        self.source = source
        self.host = host or socket.gethostname()
        self.sources = dict(sources or {})
        self.hosts = dict(hosts or {})
        self.fields = list(fields or [])
        self.cim: Callable[[Mapping[str, Any]], dict[str, Any]] = cim_fields
        self._heads: dict[tuple[Any, Any], bytes] = {}

    def event_time(self, ev: Mapping[str, Any]) -> float | None:
        """Epoch seconds of ``event_time``, else ``updated_time``, else ``ingest_time``."""
        for key in ("event_time", "updated_time", "ingest_time"):
            text = ev.get(key)
            if text:
                when = _epoch(text)
                if when is not None:
                    return when
        return None

    def metadata(self, ev: Mapping[str, Any]) -> dict[str, Any]:
        """``time``/``host``/``source``/``sourcetype``/``index``/``fields`` of one event's envelope."""
        meta: dict[str, Any] = {}
        when = self.event_time(ev)
        if when is not None:
            meta["time"] = when
        meta.update(self._fixed(ev))
        if self.fields:
            fields = indexed_fields(ev, self.fields)
            if fields:
                meta["fields"] = fields
        return meta

    def _fixed(self, ev: Mapping[str, Any]) -> dict[str, Any]:
        kind = str(ev.get("kind") or "")
        meta: dict[str, Any] = {}
        meta["host"] = self.hosts.get(kind) or self.host
        meta["source"] = self.sources.get(kind) or self.source or f"dlpfwd:{ev.get('source') or 'unknown'}"
        meta["sourcetype"] = self.sourcetypes.get(kind, FALLBACK_SOURCETYPE)
        index = self.indexes.get(kind) or self.index
        if index:
            meta["index"] = index
        return meta

    def indexes_in_use(self) -> list[str]:
        """Every index this builder may name ("" when some events go to the token's default)."""
        names = {self.index} | {self.indexes.get(k, "") or self.index for k in DEFAULT_SOURCETYPES}
        return sorted(names)

    def event_body(self, ev: Mapping[str, Any], payload: bytes) -> bytes:
        """The ``event`` object alone: the CIM fields, then ``"dlpfwd": <payload>``."""
        cim = orjson.dumps(self.cim(ev))
        return b"".join((cim[:-1], b',"dlpfwd":', payload.strip(), b"}"))

    def envelope(self, payload: bytes | memoryview) -> bytes:
        """The envelope of one spooled payload (bytes, or a view into the spool's buffer, spliced
        in without a copy of its own), decoding it once. Raises on a payload that is not a JSON
        object."""
        if not self.fields and self.cim is cim_fields:
            try:
                ev = _DECODE_EVENT.decode(payload)
            except msgspec.MsgspecError:
                pass  # unexpected shape or not JSON: the dict path decides
            else:
                when = None
                for text in (ev.event_time, ev.updated_time, ev.ingest_time):
                    if text:
                        when = _epoch(text)
                        if when is not None:
                            break
                return self._join(ev.kind, ev.source, when, cim_fields_of(ev), payload)
        return self.build(orjson.loads(payload), bytes(payload))

    def build(self, ev: Mapping[str, Any], payload: bytes) -> bytes:
        """The envelope of one event: ``ev`` is the decoded ``payload`` (the spooled JSON object)."""
        if self.fields:
            head = orjson.dumps(self.metadata(ev))[:-1]
            return b"".join((head, b',"event":', self.event_body(ev, payload), b"}"))
        return self._join(ev.get("kind"), ev.get("source"), self.event_time(ev), self.cim(ev), payload)

    def _join(
        self, kind: Any, source: Any, when: float | None, cim: dict[str, Any], payload: bytes | memoryview
    ) -> bytes:
        # host/source/sourcetype/index depend only on (kind, source): serialize them once
        key = (kind, source)
        fixed = self._heads.get(key)
        if fixed is None:
            fixed = self._heads[key] = orjson.dumps(self._fixed({"kind": kind, "source": source}))[1:-1]
        body = orjson.dumps(cim)
        # one join (no intermediate copies of the payload): head, CIM fields, "dlpfwd": payload
        parts: tuple[bytes, ...]
        if when is not None:
            parts = (b'{"time":', orjson.dumps(when), b",", fixed, b',"event":', body[:-1], b',"dlpfwd":')
        else:
            parts = (b"{", fixed, b',"event":', body[:-1], b',"dlpfwd":')
        return b"".join((*parts, _stripped(payload), b"}}"))
