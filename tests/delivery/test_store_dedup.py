"""Deduplication keys: remembered keys are appended to ``dedup_recent`` and looked up in an
in-memory copy, merged into ``dedup`` every ``RecentKeys.MAX_KEYS`` keys. The answers must be
those of one table: within the window or not, across merges, rollbacks, reopening (a crash)
and another process writing the same state directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from forwarder.state.sqlite import RecentKeys, SqliteStateStore


@pytest.fixture(autouse=True)
def small_merges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RecentKeys, "MAX_KEYS", 10)


def remember(store: SqliteStateStore, keys: list[str], now: float) -> None:
    with store.transaction() as tx:
        tx.remember_keys(keys, now)


def seen(store: SqliteStateStore, keys: list[str], since: float) -> set[str]:
    with store.transaction() as tx:
        return tx.seen_keys(keys, since)


def table_counts(store: SqliteStateStore) -> tuple[int, int]:
    db = store._db
    return db.execute("SELECT count(*) FROM dedup").fetchone()[0], db.execute(
        "SELECT count(*) FROM dedup_recent"
    ).fetchone()[0]


def test_keys_are_seen_before_and_after_a_merge(tmp_path: Path) -> None:
    store = SqliteStateStore(str(tmp_path))
    remember(store, [f"a{i}" for i in range(6)], 100.0)
    assert table_counts(store) == (0, 6)  # recent only
    assert seen(store, ["a0", "a5", "x"], 50.0) == {"a0", "a5"}
    remember(store, [f"b{i}" for i in range(6)], 200.0)  # 12 >= 10: merged in this transaction
    assert table_counts(store) == (12, 0)
    assert seen(store, ["a0", "b5", "x"], 50.0) == {"a0", "b5"}
    assert seen(store, ["a0", "b5"], 150.0) == {"b5"}  # a0 is older than the window
    store.close()


def test_a_key_remembered_again_counts_from_its_latest_time(tmp_path: Path) -> None:
    store = SqliteStateStore(str(tmp_path))
    remember(store, ["k"], 100.0)
    remember(store, ["k"], 300.0)  # seen again after it left the window
    assert seen(store, ["k"], 200.0) == {"k"}
    remember(store, [f"f{i}" for i in range(10)], 300.0)  # merge: the latest time goes to dedup
    assert store._db.execute("SELECT seen FROM dedup WHERE key = 'k'").fetchone()[0] == 300.0
    assert seen(store, ["k"], 200.0) == {"k"}
    remember(store, ["k"], 50.0)  # recent copy older than the merged row: still the latest write wins
    assert seen(store, ["k"], 200.0) == set()
    remember(store, ["k"], 400.0)
    remember(store, ["k"], 60.0)  # twice in dedup_recent: the merge and a reload take the latest write
    other = SqliteStateStore(str(tmp_path))
    assert seen(other, ["k"], 200.0) == set()
    other.close()
    remember(store, [f"g{i}" for i in range(10)], 300.0)
    assert store._db.execute("SELECT seen FROM dedup WHERE key = 'k'").fetchone()[0] == 60.0
    assert seen(store, ["k"], 200.0) == set()
    store.close()


def test_a_rolled_back_transaction_leaves_keys_and_merges_undone(tmp_path: Path) -> None:
    store = SqliteStateStore(str(tmp_path))
    remember(store, [f"a{i}" for i in range(5)], 100.0)
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.remember_keys([f"b{i}" for i in range(8)], 100.0)  # would merge
        assert tx.seen_keys(["a1", "b1"], 0.0) == {"a1", "b1"}  # seen inside the transaction
        raise RuntimeError("crash before the commit")
    assert table_counts(store) == (0, 5)
    assert seen(store, ["a1", "b1"], 0.0) == {"a1"}
    store.close()


def test_keys_remembered_after_a_merge_in_the_same_transaction_stay_seen(tmp_path: Path) -> None:
    store = SqliteStateStore(str(tmp_path))
    with store.transaction() as tx:
        tx.remember_keys([f"a{i}" for i in range(12)], 100.0)  # merged
        tx.remember_keys(["late"], 100.0)  # recent again
    assert table_counts(store) == (12, 1)
    assert seen(store, ["a3", "late", "x"], 0.0) == {"a3", "late"}
    store.close()


def test_recent_keys_survive_a_reopen(tmp_path: Path) -> None:
    store = SqliteStateStore(str(tmp_path))
    remember(store, ["a", "b"], 100.0)
    store._db.close()  # as if killed: no orderly close
    again = SqliteStateStore(str(tmp_path))
    assert seen(again, ["a", "b", "c"], 0.0) == {"a", "b"}
    again.close()


def test_another_store_on_the_same_directory_sees_the_keys(tmp_path: Path) -> None:
    one = SqliteStateStore(str(tmp_path))
    two = SqliteStateStore(str(tmp_path))
    assert seen(one, ["x"], 0.0) == set()  # one's copy is loaded (empty)
    remember(two, ["from-two"], 100.0)
    assert seen(one, ["from-two"], 0.0) == {"from-two"}  # one reloads: two committed
    remember(one, ["from-one"], 100.0)
    assert seen(two, ["from-one", "from-two"], 0.0) == {"from-one", "from-two"}
    remember(two, [f"m{i}" for i in range(10)], 100.0)  # two merges: one's copy must not keep stale rows
    remember(one, ["after"], 100.0)
    assert seen(two, ["from-one", "m9", "after"], 0.0) == {"from-one", "m9", "after"}
    assert seen(one, ["from-one", "m9", "after"], 0.0) == {"from-one", "m9", "after"}
    one.close()
    two.close()


def test_purge_forgets_old_keys_in_both_tables(tmp_path: Path) -> None:
    store = SqliteStateStore(str(tmp_path))
    remember(store, [f"old{i}" for i in range(10)], 100.0)  # merged
    remember(store, ["old-recent"], 100.0)
    remember(store, ["new"], 500.0)
    assert store.purge_dedup(300.0) == 11
    assert table_counts(store) == (0, 1)
    assert seen(store, ["old1", "old-recent", "new"], 0.0) == {"new"}
    store.close()


def test_keys_merged_earlier_in_the_same_transaction_keep_their_latest_time(tmp_path: Path) -> None:
    store = SqliteStateStore(str(tmp_path))
    remember(store, ["k"], 100.0)  # committed: in the in-memory copy at 100
    with store.transaction() as tx:
        tx.remember_keys(["k", *[f"a{i}" for i in range(9)]], 500.0)  # 11 >= 10: merged, k at 500
        assert tx.seen_keys(["k"], 300.0) == {"k"}  # not the copy's 100 from before the merge
        tx.remember_keys([f"b{i}" for i in range(10)], 500.0)  # a second merge in this transaction
    assert store._db.execute("SELECT seen FROM dedup WHERE key = 'k'").fetchone()[0] == 500.0
    assert seen(store, ["k"], 300.0) == {"k"}
    store.close()
