"""Applies pending inbox changes: reads both sides live, plans with
:func:`forwarder.sync.reconcile.plan`, writes Defender (comment, then PATCH) and the ticket,
then settles the change and stores the incident's new shadow in ONE transaction.

Loop-freedom, in three layers:

1. **versions**: the shadow remembers the version each sync write produced (Defender's
   ``lastUpdateDateTime`` from the PATCH answer, the ticket's ``sys_mod_count`` from its PATCH
   answer); a change at or below that version is our own write coming back -> skipped (echo);
2. **values**: a change whose side still holds the shadow's values changed nothing we sync
   (e.g. the sink refreshed the description, a correlation comment touched the incident) ->
   skipped; two sides that agree get no write at all;
3. **markers**: comments and work notes dlpfwd writes start with ``dlpfwd:`` and are never
   copied back; a comment carries ``[dlpfwd-sync:<origin>:<reference>@<version>]`` and is not
   posted again when the live incident already shows it (a crash after the POST).

A crash anywhere before the settling transaction re-applies the change at the next start: the
PATCHes are computed against live values (nothing left to write) and the comment marker is
found, so nothing is written twice; nothing is lost because the change stays pending.

Errors: RetriableError -> deferred (``Retry-After`` or exponential back-off); SyncRejected ->
dead-lettered; FatalError (401/403, missing permission) propagates: the sync stops.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from forwarder.errors import RetriableError
from forwarder.schema import epoch_seconds
from forwarder.sync import inbox
from forwarder.sync.change import StatusChange
from forwarder.sync.defender import PREFIX, DefenderIncidents
from forwarder.sync.peer import SyncRejected, TicketPeer, canonical_values, defender_values, same
from forwarder.sync.reconcile import DEFENDER, Plan, next_shadow, plan

log = logging.getLogger("dlpfwd.sync")
MAX_NOTES_REMEMBERED = 200
MAX_BACKOFF = 900.0


@dataclass
class PassResult:
    """Counts of one pass (also added to the state store's sync totals)."""

    seen: int = 0  # changes observed on either side (``run_once`` only; the inbox counts its own)
    applied: int = 0
    skipped_echo: int = 0
    skipped_unchanged: int = 0
    conflicts: int = 0
    deferred: int = 0
    dead_lettered: int = 0
    defender_writes: int = 0
    ticket_writes: int = 0
    planned: list[str] = field(default_factory=list)  # dry run: what would be written

    def add(self, other: PassResult) -> None:
        for name in self.__dataclass_fields__:
            if name != "planned":
                setattr(self, name, getattr(self, name) + getattr(other, name))
        self.planned.extend(other.planned)

    def counts(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "planned" and getattr(self, k)}


def marker(change: StatusChange) -> str:
    return f"[dlpfwd-sync:{change.origin}:{change.reference}@{change.version}]"


def is_echo(change: StatusChange, shadow: dict[str, Any]) -> bool:
    """True when ``change`` is at or below the version our own last write produced on its side."""
    if change.origin == "servicenow" and shadow.get("ticket_version"):
        try:
            return int(change.version) <= int(shadow["ticket_version"])
        except ValueError:
            return False
    if change.origin == "defender" and shadow.get("defender_version"):
        ours, seen = epoch_seconds(shadow["defender_version"]), epoch_seconds(change.version)
        return ours is not None and seen is not None and seen <= ours
    return False


def unchanged(change: StatusChange, shadow: dict[str, Any], side: dict[str, str] | None) -> bool:
    """True when the changed side still holds the shadow's values and there is nothing to copy."""
    if change.origin == "inbound" or change.comment or change.notes or side is None:
        return False
    key = "ticket" if change.origin == "servicenow" else "defender"
    old = shadow.get(key)
    if not isinstance(old, dict) or not old:
        return False
    return all(same(g, side.get(g, ""), old.get(g)) for g in old)


class Applier:
    """Applies due inbox changes through ``defender`` and ``peer``; see the module docstring."""

    def __init__(
        self,
        store: Any,
        defender: DefenderIncidents | None,
        peer: TicketPeer,
        ticket_wins: set[str],
        origins: tuple[str, ...] | None = None,
    ) -> None:
        self.store = store
        self.defender = defender
        self.peer = peer
        self.ticket_wins = ticket_wins
        self.origins = origins  # None: every origin; else only these (the rest stay pending)

    def run(self, dry_run: bool = False, limit: int = 100) -> PassResult:
        """Apply what is due (each incident's oldest pending change, repeatedly, up to ``limit``)."""
        total = PassResult()
        done: set[int] = set()
        for _ in range(limit):
            items = [i for i in inbox.due(self.store, limit=limit, origins=self.origins) if i.id not in done]
            if not items:
                break
            for item in items:
                done.add(item.id)
                total.add(self.apply(item, dry_run))
            if dry_run:
                break  # nothing was settled: the same items would come again
        return total

    def apply(self, item: inbox.InboxItem, dry_run: bool = False) -> PassResult:
        result = PassResult()
        change = item.change
        shadow = inbox.shadow(self.store, change.incident_id)
        if is_echo(change, shadow):
            result.skipped_echo += 1
            if not dry_run:
                inbox.finish(self.store, item, inbox.SKIPPED, "echo of our own write", counts=result.counts())
            return result
        try:
            assert self.defender is not None
            incident = self.defender.get(change.incident_id)
            defender = defender_values(incident)
            view = self.peer.ticket(change.incident_id)
            ticket = view.raw if view is not None else None
            side = ticket if change.origin == "servicenow" else defender
            if change.origin == "defender":
                # what the source saw; the live values may already be newer
                side = {k: v for k, v in defender.items()}
            if unchanged(change, shadow, side):
                result.skipped_unchanged += 1
                if not dry_run:
                    inbox.finish(self.store, item, inbox.SKIPPED, "nothing synced changed", counts=result.counts())
                return result
            base = shadow if shadow.get("defender") else (self.peer.baseline(change.incident_id) or {})
            if base and base is not shadow:
                base = {**base, "defender": canonical_values(base.get("defender", {}))}
            decided = plan(change, defender, ticket, base, self.peer.to_defender, self.peer.to_ticket, self.ticket_wins)
            comment = self._comment(change, shadow, incident, view.label if view is not None else change.reference)
            for c in decided.conflicts:
                result.conflicts += 1
                log.warning(
                    "sync: conflict on incident %s (%s): ticket says %r, Defender says %r; %s wins",
                    change.incident_id,
                    c.group,
                    c.ticket,
                    c.defender,
                    c.winner,
                )
            if dry_run:
                result.planned.append(self._describe(change, decided, comment, view.label if view else ""))
                return result
            new_shadow = self._carry_out(change, decided, comment, incident, defender, view, shadow, result)
        except RetriableError as exc:
            wait = max(exc.retry_after or 0.0, min(MAX_BACKOFF, 5.0 * 2**item.attempts))
            log.warning("sync: incident %s: %s; retrying in %.0f s", change.incident_id, exc, wait)
            result.deferred += 1
            if not dry_run:
                inbox.defer(self.store, item, wait, str(exc))
            return result
        except SyncRejected as exc:
            log.error("sync: incident %s: change from %s dead-lettered: %s", change.incident_id, change.origin, exc)
            result.dead_lettered += 1
            if not dry_run:
                inbox.finish(self.store, item, inbox.DEAD, str(exc), counts=result.counts())
            return result
        wrote = result.defender_writes or result.ticket_writes
        result.applied += 1 if wrote else 0
        result.skipped_unchanged += 0 if wrote else 1
        inbox.finish(
            self.store,
            item,
            inbox.APPLIED if wrote else inbox.SKIPPED,
            "" if wrote else "both sides already agree",
            shadow=new_shadow,
            counts=result.counts(),
        )
        return result

    # ------------------------------------------------------------------ helpers

    def _comment(self, change: StatusChange, shadow: dict[str, Any], incident: dict[str, Any], label: str) -> str:
        """The comment to post for ``change`` ('' when none or already there)."""
        seen = set(shadow.get("notes", []))
        notes = [n for n in change.notes if n.get("id") not in seen]
        lines: list[str] = []
        if change.comment:
            lines.append(change.comment)
        for n in notes:
            who = f" by {n['author']}" if n.get("author") else ""
            when = f" at {n['time']} UTC" if n.get("time") else ""
            lines.append(f"Work note{who}{when}: {n.get('text', '')}")
        if not lines:
            return ""
        where = f"ServiceNow ticket {label}" if change.origin == "servicenow" else f"{change.origin} request"
        text = f"{PREFIX} from {where}" + (f" ({change.author})" if change.author else "") + "\n"
        text += "\n".join(lines) + "\n" + marker(change)
        mark = marker(change)
        for existing in incident.get("comments") or []:
            if isinstance(existing, dict) and mark in str(existing.get("comment") or ""):
                return ""  # posted before a crash
        return text

    def _carry_out(
        self,
        change: StatusChange,
        decided: Plan,
        comment: str,
        incident: dict[str, Any],
        defender: dict[str, str],
        view: Any,
        shadow: dict[str, Any],
        result: PassResult,
    ) -> dict[str, Any]:
        assert self.defender is not None
        new: dict[str, Any] = dict(shadow)
        if comment:
            self.defender.comment(change.incident_id, comment)
            result.defender_writes += 1
        if decided.defender:
            after = self.defender.update(change.incident_id, decided.defender)
            result.defender_writes += 1
            new["defender_version"] = str(after.get("lastUpdateDateTime") or incident.get("lastUpdateDateTime") or "")
            log.info("sync: incident %s updated from %s: %s", change.incident_id, change.origin, decided.defender)
        written: dict[str, str] = {}
        if decided.ticket and view is not None:
            note = _note(change, decided, defender)
            version, written = self.peer.write(view, decided.ticket, {**defender, **decided.defender}, note)
            result.ticket_writes += 1
            new["ticket_version"] = version
            log.info("sync: ticket %s updated from Defender: %s", view.label, written)
        noted = list(shadow.get("notes", [])) + [n["id"] for n in change.notes if n.get("id")]
        new["notes"] = noted[-MAX_NOTES_REMEMBERED:]
        return next_shadow(new, defender, view.raw if view is not None else None, decided, written)

    def _describe(self, change: StatusChange, decided: Plan, comment: str, label: str) -> str:
        parts = [f"incident {change.incident_id} ({change.origin} {change.reference}@{change.version}):"]
        if decided.defender:
            parts.append(f"Defender <- {decided.defender}")
        if decided.ticket:
            parts.append(f"ticket {label} <- {decided.ticket}")
        if comment:
            parts.append(f"comment {len(comment)} chars")
        for c in decided.conflicts:
            parts.append(f"conflict on {c.group} (ticket {c.ticket!r}, Defender {c.defender!r}: {c.winner} wins)")
        if len(parts) == 1:
            parts.append("nothing to write")
        return " ".join(parts)


def _note(change: StatusChange, decided: Plan, defender: dict[str, str]) -> str:
    """The ticket work note describing a write made because of Defender."""
    changed = ", ".join(f"{g} {defender.get(g, '')!r}" for g in decided.ticket)
    why = "conflict resolved for Defender" if any(c.winner == DEFENDER for c in decided.conflicts) else "changed"
    origin = "in Defender XDR" if change.origin == "defender" else f"by {change.origin} request {change.reference}"
    return f"{PREFIX} Defender XDR incident {change.incident_id} {why} {origin}: {changed}"
