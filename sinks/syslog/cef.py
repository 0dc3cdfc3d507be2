"""ArcSight CEF (Common Event Format, "Implementing ArcSight CEF" v25) for DLP events.

Layout: ``CEF:0|Microsoft|Purview DLP|<schema version>|<class id>|<name>|<severity>|<extension>``.

Escaping, exactly per the spec:

* header fields: ``\\`` -> ``\\\\``, ``|`` -> ``\\|``; line breaks and other control
  characters (which the header cannot carry) become a space;
* extension values: ``\\`` -> ``\\\\``, ``=`` -> ``\\=``, CR -> ``\\r``, LF -> ``\\n`` (the spec's
  multi-line escapes); ``|`` is *not* escaped there; other C0 control characters and DEL
  (NUL, TAB, ESC...), which CEF has no escape for, become a space.

Keys appear only with a non-empty value; every ``csN``/``cnN``/``flexStringN``/
``deviceCustomDateN`` comes with its label. Each value is first cut to the key's dictionary
length, then, if the whole message is above the size limit, the longest values are cut
further (:mod:`sinks.syslog.truncate`); a cut value ends with the truncation marker.
"""

from __future__ import annotations

import re
from typing import Any

from forwarder.schema import SCHEMA_VERSION
from sinks.syslog import fields as f
from sinks.syslog.truncate import cut_chars, shrink_to_fit


class FormatError(Exception):
    """The event cannot be written within the limits (it is rejected, not retried)."""


#: Our severity -> CEF 0-10 (0-3 Low, 4-6 Medium, 7-8 High, 9-10 Very-High).
CEF_SEVERITY: dict[str, int] = {"unknown": 5, "informational": 1, "low": 3, "medium": 6, "high": 8}

VENDOR = "Microsoft"
PRODUCT = "Purview DLP"

#: CEF target (header field or extension key) -> DlpEvent field(s) it comes from, first
#: non-empty wins (docs/schema.md ## CEF is checked against this).
CEF_MAPPING: dict[str, str | tuple[str, ...]] = {
    "Device Version": "schema_version",
    "Device Event Class ID": ("operation", "kind"),
    "Name": ("title", "operation", "policies[].name"),
    "Severity": "severity",
    "rt": "event_time",
    "externalId": "id",
    "cat": "kind",
    "deviceFacility": "workload",
    "act": "policies[].rules[].actions",
    "suser": ("user.upn", "sender"),
    "suid": "user.object_id",
    "duser": "recipients",
    "fname": "object.name",
    "filePath": "object.path",
    "fsize": "object.size",
    "fileHash": ("object.sha256", "object.sha1"),
    "request": "object.url",
    "src": "client_ip",
    "c6a2": "client_ip",
    "shost": "device.name",
    "deviceExternalId": "device.id",
    "deviceProcessName": "device.application",
    "dhost": "device.target",
    "msg": "description",
    "reason": "override.justification",
    "cs1": "policies[].name",
    "cs2": "policies[].rules[].name",
    "cs3": ("sensitive_types[].name", "sensitive_types[].id", "sensitive_types[].count"),
    "cs4": ("labels[].name", "labels[].id"),
    "cs5": ("links.alert", "links.incident", "links.purview"),
    "cs6": "id",
    "cn1": "record_type",
    "flexString1": "tenant_id",
    "flexString2": "status",
    "deviceCustomDate1": "updated_time",
}

#: Targets with fixed values (documented as constants).
CEF_CONSTANTS: tuple[str, ...] = ("CEF Version", "Device Vendor", "Device Product")

#: Labels of the custom keys.
CEF_LABELS: dict[str, str] = {
    "cs1": "DLP Policies",
    "cs2": "DLP Rules",
    "cs3": "Sensitive Info Types",
    "cs4": "Sensitivity Labels",
    "cs5": "Portal Link",
    "cs6": "dlpfwd Event Id",
    "cn1": "Record Type",
    "c6a2": "Source IPv6 Address",
    "flexString1": "Tenant Id",
    "flexString2": "Status",
    "deviceCustomDate1": "Updated Time",
}

