"""Spooled payload -> encoded ``PurviewDLP_CL`` row, in one msgspec decode and one encode.

:func:`encode_row` gives the JSON of exactly the row :func:`sinks.sentinel.columns.to_row` builds
(tests hold them equal), without building the event as Python dicts first:

* the payload is decoded into typed structs (:class:`_Event`) whose scalar fields line up with
  the columns of :class:`_Row`, so most of the row is a tuple slice, not a loop over columns;
* the nested detail columns passed through as they are (``Policies``, ``SensitiveTypes``,
  ``Enrichment``, ``RawRecord``) stay raw JSON bytes, spliced into the row; only the few fields
  the derived columns need (ids, names, actions, counts) are decoded from them, once per
  distinct value (events of a tenant match the same few policies);
* empty values are left out by ``omit_defaults`` (defaults are ``""``, ``[]`` and ``None``, so
  ``false`` and ``0`` are kept, as :func:`to_row` keeps them).

A payload of another shape (a ``null`` where the schema has a string, a list that is not a list
of objects...) does not fit the structs: :func:`encode_row` returns None and the caller takes
the reference path (``orjson.loads`` + ``to_row``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from msgspec.structs import astuple

from forwarder.schema import SEVERITIES

_NONE: Any = msgspec.Raw()  # the default of raw columns: omitted (omit_defaults compares by identity)
_EMPTY_RAW = frozenset({b"{}", b"[]", b"null", b'""'})
_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}


class _Override(msgspec.Struct, gc=False, frozen=True):
    justification: str = ""
    false_positive: bool | None = None
    reason: str = ""
    rule_ids: list[str] = []


class _User(msgspec.Struct, gc=False, frozen=True):
    upn: str = ""
    object_id: str = ""
    display_name: str = ""


class _Object(msgspec.Struct, gc=False, frozen=True):
    type: str = ""
    name: str = ""
    path: str = ""
    url: str = ""
    size: int | None = None
    sha1: str = ""
    sha256: str = ""
    site: str = ""
    message_id: str = ""
    subject: str = ""


class _Device(msgspec.Struct, gc=False, frozen=True):
    name: str = ""
    id: str = ""
    platform: str = ""
    application: str = ""
    target: str = ""


class _Links(msgspec.Struct, gc=False, frozen=True):
    alert: str = ""
    incident: str = ""
    purview: str = ""


class _Related(msgspec.Struct, gc=False, frozen=True):
    alert_ids: list[str] = []
    incident_ids: list[str] = []


class _Label(msgspec.Struct, gc=False):
    id: str = ""
    name: str = ""


class _Rule(msgspec.Struct, gc=False):
    id: str = ""
    name: str = ""
    actions: list[str] = []
    overridden_actions: list[str] = []


class _Policy(msgspec.Struct, gc=False):
    id: str = ""
    name: str = ""
    rules: list[_Rule] = []


class _SensitiveType(msgspec.Struct, gc=False):
    id: str = ""
    name: str = ""
    count: int | None = None


#: Scalar schema fields, in the order of the first columns of :class:`_Row`.
_SCALARS = 21


class _Event(msgspec.Struct, gc=False):
    """A spooled event as the row needs it: 21 scalars (the first columns of :class:`_Row`, in
    order), then the nested parts."""

    id: str = ""
    idempotency_key: str = ""
    kind: str = ""
    operation: str = ""
    event_time: str = ""
    updated_time: str = ""
    ingest_time: str = ""
    tenant_id: str = ""
    source: str = ""
    source_type: str = ""
    record_type: int | None = None
    workload: str = ""
    severity: str = ""
    status: str = ""
    classification: str = ""
    determination: str = ""
    title: str = ""
    description: str = ""
    sender: str = ""
    client_ip: str = ""
    schema_version: str = ""
    recipients: list[str] = []
    override: _Override = _Override()
    user: _User = _User()
    object: _Object = _Object()
    device: _Device = _Device()
    links: _Links = _Links()
    related: _Related = _Related()
    policies: msgspec.Raw = _NONE
    sensitive_types: msgspec.Raw = _NONE
    labels: list[_Label] = []
    enrichment: msgspec.Raw = _NONE
    raw: msgspec.Raw = _NONE


class _Row(msgspec.Struct, omit_defaults=True, gc=False):
    """The columns of ``PurviewDLP_CL`` that :func:`to_row` fills (``TrimmedFields`` is only
    set by the size rule, on the reference path)."""

    EventId: str = ""
    IdempotencyKey: str = ""
    Kind: str = ""
    Operation: str = ""
    EventTime: str = ""
    UpdatedTime: str = ""
    IngestTime: str = ""
    SourceTenantId: str = ""
    SourceName: str = ""
    SourceType: str = ""
    RecordType: int | None = None
    Workload: str = ""
    Severity: str = ""
    Status: str = ""
    Classification: str = ""
    Determination: str = ""
    AlertTitle: str = ""
    Description: str = ""
    Sender: str = ""
    ClientIp: str = ""
    SchemaVersion: str = ""
    # override
    OverrideJustification: str = ""
    OverrideFalsePositive: bool | None = None
    OverrideReason: str = ""
    OverrideRuleIds: list[str] = []
    # user
    UserUpn: str = ""
    UserObjectId: str = ""
    UserDisplayName: str = ""
    # object
    ObjectType: str = ""
    ObjectName: str = ""
    ObjectPath: str = ""
    ObjectUrl: str = ""
    ObjectSize: int | None = None
    ObjectSha1: str = ""
    ObjectSha256: str = ""
    ObjectSite: str = ""
    MessageId: str = ""
    Subject: str = ""
    # device
    DeviceName: str = ""
    DeviceId: str = ""
    DevicePlatform: str = ""
    DeviceApplication: str = ""
    DeviceTarget: str = ""
    # links
    AlertLink: str = ""
    IncidentLink: str = ""
    PurviewLink: str = ""
    # related
    RelatedAlertIds: list[str] = []
    RelatedIncidentIds: list[str] = []
    # derived
    TimeGenerated: str = ""
    SeverityRank: int | None = None
    Recipients: list[str] = []
    Policies: msgspec.Raw = _NONE
    PolicyIds: list[str] = []
    PolicyNames: list[str] = []
    RuleIds: list[str] = []
    RuleNames: list[str] = []
    Actions: list[str] = []
    OverriddenActions: list[str] = []
    SensitiveTypes: msgspec.Raw = _NONE
    SensitiveTypeIds: list[str] = []
    SensitiveTypeNames: list[str] = []
    SensitiveMatchCount: int | None = None
    LabelIds: list[str] = []
    LabelNames: list[str] = []
    Enrichment: msgspec.Raw = _NONE
    RawRecord: msgspec.Raw = _NONE


_DECODE_EVENT = msgspec.json.Decoder(_Event)
_DECODE_POLICIES = msgspec.json.Decoder(list[_Policy])
_DECODE_SITS = msgspec.json.Decoder(list[_SensitiveType])
_ENCODER = msgspec.json.Encoder()
_NO_POLICIES: tuple[Any, ...] = (_NONE, [], [], [], [], [], [])
_NO_SITS: tuple[Any, ...] = (_NONE, [], [], None)


_RAW_EMPTY = tuple(msgspec.Raw(b) for b in _EMPTY_RAW)


def _kept(raw: msgspec.Raw) -> Any:
    """A pass-through raw column, or the omitted default when it is empty ({} [] null "")."""
    if raw is _NONE or raw in _RAW_EMPTY:  # Raw compares its bytes, without a copy
        return _NONE
    if len(raw) < 16:  # "{ }", "[ ]" and the like
        value = msgspec.json.decode(raw)
        if not value and value != 0:  # to_row keeps false and 0
            return _NONE
    return raw


#: Derived columns by the raw JSON they come from: events of a tenant match the same few
#: policies and rules, so the same ``policies`` (and often ``sensitive_types``) bytes recur.
#: The tuples are only ever encoded, never changed; each cache is emptied when it is full, and
#: only values up to ``_CACHED_BYTES`` are kept (bounded memory: at most ~1,024 x 3 x 2 KB each).
_CACHE_SIZE = 1024
_CACHED_BYTES = 2048
_POLICY_CACHE: dict[bytes, tuple[Any, ...]] = {}
_SIT_CACHE: dict[bytes, tuple[Any, ...]] = {}


def _cached_columns(
    raw: msgspec.Raw,
    cache: dict[bytes, tuple[Any, ...]],
    decode: Callable[[bytes], tuple[Any, ...]],
    absent: tuple[Any, ...],
) -> tuple[Any, ...]:
    """``decode(raw)`` through ``cache``, keyed by the raw bytes (a copy: the raw may be a view
    into the spool's buffer); ``absent`` when the field is missing from the payload. Values over
    ``_CACHED_BYTES`` are decoded every time; a full cache is emptied before the next insert."""
    if raw is _NONE:
        return absent
    key = bytes(raw)
    columns = cache.get(key)
    if columns is None:
        columns = decode(key)
        if len(key) <= _CACHED_BYTES:
            if len(cache) >= _CACHE_SIZE:
                cache.clear()
            cache[key] = columns
    return columns


def _decode_policy_columns(data: bytes) -> tuple[Any, ...]:
    """Policies, PolicyIds, PolicyNames, RuleIds, RuleNames, Actions, OverriddenActions of
    ``data`` (one pass: an event has a few policies and rules, so
    comprehensions would cost more than the loop)."""
    policies = _DECODE_POLICIES.decode(data)
    if not policies:
        return _NO_POLICIES
    ids: list[str] = []
    names: list[str] = []
    rule_ids: list[str] = []
    rule_names: list[str] = []
    actions: dict[str, None] = {}
    overridden: dict[str, None] = {}
    for policy in policies:
        if policy.id:
            ids.append(policy.id)
        if policy.name:
            names.append(policy.name)
        for rule in policy.rules:
            if rule.id:
                rule_ids.append(rule.id)
            if rule.name:
                rule_names.append(rule.name)
            for action in rule.actions:
                actions[action] = None
            for action in rule.overridden_actions:
                overridden[action] = None
    return msgspec.Raw(data), ids, names, rule_ids, rule_names, list(actions), list(overridden)


def _decode_sensitive_columns(data: bytes) -> tuple[Any, ...]:
    """SensitiveTypes, SensitiveTypeIds, SensitiveTypeNames, SensitiveMatchCount of ``data``."""
    sits = _DECODE_SITS.decode(data)
    if not sits:
        return _NO_SITS
    return (
        msgspec.Raw(data),
        [t.id for t in sits if t.id],
        [t.name for t in sits if t.name],
        sum(t.count for t in sits if t.count is not None),
    )


def encode_row(payload: bytes | memoryview) -> bytes | None:
    """The JSON of the row :func:`~sinks.sentinel.columns.to_row` makes of ``payload``, or None
    when the payload does not have the schema's shape (the caller then takes that path)."""
    try:
        ev = _DECODE_EVENT.decode(payload)
        policies = _cached_columns(ev.policies, _POLICY_CACHE, _decode_policy_columns, _NO_POLICIES)
        sits = _cached_columns(ev.sensitive_types, _SIT_CACHE, _decode_sensitive_columns, _NO_SITS)
    except msgspec.MsgspecError:
        return None
    severity = ev.severity
    labels = ev.labels
    columns: tuple[Any, ...] = (
        *astuple(ev)[:_SCALARS],
        *astuple(ev.override),
        *astuple(ev.user),
        *astuple(ev.object),
        *astuple(ev.device),
        *astuple(ev.links),
        *astuple(ev.related),
        ev.event_time or ev.updated_time or ev.ingest_time,
        _RANK.get(severity.lower(), 0),
        ev.recipients,
        *policies,
        *sits,
        [x.id for x in labels if x.id],
        [x.name for x in labels if x.name],
        _kept(ev.enrichment),
        _kept(ev.raw),
    )
    return _ENCODER.encode(_Row(*columns))
