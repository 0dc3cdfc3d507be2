"""A status change of one Defender XDR incident, as observed on one side or requested inbound.

``origin`` says where it comes from and so where it goes:

* ``servicenow`` -- a ticket changed (reference = the ticket's ``sys_id``, version = its
  ``sys_mod_count``); applied to the Defender incident;
* ``inbound`` -- ``dlpfwd serve`` accepted a request (reference = the request's id, version =
  what the caller sent, e.g. its timestamp); applied to the Defender incident (and the ticket);
* ``defender`` -- the graph_security source saw the incident change (reference = the incident
  id, version = its ``lastUpdateDateTime``); applied to the ticket.

A field left ``None`` is "not part of this change"; ``assigned_to = ""`` unassigns. Enum values
are checked against the Graph v1.0 CSDL (:mod:`forwarder.correlation.incidents`) and kept in
their Graph spelling; :meth:`StatusChange.problems` lists every bad value with its key.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field, fields
from typing import Any

ORIGINS = ("servicenow", "inbound", "defender")
#: Fields a change may carry besides the comment (Graph incident property names in comments).
FIELDS = ("status", "classification", "determination", "assigned_to")
MAX_COMMENT = 30000  # characters of one comment (Graph documents none; Sentinel's limit, to be safe)
MAX_TEXT = 256  # characters of ids, versions and assignees


@dataclass
class StatusChange:
    """One change of one incident; see the module docstring."""

    incident_id: str
    origin: str
    reference: str
    version: str
    status: str | None = None
    classification: str | None = None
    determination: str | None = None
    assigned_to: str | None = None
    comment: str = ""
    observed: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    author: str = ""  # who made it on its side (a ServiceNow user name, the inbound caller), for comments
    #: ServiceNow work notes this change carries ({"id", "author", "time", "text"}); copied to the
    #: incident as one comment, each note once (its id is remembered in the incident's shadow)
    notes: list[dict[str, str]] = field(default_factory=list)

    def values(self) -> dict[str, str]:
        """The fields this change sets (Graph property names: status, classification,
        determination, assignedTo)."""
        out: dict[str, str] = {}
        for name in FIELDS:
            value = getattr(self, name)
            if value is not None:
                out["assignedTo" if name == "assigned_to" else name] = value
        return out

    def problems(self) -> list[str]:
        """Every reason this change cannot be stored or applied, each naming its field."""
        from forwarder.correlation.incidents import (
            CLASSIFICATIONS,
            DETERMINATION_ALIASES,
            DETERMINATIONS,
            STATUSES,
            canonical,
        )
        from forwarder.errors import ConfigError

        found: list[str] = []
        if self.origin not in ORIGINS:
            found.append(f"origin: expected one of {', '.join(ORIGINS)}, got {self.origin!r}")
        for name in ("incident_id", "reference", "version"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                found.append(f"{name}: required (a non-empty string)")
            elif len(value) > MAX_TEXT:
                found.append(f"{name}: at most {MAX_TEXT} characters")
        if isinstance(self.incident_id, str) and self.incident_id and not self.incident_id.replace("-", "").isalnum():
            found.append("incident_id: letters, digits and '-' only")
        for name, allowed, aliases in (
            ("status", STATUSES, None),
            ("classification", CLASSIFICATIONS, None),
            ("determination", DETERMINATIONS, DETERMINATION_ALIASES),
        ):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, str):
                found.append(f"{name}: expected a string")
                continue
            try:
                canonical(value, allowed, name, aliases)
            except ConfigError as exc:
                found.extend(exc.problems)
        if self.assigned_to is not None and (not isinstance(self.assigned_to, str) or len(self.assigned_to) > MAX_TEXT):
            found.append(f"assigned_to: a string of at most {MAX_TEXT} characters")
        if not isinstance(self.comment, str) or len(self.comment) > MAX_COMMENT:
            found.append(f"comment: a string of at most {MAX_COMMENT} characters")
        if not isinstance(self.notes, list) or not all(isinstance(n, dict) for n in self.notes):
            found.append("notes: a list of objects")
        if not self.values() and not self.comment and not self.notes:
            found.append("the change sets nothing (status, classification, determination, assigned_to or comment)")
        return found

    def normalized(self) -> StatusChange:
        """A copy with every enum in its Graph spelling; ValueError listing the problems."""
        from forwarder.correlation.incidents import (
            CLASSIFICATIONS,
            DETERMINATION_ALIASES,
            DETERMINATIONS,
            STATUSES,
            canonical,
        )

        found = self.problems()
        if found:
            raise ValueError("; ".join(found))
        out = StatusChange(**asdict(self))
        if out.status is not None:
            out.status = canonical(out.status, STATUSES, "status")
        if out.classification is not None:
            out.classification = canonical(out.classification, CLASSIFICATIONS, "classification")
        if out.determination is not None:
            out.determination = canonical(out.determination, DETERMINATIONS, "determination", DETERMINATION_ALIASES)
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StatusChange:
        """Strict: unknown keys and missing required keys raise ValueError naming them."""
        if not isinstance(data, dict):
            raise ValueError("a status change is a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown field(s): {', '.join(unknown)}")
        missing = [k for k in ("incident_id", "origin", "reference", "version") if k not in data]
        if missing:
            raise ValueError(f"missing field(s): {', '.join(missing)}")
        return cls(**data)
