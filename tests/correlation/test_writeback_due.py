"""The write-back's due set: a drain examines the alerts of links created since the last drain
and those still pending (deferred, beyond the limit), never every link; nothing due is lost
across a restart, a crash after the links were taken, a rebuilt links table or evictions."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from forwarder.correlation.index import DB_NAME, CorrelationIndex
from forwarder.correlation.settings import CorrelationSettings
from forwarder.correlation.writeback import WriteBack
from forwarder.errors import RetriableError

ALERTS = 2000
PER_ALERT = 4


class FakeGraph:
    """What WriteBack.drain calls; records the alerts commented."""

    def __init__(self) -> None:
        self.commented: list[str] = []
        self.failing: set[str] = set()

    def alert_comments(self, alert_id: str) -> list[dict[str, Any]]:
        return []

    def comment_alert(self, alert_id: str, text: str, marker: str = "") -> bool:
        if alert_id in self.failing:
            raise RetriableError(f"comment on alert {alert_id}: HTTP 503", retry_after=60.0)
        self.commented.append(alert_id)
        return True

    def tag_incident(self, incident_id: str, tag: str) -> bool:
        return True


class Db:
    """The index's tables, filled directly: alerts ``alert:a<i>`` of source ``graph`` with
    ``PER_ALERT`` DLP events each."""

    def __init__(self, state: str) -> None:
        CorrelationIndex(state, CorrelationSettings()).close()  # the index's own schema
        self.conn = sqlite3.connect(os.path.join(state, DB_NAME), isolation_level=None)
        self.next_item = 1

    def item(self, eid: str, kind: str) -> None:
        info = {"id": eid, "kind": kind, "time": "2026-11-23T10:00:00Z", "source": "graph", "incidents": ["7"]}
        self.conn.execute(
            "INSERT INTO items (id, eid, side, t, batch, keys, info) VALUES (?, ?, ?, 0, 1, '', ?)",
            (self.next_item, eid, 1 if kind == "graph_alert" else 0, orjson.dumps(info)),
        )
        self.next_item += 1

    def link(self, dlp: str, alert: str, created: float = 1.0) -> None:
        self.conn.execute(
            "INSERT INTO links (dlp, alert, reasons, late, batch, created) VALUES (?, ?, 'same_user:upn', 0, 1, ?)",
            (dlp, alert, created),
        )

    def fill(self, alerts: int) -> None:
        self.conn.execute("BEGIN")
        for i in range(alerts):
            self.item(f"alert:a{i}", "graph_alert")
            for j in range(PER_ALERT):
                self.item(f"dlp:{i}-{j}", "dlp_alert")
                self.link(f"dlp:{i}-{j}", f"alert:a{i}")
        self.conn.execute("COMMIT")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Db]:
    d = Db(str(tmp_path))
    try:
        yield d
    finally:
        d.conn.close()


def steps(conn: sqlite3.Connection, work: Any) -> tuple[Any, int]:
    """``work()`` and the number of SQLite VM steps (in hundreds) it took on ``conn``."""
    count = [0]

    def tick() -> int:
        count[0] += 1
        return 0

    conn.set_progress_handler(tick, 100)
    try:
        return work(), count[0]
    finally:
        conn.set_progress_handler(None, 0)


def test_a_drain_with_nothing_new_reads_no_link(tmp_path: Path, db: Db) -> None:
    db.fill(ALERTS)
    graph = FakeGraph()
    queue = WriteBack(str(tmp_path), ["graph"], "tag")
    try:
        first = queue.drain(graph, limit=10**6)
        assert len(first.commented) == ALERTS
        _, scan = steps(queue.db, lambda: queue.db.execute("SELECT dlp, alert, reasons FROM links").fetchall())
        again, idle = steps(queue.db, lambda: queue.drain(graph, limit=10**6))
        assert again.counts() == dict.fromkeys(again.counts(), 0)
        assert idle * 50 < scan, (idle, scan)  # reading every link once costs 50x more than this drain

        # one DLP event joins alert a5: that alert alone is examined and commented
        db.item("dlp:new", "dlp_alert")
        db.link("dlp:new", "alert:a5")
        joined, cost = steps(queue.db, lambda: queue.drain(graph, limit=10**6))
        assert joined.commented == ["a5"] and graph.commented.count("a5") == 2
        assert cost * 20 < scan, (cost, scan)
    finally:
        queue.close()


def test_nothing_due_is_lost_across_a_crash_a_restart_the_limit_and_deferral(tmp_path: Path, db: Db) -> None:
    db.fill(30)
    queue = WriteBack(str(tmp_path), ["graph"], "tag")
    assert len(queue.due()) == 30  # the links are taken (mark moved), then the process dies
    queue.close()

    graph = FakeGraph()
    graph.failing = {"a12"}  # among the first 10 by alert id
    queue = WriteBack(str(tmp_path), ["graph"], "tag")
    try:
        first = queue.drain(graph, limit=10, now=1000.0)
        assert len(first.commented) == 9 and set(first.deferred) == {"a12"} and first.remaining == 20
        assert queue.waiting() == 21
    finally:
        queue.close()
    queue = WriteBack(str(tmp_path), ["graph"], "tag")  # a restart
    try:
        second = queue.drain(graph, limit=100, now=1001.0)
        assert len(second.commented) == 20 and not second.deferred  # a12 waits for its retry time
        assert queue.waiting() == 1  # still counted while it waits (the dlpfwd_writeback_due gauge)
        graph.failing.clear()
        later = queue.drain(graph, limit=100, now=1000.0 + 3600)
        assert later.commented == ["a12"]
        assert sorted(graph.commented) == sorted(f"a{i}" for i in range(30))
        assert queue.db.execute("SELECT count(*) FROM writeback_pending").fetchone()[0] == 0
        assert queue.waiting() == 0
    finally:
        queue.close()


def test_a_rebuilt_or_evicted_links_table_loses_no_joining_event(tmp_path: Path, db: Db) -> None:
    db.fill(20)
    graph = FakeGraph()
    queue = WriteBack(str(tmp_path), ["graph"], "tag")
    try:
        assert len(queue.drain(graph, limit=100).commented) == 20
        # the index rebuilt (rowids restart at 1, other creation times) with a DLP event joining a2
        rows = db.conn.execute("SELECT dlp, alert FROM links ORDER BY rowid").fetchall()
        db.conn.execute("DELETE FROM links")
        db.item("dlp:joins-a2", "dlp_alert")
        for dlp, alert in [("dlp:joins-a2", "alert:a2"), *rows]:
            db.link(dlp, alert, created=2.0)
        assert queue.drain(graph, limit=100).commented == ["a2"]  # every link read again, once

        # evictions (oldest first) past the marked link, then one more joining a4
        db.item("dlp:joins-a4", "dlp_alert")
        db.link("dlp:joins-a4", "alert:a4", created=3.0)
        newest = db.conn.execute("SELECT max(rowid) FROM links").fetchone()[0]
        db.conn.execute("DELETE FROM links WHERE rowid < ?", (newest,))
        assert queue.drain(graph, limit=100).commented == ["a4"]
        assert queue.drain(graph, limit=100).commented == []
    finally:
        queue.close()
