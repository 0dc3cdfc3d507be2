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
    # correlation enrichment (docs/correlation.md); the dlpfwd* keys are vendor extension keys
    "cn2": "enrichment.correlation.related_count",
    "cn3": "enrichment.correlation.prior_incidents.count",
    "dlpfwdRelatedAlertIds": "enrichment.correlation.related_alerts[].id",
    "dlpfwdRelatedMaxSeverity": "enrichment.correlation.related_alerts[].severity",
    "dlpfwdIncidentIds": "enrichment.correlation.incidents",
    "dlpfwdEnrichment": ("enrichment.correlation", "enrichment.errors"),
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
    "cn2": "Related Alert Count",
    "cn3": "Prior Incident Count",
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
    "dlpfwdRelatedAlertIds": 4000,
    "dlpfwdRelatedMaxSeverity": 63,
    "dlpfwdIncidentIds": 4000,
    "dlpfwdEnrichment": 1023,
}

# Values that are never cut to fit the message size: numbers, times, addresses, labels, ids.
_NOT_CUTTABLE = frozenset(
    {"rt", "fsize", "cn1", "cn2", "cn3", "src", "c6a2", "deviceCustomDate1", "externalId", "cs6"}
    | {"dlpfwdRelatedMaxSeverity", "dlpfwdEnrichment"}
    | {k + "Label" for k in CEF_LABELS}
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


_P_RT = _PX[_P["rt"]]
_P_EXTERNALID = _PX[_P["externalId"]]
_P_CAT = _PX[_P["cat"]]
_P_DEVICEFACILITY = _PX[_P["deviceFacility"]]
_P_ACT = _PX[_P["act"]]
_P_SUSER = _PX[_P["suser"]]
_P_SUID = _PX[_P["suid"]]
_P_DUSER = _PX[_P["duser"]]
_P_FNAME = _PX[_P["fname"]]
_P_FILEPATH = _PX[_P["filePath"]]
_P_FSIZE = _PX[_P["fsize"]]
_P_FILEHASH = _PX[_P["fileHash"]]
_P_REQUEST = _PX[_P["request"]]
_P_SRC = _PX[_P["src"]]
_P_C6A2 = _PX[_P["c6a2"]]
_P_SHOST = _PX[_P["shost"]]
_P_DEVICEEXTERNALID = _PX[_P["deviceExternalId"]]
_P_DEVICEPROCESSNAME = _PX[_P["deviceProcessName"]]
_P_DHOST = _PX[_P["dhost"]]
_P_MSG = _PX[_P["msg"]]
_P_REASON = _PX[_P["reason"]]
_P_CS1 = _PX[_P["cs1"]]
_P_CS2 = _PX[_P["cs2"]]
_P_CS3 = _PX[_P["cs3"]]
_P_CS4 = _PX[_P["cs4"]]
_P_CS5 = _PX[_P["cs5"]]
_P_CS6 = _PX[_P["cs6"]]
_P_CN1 = _PX[_P["cn1"]]
_P_FLEXSTRING1 = _PX[_P["flexString1"]]
_P_FLEXSTRING2 = _PX[_P["flexString2"]]
_P_DEVICECUSTOMDATE1 = _PX[_P["deviceCustomDate1"]]
_P_CN2 = _PX[_P["cn2"]]
_P_CN3 = _PX[_P["cn3"]]
_P_RELATED_IDS = _PX[_P["dlpfwdRelatedAlertIds"]]
_P_RELATED_MAX = _PX[_P["dlpfwdRelatedMaxSeverity"]]
_P_INCIDENT_IDS = _PX[_P["dlpfwdIncidentIds"]]
_P_ENRICHMENT = _PX[_P["dlpfwdEnrichment"]]


def _items(data: dict[str, Any]) -> list[str]:
    """``[prefix, value, prefix, value, ...]`` for every non-empty extension value, in a fixed
    order, each value unescaped and cut to its key's dictionary length; a prefix is
    `` key\x01`` (after the label pair, if any), \x01 standing for "=" until the body is built.

    Straight-line code on purpose: this is the formatter's hot path."""
    get = data.get
    user = get("user") or _EMPTY
    obj = get("object") or _EMPTY
    device = get("device") or _EMPTY
    event_id = get("id") or ""
    ip = get("client_ip") or ""
    version = f.ip_version(ip)
    policies, rules, actions = f.policy_fields(data)
    out: list[str] = []
    v: Any
    v = f.epoch_ms(get("event_time") or "")
    if v:
        out += (_P_RT, v)
    v = f.source_id(event_id) if event_id else ""
    if v:
        out += (_P_EXTERNALID, v if len(v) <= 40 else cut_chars(v, 40)[0])
    v = get("kind")
    if v:
        out += (_P_CAT, v if len(v) <= 1023 else cut_chars(v, 1023)[0])
    v = get("workload")
    if v:
        out += (_P_DEVICEFACILITY, v if len(v) <= 1023 else cut_chars(v, 1023)[0])
    v = actions
    if v:
        out += (_P_ACT, v if len(v) <= 63 else cut_chars(v, 63)[0])
    v = user.get("upn") or get("sender")
    if v:
        out += (_P_SUSER, v if len(v) <= 1023 else cut_chars(v, 1023)[0])
    v = user.get("object_id")
    if v:
        out += (_P_SUID, v if len(v) <= 1023 else cut_chars(v, 1023)[0])
    v = f.recipients(data) if get("recipients") else ""
    if v:
        out += (_P_DUSER, v if len(v) <= 1023 else cut_chars(v, 1023)[0])
    v = obj.get("name")
    if v:
        out += (_P_FNAME, v if len(v) <= 1023 else cut_chars(v, 1023)[0])
    v = obj.get("path")
    if v:
        out += (_P_FILEPATH, v if len(v) <= 1023 else cut_chars(v, 1023)[0])
    v = _int_text(obj.get("size"))
    if v:
        out += (_P_FSIZE, v)
    v = obj.get("sha256") or obj.get("sha1")
    if v:
        out += (_P_FILEHASH, v if len(v) <= 255 else cut_chars(v, 255)[0])
    v = obj.get("url")
    if v:
        out += (_P_REQUEST, v if len(v) <= 1023 else cut_chars(v, 1023)[0])
    v = ip if version == 4 else ""
    if v:
        out += (_P_SRC, v)
    v = ip if version == 6 else ""
    if v:
        out += (_P_C6A2, v)
    v = device.get("name")
    if v:
        out += (_P_SHOST, v if len(v) <= 1023 else cut_chars(v, 1023)[0])
    v = device.get("id")
    if v:
        out += (_P_DEVICEEXTERNALID, v if len(v) <= 255 else cut_chars(v, 255)[0])
    v = device.get("application")
    if v:
        out += (_P_DEVICEPROCESSNAME, v if len(v) <= 1023 else cut_chars(v, 1023)[0])
    v = device.get("target")
    if v:
        out += (_P_DHOST, v if len(v) <= 1023 else cut_chars(v, 1023)[0])
    v = get("description")
    if v:
        out += (_P_MSG, v if len(v) <= 1023 else cut_chars(v, 1023)[0])
    v = (get("override") or _EMPTY).get("justification")
    if v:
        out += (_P_REASON, v if len(v) <= 1023 else cut_chars(v, 1023)[0])
    v = policies
    if v:
        out += (_P_CS1, v if len(v) <= 4000 else cut_chars(v, 4000)[0])
    v = rules
    if v:
        out += (_P_CS2, v if len(v) <= 4000 else cut_chars(v, 4000)[0])
    v = f.sensitive_types(data) if get("sensitive_types") else ""
    if v:
        out += (_P_CS3, v if len(v) <= 4000 else cut_chars(v, 4000)[0])
    v = f.label_names(data) if get("labels") else ""
    if v:
        out += (_P_CS4, v if len(v) <= 4000 else cut_chars(v, 4000)[0])
    v = f.portal_link(data)
    if v:
        out += (_P_CS5, v if len(v) <= 4000 else cut_chars(v, 4000)[0])
    v = event_id
    if v:
        out += (_P_CS6, v)
    v = _int_text(get("record_type"))
    if v:
        out += (_P_CN1, v)
    v = get("tenant_id")
    if v:
        out += (_P_FLEXSTRING1, v if len(v) <= 1023 else cut_chars(v, 1023)[0])
    v = get("status")
    if v:
        out += (_P_FLEXSTRING2, v if len(v) <= 1023 else cut_chars(v, 1023)[0])
    v = f.epoch_ms(get("updated_time") or "")
    if v:
        out += (_P_DEVICECUSTOMDATE1, v)
    if get("enrichment"):
        related, count, top, incidents, prior, flag = f.enrichment_fields(data)
        if count:
            out += (_P_CN2, count)
        if prior:
            out += (_P_CN3, prior)
        if related:
            out += (_P_RELATED_IDS, related if len(related) <= 4000 else cut_chars(related, 4000)[0])
        if top:
            out += (_P_RELATED_MAX, top)
        if incidents:
            out += (_P_INCIDENT_IDS, incidents if len(incidents) <= 4000 else cut_chars(incidents, 4000)[0])
        if flag:
            out += (_P_ENRICHMENT, flag if len(flag) <= 1023 else cut_chars(flag, 1023)[0])
    return out


def _safe_items(data: dict[str, Any]) -> list[str]:
    """``_items``, tolerating non-string values where the schema has strings (made text)."""
    try:
        items = _items(data)
    except TypeError:
        fixed = {k: (f.text(v) if not isinstance(v, dict | list) else v) for k, v in data.items()}
        for key in ("user", "object", "device", "override"):
            value = fixed.get(key)
            if isinstance(value, dict):
                fixed[key] = {k: (f.text(v) if k != "size" else v) for k, v in value.items()}
        items = _items(fixed)
    return items


def cef_pairs(data: dict[str, Any]) -> list[tuple[str, str]]:
    """The extension as (key, unescaped value) pairs, labels included, empty values left out;
    each value already cut to its key's dictionary length."""
    flat = _safe_items(data)
    out: list[tuple[str, str]] = []
    for prefix, value in zip(flat[0::2], flat[1::2], strict=True):
        parts = prefix.replace("\x01", "=").split(" ")
        if len(parts) > 2:  # " csNLabel=<label> csN=": label pair first
            label_key, _, label = " ".join(parts[1:-1]).partition("=")
            out.append((label_key, label))
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
    if not middle.isprintable() or "|" in middle or "\\" in middle:
        middle = escape_header(version) + "|" + escape_header(operation) + "|" + escape_header(name)
    return f"{_PREFIX}{middle}|{severity}|"


def format_cef(data: dict[str, Any], budget: int) -> str:
    """The CEF text of one event, at most ``budget`` UTF-8 bytes.

    Raises :class:`FormatError` when even cutting every cuttable value cannot fit.
    """
    header = cef_header(data)
    flat = _safe_items(data)
    values = flat[1::2]
    joined = "".join(values)
    printable = joined.isprintable()  # fast: no control characters at all
    if printable and "\\" not in joined and "=" not in joined:
        body = "".join(flat).replace("\x01", "=")
    elif not printable and _ODD_CONTROL.search(joined):  # rare: controls CEF cannot escape
        body = "".join([p.replace("\x01", "=") + escape_extension(v) for p, v in zip(flat[0::2], values, strict=True)])
    else:  # one pass over the whole body; no value holds \x01 (it is an "odd" control)
        body = (
            "".join(flat)
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
    prefixes = [p.replace("\x01", "=") for p in flat[0::2]]
    cuttable = [p.rsplit(" ", 1)[-1][:-1] not in _NOT_CUTTABLE for p in prefixes]
    if not shrink_to_fit(values, cuttable, size - budget, escape_extension):
        raise FormatError(f"a CEF event cannot fit in {budget} bytes even with every value cut")
    text = header + "".join([p + escape_extension(v) for p, v in zip(prefixes, values, strict=True)])[1:]
    if len(text.encode()) > budget:  # the header alone is too long
        raise FormatError(f"the CEF header alone exceeds {budget} bytes")
    return text
