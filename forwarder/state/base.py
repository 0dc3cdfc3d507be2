"""The state store interface (:class:`StateStore`) and the records it returns.

Contract, whatever the backend:

* Everything written inside one :meth:`StateStore.transaction` becomes durable together or
  not at all (spool appends, ledger counts, dedup keys, the source cursor).
* Spool entry ids grow monotonically per sink and are never reused, so a drainer can page
  through a spool with ``id > last``.
* Nothing at start-up scans a spool: depths are kept as counters beside the spools.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from forwarder.sink import Entry

_PAYLOAD: Any = Entry.__dict__["payload"]  # Entry's slot; SpoolRow wraps it in a lazy property


class SpoolRow(Entry):
    """One spooled entry as read back: an :class:`forwarder.sink.Entry` (handed to the sink as
    is) that also knows its ledger unit reference.

    Rows read from a spool segment (:meth:`in_segment`) keep a reference to the segment's
    buffer and copy their own bytes out only when ``payload`` is first asked for: a sink that
    joins :meth:`payload_view` s (the file sink) never copies each event."""

    __slots__ = ("unit", "_size", "_buf", "_start")
    unit: int
    _size: int
    _buf: bytes | None
    _start: int

    def __init__(self, id: int, payload: bytes, unit: int = 0, attempts: int = 0) -> None:
        self.id = id
        _PAYLOAD.__set__(self, payload)
        self.attempts = attempts
        self._data = None
        self._event = None
        self.unit = unit
        self._size = len(payload)
        self._buf = None
        self._start = 0

    @classmethod
    def in_segment(cls, id: int, buf: bytes, start: int, end: int, unit: int, attempts: int) -> SpoolRow:
        """The entry ``buf[start:end]`` of a segment, not copied yet."""
        row = cls.__new__(cls)
        row.id = id
        row.attempts = attempts
        row._data = None
        row._event = None
        row.unit = unit
        row._size = end - start
        row._buf = buf
        row._start = start
        return row

    @property
    def size(self) -> int:
        return self._size

    @property
    def payload(self) -> bytes:
        try:
            value: bytes = _PAYLOAD.__get__(self, SpoolRow)
        except AttributeError:
            assert self._buf is not None
            value = self._buf[self._start : self._start + self._size]
            _PAYLOAD.__set__(self, value)
        return value

    @payload.setter
    def payload(self, value: bytes) -> None:
        _PAYLOAD.__set__(self, value)
        self._size = len(value)
        self._buf = None

    def payload_view(self) -> memoryview:
        if self._buf is None:
            return memoryview(self.payload)
        return memoryview(self._buf)[self._start : self._start + self._size]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SpoolRow):
            return NotImplemented
        return (self.id, self.payload, self.unit, self.attempts) == (
            other.id,
            other.payload,
            other.unit,
            other.attempts,
        )

    __hash__ = Entry.__hash__


@dataclass(slots=True)
class DeadLetter:
    """An entry a sink rejected for good, with the reason."""

    id: int
    sink: str
    payload: bytes
    reason: str
    time: float
    attempts: int


@dataclass(slots=True)
class Quarantined:
    """A source record that could not be normalized, kept with its raw bytes."""

    id: int
    source: str
    kind: str
    raw: bytes
    reason: str
    time: float
    unit: str = ""  # the ledger unit it came from


@dataclass(slots=True)
class LedgerRow:
    """One ledger unit with the host's counts; ``sinks`` maps sink -> per-sink counts."""

    source: str
    unit: str
    kind: str
    status: str
    listed: int
    fetched: int
    parsed: int
    spooled: int
    quarantined: int
    duplicates: int
    created: str
    expires: str
    detail: str
    first_seen: float
    updated: float
    sinks: dict[str, dict[str, int]] = field(default_factory=dict)


