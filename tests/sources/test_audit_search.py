"""audit_search source against a scripted Graph audit log query API."""

from __future__ import annotations

import copy
import datetime as dt

import httpx
import pytest

from forwarder.auth import AuthSettings
from forwarder.errors import NotSupported
from sources.audit_search import AuditSearchSettings, AuditSearchSource
from tests.sources import records as R
from tests.sources.fakes import GRAPH, TENANT, Context, FakeTokens, Recorder, auth, drain, http_date, json_response, q

NOW = dt.datetime(2026, 11, 23, 12, 0, 0, tzinfo=dt.UTC)


class FakeAuditQueries:
    def __init__(self, records_per_query: int = 5) -> None:
        self.queries: dict[str, dict] = {}
        self.polls: dict[str, int] = {}
        self.per_query = records_per_query
        self.fail_first = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        headers = {"Date": http_date(NOW)}
        path = request.url.path.split("/v1.0/", 1)[1]
        if request.method == "POST" and path == "security/auditLog/queries":
            body = request.read()
            import orjson

            spec = orjson.loads(body)
            qid = f"q{len(self.queries)}"
            self.queries[qid] = spec
            assert "dlpEndpoint" in spec["recordTypeFilters"]
            return json_response({"id": qid, "status": "notStarted", **spec}, 201, headers)
        if path == "security/auditLog/queries":
            return json_response({"value": []}, headers=headers)
        parts = path.split("/")
        qid = parts[3]
        if len(parts) == 4:
            self.polls[qid] = self.polls.get(qid, 0) + 1
            status = "running" if self.polls[qid] < 2 else "succeeded"
            if self.fail_first and qid == "q0" and self.polls[qid] >= 2:
                status = "failed"
            return json_response({"id": qid, "status": status}, headers=headers)
        skip = int(q(request).get("$skip", "0"))
        spec = self.queries[qid]
        items = []
        for i in range(self.per_query):
            rec = copy.deepcopy(R.GRAPH_AUDIT_RECORD)
            rec["id"] = f"{spec['filterStartDateTime']}-{i}"
            rec["auditData"]["Id"] = rec["id"]
            items.append(rec)
        page = items[skip : skip + 2]
        body = {"value": page}
        if skip + 2 < len(items):
            body["@odata.nextLink"] = str(request.url.copy_set_param("$skip", str(skip + 2)))
        return json_response(body, headers=headers)


def make(fake, **settings):
    ctx = Context("bf")
    sleeps: list[float] = []
    s = AuditSearchSettings(auth=auth(), requests_per_minute=0, graph_url=GRAPH, **settings)
    src = AuditSearchSource(
        "bf", s, ctx, transport=httpx.MockTransport(Recorder(fake)), tokens=FakeTokens(), sleep=sleeps.append
    )
    return src, ctx, sleeps


def test_backfill_past_7_days_waits_pages_and_resumes_with_the_same_query():
    fake = FakeAuditQueries()
    src, ctx, sleeps = make(fake, window_hours=24)
    since, until = NOW - dt.timedelta(days=30), NOW - dt.timedelta(days=27)
    gen = src.backfill(since, until, None)
    got, cursor = [], None
    for batch in gen:
        got.extend(batch.records)
        if batch.cursor:
            cursor = batch.cursor
        if len(got) >= 7:  # interrupted in the middle of the second window
            break
    gen.close()
    assert cursor["query"]["id"] == "q1"
    rest, final = drain(src.backfill(since, until, cursor))
    ids = {r.data["id"] for r in got + rest}
    assert len(ids) == 15 and len(fake.queries) == 3  # the second window's query was reused
    assert final == {"done_until": "2026-10-27T12:00:00Z"}
    assert sleeps  # waited for 'running' queries
    assert all(r.kind == "graph_audit_record" for r in got + rest)


def test_failed_query_is_created_again():
    fake = FakeAuditQueries()
    fake.fail_first = True
    src, ctx, _ = make(fake, window_hours=24)
    records, _ = drain(src.backfill(NOW - dt.timedelta(days=9), NOW - dt.timedelta(days=8), None))
    assert len(records) == 5 and len(fake.queries) == 2


@pytest.mark.parametrize("cloud", ["gcc", "gcc-high", "dod", "china"])
def test_other_clouds_explain_why_not(cloud):
    s = AuditSearchSettings(auth=AuthSettings(tenant_id=TENANT, client_id="app", cloud=cloud))
    src = AuditSearchSource("bf", s, Context("bf"), tokens=FakeTokens())
    with pytest.raises(NotSupported, match="only in the public cloud"):
        list(src.backfill(NOW - dt.timedelta(days=30), NOW, None))
    assert not src.health().ok


def test_live_source_in_another_cloud_stops_with_the_reason():
    from forwarder.errors import FatalError

    s = AuditSearchSettings(auth=AuthSettings(tenant_id=TENANT, client_id="app", cloud="gcc-high"))
    src = AuditSearchSource("bf", s, Context("bf"), tokens=FakeTokens())
    with pytest.raises(FatalError, match="only in the public cloud"):
        src.connect()
