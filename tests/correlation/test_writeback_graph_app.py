"""The Graph app plumbing of the write-back and the status sync.

One request budget and one token cache per configured source's app: the graph_security source,
the write-back (GraphWriter) and the status sync (DefenderIncidents) built from the same settings
draw from the same bucket; another configuration's settings never share them. Both writers call
Graph through one IncidentsApi.call, each with its own error for a permanent 4xx."""

from __future__ import annotations

import datetime as dt
import gc
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from forwarder.api import AppShare, _shares, app_share
from forwarder.auth import TokenProvider
from forwarder.correlation.writeback import GraphWriter, PermanentError
from forwarder.errors import FatalError, RetriableError
from forwarder.sync.defender import DefenderIncidents
from forwarder.sync.peer import SyncRejected
from sources.graph_security import GraphSecuritySettings, GraphSecuritySource
from tests.correlation.test_writeback import Tenant, running_tenant
from tests.sources.fakes import GRAPH, Context, FakeTokens, auth, http_date, json_response

NOW = dt.datetime(2026, 11, 23, 12, 0, 0, tzinfo=dt.UTC)


def graph(request: httpx.Request) -> httpx.Response:
    headers = {"Date": http_date(NOW)}
    if request.url.path.endswith("/security/alerts_v2"):
        return json_response({"value": []}, headers=headers)
    if "/security/alerts_v2/" in request.url.path:
        return json_response({"id": "a1", "comments": []}, headers=headers)
    return json_response({"id": "1", "status": "active", "customTags": []}, headers=headers)


def settings(per_minute: float) -> GraphSecuritySettings:
    return GraphSecuritySettings(auth=auth(), requests_per_minute=per_minute, graph_url=GRAPH)


def test_source_writeback_and_sync_of_one_app_draw_from_one_budget() -> None:
    s = settings(6.0)  # 0.1 request/s: the bucket (10) barely refills during the test
    tokens = FakeTokens()
    assert app_share(s).tokens(lambda: tokens) is tokens  # the app's provider, before anyone builds one
    transport = httpx.MockTransport(graph)
    source = GraphSecuritySource("graph", s, Context("graph"), transport=transport)
    writer = GraphWriter(s, logging.getLogger("test"), transport=transport)
    sync = DefenderIncidents(s, logging.getLogger("test"), transport=transport)
    try:
        source.connect()  # one probe request
        assert writer.alert_comments("a1") == []  # one request
        assert sync.get("1")["status"] == "active"  # one request
        budget = source._api().budget
        assert writer.api.budget is budget and sync.api.budget is budget
        assert writer.api.tokens is tokens and sync.api.tokens is tokens and source._api().tokens is tokens
        assert 10 - 3 <= budget.tokens < 10 - 3 + 0.5  # three requests taken from ONE bucket of 10
        # the same settings object -> the same budget, whoever asks first
        assert app_share(s).budget(999.0) is budget
    finally:
        source.close()
        writer.close()
        sync.close()


def test_another_configuration_never_shares_and_entries_go_with_their_settings() -> None:
    a, b = settings(6.0), settings(6.0)  # equal values, two loaded configurations
    assert a == b
    share_a = app_share(a)
    assert isinstance(share_a, AppShare) and app_share(a) is share_a
    assert app_share(b) is not share_a
    assert app_share(b).budget(6.0) is not share_a.budget(6.0)
    key = id(a)
    assert key in _shares
    del a, share_a
    gc.collect()
    assert key not in _shares  # dropped with its settings: no state left for a later test


@pytest.mark.parametrize(
    ("status", "code", "writer_error", "sync_error"),
    [
        (404, "NotFound", PermanentError, SyncRejected),
        (400, "BadRequest", PermanentError, SyncRejected),
        (403, "Forbidden", FatalError, FatalError),
        (409, "Conflict", RetriableError, RetriableError),
        (503, "ServiceUnavailable", RetriableError, RetriableError),
    ],
)
def test_one_call_each_writer_with_its_own_permanent_error(
    status: int, code: str, writer_error: type, sync_error: type
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"error": {"code": code, "message": "no"}}, headers={"Retry-After": "0"})

    s = settings(0)
    app_share(s).tokens(FakeTokens)
    transport = httpx.MockTransport(refuse)
    writer = GraphWriter(s, logging.getLogger("test"), transport=transport)
    sync = DefenderIncidents(s, logging.getLogger("test"), transport=transport)
    try:
        with pytest.raises(writer_error) as w:
            writer.tag_incident("7", "tag")
        with pytest.raises(sync_error) as y:
            sync.get("7")
    finally:
        writer.close()
        sync.close()
    assert type(w.value) is writer_error and type(y.value) is sync_error
    assert f"HTTP {status} {code}" in str(w.value) and f"HTTP {status} {code}" in str(y.value)
    if status == 403:
        assert "SecurityIncident.ReadWrite.All" in str(w.value) and "SecurityIncident.Read.All" in str(y.value)


class _SlotsOnly:
    __slots__ = ("x",)


def test_settings_that_cannot_be_weakly_referenced_get_an_unshared_budget() -> None:
    odd = _SlotsOnly()
    assert app_share(odd) is not app_share(odd)


@pytest.fixture
def tenant(tmp_path: Path) -> Iterator[Tenant]:
    yield from running_tenant(tmp_path, audit_records=300, days=1)


def test_one_token_for_the_source_and_the_writeback_of_a_run(tenant: Tenant) -> None:
    """Against the tenant emulator with the real msal-backed provider: the forwarder's poll and
    a write-back drain of the same configuration acquire ONE token between them."""
    tenant.forward()
    assert tenant.linked_alerts()
    result = tenant.drain()
    assert result.commented
    provider = app_share(tenant.config.source("graph").settings).tokens(lambda: pytest.fail("not built yet"))
    assert isinstance(provider, TokenProvider)
    assert provider.acquired == 1
