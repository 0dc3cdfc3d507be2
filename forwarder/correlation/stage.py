"""The correlation stage of the pipeline: index, enrich, filter, announce late links.

Called by :class:`forwarder.pipeline.Pipeline` for every batch, after the sensitive-value
policy and BEFORE the spool transaction, only when ``[correlation] enabled = true`` (without
it the pipeline never imports this package). Order within a batch:

1. index the events (idempotent upserts; see :mod:`forwarder.correlation.index` for why
   indexing comes before the spool commit);
2. run the enrichers (the built-in correlation enricher first, then plugins);
3. drop non-DLP alerts unless ``forward_alerts`` (they were read for correlation only);
4. add one ``correlation`` event per late link not announced yet (the DLP event was spooled
   before its alert arrived, so it could not carry the link). Its idempotency key is
   ``correlation:<dlp id>|<alert id>``: the spool's deduplication drops a second copy;
5. after the spool commit, :meth:`CorrelationStage.committed` marks those links announced,
   so each is emitted once, ever (a crash before that re-emits it, and deduplication drops it).

If the index itself fails (disk full, corrupt file), the batch is still spooled: its events
are flagged ``enrichment["errors"]["correlation"]`` and nothing is lost but those links.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from forwarder.correlation.enrich import EnrichContext, EnricherRunner, flag
from forwarder.correlation.enricher import KEY
from forwarder.correlation.enricher import dlpfwd_enrich_events as builtin_enricher
from forwarder.correlation.index import BatchResult, CorrelationIndex, Link
from forwarder.correlation.keys import SIDE_ALERT, side_of
from forwarder.correlation.settings import CorrelationSettings
from forwarder.schema import KIND_ALERT, KIND_CORRELATION, DlpEvent, Identity, Links, Related

log = logging.getLogger("dlpfwd.correlation")

BUILTIN = "correlation"


def plugin_enrichers(host: Any) -> list[tuple[str, Any]]:
    """(plugin name, function) of every ``dlpfwd_enrich_events`` implementation of ``host``."""
    pm = getattr(host, "pm", None)
    if pm is None:
        return []
    hook = getattr(pm.hook, "dlpfwd_enrich_events", None)
    if hook is None:
        return []
    return [(impl.plugin_name, impl.function) for impl in hook.get_hookimpls() if impl.function is not builtin_enricher]


_gc_lock = threading.Lock()
_gc_holders = 0  # stages (threads) inside gc_paused()
_gc_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while one batch is indexed and enriched.

    The stage allocates tens of short-lived, cycle-free containers per event (key rows,
    probes, summaries); with the batch's records alive, the collector's passes over them cost
    more than the work itself (measured: ~35 of ~120 us per event). Reference counting still
    frees everything at once; the allocations count towards the next collection, which runs as
    soon as the last paused stage leaves (nested and concurrent uses are counted). The pause
    lasts one batch: memory stays bounded."""
    global _gc_holders, _gc_was_enabled
    with _gc_lock:
        if _gc_holders == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_holders += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_holders -= 1
            if _gc_holders == 0 and _gc_was_enabled:
                gc.enable()


class Staged(NamedTuple):
    """What the stage made of a batch."""

    events: list[tuple[DlpEvent, str]]  # to spool: the batch (minus withheld alerts) + correlation events
    announced: list[tuple[str, str]]  # link pairs to mark announced once the spool transaction committed
    withheld: int  # non-DLP alerts read and indexed for correlation only (forward_alerts off), not spooled


