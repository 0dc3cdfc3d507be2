"""The embedded state store: one SQLite database in WAL mode under ``[forwarder] state_dir``.

Durability: ``journal_mode=WAL`` with ``synchronous=NORMAL``. A committed transaction is in
the WAL file before ``COMMIT`` returns, so it survives the process being killed (``kill -9``,
OOM killer, crash). On a power loss or kernel panic the last transactions committed before
the WAL was synced to disk (by the background checkpoint, about every half second while busy)
may be rolled back; the database stays
consistent, and because the source cursor lives in the same transaction as the spool append,
those events are simply read again from the source (at-least-once holds).

Layout: one table per sink spool (``spool_<n>``) of segments -- the events of one batch in
one row, see :mod:`forwarder.state.segments` -- with AUTOINCREMENT ids, so entry ids are never
reused, depth counters in ``sinks`` (no scan
at start-up), ``dead_letters``, ``quarantine``, ``dedup`` + ``dedup_recent`` (idempotency keys,
see :class:`RecentKeys`), ``ledger`` +
``ledger_sink`` (completeness), ``cursors``, ``kv`` (plugin state), ``health``, ``totals``.

Threads: one writer connection behind a lock; each reading thread gets its own connection.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson

from forwarder.state import segments
from forwarder.state.base import DeadLetter, KeyValue, LedgerRow, Quarantined, SpoolRow

SCHEMA_VERSION = 2
DB_NAME = "state.sqlite3"
_CHUNK = 500  # SQL variables per IN (...) list
PAGE_SIZE = 16384
#: Pages (62.5 MB, just under ``journal_size_limit``): past this the writer checkpoints itself.
#: While appends and deliveries commit without pause, the background PASSIVE checkpoint (see
#: Checkpointer) never backfills the last frames, so the WAL is never restarted by it and keeps
#: growing; every commit then extends the file. Past this size the writer finishes what the
#: thread has mostly done and the WAL restarts from its beginning, overwriting a file that stays
#: within ``journal_size_limit`` (at 16,000 pages / 256 MB the stage of bench_spool.py spent
#: 9-13 us CPU per event instead of 8-10).
WAL_AUTOCHECKPOINT = 4000
CHECKPOINT_INTERVAL = 0.5  # seconds between background checkpoints while there are commits
BEAT_RESOLUTION = 1.0  # seconds: a heartbeat (last successful poll/delivery) is stored at most this often

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sinks (name TEXT PRIMARY KEY, sid INTEGER NOT NULL UNIQUE,
    events INTEGER NOT NULL DEFAULT 0, bytes INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS cursors (key TEXT PRIMARY KEY, value BLOB NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS kv (ns TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (ns, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dedup (key TEXT PRIMARY KEY, seen REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dedup_recent (id INTEGER PRIMARY KEY, key TEXT NOT NULL, seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT, sink TEXT NOT NULL,
    payload BLOB NOT NULL, reason TEXT NOT NULL, unit INTEGER NOT NULL, time REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS dead_letters_sink ON dead_letters (sink, id);
CREATE TABLE IF NOT EXISTS quarantine (id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL,
    kind TEXT NOT NULL, raw BLOB NOT NULL, reason TEXT NOT NULL, unit INTEGER NOT NULL, time REAL NOT NULL);
CREATE INDEX IF NOT EXISTS quarantine_source ON quarantine (source, id);
CREATE TABLE IF NOT EXISTS ledger (ref INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL,
    unit TEXT NOT NULL, kind TEXT NOT NULL DEFAULT '', status TEXT NOT NULL DEFAULT '',
    listed INTEGER NOT NULL DEFAULT 0, fetched INTEGER NOT NULL DEFAULT 0, parsed INTEGER NOT NULL DEFAULT 0,
    spooled INTEGER NOT NULL DEFAULT 0, quarantined INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0, created TEXT NOT NULL DEFAULT '', expires TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '', first_seen REAL NOT NULL, updated REAL NOT NULL,
    UNIQUE (source, unit));
CREATE INDEX IF NOT EXISTS ledger_updated ON ledger (updated);
CREATE TABLE IF NOT EXISTS ledger_sink (ref INTEGER NOT NULL, sink TEXT NOT NULL,
    spooled INTEGER NOT NULL DEFAULT 0, delivered INTEGER NOT NULL DEFAULT 0,
    dead INTEGER NOT NULL DEFAULT 0, dropped INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (ref, sink)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS health (name TEXT PRIMARY KEY, role TEXT NOT NULL DEFAULT '',
    last_ok REAL, expect REAL NOT NULL DEFAULT 0, registered REAL);
CREATE TABLE IF NOT EXISTS totals (scope TEXT NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL,
    PRIMARY KEY (scope, name)) WITHOUT ROWID;
"""

_SPOOL = """CREATE TABLE IF NOT EXISTS spool_{sid} (id INTEGER PRIMARY KEY AUTOINCREMENT,
    n INTEGER NOT NULL, bytes INTEGER NOT NULL, created REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    done BLOB, lens BLOB NOT NULL, units BLOB NOT NULL, body BLOB NOT NULL)"""

