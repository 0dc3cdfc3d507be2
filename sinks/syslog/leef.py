"""IBM QRadar LEEF 2.0 for DLP events.

Layout: ``LEEF:2.0|Microsoft|Purview DLP|<schema version>|<EventID>|<delimiter>|key=value<delimiter>...``

LEEF has no escape mechanism; IBM's guidance is to keep the delimiter, tabs and pipes out of
keys and values. So, exactly:

* in attribute values, the delimiter character is replaced by U+FFFD (the Unicode
  replacement character), CR, LF, TAB, the other C0 controls and DEL by a space; ``=`` and
  ``|`` stay (QRadar splits a pair at its first ``=``, and ``|`` only matters in the header);
* in header fields, ``|`` is replaced by U+FFFD and control characters by a space.

The delimiter is configurable (``^`` by default, as in IBM's examples); it is written in the
header as itself when printable, else as ``0xHH``. ``devTime`` is the event time in the
``devTimeFormat`` ``yyyy-MM-dd'T'HH:mm:ss.SSSZ`` (IBM's own example form, UTC ``+0000``).
"""

from __future__ import annotations

import re
from typing import Any

from forwarder.schema import SCHEMA_VERSION, parse_time
from sinks.syslog import fields as f
from sinks.syslog.cef import FormatError
from sinks.syslog.header import canonical_millis
from sinks.syslog.truncate import cut_chars, shrink_to_fit

#: Our severity -> LEEF ``sev`` 1-10.
LEEF_SEVERITY: dict[str, int] = {"unknown": 5, "informational": 1, "low": 3, "medium": 6, "high": 8}

VENDOR = "Microsoft"
PRODUCT = "Purview DLP"
DEV_TIME_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSSZ"
SUBSTITUTE = "\ufffd"
#: Longest value we write for one key (characters) before the message-size cut.
MAX_VALUE_CHARS = 4000

#: LEEF target (header field or attribute key) -> DlpEvent field (docs and tests).
LEEF_MAPPING: dict[str, str | tuple[str, ...]] = {
    "Product Version": "schema_version",
    "EventID": ("operation", "kind"),
    "devTime": "event_time",
    "sev": "severity",
    "cat": "kind",
    "usrName": ("user.upn", "sender"),
    "src": "client_ip",
    "externalId": "id",
    "eventId": "id",
    "workload": "workload",
    "title": "title",
    "msg": "description",
    "status": "status",
    "userId": "user.object_id",
    "sender": "sender",
    "recipients": "recipients",
    "fileName": "object.name",
    "filePath": "object.path",
    "fileSize": "object.size",
    "fileHash": ("object.sha256", "object.sha1"),
    "url": "object.url",
    "subject": "object.subject",
    "policies": "policies[].name",
    "rules": "policies[].rules[].name",
    "actions": "policies[].rules[].actions",
    "sensitiveTypes": ("sensitive_types[].name", "sensitive_types[].id", "sensitive_types[].count"),
    "labels": ("labels[].name", "labels[].id"),
    "deviceName": "device.name",
    "deviceId": "device.id",
    "application": "device.application",
    "destination": "device.target",
    "justification": "override.justification",
    "tenantId": "tenant_id",
    "recordType": "record_type",
    "link": ("links.alert", "links.incident", "links.purview"),
    "updatedTime": "updated_time",
    # correlation enrichment (docs/correlation.md)
    "relatedAlertIds": "enrichment.correlation.related_alerts[].id",
    "relatedAlertCount": "enrichment.correlation.related_count",
    "relatedMaxSeverity": "enrichment.correlation.related_alerts[].severity",
    "incidentIds": "enrichment.correlation.incidents",
    "priorIncidentCount": "enrichment.correlation.prior_incidents.count",
    "enrichment": ("enrichment.correlation", "enrichment.errors"),
}

#: Targets with fixed values (documented as constants).
LEEF_CONSTANTS: tuple[str, ...] = ("LEEF Version", "Vendor", "Product", "Delimiter", "devTimeFormat")

#: Attribute keys in the order they are written.
ATTRIBUTES: tuple[str, ...] = (
    "devTime",
    "devTimeFormat",
    "sev",
    "cat",
    "usrName",
    "src",
    "externalId",
    "eventId",
    "workload",
    "title",
    "msg",
    "status",
    "userId",
    "sender",
    "recipients",
    "fileName",
    "filePath",
    "fileSize",
    "fileHash",
    "url",
    "subject",
    "policies",
    "rules",
    "actions",
    "sensitiveTypes",
    "labels",
    "deviceName",
    "deviceId",
    "application",
    "destination",
    "justification",
    "tenantId",
    "recordType",
    "link",
    "updatedTime",
    "relatedAlertIds",
    "relatedAlertCount",
    "relatedMaxSeverity",
    "incidentIds",
    "priorIncidentCount",
    "enrichment",
)

