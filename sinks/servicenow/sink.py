"""The ``servicenow`` sink: one ticket per Defender incident (or per alert/event), created with
the Table API and updated in place -- never a second ticket for the same group.

Grouping (``group_by``): with ``incident`` (the default) an incident event and every alert of
that incident share one ticket; an alert without an incident, or an audit record, gets its own.
With ``event`` every event id gets its own ticket. The group becomes the ticket's
``correlation_id`` (``<prefix>:<tenant>:incident:<id>``, at most 100 characters).

The link group -> ticket lives in two places: in the sink's durable state
(``SinkContext.state``, key ``link:<correlation_id>``) and in the ticket's ``correlation_id``.
Crash safety: when the state has no link, the sink first *looks the ticket up by
correlation_id* and only POSTs when there is none, so a kill -9 between the POST and the state
write (or a lost 201) never makes a second ticket -- the redelivered event finds and updates it.

Updates: the state keeps a short hash of every field last written. An update PATCHes only the
fields whose rendered value changed (``create_only`` fields never), and nothing at all when
nothing changed, so analysts' edits to other fields survive. Events older than the ticket's
last update (``updated_time``) are skipped. Alerts of an incident whose ticket came from the
incident itself add a work note (once per alert version) instead of overwriting the
incident's fields.

Outcome per entry: delivered; 429/5xx/transport errors -> that entry and the rest retry
(``retry_after`` from the server); 400 -> rejected with ServiceNow's message; 401/403/invalid
table -> the sink stops with a message naming the setting to fix.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import MutableMapping, Sequence
from typing import Any

from forwarder.errors import ConfigError, FatalError, RetriableError
from forwarder.schema import KIND_ALERT, KIND_INCIDENT, DlpEvent, epoch_seconds
from forwarder.sink import Entry, Health, Outcome, Sink, SinkContext
from sinks.servicenow.client import FATAL, NOT_FOUND, REJECT, TableClient, TableError
from sinks.servicenow.mapping import MAX_LENGTHS, EventView, Template, compile_fields, default_fields, incident_id
from sinks.servicenow.settings import ServiceNowSettings

_SAFE = re.compile(r"[^A-Za-z0-9:_.@-]")
MAX_TRACKED_ALERTS = 500
RESERVED = ("correlation_id", "sys_id", "number")


class MemoryState:
    """Stand-in for ``SinkContext.state`` when the host gives none (links then live only as
    long as the process; the correlation_id lookup still prevents duplicates)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


class _MappingState:
    """Adapts a plain mutable mapping (as some test harnesses hand out) to get/put/delete."""

    def __init__(self, mapping: MutableMapping[str, Any]) -> None:
        self.mapping = mapping

    def get(self, key: str, default: Any = None) -> Any:
        return self.mapping.get(key, default)

    def put(self, key: str, value: Any) -> None:
        self.mapping[key] = value

    def delete(self, key: str) -> None:
        self.mapping.pop(key, None)


def _key_value(state: Any) -> Any:
    """The host's durable namespace (get/put/delete), a mapping adapted to it, or memory."""
    if state is None:
        return MemoryState()
    if hasattr(state, "put"):
        return state
    if isinstance(state, MutableMapping):
        return _MappingState(state)
    raise TypeError(f"SinkContext.state must offer get/put/delete, got {type(state).__name__}")


