"""Accepted change ids (``serve:changes``) are forgotten after ``[serve] change_id_retention``
(7 days by default, longer than the replay window), by the serve worker's hourly housekeeping."""

from __future__ import annotations

import time

from forwarder.serve.inbox import SEEN_NAMESPACE, purge_change_ids
from forwarder.serve.settings import ServeSettings, problems
from forwarder.serve.worker import ServeWorker
from forwarder.settings import Secret
from forwarder.sync import inbox

from .conftest import post_signed, settings_for

DAY = 86400.0


def test_old_ids_are_purged_in_batches_and_recent_ones_kept(store):
    now = time.time()
    for i in range(25):
        store.kv_put(SEEN_NAMESPACE, f"old-{i:02d}", {"digest": "d", "incident": "1", "time": now - 8 * DAY})
    for i in range(5):
        store.kv_put(SEEN_NAMESPACE, f"new-{i}", {"digest": "d", "incident": "1", "time": now - DAY})
    store.kv_put(SEEN_NAMESPACE, "junk", [1, 2])  # no time: cannot be aged, forgotten
    store.kv_put("other", "old", {"time": 0})  # another namespace: untouched
    assert purge_change_ids(store, 7 * DAY, now=now, batch=4) == 26
    left = [r[0] for r in store._reader().execute("SELECT key FROM kv WHERE ns = ? ORDER BY key", (SEEN_NAMESPACE,))]
    assert left == [f"new-{i}" for i in range(5)]
    assert store.kv_get("other", "old") == {"time": 0}


def test_the_worker_forgets_ids_after_the_retention_and_the_inbox_still_ignores_a_repeat(client, store, certs):
    body = {
        "changeId": "soar-retention-1",
        "incidentId": "2031",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "status": "resolved",
    }
    assert post_signed(client, body).json()["duplicate"] is False
    settings = settings_for(certs)
    assert settings.change_id_retention == 7 * DAY > settings.replay_window
    worker = ServeWorker(store, settings)  # housekeeping only (no applier)
    worker.housekeeping(now=time.time() + 6 * DAY)
    assert store.kv_get(SEEN_NAMESPACE, "soar-retention-1") is not None
    worker._purged = 0.0  # the next hourly run
    worker.housekeeping(now=time.time() + 7 * DAY + 60)
    assert store.kv_get(SEEN_NAMESPACE, "soar-retention-1") is None
    # the same request again (re-signed): the id is remembered anew, the inbox holds the change once
    answer = post_signed(client, body)
    assert answer.status_code == 202 and answer.json()["duplicate"] is True
    assert store.kv_get(SEEN_NAMESPACE, "soar-retention-1") is not None
    assert inbox.stats(store)["total_seen"] == 1


def test_retention_must_be_longer_than_the_replay_window():
    settings = ServeSettings(
        tls_cert="", bearer_token=Secret("x" * 20, "${T}"), replay_window=3600.0, change_id_retention=3600.0
    )
    found = problems(settings, insecure=True)
    assert found == ["serve.change_id_retention: must be longer than replay_window (3600 s)"]
