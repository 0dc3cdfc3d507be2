"""The source-side pipeline: one source batch -> normalized events -> one spool transaction.

For each :class:`forwarder.source.SourceBatch`: every record goes to the normalizer of its
kind; a record without data, without a normalizer, or whose normalizer raises is quarantined
with its raw bytes and the reason, and the batch goes on. All or nothing per record: when a
normalizer raises after producing some events, none of that record's events are spooled. Each event gets ``source``,
``source_type``, ``tenant_id`` (when missing) and ``ingest_time``, then the sensitive-value
policy runs. Then, in ONE transaction: deduplication on ``idempotency_key`` within the
window, per-sink filters, appends to every sink's spool (with or without ``raw`` per sink),
ledger counts, quarantined records and the source cursor.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from forwarder.config import Config, PolicySettings, SinkConfig
from forwarder.errors import MalformedRecord
from forwarder.metrics import Metrics
from forwarder.options import FilterOptions
from forwarder.policy import SensitiveValuePolicy
from forwarder.schema import DlpEvent, iso_utc, severity_rank
from forwarder.source import NormalizeContext, Source, SourceBatch
from forwarder.state.base import StateStore

log = logging.getLogger("dlpfwd.pipeline")


@dataclass
class BatchCounts:
    """What one batch did: records read, events normalized/spooled, duplicates, quarantined."""

    read: int = 0
    normalized: int = 0
    spooled: int = 0
    duplicates: int = 0
    quarantined: int = 0
    dropped_oldest: int = 0
    correlation_only: int = 0  # non-DLP alerts read for correlation, indexed and not forwarded
    per_sink: dict[str, int] = field(default_factory=dict)

    def add(self, other: BatchCounts) -> None:
        self.read += other.read
        self.normalized += other.normalized
        self.spooled += other.spooled
        self.duplicates += other.duplicates
        self.quarantined += other.quarantined
        self.dropped_oldest += other.dropped_oldest
        self.correlation_only += other.correlation_only
        for k, v in other.per_sink.items():
            self.per_sink[k] = self.per_sink.get(k, 0) + v

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "normalized": self.normalized,
            "spooled": self.spooled,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
            "dropped_oldest": self.dropped_oldest,
            "correlation_only": self.correlation_only,
        }


def make_filter(f: FilterOptions) -> Callable[[DlpEvent], bool] | None:
    """A predicate for a sink's filter, ``None`` when it lets everything through."""
    kinds = set(f.kinds)
    workloads = {w.lower() for w in f.workloads}
    sources = set(f.sources)
    floor = severity_rank(f.min_severity)
    if not (kinds or workloads or sources or floor):
        return None

    def accept(e: DlpEvent) -> bool:
        return (
            (not kinds or e.kind in kinds)
            and (not workloads or e.workload.lower() in workloads)
            and (not sources or e.source in sources)
            and severity_rank(e.severity) >= floor
        )

    return accept


_WORD = re.compile(r"[^\s'\"`,;:()\[\]{}<>=]{4,}")


def scrub_reason(reason: str, data: Any, kept: bytes) -> str:
    """``reason`` (a normalizer's exception message) without any word of the record that the
    policy scrubbed from the stored copy ``kept``: an exception may quote a matched value
    (``invalid literal for int(): '4111...'``)."""
    if data is None or not reason:
        return reason
    try:
        original = orjson.dumps(data)
    except orjson.JSONEncodeError:
        return reason
    for word in set(_WORD.findall(reason)):
        b = word.encode()
        if b in original and b not in kept:
            reason = reason.replace(word, "***")
    return reason


#: Net new container objects between two young-generation garbage collections (CPython's
#: default is 700). A batch keeps ~60 containers per record alive (parsed record, event) until
#: it is committed, so with 700 the collector ran ~14,000 times per 200,000 records, promoted
#: each batch's objects and then scanned the whole heap ~120 times: ~3 s of a ~25 s backfill
#: (bench_sources, measured with gc.callbacks). Objects freed by reference counting do not
#: count, so at 10,000 it runs a few times per run; cyclic garbage still gets collected.
GC_YOUNG_THRESHOLD = 10_000