_NOT_CUTTABLE = frozenset(
    {"devTime", "devTimeFormat", "sev", "cat", "src", "externalId", "eventId", "fileSize", "recordType", "updatedTime"}
    | {"relatedAlertCount", "relatedMaxSeverity", "priorIncidentCount", "enrichment"}
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def delimiter_char(spec: str) -> str:
    """The delimiter from its setting: one character, or ``0xHH`` / ``xHH``."""
    text = spec.strip() if len(spec) > 1 else spec
    m = re.fullmatch(r"0?[xX]([0-9a-fA-F]{2})", text)
    if m:
        char = chr(int(m.group(1), 16))
    elif len(text) == 1:
        char = text
    else:
        raise ValueError(f"a LEEF delimiter is one character or 0xHH, got {spec!r}")
    if char in "=|" or char.isalnum() or char in "\r\n\x00":
        raise ValueError(f"{spec!r} cannot be a LEEF delimiter (it would be ambiguous)")
    return char


def delimiter_header(char: str) -> str:
    """How the delimiter is written in the LEEF header."""
    return char if 0x21 <= ord(char) <= 0x7E else f"0x{ord(char):02x}"


class LeefFormatter:
    """Formats events as LEEF 2.0 with one delimiter."""

    def __init__(self, delimiter: str = "^") -> None:
        self.delimiter = delimiter_char(delimiter)
        d = self.delimiter
        self._special = re.compile("[" + re.escape(d) + r"\x00-\x1f\x7f]")
        table: dict[int, str] = {c: " " for c in (*range(32), 127)}
        table[ord(d)] = SUBSTITUTE
        self._table = table
        self._prefix_tail = f"|{delimiter_header(d)}|"
        self._prefixes = tuple(f"{d}{key}=" for key in ATTRIBUTES)

    def escape(self, value: str) -> str:
        """Make ``value`` safe as an attribute value (see the module docstring)."""
        return value.translate(self._table) if self._special.search(value) else value

    @staticmethod
    def header_field(value: str) -> str:
        return _CONTROL.sub(" ", value).replace("|", SUBSTITUTE)

    def pairs(self, data: dict[str, Any]) -> list[tuple[str, str]]:
        """(key, unescaped value) pairs, empty values left out; values are text."""
        flat = self._safe_flat(data)
        return [(p[1:-1], v) for p, v in zip(flat[0::2], flat[1::2], strict=True)]

    def _safe_flat(self, data: dict[str, Any]) -> list[str]:
        try:
            flat = self._flat(data)
            "".join(flat)  # every value is text?
        except (TypeError, AttributeError):  # a non-string where the schema has a string
            flat = [f.text(x) for x in self._flat(_as_text(data))]
        return flat

    def _flat(self, data: dict[str, Any]) -> list[str]:
        """``[prefix, value, ...]`` for every non-empty attribute in ``ATTRIBUTES`` order; a
        prefix is ``<delimiter>key=``. Straight-line code on purpose: the hot path."""
        get = data.get
        user = get("user") or _EMPTY
        obj = get("object") or _EMPTY
        device = get("device") or _EMPTY
        event_id = get("id") or ""
        ip = get("client_ip") or ""
        dev_time = leef_time(get("event_time") or "")
        policies, rules, actions = f.policy_fields(data)
        p = self._prefixes
        out: list[str] = []
        v: Any
        v = dev_time  # devTime
        if v:
            out += (p[0], v)
        v = DEV_TIME_FORMAT if dev_time else ""  # devTimeFormat
        if v:
            out += (p[1], v)
        v = _SEV_TEXT[LEEF_SEVERITY.get(get("severity") or "unknown", 5)]  # sev
        if v:
            out += (p[2], v)
        v = get("kind")  # cat
        if v:
            out += (p[3], v)
        v = user.get("upn") or get("sender")  # usrName
        if v:
            out += (p[4], v)
        v = ip if f.ip_version(ip) else ""  # src
        if v:
            out += (p[5], v)
        v = f.source_id(event_id) if event_id else ""  # externalId
        if v:
            out += (p[6], v)
        v = event_id  # eventId
        if v:
            out += (p[7], v)
        v = get("workload")  # workload
        if v:
            out += (p[8], v)
        v = get("title")  # title
        if v:
            out += (p[9], v)
        v = get("description")  # msg
        if v:
            out += (p[10], v)
        v = get("status")  # status
        if v:
            out += (p[11], v)
        v = user.get("object_id")  # userId
        if v:
            out += (p[12], v)
        v = get("sender")  # sender
        if v:
            out += (p[13], v)
        v = f.recipients(data) if get("recipients") else ""  # recipients
        if v:
            out += (p[14], v)
        v = obj.get("name")  # fileName
        if v:
            out += (p[15], v)
        v = obj.get("path")  # filePath
        if v:
            out += (p[16], v)
        v = _integer(obj.get("size"))  # fileSize
        if v:
            out += (p[17], v)
        v = obj.get("sha256") or obj.get("sha1")  # fileHash
        if v:
            out += (p[18], v)
        v = obj.get("url")  # url
        if v:
            out += (p[19], v)
        v = obj.get("subject")  # subject
        if v:
            out += (p[20], v)
        v = policies  # policies
        if v:
            out += (p[21], v)
        v = rules  # rules
        if v:
            out += (p[22], v)
        v = actions  # actions
        if v:
            out += (p[23], v)
        v = f.sensitive_types(data) if get("sensitive_types") else ""  # sensitiveTypes
        if v:
            out += (p[24], v)
        v = f.label_names(data) if get("labels") else ""  # labels
        if v:
            out += (p[25], v)
        v = device.get("name")  # deviceName
        if v:
            out += (p[26], v)
        v = device.get("id")  # deviceId
        if v:
            out += (p[27], v)
        v = device.get("application")  # application
        if v:
            out += (p[28], v)
        v = device.get("target")  # destination
        if v:
            out += (p[29], v)
        v = (get("override") or _EMPTY).get("justification")  # justification
        if v:
            out += (p[30], v)
        v = get("tenant_id")  # tenantId
        if v:
            out += (p[31], v)
        v = _integer(get("record_type"))  # recordType
        if v:
            out += (p[32], v)
        v = f.portal_link(data)  # link
        if v:
            out += (p[33], v)
        v = leef_time(get("updated_time") or "")  # updatedTime
        if v:
            out += (p[34], v)
        if get("enrichment"):
            for i, v in enumerate(f.enrichment_fields(data), 35):
                if v:  # relatedAlertIds .. enrichment, in ATTRIBUTES order
                    out += (p[i], v)
        return out

    def header(self, data: dict[str, Any]) -> str:
        operation = f.text(data.get("operation")) or f.text(data.get("kind")) or "DlpEvent"
        version = f.text(data.get("schema_version")) or SCHEMA_VERSION
        parts = (VENDOR, PRODUCT, version, cut_chars(operation, 255)[0])
        return "LEEF:2.0|" + "|".join(self.header_field(p) for p in parts) + self._prefix_tail

    def format(self, data: dict[str, Any], budget: int) -> str:
        """The LEEF text of one event, at most ``budget`` UTF-8 bytes (else :class:`FormatError`)."""
        header = self.header(data)
        flat = self._safe_flat(data)
        values = flat[1::2]
        if values and max(map(len, values)) > MAX_VALUE_CHARS:
            values = [cut_chars(v, MAX_VALUE_CHARS)[0] for v in values]
            flat[1::2] = values
        joined = "".join(values)
        if joined.isprintable() and self.delimiter not in joined:
            body = "".join(flat)
        else:
            escape = self.escape
            body = "".join([k + escape(v) for k, v in zip(flat[0::2], values, strict=True)])
        text = header + body[1:]  # no delimiter before the first attribute
        size = len(text) if text.isascii() else len(text.encode())
        if size <= budget:
            return text
        prefixes = flat[0::2]
        cuttable = [k[1:-1] not in _NOT_CUTTABLE for k in prefixes]
        if not shrink_to_fit(values, cuttable, size - budget, self.escape):
            raise FormatError(f"a LEEF event cannot fit in {budget} bytes even with every value cut")
        text = header + "".join([k + self.escape(v) for k, v in zip(prefixes, values, strict=True)])[1:]
        if len(text.encode()) > budget:
            raise FormatError(f"the LEEF header alone exceeds {budget} bytes")
        return text


def leef_time(iso: str) -> str:
    """``yyyy-MM-dd'T'HH:mm:ss.SSSZ`` (e.g. ``2024-05-01T12:00:00.123+0000``); "" if unreadable."""
    if not iso:
        return ""
    fast = canonical_millis(iso)
    if fast is not None:
        return fast + "+0000"
    parsed = parse_time(iso)
    if parsed is None:
        return ""
    return parsed.strftime("%Y-%m-%dT%H:%M:%S.") + f"{parsed.microsecond // 1000:03d}+0000"


_EMPTY: dict[str, Any] = {}
_SEV_TEXT = {n: str(n) for n in range(11)}


def _as_text(data: dict[str, Any]) -> dict[str, Any]:
    """A copy where every scalar of the top level and of the nested objects is text."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out[k] = {kk: (vv if kk == "size" else f.text(vv)) for kk, vv in v.items()}
        elif isinstance(v, list) or k == "record_type":
            out[k] = v
        else:
            out[k] = f.text(v)
    return out


def _integer(value: Any) -> str:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else ""
