"""Sample source specifics: byte-offset cursor, incomplete last line, bad lines, backfill window."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from forwarder.errors import FatalError, MalformedRecord
from forwarder.source import NormalizeContext
from forwarder.testing import source_context
from sources.sample import SampleSettings, SampleSource, normalize_sample


def source_for(path: Path, **kw) -> SampleSource:
    return SampleSource("s", SampleSettings(path=str(path), **kw), source_context("s"))


def test_cursor_resumes_after_the_last_line_and_waits_for_incomplete_lines(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"kind": "sample", "data": {"id": "a"}}\n{"id": "b"}\nnot json\n{"id": "c"')
    src = source_for(path, batch_size=2)
    batches = list(src.poll(None))
    records = [r for b in batches for r in b.records]
    assert [r.data["id"] if r.data else None for r in records] == ["a", "b", None]
    assert records[2].raw == b"not json"
    cursor = batches[-1].cursor
    assert list(src.poll(cursor)) == []
    with open(path, "a") as fh:
        fh.write('}\n{"id": "d"}\n')
    later = [r.data["id"] for b in src.poll(cursor) for r in b.records]
    assert later == ["c", "d"]


def test_backfill_filters_by_time(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(
        '{"id": "old", "event_time": "2026-01-01T00:00:00Z"}\n'
        '{"id": "in", "event_time": "2026-02-01T00:00:00Z"}\n'
        '{"id": "audit", "CreationTime": "2026-02-02T00:00:00"}\n'
    )
    src = source_for(path)
    since, until = dt.datetime(2026, 1, 15, tzinfo=dt.UTC), dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    got = [r.data["id"] for b in src.backfill(since, until, None) for r in b.records]
    assert got == ["in", "audit"]


def test_missing_file_is_fatal(tmp_path: Path) -> None:
    src = source_for(tmp_path / "absent.jsonl")
    with pytest.raises(FatalError):
        src.connect()
    assert not src.health().ok


def test_normalizer_fills_context_and_defaults() -> None:
    ctx = NormalizeContext(source="replay", source_type="sample", tenant_id="t-1", ingest_time="2026-05-01T00:00:00Z")
    (event,) = normalize_sample({"id": "x", "event_time": "2026-04-30T10:00:00+02:00", "severity": "high"}, ctx)
    assert event.source == "replay" and event.tenant_id == "t-1" and event.kind == "audit"
    assert event.event_time == "2026-04-30T08:00:00Z" and event.updated_time == event.event_time
    assert event.idempotency_key == "x@2026-04-30T08:00:00Z"
    with pytest.raises(MalformedRecord):
        normalize_sample({"title": "no id"}, ctx)
