"""The source contract (provisional until 1.0; see ``docs/plugins.md``).

A source plugin reads one Microsoft API for one tenant and yields raw records in batches.
It does not normalize, deduplicate, spool or checkpoint: the host does, in this order, for
every :class:`SourceBatch` the source yields:

1. each :class:`RawRecord` goes to the normalizer registered for its ``kind``
   (``dlpfwd_register_normalizers``); a record that cannot be normalized is quarantined with
   its raw bytes and the reason, and the pipeline goes on;
2. the sensitive-value policy, correlation and enrichment hooks run;
3. in **one transaction**, the events are appended to every sink's spool (subject to each
   sink's filter and deduplication), the batch's ledger units are recorded, and the source's
   cursor becomes ``batch.cursor``.

So a source must only put into ``batch.cursor`` a position that is safe once the batch's
records are durable: a failed download must never be covered by it. The host calls, from
one thread per source instance:

``connect()``
    Authenticate, start subscriptions. Retriable / fatal errors as for sinks.

``poll(cursor) -> Iterator[SourceBatch]``
    Read everything new since ``cursor`` (``None`` on the first run: the source picks its
    documented default start) and yield bounded batches, each with the cursor after it.
    Returning means "caught up for now". Memory must not grow with the size of a window:
    stream. Raise :class:`~forwarder.errors.RetriableError` (with ``retry_after``) on
    throttling; batches already yielded stay committed.

``backfill(since, until, cursor) -> Iterator[SourceBatch]``
    Read a closed historical range; ``cursor`` is the backfill's own position (resumable),
    never the live cursor. Raise :class:`~forwarder.errors.NotSupported` with an explanation
    for a range the source cannot serve.

``close()`` / ``health()``
    As for sinks.
"""

from __future__ import annotations

import datetime as dt
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from forwarder.errors import NotSupported
from forwarder.schema import DlpEvent
from forwarder.sink import Health


@dataclass(slots=True)
class RawRecord:
    """One record as the API sent it.

    ``kind`` selects the normalizer. ``data`` is the parsed JSON object, or ``None`` when the
    record could not be parsed, in which case ``raw`` holds its bytes (quarantined as such).
    ``unit`` names the ledger unit (content blob, page window) the record came from.
    """

    kind: str
    data: dict[str, Any] | None
    raw: bytes | None = None
    unit: str = ""


@dataclass(slots=True)
class WorkUnit:
    """A ledger entry: one unit of work a source reads (a content blob, a Graph page window).

    ``status`` is one of ``listed``, ``fetched``, ``expired``, ``failed``; counts are records.
    ``expires`` (ISO time) is when the unit stops being fetchable at the source, if ever.
    The host adds ``spooled`` and per-sink delivered / dead-lettered counts itself.
    """

    id: str
    kind: str
    status: str
    listed: int = 0
    fetched: int = 0
    parsed: int = 0
    created: str = ""
    expires: str = ""
    detail: str = ""


@dataclass
class SourceBatch:
    """What ``poll``/``backfill`` yield: records, ledger units, and the cursor after them.

    ``cursor`` must be JSON-serializable; ``None`` leaves the stored cursor unchanged.
    """

    records: list[RawRecord] = field(default_factory=list)
    cursor: dict[str, Any] | None = None
    units: list[WorkUnit] = field(default_factory=list)
    progress: dict[str, Any] = field(default_factory=dict)  # e.g. {"done": 3, "total": 24} for backfill bars


class SourceContext:
    """What the host hands a source.

    ``ledger_status(unit_ids)`` returns the stored status of ledger units already seen (so a
    late or re-listed content blob is neither missed nor read twice). ``count(name, n)`` adds
    to a per-source counter. ``state`` is a durable key-value namespace private to the
    source instance.
    """

    def __init__(
        self,
        name: str,
        logger: logging.Logger,
        ledger_status: Callable[[list[str]], dict[str, str]] | None = None,
        count: Callable[[str, int], None] | None = None,
        state: Any = None,
    ) -> None:
        self.name = name
        self.logger = logger
        self._ledger_status = ledger_status
        self._count = count
        self.state = state

    def ledger_status(self, unit_ids: list[str]) -> dict[str, str]:
        return self._ledger_status(unit_ids) if self._ledger_status else {}

    def count(self, counter: str, n: int = 1) -> None:
        if self._count is not None:
            self._count(counter, n)


class Source(ABC):
    """Base class of source plugins; see the module docstring for the contract.

    ``settings_class`` is the dataclass of this source's settings (see :mod:`forwarder.settings`).
    """

    settings_class: ClassVar[type]

    def __init__(self, name: str, settings: Any, context: SourceContext) -> None:
        self.name = name
        self.settings = settings
        self.context = context
        self.log = context.logger
        #: The tenant this instance reads; copied into every event's ``tenant_id``.
        self.tenant_id = ""
        #: SIT id -> name, for normalizers (filled by sources that can resolve them).
        self.sit_names: dict[str, str] = {}

    def connect(self) -> None:  # noqa: B027 - optional hook
        """Authenticate and prepare; see the module docstring."""

    @abstractmethod
    def poll(self, cursor: dict[str, Any] | None) -> Iterator[SourceBatch]:
        """Yield batches of everything new since ``cursor``."""

    def backfill(self, since: dt.datetime, until: dt.datetime, cursor: dict[str, Any] | None) -> Iterator[SourceBatch]:
        """Yield batches of a historical range; by default the source cannot."""
        raise NotSupported(f"source type of {self.name!r} does not support backfill")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; idempotent."""

    def health(self) -> Health:
        return Health().add("configured", True)


@dataclass
class NormalizeContext:
    """Passed to normalizers: which source instance and tenant the record came from, and
    lookups the source knows (e.g. SIT id -> name from ``/resources/dlpSensitiveTypes``)."""

    source: str
    source_type: str
    tenant_id: str = ""
    sit_names: dict[str, str] = field(default_factory=dict)
    ingest_time: str = ""


#: A normalizer turns one raw record into zero or more events; raises MalformedRecord if it cannot.
Normalizer = Callable[[dict[str, Any], NormalizeContext], list[DlpEvent]]
