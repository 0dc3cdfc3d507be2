"""Graph audit log queries: ``/security/auditLog/queries`` (create, list, get, records).

A query runs asynchronously: ``notStarted`` on creation, ``running`` afterwards and
``succeeded`` once ``audit_query_seconds`` (real seconds) have passed. Records are the
generated audit records with ``filterStartDateTime <= CreationTime < filterEndDateTime``
matching every given filter, as ``microsoft.graph.security.auditLogRecord`` objects with the
original record in ``auditData``; pages follow ``@odata.nextLink``. Asking for the records of
an unfinished query answers 400 (the emulator's choice; the docs do not say).
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import orjson

from emulators.httpd import App, Request, Response
from emulators.tenant.config import Clock
from emulators.tenant.generator import RECORD_TYPE_NAMES, Dataset, graph_time
from emulators.tenant.graph import GRAPH_AUDIENCES, BadQuery, parse_time
from emulators.tenant.guard import Guard, graph_error

QUERY_ROLES = (
    "AuditLogsQuery.Read.All",
    "AuditLogsQuery-Exchange.Read.All",
    "AuditLogsQuery-SharePoint.Read.All",
    "AuditLogsQuery-OneDrive.Read.All",
    "AuditLogsQuery-Endpoint.Read.All",
)
LIST_FIELDS = (
    "recordTypeFilters",
    "keywordFilter",
    "serviceFilters",
    "operationFilters",
    "userPrincipalNameFilters",
    "ipAddressFilters",
    "objectIdFilters",
    "administrativeUnitIdFilters",
)
MAX_BACKDATE = 74 * 3600.0  # out-of-order records are at most 73 h older than their position


class AuditQueries:
    """State and routes of audit log queries."""

    def __init__(self, data: Dataset, guard: Guard, clock: Clock, run_seconds: float = 1.0) -> None:
        self.data = data
        self.guard = guard
        self.clock = clock
        self.run_seconds = run_seconds
        self.queries: dict[str, dict[str, Any]] = {}
        self._created: dict[str, float] = {}
        self._lock = threading.Lock()
        self._app: App | None = None

    def install(self, app: App) -> None:
        self._app = app
        root = r"/(?P<version>v1\.0|beta)/security/auditLog/queries"
        app.route("POST", root, self.create)
        app.route("GET", root, self.list)
        app.route("GET", root + r"/(?P<id>[^/]+)", self.get)
        app.route("GET", root + r"/(?P<id>[^/]+)/records", self.records)

    def _status(self, qid: str) -> str:
        elapsed = time.monotonic() - self._created[qid]
        if elapsed >= self.run_seconds:
            return "succeeded"
        return "running" if elapsed >= self.run_seconds / 2 else "notStarted"

    def _view(self, qid: str) -> dict[str, Any]:
        with self._lock:
            q = dict(self.queries[qid])
        q["status"] = self._status(qid)
        return q

    def create(self, request: Request) -> Response:
        def run() -> Response:
            try:
                body = request.json()
            except orjson.JSONDecodeError:
                return graph_error(400, "BadRequest", "The request body is not valid JSON.", request)
            if not isinstance(body, dict):
                return graph_error(400, "BadRequest", "The request body must be a JSON object.", request)
            try:
                start = parse_time(str(body.get("filterStartDateTime", "")))
                end = parse_time(str(body.get("filterEndDateTime", "")))
            except BadQuery:
                return graph_error(
                    400,
                    "BadRequest",
                    "filterStartDateTime and filterEndDateTime are required DateTimeOffsets.",
                    request,
                )
            if end <= start:
                return graph_error(400, "BadRequest", "filterEndDateTime must be after filterStartDateTime.", request)
            qid = str(uuid.uuid4())
            query: dict[str, Any] = {
                "@odata.type": "#microsoft.graph.security.auditLogQuery",
                "id": qid,
                "displayName": str(body.get("displayName") or ""),
                "filterStartDateTime": graph_time(start),
                "filterEndDateTime": graph_time(end),
                "status": "notStarted",
            }
            for name in LIST_FIELDS:
                value = body.get(name)
                if name == "keywordFilter":
                    query[name] = value if isinstance(value, str) else None
                    continue
                if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                    return graph_error(400, "BadRequest", f"'{name}' must be a collection of strings.", request)
                query[name] = list(value or [])
            with self._lock:
                self.queries[qid] = query
                self._created[qid] = time.monotonic()
            return Response.json({"@odata.context": self._context(request), **query}, 201)

        return self.guard.graph(request, GRAPH_AUDIENCES, QUERY_ROLES, run)

    def _context(self, request: Request) -> str:
        assert request.match is not None
        v = request.match.group("version")
        return f"https://graph.microsoft.com/{v}/$metadata#security/auditLog/queries/$entity"

    def list(self, request: Request) -> Response:
        def run() -> Response:
            with self._lock:
                ids = list(self.queries)
            return Response.json({"value": [self._view(q) for q in ids]})

        return self.guard.graph(request, GRAPH_AUDIENCES, QUERY_ROLES, run)

    def get(self, request: Request) -> Response:
        def run() -> Response:
            assert request.match is not None
            qid = request.match.group("id")
            if qid not in self.queries:
                return graph_error(404, "NotFound", f"The audit log query '{qid}' was not found.", request)
            return Response.json({"@odata.context": self._context(request), **self._view(qid)})

        return self.guard.graph(request, GRAPH_AUDIENCES, QUERY_ROLES, run)

    def records(self, request: Request) -> Response:
        def run() -> Response:
            assert request.match is not None and self._app is not None
            qid = request.match.group("id")
            if qid not in self.queries:
                return graph_error(404, "NotFound", f"The audit log query '{qid}' was not found.", request)
            query = self._view(qid)
            if query["status"] != "succeeded":
                return graph_error(
                    400,
                    "BadRequest",
                    f"The query is {query['status']}; records are available once its status is succeeded.",
                    request,
                )
            try:
                top = int(request.query.get("$top", "150"))
            except ValueError:
                return graph_error(400, "BadRequest", "Invalid value for query option '$top'.", request)
            top = max(1, min(top, 1000))
            position = 0
            token = request.query.get("$skiptoken")
            if token:
                try:
                    position = int(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode())
                except (ValueError, UnicodeDecodeError):
                    return graph_error(400, "BadRequest", "The $skiptoken value is invalid.", request)
            page: list[dict[str, Any]] = []
            next_position = None
            for i, record in self.matching(query, position):
                if len(page) == top:
                    next_position = i
                    break
                page.append(record)
            body: dict[str, Any] = {
                "@odata.context": f"https://graph.microsoft.com/v1.0/$metadata#security/auditLog/queries('{qid}')/records",
                "value": page,
            }
            if next_position is not None:
                params = {k: v for k, v in request.query.items() if k != "$skiptoken"}
                params["$skiptoken"] = base64.urlsafe_b64encode(str(next_position).encode()).decode().rstrip("=")
                body["@odata.nextLink"] = f"{self._app.base_url}{request.path}?" + urlencode(
                    params, quote_via=quote, safe="$"
                )
            return Response.json(body)

        return self.guard.graph(request, GRAPH_AUDIENCES, QUERY_ROLES, run)

    def matching(self, query: dict[str, Any], position: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
        """(record index, auditLogRecord) of every record the query selects, from ``position``."""
        d = self.data
        start = parse_time(query["filterStartDateTime"])
        end = parse_time(query["filterEndDateTime"])
        first = max(position, int((start - d.t0) / d.step) - 2, 0)
        margin = MAX_BACKDATE if d.faults.out_of_order_rate > 0 else 0.0
        last = min(d.n, int((end + margin - d.t0) / d.step) + 2)
        types = {t.lower() for t in query.get("recordTypeFilters") or []}
        services = {s.lower() for s in query.get("serviceFilters") or []}
        operations = {o.lower() for o in query.get("operationFilters") or []}
        users = {u.lower() for u in query.get("userPrincipalNameFilters") or []}
        objects = list(query.get("objectIdFilters") or [])
        keyword = (query.get("keywordFilter") or "").lower()
        now = self.clock.time()
        for i in range(max(first, 0), max(last, 0)):
            f = d.facts(i)
            if f.malformed or not (start <= f.time < end) or f.time > now:
                continue
            record = d.record(i, detections=False)
            rt = int(record["RecordType"])
            if types and RECORD_TYPE_NAMES.get(rt, "").lower() not in types:
                continue
            if services and f.workload.lower() not in services:
                continue
            if operations and f.operation.lower() not in operations:
                continue
            if users and f.user.upn.lower() not in users:
                continue
            if objects and not any(o in str(record.get("ObjectId", "")) for o in objects):
                continue
            if keyword and keyword not in orjson.dumps(record).decode().lower():
                continue
            yield (
                i,
                {
                    "id": f.id,
                    "createdDateTime": graph_time(f.time),
                    "auditLogRecordType": RECORD_TYPE_NAMES.get(rt, "unknownFutureValue"),
                    "operation": f.operation,
                    "organizationId": d.tenant_id,
                    "userType": "regular" if record.get("UserType") == 0 else "system",
                    "userId": record.get("UserId", ""),
                    "auditData": {"@odata.type": "#microsoft.graph.security.auditData", **record},
                    "objectId": record.get("ObjectId", ""),
                    "userPrincipalName": f.user.upn,
                    "clientIp": record.get("ClientIP"),
                    "administrativeUnits": [],
                    "service": f.workload,
                },
            )
