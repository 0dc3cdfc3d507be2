"""Source ``graph_security``: Purview DLP alerts (Graph ``security/alerts_v2``) and the incidents
that contain them (``security/incidents``).

How it reads (see ``docs/sources.md``):

* Alerts are filtered server-side to ``serviceSource eq 'dataLossPrevention'`` (configurable)
  and kept client-side only when they are DLP alerts; incidents are kept when one of their
  alerts is a DLP alert (``$expand=alerts``; if the service fails the expand, the incident ids
  of DLP alerts seen are used instead).
* Incremental on ``lastUpdateDateTime`` so status, assignment and classification changes
  flow: each stream reads ``[since - overlap, now)`` in windows of ``window_hours``; the cursor
  moves to a window's end only after all its pages were yielded, and remembers the
  ``(id, lastUpdateDateTime)`` pairs inside the overlap, which are skipped when re-read (and
  the event's idempotency key catches any other repeat downstream).
* Pages follow ``@odata.nextLink`` (validated to stay on the Graph host); 429/503/504 honour
  ``Retry-After``; every request sends ``Prefer: include-unknown-enum-members``.

Cursor: ``{"alerts": {"since": ISO, "seen": {id: lastUpdate}}, "incidents": {...},
"dlp_incidents": [ids]}``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from forwarder.api import ApiClient, graph_pages
from forwarder.auth import AuthSettings
from forwarder.errors import FatalError, RetriableError
from forwarder.hookspecs import hookimpl
from forwarder.schema import iso_utc
from forwarder.settings import HttpSettings, setting
from forwarder.sink import Health
from forwarder.source import RawRecord, SourceBatch, SourceContext, WorkUnit
from sources._common import (
    ApiSource,
    BackfillProgress,
    count_windows,
    iso,
    parse_cursor_time,
    token_roles,
    windows,
)
from sources.normalize import KIND_GRAPH_ALERT, KIND_GRAPH_INCIDENT
from sources.normalize.graph import is_dlp_alert, normalize_alert, normalize_incident

ALERTS_PERMISSION = "SecurityAlert.Read.All"
INCIDENTS_PERMISSION = "SecurityIncident.Read.All"
MAX_KNOWN_INCIDENTS = 5000


@dataclass
class GraphSecuritySettings:
    """``[[sources]] type = "graph_security"``."""

    auth: AuthSettings = setting(doc="the app registration ([sources.auth])")
    http: HttpSettings = field(default_factory=HttpSettings)
    graph_url: str = setting("", doc="override of the Graph root (default: the cloud's)", url=("https", "http"))
    api_version: str = setting("v1.0", doc="Graph API version", choices=("v1.0", "beta"))
    alerts: bool = setting(True, doc="read DLP alerts (alerts_v2)")
    incidents: bool = setting(True, doc="read the incidents that contain DLP alerts")
    service_sources: list[str] = setting(
        default_factory=lambda: ["dataLossPrevention"], doc="serviceSource values filtered server-side"
    )
    all_alerts: bool = setting(False, doc="keep alerts of every service, not only DLP ones")
    start_days: float = setting(1.0, doc="how far back the first run reads, in days", minimum=0)
    overlap: float = setting(600.0, doc="seconds re-read behind the cursor for late-indexed updates", minimum=0)
    window_hours: float = setting(24.0, doc="hours of updates read per committed window", minimum=0.01)
    alert_page_size: int = setting(500, doc="$top for alerts (Graph caps it at 1000)", minimum=1, maximum=1000)
    incident_page_size: int = setting(50, doc="$top for incidents (Graph caps it at 50)", minimum=1, maximum=50)
    expand_alerts: bool = setting(True, doc="ask incidents with $expand=alerts (falls back when it fails)")
    requests_per_minute: float = setting(
        120.0,
        doc="request budget of this source's app, its write-back and status sync included (Graph allows "
        "150/min/app/tenant)",
        minimum=0,
    )
    max_retry_wait: float = setting(120.0, doc="seconds spent retrying one request before giving up", minimum=0)


class GraphSecuritySource(ApiSource):
    """See the module docstring."""

    settings_class = GraphSecuritySettings
    settings: GraphSecuritySettings

    def __init__(self, name: str, settings: GraphSecuritySettings, context: SourceContext, **inject: Any) -> None:
        super().__init__(name, settings, context, **inject)
        self._expand = settings.expand_alerts

    # ------------------------------------------------------------------ lifecycle

    def _api(self) -> ApiClient:
        return self._graph_client("graph_security")

    def connect(self) -> None:
        self._sync_clock()

    def _sync_clock(self) -> None:
        """One cheap request (``$top=1``) per poll, so windows end at the server's now, not ours."""
        api = self._api()
        path = "security/alerts_v2" if self.settings.alerts else "security/incidents"
        permission = ALERTS_PERMISSION if self.settings.alerts else INCIDENTS_PERMISSION
        response = api.request("GET", path, params={"$top": "1"}, what=f"graph_security {self.name}: probe")
        api.raise_for(response, f"graph_security {self.name}: GET {path}", permission)

    def health(self) -> Health:
        health = Health()
        api = self._api()
        try:
            token = api.tokens.token(api.scope)
        except (FatalError, RetriableError) as exc:
            return health.add("token", False, str(exc))
        roles = token_roles(token)
        health.add("token", True, f"roles: {', '.join(roles) or '(none in token)'}")
        probes = []
        if self.settings.alerts:
            probes.append(("alerts_v2", "security/alerts_v2", ALERTS_PERMISSION, {"$top": "1"}))
        if self.settings.incidents:
            probes.append(("incidents", "security/incidents", INCIDENTS_PERMISSION, {"$top": "1"}))
        for label, path, permission, params in probes:
            try:
                response = api.request("GET", path, params=params, what=f"probe {label}")
                api.raise_for(response, f"GET {label}", permission)
                health.add(label, True, f"HTTP {response.status_code}")
            except (FatalError, RetriableError) as exc:
                missing = roles and not any(r.startswith(permission.split(".Read")[0]) for r in roles)
                hint = f" (token roles lack {permission})" if missing else ""
                health.add(label, False, f"{exc}{hint}")
        return health

    # ------------------------------------------------------------------ reading

    def poll(self, cursor: dict[str, Any] | None) -> Iterator[SourceBatch]:
        api = self._api()
        self._sync_clock()
        state = _Cursor.load(cursor)
        now = api.now()
        default_since = now - dt.timedelta(days=self.settings.start_days)
        overlap = dt.timedelta(seconds=self.settings.overlap)
        if self.settings.alerts:
            yield from self._stream("alerts", state, default_since, now, overlap, live=True)
        if self.settings.incidents:
            yield from self._stream("incidents", state, default_since, now, overlap, live=True)

    def backfill(self, since: dt.datetime, until: dt.datetime, cursor: dict[str, Any] | None) -> Iterator[SourceBatch]:
        api = self._api()
        self._sync_clock()
        state = _Cursor.load(cursor)
        until = min(until, api.now())
        if self.settings.alerts:
            yield from self._stream("alerts", state, since, until, dt.timedelta(0), live=False)
        if self.settings.incidents:
            yield from self._stream("incidents", state, since, until, dt.timedelta(0), live=False)

    def _stream(
        self,
        stream: str,
        state: _Cursor,
        default_since: dt.datetime,
        end: dt.datetime,
        overlap: dt.timedelta,
        live: bool,
    ) -> Iterator[SourceBatch]:
        s = self.settings
        pos = state.streams.setdefault(stream, {})
        since = parse_cursor_time(pos.get("since")) or default_since
        seen: dict[str, str] = dict(pos.get("seen") or {})
        start = since - overlap if live else since
        size = dt.timedelta(hours=s.window_hours)
        total = count_windows(start, end, size)
        tracker = BackfillProgress(total)
        for done, (a, b) in enumerate(windows(start, end, size), 1):
            window_seen: dict[str, str] = {}
            # One ledger unit per window, carried by its records: items listed on its pages,
            # records fetched (new, kept) and parsed (JSON objects), as for content blobs.
            unit_id = f"graph:{stream}:{iso(a)}"
            listed = fetched = parsed = 0
            params = self._params(stream, a, b)
            path = "security/alerts_v2" if stream == "alerts" else "security/incidents"
            permission = ALERTS_PERMISSION if stream == "alerts" else INCIDENTS_PERMISSION
            what = f"graph_security {self.name}: list {stream} {iso(a)}..{iso(b)}"
            page_no = 0
            for page in self._pages(path, params, what, permission, stream):
                page_no += 1
                records: list[RawRecord] = []
                listed += len(page)
                for item in page:
                    if not isinstance(item, dict):
                        records.append(RawRecord(_kind(stream), None, repr(item).encode()[:65536], unit_id))
                        fetched += 1
                        continue
                    item_id = str(item.get("id", ""))
                    updated = iso_utc(str(item.get("lastUpdateDateTime") or item.get("createdDateTime") or ""))
                    if item_id and seen.get(item_id) == updated:
                        self.context.count(f"{stream}_overlap_skipped")
                        continue
                    if not self._keep(stream, item, state):
                        continue
                    if item_id:
                        window_seen[item_id] = updated
                    records.append(RawRecord(_kind(stream), item, None, unit_id))
                    fetched += 1
                    parsed += 1
                if records:
                    tracker.add(len(records))
                    self.context.count(f"{stream}_read", len(records))
                    yield SourceBatch(records=records, cursor=None, progress=tracker.info(done - 1, stream=stream))
            # Window complete: commit its end; remember what lies inside the next overlap.
            horizon = b - dt.timedelta(seconds=s.overlap)
            merged = {**seen, **window_seen}
            seen = {k: v for k, v in merged.items() if (parse_cursor_time(v) or b) >= horizon}
            pos["since"] = iso(b)
            pos["seen"] = seen
            unit = WorkUnit(
                id=unit_id,
                kind=f"graph_{stream}_window",
                status="fetched",
                listed=listed,
                fetched=fetched,
                parsed=parsed,
                created=iso(a),
                detail=f"{page_no} pages to {iso(b)}",
            )
            progress = tracker.info(done, stream=stream, window_end=iso(b))
            yield SourceBatch(records=[], cursor=state.dump(), units=[unit], progress=progress)

    def _params(self, stream: str, a: dt.datetime, b: dt.datetime) -> dict[str, str]:
        s = self.settings
        time_filter = f"lastUpdateDateTime ge {iso(a)} and lastUpdateDateTime lt {iso(b)}"
        if stream == "alerts":
            flt = time_filter
            if s.service_sources and not s.all_alerts:
                clauses = [f"serviceSource eq '{v}'" for v in s.service_sources]
                # One value needs no parentheses (and stays within the simplest filter grammar).
                flt += f" and {clauses[0]}" if len(clauses) == 1 else f" and ({' or '.join(clauses)})"
            return {"$filter": flt, "$top": str(s.alert_page_size)}
        params = {"$filter": time_filter, "$top": str(s.incident_page_size)}
        if self._expand:
            params["$expand"] = "alerts"
        return params

    def _pages(self, path: str, params: dict[str, str], what: str, permission: str, stream: str) -> Iterator[list[Any]]:
        api = self._api()
        pages = graph_pages(api, path, params, what, permission)
        if stream == "incidents" and self._expand:
            try:
                first = next(pages, None)
            except RetriableError as exc:
                # Large tenants see persistent 500s on $expand with $filter: read without it.
                self.log.warning("%s: $expand=alerts failed (%s); reading incidents without it", what, exc)
                self._expand = False
                params = {k: v for k, v in params.items() if k != "$expand"}
                pages = graph_pages(api, path, params, what, permission)
                first = next(pages, None)
            if first is not None:
                yield first
        yield from pages

    def _keep(self, stream: str, item: dict[str, Any], state: _Cursor) -> bool:
        if stream == "alerts":
            dlp = is_dlp_alert(item)
            if dlp:
                incident = str(item.get("incidentId") or "")
                if incident:
                    state.remember_incident(incident)
            return dlp or self.settings.all_alerts
        if self.settings.all_alerts:
            return True
        alerts = item.get("alerts")
        if isinstance(alerts, list) and alerts and any(isinstance(a, dict) and is_dlp_alert(a) for a in alerts):
            return True
        return str(item.get("id", "")) in state.dlp_incidents


