"""The request schema of ``POST /v1/status-changes`` and its strict validation.

A request body is one JSON object (UTF-8, at most ``[serve] max_body`` bytes)::

    {
      "changeId": "splunk-1700000000.42-2031",      required: the client's id of this change
      "incidentId": "2031",                          required: the Defender XDR incident id
      "timestamp": "2026-11-23T10:00:00Z",           required: when the change was made (ISO 8601, with zone)
      "status": "resolved",                          \
      "classification": "truePositive",               |  at least one of these five
      "determination": "maliciousUserActivity",       |  (Graph v1.0 enum spellings, exact case)
      "assignedTo": "secops@contoso.com",             |  "" unassigns
      "comment": "Closed from Splunk: user coached",  /
      "source": "splunk:DLP high severity"           optional: who sends it (shown in logs)
    }

Anything else is refused with :class:`Invalid` naming the field: unknown fields, duplicate
keys, ``null``, wrong types, values outside the enums (:mod:`forwarder.correlation.incidents`
holds them; the update page's four older determination spellings are accepted and
translated), over-long strings, control characters, a timestamp without a zone or too far
in the future. Validation never echoes a field's value back except enum mistakes (short and
safe), so an error answer cannot carry a comment's contents into a log.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from forwarder.correlation.incidents import CLASSIFICATIONS, DETERMINATION_ALIASES, DETERMINATIONS, STATUSES

#: Field name -> (required, max length). Lengths are characters.
FIELDS: dict[str, tuple[bool, int]] = {
    "changeId": (True, 128),
    "incidentId": (True, 20),
    "timestamp": (True, 40),
    "status": (False, 32),
    "classification": (False, 64),
    "determination": (False, 64),
    "assignedTo": (False, 256),
    "comment": (False, 10000),
    "source": (False, 128),
}
#: The fields that change something; a request must carry at least one.
CHANGES = ("status", "classification", "determination", "assignedTo", "comment")
ENUMS: dict[str, tuple[str, ...]] = {
    "status": STATUSES,
    "classification": CLASSIFICATIONS,
    "determination": DETERMINATIONS,
}

_VISIBLE_ASCII = re.compile(r"^[\x21-\x7e]+$")
_DIGITS = re.compile(r"^[0-9]+$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # tab, LF, CR allowed (comments)


class Invalid(ValueError):
    """The body breaks the schema. ``field`` names the offending field ('' for the whole body);
    ``code`` is the error code of the answer (``InvalidJson``, ``UnknownField``, ...)."""

    def __init__(self, code: str, message: str, field: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


@dataclass(frozen=True)
class StatusChangeRequest:
    """A validated status change, enums in their Graph spelling; ``None`` = not part of the change."""

    change_id: str
    incident_id: str
    timestamp: dt.datetime
    status: str | None = None
    classification: str | None = None
    determination: str | None = None
    assigned_to: str | None = None
    comment: str | None = None
    source: str = ""

    def digest(self) -> str:
        """SHA-256 over the change's content (not its id): a repeated change id with another
        digest is a different change reusing the id."""
        content = asdict(self)
        content.pop("change_id")
        content["timestamp"] = self.timestamp.isoformat()
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()

    def fields(self) -> list[str]:
        """The Graph names of the fields this change sets (for logs: names, never values)."""
        names = {"assigned_to": "assignedTo"}
        return [names.get(n, n) for n in ("status", "classification", "determination", "assigned_to", "comment")
                if getattr(self, n) is not None]  # fmt: skip


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise Invalid("DuplicateField", f"field {key!r} appears more than once", key)
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise Invalid("InvalidJson", f"{name} is not JSON")


def parse(body: bytes, now: dt.datetime, future_tolerance: float) -> StatusChangeRequest:
    """Validate ``body`` (raw bytes) into a :class:`StatusChangeRequest`; :class:`Invalid` otherwise.

    ``timestamp`` may lie at most ``future_tolerance`` seconds after ``now`` (clock skew).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("InvalidJson", "the body is not UTF-8") from None
    if not text.strip():
        raise Invalid("InvalidJson", "the body is empty: expected a JSON object")
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except RecursionError:
        raise Invalid("InvalidJson", "the body is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise Invalid(
            "InvalidJson", f"the body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(data, dict):
        raise Invalid("InvalidJson", f"expected a JSON object, got {_kind(data)}")
    for key in data:
        if key not in FIELDS:
            raise Invalid("UnknownField", f"unknown field {_safe(key)!r} (allowed: {', '.join(FIELDS)})", _safe(key))
    values: dict[str, str] = {}
    for name, (required, limit) in FIELDS.items():
        if name not in data:
            if required:
                raise Invalid("MissingField", f"{name}: required", name)
            continue
        values[name] = _string(name, data[name], limit)
    change_id, incident_id = values["changeId"], values["incidentId"]
    if not _VISIBLE_ASCII.match(change_id):
        raise Invalid("InvalidField", "changeId: expected 1-128 visible ASCII characters (no spaces)", "changeId")
    if not _DIGITS.match(incident_id):
        raise Invalid("InvalidField", "incidentId: expected the Defender XDR incident id (digits)", "incidentId")
    when = _timestamp(values["timestamp"], now, future_tolerance)
    enums = {name: _enum(name, values[name]) for name in ENUMS if name in values}
    if not any(name in values for name in CHANGES):
        raise Invalid("NoChange", f"nothing to change: expected at least one of {', '.join(CHANGES)}")
    if "comment" in values and not values["comment"].strip():
        raise Invalid("InvalidField", "comment: expected text (leave the field out for no comment)", "comment")
    source = values.get("source", "")
    if source and not source.isprintable():
        raise Invalid("InvalidField", "source: expected printable text", "source")
    return StatusChangeRequest(
        change_id=change_id,
        incident_id=incident_id,
        timestamp=when,
        status=enums.get("status"),
        classification=enums.get("classification"),
        determination=enums.get("determination"),
        assigned_to=values.get("assignedTo"),
        comment=values.get("comment"),
        source=source,
    )


def _string(name: str, value: Any, limit: int) -> str:
    if not isinstance(value, str):
        raise Invalid("InvalidField", f"{name}: expected a string, got {_kind(value)}", name)
    if len(value) > limit:
        raise Invalid("InvalidField", f"{name}: longer than {limit} characters", name)
    if name in FIELDS and FIELDS[name][0] and not value:
        raise Invalid("InvalidField", f"{name}: must not be empty", name)
    if _CONTROL.search(value) or (name != "comment" and ("\n" in value or "\r" in value or "\t" in value)):
        raise Invalid("InvalidField", f"{name}: control characters are not allowed", name)
    return value


#: The update page's older determination spellings (exact case), sent in the CSDL spelling.
OLD_DETERMINATIONS = ("compromisedUser", "clean", "insufficientData", "confirmedUserActivity")


def _enum(name: str, value: str) -> str:
    allowed = ENUMS[name]
    if value in allowed:
        return value
    if name == "determination" and value in OLD_DETERMINATIONS:
        return DETERMINATION_ALIASES[value.lower()]
    hint = ""
    canonical = {v.lower(): v for v in allowed}.get(value.lower())
    if name == "determination" and value.lower() in DETERMINATION_ALIASES:
        canonical = next(old for old in OLD_DETERMINATIONS if old.lower() == value.lower())
    if canonical:
        hint = f" (did you mean {canonical!r}?)"
    shown = _safe(value)[:64]
    raise Invalid("InvalidField", f"{name}: expected one of {', '.join(allowed)}, got {shown!r}{hint}", name)


def _timestamp(value: str, now: dt.datetime, future_tolerance: float) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise Invalid("InvalidField", "timestamp: expected ISO 8601, e.g. 2026-11-23T10:00:00Z", "timestamp") from None
    if when.tzinfo is None or "T" not in value:
        raise Invalid("InvalidField", "timestamp: expected a date, a time and a zone (Z or +hh:mm)", "timestamp")
    when = when.astimezone(dt.UTC)
    ahead = (when - now).total_seconds()
    if ahead > future_tolerance:
        raise Invalid(
            "InvalidField", f"timestamp: {int(ahead)} s in the future (check the sender's clock)", "timestamp"
        )
    return when


def _safe(text: str) -> str:
    """``text`` with anything but visible ASCII replaced (it goes into an error message)."""
    return "".join(c if "\x20" <= c <= "\x7e" else "?" for c in text)[:80]


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array",
            dict: "an object"}.get(type(value), type(value).__name__)  # fmt: skip
