"""Where accepted status changes go: the durable status-sync inbox (:mod:`forwarder.sync.inbox`),
behind the small :class:`Inbox` interface the endpoint needs, plus the endpoint's idempotency.

Idempotency: ``changeId`` is remembered (with a digest of the change's content: every field
but the id) in the state store's key-value namespace ``serve:changes`` *after* the inbox holds
the change. The same id with the same content again (a client retry, a replayed signed
request) is accepted without touching the inbox; the same id with other content is refused
(:class:`ChangeIdReused`). A crash between the two writes is harmless: the retry's change is
a repeat the inbox recognises (same origin ``inbound``, reference = changeId, version =
timestamp) and the id is then remembered. Submissions are serialised in the process, so two
identical concurrent requests enqueue once.

Remembered ids are forgotten ``[serve] change_id_retention`` seconds (7 days) after they were
accepted (:func:`purge_change_ids`, run by ``dlpfwd serve`` every hour), so the namespace does
not grow for ever. The retention is longer than the replay window, so a signed request can
never be replayed after its id is forgotten; an id reused after that is a new change.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from forwarder.serve.request import StatusChangeRequest

#: State-store key-value namespace of the change ids this endpoint accepted.
SEEN_NAMESPACE = "serve:changes"


class ChangeIdReused(Exception):
    """The change id was accepted before for a different change (409)."""


class Inbox(Protocol):
    """What the endpoint needs from the status-sync inbox."""

    def submit(self, change: StatusChangeRequest) -> bool:
        """Store ``change`` durably before returning; ``True`` when new, ``False`` when this
        change id was already accepted with the same content. Raises :class:`ChangeIdReused`,
        or any other exception when it cannot be stored (the endpoint answers 503)."""
        ...

    def healthy(self) -> bool:
        """Whether the store answers (``GET /healthz``)."""
        ...


Enqueue = Callable[[Any, StatusChangeRequest], Any]


def to_status_change(change: StatusChangeRequest) -> Any:
    """The inbox record of an accepted request: origin ``inbound``, reference = ``changeId``,
    version and observed = the request's ``timestamp``, author = its ``source``."""
    from forwarder.schema import iso_utc
    from forwarder.sync.change import StatusChange

    when = iso_utc(change.timestamp)
    return StatusChange(
        incident_id=change.incident_id,
        origin="inbound",
        reference=change.change_id,
        version=when,
        status=change.status,
        classification=change.classification,
        determination=change.determination,
        assigned_to=change.assigned_to,
        comment=change.comment or "",
        observed=when,
        author=change.source or "dlpfwd serve",
    )


def sync_enqueue(store: Any, change: StatusChangeRequest) -> bool:
    """Hand ``change`` to the status-sync inbox (:func:`forwarder.sync.inbox.enqueue`, durable
    when it returns; ``False`` when it held this change already)."""
    from forwarder.sync.inbox import enqueue

    return bool(enqueue(store, to_status_change(change)))


class StoreInbox:
    """:class:`Inbox` over a state store (``forwarder.state.open_store``) and an enqueue function."""

    def __init__(self, store: Any, enqueue: Enqueue = sync_enqueue) -> None:
        self.store = store
        self._enqueue = enqueue
        self._lock = threading.Lock()

    def submit(self, change: StatusChangeRequest) -> bool:
        digest = change.digest()
        with self._lock:
            seen = self.store.kv_get(SEEN_NAMESPACE, change.change_id)
            if seen is not None:
                if seen.get("digest") != digest:
                    raise ChangeIdReused(change.change_id)
                return False
            added = self._enqueue(self.store, change)  # a repeat after a crash here is ignored by the inbox
            self.store.kv_put(
                SEEN_NAMESPACE,
                change.change_id,
                {"digest": digest, "incident": change.incident_id, "time": time.time()},
            )
            return added is not False  # False: the inbox held it (its id was forgotten, or a crash)

    def healthy(self) -> bool:
        try:
            self.store.kv_get(SEEN_NAMESPACE, "")
        except Exception:  # noqa: BLE001 - any store failure means unhealthy
            return False
        return True


def purge_change_ids(store: Any, retention: float, now: float | None = None, batch: int = 1000) -> int:
    """Forget the change ids accepted more than ``retention`` seconds before ``now``; returns
    how many. Entries without a readable time are forgotten too (they cannot be aged)."""
    import orjson

    before = (time.time() if now is None else now) - retention
    removed, after = 0, ""
    while True:
        with store.transaction() as tx:
            rows = tx.execute(
                "SELECT key, value FROM kv WHERE ns = ? AND key > ? ORDER BY key LIMIT ?",
                (SEEN_NAMESPACE, after, batch),
            ).fetchall()
            old = []
            for key, raw in rows:
                try:
                    when = float(orjson.loads(raw).get("time", 0.0))
                except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                    when = 0.0
                if when < before:
                    old.append((SEEN_NAMESPACE, key))
            tx.executemany("DELETE FROM kv WHERE ns = ? AND key = ?", old)
        removed += len(old)
        if len(rows) < batch:
            return removed
        after = rows[-1][0]
