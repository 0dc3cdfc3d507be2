"""Segments served from memory (``HotSegments``) must be exactly what the database returns.

A drainer keeping up with its source reads the segments just appended from memory instead of
SQLite. These tests drive a store the way drainers do (pages of random size, retries that move
the position back, partial settles, another process appending, drop_oldest) and compare every
read with the same read made by a second store on the same database, which has no memory of
its own appends and so always reads SQLite.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from forwarder.state.base import SpoolRow
from forwarder.state.sqlite import SqliteStateStore


def rows_of(rows: list[SpoolRow]) -> list[tuple[int, bytes, int, int]]:
    return [(r.id, r.payload, r.unit, r.attempts) for r in rows]


def append(store: SqliteStateStore, n: int, tag: str) -> None:
    with store.transaction() as tx:
        tx.append("s", [(f'{{"e":"{tag}-{i}"}}'.encode(), 7) for i in range(n)], 1.0)


def test_reads_from_memory_equal_reads_from_the_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(20261123)
    store = SqliteStateStore(str(tmp_path))
    store.register_sink("s")
    reference = SqliteStateStore(str(tmp_path))  # never appends: every read goes to SQLite
    hot = store._hot["s"]
    served: list[int] = []  # reads answered from memory
    take = hot.take

    def counting_take(after: int, limit: int) -> list[SpoolRow]:
        rows = take(after, limit)
        if rows:
            served.append(len(rows))
        return rows

    monkeypatch.setattr(hot, "take", counting_take)
    pos = 0
    for step in range(300):
        if rng.random() < 0.6:
            append(store, rng.choice((1, 3, 50, 200)), f"b{step}")
        limit = rng.choice((1, 7, 50, 500))
        expected = reference.read_spool("s", pos, limit)
        got = store.read_spool("s", pos, limit)
        assert rows_of(got) == rows_of(expected), f"step {step}: position {pos}, limit {limit}"
        if not got:
            continue
        fate = rng.random()
        if fate < 0.15:  # not sent: read again from the same position (waiting for a fuller batch)
            continue
        if fate < 0.7:  # all delivered
            store.settle("s", got, [], [], 2.0)
            pos = got[-1].id
        elif fate < 0.85:  # the first half delivered, the rest retried: the position moves back
            half = len(got) // 2
            store.settle("s", got[:half], [], got[half:], 2.0)
            pos = got[half].id - 1 if half < len(got) else got[-1].id
        else:  # a retry of everything
            store.settle("s", [], [], got, 2.0)
            pos = max(0, got[0].id - 1)
    assert len(served) > 20  # the memory path was exercised, not only the database
    reference.refresh_depths()
    assert reference.spool_depth("s") == store.spool_depth("s")
    store.close()
    reference.close()


def test_a_segment_another_process_appended_is_not_skipped(tmp_path: Path) -> None:
    store = SqliteStateStore(str(tmp_path))
    store.register_sink("s")
    other = SqliteStateStore(str(tmp_path))  # e.g. `dlpfwd dead-letters replay` while running
    append(store, 2, "a")
    first = store.read_spool("s", 0, 10)
    append(store, 2, "b")
    append(other, 2, "foreign")
    append(store, 2, "c")
    append(store, 2, "d")
    got = []
    pos = first[-1].id
    while batch := store.read_spool("s", pos, 3):
        got.extend(batch)
        pos = batch[-1].id
    assert [r.payload for r in got] == [f'{{"e":"{t}-{i}"}}'.encode() for t in "b foreign c d".split() for i in (0, 1)]
    store.close()
    other.close()


def test_drop_oldest_and_rollback_forget_what_is_in_memory(tmp_path: Path) -> None:
    store = SqliteStateStore(str(tmp_path))
    store.register_sink("s")
    append(store, 2, "a")
    (a0, a1) = store.read_spool("s", 0, 10)
    append(store, 2, "b")
    with store.transaction() as tx:
        tx.append("s", [(b'{"e":"c"}', 7)], 1.0)
        assert tx.drop_oldest("s", 1, 10**9) == 4  # a-0, a-1, b-0, b-1 dropped
    assert [r.payload for r in store.read_spool("s", a1.id, 10)] == [b'{"e":"c"}']
    try:
        with store.transaction() as tx:
            tx.append("s", [(b'{"e":"rolled back"}', 7)], 1.0)
            raise RuntimeError("crash inside the transaction")
    except RuntimeError:
        pass
    append(store, 1, "d")
    rows = store.read_spool("s", a1.id, 10)
    assert [r.payload for r in rows] == [b'{"e":"c"}', b'{"e":"d-0"}']
    store.close()


def test_memory_held_for_unread_segments_is_bounded_and_let_go_without_a_reader(tmp_path: Path) -> None:
    """Also: nothing is kept before a reader ever read (a backlog spooled while the sink is down)."""
    store = SqliteStateStore(str(tmp_path))
    store.register_sink("s")
    hot = store._hot["s"]
    hot.MAX_BYTES = 64 * 1024
    hot.IDLE_SECONDS = 0.0
    assert store.read_spool("s", 0, 10) == []  # a reader came once
    peak = 0
    for _ in range(40):  # a sink that is down: nothing reads
        with store.transaction() as tx:
            tx.append("s", [(b"{" + b"x" * 1000 + b"}", 7)] * 10, 1.0)
        peak = max(peak, hot._bytes)
    assert 0 < peak <= 64 * 1024
    assert hot._bytes == 0  # full with no reader since: everything let go
    total = []
    pos = 0
    while batch := store.read_spool("s", pos, 25):
        total.extend(batch)
        pos = batch[-1].id
    assert len(total) == 400
    append(store, 2, "back")  # the reader is back: segments are kept again
    append(store, 2, "again")
    assert hot._bytes > 0
    assert [r.payload for r in store.read_spool("s", pos, 10)][:2] == [b'{"e":"back-0"}', b'{"e":"back-1"}']
    store.close()


def test_nothing_is_kept_before_a_reader_came(tmp_path: Path) -> None:
    store = SqliteStateStore(str(tmp_path))
    store.register_sink("s")
    for _ in range(5):
        append(store, 10, "x")
    assert store._hot["s"]._bytes == 0
    store.close()


def test_entries_share_their_segment_until_a_sink_asks_for_the_payload(tmp_path: Path) -> None:
    store = SqliteStateStore(str(tmp_path))
    store.register_sink("s")
    append(store, 3, "a")
    rows = store.read_spool("s", 0, 10)
    assert [r.size for r in rows] == [len(b'{"e":"a-0"}')] * 3
    assert [bytes(r.payload_view()) for r in rows] == [f'{{"e":"a-{i}"}}'.encode() for i in range(3)]
    first = rows[1].payload
    assert first == b'{"e":"a-1"}' and rows[1].payload is first  # copied once, then kept
    assert rows[2].data == {"e": "a-2"} and rows[2].event.id == ""
    rows[0].payload = b'{"e":"changed"}'
    assert rows[0].size == len(b'{"e":"changed"}') and bytes(rows[0].payload_view()) == b'{"e":"changed"}'
    store.close()


def test_reading_again_from_the_same_position_is_served_from_memory(tmp_path: Path) -> None:
    """A drainer waiting for a fuller batch reads the same entries again with more behind them:
    memory serves them again (no database read), exactly as the database would."""
    store = SqliteStateStore(str(tmp_path))
    store.register_sink("s")
    reference = SqliteStateStore(str(tmp_path))
    database_reads = 0
    reader = store._reader

    def counting_reader() -> Any:
        nonlocal database_reads
        database_reads += 1
        return reader()

    store._reader = counting_reader  # type: ignore[method-assign]
    append(store, 10, "z")  # the first segment of this process: read from the database
    done = store.read_spool("s", 0, 500)
    store.settle("s", done, [], [], 2.0)
    pos = done[-1].id
    database_reads = 0
    append(store, 200, "a")
    first = store.read_spool("s", pos, 500)
    append(store, 200, "b")
    again = store.read_spool("s", pos, 500)
    append(store, 200, "c")
    third = store.read_spool("s", pos, 500)
    assert database_reads == 0
    assert rows_of(first) == rows_of(reference.read_spool("s", pos, 500))[:200]
    assert rows_of(again) == rows_of(reference.read_spool("s", pos, 500))[:400]
    assert rows_of(third) == rows_of(reference.read_spool("s", pos, 500))
    # part of what was read is delivered: its segment leaves memory, the rest comes from SQLite
    store.settle("s", third[:100], [], [], 2.0)
    assert rows_of(store.read_spool("s", pos, 500)) == rows_of(reference.read_spool("s", pos, 500))
    assert database_reads == 1
    store.close()
    reference.close()


def test_a_retried_batch_is_read_again_with_its_attempts(tmp_path: Path) -> None:
    store = SqliteStateStore(str(tmp_path))
    store.register_sink("s")
    reference = SqliteStateStore(str(tmp_path))
    append(store, 5, "z")  # the first segment of this process: read from the database
    done = store.read_spool("s", 0, 500)
    store.settle("s", done, [], [], 2.0)
    pos = done[-1].id
    append(store, 50, "a")
    sent = store.read_spool("s", pos, 500)  # from memory
    store.settle("s", [], [], sent, 2.0)  # all retried: the drainer reads them again from pos
    again = store.read_spool("s", pos, 500)
    assert rows_of(again) == rows_of(reference.read_spool("s", pos, 500))
    assert {r.attempts for r in again} == {1}
    store.close()
    reference.close()
