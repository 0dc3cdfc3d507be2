"""Heartbeats are stored at most once a second per name (each is a statement and a WAL page in
every batch transaction); a beat from a rolled-back transaction is not remembered."""

from __future__ import annotations

from pathlib import Path

from forwarder.state.sqlite import SqliteStateStore


def last_ok(store: SqliteStateStore, name: str) -> float | None:
    return {h["name"]: h["last_ok"] for h in store.heartbeats()}.get(name)


def test_beats_within_a_second_are_coalesced(tmp_path: Path) -> None:
    store = SqliteStateStore(str(tmp_path))
    with store.transaction() as tx:
        tx.beat("src", 1000.0)
    with store.transaction() as tx:
        tx.beat("src", 1000.5)  # skipped: half a second later
        tx.beat("other", 1000.5)
    assert last_ok(store, "src") == 1000.0 and last_ok(store, "other") == 1000.5
    with store.transaction() as tx:
        tx.beat("src", 1001.2)
    assert last_ok(store, "src") == 1001.2
    with store.transaction() as tx:
        tx.beat("src", 400.0)  # an earlier time is always written (e.g. set on purpose)
    assert last_ok(store, "src") == 400.0
    store.close()


def test_a_rolled_back_beat_is_not_remembered(tmp_path: Path) -> None:
    store = SqliteStateStore(str(tmp_path))
    try:
        with store.transaction() as tx:
            tx.beat("s", 2000.0)
            raise RuntimeError("crash inside the transaction")
    except RuntimeError:
        pass
    with store.transaction() as tx:
        tx.beat("s", 2000.3)
    assert last_ok(store, "s") == 2000.3
    store.close()