_LEDGER_SINK_ADD = """INSERT INTO ledger_sink (ref, sink, {col}) VALUES (?, ?, ?)
    ON CONFLICT (ref, sink) DO UPDATE SET {col} = {col} + excluded.{col}"""


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class Checkpointer:
    """Copies the WAL into the database in a background thread (``wal_checkpoint(PASSIVE)``,
    which never blocks writers), so commits never wait for checkpoint I/O and fsyncs. The
    writer's own auto-checkpoint stays as a safety net if this thread falls behind."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.commits = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dlpfwd-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = _connect(self.path)
        try:
            seen = 0
            while not self._stop.wait(CHECKPOINT_INTERVAL):
                if self.commits != seen:
                    seen = self.commits
                    try:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    except sqlite3.Error:
                        pass  # retried at the next interval; the writer's auto-checkpoint remains
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


#: Page cache per connection, in KiB: the one writer gets 16 MB; per-thread readers (which scan
#: spool segments sequentially) and the checkpointer need little, and there is one reader per
#: source and drainer thread, so their caches would otherwise dominate peak RSS.
WRITER_CACHE_KIB = 16000

#: ``secure_delete``: Debian (and others) build SQLite with it ON, which overwrites every freed
#: page with zeros -- for the spool that doubles the bytes written to the WAL and checkpointed
#: (each delivered segment's overflow pages written once more as zeros). FAST still zeroes
#: deleted content on b-tree pages when that costs no extra I/O, and leaves freed overflow
#: pages as they are until reused by the next appends.
SECURE_DELETE = "FAST"
READER_CACHE_KIB = 2000


def _connect(path: str, cache_kib: int = READER_CACHE_KIB) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA cache_size=-{int(cache_kib)}")  # bounded page cache: memory stays bounded
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute(f"PRAGMA secure_delete={SECURE_DELETE}")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT}")
    conn.execute("PRAGMA journal_size_limit=67108864")
    return conn


class _SqliteTransaction:
    """The write operations of one transaction (see :class:`forwarder.state.base.Transaction`)."""

    def __init__(self, store: SqliteStateStore) -> None:
        self.store = store
        self.db = store._db
        self.depth_changed: set[str] = set()
        self.hot: list[tuple[str, int, bytes, bytes, bytes]] = []  # segments appended: (sink, id, lens, units, body)
        self.beats: dict[str, float] = {}  # heartbeats written, remembered once committed
        self.recent: dict[str, float] = {}  # idempotency keys remembered, published once committed
        self.merged = False  # dedup_recent was merged into dedup in this transaction
        self._committed: dict[str, float] | None = None  # see _committed_keys

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.db.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> sqlite3.Cursor:
        return self.db.executemany(sql, rows)

    def _committed_keys(self) -> dict[str, float]:
        """The keys of ``dedup_recent`` committed before this transaction (the store's copy,
        checked once per transaction, before it writes there); empty once this transaction
        merged them into ``dedup``, which then has their latest times."""
        if self._committed is None:
            self._committed = self.store._recent_keys()
        return self._committed

    def seen_keys(self, keys: Sequence[str], since: float) -> set[str]:
        seen: set[str] = set()
        recent = self._committed_keys()
        pending = self.recent
        older: list[str] = []
        for k in keys:
            when = pending.get(k)
            if when is None:
                when = recent.get(k)
            if when is None:
                older.append(k)  # never remembered since the last merge: the dedup table decides
            elif when >= since:
                seen.add(k)
            # else: remembered last (the recent copy is the latest) before ``since``: not seen
        for part in _chunks(older):
            marks = ",".join("?" * len(part))
            sql = f"SELECT key FROM dedup WHERE key IN ({marks}) AND seen >= ?"  # noqa: S608 - placeholders only
            seen.update(r[0] for r in self.db.execute(sql, (*part, since)))
        return seen

    def remember_keys(self, keys: Sequence[str], now: float) -> None:
        # Appended to dedup_recent (see RecentKeys). One multi-row statement per chunk, not
        # executemany: one step (one GIL hand-off) per 500 keys instead of one per key.
        committed = self._committed_keys()  # before this transaction's rows are in the table
        for part in _chunks(keys):
            values = ",".join(["(?, ?)"] * len(part))
            args: list[Any] = []
            for k in part:
                args.append(k)
                args.append(now)
            self.db.execute(f"INSERT INTO dedup_recent (key, seen) VALUES {values}", args)  # noqa: S608
        self.recent.update(dict.fromkeys(keys, now))
        if len(committed) + len(self.recent) >= RecentKeys.MAX_KEYS:
            RecentKeys.merge(self.db, {**committed, **self.recent})
            self.recent = {}  # all in dedup now; keys remembered later in this transaction are recent again
            self._committed = {}
            self.merged = True

    def unit_refs(self, source: str, unit_ids: Sequence[str], now: float) -> dict[str, int]:
        refs: dict[str, int] = {}
        cache = self.store._unit_cache
        missing = []
        for u in unit_ids:
            ref = cache.get((source, u))
            if ref is None:
                missing.append(u)
            else:
                refs[u] = ref
        if missing:
            self.db.executemany(
                "INSERT OR IGNORE INTO ledger (source, unit, first_seen, updated) VALUES (?, ?, ?, ?)",
                [(source, u, now, now) for u in missing],
            )
            for part in _chunks(missing):
                marks = ",".join("?" * len(part))
                sql = f"SELECT unit, ref FROM ledger WHERE source = ? AND unit IN ({marks})"  # noqa: S608
                for unit, ref in self.db.execute(sql, (source, *part)):
                    refs[unit] = ref
                    if len(cache) > 10_000:
                        cache.clear()
                    cache[(source, unit)] = ref
        return refs

    def record_units(self, source: str, units: Sequence[Any], now: float) -> None:
        self.unit_refs(source, [u.id for u in units], now)
        self.db.executemany(
            """UPDATE ledger SET kind = ?, status = ?, listed = max(listed, ?), fetched = max(fetched, ?),
               parsed = max(parsed, ?), created = CASE WHEN ? = '' THEN created ELSE ? END,
               expires = CASE WHEN ? = '' THEN expires ELSE ? END, detail = ?, updated = ?
               WHERE source = ? AND unit = ?""",
            [
                (
                    u.kind,
                    u.status,
                    u.listed,
                    u.fetched,
                    u.parsed,
                    u.created,
                    u.created,
                    u.expires,
                    u.expires,
                    u.detail,
                    now,
                    source,
                    u.id,
                )
                for u in units
            ],
        )

    def add_unit_counts(self, ref: int, now: float, **counts: int) -> None:
        sets = ", ".join(f"{k} = {k} + ?" for k in counts if k in ("spooled", "quarantined", "duplicates"))
        if sets:
            self.db.execute(
                f"UPDATE ledger SET {sets}, updated = ? WHERE ref = ?",  # noqa: S608 - fixed column names
                (*counts.values(), now, ref),
            )

    def add_sink_unit_counts(self, sink: str, column: str, per_unit: Counter[int]) -> None:
        if per_unit:
            self.db.executemany(_LEDGER_SINK_ADD.format(col=column), [(ref, sink, n) for ref, n in per_unit.items()])

    def append(self, sink: str, rows: Sequence[tuple[bytes, int]], now: float) -> int:
        """Append ``(payload, unit)`` rows as segments (one row per up to MAX_ENTRIES entries)."""
        if not rows:
            return 0
        sid = self.store._sid(sink)
        sql = f"INSERT INTO spool_{sid} (n, bytes, created, lens, units, body) VALUES (?, ?, ?, ?, ?, ?)"  # noqa: S608
        total = 0
        for start in range(0, len(rows), segments.MAX_ENTRIES):
            part = rows[start : start + segments.MAX_ENTRIES]
            lens, units, body, size = segments.encode(part)
            seg = self.db.execute(sql, (len(part), size, now, lens, units, body)).lastrowid
            if seg is not None:
                self.hot.append((sink, seg, lens, units, body))
            total += size
        self.store._depth_add(sink, len(rows), total)
        self.add_sink_unit_counts(sink, "spooled", Counter([r[1] for r in rows]))
        return len(rows)

    def settle_rows(self, sink: str, rows: Sequence[SpoolRow]) -> list[SpoolRow]:
        """Mark entries settled (delivered or dead-lettered); a segment whose entries are all
        settled is deleted. Returns the rows that were still unsettled (exact accounting)."""
        if not rows:
            return []
        sid = self.store._sid(sink)
        by_segment: dict[int, list[SpoolRow]] = {}
        shift = segments.STRIDE.bit_length() - 1
        for r in rows:
            seg = r.id >> shift
            group = by_segment.get(seg)
            if group is None:
                by_segment[seg] = [r]
            else:
                group.append(r)
        self.store._hot[sink].discard(by_segment)
        fresh: list[SpoolRow] = []
        get = f"SELECT n, done FROM spool_{sid} WHERE id = ?"  # noqa: S608
        delete = f"DELETE FROM spool_{sid} WHERE id = ?"  # noqa: S608
        delete_whole = f"DELETE FROM spool_{sid} WHERE id = ? AND n = ? AND done IS NULL"  # noqa: S608
        update = f"UPDATE spool_{sid} SET done = ? WHERE id = ?"  # noqa: S608
        for seg, group in by_segment.items():
            size = len(group)
            first = segments.entry_id(seg, 0)
            if (
                group[0].id == first
                and group[-1].id == first + size - 1
                and len({r.id for r in group}) == size
                and self.db.execute(delete_whole, (seg, size)).rowcount == 1
            ):
                fresh.extend(group)  # exactly the whole, untouched segment: one statement, the common case
                continue
            found = self.db.execute(get, (seg,)).fetchone()
            if found is None:
                continue  # dropped meanwhile (overflow = drop_oldest): already accounted for
            n, done = found
            if done is None and len(group) == n and len({r.id for r in group}) == n:
                self.db.execute(delete, (seg,))  # the whole segment settled at once: the common case
                fresh.extend(group)
                continue
            entries = {r.id & (segments.STRIDE - 1): r for r in group}
            bitmap, newly = segments.mark(done, n, list(entries))
            fresh.extend(entries[i] for i in newly)
            if segments.count_done(bytes(bitmap)) >= n:
                self.db.execute(delete, (seg,))
            elif newly:
                self.db.execute(update, (bytes(bitmap), seg))
        if fresh:
            self.store._depth_add(sink, -len(fresh), -sum(r.size for r in fresh))
        return fresh

    def drop_oldest(self, sink: str, max_events: int, max_bytes: int) -> int:
        events, size = self.store.spool_depth(sink)
        if events <= max_events and size <= max_bytes:
            return 0
        sid = self.store._sid(sink)
        over_events, over_bytes = events - max_events, size - max_bytes
        victims: list[int] = []
        units: Counter[int] = Counter()
        dropped = dropped_bytes = 0
        sql = f"SELECT id, n, done, lens, units FROM spool_{sid} ORDER BY id"  # noqa: S608
        for seg, n, done, lens_blob, units_blob in self.db.execute(sql).fetchall():
            if over_events <= 0 and over_bytes <= 0:
                break
            _, lens, unit_refs = segments.decode(lens_blob, units_blob, b"")
            for i in range(n):
                if not segments.is_done(done, i):
                    units[unit_refs[i]] += 1
                    dropped += 1
                    dropped_bytes += lens[i]
                    over_events -= 1
                    over_bytes -= lens[i]
            victims.append(seg)
        self.db.executemany(f"DELETE FROM spool_{sid} WHERE id = ?", [(v,) for v in victims])  # noqa: S608
        self.store._hot[sink].forget()  # some of its segments may be gone now
        self.store._depth_add(sink, -dropped, -dropped_bytes)
        self.add_sink_unit_counts(sink, "dropped", units)
        self.add_totals(sink, {"dropped_oldest": dropped})
        return dropped

    def quarantine(self, source: str, kind: str, raw: bytes, reason: str, unit: int, now: float) -> None:
        self.db.execute(
            "INSERT INTO quarantine (source, kind, raw, reason, unit, time) VALUES (?, ?, ?, ?, ?, ?)",
            (source, kind, raw, reason, unit, now),
        )

    def set_cursor(self, key: str, value: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO cursors (key, value, updated) VALUES (?, ?, ?)",
            (key, orjson.dumps(value), time.time()),
        )

    def add_totals(self, scope: str, counts: dict[str, int]) -> None:
        rows = [(scope, k, v) for k, v in counts.items() if v]
        if rows:
            self.db.executemany(
                """INSERT INTO totals (scope, name, value) VALUES (?, ?, ?)
                   ON CONFLICT (scope, name) DO UPDATE SET value = value + excluded.value""",
                rows,
            )

    def beat(self, name: str, now: float) -> None:
        last = self.store._beats.get(name)
        if last is not None and 0.0 <= now - last < BEAT_RESOLUTION:
            return  # recorded less than a second ago: spare the statement and a WAL page
        self.db.execute(
            "INSERT INTO health (name, last_ok) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET last_ok = excluded.last_ok",
            (name, now),
        )
        self.beats[name] = now

    def _flush_depths(self) -> None:
        # Relative updates: another process (``dlpfwd dead-letters replay``) may write too.
        for sink, (events, size) in self.store._pending_delta.items():
            if events or size:
                self.db.execute(
                    "UPDATE sinks SET events = events + ?, bytes = bytes + ? WHERE name = ?", (events, size, sink)
                )


class RecentKeys:
    """The idempotency keys remembered since the last merge (``dedup_recent``), in memory.

    ``dedup`` is a B-tree on the key, and keys arrive in random order: remembering a batch's
    keys there dirtied one 16 KiB leaf page per key, each written to the WAL at every commit and
    checkpointed again (~14 KB of I/O per event, the largest cost of a batch transaction).
    Keys are instead appended to ``dedup_recent`` (by arrival: a few pages per batch) in the
    batch's transaction, and looked up in this copy of it; every :attr:`MAX_KEYS` keys, the
    transaction that reaches the bound moves them into ``dedup`` in key order, which writes
    each leaf once for thousands of keys. Same answers as one table: a key's latest time is its
    recent copy when it has one, else its ``dedup`` row.

    The copy holds committed rows only and is reloaded when another connection (another
    process) committed since this store last looked (``PRAGMA data_version``). Memory is
    bounded by :attr:`MAX_KEYS`, not by the number of events.
    """

    MAX_KEYS = 32_768

    def __init__(self) -> None:
        self.keys: dict[str, float] = {}
        self.version: int | None = None  # data_version when the copy was last known current

    def current(self, db: sqlite3.Connection) -> dict[str, float]:
        """The copy, reloaded first if another connection committed meanwhile. Call inside the
        write transaction (nobody else can commit while it is used) before this transaction
        writes ``dedup_recent`` (a reload would take its uncommitted rows)."""
        version = db.execute("PRAGMA data_version").fetchone()[0]
        if version != self.version:
            self.keys = {k: t for k, t in db.execute("SELECT key, seen FROM dedup_recent ORDER BY id")}
            self.version = version
        return self.keys

    @staticmethod
    def merge(db: sqlite3.Connection, keys: dict[str, float]) -> None:
        """Move the recent keys (``keys``: every row of ``dedup_recent``, the latest time of
        each key) into ``dedup`` in key order, in the current transaction. Sorted here, not by
        SQLite: its sorter would take up to the page cache's size again."""
        rows = sorted(keys.items())
        for part in _chunks(rows):
            values = ",".join(["(?, ?)"] * len(part))
            db.execute(
                f"INSERT OR REPLACE INTO dedup (key, seen) VALUES {values}",  # noqa: S608 - placeholders only
                [x for row in part for x in row],
            )
        db.execute("DELETE FROM dedup_recent")

    def committed(self, added: dict[str, float], merged: bool) -> None:
        """A transaction committed that merged (or not) and then remembered ``added``."""
        if merged:
            self.keys = dict(added)
        else:
            self.keys.update(added)

    def forget_before(self, before: float) -> None:
        self.keys = {k: t for k, t in self.keys.items() if t >= before}