class Transaction(Protocol):
    """Operations available inside one atomic write transaction."""

    def seen_keys(self, keys: Sequence[str], since: float) -> set[str]:
        """The subset of ``keys`` remembered at or after ``since`` (epoch seconds)."""
        ...

    def remember_keys(self, keys: Sequence[str], now: float) -> None: ...

    def unit_refs(self, source: str, unit_ids: Sequence[str], now: float) -> dict[str, int]:
        """Ledger references of units (created when new)."""
        ...

    def record_units(self, source: str, units: Sequence[Any], now: float) -> None:
        """Upsert :class:`forwarder.source.WorkUnit` s (status, and counts that only grow)."""
        ...

    def add_unit_counts(self, ref: int, now: float, **counts: int) -> None:
        """Add to host counts of a unit: spooled, quarantined, duplicates."""
        ...

    def append(self, sink: str, rows: Sequence[tuple[bytes, int]], now: float) -> int:
        """Append ``(payload, unit_ref)`` rows to a sink's spool; returns how many."""
        ...

    def drop_oldest(self, sink: str, max_events: int, max_bytes: int) -> int:
        """Delete the oldest entries until the spool fits its caps; returns how many."""
        ...

    def quarantine(self, source: str, kind: str, raw: bytes, reason: str, unit: int, now: float) -> None: ...

    def set_cursor(self, key: str, value: dict[str, Any]) -> None: ...

    def add_totals(self, scope: str, counts: dict[str, int]) -> None: ...

    def beat(self, name: str, now: float) -> None:
        """Record a successful poll (source) or delivery (sink) time (a store may skip a beat
        less than a second after the last one it recorded for ``name``)."""
        ...

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run SQL within this transaction on tables that a core module keeps in the state
        database itself (the status sync's ``sync_inbox`` / ``sync_shadow``, ``dlpfwd serve``'s
        change ids in ``kv``), created with ``CREATE TABLE IF NOT EXISTS`` by that module; returns
        a DB-API cursor. Plugins never use it: their durable state is :meth:`StateStore.kv`."""
        ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any:
        """:meth:`execute` once per row of ``rows``."""
        ...


class StateStore(Protocol):
    """What the runtime and the CLI need from durable state."""

    def transaction(self) -> AbstractContextManager[Transaction]: ...

    def close(self) -> None: ...

    # sinks and spools
    def register_sink(self, name: str) -> None: ...
    def sinks(self) -> list[str]: ...
    def spool_depth(self, sink: str) -> tuple[int, int]: ...
    def spool_oldest(self, sink: str) -> float | None: ...
    def read_spool(self, sink: str, after: int, limit: int) -> list[SpoolRow]: ...
    def settle(
        self,
        sink: str,
        delivered: Sequence[SpoolRow],
        rejected: Sequence[tuple[SpoolRow, str]],
        retried: Sequence[SpoolRow],
        now: float,
    ) -> dict[str, int]: ...

    def refresh_depths(self) -> None:
        """Reload spool depths from storage (another process may have replayed entries)."""
        ...

    # cursors, key-value, health
    def get_cursor(self, key: str) -> dict[str, Any] | None: ...
    def kv(self, namespace: str) -> KeyValue: ...
    def kv_get(self, ns: str, key: str, default: Any = None) -> Any: ...
    def kv_put(self, ns: str, key: str, value: Any) -> None: ...
    def kv_delete(self, ns: str, key: str) -> None: ...
    def set_expectation(self, name: str, role: str, within: float) -> None: ...
    def heartbeats(self) -> list[dict[str, Any]]: ...
    def set_stopped(self, name: str, role: str, reason: str, now: float | None = None) -> None: ...
    def clear_stopped(self, name: str) -> None: ...
    def stopped(self) -> dict[str, dict[str, Any]]: ...
    def totals(self) -> dict[str, dict[str, int]]: ...

    # dead letters, quarantine, ledger
    def dead_letter_counts(self) -> dict[str, int]: ...
    def dead_letters(self, sink: str, limit: int = 100, after: int = 0) -> list[DeadLetter]: ...
    def replay_dead_letters(self, sink: str, ids: Sequence[int] | None = None) -> int: ...
    def purge_dead_letters(self, sink: str, ids: Sequence[int] | None = None) -> int: ...
    def quarantine_counts(self) -> dict[str, int]: ...
    def quarantined(self, source: str, limit: int = 100, after: int = 0) -> list[Quarantined]: ...
    def quarantine_last_id(self, source: str) -> int: ...
    def purge_quarantine(self, source: str, ids: Sequence[int] | None = None) -> int: ...
    def ledger_status(self, source: str, unit_ids: Sequence[str]) -> dict[str, str]: ...
    def ledger(self, since: float) -> Iterator[LedgerRow]: ...
    def purge_dedup(self, before: float) -> int: ...
    def purge_ledger(self, before: float) -> int: ...


class KeyValue:
    """A durable key-value namespace (``SourceContext.state`` / ``SinkContext.state``); JSON values."""

    def __init__(self, store: StateStore, namespace: str) -> None:
        self._store = store
        self.namespace = namespace

    def get(self, key: str, default: Any = None) -> Any:
        return self._store.kv_get(self.namespace, key, default)

    def put(self, key: str, value: Any) -> None:
        self._store.kv_put(self.namespace, key, value)

    def delete(self, key: str) -> None:
        self._store.kv_delete(self.namespace, key)
