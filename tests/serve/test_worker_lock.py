"""Two ``dlpfwd serve`` workers on one state directory: only the holder of
``serve-apply.lock`` applies; the other takes over when the first stops."""

from __future__ import annotations

from typing import Any

from forwarder.serve.worker import ServeWorker

from .conftest import settings_for


class CountingApplier:
    def __init__(self) -> None:
        self.passes = 0

    def run_once(self) -> Any:
        from forwarder.sync.applier import PassResult

        self.passes += 1
        return PassResult()


def test_only_the_lock_holder_applies_and_the_other_takes_over(tmp_path, store, certs):
    lock = str(tmp_path / "serve-apply.lock")
    first = ServeWorker(store, settings_for(certs), CountingApplier(), lock_path=lock)
    second = ServeWorker(store, settings_for(certs), CountingApplier(), lock_path=lock)
    assert first.holds_lock()
    assert not second.holds_lock()
    assert first.holds_lock()  # kept
    first.stop()
    assert second.holds_lock()
    second.stop()


def test_a_worker_that_does_not_hold_the_lock_does_not_apply(tmp_path, store, certs):
    import time

    lock = str(tmp_path / "serve-apply.lock")
    holder = ServeWorker(store, settings_for(certs, apply_interval=1.0), CountingApplier(), lock_path=lock)
    assert holder.holds_lock()
    applier = CountingApplier()
    other = ServeWorker(store, settings_for(certs, apply_interval=1.0), applier, lock_path=lock).start()
    try:
        other.wake()
        time.sleep(0.3)  # nothing to await: asserting that a pass did NOT apply
        assert applier.passes == 0
        holder.stop()
        deadline = time.monotonic() + 10
        while applier.passes == 0:
            assert time.monotonic() < deadline, "the other worker did not take over"
            other.wake()
            time.sleep(0.05)
    finally:
        other.stop()
