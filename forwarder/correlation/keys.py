"""The correlation keys of an event, and which side of a link it is on.

A key is ``"<type>:<value>"`` with the value normalized so that both sides spell it the same:

=========  =====================================================  ==============
type       value                                                  rule
=========  =====================================================  ==============
``upn``    ``user.upn`` and ``sender``, case-folded               same_user
``oid``    ``user.object_id`` (Entra object id), lower case       same_user
``sha256`` ``object.sha256``, lower case                          same_file
``sha1``   ``object.sha1``, lower case                            same_file
``url``    ``object.url`` (else an http(s) ``object.path``),      same_file
           case-folded, without query/fragment or trailing ``/``
``fname``  ``object.name`` of a file, case-folded                 same_file
``msg``    ``object.message_id`` (Internet message id)            same_file
``dev``    ``device.id`` (Defender device id), lower case         same_device
``host``   ``device.name`` up to its first dot, case-folded       same_device
``inc``    each of ``related.incident_ids``                       same_incident
=========  =====================================================  ==============

Recipients are not keys: no rule compares them, and an email's recipient list would multiply
the index rows.

Sides: DLP events (audit records and DLP alerts) are :data:`SIDE_DLP`; alerts of every other
service (Defender for Endpoint, Office 365, Identity, Cloud Apps...) are :data:`SIDE_ALERT`.
Links always join one of each; incidents and correlation events are not indexed.
"""

from __future__ import annotations

from forwarder.schema import KIND_ALERT, KIND_AUDIT, DlpEvent

SIDE_DLP = 0
SIDE_ALERT = 1

#: Key types each rule compares.
RULE_KEYS: dict[str, tuple[str, ...]] = {
    "same_user": ("upn", "oid"),
    "same_file": ("sha256", "sha1", "url", "fname", "msg"),
    "same_device": ("dev", "host"),
    "same_incident": ("inc",),
}

_DLP_SERVICES = ("datalossprevention", "microsoftdatalossprevention")


def service_source(event: DlpEvent) -> str:
    """The alert's Graph ``serviceSource`` (from ``raw``), ``""`` for audit records."""
    raw = event.raw
    if event.kind != KIND_ALERT or not isinstance(raw, dict):
        return ""
    value = raw.get("serviceSource")
    return value if isinstance(value, str) else ""


def side_of(event: DlpEvent) -> int | None:
    """:data:`SIDE_DLP`, :data:`SIDE_ALERT`, or ``None`` for events that are not indexed."""
    if event.kind == KIND_AUDIT:
        return SIDE_DLP
    if event.kind != KIND_ALERT:
        return None
    if event.operation == "DlpAlert":
        return SIDE_DLP
    raw = event.raw
    if isinstance(raw, dict):
        for name in ("serviceSource", "detectionSource"):
            value = raw.get(name)
            if isinstance(value, str) and value.lower() in _DLP_SERVICES:
                return SIDE_DLP
    return SIDE_ALERT


def _url(text: str) -> str:
    u = text.strip().casefold()
    for sep in ("?", "#"):
        u = u.split(sep, 1)[0]
    return u.rstrip("/")


def event_keys(event: DlpEvent) -> list[str]:
    """Every correlation key of ``event``, sorted, without duplicates."""
    keys: set[str] = set()
    user = event.user
    if user.upn:
        keys.add("upn:" + user.upn.strip().casefold())
    if event.sender:
        keys.add("upn:" + event.sender.strip().casefold())
    if user.object_id:
        keys.add("oid:" + user.object_id.strip().lower())
    obj = event.object
    if obj.sha256:
        keys.add("sha256:" + obj.sha256.strip().lower())
    if obj.sha1:
        keys.add("sha1:" + obj.sha1.strip().lower())
    url = obj.url or (obj.path if obj.path.startswith(("http://", "https://")) else "")
    if url:
        keys.add("url:" + _url(url))
    if obj.name and obj.type == "file":
        keys.add("fname:" + obj.name.strip().casefold())
    if obj.message_id:
        keys.add("msg:" + obj.message_id.strip().strip("<>").casefold())
    device = event.device
    if device.id:
        keys.add("dev:" + device.id.strip().lower())
    if device.name:
        host = device.name.strip().split(".", 1)[0].casefold()
        if host:
            keys.add("host:" + host)
    for incident in event.related.incident_ids:
        if incident:
            keys.add("inc:" + incident.strip())
    keys.discard("upn:")
    return sorted(keys)


def key_type(key: str) -> str:
    return key.split(":", 1)[0]
