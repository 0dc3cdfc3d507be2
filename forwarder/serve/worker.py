"""The background thread of ``dlpfwd serve``: housekeeping and, where no ServiceNow sync runs,
applying the accepted changes to Defender XDR.

Each pass:

1. every :data:`PURGE_INTERVAL` (and at start): forget change ids older than ``[serve]
   change_id_retention`` (:func:`forwarder.serve.inbox.purge_change_ids`) and, when this
   process applies, the inbox rows settled longer than the inbox's retention;
2. with an applier (:class:`forwarder.sync.inbound.InboundApplier`): apply what is due.

Several ``dlpfwd serve`` processes on one state directory (replicas): only the one holding an
exclusive lock on ``<state_dir>/serve-apply.lock`` applies; the others accept and take over
when it exits (:meth:`ServeWorker.holds_lock`).

A pass runs at once when a change is accepted (:meth:`ServeWorker.wake`), else every
``[serve] apply_interval`` seconds (deferred changes come due). Errors: RetriableError and any
other failure -> logged, next pass later; FatalError (401/403: the app lacks
``SecurityIncident.ReadWrite.All``) -> the applying stops with an error line and a ``stopped``
record (``serve:apply``, shown by ``dlpfwd health``); the endpoint goes on accepting.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from forwarder.errors import FatalError, ForwarderError, RetriableError
from forwarder.serve.inbox import purge_change_ids

log = logging.getLogger("dlpfwd.serve")
PURGE_INTERVAL = 3600.0
MAX_DELAY = 300.0


class ServeWorker:
    """See the module docstring. ``applier`` None: housekeeping only (a ServiceNow sync applies)."""

    def __init__(self, store: Any, settings: Any, applier: Any = None, lock_path: str = "") -> None:
        self.store = store
        self.settings = settings
        self.applier = applier
        self.lock_path = lock_path  # several serve processes on one state directory: one applies
        self._lock: Any = None
        self._waiting_logged = False
        self.interval = float(settings.apply_interval)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._purged = 0.0

    def wake(self) -> None:
        """Run a pass now (a change was accepted)."""
        self._wake.set()

    def start(self) -> ServeWorker:
        self._thread = threading.Thread(target=self.run, name="dlpfwd-serve-apply", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._lock is not None and (self._thread is None or not self._thread.is_alive()):
            self._lock.close()  # releases the flock
            self._lock = None

    def holds_lock(self) -> bool:
        """Whether this process may apply: it holds the exclusive lock on ``lock_path`` (taken
        at the first pass that can; kept until :meth:`stop`). Another ``dlpfwd serve`` on the
        same state directory holding it applies; this one accepts and tries again each pass."""
        if not self.lock_path or self._lock is not None:
            return True
        import fcntl

        handle = open(self.lock_path, "a+b")  # noqa: SIM115 - kept open while the lock is held
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            if not self._waiting_logged:
                log.info("another dlpfwd serve applies the accepted changes of this state directory")
                self._waiting_logged = True
            return False
        self._lock = handle
        if self._waiting_logged:
            log.info("this dlpfwd serve applies the accepted changes now")
        return True

    def run(self) -> None:
        from forwarder.sync.inbound import STOPPED_KEY

        applying = self.applier is not None
        failures = 0
        if applying:
            log.info("applying accepted changes to Defender XDR (every %.0f s and on each change)", self.interval)
        while not self._stop.is_set():
            self._wake.clear()
            delay = self.interval
            try:
                self.housekeeping()
                if applying and self.holds_lock():
                    result = self.applier.run_once()
                    failures = 0
                    if result.counts():
                        log.info("applied: %s", ", ".join(f"{k} {v}" for k, v in result.counts().items()))
                    if STOPPED_KEY in self.store.stopped():
                        self.store.clear_stopped(STOPPED_KEY)
            except FatalError as exc:
                log.error("applying accepted changes stopped: %s", exc)
                self.store.set_stopped(STOPPED_KEY, "sync", str(exc))
                applying = False
            except RetriableError as exc:
                failures += 1
                delay = max(exc.retry_after or 0.0, min(MAX_DELAY, self.interval * failures))
                log.warning("applying accepted changes: %s; next pass in %.0f s", exc, delay)
            except ForwarderError as exc:
                failures += 1
                log.warning("applying accepted changes: %s; next pass in %.0f s", exc, delay)
            except Exception:  # noqa: BLE001 - the endpoint must keep accepting
                failures += 1
                log.exception("serve background pass failed; next pass in %.0f s", delay)
            self._wake.wait(delay if applying else min(PURGE_INTERVAL, MAX_DELAY))

    def housekeeping(self, now: float | None = None) -> None:
        """Purge old change ids (and settled inbox rows when applying), at most every hour."""
        if self._purged and time.monotonic() - self._purged < PURGE_INTERVAL:
            return
        self._purged = time.monotonic()
        n = purge_change_ids(self.store, float(self.settings.change_id_retention), now)
        if n:
            log.info("forgot %d change id(s) accepted more than %.0f s ago", n, self.settings.change_id_retention)
        if self.applier is not None:
            from forwarder.sync import inbox

            inbox.purge(self.store)