#: Dictionary lengths (characters) of the keys we use; keys absent here are numbers/times.
CEF_MAX_LENGTH: dict[str, int] = {
    "Device Vendor": 63,
    "Device Product": 63,
    "Device Version": 31,
    "Device Event Class ID": 1023,
    "Name": 512,
    "externalId": 40,
    "cat": 1023,
    "deviceFacility": 1023,
    "act": 63,
    "suser": 1023,
    "suid": 1023,
    "duser": 1023,
    "fname": 1023,
    "filePath": 1023,
    "fileHash": 255,
    "request": 1023,
    "shost": 1023,
    "deviceExternalId": 255,
    "deviceProcessName": 1023,
    "dhost": 1023,
    "msg": 1023,
    "reason": 1023,
    "cs1": 4000,
    "cs2": 4000,
    "cs3": 4000,
    "cs4": 4000,
    "cs5": 4000,
    "cs6": 4000,
    "flexString1": 1023,
    "flexString2": 1023,
}

# Values that are never cut to fit the message size: numbers, times, addresses, labels, ids.
_NOT_CUTTABLE = frozenset(
    {"rt", "fsize", "cn1", "src", "c6a2", "deviceCustomDate1", "externalId", "cs6"} | {k + "Label" for k in CEF_LABELS}
)

_EMPTY: dict[str, Any] = {}
_HEADER_SPECIAL = re.compile(r"[\\|\x00-\x1f\x7f]")
_HEADER_TABLE = str.maketrans({"\\": "\\\\", "|": "\\|", **{chr(c): " " for c in (*range(32), 127)}})
_EXT_SPECIAL = re.compile(r"[\\=\x00-\x1f\x7f]")
_ODD_CONTROL = re.compile(r"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f]")  # controls other than LF and CR
_EXT_TABLE = str.maketrans(
    {
        **{chr(c): " " for c in (*range(32), 127)},
        "\\": "\\\\",
        "=": "\\=",
        "\n": "\\n",
        "\r": "\\r",
    }
)


def escape_header(value: str) -> str:
    """Escape a CEF header field."""
    return value.translate(_HEADER_TABLE) if _HEADER_SPECIAL.search(value) else value


def escape_extension(value: str) -> str:
    """Escape a CEF extension value."""
    return value.translate(_EXT_TABLE) if _EXT_SPECIAL.search(value) else value


def _prefix(key: str) -> str:
    """`` key=`` preceded by the key's label pair when it has one."""
    label = CEF_LABELS.get(key)
    return f" {key}Label={label} {key}=" if label else f" {key}="


_P = {key: _prefix(key) for key in (*CEF_MAPPING, "c6a2") if key[0].islower()}
# The same prefixes with \x01 for "=": the body is then escaped in one pass and \x01 turned
# back into "=" (only when no value holds a control character, so never a value's \x01).
_PX = {p: p.replace("=", "\x01") for p in _P.values()}
_BIG = 1 << 30


def _int_text(value: Any) -> str:
    return "" if value is None or isinstance(value, bool) else str(value)