class ServiceNowSink(Sink):
    """See the module docstring."""

    settings_class = ServiceNowSettings
    max_batch_events = 50  # one request or three per event; keep a batch short
    carries_raw = False

    def __init__(self, name: str, settings: ServiceNowSettings, context: SinkContext) -> None:
        super().__init__(name, settings, context)
        self.path = f"sinks.{name}"
        problems = self._check(settings)
        merged = {**default_fields(settings.table), **settings.fields}
        for reserved in RESERVED:
            if reserved in settings.fields:
                problems.append(f"{self.path}.fields.{reserved}: set by the sink itself, cannot be mapped")
        if settings.sync.enabled:
            from sinks.servicenow.ticketsync import mapping_problems

            problems.extend(mapping_problems(settings, self.path))
            if settings.group_by != "incident":
                problems.append(f"{self.path}.sync.enabled: needs group_by = 'incident' (one ticket per incident)")
        templates = compile_fields({k: v for k, v in merged.items() if v != ""}, f"{self.path}.fields", problems)
        if problems:
            raise ConfigError(problems)
        self.templates: dict[str, Template] = {k: v for k, v in templates.items() if k not in RESERVED}
        self.state = _key_value(context.state)
        self.client: TableClient | None = None

    def _check(self, s: ServiceNowSettings) -> list[str]:
        problems: list[str] = []
        if s.auth == "basic":
            if not s.username:
                problems.append(f"{self.path}.username: required with auth = 'basic'")
            if not s.password:
                problems.append(f"{self.path}.password: required with auth = 'basic'")
        else:
            if not s.client_id:
                problems.append(f"{self.path}.client_id: required with auth = 'oauth'")
            if not s.client_secret:
                problems.append(f"{self.path}.client_secret: required with auth = 'oauth'")
        if not re.fullmatch(r"[a-z0-9_]+", s.table):
            problems.append(f"{self.path}.table: expected a table name like incident or sn_si_incident")
        for key, mapping in (("impact", s.impact), ("urgency", s.urgency)):
            for severity, value in mapping.items():
                if value not in ("1", "2", "3"):
                    problems.append(f"{self.path}.{key}.{severity}: expected '1', '2' or '3', got {value!r}")
        return problems

    # ------------------------------------------------------------------ lifecycle

    def connect(self) -> None:
        if self.client is None:
            self.client = TableClient(self.settings, self.path)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def health(self) -> Health:
        health = Health()
        try:
            self.connect()
            assert self.client is not None
            self.client.request("GET", self.settings.table, {"sysparm_limit": "1", "sysparm_fields": "sys_id"})
        except TableError as exc:
            return health.add("table", False, str(exc))
        except (FatalError, RetriableError) as exc:
            return health.add("table", False, str(exc))
        return health.add("table", True, f"{self.settings.table} readable at {self.settings.instance_url}")

    def sync_peer(self) -> Any:
        """The ticket side of the two-way status sync (``[sinks.sync]``), with its own HTTP client
        (the sync runs in its own thread); None when the sync is off."""
        if not self.settings.sync.enabled:
            return None
        from sinks.servicenow.ticketsync import ServiceNowPeer

        return ServiceNowPeer(self.name, self.settings, self.state, self.log)

    # ------------------------------------------------------------------ delivery

    def write_batch(self, entries: Sequence[Entry]) -> Outcome:
        self.connect()
        outcome = Outcome()
        for index, entry in enumerate(entries):
            try:
                self._deliver(entry.event)
            except TableError as exc:
                if exc.kind == REJECT:
                    outcome.rejected[entry.id] = str(exc)
                    self.context.count("rejected")
                    continue
                rest = entries[index:]
                if exc.kind == FATAL:
                    return outcome.merge(Outcome.stop(rest, str(exc)))
                return outcome.merge(Outcome.all_retry(rest, str(exc), exc.retry_after))
            except FatalError as exc:
                return outcome.merge(Outcome.stop(entries[index:], str(exc)))
            except RetriableError as exc:
                return outcome.merge(Outcome.all_retry(entries[index:], str(exc), exc.retry_after))
            outcome.delivered.append(entry.id)
        return outcome

    def correlation_id(self, event: DlpEvent) -> tuple[str, str]:
        """(correlation_id, owner kind) of the ticket this event belongs to."""
        tenant = event.tenant_id
        incident = incident_id(event) if self.settings.group_by == "incident" else ""
        if incident:
            group, owner = f"incident:{incident}", KIND_INCIDENT
        else:
            kind = event.kind or "event"
            group, owner = (event.id if ":" in event.id else f"{kind}:{event.id}"), kind
        text = ":".join(p for p in (self.settings.correlation_prefix, tenant, group) if p)
        text = _SAFE.sub("_", text)
        if len(text) > MAX_LENGTHS["correlation_id"]:
            digest = hashlib.sha256(text.encode()).hexdigest()[:40]
            text = f"{self.settings.correlation_prefix}:sha256:{digest}"[: MAX_LENGTHS["correlation_id"]]
        return text, owner

    def render(self, event: DlpEvent, data: dict[str, Any]) -> dict[str, str]:
        """The ticket fields for ``event`` (correlation_id excluded), truncated to column sizes."""
        s = self.settings
        view = EventView(event, data, s.impact.get(event.severity, "3"), s.urgency.get(event.severity, "3"))
        fields = {}
        for name, template in self.templates.items():
            value = template.render(view)
            limit = MAX_LENGTHS.get(name)
            if limit and len(value) > limit:
                value = value[: limit - 1] + "…"
            fields[name] = value
        return fields

    def _deliver(self, event: DlpEvent) -> None:
        assert self.client is not None
        if not event.id and not incident_id(event):
            raise TableError(REJECT, "the event has no id: it cannot be linked to a ticket")
        corr, owner = self.correlation_id(event)
        key = f"link:{corr}"
        link = self.state.get(key)
        fields = self.render(event, _plain(event))
        if link is None:
            link = self._find(corr)
            if link is None:
                self._create(key, corr, owner, event, fields)
                self._observe(corr, owner, event)
                return
            self.context.count("tickets_adopted")
        self._update(key, corr, link, owner, event, fields)
        self._observe(corr, owner, event)

    def _observe(self, corr: str, owner: str, event: DlpEvent) -> None:
        """With the status sync on: remember the incident's Defender status, classification and
        assignee as this event shows them (the newest version only) for the sync to pick up,
        and which ticket belongs to the incident."""
        if not self.settings.sync.enabled or owner != KIND_INCIDENT or event.kind != KIND_INCIDENT:
            return
        incident = incident_id(event)
        if self.state.get(SYNC_INCIDENT + incident) != corr:
            self.state.put(SYNC_INCIDENT + incident, corr)
        key = SYNC_OBSERVED + incident
        seen = self.state.get(key)
        if isinstance(seen, dict) and _newer(seen.get("version", ""), event.updated_time):
            return
        observed = {"version": event.updated_time, "values": defender_view(event)}
        if seen != observed:
            self.state.put(key, observed)

    def _find(self, corr: str) -> dict[str, Any] | None:
        """The ticket already carrying ``corr`` (oldest first), as a link without field hashes."""
        assert self.client is not None
        rows = self.client.request(
            "GET",
            self.settings.table,
            {
                "sysparm_query": f"correlation_id={corr}^ORDERBYsys_created_on",
                "sysparm_fields": "sys_id,number,correlation_id",
                "sysparm_limit": "5",
            },
        )
        # An unknown column in sysparm_query is silently ignored by ServiceNow: check it really matches.
        for row in rows if isinstance(rows, list) else []:
            if isinstance(row, dict) and row.get("correlation_id") == corr and row.get("sys_id"):
                return {"sys_id": row["sys_id"], "number": row.get("number", ""), "source": "", "fields": {}}
        return None

    def _inactive(self, sys_id: str) -> bool:
        """True when the ticket reads back as closed (``active`` false)."""
        assert self.client is not None
        try:
            row = self.client.request("GET", f"{self.settings.table}/{sys_id}", {"sysparm_fields": "active,state"})
        except TableError:
            return False
        return isinstance(row, dict) and str(row.get("active", "")).lower() == "false"

    def _create(self, key: str, corr: str, owner: str, event: DlpEvent, fields: dict[str, str]) -> None:
        assert self.client is not None
        body = {**fields, "correlation_id": corr}
        wanted = "sys_id,number,state,close_code,assigned_to" if self.settings.sync.enabled else "sys_id,number"
        result = self.client.request("POST", self.settings.table, {"sysparm_fields": wanted}, body)
        if not isinstance(result, dict) or not result.get("sys_id"):
            raise TableError("retry", f"ServiceNow POST {self.settings.table}: no sys_id in the answer")
        link = {
            "sys_id": result["sys_id"],
            "number": result.get("number", ""),
            "source": event.id,
            "updated": event.updated_time,
            "fields": {k: _digest(v) for k, v in fields.items()},
            "alerts": _alert_marks(event, {}),
        }
        if self.settings.sync.enabled and owner == KIND_INCIDENT:
            # what both sides held when the ticket was made: the sync's first shadow
            assigned = _text_value(result.get("assigned_to"))
            link["baseline"] = {
                "defender": defender_view(event),
                "ticket": {
                    "status": _text_value(result.get("state")),
                    "classification": _text_value(result.get("close_code")),
                    "assignedTo": f"#{assigned}" if assigned else "",
                },
            }
        self.state.put(key, link)
        self.context.count("tickets_created")
        self.log.info("created %s %s for %s", self.settings.table, link["number"] or link["sys_id"], corr)

    def _update(
        self, key: str, corr: str, link: dict[str, Any], owner: str, event: DlpEvent, fields: dict[str, str]
    ) -> None:
        """PATCH what changed. Fields are written by the owning event kind (the incident for an
        incident ticket) or by the event that created the ticket; other events of the group
        (more alerts, or an alert adopting a ticket found by correlation_id) only add a work note."""
        assert self.client is not None
        source = link.get("source", "")
        writes_fields = event.kind == owner or source == event.id
        if writes_fields and source == event.id and _newer(link.get("updated", ""), event.updated_time):
            self.context.count("stale_skipped")  # an older version of what the ticket already shows
            return
        previous: dict[str, str] = link.get("fields", {})
        body: dict[str, str] = {}
        notes: list[str] = []
        if writes_fields:
            create_only = set(self.settings.create_only)
            body = {k: v for k, v in fields.items() if k not in create_only and previous.get(k) != _digest(v)}
            if body and previous:
                when = f" at {event.updated_time}" if event.updated_time else ""
                notes.append(
                    f"dlpfwd: Defender {event.kind} {event.id} updated{when}; changed: {', '.join(sorted(body))}"
                )
        if event.kind == KIND_ALERT and owner == KIND_INCIDENT:
            alerts: dict[str, str] = link.get("alerts", {})
            alert = event.id.partition(":")[2] or event.id
            if alerts.get(alert) != _alert_mark(event):
                verb = "updated" if alert in alerts else "linked"
                text = f"dlpfwd: alert {alert} {verb}: {event.title} (severity {event.severity}"
                text += f", status {event.status or 'unknown'})"
                notes.append(text + (f" {event.links.alert}" if event.links.alert else ""))
        written = dict(body)
        if notes and self.settings.work_notes:
            body["work_notes"] = "\n".join(notes)
        if body:
            try:
                self.client.request(
                    "PATCH", f"{self.settings.table}/{link['sys_id']}", {"sysparm_fields": "sys_id"}, body
                )
            except TableError as exc:
                if exc.kind == FATAL and "HTTP 403" in str(exc) and self._inactive(link["sys_id"]):
                    # A closed ticket the instance keeps read-only: its life cycle is over.
                    self.log.info("ticket %s for %s is closed and read-only; update skipped", link.get("number"), corr)
                    self.context.count("closed_skipped")
                    return
                if exc.kind != NOT_FOUND:
                    raise
                self.log.warning("ticket %s for %s is gone; creating a new one", link.get("number") or "?", corr)
                self.state.delete(key)
                self._create(key, corr, owner, event, fields)
                return
            self.context.count("tickets_updated")
        new_link = {
            **link,
            "fields": {**previous, **{k: _digest(v) for k, v in written.items()}},
            "alerts": _alert_marks(event, link.get("alerts", {})),
        }
        if writes_fields:
            new_link["source"] = event.id
            new_link["updated"] = (
                link["updated"]
                if source == event.id and _newer(link.get("updated", ""), event.updated_time)
                else event.updated_time
            )
        if new_link != link:
            self.state.put(key, new_link)


