"""The forwarder runtime: source loops, the spool transaction, per-sink drainers, shutdown.

::

    fw = Forwarder(config, host)          # a loaded PluginHost
    fw.run(stop)                          # until stop is set; graceful drain; exit code
    fw.run_once()                         # poll every source once, deliver -> RunResult
    fw.backfill("src", since, until, sink=None, progress=cb)
    fw.deliver()                          # drain the spools only (no polling) -> RunResult
    fw.replay_quarantine("src")           # normalize quarantined records again after a fix
    fw.close()

Threads: one per source (poll -> :class:`forwarder.pipeline.Pipeline` -> one transaction per
batch), one :class:`forwarder.delivery.Drainer` per sink. Sinks are isolated: each has its own
spool, back-off and breaker; a sink that is down keeps its backlog on disk while the others
flow. Back-pressure: when a sink with ``overflow = "block"`` reaches its spool cap, sources
pause before committing their next batch (nothing is dropped; the source cursor does not
move, so the data stays at the source).

Shutdown: when ``stop`` is set, sources finish the batch in hand and stop; drainers keep
delivering until their spool is empty, the sink is failing, or ``shutdown_deadline`` passes;
then every plugin is closed. Everything committed is durable, so a hard exit (second signal,
``kill -9``) loses nothing: unconfirmed entries are re-sent at the next start.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import orjson

from forwarder.config import Config, SinkConfig, SourceConfig
from forwarder.delivery import Backoff, Drainer
from forwarder.errors import ConfigError, FatalError, ForwarderError, NotConnected, RetriableError
from forwarder.logs import redact
from forwarder.metrics import Metrics
from forwarder.options import RetryOptions
from forwarder.pipeline import BatchCounts, Pipeline, SinkRoute
from forwarder.schema import iso_utc
from forwarder.sink import Sink, SinkContext
from forwarder.source import RawRecord, Source, SourceBatch, SourceContext
from forwarder.state.base import StateStore
from forwarder.state.sqlite import open_store

log = logging.getLogger("dlpfwd.runtime")

DEDUP_PURGE_INTERVAL = 3600.0
EXPIRY_CHECK_INTERVAL = 600.0
LEDGER_RETENTION = 31 * 86400  # settled units are kept a month for `dlpfwd report`


@dataclass
class RunResult:
    """The result of :meth:`Forwarder.run_once` / :meth:`Forwarder.backfill`.

    ``ok`` is False when anything is left undelivered or a plugin failed.
    """

    ok: bool = True
    sources: dict[str, dict[str, int]] = field(default_factory=dict)  # source -> counts
    delivered: dict[str, int] = field(default_factory=dict)  # sink -> delivered in this run
    undelivered: dict[str, int] = field(default_factory=dict)  # sink -> left in its spool
    dead_letters: dict[str, int] = field(default_factory=dict)  # sink -> dead letters stored
    errors: list[str] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        return sum(c.get("duplicates", 0) for c in self.sources.values())

    @property
    def quarantined(self) -> int:
        return sum(c.get("quarantined", 0) for c in self.sources.values())

    def summary(self) -> str:
        """One line per source and sink, for the CLI."""
        lines = []
        for name, c in self.sources.items():
            lines.append(
                f"source {name}: read {c.get('read', 0)}, spooled {c.get('spooled', 0)}, "
                f"duplicates {c.get('duplicates', 0)}, quarantined {c.get('quarantined', 0)}"
            )
        for name in sorted(set(self.delivered) | set(self.undelivered)):
            lines.append(
                f"sink {name}: delivered {self.delivered.get(name, 0)}, pending {self.undelivered.get(name, 0)}, "
                f"dead letters {self.dead_letters.get(name, 0)}"
            )
        lines.extend(self.errors)
        return "\n".join(lines)


class StateDirBusy(ForwarderError):
    """Another dlpfwd process holds the state directory."""


class _Pressure:
    """Back-pressure between drainers (which free spool space) and sources (which wait for it)."""

    def __init__(self, store: StateStore, routes: list[SinkRoute], metrics: Metrics) -> None:
        self.store = store
        self.blocking = [r for r in routes if not r.drop_oldest]
        self.cond = threading.Condition()
        self.metrics = metrics

    def full(self, only_sink: str | None = None) -> list[str]:
        out = []
        for r in self.blocking:
            if only_sink is not None and r.name != only_sink:
                continue
            events, size = self.store.spool_depth(r.name)
            if events >= r.max_events or size >= r.max_bytes:
                out.append(r.name)
        return out

    def wait(self, source: str, stop: threading.Event, only_sink: str | None = None) -> bool:
        """Block while a blocking sink's spool is full; False if ``stop`` was set meanwhile."""
        full = self.full(only_sink)
        if not full:
            return True
        log.warning("source %s paused: spool of sink(s) %s full (overflow = block)", source, ", ".join(full))
        self.metrics.paused.labels(source).set(1)
        try:
            while full:
                if stop.is_set():
                    return False
                with self.cond:
                    self.cond.wait(0.5)
                full = self.full(only_sink)
        finally:
            self.metrics.paused.labels(source).set(0)
        log.info("source %s resumed", source)
        return True

    def released(self) -> None:
        with self.cond:
            self.cond.notify_all()


