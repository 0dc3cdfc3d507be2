"""The correlation index: keys of DLP events and Defender alerts, and the links between them.

Its own SQLite database, ``correlation.sqlite3`` in the state directory (WAL,
``synchronous=NORMAL``), separate from the state store so that its writes never hold the
spool's writer lock.

Ordering with the spool (index-before-commit): the pipeline indexes a batch's events
*before* the spool transaction of that batch. Every write here is an idempotent upsert keyed
by event id (items, keys) or by the ordered pair (DLP event id, alert id) (links), so if the
process dies between the two, the source cursor has not moved, the batch is read again, and
re-indexing it changes nothing but the batch counter. The opposite order could lose a link:
an event spooled but not indexed would be forgotten by the index for good.

Tables:

* ``items(id, eid, side, t, batch, keys, info)`` -- one row per indexed event id; ``t`` is its
  event time (epoch seconds), ``batch`` the index batch in which it was FIRST seen (kept on
  updates), ``keys`` its keys (newline-separated), ``info`` a JSON summary (title, severity,
  service source, incidents, portal links, users, devices, files).
* ``keys(k, side, t, item)`` -- one row per key of an item: ``k`` is the key's 64-bit hash
  (:func:`key_hash`), ``item`` the item's integer id, so rows are ~25 bytes and the table stays
  in the page cache; primary key ``(k, side, t, item)``: "items of the other side with key k
  within +/- w" is one index range scan.
* ``uinc(k, inc, t)`` -- per user key (hash) and incident, the earliest event time: prior incidents.
* ``links(dlp, alert, reasons, late, announced, batch, created)`` -- each link once, ever
  (within ``max_links``): reasons are merged when a later update adds one.
* ``meta`` -- batch counter, high-water event time, eviction counters.

Bounds: events older than ``retention_days`` before the newest event time seen are expired;
beyond ``max_items`` the oldest events are evicted; beyond ``max_links`` the oldest links.
Each is counted (:meth:`CorrelationIndex.stats`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from cachetools import LRUCache

from forwarder.correlation.keys import RULE_KEYS, SIDE_ALERT, SIDE_DLP, event_keys, service_source, side_of
from forwarder.correlation.settings import CorrelationSettings
from forwarder.schema import DlpEvent, epoch_seconds

DB_NAME = "correlation.sqlite3"
_CHUNK = 500
_RECENT_INFOS = 20_000  # encoded summaries kept in memory (the most recently indexed or read)

SCHEMA_VERSION = 3
_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, eid TEXT NOT NULL UNIQUE, side INTEGER NOT NULL,
    t REAL NOT NULL, batch INTEGER NOT NULL, keys TEXT NOT NULL, info BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS items_t ON items (t);
CREATE TABLE IF NOT EXISTS keys (side INTEGER NOT NULL, day INTEGER NOT NULL, k INTEGER NOT NULL, t REAL NOT NULL,
    item INTEGER NOT NULL, PRIMARY KEY (side, day, k, t, item)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uinc (k INTEGER NOT NULL, inc TEXT NOT NULL, t REAL NOT NULL,
    PRIMARY KEY (k, inc)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS links (dlp TEXT NOT NULL, alert TEXT NOT NULL, reasons TEXT NOT NULL,
    late INTEGER NOT NULL, announced INTEGER NOT NULL DEFAULT 0, batch INTEGER NOT NULL, created REAL NOT NULL,
    UNIQUE (dlp, alert));
CREATE INDEX IF NOT EXISTS links_alert ON links (alert);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value REAL NOT NULL) WITHOUT ROWID;
"""

_USER_PREFIXES = ("upn:", "oid:")  # keys of the user types (upn, oid) start with these
_DELETE_KEY = "DELETE FROM keys WHERE side = ? AND day = ? AND k = ? AND t = ? AND item = ?"
_DROP = "".join(f"DROP TABLE IF EXISTS {t};" for t in ("items", "keys", "uinc", "links", "meta"))

#: (item id, side, event time, first batch, keys joined by newlines, info JSON)
ItemRow = tuple[int, int, float, int, str, bytes]


