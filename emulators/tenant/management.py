"""Office 365 Management Activity API (``/api/v1.0/{tenant}/activity/feed/...``).

Faithful where documented: subscriptions start/stop/list (AF20024 when already enabled,
AF20022 when none), content listing on ``contentCreated`` with ``startTime <= created <
endTime``, both-or-neither, window <= 24 h and start no older than 7 days (else AF20055,
HTTP 400), the last 24 h when omitted, ``NextPageUri`` paging (AF20031 for a bad token),
blobs by ``contentUri`` (AF20050 unknown, AF20051 expired after 7 days, AF20052 bad id),
``PublisherIdentifier`` accounting, AF429 throttling (HTTP 429, no Retry-After).
Emulator choices: a subscription sees the whole retained history (like one that has
existed for a week); late blobs appear in listings only once their delay has passed.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote, urlencode

import orjson
from cachetools import LRUCache

from emulators.httpd import App, Request, Response
from emulators.tenant import catalog
from emulators.tenant.config import Clock
from emulators.tenant.generator import CONTENT_TYPES, EXPIRY_SECONDS, Blob, Dataset, parse_content_id
from emulators.tenant.guard import Guard, mgmt_error
from emulators.tenant.tokens import MANAGEMENT

MANAGEMENT_AUDIENCES = (
    MANAGEMENT,
    "https://manage-gcc.office.com",
    "https://manage.office365.us",
    "https://manage.protection.apps.mil",
)
WINDOW_MESSAGE = (
    "startTime and endTime must both be specified (or both omitted) and must be less than or equal to 24 hours "
    "apart, with the start time no more than 7 days in the past."
)
_TIME_FORMATS = ("%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S")


class WindowError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_api_time(text: str) -> float:
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1]
    value = re.sub(r"\.\d+$", "", value)
    for fmt in _TIME_FORMATS:
        try:
            return dt.datetime.strptime(value, fmt).replace(tzinfo=dt.UTC).timestamp()
        except ValueError:
            continue
    raise WindowError("AF20002", f"The value '{text}' of parameter startTime/endTime is not a valid datetime.")


def fmt_time(t: float) -> str:
    d = dt.datetime.fromtimestamp(t, dt.UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


class ManagementApi:
    """Routes and subscription state of the Management Activity API."""

    def __init__(
        self, data: Dataset, guard: Guard, clock: Clock, page_size: int = 200, cache_bytes: int = 128 << 20
    ) -> None:
        self.data = data
        self.guard = guard
        self.clock = clock
        self.page_size = max(1, page_size)
        self.subscriptions: dict[str, str] = {}  # content type -> enabled/disabled
        self._lock = threading.Lock()
        # generated blobs, zlib-compressed (about 1/6 of their size), within cache_bytes
        self._blob_cache: LRUCache[tuple[str, int, bool], bytes] = LRUCache(maxsize=max(1, cache_bytes), getsizeof=len)
        self._compressing: set[tuple[str, int, bool]] = set()
        self._compressor = ThreadPoolExecutor(1, thread_name_prefix="blob-cache") if cache_bytes > 0 else None
        self.blobs_served = 0
        self.cache_hits = 0
        self._app: App | None = None

    def install(self, app: App) -> None:
        self._app = app
        root = r"/api/v1\.0/(?P<tenant>[^/]+)/activity/feed"
        app.route("POST", root + r"/subscriptions/start", self.start)
        app.route("POST", root + r"/subscriptions/stop", self.stop)
        app.route("GET", root + r"/subscriptions/list", self.list_subscriptions)
        app.route("GET", root + r"/subscriptions/content", self.list_content)
        app.route("GET", root + r"/subscriptions/notifications", self.notifications)
        app.route("GET", root + r"/audit/(?P<content_id>[^/]+)", self.content)
        app.route("GET", root + r"/resources/dlpSensitiveTypes", self.sensitive_types)

    def _call(self, request: Request, method: str, handler: Any) -> Response:
        assert request.match is not None
        return self.guard.management(request, MANAGEMENT_AUDIENCES, request.match.group("tenant"), method, handler)

    def _content_type(self, request: Request) -> str | Response:
        ct = _ci(request.query, "contenttype")
        if not ct:
            return mgmt_error(400, "AF20001", "A required parameter is missing: contentType.")
        if ct not in CONTENT_TYPES:
            return mgmt_error(400, "AF20020", f"The content type '{ct}' is invalid.")
        return ct

    # ------------------------------------------------------------------ subscriptions
    def start(self, request: Request) -> Response:
        def run(claims: dict[str, Any]) -> Response:
            ct = self._content_type(request)
            if isinstance(ct, Response):
                return ct
            with self._lock:
                if self.subscriptions.get(ct) == "enabled" and not request.body.strip():
                    return mgmt_error(400, "AF20024", "The subscription is already enabled. No property change.")
                self.subscriptions[ct] = "enabled"
            return Response.json({"contentType": ct, "status": "enabled", "webhook": None})

        return self._call(request, "StartSubscription", run)

    def stop(self, request: Request) -> Response:
        def run(claims: dict[str, Any]) -> Response:
            ct = self._content_type(request)
            if isinstance(ct, Response):
                return ct
            with self._lock:
                if ct not in self.subscriptions:
                    return mgmt_error(400, "AF20022", f"No subscription found for the specified content type {ct}.")
                self.subscriptions[ct] = "disabled"
            return Response.empty(200)

        return self._call(request, "StopSubscription", run)

    def list_subscriptions(self, request: Request) -> Response:
        def run(claims: dict[str, Any]) -> Response:
            with self._lock:
                items = [{"contentType": ct, "status": st, "webhook": None} for ct, st in self.subscriptions.items()]
            return Response.json(items)

        return self._call(request, "ListSubscriptions", run)

    def _require_subscription(self, ct: str) -> Response | None:
        with self._lock:
            status = self.subscriptions.get(ct)
        if status is None:
            return mgmt_error(400, "AF20022", f"No subscription found for the specified content type {ct}.")
        if status != "enabled":
            return mgmt_error(400, "AF20023", f"The subscription for the content type {ct} is disabled.")
        return None

    # ------------------------------------------------------------------ content listing
    def _window(self, request: Request) -> tuple[float, float]:
        start_text, end_text = _ci(request.query, "starttime"), _ci(request.query, "endtime")
        now = self.clock.time()
        if not start_text and not end_text:
            return now - 86400, now
        if not start_text or not end_text:
            raise WindowError("AF20055", WINDOW_MESSAGE)
        start, end = parse_api_time(start_text), parse_api_time(end_text)
        if end <= start or end - start > 86400 or start < now - EXPIRY_SECONDS:
            raise WindowError("AF20055", WINDOW_MESSAGE)
        return start, end

    def visible_blobs(self, ct: str, start: float, end: float, now: float) -> Iterator[Blob]:
        """Blobs a listing of ``[start, end)`` shows at ``now``: visible, unexpired, not empty."""
        for blob in self.data.blobs_created_between(ct, start, end):
            if blob.visible_at > now or blob.created < now - EXPIRY_SECONDS:
                continue
            if ct != "DLP.All" and not self.data.blob_indices(blob):
                continue
            yield blob

    def list_content(self, request: Request) -> Response:
        def run(claims: dict[str, Any]) -> Response:
            ct = self._content_type(request)
            if isinstance(ct, Response):
                return ct
            missing = self._require_subscription(ct)
            if missing is not None:
                return missing
            try:
                start, end = self._window(request)
            except WindowError as exc:
                return mgmt_error(400, exc.code, str(exc))
            next_page = _ci(request.query, "nextpage")
            first_k = -1
            if next_page:
                m = re.fullmatch(r"(\d{14})(\d{9})", next_page)
                if not m:
                    return mgmt_error(400, "AF20031", "Invalid nextPage Input: " + next_page)
                first_k = int(m.group(2))
            now = self.clock.time()
            assert request.match is not None and self._app is not None
            base = f"{self._app.base_url}/api/v1.0/{request.match.group('tenant')}/activity/feed/audit/"
            items: list[dict[str, Any]] = []
            headers: dict[str, str] = {}
            for blob in self.visible_blobs(ct, start, end, now):
                if blob.index < first_k:
                    continue
                if len(items) == self.page_size:
                    params = {k: v for k, v in request.query.items() if k.lower() != "nextpage"}
                    if not _ci(request.query, "starttime"):
                        params["startTime"] = fmt_time(start)[:19]
                        params["endTime"] = fmt_time(end)[:19]
                    stamp = dt.datetime.fromtimestamp(blob.created, dt.UTC).strftime("%Y%m%d%H%M%S")
                    params["nextPage"] = f"{stamp}{blob.index:09d}"
                    headers["NextPageUri"] = f"{self._app.base_url}{request.path}?" + urlencode(
                        params, quote_via=quote, safe=":"
                    )
                    break
                items.append(
                    {
                        "contentType": ct,
                        "contentId": blob.content_id,
                        "contentUri": base + blob.content_id,
                        "contentCreated": fmt_time(blob.created),
                        "contentExpiration": fmt_time(blob.expires),
                    }
                )
            return Response.json(items, headers=headers)

        return self._call(request, "ListContent", run)

    def notifications(self, request: Request) -> Response:
        def run(claims: dict[str, Any]) -> Response:
            ct = self._content_type(request)
            if isinstance(ct, Response):
                return ct
            missing = self._require_subscription(ct)
            return missing if missing is not None else Response.json([])

        return self._call(request, "ListNotifications", run)

    # ------------------------------------------------------------------ content blobs
    def content(self, request: Request) -> Response:
        def run(claims: dict[str, Any]) -> Response:
            assert request.match is not None
            content_id = request.match.group("content_id")
            parsed = parse_content_id(content_id)
            if parsed is None:
                return mgmt_error(400, "AF20052", f"The content ID '{content_id}' in the URL is invalid.")
            ct, k = parsed
            blob = self.data.blob(ct, k)
            now = self.clock.time()
            if blob is None or blob.content_id != content_id or blob.visible_at > now:
                return mgmt_error(400, "AF20050", f"The specified content ({content_id}) does not exist.")
            if blob.created < now - EXPIRY_SECONDS:
                return mgmt_error(400, "AF20051", f"The specified content ({content_id}) has expired.")
            detections = ct == "DLP.All" and "ActivityFeed.ReadDlp" in claims.get("roles", [])
            return Response(200, self.blob_bytes(blob, detections), {"Content-Type": "application/json; charset=utf-8"})

        return self._call(request, "GetBlob", run)

    def blob_bytes(self, blob: Blob, detections: bool) -> bytes:
        """The blob's JSON; generated on first use, then served from the compressed cache.

        Compression runs in a background thread (zlib releases the GIL), off the request path.
        """
        key = (blob.content_type, blob.index, detections)
        with self._lock:
            cached = self._blob_cache.get(key)
            self.blobs_served += 1
        if cached is not None:
            with self._lock:
                self.cache_hits += 1
            return zlib.decompress(cached)
        body = orjson.dumps([self.data.record(i, detections) for i in self.data.blob_indices(blob)])
        if self._compressor is not None:
            with self._lock:
                if key in self._compressing:
                    return body
                self._compressing.add(key)
            self._compressor.submit(self._store, key, body)
        return body

    def _store(self, key: tuple[str, int, bool], body: bytes) -> None:
        packed = zlib.compress(body, 1)
        with self._lock:
            self._compressing.discard(key)
            if len(packed) <= self._blob_cache.maxsize:
                self._blob_cache[key] = packed

    def sensitive_types(self, request: Request) -> Response:
        def run(claims: dict[str, Any]) -> Response:
            language = request.header("accept-language")
            if "," in language:
                return mgmt_error(400, "AF20053", "More than one language was specified in Accept-Language.")
            return Response.json([{"id": s.id, "name": s.name} for s in catalog.SITS])

        return self._call(request, "GetDlpSensitiveTypes", run)


def _ci(query: dict[str, str], name: str) -> str:
    for k, v in query.items():
        if k.lower() == name:
            return v
    return ""
