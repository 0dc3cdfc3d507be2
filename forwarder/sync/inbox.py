"""The durable sync inbox: a table of pending :class:`StatusChange` s in the forwarder's state
store (``state.sqlite3``), idempotent on (origin, reference, version).

::

    from forwarder.sync.inbox import enqueue
    accepted = enqueue(store, change)     # True: stored; False: seen before (a repeat)

``store`` is the :class:`forwarder.state.sqlite.SqliteStateStore` of the state directory (the
same one ``dlpfwd run`` uses; SQLite serialises the writers of several processes). The change
is validated first (:meth:`StatusChange.normalized`: ValueError naming every bad field) and
stored in its Graph spelling. Once :func:`enqueue` returns, the change survives a crash; the
applier (:mod:`forwarder.sync.applier`) applies it and marks it applied in the same
transaction as the *shadow* (the values both sides last agreed on, see
:mod:`forwarder.sync.reconcile`), so a kill -9 at any point neither loses nor repeats it.

The tables (``sync_inbox``, ``sync_shadow``) are created the first time they are needed and
reached through the state-store transaction's SQL methods
(:meth:`forwarder.state.base.Transaction.execute`); nothing in :mod:`forwarder.state` changes
for them.
Rows settled (applied, skipped, dead) are kept ``RETENTION`` seconds so that a repeat of the
same (origin, reference, version) is still recognised, then purged.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson

from forwarder.sync.change import StatusChange

PENDING, APPLIED, SKIPPED, DEAD = "pending", "applied", "skipped", "dead"
RETENTION = 14 * 86400.0
TOTALS_SCOPE = "status-sync"

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS sync_inbox (id INTEGER PRIMARY KEY AUTOINCREMENT,
    origin TEXT NOT NULL, reference TEXT NOT NULL, version TEXT NOT NULL, incident TEXT NOT NULL,
    body BLOB NOT NULL, state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0, created REAL NOT NULL, done REAL, detail TEXT NOT NULL DEFAULT '',
    UNIQUE (origin, reference, version))""",
    "CREATE INDEX IF NOT EXISTS sync_inbox_pending ON sync_inbox (state, incident, id)",
    "CREATE TABLE IF NOT EXISTS sync_shadow (incident TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
)
_READY: weakref.WeakSet[Any] = weakref.WeakSet()  # stores whose tables exist


@dataclass
class InboxItem:
    """One pending change as read back."""

    id: int
    change: StatusChange
    attempts: int


@contextmanager
def transaction(store: Any) -> Iterator[Any]:
    """A state-store transaction with the sync tables present (SQL through :meth:`Transaction.execute`)."""
    with store.transaction() as tx:
        if store not in _READY:
            for statement in _SCHEMA:
                tx.execute(statement)
        yield tx
    _READY.add(store)


def enqueue(store: Any, change: StatusChange) -> bool:
    """Store ``change`` durably; False when (origin, reference, version) was stored before.
    ValueError (naming every bad field) when the change is invalid."""
    with transaction(store) as tx:
        return enqueue_in(tx, change)


def enqueue_in(tx: Any, change: StatusChange, now: float | None = None) -> bool:
    """:func:`enqueue` inside a caller's transaction (e.g. together with a read cursor)."""
    clean = change.normalized()
    cursor = tx.execute(
        "INSERT OR IGNORE INTO sync_inbox (origin, reference, version, incident, body, created) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (
            clean.origin,
            clean.reference,
            clean.version,
            clean.incident_id,
            orjson.dumps(clean.to_dict()),
            time.time() if now is None else now,
        ),
    )
    added = cursor.rowcount == 1
    tx.add_totals(TOTALS_SCOPE, {"seen": 1} if added else {"repeats": 1})
    return added


def due(
    store: Any, now: float | None = None, limit: int = 100, origins: tuple[str, ...] | None = None
) -> list[InboxItem]:
    """The oldest pending change of each incident whose retry time has come (changes of one
    incident are applied in the order they were stored: a later one waits for an earlier one).
    ``origins``: only changes of these origins (the others stay pending for another applier)."""
    now = time.time() if now is None else now
    only = ""
    if origins is not None:
        only = " AND origin IN (" + ", ".join("?" for _ in origins) + ")"
    with transaction(store) as tx:
        rows = tx.execute(
            f"""SELECT i.id, i.body, i.attempts, i.next_at FROM sync_inbox i
               JOIN (SELECT min(id) AS id FROM sync_inbox WHERE state = 'pending'{only} GROUP BY incident) f
               ON f.id = i.id ORDER BY i.id""",  # noqa: S608 - only placeholders are formatted in
            tuple(origins or ()),
        ).fetchall()
    out = []
    for row_id, body, attempts, next_at in rows:
        if next_at > now:
            continue
        out.append(InboxItem(row_id, StatusChange.from_dict(orjson.loads(body)), attempts))
        if len(out) >= limit:
            break
    return out


