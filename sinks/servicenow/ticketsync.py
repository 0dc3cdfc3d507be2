"""The ServiceNow side of the two-way status sync (:class:`forwarder.sync.peer.TicketPeer`).

Reads back the tickets this deployment owns (``correlation_id`` starting with
``<correlation_prefix>:``) changed since a cursor::

    GET /api/now/table/<table>?sysparm_query=correlation_idSTARTSWITH<prefix>:^sys_updated_on>=<cursor - lookback>
        ^ORDERBYsys_updated_on&sysparm_fields=sys_id,number,correlation_id,state,close_code,assigned_to,
        assigned_to.<user_field>,sys_mod_count,sys_updated_on,sys_updated_by&sysparm_limit=100&sysparm_offset=...

(paged by ``X-Total-Count``; a ticket is reported once, at its latest ``sys_mod_count``), plus
the analysts' work notes since then from ``sys_journal_field`` (``element_idIN...^element=
work_notes``; notes starting with ``dlpfwd:`` are dlpfwd's own and skipped).

Mapping (``[sinks.sync]``, defaults in :mod:`sinks.servicenow.settings`): ``state`` <->
status, ``close_code`` <-> "classification/determination" (only while resolved), the
``assigned_to`` user's ``user_field`` (e-mail by default) <-> ``assignedTo``. Writing an
assignee looks the user up in ``sys_user`` by that column; an unknown one is not written (a
work note says so). Resolving a ticket also sets ``close_code`` (required by the resolve form
and commonly by data policies) and ``close_notes``.

Errors become the sync's: retriable (429/5xx) -> RetriableError; 400/404 -> SyncRejected;
401/403 -> FatalError.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from forwarder.errors import FatalError, RetriableError
from forwarder.sync.peer import GROUPS, SyncRejected, TicketView
from sinks.servicenow.client import FATAL, RETRY, TableClient, TableError
from sinks.servicenow.settings import (
    DEFAULT_CLASSIFICATIONS,
    DEFAULT_CLOSE_CODES,
    DEFAULT_STATES,
    DEFAULT_STATUSES,
    ServiceNowSettings,
)

PREFIX = "dlpfwd:"
PAGE = 100
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
INCIDENT_KEY = "incident:"  # sink state: incident id -> correlation_id of its ticket


def mappings(settings: ServiceNowSettings) -> tuple[dict[str, str], dict[str, str], dict[str, str], dict[str, str]]:
    """(states, statuses, close_codes, classifications) of the table, defaults merged with overrides."""
    table = settings.table if settings.table in DEFAULT_STATES else "incident"
    sync = settings.sync
    return (
        {**DEFAULT_STATES[table], **sync.states},
        {**DEFAULT_STATUSES[table], **sync.statuses},
        {**DEFAULT_CLOSE_CODES, **sync.close_codes},
        {**DEFAULT_CLASSIFICATIONS[table], **sync.classifications},
    )


def mapping_problems(settings: ServiceNowSettings, path: str) -> list[str]:
    """Every bad value of the ``[sinks.sync]`` mappings, with its key path."""
    from forwarder.correlation.incidents import CLASSIFICATIONS, DETERMINATIONS, STATUSES

    problems: list[str] = []
    states, statuses, close_codes, classifications = mappings(settings)
    for key, value in settings.sync.states.items():
        if value not in STATUSES:
            problems.append(f"{path}.sync.states.{key}: expected one of {', '.join(STATUSES)}, got {value!r}")
    for key in settings.sync.statuses:
        if key not in STATUSES:
            problems.append(f"{path}.sync.statuses.{key}: expected a Defender status ({', '.join(STATUSES)})")
    for status, state in statuses.items():
        if states.get(state) != status and status != "redirected":
            problems.append(
                f"{path}.sync.statuses.{status}: state {state!r} maps back to {states.get(state)!r} in "
                f"{path}.sync.states, not {status!r} (the sync would never see the two sides agree)"
            )
    for key, value in settings.sync.close_codes.items():
        cls, _, det = value.partition("/")
        if cls not in CLASSIFICATIONS or (det and det not in DETERMINATIONS):
            problems.append(
                f"{path}.sync.close_codes.{key}: expected 'classification/determination' with a classification "
                f"of {', '.join(CLASSIFICATIONS)} and a determination of the Graph v1.0 list, got {value!r}"
            )
    for key in settings.sync.classifications:
        cls, _, det = key.partition("/")
        if key != "*" and (cls not in CLASSIFICATIONS or (det and det not in DETERMINATIONS)):
            problems.append(f"{path}.sync.classifications.{key}: not a Defender classification[/determination]")
    if settings.sync.user_field not in ("email", "user_name"):
        problems.append(f"{path}.sync.user_field: expected 'email' or 'user_name'")
    return problems


def incident_of(correlation_id: str) -> str:
    """The Defender incident id in a correlation_id ``<prefix>:<tenant>:incident:<id>`` ('' if none)."""
    head, sep, tail = correlation_id.rpartition(":incident:")
    return tail if sep and head and tail and ":" not in tail else ""


class ServiceNowPeer:
    """See the module docstring; ``state`` is the servicenow sink's durable namespace."""

    def __init__(
        self,
        name: str,
        settings: ServiceNowSettings,
        state: Any,
        log: logging.Logger,
        client: TableClient | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.table = settings.table
        self.prefix = f"{settings.correlation_prefix}:"
        self.state = state
        self.log = log
        self.client = client or TableClient(settings, f"sinks.{name}")
        self.states, self.statuses, self.close_codes, self.classifications = mappings(settings)
        self.user = f"assigned_to.{settings.sync.user_field}"
        self.fields = ",".join(
            (
                "sys_id",
                "number",
                "correlation_id",
                "state",
                "close_code",
                "assigned_to",
                self.user,
                "sys_mod_count",
                "sys_updated_on",
                "sys_updated_by",
            )
        )
        self.notes_readable = settings.sync.work_notes

    def close(self) -> None:
        self.client.close()

    # ------------------------------------------------------------------ mapping

    def to_defender(self, raw: dict[str, str]) -> dict[str, str | None]:
        status = self.states.get(raw.get("status", ""))
        classification: str | None = None
        if status == "resolved":
            value = self.close_codes.get(raw.get("classification", ""))
            if value:
                cls, _, det = value.partition("/")
                classification = f"{cls}/{det or 'unknown'}"
        assignee = raw.get("assignedTo", "")
        return {
            "status": status,
            "classification": classification,
            "assignedTo": None if assignee.startswith("#") or not self.settings.sync.sync_assignee else assignee,
        }

    def to_ticket(self, defender: dict[str, str]) -> dict[str, str | None]:
        status = defender.get("status", "")
        code: str | None = None
        if status == "resolved":
            value = defender.get("classification", "")
            cls = value.partition("/")[0]
            code = self.classifications.get(value) or self.classifications.get(cls) or self.classifications.get("*")
        return {
            "status": self.statuses.get(status),
            "classification": code,
            "assignedTo": defender.get("assignedTo", "") if self.settings.sync.sync_assignee else None,
        }

    # ------------------------------------------------------------------ reading

    def _view(self, row: dict[str, Any], incident: str) -> TicketView:
        assigned = _value(row.get("assigned_to"))
        user = _value(row.get(self.user))
        return TicketView(
            incident_id=incident,
            key=str(row.get("sys_id", "")),
            label=str(row.get("number", "")) or str(row.get("sys_id", "")),
            version=str(row.get("sys_mod_count", "0") or "0"),
            raw={
                "status": _value(row.get("state")),
                "classification": _value(row.get("close_code")),
                "assignedTo": user if user else (f"#{assigned}" if assigned else ""),
            },
            updated_by=_value(row.get("sys_updated_by")),
            updated_on=_value(row.get("sys_updated_on")),
        )

    def _incident(self, row: dict[str, Any]) -> str:
        corr = str(row.get("correlation_id", ""))
        if not corr.startswith(self.prefix):
            return ""
        found = incident_of(corr)
        if found:
            return found
        link = self.state.get(f"link:{corr}") or {}
        source = str(link.get("source", ""))
        return source.partition(":")[2] if source.startswith("incident:") else ""

    def changes(self, cursor: dict[str, Any] | None) -> tuple[list[TicketView], dict[str, Any]]:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        lookback = dt.timedelta(seconds=self.settings.sync.lookback)
        since_text = (cursor or {}).get("updated_on", "")
        try:
            since = dt.datetime.strptime(since_text, TIME_FORMAT).replace(tzinfo=dt.UTC) if since_text else now
        except ValueError:
            since = now
        start = (since - lookback).strftime(TIME_FORMAT)
        query = f"correlation_idSTARTSWITH{self.prefix}^sys_updated_on>={start}^ORDERBYsys_updated_on"
        latest: dict[str, TicketView] = {}
        newest = since_text
        offset = 0
        while True:
            rows, headers = self._call(
                "GET",
                self.table,
                {
                    "sysparm_query": query,
                    "sysparm_fields": self.fields,
                    "sysparm_limit": str(PAGE),
                    "sysparm_offset": str(offset),
                },
            )
            page = [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []
            for row in page:
                incident = self._incident(row)
                if not incident:
                    continue  # not ours, or an alert/audit ticket (no incident to sync)
                view = self._view(row, incident)
                previous = latest.get(view.key)
                if previous is None or int(view.version or 0) >= int(previous.version or 0):
                    latest[view.key] = view
                newest = max(newest, view.updated_on)
            offset += PAGE
            try:
                total = int(headers.get("X-Total-Count", "0"))
            except ValueError:
                total = 0
            if offset >= total or (not page and not total):
                break
        views = list(latest.values())
        if views and self.notes_readable:
            self._attach_notes(views, start)
        return views, {"updated_on": newest or now.strftime(TIME_FORMAT)}

    def _attach_notes(self, views: list[TicketView], start: str) -> None:
        by_key = {v.key: v for v in views}
        keys = sorted(by_key)
        for i in range(0, len(keys), 50):
            chunk = keys[i : i + 50]
            query = f"element_idIN{','.join(chunk)}^element=work_notes^sys_created_on>={start}^ORDERBYsys_created_on"
            try:
                rows, _ = self._call(
                    "GET",
                    "sys_journal_field",
                    {"sysparm_query": query, "sysparm_fields": "sys_id,element_id,value,sys_created_on,sys_created_by"},
                )
            except FatalError as exc:
                self.log.warning("sync: cannot read work notes (sys_journal_field): %s; notes are not copied", exc)
                self.notes_readable = False
                return
            for row in rows if isinstance(rows, list) else []:
                if not isinstance(row, dict):
                    continue
                text = _value(row.get("value"))
                view = by_key.get(_value(row.get("element_id")))
                if view is None or not text.strip() or text.lstrip().startswith(PREFIX):
                    continue
                view.notes.append(
                    {
                        "id": _value(row.get("sys_id")),
                        "author": _value(row.get("sys_created_by")),
                        "time": _value(row.get("sys_created_on")),
                        "text": text,
                    }
                )

    def _link(self, incident_id: str) -> tuple[str, dict[str, Any] | None]:
        corr = self.state.get(INCIDENT_KEY + incident_id)
        if isinstance(corr, str):
            link = self.state.get(f"link:{corr}")
            if isinstance(link, dict) and link.get("sys_id"):
                return corr, link
        return "", None

    def ticket(self, incident_id: str) -> TicketView | None:
        corr, link = self._link(incident_id)
        params = {"sysparm_fields": self.fields}
        if link is not None:
            try:
                row, _ = self._call("GET", f"{self.table}/{link['sys_id']}", params)
            except SyncRejected:
                return None  # deleted
            return self._view(row, incident_id) if isinstance(row, dict) and row else None
        query = f"correlation_idSTARTSWITH{self.prefix}^correlation_idENDSWITH:incident:{incident_id}"
        rows, _ = self._call("GET", self.table, {**params, "sysparm_query": query, "sysparm_limit": "5"})
        for row in rows if isinstance(rows, list) else []:
            if isinstance(row, dict) and self._incident(row) == incident_id:
                return self._view(row, incident_id)
        return None

    def baseline(self, incident_id: str) -> dict[str, dict[str, str]] | None:
        _, link = self._link(incident_id)
        base = (link or {}).get("baseline")
        return base if isinstance(base, dict) and base.get("defender") and base.get("ticket") else None

    # ------------------------------------------------------------------ writing

    def write(
        self, view: TicketView, values: dict[str, str], defender: dict[str, str], note: str
    ) -> tuple[str, dict[str, str]]:
        body: dict[str, str] = {}
        written: dict[str, str] = {}
        notes = [note] if note else []
        if "status" in values:
            body["state"] = values["status"]
            if self.table == "incident":
                body["incident_state"] = values["status"]
            written["status"] = values["status"]
            if self.states.get(values["status"]) == "resolved":
                code = values.get("classification") or self.to_ticket(defender).get("classification") or ""
                if code and not view.raw.get("classification"):
                    values = {**values, "classification": code}
                body["close_notes"] = (
                    f"Resolved in Defender XDR (incident {view.incident_id}, classification "
                    f"{defender.get('classification', 'unknown/unknown')}); synced by dlpfwd"
                )
        if "classification" in values:
            body["close_code"] = values["classification"]
            written["classification"] = values["classification"]
        if "assignedTo" in values:
            target = values["assignedTo"]
            if not target:
                body["assigned_to"] = ""
                written["assignedTo"] = ""
            else:
                sys_id = self._user(target)
                if sys_id:
                    body["assigned_to"] = sys_id
                    written["assignedTo"] = target
                else:
                    notes.append(
                        f"{PREFIX} Defender XDR incident {view.incident_id} is assigned to {target}; no ServiceNow "
                        f"user has that {self.settings.sync.user_field}, so assigned_to is unchanged"
                    )
        if notes and self.settings.work_notes:
            body["work_notes"] = "\n".join(notes)
        if not body:
            return view.version, written
        try:
            row, _ = self._call(
                "PATCH", f"{self.table}/{view.key}", {"sysparm_fields": "sys_id,sys_mod_count,state"}, body
            )
        except _Forbidden as exc:
            if self._inactive(view.key):
                # a closed ticket the instance keeps read-only: this change is refused for good
                raise SyncRejected(f"ticket {view.label} is closed and read-only: {exc}") from None
            raise
        version = _value(row.get("sys_mod_count")) if isinstance(row, dict) else ""
        return version or view.version, written

    def _inactive(self, sys_id: str) -> bool:
        try:
            row, _ = self._call("GET", f"{self.table}/{sys_id}", {"sysparm_fields": "active"})
        except (FatalError, RetriableError, SyncRejected):
            return False
        return isinstance(row, dict) and _value(row.get("active")).lower() == "false"

    def _user(self, who: str) -> str:
        """The sys_id of the sys_user whose ``user_field`` is ``who`` ('' when none)."""
        column = self.settings.sync.user_field
        rows, _ = self._call(
            "GET",
            "sys_user",
            {  # UPNs are case-insensitive; the stored address is usually lower case
                "sysparm_query": f"{column}={who}" + (f"^OR{column}={who.lower()}" if who != who.lower() else ""),
                "sysparm_fields": f"sys_id,{column}",
                "sysparm_limit": "2",
            },
        )
        for row in rows if isinstance(rows, list) else []:
            if isinstance(row, dict) and _value(row.get(column)).casefold() == who.casefold():
                return _value(row.get("sys_id"))
        return ""

    def _call(
        self, method: str, path: str, params: dict[str, str], body: dict[str, Any] | None = None
    ) -> tuple[Any, Any]:
        try:
            return self.client.request_with_headers(method, path, params, body)
        except TableError as exc:
            if exc.kind == RETRY:
                raise RetriableError(str(exc), exc.retry_after) from None
            if exc.kind == FATAL:
                raise (_Forbidden if exc.status == 403 else FatalError)(str(exc)) from None
            raise SyncRejected(str(exc)) from None


class _Forbidden(FatalError):
    """The FatalError of an HTTP 403 answer: a PATCH refused so may be a closed, read-only ticket."""


def _value(value: Any) -> str:
    """A Table API value as text (reference fields may come as {"value", "link"})."""
    if isinstance(value, dict):
        value = value.get("value", "")
    return "" if value is None else str(value)


__all__ = ["GROUPS", "ServiceNowPeer", "incident_of", "mapping_problems", "mappings"]
