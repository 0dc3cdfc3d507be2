"""The enricher runner: calls each ``dlpfwd_enrich_events`` implementation separately.

* Built-in enrichers (the correlation enricher) run inline on the events themselves.
* Plugin enrichers run on a worker thread of their own, on shallow copies of the events
  (their ``enrichment`` dict copied), within ``timeout`` seconds. On success the keys they
  added or replaced in ``enrichment`` are merged into the real events; when they raise or
  overrun, nothing of theirs is merged and every event of the batch gets
  ``enrichment["errors"][<enricher>] = <reason>``. An overrunning call is abandoned (a thread
  cannot be killed); until it returns, the enricher is skipped and flagged, so one hung
  lookup never stalls the pipeline and never piles up threads.

Events are never dropped, reordered or delayed past the budget by an enricher.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from cachetools import TTLCache

from forwarder.correlation.index import BatchResult
from forwarder.schema import DlpEvent

log = logging.getLogger("dlpfwd.enrich")

Enricher = Callable[..., None]


@dataclass
class EnrichContext:
    """What an enricher gets besides the events (see ``dlpfwd_enrich_events``)."""

    source: str = ""
    source_type: str = ""
    tenant_id: str = ""
    correlation: BatchResult | None = None
    settings: Any = None  # forwarder.correlation.settings.CorrelationSettings
    cache: TTLCache[Any, Any] = field(default_factory=lambda: TTLCache(maxsize=10_000, ttl=3600))
    deadline: float = 0.0  # time.monotonic() value the call must return by
    log: logging.Logger = log


def flag(events: list[DlpEvent], name: str, reason: str) -> None:
    """Mark every event as not enriched by ``name``, and why."""
    for ev in events:
        errors = ev.enrichment.get("errors")
        if not isinstance(errors, dict):
            errors = {}
            ev.enrichment["errors"] = errors
        errors[name] = reason


@dataclass
class _Slot:
    name: str
    function: Enricher
    inline: bool
    cache: TTLCache[Any, Any]
    pool: ThreadPoolExecutor | None = None
    running: Future[None] | None = None
    failures: int = 0
    timeouts: int = 0


class EnricherRunner:
    """Runs enrichers in order; see the module docstring."""

    def __init__(self, timeout: float, cache_size: int = 10_000, cache_ttl: float = 3600.0) -> None:
        self.timeout = timeout
        self.cache_size = cache_size
        self.cache_ttl = cache_ttl
        self.slots: list[_Slot] = []
        self._lock = threading.Lock()  # one batch at a time: source threads share the slots

    def add(self, name: str, function: Enricher, inline: bool = False) -> None:
        """Add an enricher; ``inline`` ones (built-in, local, fast) run on the caller's thread."""
        cache: TTLCache[Any, Any] = TTLCache(maxsize=self.cache_size, ttl=self.cache_ttl)
        self.slots.append(_Slot(name, function, inline, cache))

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.slots]

    def run(self, events: list[DlpEvent], context: EnrichContext) -> dict[str, str]:
        """Run every enricher on ``events``; returns {enricher: reason} for those that failed."""
        failed: dict[str, str] = {}
        if not events:
            return failed
        with self._lock:
            self._run_all(events, context, failed)
        return failed

    def _run_all(self, events: list[DlpEvent], context: EnrichContext, failed: dict[str, str]) -> None:
        for slot in self.slots:
            reason = self._run_one(slot, events, context)
            if reason:
                failed[slot.name] = reason
                flag(events, slot.name, reason)
                log.warning("enricher %s: %s; %d event(s) spooled unenriched", slot.name, reason, len(events))

    def _run_one(self, slot: _Slot, events: list[DlpEvent], context: EnrichContext) -> str:
        ctx = copy.copy(context)
        ctx.cache = slot.cache
        ctx.deadline = time.monotonic() + self.timeout
        if slot.inline:
            try:
                slot.function(events=events, context=ctx)
            except Exception as exc:  # noqa: BLE001 - an enricher never stops the pipeline
                slot.failures += 1
                return f"failed: {type(exc).__name__}: {exc}"
            return ""
        if slot.running is not None:
            if not slot.running.done():
                return "skipped: its previous call is still running past its time budget"
            slot.running = None
        copies = []
        for ev in events:
            c = copy.copy(ev)
            c.enrichment = dict(ev.enrichment)
            copies.append(c)
        if slot.pool is None:
            slot.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"dlpfwd-enrich-{slot.name}")
        future = slot.pool.submit(slot.function, events=copies, context=ctx)
        try:
            future.result(timeout=self.timeout)
        except FutureTimeout:
            slot.running = future
            slot.timeouts += 1
            return f"timed out after {self.timeout:g} s"
        except Exception as exc:  # noqa: BLE001
            slot.failures += 1
            return f"failed: {type(exc).__name__}: {exc}"
        for ev, c in zip(events, copies, strict=True):
            mine = ev.enrichment
            for key, value in c.enrichment.items():
                if key not in mine or mine[key] is not value:
                    mine[key] = value
        return ""

    def close(self) -> None:
        """Stop the worker threads (an abandoned call is not waited for)."""
        for slot in self.slots:
            if slot.pool is not None:
                slot.pool.shutdown(wait=False, cancel_futures=True)
                slot.pool = None
