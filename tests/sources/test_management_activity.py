"""management_activity source against a scripted Management Activity API."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import httpx
import orjson
import pytest

from forwarder.errors import FatalError, NotSupported, RetriableError
from sources.management_activity import ManagementActivitySettings, ManagementActivitySource
from tests.sources import records as R
from tests.sources.fakes import (
    MANAGE,
    PUBLISHER,
    TENANT,
    Context,
    FakeTokens,
    Recorder,
    auth,
    drain,
    error,
    http_date,
    json_response,
    q,
)

ROOT = f"/api/v1.0/{TENANT}/activity/feed"


def parse(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s).replace(tzinfo=dt.UTC)


class FakeManagementApi:
    """Subscriptions, content listing (paged by ``page_size`` with NextPageUri), blobs.

    ``blobs`` are (contentId, created, records-or-bytes); a blob is listed when its created
    time is in [startTime, endTime). Rejects windows longer than 24 h or older than 7 days with
    AF20055, as the service does.
    """

    def __init__(self, now: dt.datetime, page_size: int = 2) -> None:
        self.now = now
        self.page_size = page_size
        self.subscriptions: dict[str, str] = {}
        self.blobs: list[tuple[str, dt.datetime, Any]] = []
        self.expired: set[str] = set()
        self.failing: dict[str, int] = {}  # contentId -> remaining failures (-1: forever)
        self.downloads: list[str] = []
        self.af20055 = 0
        self.start_calls = 0

    def add(self, content_id: str, created: dt.datetime, records: Any) -> None:
        self.blobs.append((content_id, created, records))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        params = q(request)
        headers = {"Date": http_date(self.now)}
        assert params.get("PublisherIdentifier") == PUBLISHER, f"no PublisherIdentifier on {request.url}"
        assert request.headers["Authorization"].startswith("Bearer ")
        if path == f"{ROOT}/subscriptions/list":
            return json_response(
                [{"contentType": k, "status": v, "webhook": None} for k, v in self.subscriptions.items()],
                headers=headers,
            )
        if path == f"{ROOT}/subscriptions/start":
            self.start_calls += 1
            ct = params["contentType"]
            if self.subscriptions.get(ct) == "enabled":
                return error(400, "AF20024", "The subscription is already enabled. No property change.", headers)
            self.subscriptions[ct] = "enabled"
            return json_response({"contentType": ct, "status": "enabled", "webhook": None}, headers=headers)
        if path == f"{ROOT}/subscriptions/content":
            ct = params["contentType"]
            if self.subscriptions.get(ct) != "enabled":
                return error(400, "AF20022", "No subscription found for the specified content type", headers)
            start, end = parse(params["startTime"]), parse(params["endTime"])
            if end - start > dt.timedelta(hours=24) or start < self.now - dt.timedelta(days=7) or end <= start:
                self.af20055 += 1
                return error(400, "AF20055", "Start time and end time must both be specified...", headers)
            listed = [b for b in self.blobs if start <= b[1] < end]
            offset = int(params.get("nextPage", "0"))
            page = listed[offset : offset + self.page_size]
            if offset + self.page_size < len(listed):
                nxt = httpx.URL(str(request.url)).copy_set_param("nextPage", str(offset + self.page_size))
                headers["NextPageUri"] = str(nxt)
            body = [
                {
                    "contentType": ct,
                    "contentId": cid,
                    "contentUri": f"{MANAGE}{ROOT}/audit/{cid}",
                    "contentCreated": created.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                    "contentExpiration": (
                        (self.now - dt.timedelta(minutes=1)) if cid in self.expired else created + dt.timedelta(days=7)
                    ).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                }
                for cid, created, _ in page
            ]
            return json_response(body, headers=headers)
        if path.startswith(f"{ROOT}/audit/"):
            cid = path.rsplit("/", 1)[1]
            self.downloads.append(cid)
            remaining = self.failing.get(cid, 0)
            if remaining:
                self.failing[cid] = remaining - 1 if remaining > 0 else -1
                return error(500, "AF50000", "An internal error occurred.", headers)
            for bid, _, payload in self.blobs:
                if bid == cid:
                    content = payload if isinstance(payload, bytes) else orjson.dumps(payload)
                    return httpx.Response(200, content=content, headers=headers)
            return error(400, "AF20050", "The specified content does not exist.", headers)
        if path == f"{ROOT}/resources/dlpSensitiveTypes":
            return json_response([{"id": R.CCN, "name": "Credit Card Number"}], headers=headers)
        return error(404, "NotFound")


def make(api, ctx=None, recorder=None, **settings) -> tuple[ManagementActivitySource, Context, FakeTokens, list]:
    ctx = ctx or Context()
    tokens = FakeTokens()
    sleeps: list[float] = []
    s = ManagementActivitySettings(
        auth=auth(), management_url=MANAGE, publisher_id=PUBLISHER, concurrency=3, in_flight=2, **settings
    )
    handler = recorder or Recorder(api)
    src = ManagementActivitySource(
        "o365", s, ctx, transport=httpx.MockTransport(handler), tokens=tokens, sleep=sleeps.append
    )
    return src, ctx, tokens, sleeps


def rec(i: int, **extra) -> dict:
    return {**R.SHAREPOINT_MATCH, "Id": f"rec-{i}", **extra}


NOW = dt.datetime(2026, 11, 23, 12, 0, 0, tzinfo=dt.UTC)


def test_subscribes_pages_downloads_and_commits_window():
    api = FakeManagementApi(NOW, page_size=2)
    for i in range(5):
        api.add(f"c{i}", NOW - dt.timedelta(hours=5 - i), [rec(10 * i), rec(10 * i + 1)])
    recorder = Recorder(api)
    src, ctx, _, _ = make(api, recorder=recorder)
    src.connect()
    assert api.subscriptions == {"DLP.All": "enabled"}
    assert src.sit_names[R.CCN] == "Credit Card Number"
    records, cursor = drain(src.poll(None), ctx)
    assert sorted(r.data["Id"] for r in records) == sorted(f"rec-{10 * i + j}" for i in range(5) for j in range(2))
    assert all(r.kind == "o365_audit" and r.unit.startswith("DLP.All:c") for r in records)
    assert sorted(api.downloads) == [f"c{i}" for i in range(5)]  # all 3 pages followed
    assert {k: v for k, v in ctx.ledger.items()} == {f"DLP.All:c{i}": "fetched" for i in range(5)}
    assert parse(cursor["content"]["DLP.All"]["end"].rstrip("Z")) == NOW
    # PublisherIdentifier was asserted on every request by the fake; the cursor is JSON
    orjson.dumps(cursor)
    # A second poll re-lists the recent hours but reads nothing twice (ledger).
    api.downloads.clear()
    records2, _ = drain(src.poll(cursor), ctx)
    assert records2 == [] and api.downloads == []
    assert ctx.counters["blobs_skipped_known"] == 5


def test_late_blob_in_relisted_span_is_read_once():
    api = FakeManagementApi(NOW)
    api.add("early", NOW - dt.timedelta(hours=2), [rec(1)])
    src, ctx, _, _ = make(api)
    _, cursor = drain(src.poll(None), ctx)
    # A blob published (contentCreated) before the cursor becomes listable only now.
    api.add("late", NOW - dt.timedelta(hours=3), [rec(2)])
    api.now = NOW + dt.timedelta(minutes=5)
    records, cursor2 = drain(src.poll(cursor), ctx)
    assert [r.data["Id"] for r in records] == ["rec-2"]
    assert api.downloads == ["early", "late"]


def test_first_run_and_stale_cursor_are_clamped_to_7_days_with_a_gap_unit(caplog):
    api = FakeManagementApi(NOW)
    api.add("old", NOW - dt.timedelta(days=6, hours=23), [rec(1)])
    src, ctx, _, _ = make(api, start_hours=24 * 30)
    caplog.set_level(logging.WARNING)
    records, cursor = drain(src.poll(None), ctx)
    assert "past the Management API's 7 days" in caplog.text
    assert [r.data["Id"] for r in records] == ["rec-1"]
    assert api.af20055 == 0
    stale = {"content": {"DLP.All": {"end": "2026-11-01T00:00:00Z"}}}
    batches = list(src.poll(stale))
    gap = [u for b in batches for u in b.units if u.kind == "o365_content_gap"]
    assert len(gap) == 1 and gap[0].status == "expired" and "lost" in gap[0].detail
    assert ctx.counters["content_gaps"] == 1 and api.af20055 == 0
    assert "too old to re-list" in caplog.text


def test_af20055_from_the_service_is_clamped_never_looped():
    api = FakeManagementApi(NOW)
    src, ctx, _, _ = make(api)
    src.connect()
    # Our clock says a start is inside 7 days, the server's (Date header) disagrees: the
    # server is 2 hours ahead. The skew is learned from the Date header.
    api.now = NOW + dt.timedelta(hours=2)
    cursor = {"content": {"DLP.All": {"end": (NOW - dt.timedelta(days=6, hours=23)).isoformat()}}}
    batches = list(src.poll(cursor))
    assert api.af20055 <= 2
    assert any(b.cursor for b in batches)


def test_expired_blob_is_reported_not_skipped_quietly(caplog):
    api = FakeManagementApi(NOW)
    api.add("gone", NOW - dt.timedelta(hours=3), [rec(1)])
    api.add("fine", NOW - dt.timedelta(hours=2), [rec(2)])
    api.expired.add("gone")
    src, ctx, _, _ = make(api)
    caplog.set_level(logging.ERROR)
    records, _ = drain(src.poll(None), ctx)
    assert [r.data["Id"] for r in records] == ["rec-2"]
    assert ctx.ledger["DLP.All:gone"] == "expired" and ctx.counters["blobs_expired"] == 1
    assert "gone" in caplog.text and "lost" in caplog.text
    assert "gone" not in api.downloads


def test_missing_content_af20050_is_reported_as_expired():
    api = FakeManagementApi(NOW)
    api.add("x", NOW - dt.timedelta(hours=1), [rec(1)])
    api.blobs = [("x", NOW - dt.timedelta(hours=1), None)]  # listed, but the GET says AF20050

    def handler(request):
        if request.url.path.endswith("/audit/x"):
            return error(400, "AF20050", "The specified content does not exist.")
        return api(request)

    src, ctx, _, _ = make(api, recorder=Recorder(handler))
    drain(src.poll(None), ctx)
    assert ctx.ledger["DLP.All:x"] == "expired"


def test_failed_download_is_retried_and_never_passed_by_the_cursor():
    api = FakeManagementApi(NOW)
    for i in range(4):
        api.add(f"c{i}", NOW - dt.timedelta(hours=5 - i), [rec(i)])
    api.failing["c1"] = -1
    src, ctx, _, sleeps = make(api, max_retry_wait=5)
    got: list = []
    cursor = None
    with pytest.raises(RetriableError, match="could not be downloaded"):
        for batch in src.poll(None):
            got.extend(batch.records)
            for u in batch.units:
                ctx.ledger[u.id] = u.status
            cursor = batch.cursor or cursor
    # The cursor never moves past the failed blob; it remembers it to report it if it expires.
    assert parse(cursor["content"]["DLP.All"]["end"].rstrip("Z")) <= NOW - dt.timedelta(hours=4)
    assert list(cursor["content"]["DLP.All"]["failed"]) == ["DLP.All:c1"]
    assert sorted(r.data["Id"] for r in got) == ["rec-0", "rec-2", "rec-3"]
    assert ctx.ledger["DLP.All:c1"] == "failed" and sleeps  # retried with back-off first
    api.failing["c1"] = 0
    api.downloads.clear()
    records, cursor = drain(src.poll(cursor), ctx)
    assert [r.data["Id"] for r in records] == ["rec-1"] and api.downloads == ["c1"]
    assert cursor["content"]["DLP.All"]["failed"] == {}
    assert parse(cursor["content"]["DLP.All"]["end"].rstrip("Z")) == NOW


def test_failed_blob_that_expires_before_a_retry_is_reported():
    api = FakeManagementApi(NOW)
    api.add("c0", NOW - dt.timedelta(days=6, hours=20), [rec(0)])
    api.failing["c0"] = -1
    src, ctx, _, _ = make(api, max_retry_wait=1, start_hours=24 * 7)
    cursor = None
    with pytest.raises(RetriableError):
        for batch in src.poll(None):
            cursor = batch.cursor or cursor
    # An outage long enough for the blob to expire; the listing no longer shows it.
    api.now = NOW + dt.timedelta(days=1)
    api.blobs.clear()
    batches = list(src.poll(cursor))
    units = [u for b in batches for u in b.units]
    expired = [u for u in units if u.id == "DLP.All:c0"]
    assert expired and expired[0].status == "expired" and "failed downloads" in expired[0].detail
    assert ctx.counters["blobs_expired"] == 1


def test_throttling_af429_and_5xx_are_retried_with_backoff():
    api = FakeManagementApi(NOW)
    api.add("c0", NOW - dt.timedelta(hours=1), [rec(0)])
    calls = {"blob": 0, "list": 0}

    def handler(request):
        if request.url.path.endswith("/audit/c0"):
            calls["blob"] += 1
            if calls["blob"] == 1:
                return error(403, "AF429", "Too many requests. Method=GetBlob, PublisherId=...")
        if request.url.path.endswith("/subscriptions/content"):
            calls["list"] += 1
            if calls["list"] <= 2:
                return error(503, "ServiceUnavailable", headers={"Retry-After": "3"})
        return api(request)

    src, ctx, _, sleeps = make(api, recorder=Recorder(handler))
    records, _ = drain(src.poll(None), ctx)
    assert [r.data["Id"] for r in records] == ["rec-0"]
    assert sleeps.count(3.0) == 2 and src.client.throttled == 1 and calls["blob"] == 2


def test_token_expiring_mid_run_is_renewed_once():
    api = FakeManagementApi(NOW)
    api.add("c0", NOW - dt.timedelta(hours=1), [rec(0)])

    def handler(request):
        if request.headers["Authorization"] == "Bearer token-1" and "/audit/" in request.url.path:
            return error(401, "InvalidAuthenticationToken", "token expired")
        return api(request)

    src, ctx, tokens, _ = make(api, recorder=Recorder(handler))
    records, _ = drain(src.poll(None), ctx)
    assert len(records) == 1 and tokens.invalidated == 1


def test_malformed_blob_and_records_are_kept_for_quarantine():
    api = FakeManagementApi(NOW)
    api.add("bad", NOW - dt.timedelta(hours=2), b"<html>not json")
    api.add("mixed", NOW - dt.timedelta(hours=1), [rec(1), "a string", 42])
    src, ctx, _, _ = make(api)
    records, _ = drain(src.poll(None), ctx)
    raw = [r for r in records if r.data is None]
    assert len(raw) == 3
    assert sorted(r.raw for r in raw) == sorted([b"<html>not json", b'"a string"', b"42"])
    assert sum(1 for r in records if r.data) == 1
    assert ctx.ledger["DLP.All:bad"] == "fetched" and ctx.ledger["DLP.All:mixed"] == "fetched"


def test_audit_general_keeps_only_dlp_record_types_and_batches_are_bounded():
    api = FakeManagementApi(NOW)
    payload = [{**R.ENDPOINT, "Id": f"e{i}"} for i in range(5)] + [{"Id": "x", "RecordType": 15}]
    api.add("g", NOW - dt.timedelta(hours=1), payload)
    src, ctx, _, _ = make(api, content_types=["Audit.General"], batch_records=2)
    batches = list(src.poll(None))
    sizes = [len(b.records) for b in batches if b.records]
    assert sizes == [2, 2, 1]
    assert all(r.data["RecordType"] == 63 for b in batches for r in b.records)
    assert [b.units[0].status for b in batches if b.units] == ["listed", "fetched"]  # fetched with the last chunk


def test_next_page_uri_to_another_host_is_refused():
    api = FakeManagementApi(NOW)
    api.add("c0", NOW - dt.timedelta(hours=1), [rec(0)])

    def handler(request):
        response = api(request)
        if request.url.path.endswith("/subscriptions/content"):
            response.headers["NextPageUri"] = "https://evil.example/steal?x=1"
        return response

    recorder = Recorder(handler)
    src, ctx, _, _ = make(api, recorder=recorder)
    with pytest.raises(FatalError, match="refusing"):
        drain(src.poll(None), ctx)
    assert all(r.url.host == "manage.test" for r in recorder.requests)


def test_subscription_owned_by_another_publisher_is_named():
    def handler(request):
        if request.url.path.endswith("/subscriptions/list"):
            return json_response([])
        return error(400, "AF20024x", "The subscription is owned by another publisher identifier")

    src, ctx, _, _ = make(None, recorder=Recorder(handler))
    with pytest.raises(FatalError, match="another publisher"):
        src.connect()


def test_missing_permission_is_named():
    def handler(request):
        return error(401, "AF10001", "The permission set (ActivityFeed.ReadDlp) sent in the request does not include")

    src, ctx, _, _ = make(None, recorder=Recorder(handler))
    with pytest.raises(FatalError, match="ActivityFeed.Read"):
        src.connect()
    health = src.health()
    assert not health.ok


def test_backfill_is_resumable_and_refuses_ranges_past_7_days():
    api = FakeManagementApi(NOW)
    for i in range(6):
        api.add(f"b{i}", NOW - dt.timedelta(hours=60 - 10 * i), [rec(i)])
    src, ctx, _, _ = make(api, window_hours=12)
    since, until = NOW - dt.timedelta(hours=72), NOW
    gen = src.backfill(since, until, None)
    got, cursor = [], None
    for batch in gen:
        got.extend(batch.records)
        cursor = batch.cursor or cursor
        if len(got) >= 3 and batch.cursor:
            break  # interrupted halfway, after a committed window
    gen.close()
    rest, final = drain(src.backfill(since, until, cursor))
    ids = [r.data["Id"] for r in got + rest]
    assert sorted(set(ids)) == [f"rec-{i}" for i in range(6)] and len(ids) == 6
    assert final["content"]["DLP.All"]["end"]
    with pytest.raises(NotSupported, match="audit_search"):
        list(src.backfill(NOW - dt.timedelta(days=30), NOW - dt.timedelta(days=8), None))


def test_one_failing_content_type_does_not_starve_the_others():
    api = FakeManagementApi(NOW)
    api.subscriptions = {"DLP.All": "enabled", "Audit.General": "enabled"}
    api.add("bad", NOW - dt.timedelta(hours=2), [rec(1)])
    api.failing["bad"] = -1

    def handler(request):
        if request.url.path.endswith("/subscriptions/content") and q(request)["contentType"] == "Audit.General":
            request_ct = "Audit.General"
            response = api(request)
            body = [
                dict(e, contentType=request_ct, contentId="gen", contentUri=e["contentUri"].replace("bad", "gen"))
                for e in response.json()
            ]
            return json_response(body, headers=dict(response.headers))
        if request.url.path.endswith("/audit/gen"):
            return json_response([{**R.ENDPOINT, "Id": "endpoint-1"}])
        return api(request)

    src, ctx, _, _ = make(api, recorder=Recorder(handler), content_types=["DLP.All", "Audit.General"], max_retry_wait=1)
    got = []
    with pytest.raises(RetriableError):
        for batch in src.poll(None):
            got.extend(r.data["Id"] for r in batch.records)
    assert got == ["endpoint-1"]


def test_a_window_inside_one_second_is_listed_as_that_second_not_as_an_empty_range():
    """A range of relative times (``--since 2d``, until now) leaves a last window shorter than a
    second; the API counts whole seconds, so [S.7, S.9) must not be sent as [S, S) (AF20055)."""
    api = FakeManagementApi(NOW)
    until = NOW - dt.timedelta(milliseconds=100)
    since = until - dt.timedelta(hours=12, milliseconds=200)
    api.add("early", since + dt.timedelta(hours=1), [rec(1)])
    api.add("last", until - dt.timedelta(milliseconds=150), [rec(2)])
    src, _, _, _ = make(api, window_hours=12)
    records, cursor = drain(src.backfill(since, until, None))
    assert sorted(r.data["Id"] for r in records) == ["rec-1", "rec-2"]
    assert api.af20055 == 0 and cursor is not None


def test_a_downloaded_blob_is_not_kept_alive_by_its_http_response():
    """httpx keeps each response in a reference cycle; a blob's bytes held by it would live
    until the cyclic garbage collector runs (hundreds of 0.5 MB blobs when it runs rarely)."""
    import gc
    import sys

    api = FakeManagementApi(NOW)
    api.add("c1", NOW - dt.timedelta(hours=1), [rec(i) for i in range(50)])
    src, _, _, _ = make(api)
    src.connect()
    entry = {"contentId": "c1", "contentUri": f"{MANAGE}{ROOT}/audit/c1"}
    enabled = gc.isenabled()
    gc.disable()
    try:
        outcome, content = src._download("DLP.All", entry)
        assert outcome == "ok" and orjson.loads(content)[0]["Id"] == "rec-0"
        assert sys.getrefcount(content) == 2  # this test's name for it, and getrefcount's argument
    finally:
        if enabled:
            gc.enable()