class HotSegments:
    """Segments of one sink's spool that this process appended and no reader has read yet, kept
    in memory (bounded) so that a drainer keeping up with its source does not read back from
    SQLite what was just written there. Only committed segments are published.

    A segment is served only where the database would return exactly the same entries: it
    must follow, with the next id, a segment this process appended itself (so no segment of
    another process lies between them), and the reader must be positioned exactly at the end
    of what was served before it, or read again from where it read last (a drainer waiting for
    a fuller batch reads the same entries again, now with more behind them: before, each such
    read went to the database). What lies before the reader's position is dropped; a reader
    that moves back (a retry) or elsewhere reads from the database, which drops the segments
    it passes; a segment with an entry settled is dropped (its done bitmap is in the database).

    It keeps nothing until a reader has read once, and when it is full and no reader came for
    :attr:`IDLE_SECONDS` (a sink that is down), it lets go of everything until a reader reads
    again: a backlog spooled while nothing drains costs no memory here.
    """

    MAX_BYTES = 16 * 1024 * 1024  # per sink; when full, newer segments are read from the database
    IDLE_SECONDS = 5.0  # full and not read for this long: the reader is gone (sink down), let go

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # segment id -> (n, offsets, units, body); reader position -> (segment id, first index there)
        self._segs: dict[int, tuple[int, list[int], Any, bytes]] = {}
        self._by_pos: dict[int, tuple[int, int]] = {}
        self._tail: tuple[int, int] | None = None  # (id, n) of the last segment appended here
        self._read_upto = 0  # the last segment a reader got from the database
        self._bytes = 0
        self._last_read = time.monotonic()  # the last call of take(): a reader is alive
        self._idle = True  # no reader yet, or full and none for IDLE_SECONDS: keep nothing

    def publish(self, seg: int, lens_blob: bytes, units_blob: bytes, body: bytes) -> None:
        n = segments.count(lens_blob)  # decoded below only if the segment is kept
        with self._lock:
            tail, self._tail = self._tail, (seg, n)
            if tail is None or tail[0] != seg - 1 or seg <= self._read_upto:
                # Another writer's segment may lie before it, or a reader already got it from the
                # database (it committed before this call): the database decides.
                return
            if self._idle:
                return
            if self._bytes + len(body) > self.MAX_BYTES:
                # Full: keep the older segments, which a lagging reader needs first; this one
                # will be read from the database. No reader for a while (the sink is down):
                # let go of everything until one reads again.
                if time.monotonic() - self._last_read > self.IDLE_SECONDS:
                    self._idle = True
                    self._segs.clear()
                    self._by_pos.clear()
                    self._bytes = 0
                return
            offsets, _, units = segments.decode(lens_blob, units_blob, b"")
            self._segs[seg] = (n, offsets, units, body)
            self._by_pos[segments.entry_id(tail[0], tail[1] - 1)] = (seg, 0)
            self._bytes += len(body)

    def take(self, after: int, limit: int) -> list[SpoolRow]:
        """Entries right after ``after`` served from memory (up to ``limit``), or ``[]``."""
        out: list[SpoolRow] = []
        with self._lock:
            self._last_read = time.monotonic()
            self._idle = False
            if self._by_pos and min(self._by_pos) < after:
                self._drop_before(after)  # the reader moved past them: never served again
            row = SpoolRow.in_segment
            while len(out) < limit:
                found = self._by_pos.get(after)
                if found is None:
                    break
                seg, first = found
                n, offsets, units, body = self._segs[seg]
                last = min(n, first + limit - len(out))
                base = segments.entry_id(seg, 0)
                out.extend([row(base + i, body, offsets[i], offsets[i + 1], units[i], 0) for i in range(first, last)])
                after = base + last - 1
                if last < n:
                    self._by_pos[after] = (seg, last)
        return out

    def _drop_before(self, position: int) -> None:
        """Forget reader positions before ``position`` and the segments wholly before it."""
        self._by_pos = {p: v for p, v in self._by_pos.items() if p >= position}
        for seg in [s for s, v in self._segs.items() if segments.entry_id(s, v[0] - 1) <= position]:
            self._drop(seg)

    def discard(self, segs: Any) -> None:
        """Entries of these segments were settled: the database has their done bitmap."""
        with self._lock:
            for seg in segs:
                if seg in self._segs:
                    self._drop(seg)

    def passed(self, position: int) -> None:
        """A reader read up to ``position`` from the database: forget what lies before it."""
        upto = segments.split_id(position)[0]
        with self._lock:
            self._read_upto = max(self._read_upto, upto)
            for seg in [s for s in self._segs if s <= upto]:
                self._drop(seg)

    def forget(self) -> None:
        """Drop everything (spool changed behind our back: drop_oldest, a rollback, a refresh)."""
        with self._lock:
            self._segs.clear()
            self._by_pos.clear()
            self._tail = None
            self._bytes = 0

    def _drop(self, seg: int) -> None:
        entry = self._segs.pop(seg)
        self._bytes -= len(entry[3])
        for pos in [p for p, v in self._by_pos.items() if v[0] == seg]:
            del self._by_pos[pos]