def relax_gc() -> None:
    """Raise the young-generation threshold of the garbage collector to
    :data:`GC_YOUNG_THRESHOLD` (never lowers a higher one set by the embedding program)."""
    young, middle, old = gc.get_threshold()
    if 0 < young < GC_YOUNG_THRESHOLD:
        gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def load_policy(settings: PolicySettings) -> Callable[[DlpEvent], Any]:
    """The sensitive-value policy's ``apply``; without ``forwarder.policy`` (not built yet),
    a fallback that drops every matched value (the documented default)."""
    try:
        from forwarder.policy import SensitiveValuePolicy  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return _drop_values
    policy = SensitiveValuePolicy(settings)
    apply: Callable[[DlpEvent], Any] = policy.apply
    return apply


def _drop_values(event: DlpEvent) -> DlpEvent:
    for st in event.sensitive_types:
        st.detected_values = []
    return event


#: (idempotency key, ledger unit, payload per route or None when the route's filter refuses it)
Prepared = tuple[str, str, list[bytes | None]]


@dataclass
class SinkRoute:
    """Where a sink's spool gets events from: its filter and whether it carries ``raw``."""

    name: str
    accept: Callable[[DlpEvent], bool] | None
    carry_raw: bool
    drop_oldest: bool
    max_events: int
    max_bytes: int


