"""Outage, poison-event, deduplication, back-pressure and shutdown behaviour of the runtime."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest

from forwarder.config import SinkConfig
from forwarder.options import SinkOptions, SpoolOptions
from forwarder.runtime import Forwarder
from forwarder.source import RawRecord, SourceBatch
from tests.delivery import helpers as h


def wait_for(cond: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Collector(BaseHTTPRequestHandler):
    """A stdlib HTTP receiver: answers 503 (Retry-After) while ``server.failing``, else records."""

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        server = self.server
        server.requests += 1  # type: ignore[attr-defined]
        if server.failing:  # type: ignore[attr-defined]
            self.send_response(503)
            self.send_header("Retry-After", "0.1")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with server.lock:  # type: ignore[attr-defined]
            for line in body.splitlines():
                server.ids.append(orjson.loads(line)["id"])  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_sink(name: str, url: str) -> SinkConfig:
    opts = SinkOptions()
    opts.batch.max_wait = 0
    opts.retry.initial = 0.05
    opts.retry.maximum = 0.3
    opts.retry.breaker_failures = 3
    opts.retry.breaker_cooldown = 0.3
    return SinkConfig(name, "http_recording", h.HttpSettings(url), opts)


def test_outage_one_sink_down_others_flow_then_backlog_drains(tmp_path: Path) -> None:
    port = free_port()
    n = 3000
    cfg = h.config(
        str(tmp_path / "state"),
        [h.listed(count=n, batch=100)],
        [h.recording("local", str(tmp_path / "local.jsonl")), http_sink("remote", f"http://127.0.0.1:{port}/")],
    )
    stop = threading.Event()
    with Forwarder(cfg, h.make_host()) as fw:
        runner = threading.Thread(target=fw.run, args=(stop,))
        runner.start()
        try:
            # Phase 1: connection refused. The local sink receives everything meanwhile.
            wait_for(lambda: len(h.read_ids(str(tmp_path / "local.jsonl"))) == n, what="local sink complete")
            wait_for(lambda: fw.metrics.value("dlpfwd_sink_events_total", sink="remote", outcome="retried") > 0)
            assert fw.store.spool_depth("remote")[0] == n
            # Phase 2: the server answers 503 with Retry-After for a while.
            server = ThreadingHTTPServer(("127.0.0.1", port), Collector)
            server.failing = True  # type: ignore[attr-defined]
            server.requests = 0  # type: ignore[attr-defined]
            server.ids = []  # type: ignore[attr-defined]
            server.lock = threading.Lock()  # type: ignore[attr-defined]
            threading.Thread(target=server.serve_forever, daemon=True).start()
            wait_for(lambda: server.requests >= 3, what="503 answers")  # type: ignore[attr-defined]
            assert fw.store.spool_depth("remote")[0] == n
            assert fw.drainers["remote"].gate.failures >= 3
            # Phase 3: recovery; the backlog drains, nothing lost.
            server.failing = False  # type: ignore[attr-defined]
            wait_for(lambda: fw.store.spool_depth("remote")[0] == 0, what="remote backlog drained")
            assert sorted(set(server.ids)) == [f"ev-{i:07d}" for i in range(n)]  # type: ignore[attr-defined]
            assert fw.store.dead_letter_counts() == {}
        finally:
            stop.set()
            runner.join(30)
    server.shutdown()
    server.server_close()
    assert not runner.is_alive()


def test_poison_event_goes_to_dead_letters_and_replays_after_fix(tmp_path: Path) -> None:
    control = tmp_path / "control.json"
    control.write_text('{"reject_ids": ["ev-0000042"]}')
    out = tmp_path / "out.jsonl"
    cfg = h.config(
        str(tmp_path / "state"), [h.listed(count=100, batch=100)], [h.recording("s", str(out), str(control))]
    )
    with Forwarder(cfg, h.make_host()) as fw:
        result = fw.run_once()
        assert result.delivered["s"] == 99
        assert result.dead_letters["s"] == 1
        assert "ev-0000042" not in h.read_ids(str(out))
        (dead,) = fw.store.dead_letters("s")
        assert "not acceptable" in dead.reason
        assert orjson.loads(dead.payload)["id"] == "ev-0000042"
        assert fw.metrics.value("dlpfwd_sink_events_total", sink="s", outcome="dead_lettered") == 1
        # Fix the sink, replay the dead letter.
        control.write_text("{}")
        assert fw.store.replay_dead_letters("s") == 1
        result = fw.run_once()
        assert result.ok
        assert sorted(h.read_ids(str(out))) == [f"ev-{i:07d}" for i in range(100)]
        assert fw.store.dead_letter_counts() == {}


def test_event_that_makes_the_sink_raise_is_isolated_by_bisection(tmp_path: Path) -> None:
    control = tmp_path / "control.json"
    control.write_text('{"raise_ids": ["ev-0000013"]}')
    out = tmp_path / "out.jsonl"
    cfg = h.config(str(tmp_path / "state"), [h.listed(count=64, batch=64)], [h.recording("s", str(out), str(control))])
    cfg.sinks[0].options.retry.initial = 0.001
    with Forwarder(cfg, h.make_host()) as fw:
        stop = threading.Event()
        runner = threading.Thread(target=fw.run, args=(stop,))
        runner.start()
        try:
            wait_for(
                lambda: fw.store.totals().get("src", {}).get("spooled") == 64 and fw.store.spool_depth("s")[0] == 0,
                what="spool drained",
            )
        finally:
            stop.set()
            runner.join(30)
        (dead,) = fw.store.dead_letters("s")
        assert orjson.loads(dead.payload)["id"] == "ev-0000013"
        assert "TypeError" in dead.reason
        assert sorted(h.read_ids(str(out))) == [f"ev-{i:07d}" for i in range(64) if i != 13]


def test_malformed_records_are_quarantined_with_raw_bytes(tmp_path: Path) -> None:
    cfg = h.config(
        str(tmp_path / "state"), [h.listed(count=50, batch=50, bad_every=10)], [h.recording("s", str(tmp_path / "o"))]
    )
    with Forwarder(cfg, h.make_host()) as fw:
        result = fw.run_once()
        assert result.ok and result.quarantined == 5 and result.delivered["s"] == 45
        rows = fw.store.quarantined("src")
        assert [r.raw for r in rows][0] == b"{not json 9"
        assert fw.store.quarantine_counts() == {"src": 5}


def test_dedup_ignores_source_key_order_and_counts_duplicates(tmp_path: Path) -> None:
    record = h.make_record(1)
    reordered = dict(reversed(list(record.items())))
    assert orjson.dumps(record) != orjson.dumps(reordered)
    cfg = h.config(str(tmp_path / "state"), [h.listed(count=0)], [h.recording("s", str(tmp_path / "o.jsonl"))])
    with Forwarder(cfg, h.make_host()) as fw:
        src = fw.sources["src"]
        for data in (record, reordered):
            batch = SourceBatch(records=[RawRecord("test", data, None, "u1")], cursor={"next": 1})
            fw.pipeline.process("src", "listed", src, batch, "source:src")
        assert fw.store.spool_depth("s")[0] == 1
        assert fw.metrics.value("dlpfwd_source_events_total", source="src", stage="duplicates") == 1
        assert fw.store.totals()["src"]["duplicates"] == 1
        # An update (new last-update time) is not a duplicate.
        updated = {**record, "LastUpdate": "2026-11-02T00:00:00Z"}
        fw.pipeline.process("src", "listed", src, SourceBatch([RawRecord("test", updated, None, "u1")]), "source:src")
        assert fw.store.spool_depth("s")[0] == 2


def test_sensitive_values_never_reach_the_spool(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    cfg = h.config(str(tmp_path / "state"), [h.listed(count=3)], [h.recording("s", str(out))])
    with Forwarder(cfg, h.make_host()) as fw:
        src = fw.sources["src"]
        fw.pipeline.process("src", "listed", src, SourceBatch([RawRecord("test", h.make_record(1), None, "u")]), "k")
        (row,) = fw.store.read_spool("s", 0, 10)
        event = orjson.loads(row.payload)
        assert event["sensitive_types"][0]["detected_values"] == []
        assert event["raw"] is None  # the recording sink does not carry raw


def test_filters_route_events_per_sink(tmp_path: Path) -> None:
    only_high = SinkOptions()
    only_high.filter.min_severity = "high"
    cfg = h.config(
        str(tmp_path / "state"),
        [h.listed(count=30, batch=30)],
        [h.recording("all", str(tmp_path / "all")), h.recording("high", str(tmp_path / "high"), options=only_high)],
    )
    with Forwarder(cfg, h.make_host()) as fw:
        result = fw.run_once()
        assert result.ok
        assert result.delivered == {"all": 30, "high": 10}


def test_backpressure_pauses_the_source_without_dropping(tmp_path: Path) -> None:
    port = free_port()
    sink = http_sink("remote", f"http://127.0.0.1:{port}/")
    sink.options.spool = SpoolOptions(max_events=200)
    cfg = h.config(str(tmp_path / "state"), [h.listed(count=1000, batch=50)], [sink])
    stop = threading.Event()
    with Forwarder(cfg, h.make_host()) as fw:
        runner = threading.Thread(target=fw.run, args=(stop,))
        runner.start()
        try:
            wait_for(lambda: fw.metrics.value("dlpfwd_source_paused", source="src") == 1, what="source paused")
            depth = fw.store.spool_depth("remote")[0]
            assert 200 <= depth < 250
            assert fw.store.get_cursor("source:src") == {"next": depth}
            server = ThreadingHTTPServer(("127.0.0.1", port), Collector)
            server.failing = False  # type: ignore[attr-defined]
            server.requests = 0  # type: ignore[attr-defined]
            server.ids = []  # type: ignore[attr-defined]
            server.lock = threading.Lock()  # type: ignore[attr-defined]
            threading.Thread(target=server.serve_forever, daemon=True).start()
            wait_for(lambda: len(set(server.ids)) == 1000, what="all delivered")  # type: ignore[attr-defined]
        finally:
            stop.set()
            runner.join(30)
        server.shutdown()
        server.server_close()


def test_drop_oldest_policy_caps_the_spool_loudly(tmp_path: Path) -> None:
    port = free_port()
    sink = http_sink("remote", f"http://127.0.0.1:{port}/")
    sink.options.spool = SpoolOptions(max_events=100, overflow="drop_oldest")
    cfg = h.config(str(tmp_path / "state"), [h.listed(count=500, batch=50)], [sink])
    with Forwarder(cfg, h.make_host()) as fw:
        src = fw.sources["src"]
        for batch in src.poll(None):
            fw.pipeline.process("src", "listed", src, batch, "source:src")
        assert fw.store.spool_depth("remote")[0] == 100
        assert fw.metrics.value("dlpfwd_sink_events_total", sink="remote", outcome="dropped_oldest") == 400
        assert fw.store.totals()["remote"]["dropped_oldest"] == 400
        first = orjson.loads(fw.store.read_spool("remote", 0, 1)[0].payload)
        assert first["id"] == "ev-0000400"


def test_graceful_shutdown_within_deadline(tmp_path: Path) -> None:
    port = free_port()
    cfg = h.config(
        str(tmp_path / "state"),
        [h.listed(count=100)],
        [http_sink("down", f"http://127.0.0.1:{port}/")],
        shutdown_deadline=3,
    )
    stop = threading.Event()
    with Forwarder(cfg, h.make_host()) as fw:
        runner = threading.Thread(target=fw.run, args=(stop,))
        runner.start()
        wait_for(lambda: fw.store.spool_depth("down")[0] == 100)
        t0 = time.monotonic()
        stop.set()
        runner.join(10)
        assert not runner.is_alive()
        assert time.monotonic() - t0 < 4.5
    # The backlog survives for the next start.
    with Forwarder(cfg, h.make_host()) as fw:
        assert fw.store.spool_depth("down")[0] == 100


def test_second_forwarder_on_same_state_dir_is_refused(tmp_path: Path) -> None:
    from forwarder.runtime import StateDirBusy

    cfg = h.config(str(tmp_path / "state"), [], [])
    with Forwarder(cfg, h.make_host()):
        with pytest.raises(StateDirBusy):
            Forwarder(cfg, h.make_host())


def test_backfill_uses_its_own_cursor_and_can_target_one_sink(tmp_path: Path) -> None:
    import datetime as dt

    cfg = h.config(
        str(tmp_path / "state"),
        [h.listed(count=40, batch=10)],
        [h.recording("a", str(tmp_path / "a.jsonl")), h.recording("b", str(tmp_path / "b.jsonl"))],
    )
    since = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    until = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
    with Forwarder(cfg, h.make_host()) as fw:
        assert fw.run_once().ok  # live: both sinks get 40, live cursor at 40
        seen: list[dict] = []
        result = fw.backfill("src", since, until, sink="b", progress=seen.append)
        assert result.ok and result.delivered == {"b": 40}
        assert seen[-1]["done"] == 40 and seen[-1]["total"] == 40 and seen[-1]["spooled"] == 40
        assert len(h.read_ids(str(tmp_path / "a.jsonl"))) == 40  # untouched
        assert len(h.read_ids(str(tmp_path / "b.jsonl"))) == 80  # re-fed on purpose (no dedup)
        assert fw.store.get_cursor("source:src") == {"next": 40}
        # Resumable: the backfill's own cursor is stored, a second run reads nothing new.
        again = fw.backfill("src", since, until, sink="b")
        assert again.sources["src"]["read"] == 0
        # Without a sink, deduplication applies: everything was already spooled once.
        third = fw.backfill("src", since - dt.timedelta(days=1), until)
        assert third.sources["src"]["duplicates"] == 40


def test_metrics_endpoint_serves_prometheus_text(tmp_path: Path) -> None:
    import httpx

    port = free_port()
    cfg = h.config(
        str(tmp_path / "state"), [h.listed(count=20)], [h.recording("s", str(tmp_path / "o"))], metrics_port=port
    )
    stop = threading.Event()
    with Forwarder(cfg, h.make_host()) as fw:
        runner = threading.Thread(target=fw.run, args=(stop,))
        runner.start()
        try:
            wait_for(lambda: fw.store.totals().get("s", {}).get("delivered") == 20, what="delivered")
            body = ""

            def scraped() -> bool:
                nonlocal body
                try:
                    body = httpx.get(f"http://127.0.0.1:{port}/metrics").text
                except httpx.HTTPError:
                    return False
                return 'dlpfwd_sink_events_total{outcome="delivered",sink="s"} 20.0' in body

            wait_for(scraped, what="metrics endpoint")
            assert 'dlpfwd_source_events_total{source="src",stage="spooled"} 20.0' in body
            assert "dlpfwd_spool_events" in body and "dlpfwd_sink_last_delivery_timestamp_seconds" in body
        finally:
            stop.set()
            runner.join(30)


def test_pending_entries_stay_spooled_until_acknowledged(tmp_path: Path) -> None:
    out = tmp_path / "acked.jsonl"
    opts = SinkOptions()
    opts.batch.max_wait = 0
    cfg = h.config(
        str(tmp_path / "state"),
        [h.listed(count=120, batch=40)],
        [SinkConfig("hec", "acking", h.AckSettings(str(out)), opts)],
    )
    with Forwarder(cfg, h.make_host()) as fw:
        src = fw.sources["src"]
        for batch in src.poll(None):
            fw.pipeline.process("src", "listed", src, batch, "source:src")
        drainer = fw.drainers["hec"]
        assert drainer.step()  # one batch sent, all pending
        assert len(drainer.pending) == 120
        assert fw.store.spool_depth("hec")[0] == 120  # pending entries are still spooled
    # A crash now (no acknowledgement): the entries are read again after the restart.
    with Forwarder(cfg, h.make_host()) as fw:
        assert fw.store.spool_depth("hec")[0] == 120
        result = fw.run_once()
        assert result.ok, result
        assert sorted(h.read_ids(str(out))) == [f"ev-{i:07d}" for i in range(120)]
        assert fw.store.spool_depth("hec")[0] == 0


def test_fatal_outcome_stops_only_that_sink_and_keeps_its_spool(tmp_path: Path) -> None:
    opts = SinkOptions()
    opts.batch.max_wait = 0
    cfg = h.config(
        str(tmp_path / "state"),
        [h.listed(count=30)],
        [
            SinkConfig("broken", "acking", h.AckSettings(str(tmp_path / "x"), fatal="HEC token disabled"), opts),
            h.recording("ok", str(tmp_path / "ok.jsonl")),
        ],
    )
    with Forwarder(cfg, h.make_host()) as fw:
        result = fw.run_once()
        assert not result.ok
        assert any("sink broken stopped: HEC token disabled" in e for e in result.errors)
        assert result.delivered["ok"] == 30 and result.undelivered["broken"] == 30
        assert fw.drainers["broken"].fatal == "HEC token disabled"
