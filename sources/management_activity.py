"""Source ``management_activity``: DLP audit records from the Office 365 Management Activity API.

How it reads (see ``docs/sources.md``):

* ``connect`` starts the subscription of every configured content type that is not enabled
  (``AF20024`` "already enabled" is success) and loads SIT names from
  ``resources/dlpSensitiveTypes``.
* ``poll`` lists content per content type in windows of at most ``window_hours`` (<= 24 h),
  never starting more than 7 days back by the *server's* clock (``Date`` header); a cursor or
  ``start_hours`` older than that is clamped with a warning and the lost span is recorded in
  the ledger as an ``expired`` gap -- never an AF20055 loop. Each poll re-lists the last
  ``relist_hours`` as well, because a blob can become listable after later ones.
* Every listed content id is checked against the ledger (``SourceContext.ledger_status``):
  blobs already fetched or reported expired are skipped, so late and out-of-order blobs are
  neither missed nor read twice. Listing follows ``NextPageUri`` (or ``NextPageUrl``).
* Blobs are downloaded by a pool of ``concurrency`` threads with at most ``in_flight`` blobs
  downloaded ahead, and yielded one blob at a time in chunks of ``batch_records``; the ledger
  unit of a blob is committed with its last chunk. Memory is bounded by ``in_flight`` blobs,
  never a window.
* A blob whose ``contentExpiration`` has passed (or that answers ``AF20051``/``AF20050``) is
  reported loudly: ledger status ``expired``, an error log line, counter ``blobs_expired``.
* A download that still fails after retries stops the window: the cursor never moves past
  it, and the next poll retries it (the ledger skips what was already read).
* ``PublisherIdentifier`` is sent on every call (listing, downloads, subscriptions).

Cursor: ``{"content": {"DLP.All": {"end": ISO}, ...}}`` -- the end of the last completed
listing window per content type.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict, deque
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from forwarder.api import ApiClient, RequestBudget, api_error
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
from sources.normalize import KIND_O365_AUDIT
from sources.normalize.management_activity import normalize_audit_record

CONTENT_TYPES = ("Audit.AzureActiveDirectory", "Audit.Exchange", "Audit.SharePoint", "Audit.General", "DLP.All")
#: RecordTypes kept from content types other than DLP.All (DLP, endpoint DLP, scanners).
DLP_RECORD_TYPES = [11, 13, 33, 63, 99, 100, 107]
RETENTION = dt.timedelta(days=7)
#: How far inside the 7-day limit listing starts, against clock error and request latency.
RETENTION_MARGIN = dt.timedelta(minutes=15)
READ_PERMISSION = "ActivityFeed.Read"
DLP_PERMISSION = "ActivityFeed.ReadDlp"
_DONE = ("fetched", "expired")
_GONE_CODES = ("AF20050", "AF20051", "AF20052")
_WINDOW_CODES = ("AF20030", "AF20055")
_READ = httpx.ByteStream(b"")  # the stream of a response whose body was read (see _download)


@dataclass
class ManagementActivitySettings:
    """``[[sources]] type = "management_activity"``."""

    auth: AuthSettings = setting(doc="the app registration ([sources.auth])")
    http: HttpSettings = field(default_factory=HttpSettings)
    management_url: str = setting(
        "", doc="override of the Management API root (default: the cloud's)", url=("https", "http")
    )
    publisher_id: str = setting("", doc="PublisherIdentifier sent on every call (default: the tenant id)")
    content_types: list[str] = setting(
        default_factory=lambda: ["DLP.All"],
        doc="content types: DLP.All, Audit.General (endpoint DLP), ...",
        choices=CONTENT_TYPES,
    )
    record_types: list[int] = setting(
        default_factory=lambda: list(DLP_RECORD_TYPES),
        doc="RecordTypes kept from content types other than DLP.All (empty: all)",
    )
    start_hours: float = setting(24.0, doc="how far back the first run reads (at most 7 days)", minimum=0)
    window_hours: float = setting(23.0, doc="listing window (at most 24 h)", minimum=0.01, maximum=24)
    relist_hours: float = setting(6.0, doc="hours behind the cursor re-listed each poll for late blobs", minimum=0)
    concurrency: int = setting(4, doc="parallel blob downloads", minimum=1, maximum=32)
    in_flight: int = setting(6, doc="most blobs downloaded ahead of the pipeline (kept as bytes)", minimum=1)
    batch_records: int = setting(100, doc="most records per batch handed to the pipeline", minimum=1)
    requests_per_minute: float = setting(1800.0, doc="request budget of this instance (0: unlimited)", minimum=0)
    resolve_sit_names: bool = setting(True, doc="load SIT names from resources/dlpSensitiveTypes")
    language: str = setting("en-US", doc="Accept-Language for SIT names (one language)")
    max_retry_wait: float = setting(120.0, doc="seconds spent retrying one request before giving up", minimum=0)


class ManagementActivitySource(ApiSource):
    """See the module docstring."""

    settings_class = ManagementActivitySettings
    settings: ManagementActivitySettings

    def __init__(self, name: str, settings: ManagementActivitySettings, context: SourceContext, **inject: Any) -> None:
        super().__init__(name, settings, context, **inject)
        self._subscribed: set[str] = set()
        self._done: OrderedDict[str, None] = OrderedDict()  # content ids read by this process
        self._done_lock = threading.Lock()
        for ct in settings.content_types:
            if ct not in CONTENT_TYPES:
                raise FatalError(f"{name}: unknown content type {ct!r} (expected one of {', '.join(CONTENT_TYPES)})")

    # ------------------------------------------------------------------ lifecycle

    @property
    def publisher_id(self) -> str:
        return self.settings.publisher_id or self.settings.auth.tenant_id

    def _api(self) -> ApiClient:
        if self.client is not None:
            return self.client
        s = self.settings
        the_cloud = cloud(s.auth)
        root = (s.management_url or the_cloud.management).rstrip("/")
        return self._build_client(
            f"{root}/api/v1.0/{s.auth.tenant_id}/activity/feed",
            the_cloud.management,
            RequestBudget(s.requests_per_minute, burst=max(10, s.concurrency * 2)),
            params={"PublisherIdentifier": self.publisher_id},
            what=f"management_activity {self.name}",
        )

    def connect(self) -> None:
        self.ensure_subscriptions()
        if self.settings.resolve_sit_names and not self.sit_names:
            self._load_sit_names()

    def ensure_subscriptions(self) -> dict[str, str]:
        """Start every configured content type's subscription that is not enabled.

        Returns content type -> what happened (``enabled``, ``started``). Raises FatalError
        naming the permission on 401/403 and naming the other publisher's subscription on a
        conflict.
        """
        api = self._api()
        what = f"{self.name}: list subscriptions"
        response = api.request("GET", "subscriptions/list", what=what)
        api.raise_for(response, what, READ_PERMISSION)
        listed = orjson.loads(response.content or b"[]")
        enabled = {
            str(s.get("contentType", "")).lower()
            for s in (listed if isinstance(listed, list) else [])
            if isinstance(s, dict) and str(s.get("status", "")).lower() == "enabled"
        }
        result = {}
        for ct in self.settings.content_types:
            if ct.lower() in enabled:
                result[ct] = "enabled"
            else:
                self._start(ct)
                result[ct] = "started"
            self._subscribed.add(ct)
        return result

    def _start(self, content_type: str) -> None:
        api = self._api()
        what = f"{self.name}: start subscription {content_type}"
        response = api.request("POST", "subscriptions/start", params={"contentType": content_type}, what=what)
        if response.status_code < 300:
            self.log.info("%s: started the %s subscription", self.name, content_type)
            return
        code, message = api_error(response)
        if code == "AF20024" or "already enabled" in message.lower():
            return
        if "publisher" in message.lower() and response.status_code in (400, 403, 409):
            raise FatalError(
                f"{what}: the subscription belongs to another publisher ({code}: {message}); "
                f"set publisher_id to that publisher's GUID or stop the other collector"
            )
        api.raise_for(response, what, READ_PERMISSION)

    def _load_sit_names(self) -> None:
        api = self._api()
        try:
            response = api.request(
                "GET",
                "resources/dlpSensitiveTypes",
                headers={"Accept-Language": self.settings.language},
                what=f"{self.name}: SIT names",
            )
            if response.status_code >= 300:
                self.log.warning("%s: could not load SIT names (HTTP %s)", self.name, response.status_code)
                return
            items = orjson.loads(response.content)
        except (RetriableError, orjson.JSONDecodeError) as exc:
            self.log.warning("%s: could not load SIT names: %s", self.name, exc)
            return
        if isinstance(items, list):
            for item in items:
                if isinstance(item, dict) and item.get("id") and item.get("name"):
                    self.sit_names[str(item["id"])] = str(item["name"])

    def health(self) -> Health:
        health = Health()
        api = self._api()
        try:
            token = api.tokens.token(api.scope)
        except (FatalError, RetriableError) as exc:
            return health.add("token", False, str(exc))
        roles = token_roles(token)
        health.add("token", True, f"roles: {', '.join(roles) or '(none in token)'}")
        if roles and READ_PERMISSION not in roles:
            health.add("permission", False, f"the token lacks {READ_PERMISSION} (Office 365 Management APIs)")
        if roles and DLP_PERMISSION not in roles and "DLP.All" in self.settings.content_types:
            health.add(
                "permission_dlp", False, f"the token lacks {DLP_PERMISSION}: DLP records arrive without sensitive data"
            )
        try:
            result = self.ensure_subscriptions()
            health.add("subscriptions", True, ", ".join(f"{k}: {v}" for k, v in result.items()))
        except (FatalError, RetriableError) as exc:
            health.add("subscriptions", False, str(exc))
            return health
        now = api.now()
        for ct in self.settings.content_types:
            try:
                pages = self._list(ct, now - dt.timedelta(hours=1), now)
                next(pages, None)
                pages.close()
                health.add(f"content {ct}", True, "listing works")
            except (FatalError, RetriableError) as exc:
                health.add(f"content {ct}", False, str(exc))
        if abs(api.skew) >= 60:
            health.add("clock", True, f"local clock is {api.skew:+.0f}s off the server; corrected")
        return health

    # ------------------------------------------------------------------ reading

    def poll(self, cursor: dict[str, Any] | None) -> Iterator[SourceBatch]:
        api = self._api()
        # Once per poll: (re)start subscriptions that were disabled meanwhile, and learn the
        # server's clock from the answer's Date header before computing any window.
        self.ensure_subscriptions()
        if self.settings.resolve_sit_names and not self.sit_names:
            self._load_sit_names()
        positions = _positions(cursor)
        failed: RetriableError | None = None
        for ct in self.settings.content_types:
            now = api.now()
            floor = now - RETENTION + RETENTION_MARGIN
            end = parse_cursor_time(positions.get(ct, {}).get("end"))
            if end is None:
                wanted = now - dt.timedelta(hours=self.settings.start_hours)
                if wanted < floor:
                    self.log.warning(
                        "%s: start_hours=%s reaches past the Management API's 7 days; reading from %s "
                        "(use the audit_search source to backfill older records)",
                        self.name,
                        self.settings.start_hours,
                        iso(floor),
                    )
                    wanted = floor
                end = wanted
                start = wanted
            else:
                start = end - dt.timedelta(hours=self.settings.relist_hours)
            units = self._expired_failures(ct, positions, now)
            if start < floor and positions.get(ct, {}).get("end"):
                # Part of what should be (re-)listed is past the API's 7 days: blobs published
                # there and not read yet (late ones included) cannot be recovered. Say so.
                units.append(
                    WorkUnit(
                        id=f"gap:{ct}:{iso(start)}",
                        kind="o365_content_gap",
                        status="expired",
                        created=iso(start),
                        expires=iso(floor),
                        detail=f"content published {iso(start)}..{iso(floor)} and not read before is past the "
                        f"Management API's 7 days and lost (cursor was {iso(end)})",
                    )
                )
                self.log.error(
                    "%s: %s cursor %s is too old to re-list (the Management API keeps 7 days); unread content "
                    "published %s..%s is lost and recorded as a gap in the completeness report",
                    self.name,
                    ct,
                    iso(end),
                    iso(start),
                    iso(floor),
                )
                self.context.count("content_gaps")
            end = max(end, floor)
            start = max(start, floor)
            if units:
                positions.setdefault(ct, {})["end"] = iso(end)
                yield SourceBatch(cursor=_dump(positions), units=units)
            try:
                yield from self._read(ct, start, now, positions, commit_from=end, use_ledger=True)
            except RetriableError as exc:
                # One content type's trouble must not starve the others: read them, then report.
                failed = failed or exc
        if failed is not None:
            raise failed

    def _expired_failures(self, ct: str, positions: dict[str, dict[str, Any]], now: dt.datetime) -> list[WorkUnit]:
        """Blobs that failed earlier and expired before a retry could read them: report them."""
        pending = positions.get(ct, {}).get("failed") or {}
        units = []
        for unit_id, info in list(pending.items()):
            expires = parse_cursor_time(str(info.get("expires", "")))
            if expires is not None and expires <= now:
                entry = {
                    "contentId": unit_id.split(":", 1)[-1],
                    "contentCreated": info.get("created", ""),
                    "contentExpiration": info.get("expires", ""),
                }
                units.append(self._expired(ct, unit_id, entry, "expired after failed downloads, before a retry"))
                del pending[unit_id]
        return units

    def backfill(self, since: dt.datetime, until: dt.datetime, cursor: dict[str, Any] | None) -> Iterator[SourceBatch]:
        api = self._api()
        self.ensure_subscriptions()
        now = api.now()
        floor = now - RETENTION + RETENTION_MARGIN
        until = min(until, now)
        if until <= floor:
            raise NotSupported(
                f"the Management Activity API only keeps the last 7 days of content (from {iso(floor)}); "
                f"use the audit_search source (Graph audit log queries, public cloud) for older ranges"
            )
        if since < floor:
            self.log.warning(
                "%s: backfill start %s is past the Management API's 7 days; starting at %s "
                "(use the audit_search source for the older part)",
                self.name,
                iso(since),
                iso(floor),
            )
            since = floor
        positions = _positions(cursor)
        size = dt.timedelta(hours=self.settings.window_hours)
        totals = {ct: count_windows(since, until, size) for ct in self.settings.content_types}
        done_before = 0
        for ct in self.settings.content_types:
            start = parse_cursor_time(positions.get(ct, {}).get("end")) or since
            start = max(start, floor, since)
            skipped = count_windows(since, start, size)
            yield from self._read(
                ct,
                start,
                until,
                positions,
                commit_from=start,
                use_ledger=False,
                progress_base=(done_before + skipped, sum(totals.values())),
            )
            done_before += totals[ct]

    # ------------------------------------------------------------------ internals

    def _read(
        self,
        ct: str,
        start: dt.datetime,
        end: dt.datetime,
        positions: dict[str, dict[str, Any]],
        *,
        commit_from: dt.datetime,
        use_ledger: bool,
        progress_base: tuple[int, int] | None = None,
    ) -> Iterator[SourceBatch]:
        """List ``[start, end)`` in windows, download new blobs, commit each window end past ``commit_from``."""
        size = dt.timedelta(hours=self.settings.window_hours)
        done, total = progress_base or (0, count_windows(start, end, size))
        tracker = BackfillProgress(total, done)
        for a, b in windows(start, end, size):
            failures: list[tuple[str, dict[str, Any], str]] = []
            pending = positions.setdefault(ct, {}).setdefault("failed", {})
            for entries in self._list(ct, a, b):
                for batch in self._fetch(ct, entries, use_ledger, failures, pending):
                    if batch.records:
                        tracker.add(len(batch.records))
                        batch.progress = tracker.info(done, content_type=ct)
                    yield batch
            done += 1
            if failures:
                # Remember the failed blobs (bounded) so that one expiring before it could be
                # read is still reported; the window end itself is not committed.
                for unit_id, entry, _ in failures:
                    if len(pending) < 10_000:
                        pending[unit_id] = {
                            "created": str(entry.get("contentCreated", "")),
                            "expires": str(entry.get("contentExpiration", "")),
                        }
                positions[ct].setdefault("end", iso(commit_from))
                yield SourceBatch(cursor=_dump(positions))
                raise RetriableError(
                    f"{self.name}: {len(failures)} {ct} blob(s) could not be downloaded ({failures[0][2]}); "
                    f"the cursor stays before them and they are retried on the next poll"
                )
            progress = tracker.info(done, content_type=ct, window_end=iso(b))
            if b > commit_from:
                positions.setdefault(ct, {})["end"] = iso(b)
                yield SourceBatch(cursor=_dump(positions), progress=progress)
            else:
                yield SourceBatch(cursor=None, progress=progress)

    def _list(self, ct: str, a: dt.datetime, b: dt.datetime) -> Generator[list[dict[str, Any]], None, None]:
        """Yield the content entries of ``[a, b)`` page by page, following NextPageUri."""
        api = self._api()
        if _api_time(b) <= _api_time(a):
            # The API counts whole seconds: a window inside one second (the sliver a range of
            # relative times leaves at its end) would read as [S, S) and fail with AF20055.
            b = a.replace(microsecond=0) + dt.timedelta(seconds=1)
        params: dict[str, str] | None = {"contentType": ct, "startTime": _api_time(a), "endTime": _api_time(b)}
        url = "subscriptions/content"
        restarted = False
        clamped = 0
        while url:
            what = f"{self.name}: list {ct} {_api_time(a)}..{_api_time(b)}"
            response = api.request("GET", url, params=params, what=what)
            if response.status_code >= 400:
                code, message = api_error(response)
                if code in ("AF20022", "AF20023") and not restarted:
                    self.log.warning("%s: %s subscription %s (%s); starting it", self.name, ct, code, message)
                    self._start(ct)
                    restarted = True
                    continue
                if code in _WINDOW_CODES and clamped < 2:
                    # The service thinks the window is too old or too long: move the start inside
                    # its limit by its own clock, once or twice, and never loop.
                    clamped += 1
                    floor = api.now() - RETENTION + RETENTION_MARGIN * (1 + clamped)
                    self.log.warning("%s: %s for %s; clamping the window start to %s", what, code, ct, iso(floor))
                    if floor >= b:
                        return
                    a = max(a, floor)
                    params = {"contentType": ct, "startTime": _api_time(a), "endTime": _api_time(b)}
                    url = "subscriptions/content"
                    continue
                if code == "AF20031":
                    self.log.warning("%s: next page token rejected (AF20031); listing the window again", what)
                    params = {"contentType": ct, "startTime": _api_time(a), "endTime": _api_time(b)}
                    url = "subscriptions/content"
                    if restarted:
                        raise RetriableError(f"{what}: AF20031 twice")
                    restarted = True
                    continue
                api.raise_for(response, what, READ_PERMISSION)
            body = orjson.loads(response.content or b"[]")
            entries = [e for e in body if isinstance(e, dict)] if isinstance(body, list) else []
            if entries:
                yield entries
            next_url = response.headers.get("NextPageUri") or response.headers.get("NextPageUrl")
            url = next_url or ""
            params = None

    def _fetch(
        self,
        ct: str,
        entries: list[dict[str, Any]],
        use_ledger: bool,
        failures: list[tuple[str, dict[str, Any], str]],
        failed_before: dict[str, Any],
    ) -> Iterator[SourceBatch]:
        """Download the new blobs among ``entries`` concurrently; yield their records blob by blob."""
        api = self._api()
        unit_ids = [_unit_id(ct, e) for e in entries]
        known = self.context.ledger_status(unit_ids) if use_ledger else {}
        todo: list[tuple[str, dict[str, Any]]] = []
        expired_units: list[WorkUnit] = []
        now = api.now()
        for unit_id, entry in zip(unit_ids, entries, strict=True):
            if use_ledger and (known.get(unit_id) in _DONE or self._was_done(unit_id)):
                self.context.count("blobs_skipped_known")
                continue
            expires = parse_cursor_time(str(entry.get("contentExpiration") or ""))
            if expires is not None and expires <= now:
                expired_units.append(self._expired(ct, unit_id, entry, "contentExpiration passed before it was read"))
                continue
            todo.append((unit_id, entry))
        if expired_units:
            for u in expired_units:
                failed_before.pop(u.id, None)
            yield SourceBatch(units=expired_units)
            for u in expired_units:
                self._mark_done(u.id)
        if not todo:
            return
        # Record the blobs as listed first: the completeness report then knows of a blob that
        # is not read yet and warns before it expires at the source.
        yield SourceBatch(
            units=[
                WorkUnit(
                    id=unit_id,
                    kind=f"o365_blob:{ct}",
                    status="listed",
                    created=str(entry.get("contentCreated", "")),
                    expires=str(entry.get("contentExpiration", "")),
                )
                for unit_id, entry in todo
                if known.get(unit_id) is None
            ]
        )
        pool = ThreadPoolExecutor(
            max_workers=min(self.settings.concurrency, len(todo)), thread_name_prefix="dlpfwd-o365"
        )
        pending: deque[tuple[str, dict[str, Any], Future[tuple[str, Any]]]] = deque()
        queue = iter(todo)
        try:
            for unit_id, entry in queue:
                pending.append((unit_id, entry, pool.submit(self._download, ct, entry)))
                if len(pending) >= self.settings.in_flight:
                    break
            while pending:
                unit_id, entry, future = pending.popleft()
                nxt = next(queue, None)
                if nxt is not None:
                    pending.append((nxt[0], nxt[1], pool.submit(self._download, ct, nxt[1])))
                try:
                    outcome, payload = future.result()
                except (RetriableError, FatalError) as exc:
                    failures.append((unit_id, entry, str(exc)))
                    self.context.count("blob_failures")
                    self.log.warning("%s: %s blob %s failed: %s", self.name, ct, entry.get("contentId"), exc)
                    yield SourceBatch(
                        units=[
                            WorkUnit(
                                id=unit_id,
                                kind=f"o365_blob:{ct}",
                                status="failed",
                                created=str(entry.get("contentCreated", "")),
                                expires=str(entry.get("contentExpiration", "")),
                                detail=str(exc)[:300],
                            )
                        ]
                    )
                    continue
                failed_before.pop(unit_id, None)
                if outcome == "gone":
                    yield SourceBatch(units=[self._expired(ct, unit_id, entry, str(payload))])
                    self._mark_done(unit_id)
                    continue
                yield from self._batches(ct, unit_id, entry, payload)
                self._mark_done(unit_id)
        finally:
            for _, _, future in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)

    def _download(self, ct: str, entry: dict[str, Any]) -> tuple[str, Any]:
        """Worker thread: GET one blob; ("ok", parsed-or-bytes) or ("gone", why). Raises on failure."""
        api = self._api()
        uri = str(entry.get("contentUri") or "")
        content_id = str(entry.get("contentId") or "")
        if not uri:
            uri = f"audit/{content_id}"
        what = f"{self.name}: download {ct} blob {content_id}"
        response = api.request("GET", uri, what=what)
        if response.status_code >= 400:
            code, message = api_error(response)
            if code in _GONE_CODES or response.status_code in (404, 410):
                return "gone", f"{code or response.status_code}: {message}"
            api.raise_for(response, what, READ_PERMISSION)
        # Bytes, not parsed records: a blob in flight costs its size, not ten times that as
        # Python objects. The consumer parses one blob at a time.
        content = response.content
        # httpx keeps a response in a reference cycle (response.stream -> response) that only
        # the cyclic garbage collector frees, and the blob's bytes with it, possibly long after
        # they were used. The stream is read and closed: detach it so the bytes go with the
        # last reference to them.
        response.stream = _READ
        return "ok", content

    def _batches(self, ct: str, unit_id: str, entry: dict[str, Any], payload: Any) -> Iterator[SourceBatch]:
        keep = set(self.settings.record_types) if ct != "DLP.All" and self.settings.record_types else None
        unit = WorkUnit(
            id=unit_id,
            kind=f"o365_blob:{ct}",
            status="fetched",
            created=str(entry.get("contentCreated", "")),
            expires=str(entry.get("contentExpiration", "")),
        )
        if isinstance(payload, bytes | bytearray):
            try:
                payload = orjson.loads(payload)
            except orjson.JSONDecodeError:
                pass
        if isinstance(payload, bytes | bytearray) or not isinstance(payload, list):
            raw = payload if isinstance(payload, bytes | bytearray) else orjson.dumps(payload)
            unit.listed = unit.fetched = 1
            unit.detail = "blob is not a JSON array; quarantined whole"
            self.log.error("%s: %s blob %s is not a JSON array", self.name, ct, entry.get("contentId"))
            yield SourceBatch(
                records=[RawRecord(KIND_O365_AUDIT, None, bytes(raw[: 4 * 1024 * 1024]), unit_id)], units=[unit]
            )
            return
        unit.listed = len(payload)
        records: list[RawRecord] = []
        size = self.settings.batch_records
        for item in payload:
            if not isinstance(item, dict):
                records.append(RawRecord(KIND_O365_AUDIT, None, orjson.dumps(item), unit_id))
            elif keep is not None and _record_type(item) not in keep:
                continue
            else:
                records.append(RawRecord(KIND_O365_AUDIT, item, None, unit_id))
            unit.fetched += 1
            if len(records) >= size:
                self.context.count("records_read", len(records))
                yield SourceBatch(records=records)
                records = []
        unit.parsed = unit.fetched
        self.context.count("records_read", len(records))
        self.context.count("blobs_fetched")
        yield SourceBatch(records=records, units=[unit])

    def _expired(self, ct: str, unit_id: str, entry: dict[str, Any], why: str) -> WorkUnit:
        self.context.count("blobs_expired")
        self.log.error(
            "%s: %s blob %s (published %s, expired %s) could not be read: %s -- its records are lost; "
            "recorded in the completeness report",
            self.name,
            ct,
            entry.get("contentId"),
            entry.get("contentCreated"),
            entry.get("contentExpiration"),
            why,
        )
        return WorkUnit(
            id=unit_id,
            kind=f"o365_blob:{ct}",
            status="expired",
            created=str(entry.get("contentCreated", "")),
            expires=str(entry.get("contentExpiration", "")),
            detail=why[:300],
        )

    def _was_done(self, unit_id: str) -> bool:
        with self._done_lock:
            return unit_id in self._done

    def _mark_done(self, unit_id: str) -> None:
        with self._done_lock:
            self._done[unit_id] = None
            while len(self._done) > 200_000:
                self._done.popitem(last=False)


def _unit_id(ct: str, entry: dict[str, Any]) -> str:
    return f"{ct}:{entry.get('contentId', '')}"


def _record_type(item: dict[str, Any]) -> int | None:
    value = item.get("RecordType")
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _api_time(t: dt.datetime) -> str:
    """The Management API's time format (``YYYY-MM-DDTHH:MM:SS``, UTC, no zone)."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _positions(cursor: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    content = (cursor or {}).get("content")
    if not isinstance(content, dict):
        return {}
    return {str(k): dict(v) for k, v in content.items() if isinstance(v, dict)}


def _dump(positions: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"content": {k: dict(v) for k, v in positions.items()}}


@hookimpl
def dlpfwd_register_sources(register: Any) -> None:
    register("management_activity", ManagementActivitySource)


@hookimpl
def dlpfwd_register_normalizers(register: Any) -> None:
    register(KIND_O365_AUDIT, normalize_audit_record)
