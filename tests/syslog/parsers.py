"""Independent parsers for what the syslog sink writes: syslog headers, CEF and LEEF.

Written from the specifications, not from the sink's code: they share nothing with
``sinks.syslog`` so a bug in the encoder cannot hide behind the same bug in the decoder.
"""

from __future__ import annotations

import re

RFC5424 = re.compile(
    r"^<(?P<pri>\d{1,3})>1 (?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (?P<host>\S{1,255}) "
    r"(?P<app>\S{1,48}) (?P<procid>\S{1,128}) (?P<msgid>\S{1,32}) (?P<sd>-|\[.*?\]) (?P<msg>.*)$",
    re.S,
)
RFC3164 = re.compile(
    r"^<(?P<pri>\d{1,3})>(?P<ts>(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ \d]\d \d\d:\d\d:\d\d) "
    r"(?P<host>\S+) (?P<msg>.*)$",
    re.S,
)


def parse_syslog(line: str) -> dict[str, str]:
    """Split a received message into header fields and ``msg`` (RFC 5424 or RFC 3164)."""
    m = RFC5424.match(line) or RFC3164.match(line)
    if not m:
        raise ValueError(f"not a syslog message: {line[:120]!r}")
    fields = m.groupdict()
    pri = int(fields["pri"])
    assert 0 <= pri <= 191 and str(pri) == fields["pri"], "PRI must be 0-191 without leading zeros"
    fields["facility"] = str(pri // 8)
    fields["severity"] = str(pri % 8)
    return fields


def parse_cef(text: str) -> tuple[list[str], dict[str, str]]:
    """CEF text -> (the 7 header fields unescaped, extension {key: value unescaped})."""
    if not text.startswith("CEF:"):
        raise ValueError("not CEF")
    fields: list[str] = []
    current: list[str] = []
    i = 4
    while len(fields) < 7:
        if i >= len(text):
            raise ValueError("CEF header ended early")
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in "\\|":
            current.append(text[i + 1])
            i += 2
            continue
        if c in "\r\n":
            raise ValueError("line break in CEF header")
        if c == "|":
            fields.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    return fields, parse_cef_extension(text[i:])


_KEY_AHEAD = re.compile(r" ([A-Za-z0-9_]+)=")
_KEY_START = re.compile(r"([A-Za-z0-9_]+)=")
_UNESCAPE = {"\\": "\\", "=": "=", "n": "\n", "r": "\r"}


def parse_cef_extension(ext: str) -> dict[str, str]:
    """``key=value key2=value 2`` with ``\\\\``, ``\\=``, ``\\n``, ``\\r`` escapes."""
    out: dict[str, str] = {}
    if not ext:
        return out
    m = _KEY_START.match(ext)
    if not m:
        raise ValueError(f"extension does not start with a key: {ext[:40]!r}")
    key = m.group(1)
    i = m.end()
    value: list[str] = []
    while i < len(ext):
        c = ext[i]
        if c == "\\":
            nxt = ext[i + 1] if i + 1 < len(ext) else ""
            if nxt in _UNESCAPE:
                value.append(_UNESCAPE[nxt])
                i += 2
                continue
            raise ValueError(f"undefined escape \\{nxt!r} in {key}")
        if c == "=":
            raise ValueError(f"unescaped '=' inside the value of {key}")
        if c in "\r\n":
            raise ValueError(f"raw line break inside the value of {key}")
        if c == " ":
            ahead = _KEY_AHEAD.match(ext, i)
            if ahead:
                if key in out:
                    raise ValueError(f"duplicate key {key}")
                out[key] = "".join(value)
                key, value = ahead.group(1), []
                i = ahead.end()
                continue
        value.append(c)
        i += 1
    if key in out:
        raise ValueError(f"duplicate key {key}")
    out[key] = "".join(value)
    return out


def parse_leef(text: str) -> tuple[list[str], dict[str, str]]:
    """LEEF 2.0 text -> ([version, vendor, product, product version, event id, delimiter], attributes)."""
    if not text.startswith("LEEF:2.0|"):
        raise ValueError("not LEEF 2.0")
    parts = text.split("|", 6)
    if len(parts) != 7:
        raise ValueError("LEEF 2.0 header needs 6 pipes")
    header = [parts[0][5:], *parts[1:6]]
    spec = parts[5]
    m = re.fullmatch(r"0?x([0-9a-fA-F]{2})", spec)
    delimiter = chr(int(m.group(1), 16)) if m else (spec or "\t")
    if len(delimiter) != 1:
        raise ValueError(f"bad delimiter {spec!r}")
    attributes: dict[str, str] = {}
    for pair in parts[6].split(delimiter):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"attribute without '=': {pair[:40]!r}")
        if key in attributes:
            raise ValueError(f"duplicate key {key}")
        attributes[key] = value
    return header, attributes