_HASHED: dict[str, int] = {}  # key -> hash; str keys and int values: a dict the garbage collector never scans
_HASHED_MAX = 65_536


def key_hash(key: str) -> int:
    """The 64-bit hash a key is stored as (a quarter of the text's size: the key table stays
    in the page cache). A collision (p ~ 2^-64 per pair) could only add a wrong reason.

    Users, devices and files recur, so hashes are remembered; the memo is a plain dict, emptied
    when full (an ``lru_cache`` keeps a linked list of tracked nodes that every full garbage
    collection walks, and each new key promotes one more)."""
    h = _HASHED.get(key)
    if h is None:
        h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)
        if len(_HASHED) >= _HASHED_MAX:
            _HASHED.clear()
        _HASHED[key] = h
    return h


_RULE_OF = {t: rule for rule, types in RULE_KEYS.items() for t in types}


@dataclass(frozen=True)
class Link:
    """A link between a DLP event and a Defender alert (index event ids), with its reasons
    (``"<rule>:<key type>"``, sorted). ``late``: found after the DLP event was spooled."""

    dlp: str
    alert: str
    reasons: tuple[str, ...]
    late: bool
    announced: bool

    @property
    def pair(self) -> tuple[str, str]:
        return (self.dlp, self.alert)


@dataclass
class BatchResult:
    """What indexing one batch found, for the enrichers and the correlation events."""

    batch: int = 0
    links: dict[str, list[Link]] = field(default_factory=dict)  # event id -> its links, sorted
    infos: dict[str, dict[str, Any]] = field(default_factory=dict)  # event id -> summary (both sides)
    prior: dict[str, list[str]] = field(default_factory=dict)  # event id -> prior incident ids
    to_announce: list[Link] = field(default_factory=list)  # late links not announced yet


