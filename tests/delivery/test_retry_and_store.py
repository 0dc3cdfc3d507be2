"""Back-off with full jitter, Retry-After, the circuit breaker, and the state store's contract."""

from __future__ import annotations

from pathlib import Path

from forwarder.delivery import CLOSED, HALF_OPEN, OPEN, Backoff, CircuitBreaker, RetryGate
from forwarder.options import RetryOptions
from forwarder.source import WorkUnit
from forwarder.state.sqlite import SqliteStateStore


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_backoff_full_jitter_grows_to_the_cap() -> None:
    opts = RetryOptions(initial=1.0, maximum=10.0, multiplier=2.0)
    top = Backoff(opts, rand=lambda: 0.999999)
    assert [round(top.failed()) for _ in range(6)] == [1, 2, 4, 8, 10, 10]
    bottom = Backoff(opts, rand=lambda: 0.0)
    assert bottom.failed() == 0.0  # full jitter: anywhere in [0, ceiling)
    top.succeeded()
    assert top.ceiling() == 0.0


def test_backoff_honours_retry_after_even_above_the_cap() -> None:
    b = Backoff(RetryOptions(initial=1.0, maximum=5.0), rand=lambda: 0.1)
    assert b.failed(retry_after=30.0) == 30.0
    assert b.failed(retry_after=None) < 5.0


def test_breaker_opens_after_failures_probes_after_cooldown() -> None:
    clock = Clock()
    br = CircuitBreaker(RetryOptions(breaker_failures=3, breaker_cooldown=60.0), clock=clock)
    for _ in range(2):
        br.failed()
        assert br.state == CLOSED and br.allow() == 0
    br.failed()
    assert br.state == OPEN and br.allow() == 60.0
    clock.now += 61
    assert br.allow() == 0 and br.state == HALF_OPEN and br.probing
    br.failed()  # a failed probe re-opens at once
    assert br.state == OPEN
    clock.now += 61
    br.allow()
    br.succeeded()
    assert br.state == CLOSED


def test_breaker_cooldown_respects_a_longer_retry_after() -> None:
    clock = Clock()
    br = CircuitBreaker(RetryOptions(breaker_failures=1, breaker_cooldown=10.0), clock=clock)
    br.failed(retry_after=120.0)
    assert br.allow() == 120.0


def test_retry_gate_combines_backoff_and_breaker() -> None:
    clock = Clock()
    gate = RetryGate(
        RetryOptions(initial=2.0, breaker_failures=2, breaker_cooldown=30.0), clock=clock, rand=lambda: 0.5
    )
    assert gate.wait_time() == 0
    assert gate.failed("503") == 1.0
    assert gate.wait_time() == 1.0
    gate.failed("503")
    assert gate.wait_time() == 30.0  # breaker open
    clock.now += 30
    assert gate.wait_time() == 0 and gate.breaker.probing
    gate.succeeded()
    assert gate.failures == 0 and gate.breaker.state == CLOSED


def test_store_ids_are_never_reused_and_depth_survives_restart(tmp_path: Path) -> None:
    store = SqliteStateStore(str(tmp_path))
    store.register_sink("s")
    with store.transaction() as tx:
        tx.append("s", [(b"a", 0), (b"bb", 0), (b"ccc", 0)], 1.0)
    rows = store.read_spool("s", 0, 10)
    assert [r.payload for r in rows] == [b"a", b"bb", b"ccc"]
    assert store.spool_depth("s") == (3, 6)
    store.settle("s", rows, [], [], 2.0)
    assert store.spool_depth("s") == (0, 0)
    with store.transaction() as tx:
        tx.append("s", [(b"dddd", 0)], 3.0)
    (row,) = store.read_spool("s", 0, 10)
    assert row.id > max(r.id for r in rows)  # AUTOINCREMENT: delivered ids are never reused
    store.close()
    again = SqliteStateStore(str(tmp_path))
    assert again.spool_depth("s") == (1, 4)
    assert again.read_spool("s", 0, 10)[0].payload == b"dddd"
    again.close()


def test_partly_settled_segment_keeps_only_unsettled_entries(tmp_path: Path) -> None:
    store = SqliteStateStore(str(tmp_path))
    store.register_sink("s")
    with store.transaction() as tx:
        tx.append("s", [(f"e{i}".encode(), 7) for i in range(10)], 1.0)
    rows = store.read_spool("s", 0, 100)
    # 0-3 delivered, 4 rejected, the rest retried (e.g. a sink that split the batch)
    counts = store.settle("s", rows[:4], [(rows[4], "bad")], rows[5:], 2.0)
    assert counts == {"delivered": 4, "dead_lettered": 1}
    # delivering the same entries twice does not count twice
    assert store.settle("s", rows[:4], [], [], 2.5) == {"delivered": 0, "dead_lettered": 0}
    left = store.read_spool("s", 0, 100)
    assert [r.payload for r in left] == [f"e{i}".encode() for i in range(5, 10)]
    assert left[0].attempts == 1
    assert store.read_spool("s", rows[6].id, 100)[0].payload == b"e7"  # paging with id > after
    assert store.spool_depth("s") == (5, 10)
    store.close()
    again = SqliteStateStore(str(tmp_path))  # the settled bitmap is durable
    assert [r.payload for r in again.read_spool("s", 0, 100)] == [f"e{i}".encode() for i in range(5, 10)]
    again.settle("s", again.read_spool("s", 0, 100), [], [], 3.0)
    assert again.spool_depth("s") == (0, 0)
    assert again.read_spool("s", 0, 100) == []
    assert [d.payload for d in again.dead_letters("s")] == [b"e4"]
    again.close()


def test_store_transaction_rolls_back_everything(tmp_path: Path) -> None:
    store = SqliteStateStore(str(tmp_path))
    store.register_sink("s")
    try:
        with store.transaction() as tx:
            tx.append("s", [(b"x", 0)], 1.0)
            tx.set_cursor("source:a", {"n": 1})
            raise RuntimeError("crash inside the transaction")
    except RuntimeError:
        pass
    assert store.spool_depth("s") == (0, 0)
    assert store.read_spool("s", 0, 10) == []
    assert store.get_cursor("source:a") is None
    store.close()


def test_ledger_status_and_kv(tmp_path: Path) -> None:
    store = SqliteStateStore(str(tmp_path))
    with store.transaction() as tx:
        tx.record_units("src", [WorkUnit("blob-1", "content", "fetched", listed=3, fetched=3)], 1.0)
    assert store.ledger_status("src", ["blob-1", "blob-2"]) == {"blob-1": "fetched"}
    kv = store.kv("sink:x")
    kv.put("incident-1", {"sys_id": "abc"})
    assert kv.get("incident-1") == {"sys_id": "abc"}
    assert store.kv("sink:y").get("incident-1") is None
    kv.delete("incident-1")
    assert kv.get("incident-1", "gone") == "gone"
    store.close()


def test_ledger_retention_keeps_units_with_pending_events(tmp_path: Path) -> None:
    store = SqliteStateStore(str(tmp_path))
    store.register_sink("s")
    with store.transaction() as tx:
        refs = tx.unit_refs("src", ["old-done", "old-pending"], 1.0)
        tx.append("s", [(b"x", refs["old-done"])], 1.0)
        tx.append("s", [(b"y", refs["old-pending"])], 1.0)
    done = [r for r in store.read_spool("s", 0, 10) if r.payload == b"x"]
    store.settle("s", done, [], [], 2.0)
    assert store.purge_ledger(before=100.0) == 1
    assert store.ledger_status("src", ["old-done", "old-pending"]).keys() == {"old-pending"}
    store.close()
