"""The sync pass and loop: collect changes from both sides into the inbox, then apply them.

One pass (:meth:`SyncEngine.run_once`):

1. **ServiceNow -> inbox**: the tickets changed since the cursor (the peer reads them with a
   look-back); each ticket once at its latest ``sys_mod_count``. Our own writes coming back
   (version at or below the shadow's) and changes of nothing synced are counted and dropped;
   the rest are enqueued (``origin = servicenow``, reference = sys_id, version =
   sys_mod_count) in ONE transaction with the new cursor.
2. **Defender -> inbox**: the servicenow sink records, for every incident event the
   graph_security source delivers, the incident's status, classification and assignee
   (``observed:<id>`` in its state); they are moved into the inbox (``origin = defender``,
   version = lastUpdateDateTime) in one transaction with their removal.
3. **apply** (:class:`forwarder.sync.applier.Applier`).

Counts go to the state store (``dlpfwd state``: the ``sync`` line) and, inside ``dlpfwd run``,
to ``dlpfwd_plugin_counter_total{instance="sync:<sink>", name=...}``.

Inside ``dlpfwd run`` the pass repeats every ``[sinks.sync] interval`` seconds in its own
thread (:func:`start_in`); a FatalError (401/403: a missing permission) stops the sync with an
error line and a ``stopped`` record (``dlpfwd health``), the forwarder goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson

from forwarder.correlation.incidents import CLASSIFICATIONS, DETERMINATIONS, STATUSES
from forwarder.errors import ConfigError, FatalError, ForwarderError, RetriableError
from forwarder.sync import inbox
from forwarder.sync.applier import Applier, PassResult, is_echo, unchanged
from forwarder.sync.change import StatusChange
from forwarder.sync.defender import DefenderIncidents
from forwarder.sync.peer import TicketPeer, canonical_values

log = logging.getLogger("dlpfwd.sync")
OBSERVED = "observed:"
PURGE_INTERVAL = 3600.0


def sync_sinks(config: Any) -> list[Any]:
    """The sink configurations with ``[sinks.sync] enabled = true``."""
    return [sc for sc in config.sinks if getattr(getattr(sc.settings, "sync", None), "enabled", False)]


def graph_source(config: Any, sink: Any) -> Any:
    """The graph_security source whose app writes to Defender for ``sink`` (ConfigError naming the key)."""
    wanted = sink.settings.sync.source
    graphs = [s for s in config.sources if s.type == "graph_security"]
    key = f"sinks.{sink.name}.sync.source"
    if wanted:
        found = [s for s in graphs if s.name == wanted]
        if not found:
            raise ConfigError([f"{key}: no graph_security source named {wanted!r}"])
        return found[0]
    if len(graphs) != 1:
        detail = "none is configured" if not graphs else f"name one of {', '.join(s.name for s in graphs)}"
        raise ConfigError([f"{key}: the sync writes to Defender with a graph_security source's app; {detail}"])
    return graphs[0]


def _skip_reason(change: StatusChange, shadow: dict[str, Any], current: dict[str, str] | None) -> str | None:
    """The skip counter for a change that is our own write coming back (``skipped_echo``) or
    changes nothing synced (``skipped_unchanged``); None for a change to enqueue."""
    if is_echo(change, shadow):
        return "skipped_echo"
    if unchanged(change, shadow, current):
        return "skipped_unchanged"
    return None


class SyncEngine:
    """One sync-enabled servicenow sink and the Defender tenant of its graph_security source."""

    def __init__(
        self,
        config: Any,
        store: Any,
        sink: Any,
        peer: TicketPeer,
        defender: DefenderIncidents | None,
        count: Callable[[str, int], None] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.sink = sink  # its SinkConfig
        self.name = sink.name
        self.peer = peer
        self.defender = defender
        self.count = count
        self.interval = float(sink.settings.sync.interval)
        self.applier = Applier(store, defender, peer, set(sink.settings.sync.ticket_wins))
        self.cursor_key = f"sync:{self.name}"
        self._ingest = PassResult()

    @classmethod
    def build(
        cls,
        config: Any,
        store: Any,
        sinks: dict[str, Any],
        count: Callable[[str, int], None] | None = None,
        transport: Any = None,
    ) -> SyncEngine | None:
        """The engine for the configuration (None when no sink has the sync on); ``sinks`` are
        the built sink instances by name."""
        enabled = sync_sinks(config)
        if not enabled:
            return None
        if len(enabled) > 1:
            names = ", ".join(f"sinks.{s.name}.sync.enabled" for s in enabled)
            raise ConfigError([f"{names}: the status sync supports one servicenow sink per deployment"])
        sink = enabled[0]
        source = graph_source(config, sink)
        peer = sinks[sink.name].sync_peer()
        defender = DefenderIncidents(source.settings, logging.getLogger("dlpfwd.sync.graph"), transport=transport)
        return cls(config, store, sink, peer, defender, count)

    def close(self) -> None:
        self.peer.close()
        if self.defender is not None:
            self.defender.close()

    # ------------------------------------------------------------------ one pass

    def run_once(self, dry_run: bool = False) -> PassResult:
        """Collect and apply once; see the module docstring. RetriableError/FatalError propagate."""
        result = PassResult()
        self._ingest = PassResult()
        pending = self.collect(dry_run)
        result.add(self._ingest)
        result.seen += len(pending)
        if dry_run:
            for change in pending:
                result.add(self.applier.apply(inbox.InboxItem(0, change, 0), dry_run=True))
        result.add(self.applier.run(dry_run=dry_run))
        for name, n in result.counts().items():
            if self.count is not None:
                self.count(name, n)
        return result

    def collect(self, dry_run: bool = False) -> list[StatusChange]:
        """Move both sides' changes into the inbox (dry run: return them instead)."""
        out = self._tickets(dry_run)
        out += self._observations(dry_run)
        return out

    def _note_skipped(self, skipped: dict[str, int]) -> None:
        self._ingest.seen += skipped["seen"]
        self._ingest.skipped_echo += skipped["skipped_echo"]
        self._ingest.skipped_unchanged += skipped["skipped_unchanged"]

    def _tickets(self, dry_run: bool) -> list[StatusChange]:
        cursor = self.store.get_cursor(self.cursor_key)
        views, next_cursor = self.peer.changes(cursor)
        changes: list[StatusChange] = []
        skipped = {"skipped_echo": 0, "skipped_unchanged": 0, "seen": 0}
        for view in views:
            shadow = inbox.shadow(self.store, view.incident_id)
            known = set(shadow.get("notes", []))
            values = self.peer.to_defender(view.raw)
            change = StatusChange(
                view.incident_id,
                "servicenow",
                view.key,
                view.version,
                status=values.get("status"),
                classification=(values.get("classification") or "").partition("/")[0] or None,
                determination=(values.get("classification") or "").partition("/")[2] or None,
                assigned_to=values.get("assignedTo"),
                notes=[n for n in view.notes if n.get("id") not in known],
                author=view.updated_by,
            )
            problems = change.problems()
            if problems and (change.values() or change.notes):
                log.warning("sync: ticket %s ignored: %s", view.label, "; ".join(problems))
                continue
            reason = _skip_reason(change, shadow, view.raw)
            if reason is None and not change.values() and not change.notes:
                reason = "skipped_unchanged"  # nothing the sync maps (e.g. an unmapped state)
            if reason:
                skipped[reason] += 1
                skipped["seen"] += 1
            else:
                changes.append(change)
        self._note_skipped(skipped)
        if dry_run:
            return changes
        with inbox.transaction(self.store) as tx:
            for change in changes:
                inbox.enqueue_in(tx, change)
            tx.add_totals(inbox.TOTALS_SCOPE, skipped)
            tx.set_cursor(self.cursor_key, next_cursor)
        return changes

    def _observations(self, dry_run: bool) -> list[StatusChange]:
        namespace = f"sink:{self.name}"
        with inbox.transaction(self.store) as tx:
            rows = inbox.kv_with_prefix(tx, namespace, OBSERVED)
        changes: list[StatusChange] = []
        settled: list[tuple[str, bytes]] = []
        skipped = {"skipped_echo": 0, "skipped_unchanged": 0, "seen": 0}
        for key, raw in rows:
            settled.append((key, raw))
            try:
                seen = orjson.loads(raw)
                values = seen["values"]
                version = str(seen["version"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
            incident = key[len(OBSERVED) :]
            # observations recorded before events carried the Graph v1.0 determination spelling
            # hold the update page's (clean...): compare and store them as the live incident shows them
            values = canonical_values(values)
            cls, _, det = str(values.get("classification", "")).partition("/")
            change = StatusChange(
                incident,
                "defender",
                incident,
                version or "unknown",
                status=values.get("status") if values.get("status") in STATUSES else None,
                classification=cls if cls in CLASSIFICATIONS else None,
                determination=det if det in DETERMINATIONS else None,
                assigned_to=str(values.get("assignedTo", "")),
            )
            shadow = inbox.shadow(self.store, incident)
            problems = change.problems()
            if problems:
                log.warning("sync: Defender incident %s ignored: %s", incident, "; ".join(problems))
                continue
            reason = _skip_reason(change, shadow, values)
            if reason:
                skipped[reason] += 1
                skipped["seen"] += 1
            else:
                changes.append(change)
        self._note_skipped(skipped)
        if dry_run:
            return changes
        with inbox.transaction(self.store) as tx:
            for change in changes:
                inbox.enqueue_in(tx, change)
            inbox.kv_delete_unchanged(tx, namespace, settled)  # a newer observation stays
            tx.add_totals(inbox.TOTALS_SCOPE, skipped)
        return changes

    # ------------------------------------------------------------------ the loop

    def run(self, stop: threading.Event) -> None:
        """Pass after pass every ``interval`` seconds until ``stop``; see the module docstring."""
        log.info("sync: ServiceNow sink %s <-> Defender XDR every %.0f s", self.name, self.interval)
        failures = 0
        stopped = self.cursor_key in self.store.stopped()
        purged = 0.0
        while not stop.is_set():
            delay = self.interval
            try:
                if time.monotonic() - purged > PURGE_INTERVAL or not purged:
                    n = inbox.purge(self.store)
                    purged = time.monotonic()
                    if n:
                        log.info("sync: forgot %d settled change(s) older than %d days", n, inbox.RETENTION // 86400)
                result = self.run_once()
                failures = 0
                if result.counts():
                    log.info("sync: %s", ", ".join(f"{k} {v}" for k, v in result.counts().items()))
                if stopped:
                    self.store.clear_stopped(self.cursor_key)
                    stopped = False
            except FatalError as exc:
                log.error("sync stopped: %s", exc)
                self.store.set_stopped(self.cursor_key, "sync", str(exc))
                return
            except RetriableError as exc:
                failures += 1
                delay = max(exc.retry_after or 0.0, min(300.0, self.interval * failures))
                log.warning("sync: %s; next pass in %.0f s", exc, delay)
            except ForwarderError as exc:
                failures += 1
                log.warning("sync: %s; next pass in %.0f s", exc, delay)
            except Exception:  # noqa: BLE001 - the sync must not take the forwarder down
                failures += 1
                log.exception("sync pass failed; next pass in %.0f s", delay)
            stop.wait(delay)


def start_in(forwarder: Any, stop: threading.Event) -> threading.Thread | None:
    """Start the sync loop of ``dlpfwd run`` (a :class:`forwarder.runtime.Forwarder`) in a daemon
    thread; None when no sink has the sync on. Configuration problems are logged, not raised."""
    try:
        engine = SyncEngine.build(
            forwarder.config,
            forwarder.store,
            forwarder.sinks,
            forwarder.metrics.plugin_counter_for(f"sync:{sync_sinks(forwarder.config)[0].name}")
            if sync_sinks(forwarder.config)
            else None,
        )
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("sync not started: %s", problem)
        for sc in sync_sinks(forwarder.config)[:1]:  # for `dlpfwd health` and `state`
            forwarder.store.set_stopped(f"sync:{sc.name}", "sync", "; ".join(exc.problems))
        return None
    if engine is None:
        return None

    def run() -> None:
        try:
            engine.run(stop)
        finally:
            engine.close()

    thread = threading.Thread(target=run, name="dlpfwd-sync", daemon=True)
    thread.start()
    return thread
