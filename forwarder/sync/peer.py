"""What the sync needs from a ticket system (the ``servicenow`` sink implements it) and from
Defender XDR, in one vocabulary: three *groups* of values per incident.

=================  ==================================  ============================================
group              Defender value                      ticket value (ServiceNow)
=================  ==================================  ============================================
``status``         ``status`` (active, inProgress...)  ``state`` (1, 2, 6... / SIR 10, 16, 3...)
``classification`` ``classification/determination``    ``close_code`` (only meaningful when resolved)
``assignedTo``     ``assignedTo`` (UPN)                 ``assigned_to`` as its user's e-mail
=================  ==================================  ============================================

A peer translates between them (:meth:`TicketPeer.to_defender`, :meth:`TicketPeer.to_ticket`,
``None`` meaning "no opinion": an unmapped state, a close code on an open ticket...), reads
tickets changed since a cursor and single tickets, and writes ticket values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from forwarder.errors import ForwarderError

GROUPS = ("status", "classification", "assignedTo")


class SyncRejected(ForwarderError):
    """A permanent refusal (HTTP 400/404/422...): the change is dead-lettered, not retried."""


@dataclass
class TicketView:
    """One ticket as the sync sees it."""

    incident_id: str
    key: str  # the ticket's id (ServiceNow sys_id)
    label: str  # what people call it (INC0010001)
    version: str  # a number that grows with every write (sys_mod_count)
    raw: dict[str, str]  # group -> ticket value
    updated_by: str = ""
    updated_on: str = ""
    notes: list[dict[str, str]] = field(default_factory=list)  # analysts' notes: id, author, time, text


class TicketPeer(Protocol):
    """The ticket side of the sync; see the module docstring."""

    name: str

    def changes(self, cursor: dict[str, Any] | None) -> tuple[list[TicketView], dict[str, Any]]:
        """Tickets this deployment owns changed since ``cursor`` (with a look-back), each once at
        its latest version, with the analysts' notes since then; and the next cursor."""
        ...

    def ticket(self, incident_id: str) -> TicketView | None:
        """The live ticket of ``incident_id``; None when there is none (or it was deleted)."""
        ...

    def baseline(self, incident_id: str) -> dict[str, dict[str, str]] | None:
        """``{"defender": ..., "ticket": ...}`` as they were when the ticket was created, if known."""
        ...

    def to_defender(self, raw: dict[str, str]) -> dict[str, str | None]:
        """Ticket values -> Defender values per group (None: no opinion)."""
        ...

    def to_ticket(self, defender: dict[str, str]) -> dict[str, str | None]:
        """Defender values -> ticket values per group (None: leave the ticket alone)."""
        ...

    def write(
        self, view: TicketView, values: dict[str, str], defender: dict[str, str], note: str
    ) -> tuple[str, dict[str, str]]:
        """Write ``values`` (group -> ticket value) and the work note ``note``; returns the new
        version and the values really written (an assignee without a ticket-side user is not)."""
        ...

    def close(self) -> None: ...


def defender_values(incident: dict[str, Any]) -> dict[str, str]:
    """The group values of a Graph incident (enums case-insensitively in camelCase)."""

    def enum(name: str) -> str:
        value = str(incident.get(name) or "")
        value = value[:1].lower() + value[1:]
        return "unknown" if value in ("", "unknownFutureValue") else value

    return {
        "status": enum("status"),
        "classification": f"{enum('classification')}/{enum('determination')}",
        "assignedTo": str(incident.get("assignedTo") or ""),
    }


def canonical_values(values: dict[str, str]) -> dict[str, str]:
    """Group values with the determination in the Graph v1.0 spelling. Events now carry it, but
    observations and ticket baselines recorded by an earlier version (or from events spooled
    before the upgrade) may hold the update page's older spellings: clean, compromisedUser,
    insufficientData, confirmedUserActivity."""
    from forwarder.correlation.incidents import DETERMINATION_ALIASES

    cls, sep, det = values.get("classification", "").partition("/")
    if not sep:
        return dict(values)
    return {**values, "classification": f"{cls}/{DETERMINATION_ALIASES.get(det.lower(), det)}"}


def same(group: str, a: str | None, b: str | None) -> bool:
    """Whether two values of ``group`` agree (assignees compare case-insensitively)."""
    if a is None or b is None:
        return a is b
    if group == "assignedTo":
        return a.casefold() == b.casefold()
    return a == b