class SqliteStateStore:
    """SQLite implementation of :class:`forwarder.state.base.StateStore`; see the module docstring."""

    def __init__(self, state_dir: str) -> None:
        os.makedirs(state_dir, exist_ok=True)
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, DB_NAME)
        self._lock = threading.RLock()
        self._db = _connect(self.path, WRITER_CACHE_KIB)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._unit_cache: dict[tuple[str, str], int] = {}
        self._pending_delta: dict[str, list[int]] = {}
        self._beats: dict[str, float] = {}  # name -> last heartbeat this process committed
        self._recent = RecentKeys()
        self._checkpointer: Checkpointer | None = None
        self._closed = False
        with self._lock:
            if self._db.execute("PRAGMA user_version").fetchone()[0] == 0:
                # Large pages suit 1-3 KB payloads; pages freed by deliveries are reused by new
                # appends (no auto_vacuum: it doubles the cost of every delete).
                self._db.execute("PRAGMA journal_mode=DELETE")
                self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")
                self._db.execute("VACUUM")
                self._db.execute("PRAGMA journal_mode=WAL")
                # SQLite turns a cache size in KiB into a page count with the page size of the
                # moment and keeps that count when the page size changes: set before the
                # change (4 KiB pages), 16 MB became 4,000 pages of 16 KiB = 64 MB, filled by
                # the dedup index over a long backfill. Set it again for the new page size.
                self._db.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._sids: dict[str, int] = {}
        self._depth: dict[str, list[int]] = {}
        self._hot: dict[str, HotSegments] = {}
        for name, sid, events, size in self._db.execute("SELECT name, sid, events, bytes FROM sinks"):
            self._sids[name] = sid
            self._depth[name] = [events, size]
            self._hot[name] = HotSegments()

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def transaction(self) -> Iterator[_SqliteTransaction]:
        """One atomic write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``)."""
        with self._lock:
            saved = {k: list(v) for k, v in self._depth.items()}
            self._pending_delta = {}
            self._db.execute("BEGIN IMMEDIATE")
            tx = _SqliteTransaction(self)
            try:
                yield tx
                tx._flush_depths()
                self._db.execute("COMMIT")
                for sink, seg, lens, units, body in tx.hot:
                    self._hot[sink].publish(seg, lens, units, body)
                self._beats.update(tx.beats)
                if tx.recent or tx.merged:
                    self._recent.committed(tx.recent, tx.merged)
                checkpointer = self._checkpointer
                if checkpointer is None and not self._closed:
                    checkpointer = self._checkpointer = Checkpointer(self.path)
                if checkpointer is not None:
                    checkpointer.commits += 1
            except BaseException:
                self._db.execute("ROLLBACK")
                self._depth = saved
                self._unit_cache.clear()
                for hot in self._hot.values():
                    hot.forget()  # the in-process tail of a spool may have moved back
                raise

    def _recent_keys(self) -> dict[str, float]:
        return self._recent.current(self._db)

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path)
            self._local.conn = conn
            with self._lock:
                self._readers.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._checkpointer is not None:
                self._checkpointer.stop()
            for conn in self._readers:
                conn.close()
            try:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                pass
            self._db.close()

    def _sid(self, sink: str) -> int:
        sid = self._sids.get(sink)
        if sid is None:
            raise KeyError(f"unknown sink {sink!r}")
        return sid

    def _depth_add(self, sink: str, events: int, size: int) -> None:
        d = self._depth[sink]
        d[0] += events
        d[1] += size
        delta = self._pending_delta.setdefault(sink, [0, 0])
        delta[0] += events
        delta[1] += size

    def refresh_depths(self) -> None:
        """Reload spool depths from the database (another process may have replayed entries)."""
        with self._lock:
            for name, sid, events, size in self._db.execute("SELECT name, sid, events, bytes FROM sinks"):
                self._sids[name] = sid
                self._depth[name] = [events, size]
                self._hot.setdefault(name, HotSegments()).forget()  # another process may have appended

    # ------------------------------------------------------------------ sinks and spools

    def register_sink(self, name: str) -> None:
        """Create the sink's spool if it does not exist yet."""
        with self._lock:
            if name in self._sids:
                return
            row = self._db.execute("SELECT coalesce(max(sid), 0) + 1 FROM sinks").fetchone()
            sid = int(row[0])
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(_SPOOL.format(sid=sid))
            self._db.execute("INSERT INTO sinks (name, sid) VALUES (?, ?)", (name, sid))
            self._db.execute("COMMIT")
            self._sids[name] = sid
            self._depth[name] = [0, 0]
            self._hot[name] = HotSegments()

    def sinks(self) -> list[str]:
        return sorted(self._sids)

    def spool_depth(self, sink: str) -> tuple[int, int]:
        """(events, bytes) waiting in a sink's spool."""
        d = self._depth.get(sink, [0, 0])
        return d[0], d[1]

    def spool_oldest(self, sink: str) -> float | None:
        """Creation time of the oldest spooled entry, ``None`` when empty."""
        if sink not in self._sids:
            return None
        sql = f"SELECT created FROM spool_{self._sid(sink)} ORDER BY id LIMIT 1"  # noqa: S608
        row = self._reader().execute(sql).fetchone()
        return float(row[0]) if row else None

    def read_spool(self, sink: str, after: int, limit: int) -> list[SpoolRow]:
        """Up to ``limit`` unsettled entries with ``id > after``, oldest first (reads segment by
        segment, never the whole spool). Segments this process appended recently are served
        from memory (:class:`HotSegments`) when they are exactly what the database would return."""
        hot = self._hot.get(sink)
        if hot is not None:
            served = hot.take(after, limit)
            if served:
                return served
        first_segment = segments.split_id(after)[0]
        sql = (
            f"SELECT id, n, attempts, done, lens, units, body FROM spool_{self._sid(sink)} "  # noqa: S608
            "WHERE id >= ? ORDER BY id"
        )
        out: list[SpoolRow] = []
        append = out.append
        is_done = segments.is_done
        row = SpoolRow.in_segment
        cursor = self._reader().execute(sql, (first_segment,))
        try:
            for seg, n, attempts, done, lens_blob, units_blob, body in cursor:
                offsets, lens, units = segments.decode(lens_blob, units_blob, body)
                base = seg * segments.STRIDE
                first = max(0, after - base + 1)
                last = min(n, first + limit - len(out))
                if done is None:
                    for i in range(first, last):
                        append(row(base + i, body, offsets[i], offsets[i + 1], units[i], attempts))
                else:
                    for i in range(first, n):
                        if is_done(done, i):
                            continue
                        append(row(base + i, body, offsets[i], offsets[i + 1], units[i], attempts))
                        if len(out) >= limit:
                            break
                if len(out) >= limit:
                    break
        finally:
            cursor.close()
        if hot is not None:
            hot.passed(out[-1].id if out else after)
        return out

    def settle(
        self,
        sink: str,
        delivered: Sequence[SpoolRow],
        rejected: Sequence[tuple[SpoolRow, str]],
        retried: Sequence[SpoolRow],
        now: float,
    ) -> dict[str, int]:
        """Apply a delivery outcome in one transaction: delivered entries leave the spool,
        rejected ones move to dead letters, retried ones count an attempt. Exact counts."""
        with self.transaction() as tx:
            done = tx.settle_rows(sink, delivered)
            tx.add_sink_unit_counts(sink, "delivered", Counter(r.unit for r in done))
            dead: list[SpoolRow] = []
            if rejected:
                reasons = {r.id: reason for r, reason in rejected}
                dead = tx.settle_rows(sink, [r for r, _ in rejected])
                self._db.executemany(
                    "INSERT INTO dead_letters (sink, payload, reason, unit, time, attempts) VALUES (?, ?, ?, ?, ?, ?)",
                    [(sink, r.payload, reasons[r.id], r.unit, now, r.attempts + 1) for r in dead],
                )
                tx.add_sink_unit_counts(sink, "dead", Counter(r.unit for r in dead))
            if retried:
                sid = self._sid(sink)
                segs = {segments.split_id(r.id)[0] for r in retried}
                self._hot[sink].discard(segs)  # their attempts change: read them from the database
                self._db.executemany(
                    f"UPDATE spool_{sid} SET attempts = attempts + 1 WHERE id = ?",  # noqa: S608
                    [(seg,) for seg in segs],
                )
            counts = {"delivered": len(done), "dead_lettered": len(dead)}
            tx.add_totals(sink, counts)
            if counts["delivered"]:
                tx.beat(sink, now)
        return counts

    # ------------------------------------------------------------------ cursors, kv, health

    def get_cursor(self, key: str) -> dict[str, Any] | None:
        row = self._reader().execute("SELECT value FROM cursors WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        value: dict[str, Any] = orjson.loads(row[0])
        return value

    def kv(self, namespace: str) -> KeyValue:
        return KeyValue(self, namespace)

    def kv_get(self, ns: str, key: str, default: Any = None) -> Any:
        row = self._reader().execute("SELECT value FROM kv WHERE ns = ? AND key = ?", (ns, key)).fetchone()
        return orjson.loads(row[0]) if row else default

    def kv_put(self, ns: str, key: str, value: Any) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO kv (ns, key, value) VALUES (?, ?, ?)", (ns, key, orjson.dumps(value))
            )

    def kv_delete(self, ns: str, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM kv WHERE ns = ? AND key = ?", (ns, key))

    # A source or sink stopped by a fatal error (bad credentials, a rejected configuration):
    # kept here so `dlpfwd state` / `health` see it from another process, until it works again.
    _STOPPED_NS = "host:stopped"

    def set_stopped(self, name: str, role: str, reason: str, now: float | None = None) -> None:
        """Remember that ``name`` (role ``source`` or ``sink``) was stopped by a fatal error."""
        when = time.time() if now is None else now
        self.kv_put(self._STOPPED_NS, name, {"role": role, "reason": reason, "time": when})

    def clear_stopped(self, name: str) -> None:
        """``name`` works again (it polled / delivered successfully)."""
        self.kv_delete(self._STOPPED_NS, name)

    def stopped(self) -> dict[str, dict[str, Any]]:
        """Name -> ``{"role", "reason", "time"}`` of every source and sink stopped by a fatal error."""
        rows = self._reader().execute("SELECT key, value FROM kv WHERE ns = ? ORDER BY key", (self._STOPPED_NS,))
        return {k: orjson.loads(v) for k, v in rows}

    def set_expectation(self, name: str, role: str, within: float) -> None:
        """Remember how often ``name`` must poll/deliver, for ``dlpfwd health`` without a config."""
        with self._lock:
            self._db.execute(
                """INSERT INTO health (name, role, expect, registered) VALUES (?, ?, ?, ?)
                   ON CONFLICT (name) DO UPDATE SET role = excluded.role, expect = excluded.expect,
                   registered = coalesce(health.registered, excluded.registered)""",
                (name, role, within, time.time()),
            )

    def heartbeats(self) -> list[dict[str, Any]]:
        rows = self._reader().execute("SELECT name, role, last_ok, expect, registered FROM health ORDER BY role, name")
        return [{"name": n, "role": r, "last_ok": t, "expect": e, "registered": g} for n, r, t, e, g in rows]

    def totals(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for scope, name, value in self._reader().execute("SELECT scope, name, value FROM totals"):
            out.setdefault(scope, {})[name] = value
        return out

    # ------------------------------------------------------------------ dead letters and quarantine

    def dead_letter_counts(self) -> dict[str, int]:
        rows = self._reader().execute("SELECT sink, count(*) FROM dead_letters GROUP BY sink")
        return {s: n for s, n in rows}

    def dead_letters(self, sink: str, limit: int = 100, after: int = 0) -> list[DeadLetter]:
        rows = self._reader().execute(
            "SELECT id, sink, payload, reason, time, attempts FROM dead_letters WHERE sink = ? AND id > ? "
            "ORDER BY id LIMIT ?",
            (sink, after, limit),
        )
        return [DeadLetter(*r) for r in rows]

    def _dead_letter_where(self, sink: str, ids: Sequence[int] | None) -> tuple[str, list[Any]]:
        if ids is None:
            return "sink = ?", [sink]
        marks = ",".join("?" * len(ids))
        return f"sink = ? AND id IN ({marks})", [sink, *ids]

    def replay_dead_letters(self, sink: str, ids: Sequence[int] | None = None) -> int:
        """Move dead letters back into the sink's spool (after the cause was fixed)."""
        total = 0
        while True:
            with self.transaction() as tx:
                where, args = self._dead_letter_where(sink, ids)
                rows = self._db.execute(
                    f"SELECT id, payload, unit FROM dead_letters WHERE {where} ORDER BY id LIMIT 1000",  # noqa: S608
                    args,
                ).fetchall()
                if not rows:
                    return total
                tx.append(sink, [(p, u) for _, p, u in rows], time.time())
                self._db.executemany("DELETE FROM dead_letters WHERE id = ?", [(i,) for i, _, _ in rows])
                tx.add_totals(sink, {"replayed": len(rows)})
                total += len(rows)

    def purge_dead_letters(self, sink: str, ids: Sequence[int] | None = None) -> int:
        where, args = self._dead_letter_where(sink, ids)
        with self.transaction():
            cur = self._db.execute(f"DELETE FROM dead_letters WHERE {where}", args)  # noqa: S608
            return cur.rowcount

    def quarantine_counts(self) -> dict[str, int]:
        rows = self._reader().execute("SELECT source, count(*) FROM quarantine GROUP BY source")
        return {s: n for s, n in rows}

    def quarantined(self, source: str, limit: int = 100, after: int = 0) -> list[Quarantined]:
        rows = self._reader().execute(
            "SELECT q.id, q.source, q.kind, q.raw, q.reason, q.time, coalesce(l.unit, '') FROM quarantine q "
            "LEFT JOIN ledger l ON l.ref = q.unit WHERE q.source = ? AND q.id > ? ORDER BY q.id LIMIT ?",
            (source, after, limit),
        )
        return [Quarantined(*r) for r in rows]

    def quarantine_last_id(self, source: str) -> int:
        row = self._reader().execute("SELECT coalesce(max(id), 0) FROM quarantine WHERE source = ?", (source,))
        return int(row.fetchone()[0])

    def purge_quarantine(self, source: str, ids: Sequence[int] | None = None) -> int:
        with self.transaction():
            if ids is None:
                cur = self._db.execute("DELETE FROM quarantine WHERE source = ?", (source,))
            else:
                marks = ",".join("?" * len(ids))
                cur = self._db.execute(
                    f"DELETE FROM quarantine WHERE source = ? AND id IN ({marks})",  # noqa: S608
                    (source, *ids),
                )
            return cur.rowcount

    # ------------------------------------------------------------------ ledger and dedup

    def ledger_status(self, source: str, unit_ids: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in _chunks(list(unit_ids)):
            marks = ",".join("?" * len(part))
            sql = f"SELECT unit, status FROM ledger WHERE source = ? AND unit IN ({marks})"  # noqa: S608
            out.update({u: s for u, s in self._reader().execute(sql, (source, *part))})
        return out

    def ledger(self, since: float) -> Iterator[LedgerRow]:
        """Ledger units updated at or after ``since``, with their per-sink counts."""
        conn = self._reader()
        rows = conn.execute(
            "SELECT ref, source, unit, kind, status, listed, fetched, parsed, spooled, quarantined, duplicates, "
            "created, expires, detail, first_seen, updated FROM ledger WHERE updated >= ? OR ref IN "
            "(SELECT ref FROM ledger_sink WHERE spooled > delivered + dead + dropped) "
            "OR (status IN ('listed', 'failed') AND expires != '') ORDER BY source, ref",
            (since,),
        ).fetchall()
        for row in rows:
            ref = row[0]
            sinks = {
                s: {"spooled": sp, "delivered": de, "dead": dd, "dropped": dr}
                for s, sp, de, dd, dr in conn.execute(
                    "SELECT sink, spooled, delivered, dead, dropped FROM ledger_sink WHERE ref = ?", (ref,)
                )
            }
            entry = LedgerRow(*row[1:])
            entry.sinks = sinks
            yield entry

    def purge_ledger(self, before: float) -> int:
        """Forget ledger units last updated before ``before`` that have nothing pending."""
        with self.transaction():
            refs = [
                r[0]
                for r in self._db.execute(
                    "SELECT ref FROM ledger WHERE updated < ? AND ref NOT IN "
                    "(SELECT ref FROM ledger_sink WHERE spooled > delivered + dead + dropped)",
                    (before,),
                )
            ]
            self._db.executemany("DELETE FROM ledger_sink WHERE ref = ?", [(r,) for r in refs])
            self._db.executemany("DELETE FROM ledger WHERE ref = ?", [(r,) for r in refs])
            self._unit_cache.clear()
            return len(refs)

    def purge_dedup(self, before: float) -> int:
        """Forget idempotency keys older than the deduplication window."""
        with self.transaction():
            self._recent_keys()  # current before it is trimmed with the table
            n = self._db.execute("DELETE FROM dedup WHERE seen < ?", (before,)).rowcount
            n += self._db.execute("DELETE FROM dedup_recent WHERE seen < ?", (before,)).rowcount
            self._recent.forget_before(before)  # a rollback leaves rows the window excludes anyway
        return n


def open_store(state_dir: str) -> SqliteStateStore:
    """Open (creating if needed) the embedded state store of a state directory."""
    return SqliteStateStore(state_dir)