def finish(
    store: Any,
    item: InboxItem,
    state: str,
    detail: str = "",
    shadow: dict[str, Any] | None = None,
    counts: dict[str, int] | None = None,
) -> None:
    """Settle ``item`` (APPLIED, SKIPPED or DEAD) and, in the same transaction, store the
    incident's new ``shadow`` and add ``counts`` to the sync totals."""
    with transaction(store) as tx:
        tx.execute(
            "UPDATE sync_inbox SET state = ?, done = ?, detail = ?, attempts = attempts + 1 WHERE id = ?",
            (state, time.time(), detail[:1000], item.id),
        )
        if shadow is not None:
            put_shadow(tx, item.change.incident_id, shadow)
        if counts:
            tx.add_totals(TOTALS_SCOPE, counts)


def defer(store: Any, item: InboxItem, wait: float, reason: str) -> None:
    """Retry ``item`` after ``wait`` seconds (the incident's later changes wait too)."""
    with transaction(store) as tx:
        tx.execute(
            "UPDATE sync_inbox SET attempts = attempts + 1, next_at = ?, detail = ? WHERE id = ?",
            (time.time() + wait, reason[:1000], item.id),
        )
        tx.add_totals(TOTALS_SCOPE, {"deferred": 1})


def shadow(store: Any, incident: str) -> dict[str, Any]:
    """The shadow of ``incident`` (empty when it was never synced)."""
    with transaction(store) as tx:
        row = tx.execute("SELECT value FROM sync_shadow WHERE incident = ?", (incident,)).fetchone()
    value: dict[str, Any] = orjson.loads(row[0]) if row else {}
    return value


def put_shadow(tx: Any, incident: str, value: dict[str, Any]) -> None:
    tx.execute("INSERT OR REPLACE INTO sync_shadow (incident, value) VALUES (?, ?)", (incident, orjson.dumps(value)))


def kv_with_prefix(tx: Any, namespace: str, prefix: str) -> list[tuple[str, bytes]]:
    """(key, raw value) of the state-store key-values in ``namespace`` whose key starts with
    ``prefix`` (a prefix ending in ``:``, as the sink's ``observed:`` records)."""
    rows = tx.execute(
        "SELECT key, value FROM kv WHERE ns = ? AND key >= ? AND key < ?",
        (namespace, prefix, prefix[:-1] + ";"),
    ).fetchall()
    return [(key, raw) for key, raw in rows]


def kv_delete_unchanged(tx: Any, namespace: str, rows: list[tuple[str, bytes]]) -> None:
    """Delete each (key, raw value) of ``namespace`` that still holds that value (a newer one
    written meanwhile stays)."""
    for key, raw in rows:
        tx.execute("DELETE FROM kv WHERE ns = ? AND key = ? AND value = ?", (namespace, key, raw))


def purge(store: Any, before: float | None = None) -> int:
    """Forget settled changes older than ``before`` (default: :data:`RETENTION` ago)."""
    before = time.time() - RETENTION if before is None else before
    with transaction(store) as tx:
        cursor = tx.execute("DELETE FROM sync_inbox WHERE state != 'pending' AND done < ?", (before,))
        return int(cursor.rowcount)


def stats(store: Any) -> dict[str, int]:
    """Rows by state plus the running totals (seen, repeats, applied, skipped_echo, conflicts,
    dead_lettered, deferred...)."""
    with transaction(store) as tx:
        out = {s: 0 for s in (PENDING, APPLIED, SKIPPED, DEAD)}
        for state, n in tx.execute("SELECT state, count(*) FROM sync_inbox GROUP BY state"):
            out[state] = n
        for name, value in tx.execute("SELECT name, value FROM totals WHERE scope = ?", (TOTALS_SCOPE,)):
            out[f"total_{name}"] = value
    return out


def dead(store: Any, limit: int = 100) -> list[tuple[int, StatusChange, str]]:
    """Dead-lettered changes (id, change, reason), newest first."""
    with transaction(store) as tx:
        rows = tx.execute(
            "SELECT id, body, detail FROM sync_inbox WHERE state = 'dead' ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
    return [(r[0], StatusChange.from_dict(orjson.loads(r[1])), r[2]) for r in rows]


def summary(store: Any) -> dict[str, int] | None:
    """:func:`stats` for ``dlpfwd state``; None when the sync never ran (its tables do not
    exist: nothing is created by this read)."""
    with store.transaction() as tx:
        found = tx.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sync_inbox'").fetchone()
    return stats(store) if found else None


def render(s: dict[str, int]) -> str:
    """The ``dlpfwd state`` line."""
    return (
        f"status sync: {s.get('total_seen', 0)} change(s) seen, {s.get('total_applied', 0)} applied, "
        f"{s.get('total_skipped_echo', 0)} skipped as echo, {s.get('total_skipped_unchanged', 0)} unchanged, "
        f"{s.get('total_conflicts', 0)} conflict(s), {s.get('total_deferred', 0)} deferral(s), "
        f"{s.get('dead', 0)} dead-lettered, {s.get('pending', 0)} pending"
    )
