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
}

#: Targets with fixed values (documented as constants).
LEEF_CONSTANTS: tuple[str, ...] = ("LEEF Version", "Vendor", "Product", "Delimiter", "devTimeFormat")

_NOT_CUTTABLE = frozenset(
    {"devTime", "devTimeFormat", "sev", "cat", "src", "externalId", "eventId", "fileSize", "recordType", "updatedTime"}
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

    def escape(self, value: str) -> str:
        """Make ``value`` safe as an attribute value (see the module docstring)."""
        return value.translate(self._table) if self._special.search(value) else value

    @staticmethod
    def header_field(value: str) -> str:
        return _CONTROL.sub(" ", value).replace("|", SUBSTITUTE)

    def pairs(self, data: dict[str, Any]) -> list[tuple[str, str]]:
        """(key, unescaped value) pairs, empty values left out; values are text."""
        try:
            return self._pairs(data)
        except (TypeError, AttributeError):  # a non-string where the schema has a string
            pairs = self._pairs(_as_text(data))
            return [(k, f.text(v)) for k, v in pairs]

    def _pairs(self, data: dict[str, Any]) -> list[tuple[str, str]]:
        get = data.get
        user = get("user") or _EMPTY
        obj = get("object") or _EMPTY
        device = get("device") or _EMPTY
        event_id = get("id") or ""
        ip = get("client_ip") or ""
        severity = LEEF_SEVERITY.get(get("severity") or "unknown", 5)
        dev_time = leef_time(get("event_time") or "")
        policies, rules, actions = f.policy_fields(data)
        pairs = (
            ("devTime", dev_time),
            ("devTimeFormat", DEV_TIME_FORMAT if dev_time else ""),
            ("sev", _SEV_TEXT[severity]),
            ("cat", get("kind")),
            ("usrName", user.get("upn") or get("sender")),
            ("src", ip if f.ip_version(ip) else ""),
            ("externalId", f.source_id(event_id) if event_id else ""),
            ("eventId", event_id),
            ("workload", get("workload")),
            ("title", get("title")),
            ("msg", get("description")),
            ("status", get("status")),
            ("userId", user.get("object_id")),
            ("sender", get("sender")),
            ("recipients", f.recipients(data) if get("recipients") else ""),
            ("fileName", obj.get("name")),
            ("filePath", obj.get("path")),
            ("fileSize", _integer(obj.get("size"))),
            ("fileHash", obj.get("sha256") or obj.get("sha1")),
            ("url", obj.get("url")),
            ("subject", obj.get("subject")),
            ("policies", policies),
            ("rules", rules),
            ("actions", actions),
            ("sensitiveTypes", f.sensitive_types(data) if get("sensitive_types") else ""),
            ("labels", f.label_names(data) if get("labels") else ""),
            ("deviceName", device.get("name")),
            ("deviceId", device.get("id")),
            ("application", device.get("application")),
            ("destination", device.get("target")),
            ("justification", (get("override") or _EMPTY).get("justification")),
            ("tenantId", get("tenant_id")),
            ("recordType", _integer(get("record_type"))),
            ("link", f.portal_link(data)),
            ("updatedTime", leef_time(get("updated_time") or "")),
        )
        return [(k, v) for k, v in pairs if v]

    def header(self, data: dict[str, Any]) -> str:
        operation = f.text(data.get("operation")) or f.text(data.get("kind")) or "DlpEvent"
        version = f.text(data.get("schema_version")) or SCHEMA_VERSION
        parts = (VENDOR, PRODUCT, version, cut_chars(operation, 255)[0])
        return "LEEF:2.0|" + "|".join(self.header_field(p) for p in parts) + self._prefix_tail

    def format(self, data: dict[str, Any], budget: int) -> str:
        """The LEEF text of one event, at most ``budget`` UTF-8 bytes (else :class:`FormatError`)."""
        header = self.header(data)
        pairs = self.pairs(data)
        limit = MAX_VALUE_CHARS
        try:
            values = [v if len(v) <= limit else cut_chars(v, limit)[0] for _, v in pairs]
        except TypeError:  # a non-string where the schema has a string
            values = [cut_chars(f.text(v), limit)[0] for _, v in pairs]
        keys = [k for k, _ in pairs]
        d = self.delimiter
        joined = "".join(values)
        if joined.isprintable() and d not in joined:
            body = d.join([k + "=" + v for k, v in zip(keys, values, strict=True)])
        else:
            escape = self.escape
            body = d.join([k + "=" + escape(v) for k, v in zip(keys, values, strict=True)])
        text = header + body
        size = len(text) if text.isascii() else len(text.encode())
        if size > budget:
            cuttable = [k not in _NOT_CUTTABLE for k in keys]
            if not shrink_to_fit(values, cuttable, size - budget, self.escape):
                raise FormatError(f"a LEEF event cannot fit in {budget} bytes even with every value cut")
            text = header + d.join(f"{k}={self.escape(v)}" for k, v in zip(keys, values, strict=True))
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
