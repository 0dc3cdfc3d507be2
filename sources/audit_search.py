"""Source ``audit_search``: DLP records from the unified audit log through Graph audit log
queries (``security/auditLog/queries``), reaching past the Management API's 7 days.

For each window of ``window_hours`` the source creates a query (time range + DLP record
types), waits until it has ``succeeded`` (polling its status), then pages its records with
``@odata.nextLink``. The records are Graph ``auditLogRecord`` objects whose ``auditData`` is
the same record the Management API serves, so events are identical (and share idempotency
keys) whichever source read them.

Only the public cloud offers this API; elsewhere ``connect``/``backfill`` explain why not
(:class:`~forwarder.errors.NotSupported`).

Resumable: the cursor holds the end of the last finished window and the id of the query of
the window in progress, so a rerun reuses the query instead of creating another one.
Cursor: ``{"done_until": ISO, "query": {"id": ..., "start": ISO, "end": ISO, "pages": n}}``.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from forwarder.api import ApiClient, graph_pages
from forwarder.auth import AuthSettings
from forwarder.errors import FatalError, NotSupported, RetriableError
from forwarder.hookspecs import hookimpl
from forwarder.settings import HttpSettings, setting
from forwarder.sink import Health
from forwarder.source import RawRecord, SourceBatch, SourceContext, WorkUnit
from sources._common import (
    ApiSource,
    BackfillProgress,
    cloud,
    count_windows,
    iso,
    parse_cursor_time,
    token_roles,
    windows,
)
from sources.normalize import KIND_GRAPH_AUDIT
from sources.normalize.management_activity import normalize_graph_audit_record

PERMISSION = "AuditLogsQuery.Read.All"
#: auditLogRecordType members of DLP records (Graph spells the enum in camelCase).
DLP_RECORD_TYPES = [
    "complianceDLPSharePoint",
    "complianceDLPExchange",
    "dlpEndpoint",
    "complianceDLPSharePointClassification",
    "complianceDLPExchangeClassification",
    "onPremisesFileShareScannerDlp",
    "onPremisesSharePointScannerDlp",
]
_FINISHED_BAD = ("failed", "cancelled")


@dataclass
class AuditSearchSettings:
    """``[[sources]] type = "audit_search"``."""

    auth: AuthSettings = setting(doc="the app registration ([sources.auth])")
    http: HttpSettings = field(default_factory=HttpSettings)
    graph_url: str = setting("", doc="override of the Graph root (default: the cloud's)", url=("https", "http"))
    api_version: str = setting("v1.0", doc="Graph API version", choices=("v1.0", "beta"))
    record_types: list[str] = setting(
        default_factory=lambda: list(DLP_RECORD_TYPES), doc="auditLogRecordType values queried"
    )
    window_hours: float = setting(24.0, doc="time range of one audit log query", minimum=0.01)
    lag_minutes: float = setting(60.0, doc="live polling stays this far behind now (audit log latency)", minimum=0)
    start_days: float = setting(1.0, doc="how far back the first live poll reads, in days", minimum=0)
    query_timeout: float = setting(3600.0, doc="seconds to wait for a query to finish", minimum=1)
    status_interval: float = setting(10.0, doc="seconds between query status checks", minimum=0.01)
    page_size: int = setting(1000, doc="$top for records pages", minimum=1, maximum=1000)
    requests_per_minute: float = setting(120.0, doc="request budget of this instance (0: unlimited)", minimum=0)
    max_retry_wait: float = setting(120.0, doc="seconds spent retrying one request before giving up", minimum=0)


class AuditSearchSource(ApiSource):
    """See the module docstring."""

    settings_class = AuditSearchSettings
    settings: AuditSearchSettings

    def __init__(self, name: str, settings: AuditSearchSettings, context: SourceContext, **inject: Any) -> None:
        super().__init__(name, settings, context, **inject)
        if self._sleep is None:
            self._sleep = time.sleep  # also paces the wait for a query to finish

    def _check_cloud(self) -> None:
        c = cloud(self.settings.auth)
        if not c.audit_search and not self.settings.graph_url:
            raise NotSupported(
                f"{self.name}: Graph audit log queries (security/auditLog/queries) are offered only in the public "
                f"cloud, not in {c.name!r}; records older than the Management Activity API's 7 days cannot be "
                f"read there (export them from the Purview portal's audit search instead)"
            )

    def _api(self) -> ApiClient:
        return self._graph_client("audit_search")

    def connect(self) -> None:
        try:
            self._check_cloud()
        except NotSupported as exc:
            raise FatalError(str(exc)) from None  # a live source that can never work: stop it, say why
        self._sync_clock()

    def _sync_clock(self) -> None:
        """One cheap request so that windows are computed on the server's clock."""
        api = self._api()
        response = api.request("GET", "security/auditLog/queries", params={"$top": "1"}, what="probe queries")
        api.raise_for(response, f"audit_search {self.name}: GET security/auditLog/queries", PERMISSION)

    def health(self) -> Health:
        health = Health()
        try:
            self._check_cloud()
        except NotSupported as exc:
            return health.add("cloud", False, str(exc))
        api = self._api()
        try:
            token = api.tokens.token(api.scope)
        except (FatalError, RetriableError) as exc:
            return health.add("token", False, str(exc))
        roles = token_roles(token)
        health.add("token", True, f"roles: {', '.join(roles) or '(none in token)'}")
        try:
            response = api.request("GET", "security/auditLog/queries", params={"$top": "1"}, what="probe queries")
            api.raise_for(response, "GET security/auditLog/queries", PERMISSION)
            health.add("auditLog/queries", True, f"HTTP {response.status_code}")
        except (FatalError, RetriableError) as exc:
            lacking = roles and not any(r.startswith("AuditLogsQuery") for r in roles)
            health.add("auditLog/queries", False, f"{exc}{' (token roles lack ' + PERMISSION + ')' if lacking else ''}")
        return health

    # ------------------------------------------------------------------ reading

    def poll(self, cursor: dict[str, Any] | None) -> Iterator[SourceBatch]:
        self._check_cloud()
        self._sync_clock()
        api = self._api()
        now = api.now() - dt.timedelta(minutes=self.settings.lag_minutes)
        since = parse_cursor_time((cursor or {}).get("done_until")) or (
            now - dt.timedelta(days=self.settings.start_days)
        )
        yield from self._run(since, now, cursor, full_windows_only=True)

    def backfill(self, since: dt.datetime, until: dt.datetime, cursor: dict[str, Any] | None) -> Iterator[SourceBatch]:
        self._check_cloud()
        self._sync_clock()
        api = self._api()
        until = min(until, api.now())
        start = parse_cursor_time((cursor or {}).get("done_until")) or since
        yield from self._run(max(start, since), until, cursor, full_windows_only=False, origin=since)

    def _run(
        self,
        start: dt.datetime,
        end: dt.datetime,
        cursor: dict[str, Any] | None,
        full_windows_only: bool,
        origin: dt.datetime | None = None,
    ) -> Iterator[SourceBatch]:
        size = dt.timedelta(hours=self.settings.window_hours)
        total = count_windows(origin or start, end, size)
        done = count_windows(origin or start, start, size)
        pending = (cursor or {}).get("query") if isinstance((cursor or {}).get("query"), dict) else None
        tracker = BackfillProgress(total, done)
        for a, b in windows(start, end, size):
            if full_windows_only and b - a < min(size, dt.timedelta(minutes=15)):
                return  # too small a slice to be worth a query; the next poll takes it
            query_id = ""
            if pending and pending.get("start") == iso(a) and pending.get("end") == iso(b):
                query_id = str(pending.get("id", ""))
            pending = None
            if not query_id:
                query_id = self._create(a, b)
                state = {"done_until": iso(a), "query": {"id": query_id, "start": iso(a), "end": iso(b)}}
                yield SourceBatch(cursor=state)
            if not self._wait(query_id):
                self.log.warning("%s: audit log query %s failed; creating it again", self.name, query_id)
                query_id = self._create(a, b)
                yield SourceBatch(
                    cursor={"done_until": iso(a), "query": {"id": query_id, "start": iso(a), "end": iso(b)}}
                )
                if not self._wait(query_id):
                    raise RetriableError(f"{self.name}: audit log query for {iso(a)}..{iso(b)} failed twice")
            count = 0
            what = f"{self.name}: records of query {query_id}"
            path = f"security/auditLog/queries/{query_id}/records"
            for page in graph_pages(self._api(), path, {"$top": str(self.settings.page_size)}, what, PERMISSION):
                records = [
                    RawRecord(KIND_GRAPH_AUDIT, r, None, f"auditquery:{query_id}")
                    if isinstance(r, dict)
                    else RawRecord(KIND_GRAPH_AUDIT, None, repr(r).encode()[:65536], f"auditquery:{query_id}")
                    for r in page
                ]
                count += len(records)
                tracker.add(len(records))
                if records:
                    self.context.count("records_read", len(records))
                    yield SourceBatch(records=records, progress=tracker.info(done))
            done += 1
            unit = WorkUnit(
                id=f"auditquery:{iso(a)}",
                kind="audit_query_window",
                status="fetched",
                listed=count,
                fetched=count,
                parsed=count,
                created=iso(a),
                detail=f"query {query_id} {iso(a)}..{iso(b)}",
            )
            yield SourceBatch(
                cursor={"done_until": iso(b)},
                units=[unit],
                progress=tracker.info(done, window_end=iso(b)),
            )

    def _create(self, a: dt.datetime, b: dt.datetime) -> str:
        api = self._api()
        body = {
            "@odata.type": "#microsoft.graph.security.auditLogQuery",
            "displayName": f"dlpfwd {self.name} {iso(a)}..{iso(b)}",
            "filterStartDateTime": iso(a),
            "filterEndDateTime": iso(b),
            "recordTypeFilters": list(self.settings.record_types),
        }
        what = f"{self.name}: create audit log query {iso(a)}..{iso(b)}"
        response = api.request("POST", "security/auditLog/queries", json=body, what=what)
        api.raise_for(response, what, PERMISSION)
        created = response.json()
        query_id = str(created.get("id", "")) if isinstance(created, dict) else ""
        if not query_id:
            raise RetriableError(f"{what}: the response carries no query id")
        self.log.info("%s: audit log query %s created for %s..%s", self.name, query_id, iso(a), iso(b))
        return query_id

    def _wait(self, query_id: str) -> bool:
        """Wait for the query to finish: True when it succeeded, False when it failed or was cancelled."""
        api = self._api()
        what = f"{self.name}: audit log query {query_id}"
        deadline = time.monotonic() + self.settings.query_timeout
        while True:
            body = api.get_json(f"security/auditLog/queries/{query_id}", what=what)
            status = str(body.get("status", "")).lower() if isinstance(body, dict) else ""
            if status == "succeeded":
                return True
            if status in _FINISHED_BAD:
                return False
            if time.monotonic() > deadline:
                raise RetriableError(f"{what} did not finish within {self.settings.query_timeout:.0f}s")
            self._sleep(self.settings.status_interval)


@hookimpl
def dlpfwd_register_sources(register: Any) -> None:
    register("audit_search", AuditSearchSource)


@hookimpl
def dlpfwd_register_normalizers(register: Any) -> None:
    register(KIND_GRAPH_AUDIT, normalize_graph_audit_record)