class Forwarder:
    """One forwarder process: its plugins, state store, pipeline and drainers."""

    def __init__(self, config: Config, host: Any, store: StateStore | None = None) -> None:
        self.config = config
        self.host = host
        state_dir = config.forwarder.state_dir
        os.makedirs(state_dir, exist_ok=True)
        self._lock_fd = _lock_state_dir(state_dir)
        try:
            self.store: StateStore = store or open_store(state_dir)
            self._closed = False
            self._setup(config, host)
        except BaseException:
            self._release()
            raise

    def _setup(self, config: Config, host: Any) -> None:
        self.metrics = Metrics()
        problems = []
        for sc in config.sinks:
            if sc.type not in host.sinks:
                problems.append(f"sinks.{sc.name}.type: unknown sink type {sc.type!r}")
        for so in config.sources:
            if so.type not in host.sources:
                problems.append(f"sources.{so.name}.type: unknown source type {so.type!r}")
        if problems:
            raise ConfigError(problems)
        self.sinks: dict[str, Sink] = {sc.name: self._build_sink(sc) for sc in config.sinks}
        self.sources: dict[str, Source] = {
            so.name: self._build_source(so) for so in config.sources if so.options.enabled
        }
        routes = [Pipeline.route_for(sc, host.sinks[sc.type].carries_raw) for sc in config.sinks]
        self.pressure = _Pressure(self.store, routes, self.metrics)
        self.drainers: dict[str, Drainer] = {
            sc.name: Drainer(sc.name, self.sinks[sc.name], sc.options, self.store, self.metrics, self.pressure.released)
            for sc in config.sinks
        }
        self.pipeline = Pipeline(
            config, self.store, dict(host.normalizers), routes, self.metrics, self._wake, host=host
        )
        self.errors: list[str] = []
        stopped = self.store.stopped()
        configured = {s.name for s in config.sources} | {s.name for s in config.sinks}
        corr = config.correlation  # a stopped write-back stays flagged until it writes
        configured |= {f"writeback:{n}" for n in (corr.writeback_sources if corr is not None else [])}
        for gone in set(stopped) - configured:
            self.store.clear_stopped(gone)  # removed from the configuration: no longer an alarm
        self._stopped_sources = {n for n in self.sources if stopped.get(n, {}).get("role") == "source"}
        for name in self.sources:
            self.metrics.stopped.labels("source", name).set(1 if name in self._stopped_sources else 0)
        for name in self.sinks:
            events, size = self.store.spool_depth(name)
            self.metrics.spool_events.labels(name).set(events)
            self.metrics.spool_bytes.labels(name).set(size)

    # ------------------------------------------------------------------ construction

    def _build_sink(self, sc: SinkConfig) -> Sink:
        cls = self.host.sinks[sc.type]
        sink_dir = os.path.join(self.config.forwarder.state_dir, "sinks", sc.name)
        ctx = SinkContext(
            sc.name,
            logging.getLogger(f"dlpfwd.sink.{sc.name}"),
            state=self.store.kv(f"sink:{sc.name}"),
            count=self.metrics.plugin_counter_for(sc.name),
            state_dir=sink_dir,
        )
        self.store.register_sink(sc.name)
        self.store.set_expectation(sc.name, "sink", sc.options.expect_delivery_within)
        sink: Sink = cls(sc.name, sc.settings, ctx)
        return sink

    def _build_source(self, so: SourceConfig) -> Source:
        cls = self.host.sources[so.type]
        name = so.name
        ctx = SourceContext(
            name,
            logging.getLogger(f"dlpfwd.source.{name}"),
            ledger_status=lambda ids: self.store.ledger_status(name, ids),
            count=self.metrics.plugin_counter_for(name),
            state=self.store.kv(f"source:{name}"),
        )
        within = so.options.expect_poll_within or 3 * so.options.poll_interval
        self.store.set_expectation(name, "source", within)
        source: Source = cls(name, so.settings, ctx)
        return source

    def _wake(self, sink: str) -> None:
        d = self.drainers.get(sink)
        if d is not None:
            d.wake()

    # ------------------------------------------------------------------ sources

    def _process(
        self, name: str, batch: SourceBatch, key: str, stop: threading.Event, only_sink: str | None, dedup: bool
    ) -> BatchCounts | None:
        if not self.pressure.wait(name, stop, only_sink):
            return None
        so = self.config.source(name)
        return self.pipeline.process(name, so.type, self.sources[name], batch, key, only_sink, dedup)

    def poll_source(self, name: str, stop: threading.Event) -> BatchCounts:
        """Poll one source once to the end (``poll`` returned) or until ``stop``."""
        source = self.sources[name]
        key = f"source:{name}"
        total = BatchCounts()
        started = time.monotonic()
        n_batches = 0
        cursor_moved = False
        batches = source.poll(self.store.get_cursor(key))
        try:
            for batch in batches:
                counts = self._process(name, batch, key, stop, None, True)
                if counts is None:
                    break
                total.add(counts)
                n_batches += 1
                cursor_moved = cursor_moved or batch.cursor is not None
                if stop.is_set():
                    break
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()
        now = time.time()
        with self.store.transaction() as tx:
            tx.beat(name, now)
        self.metrics.last_poll.labels(name).set(now)
        log.debug(
            "source %s: poll done in %.2f s: %d batch(es), %d record(s) read, %d spooled, %d duplicate(s), "
            "%d quarantined; cursor %s",
            name,
            time.monotonic() - started,
            n_batches,
            total.read,
            total.spooled,
            total.duplicates,
            total.quarantined,
            "advanced" if cursor_moved else "unchanged",
        )
        if name in self._stopped_sources:
            self._stopped_sources.discard(name)
            self.store.clear_stopped(name)
            self.metrics.stopped.labels("source", name).set(0)
            log.info("source %s: polling again; its earlier stop is cleared", name)
        return total

    def _mark_stopped(self, name: str, reason: str) -> None:
        """Persist a source's fatal stop for `dlpfwd state` / `health` and the metrics."""
        self.metrics.stopped.labels("source", name).set(1)
        self._stopped_sources.add(name)
        try:
            self.store.set_stopped(name, "source", redact(reason))
        except Exception:  # noqa: BLE001 - the error line already tells the operator
            log.exception("source %s: could not record the stop in the state store", name)

    def _source_loop(self, name: str, stop: threading.Event, once: bool = False) -> BatchCounts:
        source = self.sources[name]
        interval = self.config.source(name).options.poll_interval
        backoff = Backoff(RetryOptions(initial=1.0, maximum=300.0))
        connected = False
        total = BatchCounts()
        attempts = 0
        while not stop.is_set():
            attempts += 1
            delay = interval
            try:
                if not connected:
                    source.connect()
                    connected = True
                    log.info("source %s: connected", name)
                total.add(self.poll_source(name, stop))
                backoff.succeeded()
                if once:
                    return total
            except FatalError as exc:
                self._error(f"source {name} stopped: {exc}")
                self._mark_stopped(name, str(exc))
                return total
            except RetriableError as exc:
                if isinstance(exc, NotConnected):
                    connected = False
                delay = backoff.failed(exc.retry_after)
                log.warning("source %s: %s; retrying in %.1f s", name, exc, delay)
            except Exception as exc:  # noqa: BLE001 - a faulty source plugin must not stop the others
                connected = False
                delay = backoff.failed()
                log.exception("source %s failed (%s); retrying in %.1f s", name, type(exc).__name__, delay)
            if once and attempts >= 3:
                self._error(f"source {name}: poll failed {attempts} times")
                return total
            stop.wait(delay if not once else min(delay, 5.0))
        return total

    def _error(self, message: str) -> None:
        log.error("%s", message)
        self.errors.append(message)

    # ------------------------------------------------------------------ drainers

    def _start_drainers(
        self, stop: threading.Event, finish: threading.Event, names: list[str]
    ) -> list[threading.Thread]:
        threads = []
        deadline = self.config.forwarder.shutdown_deadline
        for name in names:
            d = self.drainers[name]
            t = threading.Thread(target=d.run, args=(stop, finish, deadline), name=f"dlpfwd-sink-{name}", daemon=True)
            t.start()
            threads.append(t)
        return threads

    def _result(self, delivered_before: dict[str, int], counts: dict[str, BatchCounts], names: list[str]) -> RunResult:
        result = RunResult(errors=list(self.errors))
        result.sources = {k: v.as_dict() for k, v in counts.items()}
        dead = self.store.dead_letter_counts()
        for name in names:
            d = self.drainers[name]
            result.delivered[name] = d.delivered - delivered_before.get(name, 0)
            result.undelivered[name] = self.store.spool_depth(name)[0]
            result.dead_letters[name] = dead.get(name, 0)
            if d.fatal:
                result.errors.append(f"sink {name} stopped: {d.fatal}")
        result.ok = not result.errors and not any(result.undelivered.values())
        return result

    # ------------------------------------------------------------------ public API

    def run_once(self) -> RunResult:
        """Poll every source once, deliver everything deliverable, then return."""
        stop, finish = threading.Event(), threading.Event()
        names = list(self.sinks)
        before = {n: d.delivered for n, d in self.drainers.items()}
        self.errors = []
        threads = self._start_drainers(stop, finish, names)
        counts: dict[str, BatchCounts] = {}
        try:
            for name in self.sources:
                counts[name] = self._source_loop(name, stop, once=True)
        finally:
            finish.set()
            for t in threads:
                t.join()
        return self._result(before, counts, names)

    def deliver(self) -> RunResult:
        """Drain every sink's spool (no polling) until empty or the sink is failing."""
        stop, finish = threading.Event(), threading.Event()
        finish.set()
        names = list(self.sinks)
        before = {n: d.delivered for n, d in self.drainers.items()}
        self.errors = []
        for t in self._start_drainers(stop, finish, names):
            t.join()
        return self._result(before, {}, names)

    def backfill(
        self,
        source: str,
        since: dt.datetime,
        until: dt.datetime,
        sink: str | None = None,
        progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> RunResult:
        """Read ``[since, until)`` from ``source`` with its own resumable cursor (never the live
        one) and deliver it. With ``sink``, only that sink's spool receives the events and
        deduplication is skipped (the operator is re-feeding that sink on purpose)."""
        if source not in self.sources:
            raise ConfigError([f"backfill: unknown or disabled source {source!r}"])
        if sink is not None and sink not in self.sinks:
            raise ConfigError([f"backfill: unknown sink {sink!r}"])
        src = self.sources[source]
        key = f"backfill:{source}:{iso_utc(since)}:{iso_utc(until)}" + (f":{sink}" if sink else "")
        stop, finish = threading.Event(), threading.Event()
        names = [sink] if sink else list(self.sinks)
        before = {n: d.delivered for n, d in self.drainers.items()}
        self.errors = []
        threads = self._start_drainers(stop, finish, names)
        total = BatchCounts()
        batches_done = 0
        try:
            src.connect()
            batches = src.backfill(since, until, self.store.get_cursor(key))
            try:
                for batch in batches:
                    counts = self._process(source, batch, key, stop, sink, sink is None)
                    if counts is None:
                        break
                    total.add(counts)
                    batches_done += 1
                    if progress is not None:
                        progress({"batches": batches_done, **total.as_dict(), **batch.progress})
            finally:
                close = getattr(batches, "close", None)
                if close is not None:
                    close()
        except (ForwarderError, OSError) as exc:
            self._error(f"backfill of {source}: {exc}")
        finally:
            finish.set()
            for t in threads:
                t.join()
        return self._result(before, {source: total}, names)

    def replay_quarantine(self, source: str, ids: list[int] | None = None) -> BatchCounts:
        """Normalize quarantined records of ``source`` again (after a normalizer fix) and spool
        what now passes; what still fails is quarantined anew with the new reason. The old
        quarantine rows are removed once the new outcome is committed."""
        if source not in self.sources:
            raise ConfigError([f"replay: unknown or disabled source {source!r}"])
        so = self.config.source(source)
        total = BatchCounts()
        wanted = set(ids) if ids is not None else None
        last = self.store.quarantine_last_id(source)  # records quarantined again get later ids
        after = 0
        while True:
            rows = [r for r in self.store.quarantined(source, limit=500, after=after) if r.id <= last]
            if not rows:
                return total
            after = rows[-1].id
            rows = [r for r in rows if wanted is None or r.id in wanted]
            if not rows:
                continue
            records = [RawRecord(r.kind, _json_object(r.raw), r.raw, r.unit) for r in rows]
            counts = self.pipeline.process(source, so.type, self.sources[source], SourceBatch(records), "")
            self.store.purge_quarantine(source, [r.id for r in rows])
            total.add(counts)

    def run(self, stop: threading.Event) -> int:
        """Run continuously until ``stop`` is set; then shut down gracefully. Returns the exit
        code: 0, or 1 when a source or sink was stopped by a fatal error."""
        port = self.config.forwarder.metrics_port
        if port:
            bound = self.metrics.serve(port)
            log.info("metrics on http://127.0.0.1:%d/metrics", bound)
        self._purge_dedup()
        finish, hard = threading.Event(), threading.Event()
        drain_threads = self._start_drainers(hard, finish, list(self.sinks))
        source_threads = []
        for name in self.sources:
            t = threading.Thread(target=self._source_loop, args=(name, stop), name=f"dlpfwd-source-{name}", daemon=True)
            t.start()
            source_threads.append(t)
        from forwarder.correlation.writeback_loop import start_writeback

        writeback = start_writeback(self, stop)  # None unless [correlation] writeback_sources
        from forwarder.sync.loop import start_in as start_sync

        sync = start_sync(self, stop)  # None unless a servicenow sink has [sinks.sync] enabled
        last_purge = last_expiry_check = time.monotonic()
        self.warn_expiring()
        while not stop.wait(1.0):
            self.update_gauges()
            if time.monotonic() - last_purge > DEDUP_PURGE_INTERVAL:
                self._purge_dedup()
                last_purge = time.monotonic()
            if time.monotonic() - last_expiry_check > EXPIRY_CHECK_INTERVAL:
                self.warn_expiring()
                last_expiry_check = time.monotonic()
        deadline = time.monotonic() + self.config.forwarder.shutdown_deadline
        log.info("shutting down (deadline %.0f s)", self.config.forwarder.shutdown_deadline)
        for t in source_threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if writeback is not None:
            writeback.join(max(0.0, deadline - time.monotonic()))
        if sync is not None:
            sync.join(max(0.0, deadline - time.monotonic()))
        finish.set()
        for t in drain_threads:
            t.join(max(0.0, deadline - time.monotonic()))
        hard.set()
        for t in drain_threads:
            t.join(5.0)
        fatal = any(d.fatal for d in self.drainers.values()) or bool(self.errors)
        self.update_gauges()
        return 1 if fatal else 0

    def update_gauges(self) -> None:
        """Refresh spool depth and age gauges."""
        now = time.time()
        self.store.refresh_depths()
        for name in self.sinks:
            events, size = self.store.spool_depth(name)
            self.metrics.spool_events.labels(name).set(events)
            self.metrics.spool_bytes.labels(name).set(size)
            oldest = self.store.spool_oldest(name) if events else None
            self.metrics.spool_age.labels(name).set(now - oldest if oldest else 0.0)

    def warn_expiring(self, within: float = 24 * 3600.0) -> list[str]:
        """Log (and return) a warning per source with work not fetched yet that expires at the
        source within ``within`` seconds, or already expired: the completeness alarm."""
        from forwarder.report import build_report

        now = time.time()
        report = build_report(self.store.ledger(now - 8 * 86400), now - 8 * 86400, now, within)
        warnings = []
        for name, tally in report.sources.items():
            if tally.at_risk:
                warnings.append(
                    f"source {name}: {len(tally.at_risk)} unit(s) not fetched yet expire at the source within "
                    f"{within / 3600:.0f} h (first: {tally.at_risk[0].unit}, expires {tally.at_risk[0].expires})"
                )
            if tally.expired:
                warnings.append(f"source {name}: {len(tally.expired)} unit(s) expired at the source before being read")
        for w in warnings:
            log.warning("%s; see `dlpfwd report --since 7d`", w)
        return warnings

    def _purge_dedup(self) -> None:
        """Hourly housekeeping: idempotency keys past the window, settled ledger units past
        :data:`LEDGER_RETENTION`."""
        window = self.config.forwarder.dedup_window
        if window > 0:
            n = self.store.purge_dedup(time.time() - window)
            if n:
                log.info("forgot %d idempotency keys older than the deduplication window", n)
        n = self.store.purge_ledger(time.time() - LEDGER_RETENTION)
        if n:
            log.info("forgot %d settled ledger units older than %d days", n, LEDGER_RETENTION // 86400)

    def close(self) -> None:
        """Close every plugin and the state store; idempotent."""
        if self._closed:
            return
        self._closed = True
        for drainer in self.drainers.values():
            drainer.settler.stop()
        for kind, plugins in (("sink", self.sinks), ("source", self.sources)):
            for name, plugin in plugins.items():
                try:
                    plugin.close()
                except Exception as exc:  # noqa: BLE001
                    log.warning("%s %s: close failed: %s: %s", kind, name, type(exc).__name__, exc)
        self.pipeline.close()
        self.metrics.stop()
        self.store.close()
        self._release()

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Forwarder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _lock_state_dir(state_dir: str) -> int | None:
    fd = os.open(os.path.join(state_dir, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StateDirBusy(f"another dlpfwd process is using the state directory {state_dir}") from None
    return fd


def install_signal_handlers(stop: threading.Event, deadline: float) -> None:
    """SIGINT/SIGTERM: the first sets ``stop`` (graceful shutdown within ``deadline``), the
    second exits at once. Exiting at once loses nothing: every committed batch is in the
    state store and unconfirmed deliveries are re-sent at the next start."""
    count = 0

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal count
        count += 1
        if count == 1:
            log.warning("signal %d: shutting down within %.0f s (signal again to exit now)", signum, deadline)
            stop.set()
        else:
            log.warning("second signal: exiting now; unconfirmed deliveries will be re-sent at the next start")
            os._exit(130)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