def _items(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(prefix, unescaped value) for every non-empty extension value, each already cut to its
    key's dictionary length; the prefix is `` key=`` (with the label pair before it)."""
    get = data.get
    user = get("user") or _EMPTY
    obj = get("object") or _EMPTY
    device = get("device") or _EMPTY
    event_id = get("id") or ""
    ip = get("client_ip") or ""
    version = f.ip_version(ip)
    policies, rules, actions = f.policy_fields(data)
    P = _P
    raw = (
        (P["rt"], f.epoch_ms(get("event_time") or ""), _BIG),
        (P["externalId"], f.source_id(event_id) if event_id else "", 40),
        (P["cat"], get("kind"), 1023),
        (P["deviceFacility"], get("workload"), 1023),
        (P["act"], actions, 63),
        (P["suser"], user.get("upn") or get("sender"), 1023),
        (P["suid"], user.get("object_id"), 1023),
        (P["duser"], f.recipients(data) if get("recipients") else "", 1023),
        (P["fname"], obj.get("name"), 1023),
        (P["filePath"], obj.get("path"), 1023),
        (P["fsize"], _int_text(obj.get("size")), _BIG),
        (P["fileHash"], obj.get("sha256") or obj.get("sha1"), 255),
        (P["request"], obj.get("url"), 1023),
        (P["src"], ip if version == 4 else "", _BIG),
        (P["c6a2"], ip if version == 6 else "", _BIG),
        (P["shost"], device.get("name"), 1023),
        (P["deviceExternalId"], device.get("id"), 255),
        (P["deviceProcessName"], device.get("application"), 1023),
        (P["dhost"], device.get("target"), 1023),
        (P["msg"], get("description"), 1023),
        (P["reason"], (get("override") or _EMPTY).get("justification"), 1023),
        (P["cs1"], policies, 4000),
        (P["cs2"], rules, 4000),
        (P["cs3"], f.sensitive_types(data) if get("sensitive_types") else "", 4000),
        (P["cs4"], f.label_names(data) if get("labels") else "", 4000),
        (P["cs5"], f.portal_link(data), 4000),
        (P["cs6"], event_id, _BIG),
        (P["cn1"], _int_text(get("record_type")), _BIG),
        (P["flexString1"], get("tenant_id"), 1023),
        (P["flexString2"], get("status"), 1023),
        (P["deviceCustomDate1"], f.epoch_ms(get("updated_time") or ""), _BIG),
    )
    try:
        return [(p, v if len(v) <= lim else cut_chars(v, lim)[0]) for p, v, lim in raw if v]
    except TypeError:  # a non-string where the schema has a string: format it as text
        out = []
        for p, v, lim in raw:
            text = f.text(v)
            if text:
                out.append((p, text if len(text) <= lim else cut_chars(text, lim)[0]))
        return out


def cef_pairs(data: dict[str, Any]) -> list[tuple[str, str]]:
    """The extension as (key, unescaped value) pairs, labels included, empty values left out;
    each value already cut to its key's dictionary length."""
    out: list[tuple[str, str]] = []
    for prefix, value in _items(data):
        parts = prefix.split(" ")
        if len(parts) > 2:  # " csNLabel=<label> csN=": label pair first
            label_key, _, label = prefix[1:].partition("=")
            out.append((label_key, label.rsplit(" ", 1)[0]))
        out.append((parts[-1][:-1], value))
    return out


_PREFIX = "CEF:0|" + escape_header(VENDOR[:63]) + "|" + escape_header(PRODUCT[:63]) + "|"


def cef_header(data: dict[str, Any]) -> str:
    """``CEF:0|...|Severity|`` for one event."""
    get = data.get
    operation = get("operation") or get("kind") or "DlpEvent"
    name = get("title")
    if not name:
        policies = f.policy_names(data)
        name = f"{operation}: {policies}" if policies else operation
    version = get("schema_version") or SCHEMA_VERSION
    if len(version) > 31:
        version = cut_chars(version, 31)[0]
    if len(operation) > 1023:
        operation = cut_chars(operation, 1023)[0]
    if len(name) > 512:
        name = cut_chars(name, 512)[0]
    severity = CEF_SEVERITY.get(get("severity") or "unknown", 5)
    middle = version + "|" + operation + "|" + name
    if _HEADER_SPECIAL.search(middle):
        middle = escape_header(version) + "|" + escape_header(operation) + "|" + escape_header(name)
    return f"{_PREFIX}{middle}|{severity}|"


def format_cef(data: dict[str, Any], budget: int) -> str:
    """The CEF text of one event, at most ``budget`` UTF-8 bytes.

    Raises :class:`FormatError` when even cutting every cuttable value cannot fit.
    """
    header = cef_header(data)
    items = _items(data)
    joined = "".join([v for _, v in items])
    printable = joined.isprintable()  # fast: no control characters at all
    if printable and "\\" not in joined and "=" not in joined:
        body = "".join([p + v for p, v in items])
    elif not printable and _ODD_CONTROL.search(joined):  # rare: controls CEF cannot escape
        body = "".join([p + escape_extension(v) for p, v in items])
    else:
        px = _PX
        body = (
            "".join([px[p] + v for p, v in items])
            .replace("\\", "\\\\")
            .replace("=", "\\=")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
            .replace("\x01", "=")
        )
    text = header + body[1:]
    size = len(text) if text.isascii() else len(text.encode())
    if size <= budget:
        return text
    prefixes = [p for p, _ in items]
    values = [v for _, v in items]
    cuttable = [p.rsplit(" ", 1)[-1][:-1] not in _NOT_CUTTABLE for p in prefixes]
    if not shrink_to_fit(values, cuttable, size - budget, escape_extension):
        raise FormatError(f"a CEF event cannot fit in {budget} bytes even with every value cut")
    text = header + "".join([p + escape_extension(v) for p, v in zip(prefixes, values, strict=True)])[1:]
    if len(text.encode()) > budget:  # the header alone is too long
        raise FormatError(f"the CEF header alone exceeds {budget} bytes")
    return text