SYNC_INCIDENT = "incident:"  # incident id -> correlation_id of its ticket (read by the sync)
SYNC_OBSERVED = "observed:"  # incident id -> {"version", "values"} last seen by the source


def defender_view(event: DlpEvent) -> dict[str, str]:
    """The sync's Defender values of an incident event (status, classification/determination, assignee)."""
    return {
        "status": event.status or "unknown",
        "classification": f"{event.classification or 'unknown'}/{event.determination or 'unknown'}",
        "assignedTo": str(event.enrichment.get("assigned_to", "") or ""),
    }


def _text_value(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("value", "")
    return "" if value is None else str(value)


def _alert_mark(event: DlpEvent) -> str:
    return _digest(f"{event.updated_time}|{event.severity}|{event.status}|{event.title}")


def _alert_marks(event: DlpEvent, alerts: dict[str, str]) -> dict[str, str]:
    """Remember the version of every alert noted on a ticket (the newest MAX_TRACKED_ALERTS)."""
    if event.kind != KIND_ALERT:
        return alerts
    alert = event.id.partition(":")[2] or event.id
    marks = dict(alerts)
    marks.pop(alert, None)
    marks[alert] = _alert_mark(event)
    while len(marks) > MAX_TRACKED_ALERTS:
        marks.pop(next(iter(marks)))
    return marks


def _newer(first: str, second: str) -> bool:
    """True when time ``first`` is strictly later than ``second`` (ISO strings; unreadable = no)."""
    a, b = epoch_seconds(first), epoch_seconds(second)
    return a is not None and b is not None and a > b


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:16]


def _plain(event: DlpEvent) -> dict[str, Any]:
    from forwarder.schema import to_dict

    data = to_dict(event)
    data.pop("raw", None)
    return data
