"""Syslog headers: RFC 5424 and RFC 3164 (BSD), and our severity mapping.

Contract: every header field is printable US-ASCII without spaces (other characters become
``_``) and within the RFC's length limit; the timestamp is the event's time in UTC (RFC 5424:
``yyyy-MM-ddTHH:mm:ss.SSSZ``, the exact form QRadar documents for LEEF; RFC 3164:
``Mmm dd hh:mm:ss`` in UTC, English month names whatever the locale). An event without a
readable time gets the current time. The header ends with the space that separates it from
the message.
"""

from __future__ import annotations

import datetime as dt
import re

#: Facility names (RFC 5424 table 1) -> code.
FACILITIES: dict[str, int] = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    "ntp": 12,
    "audit": 13,
    "alert": 14,
    "clock": 15,
    **{f"local{i}": 16 + i for i in range(8)},
}

#: Our severity -> syslog severity (0 emergency ... 7 debug).
SYSLOG_SEVERITY: dict[str, int] = {
    "high": 2,  # critical
    "medium": 4,  # warning
    "low": 5,  # notice
    "informational": 6,  # informational
    "unknown": 5,  # notice: not assessed is not "informational"
}

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_NOT_PRINTABLE = re.compile(r"[^\x21-\x7e]")


def printable(value: str, limit: int) -> str:
    """``value`` as an RFC 5424 header field: printable ASCII, at most ``limit`` chars, ``-`` if empty."""
    text = _NOT_PRINTABLE.sub("_", value)[:limit]
    return text or "-"


def priority(facility: int, severity: int) -> int:
    """PRIVAL = facility * 8 + severity."""
    return facility * 8 + severity


def _event_datetime(event_time: str) -> dt.datetime:
    from sinks.syslog.fields import when

    return when(event_time) or dt.datetime.now(dt.UTC)


_CANONICAL = re.compile(
    r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.(\d{1,6}))?Z"
)


def canonical_millis(iso: str) -> str | None:
    """``yyyy-MM-ddTHH:mm:ss.SSS`` straight from a time in the schema's own form
    (:func:`forwarder.schema.iso_utc`), without parsing; ``None`` for any other form."""
    m = _CANONICAL.fullmatch(iso)
    return f"{iso[:19]}.{(m.group(1) or '').ljust(3, '0')[:3]}" if m else None


def rfc5424_time(event_time: str) -> str:
    """``yyyy-MM-ddTHH:mm:ss.SSSZ`` in UTC."""
    fast = canonical_millis(event_time)
    if fast is not None:
        return fast + "Z"
    w = _event_datetime(event_time)
    ms = w.microsecond // 1000
    return f"{w.year:04d}-{w.month:02d}-{w.day:02d}T{w.hour:02d}:{w.minute:02d}:{w.second:02d}.{ms:03d}Z"


def rfc3164_time(event_time: str) -> str:
    """``Mmm dd hh:mm:ss`` in UTC, day padded with a space."""
    when = _event_datetime(event_time)
    return f"{_MONTHS[when.month - 1]} {when.day:2d} {when:%H:%M:%S}"


class HeaderBuilder:
    """Builds the header of each message for one sink configuration."""

    def __init__(
        self,
        style: str,
        facility: int,
        hostname: str,
        app_name: str,
        procid: str,
        tag: bool = False,
    ) -> None:
        if style not in ("rfc5424", "rfc3164"):
            raise ValueError(f"unknown syslog header style {style!r}")
        self.style = style
        self.facility = facility
        self.hostname = printable(hostname, 255)
        self.app_name = printable(app_name, 48)
        self.procid = printable(procid, 128)
        # RFC 3164: the TAG is alphanumeric, at most 32 characters.
        # RFC 3164: the TAG is alphanumeric, at most 32 characters. Off by default: QRadar's
        # LEEF guide shows the 3164 header as "<PRI>Mmm dd hh:mm:ss host" with no tag.
        tag_text = re.sub(r"[^A-Za-z0-9]", "", app_name)[:32] or "dlpfwd"
        self.tag = f"{tag_text}: " if tag else ""
        self._fixed = f"{self.hostname} {self.app_name} {self.procid} "
        self._msgids: dict[str, str] = {}

    def build(self, severity: str, event_time: str, msgid: str) -> str:
        """The header for one event, ending with a space."""
        pri = priority(self.facility, SYSLOG_SEVERITY.get(severity, 5))
        if self.style == "rfc5424":
            field = self._msgids.get(msgid)
            if field is None:
                if len(self._msgids) > 4096:
                    self._msgids.clear()
                field = self._msgids[msgid] = printable(msgid, 32)
            return f"<{pri}>1 {rfc5424_time(event_time)} {self._fixed}{field} - "
        return f"<{pri}>{rfc3164_time(event_time)} {self.hostname} {self.tag}"