class Pipeline:
    """Normalizes source batches and commits them to the spools; see the module docstring."""

    def __init__(
        self,
        config: Config,
        store: StateStore,
        normalizers: dict[str, Callable[..., Any]],
        routes: list[SinkRoute],
        metrics: Metrics,
        on_spooled: Callable[[str], None] | None = None,
        host: Any = None,
    ) -> None:
        self.config = config
        self.store = store
        self.normalizers = normalizers
        self.routes = routes
        self.metrics = metrics
        self.policy = load_policy(config.policy)
        relax_gc()
        self.scrubber = SensitiveValuePolicy(config.policy)  # for quarantined records (never events)
        self.dedup_window = config.forwarder.dedup_window
        self.on_spooled = on_spooled
        self.correlation: Any = None  # forwarder.correlation.stage.CorrelationStage when [correlation] is on
        if getattr(config.correlation, "enabled", False):
            from forwarder.correlation.stage import open_stage

            self.correlation = open_stage(config, host)

    def close(self) -> None:
        """Close the correlation stage, when there is one."""
        if self.correlation is not None:
            self.correlation.close()
            self.correlation = None

    @staticmethod
    def route_for(sc: SinkConfig, carries_raw_default: bool) -> SinkRoute:
        o = sc.options
        return SinkRoute(
            name=sc.name,
            accept=make_filter(o.filter),
            carry_raw=carries_raw_default if o.carry_raw is None else o.carry_raw,
            drop_oldest=o.spool.overflow == "drop_oldest",
            max_events=o.spool.max_events,
            max_bytes=o.spool.max_bytes,
        )

    def process(
        self,
        name: str,
        source_type: str,
        source: Source,
        batch: SourceBatch,
        cursor_key: str,
        only_sink: str | None = None,
        dedup: bool = True,
    ) -> BatchCounts:
        """Normalize ``batch`` and commit it (spools, ledger, quarantine, cursor) atomically."""
        now = time.time()
        ingest = iso_utc(dt.datetime.fromtimestamp(now, dt.UTC))
        default_unit = "-/" + ingest[:10]
        ctx = NormalizeContext(name, source_type, source.tenant_id, source.sit_names, ingest)
        counts = BatchCounts(read=len(batch.records))
        events: list[tuple[DlpEvent, str]] = []
        bad: list[tuple[str, str, bytes, str]] = []  # unit, kind, raw, reason
        normalizers = self.normalizers
        policy = self.policy
        tenant = source.tenant_id
        for rec in batch.records:
            unit = rec.unit or default_unit
            if rec.data is None:
                bad.append((unit, rec.kind, self.quarantine_bytes(None, rec.raw), "record is not valid JSON"))
                continue
            norm = normalizers.get(rec.kind)
            if norm is None:
                reason = f"no normalizer for kind {rec.kind!r}"
                bad.append((unit, rec.kind, self.quarantine_bytes(rec.data, rec.raw), reason))
                continue
            # All or nothing per record: a normalizer (often a generator) that yields some events
            # and then raises has its record quarantined and none of its events spooled.
            produced: list[tuple[DlpEvent, str]] = []
            try:
                for ev in norm(rec.data, ctx):
                    ev.source = name
                    ev.source_type = source_type
                    if not ev.tenant_id:
                        ev.tenant_id = tenant
                    if not ev.ingest_time:
                        ev.ingest_time = ingest
                    result = policy(ev)
                    produced.append((result if isinstance(result, DlpEvent) else ev, unit))
            except MalformedRecord as exc:
                data, raw = (None, exc.raw) if exc.raw else (rec.data, rec.raw)
                raw_bytes = self.quarantine_bytes(data, raw)
                bad.append((unit, rec.kind, raw_bytes, scrub_reason(exc.reason, rec.data, raw_bytes)))
                continue
            except Exception as exc:  # noqa: BLE001 - a faulty normalizer must not stop the pipeline
                reason = f"normalizer for {rec.kind!r} failed: {type(exc).__name__}: {exc}"
                raw_bytes = self.quarantine_bytes(rec.data, rec.raw)
                bad.append((unit, rec.kind, raw_bytes, scrub_reason(reason, rec.data, raw_bytes)))
                continue
            events.extend(produced)
        counts.normalized = len(events)
        counts.quarantined = len(bad)
        announced: list[tuple[str, str]] = []
        if self.correlation is not None:  # index + enrich BEFORE the spool transaction (docs/correlation.md)
            events, announced, counts.correlation_only = self.correlation.process(events, name, source_type, tenant)
        routes = [r for r in self.routes if only_sink is None or r.name == only_sink]
        self._commit(name, batch, cursor_key, events, bad, routes, dedup, now, counts)
        if announced:
            self.correlation.committed(announced)
        m = self.metrics
        m.source(name, "read", counts.read)
        m.source(name, "normalized", counts.normalized)
        m.source(name, "spooled", counts.spooled)
        m.source(name, "duplicates", counts.duplicates)
        m.source(name, "quarantined", counts.quarantined)
        m.source(name, "correlation_only", counts.correlation_only)
        for sink, n in counts.per_sink.items():
            if self.on_spooled and n:
                self.on_spooled(sink)
        if bad:
            log.warning("source %s: quarantined %d record(s) that could not be normalized", name, len(bad))
        return counts

    def quarantine_bytes(self, data: Any, raw: bytes | None) -> bytes:
        """What the quarantine stores for a record that could not be normalized: the record
        (``data``, else ``raw`` parsed as JSON) with matched sensitive values scrubbed by the
        policy, re-serialized. Bytes that are not JSON cannot be scrubbed: they are stored as
        received (``dlpfwd dead-letters list`` shows only their size and digest unless asked
        with ``--show-raw``)."""
        if data is None and raw:
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return bytes(raw)
        if data is None:
            return bytes(raw or b"")
        if not isinstance(data, dict | list):
            return orjson.dumps(data)
        try:
            copy = orjson.loads(orjson.dumps(data))  # the source's object stays as it was
            return orjson.dumps(self.scrubber.scrub(copy))
        except orjson.JSONEncodeError:  # nested too deep to serialize: keep nothing that may hold values
            return b'"[record not kept by dlpfwd: too deeply nested to scrub]"'

    @staticmethod
    def serialize(events: list[tuple[DlpEvent, str]], routes: list[SinkRoute]) -> list[Prepared]:
        """Per event: its key, unit and the payload each route gets (``None``: filtered out).
        Done before the transaction so the writer lock is held only for SQL."""
        plain_needed = any(not r.carry_raw for r in routes)
        raw_needed = any(r.carry_raw for r in routes)
        dumps = orjson.dumps
        out: list[Prepared] = []
        for ev, unit in events:
            with_raw = dumps(ev) if raw_needed else b""
            plain = b""
            if plain_needed:
                if ev.raw is None:
                    plain = with_raw or dumps(ev)
                else:
                    raw, ev.raw = ev.raw, None
                    plain = dumps(ev)
                    ev.raw = raw
            out.append(
                (
                    ev.idempotency_key,
                    unit,
                    [
                        (with_raw if r.carry_raw else plain) if r.accept is None or r.accept(ev) else None
                        for r in routes
                    ],
                )
            )
        return out

    def _commit(
        self,
        name: str,
        batch: SourceBatch,
        cursor_key: str,
        events: list[tuple[DlpEvent, str]],
        bad: list[tuple[str, str, bytes, str]],
        routes: list[SinkRoute],
        dedup: bool,
        now: float,
        counts: BatchCounts,
    ) -> None:
        self.commit(name, batch, cursor_key, self.serialize(events, routes), bad, routes, dedup, now, counts)

    def commit(
        self,
        name: str,
        batch: SourceBatch,
        cursor_key: str,
        prepared: list[Prepared],
        bad: list[tuple[str, str, bytes, str]],
        routes: list[SinkRoute],
        dedup: bool,
        now: float,
        counts: BatchCounts,
    ) -> None:
        """The one transaction of a batch: dedup, spool appends, quarantine, ledger, cursor."""
        unit_ids = sorted({p[1] for p in prepared} | {b[0] for b in bad})  # pure Python: before the lock
        use_dedup = dedup and self.dedup_window > 0 and bool(prepared)
        keys = [p[0] for p in prepared] if use_dedup else []
        if not all(keys):
            keys = [k for k in keys if k]
        with self.store.transaction() as tx:
            if batch.units:
                tx.record_units(name, batch.units, now)
            refs = tx.unit_refs(name, unit_ids, now) if unit_ids else {}
            dup_units: Counter[str] = Counter()
            if use_dedup:
                seen = tx.seen_keys(keys, now - self.dedup_window) if keys else set()
                kept: list[Prepared] = []
                fresh: list[str] = []
                if not seen and len(set(keys)) == len(keys):
                    kept, fresh = prepared, keys  # the common case: nothing seen before, no key twice
                else:
                    for p in prepared:
                        key = p[0]
                        if key:
                            if key in seen:
                                dup_units[p[1]] += 1
                                continue
                            seen.add(key)
                            fresh.append(key)
                        kept.append(p)
                if fresh:
                    tx.remember_keys(fresh, now)
                counts.duplicates = len(prepared) - len(kept)
                prepared = kept
            spooled_units: Counter[str] = Counter(p[1] for p in prepared)
            counts.spooled = len(prepared)
            for index, r in enumerate(routes):
                rows = [(p[2][index], refs[p[1]]) for p in prepared if p[2][index] is not None]
                counts.per_sink[r.name] = tx.append(r.name, rows, now)  # type: ignore[arg-type]
                if r.drop_oldest:
                    dropped = tx.drop_oldest(r.name, r.max_events, r.max_bytes)
                    if dropped:
                        counts.dropped_oldest += dropped
                        self.metrics.sink(r.name, "dropped_oldest", dropped)
                        log.warning(
                            "sink %s: spool full, dropped the %d oldest event(s) (overflow = drop_oldest)",
                            r.name,
                            dropped,
                        )
            for unit, kind, raw_bytes, reason in bad:
                tx.quarantine(name, kind, raw_bytes, reason, refs[unit], now)
            bad_units = Counter(b[0] for b in bad)
            for unit, ref in refs.items():
                tx.add_unit_counts(
                    ref, now, spooled=spooled_units[unit], quarantined=bad_units[unit], duplicates=dup_units[unit]
                )
            tx.add_totals(
                name,
                {
                    "read": counts.read,
                    "spooled": counts.spooled,
                    "duplicates": counts.duplicates,
                    "quarantined": counts.quarantined,
                    "correlation_only": counts.correlation_only,
                },
            )
            if batch.cursor is not None:
                tx.set_cursor(cursor_key, batch.cursor)
            tx.beat(name, now)
