"""The per-field decision of the sync: who changed what since both sides last agreed, and what
each side must be told. Pure functions; :mod:`forwarder.sync.applier` does the I/O.

The *shadow* of an incident holds the values both sides agreed on after the last sync, each in
its own vocabulary (``{"defender": {group: value}, "ticket": {group: value}}``, plus the
versions the sync's own writes produced). For each group (:data:`forwarder.sync.peer.GROUPS`):

* a side *changed* when its value differs from its shadow value and, for the ticket, also
  means something else in Defender's vocabulary (so a lossy mapping -- On Hold and In
  Progress both mean inProgress -- never looks like a change);
* the two sides *agree* when the ticket value, mapped to Defender's vocabulary, equals
  Defender's value: nothing is written (this is what ends every exchange: no ping-pong);
* only one side changed: it wins; both changed to different values: a **conflict**, resolved
  by the rule (``ticket_wins``: by default the ticket wins status and classification, Defender
  wins the assignee) and logged;
* no shadow yet (a ticket made before the sync was on, or never synced): the values recorded
  when the ticket was created serve as the shadow (the sink records them); without those,
  differing fields resolve by the conflict rule.

An ``inbound`` change (``dlpfwd serve``) is an explicit request: its fields are written to
Defender whatever the ticket says, and the ticket follows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from forwarder.sync.change import StatusChange
from forwarder.sync.peer import GROUPS, same

TICKET, DEFENDER = "ticket", "defender"


@dataclass
class Conflict:
    """Both sides changed ``group`` to different values since the last sync."""

    group: str
    ticket: str | None  # the ticket's value in Defender's vocabulary
    defender: str
    winner: str  # TICKET or DEFENDER


@dataclass
class Plan:
    """What to write: Defender values and ticket values per group, and the conflicts seen."""

    defender: dict[str, str] = field(default_factory=dict)
    ticket: dict[str, str] = field(default_factory=dict)
    conflicts: list[Conflict] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.defender and not self.ticket


def requested(change: StatusChange, current: dict[str, str]) -> dict[str, str]:
    """The Defender group values an inbound change asks for."""
    out: dict[str, str] = {}
    if change.status is not None:
        out["status"] = change.status
    if change.classification is not None or change.determination is not None:
        cls, _, det = current.get("classification", "unknown/unknown").partition("/")
        if change.classification is not None:
            cls = change.classification
            det = change.determination if change.determination is not None else "unknown"
        elif change.determination is not None:
            det = change.determination
        out["classification"] = f"{cls}/{det}"
    if change.assigned_to is not None:
        out["assignedTo"] = change.assigned_to
    return out


def plan(
    change: StatusChange,
    defender: dict[str, str],
    ticket: dict[str, str] | None,
    shadow: dict[str, dict[str, str]],
    to_defender: Callable[[dict[str, str]], dict[str, str | None]],
    to_ticket: Callable[[dict[str, str]], dict[str, str | None]],
    ticket_wins: set[str],
) -> Plan:
    """Decide the writes for ``change`` given the live values of both sides (``ticket`` None:
    the incident has no ticket) and the incident's shadow; see the module docstring."""
    result = Plan()
    effective = dict(defender)
    if change.origin == "inbound":
        for group, value in requested(change, defender).items():
            if not same(group, value, defender.get(group)):
                result.defender[group] = value
                effective[group] = value
    if ticket is None:
        return result
    mapped = to_defender(ticket)
    wanted = to_ticket(effective)
    old_d, old_t = shadow.get("defender"), shadow.get("ticket")
    old_mapped = to_defender(old_t) if old_t else {}
    for group in GROUPS:
        d, t, td = effective.get(group, ""), ticket.get(group, ""), mapped.get(group)
        if td is not None and same(group, td, d):
            continue  # the two sides agree
        if change.origin == "inbound" and group in result.defender:
            d_changed, t_changed = True, False  # the request wins; the ticket follows
        elif old_d is not None and old_t is not None and group in old_d and group in old_t:
            d_changed = not same(group, d, old_d[group])
            # in Defender's terms: On Hold -> In Progress (both inProgress) is no change
            t_changed = t != old_t[group] and not same(group, td, old_mapped.get(group))
        else:
            d_changed = t_changed = True  # never synced: the conflict rule decides
        if t_changed and td is None:
            t_changed = False  # the ticket's value means nothing in Defender (unmapped, not resolved)
        if d_changed and t_changed:
            winner = TICKET if group in ticket_wins else DEFENDER
            result.conflicts.append(Conflict(group, td, d, winner))
        elif t_changed:
            winner = TICKET
        elif d_changed:
            winner = DEFENDER
        else:
            continue
        if winner == TICKET and td is not None:
            result.defender[group] = td
        elif winner == DEFENDER:
            target = wanted.get(group)
            if target is not None and target != t:
                result.ticket[group] = target
    return result


def next_shadow(
    previous: dict[str, object],
    defender: dict[str, str],
    ticket: dict[str, str] | None,
    result: Plan,
    written: dict[str, str],
) -> dict[str, object]:
    """The shadow after ``result`` was carried out (``written``: the ticket values really written)."""
    out = dict(previous)
    out["defender"] = {**defender, **result.defender}
    if ticket is not None:
        out["ticket"] = {**ticket, **written}
    return out
