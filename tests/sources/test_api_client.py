"""The shared API client: budget, clock from Date, link validation, error mapping."""

from __future__ import annotations

import datetime as dt
import logging

import httpx
import pytest

from forwarder.api import ApiClient, RequestBudget, api_error
from forwarder.errors import FatalError, RetriableError
from forwarder.settings import HttpSettings
from sources._common import token_roles
from tests.sources.fakes import FakeTokens, error, json_response


def client(handler, **kw) -> tuple[ApiClient, list[float]]:
    sleeps: list[float] = []
    api = ApiClient(
        base_url="https://api.test/v1.0",
        tokens=FakeTokens(),
        scope="https://api.test/.default",
        http=HttpSettings(),
        log=logging.getLogger("test"),
        budget=RequestBudget(0),
        transport=httpx.MockTransport(handler),
        sleep=sleeps.append,
        **kw,
    )
    return api, sleeps


def test_budget_is_a_token_bucket_per_instance():
    t = [0.0]
    waits: list[float] = []

    def sleep(s):
        waits.append(s)
        t[0] += s

    b = RequestBudget(60, burst=2, clock=lambda: t[0])
    for _ in range(4):
        b.acquire(sleep)
    assert waits == [pytest.approx(1.0), pytest.approx(1.0)]  # 2 at once, then 1 per second
    other = RequestBudget(60, burst=2, clock=lambda: t[0])
    other.acquire(sleep)
    assert len(waits) == 2  # another instance has its own budget


def test_server_clock_from_date_header_even_when_two_are_sent():
    def handler(request):
        return httpx.Response(
            200, json={}, headers=[("Date", "Mon, 23 Nov 2026 18:00:00 GMT"), ("Date", "Mon, 30 Nov 2026 18:00:00 GMT")]
        )

    api, _ = client(handler)
    api.request("GET", "x")
    assert api.now().date() == dt.date(2026, 11, 30)


def test_foreign_links_refused_and_params_added_once():
    seen = []

    def handler(request):
        seen.append(str(request.url))
        return json_response({"value": []})

    api, _ = client(handler, params={"PublisherIdentifier": "p"})
    api.request("GET", "https://api.test/v1.0/next?PublisherIdentifier=p&nextPage=2")
    assert seen[-1].count("PublisherIdentifier") == 1
    with pytest.raises(FatalError, match="refusing"):
        api.request("GET", "https://api.test:8443/v1.0/x")  # another port is another origin
    with pytest.raises(FatalError, match="refusing"):
        api.request("GET", "http://api.test/v1.0/x")


def test_retries_give_up_with_retry_after_for_the_host():
    api, sleeps = client(lambda r: error(503, "ServiceUnavailable", headers={"Retry-After": "4"}), max_wait=10)
    with pytest.raises(RetriableError) as info:
        api.request("GET", "x")
    assert info.value.retry_after == 4.0 and sleeps == [4.0, 4.0]


def test_error_bodies_and_permission_names():
    api, _ = client(lambda r: error(403, "Forbidden", "Missing role"))
    response = api.request("GET", "x")
    assert api_error(response) == ("Forbidden", "Missing role")
    with pytest.raises(FatalError, match="SecurityAlert.Read.All"):
        api.raise_for(response, "GET x", "SecurityAlert.Read.All")


def test_token_roles_reads_jwt_claims_only():
    import base64

    import orjson

    payload = base64.urlsafe_b64encode(orjson.dumps({"roles": ["ActivityFeed.Read"]})).decode().rstrip("=")
    assert token_roles(f"h.{payload}.s") == ["ActivityFeed.Read"]
    assert token_roles("not-a-jwt") == []


def test_backfill_progress_has_counts_rate_and_eta():
    from sources._common import BackfillProgress

    t = [100.0]
    p = BackfillProgress(total=10, done=2, clock=lambda: t[0])
    p.add(500)
    t[0] += 10
    info = p.info(4, window_end="x")
    assert info["done"] == 4 and info["total"] == 10 and info["records"] == 500
    assert info["rate"] == "50/s" and info["eta"] == "30s" and info["window_end"] == "x"
