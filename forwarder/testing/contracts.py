"""Contract test suites for source, sink and normalizer plugins.

Subclass one in a ``test_*.py`` file (the class name must start with ``Test``) and provide the
fixture it asks for; every built-in plugin passes these suites too::

    import pytest
    from forwarder.testing import SinkContractTests, sink_context

    class TestMySink(SinkContractTests):
        @pytest.fixture
        def sink(self, tmp_path):
            return MySink("t", MySettings(url=...), sink_context("t"))

A sink may also override :meth:`SinkContractTests.delivered` to read back what reached its
destination, which turns on the round-trip checks.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import typing
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from forwarder.errors import MalformedRecord, NotSupported
from forwarder.policy import SensitiveValuePolicy
from forwarder.schema import DlpEvent, from_json, to_json
from forwarder.sink import Entry, Health, Outcome, Sink, SinkContext
from forwarder.source import NormalizeContext, Source, SourceBatch, SourceContext
from forwarder.testing.events import HOSTILE_STRINGS, hostile_event, sample_events


class MemoryState(dict[str, Any]):
    """Stands in for the host's durable key-value ``state`` namespace
    (``get(key, default)``, ``put(key, value)``, ``delete(key)``; JSON values)."""

    def put(self, key: str, value: Any) -> None:
        self[key] = orjson.loads(orjson.dumps(value))  # JSON values only, as the real store

    def delete(self, key: str) -> None:
        self.pop(key, None)


def sink_context(name: str = "test", state_dir: str = "") -> SinkContext:
    """A :class:`SinkContext` with a logger, an in-memory state and a counter dict (``.counters``)."""
    counters: dict[str, int] = {}

    def count(counter: str, n: int) -> None:
        counters[counter] = counters.get(counter, 0) + n

    ctx = SinkContext(name, logging.getLogger(f"dlpfwd.test.sink.{name}"), MemoryState(), count, state_dir)
    ctx.counters = counters  # type: ignore[attr-defined]
    return ctx


def source_context(name: str = "test") -> SourceContext:
    """A :class:`SourceContext` with a logger, in-memory state, no ledger and a counter dict."""
    counters: dict[str, int] = {}

    def count(counter: str, n: int) -> None:
        counters[counter] = counters.get(counter, 0) + n

    ctx = SourceContext(name, logging.getLogger(f"dlpfwd.test.source.{name}"), None, count, MemoryState())
    ctx.counters = counters  # type: ignore[attr-defined]
    return ctx


def make_entries(events: Sequence[DlpEvent], start_id: int = 1, scrub: bool = True) -> list[Entry]:
    """Spool entries for ``events`` (after the default sensitive-value policy when ``scrub``)."""
    policy = SensitiveValuePolicy()
    entries = []
    for i, event in enumerate(events):
        if scrub:
            policy.apply(event)
        entries.append(Entry(start_id + i, to_json(event)))
    return entries


def assert_accounted(entries: Sequence[Entry], outcome: Outcome) -> None:
    """Every entry appears in exactly one bucket of ``outcome``, and no unknown id does."""
    ids = [e.id for e in entries]
    buckets = {
        "delivered": list(outcome.delivered),
        "retry": list(outcome.retry),
        "rejected": list(outcome.rejected),
        "pending": list(outcome.pending),
    }
    seen: dict[int, str] = {}
    for bucket, members in buckets.items():
        for i in members:
            assert i in ids, f"outcome.{bucket} names id {i}, which was not in the batch"
            assert i not in seen, f"id {i} is in both outcome.{seen[i]} and outcome.{bucket}"
            seen[i] = bucket
    missing = [i for i in ids if i not in seen]
    assert not missing, f"entries not accounted for in the outcome: {missing[:10]}"
    for i, reason in outcome.rejected.items():
        assert isinstance(reason, str) and reason, f"rejected id {i} has no reason"


def assert_settings_documented(cls: type) -> None:
    """``settings_class`` is a dataclass whose every field has a ``doc`` (recursively)."""
    settings = getattr(cls, "settings_class", None)
    assert settings is not None and dataclasses.is_dataclass(settings), "settings_class must be a dataclass"
    hints = typing.get_type_hints(settings)
    for f in dataclasses.fields(settings):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            continue
        assert f.metadata.get("doc"), (
            f"{getattr(settings, '__name__', settings)}.{f.name} has no doc (use forwarder.settings.setting)"
        )


class SinkContractTests:
    """The sink contract. Provide a ``sink`` fixture returning a fresh, unconnected sink."""

    #: Seconds to wait for pending entries to settle through ``poll_acks``.
    ack_deadline: float = 10.0

    def delivered(self, sink: Sink) -> list[dict[str, Any]] | None:
        """Override to return the events that reached the destination (as JSON objects with
        at least an ``id`` or the formatter's id field); ``None`` skips round-trip checks."""
        return None

    def delivered_ids(self, records: list[dict[str, Any]]) -> set[str]:
        """Ids of delivered records; override when the layout does not keep ``id``."""
        return {str(r.get("id")) for r in records}

    # ------------------------------------------------------------------ helpers

    def deliver(self, sink: Sink, entries: Sequence[Entry]) -> Outcome:
        """``write_batch`` then ``poll_acks`` until nothing is pending (or the deadline passes)."""
        outcome = sink.write_batch(entries)
        assert isinstance(outcome, Outcome), "write_batch must return an Outcome"
        assert_accounted(entries, outcome)
        pending = set(outcome.pending)
        deadline = time.monotonic() + self.ack_deadline
        while pending and time.monotonic() < deadline:
            acks = sink.poll_acks()
            assert isinstance(acks, Outcome), "poll_acks must return an Outcome"
            settled = set(acks.delivered) | set(acks.retry) | set(acks.rejected)
            outcome.delivered.extend(i for i in acks.delivered if i in pending)
            outcome.retry.extend(i for i in acks.retry if i in pending)
            outcome.rejected.update({i: r for i, r in acks.rejected.items() if i in pending})
            pending -= settled
            if pending:
                time.sleep(0.05)
        outcome.pending = [i for i in outcome.pending if i in pending]
        return outcome

    # ------------------------------------------------------------------ tests

    def test_settings_class_is_a_documented_dataclass(self, sink: Sink) -> None:
        assert_settings_documented(type(sink))

    def test_batch_limits_are_sane(self, sink: Sink) -> None:
        assert isinstance(sink.max_batch_events, int) and sink.max_batch_events >= 1
        assert isinstance(sink.max_batch_bytes, int) and sink.max_batch_bytes >= 0

    def test_empty_batch(self, sink: Sink) -> None:
        sink.connect()
        try:
            outcome = sink.write_batch([])
            assert isinstance(outcome, Outcome)
            assert not (outcome.delivered or outcome.retry or outcome.rejected or outcome.pending)
        finally:
            sink.close()

    def test_every_entry_is_accounted_for(self, sink: Sink) -> None:
        entries = make_entries(sample_events())
        sink.connect()
        try:
            outcome = self.deliver(sink, entries)
            assert outcome.fatal is None, outcome.fatal
            assert len(outcome.delivered) + len(outcome.rejected) == len(entries), (
                f"well-formed events were not delivered: retry={outcome.retry} reason={outcome.retry_reason}"
            )
        finally:
            sink.close()
        records = self.delivered(sink)
        if records is not None:
            got = self.delivered_ids(records)
            for entry in entries:
                if entry.id in outcome.delivered:
                    assert entry.event.id in got, f"event {entry.event.id} reported delivered but not found"

    def test_large_batch(self, sink: Sink) -> None:
        n = min(sink.max_batch_events, 2000)
        base = sample_events()
        events = []
        for i in range(n):
            event = from_json(to_json(base[i % len(base)]))
            event.id = event.idempotency_key = f"bulk-{i}"
            events.append(event)
        entries = make_entries(events)
        if sink.max_batch_bytes:
            kept, size = [], 0
            for e in entries:
                if size + len(e.payload) > sink.max_batch_bytes:
                    break
                kept.append(e)
                size += len(e.payload)
            entries = kept
        sink.connect()
        try:
            outcome = self.deliver(sink, entries)
            assert outcome.fatal is None, outcome.fatal
            assert len(outcome.delivered) == len(entries), f"{len(entries) - len(outcome.delivered)} not delivered"
        finally:
            sink.close()

    def test_hostile_strings_are_delivered_intact(self, sink: Sink) -> None:
        entries = make_entries([hostile_event(i) for i in range(len(HOSTILE_STRINGS))])
        sink.connect()
        try:
            outcome = self.deliver(sink, entries)
            assert outcome.fatal is None, outcome.fatal
            assert_accounted(entries, outcome)
            assert not outcome.retry, f"hostile strings caused retries: {outcome.retry_reason}"
        finally:
            sink.close()
        records = self.delivered(sink)
        if records is not None:
            assert len(records) >= len(outcome.delivered)

    def test_no_raw_sensitive_value_reaches_the_destination(self, sink: Sink) -> None:
        entries = make_entries(sample_events())
        sink.connect()
        try:
            self.deliver(sink, entries)
        finally:
            sink.close()
        records = self.delivered(sink)
        if records is not None:
            blob = orjson.dumps(records)
            assert b"4111111111111111" not in blob and b"5500000000000004" not in blob

    def test_close_is_idempotent(self, sink: Sink) -> None:
        sink.connect()
        sink.close()
        sink.close()

    def test_close_without_connect(self, sink: Sink) -> None:
        sink.close()

    def test_health_returns_health(self, sink: Sink) -> None:
        health = sink.health()
        assert isinstance(health, Health)
        assert health.checks, "health() should report at least one check"

    def test_poll_acks_without_pending_is_empty(self, sink: Sink) -> None:
        sink.connect()
        try:
            acks = sink.poll_acks()
            assert isinstance(acks, Outcome)
            assert not (acks.delivered or acks.retry or acks.rejected)
        finally:
            sink.close()


class SourceContractTests:
    """The source contract. Provide a ``source`` fixture returning a fresh, unconnected source
    that has at least one record to read."""

    #: Most batches read in one poll by these tests (a guard against endless sources).
    max_batches: int = 10_000

    def read_all(self, source: Source, cursor: dict[str, Any] | None) -> list[SourceBatch]:
        batches = []
        for batch in source.poll(cursor):
            assert isinstance(batch, SourceBatch), "poll must yield SourceBatch objects"
            batches.append(batch)
            assert len(batches) <= self.max_batches, "poll did not return"
        return batches

    def test_settings_class_is_a_documented_dataclass(self, source: Source) -> None:
        assert_settings_documented(type(source))

    def test_poll_yields_records_with_kinds_and_json_cursors(self, source: Source) -> None:
        source.connect()
        try:
            batches = self.read_all(source, None)
        finally:
            source.close()
        records = [r for b in batches for r in b.records]
        assert records, "the fixture's source should have records to read"
        for record in records:
            assert isinstance(record.kind, str) and record.kind
            assert record.data is not None or record.raw is not None, "a record needs data or raw bytes"
        for batch in batches:
            if batch.cursor is not None:
                assert orjson.loads(orjson.dumps(batch.cursor)) == batch.cursor, "cursor must be JSON"

    def test_resuming_from_the_last_cursor_reads_nothing_again(self, source: Source) -> None:
        source.connect()
        try:
            batches = self.read_all(source, None)
            cursor = next((b.cursor for b in reversed(batches) if b.cursor is not None), None)
            again = self.read_all(source, cursor)
        finally:
            source.close()
        assert not [r for b in again for r in b.records], "records were read twice from the same cursor"

    def test_backfill_is_supported_or_says_why(self, source: Source) -> None:
        import datetime as dt

        source.connect()
        try:
            now = dt.datetime.now(dt.UTC)
            try:
                for batch in source.backfill(now - dt.timedelta(days=1), now, None):
                    assert isinstance(batch, SourceBatch)
            except NotSupported as exc:
                assert str(exc)
        finally:
            source.close()

    def test_close_is_idempotent(self, source: Source) -> None:
        source.connect()
        source.close()
        source.close()

    def test_health_returns_health(self, source: Source) -> None:
        health = source.health()
        assert isinstance(health, Health) and health.checks


class NormalizerContractTests:
    """The normalizer contract. Provide a ``normalizer`` fixture (the callable) and a
    ``records`` fixture (a list of raw record JSON objects it should accept)."""

    def context(self) -> NormalizeContext:
        return NormalizeContext(source="test", source_type="test", tenant_id="t", ingest_time="2026-01-01T00:00:00Z")

    def normalize(self, normalizer: Any, record: Any) -> list[DlpEvent]:
        events = normalizer(record, self.context())
        assert isinstance(events, list), "a normalizer returns a list"
        for event in events:
            assert isinstance(event, DlpEvent)
        return events

    def test_events_have_ids_and_round_trip(self, normalizer: Any, records: list[dict[str, Any]]) -> None:
        for record in records:
            for event in self.normalize(normalizer, record):
                assert event.id and event.idempotency_key, "events need an id and an idempotency key"
                assert from_json(to_json(event)) == event

    def test_missing_fields_never_crash(self, normalizer: Any, records: list[dict[str, Any]]) -> None:
        for record in records:
            for key in list(record):
                trimmed = {k: v for k, v in record.items() if k != key}
                try:
                    self.normalize(normalizer, trimmed)
                except MalformedRecord:
                    pass

    def test_wrong_types_never_crash(self, normalizer: Any, records: list[dict[str, Any]]) -> None:
        for record in records:
            for key in list(record):
                bad_values: list[Any] = [None, 7, "x", [], {}, True]
                for bad in bad_values:
                    mutated = dict(record)
                    mutated[key] = bad
                    try:
                        self.normalize(normalizer, mutated)
                    except MalformedRecord:
                        pass

    def test_empty_record(self, normalizer: Any) -> None:
        try:
            self.normalize(normalizer, {})
        except MalformedRecord:
            pass


def iter_contract_suites() -> Iterator[type]:
    """The suites, for documentation and the docs test."""
    yield SinkContractTests
    yield SourceContractTests
    yield NormalizerContractTests


__all__ = [
    "MemoryState",
    "NormalizerContractTests",
    "SinkContractTests",
    "SourceContractTests",
    "assert_accounted",
    "assert_settings_documented",
    "make_entries",
    "sink_context",
    "source_context",
]
