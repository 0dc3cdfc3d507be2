"""The correlation write-back as a thread of ``dlpfwd run``.

When ``[correlation] writeback_sources`` names graph_security sources and
``writeback_interval`` is not 0, :func:`start_writeback` starts one thread that drains the
write-back queue of each of them (:class:`forwarder.correlation.writeback.WriteBack`) every
``writeback_interval`` seconds, at most ``writeback_limit`` alerts per drain (a drain that
leaves alerts due is followed by the next one at once). What it does is counted in
``dlpfwd_writeback_total{source, outcome}`` and ``dlpfwd_writeback_due{source}``, and in the
``writeback_log`` that ``dlpfwd report`` / ``dlpfwd state`` read.

Health: each write-back registers a heartbeat ``writeback:<source>`` (expected within three
intervals, at least 5 minutes) beaten after every drain that reached Graph. A 401/403 (the
app lacks ``SecurityAlert.ReadWrite.All`` / ``SecurityIncident.ReadWrite.All``) or a
write-back source that is not a configured graph_security source marks it stopped
(``dlpfwd health`` exit 1, ``dlpfwd_stopped{role="writeback"}`` = 1); it is tried again every
:data:`FATAL_RETRY` seconds, so granting the permission clears the alarm without a restart.

Shutdown: the thread watches the forwarder's ``stop`` event; the alert in hand is finished and
recorded, the rest stays due (the queue is the links table: nothing is lost). A ``kill -9``
between a comment's POST and its record is recovered by the marker the next drain finds.

Only one process drains a state directory at a time (``writeback.lock``): a cron
``dlpfwd writeback`` next to a running ``dlpfwd run`` is refused rather than racing it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from forwarder.errors import FatalError, ForwarderError
from forwarder.logs import redact

log = logging.getLogger("dlpfwd.writeback")

FATAL_RETRY = 900.0  # seconds between attempts of a write-back stopped by a 401/403
ERROR_RETRY = 60.0  # seconds after an unexpected failure (network down for every call...)
PURGE_INTERVAL = 3600.0


def heartbeat_name(source: str) -> str:
    """The health/stopped name of the write-back through ``source``."""
    return f"writeback:{source}"


def start_writeback(fw: Any, stop: threading.Event) -> threading.Thread | None:
    """Start the write-back thread of a running :class:`forwarder.runtime.Forwarder` (its
    ``config``, ``store`` and ``metrics``) when configured; ``None`` otherwise."""
    corr = getattr(fw.config, "correlation", None)
    names = list(corr.writeback_sources) if corr is not None and corr.enabled else []
    for beat in fw.store.heartbeats():  # write-backs no longer configured are no longer expected
        if beat["role"] == "writeback" and beat["name"] not in {heartbeat_name(n) for n in names}:
            fw.store.set_expectation(beat["name"], "writeback", 0)
    if corr is None or not names or corr.writeback_interval <= 0:
        return None
    loop = WriteBackLoop(fw.config, fw.store, fw.metrics)
    thread = threading.Thread(target=loop.run, args=(stop,), name="dlpfwd-writeback", daemon=True)
    thread.start()
    return thread


class WriteBackLoop:
    """Drains the write-back of every ``writeback_sources`` entry until ``stop``; see the module
    docstring."""

    def __init__(self, config: Any, store: Any, metrics: Any, transport: Any = None) -> None:
        self.config = config
        self.corr = config.correlation
        self.store = store
        self.metrics = metrics
        self.transport = transport
        self.state_dir = config.forwarder.state_dir
        self.names: list[str] = list(self.corr.writeback_sources)
        self.interval = float(self.corr.writeback_interval)
        self._writers: dict[str, Any] = {}
        self._planned: set[tuple[str, str]] = set()  # dry run: (alert, digest) already logged
        self._stopped = {n for n, info in store.stopped().items() if info.get("role") == "writeback"}
        expect = max(3 * self.interval, 300.0)
        for name in self.names:
            store.set_expectation(heartbeat_name(name), "writeback", expect)
            metrics.stopped.labels("writeback", name).set(1 if heartbeat_name(name) in self._stopped else 0)

    def run(self, stop: threading.Event) -> None:
        next_at = dict.fromkeys(self.names, 0.0)
        last_purge = 0.0
        try:
            while not stop.is_set():
                for name in self.names:
                    if stop.is_set():
                        break
                    if time.monotonic() >= next_at[name]:
                        next_at[name] = time.monotonic() + self.drain(name, stop)
                if time.monotonic() - last_purge > PURGE_INTERVAL:
                    self._purge()
                    last_purge = time.monotonic()
                stop.wait(max(0.05, min(next_at.values()) - time.monotonic()))
        finally:
            for writer in self._writers.values():
                writer.close()
            self._writers.clear()

    def drain(self, name: str, stop: threading.Event | None = None) -> float:
        """One drain of ``name``'s queue; returns the seconds to wait before the next."""
        from forwarder.correlation.writeback import GraphWriter, WriteBack, drain_lock

        so = next((s for s in self.config.sources if s.name == name and s.type == "graph_security"), None)
        if so is None:
            self._stop(name, f"correlation.writeback_sources: {name!r} is not a configured graph_security source")
            return FATAL_RETRY
        dry_run = bool(self.corr.writeback_dry_run)
        try:
            with drain_lock(self.state_dir) as held:
                if not held:
                    log.info("write-back %s: another process (dlpfwd writeback) is draining; next try later", name)
                    return self.interval
                queue = WriteBack(self.state_dir, [name], self.corr.writeback_tag)
                try:
                    writer = None
                    if not dry_run:
                        writer = self._writers.get(name)
                        if writer is None:
                            writer = GraphWriter(so.settings, logging.getLogger(f"dlpfwd.writeback.{name}"))
                            self._writers[name] = writer
                    result = queue.drain(
                        writer,
                        dry_run=dry_run,
                        limit=1 << 30 if dry_run else self.corr.writeback_limit,  # a dry run records nothing
                        should_stop=stop.is_set if stop is not None else None,
                    )
                    due_after = queue.waiting()  # also those deferred by earlier drains
                finally:
                    queue.close()
        except FatalError as exc:
            self._stop(name, str(exc))
            return FATAL_RETRY
        except (ForwarderError, OSError) as exc:
            log.warning("write-back %s: %s; retrying in %.0f s", name, redact(str(exc)), ERROR_RETRY)
            return ERROR_RETRY
        except Exception as exc:  # noqa: BLE001 - the write-back must never take dlpfwd run down
            log.exception("write-back %s failed (%s); retrying in %.0f s", name, type(exc).__name__, ERROR_RETRY)
            return ERROR_RETRY
        self._account(name, result, due_after)
        return 0.0 if result.remaining and not (stop is not None and stop.is_set()) else self.interval

    def _account(self, name: str, result: Any, due_after: int) -> None:
        counts = result.counts()
        if result.planned:  # dry run: log and count each planned comment once per process
            fresh = 0
            for alert, text, incidents in result.planned:
                digest = text.rsplit(":", 1)[-1]
                if (alert, digest) in self._planned:
                    continue
                self._planned.add((alert, digest))
                fresh += 1
                log.info(
                    "write-back %s (dry run): alert %s: would comment (%s) and tag incident(s) %s",
                    name,
                    alert,
                    text.splitlines()[0],
                    ", ".join(incidents) or "-",
                )
            counts["dry_run"] = fresh
        for outcome, n in counts.items():
            if n:
                self.metrics.writeback.labels(name, outcome).inc(n)
        self.metrics.writeback_due.labels(name).set(due_after)
        for alert, reason in {**result.deferred, **result.dead}.items():
            log.warning("write-back %s: alert %s: %s", name, alert, redact(reason))
        if any(counts.values()):
            log.info(
                "write-back %s: commented %d, recovered %d, tagged %d, deferred %d, dead-lettered %d, %d still due",
                name,
                counts["commented"],
                counts["recovered"],
                counts["tagged"],
                counts["deferred"],
                counts["dead_lettered"],
                due_after,
            )
        with self.store.transaction() as tx:
            tx.beat(heartbeat_name(name), time.time())
        if heartbeat_name(name) in self._stopped:
            self._stopped.discard(heartbeat_name(name))
            self.store.clear_stopped(heartbeat_name(name))
            self.metrics.stopped.labels("writeback", name).set(0)
            log.info("write-back %s: writing again; its earlier stop is cleared", name)

    def _stop(self, name: str, reason: str) -> None:
        log.error("write-back %s stopped: %s (tried again in %.0f s)", name, redact(reason), FATAL_RETRY)
        self._stopped.add(heartbeat_name(name))
        self.metrics.stopped.labels("writeback", name).set(1)
        try:
            self.store.set_stopped(heartbeat_name(name), "writeback", redact(reason))
        except Exception:  # noqa: BLE001 - the error line already tells the operator
            log.exception("write-back %s: could not record the stop in the state store", name)

    def _purge(self) -> None:
        from forwarder.correlation.writeback import LOG_RETENTION, WriteBack

        try:
            queue = WriteBack(self.state_dir, self.names, self.corr.writeback_tag)
            try:
                queue.purge_log(time.time() - LOG_RETENTION)
            finally:
                queue.close()
        except Exception as exc:  # noqa: BLE001 - housekeeping only
            log.warning("write-back: could not purge its log: %s", exc)