class KeyFilter:
    """A Bloom filter of the key hashes stored for one side (1 MB, 3 bits a key): most keys of
    a DLP event (its file's hashes, name and URL, its message id) have no partner at all, and
    a key the filter has never seen needs no probe. No false negatives: every stored key is
    added before the batch's probes; deleted keys leave their bits (an extra probe, never a
    lost link), and the filter is rebuilt from the table after ``REBUILD_AFTER`` additions."""

    BITS = 1 << 23
    MASK = BITS - 1
    REBUILD_AFTER = 2_000_000

    RECENT = 65_536  # hashes remembered as already added (users and devices recur in every batch)

    def __init__(self) -> None:
        self.bits = bytearray(self.BITS // 8)
        self.added = 0
        self._recent: set[int] = set()

    def add_all(self, hashes: Iterable[int]) -> None:
        bits, mask, recent = self.bits, self.MASK, self._recent
        n = 0
        for h in hashes:
            if h in recent:
                continue  # its bits are set already
            for i in (h & mask, (h >> 23) & mask, ((h >> 41) ^ (h >> 7)) & mask):
                bits[i >> 3] |= 1 << (i & 7)
            recent.add(h)
            n += 1
        if len(recent) > self.RECENT:
            recent.clear()
        self.added += n

    def __contains__(self, h: int) -> bool:  # the same bits as add_all (inlined in the link search)
        bits, mask = self.bits, self.MASK
        for i in (h & mask, (h >> 23) & mask, ((h >> 41) ^ (h >> 7)) & mask):
            if not bits[i >> 3] & (1 << (i & 7)):
                return False
        return True


def _epoch(text: str) -> float | None:
    """:func:`forwarder.schema.epoch_seconds`, with a fast path for the normalized form
    (``iso_utc``: an offset or ``Z``, which ``datetime.fromisoformat`` reads as is)."""
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return epoch_seconds(text)
    if parsed.tzinfo is None:
        return epoch_seconds(text)  # naive means UTC there
    return parsed.timestamp()


def _day(t: float) -> int:
    """The day bucket of an event time: key rows are clustered by (side, day) so that a batch of
    recent events dirties a few pages of the key table, not one random page per key."""
    return int(t // 86400.0)


def _chunks(seq: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(seq), _CHUNK):
        yield seq[i : i + _CHUNK]


def _names(values: Iterable[str]) -> list[str]:
    """Sorted distinct non-empty strings (most events have one policy, rule, SIT or incident)."""
    found = [v for v in values if v]
    if len(found) < 2:
        return found
    return sorted(set(found))


def summary_of(event: DlpEvent, side: int, keys: list[str]) -> dict[str, Any]:
    """The ``info`` kept for an indexed event: what another event's enrichment shows of it."""
    eid = event.id
    raw_id = eid.split(":", 1)[1] if eid.startswith(("alert:", "incident:")) else eid
    users = [k[4:] for k in keys if k.startswith("upn:")]  # keys are sorted and distinct
    device = event.device.name or event.device.id
    obj = event.object
    file = obj.name or obj.url or obj.path
    policies = event.policies
    if not policies:
        names: list[str] = []
        rules: list[str] = []
    elif len(policies) == 1 and len(policies[0].rules) < 2:
        p = policies[0]
        names = [p.name] if p.name else []
        rules = [p.rules[0].name] if p.rules and p.rules[0].name else []
    else:
        names = _names([p.name for p in policies])
        rules = _names([r.name for p in policies for r in p.rules])
    sits = event.sensitive_types
    incidents = event.related.incident_ids
    return {
        "id": raw_id,
        "kind": event.kind,
        "side": side,
        "title": event.title,
        "severity": event.severity,
        "service_source": service_source(event),
        "time": event.event_time,
        "operation": event.operation,
        "source": event.source,
        "policies": names,
        "rules": rules,
        "sits": _names([st.name or st.id for st in sits]) if sits else [],  # names only, never values
        "incidents": _names(incidents) if incidents else [],
        "alert_url": event.links.alert,
        "incident_url": event.links.incident,
        "users": users,
        "devices": [device] if device else [],
        "files": [file] if file else [],
    }


class CorrelationIndex:
    """The index; thread-safe (one connection behind a lock). See the module docstring."""

    def __init__(self, state_dir: str, settings: CorrelationSettings) -> None:
        os.makedirs(state_dir, exist_ok=True)
        self.path = os.path.join(state_dir, DB_NAME)
        self.settings = settings
        self.windows = {
            rule: r.window_minutes * 60.0 for rule, r in settings.rules().items() if r.enabled
        }  # rule -> seconds (0 = any)
        # key type -> (reason, window seconds) for the enabled rules
        self._probe_spec = {
            kt: (f"{rule}:{kt}", self.windows[rule]) for kt, rule in _RULE_OF.items() if rule in self.windows
        }
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db = self._db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA cache_size=-32000")  # 32 MB page cache: bounded, holds the hot part of the key index
        db.execute("PRAGMA wal_autocheckpoint=8000")  # checkpoint every ~32 MB of WAL, not every 4 MB
        db.execute("PRAGMA journal_size_limit=67108864")
        db.execute("PRAGMA busy_timeout=30000")
        if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            db.executescript(_DROP)  # an index of an older layout: rebuilt (it is derived data)
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        # encoded summaries of recent items: bytes, so the garbage collector never scans them
        # (first in, first out: an OrderedDict costs a fraction of an LRUCache per insert)
        self._infos: OrderedDict[str, bytes] = OrderedDict()
        # decoded summaries of the partners linked most recently (alerts linked to many events):
        # read-only dicts shared by the batches' results, so no JSON round trip per event
        self._decoded: LRUCache[str, dict[str, Any]] = LRUCache(maxsize=2_048)
        self._load_memory(db, db.execute("PRAGMA data_version").fetchone()[0])

    # ------------------------------------------------------------------ plumbing

    def _load_memory(self, db: sqlite3.Connection, data_version: int) -> None:
        """(Re)load what is kept in memory from the database: at start, and when another
        connection wrote (``PRAGMA data_version`` moved to ``data_version``)."""
        self._next_id = (db.execute("SELECT max(id) FROM items").fetchone()[0] or 0) + 1
        self._filters = self._load_filters(db)
        self._known = self._load_known(db)
        self._meta = {name: value for name, value in db.execute("SELECT name, value FROM meta")}
        self._items = db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        self._links = db.execute("SELECT COUNT(*) FROM links").fetchone()[0]
        self._infos.clear()
        self._decoded.clear()
        self._data_version = data_version

    def _load_filters(self, db: sqlite3.Connection) -> dict[int, KeyFilter]:
        filters = {SIDE_DLP: KeyFilter(), SIDE_ALERT: KeyFilter()}
        for side, f in filters.items():
            f.add_all(h for (h,) in db.execute("SELECT k FROM keys WHERE side = ?", (side,)))
            f.added = 0
        return filters

    def _load_known(self, db: sqlite3.Connection) -> KeyFilter:
        """A filter of the event ids the index has (or had) rows for: items and both ends of links
        (links outlive their items). An id it has never seen has no item and no link, so the
        batch's lookups skip it (most events are new). In memory only: ``hash()`` is per process."""
        known = KeyFilter()
        for sql in ("SELECT eid FROM items", "SELECT dlp FROM links", "SELECT alert FROM links"):
            known.add_all(hash(eid) for (eid,) in db.execute(sql))
        known.added = 0
        return known

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _set_meta(self, db: sqlite3.Connection, name: str, value: float) -> None:
        self._meta[name] = value
        db.execute(
            "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    def _fetch_items(self, db: sqlite3.Connection, eids: Iterable[str]) -> dict[str, ItemRow]:
        found: dict[str, ItemRow] = {}
        ids = sorted(set(eids))
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT eid, id, side, t, batch, keys, info FROM items WHERE eid IN ({marks})"  # noqa: S608
            for eid, *row in db.execute(sql, chunk):
                found[eid] = tuple(row)
        return found

    def _delete_items(self, db: sqlite3.Connection, rows: list[tuple[int, str, int, float, str]]) -> None:
        """Delete items given as (id, eid, side, t, keys)."""
        stale = [
            (side, _day(t), key_hash(k), t, item) for item, _eid, side, t, keys in rows for k in keys.split("\n") if k
        ]
        db.executemany(_DELETE_KEY, stale)
        db.executemany("DELETE FROM items WHERE id = ?", [(r[0],) for r in rows])
        for r in rows:
            self._infos.pop(r[1], None)
            self._decoded.pop(r[1], None)
        self._items -= len(rows)

    # ------------------------------------------------------------------ indexing

    def index_batch(self, events: Sequence[DlpEvent], now: float | None = None) -> BatchResult:
        """Index ``events`` (idempotently), find their links, return what enrichment needs.

        Deterministic: the links and reasons depend only on the events indexed so far, not on
        the order of events within or across batches."""
        now = time.time() if now is None else now
        entries: dict[str, tuple[DlpEvent, int, float, list[str]]] = {}
        for ev in events:
            side = side_of(ev)
            if side is None or not ev.id:
                continue
            t = _epoch(ev.event_time) or epoch_seconds(ev.updated_time) or epoch_seconds(ev.ingest_time)
            if t is None:
                continue
            keys = event_keys(ev)
            prev = entries.get(ev.id)
            if prev is not None:
                keys = sorted(set(keys) | set(prev[3]))
            entries[ev.id] = (ev, side, t, keys)
        result = BatchResult()
        if not entries:
            return result
        with self._tx() as db:
            version = db.execute("PRAGMA data_version").fetchone()[0]
            if version != self._data_version:  # another connection wrote: reload what is kept in memory
                self._load_memory(db, version)
            batch = int(self._meta.get("batch", 0)) + 1
            self._set_meta(db, "batch", batch)
            result.batch = batch
            known = self._known
            known_before = [eid for eid in entries if hash(eid) in known]  # the others are new: no item, no link
            known.add_all(hash(eid) for eid in entries)  # before any link to them is stored
            existing = self._fetch_items(db, known_before) if known_before else {}
            first_batch: dict[str, int] = {}
            high = self._meta.get("high_water", 0.0)
            stale: list[tuple[int, int, int, float, int]] = []
            item_rows: list[tuple[int, str, int, float, int, str, bytes]] = []
            key_rows: list[tuple[int, int, int, float, int]] = []
            uinc_rows: list[tuple[int, str, float]] = []
            infos = self._infos
            decoded = self._decoded
            added: dict[int, list[int]] = {SIDE_DLP: [], SIDE_ALERT: []}  # key hashes for the filters, per side
            hashes_of: dict[str, list[int]] = {}  # entry id -> hashes of its keys (same order)
            for eid, (ev, side, t, keys) in entries.items():
                old = existing.get(eid)
                first_batch[eid] = batch
                if old is not None:
                    item, old_side, old_t, old_batch, old_keys_text, _old_info = old
                    old_keys = [k for k in old_keys_text.split("\n") if k]
                    keys = sorted(set(keys) | set(old_keys))
                    entries[eid] = (ev, side, t, keys)
                    first_batch[eid] = old_batch
                    stale.extend((old_side, _day(old_t), key_hash(k), old_t, item) for k in old_keys)
                else:
                    item = self._next_id
                    self._next_id += 1
                    self._items += 1
                info = summary_of(ev, side, keys)
                result.infos[eid] = info
                encoded = orjson.dumps(info)
                if side == SIDE_ALERT:  # the side most links point at: DLP summaries are read back rarely
                    infos[eid] = bytes(memoryview(encoded))  # exact size: orjson's own buffer keeps ~4 KB
                    if len(infos) > _RECENT_INFOS:
                        infos.popitem(last=False)
                elif old is not None:
                    infos.pop(eid, None)  # an update replaces the summary
                if decoded:
                    decoded.pop(eid, None)
                item_rows.append((item, eid, side, t, first_batch[eid], "\n".join(keys), encoded))
                hashes = hashes_of[eid] = [key_hash(k) for k in keys]
                day = _day(t)
                key_rows += [(side, day, h, t, item) for h in hashes]
                added[side] += hashes
                incidents = info["incidents"]
                if incidents:
                    uinc_rows.extend(
                        (h, inc, t) for k, h in zip(keys, hashes, strict=True) if k.startswith(_USER_PREFIXES)
                        for inc in incidents
                    )  # fmt: skip
                if t > high:
                    high = t
            for side, hashes in added.items():
                self._filters[side].add_all(hashes)  # before the probes: no false negatives within the batch
            if stale:
                db.executemany(_DELETE_KEY, stale)
            db.executemany(
                "INSERT INTO items (id, eid, side, t, batch, keys, info) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (eid) DO UPDATE SET side = excluded.side, t = excluded.t, keys = excluded.keys, "
                "info = excluded.info",
                item_rows,
            )
            db.executemany("INSERT OR IGNORE INTO keys (side, day, k, t, item) VALUES (?, ?, ?, ?, ?)", key_rows)
            if uinc_rows:
                db.executemany(
                    "INSERT INTO uinc (k, inc, t) VALUES (?, ?, ?) "
                    "ON CONFLICT (k, inc) DO UPDATE SET t = min(t, excluded.t)",
                    uinc_rows,
                )
            self._set_meta(db, "high_water", high)
            pairs = self._find_pairs(db, entries, hashes_of)
            self._store_links(db, pairs, entries, first_batch, batch, now)
            self._collect(db, entries, hashes_of, result, known_before, pairs)
            self._bound(db)
        return result

    def _find_pairs(
        self,
        db: sqlite3.Connection,
        entries: dict[str, tuple[DlpEvent, int, float, list[str]]],
        hashes_of: dict[str, list[int]],
    ) -> dict[tuple[str, str], set[str]]:
        """(DLP id, alert id) -> reasons, for every partner of every entry on the other side."""
        pairs: dict[tuple[str, str], set[str]] = {}
        probes: list[tuple[int, int, int, int, float, float]] = []  # (probe number, other side, day, hash, lo, hi)
        meta: list[tuple[str, str]] = []  # probe number -> (entry id, reason)
        span: tuple[int, int] | None = None  # days holding items, for rules without a window
        spec = self._probe_spec
        mask = KeyFilter.MASK
        for eid, (_ev, side, t, keys) in entries.items():
            other = SIDE_ALERT if side == SIDE_DLP else SIDE_DLP
            bits = self._filters[other].bits
            for k, h in zip(keys, hashes_of[eid], strict=True):
                # ``h in KeyFilter``, inlined (one call less per key)
                i, j, m = h & mask, (h >> 23) & mask, ((h >> 41) ^ (h >> 7)) & mask
                if not (bits[i >> 3] >> (i & 7) & 1 and bits[j >> 3] >> (j & 7) & 1 and bits[m >> 3] >> (m & 7) & 1):
                    continue  # no event of the other side ever had this key
                found = spec.get(k[: k.find(":")])
                if found is None:
                    continue
                reason, w = found
                n = len(meta)
                meta.append((eid, reason))
                if w > 0:
                    lo, hi = t - w, t + w
                    first, last = int(lo // 86400.0), int(hi // 86400.0)
                    if first == last:
                        probes.append((n, other, first, h, lo, hi))
                        continue
                else:
                    lo, hi = -1e18, 1e18
                    if span is None:
                        tmin, tmax = db.execute("SELECT min(t), max(t) FROM items").fetchone()
                        span = (_day(tmin), _day(tmax)) if tmin is not None else (0, -1)
                    first, last = span
                for d in range(first, last + 1):
                    probes.append((n, other, d, h, lo, hi))
        # one statement per chunk of probes: a VALUES list joined on the (side, day, k, t) primary key
        per = 150  # 6 variables each
        for i in range(0, len(probes), per):
            chunk = probes[i : i + per]
            values = ",".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk))
            args = [x for p in chunk for x in p]
            sql = (
                f"WITH q(n, side, day, k, lo, hi) AS (VALUES {values}) "  # noqa: S608 - placeholders only
                "SELECT q.n, items.eid FROM q JOIN keys ON keys.side = q.side AND keys.day = q.day AND keys.k = q.k "
                "AND keys.t BETWEEN q.lo AND q.hi JOIN items ON items.id = keys.item"
            )
            for n, partner in db.execute(sql, args):
                eid, reason = meta[n]
                pair = (eid, partner) if entries[eid][1] == SIDE_DLP else (partner, eid)
                reasons = pairs.get(pair)
                if reasons is None:
                    reasons = pairs[pair] = set()
                reasons.add(reason)
        return pairs

    def _store_links(
        self,
        db: sqlite3.Connection,
        pairs: dict[tuple[str, str], set[str]],
        entries: dict[str, Any],
        first_batch: dict[str, int],
        batch: int,
        now: float,
    ) -> None:
        if not pairs:
            return
        dlp_ids = sorted({d for d, _ in pairs})
        known: dict[tuple[str, str], str] = {}
        for chunk in _chunks(dlp_ids):
            marks = ",".join("?" * len(chunk))
            for d, a, reasons in db.execute(
                f"SELECT dlp, alert, reasons FROM links WHERE dlp IN ({marks})",  # noqa: S608 - placeholders only
                chunk,
            ):
                known[(d, a)] = reasons
        outside = self._fetch_items(db, [d for d in dlp_ids if d not in entries])
        inserts: list[tuple[str, str, str, int, int, float]] = []
        updates: list[tuple[str, str, str]] = []
        for pair in sorted(pairs):
            reasons = pairs[pair]
            old = known.get(pair)
            if old is None:
                d = pair[0]
                # late: the DLP side was spooled in an earlier batch, so it cannot carry the link
                late = d not in entries and d in outside and outside[d][3] < batch
                inserts.append((pair[0], pair[1], ",".join(sorted(reasons)), int(late), batch, now))
            else:
                merged = ",".join(sorted(set(old.split(",")) | reasons))
                if merged != old:
                    updates.append((merged, pair[0], pair[1]))
        if inserts:  # one statement per batch, not one per link
            db.executemany(
                "INSERT INTO links (dlp, alert, reasons, late, batch, created) VALUES (?, ?, ?, ?, ?, ?)", inserts
            )
            self._links += len(inserts)
        if updates:
            db.executemany("UPDATE links SET reasons = ? WHERE dlp = ? AND alert = ?", updates)

    def _collect(
        self,
        db: sqlite3.Connection,
        entries: dict[str, tuple[DlpEvent, int, float, list[str]]],
        hashes_of: dict[str, list[int]],
        result: BatchResult,
        known_before: list[str],
        pairs: dict[tuple[str, str], set[str]],
    ) -> None:
        links: dict[str, list[Link]] = {eid: [] for eid in entries}
        # links of an entry: stored in earlier batches (only if the id was seen before) or in this one
        linked = set(known_before)
        for d, a in pairs:
            linked.add(d)
            linked.add(a)
        dlp = sorted(e for e, v in entries.items() if v[1] == SIDE_DLP and e in linked)
        alerts = sorted(e for e, v in entries.items() if v[1] == SIDE_ALERT and e in linked)
        seen: set[tuple[str, str]] = set()
        for column, ids in (("dlp", dlp), ("alert", alerts)):
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                for d, a, reasons, late, announced in db.execute(
                    f"SELECT dlp, alert, reasons, late, announced FROM links WHERE {column} IN ({marks})",  # noqa: S608
                    chunk,
                ):
                    if (d, a) in seen:
                        continue
                    seen.add((d, a))
                    link = Link(d, a, tuple(reasons.split(",")), bool(late), bool(announced))
                    for end in (d, a):
                        if end in links:
                            links[end].append(link)
                    if link.late and not link.announced:
                        result.to_announce.append(link)
        partners = {lk.alert for ls in links.values() for lk in ls} | {lk.dlp for ls in links.values() for lk in ls}
        missing = []
        decoded = self._decoded
        for p in partners:
            if p not in result.infos:
                info = decoded.get(p)
                if info is not None:
                    result.infos[p] = info
                    continue
                cached = self._infos.get(p)
                if cached is None:
                    missing.append(p)
                else:
                    result.infos[p] = decoded[p] = orjson.loads(cached)
        for eid, row in self._fetch_items(db, missing).items():
            result.infos[eid] = decoded[eid] = orjson.loads(row[5])
            self._infos[eid] = row[5]
            if len(self._infos) > _RECENT_INFOS:
                self._infos.popitem(last=False)
        for ls in links.values():
            ls.sort(key=lambda lk: (lk.dlp, lk.alert))
        result.links = links
        result.to_announce.sort(key=lambda lk: lk.pair)
        # prior incidents: incidents of the same user first seen within N days before the event
        days = self.settings.prior_incident_days * 86400.0
        if days > 0:
            user_keys = {
                e: [h for k, h in zip(v[3], hashes_of[e], strict=True) if k.startswith(_USER_PREFIXES)]
                for e, v in entries.items()
            }
            wanted = sorted({h for hs in user_keys.values() for h in hs})
            known: dict[int, list[tuple[str, float]]] = {}
            times = [v[2] for v in entries.values()]
            lo, hi = min(times) - days, max(times)  # only the incidents that can be prior to one of them
            for i in range(0, len(wanted), _CHUNK):
                part = wanted[i : i + _CHUNK]
                marks = ",".join("?" * len(part))
                sql = f"SELECT k, inc, t FROM uinc WHERE k IN ({marks}) AND t >= ? AND t < ?"  # noqa: S608
                for k, inc, first in db.execute(sql, [*part, lo, hi]):
                    known.setdefault(k, []).append((inc, first))
            for eid, (_ev, _side, t, _keys) in entries.items():
                hs = [h for h in user_keys[eid] if h in known]
                if not hs:
                    result.prior[eid] = []
                    continue
                found = {inc for h in hs for inc, first in known[h] if t - days <= first < t}
                own = set(result.infos[eid]["incidents"])
                result.prior[eid] = sorted(found - own, key=lambda s: (len(s), s))

    def _bound(self, db: sqlite3.Connection) -> None:
        """Expire events past the retention window, evict the oldest beyond max_items / max_links;
        rebuild the key filters once they have taken many additions (deleted keys leave bits)."""
        if any(f.added > KeyFilter.REBUILD_AFTER for f in self._filters.values()):
            self._filters = self._load_filters(db)
        if self._known.added > KeyFilter.REBUILD_AFTER:
            self._known = self._load_known(db)
        s = self.settings
        cutoff = self._meta.get("high_water", 0.0) - s.retention_days * 86400.0
        if cutoff > self._meta.get("expired_before", 0.0) + 60.0:
            rows = db.execute("SELECT id, eid, side, t, keys FROM items WHERE t < ?", (cutoff,)).fetchall()
            if rows:
                self._delete_items(db, rows)
                self._set_meta(db, "expired", self._meta.get("expired", 0) + len(rows))
            db.execute("DELETE FROM uinc WHERE t < ?", (cutoff,))
            self._set_meta(db, "expired_before", cutoff)
        if self._items > s.max_items:
            excess = self._items - s.max_items
            rows = db.execute("SELECT id, eid, side, t, keys FROM items ORDER BY t, eid LIMIT ?", (excess,)).fetchall()
            self._delete_items(db, rows)
            self._set_meta(db, "evicted", self._meta.get("evicted", 0) + len(rows))
        if self._links > s.max_links:
            excess = self._links - s.max_links
            n = db.execute(
                "DELETE FROM links WHERE rowid IN (SELECT rowid FROM links ORDER BY rowid LIMIT ?)", (excess,)
            ).rowcount
            self._links -= n
            self._set_meta(db, "links_evicted", self._meta.get("links_evicted", 0) + n)

    # ------------------------------------------------------------------ after the spool commit

    def mark_announced(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Record that the correlation events of these links are in the spool (after its commit)."""
        rows = sorted(set(pairs))
        if not rows:
            return
        with self._tx() as db:
            db.executemany("UPDATE links SET announced = 1 WHERE dlp = ? AND alert = ?", rows)

    # ------------------------------------------------------------------ inspection

    def links(self) -> list[Link]:
        """Every link remembered, sorted (tests, ``dlpfwd`` inspection)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT dlp, alert, reasons, late, announced FROM links ORDER BY dlp, alert"
            ).fetchall()
        return [Link(d, a, tuple(r.split(",")), bool(late), bool(ann)) for d, a, r, late, ann in rows]

    def stats(self) -> dict[str, Any]:
        """Size and cost of the index: rows, evictions, file size (for ``dlpfwd state``)."""
        with self._lock:
            db = self._db
            keys = db.execute("SELECT COUNT(*) FROM keys").fetchone()[0]
        size = 0
        for suffix in ("", "-wal"):
            try:
                size += os.path.getsize(self.path + suffix)
            except OSError:
                pass
        return {
            "items": self._items,
            "keys": keys,
            "links": self._links,
            "max_items": self.settings.max_items,
            "expired": int(self._meta.get("expired", 0)),
            "evicted": int(self._meta.get("evicted", 0)),
            "links_evicted": int(self._meta.get("links_evicted", 0)),
            "bytes": size,
        }

    def close(self) -> None:
        with self._lock:
            self._db.close()


def index_stats(state_dir: str) -> dict[str, Any] | None:
    """Read-only stats of the index in ``state_dir``; ``None`` when there is none."""
    path = os.path.join(state_dir, DB_NAME)
    if not os.path.exists(path):
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        items = db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        links = db.execute("SELECT COUNT(*) FROM links").fetchone()[0]
        meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
    finally:
        db.close()
    size = sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))
    return {
        "items": items,
        "links": links,
        "expired": int(meta.get("expired", 0)),
        "evicted": int(meta.get("evicted", 0)),
        "links_evicted": int(meta.get("links_evicted", 0)),
        "bytes": size,
    }
