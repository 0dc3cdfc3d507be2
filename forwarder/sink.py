"""The sink contract (provisional until 1.0; see ``docs/plugins.md``).

A sink plugin delivers spooled events to one destination. The host owns everything common
to all sinks -- the durable spool, batching by count/bytes/time, filters, retries with
back-off and Retry-After, the circuit breaker, dead letters, metrics -- and calls the sink
through four methods, always from one thread per sink instance:

``connect()``
    Open connections, authenticate. Raise :class:`~forwarder.errors.NotConnected` (or any
    :class:`~forwarder.errors.RetriableError`) when the peer is unreachable: the host retries
    with back-off. Raise :class:`~forwarder.errors.FatalError` for a configuration fault the
    operator must fix: the host stops this sink (the others go on) and says why.

``write_batch(entries) -> Outcome``
    Deliver a batch and say, **per entry**, what happened: delivered, retry later, rejected
    for good (with a reason: the entry goes to this sink's dead letters) or pending (accepted,
    awaiting an asynchronous acknowledgement). An entry not named in the outcome is retried.
    A sink that can isolate one bad event (bisecting on HTTP 400, splitting on 413) does so
    itself and reports the rest as delivered. Exceptions are taken as "retry the whole batch".

``poll_acks() -> Outcome``
    Only for sinks with ``acknowledgements = True`` (Splunk HEC indexer acks): settle entries
    earlier reported pending. Called by the host between writes and before ``close``. Pending
    entries that never settle stay in the spool and are re-sent after a restart.

``close()``
    Flush and release resources. Idempotent.

``health() -> Health``
    Probe the destination (``dlpfwd check``): reachability, credentials, index/table exists.

Four sink families fit this contract: batched HTTP with asynchronous acknowledgements
(pending + ``poll_acks``), streaming sockets (delivered once written; the guarantee is what
the transport offers and each sink documents it), size-capped requests (declare
``max_batch_bytes``; the host never hands over more, the sink splits further on 413) and files
(delivered once flushed and fsynced).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson

from forwarder.schema import DlpEvent, from_dict


class Entry:
    """One spooled event handed to a sink: its spool ``id``, the orjson ``payload`` and how many
    delivery attempts came before. ``event`` and ``data`` decode the payload lazily, once."""

    __slots__ = ("id", "payload", "attempts", "_data", "_event")

    def __init__(self, id: int, payload: bytes, attempts: int = 0) -> None:
        self.id = id
        self.payload = payload
        self.attempts = attempts
        self._data: dict[str, Any] | None = None
        self._event: DlpEvent | None = None

    @property
    def data(self) -> dict[str, Any]:
        """The event as plain JSON types (fast path for formatters)."""
        if self._data is None:
            self._data = orjson.loads(self.payload)
        return self._data

    @property
    def event(self) -> DlpEvent:
        """The event as a typed :class:`~forwarder.schema.DlpEvent`."""
        if self._event is None:
            self._event = from_dict(self.data)
        return self._event

    @property
    def size(self) -> int:
        """Length of the payload in bytes (without copying it out of a spool segment)."""
        return len(self.payload)

    def payload_view(self) -> memoryview:
        """The payload as a read-only view, without copying it: entries read from the spool
        share their segment's buffer, and ``payload`` makes a copy of its part the first time
        it is asked for. For sinks that only join payloads (``b"\\n".join(views)``)."""
        return memoryview(self.payload)

    def __repr__(self) -> str:
        return f"Entry(id={self.id}, {len(self.payload)} bytes, attempts={self.attempts})"


@dataclass
class Outcome:
    """What happened to each entry of a batch. Ids are :attr:`Entry.id` values.

    ``retry_after`` is the delay the peer asked for (Retry-After), if any. ``fatal`` carries a
    configuration fault (token disabled, index unknown...): the host stops the sink with that
    message, keeping its spool.
    """

    delivered: list[int] = field(default_factory=list)
    retry: list[int] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)
    pending: list[int] = field(default_factory=list)
    retry_after: float | None = None
    retry_reason: str = ""
    fatal: str | None = None
    duplicates_possible: int = 0  # entries re-sent because the protocol could not confirm them

    @classmethod
    def all_delivered(cls, entries: Iterable[Entry]) -> Outcome:
        return cls(delivered=[e.id for e in entries])

    @classmethod
    def all_retry(cls, entries: Iterable[Entry], reason: str, retry_after: float | None = None) -> Outcome:
        return cls(retry=[e.id for e in entries], retry_reason=reason, retry_after=retry_after)

    @classmethod
    def all_pending(cls, entries: Iterable[Entry]) -> Outcome:
        return cls(pending=[e.id for e in entries])

    @classmethod
    def stop(cls, entries: Iterable[Entry], message: str) -> Outcome:
        return cls(retry=[e.id for e in entries], fatal=message)

    def merge(self, other: Outcome) -> Outcome:
        """Combine the outcomes of two sub-batches (after a split)."""
        self.delivered.extend(other.delivered)
        self.retry.extend(other.retry)
        self.rejected.update(other.rejected)
        self.pending.extend(other.pending)
        if other.retry_after is not None:
            self.retry_after = max(self.retry_after or 0.0, other.retry_after)
        self.retry_reason = self.retry_reason or other.retry_reason
        self.fatal = self.fatal or other.fatal
        self.duplicates_possible += other.duplicates_possible
        return self


@dataclass
class Check:
    """One probe of a health check."""

    name: str
    ok: bool
    detail: str = ""


@dataclass
class Health:
    """The result of ``health()``: ok when every check is ok."""

    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str = "") -> Health:
        self.checks.append(Check(name, ok, detail))
        return self


class SinkContext:
    """What the host hands a sink: a logger, and services that outlive one sink call.

    ``state`` is a small durable key-value namespace private to this sink instance (e.g. the
    ServiceNow incident id -> sys_id links). ``count(name, n)`` adds to a per-sink counter
    shown in metrics. ``state_dir`` is a directory the sink may use for its own files.
    """

    def __init__(
        self,
        name: str,
        logger: logging.Logger,
        state: Any = None,
        count: Any = None,
        state_dir: str = "",
    ) -> None:
        self.name = name
        self.logger = logger
        self.state = state
        self._count = count
        self.state_dir = state_dir

    def count(self, counter: str, n: int = 1) -> None:
        if self._count is not None:
            self._count(counter, n)


class Sink(ABC):
    """Base class of sink plugins; see the module docstring for the contract.

    Class attributes a plugin sets (the host validates them at registration):

    * ``settings_class`` -- the dataclass of this sink's own settings (see
      :mod:`forwarder.settings`); the host owns batching, retry, filter and spool knobs.
    * ``max_batch_events`` / ``max_batch_bytes`` -- hard caps of one ``write_batch`` call
      (``0`` bytes = no cap). Operators can lower them, never raise them.
    * ``acknowledgements`` -- ``True`` when ``write_batch`` may report entries pending.
    * ``carries_raw`` -- whether the original record is sent by default (``raw`` field).
    """

    settings_class: ClassVar[type]
    max_batch_events: ClassVar[int] = 500
    max_batch_bytes: ClassVar[int] = 0
    acknowledgements: ClassVar[bool] = False
    carries_raw: ClassVar[bool] = False

    def __init__(self, name: str, settings: Any, context: SinkContext) -> None:
        self.name = name
        self.settings = settings
        self.context = context
        self.log = context.logger

    def connect(self) -> None:  # noqa: B027 - optional hook
        """Open connections; see the module docstring."""

    @abstractmethod
    def write_batch(self, entries: Sequence[Entry]) -> Outcome:
        """Deliver ``entries``; report each one's fate."""

    def poll_acks(self) -> Outcome:
        """Settle entries reported pending earlier (sinks with acknowledgements only)."""
        return Outcome()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and release resources; idempotent."""

    def health(self) -> Health:
        """Probe the destination; the default only says the sink was built."""
        return Health().add("configured", True)
