"""Retry timing for one sink: exponential back-off with full jitter, Retry-After, circuit breaker.

Both classes are pure logic with an injectable clock and random source, so they are tested
without sleeping. The drainer (:mod:`forwarder.runtime`) asks :meth:`RetryGate.wait_time`
before each write and reports every batch result back.

Back-off (full jitter, as in the AWS architecture blog "Exponential Backoff And Jitter"): after
the n-th consecutive failure the delay is ``uniform(0, min(maximum, initial * multiplier**(n-1)))``;
when the peer sent Retry-After, the delay is at least that.

Circuit breaker: after ``breaker_failures`` consecutive failed batches the breaker opens; no
batch is sent for ``breaker_cooldown`` seconds (or longer if Retry-After says so), then one
small probe batch is sent (half-open). Success closes it, failure re-opens it. While it is
open the sink's backlog stays on disk and every other sink keeps flowing.

Isolation of a poison event: sinks report per-entry outcomes, so the host does not bisect on
HTTP errors (the sink does). The host only bisects when ``write_batch`` raises an unexpected,
non-retriable exception (a formatter bug tripping on one event) ``breaker_failures`` times on
the same batch head: it halves the batch until one entry fails alone, then dead-letters that
entry with the exception as the reason. Retriable errors (network, 5xx) are never bisected.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence

from forwarder.errors import FatalError, NotConnected, RetriableError
from forwarder.logs import redact
from forwarder.metrics import Metrics
from forwarder.options import RetryOptions, SinkOptions
from forwarder.sink import Entry, Outcome, Sink
from forwarder.state.base import SpoolRow, StateStore

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
BREAKER_STATES = (CLOSED, OPEN, HALF_OPEN)


class Backoff:
    """Exponential back-off with full jitter, honouring Retry-After."""

    def __init__(self, options: RetryOptions, rand: Callable[[], float] = random.random) -> None:
        self.options = options
        self.failures = 0
        self._rand = rand

    def ceiling(self) -> float:
        """The upper bound of the next delay."""
        if self.failures == 0:
            return 0.0
        o = self.options
        return min(o.maximum, o.initial * o.multiplier ** min(self.failures - 1, 64))

    def failed(self, retry_after: float | None = None) -> float:
        """Record a failure; returns the delay before the next attempt."""
        self.failures += 1
        delay = self._rand() * self.ceiling()
        if retry_after is not None and retry_after > 0:
            delay = max(delay, retry_after)
        return delay

    def succeeded(self) -> None:
        self.failures = 0


class CircuitBreaker:
    """Opens after consecutive failures, probes after a cooldown; see the module docstring."""

    def __init__(self, options: RetryOptions, clock: Callable[[], float] = time.monotonic) -> None:
        self.options = options
        self.state = CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.open_until = 0.0
        self._clock = clock

    def allow(self) -> float:
        """0 when a batch may be sent now (switching an open breaker to half-open once the
        cooldown passed), else the seconds to wait."""
        if self.state != OPEN:
            return 0.0
        left = self.open_until - self._clock()
        if left > 0:
            return left
        self.state = HALF_OPEN
        return 0.0

    def failed(self, retry_after: float | None = None) -> None:
        self.failures += 1
        if self.state == HALF_OPEN or self.failures >= self.options.breaker_failures:
            now = self._clock()
            self.state = OPEN
            self.opened_at = now
            self.open_until = now + max(self.options.breaker_cooldown, retry_after or 0.0)

    def succeeded(self) -> None:
        self.failures = 0
        self.state = CLOSED

    @property
    def probing(self) -> bool:
        return self.state == HALF_OPEN


class RetryGate:
    """Back-off and breaker of one sink, combined: when may the next batch go?"""

    def __init__(
        self,
        options: RetryOptions,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.backoff = Backoff(options, rand)
        self.breaker = CircuitBreaker(options, clock)
        self._clock = clock
        self.not_before = 0.0
        self.last_reason = ""

    def wait_time(self) -> float:
        """Seconds until the next batch may be sent (0 = now)."""
        return max(self.not_before - self._clock(), self.breaker.allow(), 0.0)

    def failed(self, reason: str, retry_after: float | None = None) -> float:
        """Record a failed batch; returns the delay chosen."""
        self.last_reason = reason
        delay = self.backoff.failed(retry_after)
        self.breaker.failed(retry_after)
        self.not_before = self._clock() + delay
        return delay

    def succeeded(self) -> None:
        self.backoff.succeeded()
        self.breaker.succeeded()
        self.not_before = 0.0
        self.last_reason = ""

    @property
    def failures(self) -> int:
        return self.backoff.failures


# --------------------------------------------------------------------------- the drainer

POISON_ATTEMPTS = 3  # a lone entry raising an unexpected exception this often is dead-lettered
MAX_EXCEPTION_DEAD_LETTERS = 10  # ...but a sink raising on this many entries in a row is stopped
ACK_POLL_INTERVAL = 0.2
MAX_PENDING_BATCHES = 10  # batches awaiting acknowledgement before the drainer waits for acks


class Drainer:
    """Drains one sink's spool: reads batches, calls ``write_batch``, applies each outcome.

    Entries leave the spool only when the sink reports them delivered (or rejected: then they
    move to dead letters). Pending entries (asynchronous acknowledgements) are in flight until
    ``poll_acks`` settles them; after a crash they are simply read again (at-least-once).
    One thread runs :meth:`run`; :meth:`wake` is called by the pipeline after appends.
    """

    def __init__(
        self,
        name: str,
        sink: Sink,
        options: SinkOptions,
        store: StateStore,
        metrics: Metrics,
        on_settled: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.sink = sink
        self.options = options
        self.store = store
        self.metrics = metrics
        self.on_settled = on_settled
        self.gate = RetryGate(options.retry, clock=clock)
        self.log = logging.getLogger(f"dlpfwd.sink.{name}")
        cls = type(sink)
        self.max_events = max(1, min(options.batch.max_events, cls.max_batch_events))
        caps = [options.batch.max_bytes] + ([cls.max_batch_bytes] if cls.max_batch_bytes else [])
        self.max_bytes = min(caps)
        self.wakeup = threading.Event()
        self.connected = False
        self.fatal: str | None = None
        self.pending: dict[int, SpoolRow] = {}
        self.pos = 0
        self._limit_override: int | None = None
        self._override_until = 0
        self._crash_head: tuple[int, int] = (0, 0)  # (first id, consecutive crashes)
        self._exception_dead = 0
        self._partial_since: float | None = None
        self.delivered = 0
        self.idle = threading.Event()
        self.settler = Settler(self)
        self._breaker_seen = CLOSED
        self._clock = clock
        # Stopped by a fatal error in an earlier run? Cleared at the first successful delivery.
        self._marked_stopped = name in store.stopped()
        metrics.stopped.labels("sink", name).set(1 if self._marked_stopped else 0)

    # ------------------------------------------------------------------ loop

    def wake(self) -> None:
        self.wakeup.set()

    def run(self, stop: threading.Event, finish: threading.Event, pending_deadline: float = 30.0) -> None:
        """Deliver until ``stop``; once ``finish`` is set, return as soon as the spool is empty
        or the sink is failing (the backlog stays on disk)."""
        finish_started: float | None = None
        try:
            while not stop.is_set() and self.fatal is None:
                finishing = finish.is_set()
                if finishing and finish_started is None:
                    finish_started = time.monotonic()
                wait = self.gate.wait_time()
                self._note_breaker()
                if wait > 0:
                    self.metrics.breaker_open.labels(self.name).set(1 if self.gate.breaker.state == OPEN else 0)
                    if finishing and (self.gate.failures >= 3 or wait > 5.0):
                        return
                    stop.wait(min(wait, 1.0))
                    continue
                if not self.connected and not self._connect():
                    continue
                try:
                    if self.pending:
                        self._poll_acks()
                    # Bounded in-flight window: with this many entries awaiting acknowledgement,
                    # settle some before sending more (memory stays bounded).
                    in_flight_full = len(self.pending) >= MAX_PENDING_BATCHES * self.max_events
                    worked = False if in_flight_full else self.step(finishing)
                except Exception as exc:  # noqa: BLE001 - the state store (disk full...): keep the spool, retry
                    delay = self.gate.failed(f"{type(exc).__name__}: {exc}")
                    self.log.exception("sink %s: delivery loop failed; retrying in %.1f s", self.name, delay)
                    continue
                if worked:
                    continue
                if self.pending:
                    if (
                        finishing
                        and finish_started is not None
                        and time.monotonic() - finish_started > pending_deadline
                    ):
                        return
                    stop.wait(ACK_POLL_INTERVAL)
                    continue
                if finishing:
                    return
                self.idle.set()
                self.wakeup.wait(1.0)
                self.wakeup.clear()
        finally:
            self.settler.flush()
            self.idle.set()

    def _connect(self) -> bool:
        try:
            self.sink.connect()
        except FatalError as exc:
            self._stop_sink(str(exc))
            return False
        except RetriableError as exc:
            delay = self.gate.failed(f"connect: {exc}", exc.retry_after)
            self.log.warning("sink %s: cannot connect (%s); retrying in %.1f s", self.name, exc, delay)
            return False
        except Exception as exc:  # noqa: BLE001 - plugin faults are retried, never fatal to the host
            delay = self.gate.failed(f"connect: {type(exc).__name__}: {exc}")
            self.log.warning(
                "sink %s: connect failed (%s: %s); retrying in %.1f s", self.name, type(exc).__name__, exc, delay
            )
            return False
        self.connected = True
        self.log.info("sink %s: connected", self.name)
        return True

    def _note_breaker(self) -> None:
        """Log a change of the circuit breaker's state (closed / open / half_open)."""
        state = self.gate.breaker.state
        if state == self._breaker_seen:
            return
        before, self._breaker_seen = self._breaker_seen, state
        if state == OPEN:
            self.log.info(
                "sink %s: circuit breaker %s -> open after %d failed batch(es); next probe in %.1f s",
                self.name,
                before,
                self.gate.breaker.failures,
                max(0.0, self.gate.breaker.open_until - self._clock()),
            )
        else:
            self.log.info("sink %s: circuit breaker %s -> %s", self.name, before, state)

    def _stop_sink(self, message: str) -> None:
        self.fatal = message
        self.log.error("sink %s stopped: %s (its spool is kept; fix and restart)", self.name, message)
        self.metrics.stopped.labels("sink", self.name).set(1)
        try:
            self.store.set_stopped(self.name, "sink", redact(message))
            self._marked_stopped = True
        except Exception:  # noqa: BLE001 - the log line above still tells the operator
            self.log.exception("sink %s: could not record the stop in the state store", self.name)

    def _read(self, finishing: bool) -> list[SpoolRow]:
        limit = self._limit_override or self.max_events
        if self.gate.breaker.probing:
            limit = 1
        # Entries awaiting acknowledgement lie at or before ``pos`` unless a retry moved it back;
        # only then read past them (and leave them out).
        extra = len(self.pending) if self.pending and max(self.pending) > self.pos else 0
        rows = self.store.read_spool(self.name, self.pos, limit + extra)
        if extra:
            rows = [r for r in rows if r.id not in self.pending]
            rows = rows[:limit]
        size = 0
        for i, r in enumerate(rows):
            size += r.size
            if size > self.max_bytes and i > 0:
                rows = rows[:i]
                break
        return rows

    def step(self, finishing: bool = False) -> bool:
        """Send one batch if there is one; False when nothing was ready."""
        rows = self._read(finishing)
        if not rows:
            self._partial_since = None
            return False
        wait = self.options.batch.max_wait
        if len(rows) < (self._limit_override or self.max_events) and wait > 0 and not finishing:
            now = time.monotonic()
            if self._partial_since is None:
                self._partial_since = now
            if now - self._partial_since < wait:
                self.wakeup.wait(min(wait - (now - self._partial_since), 0.25))
                self.wakeup.clear()
                rows2 = self._read(finishing)
                if (
                    len(rows2) < (self._limit_override or self.max_events)
                    and time.monotonic() - self._partial_since < wait
                ):
                    return True  # come back for a fuller batch
                rows = rows2 or rows
        self._partial_since = None
        entries: list[Entry] = list(rows)  # a SpoolRow is an Entry
        try:
            outcome = self.sink.write_batch(entries)
        except NotConnected as exc:
            self.connected = False
            outcome = Outcome.all_retry(entries, f"not connected: {exc}", exc.retry_after)
        except RetriableError as exc:
            outcome = Outcome.all_retry(entries, str(exc), exc.retry_after)
        except FatalError as exc:
            outcome = Outcome.stop(entries, str(exc))
        except Exception as exc:  # noqa: BLE001 - isolate the event that trips the sink
            return self._crashed(rows, exc)
        self._crash_head = (0, 0)
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug(
                "sink %s: batch of %d event(s), %d bytes: delivered %d, pending %d, retry %d, rejected %d%s",
                self.name,
                len(rows),
                sum(r.size for r in rows),
                len(outcome.delivered),
                len(outcome.pending),
                len(rows) - len(set(outcome.delivered) | set(outcome.pending) | set(outcome.rejected)),
                len(outcome.rejected),
                " (fatal)" if outcome.fatal else "",
            )
        self.apply(rows, outcome)
        if self._limit_override is not None and self.pos >= self._override_until:
            self._limit_override = None  # past the batch that raised: back to full batches
        return True

    # ------------------------------------------------------------------ outcomes

    def apply(self, rows: Sequence[SpoolRow], outcome: Outcome) -> None:
        """Settle one outcome in the store (delivered -> removed, rejected -> dead letters).

        The common case -- every entry delivered -- is recorded by the background settler, so
        the next batch is read and sent meanwhile (the entries are past ``pos``; after a crash
        before the settle commits they are simply sent again). Anything else is settled here,
        after the settler has caught up."""
        if rows:
            self.pos = max(self.pos, rows[-1].id)
        if (
            not outcome.rejected
            and not outcome.pending
            and not outcome.fatal
            and not outcome.retry
            and len(outcome.delivered) == len(rows)
            and set(outcome.delivered) == {r.id for r in rows}
        ):
            self.settler.submit(list(rows), outcome)
            self._succeeded()
            return
        by_id = {r.id: r for r in rows}
        delivered = [i for i in dict.fromkeys(outcome.delivered) if i in by_id]
        self.settler.flush()
        rejected = [(by_id[i], reason) for i, reason in outcome.rejected.items() if i in by_id]
        pending = [i for i in outcome.pending if i in by_id]
        settled = set(delivered) | set(outcome.rejected) | set(pending)
        retry = [r.id for r in rows if r.id not in settled]
        for i in pending:
            self.pending[i] = by_id[i]
        self._settle([by_id[i] for i in delivered], rejected, [by_id[i] for i in retry], outcome)
        if retry:
            self.pos = min(self.pos, min(retry) - 1)

    def _record(
        self,
        delivered: list[SpoolRow],
        rejected: list[tuple[SpoolRow, str]],
        retry: list[SpoolRow],
        outcome: Outcome,
    ) -> None:
        """Write an outcome to the store and the metrics (any thread)."""
        now = time.time()
        counts = self.store.settle(self.name, delivered, rejected, retry, now)
        m = self.metrics
        m.sink(self.name, "delivered", counts["delivered"])
        m.sink(self.name, "rejected", len(rejected))
        m.sink(self.name, "dead_lettered", counts["dead_lettered"])
        m.sink(self.name, "retried", len(retry))
        m.sink(self.name, "duplicates_possible", outcome.duplicates_possible)
        self.delivered += counts["delivered"]
        if counts["delivered"]:
            self._exception_dead = 0
            m.last_delivery.labels(self.name).set(now)
            if self._marked_stopped:
                self._marked_stopped = False
                self.store.clear_stopped(self.name)
                m.stopped.labels("sink", self.name).set(0)
                self.log.info("sink %s: delivering again; its earlier stop is cleared", self.name)
        events, size = self.store.spool_depth(self.name)
        m.spool_events.labels(self.name).set(events)
        m.spool_bytes.labels(self.name).set(size)
        if (delivered or rejected) and self.on_settled:
            self.on_settled()

    def _succeeded(self) -> None:
        if self.gate.failures:
            self.log.info("sink %s: delivering again", self.name)
        self.gate.succeeded()
        self.metrics.breaker_open.labels(self.name).set(0)

    def _settle(
        self,
        delivered: list[SpoolRow],
        rejected: list[tuple[SpoolRow, str]],
        retry: list[SpoolRow],
        outcome: Outcome,
    ) -> None:
        self._record(delivered, rejected, retry, outcome)
        if rejected:
            self.log.warning(
                "sink %s rejected %d event(s) for good; they are in its dead letters (first reason: %s)",
                self.name,
                len(rejected),
                rejected[0][1],
            )
        if outcome.fatal:
            self._stop_sink(outcome.fatal)
        elif retry:
            delay = self.gate.failed(outcome.retry_reason or "sink asked to retry", outcome.retry_after)
            self.log.debug(
                "sink %s: retry delay %.2f s (consecutive failures %d, Retry-After %s)",
                self.name,
                delay,
                self.gate.failures,
                outcome.retry_after,
            )
            self.log.warning(
                "sink %s: %d event(s) to retry (%s); next attempt in %.1f s",
                self.name,
                len(retry),
                outcome.retry_reason or "no reason given",
                delay,
            )
        elif delivered or rejected or outcome.pending:
            self._succeeded()

    def _poll_acks(self) -> None:
        self.settler.flush()
        try:
            outcome = self.sink.poll_acks()
        except RetriableError as exc:
            self.log.warning("sink %s: polling acknowledgements failed: %s", self.name, exc)
            return
        except Exception as exc:  # noqa: BLE001
            self.log.warning("sink %s: polling acknowledgements failed: %s: %s", self.name, type(exc).__name__, exc)
            return
        ids = set(outcome.delivered) | set(outcome.rejected) | set(outcome.retry)
        rows = [self.pending.pop(i) for i in sorted(ids) if i in self.pending]
        if not rows:
            return
        by_id = {r.id: r for r in rows}
        delivered = [by_id[i] for i in dict.fromkeys(outcome.delivered) if i in by_id]
        rejected = [(by_id[i], reason) for i, reason in outcome.rejected.items() if i in by_id]
        retry = [by_id[i] for i in outcome.retry if i in by_id]
        self._settle(delivered, rejected, retry, outcome)
        if retry:
            self.pos = min(self.pos, min(r.id for r in retry) - 1)

    def _crashed(self, rows: list[SpoolRow], exc: Exception) -> bool:
        """``write_batch`` raised an unexpected exception: retry, bisect, dead-letter a lone culprit."""
        reason = f"sink raised {type(exc).__name__}: {exc}"
        head, crashes = self._crash_head
        crashes = crashes + 1 if head == rows[0].id else 1
        self._crash_head = (rows[0].id, crashes)
        self.pos = min(self.pos, rows[0].id - 1)
        if len(rows) > 1:
            if crashes >= 2:
                self._limit_override = max(1, len(rows) // 2)
                self._override_until = max(self._override_until, rows[-1].id)
                self._crash_head = (rows[0].id, 0)
            self.log.warning("sink %s: %s on a batch of %d; retrying a smaller batch", self.name, reason, len(rows))
            self.metrics.sink(self.name, "retried", len(rows))
            self.gate.not_before = time.monotonic() + min(self.options.retry.initial, 1.0)
            return True
        if crashes < POISON_ATTEMPTS:
            self.metrics.sink(self.name, "retried", 1)
            self.gate.not_before = time.monotonic() + min(self.options.retry.initial, 1.0)
            return True
        self._exception_dead += 1
        self._crash_head = (0, 0)
        self._limit_override = None
        self.apply(rows, Outcome(rejected={rows[0].id: f"{reason} (isolated after {crashes} attempts)"}))
        if self._exception_dead >= MAX_EXCEPTION_DEAD_LETTERS:
            self._stop_sink(f"{reason} on {self._exception_dead} events in a row: the sink looks broken")
        return True


class Settler:
    """Records fully delivered batches in a background thread, one batch behind the drainer.

    At most ``depth`` batches wait; :meth:`flush` waits until all are recorded. A failure to
    record (the state store) is logged; those entries stay in the spool and are sent again.
    """

    def __init__(self, drainer: Drainer, depth: int = 1) -> None:
        self.drainer = drainer
        self.queue: queue.Queue[tuple[list[SpoolRow], Outcome] | None] = queue.Queue(maxsize=depth)
        self._thread: threading.Thread | None = None

    def submit(self, rows: list[SpoolRow], outcome: Outcome) -> None:
        """Called by the drainer thread only."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=f"dlpfwd-settle-{self.drainer.name}", daemon=True)
            self._thread.start()
        self.queue.put((rows, outcome))

    def flush(self) -> None:
        if self._thread is not None:
            self.queue.join()

    def stop(self) -> None:
        """Record what is queued, then end the thread."""
        if self._thread is not None:
            self.queue.put(None)
            self._thread.join()
            self._thread = None

    def _work(self) -> None:
        while True:
            item = self.queue.get()
            try:
                if item is None:
                    return
                rows, outcome = item
                self.drainer._record(rows, [], [], outcome)
            except Exception:  # noqa: BLE001 - entries stay spooled and are re-sent; say so
                self.drainer.log.exception(
                    "sink %s: recording a delivery failed; those events will be sent again", self.drainer.name
                )
            finally:
                self.queue.task_done()