class CorrelationStage:
    """See the module docstring."""

    def __init__(self, state_dir: str, settings: CorrelationSettings, host: Any = None) -> None:
        self.settings = settings
        self.index = CorrelationIndex(state_dir, settings)
        self.runner = EnricherRunner(settings.enricher_timeout)
        self.runner.add(BUILTIN, builtin_enricher, inline=True)
        for name, function in plugin_enrichers(host):
            self.runner.add(name, function)

    def process(self, events: list[tuple[DlpEvent, str]], source: str, source_type: str, tenant_id: str) -> Staged:
        """The batch's events to spool (with correlation events added), the link pairs to mark
        announced once the spool transaction has committed, and how many non-DLP alerts were
        withheld (indexed for correlation, not forwarded: the pipeline counts them)."""
        with gc_paused():
            return self._process(events, source, source_type, tenant_id)

    def _process(self, events: list[tuple[DlpEvent, str]], source: str, source_type: str, tenant_id: str) -> Staged:
        plain = [ev for ev, _ in events]
        result: BatchResult | None
        try:
            result = self.index.index_batch(plain)
        except Exception as exc:  # noqa: BLE001 - the index never blocks the batch
            log.error("correlation index failed (%s: %s); batch spooled without correlation", type(exc).__name__, exc)
            flag(plain, BUILTIN, f"index failed: {type(exc).__name__}")
            result = None
        ctx = EnrichContext(source, source_type, tenant_id, result, self.settings, log=log)
        self.runner.run(plain, ctx)
        out = (
            events
            if self.settings.forward_alerts
            else [(e, u) for e, u in events if e.kind != KIND_ALERT or side_of(e) != SIDE_ALERT]
        )
        withheld = len(events) - len(out)
        pairs: list[tuple[str, str]] = []
        if result is not None and result.to_announce and self.settings.emit_links:
            units = {ev.id: unit for ev, unit in events}
            fallback = events[0][1] if events else ""
            for link in result.to_announce:
                event = correlation_event(link, result, source, source_type, tenant_id)
                if event is None:
                    continue
                out.append((event, units.get(link.alert) or units.get(link.dlp) or fallback))
                pairs.append(link.pair)
        return Staged(out, pairs, withheld)

    def committed(self, pairs: list[tuple[str, str]]) -> None:
        """The spool transaction holding these links' correlation events has committed."""
        if pairs:
            try:
                self.index.mark_announced(pairs)
            except Exception as exc:  # noqa: BLE001 - re-announcing later is deduplicated
                log.warning("correlation: could not record announced links: %s: %s", type(exc).__name__, exc)

    def stats(self) -> dict[str, Any]:
        return self.index.stats()

    def close(self) -> None:
        self.runner.close()
        self.index.close()


def correlation_event(
    link: Link, result: BatchResult, source: str, source_type: str, tenant_id: str
) -> DlpEvent | None:
    """The ``correlation`` event announcing ``link``; ``None`` if a side's summary is gone."""
    dlp, alert = result.infos.get(link.dlp), result.infos.get(link.alert)
    if dlp is None or alert is None:
        return None
    key = f"correlation:{link.dlp}|{link.alert}"
    when = max(dlp["time"], alert["time"])
    incidents = sorted(set(dlp["incidents"]) | set(alert["incidents"]), key=lambda s: (len(s), s))
    alert_ids = [alert["id"]] + ([dlp["id"]] if dlp["kind"] == "alert" else [])
    return DlpEvent(
        id=key,
        idempotency_key=key,
        kind=KIND_CORRELATION,
        operation="CorrelationFound",
        event_time=when,
        updated_time=when,
        tenant_id=tenant_id,
        source=source,
        source_type=source_type,
        severity=alert["severity"] or "unknown",
        title=f"DLP event {dlp['id']} linked to alert '{alert['title']}'",
        description=f"{dlp['title'] or dlp['operation']} ({dlp['time']}) and {alert['title']} ({alert['time']}): "
        + ", ".join(link.reasons),
        user=Identity(upn=(dlp["users"] or alert["users"] or [""])[0]),
        links=Links(alert=alert["alert_url"], incident=alert["incident_url"] or dlp["incident_url"]),
        related=Related(alert_ids=alert_ids, incident_ids=incidents),
        enrichment={
            KEY: {
                "status": "ok",
                "link": {
                    "dlp_event": {k: dlp[k] for k in ("id", "kind", "title", "time", "policies", "operation")},
                    "alert": {k: alert[k] for k in ("id", "title", "severity", "service_source", "time")},
                    "reasons": list(link.reasons),
                },
                "incidents": incidents,
                "entities": {
                    "users": sorted(set(dlp["users"]) | set(alert["users"])),
                    "devices": sorted(set(dlp["devices"]) | set(alert["devices"])),
                    "files": sorted(set(dlp["files"]) | set(alert["files"])),
                },
            }
        },
    )


def open_stage(config: Any, host: Any = None) -> CorrelationStage | None:
    """The stage for ``config`` (a :class:`forwarder.config.Config`), ``None`` when correlation is off."""
    settings = getattr(config, "correlation", None)
    if settings is None or not settings.enabled:
        return None
    return CorrelationStage(config.forwarder.state_dir, settings, host)