def _kind(stream: str) -> str:
    return KIND_GRAPH_ALERT if stream == "alerts" else KIND_GRAPH_INCIDENT


class _Cursor:
    """The JSON cursor, with a bounded list of incident ids known to hold DLP alerts."""

    def __init__(self, streams: dict[str, dict[str, Any]], dlp_incidents: list[str]) -> None:
        self.streams = streams
        self.incident_order = list(dlp_incidents)[-MAX_KNOWN_INCIDENTS:]
        self.dlp_incidents = set(self.incident_order)

    @classmethod
    def load(cls, cursor: dict[str, Any] | None) -> _Cursor:
        cursor = cursor or {}
        streams = {k: dict(v) for k, v in cursor.items() if k in ("alerts", "incidents") and isinstance(v, dict)}
        known = cursor.get("dlp_incidents")
        return cls(streams, [str(i) for i in known] if isinstance(known, list) else [])

    def remember_incident(self, incident_id: str) -> None:
        if incident_id in self.dlp_incidents:
            return
        self.dlp_incidents.add(incident_id)
        self.incident_order.append(incident_id)
        if len(self.incident_order) > MAX_KNOWN_INCIDENTS:
            dropped = self.incident_order.pop(0)
            self.dlp_incidents.discard(dropped)

    def dump(self) -> dict[str, Any]:
        return {
            **{k: {"since": v.get("since"), "seen": dict(v.get("seen") or {})} for k, v in self.streams.items()},
            "dlp_incidents": list(self.incident_order),
        }


@hookimpl
def dlpfwd_register_sources(register: Any) -> None:
    register("graph_security", GraphSecuritySource)


@hookimpl
def dlpfwd_register_normalizers(register: Any) -> None:
    register(KIND_GRAPH_ALERT, normalize_alert)
    register(KIND_GRAPH_INCIDENT, normalize_incident)
